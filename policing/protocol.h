/* protocol.h - the policing protocol of one node: membership with
 * endpoints, quorum, the replicated volume table and per-region write
 * priority, over a cluster transport (cluster.h).
 *
 * Every node applies the same agreed stream of messages and membership
 * changes to the same deterministic state (priority.h for regions, the
 * volume table through policing_table_ops), so every node reaches the same
 * decisions without asking anyone.
 *
 * Joining and merging: after any membership change that adds members,
 * every member multicasts an OFFER with its table's version; once all
 * offers are in, every node knows the winner (a node that was already in
 * sync, then the highest version, then the lowest node id). Meanwhile
 * table and region messages are held back. The winner applies what it held,
 * multicasts its state (volume table and region table) with the number of
 * messages it had applied since the change, and goes on; the others load
 * that state and replay what they held from that point. A returning node
 * so receives the current table and makes its local replicas match it.
 *
 * Threads: the transport's callbacks and the table changes run on the
 * main loop. The write path (policing_write_begin/end) runs on the NBD
 * threads; `lock` guards the region state machine, the quorum flag and the
 * counters it shares with them.
 */
#ifndef VSAN_POLICING_PROTOCOL_H
#define VSAN_POLICING_PROTOCOL_H

#include "policing/cluster.h"
#include "policing/cut.h"
#include "policing/messages.h"
#include "policing/priority.h"
#include "policing/services.h"

#include <stdbool.h>
#include <stdint.h>

#include <qb/qbloop.h>

struct policing_replica {
    uint32_t node;
    uint8_t state; /* enum replica_state (mirror/replicas.h) */
};

/* A volume as the agreed table knows it. */
struct policing_volume {
    char uuid[PMSG_UUID_LEN + 1];
    char name[PMSG_NAME_MAX + 1];
    uint64_t size;
    uint64_t generation;
    uint32_t nreplicas;
    struct policing_replica replicas[PMSG_REPLICAS_MAX];
    bool fixed; /* placed: nodes that join later take no copy (store.h) */
};

/* A snapshot as the agreed table knows it (a cut, policing/cut.h). Its id
 * is the table version the cut's commit made, so ids rise with time and
 * are the same on every node. */
struct policing_snap {
    char uuid[PMSG_UUID_LEN + 1]; /* the volume's */
    char name[PMSG_NAME_MAX + 1];
    uint64_t id;
    int64_t time;  /* of the cut, seconds since the epoch */
    uint64_t size; /* the volume's size at the cut */
};

/* A rollback's fence as the agreed table knows it (policing/cut.h): no
 * node lets a client open the volume until node's unfence cut, or until
 * node leaves the group. */
struct policing_fence {
    char uuid[PMSG_UUID_LEN + 1]; /* the volume's */
    uint32_t node;                /* the node rolling it back */
};

/* A grant as the agreed table knows it (volume/access.h): identity may
 * see the volume, and write it unless read_only. */
struct policing_grant {
    char uuid[PMSG_UUID_LEN + 1]; /* the volume's */
    char identity[PMSG_IDENTITY_MAX + 1];
    uint8_t read_only;
};

/* Who owns a volume (volume/owners.h): the identity that created it
 * through the API, whose quota it counts against. */
struct policing_owner {
    char uuid[PMSG_UUID_LEN + 1]; /* the volume's */
    char identity[PMSG_IDENTITY_MAX + 1];
};

/* How many bytes of volumes an identity may own (volume/owners.h). */
struct policing_quota {
    char identity[PMSG_IDENTITY_MAX + 1];
    uint64_t limit;   /* bytes, > 0 */
    uint32_t volumes; /* how many volumes, > 0 */
};

/* An API bearer token (volume/tokens.h): never the secret, its hash. */
struct policing_token {
    char id[PMSG_TOKEN_ID_LEN + 1];
    char identity[PMSG_IDENTITY_MAX + 1];
    uint8_t hash[PMSG_TOKEN_HASH_LEN];
    int64_t created;
};

/* The identity tables: malloc'd arrays (policing_idents_free). */
struct policing_idents {
    struct policing_owner *owners;
    size_t nowners;
    struct policing_quota *quotas;
    size_t nquotas;
    struct policing_token *tokens;
    size_t ntokens;
};

void policing_idents_free(struct policing_idents *id);

