/* resync.c - the resync of this node's copy when it is outdated (or
 * rebuilt): once every current peer is linked it asks to be syncing, takes
 * the union of their dirty bitmaps for it (and of its own), copies those
 * regions from a current peer under region priority, so the copy is
 * ordered against client writes like any other writer, and asks to be
 * current. Queued on the workers (workers.c) whenever the cluster is
 * synced and quorate (refresh_peers), tried again after a growing pause.
 */
#include "mirror/engine_int.h"

#include "mirror/replicas.h"
#include "policing/protocol.h"
#include "store/bitmap.h"
#include "store/snap.h"
#include "store/svol.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <qb/qblog.h>

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

/* Copies [off, off+n) of snapshot s (clipped to its size) from a current
 * peer into this node's s. A peer lacking s fails the step: s was cut on
 * every copy of the volume, so a current one without it means the
 * snapshot was deleted meanwhile (the next attempt lists them again). */
static int copy_snapshot(struct mvol *v, uint64_t r, const struct snap_info *s, uint64_t off,
                         uint32_t n, void *buf)
{
    if (off >= s->size)
        return 0;
    uint32_t len = s->size - off < n ? (uint32_t)(s->size - off) : n;
    int e = snap_read_peer(v, s->id, buf, len, off);
    if (e == -ENOENT) {
        qb_log(LOG_WARNING,
               "volume \"%s\": resync: region %llu: snapshot %llu (\"%s\"): no current peer has "
               "it",
               v->name, (unsigned long long)r, (unsigned long long)s->id, s->name);
        return e;
    }
    if (e == 0)
        e = snap_put(svol_snapshots(v->sv), s->id, buf, len, off);
    /* Deleted here meanwhile: its delete merged what an older one needs,
     * and that one is copied on its own. */
    if (e == -ENOENT)
        return 0;
    if (e < 0)
        qb_log(LOG_WARNING, "volume \"%s\": resync: region %llu: snapshot %llu: at %llu: %s",
               v->name, (unsigned long long)r, (unsigned long long)s->id, (unsigned long long)off,
               strerror(-e));
    return e;
}

/* Copies [off, off+n) of region r's chunks in every snapshot this node
 * has, oldest first, from a current peer. Before the live data: the live
 * write's copy-on-write then finds the newest snapshot holding those
 * chunks and copies nothing (after it, it would copy this copy's stale
 * chunk into the newest snapshot, only for the put to overwrite it). Each
 * snapshot gets its own copy of every chunk put, so none depends on what
 * the chain here held: k snapshots, up to k + 1 copies of a dirty region.
 * A crash in between is harmless: the region stays dirty until the whole
 * resync ends, and this copy serves nothing meanwhile. */
static int copy_snapshots(struct mvol *v, uint64_t r, uint64_t off, uint32_t n, void *buf)
{
    struct snapset *ss = svol_snapshots(v->sv);
    unsigned count = snap_count(ss);
    if (count == 0)
        return 0;
    struct snap_info *si = malloc(count * sizeof *si);
    if (!si)
        return -ENOMEM;
    int k = snap_list(ss, si, count);
    int e = 0;
    for (int i = 0; e == 0 && i < k && i < (int)count; i++)
        e = copy_snapshot(v, r, &si[i], off, n, buf);
    free(si);
    return e;
}

/* Copies region r from a current peer, holding its write priority and
 * keeping this node's own writes to it out meanwhile: its snapshots'
 * chunks (copy_snapshots), then its live data. */
static int copy_region_held(struct mvol *v, uint64_t r, void *buf)
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
        e = copy_snapshots(v, r, off + done, n, buf);
        if (e == 0)
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

/* A copy never straddles a cut (mirror/cut.c): a copy of the live data
 * whose snapshot chunks were taken before the cut would leave the new
 * snapshot's chunks of the region as this stale copy had them. */
static int copy_region(struct mvol *v, uint64_t r, void *buf)
{
    int e = copy_enter(v);
    /* The cut copy_enter waited out may have removed this copy. */
    if (e == 0 && !still_syncing(v))
        e = -ECANCELED;
    if (e == 0)
        e = copy_region_held(v, r, buf);
    copy_leave(v);
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
    /* A copy joining the set is rebuilt in full; marked so first, so that
     * an attempt that fails midway is followed by a full one again, not by
     * one of the dirty regions only (the peers recorded none for it). */
    if (s == REPLICA_NONE && v->rec.local == STORE_LOCAL_OK) {
        v->rec.local = STORE_LOCAL_REBUILD;
        if (commit_state(v) < 0)
            v->rec.local = STORE_LOCAL_OK;
    }
    bool full = v->rec.local == STORE_LOCAL_REBUILD;
    pthread_mutex_unlock(&v->mu);
    if (s == REPLICA_NONE && !full)
        return -EIO; /* the mark could not be committed: logged by the store */
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
        /* Still the copy being rebuilt: a removal (diskless now) or a
         * failure meanwhile must not be overwritten. */
        if (v->rec.local == STORE_LOCAL_REBUILD &&
            replica_get(&v->rec, m->self) == REPLICA_SYNCING) {
            v->rec.local = STORE_LOCAL_OK;
            r = commit_state(v);
        } else {
            r = -ECANCELED;
        }
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
    return v->rec.local != STORE_LOCAL_FAILED && v->rec.local != STORE_LOCAL_DISKLESS &&
           s != REPLICA_CURRENT && !atomic_load(&v->gone);
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

void consider_resync(struct mvol *v)
{
    pthread_mutex_lock(&v->mu);
    consider_resync_locked(v);
    pthread_mutex_unlock(&v->mu);
}

static void resync_each(struct mvol *v, void *arg)
{
    (void)arg;
    consider_resync(v);
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
        each_volume(m, resync_each, NULL);
}

void mirror_changed(struct mirror *m)
{
    if (m)
        refresh_peers(m);
}
