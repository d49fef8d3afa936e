#!/usr/bin/env bash
# t-lab-flood: what a stranger at a node's mirror port can cost is bounded
# (mirror/link.h), on a 2-node lab; the stranger (mirror_flood.py) runs in
# node 1's network namespace and knows the wire format, not the secret.
#
#  1. 1,500 connections to node 2's mirror port, each a well-formed WRITE
#     header announcing 32 MiB and then 512 KiB of it, all held open: node
#     2's vsand grows by less than 50 MiB, and meanwhile writes through node 1
#     reach node 2 (its peer's link works), read back through node 2, and
#     neither node outdates the other.
#  2. A stranger trickling a HELLO a byte a second is cut once the
#     handshake as a whole took the mirror timeout (4 s).
#  3. With 32 silent connections in the handshake, a 33rd is closed at
#     once; the 32 are cut after the timeout.
#  4. Afterwards node 1's vsand restarts and links to node 2 again (a real
#     peer's handshake still passes), and both copies are current.
# timeout: 300
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

MiB=$((1024 * 1024))
FLOOD=1500
GROWTH_MAX=$((50 * MiB))
TIMEOUT_S=4 # the lab's [mirror] timeout, the handshake's deadline

both_current() {
    local i
    for i in 1 2; do
        [ "$(states "$i")" = "current current" ] || return 1
    done
}

rss() {
    awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$(cat "$VSAN_LAB_DIR/n2/lab.vsand")/status"
}

# stranger MODE ARGS...: mirror_flood.py against node 2's mirror port, from
# node 1's namespace.
stranger() {
    "$LAB" exec 1 timeout 120 "$PY" "$VT_DIR/mirror_flood.py" "$1" "$N2" "$MPORT" "${@:2}"
}

# write_and_check SEED STEP: 4 MiB through node 1, read back through node 2.
write_and_check() {
    lab_nbdpy 1 "$("$LAB" addr 1)/m" "$1" <<'EOF' || lab_fail "$2: a write through n1 failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
seed = int(sys.argv[2])
for k in range(4):
    h.pwrite(pattern(seed + k, 1 << 20), k << 20, nbd.CMD_FLAG_FUA)
EOF
    lab_nbdpy 2 "$("$LAB" addr 2)/m" "$1" <<'EOF' || lab_fail "$2: n2 does not read what n1 wrote"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
seed = int(sys.argv[2])
for k in range(4):
    check(h.pread(1 << 20, k << 20) == pattern(seed + k, 1 << 20), "MiB %d differs" % k)
EOF
}

lab_up 2
lab vsan 1 volume create m 64M
wait_until 20 both_current || lab_fail "the volume never became current on both nodes: $(states 1)"
N2=$("$LAB" addr 2 | sed 's,^nbd://,,; s,:[0-9]*$,,')
MPORT=$(awk -F' *= *' '/^\[/ {s = $0} s == "[mirror]" && $1 == "listen" {print $2}' \
    "$VSAN_LAB_DIR/n2/vsan.conf" | sed 's/.*://')
[ -n "$MPORT" ] || lab_fail "no [mirror] listen in n2's vsan.conf"
write_and_check 100 "before the flood"

log "1. $FLOOD strangers at n2's mirror port, each announcing 32 MiB and sending 512 KiB"
before=$(rss)
on_exit "touch '$T/flood.stop'"
bg_start flood stranger flood "$FLOOD" "$T"
FLOOD_PID=$BG_PID
wait_until 120 test -e "$T/flood.ready" ||
    lab_fail "the flood did not finish sending: $(tail -n 5 "$T/flood.out")"
after=$(rss)
log "1. flood: $(cat "$T/flood.ready"); n2's vsand: $((before / MiB)) MiB before, $((after / MiB)) MiB during"
write_and_check 200 "1. during the flood"
[ "$(states 1)" = "current current" ] && [ "$(states 2)" = "current current" ] ||
    lab_fail "1. a node was outdated during the flood: n1 sees $(states 1), n2 $(states 2)"
[ $((after - before)) -lt "$GROWTH_MAX" ] ||
    lab_fail "1. n2's vsand grew by $(((after - before) / MiB)) MiB under the flood (limit $((GROWTH_MAX / MiB)))"
touch "$T/flood.stop"
wait_until 30 proc_gone "$FLOOD_PID" || lab_fail "the flood did not stop"
wait "$FLOOD_PID" || lab_fail "the flood failed: $(tail -n 5 "$T/flood.out")"
refused=$(st 2 'd["mirror"]["refused"]')
[ "$refused" -ge "$FLOOD" ] || lab_fail "1. n2 counts $refused refused connections, not $FLOOD"
grep -q "refused a connection" "$VSAN_LAB_DIR/n2/vsand.log" || lab_fail "1. n2 logged no refusal"
lines=$(grep -c "refused a connection" "$VSAN_LAB_DIR/n2/vsand.log")
[ "$lines" -le 5 ] || lab_fail "1. n2 logged $lines refusals: not rate-limited"

log "2. a stranger trickling a HELLO"
stranger trickle $((TIMEOUT_S + 2)) >"$T/trickle.out" 2>&1 || lab_fail "2. $(cat "$T/trickle.out")"
log "2. $(cat "$T/trickle.out")"

log "3. 32 silent strangers, then one more"
stranger slots 32 $((TIMEOUT_S + 2)) >"$T/slots.out" 2>&1 || lab_fail "3. $(cat "$T/slots.out")"
log "3. $(cat "$T/slots.out")"

log "4. n1 restarted links to n2 again"
# n1 comes back current only by a resync that reads from n2 over its link,
# and the write below outdates n2 unless n1's link to n2 is up. (A count of
# n1's "linked to node 2" log lines was checked here before: it missed the
# new one in 1 run of many under load, while n1 had resynced over it.)
lab kill 1
lab start 1
wait_until 60 both_current || lab_fail "4. n1 never came back current: $(states 1) / $(states 2)"
write_and_check 300 "4. after the restart"
both_current || lab_fail "4. a write through n1 outdated n2: $(states 1)"
log "ok"
