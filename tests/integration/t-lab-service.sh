#!/usr/bin/env bash
# t-lab-service: service addresses on a 3-node lab (NET.101-103, on eth0).
#
#  1. Every node holds its own service address, and NBD answers there.
#  2. A client that knows only n2's service address writes in a loop and
#     reconnects on error (reconnect_writer.py). n2's vsand is killed: the
#     address appears on n3 (the member after 2), the client reconnects to
#     the same address and its writes succeed; the time from the kill to the
#     first write that succeeded again is printed. n2 restarts: once it is
#     current the address goes back to it (every node logs n2's replica
#     current before it logs the move: the order as it happened, not a
#     state looked at afterwards), n3 ends its connections on it and gives
#     it up, and the client goes on against n2.
#  3. `vsan failover 3` moves n3's address to n1 while n3 is up, and the
#     coordinator does not move it back by itself (it would decide so as
#     it applies the move, which it logs); `vsan giveback 3` brings it
#     back. Both refuse what they can't do.
#  4. A node cut off (no quorum) takes nothing and drops what it held,
#     its own address and one it held for another; the majority serves
#     both; after the heal the cut node gets its own address back.
#  5. A node stopped cleanly removes its address as it goes; a survivor
#     takes it; it comes back with the node.
# timeout: 120
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

# The IPv4 addresses on node I's eth0, e.g. "198.51.100.11 198.51.100.101".
addrs() {
    ip -n "vsan-lab-$1" -4 -o addr show dev eth0 | awk '{sub("/.*", "", $4); print $4}' | sort |
        tr '\n' ' ' | sed 's/ $//'
}

# has I A: node I has service address NET.(100+A); lacks I A: it has not.
has() {
    [[ " $(addrs "$1") " == *" $SVC_NET.$((100 + $2)) "* ]]
}

lacks() {
    ! has "$@"
}

# The holder of node I's service address as node J sees it.
holder() {
    st "$2" "[s['holder'] for s in c['services'] if s['owner'] == $1][0]"
}

