"""`trent store backup` under load and `trent store restore` into a fresh data folder on the same token.

The restored server uses the token the original server made (in its data folder), named the way an operator names a
token Trent does not own (`hsm.embeddedToken: none`, the module, the token's configuration and its PIN file): that
is what restoring the store of a deployment on a hardware HSM is, the HSM keeping its keys.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from trent_e2e import TOKEN, TrentServer, expect_error, make_kms

LOAD_SECONDS = 4.0
THREADS = 4
BACKUP_AFTER_SECONDS = 2.0


def run_store(server: TrentServer, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(server.binary), "store", *args], cwd=server.data_dir, env=env or server.env, capture_output=True, text=True, timeout=120)


def on_the_same_token(original: TrentServer, data_dir: Path) -> TrentServer:
    """A server on a fresh data folder, using the token that lives in `original`'s data folder as an operator's token."""
    server = TrentServer(data_dir)
    token_dir = original.data_dir / ("nss" if TOKEN == "nss-softoken" else "softhsm")
    server.env.update(TRENT_HSM_EMBEDDED_TOKEN="none", TRENT_HSM_PROFILE=TOKEN, TRENT_HSM_PIN_FILE=str(token_dir / "user-pin"))
    if TOKEN == "nss-softoken":
        server.env["TRENT_HSM_INIT_STRING"] = (
            f"configdir='sql:{token_dir}' certPrefix='' keyPrefix='' secmod='secmod.db' flags= dbTokenDescription='trent'")
    else:
        server.env["SOFTHSM2_CONF"] = str(token_dir / "softhsm2.conf")
    return server


class Load:
    """Threads creating keys, encrypting and generating data keys until stopped; every acknowledged result is kept
    with the moment it was acknowledged."""

    def __init__(self, server: TrentServer):
        self.server = server
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.keys: list[tuple[float, float, str]] = []  # (CreateKey sent at, acknowledged at, key id)
        self.ciphertexts: list[tuple[float, str, bytes, bytes, dict]] = []  # (at, key id, blob, plaintext, context)
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True) for n in range(THREADS)]

    def run(self, n: int) -> None:
        kms = make_kms(self.server)
        mine: list[str] = []
        i = 0
        try:
            while not self.stop.is_set():
                if i % 5 == 0:
                    sent = time.monotonic()
                    key_id = kms.create_key(Description=f"backup load {n}/{i}")["KeyMetadata"]["KeyId"]
                    with self.lock:
                        self.keys.append((sent, time.monotonic(), key_id))
                    mine.append(key_id)
                key_id = mine[i % len(mine)]
                context = {"thread": str(n), "i": str(i)}
                if i % 2:
                    plaintext = os.urandom(32)
                    blob = kms.encrypt(KeyId=key_id, Plaintext=plaintext, EncryptionContext=context)["CiphertextBlob"]
                else:
                    answer = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=context)
                    plaintext, blob = answer["Plaintext"], answer["CiphertextBlob"]
                with self.lock:
                    self.ciphertexts.append((time.monotonic(), key_id, blob, plaintext, context))
                i += 1
        except Exception as error:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(error))

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def test_a_backup_under_load_restores_into_a_fresh_data_folder_on_the_same_token(tmp_path):
    original = TrentServer(tmp_path / "original")
    original.start()
    backup = tmp_path / "backups" / "trent-backup.sqlite"
    backup.parent.mkdir()
    try:
        with Load(original) as load:
            time.sleep(BACKUP_AFTER_SECONDS)
            backup_started = time.monotonic()
            made = run_store(original, "backup", str(backup))
            backup_finished = time.monotonic()
            time.sleep(LOAD_SECONDS - BACKUP_AFTER_SECONDS)
        assert load.errors == []
        assert made.returncode == 0, made.stderr
        summary = json.loads(made.stdout)

        # A backup over the store itself is refused.
        over = run_store(original, "backup", str(original.data_dir / "trent.sqlite"))
        assert (over.returncode, over.stderr.splitlines()) == (
            1, [f"trent: {original.data_dir / 'trent.sqlite'} is the store itself: write the backup to another file"])

        # Refused while the server runs, with one line, and the store is left as it was.
        refused = run_store(original, "restore", str(backup))
        assert refused.returncode == 1
        assert refused.stderr.splitlines() == [
            f"trent: a trent server is using the store {original.data_dir / 'trent.sqlite'} "
            f"({original.data_dir / 'trent.sqlite'}.lock is locked): stop it, then restore"]
        make_kms(original).describe_key(KeyId=load.keys[0][2])
    finally:
        original.stop()

    # The file: 0600, one self-contained SQLite file that passes its integrity check, holding what the summary says.
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert sorted(p.name for p in backup.parent.iterdir()) == ["trent-backup.sqlite"]
    with sqlite3.connect(f"file:{backup}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        migrations = [row[0] for row in db.execute("SELECT identifier FROM grdb_migrations ORDER BY rowid")]
        backed_up_keys = {row[0] for row in db.execute("SELECT key_id FROM keys")}
    assert summary == {
        "File": str(backup), "Keys": len(backed_up_keys), "SchemaVersion": len(migrations), "LatestMigration": migrations[-1],
        "Bytes": backup.stat().st_size, "Integrity": "ok"}

    # Every key acknowledged before the backup began is in it; none whose CreateKey was sent after it ended.
    acknowledged_before = {key for _, acked, key in load.keys if acked < backup_started}
    sent_after = {key for sent, _, key in load.keys if sent > backup_finished}
    assert len(acknowledged_before) >= THREADS and sent_after and len(load.ciphertexts) > 20, "the load did too little"
    assert acknowledged_before <= backed_up_keys
    assert sent_after & backed_up_keys == set()

    print(f"backup under load: {len(acknowledged_before)} keys acknowledged before it, {summary['Keys']} keys in it, "
          f"{len(load.keys)} created in all, {len(load.ciphertexts)} ciphertexts and data keys, "
          f"backup took {backup_finished - backup_started:.2f} s")
    restored = on_the_same_token(original, tmp_path / "restored")
    done = run_store(restored, "restore", str(backup))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["Keys"] == summary["Keys"] and report["SchemaVersion"] == summary["SchemaVersion"]
    assert report["File"] == str(restored.data_dir / "trent.sqlite") and "Replaced" not in report
    assert "trent-domain-key" in report["Next"] and "trent-sealing-key" in report["Next"]
    assert stat.S_IMODE((restored.data_dir / "trent.sqlite").stat().st_mode) == 0o600

    restored.start()
    try:
        # The administrator's credentials come back with the store (the harness's access key, sealed in it).
        kms = make_kms(restored)
        listed = set()
        for page in kms.get_paginator("list_keys").paginate():
            listed |= {key["KeyId"] for key in page["Keys"]}
        assert listed == backed_up_keys
        checked = 0
        for at, key_id, blob, plaintext, context in load.ciphertexts:
            if at < backup_started:
                answer = kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)
                assert (answer["KeyId"].rsplit("/", 1)[-1], answer["Plaintext"]) == (key_id, plaintext)
                checked += 1
        assert checked >= 10
        print(f"after the restore: {checked} ciphertexts and data keys acknowledged before the backup decrypted")
        for key_id in sent_after:
            with expect_error("NotFoundException"):
                kms.describe_key(KeyId=key_id)
        # The restored server keeps serving: new keys on the same token.
        fresh = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=fresh, Plaintext=b"after the restore")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"after the restore"
    finally:
        restored.stop()

    # A second restore over the now-used store keeps the replaced one (and its log) aside.
    again = run_store(restored, "restore", str(backup))
    assert again.returncode == 0, again.stderr
    replaced = json.loads(again.stdout)["Replaced"]
    assert replaced.startswith(str(restored.data_dir / "trent.sqlite.replaced-")) and Path(replaced).is_file()


def test_restore_refuses_a_file_that_is_not_a_trent_store(tmp_path):
    server = TrentServer(tmp_path / "data")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(os.urandom(8192))
    refused = run_store(server, "restore", str(junk))
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.splitlines() == [f"trent: {junk} is not a Trent store (not an SQLite database)"]

    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    refused = run_store(server, "restore", str(other))
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [f"trent: {other} is not a Trent store (an SQLite database without Trent's tables)"]
    assert not (server.data_dir / "trent.sqlite").exists()


def test_restore_refuses_a_store_with_a_newer_schema(tmp_path):
    server = TrentServer(tmp_path / "data")
    server.start()
    backup = tmp_path / "backup.sqlite"
    try:
        made = run_store(server, "backup", str(backup))
        assert made.returncode == 0, made.stderr
    finally:
        server.stop()
    with sqlite3.connect(backup) as db:
        db.execute("INSERT INTO grdb_migrations (identifier) VALUES ('from-the-future')")
    refused = run_store(server, "restore", str(backup))
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"trent: {backup} has a newer schema than this trent knows (migrations 'from-the-future'): "
        "restore it with the Trent release that made it, or a later one"]
    # The store it would have replaced is untouched, and serves.
    assert sorted(p.name for p in server.data_dir.glob("trent.sqlite.replaced-*")) == []
    server.start()
    make_kms(server).list_keys()
    server.stop()


def test_restore_after_a_crash_moves_the_crashed_stores_log_aside_with_it(tmp_path):
    """A store killed with kill -9 leaves its write-ahead log; it belongs to the old file and must never be applied
    to the restored one."""
    server = TrentServer(tmp_path / "data")
    server.start()
    backup = tmp_path / "backup.sqlite"
    try:
        kms = make_kms(server)
        kept = kms.create_key(Description="in the backup")["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=kept, Plaintext=b"kept")["CiphertextBlob"]
        made = run_store(server, "backup", str(backup))
        assert made.returncode == 0, made.stderr
        lost = kms.create_key(Description="after the backup")["KeyMetadata"]["KeyId"]
    finally:
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        server.proc = None
        server._close_log()
    wal = server.data_dir / "trent.sqlite-wal"
    assert wal.stat().st_size > 0, "the killed server left no write-ahead log to test with"

    done = run_store(server, "restore", str(backup))
    assert done.returncode == 0, done.stderr
    replaced = Path(json.loads(done.stdout)["Replaced"])
    assert replaced.is_file() and Path(f"{replaced}-wal").stat().st_size > 0
    assert not wal.exists() or wal.stat().st_size == 0
    server.start()
    try:
        kms = make_kms(server)
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"
        with expect_error("NotFoundException"):
            kms.describe_key(KeyId=lost)
    finally:
        server.stop()
