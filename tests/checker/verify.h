/* verify.h - the checker's read side: holds every replica of the volume
 * against the journal of a finished run.
 *
 * For every block, on every replica: the block is intact and in its place
 * (block.h), and its sequence lies between the last one acknowledged and
 * the highest one sent; a block that fails on any replica counts once as
 * lost. For every region (the cluster's region_size): all replicas hold
 * the same bytes, or the region counts once as divergent. The replicas
 * are files (a node's DATA_DIR/volumes/UUID.data), read while the cluster
 * is quiet.
 */
#ifndef VSAN_CHECKER_VERIFY_H
#define VSAN_CHECKER_VERIFY_H

#include "tests/checker/journal.h"

#include <stddef.h>
#include <stdint.h>

struct chk_verdict {
    uint64_t blocks_written; /* blocks with at least one write acknowledged */
    uint64_t lost;
    uint64_t divergent;
};

/* Fills *v; 0, or -errno if a file cannot be read or is shorter than the
 * volume (the problems found are logged, the first ones in detail). */
int chk_verify_files(const struct chk_journal *j, char **files, size_t nfiles, uint64_t region_size,
                     struct chk_verdict *v);

#endif
