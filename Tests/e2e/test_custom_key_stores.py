"""Custom key stores on PKCS#11 tokens: CreateCustomKeyStore, DescribeCustomKeyStores, UpdateCustomKeyStore,
ConnectCustomKeyStore, DisconnectCustomKeyStore and DeleteCustomKeyStore, keys generated in a store's token
(Origin AWS_CLOUDHSM) and keys referencing an object an operator made there (Origin EXTERNAL_KEY_STORE with
XksKeyId), each with its success and its documented errors, through boto3.

The server of this module declares its key-store tokens in a YAML configuration (`keyStores:`). They are
SoftHSM tokens made with softhsm2-util in the server's own folder, whatever this run's main token is (on the
NSS run the server gets SOFTHSM2_CONF for them), and operator objects are made with pkcs11-tool (opensc).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import pytest

from trent_e2e import TOKEN, TrentServer, expect_error, make_kms, remember_plaintext

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
SO_PIN = "12345678"
# KeyStorePassword is the token's user PIN (7 to 32 characters). Distinctive, so the hygiene test
# (test_zz_hygiene) looks for them in every log, audit trail and store file.
PIN_SECOND = "cks-second-PIN-4e7a91"
PIN_THIRD = "cks-third-PIN-91b2c3d"

# Cluster ids follow the CloudHSM pattern cluster-[2-7a-zA-Z]{11,16} (boto3 and the CLI check the length).
SECOND = "cluster-trentsecond"  # token trent-second
SECOND_ALIAS = "cluster-trentsecondalias"  # the same token, declared under a second id (a "related cluster")
THIRD = "cluster-trentthirdtok"  # token trent-third
ANCHORED = "cluster-trentanchored"  # token trent-anchored, with a trust anchor certificate file
ABSENT = "cluster-trentabsenttok"  # declared, but no token has its label
UNDECLARED = "cluster-trentundeclare"  # not in the configuration at all

ANCHOR = "-----BEGIN CERTIFICATE-----\nTRENT+E2E+TRUST+ANCHOR+FOR+THE+ANCHORED+TOKEN\n-----END CERTIFICATE-----\n"
OTHER_ANCHOR = "-----BEGIN CERTIFICATE-----\nSOME+OTHER+CLUSTER+CERTIFICATE\n-----END CERTIFICATE-----\n"

for secret in (PIN_SECOND, PIN_THIRD):
    remember_plaintext(secret)


class KeyStoreLab:
    """The module's server, its client, and the SoftHSM folder its key-store tokens live in."""

    def __init__(self, server: TrentServer, softhsm_env: dict):
        self.server = server
        self.kms = make_kms(server)
        self.env = softhsm_env
        self.store_id: str | None = None  # the connected store on SECOND that holds keys

    def pkcs11_tool(self, label: str, pin: str, *args: str) -> str:
        result = subprocess.run(
            ["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", label, "--login", "--pin", pin, *args],
            env=self.env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def object_labels(self, label="trent-second", pin=PIN_SECOND) -> set[str]:
        return set(re.findall(r"label:\s+(\S+)", self.pkcs11_tool(label, pin, "--list-objects", "--type", "secrkey")))

    def state(self, store_id: str) -> tuple[str, str | None]:
        entry = self.kms.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"][0]
        return entry["ConnectionState"], entry.get("ConnectionErrorCode")

    def create_store(self, name: str, cluster: str = THIRD, password: str = PIN_THIRD, anchor: str = ANCHOR) -> str:
        return self.kms.create_custom_key_store(
            CustomKeyStoreName=name, CloudHsmClusterId=cluster, TrustAnchorCertificate=anchor, KeyStorePassword=password,
        )["CustomKeyStoreId"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    data = tmp_path_factory.mktemp("trent-cks")
    # The same folder as the embedded SoftHSM token's on the softhsm2 run (Trent rewrites the conf with the same
    # token folder); on the NSS run, a folder of its own named by SOFTHSM2_CONF.
    softhsm = data / "softhsm"
    tokens = softhsm / "tokens"
    tokens.mkdir(parents=True)
    conf = softhsm / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRENT_")}
    env["SOFTHSM2_CONF"] = str(conf)
    for label, pin in (("trent-second", PIN_SECOND), ("trent-third", PIN_THIRD), ("trent-anchored", PIN_THIRD)):
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", pin],
            env=env, check=True, capture_output=True, timeout=60)
    anchor = data / "customerCA.crt"
    anchor.write_text(ANCHOR)
    config = data / "trent-cks.yaml"
    config.write_text(
        "keyStores:\n"
        f"  - {{cloudHsmClusterId: {SECOND}, tokenLabel: trent-second, module: {SOFTHSM_MODULE}, profile: softhsm2}}\n"
        f"  - {{cloudHsmClusterId: {SECOND_ALIAS}, tokenLabel: trent-second, module: {SOFTHSM_MODULE}}}\n"
        f"  - {{cloudHsmClusterId: {THIRD}, tokenLabel: trent-third}}\n"
        f"  - {{cloudHsmClusterId: {ANCHORED}, tokenLabel: trent-anchored, trustAnchorCertificateFile: {anchor}}}\n"
        f"  - {{cloudHsmClusterId: {ABSENT}, tokenLabel: trent-no-such-token}}\n")
    server = TrentServer(data)
    server.env.update(TRENT_CONFIG=str(config), SOFTHSM2_CONF=str(conf))
    lab = KeyStoreLab(server, env)
    # Keys an operator made in the second token, to be referenced by XksKeyId.
    for args in (
        ("--label", "op-aes-key", "--key-type", "AES:32", "--sensitive"),
        ("--label", "op-by-id", "--id", "a1b2c3d4", "--key-type", "AES:32", "--sensitive"),
        ("--label", "op-aes-128", "--key-type", "AES:16", "--sensitive"),
        ("--label", "op-not-sensitive", "--key-type", "AES:32"),
        ("--label", "op-generic", "--key-type", "GENERIC:32", "--sensitive"),
        ("--label", "op-kept-key", "--key-type", "AES:32", "--sensitive"),
    ):
        lab.pkcs11_tool("trent-second", PIN_SECOND, "--keygen", *args)
    server.start()
    yield lab
    server.stop()


@pytest.fixture(scope="module")
def store(lab):
    """A store on the second token, connected: the home of this module's KMS keys."""
    kms = lab.kms
    store_id = lab.create_store("trent-e2e-primary", cluster=SECOND, password=PIN_SECOND)
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert lab.state(store_id) == ("CONNECTED", None)
    lab.store_id = store_id
    return store_id


def connected(lab, store_id):
    if lab.state(store_id)[0] != "CONNECTED":
        lab.kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert lab.state(store_id) == ("CONNECTED", None)


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


# --------------------------------------------------------------------------- CreateCustomKeyStore

def test_create_custom_key_store_and_describe_it(lab):
    kms = lab.kms
    store_id = lab.create_store("trent-e2e-create")
    try:
        assert re.fullmatch(r"cks-[0-9a-f]{17}", store_id), store_id
        entry = kms.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"][0]
        assert entry["CustomKeyStoreId"] == store_id
        assert entry["CustomKeyStoreName"] == "trent-e2e-create"
        assert entry["CloudHsmClusterId"] == THIRD
        assert entry["TrustAnchorCertificate"] == ANCHOR
        assert entry["CustomKeyStoreType"] == "AWS_CLOUDHSM"
        assert entry["ConnectionState"] == "DISCONNECTED"
        assert "ConnectionErrorCode" not in entry
        assert entry["CreationDate"].year >= 2024
        assert "KeyStorePassword" not in entry
    finally:
        kms.delete_custom_key_store(CustomKeyStoreId=store_id)


def test_create_custom_key_store_errors(lab, store):
    kms = lab.kms
    with expect_error("CustomKeyStoreNameInUseException"):
        lab.create_store("trent-e2e-primary", cluster=THIRD)
    with expect_error("CloudHsmClusterNotFoundException"):
        lab.create_store("trent-e2e-undeclared", cluster=UNDECLARED)
    # The primary store holds the second token, under either of its declared ids.
    with expect_error("CloudHsmClusterInUseException"):
        lab.create_store("trent-e2e-second-again", cluster=SECOND, password=PIN_SECOND)
    with expect_error("CloudHsmClusterInUseException"):
        lab.create_store("trent-e2e-second-alias", cluster=SECOND_ALIAS, password=PIN_SECOND)
    with expect_error("CloudHsmClusterNotActiveException"):
        lab.create_store("trent-e2e-absent", cluster=ABSENT)
    with expect_error("IncorrectTrustAnchorException"):
        lab.create_store("trent-e2e-anchored", cluster=ANCHORED, anchor=OTHER_ANCHOR)
    anchored = lab.create_store("trent-e2e-anchored", cluster=ANCHORED, anchor=ANCHOR)
    kms.delete_custom_key_store(CustomKeyStoreId=anchored)
    with expect_error("UnsupportedOperationException", "EXTERNAL_KEY_STORE (no XKS proxy)"):
        kms.create_custom_key_store(CustomKeyStoreName="trent-e2e-xks", CustomKeyStoreType="EXTERNAL_KEY_STORE")
    base = dict(CustomKeyStoreName="trent-e2e-invalid", CloudHsmClusterId=THIRD, TrustAnchorCertificate=ANCHOR, KeyStorePassword=PIN_THIRD)
    for what, change in (
        ("short password", {"KeyStorePassword": "123456"}),
        ("long password", {"KeyStorePassword": "x" * 33}),
        ("cluster id pattern", {"CloudHsmClusterId": "cluster-trent_third_1"}),
        ("cluster id length", {"CloudHsmClusterId": "cluster-short"}),
        ("empty name", {"CustomKeyStoreName": ""}),
        ("unknown type", {"CustomKeyStoreType": "FLOPPY_DISK"}),
    ):
        with expect_error("ValidationException", what):
            kms.create_custom_key_store(**{**base, **change})
    for member in ("CloudHsmClusterId", "TrustAnchorCertificate", "KeyStorePassword", "CustomKeyStoreName"):
        with expect_error("ValidationException", f"without {member}"):
            kms.create_custom_key_store(**{k: v for k, v in base.items() if k != member})
    # None of those left a store behind.
    names = {s["CustomKeyStoreName"] for s in kms.describe_custom_key_stores()["CustomKeyStores"]}
    assert not {"trent-e2e-invalid", "trent-e2e-anchored", "trent-e2e-absent", "trent-e2e-undeclared"} & names


# --------------------------------------------------------------------------- DescribeCustomKeyStores

def test_describe_custom_key_stores(lab, store):
    kms = lab.kms
    extra = lab.create_store("trent-e2e-describe")
    try:
        everything = kms.describe_custom_key_stores()
        ids = [s["CustomKeyStoreId"] for s in everything["CustomKeyStores"]]
        assert store in ids and extra in ids and everything["Truncated"] is False
        by_name = kms.describe_custom_key_stores(CustomKeyStoreName="trent-e2e-describe")["CustomKeyStores"]
        assert [s["CustomKeyStoreId"] for s in by_name] == [extra]
        primary = kms.describe_custom_key_stores(CustomKeyStoreId=store)["CustomKeyStores"]
        assert primary[0]["ConnectionState"] == "CONNECTED" and primary[0]["CloudHsmClusterId"] == SECOND
        # Paging, one store at a time.
        seen, marker = [], None
        while True:
            page = kms.describe_custom_key_stores(Limit=1, **({"Marker": marker} if marker else {}))
            assert len(page["CustomKeyStores"]) <= 1
            seen += [s["CustomKeyStoreId"] for s in page["CustomKeyStores"]]
            if not page["Truncated"]:
                break
            marker = page["NextMarker"]
        assert seen == ids
        with expect_error("CustomKeyStoreNotFoundException"):
            kms.describe_custom_key_stores(CustomKeyStoreId="cks-0123456789abcdef0")
        with expect_error("CustomKeyStoreNotFoundException"):
            kms.describe_custom_key_stores(CustomKeyStoreName="trent-e2e-no-such-store")
        with expect_error("InvalidMarkerException"):
            kms.describe_custom_key_stores(Marker="not-a-marker-of-ours")
        with expect_error("ValidationException", "both id and name"):
            kms.describe_custom_key_stores(CustomKeyStoreId=extra, CustomKeyStoreName="trent-e2e-describe")
        with expect_error("ValidationException", "Limit 0"):
            kms.describe_custom_key_stores(Limit=0)
    finally:
        kms.delete_custom_key_store(CustomKeyStoreId=extra)


# --------------------------------------------------------------------------- Connect / Disconnect

def test_connect_custom_key_store(lab, store):
    kms = lab.kms
    # Connecting a connected store is a no-op, as in AWS.
    assert kms.connect_custom_key_store(CustomKeyStoreId=store)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert lab.state(store) == ("CONNECTED", None)
    with expect_error("CustomKeyStoreNotFoundException"):
        kms.connect_custom_key_store(CustomKeyStoreId="cks-0123456789abcdef0")
    with expect_error("ValidationException"):
        kms.connect_custom_key_store(CustomKeyStoreId="")


def test_wrong_password_fails_the_connection_until_it_is_updated(lab):
    kms = lab.kms
    store_id = lab.create_store("trent-e2e-wrong-pin", password="not-the-pin-of-trent-third")
    try:
        # As in AWS, the request succeeds and the store says why it could not connect.
        kms.connect_custom_key_store(CustomKeyStoreId=store_id)
        assert lab.state(store_id) == ("FAILED", "INVALID_CREDENTIALS")
        with expect_error("CustomKeyStoreInvalidStateException", "connect a FAILED store"):
            kms.connect_custom_key_store(CustomKeyStoreId=store_id)
        with expect_error("CustomKeyStoreInvalidStateException", "update the password of a FAILED store"):
            kms.update_custom_key_store(CustomKeyStoreId=store_id, KeyStorePassword=PIN_THIRD)
        with expect_error("CustomKeyStoreInvalidStateException", "create a key in a FAILED store"):
            kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store_id)
        kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
        assert lab.state(store_id) == ("DISCONNECTED", None)
        kms.update_custom_key_store(CustomKeyStoreId=store_id, KeyStorePassword=PIN_THIRD)
        kms.connect_custom_key_store(CustomKeyStoreId=store_id)
        assert lab.state(store_id) == ("CONNECTED", None)
        assert len(kms.generate_random(NumberOfBytes=16, CustomKeyStoreId=store_id)["Plaintext"]) == 16
        kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    finally:
        kms.delete_custom_key_store(CustomKeyStoreId=store_id)


