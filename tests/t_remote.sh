#!/usr/bin/env bash
# Remote workers over CURVE, with the remote one behind another network stack: bitnetd on
# the host side of a veth pair, bitnet-worker w1 inside a network namespace. Checks that it
# joins and computes what the in-process engine does, that a worker with a key the daemon
# does not list is refused (and says so), that killing the remote worker fails a generation
# with a clear error within --worker-timeout while the daemon keeps answering, and that the
# pipeline serves again once the worker is back. And that w1's own data socket admits only
# the sender the daemon names (local w0, which sends as the daemon's key): a stranger who
# knows w1's public key and pushes a Forward into it is refused, and says so in w1's log.
#
# Needs root (ip netns, veth); without it the test fails rather than skips. Names carry a
# per-run tag and the /30 is drawn from 198.18.0.0/15, so concurrent runs do not collide.
set -u
cd "$(dirname "$0")/.."
CTL=build/bitnetctl
WT=3    # --worker-timeout, seconds
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

. tests/netns.sh
T=$(mktemp -d "$PWD/build/test-tmp/remote.XXXXXX")
R=$(mktemp -d /tmp/bitnetd-r.XXXXXX)   # short: ipc paths must fit a unix socket name
dpid= wpid=
cleanup() {
    [ -n "$wpid" ] && kill -9 "$wpid" 2>/dev/null
    [ -n "$dpid" ] && kill -9 -- -"$dpid" 2>/dev/null
    netns_down
    rm -rf "$R"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# ---- network: the worker's "host" is a namespace behind a veth pair
# (not in a subshell: it sets the names and addresses)
if ! netns_up "$T" >"$T/netns.msg"; then
    echo "FAIL: $(cat "$T/netns.msg")"
    exit 1
fi
echo "namespace $NS, host side $HOST, worker side $NSADDR"

# ---- keys and model
M=$T/m.gguf
$CTL model synth --out "$M" --shape tiny --layers 4 --seed 1 >/dev/null 2>&1 || fail synth
mkdir -p "$T/allow"
for k in daemon w1 intruder; do
    $CTL keygen --out "$T/$k" >/dev/null || fail "keygen $k"
done
cp "$T/w1.pub" "$T/allow/"
[ "$(stat -c %a "$T/w1.key")" = 600 ] || fail "w1.key mode $(stat -c %a "$T/w1.key")"
$CTL keygen --out "$T/w1" 2>"$T/keygen.err" && fail "keygen overwrote w1 without --force"
grep -q "w1.key: File exists" "$T/keygen.err" || fail "keygen refusal said: $(cat "$T/keygen.err")"
W1_PUB=$(cut -d' ' -f1 "$T/w1.pub") BAD_PUB=$(cut -d' ' -f1 "$T/intruder.pub")
D_PUB=$(cut -d' ' -f1 "$T/daemon.pub")

# ---- settings that do not fit together are refused before anything starts
bad() {  # expected status, expected text, arguments...
    local want=$1 text=$2; shift 2
    local out; out=$(timeout 20 build/bitnetd --model "$M" --run-dir "$R" "$@" 2>&1); local rc=$?
    [ $rc -eq "$want" ] && grep -qF -- "$text" <<<"$out" || fail "bitnetd $*: status $rc, said: $out"
}
L="tcp://$HOST:5600" K=(--curve-key "$T/daemon.key" --allow-keys "$T/allow")
bad 2 "--remote-workers needs --listen" --workers 2 --remote-workers w1
bad 2 "--listen needs --curve-key" --listen "$L"
bad 2 "--listen needs --allow-keys" --listen "$L" --curve-key "$T/daemon.key"
bad 2 "expected tcp://ADDR:PORT" --listen "tcp://$HOST" "${K[@]}"
bad 2 "is not a tcp://ADDR:PORT endpoint" --listen "ipc:///tmp/x" "${K[@]}"
bad 2 "--worker-timeout: 0 is outside 1..86400" --worker-timeout 0
bad 1 "--curve-key: $T/daemon.pub:1: expected 'public-key = KEY'" --listen "$L" \
    --curve-key "$T/daemon.pub" --allow-keys "$T/allow"
bad 1 "--allow-keys: zap: $T/nowhere: No such file" --listen "$L" \
    --curve-key "$T/daemon.key" --allow-keys "$T/nowhere"
bad 1 "'w5' is not a stage of this placement (w0..w1)" --listen "$L" "${K[@]}" \
    --workers 2 --remote-workers w5
out=$(build/bitnet-worker --id w1 --control "$L" --data "tcp://$NSADDR:5601" 2>&1); rc=$?
[ $rc -eq 2 ] && grep -qF "tcp needs --server-key FILE" <<<"$out" ||
    fail "worker without keys: $rc $out"
out=$(build/bitnet-worker --id w1 --control "$L" --server-key "$T/daemon.pub" \
      --data "tcp://$NSADDR:5601" 2>&1); rc=$?
[ $rc -eq 2 ] && grep -qF "tcp needs --key FILE" <<<"$out" || fail "worker without --key: $rc $out"

# ---- bitnetd on the host side, its remote settings from the INI file: w0 local, w1 remote
cat >"$T/bitnetd.ini" <<EOF
[daemon]
workers = 2
remote_workers = w1
listen = $L
curve_key = $T/daemon.key
allow_keys = $T/allow
worker_timeout = $WT
EOF
# digests of the model's tensors are cached here, not in the user's ~/.cache
export XDG_CACHE_HOME=$T/cache
setsid build/bitnetd --model "$M" --config "$T/bitnetd.ini" --run-dir "$R" 2>"$T/bitnetd.log" &
dpid=$!
start_w1() {  # [its own copy of the model [more flags]]
    local model=${1:-}; shift || true
    ip netns exec "$NS" build/bitnet-worker --id w1 --control "tcp://$HOST:5600" \
        --server-key "$T/daemon.pub" --key "$T/w1.key" --data "tcp://$NSADDR:5601" \
        ${model:+--model "$model"} "$@" 2>>"$T/w1.log" & wpid=$!
}
wait_ready() {  # [number of workers, 2]
    local n=${1:-2}
    for _ in $(seq 1 300); do
        $CTL status --run-dir "$R" 2>/dev/null | grep -q "^workers  *$n ready of $n" && return 0
        kill -0 "$dpid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
start_w1
wait_ready || { fail "not ready with the remote worker; daemon log:"; cat "$T/bitnetd.log";
                echo "worker log:"; cat "$T/w1.log"; exit 1; }
[ "$(ip netns identify "$wpid")" = "$NS" ] || fail "w1 (pid $wpid) is not in namespace $NS"
grep -qF "worker w1: joined from host $(uname -n), $NSADDR (key $W1_PUB)" "$T/bitnetd.log" ||
    fail "no join from $NSADDR with w1's key in the daemon log"
w=$($CTL workers --run-dir "$R" --json) || fail "workers"
node -e 'const w=JSON.parse(require("fs").readFileSync(0));
  if(w.length!==2||w[1].state!=="ready"||w[1].endpoint!==process.argv[1]||w[0].endpoint.slice(0,6)!=="ipc://") process.exit(1)' \
    "tcp://$NSADDR:5601" <<<"$w" || fail "workers --json: $w"

# ---- the remote pipeline computes what the in-process engine does (f32 hidden states)
ref=$($CTL generate --model "$M" --prompt "Once upon a time" -n 16 --temp 0 --ids 2>/dev/null)
a=$($CTL generate --run-dir "$R" --prompt "Once upon a time" -n 16 --temp 0 --ids 2>/dev/null) ||
    fail "generate through the remote worker"
[ -n "$a" ] && [ "$a" = "$ref" ] || fail "remote greedy '$a' != in-process '$ref'"
$CTL eval --run-dir "$R" --ids 128000,9906,1917,0 --logits-out "$T/d.f32" 2>/dev/null ||
    fail "eval through the remote worker"
$CTL eval --model "$M" --ids 128000,9906,1917,0 --logits-out "$T/p.f32" 2>/dev/null
cmp -s "$T/d.f32" "$T/p.f32" || fail "eval logits through the remote worker differ from in-process"

# ---- w1's data socket: w0 (local) sends as the daemon's key, the one LoadShard names; a
# stranger with a fresh key pair that knows w1's public key is refused by w1's ZAP handler
grep -qF "w0: CURVE key $D_PUB, for a tcp next stage" "$T/bitnetd.log" ||
    fail "local w0 does not send as the daemon's key"
grep -qF "w1: data: admitting sender key $D_PUB" "$T/w1.log" ||
    fail "w1 was not told to admit the daemon's key: $(grep 'w1: data' "$T/w1.log")"
E=$($CTL model inspect "$M" --json | node -e 'process.stdout.write(String(JSON.parse(require("fs").readFileSync(0)).hparams.n_embd))')
out=$(timeout 20 build/tests/test_zap push "tcp://$NSADDR:5601" "$W1_PUB" "$E"); rc=$?
S_PUB=$(sed -n 's/^key //p' <<<"$out")
[ $rc -eq 0 ] && grep -qx "refused 400" <<<"$out" ||
    fail "a stranger pushing a Forward to w1 (n_embd $E): status $rc, said: $out"
said="w1: data: refused a CURVE connection from $HOST: key $S_PUB is not a sender the daemon named"
for _ in $(seq 1 40); do grep -qF "$said" "$T/w1.log" && break; sleep 0.05; done
[ -n "$S_PUB" ] && grep -qF "$said" "$T/w1.log" || fail "w1 did not log the stranger's refusal"
node -e 'const ws=JSON.parse(require("fs").readFileSync(0)), w1=ws.find(w=>w.id==="w1");
  if (!w1 || !(w1.keys_refused >= 1)) process.exit(1)' <<<"$($CTL workers --run-dir "$R" --json)" ||
    fail "bitnetctl workers does not count w1's refusal: $($CTL workers --run-dir "$R" --json)"
refused=$($CTL workers --run-dir "$R" | awk '$1 == "w1" {print $8}')
[ "${refused:-0}" -ge 1 ] 2>/dev/null || fail "the workers table shows w1 refused '$refused'"
a=$($CTL generate --run-dir "$R" --prompt "Once upon a time" -n 16 --temp 0 --ids 2>/dev/null) ||
    fail "generate after the stranger"
[ "$a" = "$ref" ] || fail "after the stranger '$a' != in-process '$ref'"
$CTL eval --run-dir "$R" --ids 128000,9906,1917,0 --logits-out "$T/d2.f32" 2>/dev/null ||
    fail "eval after the stranger"
cmp -s "$T/d2.f32" "$T/p.f32" || fail "eval logits after the stranger differ from in-process"

# ---- a key the daemon does not list: refused, reported by both sides, counted
timeout 20 ip netns exec "$NS" build/bitnet-worker --id w1 --control "tcp://$HOST:5600" \
    --server-key "$T/daemon.pub" --key "$T/intruder.key" --data "tcp://$NSADDR:5602" \
    2>"$T/intruder.log"
rc=$?
[ $rc -eq 1 ] || fail "worker with an unknown key exited $rc (want 1)"
grep -qF "refused by the daemon at tcp://$HOST:5600: our CURVE key $BAD_PUB is not on its allow-list" \
    "$T/intruder.log" || fail "intruder said: $(cat "$T/intruder.log")"
grep -qF "refused a CURVE connection from $NSADDR: key $BAD_PUB is not in $T/allow" \
    "$T/bitnetd.log" || fail "daemon did not log the refusal"
node -e 'const s=JSON.parse(require("fs").readFileSync(0)); if(s.keys_refused!==1||s.workers_ready!==2) process.exit(1)' \
    <<<"$($CTL status --run-dir "$R" --json)" || fail "status after the refusal: $($CTL status --run-dir "$R")"

# ---- the remote worker dies and stays gone: jobs fail with its name, the daemon lives on
kill -9 "$wpid"; wait "$wpid" 2>/dev/null; wpid=
t0=$EPOCHREALTIME
$CTL generate --run-dir "$R" --prompt "Once upon a time" -n 16 --temp 0 --ids >/dev/null 2>"$T/gen.err" &&
    fail "generate succeeded without w1"
dt=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}')
echo "remote worker killed: generate failed after $dt s (--worker-timeout $WT)"
grep -qE "worker w1 \(host [^,]+, ${NSADDR//./\\.}\) lost: no heartbeat for [0-9.]+ s" "$T/gen.err" ||
    fail "generate without w1 said: $(cat "$T/gen.err")"
grep -q "tok/s" "$T/gen.err" && fail "a failed job printed speed figures: $(cat "$T/gen.err")"
awk -v d="$dt" -v t=$WT 'BEGIN{exit !(d >= t - 0.5 && d <= t + 2)}' ||
    fail "the error came after $dt s, not about $WT s after the kill"
t0=$EPOCHREALTIME
$CTL generate --run-dir "$R" --prompt "Once" -n 4 --temp 0 >/dev/null 2>"$T/gen2.err" &&
    fail "a new job was accepted while w1 is gone"
dt2=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}')
grep -q "worker w1 (host .*) lost: no heartbeat for" "$T/gen2.err" ||
    fail "new job while w1 is gone said: $(cat "$T/gen2.err")"
