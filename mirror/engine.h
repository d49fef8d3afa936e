/* engine.h - the mirror engine: synchronous replication of every volume's
 * writes to the current replicas on the other nodes, reads and extents
 * from a peer when this node's copy is not current, dirty bitmaps for
 * outdated replicas, and their resync.
 *
 * The volume layer (volume/volume.c) calls it on its I/O path once region
 * write priority is held (policing/protocol.h): a write goes to this node's
 * store and, at the same time, over the mirror link (link.h) to every peer
 * whose replica is current or syncing; it is acknowledged only once each has
 * applied it (or received it, with sync = received), and a peer that fails
 * is first marked outdated by an agreed message that also records the
 * regions it missed (docs/ARCHITECTURE.md, invariant 1). Writes that overlap are never
 * in flight together from one node, and two nodes never write one region at
 * once, so every replica applies overlapping writes in the same order
 * (invariant 4).
 *
 * The replica set of each volume (mirror/replicas.h) changes only through
 * the agreed stream; the engine applies those changes (from the policing
 * table ops, on the main loop) and starts the resync of this node's replica
 * when it is outdated: the regions the current replicas recorded dirty are
 * copied under region priority, so the copy is ordered against client
 * writes like any other writer.
 *
 * Layering: the engine knows the store below it (svol.h, bitmap.h) and
 * policing beside it, and nothing above: the volume layer attaches each
 * volume's svol and tells the engine of resizes and deletes by explicit
 * calls; completions go back through struct mirror_async.
 *
 * Threads (a fixed number, whatever the number of volumes): the I/O
 * functions run on the callers' (NBD) threads; the *_apply, changed and
 * admin functions on the main loop; peers' requests on the link's threads
 * (link.h); resyncs and background reconciles queue for 4 workers; failed
 * asynchronous writes are settled, one after the other, by one settler;
 * each verify has a thread of its own, at most 2 at once. No thread is ever
 * joined but at mirror_stop.
 */
#ifndef VSAN_MIRROR_ENGINE_H
#define VSAN_MIRROR_ENGINE_H

#include "mirror/auth.h"
#include "policing/priority.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mirror;
struct mvol;
struct policing;
struct policing_progress;
struct store_replica;
struct store_volume;
struct store;
struct svol;
struct svol_extent;

/* An asynchronous write's completion: done runs exactly once, on any
 * thread, with 0 or -errno. */
struct mirror_async {
    void (*done)(struct mirror_async *a, int err);
};

struct mirror_params {
    struct policing *pc;
    struct store *store;
    const char *listen;
    const char *cluster;
    const struct mauth_secret *secret;
    unsigned timeout_ms;
    bool sync_received;   /* peers answer once they hold the write */
    uint64_t resync_rate; /* bytes/s, 0 = unlimited */
    /* This node's activity log (store/actlog.h), the caller's: every region
     * is in it before this node's first write to it, and the regions it
     * held at start are lost until reconciled. NULL: none (unit tests). */
    struct actlog *actlog;
    /* Around the completions a link thread runs for one batch of its
     * peer's answers (the volume layer's callers may hold their replies
     * and send them together); optional. */
    void (*batch_begin)(void);
    void (*batch_end)(void);
};

/* Listens on the mirror address; volumes are attached one by one. */
int mirror_start(const struct mirror_params *p, struct mirror **out);
/* Stops resyncs and the link; after the NBD server has stopped. */
void mirror_stop(struct mirror *m);

/* ---- the volume layer's hooks ------------------------------------------ */

/* Gives the volume whose copy is sv (and whose id in the region table is
 * vid) its replication state: the bitmaps of outdated peers reopened, and
 * a place in the registry peers' requests are served from. *out holds
 * the caller's reference (mirror_volume_put). -EEXIST if another volume
 * has the id vid, -EIO if a bitmap can't be opened, -ENOMEM. */
int mirror_volume_attach(struct mirror *m, struct svol *sv, uint32_t vid, struct policing *pc,
                         struct mvol **out);
/* The volume is deleted (or the node stops): peers' requests for it are
 * refused from now on, and its resync and reconcile end at their next
 * step. Never waits for them (the main loop may call it while a resync
 * waits for a grant the main loop delivers). */
void mirror_volume_detach(struct mvol *v);
/* Drops the caller's reference; the last one frees the state. May come
 * after mirror_stop (which detaches every volume still attached). */
void mirror_volume_put(struct mvol *v);
/* The volume's size changed (grow: after the store's; shrink: before):
 * bitmaps and lost-region marks follow. -errno, logged. */
int mirror_volume_resize(struct mvol *v, uint64_t size);

/* The I/O path, with region priority held for writes. flags: SVOL_*.
 * -EIO when no replica could do it. With a, a write does not wait for the
 * peers: it returns -EINPROGRESS and a->done gets the result, on a link
 * thread, the settler, or the caller's own thread before the return (no
 * peer to wait for); or -EAGAIN, having done nothing, when an
 * overlapping write of this node is in flight. Writes larger than the
 * wire's MWIRE_IO_MAX go as several, one after the other, never with a. */