/* The local side of the volume table, called on the main loop in agreed
 * order. Results must depend only on the table (never on local
 * connections), so every node reaches the same one. */
struct policing_table_ops {
    /* members: the volume's first replicas: the group now, or (fixed)
     * the nodes placement chose. owner: "" or the identity that owns
     * it, which gets a read-write grant.
     * client: a client asked, which may create only within a quota.
     * -EDQUOT: the volume would take owner past a quota; -ENODATA: a
     * client's owner has no quota; -EXFULL: the owner or grant table is
     * full (nothing created). */
    int (*create)(void *ctx, const char *uuid, const char *name, uint64_t size, const char *owner,
                  bool client, const uint32_t *members, size_t nmembers, bool fixed);
    /* Remove acts on volume name only if its uuid is uuid (else -ENOENT,
     * nothing changed: the volume the requester checked is gone, whatever
     * took its name since). A resize is a cut (cut_commit, kind CONFIG). */
    int (*remove)(void *ctx, const char *uuid, const char *name);
    /* The whole table, malloc'd; the caller frees it. */
    int (*list)(void *ctx, struct policing_volume **out, size_t *n);
    /* Makes the local table equal to v (creating, resizing, deleting local
     * replicas as needed, taking their replica sets). */
    int (*load)(void *ctx, const struct policing_volume *v, size_t n);
    /* A PMSG_REPLICA (see messages.h) that node `from` sent. 1 if the
     * table changed, 0 if not (or refused), -errno. */
    int (*replica)(void *ctx, uint32_t from, uint32_t volume, uint32_t node, uint8_t state,
                   uint64_t first, uint64_t last);
    /* node left the group, whose members are now members[0..nmembers):
     * its replicas are outdated, unless that would leave no current one
     * on a member, and the regions it held (lost, from the region table)
     * are dirty for it. 1 if the table changed. */
    int (*node_left)(void *ctx, uint32_t node, const struct pol_key *lost, size_t nlost,
                     const uint32_t *members, size_t nmembers);
    /* Node `from` names regions its activity log held when it started
     * (PMSG_LOST): they may differ between replicas, so they are lost
     * (reconciled before their next write). */
    void (*regions_lost)(void *ctx, uint32_t from, const struct pol_key *keys, size_t n);
    /* This node's table is current again (after a sync round, or a change
     * to it): a chance to start resyncs. */
    void (*changed)(void *ctx);
    /* Cuts (policing/cut.h), in agreed order; c->kind says what for
     * (enum pmsg_cut_kind). cut_check: whether the cut may begin, filling
     * c->vids from the n names: 0, -ENOENT (a volume), -EEXIST (a
     * snapshot to cut exists), -ENOMSG (a snapshot to delete does not),
     * -EINVAL (a bad name), -ENOSPC (too many snapshots). From the table
     * alone. */
    int (*cut_check)(void *ctx, struct cut *c, const char (*names)[PMSG_NAME_MAX + 1]);
    /* Holds new writes and copies to the volumes (if the kind needs it);
     * never blocks. */
    void (*cut_hold)(void *ctx, const struct cut *c);
    /* Polled, never blocks: -EAGAIN (not drained yet), 0 (drained), or
     * -EBUSY (drained, but this node's clients use what it changes). */
    int (*cut_drained)(void *ctx, const struct cut *c);
    /* Every member drained, none busy: the cut takes effect here (a
     * snapshot cut with id and c->time on this node's copy whatever its
     * state, or deleted; a CONFIG cut's change applied, with the checks
     * of its kind: for a resize the volume must still be c->config.uuid,
     * else -ENOENT, and an owner's quota must take a grow, else -EDQUOT,
     * or -ENODATA for a client whose owner has none), then the hold
     * ends. 0 or the first -errno (logged). */
    int (*cut_commit)(void *ctx, const struct cut *c, uint64_t id);
    /* The cut ended without effect: the hold ends. */
    void (*cut_release)(void *ctx, const struct cut *c);
    /* Every volume's snapshots, malloc'd; the caller frees them. */
    int (*snap_list)(void *ctx, struct policing_snap **out, size_t *n);
    /* After load: makes this node's snapshots the group's (cutting the
     * missing ones of its copy as it is, which its resync then repairs;
     * deleting those the group deleted); last_cut: the id of the group's
     * last committed cut. */
    int (*snap_load)(void *ctx, const struct policing_snap *s, size_t n, uint64_t last_cut);
    /* The volumes fenced for a rollback, malloc'd; the caller frees them. */
    int (*fence_list)(void *ctx, struct policing_fence **out, size_t *n);
    /* After load: the group's fences replace this node's (a volume not
     * listed is not fenced). */
    int (*fence_load)(void *ctx, const struct policing_fence *f, size_t n);
    /* A GRANT (messages.h): identity's grant on volume name becomes mode.
     * 0 (changed), -ENOENT (no such volume), -ESRCH (a revoke of no
     * grant), -EALREADY (the grant is so already), -EINVAL (a bad
     * identity), -ENOSPC (the volume has ACCESS_GRANTS_MAX grants), or
     * -errno from persisting it. */
    int (*grant)(void *ctx, const char *name, const char *identity, uint8_t mode);
    /* Every grant, malloc'd; the caller frees them. */
    int (*grant_list)(void *ctx, struct policing_grant **out, size_t *n);
    /* After load: the group's grants replace this node's. */
    int (*grant_load)(void *ctx, const struct policing_grant *g, size_t n);
    /* A QUOTA: identity's quota becomes limit bytes in at most volumes
     * volumes (limit 0: none). 0, -ESRCH (no quota to remove), -EALREADY
     * (so already), -EINVAL (a bad identity, or no volumes), -EDQUOT (the
     * table is full). */
    int (*quota)(void *ctx, const char *identity, uint64_t limit, uint32_t volumes);
    /* A TOKEN: t made, or (revoke) the token t->id revoked. 0, -EEXIST
     * (the id is taken), -ESRCH (no such token), -EINVAL, -EDQUOT (the
     * table is full), -errno from persisting it. */
    int (*token)(void *ctx, const struct policing_token *t, bool revoke);
    /* Owners, quotas and tokens, malloc'd; the caller frees them. */
    int (*idents_list)(void *ctx, struct policing_idents *out);
    /* After load: the group's owners, quotas and tokens replace this
     * node's. */
    int (*idents_load)(void *ctx, const struct policing_idents *in);
    /* How many changes the table has seen (persisted). */
    uint64_t (*version)(void *ctx);
    int (*set_version)(void *ctx, uint64_t version);
};