awk -v d="$dt2" 'BEGIN{exit !(d < 1)}' || fail "a new job took $dt2 s to be refused"
kill -0 "$dpid" 2>/dev/null || fail "bitnetd died with its remote worker"
# a stage down after the daemon was ready: status says degraded and exits 3
st=$($CTL status --run-dir "$R"); rc=$?
[ $rc -eq 3 ] || fail "status while w1 is gone exited $rc (want 3, degraded)"
grep -q "^workers  *1 ready of 2" <<<"$st" || fail "status while w1 is gone: $st"
grep -q "degraded" <<<"$st" || fail "status while w1 is gone does not say degraded: $st"

# ---- it comes back: the same key and endpoint join again and serve
start_w1
wait_ready || fail "not ready again after w1 came back"
a=$($CTL generate --run-dir "$R" --prompt "Once upon a time" -n 16 --temp 0 --ids 2>/dev/null) ||
    fail "generate after w1 came back"
[ "$a" = "$ref" ] || fail "after the comeback '$a' != in-process '$ref'"

# ---- its own copy of the model: the same header with one weight byte changed is refused
# by name (the daemon sends every tensor's digest), an identical copy serves
kill -9 "$wpid"; wait "$wpid" 2>/dev/null; wpid=
cp "$M" "$T/bad.gguf"; cp "$M" "$T/good.gguf"
size=$(stat -c %s "$M")
printf '\x7f' | dd of="$T/bad.gguf" bs=1 seek=$((size - 1)) conv=notrunc status=none
start_w1 "$T/bad.gguf"
for _ in $(seq 1 100); do grep -q "holds other bytes" "$T/bitnetd.log" && break; sleep 0.05; done
grep -qE "worker w1.*LoadShard failed: .*bad.gguf: tensor output_norm.weight holds other bytes than the coordinator's copy" \
    "$T/bitnetd.log" || fail "a copy with other weights was not refused by name: $(grep -i 'w1' "$T/bitnetd.log" | tail -3)"
