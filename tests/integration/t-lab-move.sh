#!/usr/bin/env bash
# t-lab-move: moving replicas between nodes on a 4-node lab (replica add,
# remove, move, node drain), under fio with verify, snapshots included.
#
#  1. m (128M, --nodes 1,2) gets data and a snapshot s1; then more data.
#  2. `replica move m 2 3` while fio (crc32c verify) writes through
#     diskless n4: no fio error; n3 holds a data file and n2 none; the
#     replicas are n1 and n3, current, byte-identical; m@s1 reads what m
#     held at the cut through n3 (filled by the move) and n2 (diskless now).
#     vsan-fuse, mounted before the move, lists the new replicas without a
#     remount and reads what the nodes serve. n2's side file of s1 is
#     empty (its space came back), n3's holds the chunks.
#  3. `replica add m` without a node: placement picks a member without a
#     copy; it becomes current and identical; `replica remove` drops it.
#     3b. `volume set r3 --replicas 3` adds a copy where placement puts it
#     (current), `--replicas 1` removes two; 0 is refused (21).
#  4. A replica removed while its node is away: with three copies, node C
#     killed, `replica remove m C`; when C returns it learns the set in the
#     sync round, drops its data file and serves m diskless, correctly.
#  5. `node drain 1` under fio through n4: n1 holds no copy afterwards,
#     fio sees no error, the two copies are identical. deploy/remove-node
#     refuses n1 before the drain and writes corosync.conf without it after.
#  6. Bad input, each a precise error (exit code) and the set unchanged:
#     add on a node holding one (24), remove from a node holding none (24),
#     a removal below min_current (24), add on a node that is no member
#     (22), a volume that does not exist (4), a move from a node without
#     a copy (24, nothing added). A volume of one copy moves (its removal
#     counts the copies before the move's add).
#     6c. A volume on 2,3 with 3 down and data written; its only current
#     copy moved 2 -> 4 (min_current = 1); when 3 returns it resyncs from
#     a copy that was not there when it left, and holds the data.
#  7. The automatic rebuild: with replace_after = 3 s on the coordinator,
#     a holder killed under fio verify (through n2: no error) is replaced
#     by a copy on another node, rebuilt in
#     full (at 8 MiB/s: its recovery status shows in `volume show` on
#     another node and in vsan-fuse's --status) and current; the volume
#     reads the same; the killed node drops its copy when it returns.
#  8. A drain with nowhere to go: a4 has a copy on every node, so `node
#     drain` stops at it (exit 23, "every member holds a replica of it
#     already") and its set stays.
# timeout: 600
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

LAB_VOL=m

# The nodes holding a data file of m: "1 3".
holders() {
    lab_holders "$UUID"
}

# The replica set as node I sees it: "1:current 3:current".
set_of() {
    vs "$1" '" ".join("%d:%s" % (r["node"], r["state"]) for r in d["replicas"])'
}

set_is() {
    [ "$(set_of "$1")" = "$2" ]
}

# Every node sees the set SET.
everyone_sees() {
    local i
    for i in 1 2 3 4; do
        set_is "$i" "$1" || return 1
    done
}

# The data files of the holders are byte-identical.
holders_identical() {
    lab_holders_identical "$1" "$UUID"
}

# run_fio LABEL [LOOPS [NODE]]: fio with crc32c verify through NODE (4),
# in the background (FIO: its pid; FIO_NODE: the node).
run_fio() {
    FIO_NODE=${3:-4}
    bg_start "fio$1" fio --name=m --ioengine=nbd --uri="$("$LAB" addr "$FIO_NODE")/m" --rw=randwrite \
        --bs=4k --iodepth=8 --offset=64M --size=32M --loops="${2:-4}" --verify=crc32c \
        --verify_fatal=1 --do_verify=1 --verify_state_save=0
    FIO=$BG_PID
}

fio_ok() {
    wait_until 240 proc_gone "$FIO" || lab_fail "$1: fio is stuck"
    wait "$FIO" || lab_fail "$1: fio failed: $(tail -n 20 "$T/fio$1.out")"
    grep -qi "verify.*\(bad\|mismatch\)" "$T/fio$1.out" &&
        lab_fail "$1: fio reported verify errors: $(grep -i verify "$T/fio$1.out")"
    log "$1: fio through n$FIO_NODE: no error, no verify failure"
}

