"""mirror_flood.py - an unauthenticated stranger at a node's mirror port, for
t-lab-flood.sh. It knows the wire format (mirror/wire.h) but not the
cluster's secret.

Usage: mirror_flood.py MODE HOST PORT [ARGS]
  flood N DIR   opens N connections, each sending a well-formed WRITE header
                that announces a 32 MiB payload and then 512 KiB of it; keeps
                those the node did not close, writes DIR/flood.ready (a JSON
                summary) and holds them until DIR/flood.stop exists
  trickle LIMIT sends a HELLO one byte a second; fails unless the node cuts
                the connection within LIMIT seconds
  slots N LIMIT opens N connections that say nothing, then one more, which the
                node must close at once; the N must be cut within LIMIT s
"""

import json
import os
import resource
import socket
import struct
import sys
import time

MAGIC = 0x4D535356
VERSION = 1
MW_HELLO, MW_WRITE = 1, 16
HEADER = "<IHHQIIQIIIIII"  # struct mwire_header, 56 bytes, little-endian


def crc32c(data, crc=0):
    """CRC32C (Castagnoli), as mwire_crc32c."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def header(mtype, length=0, payload=0, payload_crc=0):
    fields = [MAGIC, VERSION, mtype, 1, 0, 0, 0, length, 0, payload, payload_crc, 0, 0]
    crc = crc32c(struct.pack(HEADER, *fields))
    fields[11] = crc
    return struct.pack(HEADER, *fields)


def closed_within(sock, seconds):
    """Whether the node closes sock within seconds (anything sent is drained)."""
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            sock.settimeout(max(end - time.monotonic(), 0.01))
            if not sock.recv(4096):
                return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True
    return False


def fail(msg):
    print("FAIL:", msg, file=sys.stderr, flush=True)
    sys.exit(1)


def flood(host, port, n, outdir):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    big = 32 << 20
    head = header(MW_WRITE, length=big, payload=big, payload_crc=0x12345678)
    chunk = b"\xa5" * (512 << 10)
    held, closed = [], 0
    start = time.monotonic()
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=10)
        try:
            s.sendall(head + chunk)
            held.append(s)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            closed += 1
            s.close()
    summary = {"opened": n, "closed_while_sending": closed, "held": len(held),
               "seconds": round(time.monotonic() - start, 1)}
    with open(os.path.join(outdir, "flood.ready"), "w") as f:
        json.dump(summary, f)
    stop = os.path.join(outdir, "flood.stop")
    end = time.monotonic() + 300
    while not os.path.exists(stop) and time.monotonic() < end:
        time.sleep(0.1)
    for s in held:
        s.close()


def trickle(host, port, limit):
    hello = struct.pack("<65sI32s", b"lab", 99, bytes(32))
    msg = header(MW_HELLO, payload=len(hello), payload_crc=crc32c(hello)) + hello
    s = socket.create_connection((host, port), timeout=10)
    start = time.monotonic()
    for b in msg:
        try:
            s.sendall(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            break
        if closed_within(s, 1.0) or time.monotonic() - start > limit + 5:
            break
    took = time.monotonic() - start
    if took > limit:
        fail("a stranger sending a byte a second was still connected after %.1f s" % took)
    print("ok: a stranger trickling a HELLO a byte a second was cut after %.1f s" % took)


def slots(host, port, n, limit):
    idle = [socket.create_connection((host, port), timeout=10) for _ in range(n)]
    start = time.monotonic()
    extra = socket.create_connection((host, port), timeout=10)
    if not closed_within(extra, 1.0):
        fail("with %d connections in the handshake, one more was not closed at once" % n)
    for s in idle:
        if not closed_within(s, limit - (time.monotonic() - start)):
            fail("a silent connection outlived the handshake deadline")
    print("ok: connection %d closed at once, the %d silent ones cut after %.1f s" %
          (n + 1, n, time.monotonic() - start))


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "flood":
        flood(host, port, int(sys.argv[4]), sys.argv[5])
    elif mode == "trickle":
        trickle(host, port, float(sys.argv[4]))
    elif mode == "slots":
        slots(host, port, int(sys.argv[4]), float(sys.argv[5]))
    else:
        fail("unknown mode " + mode)


if __name__ == "__main__":
    main()
