"""nbdtest.py - NBD client helpers for the integration tests.

Two kinds of client: libnbd (the real client library, used with strict mode
off to send requests it would normally refuse) and a raw-socket client that
speaks the protocol by hand, for what libnbd can't send at all: unknown
options, commands and flags, oversized payloads, truncated or garbage
handshakes. Run with /usr/bin/python3 (the one with the nbd module).
"""

import errno
import socket
import struct

import nbd

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_GO = 7

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_ERR_UNSUP = (1 << 31) + 1
REP_ERR_UNKNOWN = (1 << 31) + 6

INFO_EXPORT = 0

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2

CMD_FLAG_FUA = 1
CMD_FLAG_NO_HOLE = 2
CMD_FLAG_DF = 4
CMD_FLAG_REQ_ONE = 8
CMD_FLAG_FAST_ZERO = 16

TIMEOUT = 20.0


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def pattern(seed, length):
    """Deterministic, position-dependent bytes: a misplaced block shows."""
    block = b"".join(struct.pack(">QQ", seed, i) for i in range(length // 16 + 1))
    return block[:length]


def connect_nbd(uri, strict=True):
    """A libnbd connection that negotiated base:allocation, as real clients do."""
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    if not strict:
        h.set_strict_mode(0)
    h.connect_uri(uri)
    return h


def expect_errno(want, what, fn, *args, **kwargs):
    """Runs a libnbd call that must fail with the server error `want`."""
    try:
        fn(*args, **kwargs)
    except nbd.Error as e:
        check(e.errnum == want,
              "%s: expected %s, got %s (%s)" % (what, errno.errorcode[want], e.errno, e.string))
        return
    raise Failure("%s: expected %s, but it succeeded" % (what, errno.errorcode[want]))


def recv_exact(sock, n):
    chunks = []
    while n > 0:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError("connection closed with %d bytes still expected" % n)
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def closed_by_peer(sock):
    """True once the server has closed the connection (EOF or reset),
    waiting at most TIMEOUT; anything it sends first is drained."""
    sock.settimeout(TIMEOUT)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        return False
    return True


class RawClient:
    """A hand-driven NBD client over TCP (or a unix socket: port a path)
    with simple replies only."""

    def __init__(self, port, host="127.0.0.1"):
        if isinstance(port, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(TIMEOUT)
            self.sock.connect(port)
        else:
            self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.next_handle = 1

    def close(self):
        self.sock.close()

    def greeting(self):
        magic, opt, flags = struct.unpack(">8sQH", recv_exact(self.sock, 18))
        check(magic == NBDMAGIC and opt == IHAVEOPT, "bad server greeting")
        check(flags & FLAG_FIXED_NEWSTYLE, "server is not fixed newstyle")
        return flags

    def handshake(self):
        self.greeting()
        self.sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))

    def send_option(self, opt, data=b""):
        self.sock.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def option_reply(self):
        magic, opt, rtype, length = struct.unpack(">QIII", recv_exact(self.sock, 20))
        check(magic == OPT_REPLY_MAGIC, "bad option reply magic %#x" % magic)
        return opt, rtype, recv_exact(self.sock, length)

    def go(self, name):
        """OPT_GO; returns (size, transmission flags) or the error reply type."""
        name_b = name.encode()
        self.send_option(OPT_GO, struct.pack(">I", len(name_b)) + name_b + struct.pack(">H", 0))
        size = flags = None
        while True:
            opt, rtype, data = self.option_reply()
            check(opt == OPT_GO, "reply to option %d, expected OPT_GO" % opt)
            if rtype == REP_ACK:
                check(size is not None, "OPT_GO acked without NBD_INFO_EXPORT")
                return size, flags
            if rtype == REP_INFO:
                if struct.unpack(">H", data[:2])[0] == INFO_EXPORT:
                    size, flags = struct.unpack(">QH", data[2:12])
                continue
            if rtype & (1 << 31):
                return rtype
            raise Failure("unexpected OPT_GO reply type %#x" % rtype)

    def go_ok(self, name):
        r = self.go(name)
        if not isinstance(r, tuple):
            raise Failure("OPT_GO %r failed with reply %#x" % (name, r))
        return r

    def request(self, cmd, offset, length, flags=0, payload=b""):
        handle = self.next_handle
        self.next_handle += 1
        self.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, handle, offset, length))
        view = memoryview(payload)
        for i in range(0, len(view), 1 << 20):
            self.sock.sendall(view[i:i + (1 << 20)])
        return handle

    def reply(self, handle, read_length=0):
        """Reads one simple reply for handle; returns (error, data)."""
        magic, error, got = struct.unpack(">IIQ", recv_exact(self.sock, 16))
        check(magic == SIMPLE_REPLY_MAGIC, "bad reply magic %#x" % magic)
        check(got == handle, "reply for handle %d, expected %d" % (got, handle))
        data = recv_exact(self.sock, read_length) if error == 0 else b""
        return error, data

    def call(self, cmd, offset, length, flags=0, payload=b""):
        h = self.request(cmd, offset, length, flags, payload)
        return self.reply(h, length if cmd == CMD_READ else 0)

    def read(self, offset, length):
        error, data = self.call(CMD_READ, offset, length)
        check(error == 0, "READ %d+%d failed with error %d" % (offset, length, error))
        return data
