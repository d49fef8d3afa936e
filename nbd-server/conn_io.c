/* conn_io.c - reading and writing a connection's byte stream.
 *
 * Reads go through a 64 KiB buffer so that a client with many requests in
 * flight costs one read(2) per batch rather than two per request (header,
 * then payload). Large payloads bypass the buffer once it is drained, so a
 * 1 MiB write is copied once, from the socket into its own buffer. Writes
 * are whole writev(2) calls retried on short writes; callers serialise them.
 *
 * The output queue (the rule in conn.h) is here too: replies other threads
 * could not send at once, and the wake-up that makes the reading thread, one
 * of the connection's own, send them when nobody else will; and the hook
 * that ends a thread's batch before it blocks on its client.
 *
 * read/write rather than recv/send, so the fuzzer can feed a plain file.
 *
 * Under TLS (tls.h) every read and write goes through the session without
 * blocking, and the waits are here: the reader is the only receiver, the
 * wlock holder the only sender (GnuTLS allows one of each at once), and a
 * send cut short is finished by the same thread before it lets go of
 * wlock, as GnuTLS requires.
 *
 * During the handshake each read and write first waits with poll() for
 * what is left of the handshake's one deadline, so a client trickling a
 * byte at a time is cut when the handshake as a whole took too long.
 */
#include "nbd-server/conn.h"
#include "common/iov.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <qb/qblog.h>

/* Milliseconds left of the handshake, rounded up; 0 once it is over. */
static int ms_left(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ns = (long long)(deadline->tv_sec - now.tv_sec) * 1000000000LL +
                   (deadline->tv_nsec - now.tv_nsec);
    return ns <= 0 ? 0 : (int)((ns + 999999) / 1000000);
}

/* Outside the handshake 0 at once; in it, 0 once fd is ready for events,
 * -1 (logged) when the handshake's deadline passed first. */
static int ready(struct nbd_conn *c, int fd, short events)
{
    while (c->handshaking) {
        int left = ms_left(&c->deadline);
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = left > 0 ? poll(&pfd, 1, left) : 0;
        if (n > 0)
            return 0;
        if (n < 0 && errno == EINTR)
            continue;
        qb_log(LOG_INFO, "nbd %s: the handshake took longer than %u ms: closing", c->peer,
               c->cfg->handshake_timeout_ms);
        return -1;
    }
    return 0;
}

static void drain_locked(struct nbd_conn *c);

/* The reader, an own thread, sends what other threads queued for it
 * (conn_send_other woke it). */
static void send_queued(struct nbd_conn *c)
{
    uint64_t n;
    /* Non-blocking: EAGAIN only if another reader took it first. */
    if (read(c->wake_fd, &n, sizeof n) < 0 && errno != EAGAIN)
        qb_log(LOG_WARNING, "nbd %s: wake-up: %s", c->peer, strerror(errno));
    atomic_store(&c->outq_wanted, false);
    pthread_mutex_lock(&c->wlock);
    drain_locked(c);
    pthread_mutex_unlock(&c->wlock);
    pthread_mutex_unlock(&c->qlock);
}

/* Waits until there is input, and sends the queued replies whenever
 * wake_fd says they wait for an own thread: the reader is one, and may
 * block on its own client. 0, or -1 if it can't wait. */
