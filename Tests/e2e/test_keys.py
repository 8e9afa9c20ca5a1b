"""Key lifecycle: CreateKey, DescribeKey, ListKeys, Enable/Disable, descriptions, deletion scheduling."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from trent_e2e import ACCOUNT_ID, alias_arn, expect_error, is_uuid, key_arn, tags_dict, utcnow

POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Id": "e2e-policy",
        "Statement": [
            {
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ],
    }
)


def describe(kms, key_id):
    return kms.describe_key(KeyId=key_id)["KeyMetadata"]


# --------------------------------------------------------------------------- CreateKey

def test_create_key_defaults(kms):
    before = utcnow()
    md = kms.create_key(Description="e2e default key")["KeyMetadata"]
    after = utcnow()
    key_id = md["KeyId"]
    assert is_uuid(key_id), key_id
    assert md["Arn"] == key_arn(key_id)
    assert md["AWSAccountId"] == ACCOUNT_ID
    assert md["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert md["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert md["Origin"] == "AWS_KMS"
    assert md["KeyManager"] == "CUSTOMER"
    assert md["KeyState"] == "Enabled"
    assert md["Enabled"] is True
    assert md["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert md["MultiRegion"] is False
    assert md["Description"] == "e2e default key"
    assert "DeletionDate" not in md
    assert isinstance(md["CreationDate"], dt.datetime)
    slack = dt.timedelta(seconds=5)
    assert before - slack <= md["CreationDate"] <= after + slack


def test_create_key_describe_matches(kms):
    md = kms.create_key(Description="round trip")["KeyMetadata"]
    described = describe(kms, md["KeyId"])
    for field in ("KeyId", "Arn", "AWSAccountId", "KeySpec", "KeyUsage", "Origin", "KeyManager", "KeyState",
                  "Enabled", "EncryptionAlgorithms", "Description", "MultiRegion"):
        assert described[field] == md[field], field
    assert abs((described["CreationDate"] - md["CreationDate"]).total_seconds()) < 1


def test_create_key_without_description_has_empty_description(kms):
    md = kms.create_key()["KeyMetadata"]
    assert describe(kms, md["KeyId"]).get("Description", "") == ""


def test_create_key_ids_are_unique(new_key):
    ids = {new_key() for _ in range(3)}
    assert len(ids) == 3


def test_create_key_with_tags(kms):
    tags = [{"TagKey": "team", "TagValue": "crypto"}, {"TagKey": "env", "TagValue": "e2e"}]
    key_id = kms.create_key(Tags=tags)["KeyMetadata"]["KeyId"]
    listed = kms.list_resource_tags(KeyId=key_id)
    assert tags_dict(listed["Tags"]) == {"team": "crypto", "env": "e2e"}


def test_create_key_with_policy(kms):
    md = kms.create_key(Policy=POLICY, Description="with policy")["KeyMetadata"]
    assert md["KeyState"] == "Enabled"
    assert describe(kms, md["KeyId"])["Description"] == "with policy"


@pytest.mark.parametrize("spec, usage", [("SM2", "SIGN_VERIFY"), ("ML_DSA_65", "SIGN_VERIFY"), ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY")])
def test_create_key_spec_trent_has_no_keys_for(kms, spec, usage):
    # SM2 exists only in AWS's China Regions; ML-DSA and Ed25519 keys Trent does not make (yet).
    with expect_error("UnsupportedOperationException"):
        kms.create_key(KeySpec=spec, KeyUsage=usage)


def test_create_key_sign_verify_symmetric_is_invalid(kms):
    with expect_error("ValidationException"):
        kms.create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="SIGN_VERIFY")


def test_create_key_reserved_tag_prefix(kms):
    with expect_error("TagException"):
        kms.create_key(Tags=[{"TagKey": "aws:owner", "TagValue": "me"}])


# --------------------------------------------------------------------------- DescribeKey

def test_describe_key_by_every_identifier(kms, new_key, new_alias):
    key_id = new_key()
    alias = new_alias(key_id)
    for ident in (key_id, key_arn(key_id), alias, alias_arn(alias)):
        md = describe(kms, ident)
        assert md["KeyId"] == key_id, ident
        assert md["Arn"] == key_arn(key_id), ident


@pytest.mark.parametrize(
    "ident",
    [
        str(uuid.uuid4()),
        key_arn(str(uuid.uuid4())),
        "not-a-key-id",
        "alias/e2e-no-such-alias",
        alias_arn("alias/e2e-no-such-alias"),
    ],
    ids=["unknown-uuid", "unknown-arn", "garbage", "unknown-alias", "unknown-alias-arn"],
)
def test_describe_key_not_found(kms, ident):
    with expect_error("NotFoundException"):
        kms.describe_key(KeyId=ident)


# --------------------------------------------------------------------------- ListKeys

def test_list_keys_pagination(kms, new_key):
    created = {new_key(Description=f"list-{i}") for i in range(5)}
    seen: list[str] = []
    marker = None
    pages = 0
    while True:
        kwargs = {"Limit": 2}
        if marker:
            kwargs["Marker"] = marker
        page = kms.list_keys(**kwargs)
        pages += 1
        assert pages < 10_000, "pagination does not terminate"
        assert len(page["Keys"]) <= 2
        if page["Truncated"]:
            assert page["Keys"], "a truncated page must not be empty"
        for entry in page["Keys"]:
            assert entry["KeyArn"] == key_arn(entry["KeyId"])
            seen.append(entry["KeyId"])
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
        assert marker
    assert len(seen) == len(set(seen)), "a key was listed twice"
    assert created <= set(seen)
    everything = kms.list_keys(Limit=1000)
    assert everything["Truncated"] is False
    assert {e["KeyId"] for e in everything["Keys"]} == set(seen)
    assert pages >= 3


@pytest.mark.parametrize("limit", [0, 1001])
def test_list_keys_limit_out_of_range(kms, limit):
    with expect_error("ValidationException"):
        kms.list_keys(Limit=limit)


def test_list_keys_bad_marker(kms, new_key):
    new_key()
    with expect_error("InvalidMarkerException"):
        kms.list_keys(Limit=1, Marker="this-is-not-a-marker")


# --------------------------------------------------------------------------- Enable / Disable

def test_disable_and_enable_key(kms, new_key):
    key_id = new_key()
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"before disable")["CiphertextBlob"]

    assert kms.disable_key(KeyId=key_id)["ResponseMetadata"]["HTTPStatusCode"] == 200
    md = describe(kms, key_id)
    assert md["KeyState"] == "Disabled"
    assert md["Enabled"] is False

    with expect_error("DisabledException"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    with expect_error("DisabledException"):
        kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    with expect_error("DisabledException"):
        kms.generate_data_key_without_plaintext(KeyId=key_id, KeySpec="AES_256")
    with expect_error("DisabledException"):
        kms.decrypt(CiphertextBlob=blob)

    kms.enable_key(KeyId=key_id)
    md = describe(kms, key_id)
    assert md["KeyState"] == "Enabled"
    assert md["Enabled"] is True
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before disable"


def test_enable_disable_by_arn(kms, new_key):
    key_id = new_key()
    kms.disable_key(KeyId=key_arn(key_id))
    assert describe(kms, key_id)["KeyState"] == "Disabled"
    kms.enable_key(KeyId=key_arn(key_id))
    assert describe(kms, key_id)["KeyState"] == "Enabled"


@pytest.mark.parametrize("op", ["enable_key", "disable_key", "update_key_description"])
def test_lifecycle_ops_on_unknown_key(kms, op):
    kwargs = {"KeyId": str(uuid.uuid4())}
    if op == "update_key_description":
        kwargs["Description"] = "x"
    with expect_error("NotFoundException"):
        getattr(kms, op)(**kwargs)


# --------------------------------------------------------------------------- UpdateKeyDescription

def test_update_key_description(kms, new_key):
    key_id = new_key(Description="old")
    kms.update_key_description(KeyId=key_id, Description="new description")
    assert describe(kms, key_id)["Description"] == "new description"
    kms.update_key_description(KeyId=key_arn(key_id), Description="")
    assert describe(kms, key_id).get("Description", "") == ""


# --------------------------------------------------------------------------- deletion

def _assert_near(actual: dt.datetime, expected: dt.datetime, slack: dt.timedelta):
    assert expected - slack <= actual <= expected + slack, f"{actual} is not within {slack} of {expected}"


def test_schedule_key_deletion_default_window(kms, new_key):
    key_id = new_key()
    now = utcnow()
    resp = kms.schedule_key_deletion(KeyId=key_id)
    assert resp["KeyId"] == key_arn(key_id)
    assert resp["KeyState"] == "PendingDeletion"
    assert resp["PendingWindowInDays"] == 30
    assert isinstance(resp["DeletionDate"], dt.datetime)
    # AWS may round the date up to a day boundary; allow a day of slack either way.
    _assert_near(resp["DeletionDate"], now + dt.timedelta(days=30), dt.timedelta(days=1))

    md = describe(kms, key_id)
    assert md["KeyState"] == "PendingDeletion"
    assert md["Enabled"] is False
    assert abs((md["DeletionDate"] - resp["DeletionDate"]).total_seconds()) < 1


def test_schedule_key_deletion_custom_window(kms, new_key):
    key_id = new_key()
    now = utcnow()
    resp = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert resp["PendingWindowInDays"] == 7
    _assert_near(resp["DeletionDate"], now + dt.timedelta(days=7), dt.timedelta(days=1))


@pytest.mark.parametrize("days", [6, 31])
def test_schedule_key_deletion_window_out_of_range(kms, new_key, days):
    key_id = new_key()
    with expect_error("ValidationException"):
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=days)
    assert describe(kms, key_id)["KeyState"] == "Enabled"


def test_schedule_key_deletion_unknown_key(kms):
    with expect_error("NotFoundException"):
        kms.schedule_key_deletion(KeyId=str(uuid.uuid4()))


def test_pending_deletion_key_refuses_use(kms, new_key):
    key_id = new_key()
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"pending")["CiphertextBlob"]
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)

    calls = {
        "Encrypt": lambda: kms.encrypt(KeyId=key_id, Plaintext=b"x"),
        "Decrypt": lambda: kms.decrypt(CiphertextBlob=blob),
        "GenerateDataKey": lambda: kms.generate_data_key(KeyId=key_id, KeySpec="AES_256"),
        "EnableKey": lambda: kms.enable_key(KeyId=key_id),
        "DisableKey": lambda: kms.disable_key(KeyId=key_id),
        "ScheduleKeyDeletion": lambda: kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7),
    }
    for name, call in calls.items():
        with expect_error("KMSInvalidStateException", what=name):
            call()
    md = describe(kms, key_id)
    assert md["KeyState"] == "PendingDeletion"
    assert isinstance(md["DeletionDate"], dt.datetime)


def test_cancel_key_deletion(kms, new_key):
    key_id = new_key()
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"survives")["CiphertextBlob"]
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)

    resp = kms.cancel_key_deletion(KeyId=key_id)
    assert resp["KeyId"] == key_arn(key_id)
    md = describe(kms, key_id)
    assert md["KeyState"] == "Disabled"
    assert md["Enabled"] is False
    assert "DeletionDate" not in md

    kms.enable_key(KeyId=key_id)
    assert describe(kms, key_id)["KeyState"] == "Enabled"
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"survives"


def test_cancel_key_deletion_when_not_pending(kms, new_key):
    key_id = new_key()
    with expect_error("KMSInvalidStateException"):
        kms.cancel_key_deletion(KeyId=key_id)
    assert describe(kms, key_id)["KeyState"] == "Enabled"


def test_cancel_key_deletion_unknown_key(kms):
    with expect_error("NotFoundException"):
        kms.cancel_key_deletion(KeyId=str(uuid.uuid4()))
