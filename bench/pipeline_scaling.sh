#!/usr/bin/env bash
# What a second worker buys (issue: every socket adds speed). Aggregate generated tokens/s
# of S concurrent greedy streams of N tokens through bitnetd, for each setup, REPEAT times
# in alternation (the host's speed drifts; alternating keeps the comparison fair), then
# the median of each. Figures, not assertions.
#   bench/pipeline_scaling.sh MODEL [STREAMS=8] [TOKENS=64] [REPEAT=3]
# SETUPS overrides the setups, '|'-separated flag sets for bitnetd.
set -u
cd "$(dirname "$0")/.."
M=${1:?usage: bench/pipeline_scaling.sh MODEL [STREAMS] [TOKENS] [REPEAT]}
S=${2:-8}; N=${3:-64}; REPEAT=${4:-3}
SETUPS=${SETUPS:-"--workers 1 --threads-per-worker 1|--workers 2 --split-cpus|--workers 1"}
R=$(mktemp -d /tmp/bitnetd-bench.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill -9 -- -$pid 2>/dev/null; rm -rf "$R"' EXIT
echo "cpu:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) | kernel $(uname -r) | $(nproc) cpus"
echo "model $M, $S streams x $N tokens, greedy, medians of $REPEAT"
IFS='|' read -ra setups <<<"$SETUPS"
declare -A runs
for rep in $(seq 1 "$REPEAT"); do
    for i in "${!setups[@]}"; do
        flags=${setups[$i]}
        setsid build/bitnetd --model "$M" $flags --run-dir "$R" --ctx 1024 2>"$R/bitnetd.log" & pid=$!
        for _ in $(seq 1 600); do
            build/bitnetctl status --run-dir "$R" 2>/dev/null | grep -q '^state  *ready' && break
            kill -0 $pid 2>/dev/null || { echo "bitnetd $flags died: $(tail -3 "$R/bitnetd.log")"; exit 1; }
            sleep 0.1
        done
        # one short job first: page faults and first-touch costs are not the setup's speed
        build/bitnetctl generate --run-dir "$R" --prompt "Warm up" -n 4 --temp 0 >/dev/null 2>&1
        t0=$EPOCHREALTIME; kids=()
        for s in $(seq 1 "$S"); do
            build/bitnetctl generate --run-dir "$R" --prompt "Story number $s begins" -n "$N" \
                --temp 0 >"$R/out.$s" 2>/dev/null & kids+=($!)
        done
        wait "${kids[@]}"
        tps=$(awk -v a="$t0" -v b="$EPOCHREALTIME" -v s="$S" -v n="$N" 'BEGIN{printf "%.2f", s*n/(b-a)}')
        depth=$(grep -o 'pipeline depth [0-9]*' "$R/bitnetd.log" | grep -o '[0-9]*$' || echo 1)
        echo "run $rep | $flags (depth ${depth:-1}) | $tps tok/s"
        runs[$i]="${runs[$i]:-} $tps"
        build/bitnetctl shutdown --run-dir "$R" >/dev/null; wait $pid; pid=
    done
done
base=
for i in "${!setups[@]}"; do
    med=$(tr ' ' '\n' <<<"${runs[$i]}" | grep . | sort -n | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
    [ -z "$base" ] && base=$med
    awk -v m="$med" -v b="$base" -v f="${setups[$i]}" -v r="${runs[$i]}" \
        'BEGIN{printf "median %8.2f tok/s  %.2fx the first  | %s |%s\n", m, m/b, f, r}'
done
