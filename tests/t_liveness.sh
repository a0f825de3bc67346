#!/usr/bin/env bash
# Liveness does not depend on step length: a worker computing a long step (a 512-token
# prompt chunk on the scalar kernels, seconds a layer) keeps heartbeating and is never
# taken for dead, even with --heartbeat-timeout 200; and a worker that dies on every step
# costs its job an error naming the worker and the reason within seconds, not an endless
# kill-and-replay loop.
set -u
cd "$(dirname "$0")/.."
CTL=build/bitnetctl
T=build/test-tmp/liveness
rm -rf "$T"; mkdir -p "$T"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
pid=
R=$(mktemp -d /tmp/bitnetd-l.XXXXXX)
cleanup() { [ -n "$pid" ] && kill -9 -- -"$pid" 2>/dev/null; rm -rf "$R"; }
trap cleanup EXIT
wait_ready() {
    for _ in $(seq 1 400); do
        $CTL status --run-dir "$R" 2>/dev/null | grep -q '^state  *ready' && return 0
        kill -0 $pid 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
stop_daemon() { $CTL shutdown --run-dir "$R" >/dev/null 2>&1; wait $pid 2>/dev/null; pid=; }

M=$T/m.gguf
$CTL model synth --out $M --embd 512 --layers 4 --heads 8 --kv-heads 2 --ffn 1536 --seed 11 \
    2>/dev/null || fail synth
# about 1000 tokens of prompt
P=$(for i in $(seq 1 110); do printf 'the quick brown fox jumps over a lazy dog. '; done)
n=$($CTL tokenize --model $M --text "$P" | wc -w)
[ "$n" -gt 900 ] || fail "prompt of $n tokens, want about 1000"

# --- long steps: two chunks of 512 prompt tokens, each seconds long on scalar kernels
export BITNET_KERNEL=scalar
want=$($CTL generate --model $M --prompt "$P" -n 4 --temp 0 --ids 2>/dev/null)
setsid build/bitnetd --model $M --workers 2 --prefill-chunk 512 --heartbeat-timeout 200 \
    --run-dir "$R" 2>$T/long.log & pid=$!
wait_ready || fail "not ready (long steps)"
t0=$EPOCHREALTIME
got=$(timeout 120 $CTL generate --run-dir "$R" --prompt "$P" -n 4 --temp 0 --ids 2>$T/long-gen.err) ||
    fail "the long prompt failed: $(cat $T/long-gen.err)"
secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
echo "a $n-token prompt in chunks of 512 on scalar kernels: $secs s, heartbeat timeout 200 ms"
[ -n "$got" ] && [ "$got" = "$want" ] || fail "long prompt through the daemon '$got' != in-process '$want'"
grep -E "lost|restart|abandoned" $T/long.log && fail "a worker busy with a long step was taken for dead"
stop_daemon
unset BITNET_KERNEL

# --- a worker that dies on every step: the job fails, naming the worker and the signal
BITNET_TEST_FAULT=abort-in-step setsid build/bitnetd --model $M --workers 2 --run-dir "$R" \
    2>$T/crash.log & pid=$!
wait_ready || fail "not ready (crashing workers)"
t0=$EPOCHREALTIME
timeout 60 $CTL generate --run-dir "$R" --prompt "Hello" -n 4 --temp 0 >/dev/null 2>$T/crash-gen.err &&
    fail "a job whose every step crashes its worker succeeded"
secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
echo "a job that crashes its worker on every step failed after $secs s"
awk -v d="$secs" 'BEGIN{exit !(d < 30)}' || fail "the crash-loop job took $secs s to fail (want < 30)"
grep -qE "lost 3 times in a row.*worker w0 lost while ready: process [0-9]+ killed by signal 6" \
    $T/crash-gen.err || fail "crash-loop error said: $(cat $T/crash-gen.err)"
# the daemon lives on and answers: ready, or degraded (exit 3) while w0 restarts again
$CTL status --run-dir "$R" >/dev/null; rc=$?
[ $rc -eq 0 ] || [ $rc -eq 3 ] || fail "status after the crash loop exited $rc"
stop_daemon

echo "t_liveness: $fails failures"
[ $fails -eq 0 ]
