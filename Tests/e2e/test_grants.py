"""Grants: exact operations, exact grantee, exact key, constraints, tokens, grants made through grants, names,
listing, retiring and revoking.

Account A: the administrator `gadmin` (identity policy kms:*) owns the keys (default key policy); the grantee
`gus`, the bystander `olga` and the retiring principal `ret` have no identity policy, so only grants let them
do anything. carol of account B (identity policy kms:*) receives a cross-account grant.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError

from trent_e2e import (
    ADMIN_POLICY,
    account_key_arn,
    expect_denied,
    expect_error,
    remember_plaintext,
    root_arn,
)


@dataclass
class G:
    a: str
    admin: Any
    gus: Any
    olga: Any
    ret: Any
    carol: Any


@pytest.fixture(scope="module")
def g(ids) -> G:
    a, b = ids.account("grants-a"), ids.account("grants-b")
    return G(
        a=a,
        admin=ids.user(a, "gadmin", ADMIN_POLICY),
        gus=ids.user(a, "gus"),
        olga=ids.user(a, "olga"),
        ret=ids.user(a, "ret"),
        carol=ids.user(b, "carol", ADMIN_POLICY),
    )


@pytest.fixture
def key(g) -> str:
    """A fresh key of account A (its ARN)."""
    return g.admin.kms.create_key(Description="grants")["KeyMetadata"]["Arn"]


def new_key(g) -> str:
    return g.admin.kms.create_key(Description="grants")["KeyMetadata"]["Arn"]


def grant(g, key, grantee, operations, **kwargs) -> dict:
    return g.admin.kms.create_grant(KeyId=key, GranteePrincipal=grantee.arn if hasattr(grantee, "arn") else grantee,
                                    Operations=operations, **kwargs)


def ciphertext(g, key, context=None, plaintext=b"grant test plaintext") -> bytes:
    remember_plaintext(plaintext)
    return g.admin.kms.encrypt(KeyId=key, Plaintext=plaintext, EncryptionContext=context or {})["CiphertextBlob"]


# --------------------------------------------------------------------------- exact operations

# operation -> a call that needs exactly that operation (c = client, k = key ARN, k2 = second key ARN, blob under k)
CALLS = {
    "Encrypt": lambda c, k, k2, blob: c.encrypt(KeyId=k, Plaintext=b"grant test plaintext"),
    "Decrypt": lambda c, k, k2, blob: c.decrypt(CiphertextBlob=blob),
    "GenerateDataKey": lambda c, k, k2, blob: c.generate_data_key(KeyId=k, KeySpec="AES_256"),
    "GenerateDataKeyWithoutPlaintext": lambda c, k, k2, blob: c.generate_data_key_without_plaintext(KeyId=k, NumberOfBytes=16),
    "DescribeKey": lambda c, k, k2, blob: c.describe_key(KeyId=k),
    "ReEncryptFrom": lambda c, k, k2, blob: c.re_encrypt(CiphertextBlob=blob, DestinationKeyId=k2),
    "CreateGrant": lambda c, k, k2, blob: c.create_grant(KeyId=k, GranteePrincipal="arn:aws:iam::111122223333:user/x",
                                                         Operations=["CreateGrant"]),
}


@pytest.mark.parametrize("operation", sorted(CALLS))
def test_grant_allows_exactly_its_operations(g, key, operation):
    other = new_key(g)
    blob = ciphertext(g, key)
    grant(g, key, g.gus, [operation])
    if operation == "ReEncryptFrom":  # ReEncrypt also needs ReEncryptTo on the destination key
        grant(g, other, g.gus, ["ReEncryptTo"])
    CALLS[operation](g.gus.kms, key, other, blob)
    for name, call in CALLS.items():
        if name == operation:
            continue
        with expect_denied(what=f"grant for {operation} used for {name}"):
            call(g.gus.kms, key, other, blob)


def test_reencrypt_needs_both_halves(g, key):
    dest = new_key(g)
    blob = ciphertext(g, key)
    grant(g, key, g.gus, ["ReEncryptFrom"])
    with expect_denied(g.gus.arn, "kms:ReEncryptTo", dest, "no-identity"):
        g.gus.kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=dest)
    grant(g, dest, g.gus, ["ReEncryptTo"])
    out = g.gus.kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=dest)
    assert out["SourceKeyId"] == key and out["KeyId"] == dest
    assert g.admin.kms.decrypt(CiphertextBlob=out["CiphertextBlob"])["Plaintext"] == b"grant test plaintext"


def test_grant_is_for_its_exact_grantee_and_key(g, key):
    other = new_key(g)
    grant(g, key, g.gus, ["Encrypt", "DescribeKey"])
    assert g.gus.kms.encrypt(KeyId=key, Plaintext=b"gus may")["KeyId"] == key
    with expect_denied(g.olga.arn, "kms:Encrypt", key, "no-identity"):
        g.olga.kms.encrypt(KeyId=key, Plaintext=b"olga may not")
    with expect_denied(g.gus.arn, "kms:Encrypt", other, "no-identity"):
        g.gus.kms.encrypt(KeyId=other, Plaintext=b"not on the other key")


def test_grant_to_another_account(g, key):
    key_id = key.rsplit("/", 1)[1]
    grant(g, key, g.carol, ["Encrypt", "Decrypt", "DescribeKey"])
    assert g.carol.kms.describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key
    blob = g.carol.kms.encrypt(KeyId=key, Plaintext=b"carol by grant")["CiphertextBlob"]
    assert g.carol.kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"carol by grant"
    with expect_error("NotFoundException", "bare key id of another account"):
        g.carol.kms.describe_key(KeyId=key_id)
    with expect_denied(g.carol.arn, "kms:GenerateDataKey", key, "no-resource"):
        g.carol.kms.generate_data_key(KeyId=key, KeySpec="AES_256")


def test_grant_on_a_disabled_key(g, key):
    grant(g, key, g.gus, ["Encrypt"])
    g.admin.kms.disable_key(KeyId=key)
    with expect_error("DisabledException"):
        g.gus.kms.encrypt(KeyId=key, Plaintext=b"disabled")
    with expect_error("DisabledException"):
        grant(g, key, g.olga, ["Encrypt"])
    g.admin.kms.enable_key(KeyId=key)
    assert g.gus.kms.encrypt(KeyId=key, Plaintext=b"enabled again")["KeyId"] == key


# --------------------------------------------------------------------------- constraints

def test_encryption_context_equals(g, key):
    grant(g, key, g.gus, ["Encrypt", "Decrypt"], Constraints={"EncryptionContextEquals": {"app": "web", "env": "prod"}})
    ok = {"app": "web", "env": "prod"}
    blob = g.gus.kms.encrypt(KeyId=key, Plaintext=b"equals", EncryptionContext=ok)["CiphertextBlob"]
    assert g.gus.kms.decrypt(CiphertextBlob=blob, EncryptionContext=ok)["Plaintext"] == b"equals"
    for bad in ({"app": "web"}, {"app": "web", "env": "prod", "extra": "x"}, {"app": "web", "env": "dev"}, {}):
        with expect_denied(g.gus.arn, "kms:Encrypt", key, "no-identity", what=f"context {bad}"):
            g.gus.kms.encrypt(KeyId=key, Plaintext=b"equals", EncryptionContext=bad)
    other_blob = ciphertext(g, key, {"app": "web"})
    with expect_denied(g.gus.arn, "kms:Decrypt", key, "no-identity"):
        g.gus.kms.decrypt(CiphertextBlob=other_blob, EncryptionContext={"app": "web"})


def test_encryption_context_subset(g, key):
    grant(g, key, g.gus, ["GenerateDataKey", "Decrypt"], Constraints={"EncryptionContextSubset": {"app": "web"}})
    for ok in ({"app": "web"}, {"app": "web", "env": "prod"}):
        out = g.gus.kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=ok)
        assert g.gus.kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext=ok)["Plaintext"] == out["Plaintext"]
    for bad in ({"app": "api"}, {"env": "prod"}, {}, {"App": "web"}):
        with expect_denied(g.gus.arn, "kms:GenerateDataKey", key, "no-identity", what=f"context {bad}"):
            g.gus.kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=bad)


def test_constraints_apply_to_reencrypt_halves(g, key):
    dest = new_key(g)
    blob = ciphertext(g, key, {"db": "1"})
    grant(g, key, g.gus, ["ReEncryptFrom"], Constraints={"EncryptionContextSubset": {"db": "1"}})
    grant(g, dest, g.gus, ["ReEncryptTo"], Constraints={"EncryptionContextEquals": {"db": "2"}})
    with expect_denied(g.gus.arn, "kms:ReEncryptTo", dest, "no-identity"):
        g.gus.kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"db": "1"}, DestinationKeyId=dest,
                             DestinationEncryptionContext={"db": "1"})
    out = g.gus.kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"db": "1"}, DestinationKeyId=dest,
                               DestinationEncryptionContext={"db": "2"})
    assert g.admin.kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"db": "2"})["KeyId"] == dest


@pytest.mark.parametrize("constraint", ["EncryptionContextEquals", "EncryptionContextSubset"])
def test_constraints_do_not_bind_describe_key_and_retire_grant(g, key, constraint):
    """AWS API reference (CreateGrant, Constraints): a constrained grant may include DescribeKey and RetireGrant,
    and the constraint does not apply to them, which take no encryption context."""
    created = grant(g, key, g.gus, ["Decrypt", "DescribeKey", "RetireGrant"], Constraints={constraint: {"a": "b"}})
    assert g.gus.kms.describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key
    blob = ciphertext(g, key, {"a": "b"})
    assert g.gus.kms.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "b"})["KeyId"] == key
    with expect_denied(g.gus.arn, "kms:Decrypt", key, "no-identity"):
        g.gus.kms.decrypt(CiphertextBlob=ciphertext(g, key, {"a": "c"}), EncryptionContext={"a": "c"})
    g.gus.kms.retire_grant(KeyId=key, GrantId=created["GrantId"])
    assert g.admin.kms.list_grants(KeyId=key)["Grants"] == []


@pytest.mark.parametrize("operations", [["Sign"], ["GetPublicKey"], ["Decrypt", "GenerateMac"]])
def test_constraints_with_operations_without_encryption_context_are_invalid(g, key, operations):
    with expect_error("ValidationException"):
        grant(g, key, g.gus, operations, Constraints={"EncryptionContextSubset": {"a": "b"}})
    assert g.admin.kms.list_grants(KeyId=key)["Grants"] == []


def test_both_constraint_kinds_are_invalid(g, key):
    with pytest.raises(ClientError) as excinfo:
        grant(g, key, g.gus, ["Decrypt"], Constraints={"EncryptionContextEquals": {"a": "b"}, "EncryptionContextSubset": {"a": "b"}})
    assert excinfo.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": "You can specify only one type of encryption context constraint: EncryptionContextEquals or EncryptionContextSubset."}
    assert g.admin.kms.list_grants(KeyId=key)["Grants"] == []


@pytest.mark.parametrize("constraint", ["EncryptionContextEquals", "EncryptionContextSubset"])
@pytest.mark.parametrize("pairs", [{"k": "v" * 9000}, {"": "v"}], ids=["over-8-KiB", "empty-key"])
def test_constraints_are_bounded_as_encryption_contexts(g, key, constraint, pairs):
    """A grant's constraints are encryption contexts, with their bounds: no grant carries a megabyte of them."""
    with expect_error("ValidationException"):
        grant(g, key, g.gus, ["Encrypt"], Constraints={constraint: pairs})
    assert g.admin.kms.list_grants(KeyId=key)["Grants"] == []


