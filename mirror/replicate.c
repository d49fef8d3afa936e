/* replicate.c - one replicated write (struct rwrite, engine_int.h): planned
 * against the replica set (plan_write, which first records the regions in
 * the dirty bitmaps of outdated peers), sent to the peers and applied to
 * this node's copy at once (start_write), and settled once every copy
 * answered (settle_write): a peer that failed is outdated by an agreed
 * message before the write is acknowledged (invariant 1). A flush goes the
 * same way. The client write path (write.c) and the reconcile
 * (reconcile.c) build on it; it knows neither.
 */
#include "mirror/engine_int.h"

#include "common/clock.h"
#include "mirror/replicas.h"
#include "policing/protocol.h"
#include "store/svol.h"

#include <string.h>
#include <time.h>

#include <qb/qblog.h>

/* With mu held: when node's read lease is surely over (0: long ago). */
static uint64_t lease_end_of(struct mvol *v, uint32_t node)
{
    for (size_t i = 0; i < v->nlease; i++)
        if (v->lease_node[i] == node)
            return v->lease_end[i];
    return 0;
}

void lease_started(struct mvol *v, uint32_t node)
{
    uint64_t end = clock_now_ms() + POLICING_LEASE_MS + POLICING_LEASE_MARGIN_MS;
    for (size_t i = 0; i < v->nlease; i++)
        if (v->lease_node[i] == node) {
            v->lease_end[i] = end;
            return;
        }
    if (v->nlease < STORE_REPLICAS_MAX) {
        v->lease_node[v->nlease] = node;
        v->lease_end[v->nlease++] = end;
    }
}

static int plan_write(struct mvol *v, uint64_t first, uint64_t last, struct plan *pl)
{
    struct mirror *m = v->m;
    pl->local = false;
    pl->n = 0;
    pl->lease_end = 0;
    pthread_mutex_lock(&v->mu);
    for (uint32_t i = 0; i < v->rec.nreplicas; i++) {
        const struct store_replica *r = &v->rec.replicas[i];
        bool gets = r->state == REPLICA_CURRENT || r->state == REPLICA_SYNCING;
        uint64_t lease = gets || r->node == m->self ? 0 : lease_end_of(v, r->node);
        if (r->node == m->self)
            pl->local = gets && v->rec.local != STORE_LOCAL_FAILED;
        else if (gets)
            pl->ops[pl->n++] = (struct mlink_op){.peer = r->node};
        if (lease > pl->lease_end)
            pl->lease_end = lease;
    }
    /* A copy removed from the set may still read under its lease too. */
    for (size_t i = 0; i < v->nlease; i++)
        if (v->lease_end[i] > pl->lease_end &&
            replica_get(&v->rec, v->lease_node[i]) == REPLICA_NONE)
            pl->lease_end = v->lease_end[i];
    int e = pl->local && first <= last ? mark_outdated_peers(v, first, last) : 0;
    pthread_mutex_unlock(&v->mu);
    return e;
}

/* Records this node's copy as failed (it serves nothing until replaced);
 * a record that can't be persisted is logged. */
