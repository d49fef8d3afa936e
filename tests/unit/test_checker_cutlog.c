/* test_checker_cutlog.c - the writers' stamps for the snapshotter
 * (tests/checker/cutlog.c): every write is stamped from one counter, in
 * the order the calls happen; only the writes stamped while a cut is open
 * are kept, and closing the cut hands them over and starts afresh. */
#include "tests/checker/cutlog.h"

#include <criterion/criterion.h>

#include <stdlib.h>

Test(checker_cutlog, kept_only_while_a_cut_is_open)
{
    struct chk_cut_log l;
    struct chk_stamps sends = {0}, acks = {0};

    chk_cut_log_init(&l);
    chk_cut_log_send(&l, 1, 1); /* before the cut: not kept */
    chk_cut_log_open(&l);
    chk_cut_log_ack(&l, 1, 1);
    chk_cut_log_send(&l, 2, 5);
    chk_cut_log_ack(&l, 2, 5);
    cr_assert_eq(chk_cut_log_close(&l, &sends, &acks), 0);
    chk_cut_log_send(&l, 3, 1); /* after it: not kept */

    cr_assert_eq(sends.n, 1);
    cr_assert_eq(sends.v[0].block, 2);
    cr_assert_eq(sends.v[0].seq, 5);
    cr_assert_eq(acks.n, 2);
    cr_assert_eq(acks.v[0].block, 1);
    cr_assert_eq(acks.v[1].block, 2);
    cr_assert_lt(acks.v[0].stamp, sends.v[0].stamp, "stamps follow the calls");
    cr_assert_lt(sends.v[0].stamp, acks.v[1].stamp);
    cr_assert_gt(acks.v[0].stamp, 1, "the write before the cut was stamped too");

    /* The next cut starts empty, and the arrays go back and forth. */
    chk_cut_log_open(&l);
    chk_cut_log_send(&l, 4, 1);
    cr_assert_eq(chk_cut_log_close(&l, &sends, &acks), 0);
    cr_assert_eq(sends.n, 1);
    cr_assert_eq(sends.v[0].block, 4);
    cr_assert_eq(acks.n, 0);
    free(sends.v);
    free(acks.v);
    chk_cut_log_free(&l);
}

Test(checker_cutlog, many_writes_in_one_cut)
{
    struct chk_cut_log l;
    struct chk_stamps sends = {0}, acks = {0};

    chk_cut_log_init(&l);
    chk_cut_log_open(&l);
    for (uint64_t i = 0; i < 5000; i++)
        chk_cut_log_send(&l, i, 1);
    cr_assert_eq(chk_cut_log_close(&l, &sends, &acks), 0);
    cr_assert_eq(sends.n, 5000);
    for (size_t i = 1; i < sends.n; i++)
        cr_assert_eq(sends.v[i].stamp, sends.v[i - 1].stamp + 1);
    free(sends.v);
    free(acks.v);
    chk_cut_log_free(&l);
}
