#!/usr/bin/env bash
# Runs tests against a sanitizer build (made by tests/sanitize/sanitize.mk) and ends with
# one summary line per phase and an overall verdict; non-zero exit on any failure.
#
#   tests/sanitize/sanitize.sh [--asan DIR TESTS] [--tsan DIR TESTS]
#
# DIR is the build directory (build/asan, build/tsan); TESTS is "all" (tests/run.sh, the
# whole suite) or a space-separated list of names (test_daemon t_cli ...).
#
# The test programs and scripts hard-code build/ (build/bitnetctl, build/test-tmp,
# ../shared/data), so each phase runs from DIR/root, a directory of symlinks to the
# project's top-level entries whose build/ is DIR itself: every program, log and
# temporary file of the phase is the sanitized one in DIR, and nothing touches build/.
#
# A report fails the phase even when the process's exit status is not checked (a worker
# killed by its daemon, a command expected to fail): ASan, LSan and TSan write theirs to
# DIR/san-logs/<tool>.<pid>; UBSan, which ignores log_path when linked with ASan, aborts
# the process (-fno-sanitize-recover=all) and leaves "runtime error:" in a log, so the
# phase's logs are searched for it too.
set -u
cd "$(dirname "$0")/../.."
top=$PWD
SAN=$top/tests/sanitize

fmt_secs() { awk -v s="$1" 'BEGIN{printf "%dm%02ds", s / 60, s % 60}'; }

