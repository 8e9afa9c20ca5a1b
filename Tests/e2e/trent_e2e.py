"""Shared helpers for the Trent end-to-end suite: the server process, clients, identifiers, assertions.

Fixtures in conftest.py are thin wrappers around what lives here, so tests that need their own server
(persistence) reuse exactly the same start/stop/client code as the session server.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import random
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

# The token every server of this run uses: softhsm2 (default) or nss-softoken, created by Trent in each
# server's data folder (`hsm.embeddedToken`). `make test` runs the suite once per token.
TOKEN = os.environ.get("TRENT_E2E_TOKEN", "softhsm2")

# What this run's token cannot do, as its HSM profile (Config/hsm/<token>.json) records it: Trent answers
# UnsupportedOperationException there (tests of that answer run on that token), and tests that need it skip.
# EC KMS keys work on both tokens (NSS softoken unwraps EC private keys with its CKA_NSS_DB attribute, which
# its profile names); NSS softoken's ecCurves leaves out secp256k1.
NSS_HAS_NO_SECP256K1 = "NSS softoken has no secp256k1 curve (CKR_DOMAIN_PARAMETERS_INVALID)"


def token_has_key_pair_spec(spec: str) -> bool:
    return not (TOKEN == "nss-softoken" and spec == "ECC_SECG_P256K1")


def require_key_pair_spec(spec: str) -> None:
    """Skips a test that needs KMS keys or data key pairs of `spec` on a token whose profile lacks its curve."""
    if not token_has_key_pair_spec(spec):
        pytest.skip(NSS_HAS_NO_SECP256K1)

REGION = "us-east-1"
ACCOUNT_ID = "111122223333"
# Two more Regions the default configuration serves, for tests of regional and multi-Region keys.
WEST = "us-west-2"
EU = "eu-central-1"

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

def key_arn(key_id: str, region: str = REGION) -> str:
    return f"arn:aws:kms:{region}:{ACCOUNT_ID}:key/{key_id}"


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

def free_port(other_than: int | None = None) -> int:
    """A port nothing listens on now; `other_than` keeps a second pick from returning the first (the kernel may hand
    the same free port out twice in a row)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != other_than:
            return port


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class TrentServer:
    """One `trent serve` process on a fixed data folder and port; restart() keeps both."""

    host = "127.0.0.1"

    def __init__(self, data_dir: Path, port: int | None = None, binary: str | os.PathLike | None = None,
                 admin_port: int | None = None):
        self.binary = Path(binary or os.environ.get("TRENT_BIN") or DEFAULT_BIN)
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.endpoint = f"http://{self.host}:{self.port}"
        # The admin listener (/metrics, /health, /ready) on a free port of its own, so servers run side by side.
        self.admin_port = admin_port or free_port(other_than=self.port)
        self.admin_url = f"http://{self.host}:{self.admin_port}"
        self.log_path = self.data_dir / "trent.log"
        self.access_key_id = ACCESS_KEY_ID
        self.secret_access_key = SECRET_ACCESS_KEY
        base = {k: v for k, v in os.environ.items() if not k.startswith("TRENT_")}
        base.update(
            TRENT_DATA_DIR=str(self.data_dir),
            TRENT_HOST=self.host,
            TRENT_PORT=str(self.port),
            TRENT_ADMIN_PORT=str(self.admin_port),
            TRENT_REGION=REGION,
            TRENT_ACCOUNT_ID=ACCOUNT_ID,
            TRENT_ACCESS_KEY_ID=ACCESS_KEY_ID,
            TRENT_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
            TRENT_LOG_LEVEL="info",
            TRENT_HSM_EMBEDDED_TOKEN=TOKEN,
            # Quotas are on by default (AWS's rates, e.g. CreateKey 5/s) and the suite does not retry: only the quota
            # tests (test_quotas.py) turn them on.
            TRENT_QUOTAS_ENABLED="false",
        )
        self.env = base
        # Set by use_tls: the CA bundle clients verify the server with (make_kms passes it as verify=).
        self.ca_bundle: str | None = None
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        ALL_SERVERS.append(self)

    def __repr__(self) -> str:
        return f"TrentServer({self.endpoint}, data_dir={self.data_dir})"

    def use_tls(self, certificate_file, private_key_file, ca_bundle, client_ca_file=None) -> None:
        """Serve HTTPS with these PEM files (and mutual TLS with `client_ca_file`); clients trust `ca_bundle`."""
        self.env.update(TRENT_TLS_CERTIFICATE_FILE=str(certificate_file), TRENT_TLS_PRIVATE_KEY_FILE=str(private_key_file))
        if client_ca_file is not None:
            self.env["TRENT_TLS_CLIENT_CA_FILE"] = str(client_ca_file)
        self.ca_bundle = str(ca_bundle)
        self.endpoint = f"https://{self.host}:{self.port}"

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