/* The local side of the service addresses (services.h), on the main loop. */
struct policing_service_ops {
    /* The addresses this node should hold now, replacing the previous set:
     * add the new ones, give up the others. */
    void (*hold)(void *ctx, const struct svc_hold *want, size_t n);
};

struct policing_params {
    const struct cluster_driver *driver;
    const char *group; /* the process group: the cluster's name */
    qb_loop_t *loop;
    uint64_t region_size;
    bool suspend_on_no_quorum; /* else writes fail with EIO at once */
    unsigned suspend_timeout_ms;
    const char *name, *nbd, *mirror; /* this node's endpoints, announced */
    const char *service;             /* its service address "A.B.C.D/P", or "" */
    const struct policing_table_ops *table;
    void *table_ctx;
    const struct policing_service_ops *service_ops; /* NULL: hold nothing */
    void *service_ctx;
};

struct policing;

int policing_start(const struct policing_params *p, struct policing **out);
/* Fails every write waiting for a region or quorum, and all later ones,
 * with -ESHUTDOWN, and aborts the open cuts (their held writes go on):
 * the first step of stopping, before the NBD server, once the main loop
 * has stopped. */
void policing_close_writes(struct policing *pc);
void policing_stop(struct policing *pc);

/* ---- the write path (any thread) ------------------------------------- */

/* Gets write priority on every region of [offset, offset+len) of volume,
 * filling *w. 0: write, then call policing_write_end. -EAGAIN: nowait and
 * a region must be asked for (call again without nowait); -EIO: no quorum
 * (after the suspend timeout in suspend mode); -ESHUTDOWN: stopping. */
int policing_write_begin(struct policing *pc, uint32_t volume, uint64_t offset, uint64_t len,
                         bool nowait, struct pol_write *w);
void policing_write_end(struct policing *pc, struct pol_write *w);

/* Multicasts a replica's new state (and the regions it missed, if
 * first <= last); with wait, returns once this node has applied it. 0,
 * -ENOTCONN (not applied within 30 s: the group does not deliver),
 * -ESHUTDOWN (stopping). Any thread. */
