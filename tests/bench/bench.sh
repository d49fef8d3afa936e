#!/usr/bin/env bash
# bench.sh - vsand against nbdkit's file plugin, side by side, same fio jobs
# (nbd engine, i.e. libnbd over loopback TCP). `make bench` runs it; it is
# not part of `make check`.
#
# Both servers keep their bytes on /dev/shm (tmpfs): vsand's data_dir and
# the image nbdkit serves, 1 GiB each, both pre-filled by a sequential
# write so no run pays for first allocation or reads holes. For each
# workload the two servers run back to back, alternating which goes first,
# so slow drift on this shared machine hits both alike.
#
# Workloads: 4k random write and read at QD32 as 4 connections (numjobs=4)
# x iodepth 8; 4k random write at QD1 (IOPS and mean latency); 1 MiB
# sequential write, 1 connection x iodepth 8.
#
# This machine is shared and noisy, so every workload runs BENCH_ROUNDS
# times per server, alternating, and the table shows medians; it also shows
# each server's CPU time per request (from /proc/PID/stat over the run),
# which noise from other tenants disturbs far less than IOPS.
#
# A snapshot table (tests/bench/snapshots.sh) compares a volume with
# snapshots to one without on the same vsand: copy-on-write on first
# writes and in steady state, the write pause a cut causes, incremental
# backup; on the standalone vsand and on the 3-node lab.
#
# A TLS table (tests/bench/tls.sh) puts vsand plain, over TLS with X.509
# and with PSK, and nbdkit --tls=require with the same credentials side by
# side, measured with build/nbdload (fio's nbd engine refuses TLS).
#
# A further table compares replication (tests/bench/replicated.sh): vsand
# on 2- and 3-node deploy/labs and qemu-storage-daemon's quorum driver,
# each against a standalone vsand reached over the same lab network.
#
# Usage: tests/bench/bench.sh BUILD_DIR
# Env: BENCH_SECONDS (per run, default 10), BENCH_SIZE (default 1G),
#      BENCH_ROUNDS (default 3), BENCH_REPLICATED (default 1; 0 skips the
#      replicated table, which needs root for deploy/lab),
#      BENCH_SNAPSHOTS (default 1; 0 skips the snapshot table),
#      BENCH_TLS (default 1; 0 skips the TLS table).
set -Eeuo pipefail

# shellcheck source=tests/bench/common.sh
. "$(dirname "$0")/common.sh"
seconds=${BENCH_SECONDS:-10}
rounds=${BENCH_ROUNDS:-3}
size=${BENCH_SIZE:-1G}
replicated=${BENCH_REPLICATED:-1}
snapshots=${BENCH_SNAPSHOTS:-1}
tls=${BENCH_TLS:-1}

dir=""
vsand_pids=()
nbdkit_pid=""
admin="vsan-bench-$$"
# What each server is called in the tables: its NBD URI and the pids whose
# CPU time counts as its own.
declare -A URI PIDS

die() {
    echo "bench: $*" >&2
    if [ -n "$dir" ] && [ -s "$dir/data.log" ]; then
        tail -n 20 "$dir/data.log" >&2
    fi
    exit 1
}

cleanup() {
    local status=$? pid
    set +e
    for pid in "${vsand_pids[@]}"; do
        kill -TERM "$pid" && wait "$pid"
    done
    [ -n "$nbdkit_pid" ] && kill -TERM "$nbdkit_pid" && wait "$nbdkit_pid"
    replicated_cleanup
    snap_cleanup
    tls_cleanup
    rm -f /dev/shm/qb-*"$admin"*
    [ -n "$dir" ] && rm -rf "$dir"
    exit "$status"
} 2>/dev/null
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    "$PY" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# wait_nbd URI PID: polls until URI negotiates; fails if PID dies or at 30 s.
wait_nbd() {
    local deadline=$((SECONDS + 30))
    until nbdinfo --size "$1" >/dev/null 2>&1; do
        kill -0 "$2" 2>/dev/null || die "server for $1 exited during startup"
        [ "$SECONDS" -lt "$deadline" ] || die "server for $1 not ready after 30 s"
        sleep 0.05
    done
}

