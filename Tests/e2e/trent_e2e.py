"""Shared helpers for the Trent end-to-end suite: the server process, clients, identifiers, assertions.

Fixtures in conftest.py are thin wrappers around what lives here, so tests that need their own server
(persistence) reuse exactly the same start/stop/client code as the session server.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import boto3
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
import pytest
import requests

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_BIN = REPO / ".build" / "debug" / "trent"

REGION = "us-east-1"
ACCOUNT_ID = "111122223333"
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_ACCESS_KEY = "tRentE2eSecretKey0123456789abcdefGHIJKLM"  # 40 characters, distinctive for the log grep
assert len(SECRET_ACCESS_KEY) == 40

JSON_11 = "application/x-amz-json-1.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

# Every plaintext the suite sends to or receives from any Trent server through a boto3 client made by
# make_kms (or registered by hand, e.g. the CLI test). test_zz_hygiene greps the server logs for them.
SEEN_PLAINTEXTS: list[bytes] = []
# Every server the suite started, so the hygiene test can read all of their logs.
ALL_SERVERS: list["TrentServer"] = []


# --------------------------------------------------------------------------- identifiers

def key_arn(key_id: str) -> str:
    return f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/{key_id}"


def alias_arn(alias_name: str) -> str:
    return f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:{alias_name}"


def unique_alias(prefix: str = "e2e") -> str:
    return f"alias/{prefix}-{uuid.uuid4().hex[:12]}"


def is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except (ValueError, TypeError):
        return False


def tags_dict(tags: list[dict]) -> dict[str, str]:
    out: dict[str, str] = {}
    for tag in tags:
        assert set(tag) == {"TagKey", "TagValue"}, tag
        assert tag["TagKey"] not in out, f"duplicate tag key {tag['TagKey']!r}"
        out[tag["TagKey"]] = tag["TagValue"]
    return out


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def remember_plaintext(value) -> None:
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, (bytes, bytearray)) and value:
        SEEN_PLAINTEXTS.append(bytes(value))


# --------------------------------------------------------------------------- assertions

@contextlib.contextmanager
def expect_error(code: str, what: str = ""):
    """`with expect_error("NotFoundException"): kms.describe_key(...)` -- exact AWS error code."""
    label = f"{what}: " if what else ""
    with pytest.raises(ClientError) as excinfo:
        yield excinfo
        pytest.fail(f"{label}expected {code}, but the call succeeded", pytrace=False)
    got = excinfo.value.response["Error"]["Code"]
    assert got == code, f"{label}expected {code}, got {got}: {excinfo.value.response.get('Error')}"


# --------------------------------------------------------------------------- server process

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class TrentServer:
    """One `trent serve` process on a fixed data folder and port; restart() keeps both."""

    host = "127.0.0.1"

    def __init__(self, data_dir: Path, port: int | None = None, binary: str | os.PathLike | None = None):
        self.binary = Path(binary or os.environ.get("TRENT_BIN") or DEFAULT_BIN)
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.endpoint = f"http://{self.host}:{self.port}"
        self.log_path = self.data_dir / "trent.log"
        self.access_key_id = ACCESS_KEY_ID
        self.secret_access_key = SECRET_ACCESS_KEY
        base = {k: v for k, v in os.environ.items() if not k.startswith("TRENT_")}
        base.update(
            TRENT_DATA_DIR=str(self.data_dir),
            TRENT_HOST=self.host,
            TRENT_PORT=str(self.port),
            TRENT_REGION=REGION,
            TRENT_ACCOUNT_ID=ACCOUNT_ID,
            TRENT_ACCESS_KEY_ID=ACCESS_KEY_ID,
            TRENT_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
            TRENT_LOG_LEVEL="info",
        )
        self.env = base
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        ALL_SERVERS.append(self)

    def __repr__(self) -> str:
        return f"TrentServer({self.endpoint}, data_dir={self.data_dir})"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_bytes(self) -> bytes:
        try:
            return self.log_path.read_bytes()
        except FileNotFoundError:
            return b""

    def _log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        if not self.binary.is_file():
            pytest.fail(f"trent binary not found at {self.binary} (build it, or set TRENT_BIN)", pytrace=False)
        if _port_open(self.host, self.port):
            pytest.fail(f"port {self.port} is already in use before starting {self}", pytrace=False)
        self._log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve"],
            cwd=self.data_dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._close_log()
                pytest.fail(
                    f"trent serve exited with status {rc} before accepting connections.\n"
                    f"--- {self.log_path} ---\n{self._log_tail()}",
                    pytrace=False,
                )
            if _port_open(self.host, self.port):
                return
            time.sleep(0.1)
        self.stop()
        pytest.fail(
            f"trent serve did not accept connections on {self.port} within {START_TIMEOUT:.0f}s.\n"
            f"--- {self.log_path} ---\n{self._log_tail()}",
            pytrace=False,
        )

    def stop(self) -> int | None:
        """SIGTERM, wait up to 15 s, then SIGKILL. Returns the exit status (None if never started)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_log()
        return proc.returncode

    def restart(self) -> None:
        self.stop()
        # The old listener must be gone before the new one is polled for, or readiness would lie.
        deadline = time.monotonic() + 5
        while _port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.start()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


# --------------------------------------------------------------------------- boto3

