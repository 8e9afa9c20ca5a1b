"""GenerateDataKey, GenerateDataKeyWithoutPlaintext, GenerateRandom, and operations not implemented yet."""

from __future__ import annotations

import uuid

import pytest

from trent_e2e import blob_overhead, expect_error, key_arn


@pytest.fixture
def key(new_key):
    return new_key(Description="data keys")


CONTEXT = {"bucket": "e2e", "object": "data.bin"}


# --------------------------------------------------------------------------- GenerateDataKey

@pytest.mark.parametrize(
    "spec, length",
    [({"KeySpec": "AES_256"}, 32), ({"KeySpec": "AES_128"}, 16),
     ({"NumberOfBytes": 1}, 1), ({"NumberOfBytes": 64}, 64), ({"NumberOfBytes": 1024}, 1024)],
    ids=["AES_256", "AES_128", "1-byte", "64-bytes", "1024-bytes"],
)
def test_generate_data_key(kms, key, spec, length):
    resp = kms.generate_data_key(KeyId=key, EncryptionContext=CONTEXT, **spec)
    assert resp["KeyId"] == key_arn(key)
    plaintext = resp["Plaintext"]
    assert len(plaintext) == length
    blob = resp["CiphertextBlob"]
    assert len(blob) == blob_overhead() + length
    assert blob[1:17] == uuid.UUID(key).bytes
    dec = kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)
    assert dec["Plaintext"] == plaintext
    assert dec["KeyId"] == key_arn(key)
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=blob)


def test_generate_data_key_is_random(kms, key):
    a = kms.generate_data_key(KeyId=key, KeySpec="AES_256")["Plaintext"]
    b = kms.generate_data_key(KeyId=key, KeySpec="AES_256")["Plaintext"]
    assert a != b


def test_generate_data_key_through_alias(kms, key, new_alias):
    alias = new_alias(key)
    resp = kms.generate_data_key(KeyId=alias, KeySpec="AES_128")
    assert resp["KeyId"] == key_arn(key)
    assert kms.decrypt(CiphertextBlob=resp["CiphertextBlob"])["Plaintext"] == resp["Plaintext"]


@pytest.mark.parametrize(
    "spec",
    [{"NumberOfBytes": 0}, {"NumberOfBytes": 1025}, {"KeySpec": "AES_256", "NumberOfBytes": 32}, {}],
    ids=["zero-bytes", "1025-bytes", "both", "neither"],
)
@pytest.mark.parametrize("op", ["generate_data_key", "generate_data_key_without_plaintext"])
def test_generate_data_key_invalid_size(kms, key, op, spec):
    with expect_error("ValidationException"):
        getattr(kms, op)(KeyId=key, **spec)


def test_generate_data_key_unknown_key(kms):
    with expect_error("NotFoundException"):
        kms.generate_data_key(KeyId=str(uuid.uuid4()), KeySpec="AES_256")


def test_generate_data_key_dry_run(kms, key):
    with expect_error("DryRunOperationException"):
        kms.generate_data_key(KeyId=key, KeySpec="AES_256", DryRun=True)


@pytest.mark.parametrize("spec, length", [({"KeySpec": "AES_256"}, 32), ({"NumberOfBytes": 48}, 48)])
def test_generate_data_key_without_plaintext(kms, key, spec, length):
    resp = kms.generate_data_key_without_plaintext(KeyId=key, EncryptionContext=CONTEXT, **spec)
    assert "Plaintext" not in resp
    assert resp["KeyId"] == key_arn(key)
    dec = kms.decrypt(CiphertextBlob=resp["CiphertextBlob"], EncryptionContext=CONTEXT)
    assert len(dec["Plaintext"]) == length
    assert dec["KeyId"] == key_arn(key)


# --------------------------------------------------------------------------- GenerateRandom

@pytest.mark.parametrize("n", [1, 16, 1024])
def test_generate_random_length(kms, n):
    assert len(kms.generate_random(NumberOfBytes=n)["Plaintext"]) == n


def test_generate_random_differs(kms):
    a = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    b = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    assert a != b
    assert a != bytes(32)


@pytest.mark.parametrize("n", [0, 1025])
def test_generate_random_out_of_range(kms, n):
    with expect_error("ValidationException"):
        kms.generate_random(NumberOfBytes=n)


# --------------------------------------------------------------------------- operations a symmetric key cannot do

NOT_FOR_SYMMETRIC_KEYS = {
    # AWS: a symmetric key's usage does not allow signing; it has no public key; its material is AWS_KMS, not EXTERNAL.
    "sign": (lambda k: dict(KeyId=k, Message=b"message", SigningAlgorithm="RSASSA_PSS_SHA_256"), "InvalidKeyUsageException"),
    "get_public_key": (lambda k: dict(KeyId=k), "UnsupportedOperationException"),
    "get_parameters_for_import": (
        lambda k: dict(KeyId=k, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"),
        "UnsupportedOperationException",
    ),
}


@pytest.mark.parametrize("op", sorted(NOT_FOR_SYMMETRIC_KEYS))
def test_operation_not_for_symmetric_keys(kms, key, op):
    arguments, code = NOT_FOR_SYMMETRIC_KEYS[op]
    with expect_error(code):
        getattr(kms, op)(**arguments(key))
