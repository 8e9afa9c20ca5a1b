"""The seeds' story of Amazon RDS and KMS, end to end, with a small reference database service.

`Database` below is the integrated service `rds.us-east-1.amazonaws.com`: it holds its own Trent credentials.
When a user creates a database it acts on the user's behalf (forwarded, signed authorization: the calls run as
the user with kms:ViaService = the service) to DescribeKey and to CreateGrant for itself; afterwards it uses
the key as itself, under that grant, with the encryption context {"aws:rds:db-id": <db id>}. Rows are sealed
with AES-GCM under a data key from GenerateDataKey; the service keeps only the encrypted data key and decrypts
it for every read, so taking the key away is noticed at the next read, and the database goes into the terminal
state "inaccessible-encryption-credentials" until the user restores access and restores the database.

The grants the service makes: one for the cryptographic operations, constrained to its database's encryption
context, and one for DescribeKey, unconstrained (Trent, as AWS, refuses constraints on DescribeKey).
"""

from __future__ import annotations

import json
import os
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trent_e2e import (
    ADMIN_POLICY,
    ForwardedAuthorization,
    REGION,
    account_key_arn,
    allow,
    expect_denied,
    expect_error,
    make_forwarding_kms,
    policy_json,
    root_arn,
    root_statement,
)

RDS = "rds.us-east-1.amazonaws.com"
CONTEXT_KEY = "aws:rds:db-id"
TERMINAL = "inaccessible-encryption-credentials"
AVAILABLE = "available"

CRYPTO_OPERATIONS = ["Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom", "ReEncryptTo"]


# --------------------------------------------------------------------------- the reference service

class DatabaseError(Exception):
    """A database-level failure; `kms_error` is the Trent error that caused it, if any."""

    def __init__(self, message: str, kms_error: ClientError | None = None):
        super().__init__(message)
        self.kms_error = kms_error

    @property
    def kms_code(self) -> str | None:
        return self.kms_error.response["Error"]["Code"] if self.kms_error else None

    @property
    def kms_message(self) -> str | None:
        return self.kms_error.response["Error"].get("Message") if self.kms_error else None


@dataclass
class Instance:
    db_id: str
    account: str
    key_arn: str
    key_manager: str
    encrypted_data_key: bytes
    grant_ids: list[str]
    rows: list[tuple[bytes, bytes]] = field(default_factory=list)
    status: str = AVAILABLE


@dataclass
class Snapshot:
    snapshot_id: str
    db_id: str  # the encryption context stays the source database's
    account: str
    key_arn: str
    key_manager: str
    encrypted_data_key: bytes
    rows: list[tuple[bytes, bytes]]
    shared_with: set[str] = field(default_factory=set)


def _new_id(prefix: str) -> str:
    return prefix + "-" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(26))


def _account_of(arn: str) -> str:
    return arn.split(":")[4]


