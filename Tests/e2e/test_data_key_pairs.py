"""GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext: asymmetric data key pairs for use outside KMS.

For every KeyPairSpec (RSA_2048/3072/4096, ECC_NIST_P256/P384/P521, ECC_SECG_P256K1):
- PublicKey is a DER X.509 SubjectPublicKeyInfo (RFC 5280) of that type and size,
- PrivateKeyPlaintext (GenerateDataKeyPair only) is a DER PKCS #8 PrivateKeyInfo (RFC 5208) of the same pair,
- PrivateKeyCiphertextBlob is that PKCS #8 encrypted under the symmetric KMS key with the encryption context:
  Decrypt with the same context gives it back, with any other context fails with InvalidCiphertextException.
All of it is checked with `cryptography`: the private key signs (and for RSA decrypts) and the public key verifies
(encrypts). The KMS key must be a symmetric encryption key ("You cannot specify an asymmetric KMS key").
"""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from trent_e2e import TOKEN, blob_overhead, expect_error, key_arn, remember_plaintext, require_key_pair_spec

RSA_BITS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
CURVES = {
    "ECC_NIST_P256": ec.SECP256R1,
    "ECC_NIST_P384": ec.SECP384R1,
    "ECC_NIST_P521": ec.SECP521R1,
    "ECC_SECG_P256K1": ec.SECP256K1,
}
KEY_PAIR_SPECS = [*RSA_BITS, *CURVES]
OPERATIONS = ["generate_data_key_pair", "generate_data_key_pair_without_plaintext"]

# DER-encoded OBJECT IDENTIFIER contents.
OID_RSA_ENCRYPTION = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1
OID_EC_PUBLIC_KEY = bytes.fromhex("2a8648ce3d0201")  # 1.2.840.10045.2.1
CURVE_OIDS = {
    "ECC_NIST_P256": bytes.fromhex("2a8648ce3d030107"),  # 1.2.840.10045.3.1.7 prime256v1
    "ECC_NIST_P384": bytes.fromhex("2b81040022"),  # 1.3.132.0.34 secp384r1
    "ECC_NIST_P521": bytes.fromhex("2b81040023"),  # 1.3.132.0.35 secp521r1
    "ECC_SECG_P256K1": bytes.fromhex("2b8104000a"),  # 1.3.132.0.10 secp256k1
}

CONTEXT = {"purpose": "data-key-pair", "tenant": "t-7"}


# --------------------------------------------------------------------------- a little DER, to check PKCS #8 itself

def read_tlv(data: bytes, offset: int = 0) -> tuple[int, bytes, int]:
    """(tag, content, next offset) of the DER element at `offset`; definite lengths only."""
    tag = data[offset]
    length = data[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        assert 1 <= count <= 4, "bad DER length"
        length = int.from_bytes(data[offset:offset + count], "big")
        offset += count
    content = data[offset:offset + length]
    assert len(content) == length, "DER element runs past the end"
    return tag, content, offset + length


def read_sequence(content: bytes) -> list[tuple[int, bytes]]:
    items, offset = [], 0
    while offset < len(content):
        tag, value, offset = read_tlv(content, offset)
        items.append((tag, value))
    return items


def check_pkcs8_structure(spec: str, der: bytes) -> None:
    """PrivateKeyInfo ::= SEQUENCE { version INTEGER (0), AlgorithmIdentifier, privateKey OCTET STRING, ... }.

    load_der_private_key also accepts PKCS #1 RSAPrivateKey and SEC 1 ECPrivateKey, so the wrapper is checked here.
    """
    tag, content, end = read_tlv(der)
    assert tag == 0x30 and end == len(der), "not one DER SEQUENCE"
    items = read_sequence(content)
    assert len(items) >= 3, items
    assert items[0] == (0x02, b"\x00"), "PKCS #8 version is not 0"
    assert items[1][0] == 0x30, "no AlgorithmIdentifier"
    algorithm = read_sequence(items[1][1])
    if spec in RSA_BITS:
        assert algorithm == [(0x06, OID_RSA_ENCRYPTION), (0x05, b"")], algorithm
    else:
        assert algorithm == [(0x06, OID_EC_PUBLIC_KEY), (0x06, CURVE_OIDS[spec])], algorithm
    assert items[2][0] == 0x04, "privateKey is not an OCTET STRING"


def check_public_key(spec: str, der: bytes):
    public_key = serialization.load_der_public_key(der)
    if spec in RSA_BITS:
        assert isinstance(public_key, rsa.RSAPublicKey), type(public_key)
        assert public_key.key_size == RSA_BITS[spec] and public_key.public_numbers().e == 65537
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey), type(public_key)
        assert isinstance(public_key.curve, CURVES[spec]), public_key.curve.name
    assert public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == der
    return public_key


