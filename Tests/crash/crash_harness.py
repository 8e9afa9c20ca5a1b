#!/usr/bin/env python3
"""Crash consistency under kill -9 (issue #12, design.md §9 "Process death").

Runs N cycles of: concurrent load from several client threads, SIGKILL of the server's process group at a random
(seeded) moment, restart on the same data folder and port, then a check of everything acknowledged so far, in every
cycle since the first:

- CreateKey and CreateAlias: the key is listed and described, the alias names it;
- state changes (EnableKey, DisableKey, ScheduleKeyDeletion, CancelKeyDeletion): the state is the last acknowledged
  one, or the one a request in flight at the kill asked for (its answer was lost: it may or may not have happened);
- PutKeyPolicy, CreateGrant and TagResource / UntagResource: the same, for the policy, the key's grants and its tags;
- Encrypt: the ciphertext decrypts with its encryption context to its plaintext, under its key;
- GenerateDataKey: the blob decrypts (with its context) to the data key that was returned;
- no two acknowledged ciphertexts under one backing-key version share an IV, and no version holds more of them than
  the nonce budget (set small, TRENT_NONCE_BUDGET, so that keys move to new versions under load and across kills);
- `trent audit verify` right after the kill reports the trail intact or exactly its torn last line, and after the
  restart reports it intact (the torn line is cut off, and the server's log says so); every few cycles a torn line
  is written on purpose after the kill to check both;
- the trail's records files (records.jsonl and the files it rotated into, kept small here so kills land around
  rotations too) hold a record, with the operation's name and no error, for every acknowledged request id;
- the SQLite store passes `PRAGMA integrity_check`, every key's current backing-key version is its newest one, and
  no alias, tag, grant or backing key outlives its key.

Background work is killed too: keys scheduled for deletion (and rotating keys) are made due, by editing the store
while the server is down, at a moment of the next load phase; the kill then comes right after the server logs the
first key it destroyed (or rotated) of a batch. After the restart every key whose deletion date has passed must be
destroyed whole (key, aliases and tags gone) or still whole, and the next start must finish the sweep; a rotation
must have happened, or wait out its claim lease (it is then reported).

Separately it kills `trent token init` (and the first `trent serve`, which creates the embedded token) after a random
delay, and at fixed PKCS#11 calls through Tests/PKCS11Faults (a hang at C_InitToken, C_InitPIN, C_GenerateKey, then
SIGKILL): the next `trent serve` must start and work, or stop with exactly one line on stderr.

Every loop is bounded by a count and a time. Exit status 0 when nothing acknowledged was lost and every check held.

    crash_harness.py --token softhsm2 --cycles 50 --seconds-per-cycle 4 --seed 1 --binary .build/debug/trent
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import random
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "Tests" / "e2e"))

import boto3  # noqa: E402
import botocore.session  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import BotoCoreError, ClientError  # noqa: E402

import trent_e2e  # noqa: E402
from trent_e2e import ACCOUNT_ID, REGION, TrentServer, audit_record_files, free_port, _port_open  # noqa: E402

TOKENS = ("softhsm2", "nss-softoken")
ROOT_ARN = f"arn:aws:iam::{ACCOUNT_ID}:root"
GRANTEE = f"arn:aws:iam::{ACCOUNT_ID}:role/crash-grantee"
NONCE_BUDGET = 96          # per backing-key version: small, so keys move to new versions under load
NONCE_BLOCK = 8            # encryptions reserved durably at a time
ROTATION_LEASE = 600       # KeyManagementService.rotationClaimLease
DESTROYED_LOG = "destroyed key at the end of its deletion window"
ROTATED_LOG = "rotated key on schedule"
TORN_LOG = "Cutting off a torn last line of the audit trail"


class HarnessAbort(Exception):
    """The run cannot go on (the server does not restart, a time bound was hit)."""


def now() -> float:
    return time.time()


# --------------------------------------------------------------------------- the model of what was acknowledged

class Field:
    """A value that requests change: the last acknowledged value, and what requests whose outcome is unknown (their
    answer was lost in the kill) may have set. After a restart the server's value must be one of them."""

    __slots__ = ("value", "maybe", "known", "op")

    def __init__(self, value=None, known: bool = True):
        self.value = value
        self.maybe: list = []
        self.known = known  # False: not read yet (a default policy), anything is accepted once
        self.op = ""        # the operation of the request in flight

    def acceptable(self) -> list:
        return [self.value, *self.maybe]

    def accepts(self, actual) -> bool:
        return not self.known or any(actual == v for v in self.acceptable())

    def resolve(self, actual) -> None:
        self.value, self.maybe, self.known, self.op = actual, [], True, ""


def canonical_policy(text: str | None):
    return None if text is None else json.dumps(json.loads(text), sort_keys=True)


@dataclass
class KeyModel:
    key_id: str
    owner: int            # the worker that changes it; -1: the harness's own (crypto and rotating pools)
    kind: str             # general | crypto | rotating | doomed
    description: str
    state: Field
    policy: Field
    tags: dict = field(default_factory=dict)          # tag key -> Field (value None: absent)
    aliases: set = field(default_factory=set)         # acknowledged
    maybe_aliases: set = field(default_factory=set)
    grants: dict = field(default_factory=dict)        # acknowledged grant id -> name
    maybe_grants: set = field(default_factory=set)    # names
    unresolved: bool = False                          # a request on it had an unknown outcome this cycle
    deletion_due: float | None = None                 # doomed: the deletion date the harness wrote
    destroyed: bool = False
    rotations: int = 0                                # rotating: rotations seen so far
    rotation_due: float | None = None                 # rotating: the rotation date the harness wrote
    doom_batch: int | None = None
    db_rotations: int = 0                             # rotating: rotations in the store when rotation_due was written


@dataclass
class Ciphertext:
    key_id: str
    blob: bytes
    context: dict
    plaintext: bytes
    request_id: str
    op: str
    checks: int = 0


class Stats:
    def __init__(self):
        self.acked = Counter()         # operation -> acknowledged requests (load phase)
        self.acked_verify = Counter()  # operation -> acknowledged requests (checks)
        self.unknown = Counter()       # operation -> requests whose answer was lost
        self.refused = Counter()       # "Operation: ErrorCode" -> definite errors during load
        self.acked_errors = Counter()  # operation -> error answers (load and checks), whose records are checked too
        self.maybe_applied = Counter() # operation -> unknown-outcome requests found applied after the restart
        self.maybe_not_applied = Counter()
        self.kills = Counter()         # kill mode -> count
        self.notes = Counter()
        self.violations: list[str] = []
        self.lock = threading.Lock()

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)
        print(f"  VIOLATION: {text}", flush=True)


# --------------------------------------------------------------------------- clients

_SESSION: boto3.session.Session | None = None
_SESSION_LOCK = threading.Lock()


def make_client(server: TrentServer, connections: int = 4):
    """A KMS client without retries. Clients come from one session (its loaded service model is what makes a first
    client slow), one at a time: a session is not safe to share between threads; the clients are."""
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            core = botocore.session.Session()
            core.set_config_variable("config_file", os.devnull)
            core.set_config_variable("credentials_file", os.devnull)
            _SESSION = boto3.session.Session(botocore_session=core)
        return _SESSION.client(
            "kms", region_name=REGION, endpoint_url=server.endpoint,
            aws_access_key_id=server.access_key_id, aws_secret_access_key=server.secret_access_key,
            config=Config(retries={"total_max_attempts": 1}, parameter_validation=False, connect_timeout=3,
                          read_timeout=20, max_pool_connections=connections))


class Unknown(Exception):
    """The request's answer was lost (connection refused or cut, a timeout, a 5xx): it may or may not have happened."""

    def __init__(self, op: str, cause: str):
        super().__init__(f"{op}: {cause}")
        self.op = op


class Refused(Exception):
    """A definite error answer (4xx): the request did not happen."""

    def __init__(self, op: str, code: str, message: str, request_id: str | None = None):
        super().__init__(f"{op}: {code}: {message}")
        self.op, self.code, self.request_id = op, code, request_id


def call(kms, op: str, **params) -> dict:
    method = getattr(kms, "".join("_" + c.lower() if c.isupper() else c for c in op).lstrip("_"))
    try:
        return method(**params)
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error.response.get("Error", {}).get("Code", "?")
        if status >= 500:
            raise Unknown(op, f"HTTP {status} {code}") from None
        raise Refused(op, code, error.response.get("Error", {}).get("Message", ""),
                      error.response.get("ResponseMetadata", {}).get("RequestId")) from None
    except BotoCoreError as error:
        raise Unknown(op, type(error).__name__) from None


