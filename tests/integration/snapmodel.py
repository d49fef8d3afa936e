"""snapmodel.py - a volume's content across many snapshots, for the
snapshot tests: the writes made before snapshot i are a pure function of i,
so the content each snapshot must hold is rebuilt by replaying them (no
copy of the volume per snapshot is kept).

    snapmodel.py write URI VSAN SOCKET VOL N
        for i = 1..N: the writes of step i through URI/VOL, then
        `vsan snapshot create VOL sI`; then the writes of step N+1 (the
        live volume's last state)
    snapmodel.py check URI VOL N DELETED
        every snapshot sI (1 <= i <= N, i not in DELETED, a comma list)
        reads exactly its content through URI/VOL@sI, and URI/VOL holds
        step N+1's; VOL@sI of a deleted one is no export.
"""
import random
import subprocess
import sys

from nbdtest import *

CHUNK = 64 << 10


def step(i, size):
    """The writes of step i, in order: (offset, bytes) or (offset, length)
    for zeroes. A hot block at 0 (a chunk copied into every snapshot), a
    few writes of 512 B to 192 KiB anywhere (across chunk edges), and
    every fifth step zeroes."""
    rnd = random.Random(i)
    ops = [(0, pattern(i, 4096))]
    for k in range(3):
        length = rnd.randrange(1, 385) * 512
        off = rnd.randrange(0, (size - length) // 512 + 1) * 512
        ops.append((off, pattern(i * 1000 + k, length)))
    if i % 5 == 0:
        length = rnd.randrange(1, 257) * 512
        ops.append((rnd.randrange(0, (size - length) // 512 + 1) * 512, length))
    return ops


def run_step(h, i, size):
    for off, data in step(i, size):
        if isinstance(data, int):
            h.zero(data, off)
        else:
            h.pwrite(data, off)


def replay(model, i):
    for off, data in step(i, len(model)):
        if isinstance(data, int):
            data = bytes(data)
        model[off : off + len(data)] = data


def read_all(h):
    size = h.get_size()
    return b"".join(h.pread(min(4 << 20, size - o), o) for o in range(0, size, 4 << 20))


def first_diff(a, b):
    for o in range(0, len(a), 512):
        if a[o : o + 512] != b[o : o + 512]:
            return o
    return len(a)


def write(uri, vsan, sock, vol, n):
    h = connect_nbd(f"{uri}/{vol}")
    size = h.get_size()
    for i in range(1, n + 1):
        run_step(h, i, size)
        r = subprocess.run([vsan, "-s", sock, "snapshot", "create", vol, f"s{i}"],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"snapshot s{i}: exit {r.returncode}: {r.stderr}")
    run_step(h, n + 1, size)
    h.flush()


def check_all(uri, vol, n, deleted):
    live = connect_nbd(f"{uri}/{vol}")
    model = bytearray(live.get_size())
    for i in range(1, n + 2):
        replay(model, i)
        if i in deleted:
            try:
                connect_nbd(f"{uri}/{vol}@s{i}")
            except nbd.Error:
                continue
            raise Failure(f"{vol}@s{i}: deleted, still served")
        h = live if i == n + 1 else connect_nbd(f"{uri}/{vol}@s{i}")
        name = vol if i == n + 1 else f"{vol}@s{i}"
        check(h.get_size() == len(model), f"{name}: size {h.get_size()}, not {len(model)}")
        got = read_all(h)
        if got != model:
            o = first_diff(got, model)
            raise Failure(f"{name}: differs from its content at byte {o} (chunk {o // CHUNK})")
        if h is not live:
            h.shutdown()
    print(f"{n - len(deleted)} snapshots and the live volume read exactly their content")


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    else:
        deleted = {int(x) for x in sys.argv[5].split(",") if x}
        check_all(sys.argv[2], sys.argv[3], int(sys.argv[4]), deleted)
