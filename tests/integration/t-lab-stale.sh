#!/usr/bin/env bash
# t-lab-stale: every answer about data through a node whose own copy is not
# current comes from a current copy (issue 11, item 1). Copies and backups
# taken through such a node (nbdcopy, qemu-img convert) skip what BLOCK_STATUS
# and structured READs call holes, so a node that described its stale file
# would hand out zeroes where the volume has data.
#
#  1. Node 2's copy is failed (`vsan replica fail`): 64 MiB of random data
#     written through node 1 where node 2's file has holes (holes left in
#     between), and 4 MiB node 2 still holds trimmed. Through node 2:
#     nbdcopy and qemu-img convert give the written bytes; `nbdinfo --map`
#     equals the map through node 1 (written ranges data, the rest holes);
#     the copies stay sparse.
#  2. Node 2's copy replaced (`vsan replica replace`) and rebuilding at
#     node 2's resync_rate (1M, so it stays syncing for the test), while
#     node 1 writes more: the same checks through node 2 while it syncs.
# timeout: 300
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

MiB=$((1024 * 1024))
SIZE=$((128 * MiB))
LAB_VOL=st

# write_n1 SEED OFF:LEN...: random bytes (from SEED) through node 1 and
# into $T/expected.img at the same offsets; "trim" as SEED trims instead.
write_n1() {
    nbdpy "$("$LAB" addr 1)/st" "$T/expected.img" "$@" <<'EOF'
import random, sys
from nbdtest import *
uri, expected, seed = sys.argv[1], sys.argv[2], sys.argv[3]
h = connect_nbd(uri)
rnd = random.Random(seed)
with open(expected, "r+b") as f:
    for spec in sys.argv[4:]:
        off, length = (int(x) for x in spec.split(":"))
        if seed == "trim":
            h.trim(length, off)
            f.seek(off)
            f.write(bytes(length))
            continue
        for o in range(off, off + length, 4 << 20):
            data = rnd.randbytes(min(4 << 20, off + length - o))
            h.pwrite(data, o)
            f.seek(o)
            f.write(data)
h.flush()
EOF
}

# The map of the volume through node I, as a backup tool sees it.
map_of() {
    nbdinfo --map "$("$LAB" addr "$1")/st"
}

# Requests small enough to be tried on the reading thread (NBD_IO_NOWAIT),
# which must not wait there for a peer's extents: structured READs of 64
# and 128 KiB (they look for holes) and BLOCK_STATUS over data and hole
# edges through n2 agree with the expected image and with n1.
small_requests_agree() {
    nbdpy "$("$LAB" addr 1)/st" "$("$LAB" addr 2)/st" "$T/expected.img" <<'EOF'
import sys
from nbdtest import *
n1, n2 = connect_nbd(sys.argv[1]), connect_nbd(sys.argv[2])
expected = open(sys.argv[3], "rb")
MiB = 1 << 20

def status(h, length, off):
    got = []
    def cb(meta, offset, entries, err):
        got.extend(entries)
        return 0
    h.block_status(length, off, cb)
    return got

for edge in (4 * MiB, 5 * MiB + 12 * 1024, 21 * MiB + 12 * 1024 + 576 * 1024, 120 * MiB):
    for length in (64 * 1024, 128 * 1024):
        off = edge - length // 2
        expected.seek(off)
        check(n2.pread(length, off) == expected.read(length), "READ %d at %d" % (length, off))
        check(status(n2, length, off) == status(n1, length, off), "BLOCK_STATUS at %d" % off)
EOF
}

# check_through_n2 WHAT: reads, map and copies through node 2 are the
# volume's (what node 1, a current copy, says).
check_through_n2() {
    local what=$1 map1 map2 used
    rm -f "$T/copy.img" "$T/qemu.img"
    nbdcopy "$("$LAB" addr 2)/st" "$T/copy.img" || lab_fail "$what: nbdcopy through n2 failed"
    cmp "$T/expected.img" "$T/copy.img" ||
        lab_fail "$what: nbdcopy through n2 returned other bytes than were written"
    used=$(du -B1 "$T/copy.img" | awk '{print $1}')
    [ "$used" -le $((SIZE * 3 / 4)) ] ||
        lab_fail "$what: nbdcopy through n2 wrote $((used / MiB)) MiB: the copy is not sparse"
    map1=$(map_of 1) || lab_fail "$what: nbdinfo --map through n1 failed"
    map2=$(map_of 2) || lab_fail "$what: nbdinfo --map through n2 failed"
    [ "$map1" = "$map2" ] ||
        lab_fail "$what: the map through n2 differs from n1's:
$(diff <(echo "$map1") <(echo "$map2") | head -n 20 || true)"
    grep -q hole <<<"$map2" && grep -q data <<<"$map2" ||
        lab_fail "$what: the map should show both data and holes: $map2"
    small_requests_agree || lab_fail "$what: small READs or BLOCK_STATUS through n2 are wrong"
    qemu-img convert -f raw -O raw "$("$LAB" addr 2)/st" "$T/qemu.img" ||
        lab_fail "$what: qemu-img convert through n2 failed"
    cmp "$T/expected.img" "$T/qemu.img" ||
        lab_fail "$what: qemu-img convert through n2 returned other bytes than were written"
    log "$what: nbdcopy, qemu-img and the map through n2 are the volume's ($(wc -l <<<"$map2") extents, copy uses $((used / MiB)) MiB)"
}

lab_up 3
# A slow resync on n2, so its rebuild in step 2 outlasts the checks.
sed -i '/^resync_rate/d; /^\[mirror\]/a resync_rate = 1M' "$VSAN_LAB_DIR/n2/vsan.conf"
grep -q '^resync_rate = 1M' "$VSAN_LAB_DIR/n2/vsan.conf" || lab_fail "n2's vsan.conf has no [mirror]"
lab kill 2
lab start 2
lab vsan 1 volume create st 128M
wait_until 30 all_current || lab_fail "the volume never became current on all nodes: $(states 1)"
truncate -s "$SIZE" "$T/expected.img"

log "1. n2's copy failed; 64 MiB written through n1 where n2's file has holes"
write_n1 old $((120 * MiB)):$((4 * MiB)) || lab_fail "the first write through n1 failed"
lab vsan 2 replica fail st
wait_until 10 states_are 1 "current outdated current" ||
    lab_fail "n2 not outdated after replica fail: $(states 1)"
ranges=()
for k in $(seq 0 13); do
    ranges+=("$((k * 8 * MiB)):$((4 * MiB))" "$((k * 8 * MiB + 5 * MiB + 12 * 1024)):$((576 * 1024))")
done
write_n1 new "${ranges[@]}" || lab_fail "writes through n1 failed"
write_n1 trim $((120 * MiB)):$((4 * MiB)) || lab_fail "a trim through n1 failed"
check_through_n2 "1. failed"

log "2. n2's copy replaced, rebuilding at 1 MiB/s; n1 writes meanwhile"
lab vsan 2 replica replace st
rebuilding() { [ "$(vs 2 'd["mirror"]["local"]')" = rebuild ] && states_are 1 "current syncing current"; }
wait_until 20 rebuilding ||
    lab_fail "n2 is not rebuilding: local $(vs 2 'd["mirror"]["local"]'), $(states 1)"
write_n1 more $((112 * MiB)):$((6 * MiB)) $((30 * MiB)):$((1 * MiB)) ||
    lab_fail "writes through n1 during the rebuild failed"
check_through_n2 "2. syncing"
rebuilding || lab_fail "n2 finished rebuilding during the checks: they tested a current copy"
log "ok"
