#!/usr/bin/env python3
"""Writes the fuzzer's seed inputs (tests/fuzz/seeds/): well-formed client
streams that reach every option and command, so mutation starts deep in
the protocol instead of at the magic numbers."""
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054
REQ = 0x25609513


def opt(o, data=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(data)) + data


def name(n):
    n = n.encode()
    return struct.pack(">I", len(n)) + n


def go(export, infos=(1, 2, 3), o=7):
    return opt(o, name(export) + struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos))


def meta(o, export, queries):
    return opt(o, name(export) + struct.pack(">I", len(queries)) + b"".join(name(q) for q in queries))


def req(cmd, off=0, length=0, flags=0, handle=1, payload=b""):
    return struct.pack(">IHHQQI", REQ, flags, cmd, handle, off, length) + payload


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    hello = struct.pack(">I", 3)
    seeds = {
        "list": hello + opt(3) + opt(2),
        "unknown-then-go": hello + opt(99, b"x") + opt(8) + meta(9, "a", ["base:"]) + go("a", o=6) +
        meta(10, "a", ["base:allocation"]) + go("a") +
        req(1, 0, 512, 1, payload=b"\xab" * 512) + req(0, 0, 1024) + req(0, 0, 65536 * 2) +
        req(7, 0, 65536, 8) + req(4, 4096, 4096) + req(6, 8192, 4096, 2) + req(6, 0, 512, 16) +
        req(5, 0, 4096) + req(3) + req(0, 0, 512, 4) + req(2),
        "export-name": hello + opt(1, b"a") + req(0, 512, 512) + req(1, 1 << 20, 512, payload=b"\0" * 512) +
        req(9, 0, 0) + req(0, 3, 5) + req(2),
        "readonly": hello + go("ro") + req(1, 0, 512, payload=b"z" * 512) + req(4, 0, 512) + req(2),
        "bitmaps": hello + opt(8) + meta(9, "a", []) + meta(9, "a", ["qemu:", "qemu:dirty-bitmap:", "base:"]) +
        meta(9, "ro", ["qemu:dirty-bitmap:s0", "qemu:dirty-bitmap:s1", "x-y:z"]) +
        meta(10, "a", ["base:allocation", "qemu:dirty-bitmap:s2", "qemu:dirty-bitmap:s1", "qemu:"]) + go("a") +
        req(1, 4096, 512, payload=b"\xcd" * 512) + req(6, 65536, 4096) + req(7, 0, 131072) +
        req(7, 4096, 65536, 8) + req(2),
        "bad": hello + opt(7, b"\xff\xff\xff\xff") + go("nope") + opt(10, b"") + opt(1, b"nope"),
    }
    for k, v in seeds.items():
        with open(os.path.join(outdir, k), "wb") as f:
            f.write(v)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "seeds"))
