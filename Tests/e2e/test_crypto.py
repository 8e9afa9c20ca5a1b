"""Encrypt, Decrypt, ReEncrypt: the ciphertext blob format, encryption context binding, tamper detection."""

from __future__ import annotations

import os
import struct
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from trent_e2e import HEADER_LEN, IV_LEN, TAG_LEN, alias_arn, blob_overhead, expect_error, flip_bit, key_arn


@pytest.fixture
def key(new_key):
    return new_key(Description="crypto")


def encrypt(kms, key_id, plaintext, context=None):
    kwargs = {"KeyId": key_id, "Plaintext": plaintext}
    if context is not None:
        kwargs["EncryptionContext"] = context
    return kms.encrypt(**kwargs)["CiphertextBlob"]


# --------------------------------------------------------------------------- Encrypt / Decrypt

@pytest.mark.parametrize("size", [1, 17, 4096])
def test_encrypt_decrypt_round_trip(kms, key, size):
    plaintext = os.urandom(size)
    enc = kms.encrypt(KeyId=key, Plaintext=plaintext)
    assert enc["KeyId"] == key_arn(key)
    assert enc["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    dec = kms.decrypt(CiphertextBlob=enc["CiphertextBlob"])
    assert dec["Plaintext"] == plaintext
    assert dec["KeyId"] == key_arn(key)
    assert dec["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"


def test_ciphertext_blob_format(kms, key):
    plaintext = b"format check: 32 bytes of text.."
    blob = encrypt(kms, key, plaintext)
    assert len(blob) == 1 + 16 + 4 + 12 + len(plaintext) + 16 == blob_overhead() + len(plaintext)
    assert blob[0] == 1
    assert blob[1:17] == uuid.UUID(key).bytes
    (backing_version,) = struct.unpack(">I", blob[17:21])
    assert backing_version >= 1
    assert plaintext not in blob


def test_encrypt_is_randomised(kms, key):
    a = encrypt(kms, key, b"same plaintext")
    b = encrypt(kms, key, b"same plaintext")
    assert a != b
    assert a[HEADER_LEN:HEADER_LEN + IV_LEN] != b[HEADER_LEN:HEADER_LEN + IV_LEN], "IV reused"


@pytest.mark.parametrize("size", [0, 4097])
def test_encrypt_plaintext_size_bounds(kms, key, size):
    with expect_error("ValidationException"):
        kms.encrypt(KeyId=key, Plaintext=b"\x00" * size)


def test_encrypt_unknown_key(kms):
    with expect_error("NotFoundException"):
        kms.encrypt(KeyId=str(uuid.uuid4()), Plaintext=b"x")


def test_decrypt_with_matching_key_id(kms, key, new_alias):
    alias = new_alias(key)
    blob = encrypt(kms, key, b"named key")
    for ident in (key, key_arn(key), alias, alias_arn(alias)):
        dec = kms.decrypt(CiphertextBlob=blob, KeyId=ident)
        assert dec["Plaintext"] == b"named key", ident
        assert dec["KeyId"] == key_arn(key), ident


def test_decrypt_with_other_key_id(kms, key, new_key, new_alias):
    other = new_key()
    other_alias = new_alias(other)
    blob = encrypt(kms, key, b"wrong key")
    for ident in (other, key_arn(other), other_alias):
        with expect_error("IncorrectKeyException", what=ident):
            kms.decrypt(CiphertextBlob=blob, KeyId=ident)


@pytest.mark.parametrize("op", ["encrypt", "decrypt"])
def test_asymmetric_algorithm_on_symmetric_key(kms, key, op):
    if op == "encrypt":
        call = lambda: kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    else:
        blob = encrypt(kms, key, b"x")
        call = lambda: kms.decrypt(CiphertextBlob=blob, KeyId=key, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    with expect_error("InvalidKeyUsageException"):
        call()


def test_explicit_symmetric_default_algorithm(kms, key):
    enc = kms.encrypt(KeyId=key, Plaintext=b"explicit", EncryptionAlgorithm="SYMMETRIC_DEFAULT")
    dec = kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionAlgorithm="SYMMETRIC_DEFAULT")
    assert dec["Plaintext"] == b"explicit"


def test_encrypt_dry_run(kms, key):
    with expect_error("DryRunOperationException"):
        kms.encrypt(KeyId=key, Plaintext=b"dry", DryRun=True)


def test_decrypt_dry_run(kms, key):
    blob = encrypt(kms, key, b"dry")
    with expect_error("DryRunOperationException"):
        kms.decrypt(CiphertextBlob=blob, DryRun=True)


def test_concurrent_encrypt_decrypt(kms, new_key):
    keys = [new_key(), new_key()]

    def round_trip(i: int) -> bool:
        key_id = keys[i % 2]
        plaintext = f"concurrent message {i:04d}".encode()
        blob = encrypt(kms, key_id, plaintext, {"i": str(i)})
        dec = kms.decrypt(CiphertextBlob=blob, EncryptionContext={"i": str(i)})
        return dec["Plaintext"] == plaintext and dec["KeyId"] == key_arn(key_id)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(round_trip, range(64)))
    assert all(results)


# --------------------------------------------------------------------------- encryption context

CONTEXT = {"purpose": "e2e", "tenant": "t-42"}


def test_encryption_context_round_trip(kms, key):
    blob = encrypt(kms, key, b"bound", CONTEXT)
    # order of pairs in the request must not matter
    reordered = dict(reversed(list(CONTEXT.items())))
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=reordered)["Plaintext"] == b"bound"


