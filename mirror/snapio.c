/* snapio.c - a snapshot's data (store/snap.h) for the volume layer and the
 * resync: reads, allocation and changed chunks, answered from this node's
 * copy while it is current and its read lease holds (invariant 7), else
 * by a current peer (SNAP_READ, SNAP_EXTENTS, SNAP_CHANGED; serve.c
 * answers them).
 */
#include "mirror/engine_int.h"

#include "common/clock.h"
#include "store/snap.h"
#include "store/svol.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <qb/qblog.h>

_Static_assert(MWIRE_SNAP_CHUNK == SNAP_CHUNK, "SNAP_CHANGED's bits are the store's chunks");

/* 1: answer from this copy; 0: ask a current peer; -EIO: this node may
 * answer nothing (not readable, or its lease did not come back). */
static int from_here(struct mvol *v)
{
    int r = mirror_read_ok(v, true);
    if (r < 0)
        return r;
    return mirror_local_current(v) ? 1 : 0;
}

/* Which of two peers' answers says more: one to try again (a lapsed
 * lease), then no such snapshot, then a range past it; others are -EIO. */
static int rank(int err)
{
    return err == -EAGAIN ? 3 : err == -ENOENT ? 2 : err == -EINVAL ? 1 : 0;
}

/* op (its header set up) to each current peer in turn until one answers. */
static int ask_peers_once(struct mvol *v, struct mlink_op *op)
{
    uint32_t peers[STORE_REPLICAS_MAX];
    size_t n = current_peers(v, peers);
    int r = -EIO;
    for (size_t i = 0; i < n; i++) {
        op->peer = peers[i];
        mlink_call(v->m->link, op, 1);
        if (op->result == 0)
            return 0;
        if (rank(op->result) > rank(r))
            r = op->result;
    }
    return r;
}

/* ask_peers_once, again every 50 ms while a peer's lease has lapsed (as
 * read_peer), up to the mirror timeout. */
static int ask_peers(struct mvol *v, struct mlink_op *op)
{
    uint64_t deadline = clock_now_ms() + v->m->p.timeout_ms;
    int r;
    while ((r = ask_peers_once(v, op)) == -EAGAIN && clock_now_ms() < deadline &&
           !atomic_load(&v->m->stopping) && !atomic_load(&v->gone)) {
        struct timespec d = {0, 50 * 1000000L};
        nanosleep(&d, NULL);
    }
    return rank(r) > 0 && r != -EAGAIN ? r : r < 0 ? -EIO : 0;
}

/* Logs what no current copy could answer. */
static int unanswered(struct mvol *v, uint64_t snap, const char *what, uint64_t offset, int r)
{
    if (r == -EIO)
        qb_log(LOG_WARNING,
               "volume \"%s\": snapshot %" PRIu64 ": %s at %" PRIu64 ": no current copy answered",
               v->name, snap, what, offset);
    return r;
}

/* ---- reads ------------------------------------------------------------------ */

int snap_read_peer(struct mvol *v, uint64_t snap, void *buf, uint32_t count, uint64_t offset)
{
    struct mw_snap id = {.id = snap};
    struct mlink_op op = {.payload = &id, .reply_buf = buf, .reply_max = count};
    mwire_init(&op.req, MW_SNAP_READ, 0);
    op.req.volume = v->vid;
    op.req.offset = offset;
    op.req.length = count;
    return ask_peers(v, &op);
}

int mirror_snap_read(struct mvol *v, uint64_t snap, void *buf, uint32_t count, uint64_t offset)
{
    int r = from_here(v);
    if (r == 1) {
        r = snap_read(svol_snapshots(v->sv), snap, buf, count, offset);
        /* -EBADF: this copy was removed meanwhile (svol_detach_data; its
         * snapshots' side files are emptied next); a current peer answers. */
        if (r != -EBADF)
            return r;
        r = 0;
    }
    for (char *p = buf; r == 0 && count > 0;) {
        uint32_t n = count < MWIRE_IO_MAX ? count : MWIRE_IO_MAX;
        r = unanswered(v, snap, "read", offset, snap_read_peer(v, snap, p, n, offset));
        p += n;
        count -= n;
        offset += n;
    }
    return r;
}

/* ---- allocation --------------------------------------------------------------- */

static int extents_here(struct mvol *v, uint64_t snap, uint32_t count, uint64_t offset,
                        struct svol_extent *ext, unsigned max)
{
    struct snap_extent *se = malloc(max * sizeof *se);
    if (!se)
        return -ENOMEM;
    int r = snap_extents(svol_snapshots(v->sv), snap, count, offset, se, max);
    for (int i = 0; i < r; i++)
        ext[i] = (struct svol_extent){.length = se[i].length, .hole = se[i].hole};
    free(se);
    return r;
}

