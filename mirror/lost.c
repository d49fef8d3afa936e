/* lost.c - the lost marks: the regions of a volume that a departed writer
 * (or a whole-cluster power cut, activity.c) may have left unequal on the
 * copies, a bit each, under the volume's mu (why and how they are made
 * equal: reconcile.c). Set by the agreed table (engine.c) and the activity
 * log's announcements (reconcile.c); cleared by the reconcile and by a
 * peer's reconciling write (serve.c); looked at first by every write
 * (write.c). Sized with the volume (engine.c).
 */
#include "mirror/engine_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

bool lost_test(const struct mvol *mv, uint64_t r)
{
    return r < mv->lost_nbits && (mv->lost[r / 64] >> (r % 64)) & 1;
}

/* With mu held: marks or clears region r. */
void lost_set(struct mvol *v, uint64_t r, bool on)
{
    struct mvol *mv = v;
    uint64_t n = nregions(v->m, vsize(v));
    if (r >= n || lost_test(mv, r) == on)
        return;
    if (!mv->lost && !(mv->lost = calloc((n + 63) / 64, sizeof *mv->lost))) {
        qb_log(LOG_ERR, "volume \"%s\": region %llu: no memory to mark it lost", v->name,
               (unsigned long long)r);
        return;
    }
    if (mv->lost_nbits == 0)
        mv->lost_nbits = n;
    mv->lost[r / 64] ^= UINT64_C(1) << (r % 64);
    if (on)
        atomic_fetch_add(&mv->nlost, 1);
    else
        atomic_fetch_sub(&mv->nlost, 1);
}

/* The first lost region among first..last, or UINT64_MAX. */
uint64_t lost_first(struct mvol *v, uint64_t first, uint64_t last)
{
    if (atomic_load(&v->nlost) == 0)
        return UINT64_MAX;
    uint64_t found = UINT64_MAX;
    pthread_mutex_lock(&v->mu);
    for (uint64_t r = first; r <= last && found == UINT64_MAX; r++)
        if (lost_test(v, r))
            found = r;
    pthread_mutex_unlock(&v->mu);
    return found;
}

/* With mu held: the lost marks for nr regions, in a new array (none
 * while none is kept). */
int lost_sized(const struct mvol *v, uint64_t nr, uint64_t **out, uint64_t *count)
{
    *out = NULL;
    *count = 0;
    if (!v->lost)
        return 0; /* allocated at the first loss */
    size_t words = (size_t)((nr + 63) / 64), old = (size_t)((v->lost_nbits + 63) / 64);
    uint64_t *n = calloc(words ? words : 1, sizeof *n);
    if (!n)
        return -ENOMEM;
    memcpy(n, v->lost, (words < old ? words : old) * sizeof *n);
    if (nr % 64)
        n[words - 1] &= (UINT64_C(1) << (nr % 64)) - 1;
    for (size_t i = 0; i < words; i++)
        *count += (uint64_t)__builtin_popcountll(n[i]);
    *out = n;
    return 0;
}

/* With mu held: the lost marks now cover nr regions. */
void lost_swap(struct mvol *v, uint64_t *marks, uint64_t count, uint64_t nr)
{
    if (!marks)
        return;
    free(v->lost);
    v->lost = marks;
    v->lost_nbits = nr;
    atomic_store(&v->nlost, count);
}
