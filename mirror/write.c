/* write.c - the client write path: mirror_write and mirror_zero, each
 * under its range lock once its lost regions are reconciled (reconcile.c)
 * and in the activity log (activity.c), then replicated (replicate.c).
 * Asynchronous writes never wait (-EAGAIN sends them the slow way); those
 * that a peer failed are settled on the settler thread.
 */
#include "mirror/engine_int.h"

#include "common/clock.h"
#include "mirror/replicas.h"
#include "policing/protocol.h"
#include "store/svol.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>

#include <qb/qblog.h>

/* Whether this node's own copy takes its writes (plan_write's rule). A
 * copy that serves reads does, without a look under mu (the fast path). */
static bool writes_here(struct mvol *v)
{
    if (atomic_load_explicit(&v->serve_local, memory_order_relaxed))
        return true;
    pthread_mutex_lock(&v->mu);
    enum replica_state s = replica_get(&v->rec, v->m->self);
    bool here =
        (s == REPLICA_CURRENT || s == REPLICA_SYNCING) && v->rec.local != STORE_LOCAL_FAILED;
    pthread_mutex_unlock(&v->mu);
    return here;
}

/* A write this node does not take itself (a diskless node, or its copy
 * failed) needs a current peer to take it, and with none linked it would
 * fail at once: no copy takes it, and none may vouch against a silent one.
 * So, as a write waits for a slow peer, it waits up to wait_ms for a link
 * to a current peer to come up (after a restart, a cut, a network blip).
 * Whether one is up. */
static bool peer_linked(struct mvol *v, unsigned wait_ms)
{
    uint32_t peers[STORE_REPLICAS_MAX];
    size_t n = current_peers(v, peers);
    for (unsigned waited = 0;; waited += 10) {
        for (size_t i = 0; i < n; i++)
            if (mlink_connected(v->m->link, peers[i]))
                return true;
        if (waited >= wait_ms)
            return false;
        poll(NULL, 0, 10);
    }
}

static int replicate(struct mvol *v, enum mwire_type type, const void *buf, uint32_t count,
                     uint64_t offset, unsigned flags, local_fn local)
{
    /* None after the wait: the write goes on and fails, as it must. */
    if (!writes_here(v) && !peer_linked(v, v->m->p.timeout_ms))
        qb_log(LOG_DEBUG, "volume \"%s\": no link to a current replica after %u ms", v->name,
               v->m->p.timeout_ms);
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
    if (all_ok(w) && (!w->pl.lease_end || clock_now_ms() >= w->pl.lease_end))
        settle_async(w);
    else /* a failed peer, or one left out whose read lease may run on */
        queue_settle(w);
}

/* The asynchronous write path (SVOL_NOWAIT with a mirror_async): -EAGAIN
 * when an overlapping write of this node is in flight (nothing done), else
 * -EINPROGRESS and a->done gets the result. */
static int replicate_async(struct mvol *v, enum mwire_type type, const void *buf, uint32_t count,
                           uint64_t offset, unsigned flags, local_fn local, struct mirror_async *a)
{
    if (!writes_here(v) && !peer_linked(v, 0))
        return -EAGAIN; /* the slow path waits for a link */
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
    if (!regions_logged(v, w->first, w->last)) { /* the slow path logs them */
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

void mirror_gather_begin(void)
{
    mlink_gather_begin();
}

void mirror_gather_end(void)
{
    mlink_gather_end();
}

/* ---- the settler ------------------------------------------------------------------ */

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
void *settler_main(void *arg)
{
    struct mirror *m = arg;
    for (struct rwrite *batch; (batch = take_settles(m));) {
        struct policing *pc = batch->v->pc;
        bool outdates = false; /* writes that only wait out a lease send none */
        for (struct rwrite *w = batch; w; w = w->next)
            if (w->err == 0 && !all_ok(w)) {
                outdate_failed(w->v, &w->pl, w->first, w->last, &w->err);
                outdates = true;
            }
        int r = outdates ? policing_replica_sync(pc) : 0;
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
