/* activity.c - the activity log.
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
#include "mirror/engine_int.h"

#include "store/actlog.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

/* Regions an activity log call covers with keys on the stack (a write of
 * 32 MiB in 4 MiB regions touches 9; at most MWIRE_IO_MAX / region size
 * + 1, 513 with 64 KiB regions): more go in a buffer of their own. */
#define LOG_STACK 16
/* A write finding the log full of regions not reconciled yet waits for
 * them this many times 100 ms, then fails. */
#define LOG_WAIT_STEPS 600

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
bool regions_logged(struct mvol *v, uint64_t first, uint64_t last)
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
int logged_range_lock(struct mvol *v, struct inflight *x, uint64_t offset, uint64_t len,
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
