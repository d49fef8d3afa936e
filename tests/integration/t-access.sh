#!/usr/bin/env bash
# t-access: grants (`vsan access`) and what NBD clients see by identity,
# on a standalone vsand with tls = on and a PSK file of two users, with
# real clients (nbdinfo, python3-libnbd).
#
#  1. alice and bob each list only their volumes; opening the other's
#     (GO, INFO) fails exactly as a volume that does not exist does.
#  2. A read-only grant: NBD_FLAG_READ_ONLY advertised, a write sent
#     anyway (libnbd's own check off) refused with EPERM. A grant covers
#     the volume's snapshots, read-only; no grant, no snapshot.
#  3. A revoke ends the identity's open connection (its next request
#     fails); a grant changed to read-only ends it too, and the next one
#     is read-only.
#  4. anonymous = all (the default with tls = on): plain clients see every
#     volume; anonymous = none: only those granted to anonymous. Grants
#     survive the restart. root on the local socket sees everything.
#  5. Bad input: an unknown volume, bad identities, a revoke of no grant,
#     a volume over its cap of grants: precise errors and exit codes, and
#     nothing changes.
#  6. A name longer than a volume name ("<64-char volume>ALIAS") is an
#     unknown export, not that volume.
#  7. A revoked client that sends nothing more is disconnected after the
#     grace period (its volume can be deleted); a volume made again under
#     that name starts without grants.
#  8. A revoke while other clients are in their handshake ends none of
#     those it does not concern (root on the local socket, another
#     identity's).
#  9. A revoke ends a connection to the volume's snapshot. EXPORT_NAME
#     and LIST_META_CONTEXT of a volume a client may not see answer as
#     for one that does not exist.
# timeout: 240
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=deploy/gen-config
. "$VT_REPO/deploy/gen-config"

mkdir -p "$T/psk"
gc_tls_psk "$T/psk/keys.psk" alice || die "$GC_ERR"
gc_tls_psk "$T/psk/keys.psk" bob || die "$GC_ERR"
PSKS="$T/psk/keys.psk"

vt_config nbd.tls=on
printf '[tls]\npsk_file = %s\n' "$PSKS" >>"$CONF"
PLAIN=$URI
LOCAL_LIST="nbd+unix:///?socket=$NBD_SOCKET"

# psk_uri USER [EXPORT]: a libnbd URI over TLS as USER.
psk_uri() {
    echo "nbds://$1@127.0.0.1:$PORT/${2:-}?tls-psk-file=$PSKS"
}

# lists URI NAME...: nbdinfo --list through URI shows exactly NAMEs.
lists() {
    local uri=$1
    shift
    expect_exit 0 nbdinfo --list --json "$uri"
    json_assert 'sorted(e["export-name"] for e in d["exports"]) == sorted(a)' "$@"
}

# same_as_missing USER EXPORT: opening EXPORT as USER fails with the very
# error of an export that does not exist (the name aside), by GO and INFO.
same_as_missing() {
    local user=$1 exp=$2 got missing
    got=$(nbdinfo "$(psk_uri "$user" "$exp")" 2>&1) && die "$user opened $exp"
    missing=$(nbdinfo "$(psk_uri "$user" no-such-volume)" 2>&1) && die "no-such-volume opened"
    [ "${got//"export: $exp"/export: X}" = "${missing//"export: no-such-volume"/export: X}" ] ||
        die "$user opening $exp: '$got', unlike a missing export: '$missing'"
    nbdpy "$PORT" "$PSKS" "$user" "$exp" <<'PY' || die "$user: INFO of $exp differs from a missing export's"
import sys
import nbd
port, psk, user, exp = sys.argv[1:]

def info(name):
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_psk_file(psk)
    h.set_tls_username(user)
    h.set_opt_mode(True)
    h.connect_tcp("127.0.0.1", port)
    h.set_export_name(name)
    try:
        h.opt_info()
        return "opened"
    except nbd.Error as e:
        return (e.errnum, e.string.replace("export: " + name, "export: X"))
    finally:
        h.opt_abort()

a, b = info(exp), info("no-such-volume")
assert a == b and a != "opened", (a, b)
PY
}

