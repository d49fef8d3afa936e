/* fileio.h - positioned I/O on a descriptor that finishes what it starts,
 * and the allocation map of a file: the helpers the store's files share
 * (data files, bitmaps, snapshot side files).
 *
 * Errors are -errno; nothing is logged (the caller knows which file). */
#ifndef VSAN_STORE_FILEIO_H
#define VSAN_STORE_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exactly len bytes at off, resuming after short reads and signals; -EIO
 * if the file ends first. */
int fileio_pread(int fd, void *buf, size_t len, uint64_t off);
/* Exactly len bytes at off, resuming after short writes and signals. */
int fileio_pwrite(int fd, const void *buf, size_t len, uint64_t off);

/* The extent of fd that starts at pos, cut at end (> pos): data, or a hole
 * that reads zeroes. Sets *len (> 0) and *hole. With rough, a data extent
 * runs on to end over any holes (they read as zeroes all the same): one
 * SEEK_DATA, without the SEEK_HOLE that tmpfs answers by walking every
 * page up to the next hole, the whole rest of a written file. */
int fileio_extent(int fd, uint64_t pos, uint64_t end, bool rough, uint64_t *len, bool *hole);

#endif
