#!/usr/bin/env bash
# t-gen-config: deploy/gen-config's service addresses (--service,
# --service-interface) and add-node's, with no network, root or vsand:
#
#  - a 3-node cluster with two service addresses gets them, with their
#    interfaces, in the [node] section of the right vsan-NAME.conf; the
#    third node gets the service interface only (it may hold the others'
#    addresses), and everything else is what gen-config writes without
#    --service;
#  - every bad --service is refused with exit status 1, a message naming
#    the bad value, and no output directory;
#  - add-node gives a new node a service address, checked against the
#    nodes and the service addresses of the vsan-*.conf files beside the
#    corosync.conf it extends;
#  - the TLS credentials: one CA, a server certificate it signed whose
#    subjectAltName names every node's address and name and every service
#    address, a PSK file in psktool's format, and with --tls require the
#    [nbd] tls and [tls] keys in every vsan.conf (none without --tls);
#  - --token sets corosync's token and every vsan.conf's [mirror]
#    timeout (2.5 x), and a bad one is refused.
# timeout: 60
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init_tmp

GEN="$VT_REPO/deploy/gen-config"
ADD="$VT_REPO/deploy/add-node"
NODES=(--cluster prod --node n1=10.0.0.11 --node n2=10.0.0.12 --node n3=10.0.0.13)