def request_id(response: dict) -> str:
    return response["ResponseMetadata"]["RequestId"]


def parse_blob(blob: bytes) -> tuple[int, str, int, bytes]:
    """(format version, key id, backing-key version, IV) of a ciphertext blob (design.md §3)."""
    if len(blob) < 1 + 16 + 4 + 12 + 16:
        raise ValueError(f"blob of {len(blob)} bytes is too short")
    key_id = str(uuid.UUID(bytes=blob[1:17]))
    (version,) = struct.unpack(">I", blob[17:21])
    return blob[0], key_id, version, blob[21:33]


# --------------------------------------------------------------------------- the server

class CrashServer(TrentServer):
    """A TrentServer that can be killed with SIGKILL (the whole process group) and says why a start failed."""

    def __init__(self, data_dir: Path, token: str, binary: Path, port: int | None = None):
        super().__init__(data_dir, port=port, binary=binary)
        self.env["TRENT_HSM_EMBEDDED_TOKEN"] = token
        profiles = Path(binary).resolve().parent / "Config" / "hsm"
        if profiles.is_dir():
            self.env["TRENT_HSM_PROFILE_DIR"] = str(profiles)

    def start_or_abort(self) -> None:
        try:
            self.start()
        except BaseException as error:  # pytest.fail raises an OutcomeException (a BaseException)
            if isinstance(error, KeyboardInterrupt):
                raise
            raise HarnessAbort(f"the server did not start: {error}") from None

    def kill9(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        early = proc.poll()
        if early is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self._close_log()
        return early  # not None: the server had died before the kill

    def wait_port_free(self, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while _port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def run_cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binary), *args], cwd=self.data_dir, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


# --------------------------------------------------------------------------- the run on one token

