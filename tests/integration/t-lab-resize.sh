#!/usr/bin/env bash
# t-lab-resize: resize and delete reach the mirror engine, on a 3-node lab.
#
#  1. A first lost region (n2 killed while it owns region 0) sizes the
#     survivors' lost-region marks for a 16 MiB volume.
#  2. Grow with a peer away: n3 killed, a write (n1 opens its dirty bitmap
#     for n3, at 16 MiB), the volume grown to 1 GiB through n1, a write
#     straddling the old end and one far past it succeed (the bitmap grew
#     with the volume); n3 comes back and resyncs
#     the new regions too: the three copies are identical.
#  3. A lost region past the old end: n2 writes region 200 and is killed;
#     the survivors mark it lost and n1 reconciles it (the marks grew with
#     the volume; with SANITIZE=1 a write past them is a crash).
#  4. Shrink with a peer away: n3 killed, shrunk to 256 MiB (--force), a
#     write near the new end, n3 back: identical again, each file 256 MiB.
#  5. Delete during resync: n3 killed, 64 MiB dirtied, resync throttled to
#     1 MiB/s on n3 so it is still copying; the volume is deleted through
#     n1: every node drops it within seconds, n3's main loop answers all
#     along (it used to join the resync thread, which waited for a region
#     grant only the main loop delivers), and no bitmap file is left.
# timeout: 420
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

MiB=$((1024 * 1024))
LAB_VOL=r

# write I OFFSET LENGTH SEED: a pattern written and flushed through node I.
write() {
    lab_nbdpy "$1" "$("$LAB" addr "$1")/r" "$2" "$3" "$4" <<'EOF' || lab_fail "write through n$1 at $2 failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
off, length, seed = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for done in range(0, length, 4 << 20):
    n = min(4 << 20, length - done)
    h.pwrite(pattern(seed + done, n), off + done)
h.flush()
EOF
}

logged() {
    grep -q "$2" "$VSAN_LAB_DIR/n$1/vsand.log"
}

lab_up 3
lab vsan 1 volume create r 16M
wait_until 20 all_current || lab_fail "the volume never became current on all nodes: $(states 1)"

log "1. a first lost region: n2 killed while it owns region 0"
write 2 0 $MiB 1
lab kill 2
wait_until 20 logged 1 'region 0: reconciled' ||
    lab_fail "n1 did not reconcile region 0"
lab start 2
wait_until 60 all_current || lab_fail "n2 never came back current: $(states 1)"

log "2. grow to 1 GiB with n3 away, writes across and past the old end"
lab kill 3
wait_until 10 states_are 1 "current current outdated" || lab_fail "n3 not outdated: $(states 1)"
write 1 0 $MiB 21 # n1 opens its bitmap for n3 at the old size
lab vsan 1 volume resize r 1G
write 1 $((12 * MiB)) $((8 * MiB)) 2
write 1 $((512 * MiB)) $((4 * MiB)) 3
lab start 3
wait_until 120 all_current || lab_fail "n3 never came back current: $(states 1) / $(states 3)"
identical "2"

log "3. a lost region past the old end: n2 writes region 200 and is killed"
write 2 $((800 * MiB)) $MiB 4
lab kill 2
wait_until 20 logged 1 'region 200: reconciled' ||
    lab_fail "n1 did not reconcile region 200"
lab start 2
wait_until 60 all_current || lab_fail "n2 never came back current: $(states 1)"
identical "3"

log "4. shrink to 256 MiB with n3 away"
lab kill 3
wait_until 10 states_are 1 "current current outdated" || lab_fail "n3 not outdated: $(states 1)"
lab vsan 1 volume resize r 256M --force
write 1 $((250 * MiB)) $((6 * MiB)) 5
lab start 3
wait_until 120 all_current || lab_fail "n3 never came back current: $(states 1) / $(states 3)"
identical "4"
uuid=$(vs 1 'd["uuid"]')
for i in 1 2 3; do
    size=$(stat -c %s "$VSAN_LAB_DIR/n$i/data/volumes/$uuid.data")
    [ "$size" -eq $((256 * MiB)) ] || lab_fail "n$i's data file is $size bytes"
done

log "5. delete while n3 resyncs"
lab kill 3
wait_until 10 states_are 1 "current current outdated" || lab_fail "n3 not outdated: $(states 1)"
write 1 0 $((64 * MiB)) 6
sed -i 's/^resync_rate *=.*/resync_rate = 1M/' "$VSAN_LAB_DIR/n3/vsan.conf"
grep -q '^resync_rate = 1M' "$VSAN_LAB_DIR/n3/vsan.conf" ||
    sed -i 's/^\[mirror\]$/[mirror]\nresync_rate = 1M/' "$VSAN_LAB_DIR/n3/vsan.conf"
lab start 3
wait_until 30 logged 3 'resync: [0-9]* of [0-9]* regions to copy' || lab_fail "n3 did not start a resync"
[ "$(states 1)" = "current current syncing" ] || lab_fail "n3 is not syncing: $(states 1)"
lab vsan 1 volume delete r
gone_on() {
    ! "$LAB" vsan "$1" volume list 2>/dev/null | grep -qw r && "$LAB" vsan "$1" status >/dev/null
}
for i in 1 2 3; do
    wait_until 20 gone_on "$i" || lab_fail "n$i still lists r, or does not answer"
done
ls "$VSAN_LAB_DIR"/n[123]/data/bitmaps/"$uuid".* 2>/dev/null &&
    lab_fail "bitmaps of the deleted volume are left"
log "5. deleted on every node during n3's resync; no bitmap left"
log "PASS"
