/* access.c - the grants: identities, matching, the table and its file
 * (see access.h). */
#include "volume/access.h"

#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

/* "UUID rw " before the identity, and the newline after it. */
#define LINE_MAX_LEN (PMSG_UUID_LEN + 4 + PMSG_IDENTITY_MAX + 1)
#define FILE_MAX ((size_t)ACCESS_GRANTS_TOTAL_MAX * LINE_MAX_LEN)

struct access {
    struct store *store;
    pthread_rwlock_t lock;
    /* By volume uuid (so the grants of one are found by bisection: a
     * LIST checks every volume), each volume's in the order granted. */
    struct policing_grant *g;
    size_t n;
    bool stale; /* the file lags the table: rewritten at the next change or sync round */
};

/* ---- identities ------------------------------------------------------------ */

int access_identity_check(const char *s, const char **why)
{
    return identity_check(s, why);
}

bool access_matches(const char *grant, const char *identity, enum nbd_tls_auth auth)
{
    return identity_matches(grant, identity, auth == NBD_TLS_AUTH_X509);
}

bool access_matches_caller(const char *grant, const char *caller)
{
    size_t pl = strlen(ACCESS_DN_PREFIX);
    if (strncmp(caller, ACCESS_DN_PREFIX, pl) == 0)
        return access_matches(grant, caller + pl, NBD_TLS_AUTH_X509);
    return access_matches(grant, caller, NBD_TLS_AUTH_PSK);
}

/* ---- the table's order --------------------------------------------------- */

/* The first grant in g (sorted) whose volume uuid is not below uuid. */
static size_t first_of(const struct policing_grant *g, size_t n, const char *uuid)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(g[mid].uuid, uuid) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int by_uuid_then_index(const void *x, const void *y, void *arg)
{
    const struct policing_grant *g = arg;
    size_t i = *(const size_t *)x, j = *(const size_t *)y;
    int c = strcmp(g[i].uuid, g[j].uuid);
    return c ? c : (i > j) - (i < j);
}

/* Sorts g (n) by volume uuid, keeping each volume's order: a file or a
 * peer's table written by a version that kept grants in the order given.
 * 0 or -ENOMEM. */
