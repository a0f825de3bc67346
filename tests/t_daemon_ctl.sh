#!/usr/bin/env bash
# bitnetctl's daemon commands against a real bitnetd with two workers: what they print
# must agree with the in-process engine and with the daemon's state.
set -u
cd "$(dirname "$0")/.."
CTL=build/bitnetctl
T=build/test-tmp/daemon-ctl
R=$(mktemp -d /tmp/bitnetd-t.XXXXXX)
rm -rf "$T"; mkdir -p "$T"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
pid=
cleanup() { [ -n "$pid" ] && kill -9 -- -"$pid" 2>/dev/null; rm -rf "$R"; }
trap cleanup EXIT

# no daemon yet: a clear message, non-zero
err=$($CTL status --run-dir "$R" 2>&1) && fail "status without a daemon exited 0"
grep -q "no daemon at $R/ctl.sock" <<<"$err" || fail "status without daemon said: $err"

M=$T/m.gguf
$CTL model synth --out $M --embd 256 --layers 4 --heads 4 --kv-heads 2 --ffn 512 --seed 9 2>/dev/null || fail synth
setsid build/bitnetd --model $M --workers 2 --run-dir "$R" 2>$T/bitnetd.log & pid=$!
for _ in $(seq 1 200); do
    $CTL status --run-dir "$R" 2>/dev/null | grep -q '^state  *ready' && break
    sleep 0.05
done
st=$($CTL status --run-dir "$R") || fail "status"
grep -q "^workers  *2 ready of 2" <<<"$st" || fail "status: $st"
node -e 'const j=JSON.parse(require("fs").readFileSync(0)); if(j.state!=="ready"||j.workers!==2) process.exit(1)' \
    <<<"$($CTL status --run-dir "$R" --json)" || fail "status --json"
w=$($CTL workers --run-dir "$R" --json) || fail "workers"
node -e 'const w=JSON.parse(require("fs").readFileSync(0));
  if(w.length!==2||w[0].layer_begin!==0||w[1].layer_end!==4||w[0].layer_end!==w[1].layer_begin||w.some(x=>x.state!=="ready")) process.exit(1)' \
    <<<"$w" || fail "workers --json: $w"
$CTL placement --run-dir "$R" --json | node -e 'JSON.parse(require("fs").readFileSync(0))' || fail "placement --json"

# the daemon computes what the in-process engine computes
a=$($CTL generate --run-dir "$R" --prompt "Once upon a time" -n 12 --temp 0 --ids 2>/dev/null) || fail "generate via daemon"
b=$($CTL generate --model $M --prompt "Once upon a time" -n 12 --temp 0 --ids 2>/dev/null)
[ -n "$a" ] && [ "$a" = "$b" ] || fail "daemon greedy '$a' != in-process '$b'"
$CTL eval --run-dir "$R" --ids 128000,9906,1917,0 --logits-out $T/d.f32 2>/dev/null || fail "eval via daemon"
$CTL eval --model $M --ids 128000,9906,1917,0 --logits-out $T/p.f32 2>/dev/null
cmp -s $T/d.f32 $T/p.f32 || fail "eval logits through 2 workers differ from in-process"
# sampled: a top-k job gets only the best logits of each row from the last stage, a job
# without top-k whole rows; both must draw what the in-process sampler draws
for k in 40 0; do
    a=$($CTL generate --run-dir "$R" --prompt "Once upon a time" -n 24 --temp 0.9 --top-k $k \
        --top-p 0.95 --seed 5 --ids 2>/dev/null) || fail "sampled generate via daemon (top-k $k)"
    b=$($CTL generate --model $M --prompt "Once upon a time" -n 24 --temp 0.9 --top-k $k \
        --top-p 0.95 --seed 5 --ids 2>/dev/null)
    [ -n "$a" ] && [ "$a" = "$b" ] || fail "sampled top-k $k: daemon '$a' != in-process '$b'"
done
grep -q "sampled jobs get the best 40 logits of each row: 320 bytes a row instead of 513024" \
    $T/bitnetd.log || fail "the top-k job did not take the top-k path: $(grep sampled $T/bitnetd.log)"
t=$($CTL generate --run-dir "$R" --chat "Hi" -n 5 --temp 0.7 --seed 3 2>$T/gen.err) || fail "chat via daemon"
grep -q "generated" $T/gen.err || fail "no stats line: $(cat $T/gen.err)"

