#!/usr/bin/env bash
# t-snap-bad: bad input around snapshots on a standalone vsand, each
# refused with its exit code and leaving everything as it was:
#  1. an incremental stream restored onto the wrong base: a volume without
#     its from-snapshot (12), one written since it (12), one that already
#     has its to-snapshot (9), a missing volume (4); the volume's data and
#     snapshots untouched;
#  2. a snapshot name that exists (9; of two volumes, when one of them has
#     it: neither gets the new one), invalid names (2), more than 16
#     volumes in one cut (13), a volume at its 1,024 snapshots (14, the
#     volume named; of two volumes, neither gets it; again once one is
#     deleted);
#  3. a shrink of a volume that has snapshots (7, with or without --force,
#     saying why), allowed once they are deleted; a grow is fine;
#  4. malformed snapshot.create and snapshot.delete requests over the
#     admin socket (admin_raw.py: wrong types, 0 or 17 volumes, NUL in a
#     name, missing fields, unknown volumes): each answered with its error,
#     nothing cut, vsand still serving.
# timeout: 120
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

# snaps VOL: the names of VOL's snapshots, oldest first, space-separated.
snaps() {
    vsan --json snapshot list "$1" | "$PY" -c 'import json, sys
print(" ".join(s["name"] for s in json.load(sys.stdin)["snapshots"]))'
}

# same VOL FILE: VOL reads exactly FILE.
same() {
    nbdcopy -- "$URI/$1" "$T/read.raw" && cmp -s "$T/read.raw" "$2"
}

vt_config
vsand_start
expect_exit 0 vsan volume create v 16M
random_file "$T/a.raw" $((16 << 20))
nbdcopy -- "$T/a.raw" "$URI/v"
expect_exit 0 vsan snapshot create v f
nbdpy "$URI/v" <<'PY'
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(1, 1 << 20), 3 << 20)
h.zero(64 << 10, 12 << 20)
PY
expect_exit 0 vsan snapshot create v t
nbdcopy -- "$URI/v" "$T/b.raw"
expect_exit 0 vsan backup v@f -o "$T/full.rbd"
expect_exit 0 vsan backup v@t --since f -o "$T/inc.rbd"

log "1. an incremental onto the wrong base"
expect_exit 4 vsan restore "$T/inc.rbd" nosuch
expect_out 'no volume "nosuch"'
expect_exit 4 vsan volume show nosuch
# no snapshot f: an empty volume, and one with other data and snapshots
expect_exit 0 vsan volume create w 16M
expect_exit 12 vsan restore "$T/inc.rbd" w
expect_out 'has no snapshot "f"'
truncate -s 16M "$T/zero.raw"
same w "$T/zero.raw" || die "w changed by a refused restore"
[ "$(snaps w)" = "" ] || die "w has snapshots after a refused restore: $(snaps w)"
# written since f
expect_exit 0 vsan restore "$T/full.rbd" x
[ "$(snaps x)" = "f" ] || die "x after a full restore has snapshots: $(snaps x)"
same x "$T/a.raw" || die "x after a full restore differs from v@f"
nbdpy "$URI/x" <<'PY'
import sys
from nbdtest import *
connect_nbd(sys.argv[1]).pwrite(pattern(2, 512), 9 << 20)
PY
nbdcopy -- "$URI/x" "$T/x.raw"
expect_exit 12 vsan restore "$T/inc.rbd" x
expect_out 'written since snapshot "f"'
same x "$T/x.raw" || die "x changed by a refused restore"
[ "$(snaps x)" = "f" ] || die "x's snapshots changed by a refused restore: $(snaps x)"
# t already there
expect_exit 0 vsan restore "$T/full.rbd" y
expect_exit 0 vsan snapshot create y t
expect_exit 9 vsan restore "$T/inc.rbd" y
expect_out 'already has a snapshot "t"'
same y "$T/a.raw" || die "y changed by a refused restore"
[ "$(snaps y)" = "f t" ] || die "y's snapshots changed by a refused restore: $(snaps y)"
# and the right base takes it
expect_exit 0 vsan snapshot delete y t
expect_exit 0 vsan restore "$T/inc.rbd" y
same y "$T/b.raw" || die "y after the incremental differs from v@t"
[ "$(snaps y)" = "f t" ] || die "y's snapshots after the incremental: $(snaps y)"

log "2. names: one that exists, invalid ones, too many volumes"
expect_exit 9 vsan snapshot create v f
expect_out 'snapshot "f"'
expect_exit 9 vsan snapshot create w,v t
[ "$(snaps w)" = "" ] || die "w got a snapshot from a refused cut of w and v: $(snaps w)"
[ "$(snaps v)" = "f t" ] || die "v's snapshots changed by refused cuts: $(snaps v)"
long=$(printf 'a%.0s' $(seq 65))
for bad in "" .dot -dash 'a/b' 'a@b' 'a b' 'a,b' "$long" 'é' 'a:b'; do
    expect_exit 2 vsan snapshot create v "$bad"
    expect_exit 2 vsan snapshot delete v "$bad"
