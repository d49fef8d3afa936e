"""rbddiff_apply.py - applies an "rbd diff v2" stream to a raw image file,
as Ceph's import reads it (Import.cc: tag, le64 length, fields), written
apart from vsan's reader so that the stream format is checked by a second
implementation.

Usage: rbddiff_apply.py IMAGE < STREAM
A stream without a from-snapshot ('f') is full: IMAGE is recreated at the
stream's size, zero where the stream writes nothing. With 'f', IMAGE must
exist: it is resized to the stream's size and the records applied.
Prints "from=F to=T size=S" on stdout.
"""
import os
import struct
import sys


def read_exact(f, n):
    b = f.read(n)
    if len(b) != n:
        sys.exit("rbddiff_apply: truncated stream")
    return b


def main():
    path = sys.argv[1]
    f = sys.stdin.buffer
    if read_exact(f, 12) != b"rbd diff v2\n":
        sys.exit("rbddiff_apply: not an rbd diff v2 stream")
    meta = {"f": None, "t": None, "s": None}
    img = None
    while True:
        tag = read_exact(f, 1)
        if tag == b"e":
            break
        (length,) = struct.unpack("<Q", read_exact(f, 8))
        body = read_exact(f, 16 if tag == b"w" else length)
        if tag in (b"f", b"t"):
            (n,) = struct.unpack("<I", body[:4])
            meta[tag.decode()] = body[4 : 4 + n].decode()
        elif tag == b"s":
            (meta["s"],) = struct.unpack("<Q", body)
        elif tag in (b"w", b"z"):
            if img is None:
                if meta["f"] is None and os.path.exists(path):
                    os.unlink(path)
                img = open(path, "r+b" if meta["f"] else "w+b")
                img.truncate(meta["s"])
            off, n = struct.unpack("<QQ", body)
            img.seek(off)
            if tag == b"w":
                assert length == 16 + n, "w length field"
                while n:
                    chunk = read_exact(f, min(n, 1 << 20))
                    img.write(chunk)
                    n -= len(chunk)
            else:
                assert length == 16, "z length field"
                img.write(bytes(n))
        elif tag != b"p":
            sys.exit("rbddiff_apply: unknown tag %r" % tag)
    if f.read(1):
        sys.exit("rbddiff_apply: bytes after the end record")
    if img is None:
        img = open(path, "r+b" if meta["f"] else "w+b")
        img.truncate(meta["s"])
    img.close()
    print("from=%s to=%s size=%s" % (meta["f"], meta["t"], meta["s"]))


main()
