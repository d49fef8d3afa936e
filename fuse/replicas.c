/* replicas.c - parsing endpoint lists and ordering them (see replicas.h).
 *
 * Every parser takes untrusted text (the command line, a server's
 * description) and checks all of it: lengths, the port's range, the
 * brackets of IPv6 literals, node ids; a bad entry is an error rather than
 * skipped, so a typo in --nodes is reported instead of silently leaving
 * fewer places to fail over to.
 */
#include "fuse/replicas.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN " replicas="
#define RECOVERY_TOKEN " recovery="

static bool all_digits(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* A decimal number in [min, max] made of exactly len digits. */
static bool parse_number(const char *s, size_t len, unsigned long min, unsigned long max,
                         unsigned long *out)
{
    if (!all_digits(s, len) || len > 10)
        return false;
    unsigned long v = 0;
    for (size_t i = 0; i < len; i++)
        v = v * 10 + (unsigned long)(s[i] - '0');
    if (v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool copy_str(char *dst, size_t cap, const char *src, size_t len)
{
    if (len >= cap)
        return false;
    memcpy(dst, src, len);
    dst[len] = '\0';
    return true;
}

/* Host characters: names, IPv4 and (inside brackets) IPv6 literals. No
 * blanks, commas or '@', which separate entries. */
static bool host_ok(const char *s, size_t len, bool v6)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '_' || (v6 && (c == ':' || c == '%'));
        if (!ok)
            return false;
    }
    return true;
}

static int parse_unix(const char *addr, size_t len, struct vr_node *n)
{
    for (size_t i = 0; i < len; i++)
        if (addr[i] == ',' || addr[i] == ' ' || addr[i] == '\0')
            return -EINVAL;
    if (len < 2 || !copy_str(n->host, sizeof n->host, addr, len))
        return -EINVAL;
    n->port[0] = '\0';
    return copy_str(n->addr, sizeof n->addr, addr, len) ? 0 : -EINVAL;
}

int vr_parse_addr(const char *addr, size_t len, struct vr_node *n)
{
    if (len > 0 && addr[0] == '/')
        return parse_unix(addr, len, n);
    const char *colon = NULL;
    const char *host = addr;
    size_t hlen;
    bool v6 = len > 0 && addr[0] == '[';
    if (v6) {
        const char *close = memchr(addr, ']', len);
        if (!close || close + 1 >= addr + len || close[1] != ':')
            return -EINVAL;
        host = addr + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = memrchr(addr, ':', len);
        if (!colon)
            return -EINVAL;
        hlen = (size_t)(colon - addr);
        if (memchr(addr, ':', hlen))
            return -EINVAL; /* an IPv6 literal needs brackets */
    }
    const char *port = colon + 1;
    size_t plen = len - (size_t)(port - addr);
    unsigned long p;
    if (!host_ok(host, hlen, v6) || !parse_number(port, plen, 1, 65535, &p))
        return -EINVAL;
    if (!copy_str(n->host, sizeof n->host, host, hlen) ||
        !copy_str(n->port, sizeof n->port, port, plen) ||
        !copy_str(n->addr, sizeof n->addr, addr, len))
        return -EINVAL;
    return 0;
}

int vr_parse_nodes(const char *s, struct vr_list *out, const char **bad, size_t *badlen)
{
    out->n = 0;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        struct vr_node n = {0};
        if (out->n == VR_NODES_MAX || vr_parse_addr(p, len, &n) < 0) {
            if (bad)
                *bad = p;
            if (badlen)
                *badlen = len;
            return -EINVAL;
        }
        out->v[out->n++] = n;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

/* One "ID@ADDR" entry of the token. */
static int parse_entry(const char *s, size_t len, struct vr_node *n)
{
    const char *at = memchr(s, '@', len);
    unsigned long id;
    if (!at || !parse_number(s, (size_t)(at - s), 1, UINT32_MAX, &id))
        return -EINVAL;
    int r = vr_parse_addr(at + 1, len - (size_t)(at + 1 - s), n);
    n->id = (uint32_t)id;
    return r;
}

int vr_parse_description(const char *desc, struct vr_list *out)
{
    out->n = 0;
    const char *p = strstr(desc, TOKEN);
    if (!p)
        return -ENOENT;
    p += strlen(TOKEN);
    size_t end = strcspn(p, " ");
    while (end > 0) {
        const char *comma = memchr(p, ',', end);
        size_t len = comma ? (size_t)(comma - p) : end;
        if (out->n == VR_NODES_MAX || parse_entry(p, len, &out->v[out->n]) < 0)
            return -EINVAL;
        if (vr_find_id(out, out->v[out->n].id) >= 0)
            return -EINVAL;
        out->n++;
        if (!comma)
            break;
        end -= len + 1;
        p = comma + 1;
        if (end == 0)
            return -EINVAL; /* a trailing comma */
    }
    return out->n > 0 ? 0 : -EINVAL;
}

void vr_recovery(const char *desc, char *out, size_t cap)
{
    out[0] = '\0';
    const char *p = strstr(desc, RECOVERY_TOKEN);
    if (!p)
        return;
    p += strlen(RECOVERY_TOKEN);
    size_t len = strcspn(p, " ");
    if (len == 0 || len != strspn(p, "0123456789:/,") || len >= cap)
        return;
    memcpy(out, p, len);
    out[len] = '\0';
}

bool vr_is_local(const struct vr_node *n, const char *const *local, size_t nlocal)
{
    if (n->port[0] == '\0')
        return true; /* a unix socket is always on this host */
    if (strcmp(n->host, "localhost") == 0 || strncmp(n->host, "127.", 4) == 0 ||
        strcmp(n->host, "::1") == 0)
        return true;
    for (size_t i = 0; i < nlocal; i++)
        if (strcmp(n->host, local[i]) == 0)
            return true;
    return false;
}

void vr_order(struct vr_list *l, const char *const *local, size_t nlocal)
{
    struct vr_node sorted[VR_NODES_MAX];
    size_t k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < l->n; i++)
            if (vr_is_local(&l->v[i], local, nlocal) == (pass == 0))
                sorted[k++] = l->v[i];
    memcpy(l->v, sorted, k * sizeof sorted[0]);
}

int vr_find_id(const struct vr_list *l, uint32_t id)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].id == id && id != 0)
            return (int)i;
    return -1;
}
