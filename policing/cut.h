/* cut.h - barriers in the agreed order ("cuts"): the bookkeeping of the
 * ones open on this node, pure (no I/O, no timers; protocol.c drives it).
 *
 * A cut takes one point in time across the cluster for a few volumes,
 * though any node writes to them (docs/ARCHITECTURE.md, invariant 8):
 *
 *   CUT_BEGIN (agreed)  every member holds new writes to the volumes and
 *                       drains what it started (writes, resync and
 *                       reconcile copies, applied on every current copy;
 *                       no lost region left), then multicasts DRAINED;
 *   DRAINED (agreed)    once every member of the view at BEGIN has sent
 *                       one, the cut commits where that last DRAINED is
 *                       delivered: every node cuts its copies there and
 *                       lets the writes go;
 *   ABORT (agreed)      a node whose timer (CUT_TIMEOUT_MS) expired
 *                       first: delivered before the last DRAINED, the cut
 *                       aborts everywhere; after it, it is ignored;
 *   a membership change aborts every open cut (a member may be gone, or
 *                       one that joined never saw the BEGIN).
 *
 * A cut of kind CONFIG carries a configuration change of its one volume
 * (a resize; a replica set later): the commit applies it on every node
 * with the volume's writes held and drained, so no write lands on one
 * copy under the old configuration and on another under the new; an
 * abort leaves it as it was. Either way the writes then go on.
 *
 * Every node sees these in the same order, so every node commits or
 * aborts the same cuts at the same point of the stream. A volume is in at
 * most one open cut; at most CUT_OPEN_MAX are open at once (a BEGIN past
 * that is refused with -EBUSY, deterministically).
 */
#ifndef VSAN_POLICING_CUT_H
#define VSAN_POLICING_CUT_H

#include "policing/cluster.h"
#include "policing/messages.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CUT_OPEN_MAX 4
/* A node that has not seen a cut commit this long after its BEGIN asks to
 * abort it: client writes are held meanwhile. Measured: a cut commits in
 * a few ms on an idle lab; a write waiting on a dead peer holds the drain
 * until the mirror timeout, and such a cut had better abort and be asked
 * again. */
#define CUT_TIMEOUT_MS 2000

struct cut {
    uint64_t id, tag;
    uint8_t kind;  /* enum pmsg_cut_kind */
    bool busy;     /* a member drained busy: the cut ends with -ETXTBSY */
    uint32_t from; /* the node that asked */
    int64_t time;  /* the snapshots' time, from the BEGIN */
    char snapshot[PMSG_NAME_MAX + 1];
    /* CONFIG: the change, and the name of the volume it is for. */
    struct pmsg_cut_config config;
    char volume[PMSG_NAME_MAX + 1];
    uint32_t vids[PMSG_CUT_VOLUMES];
    size_t nvols;
    /* The members at BEGIN, and which of them have drained. */
    uint32_t members[CLUSTER_NODES_MAX];
    bool drained[CLUSTER_NODES_MAX];
    size_t nmembers;
    /* This node's part (protocol.c): DRAINED sent, ABORT sent. */
    bool sent_drained, sent_abort;
    uint64_t deadline_ms; /* monotonic */
};

struct cut_set {
    struct cut open[CUT_OPEN_MAX];
    size_t n;
};

/* Opens c: -EBUSY if CUT_OPEN_MAX are open or one of its volumes is in an
 * open cut; -EEXIST if a cut with its id is open. */
int cut_open(struct cut_set *s, const struct cut *c);
/* The open cut with this id, or NULL (committed, aborted, or never). */
struct cut *cut_find(struct cut_set *s, uint64_t id);
/* Records node's DRAINED (busy: its clients use what the cut changes)
 * for c: true once every member at BEGIN has drained (the cut ends here:
 * commits, or ends with -ETXTBSY if any was busy). A node that was not a
 * member at BEGIN does not count. */
bool cut_node_drained(struct cut *c, uint32_t node, bool busy);
/* Closes c (committed or aborted); pointers into the set are invalid
 * after. */
void cut_close(struct cut_set *s, struct cut *c);

#endif
