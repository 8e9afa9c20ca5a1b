"""Authorization comes before every check that tells a caller something about a key or a store, as in AWS.

A caller without permission learns only AccessDeniedException: not which algorithms a key supports, nor whether
a custom key store exists, is connected or holds a given key.
"""

from __future__ import annotations

import pytest

from trent_e2e import ADMIN_POLICY, expect_denied, expect_error


@pytest.fixture(scope="module")
def callers(ids):
    account = ids.account("authorize-first")
    owner = ids.user(account, "owner", ADMIN_POLICY)
    stranger = ids.user(account, "stranger")  # no identity policy: the default key policy allows it nothing
    return owner, stranger


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1", "SM2PKE"])
def test_encrypt_with_an_algorithm_the_key_lacks_is_denied_before_it_is_checked(callers, algorithm):
    owner, stranger = callers
    key = owner.kms.create_key()["KeyMetadata"]["Arn"]
    with expect_denied(stranger.arn, "kms:Encrypt", key, "no-identity", what=algorithm):
        stranger.kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionAlgorithm=algorithm)
    # The owner, who may use the key, is told why.
    with expect_error("InvalidKeyUsageException", what=algorithm):
        owner.kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionAlgorithm=algorithm)


def test_decrypt_and_reencrypt_with_an_algorithm_the_key_lacks_are_denied_first(callers):
    owner, stranger = callers
    key = owner.kms.create_key()["KeyMetadata"]["Arn"]
    blob = owner.kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    with expect_denied(stranger.arn, "kms:Decrypt", key, "no-identity"):
        stranger.kms.decrypt(CiphertextBlob=blob, KeyId=key, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    with expect_denied(stranger.arn, "kms:ReEncryptFrom", key, "no-identity"):
        stranger.kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=key, DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_256")


def test_an_invalid_algorithm_name_is_still_a_validation_error(callers):
    """Checking the request against the API's enum tells nothing about any key, so it may come first."""
    owner, stranger = callers
    key = owner.kms.create_key()["KeyMetadata"]["Arn"]
    with expect_error("ValidationException"):
        stranger.kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionAlgorithm="NO_SUCH_ALGORITHM")


@pytest.mark.parametrize("store_id", ["cks-1234567890abcdef0", "cks-nosuchstore"])
def test_create_key_in_a_custom_key_store_is_authorized_first(callers, store_id):
    owner, stranger = callers
    with expect_denied(stranger.arn, "kms:CreateKey", "*", "no-identity", what=store_id):
        stranger.kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store_id)
    # An authorized caller learns about the store.
    with expect_error("CustomKeyStoreNotFoundException", what=store_id):
        owner.kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store_id)


def test_decrypt_naming_another_accounts_key_is_denied_before_its_type_is_told(ids, callers):
    """An RSA algorithm with a named symmetric key of another account: AccessDenied, not InvalidCiphertext."""
    owner, _ = callers
    other = ids.user(ids.account("authorize-first-b"), "owner-b", ADMIN_POLICY)
    foreign = other.kms.create_key()["KeyMetadata"]["Arn"]
    own_blob = owner.kms.encrypt(KeyId=owner.kms.create_key()["KeyMetadata"]["Arn"], Plaintext=b"x")["CiphertextBlob"]
    for algorithm in ("RSAES_OAEP_SHA_256", "SYMMETRIC_DEFAULT"):
        with expect_denied(owner.arn, "kms:Decrypt", foreign, "no-resource", what=algorithm):
            owner.kms.decrypt(CiphertextBlob=own_blob, KeyId=foreign, EncryptionAlgorithm=algorithm)
