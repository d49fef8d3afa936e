#!/usr/bin/env bash
# t-multiconn: the server advertises CAN_MULTI_CONN, so it promises that a
# write completed on one connection is seen by reads on every other, and
# that a FLUSH on any connection makes every completed write durable. Three
# libnbd connections check the visibility half over many random blocks; the
# durability half is checked after a SIGKILL: a write completed on one
# connection and flushed on another must survive the daemon's death.
# timeout: 90
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

vt_config
vsand_start
expect_exit 0 vsan volume create mc 64M

nbdpy "$URI/mc" <<'PY' || die "multi-conn check failed"
import random
import sys
from nbdtest import *

uri = sys.argv[1]
hs = [connect_nbd(uri) for _ in range(3)]
for i, h in enumerate(hs):
    check(h.can_multi_conn(), "connection %d: CAN_MULTI_CONN not advertised" % i)
    check(h.can_flush() and h.can_fua(), "connection %d: FLUSH/FUA not advertised" % i)

rng = random.Random(42)
size = hs[0].get_size()
blocks = rng.sample(range(size // 4096), 200)
for n, block in enumerate(blocks):
    writer, flusher, reader = rng.sample(hs, 3)
    data = pattern(n + 1, 4096)
    writer.pwrite(data, block * 4096)
    check(reader.pread(4096, block * 4096) == data,
          "block %d: a completed write is not visible on another connection" % block)
    flusher.flush()
    check(reader.pread(4096, block * 4096) == data, "block %d: lost after FLUSH" % block)

# The check of the brief: write on 1, flush on 2, read on 0.
data = pattern(1000, 65536)
hs[1].pwrite(data, 1 << 20)
hs[2].flush()
check(hs[0].pread(65536, 1 << 20) == data, "write on 1, flush on 2: not seen on 0")

# Concurrent asynchronous writes from all three to disjoint places, then a
# read-back of everything on each connection.
expect = {}
cookies = []
for n, block in enumerate(rng.sample(range(size // 4096), 600)):
    h = hs[n % 3]
    length = 512 * rng.randrange(1, 9)
    data = pattern(5000 + n, length)
    expect[block * 4096] = data
    cookies.append((h, h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), block * 4096)))
for h in hs:
    while h.aio_in_flight() > 0:
        h.poll(-1)
for h, cookie in cookies:
    check(h.aio_command_completed(cookie), "async write %d not completed" % cookie)
for h in hs:
    for off, data in expect.items():
        check(h.pread(len(data), off) == data, "offset %d: concurrent write not seen" % off)
print("ok: visibility across connections")
PY

log "write on one connection, flush on another, then SIGKILL: data survives"
nbdpy "$URI/mc" <<'PY' || die "write+flush before kill failed"
import sys
from nbdtest import *
w, f = connect_nbd(sys.argv[1]), connect_nbd(sys.argv[1])
w.pwrite(pattern(77, 1 << 20), 8 << 20)
f.flush()
PY
vsand_stop KILL
vsand_start
nbdpy "$URI/mc" <<'PY' || die "flushed data lost after SIGKILL + restart"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
check(h.pread(1 << 20, 8 << 20) == pattern(77, 1 << 20), "flushed data differs after restart")
PY
vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
log "ok"
