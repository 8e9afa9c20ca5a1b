"""Several Regions in one deployment: the SigV4 scope picks the Region of a request; keys, aliases, grants and
ARNs are regional as in AWS."""

from __future__ import annotations

import json

from trent_e2e import ACCOUNT_ID, EU, REGION, WEST, audit_record_files, expect_error, key_arn, make_kms, unique_alias


def test_a_key_lives_in_the_region_of_its_request(east, west):
    key = west.create_key(Description="west")["KeyMetadata"]
    assert key["Arn"] == key_arn(key["KeyId"], WEST)
    assert west.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["Arn"] == key_arn(key["KeyId"], WEST)
    assert west.describe_key(KeyId=key_arn(key["KeyId"], WEST))["KeyMetadata"]["KeyId"] == key["KeyId"]
    # In another Region it does not exist, by id or by an ARN naming that Region.
    for named in (key["KeyId"], key_arn(key["KeyId"], REGION)):
        with expect_error("NotFoundException") as error:
            east.describe_key(KeyId=named)
        assert error.value.response["Error"]["Message"] == f"Key '{key_arn(key['KeyId'], REGION)}' does not exist"
    # An ARN of the other Region names no key of this one.
    with expect_error("NotFoundException") as error:
        east.describe_key(KeyId=key_arn(key["KeyId"], WEST))
    assert error.value.response["Error"]["Message"] == f"Key '{key_arn(key['KeyId'], WEST)}' does not exist"
    with expect_error("NotFoundException"):
        east.encrypt(KeyId=key["KeyId"], Plaintext=b"regional")


def test_list_keys_lists_the_requests_region_only(east, west):
    west_key = west.create_key()["KeyMetadata"]["KeyId"]
    east_key = east.create_key()["KeyMetadata"]["KeyId"]
    west_listed = {entry["KeyId"]: entry["KeyArn"] for entry in west.get_paginator("list_keys").paginate().build_full_result()["Keys"]}
    east_listed = {entry["KeyId"]: entry["KeyArn"] for entry in east.get_paginator("list_keys").paginate().build_full_result()["Keys"]}
    assert west_listed[west_key] == key_arn(west_key, WEST) and east_key not in west_listed
    assert east_listed[east_key] == key_arn(east_key, REGION) and west_key not in east_listed
    assert all(value.startswith(f"arn:aws:kms:{WEST}:") for value in west_listed.values())


def test_an_alias_name_is_unique_per_region(east, west):
    name = unique_alias("regional")
    west_key = west.create_key()["KeyMetadata"]["KeyId"]
    east_key = east.create_key()["KeyMetadata"]["KeyId"]
    west.create_alias(AliasName=name, TargetKeyId=west_key)
    east.create_alias(AliasName=name, TargetKeyId=east_key)
    with expect_error("AlreadyExistsException") as error:
        west.create_alias(AliasName=name, TargetKeyId=west_key)
    assert error.value.response["Error"]["Message"] == f"An alias with the name arn:aws:kms:{WEST}:{ACCOUNT_ID}:{name} already exists"
    assert west.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == west_key
    assert east.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == east_key
    west_aliases = {a["AliasName"]: a for a in west.list_aliases(KeyId=west_key)["Aliases"]}
    assert west_aliases[name]["AliasArn"] == f"arn:aws:kms:{WEST}:{ACCOUNT_ID}:{name}"
    assert west_aliases[name]["TargetKeyId"] == west_key
    # A key of another Region cannot be an alias's target.
    with expect_error("NotFoundException"):
        west.create_alias(AliasName=unique_alias("cross"), TargetKeyId=east_key)
    west.delete_alias(AliasName=name)
    with expect_error("NotFoundException") as error:
        west.describe_key(KeyId=name)
    assert error.value.response["Error"]["Message"] == f"Alias 'arn:aws:kms:{WEST}:{ACCOUNT_ID}:{name}' is not found."
    assert east.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == east_key


