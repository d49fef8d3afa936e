# shellcheck shell=bash
# replicated.sh - the replicated table of `make bench`, sourced by bench.sh
# (which owns dir, build, size, the workloads, run_rounds and cleanup).
#
# What it compares, all reached by fio from the root namespace over the lab
# bridge to node 1, so every server pays the same network path:
#
#  - 2-way and 3-way: a volume of a 2-node and then a 3-node deploy/lab
#    (only one lab can exist at a time, so the two labs run one after the
#    other), with their data on /dev/shm like the loopback rows;
#  - qemu-quorum, in the 2-node lab: qemu-storage-daemon A in node 1's
#    namespace exports a quorum node (vote-threshold 2, reads from the
#    first child) over a local /dev/shm file and an NBD client of
#    qemu-storage-daemon B in node 2's namespace, which exports its own
#    /dev/shm file: the closest thing to a synchronous mirror we can run;
#  - standalone: a vsand without a cluster in node 1's namespace, started
#    in each lab, so every ratio compares runs of the same lab, taken in
#    alternation;
#  - the snapshot rows of the 3-node lab (snapshots.sh), on node 1.
#
# qemu 7.2's NBD server does not set TCP_NODELAY (qemu 8.1 does), so its
# small replies wait for delayed ACKs: A's link to B then stalls for tens
# of milliseconds whenever requests overlap, and the qemu row would measure
# that bug. Every route of the lab network, the root namespace's included,
# gets quickack for the run, which applies to all rows alike.
#
# bench.sh sets repo, build, dir, size, admin and snapshots, and reads URI
# and PIDS:
# shellcheck disable=SC2154,SC2034

rep_results=""
rep_lab_dir=""
rep_solo_pid=""
rep_qemu_pids=()
REP_SOLO_PORT=10819
REP_QEMU_PORT=10829

replicated_check() {
    [ "$(id -u)" -eq 0 ] ||
        die "the replicated rows need root (deploy/lab): run as root, or BENCH_REPLICATED=0"
    command -v qemu-storage-daemon >/dev/null ||
        die "qemu-storage-daemon not found (qemu-utils); BENCH_REPLICATED=0 skips its row"
}

# The dir of somebody else's lab that is up, if any (deploy/lab names it
# in its owner file, see lab_owner).
rep_lab_busy() {
    local owner
    owner=$(cat /run/vsan-lab.owner 2>/dev/null) || return 1
    [ -f "$owner/lab.env" ] && echo "$owner"
}

# One lab per machine, and the cluster tests use it too: wait for theirs
# to go down rather than fail after the loopback rows.
rep_lab_wait() {
    local deadline=$((SECONDS + 600)) owner
    while owner=$(rep_lab_busy); do
        [ "$SECONDS" -lt "$deadline" ] ||
            die "the lab of VSAN_LAB_DIR=$owner has been up for 10 minutes; try again later"
        echo "bench: waiting for the lab of VSAN_LAB_DIR=$owner to go down" >&2
        sleep 10
    done
}

# Safe to call at any point, twice included: it stops what runs and takes
# the lab down if this run brought one up.
replicated_cleanup() {
    local pid
    for pid in "${rep_qemu_pids[@]}" $rep_solo_pid; do
        if kill -TERM "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
        fi
    done
    rep_qemu_pids=()
    rep_solo_pid=""
    if [ -n "$rep_lab_dir" ]; then
        VSAN_LAB_DIR=$rep_lab_dir "$lab" down >/dev/null 2>&1 ||
            echo "bench: deploy/lab down failed for $rep_lab_dir" >&2
        rep_lab_dir=""
    fi
    return 0
}

