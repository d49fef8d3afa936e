/* transmission.c - the request loop of the transmission phase.
 *
 * Every serving thread of a connection runs nbd_transmission(). The thread
 * that holds the connection's rlock (the leader) reads one request with its
 * payload and first tries to run it on the spot, asking the backend not to
 * wait (NBD_IO_NOWAIT): data in the page cache is read or written in
 * microseconds, and the leader answers and reads on without waking anyone.
 * When the backend would wait (a sync, a read from disk, later a mirror
 * round trip) it says -EAGAIN; the leader then passes the socket to the
 * next thread and runs the request itself, the slow way. So slow requests
 * overlap, replies go out in completion order, and a request is never
 * handed between threads: measured here, the hand-off per request cost
 * more CPU than the 4 KiB write itself. A write that waits on a mirror
 * peer goes a third way: the backend starts it and returns -EINPROGRESS,
 * and whichever thread sees the peer's answer sends the reply, without
 * ever blocking on this client (conn_send_other, conn.h); struct
 * async_request holds the connection open until then. One thread can so
 * keep a whole queue of replicated writes in flight.
 *
 * Validation follows the protocol's advice to the letter: unknown command or
 * flag, a flag not valid for the command, misalignment and reads past the
 * end are EINVAL; writes past the end are ENOSPC. None of them ends the
 * connection: a write's payload is read and dropped first so the stream
 * stays in step. Only a bad request magic (the stream is lost) or an I/O
 * error on the socket does.
 */
#include "nbd-server/conn.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <qb/qblog.h>

/* Reads of at least this size look for holes and send them as OFFSET_HOLE
 * chunks; for smaller ones finding a hole costs more than sending zeroes. */
#define SPARSE_READ_MIN (64 * 1024)
#define READ_EXTENTS_MAX 16
#define STATUS_EXTENTS_MAX 1024
/* A serving thread keeps its payload buffer up to this size between requests. */
#define KEEP_BUFFER_MAX (1024 * 1024)

struct request {
    uint16_t flags, type;
    uint64_t handle, offset;
    uint32_t length;
    int error; /* NBD error decided before execution, or 0 */
};

/* A thread's payload buffer, grown on demand. */
struct buffer {
    char *p;
    size_t cap;
};

static int buffer_reserve(struct buffer *b, size_t len)
{
    if (len <= b->cap)
        return 0;
    char *p = realloc(b->p, len);
    if (!p)
        return -1;
    b->p = p;
    b->cap = len;
    return 0;
}

static void buffer_trim(struct buffer *b)
{
    if (b->cap > KEEP_BUFFER_MAX) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
}

static uint32_t nbd_errno(int err)
{
    switch (err < 0 ? -err : err) {
    case 0:
        return 0;
    case EPERM:
    case EROFS:
        return NBD_EPERM;
    case ENOMEM:
        return NBD_ENOMEM;
    case EINVAL:
        return NBD_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        return NBD_EIO;
    }
}

/* Larger requests go the slow way at once: copying megabytes is worth
 * overlapping with reading the next request. */
#define INLINE_MAX (256 * 1024)

/* Flags each command accepts; FUA is valid on every command (proto.md). */
static uint16_t allowed_flags(const struct nbd_conn *c, uint16_t type)
{
    switch (type) {
    case NBD_CMD_READ:
        return NBD_CMD_FLAG_FUA | (c->structured ? NBD_CMD_FLAG_DF : 0);
    case NBD_CMD_WRITE_ZEROES:
        return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
    case NBD_CMD_BLOCK_STATUS:
        return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE;
    default:
        return NBD_CMD_FLAG_FUA;
    }
}

static bool has_range(uint16_t type)
{
    return type == NBD_CMD_READ || type == NBD_CMD_WRITE || type == NBD_CMD_TRIM ||
           type == NBD_CMD_CACHE || type == NBD_CMD_WRITE_ZEROES || type == NBD_CMD_BLOCK_STATUS;
}

