"""GetKeyLastUsage: the last successful cryptographic operation with a key, with the request id and the
CloudTrail event id of the audit record of that request, kept across a restart."""

from __future__ import annotations

import json

from trent_e2e import expect_error, make_kms


def audit_record(server, request_id):
    for line in (server.data_dir / "audit" / "records.jsonl").read_text().splitlines():
        record = json.loads(line)["record"]
        if record["requestID"] == request_id:
            return record
    raise AssertionError(f"no audit record for request {request_id}")


def test_last_usage_follows_successful_cryptographic_operations(make_server):
    server = make_server()
    kms = make_kms(server)
    metadata = kms.create_key()["KeyMetadata"]
    key_id = metadata["KeyId"]

    fresh = kms.get_key_last_usage(KeyId=key_id)
    assert fresh["KeyId"] == key_id and "KeyLastUsage" not in fresh
    assert fresh["TrackingStartDate"] == fresh["KeyCreationDate"] == metadata["CreationDate"]

    blob = kms.encrypt(KeyId=key_id, Plaintext=b"used")["CiphertextBlob"]
    decrypted = kms.decrypt(CiphertextBlob=blob)
    with expect_error("InvalidCiphertextException"):  # a failure is not a use
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"not": "bound"})
    usage = kms.get_key_last_usage(KeyId=key_id)["KeyLastUsage"]
    request_id = decrypted["ResponseMetadata"]["RequestId"]
    assert usage["Operation"] == "Decrypt" and usage["KmsRequestId"] == request_id
    assert usage["CloudTrailEventId"] == audit_record(server, request_id)["eventID"]

    kms.describe_key(KeyId=key_id)  # not a cryptographic operation
    assert kms.get_key_last_usage(KeyId=key_id)["KeyLastUsage"]["Operation"] == "Decrypt"
    kms.generate_data_key_without_plaintext(KeyId=key_id, KeySpec="AES_256")
    assert kms.get_key_last_usage(KeyId=key_id)["KeyLastUsage"]["Operation"] == "GenerateDataKeyWithoutPlaintext"

    server.restart()
    kms = make_kms(server)
    assert kms.get_key_last_usage(KeyId=key_id)["KeyLastUsage"]["Operation"] == "GenerateDataKeyWithoutPlaintext"
    with expect_error("NotFoundException"):
        kms.get_key_last_usage(KeyId="alias/not-accepted")