# rep_host I: node I's address on the lab network.
rep_host() {
    local addr
    addr=$("$lab" addr "$1") || die "deploy/lab addr $1 failed"
    addr=${addr#nbd://}
    echo "${addr%:*}"
}

rep_lab_up() {
    rep_lab_wait
    rep_lab_dir="$dir/lab$1"
    # Exported rather than passed through a wrapper function: a daemon
    # started as `"$lab" exec I DAEMON &` is then $!, where a function
    # in the background would be a subshell around it.
    export VSAN_LAB_DIR=$rep_lab_dir VSAN_BUILD=$build
    echo "bench: deploy/lab up $1 in $rep_lab_dir" >&2
    "$lab" up "$1" >"$dir/lab$1.log" 2>&1 || die "deploy/lab up $1 failed: $(tail -n 5 "$dir/lab$1.log")"
    rep_quickack "$1"
}

# rep_quickack N: quickack on the lab network's route in the root namespace
# and in each of the N nodes' (see the header for why).
rep_quickack() {
    local net route i
    net="$(rep_host 1 | cut -d. -f1-3).0/24"
    route=$(ip route show root "$net" | head -n 1)
    [ -n "$route" ] || die "no route to the lab network $net"
    # shellcheck disable=SC2086 # route is a list of ip-route arguments
    ip route change $route quickack 1 || die "cannot set quickack on the route to $net"
    for ((i = 1; i <= $1; i++)); do
        route=$("$lab" exec "$i" ip route show root "$net" | head -n 1)
        [ -n "$route" ] || die "n$i: no route to the lab network $net"
        # shellcheck disable=SC2086
        "$lab" exec "$i" ip route change $route quickack 1 ||
            die "n$i: cannot set quickack on the route to $net"
    done
}

# rep_lab_pids N: the pids of the N nodes' vsands (as deploy/lab records
# them in each node's directory).
rep_lab_pids() {
    local i pid pids=()
    for ((i = 1; i <= $1; i++)); do
        pid=$(cat "$rep_lab_dir/n$i/lab.vsand") || die "no pid of n$i's vsand"
        pids+=("$pid")
    done
    echo "${pids[*]}"
}

# rep_lab_volume N NAME: a volume on the N-node lab, through node 1.
rep_lab_volume() {
    local pids
    "$lab" vsan 1 volume create bench "$size" >/dev/null || die "lab volume create failed"
    pids=$(rep_lab_pids "$1")
    URI[$2]="$("$lab" addr 1)/bench" PIDS[$2]=$pids
    wait_nbd "${URI[$2]}" "${pids%% *}"
}

# rep_solo NAME: the standalone vsand in node 1's namespace, with a volume.
rep_solo() {
    local sock="$admin-solo" data="$dir/solo-$1"
    mkdir "$data"
    cat >"$data.conf" <<EOF
[node]
data_dir = $data
pid_file = $data.pid
[nbd]
listen = $(rep_host 1):$REP_SOLO_PORT
[admin]
socket = $sock
nbd_socket = $data.nbd.sock
[log]
level = warning
syslog = no
EOF
    "$lab" exec 1 "$build/vsand" -f -c "$data.conf" >"$data.log" 2>&1 &
    rep_solo_pid=$!
    local deadline=$((SECONDS + 30))
    until "$lab" exec 1 "$build/vsan" -s "$sock" status >/dev/null 2>&1; do
        kill -0 "$rep_solo_pid" 2>/dev/null || die "standalone vsand exited: $(tail -n 5 "$data.log")"
        [ "$SECONDS" -lt "$deadline" ] || die "standalone vsand not ready after 30 s"
        sleep 0.05
    done
    "$lab" exec 1 "$build/vsan" -s "$sock" volume create bench "$size" >/dev/null ||
        die "standalone volume create failed"
    URI[$1]="nbd://$(rep_host 1):$REP_SOLO_PORT/bench" PIDS[$1]=$rep_solo_pid
    wait_nbd "${URI[$1]}" "$rep_solo_pid"
}

# rep_qemu NAME: qemu-storage-daemon B on node 2, then A on node 1.
rep_qemu() {
    local h1 h2 b a
    h1=$(rep_host 1)
    h2=$(rep_host 2)
    truncate -s "$size" "$dir/qemu-a.img" "$dir/qemu-b.img" || die "cannot create the qemu images"
    "$lab" exec 2 qemu-storage-daemon \
        --blockdev "driver=file,node-name=disk,filename=$dir/qemu-b.img" \
        --nbd-server "addr.type=inet,addr.host=$h2,addr.port=$REP_QEMU_PORT" \
        --export type=nbd,id=exp,node-name=disk,name=bench,writable=on \
        >"$dir/qemu-b.log" 2>&1 &
    b=$!
    rep_qemu_pids+=("$b")
    wait_nbd "nbd://$h2:$REP_QEMU_PORT/bench" "$b"
    "$lab" exec 1 qemu-storage-daemon \
        --blockdev "driver=file,node-name=local,filename=$dir/qemu-a.img" \
        --blockdev "driver=nbd,node-name=peer,server.type=inet,server.host=$h2,server.port=$REP_QEMU_PORT,export=bench" \
        --blockdev driver=quorum,node-name=mirror,vote-threshold=2,read-pattern=fifo,children.0=local,children.1=peer \
        --nbd-server "addr.type=inet,addr.host=$h1,addr.port=$REP_QEMU_PORT" \
        --export type=nbd,id=exp,node-name=mirror,name=bench,writable=on \
        >"$dir/qemu-a.log" 2>&1 &
    a=$!
    rep_qemu_pids+=("$a")
    URI[$1]="nbd://$h1:$REP_QEMU_PORT/bench" PIDS[$1]="$a $b"
    wait_nbd "${URI[$1]}" "$a"
}

replicated_run() {
    local s
    rep_results="$dir/replicated"
    rep_lab_up 2
    rep_solo standalone
    rep_lab_volume 2 2-way
    rep_qemu qemu-quorum
    for s in standalone 2-way qemu-quorum; do
        echo "bench: pre-filling $s ($size)" >&2
        prefill "${URI[$s]}"
    done
    run_rounds "$rep_results" standalone 2-way qemu-quorum
    replicated_cleanup
    rep_lab_up 3
    rep_solo standalone-lab3
    rep_lab_volume 3 3-way
    for s in standalone-lab3 3-way; do
        echo "bench: pre-filling $s ($size)" >&2
        prefill "${URI[$s]}"
    done
    run_rounds "$rep_results" standalone-lab3 3-way
    if [ "$snapshots" != 0 ]; then
        snap_cli=("$lab" vsan 1)
        snap_rows 3-way
    fi
    replicated_cleanup
}

replicated_table() {
    echo
    echo "replicated: fio in the root namespace -> node 1 of a deploy/lab over its bridge" \
        "(veth), $size volumes on /dev/shm, pre-filled, same jobs and rounds;" \
        "quickack on the lab routes; qemu-quorum: $(qemu-storage-daemon --version | head -n 1)," \
        "quorum of a local file and an NBD client of a second daemon on node 2"
    echo
    "$PY" "$repo/tests/bench/tables.py" replicated "$rep_results"
}
