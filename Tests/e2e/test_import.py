"""Imported key material (Origin EXTERNAL): GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial.

Material is wrapped here as AWS tells its users to wrap it ("Importing key material", step 3):
- RSAES_OAEP_SHA_1 / RSAES_OAEP_SHA_256: RSA-OAEP (MGF1 with the same hash) of the material under PublicKey;
- RSA_AES_KEY_WRAP_SHA_1 / _SHA_256: a fresh AES-256 key, RSA-OAEP-encrypted under PublicKey, followed by the
  material wrapped under that AES key with AES Key Wrap with Padding (RFC 5649).
Both with `cryptography`, and once each with the openssl binary (`openssl pkeyutl`, `openssl enc -id-aes256-wrap-pad`),
once through the AWS CLI. HMAC keys are the one place a result can be checked outside Trent: after importing
material, GenerateMac must equal Python's hmac with that material.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import subprocess
import time

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from trent_e2e import TOKEN, expect_error, flip_bit, key_arn, make_kms, remember_plaintext, token_has_key_pair_spec, utcnow

ALGORITHMS = ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_1", "RSA_AES_KEY_WRAP_SHA_256"]
RSA_BITS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
NO_EXPIRY = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}
HMAC_SPECS = {
    # KeySpec: (hash, importable lengths as AWS sizes them, a length inside)
    "HMAC_224": (hashlib.sha224, (28, 64), 40),
    "HMAC_256": (hashlib.sha256, (32, 64), 48),
    "HMAC_384": (hashlib.sha384, (48, 128), 100),
    "HMAC_512": (hashlib.sha512, (64, 128), 128),
}


# --------------------------------------------------------------------------- helpers

def material(length: int = 32) -> bytes:
    value = os.urandom(length)
    remember_plaintext(value)
    return value


def oaep(algorithm: str) -> padding.OAEP:
    digest = hashes.SHA1() if algorithm.endswith("SHA_1") else hashes.SHA256()
    return padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)


def wrap(key_material: bytes, public_key_der: bytes, algorithm: str) -> bytes:
    public_key = serialization.load_der_public_key(public_key_der)
    if algorithm.startswith("RSAES_OAEP"):
        return public_key.encrypt(key_material, oaep(algorithm))
    ephemeral = os.urandom(32)
    return public_key.encrypt(ephemeral, oaep(algorithm)) + keywrap.aes_key_wrap_with_padding(ephemeral, key_material)


def parameters(kms, key_id: str, algorithm: str = "RSAES_OAEP_SHA_256", spec: str = "RSA_2048") -> dict:
    params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec=spec)
    remember_plaintext(params["ImportToken"])
    return params


def import_material(kms, key_id: str, key_material: bytes, algorithm: str = "RSAES_OAEP_SHA_256",
                    spec: str = "RSA_2048", **kwargs) -> dict:
    params = parameters(kms, key_id, algorithm, spec)
    if not kwargs:
        kwargs = dict(NO_EXPIRY)
    return kms.import_key_material(
        KeyId=key_id, ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(key_material, params["PublicKey"], algorithm), **kwargs)


def external_key(kms, **kwargs) -> str:
    return kms.create_key(Origin="EXTERNAL", **kwargs)["KeyMetadata"]["KeyId"]


def state(kms, key_id: str) -> str:
    return kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]


def round_trip(kms, key_id: str) -> bytes:
    plaintext = b"under imported material " + os.urandom(8).hex().encode()
    out = kms.encrypt(KeyId=key_id, Plaintext=plaintext, EncryptionContext={"imported": "yes"})
    assert out["KeyId"] == key_arn(key_id)
    dec = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"imported": "yes"})
    assert dec["Plaintext"] == plaintext and dec["KeyId"] == key_arn(key_id)
    return out["CiphertextBlob"]


def in_days(days: float) -> dt.datetime:
    return utcnow() + dt.timedelta(days=days)


# --------------------------------------------------------------------------- CreateKey Origin=EXTERNAL

def test_external_key_waits_for_material(kms):
    md = kms.create_key(Origin="EXTERNAL", Description="imported")["KeyMetadata"]
    key_id = md["KeyId"]
    assert md["KeyState"] == "PendingImport" and md["Origin"] == "EXTERNAL" and md["Enabled"] is False
    assert md["KeySpec"] == "SYMMETRIC_DEFAULT" and md["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert "ExpirationModel" not in md and "ValidTo" not in md
    described = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert described["KeyState"] == "PendingImport" and described["Origin"] == "EXTERNAL"

    with expect_error("KMSInvalidStateException", "Encrypt on PendingImport"):
        kms.encrypt(KeyId=key_id, Plaintext=b"no material yet")
    with expect_error("KMSInvalidStateException", "GenerateDataKey on PendingImport"):
        kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    with expect_error("KMSInvalidStateException", "EnableKey on PendingImport"):
        kms.enable_key(KeyId=key_id)
    with expect_error("KMSInvalidStateException", "DisableKey on PendingImport"):
        kms.disable_key(KeyId=key_id)

    hmac_key = kms.create_key(Origin="EXTERNAL", KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    assert hmac_key["KeyState"] == "PendingImport" and hmac_key["Origin"] == "EXTERNAL"
    with expect_error("KMSInvalidStateException", "GenerateMac on PendingImport"):
        kms.generate_mac(KeyId=hmac_key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256")

    # RSA and ECC keys wait for a private key to import (section "RSA and ECC private keys").
    for spec, usage in (("RSA_2048", "ENCRYPT_DECRYPT"), ("ECC_NIST_P256", "SIGN_VERIFY")):
        pair = kms.create_key(Origin="EXTERNAL", KeySpec=spec, KeyUsage=usage)["KeyMetadata"]
        assert pair["KeyState"] == "PendingImport" and pair["KeySpec"] == spec and "CurrentKeyMaterialId" not in pair
        with expect_error("KMSInvalidStateException", f"Sign or Encrypt with a PendingImport {spec} key"):
            if usage == "SIGN_VERIFY":
                kms.sign(KeyId=pair["KeyId"], Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
            else:
                kms.encrypt(KeyId=pair["KeyId"], Plaintext=b"m", EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    with expect_error("ValidationException", "junk Origin"):
        kms.create_key(Origin="SOMEWHERE")


# --------------------------------------------------------------------------- GetParametersForImport

@pytest.mark.parametrize("algorithm,spec", [
    ("RSAES_OAEP_SHA_1", "RSA_2048"),
    ("RSAES_OAEP_SHA_256", "RSA_3072"),
    ("RSA_AES_KEY_WRAP_SHA_1", "RSA_4096"),
    ("RSA_AES_KEY_WRAP_SHA_256", "RSA_2048"),
])
def test_import_with_each_algorithm_and_wrapping_key_spec(kms, algorithm, spec):
    key_id = external_key(kms)
    params = parameters(kms, key_id, algorithm, spec)
    assert params["KeyId"] == key_arn(key_id)
    public_key = serialization.load_der_public_key(params["PublicKey"])
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == RSA_BITS[spec] and public_key.public_numbers().e == 65537
    assert public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == params["PublicKey"]
    assert len(params["ImportToken"]) > 0 and len(params["ImportToken"]) <= 6144
    expected = utcnow() + dt.timedelta(hours=24)
    assert abs((params["ParametersValidTo"] - expected).total_seconds()) < 120, params["ParametersValidTo"]

    out = kms.import_key_material(
        KeyId=key_id, ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(material(), params["PublicKey"], algorithm), **NO_EXPIRY)
    assert out["KeyId"] == key_arn(key_id)
    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert md["KeyState"] == "Enabled" and md["Enabled"] is True and md["Origin"] == "EXTERNAL"
    assert md["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE" and "ValidTo" not in md
    round_trip(kms, key_id)


def test_each_call_returns_a_new_wrapping_key(kms):
    key_id = external_key(kms)
    first = parameters(kms, key_id)
    second = parameters(kms, key_id)
    assert first["PublicKey"] != second["PublicKey"]
    assert first["ImportToken"] != second["ImportToken"]
    # Either token works until it expires; the older one too.
    kms.import_key_material(
        KeyId=key_id, ImportToken=first["ImportToken"],
        EncryptedKeyMaterial=wrap(material(), first["PublicKey"], "RSAES_OAEP_SHA_256"), **NO_EXPIRY)
    assert state(kms, key_id) == "Enabled"


def test_get_parameters_for_import_refusals(kms, new_key, new_alias):
    key_id = external_key(kms)

    def call(key=key_id, algorithm="RSAES_OAEP_SHA_256", spec="RSA_2048"):
        return kms.get_parameters_for_import(KeyId=key, WrappingAlgorithm=algorithm, WrappingKeySpec=spec)

    for algorithm in ("RSAES_PKCS1_V1_5", "SM2PKE", "RSAES_OAEP_SHA_512", "", "rsaes_oaep_sha_256"):
        with expect_error("ValidationException", f"WrappingAlgorithm {algorithm!r}"):
            call(algorithm=algorithm)
    for spec in ("SM2", "RSA_1024", "ECC_NIST_P256", "rsa_2048", ""):
        with expect_error("ValidationException", f"WrappingKeySpec {spec!r}"):
            call(spec=spec)
    with expect_error("ValidationException", "no WrappingAlgorithm"):
        kms.get_parameters_for_import(KeyId=key_id, WrappingKeySpec="RSA_2048")
    with expect_error("ValidationException", "no WrappingKeySpec"):
        kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256")

    with expect_error("UnsupportedOperationException", "AWS_KMS key"):
        call(key=new_key())
    with expect_error("NotFoundException", "unknown key"):
        call(key="11111111-2222-3333-4444-555555555555")
    # AWS takes a key ID or key ARN here, not an alias.
    alias = new_alias(key_id)
    with expect_error("NotFoundException", "alias name"):
        call(key=alias)
    assert call(key=key_arn(key_id))["KeyId"] == key_arn(key_id)

    doomed = external_key(kms)
    kms.schedule_key_deletion(KeyId=doomed, PendingWindowInDays=7)
    assert state(kms, doomed) == "PendingDeletion"
    with expect_error("KMSInvalidStateException", "PendingDeletion"):
        call(key=doomed)


# --------------------------------------------------------------------------- ImportKeyMaterial

def test_import_with_expiry_and_use(kms):
    key_id = external_key(kms)
    valid_to = (utcnow() + dt.timedelta(days=30)).replace(microsecond=0)
    # ExpirationModel defaults to KEY_MATERIAL_EXPIRES.
    import_material(kms, key_id, material(), ValidTo=valid_to)
    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert md["KeyState"] == "Enabled" and md["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs((md["ValidTo"] - valid_to).total_seconds()) < 2, md["ValidTo"]

    blob = round_trip(kms, key_id)
    data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert len(data_key["Plaintext"]) == 32
    assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]
    assert len(kms.generate_data_key_without_plaintext(KeyId=key_id, NumberOfBytes=16)["CiphertextBlob"]) > 16
    reencrypted = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"imported": "yes"}, DestinationKeyId=key_id)
    assert reencrypted["KeyId"] == key_arn(key_id)

    # An imported key with material disables and enables like any other.
    kms.disable_key(KeyId=key_id)
    with expect_error("DisabledException"):
        kms.encrypt(KeyId=key_id, Plaintext=b"disabled")
    kms.enable_key(KeyId=key_id)
    round_trip(kms, key_id)

    # Latest allowed ValidTo, and explicit KEY_MATERIAL_EXPIRES.
    far = external_key(kms)
    import_material(kms, far, material(), ValidTo=in_days(364), ExpirationModel="KEY_MATERIAL_EXPIRES")
    assert kms.describe_key(KeyId=far)["KeyMetadata"]["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"


def test_symmetric_material_must_be_32_bytes(kms):
    key_id = external_key(kms)
    for algorithm in ("RSAES_OAEP_SHA_1", "RSA_AES_KEY_WRAP_SHA_256"):
        params = parameters(kms, key_id, algorithm)  # a token serves any number of attempts until it expires
        for length in (16, 24):  # other lengths: test_material_of_a_wrong_length_is_incorrect_key_material
            with expect_error("IncorrectKeyMaterialException", f"{length} bytes with {algorithm}"):
                kms.import_key_material(
                    KeyId=key_id, ImportToken=params["ImportToken"],
                    EncryptedKeyMaterial=wrap(material(length), params["PublicKey"], algorithm), **NO_EXPIRY)
    assert state(kms, key_id) == "PendingImport"
    import_material(kms, key_id, material(32), "RSA_AES_KEY_WRAP_SHA_1")
    round_trip(kms, key_id)


@pytest.mark.parametrize("key_spec", ["SYMMETRIC_DEFAULT", "HMAC_224", "HMAC_256", "HMAC_384", "HMAC_512"])
def test_material_of_a_wrong_length_is_incorrect_key_material(kms, key_spec):
    """1 byte, 7 or 1 bytes under the spec's minimum, 1 byte over its maximum: IncorrectKeyMaterialException with
    every wrapping algorithm, not the token's refusal of the odd-sized key later on (KMSInternalException)."""
    minimum, maximum = (32, 32) if key_spec == "SYMMETRIC_DEFAULT" else HMAC_SPECS[key_spec][1]
    kwargs = {} if key_spec == "SYMMETRIC_DEFAULT" else {"KeySpec": key_spec, "KeyUsage": "GENERATE_VERIFY_MAC"}
    key_id = external_key(kms, **kwargs)
    failures = []
    lengths = [1, minimum - 7, minimum - 1, maximum + 1] + ([48, 64] if key_spec == "SYMMETRIC_DEFAULT" else [])
    # OAEP in the token (SHA-1 in SoftHSM), OAEP on the host (SHA-256 in SoftHSM), AES key wrap in the token
    for algorithm in ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_256"):
        params = parameters(kms, key_id, algorithm)
        for length in lengths:
            try:
                kms.import_key_material(
                    KeyId=key_id, ImportToken=params["ImportToken"],
                    EncryptedKeyMaterial=wrap(material(length), params["PublicKey"], algorithm), **NO_EXPIRY)
                failures.append(f"{length} bytes with {algorithm}: imported")
            except ClientError as error:
                code = error.response["Error"]["Code"]
                if code != "IncorrectKeyMaterialException":
                    failures.append(f"{length} bytes with {algorithm}: {code}")
    assert state(kms, key_id) == "PendingImport"
    assert not failures, f"{key_spec} ({minimum} to {maximum} bytes), expected IncorrectKeyMaterialException:\n" + "\n".join(failures)


