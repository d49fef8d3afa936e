#!/usr/bin/env python3
"""snapbench.py - the NBD clients of the snapshot rows of `make bench`
(tests/bench/snapshots.sh runs the servers and fio; tables.py prints).
Both print result lines "ROW<TAB>SERVER<TAB>VALUE" (see tables.py).

pause: the write pause a snapshot causes. A QD1 writer of 4 KiB blocks
(random, within the first 64 MiB, so the copies the cuts cause stay
small) runs SECONDS without cuts, then SECONDS while a thread runs
CUT... NAME every second (the order flips with ROUND). Every write's
start and latency is kept on one clock with the cut commands' start and
end. A cut's window is its command's run: the cut happens inside it, and
the writes of the first moments after it (copy-on-write of the chunks
they touch) too. The run without cuts gets windows of the same length on
the same one-second schedule, so both sides count alike.

dirty: the writes between two snapshots of the backup row: BLOCKS random
4 KiB blocks and RUNS runs of 1 MiB at random 4 KiB-aligned offsets;
prints the bytes written and the 64 KiB chunks they dirtied.

Usage:
  snapbench.py pause URI SECONDS ROUND SERVER CUT...
  snapbench.py dirty URI SEED BLOCKS RUNS
"""
import random
import statistics
import subprocess
import sys
import threading
import time

import nbd

CHUNK = 64 << 10
AREA = 64 << 20
PERIOD = 1.0


def pct(values, p):
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def write_for(h, seconds, rng):
    """QD1 writes for seconds: [(start, latency)] on perf_counter."""
    buf = bytearray(rng.randbytes(4096))
    lat = []
    end = time.perf_counter() + seconds
    while True:
        t = time.perf_counter()
        if t >= end:
            return lat
        h.pwrite(buf, rng.randrange(AREA // 4096) * 4096)
        lat.append((t, time.perf_counter() - t))


def cutter(cut, name, t0, seconds, cuts, stop):
    """cut every PERIOD from t0 + PERIOD / 2: [(start, end, exit code)]."""
    k = 0
    while not stop.is_set():
        at = t0 + PERIOD / 2 + k * PERIOD
        if at + PERIOD / 2 > t0 + seconds:
            return
        time.sleep(max(0.0, at - time.perf_counter()))
        s = time.perf_counter()
        r = subprocess.run(cut + ["%s-%d" % (name, k)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        cuts.append((s, time.perf_counter(), r.returncode))
        k += 1


def windows(lat, spans):
    """the slowest write of each span, and every write's latency in one."""
    slowest, inside = [], []
    for s, e in spans:
        w = [d for t, d in lat if t < e and t + d > s]
        inside += w
        slowest.append(max(w, default=0.0))
    return slowest, inside


def pause(uri, seconds, rnd, server, *cut):
    seconds, rnd = float(seconds), int(rnd)
    h = nbd.NBD()
    h.connect_uri(uri)
    rng = random.Random(rnd)
    runs = {}
    for phase in (("cuts", "no cuts") if rnd % 2 else ("no cuts", "cuts")):
        cuts, stop = [], threading.Event()
        t0 = time.perf_counter()
        th = None
        if phase == "cuts":
            th = threading.Thread(target=cutter,
                                  args=(list(cut), "p%d" % rnd, t0, seconds, cuts, stop))
            th.start()
        lat = write_for(h, seconds, rng)
        stop.set()
        if th:
            th.join()
        runs[phase] = (t0, lat, cuts)
    h.shutdown()

    t0, lat, cuts = runs["cuts"]
    done = [(s, e) for s, e, rc in cuts if rc == 0]
    if not done:
        sys.exit("pause: no snapshot was taken (%d tried)" % len(cuts))
    took = statistics.median(e - s for s, e in done)
    b0, blat, _ = runs["no cuts"]
    virtual = [(b0 + s - t0, b0 + e - t0) for s, e in done]
    out = {"cuts": windows(lat, done), "no cuts": windows(blat, virtual)}
    for phase, (slowest, inside) in out.items():
        name = "%s, %s" % (server, phase)
        all_lat = [d for _, d in runs[phase][1]]
        for row, v in (("QD1 4k write latency, p50 (us)", pct(all_lat, 50) * 1e6),
                       ("QD1 4k write latency, p99 (us)", pct(all_lat, 99) * 1e6),
                       ("writes in a cut window, p50 (us)", pct(inside, 50) * 1e6),
                       ("writes in a cut window, p99 (us)", pct(inside, 99) * 1e6),
                       ("slowest write of a cut window, p50 (ms)", pct(slowest, 50) * 1e3),
                       ("slowest write of a cut window, p99 (ms)", pct(slowest, 99) * 1e3),
                       ("slowest write of a cut window, max (ms)", max(slowest) * 1e3)):
            print("%s\t%s\t%.1f" % (row, name, v))
    name = "%s, cuts" % server
    print("snapshot create command, median (ms)\t%s\t%.1f" % (name, took * 1e3))
    print("cuts taken\t%s\t%d" % (name, len(done)))
    print("cuts refused or aborted\t%s\t%d" % (name, len(cuts) - len(done)))


def dirty(uri, seed, blocks, runs):
    rng = random.Random(int(seed))
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    chunks, written = set(), 0
    buf = rng.randbytes(1 << 20)
    for n, length in ((int(blocks), 4096), (int(runs), 1 << 20)):
        for _ in range(n):
            off = rng.randrange((size - length) // 4096 + 1) * 4096
            h.pwrite(buf[:length], off)
            chunks.update(range(off // CHUNK, (off + length - 1) // CHUNK + 1))
            written += length
    h.flush()
    h.shutdown()
    print(written, len(chunks))


if __name__ == "__main__":
    cmds = {"pause": (pause, 5), "dirty": (dirty, 4)}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds or len(sys.argv) - 2 < cmds[sys.argv[1]][1]:
        sys.exit(__doc__)
    cmds[sys.argv[1]][0](*sys.argv[2:])
