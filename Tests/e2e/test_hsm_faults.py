"""Token faults, end to end (issue #12; design.md §7 and §9).

Trent loads the fault-injecting PKCS#11 wrapper (Tests/PKCS11Faults) in front of the run's real token
(TRENT_E2E_TOKEN) and the tests change the wrapper's schedule while the server runs: device errors on one call,
invalid sessions, a partition reboot, a removed token, a module reset, calls that hang. What Trent promises
while it lasts: never a wrong answer; a retryable error (500 KMSInternalException, or 500
DependencyTimeoutException for a deadline or a full queue); recovery without a restart.

Servers (private, each on its own data folder):
- `faults`: sporadic and single faults, the forwarded CreateKey, the random-fault runs (module scope);
- `recovery`: reboot, removal, module reset, boto3 retries through them (module scope; it starts in state
  ready and every test there ends in ready, so the state transitions each test logs are its own);
- a 1 s deadline server (hang) and a 2-thread, queue-2 server (shedding), per test.

Every wait is bounded; random faults use fixed seeds. The wrapper logs each injected fault (TRENT_FAULTS_LOG=1)
into the server log, which failure messages quote.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from trent_e2e import REPO, TOKEN, TrentServer, crash_summary, make_kms

# The wrapper re-reads its control file at most every 50 ms, at the next call: wait this long after a change.
SETTLE = 0.15
NO_RETRIES = {"mode": "standard", "total_max_attempts": 1}
STANDARD_RETRIES = {"mode": "standard", "max_attempts": 5}
INTERNAL = (500, "KMSInternalException")
TIMEOUT = (500, "DependencyTimeoutException")  # a fault in the KMS model: HTTP 500, like KMSInternalException
RETRYABLE = {INTERNAL, TIMEOUT}
HEALTHY_TIMEOUT = 12.0  # longest wait for a server to answer again once its faults are cleared
STATE_CHANGED = "HSM token state changed"


def real_module() -> str:
    """The module the wrapper forwards to: the run's token's defaultModule (Config/hsm/<token>.json)."""
    profile = json.loads((REPO / "Config" / "hsm" / f"{TOKEN}.json").read_text())
    return profile["defaultModule"]


# --------------------------------------------------------------------------- outcomes

@dataclass
class Outcome:
    """One request: its HTTP status (0 when no answer came), AWS error code, time taken and parsed answer."""

    op: str
    status: int
    code: str | None
    elapsed: float
    result: dict | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def kind(self) -> tuple[int, str | None]:
        return (self.status, self.code)

    def __str__(self) -> str:
        if self.ok:
            return f"{self.op}: 200 in {self.elapsed:.2f}s"
        return f"{self.op}: {self.status} {self.code} in {self.elapsed:.2f}s ({self.message[:160]})"


def attempt(op: str, fn, **kwargs) -> Outcome:
    started = time.monotonic()
    try:
        result = fn(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return Outcome(op, exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", -1), error.get("Code"),
                       time.monotonic() - started, None, error.get("Message", ""))
    except BotoCoreError as exc:
        return Outcome(op, 0, type(exc).__name__, time.monotonic() - started, None, str(exc))
    return Outcome(op, 200, None, time.monotonic() - started, result)


def transitions(text: str) -> list[tuple[str, str]]:
    """(new state, line) for every "HSM token state changed" line of a log excerpt."""
    found = []
    for line in text.splitlines():
        if STATE_CHANGED in line:
            match = re.search(r"hsm\.state[=:]\s*\"?([A-Za-z_-]+)", line)
            state = match.group(1) if match else next(
                (word for word in ("unavailable", "degraded", "ready") if word in line), "?")
            found.append((state, line.strip()))
    return found


def fault_lines(text: str, limit: int = 12) -> str:
    """The wrapper's and Trent's HSM lines of a log excerpt, for failure messages."""
    keep = [line.strip() for line in text.splitlines()
            if "trent-pkcs11-faults" in line or "HSM" in line or "PKCS#11" in line or "error" in line.lower()]
    return "\n".join(keep[-limit:])


# --------------------------------------------------------------------------- a server behind the wrapper

class FaultLab:
    """A private Trent server whose token is reached through the fault-injecting wrapper."""

    def __init__(self, server: TrentServer, wrapper: Path, **settings):
        self.server = server
        self.control = server.data_dir / "faults.control"
        server.env.update(
            TRENT_HSM_MODULE=str(wrapper),
            TRENT_FAULTS_MODULE=real_module(),
            TRENT_FAULTS_CONTROL=str(self.control),
            TRENT_FAULTS_LOG="1",
            # No audit digest (a C_Encrypt with the sealing key) may take a `count 1` fault meant for a request.
            TRENT_AUDIT_RECORDS_PER_DIGEST="1000000",
            TRENT_AUDIT_DIGEST_SECONDS="3600",
        )
        server.env.update({name: str(value) for name, value in settings.items()})
        self._generation = 0
        self.kms = None

    def start(self) -> "FaultLab":
        self.server.start()
        self.kms = make_kms(self.server, retries=NO_RETRIES, read_timeout=20, max_pool_connections=32)
        return self

    def retrying(self):
        """A fresh boto3 client with standard retries (its own retry quota)."""
        return make_kms(self.server, retries=STANDARD_RETRIES, read_timeout=20)

    # ---- the schedule

    def faults(self, text: str) -> float:
        """Replaces the wrapper's schedule (write, then rename over the control file); returns when it was written."""
        tmp = self.control.with_name(self.control.name + ".tmp")
        tmp.write_text(text + ("\n" if text and not text.endswith("\n") else ""))
        os.rename(tmp, self.control)
        written = time.monotonic()
        time.sleep(SETTLE)
        return written

    def clear(self) -> float:
        return self.faults("")

    def reboot_rule(self) -> str:
        """`reboot N` with an N this server has not seen: a reboot fires once per generation."""
        self._generation += 1
        return f"reboot {self._generation}"

    # ---- the process and its log

    def log_offset(self) -> int:
        return len(self.server.log_bytes())

    def log_since(self, offset: int) -> str:
        return self.server.log_bytes()[offset:].decode(errors="replace")

    def assert_alive(self, after: str = "") -> None:
        failure = crash_summary(self.server, wait=0)
        if failure:
            pytest.fail(f"the server exited{' after ' + after if after else ''}: {failure}", pytrace=False)

    def current_state(self) -> str | None:
        found = transitions(self.server.log_text())
        return found[-1][0] if found else None

    def settle_state(self, timeout: float = 8.0) -> None:
        """Waits (bounded) until the last logged state is ready, so a test's transitions are its own."""
        deadline = time.monotonic() + timeout
        while self.current_state() not in (None, "ready") and time.monotonic() < deadline:
            time.sleep(0.25)

    def wait_healthy(self, key_id: str, timeout: float = HEALTHY_TIMEOUT) -> float:
        """Encrypts until one succeeds (bounded); returns how long it took."""
        started = time.monotonic()
        last = None
        while time.monotonic() - started < timeout:
            last = attempt("Encrypt", self.kms.encrypt, KeyId=key_id, Plaintext=b"health check probe")
            if last.ok:
                return time.monotonic() - started
            self.assert_alive("a health check")
            time.sleep(0.2)
        pytest.fail(f"the server did not recover within {timeout:.0f}s with no faults; last: {last}\n"
                    f"{fault_lines(self.server.log_text())}", pytrace=False)


