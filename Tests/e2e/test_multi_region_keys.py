"""Multi-Region keys: related keys in several Regions share an `mrk-` id and one copy of key material (a ciphertext
made in one Region decrypts in another); each has its own policy, aliases, grants, tags, description and state."""

from __future__ import annotations

import json
import re

from trent_e2e import ACCOUNT_ID, EU, REGION, WEST, expect_error, key_arn, tags_dict, unique_alias


def test_create_key_multi_region_makes_a_primary_key(east):
    key = east.create_key(MultiRegion=True, Description="primary")["KeyMetadata"]
    assert re.fullmatch(r"mrk-[0-9a-f]{32}", key["KeyId"])
    assert key["Arn"] == key_arn(key["KeyId"], REGION)
    assert key["MultiRegion"] is True
    assert key["MultiRegionConfiguration"] == {
        "MultiRegionKeyType": "PRIMARY", "PrimaryKey": {"Arn": key["Arn"], "Region": REGION}, "ReplicaKeys": []}
    described = east.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert described["MultiRegionConfiguration"] == key["MultiRegionConfiguration"]
    assert east.describe_key(KeyId=key["Arn"])["KeyMetadata"]["KeyId"] == key["KeyId"]
    single = east.create_key()["KeyMetadata"]
    assert single["MultiRegion"] is False and "MultiRegionConfiguration" not in single


def test_replicate_key_shares_the_material(east, west, eu):
    primary = east.create_key(MultiRegion=True, Description="primary", Tags=[{"TagKey": "side", "TagValue": "east"}])["KeyMetadata"]
    key_id = primary["KeyId"]
    with expect_error("NotFoundException"):
        west.describe_key(KeyId=key_id)
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"}, "Action": "kms:*", "Resource": "*"}]})
    answer = east.replicate_key(
        KeyId=key_id, ReplicaRegion=WEST, Description="replica", Policy=policy, Tags=[{"TagKey": "side", "TagValue": "west"}])
    replica = answer["ReplicaKeyMetadata"]
    assert replica["KeyId"] == key_id and replica["Arn"] == key_arn(key_id, WEST)
    assert replica["Description"] == "replica" and replica["KeyState"] == "Enabled" and replica["MultiRegion"] is True
    assert replica["MultiRegionConfiguration"] == {
        "MultiRegionKeyType": "REPLICA", "PrimaryKey": {"Arn": primary["Arn"], "Region": REGION},
        "ReplicaKeys": [{"Arn": key_arn(key_id, WEST), "Region": WEST}]}
    assert json.loads(answer["ReplicaPolicy"]) == json.loads(policy)
    assert answer["ReplicaTags"] == [{"TagKey": "side", "TagValue": "west"}]
    east.replicate_key(KeyId=primary["Arn"], ReplicaRegion=EU)
    replicas = [{"Arn": key_arn(key_id, WEST), "Region": WEST}, {"Arn": key_arn(key_id, EU), "Region": EU}]
    assert east.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]["ReplicaKeys"] == replicas
    assert west.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]["ReplicaKeys"] == replicas
    # Each one's own: description, tags, policy.
    assert east.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "primary"
    assert tags_dict(west.list_resource_tags(KeyId=key_id)["Tags"]) == {"side": "west"}
    assert tags_dict(east.list_resource_tags(KeyId=key_id)["Tags"]) == {"side": "east"}
    assert eu.get_key_policy(KeyId=key_id)["Policy"] != answer["ReplicaPolicy"]

    # A ciphertext of one Region decrypts in the others, by KeyId or without it.
    blob = east.encrypt(KeyId=key_id, Plaintext=b"multi-region", EncryptionContext={"k": "v"})["CiphertextBlob"]
    # Blob version 2 names the id the related keys share; a single-Region key's blobs stay version 1.
    assert blob[0] == 2 and east.encrypt(KeyId=east.create_key()["KeyMetadata"]["KeyId"], Plaintext=b"1")["CiphertextBlob"][0] == 1
    for client, region in ((west, WEST), (eu, EU)):
        for named in ({}, {"KeyId": key_id}, {"KeyId": key_arn(key_id, region)}):
            decrypted = client.decrypt(CiphertextBlob=blob, EncryptionContext={"k": "v"}, **named)
            assert decrypted["Plaintext"] == b"multi-region" and decrypted["KeyId"] == key_arn(key_id, region)
    back = west.encrypt(KeyId=key_id, Plaintext=b"from the west")["CiphertextBlob"]
    assert east.decrypt(CiphertextBlob=back)["Plaintext"] == b"from the west"
    with expect_error("InvalidCiphertextException"):
        east.decrypt(CiphertextBlob=back, EncryptionContext={"k": "v"})
    # A single-Region key of the same Region is not the key of the blob.
    other = west.create_key()["KeyMetadata"]["KeyId"]
    with expect_error("IncorrectKeyException"):
        west.decrypt(CiphertextBlob=blob, EncryptionContext={"k": "v"}, KeyId=other)


