#!/usr/bin/env bash
# The libFuzzer targets (tests/fuzz/): a few seconds of each (make fuzz-smoke, which fails on
# any crash or sanitizer report), then every input of tests/fuzz/regress/<target>/ (crashes
# found and fixed) run once through its target, which must not crash again.
set -u
cd "$(dirname "$0")/.."
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
fails=0
make --no-print-directory fuzz-smoke || fails=$((fails + 1))
# the replays run fuzz targets too: not beside another run (fuzz.mk's lock)
mkdir -p build/fuzz/smoke/logs
exec 9>build/fuzz/.run.lock
flock 9
for dir in tests/fuzz/regress/*/; do
    [ -d "$dir" ] || continue
    t=$(basename "$dir")
    files=("$dir"*)
    [ -e "${files[0]}" ] || continue
    if [ ! -x "build/fuzz/fuzz_$t" ]; then
        echo "FAIL: tests/fuzz/regress/$t has no target build/fuzz/fuzz_$t"
        fails=$((fails + 1))
        continue
    fi
    # libFuzzer runs the files given as arguments once each and stops at the first crash
    if ! build/fuzz/fuzz_"$t" -close_fd_mask=2 -rss_limit_mb=2048 "${files[@]}" \
            >"build/fuzz/smoke/logs/regress-$t.log" 2>&1; then
        log=build/fuzz/smoke/logs/regress-$t.log
        echo "FAIL: a regression input of $t crashes again; log: $log"
        { grep -a 'Running: ' "$log" | tail -1; grep -a -m1 -E 'ERROR: |runtime error' "$log"; } |
            sed 's/^/    /'
        fails=$((fails + 1))
    else
        echo "regress $t: ${#files[@]} inputs, no crash"
    fi
done
[ "$fails" -eq 0 ]
