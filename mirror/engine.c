/* engine.c - the mirror engine's face (see engine.h for the design, and
 * engine_int.h for its parts): the agreed table's changes to each
 * volume's replica set, the admin's calls, and the life cycle of the
 * engine, its threads and its volumes (start, stop, attach, detach,
 * resize). The top of the engine: nothing of mirror/ calls it.
 */
#include "mirror/engine_int.h"

#include "mirror/replicas.h"
#include "policing/protocol.h"
#include "store/actlog.h"
#include "store/bitmap.h"
#include "store/svol.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <qb/qblog.h>

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
    bool was_current = replica_get(&v->rec, node) == REPLICA_CURRENT;
    bool changed = replica_apply(&v->rec, node, state);
    if (changed && was_current && state != REPLICA_CURRENT && node != m->self)
        lease_started(v, node);
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
        if (commit_state(v) < 0)
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

/* A copy dropped here: its snapshots' chunks give their space back, on a
 * worker (a file truncated and synced per snapshot). */
static void empty_job(struct mvol *v)
{
    int r = svol_empty_snapshots(v->sv);
    if (r < 0)
        qb_log(LOG_WARNING,
               "volume \"%s\": its snapshots' side files could not all be emptied (%s): their "
               "space comes back when the volume is deleted",
               v->name, strerror(-r));
}

/* With mu held: next becomes v's record, committed; on this node a copy
 * made (REBUILD) or dropped (DISKLESS) as next's local says. A copy the
 * set names here that could not be made (no data file, or one that could
 * not be emptied for its rebuild) is failed, and *unmade tells the caller
 * to outdate it (outdate_uncommitted): the group must not wait on a copy
 * nothing will fill. A record that could not be written leaves the copy
 * as it was: its data is intact, and the next change writes the record. */
static int commit_change(struct mvol *v, struct store_volume *next, bool *unmade)
{
    bool make = next->local == STORE_LOCAL_REBUILD && v->rec.local != STORE_LOCAL_REBUILD;
    bool drop = next->local == STORE_LOCAL_DISKLESS && v->rec.local != STORE_LOCAL_DISKLESS;
    int r;
    *unmade = false;
    /* A copy going serves nothing from now on, before its files go: a
     * snapshot's reads and changed chunks come from a current peer. */
    if (drop)
        atomic_store(&v->serve_local, false);
    if (make && v->rec.local == STORE_LOCAL_DISKLESS)
        r = svol_attach_data(v->sv, next);
    else if (drop)
        r = svol_detach_data(v->sv, next);
    else if (make && (r = svol_wipe(v->sv)) < 0)
        qb_log(LOG_ERR, "volume \"%s\": its copy could not be emptied for a rebuild", v->name);
    else
        r = svol_set_state(v->sv, next);
    if (r < 0) {
        *unmade = make && replica_get(next, v->m->self) != REPLICA_NONE;
        qb_log(LOG_ERR, "volume \"%s\": the replica set could not be committed here (%s): %s",
               v->name, strerror(-r),
               *unmade ? "this node's new copy is failed, and outdated"
                       : "this node's copy stays as it was");
        /* An add that made no data file has nothing to fail. */
        next->local =
            *unmade && v->rec.local != STORE_LOCAL_DISKLESS ? STORE_LOCAL_FAILED : v->rec.local;
    } else if (drop && queue_job(v, empty_job, 0) < 0) {
        qb_log(LOG_WARNING, "volume \"%s\": out of memory to empty its snapshots' side files",
               v->name);
    }
    v->rec = *next;
    update_serve_local(v);
    return r;
}

/* After a commit_change that could not make this node's new copy, without
 * mu: the copy is outdated on this node's own word, as a disk that fails
 * an I/O is; the automatic rebuild then replaces it after [cluster]
 * replace_after, and a move waiting for it stops. */
