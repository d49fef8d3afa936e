#!/usr/bin/env bash
# t-lab-pool: replica count, placement and diskless access on a 4-node lab.
#
#  1. Every node announces its capacity: `vsan pool status` on node 1 lists
#     four nodes with a capacity.
#  2. `volume create p 256M --replicas 2` puts a data file on exactly two
#     nodes; `volume show` lists only those two under replicas, current; the
#     other two keep a record and no data file (their local copy: diskless).
#  3. fio (nbd engine, crc32c verify) writes and verifies through a diskless
#     node: no error; the two copies are byte-identical afterwards.
#  4. Again through the diskless node while one replica node's vsand is
#     killed and restarted: fio sees no error, the node resyncs and the two
#     copies are identical again.
#  5. The witness rule: with n$DISKLESS's mirror packets to one replica
#     dropped, a write through it succeeds and that replica is outdated on
#     the other's word (PMSG_OUTDATE); with its packets to both dropped, the
#     write fails and neither is outdated: no copy took it, so nobody may
#     vouch against the other, and the failed write does not land later
#     (the links it was queued on are aborted, not closed). (Before
#     PMSG_OUTDATE the first write failed: the cluster refused a diskless
#     node's own outdate; before the abort, the failed write landed after
#     the next one once the links healed: 5b read it back.)
#     5b. A snapshot taken through the diskless node (it holds and drains
#     in the barrier like the others) reads the same through it and
#     through a holder; a write after it is only in the volume.
#  6. Pool status: the two holders show p (256 MiB provisioned), the
#     others none.
#  7. Bad input, each a precise error (its exit code) and no volume made on
#     any node: --replicas 0, --replicas 5 (4 nodes), --nodes naming an
#     unknown node, a volume bigger than overcommit x capacity anywhere.
# timeout: 420
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

LAB_VOL=p

# pool I EXPR: EXPR over node I's `vsan --json pool status` (d).
pool() {
    "$LAB" vsan "$1" --json pool status 2>/dev/null | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
print(eval(sys.argv[1]))' "$2"
}

# Both replicas current as node I sees them.
two_current() {
    [ "$(states "$1")" = "current current" ]
}

# run_fio LABEL NODE: fio with crc32c verify through node NODE, in the
# background (FIO: its pid).
run_fio() {
    bg_start "fio$1" fio --name=p --ioengine=nbd --uri="$("$LAB" addr "$2")/p" --rw=randwrite \
        --bs=4k --iodepth=8 --size=32M --loops="${3:-2}" --verify=crc32c --verify_fatal=1 \
        --do_verify=1 --verify_state_save=0
    FIO=$BG_PID
}

fio_ok() {
    wait_until 180 proc_gone "$FIO" || lab_fail "$1: fio is stuck"
    wait "$FIO" || lab_fail "$1: fio failed: $(tail -n 20 "$T/fio$1.out")"
    grep -qi "verify.*\(bad\|mismatch\)" "$T/fio$1.out" &&
        lab_fail "$1: fio reported verify errors: $(grep -i verify "$T/fio$1.out")"
    log "$1: fio through n$DISKLESS: no error, no verify failure"
}

lab_up 4
wait_until 30 full_view 1 "1 2 3 4" || lab_fail "n1 never saw the four nodes"

log "1. capacities announced"
wait_until 30 announced 4 || lab_fail "not every node announced its capacity: $(pool 1 'd')"

log "2. --replicas 2: data files on exactly two nodes"
lab vsan 1 volume create p 256M --replicas 2
UUID=$(vs 1 'd["uuid"]')
HOLDERS=$(lab_holders "$UUID")
[ "$(echo "$HOLDERS" | wc -w)" = 2 ] || lab_fail "data files of p on nodes \"$HOLDERS\", not two"
for i in 1 2 3 4; do
    [ -f "$VSAN_LAB_DIR/n$i/data/volumes/$UUID.meta" ] || lab_fail "n$i has no record of p"