$CTL status --run-dir "$R" | grep -q '^workers  *2 ready of 2' && fail "w1 is ready on a copy with other weights"
kill -9 "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null; wpid=
# placed by its own flags, as a worker on another host would be
start_w1 "$T/good.gguf" --threads 1 --numa-node 0
wait_ready || fail "not ready with an identical copy of the model"
grep -qE "w1: loaded .* on node 0 in .* 1 threads" "$T/w1.log" ||
    fail "w1 --threads 1 --numa-node 0 did not place itself: $(grep 'w1: loaded' "$T/w1.log" | tail -1)"
grep -q "weights of $T/good.gguf checked against the coordinator's digests" "$T/w1.log" ||
    fail "w1 did not log the check of its copy"
a=$($CTL generate --run-dir "$R" --prompt "Once upon a time" -n 16 --temp 0 --ids 2>/dev/null) ||
    fail "generate with w1 on its own copy"
[ "$a" = "$ref" ] || fail "with w1 on its own copy '$a' != in-process '$ref'"

# ---- shutdown: the daemon exits 0; the remote worker is not its to stop
$CTL shutdown --run-dir "$R" >/dev/null || fail shutdown
for _ in $(seq 1 100); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.05; done
wait "$dpid"; rc=$?; dpid=
[ $rc -eq 0 ] || fail "bitnetd exit status $rc"
kill "$wpid"; wait "$wpid"; rc=$?; wpid=
[ $rc -eq 0 ] || fail "w1 exit status $rc after SIGTERM"

