/* priority.h - per-region write priority: the policing state machine.
 *
 * One instance per node. Two kinds of input:
 *  - agreed events, applied in the same order on every node (a node's
 *    request or release of a region, a member leaving, a volume deleted):
 *    they change the shared table, identical everywhere: for each
 *    (volume, region) an owner and a FIFO of waiting nodes;
 *  - local events of this node (a write wants to start, a write ended, a
 *    waiting write gave up): they change only this node's bookkeeping.
 * It does no I/O and takes no lock (the caller serialises all calls). It
 * returns actions (send a request, send a release, wake the writes waiting
 * on a region) that the caller carries out, so a deterministic simulator
 * drives it in the unit tests.
 *
 * The rules (invariant 3 of the design: one writer per region):
 *  - a node writes region R only while its copy of the shared table says
 *    it owns R and it has not sent a RELEASE for R since;
 *  - ownership is sticky: the owner writes with no message at all until
 *    another node's REQUEST for R is applied (the fast path);
 *  - then the owner stops starting new writes on R, lets finish the writes
 *    in flight (and those that were already waiting for R when it was
 *    granted, so two nodes that want R alternate instead of livelocking),
 *    and sends RELEASE; a RELEASE gives R to the first waiter;
 *  - a write spanning several regions takes them in ascending order and
 *    pins only what it holds, so no cycle of waits can form;
 *  - a member that leaves loses its regions, each to its first waiter, and
 *    disappears from every queue; the regions it owned are reported to the
 *    caller (they must be reconciled before the next write, and resynced
 *    to that node when it returns).
 * Liveness: every request of a node that stays in the group is granted.
 */
#ifndef VSAN_POLICING_PRIORITY_H
#define VSAN_POLICING_PRIORITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint32_t pol_node_t; /* corosync node id; 0 means nobody */

struct pol_key {
    uint32_t volume; /* cluster-wide volume id from the volume table */
    uint64_t region; /* byte offset / region size */
};

enum pol_action_kind {
    POL_SEND_REQUEST, /* multicast REQUEST(key) from this node */
    POL_SEND_RELEASE, /* multicast RELEASE(key) from this node */
    POL_WAKE,         /* writes of this node waiting on key should retry */
    POL_LOST,         /* a departed node owned key: reconcile before writing */
};
/* POL_WAKE: retry every write waiting on key (w->held is the region a
 * waiting write waits on) soon, before new writes to key if possible: the
 * region stays with this node, even if others are queued, until the writes
 * that were waiting when it was granted have started. For one event,
 * POL_LOST comes before the POL_WAKE of the same key. */

struct pol_action {
    enum pol_action_kind kind;
    struct pol_key key;
    pol_node_t node; /* POL_LOST: the node that left */
};

/* A growable list of actions, appended to by every call; the caller
 * carries them out in order and sets n back to 0. */
struct pol_actions {
    struct pol_action *v;
    size_t n, cap;
};
void pol_actions_free(struct pol_actions *a);

/* One write, owned by the caller for its whole life. */
struct pol_write {
    uint32_t volume;
    uint64_t first, last; /* regions, inclusive */
    /* The state machine's own bookkeeping; zero-initialise, don't touch. */
    uint64_t held; /* regions first..held-1 are pinned for this write */
    bool waiting;
};

struct pol;

/* NULL if self is 0 (errno EINVAL) or memory is short (ENOMEM). */
struct pol *pol_new(pol_node_t self);
void pol_free(struct pol *p);

/* ---- agreed events (every node, same order) ------------------------ */
void pol_on_request(struct pol *p, struct pol_key k, pol_node_t from, struct pol_actions *out);
void pol_on_release(struct pol *p, struct pol_key k, pol_node_t from, struct pol_actions *out);
/* gone may be this node (after its own cpg_leave): the table forgets it
 * like every other node's table does, and it owns nothing any more. */
void pol_on_leave(struct pol *p, pol_node_t gone, struct pol_actions *out);
/* Forgets every region of the volume, shared and local. The caller fails
 * that volume's writes; pol_write_end and pol_write_cancel on them are then
 * harmless no-ops. Volume ids are never reused, so nothing stale returns. */
void pol_on_volume_gone(struct pol *p, uint32_t volume, struct pol_actions *out);

/* ---- local events (this node) -------------------------------------- */
/* Tries to start w. true: this node may write all of w's regions now, and
 * w counts as in flight on each until pol_write_end. false: w waits (the
 * needed REQUESTs are among the actions); call again after a POL_WAKE for
 * any of its regions, or pol_write_cancel. -ENOMEM-free: allocation
 * failure aborts, as memory for the table is bounded by regions in use. */
bool pol_write_begin(struct pol *p, struct pol_write *w, struct pol_actions *out);
/* w has completed (on every current replica); its regions may be released
 * (the actions say so). w can then be begun again. */
void pol_write_end(struct pol *p, struct pol_write *w, struct pol_actions *out);
/* A waiting write gives up (its client went away, quorum was lost); it
 * lets go of the regions it had pinned. */
void pol_write_cancel(struct pol *p, struct pol_write *w, struct pol_actions *out);

/* ---- queries ---------------------------------------------------------- */
pol_node_t pol_owner(const struct pol *p, struct pol_key k);
/* The nodes queued for k, first first; returns how many (may exceed max). */
size_t pol_waiters(const struct pol *p, struct pol_key k, pol_node_t *out, size_t max);
/* Regions with an owner or a queue (the table's size, for status). */
size_t pol_regions(const struct pol *p);

/* ---- state transfer --------------------------------------------------- */
/* The shared table (owners and queues, not local bookkeeping) as bytes, in
 * a malloc'd buffer the caller frees; 0 or -ENOMEM. A node joining a
 * running group loads it with pol_restore before applying later events.
 * The encoding is versioned and little endian (priority.c spells it out);
 * regions are sorted, so equal tables give equal bytes. */
int pol_snapshot(const struct pol *p, void **buf, size_t *len);
/* Replaces p's shared table; local bookkeeping is kept and catches up
 * with it: a region the snapshot grants us is granted, one others wait
 * for is released if no write holds it (the actions in out say so).
 * -EINVAL for a malformed snapshot (bad magic, version or lengths, node
 * 0, a duplicate region or waiter, an owner among its own waiters),
 * leaving p unchanged; -ENOMEM, also leaving it unchanged; 0 on success. */
int pol_restore(struct pol *p, const void *buf, size_t len, struct pol_actions *out);

#endif
