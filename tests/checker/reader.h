/* reader.h - the checker's readers: threads that read blocks through the
 * same ways in as the writers while the run goes on, and judge every block
 * they read against the journal as it stands (judge.h): never older than
 * the last write acknowledged before the read was sent, never newer than
 * the last one sent before it returned.
 *
 * Reader r stays on target r % ntargets, so with one reader per target
 * every way in is read all along, through a node that is away, rejoining
 * or resyncing too; after an error it reconnects to the same target. A
 * read covers 1 to 64 blocks at a random place: large reads are answered
 * in structured chunks (data and holes), small ones in one piece. A
 * reader pauses read_pause_ms after each read, so that the readers do not
 * starve the writers (and the nodes' resyncs) of the machine. The
 * totals go to the journal (reads, stale); the first violations are
 * logged in detail.
 */
#ifndef VSAN_CHECKER_READER_H
#define VSAN_CHECKER_READER_H

#include "tests/checker/writer.h"

struct chk_readers;

/* Starts run->readers readers (none if 0); *out for chk_readers_join.
 * 0, or -errno if one could not start (those started are stopped). */
int chk_readers_start(struct chk_run *run, struct chk_readers **out);

/* Waits for the readers, once run->stop is set, and frees them; NULL is
 * a no-op. */
void chk_readers_join(struct chk_readers *rs);

#endif
