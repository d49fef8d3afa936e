/* serve.c - the peers' requests to this node, on the link's threads
 * (link.h): their writes and zeroes applied to this copy (recording the
 * regions for outdated peers, clearing the lost marks of a reconcile),
 * reads, checksums and extents from a current whole copy (of the volume
 * and of its snapshots), and a syncing peer's dirty bitmap. serve_request finds the volume
 * (registry.c) and hands the request to its handler.
 */
#include "mirror/engine_int.h"

#include "mirror/replicas.h"
#include "policing/protocol.h"
#include "store/bitmap.h"
#include "store/svol.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

/* Whether this copy takes writes from peers (current or syncing, whole). */
static int accepts_writes(struct mvol *v)
{
    enum replica_state s = replica_get(&v->rec, v->m->self);
    if (v->rec.local == STORE_LOCAL_FAILED)
        return -EIO;
    return s == REPLICA_CURRENT || s == REPLICA_SYNCING ? 0 : -ESTALE;
}

static bool in_bounds(struct mvol *v, const struct mwire_header *h)
{
    return h->offset <= vsize(v) && h->length <= vsize(v) - h->offset;
}

static int apply_write(struct mvol *v, struct mlink_call *c, uint64_t first, uint64_t last);

static int serve_write(struct mvol *v, struct mlink_call *c)
{
    const struct mwire_header *h = c->req;
    if (!in_bounds(v, h))
        return -ENOSPC;
    struct mirror *m = v->m;
    uint64_t first = h->offset >> m->rs_shift,
             last = (h->offset + (h->length ? h->length - 1 : 0)) >> m->rs_shift;
    int r = cut_wait(m, h->cut, c->peer);
    if (r < 0)
        return r;
    pthread_mutex_lock(&v->mu);
    r = accepts_writes(v);
    if (r == 0)
        r = mark_outdated_peers(v, first, last);
    pthread_mutex_unlock(&v->mu);
    if (r < 0)
        return r;
    /* Counted until applied: with sync = received the sender may take it
     * as done, drain and see a cut commit while it is still being written
     * here (mirror_cut_settle). */
    atomic_fetch_add(&v->applying, 1);
    r = apply_write(v, c, first, last);
    atomic_fetch_sub(&v->applying, 1);
    return r;
}

/* Writes looked at ahead for copy-on-write, and the chunks they may
 * cover in all (a bound on the claims one commit takes). */
#define COW_AHEAD_MAX 64
#define COW_AHEAD_CHUNKS 256

/* A peer's first write to a chunk after a cut copies the chunk into the
 * newest snapshot and makes the copy durable: two syncs (side file, then
 * map; on a disk, two device flushes). The node that took the writes from
 * its clients shares them among all its writers (a group commit), but
 * this thread applies the peer's writes one at a time, so each would pay
 * its own. So the first write that needs a copy copies, under one commit,
 * for the peer's writes already buffered behind it too (snap_cow_many).
 * Copying early is safe: a chunk the newest snapshot does not hold has
 * not changed since its cut (every change goes through its copy-on-write,
 * and the writes of earlier cuts were applied before it was made), so the
 * copy holds the cut's bytes. But a copy marks the chunk changed in the
 * snapshot's map, so only writes that will change their chunks are taken:
 * of this volume and this cut, and no reconcile, which writes only the
 * chunks that differ (reconcile.c), so that every copy's map names the
 * same chunks. Best effort: each write's own copy-on-write does what is
 * left and reports errors. */
static void cow_ahead(struct mvol *v, struct mlink_call *c)
{
    const struct mwire_header *h = c->req;
    struct snapset *ss = svol_snapshots(v->sv);
    /* 0: nothing to copy; an error: the write's own copy-on-write meets it. */
    if ((h->flags & MW_F_RECONCILE) || snap_cow(ss, h->offset, h->length, true) != -EAGAIN)
        return;
    struct snap_range rg[COW_AHEAD_MAX] = {{h->offset, h->length}};
    size_t n = 1, pos = 0;
    uint64_t chunks = (h->length >> SNAP_CHUNK_SHIFT) + 2;
    struct mwire_header next;
    while (n < COW_AHEAD_MAX && mlink_ahead(c, &pos, &next)) {
        if (next.type != MW_WRITE || next.volume != h->volume || next.cut != h->cut ||
            (next.flags & MW_F_RECONCILE))
            continue;
        chunks += (next.length >> SNAP_CHUNK_SHIFT) + 2;
        if (chunks > COW_AHEAD_CHUNKS)
            break;
        rg[n++] = (struct snap_range){next.offset, next.length};
    }
    if (n > 1 && snap_cow_many(ss, rg, n) < 0)
        qb_log(LOG_DEBUG, "volume \"%s\": copy-on-write ahead of node %u's writes failed", v->name,
               c->peer);
}