done
expect_exit 0 vsan snapshot create v "$(printf 'a%.0s' $(seq 64))"
expect_exit 0 vsan snapshot delete v "$(printf 'a%.0s' $(seq 64))"
vols=w
for i in $(seq 2 17); do vols="$vols,w$i"; done
expect_exit 13 vsan snapshot create "$vols" many
expect_out '17 volumes: one snapshot \(one point in time\) takes at most 16'
expect_exit 1 vsan snapshot create v,w,v twice
expect_out 'volume "v" is named twice'
expect_exit 4 vsan snapshot create v,nosuch n1
expect_exit 8 vsan snapshot delete v nosuch
expect_exit 4 vsan snapshot delete nosuch f
[ "$(snaps v)" = "f t" ] || die "v's snapshots changed by refused calls: $(snaps v)"
expect_exit 0 vsan volume create full 1M
for i in $(seq 1 1024); do
    echo "{\"cmd\": \"snapshot.create\", \"volumes\": [\"full\"], \"snapshot\": \"s$i\"}"
done | PYTHONPATH="$VT_DIR" "$PY" "$VT_DIR/admin_raw.py" "$ADMIN" >"$T/limit.out" ||
    die "admin_raw.py failed: $(tail -n 3 "$T/limit.out")"
[ "$(grep -c '^ok$' "$T/limit.out")" -eq 1024 ] || die "1,024 snapshots not cut: $(sort "$T/limit.out" | uniq -c)"
expect_exit 14 vsan snapshot create full over
expect_out 'volume "full": 1024 snapshots already, the most a volume may have'
expect_exit 14 vsan snapshot create v,full over
[ "$(snaps v)" = "f t" ] || die "v got a snapshot of a refused cut: $(snaps v)"
expect_exit 0 vsan snapshot delete full s1
expect_exit 0 vsan snapshot create full over

log "3. a volume with snapshots does not shrink"
expect_exit 7 vsan volume resize v 8M --force
expect_out 'snapshot'
expect_exit 7 vsan volume resize v 8M
expect_out 'snapshot'
[ "$(nbd_size v)" -eq $((16 << 20)) ] || die "v's size changed: $(nbd_size v)"
same v "$T/b.raw" || die "v changed by a refused shrink"
expect_exit 0 vsan volume resize v 32M
same v@t "$T/b.raw" || die "v@t changed by a grow"
expect_exit 0 vsan snapshot delete v f
expect_exit 0 vsan snapshot delete v t
expect_exit 0 vsan volume resize v 8M --force
[ "$(nbd_size v)" -eq $((8 << 20)) ] || die "v's size after the shrink: $(nbd_size v)"

log "4. malformed requests over the admin socket"
expect_exit 0 vsan snapshot create v keep
many=$("$PY" -c 'import json; print(json.dumps(["v"] * 17))')
PYTHONPATH="$VT_DIR" "$PY" "$VT_DIR/admin_raw.py" "$ADMIN" >"$T/raw.out" <<EOF || die "admin_raw.py failed: $(cat "$T/raw.out")"
{"cmd": "snapshot.create", "volumes": "v", "snapshot": "m1"}
{"cmd": "snapshot.create", "volumes": [1], "snapshot": "m2"}
{"cmd": "snapshot.create", "volumes": [null], "snapshot": "m3"}
{"cmd": "snapshot.create", "volumes": [["v"]], "snapshot": "m4"}
{"cmd": "snapshot.create", "volumes": [], "snapshot": "m5"}
{"cmd": "snapshot.create", "volumes": $many, "snapshot": "m6"}
{"cmd": "snapshot.create", "volumes": ["v"], "snapshot": 7}
{"cmd": "snapshot.create", "volumes": ["v"], "snapshot": null}
{"cmd": "snapshot.create", "volumes": ["v"], "snapshot": "m\u0000x"}
{"cmd": "snapshot.create", "volumes": ["v\u0000x"], "snapshot": "m10"}
{"cmd": "snapshot.create", "volumes": ["v"]}
{"cmd": "snapshot.create", "snapshot": "m12"}
{"cmd": "snapshot.create", "volumes": ["nosuch"], "snapshot": "m13"}
{"cmd": "snapshot.create", "volumes": ["v", "v"], "snapshot": "m14"}
{"cmd": "snapshot.create", "volumes": ["$long"], "snapshot": "m15"}
{"cmd": "snapshot.create", "volumes": ["v"], "snapshot": "keep"}
{"cmd": "snapshot.delete", "name": "v", "snapshot": "keep\u0000"}
{"cmd": "snapshot.delete", "name": "v", "snapshot": 1}
{"cmd": "snapshot.delete", "name": "v\u0000", "snapshot": "keep"}
{"cmd": "snapshot.delete", "name": "v"}
{"cmd": "snapshot.list", "name": ["v"]}
{"cmd": "snapshot.create", "volumes": ["v"], "snapshot": "m1"
[]
EOF
cat >"$T/raw.want" <<'EOF'
bad_request
bad_name
bad_name
bad_name
bad_request
too_many_volumes
bad_request
bad_request
bad_name
bad_name
bad_request
bad_request
no_such_volume
bad_request
bad_name
snapshot_exists
bad_name
bad_request
bad_name
bad_request
bad_request
bad_request
bad_request
EOF
diff "$T/raw.want" "$T/raw.out" >&2 || die "malformed requests: errors differ (- expected, + got)"
[ "$(snaps v)" = "keep" ] || die "malformed requests changed v's snapshots: $(snaps v)"
expect_exit 0 vsan snapshot create v after
[ "$(snaps v)" = "keep after" ] || die "v's snapshots: $(snaps v)"
vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
log "ok"
