"""Policy conditions: every operator family and every condition key Trent supplies, allowed and denied, through
identity policies and through key policies.

Each case is one Allow statement with a condition. In the "identity" variant it is the identity policy of
the user `cond-id` (the keys keep the default policy, which delegates to identity policies); in the "key"
variant it is a statement naming the user `cond-key` (no identity policy at all) in the policy of every test
key. The case's `allowed` calls must succeed and its `denied` calls must fail with AccessDeniedException;
with `deny_condition`, the same `allowed` calls must fail under that other condition.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from trent_e2e import (
    ADMIN_POLICY,
    allow,
    deny,
    expect_denied,
    make_forwarding_kms,
    policy_json,
    root_statement,
    unique_alias,
)

RDS = "rds.us-east-1.amazonaws.com"
EBS = "ebs.us-east-1.amazonaws.com"


class Actor:
    """One principal with its direct client and clients through the two integrated services."""

    def __init__(self, server, principal, services: dict):
        self.principal = principal
        self.arn = principal.arn
        self.kms = principal.kms
        self.via = {
            name: make_forwarding_kms(server, svc, lambda p=principal, n=name: p.authorize_service(n))
            for name, svc in services.items()
        }


@dataclass
class Ctx:
    a: str
    b: str
    admin: Any
    actors: dict  # "identity" -> Actor, "key" -> Actor
    key: str  # ARN; has the alias below, no tags
    key_alpha: str  # tagged project=alpha
    key_beta: str  # tagged project=beta
    alias: str
    grantee: str
    other_grantee: str
    sign_key: str  # ARN of an RSA_2048 SIGN_VERIFY key


@pytest.fixture(scope="module")
def ctx(server, ids) -> Ctx:
    a, b = ids.account("cond-a"), ids.account("cond-b")
    admin = ids.user(a, "cond-admin", ADMIN_POLICY)
    services = {RDS: ids.service(RDS), EBS: ids.service(EBS)}
    actors = {
        "identity": Actor(server, ids.user(a, "cond-id", tags={"team": "blue"}), services),
        "key": Actor(server, ids.user(a, "cond-key", tags={"team": "blue"}), services),
    }

    def key(tags=None):
        return admin.kms.create_key(Description="conditions", Tags=tags or [])["KeyMetadata"]["Arn"]

    k = key()
    alias = unique_alias("cond")
    admin.kms.create_alias(AliasName=alias, TargetKeyId=k)
    return Ctx(
        a=a, b=b, admin=admin, actors=actors, key=k,
        key_alpha=key([{"TagKey": "project", "TagValue": "alpha"}]),
        key_beta=key([{"TagKey": "project", "TagValue": "beta"}]),
        alias=alias,
        grantee=f"arn:aws:iam::{a}:role/app-reader",
        other_grantee=f"arn:aws:iam::{a}:user/someone-else",
        sign_key=admin.kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"],
    )


Call = Callable[[Ctx, Actor], Any]


@dataclass
class Case:
    id: str
    actions: list[str]
    condition: Callable[[Ctx, Actor], dict]
    allowed: list[Call]
    denied: list[Call] = field(default_factory=list)
    deny_condition: Callable[[Ctx, Actor], dict] | None = None
    variants: tuple[str, ...] = ("identity", "key")


# --------------------------------------------------------------------------- calls

def enc(context: dict | None = None, key: str = "key", **extra) -> Call:
    def call(c: Ctx, p: Actor):
        key_id = getattr(c, key) if key in ("key", "key_alpha", "key_beta") else key
        kwargs = dict(KeyId=key_id, Plaintext=b"condition test", **extra)
        if context is not None:
            kwargs["EncryptionContext"] = context
        return p.kms.encrypt(**kwargs)
    return call


def enc_alias(c: Ctx, p: Actor):
    return p.kms.encrypt(KeyId=c.alias, Plaintext=b"by alias")


def describe(via: str | None = None) -> Call:
    def call(c: Ctx, p: Actor):
        client = p.via[via] if via else p.kms
        return client.describe_key(KeyId=c.key)
    return call


def grant(operations=("Decrypt",), grantee: str = "grantee", via: str | None = None, **extra) -> Call:
    def call(c: Ctx, p: Actor):
        client = p.via[via] if via else p.kms
        who = {"grantee": c.grantee, "other": c.other_grantee, "service": via or RDS}.get(grantee, grantee)
        return client.create_grant(KeyId=c.key, GranteePrincipal=who, Operations=list(operations), **extra)
    return call


def sign(algorithm: str = "RSASSA_PSS_SHA_256", message_type: str = "RAW") -> Call:
    message = b"condition test" if message_type == "RAW" else bytes(32)
    return lambda c, p: p.kms.sign(KeyId=c.sign_key, Message=message, MessageType=message_type, SigningAlgorithm=algorithm)


def data_key_pair(spec: str) -> Call:
    return lambda c, p: p.kms.generate_data_key_pair_without_plaintext(KeyId=c.key, KeyPairSpec=spec)


def tag(keys: list[str]) -> Call:
    return lambda c, p: p.kms.tag_resource(KeyId=c.key, Tags=[{"TagKey": k, "TagValue": "v"} for k in keys])


def untag(keys: list[str]) -> Call:
    return lambda c, p: p.kms.untag_resource(KeyId=c.key, TagKeys=keys)


def create_key(tags: dict | None = None, **extra) -> Call:
    def call(c: Ctx, p: Actor):
        return p.kms.create_key(Tags=[{"TagKey": k, "TagValue": v} for k, v in (tags or {}).items()], **extra)
    return call


def cond(block: dict) -> Callable[[Ctx, Actor], dict]:
    return lambda c, p: block


EPOCH_2020 = "1577836800"
EPOCH_3000 = "32503680000"

CASES = [
    # ---- String operators, on kms:EncryptionContext:<key>
    Case("StringEquals-EncryptionContext", ["kms:Encrypt"], cond({"StringEquals": {"kms:EncryptionContext:app": "web"}}),
         allowed=[enc({"app": "web"}), enc({"app": "web", "extra": "1"})],
         denied=[enc({"app": "db"}), enc({"app": "WEB"}), enc(None), enc({"other": "web"})]),
    Case("StringEquals-any-of-several-values", ["kms:Encrypt"], cond({"StringEquals": {"kms:EncryptionContext:app": ["web", "api"]}}),
         allowed=[enc({"app": "api"}), enc({"app": "web"})], denied=[enc({"app": "db"})]),
    Case("StringEquals-all-keys-must-match", ["kms:Encrypt"],
         cond({"StringEquals": {"kms:EncryptionContext:app": "web", "kms:EncryptionContext:env": "prod"}}),
         allowed=[enc({"app": "web", "env": "prod"})], denied=[enc({"app": "web", "env": "dev"}), enc({"app": "web"})]),
    Case("all-operators-must-match", ["kms:Encrypt"],
         cond({"StringEquals": {"kms:EncryptionContext:app": "web"}, "StringLike": {"kms:EncryptionContext:env": "p*"}}),
         allowed=[enc({"app": "web", "env": "prod"})], denied=[enc({"app": "web", "env": "dev"}), enc({"app": "api", "env": "prod"})]),
    Case("StringNotEquals", ["kms:Encrypt"], cond({"StringNotEquals": {"kms:EncryptionContext:app": "db"}}),
         allowed=[enc({"app": "web"})], denied=[enc({"app": "db"})]),
    Case("StringEqualsIgnoreCase", ["kms:Encrypt"], cond({"StringEqualsIgnoreCase": {"kms:EncryptionContext:app": "WEB"}}),
         allowed=[enc({"app": "Web"}), enc({"app": "web"})], denied=[enc({"app": "webs"})]),
    Case("StringNotEqualsIgnoreCase", ["kms:Encrypt"], cond({"StringNotEqualsIgnoreCase": {"kms:EncryptionContext:app": "WEB"}}),
         allowed=[enc({"app": "db"})], denied=[enc({"app": "wEb"})]),
    Case("StringLike-star", ["kms:Encrypt"], cond({"StringLike": {"kms:EncryptionContext:app": "web-*"}}),
         allowed=[enc({"app": "web-frontend"}), enc({"app": "web-"})], denied=[enc({"app": "api-web"}), enc({"app": "web"})]),
    Case("StringLike-question-mark", ["kms:Encrypt"], cond({"StringLike": {"kms:EncryptionContext:app": "v?"}}),
         allowed=[enc({"app": "v1"})], denied=[enc({"app": "v10"}), enc({"app": "v"})]),
    Case("StringNotLike", ["kms:Encrypt"], cond({"StringNotLike": {"kms:EncryptionContext:app": "tmp-*"}}),
         allowed=[enc({"app": "prod"})], denied=[enc({"app": "tmp-1"})]),
    Case("StringEqualsIfExists", ["kms:Encrypt"], cond({"StringEqualsIfExists": {"kms:EncryptionContext:app": "web"}}),
         allowed=[enc(None), enc({"other": "x"}), enc({"app": "web"})], denied=[enc({"app": "db"})]),
    # ---- multivalued: kms:EncryptionContextKeys
    Case("ForAllValues-EncryptionContextKeys", ["kms:Encrypt"],
         cond({"ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["app", "env"]}}),
         allowed=[enc({"app": "x"}), enc({"app": "x", "env": "y"}), enc(None)],  # empty set: vacuously true, as in AWS
         denied=[enc({"app": "x", "other": "y"})]),
    Case("ForAnyValue-EncryptionContextKeys", ["kms:Encrypt"],
         cond({"ForAnyValue:StringEquals": {"kms:EncryptionContextKeys": "tenant"}}),
         allowed=[enc({"tenant": "t1", "app": "x"})], denied=[enc({"app": "x"}), enc(None)]),
    Case("ForAnyValue-StringLike-EncryptionContextKeys", ["kms:Encrypt"],
         cond({"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": "tenant-*"}}),
         allowed=[enc({"tenant-id": "t1"})], denied=[enc({"tenant": "t1"})]),
    # ---- kms:EncryptionAlgorithm
    Case("EncryptionAlgorithm", ["kms:Encrypt"], cond({"StringEquals": {"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}}),
         allowed=[enc({"a": "1"}, EncryptionAlgorithm="SYMMETRIC_DEFAULT"), enc({"a": "1"})],
         deny_condition=cond({"StringEquals": {"kms:EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}})),
    # ---- asymmetric operations: kms:SigningAlgorithm, kms:MessageType, kms:DataKeyPairSpec
    Case("SigningAlgorithm", ["kms:Sign"], cond({"StringEquals": {"kms:SigningAlgorithm": "RSASSA_PSS_SHA_256"}}),
         allowed=[sign("RSASSA_PSS_SHA_256")], denied=[sign("RSASSA_PKCS1_V1_5_SHA_256")]),
    Case("MessageType", ["kms:Sign"], cond({"StringEquals": {"kms:MessageType": "DIGEST"}}),
         allowed=[sign(message_type="DIGEST")], denied=[sign(message_type="RAW")]),
    Case("DataKeyPairSpec", ["kms:GenerateDataKeyPairWithoutPlaintext"], cond({"StringLike": {"kms:DataKeyPairSpec": "RSA_*"}}),
         allowed=[data_key_pair("RSA_2048")], denied=[data_key_pair("ECC_NIST_P256")]),
    # ---- kms:CallerAccount
    Case("CallerAccount", ["kms:Encrypt"], lambda c, p: {"StringEquals": {"kms:CallerAccount": c.a}},
         allowed=[enc()], deny_condition=lambda c, p: {"StringEquals": {"kms:CallerAccount": c.b}}),
    # ---- kms:ViaService, Null
    Case("ViaService", ["kms:DescribeKey"], cond({"StringEquals": {"kms:ViaService": RDS}}),
         allowed=[describe(via=RDS)], denied=[describe(), describe(via=EBS)]),
    Case("ViaService-StringLike", ["kms:DescribeKey"], cond({"StringLike": {"kms:ViaService": "*.us-east-1.amazonaws.com"}}),
         allowed=[describe(via=RDS), describe(via=EBS)], denied=[describe()]),
    Case("Null-true-only-direct-calls", ["kms:DescribeKey"], cond({"Null": {"kms:ViaService": "true"}}),
         allowed=[describe()], denied=[describe(via=RDS)]),
    Case("Null-false-only-service-calls", ["kms:DescribeKey"], cond({"Null": {"kms:ViaService": "false"}}),
         allowed=[describe(via=EBS)], denied=[describe()]),
    # ---- grants: kms:GrantOperations, GrantIsForAWSResource (Bool), GranteePrincipal, RetiringPrincipal, GrantConstraintType
    Case("ForAllValues-GrantOperations", ["kms:CreateGrant"],
         cond({"ForAllValues:StringEquals": {"kms:GrantOperations": ["Encrypt", "Decrypt"]}}),
         allowed=[grant(["Decrypt"]), grant(["Decrypt", "Encrypt"])], denied=[grant(["Decrypt", "CreateGrant"])]),
    Case("ForAnyValue-GrantOperations", ["kms:CreateGrant"],
         cond({"ForAnyValue:StringEquals": {"kms:GrantOperations": "RetireGrant"}}),
         allowed=[grant(["Encrypt", "RetireGrant"])], denied=[grant(["Encrypt"])]),
    Case("Bool-GrantIsForAWSResource-true", ["kms:CreateGrant"], cond({"Bool": {"kms:GrantIsForAWSResource": "true"}}),
         allowed=[grant(["Decrypt"], grantee="service", via=RDS)], denied=[grant(["Decrypt"], grantee=RDS)]),
    Case("Bool-GrantIsForAWSResource-false", ["kms:CreateGrant"], cond({"Bool": {"kms:GrantIsForAWSResource": "false"}}),
         allowed=[grant(["Decrypt"])], denied=[grant(["Decrypt"], grantee="service", via=RDS)]),
    Case("BoolIfExists-GrantIsForAWSResource", ["kms:CreateGrant", "kms:DescribeKey"],
         cond({"BoolIfExists": {"kms:GrantIsForAWSResource": "true"}}),
         allowed=[describe(), grant(["Decrypt"], grantee="service", via=RDS)], denied=[grant(["Decrypt"])]),
    Case("GranteePrincipal", ["kms:CreateGrant"], lambda c, p: {"StringEquals": {"kms:GranteePrincipal": c.grantee}},
         allowed=[grant()], denied=[grant(grantee="other")]),
    Case("ArnLike-GranteePrincipal", ["kms:CreateGrant"],
         lambda c, p: {"ArnLike": {"kms:GranteePrincipal": f"arn:aws:iam::{c.a}:role/app-*"}},
         allowed=[grant()], denied=[grant(grantee="other")]),
    Case("RetiringPrincipal", ["kms:CreateGrant"], lambda c, p: {"StringEquals": {"kms:RetiringPrincipal": c.grantee}},
         allowed=[lambda c, p: grant(RetiringPrincipal=c.grantee)(c, p)],
         denied=[lambda c, p: grant(RetiringPrincipal=c.other_grantee)(c, p), grant()]),
    Case("StringEqualsIfExists-RetiringPrincipal", ["kms:CreateGrant"],
         lambda c, p: {"StringEqualsIfExists": {"kms:RetiringPrincipal": c.grantee}},
         allowed=[grant(), lambda c, p: grant(RetiringPrincipal=c.grantee)(c, p)],
         denied=[lambda c, p: grant(RetiringPrincipal=c.other_grantee)(c, p)]),
    Case("GrantConstraintType", ["kms:CreateGrant"], cond({"StringEquals": {"kms:GrantConstraintType": "EncryptionContextEquals"}}),
         allowed=[grant(Constraints={"EncryptionContextEquals": {"app": "web"}})],
         denied=[grant(Constraints={"EncryptionContextSubset": {"app": "web"}}), grant()]),
    Case("Null-false-GrantConstraintType", ["kms:CreateGrant"], cond({"Null": {"kms:GrantConstraintType": "false"}}),
         allowed=[grant(Constraints={"EncryptionContextSubset": {"app": "web"}})], denied=[grant()]),
    # ---- the key: kms:KeySpec, KeyUsage, KeyOrigin, RequestAlias, ResourceAliases, aws:ResourceTag
    Case("KeySpec", ["kms:Encrypt"], cond({"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}}),
         allowed=[enc()], deny_condition=cond({"StringEquals": {"kms:KeySpec": "RSA_2048"}})),
    Case("KeyUsage", ["kms:Encrypt"], cond({"StringEquals": {"kms:KeyUsage": "ENCRYPT_DECRYPT"}}),
         allowed=[enc()], deny_condition=cond({"StringEquals": {"kms:KeyUsage": "SIGN_VERIFY"}})),
    Case("KeyOrigin", ["kms:Encrypt"], cond({"StringEquals": {"kms:KeyOrigin": "AWS_KMS"}}),
         allowed=[enc()], deny_condition=cond({"StringEquals": {"kms:KeyOrigin": "EXTERNAL"}})),
    Case("RequestAlias", ["kms:Encrypt"], lambda c, p: {"StringEquals": {"kms:RequestAlias": c.alias}},
         allowed=[enc_alias], denied=[enc()]),
    Case("ForAnyValue-ResourceAliases", ["kms:Encrypt"], lambda c, p: {"ForAnyValue:StringEquals": {"kms:ResourceAliases": c.alias}},
         allowed=[enc(), enc_alias], denied=[enc(key="key_alpha")]),
    Case("ResourceTag", ["kms:Encrypt"], cond({"StringEquals": {"aws:ResourceTag/project": "alpha"}}),
         allowed=[enc(key="key_alpha")], denied=[enc(key="key_beta"), enc()]),
    # ---- the principal: aws:PrincipalArn (Arn operators), aws:PrincipalTag, aws:SourceIp
    Case("ArnEquals-PrincipalArn", ["kms:Encrypt"], lambda c, p: {"ArnEquals": {"aws:PrincipalArn": p.arn}},
         allowed=[enc()], deny_condition=lambda c, p: {"ArnEquals": {"aws:PrincipalArn": f"arn:aws:iam::{c.a}:user/nobody"}}),
    Case("ArnLike-PrincipalArn", ["kms:Encrypt"], cond({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/cond-*"}}),
         allowed=[enc()], deny_condition=cond({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/*"}})),
    Case("ArnNotLike-PrincipalArn", ["kms:Encrypt"], cond({"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/*"}}),
         allowed=[enc()], deny_condition=cond({"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/*"}})),
    Case("ArnNotEquals-PrincipalArn", ["kms:Encrypt"],
         lambda c, p: {"ArnNotEquals": {"aws:PrincipalArn": f"arn:aws:iam::{c.a}:user/nobody"}},
         allowed=[enc()], deny_condition=lambda c, p: {"ArnNotEquals": {"aws:PrincipalArn": p.arn}}),
    Case("PrincipalTag", ["kms:Encrypt"], cond({"StringEquals": {"aws:PrincipalTag/team": "blue"}}),
         allowed=[enc()], deny_condition=cond({"StringEquals": {"aws:PrincipalTag/team": "red"}})),
    Case("IpAddress-SourceIp", ["kms:Encrypt"], cond({"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}),
         allowed=[enc()], deny_condition=cond({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}})),
    Case("IpAddress-several-ranges", ["kms:Encrypt"], cond({"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "127.0.0.1/32"]}}),
         allowed=[enc()], deny_condition=cond({"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.168.0.0/16"]}})),
    Case("NotIpAddress-SourceIp", ["kms:Encrypt"], cond({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
         allowed=[enc()], deny_condition=cond({"NotIpAddress": {"aws:SourceIp": "127.0.0.1/32"}})),
    # ---- request tags: aws:RequestTag/<k>, aws:TagKeys
    Case("RequestTag-CreateKey", ["kms:CreateKey"], cond({"StringEquals": {"aws:RequestTag/env": "test"}}),
         allowed=[create_key({"env": "test"})], denied=[create_key({"env": "prod"}), create_key()], variants=("identity",)),
    Case("ForAnyValue-TagKeys-CreateKey", ["kms:CreateKey"], cond({"ForAnyValue:StringEquals": {"aws:TagKeys": "owner"}}),
         allowed=[create_key({"owner": "me", "env": "x"})], denied=[create_key({"env": "y"})], variants=("identity",)),
    Case("KeySpec-CreateKey", ["kms:CreateKey"], cond({"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}}),
         allowed=[create_key(KeySpec="SYMMETRIC_DEFAULT"), create_key()],
         deny_condition=cond({"StringEquals": {"kms:KeySpec": "HMAC_256"}}), variants=("identity",)),
    Case("ForAllValues-TagKeys-TagResource", ["kms:TagResource"], cond({"ForAllValues:StringEquals": {"aws:TagKeys": ["env", "owner"]}}),
         allowed=[tag(["env"]), tag(["env", "owner"])], denied=[tag(["env", "other"])]),
    Case("RequestTag-TagResource", ["kms:TagResource"], cond({"StringLike": {"aws:RequestTag/owner": "team-*"}}),
         allowed=[lambda c, p: p.kms.tag_resource(KeyId=c.key, Tags=[{"TagKey": "owner", "TagValue": "team-a"}])],
         denied=[lambda c, p: p.kms.tag_resource(KeyId=c.key, Tags=[{"TagKey": "owner", "TagValue": "me"}]), tag(["env"])]),
    Case("ForAllValues-TagKeys-UntagResource", ["kms:UntagResource"], cond({"ForAllValues:StringEquals": {"aws:TagKeys": ["temp"]}}),
         allowed=[untag(["temp"])], denied=[untag(["temp", "env"])]),
    # ---- time: aws:CurrentTime (Date operators), aws:EpochTime (Numeric operators)
    Case("DateGreaterThan-CurrentTime", ["kms:Encrypt"], cond({"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}),
         allowed=[enc()], deny_condition=cond({"DateLessThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}})),
    Case("DateLessThanEquals-CurrentTime", ["kms:Encrypt"], cond({"DateLessThanEquals": {"aws:CurrentTime": "2999-12-31T23:59:59Z"}}),
         allowed=[enc()], deny_condition=cond({"DateGreaterThanEquals": {"aws:CurrentTime": "2999-12-31T23:59:59Z"}})),
    Case("DateNotEquals-CurrentTime", ["kms:Encrypt"], cond({"DateNotEquals": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}),
         allowed=[enc()], deny_condition=cond({"DateEquals": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}})),
    Case("NumericGreaterThan-EpochTime", ["kms:Encrypt"], cond({"NumericGreaterThan": {"aws:EpochTime": EPOCH_2020}}),
         allowed=[enc()], deny_condition=cond({"NumericLessThan": {"aws:EpochTime": EPOCH_2020}})),
    Case("NumericLessThanEquals-EpochTime", ["kms:Encrypt"], cond({"NumericLessThanEquals": {"aws:EpochTime": EPOCH_3000}}),
         allowed=[enc()], deny_condition=cond({"NumericGreaterThanEquals": {"aws:EpochTime": EPOCH_3000}})),
    Case("NumericNotEquals-EpochTime", ["kms:Encrypt"], cond({"NumericNotEquals": {"aws:EpochTime": "0"}}),
         allowed=[enc()], deny_condition=cond({"NumericEquals": {"aws:EpochTime": "0"}})),
]

PARAMS = [pytest.param(case, variant, id=f"{variant}-{case.id}") for case in CASES for variant in case.variants]


def install(ctx: Ctx, variant: str, actor: Actor, actions: list[str], condition: dict) -> None:
    statement = allow(actions, condition=condition)
    if variant == "identity":
        actor.principal.put_policy(policy_json(statement))
        return
    statement = allow(actions, principal=actor.arn, condition=condition, sid="case")
    for key in (ctx.key, ctx.key_alpha, ctx.key_beta, ctx.sign_key):
        ctx.admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=policy_json(root_statement(ctx.a), statement))


@pytest.mark.parametrize("case,variant", PARAMS)
def test_condition(ctx, case: Case, variant: str):
    actor = ctx.actors[variant]
    install(ctx, variant, actor, case.actions, case.condition(ctx, actor))
    for i, call in enumerate(case.allowed):
        call(ctx, actor)
    for i, call in enumerate(case.denied):
        with expect_denied(what=f"{case.id}: denied call #{i}"):
            call(ctx, actor)
    if case.deny_condition is not None:
        install(ctx, variant, actor, case.actions, case.deny_condition(ctx, actor))
        for i, call in enumerate(case.allowed):
            with expect_denied(what=f"{case.id}: call #{i} under the denying condition"):
                call(ctx, actor)


def test_condition_in_a_deny_statement(ids, ctx):
    """The common guard rail: allow everything, deny Decrypt unless the context names the application."""
    user = ids.user(ctx.a, "cond-guard", policy_json(
        allow("kms:*"), deny("kms:Decrypt", condition={"StringNotEquals": {"kms:EncryptionContext:app": "web"}})))
    good = ctx.admin.kms.encrypt(KeyId=ctx.key, Plaintext=b"guarded web", EncryptionContext={"app": "web"})["CiphertextBlob"]
    bad = ctx.admin.kms.encrypt(KeyId=ctx.key, Plaintext=b"guarded db", EncryptionContext={"app": "db"})["CiphertextBlob"]
    assert user.kms.decrypt(CiphertextBlob=good, EncryptionContext={"app": "web"})["Plaintext"] == b"guarded web"
    key_arn = ctx.key
    with expect_denied(user.arn, "kms:Decrypt", key_arn, "deny-identity"):
        user.kms.decrypt(CiphertextBlob=bad, EncryptionContext={"app": "db"})


def test_key_policy_deny_unless_via_service(ctx):
    """A key policy that denies use outside the database service, even to a principal allowed kms:*."""
    key = ctx.admin.kms.create_key(Description="via-only")["KeyMetadata"]["Arn"]
    actor = ctx.actors["key"]
    policy = policy_json(
        root_statement(ctx.a),
        allow("kms:*", principal=actor.arn),
        deny(["kms:Encrypt", "kms:DescribeKey"], principal=actor.arn, condition={"StringNotEquals": {"kms:ViaService": RDS}}),
    )
    ctx.admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=policy)
    assert actor.via[RDS].describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key
    assert actor.via[RDS].encrypt(KeyId=key, Plaintext=b"via rds")["KeyId"] == key
    with expect_denied(actor.arn, "kms:DescribeKey", key, "deny-resource"):
        actor.kms.describe_key(KeyId=key)
    with expect_denied(actor.arn, "kms:Encrypt", key, "deny-resource"):
        actor.via[EBS].encrypt(KeyId=key, Plaintext=b"via ebs")


def test_condition_time_is_current(ctx):
    """aws:EpochTime is the server's clock: a window around now allows, a window that ended a minute ago does not."""
    actor = ctx.actors["identity"]
    now = int(time.time())
    install(ctx, "identity", actor, ["kms:Encrypt"],
            {"NumericGreaterThanEquals": {"aws:EpochTime": str(now - 600)}, "NumericLessThan": {"aws:EpochTime": str(now + 600)}})
    enc()(ctx, actor)
    install(ctx, "identity", actor, ["kms:Encrypt"], {"NumericLessThan": {"aws:EpochTime": str(now - 60)}})
    with expect_denied():
        enc()(ctx, actor)
