#!/usr/bin/env bash
# t-lab-frozen: a vsand that stops answering while its corosync runs on
# (`deploy/lab freeze`: SIGSTOP, as a hung process or a hung disk) is
# evicted by the others (policing/protocol.c, "evicting a member that does
# not answer"), and the cluster goes on without it.
#
#  1. n1 owns region 0 (it wrote there) and has a client connected. n1 is
#     frozen, and that client sends a write to region 0. A write through
#     n2 to region 0 succeeds once n2 has evicted n1 (2 x the mirror
#     timeout, 8 s; the bound is 30 s), and so does one through n3 to
#     region 2; n2 and n3 list members "2 3" and n1's replica outdated,
#     and n2 holds n1's service address.
#  2. Thawed, n1 reads its own eviction and stops, its log says why, and
#     the write its client sent is never acknowledged. Started again, n1
#     resyncs: three current, byte-identical copies holding n2's write.
#  3. n1 is frozen again and n3's vsand restarted: the sync round n3's
#     return opens would wait for n1's OFFER for good, so n1 is evicted
#     (for the round); a volume created through n3 then appears on n2.
#     Thawed, n1 stops; started again, it has the new volume too.
#  4. n1 owns region 0 again, is frozen and evicted for it (as in 1); then
#     n3's vsand is restarted: corosync still lists n1, and n3 learns of the
#     eviction from n2's OFFER instead of waiting for n1's; a volume created
#     through n3 appears on n2. n1 thawed stops, returns, and the copies of
#     m end identical.
# Without the eviction the writes of step 1 and the round of step 3 wait
# as long as n1 is frozen.
# timeout: 240
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

# Writes pattern SEED at SEED MiB (argv 2) of URI (argv 1), reads it back.
WRITE_PY='
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
seed = int(sys.argv[2])
h.pwrite(pattern(seed, 65536), seed << 20)
h.flush()
check(h.pread(65536, seed << 20) == pattern(seed, 65536), "read back differs")'

# write_ok I SEED: WRITE_PY through node I.
write_ok() {
    PYTHONPATH="$VT_DIR" timeout 60 "$PY" - "$("$LAB" addr "$1")/m" "$2" <<<"$WRITE_PY"
}

# A client of n1 that connects, says "ready", then waits for $T/go to send
# pattern 2 at 2 MiB; it says "acknowledged" only if n1 acknowledges it.
HELD_PY='
import os, sys, time
from nbdtest import *
h = connect_nbd(sys.argv[1])
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
h.pwrite(pattern(2, 65536), 2 << 20)
h.flush()
print("acknowledged", flush=True)'

# thaw_and_restart I TIMES: thaws node I, which must stop by itself,
# saying (for the TIMESth time) that it was evicted; then starts it again.
thaw_and_restart() {
    local pid
    pid=$(cat "$VSAN_LAB_DIR/n$1/lab.vsand")
    lab thaw "$1"
    wait_until 30 proc_gone "$pid" || lab_fail "n$1 still runs 30 s after the thaw"
    [ "$(grep -c "evicted this vsand" "$VSAN_LAB_DIR/n$1/vsand.log")" -eq "$2" ] ||
        lab_fail "n$1 stopped without saying it was evicted"
    lab start "$1"
}

# Node I holds n1's service address, as node 2 sees it.
n1_address_on() {
    [ "$(st 2 "[s['holder'] for s in c['services'] if s['owner'] == 1][0]")" = "$1" ]
}

# Node I's vsand log since its last start.
last_run() {
    sed -n '/^=== /h; /^=== /!H; ${g;p}' "$VSAN_LAB_DIR/n$1/vsand.log"
}

# Node I knows volume m2.
has_m2() {
    [ "$(LAB_VOL=m2 vs "$1" 'd["name"]')" = m2 ]
}

lab_up 3
lab vsan 1 volume create m 64M
wait_until 20 all_current || lab_fail "m never became current on all nodes: $(states 1)"
[ "$(st 1 'c["region_size"]')" -eq $((4 << 20)) ] || lab_fail "expected 4 MiB regions"

