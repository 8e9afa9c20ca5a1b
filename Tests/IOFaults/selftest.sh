#!/usr/bin/env bash
# Self-test of libtrent-io-faults.so (see README.md): builds it into a temporary folder and runs selftest.py with it
# preloaded into the system Python, whose os module and sqlite3 (the system libsqlite3) call libc as Trent does.
# Prints one line per check and ends with "N passed, N failed"; about a second.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
library=$("$here/build.sh" "$work")
python=${PYTHON:-/usr/bin/python3}
status=0
LD_PRELOAD="$library" TRENT_IO_FAULTS_CONTROL="$work/control" TRENT_IO_FAULTS_LOG=1 SELFTEST_STDERR="$work/stderr" \
    timeout 60 "$python" "$here/selftest.py" 2>"$work/stderr" || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- stderr ---"
    tail -20 "$work/stderr"
fi
exit "$status"