def check_private_key(spec: str, pkcs8: bytes, public_der: bytes):
    """Parses the PKCS #8 with `cryptography`, checks it is the private half of `public_der`; returns both keys."""
    check_pkcs8_structure(spec, pkcs8)
    private_key = serialization.load_der_private_key(pkcs8, password=None)
    public_key = check_public_key(spec, public_der)
    assert private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == public_der
    if spec in RSA_BITS:
        assert isinstance(private_key, rsa.RSAPrivateKey) and private_key.key_size == RSA_BITS[spec]
    else:
        assert isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(private_key.curve, CURVES[spec])
    return private_key, public_key


def use_the_pair(spec: str, private_key, public_key) -> None:
    """Sign with the private key and verify with the public key; for RSA also encrypt and decrypt."""
    message = b"made with a data key pair from Trent"
    if spec in RSA_BITS:
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        public_key.verify(private_key.sign(message, pss, hashes.SHA256()), message, pss, hashes.SHA256())
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        assert private_key.decrypt(public_key.encrypt(message, oaep), oaep) == message
    else:
        ecdsa = ec.ECDSA(hashes.SHA256())
        public_key.verify(private_key.sign(message, ecdsa), message, ecdsa)


def check_blob_header(blob: bytes, cmk: str, plaintext_len: int) -> None:
    """Trent's symmetric ciphertext format (see test_crypto): version 1, the KMS key's id, AES-GCM overhead."""
    assert blob[0] == 1 and blob[1:17] == uuid.UUID(cmk).bytes
    assert len(blob) == blob_overhead() + plaintext_len


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def cmk(kms):
    return kms.create_key(Description="data key pairs")["KeyMetadata"]["KeyId"]


# --------------------------------------------------------------------------- the pairs themselves

@pytest.mark.parametrize("spec", KEY_PAIR_SPECS)
def test_generate_data_key_pair(kms, cmk, spec):
    require_key_pair_spec(spec)
    resp = kms.generate_data_key_pair(KeyId=cmk, KeyPairSpec=spec, EncryptionContext=CONTEXT)
    assert resp["KeyId"] == key_arn(cmk) and resp["KeyPairSpec"] == spec
    pkcs8 = resp["PrivateKeyPlaintext"]
    remember_plaintext(pkcs8)  # the hygiene test looks for it in every log
    private_key, public_key = check_private_key(spec, pkcs8, resp["PublicKey"])
    use_the_pair(spec, private_key, public_key)

    blob = resp["PrivateKeyCiphertextBlob"]
    assert pkcs8 not in blob
    check_blob_header(blob, cmk, len(pkcs8))
    dec = kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)
    assert dec["Plaintext"] == pkcs8 and dec["KeyId"] == key_arn(cmk) and dec["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    assert kms.decrypt(CiphertextBlob=blob, KeyId=cmk, EncryptionContext=CONTEXT)["Plaintext"] == pkcs8


@pytest.mark.parametrize("spec", KEY_PAIR_SPECS)
def test_generate_data_key_pair_without_plaintext(kms, cmk, spec):
    require_key_pair_spec(spec)
    resp = kms.generate_data_key_pair_without_plaintext(KeyId=cmk, KeyPairSpec=spec, EncryptionContext=CONTEXT)
    assert resp["KeyId"] == key_arn(cmk) and resp["KeyPairSpec"] == spec
    assert "PrivateKeyPlaintext" not in resp
    public_key = check_public_key(spec, resp["PublicKey"])

    blob = resp["PrivateKeyCiphertextBlob"]
    dec = kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)
    assert dec["KeyId"] == key_arn(cmk)
    pkcs8 = dec["Plaintext"]
    check_blob_header(blob, cmk, len(pkcs8))
    private_key, _ = check_private_key(spec, pkcs8, resp["PublicKey"])
    use_the_pair(spec, private_key, public_key)


