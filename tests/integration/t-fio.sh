#!/usr/bin/env bash
# t-fio: fio's nbd engine (libnbd) writing with crc32c verification: QD1 on
# one connection, QD32 on each of four connections (disjoint regions), and
# mixed block sizes; every byte written is read back and verified. A
# verify-only replay over new connections must pass, and must fail once a
# block was overwritten behind fio's back (so the check has teeth).
# timeout: 180
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

MiB=1048576

# run_fio NAME FIO-ARGS...: runs fio with JSON output in $T/NAME.json; its
# exit status is left in FIO_STATUS. It runs in $T, where fio leaves its
# verify state files.
run_fio() {
    local name=$1
    shift
    FIO_STATUS=0
    (cd "$T" && fio --name="$name" --ioengine=nbd --uri="$URI/fio" --output-format=json \
        --output="$T/$name.json" "$@" >"$T/$name.log" 2>&1) || FIO_STATUS=$?
}

# fio_ok NAME JOBS BYTES: fio exited 0, and each of its JOBS jobs had no
# error, wrote BYTES and read (verified) BYTES.
fio_ok() {
    [ "$FIO_STATUS" -eq 0 ] || die "fio $1 exited $FIO_STATUS: $(tail -n 20 "$T/$1.log")"
    OUT=$(cat "$T/$1.json")
    json_assert 'len(d["jobs"]) == int(a[0])' "$2"
    json_assert 'all(j["error"] == 0 for j in d["jobs"])'
    json_assert 'all(j["write"]["io_bytes"] == int(a[0]) for j in d["jobs"])' "$3"
    json_assert 'all(j["read"]["io_bytes"] == int(a[0]) for j in d["jobs"])' "$3"
}

vt_config
vsand_start
expect_exit 0 vsan volume create fio 256M

log "QD1, one connection, randwrite 4k + verify"
run_fio qd1 --rw=randwrite --bs=4k --iodepth=1 --size=16M --verify=crc32c --verify_fatal=1
fio_ok qd1 1 $((16 * MiB))

QD32=(--rw=randwrite --bs=4k --iodepth=32 --numjobs=4 --size=32M --offset=64M
    --offset_increment=32M --verify=crc32c --verify_fatal=1)
log "QD32 x 4 connections, randwrite 4k + verify"
run_fio qd32 "${QD32[@]}"
fio_ok qd32 4 $((32 * MiB))

log "mixed block sizes 512 B - 1 MiB, 2 connections + verify"
run_fio mixed --rw=randwrite --bsrange=512-1M --blockalign=512 --iodepth=8 --numjobs=2 \
    --size=16M --offset=192M --offset_increment=16M --verify=crc32c --verify_fatal=1
fio_ok mixed 2 $((16 * MiB))

log "verify-only replay of the QD32 run over new connections"
run_fio replay "${QD32[@]}" --verify_only
[ "$FIO_STATUS" -eq 0 ] || die "verify-only replay failed: $(tail -n 20 "$T/replay.log")"
OUT=$(cat "$T/replay.json")
json_assert 'all(j["error"] == 0 and j["read"]["io_bytes"] == 32 << 20 for j in d["jobs"])'

log "a block overwritten behind fio's back is detected"
nbdpy "$URI/fio" <<'EOF'
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(99, 4096), 80 << 20)
h.flush()
EOF
run_fio corrupt "${QD32[@]}" --verify_only
[ "$FIO_STATUS" -ne 0 ] || die "fio verify missed a corrupted block"

vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
log "ok"
