"""Who may call what: every implemented operation, allowed and denied, with the AccessDeniedException message.

Account A: alice (identity policy kms:*), bob (no identity policy), the role auditor (tag team=audit, an
identity policy for Describe/List/Get conditioned on that tag). Account B: carol (kms:*), dave (none).
Keys are alice's, with the default key policy (account root kms:*, i.e. delegation to identity policies):
bob is denied "because no identity-based policy allows", carol (another account, by key ARN) "because no
resource-based policy allows".
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from trent_e2e import (
    ADMIN_POLICY,
    REGION,
    account_alias_arn,
    account_key_arn,
    allow,
    deny,
    expect_denied,
    expect_error,
    policy_json,
    remember_plaintext,
    root_arn,
    root_statement,
    unique_alias,
)


@dataclass
class World:
    a: str
    b: str
    alice: Any
    bob: Any
    auditor: Any
    outsider_role: Any
    carol: Any
    dave: Any


@pytest.fixture(scope="module")
def world(ids) -> World:
    a, b = ids.account("matrix-a"), ids.account("matrix-b")
    tag_policy = policy_json(
        allow(["kms:DescribeKey", "kms:List*", "kms:Get*"], condition={"StringEquals": {"aws:PrincipalTag/team": "audit"}})
    )
    return World(
        a=a,
        b=b,
        alice=ids.user(a, "alice", ADMIN_POLICY),
        bob=ids.user(a, "bob"),
        auditor=ids.role(a, "auditor", tag_policy, tags={"team": "audit"}),
        outsider_role=ids.role(a, "outsider", tag_policy, tags={"team": "sales"}),
        carol=ids.user(b, "carol", ADMIN_POLICY),
        dave=ids.user(b, "dave"),
    )


def default_policy(account: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [
            {
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ],
    }


# --------------------------------------------------------------------------- the operation table

@dataclass
class Op:
    action: str  # kms:<Action> as the denial names it
    call: Callable[[Any, dict], Any]  # (client, state) -> response
    check: Callable[[World, dict, Any], None] = lambda w, s, r: None  # asserts the allowed result
    prepare: Callable[[World, dict], None] = lambda w, s: None  # alice sets up the state
    account_level: bool = False  # resource "*", identity policies only
    same_account_only: bool = False  # aliases: another account gets NotFoundException, not a denial
    resource: Callable[[dict], str] = field(default=lambda s: s["arn"])


def _new_key(w: World) -> tuple[str, str]:
    md = w.alice.kms.create_key(Description="matrix")["KeyMetadata"]
    return md["KeyId"], md["Arn"]


def _prep_disabled(w, s):
    w.alice.kms.disable_key(KeyId=s["arn"])


def _prep_pending(w, s):
    w.alice.kms.schedule_key_deletion(KeyId=s["arn"], PendingWindowInDays=7)


def _prep_alias(w, s):
    s["alias"] = unique_alias("matrix")
    w.alice.kms.create_alias(AliasName=s["alias"], TargetKeyId=s["id"])


def _prep_two_keys_alias(w, s):
    _prep_alias(w, s)
    s["id2"], s["arn2"] = _new_key(w)


def _prep_tags(w, s):
    w.alice.kms.tag_resource(KeyId=s["arn"], Tags=[{"TagKey": "team", "TagValue": "blue"}, {"TagKey": "env", "TagValue": "test"}])


def _prep_ciphertext(w, s):
    s["plaintext"] = b"matrix secret " + os.urandom(8)
    remember_plaintext(s["plaintext"])
    s["blob"] = w.alice.kms.encrypt(KeyId=s["arn"], Plaintext=s["plaintext"], EncryptionContext={"m": "1"})["CiphertextBlob"]


def _prep_reencrypt(w, s):
    _prep_ciphertext(w, s)
    s["id2"], s["arn2"] = _new_key(w)


def _prep_grant(w, s):
    g = w.alice.kms.create_grant(
        KeyId=s["arn"], GranteePrincipal=w.carol.arn, RetiringPrincipal=w.alice.arn, Operations=["Decrypt"])
    s["grant_id"] = g["GrantId"]


def _state_of(w, s):
    return w.alice.kms.describe_key(KeyId=s["arn"])["KeyMetadata"]


def _check_grants_empty(w, s, r):
    assert w.alice.kms.list_grants(KeyId=s["arn"])["Grants"] == []


def _check_list_retirable(w, s, r):
    assert [(g["GrantId"], g["KeyId"]) for g in r["Grants"]] == [(s["grant_id"], s["arn"])]
    assert r["Truncated"] is False


def _check_list_keys(w, s, r):
    arns = [k["KeyArn"] for k in r["Keys"]]
    assert s["arn"] in arns
    assert all(arn.startswith(f"arn:aws:kms:{REGION}:{w.a}:key/") for arn in arns), arns


OPS: dict[str, Op] = {
    "CreateKey": Op(
        "kms:CreateKey", lambda c, s: c.create_key(Description="matrix create"), account_level=True,
        check=lambda w, s, r: (r["KeyMetadata"]["AWSAccountId"] == w.a and r["KeyMetadata"]["KeyManager"] == "CUSTOMER")
        or pytest.fail(f"unexpected CreateKey result {r}")),
    "DescribeKey": Op(
        "kms:DescribeKey", lambda c, s: c.describe_key(KeyId=s["arn"]),
        check=lambda w, s, r: r["KeyMetadata"]["KeyId"] == s["id"] or pytest.fail(str(r))),
    "ListKeys": Op("kms:ListKeys", lambda c, s: c.list_keys(Limit=1000), account_level=True, check=_check_list_keys),
    "EnableKey": Op(
        "kms:EnableKey", lambda c, s: c.enable_key(KeyId=s["arn"]), prepare=_prep_disabled,
        check=lambda w, s, r: _state_of(w, s)["KeyState"] == "Enabled" or pytest.fail("not enabled")),
    "DisableKey": Op(
        "kms:DisableKey", lambda c, s: c.disable_key(KeyId=s["arn"]),
        check=lambda w, s, r: _state_of(w, s)["KeyState"] == "Disabled" or pytest.fail("not disabled")),
    "UpdateKeyDescription": Op(
        "kms:UpdateKeyDescription", lambda c, s: c.update_key_description(KeyId=s["arn"], Description="changed"),
        check=lambda w, s, r: _state_of(w, s)["Description"] == "changed" or pytest.fail("not changed")),
    "ScheduleKeyDeletion": Op(
        "kms:ScheduleKeyDeletion", lambda c, s: c.schedule_key_deletion(KeyId=s["arn"], PendingWindowInDays=7),
        check=lambda w, s, r: (r["KeyState"] == "PendingDeletion" and r["PendingWindowInDays"] == 7) or pytest.fail(str(r))),
    "CancelKeyDeletion": Op(
        "kms:CancelKeyDeletion", lambda c, s: c.cancel_key_deletion(KeyId=s["arn"]), prepare=_prep_pending,
        check=lambda w, s, r: _state_of(w, s)["KeyState"] == "Disabled" or pytest.fail("not cancelled")),
    "CreateAlias": Op(
        "kms:CreateAlias", lambda c, s: c.create_alias(AliasName=s["new_alias"], TargetKeyId=s["arn"]),
        prepare=lambda w, s: s.update(new_alias=unique_alias("matrix-new")), same_account_only=True,
        check=lambda w, s, r: [a["AliasName"] for a in w.alice.kms.list_aliases(KeyId=s["id"])["Aliases"]] == [s["new_alias"]]
        or pytest.fail("alias not created")),
    "UpdateAlias": Op(
        "kms:UpdateAlias", lambda c, s: c.update_alias(AliasName=s["alias"], TargetKeyId=s["arn2"]),
        prepare=_prep_two_keys_alias, same_account_only=True,
        check=lambda w, s, r: [a["AliasName"] for a in w.alice.kms.list_aliases(KeyId=s["id2"])["Aliases"]] == [s["alias"]]
        or pytest.fail("alias not moved")),
    "DeleteAlias": Op(
        "kms:DeleteAlias", lambda c, s: c.delete_alias(AliasName=s["alias"]), prepare=_prep_alias, same_account_only=True,
        check=lambda w, s, r: w.alice.kms.list_aliases(KeyId=s["id"])["Aliases"] == [] or pytest.fail("alias not deleted")),
    "ListAliases": Op(
        "kms:ListAliases", lambda c, s: c.list_aliases(KeyId=s["arn"]), prepare=_prep_alias, account_level=True,
        check=lambda w, s, r: [a["AliasName"] for a in r["Aliases"]] == [s["alias"]] or pytest.fail(str(r))),
    "TagResource": Op(
        "kms:TagResource", lambda c, s: c.tag_resource(KeyId=s["arn"], Tags=[{"TagKey": "k", "TagValue": "v"}]),
        check=lambda w, s, r: w.alice.kms.list_resource_tags(KeyId=s["arn"])["Tags"] == [{"TagKey": "k", "TagValue": "v"}]
        or pytest.fail("not tagged")),
    "UntagResource": Op(
        "kms:UntagResource", lambda c, s: c.untag_resource(KeyId=s["arn"], TagKeys=["team"]), prepare=_prep_tags,
        check=lambda w, s, r: w.alice.kms.list_resource_tags(KeyId=s["arn"])["Tags"] == [{"TagKey": "env", "TagValue": "test"}]
        or pytest.fail("not untagged")),
    "ListResourceTags": Op(
        "kms:ListResourceTags", lambda c, s: c.list_resource_tags(KeyId=s["arn"]), prepare=_prep_tags,
        check=lambda w, s, r: r["Tags"] == [{"TagKey": "env", "TagValue": "test"}, {"TagKey": "team", "TagValue": "blue"}]
        or pytest.fail(str(r))),
    "Encrypt": Op(
        "kms:Encrypt", lambda c, s: c.encrypt(KeyId=s["arn"], Plaintext=b"matrix encrypt plaintext"),
        check=lambda w, s, r: r["KeyId"] == s["arn"] or pytest.fail(str(r))),
    "Decrypt": Op(
        "kms:Decrypt", lambda c, s: c.decrypt(CiphertextBlob=s["blob"], EncryptionContext={"m": "1"}), prepare=_prep_ciphertext,
        check=lambda w, s, r: (r["Plaintext"] == s["plaintext"] and r["KeyId"] == s["arn"]) or pytest.fail(str(r))),
    "ReEncrypt": Op(
        "kms:ReEncryptFrom",
        lambda c, s: c.re_encrypt(CiphertextBlob=s["blob"], SourceEncryptionContext={"m": "1"}, DestinationKeyId=s["arn2"]),
        prepare=_prep_reencrypt,
        check=lambda w, s, r: (r["SourceKeyId"] == s["arn"] and r["KeyId"] == s["arn2"]
                               and w.alice.kms.decrypt(CiphertextBlob=r["CiphertextBlob"])["Plaintext"] == s["plaintext"])
        or pytest.fail(str(r))),
    "GenerateDataKey": Op(
        "kms:GenerateDataKey", lambda c, s: c.generate_data_key(KeyId=s["arn"], KeySpec="AES_256"),
        check=lambda w, s, r: (len(r["Plaintext"]) == 32 and r["KeyId"] == s["arn"]) or pytest.fail("bad data key")),
    "GenerateDataKeyWithoutPlaintext": Op(
        "kms:GenerateDataKeyWithoutPlaintext", lambda c, s: c.generate_data_key_without_plaintext(KeyId=s["arn"], KeySpec="AES_128"),
        check=lambda w, s, r: ("Plaintext" not in r and r["KeyId"] == s["arn"]) or pytest.fail(str(r))),
    "GenerateRandom": Op(
        "kms:GenerateRandom", lambda c, s: c.generate_random(NumberOfBytes=16), account_level=True,
        check=lambda w, s, r: len(r["Plaintext"]) == 16 or pytest.fail(str(r))),
    "GetKeyPolicy": Op(
        "kms:GetKeyPolicy", lambda c, s: c.get_key_policy(KeyId=s["arn"], PolicyName="default"),
        check=lambda w, s, r: (json.loads(r["Policy"]) == default_policy(w.a) and r["PolicyName"] == "default")
        or pytest.fail(str(r))),
    "PutKeyPolicy": Op(
        "kms:PutKeyPolicy",
        lambda c, s: c.put_key_policy(KeyId=s["arn"], PolicyName="default", Policy=s["policy"]),
        prepare=lambda w, s: s.update(policy=policy_json(root_statement(w.a), policy_id="matrix-put")),
        check=lambda w, s, r: w.alice.kms.get_key_policy(KeyId=s["arn"], PolicyName="default")["Policy"] == s["policy"]
        or pytest.fail("policy not stored")),
    "ListKeyPolicies": Op(
        "kms:ListKeyPolicies", lambda c, s: c.list_key_policies(KeyId=s["arn"]),
        check=lambda w, s, r: (r["PolicyNames"] == ["default"] and r["Truncated"] is False) or pytest.fail(str(r))),
    "CreateGrant": Op(
        "kms:CreateGrant", lambda c, s: c.create_grant(KeyId=s["arn"], GranteePrincipal=s["grantee"], Operations=["Encrypt"]),
        prepare=lambda w, s: s.update(grantee=w.bob.arn),
        check=lambda w, s, r: [g["GrantId"] for g in w.alice.kms.list_grants(KeyId=s["arn"])["Grants"]] == [r["GrantId"]]
        or pytest.fail("grant not listed")),
    "ListGrants": Op(
        "kms:ListGrants", lambda c, s: c.list_grants(KeyId=s["arn"]), prepare=_prep_grant,
        check=lambda w, s, r: [g["GrantId"] for g in r["Grants"]] == [s["grant_id"]] or pytest.fail(str(r))),
    "ListRetirableGrants": Op(
        "kms:ListRetirableGrants", lambda c, s: c.list_retirable_grants(RetiringPrincipal=s["retiring"]),
        prepare=lambda w, s: (s.update(retiring=f"arn:aws:iam::{w.a}:role/retirer-{uuid.uuid4().hex[:8]}"),
                              s.update(grant_id=w.alice.kms.create_grant(
                                  KeyId=s["arn"], GranteePrincipal=w.carol.arn, RetiringPrincipal=s["retiring"],
                                  Operations=["Encrypt"])["GrantId"])),
        account_level=True, check=_check_list_retirable),
    "RetireGrant": Op(
        "kms:RetireGrant", lambda c, s: c.retire_grant(KeyId=s["arn"], GrantId=s["grant_id"]), prepare=_prep_grant,
        check=_check_grants_empty),
    "RevokeGrant": Op(
        "kms:RevokeGrant", lambda c, s: c.revoke_grant(KeyId=s["arn"], GrantId=s["grant_id"]), prepare=_prep_grant,
        check=_check_grants_empty),
}


def _prepared(world: World, op: Op) -> dict:
    state: dict = {}
    state["id"], state["arn"] = _new_key(world)
    op.prepare(world, state)
    return state


@pytest.mark.parametrize("name", sorted(OPS))
def test_operation_allowed_for_alice_denied_for_bob(world, name):
    """bob (same account, no identity policy) is denied with the exact message; then alice's call succeeds."""
    op = OPS[name]
    state = _prepared(world, op)
    resource = "*" if op.account_level else op.resource(state)
    with expect_denied(world.bob.arn, op.action, resource, "no-identity", what=f"bob {name}"):
        op.call(world.bob.kms, state)
    response = op.call(world.alice.kms, state)
    op.check(world, state, response)


