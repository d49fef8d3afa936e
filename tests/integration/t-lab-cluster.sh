#!/usr/bin/env bash
# t-lab-cluster: a 3-node deploy/lab cluster keeps one volume table. A
# volume created, resized or deleted on one node is seen alike (name,
# size, uuid) on every node, and every node serves it over NBD. A killed
# vsand and a powered-off node (lab stop: corosync dies first) are each
# seen to leave by the others, and the test prints how long that took;
# each comes back with the current table, including changes made while it
# was away. Last, `lab add` grows the cluster through deploy/add-node and
# a live corosync reload, and the new node gets the table too, and takes
# a copy of the next volume placed on 2 of the 4 nodes (it has the most
# room).
# timeout: 240
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"
MiB=1048576

# "NAME SIZE UUID" per volume of node I, sorted.
table() {
    "$LAB" vsan "$1" --json volume list | PYTHONPATH="$VT_DIR" "$PY" -c '
import json, sys
from vtjson import volumes
for o in sorted(volumes(json.load(sys.stdin)), key=lambda o: o["name"]):
    print(o["name"], o["size"], o["uuid"])'
}

# Node I's table is the reference one ($T/table).
table_is() {
    table "$1" >"$T/table.n$1" 2>/dev/null && cmp -s "$T/table" "$T/table.n$1"
}

# Every node in NODES has the table of node $1 (which is then in $T/table).
same_tables() {
    local ref=$1 i
    shift
    table "$ref" >"$T/table" || lab_fail "volume list on n$ref failed"
    for i in "$@"; do
        wait_until 10 table_is "$i" ||
            lab_fail "n$i's volume table differs from n$ref's:"$'\n'"$(diff "$T/table" "$T/table.n$i")"
    done
}

# Every node in NODES serves volume NAME over NBD at SIZE bytes.
served_at() {
    local name=$1 size=$2 i got
    shift 2
    for i in "$@"; do
        got=$(nbdinfo --size "$("$LAB" addr "$i")/$name") || lab_fail "n$i does not serve $name"
        [ "$got" = "$size" ] || lab_fail "n$i serves $name at $got bytes, expected $size"
    done
}