@pytest.mark.parametrize("key_spec", list(HMAC_SPECS))
def test_hmac_import_matches_python_hmac(kms, key_spec):
    digest, (shortest, longest), length = HMAC_SPECS[key_spec]
    mac_algorithm = key_spec.replace("HMAC_", "HMAC_SHA_")
    key_id = external_key(kms, KeySpec=key_spec, KeyUsage="GENERATE_VERIFY_MAC")
    for wrong in (shortest - 8, longest + 8):  # closer misses: test_material_of_a_wrong_length_...
        with expect_error("IncorrectKeyMaterialException", f"{key_spec} with {wrong} bytes"):
            import_material(kms, key_id, material(wrong), "RSA_AES_KEY_WRAP_SHA_256")
    secret = material(length)
    import_material(kms, key_id, secret, "RSA_AES_KEY_WRAP_SHA_256")
    assert state(kms, key_id) == "Enabled"

    message = b"a MAC that can be checked outside the KMS " + os.urandom(8)
    out = kms.generate_mac(KeyId=key_id, Message=message, MacAlgorithm=mac_algorithm)
    assert out["KeyId"] == key_arn(key_id) and out["MacAlgorithm"] == mac_algorithm
    assert out["Mac"] == hmac.new(secret, message, digest).digest()
    verified = kms.verify_mac(KeyId=key_id, Message=message, MacAlgorithm=mac_algorithm, Mac=out["Mac"])
    assert verified["MacValid"] is True
    with expect_error("KMSInvalidMacException"):
        kms.verify_mac(KeyId=key_id, Message=message + b"!", MacAlgorithm=mac_algorithm, Mac=out["Mac"])