# start_vsand DATA ADMIN [EXTRA]: a standalone vsand keeping its volumes in
# DATA (its config DATA.conf, its log DATA.log), answering on admin socket
# ADMIN, with a volume bench: VSAND_URI, its pid VSAND_PID. EXTRA: config
# lines appended.
start_vsand() {
    local data=$1 sock=$2 extra=${3:-} port
    port=$(free_port)
    mkdir "$data"
    cat >"$data.conf" <<EOF
[node]
data_dir = $data
pid_file = $data.pid
[nbd]
listen = 127.0.0.1:$port
[admin]
socket = $sock
nbd_socket = $data.nbd.sock
[log]
level = warning
syslog = no
$extra
EOF
    "$build/vsand" -f -c "$data.conf" >"$data.log" 2>&1 &
    VSAND_PID=$!
    vsand_pids+=("$VSAND_PID")
    local deadline=$((SECONDS + 30))
    until "$build/vsan" -s "$sock" status >/dev/null 2>&1; do
        kill -0 "$VSAND_PID" 2>/dev/null || die "vsand exited during startup: $(tail -n 5 "$data.log")"
        [ "$SECONDS" -lt "$deadline" ] || die "vsand not ready after 30 s"
        sleep 0.05
    done
    "$build/vsan" -s "$sock" volume create bench "$size" >/dev/null || die "volume create failed"
    VSAND_URI="nbd://127.0.0.1:$port/bench"
    wait_nbd "$VSAND_URI" "$VSAND_PID"
}

start_nbdkit() {
    local port
    port=$(free_port)
    truncate -s "$size" "$dir/nbdkit.img"
    nbdkit -f -p "$port" -i 127.0.0.1 file "$dir/nbdkit.img" >"$dir/nbdkit.log" 2>&1 &
    nbdkit_pid=$!
    NBDKIT_URI="nbd://127.0.0.1:$port"
    wait_nbd "$NBDKIT_URI" "$nbdkit_pid"
}

# run_fio URI OUT.json FIO-ARGS...
run_fio() {
    local uri=$1 out=$2
    shift 2
    fio --name=bench --ioengine=nbd --uri="$uri" --output-format=json --output="$out" \
        --group_reporting "$@" >"$out.log" 2>&1 || die "fio failed: $(tail -n 5 "$out.log")"
}

prefill() {
    run_fio "$1" "$dir/prefill.json" --rw=write --bs=1M --iodepth=8
}

workloads=(
    "4k randwrite QD32 (4 conn x 8), IOPS|write|iops|--rw=randwrite --bs=4k --numjobs=4 --iodepth=8"
    "4k randread QD32 (4 conn x 8), IOPS|read|iops|--rw=randread --bs=4k --numjobs=4 --iodepth=8"
    "4k randwrite QD1, IOPS|write|iops|--rw=randwrite --bs=4k --numjobs=1 --iodepth=1"
    "1M seq write (1 conn x 8), MiB/s|write|mibs|--rw=write --bs=1M --numjobs=1 --iodepth=8"
)

# record ROW DIRECTION METRIC SERVER JSON RESULTS TICKS...: the run's result
# lines (see tables.py), TICKS being the CPU each of the server's processes
# spent over it.
record() {
    local row=$1 dirn=$2 metric=$3 server=$4 json=$5 results=$6
    shift 6
    "$PY" "$repo/tests/bench/tables.py" record "$json" "$dirn" "$metric" "$row" "$server" \
        "$(getconf CLK_TCK)" "$@" >>"$results" || die "cannot read $json"
}

# cpu_ticks PID...: user + system time of each, in clock ticks.
cpu_ticks() {
    local pid
    for pid in "$@"; do
        awk '{ print $14 + $15 }' "/proc/$pid/stat"
    done
}

