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
#  3. n2 back; vsan-fuse mounts the volume over TLS (X.509, verifying
#     every node's certificate against the cluster CA), a dd loop writes
#     through it with an fsync per block, and the node serving the mount
#     is killed among those writes: none fails, the mount names another
#     node and goes on writing, and what was written reads back from a
#     survivor over TLS.
# timeout: 240
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

log "3. vsan-fuse over TLS, verifying the servers, fails over when its node is killed"
lab start 2
wait_until 60 all_current || lab_fail "n2 came back, but not every replica is current"
nodes=""
for i in 1 2 3; do
    a=$("$LAB" addr "$i")
    nodes+="${nodes:+,}${a#nbd://}"
done
mkdir -p "$T/fuse"
bg_start vsan-fuse "$BUILD/vsan-fuse" "$T/fuse" -f --nodes "$nodes" --volume m \
    --tls-certificates "$CLIENT"
FUSE_PID=$BG_PID
on_exit "fusermount3 -u -z '$T/fuse'"
wait_until 20 test -f "$T/fuse/m" || lab_fail "vsan-fuse did not mount: $(cat "$T/vsan-fuse.out")"
serving() {
    "$PY" -c 'import os, sys; print(os.getxattr(sys.argv[1], "user.vsan.node").decode())' "$T/fuse/m"
}
node=$(serving | cut -d' ' -f1)
# 128 blocks of 64 KiB, written in turn with an fsync each until told to
# stop; the kill lands among them, and 64 more follow the move.
random_file "$T/blocks" $((128 * 65536))
# shellcheck disable=SC2016 # expanded by the loop's own bash
DD='for ((n = 0; ; n++)); do
    [ -e "$3" ] && exit 0
    dd if="$1" of="$2" bs=64k count=1 skip=$((n % 128)) seek=$((n % 128)) \
        conv=notrunc,fsync status=none || exit 1
    echo "$n"
done'
bg_start dd bash -c "$DD" dd "$T/blocks" "$T/fuse/m" "$T/dd-stop"
DDP=$BG_PID
dd_count() { wc -l <"$T/dd.out"; }
dd_more() { [ "$(dd_count)" -gt "$1" ]; }
wait_until 20 dd_more 128 || lab_fail "the dd loop did not write 128 blocks: $(tail -n 3 "$T/dd.out")"
t0=$(now_ms)
lab kill "$node"
moved() { [ "$(serving | cut -d' ' -f1)" != "$node" ]; }
wait_until 40 moved || lab_fail "the mount still names node $node: $(cat "$T/vsan-fuse.out")"
log "3. node $node killed; the mount moved to node $(serving) in $(($(now_ms) - t0)) ms"
at_move=$(dd_count)
wait_until 60 dd_more $((at_move + 64)) ||
    lab_fail "writes through vsan-fuse stopped after the move: $(tail -n 3 "$T/dd.out")"
touch "$T/dd-stop"
wait_until 20 proc_gone "$DDP" || lab_fail "the dd loop is stuck"
wait "$DDP" || lab_fail "a write through vsan-fuse failed: $(tail -n 3 "$T/dd.out")"
grep -q "now served by node" "$T/vsan-fuse.out" || lab_fail "vsan-fuse did not log the move"
survivor=$(serving | cut -d' ' -f2)
nbdcopy "nbds://$survivor/m?tls-certificates=$CLIENT" "$T/back" ||
    lab_fail "nbdcopy from the survivor $survivor failed"
cmp -n $((128 * 65536)) "$T/blocks" "$T/back" || lab_fail "what vsan-fuse wrote differs"
wait_until 10 fuse_unmount "$T/fuse" || lab_fail "fusermount3 -u failed"
wait_until 10 proc_gone "$FUSE_PID" || lab_fail "vsan-fuse did not exit after unmount"
log "ok"