all_current() {
    local i
    for i in 1 2 3; do
        [ "$("$LAB" vsan "$i" --json volume show s 2>/dev/null | "$PY" -c '
import json, sys
print(" ".join(r["state"] for r in json.load(sys.stdin)["replicas"]))')" = \
            "current current current" ] || return 1
    done
}

# The writer's highest count of writes so far (its events: ok, progress).
writes() {
    [ -f "$T/events" ] || {
        echo 0
        return
    }
    awk '$2 == "ok" || $2 == "progress" {n = $3} END {print n + 0}' "$T/events"
}

# The writer has gone past N writes: writes go on.
wrote_more() {
    [ "$(writes)" -gt "$1" ]
}

# The first "ok" event of the writer after ms $1, as "MS WRITES".
ok_after() {
    awk -v t="$1" '$2 == "ok" && $1 >= t {print $1, $3; exit}' "$T/events"
}

wrote_after() {
    [ -n "$(ok_after "$1")" ]
}

connections() {
    st "$1" 'd["connections"]'
}

no_connections() {
    [ "$(connections "$1")" = 0 ]
}

lab_up 3
SVC_NET=$(ip -n vsan-lab-1 -4 -o addr show dev eth0 | awk '{print $4}' | head -n 1 | cut -d. -f1-3)
lab vsan 1 volume create s 64M
wait_until 20 all_current || lab_fail "the volume never became current on all nodes"

log "1. every node holds its own service address"
for i in 1 2 3; do
    wait_until 10 has "$i" "$i" || lab_fail "n$i lacks its service address: $(addrs "$i")"
    for j in 1 2 3; do
        [ "$i" = "$j" ] || lacks "$i" "$j" || lab_fail "n$i holds n$j's address: $(addrs "$i")"
    done
    size=$(nbdinfo --size "$("$LAB" addr "$i" --service)/s") || lab_fail "nbdinfo on n$i's service address"
    [ "$size" = $((64 * 1024 * 1024)) ] || lab_fail "n$i's service address: size $size"
done
[ "$(holder 2 1)" = 2 ] || lab_fail "n1 says n2's address is on node $(holder 2 1)"
log "1. n1 $(addrs 1); n2 $(addrs 2); n3 $(addrs 3)"

log "2. a client of n2's service address; n2 killed, then restarted"
URI2="$("$LAB" addr 2 --service)/s"
bg_start writer "$PY" "$VT_DIR/reconnect_writer.py" "$URI2" "$T/events" "$T/stop"
WRITER=$BG_PID
wait_until 10 wrote_more 100 || lab_fail "the writer never wrote: $(cat "$T/writer.out" "$T/events")"
killed=$(now_ms)
lab kill 2
wait_until 10 has 3 2 || lab_fail "n3 never took n2's address: $(addrs 3)"
taken=$(now_ms)
wait_until 15 wrote_after "$killed" ||
    lab_fail "the client never wrote again: $(cat "$T/events" "$T/writer.out")"
read -r first n <<<"$(ok_after "$killed")"
log "2. takeover: address on n3 after <= $((taken - killed)) ms; first write that succeeded after the kill: $((first - killed)) ms (write $n)"
lacks 1 2 || lab_fail "n1 took n2's address too: $(addrs 1)"
[ "$(holder 2 1)" = 3 ] || lab_fail "n1 says n2's address is on node $(holder 2 1)"
grep -q ' error ' "$T/events" || lab_fail "the client saw no error: did it ever lose n2?"
wait_until 10 wrote_more $((n + 100)) || lab_fail "the client's writes through n3 stopped: $(cat "$T/events")"
for i in 1 2 3; do
    mark[i]=$(log_mark "$i")
done
restarted=$(now_ms)
lab start 2
wait_until 30 has 2 2 || lab_fail "n2 never got its address back: $(addrs 2); n3: $(addrs 3)"
wait_until 10 lacks 3 2 || lab_fail "n3 kept n2's address: $(addrs 3)"
# The giveback's order as it happened, in the agreed order every node
# logs: n2's replica current first, then the move of its address.
for i in 1 2 3; do
    wait_until 10 logged "$i" "${mark[i]}" "of node 2 now on node 2" ||
        lab_fail "n$i never logged the giveback of n2's address"
    logged_in_order "$i" "${mark[i]}" 'volume "s": replica on node 2 is current' \
        "of node 2 now on node 2" || lab_fail "n$i: the address went back before n2 was current"
done
wait_until 15 wrote_after "$restarted" ||
    lab_fail "the client never wrote after the giveback: $(cat "$T/events")"
log "2. giveback: first write after n2 restarted: $(($(ok_after "$restarted" | cut -d' ' -f1) - restarted)) ms"
wait_until 15 no_connections 3 ||
    lab_fail "n3 still has $(connections 3) connections after giving the address back"
n_before=$(writes)
wait_until 10 wrote_more $((n_before + 100)) ||
    lab_fail "the client's writes stopped after the giveback: $(cat "$T/events")"
touch "$T/stop"
wait_until 10 grep -q stopped "$T/events" || lab_fail "the writer did not stop: $(cat "$T/writer.out")"
grep -q verified "$T/events" || lab_fail "the client's last write did not read back: $(cat "$T/events")"
bg_kill "$WRITER"
log "2. client events: $(awk '$2 != "progress" {printf "%s %s; ", $2, $3}' "$T/events")"

log "3. vsan failover 3, vsan giveback 3 (n3 up)"
mark1=$(log_mark 1)
lab vsan 2 failover 3
wait_until 10 has 1 3 || lab_fail "n1 never took n3's address: $(addrs 1)"
wait_until 10 lacks 3 3 || lab_fail "n3 kept its address after the failover: $(addrs 3)"
[ "$(st 3 "[s['manual'] for s in c['services'] if s['owner'] == 3][0]")" = True ] ||
    lab_fail "the failover is not marked manual"
nbdinfo --size "$("$LAB" addr 3 --service)/s" >/dev/null || lab_fail "nbdinfo on n3's address at n1"
has 1 3 || lab_fail "n3's address went back by itself"
"$LAB" vsan 1 failover 7 >"$T/out" 2>&1 && lab_fail "failover of node 7 (no such node) succeeded"
grep -q "no service address" "$T/out" || lab_fail "failover 7: $(cat "$T/out")"
lab vsan 1 giveback 3
wait_until 10 has 3 3 || lab_fail "n3 never got its address back: $(addrs 3)"
wait_until 10 lacks 1 3 || lab_fail "n1 kept n3's address: $(addrs 1)"
# n1, the coordinator, applied the manual move and then the giveback,
# deciding after each where addresses belong: between the two it must
# not have moved n3's address home by itself.
wait_until 10 logged 1 "$mark1" "of node 3 now on node 3" || lab_fail "n1 never logged the giveback"
if logged_in_order 1 "$mark1" "policing: service address of node 3: moving it to node 3" \
    "of node 3 now on node 3"; then
    lab_fail "the coordinator moved n3's address back by itself"
fi
log "3. failover and giveback: ok"

log "4. n1 holds its own and n3's address, then is cut off"
lab vsan 2 failover 3
wait_until 10 has 1 3 || lab_fail "n1 never took n3's address: $(addrs 1)"
lab cut 1
wait_until 15 not_quorate 1 || lab_fail "n1 kept quorum while cut"
wait_until 10 lacks 1 1 || lab_fail "n1 kept its own address without quorum: $(addrs 1)"
wait_until 10 lacks 1 3 || lab_fail "n1 kept n3's address without quorum: $(addrs 1)"
wait_until 15 has 2 1 || lab_fail "n2 never took n1's address: $(addrs 2)"
wait_until 10 has 3 3 || lab_fail "n3's address did not come home: $(addrs 3)"
lacks 1 2 || lab_fail "the cut n1 took n2's address: $(addrs 1)"
log "4. cut: n1 $(addrs 1); n2 $(addrs 2); n3 $(addrs 3)"
lab heal 1
wait_until 30 full_view 1 "1 2 3" || lab_fail "n1 never rejoined"
wait_until 30 has 1 1 || lab_fail "n1 never got its address back after the heal: $(addrs 1)"
wait_until 10 lacks 2 1 || lab_fail "n2 kept n1's address: $(addrs 2)"
log "4. healed: n1 $(addrs 1); n2 $(addrs 2); n3 $(addrs 3)"

log "5. n2 stopped cleanly (SIGTERM): it removes its address, n3 takes it"
lab stop 2 --clean
wait_until 10 has 3 2 || lab_fail "n3 never took n2's address: $(addrs 3)"
lacks 2 2 || lab_fail "the stopped n2 kept its address: $(addrs 2)"
lab start 2
wait_until 30 has 2 2 || lab_fail "n2 never got its address back: $(addrs 2)"
wait_until 10 lacks 3 2 || lab_fail "n3 kept n2's address: $(addrs 3)"
log "6. n1 holds n3's address and is killed: at its restart it drops what it held"
lab vsan 2 failover 3
wait_until 10 has 1 3 || lab_fail "n1 never took n3's address: $(addrs 1)"
lab kill 1
wait_until 15 has 2 1 || lab_fail "n2 never took n1's address: $(addrs 2)"
has 1 3 || lab_fail "the killed n1 no longer has n3's address: the test would prove nothing"
lab start 1
wait_until 30 has 1 1 || lab_fail "n1 never got its address back: $(addrs 1)"
lacks 1 3 || lab_fail "the restarted n1 kept n3's address: $(addrs 1)"
wait_until 10 has 3 3 || lab_fail "n3's address did not come home: $(addrs 3); n1 $(addrs 1)"
log "6. n1 $(addrs 1); n2 $(addrs 2); n3 $(addrs 3)"
log "ok"