CROSS_ACCOUNT_OPS = sorted(n for n, op in OPS.items() if not op.account_level and not op.same_account_only)


@pytest.mark.parametrize("name", CROSS_ACCOUNT_OPS)
def test_operation_denied_to_another_account_by_key_arn(world, name):
    """carol (account B, identity policy kms:*) names alice's key by ARN: the default policy does not let B in."""
    op = OPS[name]
    state = _prepared(world, op)
    with expect_denied(world.carol.arn, op.action, op.resource(state), "no-resource", what=f"carol {name}"):
        op.call(world.carol.kms, state)


@pytest.mark.parametrize("name", ["CreateAlias", "UpdateAlias", "DeleteAlias"])
def test_alias_operations_from_another_account_find_nothing(world, name):
    op = OPS[name]
    state = _prepared(world, op)
    with expect_error("NotFoundException", f"carol {name}"):
        op.call(world.carol.kms, state)


ACCOUNT_LEVEL_CALLS = {
    "CreateKey": lambda c, w: c.create_key(Description="account B key"),
    "ListKeys": lambda c, w: c.list_keys(Limit=1000),
    "ListAliases": lambda c, w: c.list_aliases(Limit=100),
    "GenerateRandom": lambda c, w: c.generate_random(NumberOfBytes=8),
    "ListRetirableGrants": lambda c, w: c.list_retirable_grants(RetiringPrincipal=f"arn:aws:iam::{w.b}:role/nobody"),
}


