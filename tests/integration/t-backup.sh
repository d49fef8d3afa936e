#!/usr/bin/env bash
# t-backup: `vsan backup` against a real NBD server with snapshots' contexts
# (qemu-nbd on a qcow2 image with a persistent dirty bitmap, exported as
# VOL@SNAP with base:allocation and qemu:dirty-bitmap:b0), its streams
# applied by a second reader (rbddiff_apply.py) and compared byte for byte;
# `vsan restore`'s refusals of bad streams; and, once vsand serves
# snapshots, backup -> restore -> clone through vsand itself.
# timeout: 120
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

APPLY="$VT_DIR/rbddiff_apply.py"
IMG="$T/disk.qcow2"

log "a qcow2 image: data, then bitmap b0, then changes (data, zeroes)"
qemu-img create -q -f qcow2 "$IMG" 64M
qemu-io -f qcow2 -c 'write -P 0x11 0 1M' -c 'write -P 0x22 8M 3M' -c 'write -z 20M 1M' \
    "$IMG" >/dev/null
qemu-img convert -O raw "$IMG" "$T/base.raw"
qemu-img bitmap --add "$IMG" b0
qemu-io -f qcow2 -c 'write -P 0x33 512k 128k' -c 'write -P 0x44 40M 64k' -c 'write -z 8M 64k' \
    "$IMG" >/dev/null
qemu-img convert -O raw "$IMG" "$T/final.raw"

QPORT=$(free_port)
bg_start qemu-nbd qemu-nbd -r -f qcow2 -x 'vol@s1' -B b0 -b 127.0.0.1 -p "$QPORT" -t "$IMG"
QEMU="nbd://127.0.0.1:$QPORT/vol@s1"
wait_until 30 nbdinfo --size "$QEMU" >/dev/null 2>&1 || die "qemu-nbd not serving"

# backup through qemu-nbd: no vsand is asked for an address.
qbackup() {
    "$VSAN" -s "vt-none-$$" backup --nbd "127.0.0.1:$QPORT" "$@"
}

log "full backup: the allocated data only; applied, it equals the image"
expect_exit 0 qbackup vol@s1 -o "$T/full.rbd"
expect_out '^full backup of vol@s1 \(64 MiB\): 4 MiB of data, 0 B of zeroes'
[ ! -e "$T/full.rbd.tmp" ] || die "full.rbd.tmp left behind"
[ "$(head -c 12 "$T/full.rbd")" = "rbd diff v2" ] || die "no rbd diff v2 header"
"$PY" "$APPLY" "$T/full.raw" <"$T/full.rbd" >"$T/apply.out"
grep -q '^from=None to=s1 size=67108864$' "$T/apply.out" || die "full: $(cat "$T/apply.out")"
cmp "$T/full.raw" "$T/final.raw" || die "full backup applied differs from the image"
size=$(stat -c %s "$T/full.rbd")
[ "$size" -lt $((5 * 1048576)) ] || die "full stream of 4 MiB of data is $size bytes"

log "incremental since b0: what changed, zeroes as 'z'; applied to the base it equals the image"
expect_exit 0 qbackup vol@s1 --since b0 -o "$T/inc.rbd" --json
json_assert 'd["since"] == "b0" and d["data_bytes"] == 196608 and d["zero_bytes"] == 65536'
cp "$T/base.raw" "$T/inc.raw"
"$PY" "$APPLY" "$T/inc.raw" <"$T/inc.rbd" >"$T/apply.out"
grep -q '^from=b0 to=s1 size=67108864$' "$T/apply.out" || die "inc: $(cat "$T/apply.out")"
cmp "$T/inc.raw" "$T/final.raw" || die "incremental applied to the base differs from the image"
size=$(stat -c %s "$T/inc.rbd")
[ "$size" -lt 200000 ] || die "incremental stream of 192 KiB changed is $size bytes"