/* Applies a peer's write here. */
static int apply_write(struct mvol *v, struct mlink_call *c, uint64_t first, uint64_t last)
{
    const struct mwire_header *h = c->req;
    if (v->m->p.sync_received && mlink_reply(c, 0, NULL, 0) < 0)
        return 0;
    if (h->type == MW_WRITE)
        cow_ahead(v, c);
    unsigned flags =
        (h->flags & MW_F_FUA ? SVOL_FUA : 0) | (h->flags & MW_F_MAY_TRIM ? SVOL_MAY_TRIM : 0);
    local_fn write = h->flags & MW_F_RECONCILE ? reconcile_apply : local_write;
    int r = h->type == MW_WRITE ? write(v, c->payload, h->length, h->offset, flags & SVOL_FUA)
                                : svol_zero(v->sv, h->length, h->offset, flags);
    if (r == 0 && (h->flags & MW_F_RECONCILE)) {
        pthread_mutex_lock(&v->mu);
        for (uint64_t i = first; i <= last; i++)
            lost_set(v, i, false);
        pthread_mutex_unlock(&v->mu);
    }
    if (r < 0) {
        qb_log(LOG_ERR, "volume \"%s\": applying node %u's write: %s", v->name, c->peer,
               strerror(-r));
        set_local_failed(v);
    }
    return r;
}

static int serve_read(struct mvol *v, struct mlink_call *c)
{
    const struct mwire_header *h = c->req;
    void *buf = malloc(h->length ? h->length : 1);
    if (!buf)
        return -ENOMEM;
    int r = svol_read(v->sv, buf, h->length, h->offset, 0);
    if (r == 0)
        r = mlink_reply(c, 0, buf, h->length);
    free(buf);
    return r;
}

static int serve_csum(struct mvol *v, struct mlink_call *c)
{
    const struct mwire_header *h = c->req;
    uint32_t size = mwire_csum_reply_size(h->length);
    uint64_t *sums = malloc(size ? size : 1);
    void *buf = malloc(MWIRE_CSUM_CHUNK);
    int r = sums && buf ? 0 : -ENOMEM;
    for (uint32_t i = 0; r == 0 && i < size / 8; i++) {
        uint64_t off = (uint64_t)i * MWIRE_CSUM_CHUNK;
        uint32_t n =
            h->length - off < MWIRE_CSUM_CHUNK ? (uint32_t)(h->length - off) : MWIRE_CSUM_CHUNK;
        r = svol_read(v->sv, buf, n, h->offset + off, 0);
        if (r == 0)
            sums[i] = mwire_csum64(buf, n);
    }
    if (r == 0)
        r = mlink_reply(c, 0, sums, size);
    free(buf);
    free(sums);
    return r;
}

/* Whether this copy may answer a peer about data: only a current, whole
 * copy holding its read lease, or a peer would take stale data for the
 * volume's. -EAGAIN: for now (the asker tries again). */
static int copy_answers(struct mvol *v)
{
    if (!atomic_load(&v->serve_local))
        return -ESTALE;
    return policing_lease_valid(v->pc) ? 0 : -EAGAIN;
}

/* A peer's read or checksum. */
static int serve_from_copy(struct mvol *v, struct mlink_call *c)
{
    int r = copy_answers(v);
    if (r < 0)
        return r;
    if (!in_bounds(v, c->req))
        return -EINVAL;
    return c->req->type == MW_READ ? serve_read(v, c) : serve_csum(v, c);
}

/* A syncing peer asks what it missed: once this node has seen it syncing,
 * every write that left it out is in the bitmap. */
static int serve_dirty(struct mvol *v, struct mlink_call *c)
{
    uint32_t node = c->req->arg;
    pthread_mutex_lock(&v->mu);
    int r = replica_get(&v->rec, node) == REPLICA_SYNCING ? 0 : -EAGAIN;
    if (r == 0 && replica_get(&v->rec, v->m->self) != REPLICA_CURRENT)
        r = -ESTALE;
    void *buf = NULL;
    size_t len = 0;
    if (r == 0) {
        struct bitmap *b = dirty_for(v, node);
        r = b ? bitmap_export(b, &buf, &len) : -EIO;
    }
    pthread_mutex_unlock(&v->mu);
    if (r == 0 && len > MWIRE_IO_MAX)
        r = -EFBIG;
    if (r == 0)
        r = mlink_reply(c, 0, buf, len);
    free(buf);
    return r;
}

/* A peer's question about allocation: only a current, whole copy answers
 * (as for a read), so the asker never takes stale holes for the volume's. */