# left_within WHO LIMIT_MS NODE...: waits until no NODE lists WHO among
# its members; prints each one's time since T0_MS and fails past LIMIT_MS.
# A poll takes tens of ms, so the times printed are upper bounds.
left_within() {
    local who=$1 limit=$2 i pending elapsed seen
    shift 2
    pending=("$@")
    while [ ${#pending[@]} -gt 0 ]; do
        elapsed=$(($(now_ms) - T0_MS))
        [ "$elapsed" -lt "$limit" ] || lab_fail "n$who still a member of n${pending[0]} after $elapsed ms"
        local still=()
        for i in "${pending[@]}"; do
            # A node lists itself: an empty list is a failed query.
            seen=$(members "$i") || seen=""
            if [ -z "$seen" ] || [[ " $seen " == *" $who "* ]]; then
                still+=("$i")
            else
                elapsed=$(($(now_ms) - T0_MS))
                log "n$i saw n$who leave after $elapsed ms (bound $limit ms)"
                [ "$elapsed" -lt "$limit" ] || lab_fail "n$i took $elapsed ms to see n$who leave (bound $limit ms)"
            fi
        done
        pending=("${still[@]}")
    done
}

lab_up 3
for i in 1 2 3; do
    [ "$(members "$i")" = "1 2 3" ] || lab_fail "n$i's members after lab up: $(members "$i")"
    [ "$(st "$i" 'd["mode"]')" = corosync ] || lab_fail "n$i is not in corosync mode"
done

log "create on n1: every node lists and serves it"
expect_exit 0 "$LAB" vsan 1 volume create v1 64M
same_tables 1 2 3
grep -q "^v1 $((64 * MiB)) " "$T/table" || lab_fail "n1's table lacks v1: $(cat "$T/table")"
served_at v1 $((64 * MiB)) 1 2 3

log "a name taken on another node is refused (exit 5)"
expect_exit 5 "$LAB" vsan 3 volume create v1 32M

log "resize on n2, create on n3, delete on n1"
expect_exit 0 "$LAB" vsan 2 volume resize v1 128M
expect_exit 0 "$LAB" vsan 3 volume create v2 16M
same_tables 3 1 2
grep -q "^v1 $((128 * MiB)) " "$T/table" || lab_fail "resize not in the table: $(cat "$T/table")"
served_at v1 $((128 * MiB)) 1 2 3
served_at v2 $((16 * MiB)) 1 2 3
expect_exit 0 "$LAB" vsan 1 volume delete v2
same_tables 1 2 3
! grep -q '^v2 ' "$T/table" || lab_fail "v2 still listed after its delete"
for i in 1 2 3; do
    ! nbdinfo "$("$LAB" addr "$i")/v2" >/dev/null 2>&1 || lab_fail "n$i still serves the deleted v2"
done

log "kill n2's vsand: n1 and n3 see it leave"
# Timed from its death, not from the signal: on a loaded machine SIGKILL
# may wait for a disk write to finish.
T0_MS=$(now_ms)
lab kill 2
log "vsand died $(($(now_ms) - T0_MS)) ms after SIGKILL"
T0_MS=$(now_ms)
left_within 2 3000 1 3

log "changes while n2 is away reach it when it returns"
expect_exit 0 "$LAB" vsan 1 volume create v3 8M
expect_exit 0 "$LAB" vsan 3 volume resize v1 192M
lab start 2
wait_until 20 full_view 2 "1 2 3" || lab_fail "n2 did not rejoin: members $(members 2)"
same_tables 1 2 3
grep -q '^v3 ' "$T/table" || lab_fail "v3 missing from the table: $(cat "$T/table")"
served_at v3 $((8 * MiB)) 2
served_at v1 $((192 * MiB)) 2

log "power off n3 (corosync first): n1 and n2 see it leave after the token timeout"
T0_MS=$(now_ms)
lab stop 3
left_within 3 10000 1 2
for i in 1 2; do
    quorate "$i" || lab_fail "n$i lost quorum with 2 of 3 nodes"
done
expect_exit 0 "$LAB" vsan 2 volume create v4 8M
lab start 3
wait_until 20 full_view 3 "1 2 3" || lab_fail "n3 did not rejoin: members $(members 3)"
same_tables 2 3 1

# 64 MiB on n1, n2 and n3 only (a placed volume): the node added next has
# the most room, and placement must prefer it. Placement needs each node's
# capacity, which the others announce to a node that (re)joined on their
# next tick.
wait_until 30 announced 3 || lab_fail "n1 never heard every node's capacity"
lab vsan 1 volume create full3 64M --nodes 1,2,3
random_file "$T/full3.raw" $((64 * MiB))
nbdcopy -- "$T/full3.raw" "$("$LAB" addr 1)/full3"

log "lab add: deploy/add-node + corosync-cfgtool -R bring in n4 with the table"
lab add
for i in 1 2 3 4; do
    wait_until 20 full_view "$i" "1 2 3 4" || lab_fail "n$i's members after lab add: $(members "$i")"
done
same_tables 1 4
served_at v4 $((8 * MiB)) 4

log "the added node takes new replicas: it has the most room"
# n4 holds copies of the volumes on every node (those take a copy on
# each) but not of full3: a 2-copy volume's set includes it.
wait_until 30 announced 4 || lab_fail "n1 never heard n4's capacity"
lab vsan 1 volume create p2 64M --replicas 2
nodes=$(LAB_VOL=p2 vs 1 '" ".join(str(r["node"]) for r in d["replicas"])')
case " $nodes " in *" 4 "*) ;; *) lab_fail "p2's copies went to $nodes, not to the new n4" ;; esac
[ -f "$VSAN_LAB_DIR/n4/data/volumes/$(LAB_VOL=p2 vs 1 'd["uuid"]').data" ] ||
    lab_fail "n4 has no data file of p2"
log "p2 on nodes $nodes"
log "ok"