static void outdate_uncommitted(struct mvol *v)
{
    pthread_mutex_lock(&v->mu);
    enum replica_state s = replica_get(&v->rec, v->m->self);
    pthread_mutex_unlock(&v->mu);
    if (s != REPLICA_SYNCING)
        return;
    int r = policing_replica_change(v->pc, v->vid, v->m->self, REPLICA_OUTDATED, 1, 0, false);
    if (r < 0)
        qb_log(LOG_ERR, "volume \"%s\": outdating the copy it could not make here: %s", v->name,
               strerror(-r));
}

/* What this node's copy becomes in a placed set: a replica (rebuilt in
 * full if it was diskless), or diskless. */
static void local_for(const struct mvol *v, struct store_volume *next)
{
    bool holds = replica_get(next, v->m->self) != REPLICA_NONE;
    if (!next->fixed)
        return;
    if (holds && next->local == STORE_LOCAL_DISKLESS)
        next->local = STORE_LOCAL_REBUILD;
    else if (!holds)
        next->local = STORE_LOCAL_DISKLESS;
}

/* With mu held: next without node's replica (the lease and dirty bitmap
 * of a peer's go with it). */
static void drop_replica(struct mvol *v, struct store_volume *next, uint32_t node)
{
    /* A current copy's reads may go on until its lease ends: a write that
     * leaves it out waits for that, as for an outdated copy (invariant 7). */
    if (replica_get(next, node) == REPLICA_CURRENT && node != v->m->self)
        lease_started(v, node);
    dirty_drop(v, node);
    replica_remove(next, node);
}

/* With mu held, on a copy just added: every region dirty for the peers
 * that are behind. This copy was not there for the writes they missed, so
 * once it is current and the copies that were are gone (a drain), their
 * resync would ask it, and its bitmap must cover what they lack. */
static void dirty_all_behind(struct mvol *v)
{
    uint64_t nr = nregions(v->m, vsize(v));
    for (uint32_t i = 0; nr > 0 && i < v->rec.nreplicas; i++) {
        const struct store_replica *r = &v->rec.replicas[i];
        if (r->node != v->m->self && r->state != REPLICA_CURRENT &&
            mark_dirty(v, r->node, 0, nr - 1) < 0)
            qb_log(LOG_ERR,
                   "volume \"%s\": node %u: its regions could not be recorded dirty here: "
                   "verify the volume once it is back",
                   v->name, r->node);
    }
}

/* The add, the removal, or both (from, node: 0 for none), checked first
 * as a whole, applied in one commit. */
static int change_set(struct mvol *v, uint32_t from, unsigned min_current, uint32_t node)
{
    bool failed = false;
    pthread_mutex_lock(&v->mu);
    struct store_volume next = v->rec;
    int r =
        from ? replica_change_check(next.replicas, next.nreplicas, false, from, min_current) : 0;
    if (r == 0 && node)
        r = replica_change_check(next.replicas, next.nreplicas, true, node, 0);
    enum replica_state was = replica_get(&next, from);
    if (r == 0 && from)
        drop_replica(v, &next, from);
    if (r == 0 && node && !replica_join(&next, node))
        r = -ENOSPC; /* nothing applied yet: next is dropped */
    if (r == 0) {
        next.fixed = 1;
        local_for(v, &next);
        /* Added here: a copy this node kept (one that had not joined an
         * unplaced volume's set yet) is as empty as a new one. */
        if (node == v->m->self)
            next.local = STORE_LOCAL_REBUILD;
        /* The set changed everywhere; only this copy may lag (logged). */
        r = commit_change(v, &next, &failed) < 0 ? -EIO : 0;
        if (node == v->m->self && next.local == STORE_LOCAL_REBUILD)
            dirty_all_behind(v);
        if (from)
            qb_log(LOG_NOTICE, "volume \"%s\": replica on node %u (%s) removed", v->name, from,
                   replica_state_name(was));
        if (node)
            qb_log(LOG_NOTICE, "volume \"%s\": replica on node %u added: syncing in full", v->name,
                   node);
    }
    pthread_mutex_unlock(&v->mu);
    if (failed)
        outdate_uncommitted(v);
    consider_resync(v);
    return r;
}

