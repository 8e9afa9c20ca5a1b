"""Storage faults (design.md section 9, issue 12): a full disk, failed writes and failed fsyncs, in the metadata
store (SQLite) and in the audit trail, under the real server.

The faults come from libtrent-io-faults (Tests/IOFaults), an LD_PRELOAD library that wraps libc's write, fsync
and ftruncate family for files under a path and fails them as a control file says; everything else reaches the
real file system. The library is built here on first use.

What is checked, for each fault:
- nothing is acknowledged that is not durable: a change answered 200 is there after a restart (or a kill -9),
  and no change whose write or fsync failed is answered 200;
- while the fault lasts, requests that need the disk get a retryable KMSInternalException (HTTP 500), never a
  hang, a crash or another error; requests that need no write go on being served;
- a boto3 client in standard retry mode gets its request through once the fault ends;
- the service recovers by itself: the first request after the fault ends succeeds, without a restart;
- `trent audit verify` passes afterwards; every acknowledged request has its audit record, and a request whose
  record could not be written was refused and left no record.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from trent_e2e import REPO, TrentServer, crash_summary, make_kms, remember_plaintext

# The library re-reads its control file at most every 20 ms, at the next write or fsync of the process.
CONTROL_FILE_NOTICED = 0.06


@pytest.fixture(scope="session")
def io_faults_library(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("io-faults")
    result = subprocess.run(
        [str(REPO / "Tests" / "IOFaults" / "build.sh"), str(out)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"Tests/IOFaults/build.sh failed:\n{result.stderr}", pytrace=False)
    return Path(result.stdout.strip().splitlines()[-1])


def test_the_fault_library_passes_its_self_test():
    """libtrent-io-faults does what its README says (including on the system libsqlite3) before it is trusted."""
    result = subprocess.run([str(REPO / "Tests" / "IOFaults" / "selftest.sh")], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert result.stdout.rstrip().endswith(" 0 failed"), result.stdout[-2000:]


class Faults:
    """The control file of one server's libtrent-io-faults, and the paths its rules name."""

    def __init__(self, server: TrentServer, library: Path):
        self.server = server
        self.control = server.data_dir / "io-faults.control"
        self.store = f"{server.data_dir}/trent.sqlite"  # the database with its -wal and -shm files
        self.audit = f"{server.data_dir}/audit/"
        server.env.update(LD_PRELOAD=str(library), TRENT_IO_FAULTS_CONTROL=str(self.control), TRENT_IO_FAULTS_LOG="1")

    def set(self, *rules: str) -> None:
        """Replaces the rules (by rename, so the library never reads half a file) and waits until they hold."""
        text = "".join(rule.format(store=self.store, audit=self.audit) + "\n" for rule in rules)
        temporary = self.control.with_suffix(".new")
        temporary.write_text(text)
        os.replace(temporary, self.control)
        time.sleep(CONTROL_FILE_NOTICED)

    def clear(self) -> None:
        self.set()

    def injected(self) -> int:
        """How many faults the library has injected into this server so far (it logs each one)."""
        return sum(1 for line in self.server.log_text().splitlines()
                   if line.startswith("trent-io-faults[") and (" on " in line or "short write" in line) and "loaded" not in line)


@pytest.fixture
def faulty_server(make_server, io_faults_library):
    """A private server with libtrent-io-faults preloaded (no faults yet). Takes environment overrides."""

    def start(**env: str) -> tuple[TrentServer, Faults]:
        server = make_server(start=False)
        faults = Faults(server, io_faults_library)
        server.env.update(env)
        faults.clear()
        server.start()
        return server, faults

    return start


def client(server: TrentServer, attempts: int = 1):
    """Standard retry mode, as SDKs use it; one attempt unless told, so every refusal is seen as it is."""
    if attempts == 1:
        return make_kms(server, retries={"mode": "standard", "total_max_attempts": 1})
    return make_kms(server, retries={"mode": "standard", "max_attempts": attempts})


def counting_attempts(kms) -> list[int]:
    """Counts the HTTP attempts `kms` makes, retries included."""
    attempts = [0]

    def count(**_):
        attempts[0] += 1

    kms.meta.events.register("before-send.kms", count)
    return attempts


def request_id(response_or_error) -> str:
    meta = response_or_error.response["ResponseMetadata"] if isinstance(response_or_error, ClientError) \
        else response_or_error["ResponseMetadata"]
    return meta["RequestId"]


