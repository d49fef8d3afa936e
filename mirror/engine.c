/* engine.c - the mirror engine (see engine.h for the design).
 *
 * Per volume it keeps (struct mvol): the dirty bitmaps this node records
 * for outdated peers, the writes in flight from this node (so overlapping
 * ones go one after the other), and the state of this replica's resync.
 */
#include "mirror/engine.h"

#include "store/bitmap.h"
#include "mirror/link.h"
#include "mirror/replicas.h"
#include "nbd-server/export.h"
#include "policing/protocol.h"
#include "store/store.h"
#include "volume/volume_int.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <qb/qblog.h>

#define COPY_CHUNK (1u << 20)
#define VERIFY_LIST_MAX 64

struct mirror {
    struct mirror_params p;
    struct mauth_secret secret;
    char cluster[MW_CLUSTER_MAX + 1];
    struct mlink *link;
    uint32_t self;
    uint64_t rs; /* region size */
    unsigned rs_shift;
    atomic_bool stopping;
    atomic_uint verifies; /* verify threads running (they hold m) */
};

/* A write in flight from this node, in its volume's list. */
struct inflight {
    uint64_t start, end;
    struct inflight *next;
};

/* Locking: mu guards v->rec's replica set and local state, the bitmaps and
 * the resync fields that are not atomic; it is held across a bitmap's
 * sync, so a bitmap is never closed under a writer. rmu guards the list of
 * writes in flight; rcv is broadcast when one ends. */
struct mvol {
    struct mirror *m;
    pthread_mutex_t mu;
    struct bitmap *dirty[STORE_REPLICAS_MAX];
    uint32_t dirty_node[STORE_REPLICAS_MAX];
    size_t ndirty;
    atomic_bool serve_local; /* this copy is current and whole */
    pthread_mutex_t rmu;
    pthread_cond_t rcv;
    struct inflight *inflight;
    bool resyncing;
    pthread_t resync_thread;
    atomic_uint_fast64_t resync_done, resync_total;
    struct timespec resync_started;
    /* Regions a departed writer may have left unequal (see reconcile
     * below): a bit each, guarded by mu; nlost counts them, so the write
     * path looks no further while it is 0. */
    uint64_t *lost;
    atomic_uint_fast64_t nlost;
    bool reconciling;
    pthread_t reconcile_thread;
};

/* Regions a departed writer may have left unequal (defined further on). */
static uint64_t lost_first(struct volume *v, uint64_t first, uint64_t last);
static void lost_set(struct volume *v, uint64_t r, bool on);
static bool lost_test(const struct mvol *mv, uint64_t r);
static int reconcile_lost(struct volume *v, uint64_t first, uint64_t last);
static int reconcile_region(struct volume *v, uint64_t r);
static void consider_reconcile(struct volume *v);

/* ---- small helpers ------------------------------------------------------ */

static uint64_t nregions(struct mirror *m, uint64_t size)
{
    return (size + m->rs - 1) >> m->rs_shift;
}

static double seconds_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static const char *local_name(uint8_t local)
{
    return local == STORE_LOCAL_FAILED ? "failed" : local == STORE_LOCAL_REBUILD ? "rebuild" : "ok";
}

/* With mv->mu held: whether this node's copy may serve reads. */
static void update_serve_local(struct volume *v)
{
    bool ok =
        replica_get(&v->rec, v->mirror->self) == REPLICA_CURRENT && v->rec.local == STORE_LOCAL_OK;
    atomic_store(&v->mv->serve_local, ok);
}

/* ---- dirty bitmaps ---------------------------------------------------- */

/* With mv->mu held: node's bitmap, opened (or created) on first use. */
static struct bitmap *dirty_for(struct volume *v, uint32_t node)
{
    struct mvol *mv = v->mv;
    for (size_t i = 0; i < mv->ndirty; i++)
        if (mv->dirty_node[i] == node)
            return mv->dirty[i];
    if (mv->ndirty == STORE_REPLICAS_MAX)
        return NULL;
    char path[PATH_MAX];
    store_bitmap_path(v->mirror->p.store, v->rec.uuid, node, path, sizeof path);
    struct bitmap *b;
    if (bitmap_open(path, nregions(v->mirror, v->rec.size), v->mirror->rs_shift, &b) < 0)
        return NULL;
    mv->dirty[mv->ndirty] = b;
    mv->dirty_node[mv->ndirty++] = node;
    return b;
}

/* With mv->mu held: node is current again, its bitmap goes. */
static void dirty_drop(struct volume *v, uint32_t node)
{
    struct mvol *mv = v->mv;
    for (size_t i = 0; i < mv->ndirty; i++) {
        if (mv->dirty_node[i] != node)
            continue;
        if (bitmap_remove(mv->dirty[i]) < 0)
            qb_log(LOG_WARNING, "volume \"%s\": node %u: its dirty bitmap could not be removed",
                   v->rec.name, node);
        mv->ndirty--;
        mv->dirty[i] = mv->dirty[mv->ndirty];
        mv->dirty_node[i] = mv->dirty_node[mv->ndirty];
        return;
    }
}

/* With mv->mu held: records regions first..last dirty for node, durably. */
static int mark_dirty(struct volume *v, uint32_t node, uint64_t first, uint64_t last)
{
    struct bitmap *b = dirty_for(v, node);
    if (!b) {
        qb_log(LOG_ERR, "volume \"%s\": node %u: no dirty bitmap: refusing the write", v->rec.name,
               node);
        return -EIO;
    }
    uint64_t n = bitmap_nbits(b);
    if (n == 0)
        return 0;
    int r = bitmap_set(b, first, last < n ? last : n - 1);
    if (r > 0)
        r = bitmap_sync(b);
    if (r < 0)
        qb_log(LOG_ERR, "volume \"%s\": node %u: recording dirty regions: %s", v->rec.name, node,
               strerror(-r));
    return r < 0 ? r : 0;
}

/* With mv->mu held: a write to first..last is applied here; every outdated
 * replica must get it later. Only a copy that holds the data records it. */
static int mark_outdated_peers(struct volume *v, uint64_t first, uint64_t last)
{
    for (uint32_t i = 0; i < v->rec.nreplicas; i++) {
        const struct store_replica *r = &v->rec.replicas[i];
        if (r->state != REPLICA_OUTDATED || r->node == v->mirror->self)
            continue;
        int e = mark_dirty(v, r->node, first, last);
        if (e < 0)
            return e;
    }
    return 0;
}

/* ---- writes in flight from this node ---------------------------------- */

/* Enters x's range into the writes in flight, once no overlapping one is;
 * without wait, returns false at once rather than wait. */
static bool range_lock(struct mvol *mv, struct inflight *x, uint64_t offset, uint64_t len,
                       bool wait)
{
    *x = (struct inflight){.start = offset, .end = offset + (len ? len : 1)};
    pthread_mutex_lock(&mv->rmu);
    for (;;) {
        bool overlap = false;
        for (struct inflight *y = mv->inflight; y && !overlap; y = y->next)
            overlap = y->start < x->end && x->start < y->end;
        if (!overlap)
            break;
        if (!wait) {
            pthread_mutex_unlock(&mv->rmu);
            return false;
        }
        pthread_cond_wait(&mv->rcv, &mv->rmu);
    }
    x->next = mv->inflight;
    mv->inflight = x;
    pthread_mutex_unlock(&mv->rmu);
    return true;
}

static void range_unlock(struct mvol *mv, struct inflight *x)
{
    pthread_mutex_lock(&mv->rmu);
    for (struct inflight **p = &mv->inflight; *p; p = &(*p)->next) {
        if (*p == x) {
            *p = x->next;
            break;
        }
    }
    pthread_cond_broadcast(&mv->rcv);
    pthread_mutex_unlock(&mv->rmu);
}

