#!/usr/bin/env python3
"""Measures Trent's token-fault matrix for docs/reliability.md (not run by `make test`).

For each fault (a device error on the operation's calls, an invalid session, a partition reboot, a 3 s removal,
a hung call under a 1 s deadline, a module reset) and each operation class (symmetric Encrypt+Decrypt, data keys,
Sign+Verify, GenerateMac+VerifyMac, CreateKey), on each token: what requests get while the fault lasts, and the
recovery time, from the moment the fault is cleared or ends (for a reboot or a reset: from the moment it
happened) to the first request that succeeds.

    .venv/bin/python Tests/e2e/fault_matrix.py [--token softhsm2|nss-softoken|all] [--out /tmp/fault-matrix.md]

Needs the built server (.build/debug/trent, or TRENT_BIN).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKENS = ["softhsm2", "nss-softoken"]
PROBE_INTERVAL = 0.05
RECOVERY_LIMIT = 20.0


def measure(token: str, wrapper: Path, workdir: Path) -> list[dict]:
    # trent_e2e reads TRENT_E2E_TOKEN at import: one child process per token.
    os.environ["TRENT_E2E_TOKEN"] = token
    sys.path.insert(0, str(HERE))
    import test_hsm_faults as t  # noqa: E402  (FaultLab, Keys, attempt)
    from trent_e2e import TrentServer  # noqa: E402

    def lab_for(name: str, **settings):
        lab = t.FaultLab(TrentServer(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))), wrapper, **settings).start()
        return lab, t.Keys(lab)

    def probes(lab, keys):
        kms = lab.kms
        blob = kms.encrypt(KeyId=keys.sym, Plaintext=b"fault matrix: sealed before")["CiphertextBlob"]
        message = b"fault matrix message"
        signature = kms.sign(KeyId=keys.ecc, Message=message, SigningAlgorithm="ECDSA_SHA_256")["Signature"]
        mac = kms.generate_mac(KeyId=keys.hmac, Message=message, MacAlgorithm="HMAC_SHA_256")["Mac"]

        def sym():
            sealed = t.attempt("Encrypt", kms.encrypt, KeyId=keys.sym, Plaintext=b"fault matrix probe")
            if not sealed.ok:
                return sealed
            opened = t.attempt("Decrypt", kms.decrypt, CiphertextBlob=blob)
            if opened.ok:
                assert opened.result["Plaintext"] == b"fault matrix: sealed before", "WRONG PLAINTEXT"
            return opened

        def data_keys():
            return t.attempt("GenerateDataKey", kms.generate_data_key, KeyId=keys.sym, KeySpec="AES_256")

        def sign():
            signed = t.attempt("Sign", kms.sign, KeyId=keys.ecc, Message=message, SigningAlgorithm="ECDSA_SHA_256")
            if not signed.ok:
                return signed
            assert keys.signature_valid(keys.ecc, "ECDSA_SHA_256", message, signed.result["Signature"]), "BAD SIGNATURE"
            verified = t.attempt("Verify", kms.verify, KeyId=keys.ecc, Message=message, Signature=signature,
                                 SigningAlgorithm="ECDSA_SHA_256")
            if verified.ok:
                assert verified.result["SignatureValid"] is True, "SIGNATURE NOT VALID"
            return verified

        def macs():
            made = t.attempt("GenerateMac", kms.generate_mac, KeyId=keys.hmac, Message=message, MacAlgorithm="HMAC_SHA_256")
            if not made.ok:
                return made
            assert made.result["Mac"] == mac, "WRONG MAC"
            return t.attempt("VerifyMac", kms.verify_mac, KeyId=keys.hmac, Message=message, Mac=mac, MacAlgorithm="HMAC_SHA_256")

        def create():
            return t.attempt("CreateKey", kms.create_key, Description="fault matrix")

        return [
            ("symmetric Encrypt/Decrypt", sym, ["C_Encrypt", "C_Decrypt"]),
            ("data keys (GenerateDataKey)", data_keys, ["C_GenerateRandom"]),
            ("Sign/Verify (ECC_NIST_P256)", sign, ["C_Sign", "C_Verify"]),
            ("GenerateMac/VerifyMac (HMAC_256)", macs, ["C_Sign"]),
            ("CreateKey (symmetric)", create, ["C_GenerateKey"]),
        ]

    def during(probe, seconds: float = 1.0, at_least: int = 3):
        """Probes for `seconds` (at least `at_least` times): the outcomes seen while the fault lasts."""
        seen, started = [], time.monotonic()
        while len(seen) < at_least or time.monotonic() - started < seconds:
            seen.append(probe())
            time.sleep(PROBE_INTERVAL)
        return seen

    def recovery(probe, since: float):
        """Seconds from `since` to the first success, probing every 50 ms (None if none within the limit)."""
        while time.monotonic() - since < RECOVERY_LIMIT:
            if probe().ok:
                return max(0.0, time.monotonic() - since)
            time.sleep(PROBE_INTERVAL)
        return None

    def describe(seen) -> tuple[str, str]:
        failed = [o for o in seen if not o.ok]
        kinds = sorted({f"{o.status} {o.code}" for o in failed})
        slowest = max((o.elapsed for o in failed), default=0.0)
        if not failed:
            return f"all {len(seen)} succeeded", "-"
        if len(failed) == len(seen):
            return f"all {len(seen)} failed (slowest answer {slowest:.2f} s)", ", ".join(kinds)
        return f"{len(failed)} of {len(seen)} failed, then 200 (slowest answer {slowest:.2f} s)", ", ".join(kinds)

    rows: list[dict] = []

    def row(fault, op, seen, recovered, note=""):
        outcome, error = describe(seen)
        rows.append(dict(token=token, fault=fault, op=op, outcome=outcome, error=error,
                         recovery="not within %.0f s" % RECOVERY_LIMIT if recovered is None else f"{recovered:.2f} s",
                         note=note))
        print(f"[{token}] {fault} | {op} | {outcome} | {error} | {rows[-1]['recovery']}", flush=True)

    lab, keys = lab_for("matrix")
    try:
        classes = probes(lab, keys)
        for fault, code in (("device error on the call (CKR_DEVICE_ERROR, every call)", "CKR_DEVICE_ERROR"),
                            ("invalid session (CKR_SESSION_HANDLE_INVALID, every call)", "CKR_SESSION_HANDLE_INVALID")):
            for op, probe, calls in classes:
                lab.wait_healthy(keys.sym)
                lab.faults("\n".join(f"fail {call} {code}" for call in calls))
                seen = during(probe)
                lab.clear()
                row(fault, op, seen, recovery(probe, time.monotonic()))
        for op, probe, _ in classes:
            lab.wait_healthy(keys.sym)
            lab.faults(lab.reboot_rule())
            happened = time.monotonic()  # the reboot happens at the first call after the load: this probe's
            first = probe()
            row("partition reboot", op, [first], recovery(probe, happened))
        for op, probe, _ in classes:
            lab.wait_healthy(keys.sym)
            lab.faults("remove 3s")
            ended = time.monotonic() + 3.0  # the window starts at the first call after the load: the first probe's
            seen = during(probe, seconds=2.5)
            while time.monotonic() < ended:
                time.sleep(0.02)
            row("token removed for 3 s", op, seen, recovery(probe, ended))
        for op, probe, _ in classes:
            lab.wait_healthy(keys.sym)
            lab.faults(f"{lab.reboot_rule()}\nfail C_Login CKR_DEVICE_ERROR count 1")
            happened = time.monotonic()
            first = probe()
            row("module reset (reboot, first re-login fails)", op, [first], recovery(probe, happened))
        reinitialized = "re-initialized" in lab.server.log_text()
        rows[-1]["note"] = "" if reinitialized else "no 're-initialized' line in the log"
    finally:
        lab.server.stop()

    lab, keys = lab_for("matrix-deadline", TRENT_HSM_CALL_TIMEOUT_SECONDS=1)
    try:
        for op, probe, calls in probes(lab, keys):
            lab.wait_healthy(keys.sym)
            lab.faults("\n".join(f"hang {call} 3s" for call in calls))
            seen = during(probe, seconds=0.5, at_least=2)
            lab.clear()
            row("hung call (3 s) under a 1 s deadline", op, seen, recovery(probe, time.monotonic()))
    finally:
        lab.server.stop()
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["# Token fault matrix", "",
           "Measured by `Tests/e2e/fault_matrix.py` through the fault-injecting wrapper (Tests/PKCS11Faults), debug build.",
           "Outcome: the requests made while the fault lasted (about 1 s of requests, 50 ms apart; 2.5 s for the removal;",
           "for a reboot or a reset, the first request after it, whose first call meets it). Recovery: from the moment the",
           "fault was gone (cleared and reloaded by the wrapper, the removal window over; for a reboot or a reset, the",
           "first request after it) to the first request that succeeded, probing every 50 ms. A probe is one request,",
           "or two for the classes named with a slash (it fails when either fails). Every 200 was checked (plaintext,",
           "signature, MAC).", ""]
    for token in dict.fromkeys(r["token"] for r in rows):
        out += [f"## {token}", "", "| fault | operation | outcome while it lasts | error | recovery |", "|---|---|---|---|---|"]
        for r in (r for r in rows if r["token"] == token):
            note = f" ({r['note']})" if r["note"] else ""
            out.append(f"| {r['fault']} | {r['op']} | {r['outcome']} | {r['error']} | {r['recovery']}{note} |")
        out.append("")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token", default="all", choices=TOKENS + ["all"])
    parser.add_argument("--out", default="/tmp/fault-matrix.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repo = HERE.parent.parent
    if args.child:
        workdir = Path(tempfile.mkdtemp(prefix="fault-matrix-"))
        wrapper_dir = workdir / "wrapper"
        subprocess.run([str(repo / "Tests" / "PKCS11Faults" / "build.sh"), str(wrapper_dir)], check=True, capture_output=True)
        rows = measure(args.child, wrapper_dir / "libtrent-pkcs11-faults.so", workdir)
        Path(args.out).write_text(json.dumps(rows))
        return 0
    rows: list[dict] = []
    for token in (TOKENS if args.token == "all" else [args.token]):
        part = Path(tempfile.mkstemp(suffix=".rows")[1])
        subprocess.run([sys.executable, __file__, "--child", token, "--out", str(part)], check=True, timeout=900)
        rows += json.loads(part.read_text())
    Path(args.out).write_text(markdown(rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