int mirror_write(struct mvol *v, const void *buf, uint32_t count, uint64_t offset, unsigned flags,
                 struct mirror_async *a);
int mirror_zero(struct mvol *v, uint32_t count, uint64_t offset, unsigned flags,
                struct mirror_async *a);
int mirror_flush(struct mvol *v);
/* On one thread, around writes run one after the other: their copies
 * go to each peer in one write at mirror_gather_end, which must come
 * before the thread waits for anything (see mlink_gather_begin). */
void mirror_gather_begin(void);
void mirror_gather_end(void);
/* Whether this node's copy is current (reads may be served from it). */
bool mirror_local_current(struct mvol *v);
/* Whether this node may answer reads at all: 0; -EIO if it has no
 * quorum, or is not readable (policing_readable: a sync round) or its read
 * lease does not come back within the mirror timeout (policing_read_wait);
 * -EAGAIN without wait if it may not answer now. A reader thread; waits
 * only with wait. */
int mirror_read_ok(struct mvol *v, bool wait);
/* A read from a current peer. */
int mirror_read(struct mvol *v, void *buf, uint32_t count, uint64_t offset);
/* The allocation of [offset, offset+count) as a current peer describes it,
 * for a node whose own copy is not current (its holes may be where the
 * volume has data): as svol_extents, in at most max (and at most
 * MWIRE_EXTENTS_MAX) extents. -EIO when no current peer answers. */
int mirror_extents(struct mvol *v, uint32_t count, uint64_t offset, struct svol_extent *ext,
                   unsigned max);

/* ---- cuts (policing/cut.h; mirror/cut.c) -------------------------------- */

/* A cut holds v: resync copies wait until mirror_cut_release. */
void mirror_cut_hold(struct mvol *v);
/* Whether v has drained here: no write, copy or reconcile of this node in
 * flight, no lost region. Never blocks. */
bool mirror_cut_idle(struct mvol *v);
void mirror_cut_release(struct mvol *v);
/* Before the cut's commit here (main loop): waits until every peer's write
 * received before it is applied (with sync = received a peer acknowledges
 * a write before it lands), at most the mirror timeout: 0, -ETIMEDOUT. */
int mirror_cut_settle(struct mvol *v);
/* This node committed the cut with this id (or loaded the group's last
 * one): peers' writes stamped with it are applied from now on. */
void mirror_cut_applied(struct mirror *m, uint64_t version);

/* ---- snapshots (store/snap.h): their data from a current copy ------------
 *
 * Snapshot ids are the cluster's (the same on every node). Each call is
 * answered from this node's copy while it is current and its read lease
 * holds (as the volume's reads, mirror_read_ok: waits for a lapsed lease
 * up to the mirror timeout), else by a current peer (each asked again
 * every 50 ms while its lease has lapsed, up to the mirror timeout). A
 * copy that is syncing serves its snapshots only once it is current: its
 * resync copies every dirty region's chunks of every snapshot too.
 * Errors: -ENOENT no such snapshot, -EINVAL a range past its size, -EIO
 * no current copy answered (logged). Reader threads; they block. */

/* count bytes at offset of snapshot snap. */
int mirror_snap_read(struct mvol *v, uint64_t snap, void *buf, uint32_t count, uint64_t offset);
/* The allocation of [offset, offset+count) of snapshot snap, as
 * mirror_extents: at most max (and, from a peer, MWIRE_EXTENTS_MAX). */
int mirror_snap_extents(struct mvol *v, uint64_t snap, uint32_t count, uint64_t offset,
                        struct svol_extent *ext, unsigned max);

/* A run of bytes that changed, or did not, between two cuts. */
struct mirror_changed_run {
    uint64_t length;
    bool changed;
};
/* Which bytes of [offset, offset+length) were written between the cut of
 * snapshot since and that of upto (a newer snapshot, or 0: now), at 64 KiB
 * granularity (a chunk written at all counts whole; so does one past
 * since's size): at most max (>= 1) runs, in order from offset, adjacent
 * ones of a kind merged, covering a prefix of the range (at most 1 GiB
 * from offset's chunk); returns how many. The range must lie inside the
 * newer end (-EINVAL). For NBD's qemu:dirty-bitmap contexts. */
int mirror_snap_changed(struct mvol *v, uint64_t since, uint64_t upto, uint64_t offset,
                        uint64_t length, struct mirror_changed_run *runs, unsigned max);

/* ---- the agreed table (main loop) --------------------------------------- */

/* A PMSG_REPLICA that node from sent. Marking another node outdated is
 * refused (0) unless from's own copy is current: a node that does not hold
 * the data cannot vouch for a write the other missed, and must not leave
 * the volume without a current copy (from the majority's point of view,
 * it is from that is behind). */
int mirror_replica_request(struct mvol *v, uint32_t from, uint32_t node, uint8_t state,
                           uint64_t first, uint64_t last);
int mirror_replica_apply(struct mvol *v, uint32_t node, uint8_t state, uint64_t first,
                         uint64_t last);
