#!/usr/bin/env python3
"""Writes the fuzz dictionaries and the seeds drawn from real clients and libraries.

    .venv/bin/python Tests/Fuzz/tools/make_seeds.py          # from the package root (make test-deps makes .venv)

- Tests/Fuzz/dict/<target>.dict: libFuzzer dictionaries: member names, enum values and operation names from the
  botocore model of KMS (2014-11-01), JSON and SigV4 tokens, policy elements, condition operators and keys, DER tags.
- Tests/Fuzz/corpus/<target>/bc-*: request bodies as botocore serialises them (every operation, filled from its
  input shape, and the documented examples), those requests signed with botocore's SigV4, and keys, signatures
  and OAEP blocks made with the cryptography package.

The hand-made seeds (hand-*) and the ones TrentFuzz generates (gen-*, `TrentFuzz --generate-seeds`) are kept
apart; this script rewrites only dictionaries and bc-* files.
"""
import base64
import glob
import gzip
import hashlib
import json
import os
import struct

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.model
import botocore.serialize
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DATA = glob.glob(os.path.join(ROOT, "../../.venv/lib/python3*/site-packages/botocore/data/kms/2014-11-01"))[0]
MODEL = json.load(gzip.open(os.path.join(DATA, "service-2.json.gz")))
EXAMPLES = json.load(open(os.path.join(DATA, "examples-1.json")))["examples"]
SERVICE = botocore.model.ServiceModel(MODEL, service_name="kms")
SERIALIZER = botocore.serialize.create_serializer("json", include_validation=False)


