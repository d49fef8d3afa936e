/* link.c - the mirror link's connections (see link.h for the design). */
#include "mirror/link.h"
#include "common/clock.h"

#include "mirror/stream.h"
#include "common/netaddr.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <qb/qblog.h>

#define PEERS_MAX 32
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000
#define STREAM_BUF (256 * 1024)
#define REPLY_BATCH 64

#define pending mlink_pending

/* Our outgoing connection to one peer. Locking: mu guards everything but
 * node and thread; send_mu serialises writes to fd (taken after mu is
 * released, never with it). Peers are never freed before mlink_stop: one
 * that leaves the group is only unwanted, its thread idles. */
struct peer {
    struct mlink *l;
    uint32_t node;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* wanted, up, stopping changed */
    char addr[128];
    bool wanted, up;
    int fd;           /* -1 unless connected */
    uint64_t session; /* counts connections */
    uint64_t next_id;
    struct pending *head, *tail;
    bool refused_logged;
    pthread_mutex_t send_mu;
};

/* One incoming connection, served by its own thread. */
struct mlink_conn {
    struct mlink *l;
    int fd;
    uint32_t peer;
    struct mstream in;
    pthread_mutex_t send_mu; /* the serving thread, and mlink_reply callers */
    /* Replies held back while more requests are already buffered, sent in
     * one sendmsg (serving thread only). */
    struct mwire_header held[REPLY_BATCH];
    int nheld;
    /* Set by mlink_drop: nothing more from this connection is served.
     * serve_mu is held while a request is served, so once mlink_drop
     * returns no request of the dropped peer is being applied either. */
    pthread_mutex_t serve_mu;
    bool dropped;
    struct mlink_conn *next;
};

/* Locking: mu guards peers/npeers, conns, the handshake slots and
 * stopping; conns_cv is signalled
 * when a serving thread ends. */
struct mlink {
    struct mlink_params p;
    char cluster[MW_CLUSTER_MAX + 1];
    struct mauth_secret secret;
    int listen_fd;
    pthread_t accept_thread;
    pthread_mutex_t mu;
    pthread_cond_t conns_cv;
    struct peer *peers[PEERS_MAX];
    size_t npeers;
    struct mlink_conn *conns;
    unsigned handshaking; /* connections in the handshake */
    uint64_t unlogged;    /* refused connections not logged yet, since: */
    time_t last_refused_log;
    bool stopping;
    atomic_uint_fast64_t sent, served, refused;
    _Atomic time_t last_broken_log;
};

/* ---- sockets ------------------------------------------------------------ */

static void set_timeout(int fd, unsigned ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* A peer that takes none of our bytes for ms: a send fails (EAGAIN) and the
 * connection is cut, as for one that does not answer. No thread, and no
 * lock a thread holds while it sends, waits longer on one peer. */
static void set_send_timeout(int fd, unsigned ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
        qb_log(LOG_WARNING, "mirror: a send timeout: %s", strerror(errno));
}

static void tune_socket(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ---- serving peers' requests ---------------------------------------------- */

static void reply_header(struct mwire_header *h, const struct mwire_header *req, int err,
                         size_t len)
{
    mwire_init(h, MW_REPLY, req->id);
    h->volume = req->volume;
    h->arg = err < 0 ? (uint32_t)-err : 0;
    h->payload = err < 0 ? 0 : (uint32_t)len;
}

static int reply(struct mlink_conn *c, const struct mwire_header *req, int err, const void *data,
                 size_t len)
{
    struct mwire_header h;
    reply_header(&h, req, err, len);
    pthread_mutex_lock(&c->send_mu);
    int r = mstream_send(c->fd, &h, err < 0 ? NULL : data);
    if (r < 0) /* a reply cut short: nothing may follow it */
        shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&c->send_mu);
    return r;
}

/* Sends the replies held back, in one go. */
static int flush_held(struct mlink_conn *c)
{
    struct iovec iov[REPLY_BATCH];
    for (int i = 0; i < c->nheld; i++)
        iov[i] = (struct iovec){&c->held[i], sizeof c->held[i]};
    pthread_mutex_lock(&c->send_mu);
    int r = c->nheld ? mstream_writev(c->fd, iov, c->nheld) : 0;
    if (r < 0)
        shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&c->send_mu);
    c->nheld = 0;
    return r;
}

/* A reply without payload, held back while the next request is already
 * buffered: answering it costs no system call of its own then. */
static int reply_later(struct mlink_conn *c, const struct mwire_header *req, int err)
{
    struct mwire_header *h = &c->held[c->nheld++];
    reply_header(h, req, err, 0);
    mwire_seal(h, NULL);
    if (c->nheld < REPLY_BATCH && mstream_has_header(&c->in))
        return 0;
    return flush_held(c);
}