@pytest.mark.parametrize("name", sorted(ACCOUNT_LEVEL_CALLS))
def test_account_level_operations_in_another_account(world, name):
    """Account-level operations need only the caller's own identity policy: carol has kms:*, dave nothing."""
    call = ACCOUNT_LEVEL_CALLS[name]
    with expect_denied(world.dave.arn, f"kms:{name}", "*", "no-identity", what=f"dave {name}"):
        call(world.dave.kms, world)
    out = call(world.carol.kms, world)
    if name == "CreateKey":
        assert out["KeyMetadata"]["AWSAccountId"] == world.b
    elif name == "ListKeys":
        assert all(k["KeyArn"].startswith(f"arn:aws:kms:{REGION}:{world.b}:key/") for k in out["Keys"]), out
    elif name == "ListAliases":
        assert all(a["AliasArn"].startswith(f"arn:aws:kms:{REGION}:{world.b}:") for a in out["Aliases"]), out
    elif name == "ListRetirableGrants":
        assert out["Grants"] == [] and out["Truncated"] is False
    else:
        assert len(out["Plaintext"]) == 8


# --------------------------------------------------------------------------- roles and tags

def test_role_with_matching_principal_tag(world):
    key_id, arn = _new_key(world)
    auditor = world.auditor.kms
    assert auditor.describe_key(KeyId=arn)["KeyMetadata"]["KeyId"] == key_id
    assert json.loads(auditor.get_key_policy(KeyId=arn, PolicyName="default")["Policy"]) == default_policy(world.a)
    assert auditor.list_key_policies(KeyId=arn)["PolicyNames"] == ["default"]
    assert arn in [k["KeyArn"] for k in auditor.list_keys(Limit=1000)["Keys"]]
    with expect_denied(world.auditor.arn, "kms:Encrypt", arn, "no-identity"):
        auditor.encrypt(KeyId=arn, Plaintext=b"auditors do not encrypt")
    with expect_denied(world.auditor.arn, "kms:DisableKey", arn, "no-identity"):
        auditor.disable_key(KeyId=arn)