# --------------------------------------------------------------------------- grant tokens

def test_valid_grant_token_is_accepted(g, key):
    created = grant(g, key, g.gus, ["Encrypt", "Decrypt", "DescribeKey", "GenerateDataKey"])
    token = created["GrantToken"]
    assert isinstance(token, str) and token
    blob = g.gus.kms.encrypt(KeyId=key, Plaintext=b"with token", GrantTokens=[token])["CiphertextBlob"]
    assert g.gus.kms.decrypt(CiphertextBlob=blob, GrantTokens=[token])["Plaintext"] == b"with token"
    assert g.gus.kms.describe_key(KeyId=key, GrantTokens=[token])["KeyMetadata"]["Arn"] == key
    assert len(g.gus.kms.generate_data_key(KeyId=key, KeySpec="AES_128", GrantTokens=[token])["Plaintext"]) == 16


GARBAGE = ["not-a-grant-token", base64.b64encode(b"trent-grant-token-v1:zz").decode(), "AAAA"]

TOKEN_CALLS = {
    "Encrypt": lambda c, k, blob, t: c.encrypt(KeyId=k, Plaintext=b"x", GrantTokens=t),
    "Decrypt": lambda c, k, blob, t: c.decrypt(CiphertextBlob=blob, GrantTokens=t),
    "GenerateDataKey": lambda c, k, blob, t: c.generate_data_key(KeyId=k, KeySpec="AES_256", GrantTokens=t),
    "GenerateDataKeyWithoutPlaintext": lambda c, k, blob, t: c.generate_data_key_without_plaintext(KeyId=k, KeySpec="AES_256", GrantTokens=t),
    "ReEncrypt": lambda c, k, blob, t: c.re_encrypt(CiphertextBlob=blob, DestinationKeyId=k, GrantTokens=t),
    "DescribeKey": lambda c, k, blob, t: c.describe_key(KeyId=k, GrantTokens=t),
    "CreateGrant": lambda c, k, blob, t: c.create_grant(KeyId=k, GranteePrincipal="arn:aws:iam::111122223333:user/x",
                                                        Operations=["Decrypt"], GrantTokens=t),
}


