"""Hostile input that must be refused cleanly, never crash the server (issue #11, part C).

Each test runs on a private server (make_server): these requests killed the server (a Swift trap, SIGILL)
or answered 500, and a crash must fail only the test that caused it, not the session server everyone shares.
After every hostile request the test checks the exact answer and that the process is alive and still
answers a normal signed request.
"""

from __future__ import annotations

import base64
import json
import socket
import time

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError

from trent_e2e import JSON_11, REGION, RawClient, crash_summary, make_kms

ANSWER_TIMEOUT = 5.0


class Target:
    """A private server with its raw and boto3 clients."""

    def __init__(self, server):
        self.server = server
        self.raw = RawClient(server)
        self.kms = make_kms(server)

    def call(self, operation: str, body=None, *, timeout: float = ANSWER_TIMEOUT, **options):
        """RawClient's request; a connection closed without an answer fails the test saying whether, and why,
        the server died."""
        try:
            return self.raw(operation, body, timeout=timeout, **options)
        except requests.ConnectionError as exc:
            failure = f"{operation}: no answer ({exc}); {crash_summary(self.server) or 'the server is still running'}"
        pytest.fail(failure, pytrace=False)

    def assert_serving(self, after: str) -> None:
        """The process is alive and a normal signed request (ListKeys) still succeeds."""
        try:
            listed = self.kms.list_keys(Limit=1)
        except BotoCoreError as exc:
            crash = crash_summary(self.server) or "the server is still running"
            failure = f"after {after}, ListKeys got no answer ({exc}); {crash}"
        else:
            assert "Keys" in listed, f"ListKeys after {after}: {listed}"
            failure = crash_summary(self.server, wait=0)
        if failure:
            pytest.fail(failure, pytrace=False)


@pytest.fixture
def target(make_server) -> Target:
    return Target(make_server())


def assert_error(resp, error_type: str, status: int = 400) -> None:
    got = resp.json.get("__type") if isinstance(resp.json, dict) else None
    if (resp.status, got) != (status, error_type):
        pytest.fail(f"expected {status} {error_type}, got {resp.status} {got}: {resp.text[:300]!r}", pytrace=False)


def post(target: Target, operation: str, text: str | bytes, *, sign: bool = True):
    """POST a body given as JSON text, so escapes and duplicate-looking names reach the server as written."""
    return target.call(operation, data=text, sign=sign)


# --------------------------------------------------------------------------- member names that collide by case

# Names that differ but whose first character lowercases to the same string (the audit record writes
# request members lowerCamelCase): "A"/"a", and U+0130 (Latin capital I with dot above, which lowercases to
# "i" + U+0307) against "i" + U+0307 spelled out. Each pair sits below a member the audit trail copies.
UNSIGNED_CASE_COLLISIONS = [
    ("DescribeKey", '{"KeyId":{"A":1,"a":2}}'),
    ("CreateKey", '{"Tags":[{"TagKey":"x","tagKey":"y"}]}'),
    ("DescribeKey", '{"KeyId":{"\\u0130d":1,"i\\u0307d":2}}'),
    ("DescribeKey", '{"KeyId":{"\u0130d":1,"i\u0307d":2}}'),
]


@pytest.mark.parametrize(
    "operation, text", UNSIGNED_CASE_COLLISIONS, ids=["ascii-pair", "tag-key-pair", "dotted-I-escaped", "dotted-I-utf8"]
)
def test_unsigned_request_with_case_colliding_members_is_unauthenticated(target, operation, text):
    """Authentication fails first; the body is read only for the audit record and must not crash it."""
    resp = post(target, operation, text.encode(), sign=False)
    assert_error(resp, "MissingAuthenticationTokenException")
    target.assert_serving(f"an unsigned {operation} with {text!r}")


# A KeyId (or other string member) given as an object is the wrong JSON type: SerializationException.
# Members the operation does not have are ignored, as AWS ignores unknown members, so a Tags entry with an
# extra "tagKey" is read as its TagKey and TagValue only.
SIGNED_CASE_COLLISIONS = [
    ("DescribeKey", '{"KeyId":{"A":1,"a":2}}', 400, "SerializationException"),
    ("DescribeKey", '{"KeyId":{"KeyId":"x","keyId":"y"}}', 400, "SerializationException"),
    ("DescribeKey", '{"KeyId":{"\\u0130d":1,"i\\u0307d":2}}', 400, "SerializationException"),
    ("DescribeKey", '{"KeyId":{"\u0130d":1,"i\u0307d":2}}', 400, "SerializationException"),
    ("DescribeKey", '{"KeyId":{"\\u212aeyId":1,"keyId":2}}', 400, "SerializationException"),
    ("CreateKey", '{"Tags":[{"TagKey":{"X":{"A":1,"a":2}},"TagValue":"v"}]}', 400, "SerializationException"),
    ("PutKeyPolicy", '{"KeyId":"{key}","Policy":{"Statement":{"A":1,"a":2}}}', 400, "SerializationException"),
    ("CreateKey", '{"Tags":[{"TagKey":"x","tagKey":"y"}]}', 400, "ValidationException"),
    ("DescribeKey", '{"KeyId":"{key}","keyId":{"A":1,"a":2}}', 200, None),
]


