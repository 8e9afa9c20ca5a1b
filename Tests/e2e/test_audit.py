"""The audit trail: one CloudTrail record per request, allowed or denied, and `trent audit verify`
detecting a deleted, altered or reordered record."""

from __future__ import annotations

import json
import subprocess

import pytest

from trent_e2e import ACCESS_KEY_ID, ACCOUNT_ID, RawClient, audit_record_files, expect_error, key_arn, make_kms


def records(server) -> list[dict]:
    """Every record of the trail, across its rotated files."""
    return [json.loads(line) for path in audit_record_files(server.data_dir / "audit") for line in path.read_text().splitlines()]


def verify(server):
    result = subprocess.run(
        [str(server.binary), "audit", "verify"], cwd=server.data_dir, env=server.env, capture_output=True, text=True, timeout=60)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else None, result.stderr


@pytest.fixture
def audited(make_server):
    server = make_server(start=False)
    server.env["TRENT_AUDIT_RECORDS_PER_DIGEST"] = "4"
    server.start()
    kms = make_kms(server)
    key_id = kms.create_key(Description="audited")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"audited plaintext", EncryptionContext={"case": "audit"})["CiphertextBlob"]
    kms.decrypt(CiphertextBlob=blob, EncryptionContext={"case": "audit"})
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"case": "other"})
    for _ in range(6):
        kms.describe_key(KeyId=key_id)
    bad = make_kms(server, secret_access_key="not-the-secret-0123456789")
    with expect_error("InvalidSignatureException"):
        bad.list_keys()
    server.stop()
    return server, key_id


def test_every_request_has_one_cloudtrail_record(audited):
    server, key_id = audited
    trail = records(server)
    names = [entry["record"]["eventName"] for entry in trail]
    assert names == ["CreateKey", "Encrypt", "Decrypt", "Decrypt"] + ["DescribeKey"] * 6 + ["ListKeys"]
    assert [entry["sequence"] for entry in trail] == list(range(1, len(trail) + 1))

    encrypt = trail[1]["record"]
    assert encrypt["eventVersion"] == "1.08" and encrypt["eventSource"] == "kms.amazonaws.com"
    assert encrypt["awsRegion"] == "us-east-1" and encrypt["eventType"] == "AwsApiCall"
    assert encrypt["userIdentity"]["arn"] == f"arn:aws:iam::{ACCOUNT_ID}:user/trent-admin"
    assert encrypt["userIdentity"]["accessKeyId"] == ACCESS_KEY_ID
    assert encrypt["requestParameters"] == {"keyId": key_id, "encryptionContext": {"case": "audit"}}
    assert encrypt["resources"] == [{"accountId": ACCOUNT_ID, "type": "AWS::KMS::Key", "ARN": key_arn(key_id)}]
    assert encrypt["sourceIPAddress"] == "127.0.0.1" and encrypt["requestID"] and encrypt["eventID"]
    assert "errorCode" not in encrypt

    failed = trail[3]["record"]
    # AWS sends InvalidCiphertextException without a message: the record has none either.
    assert failed["errorCode"] == "InvalidCiphertextException" and "errorMessage" not in failed
    denied = trail[-1]["record"]
    assert denied["errorCode"] == "InvalidSignatureException"
    assert denied["userIdentity"]["type"] == "Unknown" and denied["userIdentity"]["accessKeyId"] == ACCESS_KEY_ID
    assert trail[0]["record"]["responseElements"]["keyMetadata"]["keyId"] == key_id
    text = (server.data_dir / "audit" / "records.jsonl").read_text()
    assert "audited plaintext" not in text and "CiphertextBlob" not in text and "ciphertextBlob" not in text


def test_an_untouched_trail_verifies(audited):
    server, _ = audited
    rc, report, stderr = verify(server)
    assert rc == 0, stderr
    assert report == {"Intact": True, "Records": 11, "Digests": report["Digests"], "Problems": []}
    assert report["Digests"] >= 3  # every 4 records, and one at shutdown


def rewrite(server, change):
    path = server.data_dir / "audit" / "records.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(change(lines)) + "\n")


@pytest.mark.parametrize("tamper", ["delete", "alter", "reorder", "truncate"])
def test_tampering_is_detected(audited, tamper):
    server, _ = audited
    if tamper == "delete":
        rewrite(server, lambda lines: lines[:4] + lines[5:])
    elif tamper == "alter":
        def alter(lines):
            entry = json.loads(lines[2])
            entry["record"]["sourceIPAddress"] = "10.9.9.9"
            return lines[:2] + [json.dumps(entry, separators=(",", ":"), sort_keys=True)] + lines[3:]
        rewrite(server, alter)
    elif tamper == "reorder":
        rewrite(server, lambda lines: lines[:5] + [lines[6], lines[5]] + lines[7:])
    else:
        rewrite(server, lambda lines: lines[:-3])
    rc, report, _ = verify(server)
    assert rc == 1
    assert report["Intact"] is False and report["Problems"], report


def test_unauthenticated_requests_are_recorded_small(make_server):
    """A request that fails authentication leaves its operation, source, user agent and error only, each bounded:
    an anonymous client cannot write its megabyte of parameters (with an fsync) into the trail."""
    server = make_server()
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{"Sid": "x" * 400_000, "Effect": "Allow"}]})
    body = json.dumps({"Policy": policy, "Description": "d" * 8000, "Tags": [{"TagKey": "k" * 128, "TagValue": "v" * 256}] * 50})
    raw = RawClient(server)
    long_agent = "agent/" + "a" * 4_000
    for signed in (False, True):
        resp = raw("CreateKey", data=body, sign=signed, secret_key=None if not signed else "wrong-secret-0123456789abcdefghijklmno",
                   headers={"User-Agent": long_agent})
        assert resp.status == 400, resp
    resp = raw("TrentService." + "Op" * 5000, data=body, sign=False)
    assert resp.status == 400, resp
    server.stop()
    trail = records(server)
    assert len(trail) == 3
    for line, expected in zip(trail, ["MissingAuthenticationTokenException", "InvalidSignatureException",
                                      "MissingAuthenticationTokenException"]):
        record = line["record"]
        assert record["errorCode"] == expected, record
        assert record.get("requestParameters") is None, record
        assert len(json.dumps(record)) < 4096, len(json.dumps(record))
    assert trail[0]["record"]["userAgent"].startswith("agent/aaa") and len(trail[0]["record"]["userAgent"]) <= 256
    assert trail[1]["record"]["userIdentity"]["accessKeyId"] == server.access_key_id
    assert len(trail[2]["record"]["eventName"]) <= 256