/* ---- the write path ----------------------------------------------------- */

/* Where a write goes: this node's copy (local) and the peers in ops. */
struct plan {
    bool local;
    size_t n;
    struct mlink_op ops[STORE_REPLICAS_MAX];
};

static int plan_write(struct volume *v, uint64_t first, uint64_t last, struct plan *pl)
{
    struct mirror *m = v->mirror;
    pl->local = false;
    pl->n = 0;
    pthread_mutex_lock(&v->mv->mu);
    for (uint32_t i = 0; i < v->rec.nreplicas; i++) {
        const struct store_replica *r = &v->rec.replicas[i];
        bool gets = r->state == REPLICA_CURRENT || r->state == REPLICA_SYNCING;
        if (r->node == m->self)
            pl->local = gets && v->rec.local != STORE_LOCAL_FAILED;
        else if (gets)
            pl->ops[pl->n++] = (struct mlink_op){.peer = r->node};
    }
    int e = pl->local && first <= last ? mark_outdated_peers(v, first, last) : 0;
    pthread_mutex_unlock(&v->mv->mu);
    return e;
}

/* Records this node's copy as failed (it serves nothing until replaced);
 * a record that can't be persisted is logged. */
static void set_local_failed(struct volume *v)
{
    pthread_mutex_lock(&v->mv->mu);
    v->rec.local = STORE_LOCAL_FAILED;
    update_serve_local(v);
    int r = volume_update_record(v);
    pthread_mutex_unlock(&v->mv->mu);
    if (r < 0)
        qb_log(LOG_ERR, "volume \"%s\": recording its failed local copy: %s", v->rec.name,
               strerror(-r));
}

/* This node's copy failed an I/O: it is failed until replaced. */
static void local_failed(struct volume *v, int err, uint64_t first, uint64_t last)
{
    qb_log(LOG_ERR, "volume \"%s\": local replica failed (%s): outdated, I/O goes on at peers",
           v->rec.name, strerror(-err));
    set_local_failed(v);
    policing_replica_change(v->pc, v->vid, v->mirror->self, REPLICA_OUTDATED, first, last, true);
}

/* Whether node's replica of v no longer takes writes (outdated or gone). */
static bool outdated(struct volume *v, uint32_t node)
{
    pthread_mutex_lock(&v->mv->mu);
    enum replica_state s = replica_get(&v->rec, node);
    pthread_mutex_unlock(&v->mv->mu);
    return s != REPLICA_CURRENT && s != REPLICA_SYNCING;
}

/* Peers that failed the request are outdated, with the regions they
 * missed, by an agreed message applied here before the write is
 * acknowledged; a peer the cluster refused to outdate fails the write.
 * Returns how many applied it. */
static int settle(struct volume *v, struct plan *pl, uint64_t first, uint64_t last, int *err)
{
    int ok = 0;
    for (size_t i = 0; i < pl->n; i++) {
        struct mlink_op *op = &pl->ops[i];
        if (op->result == 0) {
            ok++;
            continue;
        }
        qb_log(LOG_WARNING, "volume \"%s\": region %llu: node %u: %s: marking it outdated",
               v->rec.name, (unsigned long long)first, op->peer, strerror(-op->result));
        int r =
            policing_replica_change(v->pc, v->vid, op->peer, REPLICA_OUTDATED, first, last, true);
        if (r == 0 && !outdated(v, op->peer))
            r = -EIO; /* refused: the peer keeps its copy, the write fails */
        if (r < 0)
            *err = r;
    }
    if (!policing_quorate(v->pc))
        *err = -EIO; /* the majority may not know who is outdated */
    return ok;
}

typedef int (*local_fn)(struct volume *v, const void *buf, uint32_t count, uint64_t offset,
                        unsigned flags);

static int local_write(struct volume *v, const void *buf, uint32_t count, uint64_t offset,
                       unsigned flags)
{
    return volume_local_write(v, buf, count, offset, flags & NBD_IO_FUA);
}

static int local_zero(struct volume *v, const void *buf, uint32_t count, uint64_t offset,
                      unsigned flags)
{
    (void)buf;
    return volume_local_zero(v, count, offset, flags);
}

/* One replicated write, from its range lock to its result. The peers'
 * copies and the local one go out together; finish_write settles. */
struct rwrite {
    struct volume *v;
    struct inflight x;
    uint64_t first, last;
    uint32_t wire_flags; /* added to every copy's */
    struct plan pl;
    struct mlink_wait w;
    int err;             /* from planning: nothing was sent */
    int applied;         /* copies that took it, this node's included */
    bool local_done;     /* this node's copy took it */
    struct nbd_async *a; /* asynchronous: told the result */
};

/* Plans w (range lock held) and sends it to the peers and the local copy;
 * with async, w->w completes through done, else mlink_wait waits. */
static void start_write(struct rwrite *w, enum mwire_type type, const void *buf, uint32_t count,
                        uint64_t offset, unsigned flags, local_fn local,
                        void (*done)(struct mlink_wait *))
{
    struct volume *v = w->v;
    w->err = plan_write(v, w->first, w->last, &w->pl);
    w->applied = 0;
    uint32_t wflags = w->wire_flags | (flags & NBD_IO_FUA ? MW_F_FUA : 0) |
                      (flags & NBD_IO_MAY_TRIM ? MW_F_MAY_TRIM : 0);
    for (size_t i = 0; i < w->pl.n; i++) {
        struct mwire_header *h = &w->pl.ops[i].req;
        mwire_init(h, type, 0);
        h->volume = v->vid;
        h->flags = wflags;
        h->offset = offset;
        h->length = count;
        w->pl.ops[i].payload = buf;
    }
    if (w->err < 0)
        w->pl.n = 0;
    if (done)
        mlink_send_async(v->mirror->link, w->pl.ops, w->pl.n, &w->w, done);
    else
        mlink_send(v->mirror->link, w->pl.ops, w->pl.n, &w->w);
    w->local_done = false;
    if (w->err == 0 && w->pl.local) {
        int r = local(v, buf, count, offset, flags);
        w->local_done = r == 0;
        if (r == 0)
            w->applied++;
        else
            local_failed(v, r, w->first, w->last);
    }
}

/* Once every copy answered: settles failed peers. */
static int settle_write(struct rwrite *w)
{
    struct volume *v = w->v;
    int err = w->err;
    if (err == 0)
        w->applied += settle(v, &w->pl, w->first, w->last, &err);
    if (err == 0 && w->applied == 0) {
        qb_log(LOG_ERR, "volume \"%s\": region %llu: no replica could take the write", v->rec.name,
               (unsigned long long)w->first);
        err = -EIO;
    }
    if (err < 0 && w->local_done) {
        /* This copy took a write the client is told failed, and that the
         * others may lack (a minority cut off): its own bitmap says so, and
         * when it resyncs, these regions come back from the current ones. */
        pthread_mutex_lock(&v->mv->mu);
        mark_dirty(v, v->mirror->self, w->first, w->last);
        pthread_mutex_unlock(&v->mv->mu);
    }
    return err;
}

/* Settles, then ends the range lock. */
static int finish_write(struct rwrite *w)
{
    int err = settle_write(w);
    range_unlock(w->v->mv, &w->x);
    return err;
}

static void rwrite_init(struct rwrite *w, struct volume *v, uint32_t count, uint64_t offset)
{
    unsigned shift = v->mirror->rs_shift;
    w->v = v;
    w->wire_flags = 0;
    w->first = offset >> shift;
    w->last = (offset + (count ? count - 1 : 0)) >> shift;
}

