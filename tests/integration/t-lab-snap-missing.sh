#!/usr/bin/env bash
# t-lab-snap-missing: on a 3-node lab, n3's store can't cut snapshot s (a
# directory stands where its side file goes): n3's copy is failed, and n3
# keeps s's record. n3 then wins a sync round: n2 and n1 stop, n3
# restarts alone (the record survives it), n2 returns and loads n3's
# state (it has the higher table version), then n1. Nobody drops s: a@s
# reads its content through every node (n3 opens it from its record and
# reads a current copy: its own, failed, serves nothing), and a client of
# it on n3 makes a delete busy (exit 10).
# A rollback of a to s through n3 reads s from a current copy; a `replica
# replace` on n3 cuts s there and rebuilds it, and a@s and a read s's
# content through every node.
# timeout: 240
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

LAB_VOL=a

# listed I: node I's `vsan snapshot list a` names s.
listed() {
    "$LAB" vsan "$1" snapshot list a 2>/dev/null | grep -q '^s '
}

lab_up 3
lab vsan 1 volume create a 16M
wait_until 30 all_current || lab_fail "a never became current everywhere: $(states 1)"
random_file "$T/a.raw" $((16 << 20))
nbdcopy -- "$T/a.raw" "$(addr 1)/a"

log "n3's store can't cut the next snapshots; s cut through n1"
uuid=$(vs 3 'd["uuid"]')
version=$(st 3 'c["table_version"]')
blocks=()
for id in $(seq $((version + 1)) $((version + 8))); do
    blocks+=("$VSAN_LAB_DIR/n3/data/snapshots/$uuid.$id.data")
done
mkdir "${blocks[@]}"
lab vsan 1 snapshot create a s
wait_until 10 states_are 1 "current current outdated" || lab_fail "n3's copy not failed: $(states 1)"
rmdir "${blocks[@]}"
listed 3 || lab_fail "n3 has no record of s"
random_file "$T/b.raw" $((16 << 20))
nbdcopy -- "$T/b.raw" "$(addr 1)/a"

log "n2 and n1 stop, n3 restarts alone, then n2 and n1 return: n3 wins"
lab stop 2
wait_until 10 states_are 1 "current outdated outdated" || lab_fail "n2 not outdated: $(states 1)"
lab stop 1
lab stop 3
lab start 3
listed 3 || lab_fail "n3 lost the record of s at its restart"
mark=$(log_mark 2)
lab start 2
wait_until 30 full_view 2 "2 3" || lab_fail "n2 and n3 did not form a group"
logged 2 "$mark" "in sync with node 3" || lab_fail "n3 did not win the round: $(since 2 "$mark" | grep 'in sync')"
listed 2 || lab_fail "n2 dropped s in n3's round"
lab start 1
wait_until 30 full_view 1 "1 2 3" || lab_fail "n1 did not rejoin"
listed 1 || lab_fail "n1 dropped s"
wait_until 60 states_are 1 "current current outdated" || lab_fail "n2 not resynced: $(states 1)"
for i in 1 2 3; do
    same "$i" a@s "$T/a.raw" || lab_fail "a@s through n$i differs from its content"
done

log "a client of a@s on n3, which lacks s, makes a delete through n1 busy"
bg_start reader env PATH="/usr/bin:$PATH" nbdsh -u "$(addr 3)/a@s" -c "
import os, time
h.pread(4096, 0)
print('open', flush=True)
while not os.path.exists('$T/close'):
    time.sleep(0.05)
h.pread(4096, 0)
print('read again', flush=True)
"
reader=$BG_PID
wait_until 30 grep -q '^open' "$T/reader.out" || lab_fail "no client opened a@s on n3: $(cat "$T/reader.out")"
rc=0
"$LAB" vsan 1 snapshot delete a s >"$T/delete.out" 2>&1 || rc=$?
touch "$T/close"
[ "$rc" -eq 10 ] || lab_fail "a delete of s read through n3 exited $rc, not 10 (busy): $(cat "$T/delete.out")"
wait_until 30 proc_gone "$reader" || lab_fail "the client of a@s did not finish"
grep -q '^read again' "$T/reader.out" || lab_fail "a@s on n3 failed after the refused delete: $(cat "$T/reader.out")"
listed 1 || lab_fail "s is gone after a refused delete"

log "a rolled back to s through n3, which lacks it"
lab vsan 3 snapshot rollback a s
for i in 1 2; do
    same "$i" a "$T/a.raw" || lab_fail "a through n$i differs from s after the rollback"
done

log "a replace on n3 cuts s there and rebuilds it"
lab vsan 3 replica replace a
wait_until 60 all_current || lab_fail "n3 not current after its replace: $(states 1)"
for i in 1 2 3; do
    same "$i" a@s "$T/a.raw" || lab_fail "a@s through n$i differs after the replace"
    same "$i" a "$T/a.raw" || lab_fail "a through n$i differs after the replace"
done
log "ok"
