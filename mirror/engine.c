/* engine.c - the mirror engine (see engine.h for the design).
 *
 * Per volume it keeps (struct mvol): the dirty bitmaps this node records
 * for outdated peers, the writes in flight from this node (so overlapping
 * ones go one after the other), and the state of this replica's resync.
 */
#include "mirror/engine.h"
#include "common/clock.h"

#include "mirror/link.h"
#include "store/actlog.h"
#include "store/bitmap.h"
#include "mirror/replicas.h"
#include "policing/protocol.h"
#include "store/store.h"
#include "store/svol.h"

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
/* Regions an activity log call covers with keys on the stack (a write of
 * 32 MiB in 4 MiB regions touches 9; at most MWIRE_IO_MAX / region size
 * + 1, 513 with 64 KiB regions): more go in a buffer of their own. */
#define LOG_STACK 16
/* A write finding the log full of regions not reconciled yet waits for
 * them this many times 100 ms, then fails. */
#define LOG_WAIT_STEPS 600
/* The background reconcile on a current copy that is not the lowest id
 * starts this much after the lowest's. */
#define RECONCILE_LATER_MS 10000

/* Worker threads, a fixed number whatever the number of volumes: resyncs
 * and background reconciles queue for them (a node rejoining a cluster of
 * 4,000 volumes must not start 4,000 threads). */
#define WORKERS 4
/* Verifies run on threads of their own (an admin waits for each), at most
 * this many at once. */
#define VERIFIES_MAX 2

/* A resync or reconcile waiting for a worker; holds a reference to v. */
struct job {
    void (*fn)(struct mvol *v);
    struct mvol *v;
    struct timespec due; /* not run before (a retry's pause holds no worker) */
    struct job *next;
};

struct rwrite;

/* Locking: reg guards the registry (vols, nvols, cap): lookups by the
 * link's serving threads share it, attach and detach take it exclusively.
 * qmu guards both queues: the workers wait on jcv for jobs, the settler
 * on scv for failed writes (one condition each, so a wake-up meant for one
 * never goes to the other). */
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
    pthread_rwlock_t reg;
    struct mvol **vols; /* attached volumes, sorted by vid */
    size_t nvols, cap;
    pthread_mutex_t qmu;
    pthread_cond_t jcv, scv;
    struct job *jobs, **jobs_tail;
    struct rwrite *settles, **settles_tail; /* failed asynchronous writes, oldest first */
    pthread_t workers[WORKERS], settler;
    size_t nworkers;
    bool settler_started;
    struct actlog *al;       /* NULL: no activity log */
    size_t al_max;           /* its room at start: the entries it holds */
    pthread_mutex_t ckpt_mu; /* one checkpoint at a time */
    atomic_bool ckpt_queued; /* a background checkpoint is queued */
};

/* A write in flight from this node, in its volume's list. */
struct inflight {
    uint64_t start, end;
    struct inflight *next;
};

/* One volume's replication state.
 *
 * Locking: mu guards rec (the engine's view of the replica set and local
 * state, committed to the store's record through svol_set_state under
 * mu, so commits are in order), the bitmaps, lost and the resync fields
 * that are not atomic; it is held across a bitmap's sync, so a bitmap is
 * never closed under a writer. rmu guards the list of writes in flight;
 * rcv is broadcast when one ends. size is rec.size for lock-free reads;
 * it changes only in mirror_volume_resize, under mu.
 *
 * Life: the volume layer holds one reference, the registry another, every
 * queued or running job and every peer request being served one more. The
 * last one closes the bitmaps and lets go of the svol; nothing ever joins
 * a thread to free a volume. */
struct mvol {
    struct mirror *m;
    struct svol *sv;
    struct policing *pc;
    uint32_t vid;
    const char *name; /* svol_name(sv), immutable */
    atomic_uint refs;
    atomic_bool gone; /* detached: deleted, or the node stops */
    _Atomic uint64_t size;
    pthread_mutex_t mu;
    struct store_volume rec;
    struct bitmap *dirty[STORE_REPLICAS_MAX];
    uint32_t dirty_node[STORE_REPLICAS_MAX];
    size_t ndirty;
    atomic_bool serve_local; /* this copy is current and whole */
    pthread_mutex_t rmu;
    pthread_cond_t rcv;
    struct inflight *inflight;
    bool resyncing;          /* queued or running */
    unsigned resync_backoff; /* ms before the next attempt after a failed one */
    atomic_uint_fast64_t resync_done, resync_total;
    struct timespec resync_started;
    /* Regions a departed writer may have left unequal (see reconcile
     * below): a bit each for nregions(size), guarded by mu; nlost counts
     * them, so the write path looks no further while it is 0. */
    uint64_t *lost;
    uint64_t lost_nbits; /* regions lost covers (0 until the first loss) */
    atomic_uint_fast64_t nlost;
    bool reconciling; /* queued or running */
    /* How many outdates of each node this node applied (guarded by mu):
     * a write settling a failed peer asks whether its own was applied,
     * which the peer's state no longer says once it syncs again. */
    uint32_t outdate_node[STORE_REPLICAS_MAX];
    uint64_t outdates[STORE_REPLICAS_MAX];
    size_t noutdate;
};

/* Regions a departed writer may have left unequal (defined further on). */
static uint64_t lost_first(struct mvol *v, uint64_t first, uint64_t last);
static void lost_set(struct mvol *v, uint64_t r, bool on);
static bool lost_test(const struct mvol *mv, uint64_t r);
static int reconcile_lost(struct mvol *v, uint64_t first, uint64_t last, bool wait);
static int reconcile_region(struct mvol *v, uint64_t r);
static void consider_reconcile(struct mvol *v);
/* The activity log (defined with the lost regions). */
static int logged_range_lock(struct mvol *v, struct inflight *x, uint64_t offset, uint64_t len,
                             uint64_t first, uint64_t last, bool wait);
static bool logged(struct mvol *v, uint64_t first, uint64_t last);
/* Worker jobs and the registry (defined with the life cycle). */
static int queue_job(struct mvol *v, void (*fn)(struct mvol *v), unsigned after_ms);
static void each_volume(struct mirror *m, void (*fn)(struct mvol *v));
static struct mvol *reg_get(struct mirror *m, uint32_t vid);

/* ---- small helpers ------------------------------------------------------ */

static uint64_t vsize(const struct mvol *v)
{
    return atomic_load_explicit(&v->size, memory_order_acquire);
}

/* The bytes of region r within the volume now; 0 past its end (a shrink
 * since the caller chose r). */
static uint64_t region_len(const struct mvol *v, uint64_t r)
{
    uint64_t off = r << v->m->rs_shift, size = vsize(v);
    return off >= size ? 0 : size - off < v->m->rs ? size - off : v->m->rs;
}

/* With mu held: commits rec's replica set and local state to the store. */
static int commit(struct mvol *v)
{
    return svol_set_state(v->sv, v->rec.replicas, v->rec.nreplicas, v->rec.local);
}

static void mvol_ref(struct mvol *v)
{
    atomic_fetch_add(&v->refs, 1);
}

static void mvol_unref(struct mvol *v)
{
    if (atomic_fetch_sub(&v->refs, 1) != 1)
        return;
    for (size_t i = 0; i < v->ndirty; i++)
        bitmap_close(v->dirty[i]);
    free(v->lost);
    pthread_cond_destroy(&v->rcv);
    pthread_mutex_destroy(&v->rmu);
    pthread_mutex_destroy(&v->mu);
    svol_unref(v->sv);
    free(v);
}

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
static void update_serve_local(struct mvol *v)
{
    bool ok = replica_get(&v->rec, v->m->self) == REPLICA_CURRENT && v->rec.local == STORE_LOCAL_OK;
    atomic_store(&v->serve_local, ok);
}

/* ---- dirty bitmaps ---------------------------------------------------- */

/* With mv->mu held: node's bitmap, opened (or created) on first use. */
static struct bitmap *dirty_for(struct mvol *v, uint32_t node)
{
    struct mvol *mv = v;
    for (size_t i = 0; i < mv->ndirty; i++)
        if (mv->dirty_node[i] == node)
            return mv->dirty[i];
    if (mv->ndirty == STORE_REPLICAS_MAX || atomic_load(&v->gone))
        return NULL; /* a deleted volume's bitmaps are not created again */
    char path[PATH_MAX];
    store_bitmap_path(v->m->p.store, svol_uuid(v->sv), node, path, sizeof path);
    struct bitmap *b;
    if (bitmap_open(path, nregions(v->m, vsize(v)), v->m->rs_shift, &b) < 0)
        return NULL;
    mv->dirty[mv->ndirty] = b;
    mv->dirty_node[mv->ndirty++] = node;
    return b;
}

/* With mv->mu held: node is current again, its bitmap goes. */
static void dirty_drop(struct mvol *v, uint32_t node)
{
    struct mvol *mv = v;
    for (size_t i = 0; i < mv->ndirty; i++) {
        if (mv->dirty_node[i] != node)
            continue;
        if (bitmap_remove(mv->dirty[i]) < 0)
            qb_log(LOG_WARNING, "volume \"%s\": node %u: its dirty bitmap could not be removed",
                   v->name, node);
        mv->ndirty--;
        mv->dirty[i] = mv->dirty[mv->ndirty];
        mv->dirty_node[i] = mv->dirty_node[mv->ndirty];
        return;
    }
}

