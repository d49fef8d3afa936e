/* nbd_client.c - libnbd for backup, restore and clone (nbd_client.h).
 *
 * The walk asks block status for a window at a time: the server may
 * describe less than asked, and each context its own length, so the walk
 * goes on from the shorter of the two. Data is read in chunks of at most
 * CHUNK bytes (or the server's maximum block size), so memory never
 * follows the volume's size. */
#include "cli/nbd_client.h"

#include "cli/admin_call.h"
#include "common/json_add.h"
#include "common/size.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1u << 20)
/* Block status windows: the protocol's count is 32 bits. */
#define WINDOW (1ull << 30)
/* Zero requests: the protocol's count is 32 bits. */
#define ZERO_MAX (1ull << 30)

#define STATE_HOLE 1u  /* base:allocation */
#define STATE_ZERO 2u  /* base:allocation */
#define STATE_DIRTY 1u /* qemu:dirty-bitmap: */

/* ---- progress ------------------------------------------------------------ */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void progress_init(struct progress *p, const char *what, uint64_t total, bool force)
{
    *p = (struct progress){.what = what, .on = force || isatty(STDERR_FILENO), .total = total};
    p->start = p->last = now_seconds();
}

static void format_eta(double s, char *buf, size_t len)
{
    uint64_t n = (uint64_t)(s + 0.5);
    if (n >= 3600)
        snprintf(buf, len, "%" PRIu64 "h%02" PRIu64 "m", n / 3600, n / 60 % 60);
    else
        snprintf(buf, len, "%" PRIu64 "m%02" PRIu64 "s", n / 60, n % 60);
}

static void progress_print(struct progress *p, double t)
{
    char pos[SIZE_FORMAT_MAX], total[SIZE_FORMAT_MAX], moved[SIZE_FORMAT_MAX],
        rate[SIZE_FORMAT_MAX], eta[32] = "?";
    double el = t - p->start;
    size_format(p->pos, pos, sizeof pos);
    size_format(p->total, total, sizeof total);
    size_format(p->bytes, moved, sizeof moved);
    size_format(el > 0 ? (uint64_t)((double)p->bytes / el) : 0, rate, sizeof rate);
    if (p->pos > 0 && p->pos <= p->total)
        format_eta(el * (double)(p->total - p->pos) / (double)p->pos, eta, sizeof eta);
    fprintf(stderr, "\r%s: %s of %s (%3.0f%%), %s moved at %s/s, ETA %s  ", p->what, pos, total,
            p->total ? 100.0 * (double)p->pos / (double)p->total : 100.0, moved, rate, eta);
}

void progress_update(struct progress *p, uint64_t pos, uint64_t bytes)
{
    p->pos = pos;
    p->bytes = bytes;
    if (!p->on)
        return;
    double t = now_seconds();
    if (t - p->last < 0.5)
        return;
    p->last = t;
    progress_print(p, t);
}

void progress_done(struct progress *p)
{
    if (!p->on)
        return;
    progress_print(p, now_seconds());
    fputc('\n', stderr);
}

double progress_seconds(const struct progress *p)
{
    return now_seconds() - p->start;
}

/* ---- finding and opening ------------------------------------------------- */

static int64_t int_of(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
        return -1;
    return json_object_get_int64(v);
}

/* This node's member entry's "nbd", or "" */
static const char *member_nbd(struct json_object *cluster)
{
    struct json_object *members;
    int64_t self = int_of(cluster, "nodeid");
    if (self <= 0 || !json_object_object_get_ex(cluster, "members", &members) ||
        !json_object_is_type(members, json_type_array))
        return "";
    for (size_t i = 0; i < json_object_array_length(members); i++) {
        struct json_object *m = json_object_array_get_idx(members, i);
        if (int_of(m, "nodeid") == self)
            return cli_reply_string(m, "nbd");
    }
    return "";
}

