#!/usr/bin/env bash
# failover.sh - failover times on a 3-node deploy/lab (`make bench-failover`,
# not part of make check): from a fault on node 1 to the first write
# acknowledged through a survivor, for a client doing what vsan-fuse does
# (its connection fails or stops answering: it reconnects to the next node
# and resends the write).
#
# The client (failover.py, on the host) writes 4 KiB blocks at QD1 through
# node 1 to regions node 1 therefore holds, then injects the fault itself
# and takes the time. A write through node 1 that gets no answer within
# 300 ms counts as failed (the client's timeout; it is part of the time).
# Faults, each TRIALS times (default 5), node 1 restored in between:
#   kill  SIGKILL node 1's vsand; corosync stays (CPG sees it in ms)
#   stop  SIGKILL corosync then vsand: a power cut (token timeout, ~2.2 s)
#   cut   drop every packet of node 1 (token timeout, ~2.2 s)
#
# Usage: tests/bench/failover.sh BUILD_DIR
set -Eeuo pipefail

# shellcheck source=tests/bench/common.sh
. "$(dirname "$0")/common.sh"
export VSAN_LAB_DIR=${VSAN_LAB_DIR:-/var/tmp/vsan-failover-bench}
export VSAN_BUILD=$build
TRIALS=${TRIALS:-5}

cleanup() {
    "$lab" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

die() {
    echo "failover: $*" >&2
    exit 1
}

all_current() {
    "$lab" vsan 2 --json volume show fo 2>/dev/null | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if [r["state"] for r in d["replicas"]] == ["current"] * 3 else 1)'
}

wait_current() {
    local deadline=$((SECONDS + 120))
    until all_current; do
        [ "$SECONDS" -lt "$deadline" ] || die "node 1 did not come back current"
        sleep 0.2
    done
}

restore() {
    case $1 in
    cut) "$lab" heal 1 >/dev/null ;;
    *) "$lab" start 1 >/dev/null ;;
    esac
    wait_current
}

"$lab" up 3 >/dev/null || die "deploy/lab up 3 failed"
"$lab" vsan 1 volume create fo 1G >/dev/null
wait_current
echo "failover: fault on node 1 -> first write acknowledged through a survivor (ms)"
for fault in kill stop cut; do
    times=()
    for ((t = 1; t <= TRIALS; t++)); do
        ms=$(PYTHONPATH="$repo/tests/integration" "$PY" "$repo/tests/bench/failover.py" \
            "$lab" "$fault" "$("$lab" addr 1)/fo" "$("$lab" addr 2)/fo" "$("$lab" addr 3)/fo") ||
            die "$fault: the client failed"
        times+=("$ms")
        restore "$fault"
    done
    sorted=$(printf '%s\n' "${times[@]}" | sort -n)
    median=$(echo "$sorted" | sed -n "$(((TRIALS + 1) / 2))p")
    printf '%-5s median %6s ms   all: %s\n' "$fault" "$median" "$(echo "$sorted" | tr '\n' ' ')"
done