@pytest.mark.parametrize("operation", sorted(TOKEN_CALLS))
def test_garbage_grant_token_is_rejected(g, operation):
    key = new_key(g)
    blob = ciphertext(g, key)
    valid = grant(g, key, g.gus, ["Decrypt"])["GrantToken"]
    for garbage in GARBAGE:
        # Even for a caller who needs no grant at all.
        with expect_error("InvalidGrantTokenException", f"{operation} with {garbage!r}"):
            TOKEN_CALLS[operation](g.admin.kms, key, blob, [garbage])
        with expect_error("InvalidGrantTokenException", f"{operation} with a valid and a garbage token"):
            TOKEN_CALLS[operation](g.admin.kms, key, blob, [valid, garbage])


def test_garbage_token_for_retire_grant(g):
    with expect_error("InvalidGrantTokenException"):
        g.ret.kms.retire_grant(GrantToken="not-a-grant-token")


# --------------------------------------------------------------------------- CreateGrant through a grant

def test_create_grant_through_a_grant(g, key):
    grant(g, key, g.gus, ["Decrypt", "Encrypt", "CreateGrant"], Constraints={"EncryptionContextSubset": {"tenant": "t1"}})
    gus = g.gus.kms

    narrower = [
        dict(Operations=["Decrypt"], Constraints={"EncryptionContextSubset": {"tenant": "t1"}}),
        dict(Operations=["Decrypt", "Encrypt"], Constraints={"EncryptionContextSubset": {"tenant": "t1", "app": "x"}}),
        dict(Operations=["Encrypt"], Constraints={"EncryptionContextEquals": {"tenant": "t1", "app": "x"}}),
        dict(Operations=["CreateGrant", "Decrypt"], Constraints={"EncryptionContextSubset": {"tenant": "t1"}}),
    ]
    for kwargs in narrower:
        out = gus.create_grant(KeyId=key, GranteePrincipal=g.olga.arn, **kwargs)
        assert len(out["GrantId"]) == 64, out

    wider = [
        dict(Operations=["Decrypt"]),  # no constraints
        dict(Operations=["GenerateDataKey"], Constraints={"EncryptionContextSubset": {"tenant": "t1"}}),  # new operation
        dict(Operations=["Decrypt", "ReEncryptFrom"], Constraints={"EncryptionContextSubset": {"tenant": "t1"}}),
        dict(Operations=["Decrypt"], Constraints={"EncryptionContextSubset": {"tenant": "t2"}}),  # other value
        dict(Operations=["Decrypt"], Constraints={"EncryptionContextSubset": {"app": "x"}}),  # other key
        dict(Operations=["Decrypt"], Constraints={"EncryptionContextEquals": {"app": "x"}}),
    ]
    for kwargs in wider:
        with expect_denied(g.gus.arn, "kms:CreateGrant", key, "no-identity", what=f"wider grant {kwargs}"):
            gus.create_grant(KeyId=key, GranteePrincipal=g.olga.arn, **kwargs)

    # The grant made through the grant works for its grantee, within its constraints.
    blob = ciphertext(g, key, {"tenant": "t1"}, b"through a grant")
    assert g.olga.kms.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "t1"})["Plaintext"] == b"through a grant"
    grants = g.admin.kms.list_grants(KeyId=key)["Grants"]
    assert len(grants) == 1 + len(narrower)
    assert {x["IssuingAccount"] for x in grants} == {root_arn(g.a)}


