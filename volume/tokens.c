/* tokens.c - the API's bearer tokens: making one, the table and its
 * file, and the lookup (see tokens.h). */
#include "volume/tokens.h"

#include "policing/protocol.h"
#include "store/store.h"
#include "volume/access.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <qb/qblog.h>

#define TOKENS_FILE "tokens"
/* "ID CREATED HASH IDENTITY" and its newline. */
#define LINE_MAX_LEN                                                                               \
    (PMSG_TOKEN_ID_LEN + 1 + 21 + 1 + 2 * PMSG_TOKEN_HASH_LEN + 1 + PMSG_IDENTITY_MAX + 1)
#define FILE_MAX ((size_t)TOKENS_MAX * LINE_MAX_LEN)

struct tokens {
    struct store *store;
    pthread_rwlock_t lock;
    struct policing_token *v; /* in the order made */
    size_t n;
    bool stale;          /* the file lags the table: rewritten at the next change or sync round */
    struct policing *pc; /* NULL until set: unit tests, a node starting */
};

/* ---- hex ----------------------------------------------------------------------- */

static void to_hex(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* n bytes from 2n lowercase hex digits at s: false if one is not. */
static bool from_hex(const char *s, uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hi >= 0 ? hexval(s[2 * i + 1]) : -1;
        if (lo < 0)
            return false;
        b[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool id_ok(const char *id)
{
    uint8_t b[PMSG_TOKEN_ID_LEN / 2];
    return strlen(id) == PMSG_TOKEN_ID_LEN && from_hex(id, b, sizeof b);
}

/* ---- the file ------------------------------------------------------------------- */

/* "ID CREATED HASH IDENTITY", each field where the writer put it: one
 * space apart, none skipped (an identity is kept as it was written). */
static int parse_line(const char *line, struct policing_token *t)
{
    const char *why;
    size_t il = PMSG_TOKEN_ID_LEN, hl = 2 * PMSG_TOKEN_HASH_LEN;
    if (strnlen(line, il + 1) <= il || line[il] != ' ')
        return -EINVAL;
    memcpy(t->id, line, il);
    t->id[il] = '\0';
    const char *p = line + il + 1, *q = p + (*p == '-');
    char *end;
    errno = 0;
    long long created = strtoll(p, &end, 10);
    if (!id_ok(t->id) || *q < '0' || *q > '9' || errno || *end != ' ' ||
        strnlen(end + 1, hl + 1) <= hl || end[1 + hl] != ' ' ||
        !from_hex(end + 1, t->hash, sizeof t->hash) ||
        access_identity_check(end + 2 + hl, &why) < 0)
        return -EINVAL;
    t->created = created;
    snprintf(t->identity, sizeof t->identity, "%s", end + 2 + hl);
    return 0;
}

static int read_file(struct tokens *t)
{
    char *text;
    size_t len;
    int r = store_file_get(t->store, TOKENS_FILE, FILE_MAX, &text, &len);
    if (r < 0)
        return r;
    size_t lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    t->v = calloc(lines ? lines : 1, sizeof *t->v);
    size_t lineno = 0;
    for (char *line = text, *nl; t->v && (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = '\0';
        lineno++;
        if (t->n == TOKENS_MAX || parse_line(line, &t->v[t->n]) < 0) {
            qb_log(LOG_ERR, "%s/%s, line %zu: expected ID CREATED SHA256 IDENTITY",
                   store_path(t->store), TOKENS_FILE, lineno);
            r = -EINVAL;
            break;
        }
        t->n++;
    }
    free(text);
    return t->v ? r : -ENOMEM;
}

static int persist(struct tokens *t, const struct policing_token *v, size_t n)
{
    char *buf = malloc(n * LINE_MAX_LEN + 1);
    if (!buf)
        return -ENOMEM;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        char hash[2 * PMSG_TOKEN_HASH_LEN + 1];
        to_hex(v[i].hash, sizeof v[i].hash, hash);
        len += (size_t)sprintf(buf + len, "%s %" PRId64 " %s %s\n", v[i].id, v[i].created, hash,
                               v[i].identity);
    }
    int r = store_file_set(t->store, TOKENS_FILE, buf, len);
    free(buf);
    return r;
}

int tokens_open(struct store *st, struct tokens **out)
{
    struct tokens *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->store = st;
    int r = read_file(t);
    if (r == 0)
        r = -pthread_rwlock_init(&t->lock, NULL);
    if (r < 0) {
        free(t->v);
        free(t);
        return r;
    }
    *out = t;
    return 0;
}

void tokens_close(struct tokens *t)
{
    if (!t)
        return;
    pthread_rwlock_destroy(&t->lock);
    free(t->v);
    free(t);
}

/* ---- making, changing, listing ------------------------------------------------- */

int tokens_make(const char *identity, struct policing_token *rec, char text[TOKEN_TEXT_LEN + 1])
{
    uint8_t id[PMSG_TOKEN_ID_LEN / 2], secret[TOKEN_SECRET_LEN];
    *rec = (struct policing_token){.created = (int64_t)time(NULL)};
    if (gnutls_rnd(GNUTLS_RND_NONCE, id, sizeof id) < 0 ||
        gnutls_rnd(GNUTLS_RND_KEY, secret, sizeof secret) < 0 ||
        gnutls_hash_fast(GNUTLS_DIG_SHA256, secret, sizeof secret, rec->hash) < 0) {
        gnutls_memset(secret, 0, sizeof secret);
        return -EIO;
    }
    to_hex(id, sizeof id, rec->id);
    snprintf(rec->identity, sizeof rec->identity, "%s", identity);
    char hex[2 * TOKEN_SECRET_LEN + 1];
    to_hex(secret, sizeof secret, hex);
    snprintf(text, TOKEN_TEXT_LEN + 1, TOKEN_PREFIX "%s_%s", rec->id, hex);
    gnutls_memset(secret, 0, sizeof secret);
    gnutls_memset(hex, 0, sizeof hex);
    return 0;
}

/* Replaces the table with v (n tokens, malloc'd, taken over) once it is
 * on disk; on failure v is freed and the table stays. Main loop only.
 *
 * fail_closed (a revoke, or the group's table in a sync round): the table
 * is replaced even if the file can't be written, as the other nodes
 * applied the change and a node keeping the old tokens would go on
 * accepting a revoked one. The file then lags (logged; the table is
 * marked stale) until the next change or sync round rewrites it, as for
 * the grants (access.c). */
static int replace(struct tokens *t, struct policing_token *v, size_t n, bool fail_closed)
{
    int r = persist(t, v, n);
    if (r < 0 && !fail_closed) {
        free(v);
        return r;
    }
    if (r < 0)
        qb_log(LOG_ERR,
               "tokens file: %s: the change is in force here, the file is rewritten at the "
               "next change or sync round",
               strerror(-r));
    pthread_rwlock_wrlock(&t->lock);
    struct policing_token *old = t->v;
    t->v = v;
    t->n = n;
    t->stale = r < 0;
    pthread_rwlock_unlock(&t->lock);
    free(old);
    return 0;
}

int tokens_apply(struct tokens *t, const struct policing_token *rec, bool revoke)
{
    const char *why;
    if (!id_ok(rec->id) || (!revoke && access_identity_check(rec->identity, &why) < 0))
        return -EINVAL;
    size_t at = t->n; /* main loop: the only writer, so no lock to read */
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->v[i].id, rec->id) == 0)
            at = i;
    if (revoke && at == t->n)
        return -ESRCH;
    if (!revoke && at < t->n)
        return -EEXIST;
    if (!revoke && t->n >= TOKENS_MAX)
        return -EDQUOT;
    struct policing_token *v = malloc((t->n + 1) * sizeof *v);
    if (!v)
        return -ENOMEM;
    if (t->n)
        memcpy(v, t->v, t->n * sizeof *v);
    size_t n = t->n;
    if (revoke) {
        memmove(&v[at], &v[at + 1], (n - at - 1) * sizeof *v);
        n--;
    } else {
        v[n++] = *rec;
    }
    return replace(t, v, n, revoke);
}

int tokens_list(struct tokens *t, struct policing_token **out, size_t *n)
{
    pthread_rwlock_rdlock(&t->lock);
    *out = malloc((t->n ? t->n : 1) * sizeof **out);
    *n = *out ? t->n : 0;
    if (*out && t->n)
        memcpy(*out, t->v, t->n * sizeof **out);
    pthread_rwlock_unlock(&t->lock);
    return *out ? 0 : -ENOMEM;
}

/* Whether a and b are the same tokens (padding and bytes after a NUL
 * aside). */
static bool same_tokens(const struct policing_token *a, const struct policing_token *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i].id, b[i].id) != 0 || strcmp(a[i].identity, b[i].identity) != 0 ||
            memcmp(a[i].hash, b[i].hash, sizeof a[i].hash) != 0 || a[i].created != b[i].created)
            return false;
    return true;
}

