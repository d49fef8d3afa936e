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
 * make a read atomic against a write of the same bytes.
 *
 * A snapshot is judged as a read whose window is the cut's: every block
 * holds a sequence from the last acknowledged before `snapshot create`
 * was sent to the highest sent before it returned, and is never torn (a
 * cut drains the writes, so none is half applied in it). And it is one
 * point in time (docs/ARCHITECTURE.md, invariant 8): if it holds a write
 * W2, it holds every write acknowledged before W2 was sent. The writers
 * stamp sends and acknowledgements from one counter while a cut is open;
 * with T the latest send stamp among the writes the snapshot holds,
 * every write acknowledged before T must be there (or a newer one of its
 * block). Writes sent or acknowledged before the cut opened need no
 * stamp: one held was sent before anything acknowledged after the cut
 * opened, and one acknowledged before is the window's lower bound
 * already. Pure: unit-tested in tests/unit/test_checker_judge.c.
 */
#ifndef VSAN_CHECKER_JUDGE_H
#define VSAN_CHECKER_JUDGE_H

#include <stddef.h>
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

/* A write stamped from the writers' counter: when it was first sent,
 * or when its acknowledgement was recorded. */
struct chk_stamped {
    uint64_t block;
    uint64_t seq;
    uint64_t stamp;
};

/* What the journal says about one cut (indexed by block). */
struct chk_cut {
    const uint64_t *acked_before;    /* last acknowledged before the command was sent */
    const uint64_t *sent_after;      /* highest sent when it had returned */
    const struct chk_stamped *sends; /* writes sent while the cut was open */
    size_t nsends;
    const struct chk_stamped *acks; /* writes acknowledged while it was open */
    size_t nacks;
};

/* Judges buf, block number block of the snapshot cut c; *seq as above.
 * Never CHK_READ_TORN_IN_FLIGHT: a torn block is CHK_READ_TORN. */
enum chk_read_verdict chk_snap_judge_block(const void *buf, uint64_t block, uint32_t writers,
                                           const struct chk_cut *c, uint64_t *seq);

/* A write acknowledged before the snapshot's latest write was sent, and
 * not in it. */
struct chk_causal_miss {
    uint64_t block, seq;     /* the acknowledged write */
    uint64_t held;           /* what the snapshot holds of its block */
    uint64_t t_block, t_seq; /* the latest write sent that the snapshot holds */
};

/* The causal rule for a snapshot whose block b holds sequence held[b]:
 * the number of acknowledged writes it lacks, the first in *first. */
uint64_t chk_snap_judge_causal(const struct chk_cut *c, const uint64_t *held,
                               struct chk_causal_miss *first);

#endif
