/* engine_int.h - the mirror engine's parts, for the files of mirror/ only
 * (the engine's face to the rest of the node is engine.h).
 *
 * The engine is layered; each file calls only the ones below it:
 *
 *   engine.c     the agreed table, admin calls, life cycle    (top)
 *   serve.c      peers' requests
 *   resync.c     this copy's resync
 *   write.c      client writes (and the settler)
 *   reconcile.c  making lost regions equal
 *   verify.c     comparing copies
 *   activity.c   the activity log and its checkpoints
 *   replicate.c  one write to every copy, settled
 *   snapio.c     a snapshot's data, here or from a current peer
 *   reads.c      reads and extents from a current peer
 *   workers.c    the workers' queue
 *   registry.c   volumes by id
 *   lost.c       the lost marks
 *   dirty.c      the dirty bitmaps of outdated peers
 *   mvol.c       a volume's state: size, references, range locks  (bottom)
 *
 * Beside each piece of shared state below: the file that owns it (writes
 * it) and the lock that guards it.
 */
#ifndef VSAN_MIRROR_ENGINE_INT_H
#define VSAN_MIRROR_ENGINE_INT_H

#include "mirror/engine.h"
#include "mirror/link.h"
#include "store/store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* The most a resync or a reconcile copies in one request. */
#define COPY_CHUNK (1u << 20)
/* Worker threads, a fixed number whatever the number of volumes: resyncs
 * and background reconciles queue for them (a node rejoining a cluster of
 * 4,000 volumes must not start 4,000 threads). */
#define WORKERS 4

/* A resync or reconcile waiting for a worker; holds a reference to v. */
struct job {
    void (*fn)(struct mvol *v);
    struct mvol *v;
    struct timespec due; /* not run before (a retry's pause holds no worker) */
    struct job *next;
};

struct rwrite;

/* Locking: reg guards the registry (vols, nvols, cap): lookups by the
 * link's serving threads share it, attach and detach take it exclusively.
 * qmu guards both queues: the workers wait on jcv for jobs, the settler
 * on scv for failed writes (one condition each, so a wake-up meant for one
 * never goes to the other). */
struct mirror {
    /* engine.c (mirror_start), immutable after */
    struct mirror_params p;
    struct mauth_secret secret;
    char cluster[MW_CLUSTER_MAX + 1];
    struct mlink *link;
    uint32_t self;
    uint64_t rs; /* region size */
    unsigned rs_shift;
    atomic_bool stopping; /* engine.c (stop_threads, under qmu) */
    atomic_uint verifies; /* verify.c: verify threads running (they hold m) */
    pthread_rwlock_t reg; /* registry.c */
    struct mvol **vols;   /* registry.c, under reg: attached volumes, sorted by vid */
    size_t nvols, cap;    /* registry.c, under reg */
    pthread_mutex_t qmu;
    pthread_cond_t jcv, scv;
    struct job *jobs, **jobs_tail; /* workers.c, under qmu */
    /* write.c (the settler), under qmu: failed asynchronous writes,
     * oldest first */
    struct rwrite *settles, **settles_tail;
    pthread_t workers[WORKERS], settler; /* engine.c (start_threads, stop_threads) */
    size_t nworkers;
    bool settler_started;
    /* activity.c's (set by mirror_start, engine.c) */
    struct actlog *al;       /* NULL: no activity log */
    size_t al_max;           /* its room at start: the entries it holds */
    pthread_mutex_t ckpt_mu; /* one checkpoint at a time */
    atomic_bool ckpt_queued; /* a background checkpoint is queued */
    /* cut.c: the last cut this node committed (or the group's, loaded);
     * written under cut_mu, which cut_cv's waiters (peers' writes from
     * after a cut) wait with. */
    _Atomic uint64_t cut_version;
    pthread_mutex_t cut_mu;
    pthread_cond_t cut_cv;
};

/* A write in flight from this node, in its volume's list (mvol.c). */
struct inflight {
    uint64_t start, end;
    struct inflight *next;
};

/* One volume's replication state.
 *
 * Locking: mu guards rec (the engine's view of the replica set and local
 * state, committed to the store's record through svol_set_state under
 * mu, so commits are in order), the bitmaps, lost and the resync fields
 * that are not atomic; it is held across a bitmap's sync, so a bitmap is
 * never closed under a writer. rmu guards the list of writes in flight;
 * rcv is broadcast when one ends. size is rec.size for lock-free reads;
 * it changes only in mirror_volume_resize, under mu.
 *
 * Life: the volume layer holds one reference, the registry another, every
 * queued or running job and every peer request being served one more. The
 * last one closes the bitmaps and lets go of the svol; nothing ever joins
 * a thread to free a volume. */