/* Whether a token from a sync round is one this node would have made
 * (and reads back from its file at the next start). */
static bool token_ok(const struct policing_token *rec)
{
    const char *why;
    return memchr(rec->id, '\0', sizeof rec->id) && id_ok(rec->id) &&
           memchr(rec->identity, '\0', sizeof rec->identity) &&
           access_identity_check(rec->identity, &why) == 0;
}

int tokens_load(struct tokens *t, const struct policing_token *rec, size_t n)
{
    /* The group's tokens this node would have made, the first TOKENS_MAX
     * (its own bound); each other one dropped with a log line. */
    struct policing_token *v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k < TOKENS_MAX && token_ok(&rec[i]))
            v[k++] = rec[i];
        else
            qb_log(LOG_ERR, "sync round: token \"%.16s\" of \"%.64s\": %s: dropped", rec[i].id,
                   rec[i].identity, k < TOKENS_MAX ? "malformed" : "table full");
    }
    if (k == t->n && same_tokens(v, t->v, k) && !t->stale) {
        free(v);
        return 0; /* as usual: no rewrite */
    }
    return replace(t, v, k, true);
}

/* ---- the lookup ---------------------------------------------------------------- */

void tokens_set_policing(struct tokens *t, struct policing *pc)
{
    pthread_rwlock_wrlock(&t->lock);
    t->pc = pc;
    pthread_rwlock_unlock(&t->lock);
}