def test_create_grant_through_a_grant_equals_parent(g, key):
    grant(g, key, g.gus, ["Decrypt", "CreateGrant"], Constraints={"EncryptionContextEquals": {"t": "1"}})
    g.gus.kms.create_grant(KeyId=key, GranteePrincipal=g.olga.arn, Operations=["Decrypt"],
                           Constraints={"EncryptionContextEquals": {"t": "1"}})
    for constraints in ({"EncryptionContextSubset": {"t": "1"}}, {"EncryptionContextEquals": {"t": "1", "u": "2"}}, None):
        kwargs = {"Constraints": constraints} if constraints else {}
        with expect_denied(g.gus.arn, "kms:CreateGrant", key, "no-identity", what=f"{constraints}"):
            g.gus.kms.create_grant(KeyId=key, GranteePrincipal=g.olga.arn, Operations=["Decrypt"], **kwargs)


def test_create_grant_needs_create_grant_in_the_grant(g, key):
    grant(g, key, g.gus, ["Decrypt", "Encrypt"])
    with expect_denied(g.gus.arn, "kms:CreateGrant", key, "no-identity"):
        g.gus.kms.create_grant(KeyId=key, GranteePrincipal=g.olga.arn, Operations=["Decrypt"])


def test_create_grant_through_an_unconstrained_grant(g, key):
    grant(g, key, g.gus, ["Decrypt", "CreateGrant"])
    g.gus.kms.create_grant(KeyId=key, GranteePrincipal=g.olga.arn, Operations=["Decrypt"],
                           Constraints={"EncryptionContextSubset": {"any": "thing"}})
    g.gus.kms.create_grant(KeyId=key, GranteePrincipal=g.olga.arn, Operations=["Decrypt", "CreateGrant"])
    with expect_denied(g.gus.arn, "kms:CreateGrant", key, "no-identity"):
        g.gus.kms.create_grant(KeyId=key, GranteePrincipal=g.olga.arn, Operations=["Encrypt"])


