/* snap.h - a volume's snapshots on this node: copy-on-write at 64 KiB
 * chunks into per-snapshot side files.
 *
 * Model. Snapshots are numbered by id, increasing with time; the newest is
 * the one a first write copies into. Snapshot S "holds" chunk c when c's
 * bytes as they were at S's cut were copied into S's side file (the write
 * that changed c came while S was the newest). S's chunk c is read from the
 * oldest snapshot T >= S that holds c, else from the live data file: the
 * chain. A chunk at or past a snapshot's size at its cut is never copied
 * into it: sizes never shrink while snapshots exist (svol_resize refuses),
 * so no older snapshot needs it either. A resync (snap_put) may also make a
 * snapshot hold a chunk: the bytes a current copy's snapshot has there.
 *
 * Files, in DATA_DIR/snapshots (store.h):
 *   UUID.index      the list: format, next id, one line per snapshot
 *                   (id, size, time, state, name), then a CRC-32 line over
 *                   the bytes before it; replaced atomically
 *                   (store_snap_replace). A file that breaks any of this is
 *                   an error naming it: the volume does not open.
 *   UUID.ID.data    the side file: sparse, the snapshot's size, each held
 *                   chunk at its own offset (so FICLONERANGE can share the
 *                   live file's blocks, and holes stay holes)
 *   UUID.ID.map     which chunks it holds: a bitmap file (bitmap.h) with
 *                   64 KiB regions
 *
 * Crash order. A first write to chunk c after a cut: c is copied into the
 * newest snapshot's side file, the side file is fdatasynced, c's bit is set
 * and the map synced; only then does the caller write the data file. Both
 * syncs are group commits (gsync.h): concurrent writers copying share them,
 * and snap_cow_many copies for several queued writes under one.
 * A crash before the map is durable leaves the copy unreferenced (the next
 * write copies again, live still holds the old bytes). Create: side file
 * and map are made durable before the index names them. Delete: the index
 * marks the snapshot "deleting" (the commit point: it is gone for users),
 * the chunks the next older snapshot lacks are copied into it and made
 * durable (a merge), then the side file and map are removed, then the index
 * drops the line. snap_open finishes a delete a crash interrupted (merge
 * again, or, if a file is already gone, the merge was durable: drop it).
 *
 * Descriptors. A map holds none at rest (bitmap.h). Side files are opened
 * on first use through one process-wide cache of SNAP_FD_CACHE descriptors
 * (least recently used closed first); a use finding the cache full of busy
 * descriptors opens and closes its own. So a volume holds 0 at rest beyond
 * its data file's, and all volumes' snapshots together at most
 * SNAP_FD_CACHE.
 *
 * Memory: each snapshot's map is in memory: 2 MiB per TiB of its size.
 *
 * Locking. Any call may come from any thread. Creates and deletes of one
 * volume's snapshots are serialised inside; I/O (snap_cow, snap_put,
 * snap_read, snap_extents, snap_changed) runs concurrently with them and
 * with itself.
 * snap_create must not overlap writes to the data file (the cluster's cut
 * drains them): a write whose copy-on-write ran before the cut but whose
 * data lands after it would show in the new snapshot.
 *
 * Errors are -errno, logged with the volume's name and the file.
 */
#ifndef VSAN_STORE_SNAP_H
#define VSAN_STORE_SNAP_H

#include "store/bitmap.h"
#include "store/store.h"

#include <stdbool.h>
#include <stdint.h>

#define SNAP_CHUNK_SHIFT 16
#define SNAP_CHUNK (UINT64_C(1) << SNAP_CHUNK_SHIFT) /* 64 KiB */
#define SNAP_MAX 1024                                /* snapshots per volume */
#define SNAP_NAME_MAX STORE_NAME_MAX                 /* store_name_valid()'s rule */
/* The largest snapshot: a map of BITMAP_MAX_NBITS chunks (256 TiB). */
#define SNAP_SIZE_MAX (BITMAP_MAX_NBITS << SNAP_CHUNK_SHIFT)
/* Side-file descriptors open at once, process-wide. */
#define SNAP_FD_CACHE 64
/* snap_changed(): the live volume as the newer end. */
#define SNAP_LIVE 0

