/* replicas.c - the agreed replica set's transition rules (replicas.h). */
#include "mirror/replicas.h"

#include <errno.h>
#include <string.h>

const char *replica_state_name(int state)
{
    switch (state) {
    case REPLICA_CURRENT:
        return "current";
    case REPLICA_OUTDATED:
        return "outdated";
    case REPLICA_SYNCING:
        return "syncing";
    default:
        return "none";
    }
}

static int find(const struct store_volume *v, uint32_t node)
{
    for (uint32_t i = 0; i < v->nreplicas; i++)
        if (v->replicas[i].node == node)
            return (int)i;
    return -1;
}

enum replica_state replica_get(const struct store_volume *v, uint32_t node)
{
    int i = find(v, node);
    return i < 0 ? REPLICA_NONE : (enum replica_state)v->replicas[i].state;
}

/* Inserts node, keeping the set sorted; false if it is full. */
static bool insert(struct store_volume *v, uint32_t node, enum replica_state state)
{
    if (v->nreplicas == STORE_REPLICAS_MAX)
        return false;
    uint32_t i = v->nreplicas;
    while (i > 0 && v->replicas[i - 1].node > node) {
        v->replicas[i] = v->replicas[i - 1];
        i--;
    }
    v->replicas[i] = (struct store_replica){node, (uint8_t)state};
    v->nreplicas++;
    return true;
}

static bool allowed(enum replica_state from, enum replica_state to)
{
    switch (to) {
    case REPLICA_OUTDATED:
        return from == REPLICA_CURRENT || from == REPLICA_SYNCING;
    case REPLICA_SYNCING:
        return from == REPLICA_OUTDATED || from == REPLICA_NONE;
    case REPLICA_CURRENT:
        return from == REPLICA_SYNCING;
    default:
        return false;
    }
}

bool replica_apply(struct store_volume *v, uint32_t node, enum replica_state state)
{
    if (node == 0)
        return false;
    int i = find(v, node);
    enum replica_state from = i < 0 ? REPLICA_NONE : (enum replica_state)v->replicas[i].state;
    /* A placed set grows only by an agreed add (replica_join): a node
     * whose copy was removed must not ask itself back in. */
    if (!allowed(from, state) || (from == REPLICA_NONE && v->fixed))
        return false;
    if (i < 0)
        return insert(v, node, state);
    v->replicas[i].state = (uint8_t)state;
    return true;
}

bool replica_join(struct store_volume *v, uint32_t node)
{
    return node != 0 && find(v, node) < 0 && insert(v, node, REPLICA_SYNCING);
}

bool replica_remove(struct store_volume *v, uint32_t node)
{
    int i = find(v, node);
    if (i < 0)
        return false;
    v->nreplicas--;
    memmove(&v->replicas[i], &v->replicas[i + 1],
            (v->nreplicas - (uint32_t)i) * sizeof *v->replicas);
    v->replicas[v->nreplicas] = (struct store_replica){0};
    return true;
}

int replica_change_check(const struct store_replica *r, uint32_t n, bool add, uint32_t node,
                         unsigned min_current)
{
    enum replica_state s = REPLICA_NONE;
    unsigned current = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (r[i].node == node)
            s = (enum replica_state)r[i].state;
        else
            current += r[i].state == REPLICA_CURRENT;
    }
    if (add)
        return s == REPLICA_NONE ? 0 : -EEXIST;
    if (s == REPLICA_NONE)
        return -ENXIO;
    return current == 0 || (s == REPLICA_CURRENT && current < min_current) ? -EDQUOT : 0;
}

void replica_init(struct store_volume *v, const uint32_t *nodes, size_t n)
{
    v->nreplicas = 0;
    for (size_t i = 0; i < n; i++)
        if (nodes[i] != 0 && find(v, nodes[i]) < 0)
            insert(v, nodes[i], REPLICA_CURRENT);
}

unsigned replica_count(const struct store_volume *v, enum replica_state state)
{
    unsigned n = 0;
    for (uint32_t i = 0; i < v->nreplicas; i++)
        n += v->replicas[i].state == state;
    return n;
}