int mlink_reply(struct mlink_call *call, int err, const void *data, size_t len)
{
    call->replied = true;
    /* Replies held back go first: a stream of requests answered here (a
     * node reading through a peer) would otherwise keep them back for
     * good, and their callers wait without a timeout (the peer sees
     * replies arriving). */
    if (call->conn->nheld > 0 && flush_held(call->conn) < 0)
        return -1;
    return reply(call->conn, call->req, err, data, len);
}

bool mlink_ahead(const struct mlink_call *call, size_t *pos, struct mwire_header *h)
{
    return mstream_peek(&call->conn->in, pos, h);
}

/* Counts a refused connection and logs why, at most once a minute (saying
 * how many went unlogged since): anyone who reaches the mirror port can
 * open connections, and a flood of them must not flood the log too. */
static void refused(struct mlink *l, const char *why)
{
    atomic_fetch_add(&l->refused, 1);
    pthread_mutex_lock(&l->mu);
    time_t now = time(NULL);
    bool say = now - l->last_refused_log >= 60;
    unsigned long long more = l->unlogged;
    l->unlogged = say ? 0 : l->unlogged + 1;
    if (say)
        l->last_refused_log = now;
    pthread_mutex_unlock(&l->mu);
    if (say)
        qb_log(LOG_WARNING,
               "mirror: refused a connection: %s (%llu more since the last such message)", why,
               more);
}

static void refuse(struct mlink_conn *c, uint64_t id, int err, const char *why)
{
    struct mwire_header req;
    mwire_init(&req, MW_HELLO, id);
    reply(c, &req, err, NULL, 0);
    refused(c->l, why);
}

/* When a handshake that starts now must be over: one deadline for all of
 * it, so a peer trickling bytes holds its slot no longer than that. */
static struct timespec handshake_deadline(const struct mlink *l)
{
    return clock_after_ms(l->p.timeout_ms);
}

/* Reads the handshake message of type want, whose payload is exactly size
 * bytes, into payload; anything else is refused on its header alone, so a
 * peer not yet authenticated costs no buffer (docs/ARCHITECTURE.md, invariant 9). */
static int recv_step(int fd, const struct timespec *deadline, enum mwire_type want,
                     struct mwire_header *h, void *payload, size_t size, const char **why)
{
    int r = mstream_recv_small(fd, deadline, h, payload, size, why);
    if (r == 0 && (h->type != want || h->payload != size)) {
        *why = want == MW_HELLO ? "the first message is not a HELLO" : "protocol error";
        r = -EPROTO;
    }
    return r;
}

/* The server's half of the handshake; sets c->peer. */
static int serve_handshake(struct mlink_conn *c)
{
    struct mlink *l = c->l;
    struct timespec deadline = handshake_deadline(l);
    struct mwire_header h;
    const char *why;
    char err[256];
    struct mw_hello hello;
    int r = recv_step(c->fd, &deadline, MW_HELLO, &h, &hello, sizeof hello, &why);
    if (r < 0) {
        refused(l, why);
        return r;
    }
    struct mauth a;
    struct mw_challenge ch;
    r = mauth_server_challenge(&a, &l->secret, l->cluster, l->p.self, &hello, &ch, err, sizeof err);
    if (r < 0) {
        refuse(c, h.id, r, err);
        return r;
    }
    struct mwire_header out;
    mwire_init(&out, MW_CHALLENGE, h.id);
    out.payload = sizeof ch;
    struct mw_auth auth;
    r = mstream_send(c->fd, &out, &ch);
    if (r == 0)
        r = recv_step(c->fd, &deadline, MW_AUTH, &h, &auth, sizeof auth, &why);
    if (r < 0) {
        /* A peer that doubts our proof hangs up here, and retries every
         * second: say so once a minute, not every time. */
        atomic_fetch_add(&l->refused, 1);
        time_t now = time(NULL), last = atomic_load(&l->last_broken_log);
        if (now - last >= 60 && atomic_compare_exchange_strong(&l->last_broken_log, &last, now))
            qb_log(LOG_WARNING,
                   "mirror: node %u broke off the handshake after our proof: refused "
                   "(does it have another secret?)",
                   hello.nodeid);
        return r;
    }
    r = mauth_server_verify(&a, &auth, err, sizeof err);
    if (r < 0) {
        refuse(c, h.id, -EACCES, err);
        return r;
    }
    mwire_init(&out, MW_WELCOME, h.id);
    c->peer = hello.nodeid;
    return mstream_send(c->fd, &out, NULL);
}

