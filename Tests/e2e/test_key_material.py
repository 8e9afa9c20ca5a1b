"""The 2025 key-material API, as the botocore model describes it: KeyMetadata CurrentKeyMaterialId; ImportKeyMaterial
with ImportType, KeyMaterialDescription and KeyMaterialId; new imported material staged as PENDING_ROTATION until
RotateKeyOnDemand makes it current; ListKeyRotations with IncludeKeyMaterial and its per-material fields;
DeleteImportedKeyMaterial of one material by KeyMaterialId; the material ids in the audit trail."""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import pytest

from test_import import NO_EXPIRY, external_key, import_material, in_days, material, parameters, state, wrap
from trent_e2e import audit_record_files, expect_error, key_arn, make_kms, utcnow

MATERIAL_ID = re.compile(r"^[a-f0-9]{64}$")


def version_of(blob: bytes) -> int:
    return int.from_bytes(blob[17:21], "big")


def materials(kms, key_id: str, include: str | None = "ALL_KEY_MATERIAL") -> list[dict]:
    kwargs = {"IncludeKeyMaterial": include} if include else {}
    return kms.list_key_rotations(KeyId=key_id, **kwargs)["Rotations"]


def current_material(kms, key_id: str) -> str:
    return kms.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"]


def encrypt_version(kms, key_id: str, plaintext: bytes) -> tuple[bytes, int]:
    blob = kms.encrypt(KeyId=key_id, Plaintext=plaintext)["CiphertextBlob"]
    return blob, version_of(blob)


# --------------------------------------------------------------------------- CurrentKeyMaterialId, AWS_KMS keys

def test_current_key_material_id_follows_rotations(kms, new_key):
    created = kms.create_key()["KeyMetadata"]
    key_id = created["KeyId"]
    first = created["CurrentKeyMaterialId"]
    assert MATERIAL_ID.match(first)
    assert current_material(kms, key_id) == first

    # The first material is listed only with ALL_KEY_MATERIAL, and carries no rotation date or type.
    assert materials(kms, key_id, None) == []
    assert materials(kms, key_id, "ROTATIONS_ONLY") == []
    assert materials(kms, key_id) == [{"KeyId": key_arn(key_id), "KeyMaterialId": first, "KeyMaterialState": "CURRENT"}]

    kms.rotate_key_on_demand(KeyId=key_id)
    second = current_material(kms, key_id)
    assert MATERIAL_ID.match(second) and second != first
    listed = materials(kms, key_id)
    assert [m["KeyMaterialId"] for m in listed] == [first, second]
    assert [m["KeyMaterialState"] for m in listed] == ["NON_CURRENT", "CURRENT"]
    assert "RotationDate" not in listed[0] and listed[1]["RotationType"] == "ON_DEMAND" and "RotationDate" in listed[1]
    # Keys of AWS_KMS origin show none of the imported-material fields.
    assert all(not {"ImportState", "ExpirationModel", "ValidTo", "KeyMaterialDescription"} & set(m) for m in listed)
    rotations = materials(kms, key_id, None)
    assert [m["KeyMaterialId"] for m in rotations] == [second]

    with expect_error("ValidationException", "unknown IncludeKeyMaterial"):
        kms.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="EVERYTHING")


