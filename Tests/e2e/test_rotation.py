"""Key rotation through boto3: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus,
RotateKeyOnDemand and ListKeyRotations, with every earlier ciphertext still decrypting."""

from __future__ import annotations

import datetime as dt

from trent_e2e import expect_error, key_arn


def version_of(blob: bytes) -> int:
    return int.from_bytes(blob[17:21], "big")


def test_rotation_settings(kms, new_key):
    key_id = new_key()
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is False and status["KeyId"] == key_arn(key_id)
    assert "NextRotationDate" not in status

    kms.enable_key_rotation(KeyId=key_id)
    status = kms.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 365
    expected = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=365)
    assert abs((status["NextRotationDate"] - expected).total_seconds()) < 120

    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    assert kms.get_key_rotation_status(KeyId=key_id)["RotationPeriodInDays"] == 90
    for days in (89, 2561):
        with expect_error("ValidationException"):
            kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=days)

    kms.disable_key_rotation(KeyId=key_id)
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False


def test_on_demand_rotation_keeps_old_ciphertexts(kms, new_key):
    key_id = new_key()
    before = kms.encrypt(KeyId=key_id, Plaintext=b"before rotation")["CiphertextBlob"]
    assert kms.rotate_key_on_demand(KeyId=key_id)["KeyId"] == key_arn(key_id)
    after = kms.encrypt(KeyId=key_id, Plaintext=b"after rotation")["CiphertextBlob"]
    assert version_of(after) == version_of(before) + 1
    assert kms.decrypt(CiphertextBlob=before)["Plaintext"] == b"before rotation"
    assert kms.decrypt(CiphertextBlob=after)["Plaintext"] == b"after rotation"
    kms.rotate_key_on_demand(KeyId=key_id)

    rotations = kms.list_key_rotations(KeyId=key_id)["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["ON_DEMAND", "ON_DEMAND"]
    assert all(r["KeyId"] == key_arn(key_id) for r in rotations)
    first = kms.list_key_rotations(KeyId=key_id, Limit=1)
    assert first["Truncated"] is True and len(first["Rotations"]) == 1
    second = kms.list_key_rotations(KeyId=key_id, Limit=1, Marker=first["NextMarker"])
    assert second["Truncated"] is False and second["Rotations"][0]["RotationDate"] >= first["Rotations"][0]["RotationDate"]


def test_rotation_follows_key_states(kms, new_key):
    key_id = new_key()
    kms.disable_key(KeyId=key_id)
    with expect_error("DisabledException"):
        kms.rotate_key_on_demand(KeyId=key_id)
    with expect_error("DisabledException"):
        kms.enable_key_rotation(KeyId=key_id)
    kms.enable_key(KeyId=key_id)
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    with expect_error("KMSInvalidStateException"):
        kms.rotate_key_on_demand(KeyId=key_id)
    with expect_error("NotFoundException"):
        kms.rotate_key_on_demand(KeyId="11111111-2222-3333-4444-555555555555")
