#!/usr/bin/env bash
# Builds libtrent-io-faults.so, the LD_PRELOAD library that fails file writes, fsyncs and truncations (see README.md).
# Usage: Tests/IOFaults/build.sh [output-dir]   (default: <repo>/.build/io-faults)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/.build/io-faults}
mkdir -p "$out"
# Any C compiler: the system's cc, or the clang that comes with Swift.
compiler=${CC:-$(command -v cc || command -v gcc || command -v clang || true)}
[ -n "$compiler" ] || { echo "build.sh: no C compiler (cc, gcc or clang) on PATH" >&2; exit 1; }
"$compiler" -shared -fPIC -O2 -Wall -Wextra -Werror -o "$out/libtrent-io-faults.so.tmp" "$here/trent-io-faults.c" -ldl -lpthread
mv "$out/libtrent-io-faults.so.tmp" "$out/libtrent-io-faults.so"
echo "$out/libtrent-io-faults.so"
