#!/usr/bin/env bash
# t-corosync: the corosync cluster transport (policing/cluster_corosync.c)
# against real corosyncs, each in its own network namespace (vsan-ct-I,
# 192.0.2.16I on bridge vsanct0) with a private /run, driven through
# tests/tools/cluster_probe, which prints every event with its time.
#
# One node: without corosync, init fails and says why; with it, the group
# of one delivers a small and a 1 MiB message intact and refuses a larger
# one, reads the nodelist, reports a clean leave of another member as such,
# a SIGKILLed corosync is reported (quorum lost, sends get ENOTCONN), and
# a corosync without votequorum is refused with that reason.
# Three nodes: probes multicasting from several threads each see the same
# messages in the same order; a probe killed while the others multicast
# leaves at the same point of both their streams; a probe killed at rest is
# seen as PROCDOWN within a second; a node cut off with nftables loses
# quorum while the other two keep it, see it leave (NODEDOWN) and go on
# multicasting.
# timeout: 90
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

PROBE="$BUILD/tests/cluster_probe"
BRIDGE=vsanct0
GROUP=vsan-ct
declare -A CS_PID     # node index -> corosync pid
declare -A PROBE_PID  # probe name -> pid
declare -A PROBE_FD   # probe name -> fd of its command fifo

[ -x "$PROBE" ] || die "no $PROBE: build it first (make $PROBE)"
command -v corosync >/dev/null || die "corosync is not installed (make deps)"
command -v nft >/dev/null || die "nft is not installed (make deps)"

ns() {
    echo "vsan-ct-$1"
}

addr() {
    echo "192.0.2.16$1"
}

# ---- network -----------------------------------------------------------

net_setup() {
    local i
    for i in 0 1 2 3; do
        [ ! -e "/run/netns/$(ns "$i")" ] ||
            die "namespace $(ns "$i") exists: another t-corosync is running, or remove it (ip netns del)"
    done
    ! ip link show "$BRIDGE" >/dev/null 2>&1 || die "bridge $BRIDGE exists: another t-corosync is running, or remove it"
    ip link add "$BRIDGE" type bridge
    on_exit "ip link del $BRIDGE"
    ip link set "$BRIDGE" up
}

# net_node I: namespace I with its end of a veth on the bridge.
net_node() {
    local i=$1 n
    n=$(ns "$i")
    ip netns add "$n"
    on_exit "ip netns del $n"
    ip link add "vsanctv$i" type veth peer name eth0 netns "$n"
    ip link set "vsanctv$i" master "$BRIDGE" up
    ip -n "$n" link set lo up
    ip -n "$n" addr add "$(addr "$i")/24" dev eth0
    ip -n "$n" link set eth0 up
}

# net_cut I: drops all of node I's traffic but its loopback.
net_cut() {
    ip netns exec "$(ns "$1")" nft -f - <<'EOF'
table inet vsanct {
    chain in {
        type filter hook input priority 0; policy drop;
        iif lo accept
    }
    chain out {
        type filter hook output priority 0; policy drop;
        oif lo accept
    }
}
EOF
}

# ---- corosync ----------------------------------------------------------

