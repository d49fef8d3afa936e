/* writer.h - the checker's write side: W threads, each with one libnbd
 * connection to one of the targets, writing its own blocks (writer w owns
 * blocks w, w+W, w+2W, ...) and failing over between targets as a
 * multipath client does.
 *
 * A write goes out as (block, seq) and is resent, the same bytes, to the
 * next target after any error (a dropped connection, EIO from a node
 * without quorum, no reply within op_timeout_ms) until one acknowledges
 * it or resend_ms has passed; then it is counted as failed and the writer
 * goes on. Every acknowledgement and every sequence sent is recorded in
 * the journal, which the readers hold their reads against while the run
 * goes on, and the verifier every replica after it.
 */
#ifndef VSAN_CHECKER_WRITER_H
#define VSAN_CHECKER_WRITER_H

#include "tests/checker/journal.h"
#include "tests/checker/cutlog.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct chk_run {
    char **targets; /* NBD URIs, export included */
    size_t ntargets;
    unsigned op_timeout_ms; /* one connect or one write */
    unsigned resend_ms;     /* how long a write is resent before it counts as failed */
    unsigned rotate_ms;     /* move to the next target this often; 0: only on errors */
    uint64_t seed;
    struct chk_journal *journal; /* its writers and block count set the run's shape */
    const char *log_path;        /* where the journal is saved, every second and at the end */
    bool stop;                   /* set (atomically) to end the run early */
    uint64_t failovers;          /* target changes after an error */
    unsigned readers;            /* reader threads (reader.h), one per target in turn */
    unsigned read_pause_ms;      /* each reader's pause after a read */
    uint64_t read_failures;      /* reads that got an error or no answer */
    const char *snap_cmd;        /* the snapshotter's command (snapshotter.h); NULL: none */
    unsigned snap_every_ms;      /* a cut this often */
    unsigned snap_keep;          /* snapshots kept; older ones are deleted */
    uint64_t snap_aborted;       /* cuts that aborted (exit 10): a node away */
    uint64_t snap_failed;        /* create commands that failed otherwise (no quorum...) */
    uint64_t snap_hung;          /* of those, commands killed after running too long */
    struct chk_cut_log cuts;     /* the writers' stamps while a cut is open */
};

/* Runs the writers and readers for seconds (or until run->stop), then
 * waits for each to finish its request in progress and saves the
 * journal. 0, or -errno if a thread could not start or the journal could
 * not be saved. */
int chk_run_for(struct chk_run *run, unsigned seconds);

#endif
