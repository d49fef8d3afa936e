/* workers.c - the workers' queue: resyncs (resync.c), background
 * reconciles (reconcile.c) and checkpoints (activity.c) wait here, each
 * with a reference to its volume, for one of WORKERS threads, not before
 * their due time (a retry's pause holds no worker). Guarded by the
 * engine's qmu; the threads start and stop with the engine (engine.c).
 */
#include "mirror/engine_int.h"

#include "common/clock.h"

#include <errno.h>
#include <stdlib.h>

/* Queues fn(v) for a worker, not before after_ms, holding a reference to
 * v until it has run. */
int queue_job(struct mvol *v, void (*fn)(struct mvol *v), unsigned after_ms)
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

void *worker_main(void *arg)
{
    struct mirror *m = arg;
    for (struct job *j; (j = next_job(m));) {
        j->fn(j->v);
        mvol_unref(j->v);
        free(j);
    }
    return NULL;
}