def refused(what: str, call, *args, **kwargs) -> str:
    """`call` must fail with a retryable KMSInternalException (HTTP 500); returns the refused request's id."""
    try:
        call(*args, **kwargs)
    except ClientError as error:
        code = error.response["Error"]["Code"]
        status = error.response["ResponseMetadata"]["HTTPStatusCode"]
        assert (code, status) == ("KMSInternalException", 500), f"{what}: expected KMSInternalException (500), got {code} ({status})"
        return request_id(error)
    pytest.fail(f"{what}: answered 200 although the disk failed under it", pytrace=False)


def plaintext() -> bytes:
    value = b"storage-fault plaintext " + uuid.uuid4().hex.encode()
    remember_plaintext(value)
    return value


def audit_records(server: TrentServer) -> list[dict]:
    text = (server.data_dir / "audit" / "records.jsonl").read_bytes()
    assert text == b"" or text.endswith(b"\n"), "records.jsonl ends in a torn line"
    return [json.loads(line) for line in text.splitlines()]


def audit_verify(server: TrentServer) -> dict:
    env = {k: v for k, v in server.env.items() if k != "LD_PRELOAD"}
    result = subprocess.run([str(server.binary), "audit", "verify"], cwd=server.data_dir, env=env,
                            capture_output=True, text=True, timeout=60)
    report = json.loads(result.stdout) if result.stdout.strip() else None
    assert result.returncode == 0 and report and report["Intact"], f"audit verify: {result.stdout}{result.stderr}"
    return report


def assert_running(server: TrentServer) -> None:
    summary = crash_summary(server, wait=0)
    assert summary is None, summary


def kill_and_restart(server: TrentServer) -> None:
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    server.restart()


def check_trail(server: TrentServer, acknowledged: list[str], refused_ids: list[str]) -> None:
    """The trail verifies, holds every acknowledged request, and no request refused because its record failed."""
    report = audit_verify(server)
    records = audit_records(server)
    assert report["Records"] == len(records)
    assert [entry["sequence"] for entry in records] == list(range(1, len(records) + 1))
    ids = {entry["record"]["requestID"] for entry in records}
    missing = [rid for rid in acknowledged if rid not in ids]
    assert not missing, f"acknowledged requests without an audit record: {missing}"
    present = [rid for rid in refused_ids if rid in ids]
    assert not present, f"requests refused for want of an audit record have one: {present}"


# --------------------------------------------------------------------------- the metadata store

STORE_WRITE_FAULTS = {
    "write-ENOSPC": ["fail ENOSPC write {store}"],
    "write-EIO": ["fail EIO write {store}"],
    "disk-full": ["full {store}"],
    "fsync-EIO": ["fail EIO fsync {store}"],
}