log "to stdout, through a pipe"
cp "$T/base.raw" "$T/pipe.raw"
qbackup vol@s1 --since b0 -o - 2>"$T/stderr" | "$PY" "$APPLY" "$T/pipe.raw" >/dev/null ||
    die "backup -o - | apply failed: $(cat "$T/stderr")"
grep -q '^incremental backup of vol@s1 since b0' "$T/stderr" || die "no summary on stderr"
cmp "$T/pipe.raw" "$T/final.raw" || die "piped incremental differs"

log "refusals: no such snapshot, no such bitmap, bad arguments; no file left"
expect_exit 8 qbackup vol@nope -o "$T/x.rbd"
expect_out 'vol@nope: no such snapshot'
expect_exit 8 qbackup vol@s1 --since nope -o "$T/x.rbd"
expect_out 'offers no qemu:dirty-bitmap:nope'
[ ! -e "$T/x.rbd" ] && [ ! -e "$T/x.rbd.tmp" ] || die "a failed backup left a file"
expect_exit 2 qbackup vol -o "$T/x.rbd"
expect_exit 2 qbackup vol@s1
expect_exit 2 qbackup vol@s1 -o "$T/x.rbd" --bogus

log "restore refuses bad streams before it asks vsand anything"
head -c 3000 "$T/full.rbd" >"$T/cut.rbd"
expect_exit 11 "$VSAN" -s "vt-none-$$" restore "$T/cut.rbd" r
expect_out 'cut.rbd: byte [0-9]+: record [0-9]+ .*truncated'
printf 'rbd diff v1\n' >"$T/v1.rbd"
expect_exit 11 "$VSAN" -s "vt-none-$$" restore "$T/v1.rbd" r
expect_out 'an "rbd diff v1" stream'
{ printf 'rbd diff v2\n'; printf 'Q'; } >"$T/tag.rbd"
expect_exit 11 "$VSAN" -s "vt-none-$$" restore "$T/tag.rbd" r
expect_out "byte 12: record 1: unknown tag 0x51 \('Q'\)"

# Through vsand: its snapshot exports and admin commands.
vt_config
vsand_start
expect_exit 0 vsan volume create vol 64M
if ! vsan snapshot list vol >/dev/null 2>&1; then
    log "vsand has no snapshots yet: the rest is skipped"
    exit 0
fi

log "vsand: full and incremental backups restored into a new volume, and a clone"
nbdcopy -- "$T/base.raw" "$URI/vol"
expect_exit 0 vsan snapshot create vol s1
nbdcopy -- "$T/final.raw" "$URI/vol"
expect_exit 0 vsan snapshot create vol s2
expect_exit 0 vsan --json snapshot list vol
json_assert '[s["name"] for s in d["snapshots"]] == ["s1", "s2"]'
expect_exit 0 vsan backup vol@s1 -o "$T/v1.rbd"
expect_exit 0 vsan backup vol@s2 --since s1 -o "$T/v2.rbd"
expect_exit 0 vsan restore "$T/v1.rbd" copy
expect_exit 9 vsan restore "$T/v1.rbd" copy
expect_exit 0 vsan restore "$T/v2.rbd" copy
nbdcopy -- "$URI/copy" "$T/copy.raw"
cmp "$T/copy.raw" "$T/final.raw" || die "restored copy differs from vol@s2"
expect_exit 0 vsan --json snapshot list copy
json_assert '[s["name"] for s in d["snapshots"]] == ["s1", "s2"]'
expect_exit 0 vsan volume clone vol@s1 c1
nbdcopy -- "$URI/c1" "$T/c1.raw"
cmp "$T/c1.raw" "$T/base.raw" || die "clone of vol@s1 differs"
expect_exit 5 vsan volume clone vol@s1 c1
log "an incremental onto the wrong base, or onto a volume written since"
expect_exit 12 vsan restore "$T/v2.rbd" c1
expect_exit 0 vsan snapshot delete copy s2
nbdcopy -- "$T/base.raw" "$URI/copy"
expect_exit 12 vsan restore "$T/v2.rbd" copy
log "ok"