@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("spec", ["RSA_2048", "ECC_NIST_P256"])
def test_every_call_makes_a_new_pair(kms, cmk, op, spec):
    first = getattr(kms, op)(KeyId=cmk, KeyPairSpec=spec)
    second = getattr(kms, op)(KeyId=cmk, KeyPairSpec=spec)
    assert first["PublicKey"] != second["PublicKey"]
    assert first["PrivateKeyCiphertextBlob"] != second["PrivateKeyCiphertextBlob"]
    if op == "generate_data_key_pair":
        remember_plaintext(first["PrivateKeyPlaintext"])
        remember_plaintext(second["PrivateKeyPlaintext"])
        assert first["PrivateKeyPlaintext"] != second["PrivateKeyPlaintext"]


@pytest.mark.parametrize("op", OPERATIONS)
def test_private_key_blob_is_bound_to_the_encryption_context(kms, cmk, op):
    resp = getattr(kms, op)(KeyId=cmk, KeyPairSpec="ECC_NIST_P384", EncryptionContext=CONTEXT)
    if "PrivateKeyPlaintext" in resp:
        remember_plaintext(resp["PrivateKeyPlaintext"])
    blob = resp["PrivateKeyCiphertextBlob"]
    # Recorded from AWS: Decrypt of a data key pair's private key without its context -> InvalidCiphertextException.
    for name, kwargs in {
        "no-context": {},
        "empty-context": {"EncryptionContext": {}},
        "changed-value": {"EncryptionContext": {**CONTEXT, "tenant": "t-8"}},
        "extra-pair": {"EncryptionContext": {**CONTEXT, "extra": "x"}},
        "missing-pair": {"EncryptionContext": {"purpose": CONTEXT["purpose"]}},
        "no-context-with-key-id": {"KeyId": cmk},
    }.items():
        with expect_error("InvalidCiphertextException", name):
            kms.decrypt(CiphertextBlob=blob, **kwargs)
    pkcs8 = kms.decrypt(CiphertextBlob=blob, EncryptionContext=dict(reversed(list(CONTEXT.items()))))["Plaintext"]
    check_private_key("ECC_NIST_P384", pkcs8, resp["PublicKey"])


@pytest.mark.parametrize("op", OPERATIONS)
def test_without_encryption_context(kms, cmk, op):
    require_key_pair_spec("ECC_SECG_P256K1")
    resp = getattr(kms, op)(KeyId=cmk, KeyPairSpec="ECC_SECG_P256K1")
    if "PrivateKeyPlaintext" in resp:
        remember_plaintext(resp["PrivateKeyPlaintext"])
    pkcs8 = kms.decrypt(CiphertextBlob=resp["PrivateKeyCiphertextBlob"])["Plaintext"]
    private_key, public_key = check_private_key("ECC_SECG_P256K1", pkcs8, resp["PublicKey"])
    use_the_pair("ECC_SECG_P256K1", private_key, public_key)
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=resp["PrivateKeyCiphertextBlob"], EncryptionContext={"a": "b"})