def test_role_without_matching_principal_tag(world):
    key_id, arn = _new_key(world)
    with expect_denied(world.outsider_role.arn, "kms:DescribeKey", arn, "no-identity"):
        world.outsider_role.kms.describe_key(KeyId=arn)
    with expect_denied(world.outsider_role.arn, "kms:ListKeys", "*", "no-identity"):
        world.outsider_role.kms.list_keys()


# --------------------------------------------------------------------------- aliases

@pytest.fixture
def aliased_key(world):
    key_id, arn = _new_key(world)
    alias = unique_alias("matrix-alias")
    world.alice.kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    return key_id, arn, alias


@pytest.mark.parametrize("form", ["alias-name", "alias-arn"])
def test_denied_through_an_alias_names_the_key(world, aliased_key, form):
    key_id, arn, alias = aliased_key
    ref = alias if form == "alias-name" else account_alias_arn(world.a, alias)
    with expect_denied(world.bob.arn, "kms:Encrypt", arn, "no-identity"):
        world.bob.kms.encrypt(KeyId=ref, Plaintext=b"through an alias")
    with expect_denied(world.bob.arn, "kms:DescribeKey", arn, "no-identity"):
        world.bob.kms.describe_key(KeyId=ref)
    with expect_denied(world.bob.arn, "kms:GenerateDataKey", arn, "no-identity"):
        world.bob.kms.generate_data_key(KeyId=ref, KeySpec="AES_256")
    out = world.alice.kms.encrypt(KeyId=ref, Plaintext=b"through an alias")
    assert out["KeyId"] == arn
    assert world.alice.kms.describe_key(KeyId=ref)["KeyMetadata"]["KeyId"] == key_id


