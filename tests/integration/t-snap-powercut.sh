#!/usr/bin/env bash
# t-snap-powercut: a power cut right after copies-on-write. A standalone
# vsand keeps its data dir on faultfs (as t-powercut), which on "crash"
# forgets every write not fsynced. The volume is written in full, s1 cut;
# writes A (4 KiB into each of 256 chunks, FUA for every fourth) and a
# FLUSH; s2 cut; writes B (into chunks A wrote and into others, FUA for
# some, no FLUSH), so every B write copies its chunk into s2 first; then
# the power cut, SIGKILL, remount, restart. After it s1 and s2 read
# exactly their content (each copy and its bit were durable before the
# data write), the live volume holds every FLUSHed and every FUA write,
# and each other chunk either the write or what was there before it.
# timeout: 90

if [ -z "${VT_OWN_MOUNTS:-}" ]; then
    VT_OWN_MOUNTS=1 exec unshare --mount --propagation private bash "$0" "$@"
fi
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

# shellcheck source=tests/integration/faultfs.sh
. "$VT_DIR/faultfs.sh"

vt_config
DISK="$T/node0/disk"
mkdir -p "$DISK"
faultfs_mount
vsand_start
expect_exit 0 vsan volume create v 16M
random_file "$T/a.raw" $((16 << 20))
nbdcopy -- "$T/a.raw" "$URI/v"
expect_exit 0 vsan snapshot create v s1

# A: 4 KiB at 4 KiB into each chunk 0..255. B: 8 KiB at 32 KiB into chunks
# 0..63 and 128..255 (each copied into s2 first), FUA for every eighth.
log "writes A, FLUSH, snapshot s2, writes B, power cut"
nbdpy "$URI/v" A <<'PY' || die "writes A failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
for k in range(256):
    h.pwrite(pattern(k + 1, 4096), (k << 16) + 4096, nbd.CMD_FLAG_FUA if k % 4 == 0 else 0)
h.flush()
PY
expect_exit 0 vsan snapshot create v s2
nbdpy "$URI/v" <<'PY' || die "writes B failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
for k in list(range(128, 256)) + list(range(64)):
    h.pwrite(pattern(1000 + k, 8192), (k << 16) + 32768, nbd.CMD_FLAG_FUA if k % 8 == 0 else 0)
PY
power_cut
vsand_start

nbdpy "$URI" "$T/a.raw" <<'PY' || die "the power cut broke a snapshot or lost a durable write"
import sys
from nbdtest import *
uri, a = sys.argv[1], open(sys.argv[2], "rb").read()

def read_all(h):
    return b"".join(h.pread(4 << 20, o) for o in range(0, 16 << 20, 4 << 20))

def first_diff(x, y):
    return next(o for o in range(0, len(x), 512) if x[o:o + 512] != y[o:o + 512])

s1 = read_all(connect_nbd(uri + "/v@s1"))
check(s1 == a, f"s1 differs at byte {0 if s1 == a else first_diff(s1, a)}")
want2 = bytearray(a)
for k in range(256):
    want2[(k << 16) + 4096:(k << 16) + 8192] = pattern(k + 1, 4096)
s2 = read_all(connect_nbd(uri + "/v@s2"))
check(s2 == want2, f"s2 differs at byte {0 if s2 == want2 else first_diff(s2, want2)}")
live = read_all(connect_nbd(uri + "/v"))
kept = lost = 0
for k in range(256):
    o = k << 16
    check(live[o + 4096:o + 8192] == pattern(k + 1, 4096), f"chunk {k}: the FLUSHed write A lost")
    if 128 <= k or k < 64:
        b = pattern(1000 + k, 8192)
        got = live[o + 32768:o + 40960]
        if k % 8 == 0:
            check(got == b, f"chunk {k}: the FUA write B lost")
        check(got in (b, bytes(a[o + 32768:o + 40960])), f"chunk {k}: B's range is neither")
        kept, lost = kept + (got == b), lost + (got != b)
    rest = bytearray(a[o:o + 65536])
    rest[4096:8192] = pattern(k + 1, 4096)
    check(live[o:o + 4096] == rest[:4096] and live[o + 8192:o + 32768] == rest[8192:32768]
          and live[o + 40960:o + 65536] == rest[40960:], f"chunk {k}: bytes nobody wrote changed")
print(f"writes B after the cut: {kept} kept, {lost} lost")
PY
log "s1, s2 exact; every durable write kept"
# a snapshot cut after the restart copies on write as before
expect_exit 0 vsan snapshot create v s3
nbdcopy -- "$URI/v" "$T/live.raw"
nbdpy "$URI/v" <<'PY'
import sys
from nbdtest import *
connect_nbd(sys.argv[1]).pwrite(pattern(7, 1 << 20), 0)
PY
nbdcopy -- "$URI/v@s3" "$T/s3.raw"
cmp "$T/live.raw" "$T/s3.raw" || die "s3, cut after the restart, differs"
vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
log "ok"
