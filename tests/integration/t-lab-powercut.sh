#!/usr/bin/env bash
# t-lab-powercut: a whole-cluster power cut (servers on one circuit) on a
# 3-node lab, each node's data dir on its own faultfs (tests/tools/faultfs.c,
# mounted over the dir itself). A volume keep created and resized, FUA
# writes to it through n2; FLUSHed writes to a volume m through n1, then
# plain ones through n3. Last, with n1's mirror packets dropped, a FUA
# write through n1 to region 5 of m, which reaches n1's disk only and is
# never acknowledged. Then every fault layer crashes at once (dropping all
# that was not fsynced, and directory changes not made durable) and every
# node stops (corosync and vsand SIGKILLed, `lab stop`), before n1's
# mirror timeout would outdate the others.
# Read straight from the three disks, before any vsand runs again: every
# FLUSHed and every FUA write is on every replica, and both volumes'
# records are there. Then the disks come back, the cluster starts: every
# node lists both volumes at their sizes, the replicas become current, and
# the FLUSHed and FUA data reads back through every node. Region 5, unequal
# on the disks, is reconciled after the cold start with nothing writing it
# (n1's activity log named it), and reads the same through every node;
# so is region 10, which n3's unflushed plain writes left unequal.
# long: yes
# timeout: 180

# In a mount namespace of its own (see t-powercut): the vsands the lab
# starts from here see the fault layers; the mounts go with the test.
if [ -z "${VT_OWN_MOUNTS:-}" ]; then
    VT_OWN_MOUNTS=1 exec unshare --mount --propagation private bash "$0" "$@"
fi
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

FAULTFS="$BUILD/tests/faultfs"
[ -x "$FAULTFS" ] || die "no $FAULTFS: build first (make $FAULTFS)"
NODES="1 2 3"
declare -A FAULTFS_PID

data_dir() {
    echo "$VSAN_LAB_DIR/n$1/data"
}

# faultfs_mount I: the fault layer over node I's data dir, backed by the dir.
MOUNTS=0
faultfs_mount() {
    local dir
    dir=$(data_dir "$1")
    MOUNTS=$((MOUNTS + 1))
    bg_start "faultfs$MOUNTS-n$1" "$FAULTFS" "$dir" "$dir" -f
    FAULTFS_PID[$1]=$BG_PID
    on_exit "fusermount3 -u -z '$dir'"
    wait_until 20 test -e "$dir/.faultfs-ctl" ||
        die "n$1: faultfs did not mount: $(cat "$T/faultfs$MOUNTS-n$1.out")"
}

faultfs_unmount() {
    wait_until 10 fuse_unmount "$(data_dir "$1")" || die "n$1: fusermount3 -u failed"
    wait_until 10 proc_gone "${FAULTFS_PID[$1]}" || die "n$1: faultfs did not exit after unmount"
    wait "${FAULTFS_PID[$1]}" || die "n$1: faultfs exited with status $?"
}

# "NAME SIZE UUID" per volume of node I, sorted.
table() {
    "$LAB" vsan "$1" --json volume list | PYTHONPATH="$VT_DIR" "$PY" -c '
import json, sys
from vtjson import volumes
for o in sorted(volumes(json.load(sys.stdin)), key=lambda o: o["name"]):
    print(o["name"], o["size"], o["uuid"])'
}

every_node_current() {
    local i
    for i in $NODES; do
        [ "$(LAB_VOL=$1 states "$i")" = "current current current" ] || return 1
    done
}

lab_up 3
log "every node's vsand restarted on its fault layer"
for i in $NODES; do
    lab kill "$i"
    faultfs_mount "$i"
done
for i in $NODES; do
    lab start "$i"
done
wait_until 60 full_view 1 "1 2 3" || lab_fail "the cluster did not come back: $(members 1)"

