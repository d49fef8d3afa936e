# shellcheck shell=bash
# lib.sh - shared harness of the integration tests, sourced by every t-*.sh.
#
# A test runs one vsand (at a time) in the foreground, in its own temp dir,
# with a free TCP port and its own admin socket name (libqb IPC names are
# global to the network namespace, so two tests must never share one). It
# talks to it only through real clients: the vsan CLI, nbdinfo, nbdcopy,
# qemu, fio, libnbd from /usr/bin/python3 and raw sockets.
#
# Synchronisation is always a polled condition with a deadline (wait_until),
# never a fixed sleep. Everything a test acquires (processes, mounts, loop
# devices, temp files) is undone by the EXIT trap, also when it fails; a
# test registers such resources with on_exit as soon as it has them.
#
# Usage: t-foo.sh [BUILD_DIR]   (default: build, relative to the repo root)
# Set VT_KEEP=1 to keep the temp dir of a failed test for inspection.

set -Eeuo pipefail

VT_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VT_DIR="$VT_REPO/tests/integration"
VT_NAME=$(basename "$0" .sh)
BUILD=${1:-build}
case $BUILD in
/*) ;;
*) BUILD="$VT_REPO/$BUILD" ;;
esac
VSAND="$BUILD/vsand"
VSAN="$BUILD/vsan"
# The pyenv python on PATH has no libnbd binding.
PY=/usr/bin/python3

T=""           # this test's temp dir
CONF=""        # current vsand config file
DATA=""        # current data dir
PORT=""        # current NBD port
ADMIN=""       # current admin socket name
LOG=""         # current vsand log (stdout + stderr)
URI=""         # nbd://127.0.0.1:PORT
VSAND_PID=""   # running foreground vsand, or empty
VSAND_STATUS="" # exit status of the last vsand stopped or reaped
OUT=""         # output of the last expect_exit, input of expect_out/json_assert
VT_CLEANUPS=() # shell commands run in reverse order at exit
VT_VSAND_PIDS=() # every vsand started

log() {
    printf '[%s] %s\n' "$VT_NAME" "$*"
}

die() {
    printf '[%s] FAIL: %s\n' "$VT_NAME" "$*" >&2
    if [ -n "$LOG" ] && [ -s "$LOG" ]; then
        printf -- '--- last lines of %s ---\n' "$LOG" >&2
        tail -n 40 "$LOG" >&2
        printf -- '---\n' >&2
    fi
    exit 1
}

# An unchecked command failing under set -e is still reported with its line.
vt_on_err() {
    local status=$? line=$1 cmd=$2
    die "line $line: exit $status: $cmd"
}
trap 'vt_on_err $LINENO "$BASH_COMMAND"' ERR

on_exit() {
    VT_CLEANUPS+=("$1")
}

# True while PID runs: a zombie child (exited, not reaped) counts as gone.
proc_alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

proc_gone() {
    ! proc_alive "$1"
}

# wait_until SECONDS CMD...: polls CMD until it succeeds; fails at the deadline.
wait_until() {
    local limit=$1
    shift
    local deadline=$((SECONDS + limit))
    while ! "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

vt_cleanup() {
    local status=$? i
    trap - ERR
    set +e
    for ((i = ${#VT_CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${VT_CLEANUPS[i]}" >/dev/null 2>&1
    done
    if [ -n "$VSAND_PID" ]; then
        kill -KILL "$VSAND_PID" 2>/dev/null
        wait "$VSAND_PID" 2>/dev/null
    fi
    # libqb names its per-connection files in /dev/shm after the server's
    # pid; a SIGKILL leaves them behind.
    for i in "${VT_VSAND_PIDS[@]}"; do
        rm -rf /dev/shm/qb-"$i"-* 2>/dev/null
    done
    if [ -n "$T" ]; then
        if [ "$status" -ne 0 ] && [ "${VT_KEEP:-0}" = 1 ]; then
            printf '[%s] kept %s\n' "$VT_NAME" "$T" >&2
        else
            rm -rf "$T"
        fi
    fi
    exit "$status"
}

free_port() {
    "$PY" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Creates the temp dir and installs the cleanup trap. Call first.
vt_init() {
    [ -x "$VSAND" ] || die "no $VSAND: build first (make)"
    [ -x "$VSAN" ] || die "no $VSAN: build first (make)"
    vt_init_tmp
}

# vt_init without the build, for tests of the deploy scripts alone.
vt_init_tmp() {
    T=$(mktemp -d "/tmp/vsan-$VT_NAME.XXXXXX")
    trap vt_cleanup EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 141' PIPE
    trap 'exit 143' TERM
}

# vt_config [SECTION.KEY=VALUE ...]: writes a fresh config for a new node
# (new data dir, port, admin name and local NBD socket NBD_SOCKET) to
# $CONF and makes it current. The arguments add keys to their sections.
# shellcheck disable=SC2120 # the arguments are optional
vt_config() {
    local n=${VT_NODES:-0}
    VT_NODES=$((n + 1))
    local dir="$T/node$n"
    mkdir -p "$dir/data"
    DATA="$dir/data"
    CONF="$dir/vsand.conf"
    LOG="$dir/vsand.log"
    PORT=$(free_port)
    ADMIN="vsan-it-$VT_NAME-$$-$n"
    NBD_SOCKET="$dir/nbd.sock"
    URI="nbd://127.0.0.1:$PORT"
    local section extra kv
    {
        for section in node nbd admin log; do
            echo "[$section]"
            case $section in
            node) printf 'data_dir = %s\npid_file = %s\n' "$DATA" "$dir/vsand.pid" ;;
            nbd) printf 'listen = 127.0.0.1:%s\n' "$PORT" ;;
            admin) printf 'socket = %s\nnbd_socket = %s\n' "$ADMIN" "$NBD_SOCKET" ;;
            log) printf 'level = debug\nsyslog = no\n' ;;
            esac
            for kv in "$@"; do
                extra=${kv#"$section."}
                if [ "$extra" != "$kv" ]; then
                    printf '%s = %s\n' "${extra%%=*}" "${extra#*=}"
                fi
            done
        done
    } >"$CONF"
}

vsan() {
    "$VSAN" -s "$ADMIN" "$@"
}

# Ready means: the admin socket answers and the NBD listener negotiates.
vsand_ready() {
    proc_alive "$VSAND_PID" || {
        wait "$VSAND_PID" && VSAND_STATUS=0 || VSAND_STATUS=$?
        VSAND_PID=""
        die "vsand exited with status $VSAND_STATUS before it was ready"
    }
    vsan status >/dev/null 2>&1 && nbdinfo --list "$URI" >/dev/null 2>&1
}

# Starts vsand -f on the current config and waits until it serves.
vsand_start() {
    [ -z "$VSAND_PID" ] || die "vsand already running (pid $VSAND_PID)"
    printf '=== vsand -f -c %s (%s)\n' "$CONF" "$(date +%T.%N)" >>"$LOG"
    "$VSAND" -f -c "$CONF" >>"$LOG" 2>&1 &
    VSAND_PID=$!
    VT_VSAND_PIDS+=("$VSAND_PID")
    wait_until 30 vsand_ready || die "vsand not ready after 30 s"
}

# vsand_wait [SECONDS]: waits for vsand to exit by itself (after a signal
# somebody else sent) and leaves its exit status in VSAND_STATUS.
vsand_wait() {
    local limit=${1:-30} pid=$VSAND_PID
    [ -n "$pid" ] || die "vsand_wait: vsand is not running"
    wait_until "$limit" proc_gone "$pid" || die "vsand (pid $pid) still running after $limit s"
    wait "$pid" 2>/dev/null && VSAND_STATUS=0 || VSAND_STATUS=$?
    VSAND_PID=""
}

# vsand_stop [SIGNAL [SECONDS]]: signals vsand (default TERM) and waits.
vsand_stop() {
    [ -n "$VSAND_PID" ] || die "vsand_stop: vsand is not running"
    kill -"${1:-TERM}" "$VSAND_PID"
    vsand_wait "${2:-30}"
}

# expect_exit CODE CMD...: runs CMD, keeps its output in $OUT, and fails
# the test unless it exits with CODE.
expect_exit() {
    local want=$1 got=0
    shift
    OUT=$("$@" 2>&1) || got=$?
    [ "$got" -eq "$want" ] ||
        die "'$*' exited $got, expected $want; output: $OUT"
}

# expect_out PATTERN: $OUT must match the extended regex PATTERN.
expect_out() {
    grep -Eq -- "$1" <<<"$OUT" || die "expected /$1/ in output: $OUT"
}

# Size of a volume in bytes, as the NBD server announces it.
nbd_size() {
    nbdinfo --size "$URI/$1"
}

# bg_start NAME CMD...: runs a client in the background, killed at exit.
# Its pid is left in BG_PID and its output goes to $T/NAME.out.
bg_start() {
    local name=$1
    shift
    "$@" >"$T/$name.out" 2>&1 &
    BG_PID=$!
    on_exit "kill -KILL $BG_PID; wait $BG_PID"
}

# bg_kill PID: kills a client started with bg_start, quietly, and reaps it.
bg_kill() {
    { kill -KILL "$1" && wait "$1"; } 2>/dev/null || true
}

# Runs the libnbd python helper library with a script on stdin.
nbdpy() {
    PYTHONPATH="$VT_DIR${PYTHONPATH:+:$PYTHONPATH}" "$PY" - "$@"
}

# Writes SIZE bytes of random data to FILE.
random_file() {
    head -c "$2" /dev/urandom >"$1"
}

# json_assert PYEXPR [ARG...]: $OUT must be one JSON document for which the
# python expression PYEXPR is true. In PYEXPR, d is the document, a the
# list of ARGs, vol(name) the volume object called name in it (or None) and
# merge() is vtjson.merge.
json_assert() {
    PYTHONPATH="$VT_DIR" "$PY" -c '
import json, sys
from vtjson import find_volume, merge
expr, a = sys.argv[1], sys.argv[2:]
d = json.loads(sys.stdin.read())
vol = lambda name: find_volume(d, name)
sys.exit(0 if eval(expr) else 1)' "$@" <<<"$OUT" || die "JSON check failed: $1 ${*:2}; document: $OUT"
}

# Prints "NAME SIZE UUID" for every volume `vsan --json volume list`
# reports, sorted by name (UUID empty if the reply has none).
volume_table() {
    vsan --json volume list | PYTHONPATH="$VT_DIR" "$PY" -c '
import json, sys
from vtjson import volumes
for o in sorted(volumes(json.load(sys.stdin)), key=lambda o: o["name"]):
    print(o["name"], o["size"], o.get("uuid", ""))'
}

# loop_release LOOP FILE: detaches LOOP only while it still is ours: after
# a detach its number may already serve somebody else.
loop_release() {
    local back
    back=$(losetup -n -O BACK-FILE "$1" 2>/dev/null) || return 0
    [ "$back" = "$2" ] && losetup -d "$1"
}

# fuse_unmount DIR, for wait_until: a loop device detached while something
# (udev's probe) still has it open lets go of its file a moment later, and
# until then the unmount is refused.
fuse_unmount() {
    fusermount3 -u "$1" 2>/dev/null
}
