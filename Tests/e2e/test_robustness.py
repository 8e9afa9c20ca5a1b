"""Generated hostile requests against a private server (issue #11, part C): it never crashes, hangs or blames itself.

robustness_gen builds requests from the botocore KMS model and breaks each one (see its docstring); they are
sent one after another, most signed with botocore's SigV4 signer so that they reach JSON decoding. Every answer
must be a 200; or a 4xx whose `__type` is an error shape of the model or a protocol error, with a message (unless AWS sends none:
MESSAGELESS); or,
for a request the HTTP layer cannot read (oversized headers or body), a bare 4xx or a closed connection. A
malformed request is the client's error, so any 500 fails the run; a 500 to a well-formed request is allowed
only as KMSInternalException and is listed. Each case also states what its breakage must be answered with (a
tampered ciphertext never decrypts, a bad signature never succeeds, broken JSON is SerializationException...).

Environment: TRENT_ROBUSTNESS_REQUESTS (default 3000), TRENT_ROBUSTNESS_SEED (default 20261201; any string),
TRENT_ROBUSTNESS_SECONDS (default 100: the run stops there, however many requests are left). A failure prints
the seed and every offending request and answer; request i depends only on (seed, i).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections import Counter

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import robustness_gen as gen
from trent_e2e import ACCOUNT_ID, REGION, TrentServer, crash_summary, make_kms

REQUESTS = int(os.environ.get("TRENT_ROBUSTNESS_REQUESTS", "3000"))
SEED = os.environ.get("TRENT_ROBUSTNESS_SEED", "20261201")
SECONDS = float(os.environ.get("TRENT_ROBUSTNESS_SECONDS", "100"))
ANSWER_SECONDS = 5.0  # no answer may take longer
# Header blocks up to these sizes must reach KMS; larger ones may be refused by the HTTP layer (a bare 400 or
# 431, or a closed connection), as front ends do. Trent's defaults are 16 KiB and 100 fields (Config/trent.yaml).
HEADER_BYTES_SERVED, HEADER_FIELDS_SERVED = 8_192, 50
LIVENESS_EVERY = 100  # requests between two normal signed requests
MAX_CRASHES = 5  # after this many crashes the run stops: the rest would only measure restarts
SHOWN = 25  # failures printed in full; the rest are counted


@dataclasses.dataclass
class Outcome:
    """What came back: "answer" (status, headers, text), "closed" (no answer) or "timeout"."""

    kind: str
    elapsed: float
    status: int | None = None
    headers: dict = dataclasses.field(default_factory=dict)
    text: str = ""
    detail: str = ""
    sent_headers: dict = dataclasses.field(default_factory=dict)

    @property
    def body(self) -> dict | None:
        try:
            parsed = json.loads(self.text) if self.text else None
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None

    @property
    def error_type(self) -> str | None:
        return (self.body or {}).get("__type")

    @property
    def has_message(self) -> bool:
        body = self.body or {}
        return isinstance(body.get("message", body.get("Message")), str)

    @property
    def label(self) -> str:
        """The answer in short: 200, 400 SerializationException, closed or timeout."""
        return f"{self.status} {self.error_type or ''}".strip() if self.kind == "answer" else self.kind

    def summary(self) -> str:
        if self.kind != "answer":
            return f"{self.kind} after {self.elapsed:.2f}s {self.detail}".strip()
        return f"{self.status} {self.text[:300]!r} ({self.elapsed:.2f}s)"


def send(session: requests.Session, server: TrentServer, case: gen.Case) -> Outcome:
    """Signs the case as botocore's SigV4Auth signs (RawClient does the same), applies its after-signing change,
    and posts it with a per-request timeout."""
    url = server.endpoint + "/"
    headers: dict = {}
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    if case.target is not None:
        headers["X-Amz-Target"] = case.target
    request = AWSRequest(method="POST", url=url, data=case.body, headers=headers)
    if case.sign:
        credentials = Credentials(case.access_key or server.access_key_id, case.secret_key or server.secret_access_key)
        SigV4Auth(credentials, "kms", REGION).add_auth(request)
    sent, body = dict(request.headers.items()), case.body
    if case.after_signing is not None:
        sent, body = case.after_signing(sent, body)
    data = iter(body) if isinstance(body, list) else body
    started = time.monotonic()
    try:
        response = session.post(url, data=data, headers=sent, timeout=ANSWER_SECONDS)
    except requests.Timeout as exc:
        return Outcome("timeout", time.monotonic() - started, detail=str(exc)[:200], sent_headers=sent)
    except requests.ConnectionError as exc:
        return Outcome("closed", time.monotonic() - started, detail=str(exc)[:200], sent_headers=sent)
    return Outcome("answer", time.monotonic() - started, response.status_code, dict(response.headers), response.text,
                   sent_headers=sent)


def oversized_headers(headers: dict) -> bool:
    sent = {name: value for name, value in headers.items() if value is not None}
    size = sum(len(name) + len(value if isinstance(value, bytes) else str(value).encode()) + 4
               for name, value in sent.items())
    return size > HEADER_BYTES_SERVED or len(sent) > HEADER_FIELDS_SERVED


# The answers AWS sends without a message (LocalStack's AWS-validated snapshots; test_aws_messages.py): a ciphertext,
# signature or MAC that does not check out, the rotation of a key that does not rotate, an unusable public key.
MESSAGELESS = {"InvalidCiphertextException": None, "KMSInvalidSignatureException": None, "KMSInvalidMacException": None,
               "UnsupportedOperationException": {"EnableKeyRotation", "DisableKeyRotation", "GetKeyRotationStatus",
                                                 "ListKeyRotations", "RotateKeyOnDemand"},
               "ValidationException": {"DeriveSharedSecret"}}


def sent_without_message(error: str, operation: str) -> bool:
    if error not in MESSAGELESS:
        return False
    operations = MESSAGELESS[error]
    return operations is None or operation in operations


def judge(case: gen.Case, outcome: Outcome) -> str | None:
    """Why the answer is wrong for this case, or None."""
    expect = case.expect
    if oversized_headers(outcome.sent_headers):
        expect = dataclasses.replace(expect, http_layer=True)
    if outcome.kind == "timeout" or outcome.elapsed > ANSWER_SECONDS:
        return f"no answer within {ANSWER_SECONDS:.0f}s"
    if outcome.kind == "closed":
        return None if expect.http_layer else "the connection closed without an answer"
    status, error = outcome.status, outcome.error_type
    if status == 200:
        if expect.refused:
            return "succeeded, but this request must be refused"
        return None
    if expect.succeeds:
        return "refused, but this unmodified request must succeed"
    if status >= 500:
        return f"{status} {error or '(no KMS error body)'}: a malformed request is the client's error"
    if error is None:
        bare = not outcome.text and status in ({expect.status} if expect.status else {400, 431})
        return None if expect.http_layer and bare else f"{status} without an AWS error body"
    if error not in gen.ALLOWED_ERRORS:
        return f"{error} is neither an error of the KMS model nor a protocol error"
    if error == "UnknownOperationException" and case.target == f"TrentService.{case.operation}":
        return f"UnknownOperationException for {case.operation}, an operation of the KMS model"
    if not outcome.has_message and not sent_without_message(error, case.operation):
        return f"{error} without a message"
    if error == "UnsupportedOperationException" and case.operation in gen.NOT_IMPLEMENTED:
        return None
    if expect.errors is not None and error not in expect.errors:
        return f"{error}, but this request must be answered with {' or '.join(sorted(expect.errors))}"
    expected_status = expect.status or 400
    if status != expected_status:
        return f"status {status} for {error}; expected {expected_status}"
    return None


@dataclasses.dataclass
class Failure:
    case: gen.Case
    outcome: Outcome | None
    problem: str

    def render(self) -> str:
        case = self.case
        headers = self.outcome.sent_headers if self.outcome else {}
        shown_headers = {name: gen.short(value if isinstance(value, bytes) else str(value).encode(), 120)
                         for name, value in headers.items()
                         if name.lower() in ("authorization", "x-amz-target", "x-amz-date")}
        answer = self.outcome.summary() if self.outcome else "-"
        return (f"#{case.index} [{case.category}] {case.operation}: {case.description}\n"
                f"    problem: {self.problem}\n    body: {gen.short(case.body, 300)}\n"
                f"    headers: {shown_headers}\n    answer: {answer}")


LIVENESS_PROBE = gen.Case(-1, "liveness", "ListKeys", "a normal signed request", b"{}", gen.SUCCEEDS,
                         target="TrentService.ListKeys")


class Run:
    """One robustness run against one server: sends, judges, checks liveness, restarts after a crash."""

    def __init__(self, server: TrentServer, generator: gen.Generator):
        self.server = server
        self.generator = generator
        self.session = requests.Session()
        self.kms = make_kms(server)
        self.failures: list[Failure] = []
        self.internal_errors_on_valid: list[Failure] = []
        self.answers: dict[str, Counter] = {}  # by category: "200", "400 SerializationException", "closed"...
        self.crashes = 0
        self.sent = 0

    def go(self, count: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for index in range(count):
            if time.monotonic() > deadline or self.crashes >= MAX_CRASHES:
                break
            case = self.generator.case(index)
            outcome = send(self.session, self.server, case)
            self.sent += 1
            self.answers.setdefault(case.category, Counter())[outcome.label] += 1
            crash = self.crash_after(outcome)
            if crash:
                self.record_crash(case, outcome, crash)
                continue
            if case.category == "valid" and outcome.status == 500 and outcome.error_type == "KMSInternalException":
                self.internal_errors_on_valid.append(Failure(case, outcome, "500 KMSInternalException"))
            elif problem := judge(case, outcome):
                self.failures.append(Failure(case, outcome, problem))
            if (index + 1) % LIVENESS_EVERY == 0:
                self.check_liveness(case)
        self.check_liveness(None)

    def crash_after(self, outcome: Outcome) -> str | None:
        """After no answer: None if the server still answers a normal request, else why it does not."""
        if outcome.kind == "answer" or send(self.session, self.server, LIVENESS_PROBE).status == 200:
            return None
        return crash_summary(self.server) or "the server no longer answers (its process still runs)"

    def check_liveness(self, last: gen.Case | None) -> None:
        """A normal signed request, ListKeys through boto3, must succeed."""
        try:
            self.kms.list_keys(Limit=1)
        except BotoCoreError as exc:
            after = f"after request #{last.index}" if last else "at the end of the run"
            crash = crash_summary(self.server) or "its process still runs"
            self.record_crash(last or LIVENESS_PROBE, None, f"ListKeys failed {after} ({exc}); {crash}")

    def record_crash(self, case: gen.Case, outcome: Outcome | None, crash: str) -> None:
        """The request in flight when the server died is the culprit: requests are sent one at a time."""
        self.crashes += 1
        self.failures.append(Failure(case, outcome, f"CRASH: {crash}"))
        self.restart()

    def restart(self) -> None:
        """The same data folder and port, so the fixtures stay valid; fresh connections to the new process."""
        self.server.restart()
        self.session = requests.Session()
        self.kms = make_kms(self.server)

    def report(self) -> str:
        lines = ["answers by category:"]
        for category, answers in sorted(self.answers.items()):
            common = ", ".join(f"{answer} x{count}" for answer, count in answers.most_common(4))
            lines.append(f"  {category} ({sum(answers.values())}): {common}")
        lines += [
            f"seed {SEED!r}: {self.sent} of {REQUESTS} requests sent, {len(self.failures)} wrong answers "
            f"({self.crashes} crashes); rerun with TRENT_ROBUSTNESS_SEED={SEED!r} "
            "(request i depends only on seed and i)",
        ]
        kinds: dict[str, Counter] = {}
        for failure in self.failures:
            kind = re.sub(r"'[^']*'|0x[0-9a-f]+", "...", failure.problem.split(";")[0])
            kinds.setdefault(kind, Counter())[failure.case.category] += 1
        for kind, categories in sorted(kinds.items(), key=lambda item: -sum(item[1].values())):
            lines.append(f"  {sum(categories.values()):5d} x {kind}  ({', '.join(sorted(categories))})")
        lines += [failure.render() for failure in self.failures[:SHOWN]]
        if len(self.failures) > SHOWN:
            lines.append(f"... and {len(self.failures) - SHOWN} more")
        if self.internal_errors_on_valid:
            count = len(self.internal_errors_on_valid)
            lines.append(f"500 KMSInternalException to {count} well-formed requests (allowed, listed):")
            lines += [failure.render() for failure in self.internal_errors_on_valid[:SHOWN]]
        return "\n".join(lines)


def make_fixtures(server: TrentServer) -> gen.Fixtures:
    """The keys, ciphertexts, signature, MAC, grant and import token that generated requests name."""
    kms = make_kms(server)

    def key(**kwargs) -> str:
        return kms.create_key(Description="robustness", **kwargs)["KeyMetadata"]["KeyId"]

    symmetric = [key(), key()]
    aliases = [f"alias/robustness-stable-{index}" for index in range(2)]
    for alias, key_id in zip(aliases, symmetric):
        kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    scratch = [key() for _ in range(4)]
    scratch_aliases = [f"alias/robustness-scratch-{index}" for index in range(2)]
    for alias, key_id in zip(scratch_aliases, scratch):
        kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    rsa_encrypt = key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")
    rsa_sign = key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    hmac_key = key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    key_agreement = key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")
    external = key(Origin="EXTERNAL")
    context = {"purpose": "robustness", "Tenant": "42"}
    sealed = [
        (kms.encrypt(KeyId=symmetric[0], Plaintext=b"robustness one", EncryptionContext=context)["CiphertextBlob"],
         context),
        (kms.encrypt(KeyId=symmetric[1], Plaintext=b"robustness two")["CiphertextBlob"], {}),
    ]
    message = b"robustness message"
    grant = kms.create_grant(KeyId=scratch[0], GranteePrincipal=f"arn:aws:iam::{ACCOUNT_ID}:user/robustness",
                             Operations=["Encrypt", "Decrypt"])
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    return gen.Fixtures(
        account=ACCOUNT_ID, symmetric=symmetric, aliases=aliases, rsa_encrypt=rsa_encrypt, rsa_sign=rsa_sign,
        hmac=hmac_key, key_agreement=key_agreement, external=external, scratch=scratch, scratch_aliases=scratch_aliases,
        sealed=sealed,
        rsa_sealed=kms.encrypt(KeyId=rsa_encrypt, Plaintext=b"robustness rsa",
                               EncryptionAlgorithm="RSAES_OAEP_SHA_256")["CiphertextBlob"],
        message=message,
        signature=kms.sign(KeyId=rsa_sign, Message=message, MessageType="RAW",
                           SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"],
        mac=kms.generate_mac(KeyId=hmac_key, Message=message, MacAlgorithm="HMAC_SHA_256")["Mac"],
        peer_public_key=peer.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        grant_id=grant["GrantId"], grant_token=grant["GrantToken"],
        import_token=kms.get_parameters_for_import(KeyId=external, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                                   WrappingKeySpec="RSA_2048")["ImportToken"],
    )


def test_generated_hostile_requests(make_server):
    server = make_server()
    run = Run(server, gen.Generator(SEED, make_fixtures(server)))
    run.go(REQUESTS, SECONDS)
    report = run.report()
    assert not run.failures, report
    print(report)  # shown with -s or -rP: what a passing run was answered


def test_generator_is_deterministic():
    """Request i depends only on (seed, i): the reproduction the failure message promises."""
    fixtures = gen.Fixtures(
        account=ACCOUNT_ID, symmetric=["11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"],
        aliases=["alias/a"], rsa_encrypt="r", rsa_sign="s", hmac="h", key_agreement=None, external="e",
        scratch=["33333333-3333-4333-8333-333333333333"], scratch_aliases=["alias/s"],
        sealed=[(bytes(60), {"purpose": "x"})], rsa_sealed=bytes(256), message=b"m", signature=bytes(256),
        mac=bytes(32), peer_public_key=bytes(91), grant_id="g", grant_token="t", import_token=bytes(100))
    first, second = gen.Generator("seed", fixtures), gen.Generator("seed", fixtures)
    for index in (0, 7, 1234, 2999):
        one, other = first.case(index), second.case(index)
        assert (one.category, one.operation, one.description, one.body) == (
            other.category, other.operation, other.description, other.body)
    categories = Counter(first.case(index).category for index in range(600))
    assert set(categories) == set(gen.CATEGORIES), categories
