"""Request quotas (ThrottlingException) as AWS KMS applies them, on private servers with low configured rates.

Every other server of the suite runs with TRENT_QUOTAS_ENABLED=false; these turn quotas on. Each bucket holds one
second's worth of requests (its rate, at least one) and starts full, so over `elapsed` seconds a class admits at
most rate + rate x elapsed requests.
"""

from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import ClientError

from trent_e2e import ACCOUNT_ID, Identities, TrentServer, expect_error, make_kms, random_account_id, user_arn

THROTTLED_MESSAGE = "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."
ONE_ATTEMPT = {"total_max_attempts": 1}
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}


def quota_server(tmp_path_factory, name: str, yaml: str, *, enabled_by_env: bool = True) -> TrentServer:
    data = tmp_path_factory.mktemp(name)
    config = data / "quotas.yaml"
    config.write_text(yaml)
    server = TrentServer(data)
    server.env["TRENT_CONFIG"] = str(config)
    if enabled_by_env:
        server.env["TRENT_QUOTAS_ENABLED"] = "true"
    else:
        del server.env["TRENT_QUOTAS_ENABLED"]  # the file decides
    server.start()
    return server


def drive(call, seconds: float, limit: int = 400) -> tuple[int, list[ClientError], float]:
    """Calls `call` as fast as one client can for `seconds` (at most `limit` calls): (successes, throttles, elapsed)."""
    successes, throttles = 0, []
    start = time.monotonic()
    while time.monotonic() - start < seconds and successes + len(throttles) < limit:
        try:
            call()
            successes += 1
        except ClientError as error:
            if error.response["Error"]["Code"] != "ThrottlingException":
                raise
            throttles.append(error)
    return successes, throttles, time.monotonic() - start


def until_throttled(call, limit: int = 200) -> tuple[int, float]:
    """Calls `call` until it is throttled: (successes before, elapsed). Fails if `limit` calls all succeed."""
    start = time.monotonic()
    for successes in range(limit):
        try:
            call()
        except ClientError as error:
            assert error.response["Error"]["Code"] == "ThrottlingException", error.response
            return successes, time.monotonic() - start
    pytest.fail(f"{limit} calls in {time.monotonic() - start:.1f}s were never throttled")


def assert_throttling(error: ClientError) -> None:
    assert error.response["Error"]["Code"] == "ThrottlingException"
    assert error.response["Error"]["Message"] == THROTTLED_MESSAGE
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.fixture(scope="module")
def low(tmp_path_factory):
    """Symmetric cryptography at 10/s and ListAliases at 3/s for every account; the rest as AWS has them."""
    server = quota_server(tmp_path_factory, "quotas-low", "quotas:\n  rates:\n    symmetric: 10\n    ListAliases: 3\n")
    yield server
    server.stop()


