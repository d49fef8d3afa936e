/* handshake.c - fixed newstyle option negotiation.
 *
 * Runs on the connection's first thread before transmission starts. Each
 * option is read whole into a bounded buffer, answered, and forgotten; an
 * option the server does not know gets ERR_UNSUP and negotiation goes on,
 * so a client can probe. Only a broken framing (bad magic, truncated
 * stream, absurd length) ends the connection, and only this one.
 *
 * Served: EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY,
 * LIST_META_CONTEXT, SET_META_CONTEXT and STARTTLS.
 *
 * TLS as proto.md says: with [nbd] tls = off STARTTLS is unsupported; with
 * on it is offered and plain clients go on as before; with require
 * (FORCEDTLS) every option before it but ABORT gets ERR_TLS_REQD, and
 * EXPORT_NAME, which cannot fail, closes. The local socket (root only,
 * server.h) is always served as with tls = off. The TLS handshake counts
 * against the NBD handshake's one deadline, and once it succeeds the state
 * negotiated in plain text (structured replies, meta contexts) is
 * forgotten, as the protocol demands.
 *
 * Meta contexts: base:allocation, and qemu:dirty-bitmap:NAME for each
 * bitmap the named export offers (export.h). Queries are answered as
 * qemu-nbd answers them: LIST with no query lists every context; "base:"
 * lists base:allocation, "qemu:" and "qemu:dirty-bitmap:" every bitmap;
 * an exact name selects that context; anything else selects nothing, and
 * SET ignores the wildcards (proto.md). Context ids are 0 for
 * base:allocation and 1 + i for bitmap i; LIST answers with id 0.
 */
#include "nbd-server/conn.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

/* The longest option a client needs: GO with a name of NBD_MAX_STRING and
 * a few info requests, or SET_META_CONTEXT with a name and a few queries
 * of that length. Kept small: it is buffered before any export is chosen. */
#define OPTION_MAX_LEN (16 * 1024)       /* larger: ERR_TOO_BIG */
#define OPTION_DISCARD_MAX (1024 * 1024) /* larger still: disconnect */
#define OPTIONS_MAX 1024                 /* per connection */

/* A parsed option payload, consumed front to back. */
struct cursor {
    const char *p;
    uint32_t left;
};

static int get_u32(struct cursor *cur, uint32_t *v)
{
    if (cur->left < 4)
        return -1;
    memcpy(v, cur->p, 4);
    *v = be32toh(*v);
    cur->p += 4;
    cur->left -= 4;
    return 0;
}

static int get_u16(struct cursor *cur, uint16_t *v)
{
    if (cur->left < 2)
        return -1;
    memcpy(v, cur->p, 2);
    *v = be16toh(*v);
    cur->p += 2;
    cur->left -= 2;
    return 0;
}

/* A string with a u32 length prefix, copied NUL-terminated into out. */
static int get_string(struct cursor *cur, char *out, size_t outsz)
{
    uint32_t len;
    if (get_u32(cur, &len) < 0 || len > cur->left || len >= outsz || len > NBD_MAX_STRING)
        return -1;
    memcpy(out, cur->p, len);
    out[len] = '\0';
    if (strlen(out) != len) /* embedded NUL */
        return -1;
    cur->p += len;
    cur->left -= len;
    return 0;
}

static int reply(struct nbd_conn *c, uint32_t option, uint32_t type, const void *data, uint32_t len)
{
    struct nbd_option_reply r = {
        .magic = htobe64(NBD_REP_MAGIC),
        .option = htobe32(option),
        .type = htobe32(type),
        .length = htobe32(len),
    };
    struct iovec iov[2] = {{&r, sizeof r}, {(void *)data, len}};
    return conn_writev(c, iov, len ? 2 : 1);
}

static int reply_error(struct nbd_conn *c, uint32_t option, uint32_t type, const char *msg)
{
    return reply(c, option, type, msg, (uint32_t)strlen(msg));
}

/* A read-only export offers no command that writes (a client would only
 * get EPERM), and FLUSH stays harmless. */
static uint16_t transmission_flags(const struct nbd_conn *c)
{
    uint16_t f =
        NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE;
    if (c->structured)
        f |= NBD_FLAG_SEND_DF;
    if (c->exp.read_only)
        f |= NBD_FLAG_READ_ONLY;
    else
        f |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
             NBD_FLAG_SEND_FAST_ZERO;
    return f;
}

