/* test_checker_judge.c - the readers' rule (tests/checker/judge.c): a
 * block read during the run holds a sequence from the last acknowledged
 * before the read was sent to the highest sent before it returned; zeroes
 * are stale once a write was acknowledged; a torn block passes only under
 * a write in flight; a later read may go back only across sequences not
 * acknowledged when it was sent. A snapshot (chk_snap_judge_*) holds the
 * cut's window, is never torn, and is a point in time: it holds every
 * write acknowledged before the latest write in it was sent. */
#include "tests/checker/block.h"
#include "tests/checker/judge.h"

#include <criterion/criterion.h>

#include <string.h>

#define WRITERS 3
#define BLOCK 7 /* owned by writer 1 */

static unsigned char buf[CHK_BLOCK_SIZE];

static enum chk_read_verdict judge_seq(uint64_t seq, uint64_t acked, uint64_t sent)
{
    struct chk_window w = {.acked_at_send = acked, .sent_at_return = sent};
    uint64_t got;

    if (seq)
        chk_block_encode(buf, BLOCK % WRITERS, BLOCK, seq);
    else
        memset(buf, 0, sizeof(buf));
    return chk_read_judge(buf, BLOCK, WRITERS, &w, &got);
}

Test(checker_judge, within_the_window)
{
    cr_assert_eq(judge_seq(5, 5, 5), CHK_READ_OK, "the last acknowledged");
    cr_assert_eq(judge_seq(6, 5, 6), CHK_READ_OK, "a write in flight, already there");
    cr_assert_eq(judge_seq(5, 5, 7), CHK_READ_OK, "writes in flight, not there yet");
    cr_assert_eq(judge_seq(6, 5, 9), CHK_READ_OK, "between");
    cr_assert_eq(judge_seq(0, 0, 0), CHK_READ_OK, "never written: zeroes");
    cr_assert_eq(judge_seq(0, 0, 1), CHK_READ_OK, "the first write in flight, not there yet");
}

Test(checker_judge, older_than_acknowledged_is_stale)
{
    cr_assert_eq(judge_seq(4, 5, 5), CHK_READ_STALE);
    cr_assert_eq(judge_seq(1, 9, 12), CHK_READ_STALE);
    cr_assert_eq(judge_seq(0, 1, 1), CHK_READ_STALE, "zeroes once a write was acknowledged");
    cr_assert(chk_read_violation(CHK_READ_STALE));
}

Test(checker_judge, newer_than_sent_is_refused)
{
    cr_assert_eq(judge_seq(6, 5, 5), CHK_READ_UNSENT);
    cr_assert_eq(judge_seq(1, 0, 0), CHK_READ_UNSENT);
    cr_assert(chk_read_violation(CHK_READ_UNSENT));
}

/* README's in-doubt rule: seq 6 went out and was never acknowledged (its
 * node died); until the region is reconciled one read may see 6 and a
 * later one 5 again. Once 6 is acknowledged, going back to 5 is stale. */
Test(checker_judge, going_back_only_across_unacknowledged)
{
    cr_assert_eq(judge_seq(6, 5, 6), CHK_READ_OK, "an earlier read sees the write in doubt");
    cr_assert_eq(judge_seq(5, 5, 6), CHK_READ_OK, "a later read does not");
    cr_assert_eq(judge_seq(5, 6, 6), CHK_READ_STALE, "not once 6 was acknowledged");
    /* 6 failed, 7 acknowledged: 5 and 6 are both behind an acknowledgement. */
    cr_assert_eq(judge_seq(6, 7, 7), CHK_READ_STALE);
}