@pytest.mark.parametrize(
    "operation, text, status, error_type",
    SIGNED_CASE_COLLISIONS,
    ids=[
        "key-id-object", "key-id-object-of-key-ids", "dotted-I-escaped", "dotted-I-utf8", "kelvin-sign",
        "tag-key-depth-4", "policy-object", "tag-without-value", "unknown-top-level-member",
    ],
)
def test_signed_request_with_case_colliding_members(target, operation, text, status, error_type):
    key_id = target.kms.create_key()["KeyMetadata"]["KeyId"]
    resp = post(target, operation, text.replace("{key}", key_id).encode())
    if error_type is None:
        assert resp.status == status, resp
    else:
        assert_error(resp, error_type, status)
    target.assert_serving(f"a signed {operation} with {text!r}")


def test_tag_with_case_colliding_extra_members_keeps_the_real_tag(target):
    """{"TagKey","TagValue"} plus "tagKey"/"tagValue": the key gets exactly the tag its real members name."""
    text = '{"Tags":[{"TagKey":"x","TagValue":"v","tagKey":"y","tagValue":"w"}]}'
    resp = post(target, "CreateKey", text)
    assert resp.status == 200, resp
    target.assert_serving(f"CreateKey with {text}")
    key_id = resp.json["KeyMetadata"]["KeyId"]
    assert target.kms.list_resource_tags(KeyId=key_id)["Tags"] == [{"TagKey": "x", "TagValue": "v"}]


@pytest.mark.parametrize(
    "context", [{"A": "1", "a": "2"}, {"\u0130d": "1", "i\u0307d": "2"}], ids=["ascii-pair", "dotted-I-pair"]
)
def test_encryption_context_keys_that_differ_only_by_case_are_two_pairs(target, context):
    """Encryption context keys are case-sensitive data: both pairs are bound, neither alone decrypts."""
    key_id = target.kms.create_key()["KeyMetadata"]["KeyId"]
    body = {"KeyId": key_id, "Plaintext": base64.b64encode(b"case").decode(), "EncryptionContext": context}
    encrypted = target.call("Encrypt", body)
    assert encrypted.status == 200, encrypted
    blob = encrypted.json["CiphertextBlob"]
    target.assert_serving("Encrypt with a case-pair context")
    decrypted = target.call("Decrypt", {"CiphertextBlob": blob, "EncryptionContext": context})
    assert decrypted.status == 200 and base64.b64decode(decrypted.json["Plaintext"]) == b"case", decrypted
    for name in context:
        partial = target.call("Decrypt", {"CiphertextBlob": blob, "EncryptionContext": {name: context[name]}})
        assert_error(partial, "InvalidCiphertextException")
    target.assert_serving("Decrypt with a case-pair context")


# --------------------------------------------------------------------------- oversized encryption context on Decrypt

# The canonical encoding bound to a ciphertext gives each key, each value and the pair count a 16-bit
# length, and Encrypt refuses a context over 8,192 bytes with ValidationException. Decrypt and ReEncrypt
# must refuse the same contexts the same way (AWS validates its input before using it); today a key, a
# value or a pair count past 65,535 traps while the additional data is built.
OVERSIZED_CONTEXTS = {
    "key-65536-bytes": lambda: {"k" * 65_536: "v"},
    "value-65536-bytes": lambda: {"k": "v" * 65_536},
    "65536-pairs": lambda: {f"k{index:05x}": "" for index in range(65_536)},
    "8193-bytes": lambda: {"k" * 8_192: "v"},
}


@pytest.fixture
def sealed(target):
    """A real ciphertext (made without an encryption context) and its key."""
    key_id = target.kms.create_key()["KeyMetadata"]["KeyId"]
    blob = target.kms.encrypt(KeyId=key_id, Plaintext=b"oversized context")["CiphertextBlob"]
    return key_id, base64.b64encode(blob).decode()


@pytest.mark.parametrize("size", list(OVERSIZED_CONTEXTS))
def test_decrypt_refuses_an_oversized_encryption_context(target, sealed, size):
    _, blob = sealed
    resp = target.call("Decrypt", {"CiphertextBlob": blob, "EncryptionContext": OVERSIZED_CONTEXTS[size]()}, timeout=30)
    assert_error(resp, "ValidationException")
    target.assert_serving(f"Decrypt with an encryption context of {size}")


@pytest.mark.parametrize("size", list(OVERSIZED_CONTEXTS))
def test_reencrypt_refuses_an_oversized_source_encryption_context(target, sealed, size):
    key_id, blob = sealed
    body = {"CiphertextBlob": blob, "DestinationKeyId": key_id, "SourceEncryptionContext": OVERSIZED_CONTEXTS[size]()}
    resp = target.call("ReEncrypt", body, timeout=30)
    assert_error(resp, "ValidationException")
    target.assert_serving(f"ReEncrypt with a source encryption context of {size}")


# --------------------------------------------------------------------------- base64 that is not base64

