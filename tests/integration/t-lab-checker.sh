#!/usr/bin/env bash
# t-lab-checker: no acknowledged write is lost and no split brain, under
# random faults, on a 3-node lab.
#
#  1. The checker (build/checker) writes self-describing 4 KiB blocks,
#     six writers failing over between five ways in: the three nodes' NBD
#     addresses, node 1's service address (which a survivor takes over
#     while node 1 is away) and the volume's file in a vsan-fuse mount
#     (which fails over by itself), while tests/checker/nemesis.sh kills, powers off and
#     cuts nodes and brings them back, one at a time, for CHECKER_SECONDS
#     (45 here; `make soak` sets SOAK_SECONDS). Meanwhile five readers, one
#     per way in, read 4 KiB to 256 KiB at random places: every block read
#     must hold a write from the last one acknowledged before the read was
#     sent to the last one sent before it returned (never zeroes once one
#     was acknowledged; tests/checker/judge.h). And every SNAP_EVERY_MS a
#     snapshot of the volume is cut through the next node (a cut that
#     aborts, exit 10, because a node is away is fine; one refused for want
#     of quorum is tried through another node), read whole through the
#     nodes as c@SNAP and judged: each block holds a write from the last
#     acknowledged before the create was sent to the last sent before it
#     returned, and no write without every write acknowledged before it was
#     sent (a point in time; tests/checker/snapshotter.h); ten are kept,
#     older ones deleted. Then, with every replica current and the writers
#     stopped, every block of the three data files must hold a write at
#     least as new as the last one acknowledged, and the files must be
#     byte-identical region by region: "checker: cycles=C acknowledged=A
#     lost=0 divergent=0 reads=R stale=0 snapshots=N snap_checked=N
#     snap_bad=0".
#     With LAB_NODES=5 CHECKER_REPLICAS=2 (`make soak5`) the lab has five
#     nodes and a token of 3000 ms, c two copies placed among them, the
#     checker writes through all five nodes, and the copies judged are
#     those two.
#  2. (three nodes only) Ten times, one node (each in turn) is cut off: a write through it,
#     from inside its namespace, must fail within WRITE_BOUND seconds and
#     never be acknowledged, while a write through the majority succeeds;
#     healed and resynced, the three copies are byte-identical and hold
#     the majority's write.
# timeout: 300
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

CHECKER="$BUILD/checker"
CHECKER_SECONDS=${CHECKER_SECONDS:-45}
NODES=${LAB_NODES:-3}
REPLICAS=${CHECKER_REPLICAS:-$NODES}
SNAP_EVERY_MS=${SNAP_EVERY_MS:-3000}
SEED=${CHECKER_SEED:-$RANDOM}
WRITE_BOUND=15
[ -x "$CHECKER" ] || die "no $CHECKER: make $CHECKER"

# vs I VOL EXPR: EXPR over node I's `vsan --json volume show VOL` (d).
vs() {
    "$LAB" vsan "$1" --json volume show "$2" 2>/dev/null | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
print(eval(sys.argv[1]))' "$3"
}

states() {
    vs "$1" "$2" '" ".join(r["state"] for r in d["replicas"])'
}

# Every node sees every replica of VOL current (a set of REPLICAS copies).
all_current() {
    local i want
    want=$(printf 'current %.0s' $(seq "$REPLICAS"))
    for ((i = 1; i <= NODES; i++)); do
        [ "$(states "$i" "$1") " = "$want" ] || return 1
    done
}

# data I UUID: node I's copy of the volume UUID.
data() {
    echo "$VSAN_LAB_DIR/n$1/data/volumes/$2.data"
}

identical() {
    cmp -s "$(data 1 "$1")" "$(data 2 "$1")" && cmp -s "$(data 1 "$1")" "$(data 3 "$1")"
}

# Five nodes (ten daemons, the checker and its nemesis) on this 2-core
# machine re-formed corosync's membership for no failure with the default
# token (1000 ms) in 10-minute runs: their lab gets 3000, and the mirror
# timeout that goes with it (deploy/gen-config --token). And five
# corosyncs at realtime priority on two cores starved each other (and
# every vsand) after a partition healed, so that the membership re-formed
# every 13 s for minutes: they run at normal priority (VSAN_LAB_RT=no).
if [ "$NODES" -gt 3 ]; then
    export VSAN_LAB_TOKEN=${VSAN_LAB_TOKEN:-3000} VSAN_LAB_RT=${VSAN_LAB_RT:-no}