@pytest.mark.parametrize("fault", list(STORE_WRITE_FAULTS), ids=list(STORE_WRITE_FAULTS))
def test_a_failing_store_refuses_changes_retryably_and_recovers(faulty_server, fault):
    server, faults = faulty_server()
    kms = client(server)
    key = kms.create_key(Description="before")["KeyMetadata"]["KeyId"]
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "before", "TagValue": "1"}])
    kms.create_alias(AliasName=f"alias/before-{key[:8]}", TargetKeyId=key)
    secret = plaintext()
    blob = kms.encrypt(KeyId=key, Plaintext=secret)["CiphertextBlob"]  # reserves a block of this key's IV budget
    unused = kms.create_key(Description="never encrypted with")["KeyMetadata"]["KeyId"]
    keys_before = {k["KeyId"] for k in kms.list_keys()["Keys"]}

    faults.set(*STORE_WRITE_FAULTS[fault])
    # Every change needs the store, so every change is refused, retryably, and none shows afterwards.
    refused("CreateKey", kms.create_key, Description="lost")
    refused("TagResource", kms.tag_resource, KeyId=key, Tags=[{"TagKey": "lost", "TagValue": "1"}])
    refused("CreateAlias", kms.create_alias, AliasName=f"alias/lost-{key[:8]}", TargetKeyId=key)
    refused("UpdateKeyDescription", kms.update_key_description, KeyId=key, Description="lost")
    refused("DisableKey", kms.disable_key, KeyId=key)
    # Its first encryption must reserve IV budget durably before it uses any.
    refused("Encrypt with a key that has no budget reserved", kms.encrypt, KeyId=unused, Plaintext=plaintext())
    # What needs no write is still served: reads, and encryption from budget reserved before.
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["Description"] == "before"
    assert kms.list_resource_tags(KeyId=key)["Tags"] == [{"TagKey": "before", "TagValue": "1"}]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == secret
    later_secret = plaintext()
    later_blob = kms.encrypt(KeyId=key, Plaintext=later_secret)["CiphertextBlob"]
    assert {k["KeyId"] for k in kms.list_keys()["Keys"]} == keys_before
    assert faults.injected() >= 6
    assert_running(server)

    # An SDK's retries carry a request across the end of a fault: here the next two commits fail.
    faults.set(*[rule + " count 2" for rule in STORE_WRITE_FAULTS[fault] if rule.startswith("fail")] or ["full {store} 0"])
    retrying = client(server, attempts=8)
    attempts = counting_attempts(retrying)
    if fault == "disk-full":
        threading.Timer(0.3, faults.clear).start()  # room again, while the client is retrying
    retrying.tag_resource(KeyId=key, Tags=[{"TagKey": "retried", "TagValue": "1"}])
    assert attempts[0] >= 2, "the first attempt should have met the fault"

    # Recovered without a restart: the very first request after the fault succeeds.
    faults.clear()
    created = kms.create_key(Description="after")["KeyMetadata"]["KeyId"]
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "after", "TagValue": "1"}])
    kms.update_key_description(KeyId=key, Description="after")
    unused_blob = kms.encrypt(KeyId=unused, Plaintext=secret)["CiphertextBlob"]

    kill_and_restart(server)
    kms = client(server)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["Description"] == "after"
    assert {t["TagKey"] for t in kms.list_resource_tags(KeyId=key)["Tags"]} == {"before", "retried", "after"}
    assert [a["AliasName"] for a in kms.list_aliases(KeyId=key)["Aliases"]] == [f"alias/before-{key[:8]}"]
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    assert {k["KeyId"] for k in kms.list_keys()["Keys"]} == keys_before | {created}
    for ciphertext, expected in [(blob, secret), (later_blob, later_secret), (unused_blob, secret)]:
        assert kms.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == expected
    server.stop()
    audit_verify(server)


def test_nonce_budget_is_never_reused_across_store_faults_and_crashes(faulty_server):
    """With a reservation block of 2 and a budget of 6 encryptions per backing key, encryptions refill often and
    move to new backing-key versions, through failing writes, failing fsyncs, a full disk and kill -9."""
    budget, block = 6, 2
    server, faults = faulty_server(TRENT_NONCE_BUDGET=str(budget), TRENT_NONCE_RESERVATION_BLOCK=str(block))
    kms = client(server)
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    phases = [[], ["fail ENOSPC write {store}"], [], "kill", ["fail EIO fsync {store}"], [], ["full {store}"],
              "kill", [], ["fail EIO fsync {store} after 1"], [], "kill", []]
    ciphertexts: list[tuple[bytes, bytes]] = []
    for phase in phases:
        if phase == "kill":
            kill_and_restart(server)
            kms = client(server)
            continue
        faults.set(*phase)
        refusals = 0
        for _ in range(5):
            value = plaintext()
            try:
                ciphertexts.append((kms.encrypt(KeyId=key, Plaintext=value)["CiphertextBlob"], value))
            except ClientError as error:
                assert phase, f"Encrypt failed without a fault: {error}"
                assert error.response["Error"]["Code"] == "KMSInternalException"
                refusals += 1
        assert (refusals > 0) == bool(phase), f"{phase}: {refusals} refusals"
    faults.clear()
    server.stop()

    used = collections.Counter(int.from_bytes(blob[17:21], "big") for blob, _ in ciphertexts)
    with sqlite3.connect(f"file:{server.data_dir / 'trent.sqlite'}?mode=ro", uri=True) as db:
        reserved = dict(db.execute("SELECT version, nonces_reserved FROM backing_keys WHERE key_id = ?", (key,)))
    assert len(used) >= 3, f"the budget should have moved the key to new versions: {dict(used)}"
    for version, count in used.items():
        # Every encryption was covered by a durable reservation, and no version went over its budget.
        assert count <= reserved[version] <= budget, f"version {version}: {count} encryptions, {reserved[version]} reserved"

    server.start()
    kms = client(server)
    for blob, value in ciphertexts:
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == value
    server.stop()
    audit_verify(server)


# --------------------------------------------------------------------------- the audit trail