# conf_value FILE KEY: the value of [node] KEY in FILE, or nothing.
conf_value() {
    awk -v key="$2" '
    /^\[/ { section = $0; next }
    section == "[node]" && $1 == key && $2 == "=" { print $3 }
    ' "$1"
}

# expect_node FILE ADDRESS IFACE: the [node] service keys of FILE ("" for
# a key that must be absent).
expect_node() {
    local got
    got=$(conf_value "$1" service_address)
    [ "$got" = "$2" ] || die "$1: service_address \"$got\", expected \"$2\""
    got=$(conf_value "$1" service_interface)
    [ "$got" = "$3" ] || die "$1: service_interface \"$got\", expected \"$3\""
}

# same_but_service PLAIN FILE: FILE is PLAIN plus service_* lines.
same_but_service() {
    grep -v '^service_' "$2" | diff -u "$1" - >&2 || die "$2 differs from $1 beyond service_*"
}

log "good: n1 and n2 with service addresses, n3 without"
expect_exit 0 "$GEN" "${NODES[@]}" --out "$T/plain"
expect_exit 0 "$GEN" "${NODES[@]}" --service n1=192.0.2.101/24@eth0 \
    --service n2=192.0.2.102/24 --service-interface ens18 --out "$T/svc"
expect_out 'n1: .*, service nbd://192\.0\.2\.101:10809 on eth0$'
expect_out 'n2: .*, service nbd://192\.0\.2\.102:10809 on ens18$'
expect_out 'n3: .*:10809$'
expect_node "$T/svc/vsan-n1.conf" 192.0.2.101/24 eth0
expect_node "$T/svc/vsan-n2.conf" 192.0.2.102/24 ens18
expect_node "$T/svc/vsan-n3.conf" "" ens18
expect_node "$T/plain/vsan-n1.conf" "" ""
for n in 1 2 3; do
    same_but_service "$T/plain/vsan-n$n.conf" "$T/svc/vsan-n$n.conf"
done
cmp "$T/plain/corosync.conf" "$T/svc/corosync.conf" || die "--service changed corosync.conf"

log "good: an IPv6 cluster takes IPv4 service addresses"
expect_exit 0 "$GEN" --cluster v6 --node a=fd00::11 --node b=fd00::12 \
    --service a=198.51.100.101/24@eth0 --service b=198.51.100.102/24@eth1 --out "$T/v6"
expect_node "$T/v6/vsan-a.conf" 198.51.100.101/24 eth0
expect_node "$T/v6/vsan-b.conf" 198.51.100.102/24 eth1

# bad WHAT VALUE ARG...: gen-config with the three nodes and ARGs fails,
# names VALUE, and writes nothing.
bad() {
    local what=$1 value=$2 out="$T/bad"
    shift 2
    expect_exit 1 "$GEN" "${NODES[@]}" --service-interface eth0 "$@" --out "$out"
    grep -qF -- "$value" <<<"$OUT" || die "$what: \"$value\" not named in: $OUT"
    [ ! -e "$out" ] || die "$what: $out was created"
    log "  $what: $OUT"
}

log "bad --service values"
bad "unknown node" '"n4"' --service n4=192.0.2.104/24
bad "no NAME=" '"192.0.2.101/24"' --service 192.0.2.101/24
bad "bad address" '"192.0.2.300"' --service n1=192.0.2.300/24
bad "host name" '"host.example"' --service n1=host.example/24
bad "IPv6 address" '"fd00::1"' --service n1=fd00::1/64
bad "loopback" '"127.0.0.1"' --service n1=127.0.0.1/8
bad "network address" '"192.0.2.0/24"' --service n1=192.0.2.0/24
bad "broadcast address" '"192.0.2.255/24"' --service n1=192.0.2.255/24
bad "no prefix" '"192.0.2.101"' --service n1=192.0.2.101
bad "prefix 33" '"33"' --service n1=192.0.2.101/33
bad "prefix 0" '"0"' --service n1=192.0.2.101/0
bad "prefix 024" '"024"' --service n1=192.0.2.101/024
bad "prefix x" '"x"' --service n1=192.0.2.101/x
bad "a node's address" "10.0.0.12 is node n2's address" --service n1=10.0.0.12/24
bad "a service address twice" "192.0.2.101 is node n1's service address" \
    --service n1=192.0.2.101/24 --service n3=192.0.2.101/24
bad "two for one node" '"n1=192.0.2.102/24"' \
    --service n1=192.0.2.101/24 --service n1=192.0.2.102/24
bad "interface with /" '"eth/0"' --service n1=192.0.2.101/24@eth/0
bad "interface too long" '"0123456789abcdef"' --service n1=192.0.2.101/24@0123456789abcdef
bad "empty interface" 'interface ""' --service n1=192.0.2.101/24@
bad "bad --service-interface" '"a b"' --service-interface "a b"

log "bad: no interface for a node"
expect_exit 1 "$GEN" "${NODES[@]}" --service n1=192.0.2.101/24 --out "$T/bad"
expect_out '"n1=192\.0\.2\.101/24": no interface'
[ ! -e "$T/bad" ] || die "$T/bad was created"
expect_exit 1 "$GEN" "${NODES[@]}" --service n1=192.0.2.101/24@eth0 \
    --service n2=192.0.2.102/24@eth0 --out "$T/bad"
expect_out 'node n3 has no service interface'
[ ! -e "$T/bad" ] || die "$T/bad was created"

log "add-node --service"
expect_exit 0 "$ADD" --conf "$T/svc/corosync.conf" --node n4=10.0.0.14 \
    --service 192.0.2.104/24@eth2 --out "$T/add"
expect_out 'drop-in'
expect_node "$T/add/vsan-n4.conf" 192.0.2.104/24 eth2
expect_exit 0 "$ADD" --conf "$T/svc/corosync.conf" --node n4=10.0.0.14 \
    --service-interface eth2 --out "$T/add2"
expect_node "$T/add2/vsan-n4.conf" "" eth2
expect_exit 0 "$ADD" --conf "$T/plain/corosync.conf" --node n4=10.0.0.14 --out "$T/add3"
expect_node "$T/add3/vsan-n4.conf" "" ""

# bad_add WHAT VALUE ARG...: as bad, for add-node on the cluster "svc".
bad_add() {
    local what=$1 value=$2 out="$T/bad"
    shift 2
    expect_exit 1 "$ADD" --conf "$T/svc/corosync.conf" --node n4=10.0.0.14 "$@" --out "$out"
    grep -qF -- "$value" <<<"$OUT" || die "add-node $what: \"$value\" not named in: $OUT"
    [ ! -e "$out" ] || die "add-node $what: $out was created"
    log "  $what: $OUT"
}

log "bad add-node --service values"
bad_add "bad address" '"192.0.2.300"' --service 192.0.2.300/24@eth0
bad_add "bad prefix" '"33"' --service 192.0.2.104/33@eth0
bad_add "a node's address" "10.0.0.13 is node n3's address" --service 10.0.0.13/24@eth0
bad_add "its own address" "10.0.0.14 is node n4's address" --service 10.0.0.14/24@eth0
bad_add "n1's service address" "vsan-n1.conf" --service 192.0.2.101/24@eth0
bad_add "bad interface" '"eth:0"' --service 192.0.2.104/24@eth:0
bad_add "no interface" '"192.0.2.104/24": no interface' --service 192.0.2.104/24
bad_add "no interface to stand in" "vsan-n1.conf has a service address"

log "TLS credentials"
[ ! -e "$T/plain/tls/ca-cert.pem" ] || ! grep -q '^tls = ' "$T/plain/vsan-n1.conf" ||
    die "without --tls, vsan.conf has a tls key"
expect_exit 0 "$GEN" "${NODES[@]}" --service n1=192.0.2.101/24@eth0 \
    --service n2=192.0.2.102/24@eth0 --service-interface eth1 --tls require --psk-user alice \
    --out "$T/tls"
for f in tls/ca-cert.pem tls/server-cert.pem tls/server-key.pem tls-ca/ca-key.pem keys.psk; do
    [ -s "$T/tls/$f" ] || die "gen-config --tls made no $f"
done
[ "$(stat -c %a "$T/tls/tls/server-key.pem")" = 600 ] || die "server-key.pem is not mode 0600"
[ "$(stat -c %a "$T/tls/keys.psk")" = 600 ] || die "keys.psk is not mode 0600"
grep -Eq '^alice:[0-9a-f]{64}$' "$T/tls/keys.psk" || die "keys.psk: $(cat "$T/tls/keys.psk")"
OUT=$(certtool --verify --load-ca-certificate "$T/tls/tls/ca-cert.pem" \
    --infile "$T/tls/tls/server-cert.pem" 2>&1) || die "server certificate not verified: $OUT"
OUT=$(certtool -i --infile "$T/tls/tls/server-cert.pem")
for san in "IPAddress: 10.0.0.11" "IPAddress: 10.0.0.12" "IPAddress: 10.0.0.13" \
    "IPAddress: 192.0.2.101" "IPAddress: 192.0.2.102" "DNSname: n1" "DNSname: n3"; do
    expect_out "$san\$"
done
for n in n1 n2 n3; do
    for kv in "tls = require" "certificates = /etc/vsan/tls" "psk_file = /etc/vsan/keys.psk"; do
        grep -qx "$kv" "$T/tls/vsan-$n.conf" || die "vsan-$n.conf lacks \"$kv\""
    done
done
bad "bad --tls" '"maybe"' --tls maybe

log "corosync's token and the mirror timeout that goes with it"
grep -qx '    token: 1000' "$T/plain/corosync.conf" || die "the default token is not 1000"
! grep -q '^timeout = ' "$T/plain/vsan-n1.conf" || die "the default token set a mirror timeout"
expect_exit 0 "$GEN" "${NODES[@]}" --token 3000 --out "$T/token"
grep -qx '    token: 3000' "$T/token/corosync.conf" || die "--token 3000 is not in corosync.conf"
for n in n1 n2 n3; do
    [ "$(sed -n '/^\[mirror\]/,/^\[/s/^timeout = //p' "$T/token/vsan-$n.conf")" = 7500 ] ||
        die "--token 3000: vsan-$n.conf's [mirror] timeout is not 7500"
done
bad "token too short" '"999"' --token 999
bad "token too long" '"10001"' --token 10001
bad "token not a number" '"3s"' --token 3s

log "ok"