fi
lab_up "$NODES"
# Kept with VT_KEEP=1 when the test fails (the lab dir goes with the lab):
# each node's vsand and corosync log.
on_exit "for d in '$VSAN_LAB_DIR'/n*; do cp \"\$d/vsand.log\" '$T'/\$(basename \"\$d\").vsand.log; cp -L \"\$d/corosync.log\" '$T'/\$(basename \"\$d\").corosync.log; done 2>/dev/null"
wait_until 30 announced "$NODES" || lab_fail "n1 never heard every node's capacity"
lab vsan 1 volume create c 64M --replicas "$REPLICAS"
lab vsan 1 volume create q 64M --replicas "$REPLICAS"
wait_until 30 all_current c || lab_fail "c never became current on all nodes: $(states 1 c)"
wait_until 30 all_current q || lab_fail "q never became current on all nodes: $(states 1 q)"
RS=$(st 1 'c["region_size"]')
C_UUID=$(vs 1 c 'd["uuid"]')
Q_UUID=$(vs 1 q 'd["uuid"]')

nodes=""
targets=""
for ((i = 1; i <= NODES; i++)); do
    a=$("$LAB" addr "$i")
    nodes+="${nodes:+,}${a#nbd://}"
    targets+="$a/c,"
done
mkdir -p "$T/fuse"
bg_start vsan-fuse "$BUILD/vsan-fuse" "$T/fuse" -f --nodes "$nodes" --volume c
on_exit "fusermount3 -u -z '$T/fuse'"
wait_until 20 test -f "$T/fuse/c" || lab_fail "vsan-fuse did not mount: $(cat "$T/vsan-fuse.out")"

log "1. checker (writers and readers) for $CHECKER_SECONDS s through the $NODES nodes, n1's service address and vsan-fuse, c with $REPLICAS copies, under the nemesis (seed $SEED)"
targets+="$("$LAB" addr 1 --service)/c,$T/fuse/c"
# The snapshotter's way to the cluster: `vsan snapshot OP c SNAP` through
# node N % NODES + 1, N counting its commands.
cat >"$T/snapctl" <<EOF
#!/usr/bin/env bash
exec "$LAB" vsan \$((\$3 % $NODES + 1)) snapshot "\$1" c "\$2"
EOF
chmod +x "$T/snapctl"
bg_start checker "$CHECKER" --targets "$targets" --volume-size 64M --writers 6 \
    --seconds $((CHECKER_SECONDS + 2)) --log "$T/journal" --seed "$SEED" \
    --snapshot-cmd "$T/snapctl" --snapshot-every-ms "$SNAP_EVERY_MS" -v
WRITERS=$BG_PID
"$VT_REPO/tests/checker/nemesis.sh" "$CHECKER_SECONDS" c "$SEED" >"$T/nemesis.out" 2>&1 || {
    cat "$T/nemesis.out" >&2
    lab_fail "the nemesis failed (above)"
}
CYCLES=$(sed -n 's/.*nemesis: cycles=//p' "$T/nemesis.out")
FAULTS=$(grep -o 'cycle [0-9]*: [a-z-]* n[0-9]' "$T/nemesis.out" | grep -v repair |
    sed 's/cycle [0-9]*: //' | tr '\n' ',') || true
log "1. nemesis: $CYCLES cycles: ${FAULTS%,}"
wait_until 120 proc_gone "$WRITERS" || lab_fail "the checker's writers are stuck"
RUN_STATUS=0
wait "$WRITERS" || RUN_STATUS=$?
log "1. $(grep '^checker: run:' "$T/checker.out")"
wait_until 60 all_current c || lab_fail "c not current everywhere after the run: $(states 1 c)"
# The copies of c: the data files of the nodes that hold one.
files=""
for ((i = 1; i <= NODES; i++)); do
    [ ! -f "$(data "$i" "$C_UUID")" ] || files+="${files:+,}$(data "$i" "$C_UUID")"
done
[ "$(tr ',' '\n' <<<"$files" | wc -l)" = "$REPLICAS" ] || lab_fail "c's copies: $files"
VERDICT=0
"$CHECKER" --verify --log "$T/journal" --region-size "$RS" --cycles "$CYCLES" \
    --files "$files" >"$T/verify.out" 2>&1 || VERDICT=$?
cat "$T/verify.out"
if [ "$VERDICT" -ne 0 ] || [ "$RUN_STATUS" -ne 0 ]; then
    cat "$T/nemesis.out" >&2
    grep -v ': info: ' "$T/checker.out" >&2 || true
    cat "$T/journal.snaps" >&2 || true
    [ "$VERDICT" -eq 0 ] ||
        lab_fail "the checker found lost or divergent data, stale reads or bad snapshots (above)"
    lab_fail "some writes were never acknowledged by any node (above)"
