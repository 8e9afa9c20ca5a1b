#!/usr/bin/env bash
# Self-test of libtrent-pkcs11-faults.so over SoftHSM 2 and NSS softoken, each in a temporary token folder.
# Usage: Tests/PKCS11Faults/selftest.sh [softhsm|nss|all]   (default all; about 15 s per token)
# Prints "ok - ..." / "not ok - ..." lines and "N passed, N failed" last; exits 1 on any failure.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
which=${1:-all}
SOFTHSM=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
NSS=${NSS_MODULE:-/usr/lib/x86_64-linux-gnu/libsoftokn3.so}
LABEL=faults-test
PIN=fault-test-pin-7781   # distinctive, so the log check can prove it never appears

work=$(mktemp -d "${TMPDIR:-/tmp}/trent-faults-selftest.XXXXXX")
trap 'rm -rf "$work"' EXIT
lib=$("$here/build.sh" "$work/build")
# shellcheck disable=SC2046
cc -O2 -Wall -Wextra -Werror $(pkg-config --cflags p11-kit-1) -o "$work/selftest" "$here/selftest.c" -ldl -lpthread

passed=0 failed=0
tally() { # adds the "N passed, N failed" line of a run's output (file $1) to the totals
    local line
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -1 || true)
    if [[ -z $line ]]; then echo "not ok - $2 did not finish (see above)"; failed=$((failed + 1)); return; fi
    passed=$((passed + ${line%% passed*})); local f=${line#*, }; failed=$((failed + ${f%% failed}))
}
shell_check() { if eval "$2"; then echo "ok - $1"; passed=$((passed + 1)); else echo "not ok - $1"; failed=$((failed + 1)); fi; }
# run NAME [VAR=value...] -- selftest arguments; bounded by timeout; output shown and tallied
run() {
    local name=$1; shift
    local envs=()
    while [[ $1 != -- ]]; do envs+=("$1"); shift; done; shift
    echo "## $name"
    env -u TRENT_FAULTS -u TRENT_FAULTS_CONTROL -u TRENT_FAULTS_LOG "${envs[@]}" \
        timeout 90 "$work/selftest" "$lib" "$@" >"$work/out" 2>"$work/err" || true
    grep -v '^[0-9]* passed, [0-9]* failed$' "$work/out" || true
    sed 's/^/# stderr: /' "$work/err" | head -20
    tally "$work/out" "$name"
}

token_runs() { # NAME REAL_MODULE [INIT_STRING]
    local name=$1 real=$2 init=${3:-}
    run "$name: control file" TRENT_FAULTS_MODULE="$real" TRENT_FAULTS_CONTROL="$work/$name.conf" \
        -- main "$LABEL" "$PIN" "$init"
    run "$name: TRENT_FAULTS" TRENT_FAULTS_MODULE="$real" \
        "TRENT_FAULTS=fail C_GenerateRandom CKR_DEVICE_MEMORY count 1; delay C_GetInfo 100ms  # comment" \
        -- env "$LABEL" "$PIN" "$init"
    run "$name: TRENT_FAULTS_LOG=1" TRENT_FAULTS_MODULE="$real" TRENT_FAULTS_LOG=1 \
        "TRENT_FAULTS=fail C_GenerateRandom CKR_DEVICE_ERROR count 1" -- log "$LABEL" "$PIN" "$init"
    shell_check "$name: the log names the injected fault" "grep -q 'C_GenerateRandom -> CKR_DEVICE_ERROR (line 1)' '$work/err'"
    shell_check "$name: the log never shows the PIN (C_Login went through)" "! grep -q '$PIN' '$work/err'"
}

if [[ $which == all || $which == softhsm ]]; then
    mkdir -p "$work/softhsm/tokens"
    cat >"$work/softhsm/softhsm2.conf" <<EOF