/* With mv->mu held: records regions first..last dirty for node, durably. */
static int mark_dirty(struct mvol *v, uint32_t node, uint64_t first, uint64_t last)
{
    struct bitmap *b = dirty_for(v, node);
    if (!b) {
        qb_log(LOG_ERR, "volume \"%s\": node %u: no dirty bitmap: refusing the write", v->name,
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
        qb_log(LOG_ERR, "volume \"%s\": node %u: recording dirty regions: %s", v->name, node,
               strerror(-r));
    return r < 0 ? r : 0;
}

/* With mv->mu held: a write to first..last is applied here; every outdated
 * replica must get it later. Only a copy that holds the data records it. */
static int mark_outdated_peers(struct mvol *v, uint64_t first, uint64_t last)
{
    for (uint32_t i = 0; i < v->rec.nreplicas; i++) {
        const struct store_replica *r = &v->rec.replicas[i];
        if (r->state != REPLICA_OUTDATED || r->node == v->m->self)
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
    /* For a peer that failed: its outdates applied here before ours was
     * sent (outdate_failed), so check_failed sees whether ours was. */
    uint64_t outdates_before[STORE_REPLICAS_MAX];
};

static int plan_write(struct mvol *v, uint64_t first, uint64_t last, struct plan *pl)
{
    struct mirror *m = v->m;
    pl->local = false;
    pl->n = 0;
    pthread_mutex_lock(&v->mu);
    for (uint32_t i = 0; i < v->rec.nreplicas; i++) {
        const struct store_replica *r = &v->rec.replicas[i];
        bool gets = r->state == REPLICA_CURRENT || r->state == REPLICA_SYNCING;
        if (r->node == m->self)
            pl->local = gets && v->rec.local != STORE_LOCAL_FAILED;
        else if (gets)
            pl->ops[pl->n++] = (struct mlink_op){.peer = r->node};
    }
    int e = pl->local && first <= last ? mark_outdated_peers(v, first, last) : 0;
    pthread_mutex_unlock(&v->mu);
    return e;
}

/* Records this node's copy as failed (it serves nothing until replaced);
 * a record that can't be persisted is logged. */
static void set_local_failed(struct mvol *v)
{
    pthread_mutex_lock(&v->mu);
    v->rec.local = STORE_LOCAL_FAILED;
    update_serve_local(v);
    int r = commit(v);
    pthread_mutex_unlock(&v->mu);
    if (r < 0)
        qb_log(LOG_ERR, "volume \"%s\": recording its failed local copy: %s", v->name,
               strerror(-r));
}

/* This node's copy failed an I/O: it is failed until replaced. */
static void local_failed(struct mvol *v, int err, uint64_t first, uint64_t last)
{
    qb_log(LOG_ERR, "volume \"%s\": local replica failed (%s): outdated, I/O goes on at peers",
           v->name, strerror(-err));
    set_local_failed(v);
    int r = policing_replica_change(v->pc, v->vid, v->m->self, REPLICA_OUTDATED, first, last, true);
    if (r < 0)
        qb_log(LOG_ERR, "volume \"%s\": its failed local copy is not known as outdated yet: %s",
               v->name, strerror(-r));
}

/* With mu held: the count of node's outdates applied here; NULL once
 * more nodes than a set holds were outdated. */
static uint64_t *outdates_of(struct mvol *v, uint32_t node)
{
    for (size_t i = 0; i < v->noutdate; i++)
        if (v->outdate_node[i] == node)
            return &v->outdates[i];
    if (v->noutdate == STORE_REPLICAS_MAX)
        return NULL;
    v->outdate_node[v->noutdate] = node;
    v->outdates[v->noutdate] = 0;
    return &v->outdates[v->noutdate++];
}

/* How many outdates of node were applied here (UINT64_MAX: not counted). */
static uint64_t outdates(struct mvol *v, uint32_t node)
{
    pthread_mutex_lock(&v->mu);
    uint64_t *n = outdates_of(v, node);
    uint64_t count = n ? *n : UINT64_MAX;
    pthread_mutex_unlock(&v->mu);
    return count;
}

/* Whether node's replica of v no longer takes writes (outdated or gone). */
static bool outdated(struct mvol *v, uint32_t node)
{
    pthread_mutex_lock(&v->mu);
    enum replica_state s = replica_get(&v->rec, node);
    pthread_mutex_unlock(&v->mu);
    return s != REPLICA_CURRENT && s != REPLICA_SYNCING;
}

/* Peers that failed the request are outdated, with the regions they
 * missed, by an agreed message applied here before the write is
 * acknowledged; a peer the cluster refused to outdate fails the write.
 * Returns how many applied it. */
static void outdate_failed(struct mvol *v, struct plan *pl, uint64_t first, uint64_t last, int *err)
{
    for (size_t i = 0; i < pl->n; i++) {
        const struct mlink_op *op = &pl->ops[i];
        if (op->result == 0)
            continue;
        qb_log(LOG_WARNING, "volume \"%s\": region %llu: node %u: %s: marking it outdated", v->name,
               (unsigned long long)first, op->peer, strerror(-op->result));
        pl->outdates_before[i] = outdates(v, op->peer);
        int r =
            policing_replica_change(v->pc, v->vid, op->peer, REPLICA_OUTDATED, first, last, false);
        if (r < 0)
            *err = r;
    }
}

/* Once the changes outdate_failed sent are applied here: a peer the
 * cluster refused to outdate fails the write. How many peers applied it. */
static int check_failed(struct mvol *v, const struct plan *pl, int *err)
{
    int ok = 0;
    for (size_t i = 0; i < pl->n; i++) {
        uint32_t peer = pl->ops[i].peer;
        uint64_t before = pl->outdates_before[i];
        if (pl->ops[i].result == 0) {
            ok++;
            continue;
        }
        /* Applied, the peer may already be syncing again (with these
         * regions dirty): that is no refusal. */
        bool applied = before != UINT64_MAX && outdates(v, peer) != before;
        if (!applied && !outdated(v, peer))
            *err = -EIO; /* refused: the peer keeps its copy, the write fails */
    }
    if (!policing_quorate(v->pc))
        *err = -EIO; /* the majority may not know who is outdated */
    return ok;
}

static bool any_failed(const struct plan *pl)
{
    for (size_t i = 0; i < pl->n; i++)
        if (pl->ops[i].result < 0)
            return true;
    return false;
}

static int settle(struct mvol *v, struct plan *pl, uint64_t first, uint64_t last, int *err)
{
    if (any_failed(pl)) {
        outdate_failed(v, pl, first, last, err);
        int r = policing_replica_sync(v->pc);
        if (r < 0)
            *err = r;
    }
    return check_failed(v, pl, err);
}

typedef int (*local_fn)(struct mvol *v, const void *buf, uint32_t count, uint64_t offset,
                        unsigned flags);

static int local_write(struct mvol *v, const void *buf, uint32_t count, uint64_t offset,
                       unsigned flags)
{
    return svol_write(v->sv, buf, count, offset, flags & SVOL_FUA);
}

static int local_zero(struct mvol *v, const void *buf, uint32_t count, uint64_t offset,
                      unsigned flags)
{
    (void)buf;
    return svol_zero(v->sv, count, offset, flags & ~SVOL_NOWAIT);
}

/* One replicated write, from its range lock to its result. The peers'
 * copies and the local one go out together; finish_write settles. */
struct rwrite {
    struct mvol *v;
    struct inflight x;
    uint64_t first, last;
    uint32_t wire_flags; /* added to every copy's */
    struct plan pl;
    struct mlink_wait w;
    int err;                /* from planning: nothing was sent */
    int applied;            /* copies that took it, this node's included */
    bool local_done;        /* this node's copy took it */
    struct mirror_async *a; /* asynchronous: told the result */
    struct rwrite *next;    /* in the settler's queue */
    bool sent;              /* the settler sent its outdates */
};

/* Plans w (range lock held) and sends it to the peers and the local copy;
 * with async, w->w completes through done, else mlink_wait waits. */
static void start_write(struct rwrite *w, enum mwire_type type, const void *buf, uint32_t count,
                        uint64_t offset, unsigned flags, local_fn local,
                        void (*done)(struct mlink_wait *))
{
    struct mvol *v = w->v;
    w->err = plan_write(v, w->first, w->last, &w->pl);
    w->applied = 0;
    uint32_t wflags = w->wire_flags | (flags & SVOL_FUA ? MW_F_FUA : 0) |
                      (flags & SVOL_MAY_TRIM ? MW_F_MAY_TRIM : 0);
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
        mlink_send_async(v->m->link, w->pl.ops, w->pl.n, &w->w, done);
    else
        mlink_send(v->m->link, w->pl.ops, w->pl.n, &w->w);
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
    struct mvol *v = w->v;
    int err = w->err;
    if (err == 0 && w->sent) /* the settler sent the outdates and waited */
        w->applied += check_failed(v, &w->pl, &err);
    else if (err == 0)
        w->applied += settle(v, &w->pl, w->first, w->last, &err);
    if (err == 0 && w->applied == 0) {
        qb_log(LOG_ERR, "volume \"%s\": region %llu: no replica could take the write", v->name,
               (unsigned long long)w->first);
        err = -EIO;
    }
    if (err < 0 && w->local_done) {
        /* This copy took a write the client is told failed, and that the
         * others may lack (a minority cut off): its own bitmap says so, and
         * when it resyncs, these regions come back from the current ones. */
        pthread_mutex_lock(&v->mu);
        int r = mark_dirty(v, v->m->self, w->first, w->last);
        pthread_mutex_unlock(&v->mu);
        if (r < 0) /* it can't be told apart from the current copies any more */
            local_failed(v, r, w->first, w->last);
    }
    return err;
}

/* Settles, then ends the range lock. */
static int finish_write(struct rwrite *w)
{
    int err = settle_write(w);
    range_unlock(w->v, &w->x);
    return err;
}

static void rwrite_init(struct rwrite *w, struct mvol *v, uint32_t count, uint64_t offset)
{
    unsigned shift = v->m->rs_shift;
    w->v = v;
    w->wire_flags = 0;
    w->sent = false;
    w->first = offset >> shift;
    w->last = (offset + (count ? count - 1 : 0)) >> shift;
}

static int replicate(struct mvol *v, enum mwire_type type, const void *buf, uint32_t count,
                     uint64_t offset, unsigned flags, local_fn local)
{
    struct rwrite w;
    rwrite_init(&w, v, count, offset);
    int e = reconcile_lost(v, w.first, w.last, true);
    if (e == 0)
        e = logged_range_lock(v, &w.x, offset, count, w.first, w.last, true);
    if (e < 0)
        return e;
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

/* Settles w, on the settler or the link thread, and tells its caller. */
static void settle_async(struct rwrite *w)
{
    struct mirror_async *a = w->a;
    int err = finish_write(w);
    free(w);
    a->done(a, err);
}

static void queue_settle(struct rwrite *w);

/* Every copy of an asynchronous write answered, on the thread of the last
 * one. Settling a failed peer waits for the cluster: not on a link thread,
 * which must go on completing other writes, but on the settler. */
static void async_done(struct mlink_wait *mw)
{
    struct rwrite *w = (struct rwrite *)((char *)mw - offsetof(struct rwrite, w));
    if (all_ok(w))
        settle_async(w);
    else
        queue_settle(w);
}

/* The asynchronous write path (SVOL_NOWAIT with a mirror_async): -EAGAIN
 * when an overlapping write of this node is in flight (nothing done), else
 * -EINPROGRESS and a->done gets the result. */
static int replicate_async(struct mvol *v, enum mwire_type type, const void *buf, uint32_t count,
                           uint64_t offset, unsigned flags, local_fn local, struct mirror_async *a)
{
    struct rwrite *w = malloc(sizeof *w);
    if (!w)
        return -EAGAIN;
    rwrite_init(w, v, count, offset);
    w->a = a;
    if (lost_first(v, w->first, w->last) != UINT64_MAX ||
        !range_lock(v, &w->x, offset, count, false)) {
        free(w);
        return -EAGAIN;
    }
    if (!logged(v, w->first, w->last)) { /* the slow path logs them */
        range_unlock(v, &w->x);
        free(w);
        return -EAGAIN;
    }
    start_write(w, type, buf, count, offset, flags & ~SVOL_NOWAIT, local, async_done);
    mlink_release(&w->w);
    return -EINPROGRESS;
}

/* A write larger than the wire carries goes as several, one after the
 * other (max_payload may be above MWIRE_IO_MAX). */
static int replicate_split(struct mvol *v, const char *buf, uint32_t count, uint64_t offset,
                           unsigned flags)
{
    for (uint32_t done = 0; done < count;) {
        uint32_t n = count - done < MWIRE_IO_MAX ? count - done : MWIRE_IO_MAX;
        int r = replicate(v, MW_WRITE, buf + done, n, offset + done, flags, local_write);
        if (r < 0)
            return r;
        done += n;
    }
    return 0;
}

int mirror_write(struct mvol *v, const void *buf, uint32_t count, uint64_t offset, unsigned flags,
                 struct mirror_async *a)
{
    if (count > MWIRE_IO_MAX)
        return a ? -EAGAIN : replicate_split(v, buf, count, offset, flags);
    if (a)
        return replicate_async(v, MW_WRITE, buf, count, offset, flags, local_write, a);
    return replicate(v, MW_WRITE, buf, count, offset, flags, local_write);
}

/* The most a zero covers in one go with an activity log: as many regions
 * as a write at most touches, so that they fit in the log at once. */
static uint64_t zero_span(const struct mirror *m)
{
    return m->rs > MWIRE_IO_MAX ? m->rs : MWIRE_IO_MAX;
}

/* A zero over more than zero_span goes as several. */
static int zero_split(struct mvol *v, uint32_t count, uint64_t offset, unsigned flags)
{
    uint64_t span = zero_span(v->m);
    for (uint64_t done = 0; done < count;) {
        uint64_t to_edge = span - (offset + done) % span;
        uint32_t n = (uint32_t)(to_edge < count - done ? to_edge : count - done);
        int r = replicate(v, MW_ZERO, NULL, n, offset + done, flags, local_zero);
        if (r < 0)
            return r;
        done += n;
    }
    return 0;
}

int mirror_zero(struct mvol *v, uint32_t count, uint64_t offset, unsigned flags,
                struct mirror_async *a)
{
    uint64_t span = zero_span(v->m);
    if (v->m->al && count > 0 && offset / span != (offset + count - 1) / span)
        return a ? -EAGAIN : zero_split(v, count, offset, flags);
    if (a)
        return replicate_async(v, MW_ZERO, NULL, count, offset, flags, local_zero, a);
    return replicate(v, MW_ZERO, NULL, count, offset, flags, local_zero);
}

int mirror_flush(struct mvol *v)
{
    struct mirror *m = v->m;
    struct plan pl;
    int e = plan_write(v, 1, 0, &pl); /* an empty range: no bitmap is touched */
    if (e < 0)
        return e;
    for (size_t i = 0; i < pl.n; i++) {
        mwire_init(&pl.ops[i].req, MW_FLUSH, 0);
        pl.ops[i].req.volume = v->vid;
    }
    struct mlink_wait w;
    mlink_send(m->link, pl.ops, pl.n, &w);
    int applied = 0, err = 0;
    if (pl.local) {
        int r = svol_sync(v->sv);
        if (r == 0)
            applied++;
        else
            local_failed(v, r, 0, nregions(m, vsize(v)) - 1);
    }
    mlink_wait(&w);
    /* A peer that failed a flush may have lost any write since the last
     * one: all of it is dirty for it. */
    applied += settle(v, &pl, 0, nregions(m, vsize(v)) - 1, &err);
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

bool mirror_local_current(struct mvol *v)
{
    return atomic_load(&v->serve_local);
}

/* A node cut off from the majority cannot know whether it has been
 * outdated meanwhile, and its copy misses every write the majority has
 * acknowledged since; a node that has just started or rejoined holds its
 * own old table until the sync round ends, which may call its copy current
 * when the group has outdated it. Either answers no reads (t-lab-checker's
 * readers caught both serving their own copy). */
bool mirror_may_read(struct mvol *v)
{
    return policing_readable(v->pc);
}

/* The peers whose copy of v is current, into peers; how many. */
static size_t current_peers(struct mvol *v, uint32_t peers[STORE_REPLICAS_MAX])
{
    size_t n = 0;
    pthread_mutex_lock(&v->mu);
    for (uint32_t i = 0; i < v->rec.nreplicas; i++)
        if (v->rec.replicas[i].state == REPLICA_CURRENT && v->rec.replicas[i].node != v->m->self)
            peers[n++] = v->rec.replicas[i].node;
    pthread_mutex_unlock(&v->mu);
    return n;
}

/* Reads from the first current peer that answers. */
static int read_peer(struct mvol *v, void *buf, uint32_t count, uint64_t offset)
{
    struct mirror *m = v->m;
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
        qb_log(LOG_WARNING, "volume \"%s\": no current replica to read from", v->name);
    return r;
}

int mirror_read(struct mvol *v, void *buf, uint32_t count, uint64_t offset)
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
    pthread_mutex_lock(&v->mu);
    int r = accepts_writes(v);
    if (r == 0)
        r = mark_outdated_peers(v, first, last);
    pthread_mutex_unlock(&v->mu);
    if (r < 0)
        return r;
    return apply_write(v, c, first, last);
}

/* Applies a peer's write here. */
static int apply_write(struct mvol *v, struct mlink_call *c, uint64_t first, uint64_t last)
{
    const struct mwire_header *h = c->req;
    if (v->m->p.sync_received && mlink_reply(c, 0, NULL, 0) < 0)
        return 0;
    unsigned flags =
        (h->flags & MW_F_FUA ? SVOL_FUA : 0) | (h->flags & MW_F_MAY_TRIM ? SVOL_MAY_TRIM : 0);
    int r = h->type == MW_WRITE
                ? svol_write(v->sv, c->payload, h->length, h->offset, flags & SVOL_FUA)
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

/* A peer's read or checksum: only a current, whole copy answers, or a peer
 * would take stale data for the volume's. */
static int serve_from_copy(struct mvol *v, struct mlink_call *c)
{
    if (!atomic_load(&v->serve_local))
        return -ESTALE;
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

/* ---- extents ---------------------------------------------------------------- */

/* One peer's extents of the range, checked, into ext; how many, or -errno. */
static int extents_peer(struct mvol *v, uint32_t peer, uint32_t count, uint64_t offset,
                        struct mw_extent *rec, struct svol_extent *ext, unsigned max)
{
    struct mlink_op op = {.peer = peer, .reply_buf = rec, .reply_max = max * sizeof *rec};
    mwire_init(&op.req, MW_EXTENTS, 0);
    op.req.volume = v->vid;
    op.req.offset = offset;
    op.req.length = count;
    op.req.arg = max;
    mlink_call(v->m->link, &op, 1);
    if (op.result < 0)
        return op.result;
    size_t n = op.reply_len / sizeof *rec;
    const char *why;
    if (mwire_check_extents(&op.req, rec, n, &why) < 0) {
        qb_log(LOG_ERR, "volume \"%s\": node %u: EXTENTS reply refused: %s", v->name, peer, why);
        return -EIO;
    }
    for (size_t i = 0; i < n; i++)
        ext[i] = (struct svol_extent){.length = rec[i].length,
                                      .hole = (rec[i].flags & MW_EXTENT_ZERO) != 0};
    return (int)n;
}

int mirror_extents(struct mvol *v, uint32_t count, uint64_t offset, struct svol_extent *ext,
                   unsigned max)
{
    max = max < MWIRE_EXTENTS_MAX ? max : MWIRE_EXTENTS_MAX;
    uint32_t peers[STORE_REPLICAS_MAX];
    size_t n = current_peers(v, peers);
    struct mw_extent *rec = malloc(max * sizeof *rec);
    int r = rec ? -EIO : -ENOMEM;
    for (size_t i = 0; rec && i < n; i++) {
        r = extents_peer(v, peers[i], count, offset, rec, ext, max);
        if (r > 0)
            break;
    }
    free(rec);
    if (r > 0)
        return r;
    qb_log(LOG_WARNING, "volume \"%s\": extents at %llu: %s", v->name, (unsigned long long)offset,
           n == 0 ? "no current replica to ask" : strerror(r < 0 ? -r : EIO));
    return -EIO;
}

/* A peer's question about allocation: only a current, whole copy answers
 * (as for a read), so the asker never takes stale holes for the volume's. */
static int serve_extents(struct mvol *v, struct mlink_call *c)
{
    const struct mwire_header *h = c->req;
    if (!atomic_load(&v->serve_local))
        return -ESTALE;
    if (!in_bounds(v, h))
        return -EINVAL;
    struct svol_extent *ext = malloc(h->arg * sizeof *ext);
    struct mw_extent *rec = malloc(h->arg * sizeof *rec);
    int r = ext && rec ? svol_extents(v->sv, h->length, h->offset, ext, h->arg) : -ENOMEM;
    for (int i = 0; i < r; i++)
        rec[i] = (struct mw_extent){.length = (uint32_t)ext[i].length,
                                    .flags = ext[i].hole ? MW_EXTENT_HOLE | MW_EXTENT_ZERO : 0};
    if (r > 0)
        r = mlink_reply(c, 0, rec, (size_t)r * sizeof *rec);
    free(rec);
    free(ext);
    return r;
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
    default:
        return -EOPNOTSUPP;
    }
}

static int serve(void *ctx, struct mlink_call *c)
{
    struct mvol *v = reg_get(ctx, c->req->volume);
    if (!v)
        return -ESTALE;
    int r = serve_volume(v, c);
    mvol_unref(v);
    return r;
}

/* ---- the agreed table ------------------------------------------------------ */

int mirror_replica_request(struct mvol *v, uint32_t from, uint32_t node, uint8_t state,
                           uint64_t first, uint64_t last)
{
    pthread_mutex_lock(&v->mu);
    bool refused =
        state == REPLICA_OUTDATED && from != node && replica_get(&v->rec, from) != REPLICA_CURRENT;
    pthread_mutex_unlock(&v->mu);
    if (refused) {
        qb_log(LOG_WARNING,
               "volume \"%s\": node %u may not outdate node %u: its copy is not current", v->name,
               from, node);
        return 0;
    }
    return mirror_replica_apply(v, node, state, first, last);
}

int mirror_replica_apply(struct mvol *v, uint32_t node, uint8_t state, uint64_t first,
                         uint64_t last)
{
    struct mirror *m = v->m;
    pthread_mutex_lock(&v->mu);
    bool changed = replica_apply(&v->rec, node, state);
    enum replica_state self = replica_get(&v->rec, m->self);
    uint64_t *n = state == REPLICA_OUTDATED ? outdates_of(v, node) : NULL;
    if (n)
        (*n)++;
    int r = 0;
    if (first <= last && node != m->self && (self == REPLICA_CURRENT || self == REPLICA_SYNCING))
        r = mark_dirty(v, node, first, last);
    if (changed && state == REPLICA_CURRENT)
        dirty_drop(v, node);
    if (changed) {
        update_serve_local(v);
        if (commit(v) < 0)
            r = -EIO;
        qb_log(LOG_INFO, "volume \"%s\": replica on node %u is %s", v->name, node,
               replica_state_name(state));
    }
    pthread_mutex_unlock(&v->mu);
    return r < 0 ? r : changed;
}

void mirror_replicas_copy(struct mvol *v, struct store_replica *out, uint32_t *n)
{
    pthread_mutex_lock(&v->mu);
    *n = v->rec.nreplicas;
    memcpy(out, v->rec.replicas, sizeof v->rec.replicas);
    pthread_mutex_unlock(&v->mu);
}

int mirror_replicas_load(struct mvol *v, const struct store_replica *r, uint32_t n)
{
    struct mirror *m = v->m;
    pthread_mutex_lock(&v->mu);
    bool same = n == v->rec.nreplicas && memcmp(r, v->rec.replicas, n * sizeof *r) == 0;
    int e = 0;
    if (!same) {
        v->rec.nreplicas = n < STORE_REPLICAS_MAX ? n : STORE_REPLICAS_MAX;
        memcpy(v->rec.replicas, r, v->rec.nreplicas * sizeof *r);
        for (uint32_t i = 0; i < v->rec.nreplicas; i++) {
            uint32_t node = v->rec.replicas[i].node;
            if (node == m->self)
                continue;
            if (v->rec.replicas[i].state == REPLICA_OUTDATED && !dirty_for(v, node))
                e = -EIO; /* writes refuse to go on without it (mark_dirty) */
            else if (v->rec.replicas[i].state == REPLICA_CURRENT)
                dirty_drop(v, node);
        }
        update_serve_local(v);
        int c = commit(v);
        e = e < 0 ? e : c;
    }
    pthread_mutex_unlock(&v->mu);
    return e;
}

int mirror_node_left(struct mvol *v, uint32_t node, const struct pol_key *lost, size_t nlost)
{
    mlink_drop(v->m->link, node);
    int changed = mirror_replica_apply(v, node, REPLICA_OUTDATED, 1, 0);
    pthread_mutex_lock(&v->mu);
    enum replica_state self = replica_get(&v->rec, v->m->self);
    bool holds = self == REPLICA_CURRENT || self == REPLICA_SYNCING;
    for (size_t i = 0; holds && i < nlost; i++) {
        if (lost[i].volume != v->vid)
            continue;
        lost_set(v, lost[i].region, true);
        if (replica_get(&v->rec, node) == REPLICA_OUTDATED &&
            mark_dirty(v, node, lost[i].region, lost[i].region) < 0)
            qb_log(LOG_ERR,
                   "volume \"%s\": region %llu: node %u: its departure's region is not "
                   "recorded dirty: verify the volume once it is back",
                   v->name, (unsigned long long)lost[i].region, node);
    }
    consider_reconcile(v);
    pthread_mutex_unlock(&v->mu);
    return changed;
}

/* ---- resync ------------------------------------------------------------------ */

static bool still_syncing(struct mvol *v)
{
    pthread_mutex_lock(&v->mu);
    bool ok = replica_get(&v->rec, v->m->self) == REPLICA_SYNCING &&
              v->rec.local != STORE_LOCAL_FAILED && !atomic_load(&v->gone);
    pthread_mutex_unlock(&v->mu);
    return ok && !atomic_load(&v->m->stopping);
}

/* Adds the regions this node wrote while its peers may have missed them
 * (settle_write) to set. */
static int own_dirty(struct mvol *v, uint64_t *set, size_t words)
{
    struct mvol *mv = v;
    int r = 0;
    pthread_mutex_lock(&mv->mu);
    for (size_t i = 0; i < mv->ndirty; i++) {
        if (mv->dirty_node[i] != v->m->self)
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

/* The union of the current peers' bitmaps for this node, and of its own
 * (own_dirty), into set. */
static int fetch_dirty(struct mvol *v, uint64_t *set, size_t words)
{
    struct mirror *m = v->m;
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

static void throttle(struct mvol *v)
{
    uint64_t rate = v->m->p.resync_rate;
    if (rate == 0)
        return;
    double ahead =
        (double)atomic_load(&v->resync_done) / (double)rate - seconds_since(&v->resync_started);
    if (ahead > 0.001)
        poll(NULL, 0, (int)(ahead * 1000));
}

/* Copies region r from a current peer, holding its write priority and
 * keeping this node's own writes to it out meanwhile. */
static int copy_region(struct mvol *v, uint64_t r, void *buf)
{
    struct mirror *m = v->m;
    uint64_t off = r << m->rs_shift;
    uint64_t len = region_len(v, r);
    if (len == 0)
        return 0;
    struct pol_write w;
    int e = policing_write_begin(v->pc, v->vid, off, len, false, &w);
    if (e < 0)
        return e;
    /* A lost region is reconciled first (the current copies agree), which
     * writes to them: logged, as every write of this node is. */
    struct inflight x;
    bool lost = false, log = false;
    for (;;) {
        if (log)
            e = logged_range_lock(v, &x, off, len, r, r, true);
        else
            range_lock(v, &x, off, len, true);
        if (e < 0)
            break;
        pthread_mutex_lock(&v->mu);
        lost = lost_test(v, r);
        pthread_mutex_unlock(&v->mu);
        if (!lost || log || !m->al)
            break;
        range_unlock(v, &x);
        log = true;
    }
    if (e < 0) {
        policing_write_end(v->pc, &w);
        return e;
    }
    if (lost)
        e = reconcile_region(v, r);
    for (uint64_t done = 0; e == 0 && done < len;) {
        uint32_t n = len - done < COPY_CHUNK ? (uint32_t)(len - done) : COPY_CHUNK;
        e = read_peer(v, buf, n, off + done);
        if (e == 0)
            e = svol_write(v->sv, buf, n, off + done, 0);
        done += n;
        if (e == 0)
            atomic_fetch_add(&v->resync_done, n);
    }
    range_unlock(v, &x);
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
static bool linked_to_current(struct mvol *v)
{
    struct mirror *m = v->m;
    uint32_t peers[STORE_REPLICAS_MAX];
    size_t n = current_peers(v, peers);
    for (size_t i = 0; i < n; i++)
        if (!mlink_wait_connected(m->link, peers[i], 2000))
            return false;
    return n > 0;
}

/* One attempt: syncing, the dirty set, the copy, current. */
static int resync_once(struct mvol *v)
{
    struct mirror *m = v->m;
    pthread_mutex_lock(&v->mu);
    enum replica_state s = replica_get(&v->rec, m->self);
    bool full = s == REPLICA_NONE || v->rec.local == STORE_LOCAL_REBUILD;
    pthread_mutex_unlock(&v->mu);
    if (s != REPLICA_SYNCING && !linked_to_current(v))
        return -ENOTCONN;
    int r = 0;
    if (s != REPLICA_SYNCING)
        r = policing_replica_change(v->pc, v->vid, m->self, REPLICA_SYNCING, 1, 0, true);
    if (r == 0 && !still_syncing(v))
        r = -EAGAIN;
    /* The size once syncing, not before the wait for the links: a resize
     * agreed meanwhile is applied here by now, and the regions past the
     * old end that peers recorded dirty are copied too. */
    uint64_t nr = nregions(m, vsize(v));
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
    atomic_store(&v->resync_total, count << m->rs_shift);
    atomic_store(&v->resync_done, 0);
    clock_gettime(CLOCK_MONOTONIC, &v->resync_started);
    if (r == 0)
        qb_log(LOG_INFO, "volume \"%s\": resync: %llu of %llu regions to copy%s", v->name,
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
        r = svol_sync(v->sv);
    if (r == 0 && full) {
        pthread_mutex_lock(&v->mu);
        v->rec.local = STORE_LOCAL_OK;
        r = commit(v);
        pthread_mutex_unlock(&v->mu);
    }
    if (r == 0)
        r = policing_replica_change(v->pc, v->vid, m->self, REPLICA_CURRENT, 1, 0, true);
    if (r == 0)
        qb_log(LOG_INFO, "volume \"%s\": resync done: %llu bytes copied in %.1f s", v->name,
               (unsigned long long)atomic_load(&v->resync_done), seconds_since(&v->resync_started));
    return r;
}

/* Whether this node's copy needs a resync it can do now. */
static bool wants_resync(struct mvol *v)
{
    enum replica_state s = replica_get(&v->rec, v->m->self);
    return v->rec.local != STORE_LOCAL_FAILED && s != REPLICA_CURRENT && !atomic_load(&v->gone);
}

static void resync_job(struct mvol *v);

/* With mu held, at the end of an attempt: queues the next one (after
 * pause ms) if the copy still wants a resync and the cluster can give it
 * one now, else the volume has none queued. Decided in one section under
 * mu, so an OUTDATED applied meanwhile is never missed. */
static void resync_next(struct mvol *v, unsigned pause)
{
    bool again = wants_resync(v) && !atomic_load(&v->m->stopping) && policing_quorate(v->pc);
    v->resyncing = again && queue_job(v, resync_job, pause) == 0;
}

/* One attempt, on a worker; a failed one is queued again after a pause
 * that holds no worker, so a peer that cannot be reached keeps no worker
 * from other volumes. Without quorum nothing is queued: refresh_peers
 * queues it when the cluster is ready again. */
static void resync_job(struct mvol *v)
{
    pthread_mutex_lock(&v->mu);
    bool go = wants_resync(v) && !atomic_load(&v->m->stopping);
    pthread_mutex_unlock(&v->mu);
    go = go && policing_quorate(v->pc);
    int r = go ? resync_once(v) : 0;
    unsigned pause = 0;
    if (r < 0 && !atomic_load(&v->m->stopping) && !atomic_load(&v->gone)) {
        qb_log(LOG_WARNING, "volume \"%s\": resync stopped (%s): trying again", v->name,
               strerror(-r));
        pause = v->resync_backoff;
        v->resync_backoff = pause * 2 > 2000 ? 2000 : pause * 2;
    } else if (r == 0) {
        v->resync_backoff = 100;
    }
    pthread_mutex_lock(&v->mu);
    resync_next(v, pause);
    pthread_mutex_unlock(&v->mu);
}

/* With mu held: queues v's resync unless one is queued or running. */
static void consider_resync_locked(struct mvol *v)
{
    consider_reconcile(v);
    if (v->resyncing || !wants_resync(v))
        return;
    v->resyncing = queue_job(v, resync_job, 0) == 0;
    if (!v->resyncing)
        qb_log(LOG_ERR, "volume \"%s\": out of memory to queue its resync", v->name);
}

static void consider_resync(struct mvol *v)
{
    pthread_mutex_lock(&v->mu);
    consider_resync_locked(v);
    pthread_mutex_unlock(&v->mu);
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
        each_volume(m, consider_resync);
}

void mirror_changed(struct mirror *m)
{
    if (m)
        refresh_peers(m);
}

/* ---- admin --------------------------------------------------------------------- */

int mirror_replica_fail(struct mvol *v)
{
    pthread_mutex_lock(&v->mu);
    v->rec.local = STORE_LOCAL_FAILED;
    update_serve_local(v);
    int r = commit(v);
    bool outdate = replica_get(&v->rec, v->m->self) != REPLICA_OUTDATED;
    pthread_mutex_unlock(&v->mu);
    qb_log(LOG_WARNING, "volume \"%s\": local replica marked failed by the admin", v->name);
    if (r == 0 && outdate)
        r = policing_replica_change(v->pc, v->vid, v->m->self, REPLICA_OUTDATED, 1, 0, false);
    return r;
}

int mirror_replica_replace(struct mvol *v)
{
    pthread_mutex_lock(&v->mu);
    v->rec.local = STORE_LOCAL_REBUILD;
    update_serve_local(v);
    int r = commit(v);
    enum replica_state s = replica_get(&v->rec, v->m->self);
    pthread_mutex_unlock(&v->mu);
    if (r == 0)
        r = svol_wipe(v->sv);
    qb_log(LOG_WARNING, "volume \"%s\": local replica replaced: rebuilding it from the peers",
           v->name);
    if (r == 0 && s == REPLICA_CURRENT)
        r = policing_replica_change(v->pc, v->vid, v->m->self, REPLICA_OUTDATED, 1, 0, false);
    else if (r == 0)
        consider_resync(v);
    return r;
}

void mirror_volume_status(struct mvol *v, struct mirror_volume_status *st)
{
    struct mvol *mv = v;
    *st = (struct mirror_volume_status){0};
    pthread_mutex_lock(&mv->mu);
    st->nreplicas = v->rec.nreplicas;
    for (uint32_t i = 0; i < v->rec.nreplicas; i++) {
        st->replicas[i].node = v->rec.replicas[i].node;
        st->replicas[i].state = v->rec.replicas[i].state;
        for (size_t j = 0; j < mv->ndirty; j++)
            if (mv->dirty_node[j] == v->rec.replicas[i].node)
                st->replicas[i].dirty_bytes = bitmap_count(mv->dirty[j]) << v->m->rs_shift;
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
    struct mvol *v;
    mirror_verify_fn done;
    void *arg;
};

/* Whether the current peers' CRC-64s of region r differ from this node's;
 * the caller holds the region's priority and range. */
static int region_differs(struct mvol *v, uint64_t r, uint32_t *peers, size_t n, bool *differs)
{
    struct mirror *m = v->m;
    uint64_t off = r << m->rs_shift;
    uint32_t len = (uint32_t)region_len(v, r);
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
        e = svol_read(v->sv, buf, k, off + (uint64_t)c * MWIRE_CSUM_CHUNK, 0);
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

static int verify_region(struct mvol *v, uint64_t r, uint32_t *peers, size_t n, bool *differs)
{
    struct mirror *m = v->m;
    uint64_t off = r << m->rs_shift;
    uint32_t len = (uint32_t)region_len(v, r);
    if (len == 0)
        return 0;
    struct pol_write w;
    int e = policing_write_begin(v->pc, v->vid, off, len, false, &w);
    if (e < 0)
        return e;
    struct inflight x;
    range_lock(v, &x, off, len, true);
    e = region_differs(v, r, peers, n, differs);
    range_unlock(v, &x);
    policing_write_end(v->pc, &w);
    return e;
}

static void *verify_main(void *arg)
{
    struct verify *vf = arg;
    struct mvol *v = vf->v;
    struct mirror *m = v->m;
    uint32_t peers[STORE_REPLICAS_MAX];
    size_t n = current_peers(v, peers);
    bool local = atomic_load(&v->serve_local);
    uint64_t nr = nregions(m, vsize(v)), ndiff = 0;
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
    mvol_unref(v);
    free(vf);
    atomic_fetch_sub(&m->verifies, 1);
    return NULL;
}

int mirror_verify(struct mvol *v, mirror_verify_fn done, void *arg)
{
    if (atomic_fetch_add(&v->m->verifies, 1) >= VERIFIES_MAX) {
        atomic_fetch_sub(&v->m->verifies, 1);
        return -EBUSY;
    }
    struct verify *vf = malloc(sizeof *vf);
    if (!vf) {
        atomic_fetch_sub(&v->m->verifies, 1);
        return -ENOMEM;
    }
    *vf = (struct verify){v, done, arg};
    mvol_ref(v);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int r = -pthread_create(&t, &attr, verify_main, vf);
    pthread_attr_destroy(&attr);
    if (r < 0) {
        atomic_fetch_sub(&v->m->verifies, 1);
        mvol_unref(v);
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
 * through the marks in the background. The marks are kept in memory; what
 * a power cut of the whole cluster would make them forget, the activity
 * logs keep (below).
 */

static bool lost_test(const struct mvol *mv, uint64_t r)
{
    return r < mv->lost_nbits && (mv->lost[r / 64] >> (r % 64)) & 1;
}

/* With mu held: marks or clears region r. */
static void lost_set(struct mvol *v, uint64_t r, bool on)
{
    struct mvol *mv = v;
    uint64_t n = nregions(v->m, vsize(v));
    if (r >= n || lost_test(mv, r) == on)
        return;
    if (!mv->lost && !(mv->lost = calloc((n + 63) / 64, sizeof *mv->lost))) {
        qb_log(LOG_ERR, "volume \"%s\": region %llu: no memory to mark it lost", v->name,
               (unsigned long long)r);
        return;
    }
    if (mv->lost_nbits == 0)
        mv->lost_nbits = n;
    mv->lost[r / 64] ^= UINT64_C(1) << (r % 64);
    if (on)
        atomic_fetch_add(&mv->nlost, 1);
    else
        atomic_fetch_sub(&mv->nlost, 1);
}

/* The first lost region among first..last, or UINT64_MAX. */
static uint64_t lost_first(struct mvol *v, uint64_t first, uint64_t last)
{
    if (atomic_load(&v->nlost) == 0)
        return UINT64_MAX;
    uint64_t found = UINT64_MAX;
    pthread_mutex_lock(&v->mu);
    for (uint64_t r = first; r <= last && found == UINT64_MAX; r++)
        if (lost_test(v, r))
            found = r;
    pthread_mutex_unlock(&v->mu);
    return found;
}

/* Writes len bytes at off, read from this copy or else a current peer, to
 * every copy with MW_F_RECONCILE. */
static int reconcile_copy(struct mvol *v, uint64_t off, uint64_t len, void *buf)
{
    int e = 0;
    for (uint64_t done = 0; e == 0 && done < len;) {
        uint32_t n = len - done < COPY_CHUNK ? (uint32_t)(len - done) : COPY_CHUNK;
        e = atomic_load(&v->serve_local) ? svol_read(v->sv, buf, n, off + done, 0)
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
static int reconcile_region(struct mvol *v, uint64_t r)
{
    struct mirror *m = v->m;
    uint64_t off = r << m->rs_shift;
    uint64_t len = region_len(v, r);
    uint32_t peers[STORE_REPLICAS_MAX];
    size_t n = current_peers(v, peers);
    bool differs = !atomic_load(&v->serve_local);
    int e = differs || n == 0 ? 0 : region_differs(v, r, peers, n, &differs);
    if (e < 0) { /* a peer that can't compare gets the whole region, or is outdated */
        qb_log(LOG_INFO, "volume \"%s\": region %llu: comparing its copies: %s: copying it whole",
               v->name, (unsigned long long)r, strerror(-e));
        differs = true;
        e = 0;
    }
    void *buf = e == 0 ? malloc(COPY_CHUNK) : NULL;
    if (e == 0 && !buf)
        e = -ENOMEM;
    if (e == 0)
        e = reconcile_copy(v, off, differs ? len : (len < 4096 ? len : 4096), buf);
    free(buf);
    if (e < 0) {
        qb_log(LOG_WARNING, "volume \"%s\": region %llu: reconciling after its writer left: %s",
               v->name, (unsigned long long)r, strerror(-e));
        return e;
    }
    pthread_mutex_lock(&v->mu);
    lost_set(v, r, false);
    pthread_mutex_unlock(&v->mu);
    qb_log(LOG_INFO, "volume \"%s\": region %llu: reconciled after its writer left (%s)", v->name,
           (unsigned long long)r, differs ? "copies differed" : "copies were equal");
    return 0;
}

/* Reconciles the lost regions among first..last, each under its whole
 * range; the caller holds their priority and no range of them. */
static int reconcile_lost(struct mvol *v, uint64_t first, uint64_t last, bool wait)
{
    struct mirror *m = v->m;
    for (uint64_t r; (r = lost_first(v, first, last)) != UINT64_MAX; first = r + 1) {
        struct inflight x;
        uint64_t off = r << m->rs_shift;
        uint64_t len = region_len(v, r);
        if (len == 0)
            break; /* past the end now: lost_first finds no more */
        int e = logged_range_lock(v, &x, off, len, r, r, wait);
        if (e < 0)
            return e;
        pthread_mutex_lock(&v->mu);
        bool still = lost_test(v, r);
        pthread_mutex_unlock(&v->mu);
        e = still ? reconcile_region(v, r) : 0;
        range_unlock(v, &x);
        if (e < 0)
            return e;
    }
    return 0;
}

/* The background pass, on a worker: every lost region, each under its
 * priority. A region the activity log has no room for yet (full of
 * regions still lost, which this pass clears) is skipped, never waited
 * for while holding a priority. */
static void reconcile_job(struct mvol *v)
{
    struct mirror *m = v->m;
    uint64_t r = 0, next = 0;
    bool skipped = false;
    while (!atomic_load(&m->stopping) && !atomic_load(&v->gone) &&
           (r = lost_first(v, next, nregions(m, vsize(v)) - 1)) != UINT64_MAX) {
        uint64_t off = r << m->rs_shift;
        struct pol_write w;
        int e = policing_write_begin(v->pc, v->vid, off, 1, false, &w);
        if (e == 0) {
            e = reconcile_lost(v, r, r, false);
            policing_write_end(v->pc, &w);
        }
        skipped |= e == -ENOSPC;
        if (e < 0 && e != -ENOSPC)
            break; /* the writers reconcile what is left, or the next survivor */
        next = r + 1;
    }
    /* A failed pass (a peer not linked yet, right after a cold start) is
     * tried again in 1 s, without holding a worker meanwhile; without
     * quorum the next quorum gain queues it. A region lost meanwhile
     * (another writer left) gets a new pass. */
    if ((skipped || r != UINT64_MAX) && policing_quorate(v->pc) && !atomic_load(&m->stopping) &&
        !atomic_load(&v->gone)) {
        qb_log(LOG_WARNING, "volume \"%s\": lost regions left: reconciling again in 1 s", v->name);
        if (queue_job(v, reconcile_job, 1000) == 0)
            return;
    }
    pthread_mutex_lock(&v->mu);
    v->reconciling = false;
    if (r == UINT64_MAX && !skipped)
        consider_reconcile(v);
    pthread_mutex_unlock(&v->mu);
}

/* With mu held: queues the background pass if this node's copy is
 * current and it has lost regions: at once on the current replica with
 * the lowest id, RECONCILE_LATER_MS later on the others (the lowest may
 * have joined after the marks were set, so it lacks them; when the others
 * come to a region, its reconcile has cleared it on every copy). */
static void consider_reconcile(struct mvol *v)
{
    uint32_t lowest = UINT32_MAX;
    for (uint32_t i = 0; i < v->rec.nreplicas; i++)
        if (v->rec.replicas[i].state == REPLICA_CURRENT && v->rec.replicas[i].node < lowest)
            lowest = v->rec.replicas[i].node;
    if (replica_get(&v->rec, v->m->self) != REPLICA_CURRENT || v->reconciling ||
        atomic_load(&v->nlost) == 0 || atomic_load(&v->m->stopping))
        return;
    v->reconciling =
        queue_job(v, reconcile_job, lowest == v->m->self ? 0 : RECONCILE_LATER_MS) == 0;
    if (!v->reconciling)
        qb_log(LOG_ERR, "volume \"%s\": out of memory to queue its reconcile", v->name);
}

/* ---- the activity log ---------------------------------------------------------
 *
 * Before this node's first write to a region, the region goes into its
 * activity log (store/actlog.h), durably; writers logging at once share one
 * fdatasync. A write logs all its regions at once, pinned until it holds
 * its range, so a checkpoint, which takes each region's range once the
 * regions stop counting as logged, waits for every write that logged
 * them, and a write's own regions are never evicted to make room for its
 * others. Asynchronous writes never wait on the log: a region not logged
 * yet sends them the slow way (-EAGAIN). A region leaves the log at a
 * checkpoint: of the least recently used half, those not lost here any
 * more, once no write of this node is in flight to them and every volume
 * concerned was flushed on every current replica (mirror_flush), so what
 * this node wrote there is durable everywhere it went. A checkpoint runs
 * on a worker once three quarters of the log are used, and in a writer
 * only when it is full. Cost: a first write to a region pays one
 * fdatasync of the log; every al_max / 2 new regions, a worker pays a
 * flush of each volume concerned and a rewrite of the log (16 bytes an
 * entry).
 *
 * At start, the engine marks the regions its log carried lost (this
 * node's writes reconcile them first), and the daemon announces them to
 * the group (policing_announce_lost), whose agreed message marks them lost
 * on every node (mirror_regions_lost). They stay in the log until a
 * checkpoint finds them reconciled, so a second power cut before that
 * forgets nothing, and they count beyond the log's size, so a cold start
 * after a full log leaves it room for new writes and reconciles.
 */

static void checkpoint_job(struct mvol *v);

/* Keys of v's regions first..last: stack if they fit, else a buffer the
 * caller frees (NULL: no memory). */
static struct actlog_key *log_keys(struct mvol *v, uint64_t first, uint64_t last,
                                   struct actlog_key *stack, size_t *n)
{
    size_t count = (size_t)(last - first + 1);
    struct actlog_key *k = count <= LOG_STACK ? stack : malloc(count * sizeof *k);
    if (!k)
        return NULL;
    for (size_t i = 0; i < count; i++)
        k[i] = (struct actlog_key){v->vid, first + i};
    *n = count;
    return k;
}

/* Whether every region of first..last is logged (always, without a log). */
static bool logged(struct mvol *v, uint64_t first, uint64_t last)
{
    if (!v->m->al)
        return true;
    struct actlog_key stack[LOG_STACK] = {{0}};
    size_t n;
    struct actlog_key *k = log_keys(v, first, last, stack, &n);
    bool ok = k && actlog_logged(v->m->al, k, n);
    if (k != stack)
        free(k);
    return ok;
}

static int checkpoint(struct mirror *m);

/* Queues a background checkpoint once three quarters of the log are
 * used, one at a time. */
static void consider_checkpoint(struct mvol *v)
{
    struct mirror *m = v->m;
    if (actlog_room(m->al) > m->al_max / 4 || atomic_exchange(&m->ckpt_queued, true))
        return;
    if (queue_job(v, checkpoint_job, 0) < 0)
        atomic_store(&m->ckpt_queued, false); /* the next write tries again */
}

/* Logs and pins k, making room when the log is full. Every region in it
 * still lost (not reconciled yet): with wait, tries again for at most
 * LOG_WAIT_STEPS * 100 ms; without, -ENOSPC at once. */
static int log_add(struct mvol *v, const struct actlog_key *k, size_t n, bool wait)
{
    struct mirror *m = v->m;
    int e;
    for (unsigned waited = 0; (e = actlog_add(m->al, k, n)) == -ENOSPC;) {
        e = checkpoint(m);
        if (e == -ENOSPC && !wait)
            return e;
        if (e == -ENOSPC && waited++ < LOG_WAIT_STEPS) {
            poll(NULL, 0, 100);
            continue;
        }
        if (e < 0)
            break;
    }
    if (e < 0)
        qb_log(LOG_ERR, "volume \"%s\": regions %llu..%llu: not in the activity log \"%s\": %s",
               v->name, (unsigned long long)k[0].region, (unsigned long long)k[n - 1].region,
               actlog_path(m->al), strerror(-e));
    else
        consider_checkpoint(v);
    return e;
}

/* Takes x's range once regions first..last are logged. */
static int logged_range_lock(struct mvol *v, struct inflight *x, uint64_t offset, uint64_t len,
                             uint64_t first, uint64_t last, bool wait)
{
    if (!v->m->al) {
        range_lock(v, x, offset, len, true);
        return 0;
    }
    struct actlog_key stack[LOG_STACK] = {{0}};
    size_t n;
    struct actlog_key *k = log_keys(v, first, last, stack, &n);
    int e = k ? log_add(v, k, n, wait) : -ENOMEM;
    if (e == 0) {
        range_lock(v, x, offset, len, true);
        actlog_unpin(v->m->al, k, n);
    }
    if (k != stack)
        free(k);
    return e;
}

static int by_volume(const void *a, const void *b)
{
    const struct actlog_key *x = a, *y = b;
    return x->volume < y->volume ? -1 : x->volume > y->volume;
}

/* With mu held: whether this node's copy of v takes writes, so that the
 * lost marks here are cleared by the reconcile that makes it equal. */
static bool holds_copy(struct mvol *v)
{
    enum replica_state self = replica_get(&v->rec, v->m->self);
    return self == REPLICA_CURRENT || self == REPLICA_SYNCING;
}

/* Drops from k (sorted by volume) the regions still lost here: those of
 * a copy that takes writes (an outdated one is not reconciled but
 * resynced, and its marks stay). */
static size_t keep_reconciled(struct mirror *m, struct actlog_key *k, size_t n)
{
    size_t kept = 0;
    struct mvol *v = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!v || v->vid != k[i].volume) {
            if (v)
                mvol_unref(v);
            v = reg_get(m, k[i].volume);
        }
        bool lost = false;
        if (v) {
            pthread_mutex_lock(&v->mu);
            lost = holds_copy(v) && lost_test(v, k[i].region);
            pthread_mutex_unlock(&v->mu);
        }
        if (!lost)
            k[kept++] = k[i];
    }
    if (v)
        mvol_unref(v);
    return kept;
}

/* Waits for this node's writes in flight to k's regions of v, then
 * flushes v on every current replica. */
static int settle_regions(struct mvol *v, const struct actlog_key *k, size_t n)
{
    struct mirror *m = v->m;
    for (size_t i = 0; i < n; i++) {
        uint64_t off = k[i].region << m->rs_shift;
        if (off >= vsize(v))
            continue;
        struct inflight x;
        range_lock(v, &x, off, vsize(v) - off < m->rs ? vsize(v) - off : m->rs, true);
        range_unlock(v, &x);
    }
    int e = atomic_load(&v->gone) ? 0 : mirror_flush(v);
    if (e < 0)
        qb_log(LOG_ERR,
               "volume \"%s\": flushing it to take %zu regions out of the activity log: %s",
               v->name, n, strerror(-e));
    return e;
}

/* Makes room in the log (see above); -ENOSPC if every region it could
 * take out is still lost. */
static int checkpoint(struct mirror *m)
{
    pthread_mutex_lock(&m->ckpt_mu);
    size_t want = m->al_max / 2 ? m->al_max / 2 : 1;
    struct actlog_key *k = malloc(want * sizeof *k);
    size_t n = k ? actlog_oldest(m->al, k, want) : 0;
    if (n > 0)
        qsort(k, n, sizeof *k, by_volume);
    n = keep_reconciled(m, k, n);
    int e = !k ? -ENOMEM : n == 0 ? -ENOSPC : 0;
    actlog_evict_begin(m->al, k, n);
    for (size_t i = 0, j; e == 0 && i < n; i = j) {
        for (j = i; j < n && k[j].volume == k[i].volume;)
            j++;
        struct mvol *v = reg_get(m, k[i].volume);
        if (v) { /* else deleted: nothing of it needs the log */
            e = settle_regions(v, k + i, j - i);
            mvol_unref(v);
        }
    }
    int r = actlog_evict_end(m->al, k, n, e == 0);
    free(k);
    pthread_mutex_unlock(&m->ckpt_mu);
    return e < 0 ? e : r;
}

/* The background checkpoint, on a worker (v only carried it). */
static void checkpoint_job(struct mvol *v)
{
    int e = checkpoint(v->m);
    if (e < 0 && e != -ENOSPC)
        qb_log(LOG_WARNING, "activity log \"%s\": background checkpoint: %s", actlog_path(v->m->al),
               strerror(-e));
    atomic_store(&v->m->ckpt_queued, false);
}

size_t mirror_actlog_size(uint32_t region_size)
{
    size_t write = MWIRE_IO_MAX / region_size + 1;
    return 4 * write > ACTLOG_MAX_DEFAULT ? 4 * write : ACTLOG_MAX_DEFAULT;
}

void mirror_regions_lost(struct mirror *m, uint32_t from, const struct pol_key *keys, size_t n)
{
    for (size_t i = 0, j; i < n; i = j) {
        for (j = i; j < n && keys[j].volume == keys[i].volume;)
            j++;
        struct mvol *v = reg_get(m, keys[i].volume);
        if (!v)
            continue; /* deleted meanwhile */
        pthread_mutex_lock(&v->mu);
        for (size_t x = i; holds_copy(v) && x < j; x++)
            lost_set(v, keys[x].region, true);
        consider_reconcile(v);
        pthread_mutex_unlock(&v->mu);
        qb_log(LOG_INFO,
               "volume \"%s\": %zu regions node %u may have written before a cold start are "
               "lost until reconciled",
               v->name, j - i, from);
        mvol_unref(v);
    }
}

/* With mu held: the regions of v this node's log carried from before its
 * start are lost, if its copy takes writes (as for a departure's regions,
 * mirror_node_left: the current copies reconcile; an outdated one is
 * resynced from them). */
static void lost_from_log(struct mvol *v)
{
    size_t cap = v->m->al && holds_copy(v) ? actlog_carried(v->m->al, NULL, 0) : 0;
    struct actlog_key *k = cap ? malloc(cap * sizeof *k) : NULL;
    size_t n = k ? actlog_carried(v->m->al, k, cap) : 0;
    for (size_t i = 0; i < n && i < cap; i++)
        if (k[i].volume == v->vid)
            lost_set(v, k[i].region, true);
    free(k);
}

/* ---- workers ------------------------------------------------------------------ */

/* Queues fn(v) for a worker, not before after_ms, holding a reference to
 * v until it has run. */
static int queue_job(struct mvol *v, void (*fn)(struct mvol *v), unsigned after_ms)
{
    struct mirror *m = v->m;
    struct job *j = malloc(sizeof *j);
    if (!j)
        return -ENOMEM;
    *j = (struct job){.fn = fn, .v = v, .due = clock_after_ms(after_ms)};
    mvol_ref(v);
    pthread_mutex_lock(&m->qmu);
    *m->jobs_tail = j;
    m->jobs_tail = &j->next;
    pthread_cond_signal(&m->jcv); /* only workers wait on jcv */
    pthread_mutex_unlock(&m->qmu);
    return 0;
}

/* With qmu held: takes the first job that is due, else NULL and the time
 * the earliest one is (in *next). */
static struct job *take_due(struct mirror *m, struct timespec *next)
{
    struct timespec now = clock_after_ms(0);
    bool any = false;
    for (struct job **p = &m->jobs; *p; p = &(*p)->next) {
        struct job *j = *p;
        if (!clock_before(&now, &j->due)) {
            *p = j->next;
            if (m->jobs_tail == &j->next)
                m->jobs_tail = p;
            return j;
        }
        if (!any || clock_before(&j->due, next))
            *next = j->due;
        any = true;
    }
    if (!any)
        *next = clock_after_ms(60000);
    return NULL;
}

/* A job that is due, or NULL once stopping (jobs still queued are
 * dropped). */
static struct job *next_job(struct mirror *m)
{
    pthread_mutex_lock(&m->qmu);
    struct job *j = NULL;
    while (!atomic_load(&m->stopping)) {
        struct timespec next;
        if ((j = take_due(m, &next)))
            break;
        pthread_cond_timedwait(&m->jcv, &m->qmu, &next);
    }
    pthread_mutex_unlock(&m->qmu);
    return j;
}

static void *worker_main(void *arg)
{
    struct mirror *m = arg;
    for (struct job *j; (j = next_job(m));) {
        j->fn(j->v);
        mvol_unref(j->v);
        free(j);
    }
    return NULL;
}

/* Takes every failed write queued, oldest first; NULL once stopping and
 * none is left. */
static struct rwrite *take_settles(struct mirror *m)
{
    pthread_mutex_lock(&m->qmu);
    while (!m->settles && !atomic_load(&m->stopping))
        pthread_cond_wait(&m->scv, &m->qmu);
    struct rwrite *batch = m->settles;
    m->settles = NULL;
    m->settles_tail = &m->settles;
    pthread_mutex_unlock(&m->qmu);
    return batch;
}

/* The failed asynchronous writes, settled in batches: settling waits for
 * agreed messages, which a link thread must not, and a thread per failed
 * write would let a dead peer cost one per write in flight. The outdates
 * of a whole batch go out first and are waited for once, so a group that
 * stops delivering costs one 30 s wait per batch, not per write. */
static void *settler_main(void *arg)
{
    struct mirror *m = arg;
    for (struct rwrite *batch; (batch = take_settles(m));) {
        struct policing *pc = batch->v->pc;
        for (struct rwrite *w = batch; w; w = w->next)
            if (w->err == 0)
                outdate_failed(w->v, &w->pl, w->first, w->last, &w->err);
        int r = policing_replica_sync(pc);
        for (struct rwrite *w = batch, *next; w; w = next) {
            next = w->next;
            if (r < 0 && w->err == 0)
                w->err = r;
            w->sent = true;
            settle_async(w);
        }
    }
    return NULL;
}

static void queue_settle(struct rwrite *w)
{
    struct mirror *m = w->v->m;
    w->next = NULL;
    pthread_mutex_lock(&m->qmu);
    *m->settles_tail = w;
    m->settles_tail = &w->next;
    pthread_cond_signal(&m->scv);
    pthread_mutex_unlock(&m->qmu);
}

static int start_threads(struct mirror *m)
{
    for (; m->nworkers < WORKERS; m->nworkers++) {
        int e = pthread_create(&m->workers[m->nworkers], NULL, worker_main, m);
        if (e != 0)
            return -e;
    }
    int e = pthread_create(&m->settler, NULL, settler_main, m);
    m->settler_started = e == 0;
    return -e;
}

/* At shutdown, after the NBD server and the main loop have stopped. */
static void stop_threads(struct mirror *m)
{
    pthread_mutex_lock(&m->qmu);
    atomic_store(&m->stopping, true);
    pthread_cond_broadcast(&m->jcv);
    pthread_cond_broadcast(&m->scv);
    pthread_mutex_unlock(&m->qmu);
    for (size_t i = 0; i < m->nworkers; i++)
        pthread_join(m->workers[i], NULL);
    if (m->settler_started)
        pthread_join(m->settler, NULL);
    for (struct job *j = m->jobs, *next; j; j = next) {
        next = j->next;
        mvol_unref(j->v);
        free(j);
    }
}

/* ---- the registry: volumes by id, for peers' requests --------------------------- */

/* With reg held: v's index, or where it would go. */
static bool reg_find(struct mirror *m, uint32_t vid, size_t *idx)
{
    size_t lo = 0, hi = m->nvols;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->vols[mid]->vid == vid) {
            *idx = mid;
            return true;
        }
        if (m->vols[mid]->vid < vid)
            lo = mid + 1;
        else
            hi = mid;
    }
    *idx = lo;
    return false;
}

static int reg_add(struct mirror *m, struct mvol *v)
{
    pthread_rwlock_wrlock(&m->reg);
    size_t idx;
    int r = reg_find(m, v->vid, &idx) ? -EEXIST : 0;
    if (r == 0 && m->nvols == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        struct mvol **n = realloc(m->vols, cap * sizeof *n);
        r = n ? 0 : -ENOMEM;
        if (n) {
            m->vols = n;
            m->cap = cap;
        }
    }
    if (r == 0) {
        memmove(&m->vols[idx + 1], &m->vols[idx], (m->nvols - idx) * sizeof *m->vols);
        m->vols[idx] = v;
        m->nvols++;
    }
    pthread_rwlock_unlock(&m->reg);
    return r;
}

/* Whether v was registered (and is no longer). */
static bool reg_remove(struct mirror *m, struct mvol *v)
{
    pthread_rwlock_wrlock(&m->reg);
    size_t idx;
    bool found = reg_find(m, v->vid, &idx) && m->vols[idx] == v;
    if (found) {
        m->nvols--;
        memmove(&m->vols[idx], &m->vols[idx + 1], (m->nvols - idx) * sizeof *m->vols);
    }
    pthread_rwlock_unlock(&m->reg);
    return found;
}

/* The volume with id vid, with a reference the caller drops; NULL if none. */
static struct mvol *reg_get(struct mirror *m, uint32_t vid)
{
    pthread_rwlock_rdlock(&m->reg);
    size_t idx;
    struct mvol *v = reg_find(m, vid, &idx) ? m->vols[idx] : NULL;
    if (v)
        mvol_ref(v);
    pthread_rwlock_unlock(&m->reg);
    return v;
}

/* Runs fn on every attached volume, each with a reference, outside reg. */
static void each_volume(struct mirror *m, void (*fn)(struct mvol *v))
{
    pthread_rwlock_rdlock(&m->reg);
    size_t n = m->nvols;
    struct mvol **copy = malloc((n ? n : 1) * sizeof *copy);
    for (size_t i = 0; copy && i < n; i++) {
        copy[i] = m->vols[i];
        mvol_ref(copy[i]);
    }
    pthread_rwlock_unlock(&m->reg);
    if (!copy) {
        qb_log(LOG_ERR, "mirror: out of memory to go through %zu volumes", n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        fn(copy[i]);
        mvol_unref(copy[i]);
    }
    free(copy);
}

/* ---- life cycle ---------------------------------------------------------------- */

/* With mu held: opens the bitmaps of outdated peers, so that their dirty
 * regions are known before the first write. */
static int open_bitmaps(struct mvol *v)
{
    for (uint32_t i = 0; i < v->rec.nreplicas; i++) {
        uint32_t node = v->rec.replicas[i].node;
        if (v->rec.replicas[i].state == REPLICA_OUTDATED && node != v->m->self &&
            !dirty_for(v, node))
            return -EIO;
    }
    return 0;
}

int mirror_volume_attach(struct mirror *m, struct svol *sv, uint32_t vid, struct policing *pc,
                         struct mvol **out)
{
    struct mvol *v = calloc(1, sizeof *v);
    if (!v)
        return -ENOMEM;
    *v = (struct mvol){.m = m, .sv = sv, .pc = pc, .vid = vid, .name = svol_name(sv)};
    svol_record(sv, &v->rec);
    atomic_init(&v->refs, 2); /* the caller's and the registry's */
    atomic_init(&v->size, v->rec.size);
    v->resync_backoff = 100;
    pthread_mutex_init(&v->mu, NULL);
    pthread_mutex_init(&v->rmu, NULL);
    pthread_cond_init(&v->rcv, NULL);
    svol_ref(sv);
    pthread_mutex_lock(&v->mu);
    int r = 0;
    if (v->rec.nreplicas == 0) {
        replica_init(&v->rec, &m->self, 1);
        r = commit(v);
    }
    if (r == 0)
        r = open_bitmaps(v);
    lost_from_log(v);
    update_serve_local(v);
    pthread_mutex_unlock(&v->mu);
    if (r == 0)
        r = reg_add(m, v);
    if (r == -EEXIST)
        qb_log(LOG_ERR, "volume \"%s\": its id %08x is another volume's", v->name, vid);
    if (r < 0) {
        atomic_store(&v->refs, 1);
        mvol_unref(v);
        return r;
    }
    *out = v;
    return 0;
}

void mirror_volume_detach(struct mvol *v)
{
    atomic_store(&v->gone, true);
    if (reg_remove(v->m, v))
        mvol_unref(v);
}

void mirror_volume_put(struct mvol *v)
{
    mvol_unref(v);
}

/* With mu held: the lost-region bits for nr regions. */
/* With mu held: the lost marks for nr regions, in a new array (none
 * while none is kept). */
static int lost_sized(const struct mvol *v, uint64_t nr, uint64_t **out, uint64_t *count)
{
    *out = NULL;
    *count = 0;
    if (!v->lost)
        return 0; /* allocated at the first loss */
    size_t words = (size_t)((nr + 63) / 64), old = (size_t)((v->lost_nbits + 63) / 64);
    uint64_t *n = calloc(words ? words : 1, sizeof *n);
    if (!n)
        return -ENOMEM;
    memcpy(n, v->lost, (words < old ? words : old) * sizeof *n);
    if (nr % 64)
        n[words - 1] &= (UINT64_C(1) << (nr % 64)) - 1;
    for (size_t i = 0; i < words; i++)
        *count += (uint64_t)__builtin_popcountll(n[i]);
    *out = n;
    return 0;
}

/* With mu held: the lost marks now cover nr regions. */
static void lost_swap(struct mvol *v, uint64_t *marks, uint64_t count, uint64_t nr)
{
    if (!marks)
        return;
    free(v->lost);
    v->lost = marks;
    v->lost_nbits = nr;
    atomic_store(&v->nlost, count);
}

/* With mu held. A grow changes nothing until everything that can fail
 * has succeeded (a bitmap grown in vain only holds more clear bits); a
 * shrink sets the bound first, then cuts the marks and bitmaps, which can
 * only fail harmlessly (bits past the end are never looked at). */
static int resize_locked(struct mvol *v, uint64_t size)
{
    uint64_t nr = nregions(v->m, size);
    bool grow = size > vsize(v);
    if (!grow) {
        v->rec.size = size;
        atomic_store_explicit(&v->size, size, memory_order_release);
    }
    int r = 0;
    for (size_t i = 0; i < v->ndirty && (r == 0 || !grow); i++) {
        int e = bitmap_resize(v->dirty[i], nr);
        r = r < 0 ? r : e;
    }
    uint64_t *marks = NULL, count = 0;
    if (r == 0 || !grow) {
        int e = lost_sized(v, nr, &marks, &count);
        r = r < 0 ? r : e;
    }
    if (r == 0 || !grow)
        lost_swap(v, marks, count, nr);
    if (r == 0 && grow) {
        v->rec.size = size;
        atomic_store_explicit(&v->size, size, memory_order_release);
    }
    return grow ? r : 0;
}

int mirror_volume_resize(struct mvol *v, uint64_t size)
{
    pthread_mutex_lock(&v->mu);
    uint64_t old = vsize(v);
    int r = resize_locked(v, size);
    pthread_mutex_unlock(&v->mu);
    if (r < 0)
        qb_log(LOG_ERR, "volume \"%s\": growing its replication state from %llu to %llu bytes: %s",
               v->name, (unsigned long long)old, (unsigned long long)size, strerror(-r));
    return r;
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
    pthread_rwlock_init(&m->reg, NULL);
    pthread_mutex_init(&m->qmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the jobs' due times */
    pthread_cond_init(&m->jcv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&m->scv, NULL);
    m->jobs_tail = &m->jobs;
    m->settles_tail = &m->settles;
    m->al = p->actlog;
    m->al_max = m->al ? actlog_room(m->al) : 0;
    pthread_mutex_init(&m->ckpt_mu, NULL);
    struct mlink_params lp = {
        .listen = p->listen,
        .cluster = m->cluster,
        .self = m->self,
        .secret = &m->secret,
        .timeout_ms = p->timeout_ms,
        .serve = serve,
        .ctx = m,
        .batch_begin = p->batch_begin,
        .batch_end = p->batch_end,
    };
    int r = start_threads(m);
    if (r == 0)
        r = mlink_start(&lp, &m->link);
    if (r < 0) {
        qb_log(LOG_ERR, "mirror: can't start: %s", strerror(-r));
        stop_threads(m);
        free(m);
        return r;
    }
    *out = m;
    return 0;
}

static void detach_one(struct mvol *v)
{
    mirror_volume_detach(v);
}

/* Resyncs and reconciles end at their next step once stopping is set, or
 * when their request to a peer fails or times out; the link goes last. */
void mirror_stop(struct mirror *m)
{
    if (!m)
        return;
    stop_threads(m);
    while (atomic_load(&m->verifies) > 0)
        poll(NULL, 0, 10);
    each_volume(m, detach_one);
    mlink_stop(m->link);
    free(m->vols);
    pthread_rwlock_destroy(&m->reg);
    pthread_cond_destroy(&m->jcv);
    pthread_cond_destroy(&m->scv);
    pthread_mutex_destroy(&m->qmu);
    pthread_mutex_destroy(&m->ckpt_mu);
    free(m);
}

void mirror_stats(struct mirror *m, struct mirror_stats *st)
{
    struct mlink_stats ls;
    mlink_stats(m->link, &ls);
    *st = (struct mirror_stats){ls.requests_sent, ls.requests_served, ls.refused};
}
