#!/usr/bin/env bash
# bitnetd as a service: what a service manager sees and can do. A real bitnetd with a local
# and a remote worker (CURVE over 127.0.0.1) reports to a notification socket this test
# binds (tests/notify_listen.py plays systemd's side of sd_notify). Checks:
#  - STATUS= says "loading" while a stage is missing, and READY=1 comes only once every
#    stage has loaded: at that moment bitnetctl status already counts 2 ready of 2;
#  - SIGHUP reads the config file and the key allow-list again: a remote worker refused
#    before is admitted after its key is listed, without a restart; a setting that can
#    change live does, one that cannot is named in the log and kept;
#  - WATCHDOG=1 arrives every half WATCHDOG_USEC, and not at all without it;
#  - bitnetctl status exits 3 and says "degraded" while a stage is down (remote worker
#    killed, local worker SIGSTOPped), STATUS= says so too, and 0 once it is back;
#  - drain / resume;
#  - SIGTERM sends STOPPING=1 and drains: a running generation completes (the same tokens
#    as in-process), new jobs are refused meanwhile, and bitnetd exits 0; a second SIGTERM
#    stops at once; past --drain-timeout the jobs are cancelled and bitnetd stops.
set -u
cd "$(dirname "$0")/.."
CTL=build/bitnetctl
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
command -v python3 >/dev/null || { echo "FAIL: python3 is needed to play the service manager"; exit 1; }

