#!/usr/bin/env bash
# Installs what Trent needs on Debian 12 (Swift itself must already be installed):
#   system packages to build and run it (SoftHSM2 and NSS softoken as tokens, p11-kit headers, SQLite,
#   OpenSSL headers; opensc for pkcs11-tool, with which the tests make operator-owned keys), and,
#   with --test, a Python virtual environment in .venv with the end-to-end test packages (boto3, AWS CLI, pytest)
#   and what moto's KMS tests import (moto itself, freezegun: `make moto-suite`);
#   with --bench, a .venv with moto's server (the comparison of `make bench`).
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(softhsm2 libnss3 libp11-kit-dev libssl-dev libsqlite3-dev pkg-config python3 python3-venv python3-pip opensc)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "Installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "${1:-}" = "--test" ] || [ "${1:-}" = "--bench" ]; then
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    if [ "${1:-}" = "--test" ]; then
        .venv/bin/python -m pip install -q --disable-pip-version-check -r Tests/e2e/requirements.txt -r Tests/moto/requirements.txt
    else
        .venv/bin/python -m pip install -q --disable-pip-version-check -r scripts/bench-requirements.txt
    fi
fi