int nbdc_node_address(const char *socket, char *buf, size_t len)
{
    struct json_object *req = json_object_new_object(), *reply = NULL, *cluster, *listen;
    if (!req || json_add(req, "cmd", json_object_new_string("status")) < 0) {
        json_object_put(req);
        fprintf(stderr, "vsan: out of memory\n");
        return EXIT_ERROR;
    }
    int r = cli_call_ok(socket, "status", req, &reply);
    json_object_put(req);
    if (r >= 0)
        return r;
    const char *addr = cli_reply_string(reply, "nbd_socket");
    if (!addr[0] && json_object_object_get_ex(reply, "cluster", &cluster))
        addr = member_nbd(cluster);
    if ((!addr[0] || strcmp(addr, "?") == 0) &&
        json_object_object_get_ex(reply, "nbd_listen", &listen) &&
        json_object_array_length(listen) > 0)
        addr = json_object_get_string(json_object_array_get_idx(listen, 0));
    r = -1;
    if (!addr || !addr[0] || strcmp(addr, "?") == 0 || snprintf(buf, len, "%s", addr) >= (int)len) {
        fprintf(stderr, "vsan: vsand at \"%s\" reports no NBD address in its status\n", socket);
        r = EXIT_ERROR;
    }
    json_object_put(reply);
    return r;
}

/* "HOST:PORT", "[V6]:PORT" or "/socket"; a wildcard host is this host. */
static int connect_addr(struct nbd_handle *h, const char *addr)
{
    char host[256];
    const char *port;

    if (addr[0] == '/')
        return nbd_connect_unix(h, addr);
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':' || (size_t)(close - addr) > sizeof host)
            return -2;
        snprintf(host, sizeof host, "%.*s", (int)(close - addr - 1), addr + 1);
        port = close + 2;
    } else {
        const char *colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= sizeof host)
            return -2;
        snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
        port = colon + 1;
    }
    if (strcmp(host, "0.0.0.0") == 0 || host[0] == '\0')
        snprintf(host, sizeof host, "127.0.0.1");
    else if (strcmp(host, "::") == 0)
        snprintf(host, sizeof host, "::1");
    return nbd_connect_tcp(h, host, port);
}

static int open_failed(struct nbd_handle *h, const char *addr, const char *export)
{
    int e = nbd_get_errno();
    const char *msg = nbd_get_error();
    bool snap = strchr(export, '@') != NULL;

    if (e == ENOENT && strstr(msg ? msg : "", "no export")) {
        fprintf(stderr, "vsan: %s: no such %s at the NBD server %s\n", export,
                snap ? "snapshot" : "volume", addr);
        nbd_close(h);
        return snap ? EXIT_NO_SNAPSHOT : EXIT_NO_VOLUME;
    }
    fprintf(stderr, "vsan: %s: NBD server %s: %s\n", export, addr, msg ? msg : strerror(e));
    nbd_close(h);
    return EXIT_ERROR;
}

int nbdc_open(const char *addr, const char *export, const char *const *contexts,
              struct nbd_handle **out)
{
    struct nbd_handle *h = nbd_create();
    if (!h) {
        fprintf(stderr, "vsan: libnbd: %s\n", nbd_get_error());
        return EXIT_ERROR;
    }
    if (nbd_set_export_name(h, export) < 0)
        return open_failed(h, addr, export);
    for (const char *const *c = contexts; c && *c; c++) {
        if (nbd_add_meta_context(h, *c) < 0)
            return open_failed(h, addr, export);
    }
    int r = connect_addr(h, addr);
    if (r == -2) {
        fprintf(stderr, "vsan: NBD address \"%s\": not HOST:PORT, [V6]:PORT or /socket\n", addr);
        nbd_close(h);
        return EXIT_USAGE;
    }
    if (r < 0)
        return open_failed(h, addr, export);
    *out = h;
    return -1;
}

/* ---- block status -------------------------------------------------------- */

/* One context's answer for a window: (length, flags) pairs. */
struct extents {
    uint32_t *e; /* the server's, copied, or one */
    uint32_t one[2];
    size_t pairs, i;
    uint64_t used; /* of pair i */
    uint64_t cover;
    bool got;
};

struct window {
    const char *dirty_ctx;
    struct extents alloc, dirty;
};