int mirror_replica_add(struct mvol *v, uint32_t node)
{
    return change_set(v, 0, 0, node);
}

int mirror_replica_remove(struct mvol *v, uint32_t node, unsigned min_current)
{
    return change_set(v, node, min_current, 0);
}

int mirror_replica_rebuild(struct mvol *v, uint32_t from, uint32_t node)
{
    /* A min_current above any count: from's copy may not be current. */
    return change_set(v, from, UINT_MAX, node);
}

void mirror_state_into(struct mvol *v, struct store_volume *rec)
{
    pthread_mutex_lock(&v->mu);
    rec->nreplicas = v->rec.nreplicas;
    memcpy(rec->replicas, v->rec.replicas, sizeof rec->replicas);
    rec->local = v->rec.local;
    rec->fixed = v->rec.fixed;
    pthread_mutex_unlock(&v->mu);
}

int mirror_replicas_load(struct mvol *v, const struct store_replica *r, uint32_t n, bool fixed)
{
    struct mirror *m = v->m;
    pthread_mutex_lock(&v->mu);
    bool same = n == v->rec.nreplicas && memcmp(r, v->rec.replicas, n * sizeof *r) == 0 &&
                fixed == (v->rec.fixed != 0);
    bool failed = false;
    int e = 0;
    if (!same) {
        struct store_volume before = v->rec;
        v->rec.nreplicas = n < STORE_REPLICAS_MAX ? n : STORE_REPLICAS_MAX;
        memcpy(v->rec.replicas, r, v->rec.nreplicas * sizeof *r);
        for (uint32_t i = 0; i < v->rec.nreplicas; i++) {
            uint32_t node = v->rec.replicas[i].node;
            if (node == m->self)
                continue;
            /* Outdated by the group meanwhile: its read lease may run on. */
            if (replica_get(&before, node) == REPLICA_CURRENT &&
                v->rec.replicas[i].state != REPLICA_CURRENT)
                lease_started(v, node);
            if (v->rec.replicas[i].state == REPLICA_OUTDATED && !dirty_for(v, node))
                e = -EIO; /* writes refuse to go on without it (mark_dirty) */
            else if (v->rec.replicas[i].state == REPLICA_CURRENT)
                dirty_drop(v, node);
        }
        for (uint32_t i = 0; i < before.nreplicas; i++) {
            const struct store_replica *b = &before.replicas[i];
            if (replica_get(&v->rec, b->node) != REPLICA_NONE || b->node == m->self)
                continue;
            /* removed meanwhile: as in drop_replica */
            if (b->state == REPLICA_CURRENT)
                lease_started(v, b->node);
            dirty_drop(v, b->node);
        }
        struct store_volume next = v->rec;
        next.fixed = fixed || v->rec.fixed;
        local_for(v, &next);
        v->rec = before; /* commit_change compares with what this copy was */
        int c = commit_change(v, &next, &failed);
        e = e < 0 ? e : c;
    }
    pthread_mutex_unlock(&v->mu);
    if (failed)
        outdate_uncommitted(v);
    consider_resync(v);
    return e;
}

/* With mu held: whether a replica other than node's is current on one of
 * members. */
static bool current_on_member(struct mvol *v, uint32_t node, const uint32_t *members,
                              size_t nmembers)
{
    bool found = false;
    for (uint32_t i = 0; i < v->rec.nreplicas && !found; i++) {
        const struct store_replica *r = &v->rec.replicas[i];
        for (size_t j = 0; j < nmembers && r->node != node && r->state == REPLICA_CURRENT; j++)
            found |= members[j] == r->node;
    }
    return found;
}