static int replicate(struct volume *v, enum mwire_type type, const void *buf, uint32_t count,
                     uint64_t offset, unsigned flags, local_fn local)
{
    struct rwrite w;
    rwrite_init(&w, v, count, offset);
    int e = reconcile_lost(v, w.first, w.last);
    if (e < 0)
        return e;
    range_lock(v->mv, &w.x, offset, count, true);
    start_write(&w, type, buf, count, offset, flags, local, NULL);
    mlink_wait(&w.w);
    return finish_write(&w);
}

static bool all_ok(const struct rwrite *w)
{
    for (size_t i = 0; i < w->pl.n; i++)
        if (w->pl.ops[i].result < 0)
            return false;
    return true;
}

static void *settle_main(void *arg)
{
    struct rwrite *w = arg;
    struct nbd_async *a = w->a;
    int err = finish_write(w);
    free(w);
    a->done(a, err);
    return NULL;
}

/* Every copy of an asynchronous write answered, on the thread of the last
 * one. Settling a failed peer waits for the cluster: not on a link thread,
 * which must go on completing other writes. */
static void async_done(struct mlink_wait *mw)
{
    struct rwrite *w = (struct rwrite *)((char *)mw - offsetof(struct rwrite, w));
    if (!all_ok(w)) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int e = pthread_create(&t, &attr, settle_main, w);
        pthread_attr_destroy(&attr);
        if (e == 0)
            return;
    }
    settle_main(w);
}

/* The asynchronous write path (NBD_IO_NOWAIT with an nbd_async): -EAGAIN
 * when an overlapping write of this node is in flight (nothing done), else
 * -EINPROGRESS and a->done gets the result. */
static int replicate_async(struct volume *v, enum mwire_type type, const void *buf, uint32_t count,
                           uint64_t offset, unsigned flags, local_fn local, struct nbd_async *a)
{
    struct rwrite *w = malloc(sizeof *w);
    if (!w)
        return -EAGAIN;
    rwrite_init(w, v, count, offset);
    w->a = a;
    if (lost_first(v, w->first, w->last) != UINT64_MAX ||
        !range_lock(v->mv, &w->x, offset, count, false)) {
        free(w);
        return -EAGAIN;
    }
    start_write(w, type, buf, count, offset, flags & ~NBD_IO_NOWAIT, local, async_done);
    mlink_release(&w->w);
    return -EINPROGRESS;
}

int mirror_write(struct volume *v, const void *buf, uint32_t count, uint64_t offset, unsigned flags,
                 struct nbd_async *a)
{
    if (a)
        return replicate_async(v, MW_WRITE, buf, count, offset, flags, local_write, a);
    return replicate(v, MW_WRITE, buf, count, offset, flags, local_write);
}

int mirror_zero(struct volume *v, uint32_t count, uint64_t offset, unsigned flags,
                struct nbd_async *a)
{
    if (a)
        return replicate_async(v, MW_ZERO, NULL, count, offset, flags, local_zero, a);
    return replicate(v, MW_ZERO, NULL, count, offset, flags, local_zero);
}

int mirror_flush(struct volume *v)
{
    struct mirror *m = v->mirror;
    struct plan pl;
    plan_write(v, 1, 0, &pl);
    for (size_t i = 0; i < pl.n; i++) {
        mwire_init(&pl.ops[i].req, MW_FLUSH, 0);
        pl.ops[i].req.volume = v->vid;
    }
    struct mlink_wait w;
    mlink_send(m->link, pl.ops, pl.n, &w);
    int applied = 0, err = 0;
    if (pl.local) {
        int r = volume_local_sync(v);
        if (r == 0)
            applied++;
        else
            local_failed(v, r, 0, nregions(m, v->rec.size) - 1);
    }
    mlink_wait(&w);
    /* A peer that failed a flush may have lost any write since the last
     * one: all of it is dirty for it. */
    applied += settle(v, &pl, 0, nregions(m, v->rec.size) - 1, &err);
    return err < 0 ? err : applied > 0 ? 0 : -EIO;
}

void mirror_gather_begin(void)
{
    mlink_gather_begin();
}

void mirror_gather_end(void)
{
    mlink_gather_end();
}

/* ---- reads ---------------------------------------------------------------- */

bool mirror_local_current(struct volume *v)
{
    return atomic_load(&v->mv->serve_local);
}

/* The peers whose copy of v is current, into peers; how many. */
static size_t current_peers(struct volume *v, uint32_t peers[STORE_REPLICAS_MAX])
{
    size_t n = 0;
    pthread_mutex_lock(&v->mv->mu);
    for (uint32_t i = 0; i < v->rec.nreplicas; i++)
        if (v->rec.replicas[i].state == REPLICA_CURRENT &&
            v->rec.replicas[i].node != v->mirror->self)
            peers[n++] = v->rec.replicas[i].node;
    pthread_mutex_unlock(&v->mv->mu);
    return n;
}

/* Reads from the first current peer that answers. */
static int read_peer(struct volume *v, void *buf, uint32_t count, uint64_t offset)
{
    struct mirror *m = v->mirror;
    uint32_t peers[STORE_REPLICAS_MAX];
    size_t n = current_peers(v, peers);
    int r = -EIO;
    for (size_t i = 0; i < n; i++) {
        struct mlink_op op = {.peer = peers[i], .reply_buf = buf, .reply_max = count};
        mwire_init(&op.req, MW_READ, 0);
        op.req.volume = v->vid;
        op.req.offset = offset;
        op.req.length = count;
        mlink_call(m->link, &op, 1);
        if (op.result == 0 && op.reply_len == count)
            return 0;
        r = op.result < 0 ? op.result : -EIO;
    }
    if (n == 0)
        qb_log(LOG_WARNING, "volume \"%s\": no current replica to read from", v->rec.name);
    return r;
}

int mirror_read(struct volume *v, void *buf, uint32_t count, uint64_t offset)
{
    char *p = buf;
    while (count > 0) {
        uint32_t n = count < MWIRE_IO_MAX ? count : MWIRE_IO_MAX;
        int r = read_peer(v, p, n, offset);
        if (r < 0)
            return -EIO;
        p += n;
        count -= n;
        offset += n;
    }
    return 0;
}

/* ---- serving peers ---------------------------------------------------------- */

/* Whether this copy takes writes from peers (current or syncing, whole). */
static int accepts_writes(struct volume *v)
{
    enum replica_state s = replica_get(&v->rec, v->mirror->self);
    if (v->rec.local == STORE_LOCAL_FAILED)
        return -EIO;
    return s == REPLICA_CURRENT || s == REPLICA_SYNCING ? 0 : -ESTALE;
}

static bool in_bounds(struct volume *v, const struct mwire_header *h)
{
    return h->offset <= v->rec.size && h->length <= v->rec.size - h->offset;
}

static int apply_write(struct volume *v, struct mlink_call *c, uint64_t first, uint64_t last);

static int serve_write(struct volume *v, struct mlink_call *c)
{
    const struct mwire_header *h = c->req;
    if (!in_bounds(v, h))
        return -ENOSPC;
    struct mirror *m = v->mirror;
    uint64_t first = h->offset >> m->rs_shift,
             last = (h->offset + (h->length ? h->length - 1 : 0)) >> m->rs_shift;
    pthread_mutex_lock(&v->mv->mu);
    int r = accepts_writes(v);
    if (r == 0)
        r = mark_outdated_peers(v, first, last);
    pthread_mutex_unlock(&v->mv->mu);
    if (r < 0)
        return r;
    return apply_write(v, c, first, last);
}

