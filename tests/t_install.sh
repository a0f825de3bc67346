#!/usr/bin/env bash
# make install / make uninstall into staging trees (DESTDIR), for PREFIX=/usr and the
# default /usr/local: every file where it belongs with its mode, units whose paths point
# into the tree, the installed programs working from it (model synth finding the installed
# tokenizer.json), the default config accepted by bitnetd's parser, a changed config kept
# by both install and uninstall, and nothing else left behind by uninstall. With
# systemd-analyze on this machine the units are verified (and their sandbox scored), with
# systemd-sysusers the sysusers.d entry is applied to a scratch root; without them the test
# says NOT RUN for those checks and still checks the tree.
set -u
cd "$(dirname "$0")/.."
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
T=$(mktemp -d "$PWD/build/test-tmp/install.XXXXXX")
trap 'rm -rf "$T"' EXIT

D=$T/root   # DESTDIR for PREFIX=/usr
make -s install DESTDIR="$D" PREFIX=/usr >"$T/install.log" 2>&1 || { fail "make install: $(cat "$T/install.log")"; }

want() {  # mode path...
    local mode=$1; shift
    for f in "$@"; do
        if [ ! -f "$D$f" ]; then fail "missing $f"
        elif [ "$(stat -c %a "$D$f")" != "$mode" ]; then fail "$f: mode $(stat -c %a "$D$f"), want $mode"; fi
    done
}
want 755 /usr/bin/bitnetd /usr/bin/bitnet-worker /usr/bin/bitnetctl
want 644 /lib/systemd/system/bitnetd.service /lib/systemd/system/bitnet-worker@.service \
    /usr/lib/sysusers.d/bitnetd.conf /etc/bitnetd/bitnetd.conf /etc/bitnetd/worker.conf.example \
    /usr/share/man/man1/bitnetctl.1 /usr/share/man/man8/bitnetd.8 /usr/share/man/man8/bitnet-worker.8 \
    /usr/share/doc/bitnetd/README.md /usr/share/doc/bitnetd/operations.md \
    /usr/share/doc/bitnetd/runtime.md /usr/share/bitnetd/tokenizer.json
