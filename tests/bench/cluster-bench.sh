#!/usr/bin/env bash
# cluster-bench.sh - what the policing protocol costs, measured on a
# 3-node deploy/lab (`make bench-cluster`, not part of make check):
#
#  - the time to get a region: a 4k write to a region this node has never
#    written (one agreed REQUEST round trip through corosync) against a
#    write to a region it already holds (no message);
#  - the fast-path overhead: fio 4k random write at QD1 on a volume whose
#    regions the node holds, against a standalone vsand in the same
#    namespace (same network path, no corosync);
#  - messages per write: policing messages sent by all nodes for 2 nodes
#    writing different regions (uncontended) and the same region in turn
#    (contended).
#
# Usage: tests/bench/cluster-bench.sh BUILD_DIR
set -Eeuo pipefail

# shellcheck source=tests/bench/common.sh
. "$(dirname "$0")/common.sh"
export VSAN_LAB_DIR=${VSAN_LAB_DIR:-/var/tmp/vsan-cluster-bench}
export VSAN_BUILD=$build
solo=""

cleanup() {
    set +e
    [ -n "$solo" ] && kill "$solo" && wait "$solo"
    "$lab" down >/dev/null 2>&1
} 2>/dev/null
trap cleanup EXIT

die() {
    echo "cluster-bench: $*" >&2
    exit 1
}

counters() { # sum of requests+releases sent by every node
    local total=0 n
    for i in 1 2 3; do
        n=$("$lab" vsan "$i" --json status | "$PY" -c '
import json, sys
p = json.load(sys.stdin)["cluster"]["policing"]
print(p["requests_sent"] + p["releases_sent"])')
        total=$((total + n))
    done
    echo "$total"
}

"$lab" up 3 >/dev/null || die "deploy/lab up 3 failed"
"$lab" vsan 1 volume create bench 4G >/dev/null
u1="$("$lab" addr 1)/bench"
u2="$("$lab" addr 2)/bench"

echo "== time to get a region (node 1, 4k writes, 200 regions)"
"$lab" exec 1 "$PY" - "$u1" <<'PY'
import statistics, sys, time
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
buf = b"\xab" * 4096
region = 4 << 20
def timed(off):
    t = time.perf_counter()
    h.pwrite(buf, off)
    return (time.perf_counter() - t) * 1e6
first = [timed(i * region) for i in range(200)]
held = [timed(i * region + 8192) for i in range(200)]
print("first write to a region: median %.0f us, p90 %.0f us" %
      (statistics.median(first), statistics.quantiles(first, n=10)[8]))
print("write to a held region:  median %.0f us, p90 %.0f us" %
      (statistics.median(held), statistics.quantiles(held, n=10)[8]))
print("time to get a region:    %.0f us (median difference)" %
      (statistics.median(first) - statistics.median(held)))
PY

echo "== messages per write"
writes() { # URI OFFSET COUNT
    "$PY" - "$@" <<'PY'
import sys
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
off, n = int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    h.pwrite(b"\x5a" * 4096, off + (i % 16) * 4096)
PY
}
c0=$(counters)
writes "$u1" $((100 << 20)) 1000 & w1=$!
writes "$u2" $((200 << 20)) 1000 & w2=$!
wait "$w1" "$w2"
c1=$(counters)
echo "uncontended (2 nodes x 1000 writes, own regions): $((c1 - c0)) messages," \
    "$(awk -v m=$((c1 - c0)) 'BEGIN { printf "%.4f", m / 2000 }') per write"
for i in $(seq 1 50); do
    writes "$u1" $((300 << 20)) 1
    writes "$u2" $((300 << 20)) 1
done
c2=$(counters)
echo "contended (2 nodes alternating on one region, 100 writes): $((c2 - c1)) messages," \
    "$(awk -v m=$((c2 - c1)) 'BEGIN { printf "%.2f", m / 100 }') per write"

echo "== fast path: fio 4k randwrite QD1, node 1 (cluster, regions held) vs standalone vsand"
dir=$(mktemp -d /dev/shm/vsan-cluster-bench.XXXXXX)
mkdir "$dir/data"
cat >"$dir/solo.conf" <<EOF
[node]
data_dir = $dir/data
pid_file = $dir/solo.pid
[nbd]
listen = $("$lab" addr 1 | sed 's|nbd://||; s|:10809|:10819|')
[admin]
socket = vsan-cluster-bench-solo
nbd_socket = $dir/solo.nbd.sock
[log]
syslog = no
level = warning
EOF
ip netns exec vsan-lab-1 "$build/vsand" -f -c "$dir/solo.conf" >"$dir/solo.log" 2>&1 &
solo=$!
until "$lab" exec 1 "$build/vsan" -s vsan-cluster-bench-solo status >/dev/null 2>&1; do sleep 0.05; done
"$lab" exec 1 "$build/vsan" -s vsan-cluster-bench-solo volume create bench 1G >/dev/null
usolo="${u1%:10809/bench}:10819/bench"
fio_qd1() {
    "$lab" exec 1 fio --name=qd1 --ioengine=nbd --uri="$1" --rw=randwrite --bs=4k --size=256M \
        --iodepth=1 --time_based --runtime=8 --output-format=json --output="$2" >/dev/null 2>&1
}
fio_qd1 "$u1" "$dir/warm.json" # the first pass takes the regions
for round in 1 2 3; do
    fio_qd1 "$u1" "$dir/cluster-$round.json"
    fio_qd1 "$usolo" "$dir/solo-$round.json"
done
"$PY" - "$dir" <<'PY'
import json, statistics, sys
d = sys.argv[1]
def lat(kind):
    return statistics.median(json.load(open("%s/%s-%d.json" % (d, kind, r)))["jobs"][0]
                             ["write"]["lat_ns"]["mean"] / 1000 for r in (1, 2, 3))
c, s = lat("cluster"), lat("solo")
print("QD1 mean latency: cluster %.1f us, standalone %.1f us, overhead %.1f us (%.0f%%)" %
      (c, s, c - s, 100 * (c - s) / s))
PY
rm -rf "$dir"
