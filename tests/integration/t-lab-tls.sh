#!/usr/bin/env bash
# t-lab-tls: a 3-node lab with tls = require and deploy/gen-config's
# credentials (VSAN_LAB_TLS=require): the same CA, server certificate and
# PSK file on every node, the certificate naming every node's and every
# service address.
#
#  1. A plain client of n2's service address is refused (TLS required);
#     X.509 and PSK clients are served there. `vsan backup` and `volume
#     clone` on n1 work, through its local socket (no TLS, root only).
#  2. A client that knows only n2's service address and verifies the
#     server's certificate against the cluster CA (reconnect_writer.py,
#     nbds://SVC2/m?tls-certificates=...) writes in a loop; n2's vsand is
#     killed, n3 takes the address, and the client's reconnections to it,
#     over TLS and verified, succeed; the block it wrote last reads back.
#     A PSK client is served by the survivor too.
# timeout: 120
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

# The IPv4 addresses on node I's eth0.
addrs() {
    ip -n "vsan-lab-$1" -4 -o addr show dev eth0 | awk '{sub("/.*", "", $4); print $4}' | sort |
        tr '\n' ' ' | sed 's/ $//'
}

# has I A: node I has service address NET.(100+A).
has() {
    [[ " $(addrs "$1") " == *" $SVC_NET.$((100 + $2)) "* ]]
}

writes() {
    [ -f "$T/events" ] || {
        echo 0
        return
    }
    awk '$2 == "ok" || $2 == "progress" {n = $3} END {print n + 0}' "$T/events"
}

wrote_more() {
    [ "$(writes)" -gt "$1" ]
}

ok_after() {
    awk -v t="$1" '$2 == "ok" && $1 >= t {print $1, $3; exit}' "$T/events"
}

wrote_after() {
    [ -n "$(ok_after "$1")" ]
}

export VSAN_LAB_TLS=require
lab_up 3
SVC_NET=$(ip -n vsan-lab-1 -4 -o addr show dev eth0 | awk '{print $4}' | head -n 1 | cut -d. -f1-3)
SVC2="$SVC_NET.102"
CLIENT="$VSAN_LAB_DIR/tls-client"
PSK="$VSAN_LAB_DIR/keys.psk"
X509_URI="nbds://$SVC2:10809/m?tls-certificates=$CLIENT"
PSK_URI="nbds://client@$SVC2:10809/m?tls-psk-file=$PSK"
lab vsan 1 volume create m 64M
# A TLS client sees only its grants: the PSK user "client", and the X.509
# client (a CA only, no certificate: anonymous).
lab vsan 1 access grant m client
lab vsan 1 access grant m anonymous
wait_until 20 all_current || lab_fail "the volume never became current on all nodes"
wait_until 10 has 2 2 || lab_fail "n2 lacks its service address: $(addrs 2)"

log "1. plain refused, X.509 and PSK served on n2's service address"
OUT=$(LIBNBD_DEBUG=1 nbdinfo "nbd://$SVC2:10809/m" 2>&1) && lab_fail "a plain client was served"
expect_out "TLS is required"
expect_exit 0 nbdinfo "$X509_URI"
expect_out "with TLS"
expect_exit 0 nbdinfo "$PSK_URI"
expect_out "with TLS"
log "   backup and clone on n1, through its local socket ([admin] nbd_socket)"
lab vsan 1 snapshot create m s1
lab vsan 1 backup m@s1 -o "$T/m.rbd"
grep -q "full backup of m@s1" "$T/lab.out" || lab_fail "no backup summary in $T/lab.out"
lab vsan 1 volume clone m@s1 m2
lab vsan 1 volume delete m2

log "2. a TLS client of n2's service address; n2 killed"
bg_start writer "$PY" "$VT_DIR/reconnect_writer.py" "$X509_URI" "$T/events" "$T/stop"
WRITER=$BG_PID
wait_until 20 wrote_more 100 || lab_fail "the writer never wrote: $(cat "$T/writer.out" "$T/events")"
killed=$(now_ms)
lab kill 2
wait_until 10 has 3 2 || lab_fail "n3 never took n2's address: $(addrs 3)"
wait_until 20 wrote_after "$killed" ||
    lab_fail "the TLS client never wrote again: $(cat "$T/events" "$T/writer.out")"
read -r first n <<<"$(ok_after "$killed")"
log "2. first write over TLS through n3 after the kill: $((first - killed)) ms (write $n)"
grep -q ' error ' "$T/events" || lab_fail "the client saw no error: did it ever lose n2?"
wait_until 10 wrote_more $((n + 100)) || lab_fail "writes through n3 stopped: $(cat "$T/events")"
grep -q "TLS (TLS1.3)" "$VSAN_LAB_DIR/n3/vsand.log" || lab_fail "n3 logged no TLS session"
expect_exit 0 nbdinfo "$PSK_URI"
expect_out "with TLS"
touch "$T/stop"
wait_until 10 grep -q stopped "$T/events" || lab_fail "the writer did not stop: $(cat "$T/writer.out")"
grep -q verified "$T/events" || lab_fail "the last block did not read back: $(tail -n 3 "$T/events")"
bg_kill "$WRITER"
log "ok"
