/* gsync.h - group commit: threads that each need their changes durable
 * share one sync instead of queueing one each.
 *
 * The owner keeps its changes under its own mutex and calls these with it
 * held. Each change takes a generation (gsync_change); a thread that needs
 * its change durable calls gsync_wait with that generation. If no sync is
 * running it leads one: lead(arg) runs with the mutex held, may drop it
 * while it writes and syncs (and must retake it before returning), and
 * makes durable every change made before it was called. The threads that
 * arrive meanwhile wait and share the next sync. A failed sync makes its
 * leader return the error; a waiter then leads the next attempt itself.
 *
 * Used by store/bitmap.c (dirty bitmaps) and store/snap.c (copy-on-write).
 */
#ifndef VSAN_STORE_GSYNC_H
#define VSAN_STORE_GSYNC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct gsync {
    pthread_mutex_t *lock; /* the owner's */
    pthread_cond_t done;
    uint64_t gen;    /* changes made so far */
    uint64_t synced; /* every change up to this generation is durable */
    bool syncing;    /* a leader is running */
};

/* lock is the owner's mutex, which every other call holds. 0 or -errno. */
int gsync_init(struct gsync *g, pthread_mutex_t *lock);
void gsync_destroy(struct gsync *g);

/* One more change; returns its generation, for gsync_wait. */
uint64_t gsync_change(struct gsync *g);
/* Returns once every change up to target is durable (0), or with the
 * error of a sync this thread led. */
int gsync_wait(struct gsync *g, uint64_t target, int (*lead)(void *arg), void *arg);
/* Returns once no sync is running (for changes that rewrite everything). */
void gsync_idle(struct gsync *g);
/* Every change so far is durable (the owner rewrote and synced it all). */
void gsync_all_durable(struct gsync *g);

#endif