static int sort_table(struct policing_grant *g, size_t n)
{
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    struct policing_grant *tmp = malloc((n ? n : 1) * sizeof *tmp);
    if (!idx || !tmp) {
        free(idx);
        free(tmp);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    qsort_r(idx, n, sizeof *idx, by_uuid_then_index, g);
    for (size_t i = 0; i < n; i++)
        tmp[i] = g[idx[i]];
    if (n)
        memcpy(g, tmp, n * sizeof *g);
    free(idx);
    free(tmp);
    return 0;
}

/* ---- the file ---------------------------------------------------------------- */

static int parse_line(const char *line, size_t lineno, struct policing_grant *g)
{
    const char *why = "expected UUID rw|ro IDENTITY";
    size_t ul = PMSG_UUID_LEN;
    if (strlen(line) > ul + 4 && line[ul] == ' ' && line[ul + 3] == ' ' &&
        (strncmp(line + ul + 1, "rw", 2) == 0 || strncmp(line + ul + 1, "ro", 2) == 0) &&
        access_identity_check(line + ul + 4, &why) == 0) {
        memcpy(g->uuid, line, ul);
        g->uuid[ul] = '\0';
        g->read_only = line[ul + 2] == 'o';
        snprintf(g->identity, sizeof g->identity, "%s", line + ul + 4);
        return 0;
    }
    qb_log(LOG_ERR, "grants file, line %zu: %s", lineno, why);
    return -EINVAL;
}

static int parse_file(char *text, struct policing_grant **out, size_t *n)
{
    size_t lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    struct policing_grant *g = calloc(lines ? lines : 1, sizeof *g);
    if (!g)
        return -ENOMEM;
    size_t k = 0, lineno = 0;
    for (char *line = text, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = '\0';
        lineno++;
        if (k == ACCESS_GRANTS_TOTAL_MAX || parse_line(line, lineno, &g[k++]) < 0) {
            free(g);
            return -EINVAL;
        }
    }
    int r = sort_table(g, k);
    if (r < 0) {
        free(g);
        return r;
    }
    *out = g;
    *n = k;
    return 0;
}

static int persist(struct access *a, const struct policing_grant *g, size_t n)
{
    char *buf = malloc(n * LINE_MAX_LEN + 1);
    if (!buf)
        return -ENOMEM;
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(buf + len, "%s %s %s\n", g[i].uuid, g[i].read_only ? "ro" : "rw",
                               g[i].identity);
    int r = store_grants_set(a->store, buf, len);
    free(buf);
    return r;
}

int access_open(struct store *st, struct access **out)
{
    struct access *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->store = st;
    char *text;
    size_t len;
    int r = store_grants_get(st, FILE_MAX, &text, &len);
    if (r == 0) {
        r = parse_file(text, &a->g, &a->n);
        free(text);
    }
    if (r == 0)
        r = -pthread_rwlock_init(&a->lock, NULL);
    if (r < 0) {
        free(a->g);
        free(a);
        return r;
    }
    *out = a;
    return 0;
}

void access_close(struct access *a)
{
    if (!a)
        return;
    pthread_rwlock_destroy(&a->lock);
    free(a->g);
    free(a);
}

/* ---- checks and changes --------------------------------------------------- */

enum access_mode access_of(struct access *a, const char *uuid, const struct nbd_client *who)
{
    if (who->all)
        return ACCESS_WRITE;
    enum access_mode m = ACCESS_NONE;
    pthread_rwlock_rdlock(&a->lock);
    for (size_t i = first_of(a->g, a->n, uuid);
         i < a->n && m != ACCESS_WRITE && strcmp(a->g[i].uuid, uuid) == 0; i++) {
        const struct policing_grant *g = &a->g[i];
        if (access_matches(g->identity, who->identity, who->auth))
            m = g->read_only ? ACCESS_READ : ACCESS_WRITE;
    }
    pthread_rwlock_unlock(&a->lock);
    return m;
}

/* Replaces the table with g (n grants, malloc'd, taken over) once it is
 * on disk; on failure g is freed and the table stays. Main loop only, so
 * the table read without the lock is the one replaced.
 *
 * fail_closed (a change that takes rights away, or may, as the group
 * agreed it): the table is replaced even if the file can't be written, as
 * the other nodes applied the change and a node keeping the old grants
 * would go on serving what was revoked. The file then lags (logged; the
 * table is marked stale), until the next change or sync round rewrites
 * it; a restart before that starts from the old file, and the sync round
 * of the join brings the group's grants. */
static int replace(struct access *a, struct policing_grant *g, size_t n, bool fail_closed)
{
    int r = persist(a, g, n);
    if (r < 0 && !fail_closed) {
        free(g);
        return r;
    }
    if (r < 0)
        qb_log(LOG_ERR,
               "grants file: %s: the change is in force here, the file is rewritten at the "
               "next change or sync round",
               strerror(-r));
    pthread_rwlock_wrlock(&a->lock);
    struct policing_grant *old = a->g;
    a->g = g;
    a->n = n;
    a->stale = r < 0;
    pthread_rwlock_unlock(&a->lock);
    free(old);
    return 0;
}

/* A malloc'd copy of the table with room for one more. */
static struct policing_grant *copy_table(const struct access *a)
{
    struct policing_grant *g = malloc((a->n + 1) * sizeof *g);
    if (g && a->n)
        memcpy(g, a->g, a->n * sizeof *g);
    return g;
}

/* Main loop only (the table's one writer): no lock to read it. */
int access_room(struct access *a, const char *identity)
{
    size_t bytes = 0;
    for (size_t i = 0; i < a->n; i++)
        bytes += strlen(a->g[i].identity);
    bool full =
        a->n >= ACCESS_GRANTS_TOTAL_MAX || bytes + strlen(identity) > ACCESS_IDENTITY_BYTES_MAX;
    return full ? -EDQUOT : 0;
}

int access_set(struct access *a, const char *uuid, const char *identity, int mode, bool *ended)
{
    const char *why;
    *ended = false;
    if (access_identity_check(identity, &why) < 0)
        return -EINVAL;
    size_t on_volume = 0, at = a->n, bytes = 0, end = first_of(a->g, a->n, uuid);
    for (size_t i = 0; i < a->n; i++) {
        bytes += strlen(a->g[i].identity);
        if (strcmp(a->g[i].uuid, uuid) != 0)
            continue;
        on_volume++;
        end = i + 1;
        if (strcmp(a->g[i].identity, identity) == 0)
            at = i;
    }
    bool ro = mode == PMSG_GRANT_RO, existed = at < a->n;
    if (at == a->n && mode == PMSG_GRANT_REVOKE)
        return -ESRCH;
    if (at < a->n && mode != PMSG_GRANT_REVOKE && a->g[at].read_only == ro)
        return -EALREADY;
    if (at == a->n && on_volume >= ACCESS_GRANTS_MAX)
        return -ENOSPC;
    if (at == a->n &&
        (a->n >= ACCESS_GRANTS_TOTAL_MAX || bytes + strlen(identity) > ACCESS_IDENTITY_BYTES_MAX))
        return -EDQUOT;
    struct policing_grant *g = copy_table(a);
    if (!g)
        return -ENOMEM;
    size_t n = a->n;
    if (mode == PMSG_GRANT_REVOKE) {
        memmove(&g[at], &g[at + 1], (n - at - 1) * sizeof *g);
        n--;
    } else if (at < n) {
        g[at].read_only = ro;
    } else { /* after the volume's last grant, keeping the order */
        memmove(&g[end + 1], &g[end], (n - end) * sizeof *g);
        g[end] = (struct policing_grant){.read_only = ro};
        snprintf(g[end].uuid, sizeof g[end].uuid, "%s", uuid);
        snprintf(g[end].identity, sizeof g[end].identity, "%s", identity);
        n++;
    }
    int r = replace(a, g, n, existed);
    *ended = r == 0 && existed;
    return r;
}

int access_forget(struct access *a, const char *uuid)
{
    struct policing_grant *g = copy_table(a);
    if (!g)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->g[i].uuid, uuid) != 0)
            g[n++] = a->g[i];
    if (n == a->n) {
        free(g);
        return 0;
    }
    return replace(a, g, n, true);
}

