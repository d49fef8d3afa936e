#!/usr/bin/env bash
# t-snap-reflink: copy-on-write by FICLONERANGE. The other snapshot tests
# keep their data on tmpfs or ext4, where the store copies; here a
# standalone vsand keeps it on XFS (reflink=1) and then on btrfs, each on
# a loop device, where a chunk's copy shares the live file's blocks. On
# each: 30 snapshots of one volume with writes between them (snapmodel.py)
# read exactly their content, the side files share blocks with the data
# file (filefrag's "shared": the clone path ran) and vsand never fell back
# to copying; deletes from the middle merge, and a restart keeps it all.
# On XFS then a power cut: the file system is shut down without writing
# its log (xfs_io's shutdown, as a lost disk cache), after the last
# writes were flushed; after its log recovery every snapshot still reads
# its content (each clone and its bit were durable before the write).
# timeout: 180
if [ -z "${VT_OWN_MOUNTS:-}" ]; then
    VT_OWN_MOUNTS=1 exec unshare --mount --propagation private bash "$0" "$@"
fi
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

N=30
DELETED=3,6,9,10,11,12,30

model() {
    PYTHONPATH="$VT_DIR" "$PY" "$VT_DIR/snapmodel.py" "$@"
}

# fs_mount FS: a new node whose data dir is a fresh FS on a loop device.
fs_mount() {
    vt_config
    truncate -s 512M "$T/$1.img" || die "cannot make $T/$1.img"
    case $1 in
    xfs) mkfs.xfs -q -f -m reflink=1 "$T/$1.img" ;;
    btrfs) mkfs.btrfs -q -f "$T/$1.img" >/dev/null ;;
    esac || die "mkfs.$1 failed"
    mount -o loop "$T/$1.img" "$DATA" || die "cannot mount $1 on a loop device"
    on_exit "umount -l '$DATA'"
}

# shared_blocks: some side file shares extents with the data file.
shared_blocks() {
    local f
    for f in "$DATA"/snapshots/*.data; do
        filefrag -v "$f" 2>/dev/null | grep -q shared && return 0
    done
    return 1
}

# snapshots_on FS: the snapshot checks with the data on FS.
snapshots_on() {
    log "$1: $N snapshots with writes between them"
    fs_mount "$1"
    vsand_start
    expect_exit 0 vsan volume create v 8M
    model write "$URI" "$VSAN" "$ADMIN" v "$N" || die "$1: writing the snapshots failed"
    model check "$URI" v "$N" "" || die "$1: a snapshot does not hold its content"
    shared_blocks || die "$1: no side file shares a block with the data file: the clone path never ran"
    ! grep -q 'FICLONERANGE unsupported' "$LOG" || die "$1: vsand fell back to copying: $(grep FICLONERANGE "$LOG")"
    log "$1: deletes from the middle ($DELETED), then a restart"
    for i in ${DELETED//,/ }; do
        expect_exit 0 vsan snapshot delete v "s$i"
    done
    model check "$URI" v "$N" "$DELETED" || die "$1: after the deletes, a snapshot lost its content"
    vsand_stop KILL
    vsand_start
    model check "$URI" v "$N" "$DELETED" || die "$1: after a restart, a snapshot lost its content"
}

snapshots_on btrfs
vsand_stop TERM
snapshots_on xfs

log "xfs: a second volume written and cut, flushed, then the power cut"
expect_exit 0 vsan volume create w 8M
model write "$URI" "$VSAN" "$ADMIN" w "$N" || die "xfs: writing w's snapshots failed"
xfs_io -x -c shutdown "$DATA" || die "xfs_io shutdown failed"
vsand_stop KILL
umount "$DATA" || die "cannot unmount the shut down xfs"
mount -o loop "$T/xfs.img" "$DATA" || die "cannot mount xfs after the power cut"
vsand_start
model check "$URI" w "$N" "" || die "xfs: after the power cut, a snapshot of w lost its content"
model check "$URI" v "$N" "$DELETED" || die "xfs: after the power cut, a snapshot of v lost its content"
vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
log "ok"