class Database:
    NAME = RDS

    def __init__(self, server, principal):
        self.server = server
        self.principal = principal
        self.kms = principal.kms  # the service as itself
        self.instances: dict[str, Instance] = {}
        self.snapshots: dict[str, Snapshot] = {}

    def on_behalf_of(self, auth: ForwardedAuthorization):
        return make_forwarding_kms(self.server, self.principal, auth)

    @staticmethod
    def context(db_id: str) -> dict[str, str]:
        return {CONTEXT_KEY: db_id}

    # ---- authorization through the user

    def _authorize_key(self, auth: ForwardedAuthorization, key_id: str | None, db_id: str) -> tuple[dict, list[str]]:
        """As the user, via the service: DescribeKey, then grants for the service itself on that key."""
        user = self.on_behalf_of(auth)
        metadata = user.describe_key(KeyId=key_id or "alias/aws/rds")["KeyMetadata"]
        if metadata["KeyState"] != "Enabled":
            raise DatabaseError(f"key {metadata['Arn']} is {metadata['KeyState']}")
        crypto = user.create_grant(
            KeyId=metadata["Arn"], GranteePrincipal=self.NAME, RetiringPrincipal=self.NAME, Operations=CRYPTO_OPERATIONS,
            Constraints={"EncryptionContextSubset": self.context(db_id)}, Name=db_id)
        describe = user.create_grant(
            KeyId=metadata["Arn"], GranteePrincipal=self.NAME, RetiringPrincipal=self.NAME, Operations=["DescribeKey"],
            Name=f"{db_id}-describe")
        return metadata, [crypto["GrantId"], describe["GrantId"]]

    # ---- databases

    def create_database(self, auth: ForwardedAuthorization, key_id: str | None = None) -> str:
        db_id = _new_id("db")
        metadata, grant_ids = self._authorize_key(auth, key_id, db_id)
        # From here on the service uses the key as itself, under its grant.
        data_key = self.kms.generate_data_key(KeyId=metadata["Arn"], KeySpec="AES_256", EncryptionContext=self.context(db_id))
        assert data_key["KeyId"] == metadata["Arn"]
        self.instances[db_id] = Instance(
            db_id=db_id, account=_account_of(auth.principal_arn), key_arn=metadata["Arn"], key_manager=metadata["KeyManager"],
            encrypted_data_key=data_key["CiphertextBlob"], grant_ids=grant_ids)
        return db_id

    def _data_key(self, instance: Instance) -> bytes:
        if instance.status == TERMINAL:
            raise DatabaseError(f"{instance.db_id} is {TERMINAL}")
        try:
            out = self.kms.decrypt(CiphertextBlob=instance.encrypted_data_key, KeyId=instance.key_arn,
                                   EncryptionContext=self.context(instance.db_id))
        except ClientError as error:
            # The key was taken away: the instance can no longer be used, and stays so.
            instance.status = TERMINAL
            raise DatabaseError(f"{instance.db_id} is {TERMINAL}", error) from error
        return out["Plaintext"]

    @staticmethod
    def _aad(db_id: str, index: int) -> bytes:
        return f"{db_id}/{index}".encode()

    def write(self, db_id: str, row: bytes) -> None:
        instance = self.instances[db_id]
        key = AESGCM(self._data_key(instance))
        nonce = os.urandom(12)
        instance.rows.append((nonce, key.encrypt(nonce, row, self._aad(db_id, len(instance.rows)))))

    def read(self, db_id: str) -> list[bytes]:
        instance = self.instances[db_id]
        return self._open_rows(self._data_key(instance), db_id, instance.rows)

    def _open_rows(self, data_key: bytes, db_id: str, rows) -> list[bytes]:
        key = AESGCM(data_key)
        return [key.decrypt(nonce, sealed, self._aad(db_id, i)) for i, (nonce, sealed) in enumerate(rows)]

    def status(self, db_id: str) -> str:
        return self.instances[db_id].status

    def restore_database(self, db_id: str, auth: ForwardedAuthorization) -> None:
        """After the user gave access back: authorize again through the user, check the key works, resume."""
        instance = self.instances[db_id]
        _, instance.grant_ids = self._authorize_key(auth, instance.key_arn, db_id)
        instance.status = AVAILABLE
        self._data_key(instance)

    # ---- snapshots

    def create_snapshot(self, db_id: str) -> str:
        instance = self.instances[db_id]
        if instance.status == TERMINAL:
            raise DatabaseError(f"{db_id} is {TERMINAL}")
        snapshot_id = _new_id("snap")
        self.snapshots[snapshot_id] = Snapshot(
            snapshot_id=snapshot_id, db_id=db_id, account=instance.account, key_arn=instance.key_arn,
            key_manager=instance.key_manager, encrypted_data_key=instance.encrypted_data_key, rows=list(instance.rows))
        return snapshot_id

    def copy_snapshot(self, snapshot_id: str, auth: ForwardedAuthorization, destination_key_id: str) -> str:
        """A copy "in another region": the data key is re-encrypted under the destination key, inside Trent."""
        source = self.snapshots[snapshot_id]
        metadata, _ = self._authorize_key(auth, destination_key_id, source.db_id)
        out = self.kms.re_encrypt(
            CiphertextBlob=source.encrypted_data_key, SourceKeyId=source.key_arn, SourceEncryptionContext=self.context(source.db_id),
            DestinationKeyId=metadata["Arn"], DestinationEncryptionContext=self.context(source.db_id))
        assert out["SourceKeyId"] == source.key_arn and out["KeyId"] == metadata["Arn"]
        copy_id = _new_id("snap")
        self.snapshots[copy_id] = Snapshot(
            snapshot_id=copy_id, db_id=source.db_id, account=source.account, key_arn=metadata["Arn"],
            key_manager=metadata["KeyManager"], encrypted_data_key=out["CiphertextBlob"], rows=list(source.rows))
        return copy_id

    def read_snapshot(self, snapshot_id: str, auth: ForwardedAuthorization | None = None) -> list[bytes]:
        """By the owner (the service under its grant), or by an account it was shared with (on that user's behalf)."""
        snapshot = self.snapshots[snapshot_id]
        if auth is None:
            client = self.kms
        else:
            if _account_of(auth.principal_arn) not in snapshot.shared_with | {snapshot.account}:
                raise DatabaseError(f"{snapshot_id} is not shared with {_account_of(auth.principal_arn)}")
            client = self.on_behalf_of(auth)
        try:
            out = client.decrypt(CiphertextBlob=snapshot.encrypted_data_key, KeyId=snapshot.key_arn,
                                 EncryptionContext=self.context(snapshot.db_id))
        except ClientError as error:
            raise DatabaseError(f"cannot read {snapshot_id}", error) from error
        return self._open_rows(out["Plaintext"], snapshot.db_id, snapshot.rows)

    def share_snapshot(self, snapshot_id: str, account: str) -> None:
        snapshot = self.snapshots[snapshot_id]
        if snapshot.key_manager == "AWS":
            raise DatabaseError("You can't share a snapshot encrypted with the AWS managed key of the account that shares it.")
        snapshot.shared_with.add(account)


