#!/usr/bin/env bash
# t-lab-stall: a client that stops reading its replies costs only itself.
#
# On a 2-node lab, client A (a raw socket to node 1 with a small receive
# buffer) asks for 8 READs of 8 MiB, each followed by 16 small writes, and
# never reads a byte: node 1's serving threads of A block sending the READ
# replies, and A's writes, replicated to node 2, complete on node 1's
# mirror link reader, the thread that completes every replicated write to
# node 2. Meanwhile client B writes through node 1 for longer than the
# mirror timeout (4 s): every one of B's writes must be answered within
# 1 s, and neither node may mark a replica outdated. Before the fix the
# link's reader blocked on A's socket (under A's write lock) with the first
# of A's write replies, and B's writes were answered no more.
# timeout: 150
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

both_current() {
    [ "$(states 1)" = "current current" ] && [ "$(states 2)" = "current current" ]
}

lab_up 2
lab vsan 1 volume create m 256M
wait_until 20 both_current || lab_fail "m never became current on both nodes: $(states 1)"
URL="$("$LAB" addr 1)/m"
# Node 1 takes region 0's write priority now, so that A's writes to it go
# the asynchronous way at once.
nbdpy "$URL" <<'EOF' || lab_fail "the first write through node 1 failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(1, 4096), 0)
h.shutdown()
EOF

log "client A: 8 READs of 8 MiB and 128 writes, and no reply read"
cat >"$T/stalled.py" <<'EOF'
import socket, struct, sys, time, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
s = socket.socket()
# A small window: the server's send buffer fills, then its thread blocks.
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
s.connect((u.hostname, u.port))
def recv_exact(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        assert c, "closed during the handshake"
        b += c
    return b
recv_exact(18)
s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
name = u.path.lstrip("/").encode()
s.sendall(struct.pack(">QII", 0x49484156454F5054, 1, len(name)) + name)  # EXPORT_NAME
recv_exact(10)
req = lambda cmd, h, off, ln: struct.pack(">IHHQQI", 0x25609513, 0, cmd, h, off, ln)
# Once every serving thread is stuck, node 1 reads no more requests.
s.settimeout(3)
h = 1
try:
    for i in range(8):
        s.sendall(req(0, h, 0, 8 << 20))  # READ 8 MiB
        h += 1
        for j in range(16):
            s.sendall(req(1, h, (i * 16 + j) * 4096, 4096) + bytes([i]) * 4096)  # WRITE
            h += 1
except socket.timeout:
    pass
print("sent %d requests" % (h - 1), flush=True)
time.sleep(3600)
EOF
bg_start stalled "$PY" "$T/stalled.py" "$URL"
A_PID=$BG_PID
wait_until 20 grep -q sent "$T/stalled.out" || lab_fail "client A could not send: $(cat "$T/stalled.out")"
log "client A: $(cat "$T/stalled.out")"

log "client B: writes through node 1 for 10 s"
nbdpy "$URL" >"$T/b.out" 2>&1 <<'EOF' || lab_fail "client B: $(cat "$T/b.out")"
import sys, time
import nbd
from nbdtest import *
h = connect_nbd(sys.argv[1])
buf = pattern(7, 4096)
worst, n, end = 0.0, 0, time.monotonic() + 10
while time.monotonic() < end:
    t0 = time.monotonic()
    c = h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(buf)), (1 << 20) + (n % 1024) * 4096)
    while not h.aio_command_completed(c):
        check(time.monotonic() - t0 < 1.0, "write %d unanswered after 1 s" % n)
        h.poll(100)
    worst = max(worst, time.monotonic() - t0)
    n += 1
    time.sleep(0.01)
print("B: %d writes, the slowest %.1f ms" % (n, worst * 1000))
h.shutdown()
EOF
log "$(cat "$T/b.out")"

both_current || lab_fail "a replica was outdated: node 1 sees $(states 1), node 2 $(states 2)"
kill -0 "$A_PID" 2>/dev/null || lab_fail "client A died: $(cat "$T/stalled.out")"
log "both replicas current, client A still connected"
bg_kill "$A_PID"
log "pass"