def test_a_ciphertext_of_a_single_region_key_does_not_decrypt_in_another_region(east, west):
    key_id = west.create_key()["KeyMetadata"]["KeyId"]
    blob = west.encrypt(KeyId=key_id, Plaintext=b"stays in us-west-2")["CiphertextBlob"]
    assert west.decrypt(CiphertextBlob=blob)["KeyId"] == key_arn(key_id, WEST)
    with expect_error("InvalidCiphertextException"):
        east.decrypt(CiphertextBlob=blob)


def test_grants_are_regional(east, west):
    key_id = west.create_key()["KeyMetadata"]["KeyId"]
    grantee = f"arn:aws:iam::{ACCOUNT_ID}:user/regional-grantee"
    grant = west.create_grant(KeyId=key_id, GranteePrincipal=grantee, RetiringPrincipal=grantee, Operations=["Decrypt"])
    listed = west.list_grants(KeyId=key_id)["Grants"]
    assert [g["GrantId"] for g in listed] == [grant["GrantId"]] and listed[0]["KeyId"] == key_arn(key_id, WEST)
    with expect_error("NotFoundException"):
        east.list_grants(KeyId=key_id)
    assert grant["GrantId"] in [g["GrantId"] for g in west.list_retirable_grants(RetiringPrincipal=grantee)["Grants"]]
    assert grant["GrantId"] not in [g["GrantId"] for g in east.list_retirable_grants(RetiringPrincipal=grantee)["Grants"]]


def test_aws_managed_keys_are_per_region(east, west, ids):
    """alias/aws/<service> comes into being in a Region for the service principal of that Region."""
    ids.service(f"sqs.{WEST}.amazonaws.com")
    managed = west.describe_key(KeyId="alias/aws/sqs")["KeyMetadata"]
    assert managed["KeyManager"] == "AWS" and managed["Arn"] == key_arn(managed["KeyId"], WEST)
    assert "alias/aws/sqs" in [a["AliasName"] for a in west.list_aliases(KeyId=managed["KeyId"])["Aliases"]]
    # sqs.us-east-1.amazonaws.com is not registered: us-east-1 has no such key, and the us-west-2 one is not found there.
    with expect_error("NotFoundException") as error:
        east.describe_key(KeyId="alias/aws/sqs")
    assert error.value.response["Error"]["Message"] == f"Alias 'arn:aws:kms:{REGION}:{ACCOUNT_ID}:alias/aws/sqs' is not found."
    listed = east.get_paginator("list_aliases").paginate().build_full_result()["Aliases"]
    assert "alias/aws/sqs" not in [a["AliasName"] for a in listed]


def test_a_region_outside_the_list_is_refused_as_aws_refuses_it(make_server):
    server = make_server(start=False)
    server.env["TRENT_REGIONS"] = f"{REGION},{EU}"
    server.start()
    assert make_kms(server, region=EU).list_keys()["Keys"] == []
    with expect_error("InvalidSignatureException") as error:
        make_kms(server, region=WEST).list_keys()
    assert error.value.response["Error"]["Message"] == f"Credential should be scoped to a valid region, not '{WEST}'. "


def test_the_audit_record_names_the_requests_region(make_server):
    server = make_server()
    eu = make_kms(server, region=EU)
    key_id = eu.create_key()["KeyMetadata"]["KeyId"]
    eu.describe_key(KeyId=key_id)
    make_kms(server, region=REGION).list_keys()
    server.stop()
    trail = [json.loads(line)["record"] for path in audit_record_files(server.data_dir / "audit") for line in path.read_text().splitlines()]
    assert next(r for r in trail if r["eventName"] == "CreateKey")["awsRegion"] == EU
    describe = next(r for r in trail if r["eventName"] == "DescribeKey")
    assert describe["awsRegion"] == EU
    assert describe["resources"] == [{"accountId": ACCOUNT_ID, "type": "AWS::KMS::Key", "ARN": key_arn(key_id, EU)}]
    assert next(r for r in trail if r["eventName"] == "ListKeys")["awsRegion"] == REGION