def test_alias_of_another_account(world, aliased_key):
    key_id, arn, alias = aliased_key
    # A bare alias name means the caller's own account.
    with expect_error("NotFoundException"):
        world.carol.kms.describe_key(KeyId=alias)
    with expect_denied(world.carol.arn, "kms:Encrypt", arn, "no-resource"):
        world.carol.kms.encrypt(KeyId=account_alias_arn(world.a, alias), Plaintext=b"x-account alias")


# --------------------------------------------------------------------------- cross-account

SHARED_ACTIONS = ["kms:DescribeKey", "kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*", "kms:CreateGrant"]


def test_cross_account_by_key_arn_needs_the_key_policy(world):
    key_id, arn = _new_key(world)
    carol, dave = world.carol.kms, world.dave.kms
    with expect_denied(world.carol.arn, "kms:DescribeKey", arn, "no-resource"):
        carol.describe_key(KeyId=arn)
    with expect_error("NotFoundException", "bare key id from another account"):
        carol.describe_key(KeyId=key_id)

    policy = policy_json(root_statement(world.a), allow(SHARED_ACTIONS, principal=root_arn(world.b), sid="Share with B"))
    world.alice.kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)

    assert carol.describe_key(KeyId=arn)["KeyMetadata"]["Arn"] == arn
    blob = carol.encrypt(KeyId=arn, Plaintext=b"from account B", EncryptionContext={"x": "b"})["CiphertextBlob"]
    assert carol.decrypt(CiphertextBlob=blob, EncryptionContext={"x": "b"})["Plaintext"] == b"from account B"
    assert world.alice.kms.decrypt(CiphertextBlob=blob, EncryptionContext={"x": "b"})["KeyId"] == arn
    assert len(carol.generate_data_key(KeyId=arn, NumberOfBytes=24)["Plaintext"]) == 24
    # The bare key id still names a key of carol's own account.
    with expect_error("NotFoundException", "bare key id from another account, after sharing"):
        carol.describe_key(KeyId=key_id)
    # Account B delegates to its own identity policies: dave has none.
    with expect_denied(world.dave.arn, "kms:DescribeKey", arn, "no-identity"):
        dave.describe_key(KeyId=arn)
    # Actions the key policy does not share stay denied.
    with expect_denied(world.carol.arn, "kms:DisableKey", arn, "no-resource"):
        carol.disable_key(KeyId=arn)
    with expect_denied(world.carol.arn, "kms:GetKeyPolicy", arn, "no-resource"):
        carol.get_key_policy(KeyId=arn, PolicyName="default")