void set_local_failed(struct mvol *v)
{
    pthread_mutex_lock(&v->mu);
    v->rec.local = STORE_LOCAL_FAILED;
    update_serve_local(v);
    int r = commit_state(v);
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
uint64_t *outdates_of(struct mvol *v, uint32_t node)
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

/* Who vouches for the write pl made, so that the peers that missed it may
 * be outdated: this node if its copy is current (0), else a peer current
 * in the agreed view that acknowledged it (a diskless writer, or one
 * whose copy failed); UINT32_MAX if none did. */
static uint32_t witness_of(struct mvol *v, const struct plan *pl)
{
    uint32_t w = UINT32_MAX;
    pthread_mutex_lock(&v->mu);
    if (replica_get(&v->rec, v->m->self) == REPLICA_CURRENT && v->rec.local == STORE_LOCAL_OK)
        w = 0;
    for (size_t i = 0; i < pl->n && w == UINT32_MAX; i++)
        if (pl->ops[i].result == 0 && replica_get(&v->rec, pl->ops[i].peer) == REPLICA_CURRENT)
            w = pl->ops[i].peer;
    pthread_mutex_unlock(&v->mu);
    return w;
}

/* Whether a write no copy vouches for may have landed somewhere: on this
 * node's own (syncing) copy, on a peer that took it (a syncing one), or on
 * one that failed after it was sent (its answer lost, or an error reply).
 * Not when every request failed before it left (no link: -ENOTCONN,
 * -ESHUTDOWN, -ENOMEM at submit): then no copy changed, and naming the
 * regions doubtful would only abort every cut for nothing, again at each
 * retry. */
static bool may_have_landed(const struct plan *pl)
{
    if (pl->local)
        return true;
    for (size_t i = 0; i < pl->n; i++) {
        int r = pl->ops[i].result;
        if (r != -ENOTCONN && r != -ESHUTDOWN && r != -ENOMEM)
            return true;
    }
    return false;
}

/* Peers that failed the request are outdated, with the regions they
 * missed, by an agreed message applied here before the write is
 * acknowledged, vouched for by this node's copy or by a current peer that
 * took the write (witness_of); a peer the cluster refused to outdate, or
 * that nobody could vouch against, fails the write. With no witness, a
 * peer that failed may still have written it (its answer was lost, not
 * its write) while another did not: the regions are named doubtful, so
 * the copies holding them are reconciled before they are written again
 * (reconcile.c) and never stay unequal. */
void outdate_failed(struct mvol *v, struct plan *pl, uint64_t first, uint64_t last, int *err)
{
    uint32_t witness = witness_of(v, pl);
    bool doubtful = false;
    for (size_t i = 0; i < pl->n; i++) {
        const struct mlink_op *op = &pl->ops[i];
        if (op->result == 0)
            continue;
        pl->outdates_before[i] = outdates(v, op->peer);
        if (witness == UINT32_MAX) {
            qb_log(LOG_WARNING,
                   "volume \"%s\": region %llu: node %u: %s: no current copy took the write: "
                   "it fails, the replica stays",
                   v->name, (unsigned long long)first, op->peer, strerror(-op->result));
            doubtful = true;
            continue;
        }
        qb_log(LOG_WARNING, "volume \"%s\": region %llu: node %u: %s: marking it outdated", v->name,
               (unsigned long long)first, op->peer, strerror(-op->result));
        int r = witness == 0
                    ? policing_replica_change(v->pc, v->vid, op->peer, REPLICA_OUTDATED, first,
                                              last, false)
                    : policing_replica_outdate(v->pc, v->vid, op->peer, witness, first, last);
        if (r < 0)
            *err = r;
    }
    if (doubtful && may_have_landed(pl)) {
        int r = policing_regions_doubtful(v->pc, v->vid, first, last);
        if (r < 0)
            qb_log(LOG_ERR,
                   "volume \"%s\": regions %llu..%llu: naming them doubtful after a write no "
                   "copy took: %s",
                   v->name, (unsigned long long)first, (unsigned long long)last, strerror(-r));
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

int local_write(struct mvol *v, const void *buf, uint32_t count, uint64_t offset, unsigned flags)
{
    return svol_write(v->sv, buf, count, offset, flags & SVOL_FUA);
}

int local_zero(struct mvol *v, const void *buf, uint32_t count, uint64_t offset, unsigned flags)
{
    (void)buf;
    return svol_zero(v->sv, count, offset, flags & ~SVOL_NOWAIT);
}

/* Plans w (range lock held) and sends it to the peers and the local copy;
 * with async, w->w completes through done, else mlink_wait waits. */
void start_write(struct rwrite *w, enum mwire_type type, const void *buf, uint32_t count,
                 uint64_t offset, unsigned flags, local_fn local, void (*done)(struct mlink_wait *))
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
        h->cut = cut_stamp(v->m);
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

/* A write that leaves copies out waits out their read leases (the peers
 * that failed it had theirs started when their outdate was applied).
 * Whether it waited. */
static bool wait_leases(struct mvol *v, const struct plan *pl)
{
    uint64_t end = pl->lease_end;
    pthread_mutex_lock(&v->mu);
    for (size_t i = 0; i < pl->n; i++)
        if (pl->ops[i].result < 0 && lease_end_of(v, pl->ops[i].peer) > end)
            end = lease_end_of(v, pl->ops[i].peer);
    pthread_mutex_unlock(&v->mu);
    bool waited = false;
    for (uint64_t now; (now = clock_now_ms()) < end; waited = true) {
        struct timespec d = {(time_t)((end - now) / 1000), (long)((end - now) % 1000) * 1000000L};
        nanosleep(&d, NULL);
    }
    return waited;
}

/* Once every copy answered: settles failed peers. */
int settle_write(struct rwrite *w)
{
    struct mvol *v = w->v;
    int err = w->err;
    if (err == 0 && w->sent) /* the settler sent the outdates and waited */
        w->applied += check_failed(v, &w->pl, &err);
    else if (err == 0)
        w->applied += settle(v, &w->pl, w->first, w->last, &err);
    if (err == 0 && wait_leases(v, &w->pl) && !policing_quorate(v->pc))
        err = -EIO; /* cut off meanwhile: the majority may not know who is outdated */
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
int finish_write(struct rwrite *w)
{
    int err = settle_write(w);
    range_unlock(w->v, &w->x);
    return err;
}

void rwrite_init(struct rwrite *w, struct mvol *v, uint32_t count, uint64_t offset)
{
    unsigned shift = v->m->rs_shift;
    w->v = v;
    w->wire_flags = 0;
    w->sent = false;
    w->first = offset >> shift;
    w->last = (offset + (count ? count - 1 : 0)) >> shift;
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
