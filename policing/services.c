/* services.c - the service address table and its rules (services.h). */
#include "policing/services.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int svc_addr_parse(const char *s, struct in_addr *addr, unsigned *prefix)
{
    const char *slash = strchr(s, '/');
    if (!slash || (size_t)(slash - s) >= INET_ADDRSTRLEN)
        return -EINVAL;
    char host[INET_ADDRSTRLEN];
    memcpy(host, s, (size_t)(slash - s));
    host[slash - s] = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) != 1)
        return -EINVAL;
    const char *p = slash + 1;
    size_t digits = strspn(p, "0123456789");
    if (digits == 0 || digits > 2 || p[digits] != '\0' || (digits == 2 && p[0] == '0'))
        return -EINVAL;
    unsigned len = (unsigned)atoi(p);
    if (len < 1 || len > 32)
        return -EINVAL;
    if (addr)
        *addr = a;
    if (prefix)
        *prefix = len;
    return 0;
}

static struct svc_entry *find(struct svc_table *t, uint32_t owner)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].owner == owner)
            return &t->v[i];
    return NULL;
}

const struct svc_entry *svc_find(const struct svc_table *t, uint32_t owner)
{
    return find((struct svc_table *)t, owner);
}

int svc_announce(struct svc_table *t, uint32_t owner, const char *addr)
{
    struct svc_entry *e = find(t, owner);
    if (addr[0] == '\0') {
        if (e)
            *e = t->v[--t->n];
        return 0;
    }
    if (strlen(addr) >= SVC_ADDR_MAX)
        return -EINVAL;
    if (!e) {
        if (t->n == CLUSTER_NODES_MAX)
            return -ENOSPC;
        e = &t->v[t->n++];
        *e = (struct svc_entry){.owner = owner, .holder = owner};
    }
    strcpy(e->addr, addr);
    return 0;
}

int svc_apply(struct svc_table *t, uint32_t owner, uint32_t holder, bool manual)
{
    struct svc_entry *e = find(t, owner);
    if (!e)
        return -ENOENT;
    e->holder = holder;
    e->manual = manual;
    return 0;
}

uint32_t svc_successor(const uint32_t *members, size_t n, uint32_t owner)
{
    uint32_t above = 0, lowest = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t m = members[i];
        if (m == owner)
            continue;
        if (m > owner && (above == 0 || m < above))
            above = m;
        if (lowest == 0 || m < lowest)
            lowest = m;
    }
    return above ? above : lowest;
}

static bool listed(const uint32_t *v, size_t n, uint32_t x)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == x)
            return true;
    return false;
}

/* Where e should be now, or 0 to leave it where it is. */
static uint32_t destination(const struct svc_entry *e, const uint32_t *members, size_t n,
                            const uint32_t *current, size_t ncurrent)
{
    bool owner_ready = listed(members, n, e->owner) && listed(current, ncurrent, e->owner);
    bool holder_here = listed(members, n, e->holder);
    if (holder_here && (e->holder == e->owner || e->manual || !owner_ready))
        return 0;
    if (owner_ready)
        return e->owner;
    if (holder_here)
        return 0;
    uint32_t next = svc_successor(members, n, e->owner);
    return next != e->holder ? next : 0;
}

size_t svc_plan(const struct svc_table *t, const uint32_t *members, size_t n,
                const uint32_t *current, size_t ncurrent, struct svc_move *out)
{
    size_t k = 0;
    for (size_t i = 0; i < t->n; i++) {
        uint32_t to = destination(&t->v[i], members, n, current, ncurrent);
        if (to)
            out[k++] = (struct svc_move){t->v[i].owner, to, false};
    }
    return k;
}

size_t svc_wanted(const struct svc_table *t, uint32_t self, bool quorate, bool self_current,
                  struct svc_hold *out)
{
    size_t k = 0;
    for (size_t i = 0; quorate && i < t->n; i++) {
        const struct svc_entry *e = &t->v[i];
        if (e->holder != self || (e->owner == self && !self_current))
            continue;
        out[k].owner = e->owner;
        memcpy(out[k].addr, e->addr, sizeof out[k].addr);
        k++;
    }
    return k;
}
