"""`log.format: json`: one JSON object per line, request lines carrying their fields, and never a secret."""

from __future__ import annotations

import base64
import json
import os
import re

from botocore.exceptions import ClientError

from trent_e2e import ACCOUNT_ID, SECRET_ACCESS_KEY, RawClient, TrentServer, make_kms, remember_plaintext, user_arn

TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ADMIN = user_arn(ACCOUNT_ID, "trent-admin")


def test_json_logs_are_one_object_per_line_with_the_request_fields_and_no_secret(tmp_path_factory):
    server = TrentServer(tmp_path_factory.mktemp("json-logs"))
    server.env.update(TRENT_LOG_FORMAT="json", TRENT_LOG_LEVEL="debug")
    server.start()
    try:
        kms = make_kms(server, retries={"total_max_attempts": 1})
        plaintext = b"TRENT-JSON-LOG-PLAINTEXT-" + os.urandom(12).hex().encode()
        remember_plaintext(plaintext)
        created = kms.create_key(Description="json log\nwith a newline and a \"quote\"")
        key_id = created["KeyMetadata"]["KeyId"]
        encrypted = kms.encrypt(KeyId=key_id, Plaintext=plaintext, EncryptionContext={"log": "json"})
        decrypted = kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"], EncryptionContext={"log": "json"})
        assert decrypted["Plaintext"] == plaintext
        data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
        secrets = [plaintext, data_key["Plaintext"]]
        successes = {
            created["ResponseMetadata"]["RequestId"]: "CreateKey",
            encrypted["ResponseMetadata"]["RequestId"]: "Encrypt",
            decrypted["ResponseMetadata"]["RequestId"]: "Decrypt",
            data_key["ResponseMetadata"]["RequestId"]: "GenerateDataKey",
        }
        try:
            kms.describe_key(KeyId="alias/json-log-missing\nline two")
            raise AssertionError("DescribeKey of a missing alias succeeded")
        except ClientError as error:
            assert error.response["Error"]["Code"] == "NotFoundException"
            failed_id = error.response["ResponseMetadata"]["RequestId"]
        # Unauthenticated: a wrong secret. No principal is known, so none is logged.
        status, headers, body = RawClient(server)("ListKeys", {}, secret_key="wrong")
        assert status == 400 and body["__type"] == "InvalidSignatureException", body
        unauthenticated_id = headers["x-amzn-RequestId"]
    finally:
        server.stop()

    raw = server.log_bytes()
    lines = raw.decode().splitlines()
    assert lines, "the server logged nothing"
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line of stdout and stderr is one JSON object
        assert isinstance(entry, dict), line
        assert TIME.match(entry["time"]), entry
        assert entry["level"] in {"trace", "debug", "info", "notice", "warning", "error", "critical"}, entry
        assert isinstance(entry["message"], str) and entry["message"], entry
        entries.append(entry)
    assert any(e["message"] == "Trent is serving the AWS KMS API" and e.get("endpoint") == server.endpoint for e in entries)

    by_request = {e["kms.request.id"]: e for e in entries if "kms.request.id" in e}
    for request_id, operation in successes.items():
        entry = by_request[request_id]
        assert (entry["level"], entry["message"], entry["kms.operation"], entry["kms.principal"]) == (
            "debug", "request succeeded", operation, ADMIN), entry
        assert "kms.error" not in entry
    failure = by_request[failed_id]
    assert (failure["level"], failure["message"], failure["kms.operation"], failure["kms.principal"], failure["kms.error"]) == (
        "info", "request failed", "DescribeKey", ADMIN, "NotFoundException"), failure
    unauthenticated = by_request[unauthenticated_id]
    assert (unauthenticated["kms.operation"], unauthenticated["kms.error"]) == ("ListKeys", "InvalidSignatureException")
    assert "kms.principal" not in unauthenticated

    leaks = []
    pins = [p.read_bytes().strip() for name in ("user-pin", "so-pin") for p in server.data_dir.rglob(name)]
    assert pins, "the embedded token's PIN files were not found"
    for name, value in [("secret access key", SECRET_ACCESS_KEY.encode()), *[("PIN", pin) for pin in pins if len(pin) >= 6]]:
        if value in raw:
            leaks.append(name)
    for value in secrets:
        for form in (value, base64.b64encode(value), base64.b64encode(value).rstrip(b"="), value.hex().encode()):
            if form in raw:
                leaks.append(f"plaintext {value[:12]!r}")
    assert not leaks, f"secrets in the JSON log: {leaks}"