/* Forgets the meta contexts selected, closing the export held for them. */
static void drop_meta(struct nbd_conn *c)
{
    void *ctx;
    const struct nbd_catalog_ops *cat = nbd_server_catalog(c->srv, &ctx);
    if (c->have_meta_exp)
        cat->close(ctx, &c->meta_exp);
    c->have_meta_exp = false;
    c->meta_export[0] = '\0';
    c->meta_allocation = false;
    c->meta_nbitmaps = 0;
}

/* Opens name as c->exp. For GO and EXPORT_NAME (transmission follows)
 * the export held for the meta contexts is taken over if it is the one,
 * and the selection is dropped if it is not. */
static int open_export(struct nbd_conn *c, const char *name, bool go)
{
    void *ctx;
    const struct nbd_catalog_ops *cat = nbd_server_catalog(c->srv, &ctx);
    if (go && c->have_meta_exp && strcmp(c->meta_export, name) == 0) {
        c->exp = c->meta_exp;
        c->have_meta_exp = false;
    } else {
        struct nbd_client who;
        conn_client(c, &who);
        int r = cat->open(ctx, name, &who, &c->exp);
        if (r < 0)
            return r;
        if (go)
            drop_meta(c);
    }
    c->have_export = true;
    snprintf(c->export_name, sizeof c->export_name, "%s", name);
    c->size = c->exp.ops->size(c->exp.handle);
    c->tflags = transmission_flags(c);
    return 0;
}

static void close_export(struct nbd_conn *c)
{
    void *ctx;
    const struct nbd_catalog_ops *cat = nbd_server_catalog(c->srv, &ctx);
    if (c->have_export)
        cat->close(ctx, &c->exp);
    c->have_export = false;
}

/* NBD_OPT_EXPORT_NAME: no error replies exist, so failure closes. */
static int opt_export_name(struct nbd_conn *c, const char *data, uint32_t len)
{
    char name[NBD_EXPORT_NAME_BUF];
    if (len > NBD_MAX_STRING || memchr(data, '\0', len))
        return -1;
    memcpy(name, data, len);
    name[len] = '\0';
    int r = open_export(c, name, true);
    if (r < 0) {
        qb_log(LOG_INFO, "nbd %s: export \"%s\": %s", c->peer, name, strerror(-r));
        return -1;
    }
    struct {
        uint64_t size;
        uint16_t flags;
        char zeroes[124];
    } __attribute__((packed)) msg = {.size = htobe64(c->size), .flags = htobe16(c->tflags)};
    size_t n = c->no_zeroes ? 10 : sizeof msg;
    return conn_write(c, &msg, n) < 0 ? -1 : 1;
}

static int list_one(void *arg, const char *name, const char *description)
{
    struct nbd_conn *c = arg;
    size_t nl = strlen(name), dl = strlen(description);
    if (nl > NBD_MAX_STRING || dl > NBD_MAX_STRING)
        return 0;
    char buf[4 + 2 * NBD_MAX_STRING];
    uint32_t be = htobe32((uint32_t)nl);
    memcpy(buf, &be, 4);
    memcpy(buf + 4, name, nl);
    memcpy(buf + 4 + nl, description, dl);
    return reply(c, NBD_OPT_LIST, NBD_REP_SERVER, buf, (uint32_t)(4 + nl + dl));
}