log "1. n1 owns region 0 and is frozen; writes through n2 and n3 go on"
write_ok 1 1 || lab_fail "write through n1 failed"
bg_start held env PYTHONPATH="$VT_DIR" "$PY" -c "$HELD_PY" "$("$LAB" addr 1)/m" "$T/go"
HELD=$BG_PID
wait_until 10 grep -q ready "$T/held.out" || lab_fail "n1's client did not connect: $(cat "$T/held.out")"
lab freeze 1
touch "$T/go"
T0_MS=$(now_ms)
write_ok 2 3 || lab_fail "write to region 0 through n2 failed while n1 was frozen"
log "write to n1's region 0 through n2 done $(($(now_ms) - T0_MS)) ms after the freeze"
grep -q "node 1 (pid [0-9]*) evicted by node 2: it kept volume [0-9a-f]* region 0" \
    "$VSAN_LAB_DIR/n2/vsand.log" || lab_fail "n2 does not log n1's eviction for region 0"
write_ok 3 9 || lab_fail "write to region 2 through n3 failed while n1 was frozen"
for i in 2 3; do
    [ "$(members "$i")" = "2 3" ] || lab_fail "n$i: members $(members "$i") with n1 evicted"
    [ "$(states "$i")" = "outdated current current" ] || lab_fail "n$i: replicas $(states "$i")"
done
wait_until 10 n1_address_on 2 || lab_fail "n2 did not take n1's service address over"
log "n1 evicted: members 2 3, its replica outdated, its service address on n2"

log "2. thawed, n1 stops; restarted, it resyncs"
thaw_and_restart 1 1
wait "$HELD" && status=0 || status=$?
! grep -q acknowledged "$T/held.out" ||
    lab_fail "n1 acknowledged a write it took while the group had evicted it"
log "n1's client: exit $status, its write not acknowledged"
wait_until 60 all_current || lab_fail "n1 did not come back current: $(states 2)"
copies_identical || lab_fail "the copies differ after n1's resync"
write_ok 1 3 || lab_fail "n1 does not read back n2's write"
log "three current, identical copies"

log "3. n1 frozen while n3 returns: the sync round evicts n1"
lab freeze 1
lab kill 3
lab start 3
T0_MS=$(now_ms)
timeout 60 "$LAB" vsan 3 volume create m2 16M >/dev/null ||
    lab_fail "a volume create through n3 did not succeed while n1 was frozen"
log "volume created through n3 $(($(now_ms) - T0_MS)) ms after it started"
grep -q "node 1 (pid [0-9]*) evicted by node [23]: it sent nothing in a sync round" \
    "$VSAN_LAB_DIR/n2/vsand.log" || lab_fail "n2 does not log n1's eviction for the round"
has_m2 2 || lab_fail "n2 does not list m2"
thaw_and_restart 1 2
wait_until 30 has_m2 1 || lab_fail "n1 does not list m2 after its return"

log "4. n1 evicted for a region; n3 returns and learns of it from an OFFER"
wait_until 60 all_current || lab_fail "m is not current everywhere: $(states 2)"
write_ok 1 1 || lab_fail "write through n1 failed"
lab freeze 1
write_ok 2 3 || lab_fail "write to region 0 through n2 failed while n1 was frozen"
lab kill 3
lab start 3
timeout 60 "$LAB" vsan 3 volume create m3 16M >/dev/null ||
    lab_fail "a volume create through n3 did not succeed after its return"
last_run 3 | grep -q "node 1 (pid [0-9]*) was evicted, says node 2's OFFER" ||
    lab_fail "n3 did not learn of n1's eviction from n2's OFFER"
! last_run 3 | grep -q "sync round has waited" ||
    lab_fail "n3 waited for the evicted n1 in its sync round"
thaw_and_restart 1 3
wait_until 60 all_current || lab_fail "n1 did not come back current: $(states 2)"
copies_identical || lab_fail "the copies differ after n1's second resync"
log "ok"