static void serve_requests(struct mlink_conn *c)
{
    struct mlink *l = c->l;
    for (;;) {
        struct mwire_header h;
        const void *payload;
        const char *why;
        int r = mstream_recv(&c->in, &h, &payload, &why, NULL, NULL);
        if (r == -ECONNRESET)
            break;
        if (r == 0 && h.type < MW_WRITE) {
            why = "a handshake message after the handshake";
            r = -EPROTO;
        }
        if (r < 0) {
            qb_log(LOG_WARNING, "mirror: node %u: %s: closing its connection", c->peer, why);
            break;
        }
        struct mlink_call call = {.peer = c->peer, .req = &h, .payload = payload, .conn = c};
        pthread_mutex_lock(&c->serve_mu);
        bool dropped = c->dropped;
        if (!dropped)
            r = l->p.serve(l->p.ctx, &call);
        pthread_mutex_unlock(&c->serve_mu);
        if (dropped)
            break;
        atomic_fetch_add(&l->served, 1);
        if (!call.replied && reply_later(c, &h, r) < 0)
            return;
    }
    flush_held(c);
}

/* The handshake of c is over, passed or not: its slot is free. */
static void handshake_over(struct mlink *l)
{
    pthread_mutex_lock(&l->mu);
    l->handshaking--;
    pthread_mutex_unlock(&l->mu);
}