def test_cross_account_principal_named_directly_still_needs_its_identity_policy(world):
    key_id, arn = _new_key(world)
    policy = policy_json(root_statement(world.a), allow(["kms:DescribeKey", "kms:Encrypt"], principal=[world.carol.arn, world.dave.arn]))
    world.alice.kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    assert world.carol.kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyId"] == key_id
    with expect_denied(world.dave.arn, "kms:DescribeKey", arn, "no-identity"):
        world.dave.kms.describe_key(KeyId=arn)


def test_cross_account_alias_arn_after_sharing(world, aliased_key):
    key_id, arn, alias = aliased_key
    policy = policy_json(root_statement(world.a), allow(SHARED_ACTIONS, principal=root_arn(world.b)))
    world.alice.kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    out = world.carol.kms.encrypt(KeyId=account_alias_arn(world.a, alias), Plaintext=b"alias arn across accounts")
    assert out["KeyId"] == arn


# --------------------------------------------------------------------------- direct grants in key policies

def test_key_policy_naming_a_principal_needs_no_identity_policy(world):
    key_id, arn = _new_key(world)
    policy = policy_json(root_statement(world.a), allow(["kms:Encrypt", "kms:DescribeKey"], principal=world.bob.arn))
    world.alice.kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    assert world.bob.kms.encrypt(KeyId=arn, Plaintext=b"bob named directly")["KeyId"] == arn
    assert world.bob.kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyId"] == key_id
    with expect_denied(world.bob.arn, "kms:Decrypt", arn, "no-identity"):
        world.bob.kms.decrypt(CiphertextBlob=world.alice.kms.encrypt(KeyId=arn, Plaintext=b"for alice")["CiphertextBlob"])


def test_key_policy_principal_star(world):
    key_id, arn = _new_key(world)
    policy = policy_json(root_statement(world.a), allow("kms:DescribeKey", principal="*"))
    world.alice.kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    assert world.bob.kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyId"] == key_id
    assert world.carol.kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyId"] == key_id
    # Another account's principal still needs its own identity policy.
    with expect_denied(world.dave.arn, "kms:DescribeKey", arn, "no-identity"):
        world.dave.kms.describe_key(KeyId=arn)
    with expect_denied(world.bob.arn, "kms:Encrypt", arn, "no-identity"):
        world.bob.kms.encrypt(KeyId=arn, Plaintext=b"star is only DescribeKey")


