#!/usr/bin/env bash
# demo.sh - `make run`: a standalone vsand with one volume to play with.
#
# Everything lives in ./demo/ (the current directory's): the pool
# (demo/data), the config (demo/vsand.conf, written once, yours to edit
# afterwards) and the pid file. vsand runs daemonized; its parent returns
# only once the daemon serves, so the volume can be created right away.
# Running it again finds the daemon running and only prints how to use it.
#
# Usage: deploy/demo.sh BUILD_DIR
set -euo pipefail

build=${1:-build}
demo="$PWD/demo"
conf="$demo/vsand.conf"
pidfile="$demo/vsand.pid"
admin=vsan-demo
listen=127.0.0.1:10809
uri="nbd://$listen/demo"

die() {
    echo "demo: $*" >&2
    exit 1
}

write_config() {
    [ -e "$conf" ] && return 0
    cat >"$conf" <<EOF
# vsand config for the demo (deploy/demo.sh); see deploy/vsan.conf.sample.
[node]
data_dir = $demo/data
pid_file = $pidfile
[nbd]
listen = $listen
[admin]
# a libqb IPC name (an abstract unix socket), not a file
socket = $admin
nbd_socket = $demo/nbd-local.sock
[log]
level = info
EOF
}

running() {
    [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null &&
        "$build/vsan" -s "$admin" status >/dev/null 2>&1
}

ensure_volume() {
    local status=0
    "$build/vsan" -s "$admin" volume show demo >/dev/null 2>&1 || status=$?
    case $status in
    0) ;;
    4) "$build/vsan" -s "$admin" volume create demo 1G >/dev/null ||
        die "could not create the volume demo" ;;
    *) die "vsan volume show demo failed (exit $status)" ;;
    esac
}

usage_info() {
    cat <<EOF

vsand is running (pid $(cat "$pidfile")); pool in $demo/data, config in $conf.
Volume "demo" (1 GiB) is exported over NBD at:

    $uri

Use it with any NBD client, for example:

    nbdinfo $uri
    qemu-img info $uri
    qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' $uri
    mkdir -p /tmp/demo-fuse && nbdfuse /tmp/demo-fuse $uri &   # file /tmp/demo-fuse/nbd

Manage volumes with the CLI (the admin socket is named "$admin"):

    $build/vsan -s $admin status
    $build/vsan -s $admin volume list
    export VSAN_SOCKET=$admin
    $build/vsan volume create db 10G
    $build/vsan volume resize db 20G
    $build/vsan --json volume show db

Stop it:

    kill \$(cat $pidfile)
EOF
}

if [ ! -x "$build/vsand" ] || [ ! -x "$build/vsan" ]; then
    die "no $build/vsand or $build/vsan: run make first"
fi
mkdir -p "$demo/data"
write_config
if running; then
    echo "demo: vsand already running"
else
    "$build/vsand" -c "$conf" || die "vsand did not start (config $conf)"
    echo "demo: vsand started"
fi
ensure_volume
usage_info