static void *conn_main(void *arg)
{
    struct mlink_conn *c = arg;
    struct mlink *l = c->l;
    tune_socket(c->fd);
    set_send_timeout(c->fd, l->p.timeout_ms);
    int r = serve_handshake(c);
    handshake_over(l);
    /* Only now, the peer authenticated, is its stream buffered. */
    if (r == 0 && mstream_init(&c->in, c->fd, STREAM_BUF) < 0)
        qb_log(LOG_ERR, "mirror: node %u: no memory for its connection", c->peer);
    else if (r == 0) {
        qb_log(LOG_INFO, "mirror: node %u connected", c->peer);
        serve_requests(c);
    }
    mstream_free(&c->in);
    pthread_mutex_lock(&l->mu);
    for (struct mlink_conn **p = &l->conns; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    pthread_cond_broadcast(&l->conns_cv);
    pthread_mutex_unlock(&l->mu);
    close(c->fd);
    pthread_mutex_destroy(&c->serve_mu);
    pthread_mutex_destroy(&c->send_mu);
    free(c);
    return NULL;
}

/* With l->mu held: whether a new connection may start its handshake; those
 * over MLINK_HANDSHAKES_MAX are closed at once. */
static bool handshake_slot(struct mlink *l)
{
    if (l->handshaking == MLINK_HANDSHAKES_MAX)
        return false;
    l->handshaking++;
    return true;
}

static void start_conn(struct mlink *l, int fd)
{
    struct mlink_conn *c = calloc(1, sizeof *c);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    bool full = false;
    if (c) {
        *c = (struct mlink_conn){.l = l, .fd = fd};
        pthread_mutex_init(&c->send_mu, NULL);
        pthread_mutex_init(&c->serve_mu, NULL);
        pthread_mutex_lock(&l->mu);
        full = !l->stopping && !handshake_slot(l);
        int e = full ? EAGAIN : l->stopping ? ECANCELED : 0;
        if (e == 0) {
            c->next = l->conns;
            l->conns = c;
            e = pthread_create(&t, &attr, conn_main, c);
            if (e != 0) {
                l->conns = c->next;
                l->handshaking--;
            }
        }
        if (e != 0) {
            pthread_mutex_destroy(&c->serve_mu);
            pthread_mutex_destroy(&c->send_mu);
            free(c);
            c = NULL;
        }
        pthread_mutex_unlock(&l->mu);
    }
    pthread_attr_destroy(&attr);
    if (full)
        refused(l, "too many connections in the handshake: closed at once");
    else if (!c)
        qb_log(LOG_ERR, "mirror: no memory or thread for an incoming connection");
    if (!c)
        close(fd);
}

/* With l->mu held: serves nothing more from c (see mlink_drop). The
 * shutdown comes first: it wakes a serving thread blocked sending a reply
 * to a peer that reads nothing, which holds serve_mu. */
static void drop_conn(struct mlink_conn *c)
{
    shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_lock(&c->serve_mu);
    c->dropped = true;
    pthread_mutex_unlock(&c->serve_mu);
}

void mlink_drop(struct mlink *l, uint32_t node)
{
    pthread_mutex_lock(&l->mu);
    for (struct mlink_conn *c = l->conns; c; c = c->next)
        if (c->peer == node)
            drop_conn(c);
    pthread_mutex_unlock(&l->mu);
}

static void *accept_main(void *arg)
{
    struct mlink *l = arg;
    for (;;) {
        int fd = accept4(l->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            start_conn(l, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            qb_log(LOG_ERR, "mirror: accept: %s", strerror(errno));
            poll(NULL, 0, 100);
            continue;
        }
        return NULL; /* the listener was shut down */
    }
}

/* ---- our requests to peers -------------------------------------------------- */

/* One op of b has its result. A synchronous waiter is signalled under mu,
 * so it can't return (and b go away) between the count and the signal. */
static void batch_done(struct mlink_wait *b)
{
    if (b->done) {
        struct mlink_pending *extra = b->extra;
        if (atomic_fetch_sub(&b->left, 1) == 1) {
            b->done(b);
            free(extra);
        }
        return;
    }
    pthread_mutex_lock(&b->mu);
    if (atomic_fetch_sub(&b->left, 1) == 1)
        pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* With p->mu held: takes the pending request id off the list. */
static struct pending *take(struct peer *p, uint64_t id)
{
    struct pending *prev = NULL;
    for (struct pending *x = p->head; x; prev = x, x = x->next) {
        if (x->id != id)
            continue;
        if (prev)
            prev->next = x->next;
        else
            p->head = x->next;
        if (p->tail == x)
            p->tail = prev;
        return x;
    }
    return NULL;
}

/* The connection is gone: everything in flight fails with err. */
static void peer_down(struct peer *p, int err)
{
    pthread_mutex_lock(&p->mu);
    struct pending *x = p->head;
    p->head = p->tail = NULL;
    p->up = false;
    int fd = p->fd;
    p->fd = -1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    while (x) {
        struct pending *next = x->next;
        x->op->result = err;
        batch_done(x->wait);
        x = next;
    }
    /* Under send_mu: a sender that read fd before it was cleared finishes
     * first, so it never writes to a number reused by another file; the
     * shutdown wakes one blocked on a peer that reads nothing. The close
     * aborts (linger 0: an RST, the send queue dropped): requests the
     * kernel still held would otherwise go out once the path heals and
     * land after writes that have come since (a write that failed for
     * want of a witness leaves its replicas current: replicate.c). */
    if (fd >= 0) {
        struct linger abort_close = {.l_onoff = 1, .l_linger = 0};
        if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close) < 0)
            qb_log(LOG_WARNING, "mirror: node %u: SO_LINGER: %s", p->node, strerror(errno));
        shutdown(fd, SHUT_RDWR);
    }
    pthread_mutex_lock(&p->send_mu);
    if (fd >= 0)
        close(fd);
    pthread_mutex_unlock(&p->send_mu);
}

static long ms_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

/* Called when a read waited a while: go on unless the oldest request has
 * waited longer than the timeout, or the peer is no longer wanted. */
static bool peer_still_ok(void *arg)
{
    struct peer *p = arg;
    pthread_mutex_lock(&p->mu);
    bool ok = p->wanted && !p->l->stopping &&
              (!p->head || ms_since(&p->head->sent) < (long)p->l->p.timeout_ms);
    pthread_mutex_unlock(&p->mu);
    return ok;
}

/* Stores a reply in its request; false if the stream is broken. */
static bool complete(struct peer *p, const struct mwire_header *h, const void *payload)
{
    pthread_mutex_lock(&p->mu);
    struct pending *x = take(p, h->id);
    pthread_mutex_unlock(&p->mu);
    if (!x) {
        qb_log(LOG_WARNING, "mirror: node %u: a reply to no request (id %llu)", p->node,
               (unsigned long long)h->id);
        return false;
    }
    const char *why;
    struct mlink_op *op = x->op;
    if (mwire_check_reply(&op->req, h, &why) < 0 || h->payload > op->reply_max) {
        qb_log(LOG_WARNING, "mirror: node %u: bad reply to %s: %s", p->node,
               mwire_type_name(op->req.type), h->payload > op->reply_max ? "too long" : why);
        op->result = -EBADMSG;
        batch_done(x->wait);
        return false;
    }
    op->result = -(int)h->arg;
    op->reply_len = h->payload;
    if (h->payload)
        memcpy(op->reply_buf, payload, h->payload);
    batch_done(x->wait);
    return true;
}

static void batch(void (*fn)(void))
{
    if (fn)
        fn();
}

static void read_replies(struct peer *p, struct mstream *in)
{
    batch(p->l->p.batch_begin);
    struct timespec checked;
    clock_gettime(CLOCK_MONOTONIC, &checked);
    for (;;) {
        struct mwire_header h;
        const void *payload;
        const char *why;
        if (!mstream_has_header(in))
            batch(p->l->p.batch_end);
        int r = mstream_recv(in, &h, &payload, &why, peer_still_ok, p);
        if (r == 0 && h.type != MW_REPLY) {
            why = "a request where a reply was due";
            r = -EPROTO;
        }
        if (r == 0 && !complete(p, &h, payload))
            r = -EPROTO;
        /* The stream checks the oldest request only after a silence; while
         * other replies keep coming, a request whose reply was lost is
         * found here. */
        if (r == 0 && ms_since(&checked) >= 200) {
            clock_gettime(CLOCK_MONOTONIC, &checked);
            if (!peer_still_ok(p))
                r = -ETIMEDOUT;
        }
        if (r < 0) {
            if (r != -ECONNRESET || p->wanted)
                qb_log(LOG_WARNING, "mirror: node %u: %s: link down", p->node,
                       r == -ETIMEDOUT ? "no answer in time" : why);
            peer_down(p, r == -ETIMEDOUT ? -ETIMEDOUT : -ECONNRESET);
            batch(p->l->p.batch_end);
            return;
        }
    }
}

/* The client's half of the handshake, with the same single deadline as
 * the server's, so a peer that stalls it costs no more than that either. */
static int client_handshake(struct peer *p, int fd, char *err, size_t errlen)
{
    struct mlink *l = p->l;
    struct timespec deadline = handshake_deadline(l);
    struct mauth a;
    struct mw_hello hello;
    int r = mauth_client_hello(&a, &l->secret, l->cluster, l->p.self, &hello);
    struct mwire_header h;
    mwire_init(&h, MW_HELLO, 0);
    h.payload = sizeof hello;
    if (r == 0)
        r = mstream_send(fd, &h, &hello);
    struct mw_challenge ch;
    const char *why = "";
    if (r == 0)
        r = mstream_recv_small(fd, &deadline, &h, &ch, sizeof ch, &why);
    if (r == 0 && h.type == MW_REPLY) {
        snprintf(err, errlen, "it refused us: %s", strerror((int)h.arg));
        return -EACCES;
    }
    if (r == 0 && (h.type != MW_CHALLENGE || h.payload != sizeof ch)) {
        snprintf(err, errlen, "protocol error in the handshake");
        return -EPROTO;
    }
    if (r < 0) {
        snprintf(err, errlen, "handshake: %s", why[0] ? why : strerror(-r));
        return r;
    }
    struct mw_auth auth;
    r = mauth_client_auth(&a, &ch, p->node, &auth, err, errlen);
    if (r < 0)
        return r;
    mwire_init(&h, MW_AUTH, 0);
    h.payload = sizeof auth;
    r = mstream_send(fd, &h, &auth);
    if (r == 0)
        r = mstream_recv_small(fd, &deadline, &h, NULL, 0, &why);
    if (r == 0 && h.type != MW_WELCOME) {
        snprintf(err, errlen, "it refused our authentication: wrong secret?");
        return -EACCES;
    }
    if (r < 0)
        snprintf(err, errlen, "handshake: %s", why[0] ? why : strerror(-r));
    return r;
}

/* Waits ms, or until the peer's wanted state changes or the link stops. */
static void peer_pause(struct peer *p, unsigned ms)
{
    struct timespec ts = clock_after_ms(ms);
    pthread_mutex_lock(&p->mu);
    bool wanted = p->wanted;
    while (!p->l->stopping && p->wanted == wanted &&
           pthread_cond_timedwait(&p->cv, &p->mu, &ts) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&p->mu);
}

/* One attempt: connect, authenticate, then read replies until it breaks. */
static int peer_session(struct peer *p, const char *addr)
{
    struct mlink *l = p->l;
    int fd = netaddr_connect(addr, l->p.timeout_ms, "mirror");
    if (fd < 0)
        return fd;
    tune_socket(fd);
    struct mstream in = {.fd = fd};
    char err[256] = "";
    int r = client_handshake(p, fd, err, sizeof err);
    if (r == 0 && (r = mstream_init(&in, fd, STREAM_BUF)) < 0)
        snprintf(err, sizeof err, "no memory for its link");
    if (r < 0) {
        if (!p->refused_logged)
            qb_log(LOG_WARNING, "mirror: node %u at %s: %s", p->node, addr, err);
        p->refused_logged = true;
        mstream_free(&in);
        close(fd);
        return r;
    }
    p->refused_logged = false;
    set_timeout(fd, l->p.timeout_ms < 400 ? l->p.timeout_ms / 2 : 200);
    set_send_timeout(fd, l->p.timeout_ms);
    pthread_mutex_lock(&p->mu);
    p->fd = fd;
    p->session++;
    p->up = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    qb_log(LOG_INFO, "mirror: linked to node %u at %s", p->node, addr);
    read_replies(p, &in);
    mstream_free(&in);
    return 0;
}

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    unsigned backoff = BACKOFF_MIN_MS;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->wanted && !p->l->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        bool stop = p->l->stopping;
        char addr[sizeof p->addr];
        memcpy(addr, p->addr, sizeof addr);
        pthread_mutex_unlock(&p->mu);
        if (stop)
            return NULL;
        if (peer_session(p, addr) == 0)
            backoff = BACKOFF_MIN_MS;
        else if ((backoff *= 2) > BACKOFF_MAX_MS)
            backoff = BACKOFF_MAX_MS;
        peer_pause(p, backoff);
    }
}