int access_forget_gone(struct access *a, bool (*exists)(void *arg, const char *uuid), void *arg)
{
    struct policing_grant *g = copy_table(a);
    if (!g)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < a->n; i++) {
        if (exists(arg, a->g[i].uuid))
            g[n++] = a->g[i];
        else
            qb_log(LOG_WARNING, "grants file: volume %s is gone: its grant to \"%s\" goes too",
                   a->g[i].uuid, a->g[i].identity);
    }
    if (n == a->n) {
        free(g);
        return 0;
    }
    return replace(a, g, n, true);
}

int access_list(struct access *a, const char *uuid, struct policing_grant **out, size_t *n)
{
    pthread_rwlock_rdlock(&a->lock);
    *out = malloc((a->n ? a->n : 1) * sizeof **out);
    *n = 0;
    for (size_t i = uuid ? first_of(a->g, a->n, uuid) : 0;
         *out && i < a->n && (!uuid || strcmp(a->g[i].uuid, uuid) == 0); i++)
        (*out)[(*n)++] = a->g[i];
    pthread_rwlock_unlock(&a->lock);
    return *out ? 0 : -ENOMEM;
}

/* The grant of identity on uuid in g, or NULL. */
static const struct policing_grant *find(const struct policing_grant *g, size_t n, const char *uuid,
                                         const char *identity)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(g[i].uuid, uuid) == 0 && strcmp(g[i].identity, identity) == 0)
            return &g[i];
    return NULL;
}

/* Whether a grant from a sync round is one this node would have made
 * (and reads back from its file at the next start); why if not. */
static bool grant_ok(const struct policing_grant *g, const char **why)
{
    *why = "not a volume uuid";
    if (strnlen(g->uuid, sizeof g->uuid) != PMSG_UUID_LEN ||
        strspn(g->uuid, "0123456789abcdefABCDEF-") != PMSG_UUID_LEN)
        return false;
    *why = "bad mode";
    if (g->read_only > 1)
        return false;
    *why = "its identity is not terminated";
    return memchr(g->identity, '\0', sizeof g->identity) &&
           access_identity_check(g->identity, why) == 0;
}

/* Copies g (n) into a malloc'd table, without the grants grant_ok
 * refuses (each logged: a peer of another version may send them, and the
 * file written with them would stop this node's next start). */
static struct policing_grant *checked_copy(const struct policing_grant *g, size_t *n)
{
    struct policing_grant *copy = malloc((*n ? *n : 1) * sizeof *copy);
    size_t k = 0;
    for (size_t i = 0; copy && i < *n; i++) {
        const char *why;
        if (grant_ok(&g[i], &why))
            copy[k++] = g[i];
        else
            qb_log(LOG_ERR, "sync round: a grant on volume \"%.*s\" to \"%.*s\": %s: dropped",
                   PMSG_UUID_LEN, g[i].uuid, 64, g[i].identity, why);
    }
    *n = k;
    return copy;
}

int access_load(struct access *a, const struct policing_grant *g, size_t n,
                void (*ended)(void *arg, const char *uuid, const char *identity), void *arg)
{
    if (n > ACCESS_GRANTS_TOTAL_MAX)
        n = ACCESS_GRANTS_TOTAL_MAX; /* the sender's table is bounded alike */
    struct policing_grant *copy = checked_copy(g, &n);
    if (!copy)
        return -ENOMEM;
    if (sort_table(copy, n) < 0) {
        free(copy);
        return -ENOMEM;
    }
    /* The old table stays readable (main loop) until replace swaps it. */
    struct policing_grant *old = a->g;
    size_t nold = a->n;
    bool same = n == nold && (n == 0 || memcmp(copy, old, n * sizeof *copy) == 0);
    if (same && !a->stale) {
        free(copy);
        return 0;
    }
    struct policing_grant *keep = malloc((nold ? nold : 1) * sizeof *keep);
    if (!keep) {
        free(copy);
        return -ENOMEM;
    }
    if (nold)
        memcpy(keep, old, nold * sizeof *keep);
    int r = replace(a, copy, n, true);
    for (size_t i = 0; r == 0 && !same && i < nold; i++) {
        const struct policing_grant *now = find(g, n, keep[i].uuid, keep[i].identity);
        if (!now || now->read_only != keep[i].read_only)
            ended(arg, keep[i].uuid, keep[i].identity);
    }
    free(keep);
    return r;
}
