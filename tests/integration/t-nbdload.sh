#!/usr/bin/env bash
# t-nbdload: the benches' load generator (build/nbdload, tests/bench/
# nbdload.c) keeps working, against a standalone vsand with tls = on and a
# PSK file: a few seconds of each workload, plain and over TLS with PSK,
# each run's JSON checked (requests done, TLS as asked, percentiles in
# order) and the written data seen by another client; a wrong key and bad
# arguments are refused with a message.
# timeout: 120
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=deploy/gen-config
. "$VT_REPO/deploy/gen-config"

NBDLOAD="$BUILD/nbdload"
[ -x "$NBDLOAD" ] || die "no $NBDLOAD: make $NBDLOAD"

mkdir -p "$T/psk" "$T/wrong"
gc_tls_psk "$T/psk/keys.psk" alice || die "$GC_ERR"
gc_tls_psk "$T/wrong/keys.psk" alice || die "$GC_ERR" # same user, another key

vt_config nbd.tls=on
printf '[tls]\npsk_file = %s\n' "$T/psk/keys.psk" >>"$CONF"
vsand_start
expect_exit 0 vsan volume create v 64M
expect_exit 0 vsan access grant v alice # a TLS identity sees only its grants
PSK_URI="nbds://alice@127.0.0.1:$PORT/v?tls-psk-file=$T/psk/keys.psk"

# load NAME URI WORKLOAD CONNECTIONS DEPTH TLS: a 2 s run whose JSON says
# it did requests, over TLS or not as TLS (True/False) says.
load() {
    local name=$1 uri=$2 tls=$6
    "$NBDLOAD" "$uri" "$3" 2 "$4" "$5" >"$T/$name.json" 2>"$T/$name.err" ||
        die "$name: nbdload failed: $(cat "$T/$name.err")"
    "$PY" - "$T/$name.json" "$3" "$4" "$5" "$tls" <<'PY' || die "$name: bad result: $(cat "$T/$name.json")"
import json, sys
path, workload, conns, depth, tls = sys.argv[1:]
r = json.load(open(path))
assert r["workload"] == workload and r["connections"] == int(conns), r
assert r["queue_depth"] == int(depth) and r["tls"] == (tls == "True"), r
assert r["requests"] > 0 and r["iops"] > 0 and r["mib_s"] > 0, r
lat = r["latency_us"]
assert 0 < lat["p50"] <= lat["p99"] <= lat["max"], lat
assert r["client_cpu_us_per_request"] > 0, r
PY
    log "  $name: $("$PY" -c 'import json, sys
r = json.load(open(sys.argv[1]))
print("%d requests, %.0f IOPS, %.0f MiB/s, p50 %.0f us, p99 %.0f us" % (r["requests"], r["iops"],
      r["mib_s"], r["latency_us"]["p50"], r["latency_us"]["p99"]))' "$T/$name.json")"
}

# nonzero_bytes: how many bytes of volume v are not zero.
nonzero_bytes() {
    nbdcopy "$URI/v" - | tr -d '\0' | wc -c
}

log "plain: 1 MiB sequential writes leave data another client reads"
[ "$(nonzero_bytes)" -eq 0 ] || die "a new volume is not all zeros"
load write1m-plain "$URI/v" write1m 1 8 False
[ "$(nonzero_bytes)" -gt 0 ] || die "nbdload's writes are not in the volume"
load randwrite4k-plain "$URI/v" randwrite4k 4 8 False
load read1m-plain "$URI/v" read1m 2 4 False

log "TLS with PSK"
load randwrite4k-psk "$PSK_URI" randwrite4k 4 8 True
load randread4k-psk "$PSK_URI" randread4k 2 8 True
load write1m-psk "$PSK_URI" write1m 1 8 True

log "local socket (nbd+unix://)"
if [ "$(id -u)" = 0 ]; then
    load randwrite4k-unix "nbd+unix:///v?socket=$NBD_SOCKET" randwrite4k 2 8 False
else
    log "  skipped: the local socket serves root only"
fi

log "a wrong key fails, naming the URI"
expect_exit 1 "$NBDLOAD" "nbds://alice@127.0.0.1:$PORT/v?tls-psk-file=$T/wrong/keys.psk" randwrite4k 1 2 4
expect_out "nbdload: connection [01]: nbds://alice@127\.0\.0\.1:$PORT/v"
log "  $OUT"

log "bad arguments are refused with a message"
expect_exit 2 "$NBDLOAD" "$URI/v" randwrite4k 1 1
expect_out "usage: nbdload URI WORKLOAD SECONDS CONNECTIONS QUEUE_DEPTH"
expect_exit 2 "$NBDLOAD" "$URI/v" randwrite8k 1 1 1
expect_out 'workload "randwrite8k": expected randwrite4k, randread4k, write1m or read1m'
expect_exit 2 "$NBDLOAD" "$URI/v" randwrite4k 1s 1 1
expect_out 'SECONDS "1s": expected an integer from 1 to 3600'
expect_exit 2 "$NBDLOAD" "$URI/v" randwrite4k 1 0 1
expect_out 'CONNECTIONS "0": expected an integer from 1 to 64'
expect_exit 2 "$NBDLOAD" "$URI/v" randwrite4k 1 1 257
expect_out 'QUEUE_DEPTH "257": expected an integer from 1 to 256'
expect_exit 2 "$NBDLOAD" "127.0.0.1:$PORT" randwrite4k 1 1 1
expect_out 'URI "127.0.0.1:[0-9]+": expected nbd://, nbds://, nbd\+unix:// or nbds\+unix://'
expect_exit 0 vsan volume create tiny 4M
expect_exit 1 "$NBDLOAD" "$URI/tiny" write1m 1 8 1
expect_out "the export \(4194304 bytes\) is too small for 8 x 1048576 bytes"

vsand_stop TERM
log "PASS"