# --------------------------------------------------------------------------- the world

@dataclass
class World:
    a: str
    b: str
    admin: Any  # key administrator of account A (identity policy kms:*)
    user: Any  # the database user of account A
    carol: Any  # a user of account B
    service: Database

    def key_policy(self, *extra: dict) -> str:
        return policy_json(
            root_statement(self.a),
            allow("kms:DescribeKey", principal=self.user.arn, sid="Allow DescribeKey through RDS",
                  condition={"StringEquals": {"kms:ViaService": RDS, "kms:CallerAccount": self.a}}),
            allow("kms:CreateGrant", principal=self.user.arn, sid="Allow grants for RDS resources",
                  condition={"StringEquals": {"kms:ViaService": RDS}, "Bool": {"kms:GrantIsForAWSResource": "true"}}),
            *extra,
        )

    def customer_key(self, *extra: dict) -> str:
        """A customer managed key the database user creates, usable by it only through the service."""
        md = self.user.kms.create_key(Description="database key", Policy=self.key_policy(*extra))["KeyMetadata"]
        assert md["KeyManager"] == "CUSTOMER" and md["AWSAccountId"] == self.a
        return md["Arn"]

    def auth(self, who=None) -> ForwardedAuthorization:
        return (who or self.user).authorize_service(RDS)


@pytest.fixture(scope="module")
def w(server, ids) -> World:
    a, b = ids.account("rds-a"), ids.account("rds-b")
    user = ids.user(a, "dbuser", policy_json(allow(["kms:CreateKey", "kms:PutKeyPolicy", "kms:GetKeyPolicy"])))
    carol = ids.user(b, "carol", policy_json(allow(
        ["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant"], resource=f"arn:aws:kms:{REGION}:{a}:key/*",
        condition={"StringEquals": {"kms:ViaService": RDS}})))
    return World(a=a, b=b, admin=ids.user(a, "keyadmin", ADMIN_POLICY), user=user, carol=carol,
                 service=Database(server, ids.service(RDS)))


ROWS = [b"alice,42,paris", b"bob,17,oslo", b"carol,99,lima"]


def populated(w: World, key_arn: str | None) -> str:
    db = w.service.create_database(w.auth(), key_arn)
    for row in ROWS:
        w.service.write(db, row)
    assert w.service.read(db) == ROWS
    return db


# --------------------------------------------------------------------------- customer managed key

def test_create_database_with_customer_key(w):
    key = w.customer_key()
    db = populated(w, key)
    inst = w.service.instances[db]
    assert inst.key_arn == key and inst.key_manager == "CUSTOMER"

    grants = w.admin.kms.list_grants(KeyId=key)["Grants"]
    by_name = {g["Name"]: g for g in grants}
    assert set(by_name) == {db, f"{db}-describe"}
    crypto = by_name[db]
    assert crypto["GranteePrincipal"] == RDS and crypto["RetiringPrincipal"] == RDS
    assert sorted(crypto["Operations"]) == sorted(CRYPTO_OPERATIONS)
    assert crypto["Constraints"] == {"EncryptionContextSubset": {CONTEXT_KEY: db}}
    # The grant was made by the user's account, through the service.
    assert crypto["IssuingAccount"] == root_arn(w.a)
    assert by_name[f"{db}-describe"]["Operations"] == ["DescribeKey"]

    # The data key is bound to the database's encryption context.
    with expect_error("InvalidCiphertextException"):
        w.admin.kms.decrypt(CiphertextBlob=inst.encrypted_data_key, EncryptionContext={CONTEXT_KEY: "db-OTHER"})
    assert len(w.admin.kms.decrypt(CiphertextBlob=inst.encrypted_data_key, EncryptionContext={CONTEXT_KEY: db})["Plaintext"]) == 32


