#!/usr/bin/env bash
# t-nbdinfo: what nbdinfo (libnbd) sees of the exports: the list of volumes
# with their sizes and descriptions, the block sizes (defaults, then
# configured ones), the transmission flags, the base:allocation context and
# an allocation map that follows writes and trims.
# timeout: 90
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

MiB=1048576

# nbdinfo --list takes 0.2 s per export (libnbd 1.14 sends its
# LIST_META_CONTEXT with MSG_MORE), so one listing serves many checks.
list_exports() {
    LIST=$(nbdinfo --json --list "$URI") || die "nbdinfo --list failed"
}

# list_assert PYEXPR [ARG...]: PYEXPR over the last listing, with
# e(name) = that export's object.
list_assert() {
    OUT=$LIST
    local expr=$1
    shift
    json_assert "(lambda e: $expr)(lambda n: next((x for x in d['exports'] if x['export-name'] == n), None))" "$@"
}

check_list() {
    log "--list shows every volume with size and description"
    expect_exit 0 vsan volume create alpha 1G
    expect_exit 0 vsan volume create beta 512M
    expect_exit 0 vsan volume create gamma 4M
    list_exports
    list_assert 'sorted(x["export-name"] for x in d["exports"]) == ["alpha", "beta", "gamma"]'
    list_assert 'e("alpha")["export-size"] == 1 << 30 and e("beta")["export-size"] == 512 << 20'
    list_assert 'e("gamma")["export-size"] == 4 << 20'
    list_assert 'a[0] in e(a[0]).get("description", "")' alpha
    OUT=$(nbdinfo --list "$URI") || die "nbdinfo --list (text) failed"
    expect_out 'export="alpha"'
    expect_out 'export="gamma"'
}

# block_sizes MIN PREF MAX: every export announces these.
check_block_sizes() {
    log "block sizes $1/$2/$3, flags and contexts"
    list_exports
    list_assert 'all(x["block_size_minimum"] == int(a[0]) for x in d["exports"])' "$1"
    list_assert 'all(x["block_size_preferred"] == int(a[0]) for x in d["exports"])' "$2"
    list_assert 'all(x["block_size_maximum"] == int(a[0]) for x in d["exports"])' "$3"
    list_assert 'd["structured"] and d["protocol"] == "newstyle-fixed"'
    list_assert 'all("base:allocation" in x["contexts"] for x in d["exports"])'
    local f
    for f in can_multi_conn can_flush can_fua can_trim can_zero can_fast_zero can_cache can_df; do
        list_assert 'all(x[a[0]] is True for x in d["exports"])' "$f"
    done
    list_assert 'not any(x["is_read_only"] for x in d["exports"])'
}

# map_assert VOLUME PYEXPR: PYEXPR over m, the list of (offset, length,
# type) with adjacent extents of the same type merged (a server may split
# them anywhere).
map_assert() {
    OUT=$(nbdinfo --json --map "$URI/$1") || die "nbdinfo --map $1 failed"
    json_assert "(lambda m: $2)(merge([(x['offset'], x['length'], x['type']) for x in d]))"
}

check_map() {
    log "--map follows writes and trims"
    map_assert gamma 'm == [(0, 4 << 20, 3)]'
    nbdpy "$URI/gamma" <<'EOF'
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.pwrite(pattern(1, 1 << 20), 1 << 20)
h.flush()
EOF
    map_assert gamma 'm == [(0, 1 << 20, 3), (1 << 20, 1 << 20, 0), (2 << 20, 2 << 20, 3)]'
    nbdpy "$URI/gamma" <<'EOF'
import sys
from nbdtest import *
h = connect_nbd(sys.argv[1])
h.trim(1 << 20, 1 << 20)
check(h.pread(4096, 1 << 20) == bytes(4096), "trimmed range does not read as zeroes")
EOF
    map_assert gamma "m == [(0, 4 << 20, 3)]"
}

check_unknown_export() {
    log "unknown export refused"
    OUT=$(nbdinfo "$URI/nope" 2>&1) && die "nbdinfo of an unknown export succeeded: $OUT"
    return 0
}

vt_config
vsand_start
check_list
check_block_sizes 1 4096 $((32 * MiB))
check_map
check_unknown_export
vsand_stop TERM

log "configured block sizes are announced"
vt_config nbd.min_block_size=512 nbd.preferred_block_size=65536 nbd.max_payload=1M
vsand_start
expect_exit 0 vsan volume create alpha 64M
check_block_sizes 512 65536 $MiB
vsand_stop TERM
log "ok"