@pytest.mark.parametrize(
    "context",
    [
        None,
        {},
        {"purpose": "e2e"},
        {**CONTEXT, "extra": "pair"},
        {"purpose": "e2e", "tenant": "t-43"},
        {"purpose": "e2e", "Tenant": "t-42"},
    ],
    ids=["missing", "empty", "one-pair-missing", "extra-pair", "changed-value", "changed-key-case"],
)
def test_encryption_context_mismatch(kms, key, context):
    blob = encrypt(kms, key, b"bound", CONTEXT)
    kwargs = {"CiphertextBlob": blob}
    if context is not None:
        kwargs["EncryptionContext"] = context
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(**kwargs)


def test_context_given_but_none_used(kms, key):
    blob = encrypt(kms, key, b"unbound")
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "b"})


@pytest.mark.parametrize(
    "enc_ctx, dec_ctx",
    [
        ({"ab": "c"}, {"a": "bc"}),
        ({"a": "bc"}, {"ab": "c"}),
        ({"a": "b", "c": "d"}, {"ab": "cd"}),
        ({"abc": "d"}, {"a": "bcd"}),
    ],
)
def test_encryption_context_is_length_prefixed(kms, key, enc_ctx, dec_ctx):
    blob = encrypt(kms, key, b"canonical", enc_ctx)
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=enc_ctx)["Plaintext"] == b"canonical"
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext=dec_ctx)


def test_encryption_context_unicode(kms, key):
    ctx = {"clé": "valeur ✓", "ключ": "значение"}
    blob = encrypt(kms, key, b"unicode", ctx)
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == b"unicode"


# --------------------------------------------------------------------------- tampering

def _positions(blob_len: int) -> dict[str, int]:
    return {
        "version-byte": 0,
        "key-id-first": 1,
        "key-id-middle": 9,
        "key-id-last": 16,
        "backing-version": 20,
        "iv-first": HEADER_LEN,
        "iv-last": HEADER_LEN + IV_LEN - 1,
        "body-first": HEADER_LEN + IV_LEN,
        "body-last": blob_len - TAG_LEN - 1,
        "tag-first": blob_len - TAG_LEN,
        "last-byte": blob_len - 1,
    }


def test_flipped_bits_are_rejected(kms, key):
    plaintext = b"tamper-evident plaintext"
    blob = encrypt(kms, key, plaintext, CONTEXT)
    for name, index in _positions(len(blob)).items():
        for bit in (0, 7):
            tampered = flip_bit(blob, index, bit)
            with expect_error("InvalidCiphertextException", what=f"{name} bit {bit}"):
                kms.decrypt(CiphertextBlob=tampered, EncryptionContext=CONTEXT)
    # the original still decrypts: nothing above damaged the key
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)["Plaintext"] == plaintext


def test_truncated_blobs_are_rejected(kms, key):
    blob = encrypt(kms, key, b"truncate me, please")
    cuts = {
        "minus-one": blob[:-1],
        "no-tag": blob[:-TAG_LEN],
        "header-and-iv": blob[:HEADER_LEN + IV_LEN],
        "header-only": blob[:HEADER_LEN],
        "half-key-id": blob[:9],
        "one-byte": blob[:1],
        "body-plus-tag-without-iv": blob[:HEADER_LEN] + blob[HEADER_LEN + IV_LEN:],
    }
    for name, cut in cuts.items():
        with expect_error("InvalidCiphertextException", what=name):
            kms.decrypt(CiphertextBlob=cut)


