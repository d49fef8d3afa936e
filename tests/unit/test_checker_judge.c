/* test_checker_judge.c - the readers' rule (tests/checker/judge.c): a
 * block read during the run holds a sequence from the last acknowledged
 * before the read was sent to the highest sent before it returned; zeroes
 * are stale once a write was acknowledged; a torn block passes only under
 * a write in flight; a later read may go back only across sequences not
 * acknowledged when it was sent. */
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