def test_current_key_material_id_only_for_symmetric_encryption_keys(kms, new_key):
    for kwargs in ({"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"}, {"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}):
        assert "CurrentKeyMaterialId" not in kms.create_key(**kwargs)["KeyMetadata"], kwargs
    pending = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    assert "CurrentKeyMaterialId" not in pending, "no material yet"


# --------------------------------------------------------------------------- ImportKeyMaterial

def test_first_import_returns_the_current_key_material_id(kms):
    key_id = external_key(kms)
    assert materials(kms, key_id) == []
    secret = material()
    out = import_material(kms, key_id, secret, KeyMaterialDescription="first material", **NO_EXPIRY)
    assert out["KeyId"] == key_arn(key_id) and MATERIAL_ID.match(out["KeyMaterialId"])
    assert current_material(kms, key_id) == out["KeyMaterialId"]
    assert materials(kms, key_id) == [{
        "KeyId": key_arn(key_id), "KeyMaterialId": out["KeyMaterialId"], "KeyMaterialDescription": "first material",
        "ImportState": "IMPORTED", "KeyMaterialState": "CURRENT", "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE",
    }]

    # Re-import (EXISTING_KEY_MATERIAL, the default now): the same id; the description stays unless given.
    valid_to = in_days(20)
    again = import_material(kms, key_id, secret, ValidTo=valid_to)
    assert again["KeyMaterialId"] == out["KeyMaterialId"]
    [entry] = materials(kms, key_id)
    assert entry["KeyMaterialDescription"] == "first material" and entry["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs((entry["ValidTo"] - valid_to).total_seconds()) < 1
    named = import_material(kms, key_id, secret, ImportType="EXISTING_KEY_MATERIAL", KeyMaterialId=out["KeyMaterialId"],
                            KeyMaterialDescription="renamed", **NO_EXPIRY)
    assert named["KeyMaterialId"] == out["KeyMaterialId"]
    assert materials(kms, key_id)[0]["KeyMaterialDescription"] == "renamed"


def test_import_type_and_key_material_id_refusals(kms):
    key_id = external_key(kms)
    secret = material()
    params = parameters(kms, key_id)

    def call(key=key_id, **kwargs):
        return kms.import_key_material(
            KeyId=key, ImportToken=params["ImportToken"], EncryptedKeyMaterial=wrap(secret, params["PublicKey"], "RSAES_OAEP_SHA_256"),
            **NO_EXPIRY, **kwargs)

    with expect_error("ValidationException", "EXISTING_KEY_MATERIAL into a key that never had material"):
        call(ImportType="EXISTING_KEY_MATERIAL")
    with expect_error("ValidationException", "KeyMaterialId with NEW_KEY_MATERIAL"):
        call(ImportType="NEW_KEY_MATERIAL", KeyMaterialId="a" * 64)
    for bad in ("A" * 64, "a" * 63, "g" * 64):
        with expect_error("ValidationException", f"KeyMaterialId {bad!r}"):
            call(KeyMaterialId=bad)
    for bad in ("", "no*stars", "x" * 257):
        with expect_error("ValidationException", f"KeyMaterialDescription {bad!r}"):
            call(KeyMaterialDescription=bad)
    assert state(kms, key_id) == "PendingImport"

    first = call(ImportType="NEW_KEY_MATERIAL")["KeyMaterialId"]
    with expect_error("NotFoundException", "EXISTING_KEY_MATERIAL naming another id"):
        call(ImportType="EXISTING_KEY_MATERIAL", KeyMaterialId="0" * 64)
    with expect_error("IncorrectKeyMaterialException", "other material under the key's material id"):
        import_material(kms, key_id, material(), KeyMaterialId=first, **NO_EXPIRY)

    # ImportType, KeyMaterialDescription and KeyMaterialId are for symmetric encryption keys only.
    hmac_key = external_key(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    for extra in ({"ImportType": "NEW_KEY_MATERIAL"}, {"KeyMaterialDescription": "mac"}, {"KeyMaterialId": first}):
        with expect_error("ValidationException", f"HMAC key with {extra}"):
            import_material(kms, hmac_key, material(32), **NO_EXPIRY, **extra)
    import_material(kms, hmac_key, material(32))
    assert "CurrentKeyMaterialId" not in kms.describe_key(KeyId=hmac_key)["KeyMetadata"]


# --------------------------------------------------------------------------- NEW_KEY_MATERIAL and RotateKeyOnDemand

def test_new_material_is_staged_until_rotate_key_on_demand(kms):
    key_id = external_key(kms)
    first_secret, second_secret = material(), material()
    first = import_material(kms, key_id, first_secret)["KeyMaterialId"]
    before, first_version = encrypt_version(kms, key_id, b"under the first material")

    # RotateKeyOnDemand with nothing staged.
    with expect_error("UnsupportedOperationException", "RotateKeyOnDemand without staged material"):
        kms.rotate_key_on_demand(KeyId=key_id)

    valid_to = in_days(40)
    staged = import_material(kms, key_id, second_secret, ImportType="NEW_KEY_MATERIAL", KeyMaterialDescription="second",
                             ValidTo=valid_to)
    second = staged["KeyMaterialId"]
    assert MATERIAL_ID.match(second) and second != first
    assert state(kms, key_id) == "Enabled" and current_material(kms, key_id) == first
    listed = materials(kms, key_id)
    assert [m["KeyMaterialState"] for m in listed] == ["CURRENT", "PENDING_ROTATION"]
    assert listed[1]["KeyMaterialId"] == second and listed[1]["ImportState"] == "IMPORTED"
    assert listed[1]["KeyMaterialDescription"] == "second" and listed[1]["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert "RotationDate" not in listed[1] and "RotationType" not in listed[1]
    assert materials(kms, key_id, None) == [], "a staged material is not a rotation"
    assert encrypt_version(kms, key_id, b"still the first")[1] == first_version, "staged material is not used"
    described = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert described["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE" and "ValidTo" not in described

    with expect_error("KMSInvalidStateException", "a second NEW_KEY_MATERIAL while one is staged"):
        import_material(kms, key_id, material(), ImportType="NEW_KEY_MATERIAL", **NO_EXPIRY)

    assert kms.rotate_key_on_demand(KeyId=key_id)["KeyId"] == key_arn(key_id)
    assert current_material(kms, key_id) == second
    after, second_version = encrypt_version(kms, key_id, b"under the second material")
    assert second_version == first_version + 1
    assert kms.decrypt(CiphertextBlob=before)["Plaintext"] == b"under the first material"
    assert kms.decrypt(CiphertextBlob=after)["Plaintext"] == b"under the second material"
    listed = materials(kms, key_id)
    assert [(m["KeyMaterialId"], m["KeyMaterialState"]) for m in listed] == [(first, "NON_CURRENT"), (second, "CURRENT")]
    assert listed[1]["RotationType"] == "ON_DEMAND" and "RotationDate" in listed[1]
    assert [m["KeyMaterialId"] for m in materials(kms, key_id, None)] == [second]
    # The key takes its current material's expiry.
    described = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert described["ExpirationModel"] == "KEY_MATERIAL_EXPIRES" and abs((described["ValidTo"] - valid_to).total_seconds()) < 1

    with expect_error("UnsupportedOperationException", "EnableKeyRotation stays refused for imported material"):
        kms.enable_key_rotation(KeyId=key_id)


def test_new_material_only_into_symmetric_enabled_keys(kms):
    hmac_key = external_key(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    import_material(kms, hmac_key, material(32))
    with expect_error("IncorrectKeyMaterialException", "HMAC key: other material is not new material"):
        import_material(kms, hmac_key, material(32))
    with expect_error("UnsupportedOperationException", "ListKeyRotations of an HMAC key"):
        kms.list_key_rotations(KeyId=hmac_key, IncludeKeyMaterial="ALL_KEY_MATERIAL")

    key_id = external_key(kms)
    import_material(kms, key_id, material())
    kms.disable_key(KeyId=key_id)
    with expect_error("KMSInvalidStateException", "NEW_KEY_MATERIAL into a disabled key"):
        import_material(kms, key_id, material(), ImportType="NEW_KEY_MATERIAL", **NO_EXPIRY)
    kms.enable_key(KeyId=key_id)
    import_material(kms, key_id, material(), ImportType="NEW_KEY_MATERIAL", **NO_EXPIRY)
    kms.disable_key(KeyId=key_id)
    with expect_error("DisabledException", "RotateKeyOnDemand of a disabled key"):
        kms.rotate_key_on_demand(KeyId=key_id)


# --------------------------------------------------------------------------- DeleteImportedKeyMaterial by id

def test_delete_imported_key_material_by_id(kms):
    key_id = external_key(kms)
    first_secret, second_secret, third_secret = material(), material(), material()
    first = import_material(kms, key_id, first_secret)["KeyMaterialId"]
    old_blob, _ = encrypt_version(kms, key_id, b"first")

    # Staged material deleted: it goes, the key stays Enabled, and other material may take its place.
    second = import_material(kms, key_id, second_secret, ImportType="NEW_KEY_MATERIAL", **NO_EXPIRY)["KeyMaterialId"]
    deleted = kms.delete_imported_key_material(KeyId=key_id, KeyMaterialId=second)
    assert deleted["KeyId"] == key_arn(key_id) and deleted["KeyMaterialId"] == second
    assert state(kms, key_id) == "Enabled"
    assert [m["KeyMaterialId"] for m in materials(kms, key_id)] == [first]
    third = import_material(kms, key_id, third_secret, ImportType="NEW_KEY_MATERIAL", **NO_EXPIRY)["KeyMaterialId"]
    assert third not in (first, second)
    kms.rotate_key_on_demand(KeyId=key_id)
    new_blob, _ = encrypt_version(kms, key_id, b"third")

    # A non-current material deleted: the key is PendingImport until that material returns.
    deleted = kms.delete_imported_key_material(KeyId=key_id, KeyMaterialId=first)
    assert deleted["KeyMaterialId"] == first
    assert state(kms, key_id) == "PendingImport"
    listed = materials(kms, key_id)
    assert [(m["KeyMaterialId"], m["ImportState"]) for m in listed] == [(first, "PENDING_IMPORT"), (third, "IMPORTED")]
    assert "ExpirationModel" not in listed[0]
    with expect_error("KMSInvalidStateException", "Decrypt while a material is missing"):
        kms.decrypt(CiphertextBlob=new_blob)
    with expect_error("IncorrectKeyMaterialException", "the third material under the first's id"):
        import_material(kms, key_id, third_secret, KeyMaterialId=first, **NO_EXPIRY)
    restored = import_material(kms, key_id, first_secret, KeyMaterialId=first, **NO_EXPIRY)
    assert restored["KeyMaterialId"] == first
    assert state(kms, key_id) == "Enabled"
    assert kms.decrypt(CiphertextBlob=old_blob)["Plaintext"] == b"first"
    assert kms.decrypt(CiphertextBlob=new_blob)["Plaintext"] == b"third"

    # Without KeyMaterialId: the current material; the response names it.
    assert kms.delete_imported_key_material(KeyId=key_id)["KeyMaterialId"] == third
    assert state(kms, key_id) == "PendingImport"
    # EXISTING_KEY_MATERIAL without an id restores the missing one.
    assert import_material(kms, key_id, third_secret)["KeyMaterialId"] == third
    assert state(kms, key_id) == "Enabled"

    with expect_error("NotFoundException", "a material id the key does not have"):
        kms.delete_imported_key_material(KeyId=key_id, KeyMaterialId="0" * 64)
    with expect_error("ValidationException", "a malformed material id"):
        kms.delete_imported_key_material(KeyId=key_id, KeyMaterialId="XYZ")


def test_material_state_survives_restart(make_server):
    server = make_server()
    kms = make_kms(server)
    key_id = external_key(kms)
    first = import_material(kms, key_id, material(), KeyMaterialDescription="kept", **NO_EXPIRY)["KeyMaterialId"]
    second = import_material(kms, key_id, material(), ImportType="NEW_KEY_MATERIAL", **NO_EXPIRY)["KeyMaterialId"]
    aws_key = kms.create_key()["KeyMetadata"]
    before = materials(kms, key_id)
    server.restart()
    kms = make_kms(server)
    assert materials(kms, key_id) == before
    assert [m["KeyMaterialId"] for m in before] == [first, second]
    assert current_material(kms, aws_key["KeyId"]) == aws_key["CurrentKeyMaterialId"]
    kms.rotate_key_on_demand(KeyId=key_id)
    assert current_material(kms, key_id) == second


def test_staged_material_expires_at_its_valid_to(make_server):
    """Each material has its own expiry: staged material whose ValidTo passes is deleted (it goes; the key stays
    Enabled on its current material)."""
    server = make_server(start=False)
    server.env["TRENT_DELETION_SWEEP_SECONDS"] = "1"  # KeyMaintenance: deletion, rotation and material expiry
    server.start()
    kms = make_kms(server)
    key_id = external_key(kms)
    first = import_material(kms, key_id, material())["KeyMaterialId"]
    params = parameters(kms, key_id)  # before ValidTo is set: RSA key generation takes a moment
    kms.import_key_material(
        KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=wrap(material(), params["PublicKey"], "RSAES_OAEP_SHA_256"),
        ImportType="NEW_KEY_MATERIAL", ValidTo=utcnow() + dt.timedelta(seconds=3))
    assert len(materials(kms, key_id)) == 2
    deadline = time.monotonic() + 30
    while len(materials(kms, key_id)) != 1:
        assert time.monotonic() < deadline, "staged material did not expire within 30 s of its ValidTo"
        time.sleep(0.5)
    assert [m["KeyMaterialId"] for m in materials(kms, key_id)] == [first]
    assert state(kms, key_id) == "Enabled"
    with expect_error("UnsupportedOperationException", "nothing staged any more"):
        kms.rotate_key_on_demand(KeyId=key_id)


# --------------------------------------------------------------------------- the audit trail

def test_key_material_ids_in_the_audit_trail(make_server):
    server = make_server()
    kms = make_kms(server)
    key_id = external_key(kms)
    first = import_material(kms, key_id, material(), ImportType="NEW_KEY_MATERIAL", KeyMaterialDescription="audited",
                            **NO_EXPIRY)["KeyMaterialId"]
    second = import_material(kms, key_id, material(), ImportType="NEW_KEY_MATERIAL", **NO_EXPIRY)["KeyMaterialId"]
    kms.delete_imported_key_material(KeyId=key_id, KeyMaterialId=second)
    kms.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")
    created = kms.create_key()["KeyMetadata"]
    server.stop()
    trail = [json.loads(line)["record"] for path in audit_record_files(server.data_dir / "audit") for line in path.read_text().splitlines()]
    imports = [r for r in trail if r["eventName"] == "ImportKeyMaterial"]
    assert [r["responseElements"] for r in imports] == [{"keyId": key_arn(key_id), "keyMaterialId": m} for m in (first, second)]
    assert imports[0]["requestParameters"]["importType"] == "NEW_KEY_MATERIAL"
    assert imports[0]["requestParameters"]["keyMaterialDescription"] == "audited"
    [delete] = [r for r in trail if r["eventName"] == "DeleteImportedKeyMaterial"]
    assert delete["requestParameters"]["keyMaterialId"] == second
    assert delete["responseElements"] == {"keyId": key_arn(key_id), "keyMaterialId": second}
    [listing] = [r for r in trail if r["eventName"] == "ListKeyRotations"]
    assert listing["requestParameters"]["includeKeyMaterial"] == "ALL_KEY_MATERIAL"
    [create] = [r for r in trail if r["eventName"] == "CreateKey" and r["responseElements"]["keyMetadata"]["keyId"] == created["KeyId"]]
    assert create["responseElements"]["keyMetadata"]["currentKeyMaterialId"] == created["CurrentKeyMaterialId"]
