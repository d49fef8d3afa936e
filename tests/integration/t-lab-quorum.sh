#!/usr/bin/env bash
# t-lab-quorum: no split brain. In a 3-node lab, node 3 is cut off (every
# packet but loopback's dropped): it loses quorum, says so in `vsan
# status`, and fails writes with EIO (on_no_quorum = error), promptly,
# while nodes 1 and 2 keep quorum and keep serving writes. Healed, node 3
# is quorate again and takes writes. Clients of node 3 run inside its
# namespace, the only place that still reaches it while it is cut.
# timeout: 120
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

# Writes 64 KiB at offset SEED MiB (argv 2) of URI (argv 1), reads it back.
WRITE_PY='
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
seed = int(sys.argv[2])
h.pwrite(pattern(seed, 65536), seed << 20)
h.flush()
check(h.pread(65536, seed << 20) == pattern(seed, 65536), "read back differs")'

# write_ok I SEED [inside]: WRITE_PY through node I, from the root
# namespace or, with "inside", from node I's.
write_ok() {
    local uri
    uri="$("$LAB" addr "$1")/q"
    if [ "${3:-}" = inside ]; then
        lab_nbdpy "$1" "$uri" "$2" <<<"$WRITE_PY"
    else
        PYTHONPATH="$VT_DIR" timeout 30 "$PY" - "$uri" "$2" <<<"$WRITE_PY"
    fi
}

# A write through node 3, from inside its namespace, fails with EIO.
write_fails_eio() {
    lab_nbdpy 3 "$("$LAB" addr 3)/q" <<'PY'
import errno, sys, time
from nbdtest import *
h = connect_nbd(sys.argv[1])
start = time.monotonic()
expect_errno(errno.EIO, "write without quorum", h.pwrite, pattern(3, 65536), 3 << 20)
print("write refused with EIO in %.0f ms" % ((time.monotonic() - start) * 1000))
PY
}

lab_up 3
expect_exit 0 "$LAB" vsan 1 volume create q 64M
for i in 1 2 3; do
    wait_until 10 write_ok "$i" "$i" || lab_fail "write through n$i failed before the cut"
done

log "cut n3: it loses quorum, n1 and n2 keep it"
T0_MS=$(now_ms)
lab cut 3
wait_until 15 not_quorate 3 || lab_fail "n3 still quorate 15 s after the cut"
log "n3 reports no quorum $(($(now_ms) - T0_MS)) ms after the cut"
for i in 1 2; do
    wait_until 15 full_view "$i" "1 2" || lab_fail "n$i: members $(members "$i"), expected quorate 1 2"
done
log "n1 and n2 see n3 gone $(($(now_ms) - T0_MS)) ms after the cut"
[ "$(members 3)" = 3 ] || lab_fail "cut-off n3 still sees members $(members 3)"

log "writes through n3 fail with EIO; through n1 and n2 they succeed"
OUT=$(write_fails_eio 2>&1) || lab_fail "n3 without quorum: $OUT"
log "n3: $OUT"
write_ok 1 11 || lab_fail "write through n1 failed while n3 was cut"
write_ok 2 12 || lab_fail "write through n2 failed while n3 was cut"

log "heal n3: quorate again, and writes through it succeed"
T0_MS=$(now_ms)
lab heal 3
for i in 1 2 3; do
    wait_until 30 full_view "$i" "1 2 3" || lab_fail "n$i: members $(members "$i") after the heal"
done
log "all three quorate $(($(now_ms) - T0_MS)) ms after the heal"
wait_until 20 write_ok 3 13 inside || lab_fail "write through n3 still fails after the heal"
write_ok 3 14 || lab_fail "write through n3 from outside failed after the heal"
log "ok"