vsand_start
for v in a b c; do
    expect_exit 0 vsan volume create "$v" 16M
done

log "1. each identity lists only its volumes and can't open the other's"
expect_exit 0 vsan access grant a alice
expect_out 'volume "a": granted to "alice", read-write'
expect_exit 0 vsan access grant b bob
expect_exit 0 vsan access grant c bob --read-only
lists "$(psk_uri alice)" a
lists "$(psk_uri bob)" b c
expect_exit 0 nbdinfo "$(psk_uri alice a)"
same_as_missing alice b
same_as_missing alice c
same_as_missing bob a
expect_exit 0 vsan --json access list
json_assert 'sorted((g["volume"], g["identity"], g["mode"]) for g in d["grants"]) == [("a", "alice", "read-write"), ("b", "bob", "read-write"), ("c", "bob", "read-only")]'
expect_exit 0 vsan --json access list c
json_assert '[g["identity"] for g in d["grants"]] == ["bob"]'

log "2. a read-only grant: READ_ONLY advertised, writes refused with EPERM; snapshots"
expect_exit 0 nbdinfo --json "$(psk_uri bob c)"
json_assert 'd["exports"][0]["is_read_only"] is True'
expect_exit 0 nbdinfo --json "$(psk_uri bob b)"
json_assert 'd["exports"][0]["is_read_only"] is False'
nbdpy "$PORT" "$PSKS" <<'PY' || die "writes to a read-only grant"
import errno, sys
import nbd
port, psk = sys.argv[1:]
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_psk_file(psk)
h.set_tls_username("bob")
h.set_export_name("c")
h.set_strict_mode(0)  # send what the server advertises it refuses
h.connect_tcp("127.0.0.1", port)
assert h.is_read_only()
for name, op in (("write", lambda: h.pwrite(b"x" * 4096, 0)),
                 ("trim", lambda: h.trim(4096, 0)),
                 ("write zeroes", lambda: h.zero(4096, 0))):
    try:
        op()
        sys.exit(name + " succeeded")
    except nbd.Error as e:
        assert e.errnum == errno.EPERM, (name, e.errnum, e.string)
assert h.pread(4096, 0) == bytes(4096)
h.shutdown()
PY
expect_exit 0 vsan snapshot create a s1
expect_exit 0 nbdinfo --json "$(psk_uri alice a@s1)"
json_assert 'd["exports"][0]["is_read_only"] is True'
same_as_missing bob a@s1

log "3. a revoke ends the identity's open connection; so does a change of mode"
cat >"$T/held.py" <<'PY'
import errno, os, sys, time
import nbd
port, psk, user, exp, ready, go = sys.argv[1:]
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_psk_file(psk)
h.set_tls_username(user)
h.set_export_name(exp)
h.connect_tcp("127.0.0.1", port)
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
# held NAME USER EXPORT: a connection of USER to EXPORT that reads once,
# then again once $T/NAME.go exists.
held() {
    bg_start "$1" "$PY" "$T/held.py" "$PORT" "$PSKS" "$2" "$3" "$T/$1.ready" "$T/$1.go"
    wait_until 20 test -e "$T/$1.ready" || die "$1 did not connect: $(cat "$T/$1.out")"
}
held bobs bob b
held bobc bob c
expect_exit 0 vsan access revoke b bob
expect_out 'volume "b": grant to "bob" revoked'
touch "$T/bobs.go" "$T/bobc.go"
wait_until 20 grep -q . "$T/bobs.out" || die "bob's connection to b did not answer"
grep -q "^ended: ESHUTDOWN" "$T/bobs.out" || die "bob's connection to b: $(cat "$T/bobs.out")"
wait_until 20 grep -q . "$T/bobc.out" || die "bob's connection to c did not answer"
grep -q "still served" "$T/bobc.out" || die "bob's connection to c ended: $(cat "$T/bobc.out")"
grep -q 'volume "b": ending 1 connections whose grant changed' "$LOG" ||
    die "no connection ending logged"