int policing_replica_change(struct policing *pc, uint32_t volume, uint32_t node, uint8_t state,
                            uint64_t first, uint64_t last, bool wait);
/* PMSG_OUTDATE (messages.h): node missed a write that witness, current,
 * took; applied as witness's outdate of node (refused if witness is not
 * current where applied). Sent without waiting: policing_replica_sync
 * waits for it. 0, or the send's error. Any thread. */
int policing_replica_outdate(struct policing *pc, uint32_t volume, uint32_t node, uint32_t witness,
                             uint64_t first, uint64_t last);
/* Waits until every replica change this node has sent is applied here
 * (several sent without wait, then one wait): 0, -ENOTCONN after 30 s,
 * -ESHUTDOWN. Any thread. */
int policing_replica_sync(struct policing *pc);
/* The regions this node's activity log held at start (a copy is kept):
 * multicast (PMSG_LOST, in pieces of PMSG_LOST_MAX) once, at the end of
 * the first sync round in which this node is quorate, so every member then
 * applies them in agreed order (table op regions_lost). Main loop. */
int policing_announce_lost(struct policing *pc, const struct pol_key *keys, size_t n);
/* Regions first..last of volume may differ between its copies: a write
 * to them failed on every copy it went to, and none vouches for having it
 * or not. Multicast at once (PMSG_LOST, at most PMSG_LOST_MAX regions),
 * applied in agreed order as an activity log's are (every node holding a
 * copy marks them lost; they are reconciled before their next write and
 * in the background). Does not wait for it to be applied. 0, -EINVAL
 * (too many regions), or the send's -errno. Any thread. */
int policing_regions_doubtful(struct policing *pc, uint32_t volume, uint64_t first, uint64_t last);
/* Whether this partition has quorum now. */
bool policing_quorate(struct policing *pc);
/* Whether this node may answer reads: quorate ever since the end of the
 * last sync round, so that its table, and with it which copies are
 * current, is the group's. */
bool policing_readable(struct policing *pc);

/* Read leases. A node may outdate another's copy while that node has not
 * applied it yet (it is cut off, or only slow): the other would go on
 * answering reads from a copy that misses what is acknowledged since. So
 * a node answers reads from its own copy only while it holds a lease,
 * renewed each time one of its heartbeats (every POLICING_LEASE_BEAT_MS)
 * comes back to it in agreed order while it is readable, and lasting
 * POLICING_LEASE_MS from the heartbeat's send. Any heartbeat it sent
 * before a node applied its copy's outdate was sent before that moment, so
 * its lease is over POLICING_LEASE_MS after it; a write that leaves that
 * copy out is not acknowledged sooner (mirror/replicate.c). */
#define POLICING_LEASE_MS 1000
#define POLICING_LEASE_BEAT_MS 250
/* What a writer waits on top of POLICING_LEASE_MS: the two nodes' clocks
 * may run at slightly different rates. */
#define POLICING_LEASE_MARGIN_MS 100
/* Whether this node is readable and holds its read lease now. Any
 * thread; never blocks. */
bool policing_lease_valid(struct policing *pc);
/* Waits until this node may answer a read: with lease, until
 * policing_lease_valid; without (the read goes to a peer), until
 * policing_readable. A node without quorum waits as a write does (-EIO at
 * once, or up to suspend_timeout for quorum); then a sync round or a
 * late heartbeat is waited for up to timeout_ms. 0, -EIO (no quorum),
 * -ETIMEDOUT, -ESHUTDOWN. Any thread but the main loop (which ends the
 * round and renews the lease). */
int policing_read_wait(struct policing *pc, bool lease, unsigned timeout_ms);
uint32_t policing_self(struct policing *pc);
uint64_t policing_region_size(struct policing *pc);

/* A volume's id in the region table: the first 32 bits of its uuid. */
uint32_t policing_volume_id(const char *uuid);

/* ---- the volume table (main loop) ------------------------------------ */

/* Called once the change has been applied here (result 0 or -errno, the
 * same on every node), or failed to be sent. */
typedef void (*policing_done_fn)(void *arg, int result);

