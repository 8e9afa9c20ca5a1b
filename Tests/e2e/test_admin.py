"""The admin listener (issue #13): Prometheus `/metrics`, `/health`, `/ready`, and `trent healthcheck`.

Every server here is private (its own data folder, API port and admin port), so the counters it shows come only
from the traffic each test sends. /metrics is parsed with prometheus_client's own text-format parser, as a
Prometheus server would read it. Readiness is flipped with the real fault injectors: the PKCS#11 wrapper
(Tests/PKCS11Faults) removes the token; libtrent-io-faults (Tests/IOFaults) fails the store's writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from trent_e2e import REPO, TOKEN, TrentServer, expect_error, free_port, make_kms
from test_hsm_faults import NO_RETRIES, FaultLab
from test_storage_faults import Faults

NOT_FOUND_KEY = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000000"
TOKEN_NAME = "token 'trent'"


# --------------------------------------------------------------------------- helpers

def get(url: str, method: str = "GET", timeout: float = 10) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one plain HTTP request; an HTTP error status is an answer, not an exception."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def ready(server: TrentServer) -> tuple[int, dict]:
    status, headers, body = get(f"{server.admin_url}/ready")
    assert headers.get("Content-Type") == "application/json", headers
    return status, json.loads(body)


class Scrape:
    """One /metrics scrape: sample values by (name, labels)."""

    def __init__(self, server: TrentServer):
        status, headers, body = get(f"{server.admin_url}/metrics")
        assert status == 200, body[:400]
        assert headers.get("Content-Type", "").startswith("text/plain; version=0.0.4"), headers
        self.text = body.decode()
        self.families = {family.name: family for family in text_string_to_metric_families(self.text)}
        self.samples = {}
        for family in self.families.values():
            for sample in family.samples:
                self.samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def value(self, name: str, **labels) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def total(self, name: str, **labels) -> float:
        """The sum over every series of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(value for (sample, sample_labels), value in self.samples.items()
                   if sample == name and wanted <= set(sample_labels))

    def labels(self, name: str, label: str) -> set[str]:
        return {dict(sample_labels)[label] for (sample, sample_labels) in self.samples
                if sample == name and label in dict(sample_labels)}


def healthcheck(server: TrentServer, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in server.env.items() if k != "LD_PRELOAD"}
    environment.update(env)
    return subprocess.run([str(server.binary), "healthcheck", *args], cwd=server.data_dir, env=environment,
                          capture_output=True, text=True, timeout=30)


def wait_ready(server: TrentServer, want: int, timeout: float) -> tuple[int, dict, float]:
    """Polls /ready (bounded) until it answers `want`; returns the last answer and how long it took."""
    started = time.monotonic()
    while True:
        status, body = ready(server)
        elapsed = time.monotonic() - started
        if status == want or elapsed > timeout:
            return status, body, elapsed
        time.sleep(0.2)


# --------------------------------------------------------------------------- the scrape after known traffic

ENCRYPTS, DECRYPTS = 5, 3


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """A private server after known traffic, and the scrape that followed it."""
    server = TrentServer(tmp_path_factory.mktemp("trent-admin"))
    server.start()
    try:
        kms = make_kms(server, retries=NO_RETRIES)
        key = kms.create_key(Description="admin: metrics")["KeyMetadata"]["KeyId"]
        blobs = [kms.encrypt(KeyId=key, Plaintext=f"metrics {n}".encode())["CiphertextBlob"] for n in range(ENCRYPTS)]
        for blob in blobs[:DECRYPTS]:
            kms.decrypt(CiphertextBlob=blob)
        with expect_error("NotFoundException"):
            kms.describe_key(KeyId=NOT_FOUND_KEY)
        assert len(kms.generate_random(NumberOfBytes=32)["Plaintext"]) == 32
        yield server, Scrape(server)
    finally:
        server.stop()


