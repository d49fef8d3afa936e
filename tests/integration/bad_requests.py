"""bad_requests.py - the hostile client of t-nbdsh-bad.sh.

Sends every kind of bad NBD input the server must refuse precisely: with
libnbd in non-strict mode for requests a real client could send (past the
end, misaligned, bad flags, zero length), and with raw sockets for what no
client library sends (unknown options and commands, oversized payloads,
truncated and garbage handshakes). After each case it checks that the
connection is in the state the protocol asks for, that a bystander
connection opened at the start still works, that new clients are served,
and that data written before is intact.

Usage: bad_requests.py NBD_BASE_URI PORT   (export "bad" of 64 MiB and
"other" must exist; the server runs with min_block_size = 512)
"""

import errno
import os
import struct
import sys

import nbd

from nbdtest import (CMD_DISC, CMD_FLAG_DF, CMD_FLAG_FAST_ZERO, CMD_FLAG_NO_HOLE,
                     CMD_FLAG_REQ_ONE, CMD_READ, CMD_WRITE, IHAVEOPT, OPT_ABORT,
                     OPT_EXPORT_NAME, OPT_GO, OPT_LIST, REP_ACK, REP_ERR_UNKNOWN,
                     REP_ERR_UNSUP, REP_SERVER, REQUEST_MAGIC, Failure, RawClient, check,
                     closed_by_peer, connect_nbd, expect_errno, pattern)

EINVAL, ENOSPC = errno.EINVAL, errno.ENOSPC
MAX_PAYLOAD = 32 << 20

base, port = sys.argv[1], int(sys.argv[2])
uri = base + "/bad"

# Known data at both ends of the export: a partial or misplaced write of a
# refused request would show here.
HEAD = pattern(1, 1 << 20)
bystander = connect_nbd(uri)
SIZE = bystander.get_size()
TAIL = pattern(2, 8192)
bystander.pwrite(HEAD, 0)
bystander.pwrite(TAIL, SIZE - len(TAIL))
bystander.flush()


def healthy(step):
    check(bystander.pread(len(HEAD), 0) == HEAD, step + ": head changed (bystander)")
    check(bystander.pread(len(TAIL), SIZE - len(TAIL)) == TAIL, step + ": tail changed")
    h = connect_nbd(uri)
    check(h.pread(len(HEAD), 0) == HEAD, step + ": head changed (new client)")
    h.shutdown()
    print("ok:", step, flush=True)


def still_connected(h, step):
    check(h.pread(512, 0) == HEAD[:512], step + ": connection unusable afterwards")
    healthy(step)


def block_status_works(h):
    extents = []
    h.block_status(1 << 20, 0, lambda ctx, off, ents, err: extents.extend(ents) or 0)
    check(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION), "base:allocation not negotiated")
    check(extents and extents[0] > 0, "BLOCK_STATUS in range returned no extents")


def past_end(h):
    block_status_works(h)
    tail = SIZE - 512
    junk = b"\xee" * 1024
    cases = [
        ("READ across the end", EINVAL, h.pread, 1024, tail),
        ("READ at the end", EINVAL, h.pread, 512, SIZE),
        ("READ with offset overflow", EINVAL, h.pread, 1024, (1 << 64) - 512),
        ("WRITE across the end", ENOSPC, h.pwrite, junk, tail),
        ("WRITE at the end", ENOSPC, h.pwrite, junk[:512], SIZE),
        ("WRITE with offset overflow", ENOSPC, h.pwrite, junk, (1 << 64) - 512),
        ("TRIM across the end", EINVAL, h.trim, 1024, tail),
        ("WRITE_ZEROES across the end", ENOSPC, h.zero, 1024, tail),
        ("CACHE across the end", EINVAL, h.cache, 1024, tail),
        ("BLOCK_STATUS at the end", EINVAL, h.block_status, 512, SIZE, lambda *a: 0),
    ]
    for what, err, fn, *args in cases:
        expect_errno(err, what, fn, *args)
        still_connected(h, what)


