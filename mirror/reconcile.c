/* reconcile.c - regions a departed writer may have left unequal.
 *
 * A node that dies while it holds a region's write priority may have sent a
 * write to some replicas and not to others. The agreed leave names the
 * regions it held (POL_LOST); every survivor marks them lost at the same
 * point of the agreed order, and from then on no write to one starts before
 * the holder of its priority has made every current replica equal: it
 * compares the region's CRC-64s and, if they differ (or this copy is not
 * current), copies the region from a current copy to every copy, flagged
 * MW_F_RECONCILE; a region found equal gets its first 4 KiB so flagged.
 * Whoever applies such a write clears the mark, and writes only what its
 * copy does not already hold, per 64 KiB chunk (reconcile_apply): chunks it holds stay as
 * they are, so the snapshots copy nothing on write and their dirty bitmaps
 * name no change. The write in doubt was never acknowledged, so either
 * version is right; a client that resends it writes over a region that is
 * equal everywhere. The departed node's connections
 * are dropped when its leave is applied (mlink_drop), so none of its
 * writes still queued on a link lands after the compare. If the reconciling node dies too, it held
 * the priority, so the region is lost again and the next holder starts
 * over. One survivor (the current replica with the lowest id) also works
 * through the marks in the background. The marks are kept in memory; what
 * a power cut of the whole cluster would make them forget, the activity
 * logs keep (activity.c).
 *
 * The marks themselves are in lost.c; the regions an activity log carried
 * over a power cut are marked here too (lost_from_log, mirror_regions_lost).
 */
#include "mirror/engine_int.h"

#include "mirror/replicas.h"
#include "policing/protocol.h"
#include "store/actlog.h"
#include "store/svol.h"
#include "store/snap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

/* The background reconcile on a current copy that is not the lowest id
 * starts this much after the lowest's. */
#define RECONCILE_LATER_MS 10000

/* One read more per reconcile write, which only a writer's death causes;
 * compared per snapshot chunk, so a copy that differs in one byte gets
 * (and its snapshots copy) that chunk only. */
int reconcile_apply(struct mvol *v, const void *buf, uint32_t count, uint64_t offset,
                    unsigned flags)
{
    unsigned char *held = malloc(count);
    if (!held)
        return -ENOMEM;
    int r = svol_read(v->sv, held, count, offset, 0);
    bool unread = r < 0; /* then everything is written */
    r = 0;
    for (uint32_t done = 0, n; r == 0 && done < count; done += n) {
        uint64_t at = offset + done;
        n = (uint32_t)(SNAP_CHUNK - (at & (SNAP_CHUNK - 1)));
        if (n > count - done)
            n = count - done;
        if (unread || memcmp(held + done, (const unsigned char *)buf + done, n) != 0)
            r = svol_write(v->sv, (const unsigned char *)buf + done, n, at, flags);
    }
    free(held);
    return r;
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
            start_write(&w, MW_WRITE, buf, n, off + done, 0, reconcile_apply, NULL);
            mlink_wait(&w.w);
            e = settle_write(&w);
        }
        done += n;
    }
    return e;
}

/* Makes region r equal on every copy; the caller holds its priority and
 * its whole range. */
int reconcile_region(struct mvol *v, uint64_t r)
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
        qb_log(LOG_WARNING, "volume \"%s\": region %llu: reconciling: %s", v->name,
               (unsigned long long)r, strerror(-e));
        return e;
    }
    pthread_mutex_lock(&v->mu);
    lost_set(v, r, false);
    pthread_mutex_unlock(&v->mu);
    qb_log(LOG_INFO, "volume \"%s\": region %llu: reconciled (%s)", v->name, (unsigned long long)r,
           differs ? "copies differed" : "copies were equal");
    return 0;
}

/* Reconciles the lost regions among first..last, each under its whole
 * range; the caller holds their priority and no range of them. */
int reconcile_lost(struct mvol *v, uint64_t first, uint64_t last, bool wait)
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
void consider_reconcile(struct mvol *v)
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
               "volume \"%s\": %zu regions node %u may have written to some copies only are "
               "lost until reconciled",
               v->name, j - i, from);
        mvol_unref(v);
    }
}

/* With mu held: the regions of v this node's log carried from before its
 * start are lost, if its copy takes writes (as for a departure's regions,
 * mirror_node_left: the current copies reconcile; an outdated one is
 * resynced from them). */
void lost_from_log(struct mvol *v)
{
    size_t cap = v->m->al && holds_copy(v) ? actlog_carried(v->m->al, NULL, 0) : 0;
    struct actlog_key *k = cap ? malloc(cap * sizeof *k) : NULL;
    size_t n = k ? actlog_carried(v->m->al, k, cap) : 0;
    for (size_t i = 0; i < n && i < cap; i++)
        if (k[i].volume == v->vid)
            lost_set(v, k[i].region, true);
    free(k);
}