T=$(mktemp -d "$PWD/build/test-tmp/service.XXXXXX")
R=$(mktemp -d /tmp/bitnetd-s.XXXXXX)   # short: ipc paths must fit a unix socket name
dpid= wpid= lpid=
cleanup() {
    [ -n "$wpid" ] && kill -9 "$wpid" 2>/dev/null
    [ -n "$dpid" ] && kill -CONT -- -"$dpid" 2>/dev/null && kill -9 -- -"$dpid" 2>/dev/null
    [ -n "$lpid" ] && kill "$lpid" 2>/dev/null
    rm -rf "$R"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# until the command succeeds, at most $1 seconds
wait_until() {
    local secs=$1; shift
    local end=$(( $(date +%s%N) + secs * 1000000000 ))
    until "$@"; do
        [ "$(date +%s%N)" -lt "$end" ] || return 1
        sleep 0.05
    done
}
nlog() { grep -c -- "$1" "$T/notify.log"; }
has() { grep -qF -- "$2" "$1" 2>/dev/null; }

M=$T/m.gguf
$CTL model synth --out "$M" --embd 256 --layers 4 --heads 4 --kv-heads 2 --ffn 512 --seed 9 \
    >/dev/null 2>&1 || fail synth
for k in daemon w1; do $CTL keygen --out "$T/$k" >/dev/null || fail "keygen $k"; done
mkdir -p "$T/allow"
echo "# worker keys admitted by bitnetd; SIGHUP reads this directory again" >"$T/allow/README"
P=
for _ in $(seq 1 20); do
    p=$(( 20000 + RANDOM % 30000 ))
    ss -ltn 2>/dev/null | grep -qE ":($p|$((p + 1))|$((p + 5))) " && continue
    P=$p; break
done
[ -n "$P" ] || { echo "FAIL: no free tcp port"; exit 1; }
cat >"$T/bitnetd.ini" <<EOF
[daemon]
workers = 2
remote_workers = w1
listen = tcp://127.0.0.1:$P
curve_key = $T/daemon.key
allow_keys = $T/allow
drain_timeout = 20
EOF
export XDG_CACHE_HOME=$T/cache

python3 tests/notify_listen.py "$T/notify.sock" "$T/notify.log" $CTL status --run-dir "$R" &
lpid=$!
wait_until 10 has "$T/notify.log" listening || { echo "FAIL: the listener did not start"; exit 1; }

# bitnetd as systemd starts it: NOTIFY_SOCKET, and the watchdog for this very pid (the
# shell execs bitnetd, so $$ is bitnetd's pid)
WD_USEC=600000
NOTIFY_SOCKET=$T/notify.sock WD_USEC=$WD_USEC setsid bash -c \
    'export WATCHDOG_PID=$$ WATCHDOG_USEC=$WD_USEC; exec "$@"' bitnetd \
    build/bitnetd --model "$M" --config "$T/bitnetd.ini" --run-dir "$R" 2>"$T/bitnetd.log" &
dpid=$!
start_w1() {
    build/bitnet-worker --id w1 --control "tcp://127.0.0.1:$P" --server-key "$T/daemon.pub" \
        --key "$T/w1.key" --data "tcp://127.0.0.1:$((P + 5))" 2>>"$T/w1.log" & wpid=$!
}

# ---- loading: w1 has not joined, so w0 waits to learn where to send: no READY=1
wait_until 30 has "$T/notify.log" "STATUS=loading: 0 of 2 workers ready (w0 waiting, w1 connecting)" ||
    fail "no 'loading: 0 of 2' status naming the stages: $(cat "$T/notify.log")"
sleep 1.5
[ "$(nlog 'READY=1')" -eq 0 ] || fail "READY=1 before the remote stage joined: $(cat "$T/notify.log")"

# ---- w1's key is not listed yet: refused, exits 1, still not ready
timeout 20 build/bitnet-worker --id w1 --control "tcp://127.0.0.1:$P" --server-key "$T/daemon.pub" \
    --key "$T/w1.key" --data "tcp://127.0.0.1:$((P + 5))" 2>"$T/w1-refused.log"
rc=$?
[ $rc -eq 1 ] || fail "w1 with an unlisted key exited $rc (want 1): $(cat "$T/w1-refused.log")"
has "$T/w1-refused.log" "is not on its allow-list" || fail "w1 refusal said: $(cat "$T/w1-refused.log")"
[ "$(nlog 'READY=1')" -eq 0 ] || fail "READY=1 after a refused worker"

# ---- list the key, change a live setting and one that needs a restart, SIGHUP
cp "$T/w1.pub" "$T/allow/"
printf 'max_jobs_per_client = 3\nctx = 1024\n' >>"$T/bitnetd.ini"
kill -HUP "$dpid"
wait_until 10 grep -q "SIGHUP: allow-list" "$T/bitnetd.log" || fail "no SIGHUP line in the log"
has "$T/bitnetd.log" "SIGHUP: allow-list $T/allow read again: 1 key (0 before)" ||
    fail "allow-list reload: $(grep SIGHUP "$T/bitnetd.log")"
has "$T/bitnetd.log" "SIGHUP: $T/bitnetd.ini: now in effect: max-jobs-per-client" ||
    fail "live setting not taken: $(grep SIGHUP "$T/bitnetd.log")"
has "$T/bitnetd.log" "kept as they were: ctx" || fail "ctx not named as kept: $(grep SIGHUP "$T/bitnetd.log")"
[ "$(nlog 'READY=1')" -eq 0 ] || fail "READY=1 after the reload of a daemon not ready yet"
[ "$(nlog 'RELOADING=1')" -eq 0 ] || fail "RELOADING=1 before the daemon was ready"

# ---- now w1 joins: READY=1, and at that moment status counts 2 ready of 2
start_w1
wait_until 30 grep -q "READY=1" "$T/notify.log" || fail "no READY=1 after w1 joined: $(cat "$T/bitnetd.log")"
wait_until 10 grep -q "^at-ready:" "$T/notify.log"
at_ready=$(grep -m1 "^at-ready:" "$T/notify.log")
grep -q "rc=0 state  *ready|" <<<"$at_ready" && grep -q "workers  *2 ready of 2" <<<"$at_ready" ||
    fail "status when READY=1 came: $at_ready"
ready_line=$(grep -n -m1 "READY=1" "$T/notify.log" | cut -d: -f1)
last_loading=$(grep -n "STATUS=loading" "$T/notify.log" | tail -1 | cut -d: -f1)
[ "$ready_line" -gt "$last_loading" ] || fail "a loading status came after READY=1"
has "$T/bitnetd.log" "worker w1: joined" || fail "the daemon did not log w1's join"
# the live setting is in effect: a fourth job of one client would be refused; the kept one
# is not: the daemon still serves with ctx 2048 (the model's is larger)

# a reload once ready: RELOADING=1, then READY=1 again
kill -HUP "$dpid"
wait_until 5 grep -q "RELOADING=1" "$T/notify.log" || fail "no RELOADING=1 on SIGHUP once ready"
wait_until 5 bash -c "[ \$(grep -c 'READY=1' '$T/notify.log') -ge 2 ]" ||
    fail "no READY=1 after the reload: $(tail -3 "$T/notify.log")"
# ctx still differs from the file (kept), max_jobs_per_client no longer does
[ "$(grep -c "kept as they were: ctx" "$T/bitnetd.log")" -eq 2 ] &&
    [ "$(grep -c "now in effect" "$T/bitnetd.log")" -eq 1 ] ||
    fail "second SIGHUP: $(grep SIGHUP "$T/bitnetd.log" | tail -3)"

# ---- watchdog: a ping every WD_USEC/2, measured over 3 s
sleep 3
awk -v half=$((WD_USEC / 2000)) '
    / WATCHDOG=1$/ { t = $1 + 0; if (n++ && t - prev > max) max = t - prev; prev = t; if (!first) first = t }
    END { rate = (n - 1) / ((prev - first) / 1000); printf "watchdog: %d pings, every %.0f ms on average, longest gap %.0f ms (asked: every %d ms)\n", n, 1000 / rate, max, half;
          exit !(n >= 10 && 1000 / rate > half * 0.8 && 1000 / rate < half * 1.25 && max < 2 * half) }' \
    "$T/notify.log" || fail "watchdog pings not at the asked rate: $(grep -c WATCHDOG "$T/notify.log") pings"

# ---- health: ready exits 0; a stage down is "degraded", exit 3, and STATUS= says so
out=$($CTL status --run-dir "$R"); rc=$?
[ $rc -eq 0 ] && grep -q "^state  *ready" <<<"$out" || fail "status when ready: rc $rc: $out"
kill -9 "$wpid"; wait "$wpid" 2>/dev/null; wpid=
degraded() { $CTL status --run-dir "$R" >"$T/st.out" 2>&1; [ $? -eq 3 ]; }
wait_until 10 degraded || fail "status did not exit 3 with w1 killed: $(cat "$T/st.out")"
grep -q "^state  *degraded" "$T/st.out" && grep -q "^health  *degraded: 1 of 2 workers down" "$T/st.out" ||
    fail "degraded status said: $(cat "$T/st.out")"
node -e 'const s=JSON.parse(require("fs").readFileSync(0)); if(s.state!=="degraded"||s.degraded!==true) process.exit(1)' \
    <<<"$($CTL status --run-dir "$R" --json)" || fail "status --json when degraded: $($CTL status --run-dir "$R" --json)"
wait_until 5 grep -q "STATUS=degraded: 1 of 2 workers ready (w1 " "$T/notify.log" ||
    fail "no degraded STATUS=: $(tail -3 "$T/notify.log")"
start_w1
wait_until 30 bash -c "$CTL status --run-dir '$R' >/dev/null" || fail "status not back to exit 0 after w1 rejoined"
wait_until 5 bash -c "grep STATUS= '$T/notify.log' | tail -1 | grep -q 'STATUS=ready: 2 workers'" ||
    fail "STATUS= not ready again: $(tail -2 "$T/notify.log")"
# a local worker stopped (SIGSTOP): its heartbeats stop, the stage is down until bitnetd has
# replaced it
w0=$(ps -o pid=,args= --ppid "$dpid" | awk '/--id w0/ {print $1}')
if [ -z "$w0" ]; then
    fail "no local w0 process under bitnetd $dpid"
else
    kill -STOP "$w0"
    wait_until 10 degraded || fail "status did not exit 3 with w0 stopped: $(cat "$T/st.out")"
    kill -CONT "$w0" 2>/dev/null
    wait_until 30 bash -c "$CTL status --run-dir '$R' >/dev/null" || fail "w0 not replaced: $($CTL status --run-dir "$R")"
fi

# ---- drain and resume
out=$($CTL drain --run-dir "$R") || fail "drain"
[ "$out" = drained ] || fail "drain said: $out"
$CTL status --run-dir "$R" | grep -q "^state  *draining" || fail "status while drained: $($CTL status --run-dir "$R")"
$CTL generate --run-dir "$R" --prompt "Once" -n 2 2>"$T/gen-drained.err" >/dev/null &&
    fail "a job was taken while drained"
has "$T/gen-drained.err" "draining" || fail "job while drained said: $(cat "$T/gen-drained.err")"
out=$($CTL resume --run-dir "$R") || fail "resume"
[ "$out" = "resumed: bitnetd takes jobs again" ] || fail "resume said: $out"
$CTL status --run-dir "$R" | grep -q "^state  *ready" || fail "status after resume"
out=$($CTL resume --run-dir "$R") || fail "resume when not draining"
[ "$out" = "not draining: bitnetd takes jobs" ] || fail "second resume said: $out"
ref=$($CTL generate --model "$M" --prompt "Once upon a time" -n 300 --temp 0 --ids 2>/dev/null)
a=$($CTL generate --run-dir "$R" --prompt "Once upon a time" -n 8 --temp 0 --ids 2>/dev/null) ||
    fail "generate after resume"
[ -n "$a" ] && [ "${ref#"$a"}" != "$ref" ] || fail "after resume '$a' does not start '${ref:0:40}'"

# ---- SIGTERM during a generation: STOPPING=1, the job completes, new jobs are refused
$CTL generate --run-dir "$R" --prompt "Once upon a time" -n 300 --temp 0 --ids \
    >"$T/gen-term.out" 2>"$T/gen-term.err" & gpid=$!
wait_until 20 test -s "$T/gen-term.out" || fail "the generation printed nothing"
kill -TERM "$dpid"
wait_until 2 grep -q "STOPPING=1" "$T/notify.log" || fail "no STOPPING=1 within 2 s of SIGTERM"
$CTL generate --run-dir "$R" --prompt "Once" -n 2 >/dev/null 2>"$T/gen-late.err" &&
    fail "a job was taken after SIGTERM"
grep -q "draining" "$T/gen-late.err" || fail "a job after SIGTERM said: $(cat "$T/gen-late.err")"
wait "$gpid"; rc=$?
[ $rc -eq 0 ] || fail "the generation running at SIGTERM exited $rc: $(cat "$T/gen-term.err")"
[ "$(cat "$T/gen-term.out")" = "$ref" ] || fail "the drained generation differs from in-process"
wait_until 10 bash -c "! kill -0 $dpid 2>/dev/null" || fail "bitnetd still runs after the drain"
wait "$dpid"; rc=$?; dpid=
[ $rc -eq 0 ] || fail "bitnetd exited $rc after a drained SIGTERM"
has "$T/bitnetd.log" "SIGTERM: drained; shutting down" || fail "no drained line: $(tail -5 "$T/bitnetd.log")"
kill "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null; wpid=

# ---- without WATCHDOG_USEC no pings; a second SIGTERM stops at once; a drain past
# --drain-timeout cancels the job and stops
run_plain() {  # drain timeout, log name
    : >"$T/notify.log"
    NOTIFY_SOCKET=$T/notify.sock setsid build/bitnetd --model "$M" --workers 2 --run-dir "$R" \
        --drain-timeout "$1" 2>"$T/$2" & dpid=$!
    wait_until 30 grep -q "READY=1" "$T/notify.log" || fail "$2: no READY=1"
    $CTL generate --run-dir "$R" --prompt "Once upon a time" -n 1900 --temp 0.8 --seed 2 --ids \
        >"$T/gen-long.out" 2>"$T/gen-long.err" & gpid=$!
    wait_until 20 test -s "$T/gen-long.out" || fail "$2: the long generation printed nothing"
}
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}'; }