static struct peer *find_peer(struct mlink *l, uint32_t node)
{
    for (size_t i = 0; i < l->npeers; i++)
        if (l->peers[i]->node == node)
            return l->peers[i];
    return NULL;
}

static struct peer *add_peer(struct mlink *l, uint32_t node)
{
    if (l->npeers == PEERS_MAX)
        return NULL;
    struct peer *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    *p = (struct peer){.l = l, .node = node, .fd = -1, .next_id = 1};
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->send_mu, NULL);
    /* peer_pause's deadline is on the monotonic clock; on the default
     * (realtime) one it would be long past, and a refused peer retried
     * in a busy loop. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&p->thread, NULL, peer_main, p) != 0) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->send_mu);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    l->peers[l->npeers++] = p;
    return p;
}

static void set_wanted(struct peer *p, const char *addr)
{
    pthread_mutex_lock(&p->mu);
    bool moved = addr && strcmp(p->addr, addr) != 0;
    if (addr)
        snprintf(p->addr, sizeof p->addr, "%s", addr);
    p->wanted = addr != NULL;
    if ((moved || !p->wanted) && p->fd >= 0)
        shutdown(p->fd, SHUT_RDWR);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void mlink_set_peers(struct mlink *l, const struct mlink_peer *peers, size_t n)
{
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < n; i++) {
        if (peers[i].node == l->p.self || peers[i].addr[0] == '\0')
            continue;
        struct peer *p = find_peer(l, peers[i].node);
        if (!p && !(p = add_peer(l, peers[i].node))) {
            qb_log(LOG_ERR, "mirror: node %u: can't start its link", peers[i].node);
            continue;
        }
        set_wanted(p, peers[i].addr);
    }
    for (size_t i = 0; i < l->npeers; i++) {
        bool listed = false;
        for (size_t j = 0; j < n; j++)
            listed |= peers[j].node == l->peers[i]->node && peers[j].addr[0] != '\0';
        if (!listed)
            set_wanted(l->peers[i], NULL);
    }
    /* A peer's connection from before it left (a cut) may still hold its
     * writes in TCP buffers; they must not land after the resync that
     * replaced them: it reconnects once it is a member again. */
    for (struct mlink_conn *c = l->conns; c; c = c->next) {
        bool listed = c->peer == 0;
        for (size_t j = 0; j < n && !listed; j++)
            listed = peers[j].node == c->peer;
        if (!listed)
            drop_conn(c);
    }
    pthread_mutex_unlock(&l->mu);
}