/* Applies a peer's write here. */
static int apply_write(struct volume *v, struct mlink_call *c, uint64_t first, uint64_t last)
{
    const struct mwire_header *h = c->req;
    if (v->mirror->p.sync_received && mlink_reply(c, 0, NULL, 0) < 0)
        return 0;
    unsigned flags =
        (h->flags & MW_F_FUA ? NBD_IO_FUA : 0) | (h->flags & MW_F_MAY_TRIM ? NBD_IO_MAY_TRIM : 0);
    int r = h->type == MW_WRITE
                ? volume_local_write(v, c->payload, h->length, h->offset, flags & NBD_IO_FUA)
                : volume_local_zero(v, h->length, h->offset, flags);
    if (r == 0 && (h->flags & MW_F_RECONCILE)) {
        pthread_mutex_lock(&v->mv->mu);
        for (uint64_t i = first; i <= last; i++)
            lost_set(v, i, false);
        pthread_mutex_unlock(&v->mv->mu);
    }
    if (r < 0) {
        qb_log(LOG_ERR, "volume \"%s\": applying node %u's write: %s", v->rec.name, c->peer,
               strerror(-r));
        set_local_failed(v);
    }
    return r;
}

static int serve_read(struct volume *v, struct mlink_call *c)
{
    const struct mwire_header *h = c->req;
    void *buf = malloc(h->length ? h->length : 1);
    if (!buf)
        return -ENOMEM;
    int r = volume_local_read(v, buf, h->length, h->offset);
    if (r == 0)
        r = mlink_reply(c, 0, buf, h->length);
    free(buf);
    return r;
}

static int serve_csum(struct volume *v, struct mlink_call *c)
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
        r = volume_local_read(v, buf, n, h->offset + off);
        if (r == 0)
            sums[i] = mwire_csum64(buf, n);
    }
    if (r == 0)
        r = mlink_reply(c, 0, sums, size);
    free(buf);
    free(sums);
    return r;
}

/* A peer's read or checksum: only a current, whole copy answers, or a peer
 * would take stale data for the volume's. */
static int serve_from_copy(struct volume *v, struct mlink_call *c)
{
    if (!atomic_load(&v->mv->serve_local))
        return -ESTALE;
    if (!in_bounds(v, c->req))
        return -EINVAL;
    return c->req->type == MW_READ ? serve_read(v, c) : serve_csum(v, c);
}

/* A syncing peer asks what it missed: once this node has seen it syncing,
 * every write that left it out is in the bitmap. */
static int serve_dirty(struct volume *v, struct mlink_call *c)
{
    uint32_t node = c->req->arg;
    pthread_mutex_lock(&v->mv->mu);
    int r = replica_get(&v->rec, node) == REPLICA_SYNCING ? 0 : -EAGAIN;
    if (r == 0 && replica_get(&v->rec, v->mirror->self) != REPLICA_CURRENT)
        r = -ESTALE;
    void *buf = NULL;
    size_t len = 0;
    if (r == 0) {
        struct bitmap *b = dirty_for(v, node);
        r = b ? bitmap_export(b, &buf, &len) : -EIO;
    }
    pthread_mutex_unlock(&v->mv->mu);
    if (r == 0 && len > MWIRE_IO_MAX)
        r = -EFBIG;
    if (r == 0)
        r = mlink_reply(c, 0, buf, len);
    free(buf);
    return r;
}

static int serve_volume(struct volume *v, void *arg)
{
    struct mlink_call *c = arg;
    if (!v->mv)
        return -ESTALE;
    switch (c->req->type) {
    case MW_WRITE:
    case MW_ZERO:
        return serve_write(v, c);
    case MW_FLUSH:
        return volume_local_sync(v);
    case MW_READ:
    case MW_CSUM:
        return serve_from_copy(v, c);
    case MW_DIRTY:
        return serve_dirty(v, c);
    default:
        return -EOPNOTSUPP;
    }
}

static int serve(void *ctx, struct mlink_call *c)
{
    struct mirror *m = ctx;
    int r = volumes_with(m->p.vols, c->req->volume, serve_volume, c);
    return r == -ENOENT ? -ESTALE : r;
}

/* ---- the agreed table ------------------------------------------------------ */

int mirror_replica_request(struct volume *v, uint32_t from, uint32_t node, uint8_t state,
                           uint64_t first, uint64_t last)
{
    pthread_mutex_lock(&v->mv->mu);
    bool refused =
        state == REPLICA_OUTDATED && from != node && replica_get(&v->rec, from) != REPLICA_CURRENT;
    pthread_mutex_unlock(&v->mv->mu);
    if (refused) {
        qb_log(LOG_WARNING,
               "volume \"%s\": node %u may not outdate node %u: its copy is not current",
               v->rec.name, from, node);
        return 0;
    }
    return mirror_replica_apply(v, node, state, first, last);
}

int mirror_replica_apply(struct volume *v, uint32_t node, uint8_t state, uint64_t first,
                         uint64_t last)
{
    struct mirror *m = v->mirror;
    pthread_mutex_lock(&v->mv->mu);
    bool changed = replica_apply(&v->rec, node, state);
    enum replica_state self = replica_get(&v->rec, m->self);
    int r = 0;
    if (first <= last && node != m->self && (self == REPLICA_CURRENT || self == REPLICA_SYNCING))
        r = mark_dirty(v, node, first, last);
    if (changed && state == REPLICA_CURRENT)
        dirty_drop(v, node);
    if (changed) {
        update_serve_local(v);
        if (volume_update_record(v) < 0)
            r = -EIO;
        qb_log(LOG_INFO, "volume \"%s\": replica on node %u is %s", v->rec.name, node,
               replica_state_name(state));
    }
    pthread_mutex_unlock(&v->mv->mu);
    return r < 0 ? r : changed;
}

void mirror_replicas_copy(struct volume *v, struct store_replica *out, uint32_t *n)
{
    pthread_mutex_lock(&v->mv->mu);
    *n = v->rec.nreplicas;
    memcpy(out, v->rec.replicas, sizeof v->rec.replicas);
    pthread_mutex_unlock(&v->mv->mu);
}

int mirror_replicas_load(struct volume *v, const struct store_replica *r, uint32_t n)
{
    struct mirror *m = v->mirror;
    pthread_mutex_lock(&v->mv->mu);
    bool same = n == v->rec.nreplicas && memcmp(r, v->rec.replicas, n * sizeof *r) == 0;
    int e = 0;
    if (!same) {
        v->rec.nreplicas = n < STORE_REPLICAS_MAX ? n : STORE_REPLICAS_MAX;
        memcpy(v->rec.replicas, r, v->rec.nreplicas * sizeof *r);
        for (uint32_t i = 0; i < v->rec.nreplicas; i++) {
            uint32_t node = v->rec.replicas[i].node;
            if (node == m->self)
                continue;
            if (v->rec.replicas[i].state == REPLICA_OUTDATED)
                dirty_for(v, node);
            else if (v->rec.replicas[i].state == REPLICA_CURRENT)
                dirty_drop(v, node);
        }
        update_serve_local(v);
        e = volume_update_record(v);
    }
    pthread_mutex_unlock(&v->mv->mu);
    return e;
}