same_as_missing bob b
held alicea alice a
expect_exit 0 vsan access grant a alice --read-only
expect_out 'granted to "alice", read-only'
touch "$T/alicea.go"
wait_until 20 grep -q . "$T/alicea.out" || die "alice's connection did not answer"
grep -q "^ended: ESHUTDOWN" "$T/alicea.out" || die "alice's connection went on: $(cat "$T/alicea.out")"
expect_exit 0 nbdinfo --json "$(psk_uri alice a)"
json_assert 'd["exports"][0]["is_read_only"] is True'
expect_exit 0 vsan access grant a alice --read-only
expect_out "already"

log "4. anonymous = all, then none; root on the local socket"
lists "$PLAIN" a b c
lists "$LOCAL_LIST" a b c
vsand_stop TERM
sed -i 's/^\[nbd\]$/[nbd]\nanonymous = none/' "$CONF"
vsand_start
lists "$PLAIN"
expect_exit 1 nbdinfo "$PLAIN/a"
lists "$LOCAL_LIST" a b c
expect_exit 0 vsan access grant c anonymous --read-only
lists "$PLAIN" c
expect_exit 0 nbdinfo --json "$PLAIN/c"
json_assert 'd["exports"][0]["is_read_only"] is True'
log "   the grants survived the restart"
lists "$(psk_uri alice)" a
lists "$(psk_uri bob)" c

log "5. bad input"
expect_exit 4 vsan access grant nope alice
expect_out 'volume "nope": no such volume'
expect_exit 4 vsan access list nope
expect_exit 2 vsan access grant a "CN=alice,O=Example"
expect_out "bare name"
expect_exit 2 vsan access grant a "dn:"
expect_exit 2 vsan access grant a "dn:alice"
expect_exit 2 vsan access grant a ""
expect_exit 2 vsan access grant a "$(printf 'x%.0s' $(seq 513))"
expect_out "longer than 512 bytes"
expect_exit 2 vsan access grant a alice --write
expect_exit 2 vsan access grant a
expect_exit 15 vsan access revoke a nobody
expect_out 'volume "a": no grant to "nobody"'
for i in $(seq 1 255); do
    vsan access grant b "user$i" >/dev/null || die "grant $i of b failed"
done
expect_exit 0 vsan access grant b "dn:CN=carol,O=Example"
expect_exit 16 vsan access grant b one-too-many
expect_out "256 grants already"
expect_exit 0 vsan --json access list b
json_assert 'len(d["grants"]) == 256 and "one-too-many" not in [g["identity"] for g in d["grants"]]'
expect_exit 0 vsan --json access list a
json_assert '[(g["identity"], g["mode"]) for g in d["grants"]] == [("alice", "read-only")]'

log "6. a name past the longest volume name is no alias of that volume"
LONG=$(printf 'v%.0s' $(seq 64))
expect_exit 0 vsan volume create "$LONG" 16M
expect_exit 0 vsan access grant "$LONG" bob
expect_exit 0 nbdinfo "$(psk_uri bob "$LONG")"
same_as_missing bob "${LONG}ALIAS"

log "7. an idle revoked client is disconnected after the grace period; a new volume of its name has no grants"
expect_exit 0 vsan volume create idle 16M
expect_exit 0 vsan access grant idle bob
held bobidle bob idle
expect_exit 0 vsan access revoke idle bob
wait_until 30 vsan volume delete idle || die "volume idle still in use by a revoked idle client"
expect_exit 0 vsan volume create idle 16M
expect_exit 0 vsan --json access list idle
json_assert 'd["grants"] == []'
same_as_missing bob idle