lab vsan 1 volume create m 64M
lab vsan 2 volume create keep 16M
lab vsan 3 volume resize keep 24M
wait_until 60 every_node_current m || lab_fail "m never became current on every node: $(states 1)"
wait_until 60 every_node_current keep || lab_fail "keep never became current everywhere"
UUID=$(vs 1 'd["uuid"]')
KEEP_UUID=$(LAB_VOL=keep vs 1 'd["uuid"]')
table 1 >"$T/table" || lab_fail "volume list on n1 failed"

# FUA and FLUSH go to different volumes: FUSE's FSYNC has no range, so a
# FUA write makes every earlier write to its file durable (see faultfs.c),
# and a FLUSH every FUA write before it.
log "FUA writes to keep through n2, FLUSHed ones to m through n1, then plain ones to m through n3"
lab_nbdpy 2 "$("$LAB" addr 2)/keep" <<'PY' || lab_fail "the FUA writes failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(3, 1 << 20), 0, nbd.CMD_FLAG_FUA)
h.pwrite(pattern(4, 4096), (20 << 20) + 4096, nbd.CMD_FLAG_FUA)
PY
lab_nbdpy 1 "$("$LAB" addr 1)/m" <<'PY' || lab_fail "the FLUSHed writes failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(1, 1 << 20), 0)
h.pwrite(pattern(2, 3 << 20), (9 << 20) + 512)
h.flush()
PY
lab_nbdpy 3 "$("$LAB" addr 3)/m" <<'PY' || lab_fail "the plain writes failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(5, 2 << 20), 40 << 20)
PY

log "n1's mirror packets dropped; a FUA write through n1 to region 5 of m reaches n1's disk only"
RS=$(st 1 'c["region_size"]')
OFF=$((5 * RS + 8192))
mirror_block 1
bg_start inflight env PYTHONPATH="$VT_DIR" "$PY" -c '
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(6, 4096), int(sys.argv[2]), nbd.CMD_FLAG_FUA)
print("acknowledged")' "$("$LAB" addr 1)/m" "$OFF"
INFLIGHT=$BG_PID
disk_holds "$(data_dir 1)/volumes/$UUID.data" "$OFF" 6 1.5 || lab_fail "n1 never wrote the write in flight"

log "the power cut: every disk at once, then every node"
crashes=()
for i in $NODES; do
    echo crash >"$(data_dir "$i")/.faultfs-ctl" &
    crashes+=("$!")
done
for pid in "${crashes[@]}"; do
    wait "$pid" || lab_fail "a fault layer refused the crash command"
done
for i in $NODES; do
    lab stop "$i"
done
for i in $NODES; do
    faultfs_unmount "$i"
    log "n$i: $(grep 'crash: .* rolled back' "$T/faultfs$((MOUNTS - 3 + i))-n$i.out")"
done
wait_until 10 proc_gone "$INFLIGHT" || kill "$INFLIGHT" 2>/dev/null
grep -q acknowledged "$T/inflight.out" && lab_fail "the write in flight was acknowledged without n2 and n3"
mirror_unblock 1
disk_holds "$(data_dir 1)/volumes/$UUID.data" "$OFF" 6 || lab_fail "n1's FUA write did not survive the cut"
region_equal "$UUID" 5 && lab_fail "region 5 is equal on the disks after the cut: nothing to test"

