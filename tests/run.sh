#!/usr/bin/env bash
# Runs every test program (build/tests/test_*) and every script test (tests/t_*.sh)
# from the project root, and ends with the one line CI reads: "N passed, N failed".
# A program that exits 77 is skipped (every check it has needs ../shared/data, the
# third-party vectors beside the repository); then the line is "N passed, N failed,
# N skipped". The "NOT RUN:" lines of every log are shown under its result.
set -u
cd "$(dirname "$0")/.."
pass=0; fail=0; skip=0; not_run=0; failed=(); skipped=()
mkdir -p build/test-logs
run_one() {
    local name=$1; shift
    local log=build/test-logs/$name.log
    local t0=$EPOCHREALTIME rc=0
    "$@" >"$log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
        pass=$((pass + 1)); printf 'PASS %-28s %6.1fs\n' "$name" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')"
    elif [ "$rc" -eq 77 ]; then
        skip=$((skip + 1)); skipped+=("$name")
        local why; why=$(sed -n 's/^SKIP: //p' "$log" | head -n 1)
        printf 'SKIP %s: %s\n' "$name" "${why:-exit status 77}"
    else
        fail=$((fail + 1)); failed+=("$name"); printf 'FAIL %-28s (log: %s)\n' "$name" "$log"
        tail -n 20 "$log" | sed 's/^/    | /'
    fi
    grep '^NOT RUN: ' "$log" | sed 's/^/    /'
    not_run=$((not_run + $(grep -c '^NOT RUN: ' "$log")))
}
for t in build/tests/test_*; do
    [ -x "$t" ] && run_one "$(basename "$t")" "$t"
done
for t in tests/t_*.sh; do
    [ -f "$t" ] && run_one "$(basename "$t" .sh)" bash "$t"
done
[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
[ ${#skipped[@]} -gt 0 ] && echo "skipped: ${skipped[*]}"
[ "$not_run" -gt 0 ] && echo "not run: $not_run third-party cross-checks (the NOT RUN lines above); all else ran"
if [ "$skip" -gt 0 ]; then echo "$pass passed, $fail failed, $skip skipped"; else echo "$pass passed, $fail failed"; fi
[ "$fail" -eq 0 ]
