#!/usr/bin/env bash
# t-nbd-handshake: what an NBD client costs before it has chosen an export
# is bounded (nbd-server/server.h), with handshake_timeout = 2 s:
#
#  1. A client that trickles its handshake, one byte a second, is cut once
#     the handshake as a whole took 2 s (not kept as long as each byte comes
#     within the timeout), while a real client is served beside it.
#  2. With 32 connections idle in the handshake, a 33rd is closed at once,
#     before the greeting; once the deadline has cut the 32, real clients
#     are served again.
#  3. An option longer than 16 KiB is answered ERR_TOO_BIG unbuffered, and
#     the connection goes on.
# timeout: 60
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

vt_config nbd.handshake_timeout=2000
vsand_start
expect_exit 0 vsan volume create h 16M

nbdpy "$URI/h" "$PORT" <<'PY' || die "handshake limits not kept"
import socket
import struct
import sys
import time

from nbdtest import *

uri, port = sys.argv[1], int(sys.argv[2])
LIMIT = 2.0  # handshake_timeout
SLOTS = 32   # NBD_HANDSHAKES_MAX
REP_ERR_TOO_BIG = (1 << 31) + 9


def served(step):
    h = connect_nbd(uri)
    check(h.pread(512, 0) == bytes(512), step + ": a real client read wrong data")
    h.shutdown()


def closed_within(sock, seconds):
    """Whether the server closes sock within seconds (what it sends is drained)."""
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            sock.settimeout(max(end - time.monotonic(), 0.01))
            if not sock.recv(4096):
                return True
    except (socket.timeout, BlockingIOError):
        return False
    except ConnectionResetError:
        return True
    return False


def trickle():
    c = RawClient(port)
    start = time.monotonic()
    c.greeting()
    msg = struct.pack(">I", FLAG_FIXED_NEWSTYLE) + struct.pack(">QII", IHAVEOPT, OPT_GO, 64)
    for i, b in enumerate(msg + bytes(64)):
        try:
            c.sock.sendall(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            break
        if i == 2:
            served("beside a trickling client")
        if closed_within(c.sock, 1.0) or time.monotonic() - start > LIMIT + 5:
            break
    took = time.monotonic() - start
    check(took < LIMIT + 1.5,
          "a client sending a byte a second was still in the handshake after %.1f s" % took)
    c.close()
    print("ok: a client trickling a byte a second was cut after %.1f s" % took, flush=True)


def slots():
    idle = []
    for _ in range(SLOTS):
        c = RawClient(port)
        c.greeting()
        idle.append(c)
    start = time.monotonic()
    extra = RawClient(port)
    check(closed_within(extra.sock, 1.0),
          "with %d connections in the handshake, one more was not closed at once" % SLOTS)
    extra.close()
    for c in idle:
        check(closed_within(c.sock, LIMIT + 2 - (time.monotonic() - start)),
              "an idle connection outlived the handshake deadline")
        c.close()
    served("after the idle connections were cut")
    print("ok: connection %d closed at once; the %d idle ones cut after %.1f s" %
          (SLOTS + 1, SLOTS, time.monotonic() - start), flush=True)


def too_big():
    c = RawClient(port)
    c.handshake()
    c.send_option(OPT_GO, bytes(16 * 1024 + 1))
    opt, rtype, _ = c.option_reply()
    check(opt == OPT_GO and rtype == REP_ERR_TOO_BIG,
          "a 16 KiB + 1 option: reply %#x, not ERR_TOO_BIG" % rtype)
    c.send_option(OPT_LIST)
    _, rtype, _ = c.option_reply()
    check(rtype in (REP_SERVER, REP_ACK), "the connection did not go on after ERR_TOO_BIG")
    c.close()
    print("ok: an option over 16 KiB is answered ERR_TOO_BIG", flush=True)


try:
    trickle()
    slots()
    too_big()
    served("end")
except (Failure, nbd.Error, OSError, EOFError) as e:
    print("FAIL:", e, file=sys.stderr)
    sys.exit(1)
PY
proc_alive "$VSAND_PID" || die "vsand died"
grep -q "connections in the handshake" "$LOG" || die "the refused connection was not logged"
vsand_stop TERM
log "ok"
