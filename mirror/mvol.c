/* mvol.c - one volume's replication state (struct mvol, engine_int.h) and
 * the small things every part of the engine asks of it: its size and
 * regions, its references, the commit of its record, whether its copy
 * serves reads or takes writes, and the writes in flight from this node
 * (range locks: overlapping ones go one after the other, invariant 4).
 *
 * The bottom of the engine: it calls nothing else of mirror/.
 */
#include "mirror/engine_int.h"

#include "mirror/replicas.h"
#include "store/bitmap.h"
#include "store/svol.h"

#include <stdlib.h>
#include <time.h>

uint64_t vsize(const struct mvol *v)
{
    return atomic_load_explicit(&v->size, memory_order_acquire);
}

/* The bytes of region r within the volume now; 0 past its end (a shrink
 * since the caller chose r). */
uint64_t region_len(const struct mvol *v, uint64_t r)
{
    uint64_t off = r << v->m->rs_shift, size = vsize(v);
    return off >= size ? 0 : size - off < v->m->rs ? size - off : v->m->rs;
}

/* With mu held: commits rec's replica set and local state to the store. */
int commit_state(struct mvol *v)
{
    return svol_set_state(v->sv, &v->rec);
}

void mvol_ref(struct mvol *v)
{
    atomic_fetch_add(&v->refs, 1);
}

void mvol_unref(struct mvol *v)
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

uint64_t nregions(struct mirror *m, uint64_t size)
{
    return (size + m->rs - 1) >> m->rs_shift;
}

double seconds_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* With mv->mu held: whether this node's copy may serve reads. */
void update_serve_local(struct mvol *v)
{
    bool ok = replica_get(&v->rec, v->m->self) == REPLICA_CURRENT && v->rec.local == STORE_LOCAL_OK;
    atomic_store(&v->serve_local, ok);
}

/* With mu held: whether this node's copy of v takes writes, so that the
 * lost marks here are cleared by the reconcile that makes it equal. */
bool holds_copy(struct mvol *v)
{
    enum replica_state self = replica_get(&v->rec, v->m->self);
    return self == REPLICA_CURRENT || self == REPLICA_SYNCING;
}

/* ---- writes in flight from this node ---------------------------------- */

/* Enters x's range into the writes in flight, once no overlapping one is;
 * without wait, returns false at once rather than wait. */
bool range_lock(struct mvol *mv, struct inflight *x, uint64_t offset, uint64_t len, bool wait)
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

void range_unlock(struct mvol *mv, struct inflight *x)
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
