/* owners.c - the owners and quotas: the tables, their files, the quota
 * arithmetic (see owners.h). */
#include "volume/owners.h"

#include "store/store.h"
#include "volume/access.h"
#include "volume/volume.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

#define OWNERS_FILE "owners"
#define QUOTAS_FILE "quotas"
/* A line: "UUID IDENTITY" or "LIMIT VOLUMES IDENTITY", and its newline. */
#define LINE_MAX_LEN (PMSG_UUID_LEN + 1 + PMSG_IDENTITY_MAX + 1)
_Static_assert(20 + 1 + 10 + 1 <= PMSG_UUID_LEN + 1, "a quota's line is no longer than an owner's");

struct owners {
    struct store *store;
    struct policing_owner *own; /* in the order created */
    size_t nown;
    struct policing_quota *q; /* in the order set */
    size_t nq;
    /* A file lags its table: rewritten at the next change of it or sync
     * round. */
    bool own_stale, q_stale;
};

/* ---- the files ------------------------------------------------------------ */

static bool identity_ok(const char *s)
{
    const char *why;
    return access_identity_check(s, &why) == 0;
}

static int parse_owner(const char *line, struct policing_owner *o)
{
    size_t ul = PMSG_UUID_LEN;
    if (strlen(line) <= ul + 1 || line[ul] != ' ' || !identity_ok(line + ul + 1))
        return -EINVAL;
    memcpy(o->uuid, line, ul);
    o->uuid[ul] = '\0';
    snprintf(o->identity, sizeof o->identity, "%s", line + ul + 1);
    return 0;
}

/* A decimal number at s, up to max, followed by a space: the position
 * after the space, or NULL. */
static const char *parse_number(const char *s, uint64_t max, uint64_t *v)
{
    *v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (*v > (max - d) / 10)
            return NULL;
        *v = *v * 10 + d;
    }
    return p > s && *p == ' ' ? p + 1 : NULL;
}

static int parse_quota(const char *line, struct policing_quota *q)
{
    uint64_t limit, volumes;
    const char *p = parse_number(line, UINT64_MAX, &limit);
    p = p ? parse_number(p, UINT32_MAX, &volumes) : NULL;
    if (!p || limit == 0 || volumes == 0 || !identity_ok(p))
        return -EINVAL;
    q->limit = limit;
    q->volumes = (uint32_t)volumes;
    snprintf(q->identity, sizeof q->identity, "%s", p);
    return 0;
}

/* Reads file into a malloc'd array of elements of size (each line parsed
 * by parse), at most max of them. */
