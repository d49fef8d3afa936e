/* cut.c - the open cuts of this node (cut.h). */
#include "policing/cut.h"

#include <errno.h>

static bool shares_volume(const struct cut *a, const struct cut *b)
{
    for (size_t i = 0; i < a->nvols; i++)
        for (size_t j = 0; j < b->nvols; j++)
            if (a->vids[i] == b->vids[j])
                return true;
    return false;
}

int cut_open(struct cut_set *s, const struct cut *c)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->open[i].id == c->id)
            return -EEXIST;
        if (shares_volume(&s->open[i], c))
            return -EBUSY;
    }
    if (s->n == CUT_OPEN_MAX)
        return -EBUSY;
    s->open[s->n++] = *c;
    return 0;
}

struct cut *cut_find(struct cut_set *s, uint64_t id)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->open[i].id == id)
            return &s->open[i];
    return NULL;
}

bool cut_node_drained(struct cut *c, uint32_t node, bool busy)
{
    bool all = true;
    for (size_t i = 0; i < c->nmembers; i++) {
        if (c->members[i] == node && !c->drained[i]) {
            c->drained[i] = true;
            c->busy = c->busy || busy;
        }
        all = all && c->drained[i];
    }
    return all;
}

void cut_close(struct cut_set *s, struct cut *c)
{
    size_t i = (size_t)(c - s->open);
    s->open[i] = s->open[--s->n];
}