# where the steps' time went, per stage: every stage saw every step; the hops on this host
# are measured; a whole step takes at least its stages' compute and the hops between them
tj=$($CTL workers --run-dir "$R" --json) || fail "workers --json after jobs"
node -e 'const w=JSON.parse(require("fs").readFileSync(0)); const t=w.map(x=>x.timing);
  if (t.some(x=>!x||!(x.steps>0)||!(x.compute_us>0)||!(x.hop_in_us>=0)||!(x.queue_us>=0))) process.exit(1);
  if (t[0].steps!==t[1].steps) process.exit(2);
  const sum=t.reduce((a,x)=>a+x.compute_us+x.hop_in_us,0)+t[1].hop_out_us;
  if (!(t[1].step_us>=t[0].compute_us+t[1].compute_us) || !(t[1].step_us*1.05+50>=sum)) process.exit(3)' <<<"$tj" ||
    fail "workers --json timing: $tj"
tt=$($CTL workers --run-dir "$R" --timing) || fail "workers --timing"
grep -qE "^w1 +[0-9]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+$" <<<"$tt" || fail "workers --timing table: $tt"
$CTL status --run-dir "$R" --timing >/dev/null 2>&1 && fail "status accepted --timing"

$CTL cancel 987654 --run-dir "$R" >/dev/null 2>&1 && fail "cancel of an unknown job exited 0"
$CTL shutdown --run-dir "$R" || fail "shutdown"
for _ in $(seq 1 100); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
kill -0 $pid 2>/dev/null && fail "daemon still running after shutdown"
wait $pid; rc=$?; [ $rc -eq 0 ] || fail "daemon exit status $rc"
pid=
[ -z "$(ls "$R")" ] || fail "run dir not empty after shutdown: $(ls "$R")"

# A daemon started with the given settings computes what the in-process engine computes
# with the same session flags, and not what the default settings give (so the setting
# reached the workers): greedy tokens and eval logits through 2 workers.
#   same_as_in_process WHAT "DAEMON ARGS" "IN-PROCESS FLAGS" TAG
same_as_in_process() {
    local what=$1 dargs=$2 flags=$3 tag=$4 a b
    setsid build/bitnetd --model $M --workers 2 $dargs --run-dir "$R" 2>$T/bitnetd-$tag.log & pid=$!
    for _ in $(seq 1 200); do
        $CTL status --run-dir "$R" 2>/dev/null | grep -q '^state  *ready' && break
        sleep 0.05
    done
    a=$($CTL generate --run-dir "$R" --prompt "Once upon a time" -n 12 --temp 0 --ids 2>/dev/null) || fail "generate via daemon ($what)"
    b=$($CTL generate --model $M $flags --prompt "Once upon a time" -n 12 --temp 0 --ids 2>/dev/null)
    [ -n "$a" ] && [ "$a" = "$b" ] || fail "daemon $what greedy '$a' != in-process '$b'"
    $CTL eval --run-dir "$R" --ids 128000,9906,1917,0 --logits-out $T/d-$tag.f32 2>/dev/null || fail "eval via daemon ($what)"
    $CTL eval --model $M $flags --ids 128000,9906,1917,0 --logits-out $T/p-$tag.f32 2>/dev/null
    cmp -s $T/d-$tag.f32 $T/p-$tag.f32 || fail "$what eval logits through 2 workers differ from in-process"
    cmp -s $T/d-$tag.f32 $T/p.f32 && fail "$what logits equal the default settings': the setting was not used"
    $CTL shutdown --run-dir "$R" >/dev/null || fail "shutdown ($what)"
    wait $pid; pid=
}
# the int8 head in the last stage
same_as_in_process "q8 head" "--lm-head q8" "--lm-head q8" q8head
# the int8 KV cache in both workers, asked for in the INI file (the flag shares its parser)
printf '[daemon]\nkv_type = q8\n' > $T/kvq8.ini
same_as_in_process "q8 KV" "--config $T/kvq8.ini" "--kv-type q8" q8kv
err=$(build/bitnetd --model $M --kv-type q4 --run-dir "$R" 2>&1) && fail "--kv-type q4 accepted"
grep -q "kv-type: 'q4' is not f32, f16 or q8" <<<"$err" || fail "--kv-type q4 said: $err"
err=$(build/bitnetd --model $M --lm-head q4 --run-dir "$R" 2>&1) && fail "--lm-head q4 accepted"
grep -q "lm-head: 'q4' is not f16 (as stored) or q8" <<<"$err" || fail "--lm-head q4 said: $err"

echo "t_daemon_ctl: $fails failures"
[ $fails -eq 0 ]
