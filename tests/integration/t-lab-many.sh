#!/usr/bin/env bash
# t-lab-many: a node rejoins a cluster that holds 4,000 volumes. The sync
# round then carries a volume table of about a megabyte, more than one
# corosync message may hold, so it must go out as a stream of pieces
# (docs/ARCHITECTURE.md, policing). On a 3-node lab, 4,000 volumes are
# created on n1 (the time it takes is printed); n3's vsand is killed and
# started again: it must be in sync and list 4,000 volumes within 2
# minutes, and see every replica current within 10 (4,000 resyncs, two
# agreed replica changes each; the times are printed). Then a fourth node
# joins through `lab add` and gets the whole table the same way. During
# the resync n1's admin socket keeps answering (`vsan status` within
# ADMIN_LIMIT seconds each time): a replica change once cost a pass over
# every volume, 8,000 of them kept n1's main loop busy for minutes.
# VT_MANY_VOLUMES sets the count (4000), VT_MANY_RESYNC_LIMIT the second
# bound in seconds (600).
# long: yes
# timeout: 1500
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"
COUNT=${VT_MANY_VOLUMES:-4000}
REJOIN_LIMIT=120
RESYNC_LIMIT=${VT_MANY_RESYNC_LIMIT:-600}
ADMIN_LIMIT=10

# How many volumes node I lists.
count() {
    "$LAB" vsan "$1" --json volume list 2>/dev/null | PYTHONPATH="$VT_DIR" "$PY" -c '
import json, sys
from vtjson import volumes
print(len(volumes(json.load(sys.stdin))))'
}

# How many replicas, over every volume, node I lists as not current.
behind() {
    "$LAB" vsan "$1" --json volume list 2>/dev/null | PYTHONPATH="$VT_DIR" "$PY" -c '
import json, sys
from vtjson import volumes
print(sum(r["state"] != "current" for v in volumes(json.load(sys.stdin)) for r in v["replicas"]))'
}

all_current_on() {
    [ "$(behind "$1")" = 0 ]
}

# Node I's admin socket answers `vsan status` within ADMIN_LIMIT seconds,
# and every replica is current there.
answering_and_current() {
    local start=$SECONDS
    "$LAB" vsan "$1" status >/dev/null 2>&1 || true
    [ $((SECONDS - start)) -le "$ADMIN_LIMIT" ] ||
        lab_fail "n$1 took $((SECONDS - start)) s to answer vsan status (limit $ADMIN_LIMIT s)"
    all_current_on "$1"
}

synced() {
    [ "$(st "$1" 'c["synced"]')" = True ]
}

# Node I is a synced member of a quorate view MEMBERS and lists COUNT
# volumes.
caught_up() {
    full_view "$1" "$2" && synced "$1" && [ "$(count "$1")" = "$COUNT" ]
}

# rejoined I MEMBERS WHAT: waits until node I has caught up, at most
# REJOIN_LIMIT seconds, and prints how long WHAT took.
rejoined() {
    local start=$SECONDS
    wait_until "$REJOIN_LIMIT" caught_up "$1" "$2" ||
        lab_fail "n$1 not caught up ${REJOIN_LIMIT}s after $3: members '$(members "$1")'," \
            "synced $(st "$1" 'c["synced"]'), $(count "$1") volumes listed"
    log "n$1 caught up $((SECONDS - start)) s after $3"
}

lab_up 3

log "creating $COUNT volumes on n1"
start=$SECONDS
# One shell in n1's namespace runs every CLI call: each call is then one
# admin request, not a namespace switch too.
"$LAB" exec 1 env VSAN=$VSAN COUNT="$COUNT" bash -c '
set -e
for ((i = 0; i < COUNT; i++)); do
    "$VSAN" -s vsan-lab volume create "many$i" 1M >/dev/null
done' || lab_fail "creating volume many$(count 1) failed"
created=$((SECONDS - start))
log "$COUNT volumes created in $created s"
for i in 1 2 3; do
    wait_until 60 caught_up "$i" "1 2 3" || lab_fail "n$i lists $(count "$i") volumes, not $COUNT"
done
wait_until 60 all_current_on 1 || lab_fail "n1 lists $(behind 1) replicas not current"

log "kill n3's vsand and start it again"
lab kill 3
wait_until 20 full_view 1 "1 2" || lab_fail "n1 still sees n3: $(members 1)"
start=$SECONDS
lab start 3
rejoined 3 "1 2 3" "its start"
# Then every one of n3's 4,000 replicas resyncs (nothing was written: an
# empty bitmap each), two agreed replica changes apiece.
wait_until "$RESYNC_LIMIT" answering_and_current 1 ||
    lab_fail "$(behind 1) replicas still not current $((SECONDS - start)) s after n3's start"
log "every replica current $((SECONDS - start)) s after n3's start"

log "a fourth node joins: it gets the table too"
start=$SECONDS
lab add
rejoined 4 "1 2 3 4" "lab add"
for i in 1 2 3; do
    wait_until 20 caught_up "$i" "1 2 3 4" || lab_fail "n$i after n4 joined: $(members "$i")"
done
log "ok (create $created s)"
