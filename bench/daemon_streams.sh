#!/usr/bin/env bash
# Generated tokens/s through bitnetd: one stream, then S concurrent streams, for each
# worker count, and the in-process engine for comparison. Figures, not assertions.
#   bench/daemon_streams.sh MODEL [WORKERS="1 2"] [STREAMS="4 8"] [TOKENS=64]
# BITNETD_FLAGS adds flags to bitnetd (e.g. "--lm-head q8"); the in-process run gets
# CTL_FLAGS (e.g. "--lm-head q8").
set -u
cd "$(dirname "$0")/.."
M=${1:?usage: bench/daemon_streams.sh MODEL [WORKERS] [STREAMS] [TOKENS]}
WORKERS=${2:-"1 2"}; STREAMS=${3:-"4 8"}; N=${4:-64}
R=$(mktemp -d /tmp/bitnetd-bench.XXXXXX)
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) | kernel $(uname -r)"
for W in $WORKERS; do
    build/bitnetd --model "$M" --workers "$W" --run-dir "$R" --ctx 1024 ${BITNETD_FLAGS:-} 2>"$R/bitnetd.log" & pid=$!
    for _ in $(seq 1 600); do
        build/bitnetctl status --run-dir "$R" 2>/dev/null | grep -q '^state  *ready' && break
        kill -0 $pid 2>/dev/null || { echo "bitnetd died: $(tail -3 "$R/bitnetd.log")"; exit 1; }
        sleep 0.1
    done
    echo "== $W workers, 1 stream"
    build/bitnetctl generate --run-dir "$R" --prompt "The capital of France is" -n "$N" --temp 0 2>&1 >/dev/null | tail -1
    for S in $STREAMS; do
        t0=$EPOCHREALTIME; kids=()
        for s in $(seq 1 "$S"); do
            build/bitnetctl generate --run-dir "$R" --prompt "Story number $s begins" -n "$N" --temp 0 >/dev/null 2>&1 & kids+=($!)
        done
        wait "${kids[@]}"
        awk -v a="$t0" -v b="$EPOCHREALTIME" -v s="$S" -v n="$N" \
            'BEGIN{printf "== %s workers, %d streams: aggregate %.2f tok/s (%d x %d tokens in %.2f s)\n", "'"$W"'", s, s*n/(b-a), s, n, b-a}'
    done
    build/bitnetctl shutdown --run-dir "$R" >/dev/null; wait $pid
done
echo "== in-process"
build/bitnetctl generate --model "$M" --prompt "The capital of France is" -n "$N" --temp 0 --ctx 1024 ${CTL_FLAGS:-} 2>&1 >/dev/null | tail -1
rm -rf "$R"
