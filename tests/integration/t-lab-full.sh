#!/usr/bin/env bash
# t-lab-full: a node whose store fills up, on a 3-node lab.
#
#  n3's data dir is a 48 MiB file system (a tmpfs mounted over it, with
#  what it held copied in). A 64 MiB volume on n1 and n3 (--nodes 1,3:
#  it fits n3 at overcommit 2) is written in full through n2, a diskless
#  node, with fio and crc32c verify:
#  1. fio sees no error: n3's copy fails when its store runs out of space
#     (ENOSPC, as any I/O error), is outdated on n1's word, and the writes
#     go on at n1;
#  2. n3 says so: its copy is "failed" in `volume show`, the set shows it
#     outdated everywhere, and `pool status` warns that n3 is nearly full;
#  3. the data read back through every node (n3 too, from n1's copy) is
#     what fio wrote (it verified), and through n3 it is n1's copy.
# timeout: 300
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

LAB_VOL=v

lab_up 3
wait_until 30 full_view 1 "1 2 3" || lab_fail "n1 never saw the three nodes"

log "n3's data dir on a 48 MiB file system"
lab stop 3
DATA3="$VSAN_LAB_DIR/n3/data"
cp -a "$DATA3" "$T/data3"
mount -t tmpfs -o size=48m vsan-t-lab-full "$DATA3" || lab_fail "cannot mount a tmpfs on $DATA3"
on_exit "umount -l '$DATA3'"
cp -a "$T/data3/." "$DATA3/" || lab_fail "cannot copy n3's data dir back"
lab start 3
wait_until 30 full_view 1 "1 2 3" || lab_fail "n3 never came back"
# pool status on n2 (I EXPR): d is its JSON.
pool() {
    "$LAB" vsan "$1" --json pool status 2>/dev/null | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
print(eval(sys.argv[1]))' "$2"
}
wait_until 30 announced 3 ||
    lab_fail "n1 never heard every node's capacity"

lab vsan 1 volume create v 64M --nodes 1,3
wait_until 20 states_are 2 "current current" || lab_fail "v's replicas: $(states 2)"

log "1. fio writes all of v through n2 with verify; n3's store fills up"
fio --name=v --ioengine=nbd --uri="$(addr 2)/v" --rw=write --bs=1M --iodepth=4 --size=64M \
    --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 >"$T/fio.out" 2>&1 ||
    lab_fail "fio failed: $(tail -n 20 "$T/fio.out")"
grep -qi "verify.*\(bad\|mismatch\)" "$T/fio.out" && lab_fail "fio: $(grep -i verify "$T/fio.out")"
log "1. fio: no error, no verify failure"

log "2. n3 says its copy failed; the others see it outdated; pool status warns"
[ "$(vs 3 'd["mirror"]["local"]')" = failed ] ||
    lab_fail "n3's copy is $(vs 3 'd["mirror"]["local"]'), not failed"
for i in 1 2 3; do
    wait_until 20 states_are "$i" "current outdated" || lab_fail "n$i sees v's replicas as $(states "$i")"
done
logged 3 0 "No space left on device" || lab_fail "n3 did not log the full store"
warned() {
    pool 1 '" ".join(n.get("warning", "") for n in d["nodes"] if n["node"] == 3)' | grep -q .
}
wait_until 30 warned || lab_fail "pool status does not warn about n3: $(pool 1 'd["nodes"]')"
log "2. pool status on n3: $(pool 1 '[n.get("warning") for n in d["nodes"] if n["node"] == 3][0]')"

log "3. v reads the same through every node"
nbdcopy -- "$(addr 1)/v" "$T/v1.raw"
for i in 2 3; do
    same "$i" v "$T/v1.raw" || lab_fail "v through n$i differs from v through n1"
done
log "t-lab-full: ok"