@pytest.mark.parametrize("length", [32, 64])
def test_hmac_256_accepts_both_ends_of_its_range(kms, length):
    key_id = external_key(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    secret = material(length)
    import_material(kms, key_id, secret, "RSAES_OAEP_SHA_1")
    message = b"edge of the range"
    assert kms.generate_mac(KeyId=key_id, Message=message, MacAlgorithm="HMAC_SHA_256")["Mac"] == \
        hmac.new(secret, message, hashlib.sha256).digest()


def test_import_key_material_refusals(kms, new_key):
    key_id = external_key(kms)
    other = external_key(kms)
    params = parameters(kms, key_id)
    token, public = params["ImportToken"], params["PublicKey"]
    secret = material()
    good = wrap(secret, public, "RSAES_OAEP_SHA_256")

    def call(key=key_id, import_token=token, encrypted=good, **kwargs):
        if not kwargs:
            kwargs = dict(NO_EXPIRY)
        return kms.import_key_material(KeyId=key, ImportToken=import_token, EncryptedKeyMaterial=encrypted, **kwargs)

    # expiration model and ValidTo
    with expect_error("ValidationException", "EXPIRES (default) without ValidTo"):
        kms.import_key_material(KeyId=key_id, ImportToken=token, EncryptedKeyMaterial=good)
    with expect_error("ValidationException", "EXPIRES without ValidTo"):
        call(ExpirationModel="KEY_MATERIAL_EXPIRES")
    with expect_error("ValidationException", "DOES_NOT_EXPIRE with ValidTo"):
        call(ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE", ValidTo=in_days(10))
    with expect_error("ValidationException", "ValidTo in the past"):
        call(ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=utcnow() - dt.timedelta(minutes=5))
    with expect_error("ValidationException", "ValidTo more than 365 days ahead"):
        call(ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=in_days(366))
    with expect_error("ValidationException", "junk ExpirationModel"):
        call(ExpirationModel="KEY_MATERIAL_SOMETIMES", ValidTo=in_days(10))
    with expect_error("ValidationException", "junk ImportType"):
        call(ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE", ImportType="OLD_KEY_MATERIAL")
    with expect_error("ValidationException", "empty EncryptedKeyMaterial"):
        call(encrypted=b"")
    with expect_error("ValidationException", "no ImportToken"):
        kms.import_key_material(KeyId=key_id, EncryptedKeyMaterial=good, **NO_EXPIRY)

    # tokens
    other_token = parameters(kms, other)["ImportToken"]
    with expect_error("InvalidImportTokenException", "token of another key"):
        call(import_token=other_token)
    with expect_error("InvalidImportTokenException", "this key's token, used for another key"):
        call(key=other)
    for index in (0, len(token) // 2, len(token) - 1):
        with expect_error("InvalidImportTokenException", f"token with byte {index} flipped"):
            call(import_token=flip_bit(token, index))
    for bad in (token[:20], token[:-1], b"\x00" * 64):
        with expect_error("InvalidImportTokenException", f"token of {len(bad)} bytes"):
            call(import_token=bad)

    # ciphertexts
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with expect_error("InvalidCiphertextException", "encrypted to another public key"):
        call(encrypted=wrap(secret, stranger, "RSAES_OAEP_SHA_256"))
    with expect_error("InvalidCiphertextException", "encrypted to the other key's public key"):
        call(encrypted=wrap(secret, parameters(kms, other)["PublicKey"], "RSAES_OAEP_SHA_256"))
    for index in (0, 100, len(good) - 1):
        with expect_error("InvalidCiphertextException", f"ciphertext with byte {index} flipped"):
            call(encrypted=flip_bit(good, index))
    with expect_error("InvalidCiphertextException", "OAEP with SHA-1 for a RSAES_OAEP_SHA_256 token"):
        call(encrypted=wrap(secret, public, "RSAES_OAEP_SHA_1"))
    with expect_error("InvalidCiphertextException", "AES key wrap for a RSAES_OAEP token"):
        call(encrypted=wrap(secret, public, "RSA_AES_KEY_WRAP_SHA_256"))
    with expect_error("InvalidCiphertextException", "truncated ciphertext"):
        call(encrypted=good[:-1])
    with expect_error("InvalidCiphertextException", "ciphertext with extra bytes"):
        call(encrypted=good + b"\x00" * 8)
    assert state(kms, key_id) == "PendingImport"

    kw_params = parameters(kms, other, "RSA_AES_KEY_WRAP_SHA_256")
    kw_good = wrap(secret, kw_params["PublicKey"], "RSA_AES_KEY_WRAP_SHA_256")
    with expect_error("InvalidCiphertextException", "corrupted AES key wrap part"):
        call(key=other, import_token=kw_params["ImportToken"], encrypted=flip_bit(kw_good, len(kw_good) - 3))
    with expect_error("InvalidCiphertextException", "RSA part only for an RSA_AES_KEY_WRAP token"):
        call(key=other, import_token=kw_params["ImportToken"], encrypted=kw_good[:256])

    # The token survives all of that: it is usable until it expires.
    assert call()["KeyId"] == key_arn(key_id)
    assert state(kms, key_id) == "Enabled"
    # AWS: the key "must be PendingImport or Enabled"; re-importing the same material (EXISTING_KEY_MATERIAL, the
    # default after the first import) into an Enabled key changes only its expiry.
    valid_to = in_days(30)
    call(ValidTo=valid_to)
    described = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert described["KeyState"] == "Enabled" and described["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs((described["ValidTo"] - valid_to).total_seconds()) < 1
    import_material(kms, key_id, secret)
    assert "ValidTo" not in kms.describe_key(KeyId=key_id)["KeyMetadata"]
    kms.disable_key(KeyId=key_id)
    with expect_error("KMSInvalidStateException", "import into a disabled key"):
        import_material(kms, key_id, secret)
    kms.enable_key(KeyId=key_id)

    # keys that take no import
    with expect_error("UnsupportedOperationException", "AWS_KMS key"):
        call(key=new_key())
    with expect_error("NotFoundException", "unknown key"):
        call(key="11111111-2222-3333-4444-555555555555")
    doomed = external_key(kms)
    doomed_params = parameters(kms, doomed)
    kms.schedule_key_deletion(KeyId=doomed, PendingWindowInDays=7)
    with expect_error("KMSInvalidStateException", "key pending deletion"):
        call(key=doomed, import_token=doomed_params["ImportToken"],
             encrypted=wrap(secret, doomed_params["PublicKey"], "RSAES_OAEP_SHA_256"))


# --------------------------------------------------------------------------- DeleteImportedKeyMaterial

def test_delete_and_reimport_the_same_material(kms, new_key):
    key_id = external_key(kms)
    secret = material()
    import_material(kms, key_id, secret, "RSAES_OAEP_SHA_256", ValidTo=in_days(10))
    blob = round_trip(kms, key_id)
    data_key = kms.generate_data_key(KeyId=key_id, NumberOfBytes=32)

    assert kms.delete_imported_key_material(KeyId=key_id)["ResponseMetadata"]["HTTPStatusCode"] == 200
    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert md["KeyState"] == "PendingImport" and md["Enabled"] is False
    assert "ValidTo" not in md and "ExpirationModel" not in md
    with expect_error("KMSInvalidStateException", "Decrypt after DeleteImportedKeyMaterial"):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"imported": "yes"})
    with expect_error("KMSInvalidStateException", "Encrypt after DeleteImportedKeyMaterial"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")

    for wrong in (material(), secret[:-1] + bytes([secret[-1] ^ 1])):
        with expect_error("IncorrectKeyMaterialException", "different material"):
            import_material(kms, key_id, wrong, "RSA_AES_KEY_WRAP_SHA_1")
    assert state(kms, key_id) == "PendingImport"

    import_material(kms, key_id, secret, "RSA_AES_KEY_WRAP_SHA_1", "RSA_3072")
    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert md["KeyState"] == "Enabled" and md["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE" and "ValidTo" not in md
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"imported": "yes"})["KeyId"] == key_arn(key_id)
    assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]

    # Deleting from a disabled key works too.
    kms.disable_key(KeyId=key_id)
    kms.delete_imported_key_material(KeyId=key_id)
    assert state(kms, key_id) == "PendingImport"
    import_material(kms, key_id, secret, "RSAES_OAEP_SHA_1")
    assert state(kms, key_id) == "Enabled"
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"imported": "yes"})["KeyId"] == key_arn(key_id)

    with expect_error("UnsupportedOperationException", "AWS_KMS key"):
        kms.delete_imported_key_material(KeyId=new_key())
    with expect_error("NotFoundException", "unknown key"):
        kms.delete_imported_key_material(KeyId="11111111-2222-3333-4444-555555555555")