def _isolated_botocore_session() -> botocore.session.Session:
    """A botocore session that ignores the user's ~/.aws config and credentials files."""
    session = botocore.session.Session()
    session.set_config_variable("config_file", os.devnull)
    session.set_config_variable("credentials_file", os.devnull)
    return session


def _record_request_plaintext(params, **_):
    remember_plaintext(params.get("Plaintext"))


def _record_response_plaintext(parsed, **_):
    if isinstance(parsed, dict):
        remember_plaintext(parsed.get("Plaintext"))


def make_kms(server: TrentServer, *, access_key_id: str | None = None, secret_access_key: str | None = None):
    """A boto3 KMS client for `server`.

    Client-side parameter validation is off so bounds (Limit=0, NumberOfBytes=0, empty Plaintext, ...)
    reach the server and the server's own validation is what is tested. No retries.
    """
    session = boto3.session.Session(botocore_session=_isolated_botocore_session())
    client = session.client(
        "kms",
        region_name=REGION,
        endpoint_url=server.endpoint,
        aws_access_key_id=access_key_id or server.access_key_id,
        aws_secret_access_key=secret_access_key or server.secret_access_key,
        config=Config(
            retries={"max_attempts": 1},
            parameter_validation=False,
            connect_timeout=5,
            read_timeout=30,
        ),
    )
    client.meta.events.register("before-parameter-build.kms", _record_request_plaintext)
    client.meta.events.register("after-call.kms", _record_response_plaintext)
    return client


# --------------------------------------------------------------------------- raw, signed HTTP

class RawResponse:
    """Unpacks as (status, headers, body_json); body_json is None when the body is not JSON."""

    def __init__(self, status: int, headers, text: str):
        self.status = status
        self.headers = headers  # case-insensitive (requests' CaseInsensitiveDict)
        self.text = text
        try:
            self.json = json.loads(text) if text else None
        except ValueError:
            self.json = None

    def __iter__(self):
        return iter((self.status, self.headers, self.json))

    def __repr__(self) -> str:
        return f"RawResponse({self.status}, {dict(self.headers)!r}, {self.text[:500]!r})"


class _FixedTimeSigV4Auth(SigV4Auth):
    """SigV4Auth that signs with a chosen timestamp instead of the current time."""

    def __init__(self, credentials, service_name, region_name, timestamp: dt.datetime):
        super().__init__(credentials, service_name, region_name)
        self._timestamp = timestamp

    def add_auth(self, request):
        request.context["timestamp"] = self._timestamp.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self._modify_request_before_signing(request)
        canonical_request = self.canonical_request(request)
        string_to_sign = self.string_to_sign(request, canonical_request)
        signature = self.signature(string_to_sign, request)
        self._inject_signature_to_request(request, signature)


class RawClient:
    """POST / with arbitrary bodies and headers, SigV4-signed (or not, or wrongly) with botocore's signer.

    raw("DescribeKey", {"KeyId": k})                     -> correctly signed
    raw("DescribeKey", data=b'{"KeyId":')                -> raw bytes body
    raw("ListKeys", {}, sign=False)                      -> no Authorization header
    raw("ListKeys", {}, secret_key="wrong")              -> bad signature
    raw("ListKeys", {}, region="eu-west-1")              -> other credential scope
    raw("ListKeys", {}, timestamp=utcnow() - 10 min)     -> signed in the past
    raw("ListKeys", {}, tamper=lambda b: b + b" ")       -> body changed after signing
    raw("ListKeys", {}, override_headers={...})          -> headers changed after signing
    """

    def __init__(self, server: TrentServer):
        self.server = server
        self.session = requests.Session()

    def __call__(
        self,
        target: str | None,
        body=None,
        *,
        data: bytes | str | None = None,
        headers: dict | None = None,
        sign: bool = True,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = REGION,
        service: str = "kms",
        timestamp: dt.datetime | None = None,
        content_type: str | None = JSON_11,
        tamper=None,
        override_headers: dict | None = None,
        timeout: float = 30,
    ) -> RawResponse:
        if data is None:
            data = json.dumps({} if body is None else body)
        if isinstance(data, str):
            data = data.encode()
        url = self.server.endpoint + "/"
        hdrs: dict[str, str] = {}
        if content_type is not None:
            hdrs["Content-Type"] = content_type
        if target is not None:
            hdrs["X-Amz-Target"] = target if "." in target else f"TrentService.{target}"
        hdrs.update(headers or {})
        request = AWSRequest(method="POST", url=url, data=data, headers=hdrs)
        if sign:
            creds = Credentials(access_key or self.server.access_key_id, secret_key or self.server.secret_access_key)
            signer = (
                _FixedTimeSigV4Auth(creds, service, region, timestamp)
                if timestamp is not None
                else SigV4Auth(creds, service, region)
            )
            signer.add_auth(request)
        sent_headers = dict(request.headers.items())
        sent_headers.update(override_headers or {})
        if tamper is not None:
            data = tamper(data)
        response = self.session.post(url, data=data, headers=sent_headers, timeout=timeout)
        return RawResponse(response.status_code, response.headers, response.text)


# --------------------------------------------------------------------------- ciphertext blob

HEADER_LEN = 1 + 16 + 4
IV_LEN = 12
TAG_LEN = 16


def blob_overhead() -> int:
    return HEADER_LEN + IV_LEN + TAG_LEN


def flip_bit(blob: bytes, index: int, bit: int = 0) -> bytes:
    b = bytearray(blob)
    b[index] ^= 1 << bit
    return bytes(b)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
