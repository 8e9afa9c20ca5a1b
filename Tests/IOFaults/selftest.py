"""Self-test of libtrent-io-faults.so: run by selftest.sh with the library in LD_PRELOAD and
TRENT_IO_FAULTS_CONTROL / TRENT_IO_FAULTS_LOG set. Python's os.write, os.fsync, os.ftruncate, os.writev and
os.posix_fallocate, and its sqlite3 module (the system libsqlite3, as Trent's), all call libc's dynamic symbols.
Prints one line per check and "N passed, N failed" at the end; exits 1 if any failed."""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
import tempfile
import time

CONTROL = os.environ["TRENT_IO_FAULTS_CONTROL"]
STDERR_LOG = os.environ["SELFTEST_STDERR"]  # where selftest.sh sends this process's stderr
work = tempfile.mkdtemp(prefix="trent-io-faults-")
passed = failed = 0


def check(name: str, condition: bool, detail: str = "") -> None:
    global passed, failed
    if condition:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def schedule(text: str) -> None:
    """Replaces the control file by rename (never half a file), then waits for the next check."""
    tmp = CONTROL + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, CONTROL)
    time.sleep(0.06)
    probe()


def probe() -> None:
    # The reload happens at an intercepted call: write to a file no rule names.
    fd = os.open(os.path.join(work, "probe"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, b"p")
    os.close(fd)


def error_of(fn, *args):
    try:
        return fn(*args), None
    except OSError as e:
        return None, e.errno


def path(name: str) -> str:
    return os.path.join(work, name)


def open_file(name: str, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    return os.open(path(name), flags, 0o600)


os.makedirs(path("audit"))
os.makedirs(path("other"))

# --- pass-through: no rules
schedule("")
fd = open_file("audit/a")
check("no rules: write, fsync, ftruncate work", os.write(fd, b"hello") == 5 and os.fsync(fd) is None and os.ftruncate(fd, 2) is None)
check("no rules: the bytes are there", open(path("audit/a"), "rb").read() == b"he")

# --- fail: each op class, prefix matching
schedule(f"fail EIO fsync {work}/audit/\nfail ENOSPC write {work}/audit/\nfail EIO truncate {work}/audit/")
check("fail write: ENOSPC, nothing written", error_of(os.write, fd, b"xyz") == (None, errno.ENOSPC) and os.path.getsize(path("audit/a")) == 2)
check("fail writev: ENOSPC", error_of(os.writev, fd, [b"a", b"b"]) == (None, errno.ENOSPC))
check("fail pwrite: ENOSPC", error_of(os.pwrite, fd, b"q", 0) == (None, errno.ENOSPC))
check("fail fsync: EIO", error_of(os.fsync, fd) == (None, errno.EIO))
check("fail fdatasync: EIO", error_of(os.fdatasync, fd) == (None, errno.EIO))
check("fail ftruncate: EIO", error_of(os.ftruncate, fd, 0) == (None, errno.EIO))
other = open_file("other/b")
check("another folder is untouched", os.write(other, b"fine") == 4 and os.fsync(other) is None)
sibling = os.open(path("audit-not"), os.O_WRONLY | os.O_CREAT, 0o600)
check("a sibling sharing the prefix's letters but not its slash is untouched", os.write(sibling, b"x") == 1)
os.close(sibling)
r, w = os.pipe()
check("pipes are untouched", os.write(w, b"x") == 1)
os.close(r), os.close(w)

# --- the file changes: rules go
schedule("")
check("an emptied control file ends the faults", os.write(fd, b"back") == 4 and os.fsync(fd) is None)
os.remove(CONTROL)
time.sleep(0.06)
probe()
check("a missing control file is no faults", os.write(fd, b"!") == 1)

# --- triggers
schedule(f"fail EIO fsync {work}/audit/a after 2 count 3")
results = [error_of(os.fsync, fd)[1] for _ in range(7)]
check("after 2 count 3: ok ok EIO EIO EIO ok ok", results == [None, None, errno.EIO, errno.EIO, errno.EIO, None, None], str(results))
schedule(f"fail 28 write {work}/audit/a count 1")
check("numeric errno, count 1", error_of(os.write, fd, b"z") == (None, errno.ENOSPC) and os.write(fd, b"z") == 1)
schedule(f"fail EIO write,fsync {work}/audit/a")
check("two ops in one rule", error_of(os.write, fd, b"z")[1] == errno.EIO and error_of(os.fsync, fd)[1] == errno.EIO
      and os.ftruncate(fd, 0) is None)
schedule(f"fail EIO * {work}/audit/")
check("* covers truncate", error_of(os.ftruncate, fd, 0)[1] == errno.EIO)

# --- full: a full file system
schedule(f"full {work}/audit/ 10")
full = open_file("audit/full")
check("full: writes within the room work", os.write(full, b"123456") == 6)
check("full: a write past the room is short", os.write(full, b"abcdefgh") == 4)
check("full: then ENOSPC", error_of(os.write, full, b"x") == (None, errno.ENOSPC))
check("full: the file holds what fitted", open(path("audit/full"), "rb").read() == b"123456abcd")
check("full: fsync works", os.fsync(full) is None)
inside = os.open(path("audit/full"), os.O_WRONLY)
check("full: overwriting inside the file works", os.pwrite(inside, b"XY", 0) == 2 and os.path.getsize(path("audit/full")) == 10)
check("full: a write at the file position (no O_APPEND) counts from there",
      os.write(inside, b"ab") == 2 and error_of(os.pwrite, inside, b"x", 10)[1] == errno.ENOSPC)
os.close(inside)
check("full: a pwrite on an O_APPEND descriptor appends, and is refused", error_of(os.pwrite, full, b"XY", 0)[1] == errno.ENOSPC)
sparse = open_file("audit/sparse", os.O_WRONLY | os.O_CREAT)
check("full: a growing ftruncate makes a hole, which takes no room", os.ftruncate(sparse, 4096) is None
      and os.path.getsize(path("audit/sparse")) == 4096 and error_of(os.write, full, b"x")[1] == errno.ENOSPC)
os.close(sparse)
check("full: a growing writev fails whole", error_of(os.writev, full, [b"a", b"b"]) == (None, errno.ENOSPC))
check("full: posix_fallocate past the end fails", error_of(os.posix_fallocate, full, 0, 4096)[1] == errno.ENOSPC)
check("full: shrinking works and gives the room back", os.ftruncate(full, 7) is None and os.write(full, b"xyz") == 3
      and error_of(os.write, full, b"!")[1] == errno.ENOSPC)
os.close(full)

# --- a bad schedule is ignored whole
schedule(f"fail EIO fsync {work}/audit/\nfail EWHAT write {work}/audit/")
check("a bad line voids the whole file", os.fsync(fd) is None)
schedule(f"fail EIO fsync relative/path")
check("a relative prefix is refused", os.fsync(fd) is None)

# --- SQLite (the system libsqlite3, as Trent's) sees the faults
db_path = path("store.sqlite")
schedule("")
db = sqlite3.connect(db_path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE t (v INTEGER)")
db.execute("INSERT INTO t VALUES (1)")
schedule(f"fail EIO fsync {db_path}")
try:
    db.execute("INSERT INTO t VALUES (2)")
    outcome = "committed"
except sqlite3.OperationalError as e:
    outcome = str(e)
check("SQLite: a failed fdatasync of the WAL fails the commit", outcome == "disk I/O error", outcome)
schedule(f"fail ENOSPC write {db_path}")
try:
    db.execute("INSERT INTO t VALUES (3)")
    outcome = "committed"
except sqlite3.OperationalError as e:
    outcome = str(e)
check("SQLite: a failed WAL write is SQLITE_FULL", outcome == "database or disk is full", outcome)
schedule("")
db.execute("INSERT INTO t VALUES (4)")
check("SQLite: the same connection commits once the fault is gone",
      [v for (v,) in db.execute("SELECT v FROM t ORDER BY v")] == [1, 4])
db.close()

# --- the log names call, errno and path, never the data
os.close(fd)
sys.stderr.flush()
log = open(STDERR_LOG, "rb").read()
check("the log names the fault", b"ENOSPC on write of " + path("audit/a").encode() in log)
check("the log reports a short write", b"short write (4 of 8 bytes)" in log)
check("the log names a bad schedule", b"the whole schedule is ignored" in log)
check("the log never holds the bytes written", b"abcdefgh" not in log and b"hello" not in log)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