# --------------------------------------------------------------------------- names

def test_grant_name_idempotency(g, key):
    first = grant(g, key, g.gus, ["Decrypt", "Encrypt"], Name="app-grant", RetiringPrincipal=g.ret.arn)
    again = grant(g, key, g.gus, ["Encrypt", "Decrypt"], Name="app-grant", RetiringPrincipal=g.ret.arn)
    assert again["GrantId"] == first["GrantId"]
    other_ops = grant(g, key, g.gus, ["Decrypt"], Name="app-grant", RetiringPrincipal=g.ret.arn)
    other_grantee = grant(g, key, g.olga, ["Decrypt", "Encrypt"], Name="app-grant", RetiringPrincipal=g.ret.arn)
    other_name = grant(g, key, g.gus, ["Decrypt", "Encrypt"], Name="app-grant-2", RetiringPrincipal=g.ret.arn)
    grant_ids = {first["GrantId"], other_ops["GrantId"], other_grantee["GrantId"], other_name["GrantId"]}
    assert len(grant_ids) == 4
    unnamed1 = grant(g, key, g.gus, ["Decrypt"])
    unnamed2 = grant(g, key, g.gus, ["Decrypt"])
    assert unnamed1["GrantId"] != unnamed2["GrantId"]
    listed = g.admin.kms.list_grants(KeyId=key)["Grants"]
    assert len(listed) == 6
    assert sorted(x.get("Name", "") for x in listed) == ["", "", "app-grant", "app-grant", "app-grant", "app-grant-2"]


