#!/usr/bin/env bash
# t-lab-api: the network API on a 3-node lab under tls = require, with the
# cluster's credentials from deploy/gen-config (the lab's tls/ and
# tls-ca/), [api] and [tls] verify_peer added to each node's config.
#
#  1. A volume allocated through n1's API by an admin is described through
#     n2's: the same size and generation, one nbds:// URI per replica,
#     each on its node's NBD address.
#  2. A client's volume allocated through n3's API is its own on every
#     node: n1's API lists it to the client and not to another one, and
#     the client opens it over NBD with TLS at a URI n2 described, with
#     its own certificate (the owner's grant).
# timeout: 240
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=tests/integration/labtest.sh
. "$VT_DIR/labtest.sh"
# shellcheck source=deploy/gen-config
. "$VT_REPO/deploy/gen-config"

export VSAN_LAB_TLS=require
lab_up 3
APIPORT=10443

# Client certificates of the lab's CA, in libnbd's layout too (ca-cert.pem,
# client-cert.pem, client-key.pem).
for who in admin alice bob; do
    mkdir -p "$T/$who"
    gc_tls_cert "$VSAN_LAB_DIR/tls-ca" "$T/$who/client-key.pem" "$T/$who/client-cert.pem" \
        client "$who" || die "$GC_ERR"
    cp "$VSAN_LAB_DIR/tls/ca-cert.pem" "$T/$who/"
done

log "[api] on every node (a restart each)"
for i in 1 2 3; do
    # verify_peer: NBD clients' certificates are asked for, so that alice
    # is herself over NBD too, not anonymous.
    printf '[api]\nlisten = %s:%s\nadmins = admin\n[tls]\nverify_peer = yes\n' \
        "$(host_of "$i")" "$APIPORT" >>"$VSAN_LAB_DIR/n$i/vsan.conf"
    lab kill "$i"
    lab start "$i"
done
for i in 1 2 3; do
    wait_until 30 full_view "$i" "1 2 3" || lab_fail "n$i never saw the three nodes again"
done

# call I WHO METHOD PATH [BODY]: one request to node I's API as WHO; the
# answer's body in OUT, its status in CODE.
call() {
    local i=$1 who=$2 method=$3 path=$4
    local -a args=(-sS --max-time 20 --cacert "$VSAN_LAB_DIR/tls/ca-cert.pem"
        --cert "$T/$who/client-cert.pem" --key "$T/$who/client-key.pem"
        -X "$method" -o "$T/body" -w '%{http_code}')
    [ $# -lt 5 ] || args+=(--data-binary "$5")
    CODE=$(curl "${args[@]}" "https://$(host_of "$i"):$APIPORT/api/v1$path") ||
        lab_fail "curl to n$i: $method $path failed"
    OUT=$(cat "$T/body")
}

expect() {
    [ "$CODE" = "$1" ] || lab_fail "expected HTTP $1, got $CODE: $OUT"
    [ $# -lt 2 ] || json_assert "${@:2}"
}

api_up() {
    call "$1" admin GET /volumes
    [ "$CODE" = 200 ]
}

for i in 1 2 3; do
    wait_until 30 api_up "$i" || lab_fail "n$i's API does not answer: $CODE $OUT"
done

log "1. allocated through n1, described through n2"
call 1 admin POST /volumes '{"name": "web", "size": 16777216}'
expect 201 'd["name"] == "web"'
LAB_VOL=web
wait_until 20 all_current || lab_fail "web never became current on all nodes"
call 2 admin GET /volumes/web
hosts="$(host_of 1) $(host_of 2) $(host_of 3)"
expect 200 '(d["size"] == 16777216 and d["generation"] >= 1 and
    sorted(r["uri"] for r in d["replicas"]) ==
    sorted("nbds://%s:10809/web" % h for h in a[0].split()))' "$hosts"

log "2. a client's volume through n3: its own on every node, opened over NBD with TLS"
call 3 alice POST /volumes '{"name": "a1", "size": 8388608}'
expect 403 'd["code"] == "quota_exceeded" and "vsan quota set" in d["message"]'
"$LAB" vsan 1 quota set alice 16M >/dev/null || lab_fail "quota set alice failed"
call 3 alice POST /volumes '{"name": "a1", "size": 8388608}'
expect 201
LAB_VOL=a1
wait_until 20 all_current || lab_fail "a1 never became current on all nodes"
call 1 alice GET /volumes
expect 200 '[v["name"] for v in d["volumes"]] == ["a1"]'
call 1 bob GET /volumes/a1
expect 404 'd["code"] == "no_such_volume"'
call 1 admin GET /volumes
expect 200 '[v["name"] for v in d["volumes"]] == ["a1", "web"]'
call 2 alice GET /volumes/a1
expect 200
URI=$("$PY" -c 'import json, sys; print(json.load(sys.stdin)["replicas"][0]["uri"])' <<<"$OUT")
[ "$(nbdinfo --size "$URI?tls-certificates=$T/alice")" = 8388608 ] ||
    lab_fail "alice can't open $URI with her certificate"
OUT=$(nbdinfo --size "$URI?tls-certificates=$T/bob" 2>&1) && lab_fail "bob opened alice's volume"
log "ok"
