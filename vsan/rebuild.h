/* rebuild.h - the automatic rebuild of a placed volume's copy gone longer
 * than [cluster] replace_after (rebuild.c): the coordinator, the lowest id
 * in a quorate view, asks for each such copy to be rebuilt on a node with
 * room. Main loop only. */
#ifndef VSAN_REBUILD_H
#define VSAN_REBUILD_H

#include "vsan/admin.h"

struct rebuild;

/* Starts watching (every second) on node's loop; *out stays NULL for a
 * standalone node or replace_after = 0 (never). 0, or -ENOMEM. */
int rebuild_start(const struct admin_node *node, struct rebuild **out);
/* After policing_stop: a rebuild still on its way has been answered. */
void rebuild_stop(struct rebuild *rb);

#endif
