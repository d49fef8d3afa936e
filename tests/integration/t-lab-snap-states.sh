#!/usr/bin/env bash
# t-lab-snap-states: a snapshot read through a node whose own copy is not
# current reads what was written, never that node's stale copy (issue 11
# found the live export doing so; VOL@SNAP must not). Node 3 runs with a
# throttled resync_rate (2M) so its resyncs and rebuilds outlast the reads.
#
# Known content: random data with holes between, snapshot s1, overwrites
# (some where s1 had holes), snapshot s2, more writes; each step below adds
# writes and a snapshot. A check of snapshot S against an older PREV through
# node I: nbdcopy of VOL@S equals the model byte for byte; `nbdinfo --map`
# calls every written byte data and equals the map through node 1 (a copy
# never resynced, so exact); `--map=qemu:dirty-bitmap:PREV` lists exactly
# the 64 KiB chunks written between the cuts, and the live export's
# `qemu:dirty-bitmap:S` those written since; `vsan backup VOL@S --since
# PREV` run on node I equals the one run on node 1.
#
#  0. A snapshot cut through n1 opens at once through n2 and n3 (20 times:
#     a node that has not applied the commit yet waits for the cut to end
#     rather than answer "unknown export").
#  a. n3's copy failed (`vsan replica fail`), writes and a snapshot through
#     the others, and one through n3: checks through n3.
#  c. n3's copy replaced and rebuilding: writes and a snapshot meanwhile,
#     and one through n3; checks through n3 while `vsan volume show` says
#     it rebuilds, and once rebuilt, of its own copy.
#  b. n3 killed, writes and a snapshot while it is down, n3 started: checks
#     through n3 while it resyncs, and a snapshot cut through n3 then.
#  d. n3 cut off from its peers (clients still reach it): reads of a
#     snapshot through it fail or are right, never other bytes; a snapshot
#     the others cut meanwhile is unknown there, and one they delete and
#     cut again with other data never reads as n3's stale copy; after the
#     heal n3 reads every snapshot right.
# timeout: 300
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

MiB=$((1024 * 1024))
SIZE=$((32 * MiB))
LAB_VOL=sv
MODEL=$T/model

