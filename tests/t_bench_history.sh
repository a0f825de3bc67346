#!/usr/bin/env bash
# The benchmark history end to end through bitnetctl: runs recorded in-process and
# through a daemon with what makes them comparable, the read commands and their JSON,
# bench check passing and failing on crafted histories, SVG charts that parse with one
# point per run, sweeps, concurrent writers, and the errors of bad input.
set -u
cd "$(dirname "$0")/.."
CTL=build/bitnetctl
T=build/test-tmp/bench-history
R=$(mktemp -d /tmp/bitnetd-bh.XXXXXX)
rm -rf "$T"; mkdir -p "$T"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# expect_exit DESCRIPTION STATUS PATTERN CMD...: CMD must exit STATUS with PATTERN on stderr
expect_exit() {
    local what=$1 want=$2 pat=$3; shift 3
    local err rc=0
    err=$("$@" 2>&1 >/dev/null) || rc=$?
    [ "$rc" -eq "$want" ] || { fail "$what: exit $rc, wanted $want ($err)"; return; }
    [ -z "$pat" ] || grep -qE -- "$pat" <<<"$err" || fail "$what: message '$err' lacks /$pat/"
}
pid=
cleanup() { [ -n "$pid" ] && kill -9 -- -"$pid" 2>/dev/null; rm -rf "$R"; }
trap cleanup EXIT
jq_node() { node -e "const j=JSON.parse(require('fs').readFileSync(0)); $1"; }

M=$T/m.gguf
$CTL model synth --out $M --shape tiny --layers 2 --seed 5 2>/dev/null || fail "synth"
DB=$T/bench.db
# a small read probe: the figures need not be good, the test must be quick
RUN="--threads 1 --repeat 2 --prompt-tokens 8 --gen-tokens 4 --probe-mib 64"

# --- an in-process run is recorded with every repeat -----------------------------------
json=$($CTL bench --model $M $RUN --db $DB --json 2>/dev/null) || fail "bench --json"
jq_node 'if (j.run_id !== 1 || j.repeats.generated_tps.length !== 2 || j.repeats.prompt_tps.length !== 2 ||
             !(j.repeats.roofline_ratio.length >= 2)) process.exit(1)' <<<"$json" || fail "bench --json repeats: $json"
# the commit this build was made from, as the Makefile stamped it
commit=$(head -n 1 build/gen/build_info.txt)
if git rev-parse --git-dir >/dev/null 2>&1; then
    grep -qE '^[0-9a-f]{7,}(-dirty)?$|^[^ ]+-g[0-9a-f]{7,}(-dirty)?$' <<<"$commit" || fail "build commit '$commit' is not git describe's"
else
    [ "$commit" = unknown ] || fail "build commit '$commit' outside git"
fi
show=$($CTL bench show 1 --db $DB --json) || fail "show --json"
BENCH_JSON=$json HOST=$(hostname) jq_node '
  const b = JSON.parse(process.env.BENCH_JSON), bad = [];
  const want = (c, what) => { if (!c) bad.push(what); };
  want(j.run_id === 1 && j.mode === "in-process", "run id / mode");
  want(typeof j.build.commit === "string" && j.build.commit.length > 0, "build commit");
  want(typeof j.build.cflags === "string" && j.build.cflags.length > 0, "build cflags");
  want(j.host.name === process.env.HOST, "host name");
  want(j.host.cpu.length > 0 && Array.isArray(j.host.cpu_features), "cpu");
  want(j.host.cpus_online > 0 && j.host.numa_nodes >= 1, "cores / numa");
  want(j.kernel_set === b.kernel, "kernel set");
  want(/^[0-9a-f]{64}$/.test(j.model.id) && j.model.shape.n_layer === 2 && j.model.tensor_types.I2_S > 0, "model");
  want(j.placement.threads === 1 && j.params.gen_tokens === 4 && j.params.repeat === 2 && j.params.probe_mib === 64 &&
       j.probe.bytes === 64 * 1048576 && j.probe.threads === 1, "placement / params / probe");
  want(JSON.stringify(j.figures.generated_tps) === JSON.stringify(b.repeats.generated_tps), "every repeat stored");
  want(j.result.generated_tps === b.generated_tps, "the --json figures");
  if (bad.length) { console.error(bad.join(", ")); process.exit(1); }' <<<"$show" || fail "receipt content: $show"
