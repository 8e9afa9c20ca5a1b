"""pytest plugin that runs moto's own KMS tests in moto's server mode against Trent (`make moto-suite`).

moto's server mode (moto/core/models.py, ServerModeMockAWS) points every boto3 client a test makes at
TEST_SERVER_MODE_ENDPOINT and, when a mock starts and when it stops, POSTs `/moto-api/reset` there to wipe the
server's state. Trent has no reset endpoint and gets none: a test-only route that deletes everything would be one
configuration mistake away from production. Instead each test gets a Trent of its own, started from scratch in a
fresh data folder (own token, own store), and the previous one is stopped; no reset request is ever sent. Servers
are started ahead in the background (MOTO_SUITE_SPARES of them), so a test seldom waits for one.

Credentials: moto's mocks put FOOBARKEY / FOOBARSECRET in the environment (moto.core.models.MockAWS), which no
AWS access key id can be (16 to 128 characters; Trent refuses it). moto's own switch for that, the user config
`core.mock_credentials = False`, leaves the environment alone, and the plugin puts there the access key each server
is started with as its administrator (TRENT_ACCESS_KEY_ID, the bootstrap identity every e2e server gets), in moto's
DEFAULT_ACCOUNT_ID, 123456789012, which the tests' ARNs name.

Tests/moto/expected-failures.txt lists the tests expected to fail, each with its reason; they run as strict xfail,
so an unexpected pass fails the run as much as an unexpected failure does, and a line naming no collected test
fails it too.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

from trent_e2e import TrentServer  # noqa: E402

MOTO_VERSION = "5.2.5"
EXPECTED_FAILURES = HERE / "expected-failures.txt"

# The account moto's tests name in their ARNs (moto.core.DEFAULT_ACCOUNT_ID), and its administrator's access key.
MOTO_ACCOUNT_ID = "123456789012"
MOTO_ACCESS_KEY_ID = "AKIAIOSFODNN7MOTOKMS"
MOTO_SECRET_ACCESS_KEY = "tRentMotoSuiteSecretKey0123456789abcdefG"
assert len(MOTO_SECRET_ACCESS_KEY) == 40


def read_expected_failures(path: Path = EXPECTED_FAILURES) -> dict[str, str]:
    """`<test id>  <reason>` per line (the id ends at the first run of two spaces); `#` starts a comment line."""
    expected: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        test_id, separator, reason = line.partition("  ")
        if not separator or not reason.strip():
            raise pytest.UsageError(f"{path.name}:{number}: expected '<test id>  <reason>', got {line!r}")
        if test_id in expected:
            raise pytest.UsageError(f"{path.name}:{number}: {test_id} is listed twice")
        expected[test_id] = reason.strip()
    return expected


class FreshServers:
    """Hands out a Trent that no test has used yet and stops the one handed out before it."""

    def __init__(self, root: Path, spares: int):
        self.root = root
        self.spares = max(1, spares)
        self.current: TrentServer | None = None
        self._ready: list[tuple[threading.Thread, dict]] = []
        self._count = 0
        self._retiring: list[threading.Thread] = []
        for _ in range(self.spares):
            self._start_spare()

    def _new_server(self) -> TrentServer:
        self._count += 1
        server = TrentServer(self.root / f"trent-{self._count:04d}")
        server.access_key_id = MOTO_ACCESS_KEY_ID
        server.secret_access_key = MOTO_SECRET_ACCESS_KEY
        server.env.update(
            TRENT_ACCOUNT_ID=MOTO_ACCOUNT_ID,
            TRENT_ACCESS_KEY_ID=MOTO_ACCESS_KEY_ID,
            TRENT_SECRET_ACCESS_KEY=MOTO_SECRET_ACCESS_KEY,
        )
        return server

    def _start_spare(self) -> None:
        slot: dict = {"server": self._new_server()}

        def start() -> None:
            try:
                slot["server"].start()
            except BaseException as error:  # pytest.fail raises an OutcomeException, not an Exception
                slot["error"] = error

        thread = threading.Thread(target=start, name="trent-spare", daemon=True)
        thread.start()
        self._ready.append((thread, slot))

    def fresh(self) -> TrentServer:
        thread, slot = self._ready.pop(0)
        self._start_spare()
        thread.join()
        if "error" in slot:
            raise slot["error"]
        self._retire(self.current)
        self.current = slot["server"]
        return self.current

    def _retire(self, server: TrentServer | None) -> None:
        if server is None:
            return
        thread = threading.Thread(target=server.stop, name="trent-retire", daemon=True)
        thread.start()
        self._retiring.append(thread)

    def close(self) -> None:
        self._retire(self.current)
        self.current = None
        for thread, slot in self._ready:
            thread.join()
            self._retire(slot["server"])
        for thread in self._retiring:
            thread.join()


_servers: FreshServers | None = None


def _patch_server_mode() -> None:
    """A fresh Trent where moto would POST /moto-api/reset: when the outermost mock starts; none when it stops."""
    from moto.core.models import ServerModeMockAWS

    original_enable = ServerModeMockAWS._enable_patching
    original_disable = ServerModeMockAWS._disable_patching

    def enable_patching(self, reset: bool = True) -> None:
        assert _servers is not None
        server = _servers.fresh() if reset or _servers.current is None else _servers.current
        self._test_server_mode_endpoint = server.endpoint
        original_enable(self, reset=False)

    def disable_patching(self, remove_data: bool) -> None:
        original_disable(self, remove_data=False)

    ServerModeMockAWS._enable_patching = enable_patching
    ServerModeMockAWS._disable_patching = disable_patching


def pytest_configure(config) -> None:
    global _servers
    if os.environ.get("TEST_SERVER_MODE", "").lower() != "true":
        raise pytest.UsageError("run through Tests/moto/moto_suite.py: moto must be in server mode (TEST_SERVER_MODE=true)")
    import moto

    if moto.__version__ != MOTO_VERSION:
        raise pytest.UsageError(f"moto {MOTO_VERSION} is pinned, {moto.__version__} is installed (pip install -r Tests/moto/requirements.txt)")
    _patch_server_mode()
    from moto.core.config import default_user_config

    default_user_config["core"]["mock_credentials"] = False
    os.environ.update(AWS_ACCESS_KEY_ID=MOTO_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=MOTO_SECRET_ACCESS_KEY)
    root = Path(tempfile.mkdtemp(prefix="trent-moto-"))
    config._trent_moto_root = root
    _servers = FreshServers(root, int(os.environ.get("MOTO_SUITE_SPARES", "2")))


def pytest_unconfigure(config) -> None:
    global _servers
    if _servers is not None:
        _servers.close()
        _servers = None
    root = getattr(config, "_trent_moto_root", None)
    if root is not None and os.environ.get("MOTO_SUITE_KEEP") != "1":
        shutil.rmtree(root, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before -k and --deselect take tests away, so a listed test is always seen
def pytest_collection_modifyitems(session, config, items) -> None:
    expected = read_expected_failures()
    collected = {item.nodeid for item in items}
    # A file given whole must hold every test listed for it; with test ids given, only those were collected.
    files = {nodeid.partition("::")[0] for nodeid in collected if not any("::" in arg for arg in config.args)}
    stale = sorted(test for test in set(expected) - collected if test.partition("::")[0] in files)
    if stale:
        raise pytest.UsageError(f"{EXPECTED_FAILURES.name} lists tests that were not collected: {', '.join(stale)}")
    for item in items:
        reason = expected.get(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test's report ends with the tail of its server's log (kept with MOTO_SUITE_KEEP=1)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and _servers is not None and _servers.current is not None:
        report.sections.append(("trent log", _servers.current._log_tail(30)))