def test_delete_and_reimport_hmac_material(kms):
    key_id = external_key(kms, KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC")
    secret = material(64)
    import_material(kms, key_id, secret)
    message = b"before and after"
    mac = kms.generate_mac(KeyId=key_id, Message=message, MacAlgorithm="HMAC_SHA_384")["Mac"]
    kms.delete_imported_key_material(KeyId=key_id)
    with expect_error("KMSInvalidStateException"):
        kms.verify_mac(KeyId=key_id, Message=message, MacAlgorithm="HMAC_SHA_384", Mac=mac)
    with expect_error("IncorrectKeyMaterialException", "other HMAC material"):
        import_material(kms, key_id, material(64))
    import_material(kms, key_id, secret, "RSA_AES_KEY_WRAP_SHA_256")
    assert kms.verify_mac(KeyId=key_id, Message=message, MacAlgorithm="HMAC_SHA_384", Mac=mac)["MacValid"] is True
    assert mac == hmac.new(secret, message, hashlib.sha384).digest()


def test_delete_imported_key_material_of_a_key_pending_deletion(kms):
    """AWS API reference, DeleteImportedKeyMaterial: "When the specified KMS key is in the PendingDeletion state, this
    operation does not change the KMS key's state. Otherwise, it changes the KMS key's state to PendingImport."
    So it succeeds on a key pending deletion, which stays PendingDeletion."""
    key_id = external_key(kms)
    import_material(kms, key_id, material())
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    kms.delete_imported_key_material(KeyId=key_id)
    assert state(kms, key_id) == "PendingDeletion"
    # Cancelling the deletion of a key without material brings it back waiting for material, not Disabled.
    kms.cancel_key_deletion(KeyId=key_id)
    assert state(kms, key_id) == "PendingImport"
    other = external_key(kms)
    import_material(kms, other, material())
    kms.schedule_key_deletion(KeyId=other, PendingWindowInDays=7)
    kms.cancel_key_deletion(KeyId=other)
    assert state(kms, other) == "Disabled"


def test_delete_imported_key_material_of_a_key_without_material(kms):
    """AWS: DeleteImportedKeyMaterial on a PendingImport key succeeds (nothing to delete); the key stays PendingImport."""
    key_id = external_key(kms)
    kms.delete_imported_key_material(KeyId=key_id)
    assert state(kms, key_id) == "PendingImport"
    import_material(kms, key_id, material())
    assert state(kms, key_id) == "Enabled"


# --------------------------------------------------------------------------- rotation, expiry, restart

def test_imported_keys_do_not_rotate(kms):
    pending = external_key(kms)
    with expect_error("UnsupportedOperationException", "EnableKeyRotation, PendingImport"):
        kms.enable_key_rotation(KeyId=pending)
    key_id = external_key(kms)
    import_material(kms, key_id, material())
    with expect_error("UnsupportedOperationException", "EnableKeyRotation"):
        kms.enable_key_rotation(KeyId=key_id)
    with expect_error("UnsupportedOperationException", "RotateKeyOnDemand"):
        kms.rotate_key_on_demand(KeyId=key_id)
    with expect_error("UnsupportedOperationException", "DisableKeyRotation"):
        kms.disable_key_rotation(KeyId=key_id)
    round_trip(kms, key_id)


def test_material_expires_at_valid_to(make_server):
    server = make_server(start=False)
    server.env["TRENT_DELETION_SWEEP_SECONDS"] = "1"  # KeyMaintenance: deletion, rotation and material expiry
    server.start()
    kms = make_kms(server)
    key_id = external_key(kms)
    keeper = external_key(kms)
    secret = material()
    params = parameters(kms, key_id)  # before ValidTo is set: RSA key generation takes a moment
    kms.import_key_material(
        KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=wrap(secret, params["PublicKey"], "RSAES_OAEP_SHA_256"),
        ValidTo=utcnow() + dt.timedelta(seconds=3))
    import_material(kms, keeper, material(), ValidTo=in_days(1))
    assert state(kms, key_id) == "Enabled"
    blob = round_trip(kms, key_id)

    deadline = time.monotonic() + 30
    while state(kms, key_id) != "PendingImport":
        assert time.monotonic() < deadline, "imported material did not expire within 30 s of ValidTo"
        time.sleep(0.5)
    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert "ValidTo" not in md and "ExpirationModel" not in md
    with expect_error("KMSInvalidStateException", "Decrypt after expiry"):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"imported": "yes"})
    assert state(kms, keeper) == "Enabled"

    import_material(kms, key_id, secret)
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"imported": "yes"})["KeyId"] == key_arn(key_id)
    assert "imported key material expired" in server.log_text()


