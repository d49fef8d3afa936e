#!/usr/bin/env bash
# t-lab-epoch: a resize is a configuration epoch (a cut of kind CONFIG,
# README "Configuration epochs"), on a 3-node lab.
#
#  1. Grow under load: fio (nbd engine, crc32c verify) writes through n2
#     and a QD1 writer through n3 times every write, while the volume is
#     grown from 64 MiB to 128 MiB through n1: fio sees no error and no
#     verify failure, neither client's connection ends, every node shows
#     the new size with the generation bumped exactly once, and a write
#     past the old end through n3 reads back through n2. The QD1 writer's
#     latencies give the pause a resize costs (p99 and max, logged).
#  2. A node frozen during the barrier (`lab freeze 3`: its vsand never
#     drains, its corosync stays in the group): the resize through n1
#     fails with exit 10 and "resize aborted" within the cut's timeout;
#     n1 and n2 keep the old size and generation, and the QD1 writer
#     through n2 goes on (after the mirror timeout outdates n3); thawed, n3
#     has the old size and generation too, and comes back current.
#  3. The refusals stay: a shrink of a volume with a snapshot (exit 7), a
#     shrink while a client is connected through the asking node (exit 6).
# timeout: 300
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

MiB=$((1024 * 1024))

size_on() { vs "$1" 'd["size"]'; }
gen_on() { vs "$1" 'd["generation"]'; }

# qd1_start I NAME: a writer through node I, one 4 KiB write at a time in
# the second 32 MiB (fio verifies the first), each one's start and latency (µs) in $T/NAME.lat,
# until $T/NAME.stop exists.
# (The script is a file: a background command's stdin is /dev/null.)
qd1_start() {
    rm -f "$T/$2.stop"
    cat >"$T/qd1.py" <<'EOF'
import os, random, sys, time
from nbdtest import *
h = connect_nbd(sys.argv[1])
stop, out = sys.argv[2], open(sys.argv[3], "w", buffering=1)
rnd = random.Random(7)
buf = pattern(7, 4096)
while not os.path.exists(stop):
    off = (32 << 20) + rnd.randrange(0, 32 << 20, 4096)
    t = time.monotonic()
    h.pwrite(buf, off)
    out.write("%.6f %d\n" % (t, (time.monotonic() - t) * 1e6))
h.shutdown()
EOF
    bg_start "$2" "$LAB" exec "$1" env PYTHONPATH="$VT_DIR" "$PY" "$T/qd1.py" "$(addr "$1")/m" \
        "$T/$2.stop" "$T/$2.lat"
    QD1=$BG_PID
}

qd1_stop() {
    touch "$T/$1.stop"
    wait_until 30 proc_gone "$QD1" || lab_fail "the QD1 writer $1 is stuck"
    wait "$QD1" || lab_fail "the QD1 writer $1 failed: $(tail -n 5 "$T/$1.out")"
}

# qd1_writes NAME: how many writes it has done.
qd1_writes() { wc -l 2>/dev/null <"$T/$1.lat" || echo 0; }
qd1_past() { [ "$(qd1_writes "$1")" -gt "$2" ]; }

# latency NAME FROM TO: "p99 max count" (µs) of the writes started in
# [FROM, TO] (monotonic seconds; 0 0: all).
latency() {
    "$PY" - "$T/$1.lat" "$2" "$3" <<'EOF'
import sys
lo, hi = float(sys.argv[2]), float(sys.argv[3])
lat = sorted(int(l.split()[1]) for l in open(sys.argv[1])
             if hi == 0 or lo <= float(l.split()[0]) <= hi)
print(lat[min(len(lat) - 1, int(len(lat) * 0.99))], lat[-1], len(lat))
EOF
}

mono() { "$PY" -c 'import time; print("%.6f" % time.monotonic())'; }

lab_up 3
lab vsan 1 volume create m 64M
wait_until 20 all_current || lab_fail "the volume never became current on all nodes: $(states 1)"

log "1. grow 64 -> 128 MiB through n1 under fio verify through n2 and a QD1 writer through n3"
bg_start fio fio --name=m --ioengine=nbd --uri="$(addr 2)/m" --rw=randwrite --bs=4k \
    --iodepth=8 --size=32M --loops=4 --verify=crc32c --verify_fatal=1 --do_verify=1 \
    --verify_state_save=0
FIO=$BG_PID
qd1_start 3 qd1
wait_until 20 qd1_past qd1 500 || lab_fail "the QD1 writer does not write: $(cat "$T/qd1.out")"
gen0=$(gen_on 1)
for i in 2 3; do
    [ "$(gen_on "$i")" = "$gen0" ] || lab_fail "n$i's generation is $(gen_on "$i"), n1's $gen0"
