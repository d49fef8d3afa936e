/* conn_io.c - reading and writing a connection's byte stream.
 *
 * Reads go through a 64 KiB buffer so that a client with many requests in
 * flight costs one read(2) per batch rather than two per request (header,
 * then payload). Large payloads bypass the buffer once it is drained, so a
 * 1 MiB write is copied once, from the socket into its own buffer. Writes
 * are whole writev(2) calls retried on short writes; callers serialise them.
 *
 * read/write rather than recv/send, so the fuzzer can feed a plain file.
 *
 * During the handshake each read and write first waits with poll() for
 * what is left of the handshake's one deadline, so a client trickling a
 * byte at a time is cut when the handshake as a whole took too long.
 */
#include "nbd-server/conn.h"
#include "common/iov.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
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

static int fill(struct nbd_conn *c)
{
    if (c->in_start == c->in_end)
        c->in_start = c->in_end = 0;
    for (;;) {
        if (ready(c, c->in_fd, POLLIN) < 0)
            return -1;
        ssize_t n = read(c->in_fd, c->in + c->in_end, CONN_INBUF_SIZE - c->in_end);
        if (n > 0) {
            c->in_end += (size_t)n;
            return 0;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            qb_log(LOG_DEBUG, "nbd %s: read: %s", c->peer, strerror(errno));
        return -1;
    }
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
        if (ready(c, c->in_fd, POLLIN) < 0)
            return -1;
        ssize_t n = read(c->in_fd, buf, len);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            qb_log(LOG_DEBUG, "nbd %s: read: %s", c->peer, strerror(errno));
        return -1;
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
 * SIGPIPE: the daemon's disposition of signals is not ours to rely on. */
static ssize_t out_vec(struct nbd_conn *c, struct iovec *iov, int iovcnt)
{
    if (!c->out_is_socket)
        return writev(c->out_fd, iov, iovcnt);
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
    /* In the handshake, never block past what poll() allowed. */
    return sendmsg(c->out_fd, &m, MSG_NOSIGNAL | (c->handshaking ? MSG_DONTWAIT : 0));
}

int conn_writev(struct nbd_conn *c, struct iovec *iov, int iovcnt)
{
    while (iovcnt > 0) {
        if (ready(c, c->out_fd, POLLOUT) < 0) {
            atomic_store(&c->dead, true);
            return -1;
        }
        ssize_t n = out_vec(c, iov, iovcnt);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
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