# model ARGS...: the model of what was written (tests/integration's
# snapmodel.py): writes through a node, snapshots, expected images.
model() {
    PYTHONPATH="$VT_DIR" "$PY" - "$MODEL" "$@" <<'PY'
import json, os, random, shutil, subprocess, sys
from nbdtest import *
model, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
live, state = model + "/live.img", model + "/state.json"
CHUNK = 65536
if cmd == "init":
    os.makedirs(model)
    with open(live, "wb") as f:
        f.truncate(int(args[0]))
    json.dump({"writes": [], "snaps": {}}, open(state, "w"))
    sys.exit(0)
s = json.load(open(state))
if cmd == "write":  # write URI SEED OFF:LEN...: random bytes through URI
    h = connect_nbd(args[0])
    rnd = random.Random(args[1])
    with open(live, "r+b") as f:
        for spec in args[2:]:
            off, length = (int(x) for x in spec.split(":"))
            data = rnd.randbytes(length)
            for o in range(0, length, 4 << 20):
                h.pwrite(data[o:o + (4 << 20)], off + o)
            f.seek(off)
            f.write(data)
            s["writes"].append([off, length])
    h.flush()
elif cmd == "snap":  # snap NAME: NAME was cut after every write so far
    shutil.copyfile(live, "%s/%s.img" % (model, args[0]))
    s["snaps"][args[0]] = len(s["writes"])
elif cmd == "written":  # written SNAP: the ranges written before SNAP
    print(" ".join("%d:%d" % tuple(w) for w in s["writes"][:s["snaps"][args[0]]]))
elif cmd == "dirty":  # dirty PREV SNAP|-: the chunks written between (-: since), as "off+len "
    chunks = set()
    upto = len(s["writes"]) if args[1] == "-" else s["snaps"][args[1]]
    for off, length in s["writes"][s["snaps"][args[0]]:upto]:
        chunks.update(range(off // CHUNK, (off + length - 1) // CHUNK + 1))
    runs = []
    for c in sorted(chunks):
        if runs and runs[-1][0] + runs[-1][1] == c * CHUNK:
            runs[-1][1] += CHUNK
        else:
            runs.append([c * CHUNK, CHUNK])
    print("".join("%d+%d " % tuple(r) for r in runs), end="")
json.dump(s, open(state, "w"))
PY
}

# write I SEED OFF:LEN...: random bytes through node I, into the model.
write() {
    model write "$(addr "$1")/sv" "${@:2}" || lab_fail "writes through n$1 failed"
}

# snap I NAME: snapshot NAME of sv cut through node I, into the model.
snap() {
    "$LAB" vsan "$1" snapshot create sv "$2" >>"$T/snap.out" 2>&1 ||
        lab_fail "snapshot $2 through n$1 failed: $(tail -n 3 "$T/snap.out")"
    model snap "$2"
}

# The dirty runs of sv@SNAP (sv for -) against PREV through node I, as
# "off+len ".
dirty_map() {
    local export=sv@$2
    [ "$2" != - ] || export=sv
    nbdinfo --map="qemu:dirty-bitmap:$3" "$(addr "$1")/$export" | awk '$3 == 1 {printf "%s+%s ", $1, $2}'
}

# map_written MAPFILE SNAP: every range written before SNAP lies in data
# extents of the `nbdinfo --map` output in MAPFILE.
map_written() {
    "$PY" - "$1" "$(model written "$2")" <<'PY'
import sys
data = []
for line in open(sys.argv[1]):
    off, length, typ = (int(x) for x in line.split()[:3])
    if typ & 1 == 0:
        data.append((off, off + length))
for spec in sys.argv[2].split():
    off, length = (int(x) for x in spec.split(":"))
    end = off + length
    for a, b in data:
        if a <= off < b:
            off = b
    if off < end:
        sys.exit("written at %d..%d, but the map says hole at %d" % (end - length, end, off))
PY
}

# check I SNAP PREV [loose]: sv@SNAP through node I is what was written
# (see the top). loose: node I reads its own copy, resynced, which holds
# whole 64 KiB chunks of the snapshot where the resync copied them (README,
# Known limits): its map may call data what n1's calls a hole, and its
# dirty bitmap may name more chunks; it must still call every written byte
# data and name every written chunk dirty.
check() {
    local i=$1 s=$2 p=$3 what="n$1: sv@$2" want got
    rm -f "$T/copy.img"
    nbdcopy "$(addr "$i")/sv@$s" "$T/copy.img" || lab_fail "$what: nbdcopy failed"
    cmp "$MODEL/$s.img" "$T/copy.img" || lab_fail "$what: nbdcopy returned other bytes than were written"
    nbdinfo --map "$(addr "$i")/sv@$s" >"$T/map$i" || lab_fail "$what: nbdinfo --map failed"
    map_written "$T/map$i" "$s" || lab_fail "$what: the map calls written data a hole: $(cat "$T/map$i")"
    grep -q hole "$T/map$i" || lab_fail "$what: the map has no hole: $(cat "$T/map$i")"
    if [ "$i" != 1 ] && [ "${4:-}" != loose ]; then
        nbdinfo --map "$(addr 1)/sv@$s" >"$T/map1" || lab_fail "n1: sv@$s: nbdinfo --map failed"
        cmp -s "$T/map1" "$T/map$i" || lab_fail "$what: the map differs from n1's:
$(diff "$T/map1" "$T/map$i" | head -n 20 || true)"
    fi
    want=$(model dirty "$p" "$s")
    got=$(dirty_map "$i" "$s" "$p") || lab_fail "$what: nbdinfo --map=qemu:dirty-bitmap:$p failed"
    if [ "${4:-}" = loose ]; then
        "$PY" - "$want" "$got" <<'PY' || lab_fail "$what: dirty since $p lacks written chunks: '$got', want '$want'"
import sys
def chunks(runs):
    out = set()
    for r in runs.split():
        off, length = (int(x) for x in r.split("+"))
        out.update(range(off >> 16, (off + length) >> 16))
    return out
sys.exit(not chunks(sys.argv[1]) <= chunks(sys.argv[2]))
PY
    else
        [ "$got" = "$want" ] || lab_fail "$what: dirty since $p: '$got', want '$want'"
        want=$(model dirty "$s" -)
        got=$(dirty_map "$i" - "$s") || lab_fail "n$i: sv: nbdinfo --map=qemu:dirty-bitmap:$s failed"
        [ "$got" = "$want" ] || lab_fail "n$i: sv: dirty since $s: '$got', want '$want'"
        "$LAB" vsan "$i" backup "sv@$s" --since "$p" -o "$T/backup$i" >>"$T/backup.out" 2>&1 ||
            lab_fail "$what: vsan backup --since $p on n$i failed: $(tail -n 2 "$T/backup.out")"
        if [ "$i" != 1 ]; then
            "$LAB" vsan 1 backup "sv@$s" --since "$p" -o "$T/backup1" >>"$T/backup.out" 2>&1 ||
                lab_fail "n1: sv@$s: vsan backup --since $p failed: $(tail -n 2 "$T/backup.out")"
            cmp -s "$T/backup1" "$T/backup$i" || lab_fail "$what: the backup since $p on n$i differs from n1's"
        fi
    fi
}

# The local copy of node 3 and the states as node 1 sees them.
n3_is() {
    [ "$(vs 3 'd["mirror"]["local"]')" = "$1" ] && states_are 1 "current current $2"
}

lab_up 3
# A slow resync on n3, so its rebuild and resync outlast the checks.
sed -i '/^resync_rate/d; /^\[mirror\]/a resync_rate = 2M' "$VSAN_LAB_DIR/n3/vsan.conf"
grep -q '^resync_rate = 2M' "$VSAN_LAB_DIR/n3/vsan.conf" || lab_fail "n3's vsan.conf has no [mirror]"
lab kill 3
lab start 3
lab vsan 1 volume create sv 32M
wait_until 30 all_current || lab_fail "sv never became current everywhere: $(states 1)"
model init "$SIZE"

log "known content: s1, overwrites (also where s1 has holes), s2, more writes"
write 1 w1 0:$((3 * MiB)) $((8 * MiB)):$((MiB / 2)) $((16 * MiB + 4096)):$((200 * 1024)) $((30 * MiB)):$((MiB))
snap 1 s1
write 2 w2 $((MiB)):$((64 * 1024)) $((4 * MiB)):$((MiB)) $((12 * MiB + 100)):5000 $((30 * MiB + 65536)):4096
snap 1 s2
write 1 w3 $((2 * MiB)):$((MiB)) $((20 * MiB)):$((2 * MiB))
for i in 1 2 3; do
    check "$i" s2 s1
done
log "s1 and s2 read as written through every node"

log "0. a snapshot cut through n1 opens at once through n2 and n3"
# In n1's namespace, the clients already in the option phase (libnbd's
# opt mode) before the CLI runs, so they ask the moment it returns.
"$LAB" exec 1 timeout 120 "$PY" - "$BUILD/vsan" "$(addr 2)" "$(addr 3)" <<'PY' ||
import subprocess, sys
import nbd
vsan, uris = sys.argv[1], sys.argv[2:4]
bad = []
for k in range(20):
    hs = []
    for uri in uris:
        h = nbd.NBD()
        h.set_opt_mode(True)
        h.connect_uri(uri)
        hs.append((uri, h))
    subprocess.run([vsan, "-s", "vsan-lab", "snapshot", "create", "sv", "o%d" % k], check=True,
                   stdout=subprocess.DEVNULL)
    for uri, h in hs:
        h.set_export_name("sv@o%d" % k)
        try:
            h.opt_go()
            h.shutdown()
        except nbd.Error as e:
            bad.append("%s/sv@o%d: %s" % (uri, k, e.string))
if bad:
    sys.exit("%d of 40 opens failed: %s" % (len(bad), "; ".join(bad[:4])))
PY
    lab_fail "snapshots cut through n1 did not open at once on the others"
for k in $(seq 0 19); do
    lab vsan 1 snapshot delete sv "o$k"
done

log "a. n3's copy failed; writes and a snapshot through the others"
lab vsan 3 replica fail sv
wait_until 10 n3_is failed outdated || lab_fail "n3 not failed: $(vs 3 'd["mirror"]["local"]'), $(states 1)"
write 2 wa $((5 * MiB)):$((MiB)) $((24 * MiB)):$((MiB))
snap 2 sa
write 1 wa2 $((26 * MiB)):$((64 * 1024))
snap 3 sa3
check 3 s2 s1
check 3 sa s2
check 3 sa3 sa
check 1 sa3 sa
log "a. through n3, failed: s1, s2, sa, and sa3 cut through it, as written"

log "c. n3's copy replaced: reads through it while it rebuilds"
lab vsan 3 replica replace sv
wait_until 20 n3_is rebuild syncing || lab_fail "n3 is not rebuilding: $(vs 3 'd["mirror"]["local"]'), $(states 1)"
write 1 wc $((6 * MiB)):$((MiB)) $((31 * MiB + 512)):4096
snap 1 sc
write 2 wc2 $((27 * MiB)):$((64 * 1024))
snap 3 sc3
check 3 s2 s1
check 3 sa s2
check 3 sc sa3
check 3 sc3 sc
check 1 sc3 sc
n3_is rebuild syncing || lab_fail "n3 finished its rebuild during the checks: they read a current copy"
log "c. through n3, rebuilding: s2, sa, sc, and sc3 cut through it, as written"
wait_until 120 all_current || lab_fail "n3 never finished its rebuild: $(states 1)"
check 3 sa3 sa loose
check 3 sc3 sc loose
log "c. rebuilt, n3 reads sa3 and sc3 from its own copy as written"

log "b. n3 killed; writes and a snapshot; reads through n3 while it resyncs"
lab kill 3
wait_until 10 states_are 1 "current current outdated" || lab_fail "n3 not outdated: $(states 1)"
ranges=()
for k in $(seq 0 15); do
    ranges+=("$((k * 2 * MiB + 256 * 1024)):$((MiB))")
done
write 1 wb "${ranges[@]}"
snap 2 sb
write 2 wb2 $((9 * MiB)):$((MiB))
lab start 3
wait_until 30 n3_is ok syncing || lab_fail "n3 is not resyncing: $(vs 3 'd["mirror"]["local"]'), $(states 1)"
check 3 s2 s1
check 3 sb sc3
snap 3 sb3
check 3 sb3 sb
check 1 sb3 sb
n3_is ok syncing || lab_fail "n3 finished its resync during the checks: they read a current copy"
log "b. through n3, resyncing: s2, sb, and sb3 cut through it, as written"
wait_until 120 all_current || lab_fail "n3 never finished its resync: $(states 1)"

log "d. n3 cut off from its peers: its reads fail or are right"
write 1 wx $((14 * MiB)):$((MiB))
snap 1 x
cp "$MODEL/x.img" "$T/x-old.img"
# Reads through n3 of s2 and of x, which the others delete and cut again
# with other data while n3 is cut off: until $T/recut, x may read as
# either; from then on only as the new x (n3's own x is stale).
nbdpy "$(addr 3)/sv" "$MODEL/s2.img" "$T/x-old.img" "$T/x-new.img" "$T/recut" "$T/stop" \
    "$T/tries" >"$T/reader.out" 2>&1 <<'PY' &
import hashlib, os, sys, time
from nbdtest import *
uri, s2, x_old, x_new, recut, stop, tries = sys.argv[1:8]
md5 = lambda path: hashlib.md5(open(path, "rb").read()).hexdigest()
s2, x_old = md5(s2), md5(x_old)
ok = failed = after = 0
seen = set()
while not os.path.exists(stop):
    late = os.path.exists(recut)
    for name in ("s2", "x"):
        try:
            h = connect_nbd(uri + "@" + name)
            m = hashlib.md5()
            for off in range(0, h.get_size(), 4 << 20):
                m.update(h.pread(4 << 20, off))
            got = m.hexdigest()
            ok += 1
        except nbd.Error:
            failed += 1
            time.sleep(0.01)  # a pace, not a wait: n3 refuses at once
            continue
        if name == "s2":
            check(got == s2, "s2 read other bytes")
        elif late:
            check(got == md5(x_new), "x read its old data after the others cut it again")
        else:
            seen.add(got)
    after += late
    open(tries, "w").write(str(after))
check(seen <= {x_old, md5(x_new)}, "x read bytes that were never x")
print("ok %d failed %d" % (ok, failed))
PY
reader=$!
on_exit "kill $reader 2>/dev/null"
lab cut 3 --peers
wait_until 20 states_are 1 "current current outdated" || lab_fail "n3 not outdated: $(states 1)"
write 1 wd $((10 * MiB)):$((MiB))
snap 1 sd
lab vsan 2 snapshot delete sv x
write 2 wx2 $((14 * MiB + 65536)):$((MiB))
snap 2 x
cp "$MODEL/x.img" "$T/x-new.img"
touch "$T/recut"
nbdinfo --size "$(addr 3)/sv@sd" >/dev/null 2>&1 && lab_fail "n3, cut off, opened sv@sd, cut without it"
tries_after() { [ "$(cat "$T/tries" 2>/dev/null || echo 0)" -ge "$1" ]; }
wait_until 30 tries_after 5 || lab_fail "the reader through n3 made no tries after x was cut again"
lab heal 3
touch "$T/stop"
wait "$reader" || lab_fail "a read through n3, cut off, returned other bytes: $(cat "$T/reader.out")"
log "d. reads of s2 and x through n3 while it was cut off: $(cat "$T/reader.out")"
wait_until 120 all_current || lab_fail "n3 never came back after the heal: $(states 1)"
check 3 s2 s1 loose
check 3 sb3 sb loose
check 3 sd sb3 loose
check 3 x sd loose
check 1 x sd
log "d. after the heal, n3 reads s2, sb3, sd and the new x as written"
log "ok"
