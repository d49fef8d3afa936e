#!/usr/bin/env bash
# t-lab-mirror: the mirror engine on a 3-node lab, with nodes killed and
# disks failed under real clients.
#
#  1. fio (nbd engine, crc32c verify) writes through node 1 while node 3's
#     vsand is killed and restarted: fio sees no error and no verify
#     failure; node 3 resyncs, copying about what was dirtied (fio writes
#     the first 32 MiB of a 256 MiB volume), not the volume; afterwards the
#     three data files are byte-identical.
#  2. Overlapping writes from two nodes, two connections each, to the same
#     unaligned ranges at once: the replicas end byte-identical and
#     `vsan volume verify` finds no difference.
#  3. Node 2's copy fails (`vsan replica fail`): a client on node 2 goes on
#     reading and writing (through its peers); `vsan replica replace`
#     rebuilds it; identical again.
#  4. A byte changed behind vsand's back on node 3 is found by verify, in
#     the right region.
#  5. Node 3 restarted with a wrong secret is refused by its peers (they
#     count and log it) and stays outdated; with the right one it comes
#     back current.
#  6. Node 3's vsand frozen (`lab freeze`, SIGSTOP: a hung process whose
#     corosync runs on): `lab status` says so; a write through node 1 to a
#     region node 1 has just taken succeeds once node 3 is outdated (the mirror
#     timeout, 4 s); thawed, node 3 resyncs and the copies are identical.
# timeout: 300
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

MiB=$((1024 * 1024))

# vs I EXPR: EXPR over node I's `vsan --json volume show m` (d).
all_current() {
    local i
    for i in 1 2 3; do
        [ "$(states "$i")" = "current current current" ] || return 1
        [ "$(vs "$i" 'd["mirror"]["local"]')" = ok ] || return 1
    done
}

# Bytes node 3's last resync copied (its log says so when it is done).
copied() {
    grep -o 'resync done: [0-9]* bytes' "$VSAN_LAB_DIR/n$1/vsand.log" | tail -n 1 | awk '{print $3}'
}

lab_up 3
lab vsan 1 volume create m 256M
wait_until 20 all_current || lab_fail "the volume never became current on all nodes: $(states 1)"
RS=$(st 1 'c["region_size"]')

log "1. fio with verify through n1; n3 killed and restarted meanwhile"
bg_start fio fio --name=m --ioengine=nbd --uri="$("$LAB" addr 1)/m" --rw=randwrite --bs=4k \
    --iodepth=8 --size=32M --loops=6 --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0
FIO=$BG_PID
# sent_past N: n1 has sent more than N mirror requests (fio's writes, copied).
sent_past() { [ "$(st 1 'd["mirror"]["requests_sent"]')" -gt "$1" ]; }
sent0=$(st 1 'd["mirror"]["requests_sent"]')
wait_until 20 sent_past $((sent0 + 1000)) || lab_fail "fio's writes never reached the peers"
lab kill 3
wait_until 10 states_are 1 "current current outdated" ||
    lab_fail "n1 did not mark n3 outdated: $(states 1)"
# n3 misses writes while it is away, so that it has something to resync.
sent0=$(st 1 'd["mirror"]["requests_sent"]')
wait_until 20 sent_past $((sent0 + 1000)) || lab_fail "fio stopped writing while n3 was away"
lab start 3
wait_until 120 proc_gone "$FIO" || lab_fail "fio is stuck"
wait "$FIO" || lab_fail "fio failed: $(tail -n 20 "$T/fio.out")"
grep -q "verify" "$T/fio.out" && grep -qi "bad\|mismatch" "$T/fio.out" &&
    lab_fail "fio reported verify errors: $(grep -i verify "$T/fio.out")"
wait_until 60 all_current || lab_fail "n3 never came back current: $(states 1) / $(states 3)"
bytes=$(copied 3)
[ -n "$bytes" ] || lab_fail "n3 logged no finished resync"
[ "$bytes" -gt 0 ] && [ "$bytes" -le $((32 * MiB + 2 * RS)) ] ||
    lab_fail "n3 copied $bytes bytes; fio dirtied at most 32 MiB of the 256 MiB volume"
log "1. n3 resynced $((bytes / MiB)) MiB of a 256 MiB volume (fio wrote the first 32 MiB)"
identical "1"

log "2. overlapping writes through n1 and n2, two connections each"
WRITER_PY='
import random, sys, time
from nbdtest import *
uri, seed = sys.argv[1], int(sys.argv[2])
hs = [connect_nbd(uri) for _ in range(2)]
rnd = random.Random(seed)
end = time.monotonic() + 3
n = 0
while time.monotonic() < end:
    off = rnd.randrange(0, 1024 * 1024 - 70000, 512)
    hs[n % 2].aio_pwrite(pattern(seed * 100000 + n, rnd.choice((512, 4096, 65536))), off)
    n += 1
    if n % 16 == 0:
        for h in hs:
            while h.aio_in_flight() > 0:
                h.poll(-1)
for h in hs:
    while h.aio_in_flight() > 0:
        h.poll(-1)
    h.flush()