# run_one JSON ROW DIRECTION METRIC SERVER RESULTS FIO-ARGS...: one fio run
# against SERVER, recorded with the CPU time its processes spent.
run_one() {
    local json=$1 row=$2 dirn=$3 metric=$4 server=$5 results=$6 j
    local -a t0 t1 ticks
    shift 6
    echo "bench: round $round: $row: $server" >&2
    # shellcheck disable=SC2086 # PIDS holds a list of pids
    mapfile -t t0 < <(cpu_ticks ${PIDS[$server]})
    run_fio "${URI[$server]}" "$json" "$@"
    # shellcheck disable=SC2086
    mapfile -t t1 < <(cpu_ticks ${PIDS[$server]})
    [ "${#t1[@]}" -eq "${#t0[@]}" ] || die "$server: a server process is gone"
    ticks=()
    for j in "${!t0[@]}"; do
        ticks+=($((t1[j] - t0[j])))
    done
    record "$row" "$dirn" "$metric" "$server" "$json" "$results" "${ticks[@]}"
}

# run_workload I SPEC ROUND RESULTS SERVER...: one run of workload I per
# server; the order rotates with I and ROUND so that no server always goes
# first.
run_workload() {
    local i=$1 spec=$2 round=$3 results=$4 row dirn metric args server k
    shift 4
    local servers=("$@")
    IFS='|' read -r row dirn metric args <<<"$spec"
    for ((k = 0; k < $#; k++)); do
        server=${servers[(i + round + k) % $#]}
        # shellcheck disable=SC2086 # args is a list of fio options
        run_one "$dir/$i-$server.json" "$row" "$dirn" "$metric" "$server" "$results" $args \
            --time_based --runtime="$seconds" --ramp_time=1 --norandommap --randrepeat=0
    done
}

# run_rounds RESULTS SERVER...: every workload, BENCH_ROUNDS times.
run_rounds() {
    local round i
    for round in $(seq 1 "$rounds"); do
        for i in "${!workloads[@]}"; do
            run_workload "$i" "${workloads[$i]}" "$round" "$@"
        done
    done
}

print_machine() {
    echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
        "kernel $(uname -r), $(fio --version), $(nbdkit --version | head -n 1)"
}

print_table() {
    echo "storage: both on /dev/shm (tmpfs), $size each, pre-filled; ${seconds} s per run" \
        "(+1 s ramp), median of $rounds rounds, fio nbd engine over loopback TCP," \
        "servers at default settings"
    echo
    "$PY" "$repo/tests/bench/tables.py" loopback "$dir/results"
}

# shellcheck source=tests/bench/replicated.sh
. "$repo/tests/bench/replicated.sh"
# shellcheck source=tests/bench/snapshots.sh
. "$repo/tests/bench/snapshots.sh"
# shellcheck source=tests/bench/tls.sh
. "$repo/tests/bench/tls.sh"

if [ ! -x "$build/vsand" ] || [ ! -x "$build/vsan" ]; then
    die "no $build/vsand or $build/vsan: run make"
fi
[ "$replicated" = 0 ] || replicated_check
dir=$(mktemp -d /dev/shm/vsan-bench.XXXXXX)
start_vsand "$dir/data" "$admin"
start_nbdkit
URI[vsand]=$VSAND_URI PIDS[vsand]=$VSAND_PID
URI[nbdkit]=$NBDKIT_URI PIDS[nbdkit]=$nbdkit_pid
echo "bench: pre-filling both ($size each)" >&2
prefill "$VSAND_URI"
prefill "$NBDKIT_URI"
run_rounds "$dir/results" vsand nbdkit
if [ "$snapshots" != 0 ]; then
    snap_cli=("$build/vsan" -s "$admin")
    snap_rows vsand
    snap_disk
fi
[ "$tls" = 0 ] || tls_run
[ "$replicated" = 0 ] || replicated_run
print_machine
print_table
[ "$replicated" = 0 ] || replicated_table
[ "$snapshots" = 0 ] || snapshot_table
[ "$tls" = 0 ] || tls_table