def test_related_keys_have_their_own_state_and_aliases(east, west):
    key_id = east.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    alias = unique_alias("mrk")
    west.create_alias(AliasName=alias, TargetKeyId=key_id)
    assert west.describe_key(KeyId=alias)["KeyMetadata"]["Arn"] == key_arn(key_id, WEST)
    with expect_error("NotFoundException"):
        east.describe_key(KeyId=alias)
    listed = [entry for entry in west.list_aliases(KeyId=key_id)["Aliases"]]
    assert [(entry["AliasName"], entry["TargetKeyId"]) for entry in listed] == [(alias, key_id)]
    west.disable_key(KeyId=key_id)
    assert east.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    blob = east.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
    with expect_error("DisabledException"):
        west.decrypt(CiphertextBlob=blob)
    west.enable_key(KeyId=key_id)
    assert west.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_replicate_key_errors(east, west):
    single = east.create_key()["KeyMetadata"]
    with expect_error("UnsupportedOperationException") as error:
        east.replicate_key(KeyId=single["KeyId"], ReplicaRegion=WEST)
    assert error.value.response["Error"]["Message"] == f"{single['Arn']} is not a multi-Region key."
    key_id = east.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    with expect_error("AlreadyExistsException") as error:
        east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    assert error.value.response["Error"]["Message"] == f"{key_arn(key_id, WEST)} already exists in {WEST}."
    with expect_error("AlreadyExistsException") as error:
        east.replicate_key(KeyId=key_id, ReplicaRegion=REGION)
    assert error.value.response["Error"]["Message"] == f"{key_arn(key_id, REGION)} already exists in {REGION}."
    with expect_error("UnsupportedOperationException") as error:
        west.replicate_key(KeyId=key_id, ReplicaRegion=EU)
    assert error.value.response["Error"]["Message"] == f"{key_arn(key_id, WEST)} is not a multi-Region primary key."
    with expect_error("NotFoundException"):
        east.replicate_key(KeyId="mrk-" + "0" * 32, ReplicaRegion=WEST)
    with expect_error("ValidationException") as error:
        east.replicate_key(KeyId=key_id, ReplicaRegion="xx-nowhere-9")
    assert error.value.response["Error"]["Message"] == "The replica Region xx-nowhere-9 is not a Region this service serves."
    # A malformed mrk id is no key id.
    with expect_error("NotFoundException") as error:
        east.describe_key(KeyId="mrk-" + "A" * 32)
    assert error.value.response["Error"]["Message"] == f"Invalid keyId 'mrk-{'A' * 32}'"


def test_rotation_is_shared(east, west):
    key_id = east.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    first_material = east.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"]
    assert west.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"] == first_material
    before = west.encrypt(KeyId=key_id, Plaintext=b"before")["CiphertextBlob"]
    east.rotate_key_on_demand(KeyId=key_id)
    rotated_material = west.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"]
    assert rotated_material != first_material
    assert east.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"] == rotated_material
    after = west.encrypt(KeyId=key_id, Plaintext=b"after")["CiphertextBlob"]
    assert before[17:21] == b"\0\0\0\1" and after[17:21] == b"\0\0\0\2"
    assert east.decrypt(CiphertextBlob=before)["Plaintext"] == b"before"
    assert east.decrypt(CiphertextBlob=after)["Plaintext"] == b"after"
    assert [rotation["KeyId"] for rotation in east.list_key_rotations(KeyId=key_id)["Rotations"]] == [key_arn(key_id, REGION)]


