/* bitmap.h - dirty bitmaps: which regions of a volume a peer's outdated
 * replica is missing.
 *
 * Every node holding a current replica keeps one bitmap per (volume,
 * outdated peer). A write sets the bits of the regions it touches and, if
 * any was clear, makes them durable before the client sees the ack, so a
 * crash of this node never forgets a region the peer lacks. When the peer
 * returns, the bitmaps (exported and merged across nodes) say what resync
 * copies; once the peer is current the bitmap is removed.
 *
 * File format (little-endian), BITMAP_HEADER_SIZE bytes of header:
 *   magic "VSANDBM1" (8), u32 version (1), u32 region_shift, u64 nbits,
 *   u64 reserved (0)
 * then ceil(nbits / 64) u64 words, bit i in word i / 64, bit i % 64; bits
 * past nbits are zero. A file that breaks any of this is an error naming
 * the path, never treated as empty (that would lose dirty regions).
 *
 * A bitmap opened with path == NULL lives in memory only (the resync
 * target, which merges what the peers send and iterates): the same calls
 * work, bitmap_sync() has nothing to do and bitmap_remove() just frees it.
 *
 * Locking: every call may come from any thread; one mutex per bitmap
 * guards it. bitmap_sync() writes and fdatasyncs without the mutex, one
 * thread at a time: the threads that want a sync meanwhile wait and share
 * the next one (group commit). bitmap_resize() does its file I/O under
 * the mutex (it is rare). bitmap_close() and bitmap_remove() must not
 * overlap any other call on the same bitmap.
 */
#ifndef VSAN_STORE_BITMAP_H
#define VSAN_STORE_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BITMAP_HEADER_SIZE 32
#define BITMAP_VERSION 1
/* Regions are 64 KiB .. 1 GiB. */
#define BITMAP_MIN_REGION_SHIFT 16
#define BITMAP_MAX_REGION_SHIFT 30
/* 512 MiB of words: 4 PiB in 1 MiB regions. */
#define BITMAP_MAX_NBITS (UINT64_C(1) << 32)

struct bitmap;

/* Opens path, creating it all clear if it does not exist (via path.tmp,
 * so a crash never leaves a half-written file under the real name; a
 * leftover path.tmp is removed). nbits = regions of the volume; a file of
 * another size (the volume was resized) is resized keeping the bits that
 * still exist. region_shift is recorded, and checked against the file's
 * (mismatch: -EINVAL). path == NULL: a memory-only bitmap. */
int bitmap_open(const char *path, uint64_t nbits, unsigned region_shift, struct bitmap **out);
/* Frees b. Bits set are durable only if a bitmap_sync() followed them. */
void bitmap_close(struct bitmap *b);
/* Deletes the file durably (the peer is current again) and frees b, even
 * on error. */
int bitmap_remove(struct bitmap *b);

/* Sets bits first..last (inclusive, clipped to nbits). Returns 1 if any of
 * them is not durable yet: it was clear, or another thread set it and its
 * sync has not finished (acking then could outrun that sync). The caller
 * must then bitmap_sync() before acknowledging the write. 0 if all are set
 * and durable (always, for a memory-only bitmap, once set); -EINVAL if
 * first > last. */
int bitmap_set(struct bitmap *b, uint64_t first, uint64_t last);
/* Makes every bit set before the call durable. 0 or -errno; after an error
 * the changes stay pending and the next sync writes them again. */
int bitmap_sync(struct bitmap *b);
/* Clears every bit and syncs (a snapshot map whose side file was emptied:
 * the copy left this node). No bitmap_set may run meanwhile. 0 or -errno,
 * as bitmap_sync. */
int bitmap_clear(struct bitmap *b);

bool bitmap_test(struct bitmap *b, uint64_t bit);
/* Set bits. */
uint64_t bitmap_count(struct bitmap *b);
uint64_t bitmap_nbits(struct bitmap *b);
unsigned bitmap_region_shift(struct bitmap *b);
/* The first set bit >= from, or nbits if none. */
uint64_t bitmap_next(struct bitmap *b, uint64_t from);

/* The words as little-endian bytes (ceil(nbits / 64) * 8 of them, the file's
 * body) in a malloc'd buffer the caller frees; *buf is NULL when nbits is 0. */
int bitmap_export(struct bitmap *b, void **buf, size_t *len);
/* ORs bytes exported by another node's bitmap of the same nbits into b and
 * syncs. -EINVAL (and b unchanged) if len is not exactly that size or a bit
 * past nbits is set. */
int bitmap_merge(struct bitmap *b, const void *buf, size_t len);
/* Grows or shrinks b to nbits regions, keeping the bits below both sizes;
 * the file is rewritten atomically and everything in it is durable on 0. */
int bitmap_resize(struct bitmap *b, uint64_t nbits);

#endif
