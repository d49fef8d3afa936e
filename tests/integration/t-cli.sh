#!/usr/bin/env bash
# t-cli: every vsan CLI command and exit code against a running vsand, with
# the NBD side cross-checked (a volume the CLI created is served at the size
# it reports), plus the daemon's own refusals: bad config files, missing and
# foreign data dirs, daemonized startup and its pid file.
# timeout: 120
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

GiB=1073741824
MiB=1048576

check_not_running() {
    log "daemon not running -> 3"
    expect_exit 3 vsan status
    expect_exit 3 vsan volume list
    expect_exit 3 env VSAN_SOCKET="$ADMIN" "$VSAN" volume create x 1G
}

check_usage() {
    log "usage errors -> 2"
    expect_exit 2 "$VSAN" -s "$ADMIN"
    expect_exit 2 vsan frobnicate
    expect_exit 2 vsan volume
    expect_exit 2 vsan volume frobnicate x
    expect_exit 2 vsan volume create onlyname
    expect_exit 2 vsan volume create a 1G extra
    expect_exit 2 vsan volume show
    expect_exit 2 vsan volume resize a
    expect_exit 2 vsan volume delete
    expect_exit 2 vsan --no-such-option status
}

check_status() {
    log "status, also with the socket from VSAN_SOCKET"
    expect_exit 0 vsan status
    expect_exit 0 env VSAN_SOCKET="$ADMIN" "$VSAN" status
    expect_exit 0 vsan --json status
    json_assert 'd["mode"] == "standalone" and d["data_dir"] == a[0]' "$DATA"
    json_assert 'd["volumes"] == 0 and d["connections"] == 0'
    json_assert 'a[0] in d["nbd_listen"]' "127.0.0.1:$PORT"
}

check_create() {
    log "create, list, show"
    expect_exit 0 vsan volume create vol1 1G
    expect_exit 0 vsan volume list
    expect_out '^ *vol1 '
    expect_exit 0 vsan volume show vol1
    expect_out 'vol1'
    expect_exit 0 vsan --json volume list
    json_assert 'vol(a[0])["size"] == int(a[1])' vol1 $GiB
    expect_exit 0 vsan --json volume show vol1
    json_assert 'vol(a[0])["size"] == int(a[1])' vol1 $GiB
    [ "$(nbd_size vol1)" = $GiB ] || die "vol1 served with size $(nbd_size vol1), expected $GiB"
    expect_exit 0 vsan volume create vol-2.b_3 512M
    [ "$(nbd_size vol-2.b_3)" = $((512 * MiB)) ] || die "vol-2.b_3 has the wrong NBD size"

    log "duplicate -> 5, size unchanged"
    expect_exit 5 vsan volume create vol1 512M
    [ "$(nbd_size vol1)" = $GiB ] || die "a refused duplicate create changed vol1"
}

check_bad_sizes() {
    log "bad sizes -> 7, nothing created"
    local size
    for size in 0 abc 1000 -1G 1.5G 10X 1G2 2P 99999999999999999999 ''; do
        expect_exit 7 vsan volume create badsize "$size"
        expect_exit 4 vsan volume show badsize
    done
    expect_exit 7 vsan volume resize vol1 abc
    expect_exit 7 vsan volume resize vol1 0
    expect_exit 7 vsan volume resize vol1 1000

    log "bad names refused, nothing created"
    local name
    for name in .hidden -dash 'a/b' 'sp ace' "$(printf 'x%.0s' {1..65})"; do
        OUT=$(vsan volume create "$name" 1M 2>&1) && die "volume name '$name' accepted"
        [ -n "$OUT" ] || die "volume name '$name' refused without a message"
    done
    expect_exit 0 vsan --json volume list
    json_assert 'all(vol(n) is None for n in a)' badsize .hidden -dash 'a/b' 'sp ace'
}

check_no_such_volume() {
    log "no such volume -> 4"
    expect_exit 4 vsan volume show nope
    expect_exit 4 vsan volume resize nope 1G
    expect_exit 4 vsan volume resize nope 1G --force
    expect_exit 4 vsan volume delete nope
}