static int read_table(struct store *st, const char *file, size_t max, size_t size,
                      int (*parse)(const char *line, void *elem), void **out, size_t *n)
{
    char *text;
    size_t len;
    int r = store_file_get(st, file, max * LINE_MAX_LEN, &text, &len);
    if (r < 0)
        return r;
    size_t lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    unsigned char *v = calloc(lines ? lines : 1, size);
    size_t k = 0, lineno = 0;
    for (char *line = text, *nl; v && (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = '\0';
        lineno++;
        if (k == max || parse(line, v + k * size) < 0) {
            qb_log(LOG_ERR, "%s/%s, line %zu: malformed", store_path(st), file, lineno);
            r = -EINVAL;
            break;
        }
        k++;
    }
    free(text);
    if (!v)
        return -ENOMEM;
    if (r < 0) {
        free(v);
        return r;
    }
    *out = v;
    *n = k;
    return 0;
}

static int parse_owner_v(const char *line, void *elem)
{
    return parse_owner(line, elem);
}

static int parse_quota_v(const char *line, void *elem)
{
    return parse_quota(line, elem);
}

static int persist_owners(struct owners *o, const struct policing_owner *v, size_t n)
{
    char *buf = malloc(n * LINE_MAX_LEN + 1);
    if (!buf)
        return -ENOMEM;
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(buf + len, "%s %s\n", v[i].uuid, v[i].identity);
    int r = store_file_set(o->store, OWNERS_FILE, buf, len);
    free(buf);
    return r;
}

static int persist_quotas(struct owners *o, const struct policing_quota *v, size_t n)
{
    char *buf = malloc(n * LINE_MAX_LEN + 1);
    if (!buf)
        return -ENOMEM;
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(buf + len, "%" PRIu64 " %" PRIu32 " %s\n", v[i].limit, v[i].volumes,
                               v[i].identity);
    int r = store_file_set(o->store, QUOTAS_FILE, buf, len);
    free(buf);
    return r;
}

int owners_open(struct store *st, struct owners **out)
{
    struct owners *o = calloc(1, sizeof *o);
    if (!o)
        return -ENOMEM;
    o->store = st;
    int r = read_table(st, OWNERS_FILE, OWNERS_MAX, sizeof *o->own, parse_owner_v, (void **)&o->own,
                       &o->nown);
    if (r == 0)
        r = read_table(st, QUOTAS_FILE, OWNERS_QUOTAS_MAX, sizeof *o->q, parse_quota_v,
                       (void **)&o->q, &o->nq);
    if (r < 0) {
        owners_close(o);
        return r;
    }
    *out = o;
    return 0;
}

void owners_close(struct owners *o)
{
    if (!o)
        return;
    free(o->own);
    free(o->q);
    free(o);
}

/* ---- owners ----------------------------------------------------------------- */

const char *owners_of(const struct owners *o, const char *uuid)
{
    for (size_t i = 0; i < o->nown; i++)
        if (strcmp(o->own[i].uuid, uuid) == 0)
            return o->own[i].identity;
    return "";
}

/* Logs a failed write r of file, whose table is in force all the same. */
static void lagging(const char *file, int r)
{
    qb_log(LOG_ERR,
           "%s file: %s: the change is in force here, the file is rewritten at the next change "
           "or sync round",
           file, strerror(-r));
}

/* The owners become v (n, malloc'd, taken over), persisted if the file
 * takes them. Every change here is the group's, agreed: the table takes
 * it even if the file does not (logged, marked stale), so that this
 * node's later quota checks are the group's. */
static void owners_take(struct owners *o, struct policing_owner *v, size_t n)
{
    int r = persist_owners(o, v, n);
    if (r < 0)
        lagging(OWNERS_FILE, r);
    free(o->own);
    o->own = v;
    o->nown = n;
    o->own_stale = r < 0;
}

static void quotas_take(struct owners *o, struct policing_quota *v, size_t n)
{
    int r = persist_quotas(o, v, n);
    if (r < 0)
        lagging(QUOTAS_FILE, r);
    free(o->q);
    o->q = v;
    o->nq = n;
    o->q_stale = r < 0;
}

/* The owners with uuid's replaced by identity ("": dropped). */
static int owners_replace(struct owners *o, const char *uuid, const char *identity)
{
    struct policing_owner *v = malloc((o->nown + 1) * sizeof *v);
    if (!v)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < o->nown; i++)
        if (strcmp(o->own[i].uuid, uuid) != 0)
            v[n++] = o->own[i];
    if (identity[0]) {
        snprintf(v[n].uuid, sizeof v[n].uuid, "%s", uuid);
        snprintf(v[n].identity, sizeof v[n].identity, "%s", identity);
        n++;
    }
    owners_take(o, v, n);
    return 0;
}

bool owners_full(const struct owners *o)
{
    return o->nown >= OWNERS_MAX;
}

int owners_set(struct owners *o, const char *uuid, const char *identity)
{
    if (!identity_ok(identity))
        return -EINVAL;
    if (!owners_of(o, uuid)[0] && owners_full(o))
        return -EXFULL;
    return owners_replace(o, uuid, identity);
}

int owners_forget(struct owners *o, const char *uuid)
{
    if (!owners_of(o, uuid)[0])
        return 0;
    return owners_replace(o, uuid, "");
}

/* ---- quotas ----------------------------------------------------------------- */

int owners_quota_set(struct owners *o, const char *identity, uint64_t limit, uint32_t volumes)
{
    if (!identity_ok(identity) || (limit && !volumes))
        return -EINVAL;
    size_t at = o->nq;
    for (size_t i = 0; i < o->nq; i++)
        if (strcmp(o->q[i].identity, identity) == 0)
            at = i;
    if (at == o->nq && limit == 0)
        return -ESRCH;
    if (at < o->nq && o->q[at].limit == limit && o->q[at].volumes == volumes)
        return -EALREADY;
    if (at == o->nq && o->nq >= OWNERS_QUOTAS_MAX)
        return -EDQUOT;
    struct policing_quota *v = malloc((o->nq + 1) * sizeof *v);
    if (!v)
        return -ENOMEM;
    if (o->nq)
        memcpy(v, o->q, o->nq * sizeof *v);
    size_t n = o->nq;
    if (limit == 0) {
        memmove(&v[at], &v[at + 1], (n - at - 1) * sizeof *v);
        n--;
    } else if (at < n) {
        v[at].limit = limit;
        v[at].volumes = volumes;
    } else {
        v[n].limit = limit;
        v[n].volumes = volumes;
        snprintf(v[n].identity, sizeof v[n].identity, "%s", identity);
        n++;
    }
    quotas_take(o, v, n);
    return 0;
}

int owners_quota_list(const struct owners *o, struct policing_quota **out, size_t *n)
{
    *out = malloc((o->nq ? o->nq : 1) * sizeof **out);
    if (!*out)
        return -ENOMEM;
    if (o->nq)
        memcpy(*out, o->q, o->nq * sizeof **out);
    *n = o->nq;
    return 0;
}

