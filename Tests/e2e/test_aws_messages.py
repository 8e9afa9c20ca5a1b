"""AWS's exact error messages, three corner cases of the AWS API reference, and the refusal of Ed25519 keys.

Each case makes the request an AWS-validated record made and asserts the exact `__type` and message. The record is
LocalStack's snapshot suite, validated against real AWS (github.com/localstack/localstack,
tests/aws/services/kms/test_kms.snapshot.json; the test of the same name in test_kms.py makes the request); each
case names its snapshot entry. Where AWS's message is empty, the response carries no `message` member at all
(botocore then reports "" and puts no top-level `message` into the parsed error), as AWS's does.

Where no record exists, the message follows the API reference's wording (said at the case).
"""

from __future__ import annotations

import base64
import json

import pytest
from botocore.exceptions import ClientError

from trent_e2e import ACCOUNT_ID, REPO, TOKEN, key_arn, policy_json, remember_plaintext, root_statement


def error_of(call, *args, **kwargs) -> dict:
    """The parsed error response of a call that must fail."""
    with pytest.raises(ClientError) as excinfo:
        call(*args, **kwargs)
        pytest.fail("the call succeeded", pytrace=False)
    return excinfo.value.response


def assert_error(response: dict, code: str, message: str) -> None:
    assert response["Error"] == {"Code": code, "Message": message}
    if message:
        # Modeled exceptions carry their `message` member too (not ValidationException, which the model lacks).
        assert response.get("message", message) == message
    else:
        assert "message" not in response, response


def expect(code: str, message: str, call, *args, **kwargs) -> None:
    assert_error(error_of(call, *args, **kwargs), code, message)