static bool is_write(uint16_t type)
{
    return type == NBD_CMD_WRITE || type == NBD_CMD_WRITE_ZEROES || type == NBD_CMD_TRIM;
}

/* The NBD error this request deserves before it runs, or 0. */
static int validate(const struct nbd_conn *c, const struct request *r)
{
    if (r->type > NBD_CMD_BLOCK_STATUS)
        return NBD_EINVAL;
    if (r->flags & ~allowed_flags(c, r->type))
        return NBD_EINVAL;
    if (r->type == NBD_CMD_BLOCK_STATUS &&
        ((!c->meta_allocation && c->meta_nbitmaps == 0) || r->length == 0))
        return NBD_EINVAL;
    if (!has_range(r->type))
        return 0;
    uint32_t align = c->cfg->min_block - 1;
    if ((r->offset & align) || (r->length & align))
        return NBD_EINVAL;
    if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) && r->length > c->cfg->max_payload)
        return NBD_EINVAL;
    /* Read-only first: a write is refused for what it is, wherever. */
    if (c->exp.read_only && is_write(r->type))
        return NBD_EPERM;
    if (r->offset > c->size || r->length > c->size - r->offset)
        return r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC
                                                                           : NBD_EINVAL;
    return 0;
}

/* ---- replies ------------------------------------------------------------ */

static void simple_header(struct nbd_simple_reply *h, const struct request *r, uint32_t error)
{
    h->magic = htobe32(NBD_SIMPLE_REPLY_MAGIC);
    h->error = htobe32(error);
    h->handle = r->handle;
}

static void chunk_header(struct nbd_structured_reply *h, const struct request *r, uint16_t flags,
                         uint16_t type, uint32_t len)
{
    h->magic = htobe32(NBD_STRUCTURED_REPLY_MAGIC);
    h->flags = htobe16(flags);
    h->type = htobe16(type);
    h->handle = r->handle;
    h->length = htobe32(len);
}

/* The replies of the requests a thread runs inside its batch wait in
 * its cork and go out together when the batch ends, or when the next one
 * would not fit: one write, and under TLS one record, for several
 * replies. A client keeping many requests in flight then takes several
 * replies per receive: plain, vsand spends one sendmsg(2) per batch
 * instead of per reply; over TLS the client also decrypts one record,
 * with two recv(2) calls, per batch instead of per reply (measured here:
 * 4 KiB writes at QD32 went from 10.2 to 6.2 us of vsand's CPU each, and
 * the client's recv calls from 2.1 to 0.3 per request over TLS). A reply
 * waits only while its thread runs the requests already read in: the
 * batch ends before the thread waits for input, a slow request or its
 * client (batch_begin in export.h). One wait stays inside a batch: a
 * mirror whose gathered copies fill its buffer sends them to the peers
 * mid-batch, and the replies corked so far wait for that send too. A
 * reply larger than the cork goes out at once, after it. */
#define CORK_BYTES 16384 /* a TLS record */
struct cork {
    size_t len;
    char buf[CORK_BYTES];
};
/* The calling thread's cork while its batch is open, or NULL. */
static __thread struct cork *cork;

/* Sends what k holds. It is emptied first: the send may end the batch
 * (before it blocks), and that flushes again. */
static void cork_flush(struct nbd_conn *c, struct cork *k)
{
    struct iovec iov = {k->buf, k->len};
    if (iov.iov_len == 0)
        return;
    k->len = 0;
    /* A failure marks c dead: its thread stops at the next request. */
    conn_send_own(c, &iov, 1);
}

/* Sends one whole reply (see conn_send_own), or adds it to the cork. */
static int send_reply(struct nbd_conn *c, struct iovec *iov, int iovcnt)
{
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    /* The cork goes first when the reply does not fit beside it: a send
     * that would block ends the batch, whose flush would then want the
     * write lock this thread holds (with the cork empty it sends
     * nothing). Sending the cork may so end the batch: what comes after
     * then goes out at once, as no batch end is left to send it. */
    if (cork && len > CORK_BYTES - cork->len)
        cork_flush(c, cork);
    struct cork *k = cork;
    if (!k || len > CORK_BYTES)
        return conn_send_own(c, iov, iovcnt);
    for (int i = 0; i < iovcnt; i++) {
        memcpy(k->buf + k->len, iov[i].iov_base, iov[i].iov_len);
        k->len += iov[i].iov_len;
    }
    return atomic_load(&c->dead) ? -1 : 0;
}

