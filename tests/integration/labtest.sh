# shellcheck shell=bash
# labtest.sh - what the lab tests (t-lab-*.sh) share, sourced after lib.sh
# and vt_init: a deploy/lab cluster of their own and queries of its nodes.
#
# The lab lives in the test's temp dir, uses the binaries under test and
# is taken down by the EXIT trap, also when the test fails. Its namespaces
# and bridge are global to the machine, so lab tests take turns: a test
# waits on a machine-wide lock (a `make check` started next to a running
# `make soak` waits for it instead of failing). Holding the lock, a test
# takes down the remains of a lab no process runs in (what a killed run or
# a reboot of the session leaves) and refuses to start next to a live lab
# it did not start (somebody's `deploy/lab up`) rather than tear it down.
#
# Nodes are queried only through `deploy/lab vsan I --json status` and
# volume list, as an admin would. A query takes tens of milliseconds, so
# the times the tests print are upper bounds.

LAB="$VT_REPO/deploy/lab"
export VSAN_BUILD="$BUILD" VSAN_LAB_DIR="$T/lab"

# lab ARGS...: deploy/lab, whose output goes to $T/lab.out; fails the test.
lab() {
    "$LAB" "$@" >>"$T/lab.out" 2>&1 || lab_fail "deploy/lab $* failed: $(tail -n 20 "$T/lab.out")"
}

# Fails the test, after the end of every node's vsand log and then each
# node's last errors and warnings (CI shows the end of a failed test's
# output: what went wrong earlier must come last to be seen).
lab_fail() {
    local dir
    for dir in "$VSAN_LAB_DIR"/n*; do
        [ -f "$dir/vsand.log" ] || continue
        echo "--- $(basename "$dir"): vsand log ---" >&2
        tail -n 15 "$dir/vsand.log" >&2
    done
    for dir in "$VSAN_LAB_DIR"/n*; do
        [ -f "$dir/vsand.log" ] || continue
        echo "--- $(basename "$dir"): last errors and warnings ---" >&2
        grep -E ': (crit|error|warning): ' "$dir/vsand.log" | tail -n 4 | cut -c1-300 >&2
    done
    die "$@"
}

# The lock run-all.sh takes too, before its first lab test.
LABTEST_LOCK=/run/lock/vsan-labtest.lock
# How long a test run alone (make soak, a test by hand) waits for its turn.
LABTEST_WAIT=300

# Waits for this test's turn at the lab; the lock is held until the test
# exits. Under run-all.sh the turn is the run's, passed in VSAN_LABTEST_FD
# (flock on the same open file succeeds at once). The lab's daemons inherit
# the descriptor, so a turn ends only once every process of its lab is gone.
lab_turn() {
    if [ -n "${VSAN_LABTEST_FD:-}" ] && flock -n "$VSAN_LABTEST_FD" 2>/dev/null; then
        return 0
    fi
    exec {LABTEST_FD}>>"$LABTEST_LOCK" || die "cannot open $LABTEST_LOCK"
    flock -n "$LABTEST_FD" && return 0
    log "another lab test runs on this machine; waiting up to $LABTEST_WAIT s for it"
    flock -w "$LABTEST_WAIT" "$LABTEST_FD" && return 0
    die "another lab test held $LABTEST_LOCK for $LABTEST_WAIT s: $(lslocks -o PID,COMMAND,PATH 2>/dev/null | grep vsan-labtest)"
}

lab_something_up() {
    ip link show vsanlab0 >/dev/null 2>&1 || ip netns list | grep -q '^vsan-lab-'
}

# True if no process runs in any lab namespace: every lab process (corosync,
# vsand, the clients the tests start in a node) runs in one.
lab_is_remains() {
    local ns
    for ns in $(ip netns list | awk '/^vsan-lab-/ {print $1}'); do
        [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] || return 1
    done
}

lab_up() {
    lab_turn
    if lab_something_up; then
        lab_is_remains || die "a deploy/lab lab runs on this machine, not started by a test; the lab tests need it: deploy/lab down"
        local owner
        owner=$(cat /run/vsan-lab.owner 2>/dev/null) || owner=$T/remains
        log "taking down the remains of a lab nothing runs in (VSAN_LAB_DIR=$owner)"
        VSAN_LAB_DIR=$owner "$LAB" down >>"$T/lab.out" 2>&1 || die "deploy/lab down of the remains failed: $(tail -n 20 "$T/lab.out")"
    fi
    on_exit "'$LAB' down"
    local start=$SECONDS
    lab up "$1"
    log "lab up $1: $((SECONDS - start)) s"
}

# st I EXPR: prints the python expression EXPR evaluated over node I's
# `vsan --json status` (d; c is its cluster object, {} if it has none).
st() {
    "$LAB" vsan "$1" -t 30 --json status 2>/dev/null | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
c = d.get("cluster") or {}
print(eval(sys.argv[1]))' "$2"
}