@pytest.fixture(scope="module")
def keys(kms):
    """One key of each kind the cases need, made once."""
    def create(**kwargs) -> str:
        return kms.create_key(**kwargs)["KeyMetadata"]["KeyId"]

    return {
        "symmetric": create(Description="messages"),
        "hmac224": create(KeySpec="HMAC_224", KeyUsage="GENERATE_VERIFY_MAC"),
        "hmac256": create(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC"),
        "rsa-sign": create(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY"),
        "rsa-encrypt": create(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT"),
        "p256-sign": create(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY"),
        "p256-agree": create(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT"),
    }


# --------------------------------------------------------------------------- tags

def test_duplicate_tag_keys(kms):
    """test_tag_key_with_duplicate_tag_keys_raises_error: duplicate-tag-keys."""
    tags = [{"TagKey": "team", "TagValue": "a"}, {"TagKey": "team", "TagValue": "b"}]
    expect("TagException", "Duplicate tag keys", kms.create_key, Tags=tags)


def test_too_many_tags(kms):
    """test_create_key_with_too_many_tags_raises_error: invalid-tag-key."""
    tags = [{"TagKey": f"k{i}", "TagValue": "v"} for i in range(51)]
    expect("TagException", "Too many tags", kms.create_key, Tags=tags)


def test_reserved_tag_prefix(kms, keys):
    """test_tag_existing_key_with_invalid_tag_key: invalid-tag-key."""
    expect("TagException", "Tags beginning with aws: are reserved",
           kms.tag_resource, KeyId=keys["symmetric"], Tags=[{"TagKey": "aws:team", "TagValue": "a"}])


def test_tag_value_too_long(kms):
    """test_key_with_long_tag_value_raises_error: too-long-tag-value (the list member is named by its 1-based place)."""
    value = "v" * 257
    expect("ValidationException",
           f"1 validation error detected: Value '{value}' at 'tags.1.member.tagValue' failed to satisfy constraint: "
           "Member must have length less than or equal to 256",
           kms.create_key, Tags=[{"TagKey": "ok", "TagValue": value}])


def test_tag_key_too_long(kms):
    """test_create_key_with_invalid_tag_key[too_long_key]: invalid-tag-key."""
    tag_key = "a" * 129
    expect("ValidationException",
           f"1 validation error detected: Value '{tag_key}' at 'tags.2.member.tagKey' failed to satisfy constraint: "
           "Member must have length less than or equal to 128",
           kms.create_key, Tags=[{"TagKey": "fine", "TagValue": ""}, {"TagKey": tag_key, "TagValue": "v"}])


# --------------------------------------------------------------------------- empty messages

def test_invalid_ciphertext_has_no_message(kms, keys):
    """test_encrypt_decrypt_encryption_context: decrypt_response_without_encryption_context."""
    remember_plaintext(b"messages plaintext")
    blob = kms.encrypt(KeyId=keys["symmetric"], Plaintext=b"messages plaintext", EncryptionContext={"a": "b"})["CiphertextBlob"]
    expect("InvalidCiphertextException", "", kms.decrypt, CiphertextBlob=blob, KeyId=keys["symmetric"])
    expect("InvalidCiphertextException", "", kms.decrypt, CiphertextBlob=b"\x01" * 64)


def test_invalid_signature_has_no_message(kms, keys):
    """test_sign_verify[...]: bad-signature."""
    key = keys["p256-sign"]
    signature = kms.sign(KeyId=key, Message=b"signed", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    expect("KMSInvalidSignatureException", "",
           kms.verify, KeyId=key, Message=b"other", Signature=signature, SigningAlgorithm="ECDSA_SHA_256")


def test_invalid_mac_has_no_message(kms, keys):
    """test_invalid_verify_mac[HMAC_256-HMAC_SHA_256-some different important message]: verify-mac."""
    key = keys["hmac256"]
    mac = kms.generate_mac(KeyId=key, Message=b"important", MacAlgorithm="HMAC_SHA_256")["Mac"]
    expect("KMSInvalidMacException", "", kms.verify_mac, KeyId=key, Message=b"different", Mac=mac, MacAlgorithm="HMAC_SHA_256")


def test_rotating_a_non_symmetric_key_has_no_message(kms, keys):
    """test_rotate_key_on_demand_raises_error_given_non_symmetric_key: error-response."""
    expect("UnsupportedOperationException", "", kms.rotate_key_on_demand, KeyId=keys["rsa-encrypt"])


def test_unusable_public_key_has_no_message(kms, keys):
    """test_derive_shared_secret: response-invalid-public-key."""
    expect("ValidationException", "", kms.derive_shared_secret,
           KeyId=keys["p256-agree"], KeyAgreementAlgorithm="ECDH", PublicKey=b"InvalidPublicKey")


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("arguments, message", [
    ({}, "NumberOfBytes is required."),
    ({"NumberOfBytes": 0}, "1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy constraint: "
                           "Member must have value greater than or equal to 1"),
    ({"NumberOfBytes": 1025}, "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: "
                              "Member must have value less than or equal to 1024"),
], ids=["missing", "0", "1025"])
def test_generate_random_number_of_bytes(kms, arguments, message):
    """test_generate_random_invalid_number_of_bytes[None|0|1025]."""
    expect("ValidationException", message, kms.generate_random, **arguments)


@pytest.mark.parametrize("algorithm, limit", [("RSAES_OAEP_SHA_1", 214), ("RSAES_OAEP_SHA_256", 190)])
def test_rsa_plaintext_too_long(kms, keys, algorithm, limit):
    """test_encrypt_validate_plaintext_size_per_key_type[RSA_2048-...]."""
    remember_plaintext(b"x" * (limit + 1))
    expect("ValidationException", f"Algorithm {algorithm} and key spec RSA_2048 cannot encrypt data larger than {limit} bytes.",
           kms.encrypt, KeyId=keys["rsa-encrypt"], Plaintext=b"x" * (limit + 1), EncryptionAlgorithm=algorithm)


def test_plaintext_too_long(kms, keys):
    """test_plaintext_size_for_encrypt: invalid-plaintext-size-encrypt."""
    remember_plaintext(b"y" * 4097)
    expect("ValidationException", "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
           "Member must have length less than or equal to 4096", kms.encrypt, KeyId=keys["symmetric"], Plaintext=b"y" * 4097)


@pytest.mark.parametrize("algorithm", ["ECDSA_SHA_256"])
def test_digest_of_the_wrong_length(kms, keys, algorithm):
    """test_sign_verify[ECC_NIST_P256-ECDSA_SHA_256]: bad-digest."""
    expect("ValidationException", f"Digest is invalid length for algorithm {algorithm}.",
           kms.sign, KeyId=keys["p256-sign"], Message=b"\x00" * 20, MessageType="DIGEST", SigningAlgorithm=algorithm)


def test_hmac_key_without_key_usage(kms):
    """test_hmac_create_key_invalid_operations: create-hmac-key-without-key-usage."""
    expect("ValidationException", "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys.",
           kms.create_key, KeySpec="HMAC_256")


def test_key_usage_not_compatible_with_key_spec(kms):
    """test_derive_shared_secret: response-invalid-key-spec."""
    expect("ValidationException", "KeyUsage KEY_AGREEMENT is not compatible with KeySpec RSA_2048",
           kms.create_key, KeySpec="RSA_2048", KeyUsage="KEY_AGREEMENT")


def test_alias_without_prefix(kms, keys):
    """test_create_alias: create_alias."""
    expect("ValidationException",
           'Alias must start with the prefix "alias/". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html',
           kms.create_alias, AliasName="no-prefix", TargetKeyId=keys["symmetric"])


def test_import_without_valid_to(kms, keys):
    """test_import_key_symmetric: import-expiring-key-without-valid-to."""
    expect("ValidationException", "A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES",
           kms.import_key_material, KeyId=keys["symmetric"], ImportToken=b"token", EncryptedKeyMaterial=b"material",
           ExpirationModel="KEY_MATERIAL_EXPIRES")


# --------------------------------------------------------------------------- key usage and key identity

@pytest.mark.parametrize("case", ["GenerateMac", "Sign", "Verify", "Encrypt", "DeriveSharedSecret", "DeriveSharedSecret-encrypt"])
def test_key_usage_not_valid_for_the_operation(kms, keys, case):
    """test_error_messaging_for_invalid_keys and test_derive_shared_secret: the operation's API name ends the message."""
    calls = {
        "GenerateMac": ("symmetric", lambda k: kms.generate_mac(KeyId=k, Message=b"m", MacAlgorithm="HMAC_SHA_224")),
        "Sign": ("hmac224", lambda k: kms.sign(KeyId=k, Message=b"m", MessageType="RAW", SigningAlgorithm="RSASSA_PSS_SHA_256")),
        "Verify": ("symmetric", lambda k: kms.verify(
            KeyId=k, Message=b"m", MessageType="RAW", Signature=b"random text", SigningAlgorithm="ECDSA_SHA_256")),
        "Encrypt": ("rsa-sign", lambda k: kms.encrypt(KeyId=k, Plaintext=b"m")),
        "DeriveSharedSecret": ("p256-sign", lambda k: kms.derive_shared_secret(
            KeyId=k, KeyAgreementAlgorithm="ECDH", PublicKey=kms.get_public_key(KeyId=keys["p256-agree"])["PublicKey"])),
        "DeriveSharedSecret-encrypt": ("symmetric", lambda k: kms.derive_shared_secret(
            KeyId=k, KeyAgreementAlgorithm="ECDH", PublicKey=kms.get_public_key(KeyId=keys["p256-agree"])["PublicKey"])),
    }
    which, call = calls[case]
    usage = kms.describe_key(KeyId=keys[which])["KeyMetadata"]["KeyUsage"]
    expect("InvalidKeyUsageException", f"{key_arn(keys[which])} key usage is {usage} which is not valid for {case.split('-')[0]}.",
           call, keys[which])


@pytest.mark.parametrize("spec, algorithm, operation", [
    ("HMAC_224", "HMAC_SHA_256", "generate"), ("HMAC_256", "HMAC_SHA_512", "verify")])
def test_mac_algorithm_incompatible_with_key_spec(kms, keys, spec, algorithm, operation):
    """test_invalid_generate_mac[HMAC_224-HMAC_SHA_256] and test_invalid_verify_mac[HMAC_256-HMAC_SHA_512-...]."""
    key = keys[spec.lower().replace("_", "")]
    call = (lambda: kms.generate_mac(KeyId=key, Message=b"m", MacAlgorithm=algorithm)) if operation == "generate" else (
        lambda: kms.verify_mac(KeyId=key, Message=b"m", Mac=b"\x00" * 32, MacAlgorithm=algorithm))
    expect("InvalidKeyUsageException", f"Algorithm {algorithm} is incompatible with key spec {spec}.", call)


def test_decrypt_and_reencrypt_naming_another_key(kms, keys):
    """test_error_messaging_for_invalid_keys: decrypt-invalid-key-id; ReEncrypt's SourceKeyId is the same check."""
    remember_plaintext(b"m")
    blob = kms.encrypt(KeyId=keys["symmetric"], Plaintext=b"m")["CiphertextBlob"]
    message = "The key ID in the request does not identify a CMK that can perform this operation."
    expect("IncorrectKeyException", message, kms.decrypt, CiphertextBlob=blob, KeyId=keys["hmac224"])
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    expect("IncorrectKeyException", message, kms.re_encrypt, CiphertextBlob=blob, SourceKeyId=other, DestinationKeyId=other)


def test_nonexistent_and_invalid_key_ids(kms):
    """test_get_key_does_not_exist and test_get_key_invalid_uuid."""
    missing = "134f2428-cec1-4b25-a1ae-9048164dba47"
    expect("NotFoundException", f"Key '{key_arn(missing)}' does not exist", kms.describe_key, KeyId=missing)
    expect("NotFoundException", f"Key '{key_arn(missing)}' does not exist", kms.describe_key, KeyId=key_arn(missing))
    for invalid in ["fake-key-id", "134f2428cec14b25a1ae9048164dba47"]:
        expect("NotFoundException", f"Invalid keyId '{invalid}'", kms.describe_key, KeyId=invalid)
    expect("NotFoundException", "Invalid keyId 'key_id'", kms.generate_mac, KeyId="key_id", Message=b"m", MacAlgorithm="HMAC_SHA_256")


def test_get_parameters_for_import_of_an_aws_kms_key(kms, keys):
    """test_get_parameters_for_import: response-error."""
    expect("UnsupportedOperationException", f"{key_arn(keys['symmetric'])} origin is AWS_KMS which is not valid for this operation.",
           kms.get_parameters_for_import, KeyId=keys["symmetric"], WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048")


def test_encrypt_with_a_key_pending_import(kms):
    """test_import_key_symmetric: encrypt-before-import-error."""
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    expect("KMSInvalidStateException", f"{key_arn(key)} is pending import.", kms.encrypt, KeyId=key, Plaintext=b"m")


def test_dry_run(kms, keys):
    """test_generate_data_key_pair_dry_run: dryrun_exception."""
    expect("DryRunOperationException", "The request would have succeeded, but the DryRun option is set.",
           kms.generate_data_key_pair, KeyId=keys["symmetric"], KeyPairSpec="ECC_NIST_P256", DryRun=True)


# --------------------------------------------------------------------------- rotation

def test_rotating_a_disabled_key(kms):
    """test_rotate_key_on_demand_raises_error_given_key_is_disabled: the state is told first, whatever the key spec."""
    key = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=key)
    expect("DisabledException", f"{key_arn(key)} is disabled.", kms.rotate_key_on_demand, KeyId=key)


def test_on_demand_rotation_limit(kms):
    """test_key_rotations_limits: error-response (25 on-demand rotations per key)."""
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    for _ in range(25):
        kms.rotate_key_on_demand(KeyId=key)
    expect("LimitExceededException",
           "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed "
           f"for this key: {key_arn(key)}", kms.rotate_key_on_demand, KeyId=key)


# --------------------------------------------------------------------------- key policy length

POLICY_LIMIT = 131_072


def policy_of_length(length: int) -> str:
    """The default policy, padded with spaces (valid JSON whitespace) to exactly `length` characters."""
    text = policy_json(root_statement(ACCOUNT_ID))
    return text + " " * (length - len(text))


def test_key_policy_of_the_largest_size(kms):
    """AWS API reference (PutKeyPolicy, CreateKey: Policy): up to 131,072 characters."""
    policy = policy_of_length(POLICY_LIMIT)
    key = kms.create_key(Policy=policy)["KeyMetadata"]["KeyId"]
    assert kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"] == policy
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=policy.rstrip() + " ")


def test_key_policy_of_the_largest_size_fits_the_request_body_escaped(kms):
    """Every character of such a policy outside ASCII (the model allows up to U+00FF) is sent as a 6-byte \\u00XX
    escape: 786 KB of JSON, within the default 1 MiB request body."""
    def document(sid: str) -> str:
        return json.dumps({"Version": "2012-10-17", "Statement": [dict(root_statement(ACCOUNT_ID), Sid=sid)]}, ensure_ascii=False)

    text = document("")
    policy = document("\u00e9" * (POLICY_LIMIT - len(text)))
    assert len(policy) == POLICY_LIMIT and len(json.dumps({"Policy": policy})) > 6 * (POLICY_LIMIT - len(text))
    key = kms.create_key(Policy=policy)["KeyMetadata"]["KeyId"]
    assert kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"] == policy


def test_key_policy_too_long(kms, keys):
    """AWS API reference: a longer policy is LimitExceededException (a length constraint or quota was exceeded)."""
    policy = policy_of_length(POLICY_LIMIT + 1)
    message = ("The request was rejected because a length constraint or quota was exceeded: a key policy has at most "
               f"{POLICY_LIMIT} characters.")
    expect("LimitExceededException", message, kms.create_key, Policy=policy)
    expect("LimitExceededException", message, kms.put_key_policy, KeyId=keys["symmetric"], PolicyName="default", Policy=policy)
    assert json.loads(kms.get_key_policy(KeyId=keys["symmetric"], PolicyName="default")["Policy"])["Statement"]


# --------------------------------------------------------------------------- Ed25519 (what this run's token lacks)

def eddsa_unavailable() -> str:
    """The reason this run's HSM profile records for holding no Ed25519 keys (measured on both tokens here)."""
    profile = json.loads((REPO / "Config" / "hsm" / f"{TOKEN}.json").read_text())
    return profile["eddsaUnavailable"]


def test_ed25519_keys_are_refused_saying_what_the_token_lacks(kms, keys):
    """SoftHSM 2.6.1 cannot wrap an Ed25519 private key (CKR_KEY_NOT_WRAPPABLE) and ignores Ed25519ph's phFlag;
    NSS softoken 3.87 has no EdDSA: neither can keep an Ed25519 key the way Trent keeps private keys."""
    message = f"This HSM (profile '{TOKEN}') holds no ECC_NIST_EDWARDS25519 keys: {eddsa_unavailable()}."
    before = {k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]}
    expect("UnsupportedOperationException", message, kms.create_key, KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")
    expect("UnsupportedOperationException", message,
           kms.generate_data_key_pair, KeyId=keys["symmetric"], KeyPairSpec="ECC_NIST_EDWARDS25519")
    assert {k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]} == before


@pytest.mark.parametrize("spec", ["SM2", "ML_DSA_44", "ML_DSA_65", "ML_DSA_87"])
def test_sm2_and_ml_dsa_keys_are_refused(kms, spec):
    expect("UnsupportedOperationException", f"KeySpec {spec} is not supported by Trent: it has no SM2 or ML-DSA keys.",
           kms.create_key, KeySpec=spec, KeyUsage="SIGN_VERIFY")


@pytest.mark.parametrize("algorithm", ["ED25519_SHA_512", "ED25519_PH_SHA_512"])
def test_ed25519_algorithms_with_another_key(kms, keys, algorithm):
    """An Ed25519 signing algorithm is a valid enum value: with a P-256 key it is the key's usage that refuses it."""
    key = keys["p256-sign"]
    expect("InvalidKeyUsageException", f"Algorithm {algorithm} is incompatible with key spec ECC_NIST_P256.",
           kms.sign, KeyId=key, Message=b"m", MessageType="RAW", SigningAlgorithm=algorithm)


@pytest.mark.parametrize("spec, algorithm", [("ECC_NIST_P256", "ECDSA_SHA_384"), ("RSA_2048", "ECDSA_SHA_256")])
def test_signing_algorithm_incompatible_with_key_spec(kms, keys, spec, algorithm):
    """No record for signing keys: worded as AWS words the same refusal for HMAC keys (test_invalid_generate_mac)."""
    key = keys["p256-sign" if spec == "ECC_NIST_P256" else "rsa-sign"]
    expect("InvalidKeyUsageException", f"Algorithm {algorithm} is incompatible with key spec {spec}.",
           kms.sign, KeyId=key, Message=b"m", MessageType="RAW", SigningAlgorithm=algorithm)
