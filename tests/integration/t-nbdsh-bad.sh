#!/usr/bin/env bash
# t-nbdsh-bad: hostile input over NBD (see bad_requests.py for the cases):
# each bad request gets its precise error and harms neither its own
# connection (where the protocol lets it live), nor other clients, nor the
# data. The server runs with min_block_size = 512 so alignment is enforced.
# Afterwards vsand must still be alive and shut down cleanly.
# timeout: 120
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

vt_config nbd.min_block_size=512
vsand_start
expect_exit 0 vsan volume create bad 64M
expect_exit 0 vsan volume create other 4M

PYTHONPATH="$VT_DIR" "$PY" "$VT_DIR/bad_requests.py" "$URI" "$PORT" ||
    die "bad_requests.py failed"
proc_alive "$VSAND_PID" || die "vsand died"
expect_exit 0 vsan volume list
expect_out 'bad'
vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
log "ok"
