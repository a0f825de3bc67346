#!/usr/bin/env bash
# Runs every test program (build/tests/test_*) and every script test (tests/t_*.sh)
# from the project root, and ends with the one line CI reads: "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
pass=0; fail=0; failed=()
mkdir -p build/test-logs
run_one() {
    local name=$1; shift
    local log=build/test-logs/$name.log
    local t0=$EPOCHREALTIME
    if "$@" >"$log" 2>&1; then
        pass=$((pass + 1)); printf 'PASS %-28s %6.1fs\n' "$name" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')"
    else
        fail=$((fail + 1)); failed+=("$name"); printf 'FAIL %-28s (log: %s)\n' "$name" "$log"
        tail -n 20 "$log" | sed 's/^/    | /'
    fi
}
for t in build/tests/test_*; do
    [ -x "$t" ] && run_one "$(basename "$t")" "$t"
done
for t in tests/t_*.sh; do
    [ -f "$t" ] && run_one "$(basename "$t" .sh)" bash "$t"
done
[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