static int wait_input(struct nbd_conn *c)
{
    for (;;) {
        struct pollfd p[2] = {{.fd = c->in_fd, .events = POLLIN},
                              {.fd = c->wake_fd, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            qb_log(LOG_WARNING, "nbd %s: poll: %s", c->peer, strerror(errno));
            return -1;
        }
        if (p[1].revents & POLLIN)
            send_queued(c);
        if (p[0].revents)
            return 0;
    }
}

/* Waits until fd is ready: within the handshake's deadline during it,
 * for as long as it takes after. 0, or -1 (logged). */
static int wait_ready(struct nbd_conn *c, int fd, short events)
{
    if (c->handshaking)
        return ready(c, fd, events);
    struct pollfd p = {.fd = fd, .events = events};
    while (poll(&p, 1, -1) < 0) {
        if (errno != EINTR) {
            qb_log(LOG_WARNING, "nbd %s: poll: %s", c->peer, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* Whether reads may block in read(2): a plain connection before
 * transmission (or the fuzzer's file), which ready() bounds. A socket in
 * transmission, and any TLS session, is read without blocking, and
 * waited for here. */
static bool reads_block(const struct nbd_conn *c)
{
    return !c->tls && (c->wake_fd < 0 || !c->out_is_socket || c->in_fd != c->out_fd);
}

static ssize_t recv_now(struct nbd_conn *c, void *buf, size_t len)
{
    if (c->tls)
        return nbd_tls_recv(c->tls, buf, len, c->peer);
    return recv(c->in_fd, buf, len, MSG_DONTWAIT);
}

/* Reads what comes, up to len bytes: > 0, or -1 at EOF or error (logged
 * at debug level: a client going away is normal). In transmission on a
 * socket, it first tries without blocking (the common case under load: one
 * system call), sending first what other threads queued for the reader. */
static ssize_t read_in(struct nbd_conn *c, void *buf, size_t len)
{
    bool blocking = reads_block(c);
    for (;;) {
        ssize_t n;
        if (blocking) {
            if (ready(c, c->in_fd, POLLIN) < 0)
                return -1;
            n = read(c->in_fd, buf, len);
        } else {
            if (c->wake_fd >= 0 && atomic_load(&c->outq_wanted))
                send_queued(c);
            n = recv_now(c, buf, len);
        }
        if (n > 0)
            return n;
        if (n == 0)
            return -1;
        if (errno == EINTR)
            continue;
        if (!blocking && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = c->wake_fd >= 0 ? wait_input(c) : wait_ready(c, c->in_fd, POLLIN);
            if (r < 0)
                return -1;
            continue;
        }
        qb_log(LOG_DEBUG, "nbd %s: read: %s", c->peer, strerror(errno));
        return -1;
    }
}

static int fill(struct nbd_conn *c)
{
    if (c->in_start == c->in_end)
        c->in_start = c->in_end = 0;
    ssize_t n = read_in(c, c->in + c->in_end, CONN_INBUF_SIZE - c->in_end);
    if (n < 0)
        return -1;
    c->in_end += (size_t)n;
    /* A TLS receive gives one record, about one request, where a plain
     * read takes all that came: read on while records are there, so that
     * requests gather in the buffer as they do plain, and run in batches.
     * An error here is met again by the next read, which reports it. */
    while (c->tls && c->in_end < CONN_INBUF_SIZE &&
           (n = nbd_tls_recv(c->tls, c->in + c->in_end, CONN_INBUF_SIZE - c->in_end, c->peer)) > 0)
        c->in_end += (size_t)n;
    return 0;
}

bool conn_buffered(const struct nbd_conn *c, size_t len)
{
    return c->in_end - c->in_start >= len;
}

static size_t take_buffered(struct nbd_conn *c, void *buf, size_t len)
{
    size_t have = c->in_end - c->in_start;
    size_t n = have < len ? have : len;
    if (buf)
        memcpy(buf, c->in + c->in_start, n);
    c->in_start += n;
    return n;
}

/* Reads straight into buf, for payloads larger than the buffer. */
static int read_direct(struct nbd_conn *c, char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = read_in(c, buf, len);
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int conn_read(struct nbd_conn *c, void *buf, size_t len)
{
    if (len == 0) /* a zero-length WRITE has no buffer */
        return 0;
    char *p = buf;
    size_t got = take_buffered(c, p, len);
    p += got;
    len -= got;
    if (len >= CONN_INBUF_SIZE / 2)
        return read_direct(c, p, len);
    while (len > 0) {
        if (fill(c) < 0)
            return -1;
        got = take_buffered(c, p, len);
        p += got;
        len -= got;
    }
    return 0;
}

int conn_discard(struct nbd_conn *c, uint64_t len)
{
    while (len > 0) {
        if (c->in_start == c->in_end && fill(c) < 0)
            return -1;
        len -= take_buffered(c, NULL, len > SIZE_MAX ? SIZE_MAX : (size_t)len);
    }
    return 0;
}

/* sendmsg on sockets so a client that went away costs an EPIPE, not a
 * SIGPIPE: the daemon's disposition of signals is not ours to rely on.
 * TLS sends never block (tls.h): an EAGAIN must be followed by the same
 * call. */
static ssize_t out_vec(struct nbd_conn *c, struct iovec *iov, int iovcnt, int flags)
{
    if (c->tls)
        return nbd_tls_send(c->tls, iov, iovcnt, c->peer);
    if (!c->out_is_socket)
        return writev(c->out_fd, iov, iovcnt);
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
    /* In the handshake, never block past what poll() allowed. */
    return sendmsg(c->out_fd, &m, MSG_NOSIGNAL | flags | (c->handshaking ? MSG_DONTWAIT : 0));
}

/* What the calling thread must do before it blocks on its client (the
 * end of its batch, conn_before_blocking), or nothing. */
static __thread struct {
    void (*fn)(void *arg);
    void *arg;
} before_blocking;

void conn_before_blocking(void (*fn)(void *arg), void *arg)
{
    before_blocking.fn = fn;
    before_blocking.arg = arg;
}

/* The thread is about to block: runs what it must do first, once. */
static void about_to_block(void)
{
    void (*fn)(void *) = before_blocking.fn;
    before_blocking.fn = NULL;
    if (fn)
        fn(before_blocking.arg);
}

/* While a hook is set, each send is first tried without blocking (the
 * socket usually has room: one system call, as without); only when it
 * would block does the hook run, and the send then blocks. (Outputs other
 * than sockets, the fuzzer's /dev/null, have no client to wait for.) */
int conn_writev(struct nbd_conn *c, struct iovec *iov, int iovcnt)
{
    while (iovcnt > 0) {
        if (!c->tls && ready(c, c->out_fd, POLLOUT) < 0) {
            atomic_store(&c->dead, true);
            return -1;
        }
        ssize_t n = out_vec(c, iov, iovcnt, before_blocking.fn ? MSG_DONTWAIT : 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            about_to_block();
            if (c->tls && wait_ready(c, c->out_fd, POLLOUT) < 0) {
                atomic_store(&c->dead, true);
                return -1;
            }
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            qb_log(LOG_DEBUG, "nbd %s: write: %s", c->peer, strerror(errno));
            atomic_store(&c->dead, true);
            return -1;
        }
        iov_advance(&iov, &iovcnt, (size_t)n);
    }
    return 0;
}

int conn_write(struct nbd_conn *c, const void *buf, size_t len)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    return conn_writev(c, &iov, 1);
}

/* ---- the output queue --------------------------------------------------- */

int conn_outq_start(struct nbd_conn *c)
{
    c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->wake_fd >= 0)
        return 0;
    qb_log(LOG_WARNING, "nbd %s: export \"%s\": eventfd: %s; closing", c->peer, c->export_name,
           strerror(errno));
    return -1;
}

/* Ends c for good: its threads stop, one blocked on its socket wakes. */
static void conn_end(struct nbd_conn *c, const char *why)
{
    if (!atomic_exchange(&c->dead, true))
        qb_log(LOG_WARNING, "nbd %s: export \"%s\": %s: disconnecting", c->peer, c->export_name,
               why);
    shutdown(c->in_fd, SHUT_RDWR);
    if (c->out_fd != c->in_fd)
        shutdown(c->out_fd, SHUT_RDWR);
}

/* With wlock held: sends the queue until it is empty, blocking, and
 * returns with qlock held, so that the caller lets go of wlock before
 * anything more can be queued behind it. A dead connection's queue is
 * dropped. */
static void drain_locked(struct nbd_conn *c)
{
    pthread_mutex_lock(&c->qlock);
    while (c->outq_len > 0) {
        char *q = c->outq;
        size_t len = c->outq_len;
        c->outq = NULL;
        c->outq_len = c->outq_cap = 0;
        pthread_mutex_unlock(&c->qlock);
        /* A failure marks c dead (conn_writev): the rest is dropped. */
        if (!atomic_load(&c->dead) && conn_write(c, q, len) < 0)
            qb_log(LOG_DEBUG, "nbd %s: %zu queued reply bytes not sent", c->peer, len);
        free(q);
        pthread_mutex_lock(&c->qlock);
    }
}

int conn_send_own(struct nbd_conn *c, struct iovec *iov, int iovcnt)
{
    /* wlock's holder may be blocked on the client: so may we, then. */
    if (pthread_mutex_trylock(&c->wlock) != 0) {
        about_to_block();
        pthread_mutex_lock(&c->wlock);
    }
    drain_locked(c);
    pthread_mutex_unlock(&c->qlock);
    int r = conn_writev(c, iov, iovcnt);
    drain_locked(c);
    pthread_mutex_unlock(&c->wlock);
    pthread_mutex_unlock(&c->qlock);
    return r;
}

/* With wlock held: sends what the socket takes now. 0 (all sent, or the
 * socket is full: iov says what is left), or -1 (c is dead). */
static int send_nowait(struct nbd_conn *c, struct iovec **iov, int *iovcnt)
{
    while (*iovcnt > 0) {
        ssize_t n = out_vec(c, *iov, *iovcnt, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n < 0) {
            qb_log(LOG_DEBUG, "nbd %s: write: %s", c->peer, strerror(errno));
            atomic_store(&c->dead, true);
            return -1;
        }
        iov_advance(iov, iovcnt, (size_t)n);
    }
    return 0;
}

/* With qlock held: appends iov to the queue, within CONN_OUTQ_MAX. */
static int outq_append(struct nbd_conn *c, const struct iovec *iov, int iovcnt)
{
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    if (len > CONN_OUTQ_MAX - c->outq_len)
        return -1;
    if (c->outq_len + len > c->outq_cap) {
        size_t cap = c->outq_cap ? c->outq_cap : 1024;
        while (cap < c->outq_len + len)
            cap *= 2;
        char *q = realloc(c->outq, cap);
        if (!q)
            return -1;
        c->outq = q;
        c->outq_cap = cap;
    }
    for (int i = 0; i < iovcnt; i++) {
        memcpy(c->outq + c->outq_len, iov[i].iov_base, iov[i].iov_len);
        c->outq_len += iov[i].iov_len;
    }
    return 0;
}

void conn_send_other(struct nbd_conn *c, struct iovec *iov, int iovcnt)
{
    pthread_mutex_lock(&c->qlock);
    bool woken = false; /* no own thread holds wlock: the reader must send the rest */
    if (atomic_load(&c->dead))
        goto out;
    /* Under qlock, wlock is held only by an own thread, which looks at the
     * queue before it lets go: so a busy wlock means "queue it". Under
     * TLS a record cut short would have to be finished by the next sender
     * before anything else: only own threads send, unless none is left
     * (then a send cut short ends the connection below). */
    if (c->outq_len == 0 && pthread_mutex_trylock(&c->wlock) == 0) {
        int r = !c->tls || c->owners_gone ? send_nowait(c, &iov, &iovcnt) : 0;
        pthread_mutex_unlock(&c->wlock);
        if (r < 0 || iovcnt == 0)
            goto out;
        woken = true;
    }
    if (c->owners_gone) {
        conn_end(c, "its socket is full and it has stopped sending requests");
        goto out;
    }
    if (outq_append(c, iov, iovcnt) < 0) {
        conn_end(c, "the client reads none of its replies");
        goto out;
    }
    uint64_t one = 1;
    if (woken)
        atomic_store(&c->outq_wanted, true);
    if (woken && write(c->wake_fd, &one, sizeof one) < 0)
        conn_end(c, "its replies can't be handed to its threads");
out:
    pthread_mutex_unlock(&c->qlock);
}

void conn_outq_last_owner(struct nbd_conn *c)
{
    pthread_mutex_lock(&c->wlock);
    drain_locked(c);
    c->owners_gone = true;
    pthread_mutex_unlock(&c->wlock);
    pthread_mutex_unlock(&c->qlock);
}