def test_a_replica_rotates_with_its_primary(east, west):
    key_id = east.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    east.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=100)
    assert west.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True
    assert west.get_key_rotation_status(KeyId=key_id)["RotationPeriodInDays"] == 100
    for call in (lambda: west.enable_key_rotation(KeyId=key_id), lambda: west.disable_key_rotation(KeyId=key_id),
                 lambda: west.rotate_key_on_demand(KeyId=key_id)):
        with expect_error("UnsupportedOperationException") as error:
            call()
        assert error.value.response["Error"]["Message"] == f"{key_arn(key_id, WEST)} is a multi-Region replica key: its rotation is its primary key's."


def test_update_primary_region_swaps_the_roles(east, west, eu):
    key_id = east.create_key(MultiRegion=True, Description="first primary")["KeyMetadata"]["KeyId"]
    east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    east.replicate_key(KeyId=key_id, ReplicaRegion=EU)
    east.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=120)
    blob = east.encrypt(KeyId=key_id, Plaintext=b"before the move")["CiphertextBlob"]
    east.update_primary_region(KeyId=key_id, PrimaryRegion=WEST)
    for client in (east, west, eu):
        configuration = client.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]
        assert configuration["PrimaryKey"] == {"Arn": key_arn(key_id, WEST), "Region": WEST}
        assert configuration["ReplicaKeys"] == [{"Arn": key_arn(key_id, REGION), "Region": REGION}, {"Arn": key_arn(key_id, EU), "Region": EU}]
    assert east.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA"
    assert west.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]["MultiRegionKeyType"] == "PRIMARY"
    assert east.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "first primary"
    # Rotation moved with the role; the new primary replicates and rotates, the old one does neither.
    assert west.get_key_rotation_status(KeyId=key_id)["RotationPeriodInDays"] == 120
    assert east.get_key_rotation_status(KeyId=key_id)["RotationPeriodInDays"] == 120
    with expect_error("UnsupportedOperationException"):
        east.replicate_key(KeyId=key_id, ReplicaRegion="ap-south-1")
    west.rotate_key_on_demand(KeyId=key_id)
    assert eu.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before the move"
    assert west.encrypt(KeyId=key_id, Plaintext=b"after")["CiphertextBlob"][17:21] == b"\0\0\0\2"
    # The old primary's Region can be primary again.
    west.update_primary_region(KeyId=key_arn(key_id, WEST), PrimaryRegion=REGION)
    assert east.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]["MultiRegionKeyType"] == "PRIMARY"


def test_update_primary_region_errors(east, west):
    single = east.create_key()["KeyMetadata"]
    with expect_error("UnsupportedOperationException") as error:
        east.update_primary_region(KeyId=single["KeyId"], PrimaryRegion=WEST)
    assert error.value.response["Error"]["Message"] == f"{single['Arn']} is not a multi-Region key."
    key_id = east.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    with expect_error("NotFoundException") as error:
        east.update_primary_region(KeyId=key_id, PrimaryRegion=WEST)
    assert error.value.response["Error"]["Message"] == f"Key '{key_arn(key_id, WEST)}' does not exist"
    with expect_error("ValidationException") as error:
        east.update_primary_region(KeyId=key_id, PrimaryRegion=REGION)
    assert error.value.response["Error"]["Message"] == f"{key_arn(key_id, REGION)} is already the primary key in {REGION}."
    east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    with expect_error("UnsupportedOperationException") as error:
        west.update_primary_region(KeyId=key_id, PrimaryRegion=REGION)
    assert error.value.response["Error"]["Message"] == f"{key_arn(key_id, WEST)} is not a multi-Region primary key."
    west.disable_key(KeyId=key_id)
    with expect_error("KMSInvalidStateException") as error:
        east.update_primary_region(KeyId=key_id, PrimaryRegion=WEST)
    assert error.value.response["Error"]["Message"] == (
        f"{key_arn(key_id, WEST)} is Disabled; updating the primary Region needs both keys Enabled.")


