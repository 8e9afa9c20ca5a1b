"""Seeded hostile requests for test_robustness.py, built from the botocore KMS model.

Each request starts as a well-typed input for one operation of the model (every member of the right JSON
type, plausible values, real key ids, ciphertexts, signatures and grants from `Fixtures`) and is then broken
in one way: a member of the wrong type, a member repeated with different case, deep nesting, long strings,
bodies at the size limit, extreme numbers, broken JSON syntax, bad base64, a tampered ciphertext, signature or
MAC, a garbled or invalidated SigV4 signature, no signature, an unknown target, an odd Content-Type, or
oversized headers.

Every `Case` says what the server may answer (`Expect`). Request i of a run is drawn from
`random.Random(f"{seed}/{i}")` alone, so a run is reproduced by its seed, and one request by (seed, i), whatever
the request count.
"""

from __future__ import annotations

import base64
import calendar
import copy
import dataclasses
import json
import random
import string
import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import Callable

import botocore.session

from trent_e2e import REGION

MODEL = botocore.session.Session().get_service_model("kms")
OPERATIONS = sorted(MODEL.operation_names)
BODY_LIMIT = 1 << 20  # Trent answers a larger body 413 ValidationException (server.maxBodyBytes, Config/trent.yaml)
PARSER_DEPTH = 64  # Trent's JSON parser refuses deeper documents with SerializationException

# Operations of the model Trent answers with UnsupportedOperationException (README, "Operations"): it reads their
# bodies as JSON only, so members of the wrong shape in them are not SerializationException.
NOT_IMPLEMENTED = frozenset({"Encapsulate", "Decapsulate"})

# Errors AWS's JSON 1.1 protocol and SigV4 answer for any operation, beside the model's own error shapes.
PROTOCOL_ERRORS = frozenset({
    "SerializationException", "UnknownOperationException", "MissingAuthenticationTokenException",
    "UnrecognizedClientException", "InvalidSignatureException", "IncompleteSignatureException",
    "AccessDeniedException", "ValidationException", "ThrottlingException",
})
MODEL_ERRORS = frozenset(name for name in MODEL.shape_names if MODEL.shape_for(name).metadata.get("exception"))
ALLOWED_ERRORS = MODEL_ERRORS | PROTOCOL_ERRORS
AUTH_ERRORS = frozenset({
    "MissingAuthenticationTokenException", "IncompleteSignatureException", "InvalidSignatureException",
    "UnrecognizedClientException",
})


@dataclasses.dataclass(frozen=True)
class Expect:
    """What an answer may be. Every answer must also pass the general rules (test_robustness.judge)."""

    errors: frozenset[str] | None = None  # the answer must be one of these errors (None: any allowed one)
    refused: bool = False  # a 200 is wrong
    succeeds: bool = False  # only a 200 is right (the unmodified controls)
    status: int | None = None  # the exact status of a refusal (413 for an oversized body)
    http_layer: bool = False  # a bare 400/413/431 without a KMS body, or a closed connection, is also right


ANY = Expect()
REFUSED = Expect(refused=True)
SUCCEEDS = Expect(succeeds=True)
SERIALIZATION = Expect(errors=frozenset({"SerializationException"}), refused=True)
AUTHENTICATION = Expect(errors=AUTH_ERRORS, refused=True)
INVALID_SIGNATURE = Expect(errors=frozenset({"InvalidSignatureException"}), refused=True)
UNAUTHENTICATED = Expect(errors=frozenset({"MissingAuthenticationTokenException"}), refused=True)
UNKNOWN_OPERATION = Expect(errors=frozenset({"UnknownOperationException"}), refused=True)
TOO_LARGE = Expect(errors=frozenset({"ValidationException"}), refused=True, status=413, http_layer=True)

# (headers, body) -> (headers, body): how a request is changed after it was signed. A header set to None
# is not sent; a body that is a list of byte strings is sent with chunked transfer coding.
AfterSigning = Callable[[dict, bytes], tuple[dict, "bytes | list[bytes]"]]


@dataclasses.dataclass
class Case:
    index: int
    category: str
    operation: str  # the operation whose input the body was built from
    description: str  # what was broken, for the failure message
    body: bytes
    expect: Expect
    target: str | None = None  # X-Amz-Target; None: no such header
    content_type: str | None = "application/x-amz-json-1.1"
    sign: bool = True
    access_key: str | None = None  # sign with other credentials
    secret_key: str | None = None
    after_signing: AfterSigning | None = None


@dataclasses.dataclass
class Fixtures:
    """Real resources on the server under test, so generated requests get past "key not found"."""

    account: str
    symmetric: list[str]  # stable symmetric keys (never disabled, deleted or re-policied)
    aliases: list[str]  # aliases of stable symmetric keys
    rsa_encrypt: str
    rsa_sign: str
    hmac: str
    key_agreement: str | None  # None in the generator's own unit cases
    external: str  # Origin EXTERNAL, no material imported
    scratch: list[str]  # symmetric keys for operations that change a key's state
    scratch_aliases: list[str]
    sealed: list[tuple[bytes, dict]]  # symmetric ciphertexts and their encryption contexts
    rsa_sealed: bytes  # RSAES_OAEP_SHA_256 under rsa_encrypt
    message: bytes
    signature: bytes  # RSASSA_PSS_SHA_256 by rsa_sign over message
    mac: bytes  # HMAC_SHA_256 by hmac over message
    peer_public_key: bytes  # a P-256 SubjectPublicKeyInfo (DER), for DeriveSharedSecret
    grant_id: str
    grant_token: str
    import_token: bytes