def test_disconnect_makes_the_store_keys_unavailable_and_others_keep_working(lab, store):
    kms = lab.kms
    in_store = kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store)["KeyMetadata"]["KeyId"]
    ordinary = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=in_store, Plaintext=b"kept in the second token")["CiphertextBlob"]
    ordinary_blob = kms.encrypt(KeyId=ordinary, Plaintext=b"kept in the main token")["CiphertextBlob"]

    kms.disconnect_custom_key_store(CustomKeyStoreId=store)
    try:
        assert lab.state(store) == ("DISCONNECTED", None)
        metadata = kms.describe_key(KeyId=in_store)["KeyMetadata"]
        assert metadata["KeyState"] == "Unavailable" and metadata["CustomKeyStoreId"] == store
        for call in (
            lambda: kms.encrypt(KeyId=in_store, Plaintext=b"attempted with the store away"),
            lambda: kms.decrypt(CiphertextBlob=blob),
            lambda: kms.generate_data_key(KeyId=in_store, KeySpec="AES_256"),
            lambda: kms.generate_data_key_without_plaintext(KeyId=in_store, KeySpec="AES_256"),
            lambda: kms.re_encrypt(CiphertextBlob=ordinary_blob, DestinationKeyId=in_store),
            lambda: kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=ordinary),
        ):
            with expect_error("KMSInvalidStateException"):
                call()
        with expect_error("CustomKeyStoreInvalidStateException", "create a key in a disconnected store"):
            kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store)
        with expect_error("CustomKeyStoreInvalidStateException", "GenerateRandom in a disconnected store"):
            kms.generate_random(NumberOfBytes=8, CustomKeyStoreId=store)
        with expect_error("CustomKeyStoreInvalidStateException", "disconnect twice"):
            kms.disconnect_custom_key_store(CustomKeyStoreId=store)
        # Other keys keep working, and the store's keys can still be managed.
        assert kms.decrypt(CiphertextBlob=ordinary_blob)["Plaintext"] == b"kept in the main token"
        kms.update_key_description(KeyId=in_store, Description="managed offline")
        kms.disable_key(KeyId=in_store)
        kms.enable_key(KeyId=in_store)
    finally:
        kms.connect_custom_key_store(CustomKeyStoreId=store)
    assert lab.state(store) == ("CONNECTED", None)
    assert kms.describe_key(KeyId=in_store)["KeyMetadata"]["KeyState"] == "Enabled"
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept in the second token"
    with expect_error("CustomKeyStoreNotFoundException"):
        kms.disconnect_custom_key_store(CustomKeyStoreId="cks-0123456789abcdef0")


