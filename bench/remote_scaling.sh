#!/usr/bin/env bash
# The pipeline of bench/scaling.sh with its second stage on "another host": bitnet-worker
# w1 in a network namespace behind a veth pair, joined over TCP with CURVE, on its own core
# (taskset) with one thread; w0 local on the other core. 1 and 8 concurrent greedy streams
# through `bitnetctl bench` (recorded in the bench history), and a check that the greedy
# text is the in-process engine's. Needs root (ip netns). Figures, not assertions.
#   bench/remote_scaling.sh MODEL [TOKENS=64] [REPEAT=3]
set -u
cd "$(dirname "$0")/.."
M=${1:?usage: bench/remote_scaling.sh MODEL [TOKENS] [REPEAT]}
N=${2:-64}; REPEAT=${3:-3}
CTL=build/bitnetctl
T=$(mktemp -d /tmp/bitnetd-remote-bench.XXXXXX)
pid= wpid=
. tests/netns.sh
cleanup() {
    [ -n "$wpid" ] && { kill -9 "$wpid"; wait "$wpid"; } 2>/dev/null
    [ -n "$pid" ] && kill -9 -- -"$pid" 2>/dev/null
    netns_down
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
netns_up "$T" >"$T/netns.msg" || { echo "remote_scaling: $(cat "$T/netns.msg")"; exit 1; }
mkdir -p "$T/allow" "$T/run"
for k in daemon w1; do $CTL keygen --out "$T/$k" >/dev/null || exit 1; done
cp "$T/w1.pub" "$T/allow/"
export XDG_CACHE_HOME=$T/cache   # the digests of the model's tensors
fig() { node -e 'const j=JSON.parse(require("fs").readFileSync(0)); const v=j[process.argv[1]];
                 process.stdout.write(v===undefined?"-":(+v).toFixed(2))' "$1"; }
echo "cpu:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) | kernel $(uname -r) | $(nproc) cpus | $(git rev-parse --short HEAD)"
echo "model $M, greedy, $N generated tokens after an 8-token prompt, medians of $REPEAT;"
echo "w0 local on cpu 0, w1 in namespace $NS ($NSADDR) on cpu 1, tcp + CURVE"
setsid build/bitnetd --model "$M" --workers 2 --split-cpus --remote-workers w1 \
    --listen "tcp://$HOST:5600" --curve-key "$T/daemon.key" --allow-keys "$T/allow" \
    --ctx 1024 --run-dir "$T/run" 2>"$T/bitnetd.log" & pid=$!
ip netns exec "$NS" taskset -c 1 build/bitnet-worker --id w1 --control "tcp://$HOST:5600" \
    --server-key "$T/daemon.pub" --key "$T/w1.key" --data "tcp://$NSADDR:5601" --threads 1 \
    2>"$T/w1.log" & wpid=$!
ready=
for _ in $(seq 1 1200); do
    $CTL status --run-dir "$T/run" 2>/dev/null | grep -q '^workers  *2 ready of 2' && { ready=1; break; }
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
done
[ -n "$ready" ] || { echo "not ready: $(tail -3 "$T/bitnetd.log") / $(tail -3 "$T/w1.log")"; exit 1; }
a=$($CTL generate --run-dir "$T/run" --prompt "Once upon a time" -n 32 --temp 0 --ids 2>/dev/null)
b=$($CTL generate --model "$M" --prompt "Once upon a time" -n 32 --temp 0 --ids 2>/dev/null)
[ -n "$a" ] && [ "$a" = "$b" ] && echo "greedy text: the in-process engine's" ||
    echo "greedy text DIFFERS from the in-process engine's"
printf "%-52s %8s %14s %14s\n" setup streams "tok/s (all)" "tok/s/stream"
for s in 1 8; do
    js=$($CTL bench --run-dir "$T/run" --streams $s --prompt-tokens 8 --gen-tokens "$N" \
         --repeat "$REPEAT" --json 2>/dev/null) || { echo "bench $s streams failed"; continue; }
    printf "%-52s %8s %14s %14s\n" "w0 local + w1 remote (tcp, CURVE)" $s \
        "$(fig generated_tps <<<"$js")" "$(fig stream_generated_tps <<<"$js")"
done
$CTL shutdown --run-dir "$T/run" >/dev/null; wait $pid; pid=
