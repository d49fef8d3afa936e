#!/usr/bin/env bash
# t-snap-enospc: a standalone vsand whose data dir (a tmpfs with size=)
# has no room for copy-on-write. The volume is fully written, snapshot s
# cut, and the file system filled but for a few chunks (a ballast file);
# then 4 KiB writes, each into another 64 KiB chunk, each needing a copy
# into s's side file: once the room is gone a write fails with ENOSPC,
# never with another error, and never is a write acknowledged that does
# not read back. Snapshot s reads exactly its content all along (a copy
# that could not be made must not let the write through); once room is
# made, the failed writes succeed, s is still exact, also after a restart,
# and a new snapshot works.
# timeout: 60

# In a mount namespace of its own: the tmpfs goes with the test.
if [ -z "${VT_OWN_MOUNTS:-}" ]; then
    VT_OWN_MOUNTS=1 exec unshare --mount --propagation private bash "$0" "$@"
fi
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

vt_config
mount -t tmpfs -o size=40M vsan-enospc "$DATA"
on_exit "umount -l '$DATA'"
vsand_start
expect_exit 0 vsan volume create v 16M
random_file "$T/a.raw" $((16 << 20))
nbdcopy -- "$T/a.raw" "$URI/v"
expect_exit 0 vsan snapshot create v s

# Every byte but FREE_KIB KiB of the file system goes to the ballast.
fill() {
    rm -f "$DATA/ballast"
    dd if=/dev/zero of="$DATA/ballast" bs=64k status=none 2>/dev/null || true
    local free
    free=$("$PY" -c 'import os, sys; s = os.statvfs(sys.argv[1]); print(s.f_bavail * s.f_frsize)' "$DATA")
    [ "$free" -lt 65536 ] || die "the file system still has $free bytes free after the ballast"
    truncate -s "-${FREE_KIB}K" "$DATA/ballast"
}

# snap_exact: s reads exactly a.raw.
snap_exact() {
    nbdcopy -- "$URI/v@s" "$T/s.raw" && cmp "$T/s.raw" "$T/a.raw"
}

log "a full file system: 4 KiB writes into 256 chunks, each copied on write"
FREE_KIB=256
fill
nbdpy "$URI/v" "$T/outcome" <<'PY' || die "the writes into a full file system broke a rule"
import errno, sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
ok, nospace = [], []
for k in range(256):
    try:
        h.pwrite(pattern(k + 1, 4096), k << 16)
        ok.append(k)
    except nbd.Error as e:
        check(e.errnum == errno.ENOSPC, f"chunk {k}: failed with {e.errno} ({e.string}), not ENOSPC")
        nospace.append(k)
try:
    h.flush()
except nbd.Error as e:
    check(e.errnum == errno.ENOSPC, f"flush failed with {e.errno} ({e.string})")
for k in ok:
    check(h.pread(4096, k << 16) == pattern(k + 1, 4096), f"chunk {k}: acknowledged, reads otherwise")
print(f"{len(ok)} writes done, {len(nospace)} failed with ENOSPC")
check(ok and nospace, "the file system was not full, or never had room")
open(sys.argv[2], "w").write(" ".join(map(str, ok)) + "\n" + " ".join(map(str, nospace)) + "\n")
PY
log "$(wc -w <<<"$(sed -n 1p "$T/outcome")") written, $(wc -w <<<"$(sed -n 2p "$T/outcome")") refused"
snap_exact || die "snapshot s damaged by the writes that found no room"
grep -qi 'ENOSPC\|No space' "$LOG" || die "vsand logged nothing about the full file system"

log "room again: the refused writes go through, s stays exact"
rm -f "$DATA/ballast"
nbdpy "$URI/v" "$T/a.raw" <<'PY' || die "writes after room was made failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
for k in range(256):
    h.pwrite(pattern(k + 1, 4096), k << 16)
h.flush()
a = open(sys.argv[2], "rb").read()
for k in range(256):
    got = h.pread(1 << 16, k << 16)
    check(got == pattern(k + 1, 4096) + a[(k << 16) + 4096 : (k + 1) << 16], f"chunk {k} reads wrong")
PY
snap_exact || die "snapshot s damaged once room was made"
vsand_stop TERM
vsand_start
snap_exact || die "snapshot s damaged after a restart"
expect_exit 0 vsan snapshot create v s2
nbdcopy -- "$URI/v" "$T/live.raw"
nbdcopy -- "$URI/v@s2" "$T/s2.raw"
cmp "$T/live.raw" "$T/s2.raw" || die "a new snapshot differs from the live volume"
vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
log "ok"
