"""Graceful shutdown (issue #13): SIGTERM under load, and while a token call is slow.

What Trent promises: it stops accepting at once, finishes the requests in flight (within
server.shutdownGraceSeconds), closes the audit trail with a final digest, closes the token and exits 0. Every
request either got its answer and its one audit record, or was refused before it started (connection refused or
closed before any answer) and left no record. A request that would outlast the bound does not hold the process:
its connection is closed at the bound and the process exits within a few seconds more.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from test_admin import get
from test_hsm_faults import FaultLab, wrapper  # noqa: F401 (the wrapper fixture builds the fault-injecting module)
from trent_e2e import TrentServer, _port_open, make_kms

NO_RETRIES = {"mode": "standard", "total_max_attempts": 1}
# Refused before it started: no connection, or a connection closed before any byte of an answer.
NOT_STARTED = (EndpointConnectionError, ConnectionClosedError)
CLOSING = 5  # seconds Trent allows itself after the grace period (BoundedShutdown.closingTime)


@dataclass
class Call:
    op: str
    request_id: str | None = None  # set when an answer came (success or AWS error)
    error: str | None = None
    plaintext: bytes | None = None
    ciphertext: bytes | None = None
    key_id: str | None = None


@dataclass
class Load:
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


def records(server: TrentServer) -> list[dict]:
    return [json.loads(line) for line in (server.data_dir / "audit" / "records.jsonl").read_text().splitlines()]


def digests(server: TrentServer) -> list[dict]:
    return [json.loads(line) for line in (server.data_dir / "audit" / "digests.jsonl").read_text().splitlines()]


def worker(server: TrentServer, load: Load, key_id: str, index: int) -> None:
    kms = make_kms(server, retries=NO_RETRIES, read_timeout=30)
    n = 0
    while not load.stop.is_set():
        n += 1
        op = ("Encrypt", "GenerateDataKey", "Encrypt", "CreateKey")[n % 4]
        call = Call(op)
        try:
            if op == "Encrypt":
                call.plaintext = f"worker {index} call {n}".encode()
                answer = kms.encrypt(KeyId=key_id, Plaintext=call.plaintext, EncryptionContext={"w": str(index)})
                call.ciphertext = answer["CiphertextBlob"]
            elif op == "GenerateDataKey":
                answer = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
                call.plaintext, call.ciphertext = answer["Plaintext"], answer["CiphertextBlob"]
            else:
                answer = kms.create_key(Description=f"shutdown load {index}/{n}")
                call.key_id = answer["KeyMetadata"]["KeyId"]
            call.request_id = answer["ResponseMetadata"]["RequestId"]
        except ClientError as exc:
            call.request_id = exc.response["ResponseMetadata"].get("RequestId")
            call.error = exc.response["Error"]["Code"]
        except NOT_STARTED as exc:
            call.error = type(exc).__name__
            time.sleep(0.05)
        except Exception as exc:  # noqa: BLE001 -- anything else is a failure the test reports
            call.error = f"unexpected {type(exc).__name__}: {exc}"
        with load.lock:
            load.calls.append(call)


def test_sigterm_under_load_answers_and_audits_or_refuses_every_request(tmp_path):
    server = TrentServer(tmp_path / "data")
    server.env["TRENT_SHUTDOWN_GRACE_SECONDS"] = "10"
    server.env["TRENT_AUDIT_RECORDS_PER_DIGEST"] = "50"
    server.start()
    setup = make_kms(server)
    key_id = setup.create_key(Description="shutdown")["KeyMetadata"]["KeyId"]
    load = Load()
    threads = [threading.Thread(target=worker, args=(server, load, key_id, i), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    with load.lock:
        before = len(load.calls)
    assert before > 10, f"only {before} calls in 2 s"
    proc = server.proc
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(timeout=10 + CLOSING + 5)
    finally:
        time.sleep(0.3)  # the workers' next requests meet a closed port: refused before they start
        load.stop.set()
        for thread in threads:
            thread.join(timeout=40)
    took = time.monotonic() - signalled
    server.proc = proc
    assert server.stop() == 0 and status == 0, f"exit status {status}\n{server.log_text()[-3000:]}"
    assert took < 10, f"shutdown under load took {took:.1f}s"

    calls = load.calls
    unexpected = [c.error for c in calls if c.error and c.error.startswith("unexpected")]
    assert not unexpected, unexpected[:5]
    answered = [c for c in calls if c.request_id]
    refused = [c for c in calls if not c.request_id]
    assert all(c.error in ("EndpointConnectionError", "ConnectionClosedError") for c in refused), refused[:5]
    failed = [c for c in answered if c.error]
    assert not failed, f"answered with an error: {[(c.op, c.error) for c in failed[:5]]}"
    assert refused, "no request was refused: the load did not reach the shutdown"

    # One record per answer, none for a request that got none.
    trail = records(server)
    ids = [entry["record"]["requestID"] for entry in trail]
    assert len(ids) == len(set(ids)), "a request id has two records"
    expected = {c.request_id for c in answered}
    assert set(ids) - expected == {ids[0]}, "records without an answered request (beyond the setup CreateKey)"
    assert expected <= set(ids), f"{len(expected - set(ids))} answered requests have no record"
    assert [e["sequence"] for e in trail] == list(range(1, len(trail) + 1))

    # The final digest covers the last record, and the trail verifies.
    last = digests(server)[-1]
    assert last["lastSequence"] == trail[-1]["sequence"] and last["lastHash"] == trail[-1]["hash"], last
    verify = subprocess.run([str(server.binary), "audit", "verify"], cwd=server.data_dir, env=server.env,
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)
    assert report["Intact"] is True and report["Records"] == len(trail), report

    log = server.log_text()
    assert "shutting down: no new connections; requests in flight have 10 s to finish" in log
    assert "shutdown complete" in log
    assert "shutdown grace period over" not in log

    # Everything acknowledged survives the restart on the same folder.
    server.start()
    try:
        kms = make_kms(server)
        for call in answered:
            if call.op == "Encrypt":
                index = call.plaintext.split()[1].decode()
                back = kms.decrypt(CiphertextBlob=call.ciphertext, EncryptionContext={"w": index})
                assert back["Plaintext"] == call.plaintext
            elif call.op == "GenerateDataKey":
                assert kms.decrypt(CiphertextBlob=call.ciphertext)["Plaintext"] == call.plaintext
            else:
                assert kms.describe_key(KeyId=call.key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    finally:
        assert server.stop() == 0
    print(f"SIGTERM under load: {len(answered)} answered, {len(refused)} refused, exit in {took:.2f}s")


def slow_encrypt(lab: FaultLab, key_id: str, result: dict) -> None:
    kms = make_kms(lab.server, retries=NO_RETRIES, read_timeout=60)
    started = time.monotonic()
    try:
        answer = kms.encrypt(KeyId=key_id, Plaintext=b"slow but answered")
        result.update(status=200, request_id=answer["ResponseMetadata"]["RequestId"], blob=answer["CiphertextBlob"])
    except ClientError as exc:
        result.update(status=exc.response["ResponseMetadata"]["HTTPStatusCode"], code=exc.response["Error"]["Code"])
    except NOT_STARTED as exc:
        result.update(status=0, code=type(exc).__name__)
    result["elapsed"] = time.monotonic() - started


def start_slow_request(lab: FaultLab, key_id: str, rule: str) -> tuple[threading.Thread, dict]:
    offset = lab.log_offset()
    lab.faults(rule)
    result: dict = {}
    thread = threading.Thread(target=slow_encrypt, args=(lab, key_id, result), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while "C_Encrypt" not in lab.log_since(offset):  # the wrapper logs the delay it injects
        assert time.monotonic() < deadline, f"the slow call never started:\n{lab.log_since(offset)}"
        time.sleep(0.05)
    return thread, result


def test_sigterm_lets_a_slow_request_finish(make_server, wrapper):  # noqa: F811
    lab = FaultLab(make_server(start=False), wrapper, TRENT_SHUTDOWN_GRACE_SECONDS=10,
                   TRENT_HSM_CALL_TIMEOUT_SECONDS=20).start()
    key_id = lab.kms.create_key()["KeyMetadata"]["KeyId"]
    lab.kms.encrypt(KeyId=key_id, Plaintext=b"warm the working key")
    thread, result = start_slow_request(lab, key_id, "delay C_Encrypt 3s")
    proc = lab.server.proc
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    # The listener is closed at once: a new connection is refused while the slow request goes on.
    deadline = time.monotonic() + 2
    while _port_open(lab.server.host, lab.server.port):
        assert time.monotonic() < deadline, "the listener still accepts 2 s after SIGTERM"
        time.sleep(0.05)
    assert proc.poll() is None and not result, "the slow request did not outlive the listener"
    # Meanwhile the admin listener still answers, and /ready says the API is draining.
    status, _, body = get(f"{lab.server.admin_url}/ready")
    assert status == 503 and json.loads(body)["checks"]["api"]["ready"] is False, body
    assert json.loads(body)["checks"]["token"]["ready"] is True, body
    status = proc.wait(timeout=20)
    took = time.monotonic() - signalled
    thread.join(timeout=10)
    assert status == 0, lab.server.log_text()[-2000:]
    assert result.get("status") == 200, result
    assert took < 8, f"exit took {took:.1f}s after SIGTERM"
    lab.server.proc = proc
    lab.server.stop()
    trail = [entry["record"] for entry in records(lab.server)]
    assert [r["eventName"] for r in trail if r["requestID"] == result["request_id"]] == ["Encrypt"]
    assert "errorCode" not in trail[-1] and trail[-1]["requestID"] == result["request_id"]


def test_a_request_that_outlasts_the_bound_does_not_hold_the_process(make_server, wrapper):  # noqa: F811
    lab = FaultLab(make_server(start=False), wrapper, TRENT_SHUTDOWN_GRACE_SECONDS=2,
                   TRENT_HSM_CALL_TIMEOUT_SECONDS=60).start()
    key_id = lab.kms.create_key()["KeyMetadata"]["KeyId"]
    lab.kms.encrypt(KeyId=key_id, Plaintext=b"warm the working key")
    thread, result = start_slow_request(lab, key_id, "delay C_Encrypt 40s")
    proc = lab.server.proc
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(timeout=2 + CLOSING + 5)
    took = time.monotonic() - signalled
    thread.join(timeout=10)
    log = lab.server.log_text()
    assert "shutdown grace period over: closing the connections of requests still in flight" in log, log[-2000:]
    assert f"shutdown did not finish within {2 + CLOSING} s; exiting now" in log, log[-2000:]
    assert status == 1 and 2 + CLOSING - 0.5 < took < 2 + CLOSING + 3, (status, took)
    assert result.get("status") == 0 and result.get("code") in ("ConnectionClosedError",), result
    lab.server.proc = proc
    lab.server.stop()
    trail = [entry["record"] for entry in records(lab.server)]
    assert [r["eventName"] for r in trail] == ["CreateKey", "Encrypt"], "the unanswered Encrypt left a record"
    # Nothing answered was lost: the trail verifies on the next start, the key works.
    lab.faults("")
    lab.server.start()
    kms = make_kms(lab.server)
    assert kms.decrypt(CiphertextBlob=kms.encrypt(KeyId=key_id, Plaintext=b"after")["CiphertextBlob"])["Plaintext"] == b"after"
    assert lab.server.stop() == 0
