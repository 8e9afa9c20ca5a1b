"""Asymmetric KMS keys: RSA_2048/3072/4096 (ENCRYPT_DECRYPT or SIGN_VERIFY), ECC_NIST_P256/P384/P521 (SIGN_VERIFY or
KEY_AGREEMENT) and ECC_SECG_P256K1 (SIGN_VERIFY only).

Every result Trent hands out is checked by an independent implementation (`cryptography`, and OpenSSL for the
public keys): GetPublicKey's DER SubjectPublicKeyInfo is parsed outside, signatures made by Trent are verified
outside against that key, ciphertexts made outside with that key are decrypted by Trent, and DeriveSharedSecret is
compared with an ECDH computed outside with an ephemeral key.

Private keys never leave the token, so "a signature made outside" can only come from another key (must be
rejected) or be derived from a Trent signature by pure math (the ECDSA twin (r, n - s), which any ECDSA verifier
accepts); both are used.

Key generation is slow for big RSA keys on SoftHSM (up to 2 s for RSA_4096), so the `asym` fixture creates each
(spec, usage) key once per module, on first use, and operations are parametrized over algorithms.

The behaviours asserted and where they come from (AWS KMS API reference unless said otherwise) are listed in
comments at each test; "UNSURE" marks the places where AWS does not document the exact error code.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import uuid

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature

from trent_e2e import (
    ADMIN_POLICY,
    NSS_HAS_NO_SECP256K1,
    TOKEN,
    allow,
    expect_denied,
    expect_error,
    flip_bit,
    key_arn,
    make_kms,
    policy_json,
    remember_plaintext,
    require_key_pair_spec,
    token_has_key_pair_spec,
)

# --------------------------------------------------------------------------- what AWS lists per key spec

RSA_SPECS = ["RSA_2048", "RSA_3072", "RSA_4096"]
ECC_SIGN_SPECS = ["ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521", "ECC_SECG_P256K1"]
ECC_AGREEMENT_SPECS = ["ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521"]  # NIST curves only; not ECC_SECG_P256K1

RSA_BITS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}

# Order exactly as AWS returns it (DescribeKey example "RSA asymmetric KMS key" in the API reference).
RSA_SIGNING_ALGORITHMS = [
    "RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512",
    "RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
]
# CreateKey example "asymmetric RSA KMS key for encryption and decryption".
RSA_ENCRYPTION_ALGORITHMS = ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
# Key spec reference: one ECDSA algorithm per curve, the hash matching the curve size (P-521 uses SHA-512).
ECC_SIGNING_ALGORITHM = {
    "ECC_NIST_P256": "ECDSA_SHA_256",
    "ECC_NIST_P384": "ECDSA_SHA_384",
    "ECC_NIST_P521": "ECDSA_SHA_512",
    "ECC_SECG_P256K1": "ECDSA_SHA_256",
}
CURVES = {
    "ECC_NIST_P256": ec.SECP256R1,
    "ECC_NIST_P384": ec.SECP384R1,
    "ECC_NIST_P521": ec.SECP521R1,
    "ECC_SECG_P256K1": ec.SECP256K1,
}
# Group orders n, to check r and s and to build the ECDSA twin signature (r, n - s).
CURVE_ORDER = {
    "ECC_NIST_P256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ECC_NIST_P384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16),
    "ECC_NIST_P521": int(
        "6864797660130609714981900799081393217269435300143305409394463459185543183397655394245057746333217197532963"
        "996371363321113864768612440380340372808892707005449"),
    "ECC_SECG_P256K1": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
}
SHARED_SECRET_LEN = {"ECC_NIST_P256": 32, "ECC_NIST_P384": 48, "ECC_NIST_P521": 66}
OPENSSL_CURVE = {
    "ECC_NIST_P256": "prime256v1",
    "ECC_NIST_P384": "secp384r1",
    "ECC_NIST_P521": "secp521r1",
    "ECC_SECG_P256K1": "secp256k1",
}

SIGN_CASES = [(spec, alg) for spec in RSA_SPECS for alg in RSA_SIGNING_ALGORITHMS] + [
    (spec, ECC_SIGNING_ALGORITHM[spec]) for spec in ECC_SIGN_SPECS
]
ENCRYPT_CASES = [(spec, alg) for spec in RSA_SPECS for alg in RSA_ENCRYPTION_ALGORITHMS]


def expected_algorithms(spec: str, usage: str) -> dict:
    """The algorithm lists DescribeKey and GetPublicKey carry for a (spec, usage), exactly; absent lists are absent."""
    if usage == "ENCRYPT_DECRYPT":
        return {"EncryptionAlgorithms": RSA_ENCRYPTION_ALGORITHMS}
    if usage == "SIGN_VERIFY":
        return {"SigningAlgorithms": RSA_SIGNING_ALGORITHMS if spec in RSA_BITS else [ECC_SIGNING_ALGORITHM[spec]]}
    assert usage == "KEY_AGREEMENT"
    return {"KeyAgreementAlgorithms": ["ECDH"]}


ALGORITHM_LISTS = ("EncryptionAlgorithms", "SigningAlgorithms", "KeyAgreementAlgorithms", "MacAlgorithms")


# --------------------------------------------------------------------------- hashing and outside verification

def hash_of(algorithm: str) -> hashes.HashAlgorithm:
    """The hash an AWS algorithm name ends with (…_SHA_1, …_SHA_256, …_SHA_384, …_SHA_512)."""
    return {"SHA_1": hashes.SHA1, "SHA_256": hashes.SHA256, "SHA_384": hashes.SHA384, "SHA_512": hashes.SHA512}[
        algorithm[algorithm.index("SHA_"):]
    ]()


def digest(algorithm: str, message: bytes) -> bytes:
    h = hashes.Hash(hash_of(algorithm))
    h.update(message)
    return h.finalize()


def verify_outside(public_key, algorithm: str, signature: bytes, data: bytes, *, prehashed: bool = False) -> None:
    """Verifies with `cryptography` the way AWS documents each algorithm; raises InvalidSignature if it fails.

    RSASSA_PSS_*: PKCS #1 v2.2 §8.1, MGF1 with the same hash, salt as long as the digest (checked exactly).
    RSASSA_PKCS1_V1_5_*: PKCS #1 v2.2 §8.2 (DigestInfo-wrapped digest).
    ECDSA_*: FIPS 186-4 §6.4, signature DER-encoded (SEQUENCE of INTEGER r, INTEGER s).
    """
    h = hash_of(algorithm)
    algo = Prehashed(h) if prehashed else h
    if algorithm.startswith("RSASSA_PSS_"):
        public_key.verify(signature, data, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), algo)
    elif algorithm.startswith("RSASSA_PKCS1_V1_5_"):
        public_key.verify(signature, data, padding.PKCS1v15(), algo)
    else:
        assert algorithm.startswith("ECDSA_"), algorithm
        public_key.verify(signature, data, ec.ECDSA(algo))


def sign_outside(private_key, algorithm: str, message: bytes) -> bytes:
    h = hash_of(algorithm)
    if algorithm.startswith("RSASSA_PSS_"):
        return private_key.sign(message, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    if algorithm.startswith("RSASSA_PKCS1_V1_5_"):
        return private_key.sign(message, padding.PKCS1v15(), h)
    return private_key.sign(message, ec.ECDSA(h))


def oaep(algorithm: str) -> padding.OAEP:
    h = hash_of(algorithm)
    return padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None)


def oaep_max_plaintext(spec: str, algorithm: str) -> int:
    """RFC 8017 §7.1.1: k - 2 hLen - 2. AWS documents 214/190, 342/318, 470/446 bytes."""
    return RSA_BITS[spec] // 8 - 2 * hash_of(algorithm).digest_size - 2


def foreign_private_key(spec: str):
    """A key pair of the same spec made outside Trent."""
    if spec in RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS[spec])
    return ec.generate_private_key(CURVES[spec]())


def spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_public_key(spec: str, der: bytes):
    """Parses a DER SPKI with `cryptography` and checks it is the key type/size/curve of `spec`; returns the key."""
    public_key = serialization.load_der_public_key(der)
    if spec in RSA_BITS:
        assert isinstance(public_key, rsa.RSAPublicKey), type(public_key)
        assert public_key.key_size == RSA_BITS[spec]
        assert public_key.public_numbers().e == 65537
    else:
        assert isinstance(public_key, ec.EllipticCurvePublicKey), type(public_key)
        assert isinstance(public_key.curve, CURVES[spec]), public_key.curve.name
    # Canonical DER: re-encoding gives the same bytes (named curve, uncompressed point, no trailing data).
    assert spki(public_key) == der
    return public_key


def check_signature_format(spec: str, signature: bytes) -> None:
    if spec in RSA_BITS:
        assert len(signature) == RSA_BITS[spec] // 8, len(signature)
        return
    # ECDSA signatures come back DER-encoded (not r||s), in minimal DER.
    r, s = decode_dss_signature(signature)
    assert encode_dss_signature(r, s) == signature, "ECDSA signature is not minimal DER"
    n = CURVE_ORDER[spec]
    assert 0 < r < n and 0 < s < n


def der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def der_tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + der_length(len(content)) + content


def der_int(value: int) -> bytes:
    """A non-negative INTEGER in minimal DER."""
    return der_tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def assert_invalid_outside(public_key, algorithm, signature, data, prehashed=False):
    with pytest.raises(InvalidSignature):
        verify_outside(public_key, algorithm, signature, data, prehashed=prehashed)


# --------------------------------------------------------------------------- fixtures

class AsymmetricKeys:
    """One key per (spec, usage[, tag]) for the whole module, created on first use; .public(...) is cached too."""

    def __init__(self, kms):
        self.kms = kms
        self.metadata: dict[tuple, dict] = {}
        self.public_keys: dict[tuple, object] = {}

    def __call__(self, spec: str, usage: str, tag: str = "") -> str:
        return self.create(spec, usage, tag)["KeyId"]

    def create(self, spec: str, usage: str, tag: str = "") -> dict:
        require_key_pair_spec(spec)
        k = (spec, usage, tag)
        if k not in self.metadata:
            self.metadata[k] = self.kms.create_key(
                KeySpec=spec, KeyUsage=usage, Description=f"e2e asymmetric {spec} {usage} {tag}".strip()
            )["KeyMetadata"]
        return self.metadata[k]

    def public(self, spec: str, usage: str, tag: str = ""):
        k = (spec, usage, tag)
        if k not in self.public_keys:
            der = self.kms.get_public_key(KeyId=self(spec, usage, tag))["PublicKey"]
            self.public_keys[k] = check_public_key(spec, der)
        return self.public_keys[k]


@pytest.fixture(scope="module")
def asym(kms):
    return AsymmetricKeys(kms)


def sign(kms, key_id, algorithm, message, message_type=None):
    kwargs = {"KeyId": key_id, "Message": message, "SigningAlgorithm": algorithm}
    if message_type is not None:
        kwargs["MessageType"] = message_type
    return kms.sign(**kwargs)


def verify(kms, key_id, algorithm, message, signature, message_type=None):
    kwargs = {"KeyId": key_id, "Message": message, "Signature": signature, "SigningAlgorithm": algorithm}
    if message_type is not None:
        kwargs["MessageType"] = message_type
    return kms.verify(**kwargs)


# --------------------------------------------------------------------------- CreateKey / DescribeKey / GetPublicKey

KEY_KINDS = (
    [(spec, usage) for spec in RSA_SPECS for usage in ("ENCRYPT_DECRYPT", "SIGN_VERIFY")]
    + [(spec, usage) for spec in ECC_AGREEMENT_SPECS for usage in ("SIGN_VERIFY", "KEY_AGREEMENT")]
    + [("ECC_SECG_P256K1", "SIGN_VERIFY")]
)


@pytest.mark.parametrize("spec, usage", KEY_KINDS)
def test_create_describe_and_get_public_key(kms, asym, spec, usage):
    created = asym.create(spec, usage)
    key_id = created["KeyId"]
    algorithms = expected_algorithms(spec, usage)
    described = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    for md, what in ((created, "CreateKey"), (described, "DescribeKey")):
        assert md["KeyId"] == key_id and md["Arn"] == key_arn(key_id), what
        assert md["KeySpec"] == spec and md["CustomerMasterKeySpec"] == spec, what
        assert md["KeyUsage"] == usage, what
        assert md["KeyState"] == "Enabled" and md["Enabled"] is True, what
        assert md["Origin"] == "AWS_KMS" and md["KeyManager"] == "CUSTOMER" and md["MultiRegion"] is False, what
        for field in ALGORITHM_LISTS:
            assert md.get(field) == algorithms.get(field), f"{what} {field}: {md.get(field)}"

    got = kms.get_public_key(KeyId=key_id)
    assert got["KeyId"] == key_arn(key_id)
    assert got["KeySpec"] == spec and got["CustomerMasterKeySpec"] == spec and got["KeyUsage"] == usage
    for field in ("EncryptionAlgorithms", "SigningAlgorithms", "KeyAgreementAlgorithms"):
        assert got.get(field) == algorithms.get(field), f"GetPublicKey {field}: {got.get(field)}"
    check_public_key(spec, got["PublicKey"])
    # The public key is the key's, not a fresh one per call.
    assert kms.get_public_key(KeyId=key_arn(key_id))["PublicKey"] == got["PublicKey"]


@pytest.mark.parametrize("spec", ["RSA_2048", *ECC_SIGN_SPECS])
def test_public_key_parses_with_openssl(kms, asym, spec, tmp_path):
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.fail("the openssl command is not installed", pytrace=False)
    der = tmp_path / "public.der"
    der.write_bytes(kms.get_public_key(KeyId=asym(spec, "SIGN_VERIFY"))["PublicKey"])
    proc = subprocess.run([openssl, "pkey", "-pubin", "-inform", "DER", "-in", str(der), "-noout", "-text"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    if spec in RSA_BITS:
        assert f"Public-Key: ({RSA_BITS[spec]} bit)" in proc.stdout, proc.stdout
        assert "Exponent: 65537 (0x10001)" in proc.stdout, proc.stdout
    else:
        assert f"ASN1 OID: {OPENSSL_CURVE[spec]}" in proc.stdout, proc.stdout


def test_public_keys_differ_between_keys(kms, asym):
    a = kms.get_public_key(KeyId=asym("ECC_NIST_P256", "SIGN_VERIFY"))["PublicKey"]
    b = kms.get_public_key(KeyId=asym("ECC_NIST_P256", "SIGN_VERIFY", "second"))["PublicKey"]
    assert a != b


def test_create_key_with_customer_master_key_spec(kms):
    # CreateKey: "The KeySpec and CustomerMasterKeySpec parameters work the same way. Only the names differ."
    md = kms.create_key(CustomerMasterKeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    assert md["KeySpec"] == "ECC_NIST_P256" and md["CustomerMasterKeySpec"] == "ECC_NIST_P256"
    assert md["SigningAlgorithms"] == ["ECDSA_SHA_256"]


@pytest.mark.parametrize(
    "kwargs",
    [
        # CreateKey KeyUsage: RSA -> ENCRYPT_DECRYPT or SIGN_VERIFY; NIST ECC -> SIGN_VERIFY or KEY_AGREEMENT;
        # ECC_SECG_P256K1 -> SIGN_VERIFY only. AWS answers e.g. "KeyUsage KEY_AGREEMENT is not compatible with
        # KeySpec RSA_2048" (ValidationException).
        {"KeySpec": "RSA_2048", "KeyUsage": "KEY_AGREEMENT"},
        {"KeySpec": "RSA_4096", "KeyUsage": "GENERATE_VERIFY_MAC"},
        {"KeySpec": "ECC_NIST_P256", "KeyUsage": "ENCRYPT_DECRYPT"},
        {"KeySpec": "ECC_NIST_P521", "KeyUsage": "GENERATE_VERIFY_MAC"},
        {"KeySpec": "ECC_SECG_P256K1", "KeyUsage": "KEY_AGREEMENT"},
        {"KeySpec": "ECC_SECG_P256K1", "KeyUsage": "ENCRYPT_DECRYPT"},
        {"KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "KEY_AGREEMENT"},
        {"KeySpec": "HMAC_256", "KeyUsage": "SIGN_VERIFY"},
        # "KeyUsage … is optional when you are creating a symmetric encryption KMS key; otherwise, it is required."
        {"KeySpec": "RSA_2048"},
        {"KeySpec": "ECC_NIST_P256"},
        # Not in the KeySpec / KeyUsage enums.
        {"KeySpec": "RSA_1024", "KeyUsage": "SIGN_VERIFY"},
        {"KeySpec": "ECC_NIST_P192", "KeyUsage": "SIGN_VERIFY"},
        {"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN"},
    ],
    ids=lambda kw: "-".join(kw.values()),
)
def test_create_key_invalid_spec_usage(kms, kwargs):
    with expect_error("ValidationException"):
        kms.create_key(**kwargs)


def test_get_public_key_of_symmetric_and_hmac_keys(kms, new_key):
    # GetPublicKey is for asymmetric keys; AWS lists UnsupportedOperationException for it (and the suite already
    # asserts it for symmetric keys). UNSURE: AWS does not say which of UnsupportedOperationException and
    # InvalidKeyUsageException a symmetric key gets; UnsupportedOperationException is what AWS is reported to send.
    with expect_error("UnsupportedOperationException"):
        kms.get_public_key(KeyId=new_key())
    with expect_error("UnsupportedOperationException"):
        kms.get_public_key(KeyId=new_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC"))


def test_get_public_key_unknown_key(kms):
    with expect_error("NotFoundException"):
        kms.get_public_key(KeyId=str(uuid.uuid4()))


def test_get_public_key_through_alias(kms, asym, new_alias):
    key_id = asym("ECC_NIST_P384", "SIGN_VERIFY")
    alias = new_alias(key_id)
    got = kms.get_public_key(KeyId=alias)
    assert got["KeyId"] == key_arn(key_id)
    assert got["PublicKey"] == kms.get_public_key(KeyId=key_id)["PublicKey"]


# --------------------------------------------------------------------------- Sign / Verify

@pytest.mark.parametrize("spec, algorithm", SIGN_CASES)
def test_sign_raw_verified_outside_and_by_verify(kms, asym, spec, algorithm):
    key_id = asym(spec, "SIGN_VERIFY")
    public_key = asym.public(spec, "SIGN_VERIFY")
    message = b"RAW message, hashed once by the signer " + os.urandom(1000)

    # MessageType defaults to RAW.
    for message_type in (None, "RAW"):
        resp = sign(kms, key_id, algorithm, message, message_type)
        assert resp["KeyId"] == key_arn(key_id) and resp["SigningAlgorithm"] == algorithm
        signature = resp["Signature"]
        check_signature_format(spec, signature)
        verify_outside(public_key, algorithm, signature, message)  # the independent check
        verify_outside(public_key, algorithm, signature, digest(algorithm, message), prehashed=True)
        assert_invalid_outside(public_key, algorithm, signature, message + b"!")

        ok = verify(kms, key_id, algorithm, message, signature, message_type)
        assert ok["KeyId"] == key_arn(key_id) and ok["SignatureValid"] is True and ok["SigningAlgorithm"] == algorithm
        # Verify: "The message type does not need to be the same as the one used for signing" -- a message and
        # its digest are the same message.
        assert verify(kms, key_id, algorithm, digest(algorithm, message), signature, "DIGEST")["SignatureValid"] is True

        with expect_error("KMSInvalidSignatureException", "tampered message"):
            verify(kms, key_id, algorithm, message[:-1] + bytes([message[-1] ^ 1]), signature, "RAW")
        with expect_error("KMSInvalidSignatureException", "message hashed twice"):
            verify(kms, key_id, algorithm, digest(algorithm, message), signature, "RAW")


@pytest.mark.parametrize("spec, algorithm", SIGN_CASES)
def test_sign_digest_signs_the_digest_as_given(kms, asym, spec, algorithm):
    key_id = asym(spec, "SIGN_VERIFY")
    public_key = asym.public(spec, "SIGN_VERIFY")
    message = b"message hashed by the caller " + os.urandom(64)
    md = digest(algorithm, message)

    resp = sign(kms, key_id, algorithm, md, "DIGEST")
    assert resp["KeyId"] == key_arn(key_id) and resp["SigningAlgorithm"] == algorithm
    signature = resp["Signature"]
    check_signature_format(spec, signature)
    # DIGEST: "KMS skips the hashing step" -- the signature is over `md` itself, i.e. over `message`.
    verify_outside(public_key, algorithm, signature, md, prehashed=True)
    verify_outside(public_key, algorithm, signature, message)
    assert verify(kms, key_id, algorithm, md, signature, "DIGEST")["SignatureValid"] is True
    assert verify(kms, key_id, algorithm, message, signature, "RAW")["SignatureValid"] is True

    # Random bytes of the digest length are signed as given too (nothing re-hashes them).
    arbitrary = os.urandom(len(md))
    signature = sign(kms, key_id, algorithm, arbitrary, "DIGEST")["Signature"]
    verify_outside(public_key, algorithm, signature, arbitrary, prehashed=True)
    assert_invalid_outside(public_key, algorithm, signature, arbitrary)  # not sign(hash(arbitrary))


@pytest.mark.parametrize("spec, algorithm", SIGN_CASES)
def test_digest_length_is_checked(kms, asym, spec, algorithm):
    # "When the value of MessageType is DIGEST, the length of the Message value must match the length of hashed
    # messages for the specified signing algorithm." AWS: ValidationException "Digest is invalid length for
    # algorithm …".
    key_id = asym(spec, "SIGN_VERIFY")
    length = hash_of(algorithm).digest_size
    good = sign(kms, key_id, algorithm, bytes(range(length)), "DIGEST")["Signature"]
    for wrong in sorted({1, 20, 28, 32, 48, 64, length - 1, length + 1} - {length}):
        with expect_error("ValidationException", f"Sign DIGEST of {wrong} bytes"):
            sign(kms, key_id, algorithm, os.urandom(wrong), "DIGEST")
        with expect_error("ValidationException", f"Verify DIGEST of {wrong} bytes"):
            verify(kms, key_id, algorithm, os.urandom(wrong), good, "DIGEST")


@pytest.mark.parametrize("spec, algorithm", [s for s in SIGN_CASES if s[1].startswith(("RSASSA_PSS_", "ECDSA_"))])
def test_randomised_signatures_differ_and_both_verify(kms, asym, spec, algorithm):
    # PSS (random salt) and ECDSA (random k) signatures of one message differ; each verifies.
    key_id = asym(spec, "SIGN_VERIFY")
    a = sign(kms, key_id, algorithm, b"same message", "RAW")["Signature"]
    b = sign(kms, key_id, algorithm, b"same message", "RAW")["Signature"]
    assert a != b
    for signature in (a, b):
        verify_outside(asym.public(spec, "SIGN_VERIFY"), algorithm, signature, b"same message")


@pytest.mark.parametrize("spec", RSA_SPECS)
def test_pkcs1_v1_5_signatures_are_deterministic(kms, asym, spec):
    key_id = asym(spec, "SIGN_VERIFY")
    a = sign(kms, key_id, "RSASSA_PKCS1_V1_5_SHA_256", b"deterministic", "RAW")["Signature"]
    b = sign(kms, key_id, "RSASSA_PKCS1_V1_5_SHA_256", b"deterministic", "RAW")["Signature"]
    assert a == b


@pytest.mark.parametrize("spec", ["RSA_2048", "ECC_NIST_P256"])
def test_raw_message_size_limit(kms, asym, spec):
    # Sign/Verify Message: "Messages can be 0-4096 bytes. To sign a larger message, provide a message digest."
    # (The empty message is left out: AWS is reported to reject it despite "0-4096".)
    algorithm = RSA_SIGNING_ALGORITHMS[3] if spec in RSA_BITS else "ECDSA_SHA_256"
    key_id = asym(spec, "SIGN_VERIFY")
    largest = os.urandom(4096)
    signature = sign(kms, key_id, algorithm, largest, "RAW")["Signature"]
    verify_outside(asym.public(spec, "SIGN_VERIFY"), algorithm, signature, largest)
    assert verify(kms, key_id, algorithm, largest, signature, "RAW")["SignatureValid"] is True
    with expect_error("ValidationException", "Sign 4097 bytes"):
        sign(kms, key_id, algorithm, largest + b"x", "RAW")
    with expect_error("ValidationException", "Verify 4097 bytes"):
        verify(kms, key_id, algorithm, largest + b"x", signature, "RAW")
    small = sign(kms, key_id, algorithm, b"x", "RAW")["Signature"]
    verify_outside(asym.public(spec, "SIGN_VERIFY"), algorithm, small, b"x")


@pytest.mark.parametrize("spec, algorithm", SIGN_CASES)
def test_verify_rejects_signatures_from_another_key(kms, asym, spec, algorithm):
    # A signature made outside, correctly, but with a key pair that is not the KMS key's.
    key_id = asym(spec, "SIGN_VERIFY")
    message = b"signed outside by somebody else"
    foreign = foreign_private_key(spec)
    signature = sign_outside(foreign, algorithm, message)
    verify_outside(foreign.public_key(), algorithm, signature, message)  # a genuine signature ...
    with expect_error("KMSInvalidSignatureException"):  # ... just not by this key
        verify(kms, key_id, algorithm, message, signature, "RAW")
    with expect_error("KMSInvalidSignatureException"):
        verify(kms, key_id, algorithm, digest(algorithm, message), signature, "DIGEST")


@pytest.mark.parametrize("spec", ECC_SIGN_SPECS)
def test_verify_accepts_the_ecdsa_twin_made_outside(kms, asym, spec):
    # (r, n - s) is a valid ECDSA signature of the same message (FIPS 186-4 verification accepts any s in
    # [1, n-1]; AWS itself returns high and low s). It is made outside Trent, so Verify must really verify.
    algorithm = ECC_SIGNING_ALGORITHM[spec]
    key_id = asym(spec, "SIGN_VERIFY")
    message = b"malleable but valid"
    r, s = decode_dss_signature(sign(kms, key_id, algorithm, message, "RAW")["Signature"])
    twin = encode_dss_signature(r, CURVE_ORDER[spec] - s)
    verify_outside(asym.public(spec, "SIGN_VERIFY"), algorithm, twin, message)
    assert verify(kms, key_id, algorithm, message, twin, "RAW")["SignatureValid"] is True
    # Changing r or s otherwise breaks it.
    for bad in (encode_dss_signature(r, s ^ 1), encode_dss_signature(r ^ 1, s)):
        with expect_error("KMSInvalidSignatureException"):
            verify(kms, key_id, algorithm, message, bad, "RAW")


@pytest.mark.parametrize("spec", ECC_SIGN_SPECS)
def test_verify_rejects_malformed_ecdsa_signatures(kms, asym, spec):
    algorithm = ECC_SIGNING_ALGORITHM[spec]
    key_id = asym(spec, "SIGN_VERIFY")
    message = b"DER or nothing"
    der = sign(kms, key_id, algorithm, message, "RAW")["Signature"]
    r, s = decode_dss_signature(der)
    n = CURVE_ORDER[spec]
    width = (n.bit_length() + 7) // 8
    body = der_int(r) + der_int(s)
    malformed = {
        "raw-r-s": r.to_bytes(width, "big") + s.to_bytes(width, "big"),  # IEEE P1363, not DER
        "truncated": der[:-1],
        "trailing-byte": der + b"\x00",
        "set-tag": b"\x31" + der[1:],
        "length-too-long": b"\x30" + der_length(len(body) + 1) + body,
        "length-too-short": b"\x30" + der_length(len(body) - 1) + body,
        "only-r": der_tlv(0x30, der_int(r)),
        "three-integers": der_tlv(0x30, body + der_int(1)),
        "s-zero": der_tlv(0x30, der_int(r) + der_int(0)),
        "s-equals-n": der_tlv(0x30, der_int(r) + der_int(n)),
        "r-zero": der_tlv(0x30, der_int(0) + der_int(s)),
        "garbage": os.urandom(len(der)),
    }
    for name, signature in malformed.items():
        with expect_error("KMSInvalidSignatureException", name):
            verify(kms, key_id, algorithm, message, signature, "RAW")
    assert verify(kms, key_id, algorithm, message, der, "RAW")["SignatureValid"] is True


@pytest.mark.parametrize("spec", RSA_SPECS)
def test_verify_rejects_tampered_rsa_signatures(kms, asym, spec):
    key_id = asym(spec, "SIGN_VERIFY")
    message = b"RSA signature tampering"
    for algorithm in ("RSASSA_PSS_SHA_256", "RSASSA_PKCS1_V1_5_SHA_512"):
        signature = sign(kms, key_id, algorithm, message, "RAW")["Signature"]
        cases = {
            "first-byte": flip_bit(signature, 0),
            "middle": flip_bit(signature, len(signature) // 2, 3),
            "last-byte": flip_bit(signature, len(signature) - 1, 7),
            "truncated": signature[:-1],
            "extended": signature + b"\x00",
            "zeros": bytes(len(signature)),
        }
        for name, bad in cases.items():
            with expect_error("KMSInvalidSignatureException", f"{algorithm} {name}"):
                verify(kms, key_id, algorithm, message, bad, "RAW")


def test_verify_with_another_algorithm_or_key_fails(kms, asym):
    # Verify SigningAlgorithm: "If you submit a different algorithm, the signature verification fails."
    # Verify KeyId: "If you specify a different KMS key, the signature verification fails."
    key_id = asym("RSA_2048", "SIGN_VERIFY")
    message = b"one algorithm only"
    pss = sign(kms, key_id, "RSASSA_PSS_SHA_256", message, "RAW")["Signature"]
    for other in ("RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512"):
        with expect_error("KMSInvalidSignatureException", other):
            verify(kms, key_id, other, message, pss, "RAW")
    other_key = asym("RSA_2048", "SIGN_VERIFY", "second")
    with expect_error("KMSInvalidSignatureException", "other key"):
        verify(kms, other_key, "RSASSA_PSS_SHA_256", message, pss, "RAW")
    ecdsa = sign(kms, asym("ECC_NIST_P256", "SIGN_VERIFY"), "ECDSA_SHA_256", message, "RAW")["Signature"]
    with expect_error("KMSInvalidSignatureException", "other P-256 key"):
        verify(kms, asym("ECC_NIST_P256", "SIGN_VERIFY", "second"), "ECDSA_SHA_256", message, ecdsa, "RAW")


@pytest.mark.parametrize(
    "spec, algorithm",
    [
        ("RSA_2048", "ECDSA_SHA_256"),
        ("RSA_3072", "ECDSA_SHA_512"),
        ("ECC_NIST_P256", "RSASSA_PSS_SHA_256"),
        ("ECC_NIST_P256", "RSASSA_PKCS1_V1_5_SHA_256"),
        ("ECC_NIST_P256", "ECDSA_SHA_384"),
        ("ECC_NIST_P256", "ECDSA_SHA_512"),
        ("ECC_NIST_P384", "ECDSA_SHA_256"),
        ("ECC_NIST_P384", "ECDSA_SHA_512"),
        ("ECC_NIST_P521", "ECDSA_SHA_256"),
        ("ECC_NIST_P521", "ECDSA_SHA_384"),
        ("ECC_SECG_P256K1", "ECDSA_SHA_384"),
        ("ECC_SECG_P256K1", "RSASSA_PSS_SHA_256"),
    ],
)
def test_signing_algorithm_not_valid_for_spec(kms, asym, spec, algorithm):
    # InvalidKeyUsageException: "The encryption algorithm or signing algorithm specified for the operation is
    # incompatible with the type of key material in the KMS key (KeySpec)." AWS's message: "Algorithm … is
    # incompatible with key spec …".
    key_id = asym(spec, "SIGN_VERIFY")
    md = bytes(hash_of(algorithm).digest_size)
    with expect_error("InvalidKeyUsageException", "Sign RAW"):
        sign(kms, key_id, algorithm, b"message", "RAW")
    with expect_error("InvalidKeyUsageException", "Sign DIGEST"):
        sign(kms, key_id, algorithm, md, "DIGEST")
    with expect_error("InvalidKeyUsageException", "Verify"):
        verify(kms, key_id, algorithm, b"message", b"\x30\x06\x02\x01\x01\x02\x01\x01", "RAW")


def test_sign_and_verify_on_keys_of_other_usages(kms, asym, new_key):
    # InvalidKeyUsageException: "For signing and verifying messages, the KeyUsage must be SIGN_VERIFY."
    # AWS: "<arn> key usage is ENCRYPT_DECRYPT which is not valid for Sign."
    others = {
        "RSA_2048/ENCRYPT_DECRYPT": (asym("RSA_2048", "ENCRYPT_DECRYPT"), "RSASSA_PSS_SHA_256"),
        "ECC_NIST_P256/KEY_AGREEMENT": (asym("ECC_NIST_P256", "KEY_AGREEMENT"), "ECDSA_SHA_256"),
        "SYMMETRIC_DEFAULT": (new_key(), "RSASSA_PSS_SHA_256"),
        "HMAC_256": (new_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC"), "ECDSA_SHA_256"),
    }
    for name, (key_id, algorithm) in others.items():
        with expect_error("InvalidKeyUsageException", f"Sign with {name}"):
            sign(kms, key_id, algorithm, b"message", "RAW")
        with expect_error("InvalidKeyUsageException", f"Verify with {name}"):
            verify(kms, key_id, algorithm, b"message", b"\x30\x06\x02\x01\x01\x02\x01\x01", "RAW")


def test_sign_request_validation(kms, asym):
    key_id = asym("ECC_NIST_P256", "SIGN_VERIFY")
    with expect_error("ValidationException", "unknown SigningAlgorithm"):
        sign(kms, key_id, "ECDSA_SHA_1", b"message", "RAW")
    with expect_error("ValidationException", "unknown MessageType"):
        sign(kms, key_id, "ECDSA_SHA_256", b"message", "HASHED")
    with expect_error("ValidationException", "no SigningAlgorithm"):
        kms.sign(KeyId=key_id, Message=b"message", MessageType="RAW")
    with expect_error("ValidationException", "no Message"):
        kms.sign(KeyId=key_id, SigningAlgorithm="ECDSA_SHA_256")
    with expect_error("ValidationException", "Verify without Signature"):
        kms.verify(KeyId=key_id, Message=b"message", SigningAlgorithm="ECDSA_SHA_256")
    with expect_error("NotFoundException"):
        sign(kms, str(uuid.uuid4()), "ECDSA_SHA_256", b"message", "RAW")


def test_sign_through_alias_and_arn(kms, asym, new_alias):
    key_id = asym("ECC_NIST_P521", "SIGN_VERIFY")
    alias = new_alias(key_id)
    for ident in (alias, key_arn(key_id)):
        resp = sign(kms, ident, "ECDSA_SHA_512", b"by name", "RAW")
        assert resp["KeyId"] == key_arn(key_id), ident
        verify_outside(asym.public("ECC_NIST_P521", "SIGN_VERIFY"), "ECDSA_SHA_512", resp["Signature"], b"by name")
        assert verify(kms, ident, "ECDSA_SHA_512", b"by name", resp["Signature"], "RAW")["KeyId"] == key_arn(key_id)


def test_sign_dry_run(kms, asym):
    key_id = asym("ECC_NIST_P256", "SIGN_VERIFY")
    with expect_error("DryRunOperationException"):
        kms.sign(KeyId=key_id, Message=b"dry", MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256", DryRun=True)
    signature = sign(kms, key_id, "ECDSA_SHA_256", b"dry", "RAW")["Signature"]
    with expect_error("DryRunOperationException"):
        kms.verify(KeyId=key_id, Message=b"dry", MessageType="RAW", Signature=signature,
                   SigningAlgorithm="ECDSA_SHA_256", DryRun=True)


# --------------------------------------------------------------------------- Encrypt / Decrypt (RSAES_OAEP_*)

@pytest.mark.parametrize("spec, algorithm", ENCRYPT_CASES)
def test_rsa_encrypt_decrypt(kms, asym, spec, algorithm):
    key_id = asym(spec, "ENCRYPT_DECRYPT")
    public_key = asym.public(spec, "ENCRYPT_DECRYPT")
    plaintext = b"RSA OAEP " + os.urandom(40)

    enc = kms.encrypt(KeyId=key_id, Plaintext=plaintext, EncryptionAlgorithm=algorithm)
    assert enc["KeyId"] == key_arn(key_id) and enc["EncryptionAlgorithm"] == algorithm
    blob = enc["CiphertextBlob"]
    # Raw RSA ciphertext, k bytes long: "KMS cannot store metadata in ciphertext generated with asymmetric keys."
    assert len(blob) == RSA_BITS[spec] // 8 and plaintext not in blob
    assert kms.encrypt(KeyId=key_id, Plaintext=plaintext, EncryptionAlgorithm=algorithm)["CiphertextBlob"] != blob

    dec = kms.decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionAlgorithm=algorithm)
    assert dec["Plaintext"] == plaintext
    assert dec["KeyId"] == key_arn(key_id) and dec["EncryptionAlgorithm"] == algorithm

    # A ciphertext made outside with GetPublicKey's key decrypts in Trent (the independent check of OAEP).
    outside = public_key.encrypt(plaintext, oaep(algorithm))
    dec = kms.decrypt(CiphertextBlob=outside, KeyId=key_arn(key_id), EncryptionAlgorithm=algorithm)
    assert dec["Plaintext"] == plaintext and dec["EncryptionAlgorithm"] == algorithm

    # The other OAEP hash does not open it (Decrypt EncryptionAlgorithm: "If you specify a different algorithm,
    # the Decrypt operation fails"). UNSURE of the code: the ciphertext fails OAEP decoding, which AWS reports as
    # InvalidCiphertextException.
    other = "RSAES_OAEP_SHA_1" if algorithm == "RSAES_OAEP_SHA_256" else "RSAES_OAEP_SHA_256"
    for ciphertext in (blob, outside):
        with expect_error("InvalidCiphertextException", f"decrypt with {other}"):
            kms.decrypt(CiphertextBlob=ciphertext, KeyId=key_id, EncryptionAlgorithm=other)


@pytest.mark.parametrize("spec, algorithm", ENCRYPT_CASES)
def test_rsa_plaintext_size_limit(kms, asym, spec, algorithm):
    # Encrypt: RSA_2048 214/190, RSA_3072 342/318, RSA_4096 470/446 bytes (OAEP SHA-1/SHA-256). AWS answers a
    # longer plaintext with ValidationException "Algorithm … and key spec … cannot encrypt data larger than N bytes."
    key_id = asym(spec, "ENCRYPT_DECRYPT")
    limit = oaep_max_plaintext(spec, algorithm)
    assert limit == {("RSA_2048", "RSAES_OAEP_SHA_1"): 214, ("RSA_2048", "RSAES_OAEP_SHA_256"): 190,
                     ("RSA_3072", "RSAES_OAEP_SHA_1"): 342, ("RSA_3072", "RSAES_OAEP_SHA_256"): 318,
                     ("RSA_4096", "RSAES_OAEP_SHA_1"): 470, ("RSA_4096", "RSAES_OAEP_SHA_256"): 446}[(spec, algorithm)]
    largest = os.urandom(limit)
    blob = kms.encrypt(KeyId=key_id, Plaintext=largest, EncryptionAlgorithm=algorithm)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionAlgorithm=algorithm)["Plaintext"] == largest
    with expect_error("ValidationException", f"{limit + 1} bytes"):
        kms.encrypt(KeyId=key_id, Plaintext=largest + b"x", EncryptionAlgorithm=algorithm)
    with expect_error("ValidationException", "4097 bytes"):
        kms.encrypt(KeyId=key_id, Plaintext=os.urandom(4097), EncryptionAlgorithm=algorithm)
    one = kms.encrypt(KeyId=key_id, Plaintext=b"1", EncryptionAlgorithm=algorithm)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=one, KeyId=key_id, EncryptionAlgorithm=algorithm)["Plaintext"] == b"1"


@pytest.fixture(scope="module")
def rsa_ciphertext(kms, asym):
    key_id = asym("RSA_2048", "ENCRYPT_DECRYPT")
    plaintext = b"asymmetric ciphertext for error cases"
    remember_plaintext(plaintext)
    while True:
        blob = kms.encrypt(KeyId=key_id, Plaintext=plaintext, EncryptionAlgorithm="RSAES_OAEP_SHA_256")["CiphertextBlob"]
        # Trent's symmetric blobs start with version byte 1 and the key id: keep the RSA ciphertext from looking
        # like one by chance (1 in ~200), so the "read as a symmetric blob" cases below are deterministic.
        if blob[0] != 1:
            return key_id, blob, plaintext


def test_rsa_encrypt_requires_an_rsa_algorithm(kms, asym):
    # Encrypt: "If you specify an asymmetric KMS key, you must also specify the encryption algorithm." Leaving it
    # out means SYMMETRIC_DEFAULT; AWS answers InvalidKeyUsageException "Algorithm SYMMETRIC_DEFAULT is
    # incompatible with key spec RSA_…".
    key_id = asym("RSA_2048", "ENCRYPT_DECRYPT")
    with expect_error("InvalidKeyUsageException", "no EncryptionAlgorithm"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    with expect_error("InvalidKeyUsageException", "SYMMETRIC_DEFAULT"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionAlgorithm="SYMMETRIC_DEFAULT")
    with expect_error("ValidationException", "unknown algorithm"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionAlgorithm="RSAES_PKCS1_V1_5")


def test_rsa_decrypt_requires_key_id_and_algorithm(kms, rsa_ciphertext):
    key_id, blob, plaintext = rsa_ciphertext
    # Decrypt KeyId/EncryptionAlgorithm are "required only when the ciphertext was encrypted under an asymmetric
    # KMS key". AWS documents no error code for leaving them out. UNSURE, chosen: without them KMS reads the blob
    # as a symmetric ciphertext (SYMMETRIC_DEFAULT), which it is not -> InvalidCiphertextException (what AWS users
    # report for an RSA ciphertext sent without KeyId/EncryptionAlgorithm). With KeyId but no algorithm the same
    # reading happens first (AWS answers IncorrectKeyException, not InvalidKeyUsageException, for a symmetric blob
    # with an HMAC KeyId, so the blob is read before the key's usage is checked).
    with expect_error("InvalidCiphertextException", "no KeyId, no algorithm"):
        kms.decrypt(CiphertextBlob=blob)
    with expect_error("InvalidCiphertextException", "no algorithm"):
        kms.decrypt(CiphertextBlob=blob, KeyId=key_id)
    with expect_error("InvalidCiphertextException", "SYMMETRIC_DEFAULT"):
        kms.decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionAlgorithm="SYMMETRIC_DEFAULT")
    # With an RSA algorithm but no KeyId there is no key to use: AWS requires the KeyId. UNSURE of the code;
    # ValidationException (a required parameter missing for this kind of ciphertext).
    with expect_error("ValidationException", "RSA algorithm, no KeyId"):
        kms.decrypt(CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert kms.decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionAlgorithm="RSAES_OAEP_SHA_256")["Plaintext"] == plaintext


def test_rsa_encryption_context_is_rejected(kms, rsa_ciphertext):
    # Encrypt/Decrypt EncryptionContext: "The standard asymmetric encryption algorithms … do not support an
    # encryption context." AWS: ValidationException "EncryptionContext is not supported when encrypting/decrypting
    # with asymmetric CMKs."
    key_id, blob, _ = rsa_ciphertext
    with expect_error("ValidationException", "Encrypt"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256", EncryptionContext={"a": "b"})
    with expect_error("ValidationException", "Decrypt"):
        kms.decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionAlgorithm="RSAES_OAEP_SHA_256",
                    EncryptionContext={"a": "b"})


def test_rsa_tampered_ciphertext(kms, rsa_ciphertext):
    key_id, blob, plaintext = rsa_ciphertext
    cases = {
        "first-byte": flip_bit(blob, 0),
        "middle": flip_bit(blob, len(blob) // 2, 5),
        "last-byte": flip_bit(blob, len(blob) - 1, 7),
        "truncated": blob[:-1],
        "extended": blob + b"\x00",
        "zeros": bytes(len(blob)),
        "random": os.urandom(len(blob)),
    }
    for name, bad in cases.items():
        with expect_error("InvalidCiphertextException", name):
            kms.decrypt(CiphertextBlob=bad, KeyId=key_id, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert kms.decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionAlgorithm="RSAES_OAEP_SHA_256")["Plaintext"] == plaintext


def test_rsa_ciphertext_for_another_key(kms, asym, rsa_ciphertext):
    key_id, blob, _ = rsa_ciphertext
    # Made outside for a foreign key of the same size: OAEP decoding fails under the KMS key.
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    alien = foreign.public_key().encrypt(b"not for you", oaep("RSAES_OAEP_SHA_256"))
    with expect_error("InvalidCiphertextException", "foreign ciphertext"):
        kms.decrypt(CiphertextBlob=alien, KeyId=key_id, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    # A 2048-bit ciphertext given to a 3072-bit key.
    with expect_error("InvalidCiphertextException", "RSA_3072 key"):
        kms.decrypt(CiphertextBlob=blob, KeyId=asym("RSA_3072", "ENCRYPT_DECRYPT"), EncryptionAlgorithm="RSAES_OAEP_SHA_256")


def test_encrypt_decrypt_on_keys_of_other_usages(kms, asym):
    # InvalidKeyUsageException: "For encrypting, decrypting, re-encrypting, and generating data keys, the KeyUsage
    # must be ENCRYPT_DECRYPT." AWS: "<arn> key usage is SIGN_VERIFY which is not valid for Encrypt."
    for spec, usage in (("RSA_2048", "SIGN_VERIFY"), ("ECC_NIST_P256", "SIGN_VERIFY"),
                        ("ECC_NIST_P256", "KEY_AGREEMENT"), ("ECC_SECG_P256K1", "SIGN_VERIFY")):
        if not token_has_key_pair_spec(spec):
            continue  # NSS softoken: no secp256k1 (test_token_without_the_curve_refuses_secp256k1_keys)
        key_id = asym(spec, usage)
        for algorithm in ("RSAES_OAEP_SHA_256", None):
            kwargs = {"EncryptionAlgorithm": algorithm} if algorithm else {}
            with expect_error("InvalidKeyUsageException", f"Encrypt with {spec}/{usage} {algorithm}"):
                kms.encrypt(KeyId=key_id, Plaintext=b"x", **kwargs)
        # Only with an RSA algorithm: with SYMMETRIC_DEFAULT, AWS reads the blob before the key's usage (it answers
        # IncorrectKeyException for a symmetric blob and an HMAC KeyId), so that case says nothing about usage.
        with expect_error("InvalidKeyUsageException", f"Decrypt with {spec}/{usage}"):
            kms.decrypt(CiphertextBlob=os.urandom(256), KeyId=key_id, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    # Symmetric data keys come from symmetric encryption keys only ("specify the symmetric encryption KMS key").
    # UNSURE of the code for an RSA ENCRYPT_DECRYPT key (right usage, wrong spec); InvalidKeyUsageException is
    # what AWS answers for an algorithm incompatible with the key spec.
    with expect_error("InvalidKeyUsageException", "GenerateDataKey with an RSA key"):
        kms.generate_data_key(KeyId=asym("RSA_2048", "ENCRYPT_DECRYPT"), KeySpec="AES_256")


def test_rsa_encrypt_dry_run(kms, rsa_ciphertext):
    key_id, blob, _ = rsa_ciphertext
    with expect_error("DryRunOperationException"):
        kms.encrypt(KeyId=key_id, Plaintext=b"dry", EncryptionAlgorithm="RSAES_OAEP_SHA_256", DryRun=True)
    with expect_error("DryRunOperationException"):
        kms.decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionAlgorithm="RSAES_OAEP_SHA_256", DryRun=True)


# --------------------------------------------------------------------------- DeriveSharedSecret (ECDH)

@pytest.mark.parametrize("spec", ECC_AGREEMENT_SPECS)
def test_derive_shared_secret_matches_ecdh_outside(kms, asym, spec):
    key_id = asym(spec, "KEY_AGREEMENT")
    kms_public = asym.public(spec, "KEY_AGREEMENT")
    ephemeral = ec.generate_private_key(CURVES[spec]())
    resp = kms.derive_shared_secret(KeyId=key_id, KeyAgreementAlgorithm="ECDH", PublicKey=spki(ephemeral.public_key()))
    secret = resp["SharedSecret"]
    remember_plaintext(secret)
    # The raw ECDH shared secret (x coordinate, field-size bytes), as `cryptography` computes it.
    assert secret == ephemeral.exchange(ec.ECDH(), kms_public)
    assert len(secret) == SHARED_SECRET_LEN[spec]
    # UNSURE: AWS's DeriveSharedSecret examples show the key ARN, as every other operation returns.
    assert resp["KeyId"] == key_arn(key_id)
    assert resp["KeyAgreementAlgorithm"] == "ECDH" and resp["KeyOrigin"] == "AWS_KMS"
    # Another peer key, another secret.
    other = ec.generate_private_key(CURVES[spec]())
    second = kms.derive_shared_secret(KeyId=key_id, KeyAgreementAlgorithm="ECDH", PublicKey=spki(other.public_key()))
    remember_plaintext(second["SharedSecret"])
    assert second["SharedSecret"] == other.exchange(ec.ECDH(), kms_public) != secret


def test_derive_shared_secret_between_two_kms_keys(kms, asym):
    alice, bob = asym("ECC_NIST_P256", "KEY_AGREEMENT"), asym("ECC_NIST_P256", "KEY_AGREEMENT", "bob")
    alice_pub = kms.get_public_key(KeyId=alice)["PublicKey"]
    bob_pub = kms.get_public_key(KeyId=bob)["PublicKey"]
    a = kms.derive_shared_secret(KeyId=alice, KeyAgreementAlgorithm="ECDH", PublicKey=bob_pub)["SharedSecret"]
    b = kms.derive_shared_secret(KeyId=bob, KeyAgreementAlgorithm="ECDH", PublicKey=alice_pub)["SharedSecret"]
    remember_plaintext(a)
    assert a == b and len(a) == 32


@pytest.mark.parametrize("spec", ECC_AGREEMENT_SPECS)
def test_derive_shared_secret_with_a_key_on_another_curve(kms, asym, spec):
    # DeriveSharedSecret: "both key pairs must be on the same elliptic curve". AWS answers a public key it cannot
    # use with ValidationException; UNSURE whether a well-formed key on another curve gets the same code.
    key_id = asym(spec, "KEY_AGREEMENT")
    for other in ECC_SIGN_SPECS:
        if other == spec:
            continue
        peer = ec.generate_private_key(CURVES[other]()).public_key()
        with expect_error("ValidationException", f"{other} public key"):
            kms.derive_shared_secret(KeyId=key_id, KeyAgreementAlgorithm="ECDH", PublicKey=spki(peer))


def test_derive_shared_secret_invalid_public_keys(kms, asym):
    key_id = asym("ECC_NIST_P256", "KEY_AGREEMENT")
    good = spki(ec.generate_private_key(ec.SECP256R1()).public_key())
    rsa_public = spki(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
    # The point (x, y+1) is not on the curve; the SPKI is otherwise well formed.
    off_curve = good[:-1] + bytes([good[-1] ^ 1])
    cases = {
        "garbage": b"InvalidPublicKey",  # ValidationException in an AWS-recorded response
        "truncated": good[:-1],
        "trailing-byte": good + b"\x00",
        "off-curve-point": off_curve,
        "rsa-key": rsa_public,
        "raw-point": good[-65:],  # the bare uncompressed point, not an SPKI
    }
    for name, public_key in cases.items():
        with expect_error("ValidationException", name):
            kms.derive_shared_secret(KeyId=key_id, KeyAgreementAlgorithm="ECDH", PublicKey=public_key)


def test_derive_shared_secret_on_keys_of_other_usages(kms, asym, new_key):
    # AWS: "<arn> key usage is SIGN_VERIFY which is not valid for DeriveSharedSecret." (InvalidKeyUsageException),
    # the same for a symmetric ENCRYPT_DECRYPT key.
    peer = spki(ec.generate_private_key(ec.SECP256R1()).public_key())
    for name, key_id in (("P-256 SIGN_VERIFY", asym("ECC_NIST_P256", "SIGN_VERIFY")),
                         ("RSA_2048 ENCRYPT_DECRYPT", asym("RSA_2048", "ENCRYPT_DECRYPT")),
                         ("SYMMETRIC_DEFAULT", new_key())):
        with expect_error("InvalidKeyUsageException", name):
            kms.derive_shared_secret(KeyId=key_id, KeyAgreementAlgorithm="ECDH", PublicKey=peer)
    # And a KEY_AGREEMENT key neither signs (above) nor encrypts.
    with expect_error("InvalidKeyUsageException", "Encrypt with KEY_AGREEMENT key"):
        kms.encrypt(KeyId=asym("ECC_NIST_P256", "KEY_AGREEMENT"), Plaintext=b"x")


def test_derive_shared_secret_request_validation(kms, asym):
    key_id = asym("ECC_NIST_P256", "KEY_AGREEMENT")
    peer = spki(ec.generate_private_key(ec.SECP256R1()).public_key())
    # "The only valid value is ECDH" -- AWS: "Value 'INVALID' at 'keyAgreementAlgorithm' failed to satisfy constraint".
    with expect_error("ValidationException", "unknown algorithm"):
        kms.derive_shared_secret(KeyId=key_id, KeyAgreementAlgorithm="ECDHE", PublicKey=peer)
    with expect_error("ValidationException", "no algorithm"):
        kms.derive_shared_secret(KeyId=key_id, PublicKey=peer)
    with expect_error("ValidationException", "no public key"):
        kms.derive_shared_secret(KeyId=key_id, KeyAgreementAlgorithm="ECDH")
    with expect_error("NotFoundException"):
        kms.derive_shared_secret(KeyId=str(uuid.uuid4()), KeyAgreementAlgorithm="ECDH", PublicKey=peer)
    with expect_error("DryRunOperationException"):
        kms.derive_shared_secret(KeyId=key_id, KeyAgreementAlgorithm="ECDH", PublicKey=peer, DryRun=True)


# --------------------------------------------------------------------------- key states, rotation, restart

def test_asymmetric_keys_follow_key_states(kms):
    sign_key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    agree_key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
    peer = spki(ec.generate_private_key(ec.SECP256R1()).public_key())
    signature = sign(kms, sign_key, "ECDSA_SHA_256", b"state", "RAW")["Signature"]
    for key_id in (sign_key, agree_key):
        kms.disable_key(KeyId=key_id)
    with expect_error("DisabledException", "Sign"):
        sign(kms, sign_key, "ECDSA_SHA_256", b"state", "RAW")
    with expect_error("DisabledException", "Verify"):
        verify(kms, sign_key, "ECDSA_SHA_256", b"state", signature, "RAW")
    with expect_error("DisabledException", "GetPublicKey"):
        kms.get_public_key(KeyId=sign_key)
    with expect_error("DisabledException", "DeriveSharedSecret"):
        kms.derive_shared_secret(KeyId=agree_key, KeyAgreementAlgorithm="ECDH", PublicKey=peer)
    for key_id in (sign_key, agree_key):
        kms.enable_key(KeyId=key_id)
    assert verify(kms, sign_key, "ECDSA_SHA_256", b"state", signature, "RAW")["SignatureValid"] is True

    kms.schedule_key_deletion(KeyId=sign_key, PendingWindowInDays=7)
    with expect_error("KMSInvalidStateException", "Sign pending deletion"):
        sign(kms, sign_key, "ECDSA_SHA_256", b"state", "RAW")
    with expect_error("KMSInvalidStateException", "GetPublicKey pending deletion"):
        kms.get_public_key(KeyId=sign_key)


def test_rsa_encryption_key_disabled(kms, asym):
    key_id = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"disabled", EncryptionAlgorithm="RSAES_OAEP_SHA_1")["CiphertextBlob"]
    kms.disable_key(KeyId=key_id)
    with expect_error("DisabledException", "Encrypt"):
        kms.encrypt(KeyId=key_id, Plaintext=b"disabled", EncryptionAlgorithm="RSAES_OAEP_SHA_1")
    with expect_error("DisabledException", "Decrypt"):
        kms.decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionAlgorithm="RSAES_OAEP_SHA_1")
    kms.enable_key(KeyId=key_id)
    assert kms.decrypt(CiphertextBlob=blob, KeyId=key_id, EncryptionAlgorithm="RSAES_OAEP_SHA_1")["Plaintext"] == b"disabled"


def test_asymmetric_keys_cannot_rotate(kms, asym):
    # Automatic and on-demand rotation are for symmetric encryption keys only (UnsupportedOperationException,
    # also recorded from AWS for RotateKeyOnDemand on an asymmetric key).
    for spec, usage in (("ECC_NIST_P256", "SIGN_VERIFY"), ("RSA_2048", "ENCRYPT_DECRYPT")):
        key_id = asym(spec, usage)
        with expect_error("UnsupportedOperationException", f"EnableKeyRotation {spec}"):
            kms.enable_key_rotation(KeyId=key_id)
        with expect_error("UnsupportedOperationException", f"RotateKeyOnDemand {spec}"):
            kms.rotate_key_on_demand(KeyId=key_id)


def test_asymmetric_keys_survive_a_restart(make_server):
    server = make_server()
    kms = make_kms(server)
    sign_key = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    rsa_key = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    agree_key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
    before = {k: kms.get_public_key(KeyId=k)["PublicKey"] for k in (sign_key, rsa_key, agree_key)}
    signature = sign(kms, sign_key, "ECDSA_SHA_384", b"durable", "RAW")["Signature"]
    blob = kms.encrypt(KeyId=rsa_key, Plaintext=b"durable", EncryptionAlgorithm="RSAES_OAEP_SHA_256")["CiphertextBlob"]
    peer = ec.generate_private_key(ec.SECP256R1())

    server.restart()
    kms = make_kms(server)
    assert {k: kms.get_public_key(KeyId=k)["PublicKey"] for k in before} == before
    assert verify(kms, sign_key, "ECDSA_SHA_384", b"durable", signature, "RAW")["SignatureValid"] is True
    fresh = sign(kms, sign_key, "ECDSA_SHA_384", b"after restart", "RAW")["Signature"]
    verify_outside(check_public_key("ECC_NIST_P384", before[sign_key]), "ECDSA_SHA_384", fresh, b"after restart")
    dec = kms.decrypt(CiphertextBlob=blob, KeyId=rsa_key, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert dec["Plaintext"] == b"durable"
    secret = kms.derive_shared_secret(KeyId=agree_key, KeyAgreementAlgorithm="ECDH",
                                      PublicKey=spki(peer.public_key()))["SharedSecret"]
    remember_plaintext(secret)
    assert secret == peer.exchange(ec.ECDH(), check_public_key("ECC_NIST_P256", before[agree_key]))


# --------------------------------------------------------------------------- authorization

def test_each_asymmetric_operation_is_its_own_action(ids):
    # kms:Sign, kms:Verify, kms:GetPublicKey, kms:DeriveSharedSecret, kms:GenerateDataKeyPair and
    # kms:GenerateDataKeyPairWithoutPlaintext are separate permissions ("Required permissions" of each operation).
    acct = ids.account("asymmetric")
    admin = ids.user(acct, "asym-admin", ADMIN_POLICY)
    sign_key = admin.kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    agree_key = admin.kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["Arn"]
    symmetric = admin.kms.create_key()["KeyMetadata"]["Arn"]
    verifier = ids.user(acct, "asym-verifier", policy_json(allow(["kms:Verify", "kms:GetPublicKey"])))
    signature = admin.kms.sign(KeyId=sign_key, Message=b"authz", MessageType="RAW",
                               SigningAlgorithm="ECDSA_SHA_256")["Signature"]

    out = verifier.kms.verify(KeyId=sign_key, Message=b"authz", MessageType="RAW", Signature=signature,
                              SigningAlgorithm="ECDSA_SHA_256")
    assert out["SignatureValid"] is True and out["KeyId"] == sign_key
    verify_outside(check_public_key("ECC_NIST_P256", verifier.kms.get_public_key(KeyId=sign_key)["PublicKey"]),
                   "ECDSA_SHA_256", signature, b"authz")
    peer = spki(ec.generate_private_key(ec.SECP256R1()).public_key())
    with expect_denied(verifier.arn, "kms:Sign", sign_key, "no-identity"):
        verifier.kms.sign(KeyId=sign_key, Message=b"authz", MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")
    with expect_denied(verifier.arn, "kms:DeriveSharedSecret", agree_key, "no-identity"):
        verifier.kms.derive_shared_secret(KeyId=agree_key, KeyAgreementAlgorithm="ECDH", PublicKey=peer)
    with expect_denied(verifier.arn, "kms:GenerateDataKeyPair", symmetric, "no-identity"):
        verifier.kms.generate_data_key_pair(KeyId=symmetric, KeyPairSpec="ECC_NIST_P256")
    with expect_denied(verifier.arn, "kms:GenerateDataKeyPairWithoutPlaintext", symmetric, "no-identity"):
        verifier.kms.generate_data_key_pair_without_plaintext(KeyId=symmetric, KeyPairSpec="ECC_NIST_P256")

    signer = ids.user(acct, "asym-signer", policy_json(allow("kms:Sign")))
    signed = signer.kms.sign(KeyId=sign_key, Message=b"authz", MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")
    verify_outside(check_public_key("ECC_NIST_P256", admin.kms.get_public_key(KeyId=sign_key)["PublicKey"]),
                   "ECDSA_SHA_256", signed["Signature"], b"authz")
    with expect_denied(signer.arn, "kms:Verify", sign_key, "no-identity"):
        signer.kms.verify(KeyId=sign_key, Message=b"authz", MessageType="RAW", Signature=signature,
                          SigningAlgorithm="ECDSA_SHA_256")
    with expect_denied(signer.arn, "kms:GetPublicKey", sign_key, "no-identity"):
        signer.kms.get_public_key(KeyId=sign_key)

    agreer = ids.user(acct, "asym-agreer", policy_json(allow(["kms:DeriveSharedSecret", "kms:GenerateDataKeyPair"])))
    secret = agreer.kms.derive_shared_secret(KeyId=agree_key, KeyAgreementAlgorithm="ECDH", PublicKey=peer)
    remember_plaintext(secret["SharedSecret"])
    pair = agreer.kms.generate_data_key_pair(KeyId=symmetric, KeyPairSpec="ECC_NIST_P256")
    remember_plaintext(pair["PrivateKeyPlaintext"])
    assert pair["KeyId"] == symmetric
    with expect_denied(agreer.arn, "kms:GenerateDataKeyPairWithoutPlaintext", symmetric, "no-identity"):
        agreer.kms.generate_data_key_pair_without_plaintext(KeyId=symmetric, KeyPairSpec="ECC_NIST_P256")


# --------------------------------------------------------------------------- AWS CLI

def test_cli_sign_get_public_key_and_verify_with_openssl(aws_cli, tmp_path):
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.fail("the openssl command is not installed", pytrace=False)
    rc, out, err = aws_cli("create-key", "--key-spec", "ECC_NIST_P256", "--key-usage", "SIGN_VERIFY",
                           "--description", "asymmetric key created by the AWS CLI")
    assert rc == 0, err
    md = out["KeyMetadata"]
    key_id = md["KeyId"]
    assert md["KeySpec"] == "ECC_NIST_P256" and md["SigningAlgorithms"] == ["ECDSA_SHA_256"]

    message = tmp_path / "message.bin"
    message.write_bytes(b"signed through the AWS CLI\n" + os.urandom(32))
    rc, out, err = aws_cli("sign", "--key-id", key_id, "--message", f"fileb://{message}",
                           "--message-type", "RAW", "--signing-algorithm", "ECDSA_SHA_256")
    assert rc == 0, err
    assert out["KeyId"] == key_arn(key_id) and out["SigningAlgorithm"] == "ECDSA_SHA_256"
    signature = base64.b64decode(out["Signature"], validate=True)
    check_signature_format("ECC_NIST_P256", signature)

    rc, out, err = aws_cli("get-public-key", "--key-id", key_id)
    assert rc == 0, err
    assert out["KeyId"] == key_arn(key_id) and out["KeyUsage"] == "SIGN_VERIFY"
    assert out["SigningAlgorithms"] == ["ECDSA_SHA_256"]
    der = base64.b64decode(out["PublicKey"], validate=True)
    verify_outside(check_public_key("ECC_NIST_P256", der), "ECDSA_SHA_256", signature, message.read_bytes())

    # OpenSSL, a second independent verifier: DER SPKI -> PEM, then `openssl dgst -sha256 -verify`.
    (tmp_path / "public.der").write_bytes(der)
    (tmp_path / "signature.der").write_bytes(signature)
    proc = subprocess.run([openssl, "pkey", "-pubin", "-inform", "DER", "-in", str(tmp_path / "public.der"),
                           "-out", str(tmp_path / "public.pem")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([openssl, "dgst", "-sha256", "-verify", str(tmp_path / "public.pem"),
                           "-signature", str(tmp_path / "signature.der"), str(message)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "Verified OK" in proc.stdout, proc.stdout + proc.stderr

    # The CLI's own verify, with the digest this time.
    md_file = tmp_path / "digest.bin"
    md_file.write_bytes(hashlib.sha256(message.read_bytes()).digest())
    sig_file = tmp_path / "signature.der"
    rc, out, err = aws_cli("verify", "--key-id", key_id, "--message", f"fileb://{md_file}", "--message-type", "DIGEST",
                           "--signature", f"fileb://{sig_file}", "--signing-algorithm", "ECDSA_SHA_256")
    assert rc == 0, err
    assert out["SignatureValid"] is True and out["KeyId"] == key_arn(key_id)


@pytest.mark.skipif(TOKEN != "nss-softoken", reason="what NSS softoken's profile refuses; other tokens have secp256k1")
def test_token_without_the_curve_refuses_secp256k1_keys(kms):
    # Config/hsm/nss-softoken.json: ecCurves has no secp256k1 (C_GenerateKeyPair: CKR_DOMAIN_PARAMETERS_INVALID). The
    # refusal names the profile and the curve; no key is left behind. The NIST curves work there (the other tests).
    before = {k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]}
    with expect_error("UnsupportedOperationException", NSS_HAS_NO_SECP256K1) as excinfo:
        kms.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")
    assert "(profile 'nss-softoken') has no secp256k1 curve" in excinfo.value.response["Error"]["Message"]
    assert {k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]} == before


def test_re_encrypt_between_symmetric_and_rsa_keys(kms, asym):
    # ReEncrypt: "SourceKeyId ... required when the ciphertext was encrypted under an asymmetric KMS key", and the
    # Source/DestinationEncryptionAlgorithm name the RSA algorithm on that side.
    rsa = asym("RSA_2048", "ENCRYPT_DECRYPT")
    sym = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=sym, Plaintext=b"move me", EncryptionContext={"a": "b"})["CiphertextBlob"]
    to_rsa = kms.re_encrypt(
        CiphertextBlob=blob, SourceEncryptionContext={"a": "b"}, DestinationKeyId=rsa,
        DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert (to_rsa["SourceEncryptionAlgorithm"], to_rsa["DestinationEncryptionAlgorithm"]) == ("SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_256")
    assert to_rsa["KeyId"] == key_arn(rsa) and len(to_rsa["CiphertextBlob"]) == 256
    # The RSA ciphertext is plain RSAES-OAEP: the public key's owner could have made it; the private key opens it.
    assert kms.decrypt(CiphertextBlob=to_rsa["CiphertextBlob"], KeyId=rsa, EncryptionAlgorithm="RSAES_OAEP_SHA_256")["Plaintext"] == b"move me"
    back = kms.re_encrypt(
        CiphertextBlob=to_rsa["CiphertextBlob"], SourceKeyId=rsa, SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256", DestinationKeyId=sym)
    assert back["SourceKeyId"] == key_arn(rsa) and back["SourceEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    assert kms.decrypt(CiphertextBlob=back["CiphertextBlob"])["Plaintext"] == b"move me"
    with expect_error("ValidationException", "RSA source without SourceKeyId"):
        kms.re_encrypt(CiphertextBlob=to_rsa["CiphertextBlob"], SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256", DestinationKeyId=sym)
    with expect_error("ValidationException", "encryption context with an RSA destination"):
        kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"a": "b"}, DestinationKeyId=rsa,
                       DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_1", DestinationEncryptionContext={"x": "y"})


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"])
def test_rsa_ciphertext_not_below_the_modulus(kms, asym, algorithm):
    # A ciphertext of the right length but not below the modulus (here all 0xFF) is no RSA ciphertext at all; the
    # token refuses the raw operation, and the answer is still InvalidCiphertextException, never an internal error.
    key_id = asym("RSA_2048", "ENCRYPT_DECRYPT")
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(KeyId=key_id, CiphertextBlob=b"\xff" * 256, EncryptionAlgorithm=algorithm)