@pytest.mark.parametrize("name", ["has space", "semi;colon", "x" * 257, ""])
def test_grant_name_invalid(g, key, name):
    with expect_error("ValidationException"):
        grant(g, key, g.gus, ["Decrypt"], Name=name)


# --------------------------------------------------------------------------- ListGrants

def test_list_grants_fields_and_filters(g, key):
    a = grant(g, key, g.gus, ["Decrypt", "Encrypt"], Name="first", RetiringPrincipal=g.ret.arn,
              Constraints={"EncryptionContextSubset": {"app": "web"}})
    b = grant(g, key, g.olga, ["DescribeKey"])
    c = grant(g, key, g.gus, ["GenerateDataKey"], Constraints={"EncryptionContextEquals": {"app": "api"}})
    out = g.admin.kms.list_grants(KeyId=key)
    assert out["Truncated"] is False and "NextMarker" not in out
    by_id = {x["GrantId"]: x for x in out["Grants"]}
    assert set(by_id) == {a["GrantId"], b["GrantId"], c["GrantId"]}
    first = by_id[a["GrantId"]]
    assert first["KeyId"] == key
    assert first["Name"] == "first"
    assert first["GranteePrincipal"] == g.gus.arn
    assert first["RetiringPrincipal"] == g.ret.arn
    assert first["IssuingAccount"] == root_arn(g.a)
    assert sorted(first["Operations"]) == ["Decrypt", "Encrypt"]
    assert first["Constraints"] == {"EncryptionContextSubset": {"app": "web"}}
    assert "CreationDate" in first
    second = by_id[b["GrantId"]]
    assert second["Operations"] == ["DescribeKey"] and "Constraints" not in second and "RetiringPrincipal" not in second
    assert by_id[c["GrantId"]]["Constraints"] == {"EncryptionContextEquals": {"app": "api"}}

    only = g.admin.kms.list_grants(KeyId=key, GrantId=b["GrantId"])["Grants"]
    assert [x["GrantId"] for x in only] == [b["GrantId"]]
    gus = g.admin.kms.list_grants(KeyId=key, GranteePrincipal=g.gus.arn)["Grants"]
    assert sorted(x["GrantId"] for x in gus) == sorted([a["GrantId"], c["GrantId"]])
    assert g.admin.kms.list_grants(KeyId=key, GranteePrincipal=g.carol.arn)["Grants"] == []
    assert g.admin.kms.list_grants(KeyId=key, GrantId="0" * 64)["Grants"] == []
    # Another key's grants are not listed.
    assert g.admin.kms.list_grants(KeyId=new_key(g))["Grants"] == []


def test_list_grants_pagination(g, key):
    created = {grant(g, key, g.gus, ["Decrypt"])["GrantId"] for _ in range(5)}
    seen: list[str] = []
    marker = None
    pages = 0
    while True:
        kwargs = {"Limit": 2}
        if marker:
            kwargs["Marker"] = marker
        page = g.admin.kms.list_grants(KeyId=key, **kwargs)
        pages += 1
        assert len(page["Grants"]) <= 2
        seen += [x["GrantId"] for x in page["Grants"]]
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    assert pages == 3
    assert len(seen) == 5 and set(seen) == created


@pytest.mark.parametrize("limit", [0, 101])
def test_list_grants_limit_out_of_range(g, key, limit):
    with expect_error("ValidationException"):
        g.admin.kms.list_grants(KeyId=key, Limit=limit)


def test_list_grants_bad_marker(g, key):
    grant(g, key, g.gus, ["Decrypt"])
    with expect_error("InvalidMarkerException"):
        g.admin.kms.list_grants(KeyId=key, Marker="not-a-marker")