directories.tokendir = $work/softhsm/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
    export SOFTHSM2_CONF=$work/softhsm/softhsm2.conf
    softhsm2-util --init-token --free --label "$LABEL" --so-pin so-1234 --pin "$PIN" >/dev/null
    token_runs softhsm "$SOFTHSM"
    echo "## softhsm: pkcs11-tool --module <wrapper>"
    TRENT_FAULTS_MODULE=$SOFTHSM timeout 30 pkcs11-tool --module "$lib" -L >"$work/tool" 2>&1 || true
    shell_check "pkcs11-tool -L lists the token through the wrapper" "grep -q 'token label *: $LABEL' '$work/tool'"
    TRENT_FAULTS_MODULE=$SOFTHSM TRENT_FAULTS='fail C_GetInfo CKR_DEVICE_ERROR' timeout 30 \
        pkcs11-tool --module "$lib" -I >"$work/tool" 2>&1 || true
    shell_check "pkcs11-tool -I reports the injected C_GetInfo fault" "grep -q 'CKR_DEVICE_ERROR' '$work/tool'"
fi

if [[ $which == all || $which == nss ]]; then
    mkdir -p "$work/nss"
    # The init string Trent's nss-softoken profile builds (Config/hsm/nss-softoken.json).
    init="configdir='sql:$work/nss' certPrefix='' keyPrefix='' secmod='secmod.db' flags= dbTokenDescription='$LABEL'"
    token_runs nss "$NSS" "$init"
fi

echo "## refused setups (C_GetFunctionList fails, with a reason on stderr)"
run "no TRENT_FAULTS_MODULE" -- refused x x
run "TRENT_FAULTS_MODULE is the wrapper itself" TRENT_FAULTS_MODULE="$lib" -- refused x x
run "TRENT_FAULTS_MODULE does not exist" TRENT_FAULTS_MODULE=/nonexistent/module.so -- refused x x
run "an unknown function in TRENT_FAULTS" TRENT_FAULTS_MODULE="$SOFTHSM" \
    "TRENT_FAULTS=delay C_Encrypt 1ms; fail C_Nope CKR_DEVICE_ERROR" -- refused x x
run "a hang without a duration in TRENT_FAULTS" TRENT_FAULTS_MODULE="$SOFTHSM" "TRENT_FAULTS=hang C_Encrypt" -- refused x x
echo "## schedule syntax"
bad=("fail C_Encrypt" "fail C_Encrypt CKR_BOGUS" "fail C_Encrypt 0" "fail C_GetFunctionList CKR_DEVICE_ERROR"
     "fail C_Encrypt CKR_DEVICE_ERROR every 0" "fail C_Encrypt CKR_DEVICE_ERROR count -1"
     "fail C_Encrypt CKR_DEVICE_ERROR every 2 count 3" "fail C_Encrypt CKR_DEVICE_ERROR probability 1.5"
     "fail C_Encrypt CKR_DEVICE_ERROR seed 4" "delay C_Encrypt 5" "delay C_Encrypt" "delay C_Encrypt 2d"
     "delay C_Encrypt 10ms forwarded" "remove" "remove 0s" "remove 1s; remove 2s" "reboot x" "reboot 1; reboot 2"
     "explode C_Encrypt")
for s in "${bad[@]}"; do
    env -u TRENT_FAULTS_CONTROL TRENT_FAULTS_MODULE="$SOFTHSM" TRENT_FAULTS="$s" timeout 10 "$work/selftest" "$lib" refused x x \
        >"$work/out" 2>"$work/err" || true
    shell_check "refused: TRENT_FAULTS=\"$s\" ($(sed 's/^[^:]*: //' "$work/err" | head -1))" "grep -q '^1 passed, 0 failed$' '$work/out'"
done
good=("FAIL c_encrypt ckr_device_error COUNT 1 Forwarded" "fail * 0x30 every 7" "fail C_Sign 0x80000001 probability 0.25"
      "delay C_Decrypt 1.5s count 2" "hang C_Login 250us; delay * 2m probability 0" "remove 10s;;reboot 3  # comment"
      "   # only a comment" "")
for s in "${good[@]}"; do
    env -u TRENT_FAULTS_CONTROL TRENT_FAULTS_MODULE="$SOFTHSM" TRENT_FAULTS="$s" timeout 10 "$work/selftest" "$lib" accepted x x \
        >"$work/out" 2>"$work/err" || true
    shell_check "accepted: TRENT_FAULTS=\"$s\"" "grep -q '^1 passed, 0 failed$' '$work/out'"
done

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
