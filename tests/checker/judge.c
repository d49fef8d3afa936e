/* judge.c - the rule for a block read during the run (see judge.h). */
#include "tests/checker/judge.h"
#include "tests/checker/block.h"

#include <errno.h>

enum chk_read_verdict chk_read_judge(const void *buf, uint64_t block, uint32_t writers,
                                     const struct chk_window *w, uint64_t *seq)
{
    int r = chk_block_check(buf, block, writers, seq);

    if (r == -EDOM)
        return CHK_READ_MISPLACED;
    if (r < 0) {
        *seq = 0;
        /* A write was in flight if one had been sent and not acknowledged
         * when the read went out, or was sent while it was out. */
        return w->sent_at_return > w->acked_at_send ? CHK_READ_TORN_IN_FLIGHT : CHK_READ_TORN;
    }
    if (*seq < w->acked_at_send)
        return CHK_READ_STALE;
    if (*seq > w->sent_at_return)
        return CHK_READ_UNSENT;
    return CHK_READ_OK;
}

enum chk_read_verdict chk_snap_judge_block(const void *buf, uint64_t block, uint32_t writers,
                                           const struct chk_cut *c, uint64_t *seq)
{
    struct chk_window w = {.acked_at_send = c->acked_before[block],
                           .sent_at_return = c->sent_after[block]};
    enum chk_read_verdict v = chk_read_judge(buf, block, writers, &w, seq);

    return v == CHK_READ_TORN_IN_FLIGHT ? CHK_READ_TORN : v;
}

uint64_t chk_snap_judge_causal(const struct chk_cut *c, const uint64_t *held,
                               struct chk_causal_miss *first)
{
    /* T: the latest send stamp of a write the snapshot holds (each write
     * is sent, hence stamped, once); 0 if none was sent in the cut. */
    const struct chk_stamped *t = NULL;
    uint64_t misses = 0;

    for (size_t i = 0; i < c->nsends; i++) {
        const struct chk_stamped *s = &c->sends[i];
        if (held[s->block] == s->seq && (!t || s->stamp > t->stamp))
            t = s;
    }
    for (size_t i = 0; t && i < c->nacks; i++) {
        const struct chk_stamped *a = &c->acks[i];
        if (a->stamp >= t->stamp || held[a->block] >= a->seq)
            continue;
        if (misses++ == 0)
            *first = (struct chk_causal_miss){.block = a->block,
                                              .seq = a->seq,
                                              .held = held[a->block],
                                              .t_block = t->block,
                                              .t_seq = t->seq};
    }
    return misses;
}

int chk_read_violation(enum chk_read_verdict v)
{
    return v != CHK_READ_OK && v != CHK_READ_TORN_IN_FLIGHT;
}

const char *chk_read_verdict_str(enum chk_read_verdict v)
{
    switch (v) {
    case CHK_READ_OK:
        return "ok";
    case CHK_READ_TORN_IN_FLIGHT:
        return "torn under a write in flight";
    case CHK_READ_STALE:
        return "older than a write already acknowledged (stale)";
    case CHK_READ_UNSENT:
        return "a sequence not sent yet";
    case CHK_READ_TORN:
        return "torn or corrupt, no write in flight";
    case CHK_READ_MISPLACED:
        return "belongs to another block or writer";
    }
    return "?";
}