def test_requests_are_counted_by_operation_and_outcome(scraped):
    _, scrape = scraped
    assert scrape.value("trent_requests_total", operation="CreateKey", outcome="ok") == 1
    assert scrape.value("trent_requests_total", operation="Encrypt", outcome="ok") == ENCRYPTS
    assert scrape.value("trent_requests_total", operation="Decrypt", outcome="ok") == DECRYPTS
    assert scrape.value("trent_requests_total", operation="DescribeKey", outcome="NotFoundException") == 1
    assert scrape.value("trent_requests_total", operation="GenerateRandom", outcome="ok") == 1
    # Nothing else was asked, and an operation that was not asked has no failure series.
    assert scrape.total("trent_requests_total") == 1 + ENCRYPTS + DECRYPTS + 1 + 1
    assert scrape.value("trent_requests_total", operation="DescribeKey", outcome="ok") == 0
    assert scrape.families["trent_requests"].type == "counter"


def test_request_latency_is_a_histogram_per_operation(scraped):
    _, scrape = scraped
    family = scrape.families["trent_request_duration_seconds"]
    assert family.type == "histogram"
    for operation, count in (("Encrypt", ENCRYPTS), ("Decrypt", DECRYPTS), ("DescribeKey", 1), ("GenerateRandom", 1)):
        assert scrape.value("trent_request_duration_seconds_count", operation=operation) == count, operation
        assert scrape.value("trent_request_duration_seconds_bucket", operation=operation, le="+Inf") == count
        assert 0 < scrape.value("trent_request_duration_seconds_sum", operation=operation) < 10 * count


def test_pkcs11_calls_are_counted_by_function(scraped):
    _, scrape = scraped
    for function in ("C_Encrypt", "C_Decrypt", "C_GenerateRandom", "C_UnwrapKey", "C_Login", "C_OpenSession"):
        calls = scrape.value("trent_pkcs11_calls_total", function=function)
        assert calls and calls > 0, f"{function}: {calls}"
        assert scrape.value("trent_pkcs11_call_duration_seconds_count", function=function) == calls, function
    # Only the standard's names (and "other") are labels.
    assert all(name.startswith("C_") or name in ("dlopen", "other")
               for name in scrape.labels("trent_pkcs11_calls_total", "function"))
    # No fault was injected: no error counter, and no session is lent out at rest.
    assert scrape.total("trent_pkcs11_errors_total") == 0
    assert scrape.value("trent_pkcs11_sessions_in_use", token="trent") == 0


def test_handle_cache_nonces_store_and_audit(scraped):
    _, scrape = scraped
    # One key: its working copy is unwrapped at its first use and found by every use after it.
    assert scrape.value("trent_handle_cache_misses_total", cache="working_keys") == 1
    assert scrape.value("trent_handle_cache_hits_total", cache="working_keys") == ENCRYPTS + DECRYPTS - 1
    assert scrape.value("trent_handle_cache_evictions_total", cache="working_keys") == 0
    # The key's first encryption reserved one block of its IV budget, durably.
    assert scrape.value("trent_nonce_reservations_total") == 1
    assert scrape.value("trent_nonces_reserved_total") == 65536
    for operation in ("read", "write", "watch_write"):
        assert scrape.value("trent_store_duration_seconds_count", operation=operation) > 0, operation
    # Every request above has its record, written in group-committed batches of one write + fsync each.
    records = 1 + ENCRYPTS + DECRYPTS + 1 + 1
    batches = scrape.value("trent_audit_batch_records_count")
    assert scrape.value("trent_audit_batch_records_sum") == records
    assert 1 <= batches <= records
    assert scrape.value("trent_audit_write_fsync_duration_seconds_count") == batches
    assert scrape.value("trent_audit_queue_depth") == 0
    assert scrape.value("trent_audit_write_failures_total") == 0


def test_token_state_is_one_for_ready(scraped):
    _, scrape = scraped
    assert scrape.value("trent_token_state", token=TOKEN_NAME, state="ready") == 1
    assert scrape.value("trent_token_state", token=TOKEN_NAME, state="degraded") == 0
    assert scrape.value("trent_token_state", token=TOKEN_NAME, state="unavailable") == 0


def test_the_scrape_holds_no_secret(scraped):
    server, scrape = scraped
    for secret in (server.secret_access_key, "metrics 0", (server.data_dir / "softhsm-pin").name):
        assert secret not in scrape.text


