#!/usr/bin/env bash
# t-powercut: a power cut, not only a SIGKILL. A standalone vsand keeps its
# data dir on faultfs (tests/tools/faultfs.c), which on "crash" forgets
# every write not fsynced and every directory change not made durable by a
# directory fsync; vsand is SIGKILLed at once, the fault layer remounted
# and vsand restarted. A killed process alone keeps the page cache, so
# only this shows that FLUSH, FUA and the store's commits reach the disk.
#  1. Writes through NBD, some followed by FLUSH (and a WRITE_ZEROES before
#     it), some with FUA, some plain, a committed create and resize: after
#     the cut every FLUSHed and FUA write reads back, the zeroed range reads
#     zero, the volume table is what it was, and a plain write is gone (so
#     the cut did cut). The reads go through FUSE, where preadv2(RWF_NOWAIT)
#     fails with EOPNOTSUPP: vsand must read the slow way, and says so once.
#  2. A cut during admin churn (create, resize, delete): the pool opens,
#     every volume whose create returned and whose delete was not begun is
#     listed, every listed one serves its size and takes writes, and no
#     temporary file is left.
#  3. The other faults: with "eio" a FUA write fails with EIO; with "hang"
#     one waits (while vsand answers other clients) until "ok".
# timeout: 180

# In a mount namespace of its own: a namespace made meanwhile (the lab's
# `ip netns exec`) would copy the fault layer's mount and keep it alive
# after the unmount here, and the mounts go with the test however it ends.
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

log "writes with FLUSH, with FUA and without, then a power cut"
expect_exit 0 vsan volume create flushed 64M
expect_exit 0 vsan volume create fua 32M
expect_exit 0 vsan volume create plain 16M
expect_exit 0 vsan volume resize fua 48M
volume_table >"$T/table"
nbdpy "$URI" <<'PY' || die "the writes failed"
import sys
from nbdtest import *
uri = sys.argv[1]
f = connect_nbd(uri + "/flushed")
f.pwrite(pattern(1, 1 << 20), 0)
f.pwrite(pattern(2, 4096), 5 << 20)
f.pwrite(pattern(3, 3 << 20), (40 << 20) + 512)
f.pwrite(pattern(4, 1 << 20), 20 << 20)
f.zero(1 << 20, 20 << 20)
f.flush()
# after the flush: may survive the cut or not
f.pwrite(pattern(5, 4096), 0)
f.pwrite(pattern(6, 1 << 20), 30 << 20)
u = connect_nbd(uri + "/fua")
u.pwrite(pattern(7, 1 << 20), 0, nbd.CMD_FLAG_FUA)
u.pwrite(pattern(8, 4096), (47 << 20) + 4096, nbd.CMD_FLAG_FUA)
p = connect_nbd(uri + "/plain")
p.pwrite(pattern(9, 1 << 20), 0)
PY
power_cut
vsand_start
volume_table >"$T/table.now"
diff "$T/table" "$T/table.now" >&2 || die "the volume table changed across the power cut"
nbdpy "$URI" <<'PY' || die "data lost in the power cut"
import sys
from nbdtest import *
uri = sys.argv[1]
f = connect_nbd(uri + "/flushed")
check(f.pread(4096, 0) in (pattern(1, 4096), pattern(5, 4096)), "flushed: block 0 is neither version")
check(f.pread((1 << 20) - 4096, 4096) == pattern(1, 1 << 20)[4096:], "flushed: first MiB lost")
check(f.pread(4096, 5 << 20) == pattern(2, 4096), "flushed: the 4 KiB at 5 MiB lost")
check(f.pread(3 << 20, (40 << 20) + 512) == pattern(3, 3 << 20), "flushed: the unaligned 3 MiB lost")
check(f.pread(1 << 20, 20 << 20) == bytes(1 << 20), "flushed: the zeroed MiB is not zero")
check(f.get_size() == 64 << 20, "flushed: wrong size")
u = connect_nbd(uri + "/fua")
check(u.get_size() == 48 << 20, "fua: the committed resize is lost")
check(u.pread(1 << 20, 0) == pattern(7, 1 << 20), "fua: the FUA MiB at 0 lost")
check(u.pread(4096, (47 << 20) + 4096) == pattern(8, 4096), "fua: the FUA block past the old end lost")
p = connect_nbd(uri + "/plain")
check(p.pread(1 << 20, 0) == bytes(1 << 20),
      "plain: a write never flushed survived: the power cut cut nothing")