struct mvol {
    /* engine.c (mirror_volume_attach), immutable after */
    struct mirror *m;
    struct svol *sv;
    struct policing *pc;
    uint32_t vid;
    const char *name;      /* svol_name(sv), immutable */
    atomic_uint refs;      /* mvol.c (mvol_ref, mvol_unref) */
    atomic_bool gone;      /* engine.c: detached: deleted, or the node stops */
    _Atomic uint64_t size; /* engine.c (resize_locked), under mu */
    pthread_mutex_t mu;
    /* Under mu: the agreed table's replica set (engine.c), the local
     * state (replicate.c, resync.c, engine.c's admin calls). */
    struct store_volume rec;
    struct bitmap *dirty[STORE_REPLICAS_MAX]; /* dirty.c, under mu */
    uint32_t dirty_node[STORE_REPLICAS_MAX];
    size_t ndirty;
    atomic_bool serve_local; /* mvol.c, under mu: this copy is current and whole */
    pthread_mutex_t rmu;     /* mvol.c (range_lock): rcv and inflight */
    pthread_cond_t rcv;
    struct inflight *inflight;
    bool resyncing; /* resync.c, under mu: queued or running */
    /* cut.c, under rmu: a cut holds new resync copies; copying counts
     * those past that gate. */
    bool cut_held;
    unsigned copying;
    /* serve.c: peers' writes past their cut stamp, not yet applied here
     * (mirror_cut_settle waits them out) */
    atomic_uint applying;
    /* resync.c, by its one job at a time: ms before the next attempt
     * after a failed one */
    unsigned resync_backoff;
    atomic_uint_fast64_t resync_done, resync_total; /* resync.c */
    struct timespec resync_started;                 /* resync.c */
    /* Regions a departed writer may have left unequal (lost.c,
     * reconcile.c): a bit each for nregions(size), guarded by mu; nlost
     * counts them, so the write path looks no further while it is 0. */
    uint64_t *lost;
    uint64_t lost_nbits; /* regions lost covers (0 until the first loss) */
    atomic_uint_fast64_t nlost;
    bool reconciling; /* reconcile.c, under mu: queued or running */
    /* How many outdates of each node this node applied (engine.c's
     * agreed table counts them through outdates_of, replicate.c; under
     * mu): a write settling a failed peer asks whether its own was
     * applied, which the peer's state no longer says once it syncs again. */
    uint32_t outdate_node[STORE_REPLICAS_MAX];
    uint64_t outdates[STORE_REPLICAS_MAX];
    size_t noutdate;
    /* When each peer's read lease is surely over, for the peers whose copy
     * stopped being current here (engine.c's agreed table sets it through
     * lease_started, replicate.c reads it; under mu): a write that leaves
     * such a peer out is not acknowledged before (policing/protocol.h,
     * read leases). Monotonic ms; 0 for a peer never seen current. */
    uint32_t lease_node[STORE_REPLICAS_MAX];
    uint64_t lease_end[STORE_REPLICAS_MAX];
    size_t nlease;
};

/* Where a write goes: this node's copy (local) and the peers in ops. */
struct plan {
    bool local;
    size_t n;
    struct mlink_op ops[STORE_REPLICAS_MAX];
    /* For a peer that failed: its outdates applied here before ours was
     * sent (outdate_failed), so check_failed sees whether ours was. */
    uint64_t outdates_before[STORE_REPLICAS_MAX];
    /* The latest read lease of the copies the write leaves out (0: none
     * left): it is acknowledged no sooner. */
    uint64_t lease_end;
};

/* One replicated write (replicate.c), from its range lock to its result.
 * The peers' copies and the local one go out together; finish_write
 * settles. */
struct rwrite {
    struct mvol *v;
    struct inflight x;
    uint64_t first, last;
    uint32_t wire_flags; /* added to every copy's */
    struct plan pl;
    struct mlink_wait w;
    int err;                /* from planning: nothing was sent */
    int applied;            /* copies that took it, this node's included */
    bool local_done;        /* this node's copy took it */
    struct mirror_async *a; /* asynchronous: told the result */
    struct rwrite *next;    /* in the settler's queue (write.c) */
    bool sent;              /* the settler sent its outdates */
};

/* How a replicated write reaches this node's copy (local_write, local_zero). */
typedef int (*local_fn)(struct mvol *v, const void *buf, uint32_t count, uint64_t offset,
                        unsigned flags);

/* ---- mvol.c: a volume's state ---------------------------------------------- */