check_resize() {
    log "resize: grow, shrink refused, shrink --force"
    expect_exit 0 vsan volume resize vol1 2G
    [ "$(nbd_size vol1)" = $((2 * GiB)) ] || die "grow to 2G not served"
    expect_exit 0 vsan --json volume show vol1
    json_assert 'vol("vol1")["size"] == int(a[0])' $((2 * GiB))
    expect_exit 7 vsan volume resize vol1 1G
    [ "$(nbd_size vol1)" = $((2 * GiB)) ] || die "refused shrink changed the size"
    expect_exit 0 vsan volume resize vol1 1G --force
    [ "$(nbd_size vol1)" = $GiB ] || die "shrink --force to 1G not served"
    expect_exit 0 vsan volume resize vol1 1G
}

# A client holding an NBD connection open to a volume until killed.
hold_connection() {
    rm -f "$T/held"
    bg_start holder "$PY" -c '
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
open(sys.argv[2], "w").close()
time.sleep(3600)' "$URI/$1" "$T/held"
    HOLDER=$BG_PID
    wait_until 10 test -e "$T/held" || die "holder could not connect: $(cat "$T/holder.out")"
}

delete_when_free() {
    local got=0
    vsan volume delete "$1" >/dev/null 2>&1 || got=$?
    [ "$got" -eq 6 ] && return 1
    [ "$got" -eq 0 ] || die "delete $1 exited $got while waiting for it to be free"
}

check_in_use() {
    log "in use -> 6 while an NBD client is connected"
    expect_exit 0 vsan volume create busy 64M
    hold_connection busy
    expect_exit 6 vsan volume delete busy
    expect_exit 6 vsan volume resize busy 32M --force
    expect_exit 0 vsan --json volume show busy
    json_assert 'vol("busy")["connections"] == 1'
    expect_exit 0 vsan --json status
    json_assert 'd["connections"] == 1'
    expect_exit 0 vsan volume resize busy 128M
    [ "$(nbd_size busy)" = $((128 * MiB)) ] || die "grow while connected not served"
    bg_kill "$HOLDER"
    wait_until 10 delete_when_free busy || die "busy still in use after its client died"
    expect_exit 4 vsan volume show busy
}

check_delete() {
    log "delete"
    expect_exit 0 vsan volume delete vol1
    expect_exit 0 vsan volume delete vol-2.b_3
    expect_exit 4 vsan volume show vol1
    expect_exit 0 vsan --json volume list
    json_assert 'vol("vol1") is None and vol("vol-2.b_3") is None'
    nbdinfo "$URI/vol1" >/dev/null 2>&1 && die "deleted vol1 still served over NBD"
    local left
    left=$(find "$DATA/volumes" -type f | wc -l)
    [ "$left" -eq 0 ] || die "$left files left in $DATA/volumes after deleting every volume"
}