# refused EXIT TEXT ARGS...: `vsan ARGS` on n1 exits EXIT saying TEXT.
refused() {
    local want=$1 text=$2 rc=0
    shift 2
    "$LAB" vsan 1 "$@" >"$T/bad.out" 2>&1 || rc=$?
    [ "$rc" = "$want" ] || lab_fail "$*: exit $rc, not $want: $(cat "$T/bad.out")"
    grep -qF -- "$text" "$T/bad.out" || lab_fail "$*: said $(cat "$T/bad.out"), not \"$text\""
    log "6. $*: $(cat "$T/bad.out")"
}

lab_up 4
wait_until 30 full_view 1 "1 2 3 4" || lab_fail "n1 never saw the four nodes"
wait_until 30 announced 4 || lab_fail "n1 never heard every node's capacity"

log "1. m on nodes 1 and 2, with a snapshot"
lab vsan 1 volume create m 128M --nodes 1,2
UUID=$(vs 1 'd["uuid"]')
wait_until 20 everyone_sees "1:current 2:current" || lab_fail "m's set: $(set_of 4)"
nbdpy "$(addr 4)/m" <<'PY' || lab_fail "writing m's first data failed"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(0, 64 << 20, 1 << 20):
    h.pwrite(bytes([i >> 20 | 1]) * 65536, i)
PY
nbdcopy -- "$(addr 1)/m" "$T/s1.raw"
lab vsan 1 snapshot create m s1
nbdpy "$(addr 4)/m" <<'PY' || lab_fail "writing m after s1 failed"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in range(0, 64 << 20, 2 << 20):
    h.pwrite(b"after-s1" * 8192, i)
PY

log "2. replica move m 2 3 under fio through n4, m mounted with vsan-fuse"
nodes=""
for i in 1 2 3 4; do
    a=$("$LAB" addr "$i")
    nodes+="${nodes:+,}${a#nbd://}"
done
mkdir -p "$T/fuse"
bg_start vsan-fuse "$BUILD/vsan-fuse" "$T/fuse" -f --nodes "$nodes" --volume m
on_exit "fusermount3 -u -z '$T/fuse'"
wait_until 20 test -f "$T/fuse/m" || lab_fail "vsan-fuse did not mount: $(cat "$T/vsan-fuse.out")"
# The replicas vsan-fuse knows from m's description: "1 2".
fuse_replicas() {
    "$PY" -c '
import os, sys
v = os.getxattr(sys.argv[1], "user.vsan.replicas").decode()
print(" ".join(sorted(r.split("@")[0] for r in v.split(",") if r)))' "$T/fuse/m"
}
[ "$(fuse_replicas)" = "1 2" ] || lab_fail "vsan-fuse knows replicas \"$(fuse_replicas)\", not 1 2"
run_fio 2
lab vsan 1 replica move m 2 3
fio_ok 2
[ "$(holders)" = "1 3" ] || lab_fail "after the move m's data files are on $(holders), not 1 3"
wait_until 20 everyone_sees "1:current 3:current" || lab_fail "after the move: $(set_of 4)"
holders_identical 2
for i in 3 2; do
    same "$i" m@s1 "$T/s1.raw" || lab_fail "m@s1 through n$i is not what m held at the cut"
done
# s1's side file: n3 holds the chunks the writes after the cut copied, n2
# (diskless now) none: its space came back with the removal.
side_blocks() {
    stat -c %b "$VSAN_LAB_DIR/n$1/data/snapshots/$UUID".*.data | awk '{s += $1} END {print s}'
}
[ "$(side_blocks 3)" -gt 0 ] || lab_fail "n3's side file of m@s1 holds nothing"
[ "$(side_blocks 2)" = 0 ] || lab_fail "n2 kept $(side_blocks 2) blocks of m@s1's side file"
wait_until 20 eval '[ "$(fuse_replicas)" = "1 3" ]' ||
    lab_fail "vsan-fuse never saw the move: it knows replicas \"$(fuse_replicas)\""