class CrashRun:
    def __init__(self, args, token: str, workdir: Path):
        self.args = args
        self.token = token
        self.rng = random.Random(f"{args.seed}-{token}")
        self.workdir = workdir
        self.server = CrashServer(workdir / "data", token, Path(args.binary))
        self.server.env.update(
            TRENT_DELETION_SWEEP_SECONDS="1",
            TRENT_NONCE_BUDGET=str(NONCE_BUDGET),
            TRENT_NONCE_RESERVATION_BLOCK=str(NONCE_BLOCK),
            TRENT_AUDIT_RECORDS_PER_DIGEST="200",  # digests written under load too
            TRENT_AUDIT_ROTATE_BYTES=str(256 * 1024),  # rotations under load too, so kills land around them
        )
        self.stats = Stats()
        self.keys: dict[str, KeyModel] = {}
        self.keys_lock = threading.Lock()
        self.ciphertexts: list[Ciphertext] = []
        self.ct_lock = threading.Lock()
        self.acks: list[tuple[str, str, str | None]] = []  # (request id, operation, error code) not yet checked
        self.acks_lock = threading.Lock()
        self.acks_checked = 0
        self.trail_sequence = 0  # the last record check_trail read
        self.trail_ids: dict[str, tuple[str, str | None]] = {}
        self.trail_duplicates = 0
        self.iv_seen: dict[tuple[str, int], dict[bytes, str]] = defaultdict(dict)
        self.ivs_checked = 0
        self.unknown_keys: set[str] = set()     # listed keys no acknowledged request created
        self.crypto_pool: list[str] = []
        self.rotating_pool: list[str] = []
        self.counter = 0
        self.counter_lock = threading.Lock()
        self.verify_seconds = 3.0               # running estimate of restart + checks, to time due dates
        self.torn = Counter()
        self.sweep_kills = Counter()
        self.timeline: list[dict] = []
        self.cycles_done = 0
        self.just_destroyed: list[KeyModel] = []   # doomed keys found destroyed by this round of checks
        self.deadline = time.monotonic() + args.max_minutes * 60

    # ----------------------------------------------------------------- bookkeeping

    def next_n(self) -> int:
        with self.counter_lock:
            self.counter += 1
            return self.counter

    def vcall(self, kms, op: str, **params) -> dict:
        """A request of the checks (counted apart from the load)."""
        return self.call(kms, op, _verify=True, **params)

    def call(self, kms, op: str, _verify: bool = False, **params) -> dict:
        """One request; every answer that came back (a 200 or an AWS error) is acknowledged: its request id must
        have its record in the trail, with the operation's name and the error code if any."""
        try:
            response = call(kms, op, **params)
        except Refused as refused:
            if refused.request_id:
                with self.acks_lock:
                    self.acks.append((refused.request_id, op, refused.code))
                    self.stats.acked_errors[op] += 1
            raise
        with self.acks_lock:
            self.acks.append((request_id(response), op, None))
            (self.stats.acked_verify if _verify else self.stats.acked)[op] += 1
        return response

    def add_key(self, key: KeyModel) -> None:
        with self.keys_lock:
            self.keys[key.key_id] = key

    def live_keys(self) -> list[KeyModel]:
        with self.keys_lock:
            return [k for k in self.keys.values() if not k.destroyed]

    # ----------------------------------------------------------------- the load

    def worker(self, index: int, stop: threading.Event, seed: int, kms) -> None:
        rng = random.Random(seed)
        mine = [k for k in self.live_keys() if k.owner == index and k.kind == "general"]
        ops = [
            (self.op_encrypt, 30), (self.op_generate_data_key, 15), (self.op_decrypt, 4), (self.op_state, 10),
            (self.op_policy, 5), (self.op_grant, 5), (self.op_tag, 8), (self.op_alias, 5),
            (self.op_create_general, 4), (self.op_create_crypto, 1), (self.op_doom, 3),
        ]
        functions, weights = zip(*ops)
        for _ in range(100_000):  # bounded; the stop event ends it long before
            if stop.is_set():
                return
            op = rng.choices(functions, weights)[0]
            try:
                op(kms, rng, index, mine)
            except Unknown as lost:
                with self.stats.lock:
                    self.stats.unknown[lost.op] += 1
                return  # the server is gone (or answered 5xx): this worker waits for the restart
            except Refused as refused:
                with self.stats.lock:
                    self.stats.refused[f"{refused.op}: {refused.code}"] += 1
            except Exception:  # a harness bug: say so, keep the others going
                self.stats.violation(f"worker {index} failed: {traceback.format_exc(limit=3)}")
                return

    def pick_crypto_key(self, rng) -> str:
        pool = self.crypto_pool + self.rotating_pool
        return rng.choice(pool)

    def random_context(self, rng) -> dict:
        if rng.random() < 0.2:
            return {}
        return {f"k{i}": f"v{rng.randrange(10**6)}" for i in range(rng.randrange(1, 4))}

    def op_encrypt(self, kms, rng, index, mine):
        key_id = self.pick_crypto_key(rng)
        plaintext = rng.randbytes(rng.randrange(1, 512))
        context = self.random_context(rng)
        response = self.call(kms, "Encrypt", KeyId=key_id, Plaintext=plaintext, EncryptionContext=context)
        rid = request_id(response)
        with self.ct_lock:
            self.ciphertexts.append(Ciphertext(key_id, response["CiphertextBlob"], context, plaintext, rid, "Encrypt"))

    def op_generate_data_key(self, kms, rng, index, mine):
        key_id = self.pick_crypto_key(rng)
        context = self.random_context(rng)
        params = {"KeySpec": rng.choice(["AES_256", "AES_128"])} if rng.random() < 0.7 else {"NumberOfBytes": rng.randrange(1, 1025)}
        response = self.call(kms, "GenerateDataKey", KeyId=key_id, EncryptionContext=context, **params)
        rid = request_id(response)
        with self.ct_lock:
            self.ciphertexts.append(
                Ciphertext(key_id, response["CiphertextBlob"], context, response["Plaintext"], rid, "GenerateDataKey"))

    def op_decrypt(self, kms, rng, index, mine):
        with self.ct_lock:
            if not self.ciphertexts:
                return
            ct = self.ciphertexts[-rng.randrange(1, min(len(self.ciphertexts), 50) + 1)]
        response = self.call(kms, "Decrypt", CiphertextBlob=ct.blob, EncryptionContext=ct.context)
        if response["Plaintext"] != ct.plaintext:
            self.stats.violation(f"Decrypt during load of {ct.op} {ct.request_id} gave other bytes")

    def usable(self, mine, rng, states=("Enabled", "Disabled")) -> KeyModel | None:
        candidates = [k for k in mine if not k.unresolved and k.state.value in states and not k.state.maybe]
        return rng.choice(candidates) if candidates else None

    def change(self, key: KeyModel, fld: Field, new, op: str, kms, **params) -> dict | None:
        """Sends a request that sets `fld` to `new`; keeps the model right whatever happens to the answer."""
        fld.maybe.append(new)
        fld.op = op
        try:
            response = self.call(kms, op, **params)
        except Unknown:
            key.unresolved = True
            raise
        except Refused:
            fld.maybe.pop()
            raise
        fld.value, fld.maybe = new, []
        return response

    def op_state(self, kms, rng, index, mine):
        key = self.usable(mine, rng, ("Enabled", "Disabled", "PendingDeletion"))
        if key is None:
            return
        state = key.state.value
        if state == "PendingDeletion":
            self.change(key, key.state, "Disabled", "CancelKeyDeletion", kms, KeyId=key.key_id)
        elif rng.random() < 0.2:
            self.change(key, key.state, "PendingDeletion", "ScheduleKeyDeletion", kms,
                        KeyId=key.key_id, PendingWindowInDays=rng.randrange(7, 31))
        elif state == "Enabled":
            self.change(key, key.state, "Disabled", "DisableKey", kms, KeyId=key.key_id)
        else:
            self.change(key, key.state, "Enabled", "EnableKey", kms, KeyId=key.key_id)

    def op_policy(self, kms, rng, index, mine):
        key = self.usable(mine, rng)
        if key is None:
            return
        policy = trent_e2e.policy_json(
            trent_e2e.root_statement(ACCOUNT_ID),
            trent_e2e.allow("kms:DescribeKey", principal=GRANTEE, sid=f"crash{self.next_n()}"))
        self.change(key, key.policy, canonical_policy(policy), "PutKeyPolicy", kms,
                    KeyId=key.key_id, PolicyName="default", Policy=policy)

    def op_grant(self, kms, rng, index, mine):
        key = self.usable(mine, rng, ("Enabled",))
        if key is None:
            return
        name = f"crash-grant-{self.next_n()}"
        key.maybe_grants.add(name)
        try:
            response = self.call(kms, "CreateGrant", KeyId=key.key_id, GranteePrincipal=GRANTEE, Name=name,
                            Operations=rng.sample(["Encrypt", "Decrypt", "GenerateDataKey", "DescribeKey"], 2))
        except Unknown:
            key.unresolved = True
            raise
        except Refused:
            key.maybe_grants.discard(name)
            raise
        key.maybe_grants.discard(name)
        key.grants[response["GrantId"]] = name

    def op_tag(self, kms, rng, index, mine):
        key = self.usable(mine, rng)
        if key is None:
            return
        tag_key = f"t{rng.randrange(4)}"
        fld = key.tags.setdefault(tag_key, Field(None))
        if fld.value is not None and rng.random() < 0.3:
            self.change(key, fld, None, "UntagResource", kms, KeyId=key.key_id, TagKeys=[tag_key])
        else:
            value = f"v{self.next_n()}"
            self.change(key, fld, value, "TagResource", kms, KeyId=key.key_id, Tags=[{"TagKey": tag_key, "TagValue": value}])

    def op_alias(self, kms, rng, index, mine):
        key = self.usable(mine, rng)
        if key is None or len(key.aliases) >= 3:
            return
        name = f"alias/crash-{self.next_n()}-{uuid.uuid4().hex[:6]}"
        key.maybe_aliases.add(name)
        try:
            response = self.call(kms, "CreateAlias", AliasName=name, TargetKeyId=key.key_id)
        except Unknown:
            key.unresolved = True
            raise
        except Refused:
            key.maybe_aliases.discard(name)
            raise
        key.maybe_aliases.discard(name)
        key.aliases.add(name)

    def create_key(self, kms, owner: int, kind: str) -> KeyModel:
        description = f"crash {kind} {self.next_n()}"
        tags = {"owner": Field(f"w{owner}")}
        response = self.call(kms, "CreateKey", Description=description, Tags=[{"TagKey": "owner", "TagValue": f"w{owner}"}])
        key = KeyModel(response["KeyMetadata"]["KeyId"], owner, kind, description, Field("Enabled"), Field(None, known=False), tags)
        self.add_key(key)
        return key

    def op_create_general(self, kms, rng, index, mine):
        if len(mine) >= self.args.keys_per_worker:
            return
        mine.append(self.create_key(kms, index, "general"))

    def op_create_crypto(self, kms, rng, index, mine):
        if len(self.crypto_pool) >= 12:
            return
        key = self.create_key(kms, -1, "crypto")
        self.crypto_pool.append(key.key_id)

    def op_doom(self, kms, rng, index, mine):
        """A key with an alias and a tag, scheduled for deletion: the harness later makes it due (the sweep)."""
        with self.keys_lock:
            waiting = sum(1 for k in self.keys.values() if k.kind == "doomed" and not k.destroyed)
        if waiting >= 40:
            return
        key = self.create_key(kms, index, "doomed")
        name = f"alias/doomed-{self.next_n()}"
        key.maybe_aliases.add(name)
        try:
            response = self.call(kms, "CreateAlias", AliasName=name, TargetKeyId=key.key_id)
        except Unknown:
            key.unresolved = True
            raise
        except Refused:
            key.maybe_aliases.discard(name)
            raise
        key.maybe_aliases.discard(name)
        key.aliases.add(name)
        fld = key.tags.setdefault("doom", Field(None))
        self.change(key, fld, "yes", "TagResource", kms, KeyId=key.key_id, Tags=[{"TagKey": "doom", "TagValue": "yes"}])
        self.change(key, key.state, "PendingDeletion", "ScheduleKeyDeletion", kms, KeyId=key.key_id, PendingWindowInDays=7)

    # ----------------------------------------------------------------- setup

    def setup(self) -> None:
        kms = make_client(self.server)
        for _ in range(3):
            self.crypto_pool.append(self.create_key(kms, -1, "crypto").key_id)
        for _ in range(self.args.rotating_keys):
            key = self.create_key(kms, -1, "rotating")
            response = self.call(kms, "EnableKeyRotation", KeyId=key.key_id, RotationPeriodInDays=90)
            self.rotating_pool.append(key.key_id)
        for _ in range(3):
            self.op_doom(kms, self.rng, -1, [])

    # ----------------------------------------------------------------- one cycle

    def run(self) -> dict:
        started = time.monotonic()
        print(f"=== crash harness on {self.token}: {self.args.cycles} cycles, seed {self.args.seed}, "
              f"data folder {self.server.data_dir}", flush=True)
        mode = self.args.kill_modes[0] if self.args.kill_modes[0] == "random" else "random"
        aborted = None
        cycle = 0
        try:
            self.server.start_or_abort()
            self.setup()
            for cycle in range(self.args.cycles):
                if time.monotonic() > self.deadline:
                    raise HarnessAbort(f"the time bound of {self.args.max_minutes} minutes was reached after {cycle} cycles")
                due_at = None
                if mode != "random":
                    # A batch of deletions (or rotations) due a moment into this load phase: stop the server
                    # (SIGTERM, which must drain cleanly), write the dates, start it again.
                    status = self.server.stop()
                    if status != 0:
                        self.stats.violation(f"cycle {cycle}: SIGTERM stop exited with status {status}")
                    due_at = self.edit_due_dates(mode)
                    self.server.wait_port_free()
                    self.server.start_or_abort()
                self.current_mode = mode
                record = self.cycle(cycle, mode, due_at)
                self.timeline.append(record)
                mode = self.after_kill(cycle)
                t0 = time.monotonic()
                self.server.wait_port_free()
                self.server.start_or_abort()
                self.verify_after_restart(cycle, record)
                self.cycles_done += 1
                self.verify_seconds = 0.5 * self.verify_seconds + 0.5 * (time.monotonic() - t0)
            self.final_checks()
        except HarnessAbort as error:
            aborted = str(error)
            self.stats.violation(aborted)
        finally:
            try:
                self.server.stop()
            except Exception:
                pass
        return self.summary(time.monotonic() - started, self.cycles_done, aborted)

    def cycle(self, cycle: int, mode: str, due_at: float | None) -> dict:
        stop = threading.Event()
        seeds = [self.rng.randrange(2**32) for _ in range(self.args.threads)]
        for key in self.live_keys():
            key.unresolved = False
        log_offset = self.server.log_size()
        clients = [make_client(self.server) for _ in range(self.args.threads)]
        threads = [threading.Thread(target=self.worker, args=(i, stop, seeds[i], clients[i]), daemon=True)
                   for i in range(self.args.threads)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        acked_before = sum(self.stats.acked.values())
        if mode == "random" or due_at is None:
            delay = self.rng.uniform(0.2, self.args.seconds_per_cycle)
            time.sleep(delay)
            killed_by = "random"
        else:
            # Kill right after the server logs the first key of the due batch destroyed (or rotated): mid-sweep.
            marker = (DESTROYED_LOG if mode == "sweep-delete" else ROTATED_LOG).encode()
            limit = max(0.0, due_at - now()) + self.args.seconds_per_cycle + 3
            killed_by = f"{mode}, timed out"
            seen = b""
            with open(self.server.log_path, "rb") as log:
                log.seek(log_offset)
                while time.monotonic() - t0 < limit:
                    seen = seen[-200:] + log.read()
                    if marker in seen:
                        # Up to 30 ms more: the kill falls anywhere in the next key's destruction or rotation.
                        time.sleep(self.rng.uniform(0, 0.030))
                        killed_by = mode
                        break
                    time.sleep(0.002)
        died_early = self.server.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=30)
            if t.is_alive():
                self.stats.violation("a client thread did not stop within 30 s of the kill")
        elapsed = time.monotonic() - t0
        self.stats.kills[killed_by] += 1
        if died_early is not None:
            self.stats.violation(f"cycle {cycle}: the server died by itself (status {died_early}) before the kill")
        acked = sum(self.stats.acked.values()) - acked_before
        print(f"cycle {cycle:3d}: kill {killed_by:<24} after {elapsed:5.2f} s, {acked:5d} requests acknowledged", flush=True)
        return {"cycle": cycle, "kill": killed_by, "seconds": round(elapsed, 2), "acknowledged": acked}

    # ----------------------------------------------------------------- after the kill, before the restart

    def audit_verify(self) -> tuple[int, dict | None, str]:
        proc = self.server.run_cli("audit", "verify")
        try:
            out = json.loads(proc.stdout)
        except ValueError:
            out = None
        return proc.returncode, out, proc.stderr.strip()

    def torn_tails(self) -> dict[str, int]:
        """The trail files the kill left ending without a newline, with the number of their torn line."""
        torn = {}
        for name in ("records.jsonl", "digests.jsonl"):
            path = self.server.data_dir / "audit" / name
            data = path.read_bytes() if path.exists() else b""
            if data and not data.endswith(b"\n"):
                torn[name] = data.count(b"\n") + 1
        return torn

    def check_dead_trail(self, cycle: int, torn: dict[str, int]) -> None:
        """`trent audit verify` on the killed server's trail (run when the kill left a torn line; otherwise the trail is
        what the restart continues, and the check after the restart covers it): exactly the torn lines reported."""
        rc, out, err = self.audit_verify()
        if out is None:
            self.stats.violation(f"cycle {cycle}: trent audit verify after the kill printed no report (status {rc}): {err}")
            return
        expected = sorted(f"{name} line {line}: incomplete last line" for name, line in torn.items())
        problems = sorted(out["Problems"])
        if rc != 1 or len(problems) != len(expected) or not all(p.startswith(e) for p, e in zip(problems, expected)):
            self.stats.violation(f"cycle {cycle}: the kill left torn lines {torn}; verify said status {rc}, {problems}")
        else:
            self.torn["left by a kill, reported exactly"] += len(torn)

    def inject_torn_line(self, cycle: int) -> None:
        """Writes half a record (no newline) at the end of records.jsonl, or of digests.jsonl: what a write cut by
        the kill leaves. verify must report exactly that line; the restart must cut it off and say so."""
        name = "records.jsonl" if self.rng.random() < 0.75 else "digests.jsonl"
        path = self.server.data_dir / "audit" / name
        data = path.read_bytes() if path.exists() else b""
        lines = data.split(b"\n")
        complete = lines[:-1] if data.endswith(b"\n") else lines[:-1]
        if not complete:
            return
        template = complete[-1]
        torn = template[: self.rng.randrange(1, len(template))]
        with open(path, "ab") as f:
            f.write(torn)
        rc, out, err = self.audit_verify()
        expected = f"{name} line {len(complete) + 1}: incomplete last line"
        problems = (out or {}).get("Problems", [])
        if rc != 1 or len(problems) != 1 or not problems[0].startswith(expected):
            self.stats.violation(f"cycle {cycle}: a torn line written into {name} was reported as {problems} (status {rc}, {err})")
        else:
            self.torn[f"injected into {name}, reported exactly"] += 1

    def check_store(self, cycle: int) -> None:
        db = sqlite3.connect(self.server.data_dir / "trent.sqlite", timeout=30)
        try:
            integrity = db.execute("PRAGMA integrity_check").fetchall()
            if integrity != [("ok",)]:
                self.stats.violation(f"cycle {cycle}: SQLite integrity_check after the kill: {integrity[:5]}")
            bad_versions = db.execute(
                "SELECT k.key_id, k.current_version, MAX(b.version) FROM keys k JOIN backing_keys b ON b.key_id = k.key_id "
                "GROUP BY k.key_id HAVING k.current_version != MAX(b.version)").fetchall()
            if bad_versions:
                self.stats.violation(f"cycle {cycle}: keys whose current version is not their newest: {bad_versions[:5]}")
            for table in ("backing_keys", "aliases", "tags", "grants"):
                orphans = db.execute(
                    f"SELECT COUNT(*) FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM keys k WHERE k.key_id = t.key_id)").fetchone()[0]
                if orphans:
                    self.stats.violation(f"cycle {cycle}: {orphans} rows of {table} outlived their key")
        finally:
            db.close()

    def edit_due_dates(self, mode: str) -> float | None:
        """While the server is down: makes scheduled deletions and rotations come due during the next load phase.
        sweep-delete / sweep-rotate: every waiting doomed key (every rotating key) at one moment, just after the start;
        random (at the kill, before the restart and its checks): some of them at random moments."""
        restart_and_checks = self.verify_seconds + 0.5
        db = sqlite3.connect(self.server.data_dir / "trent.sqlite", timeout=30)
        due_at = None
        try:
            doomed = [k for k in self.live_keys() if k.kind == "doomed" and k.state.value == "PendingDeletion"
                      and not k.state.maybe and k.deletion_due is None and not k.unresolved]
            # Not a key whose last due date is still to be checked (a claim the kill cut must be seen waiting out its lease).
            rotating = [self.keys[k] for k in self.rotating_pool if self.keys[k].rotation_due is None]
            with db:
                if mode == "sweep-delete":
                    due_at = now() + self.rng.uniform(0.8, 1.8)
                    batch = doomed
                elif mode == "sweep-rotate":
                    due_at = now() + self.rng.uniform(0.8, 1.8)
                    batch = rotating
                else:
                    batch = self.rng.sample(doomed, len(doomed) // 2) + self.rng.sample(rotating, len(rotating) // 3)
                for key in batch:
                    when = due_at if due_at is not None else now() + restart_and_checks + self.rng.uniform(0, self.args.seconds_per_cycle)
                    if key.kind == "doomed":
                        key.deletion_due = when
                        key.doom_batch = len(self.timeline) if mode == "sweep-delete" else None  # the next cycle
                        db.execute("UPDATE keys SET deletion_date = ? WHERE key_id = ?", (when, key.key_id))
                    else:
                        key.rotation_due = when
                        (key.db_rotations,) = db.execute(
                            "SELECT COUNT(*) FROM backing_keys WHERE key_id = ? AND rotation_type IS NOT NULL", (key.key_id,)).fetchone()
                        db.execute("UPDATE keys SET next_rotation_date = ? WHERE key_id = ?", (when, key.key_id))
        finally:
            db.close()
        return due_at

    def after_kill(self, cycle: int) -> str:
        """While the killed server is down: the trail, the store, how far background work had come; returns the next
        cycle's kill mode."""
        torn = self.torn_tails()
        if torn:
            self.check_dead_trail(cycle, torn)
        elif self.args.torn_every and cycle % self.args.torn_every == self.args.torn_every - 1:
            self.inject_torn_line(cycle)
            torn = True
        self.expect_torn_repair = bool(torn)
        self.check_store(cycle)
        self.classify_background_at_kill(cycle, self.current_mode)
        doomed_waiting = sum(1 for k in self.live_keys() if k.kind == "doomed" and k.deletion_due is None
                             and k.state.value == "PendingDeletion" and not k.state.maybe)
        mode = self.args.kill_modes[(cycle + 1) % len(self.args.kill_modes)]
        if mode == "sweep-delete" and not doomed_waiting or mode == "sweep-rotate" and not self.rotating_pool:
            mode = "random"
        self.restart_log_offset = self.server.log_size()
        if mode == "random":
            self.edit_due_dates(mode)
        return mode

    # ----------------------------------------------------------------- after the restart

    def verify_after_restart(self, cycle: int, record: dict) -> None:
        steps = {}
        t0 = last = time.monotonic()

        def step(name: str) -> None:
            nonlocal last
            steps[name] = round(time.monotonic() - last, 2)
            last = time.monotonic()

        rc, out, err = self.audit_verify()
        if rc != 0 or not out or not out["Intact"]:
            self.stats.violation(f"cycle {cycle}: trent audit verify after the restart: status {rc}, {out}, {err}")
        if self.expect_torn_repair:
            if TORN_LOG in self.server.log_since(self.restart_log_offset):
                self.torn["cut off at the restart, logged"] += 1
            else:
                self.stats.violation(f"cycle {cycle}: the restart did not log cutting off the torn line")
        step("audit verify")
        self.check_trail(cycle)
        step("trail")
        kms = make_client(self.server)
        self.check_keys(cycle, kms)
        step("keys")
        self.check_ciphertexts(cycle, sample=self.args.recheck_sample)
        self.check_ivs(cycle)
        step("ciphertexts")
        self.check_background_work(cycle, kms)
        step("background")
        record["check_seconds"] = round(time.monotonic() - t0, 2)
        record["check_steps"] = steps

    def check_trail(self, cycle: int) -> None:
        """Every acknowledged request id has its record (same operation, no error) in the trail's records files."""
        files = audit_record_files(self.server.data_dir / "audit")
        for index, path in enumerate(files):
            following = files[index + 1].name if index + 1 < len(files) else ""
            if following.startswith("records-") and int(following[len("records-"):-len(".jsonl")]) <= self.trail_sequence + 1:
                continue  # read already: the file after it starts at or before the next record to read
            data = path.read_bytes()
            for line in data[: data.rfind(b"\n") + 1].splitlines():
                entry = json.loads(line)
                if entry["sequence"] <= self.trail_sequence:
                    continue
                self.trail_sequence = entry["sequence"]
                record = entry["record"]
                rid = record.get("requestID")
                if rid in self.trail_ids:
                    self.trail_duplicates += 1
                self.trail_ids[rid] = (record.get("eventName"), record.get("errorCode"))
        with self.acks_lock:
            pending, self.acks = self.acks, []
        missing = []
        for rid, op, code in pending:
            found = self.trail_ids.get(rid)
            if found is None:
                missing.append((rid, op))
            elif found != (op, code):
                self.stats.violation(f"cycle {cycle}: the record of {op} {rid} ({code or 'answered 200'}) says {found}")
        self.acks_checked += len(pending) - len(missing)
        if missing:
            self.stats.violation(f"cycle {cycle}: {len(missing)} acknowledged requests have no audit record, e.g. {missing[:3]}")
        if self.trail_duplicates:
            self.stats.violation(f"cycle {cycle}: {self.trail_duplicates} request ids appear twice in the trail")
            self.trail_duplicates = 0

    def paginate(self, kms, op: str, member: str, **params) -> list:
        items, marker = [], None
        for _ in range(10_000):
            limit = 1000 if op in ("ListKeys", "ListKeyRotations") else 100
            response = self.vcall(kms, op, Limit=limit, **({"Marker": marker} if marker else {}), **params)
            items += response[member]
            if not response.get("Truncated"):
                return items
            marker = response["NextMarker"]
        raise HarnessAbort(f"{op} did not end")

    def check_keys(self, cycle: int, kms) -> None:
        listed = {k["KeyId"] for k in self.paginate(kms, "ListKeys", "Keys")}
        alias_targets = {a["AliasName"]: a.get("TargetKeyId") for a in self.paginate(kms, "ListAliases", "Aliases")
                         if not a["AliasName"].startswith("alias/aws/")}
        with self.keys_lock:
            models = list(self.keys.values())
        known = {k.key_id for k in models}
        extra = listed - known - self.unknown_keys
        if extra:
            # Keys whose CreateKey answer was lost in a kill, found created: allowed.
            self.unknown_keys |= extra
            self.stats.maybe_applied["CreateKey (found created, id never acknowledged)"] += len(extra)
        for name, target in alias_targets.items():
            if target not in known and target not in self.unknown_keys:
                self.stats.violation(f"cycle {cycle}: alias {name} names {target}, which is not a key")
        shared = make_client(self.server, connections=2 * self.args.threads)

        def check(key: KeyModel) -> None:
            try:
                self.check_key(cycle, shared, key, listed, alias_targets)
            except Refused as error:
                if error.code == "NotFoundException" and key.kind == "doomed" and (key.deletion_due or now() + 1) <= now():
                    key.destroyed = True  # the sweep destroyed it while it was being checked
                    self.just_destroyed.append(key)
                else:
                    self.stats.violation(f"cycle {cycle}: checking {key.kind} key {key.key_id}: {error}")
            except Unknown as error:
                self.stats.violation(f"cycle {cycle}: checking {key.kind} key {key.key_id}: {error}")

        for key in models:
            if key.destroyed and key.key_id in listed:
                self.stats.violation(f"cycle {cycle}: destroyed key {key.key_id} is listed again")
        with concurrent.futures.ThreadPoolExecutor(self.args.threads) as pool:
            list(pool.map(check, [k for k in models if not k.destroyed]))

    def check_key(self, cycle: int, kms, key: KeyModel, listed: set, alias_targets: dict) -> None:
        where = f"cycle {cycle}: {key.kind} key {key.key_id}"
        try:
            response = self.vcall(kms, "DescribeKey", KeyId=key.key_id)
        except Refused as refused:
            if refused.code != "NotFoundException":
                raise
            if key.kind == "doomed" and key.deletion_due is not None and key.deletion_due <= now():
                # Destroyed by the sweep (perhaps since the listing above): that it went whole, with its aliases and
                # tags, is checked by check_background_work on fresh listings.
                key.destroyed = True
                self.just_destroyed.append(key)
                return
            self.stats.violation(f"{where}: LOST (DescribeKey: NotFoundException); acknowledged state {key.state.acceptable()}")
            key.destroyed = True
            return
        metadata = response["KeyMetadata"]
        if key.key_id not in listed:
            self.stats.violation(f"{where}: described but not listed by ListKeys")
        if metadata["Description"] != key.description:
            self.stats.violation(f"{where}: description {metadata['Description']!r}, expected {key.description!r}")
        self.resolve(where, "state", key.state, metadata["KeyState"])
        if metadata["KeyState"] == "PendingDeletion" and "DeletionDate" not in metadata:
            self.stats.violation(f"{where}: PendingDeletion without a DeletionDate")
        # Aliases: every acknowledged one names the key; one in flight may exist; nothing else does.
        actual_aliases = {name for name, target in alias_targets.items() if target == key.key_id}
        for name in key.aliases - actual_aliases:
            self.stats.violation(f"{where}: LOST alias {name} (CreateAlias acknowledged)")
        for name in actual_aliases - key.aliases:
            if name in key.maybe_aliases:
                self.stats.maybe_applied["CreateAlias"] += 1
                key.aliases.add(name)
            else:
                self.stats.violation(f"{where}: alias {name} that no request created")
        if key.maybe_aliases - actual_aliases:
            self.stats.maybe_not_applied["CreateAlias"] += len(key.maybe_aliases - actual_aliases)
        key.maybe_aliases = set()
        # Tags.
        response = self.vcall(kms, "ListResourceTags", KeyId=key.key_id, Limit=50)
        actual_tags = {t["TagKey"]: t["TagValue"] for t in response["Tags"]}
        for tag_key in set(actual_tags) - set(key.tags):
            self.stats.violation(f"{where}: tag {tag_key}={actual_tags[tag_key]} that no request set")
        for tag_key, fld in key.tags.items():
            self.resolve(where, f"tag {tag_key}", fld, actual_tags.get(tag_key))
        # Policy (compared as JSON).
        response = self.vcall(kms, "GetKeyPolicy", KeyId=key.key_id, PolicyName="default")
        self.resolve(where, "policy", key.policy, canonical_policy(response["Policy"]))
        # Grants: every acknowledged one is there; one in flight may be; nothing else.
        if key.grants or key.maybe_grants:
            grants = self.paginate(kms, "ListGrants", "Grants", KeyId=key.key_id)
            actual = {g["GrantId"]: g.get("Name") for g in grants}
            for grant_id, name in key.grants.items():
                if grant_id not in actual:
                    self.stats.violation(f"{where}: LOST grant {grant_id} ({name}; CreateGrant acknowledged)")
            for grant_id, name in actual.items():
                if grant_id in key.grants:
                    continue
                if name in key.maybe_grants:
                    self.stats.maybe_applied["CreateGrant"] += 1
                    key.grants[grant_id] = name
                    key.maybe_grants.discard(name)
                else:
                    self.stats.violation(f"{where}: grant {grant_id} ({name}) that no request created")
            if key.maybe_grants:
                self.stats.maybe_not_applied["CreateGrant"] += len(key.maybe_grants)
            key.maybe_grants = set()
        # Rotating keys: rotation stays on, and rotations are never lost.
        if key.kind == "rotating":
            response = self.vcall(kms, "GetKeyRotationStatus", KeyId=key.key_id)
            if not response["KeyRotationEnabled"]:
                self.stats.violation(f"{where}: LOST EnableKeyRotation")
            rotations = self.paginate(kms, "ListKeyRotations", "Rotations", KeyId=key.key_id)
            if len(rotations) < key.rotations:
                self.stats.violation(f"{where}: {len(rotations)} rotations listed, {key.rotations} seen before")
            key.rotations = len(rotations)
        key.unresolved = False

    def resolve(self, where: str, what: str, fld: Field, actual) -> None:
        """The server's value must be the acknowledged one or the one a request in flight asked for."""
        if not fld.accepts(actual):
            self.stats.violation(f"{where}: LOST {what}: {actual!r}, acknowledged {fld.value!r} (in flight: {fld.maybe!r})")
        elif fld.maybe and fld.known:
            applied = actual in fld.maybe and actual != fld.value
            (self.stats.maybe_applied if applied else self.stats.maybe_not_applied)[fld.op] += 1
        fld.resolve(actual)

    def check_ciphertexts(self, cycle: int, sample: int | None) -> None:
        """Decrypts every ciphertext and data key not checked yet, and `sample` older ones (all with None)."""
        with self.ct_lock:
            items = list(self.ciphertexts)
        fresh = [c for c in items if c.checks == 0]
        old = [c for c in items if c.checks > 0]
        if sample is not None and len(old) > sample:
            old = self.rng.sample(old, sample)
        todo = fresh + old
        shared = make_client(self.server, connections=2 * self.args.threads)

        def check(ct: Ciphertext) -> None:
            try:
                response = self.vcall(shared, "Decrypt", CiphertextBlob=ct.blob, EncryptionContext=ct.context)
            except (Unknown, Refused) as error:
                self.stats.violation(f"cycle {cycle}: LOST {ct.op} {ct.request_id}: Decrypt: {error}")
                return
            if response["Plaintext"] != ct.plaintext:
                self.stats.violation(f"cycle {cycle}: LOST {ct.op} {ct.request_id}: decrypts to other bytes")
            if response["KeyId"] != trent_e2e.key_arn(ct.key_id):
                self.stats.violation(f"cycle {cycle}: {ct.op} {ct.request_id} decrypts under {response['KeyId']}")
            ct.checks += 1

        with concurrent.futures.ThreadPoolExecutor(self.args.threads) as pool:
            list(pool.map(check, todo))
        self.decrypt_checks = getattr(self, "decrypt_checks", 0) + len(todo)

    def check_ivs(self, cycle: int) -> None:
        """No two acknowledged ciphertexts under one backing-key version share an IV; none holds more than the budget."""
        with self.ct_lock:
            items = self.ciphertexts[self.ivs_checked:]
            self.ivs_checked = len(self.ciphertexts)
        for ct in items:
            try:
                fmt, key_id, version, iv = parse_blob(ct.blob)
            except ValueError as error:
                self.stats.violation(f"cycle {cycle}: {ct.op} {ct.request_id}: {error}")
                continue
            if fmt != 1 or key_id != ct.key_id:
                self.stats.violation(f"cycle {cycle}: {ct.op} {ct.request_id}: blob format {fmt}, key {key_id}, expected {ct.key_id}")
            seen = self.iv_seen[(key_id, version)]
            if iv in seen:
                self.stats.violation(f"cycle {cycle}: IV REUSED under {key_id} version {version}: {seen[iv]} and {ct.request_id}")
            seen[iv] = ct.request_id
            if len(seen) > NONCE_BUDGET:
                self.stats.violation(f"cycle {cycle}: {len(seen)} ciphertexts under {key_id} version {version}, budget {NONCE_BUDGET}")

    def classify_background_at_kill(self, cycle: int, mode: str) -> None:
        """Reads the killed server's store: how far the sweep of this cycle's due batch had come."""
        db = sqlite3.connect(self.server.data_dir / "trent.sqlite", timeout=30)
        try:
            if mode == "sweep-delete":
                batch = [k for k in self.keys.values() if k.doom_batch == cycle]
                remaining = sum(1 for k in batch if db.execute("SELECT 1 FROM keys WHERE key_id = ?", (k.key_id,)).fetchone())
                done = len(batch) - remaining
                where = "midway" if 0 < done < len(batch) else ("before its first key" if done == 0 else "after its last key")
                self.sweep_kills[f"deletion sweep killed {where}"] += 1
                self.timeline[-1]["sweep"] = f"{done} of {len(batch)} keys destroyed at the kill"
            elif mode == "sweep-rotate":
                states = Counter()
                for key_id in self.rotating_pool:
                    key = self.keys[key_id]
                    if key.rotation_due is None:
                        continue
                    (next_date,) = db.execute("SELECT next_rotation_date FROM keys WHERE key_id = ?", (key_id,)).fetchone()
                    (rotations,) = db.execute(
                        "SELECT COUNT(*) FROM backing_keys WHERE key_id = ? AND rotation_type IS NOT NULL", (key_id,)).fetchone()
                    if abs(next_date - key.rotation_due) < 0.01:
                        states["not started"] += 1
                    elif next_date - now() <= ROTATION_LEASE + 5:
                        if rotations == key.db_rotations:
                            states["claimed, cut by the kill"] += 1
                        else:
                            # The new version without its next date: the key would rotate again when the lease ends.
                            self.stats.violation(f"cycle {cycle}: rotating key {key_id} rotated at the kill, but its next date "
                                                 f"is still the claim's lease")
                    elif rotations == key.db_rotations:
                        self.stats.violation(f"cycle {cycle}: rotating key {key_id} rescheduled at the kill without a rotation")
                    else:
                        states["rotated"] += 1
                summary = ", ".join(f"{n} {what}" for what, n in sorted(states.items()))
                self.timeline[-1]["sweep"] = summary
                for what, n in states.items():
                    self.sweep_kills[f"rotation at the kill: {what}"] += n
        finally:
            db.close()

    def check_background_work(self, cycle: int, kms) -> None:
        """The next start finishes what the kill interrupted: every key past its deletion date is destroyed whole, every
        key past its rotation date is rotated (or waits out the claim lease of a rotation the kill cut)."""
        deadline = time.monotonic() + 20
        # Keys destroyed in earlier rounds are checked by check_keys (never listed again).
        due_doomed = [k for k in self.keys.values() if k.kind == "doomed" and k.deletion_due is not None
                      and k.deletion_due <= now() and (not k.destroyed or k in self.just_destroyed)]
        for key in due_doomed:
            while not key.destroyed and time.monotonic() < deadline:
                try:
                    response = self.vcall(kms, "DescribeKey", KeyId=key.key_id)
                    time.sleep(0.2)
                except Refused as refused:
                    if refused.code != "NotFoundException":
                        raise
                    key.destroyed = True
            if not key.destroyed:
                self.stats.violation(f"cycle {cycle}: doomed key {key.key_id} is still there 20 s after the restart, "
                                     f"{now() - key.deletion_due:.0f} s past its deletion date")
        gone = {k.key_id: k for k in due_doomed + self.just_destroyed if k.destroyed}.values()
        self.just_destroyed = []
        if gone:
            # Destroyed whole: not listed, no alias names it, no tags (fresh listings, after the sweep).
            listed = {k["KeyId"] for k in self.paginate(kms, "ListKeys", "Keys")}
            names = {a["AliasName"]: a.get("TargetKeyId") for a in self.paginate(kms, "ListAliases", "Aliases")}
            for key in gone:
                if key.key_id in listed:
                    self.stats.violation(f"cycle {cycle}: destroyed key {key.key_id} is still listed")
                for name in [n for n, target in names.items() if target == key.key_id] + sorted(key.aliases & set(names)):
                    self.stats.violation(f"cycle {cycle}: alias {name} of destroyed key {key.key_id} is still there")
                try:
                    self.vcall(kms, "ListResourceTags", KeyId=key.key_id)
                    self.stats.violation(f"cycle {cycle}: destroyed key {key.key_id} still has tags")
                except Refused as refused:
                    if refused.code != "NotFoundException":
                        self.stats.violation(f"cycle {cycle}: ListResourceTags of destroyed key {key.key_id}: {refused}")
        for key_id in self.rotating_pool:
            key = self.keys[key_id]
            if key.rotation_due is None or key.rotation_due > now():
                continue
            next_date = None
            while time.monotonic() < deadline:
                response = self.vcall(kms, "GetKeyRotationStatus", KeyId=key_id)
                next_date = response.get("NextRotationDate")
                if next_date is not None and next_date.timestamp() > now():
                    break
                time.sleep(0.2)
            else:
                self.stats.violation(f"cycle {cycle}: rotating key {key_id} is still due 20 s after the restart")
                continue
            rotations = self.paginate(kms, "ListKeyRotations", "Rotations", KeyId=key_id)
            if len(rotations) > key.db_rotations:
                self.sweep_kills["scheduled rotation done by the next check"] += 1
            elif next_date.timestamp() - now() <= ROTATION_LEASE + 5:
                self.sweep_kills["scheduled rotation waiting out the claim lease of a cut one"] += 1
            else:
                self.stats.violation(f"cycle {cycle}: rotating key {key_id} was rescheduled without a rotation")
            key.rotations = len(rotations)
            key.rotation_due = None

    def final_checks(self) -> None:
        """A last restart after a graceful stop: every ciphertext decrypts, the trail is intact without a torn line."""
        self.check_ciphertexts(-1, sample=None)
        status = self.server.stop()
        if status != 0:
            self.stats.violation(f"SIGTERM stop exited with status {status}")
        rc, out, err = self.audit_verify()
        if rc != 0 or not out or not out["Intact"]:
            self.stats.violation(f"trent audit verify after the graceful stop: {rc} {out} {err}")
        self.final_trail = out
        self.server.start_or_abort()
        self.check_trail(-1)

    def summary(self, seconds: float, cycles: int, aborted: str | None) -> dict:
        s = self.stats
        return {
            "token": self.token,
            "seed": self.args.seed,
            "cycles": cycles,
            "seconds": round(seconds, 1),
            "threads": self.args.threads,
            "kills": dict(s.kills),
            "acknowledged": dict(sorted(s.acked.items())),
            "acknowledged_total": sum(s.acked.values()),
            "acknowledged_during_checks": sum(s.acked_verify.values()),
            "acknowledged_errors": dict(s.acked_errors),
            "audit_records_matched": self.acks_checked,
            "ciphertexts": len(self.ciphertexts),
            "decrypt_checks": getattr(self, "decrypt_checks", 0),
            "backing_key_versions_used": len(self.iv_seen),
            "keys": Counter(k.kind for k in self.keys.values()),
            "doomed_destroyed": sum(1 for k in self.keys.values() if k.kind == "doomed" and k.destroyed),
            "lost_answers": dict(s.unknown),
            "in_flight_found_applied": dict(s.maybe_applied),
            "in_flight_found_not_applied": dict(s.maybe_not_applied),
            "refused_during_load": dict(s.refused),
            "torn_lines": dict(self.torn),
            "background": dict(self.sweep_kills),
            "losses": len([v for v in s.violations if "LOST" in v]),
            "violations": s.violations,
            "aborted": aborted,
            "timeline": self.timeline,
        }


# --------------------------------------------------------------------------- kills during token creation

FAULTS_POINTS = {
    # (function to hang in, which call of it): a SIGKILL while it hangs is a kill just before that call.
    "softhsm2": [("C_InitToken", 1), ("C_InitPIN", 1), ("C_GenerateKey", 1), ("C_GenerateKey", 2)],
    "nss-softoken": [("C_InitPIN", 1), ("C_GenerateKey", 1), ("C_GenerateKey", 2)],
}


def build_faults_module(out: Path) -> Path | None:
    library = out / "libtrent-pkcs11-faults.so"
    if library.exists():
        return library
    try:
        subprocess.run([str(REPO / "Tests" / "PKCS11Faults" / "build.sh"), str(out)], check=True, capture_output=True, timeout=120)
        return library
    except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as error:
        print(f"  (no fault module: {error}; the fixed kill points are skipped)", flush=True)
        return None


class InitKills:
    """Kills `trent token init` (and a first `trent serve`) on fresh data folders; the next `trent serve` must start
    and work, or stop with exactly one line on stderr."""

    def __init__(self, args, token: str, workdir: Path, stats: Stats):
        self.args, self.token, self.workdir, self.stats = args, token, workdir, stats
        self.rng = random.Random(f"{args.seed}-{token}-init")
        self.outcomes: Counter = Counter()
        self.lines: Counter = Counter()
        self.trial = 0

    def server(self) -> CrashServer:
        self.trial += 1
        folder = self.workdir / f"init-{self.trial}"
        return CrashServer(folder, self.token, Path(self.args.binary))

    def popen(self, server: CrashServer, args: list[str], env: dict | None = None) -> subprocess.Popen:
        """Runs a trent command with stdout and stderr in files (never a pipe a chatty server could fill)."""
        self.commands = getattr(self, "commands", 0) + 1
        base = server.data_dir / f"command-{self.commands}"
        out, err = open(f"{base}.out", "wb"), open(f"{base}.err", "wb")
        proc = subprocess.Popen([str(server.binary), *args], cwd=server.data_dir, env=env or server.env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        out.close()
        err.close()
        proc.err_path = Path(f"{base}.err")
        return proc

    @staticmethod
    def stderr(proc) -> str:
        return proc.err_path.read_text(errors="replace")

    @staticmethod
    def finish(proc, timeout: float = 60) -> None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def timed(self, command: str) -> float:
        server = self.server()
        t0 = time.monotonic()
        args = ["token", "init"] if command == "token init" else ["serve"]
        proc = self.popen(server, args)
        if command == "serve":
            while not _port_open(server.host, server.port) and time.monotonic() - t0 < 60 and proc.poll() is None:
                time.sleep(0.01)
            elapsed = time.monotonic() - t0
            proc.terminate()
        self.finish(proc)
        elapsed = time.monotonic() - t0 if command == "token init" else elapsed
        if proc.returncode != 0 and command == "token init":
            self.stats.violation(f"trent token init on a fresh folder failed: status {proc.returncode}")
        return elapsed

    def one_line(self, proc, what: str, command: str) -> bool:
        """A failed command said why in exactly one line on stderr (no backtrace)."""
        err = self.stderr(proc)
        lines = [line for line in err.splitlines() if line.strip()]
        if len(lines) == 1 and lines[0].startswith("trent: ") and "Fatal error" not in err:
            self.outcomes[f"{command} stopped with one line"] += 1
            self.lines[lines[0]] += 1
            return True
        self.stats.violation(f"{what}: {command} exited {proc.returncode} with {len(lines)} lines on stderr: {lines[-5:]}")
        return False

    def after(self, server: CrashServer, what: str) -> None:
        """Where the kill left the folder: every other trial runs `trent token init` again first (it completes the
        token, or says why in one line); then `trent serve` starts and works, or says why in one line."""
        if self.trial % 2:
            proc = self.popen(server, ["token", "init"])
            self.finish(proc)
            if proc.returncode == 0:
                self.outcomes["token init again completed"] += 1
            else:
                self.one_line(proc, what, "token init again")
        proc = self.popen(server, ["serve"])
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            if proc.poll() is not None:
                break
            if _port_open(server.host, server.port):
                break
            time.sleep(0.02)
        if proc.poll() is None and _port_open(server.host, server.port):
            try:
                kms = make_client(server)
                key_id = kms.create_key()["KeyMetadata"]["KeyId"]
                context = {"after": what}
                blob = kms.encrypt(KeyId=key_id, Plaintext=b"after the kill", EncryptionContext=context)["CiphertextBlob"]
                ok = kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"after the kill"
            except Exception as error:  # noqa: BLE001
                ok = False
                self.stats.violation(f"{what}: serve started but did not work: {error}")
            proc.terminate()
            self.finish(proc, 30)
            if ok:
                verify = server.run_cli("audit", "verify")
                if verify.returncode != 0:
                    self.stats.violation(f"{what}: audit verify after the start: {verify.stdout} {verify.stderr}")
                self.outcomes["serve started and worked"] += 1
            return
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            self.stats.violation(f"{what}: serve neither started nor exited within 60 s")
            return
        self.one_line(proc, what, "serve")

    def random_kills(self, command: str, count: int, duration: float) -> None:
        for _ in range(count):
            server = self.server()
            delay = self.rng.uniform(0, duration * 1.1)
            proc = self.popen(server, ["token", "init"] if command == "token init" else ["serve"])
            time.sleep(delay)
            finished = proc.poll() is not None
            if not finished:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            self.outcomes[f"{command} killed after {'it finished' if finished else 'a random delay'}"] += 1
            server.wait_port_free()
            self.after(server, f"{command} killed after {delay:.3f} s")

    def fixed_kills(self, library: Path, inside: int) -> None:
        """At each PKCS#11 call that makes the token: a kill while the call hangs (just before it), and `inside` kills
        0 to 10 ms after it began (the call is delayed 300 ms by the fault module, then runs; the kill comes at
        300 ms + that offset), which is where SoftHSM writes the token's files."""
        real = {"softhsm2": "/usr/lib/softhsm/libsofthsm2.so", "nss-softoken": "/usr/lib/x86_64-linux-gnu/libsoftokn3.so"}[self.token]
        for function, nth in FAULTS_POINTS[self.token]:
            for trial in range(1 + inside):
                offset = None if trial == 0 else self.rng.uniform(0, 0.010)
                server = self.server()
                control = server.data_dir / "faults.control"
                action = f"hang {function}" if offset is None else f"delay {function} 300ms"
                control.write_text(f"{action} every {nth}\n" if nth > 1 else f"{action} count 1\n")
                env = dict(server.env, TRENT_HSM_MODULE=str(library), TRENT_FAULTS_MODULE=real,
                           TRENT_FAULTS_CONTROL=str(control), TRENT_FAULTS_LOG="1")
                proc = self.popen(server, ["token", "init"], env=env)
                reached = False
                t0 = time.monotonic()
                while time.monotonic() - t0 < 30 and proc.poll() is None:
                    if f"{function}: sleeping" in self.stderr(proc):
                        reached = True
                        time.sleep(0.05 if offset is None else 0.3 + offset)
                        break
                    time.sleep(0.001)
                finished = proc.poll() is not None
                if not finished:
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                where = f"before {function} #{nth}" if offset is None else f"{offset * 1000:.1f} ms into {function} #{nth}"
                what = f"token init killed {where}"
                if not reached:
                    self.stats.violation(f"{what}: the call never came (status {proc.returncode}: {self.stderr(proc)[-400:]})")
                    continue
                self.outcomes[f"token init killed before {function} #{nth}" if offset is None else
                              f"token init killed inside {function} #{nth}" + (" (it had finished)" if finished else "")] += 1
                control.unlink()
                self.after(server, what)

    def run(self) -> dict:
        t0 = time.monotonic()
        print(f"=== kills during token creation on {self.token}", flush=True)
        init_time = self.timed("token init")
        serve_time = self.timed("serve")
        self.random_kills("token init", self.args.init_kills, init_time)
        self.random_kills("serve", max(1, self.args.init_kills // 2), serve_time)
        library = build_faults_module(self.workdir / "faults") if self.args.fixed_kill_points else None
        if library:
            self.fixed_kills(library, self.args.inside_kills)
        for outcome, n in sorted(self.outcomes.items()):
            print(f"  {n:3d} x {outcome}", flush=True)
        for line, n in sorted(self.lines.items()):
            print(f"  {n:3d} x one line: {line}", flush=True)
        return {"seconds": round(time.monotonic() - t0, 1), "token_init_seconds": round(init_time, 2),
                "first_serve_seconds": round(serve_time, 2), "outcomes": dict(self.outcomes), "one_line_reports": dict(self.lines)}


# --------------------------------------------------------------------------- main

def print_summary(result: dict) -> None:
    print(f"--- {result['token']}: {result['cycles']} cycles in {result['seconds']} s; kills {result['kills']}")
    print(f"    acknowledged: {result['acknowledged_total']} requests {result['acknowledged']}")
    print(f"    checks: {result['acknowledged_during_checks']} requests, {result['decrypt_checks']} decryptions of "
          f"{result['ciphertexts']} ciphertexts and data keys; {result['audit_records_matched']} request ids found in the trail; "
          f"{result['backing_key_versions_used']} backing-key versions, no IV twice")
    print(f"    answers lost in kills: {result['lost_answers']}; of those found applied: {result['in_flight_found_applied']}, "
          f"not applied: {result['in_flight_found_not_applied']}")
    print(f"    torn lines: {result['torn_lines']}; background work: {result['background']}; doomed keys destroyed: {result['doomed_destroyed']}")
    if result["refused_during_load"]:
        print(f"    refused during load (4xx): {result['refused_during_load']}")
    print(f"    losses: {result['losses']}, violations: {len(result['violations'])}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--token", choices=[*TOKENS, "both"], default="both")
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--seconds-per-cycle", type=float, default=4.0, help="longest load before the kill (random within)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--binary", default=os.environ.get("TRENT_BIN") or str(REPO / ".build" / "debug" / "trent"))
    parser.add_argument("--kill-modes", default="random,sweep-delete,sweep-rotate",
                        help="the kill of cycle n is the (n mod count)th of these: random (at a random moment of the load), "
                             "sweep-delete (right after the first key of a due batch is destroyed), sweep-rotate (rotated)")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--keys-per-worker", type=int, default=25)
    parser.add_argument("--rotating-keys", type=int, default=5)
    parser.add_argument("--recheck-sample", type=int, default=400,
                        help="older ciphertexts decrypted again after each restart (every new one always; all at the end)")
    parser.add_argument("--torn-every", type=int, default=4, help="write a torn audit line after every Nth kill (0: never)")
    parser.add_argument("--init-kills", type=int, default=6, help="random kills of `trent token init` per token")
    parser.add_argument("--no-fixed-kill-points", dest="fixed_kill_points", action="store_false")
    parser.add_argument("--inside-kills", type=int, default=2,
                        help="kills a few ms into each token-creation call, per call (through the fault module)")
    parser.add_argument("--max-minutes", type=float, default=120, help="time bound for each token's cycles")
    parser.add_argument("--workdir", help="where data folders go (default: a temporary folder, removed when all passed)")
    parser.add_argument("--json-out", help="write the figures here")
    args = parser.parse_args(argv)
    args.kill_modes = args.kill_modes.split(",")
    if not set(args.kill_modes) <= {"random", "sweep-delete", "sweep-rotate"}:
        parser.error(f"unknown kill mode in {args.kill_modes}")
    # SIGTERM (make interrupted, a CI timeout) unwinds like an exception, so the server is stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.binary = str(Path(args.binary).resolve())  # the server runs in its data folder
    if not Path(args.binary).is_file():
        print(f"crash harness: no trent binary at {args.binary} (build it, or pass --binary / TRENT_BIN)", file=sys.stderr)
        return 2
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="trent-crash-"))
    root.mkdir(parents=True, exist_ok=True)
    tokens = TOKENS if args.token == "both" else (args.token,)
    results = []
    failed = False
    for token in tokens:
        folder = root / token
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        run = CrashRun(args, token, folder)
        result = run.run()
        if args.init_kills or args.fixed_kill_points:
            result["token_creation_kills"] = InitKills(args, token, folder, run.stats).run()
            result["violations"] = run.stats.violations
        print_summary(result)
        failed |= bool(result["violations"])
        results.append(result)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    if failed:
        print(f"crash harness: FAILED; data folders kept in {root}", flush=True)
        return 1
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    print("crash harness: every acknowledged request survived every kill; losses: 0", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
