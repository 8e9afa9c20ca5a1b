"""AWS JSON 1.1 and SigV4 at the wire level, with raw HTTP requests."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from trent_e2e import REGION, key_arn, sigv4_signing_key, utcnow

ONE_MIB = 1024 * 1024


def assert_error(resp, error_type: str, status: int = 400):
    status_code, headers, body = resp
    assert isinstance(body, dict), f"error body is not a JSON object: {resp!r}"
    assert body.get("__type") == error_type, resp
    message = body.get("message", body.get("Message"))
    assert isinstance(message, str), f"no message in {resp!r}"
    assert headers.get("x-amzn-RequestId"), f"no x-amzn-RequestId header: {resp!r}"
    assert status_code == status, resp


def assert_ok(resp) -> dict:
    status, headers, body = resp
    assert status == 200, resp
    assert headers.get("x-amzn-RequestId"), f"no x-amzn-RequestId header: {resp!r}"
    assert "json" in headers.get("Content-Type", ""), resp
    assert isinstance(body, dict), resp
    return body


# --------------------------------------------------------------------------- success path

def test_signed_request_succeeds(raw):
    body = assert_ok(raw("GenerateRandom", {"NumberOfBytes": 16}))
    assert len(base64.b64decode(body["Plaintext"], validate=True)) == 16


def test_request_ids_are_unique(raw):
    ids = {raw("ListKeys", {"Limit": 1}).headers.get("x-amzn-RequestId") for _ in range(3)}
    assert None not in ids and len(ids) == 3


def test_operations_without_output_answer_an_empty_body(raw, new_key):
    key_id = new_key()
    for operation in ("DisableKey", "EnableKey", "EnableKeyRotation"):
        resp = raw(operation, {"KeyId": key_id})
        assert resp.status == 200 and resp.text == "", (operation, resp)


def test_responses_are_json_objects_with_exact_members(raw, new_key):
    key_id = new_key()
    body = assert_ok(raw("Encrypt", {"KeyId": key_id, "Plaintext": base64.b64encode(b"x").decode()}))
    assert set(body) == {"CiphertextBlob", "KeyId", "EncryptionAlgorithm"}
    assert body["KeyId"] == key_arn(key_id) and body["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"


def test_timestamps_are_epoch_numbers(raw):
    created = assert_ok(raw("CreateKey", {"Description": "raw"}))["KeyMetadata"]
    for md in (created, assert_ok(raw("DescribeKey", {"KeyId": created["KeyId"]}))["KeyMetadata"]):
        stamp = md["CreationDate"]
        assert isinstance(stamp, (int, float)) and not isinstance(stamp, bool), md
        assert abs(stamp - utcnow().timestamp()) < 300
        assert md["Arn"] == key_arn(md["KeyId"])
        assert md["Enabled"] is True


def test_deletion_date_is_epoch_number(raw, new_key):
    key_id = new_key()
    body = assert_ok(raw("ScheduleKeyDeletion", {"KeyId": key_id, "PendingWindowInDays": 7}))
    assert isinstance(body["DeletionDate"], (int, float)) and not isinstance(body["DeletionDate"], bool)


def test_blobs_are_base64(raw, new_key):
    key_id = new_key()
    enc = assert_ok(raw("Encrypt", {"KeyId": key_id, "Plaintext": base64.b64encode(b"raw-bytes").decode()}))
    blob = base64.b64decode(enc["CiphertextBlob"], validate=True)
    assert blob[1:17] == uuid.UUID(key_id).bytes
    dec = assert_ok(raw("Decrypt", {"CiphertextBlob": enc["CiphertextBlob"]}))
    assert base64.b64decode(dec["Plaintext"], validate=True) == b"raw-bytes"


# --------------------------------------------------------------------------- JSON 1.1 errors

def test_unknown_operation(raw):
    assert_error(raw("TrentService.NoSuchOp", {}), "UnknownOperationException")


def test_missing_target(raw):
    assert_error(raw(None, {}), "UnknownOperationException")


def test_malformed_json(raw):
    assert_error(raw("DescribeKey", data='{"KeyId":'), "SerializationException")


@pytest.mark.parametrize(
    "op, body",
    [
        ("DescribeKey", {"KeyId": 5}),
        ("GenerateRandom", {"NumberOfBytes": "x"}),
        ("ListKeys", {"Limit": "10"}),
        ("Encrypt", {"KeyId": "k", "Plaintext": 12}),
    ],
    ids=["string-as-number", "number-as-string", "limit-as-string", "blob-as-number"],
)
def test_wrong_json_type(raw, op, body):
    assert_error(raw(op, body), "SerializationException")


def test_body_not_an_object(raw):
    assert_error(raw("ListKeys", data="[]"), "SerializationException")


def test_missing_required_member(raw):
    assert_error(raw("DescribeKey", {}), "ValidationException")


def test_bad_base64_plaintext(raw, new_key):
    assert_error(raw("Encrypt", {"KeyId": new_key(), "Plaintext": "***"}), "SerializationException")


def test_body_over_one_mib(raw):
    payload = json.dumps({"KeyId": "k" * (ONE_MIB + ONE_MIB // 10)})
    try:
        resp = raw("DescribeKey", data=payload, timeout=60)
    except requests.ConnectionError as exc:
        pytest.fail(f"server dropped the connection instead of answering 413: {exc}")
    assert_error(resp, "ValidationException", status=413)


# --------------------------------------------------------------------------- SigV4

def test_missing_authentication(raw):
    assert_error(raw("ListKeys", {}, sign=False), "MissingAuthenticationTokenException")


def test_unknown_access_key(raw):
    resp = raw("ListKeys", {}, access_key="AKIAUNKNOWNKEY000000", secret_key="x" * 40)
    assert_error(resp, "UnrecognizedClientException")


def test_wrong_secret(raw):
    resp = raw("ListKeys", {}, secret_key="wRongSecretKey0123456789abcdefGHIJKLMNOP")
    assert_error(resp, "InvalidSignatureException")


def test_body_changed_after_signing(raw):
    resp = raw("GenerateRandom", {"NumberOfBytes": 16}, tamper=lambda b: b.replace(b"16", b"32"))
    assert_error(resp, "InvalidSignatureException")


def test_target_changed_after_signing(raw):
    resp = raw("ListKeys", {}, override_headers={"X-Amz-Target": "TrentService.ListAliases"})
    assert_error(resp, "InvalidSignatureException")


@pytest.mark.parametrize("skew_minutes", [-10, 10], ids=["past", "future"])
def test_clock_skew(raw, skew_minutes):
    resp = raw("ListKeys", {}, timestamp=utcnow() + dt.timedelta(minutes=skew_minutes))
    assert_error(resp, "InvalidSignatureException")


def test_small_clock_skew_is_accepted(raw):
    assert_ok(raw("ListKeys", {}, timestamp=utcnow() - dt.timedelta(minutes=2)))


@pytest.mark.parametrize(
    "region, service", [("cn-north-1", "kms"), ("us-east-1", "s3")], ids=["other-region", "other-service"]
)
def test_wrong_credential_scope(raw, region, service):
    assert_error(raw("ListKeys", {}, region=region, service=service), "InvalidSignatureException")


# --------------------------------------------------------------------------- resilience

def test_server_keeps_serving_after_bad_requests(raw, kms):
    bad = [
        raw("TrentService.NoSuchOp", {}),
        raw("DescribeKey", data='{"KeyId":'),
        raw("DescribeKey", {"KeyId": 5}),
        raw("DescribeKey", {}),
        raw("ListKeys", {}, sign=False),
        raw("ListKeys", {}, access_key="AKIAUNKNOWNKEY000000"),
        raw("ListKeys", {}, secret_key="y" * 40),
        raw("ListKeys", {}, timestamp=utcnow() - dt.timedelta(minutes=10)),
        raw("ListKeys", {}, region="cn-north-1"),
        raw("ListKeys", {}, service="s3"),
        raw(None, {}),
        raw("ListKeys", data=b"\xff\xfe\x00garbage"),
    ]
    for resp in bad:
        assert resp.status == 400, resp
        assert isinstance(resp.json, dict) and "__type" in resp.json, resp
    # and the ordinary SDK path still works afterwards
    md = kms.create_key(Description="after the storm")["KeyMetadata"]
    blob = kms.encrypt(KeyId=md["KeyId"], Plaintext=b"still alive")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"still alive"
    assert kms.describe_key(KeyId=md["Arn"])["KeyMetadata"]["AWSAccountId"] == md["AWSAccountId"]


# --------------------------------------------------------------------------- what the signature must cover

class _NarrowSigV4Auth(SigV4Auth):
    """Signs over `host` and `x-amz-date` only, as a hand-made client might."""

    def headers_to_sign(self, request):
        headers = super().headers_to_sign(request)
        for name in list(headers.keys()):
            if name.lower() not in ("host", "x-amz-date"):
                del headers[name]
        return headers


def _narrowly_signed(server, target: str, body: dict) -> dict[str, str]:
    request = AWSRequest(method="POST", url=server.endpoint + "/", data=json.dumps(body).encode(),
                         headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"TrentService.{target}"})
    _NarrowSigV4Auth(Credentials(server.access_key_id, server.secret_access_key), "kms", REGION).add_auth(request)
    assert "SignedHeaders=host;x-amz-date," in request.headers["Authorization"], request.headers["Authorization"]
    return dict(request.headers.items())


def test_the_operation_must_be_signed(server, kms, new_key):
    """A DescribeKey signed over host;x-amz-date must not be replayable as DisableKey with the same body."""
    key = new_key()
    body = {"KeyId": key}
    headers = _narrowly_signed(server, "DescribeKey", body)
    replayed = dict(headers, **{"X-Amz-Target": "TrentService.DisableKey"})
    resp = requests.post(server.endpoint + "/", data=json.dumps(body).encode(), headers=replayed, timeout=30)
    assert resp.status_code == 400 and resp.json()["__type"] == "IncompleteSignatureException", resp.text
    assert resp.json()["message"] == "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization."
    # Not even the operation it was signed for goes through unsigned.
    resp = requests.post(server.endpoint + "/", data=json.dumps(body).encode(), headers=headers, timeout=30)
    assert resp.status_code == 400 and resp.json()["__type"] == "IncompleteSignatureException", resp.text
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"


def test_the_content_type_must_be_signed(server):
    headers = _narrowly_signed(server, "ListKeys", {})
    signed = headers["Authorization"].replace("SignedHeaders=host;x-amz-date,", "SignedHeaders=host;x-amz-date;x-amz-target,")
    resp = requests.post(server.endpoint + "/", data=b"{}", headers=dict(headers, Authorization=signed), timeout=30)
    assert resp.status_code == 400 and resp.json()["__type"] == "IncompleteSignatureException", resp.text
    assert resp.json()["message"] == "'Content-Type' must be a 'SignedHeader' in the AWS Authorization."


def _signed_with_scope_date(server, scope_date: str) -> dict[str, str]:
    """ListKeys signed correctly except that the credential scope names `scope_date` (its key derived from it)."""
    request = AWSRequest(method="POST", url=server.endpoint + "/", data=b"{}",
                         headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListKeys"})
    auth = SigV4Auth(Credentials(server.access_key_id, server.secret_access_key), "kms", REGION)
    amz_date = utcnow().strftime("%Y%m%dT%H%M%SZ")
    request.context["timestamp"] = amz_date
    auth._modify_request_before_signing(request)
    canonical = auth.canonical_request(request)
    scope = f"{scope_date}/{REGION}/kms/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signature = hmac.new(sigv4_signing_key(server.secret_access_key, scope_date), to_sign.encode(), hashlib.sha256).hexdigest()
    headers = dict(request.headers.items())
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={server.access_key_id}/{scope}, "
                                f"SignedHeaders={auth.signed_headers(auth.headers_to_sign(request))}, Signature={signature}")
    return headers


@pytest.mark.parametrize("scope_date", ["", "2026", "{today}0", "{yesterday}"])
def test_the_scope_date_is_exactly_the_request_day(server, scope_date):
    today = utcnow()
    scope_date = scope_date.format(today=today.strftime("%Y%m%d"), yesterday=(today - dt.timedelta(days=1)).strftime("%Y%m%d"))
    resp = requests.post(server.endpoint + "/", data=b"{}", headers=_signed_with_scope_date(server, scope_date), timeout=30)
    assert resp.status_code == 400 and resp.json()["__type"] == "InvalidSignatureException", resp.text
    # The same construction with the right day is accepted, so the refusal is the date's.
    resp = requests.post(server.endpoint + "/", data=b"{}", headers=_signed_with_scope_date(server, today.strftime("%Y%m%d")),
                         timeout=30)
    assert resp.status_code == 200, resp.text


def test_a_header_signed_many_times_is_refused(server):
    """SignedHeaders naming one header thousands of times would make the canonical request thousands of copies of it."""
    headers = _narrowly_signed(server, "ListKeys", {})
    headers["X-Big"] = "b" * 8000
    repeated = "SignedHeaders=" + ";".join(["x-big"] * 1000 + ["content-type", "host", "x-amz-date", "x-amz-target"]) + ","
    headers["Authorization"] = headers["Authorization"].replace("SignedHeaders=host;x-amz-date,", repeated)
    resp = requests.post(server.endpoint + "/", data=b"{}", headers=headers, timeout=30)
    assert resp.status_code == 400 and resp.json()["__type"] == "IncompleteSignatureException", resp.text