n=$(find "$D" -type f | wc -l)
[ "$n" -eq $((13 + $(ls docs/*.md | wc -l))) ] || fail "$n files installed: $(find "$D" -type f)"

# units: paths filled in for this PREFIX, the service shape asked for
U=$D/lib/systemd/system
grep -q '@[A-Z]*@' "$U"/*.service && fail "placeholders left: $(grep '@[A-Z]*@' "$U"/*.service)"
for line in "Type=notify" "ExecStart=/usr/bin/bitnetd --config /etc/bitnetd/bitnetd.conf --run-dir /run/bitnetd" \
            'ExecReload=/bin/kill -HUP $MAINPID' "RuntimeDirectory=bitnetd" "StateDirectory=bitnetd" \
            "User=bitnetd" "WatchdogSec=30s" "TimeoutStopSec=45s" "ProtectSystem=strict" \
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" "SystemCallFilter=@system-service mincore"; do
    grep -qxF -- "$line" "$U/bitnetd.service" || fail "bitnetd.service lacks '$line'"
done
for line in 'ExecStart=/usr/bin/bitnet-worker --id %i $BITNET_WORKER_ARGS' \
            "EnvironmentFile=/etc/bitnetd/worker-%i.conf" "RestartPreventExitStatus=1 2"; do
    grep -qxF -- "$line" "$U/bitnet-worker@.service" || fail "bitnet-worker@.service lacks '$line'"
done

# the installed programs run from the tree; synth finds the installed tokenizer, and the
# model it writes is the one the build tree's programs write
for p in bitnetd bitnet-worker bitnetctl; do
    v=$("$D/usr/bin/$p" --version) || fail "$p --version"
    [ "$v" = "$p 0.1.0" ] || fail "$p --version said '$v'"
done
# every subcommand's --help: its usage on stdout, status 0
for c in "model synth" "model inspect" tokenize detokenize eval perplexity generate bench status \
         workers placement cancel drain resume shutdown keygen; do
    out=$("$D/usr/bin/bitnetctl" $c --help 2>&1); rc=$?
    [ $rc -eq 0 ] && grep -q "^usage: bitnetctl $c" <<<"$out" || fail "bitnetctl $c --help: status $rc: $out"
done
"$D/usr/bin/bitnetctl" model synth --out "$T/a.gguf" --shape tiny --layers 2 --seed 4 2>"$T/synth.err" ||
    fail "installed synth: $(cat "$T/synth.err")"
grep -qF "(tokenizer $D/usr/share/bitnetd/tokenizer.json)" "$T/synth.err" ||
    fail "installed synth did not use the installed tokenizer: $(cat "$T/synth.err")"
build/bitnetctl model synth --out "$T/b.gguf" --shape tiny --layers 2 --seed 4 2>"$T/synth-b.err"
grep -qF "(tokenizer $PWD/build/npm/" "$T/synth-b.err" || fail "build-tree synth used: $(cat "$T/synth-b.err")"
cmp -s "$T/a.gguf" "$T/b.gguf" || fail "installed and build-tree synth wrote different models"

# the default config parses (bitnetd's own parser, through placement), as shipped and with
# every commented setting switched on
C=$D/etc/bitnetd/bitnetd.conf
topo="synthetic:package:1 numa:2 core:8 pu:1"
build/bitnetctl placement --model "$T/a.gguf" --config "$C" --topology "$topo" >/dev/null 2>"$T/conf.err" ||
    fail "the default config is refused: $(cat "$T/conf.err")"
sed -E 's/^#([a-z_]+ = )/\1/' "$C" >"$T/all.conf"
[ "$(grep -cE '^[a-z_]+ = ' "$T/all.conf")" -ge 20 ] || fail "few settings in the default config"
# (its layer_map example is for a 30-layer model, as the 2B one is)
build/bitnetctl model synth --out "$T/m30.gguf" --shape tiny --layers 30 --seed 4 2>/dev/null
build/bitnetctl placement --model "$T/m30.gguf" --config "$T/all.conf" --topology "$topo" \
    >/dev/null 2>"$T/conf-all.err" || fail "a commented setting is refused: $(cat "$T/conf-all.err")"

if command -v systemd-analyze >/dev/null; then
    # verify needs the programs where ExecStart says: a copy of the units pointing into the tree
    V=$T/verify; mkdir -p "$V"
    for u in bitnetd.service bitnet-worker@.service; do
        sed -e "s|/usr/bin/|$D/usr/bin/|g" -e "s|/etc/bitnetd/|$D/etc/bitnetd/|g" "$U/$u" >"$V/$u"
    done
    ln -s bitnet-worker@.service "$V/bitnet-worker@w1.service"
    cp "$D/etc/bitnetd/worker.conf.example" "$D/etc/bitnetd/worker-w1.conf"
    (cd "$V" && systemd-analyze verify --man=no ./bitnetd.service ./bitnet-worker@w1.service) \
        >"$T/verify.out" 2>&1; rc=$?
    [ $rc -eq 0 ] && [ ! -s "$T/verify.out" ] || fail "systemd-analyze verify (status $rc): $(cat "$T/verify.out")"
    rm -f "$D/etc/bitnetd/worker-w1.conf"
    for u in bitnetd.service bitnet-worker@w1.service; do
        if score=$(cd "$V" && systemd-analyze security --offline=yes "./$u" 2>&1 |
                   sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p') && [ -n "$score" ]; then
            echo "systemd-analyze security --offline=yes: $u exposure $score"
            awk -v s="$score" 'BEGIN{exit !(s <= 2.0)}' || fail "$u: exposure $score, more than 2.0"
        else
            echo "NOT RUN: systemd-analyze security --offline=yes (this systemd lacks it)"
        fi
    done
else
    echo "NOT RUN: systemd-analyze verify and security: no systemd-analyze on this machine"
fi
if command -v systemd-sysusers >/dev/null; then
    S=$T/sysroot; mkdir -p "$S/etc" "$S/usr/lib/sysusers.d"
    cp "$D/usr/lib/sysusers.d/bitnetd.conf" "$S/usr/lib/sysusers.d/"
    systemd-sysusers --root="$S" >"$T/sysusers.out" 2>&1 || fail "systemd-sysusers: $(cat "$T/sysusers.out")"
    grep -qE '^bitnetd:x:[0-9]+:[0-9]+:[^:]*:/var/lib/bitnetd:' "$S/etc/passwd" &&
        grep -qE '^bitnetd:x:[0-9]+:' "$S/etc/group" || fail "sysusers made no bitnetd user and group"
else
    echo "NOT RUN: systemd-sysusers: not on this machine"
fi

# a changed config survives install and uninstall
echo "max_jobs_per_client = 2" >>"$C"
make -s install DESTDIR="$D" PREFIX=/usr >"$T/install2.log" 2>&1 || fail "second make install"
grep -q "bitnetd.conf exists: left as it is" "$T/install2.log" || fail "second install said: $(cat "$T/install2.log")"
tail -1 "$C" | grep -qx "max_jobs_per_client = 2" || fail "install overwrote a changed config"
make -s uninstall DESTDIR="$D" PREFIX=/usr >"$T/uninstall.log" 2>&1 || fail "make uninstall: $(cat "$T/uninstall.log")"
grep -q "bitnetd.conf was changed since install: left in place" "$T/uninstall.log" ||
    fail "uninstall said: $(cat "$T/uninstall.log")"
left=$(find "$D" \( -type f -o -type l \) ! -path "$C")
[ -z "$left" ] || fail "uninstall left: $left"
[ -f "$C" ] || fail "uninstall removed a changed config"

# the default PREFIX: units under /usr/local/lib/systemd/system, pointing at /usr/local/bin
L=$T/local
make -s install DESTDIR="$L" >"$T/install-local.log" 2>&1 || fail "make install (default PREFIX)"
for f in usr/local/bin/bitnetd usr/local/lib/systemd/system/bitnetd.service \
         usr/local/lib/sysusers.d/bitnetd.conf usr/local/share/bitnetd/tokenizer.json \
         usr/local/share/man/man8/bitnetd.8 etc/bitnetd/bitnetd.conf; do
    [ -f "$L/$f" ] || fail "default PREFIX: missing /$f"
done
grep -qxF "ExecStart=/usr/local/bin/bitnetd --config /etc/bitnetd/bitnetd.conf --run-dir /run/bitnetd" \
    "$L/usr/local/lib/systemd/system/bitnetd.service" || fail "default PREFIX: ExecStart"
make -s uninstall DESTDIR="$L" >/dev/null 2>&1 || fail "make uninstall (default PREFIX)"
left=$(find "$L" -type f -o -type l)
[ -z "$left" ] || fail "uninstall (default PREFIX) left: $left"

echo "t_install: $fails failures"
[ $fails -eq 0 ]
