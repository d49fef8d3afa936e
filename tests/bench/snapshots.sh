# shellcheck shell=bash
# snapshots.sh - the snapshot rows of `make bench`, sourced by bench.sh
# (which owns dir, size, seconds, rounds, URI, PIDS, run_one, die and
# cleanup). They run on a standalone vsand (the loopback one) and, with
# the replicated part, on node 1 of the 3-node lab, where a snapshot is a
# cut across the three nodes.
#
# On each, the prefilled volume `bench` is the reference and a second
# volume `snap`, prefilled the same way, gets the snapshots. Per round,
# the two alternating which goes first:
#
#  - first writes: a new snapshot, then one 4 KiB write to every 64 KiB
#    chunk of the volume (fio's strided zones: 4 connections x QD8, each
#    over a quarter), so every write copies its chunk: the worst case
#    (the volume without snapshots makes 4 passes: one takes a fraction
#    of a second there);
#  - steady: the same snapshot, every chunk copied by the pass before,
#    then the 4k random write QD32 row of bench.sh: no write copies;
#  - fresh: a new snapshot, then that row for BENCH_SECONDS with no ramp,
#    so its first writes copy and later ones find their chunk copied;
#    the share of writes that copied is a row of its own.
#
# Then the write pause a cut causes (snapbench.py pause). Last, an
# incremental backup: N random 4 KiB blocks and a few 1 MiB runs written
# between two snapshots, `vsan backup --since`, its rate and the data
# bytes of its stream against the bytes of the 64 KiB chunks those writes
# dirtied; a full backup's rate for comparison. That row runs on a
# second standalone vsand whose data is on the disk (/var/tmp, ext4
# here), not /dev/shm: the snapshot export answers block status chunk by
# chunk with SEEK_DATA/SEEK_HOLE, and tmpfs answers SEEK_HOLE by walking
# the page cache up to the next hole, which in a fully written file is
# its end: a backup of a fully written 1 GiB volume on tmpfs takes tens
# of minutes (64 MiB: 1.6 s, 128 MiB: 6.5 s, 256 MiB: 31 s), on ext4 a
# second or two. The stream goes to /dev/shm.
#
# snap_cli (an array) is how to run the CLI against the node.
# shellcheck disable=SC2154,SC2034

snap_results=""
snap_cli=()
snap_disk_dir=""
SNAP_BLOCKS=4096
SNAP_RUNS=16

# snap_volume REF: the volume `snap` beside REF's `bench` on the same
# node, prefilled, as server "REF+snap".
snap_volume() {
    "${snap_cli[@]}" volume create snap "$size" >/dev/null || die "$1: cannot create volume snap"
    URI[$1+snap]=${URI[$1]%/bench}/snap PIDS[$1+snap]=${PIDS[$1]}
    echo "bench: pre-filling $1+snap ($size)" >&2
    prefill "${URI[$1+snap]}"
}

# snap_clear: volume snap has no snapshot left.
snap_clear() {
    local old
    for old in $(snap_names); do
        "${snap_cli[@]}" snapshot delete snap "$old" >/dev/null || die "cannot delete snapshot snap@$old"
    done
}

# snap_new NAME: volume snap's only snapshot is now a new one, NAME.
snap_new() {
    snap_clear
    "${snap_cli[@]}" snapshot create snap "$1" >/dev/null || die "cannot take snapshot snap@$1"
}

# snap_names: volume snap's snapshots, oldest first (deleting the oldest
# first merges nothing).
snap_names() {
    "${snap_cli[@]}" --json snapshot list snap |
        "$PY" -c 'import json, sys
for s in json.load(sys.stdin)["snapshots"]:
    print(s["name"])' || die "cannot list the snapshots of snap"
}

# snap_exclusive: bytes volume snap's newest snapshot holds on its own.
snap_exclusive() {
    "${snap_cli[@]}" --json snapshot list snap |
        "$PY" -c 'import json, sys
print(json.load(sys.stdin)["snapshots"][-1]["exclusive"])' || die "cannot list the snapshots of snap"
}

# snap_writes REF: the write rows, REF against REF+snap.
snap_writes() {
    local ref=$1 round s order bytes loops
    local qd32="--rw=randwrite --bs=4k --numjobs=4 --iodepth=8"
    local row_first="4k randwrite QD32, every write the first to its chunk, IOPS"
    local row_steady="4k randwrite QD32, every chunk already copied, IOPS"
    local row_fresh="4k randwrite QD32, first ${seconds} s after a snapshot, IOPS"
    bytes=$(numfmt --from=iec "$size") || die "bad size $size"
    for round in $(seq 1 "$rounds"); do
        order=("$ref" "$ref+snap")
        [ $((round % 2)) -eq 0 ] && order=("$ref+snap" "$ref")
        for s in "${order[@]}"; do
            loops=4
            if [ "$s" != "$ref" ]; then
                snap_new "w$round"
                loops=1
            fi
            # shellcheck disable=SC2086 # qd32 is a list of fio options
            run_one "$dir/snap-first-$s.json" "$row_first" write iops "$s" "$snap_results" $qd32 \
                --size=25% --offset_increment=25% --io_size=$((bytes / 64)) --loops="$loops" \
                --zonemode=strided --zonesize=4k --zoneskip=60k
        done
        [ "$(snap_exclusive)" = "$bytes" ] ||
            die "$ref+snap: the pass copied $(snap_exclusive) bytes, not every chunk ($bytes)"
        for s in "${order[@]}"; do
            # shellcheck disable=SC2086
            run_one "$dir/snap-steady-$s.json" "$row_steady" write iops "$s" "$snap_results" $qd32 \
                --time_based --runtime="$seconds" --ramp_time=1 --norandommap --randrepeat=0
        done
        for s in "${order[@]}"; do
            [ "$s" = "$ref" ] || snap_new "f$round"
            # shellcheck disable=SC2086
            run_one "$dir/snap-fresh-$s.json" "$row_fresh" write iops "$s" "$snap_results" $qd32 \
                --time_based --runtime="$seconds" --norandommap --randrepeat=0
        done
        "$PY" "$repo/tests/bench/tables.py" copied "$dir/snap-fresh-$ref+snap.json" "$(snap_exclusive)" \
            "$row_fresh" "$ref+snap" >>"$snap_results" || die "cannot read the fresh run's JSON"
    done
    snap_clear
}