# --------------------------------------------------------------------------- UpdateCustomKeyStore

def test_update_custom_key_store(lab, store):
    kms = lab.kms
    # A connected store may change only its name.
    kms.update_custom_key_store(CustomKeyStoreId=store, NewCustomKeyStoreName="trent-e2e-primary-renamed")
    assert kms.describe_custom_key_stores(CustomKeyStoreId=store)["CustomKeyStores"][0]["CustomKeyStoreName"] == "trent-e2e-primary-renamed"
    kms.update_custom_key_store(CustomKeyStoreId=store, NewCustomKeyStoreName="trent-e2e-primary")
    with expect_error("CustomKeyStoreInvalidStateException", "password while connected"):
        kms.update_custom_key_store(CustomKeyStoreId=store, KeyStorePassword=PIN_SECOND)
    with expect_error("CustomKeyStoreInvalidStateException", "cluster while connected"):
        kms.update_custom_key_store(CustomKeyStoreId=store, CloudHsmClusterId=SECOND_ALIAS)

    other = lab.create_store("trent-e2e-update")
    try:
        with expect_error("CustomKeyStoreNameInUseException"):
            kms.update_custom_key_store(CustomKeyStoreId=other, NewCustomKeyStoreName="trent-e2e-primary")
        with expect_error("CloudHsmClusterNotFoundException"):
            kms.update_custom_key_store(CustomKeyStoreId=other, CloudHsmClusterId=UNDECLARED)
        with expect_error("CloudHsmClusterNotRelatedException"):
            kms.update_custom_key_store(CustomKeyStoreId=other, CloudHsmClusterId=ANCHORED)
        with expect_error("ValidationException", "short password"):
            kms.update_custom_key_store(CustomKeyStoreId=other, KeyStorePassword="short")
        kms.update_custom_key_store(CustomKeyStoreId=other, NewCustomKeyStoreName="trent-e2e-update-2", KeyStorePassword=PIN_THIRD)
        assert kms.describe_custom_key_stores(CustomKeyStoreId=other)["CustomKeyStores"][0]["CustomKeyStoreName"] == "trent-e2e-update-2"
    finally:
        kms.delete_custom_key_store(CustomKeyStoreId=other)
    with expect_error("CustomKeyStoreNotFoundException"):
        kms.update_custom_key_store(CustomKeyStoreId="cks-0123456789abcdef0", NewCustomKeyStoreName="x-trent")

    # A disconnected store may move to another declaration of the same token (a related cluster), and back.
    kms.disconnect_custom_key_store(CustomKeyStoreId=store)
    try:
        kms.update_custom_key_store(CustomKeyStoreId=store, CloudHsmClusterId=SECOND_ALIAS)
        assert kms.describe_custom_key_stores(CustomKeyStoreId=store)["CustomKeyStores"][0]["CloudHsmClusterId"] == SECOND_ALIAS
        kms.update_custom_key_store(CustomKeyStoreId=store, CloudHsmClusterId=SECOND, KeyStorePassword=PIN_SECOND)
    finally:
        kms.connect_custom_key_store(CustomKeyStoreId=store)
    assert lab.state(store) == ("CONNECTED", None)