AUDIT_FAULTS = {
    "write-ENOSPC": ["fail ENOSPC write {audit}"],
    "disk-full": ["full {audit}"],
    "fsync-EIO": ["fail EIO fsync {audit}"],
    # The cut-back of the failed batch fails too: the trail must retry it, not stay broken until a restart.
    "fsync-and-cut-back-EIO": ["fail EIO fsync,truncate {audit}"],
}


@pytest.mark.parametrize("fault", list(AUDIT_FAULTS), ids=list(AUDIT_FAULTS))
def test_a_failing_audit_trail_refuses_requests_and_its_chain_verifies(faulty_server, fault):
    server, faults = faulty_server(TRENT_AUDIT_RECORDS_PER_DIGEST="3")
    kms = client(server)
    acknowledged: list[str] = []
    refused_ids: list[str] = []

    def ok(response):
        acknowledged.append(request_id(response))
        return response

    key = ok(kms.create_key(Description="audited"))["KeyMetadata"]["KeyId"]
    secret = plaintext()
    blob = ok(kms.encrypt(KeyId=key, Plaintext=secret))["CiphertextBlob"]
    ok(kms.describe_key(KeyId=key))
    records = server.data_dir / "audit" / "records.jsonl"
    size_before = records.stat().st_size

    faults.set(*AUDIT_FAULTS[fault])
    # No answer without its record: every request is refused, reads and cryptography included.
    refused_ids.append(refused("DescribeKey", kms.describe_key, KeyId=key))
    refused_ids.append(refused("Encrypt", kms.encrypt, KeyId=key, Plaintext=plaintext()))
    refused_ids.append(refused("Decrypt", kms.decrypt, CiphertextBlob=blob))
    refused_ids.append(refused("GenerateRandom", kms.generate_random, NumberOfBytes=16))
    refused_ids.append(refused("ListKeys", kms.list_keys))
    # Nothing of the failed batches stays behind (with the cut-back failing too, the file may hold them until the
    # next append cuts them off: then only whole lines, which the next append removes before writing).
    if fault != "fsync-and-cut-back-EIO":
        assert records.stat().st_size == size_before
    assert faults.injected() >= 5
    assert_running(server)

    # An SDK's retries carry a request across the end of a fault.
    faults.set(*[rule + " count 1" for rule in AUDIT_FAULTS[fault] if rule.startswith("fail")] or ["full {audit} 0"])
    retrying = client(server, attempts=8)
    attempts = counting_attempts(retrying)
    if fault == "disk-full":
        threading.Timer(0.3, faults.clear).start()
    ok(retrying.describe_key(KeyId=key))
    assert attempts[0] >= 2, "the first attempt should have met the fault"

    # Recovered without a restart: the first request after the fault succeeds, and the chain carries on.
    faults.clear()
    assert ok(kms.decrypt(CiphertextBlob=blob))["Plaintext"] == secret
    for _ in range(4):
        ok(kms.describe_key(KeyId=key))
    assert_running(server)
    server.stop()
    check_trail(server, acknowledged, refused_ids)

    # The trail continues across a restart after the faults.
    server.start()
    ok(client(server).describe_key(KeyId=key))
    server.stop()
    check_trail(server, acknowledged, refused_ids)


def test_a_failing_digest_is_retried_by_the_next_batch_not_in_a_loop(faulty_server):
    """Records commit while only the digests file fails; each committed batch tries one digest, and nothing spins
    (signing in the token each time) while the fault lasts. Once it ends the next digest covers every record."""
    server, faults = faulty_server(TRENT_AUDIT_RECORDS_PER_DIGEST="1")
    kms = client(server)
    key = kms.create_key(Description="digested")["KeyMetadata"]["KeyId"]
    faults.set("fail EIO fsync {audit}digests.jsonl")
    for _ in range(3):
        kms.describe_key(KeyId=key)
    time.sleep(1.0)
    failed_digests = server.log_text().count("Automatic audit digest failed")
    assert 1 <= failed_digests <= 3, f"{failed_digests} failed automatic digests for 3 batches"
    # A failed append is cut back and that is fsynced too, so a digest meets the fault once or twice.
    assert failed_digests <= faults.injected() <= 2 * failed_digests

    faults.clear()
    kms.describe_key(KeyId=key)
    server.stop()
    report = audit_verify(server)
    digests = [json.loads(line) for line in (server.data_dir / "audit" / "digests.jsonl").read_text().splitlines()]
    assert digests[-1]["lastSequence"] == report["Records"], (digests[-1], report)


