# shellcheck shell=bash
# faultfs.sh - what the standalone power-cut tests (t-powercut,
# t-snap-powercut) share, sourced after lib.sh and vt_init: the fault
# layer (tests/tools/faultfs.c) under a node's data dir, and a power cut.
# The caller sets DATA (vt_config) and DISK (the layer's backing dir).

FAULTFS="$BUILD/tests/faultfs"
[ -x "$FAULTFS" ] || die "no $FAULTFS: build first (make $FAULTFS)"

# faultfs_mount: the fault layer over $DATA, backed by $DISK.
MOUNTS=0
faultfs_mount() {
    MOUNTS=$((MOUNTS + 1))
    bg_start "faultfs$MOUNTS" "$FAULTFS" "$DISK" "$DATA" -f
    FAULTFS_PID=$BG_PID
    on_exit "fusermount3 -u -z '$DATA'"
    wait_until 20 test -e "$DATA/.faultfs-ctl" ||
        die "faultfs did not mount: $(cat "$T/faultfs$MOUNTS.out")"
}

# power_cut: the disk forgets what is not durable, vsand dies with it; then
# the disk comes back (mounted again), vsand not yet.
power_cut() {
    echo crash >"$DATA/.faultfs-ctl" || die "faultfs refused the crash command"
    vsand_stop KILL
    log "$(tail -n 2 "$T/faultfs$MOUNTS.out" | head -n 1)"
    wait_until 10 fuse_unmount "$DATA" || die "fusermount3 -u $DATA failed"
    wait_until 10 proc_gone "$FAULTFS_PID" || die "faultfs did not exit after unmount"
    wait "$FAULTFS_PID" || die "faultfs exited with status $?: $(cat "$T/faultfs$MOUNTS.out")"
    faultfs_mount
}