def test_list_retirable_grants(ids, g, key):
    retiring = ids.user(g.a, "retirer-list")
    other = new_key(g)
    mine = {
        grant(g, key, g.gus, ["Decrypt"], RetiringPrincipal=retiring.arn)["GrantId"]: key,
        grant(g, other, g.olga, ["Encrypt"], RetiringPrincipal=retiring.arn)["GrantId"]: other,
    }
    grant(g, key, g.gus, ["Encrypt"], RetiringPrincipal=g.ret.arn)
    grant(g, key, g.gus, ["Encrypt"])
    out = g.admin.kms.list_retirable_grants(RetiringPrincipal=retiring.arn)
    assert out["Truncated"] is False
    assert {x["GrantId"]: x["KeyId"] for x in out["Grants"]} == mine
    assert all(x["RetiringPrincipal"] == retiring.arn for x in out["Grants"])
    page = g.admin.kms.list_retirable_grants(RetiringPrincipal=retiring.arn, Limit=1)
    assert len(page["Grants"]) == 1 and page["Truncated"] is True
    rest = g.admin.kms.list_retirable_grants(RetiringPrincipal=retiring.arn, Limit=1, Marker=page["NextMarker"])
    assert len(rest["Grants"]) == 1 and rest["Truncated"] is False
    assert {page["Grants"][0]["GrantId"], rest["Grants"][0]["GrantId"]} == set(mine)
    assert g.admin.kms.list_retirable_grants(RetiringPrincipal=f"arn:aws:iam::{g.a}:user/nobody")["Grants"] == []


# --------------------------------------------------------------------------- RetireGrant

def _grant_ids(g, key):
    return [x["GrantId"] for x in g.admin.kms.list_grants(KeyId=key)["Grants"]]


def test_retire_by_token_by_the_retiring_principal(g, key):
    created = grant(g, key, g.gus, ["Encrypt"], RetiringPrincipal=g.ret.arn)
    assert g.gus.kms.encrypt(KeyId=key, Plaintext=b"before retire")["KeyId"] == key
    g.ret.kms.retire_grant(GrantToken=created["GrantToken"])
    assert _grant_ids(g, key) == []
    with expect_denied(g.gus.arn, "kms:Encrypt", key, "no-identity"):
        g.gus.kms.encrypt(KeyId=key, Plaintext=b"after retire")
    with expect_error("NotFoundException", "retiring twice"):
        g.ret.kms.retire_grant(GrantToken=created["GrantToken"])


def test_retire_by_key_and_grant_id_by_the_retiring_principal(g, key):
    created = grant(g, key, g.gus, ["Encrypt"], RetiringPrincipal=g.ret.arn)
    keep = grant(g, key, g.gus, ["Decrypt"], RetiringPrincipal=g.ret.arn)
    g.ret.kms.retire_grant(KeyId=key, GrantId=created["GrantId"])
    assert _grant_ids(g, key) == [keep["GrantId"]]


def test_retire_by_the_grantee_needs_retire_grant_in_the_grant(g, key):
    without = grant(g, key, g.gus, ["Encrypt"])
    with_retire = grant(g, key, g.gus, ["Encrypt", "RetireGrant"])
    with expect_denied(g.gus.arn, "kms:RetireGrant", key, "no-identity"):
        g.gus.kms.retire_grant(KeyId=key, GrantId=without["GrantId"])
    g.gus.kms.retire_grant(GrantToken=with_retire["GrantToken"])
    assert _grant_ids(g, key) == [without["GrantId"]]


def test_retire_by_a_bystander_is_denied(g, key):
    created = grant(g, key, g.gus, ["Encrypt"], RetiringPrincipal=g.ret.arn)
    with expect_denied(g.olga.arn, "kms:RetireGrant", key, "no-identity"):
        g.olga.kms.retire_grant(GrantToken=created["GrantToken"])
    with expect_denied(g.olga.arn, "kms:RetireGrant", key, "no-identity"):
        g.olga.kms.retire_grant(KeyId=key, GrantId=created["GrantId"])
    assert _grant_ids(g, key) == [created["GrantId"]]


def test_retire_by_a_principal_the_policies_allow(g, key):
    created = grant(g, key, g.gus, ["Encrypt"])
    g.admin.kms.retire_grant(KeyId=key, GrantId=created["GrantId"])
    assert _grant_ids(g, key) == []