def misaligned(h):
    check(h.get_block_size(nbd.SIZE_MINIMUM) == 512, "min block size 512 not announced")
    cases = [
        ("READ of 100 bytes", h.pread, 100, 0),
        ("READ at offset 100", h.pread, 512, 100),
        ("WRITE at offset 1", h.pwrite, b"\xee" * 512, 1),
        ("WRITE of 100 bytes", h.pwrite, b"\xee" * 100, 0),
        ("TRIM at offset 256", h.trim, 512, 256),
        ("WRITE_ZEROES of 100 bytes", h.zero, 100, 0),
        ("CACHE at offset 7", h.cache, 512, 7),
    ]
    for what, fn, *args in cases:
        expect_errno(EINVAL, "misaligned " + what, fn, *args)
        still_connected(h, "misaligned " + what)


def bad_flags(h):
    cases = [
        ("unknown flag on READ", h.pread, 512, 0, 1 << 10),
        ("unknown flag on WRITE", h.pwrite, b"\xee" * 512, 0, 1 << 12),
        ("DF on WRITE", h.pwrite, b"\xee" * 512, 0, CMD_FLAG_DF),
        ("REQ_ONE on WRITE", h.pwrite, b"\xee" * 512, 0, CMD_FLAG_REQ_ONE),
        ("FAST_ZERO on TRIM", h.trim, 512, 0, CMD_FLAG_FAST_ZERO),
        ("NO_HOLE on CACHE", h.cache, 512, 0, CMD_FLAG_NO_HOLE),
    ]
    for what, fn, *args in cases:
        expect_errno(EINVAL, what, fn, *args)
        still_connected(h, what)


def zero_length(h):
    check(h.pread(0, 4096) == b"", "zero-length READ returned data")
    h.pwrite(b"", 4096)
    h.trim(0, 4096)
    h.zero(0, 4096)
    h.cache(0, 4096)
    h.flush()
    still_connected(h, "zero-length READ, WRITE, TRIM, WRITE_ZEROES, CACHE")


def raw_negotiation():
    c = RawClient(port)
    c.handshake()
    c.send_option(0x4242, b"whatever")
    opt, rtype, _ = c.option_reply()
    check(opt == 0x4242 and rtype == REP_ERR_UNSUP, "unknown option: reply %#x" % rtype)
    c.send_option(OPT_LIST)
    names = []
    while True:
        opt, rtype, data = c.option_reply()
        check(opt == OPT_LIST, "reply to LIST names option %d" % opt)
        if rtype == REP_ACK:
            break
        check(rtype == REP_SERVER, "LIST reply type %#x" % rtype)
        names.append(data[4:4 + struct.unpack(">I", data[:4])[0]].decode())
    check(sorted(names) == ["bad", "other"], "LIST after an unknown option: %r" % names)
    check(c.go("nope") == REP_ERR_UNKNOWN, "GO of an unknown export not ERR_UNKNOWN")
    size, _ = c.go_ok("bad")
    check(size == SIZE, "GO after errors: size %d" % size)
    print("ok: unknown option, LIST, GO unknown export, then GO", flush=True)
    return c


def raw_transmission(c):
    def alive(step):
        check(c.read(0, 512) == HEAD[:512], step + ": raw connection unusable afterwards")
        healthy(step)

    error, _ = c.call(0x42, 0, 512)
    check(error == EINVAL, "unknown command: error %d" % error)
    alive("unknown command")
    error, _ = c.call(CMD_READ, 0, 512, flags=1 << 13)
    check(error == EINVAL, "unknown flag (raw): error %d" % error)
    alive("unknown flag (raw)")
    error, _ = c.call(CMD_WRITE, 0, 4096, flags=CMD_FLAG_DF, payload=b"\xee" * 4096)
    check(error == EINVAL, "WRITE with DF (raw): error %d" % error)
    alive("WRITE with DF, payload skipped")
    big = MAX_PAYLOAD + 4096
    error, _ = c.call(CMD_WRITE, 0, big, payload=b"\xee" * big)
    check(error == EINVAL, "oversized WRITE: error %d" % error)
    alive("oversized WRITE, payload skipped")
    error, data = c.call(CMD_READ, 4096, 0)
    check(error == 0 and data == b"", "zero-length raw READ: error %d" % error)
    error, _ = c.call(CMD_WRITE, 4096, 0)
    check(error == 0, "zero-length raw WRITE: error %d" % error)
    alive("zero-length raw READ and WRITE")
    c.request(CMD_DISC, 0, 0)
    check(closed_by_peer(c.sock), "server did not close after DISC")
    c.close()
    healthy("DISC")