grep -q "\"commit\":\"$commit\"" <<<"$(tr -d ' \n' <<<"$show")" || fail "receipt commit is not $commit"
MODEL_ID=$(jq_node 'console.log(j.model.id)' <<<"$show")

# --no-record, and the default paths
XDG_STATE_HOME=$PWD/$T/state $CTL bench --model $M $RUN >/dev/null 2>&1 || fail "bench to the default db"
[ -f $T/state/bitnetd/bench.db ] || fail "no \$XDG_STATE_HOME/bitnetd/bench.db"
env -u XDG_STATE_HOME HOME=$PWD/$T/home $CTL bench --model $M $RUN >/dev/null 2>&1 || fail "bench to ~/.local/state"
[ -f $T/home/.local/state/bitnetd/bench.db ] || fail "no ~/.local/state/bitnetd/bench.db"
XDG_STATE_HOME=$PWD/$T/state2 $CTL bench --model $M $RUN --no-record >/dev/null 2>&1 || fail "bench --no-record"
[ -e $T/state2 ] && fail "--no-record wrote a database"

# --- through a daemon ------------------------------------------------------------------
setsid build/bitnetd --model $M --workers 2 --run-dir "$R" 2>$T/bitnetd.log & pid=$!
for _ in $(seq 1 200); do
    $CTL status --run-dir "$R" 2>/dev/null | grep -q '^state  *ready' && break
    sleep 0.05
done
json=$($CTL bench --run-dir "$R" --streams 2 --repeat 2 --prompt-tokens 8 --gen-tokens 4 --probe-mib 64 --db $DB --json 2>$T/daemon-bench.err) \
    || fail "bench through the daemon: $(cat $T/daemon-bench.err)"
sha=$($CTL status --run-dir "$R" --json | jq_node 'console.log(j.model_sha256)')
$CTL shutdown --run-dir "$R" >/dev/null 2>&1; wait $pid; pid=
[ "$sha" = "$MODEL_ID" ] || fail "daemon's model sha256 $sha, receipt's in-process model id $MODEL_ID"
show=$($CTL bench show 2 --db $DB --json) || fail "show 2"
ID=$MODEL_ID jq_node '
  const s = j.placement.stages;
  if (j.mode !== "daemon" || j.model.id !== process.env.ID || j.placement.workers !== 2 || s.length !== 2 ||
      s[0].layer_begin !== 0 || s[0].layer_end !== s[1].layer_begin || s[1].layer_end !== 2 ||
      j.params.streams !== 2 || j.figures.generated_tps.length !== 2 || j.figures.stream_generated_tps.length !== 4 ||
      j.figures.read_gbps.length !== 2 || !(j.probe.threads >= 1) ||
      j.figures.generated_tps_per_gbps.some((v, i) => Math.abs(v - j.figures.generated_tps[i] / j.figures.read_gbps[i]) > 1e-9 * v) ||
      !j.figures.generated_tps.every(v => v > 0)) process.exit(1)' <<<"$show" || fail "daemon receipt: $show"

# --- history, show, compare --------------------------------------------------------------
$CTL bench history --db $DB --json | jq_node 'if (j.length !== 2 || j[0].run_id !== 1 || j[1].mode !== "daemon" ||
    !(j[0].figures.generated_tps.n === 2) || !(j[0].figures.generated_tps.min <= j[0].figures.generated_tps.max)) process.exit(1)' \
    || fail "history --json"
