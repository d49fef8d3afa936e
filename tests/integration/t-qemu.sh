#!/usr/bin/env bash
# t-qemu: QEMU's NBD client (qemu-img, qemu-io) against vsand: an image
# converted in and compared, one converted out to qcow2 and compared, and
# qemu-io pattern writes (plain, FUA, write-zeroes, discard, vectored, aio)
# verified in the same session and again over a new connection.
# timeout: 120
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

MiB=1048576

vt_config
vsand_start
expect_exit 0 vsan volume create qvol 64M
VOL="$URI/qvol"

log "qemu-img info"
expect_exit 0 qemu-img info --output=json "$VOL"
json_assert 'd["virtual-size"] == 64 << 20'

log "qemu-img convert raw -> nbd, compare"
random_file "$T/src.img" $((40 * MiB))
truncate -s $((64 * MiB)) "$T/src.img"
qemu-img convert -n -p -f raw -O raw "$T/src.img" "$VOL" >/dev/null || die "qemu-img convert in failed"
qemu-img compare -f raw -F raw "$T/src.img" "$VOL" || die "qemu-img compare: volume differs from source"

log "qemu-img convert nbd -> qcow2, compare"
qemu-img convert -f raw -O qcow2 "$VOL" "$T/out.qcow2" || die "qemu-img convert out failed"
qemu-img compare -f qcow2 -F raw "$T/out.qcow2" "$VOL" || die "qcow2 copy differs from volume"
qemu-img compare -f qcow2 -F raw "$T/out.qcow2" "$T/src.img" || die "qcow2 copy differs from source"

# qemu_io CMD...: one qemu-io session on the volume; any failed command or
# pattern mismatch fails the test.
qemu_io() {
    local args=() c
    for c in "$@"; do
        args+=(-c "$c")
    done
    OUT=$(qemu-io -f raw "${args[@]}" "$VOL" 2>&1) || die "qemu-io failed: $OUT"
    ! grep -qiE 'fail|error' <<<"$OUT" || die "qemu-io reported: $OUT"
}

log "qemu-io writes, read back in the same session"
qemu_io 'write -P 0xab 0 1M' \
    'write -f -P 0x11 2M 64k' \
    'write -z 512k 64k' \
    'writev -P 0x5a 4M 4k 8k 512' \
    'aio_write -P 0x77 8M 256k' 'aio_flush' \
    'write -P 0x33 12M 1M' 'discard 12M 1M' \
    'flush' \
    'read -P 0xab 0 512k' 'read -P 0 512k 64k' 'read -P 0xab 576k 448k' \
    'read -P 0x11 2M 64k' \
    'readv -P 0x5a 4M 4k 8k 512' \
    'read -P 0x77 8M 256k' \
    'read -P 0 12M 1M'

log "read back over a new connection"
qemu_io 'read -P 0xab 0 512k' 'read -P 0 512k 64k' 'read -P 0xab 576k 448k' \
    'read -P 0x11 2M 64k' 'read -P 0x5a 4M 12800' 'read -P 0x77 8M 256k' 'read -P 0 12M 1M'

log "a wrong pattern is noticed (the check itself works)"
qemu-io -f raw -c 'read -P 0xac 0 4k' "$VOL" >/dev/null 2>&1 && die "qemu-io missed a wrong pattern"

vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
log "ok"