static struct peer *lookup(struct mlink *l, uint32_t node)
{
    pthread_mutex_lock(&l->mu);
    struct peer *p = find_peer(l, node);
    pthread_mutex_unlock(&l->mu);
    return p;
}

bool mlink_connected(struct mlink *l, uint32_t node)
{
    struct peer *p = lookup(l, node);
    if (!p)
        return false;
    pthread_mutex_lock(&p->mu);
    bool up = p->up;
    pthread_mutex_unlock(&p->mu);
    return up;
}

bool mlink_wait_connected(struct mlink *l, uint32_t node, unsigned ms)
{
    for (unsigned waited = 0; waited < ms; waited += 10) {
        if (mlink_connected(l, node))
            return true;
        poll(NULL, 0, 10);
    }
    return mlink_connected(l, node);
}

/* Requests gathered on this thread (mlink_gather_begin), each holding a
 * count of its wait so it outlives its caller's release until sent. Their
 * payloads are copied into buf: the caller's buffer is reused for the next
 * request before the gathering ends. */
#define GATHER_MAX 64
#define GATHER_BUF (256 * 1024)
static __thread struct {
    bool on;
    unsigned n;
    struct {
        struct peer *p;
        struct pending *x;
        uint64_t session;
        const char *payload;
    } q[GATHER_MAX];
    char *buf;
    size_t used;
} gathered;

