#!/usr/bin/env bash
# t-tls: NBD over TLS ([nbd] tls, [tls] certificates/verify_peer/psk_file)
# with real clients: nbdinfo and nbdcopy (libnbd's nbds:// URIs), qemu-img
# and qemu-io (tls-creds-x509, tls-creds-psk), python3-libnbd, and raw
# sockets for what no client does on purpose. Credentials come from
# deploy/gen-config's functions (certtool, psktool).
#
#  1. Bad [tls] settings stop vsand with a message naming the key, the
#     config file and the file at fault.
#  2. tls = require: plain clients are refused with NBD_REP_ERR_TLS_REQD
#     and a message saying TLS is required (EXPORT_NAME: closed; ABORT:
#     acked); X.509 and PSK clients are served, data written by one is
#     read by the other; a wrong key or an unknown user fails; a user
#     added to the PSK file is served without a restart; a client
#     that stalls in the middle of the TLS handshake is cut at the NBD
#     handshake's deadline while others are served.
#     vsan-fuse mounts with --tls-certificates and with --tls-psk-file,
#     and without them is refused before mounting.
#     The local socket ([admin] nbd_socket) is exempt: nbdinfo reads over
#     it as root, `vsan backup`, `restore` and `volume clone` work through
#     it, STARTTLS there is unsupported and the connection goes on plain;
#     nobody is kept out by the socket's mode (EACCES) and, with the mode
#     loosened, by the peer's uid (closed, logged with the uid).
#  3. tls = on: data written over TLS is what a plain client reads, and
#     the other way round.
#  4. verify_peer = yes: no client certificate, or one from another CA,
#     fails; one from the CA is served and logged with its subject. A CN
#     with commas and escapes (as certtool writes it, as GnuTLS prints
#     it) matches its bare name and its dn: grant; a subject longer than
#     an identity, or one GnuTLS can't print (empty), fails the handshake.
#  5. SIGHUP with a new CA and server certificate: a connection opened
#     before keeps working, new clients need the new CA; a reload that
#     fails keeps the credentials in force.
#  6. A CRL (ca-crl.pem): a client certificate it revokes is refused when
#     vsand starts with it, and one revoked by a new CRL after SIGHUP.
# timeout: 240
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init
# shellcheck source=deploy/gen-config
. "$VT_REPO/deploy/gen-config"

MiB=1048576

# ---- credentials -----------------------------------------------------------

# make_pki NAME: $T/NAME-ca (a CA), $T/NAME-srv (the server's directory),
# $T/NAME-cli (a client with the CA only) and $T/NAME-crt (a client with
# a certificate of that CA, subject CN=NAME-client).
make_pki() {
    local n=$1
    mkdir -p "$T/$n-ca" "$T/$n-srv" "$T/$n-cli" "$T/$n-crt"
    gc_tls_ca "$T/$n-ca" "t-tls $n CA" || die "$GC_ERR"
    gc_tls_cert "$T/$n-ca" "$T/$n-srv/server-key.pem" "$T/$n-srv/server-cert.pem" server \
        "t-tls server" 127.0.0.1 localhost || die "$GC_ERR"
    gc_tls_cert "$T/$n-ca" "$T/$n-crt/client-key.pem" "$T/$n-crt/client-cert.pem" client \
        "$n-client" || die "$GC_ERR"
    local d
    for d in srv cli crt; do
        cp "$T/$n-ca/ca-cert.pem" "$T/$n-$d/ca-cert.pem"
    done
}

make_pki a
make_pki b
mkdir -p "$T/psk" "$T/wrong" "$T/pskb"
gc_tls_psk "$T/psk/keys.psk" alice || die "$GC_ERR"
gc_tls_psk "$T/wrong/keys.psk" alice || die "$GC_ERR" # same user, another key
gc_tls_psk "$T/pskb/keys.psk" bob || die "$GC_ERR"    # a user the server does not know

# x509_uri VOLUME DIR / psk_uri VOLUME DIR USER: libnbd URIs.
x509_uri() {
    echo "nbds://127.0.0.1:$PORT/$1?tls-certificates=$2"
}
psk_uri() {
    echo "nbds://$3@127.0.0.1:$PORT/$1?tls-psk-file=$2/keys.psk"
}

