#!/usr/bin/env bash
# nemesis.sh - faults on a running deploy/lab cluster while the checker
# writes: for SECONDS, again and again, one node at random is killed
# (vsand SIGKILL), powered off (`lab stop`: corosync and vsand SIGKILL,
# seen only after the token timeout), cut off (every packet dropped) or
# cut from its peers only (clients still reach it, and get EIO: no
# quorum); a few seconds later it is started or healed.
#
# Never more than one node is faulty at a time, so a majority always
# keeps quorum and a current replica: after each repair the nemesis lets
# the membership settle, then waits until every node sees every replica
# of VOLUME current before the next fault. A repair that does not
# converge within REPAIR_SECONDS is a vsan bug and ends the nemesis with
# status 1. At the end everything is healed and current.
#
# Every action is printed with the time, and last "nemesis: cycles=N".
# The same SEED replays the same faults (not the same timing);
# NEMESIS_ACTIONS="kill stop" (say) limits the faults to those kinds.
#
# Usage: nemesis.sh SECONDS VOLUME [SEED]   (VSAN_LAB_DIR names the lab;
#        the lab's node count is read from it)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
LAB="$HERE/../../deploy/lab"
PY=/usr/bin/python3
REPAIR_SECONDS=${REPAIR_SECONDS:-60}

[ $# -ge 2 ] || {
    echo "usage: nemesis.sh SECONDS VOLUME [SEED]" >&2
    exit 2
}
DURATION=$1
VOLUME=$2
RANDOM=${3:-$$}
[ -n "${VSAN_LAB_DIR:-}" ] || {
    echo "nemesis: set VSAN_LAB_DIR to the lab's directory" >&2
    exit 2
}
NODES=$(sed -n 's/^N=//p' "$VSAN_LAB_DIR/lab.env")
TOKEN=$(sed -n 's/^TOKEN=//p' "$VSAN_LAB_DIR/lab.env")
read -r -a ACTIONS <<<"${NEMESIS_ACTIONS:-kill stop cut cut-peers}"
# Longer than corosync's detection of a lost node (~2.2 x token): a cut
# shorter than that may split the group only after the heal.
SETTLE_SECONDS=$(((${TOKEN:-1000} * 22 / 10 + 999) / 1000 + 1))

say() {
    printf '%s nemesis: %s\n' "$(date +%T.%N | cut -c1-12)" "$*"
}

lab() {
    local out
    out=$("$LAB" "$@" 2>&1) || {
        say "deploy/lab $* failed: $(tail -n 3 <<<"$out")"
        return 1
    }
}

# The replica states of VOLUME as node I sees them, e.g. "current current outdated".
states() {
    "$LAB" vsan "$1" -t 10 --json volume show "$VOLUME" 2>/dev/null | "$PY" -c '
import json, sys
print(" ".join(r["state"] for r in json.load(sys.stdin)["replicas"]))' 2>/dev/null
}

# Every node sees every replica of VOLUME current, however many it has
# (a copy on every node, or fewer placed ones).
all_current() {
    local i s w
    for ((i = 1; i <= NODES; i++)); do
        s=$(states "$i") || return 1
        [ -n "$s" ] || return 1
        for w in $s; do
            [ "$w" = current ] || return 1
        done
    done
}

wait_current() {
    local deadline=$((SECONDS + REPAIR_SECONDS)) i
    until all_current; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            for ((i = 1; i <= NODES; i++)); do
                say "n$i sees: $(states "$i" || echo "no answer")"
            done
            say "replicas of $VOLUME not all current $REPAIR_SECONDS s after the repair"
            return 1
        fi
        sleep 0.2
    done
}

# sleep_between MIN_TENTHS MAX_TENTHS
sleep_between() {
    local t=$(($1 + RANDOM % ($2 - $1 + 1)))
    sleep "$((t / 10)).$((t % 10))"
}

fault() {
    case $1 in
    kill) lab kill "$2" ;;
    stop) lab stop "$2" ;;
    cut) lab cut "$2" ;;
    cut-peers) lab cut "$2" --peers ;;
    esac
}

repair() {
    case $1 in
    kill | stop) lab start "$2" ;;
    cut | cut-peers) lab heal "$2" ;;
    esac
}

cycles=0
wait_current
start=$SECONDS
while [ $((SECONDS - start)) -lt "$DURATION" ]; do
    node=$((1 + RANDOM % NODES))
    action=${ACTIONS[RANDOM % ${#ACTIONS[@]}]}
    say "cycle $((cycles + 1)): $action n$node"
    fault "$action" "$node"
    sleep_between 10 40
    say "cycle $((cycles + 1)): repair n$node"
    repair "$action" "$node"
    t0=$SECONDS
    sleep "$SETTLE_SECONDS"
    wait_current
    cycles=$((cycles + 1))
    say "cycle $cycles: all replicas current after $((SECONDS - t0)) s"
    sleep_between 5 20
done
say "cycles=$cycles"