# --------------------------------------------------------------------------- DeleteCustomKeyStore

def test_delete_custom_key_store(lab, store):
    kms = lab.kms
    kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store)
    with expect_error("CustomKeyStoreInvalidStateException", "delete a connected store"):
        kms.delete_custom_key_store(CustomKeyStoreId=store)
    kms.disconnect_custom_key_store(CustomKeyStoreId=store)
    try:
        with expect_error("CustomKeyStoreHasCMKsException"):
            kms.delete_custom_key_store(CustomKeyStoreId=store)
    finally:
        kms.connect_custom_key_store(CustomKeyStoreId=store)
    with expect_error("CustomKeyStoreNotFoundException"):
        kms.delete_custom_key_store(CustomKeyStoreId="cks-0123456789abcdef0")
    empty = lab.create_store("trent-e2e-delete")
    kms.connect_custom_key_store(CustomKeyStoreId=empty)
    with expect_error("CustomKeyStoreInvalidStateException", "delete a connected empty store"):
        kms.delete_custom_key_store(CustomKeyStoreId=empty)
    kms.disconnect_custom_key_store(CustomKeyStoreId=empty)
    kms.delete_custom_key_store(CustomKeyStoreId=empty)
    with expect_error("CustomKeyStoreNotFoundException"):
        kms.describe_custom_key_stores(CustomKeyStoreId=empty)
    # Its token is free again.
    kms.delete_custom_key_store(CustomKeyStoreId=lab.create_store("trent-e2e-delete-again"))