# make DIR/root: DIR is its build/, the project's other top-level entries are links, and
# tests/ is a directory of links to tests/* without the scripts named in $SAN_EXCLUDE
# (those that run make themselves: t_sanitize, t_fuzz), so tests/run.sh skips them
make_root() {
    local dir=$1 root=$1/root f name
    rm -rf "$root"
    mkdir -p "$root/tests"
    for f in "$top"/*; do
        name=$(basename "$f")
        case $name in build|tests) ;; *) ln -s "$f" "$root/" ;; esac
    done
    for f in "$top"/tests/*; do
        name=$(basename "$f" .sh)
        case " ${SAN_EXCLUDE:-} " in *" $name "*) continue ;; esac
        ln -s "$f" "$root/tests/"
    done
    ln -s .. "$root/build"
    # tests read ../shared/data relative to the directory they run in
    rm -f "$dir/shared"
    [ -d "$top/../shared" ] && ln -s "$(cd "$top/../shared" && pwd)" "$dir/shared"
    return 0
}

# run_list NAME...: like tests/run.sh for the named tests only (exit 77: skipped)
run_list() {
    local pass=0 fail=0 skip=0 failed=() name log t0 cmd rc
    for name in "$@"; do
        if [ -x "build/tests/$name" ]; then cmd=("build/tests/$name")
        elif [ -f "tests/$name.sh" ]; then cmd=(bash "tests/$name.sh")
        else echo "FAIL $name: no build/tests/$name nor tests/$name.sh"; fail=$((fail + 1))
             failed+=("$name"); continue
        fi
        log=build/test-logs/$name.log t0=$EPOCHREALTIME
        "${cmd[@]}" >"$log" 2>&1; rc=$?
        if [ "$rc" -eq 0 ]; then
            pass=$((pass + 1))
            printf 'PASS %-28s %6.1fs\n' "$name" \
                "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')"
        elif [ "$rc" -eq 77 ]; then
            skip=$((skip + 1)); printf 'SKIP %-28s (log: %s)\n' "$name" "$log"
        else
            fail=$((fail + 1)); failed+=("$name")
            printf 'FAIL %-28s (log: %s)\n' "$name" "$log"
            tail -n 20 "$log" | sed 's/^/    | /'
        fi
    done
    [ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
    echo "$pass passed, $fail failed$([ "$skip" -gt 0 ] && echo ", $skip skipped")"
    [ "$fail" -eq 0 ]
}

summary=() bad=0
# phase KIND DIR TESTS
phase() {
    local kind=$1 dir=$2 tests=$3 logs label t0 rc counts prefix=()
    [ -n "$dir" ] && [ -x "$dir/bitnetctl" ] || {
        echo "sanitize: $dir/bitnetctl missing: build it first (make sanitize)"; return 1; }
    dir=$(cd "$dir" && pwd)
    logs=$dir/san-logs
    make_root "$dir"
    rm -rf "$logs" "$dir/test-logs" "$dir/test-tmp"
    mkdir -p "$logs" "$dir/test-logs"
    chmod 1777 "$logs"    # t_hardening runs clients as nobody
    case $kind in
    asan)
        label="asan+ubsan"
        export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:log_path=$logs/asan"
        export LSAN_OPTIONS="suppressions=$SAN/lsan.supp:print_suppressions=0"
        export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
        unset TSAN_OPTIONS ;;
    tsan)
        label="tsan"
        export TSAN_OPTIONS="log_path=$logs/tsan:suppressions=$SAN/tsan.supp"
        TSAN_OPTIONS+=":second_deadlock_stack=1:print_suppressions=0"
        unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
        # TSan's shadow memory needs the layout it expects; with more mmap randomness
        # than this kernel gives (vm.mmap_rnd_bits 28) it dies with "unexpected memory
        # mapping": then the phase runs without ASLR (setarch -R), if allowed
        if "$dir/bitnetctl" --help 2>&1 | grep -q "unexpected memory mapping"; then
            if setarch "$(uname -m)" -R true 2>/dev/null; then
                prefix=(setarch "$(uname -m)" -R)
                echo "sanitize: tsan needs ASLR off here: running under setarch -R"
            else
                echo "sanitize: tsan cannot map its shadow memory and setarch -R is refused"
            fi
        fi ;;
    esac
    export BITNET_SANITIZE=$kind    # tests/t_sanitize.sh does nothing inside a phase
    local rel=${dir#"$top"/} out=$dir/sanitize-summary.txt
    echo "=== $label: $tests (build dir $rel)"
    t0=$EPOCHREALTIME
    # the tests name their logs build/...: from the project root that is $rel/...
    if [ "$tests" = all ]; then
        (cd "$dir/root" && "${prefix[@]}" tests/run.sh) | sed -u "s|(log: build/|(log: $rel/|" |
            tee "$out"
    else
        # shellcheck disable=SC2086
        (cd "$dir/root" && "${prefix[@]}" bash -c "$(declare -f run_list); run_list $tests") |
            sed -u "s|(log: build/|(log: $rel/|" | tee "$out"
    fi
    rc=${PIPESTATUS[0]}
    local secs; secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')
    unset BITNET_SANITIZE
    # a test that died (a sanitizer abort) may leave its daemon and workers running:
    # stop every process still running a program of this build directory
    local p exe left=()
    for p in /proc/[0-9]*; do
        exe=$(readlink "$p/exe" 2>/dev/null) || continue
        case $exe in "$dir"/*) left+=("${p#/proc/}") ;; esac
    done
    if [ ${#left[@]} -gt 0 ]; then
        echo "sanitize: stopping ${#left[@]} leftover process(es) of $label: ${left[*]}"
        kill -9 "${left[@]}" 2>/dev/null
    fi
    counts=$(tail -n 1 "$out")
    local failed_names; failed_names=$(sed -n 's/^failed: //p' "$out")
    [ -n "$failed_names" ] && counts="$counts ($failed_names)"
    # the reports: files from log_path, and UBSan's (or any misdirected) lines in logs
    local reports=() f
    for f in "$logs"/*; do [ -f "$f" ] && reports+=("$f"); done
    while IFS= read -r f; do reports+=("$f"); done < <(
        grep -rIlE \
            "runtime error:|ERROR: (AddressSanitizer|LeakSanitizer)|WARNING: ThreadSanitizer" \
            "$dir/test-logs" "$dir/test-tmp" 2>/dev/null)
    for f in "${reports[@]:0:20}"; do
        echo "--- sanitizer report: ${f#"$top"/}"
        grep -m 1 -E "SUMMARY:|runtime error:" "$f" || head -n 3 "$f"
    done
    [ ${#reports[@]} -gt 20 ] && echo "--- and $(( ${#reports[@]} - 20 )) more in $logs"
    local verdict=ok note=
    if [ ${#reports[@]} -gt 0 ]; then
        verdict=FAILED
    elif [ "$rc" -ne 0 ]; then
        # Under TSan everything runs 5-15 times slower: the daemon and worker tests' own
        # deadlines (1 s Hello retry, 1.5 s heartbeat timeout, 60 s alarm) then fail checks
        # that are not about races. The ASan phase judges the same tests' results; this
        # one judges races (and crashes, which TSan reports too).
        if [ "$kind" = tsan ] && [ "${SAN_TSAN_STRICT:-0}" = 0 ]; then
            verdict=ok
            note=" (not counted under TSan, see above; SAN_TSAN_STRICT=1 counts them)"
        else
            verdict=FAILED
        fi
    fi
    [ "$verdict" = ok ] || bad=1
    summary+=("$(printf '%-10s %-6s %d sanitizer report file(s); tests: %s%s; %s' "$label" \
        "$verdict" ${#reports[@]} "$counts" "$note" "$(fmt_secs "$secs")")")
}

usage() { echo "usage: $0 [--asan DIR TESTS] [--tsan DIR TESTS]"; exit 2; }
t_all=$EPOCHREALTIME
while [ $# -gt 0 ]; do
    case $1 in
    --asan|--tsan) [ $# -ge 3 ] || usage
                   phase "${1#--}" "$2" "$3" || bad=1; shift 3 ;;
    *) usage ;;
    esac
done
secs=$(awk -v a="$t_all" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')
echo "=== sanitize summary ($(fmt_secs "$secs"))"
for s in "${summary[@]}"; do echo "  $s"; done
if [ "$bad" -ne 0 ]; then echo "sanitize: FAILED"; exit 1; fi
echo "sanitize: all clean"