def test_user_cannot_use_the_key_directly(w):
    key = w.customer_key()
    db = populated(w, key)
    inst = w.service.instances[db]
    ctx = {CONTEXT_KEY: db}
    u = w.user.kms
    with expect_denied(w.user.arn, "kms:Decrypt", key, "no-identity"):
        u.decrypt(CiphertextBlob=inst.encrypted_data_key, EncryptionContext=ctx)
    with expect_denied(w.user.arn, "kms:GenerateDataKey", key, "no-identity"):
        u.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=ctx)
    with expect_denied(w.user.arn, "kms:DescribeKey", key, "no-identity"):
        u.describe_key(KeyId=key)
    with expect_denied(w.user.arn, "kms:CreateGrant", key, "no-identity"):
        u.create_grant(KeyId=key, GranteePrincipal=RDS, Operations=["Decrypt"], Constraints={"EncryptionContextSubset": ctx})
    # Through the service, the user's own permissions still do not include using the key.
    via = w.service.on_behalf_of(w.auth())
    with expect_denied(w.user.arn, "kms:Decrypt", key, "no-identity"):
        via.decrypt(CiphertextBlob=inst.encrypted_data_key, EncryptionContext=ctx)
    # The service as itself: only its grant, only within the database's context.
    with expect_denied(RDS, "kms:Decrypt", key, "no-resource"):
        w.service.kms.decrypt(CiphertextBlob=inst.encrypted_data_key, EncryptionContext={CONTEXT_KEY: "db-OTHER"})
    with expect_denied(RDS, "kms:DisableKey", key, "no-resource"):
        w.service.kms.disable_key(KeyId=key)
    # A grant for the service made by the user directly (not through the service) is refused.
    with expect_denied(w.user.arn, "kms:CreateGrant", key, "no-identity"):
        u.create_grant(KeyId=key, GranteePrincipal=RDS, Operations=CRYPTO_OPERATIONS)


def test_service_without_authorization_cannot_use_a_key(w):
    key = w.customer_key()
    with expect_denied(RDS, "kms:GenerateDataKey", key, "no-resource"):
        w.service.kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext={CONTEXT_KEY: "db-X"})
    # Another account's user cannot authorize the service on this key: the key policy does not let account B in.
    with pytest.raises(ClientError) as excinfo:
        w.service.create_database(w.auth(w.carol), key)
    assert excinfo.value.response["Error"]["Code"] == "AccessDeniedException"


def _take_away(w, how, key, db):
    if how == "disable":
        w.admin.kms.disable_key(KeyId=key)
        return "DisabledException"
    if how == "schedule-deletion":
        w.admin.kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
        return "KMSInvalidStateException"
    if how == "revoke-grant":
        for g in w.admin.kms.list_grants(KeyId=key, GranteePrincipal=RDS)["Grants"]:
            if g["Name"] == db:
                w.admin.kms.revoke_grant(KeyId=key, GrantId=g["GrantId"])
        return "AccessDeniedException"
    raise AssertionError(how)


def _give_back(w, how, key):
    if how == "disable":
        w.admin.kms.enable_key(KeyId=key)
    elif how == "schedule-deletion":
        w.admin.kms.cancel_key_deletion(KeyId=key)
        w.admin.kms.enable_key(KeyId=key)


