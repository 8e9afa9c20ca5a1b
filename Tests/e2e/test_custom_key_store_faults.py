"""A custom key store whose HSM stops answering (issue 12): the store shows FAILED with NETWORK_ERRORS, its keys
answer KMSInvalidStateException as AWS answers for an unavailable store, every other key keeps working, and the
store comes back CONNECTED by itself when its token answers again, with its earlier ciphertexts intact.

The store's token is a SoftHSM token reached through the fault-injecting module (Tests/PKCS11Faults), declared
in the server's `keyStores:` configuration; Trent's own token (this run's token) is loaded directly, so faults
reach the store's token only. The schedule fails every call of the store's token with CKR_DEVICE_REMOVED; it also
refuses C_Finalize and C_Initialize, because on the SoftHSM run the wrapper forwards to the same SoftHSM library
Trent's own token uses, and a module reset there would end Trent's own sessions too.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from trent_e2e import TrentServer, expect_error, make_kms, remember_plaintext

REPO = Path(__file__).resolve().parents[2]
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
CLUSTER = "cluster-trentfaultytok"
PIN = "cks-faulty-PIN-7d21e0"
remember_plaintext(PIN)

DEAD = "fail * CKR_DEVICE_REMOVED\nfail C_Finalize CKR_DEVICE_ERROR\nfail C_Initialize CKR_DEVICE_ERROR\n"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    data = tmp_path_factory.mktemp("trent-cks-faults")
    build = data / "faults"
    subprocess.run([str(REPO / "Tests/PKCS11Faults/build.sh"), str(build)], check=True, capture_output=True, timeout=120)
    wrapper = build / "libtrent-pkcs11-faults.so"
    softhsm = data / "softhsm"
    (softhsm / "tokens").mkdir(parents=True)
    conf = softhsm / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {softhsm / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRENT_")}
    env["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "trent-faulty", "--so-pin", "12345678", "--pin", PIN],
        env=env, check=True, capture_output=True, timeout=60)
    config = data / "trent-cks-faults.yaml"
    config.write_text(f"keyStores:\n  - {{cloudHsmClusterId: {CLUSTER}, tokenLabel: trent-faulty, module: {wrapper}, profile: softhsm2}}\n")
    control = data / "faults.ctl"
    server = TrentServer(data)
    server.env.update(
        TRENT_CONFIG=str(config), SOFTHSM2_CONF=str(conf), TRENT_FAULTS_MODULE=SOFTHSM_MODULE, TRENT_FAULTS_CONTROL=str(control),
        TRENT_HSM_CALL_TIMEOUT_SECONDS="3")
    server.start()
    kms = make_kms(server)
    store_id = kms.create_custom_key_store(
        CustomKeyStoreName="faulty", CloudHsmClusterId=CLUSTER, TrustAnchorCertificate="anchor", KeyStorePassword=PIN)["CustomKeyStoreId"]
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)

    def set_faults(text: str) -> None:
        staged = data / "faults.tmp"
        staged.write_text(text)
        os.rename(staged, control)
        time.sleep(0.2)

    yield server, kms, store_id, set_faults
    set_faults("")
    server.stop()


def state(kms, store_id):
    entry = kms.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"][0]
    return entry["ConnectionState"], entry.get("ConnectionErrorCode")


def test_a_failed_store_token_makes_only_its_keys_unavailable_and_recovers(lab):
    server, kms, store_id, set_faults = lab
    assert state(kms, store_id) == ("CONNECTED", None)
    store_key = kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store_id)["KeyMetadata"]["KeyId"]
    own_key = kms.create_key()["KeyMetadata"]["KeyId"]
    before = kms.encrypt(KeyId=store_key, Plaintext=b"kept in the store", EncryptionContext={"k": "v"})["CiphertextBlob"]

    set_faults(DEAD)
    # The request that meets the dead token is answered retryably; once the token cannot be logged in again, the
    # store's keys are unavailable, as in AWS, and the store says why.
    with pytest.raises(ClientError) as first:
        kms.encrypt(KeyId=store_key, Plaintext=b"x")
    assert first.value.response["Error"]["Code"] in ("KMSInternalException", "KMSInvalidStateException")
    assert state(kms, store_id) == ("FAILED", "NETWORK_ERRORS")
    with expect_error("KMSInvalidStateException"):
        kms.encrypt(KeyId=store_key, Plaintext=b"x")
    with expect_error("KMSInvalidStateException"):
        kms.decrypt(CiphertextBlob=before, EncryptionContext={"k": "v"})
    assert kms.describe_key(KeyId=store_key)["KeyMetadata"]["KeyState"] == "Unavailable"
    # Every other key keeps working.
    blob = kms.encrypt(KeyId=own_key, Plaintext=b"unaffected")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"unaffected"
    assert len(kms.generate_data_key(KeyId=own_key, KeySpec="AES_256")["Plaintext"]) == 32

    set_faults("")
    deadline = time.monotonic() + 10
    while state(kms, store_id) != ("CONNECTED", None):
        assert time.monotonic() < deadline, f"the store did not come back: {state(kms, store_id)}"
        time.sleep(0.25)
    assert kms.decrypt(CiphertextBlob=before, EncryptionContext={"k": "v"})["Plaintext"] == b"kept in the store"
    again = kms.encrypt(KeyId=store_key, Plaintext=b"after")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=again)["Plaintext"] == b"after"
    assert kms.describe_key(KeyId=store_key)["KeyMetadata"]["KeyState"] == "Enabled"
    log = server.log_text()
    assert "custom key store" in log and "hsm.state=unavailable" in log and "hsm.state=ready" in log
