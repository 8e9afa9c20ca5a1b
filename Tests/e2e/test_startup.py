"""Starting Trent: embedded defaults, a token prepared with `trent token init`, and the one-line errors
that stop startup when the module, the token or the PIN is wrong."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import boto3
import botocore.config
import pytest

from trent_e2e import DEFAULT_BIN, REGION, REPO, TOKEN, TrentServer, _port_open, free_port, make_kms

# Operator-managed tokens are made here with softhsm2-util; on the NSS run, NSS is covered through the embedded token.
softhsm_tools_only = pytest.mark.skipif(
    TOKEN != "softhsm2", reason=f"makes an operator-managed token with softhsm2-util; this run's token is {TOKEN}")

BINARY = Path(os.environ.get("TRENT_BIN") or DEFAULT_BIN)


def clean_env(**overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRENT_", "AWS_", "SOFTHSM2_"))}
    env.update(overrides)
    return env


def run_trent(*args, cwd, env, timeout=60):
    return subprocess.run([str(BINARY), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_failure(result, *fragments):
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("trent: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Fatal error" not in result.stderr and "Backtrace" not in result.stderr


def make_softhsm_token(folder: Path, label="ops-token", pin="87654321", conf_extra="") -> dict:
    """A token made the way an operator would, with softhsm2-util, in a folder of its own."""
    tokens = folder / "tokens"
    tokens.mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n{conf_extra}")
    env = clean_env(SOFTHSM2_CONF=str(conf))
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "12345678", "--pin", pin],
        env=env, check=True, capture_output=True)
    return env


def test_serve_with_no_configuration_uses_the_embedded_defaults(tmp_path):
    if _port_open("127.0.0.1", 4599) or _port_open("127.0.0.1", 4600):
        pytest.fail("port 4599 or 4600 (the admin listener) is busy; the default-configuration test needs them")
    log = open(tmp_path / "out.log", "wb")
    # No configuration but the choice of this run's token (SoftHSM when nothing is set).
    env = clean_env() if TOKEN == "softhsm2" else clean_env(TRENT_HSM_EMBEDDED_TOKEN=TOKEN)
    proc = subprocess.Popen([str(BINARY), "serve"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        banner = ""
        while time.monotonic() < deadline and "AWS_ENDPOINT_URL_KMS" not in banner:
            assert proc.poll() is None, (tmp_path / "out.log").read_text()
            time.sleep(0.1)
            banner = (tmp_path / "out.log").read_text()
        exports = dict(re.findall(r"export (\w+)=(\S+)", banner))
        assert exports["AWS_ENDPOINT_URL_KMS"] == "http://127.0.0.1:4599"
        assert exports["AWS_DEFAULT_REGION"] == REGION
        assert (tmp_path / ".trent" / "trent.sqlite").is_file()
        token_folder = {"softhsm2": "softhsm/tokens", "nss-softoken": "nss/key4.db"}[TOKEN]
        assert (tmp_path / ".trent" / token_folder).exists()
        # The generated secret is stored only sealed in the token: no file holds it in plaintext.
        secret = exports["AWS_SECRET_ACCESS_KEY"].encode()
        for path in (tmp_path / ".trent").rglob("*"):
            if path.is_file():
                assert secret not in path.read_bytes(), f"{path} holds the secret in plaintext"
        # The printed credentials work as printed.
        kms = boto3.client(
            "kms", region_name=REGION, endpoint_url=exports["AWS_ENDPOINT_URL_KMS"],
            aws_access_key_id=exports["AWS_ACCESS_KEY_ID"], aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
            config=botocore.config.Config(retries={"max_attempts": 1}))
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"embedded")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"embedded"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
    assert proc.returncode == 0, "SIGTERM must shut down gracefully"


def test_a_missing_module_stops_startup_with_one_line(tmp_path):
    result = run_trent("serve", cwd=tmp_path, env=clean_env(
        TRENT_DATA_DIR=str(tmp_path / "data"), TRENT_PORT=str(free_port()), TRENT_HSM_MODULE="/nonexistent/libpkcs11.so",
        TRENT_HSM_EMBEDDED_TOKEN=TOKEN))
    assert_one_line_failure(result, "/nonexistent/libpkcs11.so", "TRENT_HSM_MODULE")


def test_a_wrong_pin_stops_startup_with_one_line(tmp_path):
    server = TrentServer(tmp_path / "data")
    server.start()
    server.stop()
    env = dict(server.env, TRENT_HSM_PIN="not-the-pin")
    result = run_trent("serve", cwd=tmp_path, env=env)
    assert_one_line_failure(result, "PIN", "wrong")


@softhsm_tools_only
def test_a_missing_token_stops_startup_with_one_line(tmp_path):
    env = make_softhsm_token(tmp_path / "hsm", label="some-other-token")
    env.update(TRENT_DATA_DIR=str(tmp_path / "data"), TRENT_PORT=str(free_port()), TRENT_HSM_EMBEDDED_TOKEN="none", TRENT_ADMIN_PORT="0",
               TRENT_HSM_PIN="87654321", TRENT_HSM_TOKEN_LABEL="ops-token")
    result = run_trent("serve", cwd=tmp_path, env=env)
    assert_one_line_failure(result, "no initialised token labelled 'ops-token'")


@softhsm_tools_only
def test_a_configured_token_is_prepared_by_token_init(tmp_path):
    env = make_softhsm_token(tmp_path / "hsm")
    port = free_port()
    env.update(TRENT_DATA_DIR=str(tmp_path / "data"), TRENT_PORT=str(port), TRENT_HSM_EMBEDDED_TOKEN="none", TRENT_ADMIN_PORT="0",
               TRENT_HSM_TOKEN_LABEL="ops-token", TRENT_ACCESS_KEY_ID="AKIAOPSTOKENEXAMPLE",
               TRENT_SECRET_ACCESS_KEY="ops-secret-0123456789")
    pin_file = tmp_path / "pin"
    pin_file.write_text("87654321\n")
    env["TRENT_HSM_PIN_FILE"] = str(pin_file)

    before = run_trent("serve", cwd=tmp_path, env=env)
    assert_one_line_failure(before, "no domain key", "trent token init")

    init = run_trent("token", "init", cwd=tmp_path, env=env)
    assert init.returncode == 0, init.stderr
    assert "Created 'trent-domain-key' and 'trent-sealing-key' in token 'ops-token'" in init.stdout
    again = run_trent("token", "init", cwd=tmp_path, env=env)
    assert "already holds Trent's keys" in again.stdout

    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([str(BINARY), "serve"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _port_open("127.0.0.1", port):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        kms = boto3.client(
            "kms", region_name=REGION, endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id="AKIAOPSTOKENEXAMPLE", aws_secret_access_key="ops-secret-0123456789")
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        assert kms.decrypt(CiphertextBlob=kms.encrypt(KeyId=key_id, Plaintext=b"ops")["CiphertextBlob"])["Plaintext"] == b"ops"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
    # A configured secret is never printed.
    assert "ops-secret-0123456789" not in (tmp_path / "serve.log").read_text()


def test_token_probe_reports_every_feature(tmp_path):
    env = clean_env(TRENT_DATA_DIR=str(tmp_path / "data"), TRENT_HSM_EMBEDDED_TOKEN=TOKEN)
    result = run_trent("token", "probe", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Profile:      {TOKEN} " in result.stdout
    assert "  0x00001087 CKM_AES_GCM" in result.stdout
    assert "PASS  symmetric keys: AES-256 backing keys, AES-GCM, RFC 3394 wrap" in result.stdout
    assert "FAIL" not in result.stdout
    # The profile's keyPairFamilies, ecCurves and privateKeyUnwrap claims, checked live: EC private keys come back from
    # a wrap on both tokens, NSS softoken's only with CKA_NSS_DB in the unwrap template, and it has no secp256k1.
    assert "EC yes: P-256, P-384, P-521 unwrapped sensitive and non-extractable" in result.stdout
    if TOKEN == "nss-softoken":
        assert "(EC: + CKA_NSS_DB = ec-public-point)" in result.stdout
        assert "without CKA_NSS_DB: CKR_TEMPLATE_INCOMPLETE" in result.stdout
        assert "secp256k1 no (CKR_DOMAIN_PARAMETERS_INVALID" in result.stdout
    else:
        assert "CKA_NSS_DB" not in result.stdout and "secp256k1 yes" in result.stdout
    assert result.stdout.rstrip().endswith("Trent can serve symmetric keys on this token.")


@softhsm_tools_only
def test_a_token_without_a_needed_mechanism_is_refused(tmp_path):
    # SoftHSM can limit the mechanisms it offers: this token has AES key generation and wrapping but no AES-GCM.
    env = make_softhsm_token(tmp_path / "hsm", conf_extra="slots.mechanisms = CKM_AES_KEY_GEN,CKM_AES_KEY_WRAP,CKM_AES_KEY_WRAP_PAD\n")
    env.update(TRENT_DATA_DIR=str(tmp_path / "data"), TRENT_PORT=str(free_port()), TRENT_HSM_EMBEDDED_TOKEN="none", TRENT_ADMIN_PORT="0",
               TRENT_HSM_TOKEN_LABEL="ops-token", TRENT_HSM_PIN="87654321")
    assert_one_line_failure(run_trent("serve", cwd=tmp_path, env=env), "lacks CKM_AES_GCM", "trent token probe")
    probe = run_trent("token", "probe", cwd=tmp_path, env=env)
    assert probe.returncode == 1
    assert "FAIL  symmetric keys: AES-256 backing keys, AES-GCM, RFC 3394 wrap: missing CKM_AES_GCM" in probe.stdout
    assert "Trent cannot serve on this token as configured." in probe.stdout


# --------------------------------------------------------------------------- kill -9 while the embedded token is made

REAL_MODULES = {"softhsm2": "/usr/lib/softhsm/libsofthsm2.so", "nss-softoken": "/usr/lib/x86_64-linux-gnu/libsoftokn3.so"}
# The PKCS#11 calls that make an embedded token and Trent's two keys, in order (SoftHSM: C_InitToken then C_InitPIN
# from an SO session; NSS softoken: C_InitPIN on its new key database; then C_GenerateKey for each key).
TOKEN_CREATION_CALLS = {"softhsm2": ["C_InitToken", "C_InitPIN", "C_GenerateKey"], "nss-softoken": ["C_InitPIN", "C_GenerateKey"]}


@pytest.fixture(scope="session")
def faults_module(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pkcs11-faults")
    subprocess.run([str(REPO / "Tests" / "PKCS11Faults" / "build.sh"), str(out)], check=True, capture_output=True)
    return out / "libtrent-pkcs11-faults.so"


# Only the calls this run's token makes (NSS softoken's key database takes no C_InitToken).
@pytest.mark.parametrize("function", TOKEN_CREATION_CALLS[TOKEN])
def test_token_init_killed_before_a_token_call_is_finished_by_the_next_start(tmp_path, faults_module, function):
    """SIGKILL while `trent token init` waits on one PKCS#11 call (the fault module hangs it): the next `trent serve`
    on that folder finishes the token and works. Killed before C_InitPIN, SoftHSM's token existed without a user PIN
    and every later start stopped with CKR_USER_PIN_NOT_INITIALIZED (found by Tests/crash, issue #12)."""
    server = TrentServer(tmp_path / "data")
    kill_token_init_in(server, function, faults_module, tmp_path)
    start_and_use(server)


# What SoftHSM 2.6 left when `trent token init` was killed 3 to 4 ms into C_InitToken (Tests/crash): a token folder
# whose token.object holds only its generation, or its label, serial number and flags but no PIN yet.
TORN_SOFTHSM_TOKENS = {
    "generation only": bytes.fromhex("0000000000000001"),
    "label, no PINs": bytes.fromhex(
        "00000000000000050000000080005349000000000000000300000000000000207472656e7420202020202020202020202020202020"
        "2020202020202020202020000000008000534a0000000000000003000000000000001039663532393532323431346461316236"
        "000000008000534b00000000000000020000000000d00425"),
}


@pytest.mark.skipif(
    TOKEN != "softhsm2", reason=f"SoftHSM's own token files, torn inside its C_InitToken; this run's token is {TOKEN}, which has no C_InitToken")
@pytest.mark.parametrize("torn", sorted(TORN_SOFTHSM_TOKENS))
def test_token_init_killed_inside_c_inittoken_is_made_again(tmp_path, faults_module, torn):
    """SIGKILL inside SoftHSM's C_InitToken leaves a token folder that no later start could use (C_GetTokenInfo
    answered CKR_GENERAL_ERROR, or the SO login CKR_PIN_INCORRECT, on every start). The folder a cut-short creation
    made is removed before the module loads, and the token is made again."""
    server = TrentServer(tmp_path / "data")
    kill_token_init_in(server, "C_InitToken", faults_module, tmp_path)
    folder = server.data_dir / "softhsm" / "tokens" / "11d418ab-037a-2a86-82e7-24848eff4c86"
    folder.mkdir()
    (folder / "generation").write_bytes(bytes(7) + b"\x01")
    (folder / "token.lock").write_bytes(b"")
    (folder / "token.object").write_bytes(TORN_SOFTHSM_TOKENS[torn])
    start_and_use(server)
    assert not folder.exists()


def kill_token_init_in(server: TrentServer, function: str, faults_module: Path, tmp_path: Path) -> None:
    """Runs `trent token init` on the server's folder through the fault module, hanging in `function`, and kills it."""
    control = tmp_path / "faults.control"
    control.write_text(f"hang {function} count 1\n")
    env = dict(server.env, TRENT_HSM_MODULE=str(faults_module), TRENT_FAULTS_MODULE=REAL_MODULES[TOKEN],
               TRENT_FAULTS_CONTROL=str(control), TRENT_FAULTS_LOG="1")
    stderr = tmp_path / "init.stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen([str(server.binary), "token", "init"], cwd=server.data_dir, env=env,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while f"{function}: sleeping" not in stderr.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, f"no hang in {function}: {stderr.read_text()}"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def start_and_use(server: TrentServer) -> None:
    server.start()  # fails the test, with the server's log, if serve stops
    try:
        kms = make_kms(server)
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"after the kill")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"after the kill"
    finally:
        assert server.stop() == 0