@pytest.mark.parametrize("how", ["disable", "revoke-grant", "schedule-deletion"])
def test_key_taken_away_puts_the_database_in_terminal_state(w, how):
    key = w.customer_key()
    db = populated(w, key)
    old_grants = list(w.service.instances[db].grant_ids)

    code = _take_away(w, how, key, db)
    with pytest.raises(DatabaseError) as excinfo:
        w.service.read(db)
    assert excinfo.value.kms_code == code, excinfo.value.kms_error
    if how == "revoke-grant":
        assert excinfo.value.kms_message == (
            f"User: {RDS} is not authorized to perform: kms:Decrypt on resource: {key} "
            "because no resource-based policy allows the kms:Decrypt action")
    assert w.service.status(db) == TERMINAL

    # Giving the key back does not bring the instance back by itself ...
    _give_back(w, how, key)
    with pytest.raises(DatabaseError) as excinfo:
        w.service.read(db)
    assert excinfo.value.kms_error is None  # refused by the service, without asking Trent
    assert w.service.status(db) == TERMINAL
    with pytest.raises(DatabaseError):
        w.service.write(db, b"late row")

    # ... restoring does, after the user authorizes the service again.
    w.service.restore_database(db, w.auth())
    assert w.service.status(db) == AVAILABLE
    assert w.service.read(db) == ROWS
    w.service.write(db, b"dave,1,rome")
    assert w.service.read(db) == ROWS + [b"dave,1,rome"]
    new_grants = w.service.instances[db].grant_ids
    if how == "revoke-grant":
        assert new_grants[0] != old_grants[0]  # a new grant replaced the revoked one
    else:
        assert new_grants == old_grants  # same name, same parameters: the same grants


def test_restore_is_refused_while_the_key_is_disabled(w):
    key = w.customer_key()
    db = populated(w, key)
    w.admin.kms.disable_key(KeyId=key)
    with pytest.raises(DatabaseError):
        w.service.read(db)
    with pytest.raises(DatabaseError):
        w.service.restore_database(db, w.auth())
    with expect_error("DisabledException"):
        w.service.on_behalf_of(w.auth()).create_grant(
            KeyId=key, GranteePrincipal=RDS, Operations=["Decrypt"], Constraints={"EncryptionContextSubset": {CONTEXT_KEY: db}})
    assert w.service.status(db) == TERMINAL


def test_user_removing_its_own_authorization_blocks_new_databases(w):
    key = w.customer_key()
    db = populated(w, key)
    # Only the root statement is left: the user may no longer DescribeKey or CreateGrant, even through the service.
    w.admin.kms.put_key_policy(KeyId=key, PolicyName="default", Policy=policy_json(root_statement(w.a)))
    with pytest.raises(ClientError) as excinfo:
        w.service.create_database(w.auth(), key)
    assert excinfo.value.response["Error"]["Code"] == "AccessDeniedException"
    assert excinfo.value.response["Error"]["Message"] == (
        f"User: {w.user.arn} is not authorized to perform: kms:DescribeKey on resource: {key} "
        "because no identity-based policy allows the kms:DescribeKey action")
    # Existing grants keep working: the existing database is still readable.
    assert w.service.read(db) == ROWS


# --------------------------------------------------------------------------- the AWS managed key aws/rds

def test_database_with_the_aws_managed_key(w):
    db = populated(w, None)
    inst = w.service.instances[db]
    md = w.admin.kms.describe_key(KeyId="alias/aws/rds")["KeyMetadata"]
    assert inst.key_arn == md["Arn"] and inst.key_manager == "AWS"
    assert md["KeyManager"] == "AWS" and md["AWSAccountId"] == w.a and md["KeyState"] == "Enabled"
    assert md["Description"] == "Default key that protects my RDS data when no other key is defined"
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in w.admin.kms.list_aliases(KeyId=md["Arn"])["Aliases"]}
    assert aliases == {"alias/aws/rds": md["KeyId"]}

    # Created once per account: a second database uses the same key.
    db2 = populated(w, None)
    assert w.service.instances[db2].key_arn == md["Arn"]

    policy = json.loads(w.admin.kms.get_key_policy(KeyId=md["Arn"], PolicyName="default")["Policy"])
    via, direct = policy["Statement"]
    assert via["Principal"] == {"AWS": "*"} and via["Effect"] == "Allow"
    assert via["Condition"] == {"StringEquals": {"kms:CallerAccount": w.a, "kms:ViaService": RDS}}
    assert set(via["Action"]) == {"kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant",
                                  "kms:ListGrants", "kms:DescribeKey"}
    assert direct["Principal"] == {"AWS": root_arn(w.a)}
    assert set(direct["Action"]) == {"kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"}


