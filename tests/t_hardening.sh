#!/usr/bin/env bash
# What a careless user or another local user can do to bitnetd and bitnetctl: planted or
# open run directories, symlinks in them, output paths that are not files, files that
# would block a reader. Each must be refused at once with "path: what is wrong", and
# nothing the user had may be lost.
set -u
cd "$(dirname "$0")/.."
CTL=build/bitnetctl
T=$(realpath -m build/test-tmp/hardening)
rm -rf "$T"; mkdir -p "$T"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# expect_error DESCRIPTION PATTERN CMD...: CMD must exit non-zero within 10 s with PATTERN
# on stderr (a hang is a failure of its own: `timeout` ends it)
expect_error() {
    local what=$1 pat=$2; shift 2
    local err rc
    err=$(timeout 10 "$@" 2>&1 >/dev/null); rc=$?
    [ $rc -eq 124 ] && { fail "$what: still running after 10 s"; return; }
    [ $rc -eq 0 ] && { fail "$what: exited 0"; return; }
    grep -qE -- "$pat" <<<"$err" || fail "$what: message '$err' lacks /$pat/"
}
pid=
R=$(mktemp -d /tmp/bitnetd-h.XXXXXX)
cleanup() { [ -n "$pid" ] && kill -9 -- -"$pid" 2>/dev/null; rm -rf "$R"; }
trap cleanup EXIT
M=$T/m.gguf
$CTL model synth --out $M --embd 128 --layers 2 --heads 4 --kv-heads 2 --ffn 256 --seed 5 \
    2>/dev/null || fail synth

# --- output files: checked before work, written whole or not at all ---
echo "the user's notes" > $T/notes.txt
# a failure after the output was opened (the model cannot be read) leaves the file as it was
expect_error "eval with a bad model" "nope.gguf" \
    $CTL eval --model $T/nope.gguf --ids 1,2 --logits-out $T/notes.txt
[ "$(cat $T/notes.txt 2>/dev/null)" = "the user's notes" ] || fail "failed eval changed or removed an existing file"
expect_error "eval through no daemon" "no daemon" \
    $CTL eval --run-dir "$R" --ids 1,2 --logits-out $T/notes.txt
[ "$(cat $T/notes.txt 2>/dev/null)" = "the user's notes" ] || fail "failed daemon eval changed or removed an existing file"
[ -z "$(ls -A $T | grep '^\.')" ] || fail "a failed eval left a temporary file: $(ls -A $T)"
# not a regular file: refused by name, untouched
mkdir $T/adir
expect_error "eval into a directory" "$T/adir: is a directory" \
    $CTL eval --model $M --ids 1,2 --logits-out $T/adir
[ -d $T/adir ] || fail "eval removed a directory"
mkfifo $T/out.fifo
expect_error "eval into a FIFO" "out.fifo: is a FIFO" $CTL eval --model $M --ids 1,2 --logits-out $T/out.fifo
[ -p $T/out.fifo ] || fail "eval removed a FIFO"
if [ "$(id -u)" = 0 ]; then
    mknod $T/null c 1 3
    expect_error "eval into a device" "null: is a character device" \
        $CTL eval --model $M --ids 1,2 --logits-out $T/null
    [ -c $T/null ] || fail "eval removed a device node"
fi
expect_error "eval into /dev/null" "/dev/null: is a character device" \
    $CTL eval --model $M --ids 1,2 --logits-out /dev/null
[ -c /dev/null ] || fail "eval removed /dev/null"
# a good eval replaces the file, keeps its mode, and writes through a symlink
chmod 640 $T/notes.txt
$CTL eval --model $M --ids 1,2 --logits-out $T/notes.txt 2>/dev/null || fail "eval over a file"
[ "$(stat -c %s $T/notes.txt)" = $((2 * 128256 * 4)) ] || fail "eval wrote $(stat -c %s $T/notes.txt) bytes"
[ "$(stat -c %a $T/notes.txt)" = 640 ] || fail "eval changed the mode to $(stat -c %a $T/notes.txt)"
ln -s notes.txt $T/link.f32
$CTL eval --model $M --ids 3,4 --logits-out $T/link.f32 2>/dev/null || fail "eval through a symlink"
[ -L $T/link.f32 ] || fail "eval replaced a symlink instead of writing its target"
cmp -s $T/link.f32 $T/notes.txt || fail "eval through a symlink did not reach the target"
# keygen: refuses to overwrite without --force and leaves the old pair alone
$CTL keygen --out $T/k >/dev/null 2>&1 || fail keygen
cp $T/k.key $T/k.key.orig
expect_error "keygen over a pair" "exists|File exists" $CTL keygen --out $T/k
cmp -s $T/k.key $T/k.key.orig || fail "refused keygen changed the key"
[ "$(stat -c %a $T/k.key)" = 600 ] || fail "secret key mode $(stat -c %a $T/k.key)"
# synth into a directory name
expect_error "synth onto a directory" "adir: is a directory" \
    $CTL model synth --out $T/adir --shape tiny

