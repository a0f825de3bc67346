#!/usr/bin/env bash
# Tensor-parallel stages through a real bitnetd: a stage computed by two processes (the
# worker and the rank it starts) must give the in-process engine's tokens and logits bit
# for bit, alone and in a pipeline of such stages, and keep doing so when a rank is
# killed mid-generation; bad requests for it are refused with the reason.
set -u
cd "$(dirname "$0")/.."
CTL=build/bitnetctl
T=build/test-tmp/tensor-parallel
R=$(mktemp -d /tmp/bitnetd-t.XXXXXX)
rm -rf "$T"; mkdir -p "$T"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
pid=
cleanup() { [ -n "$pid" ] && kill -9 -- -"$pid" 2>/dev/null; rm -rf "$R"; }
trap cleanup EXIT

# 4 KV heads, so that 2 ranks hold 2 each; a model with 1 KV head for the refusal
M=$T/kv4.gguf
$CTL model synth --out $M --shape tiny --heads 8 --kv-heads 4 --layers 4 --seed 11 2>/dev/null ||
    { echo "FAIL: model synth"; exit 1; }
M1=$T/kv1.gguf
$CTL model synth --out $M1 --shape tiny --layers 2 --seed 12 2>/dev/null || fail "model synth kv1"

P1="Once upon a time"
P2="The capital of France is"
ref1=$($CTL generate --model $M --prompt "$P1" -n 40 --temp 0 --ids 2>/dev/null) || fail "in-process generate"
ref2=$($CTL generate --model $M --prompt "$P2" -n 1500 --temp 0 --ids 2>/dev/null) || fail "in-process generate 2"
$CTL eval --model $M --ids 128000,9906,1917,374,264 --logits-out $T/ref.f32 2>/dev/null || fail "in-process eval"

start() { # tag, bitnetd flags...
    local tag=$1; shift
    setsid build/bitnetd --model $M "$@" --run-dir "$R" 2>$T/bitnetd-$tag.log & pid=$!
    for _ in $(seq 100); do
        $CTL status --run-dir "$R" 2>/dev/null | grep -q '^state  *ready' && return 0
        sleep 0.1
    done
    fail "$tag: not ready: $(tail -3 $T/bitnetd-$tag.log)"
    return 1
}
stop() {
    $CTL shutdown --run-dir "$R" >/dev/null || fail "shutdown ($1)"
    wait $pid
    pid=
}
# this daemon's worker for a stage, and the rank-1 process it started
leader_of() { pgrep -f -- "--id $1 --control ipc://$R/" | head -1; }
rank1_of() { local l; l=$(leader_of "$1"); [ -n "$l" ] && pgrep -P "$l" -f -- "--tp-follower [0-9]*:1 "; }
followers() { rank1_of "$1" | wc -l; }

# one stage of two ranks, a core each
if start tp2 --workers 2 --tensor-parallel 2 --split-cpus; then
    $CTL placement --run-dir "$R" --json | grep -q '"tensor_parallel":2' || fail "tp2: placement does not say 2 ranks"
    [ "$(followers w0)" = 1 ] || fail "tp2: $(followers w0) processes for rank 1 of w0 (want 1)"
    a=$($CTL generate --run-dir "$R" --prompt "$P1" -n 40 --temp 0 --ids 2>/dev/null) || fail "tp2: generate"
    [ "$a" = "$ref1" ] || fail "tp2: tokens differ from the in-process engine's: $a / $ref1"
    $CTL eval --run-dir "$R" --ids 128000,9906,1917,374,264 --logits-out $T/tp2.f32 2>/dev/null || fail "tp2: eval"
    cmp -s $T/ref.f32 $T/tp2.f32 || fail "tp2: logits differ from the in-process engine's"
    # a benchmark of this placement is recorded as one (not as a lone worker's)
    $CTL bench --run-dir "$R" --streams 1 --prompt-tokens 4 --gen-tokens 4 --repeat 1 --probe-mib 16 \
        --db $T/bench.db >/dev/null 2>&1 || fail "tp2: bench"
    $CTL bench show 1 --db $T/bench.db --json 2>/dev/null | grep -q '"tensor_parallel":2' ||
        fail "tp2: the bench receipt does not record 2 ranks"
    # rank 1 killed mid-generation: the stage restarts, the job replays, same tokens
    # (1500 tokens take seconds; the kill lands a few hundred tokens in)
    victim=$(rank1_of w0 | head -1)
    $CTL generate --run-dir "$R" --prompt "$P2" -n 1500 --temp 0 --ids >$T/killed.txt 2>$T/killed.err & g=$!
    sleep 0.4
    [ -n "$victim" ] && kill -9 "$victim"
    wait $g || fail "tp2: generation with rank 1 killed failed: $(cat $T/killed.err)"
    [ "$(cat $T/killed.txt)" = "$ref2" ] || fail "tp2: tokens after killing rank 1 differ"
    grep -q "1 running job will replay" $T/bitnetd-tp2.log || fail "tp2: the kill did not land mid-generation"
    grep -q "tensor-parallel rank 1 (pid $victim) was killed by signal 9" $T/bitnetd-tp2.log ||
        fail "tp2: the log does not name the killed rank"
    grep -q "pipeline ready again" $T/bitnetd-tp2.log || fail "tp2: the stage did not come back"
    # the leader killed: its rank dies with it, none is left behind
    leader=$(leader_of w0)
    old=$(rank1_of w0 | head -1)
    [ -n "$leader" ] && [ -n "$old" ] || fail "tp2: no leader ($leader) or rank 1 ($old) to kill"
    kill -9 "$leader"
    # gone, or a zombie waiting for init to reap it
    alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st:0:1}" != Z ]; }
    for _ in $(seq 50); do alive "$old" || break; sleep 0.1; done
    alive "$old" && fail "tp2: rank 1 (pid $old) outlived its leader"
    for _ in $(seq 100); do
        $CTL status --run-dir "$R" 2>/dev/null | grep -q '^state  *ready' && break
        sleep 0.1
    done
    a=$($CTL generate --run-dir "$R" --prompt "$P1" -n 40 --temp 0 --ids 2>/dev/null) || fail "tp2: generate after the leader died"
    [ "$a" = "$ref1" ] || fail "tp2: tokens after the leader was restarted differ"
    stop tp2
