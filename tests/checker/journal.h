/* journal.h - the checker's record of its writes: for every block, the
 * last sequence a target acknowledged and the highest one ever sent, plus
 * the run's parameters and totals, the readers' too. The verifier judges every replica
 * against it: a block may hold any sequence from the last acknowledged to
 * the highest sent (a write never acknowledged may or may not be there).
 *
 * One entry per block, not one line per write, so the file is bounded by
 * the volume's size (16 bytes per 4 KiB block) however long the run. The
 * writers update their own blocks' entries with atomics and the main
 * thread saves snapshots (write-new, rename), so a killed run leaves its
 * last snapshot.
 */
#ifndef VSAN_CHECKER_JOURNAL_H
#define VSAN_CHECKER_JOURNAL_H

#include <stdint.h>

struct chk_entry {
    uint64_t acked; /* last sequence acknowledged, 0 if none */
    uint64_t sent;  /* highest sequence sent, 0 if none */
};

struct chk_journal {
    uint64_t volume_size;
    uint32_t writers;
    uint64_t nblocks;
    uint64_t acknowledged; /* writes acknowledged over the run */
    uint64_t failed;       /* writes given up after the resend budget */
    uint64_t reads;        /* blocks read and judged by the readers (judge.h) */
    uint64_t stale;        /* of those, reads that broke the rule */
    uint64_t snapshots;    /* snapshots cut during the run (snapshotter.h) */
    uint64_t snap_checked; /* of those, read whole and judged (judge.h) */
    uint64_t snap_bad;     /* blocks or writes in them that broke the rule */
    struct chk_entry *blocks;
};

/* A journal with every block unwritten; -ENOMEM, or -EINVAL for a size
 * that is not a positive multiple of the block size or no writers. */
int chk_journal_init(struct chk_journal *j, uint64_t volume_size, uint32_t writers);
void chk_journal_free(struct chk_journal *j);

/* Saves a snapshot to path atomically (path.tmp, then rename). */
int chk_journal_save(const struct chk_journal *j, const char *path);

/* Loads a journal saved by chk_journal_save; -EBADMSG if it is not one. */
int chk_journal_load(struct chk_journal *j, const char *path);

#endif
