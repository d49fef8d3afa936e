/* dirty.c - the dirty bitmaps this node records for outdated peers: every
 * region written here while a peer's copy is outdated, durably, so that
 * the peer's resync (resync.c, asking through MW_DIRTY, serve.c) copies
 * just those. A file per peer (store_bitmap_path), opened on first use,
 * removed once the peer is current again; all under the volume's mu.
 */
#include "mirror/engine_int.h"

#include "mirror/replicas.h"
#include "store/bitmap.h"
#include "store/svol.h"

#include <limits.h>
#include <string.h>

#include <qb/qblog.h>

/* With mv->mu held: node's bitmap, opened (or created) on first use. */
struct bitmap *dirty_for(struct mvol *v, uint32_t node)
{
    struct mvol *mv = v;
    for (size_t i = 0; i < mv->ndirty; i++)
        if (mv->dirty_node[i] == node)
            return mv->dirty[i];
    if (mv->ndirty == STORE_REPLICAS_MAX || atomic_load(&v->gone))
        return NULL; /* a deleted volume's bitmaps are not created again */
    char path[PATH_MAX];
    store_bitmap_path(v->m->p.store, svol_uuid(v->sv), node, path, sizeof path);
    struct bitmap *b;
    if (bitmap_open(path, nregions(v->m, vsize(v)), v->m->rs_shift, &b) < 0)
        return NULL;
    mv->dirty[mv->ndirty] = b;
    mv->dirty_node[mv->ndirty++] = node;
    return b;
}

/* With mv->mu held: node is current again, its bitmap goes. */
void dirty_drop(struct mvol *v, uint32_t node)
{
    struct mvol *mv = v;
    for (size_t i = 0; i < mv->ndirty; i++) {
        if (mv->dirty_node[i] != node)
            continue;
        if (bitmap_remove(mv->dirty[i]) < 0)
            qb_log(LOG_WARNING, "volume \"%s\": node %u: its dirty bitmap could not be removed",
                   v->name, node);
        mv->ndirty--;
        mv->dirty[i] = mv->dirty[mv->ndirty];
        mv->dirty_node[i] = mv->dirty_node[mv->ndirty];
        return;
    }
}

/* With mv->mu held: records regions first..last dirty for node, durably. */
int mark_dirty(struct mvol *v, uint32_t node, uint64_t first, uint64_t last)
{
    struct bitmap *b = dirty_for(v, node);
    if (!b) {
        qb_log(LOG_ERR, "volume \"%s\": node %u: no dirty bitmap: refusing the write", v->name,
               node);
        return -EIO;
    }
    uint64_t n = bitmap_nbits(b);
    if (n == 0)
        return 0;
    int r = bitmap_set(b, first, last < n ? last : n - 1);
    if (r > 0)
        r = bitmap_sync(b);
    if (r < 0)
        qb_log(LOG_ERR, "volume \"%s\": node %u: recording dirty regions: %s", v->name, node,
               strerror(-r));
    return r < 0 ? r : 0;
}

/* With mv->mu held: a write to first..last is applied here; every outdated
 * replica must get it later. Only a copy that holds the data records it. */
int mark_outdated_peers(struct mvol *v, uint64_t first, uint64_t last)
{
    for (uint32_t i = 0; i < v->rec.nreplicas; i++) {
        const struct store_replica *r = &v->rec.replicas[i];
        if (r->state != REPLICA_OUTDATED || r->node == v->m->self)
            continue;
        int e = mark_dirty(v, r->node, first, last);
        if (e < 0)
            return e;
    }
    return 0;
}