static int extent_cb(void *arg, const char *ctx, uint64_t offset, uint32_t *entries, size_t n,
                     int *error)
{
    struct window *w = arg;
    struct extents *x = strcmp(ctx, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0 ? &w->alloc
                        : w->dirty_ctx && strcmp(ctx, w->dirty_ctx) == 0 ? &w->dirty
                                                                         : NULL;
    (void)offset;
    if (!x || x->got)
        return 0;
    x->e = malloc(n * sizeof *entries);
    if (!x->e && n) {
        *error = ENOMEM;
        return -1;
    }
    memcpy(x->e, entries, n * sizeof *entries);
    x->pairs = n / 2;
    x->got = true;
    for (size_t i = 0; i < x->pairs; i++)
        x->cover += x->e[2 * i];
    return 0;
}

/* A context not asked for, or not offered: one extent of flags 0. */
static void whole(struct extents *x, uint32_t count)
{
    *x = (struct extents){.one = {count, 0}, .pairs = 1, .cover = count, .got = true};
    x->e = x->one;
}

static void extents_free(struct extents *x)
{
    if (x->e != x->one)
        free(x->e);
}

/* Block status of [off, off+count); *cover: how much both contexts
 * described (at least 1 byte). */
static int fetch_window(struct nbd_handle *h, const char *name, uint64_t off, uint32_t count,
                        struct window *w, uint64_t *cover)
{
    bool alloc = nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
    nbd_extent_callback cb = {.callback = extent_cb, .user_data = w};
    if ((alloc || w->dirty_ctx) && nbd_block_status(h, count, off, cb, 0) < 0) {
        fprintf(stderr, "vsan: %s: block status at %" PRIu64 "+%" PRIu32 ": %s\n", name, off, count,
                nbd_get_error());
        return EXIT_ERROR;
    }
    if (!alloc)
        whole(&w->alloc, count);
    if (!w->dirty_ctx)
        whole(&w->dirty, count);
    if (!w->alloc.got || !w->dirty.got) {
        fprintf(stderr, "vsan: %s: block status at %" PRIu64 ": the server sent no %s extents\n",
                name, off, !w->alloc.got ? LIBNBD_CONTEXT_BASE_ALLOCATION : w->dirty_ctx);
        return EXIT_ERROR;
    }
    *cover = w->alloc.cover < w->dirty.cover ? w->alloc.cover : w->dirty.cover;
    if (*cover > count)
        *cover = count;
    if (*cover == 0) {
        fprintf(stderr, "vsan: %s: block status at %" PRIu64 ": the server described 0 bytes\n",
                name, off);
        return EXIT_ERROR;
    }
    return -1;
}

static uint64_t ext_left(const struct extents *x)
{
    return x->i < x->pairs ? x->e[2 * x->i] - x->used : UINT64_MAX;
}

static void ext_advance(struct extents *x, uint64_t n)
{
    x->used += n;
    while (x->i < x->pairs && x->used >= x->e[2 * x->i]) {
        x->used -= x->e[2 * x->i];
        x->i++;
    }
}

/* Calls seg for each piece of [off, off+cover) of uniform flags. */
typedef int (*segment_fn)(void *arg, uint64_t off, uint64_t len, uint32_t alloc, uint32_t dirty);

static int for_segments(struct window *w, uint64_t off, uint64_t cover, segment_fn seg, void *arg)
{
    for (uint64_t pos = off; pos < off + cover;) {
        uint64_t a = ext_left(&w->alloc), d = ext_left(&w->dirty), n = off + cover - pos;
        n = a < n ? a : n;
        n = d < n ? d : n;
        int r = seg(arg, pos, n, w->alloc.e[2 * w->alloc.i + 1], w->dirty.e[2 * w->dirty.i + 1]);
        if (r >= 0)
            return r;
        ext_advance(&w->alloc, n);
        ext_advance(&w->dirty, n);
        pos += n;
    }
    return -1;
}

/* Walks [0, size) window by window, seg for every segment. */
static int walk_segments(struct nbd_handle *h, const char *name, uint64_t size,
                         const char *dirty_ctx, segment_fn seg, void *arg)
{
    for (uint64_t off = 0; off < size;) {
        struct window w = {.dirty_ctx = dirty_ctx};
        uint64_t cover = 0;
        uint32_t count = (uint32_t)(size - off < WINDOW ? size - off : WINDOW);
        int r = fetch_window(h, name, off, count, &w, &cover);
        if (r < 0)
            r = for_segments(&w, off, cover, seg, arg);
        extents_free(&w.alloc);
        extents_free(&w.dirty);
        if (r >= 0)
            return r;
        off += cover;
    }
    return -1;
}

/* ---- the walk ------------------------------------------------------------ */

struct walk {
    struct nbd_handle *h;
    const char *name;
    bool incremental;
    const struct extent_sink *sink;
    struct progress *p;
    struct walk_stats *st;
    uint8_t *buf;
    size_t chunk;
};

static bool all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static int zero_range(struct walk *w, uint64_t off, uint64_t len)
{
    if (!w->incremental)
        return -1; /* a full stream leaves zeroes out: its restore zeroes the gaps */
    w->st->zero += len;
    int r = w->sink->zero(w->sink->arg, off, len);
    return r == 0 ? -1 : r;
}

static int read_range(struct walk *w, uint64_t off, uint64_t len)
{
    for (uint64_t done = 0; done < len;) {
        size_t n = len - done < w->chunk ? (size_t)(len - done) : w->chunk;
        if (nbd_pread(w->h, w->buf, n, off + done, 0) < 0) {
            fprintf(stderr, "vsan: %s: read %zu bytes at %" PRIu64 ": %s\n", w->name, n, off + done,
                    nbd_get_error());
            return EXIT_ERROR;
        }
        w->st->read += n;
        int r = -1;
        if (all_zero(w->buf, n)) {
            r = zero_range(w, off + done, n);
        } else {
            w->st->data += n;
            r = w->sink->data(w->sink->arg, off + done, w->buf, n);
            r = r == 0 ? -1 : r;
        }
        if (r >= 0)
            return r;
        done += n;
        progress_update(w->p, off + done, w->st->read);
    }
    return -1;
}

static int walk_segment(void *arg, uint64_t off, uint64_t len, uint32_t alloc, uint32_t dirty)
{
    struct walk *w = arg;
    int r = -1;
    if (w->incremental && !(dirty & STATE_DIRTY))
        r = -1;
    else if (alloc & STATE_ZERO)
        r = zero_range(w, off, len);
    else
        r = read_range(w, off, len);
    progress_update(w->p, off + len, w->st->read);
    return r;
}

static size_t chunk_size(struct nbd_handle *h)
{
    int64_t max = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
    return max > 0 && (uint64_t)max < CHUNK ? (size_t)max : CHUNK;
}

int nbdc_walk(struct nbd_handle *h, const char *name, uint64_t size, const char *dirty_ctx,
              const struct extent_sink *sink, struct progress *p, struct walk_stats *st)
{
    struct walk w = {.h = h,
                     .name = name,
                     .incremental = dirty_ctx != NULL,
                     .sink = sink,
                     .p = p,
                     .st = st,
                     .chunk = chunk_size(h)};
    w.buf = malloc(w.chunk);
    if (!w.buf) {
        fprintf(stderr, "vsan: out of memory\n");
        return EXIT_ERROR;
    }
    int r = walk_segments(h, name, size, dirty_ctx, walk_segment, &w);
    free(w.buf);
    return r;
}

static int count_segment(void *arg, uint64_t off, uint64_t len, uint32_t alloc, uint32_t dirty)
{
    (void)off;
    (void)alloc;
    if (dirty & STATE_DIRTY)
        *(uint64_t *)arg += len;
    return -1;
}

int nbdc_count_dirty(struct nbd_handle *h, const char *name, uint64_t size, const char *ctx,
                     uint64_t *dirty)
{
    *dirty = 0;
    return walk_segments(h, name, size, ctx, count_segment, dirty);
}

/* ---- writing ------------------------------------------------------------- */

int nbdc_write(void *arg, uint64_t offset, const void *buf, size_t len)
{
    struct nbd_sink *s = arg;
    if (nbd_pwrite(s->h, buf, len, offset, 0) < 0) {
        fprintf(stderr, "vsan: %s: write %zu bytes at %" PRIu64 ": %s\n", s->name, len, offset,
                nbd_get_error());
        return EXIT_ERROR;
    }
    return 0;
}

int nbdc_zero(void *arg, uint64_t offset, uint64_t len)
{
    struct nbd_sink *s = arg;
    for (uint64_t done = 0; done < len;) {
        uint64_t n = len - done < ZERO_MAX ? len - done : ZERO_MAX;
        if (nbd_zero(s->h, n, offset + done, 0) < 0) {
            fprintf(stderr, "vsan: %s: zero %" PRIu64 " bytes at %" PRIu64 ": %s\n", s->name, n,
                    offset + done, nbd_get_error());
            return EXIT_ERROR;
        }
        done += n;
    }
    return 0;
}

int nbdc_finish(struct nbd_handle *h, const char *name)
{
    int r = -1;
    if (nbd_flush(h, 0) < 0) {
        fprintf(stderr, "vsan: %s: flush: %s\n", name, nbd_get_error());
        r = EXIT_ERROR;
    }
    if (r < 0 && nbd_shutdown(h, 0) < 0) {
        fprintf(stderr, "vsan: %s: disconnect: %s\n", name, nbd_get_error());
        r = EXIT_ERROR;
    }
    nbd_close(h);
    return r;
}