# snap_pause REF: the write pause, on REF's volume snap.
snap_pause() {
    local round
    for round in $(seq 1 "$rounds"); do
        echo "bench: round $round: write pause of a cut: $1" >&2
        "$PY" "$repo/tests/bench/snapbench.py" pause "${URI[$1+snap]}" "$seconds" "$round" "$1" \
            "${snap_cli[@]}" snapshot create snap >>"$snap_results" ||
            die "$1: the write pause run failed"
        snap_clear
    done
}

# snap_backup REF: incremental (and full) backup of REF's volume snap.
snap_backup() {
    local ref=$1 round out written chunks t0 t1
    out="$dir/backup.rbd"
    for round in $(seq 1 "$rounds"); do
        echo "bench: round $round: incremental backup: $ref" >&2
        snap_new "b$round"
        read -r written chunks < <("$PY" "$repo/tests/bench/snapbench.py" dirty "${URI[$ref+snap]}" \
            "$round" "$SNAP_BLOCKS" "$SNAP_RUNS") || die "$ref: the writes between the snapshots failed"
        "${snap_cli[@]}" snapshot create snap "c$round" >/dev/null || die "cannot take snapshot snap@c$round"
        t0=$(date +%s.%N)
        "${snap_cli[@]}" --json backup "snap@c$round" --since "b$round" -o "$out" >"$dir/backup.json" ||
            die "$ref: vsan backup --since failed"
        t1=$(date +%s.%N)
        "$PY" "$repo/tests/bench/tables.py" backup "$dir/backup.json" "$t0" "$t1" "$written" "$chunks" \
            incremental "$ref" >>"$snap_results" || die "cannot read $dir/backup.json"
        t0=$(date +%s.%N)
        "${snap_cli[@]}" --json backup "snap@c$round" -o "$out" >"$dir/backup.json" || die "$ref: vsan backup failed"
        t1=$(date +%s.%N)
        "$PY" "$repo/tests/bench/tables.py" backup "$dir/backup.json" "$t0" "$t1" "$written" "$chunks" \
            full "$ref" >>"$snap_results" || die "cannot read $dir/backup.json"
        rm -f "$out"
    done
    snap_clear
}

# snap_rows REF: the write and pause rows against server REF (a `bench`
# volume of the node snap_cli reaches).
snap_rows() {
    snap_results="$dir/snapshots"
    snap_volume "$1"
    snap_writes "$1"
    snap_pause "$1"
}

# snap_disk: the backup row, on a standalone vsand with its data on disk
# (see the header), stopped and removed when done.
snap_disk() {
    local pid
    snap_results="$dir/snapshots"
    snap_disk_dir=$(mktemp -d /var/tmp/vsan-bench.XXXXXX) || die "cannot make a directory in /var/tmp"
    start_vsand "$snap_disk_dir/data" "$admin-disk"
    pid=$VSAND_PID
    URI[disk]=$VSAND_URI PIDS[disk]=$pid
    snap_cli=("$build/vsan" -s "$admin-disk")
    snap_volume disk
    snap_backup disk
    kill -TERM "$pid" || die "cannot stop the vsand on disk"
    wait "$pid" || die "the vsand on disk exited with status $?"
    snap_cleanup
}

# Safe at any point: removes the disk vsand's data (bench.sh stops it).
snap_cleanup() {
    [ -z "$snap_disk_dir" ] || rm -rf "$snap_disk_dir"
    snap_disk_dir=""
}

snapshot_table() {
    echo
    echo "snapshots: vsand's volume bench against a second volume, snap, on the same node," \
        "both $size on /dev/shm, pre-filled; 64 KiB chunks; medians of $rounds rounds;" \
        "the write pause: a QD1 writer while \`vsan snapshot create\` runs every second;" \
        "backup (column disk): a standalone vsand with its data in /var/tmp" \
        "($(df --output=fstype /var/tmp | tail -n 1)), $SNAP_BLOCKS random 4 KiB writes and" \
        "$SNAP_RUNS 1 MiB runs between the snapshots, the stream to /dev/shm"
    echo
    "$PY" "$repo/tests/bench/tables.py" snapshots "$snap_results"
}