@pytest.mark.parametrize("text", ["====", "YQ===", "YQ====", "=", " YQ== ", "YW Jj"])
def test_blob_that_is_not_base64_is_a_serialization_error(target, text):
    """Padding alone or in excess is not base64 (RFC 4648): no blob may be read from it. ("====" was read as
    one zero byte and "YQ===" as "a".)"""
    key_id = target.kms.create_key()["KeyMetadata"]["KeyId"]
    assert_error(target.call("Encrypt", {"KeyId": key_id, "Plaintext": text}), "SerializationException")
    target.assert_serving(f"Encrypt with Plaintext {text!r}")


# --------------------------------------------------------------------------- broken HTTP framing (raw socket)

def signed_head(server, body: bytes, extra: str = "") -> bytes:
    """The request line and SigV4-signed headers of a ListKeys whose complete body is `body`; `extra` header
    lines (each ending in CRLF) are added unsigned, and the caller frames and sends the body itself."""
    request = AWSRequest(
        method="POST", url=server.endpoint + "/", data=body,
        headers={"Content-Type": JSON_11, "X-Amz-Target": "TrentService.ListKeys"})
    SigV4Auth(Credentials(server.access_key_id, server.secret_access_key), "kms", REGION).add_auth(request)
    lines = ["POST / HTTP/1.1", f"Host: {server.host}:{server.port}"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    return ("\r\n".join(lines) + "\r\n" + extra).encode()


def exchange(server, payload: bytes, half_close: bool) -> tuple[bytes, str]:
    """Sends `payload` on a fresh connection (then, if asked, shuts down the writing side: EOF) and reads
    until the server closes, one whole response has arrived, or ANSWER_TIMEOUT passes.
    Returns the bytes read and how the exchange ended: "response", "closed" or "timeout"."""
    deadline = time.monotonic() + ANSWER_TIMEOUT
    received = b""
    with socket.create_connection((server.host, server.port), timeout=ANSWER_TIMEOUT) as sock:
        try:
            sock.sendall(payload)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may refuse the rest of a bad request early; what it answered is still read
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65_536)
            except socket.timeout:
                break
            except ConnectionResetError:
                return received, "closed"
            if not chunk:
                return received, "response" if received else "closed"
            received += chunk
            if complete_response(received):
                return received, "response"
    return received, "response" if complete_response(received) else "timeout"


def complete_response(data: bytes) -> bool:
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return True


CHUNKED = "Transfer-Encoding: chunked\r\n"
TRAILERS = "".join(f"X-Trailer-{index}: v\r\n" for index in range(10_000))

# (id, extra header lines, framed body, half-close after sending). The signed body is always "{}".
BROKEN_FRAMING = [
    ("body-shorter-than-content-length-then-eof", "Content-Length: 2\r\n", b"\r\n{", True),
    ("chunk-size-zz", CHUNKED, b"\r\nzz\r\n{}\r\n0\r\n\r\n", False),
    ("chunk-size-100-characters", CHUNKED, b"\r\n" + b"f" * 100 + b"\r\n{}\r\n0\r\n\r\n", False),
    ("chunk-without-crlf", CHUNKED, b"\r\n2\r\n{}XX0\r\n\r\n", False),
    ("no-last-chunk-then-eof", CHUNKED, b"\r\n2\r\n{}\r\n", True),
    ("chunk-longer-than-the-data-then-eof", CHUNKED, b"\r\nfffffff\r\n{}", True),
    ("10000-trailers", CHUNKED, b"\r\n2\r\n{}\r\n0\r\n" + TRAILERS.encode() + b"\r\n", False),
    ("unknown-transfer-coding-then-eof", "Transfer-Encoding: gzip\r\n", b"\r\n{}", True),
]


@pytest.mark.parametrize("extra, framed, half_close", [case[1:] for case in BROKEN_FRAMING],
                         ids=[case[0] for case in BROKEN_FRAMING])
def test_broken_http_framing_is_a_client_error(target, extra, framed, half_close):
    """A 4xx or a closed connection, never a 500: a request the client framed badly is the client's error."""
    server = target.server
    received, ending = exchange(server, signed_head(server, b"{}", extra) + framed, half_close)
    assert ending != "timeout", f"no answer and no close within {ANSWER_TIMEOUT:.0f}s; read {received[:300]!r}"
    if received:
        status_line = received.split(b"\r\n", 1)[0]
        parts = status_line.split()
        assert len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1].isdigit(), received[:300]
        status = int(parts[1])
        assert 400 <= status < 500 and b"KMSInternalException" not in received, (
            f"expected a 4xx or a closed connection, got:\n{received[:400].decode(errors='replace')}"
        )
    target.assert_serving(f"a request with broken framing ({ending})")


def test_well_framed_chunked_request_is_served(target):
    """The control for the framing tests: the same signed head with a correct chunked body succeeds."""
    server = target.server
    received, ending = exchange(server, signed_head(server, b"{}", CHUNKED) + b"\r\n2\r\n{}\r\n0\r\n\r\n", False)
    assert ending == "response" and received.startswith(b"HTTP/1.1 200 "), received[:400]
    assert "Keys" in json.loads(received.partition(b"\r\n\r\n")[2]), received[:400]
