#!/usr/bin/env bash
# t-lab-snap: snapshots across a 3-node lab are points in time, served by
# every node, and part of every replica (docs/ARCHITECTURE.md, invariant 8).
#
#  1. The causal rule under writers on three nodes: one client writes
#     block k of volume a through n1, once acknowledged block k of a
#     through n3, then block k of volume b through n2, for k = 0, 1, ...;
#     meanwhile snapshots of a, and of a and b together, are cut through
#     n2 every few hundred ms. In every snapshot, n3's block k implies
#     n1's block k (and in a pair, b's block k implies n3's), n1's blocks
#     are a prefix, and the snapshot reads the same through all 3 nodes.
#  2. The dirty bitmap of a snapshot against an older one lists exactly
#     the 64 KiB chunks written between their cuts (nbdinfo --map, and
#     qemu-img map with x-dirty-bitmap, which says "data": false for
#     dirty).
#  3. A cut that a node cannot drain (its vsand frozen) aborts everywhere
#     after its deadline (exit 10) and writes go on; a node killed during
#     a cut aborts it at once.
#  4. A snapshot cut while n3 is down (and writes before and after) is cut
#     on n3 when it returns, and one deleted meanwhile is deleted there; its resync, with writes going on, brings the
#     snapshot's chunks too: the snapshot reads the same through n3 (from
#     its own copy, now current) as through n1; the same after `replica
#     replace` on n3.
#  5. Clone and rollback across nodes: a@p1 cloned through n2 reads as
#     a@p1; a rollback through n1 is refused (exit 6) while a client has a
#     open on n3, and once it closes, a reads as a@p1 through every node
#     while the newer snapshots keep their data.
#  6. A node restarted during a rollback learns the volume's fence in its
#     sync round: it refuses clients of the volume (as n1 does) until the
#     rollback ends, then lets them in. The rollback of 768 MiB of changed
#     chunks lasts several seconds, longer than n3's restart.
# timeout: 420
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

LAB_VOL=a
BLOCKS=1000

snap() { # snap I VOLS NAME: exit code of `vsan snapshot create` through node I
    "$LAB" vsan "$1" snapshot create "$2" "$3" >>"$T/snap.out" 2>&1
}

# snap_md5 I EXPORT: the md5 of EXPORT (a@NAME) read through node I.
snap_md5() {
    nbdpy "$(addr "$1")/$2" <<'PY' || echo "node $1: read failed"
import hashlib, sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
size, m = h.get_size(), hashlib.md5()
for off in range(0, size, 4 << 20):
    m.update(h.pread(min(4 << 20, size - off), off))
print(m.hexdigest())
PY
}

# snap_same EXPORT [NODES]: EXPORT reads the same through NODES ("1 2 3").
snap_same() {
    local i
    [ "$( (for i in ${2:-1 2 3}; do snap_md5 "$i" "$1"; done) | sort -u | wc -l)" -eq 1 ]
}

lab_up 3
lab vsan 1 volume create a 64M
lab vsan 1 volume create b 16M
wait_until 20 all_current || lab_fail "a never became current everywhere: $(states 1)"

log "1. the causal rule: writers through n1, n3, n2; snapshots through n2"
nbdpy "$(addr 1)/a" "$(addr 3)/a" "$(addr 2)/b" "$BLOCKS" >"$T/writer.out" 2>&1 <<'PY' &
import struct, sys
from nbdtest import *
h1, h3, h2 = (connect_nbd(u) for u in sys.argv[1:4])
for k in range(int(sys.argv[4])):
    rec = struct.pack("<Q", k + 1) * 512
    h1.pwrite(rec, k * 4096)              # a, first 4 MiB
    h3.pwrite(rec, (8 << 20) + k * 4096)  # a, from 8 MiB: after n1's k was acknowledged
    h2.pwrite(rec, k * 4096)              # b: after n3's k was acknowledged
print("done")
PY
writer=$!
on_exit "kill $writer 2>/dev/null"
n=0
while proc_alive "$writer"; do
    n=$((n + 1))
    if [ $((n % 2)) -eq 0 ]; then vols=a,b; else vols=a; fi
    snap 2 "$vols" "c$n" || lab_fail "snapshot c$n of $vols failed: $(tail -n 3 "$T/snap.out")"
done
wait "$writer" || lab_fail "the writer failed: $(cat "$T/writer.out")"
log "$n snapshots cut while the writers ran"
[ "$n" -ge 4 ] || lab_fail "only $n snapshots during the writes: the test saw too little"
nbdpy "$(addr 1)" "$(addr 2)" "$(addr 3)" "$n" "$BLOCKS" <<'PY' || lab_fail "a snapshot breaks the causal rule"
import struct, sys
from nbdtest import *
nodes, n, blocks = sys.argv[1:4], int(sys.argv[4]), int(sys.argv[5])

def region(uri, base):
    return connect_nbd(uri).pread(blocks * 4096, base)

def marks(data):
    return [struct.unpack_from("<Q", data, k * 4096)[0] == k + 1 for k in range(blocks)]