# --------------------------------------------------------------------------- CreateKey in a store

def test_keys_generated_in_the_store_token(lab, store):
    kms = lab.kms
    metadata = kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store, Description="in the second token")["KeyMetadata"]
    key_id = metadata["KeyId"]
    assert metadata["Origin"] == "AWS_CLOUDHSM"
    assert metadata["CustomKeyStoreId"] == store
    assert metadata["CloudHsmClusterId"] == SECOND
    assert metadata["KeySpec"] == "SYMMETRIC_DEFAULT" and metadata["KeyState"] == "Enabled"
    described = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert described["CustomKeyStoreId"] == store and described["CloudHsmClusterId"] == SECOND
    # The material is a persistent object in the second token, labelled with the key id.
    assert key_id in lab.object_labels()

    context = {"tenant": "cks"}
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"custom key store plaintext", EncryptionContext=context)["CiphertextBlob"]
    decrypted = kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)
    assert decrypted["Plaintext"] == b"custom key store plaintext" and decrypted["KeyId"].endswith(key_id)
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "other"})
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with expect_error("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=bytes(tampered), EncryptionContext=context)
    data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=context)
    assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=context)["Plaintext"] == data_key["Plaintext"]
    without = kms.generate_data_key_without_plaintext(KeyId=key_id, NumberOfBytes=24)
    assert len(kms.decrypt(CiphertextBlob=without["CiphertextBlob"])["Plaintext"]) == 24
    ordinary = kms.create_key()["KeyMetadata"]["KeyId"]
    moved = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext=context, DestinationKeyId=ordinary)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=moved)["Plaintext"] == b"custom key store plaintext"
    back = kms.re_encrypt(CiphertextBlob=moved, DestinationKeyId=key_id)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=back)["Plaintext"] == b"custom key store plaintext"
    # The token's material does not rotate.
    for call in (lambda: kms.enable_key_rotation(KeyId=key_id), lambda: kms.rotate_key_on_demand(KeyId=key_id)):
        with expect_error("UnsupportedOperationException"):
            call()
    assert len(kms.generate_random(NumberOfBytes=32, CustomKeyStoreId=store)["Plaintext"]) == 32