Test(checker_judge, torn_only_under_a_write_in_flight)
{
    static unsigned char newer[CHK_BLOCK_SIZE];
    struct chk_window in_flight = {.acked_at_send = 3, .sent_at_return = 4};
    struct chk_window quiet = {.acked_at_send = 4, .sent_at_return = 4};
    uint64_t seq = 99;

    chk_block_encode(buf, BLOCK % WRITERS, BLOCK, 3);
    chk_block_encode(newer, BLOCK % WRITERS, BLOCK, 4);
    memcpy(buf, newer, 512);
    cr_assert_eq(chk_read_judge(buf, BLOCK, WRITERS, &in_flight, &seq), CHK_READ_TORN_IN_FLIGHT);
    cr_assert_eq(seq, 0);
    cr_assert_not(chk_read_violation(CHK_READ_TORN_IN_FLIGHT));
    cr_assert_eq(chk_read_judge(buf, BLOCK, WRITERS, &quiet, &seq), CHK_READ_TORN);
    cr_assert(chk_read_violation(CHK_READ_TORN));
}

Test(checker_judge, another_blocks_data_is_misplaced)
{
    struct chk_window w = {.acked_at_send = 0, .sent_at_return = 9};
    uint64_t seq;

    chk_block_encode(buf, (BLOCK + 3) % WRITERS, BLOCK + 3, 1);
    cr_assert_eq(chk_read_judge(buf, BLOCK, WRITERS, &w, &seq), CHK_READ_MISPLACED);
    chk_block_encode(buf, (BLOCK + 1) % WRITERS, BLOCK, 1);
    cr_assert_eq(chk_read_judge(buf, BLOCK, WRITERS, &w, &seq), CHK_READ_MISPLACED, "wrong writer");
    cr_assert(chk_read_violation(CHK_READ_MISPLACED));
}

/* A snapshot's blocks: the cut's window, from the last acknowledged
 * before `snapshot create` was sent to the highest sent when it
 * returned, and never torn, since a cut drains the writes. */
static uint64_t acked_before[WRITERS * 4], sent_after[WRITERS * 4];

static enum chk_read_verdict judge_snap(uint64_t seq, uint64_t acked, uint64_t sent)
{
    struct chk_cut c = {.acked_before = acked_before, .sent_after = sent_after};
    uint64_t got;

    acked_before[BLOCK] = acked;
    sent_after[BLOCK] = sent;
    if (seq)
        chk_block_encode(buf, BLOCK % WRITERS, BLOCK, seq);
    else
        memset(buf, 0, sizeof(buf));
    return chk_snap_judge_block(buf, BLOCK, WRITERS, &c, &got);
}

Test(checker_snap_judge, blocks_within_the_cut)
{
    cr_assert_eq(judge_snap(5, 5, 5), CHK_READ_OK);
    cr_assert_eq(judge_snap(7, 5, 7), CHK_READ_OK, "sent during the cut, in it");
    cr_assert_eq(judge_snap(5, 5, 7), CHK_READ_OK, "sent during the cut, not in it");
    cr_assert_eq(judge_snap(0, 0, 2), CHK_READ_OK, "never acknowledged before the cut");
    cr_assert_eq(judge_snap(4, 5, 7), CHK_READ_STALE, "acknowledged before the cut, not in it");
    cr_assert_eq(judge_snap(0, 1, 1), CHK_READ_STALE, "zeroes");
    cr_assert_eq(judge_snap(8, 5, 7), CHK_READ_UNSENT, "sent after the cut returned");
}

Test(checker_snap_judge, torn_never)
{
    static unsigned char newer[CHK_BLOCK_SIZE];
    struct chk_cut c = {.acked_before = acked_before, .sent_after = sent_after};
    uint64_t seq;

    acked_before[BLOCK] = 3;
    sent_after[BLOCK] = 4; /* a write in flight during the cut */
    chk_block_encode(buf, BLOCK % WRITERS, BLOCK, 3);
    chk_block_encode(newer, BLOCK % WRITERS, BLOCK, 4);
    memcpy(buf, newer, 512);
    cr_assert_eq(chk_snap_judge_block(buf, BLOCK, WRITERS, &c, &seq), CHK_READ_TORN);
    cr_assert(chk_read_violation(CHK_READ_TORN));
}

