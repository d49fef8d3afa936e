/* block.h - the checker's block format: what one 4 KiB block written by
 * the checker holds, so that any copy of it, read back from any replica,
 * says who wrote it, where it belongs and which write it is.
 *
 * A block starts with a header (magic, writer id, block number, sequence
 * and a CRC32C of the whole block); the rest is filler derived from the
 * header, so two writes of one block never hold the same bytes and a torn
 * or misplaced block shows. A block that was never written is all zeroes
 * (the volume's sparse holes). Pure: no I/O, unit-tested in
 * tests/unit/test_checker_block.c.
 */
#ifndef VSAN_CHECKER_BLOCK_H
#define VSAN_CHECKER_BLOCK_H

#include <stdint.h>

#define CHK_BLOCK_SIZE 4096u

struct chk_hdr {
    uint32_t writer;
    uint64_t block;
    uint64_t seq; /* 1 for a block's first write */
};

/* Fills buf (CHK_BLOCK_SIZE bytes) with write seq of block by writer. */
void chk_block_encode(void *buf, uint32_t writer, uint64_t block, uint64_t seq);

/* 0 and the header in *out for an intact block; -ENODATA for a block of
 * zeroes (never written); -EBADMSG for anything else (bad magic, a
 * checksum that does not match: a torn or corrupted block). */
int chk_block_decode(const void *buf, struct chk_hdr *out);

/* Checks that buf is block number block of a run with writers writers:
 * 0 and its sequence in *seq (0 if never written); -EBADMSG as above;
 * -EDOM for an intact block that belongs elsewhere (another block number,
 * or a writer that does not own this block). */
int chk_block_check(const void *buf, uint64_t block, uint32_t writers, uint64_t *seq);

#endif