def test_a_primary_key_with_replicas_waits_for_them(east, west):
    key_id = east.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    scheduled = east.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert scheduled["KeyState"] == "PendingReplicaDeletion" and scheduled["PendingWindowInDays"] == 7
    assert "DeletionDate" not in scheduled
    described = east.describe_key(KeyId=key_id)["KeyMetadata"]
    assert described["KeyState"] == "PendingReplicaDeletion" and described["Enabled"] is False and "DeletionDate" not in described
    with expect_error("KMSInvalidStateException") as error:
        east.encrypt(KeyId=key_id, Plaintext=b"x")
    assert error.value.response["Error"]["Message"] == f"{key_arn(key_id, REGION)} is pending deletion."
    # The replica is unaffected, and is deleted on its own schedule.
    assert west.decrypt(CiphertextBlob=west.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"])["Plaintext"] == b"x"
    assert west.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)["KeyState"] == "PendingDeletion"
    assert east.cancel_key_deletion(KeyId=key_id)["KeyId"] == key_arn(key_id, REGION)
    assert east.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    # A key of a single Region, or a primary whose replicas are gone, is deleted as before.
    single = east.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    assert east.schedule_key_deletion(KeyId=single, PendingWindowInDays=7)["KeyState"] == "PendingDeletion"


def test_hmac_and_signing_keys_replicate_too(east, west):
    mac_key = east.create_key(MultiRegion=True, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    east.replicate_key(KeyId=mac_key, ReplicaRegion=WEST)
    mac = east.generate_mac(KeyId=mac_key, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert west.verify_mac(KeyId=mac_key, Message=b"m", MacAlgorithm="HMAC_SHA_256", Mac=mac)["MacValid"] is True
    signing_key = east.create_key(MultiRegion=True, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    east.replicate_key(KeyId=signing_key, ReplicaRegion=WEST)
    assert west.get_public_key(KeyId=signing_key)["PublicKey"] == east.get_public_key(KeyId=signing_key)["PublicKey"]
    signature = west.sign(KeyId=signing_key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    assert east.verify(KeyId=signing_key, Message=b"m", Signature=signature, SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"] is True


def test_multi_region_condition_keys(east, west):
    root = {"Sid": "root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"}, "Action": "kms:*", "Resource": "*"}
    no_eu = {"Sid": "no-eu", "Effect": "Deny", "Principal": "*", "Action": "kms:ReplicateKey", "Resource": "*",
             "Condition": {"StringEquals": {"kms:ReplicaRegion": EU}}}
    policy = json.dumps({"Version": "2012-10-17", "Statement": [root, no_eu]})
    key_id = east.create_key(MultiRegion=True, Policy=policy)["KeyMetadata"]["KeyId"]
    with expect_error("AccessDeniedException"):
        east.replicate_key(KeyId=key_id, ReplicaRegion=EU)
    no_replica_encrypt = {"Sid": "no-replica-encrypt", "Effect": "Deny", "Principal": "*", "Action": "kms:Encrypt", "Resource": "*",
                          "Condition": {"StringEquals": {"kms:MultiRegionKeyType": "REPLICA"}, "Bool": {"kms:MultiRegion": "true"}}}
    replica_policy = json.dumps({"Version": "2012-10-17", "Statement": [root, no_replica_encrypt]})
    east.replicate_key(KeyId=key_id, ReplicaRegion=WEST, Policy=replica_policy)
    with expect_error("AccessDeniedException"):
        west.encrypt(KeyId=key_id, Plaintext=b"x")
    blob = east.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
    assert west.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    no_move = {"Sid": "no-move", "Effect": "Deny", "Principal": "*", "Action": "kms:UpdatePrimaryRegion", "Resource": "*",
               "Condition": {"StringEquals": {"kms:PrimaryRegion": WEST}}}
    east.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps({"Version": "2012-10-17", "Statement": [root, no_move]}))
    with expect_error("AccessDeniedException"):
        east.update_primary_region(KeyId=key_id, PrimaryRegion=WEST)
