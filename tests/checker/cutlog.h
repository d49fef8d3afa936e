/* cutlog.h - what the writers tell the snapshotter about the order of
 * their writes (judge.h's causal rule needs it).
 *
 * One counter stamps every write before it is first sent and after its
 * acknowledgement is recorded: a total order that agrees with real time
 * where it matters, because a send is stamped before it leaves and an
 * acknowledgement after it came back (so "W1's ack stamp < W2's send
 * stamp" implies W1 was acknowledged before W2 was sent). While a cut is open, the stamped writes
 * are also kept, in two arrays the snapshotter takes when it closes the cut. Outside cuts a write
 * costs one atomic increment and one load.
 *
 * Why stamps and not the journal's per-block state alone: the journal
 * says which sequence of a block was the last acknowledged or sent at
 * one moment, not whether a write of one block was acknowledged before a
 * write of another was sent, and that is the causal rule.
 */
#ifndef VSAN_CHECKER_CUTLOG_H
#define VSAN_CHECKER_CUTLOG_H

#include "tests/checker/judge.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct chk_stamps {
    struct chk_stamped *v;
    size_t n, cap;
};

struct chk_cut_log {
    pthread_mutex_t lock;
    uint64_t clock;       /* atomic */
    bool open;            /* atomic */
    bool short_of_memory; /* an event could not be kept: the cut cannot be judged */
    struct chk_stamps sends, acks;
};

void chk_cut_log_init(struct chk_cut_log *l);
void chk_cut_log_free(struct chk_cut_log *l);

/* A writer: write seq of block is about to be sent for the first time
 * (before the journal's sent is raised), or its acknowledgement was just
 * recorded (after the journal's acked is). */
void chk_cut_log_send(struct chk_cut_log *l, uint64_t block, uint64_t seq);
void chk_cut_log_ack(struct chk_cut_log *l, uint64_t block, uint64_t seq);

/* The snapshotter: opens a cut, before it loads the journal's acked
 * bounds; closes it once it loaded the sent bounds after the command
 * returned, and takes the events into *sends and *acks (emptied first;
 * the caller keeps and frees them). -ENOMEM if an event was dropped. */
void chk_cut_log_open(struct chk_cut_log *l);
int chk_cut_log_close(struct chk_cut_log *l, struct chk_stamps *sends, struct chk_stamps *acks);

#endif