@pytest.mark.parametrize("op", OPERATIONS)
def test_tampered_private_key_blob(kms, cmk, op):
    blob = getattr(kms, op)(KeyId=cmk, KeyPairSpec="ECC_NIST_P256", EncryptionContext=CONTEXT)["PrivateKeyCiphertextBlob"]
    for index in (0, 5, len(blob) // 2, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[index] ^= 0x01
        with expect_error("InvalidCiphertextException", f"byte {index}"):
            kms.decrypt(CiphertextBlob=bytes(tampered), EncryptionContext=CONTEXT)


@pytest.mark.parametrize("op", OPERATIONS)
def test_through_alias_and_arn(kms, cmk, op, new_alias):
    alias = new_alias(cmk)
    for ident in (alias, key_arn(cmk)):
        resp = getattr(kms, op)(KeyId=ident, KeyPairSpec="ECC_NIST_P256")
        if "PrivateKeyPlaintext" in resp:
            remember_plaintext(resp["PrivateKeyPlaintext"])
        assert resp["KeyId"] == key_arn(cmk), ident


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("op", OPERATIONS)
def test_asymmetric_or_hmac_kms_key_is_refused(kms, op, new_key):
    # GenerateDataKeyPair KeyId: "Specifies the symmetric encryption KMS key … You cannot specify an asymmetric KMS
    # key". InvalidKeyUsageException: "For … generating data keys, the KeyUsage must be ENCRYPT_DECRYPT" -- an
    # RSA ENCRYPT_DECRYPT key has the right usage but the wrong KeySpec; UNSURE: AWS documents no separate code for
    # that, and InvalidKeyUsageException is what it answers for an algorithm incompatible with the key spec.
    for name, kwargs in {
        "RSA_2048 ENCRYPT_DECRYPT": {"KeySpec": "RSA_2048", "KeyUsage": "ENCRYPT_DECRYPT"},
        "ECC_NIST_P256 SIGN_VERIFY": {"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"},
        "ECC_NIST_P256 KEY_AGREEMENT": {"KeySpec": "ECC_NIST_P256", "KeyUsage": "KEY_AGREEMENT"},
        "HMAC_256": {"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"},
    }.items():
        key_id = new_key(**kwargs)
        with expect_error("InvalidKeyUsageException", name):
            getattr(kms, op)(KeyId=key_id, KeyPairSpec="ECC_NIST_P256")


@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize(
    "spec", ["RSA_1024", "ECC_NIST_P192", "SYMMETRIC_DEFAULT", "HMAC_256", "AES_256", "rsa_2048", ""],
)
def test_invalid_key_pair_spec(kms, cmk, op, spec):
    # Not in the DataKeyPairSpec enum: ValidationException (AWS: "Value … at 'keyPairSpec' failed to satisfy
    # constraint: Member must satisfy enum value set").
    with expect_error("ValidationException"):
        getattr(kms, op)(KeyId=cmk, KeyPairSpec=spec)


@pytest.mark.parametrize("op", OPERATIONS)
def test_missing_parameters(kms, cmk, op):
    with expect_error("ValidationException", "no KeyPairSpec"):
        getattr(kms, op)(KeyId=cmk)
    with expect_error("ValidationException", "no KeyId"):
        getattr(kms, op)(KeyPairSpec="RSA_2048")


@pytest.mark.parametrize("op", OPERATIONS)
def test_unknown_disabled_and_pending_deletion_keys(kms, op, new_key):
    with expect_error("NotFoundException", "unknown key"):
        getattr(kms, op)(KeyId=str(uuid.uuid4()), KeyPairSpec="ECC_NIST_P256")
    key_id = new_key()
    kms.disable_key(KeyId=key_id)
    with expect_error("DisabledException", "disabled key"):
        getattr(kms, op)(KeyId=key_id, KeyPairSpec="ECC_NIST_P256")
    kms.enable_key(KeyId=key_id)
    resp = getattr(kms, op)(KeyId=key_id, KeyPairSpec="ECC_NIST_P256")
    if "PrivateKeyPlaintext" in resp:
        remember_plaintext(resp["PrivateKeyPlaintext"])
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    with expect_error("KMSInvalidStateException", "pending deletion"):
        getattr(kms, op)(KeyId=key_id, KeyPairSpec="ECC_NIST_P256")


@pytest.mark.parametrize("op", OPERATIONS)
def test_dry_run(kms, cmk, op):
    # Recorded from AWS: "The request would have succeeded, but the DryRun option is set."
    with expect_error("DryRunOperationException"):
        getattr(kms, op)(KeyId=cmk, KeyPairSpec="RSA_2048", DryRun=True)


def test_private_key_blob_of_a_disabled_key(kms, new_key):
    key_id = new_key()
    resp = kms.generate_data_key_pair_without_plaintext(KeyId=key_id, KeyPairSpec="RSA_2048", EncryptionContext=CONTEXT)
    kms.disable_key(KeyId=key_id)
    with expect_error("DisabledException"):
        kms.decrypt(CiphertextBlob=resp["PrivateKeyCiphertextBlob"], EncryptionContext=CONTEXT)
    kms.enable_key(KeyId=key_id)
    pkcs8 = kms.decrypt(CiphertextBlob=resp["PrivateKeyCiphertextBlob"], EncryptionContext=CONTEXT)["Plaintext"]
    check_private_key("RSA_2048", pkcs8, resp["PublicKey"])


@pytest.mark.skipif(TOKEN != "nss-softoken", reason="what NSS softoken lacks; other tokens have secp256k1")
@pytest.mark.parametrize("op", OPERATIONS)
def test_token_without_the_curve_refuses_the_spec(kms, cmk, op):
    # Config/hsm/nss-softoken.json: ecCurves leaves out secp256k1; Trent refuses it before the token is asked.
    with expect_error("UnsupportedOperationException") as excinfo:
        getattr(kms, op)(KeyId=cmk, KeyPairSpec="ECC_SECG_P256K1")
    assert "(profile 'nss-softoken') has no secp256k1 curve" in excinfo.value.response["Error"]["Message"]