done
wait_until 20 two_current 1 || lab_fail "p's replicas are not current: $(states 1)"
shown=$(vs 1 '" ".join(str(r["node"]) for r in d["replicas"])')
[ "$shown" = "$HOLDERS" ] || lab_fail "volume show lists replicas \"$shown\", data on \"$HOLDERS\""
for i in 1 2 3 4; do
    case " $HOLDERS " in *" $i "*) continue ;; esac
    DISKLESS=$i
    [ "$(vs "$i" 'd["mirror"]["local"]')" = diskless ] ||
        lab_fail "n$i holds no replica but says its local copy is $(vs "$i" 'd["mirror"]["local"]')"
done
KILLED=${HOLDERS##* }
log "2. p on nodes $HOLDERS; n$DISKLESS is diskless"

log "3. fio with verify through diskless n$DISKLESS"
run_fio 3 "$DISKLESS"
fio_ok 3
lab_holders_identical 3 "$UUID"

log "4. fio through n$DISKLESS while replica node n$KILLED is killed and restarted"
run_fio 4 "$DISKLESS" 6
sent_past() { [ "$(st "$DISKLESS" 'd["mirror"]["requests_sent"]')" -gt "$1" ]; }
sent0=$(st "$DISKLESS" 'd["mirror"]["requests_sent"]')
wait_until 30 sent_past $((sent0 + 500)) || lab_fail "fio's writes never left n$DISKLESS"
lab kill "$KILLED"
wait_until 15 eval '[ "$(states 1)" != "current current" ]' ||
    lab_fail "n$KILLED was never outdated: $(states 1)"
sent0=$(st "$DISKLESS" 'd["mirror"]["requests_sent"]')
wait_until 30 sent_past $((sent0 + 500)) || lab_fail "fio stopped writing while n$KILLED was away"
lab start "$KILLED"
fio_ok 4
wait_until 90 two_current 1 || lab_fail "n$KILLED never came back current: $(states 1)"
lab_holders_identical 4 "$UUID"

log "5. the witness rule"
OTHER=${HOLDERS%% *}
# cut_mirror I PEER...: node I's mirror packets to the PEERs dropped, on
# the links either side opened (labtest.sh's mirror_block drops only
# those to the peers' mirror port), until mirror_unblock I.
cut_mirror() {
    local node=$1 p addrs=()
    shift
    for p in "$@"; do addrs+=("$(host_of "$p")"); done
    "$LAB" exec "$node" nft -f - <<NFT || lab_fail "cannot add the nft rule in n$node"
table inet vsan_t_mirror_block {
    chain out {
        type filter hook output priority 0;
        ip daddr { $(IFS=,; echo "${addrs[*]}") } tcp dport 10810 drop
        ip daddr { $(IFS=,; echo "${addrs[*]}") } tcp sport 10810 drop
    }
}
NFT
    on_exit "mirror_unblock $node"
}

# write_through [BYTE]: a 4 KiB write of BYTE (w) at 1 MiB through n$DISKLESS.
write_through() {
    timeout 60 "$PY" -c '
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(sys.argv[2].encode() * 4096, 1 << 20)' "$("$LAB" addr "$DISKLESS")/p" "${1:-w}"
}
cut_mirror "$DISKLESS" "$KILLED"
mark=$(log_mark "$OTHER")
write_through || lab_fail "a write through n$DISKLESS failed while n$OTHER took it"
# It resyncs from n$OTHER at once (their link is up): the log tells.
logged "$OTHER" "$mark" "replica on node $KILLED is outdated" ||
    lab_fail "n$KILLED missed the write and was not outdated: $(states 1)"
mirror_unblock "$DISKLESS"
wait_until 90 two_current 1 || lab_fail "n$KILLED never came back current: $(states 1)"
log "5. one replica unreachable: the write went on, n$KILLED outdated on n$OTHER's word"
cut_mirror "$DISKLESS" $HOLDERS
write_through 2>"$T/nowitness.out" && lab_fail "a write through n$DISKLESS that no replica took succeeded"
[ "$(states 1)" = "current current" ] || lab_fail "a write no copy took outdated a replica: $(states 1)"
mirror_unblock "$DISKLESS"
log "5. no replica reachable: the write failed, both replicas current"
lab_holders_identical 5 "$UUID"

log "5b. a snapshot cut through diskless n$DISKLESS"
nbdcopy -- "$(addr "$OTHER")/p" "$T/before.raw"
lab vsan "$DISKLESS" snapshot create p s1
# Its mirror links may still be coming back from step 5: a diskless node's
# write waits for one to a current replica (up to the mirror timeout)
# rather than fail at once (it did before: EIO).
write_through z 2>"$T/z.out" ||
    lab_fail "a write through n$DISKLESS after the snapshot failed: $(tail -n 1 "$T/z.out")"
for i in "$DISKLESS" "$OTHER"; do
    same "$i" p@s1 "$T/before.raw" || lab_fail "p@s1 read through n$i is not p before the write"
done
# read_at I EXPORT: 8 bytes at 1 MiB of EXPORT through node I.
read_at() {
    "$PY" -c '
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
print(h.pread(8, 1 << 20).decode(errors="replace"))' "$(addr "$1")/$2"
}
for i in $HOLDERS "$DISKLESS"; do
    [ "$(read_at "$i" p)" = zzzzzzzz ] ||
        lab_fail "p through n$i reads \"$(read_at "$i" p)\" at 1 MiB, not the write after the snapshot"
    [ "$(read_at "$i" p@s1)" = wwwwwwww ] ||
        lab_fail "p@s1 through n$i reads \"$(read_at "$i" p@s1)\" at 1 MiB, not what p held at the cut"
done
log "5b. p@s1 reads the same through n$DISKLESS and n$OTHER; the later write is only in p"

log "6. pool status"
for i in 1 2 3 4; do
    prov=$(pool 1 "[n['provisioned'] for n in d['nodes'] if n['node'] == $i][0]")
    reps=$(pool 1 "' '.join(r['volume'] for n in d['nodes'] if n['node'] == $i for r in n['replicas'])")
    case " $HOLDERS " in
    *" $i "*) [ "$prov" = $((256 * 1024 * 1024)) ] && [ "$reps" = p ] ||
        lab_fail "n$i holds p but pool status says provisioned $prov, replicas \"$reps\"" ;;
    *) [ "$prov" = 0 ] && [ -z "$reps" ] ||
        lab_fail "n$i holds nothing but pool status says provisioned $prov, replicas \"$reps\"" ;;
    esac