static int send_simple(struct nbd_conn *c, const struct request *r, uint32_t error)
{
    struct nbd_simple_reply h;
    simple_header(&h, r, error);
    struct iovec iov = {&h, sizeof h};
    return send_reply(c, &iov, 1);
}

/* An error to a READ or BLOCK_STATUS with structured replies must be a
 * structured error chunk; everything else may use a simple reply. */
static int send_error(struct nbd_conn *c, const struct request *r, uint32_t error)
{
    if (!c->structured || (r->type != NBD_CMD_READ && r->type != NBD_CMD_BLOCK_STATUS))
        return send_simple(c, r, error);
    struct nbd_structured_reply h;
    struct {
        uint32_t error;
        uint16_t msglen;
    } __attribute__((packed)) e = {htobe32(error), 0};
    chunk_header(&h, r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, sizeof e);
    struct iovec iov[2] = {{&h, sizeof h}, {&e, sizeof e}};
    return send_reply(c, iov, 2);
}

/* ---- commands ----------------------------------------------------------- */

/* One piece of a READ reply: data read into the buffer at the same
 * relative position, or a hole. */
struct piece {
    uint64_t offset;
    uint32_t length;
    bool hole;
};

/* Splits a READ into data and hole pieces, into pc; how many. Falls back
 * to one data piece when the backend cannot say, except that -EAGAIN (it
 * would have to wait, and flags say NOWAIT) is returned. */
static int plan_read(struct nbd_conn *c, const struct request *r, struct piece *pc, unsigned flags)
{
    struct nbd_extent ext[READ_EXTENTS_MAX];
    unsigned n = 0;
    uint64_t off = r->offset, end = r->offset + r->length;
    if (c->structured && !(r->flags & NBD_CMD_FLAG_DF) && r->length >= SPARSE_READ_MIN) {
        int ne = c->exp.ops->extents(c->exp.handle, r->length, r->offset, ext, READ_EXTENTS_MAX,
                                     flags | NBD_IO_ROUGH);
        if (ne == -EAGAIN && (flags & NBD_IO_NOWAIT))
            return ne;
        for (int i = 0; i < ne && off < end; i++) {
            uint64_t len = ext[i].length < end - off ? ext[i].length : end - off;
            bool hole = ext[i].flags & NBD_EXTENT_ZERO;
            if (n > 0 && pc[n - 1].hole == hole) {
                pc[n - 1].length += (uint32_t)len;
            } else {
                pc[n++] = (struct piece){off, (uint32_t)len, hole};
            }
            off += len;
        }
    }
    if (off < end) {
        if (n > 0 && !pc[n - 1].hole)
            pc[n - 1].length += (uint32_t)(end - off);
        else
            pc[n++] = (struct piece){off, (uint32_t)(end - off), false};
    }
    return (int)n;
}

static int read_pieces(struct nbd_conn *c, const struct request *r, char *buf,
                       const struct piece *pc, unsigned n, unsigned flags)
{
    for (unsigned i = 0; i < n; i++) {
        if (pc[i].hole)
            continue;
        int e = c->exp.ops->pread(c->exp.handle, buf + (pc[i].offset - r->offset), pc[i].length,
                                  pc[i].offset, flags);
        if (e < 0)
            return e;
    }
    return 0;
}

