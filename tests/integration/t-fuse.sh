#!/usr/bin/env bash
# t-fuse: vsan-fuse against a standalone vsand. Two volumes mounted as two
# files (size right, a dd/cmp round trip), then a loop device, mkfs.ext4,
# files copied in, fsck clean; the serving node in the xattr and in
# `vsan-fuse --status`; the export description it reads names the node;
# a resize reaches the mount without a remount (a write past the old end,
# the new size in stat);
# a bad --nodes entry or an unknown volume is refused before mounting, with
# a message naming it; a vsand restarted under a writer costs the writer no
# error (the request waits and goes again); unmounting ends the process.
# timeout: 180
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

MiB=1048576
FUSE="$BUILD/vsan-fuse"
[ -x "$FUSE" ] || die "no $FUSE: build first (make)"

# mount_fuse ARGS...: vsan-fuse -f on $T/fuse in the background; waits
# until its files are there.
mount_fuse() {
    mkdir -p "$T/fuse"
    bg_start vsan-fuse "$FUSE" "$T/fuse" -f "$@"
    FUSE_PID=$BG_PID
    on_exit "fusermount3 -u -z '$T/fuse'"
    wait_until 20 test -f "$T/fuse/a" || die "vsan-fuse did not mount: $(cat "$T/vsan-fuse.out")"
}

unmount_fuse() {
    wait_until 10 fuse_unmount "$T/fuse" || die "fusermount3 -u $T/fuse failed"
    wait_until 10 proc_gone "$FUSE_PID" || die "vsan-fuse did not exit after unmount"
}

vt_config
vsand_start
expect_exit 0 vsan volume create a 128M
expect_exit 0 vsan volume create b 16M

log "the export description names this node's NBD address"
desc=$(nbdinfo --json "$URI/a" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["description"])')
[[ $desc == *" replicas=1@127.0.0.1:$PORT" ]] || die "description: $desc"

log "bad arguments are refused before mounting"
mkdir -p "$T/fuse"
expect_exit 2 "$FUSE" "$T/fuse" --nodes "127.0.0.1:$PORT,bad-node"
expect_out '"bad-node"'
expect_exit 2 "$FUSE" "$T/fuse" --nodes "127.0.0.1:0"
expect_out '"127.0.0.1:0"'
expect_exit 2 "$FUSE" "$T/fuse"
expect_out 'nodes is required'
expect_exit 1 "$FUSE" "$T/fuse" --nodes "127.0.0.1:$PORT" --volume nosuch
expect_out 'volume "nosuch": no node of --nodes serves it'
mountpoint -q "$T/fuse" && die "a refused vsan-fuse mounted anyway"

log "every volume is a file of its size; dd/cmp round trip"
mount_fuse --nodes "127.0.0.1:$PORT"
# shellcheck disable=SC2012 # names we chose
[ "$(ls "$T/fuse" | tr '\n' ' ')" = "a b " ] || die "files: $(ls "$T/fuse")"
[ "$(stat -c %s "$T/fuse/a")" -eq $((128 * MiB)) ] || die "a has the wrong size"
[ "$(stat -c %s "$T/fuse/b")" -eq $((16 * MiB)) ] || die "b has the wrong size"
random_file "$T/in" $((3 * MiB + 4096))
dd if="$T/in" of="$T/fuse/b" bs=64k seek=3 oflag=seek_bytes conv=notrunc,fsync status=none ||
    die "dd into b failed"
cmp -n $((3 * MiB + 4096)) "$T/in" <(nbdcopy "$URI/b" - | tail -c +4) ||
    die "b's bytes in vsand differ from what dd wrote"
cmp -n $((3 * MiB + 4096)) "$T/in" <(tail -c +4 "$T/fuse/b") || die "reading b back differs"