# --------------------------------------------------------------------------- JSON that json.dumps cannot write

class Members(list):
    """An object written member by member, in order: a name may appear twice."""


class Raw(str):
    """Text written into the body as it is: numbers beyond a float, NaN, broken escapes, deep nesting."""


class RawBytes(bytes):
    """Bytes written into the body as they are (invalid UTF-8)."""


def encode(value, ascii_only: bool = True) -> bytes:
    """Compact JSON; `ascii_only=False` writes non-ASCII characters as UTF-8 rather than as \\u escapes."""
    out: list[bytes] = []

    def write(item) -> None:
        if isinstance(item, RawBytes):
            out.append(bytes(item))
        elif isinstance(item, Raw):
            out.append(item.encode())
        elif isinstance(item, (Members, dict)):
            pairs = item if isinstance(item, Members) else item.items()
            out.append(b"{")
            for position, (name, member) in enumerate(pairs):
                if position:
                    out.append(b",")
                write(name)
                out.append(b":")
                write(member)
            out.append(b"}")
        elif isinstance(item, list):
            out.append(b"[")
            for position, member in enumerate(item):
                if position:
                    out.append(b",")
                write(member)
            out.append(b"]")
        else:
            out.append(json.dumps(item, ensure_ascii=ascii_only).encode())

    write(value)
    return b"".join(out)


# --------------------------------------------------------------------------- well-typed inputs from the model

# Operations that change a key's state get scratch keys, so the stable keys keep working for the rest of the run.
STATE_CHANGING = {
    "CancelKeyDeletion", "CreateGrant", "DisableKey", "DisableKeyRotation", "EnableKey", "EnableKeyRotation",
    "ListGrants", "PutKeyPolicy", "ReplicateKey", "RevokeGrant", "RotateKeyOnDemand", "ScheduleKeyDeletion",
    "TagResource", "UntagResource", "UpdateAlias", "UpdateKeyDescription", "UpdatePrimaryRegion",
}
# Generating RSA-3072/4096 keys takes seconds on a debug build with SoftHSM; that is not what this test probes,
# so key-generating members draw from the quick specs.
QUICK_SPECS = {
    "KeySpec": ["SYMMETRIC_DEFAULT", "HMAC_256", "RSA_2048", "ECC_NIST_P256"],
    "CustomerMasterKeySpec": ["SYMMETRIC_DEFAULT", "HMAC_256", "RSA_2048", "ECC_NIST_P256"],
    "KeyPairSpec": ["RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384"],
    "WrappingKeySpec": ["RSA_2048"],
}
COLLIDING_PAIRS = [
    ("A", "a"), ("KeyId", "keyId"), ("\u0130d", "i\u0307d"), ("\u212aeyId", "keyId"), ("TagKey", "tagKey"),
    ("EncryptionContext", "encryptionContext"),
]