fi
[ -z "$(leader_of w0)" ] || fail "tp2: the worker is left after shutdown"

# a pipeline of two stages of two ranks (on a described machine of 4 one-core nodes: the
# workers run unpinned here)
if start pipe-tp --workers 4 --tensor-parallel 2 --topology "synthetic:pack:4 [numa(memory=8GB)] core:1 pu:1"; then
    w=$($CTL workers --run-dir "$R" --json) || fail "pipe-tp: workers"
    [ "$(grep -o '"id":"w[0-9]"' <<<"$w" | wc -l)" = 2 ] || fail "pipe-tp: not 2 stages: $w"
    a=$($CTL generate --run-dir "$R" --prompt "$P1" -n 40 --temp 0 --ids 2>/dev/null) || fail "pipe-tp: generate"
    [ "$a" = "$ref1" ] || fail "pipe-tp: tokens differ from the in-process engine's"
    $CTL eval --run-dir "$R" --ids 128000,9906,1917,374,264 --logits-out $T/pipe.f32 2>/dev/null || fail "pipe-tp: eval"
    cmp -s $T/ref.f32 $T/pipe.f32 || fail "pipe-tp: logits differ"
    # the second stage's rank 1 killed mid-generation: same tokens
    victim=$(rank1_of w1 | head -1)
    $CTL generate --run-dir "$R" --prompt "$P2" -n 1500 --temp 0 --ids >$T/pipe-killed.txt 2>$T/pipe-killed.err & g=$!
    sleep 0.4
    [ -n "$victim" ] && kill -9 "$victim" || fail "pipe-tp: no rank 1 of w1 to kill"
    wait $g || fail "pipe-tp: generation with a rank killed failed: $(cat $T/pipe-killed.err)"
    [ "$(cat $T/pipe-killed.txt)" = "$ref2" ] || fail "pipe-tp: tokens after killing w1's rank 1 differ"
    grep -q "1 running job will replay" $T/bitnetd-pipe-tp.log || fail "pipe-tp: the kill did not land mid-generation"
    stop pipe-tp
fi

# the int8 head: each rank converts and multiplies its own rows of it
$CTL eval --model $M --lm-head q8 --ids 128000,9906,1917,374,264 --logits-out $T/ref-q8.f32 2>/dev/null ||
    fail "in-process eval, int8 head"
if start tp2-q8 --workers 2 --tensor-parallel 2 --split-cpus --lm-head q8; then
    $CTL eval --run-dir "$R" --ids 128000,9906,1917,374,264 --logits-out $T/tp2-q8.f32 2>/dev/null || fail "tp2-q8: eval"
    cmp -s $T/ref-q8.f32 $T/tp2-q8.f32 || fail "tp2-q8: logits differ from the in-process int8 head's"
    cmp -s $T/ref.f32 $T/tp2-q8.f32 && fail "tp2-q8: logits equal the F16 head's (no int8 head?)"
    stop tp2-q8
fi

# refusals, each with its reason and before anything starts
err=$(build/bitnetd --model $M --workers 3 --tensor-parallel 2 --run-dir "$R" \
      --topology "synthetic:pack:4 [numa(memory=8GB)] core:1 pu:1" 2>&1) && fail "3 workers in stages of 2 accepted"
grep -q "3 workers do not make stages of 2" <<<"$err" || fail "3 workers / 2 ranks said: $err"
err=$(build/bitnetd --model $M1 --workers 2 --tensor-parallel 2 --run-dir "$R" 2>&1) && fail "2 ranks over 1 KV head accepted"
grep -q "1 KV heads, and each rank needs at least one" <<<"$err" || fail "1 KV head said: $err"
err=$(build/bitnetd --model $M --tensor-parallel 9 --run-dir "$R" 2>&1) && fail "--tensor-parallel 9 accepted"
err=$(build/bitnetd --model $M --tensor-parallel 2 --listen tcp://127.0.0.1:0 --remote-workers w1 \
      --run-dir "$R" 2>&1) && fail "tensor parallelism with remote workers accepted"
grep -q "ranks of a stage run on one host" <<<"$err" || fail "tp with remote workers said: $err"

# the plan for a described two-socket machine, without starting anything
pl=$($CTL placement --model $M --topology "synthetic:package:2 numa:1 core:16 pu:2" --workers 2 \
      --tensor-parallel 2 --json) || fail "placement --tensor-parallel"
grep -q '"tensor_parallel":2' <<<"$pl" || fail "placement for 2 sockets: not one stage of 2 ranks: $pl"

[ $fails -eq 0 ] && echo "t_tensor_parallel: ok" || echo "t_tensor_parallel: $fails failed"
[ $fails -eq 0 ]
