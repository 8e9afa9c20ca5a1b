"""Secrets hygiene: no plaintext, data key or secret access key in any server log, audit trail or store file.

Runs last (file name), so the logs hold everything the suite did. Every plaintext sent to or received
from a server through make_kms() clients is recorded in trent_e2e.SEEN_PLAINTEXTS by a botocore hook.
"""

from __future__ import annotations

import base64
import os

from trent_e2e import ALL_SERVERS, SECRET_ACCESS_KEY, SEEN_PLAINTEXTS, remember_plaintext

MIN_LEN = 12  # shorter values (b"x", b"dry") could appear in a log by coincidence


def encodings(value: bytes) -> dict[str, str]:
    std = base64.b64encode(value).decode()
    return {
        "base64": std,
        "base64-unpadded": std.rstrip("="),
        "base64url": base64.urlsafe_b64encode(value).decode().rstrip("="),
        "hex": value.hex(),
        "HEX": value.hex().upper(),
    }


def test_logs_hold_no_secrets(kms, new_key, server):
    key_id = new_key(Description="hygiene")
    distinctive = b"TRENT-HYGIENE-PLAINTEXT-" + os.urandom(12).hex().encode()
    blob = kms.encrypt(KeyId=key_id, Plaintext=distinctive, EncryptionContext={"hygiene": "1"})["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"hygiene": "1"})["Plaintext"] == distinctive
    data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")["Plaintext"]
    assert distinctive in SEEN_PLAINTEXTS and data_key in SEEN_PLAINTEXTS, "plaintext recording hook is broken"
    remember_plaintext(distinctive)

    # A clean stop flushes whatever the server buffered; the restarted server serves any later test.
    server.restart()

    # Values of one or two repeated bytes (zero-filled test inputs) occur in any binary file by coincidence.
    secrets = {v for v in SEEN_PLAINTEXTS if len(v) >= MIN_LEN and len(set(v)) >= 4}
    assert secrets, "no plaintexts were recorded"
    servers = [s for s in ALL_SERVERS if s.log_path.exists()]
    assert server in servers
    assert server.log_text().strip(), f"{server.log_path} is empty: the server logged nothing at info level"

    leaks = []
    for srv in servers:
        files = [srv.log_path, *sorted((srv.data_dir / "audit").glob("*.jsonl")), *sorted(srv.data_dir.glob("trent.sqlite*"))]
        for path in files[1:]:
            assert path.stat().st_size >= 0
        log = b"".join(path.read_bytes() for path in files if path.exists())
        if SECRET_ACCESS_KEY.encode() in log:
            leaks.append(f"{srv.data_dir}: the secret access key")
        for value in secrets:
            if value in log:
                leaks.append(f"{srv.data_dir}: raw plaintext {value[:16]!r}...")
            for form, text in encodings(value).items():
                if text.encode() in log:
                    leaks.append(f"{srv.data_dir}: {form} of plaintext {value[:16]!r}...")
    assert (server.data_dir / "audit" / "records.jsonl").stat().st_size > 0, "the audit trail is empty"
    assert not leaks, "secrets found in server logs, audit trails or stores:\n" + "\n".join(sorted(set(leaks)))