/* uuid: the requester's choice, so every node creates the same one.
 * owner: NULL or "" (none), or the identity that owns the volume;
 * client: a client (not an admin) asks (table op create).
 * placed: the nplaced nodes (sorted, members) that hold its replicas,
 * chosen by placement.h; nplaced 0: every node holds one. Where applied,
 * a placed node that is no longer a member fails the create with
 * -EHOSTDOWN on every node (its copy would be called current unmade). */
int policing_volume_create(struct policing *pc, const char *uuid, const char *name, uint64_t size,
                           const char *owner, bool client, const uint32_t *placed, size_t nplaced,
                           policing_done_fn done, void *arg);
/* uuid: the volume's the requester checked; name, if another volume has
 * taken it since, answers -ENOENT. */
int policing_volume_delete(struct policing *pc, const char *uuid, const char *name,
                           policing_done_fn done, void *arg);

/* `vsan snapshot create`: a cut (cut.h) of the n named volumes (at most
 * PMSG_CUT_VOLUMES) into snapshots called snapshot. done gets 0 once the
 * cut committed here, -EBUSY (a volume is in another cut), -ETIMEDOUT
 * (aborted: a node did not drain in time), -ECONNRESET (aborted: the
 * membership changed), or the table's -ENOENT, -EEXIST, -EINVAL. Returns
 * -ENOLINK without quorum, -EINVAL for a bad count or name. */
int policing_snapshot_create(struct policing *pc, const char *const *volumes, size_t n,
                             const char *snapshot, policing_done_fn done, void *arg);
/* `vsan snapshot delete`: a cut that deletes volume's snapshot on every
 * node, without holding writes; done gets -ETXTBSY if a node's clients
 * read the snapshot (nothing deleted), -ENOMSG if there is none. */
int policing_snapshot_delete(struct policing *pc, const char *volume, const char *snapshot,
                             policing_done_fn done, void *arg);

/* `vsan snapshot rollback`: with fence, a cut that fences volume on every
 * node for this node's rollback to snapshot (no client may open it until
 * the unfence; done gets -ETXTBSY, nothing fenced, if a node has clients
 * on it); without, the unfence. A fence whose node leaves the group ends. */
int policing_rollback_fence(struct policing *pc, const char *volume, const char *snapshot,
                            bool fence, policing_done_fn done, void *arg);

/* `vsan volume resize`: a cut of kind CONFIG (cut.h) that holds and drains
 * the volume's writes on every node, applies the new size everywhere at
 * its commit (the volume's generation bumped once) and lets the writes go.
 * uuid: the volume's the requester checked (another volume that took the
 * name since answers -ENOENT); force: a shrink is allowed; client: a
 * client asks (its owner's quota applies). done gets 0 once committed
 * here, the commit's checks' -errno, or, nothing changed, -EBUSY (the
 * volume is in another cut), -ETIMEDOUT (a node did not drain in time),
 * -ECONNRESET (the membership changed), -EAGAIN (regions turned lost).
 * Returns -ENOLINK without quorum, -EINVAL for a bad name or uuid. */
int policing_volume_resize(struct policing *pc, const char *uuid, const char *name, uint64_t size,
                           bool force, bool client, policing_done_fn done, void *arg);

/* `vsan replica add` and `remove`: a cut of kind CONFIG, as a resize, whose
 * commit adds node's replica to the volume's set (syncing, filled by a
 * full resync, then current) or removes it (node keeps a diskless copy).
 * The commit refuses, the same on every node: -EEXIST (add: node holds
 * one), -ENXIO (remove: it holds none), -EHOSTDOWN (add: node was no
 * member at the BEGIN), -ENOSPC (add: the set is full), -EDQUOT (remove:
 * fewer than min_current current copies, or none, would remain).
 * Otherwise as policing_volume_resize. */
int policing_replica_set_change(struct policing *pc, const char *uuid, const char *name, bool add,
                                uint32_t node, unsigned min_current, policing_done_fn done,
                                void *arg);

/* The automatic rebuild (vsan/rebuild.c): one cut whose commit drops
 * from's replica and adds node's (syncing, rebuilt in full), so the set
 * keeps its size. Refused at the commit as an add, or -EDQUOT if from's
 * copy is current there or no current copy would remain. -EINVAL for
 * from 0 or equal to node. */
int policing_replica_rebuild(struct policing *pc, const char *uuid, const char *name, uint32_t from,
                             uint32_t node, policing_done_fn done, void *arg);