seen = 0
for i in range(1, n + 1):
    # Every node reads the same snapshot, from its own copy or a peer's.
    r1, r3 = ([region(f"{node}/a@c{i}", base) for node in nodes] for base in (0, 8 << 20))
    check(r1[0] == r1[1] == r1[2] and r3[0] == r3[1] == r3[2], f"c{i}: the nodes read it differently")
    a1, a3 = marks(r1[0]), marks(r3[0])
    k1 = a1.index(False) if False in a1 else blocks
    check(all(not x for x in a1[k1:]), f"c{i}: n1's blocks are not a prefix")
    check(all(a1[k] for k in range(blocks) if a3[k]), f"c{i}: holds n3's block without n1's")
    if i % 2 == 0:
        b2 = marks(region(f"{nodes[i % 3]}/b@c{i}", 0))
        check(all(a3[k] for k in range(blocks) if b2[k]), f"c{i}: b's block without a's")
    seen += 0 < k1 < blocks
print(f"{seen} snapshots cut mid-stream")
check(seen >= 2, "fewer than 2 snapshots cut in the middle of the writes")
PY

log "2. the dirty bitmap between two snapshots: exactly the chunks written"
snap 1 a u1 || lab_fail "snapshot u1 failed"
nbdpy "$(addr 1)/a" <<'PY' || lab_fail "writes between u1 and u2 failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
for off in (0, 5 << 16, (32 << 20) + 100, (63 << 20) + 65000):  # chunks 0, 5, 512, 1023
    h.pwrite(b"x" * 4096 if off % 4096 == 0 else b"y" * 200, off)
PY
snap 1 a u2 || lab_fail "snapshot u2 failed"
for i in 1 3; do
    got=$(nbdinfo --map=qemu:dirty-bitmap:u1 "$(addr "$i")/a@u2" | awk '$3 == 1 {print $1 "+" $2}' | tr '\n' ' ')
    want="0+65536 327680+65536 33554432+65536 66060288+65536 "
    [ "$got" = "$want" ] || lab_fail "n$i: dirty since u1 in a@u2: '$got', want '$want'"