$CTL bench history --db $DB --last 1 --json | jq_node 'if (j.length !== 1 || j[0].run_id !== 2) process.exit(1)' || fail "history --last 1"
$CTL bench history --db $DB --model ${MODEL_ID:0:12} --json | jq_node 'if (j.length !== 2) process.exit(1)' || fail "history --model prefix"
$CTL bench history --db $DB --model 0000 --json | jq_node 'if (j.length !== 0) process.exit(1)' || fail "history --model other"
$CTL bench history --db $DB --host no-such-host --json | jq_node 'if (j.length !== 0) process.exit(1)' || fail "history --host"
$CTL bench history --db $DB | grep -q "^1 .*threads 1" || fail "history text"
$CTL bench show 1 --db $DB | grep -q "^generated_tps (tok/s)" || fail "show text"
$CTL bench compare 1 2 --db $DB --json | jq_node '
  const g = j.figures.find(f => f.name === "generated_tps");
  if (!j.same_host || j.same_config || !g || Math.abs(g.ratio - g.b.median / g.a.median) > 1e-9 ||
      typeof g.beyond_noise !== "boolean") process.exit(1)' || fail "compare --json"
$CTL bench compare 1 2 --db $DB | grep -q "different configurations" || fail "compare text names the configurations"

# --- bench check on crafted histories (bench import) --------------------------------------
node -e '
  const r = (host, gen, roof, t) => ({time_unix: 1.7e9 + t, time: "2026-01-01T00:00:0" + t + "Z", mode: "in-process",
    kernel_set: "avx2", config: "mode=in-process threads=2", host: {name: host}, model: {id: "ab12cd"},
    placement: {workers: 0, threads: 2}, build: {commit: "c" + t},
    figures: {generated_tps: gen, roofline_ratio: roof}});
  console.log(JSON.stringify([
    r("hostA", [100, 101, 102], [0.80, 0.81], 1),   // 1: baseline
    r("hostA", [99, 100, 103],  [0.80, 0.81], 2),   // 2: the same within noise
    r("hostA", [90, 91, 92],    [0.80, 0.81], 3),   // 3: 10% slower, ranges apart
    r("hostB", [50, 51, 52],    [0.80, 0.82], 4),   // 4: another host, slower but the same ratio
    r("hostB", [100, 101, 102], [0.60, 0.61], 5),   // 5: another host, worse ratio
  ]))' >$T/crafted.json
D2=$T/crafted.db
$CTL bench import $T/crafted.json --db $D2 --json | jq_node 'if (JSON.stringify(j) !== "[1,2,3,4,5]") process.exit(1)' \
    || fail "import"
expect_exit "check: within noise" 0 "" $CTL bench check --baseline 1 --max-regression 5% 2 --db $D2
expect_exit "check: 10% slower" 1 "generated_tps regressed by 9.9%" $CTL bench check --baseline 1 --max-regression 5% 3 --db $D2
expect_exit "check: 10% slower, 20% allowed" 0 "" $CTL bench check --baseline 1 --max-regression 20% 3 --db $D2
expect_exit "check: previous of run 3" 1 "generated_tps" $CTL bench check --baseline previous --max-regression 0.05 3 --db $D2
expect_exit "check: best" 1 "against run 1" $CTL bench check --baseline best --max-regression 5% 3 --db $D2
expect_exit "check: other host, same ratio" 0 "" $CTL bench check --baseline 1 --max-regression 5% 4 --db $D2
$CTL bench check --baseline 1 --max-regression 5% 4 --db $D2 2>/dev/null | grep -q "hosts differ" \
    || fail "check across hosts does not say so"
expect_exit "check: other host, worse ratio" 1 "roofline_ratio regressed" $CTL bench check --baseline 1 --max-regression 5% 5 --db $D2
expect_exit "check: the latest run by default" 1 "roofline_ratio" $CTL bench check --baseline 1 --max-regression 5% --db $D2
expect_exit "check: no previous run" 2 "no previous run" $CTL bench check --baseline previous --max-regression 5% 1 --db $D2
$CTL bench check --baseline 1 --max-regression 5% 3 --db $D2 --json 2>/dev/null | \
    jq_node 'if (j.pass !== false || JSON.stringify(j.regressions) !== "[\"generated_tps\"]") process.exit(1)' \
    || fail "check --json"

