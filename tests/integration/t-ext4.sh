#!/usr/bin/env bash
# t-ext4: a real file system on a volume. nbdfuse exposes the volume as a
# file, a loop device turns it into a block device, ext4 goes on it: write
# files, unmount, fsck clean; then the volume's bytes are copied out with
# nbdcopy and checked again (fsck + checksums from a loop mount of the copy),
# so the data really is in vsand and not in some cache; finally it is
# mounted again through a new nbdfuse and read back and written.
# timeout: 180
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

MiB=1048576

# fuse_attach N: nbdfuse #N on $T/fuseN, and a loop device on its file in LOOP.
fuse_attach() {
    local dir="$T/fuse$1"
    mkdir -p "$dir"
    bg_start "nbdfuse$1" nbdfuse -P "$T/nbdfuse$1.pid" "$dir" "$URI/ext"
    FUSE_PID=$BG_PID
    on_exit "fusermount3 -u -z '$dir'"
    wait_until 20 test -s "$T/nbdfuse$1.pid" || die "nbdfuse not ready: $(cat "$T/nbdfuse$1.out")"
    [ "$(stat -c %s "$dir/nbd")" -eq $((256 * MiB)) ] || die "nbdfuse file has the wrong size"
    LOOP=$(losetup -f --show "$dir/nbd") || die "losetup on the nbdfuse file failed"
    on_exit "loop_release $LOOP '$dir/nbd'"
}

fuse_detach() {
    losetup -d "$LOOP" || die "losetup -d $LOOP failed"
    wait_until 10 fuse_unmount "$T/fuse$1" || die "fusermount3 -u $T/fuse$1 failed"
    wait_until 10 proc_gone "$FUSE_PID" || die "nbdfuse did not exit after unmount"
}

mount_fs() {
    mkdir -p "$T/mnt"
    mount "$@" "$T/mnt" || die "mount $* failed"
    on_exit "umount -l '$T/mnt'"
}

write_files() {
    local i
    mkdir -p "$T/mnt/dir/sub"
    for i in $(seq 1 24); do
        head -c $((RANDOM * 100 + i)) /dev/urandom >"$T/mnt/dir/file$i"
    done
    head -c $((20 * MiB)) /dev/urandom >"$T/mnt/dir/sub/big"
    echo "hello vsan" >"$T/mnt/hello.txt"
    (cd "$T/mnt" && find . -type f ! -path './lost+found/*' -print0 | sort -z |
        xargs -0 sha256sum) >"$T/sums"
    [ "$(wc -l <"$T/sums")" -eq 26 ] || die "expected 26 files, checksummed $(wc -l <"$T/sums")"
}

verify_files() {
    (cd "$T/mnt" && sha256sum --quiet -c "$T/sums") || die "file contents differ after $1"
}

vt_config
vsand_start
expect_exit 0 vsan volume create ext 256M

log "nbdfuse + loop + mkfs.ext4 + write files"
fuse_attach 1
mkfs.ext4 -q -F "$LOOP" || die "mkfs.ext4 failed"
mount_fs "$LOOP"
write_files
umount "$T/mnt" || die "umount failed"
fsck.ext4 -fn "$LOOP" || die "fsck.ext4 found errors after unmount"
fuse_detach 1

log "the volume's own bytes: nbdcopy out, fsck, loop-mount the copy, checksums"
nbdcopy "$URI/ext" "$T/copy.img" || die "nbdcopy of the volume failed"
fsck.ext4 -fn "$T/copy.img" || die "fsck.ext4 of the copied volume found errors"
mount_fs -o loop,ro "$T/copy.img"
verify_files "copy out with nbdcopy"
umount "$T/mnt" || die "umount of the copy failed"

log "mount again through a new nbdfuse, read back, write more"
fuse_attach 2
mount_fs "$LOOP"
verify_files "remount"
head -c $((5 * MiB)) /dev/urandom >"$T/mnt/more"
sha256sum "$T/mnt/more" >"$T/more.sum"
umount "$T/mnt" || die "second umount failed"
fsck.ext4 -fn "$LOOP" || die "fsck.ext4 found errors after the second session"
mount_fs -o ro "$LOOP"
verify_files "second session"
sha256sum --quiet -c "$T/more.sum" || die "file written in the second session differs"
umount "$T/mnt" || die "third umount failed"
fuse_detach 2

vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
log "ok"