/* Whether a and b (n bytes) are equal, in a time that does not depend on
 * where they differ. */
static bool same_bytes(const uint8_t *a, const uint8_t *b, size_t n)
{
    volatile uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

int tokens_identity(struct tokens *t, const char *bearer, char *identity, size_t size)
{
    size_t pl = sizeof TOKEN_PREFIX - 1;
    char id[PMSG_TOKEN_ID_LEN + 1];
    uint8_t secret[TOKEN_SECRET_LEN], hash[PMSG_TOKEN_HASH_LEN];
    if (strlen(bearer) != TOKEN_TEXT_LEN || strncmp(bearer, TOKEN_PREFIX, pl) != 0 ||
        bearer[pl + PMSG_TOKEN_ID_LEN] != '_' ||
        !from_hex(bearer + pl + PMSG_TOKEN_ID_LEN + 1, secret, sizeof secret))
        return -ENOENT;
    memcpy(id, bearer + pl, PMSG_TOKEN_ID_LEN);
    id[PMSG_TOKEN_ID_LEN] = '\0';
    int r = gnutls_hash_fast(GNUTLS_DIG_SHA256, secret, sizeof secret, hash);
    gnutls_memset(secret, 0, sizeof secret);
    if (r < 0 || !id_ok(id))
        return -ENOENT;
    r = -ENOENT;
    pthread_rwlock_rdlock(&t->lock);
    /* A node cut off, or not synced since, may have missed a revoke that
     * the group applied: its table is not the group's. */
    if (t->pc && !policing_readable(t->pc)) {
        pthread_rwlock_unlock(&t->lock);
        return -EAGAIN;
    }
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->v[i].id, id) != 0 || !same_bytes(t->v[i].hash, hash, sizeof hash))
            continue;
        r = strlen(t->v[i].identity) < size ? 0 : -ENAMETOOLONG;
        if (r == 0)
            snprintf(identity, size, "%s", t->v[i].identity);
        break;
    }
    pthread_rwlock_unlock(&t->lock);
    return r;
}
