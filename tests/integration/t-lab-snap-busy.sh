#!/usr/bin/env bash
# t-lab-snap-busy: a snapshot a client is reading is not deleted. On a
# 3-node lab, an nbdsh on n2 holds a@s open; `vsan snapshot delete a s`
# through n1 is refused (exit 10, "being read"), on every node a@s is
# still served and reads what it held (the reader itself reads on), and
# the snapshot is still listed everywhere; once the reader closes, the
# same delete through n1 succeeds and a@s is gone on every node.
# timeout: 180
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

LAB_VOL=a

# listed I: node I lists snapshot s of a.
listed() {
    "$LAB" vsan "$1" --json snapshot list a 2>/dev/null | "$PY" -c 'import json, sys
sys.exit(0 if [s["name"] for s in json.load(sys.stdin)["snapshots"]] == ["s"] else 1)'
}

lab_up 3
lab vsan 1 volume create a 32M
wait_until 20 all_current || lab_fail "a never became current everywhere: $(states 1)"
random_file "$T/a.raw" $((32 << 20))
nbdcopy -- "$T/a.raw" "$(addr 1)/a"
lab vsan 1 snapshot create a s
nbdpy "$(addr 1)/a" <<'PY'
import sys
from nbdtest import *
connect_nbd(sys.argv[1]).pwrite(pattern(1, 1 << 20), 0)
PY

log "an nbdsh on n2 holds a@s open"
# It reads, says so, waits for $T/close, reads again, and closes. (nbdsh
# runs the python3 on PATH, which must be the one with libnbd.)
bg_start reader env PATH="/usr/bin:$PATH" nbdsh -u "$(addr 2)/a@s" -c "
import hashlib, os, time
def md5():
    m = hashlib.md5()
    for off in range(0, h.get_size(), 4 << 20):
        m.update(h.pread(4 << 20, off))
    return m.hexdigest()
print('open', md5(), flush=True)
while not os.path.exists('$T/close'):
    time.sleep(0.05)
print('again', md5(), flush=True)
"
READER=$BG_PID
want=$(md5sum <"$T/a.raw" | cut -d' ' -f1)
wait_until 30 grep -q '^open' "$T/reader.out" || lab_fail "the reader did not open a@s: $(cat "$T/reader.out")"
grep -q "^open $want\$" "$T/reader.out" || lab_fail "a@s through n2 read wrong: $(cat "$T/reader.out")"

log "a delete through n1 while it reads: refused"
expect_exit 10 "$LAB" vsan 1 snapshot delete a s
log "refused: $OUT"
expect_out 'snapshot "s" is being read by a client'
for i in 1 2 3; do
    listed "$i" || lab_fail "node $i lists no snapshot s after the refused delete"
    nbdcopy -- "$(addr "$i")/a@s" "$T/s$i.raw"
    cmp "$T/s$i.raw" "$T/a.raw" || lab_fail "a@s through node $i differs after the refused delete"
done
touch "$T/close"
wait_until 30 proc_gone "$READER" || lab_fail "the reader did not finish"
wait "$READER" || lab_fail "the reader failed: $(cat "$T/reader.out")"
grep -q "^again $want\$" "$T/reader.out" || lab_fail "the reader read a@s wrong the second time: $(cat "$T/reader.out")"

log "the reader closed: the delete goes through"
# n2 sees the close at once; a retry covers the NBD disconnect's last steps.
deleted() {
    "$LAB" vsan 1 snapshot delete a s >>"$T/delete.out" 2>&1
}
wait_until 20 deleted || lab_fail "the delete after the reader closed failed: $(tail -n 3 "$T/delete.out")"
for i in 1 2 3; do
    wait_until 10 bash -c "! '$LAB' vsan $i --json snapshot list a | grep -q '\"s\"'" ||
        lab_fail "node $i still lists s"
    if nbdinfo --size "$(addr "$i")/a@s" >/dev/null 2>&1; then
        lab_fail "node $i still serves a@s"
    fi
done
log "ok"
