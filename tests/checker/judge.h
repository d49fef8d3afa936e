/* judge.h - the checker's rule for one block read while the writers run.
 *
 * A read of block b is judged against two numbers from the journal: the
 * last sequence acknowledged for b before the read was sent, and the
 * highest sequence sent for b before its reply came back. It must return
 * a sequence from the first to the second: never older than a write
 * already acknowledged (never zeroes once one was), never one not yet
 * sent.
 *
 * Nothing more is asked: a later read may return an older value than an
 * earlier one only across sequences not acknowledged when it was sent,
 * which is README's in-doubt rule (a write not acknowledged may or may not
 * be there until its region is reconciled, and reads through different
 * nodes may differ meanwhile); and an acknowledged one is caught by the
 * lower bound already. A torn block (a bad checksum) is allowed only if a
 * write of that block was unacknowledged during the read: NBD does not
 * make a read atomic against a write of the same bytes. Pure: unit-tested
 * in tests/unit/test_checker_judge.c.
 */
#ifndef VSAN_CHECKER_JUDGE_H
#define VSAN_CHECKER_JUDGE_H

#include <stdint.h>

struct chk_window {
    uint64_t acked_at_send;  /* last sequence acknowledged before the read went out */
    uint64_t sent_at_return; /* highest sequence sent before its reply came back */
};

enum chk_read_verdict {
    CHK_READ_OK,
    CHK_READ_TORN_IN_FLIGHT, /* torn, under a write still in flight: allowed */
    CHK_READ_STALE,          /* older than a write already acknowledged */
    CHK_READ_UNSENT,         /* a sequence not sent yet */
    CHK_READ_TORN,           /* torn or corrupt with no write in flight */
    CHK_READ_MISPLACED,      /* an intact block of another block or writer */
};

/* Judges buf, read as block number block of a run with writers writers;
 * *seq is the sequence it holds (0 for zeroes or a block not intact). */
enum chk_read_verdict chk_read_judge(const void *buf, uint64_t block, uint32_t writers,
                                     const struct chk_window *w, uint64_t *seq);

/* True for the verdicts that break the rule. */
int chk_read_violation(enum chk_read_verdict v);

/* A few words for a verdict, for the reports. */
const char *chk_read_verdict_str(enum chk_read_verdict v);

#endif