print("%d writes" % n)'
pids=()
for i in 1 2; do
    bg_start "overlap$i" env PYTHONPATH="$VT_DIR" "$PY" -c "$WRITER_PY" "$("$LAB" addr "$i")/m" "$i"
    pids+=("$BG_PID")
done
for i in 1 2; do
    wait_until 60 proc_gone "${pids[i - 1]}" || lab_fail "overlapping writer on n$i is stuck"
    wait "${pids[i - 1]}" || lab_fail "writer on n$i failed: $(cat "$T/overlap$i.out")"
    log "2. n$i: $(cat "$T/overlap$i.out")"
done
identical "2"
[ "$(verify_differing 1)" = "0 " ] || lab_fail "verify found differences: $(verify_differing 1)"
log "2. vsan volume verify: 0 regions differ"

log "3. n2's copy fails; a client on n2 goes on; the copy is replaced"
lab vsan 2 replica fail m
wait_until 10 states_are 1 "current outdated current" ||
    lab_fail "n2 not outdated after replica fail: $(states 1)"
nbdpy "$("$LAB" addr 2)/m" <<'EOF' || lab_fail "I/O through n2 failed with its copy failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
for k in range(64):
    h.pwrite(pattern(7000 + k, 65536), (64 + k) * 65536)
for k in range(64):
    check(h.pread(65536, (64 + k) * 65536) == pattern(7000 + k, 65536), "block %d" % k)
h.flush()
EOF
lab vsan 2 replica replace m
wait_until 60 all_current || lab_fail "n2's copy was not rebuilt: $(states 1), n2 local $(vs 2 'd["mirror"]["local"]')"
identical "3"

log "4. a byte changed on n3's disk is found by verify"
uuid=$(vs 1 'd["uuid"]')
printf 'X' | dd of="$VSAN_LAB_DIR/n3/data/volumes/$uuid.data" bs=1 seek=$((5 * RS + 123)) conv=notrunc status=none
out=$(verify_differing 1)
[ "$out" = "1 5" ] || lab_fail "verify should list region 5 only, said: $out"
log "4. verify: $out"
lab vsan 3 replica replace m
wait_until 60 all_current || lab_fail "n3 not rebuilt"
identical "4"

log "5. n3 with a wrong secret is refused"
lab secret 3 wrong
lab kill 3
lab start 3
refused_some() { [ "$(st 1 'd["mirror"]["refused"]')" -ge 1 ]; }
wait_until 20 refused_some ||
    lab_fail "n1 refused nothing: $(st 1 'd["mirror"]')"
grep -q "failed authentication" "$VSAN_LAB_DIR/n3/vsand.log" ||
    lab_fail "n3 did not log that its peers failed authentication"
grep -q "refused" "$VSAN_LAB_DIR/n1/vsand.log" || lab_fail "n1 did not log the refusal"
nbdpy "$("$LAB" addr 1)/m" <<'EOF' || lab_fail "writes through n1 failed while n3 is refused"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(99, 4096), 0)
h.flush()
EOF
# Each refusal is n3 trying again with the wrong secret, a chance to
# resync that must fail: three more after the write (n3 retries at least
# every second), and n3 is still outdated. Had one got through, n1's
# refusals would stop and this wait fail, or n3 be syncing or current.
refused0=$(st 1 'd["mirror"]["refused"]')
refused_again() { [ "$(st 1 'd["mirror"]["refused"]')" -ge $((refused0 + 3)) ]; }
wait_until 20 refused_again || lab_fail "n3 stopped trying to reconnect: $(st 1 'd["mirror"]')"
[ "$(states 1)" = "current current outdated" ] ||
    lab_fail "n3 with a wrong secret should stay outdated, n1 sees: $(states 1)"
log "5. refused and outdated; with the shared secret again:"
lab secret 3 shared
lab kill 3
lab start 3
wait_until 60 all_current || lab_fail "n3 did not come back with the right secret"
identical "5"

log "6. n3's vsand frozen: n1 writes on once n3 is outdated; thawed, n3 resyncs"
# write_n1 SEED: 4 KiB of pattern SEED at offset 0 through n1.
write_n1() {
    nbdpy "$("$LAB" addr 1)/m" "$1" <<'EOF'
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(int(sys.argv[2]), 4096), 0)
h.flush()
EOF
}
# n1 takes region 0 first: a write to a region the frozen n3 owned would
# wait until n3 answers (README, "Known limits").
write_n1 97 || lab_fail "a write through n1 failed"
lab freeze 3
"$LAB" status | grep -q "^n3 .* frozen" || lab_fail "lab status does not show n3 frozen"
T0_MS=$(now_ms)
write_n1 98 || lab_fail "a write through n1 failed while n3 was frozen"
log "6. the write through n1 took $(($(now_ms) - T0_MS)) ms"
[ "$(states 1)" = "current current outdated" ] || lab_fail "n1 sees $(states 1) with n3 frozen"
lab thaw 3
wait_until 60 all_current || lab_fail "the thawed n3 did not come back current: $(states 1)"
identical "6"
log "ok"
