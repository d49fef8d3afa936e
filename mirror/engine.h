/* engine.h - the mirror engine: synchronous replication of every volume's
 * writes to the current replicas on the other nodes, reads from a peer when
 * this node's copy is not current, dirty bitmaps for outdated replicas, and
 * their resync.
 *
 * The volume layer (volume/volume.c) calls it on its I/O path once region
 * write priority is held (policing/protocol.h): a write goes to this node's
 * store and, at the same time, over the mirror link (link.h) to every peer
 * whose replica is current or syncing; it is acknowledged only once each has
 * applied it (or received it, with sync = received), and a peer that fails
 * is first marked outdated by an agreed message that also records the
 * regions it missed (DESIGN.md invariant 1). Writes that overlap are never
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
 * Threads: the I/O functions run on NBD threads; the *_apply, changed and
 * admin functions on the main loop; peers' requests on the link's threads;
 * each resync and verify on its own thread.
 */
#ifndef VSAN_MIRROR_ENGINE_H
#define VSAN_MIRROR_ENGINE_H

#include "mirror/auth.h"
#include "policing/priority.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mirror;
struct nbd_async;
struct policing;
struct store_replica;
struct store;
struct volume;
struct volumes;

struct mirror_params {
    struct policing *pc;
    struct store *store;
    struct volumes *vols;
    const char *listen;
    const char *cluster;
    const struct mauth_secret *secret;
    unsigned timeout_ms;
    bool sync_received;   /* peers answer once they hold the write */
    uint64_t resync_rate; /* bytes/s, 0 = unlimited */
};

/* Listens on the mirror address and attaches every volume. */
int mirror_start(const struct mirror_params *p, struct mirror **out);
/* Stops resyncs and the link; after the NBD server has stopped. */
void mirror_stop(struct mirror *m);

/* ---- the volume layer's hooks ------------------------------------------ */

/* Gives v its replication state (bitmaps of outdated peers reopened). */
int mirror_volume_attach(struct mirror *m, struct volume *v);
/* When v is freed; waits for its resync to stop. */
void mirror_volume_detach(struct volume *v);

/* The I/O path, with region priority held for writes. flags: NBD_IO_*.
 * -EIO when no replica could do it. With a (see nbd_async in
 * nbd-server/export.h) a write does not wait for the peers: it returns
 * -EINPROGRESS and a->done gets the result, on a link thread; or -EAGAIN,
 * having done nothing, when an overlapping write of this node is in
 * flight. */
int mirror_write(struct volume *v, const void *buf, uint32_t count, uint64_t offset, unsigned flags,
                 struct nbd_async *a);
int mirror_zero(struct volume *v, uint32_t count, uint64_t offset, unsigned flags,
                struct nbd_async *a);
int mirror_flush(struct volume *v);
/* On one NBD thread, around writes run one after the other: their copies
 * go to each peer in one write at mirror_gather_end, which must come
 * before the thread waits for anything (see mlink_gather_begin). */
void mirror_gather_begin(void);
void mirror_gather_end(void);
/* Whether this node's copy is current (reads may be served from it). */
bool mirror_local_current(struct volume *v);
/* A read from a current peer. */
int mirror_read(struct volume *v, void *buf, uint32_t count, uint64_t offset);

/* ---- the agreed table (main loop) --------------------------------------- */

/* A PMSG_REPLICA for v: 1 if its set changed. */
/* A PMSG_REPLICA that node from sent. Marking another node outdated is
 * refused (0) unless from's own copy is current: a node that does not hold
 * the data cannot vouch for a write the other missed, and must not leave
 * the volume without a current copy (from the majority's point of view,
 * it is from that is behind). */
int mirror_replica_request(struct volume *v, uint32_t from, uint32_t node, uint8_t state,
                           uint64_t first, uint64_t last);
int mirror_replica_apply(struct volume *v, uint32_t node, uint8_t state, uint64_t first,
                         uint64_t last);
/* A consistent copy of v's replica set. */
void mirror_replicas_copy(struct volume *v, struct store_replica *out, uint32_t *n);
/* The group's whole set for v (a sync round). */
int mirror_replicas_load(struct volume *v, const struct store_replica *r, uint32_t n);
/* node left the group: v's replica there is outdated; lost regions of v
 * are dirty for it. 1 if the set changed. */
int mirror_node_left(struct volume *v, uint32_t node, const struct pol_key *lost, size_t nlost);
/* The group or the table changed: reconnects peers, starts resyncs. */
void mirror_changed(struct mirror *m);

/* ---- admin (main loop) -------------------------------------------------- */

/* `vsan replica fail`: this node's copy is failed (a drill, or a disk
 * gone): it serves nothing and is outdated. */
int mirror_replica_fail(struct volume *v);
/* `vsan replica replace`: this node's copy is on a new, empty disk:
 * every region is copied to it. */
int mirror_replica_replace(struct volume *v);

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
void mirror_volume_status(struct volume *v, struct mirror_volume_status *st);

/* `vsan volume verify`: compares every region's checksums on every current
 * replica, under region priority. done() runs on another thread with the
 * regions that differ (at most max listed, *ndiff counts all), or -errno. */
typedef void (*mirror_verify_fn)(void *arg, int result, const uint64_t *regions, size_t nlisted,
                                 uint64_t ndiff, uint64_t nregions);
int mirror_verify(struct volume *v, mirror_verify_fn done, void *arg);

struct mirror_stats {
    uint64_t requests_sent, requests_served, refused;
};
void mirror_stats(struct mirror *m, struct mirror_stats *st);

#endif