# check_disk I: node I's data dir, read as the disk holds it after the cut.
check_disk() {
    local dir
    dir=$(data_dir "$1")
    [ -f "$dir/volumes/$KEEP_UUID.meta" ] || lab_fail "n$1: the record of volume keep is gone"
    [ "$(stat -c %s "$dir/volumes/$KEEP_UUID.data")" -eq $((24 << 20)) ] ||
        lab_fail "n$1: keep's data file is not at its committed size (24 MiB)"
    [ -f "$dir/volumes/$UUID.meta" ] || lab_fail "n$1: the record of volume m is gone"
    PYTHONPATH="$VT_DIR" "$PY" - "$dir/volumes/$UUID.data" <<'PY' || lab_fail "n$1: data lost in the cut"
import sys
from nbdtest import *
with open(sys.argv[1], "rb") as f:
    def at(off, n):
        f.seek(off)
        return f.read(n)
    check(at(0, 1 << 20) == pattern(1, 1 << 20), "the FLUSHed MiB at 0 is not on this disk")
    check(at((9 << 20) + 512, 3 << 20) == pattern(2, 3 << 20), "the FLUSHed 3 MiB are not on this disk")
PY
    PYTHONPATH="$VT_DIR" "$PY" - "$dir/volumes/$KEEP_UUID.data" <<'PY' || lab_fail "n$1: data lost in the cut"
import sys
from nbdtest import *
with open(sys.argv[1], "rb") as f:
    def at(off, n):
        f.seek(off)
        return f.read(n)
    check(at(0, 1 << 20) == pattern(3, 1 << 20), "the FUA MiB is not on this disk")
    check(at((20 << 20) + 4096, 4096) == pattern(4, 4096), "the FUA block past keep's first end is not on this disk")
PY
}
for i in $NODES; do
    check_disk "$i"
done
log "every FLUSHed and FUA write is on all three disks"

log "power back: disks, then the cluster"
for i in $NODES; do
    faultfs_mount "$i"
done
for i in $NODES; do
    lab start "$i"
done
for i in $NODES; do
    table "$i" >"$T/table.n$i" || lab_fail "n$i: volume list failed"
    diff "$T/table" "$T/table.n$i" >&2 || lab_fail "n$i's volume table changed across the cut"
done
wait_until 120 every_node_current m || lab_fail "m not current on every node after the cut: $(states 1)"
wait_until 120 every_node_current keep || lab_fail "keep not current on every node after the cut"
wait_until 60 region_equal "$UUID" 5 ||
    lab_fail "region 5 stays unequal after the cold start: $(region_sums "$UUID" 5 | tr '\n' ' ')"
grep -q "region 5: reconciled (copies differed)" "$VSAN_LAB_DIR"/n*/vsand.log ||
    lab_fail "no node says it reconciled region 5: $(grep -i reconcil "$VSAN_LAB_DIR"/n*/vsand.log)"
log "region 5 reconciled: $(grep -ho 'region 5: reconciled.*' "$VSAN_LAB_DIR"/n*/vsand.log | head -n 1)"
# n3's plain writes to region 10, acknowledged but never flushed, were
# rolled back on n2 and n3 but made durable on n1 by its FUA write (a
# FUSE fsync covers the whole file): n3's log named the region too.
wait_until 60 region_equal "$UUID" 10 ||
    lab_fail "region 10 stays unequal after the cold start: $(region_sums "$UUID" 10 | tr '\n' ' ')"
for i in $NODES; do
    lab_nbdpy "$i" "$("$LAB" addr "$i")" <<'PY' || lab_fail "n$i: reads after the cut differ"
import sys
from nbdtest import *
m = connect_nbd(sys.argv[1] + "/m")
check(m.pread(1 << 20, 0) == pattern(1, 1 << 20), "the FLUSHed MiB at 0")
check(m.pread(3 << 20, (9 << 20) + 512) == pattern(2, 3 << 20), "the FLUSHed 3 MiB")
k = connect_nbd(sys.argv[1] + "/keep")
check(k.pread(1 << 20, 0) == pattern(3, 1 << 20), "the FUA MiB")
check(k.pread(4096, (20 << 20) + 4096) == pattern(4, 4096), "the FUA block")
PY
    lab_nbdpy "$i" "$("$LAB" addr "$i")/m" "$OFF" >"$T/region5.n$i" <<'PY' || lab_fail "n$i: reading region 5 failed"
import sys, hashlib
from nbdtest import *
print(hashlib.md5(connect_nbd(sys.argv[1]).pread(4096, int(sys.argv[2]))).hexdigest())
PY
    cmp -s "$T/region5.n1" "$T/region5.n$i" || lab_fail "region 5 reads differently through n1 and n$i"
done
log "ok"