static int serve_extents(struct mvol *v, struct mlink_call *c)
{
    const struct mwire_header *h = c->req;
    if (!atomic_load(&v->serve_local) || !policing_lease_valid(v->pc))
        return -ESTALE;
    if (!in_bounds(v, h))
        return -EINVAL;
    struct svol_extent *ext = malloc(h->arg * sizeof *ext);
    struct mw_extent *rec = malloc(h->arg * sizeof *rec);
    int r = ext && rec ? svol_extents(v->sv, h->length, h->offset, false, ext, h->arg) : -ENOMEM;
    for (int i = 0; i < r; i++)
        rec[i] = (struct mw_extent){.length = (uint32_t)ext[i].length,
                                    .flags = ext[i].hole ? MW_EXTENT_HOLE | MW_EXTENT_ZERO : 0};
    if (r > 0)
        r = mlink_reply(c, 0, rec, (size_t)r * sizeof *rec);
    free(rec);
    free(ext);
    return r;
}

/* ---- a snapshot's data --------------------------------------------------------- */

static uint64_t snap_id(const struct mlink_call *c)
{
    struct mw_snap id;
    memcpy(&id, c->payload, sizeof id); /* its size checked (wire.c) */
    return id.id;
}

static int serve_snap_read(struct mvol *v, struct mlink_call *c)
{
    const struct mwire_header *h = c->req;
    void *buf = malloc(h->length);
    if (!buf)
        return -ENOMEM;
    int r = snap_read(svol_snapshots(v->sv), snap_id(c), buf, h->length, h->offset);
    if (r == 0)
        r = mlink_reply(c, 0, buf, h->length);
    free(buf);
    return r;
}

static int serve_snap_extents(struct mvol *v, struct mlink_call *c)
{
    const struct mwire_header *h = c->req;
    struct snap_extent *ext = malloc(h->arg * sizeof *ext);
    struct mw_extent *rec = malloc(h->arg * sizeof *rec);
    int r = ext && rec
                ? snap_extents(svol_snapshots(v->sv), snap_id(c), h->length, h->offset, ext, h->arg)
                : -ENOMEM;
    for (int i = 0; i < r; i++)
        rec[i] = (struct mw_extent){.length = (uint32_t)ext[i].length,
                                    .flags = ext[i].hole ? MW_EXTENT_HOLE | MW_EXTENT_ZERO : 0};
    if (r > 0)
        r = mlink_reply(c, 0, rec, (size_t)r * sizeof *rec);
    free(rec);
    free(ext);
    return r;
}

static int serve_snap_changed(struct mvol *v, struct mlink_call *c)
{
    const struct mwire_header *h = c->req;
    struct mw_snap_changed ids;
    memcpy(&ids, c->payload, sizeof ids);
    uint32_t size = mwire_changed_reply_size(h->length);
    uint8_t *bits = calloc(1, size);
    int r = bits ? changed_local(v, ids.since, ids.upto, h->offset, h->length, bits) : -ENOMEM;
    if (r == 0)
        r = mlink_reply(c, 0, bits, size);
    free(bits);
    return r;
}

/* A peer's request for a snapshot's data: as for a read, only a current,
 * whole copy with its read lease answers (a copy syncing may still lack
 * the snapshots' chunks of its dirty regions); -ENOENT for a snapshot it
 * does not have. */
static int serve_snapshot(struct mvol *v, struct mlink_call *c)
{
    int r = copy_answers(v);
    if (r < 0)
        return r;
    switch (c->req->type) {
    case MW_SNAP_READ:
        return serve_snap_read(v, c);
    case MW_SNAP_EXTENTS:
        return serve_snap_extents(v, c);
    default:
        return serve_snap_changed(v, c);
    }
}

/* ---- a peer's request, to its handler -------------------------------------- */

static int serve_volume(struct mvol *v, struct mlink_call *c)
{
    switch (c->req->type) {
    case MW_WRITE:
    case MW_ZERO:
        return serve_write(v, c);
    case MW_FLUSH:
        return svol_sync(v->sv);
    case MW_READ:
    case MW_CSUM:
        return serve_from_copy(v, c);
    case MW_DIRTY:
        return serve_dirty(v, c);
    case MW_EXTENTS:
        return serve_extents(v, c);
    case MW_SNAP_READ:
    case MW_SNAP_EXTENTS:
    case MW_SNAP_CHANGED:
        return serve_snapshot(v, c);
    default:
        return -EOPNOTSUPP;
    }
}

int serve_request(void *ctx, struct mlink_call *c)
{
    struct mvol *v = reg_get(ctx, c->req->volume);
    if (!v)
        return -ESTALE;
    int r = serve_volume(v, c);
    mvol_unref(v);
    return r;
}