class Keys:
    """One key of each kind on a lab, each used once so its working copy is in the token."""

    def __init__(self, lab: FaultLab):
        kms = lab.kms
        self.kms = kms
        self.sym = kms.create_key(Description="faults: symmetric")["KeyMetadata"]["KeyId"]
        self.hmac = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC",
                                   Description="faults: hmac")["KeyMetadata"]["KeyId"]
        self.ecc = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY",
                                  Description="faults: ecc")["KeyMetadata"]["KeyId"]
        self.rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY",
                                  Description="faults: rsa")["KeyMetadata"]["KeyId"]
        self.public = {
            key: serialization.load_der_public_key(kms.get_public_key(KeyId=key)["PublicKey"])
            for key in (self.ecc, self.rsa)
        }
        # Use every key once.
        blob = kms.encrypt(KeyId=self.sym, Plaintext=b"warm the working key")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"warm the working key"
        mac = kms.generate_mac(KeyId=self.hmac, Message=b"warm", MacAlgorithm="HMAC_SHA_256")["Mac"]
        assert kms.verify_mac(KeyId=self.hmac, Message=b"warm", Mac=mac, MacAlgorithm="HMAC_SHA_256")["MacValid"]
        for key, algorithm in ((self.ecc, "ECDSA_SHA_256"), (self.rsa, "RSASSA_PSS_SHA_256")):
            signature = kms.sign(KeyId=key, Message=b"warm", SigningAlgorithm=algorithm)["Signature"]
            assert self.signature_valid(key, algorithm, b"warm", signature)

    def signature_valid(self, key: str, algorithm: str, message: bytes, signature: bytes) -> bool:
        public = self.public[key]
        try:
            if algorithm == "ECDSA_SHA_256":
                public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            elif algorithm == "RSASSA_PSS_SHA_256":
                public.verify(signature, message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
            elif algorithm == "RSASSA_PKCS1_V1_5_SHA_256":
                public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            else:
                raise AssertionError(algorithm)
        except InvalidSignature:
            return False
        return True


SIGN_ALGORITHM = {"ecc": "ECDSA_SHA_256", "rsa": "RSASSA_PSS_SHA_256"}


def plaintext(rng: random.Random | None = None, size: int = 24) -> bytes:
    """Distinctive plaintexts (the hygiene test greps every server log for them)."""
    return (rng.randbytes(size) if rng else os.urandom(size))


class Ops:
    """One request of each class the tests fault, each checked at once where it can be: the answer of a 200 must
    be right. `run(name)` returns the Outcome and, for 200s, a `wrong` string when the answer is not right."""

    def __init__(self, lab: FaultLab, keys: Keys, kms=None):
        self.lab = lab
        self.keys = keys
        self.kms = kms or lab.kms
        self.prepared: dict[str, tuple[bytes, bytes]] = {}

    def prepare_decrypt(self) -> None:
        data = plaintext()
        blob = self.lab.kms.encrypt(KeyId=self.keys.sym, Plaintext=data, EncryptionContext={"case": "decrypt"})["CiphertextBlob"]
        self.prepared["Decrypt"] = (blob, data)

    def run(self, name: str, check: bool = True) -> tuple[Outcome, str | None]:
        kms, keys = self.kms, self.keys
        if name == "Encrypt":
            data = plaintext()
            outcome = attempt(name, kms.encrypt, KeyId=keys.sym, Plaintext=data, EncryptionContext={"case": "encrypt"})
            if outcome.ok and check:
                back = attempt("Decrypt", self.lab.kms.decrypt, CiphertextBlob=outcome.result["CiphertextBlob"],
                               EncryptionContext={"case": "encrypt"})
                if not back.ok or back.result["Plaintext"] != data:
                    return outcome, f"its ciphertext does not decrypt to the plaintext ({back})"
            return outcome, None
        if name == "Decrypt":
            if "Decrypt" not in self.prepared:
                self.prepare_decrypt()
            blob, data = self.prepared["Decrypt"]
            outcome = attempt(name, kms.decrypt, CiphertextBlob=blob, EncryptionContext={"case": "decrypt"})
            if outcome.ok and (outcome.result["Plaintext"] != data or outcome.result["KeyId"].split("/")[-1] != keys.sym):
                return outcome, "wrong plaintext or key id"
            return outcome, None
        if name == "GenerateDataKey":
            outcome = attempt(name, kms.generate_data_key, KeyId=keys.sym, KeySpec="AES_256")
            if outcome.ok:
                if len(outcome.result["Plaintext"]) != 32:
                    return outcome, f"a data key of {len(outcome.result['Plaintext'])} bytes"
                if check:
                    back = attempt("Decrypt", self.lab.kms.decrypt, CiphertextBlob=outcome.result["CiphertextBlob"])
                    if not back.ok or back.result["Plaintext"] != outcome.result["Plaintext"]:
                        return outcome, f"its blob does not decrypt to the data key ({back})"
            return outcome, None
        if name in ("Sign-ecc", "Sign-rsa"):
            key = keys.ecc if name == "Sign-ecc" else keys.rsa
            algorithm = SIGN_ALGORITHM[name.split("-")[1]]
            message = plaintext()
            outcome = attempt(name, kms.sign, KeyId=key, Message=message, SigningAlgorithm=algorithm)
            if outcome.ok and not keys.signature_valid(key, algorithm, message, outcome.result["Signature"]):
                return outcome, "the signature does not verify against GetPublicKey"
            return outcome, None
        if name == "GenerateMac":
            message = plaintext()
            outcome = attempt(name, kms.generate_mac, KeyId=keys.hmac, Message=message, MacAlgorithm="HMAC_SHA_256")
            if outcome.ok and check:
                back = attempt("VerifyMac", self.lab.kms.verify_mac, KeyId=keys.hmac, Message=message,
                               Mac=outcome.result["Mac"], MacAlgorithm="HMAC_SHA_256")
                if not back.ok or back.result.get("MacValid") is not True:
                    return outcome, f"VerifyMac does not accept its MAC ({back})"
            return outcome, None
        if name == "GenerateRandom":
            outcome = attempt(name, kms.generate_random, NumberOfBytes=32)
            if outcome.ok and len(outcome.result["Plaintext"]) != 32:
                return outcome, "wrong length"
            return outcome, None
        if name == "CreateKey":
            outcome = attempt(name, kms.create_key, Description="faults: created under a fault")
            if outcome.ok and check:
                key = outcome.result["KeyMetadata"]["KeyId"]
                data = plaintext()
                sealed = attempt("Encrypt", self.lab.kms.encrypt, KeyId=key, Plaintext=data)
                back = sealed.ok and attempt("Decrypt", self.lab.kms.decrypt, CiphertextBlob=sealed.result["CiphertextBlob"])
                if not sealed.ok or not back.ok or back.result["Plaintext"] != data:
                    return outcome, f"the new key does not work ({sealed}; {back})"
            return outcome, None
        raise AssertionError(name)

    def until_ok(self, name: str, max_failures: int, failures: list[Outcome], budget: float = 10.0) -> Outcome:
        """Repeats `name` until it succeeds; every failure must be retryable and is appended to `failures`."""
        started = time.monotonic()
        while True:
            outcome, wrong = self.run(name)
            assert wrong is None, f"{outcome}: {wrong}"
            if outcome.ok:
                return outcome
            failures.append(outcome)
            assert outcome.kind in RETRYABLE, f"{outcome}: not a retryable error"
            if len(failures) > max_failures or time.monotonic() - started > budget:
                pytest.fail(f"{name} did not recover: {len(failures)} failures: " + "; ".join(map(str, failures))
                            + "\n" + fault_lines(self.lab.server.log_text()), pytrace=False)
            time.sleep(0.1)


def list_key_ids(kms) -> set[str]:
    ids, marker = set(), None
    for _ in range(100):
        page = kms.list_keys(Limit=1000, **({"Marker": marker} if marker else {}))
        ids.update(entry["KeyId"] for entry in page["Keys"])
        if not page.get("Truncated"):
            return ids
        marker = page["NextMarker"]
    raise AssertionError("ListKeys never ended")


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def wrapper(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pkcs11-faults")
    proc = subprocess.run([str(REPO / "Tests" / "PKCS11Faults" / "build.sh"), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"Tests/PKCS11Faults/build.sh failed:\n{proc.stdout}\n{proc.stderr}"
    library = out / "libtrent-pkcs11-faults.so"
    assert library.is_file(), proc.stdout
    return library


def _module_lab(tmp_path_factory, wrapper, name: str, **settings):
    lab = FaultLab(TrentServer(tmp_path_factory.mktemp(name)), wrapper, **settings).start()
    keys = Keys(lab)
    return lab, keys


@pytest.fixture(scope="module")
def faults_lab(tmp_path_factory, wrapper):
    lab, keys = _module_lab(tmp_path_factory, wrapper, "trent-faults")
    yield lab, keys
    lab.server.stop()


@pytest.fixture(scope="module")
def recovery_lab(tmp_path_factory, wrapper):
    lab, keys = _module_lab(tmp_path_factory, wrapper, "trent-recovery")
    yield lab, keys
    lab.server.stop()


@pytest.fixture
def flab(faults_lab):
    """The faults server with no faults and answering; faults cleared and the process checked afterwards."""
    lab, keys = faults_lab
    lab.clear()
    lab.wait_healthy(keys.sym)
    yield lab, keys
    lab.clear()
    lab.assert_alive()


@pytest.fixture
def rlab(recovery_lab):
    lab, keys = recovery_lab
    lab.clear()
    lab.wait_healthy(keys.sym)
    lab.settle_state()
    yield lab, keys
    lab.clear()
    lab.assert_alive()


# --------------------------------------------------------------------------- 1. sporadic device errors

def test_sporadic_device_errors_fail_a_third_and_retries_hide_them(flab):
    lab, keys = flab
    lab.faults("fail C_Encrypt CKR_DEVICE_ERROR every 3")
    acknowledged: list[tuple[bytes, bytes]] = []
    failures: list[Outcome] = []
    for _ in range(30):
        data = plaintext()
        outcome = attempt("Encrypt", lab.kms.encrypt, KeyId=keys.sym, Plaintext=data)
        if outcome.ok:
            acknowledged.append((outcome.result["CiphertextBlob"], data))
        else:
            failures.append(outcome)
    wrong = [str(o) for o in failures if o.kind != INTERNAL]
    assert not wrong, f"failures that are not 500 KMSInternalException: {wrong}"
    assert 7 <= len(failures) <= 13, f"{len(failures)} of 30 Encrypts failed under `every 3` (expected about 10)"

    retrying = lab.retrying()
    retried_failures = []
    for _ in range(30):
        data = plaintext()
        outcome = attempt("Encrypt", retrying.encrypt, KeyId=keys.sym, Plaintext=data)
        if outcome.ok:
            acknowledged.append((outcome.result["CiphertextBlob"], data))
        else:
            retried_failures.append(str(outcome))
    assert not retried_failures, f"with standard retries, Encrypts still failed: {retried_failures}"

    lab.clear()
    lab.wait_healthy(keys.sym)
    for blob, data in acknowledged:
        assert lab.kms.decrypt(CiphertextBlob=blob)["Plaintext"] == data, "an acknowledged ciphertext does not decrypt"


# --------------------------------------------------------------------------- 2. one fault per code and call

CODES = [
    "CKR_DEVICE_ERROR", "CKR_DEVICE_REMOVED", "CKR_TOKEN_NOT_PRESENT", "CKR_SESSION_HANDLE_INVALID",
    "CKR_SESSION_CLOSED", "CKR_GENERAL_ERROR", "CKR_DEVICE_MEMORY", "CKR_FUNCTION_FAILED",
]
SOME_CODES = ["CKR_DEVICE_ERROR", "CKR_SESSION_HANDLE_INVALID", "CKR_DEVICE_REMOVED", "CKR_GENERAL_ERROR"]
EVERY_CODE_CALLS = [("Encrypt", "C_Encrypt"), ("Decrypt", "C_Decrypt"), ("Sign-ecc", "C_Sign"),
                    ("GenerateMac", "C_Sign"), ("CreateKey", "C_GenerateKey")]
SOME_CODE_CALLS = [("GenerateDataKey", "C_GenerateRandom"), ("GenerateDataKey", "C_Encrypt"), ("Sign-rsa", "C_Sign"),
                   ("GenerateRandom", "C_GenerateRandom"), ("CreateKey", "C_WrapKey")]
SINGLE_FAULT_CASES = [(op, call, code) for op, call in EVERY_CODE_CALLS for code in CODES] + [
    (op, call, code) for op, call in SOME_CODE_CALLS for code in SOME_CODES]


@pytest.mark.parametrize("op, call, code", SINGLE_FAULT_CASES,
                         ids=[f"{op}-{call}-{code[4:]}" for op, call, code in SINGLE_FAULT_CASES])
def test_one_fault_fails_one_request(faults_lab, op, call, code):
    lab, keys = faults_lab
    ops = Ops(lab, keys)
    if op == "Decrypt":
        ops.prepare_decrypt()
    offset = lab.log_offset()
    lab.faults(f"fail {call} {code} count 1")
    hit, wrong = ops.run(op)
    log = lab.log_since(offset)
    assert wrong is None, f"{hit}: a 200 with a wrong answer: {wrong}"
    if op == "Decrypt":
        # Trent retries a failed C_Decrypt once on a fresh session: 200 with the right plaintext is fine.
        assert hit.ok or hit.kind == INTERNAL, f"expected 200 or 500 KMSInternalException, got {hit}\n{fault_lines(log)}"
    else:
        assert hit.kind == INTERNAL, f"expected 500 KMSInternalException, got {hit}\n{fault_lines(log)}"
    assert f"{call} -> {code}" in log, f"the wrapper logged no {code} from {call}: the fault was not injected\n{fault_lines(log)}"
    lab.assert_alive(f"{code} from {call}")
    after, wrong = ops.run(op)
    assert after.ok and wrong is None, f"the request after the fault: {after} {wrong or ''}\n{fault_lines(lab.log_since(offset))}"


# --------------------------------------------------------------------------- 3. a key made, the answer lost

def test_create_key_whose_answer_is_lost_leaves_no_half_made_key(flab):
    lab, keys = flab
    before = list_key_ids(lab.kms)
    lab.faults("fail C_GenerateKey CKR_DEVICE_ERROR count 1 forwarded")
    outcome = attempt("CreateKey", lab.kms.create_key, Description="faults: answer lost")
    assert outcome.kind == INTERNAL, f"expected 500 KMSInternalException, got {outcome}"
    lab.clear()
    new = list_key_ids(lab.kms) - before
    for key in new:  # listed, so it must be a whole key
        state = lab.kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"]
        sealed = attempt("Encrypt", lab.kms.encrypt, KeyId=key, Plaintext=b"is this key whole?")
        assert state == "Enabled" and sealed.ok, f"ListKeys shows {key} ({state}) after the failed CreateKey; Encrypt: {sealed}"
    after, wrong = Ops(lab, keys).run("CreateKey")
    assert after.ok and wrong is None, f"the next CreateKey: {after} {wrong or ''}"


# --------------------------------------------------------------------------- 4. partition reboot

RECOVERY_OPS = ["Encrypt", "Decrypt", "GenerateDataKey", "Sign-ecc", "Sign-rsa", "GenerateMac"]


def test_partition_reboot_every_key_works_again(rlab):
    lab, keys = rlab
    ops = Ops(lab, keys)
    ops.prepare_decrypt()  # data encrypted before the reboot
    offset = lab.log_offset()
    lab.faults(lab.reboot_rule())
    failures: list[Outcome] = []
    for op in RECOVERY_OPS:
        ops.until_ok(op, max_failures=3, failures=failures)
    assert len(failures) <= 3, f"{len(failures)} requests failed after the reboot: {[str(o) for o in failures]}"
    lab.assert_alive("a reboot")
    log = lab.log_since(offset)
    changes = transitions(log)
    assert changes, f"no '{STATE_CHANGED}' line after the reboot:\n{fault_lines(log)}"
    assert changes[-1][0] == "ready", "the last state change after the reboot is not to ready:\n" + "\n".join(l for _, l in changes)


# --------------------------------------------------------------------------- 5. token removal

def test_removed_token_fails_fast_and_comes_back(rlab):
    lab, keys = rlab
    offset = lab.log_offset()
    lab.faults("remove 3s")
    window_start = time.monotonic()  # the window starts at the first call after the load: the first request below
    during: list[Outcome] = []
    while time.monotonic() - window_start < 2.5:
        during.append(attempt("Encrypt", lab.kms.encrypt, KeyId=keys.sym, Plaintext=b"during the removal"))
        time.sleep(0.1)
    window_end = window_start + 3.0
    wrong = [str(o) for o in during if o.kind != INTERNAL]
    slow = [str(o) for o in during if o.elapsed >= 2.0]
    assert not wrong, f"during the removal, answers other than 500 KMSInternalException: {wrong}"
    assert not slow, f"during the removal, answers that took 2 s or more: {slow}"
    lab.assert_alive("the removal")

    while time.monotonic() < window_end:
        time.sleep(0.05)
    recovered = None
    while time.monotonic() < window_end + 5.0:
        outcome = attempt("Encrypt", lab.kms.encrypt, KeyId=keys.sym, Plaintext=b"after the removal")
        if outcome.ok:
            recovered = time.monotonic() - window_end
            break
        assert outcome.kind in RETRYABLE, f"after the removal: {outcome}"
        time.sleep(0.1)
    log = lab.log_since(offset)
    assert recovered is not None, f"Encrypt still fails 5 s after the removal ended\n{fault_lines(log)}"
    for op in RECOVERY_OPS:
        Ops(lab, keys).until_ok(op, max_failures=0, failures=[])

    changes = transitions(lab.log_since(offset))
    states = [state for state, _ in changes]
    shown = "\n".join(line for _, line in changes) or "(none)"
    assert "unavailable" in states, f"the state never went to unavailable during {len(during)} failed requests:\n{shown}"
    after = states[states.index("unavailable"):]
    assert after.count("unavailable") == 1 and after.count("ready") == 1 and after[-1] == "ready", \
        f"expected one change to unavailable and one back to ready:\n{shown}"
    assert len(changes) <= 3, f"{len(changes)} state changes for one removal ({len(during)} failed requests):\n{shown}"
    print(f"removal: {len(during)} requests failed fast (max {max(o.elapsed for o in during):.3f}s); "
          f"first success {recovered:.2f}s after the window")


# --------------------------------------------------------------------------- 6. module reset

def test_module_reset_when_logging_in_again_fails(rlab):
    lab, keys = rlab
    ops = Ops(lab, keys)
    ops.prepare_decrypt()
    offset = lab.log_offset()
    lab.faults(f"{lab.reboot_rule()}\nfail C_Login CKR_DEVICE_ERROR count 1")
    failures: list[Outcome] = []
    for op in RECOVERY_OPS:
        ops.until_ok(op, max_failures=3, failures=failures)
    lab.assert_alive("a module reset")
    log = lab.log_since(offset)
    assert "re-initialized" in log, f"no 're-initialized' line in the log after the first re-login failed:\n{fault_lines(log)}"
    assert "C_Login" in log, f"the C_Login fault was not injected:\n{fault_lines(log)}"


# --------------------------------------------------------------------------- 7. a hung call and the deadline

def test_hung_call_is_answered_at_the_deadline(make_server, wrapper):
    lab = FaultLab(make_server(start=False), wrapper, TRENT_HSM_CALL_TIMEOUT_SECONDS=1).start()
    key = lab.kms.create_key()["KeyMetadata"]["KeyId"]
    lab.kms.encrypt(KeyId=key, Plaintext=b"warm the working key")
    lab.faults("hang C_Encrypt 6s")
    hung_from = time.monotonic()
    for _ in range(2):
        outcome = attempt("Encrypt", lab.kms.encrypt, KeyId=key, Plaintext=b"hung encrypt")
        assert outcome.kind == TIMEOUT, f"expected 500 DependencyTimeoutException, got {outcome}"
        assert outcome.elapsed < 2.5, f"the deadline is 1 s, the answer took {outcome.elapsed:.2f}s"
    lab.clear()
    recovered = None
    while time.monotonic() - hung_from < 12:
        outcome = attempt("Encrypt", lab.kms.encrypt, KeyId=key, Plaintext=b"after the hang")
        if outcome.ok:
            recovered = time.monotonic()
            break
        assert outcome.kind in RETRYABLE, outcome
        time.sleep(0.2)
    assert recovered is not None, f"Encrypt never worked again after the hang\n{fault_lines(lab.server.log_text())}"
    back = lab.kms.decrypt(CiphertextBlob=outcome.result["CiphertextBlob"])
    assert back["Plaintext"] == b"after the hang"
    lab.assert_alive("a hang")


# --------------------------------------------------------------------------- 8. shedding

def test_a_hung_token_sheds_load_instead_of_piling_it_up(make_server, wrapper):
    lab = FaultLab(make_server(start=False), wrapper, TRENT_HSM_THREADS=2, TRENT_HSM_QUEUE_DEPTH=2,
                   TRENT_HSM_CALL_TIMEOUT_SECONDS=2).start()
    key = lab.kms.create_key()["KeyMetadata"]["KeyId"]
    lab.kms.encrypt(KeyId=key, Plaintext=b"warm the working key")
    lab.faults("hang C_Encrypt 5s")
    start = threading.Barrier(20)

    def one(_):
        start.wait(timeout=10)
        return attempt("Encrypt", lab.kms.encrypt, KeyId=key, Plaintext=b"under a hung token")

    burst_started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(one, range(20), timeout=30))
    burst = time.monotonic() - burst_started
    wrong = [str(o) for o in outcomes if o.kind != TIMEOUT]
    slow = [str(o) for o in outcomes if o.elapsed > 3.5]
    assert not wrong, f"expected 500 DependencyTimeoutException for all 20, got: {wrong}"
    assert not slow and burst < 4.5, f"answers took too long (burst {burst:.2f}s): {slow}"
    shed = sum(1 for o in outcomes if o.elapsed < 1.0)
    lab.clear()
    cleared = time.monotonic()
    recovered = None
    while time.monotonic() - cleared < 10:
        outcome = attempt("Encrypt", lab.kms.encrypt, KeyId=key, Plaintext=b"after the shedding")
        if outcome.ok:
            recovered = time.monotonic() - cleared
            break
        assert outcome.kind in RETRYABLE, outcome
        time.sleep(0.25)
    assert recovered is not None, f"Encrypt never worked again: the pool stayed exhausted\n{fault_lines(lab.server.log_text())}"
    lab.assert_alive("shedding")
    print(f"shedding: {shed} of 20 shed at once, {20 - shed} by the deadline; burst {burst:.2f}s; "
          f"first success {recovered:.2f}s after clearing")


# --------------------------------------------------------------------------- 9. random faults, never a wrong answer

RANDOM_RUNS = [(7, "CKR_DEVICE_ERROR"), (8, "CKR_SESSION_HANDLE_INVALID")]
RANDOM_REQUESTS = 300


@pytest.mark.parametrize("seed, code", RANDOM_RUNS, ids=[f"seed{s}-{c[4:]}" for s, c in RANDOM_RUNS])
def test_random_faults_never_give_a_wrong_answer(flab, seed, code):
    lab, keys = flab
    kms = lab.kms
    rng = random.Random(seed)
    # Material made before the faults: ciphertexts to decrypt and re-encrypt, genuine MACs to verify.
    sealed: list[tuple[bytes, bytes, dict]] = []
    for index in range(8):
        data, context = plaintext(rng), {"n": str(index)}
        sealed.append((kms.encrypt(KeyId=keys.sym, Plaintext=data, EncryptionContext=context)["CiphertextBlob"], data, context))
    macs: list[tuple[bytes, bytes]] = []
    for _ in range(4):
        message = plaintext(rng)
        macs.append((message, kms.generate_mac(KeyId=keys.hmac, Message=message, MacAlgorithm="HMAC_SHA_256")["Mac"]))

    acknowledged: list[tuple[str, bytes, bytes, dict]] = []  # (what, blob, plaintext, context) to decrypt afterwards
    new_macs: list[tuple[bytes, bytes]] = []
    problems: list[str] = []
    counts: dict[str, list[int]] = {}

    def note(outcome: Outcome) -> None:
        tally = counts.setdefault(outcome.op, [0, 0])
        tally[0 if outcome.ok else 1] += 1
        if not outcome.ok and outcome.kind not in RETRYABLE:
            problems.append(f"not a retryable error: {outcome}")

    offset = lab.log_offset()
    lab.faults(f"fail * {code} probability 0.05 seed {seed}")
    ops = ["Encrypt"] * 5 + ["Decrypt"] * 4 + ["GenerateDataKey"] * 3 + ["Sign"] * 3 + ["GenerateMac"] * 2 + \
          ["VerifyMac"] * 2 + ["ReEncrypt"] * 2
    for _ in range(RANDOM_REQUESTS):
        op = rng.choice(ops)
        if op == "Encrypt":
            data, context = plaintext(rng), {"r": str(rng.randrange(1000))}
            outcome = attempt(op, kms.encrypt, KeyId=keys.sym, Plaintext=data, EncryptionContext=context)
            if outcome.ok:
                acknowledged.append(("Encrypt", outcome.result["CiphertextBlob"], data, context))
        elif op == "Decrypt":
            blob, data, context = rng.choice(sealed)
            outcome = attempt(op, kms.decrypt, CiphertextBlob=blob, EncryptionContext=context)
            if outcome.ok and outcome.result["Plaintext"] != data:
                problems.append("Decrypt: 200 with a wrong plaintext")
        elif op == "GenerateDataKey":
            outcome = attempt(op, kms.generate_data_key, KeyId=keys.sym, KeySpec="AES_256")
            if outcome.ok:
                if len(outcome.result["Plaintext"]) != 32:
                    problems.append("GenerateDataKey: a data key that is not 32 bytes")
                acknowledged.append(("GenerateDataKey", outcome.result["CiphertextBlob"], outcome.result["Plaintext"], {}))
        elif op == "Sign":
            which = rng.choice(["ecc", "ecc", "rsa"])
            key, algorithm = (keys.ecc, SIGN_ALGORITHM["ecc"]) if which == "ecc" else (keys.rsa, SIGN_ALGORITHM["rsa"])
            message = plaintext(rng)
            outcome = attempt(f"Sign-{which}", kms.sign, KeyId=key, Message=message, SigningAlgorithm=algorithm)
            if outcome.ok and not keys.signature_valid(key, algorithm, message, outcome.result["Signature"]):
                problems.append(f"Sign-{which}: 200 with a signature that does not verify")
        elif op == "GenerateMac":
            message = plaintext(rng)
            outcome = attempt(op, kms.generate_mac, KeyId=keys.hmac, Message=message, MacAlgorithm="HMAC_SHA_256")
            if outcome.ok:
                new_macs.append((message, outcome.result["Mac"]))
        elif op == "VerifyMac":
            message, mac = rng.choice(macs)
            if rng.random() < 0.3:  # a wrong MAC must never be accepted
                outcome = attempt("VerifyMac-wrong", kms.verify_mac, KeyId=keys.hmac, Message=message,
                                  Mac=bytes([mac[0] ^ 1]) + mac[1:], MacAlgorithm="HMAC_SHA_256")
                if outcome.ok:
                    problems.append("VerifyMac: 200 for a wrong MAC")
                elif outcome.kind == (400, "KMSInvalidMacException"):
                    outcome = Outcome("VerifyMac-wrong", 200, None, outcome.elapsed)  # the right answer
            else:
                outcome = attempt(op, kms.verify_mac, KeyId=keys.hmac, Message=message, Mac=mac, MacAlgorithm="HMAC_SHA_256")
                if outcome.ok and outcome.result.get("MacValid") is not True:
                    problems.append("VerifyMac: 200 without MacValid for a genuine MAC")
        else:  # ReEncrypt
            blob, data, context = rng.choice(sealed)
            new_context = {"re": str(rng.randrange(1000))}
            outcome = attempt(op, kms.re_encrypt, CiphertextBlob=blob, SourceEncryptionContext=context,
                              DestinationKeyId=keys.sym, DestinationEncryptionContext=new_context)
            if outcome.ok:
                acknowledged.append(("ReEncrypt", outcome.result["CiphertextBlob"], data, new_context))
        note(outcome)
        if outcome.status == 0:
            lab.assert_alive(f"{outcome}")
    log = lab.log_since(offset)
    lab.clear()
    lab.wait_healthy(keys.sym)

    for what, blob, data, context in acknowledged:
        back = attempt("Decrypt", kms.decrypt, CiphertextBlob=blob, EncryptionContext=context)
        if not back.ok or back.result["Plaintext"] != data:
            problems.append(f"an acknowledged {what} blob does not decrypt to what was returned: {back}")
    for message, mac in new_macs:
        back = attempt("VerifyMac", kms.verify_mac, KeyId=keys.hmac, Message=message, Mac=mac, MacAlgorithm="HMAC_SHA_256")
        if not back.ok or back.result.get("MacValid") is not True:
            problems.append(f"a MAC GenerateMac returned under faults is not valid: {back}")

    succeeded = sum(tally[0] for tally in counts.values())
    summary = ", ".join(f"{op} {ok}/{ok + failed}" for op, (ok, failed) in sorted(counts.items()))
    print(f"random faults seed {seed} {code}: {succeeded}/{RANDOM_REQUESTS} succeeded ({summary}); "
          f"{log.count('trent-pkcs11-faults')} wrapper log lines")
    assert not problems, f"{len(problems)} problems ({summary}):\n" + "\n".join(problems[:15]) + "\n" + fault_lines(log)
    assert succeeded >= RANDOM_REQUESTS * 0.25, \
        f"only {succeeded}/{RANDOM_REQUESTS} requests succeeded under 5% faults ({summary}):\n{fault_lines(log)}"


# --------------------------------------------------------------------------- 10. retries ride through

def test_standard_retries_ride_through_a_reboot_and_a_removal(rlab):
    """botocore's standard mode retries a 5xx up to 5 times with jittered backoff of 50 ms * 2^i (at most about
    1.55 s in all, botocore 1.44), unless the answer carries `x-amz-retry-after` (milliseconds; botocore waits that
    long, up to 5 s more than its own delay). Riding through a 2 s removal and the recovery after it needs that hint."""
    lab, keys = rlab
    random.seed(12)  # botocore's backoff jitter: the same delays every run
    client = lab.retrying()
    ops = Ops(lab, keys, kms=client)
    ops.prepare_decrypt()
    failures: list[str] = []

    def run_checked(op: str) -> None:
        outcome, wrong = ops.run(op, check=False)
        if not outcome.ok or wrong:
            failures.append(f"{outcome} {wrong or ''}")

    lab.faults(lab.reboot_rule())
    for op in RECOVERY_OPS:
        run_checked(op)
    assert not failures, f"with standard retries, requests failed through a reboot: {failures}"

    offset = lab.log_offset()
    lab.faults("remove 2s")
    window_start = time.monotonic()
    issued = 0
    while time.monotonic() - window_start < 2.0:
        run_checked(RECOVERY_OPS[issued % len(RECOVERY_OPS)])
        issued += 1
    assert not failures, (f"with standard retries, {len(failures)} of {issued} requests issued during a 2 s removal "
                          f"failed: {failures}\n{fault_lines(lab.log_since(offset))}")