/* A consistent copy of v's replica set. */
void mirror_replicas_copy(struct mvol *v, struct store_replica *out, uint32_t *n);
/* Puts the engine's replica set, local state and fixed into rec: the
 * agreed state as applied here, also when the store could not commit it
 * (a full disk), so that this node never shows or sends an older one. */
void mirror_state_into(struct mvol *v, struct store_volume *rec);
/* The group's whole set for v (a sync round), and whether the volume is
 * placed (fixed): then a set without this node leaves it a diskless copy
 * (its replica was removed while it was away), and one with it makes a
 * diskless copy a replica again (rebuilt in full). */
int mirror_replicas_load(struct mvol *v, const struct store_replica *r, uint32_t n, bool fixed);

/* A configuration epoch's replica change (a CONFIG cut's commit, with the
 * volume's writes held and drained everywhere), applied on every node in
 * the agreed order, so every node decides the same:
 * - add: node joins the set as syncing (it gets every write from now on);
 *   on node itself an empty data file is made and every region is copied
 *   into it by a full resync, then it is current. -EEXIST if node is in
 *   the set, -ENOSPC if the set is full.
 * - remove: node leaves the set; on node itself the copy becomes diskless
 *   (its data file goes; reads go to a current replica). -ENXIO if it is
 *   not in the set; -EDQUOT if no current copy would remain, or if node's
 *   is current and fewer than min_current would.
 * The volume becomes placed (fixed): a node that joins later and is not
 * in the set keeps no copy. Other -errno: this node could not commit its
 * record or make its data file (logged; the set changes here as
 * everywhere, so the tables stay the same). */
int mirror_replica_add(struct mvol *v, uint32_t node);
int mirror_replica_remove(struct mvol *v, uint32_t node, unsigned min_current);
/* Both at once, for the automatic rebuild: from's replica, which must not
 * be current, goes and node's comes, syncing; checked as a removal (with
 * from not current) and an add, then applied in one commit. */
int mirror_replica_rebuild(struct mvol *v, uint32_t from, uint32_t node);
/* node left the group, whose members are now members[0..nmembers): v's
 * replica there is outdated, unless no other current replica is on a
 * member (it may be the only copy with every acknowledged write, and no
 * member can write without one); lost regions of v are dirty for it. 1 if
 * the set changed. */
int mirror_node_left(struct mvol *v, uint32_t node, const struct pol_key *lost, size_t nlost,
                     const uint32_t *members, size_t nmembers);
/* The entries this node's activity log holds with regions of region_size
 * bytes: ACTLOG_MAX_DEFAULT, or room for 4 writes of the largest size the
 * wire takes if that is more (a write logs all its regions at once). */
size_t mirror_actlog_size(uint32_t region_size);
/* Node from's activity log held these regions when it started (a cold
 * start may have left them unequal): each is reconciled before its next
 * write, and in the background by the lowest current replica. Main loop. */
void mirror_regions_lost(struct mirror *m, uint32_t from, const struct pol_key *keys, size_t n);
/* The group or the table changed: reconnects peers, starts resyncs. */
void mirror_changed(struct mirror *m);

/* ---- admin (main loop) -------------------------------------------------- */

/* `vsan replica fail`: this node's copy is failed (a drill, or a disk
 * gone): it serves nothing and is outdated. */
int mirror_replica_fail(struct mvol *v);
/* `vsan replica replace`: this node's copy is on a new, empty disk:
 * every region is copied to it. */
int mirror_replica_replace(struct mvol *v);
/* Both return -ENXIO on a node without a copy of v (diskless). */

struct mirror_volume_status {
    uint32_t nreplicas;
    struct {
        uint32_t node;
        uint8_t state;
        uint64_t dirty_bytes; /* what this node recorded for it */
    } replicas[32];
    const char *local; /* "ok", "failed", "rebuild" */
    bool resyncing;
    uint64_t resync_done, resync_total; /* bytes */
    double resync_rate;                 /* bytes/s so far */
};
void mirror_volume_status(struct mvol *v, struct mirror_volume_status *st);
/* The copies this node is filling now (a resync), at most max, into out
 * (this node's id, the volume's, bytes done and to do, the rate so far);
 * how many. For policing_progress_announce. */
size_t mirror_progress(struct mirror *m, struct policing_progress *out, size_t max);

/* `vsan volume verify`: compares every region's checksums on every current
 * replica, under region priority. done() runs on another thread with the
 * regions that differ (at most max listed, *ndiff counts all), or -errno;
 * -EBUSY at once while 2 verifies run (each holds a thread). */
typedef void (*mirror_verify_fn)(void *arg, int result, const uint64_t *regions, size_t nlisted,
                                 uint64_t ndiff, uint64_t nregions);
int mirror_verify(struct mvol *v, mirror_verify_fn done, void *arg);

struct mirror_stats {
    uint64_t requests_sent, requests_served, refused;
};
void mirror_stats(struct mirror *m, struct mirror_stats *st);

#endif
