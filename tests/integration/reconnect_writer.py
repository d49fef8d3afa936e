"""reconnect_writer.py URI EVENTS STOP - a client that knows one address.

It writes 4 KiB blocks in a loop and, whenever the connection fails (an
ESHUTDOWN reply, a reset, a refused connect), reconnects to the same URI
and goes on, as qemu with reconnect-delay or nbd-client -persist do. It
stops once the file STOP exists. EVENTS gets one line per change of state,
"MS EVENT WRITES [DETAIL]" with MS the wall clock in ms:

  ok N        the first write that succeeded on a new connection
  error N     the first failure after a success, with libnbd's message
  progress N  every PROGRESS-th write that succeeded, so that a test can
              wait for writes to go on rather than sleep and hope

Each block holds the count of writes before it; the last block written is
read back before it stops ("verified" or "mismatch"). Run with
/usr/bin/python3 (the one with the nbd module).
"""

import os
import struct
import sys
import time

import nbd

BLOCK = 4096
BLOCKS = 1024
PROGRESS = 100


def now_ms():
    return int(time.time() * 1000)


def main():
    uri, events, stop = sys.argv[1:4]
    log = open(events, "a", buffering=1)

    def event(what, n, detail=""):
        log.write(f"{now_ms()} {what} {n} {detail}".rstrip() + "\n")

    h = None
    writes = 0
    fresh = True
    failing = False
    last = None
    while not os.path.exists(stop):
        try:
            if h is None:
                h = nbd.NBD()
                h.set_uri_allow_local_file(True)  # nbds://...?tls-certificates=DIR
                h.connect_uri(uri)
                fresh = True
            buf = struct.pack("<Q", writes) * (BLOCK // 8)
            offset = (writes % BLOCKS) * BLOCK
            h.pwrite(buf, offset)
            last = (buf, offset)
            writes += 1
            if fresh:
                event("ok", writes)
                fresh = False
                failing = False
            elif writes % PROGRESS == 0:
                event("progress", writes)
        except nbd.Error as e:
            if not failing:
                event("error", writes, str(e).replace("\n", " "))
                failing = True
            h = None
            time.sleep(0.02)
    if h is not None and last is not None:
        buf, offset = last
        event("verified" if h.pread(BLOCK, offset) == buf else "mismatch", writes)
        h.shutdown()
    event("stopped", writes)


if __name__ == "__main__":
    main()
