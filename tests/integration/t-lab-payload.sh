#!/usr/bin/env bash
# t-lab-payload: a write larger than the mirror wire's 32 MiB limit, on a
# 3-node lab whose node 1 takes NBD requests of up to 64 MiB
# (`[nbd] max_payload = 64M`). The mirror engine splits it at the wire's
# limit: it succeeds, no peer is outdated (a single 48 MiB copy used to
# reset every link and outdate every peer), and the copies are identical.
# timeout: 240
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

MiB=$((1024 * 1024))
LAB_VOL=p

lab_up 3
conf="$VSAN_LAB_DIR/n1/vsan.conf"
if grep -q '^max_payload' "$conf"; then
    sed -i 's/^max_payload *=.*/max_payload = 64M/' "$conf"
else
    sed -i 's/^\[nbd\]$/[nbd]\nmax_payload = 64M/' "$conf"
fi
grep -q '^max_payload = 64M' "$conf" || lab_fail "could not set max_payload in $conf"
lab kill 1
lab start 1
wait_until 30 full_view 1 "1 2 3" || lab_fail "n1 did not come back: $(members 1)"
lab vsan 1 volume create p 128M
wait_until 20 all_current || lab_fail "the volume never became current on all nodes: $(states 1)"

lab_nbdpy 1 "$("$LAB" addr 1)/p" <<'EOF' || lab_fail "the 48 MiB write through n1 failed"
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1], strict=False)
check(h.get_block_size(nbd.SIZE_MAXIMUM) >= 48 << 20, "n1 announces 64 MiB requests")
data = pattern(7, 48 << 20)
h.pwrite(data, 4096)
h.flush()
check(h.pread(48 << 20, 4096) == data, "the data reads back")
EOF
for i in 1 2 3; do
    [ "$(states "$i")" = "current current current" ] ||
        lab_fail "n$i sees the replicas as $(states "$i") after the large write"
done
uuid=$(vs 1 'd["uuid"]')
sums=$(md5sum "$VSAN_LAB_DIR"/n[123]/data/volumes/"$uuid".data | awk '{print $1}' | sort -u)
[ "$(echo "$sums" | wc -l)" -eq 1 ] || lab_fail "replicas differ"
grep -q 'marking it outdated' "$VSAN_LAB_DIR"/n1/vsand.log && lab_fail "n1 outdated a peer"
log "a 48 MiB write went to every replica in pieces; all current, identical"
log "PASS"