fi
SNAPS=$(sed -n 's/.* snapshots=\([0-9]*\) .*/\1/p' "$T/verify.out")
[ "${SNAPS:-0}" -ge 3 ] || lab_fail "only ${SNAPS:-0} snapshots cut in the run: $(cat "$T/journal.snaps")"

# cut_write I OFF SEED: a write through node I, from its namespace;
# exits 3 if refused, 0 if acknowledged, 4 if unanswered after
# WRITE_BOUND seconds.
cut_write() {
    trap - ERR # runs in the background: its status is the verdict, not a failure
    lab_nbdpy "$1" "$("$LAB" addr "$1")/q" "$2" "$3" "$WRITE_BOUND" <<'PY'
import sys, time
import nbd
from nbdtest import *
uri, off, seed, bound = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
h = connect_nbd(uri)
start = time.monotonic()
try:
    cookie = h.aio_pwrite(pattern(seed, 4096), off)
    while not h.aio_command_completed(cookie):
        if time.monotonic() - start > bound:
            print("no answer within %.0f s" % bound)
            sys.exit(4)
        h.poll(100)
except nbd.Error as e:
    print("refused (%s) after %.0f ms" % (e.string, (time.monotonic() - start) * 1000))
    sys.exit(3)
print("acknowledged after %.0f ms" % ((time.monotonic() - start) * 1000))
PY
}

# majority_write I OFF SEED: a write through node I succeeds.
majority_write() {
    PYTHONPATH="$VT_DIR" timeout 30 "$PY" - "$("$LAB" addr "$1")/q" "$2" "$3" <<'PY'
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(int(sys.argv[3]), 4096), int(sys.argv[2]))
PY
}

# holds_everywhere OFF SEED: every copy of q has pattern(SEED) at OFF.
holds_everywhere() {
    PYTHONPATH="$VT_DIR" "$PY" - "$2" "$1" "$(data 1 "$Q_UUID")" "$(data 2 "$Q_UUID")" \
        "$(data 3 "$Q_UUID")" <<'PY'
import sys
from nbdtest import pattern
want, off = pattern(int(sys.argv[1]), 4096), int(sys.argv[2])
for path in sys.argv[3:]:
    with open(path, "rb") as f:
        f.seek(off)
        if f.read(4096) != want:
            sys.exit("%s lacks the write at %d" % (path, off))
PY
}

if [ "$NODES" != 3 ]; then
    log "ok: $(cat "$T/verify.out")"
    exit 0
fi

log "2. ten times: one node cut off, writes through it fail, no split brain"
for k in $(seq 10); do
    cut=$(((k - 1) % 3 + 1))
    other=$((cut % 3 + 1))
    minority_off=$(((8 + (k - 1) % 8) * RS))
    majority_off=$(((k - 1) % 8 * RS + 4096))
    lab cut "$cut"
    t0=$(now_ms)
    bg_start "cut$k" cut_write "$cut" "$minority_off" $((1000 + k))
    minority=$BG_PID
    majority_write "$other" "$majority_off" $((2000 + k)) ||
        lab_fail "round $k: a write through n$other (majority) failed while n$cut was cut"
    t_major=$(($(now_ms) - t0))
    wait_until $((WRITE_BOUND + 20)) proc_gone "$minority" || lab_fail "round $k: n$cut's client hangs"
    status=0
    wait "$minority" || status=$?
    case $status in
    3) ;;
    0) lab_fail "round $k: SPLIT BRAIN: cut-off n$cut $(cat "$T/cut$k.out")" ;;
    4) lab_fail "round $k: n$cut neither failed nor acknowledged the write in $WRITE_BOUND s" ;;
    *) lab_fail "round $k: the client of n$cut failed: $(tail -n 5 "$T/cut$k.out")" ;;
    esac
    lab heal "$cut"
    wait_until 60 all_current q || lab_fail "round $k: q not current after healing n$cut: $(states 1 q)"
    identical "$Q_UUID" || lab_fail "round $k: the copies of q differ after healing n$cut"
    holds_everywhere "$majority_off" $((2000 + k)) ||
        lab_fail "round $k: the majority's acknowledged write is missing"
    log "2. round $k: n$cut cut: its write $(tail -n 1 "$T/cut$k.out");" \
        "n$other's write acknowledged in $t_major ms; healed, identical"
done
log "ok: $(cat "$T/verify.out")"