uint64_t owners_used(const struct owners *o, const char *q, const struct volume_info *vols,
                     size_t n, size_t *count)
{
    uint64_t used = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *owner = owners_of(o, vols[i].uuid);
        if (owner[0] && access_matches_caller(q, owner)) {
            used += vols[i].size;
            k++;
        }
    }
    if (count)
        *count = k;
    return used;
}

int owners_check(const struct owners *o, const char *owner, const char *uuid, uint64_t size,
                 bool client, const struct volume_info *vols, size_t n, struct policing_quota *over)
{
    bool quota = false;
    for (size_t i = 0; i < o->nq; i++) {
        const struct policing_quota *q = &o->q[i];
        if (!access_matches_caller(q->identity, owner))
            continue;
        quota = true;
        uint64_t used = size;
        size_t count = uuid ? 0 : 1;
        for (size_t j = 0; j < n; j++) {
            const char *w = owners_of(o, vols[j].uuid);
            if ((!uuid || strcmp(vols[j].uuid, uuid) != 0) && w[0] &&
                access_matches_caller(q->identity, w)) {
                used += vols[j].size;
                count += !uuid;
            }
        }
        if (used > q->limit || used < size || count > q->volumes) {
            if (over)
                *over = *q;
            return -EDQUOT;
        }
    }
    return client && !quota ? -ENODATA : 0;
}

/* ---- the sync round --------------------------------------------------------- */

int owners_list(const struct owners *o, struct policing_idents *id)
{
    id->owners = malloc((o->nown ? o->nown : 1) * sizeof *id->owners);
    if (!id->owners)
        return -ENOMEM;
    if (o->nown)
        memcpy(id->owners, o->own, o->nown * sizeof *id->owners);
    id->nowners = o->nown;
    return owners_quota_list(o, &id->quotas, &id->nquotas);
}

/* Whether the tables are the same (padding and bytes after a NUL aside). */
static bool same_owners(const struct policing_owner *a, const struct policing_owner *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i].uuid, b[i].uuid) != 0 || strcmp(a[i].identity, b[i].identity) != 0)
            return false;
    return true;
}

static bool same_quotas(const struct policing_quota *a, const struct policing_quota *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].limit != b[i].limit || strcmp(a[i].identity, b[i].identity) != 0)
            return false;
    return true;
}

static bool uuid_ok(const char *u, size_t size)
{
    return strnlen(u, size) == PMSG_UUID_LEN &&
           strspn(u, "0123456789abcdefABCDEF-") == PMSG_UUID_LEN;
}

static bool terminated_identity_ok(const char *s, size_t size)
{
    return memchr(s, '\0', size) && identity_ok(s);
}

/* The first max of the group's owners (n) this node would have made
 * itself (and reads back from its file at the next start), malloc'd;
 * each other one is dropped with a log line, as a peer of another
 * version may send it. */
static struct policing_owner *checked_owners(const struct policing_owner *w, size_t *n, size_t max)
{
    struct policing_owner *v = malloc((*n ? *n : 1) * sizeof *v);
    size_t k = 0;
    for (size_t i = 0; v && i < *n; i++) {
        if (k < max && uuid_ok(w[i].uuid, sizeof w[i].uuid) &&
            terminated_identity_ok(w[i].identity, sizeof w[i].identity))
            v[k++] = w[i];
        else
            qb_log(LOG_ERR, "sync round: the owner \"%.64s\" of volume \"%.*s\": %s: dropped",
                   w[i].identity, PMSG_UUID_LEN, w[i].uuid, k < max ? "malformed" : "table full");
    }
    *n = k;
    return v;
}

static struct policing_quota *checked_quotas(const struct policing_quota *w, size_t *n, size_t max)
{
    struct policing_quota *v = malloc((*n ? *n : 1) * sizeof *v);
    size_t k = 0;
    for (size_t i = 0; v && i < *n; i++) {
        if (k < max && w[i].limit && w[i].volumes &&
            terminated_identity_ok(w[i].identity, sizeof w[i].identity))
            v[k++] = w[i];
        else
            qb_log(LOG_ERR, "sync round: the quota of \"%.64s\": %s: dropped", w[i].identity,
                   k < max ? "malformed" : "table full");
    }
    *n = k;
    return v;
}

int owners_load(struct owners *o, const struct policing_idents *id)
{
    /* Bounded as this node's own tables are. */
    size_t nown = id->nowners, nq = id->nquotas;
    struct policing_owner *own = checked_owners(id->owners, &nown, OWNERS_MAX);
    struct policing_quota *q = checked_quotas(id->quotas, &nq, OWNERS_QUOTAS_MAX);
    if (!own || !q) {
        free(own);
        free(q);
        return -ENOMEM;
    }
    if (nown != o->nown || !same_owners(own, o->own, nown) || o->own_stale)
        owners_take(o, own, nown);
    else
        free(own);
    if (nq != o->nq || !same_quotas(q, o->q, nq) || o->q_stale)
        quotas_take(o, q, nq);
    else
        free(q);
    return 0;
}