log "xattr and --status name the serving node"
node=$("$PY" -c 'import os,sys; print(os.getxattr(sys.argv[1], "user.vsan.node").decode())' "$T/fuse/a")
[ "$node" = "1 127.0.0.1:$PORT" ] || die "user.vsan.node: $node"
expect_exit 0 "$FUSE" --status "$T/fuse"
[ "$OUT" = "a  node 1 127.0.0.1:$PORT
b  node 1 127.0.0.1:$PORT" ] || die "--status said: $OUT"

log "loop + mkfs.ext4 + files + fsck"
LOOP=$(losetup -f --show "$T/fuse/a") || die "losetup on the vsan-fuse file failed"
on_exit "loop_release $LOOP '$T/fuse/a'"
mkfs.ext4 -q -F "$LOOP" || die "mkfs.ext4 failed"
mkdir -p "$T/mnt"
mount "$LOOP" "$T/mnt" || die "mount failed"
on_exit "umount -l '$T/mnt'"
mkdir -p "$T/mnt/dir"
for i in $(seq 1 12); do
    head -c $((RANDOM * 50 + i)) /dev/urandom >"$T/mnt/dir/f$i"
done
head -c $((16 * MiB)) /dev/urandom >"$T/mnt/big"
(cd "$T/mnt" && find . -type f ! -path './lost+found/*' -print0 | sort -z | xargs -0 md5sum) >"$T/sums"
rm -f "$T/mnt/dir/f1"
sync -f "$T/mnt"
umount "$T/mnt" || die "umount failed"
fsck.ext4 -fn "$LOOP" || die "fsck.ext4 found errors"
mount -o ro "$LOOP" "$T/mnt" || die "read-only remount failed"
grep -v '/dir/f1$' "$T/sums" >"$T/sums2"
(cd "$T/mnt" && md5sum --quiet -c "$T/sums2") || die "files differ after remount"
umount "$T/mnt" || die "second umount failed"
losetup -d "$LOOP" || die "losetup -d failed"

log "vsand restarted under a writer: no error"
# The writer goes on until told to stop, so the restart always falls in
# the middle of it; it counts its writes in writer.count.
# shellcheck disable=SC2016 # expanded by the writer's own bash
WRITER='
set -e
i=0
while [ ! -e "$3" ]; do
    dd if="$1" of="$2" bs=64k count=1 seek=$((i % 64)) conv=notrunc,fsync status=none
    i=$((i + 1))
    echo "$i" >"$3.count"
done'
head -c $((64 * 1024)) /dev/urandom >"$T/blk"
bash -c "$WRITER" writer "$T/blk" "$T/fuse/b" "$T/writer" >"$T/writer.out" 2>&1 &
WPID=$!
on_exit "kill $WPID"
writes() { cat "$T/writer.count" 2>/dev/null || echo 0; }
writes_reach() { [ "$(writes)" -ge "$1" ]; }
wait_until 20 writes_reach 5 || die "the writer does not write: $(cat "$T/writer.out")"
vsand_stop KILL
proc_alive "$WPID" || die "the writer ended before the restart: $(cat "$T/writer.out")"
before=$(writes)
vsand_start
wait_until 30 writes_reach $((before + 5)) || die "the writer is stuck after the restart"
touch "$T/writer"
wait "$WPID" || die "the writer saw an error across the restart: $(cat "$T/writer.out")"
last=$((($(writes) - 1) % 64))
cmp -n $((64 * 1024)) "$T/blk" <(nbdcopy "$URI/b" - | tail -c +$((last * 65536 + 1))) ||
    die "the last block written is not in vsand"
grep -q "volume \"b\": node 1 (127.0.0.1:$PORT)" "$T/vsan-fuse.out" ||
    die "vsan-fuse logged nothing about the restart: $(cat "$T/vsan-fuse.out")"

log "a resize reaches the mount without a remount"
# b grows; a write past its old end succeeds at once (vsan-fuse re-reads
# the size of a request past the end it knows); a grows, and stat shows it
# within the watcher's period (5 s), the kernel's cached attributes
# invalidated.
expect_exit 0 vsan volume resize b 32M
random_file "$T/past" $MiB
dd if="$T/past" of="$T/fuse/b" bs=64k seek=$((20 * MiB)) oflag=seek_bytes conv=notrunc,fsync \
    status=none || die "a write past b's old end failed: $(cat "$T/vsan-fuse.out")"
cmp "$T/past" <(nbdcopy "$URI/b" - | tail -c +$((20 * MiB + 1)) | head -c $MiB) ||
    die "what was written past b's old end is not in vsand"
size_is() { [ "$(stat -c %s "$1")" -eq "$2" ]; }
size_is "$T/fuse/b" $((32 * MiB)) || die "b's size in the mount: $(stat -c %s "$T/fuse/b")"
expect_exit 0 vsan volume resize a 192M
wait_until 12 size_is "$T/fuse/a" $((192 * MiB)) ||
    die "a's size in the mount is still $(stat -c %s "$T/fuse/a") after its resize to 192 MiB"
grep -q 'volume "a": its size is 201326592 bytes now' "$T/vsan-fuse.out" ||
    die "vsan-fuse logged nothing about a's new size"

log "unmount ends vsan-fuse"
unmount_fuse

log "daemonized: returns once mounted, files there at once"
"$FUSE" "$T/fuse" --nodes "127.0.0.1:$PORT" --volume b || die "vsan-fuse (daemon) failed"
[ "$(ls "$T/fuse")" = "b" ] || die "with --volume b: $(ls "$T/fuse")"
[ "$(stat -c %s "$T/fuse/b")" -eq $((32 * MiB)) ] || die "b has the wrong size (daemon)"
wait_until 10 fuse_unmount "$T/fuse" || die "unmount of the daemon's mount failed"

vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
log "ok"