run_plain 30 bitnetd-twice.log
kill -TERM "$dpid"
sleep 1
kill -0 "$dpid" 2>/dev/null || fail "bitnetd did not drain after one SIGTERM"
t0=$EPOCHREALTIME
kill -TERM "$dpid"
wait "$dpid"; rc=$?; dpid=; dt=$(elapsed "$t0")
[ $rc -eq 0 ] || fail "bitnetd exited $rc after a second SIGTERM"
awk -v d="$dt" 'BEGIN{exit !(d < 3)}' || fail "a second SIGTERM took $dt s to stop bitnetd"
wait "$gpid" && fail "the generation cut by a second SIGTERM exited 0"
[ "$(grep -c WATCHDOG "$T/notify.log")" -eq 0 ] || fail "WATCHDOG=1 sent without WATCHDOG_USEC"

run_plain 1 bitnetd-deadline.log
t0=$EPOCHREALTIME
kill -TERM "$dpid"
wait "$dpid"; rc=$?; dpid=; dt=$(elapsed "$t0")
echo "SIGTERM with --drain-timeout 1 and a long job: bitnetd stopped after $dt s"
[ $rc -eq 0 ] || fail "bitnetd exited $rc after the drain deadline"
awk -v d="$dt" 'BEGIN{exit !(d >= 0.9 && d < 4)}' || fail "the drain deadline of 1 s took $dt s"
has "$T/bitnetd-deadline.log" "SIGTERM: drain deadline reached: 1 jobs cancelled; shutting down" ||
    fail "deadline log: $(tail -5 "$T/bitnetd-deadline.log")"
wait "$gpid" && fail "the generation cancelled at the drain deadline exited 0"
grep -q "STOPPING=1" "$T/notify.log" || fail "no STOPPING=1 at the deadline run"

[ $fails -eq 0 ] || { echo "--- notify log"; cat "$T/notify.log"; echo "--- bitnetd log"; tail -40 "$T/bitnetd.log"; }
echo "t_service: $fails failures"
[ $fails -eq 0 ] && rm -rf "$T"
[ $fails -eq 0 ]