# conf [SECTION.KEY=VALUE...]: vt_config, which knows no [tls] section,
# with the tls.KEY=VALUE arguments in one.
conf() {
    local kv
    local -a rest=() tls=()
    for kv in "$@"; do
        if [ "${kv#tls.}" != "$kv" ]; then
            tls+=("${kv#tls.}")
        else
            rest+=("$kv")
        fi
    done
    vt_config "${rest[@]}"
    [ ${#tls[@]} -eq 0 ] || {
        echo "[tls]"
        for kv in "${tls[@]}"; do
            echo "${kv%%=*} = ${kv#*=}"
        done
    } >>"$CONF"
}

# tls_config [KEY=VALUE...]: conf, with URI (what vsand_start checks
# readiness with) over TLS with CA a, and PLAIN the plain URI.
tls_config() {
    conf "$@"
    PLAIN=$URI
    URI="nbds://127.0.0.1:$PORT/?tls-certificates=$T/a-crt"
}

# refused WHAT PATTERN KEY=VALUE...: vsand does not start on that config
# and says PATTERN.
refused() {
    local what=$1 pattern=$2
    shift 2
    conf "$@"
    expect_exit 1 timeout 20 "$VSAND" -f -c "$CONF"
    grep -qF -- "$pattern" <<<"$OUT" || die "$what: \"$pattern\" not in: $OUT"
    grep -qF -- "$CONF" <<<"$OUT" || die "$what: the config file is not named in: $OUT"
    log "  $what: $OUT"
}

# ---- 1. bad settings ---------------------------------------------------------

log "1. bad TLS settings stop vsand, naming the key and the file"
refused "tls without credentials" "[nbd] tls = require needs [tls] certificates" nbd.tls=require
refused "bad mode" '[nbd] tls = "maybe": expected off, on or require' nbd.tls=maybe
refused "missing directory" "[tls] certificates = $T/nope: $T/nope/ca-cert.pem: No such file" \
    nbd.tls=on "tls.certificates=$T/nope"
mkdir -p "$T/badkey"
cp "$T/a-srv/"*.pem "$T/badkey/"
echo "not a key" >"$T/badkey/server-key.pem"
refused "bad key" "[tls] certificates = $T/badkey: $T/badkey/server-cert.pem and $T/badkey/server-key.pem" \
    nbd.tls=on "tls.certificates=$T/badkey"
rm "$T/badkey/server-key.pem"
refused "no key" "$T/badkey/server-key.pem: No such file" nbd.tls=on "tls.certificates=$T/badkey"
printf 'alice:00ff\nbob:xyz\n' >"$T/bad.psk"
refused "bad PSK file" "[tls] psk_file = $T/bad.psk: $T/bad.psk:2: expected USER:HEXKEY" \
    nbd.tls=require "tls.psk_file=$T/bad.psk"
refused "missing PSK file" "[tls] psk_file = $T/none.psk: $T/none.psk: No such file" \
    nbd.tls=require "tls.psk_file=$T/none.psk"
refused "verify_peer without a CA" "[tls] verify_peer = yes needs [tls] certificates" \
    nbd.tls=require "tls.psk_file=$T/psk/keys.psk" tls.verify_peer=yes

# ---- 2. require --------------------------------------------------------------

log "2. tls = require"
tls_config nbd.tls=require "tls.certificates=$T/a-srv" "tls.psk_file=$T/psk/keys.psk" \
    nbd.handshake_timeout=3000
vsand_start
expect_exit 0 vsan volume create v 64M
# A TLS client sees only its grants: alice by PSK, and the clients with
# the CA only (no certificate: anonymous).
expect_exit 0 vsan access grant v alice
expect_exit 0 vsan access grant v anonymous

log "plain clients get TLS_REQD, with a message saying TLS is required"
OUT=$(LIBNBD_DEBUG=1 nbdinfo "$PLAIN/v" 2>&1) && die "a plain nbdinfo was served under require"
expect_out "server error message: TLS is required"
OUT=$(qemu-img info "$PLAIN/v" 2>&1) && die "a plain qemu-img was served under require"
log "  qemu-img: $(tail -n 1 <<<"$OUT")"

nbdpy "$PORT" "$T/a-cli" <<'PY' || die "raw clients under require"
import socket
import ssl
import struct
import sys
import time

from nbdtest import *

port, cadir = int(sys.argv[1]), sys.argv[2]
OPT_INFO, OPT_STARTTLS, OPT_LIST_META = 6, 5, 9
REP_ERR_TLS_REQD = (1 << 31) + 5
REP_ERR_INVALID = (1 << 31) + 3
LIMIT = 3.0


def client():
    c = RawClient(port)
    c.handshake()
    return c


def closed_within(sock, seconds):
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            sock.settimeout(max(end - time.monotonic(), 0.01))
            if not sock.recv(4096):
                return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True
    return False


c = client()
for opt, data in ((OPT_LIST, b""), (OPT_INFO, struct.pack(">I", 1) + b"v" + struct.pack(">H", 0)),
                  (OPT_GO, struct.pack(">I", 1) + b"v" + struct.pack(">H", 0)),
                  (OPT_LIST_META, b""), (99, b"")):
    c.send_option(opt, data)
    o, rtype, msg = c.option_reply()
    check(o == opt and rtype == REP_ERR_TLS_REQD,
          "option %d before TLS: reply %#x, expected ERR_TLS_REQD" % (opt, rtype))
    check(b"TLS is required" in msg, "option %d: message %r" % (opt, msg))
c.send_option(OPT_STARTTLS, b"x")
o, rtype, _ = c.option_reply()
check(rtype == REP_ERR_INVALID, "STARTTLS with data: reply %#x" % rtype)
c.send_option(OPT_ABORT)
o, rtype, _ = c.option_reply()
check(o == OPT_ABORT and rtype == REP_ACK, "ABORT before TLS: reply %#x" % rtype)
c.close()
print("ok: every option before TLS gets ERR_TLS_REQD saying TLS is required; ABORT is acked")

c = client()
c.send_option(OPT_EXPORT_NAME, b"v")
check(closed_within(c.sock, 2), "EXPORT_NAME before TLS did not close the connection")
c.close()
print("ok: EXPORT_NAME before TLS closes")

# STARTTLS then a TLS client over the same socket: then GO is answered.
c = client()
c.send_option(OPT_STARTTLS)
o, rtype, _ = c.option_reply()
check(rtype == REP_ACK, "STARTTLS: reply %#x" % rtype)
ctx = ssl.create_default_context(cafile=cadir + "/ca-cert.pem")
c.sock = ctx.wrap_socket(c.sock, server_hostname="127.0.0.1")
size, flags = c.go_ok("v")
check(size == 64 << 20, "size over TLS: %d" % size)
c.sock.close()
print("ok: STARTTLS, then GO over TLS (python ssl)")

# A client that stalls in the middle of its TLS handshake: the first bytes
# of a ClientHello record, then nothing.
c = client()
start = time.monotonic()
c.send_option(OPT_STARTTLS)
o, rtype, _ = c.option_reply()
check(rtype == REP_ACK, "STARTTLS: reply %#x" % rtype)
c.sock.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
check(closed_within(c.sock, LIMIT + 2), "a client stalled in the TLS handshake was kept")
took = time.monotonic() - start
check(took > LIMIT - 0.5, "a stalled TLS handshake was cut after %.1f s, before the deadline" % took)
c.close()
print("ok: a client stalled in the TLS handshake was cut after %.1f s" % took)
PY

log "a stalled TLS handshake costs nobody else"
bg_start stall nbdpy "$PORT" <<'PY'
import sys, time
from nbdtest import *
c = RawClient(int(sys.argv[1]))
c.handshake()
c.send_option(5)
c.option_reply()
c.sock.sendall(bytes([0x16, 0x03, 0x01]))
time.sleep(30)
PY
STALL=$BG_PID
expect_exit 0 nbdinfo "$(x509_uri v "$T/a-cli")"
expect_out "with TLS"
bg_kill "$STALL"

log "X.509 and PSK clients are served"
expect_exit 0 nbdinfo "$(x509_uri v "$T/a-cli")"
expect_out "protocol: newstyle-fixed with TLS"
expect_exit 0 nbdinfo "$(psk_uri v "$T/psk" alice)"
expect_out "protocol: newstyle-fixed with TLS"
wait_until 10 grep -q "PSK user alice" "$LOG" || die "the PSK identity was not logged"

log "a wrong key, an unknown user and another CA fail"
expect_exit 1 nbdinfo "$(psk_uri v "$T/wrong" alice)"
expect_exit 1 nbdinfo "$(psk_uri v "$T/pskb" bob)"
expect_exit 1 nbdinfo "$(x509_uri v "$T/b-cli")"

log "a PSK user added to the file is served without a restart"
# The server reads psk_file at each handshake (README): bob's key appended
# to it, and a grant, let bob in at once; taken out again, he is refused.
cp "$T/psk/keys.psk" "$T/psk/alice-only.psk"
cat "$T/pskb/keys.psk" >>"$T/psk/keys.psk"
expect_exit 0 vsan access grant v bob
expect_exit 0 nbdinfo "$(psk_uri v "$T/pskb" bob)"
expect_out "protocol: newstyle-fixed with TLS"
cp "$T/psk/alice-only.psk" "$T/psk/keys.psk"
expect_exit 1 nbdinfo "$(psk_uri v "$T/pskb" bob)"
expect_exit 0 vsan access revoke v bob

log "nbdcopy: written with PSK, read with X.509"
random_file "$T/data" $((8 * MiB))
nbdcopy "$T/data" "$(psk_uri v "$T/psk" alice)" || die "nbdcopy to PSK failed"
nbdcopy "$(x509_uri v "$T/a-cli")" "$T/back" || die "nbdcopy from X.509 failed"
cmp -n $((8 * MiB)) "$T/data" "$T/back" || die "data read over X.509 differs"

log "vsan-fuse over TLS"
FUSE="$BUILD/vsan-fuse"
# fuse_check ARGS...: mounts v with ARGS, checks what nbdcopy wrote, unmounts.
fuse_check() {
    mkdir -p "$T/fuse"
    bg_start vsan-fuse "$FUSE" "$T/fuse" -f --nodes "127.0.0.1:$PORT" --volume v "$@"
    local pid=$BG_PID
    on_exit "fusermount3 -u -z '$T/fuse'"
    wait_until 20 test -f "$T/fuse/v" || die "vsan-fuse $* did not mount: $(cat "$T/vsan-fuse.out")"
    cmp -n $((8 * MiB)) "$T/data" "$T/fuse/v" || die "vsan-fuse $*: data differs"
    wait_until 10 fuse_unmount "$T/fuse" || die "fusermount3 -u $T/fuse failed"
    wait_until 10 proc_gone "$pid" || die "vsan-fuse did not exit after unmount"
}
fuse_check --tls-certificates "$T/a-cli"
fuse_check --tls-psk-file "$T/psk/keys.psk" --tls-username alice
expect_exit 1 "$FUSE" "$T/fuse" -f --nodes "127.0.0.1:$PORT" --volume v
expect_out "server requires TLS"
expect_exit 2 "$FUSE" "$T/fuse" -f --nodes "127.0.0.1:$PORT" --tls-username alice
expect_out "tls-username names a key of --tls-psk-file"

log "qemu-io and qemu-img with tls-creds-x509 and tls-creds-psk"
X509_OBJ="tls-creds-x509,id=tls0,dir=$T/a-cli,endpoint=client"
PSK_OBJ="tls-creds-psk,id=tls0,dir=$T/psk,username=alice,endpoint=client"
qopts() {
    echo "driver=nbd,host=127.0.0.1,port=$PORT,export=v,tls-creds=tls0"
}
expect_exit 0 qemu-io --object "$PSK_OBJ" --image-opts "$(qopts)" -c "write -P 0x5a 16M 1M"
expect_exit 0 qemu-io --object "$X509_OBJ" --image-opts "$(qopts)" -c "read -P 0x5a 16M 1M"
expect_out "read 1048576/1048576"
expect_exit 0 qemu-img info --object "$X509_OBJ" --image-opts "$(qopts)"
expect_out "virtual size: 64 MiB"
expect_exit 1 qemu-io --object "tls-creds-x509,id=tls0,dir=$T/b-cli,endpoint=client" \
    --image-opts "$(qopts)" -c "read 0 4k"

log "the local socket ([admin] nbd_socket) under require: root, plain, no TLS"
expect_exit 0 vsan status --json
expect_out "\"nbd_socket\": \"$NBD_SOCKET\""
[ "$(stat -c %a "$NBD_SOCKET")" = 600 ] || die "$NBD_SOCKET: mode $(stat -c %a "$NBD_SOCKET")"
LOCAL="nbd+unix:///v?socket=$NBD_SOCKET"
expect_exit 0 nbdinfo "$LOCAL"
expect_out "export-size: 67108864"
grep -q "nbd unix: export \"v\": transmission, .*plain as root" "$LOG" ||
    die "no transmission as root on the local socket in $LOG"
cmp -n $((8 * MiB)) "$T/data" <(nbdcopy "$LOCAL" -) || die "the local socket reads other data"

log "backup, restore and clone use it by default, under tls = require"
expect_exit 0 vsan snapshot create v s1
expect_exit 0 vsan backup v@s1 -o "$T/v.rbd"
expect_out "full backup of v@s1"
expect_exit 0 vsan restore "$T/v.rbd" r
expect_exit 0 vsan volume clone v@s1 c
for vol in r c; do
    cmp <(nbdcopy "nbd+unix:///v@s1?socket=$NBD_SOCKET" -) \
        <(nbdcopy "nbd+unix:///$vol?socket=$NBD_SOCKET" -) || die "$vol differs from v@s1"
done
expect_exit 1 vsan backup v@s1 -o "$T/tcp.rbd" --nbd "127.0.0.1:$PORT"
log "  --nbd to the TCP listener, plain under require: $(tail -n 1 <<<"$OUT")"

log "STARTTLS on the local socket is unsupported, and the connection goes on plain"
nbdpy "$NBD_SOCKET" "$T/data" <<'PY' || die "STARTTLS on the local socket"
import sys

from nbdtest import *

c = RawClient(sys.argv[1])
c.handshake()
c.send_option(5)  # STARTTLS
o, rtype, msg = c.option_reply()
check(o == 5 and rtype == REP_ERR_UNSUP, "STARTTLS: reply %#x %r" % (rtype, msg))
c.go_ok("v")
with open(sys.argv[2], "rb") as f:
    check(c.read(0, 4096) == f.read(4096), "READ after the refused STARTTLS: other data")
c.close()
print("ok: STARTTLS answered ERR_UNSUP, then GO and READ in plain")
PY

log "others may not connect: the socket's mode, then the peer's uid"
chmod 711 "$T" # the test's own directory, so only the socket's mode is left
nobody_connect() {
    setpriv --reuid=nobody --regid=nogroup --clear-groups "$PY" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except PermissionError as e:
    print("connect: %s" % e.strerror)
    sys.exit(3)
print("greeting: %d bytes" % len(s.recv(18)))' "$NBD_SOCKET"
}
expect_exit 3 nobody_connect
expect_out "connect: Permission denied"
chmod 666 "$NBD_SOCKET"
expect_exit 0 nobody_connect
expect_out "greeting: 0 bytes"
wait_until 10 grep -q "nbd $NBD_SOCKET: refused a client of uid $(id -u nobody)" "$LOG" ||
    die "no refusal naming the uid in $LOG"
chmod 600 "$NBD_SOCKET"
expect_exit 0 nbdinfo "$LOCAL"

vsand_stop TERM

# ---- 3. on -------------------------------------------------------------------

log "3. tls = on: what TLS writes, plain reads, and the other way round"
tls_config nbd.tls=on "tls.psk_file=$T/psk/keys.psk" "tls.certificates=$T/a-srv"
vsand_start
expect_exit 0 vsan volume create w 32M
expect_exit 0 vsan access grant w alice
random_file "$T/d1" $((4 * MiB))
random_file "$T/d2" $((4 * MiB))
nbdcopy "$T/d1" "$(x509_uri w "$T/a-cli")" || die "nbdcopy over TLS failed"
nbdcopy "$PLAIN/w" "$T/r1" || die "plain nbdcopy failed"
cmp -n $((4 * MiB)) "$T/d1" "$T/r1" || die "what TLS wrote differs read plain"
expect_exit 0 qemu-io --image-opts "driver=nbd,host=127.0.0.1,port=$PORT,export=w" \
    -c "write -P 0x77 8M 1M"
expect_exit 0 qemu-io --object "$PSK_OBJ" \
    --image-opts "driver=nbd,host=127.0.0.1,port=$PORT,export=w,tls-creds=tls0" \
    -c "read -P 0x77 8M 1M"
nbdcopy "$T/d2" "$PLAIN/w" || die "plain nbdcopy to w failed"
nbdcopy "$(psk_uri w "$T/psk" alice)" "$T/r2" || die "nbdcopy over PSK failed"
cmp -n $((4 * MiB)) "$T/d2" "$T/r2" || die "what plain wrote differs read over TLS"
vsand_stop TERM

# ---- 4 and 5. verify_peer, SIGHUP ---------------------------------------------

log "4. verify_peer = yes"
mkdir -p "$T/srv"
cp "$T/a-srv/"*.pem "$T/srv/"
tls_config nbd.tls=require "tls.certificates=$T/srv" tls.verify_peer=yes
vsand_start
expect_exit 0 vsan volume create p 16M
expect_exit 0 vsan access grant p a-client
expect_exit 0 vsan access grant p b-client
expect_exit 1 nbdinfo "$(x509_uri p "$T/a-cli")"
mkdir -p "$T/rogue"
cp "$T/a-cli/ca-cert.pem" "$T/b-crt/client-"*.pem "$T/rogue/"
expect_exit 1 nbdinfo "$(x509_uri p "$T/rogue")"
expect_exit 0 nbdinfo "$(x509_uri p "$T/a-crt")"
wait_until 10 grep -q "certificate CN=a-client" "$LOG" || die "the client's subject was not logged"

# client_cert NAME TEMPLATE_LINE...: $T/NAME, a client directory with a
# certificate of CA a made by certtool from those template lines.
client_cert() {
    local n=$1
    shift
    mkdir -p "$T/$n"
    cp "$T/a-ca/ca-cert.pem" "$T/$n/"
    gc_tls_key "$T/$n/client-key.pem" || die "$GC_ERR"
    gc_certtool --generate-certificate --load-privkey "$T/$n/client-key.pem" \
        --load-ca-certificate "$T/a-ca/ca-cert.pem" --load-ca-privkey "$T/a-ca/ca-key.pem" \
        --outfile "$T/$n/client-cert.pem" -- \
        "$(printf '%s\n' "$@" "expiration_days = 10" signing_key tls_www_client)" || die "$GC_ERR"
}
log "   subjects: commas and escapes in a CN; too long or unreadable: the handshake fails"
client_cert comma 'cn = "Doe, John+x"' 'unit = "a,b"'
expect_exit 1 nbdinfo "$(x509_uri p "$T/comma")"
expect_exit 0 vsan access grant p "Doe, John+x"
expect_exit 0 nbdinfo "$(x509_uri p "$T/comma")"
expect_exit 0 vsan access revoke p "Doe, John+x"
expect_exit 0 vsan access grant p 'dn:CN=Doe\, John\+x,OU=a\,b'
expect_exit 0 nbdinfo "$(x509_uri p "$T/comma")"
# Cut at 511 bytes, this subject would end in "CN=admin".
client_cert long "dn = \"CN=mallory,OU=$(printf 'p%.0s' $(seq 488)),CN=administrator\""
expect_exit 0 vsan access grant p admin
expect_exit 1 nbdinfo "$(x509_uri p "$T/long")"
wait_until 10 grep -q "client certificate: its subject is longer than 512 bytes" "$LOG" ||
    die "the subject too long was not logged"
# No subject at all: not a client without identity ("anonymous").
client_cert empty
expect_exit 0 vsan access grant p anonymous
expect_exit 1 nbdinfo "$(x509_uri p "$T/empty")"
wait_until 10 grep -q "client certificate: its subject can't be read" "$LOG" ||
    die "the unreadable subject was not logged"

log "5. SIGHUP: a new CA and server certificate for new connections only"
cat >"$T/held.py" <<'PY'
import os, sys, time
import nbd
port, cadir, ready, go = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_certificates(cadir)
h.set_export_name("p")
h.connect_tcp("127.0.0.1", str(port))
h.pwrite(b"A" * 4096, 0)
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.05)
h.pwrite(b"B" * 4096, 4096)
assert h.pread(8192, 0) == b"A" * 4096 + b"B" * 4096, "data read back differs"
h.shutdown()
print("held connection ok")
PY
bg_start held "$PY" "$T/held.py" "$PORT" "$T/a-crt" "$T/ready" "$T/go"
HELD=$BG_PID
wait_until 20 test -e "$T/ready" || die "the held connection did not start: $(cat "$T/held.out")"
cp "$T/b-srv/"*.pem "$T/srv/"
kill -HUP "$VSAND_PID"
wait_until 10 grep -q "TLS credentials reloaded" "$LOG" || die "no reload logged"
expect_exit 0 nbdinfo "$(x509_uri p "$T/b-crt")"
expect_exit 1 nbdinfo "$(x509_uri p "$T/a-crt")"
touch "$T/go"
wait_until 20 proc_gone "$HELD" || die "the held connection did not finish"
wait "$HELD" || die "the connection opened before the reload failed: $(cat "$T/held.out")"
grep -q "held connection ok" "$T/held.out" || die "held: $(cat "$T/held.out")"