struct snapset;

struct snap_info {
    uint64_t id; /* >= 1, never reused within a volume */
    char name[SNAP_NAME_MAX + 1];
    int64_t time;  /* of the cut, seconds since the epoch */
    uint64_t size; /* the volume's size at the cut, bytes */
    /* What its side file holds: its held chunks x 64 KiB, the last one
     * clipped to size (what deleting it alone could free, at most). */
    uint64_t exclusive;
};

/* Opens the snapshots of the volume uuid (named volume, for messages) whose
 * data file is live_fd (borrowed: it must outlive the set). No index file:
 * no snapshots. Finishes deletes a crash interrupted. Errors: -EINVAL for a
 * corrupt index or map (logged with its path), -ENOMEM, other -errno of
 * the file system. */
int snap_open(struct store *st, const char *uuid, const char *volume, int live_fd,
              struct snapset **out);
/* The volume's data file is now live_fd (-1: none, a diskless copy): a
 * replica added to or removed from this node (svol_attach_data). */
void snap_set_live(struct snapset *ss, int live_fd);
/* The volume's copy left this node (snap_set_live(-1)): every snapshot's
 * map is cleared and its side file emptied, its space given back; the
 * records stay (every node keeps them), and a copy added here again gets
 * every chunk of every snapshot anew (mirror/resync.c). Nothing if a live
 * file was set again meanwhile. I/O and merges wait. Best effort: the
 * first error is returned (logged), the rest still tried. */
int snap_empty(struct snapset *ss);
/* Frees ss (NULL: nothing); no call on ss may be running. */
void snap_close(struct snapset *ss);
/* Removes every snapshot's files and the index (the volume is deleted);
 * ss stays open and empty. Best effort: the first error is returned, the
 * rest is still tried. */
int snap_remove_all(struct snapset *ss);

/* Snapshots users see (not those being deleted); lock-free. */
unsigned snap_count(struct snapset *ss);
/* Fills up to max entries, oldest first; returns how many there are. */
int snap_list(struct snapset *ss, struct snap_info *out, unsigned max);
/* -ENOENT if no snapshot has that name. */
int snap_find(struct snapset *ss, const char *name, struct snap_info *out);

/* Cuts snapshot id of the data file as it is now, of size bytes (the
 * volume's committed size), cut at time (seconds since the epoch): the id
 * and time are the cluster's, the same on every node. id must be above
 * every id this volume ever had (so ids grow with time, and a deleted
 * snapshot's id never comes back). Errors: -EINVAL for an id not above
 * them, a bad name or a size of 0, -EFBIG above SNAP_SIZE_MAX, -EEXIST for
 * a name in use, -ENOSPC with SNAP_MAX snapshots, other -errno of the file
 * system (nothing is left behind). Must not overlap writes (above).
 * Crash order: the index first records id as used, then the files are
 * made, then the index names the snapshot; the open after a crash in
 * between removes the files of that id. */
int snap_create(struct snapset *ss, uint64_t id, const char *name, uint64_t size, int64_t time,
                struct snap_info *out);
/* Deletes snapshot id: durable (and gone for users) on 0. The merge of
 * the chunks the next older snapshot needs runs afterwards on one of the
 * process's two merger threads, a batch at a time beside the volume's I/O; it blocks copy-on-write
 * only while it merges the chunks the newest snapshot gained meanwhile. A merge that fails is
 * logged and tried again by the next delete or open, and a close stops it after its batch:
 * snap_open finishes every delete a close or a crash cut short. Errors: -ENOENT, or -errno of the
 * commit; without a thread the merge runs here, and its -errno too (the snapshot is then gone for
 * users, and the next open finishes the delete). */
