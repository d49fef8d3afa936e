# shellcheck shell=bash
# node.sh - a lab node's daemons: its corosync and its vsand.
#
# Each node I keeps everything in LAB_DIR/nI:
#
#   vsan.conf, data/, vsand.pid   its vsand's config, pool and pid file
#   secret                        only after `lab secret I wrong`: its own
#                                 mirror secret, used instead of the lab's
#   vsand.log                     vsand -f's stderr (its log)
#   run/                          the private /run of its corosync
#   run/corosync.log              corosync's log (the shared corosync.conf
#                                 names /run/corosync.log), linked as
#                                 corosync.log
#   lab.corosync, lab.vsand       the pids the lab started
#
# Both daemons run in the foreground under setsid, so they outlive the
# lab command that started them and a Ctrl-C or a test's timeout aimed at
# that command's process group does not reach them; the lab stops them.
# corosync gets its own mount namespace whose /run is run/: its pid lock
# (/var/run/corosync.pid) cannot be moved, and everything else it keeps
# (log, state_dir) is put under /run by the shared corosync.conf, so every
# node reads the same file, as on real servers.
#
# A pid the lab recorded is trusted only while the process's command line
# still names LAB_DIR, so a recycled pid is never signalled.

LAB_ADMIN=vsan-lab
LAB_CLUSTER=vsan-lab
LAB_GRACE=10

lab_node_dir() {
    echo "$LAB_DIR/n$1"
}

# lab_ours PID: PID runs (not a zombie) and is one of this lab's.
lab_ours() {
    local state cmdline
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$LAB_DIR/"* ]]
}

# lab_pid I DAEMON: prints the pid of node I's DAEMON (corosync or vsand)
# if it runs.
lab_pid() {
    local pid
    pid=$(cat "$(lab_node_dir "$1")/lab.$2" 2>/dev/null) || return 1
    [ -n "$pid" ] && lab_ours "$pid" && echo "$pid"
}

lab_running() {
    lab_pid "$1" "$2" >/dev/null
}

lab_record_pid() {
    echo "$3" >"$(lab_node_dir "$1")/lab.$2" || lab_die "cannot write $(lab_node_dir "$1")/lab.$2"
    echo "$3" >>"$LAB_DIR/pids" || lab_die "cannot write $LAB_DIR/pids"
}

# lab_wait SECONDS CMD...: polls CMD until it succeeds; fails at the deadline.
lab_wait() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

lab_gone() {
    ! lab_ours "$1"
}

# libqb leaves its shared-memory files behind when a process is killed:
# corosync's blackbox (qb-corosync-PID-*) and the ring buffers of IPC
# connections, named after the server's pid (qb-PID-*).
lab_shm_clean() {
    local pid=$1
    lab_ours "$pid" && return 0
    rm -rf /dev/shm/qb-corosync-"$pid"-* /dev/shm/qb-"$pid"-*
}

lab_node_dirs() {
    local dir
    dir=$(lab_node_dir "$1")
    mkdir -p "$dir/data" "$dir/run/corosync" || lab_die "cannot create $dir"
    ln -sfn run/corosync.log "$dir/corosync.log" || lab_die "cannot link $dir/corosync.log"
}

# A peer that stops answering is outdated after the mirror timeout, which
# the tests wait for: gen-config's for the lab's token (4000 ms for the
# default 1000), above corosync's failure detection (~2.2 x token), so a
# node cut off learns it lost quorum before it gives up on its peers.
# Resyncs run unthrottled, so that a test waits for one no longer than its
# copying takes.
lab_write_vsan_conf() {
    local i=$1 dir secret=$LAB_DIR/secret
    dir=$(lab_node_dir "$i")
    [ ! -f "$dir/secret" ] || secret=$dir/secret
    GC_TLS=${LAB_TLS:-off} GC_TLS_DIR="$LAB_DIR/tls" GC_PSK_FILE="$LAB_DIR/keys.psk" \
        GC_SECRET_FILE=$secret GC_RESYNC_RATE=0 \
        GC_MIRROR_TIMEOUT=$(gc_mirror_timeout_for "$LAB_TOKEN") \
        GC_SERVICE_ADDRESS="$(lab_service_addr "$i")/24" GC_SERVICE_INTERFACE=eth0 \
        gc_vsan_conf "$LAB_CLUSTER" "n$i" "$(lab_addr "$i")" "$dir/data" "$dir/vsand.pid" \
        "$LAB_ADMIN" "$dir/nbd-local.sock" >"$dir/vsan.conf" || lab_die "cannot write $dir/vsan.conf"
}