def test_imported_material_survives_restart_and_stays_out_of_logs(make_server):
    server = make_server()
    kms = make_kms(server)
    key_id = external_key(kms)
    secret = material()
    valid_to = in_days(10).replace(microsecond=0)
    params = parameters(kms, key_id, "RSA_AES_KEY_WRAP_SHA_256")
    encrypted = wrap(secret, params["PublicKey"], "RSA_AES_KEY_WRAP_SHA_256")
    kms.import_key_material(KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=encrypted, ValidTo=valid_to)
    blob = round_trip(kms, key_id)

    mac_key = external_key(kms, KeySpec="HMAC_512", KeyUsage="GENERATE_VERIFY_MAC")
    mac_secret = material(96)
    import_material(kms, mac_key, mac_secret)
    before = kms.describe_key(KeyId=key_id)["KeyMetadata"]

    server.restart()
    kms = make_kms(server)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"] == before
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"imported": "yes"})["KeyId"] == key_arn(key_id)
    round_trip(kms, key_id)
    message = b"after the restart"
    assert kms.generate_mac(KeyId=mac_key, Message=message, MacAlgorithm="HMAC_SHA_512")["Mac"] == \
        hmac.new(mac_secret, message, hashlib.sha512).digest()
    # Still refuses a second import, and a re-import after delete still checks the material.
    kms.delete_imported_key_material(KeyId=key_id)
    server.restart()
    kms = make_kms(server)
    with expect_error("IncorrectKeyMaterialException", "other material after restart"):
        import_material(kms, key_id, material())
    import_material(kms, key_id, secret)
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"imported": "yes"})["KeyId"] == key_arn(key_id)

    server.stop()
    files = [server.log_path, *sorted((server.data_dir / "audit").glob("*.jsonl")), *sorted(server.data_dir.glob("trent.sqlite*"))]
    stored = b"".join(p.read_bytes() for p in files if p.exists())
    assert b"imported key material" in stored, "the server did not log the import"
    for name, value in (("material", secret), ("HMAC material", mac_secret), ("import token", params["ImportToken"]),
                        ("encrypted material", encrypted)):
        for form in (value, base64.b64encode(value), value.hex().encode()):
            assert form not in stored, f"the {name} appears in the server's log, audit trail or store"