nbdcopy -- "$(addr 1)/m" "$T/m2.raw"
cmp -s "$T/fuse/m" "$T/m2.raw" || lab_fail "m read through vsan-fuse differs from m through n1"
log "2. moved: n3 holds m and its snapshot; n2 reads them from a current copy; vsan-fuse saw the move"

log "3. replica add without a node, then remove"
"$LAB" vsan 1 --json replica add m >"$T/add.json" || lab_fail "replica add m failed"
added=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["replica"])' "$T/add.json")
case "$added" in 2 | 4) ;; *) lab_fail "replica add m picked node \"$added\", not 2 or 4" ;; esac
wait_until 60 everyone_sees "$(echo "1:current 3:current $added:current" | tr ' ' '\n' | sort | xargs)" ||
    lab_fail "n$added's new replica never became current: $(set_of 1)"
holders_identical 3
same "$added" m@s1 "$T/s1.raw" || lab_fail "m@s1 through n$added differs after the add"
lab vsan 1 replica remove m "$added"
wait_until 20 everyone_sees "1:current 3:current" || lab_fail "after the remove: $(set_of 4)"
[ "$(holders)" = "1 3" ] || lab_fail "after the remove m's data files are on $(holders)"
log "3. n$added added, current, removed"

log "3b. volume set --replicas 3, then 1"
lab vsan 1 volume create r3 16M --nodes 1,2
lab vsan 1 volume set r3 --replicas 3
[ "$(LAB_VOL=r3 set_of 1 | grep -o current | wc -l)" = 3 ] ||
    lab_fail "after --replicas 3: $(LAB_VOL=r3 set_of 1)"
lab vsan 1 volume set r3 --replicas 1
wait_until 20 eval '[ "$(LAB_VOL=r3 set_of 4)" = "$(LAB_VOL=r3 set_of 1)" ]' ||
    lab_fail "the nodes disagree on r3's set"
[ "$(LAB_VOL=r3 set_of 1)" = "1:current" ] || lab_fail "after --replicas 1: $(LAB_VOL=r3 set_of 1)"
expect_exit 21 "$LAB" vsan 1 volume set r3 --replicas 0
lab vsan 1 volume delete r3
log "3b. r3 went from 2 to 3 copies, then to 1 (the highest ids went first)"

log "4. a replica removed while its node is away"
lab vsan 1 replica add m 2
wait_until 60 everyone_sees "1:current 2:current 3:current" || lab_fail "n2 never current: $(set_of 1)"
lab kill 2
wait_until 20 states_are 1 "current outdated current" || lab_fail "n2 not outdated: $(set_of 1)"
lab vsan 1 replica remove m 2
wait_until 20 set_is 1 "1:current 3:current" || lab_fail "n2's replica not removed: $(set_of 1)"
lab start 2
wait_until 60 everyone_sees "1:current 3:current" || lab_fail "n2 back: $(set_of 2)"
wait_until 20 eval '[ "$(holders)" = "1 3" ]' || lab_fail "n2 kept its data file: $(holders)"
[ "$(vs 2 'd["mirror"]["local"]')" = diskless ] || lab_fail "n2's copy is $(vs 2 'd["mirror"]["local"]')"
nbdcopy -- "$(addr 2)/m" "$T/n2.raw"
same 1 m "$T/n2.raw" || lab_fail "m through diskless n2 differs from m through n1"
log "4. n2 dropped its copy on return and reads m from a current one"

# remove-node refuses a node that holds a replica (n1 holds m).
VSAN_CLI="$LAB vsan 2" "$VT_REPO/deploy/remove-node" --conf "$VSAN_LAB_DIR/corosync.conf" --node 1 \
    --out "$T/rm" >"$T/rm.out" 2>&1 && lab_fail "remove-node took out n1, which holds m"
grep -q "still holds replicas of: m" "$T/rm.out" || lab_fail "remove-node said: $(cat "$T/rm.out")"