int snap_delete(struct snapset *ss, uint64_t id);

/* Called before [offset, offset+count) of the data file is written,
 * zeroed or trimmed: copies every chunk of the range the newest snapshot
 * needs and lacks, durably, or waits for a copy another writer started.
 * Once it returns 0 the caller may write. nowait: -EAGAIN, having done
 * nothing, if a copy is needed. Errors: -errno of the copy or its sync;
 * after a failed sync, every later copy into that snapshot fails with -EIO
 * (its map in memory may be ahead of its file) until the volume reopens. */
int snap_cow(struct snapset *ss, uint64_t offset, uint64_t count, bool nowait);

/* A range of the data file a write will change. */
struct snap_range {
    uint64_t offset, count;
};
/* As snap_cow, without waiting, for the ranges of several writes queued
 * one behind the other (a peer's, mirror/serve.c): the chunks they need
 * copied are copied and made durable under one commit, where each write's
 * own snap_cow would pay a commit of its own. Chunks another writer is
 * copying are left to it. A chunk is copied only while nothing has
 * changed it since the cut (it is not yet held), so it holds the cut's
 * bytes whether or not the write then comes; but it then counts as
 * changed (snap_changed), so the caller passes only writes that will
 * change their chunks. Each write still calls snap_cow, which finds its
 * chunks held (or waits for, or copies, what is left). Errors as
 * snap_cow's, and -ENOMEM. */
int snap_cow_many(struct snapset *ss, const struct snap_range *rg, size_t n);

/* Reads count bytes at offset of snapshot id. Errors: -ENOENT, -EINVAL
 * past its size, -EBADF with no live file (the copy left this node, see
 * snap_empty: a current peer answers), -errno of the reads. */
int snap_read(struct snapset *ss, uint64_t id, void *buf, uint32_t count, uint64_t offset);

/* Makes [offset, offset+count) of snapshot id read buf (a resync copying
 * a current copy's snapshot): written into id's own side file and its
 * chunks marked held, durably (data synced before the bits, as a
 * copy-on-write), so the chain no longer decides what those chunks read.
 * offset is a multiple of SNAP_CHUNK; count is too, or ends the snapshot.
 * A writer or reader of those chunks waits for it. Errors: -ENOENT, -EINVAL
 * for a range not so or past the snapshot's size, -EBADF with no live file
 * (the copy left: nothing is put into files snap_empty empties), -errno of the writes or
 * syncs (after a failed sync, as for snap_cow: -EIO until the volume
 * reopens). */
int snap_put(struct snapset *ss, uint64_t id, const void *buf, uint32_t count, uint64_t offset);

/* One allocation extent of a snapshot: data, or a hole that reads zeroes. */
struct snap_extent {
    uint64_t length;
    bool hole;
};
/* Describes [offset, offset+count) of snapshot id in at most max (>= 1)
 * extents, in order from offset, adjacent ones of a kind merged; returns
 * how many (>= 1). Errors as snap_read. */
int snap_extents(struct snapset *ss, uint64_t id, uint32_t count, uint64_t offset,
                 struct snap_extent *ext, unsigned max);

/* The chunks of [offset, offset+length) written between the cut of since
 * and that of upto (an id newer than since, or SNAP_LIVE: until now, the
 * live volume being live_size bytes): a memory-only bitmap (bitmap.h,
 * 64 KiB regions) the caller closes, bit i for the chunk at offset + i x
 * 64 KiB. Chunks past since's size count as written. offset is a multiple
 * of SNAP_CHUNK, the range inside the newer end's size. Errors: -ENOENT,
 * -EINVAL if upto is not newer than since or the range is not so, -EBADF
 * as snap_read, -ENOMEM. */
int snap_changed(struct snapset *ss, uint64_t since, uint64_t upto, uint64_t live_size,
                 uint64_t offset, uint64_t length, struct bitmap **out);

#endif