def test_nobody_manages_the_aws_managed_key(w):
    populated(w, None)
    arn = w.admin.kms.describe_key(KeyId="alias/aws/rds")["KeyMetadata"]["Arn"]
    admin = w.admin.kms
    assert admin.list_key_policies(KeyId=arn)["PolicyNames"] == ["default"]
    assert any(g["GranteePrincipal"] == RDS for g in admin.list_grants(KeyId=arn)["Grants"])
    denied = {
        "kms:DisableKey": lambda: admin.disable_key(KeyId=arn),
        "kms:ScheduleKeyDeletion": lambda: admin.schedule_key_deletion(KeyId=arn, PendingWindowInDays=7),
        "kms:PutKeyPolicy": lambda: admin.put_key_policy(KeyId=arn, PolicyName="default", Policy=policy_json(root_statement(w.a))),
        "kms:UpdateKeyDescription": lambda: admin.update_key_description(KeyId=arn, Description="mine now"),
        "kms:TagResource": lambda: admin.tag_resource(KeyId=arn, Tags=[{"TagKey": "k", "TagValue": "v"}]),
        "kms:Encrypt": lambda: admin.encrypt(KeyId="alias/aws/rds", Plaintext=b"directly"),
        "kms:GenerateDataKey": lambda: admin.generate_data_key(KeyId=arn, KeySpec="AES_256"),
        "kms:CreateGrant": lambda: admin.create_grant(KeyId=arn, GranteePrincipal=w.user.arn, Operations=["Encrypt"]),
    }
    for action, call in denied.items():
        with expect_denied(w.admin.arn, action, arn, "no-resource", what=action):
            call()
    with expect_denied(w.user.arn, "kms:Encrypt", arn, "no-resource"):
        w.user.kms.encrypt(KeyId="alias/aws/rds", Plaintext=b"directly")
    assert admin.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"] == "Enabled"
    # Aliases under alias/aws/ are reserved.
    with expect_error("NotAuthorizedException"):
        admin.create_alias(AliasName="alias/aws/mine", TargetKeyId=w.admin.kms.create_key()["KeyMetadata"]["KeyId"])


def test_aws_managed_key_is_per_account(ids, w):
    other = ids.account("rds-c")
    eve = ids.user(other, "eve")
    db = w.service.create_database(eve.authorize_service(RDS))
    a_key = w.admin.kms.describe_key(KeyId="alias/aws/rds")["KeyMetadata"]["Arn"]
    eve_key = w.service.instances[db].key_arn
    assert eve_key != a_key and eve_key.startswith(f"arn:aws:kms:{REGION}:{other}:key/")
    # eve (no identity policy at all) cannot use it directly, but her database works.
    with expect_denied(eve.arn, "kms:Encrypt", eve_key, "no-resource"):
        eve.kms.encrypt(KeyId="alias/aws/rds", Plaintext=b"directly")
    w.service.write(db, b"row")
    assert w.service.read(db) == [b"row"]


# --------------------------------------------------------------------------- snapshots

def test_cross_region_snapshot_copy(w):
    source_key = w.customer_key()
    destination_key = w.customer_key()  # stands for the destination region's key
    db = populated(w, source_key)
    snap = w.service.create_snapshot(db)
    assert w.service.read_snapshot(snap) == ROWS

    copy = w.service.copy_snapshot(snap, w.auth(), destination_key)
    copied = w.service.snapshots[copy]
    assert copied.key_arn == destination_key
    assert w.service.read_snapshot(copy) == ROWS
    # The copy's data key is under the destination key only.
    with expect_error("IncorrectKeyException"):
        w.admin.kms.decrypt(CiphertextBlob=copied.encrypted_data_key, KeyId=source_key, EncryptionContext={CONTEXT_KEY: db})
    assert w.admin.kms.decrypt(CiphertextBlob=copied.encrypted_data_key, EncryptionContext={CONTEXT_KEY: db})["KeyId"] == destination_key
    # The copy is independent of the source key.
    w.admin.kms.disable_key(KeyId=source_key)
    with pytest.raises(DatabaseError) as excinfo:
        w.service.read_snapshot(snap)
    assert excinfo.value.kms_code == "DisabledException"
    assert w.service.read_snapshot(copy) == ROWS