static int send_read_structured(struct nbd_conn *c, const struct request *r, char *buf,
                                const struct piece *pc, unsigned n)
{
    struct nbd_structured_reply h[READ_EXTENTS_MAX + 1];
    struct {
        uint64_t offset;
        uint32_t length;
    } __attribute__((packed)) hole[READ_EXTENTS_MAX + 1];
    uint64_t off[READ_EXTENTS_MAX + 1];
    struct iovec iov[3 * (READ_EXTENTS_MAX + 1)];
    int k = 0;
    for (unsigned i = 0; i < n; i++) {
        uint16_t done = i + 1 == n ? NBD_REPLY_FLAG_DONE : 0;
        if (pc[i].hole) {
            hole[i].offset = htobe64(pc[i].offset);
            hole[i].length = htobe32(pc[i].length);
            chunk_header(&h[i], r, done, NBD_REPLY_TYPE_OFFSET_HOLE, sizeof hole[i]);
            iov[k++] = (struct iovec){&h[i], sizeof h[i]};
            iov[k++] = (struct iovec){&hole[i], sizeof hole[i]};
            continue;
        }
        off[i] = htobe64(pc[i].offset);
        chunk_header(&h[i], r, done, NBD_REPLY_TYPE_OFFSET_DATA, 8 + pc[i].length);
        iov[k++] = (struct iovec){&h[i], sizeof h[i]};
        iov[k++] = (struct iovec){&off[i], 8};
        iov[k++] = (struct iovec){buf + (pc[i].offset - r->offset), pc[i].length};
    }
    return send_reply(c, iov, k);
}

static int send_none(struct nbd_conn *c, const struct request *r)
{
    struct nbd_structured_reply h;
    chunk_header(&h, r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0);
    struct iovec iov = {&h, sizeof h};
    return send_reply(c, &iov, 1);
}

static int do_read(struct nbd_conn *c, const struct request *r, struct buffer *b, unsigned flags)
{
    if (r->length == 0)
        return c->structured ? send_none(c, r) : send_simple(c, r, 0);
    if (buffer_reserve(b, r->length) < 0)
        return send_error(c, r, NBD_ENOMEM);
    struct piece pc[READ_EXTENTS_MAX + 1];
    int n = plan_read(c, r, pc, flags);
    int e = n < 0 ? n : read_pieces(c, r, b->p, pc, (unsigned)n, flags);
    if (e == -EAGAIN)
        return e;
    if (e < 0)
        return send_error(c, r, nbd_errno(e));
    if (c->structured)
        return send_read_structured(c, r, b->p, pc, (unsigned)n);
    struct nbd_simple_reply h;
    simple_header(&h, r, 0);
    struct iovec iov[2] = {{&h, sizeof h}, {b->p, r->length}};
    return send_reply(c, iov, 2);
}

/* The extents of the k-th selected meta context (base:allocation first,
 * then the bitmaps), and its id. */
static int context_extents(struct nbd_conn *c, unsigned k, const struct request *r,
                           struct nbd_extent *ext, unsigned max, unsigned flags, uint32_t *id)
{
    const struct nbd_export *e = &c->exp;
    if (c->meta_allocation && k == 0) {
        *id = NBD_CONTEXT_ID_ALLOCATION;
        return e->ops->extents(e->handle, r->length, r->offset, ext, max, flags);
    }
    unsigned i = c->meta_bitmap[k - c->meta_allocation];
    *id = NBD_CONTEXT_ID_BITMAP(i);
    return e->ops->bitmap_extents(e->handle, i, e->bitmaps[i], r->length, r->offset, ext, max,
                                  flags);
}

/* Appends to p the BLOCK_STATUS chunk of context id; returns its end. */
static char *put_status_chunk(char *p, const struct request *r, bool last, uint32_t id,
                              const struct nbd_extent *ext, unsigned n)
{
    struct nbd_structured_reply h;
    chunk_header(&h, r, last ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_BLOCK_STATUS, 4 + 8 * n);
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    uint32_t be[2] = {htobe32(id)};
    memcpy(p, be, 4);
    p += 4;
    for (unsigned i = 0; i < n; i++) {
        be[0] = htobe32((uint32_t)ext[i].length);
        be[1] = htobe32(ext[i].flags);
        memcpy(p, be, 8);
        p += 8;
    }
    return p;
}