# edit_config FILE SECTION LINE [KEY]: a copy of the good config in FILE
# with LINE at the end of SECTION, or replacing the line that sets KEY
# there; prints the number of that line.
edit_config() {
    awk -v out="$1" -v s="[$2]" -v t="$3" -v k="${4:-}" '
        /^\[/ && inside && !done { print t > out; n = NR + added; added++; done = 1 }
        /^\[/ { inside = ($0 == s) }
        inside && k != "" && index($0, k " =") == 1 { print t > out; n = NR + added; done = 1; next }
        { print > out }
        END { if (!done) { print t > out; n = NR + added + 1 }; print n }' "$CONF"
}

# bad_config NAME SECTION LINE [KEY]: vsand refuses the config edited as
# edit_config does, naming the file, the line and the section.
bad_config() {
    local file="$T/$1.conf" line
    line=$(edit_config "$file" "$2" "$3" "${4:-}")
    OUT=$(timeout 10 "$VSAND" -f -c "$file" 2>&1) && die "config line '$3' in [$2] accepted"
    expect_out "$1\.conf:$line([^0-9]|$)"
}

# bad_value SECTION KEY VALUE: a bad value for KEY is refused, naming the
# file, the line, the section and the key.
bad_value() {
    bad_config "bad-$2" "$1" "$2 = $3" "$2"
    expect_out "\[$1\] $2"
}

check_bad_configs() {
    log "bad config files refused with file:line"
    bad_config unknown-key nbd 'bogus = 1'
    expect_out '\[nbd\].*bogus'
    bad_config unknown-section log '[frobnicate]'
    expect_out frobnicate
    bad_config syntax node 'this is not ini'
    bad_config duplicate node "data_dir = $DATA"
    expect_out '\[node\] data_dir'
    bad_value nbd threads abc
    bad_value nbd threads 0
    bad_value nbd min_block_size 3
    bad_value nbd preferred_block_size 100
    bad_value nbd max_payload 10X
    bad_value nbd listen nowhere:99999
    bad_value nbd listen relative/path
    bad_value log level loud
    bad_value log syslog maybe

    log "missing config, missing and foreign data dirs refused"
    OUT=$(timeout 10 "$VSAND" -f -c "$T/absent.conf" 2>&1) && die "missing config accepted"
    expect_out 'absent\.conf'
    edit_config "$T/nodir.conf" node "data_dir = $T/no-such-dir" data_dir >/dev/null
    OUT=$(timeout 10 "$VSAND" -f -c "$T/nodir.conf" 2>&1) && die "missing data_dir accepted"
    expect_out 'no-such-dir'
    [ ! -e "$T/no-such-dir" ] || die "vsand created the missing data_dir"
    mkdir "$T/foreign"
    echo precious >"$T/foreign/somebody-elses-file"
    edit_config "$T/foreign.conf" node "data_dir = $T/foreign" data_dir >/dev/null
    OUT=$(timeout 10 "$VSAND" -f -c "$T/foreign.conf" 2>&1) && die "foreign data_dir accepted"
    expect_out 'foreign'
    [ "$(ls -A "$T/foreign")" = somebody-elses-file ] || die "vsand wrote into a foreign data_dir"
    [ "$(cat "$T/foreign/somebody-elses-file")" = precious ] || die "foreign file changed"
}

pidfile_pid() {
    sed -n 's/^ *\([0-9][0-9]*\).*/\1/p' "$(dirname "$CONF")/vsand.pid"
}

check_daemonize() {
    log "daemonized: the parent returns once ready"
    local pidfile
    pidfile="$(dirname "$CONF")/vsand.pid"
    expect_exit 0 timeout 30 "$VSAND" -c "$CONF"
    on_exit "kill -KILL \$(cat '$pidfile')"
    [ -s "$pidfile" ] || die "no pid file $pidfile"
    local pid
    pid=$(pidfile_pid)
    proc_alive "$pid" || die "pid file names $pid, which is not running"
    # No polling here: readiness is what the parent's exit promised.
    expect_exit 0 vsan status
    nbdinfo --list "$URI" >/dev/null || die "daemon not serving NBD when its parent exited"

    log "a second vsand on the same config is refused"
    OUT=$(timeout 30 "$VSAND" -c "$CONF" 2>&1) && die "second daemon on the same pid file started"
    [ -n "$OUT" ] || die "second daemon refused without a message"
    proc_alive "$pid" || die "the second vsand killed the first"
    expect_exit 0 vsan status

    kill -TERM "$pid"
    wait_until 30 proc_gone "$pid" || die "daemon $pid ignored SIGTERM"
    [ ! -e "$pidfile" ] || die "pid file left after a clean exit"

    log "daemonized startup failure -> parent exits non-zero"
    OUT=$(timeout 30 "$VSAND" -c "$T/foreign.conf" 2>&1) && die "daemon started on a foreign dir"
    expect_out 'foreign'
}

# A vsand whose main loop does not run (stopped here; stuck on corosync's
# flow control elsewhere) fails the CLI after --timeout, naming the
# socket, instead of hanging it for good.
check_stuck() {
    log "a stopped vsand -> 1 after --timeout; bad --timeout -> 2"
    expect_exit 2 vsan -t 0 status
    expect_exit 2 vsan --timeout soon status
    on_exit "kill -CONT $VSAND_PID 2>/dev/null"
    kill -STOP "$VSAND_PID"
    expect_exit 1 vsan -t 0.5 status
    expect_out "vsand at \"$ADMIN\" did not accept the connection within 0.5 s"
    kill -CONT "$VSAND_PID"
    expect_exit 0 vsan -t 5 status
}

vt_config
check_not_running
vsand_start
check_stuck
check_usage
check_status
check_create
check_bad_sizes
check_no_such_volume
check_resize
check_in_use
check_delete
vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
check_not_running
check_bad_configs
check_daemonize
log "ok"