def go_raw(name="bad"):
    c = RawClient(port)
    c.handshake()
    c.go_ok(name)
    return c


def ends_connection(step, send):
    """send(sock) puts the connection into a bad state; the server must
    close that connection and serve everyone else."""
    c = RawClient(port)
    send(c)
    check(closed_by_peer(c.sock), step + ": server kept the connection")
    c.close()
    healthy(step)


def abandoned(step, send):
    """send(c) sends something incomplete; then the client goes away."""
    c = RawClient(port)
    send(c)
    c.close()
    healthy(step)


def truncated_handshakes():
    abandoned("connect and close", lambda c: None)
    abandoned("half the client flags", lambda c: (c.greeting(), c.sock.sendall(b"\0\0")))
    abandoned("half an option header", lambda c: (c.handshake(), c.sock.sendall(
        struct.pack(">Q", IHAVEOPT))))
    abandoned("option data cut short", lambda c: (c.handshake(), c.sock.sendall(
        struct.pack(">QII", IHAVEOPT, OPT_GO, 100) + b"\0" * 10)))

    def half_request(c):
        c.handshake()
        c.go_ok("bad")
        c.sock.sendall(struct.pack(">IHH", REQUEST_MAGIC, 0, CMD_READ))
    abandoned("half a request header", half_request)

    def half_write(c):
        c.handshake()
        c.go_ok("bad")
        c.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, 1, 0, 4096))
        c.sock.sendall(b"\xee" * 100)
    abandoned("WRITE payload cut short", half_write)


def garbage():
    ends_connection("garbage instead of client flags",
                    lambda c: (c.greeting(), c.sock.sendall(os.urandom(64))))
    ends_connection("unknown client flags",
                    lambda c: (c.greeting(), c.sock.sendall(struct.pack(">I", 0xFFFF0003))))
    ends_connection("option with a bad magic", lambda c: (c.handshake(), c.sock.sendall(
        struct.pack(">QII", 0x1122334455667788, OPT_GO, 0))))
    ends_connection("EXPORT_NAME of an unknown export", lambda c: (
        c.handshake(), c.send_option(OPT_EXPORT_NAME, b"nope")))
    ends_connection("ABORT", lambda c: (c.handshake(), c.send_option(OPT_ABORT)))
    ends_connection("request with a bad magic", lambda c: (
        c.handshake(), c.go_ok("bad"),
        c.sock.sendall(struct.pack(">IHHQQI", 0xDEADBEEF, 0, CMD_READ, 1, 0, 512))))
    ends_connection("random bytes in transmission", lambda c: (
        c.handshake(), c.go_ok("bad"), c.sock.sendall(os.urandom(4096))))


def idle_handshakes():
    """Clients stuck in the handshake must not keep others from being served."""
    stuck = []
    for _ in range(16):
        c = RawClient(port)
        c.greeting()
        stuck.append(c)
    healthy("16 clients idle in the handshake")
    for c in stuck:
        c.close()


def main():
    healthy("start")
    h = connect_nbd(uri, strict=False)
    past_end(h)
    misaligned(h)
    bad_flags(h)
    zero_length(h)
    h.shutdown()
    raw_transmission(raw_negotiation())
    truncated_handshakes()
    garbage()
    idle_handshakes()
    healthy("end")


try:
    main()
except (Failure, nbd.Error, OSError, EOFError) as e:
    print("FAIL:", e, file=sys.stderr)
    sys.exit(1)