def test_health_ready_and_nothing_else(scraped):
    server, _ = scraped
    status, headers, body = get(f"{server.admin_url}/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, body = ready(server)
    assert status == 200, body
    assert body["ready"] is True
    assert set(body["checks"]) == {"api", "token", "store", "audit"}
    assert all(check["ready"] is True for check in body["checks"].values()), body
    for path in ("/", "/metrics/x", "/healthz", "/admin", "/health/ready"):
        assert get(f"{server.admin_url}{path}")[0] == 404, path
    assert get(f"{server.admin_url}/metrics", method="POST")[0] == 404


def test_metrics_are_not_served_on_the_api_port(scraped):
    server, _ = scraped
    for path in ("/metrics", "/health", "/ready"):
        status, _, body = get(f"{server.endpoint}{path}")
        assert status == 404 and b"trent_" not in body, (path, status, body[:200])


def test_a_client_cannot_add_label_values(make_server):
    """Whatever X-Amz-Target a client sends, its requests count under the known operations or "unknown"."""
    server = make_server()
    targets = [f"TrentService.Evil{uuid.uuid4().hex}", "Evil.Encrypt", ""]
    for target in targets:
        request = urllib.request.Request(server.endpoint + "/", method="POST", data=b"{}",
                                         headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400
    scrape = Scrape(server)
    assert scrape.total("trent_requests_total", operation="unknown") == len(targets)
    assert scrape.total("trent_requests_total") == len(targets)
    assert "Evil" not in scrape.text


# --------------------------------------------------------------------------- healthcheck

def test_healthcheck_exits_0_when_ready_and_1_on_a_closed_port(scraped):
    server, _ = scraped
    result = healthcheck(server)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"http://127.0.0.1:{server.admin_port}/ready answered 200"
    live = healthcheck(server, "--live")
    assert live.returncode == 0 and live.stdout.strip().endswith("/health answered 200"), live
    closed = healthcheck(server, TRENT_ADMIN_PORT=str(free_port()))
    assert closed.returncode == 1
    assert len(closed.stderr.strip().splitlines()) == 1 and "Connection refused" in closed.stderr, closed.stderr
    off = healthcheck(server, TRENT_ADMIN_PORT="0")
    assert off.returncode == 1 and "admin listener is off" in off.stderr, off.stderr


def test_the_admin_listener_can_be_turned_off(make_server):
    server = make_server(start=False)
    server.env["TRENT_ADMIN_PORT"] = "0"
    server.start()
    make_kms(server).generate_random(NumberOfBytes=8)
    with pytest.raises(OSError):
        get(f"{server.admin_url}/health", timeout=2)


# --------------------------------------------------------------------------- readiness under faults

@pytest.fixture(scope="module")
def wrapper(tmp_path_factory):
    out = tmp_path_factory.mktemp("pkcs11-faults-admin")
    proc = subprocess.run([str(REPO / "Tests" / "PKCS11Faults" / "build.sh"), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"Tests/PKCS11Faults/build.sh failed:\n{proc.stdout}\n{proc.stderr}"
    return out / "libtrent-pkcs11-faults.so"


@pytest.fixture
def lab(tmp_path_factory, wrapper):
    lab = FaultLab(TrentServer(tmp_path_factory.mktemp("trent-admin-faults")), wrapper).start()
    yield lab
    lab.clear()
    lab.server.stop()


def test_ready_follows_the_token_away_and_back(lab):
    kms = lab.kms
    key = kms.create_key(Description="admin: removal")["KeyMetadata"]["KeyId"]
    kms.encrypt(KeyId=key, Plaintext=b"before the removal")
    assert ready(lab.server)[0] == 200
    lab.faults("remove 4s")
    status, body, took = wait_ready(lab.server, 503, timeout=4)
    assert status == 503, f"/ready still {status} {took:.1f}s into a removal: {body}"
    assert body["ready"] is False and body["checks"]["token"]["ready"] is False, body
    assert body["checks"]["store"]["ready"] is True and body["checks"]["audit"]["ready"] is True, body
    assert healthcheck(lab.server).returncode == 1
    assert healthcheck(lab.server, "--live").returncode == 0, "a live process with no token is alive"
    assert get(f"{lab.server.admin_url}/health")[0] == 200
    status, body, took = wait_ready(lab.server, 200, timeout=12)
    assert status == 200, f"/ready still {status} after the token came back: {body}"
    assert all(check["ready"] for check in body["checks"].values()), body
    kms.encrypt(KeyId=key, Plaintext=b"after the removal")

    scrape = Scrape(lab.server)
    # The removal was seen as the CKR codes the wrapper answers, by function; and the state went unavailable and back.
    codes = scrape.labels("trent_pkcs11_errors_total", "code")
    assert codes & {"CKR_DEVICE_REMOVED", "CKR_TOKEN_NOT_PRESENT"}, scrape.text
    assert scrape.value("trent_token_state", token=TOKEN_NAME, state="ready") == 1
    assert scrape.value("trent_token_state", token=TOKEN_NAME, state="unavailable") == 0


def test_pkcs11_errors_are_counted_by_function_and_ckr(lab):
    kms = lab.kms
    key = kms.create_key(Description="admin: one fault")["KeyMetadata"]["KeyId"]
    kms.encrypt(KeyId=key, Plaintext=b"warm")
    before = Scrape(lab.server)
    assert before.total("trent_pkcs11_errors_total", function="C_Encrypt") == 0
    lab.faults("fail C_Encrypt CKR_DEVICE_ERROR count 1")
    with expect_error("KMSInternalException"):
        kms.encrypt(KeyId=key, Plaintext=b"one device error")
    lab.clear()
    after = Scrape(lab.server)
    assert after.value("trent_pkcs11_errors_total", function="C_Encrypt", code="CKR_DEVICE_ERROR") == 1
    assert after.value("trent_requests_total", operation="Encrypt", outcome="KMSInternalException") == 1
    assert after.value("trent_requests_total", operation="Encrypt", outcome="ok") == 1


@pytest.fixture
def io_faults_library(tmp_path_factory):
    out = tmp_path_factory.mktemp("io-faults-admin")
    result = subprocess.run([str(REPO / "Tests" / "IOFaults" / "build.sh"), str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_ready_names_the_store_when_it_cannot_be_written(make_server, io_faults_library):
    server = make_server(start=False)
    faults = Faults(server, io_faults_library)
    faults.clear()
    server.start()
    assert wait_ready(server, 200, timeout=5)[0] == 200
    faults.set("fail EIO write {store}")
    status, body = ready(server)
    assert status == 503, body
    assert body["checks"]["store"]["ready"] is False and body["checks"]["token"]["ready"] is True, body
    assert "could not be written" in body["checks"]["store"]["detail"], body
    result = healthcheck(server)
    assert result.returncode == 1 and "answered 503" in result.stderr, result
    faults.clear()
    status, body, _ = wait_ready(server, 200, timeout=5)
    assert status == 200, body


def test_ready_names_the_audit_trail_after_a_failed_write_and_recovers_without_traffic(make_server, io_faults_library):
    server = make_server(start=False)
    faults = Faults(server, io_faults_library)
    faults.clear()
    server.start()
    kms = make_kms(server, retries=NO_RETRIES)
    assert wait_ready(server, 200, timeout=5)[0] == 200
    faults.set("fail EIO write {audit}")
    with expect_error("KMSInternalException"):
        kms.generate_random(NumberOfBytes=16)
    status, body = ready(server)
    assert status == 503, body
    assert body["checks"]["audit"]["ready"] is False, body
    assert body["checks"]["store"]["ready"] is True and body["checks"]["token"]["ready"] is True, body
    assert Scrape(server).value("trent_audit_write_failures_total") == 1
    # No request arrives while the server is out of service: the probe's own test write brings it back.
    faults.clear()
    status, body, _ = wait_ready(server, 200, timeout=5)
    assert status == 200, body
    assert len(kms.generate_random(NumberOfBytes=16)["Plaintext"]) == 16