/* One chunk per selected context, gathered in the thread's buffer and
 * sent in one write, so that -EAGAIN (with NBD_IO_NOWAIT in flags, when
 * the backend would wait for any context) leaves nothing sent. */
static int do_block_status(struct nbd_conn *c, const struct request *r, struct buffer *b,
                           unsigned flags)
{
    struct nbd_extent ext[STATUS_EXTENTS_MAX];
    unsigned max = r->flags & NBD_CMD_FLAG_REQ_ONE ? 1 : STATUS_EXTENTS_MAX;
    unsigned nctx = c->meta_allocation + c->meta_nbitmaps;
    if (buffer_reserve(b, nctx * (sizeof(struct nbd_structured_reply) + 4 + 8 * max)) < 0)
        return send_error(c, r, NBD_ENOMEM);
    char *p = b->p;
    for (unsigned k = 0; k < nctx; k++) {
        uint32_t id;
        int n = context_extents(c, k, r, ext, max, flags, &id);
        if (n == -EAGAIN && (flags & NBD_IO_NOWAIT))
            return n;
        if (n < 0)
            return send_error(c, r, nbd_errno(n));
        p = put_status_chunk(p, r, k + 1 == nctx, id, ext, (unsigned)n);
    }
    struct iovec iov = {b->p, (size_t)(p - b->p)};
    return send_reply(c, &iov, 1);
}

static unsigned zero_flags(const struct request *r)
{
    return (r->flags & NBD_CMD_FLAG_NO_HOLE ? 0 : NBD_IO_MAY_TRIM) |
           (r->flags & NBD_CMD_FLAG_FAST_ZERO ? NBD_IO_FAST : 0);
}

/* Commands whose reply is a plain status. a: see nbd_async in export.h. */
static int run_simple_command(struct nbd_conn *c, const struct request *r, const char *payload,
                              unsigned flags, struct nbd_async *a)
{
    const struct nbd_export_ops *ops = c->exp.ops;
    void *h = c->exp.handle;
    if (r->flags & NBD_CMD_FLAG_FUA)
        flags |= NBD_IO_FUA;
    if (r->length == 0 && r->type != NBD_CMD_FLUSH)
        return 0;
    switch (r->type) {
    case NBD_CMD_WRITE:
        return ops->pwrite(h, payload, r->length, r->offset, flags, a);
    case NBD_CMD_FLUSH: /* a read-only client wrote nothing to make durable */
        return c->exp.read_only ? 0 : ops->flush(h, flags);
    case NBD_CMD_TRIM:
        return ops->trim(h, r->length, r->offset, flags, a);
    case NBD_CMD_CACHE:
        return ops->cache(h, r->length, r->offset, flags);
    case NBD_CMD_WRITE_ZEROES:
        return ops->zero(h, r->length, r->offset, flags | zero_flags(r), a);
    default:
        return -EINVAL;
    }
}

/* Runs the request and sends its reply: 0, or -1 if the reply could not be
 * sent. With NBD_IO_NOWAIT in flags it may instead return -EAGAIN, having
 * done nothing and sent nothing. */
static int execute(struct nbd_conn *c, const struct request *r, struct buffer *b, unsigned flags)
{
    if (r->error)
        return send_error(c, r, (uint32_t)r->error);
    if (r->type == NBD_CMD_READ)
        return do_read(c, r, b, flags);
    if (r->type == NBD_CMD_BLOCK_STATUS)
        return do_block_status(c, r, b, flags);
    int e = run_simple_command(c, r, b->p, flags, NULL);
    if (e == -EAGAIN && (flags & NBD_IO_NOWAIT))
        return e;
    return send_simple(c, r, nbd_errno(e));
}

/* A write the backend finishes later: its reply goes out from the thread
 * that finishes it, and it holds the connection until then. That thread
 * serves others too (a mirror link's reader): it sends with
 * conn_send_other, which never blocks on this client (conn.h). */