/* `vsan access grant/revoke`: identity's grant on volume becomes mode
 * (enum pmsg_grant_mode) on every node; done gets the table op grant's
 * result. -ENOLINK without quorum, -EINVAL for a name or identity too
 * long. */
int policing_access_change(struct policing *pc, const char *volume, const char *identity,
                           uint8_t mode, policing_done_fn done, void *arg);

/* `vsan quota set`: identity's quota becomes limit bytes in at most
 * volumes volumes (limit 0: none) on every node; done gets the table op
 * quota's result. -ENOLINK, -EINVAL. */
int policing_quota_set(struct policing *pc, const char *identity, uint64_t limit, uint32_t volumes,
                       policing_done_fn done, void *arg);

/* `vsan token create/revoke`: t made (its id, identity, hash, time) or,
 * with revoke, the token t->id revoked, on every node; done gets the
 * table op token's result. -ENOLINK, -EINVAL. */
int policing_token_change(struct policing *pc, const struct policing_token *t, bool revoke,
                          policing_done_fn done, void *arg);

/* ---- service addresses (main loop) ----------------------------------- */

/* `vsan failover`: moves owner's address to the member after it (*holder),
 * where it stays until a giveback. -ENOLINK (no quorum), -ENOENT (owner
 * announced no address), -EHOSTUNREACH (no other member), or the send's
 * error. The move is agreed and applied later. */
int policing_service_failover(struct policing *pc, uint32_t owner, uint32_t *holder);
/* `vsan giveback`: owner serves its address again. -ENOLINK, -ENOENT,
 * -EHOSTDOWN (owner is not a member), -EAGAIN (a replica on owner is not
 * current yet), or the send's error. */
int policing_service_giveback(struct policing *pc, uint32_t owner);

/* ---- capacity (main loop) -------------------------------------------- */

/* A node's figures, as its last PMSG_CAPACITY said (messages.h). */
struct policing_capacity {
    uint32_t node;
    uint64_t capacity, data, snapshots;
};

/* This node's figures now: multicast if a member joined since the last
 * announce or they moved by more than 1% of the capacity or 1 GiB. */
int policing_capacity_announce(struct policing *pc, const struct policing_capacity *mine);
/* The figures of the members that announced some, into out; how many. */
size_t policing_capacities(struct policing *pc, struct policing_capacity out[CLUSTER_NODES_MAX]);

/* ---- progress of the copies being filled ------------------------------- */

/* One copy being filled: node's of volume (its id), bytes done of total,
 * at rate bytes/s. */
struct policing_progress {
    uint32_t node, volume;
    uint64_t done, total, rate;
};

/* Main loop: multicasts this node's copies being filled (n at most
 * PMSG_PROGRESS_MAX; more are left out), or, once, that there are none
 * any more. */
int policing_progress_announce(struct policing *pc, const struct policing_progress *mine, size_t n);
/* Any thread: the copies of volume being filled, as their nodes last said
 * within the last 6 s (3 announces), into out (at most max); how many. */
size_t policing_progress_of(struct policing *pc, uint32_t volume, struct policing_progress *out,
                            size_t max);

/* ---- status (main loop) ---------------------------------------------- */

struct policing_member {
    uint32_t nodeid;
    char name[PMSG_NAME_MAX + 1];
    char nbd[PMSG_ADDR_MAX];
    char mirror[PMSG_ADDR_MAX];
    char service[PMSG_SERVICE_ADDR_MAX];
};

struct policing_status {
    uint32_t nodeid;
    bool quorate;
    bool synced;
    uint64_t table_version;
    uint64_t region_size;
    uint64_t requests_sent, releases_sent, messages_delivered, regions;
    size_t nmembers;
    struct policing_member members[CLUSTER_NODES_MAX];
    size_t nnodes; /* corosync's configured nodelist (members or not) */
    struct cluster_node nodes[CLUSTER_NODES_MAX];
    struct svc_table services; /* who holds which service address */
};

void policing_status(struct policing *pc, struct policing_status *st);

/* The NBD address node announced (its first listen address), if it is a
 * member now: 0, -ENOENT (not a member, or not announced yet),
 * -ENAMETOOLONG. Any thread: the NBD threads name the current replicas in
 * each export's description with it. */
int policing_member_nbd(struct policing *pc, uint32_t node, char *out, size_t len);

#endif
