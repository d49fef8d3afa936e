#!/usr/bin/env bash
# t-lab-fuse: vsan-fuse's failover on a 3-node lab (the demo of issue 5).
#
#  A replicated volume is mounted with vsan-fuse on the host, given the
#  three nodes; a loop device, mkfs.ext4 and files copied in. Then, while
#  fio (psync, O_DIRECT, crc32c verify) and a dd loop (conv=fsync) write
#  through the file system, the node serving the mount is killed
#  (`deploy/lab kill`): neither sees an error; the xattr names another node;
#  after a remount (so reads reach vsand, not the page cache) every file
#  matches its md5 and new files can be written; fsck is clean. The time
#  from the kill to the xattr naming the new node, and the longest fsync'd
#  dd write across it, are printed.
# timeout: 300
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

MiB=$((1024 * 1024))
FUSE="$BUILD/vsan-fuse"
[ -x "$FUSE" ] || die "no $FUSE: build first (make)"

LAB_VOL=f # the volume vs and states (labtest.sh) look at

# "ID ADDR" of the node serving the mount.
serving() {
    "$PY" -c 'import os, sys; print(os.getxattr(sys.argv[1], "user.vsan.node").decode())' "$T/fuse/f"
}

lab_up 3
lab vsan 1 volume create f 512M
wait_until 30 states_are 1 "current current current" ||
    lab_fail "f never became current everywhere: $(states 1)"

nodes=""
for i in 1 2 3; do
    a=$("$LAB" addr "$i")
    nodes+="${nodes:+,}${a#nbd://}"
done

log "mount with vsan-fuse --nodes $nodes"
mkdir -p "$T/fuse" "$T/mnt"
bg_start vsan-fuse "$FUSE" "$T/fuse" -f --nodes "$nodes" --volume f
FUSE_PID=$BG_PID
on_exit "fusermount3 -u -z '$T/fuse'"
wait_until 20 test -f "$T/fuse/f" || lab_fail "vsan-fuse did not mount: $(cat "$T/vsan-fuse.out")"
[ "$(stat -c %s "$T/fuse/f")" -eq $((512 * MiB)) ] || lab_fail "f has the wrong size"
first=$(serving)
log "served by node $first; --status: $("$FUSE" --status "$T/fuse")"
[[ $(serving) =~ ^[123]\ 198\. ]] || lab_fail "user.vsan.node: $(serving)"

log "loop + mkfs.ext4 + files"
LOOP=$(losetup -f --show "$T/fuse/f") || lab_fail "losetup failed"
on_exit "loop_release $LOOP '$T/fuse/f'"
mkfs.ext4 -q -F "$LOOP" || lab_fail "mkfs.ext4 failed"
mount "$LOOP" "$T/mnt" || lab_fail "mount failed"
on_exit "umount -l '$T/mnt'"
mkdir -p "$T/mnt/dir"
for i in $(seq 1 20); do
    head -c $((RANDOM * 40 + i)) /dev/urandom >"$T/mnt/dir/f$i"
done
head -c $((32 * MiB)) /dev/urandom >"$T/mnt/big"
sync -f "$T/mnt"
(cd "$T/mnt" && find . -type f ! -path './lost+found/*' -print0 | sort -z | xargs -0 md5sum) >"$T/sums"

log "fio and a dd loop write; the serving node is killed"
bg_start fio fio --name=w --filename="$T/mnt/fio.dat" --size=16M --rw=randwrite --bs=4k \
    --ioengine=psync --direct=1 --loops=4 --verify=crc32c --verify_fatal=1 --do_verify=1 \
    --verify_state_save=0
FIO=$BG_PID
# shellcheck disable=SC2016 # expanded by the loop's own bash
DD='
set -e
head -c 65536 /dev/urandom >"$1.src"
for i in $(seq 0 299); do
    s=$(date +%s%N)
    dd if="$1.src" of="$1" bs=64k count=1 seek=$((i % 32)) conv=notrunc,fsync status=none
    echo $((($(date +%s%N) - s) / 1000000))
done'
bg_start dd bash -c "$DD" dd "$T/mnt/dd.dat"
DDP=$BG_PID
# The kill lands under writes: the dd loop has had one through already.
wait_until 20 test -s "$T/dd.out" || lab_fail "the dd loop never wrote: $(cat "$T/dd.out")"
node=${first%% *}
t0=$(now_ms)
lab kill "$node"
moved() { [ "$(serving | cut -d' ' -f1)" != "$node" ]; }
wait_until 40 moved ||
    lab_fail "the mount still names node $node: $(cat "$T/vsan-fuse.out")"
moved=$(($(now_ms) - t0))
log "node $node killed; the mount moved to node $(serving) in $moved ms"
wait_until 120 proc_gone "$FIO" || lab_fail "fio is stuck"
wait "$FIO" || lab_fail "fio saw an error: $(tail -n 20 "$T/fio.out")"
wait_until 120 proc_gone "$DDP" || lab_fail "the dd loop is stuck"
wait "$DDP" || lab_fail "the dd loop saw an error: $(tail -n 5 "$T/dd.out")"
log "fio: no error, no verify failure; dd: 300 fsync'd writes, none failed, the longest $(sort -n "$T/dd.out" | tail -n 1) ms"
grep -q "now served by node" "$T/vsan-fuse.out" || lab_fail "vsan-fuse did not log the move"

log "remount: files read from vsand match; new files written; fsck clean"
umount "$T/mnt" || lab_fail "umount failed"
fsck.ext4 -fn "$LOOP" || lab_fail "fsck.ext4 found errors after the failover"
mount "$LOOP" "$T/mnt" || lab_fail "remount failed"
(cd "$T/mnt" && md5sum --quiet -c "$T/sums") || lab_fail "files differ after the failover"
head -c $((8 * MiB)) /dev/urandom >"$T/mnt/after"
md5sum "$T/mnt/after" >"$T/after.sum"
umount "$T/mnt" || lab_fail "second umount failed"
mount -o ro "$LOOP" "$T/mnt" || lab_fail "read-only remount failed"
md5sum --quiet -c "$T/after.sum" || lab_fail "the file written after the failover differs"
umount "$T/mnt" || lab_fail "third umount failed"
losetup -d "$LOOP" || lab_fail "losetup -d failed"
log "--status: $("$FUSE" --status "$T/fuse")"
wait_until 10 fuse_unmount "$T/fuse" || lab_fail "fusermount3 -u failed"
wait_until 10 proc_gone "$FUSE_PID" || lab_fail "vsan-fuse did not exit after unmount"
log "ok"
