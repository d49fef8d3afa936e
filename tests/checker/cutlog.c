/* cutlog.c - the writers' stamps while a cut is open (see cutlog.h).
 *
 * The counter and the open flag are sequentially consistent: a writer
 * stamps, then looks at the flag; the snapshotter raises the flag, then
 * loads the journal's acked bounds. So any write stamped after the flag
 * was raised sees it and is kept; one stamped before may or may not be,
 * and judge.h needs none of those: such a send precedes every kept
 * acknowledgement, and such an acknowledgement was recorded in the
 * journal before the bounds were loaded. A writer that saw the flag just before
 * the close may add its event after the snapshotter took the arrays: it
 * lands in the next cut's, where it is still a true fact about the order
 * of two writes, so it cannot make a verdict wrong.
 */
#include "tests/checker/cutlog.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void chk_cut_log_init(struct chk_cut_log *l)
{
    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->lock, NULL);
}

void chk_cut_log_free(struct chk_cut_log *l)
{
    free(l->sends.v);
    free(l->acks.v);
    pthread_mutex_destroy(&l->lock);
}

static int push(struct chk_stamps *s, const struct chk_stamped *e)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1024;
        struct chk_stamped *v = realloc(s->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = *e;
    return 0;
}

static void stamp(struct chk_cut_log *l, struct chk_stamps *s, uint64_t block, uint64_t seq)
{
    struct chk_stamped e = {
        .block = block, .seq = seq, .stamp = __atomic_add_fetch(&l->clock, 1, __ATOMIC_SEQ_CST)};

    if (!__atomic_load_n(&l->open, __ATOMIC_SEQ_CST))
        return;
    pthread_mutex_lock(&l->lock);
    if (push(s, &e) < 0)
        l->short_of_memory = true;
    pthread_mutex_unlock(&l->lock);
}

void chk_cut_log_send(struct chk_cut_log *l, uint64_t block, uint64_t seq)
{
    stamp(l, &l->sends, block, seq);
}

void chk_cut_log_ack(struct chk_cut_log *l, uint64_t block, uint64_t seq)
{
    stamp(l, &l->acks, block, seq);
}

void chk_cut_log_open(struct chk_cut_log *l)
{
    pthread_mutex_lock(&l->lock);
    l->sends.n = 0;
    l->acks.n = 0;
    l->short_of_memory = false;
    pthread_mutex_unlock(&l->lock);
    __atomic_store_n(&l->open, true, __ATOMIC_SEQ_CST);
}

static void swap(struct chk_stamps *a, struct chk_stamps *b)
{
    struct chk_stamps t = *a;

    *a = *b;
    *b = t;
}

int chk_cut_log_close(struct chk_cut_log *l, struct chk_stamps *sends, struct chk_stamps *acks)
{
    bool short_of_memory;

    __atomic_store_n(&l->open, false, __ATOMIC_SEQ_CST);
    sends->n = 0;
    acks->n = 0;
    pthread_mutex_lock(&l->lock);
    swap(&l->sends, sends);
    swap(&l->acks, acks);
    short_of_memory = l->short_of_memory;
    pthread_mutex_unlock(&l->lock);
    return short_of_memory ? -ENOMEM : 0;
}