/* Each thread's buffer is freed as the thread ends, through this key: NBD
 * threads come and go with their clients, and each kept its 256 KiB. */
static pthread_key_t gather_key;
static pthread_once_t gather_once = PTHREAD_ONCE_INIT;
static int gather_key_err;

static void gather_key_create(void)
{
    gather_key_err = pthread_key_create(&gather_key, free);
    if (gather_key_err != 0)
        qb_log(LOG_WARNING, "mirror: no thread key for gathering: %s; requests go one by one",
               strerror(gather_key_err));
}

/* This thread's buffer; NULL if it can't have one (then nothing is
 * gathered). */
static char *gather_buf(void)
{
    if (gathered.buf)
        return gathered.buf;
    if (pthread_once(&gather_once, gather_key_create) != 0 || gather_key_err != 0)
        return NULL;
    char *buf = malloc(GATHER_BUF);
    if (buf && pthread_setspecific(gather_key, buf) != 0) {
        free(buf);
        buf = NULL;
    }
    return gathered.buf = buf;
}

/* Sends the gathered requests of the first one's peer in one write; those
 * of a connection that broke meanwhile have already failed. */
static void flush_one_peer(void)
{
    struct peer *p = gathered.q[0].p;
    uint64_t session = gathered.q[0].session;
    struct iovec iov[2 * GATHER_MAX];
    struct pending *mine[GATHER_MAX];
    int niov = 0, n = 0;
    unsigned keep = 0;
    for (unsigned i = 0; i < gathered.n; i++) {
        if (gathered.q[i].p != p) {
            gathered.q[keep++] = gathered.q[i];
            continue;
        }
        struct mlink_op *op = gathered.q[i].x->op;
        mine[n++] = gathered.q[i].x;
        iov[niov++] = (struct iovec){&op->req, sizeof op->req};
        if (op->req.payload)
            iov[niov++] = (struct iovec){(void *)gathered.q[i].payload, op->req.payload};
    }
    gathered.n = keep;
    if (keep == 0)
        gathered.used = 0;
    pthread_mutex_lock(&p->mu);
    bool same = p->session == session && p->up;
    int fd = p->fd;
    pthread_mutex_lock(&p->send_mu);
    pthread_mutex_unlock(&p->mu);
    if (same && mstream_writev(fd, iov, niov) < 0)
        shutdown(fd, SHUT_RDWR);
    pthread_mutex_unlock(&p->send_mu);
    for (int i = 0; i < n; i++)
        batch_done(mine[i]->wait);
}

static void flush_gathered(void)
{
    while (gathered.n > 0)
        flush_one_peer();
}

/* Whether x can be gathered: an asynchronous request whose payload fits
 * what is left of the buffer (flushed first if need be). */
static bool gather(const struct pending *x)
{
    uint32_t len = mwire_request_payload(&x->op->req);
    if (!gathered.on || !x->wait->done || len > GATHER_BUF) {
        flush_gathered(); /* in order, and a synchronous send never waits on itself */
        return false;
    }
    if (!gather_buf())
        return false;
    if (gathered.n == GATHER_MAX || GATHER_BUF - gathered.used < len)
        flush_gathered();
    return true;
}

void mlink_gather_begin(void)
{
    gathered.on = true;
}

void mlink_gather_end(void)
{
    flush_gathered();
    gathered.on = false;
}

/* Queues x on p and sends its request, or gathers it; a failed send cuts
 * the connection, which fails x through peer_down. */
static void submit(struct peer *p, struct pending *x)
{
    struct mlink_op *op = x->op;
    bool gathering = gather(x);
    pthread_mutex_lock(&p->mu);
    if (!p->up || p->l->stopping) {
        pthread_mutex_unlock(&p->mu);
        op->result = p->l->stopping ? -ESHUTDOWN : -ENOTCONN;
        batch_done(x->wait);
        return;
    }
    x->id = p->next_id++;
    clock_gettime(CLOCK_MONOTONIC, &x->sent);
    x->next = NULL;
    if (p->tail)
        p->tail->next = x;
    else
        p->head = x;
    p->tail = x;
    int fd = p->fd;
    op->req.id = x->id;
    op->req.payload = mwire_request_payload(&op->req);
    if (gathering) {
        char *copy = gathered.buf + gathered.used;
        gathered.q[gathered.n++] = (typeof(gathered.q[0])){p, x, p->session, copy};
        pthread_mutex_unlock(&p->mu);
        memcpy(copy, op->payload, op->req.payload);
        gathered.used += op->req.payload;
        mwire_seal(&op->req, copy);
        atomic_fetch_add(&x->wait->left, 1);
        return;
    }
    pthread_mutex_lock(&p->send_mu);
    pthread_mutex_unlock(&p->mu);
    int r = mstream_send(fd, &op->req, op->payload);
    if (r < 0)
        shutdown(fd, SHUT_RDWR);
    pthread_mutex_unlock(&p->send_mu);
}

