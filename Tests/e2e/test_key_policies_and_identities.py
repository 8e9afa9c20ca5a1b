"""Key policies (Get/Put/ListKeyPolicies, malformed documents, the lockout safety check) and identities
(`trent identity`: access keys, their rotation and status, identity policies, forwarded callers)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from trent_e2e import (
    ADMIN_POLICY,
    REGION,
    ForwardedAuthorization,
    Principal,
    RawClient,
    allow,
    deny,
    expect_denied,
    expect_error,
    make_forwarding_kms,
    make_kms,
    policy_json,
    root_arn,
    root_statement,
    utcnow,
)

RDS = "rds.us-east-1.amazonaws.com"


@pytest.fixture(scope="module")
def acct(ids):
    return ids.account("policies")


@pytest.fixture(scope="module")
def admin(ids, acct):
    return ids.user(acct, "padmin", ADMIN_POLICY)


@pytest.fixture
def key(admin) -> str:
    return admin.kms.create_key(Description="policies")["KeyMetadata"]["Arn"]


def default_policy(account: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{"Sid": "Enable IAM User Permissions", "Effect": "Allow",
                       "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "kms:*", "Resource": "*"}],
    }


# --------------------------------------------------------------------------- Get / List / Put

def test_get_key_policy_default(admin, acct, key):
    out = admin.kms.get_key_policy(KeyId=key, PolicyName="default")
    assert out["PolicyName"] == "default"
    assert json.loads(out["Policy"]) == default_policy(acct)
    # PolicyName is optional and means "default"; a bare key id works too.
    out = admin.kms.get_key_policy(KeyId=key.rsplit("/", 1)[1])
    assert json.loads(out["Policy"]) == default_policy(acct)


@pytest.mark.parametrize("name", ["other", "Default", "default2"])
def test_get_key_policy_other_names(admin, key, name):
    with expect_error("NotFoundException"):
        admin.kms.get_key_policy(KeyId=key, PolicyName=name)
    with expect_error("NotFoundException"):
        admin.kms.put_key_policy(KeyId=key, PolicyName=name, Policy=json.dumps(default_policy("123456789012")))


def test_key_policy_by_alias_is_not_found(admin, key):
    alias = "alias/policies-" + key[-12:]
    admin.kms.create_alias(AliasName=alias, TargetKeyId=key)
    with expect_error("NotFoundException"):
        admin.kms.get_key_policy(KeyId=alias, PolicyName="default")


def test_list_key_policies(admin, key):
    out = admin.kms.list_key_policies(KeyId=key)
    assert out["PolicyNames"] == ["default"]
    assert out["Truncated"] is False


def test_put_key_policy_round_trip(admin, acct, key):
    text = policy_json(
        root_statement(acct),
        allow(["kms:Encrypt", "kms:Decrypt"], principal=f"arn:aws:iam::{acct}:user/someone",
              condition={"StringEquals": {"kms:EncryptionContext:app": "web"}}, sid="App"),
        policy_id="custom-1",
    )
    admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=text)
    assert admin.kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"] == text
    # Without PolicyName as well.
    text2 = policy_json(root_statement(acct), policy_id="custom-2")
    admin.kms.put_key_policy(KeyId=key, Policy=text2)
    assert admin.kms.get_key_policy(KeyId=key)["Policy"] == text2


def test_create_key_with_policy(admin, acct):
    text = policy_json(root_statement(acct), policy_id="at-creation")
    arn = admin.kms.create_key(Policy=text)["KeyMetadata"]["Arn"]
    assert admin.kms.get_key_policy(KeyId=arn, PolicyName="default")["Policy"] == text


def test_put_key_policy_on_pending_deletion_key(admin, acct, key):
    admin.kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    with expect_error("KMSInvalidStateException"):
        admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=policy_json(root_statement(acct)))


# --------------------------------------------------------------------------- malformed documents

def _doc(**overrides) -> str:
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"}]}
    for k, v in overrides.items():
        if k.startswith("st_"):
            k = k[3:]
            if v is None:
                doc["Statement"][0].pop(k, None)
            else:
                doc["Statement"][0][k] = v
        elif v is None:
            doc.pop(k, None)
        else:
            doc[k] = v
    return json.dumps(doc)


MALFORMED = {
    "not-json": "{",
    "json-array": "[]",
    "json-string": '"policy"',
    "unknown-top-level-element": _doc(Foo="bar"),
    "unknown-statement-element": _doc(st_Foo="bar"),
    "effect-maybe": _doc(st_Effect="Maybe"),
    "effect-missing": _doc(st_Effect=None),
    "no-statement": _doc(Statement=None),
    "statement-not-object-or-list": _doc(Statement="Allow everything"),
    "action-missing": _doc(st_Action=None),
    "action-a-number": _doc(st_Action=42),
    "unknown-condition-operator": _doc(st_Condition={"StringSortOf": {"kms:CallerAccount": "123456789012"}}),
    "condition-not-an-object": _doc(st_Condition="yes"),
    "version-unknown": _doc(Version="2030-01-01"),
    "principal-unknown-kind": _doc(st_Principal={"Martian": "x"}),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_put_key_policy_malformed(admin, acct, key, case):
    with expect_error("MalformedPolicyDocumentException", case):
        admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=MALFORMED[case])
    # The old policy stays.
    assert json.loads(admin.kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"]) == default_policy(acct)


@pytest.mark.parametrize("case", ["not-json", "unknown-top-level-element", "effect-maybe"])
def test_create_key_malformed_policy(admin, case):
    before = {k["KeyId"] for k in admin.kms.list_keys(Limit=1000)["Keys"]}
    with expect_error("MalformedPolicyDocumentException", case):
        admin.kms.create_key(Policy=MALFORMED[case])
    assert {k["KeyId"] for k in admin.kms.list_keys(Limit=1000)["Keys"]} == before


def test_put_key_policy_too_long(admin, acct, key):
    """A key policy has at most 131,072 characters (AWS API reference); a longer one is LimitExceededException."""
    statements = [allow("kms:DescribeKey", principal=root_arn(acct), sid=f"S{i:05d}") for i in range(1200)]
    text = policy_json(root_statement(acct), *statements)
    assert len(text) > 131_072
    with expect_error("LimitExceededException"):
        admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=text)


@pytest.mark.parametrize("case", ["not-json", "effect-maybe", "unknown-statement-element"])
def test_identity_policy_malformed_is_refused_by_the_cli(ids, acct, case):
    user = ids.user(acct, f"malformed-{case}")
    proc = ids.run("put-policy", "--principal", user.arn, "--name", "bad", "--document", MALFORMED[case])
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    listing = ids("list")
    entry = next(e for e in listing["Principals"] if e["Principal"]["Arn"] == user.arn)
    assert entry["Policies"] == []


# --------------------------------------------------------------------------- lockout safety check

def test_lockout_check_refuses_a_policy_that_locks_the_caller_out(ids, admin, acct, key):
    bob = ids.user(acct, "lockout-bob")
    locking = policy_json(allow("kms:*", principal=bob.arn, sid="only bob"))
    with expect_error("MalformedPolicyDocumentException"):
        admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=locking)
    with expect_error("MalformedPolicyDocumentException"):
        admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=locking, BypassPolicyLockoutSafetyCheck=False)
    assert json.loads(admin.kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"]) == default_policy(acct)

    admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=locking, BypassPolicyLockoutSafetyCheck=True)
    # The administrator is locked out now (kms:* in its identity policy no longer counts) ...
    with expect_denied(admin.arn, "kms:DescribeKey", key, "no-resource"):
        admin.kms.describe_key(KeyId=key)
    with expect_denied(admin.arn, "kms:PutKeyPolicy", key, "no-resource"):
        admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=policy_json(root_statement(acct)))
    # ... and bob, named in the policy, can use and repair it.
    assert bob.kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"] == locking
    # bob's repair must keep bob able to change it: he has no identity policy, so root delegation alone would lock him out.
    with expect_error("MalformedPolicyDocumentException"):
        bob.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=policy_json(root_statement(acct)))
    repaired = policy_json(root_statement(acct), allow("kms:PutKeyPolicy", principal=bob.arn))
    bob.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=repaired)
    assert admin.kms.describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key


def test_lockout_check_counts_an_explicit_deny(admin, acct, key):
    denying = policy_json(root_statement(acct), deny("kms:PutKeyPolicy", principal=admin.arn))
    with expect_error("MalformedPolicyDocumentException"):
        admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=denying)
    admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=denying, BypassPolicyLockoutSafetyCheck=True)
    with expect_denied(admin.arn, "kms:PutKeyPolicy", key, "deny-resource"):
        admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=policy_json(root_statement(acct)))
    assert admin.kms.describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key


def test_lockout_check_accepts_a_policy_naming_the_caller(admin, acct, key):
    text = policy_json(allow(["kms:PutKeyPolicy", "kms:DescribeKey", "kms:GetKeyPolicy"], principal=admin.arn))
    admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=text)
    assert admin.kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"] == text
    with expect_denied(admin.arn, "kms:Encrypt", key, "no-resource"):
        admin.kms.encrypt(KeyId=key, Plaintext=b"not in the policy")


def test_create_key_lockout_check(ids, admin, acct):
    bob = ids.user(acct, "lockout-create-bob")
    locking = policy_json(allow("kms:*", principal=bob.arn))
    before = {k["KeyId"] for k in admin.kms.list_keys(Limit=1000)["Keys"]}
    with expect_error("MalformedPolicyDocumentException"):
        admin.kms.create_key(Policy=locking)
    assert {k["KeyId"] for k in admin.kms.list_keys(Limit=1000)["Keys"]} == before
    arn = admin.kms.create_key(Policy=locking, BypassPolicyLockoutSafetyCheck=True)["KeyMetadata"]["Arn"]
    with expect_denied(admin.arn, "kms:DescribeKey", arn, "no-resource"):
        admin.kms.describe_key(KeyId=arn)
    assert bob.kms.describe_key(KeyId=arn)["KeyMetadata"]["KeyManager"] == "CUSTOMER"


# --------------------------------------------------------------------------- access keys

def test_two_access_keys_rotate(ids, acct):
    user = ids.user(acct, "rotator", ADMIN_POLICY)
    second = ids.access_key(user.arn)
    assert second["AccessKeyId"] != user.access_key_id
    other = Principal(user.server, user.arn, acct, second["AccessKeyId"], second["SecretAccessKey"])
    # Both keys work, as the same principal.
    assert len(user.kms.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    key = other.kms.create_key()["KeyMetadata"]
    assert key["AWSAccountId"] == acct
    assert user.kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["Arn"] == key["Arn"]

    # A third is refused: one line on stderr, nothing on stdout.
    proc = ids.run("create-access-key", "--principal", user.arn)
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

    listing = ids("list")
    entry = next(e for e in listing["Principals"] if e["Principal"]["Arn"] == user.arn)
    assert sorted(k["AccessKeyId"] for k in entry["AccessKeys"]) == sorted([user.access_key_id, other.access_key_id])
    assert {k["Status"] for k in entry["AccessKeys"]} == {"Active"}
    assert entry["Policies"] == ["policy"]
    assert "SecretAccessKey" not in json.dumps(listing)

    # Inactive: refused as unknown; the other key still works; active again: works.
    ids("set-access-key-status", "--access-key-id", user.access_key_id, "--status", "Inactive")
    with expect_error("UnrecognizedClientException"):
        user.kms.list_keys()
    assert other.kms.list_keys()["Keys"]
    ids("set-access-key-status", "--access-key-id", user.access_key_id, "--status", "Active")
    assert user.kms.list_keys()["Keys"]

    # Deleted: refused; then a new key can be created (two again).
    ids("delete-access-key", "--access-key-id", user.access_key_id)
    with expect_error("UnrecognizedClientException"):
        user.kms.list_keys()
    assert other.kms.list_keys()["Keys"]
    third = ids.access_key(user.arn)
    newest = Principal(user.server, user.arn, acct, third["AccessKeyId"], third["SecretAccessKey"])
    assert newest.kms.list_keys()["Keys"]


def test_access_key_cli_failures(ids, acct):
    proc = ids.run("set-access-key-status", "--access-key-id", "AKIANOSUCHKEY0000000", "--status", "Inactive")
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    proc = ids.run("set-access-key-status", "--access-key-id", "AKIANOSUCHKEY0000000", "--status", "Sleeping")
    assert proc.returncode != 0
    proc = ids.run("delete-access-key", "--access-key-id", "AKIANOSUCHKEY0000000")
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    proc = ids.run("create-access-key", "--principal", f"arn:aws:iam::{acct}:user/nobody-here")
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    proc = ids.run("create-user", "--account", "000000000001", "--name", "orphan")
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1


def test_deleted_principal_cannot_sign(ids, acct):
    user = ids.user(acct, "short-lived", ADMIN_POLICY)
    assert user.kms.list_keys()["Keys"] is not None
    ids("delete-principal", "--principal", user.arn)
    with expect_error("UnrecognizedClientException"):
        user.kms.list_keys()


def test_identity_policy_changes_take_effect_at_once(ids, admin, acct, key):
    user = ids.user(acct, "policy-flip")
    with expect_denied(user.arn, "kms:DescribeKey", key, "no-identity"):
        user.kms.describe_key(KeyId=key)
    user.put_policy(policy_json(allow("kms:DescribeKey")), name="describe")
    assert user.kms.describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key
    # Two policies add up.
    user.put_policy(policy_json(allow("kms:Encrypt", resource=key)), name="encrypt")
    assert user.kms.encrypt(KeyId=key, Plaintext=b"two policies")["KeyId"] == key
    user.delete_policy("describe")
    with expect_denied(user.arn, "kms:DescribeKey", key, "no-identity"):
        user.kms.describe_key(KeyId=key)
    assert user.kms.encrypt(KeyId=key, Plaintext=b"still allowed")["KeyId"] == key


def test_services_have_no_identity_policies(ids):
    svc = ids.service(RDS)
    proc = ids.run("put-policy", "--principal", svc.arn, "--name", "p", "--document", ADMIN_POLICY)
    assert proc.returncode != 0
    with expect_denied(svc.arn, "kms:ListKeys", "*", "no-identity"):
        svc.kms.list_keys()


# --------------------------------------------------------------------------- forwarded callers

@pytest.fixture(scope="module")
def fwd(ids, acct, admin):
    user = ids.user(acct, "fwd-user", ADMIN_POLICY)
    key = admin.kms.create_key(Description="forwarding")["KeyMetadata"]["Arn"]
    return user, key, ids.service(RDS)


def test_forwarded_call_runs_as_the_user(fwd):
    user, key, svc = fwd
    client = make_forwarding_kms(user.server, svc, user.authorize_service(RDS))
    assert client.describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key
    # Bare key ids and aliases resolve in the user's account, as for the user itself.
    assert client.describe_key(KeyId=key.rsplit("/", 1)[1])["KeyMetadata"]["Arn"] == key


def test_forwarding_headers_from_a_non_service_are_denied(ids, acct, fwd):
    user, key, svc = fwd
    other = ids.user(acct, "fwd-impostor", ADMIN_POLICY)
    client = make_forwarding_kms(user.server, other, user.authorize_service(RDS))
    with expect_error("AccessDeniedException"):
        client.describe_key(KeyId=key)


def test_forwarding_with_a_wrong_signature_is_denied(fwd):
    user, key, svc = fwd
    good = user.authorize_service(RDS)
    cases = {
        "zeros": ForwardedAuthorization(user.access_key_id, good.date, "0" * 64),
        "for another service": user.authorize_service("ebs.us-east-1.amazonaws.com"),
        "other date": ForwardedAuthorization(user.access_key_id, user.authorize_service(RDS, at=utcnow() - dt.timedelta(minutes=1)).date,
                                             good.signature),
        "expired": user.authorize_service(RDS, at=utcnow() - dt.timedelta(minutes=16)),
        "future": user.authorize_service(RDS, at=utcnow() + dt.timedelta(minutes=30)),
        # Within the SigV4 clock skew, but a proof dated ahead would outlive its 15 minutes.
        "2 minutes ahead": user.authorize_service(RDS, at=utcnow() + dt.timedelta(minutes=2)),
        "unknown access key": ForwardedAuthorization("AKIANOSUCHKEY0000000", good.date, good.signature),
    }
    for what, auth in cases.items():
        client = make_forwarding_kms(user.server, svc, auth)
        with expect_error("AccessDeniedException", what):
            client.describe_key(KeyId=key)
    # The good one works, and also after 14 minutes.
    assert make_forwarding_kms(user.server, svc, good).describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key
    older = user.authorize_service(RDS, at=utcnow() - dt.timedelta(minutes=14))
    assert make_forwarding_kms(user.server, svc, older).describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key


def test_forwarding_for_an_inactive_user_key_is_denied(ids, acct, fwd):
    _, key, svc = fwd
    user = ids.user(acct, "fwd-inactive", ADMIN_POLICY)
    auth = user.authorize_service(RDS)
    ids("set-access-key-status", "--access-key-id", user.access_key_id, "--status", "Inactive")
    with expect_error("AccessDeniedException"):
        make_forwarding_kms(user.server, svc, auth).describe_key(KeyId=key)


def test_forwarding_headers_must_be_signed(server, fwd):
    user, key, svc = fwd
    raw = RawClient(server)
    auth = user.authorize_service(RDS)
    resp = raw("DescribeKey", {"KeyId": key}, access_key=svc.access_key_id, secret_key=svc.secret_access_key,
               override_headers=auth.headers())
    assert resp.status == 400, resp
    assert resp.json["__type"] == "IncompleteSignatureException", resp
    # Signed, it works.
    resp = raw("DescribeKey", {"KeyId": key}, access_key=svc.access_key_id, secret_key=svc.secret_access_key,
               headers=auth.headers())
    assert resp.status == 200, resp
    assert resp.json["KeyMetadata"]["Arn"] == key


def test_service_cannot_forward_for_a_service(ids, fwd):
    _, key, svc = fwd
    ebs = ids.service("ebs.us-east-1.amazonaws.com")
    client = make_forwarding_kms(svc.server, svc, ebs.authorize_service(RDS))
    with expect_error("AccessDeniedException"):
        client.describe_key(KeyId=key)
