#!/usr/bin/env python3
"""Runs moto's own KMS tests (moto 5.2.5, from its PyPI sdist) in moto's server mode against Trent.

    python Tests/moto/moto_suite.py [pytest arguments: -k encrypt, -x, test ids such as tests/test_kms/test_kms.py::test_x]

The pinned sdist is downloaded once with pip into .moto-cache/ (checked against its SHA-256), and the tests are
extracted from it next to it: tests/test_kms plus the bits of moto's tests package they import (tests/__init__.py,
conftest.py, markers.py). moto's code is never part of this repository. trent_moto_plugin.py gives each test a
fresh Trent and turns Tests/moto/expected-failures.txt into strict expected failures.

Of moto's tests/test_kms, the files run are those that drive the KMS API through boto3; the others do not talk to
an endpoint at all, so running them here would test moto, not Trent:
  test_model.py, test_utils.py  moto's KMS model and helper functions, called in-process
  test_server.py                moto's own Flask app, through its in-process test client
  test_kms_cloudformation.py    moto's CloudFormation service creating KMS keys (Trent serves KMS only)
and, in a file that is run, TestKMSPolicyValidator (moto's policy validator on moto's Key objects, in-process).

The binary is .build/debug/trent (TRENT_BIN picks another), the token SoftHSM (TRENT_E2E_TOKEN=nss-softoken picks
NSS softoken), as in the e2e suite.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
HERE = REPO / "Tests" / "moto"
CACHE = REPO / ".moto-cache"
MOTO_VERSION = "5.2.5"
SDIST = f"moto-{MOTO_VERSION}.tar.gz"
SDIST_SHA256 = "391857257d5dac144334013c2c10e599def5f0562f553e979160140bd7bd9cf6"

# The parts of moto's tests package the KMS tests import, and the test files run (see the docstring for the rest).
SUPPORT_FILES = ["tests/__init__.py", "tests/conftest.py", "tests/markers.py", "tests/test_kms/__init__.py"]
TEST_FILES = [
    "tests/test_kms/test_kms.py",
    "tests/test_kms/test_kms_encrypt.py",
    "tests/test_kms/test_kms_grants.py",
    "tests/test_kms/test_kms_key_rotation.py",
    "tests/test_kms/test_kms_mac.py",
    "tests/test_kms/test_kms_policy_enforcement.py",
]
IN_PROCESS = ["tests/test_kms/test_kms_policy_enforcement.py::TestKMSPolicyValidator"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_sdist() -> Path:
    sdist = CACHE / SDIST
    if not sdist.is_file() or sha256(sdist) != SDIST_SHA256:
        CACHE.mkdir(exist_ok=True)
        sdist.unlink(missing_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", f"moto=={MOTO_VERSION}",
             "--no-binary", ":all:", "--no-deps", "--dest", str(CACHE)],
            check=True,
        )
        if sha256(sdist) != SDIST_SHA256:
            sys.exit(f"{sdist}: SHA-256 {sha256(sdist)}, expected {SDIST_SHA256}")
    return sdist


def extract_tests(sdist: Path) -> Path:
    """The test files, extracted again on every run so nothing edited by hand survives in the cache."""
    root = CACHE / f"moto-{MOTO_VERSION}-tests"
    prefix = f"moto-{MOTO_VERSION}/"
    wanted = set(SUPPORT_FILES + TEST_FILES)
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            name = member.name.removeprefix(prefix)
            if name in wanted and member.isfile():
                target = root / name
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                target.write_bytes(source.read())
                wanted.discard(name)
    if wanted:
        sys.exit(f"{sdist} lacks {', '.join(sorted(wanted))}")
    return root


def main(arguments: list[str]) -> int:
    root = extract_tests(fetch_sdist())
    env = dict(os.environ)
    env.update(
        # Read by moto.settings when moto is imported: every boto3 client a test makes goes to the endpoint the
        # plugin sets on the mock (the fresh Trent), never to AWS.
        TEST_SERVER_MODE="true",
        TEST_SERVER_MODE_ENDPOINT="http://127.0.0.1:9",  # replaced per test by the plugin; nothing listens here
        PYTHONPATH=os.pathsep.join([str(root), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    for variable in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "AWS_SESSION_TOKEN"):
        env.pop(variable, None)
    # Test ids given (tests/test_kms/...) run alone; otherwise every file of TEST_FILES.
    selected = [] if any(a.startswith("tests/") for a in arguments) else TEST_FILES
    command = [sys.executable, "-m", "pytest", "-c", str(HERE / "pytest.ini"), "--rootdir", str(root),
               "-p", "trent_moto_plugin", *(f"--deselect={test}" for test in IN_PROCESS), *arguments, *selected]
    return subprocess.run(command, cwd=root, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