def make_kms(server: TrentServer, *, access_key_id: str | None = None, secret_access_key: str | None = None,
             retries: dict | None = None, read_timeout: float = 30, max_pool_connections: int = 10,
             verify=None, client_cert=None, region: str = REGION):
    """A boto3 KMS client for `server`, signing for `region`.

    Client-side parameter validation is off so bounds (Limit=0, NumberOfBytes=0, empty Plaintext, ...)
    reach the server and the server's own validation is what is tested. No retries.

    `retries` is botocore's retry configuration; the default, {"max_attempts": 1}, is botocore's legacy mode
    with one retry of a 5xx (max_attempts counts retries there). {"total_max_attempts": 1} means one attempt.

    Over HTTPS, `verify` defaults to the server's CA bundle; `client_cert` is (certificate file, key file).
    """
    session = boto3.session.Session(botocore_session=_isolated_botocore_session())
    client = session.client(
        "kms",
        region_name=region,
        endpoint_url=server.endpoint,
        aws_access_key_id=access_key_id or server.access_key_id,
        aws_secret_access_key=secret_access_key or server.secret_access_key,
        verify=verify if verify is not None else server.ca_bundle,
        config=Config(
            client_cert=client_cert,
            retries=dict(retries) if retries is not None else {"max_attempts": 1},
            parameter_validation=False,
            connect_timeout=5,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
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
        if server.ca_bundle:
            self.session.verify = server.ca_bundle

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


# --------------------------------------------------------------------------- identities (`trent identity ...`)

def random_account_id() -> str:
    """A fresh 12-digit account id (never the default account)."""
    while True:
        value = str(random.SystemRandom().randint(200_000_000_000, 999_999_999_999))
        if value != ACCOUNT_ID:
            return value


def run_identity(server: TrentServer, *args: str) -> subprocess.CompletedProcess:
    """Runs `trent identity <args>` against the server's data folder (works while the server runs)."""
    return subprocess.run(
        [str(server.binary), "identity", *args], cwd=server.data_dir, env=server.env,
        capture_output=True, text=True, timeout=60,
    )


def identity(server: TrentServer, *args: str) -> dict:
    """`trent identity <args>` that must succeed; returns its JSON output."""
    proc = run_identity(server, *args)
    assert proc.returncode == 0, f"trent identity {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
    return json.loads(proc.stdout)


def user_arn(account: str, name: str) -> str:
    return f"arn:aws:iam::{account}:user/{name}"


def role_arn(account: str, name: str) -> str:
    return f"arn:aws:iam::{account}:role/{name}"


def root_arn(account: str) -> str:
    return f"arn:aws:iam::{account}:root"


def account_key_arn(account: str, key_id: str) -> str:
    return f"arn:aws:kms:{REGION}:{account}:key/{key_id}"


def account_alias_arn(account: str, alias_name: str) -> str:
    return f"arn:aws:kms:{REGION}:{account}:{alias_name}"


def policy_json(*statements: dict, policy_id: str | None = None) -> str:
    doc: dict = {"Version": "2012-10-17"}
    if policy_id:
        doc["Id"] = policy_id
    doc["Statement"] = list(statements)
    return json.dumps(doc)


def allow(action, resource="*", condition: dict | None = None, principal=None, sid: str | None = None) -> dict:
    return _statement("Allow", action, resource, condition, principal, sid)


def deny(action, resource="*", condition: dict | None = None, principal=None, sid: str | None = None) -> dict:
    return _statement("Deny", action, resource, condition, principal, sid)


def _statement(effect, action, resource, condition, principal, sid) -> dict:
    st: dict = {}
    if sid:
        st["Sid"] = sid
    st["Effect"] = effect
    if principal is not None:
        # "*", {"AWS": ...}/{"Service": ...} as given; an ARN (or a list of them) means {"AWS": ...}.
        st["Principal"] = principal if principal == "*" or isinstance(principal, dict) else {"AWS": principal}
    st["Action"] = action
    st["Resource"] = resource
    if condition:
        st["Condition"] = condition
    return st


def root_statement(account: str) -> dict:
    """The default key policy's statement: the account root may do everything (delegation to identity policies)."""
    return allow("kms:*", principal=root_arn(account), sid="Enable IAM User Permissions")


ADMIN_POLICY = policy_json(allow("kms:*"))


class Principal:
    """A user, role or integrated service with one access key; .kms() is a boto3 client signed with it."""

    def __init__(self, server: TrentServer, arn: str, account: str | None, access_key_id: str, secret_access_key: str):
        self.server = server
        self.arn = arn
        self.account = account
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self._client = None

    def __repr__(self) -> str:
        return f"Principal({self.arn})"

    @property
    def kms(self):
        if self._client is None:
            self._client = make_kms(self.server, access_key_id=self.access_key_id, secret_access_key=self.secret_access_key)
        return self._client

    def put_policy(self, document: str | dict, name: str = "policy") -> None:
        if isinstance(document, dict):
            document = json.dumps(document)
        identity(self.server, "put-policy", "--principal", self.arn, "--name", name, "--document", document)

    def delete_policy(self, name: str = "policy") -> None:
        identity(self.server, "delete-policy", "--principal", self.arn, "--name", name)

    def authorize_service(self, service: str, *, at: dt.datetime | None = None) -> "ForwardedAuthorization":
        """What this principal hands an integrated service so it can call on its behalf (valid 15 minutes)."""
        date = (at or utcnow()).astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return ForwardedAuthorization(
            self.access_key_id, date, forwarding_signature(self.secret_access_key, date, service), self.arn)


class ForwardedAuthorization:
    def __init__(self, access_key_id: str, date: str, signature: str, principal_arn: str = ""):
        self.access_key_id = access_key_id
        self.date = date
        self.signature = signature
        self.principal_arn = principal_arn

    def headers(self) -> dict[str, str]:
        return {
            "X-Trent-Forwarded-Access-Key": self.access_key_id,
            "X-Trent-Forwarded-Date": self.date,
            "X-Trent-Forwarded-Signature": self.signature,
        }


def sigv4_signing_key(secret: str, date8: str, region: str = REGION, service: str = "kms") -> bytes:
    def h(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    return h(h(h(h(("AWS4" + secret).encode(), date8), region), service), "aws4_request")


def forwarding_signature(secret: str, amz_date: str, service_principal: str, region: str = REGION) -> str:
    """hex(HMAC-SHA256(kSigning(secret), "TRENT-FORWARD-V1\\n<date>\\n<region>\\n<service>"))."""
    message = f"TRENT-FORWARD-V1\n{amz_date}\n{region}\n{service_principal}"
    return hmac.new(sigv4_signing_key(secret, amz_date[:8], region), message.encode(), hashlib.sha256).hexdigest()


def make_forwarding_kms(server: TrentServer, caller: Principal, forwarded) -> object:
    """A KMS client signed with `caller`'s credentials that adds (and signs) the X-Trent-Forwarded-* headers.

    `forwarded` is a ForwardedAuthorization, or a callable returning one per request.
    """
    client = make_kms(server, access_key_id=caller.access_key_id, secret_access_key=caller.secret_access_key)

    def add_headers(request, **_):
        auth = forwarded() if callable(forwarded) else forwarded
        for name, value in auth.headers().items():
            request.headers[name] = value

    client.meta.events.register("before-sign.kms", add_headers)
    return client


class Identities:
    """Creates accounts and principals on one server through `trent identity`."""

    # Integrated services are global (no account) and hold at most two access keys: one Principal per
    # (data folder, service name) for the whole session.
    _services: dict[tuple[str, str], Principal] = {}

    def __init__(self, server: TrentServer):
        self.server = server

    def __call__(self, *args: str) -> dict:
        return identity(self.server, *args)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return run_identity(self.server, *args)

    def account(self, name: str = "e2e") -> str:
        account_id = random_account_id()
        out = self("create-account", "--id", account_id, "--name", name)
        assert out == {"AccountId": account_id, "Name": name}, out
        return account_id

    def access_key(self, arn: str) -> dict:
        out = self("create-access-key", "--principal", arn)
        assert out["Principal"] == arn, out
        return out

    def _principal(self, kind: str, account: str, name: str, policy, tags: dict | None) -> Principal:
        args = [f"create-{kind}", "--account", account, "--name", name]
        for k, v in (tags or {}).items():
            args += ["--tag", f"{k}={v}"]
        out = self(*args)
        arn = user_arn(account, name) if kind == "user" else role_arn(account, name)
        assert out["Arn"] == arn and out["AccountId"] == account and out["Tags"] == (tags or {}), out
        key = self.access_key(arn)
        principal = Principal(self.server, arn, account, key["AccessKeyId"], key["SecretAccessKey"])
        if policy is not None:
            principal.put_policy(policy)
        return principal

    def user(self, account: str, name: str, policy: str | dict | None = None, tags: dict | None = None) -> Principal:
        return self._principal("user", account, name, policy, tags)

    def role(self, account: str, name: str, policy: str | dict | None = None, tags: dict | None = None) -> Principal:
        return self._principal("role", account, name, policy, tags)

    def service(self, name: str = "rds.us-east-1.amazonaws.com") -> Principal:
        cache_key = (str(self.server.data_dir), name)
        if cache_key not in self._services:
            proc = self.run("create-service", "--name", name)
            assert proc.returncode == 0 or "already exists" in proc.stderr, proc.stderr
            key = self.access_key(name)
            self._services[cache_key] = Principal(self.server, name, None, key["AccessKeyId"], key["SecretAccessKey"])
        return self._services[cache_key]


def access_denied_message(principal_arn: str, action: str, resource: str, reason: str) -> str:
    """The AccessDeniedException message; `reason` is "no-resource", "no-identity", "deny-resource" or "deny-identity"."""
    tail = {
        "no-resource": f"because no resource-based policy allows the {action} action",
        "no-identity": f"because no identity-based policy allows the {action} action",
        "deny-resource": "with an explicit deny in a resource-based policy",
        "deny-identity": "with an explicit deny in an identity-based policy",
    }[reason]
    return f"User: {principal_arn} is not authorized to perform: {action} on resource: {resource} {tail}"


@contextlib.contextmanager
def expect_denied(principal_arn: str | None = None, action: str | None = None, resource: str | None = None,
                  reason: str | None = None, what: str = ""):
    """AccessDeniedException; with all of principal/action/resource/reason, also the exact message."""
    with expect_error("AccessDeniedException", what) as excinfo:
        yield excinfo
    if reason is not None:
        message = excinfo.value.response["Error"].get("Message", "")
        expected = access_denied_message(principal_arn, action, resource, reason)
        assert message == expected, f"{what}: message\n  {message!r}\nexpected\n  {expected!r}"


# --------------------------------------------------------------------------- crashes

def audit_record_files(audit_dir: Path) -> list[Path]:
    """The audit trail's records files in sequence order: the rotated records-<first sequence, 20 digits>.jsonl
    (audit.rotateBytes / audit.rotateSeconds), then the current records.jsonl."""
    current = Path(audit_dir) / "records.jsonl"
    return sorted(Path(audit_dir).glob("records-*.jsonl")) + ([current] if current.exists() else [])


def crash_summary(server: TrentServer, wait: float = 10.0) -> str | None:
    """None if the server is still running after `wait` seconds; otherwise its exit status and the lines of its
    log that say why: the Swift runtime error and the crashed thread's first frame in Trent's own sources.

    Called when a connection closed without an answer; a crashing server takes a few seconds to print its
    backtrace and exit, hence the wait.
    """
    proc = server.proc
    if proc is None:
        return "the server is not running"
    try:
        status = proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        return None
    # The log may hold earlier crashes of the same data folder (a restarted server): read the last one.
    lines = server.log_text().splitlines()

    def last(predicate, before: int | None = None) -> int | None:
        end = len(lines) if before is None else before
        return next((index for index in range(end - 1, -1, -1) if predicate(lines[index])), None)

    reasons: list[str] = []
    program_crashed = last(lambda line: "Program crashed" in line)
    if program_crashed is not None:
        fatal = last(lambda line: "Fatal error" in line, program_crashed)
        if fatal is not None and program_crashed - fatal <= 5:
            reasons.append(lines[fatal].strip())
        reasons.append(lines[program_crashed].strip(" *"))
    crashed = last(lambda line: line.rstrip().endswith("crashed:"))
    if crashed is not None:
        frame = next((line.strip() for line in lines[crashed:crashed + 40] if "/Sources/" in line), None)
        if frame:
            reasons.append(f"crashed in {frame[frame.find(' ', frame.find('0x')) + 1:]}")
    signal_name = f" ({signal.Signals(-status).name})" if status < 0 else ""
    return f"the server exited with status {status}{signal_name}: " + ("; ".join(reasons) or "no reason in its log")