lab_start_corosync() {
    local i=$1 dir
    dir=$(lab_node_dir "$i")
    lab_running "$i" corosync && return 0
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid ip netns exec "$(lab_ns "$i")" unshare -m --propagation slave sh -c \
        'mount --bind "$0" /run && exec corosync -f -c "$1"' "$dir/run" "$LAB_DIR/corosync.conf" \
        </dev/null >>"$dir/corosync.out" 2>&1 9>&- &
    lab_record_pid "$i" corosync $!
}

lab_start_vsand() {
    local i=$1 dir
    dir=$(lab_node_dir "$i")
    lab_running "$i" vsand && return 0
    printf '=== %s: vsand -f -c %s\n' "$(date '+%F %T')" "$dir/vsan.conf" >>"$dir/vsand.log"
    setsid ip netns exec "$(lab_ns "$i")" "$LAB_BUILD/vsand" -f -c "$dir/vsan.conf" \
        </dev/null >>"$dir/vsand.log" 2>&1 9>&- &
    lab_record_pid "$i" vsand $!
}

# lab_quorum I: 0 quorate, 2 not quorate, anything else: corosync does
# not answer.
lab_quorum() {
    ip netns exec "$(lab_ns "$1")" corosync-quorumtool -s >/dev/null 2>&1
}

# corosync answers, quorate or not.
lab_corosync_answers() {
    local status=0
    lab_quorum "$1" || status=$?
    [ "$status" -eq 0 ] || [ "$status" -eq 2 ]
}

lab_vsan() {
    ip netns exec "$(lab_ns "$1")" "$LAB_BUILD/vsan" -s "$LAB_ADMIN" "${@:2}"
}

lab_vsand_answers() {
    lab_vsan "$1" status >/dev/null 2>&1
}

# lab_view I: prints "QUORATE MEMBERS" as node I's vsand reports its
# cluster, or nothing if it has no cluster view (standalone).
lab_view() {
    lab_vsan "$1" --json status 2>/dev/null | /usr/bin/python3 -c '
import json, sys
c = json.load(sys.stdin).get("cluster")
if c:
    print("yes" if c.get("quorate") else "no", len(c.get("members", [])))'
}

# Node I's vsand sees a quorate cluster of N members.
lab_view_complete() {
    [ "$(lab_view "$1")" = "yes $2" ]
}

# lab_need_alive I DAEMON: fails the command, with the end of the daemon's
# log, if it is not running.
# Right after the start, the recorded pid may still be the shell's fork
# that is about to exec the daemon (its cmdline is deploy/lab's, which
# lab_ours rejects): a recorded pid that lives counts. Taking that window
# for a dead daemon failed a nemesis repair once under load.
lab_need_alive() {
    local pid state
    pid=$(cat "$(lab_node_dir "$1")/lab.$2" 2>/dev/null) || pid=""
    state=$(awk '{print $3}' "/proc/${pid:-0}/stat" 2>/dev/null) || state=""
    [ -z "$state" ] || [ "$state" = Z ] || return 0
    lab_tail "$1" "$2" >&2
    lab_die "n$1: $2 is not running"
}

lab_tail() {
    local dir
    dir=$(lab_node_dir "$1")
    echo "--- n$1: last lines of $2's log ---"
    case $2 in
    corosync) tail -n 20 "$dir/corosync.out" "$dir/run/corosync.log" 2>/dev/null ;;
    vsand) tail -n 20 "$dir/vsand.log" 2>/dev/null ;;
    esac
    echo "---"
}

# lab_wait_daemon I DAEMON SECONDS WHAT CMD...: waits for CMD while the
# daemon runs; fails the command naming WHAT otherwise.
lab_wait_daemon() {
    local i=$1 daemon=$2 limit=$3 what=$4 deadline=$((SECONDS + $3))
    shift 4
    until "$@"; do
        lab_need_alive "$i" "$daemon"
        if [ "$SECONDS" -ge "$deadline" ]; then
            lab_tail "$i" "$daemon" >&2
            lab_die "n$i: $what after $limit s"
        fi
        sleep 0.1
    done
}

# lab_stop_daemon I DAEMON SIGNAL: signals it and waits until it is gone,
# with SIGKILL after LAB_GRACE seconds (vsand's SIGTERM waits 5 s for its
# NBD clients by default).
lab_stop_daemon() {
    local pid
    pid=$(lab_pid "$1" "$2") || return 0
    kill -"$3" "$pid" 2>/dev/null || true
    if ! lab_wait "$LAB_GRACE" lab_gone "$pid"; then
        lab_warn "n$1: $2 (pid $pid) ignored SIG$3 for $LAB_GRACE s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        lab_wait 10 lab_gone "$pid" || lab_die "n$1: $2 (pid $pid) survives SIGKILL"
    fi
    lab_shm_clean "$pid"
}