struct async_request {
    struct nbd_async a;
    struct nbd_conn *c;
    struct request r;
};

/* Replies held back on this thread (nbd_replies_hold), each holding its
 * connection's reference until sent. */
#define HELD_MAX 64
static __thread struct {
    bool on;
    unsigned n;
    struct nbd_conn *conn[HELD_MAX];
    struct nbd_simple_reply reply[HELD_MAX];
} held;

void nbd_replies_hold(void)
{
    held.on = true;
}

/* Sends every held reply of the first held connection's, in one write. */
static void flush_one_conn(void)
{
    struct nbd_conn *c = held.conn[0];
    struct nbd_simple_reply mine[HELD_MAX];
    int n = 0;
    unsigned keep = 0;
    for (unsigned i = 0; i < held.n; i++) {
        if (held.conn[i] == c) {
            mine[n++] = held.reply[i];
            continue;
        }
        held.conn[keep] = held.conn[i];
        held.reply[keep++] = held.reply[i];
    }
    held.n = keep;
    struct iovec iov = {mine, (size_t)n * sizeof mine[0]};
    conn_send_other(c, &iov, 1);
    for (int i = 0; i < n; i++)
        conn_unref(c);
}

void nbd_replies_flush(void)
{
    while (held.n > 0)
        flush_one_conn();
}

static void async_done(struct nbd_async *a, int err)
{
    struct async_request *ar = (struct async_request *)a;
    struct nbd_conn *c = ar->c;
    atomic_fetch_sub(&c->async_bytes, ar->r.length);
    if (held.on && held.n == HELD_MAX)
        nbd_replies_flush();
    if (held.on) {
        simple_header(&held.reply[held.n], &ar->r, nbd_errno(err));
        held.conn[held.n++] = c;
        free(ar);
        return;
    }
    struct nbd_simple_reply h;
    simple_header(&h, &ar->r, nbd_errno(err));
    struct iovec iov = {&h, sizeof h};
    conn_send_other(c, &iov, 1);
    free(ar);
    conn_unref(c);
}

/* Whether r may complete asynchronously: a client that queues writes
 * faster than the peers answer would otherwise make this connection hold
 * any number of them (and the backend their copies). Past the bound a
 * write runs the slow way, on one of the connection's threads, which
 * bounds it by `threads`. */
static bool async_room(struct nbd_conn *c, const struct request *r)
{
    return atomic_load(&c->refs) <= NBD_ASYNC_MAX &&
           atomic_load(&c->async_bytes) + r->length <= NBD_ASYNC_BYTES_MAX;
}

/* Runs a request inline, letting a write complete asynchronously. Returns
 * like execute, or 1 when the reply will be sent by async_done. */
static int execute_nowait(struct nbd_conn *c, const struct request *r, struct buffer *b)
{
    struct async_request *ar = NULL;
    if (!r->error && is_write(r->type) && async_room(c, r) && (ar = malloc(sizeof *ar)) != NULL) {
        *ar = (struct async_request){{async_done}, c, *r};
        atomic_fetch_add(&c->refs, 1);
        atomic_fetch_add(&c->async_bytes, r->length);
    }
    if (!ar)
        return execute(c, r, b, NBD_IO_NOWAIT);
    int e = run_simple_command(c, r, b->p, NBD_IO_NOWAIT, &ar->a);
    if (e == -EINPROGRESS)
        return 1;
    atomic_fetch_sub(&c->refs, 1); /* the thread's own reference remains */
    atomic_fetch_sub(&c->async_bytes, r->length);
    free(ar);
    return e == -EAGAIN ? e : send_simple(c, r, nbd_errno(e));
}

/* ---- the loop ----------------------------------------------------------- */

/* A serving thread's batch of requests run inline, and their replies. */
struct batch {
    struct nbd_conn *c;
    bool on;
    struct cork cork;
};

static void batch(struct batch *s, bool begin);

static void batch_end_hook(void *s)
{
    batch(s, false);
}

