#!/usr/bin/env bash
# t-lab-policing: per-region write priority between two lab nodes, counted
# with the policing counters of `vsan status`.
#
# Uncontended: a client on node 1 writes region 0 of a volume and a client
# on node 2 writes region 1, at the same time. The first write to each
# region asks for it (a request is sent); after that, a burst of writes on
# both sends no policing message at all: the counters of both nodes do
# not move (the fast path). Contended: both clients write the same region
# at the same time; both succeed, and both nodes have sent requests and
# releases, i.e. the region went back and forth. Each client reads its
# own writes back. The test prints the time of a first write (getting the
# region) and of a second, and the messages per write of both bursts.
# timeout: 120
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

SECONDS_PER_BURST=2 # both clients write for this long, at the same time
BLOCKS=200          # distinct 4 KiB blocks a client cycles over

# A client: argv URI REGION_OFFSET SLOT STRIDE SECONDS BLOCKS READY GO
# COUNT_FILE. Times one write at the region's start and one after it, says
# READY, waits for GO, then for SECONDS writes 4 KiB blocks over and over,
# block k (k < BLOCKS) at REGION_OFFSET + (k * STRIDE + SLOT) * 4 KiB;
# reads them all back and leaves the number of writes in COUNT_FILE.
CLIENT_PY='
import os, sys, time
from nbdtest import *
uri, base, slot, stride, seconds, blocks, ready, go, count_file = sys.argv[1:]
base, slot, stride, seconds, blocks = int(base), int(slot), int(stride), float(seconds), int(blocks)
h = connect_nbd(uri)
def block(k):
    return base + (k * stride + slot) * 4096
def data(k):
    return pattern(k * 2 + slot, 4096)
times = []
for k in (0, 1):
    start = time.monotonic()
    h.pwrite(data(k), block(k))
    times.append((time.monotonic() - start) * 1000)
open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go):
    check(time.monotonic() < deadline, "no go after 60 s")
    time.sleep(0.005)
start = time.monotonic()
n = 0
while time.monotonic() - start < seconds:
    h.pwrite(data(n % blocks), block(n % blocks))
    n += 1
elapsed = time.monotonic() - start
for k in range(min(n, blocks)):
    check(h.pread(4096, block(k)) == data(k), "block %d reads back wrong" % k)
with open(count_file, "w") as f:
    f.write("%d\n" % n)
print("first write %.2f ms, second %.2f ms; %d writes in %.0f ms (%.0f/s)"
      % (times[0], times[1], n, elapsed * 1000, n / elapsed))'

# "REQUESTS RELEASES DELIVERED" of node I's policing counters.
counters() {
    st "$1" '" ".join(str(c["policing"][k]) for k in ("requests_sent", "releases_sent", "messages_delivered"))'
}

# burst NAME STRIDE REGION1 SLOT1 REGION2 SLOT2: a client on node 1 (in
# region REGION1, at slot SLOT1) and one on node 2, let go together once
# both have made their first two writes. The counters of both nodes
# before the burst go to $T/NAME.before, after it to $T/NAME.after.
burst() {
    local name=$1 stride=$2 size pids=() i
    local -a region=("$3" "$5") slot=("$4" "$6")
    size=$(st 1 'c["region_size"]')
    for i in 1 2; do
        bg_start "$name.n$i" env PYTHONPATH="$VT_DIR" "$PY" -c "$CLIENT_PY" \
            "$("$LAB" addr "$i")/p" $((region[i - 1] * size)) "${slot[i - 1]}" "$stride" \
            "$SECONDS_PER_BURST" "$BLOCKS" "$T/$name.ready$i" "$T/$name.go" "$T/$name.count$i"
        pids+=("$BG_PID")
    done
    wait_until 30 test -e "$T/$name.ready1" -a -e "$T/$name.ready2" ||
        lab_fail "$name: clients not ready: $(cat "$T/$name".n*.out)"
    { counters 1 && counters 2; } >"$T/$name.before"
    touch "$T/$name.go"
    for i in 1 2; do
        # A write that never completes is a region never granted back.
        wait_until 60 proc_gone "${pids[i - 1]}" ||
            lab_fail "$name: the client on n$i is stuck in a write; counters now:" \
                "$(counters 1) / $(counters 2) (was $(tr '\n' / <"$T/$name.before"))"
        wait "${pids[i - 1]}" || lab_fail "$name: client on n$i failed: $(cat "$T/$name.n$i.out")"
        log "$name, n$i: $(cat "$T/$name.n$i.out")"
    done
    { counters 1 && counters 2; } >"$T/$name.after"
}

# delta NAME NODE FIELD: how much counter FIELD (1 requests, 2 releases,
# 3 delivered) of node NODE (1 or 2) moved during burst NAME.
delta() {
    local before after
    before=$(sed -n "${2}p" "$T/$1.before" | cut -d' ' -f"$3")
    after=$(sed -n "${2}p" "$T/$1.after" | cut -d' ' -f"$3")
    echo $((after - before))
}

# per_write NAME: the messages delivered on node 1 during burst NAME (every
# node delivers every message) per write of both clients.
per_write() {
    local writes
    writes=$(($(cat "$T/$1.count1") + $(cat "$T/$1.count2")))
    awk -v m="$(delta "$1" 1 3)" -v w="$writes" \
        'BEGIN { printf "%d messages for %d writes: %.4f per write", m, w, m / w }'
}

lab_up 2
expect_exit 0 "$LAB" vsan 1 volume create p 64M
wait_until 10 "$LAB" vsan 2 volume show p >/dev/null 2>&1 || lab_fail "n2 never listed volume p"

log "uncontended: n1 writes region 0, n2 region 1"
burst uncontended 1 0 0 1 0
for i in 1 2; do
    before=$(sed -n "${i}p" "$T/uncontended.before")
    [ "${before%% *}" -ge 1 ] || lab_fail "n$i sent no request for its first write (counters: $before)"
    for f in 1 2 3; do
        [ "$(delta uncontended "$i" "$f")" -eq 0 ] ||
            lab_fail "n$i's counters moved on the fast path: $(sed -n "${i}p" "$T/uncontended.before") -> $(sed -n "${i}p" "$T/uncontended.after") (requests releases delivered)"
    done
done
log "uncontended: $(per_write uncontended)"

log "contended: n1 and n2 write region 2, interleaved 4 KiB blocks"
burst contended 2 2 0 2 1
for i in 1 2; do
    if [ "$(delta contended "$i" 1)" -lt 1 ] || [ "$(delta contended "$i" 2)" -lt 1 ]; then
        lab_fail "n$i: the region did not move back and forth: $(sed -n "${i}p" "$T/contended.before") -> $(sed -n "${i}p" "$T/contended.after") (requests releases delivered)"
    fi
    log "contended, n$i: $(delta contended "$i" 1) requests, $(delta contended "$i" 2) releases sent"
done
log "contended: $(per_write contended)"
log "ok"
