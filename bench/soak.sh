#!/usr/bin/env bash
# Soak test of bitnetd: SOAK_MINUTES of concurrent clients through a daemon with 2 local
# workers, one worker SIGKILLed every 30-60 s, and checks that nothing leaks or drifts.
#   make soak [SOAK_MINUTES=2]        or        bench/soak.sh [MINUTES]
# Environment: SOAK_MINUTES (2), SOAK_CLIENTS (12), SOAK_SEED (1: client mix and kill
# times), SOAK_SECONDS (overrides the minutes, for short trial runs), SOAK_MODEL (a model
# file; default: synthesized once as build/soak/m.gguf), SOAK_DAEMON_ENV (variables for
# bitnetd and, through it, its workers, e.g. "MALLOC_MMAP_THRESHOLD_=262144"),
# SOAK_DAEMON_ARGS (more bitnetd flags, e.g. "--kv-type q8 --lm-head q8"), SOAK_NO_TRIM
# (skip the malloc_trim probe).
# The binaries are copied to build/soak/bin first, so a rebuild meanwhile does not matter.
#
# Clients (each its own session, looping until the end): greedy generations (--temp 0) and
# seeded sampled ones, each compared with a reference computed through the daemon before
# the load starts (and checked against the in-process engine); evals compared byte for byte
# with reference logits; greedy generations cancelled with SIGINT after a random number of
# tokens (bitnetctl cancels the job and exits 130) and others SIGKILLed, whose output so far
# must be a prefix of the reference. A job interrupted on purpose is not a failure; any
# other non-zero exit or a differing output is.
# After a warm-up (max(30 s, 10% of the run)) the clients pause, and with no job in the
# daemon its and every worker's RSS and open fds are taken; again at the end. Verdict PASS:
# no failed job, no daemon fault (death, a worker not restarted within 30 s, a client hung,
# a job still running or queued once every client has gone, jobs_done not equal to the
# requests the clients made), bitnetd RSS growth < 2% and no more fds than at the baseline.
# At the end, if gdb is installed, bitnetd is made to call malloc_trim(0) and its RSS taken
# again: tells memory it freed but malloc kept from a leak (shown, not judged).
# Report: stdout and build/soak/report.txt; logs and raw samples in build/soak/run/.
set -u
export LC_ALL=C
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/build/soak
BIN=$OUT/bin     # private copies: others may rebuild build/ while the soak runs
CTL=$BIN/bitnetctl
RUN=$OUT/run
REF=$RUN/ref
PROMPTS=("Once upon a time" "The capital of France is" "In a small village by the sea, an old fisherman")
EVAL_TEXT="In a small village by the sea, an old fisherman"
N_SHORT=48       # tokens of a greedy or sampled job
N_LONG=200       # tokens asked of a job that will be interrupted
SAMPLING=(--temp 0.8 --top-k 40 --top-p 0.95)
KINDS=(greedy sampled eval greedy cancel sampled greedy kill)
shopt -s nullglob