def test_update_alias_needs_permission_on_both_keys(world):
    key1, arn1 = _new_key(world)
    key2, arn2 = _new_key(world)
    alias = unique_alias("matrix-both")
    world.alice.kms.create_alias(AliasName=alias, TargetKeyId=key1)
    world.alice.kms.put_key_policy(
        KeyId=key1, PolicyName="default",
        Policy=policy_json(root_statement(world.a), allow("kms:UpdateAlias", principal=world.bob.arn)))
    with expect_denied(world.bob.arn, "kms:UpdateAlias", arn2, "no-identity"):
        world.bob.kms.update_alias(AliasName=alias, TargetKeyId=key2)
    world.alice.kms.put_key_policy(
        KeyId=key2, PolicyName="default",
        Policy=policy_json(root_statement(world.a), allow("kms:UpdateAlias", principal=world.bob.arn)))
    world.bob.kms.update_alias(AliasName=alias, TargetKeyId=key2)
    assert [a["AliasName"] for a in world.alice.kms.list_aliases(KeyId=key2)["Aliases"]] == [alias]


# --------------------------------------------------------------------------- explicit deny

def test_explicit_deny_in_key_policy_wins(world):
    key_id, arn = _new_key(world)
    policy = policy_json(root_statement(world.a), deny("kms:Decrypt", principal=world.alice.arn, sid="No decrypt for alice"))
    world.alice.kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    blob = world.alice.kms.encrypt(KeyId=arn, Plaintext=b"alice may encrypt")["CiphertextBlob"]
    with expect_denied(world.alice.arn, "kms:Decrypt", arn, "deny-resource"):
        world.alice.kms.decrypt(CiphertextBlob=blob)
    # Also against a principal the same policy allows by name, and against a grant.
    policy = policy_json(
        root_statement(world.a), allow("kms:Encrypt", principal=world.bob.arn), deny("kms:Encrypt", principal="*"))
    world.alice.kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    world.alice.kms.create_grant(KeyId=arn, GranteePrincipal=world.bob.arn, Operations=["Encrypt"])
    with expect_denied(world.bob.arn, "kms:Encrypt", arn, "deny-resource"):
        world.bob.kms.encrypt(KeyId=arn, Plaintext=b"denied for everyone")
    with expect_denied(world.alice.arn, "kms:Encrypt", arn, "deny-resource"):
        world.alice.kms.encrypt(KeyId=arn, Plaintext=b"denied for everyone")


def test_explicit_deny_in_identity_policy_wins(ids, world):
    erin = ids.user(world.a, "erin", policy_json(allow("kms:*"), deny(["kms:Encrypt", "kms:GenerateRandom"])))
    key_id, arn = _new_key(world)
    world.alice.kms.put_key_policy(
        KeyId=key_id, PolicyName="default",
        Policy=policy_json(root_statement(world.a), allow("kms:Encrypt", principal=erin.arn, sid="erin by name")))
    with expect_denied(erin.arn, "kms:Encrypt", arn, "deny-identity"):
        erin.kms.encrypt(KeyId=arn, Plaintext=b"erin is denied")
    with expect_denied(erin.arn, "kms:GenerateRandom", "*", "deny-identity"):
        erin.kms.generate_random(NumberOfBytes=8)
    assert erin.kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyId"] == key_id
    blob = world.alice.kms.encrypt(KeyId=arn, Plaintext=b"alice encrypts for erin")["CiphertextBlob"]
    assert erin.kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"alice encrypts for erin"


def test_explicit_deny_in_identity_policy_beats_a_grant(ids, world):
    frank = ids.user(world.a, "frank", policy_json(deny("kms:Encrypt")))
    key_id, arn = _new_key(world)
    world.alice.kms.create_grant(KeyId=arn, GranteePrincipal=frank.arn, Operations=["Encrypt", "DescribeKey"])
    assert frank.kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyId"] == key_id
    with expect_denied(frank.arn, "kms:Encrypt", arn, "deny-identity"):
        frank.kms.encrypt(KeyId=arn, Plaintext=b"grant does not beat deny")


def test_identity_policy_resource_scoped_to_one_key(ids, world):
    key1, arn1 = _new_key(world)
    key2, arn2 = _new_key(world)
    gina = ids.user(world.a, "gina", policy_json(allow(["kms:Encrypt", "kms:DescribeKey"], resource=arn1)))
    assert gina.kms.encrypt(KeyId=key1, Plaintext=b"key one only")["KeyId"] == arn1
    with expect_denied(gina.arn, "kms:Encrypt", arn2, "no-identity"):
        gina.kms.encrypt(KeyId=key2, Plaintext=b"key one only")
    with expect_denied(gina.arn, "kms:ListKeys", "*", "no-identity"):
        gina.kms.list_keys()