# --- reading: a FIFO, a device or a directory is refused at once ---
mkfifo $T/in.fifo
expect_error "model is a FIFO" "in.fifo: is a FIFO" $CTL model inspect $T/in.fifo
expect_error "model is a directory" "adir: is a directory" $CTL model inspect $T/adir
expect_error "text file is a FIFO" "in.fifo: is a FIFO" \
    $CTL perplexity --model $M --ctx 16 --text-file $T/in.fifo
expect_error "daemon model is a FIFO" "in.fifo: is a FIFO" \
    build/bitnetd --model $T/in.fifo --run-dir "$R"
expect_error "config is a FIFO" "in.fifo: is a FIFO" \
    build/bitnetd --config $T/in.fifo --model $M --run-dir "$R"
expect_error "config is /dev/zero" "/dev/zero: is a character device" \
    build/bitnetd --config /dev/zero --model $M --run-dir "$R"
expect_error "config is a directory" "adir: is a directory" \
    build/bitnetd --config $T/adir --model $M --run-dir "$R"
head -c 2000000 /dev/zero | tr '\0' '#' > $T/huge.ini
expect_error "config of 2 MB" "huge.ini: 2000000 bytes" \
    build/bitnetd --config $T/huge.ini --model $M --run-dir "$R"
expect_error "curve key is a FIFO" "in.fifo: is a FIFO" \
    build/bitnetd --model $M --run-dir "$R" --listen tcp://127.0.0.1:5790 \
    --curve-key $T/in.fifo --allow-keys $T/k.pub
expect_error "allow-list is a FIFO" "in.fifo: is a FIFO" \
    build/bitnetd --model $M --run-dir "$R" --listen tcp://127.0.0.1:5790 \
    --curve-key $T/k.key --allow-keys $T/in.fifo

# --- run directories ---
# open to others: refused by the daemon and by the client
mkdir -p $T/open; chmod 777 $T/open
expect_error "daemon in a world-writable run dir" "writable by every user" \
    build/bitnetd --model $M --run-dir $T/open
expect_error "client of a world-writable run dir" "writable by every user" \
    $CTL status --run-dir $T/open
chmod 770 $T/open
expect_error "daemon in a group-writable run dir" "writable by its group" \
    build/bitnetd --model $M --run-dir $T/open
# a symlink as the run directory
mkdir -p $T/real; chmod 700 $T/real; ln -sfn real $T/linkdir
expect_error "daemon through a symlinked run dir" "symbolic link" \
    build/bitnetd --model $M --run-dir $T/linkdir
expect_error "client through a symlinked run dir" "symbolic link" $CTL status --run-dir $T/linkdir
# a symlink planted as the lock file: refused, and its target is not truncated
echo "precious" > $T/precious.txt
ln -s $T/precious.txt $T/real/bitnetd.lock
expect_error "lock file is a symlink" "bitnetd.lock: is a symbolic link" \
    build/bitnetd --model $M --run-dir $T/real
