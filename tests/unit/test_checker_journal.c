/* test_checker_journal.c - the lost-write checker's journal
 * (tests/checker/journal.c): what a run saves is what the verifier loads,
 * and a damaged journal is refused rather than trusted. */
#include "tests/checker/journal.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char path[] = "/tmp/test_checker_journal.XXXXXX";

static void setup(void)
{
    int fd = mkstemp(path);

    cr_assert_geq(fd, 0);
    close(fd);
}

static void teardown(void)
{
    unlink(path);
}

TestSuite(checker_journal, .init = setup, .fini = teardown);

Test(checker_journal, round_trip)
{
    struct chk_journal j, k;

    cr_assert_eq(chk_journal_init(&j, 1 << 20, 3), 0);
    cr_assert_eq(j.nblocks, 256);
    j.blocks[0] = (struct chk_entry){.acked = 4, .sent = 5};
    j.blocks[255] = (struct chk_entry){.acked = 9, .sent = 9};
    j.acknowledged = 13;
    j.failed = 1;
    j.reads = 70;
    j.stale = 2;
    j.snapshots = 11;
    j.snap_checked = 10;
    j.snap_bad = 3;
    cr_assert_eq(chk_journal_save(&j, path), 0);
    cr_assert_eq(chk_journal_load(&k, path), 0);
    cr_assert_eq(k.volume_size, 1 << 20);
    cr_assert_eq(k.writers, 3);
    cr_assert_eq(k.acknowledged, 13);
    cr_assert_eq(k.failed, 1);
    cr_assert_eq(k.reads, 70);
    cr_assert_eq(k.stale, 2);
    cr_assert_eq(k.snapshots, 11);
    cr_assert_eq(k.snap_checked, 10);
    cr_assert_eq(k.snap_bad, 3);
    cr_assert_eq(k.blocks[0].acked, 4);
    cr_assert_eq(k.blocks[0].sent, 5);
    cr_assert_eq(k.blocks[255].sent, 9);
    cr_assert_eq(k.blocks[100].sent, 0);
    chk_journal_free(&j);
    chk_journal_free(&k);
}

Test(checker_journal, bad_shapes_refused)
{
    struct chk_journal j;

    cr_assert_eq(chk_journal_init(&j, 4095, 1), -EINVAL);
    cr_assert_eq(chk_journal_init(&j, 0, 1), -EINVAL);
    cr_assert_eq(chk_journal_init(&j, 4096, 0), -EINVAL);
}

Test(checker_journal, truncated_or_foreign_file_refused)
{
    struct chk_journal j, k;

    cr_assert_eq(chk_journal_init(&j, 1 << 20, 2), 0);
    cr_assert_eq(chk_journal_save(&j, path), 0);
    chk_journal_free(&j);
    cr_assert_eq(truncate(path, 96 + 100 * 16), 0);
    cr_assert_eq(chk_journal_load(&k, path), -EBADMSG, "truncated entries");

    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("not a journal at all, but long enough to hold a header of 96 bytes, or so one "
          "hopes, padded.....",
          f);
    fclose(f);
    cr_assert_eq(chk_journal_load(&k, path), -EBADMSG, "foreign file");
}

Test(checker_journal, acked_above_sent_refused)
{
    struct chk_journal j, k;

    cr_assert_eq(chk_journal_init(&j, 8192, 1), 0);
    j.blocks[1] = (struct chk_entry){.acked = 3, .sent = 2};
    cr_assert_eq(chk_journal_save(&j, path), 0);
    chk_journal_free(&j);
    cr_assert_eq(chk_journal_load(&k, path), -EBADMSG);
}
