#!/usr/bin/env bash
# t-lab-snap-enospc: on a 3-node lab, n3's pool (a tmpfs with size=) has
# no room for copy-on-write. Snapshot s is cut, n3's file system filled;
# then writes through n1 into many chunks, each needing a copy into s on
# every replica: n3's copy fails, so n3's replica is no longer current,
# and every write succeeds on n1 and n2 (ENOSPC only if no current replica
# could take it). a@s reads exactly its content through every node (n3
# reads it from a current copy), the live volume the writes; once n3 has
# room again, a replace brings its copy back, s and the writes with it.
# timeout: 180

if [ -z "${VT_OWN_MOUNTS:-}" ]; then
    VT_OWN_MOUNTS=1 exec unshare --mount --propagation private bash "$0" "$@"
fi
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

LAB_VOL=a

N3="$VSAN_LAB_DIR/n3/data"
on_exit "umount -l '$N3'" # (after the lab is down: cleanups run last first)
lab_up 3
[ -d "$N3" ] || lab_fail "no $N3: the lab's layout changed"
log "n3's pool on a tmpfs of 48 MiB"
lab stop 3
mv "$N3" "$N3.disk"
mkdir "$N3"
mount -t tmpfs -o size=48M vsan-lab-enospc "$N3"
cp -a "$N3.disk/." "$N3/"
lab start 3
lab vsan 1 volume create a 16M
wait_until 30 all_current || lab_fail "a never became current everywhere: $(states 1)"
random_file "$T/a.raw" $((16 << 20))
nbdcopy -- "$T/a.raw" "$(addr 1)/a"
lab vsan 1 snapshot create a s

log "n3's file system full; writes into 256 chunks through n1"
dd if=/dev/zero of="$N3/ballast" bs=64k status=none 2>/dev/null || true
truncate -s -128K "$N3/ballast"
nbdpy "$(addr 1)/a" <<'PY' || lab_fail "a write failed though n1 and n2 had room"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
for k in range(256):
    h.pwrite(pattern(k + 1, 4096), k << 16)
h.flush()
PY
log "replicas as n1 sees them: $(states 1)"
[ "$(states 1)" = "current current outdated" ] || lab_fail "n3 still current without room for its copies"
grep -q 'No space left' "$VSAN_LAB_DIR/n3/vsand.log" || lab_fail "n3 logged no ENOSPC"
"$PY" - "$T/a.raw" "$T/b.raw" <<'PY'
import struct, sys
def pattern(seed, length):
    block = b"".join(struct.pack(">QQ", seed, i) for i in range(length // 16 + 1))
    return block[:length]
b = bytearray(open(sys.argv[1], "rb").read())
for k in range(256):
    b[k << 16:(k << 16) + 4096] = pattern(k + 1, 4096)
open(sys.argv[2], "wb").write(b)
PY
for i in 1 2 3; do
    same "$i" a@s "$T/a.raw" || lab_fail "a@s through n$i differs from its content"
    same "$i" a "$T/b.raw" || lab_fail "a through n$i lacks the writes"
done

log "room on n3 again: a replace brings its copy back"
rm -f "$N3/ballast"
lab vsan 3 replica replace a
wait_until 60 all_current || lab_fail "n3 not current after its replace: $(states 1)"
for i in 1 2 3; do
    same "$i" a@s "$T/a.raw" || lab_fail "a@s through n$i differs after the replace"
    same "$i" a "$T/b.raw" || lab_fail "a through n$i differs after the replace"
done
log "ok"
