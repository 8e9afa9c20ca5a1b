"""HMAC keys: HMAC_224/256/384/512 with GENERATE_VERIFY_MAC, GenerateMac and VerifyMac computed in the token.
A MAC made outside with the same key is impossible (the key never leaves the token), so VerifyMac is checked
against GenerateMac and against tampered MACs and messages."""

from __future__ import annotations

import pytest

from trent_e2e import expect_error, key_arn, make_kms

SPECS = {"HMAC_224": ("HMAC_SHA_224", 28), "HMAC_256": ("HMAC_SHA_256", 32), "HMAC_384": ("HMAC_SHA_384", 48), "HMAC_512": ("HMAC_SHA_512", 64)}


@pytest.fixture(scope="module")
def hmac_keys(kms):
    return {spec: kms.create_key(KeySpec=spec, KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"] for spec in SPECS}


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_generate_and_verify_mac(kms, hmac_keys, spec):
    algorithm, length = SPECS[spec]
    metadata = hmac_keys[spec]
    assert metadata["KeySpec"] == spec and metadata["KeyUsage"] == "GENERATE_VERIFY_MAC"
    assert metadata["MacAlgorithms"] == [algorithm] and "EncryptionAlgorithms" not in metadata
    key_id = metadata["KeyId"]

    response = kms.generate_mac(KeyId=key_id, Message=b"message to authenticate", MacAlgorithm=algorithm)
    mac = response["Mac"]
    assert len(mac) == length and response["MacAlgorithm"] == algorithm and response["KeyId"] == key_arn(key_id)
    assert kms.generate_mac(KeyId=key_id, Message=b"message to authenticate", MacAlgorithm=algorithm)["Mac"] == mac

    verified = kms.verify_mac(KeyId=key_id, Message=b"message to authenticate", Mac=mac, MacAlgorithm=algorithm)
    assert verified["MacValid"] is True and verified["KeyId"] == key_arn(key_id) and verified["MacAlgorithm"] == algorithm

    tampered = bytes([mac[0] ^ 1]) + mac[1:]
    with expect_error("KMSInvalidMacException"):
        kms.verify_mac(KeyId=key_id, Message=b"message to authenticate", Mac=tampered, MacAlgorithm=algorithm)
    with expect_error("KMSInvalidMacException"):
        kms.verify_mac(KeyId=key_id, Message=b"message to authenticatE", Mac=mac, MacAlgorithm=algorithm)
    with expect_error("KMSInvalidMacException"):
        kms.verify_mac(KeyId=key_id, Message=b"message to authenticate", Mac=mac[:-1], MacAlgorithm=algorithm)


def test_macs_differ_between_keys(kms, hmac_keys):
    other = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    mac = kms.generate_mac(KeyId=hmac_keys["HMAC_256"]["KeyId"], Message=b"same", MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert kms.generate_mac(KeyId=other, Message=b"same", MacAlgorithm="HMAC_SHA_256")["Mac"] != mac
    with expect_error("KMSInvalidMacException"):
        kms.verify_mac(KeyId=other, Message=b"same", Mac=mac, MacAlgorithm="HMAC_SHA_256")


def test_wrong_usage_and_algorithm(kms, hmac_keys, new_key):
    hmac_key = hmac_keys["HMAC_256"]["KeyId"]
    with expect_error("InvalidKeyUsageException"):
        kms.generate_mac(KeyId=hmac_key, Message=b"m", MacAlgorithm="HMAC_SHA_512")
    with expect_error("InvalidKeyUsageException"):
        kms.encrypt(KeyId=hmac_key, Plaintext=b"m")
    with expect_error("InvalidKeyUsageException"):
        kms.generate_data_key(KeyId=hmac_key, KeySpec="AES_256")
    with expect_error("InvalidKeyUsageException"):
        kms.generate_mac(KeyId=new_key(), Message=b"m", MacAlgorithm="HMAC_SHA_256")
    with expect_error("ValidationException"):
        kms.generate_mac(KeyId=hmac_key, Message=b"m", MacAlgorithm="HMAC_MD5")
    with expect_error("ValidationException"):
        kms.generate_mac(KeyId=hmac_key, Message=b"", MacAlgorithm="HMAC_SHA_256")
    with expect_error("ValidationException"):
        kms.create_key(KeySpec="HMAC_256")  # HMAC keys need KeyUsage GENERATE_VERIFY_MAC
    with expect_error("ValidationException"):
        kms.create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="GENERATE_VERIFY_MAC")
    with expect_error("UnsupportedOperationException"):
        kms.enable_key_rotation(KeyId=hmac_key)
    with expect_error("UnsupportedOperationException"):
        kms.rotate_key_on_demand(KeyId=hmac_key)


def test_hmac_keys_follow_key_states(kms):
    key_id = kms.create_key(KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    mac = kms.generate_mac(KeyId=key_id, Message=b"state", MacAlgorithm="HMAC_SHA_384")["Mac"]
    kms.disable_key(KeyId=key_id)
    with expect_error("DisabledException"):
        kms.verify_mac(KeyId=key_id, Message=b"state", Mac=mac, MacAlgorithm="HMAC_SHA_384")
    kms.enable_key(KeyId=key_id)
    assert kms.verify_mac(KeyId=key_id, Message=b"state", Mac=mac, MacAlgorithm="HMAC_SHA_384")["MacValid"] is True


def test_hmac_keys_survive_a_restart(make_server):
    server = make_server()
    kms = make_kms(server)
    key_id = kms.create_key(KeySpec="HMAC_224", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    mac = kms.generate_mac(KeyId=key_id, Message=b"durable", MacAlgorithm="HMAC_SHA_224")["Mac"]
    server.restart()
    kms = make_kms(server)
    assert kms.verify_mac(KeyId=key_id, Message=b"durable", Mac=mac, MacAlgorithm="HMAC_SHA_224")["MacValid"] is True