def save(target, name, data):
    directory = os.path.join(ROOT, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def clean(target):
    directory = os.path.join(ROOT, "corpus", target)
    for path in glob.glob(os.path.join(directory, "bc-*")):
        os.remove(path)


def dictionary(target, entries):
    os.makedirs(os.path.join(ROOT, "dict"), exist_ok=True)
    seen, lines = set(), [f"# libFuzzer dictionary for the {target} target; written by Tests/Fuzz/tools/make_seeds.py"]
    for entry in entries:
        data = entry.encode() if isinstance(entry, str) else entry
        if not data or data in seen or len(data) > 128:
            continue
        seen.add(data)
        escaped = "".join(chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else "\\x%02X" % b for b in data)
        lines.append(f'kw{len(seen)}="{escaped}"')
    with open(os.path.join(ROOT, "dict", f"{target}.dict"), "w") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------------- the model

def members_and_enums():
    names, enums = set(), set()
    for shape in MODEL["shapes"].values():
        names.update(shape.get("members", {}).keys())
        enums.update(shape.get("enum", []))
    return sorted(names), sorted(enums)


def sample(shape, name="", depth=0):
    """A value for every member of `shape`, of the right type."""
    kind = shape.type_name
    if kind == "structure":
        return {n: sample(s, n, depth + 1) for n, s in shape.members.items() if depth < 4}
    if kind == "list":
        return [sample(shape.member, name, depth + 1)]
    if kind == "map":
        return {"purpose": sample(shape.value, name, depth + 1)}
    if kind == "string":
        if shape.enum:
            return shape.enum[0]
        if "Policy" in name:
            return json.dumps(DEFAULT_POLICY)
        if "Alias" in name:
            return "alias/demo"
        if "KeyId" in name or name in ("TargetKeyId", "DestinationKeyId", "SourceKeyId"):
            return "1234abcd-12ab-34cd-56ef-1234567890ab"
        if "Principal" in name:
            return "arn:aws:iam::111122223333:role/ExampleRole"
        return "example".ljust(shape.metadata.get("min", 0), "x")
    if kind == "blob":
        return b"\x01\x02\x03 attack at dawn"
    if kind == "integer" or kind == "long":
        return 32
    if kind == "boolean":
        return False
    if kind == "timestamp":
        return 1795448546
    return None


def serialized(operation, params):
    op = SERVICE.operation_model(operation)
    request = SERIALIZER.serialize_to_request(params, op)
    return op, request


def fill_binary(value):
    if isinstance(value, dict):
        return {k: fill_binary(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_binary(v) for v in value]
    if value == "<binary data>":
        return b"\x01\x02\x03 binary"
    return value


DEFAULT_POLICY = {
    "Version": "2012-10-17",
    "Id": "key-default-1",
    "Statement": [{
        "Sid": "Enable IAM User Permissions",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
        "Action": "kms:*",
        "Resource": "*",
    }],
}


def operation_bodies():
    bodies = []
    for operation in SERVICE.operation_names:
        op = SERVICE.operation_model(operation)
        if op.input_shape is None:
            continue
        _, request = serialized(operation, sample(op.input_shape))
        bodies.append((operation, "full", request))
        for index, example in enumerate(EXAMPLES.get(operation, [])[:2]):
            try:
                _, request = serialized(operation, fill_binary(example.get("input", {})))
            except Exception:
                continue
            bodies.append((operation, f"example{index + 1}", request))
    return bodies


# ---------------------------------------------------------------------------------------------------- SigV4

CREDENTIALS = botocore.credentials.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def signed(operation, request, region="us-east-1"):
    aws = botocore.awsrequest.AWSRequest(
        method="POST", url="http://127.0.0.1:4599/", data=request["body"],
        headers={"X-Amz-Target": f"TrentService.{operation}", "Content-Type": "application/x-amz-json-1.1",
                 "User-Agent": "Boto3/1.34.0 botocore/1.34.0"})
    botocore.auth.SigV4Auth(CREDENTIALS, "kms", region).add_auth(aws)
    prepared = aws.prepare()
    headers = {k.lower(): v for k, v in prepared.headers.items()}
    lines = [headers.pop("authorization"), headers.pop("x-amz-date"), "POST", "/", "", headers.pop("host", "127.0.0.1:4599")]
    lines += [f"{name}:{value}" for name, value in headers.items()]
    body = prepared.body if isinstance(prepared.body, bytes) else (prepared.body or "").encode()
    return "\n".join(lines).encode() + b"\n\n" + body


# ---------------------------------------------------------------------------------------------------- DER and RSA

def spki(key):
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def mgf1(seed, length, h):
    out, counter = b"", 0
    while len(out) < length:
        out += h(seed + struct.pack(">I", counter)).digest()
        counter += 1
    return out[:length]


def oaep_encode(message, k, h):
    hlen = h().digest_size
    db = h(b"").digest() + b"\x00" * (k - len(message) - 2 * hlen - 2) + b"\x01" + message
    seed = hashlib.sha256(message + b"seed").digest()[:hlen].ljust(hlen, b"\x07")
    masked_db = bytes(a ^ b for a, b in zip(db, mgf1(seed, k - hlen - 1, h)))
    masked_seed = bytes(a ^ b for a, b in zip(seed, mgf1(masked_db, hlen, h)))
    return b"\x00" + masked_seed + masked_db


def main():
    names, enums = members_and_enums()
    operations = sorted(SERVICE.operation_names)
    json_tokens = ["{", "}", "[", "]", ":", ",", '"', "true", "false", "null", "-0", "1e308", "5e-324", "\\u0000", "\\ud83d\\ude00",
                   "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "0.5", "1E+2", "1e-7"]
    quoted = [f'"{n}"' for n in names] + [f'"{e}"' for e in enums]
    dictionary("json", json_tokens + quoted[:200])
    dictionary("operations", json_tokens + quoted + ['"alias/', '"arn:aws:kms:us-east-1:111122223333:key/', '"AQID"', '"=="'])
    dictionary("cloudtrail", json_tokens + quoted + operations + ["Describe", "List", "Get", "\n"])
    condition_operators = ["StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase", "StringLike",
                           "StringNotLike", "NumericEquals", "NumericNotEquals", "NumericLessThan", "NumericLessThanEquals",
                           "NumericGreaterThan", "NumericGreaterThanEquals", "DateEquals", "DateNotEquals", "DateLessThan",
                           "DateLessThanEquals", "DateGreaterThan", "DateGreaterThanEquals", "Bool", "BinaryEquals", "IpAddress",
                           "NotIpAddress", "ArnEquals", "ArnNotEquals", "ArnLike", "ArnNotLike", "Null", "ForAnyValue:",
                           "ForAllValues:", "IfExists"]
    condition_keys = ["kms:EncryptionContext:", "kms:EncryptionContextKeys", "kms:CallerAccount", "kms:ViaService", "kms:GrantOperations",
                      "kms:GranteePrincipal", "kms:RetiringPrincipal", "kms:GrantIsForAWSResource", "kms:GrantConstraintType",
                      "kms:KeySpec", "kms:KeyUsage", "kms:KeyOrigin", "kms:RequestAlias", "kms:ResourceAliases", "kms:WrappingAlgorithm",
                      "kms:WrappingKeySpec", "kms:ExpirationModel", "kms:ValidTo", "kms:SigningAlgorithm", "kms:EncryptionAlgorithm",
                      "kms:MacAlgorithm", "kms:MessageType", "kms:BypassPolicyLockoutSafetyCheck", "kms:KeyAgreementAlgorithm",
                      "aws:PrincipalArn", "aws:PrincipalAccount", "aws:PrincipalTag/", "aws:ResourceTag/", "aws:RequestTag/",
                      "aws:TagKeys", "aws:SourceIp", "aws:CurrentTime", "aws:EpochTime", "aws:SecureTransport"]
    policy_words = ["Version", "2012-10-17", "2008-10-17", "Id", "Statement", "Sid", "Effect", "Allow", "Deny", "Principal",
                    "NotPrincipal", "AWS", "Service", "Federated", "CanonicalUser", "Action", "NotAction", "Resource", "NotResource",
                    "Condition", "kms:*", "kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:CreateGrant", "*", "?",
                    "arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:user/", "arn:aws:iam::111122223333:role/",
                    "arn:aws:kms:us-east-1:111122223333:key/", "111122223333", "rds.us-east-1.amazonaws.com", "10.0.0.0/8",
                    "2001:db8::/32", "::ffff:", "192.0.2.10", "2026-01-01T00:00:00Z", "2026-01-01", "true", "false"]
    dictionary("policy", json_tokens + [f'"{w}"' for w in policy_words + condition_operators + condition_keys] + condition_operators +
               condition_keys)
    dictionary("sigv4", ["AWS4-HMAC-SHA256 ", "Credential=", "SignedHeaders=", "Signature=", "/aws4_request", "/us-east-1/kms/",
                         "AKIDEXAMPLE", "AKIDSERVICE", "host", "x-amz-date", "x-amz-target", "content-type", "x-amz-security-token",
                         "x-trent-forwarded-access-key:", "x-trent-forwarded-date:", "x-trent-forwarded-signature:",
                         "TrentService.", "application/x-amz-json-1.1", "20260101T000000Z", "T000000Z", "%2F", "%20", "%", "~",
                         "\n", "\n\n", ";", ",", "=", "&", "  ", "\t"])
    dictionary("der", [b"\x30", b"\x02", b"\x03", b"\x04", b"\x05\x00", b"\x06", b"\xA1", b"\x81", b"\x82", b"\x83", b"\x84",
                       bytes.fromhex("06092A864886F70D010101"), bytes.fromhex("06072A8648CE3D0201"),
                       bytes.fromhex("06082A8648CE3D030107"), bytes.fromhex("06052B81040022"), bytes.fromhex("06052B81040023"),
                       bytes.fromhex("06052B8104000A"), b"\x04", b"\x02", b"\x03"])
    dictionary("ciphertext", [b"\x01", b"\x30", b"\x02\x01\x00", b"\x02\x21\x00", b"\x81", b"\x00\x01", bytes(16)])
    dictionary("encryption-context", [b"\x1E", b"\x1F", b"=", b"aws-crypto-public-key", b"purpose", b"\xC3\xA9", b"e\xCC\x81"])
    dictionary("import-token", json_tokens + ['"keyID"', '"algorithm"', '"spec"', '"wrappedPrivateKey"', '"publicKey"', '"validTo"'] +
               [f'"{a}"' for a in ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_1", "RSA_AES_KEY_WRAP_SHA_256",
                                   "RSAES_PKCS1_V1_5", "SM2PKE", "RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256"]])
    dictionary("audit", json_tokens + ['"hash"', '"previousHash"', '"record"', '"sequence"', '"digestTime"', '"firstSequence"',
                                       '"lastHash"', '"lastSequence"', '"previousDigestHash"', '"signature"', '"chainKeyFrom"',
                                       '"sealedKey"', '"0000000000000000000000000000000000000000000000000000000000000000"', "\n", "\x00"])

    # Request bodies, and the same requests signed.
    for target in ("operations", "sigv4", "cloudtrail", "der", "ciphertext"):
        clean(target)
    bodies = operation_bodies()
    for operation, kind, request in bodies:
        save("operations", f"bc-{operation}-{kind}.json", request["body"])
    for operation, kind, request in bodies:
        if kind == "full" and operation in ("Encrypt", "Decrypt", "CreateKey", "CreateGrant", "PutKeyPolicy", "ImportKeyMaterial",
                                            "DescribeKey", "Sign", "DeriveSharedSecret", "ListKeys"):
            save("sigv4", f"bc-{operation}.txt", signed(operation, request))
            # CloudTrail input: flags (an authenticated user), operation, user agent, error message, claimed key, body.
            save("cloudtrail", f"bc-{operation}.bin", b"\x01" + f"{operation}\nBoto3/1.34.0\nmessage\nAKIDEXAMPLE\n".encode() + request["body"])
    save("sigv4", "bc-Encrypt-eu-west-1.txt", signed("Encrypt", serialized("Encrypt", {"KeyId": "alias/demo", "Plaintext": b"x"})[1], "eu-west-1"))

    # Keys and their encodings.
    keys = {"rsa2048": rsa.generate_private_key(65537, 2048), "p256": ec.generate_private_key(ec.SECP256R1()),
            "p384": ec.generate_private_key(ec.SECP384R1()), "p521": ec.generate_private_key(ec.SECP521R1()),
            "secp256k1": ec.generate_private_key(ec.SECP256K1())}
    for name, key in keys.items():
        save("der", f"bc-spki-{name}.der", spki(key))
        save("der", f"bc-pkcs8-{name}.der", key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                                serialization.NoEncryption()))
        if name != "rsa2048":
            point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
            save("der", f"bc-ecpoint-{name}.der", b"\x04" + bytes([len(point)]) + point if len(point) < 128 else b"\x04\x81" + bytes([len(point)]) + point)
            compressed = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
            save("der", f"bc-spki-{name}-compressed.der", spki_with_point(spki(key), point, compressed))
            signature = key.sign(b"message", ec.ECDSA(hashes.SHA256()))
            save("ciphertext", f"bc-ecdsa-{name}.bin", b"\x00" + signature)
    # OAEP blocks: selector 1 = SHA-256 and a 256-byte modulus, 0 = SHA-1; 5 = SHA-256, 384 bytes (selector >> 2 == 1).
    for selector, k, h in [(1, 256, hashlib.sha256), (0, 256, hashlib.sha1), (5, 384, hashlib.sha256), (11, 512, hashlib.sha512)]:
        save("ciphertext", f"bc-oaep-{selector}.bin", bytes([selector]) + oaep_encode(b"\x2a" * 32, k, h))
    # A ciphertext blob's shape: version 1, key id, backing-key version, IV, ciphertext, tag.
    blob = b"\x01" + bytes.fromhex("1234abcd12ab34cd56ef1234567890ab") + struct.pack(">I", 1) + bytes(range(12)) + b"secret" + bytes(16)
    save("ciphertext", "bc-blob.bin", blob)
    save("ciphertext", "bc-blob-minimal.bin", blob[:33] + bytes(16))


def spki_with_point(der, point, compressed):
    """The SPKI of an EC key with its point compressed (the bit string and the sequences around it shortened)."""
    algorithm_end = der.index(point) - 3 if der[der.index(point) - 3] == 0x03 else der.index(point) - 4
    # Rebuild: SEQUENCE { algorithm, BIT STRING { 0, compressed } }
    algorithm = der[2:algorithm_end] if der[1] < 0x80 else der[3:algorithm_end]
    bits = b"\x03" + bytes([len(compressed) + 1, 0]) + compressed
    body = algorithm + bits
    return b"\x30" + bytes([len(body)]) + body


if __name__ == "__main__":
    main()