# --- charts ----------------------------------------------------------------------------
points() { xmllint --xpath "count(//*[local-name()='circle'][@class='point'])" "$1"; }
$CTL bench plot --metric generated_tps --db $D2 --out $T/crafted.svg 2>/dev/null || fail "plot"
xmllint --noout $T/crafted.svg || fail "plot: not XML"
[ "$(points $T/crafted.svg)" = 5 ] || fail "plot: $(points $T/crafted.svg) points for 5 runs"
$CTL bench plot --metric generated_tps --db $D2 --out $T/crafted2.svg --json | jq_node '
  const labels = j.series.map(s => s.label).sort();
  if (j.series.length !== 2 || JSON.stringify(labels) !== "[\"hostA: threads 2\",\"hostB: threads 2\"]" ||
      j.series.reduce((n, s) => n + s.points.length, 0) !== 5) process.exit(1)' || fail "plot --json: a series per host"
[ "$(xmllint --xpath "count(//*[local-name()='script'])" $T/crafted.svg)" = 0 ] || fail "plot has a script"
grep -q "generated_tps (tok/s)" $T/crafted.svg || fail "plot: y axis label with its unit"
$CTL bench plot --metric generated_tps --db $DB --model ${MODEL_ID:0:8} --out $T/real.svg 2>/dev/null || fail "plot real"
[ "$(points $T/real.svg)" = 2 ] || fail "plot real: $(points $T/real.svg) points for 2 runs"
expect_exit "plot: unknown metric" 2 "no such figure" $CTL bench plot --metric speed --db $DB --out $T/x.svg
expect_exit "plot: unwritable output" 1 "$T/nope/x.svg" $CTL bench plot --db $DB --out $T/nope/x.svg

# --- sweeps ----------------------------------------------------------------------------
D3=$T/sweep.db
# sweeps make their daemons' run directories in /tmp: the ones there before are not theirs
sweep_dirs() { ls -d /tmp/bitnetctl-sweep.* 2>/dev/null | sort; }
dirs_before=$(sweep_dirs)
json=$($CTL bench sweep --model $M --threads 1,2 --repeat 1 --prompt-tokens 8 --gen-tokens 4 --probe-mib 64 --db $D3 \
       --out $T/sweep-threads.svg --json 2>$T/sweep.err) || fail "sweep --threads: $(cat $T/sweep.err)"
jq_node 'if (j.sweep_id !== 1 || j.setting !== "threads" || j.runs.length !== 2 || !j.complete) process.exit(1)' <<<"$json" \
    || fail "sweep --json: $json"
[ "$(points $T/sweep-threads.svg)" = 2 ] || fail "sweep chart: $(points $T/sweep-threads.svg) points for 2 runs"
grep -q ">threads<" $T/sweep-threads.svg || fail "sweep chart's x axis is not threads"
json=$($CTL bench sweep --model $M --threads 1 --workers 1,2 --streams 1 --repeat 1 --prompt-tokens 8 --gen-tokens 4 --probe-mib 64 \
       --db $D3 --out $T/sweep-workers.svg --json 2>$T/sweep.err) || fail "sweep --workers: $(cat $T/sweep.err)"
jq_node 'if (j.sweep_id !== 2 || j.setting !== "workers" || j.runs.length !== 2) process.exit(1)' <<<"$json" \
    || fail "sweep --workers --json: $json"
[ "$(points $T/sweep-workers.svg)" = 2 ] || fail "sweep --workers chart: $(points $T/sweep-workers.svg) points"
$CTL bench history --db $D3 --sweep 2 --json | jq_node '
  if (j.length !== 2 || j.some(r => r.mode !== "daemon" || r.sweep_id !== 2) ||
      j[0].placement === j[1].placement) process.exit(1)' || fail "history --sweep 2"
[ "$(sweep_dirs)" = "$dirs_before" ] || fail "sweep left a run directory: $(comm -13 <(echo "$dirs_before") <(sweep_dirs))"
# a sweep's receipts move to another database (their sweep id is the old database's)
$CTL bench show 3 --db $D3 --json >$T/sweep-run.json || fail "show a sweep run"
$CTL bench import $T/sweep-run.json --db $T/moved.db >/dev/null 2>&1 || fail "import of a sweep run"
$CTL bench show 1 --db $T/moved.db --json | jq_node 'if (j.sweep.source_id !== 2 || j.sweep.id !== undefined) process.exit(1)' \
    || fail "imported sweep run keeps its sweep as source_id"

# an interrupted sweep leaves no daemon and no run directory behind, and says so
$CTL bench sweep --model $M --threads 1 --workers 1 --repeat 500 --prompt-tokens 8 --gen-tokens 64 --probe-mib 64 \
    --db $T/interrupted.db --out $T/interrupted.svg >$T/interrupted.out 2>&1 & sweep=$!
d=
for _ in $(seq 1 200); do d=$(pgrep -P $sweep -x bitnetd) && break; sleep 0.05; done
[ -n "$d" ] || fail "the sweep's bitnetd did not start"
run_dir=$(tr '\0' '\n' </proc/$d/cmdline 2>/dev/null | grep -A1 -x -- --run-dir | tail -n 1)
[ -n "$run_dir" ] || fail "no --run-dir on the sweep's bitnetd"
sleep 1
kill -INT $sweep; rc=0; wait $sweep || rc=$?
[ $rc -eq 130 ] || fail "interrupted sweep exited $rc, not 130: $(cat $T/interrupted.out)"
grep -q "stopped by signal 2" $T/interrupted.out || fail "interrupted sweep: $(cat $T/interrupted.out)"
[ -n "$d" ] && kill -0 $d 2>/dev/null && fail "interrupted sweep left its bitnetd running"
[ -n "$run_dir" ] && [ -e "$run_dir" ] && fail "interrupted sweep left its run directory $run_dir"

# --- several writers at once through the CLI ---------------------------------------------
D4=$T/concurrent.db
node -e 'const a = []; for (let i = 0; i < 25; i++) a.push({time_unix: 1.7e9 + i, host: {name: "h"}, model: {id: "ab"},
    figures: {generated_tps: [i, i + 1]}}); console.log(JSON.stringify(a))' >$T/many.json
