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
