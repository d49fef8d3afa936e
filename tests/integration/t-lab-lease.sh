#!/usr/bin/env bash
# t-lab-lease: a node the others outdated before it heard answers no read
# from its copy (policing/protocol.h, read leases).
#
# Node 2's corosync is frozen (`deploy/lab freeze 2 corosync`): its vsand
# runs on and, with no news, still holds itself quorate and its copy
# current, while nodes 1 and 3 drop node 2 after the token timeout and
# outdate its copy. A write through node 1 is then acknowledged without
# node 2. A read of the same block through node 2, sent after that, must
# return the new data or fail, never the old data: node 2's read lease
# lapsed once its heartbeats stopped coming back. Before read leases node 2
# answered from its copy for as long as its corosync was frozen (the
# checker's readers caught the same with a node cut off). Then node 2's
# corosync is thawed: it rejoins, resyncs, and reads the new data.
# timeout: 180
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

OFF=$((4096 * 100))

# read_n2 SEED: prints "new" if a read through node 2 returns pattern(SEED),
# "old" if it returns pattern(1), "error: ..." if it fails.
read_n2() {
    nbdpy "$("$LAB" addr 2)/m" "$OFF" "$1" <<'PY'
import sys
from nbdtest import *
off, seed = int(sys.argv[2]), int(sys.argv[3])
try:
    h = connect_nbd(sys.argv[1])
    got = h.pread(4096, off)
except nbd.Error as e:
    print("error:", e)
    sys.exit(0)
print("new" if got == pattern(seed, 4096) else "old" if got == pattern(1, 4096) else "other")
PY
}

write_n1() {
    nbdpy "$("$LAB" addr 1)/m" "$OFF" "$1" <<'PY'
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(int(sys.argv[3]), 4096), int(sys.argv[2]))
h.flush()
PY
}

thaw() {
    "$LAB" thaw 2 corosync >/dev/null 2>&1 || true
}

lab_up 3
lab vsan 1 volume create m 16M
wait_until 20 all_current || lab_fail "m never became current on all nodes: $(states 1)"
write_n1 1 || lab_fail "the first write through n1 failed"
[ "$(read_n2 1)" = new ] || lab_fail "n2 does not read the first write: $(read_n2 1)"

log "n2's corosync frozen; n1 and n3 outdate n2's copy"
on_exit thaw
lab freeze 2 corosync
wait_until 30 states_are 1 "current outdated current" ||
    lab_fail "n1 never outdated n2's copy: $(states 1)"
write_n1 2 || lab_fail "the write through n1 without n2 failed"
got=$(read_n2 2)
log "a read through n2 after the write was acknowledged: $got"
case $got in
new | error:*) ;;
*) lab_fail "n2 answered a read from its outdated copy: $got" ;;
esac

log "n2's corosync thawed: it rejoins and resyncs"
lab thaw 2 corosync
wait_until 60 all_current || lab_fail "n2 never became current again: $(states 1)"
[ "$(read_n2 2)" = new ] || lab_fail "n2 does not read the new data after its resync: $(read_n2 2)"
log "ok"
