#!/usr/bin/env bash
# t-lab-access: grants across a 3-node lab with tls = require
# (VSAN_LAB_TLS=require: the PSK user "client" on every node).
#
#  1. Grants made through n1 apply on n2 and n3 (`vsan access list` there).
#  2. A PSK client of n2 holding the volume open: a revoke through n1 ends
#     its connection on n2 (its next request fails with ESHUTDOWN), and a
#     new connection there no longer sees the volume.
#  3. n3 killed; a grant revoked and another made through n1 meanwhile;
#     n3 started again: after its sync round its grants are the group's
#     (the revoked one gone from its own file, the new one there).
# timeout: 180
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

# grants I [VOL]: node I's grants, "VOLUME MODE IDENTITY;..." sorted.
grants() {
    "$LAB" vsan "$1" --json access list ${2:+"$2"} 2>/dev/null | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
print(";".join(sorted("%s %s %s" % (g["volume"], g["mode"], g["identity"]) for g in d["grants"])))'
}

# grants_are I WANT: for wait_until.
grants_are() {
    [ "$(grants "$1")" = "$2" ]
}

export VSAN_LAB_TLS=require
lab_up 3
SVC_NET=$(ip -n vsan-lab-1 -4 -o addr show dev eth0 | awk '{print $4}' | head -n 1 | cut -d. -f1-3)
SVC2="$SVC_NET.102"
PSK="$VSAN_LAB_DIR/keys.psk"
lab vsan 1 volume create m 16M
lab vsan 1 volume create w 16M
wait_until 20 all_current || lab_fail "the volume never became current on all nodes"
wait_until 20 "$PY" -c "import socket; socket.create_connection(('$SVC2', 10809), 1)" ||
    lab_fail "n2's service address does not answer"

log "1. grants made through n1 apply on n2 and n3"
lab vsan 1 access grant m client
lab vsan 1 access grant w 'dn:CN=someone,O=Example' --read-only
WANT="m read-write client;w read-only dn:CN=someone,O=Example"
for i in 2 3; do
    wait_until 10 grants_are "$i" "$WANT" || lab_fail "n$i's grants: '$(grants "$i")', not '$WANT'"
done

log "2. a revoke through n1 ends the client's connection on n2"
cat >"$T/held.py" <<'PY'
import errno, os, sys, time
import nbd
host, psk, ready, go = sys.argv[1:]
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_psk_file(psk)
h.set_tls_username("client")
h.set_export_name("m")
h.connect_tcp(host, "10809")
h.pread(4096, 0)
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.05)
try:
    h.pread(4096, 0)
    print("still served")
except nbd.Error as e:
    print("ended:", errno.errorcode.get(e.errnum, e.errnum), e.string)
PY
bg_start held "$PY" "$T/held.py" "$SVC2" "$PSK" "$T/ready" "$T/go"
wait_until 20 test -e "$T/ready" || lab_fail "the client did not connect: $(cat "$T/held.out")"
lab vsan 1 access revoke m client
wait_until 10 grants_are 2 "w read-only dn:CN=someone,O=Example" || lab_fail "n2 kept the grant"
touch "$T/go"
wait_until 20 grep -q . "$T/held.out" || lab_fail "the client did not answer"
grep -q "^ended: ESHUTDOWN" "$T/held.out" || lab_fail "the client on n2: $(cat "$T/held.out")"
OUT=$(nbdinfo "nbds://client@$SVC2:10809/m?tls-psk-file=$PSK" 2>&1) &&
    lab_fail "the client still opens m on n2"
expect_out "No such file or directory"

log "3. n3 misses a revoke and a grant while down, and learns them in its sync round"
lab vsan 1 access grant m client --read-only
wait_until 10 grants_are 3 "m read-only client;w read-only dn:CN=someone,O=Example" ||
    lab_fail "n3's grants: $(grants 3)"
lab kill 3
lab vsan 1 access revoke w 'dn:CN=someone,O=Example'
lab vsan 1 access grant w anonymous
lab start 3
WANT="m read-only client;w read-write anonymous"
wait_until 30 grants_are 3 "$WANT" || lab_fail "n3's grants after its restart: '$(grants 3)'"
GRANTS_FILE="$VSAN_LAB_DIR/n3/data/grants"
[ -f "$GRANTS_FILE" ] || lab_fail "n3 has no grants file at $GRANTS_FILE"
grep -q ' rw anonymous$' "$GRANTS_FILE" || lab_fail "n3's grants file lacks the new grant"
grep -q 'someone' "$GRANTS_FILE" && lab_fail "n3's grants file kept the revoked grant"
log "ok"
