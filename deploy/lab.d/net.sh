# shellcheck shell=bash
# net.sh - the lab's network: one namespace per node on a bridge.
#
# Node I lives in the network namespace vsan-lab-I with a veth whose root
# end (vsanlab-nI) is a port of the bridge vsanlab0. The bridge carries
# NET.1/24 and node I has NET.(10+I), so the root namespace, where the
# admin and the test clients run, reaches every node without routing or
# forwarding. NET is a /24 that nothing on the machine uses, by default
# 198.51.100.0/24 (TEST-NET-2, never routed; 192.0.2.0/24 is not the
# default because it is some machines' real network, this project's build
# machine included). corosync's and vsand's abstract unix sockets are per
# network namespace, which is what lets one machine run several of each.
#
# A cut is an nftables table inside the node's namespace, so it vanishes
# with the namespace and never touches the root namespace's ruleset.

LAB_BRIDGE=vsanlab0
LAB_NET_DEFAULT=198.51.100.0/24
LAB_CUT_TABLE=vsanlab_cut
LAB_NET=""     # the first three octets of the lab's /24, set by lab_set_net
LAB_BRIDGE_ADDR=""

# lab_set_net A.B.C.0/24: checks the form and sets LAB_NET.
lab_set_net() {
    local net=$1 a b c
    if ! [[ $net =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.0/24$ ]]; then
        lab_die "VSAN_LAB_NET=$net: give a /24 such as $LAB_NET_DEFAULT"
    fi
    a=${BASH_REMATCH[1]} b=${BASH_REMATCH[2]} c=${BASH_REMATCH[3]}
    gc_ipv4_syntax "$a.$b.$c.1" || lab_die "VSAN_LAB_NET=$net: $GC_ERR"
    LAB_NET=$a.$b.$c
    LAB_BRIDGE_ADDR=$LAB_NET.1
}

# The lab's /24 must be free: a route or an address there (the machine's
# own network, another lab, a VPN) would capture or lose the lab's traffic.
lab_net_free() {
    local net=$LAB_NET.0/24 used
    used=$(
        ip -4 route show root "$net"
        ip -4 route show match "$net" | grep -v '^default'
    ) || true
    [ -z "$used" ] || lab_die "$net is in use on this machine (route: $(echo "$used" | head -n 1)):" \
        "set VSAN_LAB_NET to a free /24, e.g. VSAN_LAB_NET=203.0.113.0/24"
}

lab_ns() {
    echo "vsan-lab-$1"
}

lab_veth() {
    echo "vsanlab-n$1"
}

lab_addr() {
    echo "$LAB_NET.$((10 + $1))"
}

# Node I's service address, NET.(100+I): its vsand adds it to eth0 once it
# is current, or a survivor does while node I is down.
lab_service_addr() {
    echo "$LAB_NET.$((100 + $1))"
}

lab_ns_exists() {
    [ -e "/run/netns/$(lab_ns "$1")" ]
}

# Every lab namespace present, by node number, whatever lab.env says (a
# half-built or half-removed lab included).
lab_ns_present() {
    ip netns list 2>/dev/null | sed -n 's/^vsan-lab-\([0-9][0-9]*\)\( .*\)\{0,1\}$/\1/p' | sort -n
}

lab_bridge_exists() {
    ip link show "$LAB_BRIDGE" >/dev/null 2>&1
}

lab_bridge_up() {
    ip link add "$LAB_BRIDGE" type bridge || lab_die "cannot create the bridge $LAB_BRIDGE"
    ip addr add "$LAB_BRIDGE_ADDR/24" dev "$LAB_BRIDGE" ||
        lab_die "cannot give $LAB_BRIDGE the address $LAB_BRIDGE_ADDR/24"
    ip link set "$LAB_BRIDGE" up || lab_die "cannot bring $LAB_BRIDGE up"
}

lab_bridge_down() {
    if lab_bridge_exists; then
        ip link del "$LAB_BRIDGE" || lab_warn "cannot delete the bridge $LAB_BRIDGE"
    fi
}

# lab_ns_up I: the namespace of node I, its loopback, and its veth port
# on the bridge with the node's address.
lab_ns_up() {
    local i=$1 ns veth
    ns=$(lab_ns "$i")
    veth=$(lab_veth "$i")
    ip netns add "$ns" || lab_die "cannot create the network namespace $ns"
    ip -n "$ns" link set lo up || lab_die "$ns: cannot bring lo up"
    ip link add "$veth" type veth peer name eth0 netns "$ns" ||
        lab_die "cannot create the veth pair $veth / $ns:eth0"
    ip link set "$veth" master "$LAB_BRIDGE" || lab_die "cannot put $veth on $LAB_BRIDGE"
    ip link set "$veth" up || lab_die "cannot bring $veth up"
    ip -n "$ns" addr add "$(lab_addr "$i")/24" dev eth0 ||
        lab_die "$ns: cannot give eth0 the address $(lab_addr "$i")"
    ip -n "$ns" link set eth0 up || lab_die "$ns: cannot bring eth0 up"
}

# lab_ns_down I: removes the veth pair (through its root end, which is
# gone at once, where a pair in a dying namespace lingers) and the
# namespace (which lingers until its last process is gone).
lab_ns_down() {
    local i=$1 ns veth
    ns=$(lab_ns "$i")
    veth=$(lab_veth "$i")
    if ip link show "$veth" >/dev/null 2>&1 && ! ip link del "$veth" 2>/dev/null; then
        ! ip link show "$veth" >/dev/null 2>&1 || lab_warn "cannot delete $veth"
    fi
    if lab_ns_exists "$i"; then
        ip netns del "$ns" || lab_warn "cannot delete the network namespace $ns"
    fi
}

# lab_cut I MODE: MODE all drops every packet but loopback's; peers drops
# only what goes to or comes from the other nodes, so clients in the root
# namespace still reach the node (a partition between servers).
lab_cut() {
    local i=$1 mode=$2 in_keep="" out_keep=""
    if [ "$mode" = peers ]; then
        in_keep="ip saddr $LAB_BRIDGE_ADDR accept"
        out_keep="ip daddr $LAB_BRIDGE_ADDR accept"
    fi
    lab_heal "$i"
    ip netns exec "$(lab_ns "$i")" nft -f - <<EOF || lab_die "n$i: nft could not install the cut"
table inet $LAB_CUT_TABLE {
    comment "deploy/lab cut $i ($mode)"
    chain input {
        type filter hook input priority -300; policy drop;
        iif "lo" accept
        $in_keep
    }
    chain output {
        type filter hook output priority -300; policy drop;
        oif "lo" accept
        $out_keep
    }
}
EOF
}

# lab_heal I: removes the cut, if any.
lab_heal() {
    local ns
    ns=$(lab_ns "$1")
    ip netns exec "$ns" nft list table inet "$LAB_CUT_TABLE" >/dev/null 2>&1 || return 0
    ip netns exec "$ns" nft delete table inet "$LAB_CUT_TABLE" ||
        lab_die "n$1: nft could not remove the cut"
}

# Prints "all", "peers" or "no".
lab_cut_state() {
    local rules
    rules=$(ip netns exec "$(lab_ns "$1")" nft list table inet "$LAB_CUT_TABLE" 2>/dev/null) || {
        echo no
        return
    }
    case $rules in
    *"saddr $LAB_BRIDGE_ADDR"*) echo peers ;;
    *) echo all ;;
    esac
}