# --------------------------------------------------------------------------- policy grammar

def test_key_policy_principal_as_bare_account_id(world):
    key_id, arn = _new_key(world)
    policy = policy_json(root_statement(world.a), allow("kms:DescribeKey", principal=world.b))
    world.alice.kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    assert world.carol.kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyId"] == key_id
    with expect_denied(world.dave.arn, "kms:DescribeKey", arn, "no-identity"):
        world.dave.kms.describe_key(KeyId=arn)


def test_action_wildcards_and_case(ids, world):
    key_id, arn = _new_key(world)
    hugo = ids.user(world.a, "hugo", policy_json(allow(["KMS:generate*", "kms:Describe?ey"])))
    assert len(hugo.kms.generate_data_key(KeyId=arn, KeySpec="AES_256")["Plaintext"]) == 32
    assert len(hugo.kms.generate_random(NumberOfBytes=4)["Plaintext"]) == 4
    assert hugo.kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyId"] == key_id
    with expect_denied(hugo.arn, "kms:Encrypt", arn, "no-identity"):
        hugo.kms.encrypt(KeyId=arn, Plaintext=b"outside KMS:generate*")


def test_not_action_and_not_resource(ids, world):
    key1, arn1 = _new_key(world)
    key2, arn2 = _new_key(world)
    ivy = ids.user(world.a, "ivy", policy_json(
        {"Effect": "Allow", "NotAction": ["kms:Decrypt", "kms:ScheduleKeyDeletion"], "Resource": "*"},
        {"Effect": "Deny", "Action": "kms:Encrypt", "NotResource": arn1},
    ))
    assert ivy.kms.encrypt(KeyId=arn1, Plaintext=b"key one")["KeyId"] == arn1
    with expect_denied(ivy.arn, "kms:Encrypt", arn2, "deny-identity"):
        ivy.kms.encrypt(KeyId=arn2, Plaintext=b"key two")
    blob = world.alice.kms.encrypt(KeyId=arn1, Plaintext=b"for ivy")["CiphertextBlob"]
    with expect_denied(ivy.arn, "kms:Decrypt", arn1, "no-identity"):
        ivy.kms.decrypt(CiphertextBlob=blob)
    with expect_denied(ivy.arn, "kms:ScheduleKeyDeletion", arn1, "no-identity"):
        ivy.kms.schedule_key_deletion(KeyId=arn1, PendingWindowInDays=7)


def test_not_principal_in_a_key_policy_deny(world):
    key_id, arn = _new_key(world)
    policy = policy_json(
        root_statement(world.a),
        allow("kms:Encrypt", principal=world.bob.arn),
        {"Effect": "Deny", "NotPrincipal": {"AWS": [world.alice.arn, root_arn(world.a)]}, "Action": "kms:Encrypt", "Resource": "*"},
    )
    world.alice.kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    assert world.alice.kms.encrypt(KeyId=arn, Plaintext=b"alice is not denied")["KeyId"] == arn
    with expect_denied(world.bob.arn, "kms:Encrypt", arn, "deny-resource"):
        world.bob.kms.encrypt(KeyId=arn, Plaintext=b"bob is denied")


# --------------------------------------------------------------------------- what another account must not see

def test_list_aliases_does_not_return_another_accounts_aliases(world, aliased_key):
    """AWS: "ListAliases does not return aliases in other accounts" -- not even when given such a key's ARN."""
    key_id, arn, alias = aliased_key
    assert [a["AliasName"] for a in world.alice.kms.list_aliases(KeyId=arn)["Aliases"]] == [alias]
    out = world.carol.kms.list_aliases(KeyId=arn)
    assert out["Aliases"] == [], out


def test_list_retirable_grants_of_another_accounts_principal_is_denied(world):
    """AWS: the retiring principal must be in the caller's account (it is the authorized resource)."""
    key_id, arn = _new_key(world)
    world.alice.kms.create_grant(KeyId=arn, GranteePrincipal=world.bob.arn, RetiringPrincipal=world.alice.arn,
                                 Operations=["Decrypt"])
    assert [g["KeyId"] for g in world.alice.kms.list_retirable_grants(RetiringPrincipal=world.alice.arn)["Grants"]].count(arn) == 1
    with expect_error("AccessDeniedException"):
        world.carol.kms.list_retirable_grants(RetiringPrincipal=world.alice.arn)
