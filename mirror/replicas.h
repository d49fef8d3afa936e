/* replicas.h - a volume's replica set as the cluster agrees on it.
 *
 * A volume's replicas are on every node, or (placed, store.h's fixed) on
 * the nodes its create chose; the others are diskless for it (they hold
 * no copy and are not in the set). Which replicas are
 * current is part of the replicated volume table: it changes only by agreed
 * messages (policing/protocol.h) and membership changes, applied in the same
 * order everywhere, so every node has the same view and the same rules here
 * decide the same outcome on each (docs/ARCHITECTURE.md, invariants 1 and 5):
 *
 *   CURRENT   has every acknowledged write; serves reads; gets every write.
 *   OUTDATED  missed writes; serves nothing, gets nothing. Every current
 *             replica records the regions written since in a dirty bitmap.
 *   SYNCING   being brought back: gets every new write, serves nothing,
 *             while the regions it missed are copied to it; then CURRENT.
 *
 * Transitions: CURRENT|SYNCING -> OUTDATED (a failed write, its node left,
 * its disk failed); OUTDATED -> SYNCING (its node asks, once it can copy);
 * none -> SYNCING (a node that never had the volume joins the set);
 * SYNCING -> CURRENT (its copy is done). Anything else is ignored, so a
 * stale message (a CURRENT sent before the sender was outdated again) can
 * do no harm.
 *
 * Pure functions over the store's record (store/store.h); no locking.
 */
#ifndef VSAN_MIRROR_REPLICAS_H
#define VSAN_MIRROR_REPLICAS_H

#include "store/store.h"

#include <stdbool.h>
#include <stdint.h>

enum replica_state {
    REPLICA_NONE = 0, /* not a replica of the volume */
    REPLICA_CURRENT = 1,
    REPLICA_OUTDATED = 2,
    REPLICA_SYNCING = 3,
};

const char *replica_state_name(int state);

enum replica_state replica_get(const struct store_volume *v, uint32_t node);

/* Applies the transition to state if the rules above allow it; true if
 * the set changed. */
bool replica_apply(struct store_volume *v, uint32_t node, enum replica_state state);

/* Adds node to the set as syncing (a replica added by the admin, placed
 * set or not); false if it is in it or the set is full. replica_apply
 * refuses NONE -> SYNCING in a placed set: only this adds to one. */
bool replica_join(struct store_volume *v, uint32_t node);

/* Removes node from the set (a replica removed by the admin); false if it
 * is not in it. No transition rule applies: the caller checks
 * replica_change_check first. */
bool replica_remove(struct store_volume *v, uint32_t node);

/* Whether node's replica may be added to (add) or removed from the set r
 * of n: 0, -EEXIST (add: node holds one), -ENXIO (remove: it holds none),
 * -EDQUOT (remove: no current copy would remain, or node's is current and
 * fewer than min_current would). The engine applies it at the commit, the
 * admin path before asking, for a clear error at once. */
int replica_change_check(const struct store_replica *r, uint32_t n, bool add, uint32_t node,
                         unsigned min_current);

/* Sets the initial set: every node listed, current. */
void replica_init(struct store_volume *v, const uint32_t *nodes, size_t n);

/* How many replicas are in state. */
unsigned replica_count(const struct store_volume *v, enum replica_state state);

#endif