# --------------------------------------------------------------------------- OpenSSL and the AWS CLI, as AWS documents

def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, timeout=60, **kwargs)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr.decode(errors='replace')}"
    return proc


def test_openssl_rsa_aes_key_wrap(kms, tmp_path):
    """AWS's RSA_AES_KEY_WRAP_SHA_256 steps: openssl enc -id-aes256-wrap-pad, then openssl pkeyutl for the AES key."""
    key_id = external_key(kms)
    params = parameters(kms, key_id, "RSA_AES_KEY_WRAP_SHA_256", "RSA_2048")
    (tmp_path / "PublicKey.bin").write_bytes(params["PublicKey"])
    secret = material()
    (tmp_path / "PlaintextKeyMaterial.bin").write_bytes(secret)
    run("openssl", "rand", "-out", "aes-key.bin", "32", cwd=tmp_path)
    aes_key = (tmp_path / "aes-key.bin").read_bytes()
    run("openssl", "enc", "-id-aes256-wrap-pad", "-K", aes_key.hex(), "-iv", "A65959A6",
        "-in", "PlaintextKeyMaterial.bin", "-out", "key-material-wrapped.bin", cwd=tmp_path)
    run("openssl", "pkeyutl", "-encrypt", "-in", "aes-key.bin", "-out", "aes-key-wrapped.bin",
        "-inkey", "PublicKey.bin", "-keyform", "DER", "-pubin", "-pkeyopt", "rsa_padding_mode:oaep",
        "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256", cwd=tmp_path)
    encrypted = (tmp_path / "aes-key-wrapped.bin").read_bytes() + (tmp_path / "key-material-wrapped.bin").read_bytes()
    assert len(encrypted) == 256 + 40
    kms.import_key_material(KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=encrypted, **NO_EXPIRY)
    round_trip(kms, key_id)


