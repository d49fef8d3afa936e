#!/usr/bin/env bash
# t-restart: volumes and their data survive restarts. First a clean one
# (SIGTERM); then SIGKILL while fio writes hard on four connections, and
# SIGKILL while the admin socket creates, resizes and deletes volumes. After
# each restart the volume table is what it was (names, sizes, uuids), every
# volume negotiates at its listed size and reads end to end, the data
# written and flushed before is intact, the pool holds no leftovers, and
# the volumes take new writes.
# timeout: 180
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

MiB=1048576

populate() {
    expect_exit 0 vsan volume create v1 64M
    expect_exit 0 vsan volume create v2 1G
    expect_exit 0 vsan volume create v3 32M
    random_file "$T/v1.img" $((64 * MiB))
    nbdcopy --flush "$T/v1.img" "$URI/v1" || die "nbdcopy into v1 failed"
    nbdpy "$URI/v2" <<'PY' || die "writing the end of v2 failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(2, 1 << 20), h.get_size() - (1 << 20), nbd.CMD_FLAG_FUA)
PY
}

check_data() {
    nbdcopy "$URI/v1" "$T/v1.back" || die "$1: nbdcopy out of v1 failed"
    cmp "$T/v1.img" "$T/v1.back" || die "$1: v1 data differs"
    rm -f "$T/v1.back"
    nbdpy "$URI/v2" <<'PY' || die "$1: end of v2 differs"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
check(h.pread(1 << 20, h.get_size() - (1 << 20)) == pattern(2, 1 << 20), "v2 tail differs")
check(h.pread(1 << 20, 0) == bytes(1 << 20), "v2 head is not zero")
PY
}

# Every listed volume negotiates at its listed size, reads end to end and
# (but for v1 and v2, whose data check_data knows) takes a write; the pool has a .meta and a .data per volume and no
# leftover temporary files.
check_volumes_usable() {
    local name size n=0
    while read -r name size _; do
        n=$((n + 1))
        [ "$(nbd_size "$name")" = "$size" ] || die "$1: $name served at $(nbd_size "$name"), listed $size"
        nbdcopy "$URI/$name" null: || die "$1: full read of $name failed"
        case $name in v1 | v2) continue ;; esac
        nbdpy "$URI/$name" <<'PY' || die "$1: $name does not take writes"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(9, 4096), 0)
h.flush()
check(h.pread(4096, 0) == pattern(9, 4096), "written block reads back wrong")
PY
    done <"$T/table"
    local metas datas tmps
    metas=$(find "$DATA/volumes" -name '*.meta' | wc -l)
    datas=$(find "$DATA/volumes" -name '*.data' | wc -l)
    tmps=$(find "$DATA/volumes" -name '*.tmp' | wc -l)
    if [ "$metas" -ne "$n" ] || [ "$datas" -ne "$n" ]; then
        die "$1: $n volumes but $metas .meta and $datas .data files"
    fi
    [ "$tmps" -eq 0 ] || die "$1: $tmps temporary files left in the pool"
}

same_table() {
    volume_table >"$T/table.now"
    diff "$T/table" "$T/table.now" >&2 || die "$1: volume table changed across the restart"
}

# The volume hot has more than 32 MiB allocated on disk.
hot_written() {
    [ $(($(stat -c %b "$hot_data") * 512)) -gt $((32 * MiB)) ]
}

churned() {
    [ -f "$T/churn.count" ] && [ "$(wc -l <"$T/churn.count")" -ge 20 ]
}

vt_config
vsand_start
populate
volume_table >"$T/table"
[ "$(wc -l <"$T/table")" -eq 3 ] || die "expected 3 volumes, table: $(cat "$T/table")"

log "SIGTERM + restart"
vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
vsand_start
same_table "SIGTERM"
check_data "SIGTERM"

log "SIGKILL during heavy fio writes"
expect_exit 0 vsan volume create hot 256M
volume_table >"$T/table"
hot_uuid=$(awk '$1 == "hot" { print $3 }' "$T/table")
hot_data="$DATA/volumes/$hot_uuid.data"
[ -f "$hot_data" ] || die "no data file for volume hot ($hot_data)"
bg_start fio fio --name=hot --ioengine=nbd --uri="$URI/hot" --rw=randwrite --bsrange=4k-256k \
    --iodepth=16 --numjobs=4 --size=64M --offset_increment=64M --time_based --runtime=120
FIO=$BG_PID
wait_until 60 hot_written ||
    die "fio wrote less than 32 MiB in 60 s: $(cat "$T/fio.out")"
proc_alive "$FIO" || die "fio stopped before the kill: $(cat "$T/fio.out")"
vsand_stop KILL
wait_until 60 proc_gone "$FIO" || die "fio still running 60 s after the server died"
if wait "$FIO"; then
    die "fio did not notice the server died"
fi
vsand_start
same_table "SIGKILL under fio"
check_data "SIGKILL under fio"
check_volumes_usable "SIGKILL under fio"

log "SIGKILL during admin operations"
# shellcheck disable=SC2016 # expanded by the inner shell
bg_start churn bash -c '
    i=0
    while :; do
        i=$((i + 1))
        "$0" -s "$1" volume create "churn$i" 16M
        "$0" -s "$1" volume resize "churn$i" 32M
        "$0" -s "$1" volume resize "churn$((i - 1))" 8M --force
        "$0" -s "$1" volume delete "churn$((i - 2))"
        echo "$i" >>"$2"
    done' "$VSAN" "$ADMIN" "$T/churn.count"
CHURN=$BG_PID
wait_until 60 churned ||
    die "admin churn made no progress: $(tail -n 5 "$T/churn.out")"
vsand_stop KILL
bg_kill "$CHURN"
vsand_start
volume_table >"$T/table"
grep -q '^hot ' "$T/table" || die "volume hot lost"
check_data "SIGKILL under admin churn"
check_volumes_usable "SIGKILL under admin churn"

vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
vsand_start
same_table "final restart"
vsand_stop TERM
log "ok"