/* Brackets the requests run inline (see batch_begin in export.h). While
 * the batch is open, a reply that would block on the client ends it
 * first (conn_before_blocking). */
static void batch(struct batch *s, bool begin)
{
    const struct nbd_export_ops *ops = s->c->exp.ops;
    void (*fn)(void *) = begin ? ops->batch_begin : ops->batch_end;
    if (s->on == begin)
        return;
    if (fn)
        fn(s->c->exp.handle);
    s->on = begin;
    cork = begin ? &s->cork : NULL;
    conn_before_blocking(begin ? batch_end_hook : NULL, s);
    if (!begin)
        cork_flush(s->c, &s->cork);
}

/* Reads the next request and its payload; called with rlock held. Ends
 * the batch before it waits for input. Returns 0 with *r filled, or -1
 * when this thread should stop. */
static int read_request(struct nbd_conn *c, struct request *r, struct buffer *b,
                        struct batch *batching)
{
    struct nbd_request w;
    if (c->eof || atomic_load(&c->dead) || conn_read(c, &w, sizeof w) < 0)
        return -1;
    if (be32toh(w.magic) != NBD_REQUEST_MAGIC) {
        qb_log(LOG_INFO, "nbd %s: export \"%s\": bad request magic 0x%08x, closing", c->peer,
               c->export_name, be32toh(w.magic));
        atomic_store(&c->dead, true);
        return -1;
    }
    *r = (struct request){be16toh(w.flags),  be16toh(w.type),   w.handle,
                          be64toh(w.offset), be32toh(w.length), 0};
    if (r->type == NBD_CMD_DISC)
        return -1;
    r->error = validate(c, r);
    if (!r->error && nbd_server_shutting_down(c->srv))
        r->error = NBD_ESHUTDOWN;
    if (!r->error && atomic_load(&c->ending)) {
        r->error = NBD_ESHUTDOWN;
        c->eof = true; /* the client reconnects elsewhere: read nothing more */
    }
    if (r->type != NBD_CMD_WRITE)
        return 0;
    /* A payload not all in yet: the client may send the rest only once the
     * writes before it are answered (libnbd polling one connection at a
     * time), so what the batch gathered goes out first. */
    if (!conn_buffered(c, r->length))
        batch(batching, false);
    if (r->error)
        return conn_discard(c, r->length);
    if (buffer_reserve(b, r->length) < 0) {
        r->error = NBD_ENOMEM;
        return conn_discard(c, r->length);
    }
    return conn_read(c, b->p, r->length);
}

/* Runs a request the slow way: another thread reads on meanwhile. Called
 * and returns with rlock held. */
static int execute_slow(struct nbd_conn *c, const struct request *r, struct buffer *b)
{
    pthread_mutex_unlock(&c->rlock);
    int sent = execute(c, r, b, 0);
    pthread_mutex_lock(&c->rlock);
    return sent;
}

void nbd_transmission(struct nbd_conn *c)
{
    struct buffer b = {0};
    struct batch batching = {.c = c};
    pthread_mutex_lock(&c->rlock);
    for (;;) {
        struct request r;
        if (!conn_buffered(c, sizeof(struct nbd_request)))
            batch(&batching, false);
        if (read_request(c, &r, &b, &batching) < 0) {
            c->eof = true; /* every thread of this connection stops reading */
            break;
        }
        int sent = -EAGAIN;
        if (r.length <= INLINE_MAX) {
            /* A request alone (nothing gathered, nothing more read in)
             * runs outside a batch: a mirror then sends its copy before
             * its own write, not after. */
            batch(&batching, batching.on || conn_buffered(c, sizeof(struct nbd_request)));
            sent = execute_nowait(c, &r, &b);
        }
        if (sent == -EAGAIN) {
            batch(&batching, false);
            sent = execute_slow(c, &r, &b);
        }
        buffer_trim(&b);
        if (sent < 0)
            break;
    }
    batch(&batching, false);
    pthread_mutex_unlock(&c->rlock);
    free(b.p);
}