log "5. node drain 1 under fio through n4"
run_fio 5
"$LAB" vsan 1 node drain 1 >"$T/drain.out" 2>&1 || lab_fail "node drain 1 failed: $(cat "$T/drain.out")"
fio_ok 5
case " $(holders) " in *" 1 "*) lab_fail "n1 still holds m after the drain: $(holders)" ;; esac
[ "$(holders | wc -w)" = 2 ] || lab_fail "after the drain m's data files are on $(holders)"
holders_identical 5
log "5. $(cat "$T/drain.out")"
VSAN_CLI="$LAB vsan 2" "$VT_REPO/deploy/remove-node" --conf "$VSAN_LAB_DIR/corosync.conf" --node 1 \
    --out "$T/rm" >"$T/rm.out" 2>&1 || lab_fail "remove-node of drained n1 failed: $(cat "$T/rm.out")"
grep -q "nodeid: 1$" "$T/rm/corosync.conf" && lab_fail "remove-node left n1 in corosync.conf"
[ "$(grep -c "nodeid:" "$T/rm/corosync.conf")" = 3 ] || lab_fail "remove-node: $(cat "$T/rm/corosync.conf")"
log "5. remove-node: refused while n1 held m; wrote a corosync.conf without n1 once drained"

log "6. bad input"
H1=$(holders | cut -d' ' -f1)
N1=
for i in 4 3 2 1; do case " $(holders) " in *" $i "*) ;; *) N1=$i ;; esac; done
before=$(set_of 1)
refused 24 "holds a replica of it already" replica add m "$H1"
refused 24 "holds no replica of it" replica remove m "$N1"
refused 24 "fewer than 2 current copies" replica remove m "$H1"
refused 22 "is not a member" replica add m 9
refused 4 "no such volume" replica add nosuch
refused 24 "holds no replica of it" replica move m "$N1" "$H1"
[ "$(set_of 1)" = "$before" ] || lab_fail "bad input changed the set: $(set_of 1), was $before"

log "6b. a single copy moves"
lab vsan 1 volume create one 16M --nodes 2
lab vsan 1 replica move one 2 4
[ "$(LAB_VOL=one set_of 1)" = "4:current" ] || lab_fail "one's set after its move: $(LAB_VOL=one set_of 1)"
log "6b. one moved from n2 to n4"

log "6c. the only current copy moved while the other is outdated: it still resyncs what it missed"
# n1 takes the requests, with min_current = 1: the removal may leave the
# new copy as the only current one.
printf '[cluster]\nmin_current = 1\n' >>"$VSAN_LAB_DIR/n1/vsan.conf"
lab kill 1
lab start 1
wait_until 30 full_view 1 "1 2 3 4" || lab_fail "n1 never saw the four nodes again"
wait_until 30 announced 4 || lab_fail "n1 never heard every node's capacity"
lab vsan 1 volume create o3 64M --nodes 2,3
wait_until 30 eval '[ "$(LAB_VOL=o3 set_of 1)" = "2:current 3:current" ]' ||
    lab_fail "o3's set: $(LAB_VOL=o3 set_of 1)"
lab kill 3
wait_until 20 eval '[ "$(LAB_VOL=o3 set_of 1)" = "2:current 3:outdated" ]' ||
    lab_fail "n3 not outdated: $(LAB_VOL=o3 set_of 1)"
random_file "$T/o3.raw" $((64 << 20))
nbdcopy -- "$T/o3.raw" "$(addr 2)/o3"
lab vsan 1 replica move o3 2 4
[ "$(LAB_VOL=o3 set_of 1)" = "3:outdated 4:current" ] ||
    lab_fail "o3's set after the move: $(LAB_VOL=o3 set_of 1)"
lab start 3
wait_until 90 eval '[ "$(LAB_VOL=o3 set_of 1)" = "3:current 4:current" ]' ||
    lab_fail "n3 never current again: $(LAB_VOL=o3 set_of 1)"
O3=$(LAB_VOL=o3 vs 1 'd["uuid"]')
for i in 3 4; do
    cmp -s "$VSAN_LAB_DIR/n$i/data/volumes/$O3.data" "$T/o3.raw" ||
        lab_fail "n$i's copy of o3 is not what was written (n3 missed it before n4's copy existed)"
done
lab vsan 1 volume delete o3
log "6c. n3 resynced from a copy that was not there when it left: both hold the data"

