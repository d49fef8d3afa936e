/* cut.c - the engine's part in a cut (policing/cut.h): what "drained"
 * means for a volume here, and the order of the peers' writes around it.
 *
 * Drained: no write, resync copy or reconcile of this node in flight on
 * the volume (each holds a range lock until every current copy has
 * applied it), no resync copy about to start (they are held while the
 * cut is open), and no lost region (a region whose copies may differ
 * would leave the copies' snapshots different for good). The volume layer
 * holds the client writes; a reconcile may still run while the cut drains,
 * since clearing the lost regions is part of draining.
 *
 * Peers' writes: every node commits a cut at the same point of the
 * agreed stream, but not at the same moment. A node that has committed
 * lets its held writes go, and one may reach a peer that has not reached
 * the commit yet: applied there before its cut, it would be in that
 * copy's snapshot and not in the others'. So every WRITE and ZERO carries
 * the sender's cut version (the id of the last cut it committed, or the
 * group's, loaded in a sync round), and a peer behind it holds the write
 * until it has committed that cut too (the commit is already on its way
 * to it: the sender saw it), at most the mirror timeout.
 */
#include "mirror/engine_int.h"

#include <errno.h>
#include <time.h>

#include <qb/qblog.h>

void mirror_cut_hold(struct mvol *v)
{
    pthread_mutex_lock(&v->rmu);
    v->cut_held = true;
    pthread_mutex_unlock(&v->rmu);
}

/* Lost marks count only on a copy that takes writes: an outdated copy's
 * marks are cleared by its resync, not a reconcile, and its snapshots are
 * repaired by that resync too. */
bool mirror_cut_idle(struct mvol *v)
{
    pthread_mutex_lock(&v->rmu);
    bool idle = !v->inflight && v->copying == 0;
    pthread_mutex_unlock(&v->rmu);
    if (!idle || atomic_load(&v->nlost) == 0)
        return idle;
    pthread_mutex_lock(&v->mu);
    bool lost_here = holds_copy(v);
    pthread_mutex_unlock(&v->mu);
    return !lost_here;
}

/* The writes a peer had acknowledged (sync = received) were all counted in
 * `applying` before it sent its DRAINED, so before the cut's commit here;
 * those after the commit stop at cut_wait, before they count. */
int mirror_cut_settle(struct mvol *v)
{
    struct timespec pause = {0, 100 * 1000};
    for (unsigned waited_us = 0; atomic_load(&v->applying) > 0; waited_us += 100) {
        if (waited_us / 1000 >= v->m->p.timeout_ms) {
            qb_log(LOG_ERR,
                   "volume \"%s\": a peer's write still not applied after %u ms: the "
                   "snapshot is cut without waiting longer",
                   v->name, v->m->p.timeout_ms);
            return -ETIMEDOUT;
        }
        nanosleep(&pause, NULL);
    }
    return 0;
}

void mirror_cut_release(struct mvol *v)
{
    pthread_mutex_lock(&v->rmu);
    v->cut_held = false;
    pthread_cond_broadcast(&v->rcv);
    pthread_mutex_unlock(&v->rmu);
}

int copy_enter(struct mvol *v)
{
    pthread_mutex_lock(&v->rmu);
    while (v->cut_held && !atomic_load(&v->gone) && !atomic_load(&v->m->stopping))
        pthread_cond_wait(&v->rcv, &v->rmu);
    v->copying++;
    pthread_mutex_unlock(&v->rmu);
    return atomic_load(&v->gone) || atomic_load(&v->m->stopping) ? -ESHUTDOWN : 0;
}

void copy_leave(struct mvol *v)
{
    pthread_mutex_lock(&v->rmu);
    v->copying--;
    pthread_mutex_unlock(&v->rmu);
}

void mirror_cut_applied(struct mirror *m, uint64_t version)
{
    pthread_mutex_lock(&m->cut_mu);
    atomic_store(&m->cut_version, version);
    pthread_cond_broadcast(&m->cut_cv);
    pthread_mutex_unlock(&m->cut_mu);
}

uint32_t cut_stamp(struct mirror *m)
{
    return (uint32_t)atomic_load(&m->cut_version);
}

static bool behind(struct mirror *m, uint32_t stamp)
{
    return (int32_t)(stamp - cut_stamp(m)) > 0;
}

int cut_wait(struct mirror *m, uint32_t stamp, uint32_t peer)
{
    if (!behind(m, stamp))
        return 0;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += m->p.timeout_ms / 1000;
    until.tv_nsec += (long)(m->p.timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    int e = 0;
    pthread_mutex_lock(&m->cut_mu);
    while (e == 0 && behind(m, stamp) && !atomic_load(&m->stopping))
        e = pthread_cond_timedwait(&m->cut_cv, &m->cut_mu, &until);
    bool late = behind(m, stamp);
    pthread_mutex_unlock(&m->cut_mu);
    if (!late)
        return 0;
    qb_log(LOG_ERR,
           "node %u's write: it follows cut %u, which this node has not committed in %u ms", peer,
           stamp, m->p.timeout_ms);
    return -ETIMEDOUT;
}