static int opt_list(struct nbd_conn *c, uint32_t len)
{
    if (len != 0)
        return reply_error(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "LIST takes no data");
    void *ctx;
    const struct nbd_catalog_ops *cat = nbd_server_catalog(c->srv, &ctx);
    struct nbd_client who;
    conn_client(c, &who);
    if (cat->list(ctx, &who, list_one, c) < 0)
        return -1;
    return reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

static int info_reply(struct nbd_conn *c, uint32_t opt, const void *data, uint32_t len)
{
    return reply(c, opt, NBD_REP_INFO, data, len);
}

static int send_info_export(struct nbd_conn *c, uint32_t opt)
{
    struct {
        uint16_t type;
        uint64_t size;
        uint16_t flags;
    } __attribute__((packed)) m = {htobe16(NBD_INFO_EXPORT), htobe64(c->size), htobe16(c->tflags)};
    return info_reply(c, opt, &m, sizeof m);
}

static int send_info_block_size(struct nbd_conn *c, uint32_t opt)
{
    struct {
        uint16_t type;
        uint32_t min, pref, max;
    } __attribute__((packed)) m = {htobe16(NBD_INFO_BLOCK_SIZE), htobe32(c->cfg->min_block),
                                   htobe32(c->cfg->pref_block), htobe32(c->cfg->max_payload)};
    return info_reply(c, opt, &m, sizeof m);
}

static int send_info_string(struct nbd_conn *c, uint32_t opt, uint16_t type, const char *s)
{
    char buf[2 + NBD_MAX_STRING];
    size_t n = strnlen(s, NBD_MAX_STRING);
    uint16_t be = htobe16(type);
    memcpy(buf, &be, 2);
    memcpy(buf + 2, s, n);
    return info_reply(c, opt, buf, (uint32_t)(2 + n));
}

/* The info items the client asked for, beyond EXPORT and BLOCK_SIZE which
 * are always sent (the block size must be, whenever min_block > 1). */
static int send_requested_infos(struct nbd_conn *c, uint32_t opt, struct cursor *req, uint16_t n)
{
    for (uint16_t i = 0; i < n; i++) {
        uint16_t type;
        if (get_u16(req, &type) < 0)
            return -1;
        int r = 0;
        if (type == NBD_INFO_NAME)
            r = send_info_string(c, opt, NBD_INFO_NAME, c->export_name);
        else if (type == NBD_INFO_DESCRIPTION)
            r = send_info_string(c, opt, NBD_INFO_DESCRIPTION, c->exp.description);
        if (r < 0)
            return -1;
    }
    return 0;
}

static uint32_t open_error(int err)
{
    if (err == -ENOENT)
        return NBD_REP_ERR_UNKNOWN;
    if (err == -ESHUTDOWN)
        return NBD_REP_ERR_SHUTDOWN;
    return NBD_REP_ERR_PLATFORM;
}

/* NBD_OPT_INFO and NBD_OPT_GO. Returns 1 when GO succeeded. */
static int opt_info_go(struct nbd_conn *c, uint32_t opt, const char *data, uint32_t len)
{
    struct cursor cur = {data, len};
    char name[NBD_EXPORT_NAME_BUF];
    uint16_t n;
    if (get_string(&cur, name, sizeof name) < 0 || get_u16(&cur, &n) < 0 ||
        cur.left != (uint32_t)n * 2)
        return reply_error(c, opt, NBD_REP_ERR_INVALID, "malformed INFO/GO request");
    int r = open_export(c, name, opt == NBD_OPT_GO);
    if (r < 0) {
        char msg[NBD_MAX_STRING + 64];
        snprintf(msg, sizeof msg, "export \"%s\": %s", name, strerror(-r));
        return reply_error(c, opt, open_error(r), msg);
    }
    struct cursor req = cur;
    if (send_info_export(c, opt) < 0 || send_info_block_size(c, opt) < 0 ||
        send_requested_infos(c, opt, &req, n) < 0 || reply(c, opt, NBD_REP_ACK, NULL, 0) < 0) {
        close_export(c);
        return -1;
    }
    if (opt == NBD_OPT_INFO) {
        close_export(c);
        return 0;
    }
    return 1;
}

static int opt_structured_reply(struct nbd_conn *c, uint32_t len)
{
    if (len != 0)
        return reply_error(c, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_INVALID,
                           "STRUCTURED_REPLY takes no data");
    c->structured = true;
    return reply(c, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
}

/* NBD_REP_META_CONTEXT for the context named prefix + leaf (LIST: id 0). */
static int send_context(struct nbd_conn *c, uint32_t opt, uint32_t id, const char *prefix,
                        const char *leaf)
{
    char buf[4 + NBD_MAX_STRING];
    size_t pl = strlen(prefix), ll = strlen(leaf);
    if (pl + ll > NBD_MAX_STRING)
        return 0; /* not offered (NBD_BITMAP_NAME_MAX) */
    uint32_t be = htobe32(id);
    memcpy(buf, &be, 4);
    memcpy(buf + 4, prefix, pl);
    memcpy(buf + 4 + pl, leaf, ll);
    return reply(c, opt, NBD_REP_META_CONTEXT, buf, (uint32_t)(4 + pl + ll));
}

/* The queries of a meta context option, checked whole by read_queries and
 * then walked again for each context the export offers: nothing is copied
 * or allocated, and the option's length bounds the work. */
struct queries {
    struct cursor cur;
    uint32_t n;
    bool list; /* LIST: wildcards match, and no query at all matches all */
};

/* Reads one query, in place: 0, or -1 if malformed. */
static int next_query(struct cursor *cur, const char **q, uint32_t *len)
{
    if (get_u32(cur, len) < 0 || *len > cur->left || *len > NBD_MAX_STRING ||
        memchr(cur->p, '\0', *len))
        return -1;
    *q = cur->p;
    cur->p += *len;
    cur->left -= *len;
    return 0;
}

static int read_queries(struct cursor *cur, struct queries *qs, bool list)
{
    if (get_u32(cur, &qs->n) < 0)
        return -1;
    qs->cur = *cur;
    qs->list = list;
    for (uint32_t i = 0; i < qs->n; i++) {
        const char *q;
        uint32_t len;
        if (next_query(cur, &q, &len) < 0)
            return -1;
    }
    return cur->left == 0 ? 0 : -1;
}

static bool query_is(const char *q, uint32_t len, const char *s)
{
    return len == strlen(s) && memcmp(q, s, len) == 0;
}

/* Whether one of the queries selects the context prefix + leaf; wildcards
 * is the NULL-terminated list of the queries that match it in a LIST. */
static bool selected(const struct queries *qs, const char *prefix, const char *leaf,
                     const char *const *wildcards)
{
    if (qs->list && qs->n == 0)
        return true;
    struct cursor cur = qs->cur;
    size_t pl = strlen(prefix), ll = strlen(leaf);
    for (uint32_t i = 0; i < qs->n; i++) {
        const char *q;
        uint32_t len;
        if (next_query(&cur, &q, &len) < 0)
            return false; /* not reached: read_queries checked them */
        if (len == pl + ll && memcmp(q, prefix, pl) == 0 && memcmp(q + pl, leaf, ll) == 0)
            return true;
        for (const char *const *w = wildcards; qs->list && *w; w++)
            if (query_is(q, len, *w))
                return true;
    }
    return false;
}

static const char *const base_wildcards[] = {"base:", NULL};
static const char *const bitmap_wildcards[] = {"qemu:", NBD_CONTEXT_DIRTY_BITMAP, NULL};

static bool selects_allocation(const struct queries *qs)
{
    return selected(qs, NBD_CONTEXT_BASE_ALLOCATION, "", base_wildcards);
}

static bool selects_bitmap(const struct queries *qs, const struct nbd_export *e, unsigned i)
{
    return strlen(e->bitmaps[i]) <= NBD_BITMAP_NAME_MAX &&
           selected(qs, NBD_CONTEXT_DIRTY_BITMAP, e->bitmaps[i], bitmap_wildcards);
}

/* The replies of NBD_OPT_LIST_META_CONTEXT but its ACK. */
static int list_contexts(struct nbd_conn *c, const struct nbd_export *e, const struct queries *qs)
{
    uint32_t opt = NBD_OPT_LIST_META_CONTEXT;
    if (selects_allocation(qs) && send_context(c, opt, 0, NBD_CONTEXT_BASE_ALLOCATION, "") < 0)
        return -1;
    for (unsigned i = 0; i < e->nbitmaps; i++)
        if (selects_bitmap(qs, e, i) &&
            send_context(c, opt, 0, NBD_CONTEXT_DIRTY_BITMAP, e->bitmaps[i]) < 0)
            return -1;
    return 0;
}

/* NBD_OPT_SET_META_CONTEXT, once the request is parsed: selects the
 * contexts for name, whose export c->meta_exp is, and keeps it open if any
 * is selected. The selection was dropped before. */
static int set_contexts(struct nbd_conn *c, const char *name, const struct queries *qs)
{
    uint32_t opt = NBD_OPT_SET_META_CONTEXT;
    const struct nbd_export *e = &c->meta_exp;
    bool allocation = selects_allocation(qs);
    unsigned n = 0;
    for (unsigned i = 0; i < e->nbitmaps; i++) {
        if (!selects_bitmap(qs, e, i))
            continue;
        if (n == NBD_META_BITMAPS_MAX) {
            drop_meta(c);
            return reply_error(c, opt, NBD_REP_ERR_TOO_BIG, "too many dirty bitmaps selected");
        }
        c->meta_bitmap[n++] = i;
    }
    if (!allocation && n == 0) {
        drop_meta(c);
        return reply(c, opt, NBD_REP_ACK, NULL, 0);
    }
    c->meta_allocation = allocation;
    c->meta_nbitmaps = n;
    snprintf(c->meta_export, sizeof c->meta_export, "%s", name);
    if (allocation &&
        send_context(c, opt, NBD_CONTEXT_ID_ALLOCATION, NBD_CONTEXT_BASE_ALLOCATION, "") < 0)
        return -1;
    for (unsigned k = 0; k < n; k++) {
        unsigned i = c->meta_bitmap[k];
        if (send_context(c, opt, NBD_CONTEXT_ID_BITMAP(i), NBD_CONTEXT_DIRTY_BITMAP,
                         e->bitmaps[i]) < 0)
            return -1;
    }
    return reply(c, opt, NBD_REP_ACK, NULL, 0);
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT. SET replaces
 * the selection even when it fails (proto.md). */
static int opt_meta_context(struct nbd_conn *c, uint32_t opt, const char *data, uint32_t len)
{
    bool list = opt == NBD_OPT_LIST_META_CONTEXT;
    struct cursor cur = {data, len};
    char name[NBD_EXPORT_NAME_BUF];
    struct queries qs;
    if (!list)
        drop_meta(c);
    if (!list && !c->structured)
        return reply_error(c, opt, NBD_REP_ERR_INVALID, "structured replies not negotiated");
    if (get_string(&cur, name, sizeof name) < 0 || read_queries(&cur, &qs, list) < 0)
        return reply_error(c, opt, NBD_REP_ERR_INVALID, "malformed meta context request");
    void *ctx;
    const struct nbd_catalog_ops *cat = nbd_server_catalog(c->srv, &ctx);
    struct nbd_export e;
    struct nbd_client who;
    conn_client(c, &who);
    int r = cat->open(ctx, name, &who, &e);
    if (r < 0) {
        char msg[NBD_MAX_STRING + 64];
        snprintf(msg, sizeof msg, "export \"%s\": %s", name, strerror(-r));
        return reply_error(c, opt, open_error(r), msg);
    }
    if (list) {
        r = list_contexts(c, &e, &qs);
        cat->close(ctx, &e); /* before the ACK: the client may count on it */
        return r < 0 ? r : reply(c, opt, NBD_REP_ACK, NULL, 0);
    }
    c->meta_exp = e;
    c->have_meta_exp = true;
    return set_contexts(c, name, &qs);
}

/* NBD_OPT_STARTTLS: the ACK in plain text, then the TLS handshake, with
 * what is left of the handshake's deadline. */
static int opt_starttls(struct nbd_conn *c, uint32_t len)
{
    uint32_t opt = NBD_OPT_STARTTLS;
    if (conn_tls_mode(c) == NBD_TLS_OFF)
        return reply_error(c, opt, NBD_REP_ERR_UNSUP, "TLS is not enabled on this server");
    if (c->tls)
        return reply_error(c, opt, NBD_REP_ERR_INVALID, "TLS is already negotiated");
    if (len != 0)
        return reply_error(c, opt, NBD_REP_ERR_INVALID, "STARTTLS takes no data");
    if (!c->out_is_socket || c->in_fd != c->out_fd)
        return reply_error(c, opt, NBD_REP_ERR_UNSUP, "TLS needs a socket");
    struct nbd_tls_creds *creds = nbd_server_tls(c->srv);
    if (!creds)
        return reply_error(c, opt, NBD_REP_ERR_POLICY, "no TLS credentials loaded");
    /* Bytes read in plain text past the option would be taken for the
     * TLS stream (or worse, for options negotiated under TLS): a client
     * must wait for the ACK. */
    int r = -1;
    if (conn_buffered(c, 1))
        qb_log(LOG_INFO, "nbd %s: data sent before the reply to STARTTLS: closing", c->peer);
    else if (reply(c, opt, NBD_REP_ACK, NULL, 0) == 0 &&
             (c->tls = nbd_tls_accept(creds, c->in_fd, c->peer, &c->deadline)) != NULL)
        r = 0;
    nbd_tls_creds_unref(creds);
    if (r < 0)
        return -1;
    c->structured = false;
    drop_meta(c);
    return 0;
}

/* Answers one option. 1: transmission begins; 0: next option; -1: close. */
static int handle_option(struct nbd_conn *c, uint32_t opt, const char *data, uint32_t len)
{
    if (nbd_server_shutting_down(c->srv) && opt == NBD_OPT_EXPORT_NAME)
        return -1; /* it has no way to report an error */
    if (nbd_server_shutting_down(c->srv) && opt != NBD_OPT_ABORT)
        return reply_error(c, opt, NBD_REP_ERR_SHUTDOWN, "server is shutting down");
    if (conn_tls_mode(c) == NBD_TLS_REQUIRE && !c->tls && opt != NBD_OPT_STARTTLS &&
        opt != NBD_OPT_ABORT) {
        if (opt == NBD_OPT_EXPORT_NAME) {
            qb_log(LOG_INFO, "nbd %s: EXPORT_NAME without TLS, which this server requires: closing",
                   c->peer);
            return -1;
        }
        return reply_error(c, opt, NBD_REP_ERR_TLS_REQD,
                           "TLS is required: this server accepts only STARTTLS and ABORT "
                           "before TLS");
    }
    switch (opt) {
    case NBD_OPT_STARTTLS:
        return opt_starttls(c, len);
    case NBD_OPT_EXPORT_NAME:
        return opt_export_name(c, data, len);
    case NBD_OPT_ABORT:
        reply(c, opt, NBD_REP_ACK, NULL, 0);
        return -1;
    case NBD_OPT_LIST:
        return opt_list(c, len);
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        return opt_info_go(c, opt, data, len);
    case NBD_OPT_STRUCTURED_REPLY:
        return opt_structured_reply(c, len);
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return opt_meta_context(c, opt, data, len);
    default:
        return reply_error(c, opt, NBD_REP_ERR_UNSUP, "option not supported");
    }
}

/* Reads one option header and payload; answers oversized ones itself.
 * Returns 1 with *data set (malloc'd), 0 if answered already, -1 to close. */
static int read_option(struct nbd_conn *c, uint32_t *opt, char **data, uint32_t *len)
{
    struct nbd_option_header h;
    if (conn_read(c, &h, sizeof h) < 0)
        return -1;
    if (be64toh(h.magic) != NBD_IHAVEOPT) {
        qb_log(LOG_INFO, "nbd %s: bad option magic, closing", c->peer);
        return -1;
    }
    *opt = be32toh(h.option);
    *len = be32toh(h.length);
    if (*len > OPTION_MAX_LEN) {
        if (*len > OPTION_DISCARD_MAX || conn_discard(c, *len) < 0)
            return -1;
        return reply_error(c, *opt, NBD_REP_ERR_TOO_BIG, "option too long") < 0 ? -1 : 0;
    }
    *data = malloc(*len + 1);
    if (!*data)
        return -1;
    if (conn_read(c, *data, *len) < 0) {
        free(*data);
        return -1;
    }
    (*data)[*len] = '\0';
    return 1;
}

static int greet(struct nbd_conn *c)
{
    struct {
        uint64_t magic, opt;
        uint16_t flags;
    } __attribute__((packed)) hello = {htobe64(NBD_MAGIC), htobe64(NBD_IHAVEOPT),
                                       htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)};
    uint32_t cflags;
    if (conn_write(c, &hello, sizeof hello) < 0 || conn_read(c, &cflags, 4) < 0)
        return -1;
    cflags = be32toh(cflags);
    if (cflags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
        qb_log(LOG_INFO, "nbd %s: unknown client flags 0x%x, closing", c->peer, cflags);
        return -1;
    }
    c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;
    return 0;
}

static int negotiate(struct nbd_conn *c)
{
    if (greet(c) < 0)
        return -1;
    for (int i = 0; i < OPTIONS_MAX; i++) {
        uint32_t opt, len;
        char *data = NULL;
        int r = read_option(c, &opt, &data, &len);
        if (r < 0)
            return -1;
        if (r == 0)
            continue;
        r = handle_option(c, opt, data, len);
        free(data);
        if (r != 0)
            return r == 1 ? 0 : -1;
    }
    qb_log(LOG_INFO, "nbd %s: more than %d options, closing", c->peer, OPTIONS_MAX);
    return -1;
}

int nbd_handshake(struct nbd_conn *c)
{
    int r = negotiate(c);
    if (r < 0) {
        close_export(c);
        drop_meta(c);
    }
    return r;
}