PY
grep -q 'preadv2(RWF_NOWAIT) unsupported by the file system' "$LOG" ||
    die "vsand never found preadv2(RWF_NOWAIT) unsupported on FUSE"

log "a power cut during admin churn"
# Each line of churn.log is written once the command before it returned:
# "created N" after a create of churnN returned 0, "deleting N" before
# churnN's delete is sent.
# shellcheck disable=SC2016 # expanded by the inner shell
bg_start churn bash -c '
    i=0
    while :; do
        i=$((i + 1))
        "$0" -s "$1" volume create "churn$i" 16M && echo "created $i" >>"$2"
        "$0" -s "$1" volume resize "churn$i" 32M
        "$0" -s "$1" volume resize "churn$((i - 1))" 8M --force
        echo "deleting $((i - 2))" >>"$2"
        "$0" -s "$1" volume delete "churn$((i - 2))"
    done' "$VSAN" "$ADMIN" "$T/churn.log"
CHURN=$BG_PID
churned() {
    [ -f "$T/churn.log" ] && [ "$(grep -c '^created' "$T/churn.log")" -ge 10 ]
}
wait_until 60 churned || die "admin churn made no progress: $(tail -n 5 "$T/churn.out")"
power_cut
bg_kill "$CHURN"
vsand_start
volume_table >"$T/table"
while read -r n; do
    grep -qx "deleting $n" "$T/churn.log" && continue
    grep -q "^churn$n " "$T/table" || die "volume churn$n, created before the cut, is gone"
done < <(sed -n 's/^created //p' "$T/churn.log")
while read -r name size _; do
    [ "$(nbd_size "$name")" = "$size" ] || die "$name served at $(nbd_size "$name"), listed $size"
    case $name in flushed | fua | plain) continue ;; esac
    nbdpy "$URI/$name" <<'PY' || die "$name does not take writes"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(9, 4096), 0)
h.flush()
check(h.pread(4096, 0) == pattern(9, 4096), "written block reads back wrong")
PY
done <"$T/table"
tmps=$(find "$DATA/volumes" -name '*.tmp' | wc -l)
[ "$tmps" -eq 0 ] || die "$tmps temporary files left in the pool"
log "a failing disk, then a hung one"
echo eio >"$DATA/.faultfs-ctl"
nbdpy "$URI/flushed" <<'PY' || die "a write to a failing disk did not fail with EIO"
import errno, sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
expect_errno(errno.EIO, "write to a failing disk", h.pwrite, pattern(10, 4096), 8 << 20,
             nbd.CMD_FLAG_FUA)
PY
echo hang >"$DATA/.faultfs-ctl"
# (a background job's stdin is /dev/null: the script goes in a file)
cat >"$T/hung.py" <<'PY'
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(10, 4096), 8 << 20, nbd.CMD_FLAG_FUA)
check(h.pread(4096, 8 << 20) == pattern(10, 4096), "the write held by the hung disk reads back wrong")
PY
bg_start hung env PYTHONPATH="$VT_DIR" "$PY" "$T/hung.py" "$URI/flushed"
HUNG=$BG_PID
disk_waits() {
    grep -Eq '^hang [1-9]' "$DATA/.faultfs-ctl"
}
wait_until 20 disk_waits || die "no operation waits on the hung disk: $(cat "$T/hung.out")"
nbdinfo --size "$URI/fua" >/dev/null || die "vsand stopped answering while its disk hangs"
proc_alive "$HUNG" || die "a write to a hung disk returned: $(cat "$T/hung.out")"
echo ok >"$DATA/.faultfs-ctl"
wait_until 20 proc_gone "$HUNG" || die "the hung write did not finish once the disk came back"
wait "$HUNG" || die "the hung write failed once the disk came back: $(cat "$T/hung.out")"

vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
log "ok"