done
lab vsan 1 pool status
log "6. pool status: p's 256 MiB provisioned on $HOLDERS only"

log "7. bad input"
# refused EXIT TEXT ARGS...: `vsan volume create ARGS` on n1 exits EXIT
# saying TEXT, and no node has volume bad.
refused() {
    local want=$1 text=$2 rc=0
    shift 2
    "$LAB" vsan 1 volume create bad "$@" >"$T/bad.out" 2>&1 || rc=$?
    [ "$rc" = "$want" ] || lab_fail "create $*: exit $rc, not $want: $(cat "$T/bad.out")"
    grep -qF -- "$text" "$T/bad.out" || lab_fail "create $*: said $(cat "$T/bad.out"), not \"$text\""
    for i in 1 2 3 4; do
        "$LAB" vsan "$i" volume show bad >/dev/null 2>&1 && lab_fail "create $*: n$i has volume bad"
    done
    log "7. create $*: $(cat "$T/bad.out")"
}
refused 21 "--replicas 0: must be from 1 to the number of nodes (4)" 1G --replicas 0
refused 21 "--replicas 5: must be from 1 to the number of nodes (4)" 1G --replicas 5
refused 22 "node \"ghost\": no such member" 1G --nodes n1,ghost
refused 21 "--replicas 3 but 2 nodes named" 1G --replicas 3 --nodes 1,2
cap=$(pool 1 'max(n["capacity"] for n in d["nodes"])')
huge=$(((cap * 2 / 512 + 1) * 512))
refused 23 "no room for 2 replica(s)" "$huge" --replicas 2
log "t-lab-pool: ok"
