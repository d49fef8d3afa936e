#!/usr/bin/env bash
# pool-bench.sh - what placement costs (`make bench-pool`, not part of
# make check), fio 4k random writes from the root namespace over the lab
# bridge, as the replicated rows of `make bench`:
#
#  - diskless access: on a 4-node lab, a volume with 2 replicas (nodes 1
#    and 2) written through node 3, which holds no copy and sends each
#    write to both, against the same volume written through node 1, a
#    holder (its own copy plus one peer). Target: diskless >= 0.8x.
#  - placement: that 2-replica volume through node 1 of the 4-node lab
#    against a volume of a 2-node lab (2-way) through node 1: what having
#    more nodes than copies costs a holder.
#
# Rounds alternate the two sides of each ratio (this machine is noisy);
# every row prints IOPS at QD1 and QD16, the ratio, and the CPU time all
# vsands took per write.
#
# Usage: tests/bench/pool-bench.sh BUILD_DIR
set -Eeuo pipefail

# shellcheck source=tests/bench/common.sh
. "$(dirname "$0")/common.sh"
export VSAN_LAB_DIR=${VSAN_LAB_DIR:-/var/tmp/vsan-pool-bench}
export VSAN_BUILD=$build
ROUNDS=${ROUNDS:-3}
RUNTIME=${RUNTIME:-6}
out=$(mktemp -d /tmp/vsan-pool-bench.XXXXXX)

cleanup() {
    set +e
    "$lab" down >/dev/null 2>&1
    rm -rf "$out"
} 2>/dev/null
trap cleanup EXIT

die() {
    echo "pool-bench: $*" >&2
    exit 1
}

# CPU seconds (user + system) all the lab's vsands used so far.
vsand_cpu() {
    local total=0 pid t
    for pid in $(pgrep -x vsand); do
        t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null) || continue
        total=$((total + t))
    done
    awk -v t="$total" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t / hz }'
}

# fio URI QD JSON: 4k random writes for RUNTIME s; prints IOPS and CPU us
# per write of the vsands ("iops cpu_us").
run_fio() {
    local c0 c1
    c0=$(vsand_cpu)
    fio --name=w --ioengine=nbd --uri="$1" --rw=randwrite --bs=4k --size=256M --iodepth="$2" \
        --time_based --runtime="$RUNTIME" --output-format=json --output="$3" >/dev/null 2>&1 ||
        die "fio on $1 failed"
    c1=$(vsand_cpu)
    "$PY" - "$3" "$c0" "$c1" <<'PY'
import json, sys
w = json.load(open(sys.argv[1]))["jobs"][0]["write"]
ios = w["total_ios"] or 1
print("%.0f %.1f" % (w["iops"], (float(sys.argv[3]) - float(sys.argv[2])) * 1e6 / ios))
PY
}

# runs FILE URI [URI2]: ROUNDS runs at QD1 and QD16 into FILE-QD (and
# URI2's into FILE2-QD, alternating with them).
runs() {
    local file=$1 a=$2 b=${3:-} qd
    for qd in 1 16; do
        for _ in $(seq 1 "$ROUNDS"); do
            run_fio "$a" "$qd" "$out/a.json" >>"$out/$file-$qd"
            [ -z "$b" ] || run_fio "$b" "$qd" "$out/b.json" >>"$out/$file-other-$qd"
        done
    done
}

summary() { # FILE_A FILE_B LABEL_A LABEL_B
    local qd
    for qd in 1 16; do
        "$PY" - "$out/$1-$qd" "$out/$2-$qd" "$3" "$4" "$qd" <<'PY'
import statistics, sys
def med(path, col):
    return statistics.median(float(l.split()[col]) for l in open(path))
a, b = med(sys.argv[1], 0), med(sys.argv[2], 0)
print("  QD%-2s %-28s %7.0f IOPS %6.1f us CPU/write" % (sys.argv[5], sys.argv[3], a, med(sys.argv[1], 1)))
print("       %-28s %7.0f IOPS %6.1f us CPU/write   ratio %.2fx" %
      (sys.argv[4], b, med(sys.argv[2], 1), b / a))
PY
    done
}

# 4-node lab: p on nodes 1 and 2.
"$lab" up 4 >/dev/null || die "deploy/lab up 4 failed"
"$lab" vsan 1 volume create p 1G --nodes 1,2 >/dev/null || die "volume create failed"
p1="$("$lab" addr 1)/p"
p3="$("$lab" addr 3)/p"
# The first pass takes the regions for each writer.
run_fio "$p1" 16 "$out/warm.json" >/dev/null
run_fio "$p3" 16 "$out/warm.json" >/dev/null
runs holder "$p1" "$p3" # holder-QD, holder-other-QD: through node 3
"$lab" down >/dev/null

"$lab" up 2 >/dev/null || die "deploy/lab up 2 failed"
"$lab" vsan 1 volume create p 1G >/dev/null || die "volume create failed"
q1="$("$lab" addr 1)/p"
run_fio "$q1" 16 "$out/warm.json" >/dev/null
runs twoway "$q1"

echo "== diskless access: 2-replica volume on a 4-node lab (target: diskless >= 0.8x)"
summary holder holder-other "through node 1 (a holder)" "through node 3 (diskless)"
echo "== placement: a holder's writes, 2 copies of 4 nodes against 2-way on a 2-node lab"
echo "   (the labs run one after the other: compare with care)"
summary holder twoway "2 of 4 nodes, via a holder" "2-node lab, 2-way"