class Values:
    """Plausible, well-typed member values for one request."""

    def __init__(self, fixtures: Fixtures, rng: random.Random):
        self.fx = fixtures
        self.rng = rng

    def request(self, operation: str) -> dict:
        body = self.structure(operation, MODEL.operation_model(operation).input_shape, depth=0)
        return self.coherent(operation, body)

    def structure(self, operation: str, shape, depth: int) -> dict:
        required = set(shape.required_members)
        return {
            name: self.value(operation, name, member, depth + 1)
            for name, member in shape.members.items()
            if name in required or (depth < 4 and self.rng.random() < 0.35)
        }

    def value(self, operation: str, name: str, shape, depth: int):
        rng = self.rng
        kind = shape.type_name
        if kind == "structure":
            return self.structure(operation, shape, depth)
        if kind == "list":
            low = max(1, shape.metadata.get("min", 1))
            return [self.value(operation, name, shape.member, depth + 1) for _ in range(rng.randint(low, low + 2))]
        if kind == "map":
            names = ["purpose", "tenant", "Dept", "aws:x"]
            return {f"{rng.choice(names)}{index}": rng.choice(["robustness", "42", ""])
                    for index in range(rng.randint(1, 3))}
        if kind == "string":
            return self.string(operation, name, shape)
        if kind == "integer":
            low, high = shape.metadata.get("min", 1), shape.metadata.get("max", 1000)
            return rng.randint(low, min(high, low + 100))
        if kind == "boolean":
            return rng.random() < (0.1 if name == "DryRun" else 0.5)
        if kind == "timestamp":
            return int(time.time()) + 86_400
        if kind == "blob":
            return b64(self.blob(operation, name, shape))
        raise AssertionError(f"no values for {kind} ({operation}.{name})")

    def key(self, operation: str) -> str:
        fx, rng = self.fx, self.rng
        if operation in STATE_CHANGING:
            key_id = rng.choice(fx.scratch)
        elif operation in ("Sign", "Verify", "GetPublicKey"):
            key_id = fx.rsa_sign
        elif operation in ("GenerateMac", "VerifyMac"):
            key_id = fx.hmac
        elif operation == "DeriveSharedSecret":
            key_id = fx.key_agreement or fx.rsa_sign
        elif operation in ("GetParametersForImport", "ImportKeyMaterial", "DeleteImportedKeyMaterial"):
            key_id = fx.external
        elif operation == "Encrypt" and rng.random() < 0.2:
            key_id = fx.rsa_encrypt
        else:
            key_id = rng.choice(fx.symmetric)
            if rng.random() < 0.25:
                return rng.choice(fx.aliases)
        return key_id if rng.random() < 0.6 else f"arn:aws:kms:{REGION}:{fx.account}:key/{key_id}"

    def string(self, operation: str, name: str, shape) -> str:
        fx, rng = self.fx, self.rng
        if name in QUICK_SPECS and operation not in ("GenerateDataKey", "GenerateDataKeyWithoutPlaintext"):
            return rng.choice(QUICK_SPECS[name])
        if shape.enum:
            return rng.choice(shape.enum)
        if name in ("KeyId", "TargetKeyId", "SourceKeyId", "DestinationKeyId"):
            return self.key(operation)
        if name == "AliasName":
            if operation in ("UpdateAlias", "DeleteAlias"):
                return rng.choice(fx.scratch_aliases)
            return f"alias/robustness-{rng.getrandbits(40):010x}"
        if name == "Policy":
            return json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{fx.account}:root"}, "Action": "kms:*",
                "Resource": "*"}]})
        if name == "PolicyName":
            return "default"
        if name in ("GranteePrincipal", "RetiringPrincipal"):
            return f"arn:aws:iam::{fx.account}:user/robustness"
        if name == "GrantId":
            return fx.grant_id
        if name in ("GrantToken", "GrantTokens"):
            return fx.grant_token
        if name == "CustomKeyStoreId":
            return f"cks-{rng.getrandbits(68):017x}"
        if name == "CloudHsmClusterId":
            return "cluster-" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(11))
        if name in ("ReplicaRegion", "PrimaryRegion"):
            return "eu-west-1"
        low, high = shape.metadata.get("min", 1), shape.metadata.get("max", 64)
        length = rng.randint(max(low, 1), max(low, min(high, 24)))
        return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(length))

    def blob(self, operation: str, name: str, shape) -> bytes:
        fx, rng = self.fx, self.rng
        if name == "CiphertextBlob":
            return rng.choice(fx.sealed)[0]
        if name == "Signature":
            return fx.signature
        if name == "Mac":
            return fx.mac
        if name == "Message":
            return fx.message if rng.random() < 0.7 else rng.randbytes(rng.randint(1, 64))
        if name == "PublicKey":
            return fx.peer_public_key
        if name == "ImportToken":
            return fx.import_token
        high = min(shape.metadata.get("max", 64), 256)
        return rng.randbytes(rng.randint(max(1, shape.metadata.get("min", 1)), high))

    def coherent(self, operation: str, body: dict) -> dict:
        """Ties members together the way a real caller would: a ciphertext with its context, a signature with
        its message, key and algorithm."""
        rng = self.rng
        if operation in ("Decrypt", "ReEncrypt") and rng.random() < 0.8:
            blob, context = rng.choice(self.fx.sealed)
            body["CiphertextBlob"] = b64(blob)
            member = "EncryptionContext" if operation == "Decrypt" else "SourceEncryptionContext"
            if context:
                body[member] = dict(context)
            else:
                body.pop(member, None)
        if operation == "Verify" and rng.random() < 0.8:
            body.update(self.verify_request())
        if operation == "VerifyMac" and rng.random() < 0.8:
            body.update(self.verify_mac_request())
        return body

    def verify_request(self) -> dict:
        """A Verify input that succeeds: the fixtures' signature over their message."""
        fx = self.fx
        return {"KeyId": fx.rsa_sign, "Message": b64(fx.message), "MessageType": "RAW",
                "Signature": b64(fx.signature), "SigningAlgorithm": "RSASSA_PSS_SHA_256"}

    def verify_mac_request(self) -> dict:
        """A VerifyMac input that succeeds: the fixtures' MAC over their message."""
        fx = self.fx
        return {"KeyId": fx.hmac, "Message": b64(fx.message), "Mac": b64(fx.mac), "MacAlgorithm": "HMAC_SHA_256"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --------------------------------------------------------------------------- positions inside a body

def positions(tree, path=()) -> list[tuple]:
    """Paths (tuples of member names and list indexes) of every value below the root."""
    found = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, child in items:
        found.append(path + (key,))
        found.extend(positions(child, path + (key,)))
    return found


def objects(tree, path=()) -> list[tuple]:
    """Paths of every object, the root (()) included."""
    found = [path] if isinstance(tree, dict) else []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, child in items:
        found.extend(objects(child, path + (key,)))
    return found


def kind_at(operation: str, path: tuple) -> str | None:
    """The model type name ("string", "blob", "map"...) at `path`, or None outside the model."""
    shape = member_shape(operation, path)
    return shape.type_name if shape is not None else None


def get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def put(tree, path, value):
    """Replaces the value at `path` (in place); returns the root, which is `value` itself for the root path."""
    if not path:
        return value
    get(tree, path[:-1])[path[-1]] = value
    return tree


def member_shape(operation: str, path: tuple):
    """The model shape at `path` in the operation's input, or None where the path leaves the model."""
    shape = MODEL.operation_model(operation).input_shape
    for key in path:
        if shape.type_name == "structure" and key in shape.members:
            shape = shape.members[key]
        elif shape.type_name == "list" and isinstance(key, int):
            shape = shape.member
        elif shape.type_name == "map":
            shape = shape.value
        else:
            return None
    return shape


# --------------------------------------------------------------------------- the generator

class Generator:
    def __init__(self, seed: str, fixtures: Fixtures):
        self.seed = seed
        self.fixtures = fixtures

    def case(self, index: int) -> Case:
        rng = random.Random(f"{self.seed}/{index}")
        category = rng.choices(list(CATEGORIES), weights=[weight for _, weight in CATEGORIES.values()])[0]
        operation = rng.choice(OPERATIONS)
        values = Values(self.fixtures, rng)
        case = CATEGORIES[category][0](self, rng, values, operation)
        case.index, case.category = index, category
        if len(case.body) > BODY_LIMIT:
            case.expect = TOO_LARGE  # the body's size is checked before anything else
        return case

    # Each builder returns a Case whose index and category `case` fills in.

    def valid(self, rng, values, operation) -> Case:
        return Case(0, "", operation, "a well-typed request", encode(values.request(operation)), ANY,
                    target=f"TrentService.{operation}")

    def wrong_type(self, rng, values, operation) -> Case:
        body = values.request(operation)
        spots = positions(body)
        if spots:
            path = rng.choice(spots)
            replacement = other_kind(rng, json_kind(get(body, path)))
        else:
            members = MODEL.operation_model(operation).input_shape.members
            name = rng.choice(list(members) or ["KeyId"])
            kind = WIRE_KINDS.get(members[name].type_name, "string") if name in members else "string"
            path, replacement = (name,), other_kind(rng, kind)
        body = put(body, path, replacement)
        return self.signed(operation, f"{describe(path)} replaced by {short(encode(replacement))}", encode(body), ANY)

    def case_duplicate(self, rng, values, operation) -> Case:
        body = values.request(operation)
        if rng.random() < 0.25:
            # A string member turned into an object whose member names collide: the shape that crashed the audit.
            spots = [path for path in positions(body) if isinstance(get(body, path), str)] or [("KeyId",)]
            first, second = rng.choice(COLLIDING_PAIRS)
            path = rng.choice(spots)
            body = put(body, path, Members([(first, 1), (second, 2)]))
            what = f"{describe(path)} = {{{first!r}: 1, {second!r}: 2}}"
        else:
            path = rng.choice(objects(body))
            node = get(body, path)
            members = list(node.items())
            if members and rng.random() < 0.7:
                name, original = rng.choice(members)
                twin = rng.choice(case_variants(name))
                value = copy.deepcopy(original) if rng.random() < 0.5 else other_kind(rng, json_kind(original))
            else:
                name, twin = rng.choice(COLLIDING_PAIRS)
                members.append((name, "first"))
                value = "second"
            members.insert(rng.randint(0, len(members)), (twin, value))
            body = put(body, path, Members(members))
            what = f"member {twin!r} added beside {name!r} in {describe(path) or 'the body'}"
        return self.signed(operation, what, encode(body, ascii_only=rng.random() < 0.5), ANY)

    def deep_nesting(self, rng, values, operation) -> Case:
        depth = rng.choice([10, 63, 64, 65, 100, 1_000, 10_000])
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
        nested = Raw(opener * depth + ("1" if opener != "[" else "") + closer * depth)
        if rng.random() < 0.15:
            # An array is never a request body; nested objects are one while the parser's depth allows.
            expect = SERIALIZATION if opener == "[" or depth > PARSER_DEPTH else ANY
            return self.signed(operation, f"the body is {depth} nested containers", nested.encode(), expect)
        body = values.request(operation)
        name = rng.choice(list(MODEL.operation_model(operation).input_shape.members) or ["KeyId"])
        body[name] = nested
        # The body is one level, the member's value `depth` more.
        expect = SERIALIZATION if depth + 1 > PARSER_DEPTH else ANY
        return self.signed(operation, f"{name} nested {depth} levels deep", encode(body), expect)

    def long_string(self, rng, values, operation) -> Case:
        length = rng.choice([256, 4_096, 8_193, 65_535, 65_536, 70_000])
        text = rng.choice(["k", "\u00e9", "\u20ac", "\U0001f600"]) * length
        body = values.request(operation)
        spots = [path for path in positions(body) if isinstance(get(body, path), str)]
        maps = [path for path in objects(body) if path and kind_at(operation, path) == "map"]
        if maps and rng.random() < 0.4:
            path = rng.choice(maps)
            get(body, path)[text] = "v"
            what = f"a key of {length} characters in {describe(path)}"
        elif spots:
            path = rng.choice(spots)
            body = put(body, path, text)
            what = f"{describe(path)} = {length} characters"
        else:
            body["KeyId"] = text
            what = f"KeyId = {length} characters"
        return self.signed(operation, what, encode(body, ascii_only=rng.random() < 0.5), ANY)

    def body_size(self, rng, values, operation) -> Case:
        size = rng.choice([BODY_LIMIT - 1, BODY_LIMIT, BODY_LIMIT + 1, BODY_LIMIT + 65_536, 2 * BODY_LIMIT])
        body = values.request(operation)
        name = rng.choice([path for path in positions(body) if isinstance(get(body, path), str)] or [("Marker",)])
        body = put(body, name, "")
        padding = size - len(encode(body))
        body = put(body, name, "a" * max(0, padding))
        data = encode(body)
        expect = ANY
        chunked, signed = rng.random() < 0.3, rng.random() < 0.8
        if len(data) > BODY_LIMIT:
            expect = TOO_LARGE  # the size is checked before the signature
        elif not signed:
            expect = UNAUTHENTICATED
        what = f"a body of {len(data)} bytes{' sent chunked' if chunked else ''}{'' if signed else ', unsigned'}"
        case = self.signed(operation, what, data, expect)
        case.sign = signed
        if chunked:
            case.after_signing = chunk
        return case

    def number(self, rng, values, operation) -> Case:
        body = values.request(operation)
        integers = [path for path in positions(body) if kind_at(operation, path) == "integer"]
        token = rng.choice(NUMBERS)
        if integers:
            path = rng.choice(integers)
            shape = member_shape(operation, path)
            expect = ANY if fits(token, shape.metadata.get("min", 1), shape.metadata.get("max", 1000)) else REFUSED
        else:
            path = rng.choice(positions(body) or [("Limit",)])
            expect = ANY
        body = put(body, path, Raw(token))
        return self.signed(operation, f"{describe(path)} = {short(token.encode())}", encode(body), expect)

    def json_syntax(self, rng, values, operation) -> Case:
        body = values.request(operation)
        text = encode(body)
        name = rng.choice(list(body) or ["KeyId"])
        breakage, broken = rng.choice([
            ("NaN as a value", lambda: put(body, (name,), Raw(rng.choice(["NaN", "Infinity", "-Infinity", "nan"])))),
            ("invalid UTF-8 in a string", lambda: put(body, (name,), RawBytes(b'"' + rng.choice(BAD_UTF8) + b'"'))),
            ("invalid UTF-8 in a member name", lambda: Members([(RawBytes(b'"' + rng.choice(BAD_UTF8) + b'"'), 1)])),
            ("a lone surrogate escape", lambda: put(body, (name,), Raw('"x' + rng.choice(SURROGATES) + '"'))),
            ("a lone surrogate in a member name", lambda: Members([(Raw('"' + rng.choice(SURROGATES) + '"'), "x")])),
            ("an unescaped control character", lambda: put(body, (name,), RawBytes(b'"a\x01b"'))),
            ("an invalid escape", lambda: put(body, (name,), Raw(rng.choice(BAD_ESCAPES)))),
            ("a single-quoted string", lambda: put(body, (name,), Raw("'x'"))),
        ])
        if rng.random() < 0.3:
            cut = rng.randint(1, max(1, len(text) - 1))
            variants = [
                ("the body cut short", text[:cut]),
                ("text after the body", text + rng.choice([b"x", b"{}", b",", b"]"])),
                ("a trailing comma", text[:-1] + b",}" if text.endswith(b"}") and len(text) > 2 else b"{,}"),
                ("a comment", b"/* c */" + text),
                ("an unquoted name", b"{KeyId:1}"),
            ]
            breakage, data = rng.choice(variants)
        else:
            data = encode(broken())
        return self.signed(operation, f"broken JSON: {breakage}", data, SERIALIZATION)

    def bad_base64(self, rng, values, operation) -> Case:
        body = values.request(operation)
        blobs = [path for path in positions(body) if kind_at(operation, path) == "blob"]
        if not blobs:
            # Operations whose blob members are all optional: take one whose input always has a blob.
            return self.bad_base64(rng, values, rng.choice(["Encrypt", "GenerateMac", "Sign", "Verify"]))
        path = rng.choice(blobs)
        text, expect = rng.choice([(text, SERIALIZATION) for text in NOT_BASE64] + [(text, ANY) for text in LAX_BASE64])
        body = put(body, path, text)
        what = f"{describe(path)} = {short(text.encode())}"
        return self.signed(operation, what, encode(body, ascii_only=False), expect)

    def tampered_blob(self, rng, values, operation) -> Case:
        fx = self.fixtures
        blob, context = rng.choice(fx.sealed)
        templates = [
            ("Decrypt", "CiphertextBlob", blob, {"EncryptionContext": context} if context else {}),
            ("ReEncrypt", "CiphertextBlob", blob,
             {"DestinationKeyId": fx.symmetric[0], **({"SourceEncryptionContext": context} if context else {})}),
            ("Decrypt", "CiphertextBlob", fx.rsa_sealed,
             {"KeyId": fx.rsa_encrypt, "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}),
            ("Verify", "Signature", fx.signature, values.verify_request()),
            ("VerifyMac", "Mac", fx.mac, values.verify_mac_request()),
        ]
        operation, member, original, body = rng.choice(templates)
        body = dict(body)
        if rng.random() < 0.1:
            body[member] = b64(original)
            return self.signed(operation, f"the unmodified {member} (control)", encode(body), SUCCEEDS)
        changed, what = tamper(rng, original, fx)
        body[member] = b64(changed)
        return self.signed(operation, f"{member} {what}", encode(body), REFUSED)

    def sigv4(self, rng, values, operation) -> Case:
        body = encode(values.request(operation))
        case = self.signed(operation, "", body, AUTHENTICATION)
        choice = rng.randrange(len(SIGV4_GARBLES) + 2)
        if choice == len(SIGV4_GARBLES):
            case.secret_key, case.description = "wRongSecretKey0123456789abcdefGHIJKLMNOP", "signed with a wrong secret"
        elif choice == len(SIGV4_GARBLES) + 1:
            case.access_key = "AKIA" + "".join(rng.choice(string.ascii_uppercase + "234567") for _ in range(16))
            case.description = f"signed with the unknown access key {case.access_key}"
        else:
            what, garble = SIGV4_GARBLES[choice]
            case.description = what
            case.after_signing = garble
        return case

    def altered_after_signing(self, rng, values, operation) -> Case:
        body = encode(values.request(operation))
        position, new_byte = rng.randrange(len(body)), rng.randrange(256)
        if body[position] == new_byte:
            new_byte ^= 1
        other = rng.choice([name for name in OPERATIONS if name != operation])
        what, change = rng.choice([
            (f"body byte {position} changed", lambda h, b: (h, b[:position] + bytes([new_byte]) + b[position + 1:])),
            ("a space appended to the body", lambda h, b: (h, b + b" ")),
            ("the body's last byte removed", lambda h, b: (h, b[:-1])),
            (f"X-Amz-Target changed to {other}", lambda h, b: ({**h, "X-Amz-Target": f"TrentService.{other}"}, b)),
            ("Content-Type changed", lambda h, b: ({**h, "Content-Type": "application/x-amz-json-1.0"}, b)),
            ("X-Amz-Date moved one second", lambda h, b: ({**h, "X-Amz-Date": shift_date(h["X-Amz-Date"])}, b)),
        ])
        case = self.signed(operation, what, body, INVALID_SIGNATURE)
        case.after_signing = change
        return case

    def unsigned(self, rng, values, operation) -> Case:
        builder = rng.choice([Generator.valid, Generator.wrong_type, Generator.case_duplicate, Generator.json_syntax,
                              Generator.deep_nesting])
        case = builder(self, rng, values, operation)
        case.sign, case.expect = False, UNAUTHENTICATED
        case.description = f"unsigned: {case.description}"
        return case

    def unknown_target(self, rng, values, operation) -> Case:
        target = rng.choice([
            "TrentService.NoSuchOperation", f"TrentService.{operation.lower()}", f"trentservice.{operation}",
            "TrentService", "TrentService.", f"TrentService.{operation}.Extra", f"AWSKMS.{operation}",
            "TrentService.__proto__", "TrentService." + "A" * 5_000, None,
        ])
        return Case(0, "", operation, f"X-Amz-Target {short((target or '(none)').encode())}",
                    encode(values.request(operation)), UNKNOWN_OPERATION, target=target)

    def content_type(self, rng, values, operation) -> Case:
        content_type = rng.choice([None, "", "application/json", "text/plain", "application/x-amz-json-1.0",
                                   "application/x-amz-json-1.1; charset=utf-8", "APPLICATION/X-AMZ-JSON-1.1"])
        case = self.signed(operation, f"Content-Type {content_type!r}", encode(values.request(operation)), ANY)
        case.content_type = content_type
        return case

    def headers(self, rng, values, operation) -> Case:
        body = encode(values.request(operation))
        if rng.random() < 0.5:
            count = rng.choice([20, 90, 101, 500, 1_000, 1_500])
            what = f"{count} extra headers"
            extra = {f"X-Robustness-{index}": "v" for index in range(count)}
        else:
            size = rng.choice([4_096, 7_000, 16_384, 65_536, 100_000, 200_000])
            what = f"one header of {size} bytes"
            extra = {"X-Robustness": "v" * size}
        case = self.signed(operation, what, body, ANY)  # the judge allows the HTTP layer to refuse large header blocks
        case.after_signing = lambda h, b: ({**h, **extra}, b)
        return case

    def signed(self, operation: str, description: str, body: bytes, expect: Expect) -> Case:
        return Case(0, "", operation, description, body, expect, target=f"TrentService.{operation}")


CATEGORIES: dict[str, tuple[Callable, int]] = {
    "valid": (Generator.valid, 6),
    "wrong-type": (Generator.wrong_type, 14),
    "case-duplicate": (Generator.case_duplicate, 14),
    "deep-nesting": (Generator.deep_nesting, 5),
    "long-string": (Generator.long_string, 5),
    "body-size": (Generator.body_size, 2),
    "number": (Generator.number, 7),
    "json-syntax": (Generator.json_syntax, 9),
    "bad-base64": (Generator.bad_base64, 6),
    "tampered-blob": (Generator.tampered_blob, 8),
    "sigv4": (Generator.sigv4, 10),
    "altered-after-signing": (Generator.altered_after_signing, 5),
    "unsigned": (Generator.unsigned, 4),
    "unknown-target": (Generator.unknown_target, 2),
    "content-type": (Generator.content_type, 2),
    "headers": (Generator.headers, 3),
}


# --------------------------------------------------------------------------- the breakages

NUMBERS = [
    "1e400", "-1e400", "1" + "0" * 1_000, "-0", "1.0e-400", "4.9e-324", "0", "-1", "1.5", "1E2", "1.0", "1e3",
    "2147483648", "9223372036854775807", "9223372036854775808", "18446744073709551616", "0.0000001",
]
BAD_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"a\x80b", b"\xf4\x90\x80\x80", b"\xfe\xfe"]
BAD_ESCAPES = ['"\\x41"', '"\\u12"', '"\\uZZZZ"', '"\\\'"']
SURROGATES = ["\\ud800", "\\udfff", "\\ud800\\u0041", "\\udc00\\ud800", "\\ud83d"]
# Base64 no decoder accepts: characters outside the alphabet, padding alone or in excess, inner blanks.
NOT_BASE64 = ["***", "YQ===", "====", "=", " YQ== ", "YW Jj", "\u00fc", "!" * 10_000, "\u0000"]
# Forms some decoders accept (no padding, line breaks, the URL alphabet) and blobs valid but odd: any answer.
LAX_BASE64 = ["YQ", "YQ=", "YQ==\n", "YWJj\nZA==", "-_8=", "", "AAAA" * 2_000]


def fits(token: str, low: int, high: int) -> bool:
    """Whether a JSON number token is an integer within [low, high]."""
    try:
        value = Decimal(token)
    except InvalidOperation:
        return False
    return value == value.to_integral_value() and low <= value <= high


# The JSON type each model type travels as in AWS JSON 1.1 (timestamps are epoch seconds, blobs base64 text).
WIRE_KINDS = {
    "string": "string", "blob": "string", "integer": "number", "long": "number", "double": "number",
    "timestamp": "number", "boolean": "bool", "list": "list", "structure": "object", "map": "object",
}


def other_kind(rng: random.Random, kind: str):
    """A value whose JSON type is not `kind`."""
    candidates = {
        "string": ["x", "", "\u0130"], "number": [1, -1, 1.5, 0], "bool": [True, False], "null": [None],
        "list": [[], ["x"], [[1]], [{"A": 1}]], "object": [{}, {"KeyId": "x"}, Members([("A", 1), ("a", 2)])],
    }
    return rng.choice(rng.choice([items for name, items in candidates.items() if name != kind]))


def json_kind(value) -> str:
    """The JSON type of a value built by this module."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "object"


def case_variants(name: str) -> list[str]:
    variants = {name, name.swapcase(), name.lower(), name.upper(), name[:1].swapcase() + name[1:]}
    for plain, fancy in (("I", "\u0130"), ("i", "i\u0307"), ("K", "\u212a"), ("k", "\u212a"), ("s", "\u017f")):
        if plain in name:
            variants.add(name.replace(plain, fancy, 1))
    return sorted(variants)


def tamper(rng: random.Random, blob: bytes, fx: Fixtures) -> tuple[bytes, str]:
    """A changed copy of a real ciphertext, signature or MAC, and what was changed."""
    choice = rng.randrange(6)
    if choice == 0:
        cut = rng.randrange(len(blob))
        return blob[:cut], f"cut to {cut} of {len(blob)} bytes"
    if choice == 1:
        extra = rng.randint(1, 64)
        return blob + rng.randbytes(extra), f"extended by {extra} bytes"
    if choice == 2:
        index, bit = rng.randrange(len(blob)), rng.randrange(8)
        return blob[:index] + bytes([blob[index] ^ (1 << bit)]) + blob[index + 1:], f"bit {bit} of byte {index} flipped"
    if choice == 3 and len(blob) > 17:
        others = [key_id for key_id in fx.symmetric + fx.scratch if uuid.UUID(key_id).bytes != blob[1:17]]
        changed = blob[:1] + uuid.UUID(rng.choice(others)).bytes + blob[17:]
        return changed, "with bytes 1-16 replaced by another key's id"
    if choice == 4:
        return blob + blob, "doubled"
    return bytes([blob[0] ^ 0xFF]) + blob[1:], "with its first byte inverted"


def _auth(garble: Callable[[str], str | bytes]) -> AfterSigning:
    return lambda headers, body: ({**headers, "Authorization": garble(headers["Authorization"])}, body)


def _field(name: str, replace: Callable[[str], str | bytes] | None) -> AfterSigning:
    """Rewrites (or, with None, drops) one `name=value` field of the Authorization header."""

    def garble(header: str):
        algorithm, _, fields = header.partition(" ")
        parts = [part.strip() for part in fields.split(",")]
        out: list[str | bytes] = []
        for part in parts:
            if part.startswith(name + "="):
                if replace is None:
                    continue
                new = replace(part[len(name) + 1:])
                out.append(name.encode() + b"=" + new if isinstance(new, bytes) else f"{name}={new}")
            else:
                out.append(part)
        if any(isinstance(part, bytes) for part in out):
            return algorithm.encode() + b" " + b", ".join(p if isinstance(p, bytes) else p.encode() for p in out)
        return f"{algorithm} " + ", ".join(out)

    return _auth(garble)


def _scope(index: int, value: str | bytes) -> AfterSigning:
    """Replaces one part of the Credential scope (access key / date / region / service / terminator)."""

    def replace(credential: str):
        parts: list[str | bytes] = list(credential.split("/"))
        parts[index] = value
        if isinstance(value, bytes):
            return b"/".join(p if isinstance(p, bytes) else p.encode() for p in parts)
        return "/".join(parts)

    return _field("Credential", replace)


def _without(header: str) -> AfterSigning:
    return lambda headers, body: ({**headers, header: None}, body)


def other_hex(digit: str) -> str:
    return "1" if digit == "0" else "0"


SIGV4_GARBLES: list[tuple[str, AfterSigning]] = [
    ("no Authorization header (the request is otherwise signed)", _without("Authorization")),
    ("empty Authorization header", _auth(lambda value: "")),
    ("algorithm AWS4-HMAC-SHA512", _auth(lambda value: value.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512", 1))),
    ("algorithm in lowercase", _auth(lambda value: value.replace("AWS4-HMAC-SHA256", "aws4-hmac-sha256", 1))),
    ("a SigV2-style Authorization", _auth(lambda value: "AWS AKIAIOSFODNN7EXAMPLE:c2lnbmF0dXJl")),
    ("no space after the algorithm", _auth(lambda value: value.replace(" ", "", 1))),
    ("no Credential field", _field("Credential", None)),
    ("no SignedHeaders field", _field("SignedHeaders", None)),
    ("no Signature field", _field("Signature", None)),
    ("empty access key in the scope", _scope(0, "")),
    ("empty date in the scope", _scope(1, "")),
    ("empty region in the scope", _scope(2, "")),
    ("empty service in the scope", _scope(3, "")),
    ("scope terminator aws4_requesT", _scope(4, "aws4_requesT")),
    ("scope date of another day", _scope(1, "20000101")),
    ("non-ASCII access key", _scope(0, "AKIA\u00e9\u20ac".encode())),
    ("non-ASCII region", _scope(2, "\u00fcs-east-1".encode())),
    ("a 10,000-character access key", _scope(0, "A" * 10_000)),
    ("a scope of four parts", _field("Credential", lambda value: value.rsplit("/", 1)[0])),
    ("a scope of six parts", _field("Credential", lambda value: value + "/extra")),
    ("one signature character changed", _field("Signature", lambda value: other_hex(value[0]) + value[1:])),
    ("signature cut short", _field("Signature", lambda value: value[:-2])),
    ("signature extended", _field("Signature", lambda value: value + "00")),
    ("signature not hex", _field("Signature", lambda value: "z" * len(value))),
    ("non-ASCII signature", _field("Signature", lambda value: ("\u00e9" * 32).encode())),
    ("a 60,000-character signature", _field("Signature", lambda value: "a" * 60_000)),
    ("host not among SignedHeaders", _field("SignedHeaders", lambda value: ";".join(
        name for name in value.split(";") if name != "host"))),
    ("an unsent header among SignedHeaders", _field("SignedHeaders", lambda value: value + ";x-not-sent")),
    ("SignedHeaders reversed", _field("SignedHeaders", lambda value: ";".join(reversed(value.split(";"))))),
    ("empty SignedHeaders", _field("SignedHeaders", lambda value: "")),
    ("no X-Amz-Date header", _without("X-Amz-Date")),
    ("X-Amz-Date in month 13", lambda h, b: ({**h, "X-Amz-Date": h["X-Amz-Date"][:4] + "13" + h["X-Amz-Date"][6:]}, b)),
    ("X-Amz-Date not a date", lambda h, b: ({**h, "X-Amz-Date": "yesterday"}, b)),
    ("non-ASCII X-Amz-Date", lambda h, b: ({**h, "X-Amz-Date": "2026\u00e9".encode()}, b)),
]


def shift_date(amz_date: str) -> str:
    """The X-Amz-Date one second later."""
    seconds = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")) + 1
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))


def chunk(headers: dict, body: bytes) -> tuple[dict, list[bytes]]:
    """Sends the same (signed) body with chunked transfer coding, in 64 KiB chunks."""
    return headers, [body[start:start + 65_536] for start in range(0, len(body), 65_536)] or [b""]


def describe(path: tuple) -> str:
    return "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in path).lstrip(".")


def short(data: bytes, limit: int = 60) -> str:
    text = data.decode(errors="replace")
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(data)} bytes)"