def test_create_key_in_store_errors(lab, store):
    kms = lab.kms
    with expect_error("CustomKeyStoreNotFoundException"):
        kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId="cks-0123456789abcdef0")
    with expect_error("CustomKeyStoreNotFoundException", "GenerateRandom"):
        kms.generate_random(NumberOfBytes=8, CustomKeyStoreId="cks-0123456789abcdef0")
    with expect_error("ValidationException", "AWS_CLOUDHSM without a store"):
        kms.create_key(Origin="AWS_CLOUDHSM")
    with expect_error("ValidationException", "a store with origin AWS_KMS"):
        kms.create_key(CustomKeyStoreId=store)
    with expect_error("ValidationException", "XksKeyId with AWS_CLOUDHSM"):
        kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store, XksKeyId="op-aes-key")
    with expect_error("UnsupportedOperationException", "HMAC key in a store"):
        kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    with expect_error("UnsupportedOperationException", "multi-Region key in a store"):
        kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store, MultiRegion=True)


# --------------------------------------------------------------------------- keys referencing operator objects

def test_keys_referencing_operator_objects(lab, store):
    kms = lab.kms
    by_label = kms.create_key(Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store, XksKeyId="op-aes-key")["KeyMetadata"]
    assert by_label["Origin"] == "EXTERNAL_KEY_STORE"
    assert by_label["CustomKeyStoreId"] == store
    assert by_label["XksKeyConfiguration"] == {"Id": "op-aes-key"}
    assert kms.describe_key(KeyId=by_label["KeyId"])["KeyMetadata"]["XksKeyConfiguration"] == {"Id": "op-aes-key"}
    by_id = kms.create_key(Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store, XksKeyId="a1b2c3d4")["KeyMetadata"]
    for key in (by_label, by_id):
        blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"under an operator's key", EncryptionContext={"k": "v"})["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"k": "v"})["Plaintext"] == b"under an operator's key"
    # The two keys are different objects: one's ciphertext does not open under the other.
    blob = kms.encrypt(KeyId=by_label["KeyId"], Plaintext=b"only for op-aes-key")["CiphertextBlob"]
    with expect_error("IncorrectKeyException"):
        kms.decrypt(CiphertextBlob=blob, KeyId=by_id["KeyId"])
    # Trent made no object of its own for them.
    labels = lab.object_labels()
    assert by_label["KeyId"] not in labels and by_id["KeyId"] not in labels

    with expect_error("XksKeyAlreadyInUseException"):
        kms.create_key(Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store, XksKeyId="op-aes-key")
    with expect_error("XksKeyNotFoundException"):
        kms.create_key(Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store, XksKeyId="op-no-such-key")
    for label in ("op-aes-128", "op-not-sensitive", "op-generic"):
        with expect_error("XksKeyInvalidConfigurationException", label):
            kms.create_key(Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store, XksKeyId=label)
    with expect_error("ValidationException", "EXTERNAL_KEY_STORE without XksKeyId"):
        kms.create_key(Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store)
    with expect_error("ValidationException", "XksKeyId pattern"):
        kms.create_key(Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store, XksKeyId="op aes key")
    with expect_error("ValidationException", "XksKeyId without EXTERNAL_KEY_STORE"):
        kms.create_key(XksKeyId="op-kept-key")
    # Rotation is refused for referenced material too.
    with expect_error("UnsupportedOperationException"):
        kms.enable_key_rotation(KeyId=by_label["KeyId"])


def test_audit_records_name_the_store_and_never_the_password(lab, store):
    lab.server.restart()  # flushes; also checks that the store comes back connected
    connected(lab, store)
    records = (lab.server.data_dir / "audit" / "records.jsonl").read_text()
    assert '"CreateCustomKeyStore"' in records and '"ConnectCustomKeyStore"' in records
    assert f'"customKeyStoreId":"{store}"' in records.replace(" ", "")
    for secret in (PIN_SECOND, PIN_THIRD):
        assert secret not in records
        assert secret not in lab.server.log_text()


def test_stores_left_connected_reconnect_after_a_restart(lab, store):
    kms = lab.kms
    key_id = kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store)["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"across a restart")["CiphertextBlob"]
    parked = lab.create_store("trent-e2e-parked")  # never connected: stays DISCONNECTED
    try:
        lab.server.restart()
        assert lab.state(store) == ("CONNECTED", None)
        assert lab.state(parked) == ("DISCONNECTED", None)
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"across a restart"
        # A store disconnected before the restart comes back disconnected.
        kms.disconnect_custom_key_store(CustomKeyStoreId=store)
        lab.server.restart()
        assert lab.state(store) == ("DISCONNECTED", None)
        with expect_error("KMSInvalidStateException"):
            kms.decrypt(CiphertextBlob=blob)
    finally:
        connected(lab, store)
        kms.delete_custom_key_store(CustomKeyStoreId=parked)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"across a restart"


def test_a_store_whose_token_is_no_longer_declared_fails_with_cluster_not_found(lab, store):
    kms = lab.kms
    config = Path(lab.server.env["TRENT_CONFIG"])
    declared = config.read_text()
    anchored = lab.create_store("trent-e2e-undeclared-later", cluster=ANCHORED)
    kms.connect_custom_key_store(CustomKeyStoreId=anchored)
    assert lab.state(anchored) == ("CONNECTED", None)
    try:
        # The operator removes the token from the configuration: the store cannot come back.
        config.write_text("\n".join(line for line in declared.splitlines() if ANCHORED not in line) + "\n")
        lab.server.restart()
        assert lab.state(anchored) == ("FAILED", "CLUSTER_NOT_FOUND")
        assert lab.state(store) == ("CONNECTED", None)
        kms.disconnect_custom_key_store(CustomKeyStoreId=anchored)
        kms.connect_custom_key_store(CustomKeyStoreId=anchored)
        assert lab.state(anchored) == ("FAILED", "CLUSTER_NOT_FOUND")
    finally:
        config.write_text(declared)
        lab.server.restart()
        connected(lab, store)
        if lab.state(anchored)[0] != "DISCONNECTED":
            kms.disconnect_custom_key_store(CustomKeyStoreId=anchored)
        kms.delete_custom_key_store(CustomKeyStoreId=anchored)
