"""failover.py - one failover time (see failover.sh): writes through node 1,
injects FAULT with deploy/lab, then writes through the next node that
answers, resending the write in doubt, and prints the milliseconds from the
fault to the first acknowledged write through a survivor.

Usage: failover.py LAB FAULT URI1 URI2 URI3
"""

import subprocess
import sys
import time

import nbd

from nbdtest import pattern

TIMEOUT = 0.3  # a write unanswered this long counts as failed
GIVE_UP = 30.0
BLOCK = 4096


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def write(h, seq, deadline):
    """True once the write is acknowledged before deadline."""
    cookie = h.aio_pwrite(pattern(seq, BLOCK), (seq % 4096) * BLOCK)
    while time.monotonic() < deadline:
        h.poll(int(max(1, (deadline - time.monotonic()) * 1000)))
        if h.aio_command_completed(cookie):
            return True
    return False


def main():
    lab, fault, uris = sys.argv[1], sys.argv[2], sys.argv[3:]
    h = connect(uris[0])
    seq = 0
    for _ in range(200):  # node 1 holds these regions now
        if not write(h, seq, time.monotonic() + 5):
            sys.exit("failover: writes through node 1 are not acknowledged")
        seq += 1
    action = {"kill": ["kill", "1"], "stop": ["stop", "1"], "cut": ["cut", "1"]}[fault]
    t0 = time.monotonic()
    subprocess.run([lab] + action, check=True, stdout=subprocess.DEVNULL)
    target = 0
    while time.monotonic() - t0 < GIVE_UP:
        try:
            if h is None:
                h = connect(uris[target])
            if write(h, seq, time.monotonic() + TIMEOUT):
                if target != 0:
                    print(round((time.monotonic() - t0) * 1000))
                    return
                seq += 1  # node 1 still answers: the fault has not bitten yet
                continue
        except nbd.Error:
            pass
        h = None  # no answer or an error: the next node, the same write again
        target = target % (len(uris) - 1) + 1
    sys.exit("failover: no write acknowledged through a survivor in %d s" % GIVE_UP)


main()
