"""Fixtures for the Trent end-to-end suite.

server      session-scoped TrentServer: .endpoint, .port, .data_dir, .log_path, .env, .restart(), .stop()
kms         session-scoped botocore KMS client for `server` (no retries, no client-side validation)
raw         session-scoped RawClient: raw(target, body, ...) -> (status, headers, json)
aws_cli     session-scoped: aws_cli("encrypt", "--key-id", k, ...) -> (rc, json or None, stderr)
new_key     factory: new_key(**CreateKey kwargs) -> KeyId (a UUID string) on the session server
new_alias   factory: new_alias(key_id, name=None) -> alias name, created on the session server
make_server factory for private servers (fresh data folder each), stopped at the end of the test
ids         session-scoped Identities for `server`: ids.account(), ids.user(acct, name, policy), ids.service(), ...
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from trent_e2e import ACCESS_KEY_ID, EU, REGION, SECRET_ACCESS_KEY, WEST, Identities, RawClient, TrentServer, make_kms, unique_alias


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = TrentServer(tmp_path_factory.mktemp("trent-session"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tmp_path_factory):
    started: list[TrentServer] = []

    def factory(start: bool = True) -> TrentServer:
        srv = TrentServer(tmp_path_factory.mktemp("trent-private"))
        started.append(srv)
        if start:
            srv.start()
        return srv

    yield factory
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def kms(server):
    return make_kms(server)


@pytest.fixture(scope="session")
def east(server):
    """A client of the session server in the default Region (as `kms`), beside `west` and `eu`."""
    return make_kms(server, region=REGION)


@pytest.fixture(scope="session")
def west(server):
    return make_kms(server, region=WEST)


@pytest.fixture(scope="session")
def eu(server):
    return make_kms(server, region=EU)


@pytest.fixture(scope="session")
def ids(server):
    return Identities(server)


@pytest.fixture(scope="session")
def raw(server):
    return RawClient(server)


@pytest.fixture
def new_key(kms):
    def factory(**kwargs) -> str:
        return kms.create_key(**kwargs)["KeyMetadata"]["KeyId"]

    return factory


@pytest.fixture
def new_alias(kms):
    def factory(key_id: str, name: str | None = None) -> str:
        name = name or unique_alias()
        kms.create_alias(AliasName=name, TargetKeyId=key_id)
        return name

    return factory


@pytest.fixture(scope="session")
def aws_cli(server, tmp_path_factory):
    exe = os.environ.get("AWS_CLI") or shutil.which("aws")
    if not exe:
        pytest.fail("the AWS CLI (`aws`) is not installed; pip install -r Tests/e2e/requirements.txt", pytrace=False)
    home = tmp_path_factory.mktemp("aws-cli-home")
    config = home / "config"
    credentials = home / "credentials"
    config.write_text("")
    credentials.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=str(credentials),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_PAGER="",
        AWS_MAX_ATTEMPTS="1",
    )

    def run(*args: str):
        cmd = [exe, "kms", *args, "--endpoint-url", server.endpoint, "--region", REGION, "--output", "json"]
        proc = subprocess.run(cmd, env=env, cwd=home, capture_output=True, text=True, timeout=120)
        out = proc.stdout.strip()
        try:
            parsed = json.loads(out) if out else None
        except ValueError:
            parsed = None
        return proc.returncode, parsed, proc.stderr

    return run
