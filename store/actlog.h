/* actlog.h - the activity log: the regions this node may have written
 * without every replica holding the write durably, kept on disk so that a
 * power cut of the whole cluster does not forget them (as DRBD's activity
 * log; see docs/ARCHITECTURE.md, "A whole-cluster power cut").
 *
 * The mirror engine adds a region before this node's first write to it
 * (actlog_add returns once the entry is durable; writers that add at the
 * same time share one fdatasync) and removes regions only once every write
 * this node made to them is durable on every replica that took it (its
 * checkpoint: evict_begin, wait for the writes in flight, flush, evict_end).
 * At start the entries say which regions may differ between replicas.
 *
 * File format (little-endian), ACTLOG_HEADER_SIZE bytes of header:
 *   magic "VSANAL01" (8), u32 version (1), u32 record size (16),
 *   u32 max entries, u32 reserved (0), u32 reserved (0), u32 CRC32C of the
 *   28 bytes before it
 * then records of 16 bytes: u32 volume id, u32 CRC32C of (volume, region),
 * u64 region. Records are appended (pwrite, fdatasync) and the file is
 * rewritten whole to remove some (path.tmp, fsync, rename, fsync of the
 * directory; if that fsync fails, no append counts as durable until one
 * succeeds, as the old file could come back after a power cut). An all-zero record is an append a
 * power cut cut short (no write relied on it: it was not synced); it is skipped and the file
 * rewritten. Anything else that is not well formed makes actlog_open fail,
 * naming the file: forgetting a region could leave replicas unequal.
 *
 * Locking: one mutex guards the table; any thread may call anything but
 * actlog_close. The file is written by one thread at a time.
 */
#ifndef VSAN_STORE_ACTLOG_H
#define VSAN_STORE_ACTLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ACTLOG_HEADER_SIZE 32
#define ACTLOG_RECORD_SIZE 16
#define ACTLOG_VERSION 1
/* Entries a node keeps by default: 1,024 regions (4 GiB in 4 MiB regions)
 * written since the last checkpoint; the file stays under 17 KiB. */
#define ACTLOG_MAX_DEFAULT 1024
#define ACTLOG_MAX_LIMIT (1u << 20)

struct actlog_key {
    uint32_t volume;
    uint64_t region;
};

struct actlog;

/* Opens path, creating it empty if it does not exist. max: the entries
 * added from now on that it holds at once (1..ACTLOG_MAX_LIMIT). The
 * entries the file holds already ("carried": regions this node may have
 * been writing when it stopped) are kept on top of max until a checkpoint
 * takes them out, so a cold start with a full log still has max free
 * slots for new writes; a file of more than ACTLOG_MAX_LIMIT entries is
 * refused. Errors are logged naming the file: -EBADMSG for a file that is
 * not a well-formed log. */
int actlog_open(const char *path, size_t max, struct actlog **out);
void actlog_close(struct actlog *al);

const char *actlog_path(const struct actlog *al);
/* Slots free for new entries (max minus the entries added since open). */
size_t actlog_room(struct actlog *al);
/* The carried entries still in the log: up to max into out; how many
 * there are (out may be NULL to count them). */
size_t actlog_carried(struct actlog *al, struct actlog_key *out, size_t max);

/* Whether every key is in the log, durable and not being evicted; never
 * blocks on I/O (the asynchronous write path asks). */
bool actlog_logged(struct actlog *al, const struct actlog_key *keys, size_t n);
/* Makes every key durable in the log and pins them (a checkpoint does not
 * evict a pinned key; actlog_unpin each once its writer holds what keeps a
 * checkpoint waiting for its write). All or nothing: 0 once they all are;
 * -ENOSPC if the new ones do not fit (nothing added: checkpoint, then call
 * again); -errno of the write or fdatasync (logged; none pinned). Waits
 * for a key being evicted to be gone, then adds it again. n <= max. */
int actlog_add(struct actlog *al, const struct actlog_key *keys, size_t n);
void actlog_unpin(struct actlog *al, const struct actlog_key *keys, size_t n);

/* The checkpoint. oldest: up to max durable entries neither pinned nor
 * being evicted, least recently added or asked for first. evict_begin:
 * those of keys still unpinned stop counting as logged (writers then wait
 * in actlog_add). evict_end: with remove, the file is rewritten without
 * them (0, or -errno and they stay); without, they count as logged again.
 * Either way the waiting writers go on. */
size_t actlog_oldest(struct actlog *al, struct actlog_key *out, size_t max);
void actlog_evict_begin(struct actlog *al, const struct actlog_key *keys, size_t n);
int actlog_evict_end(struct actlog *al, const struct actlog_key *keys, size_t n, bool remove);

#endif
