/* placement.c - the choice of a new volume's replica nodes (placement.h). */
#include "policing/placement.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

bool place_fits(const struct place_node *c, uint64_t size, double overcommit)
{
    /* long double: sizes near 2^64 times a ratio keep their precision. */
    long double limit = (long double)c->capacity * overcommit;
    return c->capacity > 0 && (long double)c->provisioned + (long double)size <= limit;
}

static uint64_t free_of(const struct place_node *c)
{
    return c->capacity > c->used ? c->capacity - c->used : 0;
}

/* Most free first; then fewer replicas; then the lower id. */
static int better(const void *pa, const void *pb)
{
    const struct place_node *a = pa, *b = pb;
    uint64_t fa = free_of(a), fb = free_of(b);
    if (fa != fb)
        return fa > fb ? -1 : 1;
    if (a->replicas != b->replicas)
        return a->replicas < b->replicas ? -1 : 1;
    return a->node < b->node ? -1 : a->node > b->node;
}

static int by_id(const void *pa, const void *pb)
{
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    return a < b ? -1 : a > b;
}

static const struct place_node *find(const struct place_node *cand, size_t n, uint32_t node)
{
    for (size_t i = 0; i < n; i++)
        if (cand[i].node == node)
            return &cand[i];
    return NULL;
}

static int place_pinned(const struct place_node *cand, size_t n, uint64_t size, double overcommit,
                        const uint32_t *pinned, size_t npinned, uint32_t *out, uint32_t *bad)
{
    for (size_t i = 0; i < npinned; i++) {
        for (size_t j = 0; j < i; j++)
            if (pinned[j] == pinned[i])
                return -EINVAL;
        const struct place_node *c = find(cand, n, pinned[i]);
        *bad = pinned[i];
        if (!c)
            return -ENOENT;
        if (!place_fits(c, size, overcommit))
            return -ENOSPC;
        out[i] = pinned[i];
    }
    *bad = 0;
    qsort(out, npinned, sizeof *out, by_id);
    return 0;
}

int place_volume(const struct place_node *cand, size_t n, uint64_t size, unsigned want,
                 double overcommit, const uint32_t *pinned, size_t npinned, uint32_t *out,
                 uint32_t *bad)
{
    *bad = 0;
    if (want == 0 || want > n || (npinned > 0 && want != npinned))
        return -EINVAL;
    if (npinned > 0)
        return place_pinned(cand, n, size, overcommit, pinned, npinned, out, bad);
    struct place_node *order = malloc(n * sizeof *order);
    if (!order)
        return -ENOMEM;
    memcpy(order, cand, n * sizeof *order);
    qsort(order, n, sizeof *order, better);
    unsigned k = 0;
    for (size_t i = 0; i < n && k < want; i++)
        if (place_fits(&order[i], size, overcommit))
            out[k++] = order[i].node;
    free(order);
    if (k < want)
        return -ENOSPC;
    qsort(out, k, sizeof *out, by_id);
    return 0;
}
