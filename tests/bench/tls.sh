# shellcheck shell=bash
# tls.sh - the NBD over TLS rows of `make bench`, sourced by bench.sh
# (which owns dir, size, seconds, rounds, build, start_vsand, prefill,
# cpu_ticks, wait_nbd, die and cleanup). fio's nbd engine refuses nbds://
# URIs, so every row here, plain included, comes from build/nbdload
# (tests/bench/nbdload.c: libnbd, one handle per connection, asynchronous
# requests), the same tool against every server in the same run:
#
#  - one vsand with [nbd] tls = on, X.509 certificates and a PSK file:
#    "vsand plain" (the reference), "vsand X.509", "vsand PSK" are three
#    ways into the same process and volume;
#  - nbdkit's file plugin on the image bench.sh prefilled, plain (bench.sh's
#    nbdkit) and two more nbdkit on that image with --tls=require, one with
#    --tls-certificates and one with --tls-psk (nbdkit takes one kind per
#    process), the same credentials as vsand, at nbdkit's default priority.
#
# Credentials come from deploy/gen-config's functions (certtool, psktool).
# Workloads: 4k random write QD32 (4 connections x QD8), 1 MiB sequential
# write and read (1 connection x QD8); each BENCH_ROUNDS times per server,
# order rotating, medians shown, with the server's CPU per request.
# shellcheck disable=SC2154,SC2034

tls_results=""
tls_nbdkit_pids=()
declare -A TLS_URI TLS_PIDS

tls_workloads=(
    "4k randwrite QD32 (4 conn x 8), IOPS|randwrite4k 4 8"
    "1M seq write (1 conn x 8), MiB/s|write1m 1 8"
    "1M seq read (1 conn x 8), MiB/s|read1m 1 8"
)

tls_cleanup() {
    local pid
    for pid in "${tls_nbdkit_pids[@]}"; do
        kill -TERM "$pid" && wait "$pid"
    done
}

# tls_credentials: $dir/tls/srv (nbdkit's layout, for both servers),
# $dir/tls/cli (the CA, for clients) and $dir/tls/keys.psk (user bench).
tls_credentials() {
    local t=$dir/tls
    # shellcheck source=deploy/gen-config
    . "$repo/deploy/gen-config"
    mkdir -p "$t/ca" "$t/srv" "$t/cli"
    gc_tls_ca "$t/ca" "vsan bench CA" || die "$GC_ERR"
    gc_tls_cert "$t/ca" "$t/srv/server-key.pem" "$t/srv/server-cert.pem" server "vsan bench" \
        127.0.0.1 localhost || die "$GC_ERR"
    cp "$t/ca/ca-cert.pem" "$t/srv/"
    cp "$t/ca/ca-cert.pem" "$t/cli/"
    gc_tls_psk "$t/keys.psk" bench || die "$GC_ERR"
}

# tls_nbdkit NAME TLS-OPTION: an nbdkit --tls=require on bench.sh's image.
tls_nbdkit() {
    local port
    port=$(free_port)
    nbdkit -f -p "$port" -i 127.0.0.1 --tls=require "$2" file "$dir/nbdkit.img" \
        >"$dir/nbdkit-$1.log" 2>&1 &
    tls_nbdkit_pids+=($!)
    TLS_PIDS[$1]=$!
    TLS_URI[$1]=$(tls_uri "$1" "127.0.0.1:$port" "")
    wait_nbd "${TLS_URI[$1]}" "$!"
}

# tls_uri SERVER HOST:PORT EXPORT: the nbds:// URI with SERVER's credentials.
tls_uri() {
    case $1 in
    *X.509) echo "nbds://$2/$3?tls-certificates=$dir/tls/cli" ;;
    *PSK) echo "nbds://bench@$2/$3?tls-psk-file=$dir/tls/keys.psk" ;;
    esac
}

tls_setup() {
    tls_results=$dir/tls-results
    [ -x "$build/nbdload" ] || die "no $build/nbdload: run make bench"
    tls_credentials
    start_vsand "$dir/tlsdata" "$admin-tls" "[nbd]
tls = on
[tls]
certificates = $dir/tls/srv
psk_file = $dir/tls/keys.psk"
    # A TLS identity sees only its grants: the PSK user, and the X.509
    # client (a CA, no certificate of its own: anonymous).
    local who
    for who in bench anonymous; do
        "$build/vsan" -s "$admin-tls" access grant bench "$who" >/dev/null ||
            die "vsan access grant bench $who failed"
    done
    local hostport=${VSAND_URI#nbd://}
    hostport=${hostport%/bench}
    TLS_URI[vsand plain]=$VSAND_URI TLS_PIDS[vsand plain]=$VSAND_PID
    TLS_URI[vsand X.509]=$(tls_uri X.509 "$hostport" bench) TLS_PIDS[vsand X.509]=$VSAND_PID
    TLS_URI[vsand PSK]=$(tls_uri PSK "$hostport" bench) TLS_PIDS[vsand PSK]=$VSAND_PID
    echo "bench: pre-filling the TLS vsand ($size)" >&2
    prefill "$VSAND_URI"
    TLS_URI[nbdkit plain]=${URI[nbdkit]} TLS_PIDS[nbdkit plain]=${PIDS[nbdkit]}
    tls_nbdkit "nbdkit X.509" "--tls-certificates=$dir/tls/srv"
    tls_nbdkit "nbdkit PSK" "--tls-psk=$dir/tls/keys.psk"
}

# tls_one JSON ROW SERVER NBDLOAD-ARGS...: one nbdload run, recorded with
# the CPU time the server spent over it.
tls_one() {
    local json=$1 row=$2 server=$3 t0 t1
    shift 3
    echo "bench: TLS round $round: $row: $server" >&2
    t0=$(cpu_ticks "${TLS_PIDS[$server]}")
    "$build/nbdload" "${TLS_URI[$server]}" "$1" "$seconds" "$2" "$3" >"$json" 2>"$json.log" ||
        die "nbdload against $server failed: $(tail -n 5 "$json.log")"
    t1=$(cpu_ticks "${TLS_PIDS[$server]}")
    "$PY" "$repo/tests/bench/tables.py" nbdload "$json" "$row" "$server" "$(getconf CLK_TCK)" \
        $((t1 - t0)) >>"$tls_results" || die "cannot read $json"
}

tls_run() {
    local servers=("vsand plain" "vsand X.509" "vsand PSK" "nbdkit plain" "nbdkit X.509" "nbdkit PSK")
    local n=${#servers[@]} round i k row args server
    tls_setup
    for round in $(seq 1 "$rounds"); do
        for i in "${!tls_workloads[@]}"; do
            IFS='|' read -r row args <<<"${tls_workloads[$i]}"
            for ((k = 0; k < n; k++)); do
                server=${servers[(i + round + k) % n]}
                # shellcheck disable=SC2086 # args: workload, connections, depth
                tls_one "$dir/tls-$i-$k.json" "$row" "$server" $args
            done
        done
    done
}

tls_table() {
    echo
    echo "NBD over TLS: build/nbdload against each, ${seconds} s per run, median of $rounds rounds;" \
        "vsand tls = on (plain and TLS clients on one process), nbdkit --tls=require file plugin" \
        "at its default priority; same CA, server certificate and PSK file"
    echo
    "$PY" "$repo/tests/bench/tables.py" tls "$tls_results"
}
