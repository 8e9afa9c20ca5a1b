#!/usr/bin/env bash
# Builds libtrent-pkcs11-faults.so, the fault-injecting PKCS#11 wrapper (see README.md).
# Usage: Tests/PKCS11Faults/build.sh [output-dir]   (default: <repo>/.build/pkcs11-faults)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/.build/pkcs11-faults}
mkdir -p "$out"
# shellcheck disable=SC2046  # pkg-config prints several words on purpose
cc -shared -fPIC -O2 -Wall -Wextra -Werror $(pkg-config --cflags p11-kit-1) \
    -o "$out/libtrent-pkcs11-faults.so" "$here/trent-pkcs11-faults.c" -ldl -lpthread
echo "$out/libtrent-pkcs11-faults.so"
