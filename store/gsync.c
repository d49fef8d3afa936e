/* gsync.c - group commit (see gsync.h): the generation a leader starts at
 * is what its sync covers, so a change made while a sync runs waits for
 * the next one, and every thread waiting then shares it. */
#include "store/gsync.h"

#include <errno.h>

int gsync_init(struct gsync *g, pthread_mutex_t *lock)
{
    *g = (struct gsync){.lock = lock};
    return -pthread_cond_init(&g->done, NULL);
}

void gsync_destroy(struct gsync *g)
{
    pthread_cond_destroy(&g->done);
}

uint64_t gsync_change(struct gsync *g)
{
    return ++g->gen;
}

int gsync_wait(struct gsync *g, uint64_t target, int (*lead)(void *arg), void *arg)
{
    int r = 0;
    while (r == 0 && g->synced < target) {
        if (g->syncing) {
            pthread_cond_wait(&g->done, g->lock);
            continue;
        }
        uint64_t start = g->gen;
        g->syncing = true;
        r = lead(arg);
        if (r == 0 && start > g->synced)
            g->synced = start;
        g->syncing = false;
        pthread_cond_broadcast(&g->done);
    }
    return r;
}

void gsync_idle(struct gsync *g)
{
    while (g->syncing)
        pthread_cond_wait(&g->done, g->lock);
}

void gsync_all_durable(struct gsync *g)
{
    g->synced = g->gen;
}
