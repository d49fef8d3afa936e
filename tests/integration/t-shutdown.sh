#!/usr/bin/env bash
# t-shutdown: graceful shutdown as the NBD protocol asks for it. A client
# keeps 8 writes in flight; SIGTERM arrives: requests the server already had
# complete normally, later ones get ESHUTDOWN (and nothing else), new
# connections are refused, and vsand exits 0 within the grace period even
# though the client never leaves. Every write it acknowledged is on disk
# after a restart. A second round: a client that leaves when told lets the
# daemon exit long before a (long) grace period.
# timeout: 120
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

GRACE_MS=2000

# shutdown_client MODE: runs the client against $URI/sd, which sends
# SIGTERM to vsand itself. MODE stay: keep writing, stay connected; MODE
# leave: disconnect at the first ESHUTDOWN. Acknowledged writes are listed
# in $T/acked as "offset seed".
shutdown_client() {
    nbdpy "$URI/sd" "$VSAND_PID" "$1" "$T/acked" "$GRACE_MS" <<'PY' || die "shutdown client ($1) failed"
import errno
import os
import signal
import sys
import time
from nbdtest import *

uri, pid, mode, acked_path, grace_ms = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
SLOT = 256 << 10
h = connect_nbd(uri)
slots = h.get_size() // SLOT
pending = {}   # cookie -> (offset, seed, submitted after the first ESHUTDOWN?)
acked = {}     # offset -> seed of the last acknowledged write
seq = 0
done_ok = done_after_kill = 0
kill_time = first_shutdown = None
late = []      # errors of commands submitted after the first ESHUTDOWN


def submit():
    global seq
    seq += 1
    off = (seq % slots) * SLOT
    cookie = h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(pattern(seq, SLOT))), off)
    pending[cookie] = (off, seq, first_shutdown is not None)


def reap():
    global done_ok, done_after_kill, first_shutdown
    for cookie in list(pending):
        try:
            if not h.aio_command_completed(cookie):
                continue
            err = 0
        except nbd.Error as e:
            err = e.errnum
        off, seed, is_late = pending.pop(cookie)
        if is_late:
            late.append(err)
            continue
        if err == 0:
            acked[off] = seed
            done_ok += 1
            if kill_time is not None:
                done_after_kill += 1
            continue
        check(err == errno.ESHUTDOWN,
              "write %d failed with %s, expected success or ESHUTDOWN" % (seed, errno.errorcode.get(err)))
        check(kill_time is not None, "ESHUTDOWN before SIGTERM was sent")
        if first_shutdown is None:
            first_shutdown = time.monotonic()


deadline = time.monotonic() + 60
while first_shutdown is None:
    check(time.monotonic() < deadline, "no ESHUTDOWN within 60 s (killed: %s)" % (kill_time is not None))
    while len(pending) < 8:
        submit()
    h.poll(-1)
    reap()
    if kill_time is None and done_ok >= 200:
        os.kill(pid, signal.SIGTERM)
        kill_time = time.monotonic()
check(done_after_kill > 0, "no request in flight at SIGTERM completed")

# After the server said ESHUTDOWN, everything new gets ESHUTDOWN too.
for _ in range(4):
    submit()
while pending:
    h.poll(-1)
    reap()
check(late and all(e == errno.ESHUTDOWN for e in late), "late requests got %r" % late)
expect_errno(errno.ESHUTDOWN, "FLUSH after ESHUTDOWN", h.flush)
expect_errno(errno.ESHUTDOWN, "READ after ESHUTDOWN", h.pread, 4096, 0)
try:
    connect_nbd(uri)
    raise Failure("a new connection was accepted during shutdown")
except nbd.Error:
    pass

with open(acked_path, "w") as f:
    for off, seed in sorted(acked.items()):
        f.write("%d %d\n" % (off, seed))
print("acked %d writes, %d completed after SIGTERM, %d late ones refused"
      % (done_ok, done_after_kill, len(late)), flush=True)

if mode == "leave":
    h.shutdown()
    sys.exit(0)
# Stay connected: the server must close the connection by itself once the
# grace period is over.
while not h.aio_is_closed() and not h.aio_is_dead():
    check(time.monotonic() - kill_time < grace_ms / 1000 + 5,
          "connection still open %d ms after SIGTERM" % (grace_ms + 5000))
    try:
        h.poll(1000)
    except nbd.Error:
        break
PY
}

# Every acknowledged write reads back after the restart.
check_acked() {
    nbdpy "$URI/sd" "$T/acked" <<'PY' || die "acknowledged writes lost"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
n = 0
for line in open(sys.argv[2]):
    off, seed = map(int, line.split())
    check(h.pread(256 << 10, off) == pattern(seed, 256 << 10),
          "acknowledged write %d at %d lost" % (seed, off))
    n += 1
check(n > 0, "no acknowledged writes to check")
print("ok: %d acknowledged writes intact" % n)
PY
}

log "SIGTERM with a client that stays connected (grace $GRACE_MS ms)"
vt_config nbd.shutdown_grace=$GRACE_MS
vsand_start
expect_exit 0 vsan volume create sd 256M
start=$SECONDS
shutdown_client stay
vsand_wait 5
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS after SIGTERM"
log "vsand exited 0 after $((SECONDS - start)) s"
vsand_start
check_acked

log "SIGTERM with a client that leaves: exit long before the grace period"
vsand_stop TERM
sed -i "s/^shutdown_grace = .*/shutdown_grace = 60000/" "$CONF"
vsand_start
start=$SECONDS
shutdown_client leave
vsand_wait 20
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS after SIGTERM"
log "vsand exited 0 after $((SECONDS - start)) s"
vsand_start
check_acked
vsand_stop TERM
log "ok"