done
port=$(addr 2)
port=${port##*:}
qemu-img map --output=json --image-opts \
    "driver=nbd,server.type=inet,server.host=$(host_of 2),server.port=$port,export=a@u2,x-dirty-bitmap=qemu:dirty-bitmap:u1" \
    >"$T/qmap.json" 2>&1 || lab_fail "qemu-img map: $(cat "$T/qmap.json")"
"$PY" - "$T/qmap.json" <<'PY' || lab_fail "qemu-img map of the dirty bitmap: $(cat "$T/qmap.json")"
import json, sys
dirty = [(e["start"], e["length"]) for e in json.load(open(sys.argv[1])) if not e["data"]]
assert dirty == [(0, 65536), (327680, 65536), (33554432, 65536), (66060288, 65536)], dirty
PY

log "3. a cut a frozen node cannot drain aborts; a node killed during one aborts it"
lab freeze 3
start=$(now_ms)
code=0
snap 1 a f1 || code=$?
[ "$code" -eq 10 ] || lab_fail "a cut n3 could not drain exited $code, not 10: $(tail -n 2 "$T/snap.out")"
log "aborted after $(($(now_ms) - start)) ms"
lab thaw 3
nbdpy "$(addr 1)/a" <<'PY' || lab_fail "a write after the aborted cut failed"
import sys
from nbdtest import *
connect_nbd(sys.argv[1]).pwrite(b"z" * 4096, 40 << 20)
PY
lab vsan 1 snapshot list a >"$T/list.out"
! grep -q '^f1 ' "$T/list.out" || lab_fail "the aborted cut left snapshot f1 on n1"
wait_until 60 all_current || lab_fail "n3 not current again after its thaw: $(states 1)"
lab freeze 3
mark=$(log_mark 1)
{ snap 1 a f2 || exit $?; } &
cutter=$!
on_exit "kill $cutter 2>/dev/null"
# n3 dies while the cut is open (held on its drain)
wait_until 10 logged 1 "$mark" '(snapshot "f2"): begun' || lab_fail "the cut f2 never began on n1"
lab kill 3
code=0
wait "$cutter" || code=$?
[ "$code" -eq 10 ] || lab_fail "a cut whose node died exited $code, not 10: $(tail -n 2 "$T/snap.out")"
lab start 3
wait_until 60 all_current || lab_fail "n3 not current after its restart: $(states 1)"

log "4. a snapshot cut while n3 is down reaches n3 with its resync, and its replace"
lab kill 3
wait_until 10 states_are 1 "current current outdated" || lab_fail "n3 not outdated: $(states 1)"
nbdpy "$(addr 1)/a" <<'PY' || lab_fail "writes before p1 failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
for k in range(64):
    h.pwrite(pattern(k, 65536), k * (1 << 20))
PY
snap 1 a p1 || lab_fail "snapshot p1 with n3 down failed"
lab vsan 2 snapshot delete a u1
snap_same a@p1 "1 2" || lab_fail "a@p1 differs through n1 and n2"
want=$(snap_md5 1 a@p1)
nbdpy "$(addr 2)/a" <<'PY' || lab_fail "writes after p1 failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
for k in range(64):
    h.pwrite(pattern(1000 + k, 65536), k * (1 << 20) + 32768)
PY
lab start 3
nbdpy "$(addr 1)/a" <<'PY' &
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
for k in range(256):
    h.pwrite(pattern(2000 + k, 4096), (48 << 20) + k * 4096)
PY
bg=$!
on_exit "kill $bg 2>/dev/null"
wait_until 120 all_current || lab_fail "n3 never resynced: $(states 1) / $(states 3)"
wait "$bg" || lab_fail "writes during n3's resync failed"
[ "$(snap_md5 3 a@p1)" = "$want" ] || lab_fail "a@p1 reads differently through n3 after its resync"
"$LAB" vsan 3 snapshot list a >"$T/list3.out" 2>&1
grep -q '^p1 ' "$T/list3.out" || lab_fail "n3 lacks p1 after its return: $(cat "$T/list3.out")"
! grep -q '^u1 ' "$T/list3.out" || lab_fail "n3 kept u1, deleted while it was down"
identical "4, after the resync"
lab vsan 3 replica replace a
wait_until 120 all_current || lab_fail "n3 never came back after replace: $(states 1)"
[ "$(snap_md5 3 a@p1)" = "$want" ] || lab_fail "a@p1 reads differently through n3 after its replace"
for i in 1 2 3 4; do
    snap_same "a@c$i" || lab_fail "a@c$i differs through the nodes after the replace"
done
log "5. clone and rollback across nodes"
lab vsan 2 volume clone a@p1 cl
[ "$(snap_md5 3 cl)" = "$want" ] || lab_fail "the clone of a@p1 reads differently through n3"
u2=$(snap_md5 2 a@u2)
nbdpy "$(addr 3)/a" "$T/close" >"$T/holder.out" 2>&1 <<'PY' &
import os, sys, time
from nbdtest import *
h = connect_nbd(sys.argv[1])
print("open", flush=True)
while not os.path.exists(sys.argv[2]):  # open until the test is done with it
    time.sleep(0.05)
PY
holder=$!
on_exit "kill $holder 2>/dev/null"
wait_until 10 grep -q open "$T/holder.out" || lab_fail "the client on n3 never opened a"
code=0
"$LAB" vsan 1 snapshot rollback a p1 >"$T/rb.out" 2>&1 || code=$?
[ "$code" -eq 6 ] || lab_fail "a rollback while n3 has a client exited $code, not 6: $(cat "$T/rb.out")"
touch "$T/close"
wait "$holder" || true
lab vsan 1 snapshot rollback a p1
for i in 1 2 3; do
    [ "$(snap_md5 "$i" a)" = "$want" ] || lab_fail "after the rollback, a differs from a@p1 through n$i"
done
[ "$(snap_md5 1 a@u2)" = "$u2" ] || lab_fail "the rollback changed the newer snapshot u2"
identical "5, after the rollback"

log "6. n3 restarted during a rollback refuses its clients until it ends"
opens() { # opens I VOL: a client can open VOL through node I
    nbdinfo --size "$(addr "$1")/$2" >/dev/null 2>&1
}
lab vsan 1 volume create r 768M
wait_until 60 eval 'LAB_VOL=r all_current' || lab_fail "r never became current everywhere"
lab vsan 1 snapshot create r empty
random_file "$T/r.raw" $((768 << 20))
nbdcopy -- "$T/r.raw" "$(addr 2)/r"
# nbdcopy's connections end after it exits (NBD_CMD_DISC has no reply): a
# rollback sent before every node has seen them go is refused, rightly
# (exit 6).
r_connections() {
    local i
    for i in 1 2 3; do echo -n "n$i:$(LAB_VOL=r vs "$i" 'd["connections"]') "; done
}
wait_until 10 eval '[ "$(r_connections)" = "n1:0 n2:0 n3:0 " ]' ||
    lab_fail "nbdcopy's connections to r stayed open: $(r_connections)"
"$LAB" vsan 1 snapshot rollback r empty --progress >"$T/rb6.out" 2>&1 &
rb=$!
on_exit "kill $rb 2>/dev/null"
start=$SECONDS
wait_until 10 eval '! opens 1 r' ||
    lab_fail "r never fenced for its rollback: $(cat "$T/rb6.out"); connections now: $(r_connections)"
lab stop 3
lab start 3
wait_until 30 full_view 3 "1 2 3" || lab_fail "n3 did not rejoin during the rollback"
wait_until 10 opens 3 a || lab_fail "n3 serves no client after its restart"
! opens 3 r || lab_fail "n3 let a client open r during its rollback (fence not learnt)"
! opens 1 r || lab_fail "the rollback ended before n3's check: make r larger ($(tail -c 200 "$T/rb6.out"))"
checked=$((SECONDS - start))
wait "$rb" || lab_fail "the rollback of r failed: $(tail -c 300 "$T/rb6.out")"
log "n3 checked $checked s into the rollback, which took $((SECONDS - start)) s"
opens 3 r || lab_fail "n3 refuses r after its rollback ended"
log "ok"