kids=()
for w in 1 2 3 4; do $CTL bench import $T/many.json --db $D4 2>$T/import-$w.err & kids+=($!); done
for k in "${kids[@]}"; do wait $k || fail "concurrent import failed: $(cat $T/import-*.err)"; done
$CTL bench history --db $D4 --json | jq_node 'if (j.length !== 100) { console.error(j.length); process.exit(1) }' \
    || fail "4 concurrent importers of 25 receipts: not 100 runs"

# --- bad input -------------------------------------------------------------------------
expect_exit "show: no such run" 1 "no run 99" $CTL bench show 99 --db $DB
expect_exit "show: not a number" 2 "RUN" $CTL bench show abc --db $DB
expect_exit "check: bad threshold" 2 "max-regression" $CTL bench check --baseline 1 --max-regression lots --db $DB
expect_exit "check: no threshold" 2 "required" $CTL bench check --baseline 1 --db $DB
expect_exit "check: empty history" 2 "no runs recorded" $CTL bench check --baseline previous --max-regression 5% --db $T/empty.db
expect_exit "history: unknown option" 2 "usage" $CTL bench history --bogus --db $DB
expect_exit "history: option of another command" 2 "does not apply" $CTL bench history --baseline 1 --db $DB
expect_exit "unknown subcommand" 2 "unknown subcommand" $CTL bench frobnicate
echo '{"figures": {"generated_tps": ["fast"]}, "time_unix": 1}' >$T/bad.json
expect_exit "import: a figure that is not a number" 1 "generated_tps" $CTL bench import $T/bad.json --db $T/bad.db
echo 'not json' >$T/garbage.json
expect_exit "import: not JSON" 1 "not a JSON receipt" $CTL bench import $T/garbage.json --db $T/bad.db
expect_exit "db in an unusable place" 1 "/proc/none/bench.db" $CTL bench history --db /proc/none/bench.db
expect_exit "bench: --streams with --model" 2 "daemon run" $CTL bench --model $M --streams 2 --no-record
expect_exit "bench: no daemon" 1 "no daemon" $CTL bench --run-dir "$R" --no-record
expect_exit "sweep: --streams without --workers" 2 "needs --workers" $CTL bench sweep --model $M --threads 1 --streams 2 --db $D3
expect_exit "sweep: bad list" 2 "threads" $CTL bench sweep --model $M --threads 1,x --db $D3

echo "t_bench_history: $fails failures"
[ $fails -eq 0 ]