int mirror_node_left(struct volume *v, uint32_t node, const struct pol_key *lost, size_t nlost)
{
    mlink_drop(v->mirror->link, node);
    int changed = mirror_replica_apply(v, node, REPLICA_OUTDATED, 1, 0);
    pthread_mutex_lock(&v->mv->mu);
    enum replica_state self = replica_get(&v->rec, v->mirror->self);
    bool holds = self == REPLICA_CURRENT || self == REPLICA_SYNCING;
    for (size_t i = 0; holds && i < nlost; i++) {
        if (lost[i].volume != v->vid)
            continue;
        lost_set(v, lost[i].region, true);
        if (replica_get(&v->rec, node) == REPLICA_OUTDATED)
            mark_dirty(v, node, lost[i].region, lost[i].region);
    }
    consider_reconcile(v);
    pthread_mutex_unlock(&v->mv->mu);
    return changed;
}

/* ---- resync ------------------------------------------------------------------ */

static bool still_syncing(struct volume *v)
{
    pthread_mutex_lock(&v->mv->mu);
    bool ok = replica_get(&v->rec, v->mirror->self) == REPLICA_SYNCING &&
              v->rec.local != STORE_LOCAL_FAILED && !atomic_load(&v->gone);
    pthread_mutex_unlock(&v->mv->mu);
    return ok && !atomic_load(&v->mirror->stopping);
}

/* The union of the current peers' bitmaps for this node, into set. */
/* Adds the regions this node wrote while its peers may have missed them
 * (settle_write) to set. */
static int own_dirty(struct volume *v, uint64_t *set, size_t words)
{
    struct mvol *mv = v->mv;
    int r = 0;
    pthread_mutex_lock(&mv->mu);
    for (size_t i = 0; i < mv->ndirty; i++) {
        if (mv->dirty_node[i] != v->mirror->self)
            continue;
        void *buf;
        size_t len;
        r = bitmap_export(mv->dirty[i], &buf, &len);
        for (size_t w = 0; r == 0 && w < len / 8 && w < words; w++)
            set[w] |= ((uint64_t *)buf)[w];
        if (r == 0)
            free(buf);
    }
    pthread_mutex_unlock(&mv->mu);
    return r;
}

static int fetch_dirty(struct volume *v, uint64_t *set, size_t words)
{
    struct mirror *m = v->mirror;
    uint32_t peers[STORE_REPLICAS_MAX];
    size_t n = current_peers(v, peers);
    if (n == 0)
        return -ENOTCONN;
    uint64_t *buf = malloc(words * 8 + 8);
    if (!buf)
        return -ENOMEM;
    int r = 0;
    for (size_t i = 0; r == 0 && i < n; i++) {
        struct mlink_op op = {.peer = peers[i], .reply_buf = buf, .reply_max = words * 8};
        for (int tries = 0; tries < 500 && still_syncing(v); tries++) {
            mwire_init(&op.req, MW_DIRTY, 0);
            op.req.volume = v->vid;
            op.req.arg = m->self;
            mlink_call(m->link, &op, 1);
            if (op.result != -EAGAIN)
                break;
            poll(NULL, 0, 20);
        }
        r = op.result;
        for (size_t w = 0; r == 0 && w < op.reply_len / 8 && w < words; w++)
            set[w] |= buf[w];
    }
    free(buf);
    return r < 0 ? r : own_dirty(v, set, words);
}

static void throttle(struct volume *v)
{
    uint64_t rate = v->mirror->p.resync_rate;
    if (rate == 0)
        return;
    double ahead = (double)atomic_load(&v->mv->resync_done) / (double)rate -
                   seconds_since(&v->mv->resync_started);
    if (ahead > 0.001)
        poll(NULL, 0, (int)(ahead * 1000));
}

/* Copies region r from a current peer, holding its write priority and
 * keeping this node's own writes to it out meanwhile. */
static int copy_region(struct volume *v, uint64_t r, void *buf)
{
    struct mirror *m = v->mirror;
    uint64_t off = r << m->rs_shift;
    uint64_t len = v->rec.size - off < m->rs ? v->rec.size - off : m->rs;
    struct pol_write w;
    int e = policing_write_begin(v->pc, v->vid, off, len, false, &w);
    if (e < 0)
        return e;
    struct inflight x;
    range_lock(v->mv, &x, off, len, true);
    pthread_mutex_lock(&v->mv->mu);
    bool lost = lost_test(v->mv, r);
    pthread_mutex_unlock(&v->mv->mu);
    if (lost)
        e = reconcile_region(v, r); /* the current copies first agree */
    for (uint64_t done = 0; e == 0 && done < len;) {
        uint32_t n = len - done < COPY_CHUNK ? (uint32_t)(len - done) : COPY_CHUNK;
        e = read_peer(v, buf, n, off + done);
        if (e == 0)
            e = volume_local_write(v, buf, n, off + done, false);
        done += n;
        if (e == 0)
            atomic_fetch_add(&v->mv->resync_done, n);
    }
    range_unlock(v->mv, &x);
    policing_write_end(v->pc, &w);
    return e;
}

static uint64_t popcount_words(const uint64_t *set, size_t words)
{
    uint64_t n = 0;
    for (size_t i = 0; i < words; i++)
        n += (uint64_t)__builtin_popcountll(set[i]);
    return n;
}

/* Whether every current peer is linked: a syncing replica must get every
 * write, so it asks to be one only when they can all reach it. */
static bool linked_to_current(struct volume *v)
{
    struct mirror *m = v->mirror;
    uint32_t peers[STORE_REPLICAS_MAX];
    size_t n = current_peers(v, peers);
    for (size_t i = 0; i < n; i++)
        if (!mlink_wait_connected(m->link, peers[i], 2000))
            return false;
    return n > 0;
}

/* One attempt: syncing, the dirty set, the copy, current. */
static int resync_once(struct volume *v)
{
    struct mirror *m = v->mirror;
    pthread_mutex_lock(&v->mv->mu);
    enum replica_state s = replica_get(&v->rec, m->self);
    bool full = s == REPLICA_NONE || v->rec.local == STORE_LOCAL_REBUILD;
    uint64_t size = v->rec.size;
    pthread_mutex_unlock(&v->mv->mu);
    if (s != REPLICA_SYNCING && !linked_to_current(v))
        return -ENOTCONN;
    int r = 0;
    if (s != REPLICA_SYNCING)
        r = policing_replica_change(v->pc, v->vid, m->self, REPLICA_SYNCING, 1, 0, true);
    if (r == 0 && !still_syncing(v))
        r = -EAGAIN;
    uint64_t nr = nregions(m, size);
    size_t words = (size_t)((nr + 63) / 64);
    uint64_t *set = calloc(words ? words : 1, 8);
    void *buf = malloc(COPY_CHUNK);
    if (r == 0 && (!set || !buf))
        r = -ENOMEM;
    if (r == 0 && full)
        memset(set, 0xff, words * 8);
    else if (r == 0)
        r = fetch_dirty(v, set, words);
    if (r == 0 && nr % 64)
        set[words - 1] &= (UINT64_C(1) << (nr % 64)) - 1;
    uint64_t count = r == 0 ? popcount_words(set, words) : 0;
    atomic_store(&v->mv->resync_total, count << m->rs_shift);
    atomic_store(&v->mv->resync_done, 0);
    clock_gettime(CLOCK_MONOTONIC, &v->mv->resync_started);
    if (r == 0)
        qb_log(LOG_INFO, "volume \"%s\": resync: %llu of %llu regions to copy%s", v->rec.name,
               (unsigned long long)count, (unsigned long long)nr, full ? " (full rebuild)" : "");
    for (uint64_t i = 0; r == 0 && i < nr; i++) {
        if (!(set[i / 64] & (UINT64_C(1) << (i % 64))))
            continue;
        if (!still_syncing(v))
            r = -ECANCELED;
        if (r == 0)
            r = copy_region(v, i, buf);
        throttle(v);
    }
    free(set);
    free(buf);
    if (r == 0)
        r = volume_local_sync(v);
    if (r == 0 && full) {
        pthread_mutex_lock(&v->mv->mu);
        v->rec.local = STORE_LOCAL_OK;
        r = volume_update_record(v);
        pthread_mutex_unlock(&v->mv->mu);
    }
    if (r == 0)
        r = policing_replica_change(v->pc, v->vid, m->self, REPLICA_CURRENT, 1, 0, true);
    if (r == 0)
        qb_log(LOG_INFO, "volume \"%s\": resync done: %llu bytes copied in %.1f s", v->rec.name,
               (unsigned long long)atomic_load(&v->mv->resync_done),
               seconds_since(&v->mv->resync_started));
    return r;
}