/* v's size in bytes, without a lock. */
uint64_t vsize(const struct mvol *v);
/* The bytes of region r within the volume now; 0 past its end. */
uint64_t region_len(const struct mvol *v, uint64_t r);
/* With mu held: commits rec's replica set and local state to the store. */
int commit_state(struct mvol *v);
void mvol_ref(struct mvol *v);
/* Drops a reference; the last one frees v. */
void mvol_unref(struct mvol *v);
/* The regions a volume of size bytes has. */
uint64_t nregions(struct mirror *m, uint64_t size);
double seconds_since(const struct timespec *t);
/* With mu held: sets serve_local from rec. */
void update_serve_local(struct mvol *v);
/* With mu held: whether this node's copy of v takes writes. */
bool holds_copy(struct mvol *v);
/* Enters x's range into the writes in flight once no overlapping one is;
 * without wait, false at once instead. */
bool range_lock(struct mvol *mv, struct inflight *x, uint64_t offset, uint64_t len, bool wait);
void range_unlock(struct mvol *mv, struct inflight *x);

/* ---- dirty.c: the dirty bitmaps -------------------------------------------- */

/* With mu held: node's bitmap, opened (or created) on first use; NULL if it can't be. */
struct bitmap *dirty_for(struct mvol *v, uint32_t node);
/* With mu held: node is current again, its bitmap goes. */
void dirty_drop(struct mvol *v, uint32_t node);
/* With mu held: records regions first..last dirty for node, durably. */
int mark_dirty(struct mvol *v, uint32_t node, uint64_t first, uint64_t last);
/* With mu held: records first..last dirty for every outdated peer. */
int mark_outdated_peers(struct mvol *v, uint64_t first, uint64_t last);

/* ---- lost.c: the lost marks ------------------------------------------------- */

/* With mu held: whether region r is lost. */
bool lost_test(const struct mvol *mv, uint64_t r);
/* With mu held: marks or clears region r. */
void lost_set(struct mvol *v, uint64_t r, bool on);
/* The first lost region among first..last, or UINT64_MAX (takes mu). */
uint64_t lost_first(struct mvol *v, uint64_t first, uint64_t last);
/* With mu held: the marks for nr regions in a new array, and their count. */
int lost_sized(const struct mvol *v, uint64_t nr, uint64_t **out, uint64_t *count);
/* With mu held: the marks from lost_sized replace v's. */
void lost_swap(struct mvol *v, uint64_t *marks, uint64_t count, uint64_t nr);

/* ---- registry.c: volumes by id ---------------------------------------------- */

/* Registers v; -EEXIST if its id is taken. */
int reg_add(struct mirror *m, struct mvol *v);
/* Whether v was registered (and is no longer). */
bool reg_remove(struct mirror *m, struct mvol *v);
/* The volume with id vid, with a reference the caller drops; NULL if none. */
struct mvol *reg_get(struct mirror *m, uint32_t vid);
/* Runs fn on every attached volume, each with a reference, outside reg. */
void each_volume(struct mirror *m, void (*fn)(struct mvol *v, void *arg), void *arg);

/* ---- workers.c: the workers' queue ------------------------------------------ */

/* Queues fn(v) for a worker, not before after_ms, with a reference to v. */
int queue_job(struct mvol *v, void (*fn)(struct mvol *v), unsigned after_ms);
/* A worker thread's body (arg: the mirror). */
void *worker_main(void *arg);

/* ---- cut.c: a cut's drain and the peers' writes around it ------------------- */

/* Before a resync copy: waits while a cut holds v (see cut.c), then
 * counts it in; -ESHUTDOWN once v is gone or the engine stops (call
 * copy_leave either way). */
int copy_enter(struct mvol *v);
void copy_leave(struct mvol *v);
/* What this node's WRITEs and ZEROs carry: its cut version's low bits. */
uint32_t cut_stamp(struct mirror *m);
/* Before applying peer's write stamped stamp: waits until this node has
 * committed that cut too; -ETIMEDOUT after the mirror timeout. */
int cut_wait(struct mirror *m, uint32_t stamp, uint32_t peer);

/* ---- reads.c: from a current peer ------------------------------------------- */

/* The peers whose copy of v is current, into peers; how many. */
size_t current_peers(struct mvol *v, uint32_t peers[STORE_REPLICAS_MAX]);
/* Reads from the first current peer that answers. */
int read_peer(struct mvol *v, void *buf, uint32_t count, uint64_t offset);
/* The records of op's successful (SNAP_)EXTENTS reply (rec, its reply_buf)
 * checked and into ext; how many, or -EIO (logged). */
int extents_reply(struct mvol *v, const struct mlink_op *op, const struct mw_extent *rec,
                  struct svol_extent *ext);