done
before=$(qd1_writes qd1)
t0=$(mono)
expect_exit 0 "$LAB" vsan 1 volume resize m 128M
t1=$(mono)
wait_until 20 qd1_past qd1 $((before + 500)) || lab_fail "the QD1 writer stopped after the grow"
for i in 1 2 3; do
    [ "$(size_on "$i")" -eq $((128 * MiB)) ] || lab_fail "n$i: size $(size_on "$i") after the grow"
    [ "$(gen_on "$i")" -eq $((gen0 + 1)) ] ||
        lab_fail "n$i: generation $(gen_on "$i") after the grow, was $gen0 (bumped once expected)"
done
qd1_stop qd1
wait_until 120 proc_gone "$FIO" || lab_fail "fio is stuck"
wait "$FIO" || lab_fail "fio failed across the grow: $(grep -iE 'err|verify|bad' "$T/fio.out" | head)"
grep -qi "verify.*\(bad\|mismatch\)" "$T/fio.out" &&
    lab_fail "fio reported verify errors: $(grep -i verify "$T/fio.out")"
read -r p99 max n < <(latency qd1 0 0)
read -r wp99 wmax wn < <(latency qd1 "$t0" "$t1")
log "1. QD1 4 KiB writes through n3: p99 ${p99} us, max ${max} us over $n writes;" \
    "during the resize command ($(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000 }') ms):" \
    "p99 ${wp99} us, max ${wmax} us over $wn writes"
for i in 1 2 3; do
    log "1. n$i: $(grep -o '[0-9]* ms after its BEGIN here.*' "$VSAN_LAB_DIR/n$i/vsand.log" | tail -n 1 |
        sed 's/ms after its BEGIN here,/ms held,/')"
done
lab_nbdpy 3 "$(addr 3)/m" <<'EOF' || lab_fail "a write past the old end through n3 failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
assert h.get_size() == 128 << 20, h.get_size()
h.pwrite(pattern(9, 1 << 20), 100 << 20)
h.flush()
EOF
lab_nbdpy 2 "$(addr 2)/m" <<'EOF' || lab_fail "n2 does not read what n3 wrote past the old end"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
assert h.pread(1 << 20, 100 << 20) == pattern(9, 1 << 20)
EOF
log "1. fio verify and the QD1 writer went on across the grow; 128 MiB and generation $((gen0 + 1)) on every node"

log "2. n3 frozen during the barrier: the resize aborts, nothing changes, I/O goes on"
qd1_start 2 qd1b
wait_until 20 qd1_past qd1b 200 || lab_fail "the QD1 writer through n2 does not write"
gen1=$(gen_on 1)
lab freeze 3
mark=$(log_mark 1)
start=$SECONDS
expect_exit 10 "$LAB" vsan 1 volume resize m 256M
expect_out 'resize aborted: a node did not drain its writes in time \(the size is unchanged'
log "2. refused after $((SECONDS - start)) s: $OUT"
logged 1 "$mark" 'aborted: a node did not drain in time' || lab_fail "n1 logged no abort"
for i in 1 2; do
    [ "$(size_on "$i")" -eq $((128 * MiB)) ] || lab_fail "n$i: size $(size_on "$i") after the abort"
    [ "$(gen_on "$i")" = "$gen1" ] || lab_fail "n$i: generation $(gen_on "$i") after the abort, was $gen1"
done
before=$(qd1_writes qd1b)
wait_until 30 qd1_past qd1b $((before + 200)) ||
    lab_fail "the QD1 writer through n2 did not go on after the abort"
lab thaw 3
wait_until 60 all_current || lab_fail "n3 never came back current: $(states 1) / $(states 3)"
[ "$(size_on 3)" -eq $((128 * MiB)) ] || lab_fail "n3: size $(size_on 3) after the abort"
[ "$(gen_on 3)" = "$gen1" ] || lab_fail "n3: generation $(gen_on 3) after the abort, was $gen1"
qd1_stop qd1b
read -r p99 max n < <(latency qd1b 0 0)
log "2. QD1 writes through n2 across the aborted resize: p99 ${p99} us, max ${max} us over $n writes"

log "3. the refusals: a shrink with a snapshot, a shrink while connected"
expect_exit 0 "$LAB" vsan 1 snapshot create m s1
expect_exit 7 "$LAB" vsan 2 volume resize m 64M --force
expect_out 'it has snapshots'
expect_exit 0 "$LAB" vsan 1 snapshot delete m s1
qd1_start 1 qd1c
wait_until 20 qd1_past qd1c 10 || lab_fail "the QD1 writer through n1 does not write"
expect_exit 6 "$LAB" vsan 1 volume resize m 64M --force
expect_out 'in use by NBD connections'
qd1_stop qd1c
for i in 1 2 3; do
    [ "$(size_on "$i")" -eq $((128 * MiB)) ] || lab_fail "n$i: size $(size_on "$i") after the refusals"
done
log "PASS"