log "8. a revoke during others' handshakes ends none of them (root on the local socket, alice)"
cat >"$T/opt.py" <<'PY'
import os, sys, time
import nbd
where, psk, user, exp, ready, go = sys.argv[1:]
h = nbd.NBD()
h.set_opt_mode(True)
h.set_export_name(exp)
if psk:
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_psk_file(psk)
    h.set_tls_username(user)
    h.connect_tcp("127.0.0.1", where)
else:
    h.connect_unix(where)
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.05)
h.opt_go()
try:
    h.pread(4096, 0)
    print("served")
except nbd.Error as e:
    print("ended:", e.string)
PY
bg_start rootopt "$PY" "$T/opt.py" "$NBD_SOCKET" "" "" a "$T/rootopt.ready" "$T/opt.go"
bg_start aliceopt "$PY" "$T/opt.py" "$PORT" "$PSKS" alice a "$T/aliceopt.ready" "$T/opt.go"
wait_until 20 test -e "$T/rootopt.ready" -a -e "$T/aliceopt.ready" || die "the handshakes did not start"
expect_exit 0 vsan access revoke c anonymous
touch "$T/opt.go"
for n in rootopt aliceopt; do
    wait_until 20 grep -q . "$T/$n.out" || die "$n did not answer"
    grep -q "^served" "$T/$n.out" || die "$n, in its handshake during an unrelated revoke: $(cat "$T/$n.out")"
done

log "9. a revoke ends a connection to a snapshot; EXPORT_NAME and LIST_META_CONTEXT hide alike"
held alicesnap alice a@s1
expect_exit 0 vsan access revoke a alice
touch "$T/alicesnap.go"
wait_until 20 grep -q . "$T/alicesnap.out" || die "alice's connection to a@s1 did not answer"
grep -q "^ended: ESHUTDOWN" "$T/alicesnap.out" || die "alice's connection to a@s1: $(cat "$T/alicesnap.out")"
expect_exit 0 vsan access grant idle anonymous
nbdpy "$PORT" "$PSKS" <<'PY' || die "EXPORT_NAME or LIST_META_CONTEXT tell an invisible volume from a missing one"
import sys
import nbd
port, psk = sys.argv[1:]

def client(user):
    h = nbd.NBD()
    if user:
        h.set_tls(nbd.TLS_REQUIRE)
        h.set_tls_psk_file(psk)
        h.set_tls_username(user)
    return h

def export_name(name):
    # Without fixed newstyle, libnbd opens by NBD_OPT_EXPORT_NAME (plain only).
    h = client(None)
    h.set_handshake_flags(0)
    h.set_export_name(name)
    try:
        h.connect_tcp("127.0.0.1", port)
        return "opened"
    except nbd.Error as e:
        return (e.errnum, e.string.replace('"%s"' % name, "X"))

def list_meta(user, name):
    h = client(user)
    h.set_opt_mode(True)
    h.connect_tcp("127.0.0.1", port)
    h.add_meta_context("base:allocation")
    h.set_export_name(name)
    try:
        return h.opt_list_meta_context(lambda ctx: 0)
    except nbd.Error as e:
        return (e.errnum, e.string.replace('"%s"' % name, "X"))
    finally:
        h.opt_abort()

# anonymous = none here: a is not granted to anonymous, idle is.
assert export_name("idle") == "opened", export_name("idle")
a, m = export_name("a"), export_name("no-such-volume")
assert a == m and a != "opened", (a, m)
for user, hidden in (("bob", "a"), ("alice", "b"), (None, "a")):
    a, m = list_meta(user, hidden), list_meta(user, "no-such-volume")
    assert a == m and not isinstance(a, int), (user, a, m)
assert list_meta("bob", "c") == 1
PY
vsand_stop TERM
log "ok"
