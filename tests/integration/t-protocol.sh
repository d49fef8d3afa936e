#!/usr/bin/env bash
# t-protocol: the NBD features a plain copy does not show, seen through
# libnbd: option-mode negotiation (LIST, INFO, LIST_META_CONTEXT, GO),
# OPT_EXPORT_NAME from a raw socket, structured READ replies (OFFSET_HOLE
# chunks for sparse ranges of reads >= 64 KiB, one data chunk with DF),
# BLOCK_STATUS with REQ_ONE, WRITE_ZEROES with NO_HOLE and FAST_ZERO,
# TRIM, CACHE and FUA writes.
# timeout: 60
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"
vt_init

vt_config
vsand_start
expect_exit 0 vsan volume create proto 16M
expect_exit 0 vsan volume create second 1M

nbdpy "$URI" "$PORT" <<'PY' || die "protocol checks failed"
import errno
import struct
import sys
from nbdtest import *

base, port = sys.argv[1], int(sys.argv[2])
KiB, MiB = 1 << 10, 1 << 20

# Option mode: everything a client may ask before choosing an export.
h = nbd.NBD()
h.set_opt_mode(True)
h.set_full_info(True)
h.connect_uri(base + "/proto")
names = []
h.opt_list(lambda name, desc: names.append(name) or 0)
check(sorted(names) == ["proto", "second"], "OPT_LIST: %r" % names)
h.set_export_name("second")
h.opt_info()
check(h.get_size() == MiB, "OPT_INFO second: size %d" % h.get_size())
check("second" in h.get_export_description(), "OPT_INFO: description %r" % h.get_export_description())
check(h.get_canonical_export_name() == "second", "OPT_INFO: name %r" % h.get_canonical_export_name())
contexts = []
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.opt_list_meta_context(lambda name: contexts.append(name) or 0)
check(contexts == [nbd.CONTEXT_BASE_ALLOCATION], "LIST_META_CONTEXT: %r" % contexts)
h.set_export_name("proto")
h.opt_go()
check(h.get_size() == 16 * MiB, "OPT_GO proto: size %d" % h.get_size())
check(h.get_structured_replies_negotiated(), "structured replies not negotiated")
check(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION), "base:allocation not negotiated")
print("ok: option mode", flush=True)


def chunks(count, offset, flags=0):
    seen = []
    def cb(subbuf, off, status, err):
        seen.append((off, len(subbuf), status))
        return 0
    data = h.pread_structured(count, offset, cb, flags)
    return data, sorted(seen)


# A sparse 1 MiB read comes back (at least partly) as OFFSET_HOLE chunks.
data, seen = chunks(MiB, 4 * MiB)
check(data == bytes(MiB), "sparse range does not read as zeroes")
check(any(s == nbd.READ_HOLE for _, _, s in seen), "no OFFSET_HOLE chunk for a sparse 1 MiB read: %r" % seen)
check(sum(n for _, n, _ in seen) == MiB, "chunks do not cover the read: %r" % seen)

# Data then hole: the data comes as data, the rest may be a hole.
h.pwrite(pattern(1, 64 * KiB), 0)
data, seen = chunks(256 * KiB, 0)
check(data[:64 * KiB] == pattern(1, 64 * KiB) and data[64 * KiB:] == bytes(192 * KiB),
      "mixed read returned wrong bytes")
check(all(s == nbd.READ_DATA for o, n, s in seen if o < 64 * KiB), "written range not sent as data")
check(sum(n for _, n, _ in seen) == 256 * KiB, "chunks do not cover the read: %r" % seen)

# DF: one chunk, all data.
data, seen = chunks(MiB, 4 * MiB, nbd.CMD_FLAG_DF)
check(len(seen) == 1 and seen[0][2] == nbd.READ_DATA, "DF read came in chunks %r" % seen)
check(data == bytes(MiB), "DF read of a hole is not zeroes")
print("ok: structured reads", flush=True)

# BLOCK_STATUS: REQ_ONE gives exactly one extent.
ext = []
h.block_status(MiB, 0, lambda ctx, off, e, err: ext.extend(e) or 0, nbd.CMD_FLAG_REQ_ONE)
check(len(ext) == 2, "REQ_ONE: %d extents" % (len(ext) // 2))
check(ext[1] & nbd.STATE_HOLE == 0 and ext[0] <= 64 * KiB, "REQ_ONE extent %r for a data block" % ext)

# WRITE_ZEROES: NO_HOLE, FAST_ZERO (may be refused with ENOTSUP), plain.
h.pwrite(pattern(2, MiB), MiB)
h.zero(64 * KiB, MiB, nbd.CMD_FLAG_NO_HOLE)
check(h.pread(64 * KiB, MiB) == bytes(64 * KiB), "NO_HOLE zero did not zero")
try:
    h.zero(64 * KiB, MiB + 64 * KiB, nbd.CMD_FLAG_FAST_ZERO)
    check(h.pread(64 * KiB, MiB + 64 * KiB) == bytes(64 * KiB), "FAST_ZERO did not zero")
except nbd.Error as e:
    check(e.errnum == errno.ENOTSUP, "FAST_ZERO failed with %s, not ENOTSUP" % e.errno)
h.zero(64 * KiB, MiB + 128 * KiB)
check(h.pread(64 * KiB, MiB + 128 * KiB) == bytes(64 * KiB), "WRITE_ZEROES did not zero")
check(h.pread(64 * KiB, MiB + 192 * KiB) == pattern(2, MiB)[192 * KiB:256 * KiB],
      "WRITE_ZEROES touched its neighbour")

# TRIM reads back as zeroes and becomes a hole; CACHE and FUA just work.
h.trim(MiB // 2, MiB + MiB // 2)
check(h.pread(MiB // 2, MiB + MiB // 2) == bytes(MiB // 2), "trimmed range not zero")
ext = []
h.block_status(MiB // 2, MiB + MiB // 2, lambda ctx, off, e, err: ext.extend(e) or 0)
check(ext[1] & nbd.STATE_HOLE, "trimmed range not reported as a hole: %r" % ext)
h.cache(MiB, 0)
h.pwrite(pattern(3, 4 * KiB), 8 * MiB, nbd.CMD_FLAG_FUA)
check(h.pread(4 * KiB, 8 * MiB) == pattern(3, 4 * KiB), "FUA write reads back wrong")
h.flush()
h.shutdown()
print("ok: block status, zeroes, trim, cache, FUA", flush=True)

# OPT_EXPORT_NAME, the old way in: size and flags, then transmission.
c = RawClient(port)
c.handshake()
c.send_option(OPT_EXPORT_NAME, b"proto")
size, flags = struct.unpack(">QH", recv_exact(c.sock, 10))
check(size == 16 * MiB, "EXPORT_NAME: size %d" % size)
check(c.read(8 * MiB, 4 * KiB) == pattern(3, 4 * KiB), "read after EXPORT_NAME returned wrong data")
c.close()
print("ok: EXPORT_NAME", flush=True)
PY
vsand_stop TERM
[ "$VSAND_STATUS" -eq 0 ] || die "vsand exited $VSAND_STATUS on SIGTERM"
log "ok"