int mirror_node_left(struct mvol *v, uint32_t node, const struct pol_key *lost, size_t nlost,
                     const uint32_t *members, size_t nmembers)
{
    mlink_drop(v->m->link, node);
    /* Outdating the last current copy the group could reach would leave
     * the volume none: the copies on the nodes that went (a partition
     * that holds them all, or the last current one crashing) could never
     * be the source of a resync, though no write can have passed them (a
     * write needs a current copy to take it). Kept current, they serve
     * again once back. Every member applies this at the same point of
     * the agreed stream, with the same members. */
    pthread_mutex_lock(&v->mu);
    bool outdate = current_on_member(v, node, members, nmembers);
    bool last = !outdate && replica_get(&v->rec, node) == REPLICA_CURRENT;
    pthread_mutex_unlock(&v->mu);
    int changed = outdate ? mirror_replica_apply(v, node, REPLICA_OUTDATED, 1, 0) : 0;
    if (last)
        qb_log(LOG_WARNING,
               "volume \"%s\": node %u left with the group's last current copy: it stays "
               "current, and the volume takes no I/O until a node with a current copy is back",
               v->name, node);
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

/* ---- admin --------------------------------------------------------------------- */

static const char *local_name(uint8_t local)
{
    return local == STORE_LOCAL_FAILED     ? "failed"
           : local == STORE_LOCAL_REBUILD  ? "rebuild"
           : local == STORE_LOCAL_DISKLESS ? "diskless"
                                           : "ok";
}

int mirror_replica_fail(struct mvol *v)
{
    pthread_mutex_lock(&v->mu);
    if (v->rec.local == STORE_LOCAL_DISKLESS) {
        pthread_mutex_unlock(&v->mu);
        return -ENXIO; /* no copy here to fail or rebuild */
    }
    v->rec.local = STORE_LOCAL_FAILED;
    update_serve_local(v);
    int r = commit_state(v);
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
    if (v->rec.local == STORE_LOCAL_DISKLESS) {
        pthread_mutex_unlock(&v->mu);
        return -ENXIO; /* no copy here to fail or rebuild */
    }
    v->rec.local = STORE_LOCAL_REBUILD;
    update_serve_local(v);
    int r = commit_state(v);
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

struct walk {
    struct policing_progress *out;
    size_t n, max;
};

static void progress_of(struct mvol *v, void *arg)
{
    struct walk *w = arg;
    struct mirror_volume_status st;
    mirror_volume_status(v, &st);
    if (st.resyncing && st.resync_total > 0 && w->n < w->max)
        w->out[w->n++] = (struct policing_progress){v->m->self, v->vid, st.resync_done,
                                                    st.resync_total, (uint64_t)st.resync_rate};
}

size_t mirror_progress(struct mirror *m, struct policing_progress *out, size_t max)
{
    struct walk w = {out, 0, max};
    if (m)
        each_volume(m, progress_of, &w);
    return w.n;
}

/* ---- life cycle ---------------------------------------------------------------- */

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
    pthread_mutex_lock(&m->cut_mu); /* peers' writes waiting for a cut */
    pthread_cond_broadcast(&m->cut_cv);
    pthread_mutex_unlock(&m->cut_mu);
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
        r = commit_state(v);
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
    pthread_cond_init(&m->cut_cv, &ca); /* cut.c's deadline */
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&m->cut_mu, NULL);
    atomic_init(&m->cut_version, 0);
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
        .serve = serve_request,
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

static void detach_one(struct mvol *v, void *arg)
{
    (void)arg;
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
    each_volume(m, detach_one, NULL);
    mlink_stop(m->link);
    free(m->vols);
    pthread_rwlock_destroy(&m->reg);
    pthread_cond_destroy(&m->jcv);
    pthread_cond_destroy(&m->scv);
    pthread_mutex_destroy(&m->qmu);
    pthread_cond_destroy(&m->cut_cv);
    pthread_mutex_destroy(&m->cut_mu);
    pthread_mutex_destroy(&m->ckpt_mu);
    free(m);
}

void mirror_stats(struct mirror *m, struct mirror_stats *st)
{
    struct mlink_stats ls;
    mlink_stats(m->link, &ls);
    *st = (struct mirror_stats){ls.requests_sent, ls.requests_served, ls.refused};
}
