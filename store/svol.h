/* svol.h - one volume's copy on this node: its record and its data file,
 * the I/O driver every layer above uses for local I/O.
 *
 * The volume layer (volume/volume.c) opens one svol per volume and hands
 * it to the mirror engine (mirror/engine.h), which writes the local copy
 * through it, never through the volume layer. Both hold a reference; the
 * svol is closed when the last goes, so a resync still copying a deleted
 * volume never sees a closed fd.
 *
 * Ownership and locking: the svol owns the volume's committed record
 * (store.h's struct store_volume). Its mutex guards the in-memory record
 * and every commit of it, so two changes (a resize from the admin path, a
 * replica state from the engine) never overwrite each other or race on the
 * meta's tmp file. Name and uuid never change and are read without it; the
 * size is also kept in an atomic for the I/O paths' bounds checks. The I/O
 * calls take no lock: positioned syscalls on one fd.
 *
 * Snapshots (snap.h): every write and zero first copies what the newest
 * snapshot needs (snap_cow); a shrink is refused while snapshots exist.
 *
 * Errors are -errno. The I/O calls log no error (the caller knows which
 * request and peer failed and says so), only, once, a mode the file
 * system refuses; record commits log like store.c.
 */
#ifndef VSAN_STORE_SVOL_H
#define VSAN_STORE_SVOL_H

#include "store/snap.h"
#include "store/store.h"

#include <stdbool.h>
#include <stdint.h>

struct svol;

/* Flags of the I/O calls; the volume layer maps the NBD ones onto them. */
#define SVOL_FUA (1u << 0)      /* durable before returning */
#define SVOL_NOWAIT (1u << 1)   /* -EAGAIN, having done nothing, rather than wait for the device */
#define SVOL_MAY_TRIM (1u << 2) /* zero: the range may become a hole */
#define SVOL_FAST (1u << 3)     /* zero: -ENOTSUP unless cheaper than writing zeroes */

/* With SVOL_NOWAIT, zeroing by writing zero data is done only up to this
 * size; more is worth another thread. */
#define SVOL_NOWAIT_ZERO_MAX (256 * 1024)

/* Opens rec's data file; one reference, the caller's. */
int svol_open(struct store *st, const struct store_volume *rec, struct svol **out);
void svol_ref(struct svol *sv);
/* The last reference closes the data file. */
void svol_unref(struct svol *sv);

/* Immutable for the svol's life. */
const char *svol_name(const struct svol *sv);
const char *svol_uuid(const struct svol *sv);
/* Whether the data file lives in memory (tmpfs): nothing waits for a device. */
bool svol_in_memory(const struct svol *sv);
/* The committed size, lock-free. */
uint64_t svol_size(const struct svol *sv);

/* ---- the record --------------------------------------------------------- */

/* A consistent copy of the committed record. */
void svol_record(struct svol *sv, struct store_volume *out);
/* Commits state's replica set, local state and fixed (the rest of the
 * record stays the svol's). */
int svol_set_state(struct svol *sv, const struct store_volume *state);
/* Bumps the generation alone: a change of the volume's configuration
 * kept elsewhere (its grants) that a client re-reading the record sees. */
int svol_bump_generation(struct svol *sv);
/* Sets the size (see store_resize for the crash order); -EINVAL for a
 * size out of range, -ENOTEMPTY for a shrink while the volume has snapshots,
 * other -errno as store_resize. */
int svol_resize(struct svol *sv, uint64_t size);
/* A replica added here (a diskless copy until now): creates an empty data
 * file and commits local = STORE_LOCAL_REBUILD with state's replica set and
 * fixed; the engine then copies every region into it. -EEXIST if there is
 * a data file. */
int svol_attach_data(struct svol *sv, const struct store_volume *state);
/* A replica removed from here: commits local = STORE_LOCAL_DISKLESS with
 * state's replica set and fixed, then unlinks the data file. The fd stays open
 * until the svol's last reference goes or a later attach, since a read
 * may be using it (reads pass no barrier); the space comes back then.
 * The snapshots' records stay (every node keeps them); their side files
 * are emptied by svol_empty_snapshots. */
int svol_detach_data(struct svol *sv, const struct store_volume *state);
/* After a detach: the snapshots' chunks this copy kept, which serve
 * nothing now, give their space back (snap_empty; the fsyncs are why it
 * is apart, for a worker). Nothing if a copy was attached again since. */
int svol_empty_snapshots(struct svol *sv);
/* Removes meta, data, bitmaps and snapshots; the fd stays valid until the
 * last reference goes. */
int svol_delete(struct svol *sv);
/* The volume's snapshots: the calls of snap.h (create through
 * svol_snapshot_create, which takes the committed size). */
struct snapset *svol_snapshots(struct svol *sv);
/* snap_create (the cluster's id and cut time) at the committed size,
 * ordered against resizes. */
int svol_snapshot_create(struct svol *sv, uint64_t id, const char *name, int64_t time,
                         struct snap_info *out);
/* Bytes the data file occupies. */
int svol_allocated(struct svol *sv, uint64_t *bytes);

/* ---- I/O ---------------------------------------------------------------- */

/* Exactly count bytes. SVOL_NOWAIT: all from the page cache, or -EAGAIN. */
int svol_read(struct svol *sv, void *buf, uint32_t count, uint64_t offset, unsigned flags);
/* SVOL_FUA. Copy-on-write first (snap_cow), which may fail the write. */
int svol_write(struct svol *sv, const void *buf, uint32_t count, uint64_t offset, unsigned flags);
/* The cheapest way the file system offers to make a range read zeroes.
 * SVOL_FUA, SVOL_MAY_TRIM, SVOL_FAST, SVOL_NOWAIT (-EAGAIN also if a
 * snapshot's copy-on-write is needed). Copy-on-write first. */
int svol_zero(struct svol *sv, uint32_t count, uint64_t offset, unsigned flags);
int svol_sync(struct svol *sv);
/* Empties the copy (a replaced disk starts all zeroes), durably. */
int svol_wipe(struct svol *sv);
/* Readahead. */
int svol_cache(struct svol *sv, uint32_t count, uint64_t offset);

/* One allocation extent: data, or a hole that reads zeroes. */
struct svol_extent {
    uint64_t length;
    bool hole;
};
/* Describes [offset, offset+count) in at most max extents, in order from
 * offset, adjacent ones of a kind merged; returns how many (>= 1). rough:
 * as fileio_extent's (data may run on over holes). */
int svol_extents(struct svol *sv, uint32_t count, uint64_t offset, bool rough,
                 struct svol_extent *ext, unsigned max);

#endif
