#!/usr/bin/env bash
# t-lab-inflight: a write in flight when its writer dies, copied to one
# survivor and not the other, is reconciled among the survivors before the
# region is written again (mirror/reconcile.c).
#
# Node 1's mirror packets to node 3 are dropped, so a write through node 1
# reaches node 2 only; node 1 is killed before its mirror timeout would mark
# node 3 outdated. Then:
#  - node 2 (the surviving current replica with the lowest id) reconciles
#    the region, and says the copies differed; nodes 2 and 3 end equal;
#  - the client's resent write, through node 2, reads back through node 3;
#  - node 1 returns and resyncs: all three copies byte-identical.
# Without the reconciliation node 2 would keep the write and node 3 not.
# timeout: 180
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

# same_range I J OFF LEN: nodes I and J hold the same bytes there.
same_range() {
    cmp -s <(dd if="$(data "$1")" bs=4096 skip=$(($3 / 4096)) count=$(($4 / 4096)) status=none) \
        <(dd if="$(data "$2")" bs=4096 skip=$(($3 / 4096)) count=$(($4 / 4096)) status=none)
}

region_written_everywhere

log "n1's mirror packets to n3 dropped; a write through n1 reaches n2 only"
mirror_block 1 3
bg_start writer env PYTHONPATH="$VT_DIR" "$PY" -c '
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(2, 4096), int(sys.argv[2]))
print("acknowledged")' "$("$LAB" addr 1)/m" "$OFF"
WRITER=$BG_PID
holds 2 "$OFF" 2 1.5 || lab_fail "n2 never got the write in flight"
holds 3 "$OFF" 1 || lab_fail "n3 got the write although its packets were dropped"
lab kill 1
wait_until 10 proc_gone "$WRITER" || kill "$WRITER" 2>/dev/null
grep -q acknowledged "$T/writer.out" && lab_fail "the write was acknowledged without n3"
mirror_unblock 1

log "n2 and n3 reconcile the region"
wait_until 20 grep -q "region 2: reconciled (copies differed)" \
    "$VSAN_LAB_DIR/n2/vsand.log" ||
    lab_fail "n2 did not reconcile region 2: $(grep -i reconcil "$VSAN_LAB_DIR"/n[23]/vsand.log)"
same_range 2 3 $((2 * RS)) "$RS" || lab_fail "n2 and n3 still differ in region 2"
log "reconciled: $(grep -o 'region 2: reconciled.*' "$VSAN_LAB_DIR/n2/vsand.log" | head -n 1)"

log "the client resends its write through n2 and reads it through n3"
nbdpy "$("$LAB" addr 2)/m" "$OFF" <<'EOF' || lab_fail "the resent write failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(2, 4096), int(sys.argv[2]))
h.flush()
EOF
nbdpy "$("$LAB" addr 3)/m" "$OFF" <<'EOF' || lab_fail "n3 does not read the resent write"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
check(h.pread(4096, int(sys.argv[2])) == pattern(2, 4096), "the resent write through n3")
EOF

log "n1 returns and resyncs"
lab start 1
wait_until 60 all_current || lab_fail "n1 did not come back current: $(states 2)"
sums=$(md5sum "$(data 1)" "$(data 2)" "$(data 3)" | awk '{print $1}' | sort -u | wc -l)
[ "$sums" -eq 1 ] || lab_fail "replicas differ: $(md5sum "$(data 1)" "$(data 2)" "$(data 3)")"
log "ok: the three replicas are byte-identical"