# ---- a remote stage in the middle: local w0, remote w1, local w2, which takes its data on
# tcp (CURVE, admitting w1's key only) since w1 cannot reach an ipc socket
setsid build/bitnetd --model "$M" --config "$T/bitnetd.ini" --workers 3 --run-dir "$R" \
    2>"$T/bitnetd3.log" & dpid=$!
start_w1
wait_ready 3 || { fail "not ready with a remote stage in the middle"; cat "$T/bitnetd3.log"; }
grep -qF "w2: data: admitting sender key $W1_PUB" "$T/bitnetd3.log" ||
    fail "local w2 after remote w1 does not admit w1's key: $(grep 'w2' "$T/bitnetd3.log" | head -5)"
a=$($CTL generate --run-dir "$R" --prompt "Once upon a time" -n 16 --temp 0 --ids 2>/dev/null) ||
    fail "generate through local, remote, local"
[ "$a" = "$ref" ] || fail "local, remote, local '$a' != in-process '$ref'"
$CTL shutdown --run-dir "$R" >/dev/null || fail "shutdown (3 stages)"
wait "$dpid"; dpid=
kill "$wpid"; wait "$wpid"; wpid=

[ $fails -eq 0 ] || { echo "--- bitnetd log"; cat "$T/bitnetd.log"; echo "--- w1 log"; cat "$T/w1.log"; }
echo "t_remote: $fails failures"
[ $fails -eq 0 ] && rm -rf "$T"
[ $fails -eq 0 ]