def test_cli_import_with_openssl(aws_cli, kms, tmp_path):
    """get-parameters-for-import, openssl rand + pkeyutl (RSAES_OAEP_SHA_256), import-key-material, encrypt, decrypt."""
    rc, out, err = aws_cli("create-key", "--origin", "EXTERNAL", "--description", "imported with the AWS CLI")
    assert rc == 0, err
    key_id = out["KeyMetadata"]["KeyId"]
    assert out["KeyMetadata"]["KeyState"] == "PendingImport" and out["KeyMetadata"]["Origin"] == "EXTERNAL"

    rc, out, err = aws_cli(
        "get-parameters-for-import", "--key-id", key_id,
        "--wrapping-algorithm", "RSAES_OAEP_SHA_256", "--wrapping-key-spec", "RSA_2048")
    assert rc == 0, err
    assert out["KeyId"] == key_arn(key_id)
    (tmp_path / "PublicKey.bin").write_bytes(base64.b64decode(out["PublicKey"], validate=True))
    token = base64.b64decode(out["ImportToken"], validate=True)
    remember_plaintext(token)
    (tmp_path / "ImportToken.bin").write_bytes(token)

    run("openssl", "rand", "-out", "PlaintextKeyMaterial.bin", "32", cwd=tmp_path)
    secret = (tmp_path / "PlaintextKeyMaterial.bin").read_bytes()
    remember_plaintext(secret)
    run("openssl", "pkeyutl", "-encrypt", "-in", "PlaintextKeyMaterial.bin", "-out", "EncryptedKeyMaterial.bin",
        "-inkey", "PublicKey.bin", "-keyform", "DER", "-pubin", "-pkeyopt", "rsa_padding_mode:oaep",
        "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256", cwd=tmp_path)

    valid_to = (utcnow() + dt.timedelta(days=90)).replace(microsecond=0)
    rc, out, err = aws_cli(
        "import-key-material", "--key-id", key_id,
        "--encrypted-key-material", f"fileb://{tmp_path / 'EncryptedKeyMaterial.bin'}",
        "--import-token", f"fileb://{tmp_path / 'ImportToken.bin'}",
        "--expiration-model", "KEY_MATERIAL_EXPIRES", "--valid-to", valid_to.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert rc == 0, err
    md = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert md["KeyState"] == "Enabled" and md["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs((md["ValidTo"] - valid_to).total_seconds()) < 2

    plaintext = b"encrypted by the CLI under imported material " + os.urandom(8).hex().encode()
    remember_plaintext(plaintext)
    (tmp_path / "plaintext.bin").write_bytes(plaintext)
    rc, out, err = aws_cli("encrypt", "--key-id", key_id, "--plaintext", f"fileb://{tmp_path / 'plaintext.bin'}")
    assert rc == 0, err
    (tmp_path / "ciphertext.bin").write_bytes(base64.b64decode(out["CiphertextBlob"]))
    rc, out, err = aws_cli("decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'ciphertext.bin'}")
    assert rc == 0, err
    assert base64.b64decode(out["Plaintext"]) == plaintext and out["KeyId"] == key_arn(key_id)

    rc, out, err = aws_cli("delete-imported-key-material", "--key-id", key_id)
    assert rc == 0, err
    assert state(kms, key_id) == "PendingImport"


# --------------------------------------------------------------------------- RSA and ECC private keys

def private_key_der(private_key) -> bytes:
    der = private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    remember_plaintext(der)
    return der


def public_key_der(private_key) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def import_private_key(kms, key_id: str, private_key, algorithm: str = "RSA_AES_KEY_WRAP_SHA_256", spec: str = "RSA_4096") -> dict:
    return import_material(kms, key_id, private_key_der(private_key), algorithm, spec, **NO_EXPIRY)


EC_CURVES = {"ECC_NIST_P256": (ec.SECP256R1(), hashes.SHA256(), "ECDSA_SHA_256"),
             "ECC_NIST_P384": (ec.SECP384R1(), hashes.SHA384(), "ECDSA_SHA_384"),
             "ECC_NIST_P521": (ec.SECP521R1(), hashes.SHA512(), "ECDSA_SHA_512")}
NSS_IMPORTS_NO_EC = "NSS softoken unwraps an EC private key only when given its public point, which Trent makes in the token after the unwrap"


@pytest.mark.parametrize("algorithm", ["RSA_AES_KEY_WRAP_SHA_1", "RSA_AES_KEY_WRAP_SHA_256"])
def test_import_rsa_signing_key(kms, algorithm):
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_id = external_key(kms, KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    assert state(kms, key_id) == "PendingImport"
    with expect_error("KMSInvalidStateException", "GetPublicKey before import"):
        kms.get_public_key(KeyId=key_id)
    out = import_private_key(kms, key_id, private_key, algorithm)
    assert out["KeyId"] == key_arn(key_id) and "KeyMaterialId" in out
    assert state(kms, key_id) == "Enabled"
    assert kms.get_public_key(KeyId=key_id)["PublicKey"] == public_key_der(private_key)
    message = b"signed by an imported RSA key"
    for signing_algorithm, pad in (("RSASSA_PSS_SHA_256", padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)),
                                   ("RSASSA_PKCS1_V1_5_SHA_256", padding.PKCS1v15())):
        signature = kms.sign(KeyId=key_id, Message=message, SigningAlgorithm=signing_algorithm)["Signature"]
        private_key.public_key().verify(signature, message, pad, hashes.SHA256())
    local = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    assert kms.verify(KeyId=key_id, Message=message, Signature=local, SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")["SignatureValid"]

    # Re-import: the same private key only.
    kms.delete_imported_key_material(KeyId=key_id)
    assert state(kms, key_id) == "PendingImport"
    with expect_error("IncorrectKeyMaterialException", "another RSA private key"):
        import_private_key(kms, key_id, rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm)
    import_private_key(kms, key_id, private_key, algorithm)
    assert kms.get_public_key(KeyId=key_id)["PublicKey"] == public_key_der(private_key)


def test_import_rsa_encryption_key(kms):
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    key_id = external_key(kms, KeySpec="RSA_3072", KeyUsage="ENCRYPT_DECRYPT")
    import_private_key(kms, key_id, private_key)
    public_key = serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
    for algorithm, digest in (("RSAES_OAEP_SHA_1", hashes.SHA1()), ("RSAES_OAEP_SHA_256", hashes.SHA256())):
        oaep_padding = padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"to the imported key", EncryptionAlgorithm=algorithm)["CiphertextBlob"]
        assert private_key.decrypt(blob, oaep_padding) == b"to the imported key"
        local = public_key.encrypt(b"from cryptography", oaep_padding)
        assert kms.decrypt(KeyId=key_id, CiphertextBlob=local, EncryptionAlgorithm=algorithm)["Plaintext"] == b"from cryptography"


def test_private_key_import_refusals(kms):
    key_id = external_key(kms, KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    for algorithm in ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"):
        with expect_error("UnsupportedOperationException", f"{algorithm} cannot carry a private key into the token"):
            kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_4096")
    with expect_error("IncorrectKeyMaterialException", "an RSA-3072 private key into an RSA_2048 key"):
        import_private_key(kms, key_id, rsa.generate_private_key(public_exponent=65537, key_size=3072))
    with expect_error("IncorrectKeyMaterialException", "32 bytes of symmetric material into an RSA key"):
        import_material(kms, key_id, material(), "RSA_AES_KEY_WRAP_SHA_256", **NO_EXPIRY)
    assert state(kms, key_id) == "PendingImport"
    # Trent cannot make a secp256k1 public key in the token (swift-crypto has no secp256k1 to pick the point).
    if token_has_key_pair_spec("ECC_SECG_P256K1"):
        k1 = external_key(kms, KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")
        with expect_error("UnsupportedOperationException", "secp256k1 key material"):
            import_private_key(kms, k1, ec.generate_private_key(ec.SECP256K1()))


@pytest.mark.parametrize("key_spec", sorted(EC_CURVES))
def test_import_ecc_signing_key(kms, key_spec):
    curve, digest, signing_algorithm = EC_CURVES[key_spec]
    private_key = ec.generate_private_key(curve)
    key_id = external_key(kms, KeySpec=key_spec, KeyUsage="SIGN_VERIFY")
    if TOKEN == "nss-softoken":
        with expect_error("UnsupportedOperationException", "NSS softoken"):
            import_private_key(kms, key_id, private_key)
        pytest.skip(NSS_IMPORTS_NO_EC)
    with expect_error("IncorrectKeyMaterialException", "a key of another curve"):
        other = next(spec for spec in sorted(EC_CURVES) if spec != key_spec)
        import_private_key(kms, key_id, ec.generate_private_key(EC_CURVES[other][0]))
    import_private_key(kms, key_id, private_key, "RSA_AES_KEY_WRAP_SHA_1", "RSA_2048")
    assert kms.get_public_key(KeyId=key_id)["PublicKey"] == public_key_der(private_key)
    message = b"signed by an imported EC key"
    signature = kms.sign(KeyId=key_id, Message=message, SigningAlgorithm=signing_algorithm)["Signature"]
    private_key.public_key().verify(signature, message, ec.ECDSA(digest))
    local = private_key.sign(message, ec.ECDSA(digest))
    assert kms.verify(KeyId=key_id, Message=message, Signature=local, SigningAlgorithm=signing_algorithm)["SignatureValid"]
