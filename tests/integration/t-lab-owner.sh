#!/usr/bin/env bash
# t-lab-owner: quotas, owners and tokens across a 3-node lab.
#
#  1. A token and a quota made through n1 apply on n2 and n3 (`vsan token
#     list`, `vsan quota list` there); a volume created --owner through n1
#     is owned there too, and counts against the quota on every node.
#  2. Two creates through n2 and n3 at once racing for the last of the
#     quota: the cluster applies them in one order everywhere, so exactly
#     one wins (exit 0) and the other is refused (exit 18, quota
#     exceeded), and every node has the one volume.
#  3. n3 killed; a token revoked through n1 meanwhile; n3 started again:
#     after its sync round its tokens are the group's (gone from its file).
# timeout: 180
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"

# on I EXPR ARGS...: EXPR over node I's `vsan --json ARGS...` (d).
on() {
    local i=$1 expr=$2
    shift 2
    "$LAB" vsan "$i" --json "$@" 2>/dev/null | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
print(eval(sys.argv[1]))' "$expr"
}

# is I WANT EXPR ARGS...: for wait_until.
is() {
    local i=$1 want=$2
    shift 2
    [ "$(on "$i" "$@")" = "$want" ]
}

TOKENS='",".join(t["id"] + " " + t["identity"] for t in d["tokens"])'
QUOTAS='",".join("%s %d %d" % (q["identity"], q["limit"], q["used"]) for q in d["quotas"])'
NAMES='",".join(sorted(v["name"] for v in d["volumes"]))'

lab_up 3

log "1. a token, a quota and an owner made through n1 apply on n2 and n3"
TOKEN=$("$LAB" vsan 1 --json token create alice | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["token"])') ||
    lab_fail "token create failed"
ID=${TOKEN:5:16}
lab vsan 1 token create bob
BOB=$(on 1 '[t["id"] for t in d["tokens"] if t["identity"] == "bob"][0]' token list)
lab vsan 1 quota set alice 32M
lab vsan 1 volume create a1 16M --owner alice
for i in 2 3; do
    wait_until 10 is "$i" "$ID alice,$BOB bob" "$TOKENS" token list ||
        lab_fail "n$i's tokens: $(on "$i" "$TOKENS" token list)"
    wait_until 10 is "$i" "alice 33554432 16777216" "$QUOTAS" quota list ||
        lab_fail "n$i's quotas: $(on "$i" "$QUOTAS" quota list)"
    [ "$(on "$i" 'd.get("owner")' volume show a1)" = alice ] || lab_fail "n$i: a1 has no owner"
done
! grep -rq "${TOKEN:22}" "$VSAN_LAB_DIR" || lab_fail "a token's secret is stored or logged"

log "2. two creates racing for the last 16 MiB of the quota: exactly one wins"
LAB_VOL=a1
wait_until 20 all_current || lab_fail "a1 never became current on all nodes"
"$LAB" vsan 2 volume create r2 16M --owner alice >"$T/r2.out" 2>&1 &
P2=$!
"$LAB" vsan 3 volume create r3 16M --owner alice >"$T/r3.out" 2>&1 &
P3=$!
E2=0 E3=0
wait "$P2" || E2=$?
wait "$P3" || E3=$?
log "   through n2: exit $E2, through n3: exit $E3: $(cat "$T/r2.out" "$T/r3.out" | grep quota || true)"
{ [ "$E2" = 0 ] && [ "$E3" != 0 ]; } || { [ "$E3" = 0 ] && [ "$E2" != 0 ]; } ||
    lab_fail "not exactly one winner: n2 $E2 ($(cat "$T/r2.out")), n3 $E3 ($(cat "$T/r3.out"))"
[ "$((E2 + E3))" = 18 ] || lab_fail "the loser exited $((E2 + E3)), not 18 (quota exceeded)"
grep -q "quota" "$T/r2.out" "$T/r3.out" || lab_fail "no quota error printed"
WINNER=r2
[ "$E2" = 0 ] || WINNER=r3
for i in 1 2 3; do
    wait_until 10 is "$i" "a1,$WINNER" "$NAMES" volume list ||
        lab_fail "n$i's volumes: $(on "$i" "$NAMES" volume list)"
    [ "$(on "$i" "$QUOTAS" quota list)" = "alice 33554432 33554432" ] ||
        lab_fail "n$i's quotas: $(on "$i" "$QUOTAS" quota list)"
done

log "3. n3 misses a token's revoke while down and learns it in its sync round"
lab kill 3
lab vsan 1 token revoke "$ID"
lab start 3
wait_until 30 is 3 "$BOB bob" "$TOKENS" token list ||
    lab_fail "n3's tokens after its restart: $(on 3 "$TOKENS" token list)"
TOKFILE=$(find "$VSAN_LAB_DIR/n3" -name tokens | head -n 1)
[ -n "$TOKFILE" ] || lab_fail "n3 has no tokens file"
! grep -q "^$ID " "$TOKFILE" || lab_fail "n3's tokens file keeps the revoked token"
log "ok"