/* Whether this node's copy needs a resync it can do now. */
static bool wants_resync(struct volume *v)
{
    enum replica_state s = replica_get(&v->rec, v->mirror->self);
    return v->rec.local != STORE_LOCAL_FAILED && s != REPLICA_CURRENT && !atomic_load(&v->gone);
}

static void *resync_main(void *arg)
{
    struct volume *v = arg;
    for (unsigned backoff = 100; !atomic_load(&v->mirror->stopping);) {
        pthread_mutex_lock(&v->mv->mu);
        bool want = wants_resync(v);
        pthread_mutex_unlock(&v->mv->mu);
        if (!want || !policing_quorate(v->pc))
            break;
        int r = resync_once(v);
        if (r == 0)
            continue;
        qb_log(LOG_WARNING, "volume \"%s\": resync stopped (%s): trying again", v->rec.name,
               strerror(-r));
        poll(NULL, 0, (int)backoff);
        backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
    }
    pthread_mutex_lock(&v->mv->mu);
    v->mv->resyncing = false;
    pthread_mutex_unlock(&v->mv->mu);
    return NULL;
}

static void consider_resync(struct volume *v, void *arg)
{
    (void)arg;
    struct mvol *mv = v->mv;
    if (!mv)
        return;
    pthread_mutex_lock(&mv->mu);
    consider_reconcile(v);
    if (!mv->resyncing && wants_resync(v)) {
        if (mv->resync_thread) {
            pthread_mutex_unlock(&mv->mu);
            pthread_join(mv->resync_thread, NULL);
            pthread_mutex_lock(&mv->mu);
            mv->resync_thread = 0;
        }
        mv->resyncing = pthread_create(&mv->resync_thread, NULL, resync_main, v) == 0;
        if (!mv->resyncing) {
            mv->resync_thread = 0;
            qb_log(LOG_ERR, "volume \"%s\": can't start its resync thread", v->rec.name);
        }
    }
    pthread_mutex_unlock(&mv->mu);
}

static void refresh_peers(struct mirror *m)
{
    struct policing_status *st = malloc(sizeof *st);
    if (!st)
        return;
    policing_status(m->p.pc, st);
    struct mlink_peer peers[CLUSTER_NODES_MAX];
    size_t n = 0;
    for (size_t i = 0; i < st->nmembers; i++) {
        if (st->members[i].nodeid == m->self || st->members[i].mirror[0] == '\0')
            continue;
        peers[n].node = st->members[i].nodeid;
        snprintf(peers[n].addr, sizeof peers[n].addr, "%s", st->members[i].mirror);
        n++;
    }
    bool ready = st->synced && st->quorate;
    free(st);
    mlink_set_peers(m->link, peers, n);
    if (ready)
        volumes_each(m->p.vols, consider_resync, NULL);
}

void mirror_changed(struct mirror *m)
{
    if (m)
        refresh_peers(m);
}

/* ---- admin --------------------------------------------------------------------- */

int mirror_replica_fail(struct volume *v)
{
    pthread_mutex_lock(&v->mv->mu);
    v->rec.local = STORE_LOCAL_FAILED;
    update_serve_local(v);
    int r = volume_update_record(v);
    bool outdate = replica_get(&v->rec, v->mirror->self) != REPLICA_OUTDATED;
    pthread_mutex_unlock(&v->mv->mu);
    qb_log(LOG_WARNING, "volume \"%s\": local replica marked failed by the admin", v->rec.name);
    if (r == 0 && outdate)
        r = policing_replica_change(v->pc, v->vid, v->mirror->self, REPLICA_OUTDATED, 1, 0, false);
    return r;
}

int mirror_replica_replace(struct volume *v)
{
    pthread_mutex_lock(&v->mv->mu);
    v->rec.local = STORE_LOCAL_REBUILD;
    update_serve_local(v);
    int r = volume_update_record(v);
    enum replica_state s = replica_get(&v->rec, v->mirror->self);
    pthread_mutex_unlock(&v->mv->mu);
    if (r == 0)
        r = volume_local_wipe(v);
    qb_log(LOG_WARNING, "volume \"%s\": local replica replaced: rebuilding it from the peers",
           v->rec.name);
    if (r == 0 && s == REPLICA_CURRENT)
        r = policing_replica_change(v->pc, v->vid, v->mirror->self, REPLICA_OUTDATED, 1, 0, false);
    else if (r == 0)
        consider_resync(v, NULL);
    return r;
}

void mirror_volume_status(struct volume *v, struct mirror_volume_status *st)
{
    struct mvol *mv = v->mv;
    *st = (struct mirror_volume_status){0};
    pthread_mutex_lock(&mv->mu);
    st->nreplicas = v->rec.nreplicas;
    for (uint32_t i = 0; i < v->rec.nreplicas; i++) {
        st->replicas[i].node = v->rec.replicas[i].node;
        st->replicas[i].state = v->rec.replicas[i].state;
        for (size_t j = 0; j < mv->ndirty; j++)
            if (mv->dirty_node[j] == v->rec.replicas[i].node)
                st->replicas[i].dirty_bytes = bitmap_count(mv->dirty[j]) << v->mirror->rs_shift;
    }
    st->local = local_name(v->rec.local);
    st->resyncing = mv->resyncing;
    pthread_mutex_unlock(&mv->mu);
    st->resync_done = atomic_load(&mv->resync_done);
    st->resync_total = atomic_load(&mv->resync_total);
    double t = st->resyncing ? seconds_since(&mv->resync_started) : 0;
    st->resync_rate = t > 0 ? (double)st->resync_done / t : 0;
}

/* ---- verify ------------------------------------------------------------------- */

struct verify {
    struct volume *v;
    mirror_verify_fn done;
    void *arg;
};

/* Compares region r's checksums on this node and every current peer. */
/* Whether the current peers' CRC-64s of region r differ from this node's;
 * the caller holds the region's priority and range. */
static int region_differs(struct volume *v, uint64_t r, uint32_t *peers, size_t n, bool *differs)
{
    struct mirror *m = v->mirror;
    uint64_t off = r << m->rs_shift;
    uint32_t len = (uint32_t)(v->rec.size - off < m->rs ? v->rec.size - off : m->rs);
    uint32_t size = mwire_csum_reply_size(len);
    struct mlink_op ops[STORE_REPLICAS_MAX];
    uint64_t *sums = calloc(n + 1, size);
    int e = sums ? 0 : -ENOMEM;
    for (size_t i = 0; e == 0 && i < n; i++) {
        ops[i] = (struct mlink_op){
            .peer = peers[i], .reply_buf = (char *)sums + (i + 1) * size, .reply_max = size};
        mwire_init(&ops[i].req, MW_CSUM, 0);
        ops[i].req.volume = v->vid;
        ops[i].req.offset = off;
        ops[i].req.length = len;
    }
    if (e == 0)
        mlink_call(m->link, ops, n);
    void *buf = e == 0 ? malloc(MWIRE_CSUM_CHUNK) : NULL;
    for (uint32_t c = 0; e == 0 && buf && c < size / 8; c++) {
        uint32_t k = len - c * MWIRE_CSUM_CHUNK < MWIRE_CSUM_CHUNK ? len - c * MWIRE_CSUM_CHUNK
                                                                   : MWIRE_CSUM_CHUNK;
        e = volume_local_read(v, buf, k, off + (uint64_t)c * MWIRE_CSUM_CHUNK);
        if (e == 0)
            sums[c] = mwire_csum64(buf, k);
    }
    free(buf);
    for (size_t i = 0; e == 0 && i < n; i++) {
        if (ops[i].result < 0)
            e = ops[i].result;
        else if (memcmp(sums, (char *)sums + (i + 1) * size, size) != 0)
            *differs = true;
    }
    free(sums);
    return e;
}

