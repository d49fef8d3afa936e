#!/usr/bin/env bash
# t-nbdcopy: bulk copies with nbdcopy (several connections over multi-conn,
# large requests): random data in and back out, byte for byte; then a
# sparse image over it, which nbdcopy writes with WRITE_ZEROES for its
# holes, read back both with block status and with plain READs of holes.
# timeout: 120
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

MiB=1048576

vt_config
vsand_start
expect_exit 0 vsan volume create copy 96M
VOL="$URI/copy"

log "random 64 MiB in, 96 MiB out"
random_file "$T/random.img" $((64 * MiB))
nbdcopy --flush "$T/random.img" "$VOL" || die "nbdcopy into the volume failed"
nbdcopy "$VOL" "$T/back.img" || die "nbdcopy out of the volume failed"
[ "$(stat -c %s "$T/back.img")" -eq $((96 * MiB)) ] || die "read back $(stat -c %s "$T/back.img") bytes"
cmp -n $((64 * MiB)) "$T/random.img" "$T/back.img" || die "data read back differs"
cmp -n $((32 * MiB)) -i $((64 * MiB)):0 "$T/back.img" /dev/zero ||
    die "the never-written tail does not read as zeroes"

log "sparse image over it: holes become zeroes"
truncate -s $((96 * MiB)) "$T/sparse.img"
for mib in 3 17 40 70 95; do
    head -c $((MiB / 2)) /dev/urandom | dd of="$T/sparse.img" bs=1M seek="$mib" conv=notrunc status=none
done
nbdcopy "$T/sparse.img" "$VOL" || die "nbdcopy of a sparse image failed"
rm -f "$T/back.img"
nbdcopy "$VOL" "$T/back.img" || die "nbdcopy read back (with extents) failed"
cmp "$T/sparse.img" "$T/back.img" || die "sparse image read back (with extents) differs"
rm -f "$T/back.img"
nbdcopy --no-extents --request-size=$((4 * MiB)) "$VOL" "$T/back.img" ||
    die "nbdcopy read back (plain reads) failed"
cmp "$T/sparse.img" "$T/back.img" || die "sparse image read back (plain reads) differs"

log "one connection, small requests"
random_file "$T/random.img" $((96 * MiB))
nbdcopy --connections=1 --requests=1 --request-size=4096 --flush "$T/random.img" "$VOL" ||
    die "synchronous nbdcopy into the volume failed"
rm -f "$T/back.img"
nbdcopy "$VOL" "$T/back.img" || die "nbdcopy out of the volume failed"
cmp "$T/random.img" "$T/back.img" || die "data written with 4 KiB requests differs"

vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
log "ok"
