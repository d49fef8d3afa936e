#!/usr/bin/env bash
# t-snap-many: 100 snapshots of one volume on a standalone vsand, with
# writes before each (a hot block copied into every one, writes across
# chunk edges, zeroes: snapmodel.py), then deletes from the middle (every
# third, a run of 16 consecutive ones, the oldest and the newest): every
# remaining snapshot reads exactly its content through VOL@SNAP, the live
# volume its own, a deleted one is no export, and `vsan snapshot list`
# names exactly the remaining ones, oldest first, at the size of their
# cut; all of it again after vsand is killed and restarted.
# timeout: 120
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

N=100

model() {
    PYTHONPATH="$VT_DIR" "$PY" "$VT_DIR/snapmodel.py" "$@"
}

# list_is DELETED: `vsan snapshot list v` names s1..sN but DELETED (a
# comma list of numbers), oldest first (ids rising), each of size 8 MiB.
list_is() {
    expect_exit 0 vsan --json snapshot list v
    json_assert '([s["name"] for s in d["snapshots"]] == ["s%d" % i for i in range(1, int(a[0]) + 1)
                   if str(i) not in a[1].split(",")]
                  and all(s["size"] == 8 << 20 for s in d["snapshots"])
                  and [s["id"] for s in d["snapshots"]] == sorted(s["id"] for s in d["snapshots"]))' \
        "$N" "$1"
    expect_exit 0 vsan snapshot list v
    [ "$(grep -c '^s[0-9]' <<<"$OUT")" -eq "$((N - $(tr , '\n' <<<"$1" | grep -c .)))" ] ||
        die "snapshot list shows the wrong number of rows: $OUT"
}

vt_config
vsand_start
expect_exit 0 vsan volume create v 8M

log "$N snapshots with writes between them"
start=$SECONDS
model write "$URI" "$VSAN" "$ADMIN" v "$N" || die "writing the snapshots failed"
log "cut in $((SECONDS - start)) s"
list_is ""
model check "$URI" v "$N" "" || die "a snapshot does not hold its content"

log "deletes from the middle: every third, s40..s55, the oldest, the newest"
deleted=()
for i in $(seq 3 3 $((N - 1))) $(seq 40 55) 1 "$N"; do
    case " ${deleted[*]} " in *" $i "*) continue ;; esac
    expect_exit 0 vsan snapshot delete v "s$i"
    deleted+=("$i")
done
expect_exit 8 vsan snapshot delete v s3
gone=$(tr ' ' , <<<"${deleted[*]}")
log "${#deleted[@]} deleted"
list_is "$gone"
model check "$URI" v "$N" "$gone" || die "after the deletes, a snapshot lost its content"

log "killed and restarted: the same"
vsand_stop KILL
vsand_start
list_is "$gone"
model check "$URI" v "$N" "$gone" || die "after a restart, a snapshot lost its content"

log "the rest deleted: no snapshot, the live volume intact, no side file left"
expect_exit 0 vsan --json snapshot list v
for s in $("$PY" -c 'import json, sys
print(" ".join(s["name"] for s in json.loads(sys.argv[1])["snapshots"]))' "$OUT"); do
    expect_exit 0 vsan snapshot delete v "$s"
done
list_is "$(seq -s , 1 "$N")"
model check "$URI" v "$N" "$(seq -s , 1 "$N")" || die "after deleting all, the live volume differs"
left=$(find "$DATA/snapshots" -name '*.data' -o -name '*.map' | wc -l)
[ "$left" -eq 0 ] || die "$left side files or maps left with no snapshot: $(ls "$DATA/snapshots")"
vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
log "ok"