now_ms() { NOW_MS=$(( (${EPOCHREALTIME//[.,]/} - T0US) / 1000 )); }
# sleep without a fork: a read that times out on a fifo nobody writes to
fsleep() { read -r -t "$1" -u "$SFD" _; return 0; }
readf() { IFS= read -r -d '' "$2" <"$1" 2>/dev/null; return 0; }
# RSS_KB (= ANON_KB + FILE_KB + shmem) and NFD of a process (empty RSS_KB if it is gone)
proc_stat() {
    local k v u f
    RSS_KB= NFD= ANON_KB=0 FILE_KB=0
    { while read -r k v u; do
        case $k in
            VmRSS:) RSS_KB=$v ;;
            RssAnon:) ANON_KB=$v ;;
            RssFile:) FILE_KB=$v; break ;;
        esac
    done </proc/$1/status; } 2>/dev/null
    f=(/proc/$1/fd/*)
    NFD=${#f[@]}
}
# ROLE: the worker id (w0, w1...) of a bitnet-worker process, else empty
worker_role() {
    local a i
    ROLE=
    { mapfile -d '' -t a </proc/$1/cmdline; } 2>/dev/null || return 0
    [[ ${a[0]:-} == *bitnet-worker ]] || return 0
    for ((i = 1; i + 1 < ${#a[@]}; i++)); do [[ ${a[i]} == --id ]] && ROLE=${a[i + 1]}; done
    return 0
}
# KIDS: the daemon's child processes
daemon_kids() {
    local f k
    KIDS=()
    for f in /proc/$DPID/task/*/children; do
        k=()
        { read -r -a k <"$f"; } 2>/dev/null   # no newline at its end: read says 1
        KIDS+=("${k[@]}")
    done
}
worker_pid() { # stage -> WPID ('' if none)
    local k
    WPID=
    daemon_kids
    for k in "${KIDS[@]}"; do worker_role "$k"; [[ $ROLE == "$1" ]] && WPID=$k; done
}
# ST_*: the daemon's counters (ST_OK=0 when it did not answer)
status() {
    local s f
    ST_OK=0
    s=$("$CTL" status --run-dir "$R" --json 2>/dev/null) || return 1
    for f in tokens_generated jobs_done jobs_running jobs_queued workers_ready; do
        [[ $s =~ \"$f\":[[:space:]]*([0-9]+) ]] || return 1
        printf -v "ST_$f" %s "${BASH_REMATCH[1]}"
    done
    ST_OK=1
}
# one line per process, bitnetd and each worker: "TYPE LABEL t pid role rss_kb fds anon_kb file_kb"
snap_procs() { # type label t
    local k
    proc_stat "$DPID"
    [[ -n $RSS_KB ]] && echo "$1 $2 $3 $DPID bitnetd $RSS_KB $NFD $ANON_KB $FILE_KB"
    daemon_kids
    for k in "${KIDS[@]}"; do
        worker_role "$k"
        [[ -n $ROLE ]] || continue
        proc_stat "$k"
        [[ -n $RSS_KB ]] && echo "$1 $2 $3 $k $ROLE $RSS_KB $NFD $ANON_KB $FILE_KB"
    done
}

# ---------------------------------------------------------------- a client
result() { # kind status tokens t0 detail...
    local kind=$1 st=$2 tok=$3 t0=$4
    shift 4
    now_ms
    echo "J $NOW_MS $kind $st $tok $((NOW_MS - t0)) $*" >>"$W/results"
}
gen_tokens() { # tokens from the stats line on stderr, else the ids on stdout
    local e o w
    TOK=0
    readf "$W/err" e
    if [[ $e =~ generated\ ([0-9]+)\ tokens ]]; then TOK=${BASH_REMATCH[1]}; return; fi
    o=; { read -r o <"$W/out"; } 2>/dev/null
    w=($o)
    TOK=${#w[@]}
}
last_err() { local e; readf "$W/err" e; e=${e%$'\n'}; ERRLINE=${e##*$'\n'}; }
keep_output() { cp "$W/out" "$RUN/fail-$SLOT-$1.out" 2>/dev/null; cp "$W/err" "$RUN/fail-$SLOT-$1.err" 2>/dev/null; }

run_generate() { # kind: greedy | sampled
    local kind=$1 p=$((RANDOM % ${#PROMPTS[@]})) t0 rc out ref args
    if [[ $kind == greedy ]]; then args=(--temp 0); ref=$REF/g$p
    else args=("${SAMPLING[@]}" --seed $((100 + p))); ref=$REF/s$p; fi
    now_ms; t0=$NOW_MS
    "$CTL" generate --run-dir "$R" --prompt "${PROMPTS[p]}" -n $N_SHORT "${args[@]}" --ids \
        >"$W/out" 2>"$W/err"
    rc=$?
    gen_tokens
    readf "$W/out" out; readf "$ref" ref
    if ((rc != 0)); then
        last_err; keep_output "$NOW_MS"
        result "$kind" fail "$TOK" "$t0" "prompt $p: exit $rc: $ERRLINE"
    elif [[ $out != "$ref" ]]; then
        keep_output "$NOW_MS"
        result "$kind" fail "$TOK" "$t0" "prompt $p: output differs from the reference (kept in $RUN/fail-$SLOT-*.out)"
    else
        result "$kind" ok "$TOK" "$t0" "prompt $p"
    fi
}

run_interrupted() { # kind: cancel (SIGINT) | kill (SIGKILL), after a random number of tokens
    local kind=$1 sig=INT want_rc=130 p=$((RANDOM % ${#PROMPTS[@]})) want=$((2 + RANDOM % 60))
    local t0 g rc line w st polls=0 out ref
    [[ $kind == kill ]] && { sig=KILL; want_rc=137; }
    now_ms; t0=$NOW_MS
    : >"$W/out"; : >"$W/err"   # before the poll below can read the last job's output
    "$CTL" generate --run-dir "$R" --prompt "${PROMPTS[p]}" -n $N_LONG --temp 0 --ids \
        >"$W/out" 2>"$W/err" &
    g=$!
    while ((polls++ < 3000)); do   # at most 30 s
        st=; { read -r _ _ st _ </proc/$g/stat; } 2>/dev/null
        [[ -z $st || $st == Z ]] && break
        line=; { read -r line <"$W/out"; } 2>/dev/null
        w=($line)
        ((${#w[@]} >= want)) && break
        fsleep 0.01
    done
    kill -s $sig $g 2>/dev/null
    wait $g 2>/dev/null   # (no "Killed" notice in the client log)
    rc=$?
    gen_tokens
    readf "$W/out" out; readf "$REF/l$p" ref
    out=${out%$'\n'}
    if ((rc == 0)) && [[ $out$'\n' != "$ref" ]]; then
        keep_output "$NOW_MS"
        result "$kind" fail "$TOK" "$t0" "prompt $p: finished before the $sig but differs from the reference"
    elif ((rc != 0 && rc != want_rc)); then
        last_err; keep_output "$NOW_MS"
        result "$kind" fail "$TOK" "$t0" "prompt $p: exit $rc after SIG$sig at $want tokens: $ERRLINE"
    elif [[ $ref != "$out"* ]]; then
        keep_output "$NOW_MS"
        result "$kind" fail "$TOK" "$t0" "prompt $p: the $TOK tokens before SIG$sig are not a prefix of the reference"
    elif ((rc == 0)); then
        result "$kind" ok "$TOK" "$t0" "prompt $p: finished before SIG$sig"
    else
        result "$kind" "$([[ $kind == kill ]] && echo killed || echo cancelled)" "$TOK" "$t0" "prompt $p: SIG$sig after $TOK tokens"
    fi
}

run_eval() {
    local t0 rc ids
    readf "$REF/eval.ids" ids
    now_ms; t0=$NOW_MS
    "$CTL" eval --run-dir "$R" --ids "${ids%$'\n'}" --logits-out "$W/l.f32" >/dev/null 2>"$W/err"
    rc=$?
    if ((rc != 0)); then
        last_err; cp "$W/err" "$RUN/fail-$SLOT-$NOW_MS.err"
        result eval fail 0 "$t0" "exit $rc: $ERRLINE"
    elif ! cmp -s "$W/l.f32" "$REF/e.f32"; then
        cp "$W/l.f32" "$RUN/fail-$SLOT-$NOW_MS.f32"
        result eval fail 0 "$t0" "logits differ from the reference"
    else
        result eval ok 0 "$t0" ""
    fi
    rm -f "$W/l.f32"
}

client_main() {
    SLOT=$1
    W=$RUN/c$SLOT
    mkdir -p "$W"
    exec {SFD}<>"$RUN/sleep.fifo"
    RANDOM=$((SOAK_SEED * 1000 + SLOT))
    local i=0 kind
    while :; do
        now_ms
        ((NOW_MS >= END_MS)) && break
        if [[ -e $RUN/pause ]]; then
            [[ -e $W/idle ]] || : >"$W/idle"
            fsleep 0.1
            continue
        fi
        [[ -e $W/idle ]] && rm -f "$W/idle"
        kind=${KINDS[(SLOT * 3 + i) % ${#KINDS[@]}]}
        i=$((i + 1))
        case $kind in
            greedy|sampled) run_generate "$kind" ;;
            cancel|kill) run_interrupted "$kind" ;;
            eval) run_eval ;;
        esac
    done
}

if [[ ${1:-} == --client ]]; then
    client_main "$2"
    exit 0
fi

# ---------------------------------------------------------------- the soak
MIN=${1:-${SOAK_MINUTES:-2}}
[[ $MIN =~ ^[1-9][0-9]*$ ]] || { echo "soak: SOAK_MINUTES must be a whole number >= 1, not '$MIN'" >&2; exit 2; }
DUR=${SOAK_SECONDS:-$((MIN * 60))}
[[ $DUR =~ ^[1-9][0-9]*$ ]] || { echo "soak: SOAK_SECONDS must be a whole number >= 1" >&2; exit 2; }
NCLI=${SOAK_CLIENTS:-12}
[[ $NCLI =~ ^[1-9][0-9]*$ ]] || { echo "soak: SOAK_CLIENTS must be a whole number >= 1" >&2; exit 2; }
SOAK_SEED=${SOAK_SEED:-1}
M=${SOAK_MODEL:-$OUT/m.gguf}
WARM=$((DUR / 10 > 30 ? DUR / 10 : 30))
((WARM * 2 > DUR)) && WARM=$((DUR / 2))
KILL_MIN=30 KILL_MAX=60
for b in bitnetctl bitnetd bitnet-worker; do
    [[ -x build/$b ]] || { echo "soak: build/$b missing (make all)" >&2; exit 2; }
done
rm -rf "$BIN"
mkdir -p "$BIN"
cp build/bitnetctl build/bitnetd build/bitnet-worker "$BIN/" || exit 2

rm -rf "$RUN"
mkdir -p "$REF"
mkfifo "$RUN/sleep.fifo"
exec {SFD}<>"$RUN/sleep.fifo"
: >"$RUN/problems"
problem() { echo "$*" >>"$RUN/problems"; echo "soak: PROBLEM: $*" >&2; }

DPID= CLIENTS=() BG=()
R=$(mktemp -d /tmp/bitnetd-soak.XXXXXX) || exit 2
chmod 700 "$R"
cleanup() {
    local p
    trap - EXIT INT TERM HUP
    : >"$RUN/stop" 2>/dev/null
    for p in "${CLIENTS[@]}"; do kill -KILL -- -"$p" 2>/dev/null; done
    for p in "${BG[@]}"; do kill -KILL "$p" 2>/dev/null; done
    [[ -n $DPID ]] && kill -KILL -- -"$DPID" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$R"
}
trap cleanup EXIT
trap 'echo "soak: interrupted" >&2; exit 130' INT TERM HUP

if [[ ! -f $M ]]; then
    echo "soak: synthesizing $M"
    "$CTL" model synth --out "$M" --embd 256 --layers 6 --heads 4 --kv-heads 2 --ffn 512 \
        --seed 3 >"$RUN/synth.log" 2>&1 || { cat "$RUN/synth.log"; exit 2; }
fi

T0US=${EPOCHREALTIME//[.,]/}
setsid env ${SOAK_DAEMON_ENV:-} "$BIN/bitnetd" --model "$M" --workers 2 --run-dir "$R" ${SOAK_DAEMON_ARGS:-} </dev/null >"$RUN/bitnetd.log" 2>&1 {SFD}<&- &
DPID=$!
for ((i = 0; i < 300; i++)); do
    status && ((ST_workers_ready == 2)) && break
    kill -0 "$DPID" 2>/dev/null || { echo "soak: bitnetd exited at start:" >&2; tail -5 "$RUN/bitnetd.log" >&2; exit 2; }
    fsleep 0.1
done
((ST_OK && ST_workers_ready == 2)) || { echo "soak: bitnetd not ready after 30 s" >&2; tail -5 "$RUN/bitnetd.log" >&2; exit 2; }

# references: through the daemon with nothing else running, checked against the in-process engine
echo "soak: references through bitnetd (pid $DPID, run dir $R)"
ref_gen() { # file prompt-index args... (through the daemon, then in process: must agree)
    local f=$1 p=$2
    shift 2
    "$CTL" generate --run-dir "$R" --prompt "${PROMPTS[p]}" "$@" --ids >"$f" 2>"$f.err" ||
        { echo "soak: reference generation failed: $(tail -1 "$f.err")" >&2; exit 2; }
    "$CTL" generate --model "$M" --prompt "${PROMPTS[p]}" "$@" --ids >"$f.local" 2>/dev/null ||
        { echo "soak: in-process generation failed" >&2; exit 2; }
    cmp -s "$f" "$f.local" || problem "reference $(basename "$f"): the daemon's output differs from the in-process engine's"
}
for p in "${!PROMPTS[@]}"; do
    ref_gen "$REF/g$p" "$p" -n $N_SHORT --temp 0
    ref_gen "$REF/l$p" "$p" -n $N_LONG --temp 0
    ref_gen "$REF/s$p" "$p" -n $N_SHORT "${SAMPLING[@]}" --seed $((100 + p))
    readf "$REF/g$p" a; readf "$REF/l$p" b
    [[ $b == "${a%$'\n'}"* ]] || problem "reference: greedy prompt $p, $N_SHORT tokens are not a prefix of $N_LONG"
done
"$CTL" tokenize --model "$M" --text "$EVAL_TEXT" --bos | tr ' ' , >"$REF/eval.ids" || exit 2
readf "$REF/eval.ids" ids
"$CTL" eval --run-dir "$R" --ids "${ids%$'\n'}" --logits-out "$REF/e.f32" 2>/dev/null || { echo "soak: reference eval failed" >&2; exit 2; }
"$CTL" eval --model "$M" --ids "${ids%$'\n'}" --logits-out "$REF/e.local.f32" 2>/dev/null || exit 2
cmp -s "$REF/e.f32" "$REF/e.local.f32" || problem "reference eval: the daemon's logits differ from the in-process engine's"
rm -f "$REF/e.local.f32"
status || { echo "soak: bitnetd does not answer status after the references" >&2; exit 2; }
PRE_DONE=$ST_jobs_done PRE_TOK=$ST_tokens_generated
now_ms
snap_procs N pre "$NOW_MS" >>"$RUN/snapshots"

# ---------------------------------------------------------------- load
T0US=${EPOCHREALTIME//[.,]/}
END_MS=$((DUR * 1000))
export R RUN T0US END_MS SOAK_SEED
echo "soak: $NCLI clients for $DUR s (warm-up $WARM s), a worker SIGKILLed every $KILL_MIN-$KILL_MAX s"
for ((s = 1; s <= NCLI; s++)); do
    setsid bash "$SELF" --client "$s" </dev/null >"$RUN/client$s.log" 2>&1 &
    CLIENTS+=($!)
done

sampler() {
    local t
    while [[ ! -e $RUN/stop ]]; do
        now_ms; t=$NOW_MS
        status && echo "S $t $ST_tokens_generated $ST_jobs_done $ST_jobs_running $ST_jobs_queued $ST_workers_ready"
        snap_procs P - "$t"
        fsleep 2
    done >>"$RUN/samples"
}
injector() {
    local k=0 next stage old t_kill
    RANDOM=$SOAK_SEED
    next=$(( (KILL_MIN + RANDOM % (KILL_MAX - KILL_MIN + 1)) * 1000 ))
    while [[ ! -e $RUN/stop ]]; do
        now_ms
        ((NOW_MS > END_MS - 15000)) && break
        if ((NOW_MS < next)) || [[ -e $RUN/pause ]]; then fsleep 0.5; continue; fi
        stage=w$((k % 2)); k=$((k + 1))
        worker_pid "$stage"; old=$WPID
        if [[ -z $old ]]; then
            echo "X $NOW_MS $stage no process to kill"
            next=$((NOW_MS + KILL_MIN * 1000))
            continue
        fi
        kill -KILL "$old"
        now_ms; t_kill=$NOW_MS
        echo "K $t_kill $stage $old"
        # the daemon must start it again and the pipeline be ready within 30 s
        while :; do
            now_ms
            ((NOW_MS - t_kill > 30000)) && { echo "X $NOW_MS $stage not back 30 s after the kill"; break; }
            worker_pid "$stage"
            if [[ -n $WPID && $WPID != "$old" ]] && status && ((ST_workers_ready == 2)); then
                echo "R $NOW_MS $stage $WPID $((NOW_MS - t_kill))"; break
            fi
            fsleep 0.05
        done
        next=$((NOW_MS + (KILL_MIN + RANDOM % (KILL_MAX - KILL_MIN + 1)) * 1000))
    done >>"$RUN/faults"
}
sampler & BG+=($!)
injector & BG+=($!)

DEAD=0
daemon_alive() {
    ((DEAD)) && return 1
    kill -0 "$DPID" 2>/dev/null && return 0
    DEAD=1
    problem "bitnetd (pid $DPID) died; see $RUN/bitnetd.log"
    return 1
}
wait_until() { # ms since the load started
    while now_ms; ((NOW_MS < $1)); do daemon_alive || return 1; fsleep 0.5; done
}
# waits for no job in the daemon, up to $1 s
daemon_idle() {
    local i
    for ((i = 0; i < $1 * 10; i++)); do
        status && ((ST_jobs_running == 0 && ST_jobs_queued == 0)) && return 0
        fsleep 0.1
    done
    return 1
}

if wait_until $((WARM * 1000)); then
    : >"$RUN/pause"
    now_ms; t_pause=$NOW_MS
    for ((i = 0; i < 900; i++)); do
        idle=("$RUN"/c*/idle)
        ((${#idle[@]} == NCLI)) && break
        daemon_alive || break
        fsleep 0.1
    done
    ((${#idle[@]} == NCLI)) || problem "pause after the warm-up: only ${#idle[@]} of $NCLI clients idle after 90 s"
    daemon_idle 10 || problem "pause after the warm-up: $ST_jobs_running jobs running, $ST_jobs_queued queued 10 s after every client stopped"
    now_ms
    snap_procs N base "$NOW_MS" >>"$RUN/snapshots"
    echo "soak: baseline at $((NOW_MS / 1000)) s (clients paused $(((NOW_MS - t_pause) / 1000)) s)"
    rm -f "$RUN/pause"
fi

wait_until $END_MS && echo "soak: load over, waiting for the clients' last jobs"
for ((i = 0; i < 1200; i++)); do
    busy=0
    for p in "${CLIENTS[@]}"; do kill -0 "$p" 2>/dev/null && busy=$((busy + 1)); done
    ((busy == 0)) && break
    daemon_alive || break
    fsleep 0.1
done
if ((busy)); then
    ((DEAD)) || problem "$busy clients still running 120 s after the end: killed (hung generate or eval?)"
    for p in "${CLIENTS[@]}"; do kill -KILL -- -"$p" 2>/dev/null; done
fi
wait "${CLIENTS[@]}" 2>/dev/null
CLIENTS=()
: >"$RUN/stop"
for ((i = 0; i < 100; i++)); do
    busy=0
    for p in "${BG[@]}"; do kill -0 "$p" 2>/dev/null && busy=1; done
    ((busy)) || break
    fsleep 0.1
done
for p in "${BG[@]}"; do kill -KILL "$p" 2>/dev/null; done
wait "${BG[@]}" 2>/dev/null
BG=()
n_req=$(cat "$RUN"/c*/results 2>/dev/null | wc -l)
done_delta=? tok_delta=?
if daemon_alive; then
    daemon_idle 10 || problem "$ST_jobs_running jobs running and $ST_jobs_queued queued 10 s after every client exited: never freed"
    now_ms
    snap_procs N end "$NOW_MS" >>"$RUN/snapshots"
    if status; then
        done_delta=$((ST_jobs_done - PRE_DONE))
        tok_delta=$((ST_tokens_generated - PRE_TOK))
        ((done_delta == n_req)) || problem "the daemon counts $done_delta jobs done during the load, the clients sent $n_req requests"
    fi
    # diagnosis, not judged: how much of bitnetd's RSS is memory it freed but malloc kept
    if command -v gdb >/dev/null && [[ -z ${SOAK_NO_TRIM:-} ]]; then
        gdb -p "$DPID" -batch -ex 'call (int) malloc_trim(0)' >"$RUN/gdb-trim.log" 2>&1 &&
            { now_ms; snap_procs N trim "$NOW_MS" | grep ' bitnetd ' >>"$RUN/snapshots"; }
    fi
    "$CTL" shutdown --run-dir "$R" >/dev/null 2>&1 || problem "bitnetctl shutdown failed"
    for ((i = 0; i < 150; i++)); do kill -0 "$DPID" 2>/dev/null || break; fsleep 0.1; done
    if kill -0 "$DPID" 2>/dev/null; then
        problem "bitnetd still running 15 s after shutdown"
    else
        wait "$DPID"; rc=$?
        ((rc == 0)) || problem "bitnetd exited with status $rc after shutdown"
        DPID=
        left=("$R"/*)
        ((${#left[@]} == 0)) || problem "run dir not empty after shutdown: ${left[*]##*/}"
    fi
fi

# ---------------------------------------------------------------- report
{
    echo "bitnetd soak: $DUR s of load ($((DUR / 60)) min), $NCLI clients, seed $SOAK_SEED, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cpus, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
    echo "model: $M ($("$CTL" model inspect "$M" 2>/dev/null | awk -F': *' '$1 ~ /^(layers|embedding|heads|ffn|vocabulary)$/ { printf "%s%s %s", n++ ? ", " : "", $1, $2 }'))"
    echo "${SOAK_DAEMON_ENV:+$SOAK_DAEMON_ENV }bitnetd --workers 2 --run-dir $R${SOAK_DAEMON_ARGS:+ $SOAK_DAEMON_ARGS}; git $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- daemon worker proto model kernels 2>/dev/null || echo ' (with uncommitted changes to the runtime)')"
    echo "clients: greedy -n $N_SHORT, sampled ${SAMPLING[*]} -n $N_SHORT (seeded), eval of $(tr ',' '\n' <"$REF/eval.ids" | wc -l) ids, greedy -n $N_LONG cancelled (SIGINT) or SIGKILLed after 2-61 tokens"
    echo "warm-up $WARM s; baseline and end taken with every client paused and no job in the daemon"
    echo "daemon: $done_delta jobs done for $n_req client requests, $tok_delta tokens generated during the load"
    echo
} >"$RUN/head"
cat "$RUN"/c*/results "$RUN/samples" "$RUN/faults" "$RUN/snapshots" 2>/dev/null |
    awk -v dur="$DUR" -v problems="$RUN/problems" -f <(cat <<'AWK'
function fmt_t(ms) { return sprintf("%.1fs", ms / 1000) }
function mib(kb) { return sprintf("%.1f", kb / 1024) }
function minute(ms,   m) { m = int(ms / 60000); return m >= nmin ? nmin - 1 : m }   # the tail: the last minute
BEGIN { nmin = int((dur + 59) / 60) }
$1 == "J" {
    t = $2; kind = $3; st = $4; tok = $5
    n[kind, st]++; kinds[kind] = 1; total[st]++
    m = minute(t)
    jm[m, st]++
    if (st == "ok") tm[m] += tok
    if (st == "fail") { nf++; if (nf <= 30) { d = ""; for (i = 7; i <= NF; i++) d = d " " $i; fails[nf] = fmt_t(t) " " kind ":" d } }
}
$1 == "S" { ns++; st_t[ns] = $2; st_tok[ns] = $3 }
$1 == "K" { nk++; kill_t[nk] = $2; kill_s[nk] = $3; kill_p[nk] = $4; km[minute($2)]++ }
$1 == "R" { for (i = nk; i >= 1; i--) if (kill_s[i] == $3 && !(i in back)) { back[i] = $5; newpid[i] = $4; break } }
$1 == "X" { nx++; xs[nx] = fmt_t($2) " " $3 " " substr($0, index($0, $4)) }
$1 == "P" || $1 == "N" {
    lab = $2; t = $3; pid = $4 + 0
    if (lab == "pre") { pre_rss[pid] = $6; pre_fd[pid] = $7; next }
    if (lab == "trim") { trim_rss = $6; trim_anon = $8; trim_file = $9; next }
    if (!(pid in role)) { role[pid] = $5; first[pid] = t; order[++np] = pid }
    if ($6 > maxr[pid]) maxr[pid] = $6
    if (!(pid in last) || t > last[pid]) { last[pid] = t; last_rss[pid] = $6; last_fd[pid] = $7 }
    if (lab == "base") { base_rss[pid] = $6; base_fd[pid] = $7; base_t[pid] = t; base_anon[pid] = $8; base_file[pid] = $9 }
    if (lab == "end") { end_rss[pid] = $6; end_fd[pid] = $7; end_anon[pid] = $8; end_file[pid] = $9 }
    if (lab == "-" && !(pid in early_t) && t >= first[pid] + 10000) { early_t[pid] = t; early_rss[pid] = $6; early_fd[pid] = $7 }
}
function tok_at(t,   i, best) { # the last sample at or before t (else the first)
    best = ns ? 1 : 0
    for (i = 1; i <= ns; i++) if (st_t[i] <= t) best = i
    return best
}
END {
    printf "jobs: %d completed, %d cancelled on purpose (SIGINT), %d killed on purpose (SIGKILL), %d FAILED\n",
        total["ok"], total["cancelled"], total["killed"], total["fail"]
    printf "  %-8s %6s %6s %10s %7s %7s\n", "kind", "runs", "ok", "cancelled", "killed", "failed"
    split("greedy sampled eval cancel kill", ko, " ")
    for (k = 1; k <= 5; k++) {
        kk = ko[k]
        printf "  %-8s %6d %6d %10d %7d %7d\n", kk, n[kk, "ok"] + n[kk, "cancelled"] + n[kk, "killed"] + n[kk, "fail"],
            n[kk, "ok"], n[kk, "cancelled"], n[kk, "killed"], n[kk, "fail"]
    }
    print ""
    printf "worker kills: %d\n", nk
    for (i = 1; i <= nk; i++)
        printf "  %s %s pid %s SIGKILLed -> %s\n", fmt_t(kill_t[i]), kill_s[i], kill_p[i],
            (i in back) ? sprintf("pid %s, pipeline ready again after %.2f s", newpid[i], back[i] / 1000) : "NOT BACK"
    for (i = 1; i <= nx; i++) { printf "  %s\n", xs[i]; nprob++; probs[nprob] = "worker: " xs[i] }
    print ""
    print "per minute (tok/s from the daemon's tokens_generated, sampled every 2 s; client tokens: those of completed"
    print "jobs, by end time; the last minute includes the clients' last jobs after the end and the pause for the baseline"
    print "falls in the first):"
    printf "  %-6s %9s %13s %6s %9s %7s %7s %6s\n", "minute", "tok/s", "client tokens", "ok", "cancelled", "killed", "failed", "kills"
    for (m = 0; m < nmin; m++) {
        a = tok_at(m * 60000); b = m == nmin - 1 ? ns : tok_at((m + 1) * 60000)
        rate = (a && b > a) ? (st_tok[b] - st_tok[a]) * 1000 / (st_t[b] - st_t[a]) : 0
        printf "  %-6d %9.1f %13d %6d %9d %7d %7d %6d\n", m + 1, rate, tm[m], jm[m, "ok"], jm[m, "cancelled"],
            jm[m, "killed"], jm[m, "fail"], km[m]
    }
    print ""
    print "processes (RSS MiB, open fds): start = the paused baseline after the warm-up (idle), or for a worker"
    print "started later, 10 s after its start (under load); end = the end snapshot (idle), or the last sample"
    print "before it was killed (under load); max = the most seen in any sample (every 2 s)"
    printf "  %-12s %7s %9s %9s %9s %9s %8s %7s %5s %5s  %s\n", "process", "pid", "from", "start at", "RSS start", "RSS end", "growth", "max", "fds", "fds", "note"
    for (i = 1; i <= np; i++) {
        pid = order[i]; r = role[pid]
        if (r != "bitnetd") { inst[r]++; name = r " #" inst[r] } else name = r
        if (pid in base_rss) { s_rss = base_rss[pid]; s_fd = base_fd[pid]; s_t = base_t[pid] }
        else if (pid in early_rss) { s_rss = early_rss[pid]; s_fd = early_fd[pid]; s_t = early_t[pid] }
        else { s_rss = ""; s_t = "" }
        if (pid in end_rss) { e_rss = end_rss[pid]; e_fd = end_fd[pid]; note = "alive at the end" }
        else { e_rss = last_rss[pid]; e_fd = last_fd[pid]; note = "killed; last sample " fmt_t(last[pid]) }
        if (r != "bitnetd" && inst[r] > 1) note = "restart " inst[r] - 1 "; " note
        if (pid in pre_rss) note = note sprintf("; before the load %s MiB, %d fds", mib(pre_rss[pid]), pre_fd[pid])
        g = (s_rss != "") ? sprintf("%+.1f%%", 100 * (e_rss - s_rss) / s_rss) : "-"
        printf "  %-12s %7d %9s %9s %9s %9s %8s %7s %5s %5s  %s\n", name, pid, fmt_t(first[pid]), s_t == "" ? "-" : fmt_t(s_t),
            s_rss == "" ? "-" : mib(s_rss), mib(e_rss), g, mib(maxr[pid]), s_rss == "" ? "-" : s_fd, e_fd, note
        if (r == "bitnetd") { d_s = s_rss; d_e = e_rss; d_sf = s_fd; d_ef = e_fd; d_pid = pid }
    }
    if (d_pid in base_anon && d_pid in end_anon) {
        printf "bitnetd RSS, anonymous + file-backed MiB: start %s + %s, end %s + %s\n", mib(base_anon[d_pid]),
            mib(base_file[d_pid]), mib(end_anon[d_pid]), mib(end_file[d_pid])
        if (trim_rss != "")
            printf "after malloc_trim(0) in bitnetd at the end (gdb; a diagnosis, not judged): RSS %s MiB (%+.1f%% over the start), anonymous %s MiB\n",
                mib(trim_rss), 100 * (trim_rss - d_s) / d_s, mib(trim_anon)
    }
    print ""
    while ((getline line < problems) > 0) { nprob++; probs[nprob] = line }
    if (nf) {
        print "failed jobs" (nf > 30 ? " (first 30)" : "") ":"
        for (i = 1; i <= nf && i <= 30; i++) print "  " fails[i]
        print ""
    }
    if (nprob) {
        print "problems:"
        for (i = 1; i <= nprob; i++) print "  " probs[i]
        print ""
    }
    ok = 1; why = ""
    if (total["fail"] > 0) { ok = 0; why = why sprintf(", %d failed jobs", total["fail"]) }
    else why = why ", 0 failed jobs"
    if (d_s == "" || d_e == "") { ok = 0; why = why ", no bitnetd baseline" }
    else {
        gr = 100 * (d_e - d_s) / d_s
        why = why sprintf(", bitnetd RSS %s -> %s MiB (%+.2f%%%s 2%%)", mib(d_s), mib(d_e), gr, gr < 2 ? " <" : " >=")
        if (gr >= 2) ok = 0
        why = why sprintf(", fds %d -> %d", d_sf, d_ef)
        if (d_ef > d_sf) ok = 0
    }
    if (nprob) { ok = 0; why = why sprintf(", %d problems", nprob) }
    if (total["ok"] == 0) { ok = 0; why = why ", no job completed" }
    printf "verdict: %s (%s)\n", ok ? "PASS" : "FAIL", substr(why, 3)
}
AWK
) >"$RUN/body"
cat "$RUN/head" "$RUN/body" >"$OUT/report.txt"
cat "$OUT/report.txt"
tail -1 "$OUT/report.txt" | grep -q '^verdict: PASS'