static int verify_region(struct volume *v, uint64_t r, uint32_t *peers, size_t n, bool *differs)
{
    struct mirror *m = v->mirror;
    uint64_t off = r << m->rs_shift;
    uint32_t len = (uint32_t)(v->rec.size - off < m->rs ? v->rec.size - off : m->rs);
    struct pol_write w;
    int e = policing_write_begin(v->pc, v->vid, off, len, false, &w);
    if (e < 0)
        return e;
    struct inflight x;
    range_lock(v->mv, &x, off, len, true);
    e = region_differs(v, r, peers, n, differs);
    range_unlock(v->mv, &x);
    policing_write_end(v->pc, &w);
    return e;
}

static void *verify_main(void *arg)
{
    struct verify *vf = arg;
    struct volume *v = vf->v;
    struct mirror *m = v->mirror;
    uint32_t peers[STORE_REPLICAS_MAX];
    size_t n = current_peers(v, peers);
    bool local = atomic_load(&v->mv->serve_local);
    uint64_t nr = nregions(m, v->rec.size), ndiff = 0;
    uint64_t list[VERIFY_LIST_MAX];
    int e = local ? 0 : -ESTALE;
    for (uint64_t r = 0; e == 0 && r < nr; r++) {
        bool differs = false;
        e = verify_region(v, r, peers, n, &differs);
        if (differs && ndiff < VERIFY_LIST_MAX)
            list[ndiff] = r;
        ndiff += differs;
    }
    vf->done(vf->arg, e, list, ndiff < VERIFY_LIST_MAX ? ndiff : VERIFY_LIST_MAX, ndiff, nr);
    volume_unref(v);
    free(vf);
    atomic_fetch_sub(&m->verifies, 1);
    return NULL;
}

int mirror_verify(struct volume *v, mirror_verify_fn done, void *arg)
{
    struct verify *vf = malloc(sizeof *vf);
    if (!vf)
        return -ENOMEM;
    *vf = (struct verify){v, done, arg};
    volume_ref(v);
    atomic_fetch_add(&v->mirror->verifies, 1);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int r = -pthread_create(&t, &attr, verify_main, vf);
    pthread_attr_destroy(&attr);
    if (r < 0) {
        atomic_fetch_sub(&v->mirror->verifies, 1);
        volume_unref(v);
        free(vf);
    }
    return r;
}

/* ---- regions a departed writer may have left unequal --------------------------
 *
 * A node that dies while it holds a region's write priority may have sent a
 * write to some replicas and not to others. The agreed leave names the
 * regions it held (POL_LOST); every survivor marks them lost at the same
 * point of the agreed order, and from then on no write to one starts before
 * the holder of its priority has made every current replica equal: it
 * compares the region's CRC-64s and, if they differ (or this copy is not
 * current), copies the region from a current copy to every copy, flagged
 * MW_F_RECONCILE; a region found equal gets its first 4 KiB so flagged.
 * Whoever applies such a write clears the mark. The write in doubt was never
 * acknowledged, so either version is right; a client that resends it writes
 * over a region that is equal everywhere. The departed node's connections
 * are dropped when its leave is applied (mlink_drop), so none of its
 * writes still queued on a link lands after the compare. If the reconciling node dies too, it held
 * the priority, so the region is lost again and the next holder starts
 * over. One survivor (the current replica with the lowest id) also works
 * through the marks in the background. The marks are kept in memory only: a
 * whole cluster restarted before they are cleared forgets them, and `vsan
 * volume verify` then shows what differs.
 */

static bool lost_test(const struct mvol *mv, uint64_t r)
{
    return mv->lost && (mv->lost[r / 64] >> (r % 64)) & 1;
}

/* With mu held: marks or clears region r. */
static void lost_set(struct volume *v, uint64_t r, bool on)
{
    struct mvol *mv = v->mv;
    uint64_t n = nregions(v->mirror, v->rec.size);
    if (r >= n || lost_test(mv, r) == on)
        return;
    if (!mv->lost && !(mv->lost = calloc((n + 63) / 64, sizeof *mv->lost))) {
        qb_log(LOG_ERR, "volume \"%s\": region %llu: no memory to mark it lost", v->rec.name,
               (unsigned long long)r);
        return;
    }
    mv->lost[r / 64] ^= UINT64_C(1) << (r % 64);
    if (on)
        atomic_fetch_add(&mv->nlost, 1);
    else
        atomic_fetch_sub(&mv->nlost, 1);
}

/* The first lost region among first..last, or UINT64_MAX. */
static uint64_t lost_first(struct volume *v, uint64_t first, uint64_t last)
{
    if (atomic_load(&v->mv->nlost) == 0)
        return UINT64_MAX;
    uint64_t found = UINT64_MAX;
    pthread_mutex_lock(&v->mv->mu);
    for (uint64_t r = first; r <= last && found == UINT64_MAX; r++)
        if (lost_test(v->mv, r))
            found = r;
    pthread_mutex_unlock(&v->mv->mu);
    return found;
}

/* Writes len bytes at off, read from this copy or else a current peer, to
 * every copy with MW_F_RECONCILE. */
static int reconcile_copy(struct volume *v, uint64_t off, uint64_t len, void *buf)
{
    int e = 0;
    for (uint64_t done = 0; e == 0 && done < len;) {
        uint32_t n = len - done < COPY_CHUNK ? (uint32_t)(len - done) : COPY_CHUNK;
        e = atomic_load(&v->mv->serve_local) ? volume_local_read(v, buf, n, off + done)
                                             : read_peer(v, buf, n, off + done);
        if (e == 0) {
            struct rwrite w;
            rwrite_init(&w, v, n, off + done);
            w.wire_flags = MW_F_RECONCILE;
            start_write(&w, MW_WRITE, buf, n, off + done, 0, local_write, NULL);
            mlink_wait(&w.w);
            e = settle_write(&w);
        }
        done += n;
    }
    return e;
}

/* Makes region r equal on every copy; the caller holds its priority and
 * its whole range. */
static int reconcile_region(struct volume *v, uint64_t r)
{
    struct mirror *m = v->mirror;
    uint64_t off = r << m->rs_shift;
    uint64_t len = v->rec.size - off < m->rs ? v->rec.size - off : m->rs;
    uint32_t peers[STORE_REPLICAS_MAX];
    size_t n = current_peers(v, peers);
    bool differs = !atomic_load(&v->mv->serve_local);
    int e = differs || n == 0 ? 0 : region_differs(v, r, peers, n, &differs);
    void *buf = e == 0 ? malloc(COPY_CHUNK) : NULL;
    if (e == 0 && !buf)
        e = -ENOMEM;
    if (e == 0)
        e = reconcile_copy(v, off, differs ? len : (len < 4096 ? len : 4096), buf);
    free(buf);
    if (e < 0) {
        qb_log(LOG_WARNING, "volume \"%s\": region %llu: reconciling after its writer left: %s",
               v->rec.name, (unsigned long long)r, strerror(-e));
        return e;
    }
    pthread_mutex_lock(&v->mv->mu);
    lost_set(v, r, false);
    pthread_mutex_unlock(&v->mv->mu);
    qb_log(LOG_INFO, "volume \"%s\": region %llu: reconciled after its writer left (%s)",
           v->rec.name, (unsigned long long)r, differs ? "copies differed" : "copies were equal");
    return 0;
}