# --------------------------------------------------------------------------- both, under load

def test_the_whole_disk_filling_and_emptying_under_load(faulty_server):
    """Four clients keep creating keys, tagging, encrypting and reading while the store and the audit trail
    run out of room and get it back, three times. Every answer is a success or a KMSInternalException; every
    success is durable; the trail verifies."""
    server, faults = faulty_server(TRENT_NONCE_RESERVATION_BLOCK="3")
    setup = client(server)
    shared_key = setup.create_key(Description="shared")["KeyMetadata"]["KeyId"]
    stop = threading.Event()
    lock = threading.Lock()
    outcomes: collections.Counter[str] = collections.Counter()
    unexpected: list[str] = []
    created: list[str] = []
    # Each worker tags the shared key with its own tag key (a key holds at most 50 tags): the values it was told
    # were stored, and the ones it tried since (a request refused after its change was stored may show it).
    tag_values: dict[str, list[int]] = collections.defaultdict(list)
    tried_since: dict[str, list[int]] = collections.defaultdict(list)
    encrypted: list[tuple[bytes, bytes]] = []
    acknowledged: list[str] = []

    def worker(n: int) -> None:
        kms = client(server)
        i = 0
        while not stop.is_set():
            i += 1
            op = ("CreateKey", "TagResource", "Encrypt", "DescribeKey")[i % 4]
            try:
                if op == "CreateKey":
                    response = kms.create_key(Description=f"load {n}.{i}")
                    result = ("key", response["KeyMetadata"]["KeyId"])
                elif op == "TagResource":
                    with lock:
                        tried_since[f"t{n}"].append(i)
                    response = kms.tag_resource(KeyId=shared_key, Tags=[{"TagKey": f"t{n}", "TagValue": str(i)}])
                    result = ("tag", (f"t{n}", i))
                elif op == "Encrypt":
                    value = plaintext()
                    response = kms.encrypt(KeyId=shared_key, Plaintext=value)
                    result = ("blob", (response["CiphertextBlob"], value))
                else:
                    response = kms.describe_key(KeyId=shared_key)
                    result = None
            except ClientError as error:
                code = error.response["Error"]["Code"]
                with lock:
                    outcomes[f"{op} {code}"] += 1
                    if code != "KMSInternalException" or error.response["ResponseMetadata"]["HTTPStatusCode"] != 500:
                        unexpected.append(f"{op}: {code}")
                continue
            except Exception as error:  # a timeout or a dropped connection: neither is allowed
                with lock:
                    unexpected.append(f"{op}: {type(error).__name__}: {error}")
                continue
            with lock:
                outcomes[f"{op} OK"] += 1
                acknowledged.append(request_id(response))
                if result and result[0] == "key":
                    created.append(result[1])
                elif result and result[0] == "tag":
                    tag, value = result[1]
                    tag_values[tag].append(value)
                    tried_since[tag] = []
                elif result:
                    encrypted.append(result[1])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(3):
            time.sleep(0.4)
            faults.set("full {store}", "full {audit}")
            time.sleep(0.4)
            faults.clear()
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not unexpected, f"answers other than success or KMSInternalException: {unexpected[:10]}"
    refusals = sum(count for name, count in outcomes.items() if not name.endswith(" OK"))
    assert refusals > 0 and faults.injected() > 0, f"the faults never bit: {dict(outcomes)}"
    assert all(outcomes[f"{op} OK"] > 0 for op in ("CreateKey", "TagResource", "Encrypt", "DescribeKey")), dict(outcomes)
    assert_running(server)

    kill_and_restart(server)
    kms = client(server)
    keys = {k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]}
    assert set(created) <= keys, "keys whose CreateKey was acknowledged are missing"
    tags = {t["TagKey"]: int(t["TagValue"]) for t in kms.list_resource_tags(KeyId=shared_key)["Tags"]}
    for tag, values in tag_values.items():
        # The last value acknowledged, or one tried after it whose answer was a refusal (changed, not acknowledged).
        assert tags.get(tag) in [values[-1], *tried_since[tag]], f"{tag}: stored {tags.get(tag)}, acknowledged {values[-1]}"
    for blob, value in encrypted:
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == value
    server.stop()
    check_trail(server, acknowledged, [])
    print(f"outcomes under load: {dict(outcomes)}")