def test_a_class_is_throttled_above_its_rate_and_standard_retries_get_through(low):
    kms = make_kms(low, retries=ONE_ATTEMPT)
    key_id = kms.create_key(Description="quota")["KeyMetadata"]["KeyId"]
    time.sleep(1.1)  # the symmetric bucket is full again, whatever came before
    # Encrypt (classed by its key, after authorization) and GenerateRandom (classed by its name) share the quota.
    calls = [lambda: kms.encrypt(KeyId=key_id, Plaintext=b"quota test plaintext"), lambda: kms.generate_random(NumberOfBytes=16)]
    turn = iter(range(10**6))
    successes, throttles, elapsed = drive(lambda: calls[next(turn) % 2](), seconds=1.5)
    assert throttles, f"{successes} requests in {elapsed:.2f}s were never throttled"
    assert 10 <= successes <= 10 + 10 * elapsed + 1, (successes, elapsed)
    for error in throttles:
        assert_throttling(error)

    # As against AWS: the SDK's standard retry mode backs off on ThrottlingException and every request gets through.
    patient = make_kms(low, retries={"mode": "standard", "max_attempts": 10})
    start = time.monotonic()
    for _ in range(25):
        assert len(patient.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    assert time.monotonic() - start >= 1.0, "25 requests at 10/s after an empty bucket must take over a second"

    # Throttled requests are audited like any refused request, as CloudTrail records them (each record is on disk
    # before its answer).
    records = [json.loads(line)["record"] for line in (low.data_dir / "audit" / "records.jsonl").read_text().splitlines()]
    throttled = [r for r in records if r.get("errorCode") == "ThrottlingException"]
    assert len(throttled) >= len(throttles)
    assert {r["eventName"] for r in throttled} <= {"Encrypt", "GenerateRandom"}
    assert all(r["errorMessage"] == THROTTLED_MESSAGE for r in throttled)


def test_the_management_quota_is_counted_apart_from_cryptography(low):
    kms = make_kms(low, retries=ONE_ATTEMPT)
    time.sleep(1.1)
    successes, _ = until_throttled(lambda: kms.generate_random(NumberOfBytes=16))
    assert successes >= 10
    # Symmetric cryptography is throttled now; ListAliases has a bucket of its own, full.
    for _ in range(3):
        kms.list_aliases()
    successes, elapsed = until_throttled(kms.list_aliases)
    assert successes <= 3 * elapsed + 1, (successes, elapsed)
    # And the other way round: CreateKey's own quota (AWS's 5/s) is untouched by both.
    kms.create_key(Description="management quota")


OTHER_ACCOUNT = random_account_id()


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """Symmetric cryptography at one request every 5 s, except for OTHER_ACCOUNT, which has 40/s."""
    server = quota_server(
        tmp_path_factory, "quotas-slow",
        f'quotas:\n  rates:\n    symmetric: 0.2\n  accounts:\n    - account: "{OTHER_ACCOUNT}"\n      rates: {{symmetric: 40}}\n')
    yield server
    server.stop()


def test_a_request_is_classed_by_its_key_only_once_the_caller_may_use_it(slow):
    """Symmetric throttled, RSA not: the RSA key's owner gets through; a caller denied the key is counted as
    symmetric, so its answer never depends on the key's type."""
    kms = make_kms(slow, retries=ONE_ATTEMPT)
    rsa_key = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    nobody = Identities(slow).user(ACCOUNT_ID, "quota-nobody")  # same account, no policy: denied every key
    denied = make_kms(slow, access_key_id=nobody.access_key_id, secret_access_key=nobody.secret_access_key, retries=ONE_ATTEMPT)
    until_throttled(lambda: kms.generate_random(NumberOfBytes=16))
    # The symmetric bucket is empty for the next 5 s.
    with expect_error("ThrottlingException") as throttled:
        denied.encrypt(KeyId=rsa_key, Plaintext=b"counted as symmetric", EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert_throttling(throttled.value)
    blob = kms.encrypt(KeyId=rsa_key, Plaintext=b"counted as RSA", EncryptionAlgorithm="RSAES_OAEP_SHA_256")["CiphertextBlob"]
    assert kms.decrypt(KeyId=rsa_key, CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_256")["Plaintext"] == b"counted as RSA"
    # A symmetric key named by a caller that may not use it, or a key that does not exist: also throttled, not refused.
    with expect_error("ThrottlingException"):
        denied.encrypt(KeyId="alias/quota-no-such-alias", Plaintext=b"counted as symmetric")
    with expect_error("ThrottlingException"):
        kms.encrypt(KeyId="alias/quota-no-such-alias", Plaintext=b"counted as symmetric")


def test_an_account_override_gives_another_account_its_own_quota(slow):
    ids = Identities(slow)
    assert ids("create-account", "--id", OTHER_ACCOUNT, "--name", "quota-b") == {"AccountId": OTHER_ACCOUNT, "Name": "quota-b"}
    b = ids.user(OTHER_ACCOUNT, "quota-b-admin", policy=ALLOW_ALL)
    a = make_kms(slow, retries=ONE_ATTEMPT)
    successes, elapsed = until_throttled(lambda: a.generate_random(NumberOfBytes=16))
    assert successes <= 1 + 0.2 * elapsed, (successes, elapsed)
    # Account B has its own bucket, of 40: A's throttling does not touch it.
    b_kms = make_kms(slow, access_key_id=b.access_key_id, secret_access_key=b.secret_access_key, retries=ONE_ATTEMPT)
    for _ in range(30):
        assert len(b_kms.generate_random(NumberOfBytes=16)["Plaintext"]) == 16
    assert b.arn == user_arn(OTHER_ACCOUNT, "quota-b-admin")
    with expect_error("ThrottlingException"):
        a.generate_random(NumberOfBytes=16)


def test_quotas_off_never_throttle(tmp_path_factory):
    server = quota_server(
        tmp_path_factory, "quotas-off", "quotas:\n  enabled: false\n  rates:\n    symmetric: 1\n    CreateKey: 1\n",
        enabled_by_env=False)
    try:
        kms = make_kms(server, retries=ONE_ATTEMPT)
        for _ in range(3):
            kms.create_key(Description="no quota")
        for _ in range(40):
            kms.generate_random(NumberOfBytes=16)
    finally:
        server.stop()