static int extents_there(struct mvol *v, uint64_t snap, uint32_t count, uint64_t offset,
                         struct svol_extent *ext, unsigned max)
{
    max = max < MWIRE_EXTENTS_MAX ? max : MWIRE_EXTENTS_MAX;
    struct mw_extent *rec = malloc(max * sizeof *rec);
    if (!rec)
        return -ENOMEM;
    struct mw_snap id = {.id = snap};
    struct mlink_op op = {.payload = &id, .reply_buf = rec, .reply_max = max * sizeof *rec};
    mwire_init(&op.req, MW_SNAP_EXTENTS, 0);
    op.req.volume = v->vid;
    op.req.offset = offset;
    op.req.length = count;
    op.req.arg = max;
    int r = ask_peers(v, &op);
    if (r == 0)
        r = extents_reply(v, &op, rec, ext);
    free(rec);
    return unanswered(v, snap, "extents", offset, r);
}

int mirror_snap_extents(struct mvol *v, uint64_t snap, uint32_t count, uint64_t offset,
                        struct svol_extent *ext, unsigned max)
{
    if (count == 0 || max == 0)
        return -EINVAL;
    int r = from_here(v);
    if (r == 1) {
        r = extents_here(v, snap, count, offset, ext, max);
        /* -EBADF: this copy was removed meanwhile (see mirror_snap_read). */
        if (r != -EBADF)
            return r;
        r = 0;
    }
    return r < 0 ? r : extents_there(v, snap, count, offset, ext, max);
}

/* ---- changed chunks ------------------------------------------------------------- */

int changed_local(struct mvol *v, uint64_t since, uint64_t upto, uint64_t offset, uint32_t length,
                  uint8_t *bits)
{
    struct bitmap *b;
    int r = snap_changed(svol_snapshots(v->sv), since, upto, vsize(v), offset, length, &b);
    if (r < 0)
        return r;
    uint64_t n = bitmap_nbits(b);
    for (uint64_t c = bitmap_next(b, 0); c < n; c = bitmap_next(b, c + 1))
        bits[c / 8] |= (uint8_t)(1u << (c % 8));
    bitmap_close(b);
    return 0;
}

static int changed_there(struct mvol *v, uint64_t since, uint64_t upto, uint64_t offset,
                         uint32_t length, uint8_t *bits)
{
    struct mw_snap_changed ids = {.since = since, .upto = upto};
    struct mlink_op op = {
        .payload = &ids, .reply_buf = bits, .reply_max = mwire_changed_reply_size(length)};
    mwire_init(&op.req, MW_SNAP_CHANGED, 0);
    op.req.volume = v->vid;
    op.req.offset = offset;
    op.req.length = length;
    return unanswered(v, since, "changed chunks", offset, ask_peers(v, &op));
}

/* The runs of [offset, end) from the bits of the chunks from base on. */
static int runs_of(const uint8_t *bits, uint64_t base, uint64_t offset, uint64_t end,
                   struct mirror_changed_run *runs, unsigned max)
{
    unsigned n = 0;
    for (uint64_t pos = offset; pos < end;) {
        uint64_t c = (pos - base) / SNAP_CHUNK;
        uint64_t stop = base + (c + 1) * SNAP_CHUNK < end ? base + (c + 1) * SNAP_CHUNK : end;
        bool changed = bits[c / 8] & (1u << (c % 8));
        if (n > 0 && runs[n - 1].changed == changed)
            runs[n - 1].length += stop - pos;
        else if (n < max)
            runs[n++] = (struct mirror_changed_run){.length = stop - pos, .changed = changed};
        else
            break;
        pos = stop;
    }
    return (int)n;
}

int mirror_snap_changed(struct mvol *v, uint64_t since, uint64_t upto, uint64_t offset,
                        uint64_t length, struct mirror_changed_run *runs, unsigned max)
{
    if (length == 0 || max == 0 || since == 0 || (upto != 0 && upto <= since) ||
        offset > UINT64_MAX - length)
        return -EINVAL;
    uint64_t base = offset - offset % SNAP_CHUNK;
    uint64_t end =
        offset + length - base > MWIRE_CHANGED_MAX ? base + MWIRE_CHANGED_MAX : offset + length;
    uint32_t span = (uint32_t)(end - base);
    uint8_t *bits = calloc(1, mwire_changed_reply_size(span));
    int r = bits ? from_here(v) : -ENOMEM;
    if (r == 1) {
        r = changed_local(v, since, upto, base, span, bits);
        /* -EBADF: this copy was removed meanwhile (see mirror_snap_read). */
        if (r == -EBADF)
            r = changed_there(v, since, upto, base, span, bits);
    } else if (r == 0) {
        r = changed_there(v, since, upto, base, span, bits);
    }
    if (r == 0)
        r = runs_of(bits, base, offset, end, runs, max);
    free(bits);
    return r;
}