def test_snapshot_copy_needs_the_users_authorization_on_the_destination(w):
    source_key = w.customer_key()
    db = populated(w, source_key)
    snap = w.service.create_snapshot(db)
    foreign = w.admin.kms.create_key(Description="not authorized for RDS")["KeyMetadata"]["Arn"]
    with pytest.raises(ClientError) as excinfo:
        w.service.copy_snapshot(snap, w.auth(), foreign)
    assert excinfo.value.response["Error"]["Code"] == "AccessDeniedException"
    # Without a grant on the destination, ReEncrypt as the service is refused too.
    with expect_denied(RDS, "kms:ReEncryptTo", foreign, "no-resource"):
        w.service.kms.re_encrypt(CiphertextBlob=w.service.snapshots[snap].encrypted_data_key,
                                 SourceEncryptionContext={CONTEXT_KEY: db}, DestinationKeyId=foreign,
                                 DestinationEncryptionContext={CONTEXT_KEY: db})


def test_snapshot_under_the_aws_managed_key_cannot_be_shared(w):
    db = populated(w, None)
    snap = w.service.create_snapshot(db)
    with pytest.raises(DatabaseError, match="AWS managed key"):
        w.service.share_snapshot(snap, w.b)
    with pytest.raises(DatabaseError, match="not shared"):
        w.service.read_snapshot(snap, w.auth(w.carol))
    # Trent itself refuses account B, even through the service: kms:CallerAccount is account A's.
    snapshot = w.service.snapshots[snap]
    with expect_denied(w.carol.arn, "kms:Decrypt", snapshot.key_arn, "no-resource"):
        w.service.on_behalf_of(w.auth(w.carol)).decrypt(
            CiphertextBlob=snapshot.encrypted_data_key, EncryptionContext={CONTEXT_KEY: db})
    # The owner can still read it.
    assert w.service.read_snapshot(snap) == ROWS


def test_snapshot_under_a_customer_key_shared_with_another_account(w):
    share_b = allow(["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant"], principal=root_arn(w.b), sid="Allow account B")
    key = w.customer_key(share_b)
    db = populated(w, key)
    snap = w.service.create_snapshot(db)
    w.service.share_snapshot(snap, w.b)
    assert w.service.read_snapshot(snap, w.auth(w.carol)) == ROWS
    # carol's identity policy allows the key only through the service.
    snapshot = w.service.snapshots[snap]
    with expect_denied(w.carol.arn, "kms:Decrypt", key, "no-identity"):
        w.carol.kms.decrypt(CiphertextBlob=snapshot.encrypted_data_key, EncryptionContext={CONTEXT_KEY: db})


def test_snapshot_shared_without_the_key_policy_is_unreadable(w):
    key = w.customer_key()
    db = populated(w, key)
    snap = w.service.create_snapshot(db)
    w.service.share_snapshot(snap, w.b)  # the service allows it; the key policy does not let account B in
    with pytest.raises(DatabaseError) as excinfo:
        w.service.read_snapshot(snap, w.auth(w.carol))
    assert excinfo.value.kms_code == "AccessDeniedException"
    assert excinfo.value.kms_message == (
        f"User: {w.carol.arn} is not authorized to perform: kms:Decrypt on resource: {key} "
        "because no resource-based policy allows the kms:Decrypt action")


# --------------------------------------------------------------------------- the service by name, and foreign callers

def test_key_policy_naming_the_service_lets_it_act_as_itself(w):
    """Besides grants, a key policy naming the service principal ({"Service": ...}) gives the service that access."""
    key = w.customer_key(allow(["kms:DescribeKey", "kms:GenerateDataKey"], principal={"Service": RDS}, sid="The service itself"))
    assert w.service.kms.describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key
    out = w.service.kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext={CONTEXT_KEY: "db-BYNAME"})
    assert out["KeyId"] == key
    with expect_denied(RDS, "kms:Decrypt", key, "no-resource"):
        w.service.kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={CONTEXT_KEY: "db-BYNAME"})


def test_another_account_does_not_create_the_aws_managed_key(ids, w):
    """Naming account C's alias/aws/rds from account B must not create C's AWS managed key."""
    c = ids.account("rds-untouched")
    c_admin = ids.user(c, "c-admin", ADMIN_POLICY)
    with expect_error("NotFoundException"):
        w.carol.kms.describe_key(KeyId=f"arn:aws:kms:{REGION}:{c}:alias/aws/rds")
    with expect_error("NotFoundException"):
        w.service.on_behalf_of(w.auth(w.carol)).describe_key(KeyId=f"arn:aws:kms:{REGION}:{c}:alias/aws/rds")
    assert c_admin.kms.list_keys()["Keys"] == []
    assert [a["AliasName"] for a in c_admin.kms.list_aliases()["Aliases"]] == []
