/* registry.c - the attached volumes by id, for the peers' requests
 * (serve.c), the checkpoints (activity.c), and what goes through every
 * volume (each_volume). Guarded by the engine's reg: lookups share it,
 * attach and detach (engine.c) take it exclusively. A volume found comes
 * with a reference the caller drops.
 */
#include "mirror/engine_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

/* With reg held: v's index, or where it would go. */
static bool reg_find(struct mirror *m, uint32_t vid, size_t *idx)
{
    size_t lo = 0, hi = m->nvols;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->vols[mid]->vid == vid) {
            *idx = mid;
            return true;
        }
        if (m->vols[mid]->vid < vid)
            lo = mid + 1;
        else
            hi = mid;
    }
    *idx = lo;
    return false;
}

int reg_add(struct mirror *m, struct mvol *v)
{
    pthread_rwlock_wrlock(&m->reg);
    size_t idx;
    int r = reg_find(m, v->vid, &idx) ? -EEXIST : 0;
    if (r == 0 && m->nvols == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        struct mvol **n = realloc(m->vols, cap * sizeof *n);
        r = n ? 0 : -ENOMEM;
        if (n) {
            m->vols = n;
            m->cap = cap;
        }
    }
    if (r == 0) {
        memmove(&m->vols[idx + 1], &m->vols[idx], (m->nvols - idx) * sizeof *m->vols);
        m->vols[idx] = v;
        m->nvols++;
    }
    pthread_rwlock_unlock(&m->reg);
    return r;
}

/* Whether v was registered (and is no longer). */
bool reg_remove(struct mirror *m, struct mvol *v)
{
    pthread_rwlock_wrlock(&m->reg);
    size_t idx;
    bool found = reg_find(m, v->vid, &idx) && m->vols[idx] == v;
    if (found) {
        m->nvols--;
        memmove(&m->vols[idx], &m->vols[idx + 1], (m->nvols - idx) * sizeof *m->vols);
    }
    pthread_rwlock_unlock(&m->reg);
    return found;
}

/* The volume with id vid, with a reference the caller drops; NULL if none. */
struct mvol *reg_get(struct mirror *m, uint32_t vid)
{
    pthread_rwlock_rdlock(&m->reg);
    size_t idx;
    struct mvol *v = reg_find(m, vid, &idx) ? m->vols[idx] : NULL;
    if (v)
        mvol_ref(v);
    pthread_rwlock_unlock(&m->reg);
    return v;
}

/* Runs fn on every attached volume, each with a reference, outside reg. */
void each_volume(struct mirror *m, void (*fn)(struct mvol *v, void *arg), void *arg)
{
    pthread_rwlock_rdlock(&m->reg);
    size_t n = m->nvols;
    struct mvol **copy = malloc((n ? n : 1) * sizeof *copy);
    for (size_t i = 0; copy && i < n; i++) {
        copy[i] = m->vols[i];
        mvol_ref(copy[i]);
    }
    pthread_rwlock_unlock(&m->reg);
    if (!copy) {
        qb_log(LOG_ERR, "mirror: out of memory to go through %zu volumes", n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        fn(copy[i], arg);
        mvol_unref(copy[i]);
    }
    free(copy);
}