def test_retire_by_a_retiring_principal_of_another_account(g, key):
    created = grant(g, key, g.gus, ["Encrypt"], RetiringPrincipal=g.carol.arn)
    g.carol.kms.retire_grant(GrantToken=created["GrantToken"])
    assert _grant_ids(g, key) == []


def test_retire_unknown(g, key):
    with expect_error("NotFoundException"):
        g.admin.kms.retire_grant(KeyId=key, GrantId="ab" * 32)
    # A well-formed token of a grant that never existed.
    token = base64.b64encode(b"trent-grant-token-v1:" + b"cd" * 32 + b":" + os.urandom(16).hex().encode()).decode()
    with expect_error("NotFoundException"):
        g.ret.kms.retire_grant(GrantToken=token)
    with expect_error("ValidationException"):
        g.ret.kms.retire_grant(KeyId=key)
    # A grant id of another key.
    other = grant(g, new_key(g), g.gus, ["Encrypt"], RetiringPrincipal=g.ret.arn)
    with expect_error("NotFoundException"):
        g.ret.kms.retire_grant(KeyId=key, GrantId=other["GrantId"])


# --------------------------------------------------------------------------- RevokeGrant

def test_revoke_grant(g, key):
    created = grant(g, key, g.gus, ["Encrypt", "Decrypt"])
    blob = g.gus.kms.encrypt(KeyId=key, Plaintext=b"before revoke")["CiphertextBlob"]
    with expect_denied(g.gus.arn, "kms:RevokeGrant", key, "no-identity"):
        g.gus.kms.revoke_grant(KeyId=key, GrantId=created["GrantId"])
    g.admin.kms.revoke_grant(KeyId=key, GrantId=created["GrantId"])
    assert _grant_ids(g, key) == []
    with expect_denied(g.gus.arn, "kms:Decrypt", key, "no-identity"):
        g.gus.kms.decrypt(CiphertextBlob=blob)
    with expect_error("NotFoundException", "revoking twice"):
        g.admin.kms.revoke_grant(KeyId=key, GrantId=created["GrantId"])
    with expect_error("NotFoundException", "retiring a revoked grant"):
        g.admin.kms.retire_grant(GrantToken=created["GrantToken"])


def test_revoke_grant_of_another_key(g, key):
    other = new_key(g)
    created = grant(g, other, g.gus, ["Encrypt"])
    with expect_error("NotFoundException"):
        g.admin.kms.revoke_grant(KeyId=key, GrantId=created["GrantId"])
    assert _grant_ids(g, other) == [created["GrantId"]]


# --------------------------------------------------------------------------- explicit deny beats grants

def test_explicit_deny_beats_create_grant_through_a_grant(g, key):
    """A grant with CreateGrant does not override an explicit Deny of kms:CreateGrant in the key policy."""
    grant(g, key, g.gus, ["Decrypt", "CreateGrant"])
    g.gus.kms.create_grant(KeyId=key, GranteePrincipal=g.olga.arn, Operations=["Decrypt"])  # allowed before the deny
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": root_arn(g.a)}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": g.gus.arn}, "Action": ["kms:CreateGrant", "kms:Decrypt"], "Resource": "*"},
    ]})
    g.admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=policy)
    blob = ciphertext(g, key)
    with expect_denied(g.gus.arn, "kms:Decrypt", key, "deny-resource"):
        g.gus.kms.decrypt(CiphertextBlob=blob)
    with expect_denied(g.gus.arn, "kms:CreateGrant", key, "deny-resource"):
        g.gus.kms.create_grant(KeyId=key, GranteePrincipal=g.olga.arn, Operations=["Decrypt"])


def test_explicit_identity_deny_beats_create_grant_through_a_grant(ids, g, key):
    hank = ids.user(g.a, "hank", json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "kms:CreateGrant", "Resource": "*"}]}))
    grant(g, key, hank, ["Decrypt", "CreateGrant"])
    with expect_denied(hank.arn, "kms:CreateGrant", key, "deny-identity"):
        hank.kms.create_grant(KeyId=key, GranteePrincipal=g.olga.arn, Operations=["Decrypt"])