/* ---- snapio.c: a snapshot's data, from this copy or a current peer ---------- */

/* count bytes (at most MWIRE_IO_MAX) at offset of snapshot snap, from the
 * first current peer that answers (each asked again while its read lease
 * lapsed, up to the mirror timeout). -ENOENT if the peers that answered
 * lack the snapshot, -EINVAL past its size, -EIO if none answered. */
int snap_read_peer(struct mvol *v, uint64_t snap, void *buf, uint32_t count, uint64_t offset);
/* This copy's chunks of [offset, offset+length) (a SNAP_CHANGED range)
 * written between the cuts of since and upto (0: now), as the bits of a
 * SNAP_CHANGED reply into bits (mwire_changed_reply_size(length) bytes,
 * zeroed by the caller). Errors as snap_changed. */
int changed_local(struct mvol *v, uint64_t since, uint64_t upto, uint64_t offset, uint32_t length,
                  uint8_t *bits);

/* ---- replicate.c: one write to every copy ----------------------------------- */

/* Records this node's copy as failed (it serves nothing until replaced). */
void set_local_failed(struct mvol *v);
/* With mu held: the count of node's outdates applied here (NULL: too many nodes). */
uint64_t *outdates_of(struct mvol *v, uint32_t node);
/* With mu held: node's copy stopped being current here now; its read
 * lease may run POLICING_LEASE_MS more. */
void lease_started(struct mvol *v, uint32_t node);
/* Sends the agreed outdates of the peers that failed pl; errors into *err. */
void outdate_failed(struct mvol *v, struct plan *pl, uint64_t first, uint64_t last, int *err);
int local_write(struct mvol *v, const void *buf, uint32_t count, uint64_t offset, unsigned flags);
int local_zero(struct mvol *v, const void *buf, uint32_t count, uint64_t offset, unsigned flags);
/* Sets w up for count bytes of v at offset (its regions, no flags). */
void rwrite_init(struct rwrite *w, struct mvol *v, uint32_t count, uint64_t offset);
/* With w's range held: plans w and sends it to every copy; with done, w->w
 * completes through it, else the caller waits with mlink_wait. */
void start_write(struct rwrite *w, enum mwire_type type, const void *buf, uint32_t count,
                 uint64_t offset, unsigned flags, local_fn local,
                 void (*done)(struct mlink_wait *));
/* Once every copy answered: settles failed peers; 0 or -errno. */
int settle_write(struct rwrite *w);
/* settle_write, then ends w's range lock. */
int finish_write(struct rwrite *w);

/* ---- activity.c: the activity log ------------------------------------------- */

/* Whether every region of first..last is logged (always, without a log). */
bool regions_logged(struct mvol *v, uint64_t first, uint64_t last);
/* Takes x's range once regions first..last are logged; without wait,
 * -ENOSPC at once when the log has no room. */
int logged_range_lock(struct mvol *v, struct inflight *x, uint64_t offset, uint64_t len,
                      uint64_t first, uint64_t last, bool wait);

/* ---- verify.c: comparing copies ---------------------------------------------- */

/* Whether the n current peers' CRC-64s of region r differ from this
 * node's; the caller holds the region's priority and range. */
int region_differs(struct mvol *v, uint64_t r, uint32_t *peers, size_t n, bool *differs);

/* ---- reconcile.c: making lost regions equal ---------------------------------- */

/* Reconciles the lost regions among first..last; the caller holds their
 * priority and no range of them. */
int reconcile_lost(struct mvol *v, uint64_t first, uint64_t last, bool wait);
/* Makes region r equal on every copy; the caller holds its priority and
 * its whole range. */
int reconcile_region(struct mvol *v, uint64_t r);
/* With mu held: queues the background reconcile if v has lost regions. */
void consider_reconcile(struct mvol *v);
/* A reconcile's write to this node's copy (a local_fn): written only
 * where the copy holds other bytes. */
int reconcile_apply(struct mvol *v, const void *buf, uint32_t count, uint64_t offset,
                    unsigned flags);
/* With mu held: marks lost the regions of v this node's log carried. */
void lost_from_log(struct mvol *v);

/* ---- write.c: client writes --------------------------------------------------- */

/* The settler thread's body (arg: the mirror). */
void *settler_main(void *arg);

/* ---- resync.c ------------------------------------------------------------------ */

/* Queues v's resync unless one is queued or running (takes mu). */
void consider_resync(struct mvol *v);

/* ---- serve.c ------------------------------------------------------------------- */

/* The link's handler of a peer's request (ctx: the mirror). */
int serve_request(void *ctx, struct mlink_call *c);

#endif