# cs_config NAME I NODE...: corosync.conf of node I in cluster NAME of
# the NODEs; with CS_NO_QUORUM=1, without a quorum provider, and with
# CS_TOKEN=MS, that token timeout (1000 ms if unset).
cs_config() {
    local name=$1 i=$2 dir="$T/cs$2" n
    shift 2
    mkdir -p "$dir/run" "$dir/state"
    {
        cat <<EOF
totem {
    version: 2
    cluster_name: $name
    transport: knet
    token: ${CS_TOKEN:-1000}
    token_coefficient: 0
    crypto_cipher: none
    crypto_hash: none
}
logging {
    to_stderr: yes
    to_syslog: no
    to_logfile: no
    timestamp: hires
}
system {
    state_dir: $dir/state
}
nodelist {
EOF
        for n in "$@"; do
            cat <<EOF
    node {
        nodeid: $((n == 0 ? 1 : n))
        name: ct$n
        ring0_addr: $(addr "$n")
    }
EOF
        done
        echo "}"
        [ "${CS_NO_QUORUM:-0}" = 1 ] || printf 'quorum {\n    provider: corosync_votequorum\n}\n'
    } >"$dir/corosync.conf"
}

cs_ready() {
    proc_alive "${CS_PID[$1]}" || die "corosync of node $1 exited; log: $(tail -n 20 "$T/cs$1/corosync.log")"
    ip netns exec "$(ns "$1")" corosync-cfgtool -s >/dev/null 2>&1
}

# cs_start I: corosync -f in namespace I, with /run bind-mounted from its
# own dir (its pid lock cannot be moved) in a mount namespace of its own.
cs_start() {
    local i=$1 dir="$T/cs$1" pid
    # shellcheck disable=SC2016 # $1 and $2 are the inner shell's
    ip netns exec "$(ns "$i")" unshare -m --propagation slave sh -c 'mount --bind "$1" /run && exec corosync -f -c "$2"' \
        sh "$dir/run" "$dir/corosync.conf" >"$dir/corosync.log" 2>&1 &
    pid=$!
    CS_PID[$i]=$pid
    on_exit "cs_kill $i"
    wait_until 20 cs_ready "$i" || die "corosync of node $i does not answer after 20 s"
}

# cs_kill I: SIGKILL, then what libqb leaves behind after one: corosync's
# blackbox and IPC files, named after its pid.
cs_kill() {
    local pid=${CS_PID[$1]}
    [ -n "$pid" ] || return 0
    CS_PID[$1]=""
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf /dev/shm/qb-"$pid"-* /dev/shm/qb-corosync-"$pid"-*
}

cs_quorate() {
    local out
    out=$(ip netns exec "$(ns "$1")" corosync-quorumtool -s 2>/dev/null) || true
    grep -Eq '^Quorate: +Yes' <<<"$out"
}

# ---- probes ------------------------------------------------------------

# probe_start NAME I: a probe in namespace I; its commands go through a
# fifo, its events to $T/NAME.out.
probe_start() {
    local name=$1 i=$2 fd pid
    mkfifo "$T/$name.in"
    : >"$T/$name.out"
    ip netns exec "$(ns "$i")" "$PROBE" -g "$GROUP" <"$T/$name.in" >"$T/$name.out" 2>"$T/$name.err" &
    pid=$!
    on_exit "probe_kill $name"
    exec {fd}>"$T/$name.in"
    PROBE_PID[$name]=$pid
    PROBE_FD[$name]=$fd
    wait_probe "$name" ' ready nodeid=' 10
}

probe_cmd() {
    printf '%s\n' "$2" >&"${PROBE_FD[$1]}"
}

probe_has() {
    grep -Eq -- "$2" "$T/$1.out"
}

# probe_count NAME REGEX: how many event lines match.
probe_count() {
    grep -Ec -- "$2" "$T/$1.out" || true
}

wait_probe() {
    local name=$1 re=$2 limit=${3:-10}
    wait_until "$limit" probe_has "$name" "$re" ||
        die "probe $name: no /$re/ after $limit s; events: $(tail -n 8 "$T/$name.out"); log: $(tail -n 8 "$T/$name.err")"
}

count_reached() {
    [ "$(probe_count "$1" "$2")" -ge "$3" ]
}

wait_count() {
    local name=$1 re=$2 want=$3 limit=${4:-20}
    wait_until "$limit" count_reached "$name" "$re" "$want" ||
        die "probe $name: $(probe_count "$name" "$re") of $want /$re/ after $limit s; its membership changes: $(grep ' confchg ' "$T/$name.out" | tail -n 4)"
}

probe_close() {
    local fd=${PROBE_FD[$1]}
    [ -n "$fd" ] || return 0
    PROBE_FD[$1]=""
    exec {fd}>&-
}

# probe_quit NAME: ends the probe through its input; it must exit 0.
probe_quit() {
    local status=0 pid=${PROBE_PID[$1]}
    probe_cmd "$1" quit
    probe_close "$1"
    PROBE_PID[$1]=""
    wait "$pid" || status=$?
    [ "$status" -eq 0 ] || die "probe $1 exited $status; log: $(tail -n 20 "$T/$1.err")"
}

# probe_kill NAME: SIGKILL; its input is closed only after, or it might
# see the end of input first and leave the group cleanly.
probe_kill() {
    local pid=${PROBE_PID[$1]}
    if [ -n "$pid" ]; then
        PROBE_PID[$1]=""
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    probe_close "$1"
}

# pid_of NAME: the pid the probe's ready line announced (= its process).
pid_of() {
    sed -n 's/.* ready nodeid=[0-9]* pid=\([0-9]*\)$/\1/p' "$T/$1.out"
}

# event_time NAME REGEX: the time of the first event matching REGEX.
event_time() {
    grep -E -m 1 -- "$2" "$T/$1.out" | cut -d' ' -f1
}

# Event lines without their time, from the first one matching REGEX on.
stream_from() {
    awk -v re="$2" 'found || $0 ~ re { found = 1; $1 = ""; print }' "$T/$1.out" |
        grep -E '^ (deliver|confchg) ' || true
}

elapsed_ok() {
    awk -v a="$1" -v b="$2" -v max="$3" 'BEGIN { exit !(b - a >= 0 && b - a < max) }'
}

# ---- one node ----------------------------------------------------------

net_setup
net_node 0

log "init without corosync fails cleanly"
status=0
# (stdin a pipe: the probe polls it, and epoll refuses /dev/null)
true | ip netns exec "$(ns 0)" "$PROBE" -g "$GROUP" >"$T/none.out" 2>"$T/none.err" || status=$?
[ "$status" -eq 1 ] || die "probe without corosync exited $status, expected 1"
grep -q 'init-failed -107 ENOTCONN' "$T/none.out" || die "no init-failed ENOTCONN: $(cat "$T/none.out")"
grep -q 'cpg_initialize: CS_ERR_LIBRARY: .*is corosync running?' "$T/none.err" ||
    die "the failure does not say corosync is missing: $(cat "$T/none.err")"

log "one node: quorum, self-delivery, message sizes, nodelist"
cs_config vsanct-solo 0 0
cs_start 0
probe_start p0 0
p0=$(pid_of p0)
wait_probe p0 ' quorum 1$'
wait_probe p0 " confchg members=1/$p0 left= joined=1/$p0$"
probe_cmd p0 "send hello"
wait_probe p0 " deliver 1 $p0 5 hello$"
probe_cmd p0 "big 1048576"
wait_probe p0 ' sent-big 1048576 fnv='
fnv=$(sed -n 's/.* sent-big 1048576 fnv=\([0-9a-f]*\)$/\1/p' "$T/p0.out")
wait_probe p0 " deliver 1 $p0 1048576 fnv=$fnv$"
probe_cmd p0 "big 1048577"
wait_probe p0 ' send-failed -90 EMSGSIZE$'
probe_cmd p0 nodelist
wait_probe p0 ' nodelist 1$'
probe_has p0 ' node 1 ct0 192\.0\.2\.160$' || die "wrong nodelist: $(grep ' node' "$T/p0.out")"

log "one node: a member that quits is reported as a clean leave"
probe_start p0b 0
p0b=$(pid_of p0b)
wait_probe p0 " confchg members=1/[0-9]+,1/[0-9]+ left= joined=1/$p0b$"
probe_quit p0b
wait_probe p0 " confchg members=1/$p0 left=1/$p0b/left joined=$"

log "one node: corosync killed"
cs_kill 0
wait_probe p0 ' quorum 0$' 5
grep -q 'lost the connection to corosync' "$T/p0.err" || die "the loss is not logged: $(cat "$T/p0.err")"
probe_cmd p0 "send after-death"
wait_probe p0 ' send-failed -107 ENOTCONN$'
probe_quit p0

log "one node: corosync without votequorum is refused with the reason"
CS_NO_QUORUM=1 cs_config vsanct-solo 0 0
cs_start 0
status=0
true | ip netns exec "$(ns 0)" "$PROBE" -g "$GROUP" >"$T/noq.out" 2>"$T/noq.err" || status=$?
[ "$status" -eq 1 ] || die "probe against corosync without votequorum exited $status, expected 1"
grep -q 'init-failed -2 ENOENT' "$T/noq.out" || die "no init-failed ENOENT: $(cat "$T/noq.out")"
grep -q 'corosync runs without votequorum' "$T/noq.err" ||
    die "the failure does not name the missing quorum provider: $(cat "$T/noq.err")"
cs_kill 0

# ---- three nodes -------------------------------------------------------

log "three nodes: corosync up and quorate"
# The streams below must not split: a ring that loses its token splits,
# and each side then rightly delivers only its own messages. On a shared
# CI VM a stall of over a second split the 1000 ms ring mid-burst, so
# these corosyncs wait 3 s for the token.
for i in 1 2 3; do
    net_node "$i"
    CS_TOKEN=3000 cs_config vsanct "$i" 1 2 3
done
for i in 1 2 3; do
    cs_start "$i"
done
for i in 1 2 3; do
    wait_until 20 cs_quorate "$i" || die "node $i not quorate after 20 s"
done

for i in 1 2 3; do
    probe_start "p$i" "$i"
done
pid1=$(pid_of p1) pid2=$(pid_of p2) pid3=$(pid_of p3)
all3="members=1/$pid1,2/$pid2,3/$pid3 "
for i in 1 2 3; do
    wait_probe "p$i" ' quorum 1$'
    wait_probe "p$i" " confchg $all3"
done

probe_cmd p1 nodelist
wait_probe p1 ' nodelist 3$'
for i in 1 2 3; do
    probe_has p1 " node $i ct$i 192\.0\.2\.16$i$" || die "node $i missing from the nodelist: $(grep ' node' "$T/p1.out")"
done

log "three nodes: concurrent multicasts are seen in one order"
THREADS=3 COUNT=300
for i in 1 2 3; do
    probe_cmd "p$i" "burst A$i $THREADS $COUNT"
done
total=$((3 * THREADS * COUNT))
for i in 1 2 3; do
    wait_count "p$i" ' deliver [0-9]+ [0-9]+ [0-9]+ A[123] ' "$total" 30
done
for i in 1 2 3; do
    grep -E ' deliver [0-9]+ [0-9]+ [0-9]+ A[123] ' "$T/p$i.out" | cut -d' ' -f2- >"$T/A.p$i"
done
cmp -s "$T/A.p1" "$T/A.p2" || die "p1 and p2 saw the messages in different orders"
cmp -s "$T/A.p1" "$T/A.p3" || die "p1 and p3 saw the messages in different orders"
[ "$(wc -l <"$T/A.p1")" -eq "$total" ] || die "$(wc -l <"$T/A.p1") messages delivered, $total sent"
# Every sender thread's messages arrive once each, in its order.
awk -v want="$COUNT" '{ k = $2 "/" $3 " " $5 " " $6; if ($7 != n[k]++) bad = bad " " k ":" $7 }
     END { for (k in n) if (n[k] != want) bad = bad " " k "=" n[k]; if (bad != "") { print bad; exit 1 } }' \
    "$T/A.p1" || die "a sender's messages were lost, repeated or reordered"
log "$total messages from $((3 * THREADS)) threads on 3 nodes, in one order everywhere"

log "three nodes: a probe killed mid-stream leaves at the same point for all"
probe_cmd p1 "burst B1 2 2000"
probe_cmd p2 "burst B2 2 2000"
probe_kill p3
for i in 1 2; do
    wait_probe "p$i" " left=3/$pid3/procdown " 10
    wait_count "p$i" ' deliver [0-9]+ [0-9]+ [0-9]+ B[12] ' 8000 30
done
# From the last message of round A on, both saw the same deliveries and
# the same membership change at the same point.
lastA=$(tail -n 1 "$T/A.p1" | cut -d' ' -f5-)
stream_from p1 " $lastA\$" >"$T/B.p1"
stream_from p2 " $lastA\$" >"$T/B.p2"
cmp -s "$T/B.p1" "$T/B.p2" || die "p1 and p2 differ in messages or membership after the kill: $(diff "$T/B.p1" "$T/B.p2" | head -n 5)"
grep -q "procdown" "$T/B.p1" || die "the PROCDOWN change is not in the compared streams"
log "p1 and p2: $(grep -c deliver "$T/B.p1") deliveries and the PROCDOWN in one order"

log "three nodes: a killed probe is seen as PROCDOWN within a second"
# procdown_delay NAME: starts probe NAME on node 3, kills it once p1 and
# p2 see it join, waits for both to see it go and leaves the later delay
# in DELAY_MS.
procdown_delay() {
    local name=$1 pid p t0 tl worst=0
    probe_start "$name" 3
    pid=$(pid_of "$name")
    for p in p1 p2; do
        wait_probe "$p" " joined=3/$pid$"
    done
    t0=$(date +%s.%N)
    probe_kill "$name"
    for p in p1 p2; do
        wait_probe "$p" " left=3/$pid/procdown " 5
        tl=$(event_time "$p" " left=3/$pid/procdown ")
        worst=$(awk -v a="$t0" -v b="$tl" -v w="$worst" 'BEGIN { d = (b - a) * 1000; print (d > w ? d : w) }')
    done
    DELAY_MS=$(printf '%.1f' "$worst")
}
# The delay includes the scheduling of this shell and of the probes (not
# real-time, unlike corosync): on a machine loaded by other tests one
# attempt may exceed the bound, so a second and third get their chance.
for attempt in 1 2 3; do
    procdown_delay "p3k$attempt"
    log "attempt $attempt: PROCDOWN seen by p1 and p2 after $DELAY_MS ms"
    awk -v ms="$DELAY_MS" 'BEGIN { exit !(ms < 1000) }' && break
    [ "$attempt" -lt 3 ] || die "PROCDOWN took over a second in 3 attempts"
done

log "three nodes: a cut node loses quorum, the other two keep it"
probe_start p3c 3
pid3c=$(pid_of p3c)
for p in p1 p2; do
    wait_probe "$p" " joined=3/$pid3c$"
done
wait_probe p3c ' quorum 1$'
t0=$(date +%s.%N)
net_cut 3
wait_probe p3c ' quorum 0$' 20
for p in p1 p2; do
    wait_probe "$p" " members=1/$pid1,2/$pid2 left=3/$pid3c/nodedown " 20
done
wait_probe p3c " confchg members=3/$pid3c left=1/$pid1/nodedown,2/$pid2/nodedown joined=$" 20
tl=$(event_time p1 " left=3/$pid3c/nodedown ")
log "p1: the cut node left after $(awk -v a="$t0" -v b="$tl" 'BEGIN { printf "%.1f s", b - a }')"
probe_cmd p1 "send after-cut"
for p in p1 p2; do
    wait_probe "$p" " deliver 1 $pid1 9 after-cut$"
done
for p in p1 p2; do
    [ "$(probe_count "$p" ' quorum 0$')" -eq 0 ] || die "$p lost quorum: $(grep ' quorum ' "$T/$p.out")"
done
cs_quorate 1 || die "node 1's corosync is not quorate after the cut"
! probe_has p3c ' deliver .* after-cut$' || die "the cut node received a message of the majority"

for p in p1 p2 p3c; do
    probe_quit "$p"
done
log "ok"
