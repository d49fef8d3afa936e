"""admin_raw.py - a raw client of vsand's admin socket (libqb IPC, through
ctypes): sends request bodies no `vsan` command would, as bytes, so that
the tests can check the daemon refuses them cleanly.

    admin_raw.py SOCKET < REQUESTS

Each line of stdin is one request body, sent as it is (a line may hold
JSON escapes such as \\u0000). For each, one line on stdout: the reply's
"error" code, or "ok". The framing is admin_proto.h's: a
qb_ipc_request_header (id ADMIN_MSG_JSON, size) and the JSON.
"""
import ctypes
import json
import struct
import sys

ADMIN_MSG_JSON = 1
ADMIN_MSG_MAX = 1024 * 1024
REQUEST_HEADER = "<i4xi4x"  # two int32, each aligned to 8
RESPONSE_HEADER_SIZE = 24


class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


qb = ctypes.CDLL("libqb.so.100", use_errno=True)
qb.qb_ipcc_connect.restype = ctypes.c_void_p
qb.qb_ipcc_connect.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
qb.qb_ipcc_sendv_recv.restype = ctypes.c_ssize_t
qb.qb_ipcc_sendv_recv.argtypes = [ctypes.c_void_p, ctypes.POINTER(Iovec), ctypes.c_uint32,
                                  ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int32]
qb.qb_ipcc_disconnect.argtypes = [ctypes.c_void_p]


def call(name, body):
    """Sends body (bytes) on a connection of its own; the reply as a dict."""
    conn = qb.qb_ipcc_connect(name.encode(), ADMIN_MSG_MAX)
    if not conn:
        raise OSError(ctypes.get_errno(), f"cannot connect to {name}")
    try:
        msg = struct.pack(REQUEST_HEADER, ADMIN_MSG_JSON, struct.calcsize(REQUEST_HEADER) + len(body))
        msg += body
        buf = ctypes.create_string_buffer(msg)
        iov = Iovec(ctypes.cast(buf, ctypes.c_void_p), len(msg))
        out = ctypes.create_string_buffer(ADMIN_MSG_MAX)
        n = qb.qb_ipcc_sendv_recv(conn, ctypes.byref(iov), 1, out, ADMIN_MSG_MAX, 30000)
        if n < RESPONSE_HEADER_SIZE:
            raise OSError(-n if n < 0 else 0, f"no reply to {body[:80]!r}")
        return json.loads(out.raw[RESPONSE_HEADER_SIZE:n].rstrip(b"\0"))
    finally:
        qb.qb_ipcc_disconnect(conn)


if __name__ == "__main__":
    socket = sys.argv[1].lstrip("/").replace("/", "_")
    for line in sys.stdin.buffer:
        reply = call(socket, line.rstrip(b"\n"))
        print("ok" if reply.get("ok") else reply.get("error"), flush=True)