[ "$(cat $T/precious.txt)" = precious ] || fail "the lock file's symlink target was truncated"
rm $T/real/bitnetd.lock
# a stale socket file: "no daemon listening", not a hang
python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" $T/real/ctl.sock
expect_error "stale socket" "no daemon listening at $T/real/ctl.sock" $CTL status --run-dir $T/real
rm -f $T/real/ctl.sock
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
    # planted by another user (the default /tmp/bitnetd-$UID is predictable)
    P=$(mktemp -d /tmp/bitnetd-p.XXXXXX); chown nobody "$P"
    expect_error "daemon in another user's run dir" "owned by uid $(id -u nobody), not by you" \
        build/bitnetd --model $M --run-dir "$P"
    expect_error "client of another user's run dir" "owned by uid $(id -u nobody), not by you" \
        $CTL status --run-dir "$P"
    rm -rf "$P"
    # the same owner is trusted where only root could have made the directory (/run)
    mkdir -p $T/closed; chown nobody $T/closed; chmod 755 $T
    expect_error "client of a service's run dir" "no daemon at $T/closed/ctl.sock" \
        $CTL status --run-dir $T/closed
    CTL_ABS=$(realpath $CTL)
    # the default path planted in /tmp for a user who has no XDG_RUNTIME_DIR
    U=$(id -u nobody)
    if [ ! -e /tmp/bitnetd-$U ]; then
        mkdir /tmp/bitnetd-$U; chmod 755 /tmp/bitnetd-$U    # made by root, for nobody
        err=$(cd / && timeout 10 setpriv --reuid=nobody --regid=nogroup --clear-groups \
              env -u XDG_RUNTIME_DIR $CTL_ABS status 2>&1 >/dev/null)
        rm -rf /tmp/bitnetd-$U
        grep -q "no daemon at /tmp/bitnetd-$U/ctl.sock" <<<"$err" || \
            fail "nobody's client, root's dir without a socket: $err"
    fi
    # a real daemon whose run directory the caller may not enter: "permission denied"
    setsid build/bitnetd --model $M --workers 1 --run-dir "$R" 2>$T/bitnetd.log & pid=$!
    for _ in $(seq 1 200); do
        $CTL status --run-dir "$R" 2>/dev/null | grep -q '^state  *ready' && break; sleep 0.05
    done
    chmod 755 "$R"     # so the socket itself is what refuses the other user
    err=$(cd / && timeout 10 setpriv --reuid=nobody --regid=nogroup --clear-groups \
          $CTL_ABS status --run-dir "$R" 2>&1 >/dev/null)
    grep -q "permission denied" <<<"$err" || fail "another user's client: '$err' (want permission denied)"
    chmod 700 "$R"
    err=$(cd / && timeout 10 setpriv --reuid=nobody --regid=nogroup --clear-groups \
          $CTL_ABS status --run-dir "$R" 2>&1 >/dev/null)
    grep -q "permission denied" <<<"$err" || fail "another user's client, closed dir: '$err'"
    $CTL shutdown --run-dir "$R" >/dev/null 2>&1 || fail "shutdown"
    wait $pid; pid=
else
    echo "t_hardening: not root: the checks that need a second user did not run"
fi

# --- a client whose daemon dies learns it within seconds, not after a 60 s silence ---
setsid build/bitnetd --model $M --workers 1 --run-dir "$R" 2>$T/bitnetd-kill.log & pid=$!
for _ in $(seq 1 200); do
    $CTL status --run-dir "$R" 2>/dev/null | grep -q '^state  *ready' && break; sleep 0.05
done
$CTL generate --run-dir "$R" --prompt "Once upon a time" -n 100000 --temp 0.8 --seed 1 \
    >$T/gen.out 2>$T/gen.err & gpid=$!
for _ in $(seq 1 100); do [ -s $T/gen.out ] && break; sleep 0.05; done
[ -s $T/gen.out ] || fail "generate streamed nothing before the daemon was killed"
kill -9 $pid
t0=$EPOCHREALTIME
for _ in $(seq 1 100); do kill -0 $gpid 2>/dev/null || break; sleep 0.05; done
secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
if kill -0 $gpid 2>/dev/null; then
    fail "generate still waits 5 s after its daemon was killed"; kill $gpid
else
    wait $gpid && fail "generate exited 0 when its daemon was killed"
    grep -q "closed the connection" $T/gen.err || fail "generate after the daemon died said: $(cat $T/gen.err)"
    echo "generate noticed the daemon's death in $secs s"
fi
kill -9 -- -$pid 2>/dev/null; wait $pid 2>/dev/null; pid=

echo "t_hardening: $fails failures"
[ $fails -eq 0 ]
