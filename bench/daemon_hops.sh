#!/usr/bin/env bash
# The cost of one pipeline hop: a greedy generation through bitnetd with 1, 2, ...
# workers on a model small enough that compute hardly counts, so the time per token that
# each added worker brings is the cost of one more hop (ZeroMQ ipc://, protobuf packing
# and unpacking of the hidden state, the next stage's wake-up). Figures, not assertions.
#   bench/daemon_hops.sh [MODEL] [WORKERS="1 2"] [TOKENS=256] [REPEAT=3]
# Without MODEL a small one is synthesized under build/models/.
set -u
cd "$(dirname "$0")/.."
M=${1:-build/models/hops.gguf}; WORKERS=${2:-"1 2"}; N=${3:-256}; REPEAT=${4:-3}
if [ ! -f "$M" ]; then
    mkdir -p "$(dirname "$M")"
    build/bitnetctl model synth --out "$M" --embd 256 --layers 8 --heads 4 --kv-heads 1 \
        --ffn 512 --seed 7 >/dev/null || exit 1
fi
R=$(mktemp -d /tmp/bitnetd-hops.XXXXXX)
trap 'rm -rf "$R"' EXIT
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) | kernel $(uname -r) | model $M"
ms_per_token() { # "... generated 256 tokens in 1.23s ..." -> ms per token
    sed -n 's/.*generated:\{0,1\} \([0-9]*\) tokens in \([0-9.]*\)s.*/\1 \2/p' | awk '{printf "%.3f\n", 1000*$2/$1}'
}
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
inproc=$(for _ in $(seq 1 "$REPEAT"); do
    build/bitnetctl generate --model "$M" --prompt "Once upon a time" -n "$N" --temp 0 2>&1 >/dev/null | ms_per_token
done | median)
echo "in-process: $inproc ms/token"
prev=""
for W in $WORKERS; do
    build/bitnetd --model "$M" --workers "$W" --run-dir "$R" 2>"$R/bitnetd.log" & pid=$!
    for _ in $(seq 1 300); do
        build/bitnetctl status --run-dir "$R" 2>/dev/null | grep -q '^state  *ready' && break
        kill -0 $pid 2>/dev/null || { echo "bitnetd died: $(tail -3 "$R/bitnetd.log")"; exit 1; }
        sleep 0.1
    done
    t=$(for _ in $(seq 1 "$REPEAT"); do
        build/bitnetctl generate --run-dir "$R" --prompt "Once upon a time" -n "$N" --temp 0 2>&1 >/dev/null | ms_per_token
    done | median)
    build/bitnetctl shutdown --run-dir "$R" >/dev/null; wait $pid
    # W workers: W + 1 hops (daemon -> w0 -> ... -> daemon)
    extra=$(awk -v a="$t" -v b="$inproc" 'BEGIN{printf "%.3f", a-b}')
    line="$W workers ($((W + 1)) hops): $t ms/token, +$extra ms over in-process"
    [ -n "$prev" ] && line="$line, +$(awk -v a="$t" -v b="$prev" 'BEGIN{printf "%.3f", a-b}') ms for the added hop"
    echo "$line"
    prev=$t
done