# vs I EXPR: prints EXPR evaluated over node I's `vsan --json volume show
# $LAB_VOL` (d); LAB_VOL defaults to m.
vs() {
    "$LAB" vsan "$1" -t 30 --json volume show "${LAB_VOL:-m}" 2>/dev/null | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
print(eval(sys.argv[1]))' "$2"
}

# announced N: node 1 knows the capacity of N nodes (placement needs each
# member's; the others announce theirs to a node that joins on their next
# tick).
announced() {
    [ "$("$LAB" vsan 1 --json pool status 2>/dev/null | "$PY" -c '
import json, sys
print(sum(1 for n in json.load(sys.stdin)["nodes"] if n["announced"]))')" = "$1" ]
}

# The states of the volume's replicas as node I sees them:
# "current current outdated".
states() {
    vs "$1" '" ".join(r["state"] for r in d["replicas"])'
}

# states_are I STATES: node I sees the replicas in STATES (for wait_until,
# which runs its command again each time).
states_are() {
    [ "$(states "$1")" = "$2" ]
}

# Every node of a 3-node lab sees every replica current.
all_current() {
    local i
    for i in 1 2 3; do
        [ "$(states "$i")" = "current current current" ] || return 1
    done
}

# The node ids node I sees in its group, e.g. "1 2 3".
members() {
    st "$1" '" ".join(str(m["nodeid"]) for m in c["members"])'
}

quorate() {
    [ "$(st "$1" 'c["quorate"]')" = True ]
}

not_quorate() {
    [ "$(st "$1" 'c["quorate"]')" = False ]
}

# Node I is quorate and sees exactly the members MEMBERS ("1 2 3").
full_view() {
    quorate "$1" && [ "$(members "$1")" = "$2" ]
}

# log_mark I: how far node I's vsand log goes now; the lines a test looks
# for after an action are those past the mark taken before it (the log of
# a restarted node is appended to).
log_mark() {
    stat -c %s "$VSAN_LAB_DIR/n$1/vsand.log"
}

# since I MARK: node I's vsand log past MARK. Read through a process
# substitution, not a pipe: a reader that stops early (grep -q) would get
# the pipe's writer killed and, under pipefail, the pipe failed.
since() {
    tail -c +$(($2 + 1)) "$VSAN_LAB_DIR/n$1/vsand.log"
}

# logged I MARK TEXT: node I's vsand log has a line with TEXT past MARK.
logged() {
    grep -qF -- "$3" < <(since "$1" "$2")
}

# logged_in_order I MARK FIRST THEN: past MARK, node I's vsand log has a
# line with THEN, and a line with FIRST before it. The log is written as
# things happen, one line at a time, so this is the order they happened in.
logged_in_order() {
    awk -v first="$3" -v then="$4" '
        index($0, then) { found = 1; exit }
        index($0, first) { seen = 1 }
        END { exit !(found && seen) }' < <(since "$1" "$2")
}

now_ms() {
    echo $(($(date +%s%N) / 1000000))
}

# lab_nbdpy I ARGS...: runs the python script on stdin (with nbdtest.py)
# in node I's network namespace, where it reaches the node even while it
# is cut; a client that hangs is stopped after 30 s.
lab_nbdpy() {
    "$LAB" exec "$1" env PYTHONPATH="$VT_DIR" timeout 30 "$PY" - "${@:2}"
}

# identical LABEL: the md5 of every node's copy of $LAB_VOL (default m) on
# a 3-node lab must be the same; fails the test naming LABEL if not.
identical() {
    local uuid sums
    uuid=$(vs 1 'd["uuid"]')
    sums=$(md5sum "$VSAN_LAB_DIR"/n[123]/data/volumes/"$uuid".data | awk '{print $1}' | sort -u)
    [ "$(echo "$sums" | wc -l)" -eq 1 ] ||
        lab_fail "$1: replicas differ: $(md5sum "$VSAN_LAB_DIR"/n[123]/data/volumes/"$uuid".data)"
    log "$1: the three replicas are byte-identical"
}

# addr I: node I's NBD address (nbd://HOST:PORT).
addr() {
    "$LAB" addr "$1"
}

# same I EXPORT FILE: EXPORT read through node I is FILE.
same() {
    nbdcopy -- "$(addr "$1")/$2" "$T/read.raw" && cmp -s "$T/read.raw" "$3"
}

# host_of I: node I's address, without scheme or port.
host_of() {
    local a
    a=$("$LAB" addr "$1")
    a=${a#nbd://}
    echo "${a%:*}"
}

# mirror_block I [PEER...]: node I's mirror packets to the PEERs (every
# other node if none) are dropped (an nft table in I's namespace) until
# mirror_unblock I; the test's exit unblocks too.
mirror_block() {
    local dir node=$1 peers=()
    shift
    if [ $# -eq 0 ]; then
        for dir in "$VSAN_LAB_DIR"/n*; do
            [ "${dir##*/n}" = "$node" ] || set -- "$@" "${dir##*/n}"
        done
    fi
    for dir in "$@"; do
        peers+=("$(host_of "$dir")")
    done
    "$LAB" exec "$node" nft -f - <<NFT || lab_fail "cannot add the nft rule in n$node"
table inet vsan_t_mirror_block {
    chain out {
        type filter hook output priority 0;
        ip daddr { $(IFS=,; echo "${peers[*]}") } tcp dport 10810 drop
    }
}
NFT
    on_exit "mirror_unblock $node"
}

mirror_unblock() {
    "$LAB" exec "$1" nft delete table inet vsan_t_mirror_block 2>/dev/null || true
}

# region_sums UUID R: the md5 of region R of volume UUID in each node's
# data file (read from the disk, as it is), one line per node; RS is the
# region size.
region_sums() {
    local dir
    for dir in "$VSAN_LAB_DIR"/n*; do
        dd if="$dir/data/volumes/$1.data" bs="$RS" skip="$2" count=1 status=none |
            md5sum | awk '{print $1}'
    done
}

# region_equal UUID R: region R of volume UUID is the same on every node.
region_equal() {
    [ "$(region_sums "$1" "$2" | sort -u | wc -l)" -eq 1 ]
}

# disk_holds FILE OFF SEED [SECONDS]: FILE has pattern(SEED, 4096) at OFF,
# or gets it within SECONDS (polled every 5 ms: a mirror timeout may be
# near).
disk_holds() {
    PYTHONPATH="$VT_DIR" "$PY" - "$@" <<'PY'
import sys, time
from nbdtest import pattern
path, off, want = sys.argv[1], int(sys.argv[2]), pattern(int(sys.argv[3]), 4096)
deadline = time.monotonic() + float(sys.argv[4] if len(sys.argv) > 4 else 0)
while True:
    with open(path, "rb") as f:
        f.seek(off)
        if f.read(4096) == want:
            sys.exit(0)
    if time.monotonic() >= deadline:
        sys.exit(1)
    time.sleep(0.005)
PY
}

# verify_differing I: `vsan volume verify m` through node I, as "N R1 R2 ..."
# (the number of regions that differ, then which).
verify_differing() {
    "$LAB" vsan "$1" --json volume verify m | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
print(d["differing"], " ".join(str(r) for r in d["differing_regions"]))'
}

# data I: node I's copy of volume m ($UUID).
data() {
    echo "$VSAN_LAB_DIR/n$1/data/volumes/$UUID.data"
}

# lab_holders UUID: the lab's nodes holding a data file of volume UUID,
# e.g. "1 3".
lab_holders() {
    local i n out=""
    n=$(sed -n 's/^N=//p' "$VSAN_LAB_DIR/lab.env")
    for ((i = 1; i <= n; i++)); do
        [ ! -f "$VSAN_LAB_DIR/n$i/data/volumes/$1.data" ] || out="$out${out:+ }$i"
    done
    echo "$out"
}

# lab_holders_identical LABEL UUID: the copies of volume UUID the lab's
# nodes hold are byte-identical (logged), or the test fails.
lab_holders_identical() {
    local i sums nodes
    nodes=$(lab_holders "$2")
    sums=$(for i in $nodes; do md5sum <"$VSAN_LAB_DIR/n$i/data/volumes/$2.data"; done | sort -u)
    [ "$(echo "$sums" | wc -l)" -eq 1 ] || lab_fail "$1: the copies on $nodes differ"
    log "$1: the copies on $nodes are byte-identical"
}

# holds I OFF SEED [SECONDS]: node I's copy of m has pattern(SEED, 4096)
# at OFF, or gets it within SECONDS.
holds() {
    disk_holds "$(data "$1")" "$2" "$3" "${4:-0}"
}

# region_written_everywhere: a 3-node lab with volume m (64M) current on
# every node; RS its region size, UUID its uuid, OFF a block in region 2,
# where pattern(1) is written through n1, flushed, and on every copy.
region_written_everywhere() {
    lab_up 3
    lab vsan 1 volume create m 64M
    wait_until 20 all_current || lab_fail "m never became current on all nodes: $(states 1)"
    RS=$(st 1 'c["region_size"]')
    UUID=$(vs 1 'd["uuid"]')
    OFF=$((2 * RS + 8192))
    log "the region holds the same old data everywhere"
    nbdpy "$("$LAB" addr 1)/m" "$OFF" <<'PY' || lab_fail "the first write through n1 failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(1, 4096), int(sys.argv[2]))
h.flush()
PY
    local i
    for i in 1 2 3; do
        holds "$i" "$OFF" 1 || lab_fail "n$i lacks the first write"
    done
}