log "a reload that fails keeps the credentials in force"
echo "not a key" >"$T/srv/server-key.pem"
kill -HUP "$VSAND_PID"
wait_until 10 grep -q "TLS credentials not reloaded, the old ones stay: .*server-key.pem" "$LOG" ||
    die "no failed reload logged"
expect_exit 0 nbdinfo "$(x509_uri p "$T/b-crt")"
vsand_stop TERM

# ---- 6. a CRL -------------------------------------------------------------------

log "6. client certificates the CA revoked (ca-crl.pem) are refused, at start and after SIGHUP"
mkdir -p "$T/b-crt2" "$T/srv6"
gc_tls_cert "$T/b-ca" "$T/b-crt2/client-key.pem" "$T/b-crt2/client-cert.pem" client b-client2 ||
    die "$GC_ERR"
cp "$T/b-ca/ca-cert.pem" "$T/b-crt2/"
cp "$T/b-srv/"*.pem "$T/srv6/"
# crl REVOKED-CERT...: a CRL of CA b revoking them, as the server's ca-crl.pem.
crl() {
    local n=$((${CRL_NUMBER:-0} + 1)) c
    CRL_NUMBER=$n
    printf 'crl_next_update = 30\ncrl_number = %s\n' "$n" >"$T/crl.tmpl"
    cat "$@" >"$T/revoked.pem"
    certtool --generate-crl --load-ca-privkey "$T/b-ca/ca-key.pem" \
        --load-ca-certificate "$T/b-ca/ca-cert.pem" --load-certificate "$T/revoked.pem" \
        --template "$T/crl.tmpl" --outfile "$T/srv6/ca-crl.pem" >"$T/crl.out" 2>&1 ||
        die "certtool --generate-crl: $(cat "$T/crl.out")"
}
crl "$T/b-crt/client-cert.pem"
tls_config nbd.tls=require "tls.certificates=$T/srv6" tls.verify_peer=yes
URI="nbds://127.0.0.1:$PORT/?tls-certificates=$T/b-crt2" # what vsand_start lists with
vsand_start
expect_exit 0 vsan volume create q 16M
expect_exit 0 vsan access grant q b-client
expect_exit 0 vsan access grant q b-client2
expect_exit 1 nbdinfo "$(x509_uri q "$T/b-crt")"
expect_exit 0 nbdinfo "$(x509_uri q "$T/b-crt2")"
crl "$T/b-crt/client-cert.pem" "$T/b-crt2/client-cert.pem"
kill -HUP "$VSAND_PID"
wait_until 10 grep -q "TLS credentials reloaded" "$LOG" || die "no reload logged"
expect_exit 1 nbdinfo "$(x509_uri q "$T/b-crt2")"
expect_exit 1 nbdinfo "$(x509_uri q "$T/b-crt")"
vsand_stop TERM
log "ok"