static void send_all(struct mlink *l, struct mlink_op *ops, size_t n, struct mlink_wait *w)
{
    w->extra = n <= MLINK_WAIT_SLOTS ? NULL : calloc(n, sizeof *w->extra);
    struct pending *xs = w->extra ? w->extra : w->slots;
    for (size_t i = 0; i < n; i++) {
        ops[i].result = 0;
        ops[i].reply_len = 0;
        if (n > MLINK_WAIT_SLOTS && !w->extra) {
            ops[i].result = -ENOMEM;
            batch_done(w);
            continue;
        }
        xs[i] = (struct pending){.op = &ops[i], .wait = w};
        struct peer *p = lookup(l, ops[i].peer);
        if (p) {
            submit(p, &xs[i]);
        } else {
            ops[i].result = -ENOTCONN;
            batch_done(w);
        }
    }
    atomic_fetch_add(&l->sent, n);
}

void mlink_send(struct mlink *l, struct mlink_op *ops, size_t n, struct mlink_wait *w)
{
    atomic_init(&w->left, n);
    w->done = NULL;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    send_all(l, ops, n, w);
}

void mlink_wait(struct mlink_wait *w)
{
    pthread_mutex_lock(&w->mu);
    while (atomic_load(&w->left) > 0)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->extra);
}

void mlink_send_async(struct mlink *l, struct mlink_op *ops, size_t n, struct mlink_wait *w,
                      void (*done)(struct mlink_wait *w))
{
    atomic_init(&w->left, n + 1);
    w->done = done;
    send_all(l, ops, n, w);
}

void mlink_release(struct mlink_wait *w)
{
    batch_done(w);
}

void mlink_call(struct mlink *l, struct mlink_op *ops, size_t n)
{
    struct mlink_wait w;
    mlink_send(l, ops, n, &w);
    mlink_wait(&w);
}

void mlink_stats(struct mlink *l, struct mlink_stats *out)
{
    *out = (struct mlink_stats){
        .requests_sent = atomic_load(&l->sent),
        .requests_served = atomic_load(&l->served),
        .refused = atomic_load(&l->refused),
    };
}

/* ---- life cycle ------------------------------------------------------------- */

int mlink_start(const struct mlink_params *p, struct mlink **out)
{
    struct mlink *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    l->p = *p;
    snprintf(l->cluster, sizeof l->cluster, "%s", p->cluster);
    l->secret = *p->secret;
    l->p.secret = &l->secret;
    l->p.cluster = l->cluster;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->conns_cv, NULL);
    l->listen_fd = netaddr_listen(p->listen, 64, "mirror listen");
    int r = l->listen_fd < 0 ? l->listen_fd : 0;
    if (r == 0 && (r = -pthread_create(&l->accept_thread, NULL, accept_main, l)) < 0)
        close(l->listen_fd);
    if (r < 0) {
        qb_log(LOG_ERR, "mirror: listen %s: %s", p->listen, strerror(-r));
        pthread_cond_destroy(&l->conns_cv);
        pthread_mutex_destroy(&l->mu);
        free(l);
        return r;
    }
    qb_log(LOG_INFO, "mirror: listening on %s", p->listen);
    *out = l;
    return 0;
}

void mlink_stop(struct mlink *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stopping = true;
    for (struct mlink_conn *c = l->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
    for (size_t i = 0; i < l->npeers; i++)
        set_wanted(l->peers[i], NULL);
    pthread_mutex_unlock(&l->mu);
    shutdown(l->listen_fd, SHUT_RDWR);
    pthread_join(l->accept_thread, NULL);
    close(l->listen_fd);
    pthread_mutex_lock(&l->mu);
    while (l->conns)
        pthread_cond_wait(&l->conns_cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
    for (size_t i = 0; i < l->npeers; i++) {
        struct peer *p = l->peers[i];
        pthread_join(p->thread, NULL);
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->send_mu);
        pthread_mutex_destroy(&p->mu);
        free(p);
    }
    pthread_cond_destroy(&l->conns_cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