/* The causal rule: with held[b] the sequence the snapshot holds of block
 * b, and the writes sent and acknowledged while the cut was open, stamped
 * from one counter. */
static uint64_t causal(const uint64_t *held, const struct chk_stamped *sends, size_t nsends,
                       const struct chk_stamped *acks, size_t nacks, struct chk_causal_miss *m)
{
    struct chk_cut c = {.acked_before = acked_before,
                        .sent_after = sent_after,
                        .sends = sends,
                        .nsends = nsends,
                        .acks = acks,
                        .nacks = nacks};

    return chk_snap_judge_causal(&c, held, m);
}

Test(checker_snap_judge, a_write_without_the_one_acknowledged_before_it)
{
    /* Block 0's seq 2 acknowledged (stamp 5), then block 1's seq 3 sent
     * (stamp 10): a snapshot with block 1's seq 3 must have block 0's 2. */
    const struct chk_stamped sends[] = {{.block = 0, .seq = 2, .stamp = 1},
                                        {.block = 1, .seq = 3, .stamp = 10}};
    const struct chk_stamped acks[] = {{.block = 0, .seq = 2, .stamp = 5}};
    struct chk_causal_miss m = {0};
    uint64_t held[2] = {1, 3};

    cr_assert_eq(causal(held, sends, 2, acks, 1, &m), 1);
    cr_assert_eq(m.block, 0);
    cr_assert_eq(m.seq, 2);
    cr_assert_eq(m.held, 1);
    cr_assert_eq(m.t_block, 1);
    cr_assert_eq(m.t_seq, 3);
    held[0] = 2;
    cr_assert_eq(causal(held, sends, 2, acks, 1, &m), 0, "it holds it");
    held[0] = 4;
    cr_assert_eq(causal(held, sends, 2, acks, 1, &m), 0, "a newer write of that block");
    held[0] = 1;
    held[1] = 2;
    cr_assert_eq(causal(held, sends, 2, acks, 1, &m), 0, "without block 1's seq 3, no rule");
}

Test(checker_snap_judge, concurrent_writes_either_way)
{
    /* Block 1's seq 3 sent (stamp 4) before block 0's seq 2 was
     * acknowledged (stamp 6): the snapshot may hold either alone. */
    const struct chk_stamped sends[] = {{.block = 1, .seq = 3, .stamp = 4}};
    const struct chk_stamped acks[] = {{.block = 0, .seq = 2, .stamp = 6}};
    struct chk_causal_miss m;
    uint64_t held[2] = {1, 3};

    cr_assert_eq(causal(held, sends, 1, acks, 1, &m), 0);
    cr_assert_eq(causal(held, NULL, 0, acks, 1, &m), 0, "nothing held was sent in the cut");
}

Test(checker_snap_judge, the_latest_write_held_decides)
{
    /* Held: block 1's seq 3 (sent at 2) and block 2's seq 5 (sent at 9);
     * acknowledged at 7: block 0's seq 2, block 3's seq 8 (missing both),
     * at 11: block 4's seq 1 (missing, but after both sends). */
    const struct chk_stamped sends[] = {{.block = 1, .seq = 3, .stamp = 2},
                                        {.block = 2, .seq = 5, .stamp = 9},
                                        {.block = 2, .seq = 6, .stamp = 12}};
    const struct chk_stamped acks[] = {{.block = 0, .seq = 2, .stamp = 7},
                                       {.block = 3, .seq = 8, .stamp = 7},
                                       {.block = 4, .seq = 1, .stamp = 11}};
    struct chk_causal_miss m;
    uint64_t held[5] = {1, 3, 5, 7, 0};

    cr_assert_eq(causal(held, sends, 3, acks, 3, &m), 2);
    cr_assert_eq(m.t_block, 2, "T is block 2's seq 5, not block 2's seq 6 (not held)");
    cr_assert_eq(m.t_seq, 5);
}
