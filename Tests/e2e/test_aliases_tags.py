"""Aliases (CreateAlias, ListAliases, UpdateAlias, DeleteAlias) and tags (TagResource, UntagResource, ListResourceTags)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from trent_e2e import alias_arn, expect_error, key_arn, tags_dict, unique_alias


def aliases_of(kms, key_id) -> dict[str, dict]:
    resp = kms.list_aliases(KeyId=key_id, Limit=100)
    assert resp["Truncated"] is False
    return {a["AliasName"]: a for a in resp["Aliases"]}


# --------------------------------------------------------------------------- aliases

def test_create_alias_and_list(kms, new_key):
    key_id = new_key()
    name = unique_alias()
    kms.create_alias(AliasName=name, TargetKeyId=key_id)
    entry = aliases_of(kms, key_id)[name]
    assert entry["AliasName"] == name
    assert entry["AliasArn"] == alias_arn(name)
    assert entry["TargetKeyId"] == key_id
    assert isinstance(entry["CreationDate"], dt.datetime)
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == key_id


def test_create_alias_targeting_key_arn(kms, new_key):
    key_id = new_key()
    name = unique_alias()
    kms.create_alias(AliasName=name, TargetKeyId=key_arn(key_id))
    assert aliases_of(kms, key_id)[name]["TargetKeyId"] == key_id


def test_list_aliases_key_filter(kms, new_key, new_alias):
    k1, k2 = new_key(), new_key()
    a1, a2, b1 = new_alias(k1), new_alias(k1), new_alias(k2)
    assert set(aliases_of(kms, k1)) == {a1, a2}
    assert set(aliases_of(kms, key_arn(k1))) == {a1, a2}
    assert set(aliases_of(kms, k2)) == {b1}
    assert aliases_of(kms, new_key()) == {}


def test_list_aliases_pagination(kms, new_key, new_alias):
    key_id = new_key()
    created = {new_alias(key_id) for _ in range(5)}
    seen: list[str] = []
    marker = None
    pages = 0
    while True:
        kwargs = {"Limit": 2}
        if marker:
            kwargs["Marker"] = marker
        page = kms.list_aliases(**kwargs)
        pages += 1
        assert pages < 10_000, "pagination does not terminate"
        assert len(page["Aliases"]) <= 2
        for entry in page["Aliases"]:
            assert entry["AliasArn"] == alias_arn(entry["AliasName"])
            seen.append(entry["AliasName"])
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        assert page["Aliases"], "a truncated page must not be empty"
        marker = page["NextMarker"]
        assert marker
    assert len(seen) == len(set(seen)), "an alias was listed twice"
    assert created <= set(seen)
    assert pages >= 3
    everything = kms.list_aliases(Limit=100)
    if not everything["Truncated"]:
        assert {a["AliasName"] for a in everything["Aliases"]} == set(seen)


def test_list_aliases_bad_marker(kms):
    with expect_error("InvalidMarkerException"):
        kms.list_aliases(Limit=1, Marker="this-is-not-a-marker")


def test_update_alias(kms, new_key, new_alias):
    k1, k2 = new_key(), new_key()
    name = new_alias(k1)
    kms.update_alias(AliasName=name, TargetKeyId=k2)
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == k2
    assert name not in aliases_of(kms, k1)
    assert aliases_of(kms, k2)[name]["TargetKeyId"] == k2


def test_delete_alias(kms, new_key, new_alias):
    key_id = new_key()
    name = new_alias(key_id)
    kms.delete_alias(AliasName=name)
    assert aliases_of(kms, key_id) == {}
    with expect_error("NotFoundException"):
        kms.describe_key(KeyId=name)
    # the key itself is untouched, and the name can be reused
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    kms.create_alias(AliasName=name, TargetKeyId=key_id)
    assert set(aliases_of(kms, key_id)) == {name}


def test_create_alias_duplicate(kms, new_key, new_alias):
    k1, k2 = new_key(), new_key()
    name = new_alias(k1)
    with expect_error("AlreadyExistsException"):
        kms.create_alias(AliasName=name, TargetKeyId=k2)
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == k1


def test_create_alias_without_prefix(kms, new_key):
    with expect_error("ValidationException"):
        kms.create_alias(AliasName=f"e2e-{uuid.uuid4().hex[:8]}", TargetKeyId=new_key())


def test_create_alias_reserved_aws_prefix(kms, new_key):
    with expect_error("NotAuthorizedException"):
        kms.create_alias(AliasName="alias/aws/foo", TargetKeyId=new_key())


def test_create_alias_with_a_colon(kms, new_key):
    """The model's pattern admits ':', AWS does not in a name (moto's test__create_alias__raises_if_alias_has_restricted_characters_semicolon)."""
    key_id = new_key()
    name = f"alias/e2e-{uuid.uuid4().hex[:8]}:colon"
    with expect_error("ValidationException") as excinfo:
        kms.create_alias(AliasName=name, TargetKeyId=key_id)
    assert excinfo.value.response["Error"]["Message"] == f"{name} contains invalid characters for an alias"
    assert name not in aliases_of(kms, key_id)


@pytest.mark.parametrize("as_arn", [False, True], ids=["name", "arn"])
def test_alias_targeting_an_alias(kms, new_key, new_alias, as_arn):
    """An alias as TargetKeyId is a ValidationException in CreateAlias and UpdateAlias (moto's
    test__create_alias__raises_if_target_key_id_is_existing_alias), not the NotFoundException of other key-only operations."""
    key_id = new_key()
    existing = new_alias(key_id)
    target = alias_arn(existing) if as_arn else existing
    with expect_error("ValidationException") as excinfo:
        kms.create_alias(AliasName=unique_alias(), TargetKeyId=target)
    assert excinfo.value.response["Error"]["Message"] == "Aliases must refer to keys. Not aliases"
    with expect_error("ValidationException") as excinfo:
        kms.update_alias(AliasName=existing, TargetKeyId=target)
    assert excinfo.value.response["Error"]["Message"] == "Aliases must refer to keys. Not aliases"
    assert aliases_of(kms, key_id)[existing]["TargetKeyId"] == key_id


def test_create_alias_unknown_key(kms):
    with expect_error("NotFoundException"):
        kms.create_alias(AliasName=unique_alias(), TargetKeyId=str(uuid.uuid4()))


def test_create_alias_for_pending_deletion_key(kms, new_key):
    key_id = new_key()
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    with expect_error("KMSInvalidStateException"):
        kms.create_alias(AliasName=unique_alias(), TargetKeyId=key_id)


def test_delete_unknown_alias(kms):
    with expect_error("NotFoundException"):
        kms.delete_alias(AliasName=unique_alias("missing"))


def test_update_unknown_alias(kms, new_key):
    with expect_error("NotFoundException"):
        kms.update_alias(AliasName=unique_alias("missing"), TargetKeyId=new_key())


def test_encrypt_through_alias(kms, new_key, new_alias):
    key_id = new_key()
    name = new_alias(key_id)
    for ident in (name, alias_arn(name)):
        enc = kms.encrypt(KeyId=ident, Plaintext=b"via alias")
        assert enc["KeyId"] == key_arn(key_id)
        dec = kms.decrypt(CiphertextBlob=enc["CiphertextBlob"])
        assert dec["Plaintext"] == b"via alias"
        assert dec["KeyId"] == key_arn(key_id)


# --------------------------------------------------------------------------- tags

def tags_of(kms, key_id) -> dict[str, str]:
    resp = kms.list_resource_tags(KeyId=key_id)
    return tags_dict(resp["Tags"])


def test_new_key_has_no_tags(kms, new_key):
    resp = kms.list_resource_tags(KeyId=new_key())
    assert resp["Tags"] == []
    assert resp.get("Truncated", False) is False


def test_tag_untag_list(kms, new_key):
    key_id = new_key()
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "a", "TagValue": "1"}, {"TagKey": "b", "TagValue": "2"}])
    assert tags_of(kms, key_id) == {"a": "1", "b": "2"}

    kms.tag_resource(KeyId=key_arn(key_id), Tags=[{"TagKey": "c", "TagValue": ""}])
    assert tags_of(kms, key_id) == {"a": "1", "b": "2", "c": ""}

    kms.untag_resource(KeyId=key_id, TagKeys=["a", "c"])
    assert tags_of(kms, key_id) == {"b": "2"}
    assert tags_of(kms, key_arn(key_id)) == {"b": "2"}


def test_tag_overwrite_updates_value(kms, new_key):
    key_id = new_key(Tags=[{"TagKey": "stage", "TagValue": "dev"}])
    kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "stage", "TagValue": "prod"}])
    assert tags_of(kms, key_id) == {"stage": "prod"}


def test_untag_missing_key_is_noop(kms, new_key):
    key_id = new_key(Tags=[{"TagKey": "keep", "TagValue": "me"}])
    kms.untag_resource(KeyId=key_id, TagKeys=["never-set"])
    assert tags_of(kms, key_id) == {"keep": "me"}


def test_tag_reserved_prefix(kms, new_key):
    key_id = new_key(Tags=[{"TagKey": "ok", "TagValue": "1"}])
    with expect_error("TagException"):
        kms.tag_resource(KeyId=key_id, Tags=[{"TagKey": "aws:created-by", "TagValue": "x"}])
    with expect_error("TagException"):
        kms.untag_resource(KeyId=key_id, TagKeys=["aws:created-by"])
    assert tags_of(kms, key_id) == {"ok": "1"}


@pytest.mark.parametrize("op", ["tag_resource", "untag_resource", "list_resource_tags"])
def test_tags_unknown_key(kms, op):
    kwargs = {"KeyId": str(uuid.uuid4())}
    if op == "tag_resource":
        kwargs["Tags"] = [{"TagKey": "a", "TagValue": "b"}]
    elif op == "untag_resource":
        kwargs["TagKeys"] = ["a"]
    with expect_error("NotFoundException"):
        getattr(kms, op)(**kwargs)
