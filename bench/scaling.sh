#!/usr/bin/env bash
# What a second core (standing in for a second socket) buys each way of using it: the
# in-process engine on 1 and 2 threads, then bitnetd with one worker on one core, a
# pipeline of two workers with a core each, one worker on both cores, and a stage of two
# tensor-parallel ranks with a core each; 1 and 8 concurrent greedy streams of TOKENS
# tokens, REPEAT rounds each through `bitnetctl bench` (every run recorded in the bench
# history). Figures, not assertions.
#   bench/scaling.sh MODEL [TOKENS=64] [REPEAT=3]
# SETUPS overrides the daemon setups, '|'-separated flag sets for bitnetd.
set -u
cd "$(dirname "$0")/.."
M=${1:?usage: bench/scaling.sh MODEL [TOKENS] [REPEAT]}
N=${2:-64}; REPEAT=${3:-3}
SETUPS=${SETUPS:-"--workers 1 --threads-per-worker 1|--workers 2 --split-cpus|--workers 1|--workers 2 --tensor-parallel 2 --split-cpus"}
CTL=build/bitnetctl
R=$(mktemp -d /tmp/bitnetd-scaling.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill -9 -- -$pid 2>/dev/null; rm -rf "$R"' EXIT
fig() { node -e 'const j=JSON.parse(require("fs").readFileSync(0)); const v=j[process.argv[1]];
                 process.stdout.write(v===undefined?"-":(+v).toFixed(2))' "$1"; }
echo "cpu:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) | kernel $(uname -r) | $(nproc) cpus | $(git rev-parse --short HEAD)"
echo "model $M, greedy, $N generated tokens after an 8-token prompt, medians of $REPEAT"
printf "%-52s %8s %14s %14s %10s\n" setup streams "tok/s (all)" "tok/s/stream" "roofline"
for t in 1 2; do
    js=$($CTL bench --model "$M" --threads $t --prompt-tokens 8 --gen-tokens "$N" --repeat "$REPEAT" --json 2>/dev/null) ||
        { echo "in-process bench on $t threads failed"; continue; }
    printf "%-52s %8s %14s %14s %10s\n" "in-process, $t thread(s)" 1 "$(fig generated_tps <<<"$js")" \
        "$(fig generated_tps <<<"$js")" "$(fig memory_ratio <<<"$js")"
done
IFS='|' read -ra setups <<<"$SETUPS"
for flags in "${setups[@]}"; do
    setsid build/bitnetd --model "$M" $flags --run-dir "$R" --ctx 1024 2>"$R/bitnetd.log" & pid=$!
    ready=
    for _ in $(seq 1 600); do
        $CTL status --run-dir "$R" 2>/dev/null | grep -q '^state  *ready' && { ready=1; break; }
        kill -0 $pid 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$ready" ] || { echo "bitnetd $flags did not start: $(tail -3 "$R/bitnetd.log")"; pid=; continue; }
    for s in 1 8; do
        js=$($CTL bench --run-dir "$R" --streams $s --prompt-tokens 8 --gen-tokens "$N" \
             --repeat "$REPEAT" --json 2>/dev/null) || { echo "bench $flags $s streams failed"; continue; }
        printf "%-52s %8s %14s %14s %10s\n" "bitnetd $flags" $s "$(fig generated_tps <<<"$js")" \
            "$(fig stream_generated_tps <<<"$js")" "-"
    done
    $CTL shutdown --run-dir "$R" >/dev/null; wait $pid; pid=
done
