#!/usr/bin/env bash
# t-backup: `vsan backup` against a real NBD server with snapshots' contexts
# (qemu-nbd on a qcow2 image with a persistent dirty bitmap, exported as
# VOL@SNAP with base:allocation and qemu:dirty-bitmap:b0), its streams
# applied by a second reader (rbddiff_apply.py) and compared byte for byte;
# `vsan restore`'s refusals of bad streams; and, once vsand serves
# snapshots, backup -> restore -> clone through vsand itself: a chain of a
# full backup and 3 incrementals restored in order, every restored
# snapshot equal to its original byte for byte; the streams of a 1 GiB
# sparse volume with 1 MiB of data, and 1 MiB changed, are ~1 MiB.
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

log "vsand: a chain of a full backup and 3 incrementals; each restored snapshot equals its original"
expect_exit 0 vsan volume create ch 64M
random_file "$T/r.raw" $((8 << 20))
# step I's writes: 1 MiB of new data and a rewrite, and from step 2 on,
# a zeroed range and a rewrite of the previous step's data.
chain_step() {
    nbdpy "$URI/ch" "$1" "$T/r.raw" <<'PY'
import sys
from nbdtest import *
h, i, r = connect_nbd(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3], "rb").read()
h.pwrite(r[i << 20:(i + 1) << 20], (i * 7 % 60) << 20)
h.pwrite(pattern(i, 200 * 1024), (i << 20) + 12345 * 512)
if i > 1:
    h.zero(3 << 16, ((i - 1) * 7 % 60) << 20)
    h.pwrite(pattern(100 + i, 4096), (((i - 1) * 7 % 60) << 20) + (5 << 16))
PY
}
chain_step 1
expect_exit 0 vsan snapshot create ch c1
expect_exit 0 vsan --json backup ch@c1 -o "$T/c1.rbd"
json_assert 'd["data_bytes"] < (1 << 20) + (400 << 10)'
for i in 2 3 4; do
    chain_step "$i"
    expect_exit 0 vsan snapshot create ch "c$i"
    expect_exit 0 vsan --json backup "ch@c$i" --since "c$((i - 1))" -o "$T/c$i.rbd"
    # what changed: 1 MiB, 200 KiB, 192 KiB zeroed, 4 KiB (in 64 KiB chunks)
    json_assert '(1 << 20) <= d["data_bytes"] + d["zero_bytes"] <= (1 << 20) + (640 << 10)'
    size=$(stat -c %s "$T/c$i.rbd")
    [ "$size" -lt $((1700 << 10)) ] || die "incremental c$i: a stream of $size bytes"
done
for i in 1 2 3 4; do
    expect_exit 0 vsan restore "$T/c$i.rbd" rch
    for j in $(seq 1 "$i"); do
        nbdcopy -- "$URI/ch@c$j" "$T/orig.raw"
        nbdcopy -- "$URI/rch@c$j" "$T/rest.raw"
        cmp "$T/orig.raw" "$T/rest.raw" || die "after restoring c$i: rch@c$j differs from ch@c$j"
    done
    nbdcopy -- "$URI/rch" "$T/rest.raw"
    cmp "$T/orig.raw" "$T/rest.raw" || die "after restoring c$i: rch differs from ch@c$i"
done
expect_exit 0 vsan --json snapshot list rch
json_assert '[s["name"] for s in d["snapshots"]] == ["c1", "c2", "c3", "c4"]'
log "c4's incremental once more: refused, rch has c4"
expect_exit 9 vsan restore "$T/c4.rbd" rch

log "vsand: the incremental stream follows the bytes changed, not the volume size"
expect_exit 0 vsan volume create big 1G
scatter() { # scatter SEED: 16 x 64 KiB of new data spread over the 1 GiB
    nbdpy "$URI/big" "$1" <<'PY'
import random, sys
from nbdtest import *
h, seed = connect_nbd(sys.argv[1]), int(sys.argv[2])
for k in random.Random(seed).sample(range(16384), 16):
    h.pwrite(pattern(seed * 100000 + k, 65536), k << 16)
PY
}
scatter 1
expect_exit 0 vsan snapshot create big b1
scatter 2
expect_exit 0 vsan snapshot create big b2
expect_exit 0 vsan --json backup big@b1 -o "$T/b1.rbd"
json_assert 'd["data_bytes"] == 1 << 20'
expect_exit 0 vsan --json backup big@b2 --since b1 -o "$T/b2.rbd"
json_assert 'd["data_bytes"] == 1 << 20 and d["zero_bytes"] == 0'
for f in b1 b2; do
    size=$(stat -c %s "$T/$f.rbd")
    log "$f: a stream of $size bytes for 1 MiB of data in a 1 GiB volume"
    [ "$size" -ge $((1 << 20)) ] && [ "$size" -lt $(((1 << 20) + (16 << 10))) ] ||
        die "$f: a stream of $size bytes for 1 MiB of data"
done
expect_exit 0 vsan restore "$T/b1.rbd" rbig
expect_exit 0 vsan restore "$T/b2.rbd" rbig
for f in b1 b2; do
    qemu-img compare -q -f raw -F raw "$URI/big@$f" "$URI/rbig@$f" ||
        die "rbig@$f differs from big@$f"
done
log "ok"