/* Reconciles the lost regions among first..last, each under its whole
 * range; the caller holds their priority and no range of them. */
static int reconcile_lost(struct volume *v, uint64_t first, uint64_t last)
{
    struct mirror *m = v->mirror;
    for (uint64_t r; (r = lost_first(v, first, last)) != UINT64_MAX; first = r + 1) {
        struct inflight x;
        uint64_t off = r << m->rs_shift;
        range_lock(v->mv, &x, off, v->rec.size - off < m->rs ? v->rec.size - off : m->rs, true);
        pthread_mutex_lock(&v->mv->mu);
        bool still = lost_test(v->mv, r);
        pthread_mutex_unlock(&v->mv->mu);
        int e = still ? reconcile_region(v, r) : 0;
        range_unlock(v->mv, &x);
        if (e < 0)
            return e;
    }
    return 0;
}

/* The background pass of the chosen survivor: every lost region, each
 * under its priority. */
static void *reconcile_main(void *arg)
{
    struct volume *v = arg;
    struct mirror *m = v->mirror;
    uint64_t r, next = 0;
    while (!atomic_load(&m->stopping) &&
           (r = lost_first(v, next, nregions(m, v->rec.size) - 1)) != UINT64_MAX) {
        uint64_t off = r << m->rs_shift;
        struct pol_write w;
        int e = policing_write_begin(v->pc, v->vid, off, 1, false, &w);
        if (e == 0) {
            e = reconcile_lost(v, r, r);
            policing_write_end(v->pc, &w);
        }
        if (e < 0)
            break; /* the writers reconcile what is left, or the next survivor */
        next = r + 1;
    }
    pthread_mutex_lock(&v->mv->mu);
    v->mv->reconciling = false;
    pthread_mutex_unlock(&v->mv->mu);
    return NULL;
}

/* With mu held: starts the background pass here if this node is the
 * current replica with the lowest id. */
static void consider_reconcile(struct volume *v)
{
    struct mvol *mv = v->mv;
    uint32_t lowest = UINT32_MAX;
    for (uint32_t i = 0; i < v->rec.nreplicas; i++)
        if (v->rec.replicas[i].state == REPLICA_CURRENT && v->rec.replicas[i].node < lowest)
            lowest = v->rec.replicas[i].node;
    if (lowest != v->mirror->self || mv->reconciling || atomic_load(&mv->nlost) == 0 ||
        atomic_load(&v->mirror->stopping))
        return;
    if (mv->reconcile_thread)
        pthread_join(mv->reconcile_thread, NULL);
    mv->reconcile_thread = 0;
    mv->reconciling = pthread_create(&mv->reconcile_thread, NULL, reconcile_main, v) == 0;
    if (!mv->reconciling) {
        mv->reconcile_thread = 0;
        qb_log(LOG_ERR, "volume \"%s\": can't start its reconcile thread", v->rec.name);
    }
}

/* ---- life cycle ---------------------------------------------------------------- */

int mirror_volume_attach(struct mirror *m, struct volume *v)
{
    struct mvol *mv = calloc(1, sizeof *mv);
    if (!mv)
        return -ENOMEM;
    mv->m = m;
    pthread_mutex_init(&mv->mu, NULL);
    pthread_mutex_init(&mv->rmu, NULL);
    pthread_cond_init(&mv->rcv, NULL);
    v->mirror = m;
    v->mv = mv;
    pthread_mutex_lock(&mv->mu);
    if (v->rec.nreplicas == 0) {
        replica_init(&v->rec, &m->self, 1);
        volume_update_record(v);
    }
    for (uint32_t i = 0; i < v->rec.nreplicas; i++)
        if (v->rec.replicas[i].state == REPLICA_OUTDATED && v->rec.replicas[i].node != m->self)
            dirty_for(v, v->rec.replicas[i].node);
    update_serve_local(v);
    pthread_mutex_unlock(&mv->mu);
    return 0;
}

/* Joins v's resync and reconcile threads (they end once stopping is set). */
static void join_workers(struct volume *v, void *arg)
{
    (void)arg;
    struct mvol *mv = v->mv;
    if (!mv)
        return;
    pthread_mutex_lock(&mv->mu);
    pthread_t t[2] = {mv->resync_thread, mv->reconcile_thread};
    mv->resync_thread = mv->reconcile_thread = 0;
    pthread_mutex_unlock(&mv->mu);
    for (int i = 0; i < 2; i++)
        if (t[i])
            pthread_join(t[i], NULL);
}

void mirror_volume_detach(struct volume *v)
{
    struct mvol *mv = v->mv;
    if (!mv)
        return;
    join_workers(v, NULL);
    for (size_t i = 0; i < mv->ndirty; i++)
        bitmap_close(mv->dirty[i]);
    free(mv->lost);
    pthread_cond_destroy(&mv->rcv);
    pthread_mutex_destroy(&mv->rmu);
    pthread_mutex_destroy(&mv->mu);
    free(mv);
    v->mv = NULL;
}

static void attach_one(struct volume *v, void *arg)
{
    if (!v->mv && mirror_volume_attach(arg, v) < 0)
        qb_log(LOG_ERR, "volume \"%s\": out of memory for its replication state", v->rec.name);
}

int mirror_start(const struct mirror_params *p, struct mirror **out)
{
    struct mirror *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->p = *p;
    m->secret = *p->secret;
    snprintf(m->cluster, sizeof m->cluster, "%s", p->cluster);
    m->p.secret = &m->secret;
    m->p.cluster = m->cluster;
    m->self = policing_self(p->pc);
    m->rs = policing_region_size(p->pc);
    m->rs_shift = (unsigned)__builtin_ctzll(m->rs);
    atomic_init(&m->stopping, false);
    atomic_init(&m->verifies, 0);
    struct mlink_params lp = {
        .listen = p->listen,
        .cluster = m->cluster,
        .self = m->self,
        .secret = &m->secret,
        .timeout_ms = p->timeout_ms,
        .serve = serve,
        .ctx = m,
        .batch_begin = nbd_replies_hold,
        .batch_end = nbd_replies_flush,
    };
    int r = mlink_start(&lp, &m->link);
    if (r < 0) {
        free(m);
        return r;
    }
    volumes_each(p->vols, attach_one, m);
    *out = m;
    return 0;
}

/* Resyncs and verifies end at their next step once stopping is set, or
 * when their request to a peer fails or times out; the link goes last. */
void mirror_stop(struct mirror *m)
{
    if (!m)
        return;
    atomic_store(&m->stopping, true);
    volumes_each(m->p.vols, join_workers, NULL);
    while (atomic_load(&m->verifies) > 0)
        poll(NULL, 0, 10);
    mlink_stop(m->link);
    free(m);
}

void mirror_stats(struct mirror *m, struct mirror_stats *st)
{
    struct mlink_stats ls;
    mlink_stats(m->link, &ls);
    *st = (struct mirror_stats){ls.requests_sent, ls.requests_served, ls.refused};
}