def test_appended_bytes_are_rejected(kms, key):
    blob = encrypt(kms, key, b"extended")
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=blob + b"\x00")


@pytest.mark.parametrize(
    "blob",
    [b"\x01", b"\x00", os.urandom(64), b"\x02" + os.urandom(60), bytes(64)],
    ids=["one-byte-1", "one-byte-0", "random", "version-2", "zeros"],
)
def test_garbage_blobs_are_rejected(kms, key, blob):
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=blob)


def test_forged_body_under_real_header(kms, key):
    blob = encrypt(kms, key, b"real")
    forged = blob[:HEADER_LEN] + os.urandom(len(blob) - HEADER_LEN)
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=forged)


def test_key_id_swapped_to_another_key(kms, key, new_key):
    other = new_key()
    blob = encrypt(kms, key, b"swap the header")
    swapped = blob[:1] + uuid.UUID(other).bytes + blob[17:]
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=swapped)
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=swapped, KeyId=other)


# --------------------------------------------------------------------------- ReEncrypt

def test_reencrypt_between_keys(kms, new_key, new_alias):
    src, dst = new_key(), new_key()
    dst_alias = new_alias(dst)
    blob = encrypt(kms, src, b"move me")
    resp = kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=dst_alias)
    assert resp["SourceKeyId"] == key_arn(src)
    assert resp["KeyId"] == key_arn(dst)
    assert resp["SourceEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert resp["DestinationEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    new_blob = resp["CiphertextBlob"]
    assert new_blob[1:17] == uuid.UUID(dst).bytes
    dec = kms.decrypt(CiphertextBlob=new_blob)
    assert dec["Plaintext"] == b"move me"
    assert dec["KeyId"] == key_arn(dst)
    with expect_error("IncorrectKeyException"):
        kms.decrypt(CiphertextBlob=new_blob, KeyId=src)


def test_reencrypt_with_source_key_id(kms, new_key):
    src, dst, other = new_key(), new_key(), new_key()
    blob = encrypt(kms, src, b"checked source")
    resp = kms.re_encrypt(CiphertextBlob=blob, SourceKeyId=src, DestinationKeyId=dst)
    assert kms.decrypt(CiphertextBlob=resp["CiphertextBlob"])["Plaintext"] == b"checked source"
    with expect_error("IncorrectKeyException"):
        kms.re_encrypt(CiphertextBlob=blob, SourceKeyId=other, DestinationKeyId=dst)


def test_reencrypt_between_contexts(kms, key):
    old_ctx, new_ctx = {"v": "1"}, {"v": "2", "app": "e2e"}
    blob = encrypt(kms, key, b"recontext", old_ctx)
    resp = kms.re_encrypt(
        CiphertextBlob=blob,
        SourceEncryptionContext=old_ctx,
        DestinationKeyId=key,
        DestinationEncryptionContext=new_ctx,
    )
    assert resp["SourceKeyId"] == key_arn(key)
    assert resp["KeyId"] == key_arn(key)
    new_blob = resp["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=new_blob, EncryptionContext=new_ctx)["Plaintext"] == b"recontext"
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=new_blob, EncryptionContext=old_ctx)
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=new_blob)


def test_reencrypt_wrong_source_context(kms, new_key):
    src, dst = new_key(), new_key()
    blob = encrypt(kms, src, b"ctx", {"a": "1"})
    with expect_error("InvalidCiphertextException"):
        kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"a": "2"}, DestinationKeyId=dst)
    with expect_error("InvalidCiphertextException"):
        kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=dst)


def test_reencrypt_tampered_blob(kms, new_key):
    src, dst = new_key(), new_key()
    blob = encrypt(kms, src, b"tampered")
    with expect_error("InvalidCiphertextException"):
        kms.re_encrypt(CiphertextBlob=flip_bit(blob, len(blob) - 1), DestinationKeyId=dst)


def test_reencrypt_disabled_destination(kms, new_key):
    src, dst = new_key(), new_key()
    blob = encrypt(kms, src, b"nowhere to go")
    kms.disable_key(KeyId=dst)
    with expect_error("DisabledException"):
        kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=dst)


def test_reencrypt_disabled_source(kms, new_key):
    src, dst = new_key(), new_key()
    blob = encrypt(kms, src, b"stuck")
    kms.disable_key(KeyId=src)
    with expect_error("DisabledException"):
        kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=dst)


def test_reencrypt_unknown_destination(kms, key):
    blob = encrypt(kms, key, b"lost")
    with expect_error("NotFoundException"):
        kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=str(uuid.uuid4()))