log "7. automatic rebuild: a holder gone longer than replace_after (3 s)"
# n1, the lowest id and so the coordinator, gets the short replace_after;
# n1 and n2, where the new copy goes, fill copies at 8 MiB/s, so that the
# recovery status can be seen while it runs.
printf '[cluster]\nreplace_after = 3\n' >>"$VSAN_LAB_DIR/n1/vsan.conf"
for i in 1 2; do
    sed -i 's/^resync_rate *=.*/resync_rate = 8M/' "$VSAN_LAB_DIR/n$i/vsan.conf"
    lab kill "$i"
    lab start "$i"
done
wait_until 30 full_view 1 "1 2 3 4" || lab_fail "n1 never saw the four nodes again"
GONE=$(holders | cut -d' ' -f2)
KEPT=$(holders | cut -d' ' -f1)
run_fio 7 8 2
lab kill "$GONE"
# The copy being filled, as n$KEPT's volume show and vsan-fuse's
# description name it.
shown_recovery() {
    [ "$(vs "$KEPT" 'len(d["recovery"])')" = 1 ]
}
wait_until 60 shown_recovery || lab_fail "no recovery status shown on n$KEPT: $(vs "$KEPT" 'd')"
log "7. recovery shown on n$KEPT: $(vs "$KEPT" 'd["recovery"]')"
fuse_recovery() {
    "$PY" -c 'import os, sys; print(os.getxattr(sys.argv[1], "user.vsan.recovery").decode())' \
        "$T/fuse/m"
}
wait_until 20 eval '[ -n "$(fuse_recovery)" ]' ||
    lab_fail "vsan-fuse never showed the recovery: $("$BUILD/vsan-fuse" --status "$T/fuse")"
log "7. vsan-fuse --status: $("$BUILD/vsan-fuse" --status "$T/fuse" | tr '\n' ' ')"
rebuilt() {
    local s
    s=$(set_of 2)
    case " $s " in *" $GONE:"*) return 1 ;; esac
    [ "$(echo "$s" | grep -o current | wc -l)" = 2 ]
}
wait_until 90 rebuilt || lab_fail "n$GONE's copy was not rebuilt elsewhere: $(set_of 2)"
fio_ok 7
logged 1 0 "rebuilding it on node" || lab_fail "n1 did not log the rebuild"
nbdcopy -- "$(addr "$KEPT")/m" "$T/after7.raw"
same 2 m "$T/after7.raw" || lab_fail "m through n2 differs from m through n$KEPT after the rebuild"
log "7. n$GONE's copy rebuilt: $(set_of 2)"
lab start "$GONE"
wait_until 60 eval '! [ -f "$VSAN_LAB_DIR/n$GONE/data/volumes/$UUID.data" ]' ||
    lab_fail "n$GONE kept its replaced copy's data file"
holders_identical 7
[ "$(holders | wc -w)" = 2 ] || lab_fail "after the rebuild m's data files are on $(holders)"
case " $(holders) " in *" $KEPT "*) ;; *) lab_fail "the rebuild dropped n$KEPT's copy: $(holders)" ;; esac
log "7. n$GONE returned and dropped its copy; m is on $(holders)"

log "8. a drain with no room elsewhere: a4 has a copy on every node"
lab vsan 1 volume create a4 16M --replicas 4
wait_until 60 eval '[ "$(LAB_VOL=a4 set_of 1)" = "1:current 2:current 3:current 4:current" ]' ||
    lab_fail "a4's set: $(LAB_VOL=a4 set_of 1)"
for i in 4 3 2 1; do case " $(holders) " in *" $i "*) ;; *) FREE=$i ;; esac; done
rc=0
"$LAB" vsan 1 node drain "$FREE" >"$T/drain8.out" 2>&1 || rc=$?
[ "$rc" = 23 ] || lab_fail "node drain $FREE: exit $rc, not 23: $(cat "$T/drain8.out")"
grep -qF 'volume "a4": every member holds a replica of it already' "$T/drain8.out" &&
    grep -qF "stopped at volume \"a4\"" "$T/drain8.out" ||
    lab_fail "node drain $FREE said: $(cat "$T/drain8.out")"
[ "$(LAB_VOL=a4 set_of 1)" = "1:current 2:current 3:current 4:current" ] ||
    lab_fail "the refused drain changed a4's set: $(LAB_VOL=a4 set_of 1)"
log "8. $(tr '\n' ' ' <"$T/drain8.out")"
log "t-lab-move: ok"
