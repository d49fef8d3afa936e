/* placement.h - where a new volume's replicas go: pure logic over the
 * figures every node announced (PMSG_CAPACITY, messages.h) and the agreed
 * table, run by the node that takes the create; the CREATE message then
 * carries the chosen set, so no node applying it reads local free space.
 *
 * A node fits a volume of size bytes if its provisioned bytes (the sizes
 * of the volumes it holds a replica of) plus size stay within overcommit
 * times its capacity. Of the nodes that fit, the ones with the most free
 * bytes (capacity minus what its replicas and snapshots use) go first;
 * ties go to the node with fewer replicas, then to the lower id.
 */
#ifndef VSAN_POLICING_PLACEMENT_H
#define VSAN_POLICING_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct place_node {
    uint32_t node;
    uint64_t capacity;    /* bytes the node offers */
    uint64_t used;        /* bytes its replicas and snapshots take */
    uint64_t provisioned; /* sizes of the volumes it holds a replica of */
    unsigned replicas;    /* how many it holds */
};

/* Chooses want distinct nodes among the n candidates for a volume of
 * size bytes into out (sorted by id). With npinned > 0, the pinned nodes
 * are the set (want must equal npinned). 0, or:
 *   -EINVAL  want is 0 or more than the candidates (or != npinned), or a
 *            pinned node is named twice;
 *   -ENOENT  a pinned node is not a candidate (*bad: it);
 *   -ENOSPC  fewer than want nodes fit (*bad: a pinned node that does
 *            not, or 0). */
int place_volume(const struct place_node *cand, size_t n, uint64_t size, unsigned want,
                 double overcommit, const uint32_t *pinned, size_t npinned, uint32_t *out,
                 uint32_t *bad);

/* Whether node c fits size more bytes under overcommit. */
bool place_fits(const struct place_node *c, uint64_t size, double overcommit);

#endif
