"""Audit trail rotation (audit.rotateBytes): the chain continues across files, a digest covers each rotated file,
`trent audit verify` reads every file in order and finds a missing or reordered one."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from trent_e2e import TrentServer, audit_record_files, make_kms

ROTATED = re.compile(r"^records-(\d{20})\.jsonl$")


def verify(server: TrentServer) -> tuple[int, dict]:
    proc = subprocess.run(
        [str(server.binary), "audit", "verify"], cwd=server.data_dir, env=server.env, capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rotated_files_chain_and_verify_and_a_missing_or_reordered_file_is_found(tmp_path):
    server = TrentServer(tmp_path / "data")
    server.env["TRENT_AUDIT_ROTATE_BYTES"] = "4096"
    server.start()
    try:
        kms = make_kms(server)
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        for n in range(30):
            kms.encrypt(KeyId=key_id, Plaintext=b"rotation %d" % n)
    finally:
        server.stop()

    audit = server.data_dir / "audit"
    files = audit_record_files(audit)
    rotated = [p for p in files if ROTATED.match(p.name)]
    assert files[-1].name == "records.jsonl" and len(rotated) >= 4, [p.name for p in files]
    sequences, previous = [], "0" * 64
    for path in files:
        records = lines(path)
        if path in rotated:
            assert records[0]["sequence"] == int(ROTATED.match(path.name).group(1))
            assert path.stat().st_size < 4096 + 8192, "a file grows past rotateBytes by one batch at most"
        assert records[0]["previousHash"] == previous, f"{path.name} chains to the file before"
        previous = records[-1]["hash"]
        sequences += [r["sequence"] for r in records]
    assert sequences == list(range(1, len(sequences) + 1))
    assert len(sequences) >= 31
    digested = {d["lastSequence"] for d in lines(audit / "digests.jsonl")}
    for path in rotated:
        assert lines(path)[-1]["sequence"] in digested, f"{path.name} ends at a signed digest"

    rc, report = verify(server)
    assert (rc, report["Intact"], report["Records"], report["Problems"]) == (0, True, len(sequences), [])

    # A missing middle file.
    middle = rotated[2]
    aside = tmp_path / middle.name
    middle.rename(aside)
    rc, report = verify(server)
    after = rotated[3]
    first_after, expected = int(ROTATED.match(after.name).group(1)), int(ROTATED.match(middle.name).group(1))
    assert rc == 1 and not report["Intact"]
    assert (f"{after.name} line 1 (sequence {first_after}): sequence {first_after} where {expected} was expected "
            "(records are missing: the records file before this one, or this file's first lines)") in report["Problems"]
    aside.rename(middle)

    # Two files swapped.
    a, b = rotated[0], rotated[1]
    swap = tmp_path / "swap"
    a.rename(swap)
    b.rename(a)
    swap.rename(b)
    rc, report = verify(server)
    second_first = int(ROTATED.match(b.name).group(1))
    assert rc == 1
    assert (f"{a.name}: its first record is sequence {second_first}, not 1 as its name states (files renamed or reordered)"
            in report["Problems"])
    a.rename(swap)
    b.rename(a)
    swap.rename(b)

    # Put back, the trail verifies again and the restarted server continues it.
    assert verify(server)[0] == 0
    server.start()
    try:
        make_kms(server).describe_key(KeyId=key_id)
    finally:
        server.stop()
    rc, report = verify(server)
    assert (rc, report["Problems"]) == (0, [])
    assert report["Records"] == len(sequences) + 1
