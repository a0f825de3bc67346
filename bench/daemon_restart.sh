#!/usr/bin/env bash
# Time from a worker's death to the next token of a generation in flight: bitnetd notices
# (SIGCHLD), starts the worker again, it loads its layers, the job replays its tokens so
# far, and output resumes. Figures, not assertions.
#   bench/daemon_restart.sh [MODEL] [REPEAT=3]
# Without MODEL the small model of bench/daemon_hops.sh is synthesized under build/models/.
set -u
cd "$(dirname "$0")/.."
M=${1:-build/models/hops.gguf}; REPEAT=${2:-3}
if [ ! -f "$M" ]; then
    mkdir -p "$(dirname "$M")"
    build/bitnetctl model synth --out "$M" --embd 256 --layers 8 --heads 4 --kv-heads 1 \
        --ffn 512 --seed 7 >/dev/null 2>&1 || exit 1
fi
R=$(mktemp -d /tmp/bitnetd-restart.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$R"' EXIT
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) | kernel $(uname -r) | model $M"
build/bitnetd --model "$M" --workers 2 --run-dir "$R" 2>"$R/bitnetd.log" & pid=$!
ready() {
    for _ in $(seq 1 600); do
        build/bitnetctl status --run-dir "$R" 2>/dev/null | grep -q '^state  *ready' && return 0
        sleep 0.05
    done
    return 1
}
ready || { echo "bitnetd not ready: $(tail -3 "$R/bitnetd.log")"; exit 1; }
for run in $(seq 1 "$REPEAT"); do
    # every token's arrival time, as the client sees it
    build/bitnetctl generate --run-dir "$R" --prompt "Once upon a time" -n 400 --temp 0 --ids \
        2>/dev/null | while read -r -d ' ' tok; do echo "$EPOCHREALTIME $tok"; done >"$R/times" &
    gen=$!
    for _ in $(seq 1 200); do [ "$(wc -l <"$R/times")" -ge 20 ] && break; sleep 0.01; done
    victim=$(pgrep -f -- "bitnet-worker --id w1 .*$R" | head -1)
    t_kill=$EPOCHREALTIME
    kill -9 "$victim"
    wait $gen
    # the restart shows as the longest gap between two tokens; a token already on its way
    # when the worker died may still arrive just after the kill
    awk -v k="$t_kill" -v run="$run" '
        { t[NR] = $1 }
        END {
            for (i = 2; i <= NR; i++) if (t[i] - t[i - 1] > g) { g = t[i] - t[i - 1]; at = i }
            for (i = 2; i <= 20; i++) gaps = gaps + (t[i] - t[i - 1])
            printf "run %d: %d tokens; output resumed %.1f ms after the kill (longest gap %.1f ms, normal gap %.2f ms)\n",
                   run, NR, 1000 * (t[at] - k), 1000 * g, 1000 * gaps / 19
        }' "$R/times"
    ready || { echo "bitnetd did not recover: $(tail -3 "$R/bitnetd.log")"; exit 1; }
done
build/bitnetctl shutdown --run-dir "$R" >/dev/null; wait $pid; pid=
