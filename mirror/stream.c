/* stream.c - buffered message streams of the mirror link (see stream.h). */
#include "mirror/stream.h"

#include "common/iov.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int mstream_init(struct mstream *s, int fd, size_t cap)
{
    *s = (struct mstream){.fd = fd, .cap = cap};
    s->buf = malloc(cap);
    return s->buf ? 0 : -ENOMEM;
}

void mstream_free(struct mstream *s)
{
    free(s->owned);
    free(s->buf);
    s->owned = s->buf = NULL;
}

bool mstream_has_header(const struct mstream *s)
{
    return s->end - s->start >= sizeof(struct mwire_header);
}

bool mstream_peek(const struct mstream *s, size_t *pos, struct mwire_header *h)
{
    const char *why;
    size_t at = s->start + *pos;
    if (at > s->end || s->end - at < sizeof *h)
        return false;
    memcpy(h, s->buf + at, sizeof *h);
    if (mwire_check_header(h, &why) < 0)
        return false;
    *pos += sizeof *h + h->payload;
    return true;
}

/* One read() into the buffer, after moving what is left to its start (so
 * a message no longer than the buffer always fits). */
static int fill(struct mstream *s, bool (*still_ok)(void *), void *arg)
{
    if (s->start > 0) {
        memmove(s->buf, s->buf + s->start, s->end - s->start);
        s->end -= s->start;
        s->start = 0;
    }
    for (;;) {
        ssize_t n = read(s->fd, s->buf + s->end, s->cap - s->end);
        if (n > 0) {
            s->end += (size_t)n;
            return 0;
        }
        if (n == 0)
            return -ECONNRESET;
        if (errno == EINTR)
            continue;
        if ((errno == EAGAIN || errno == EWOULDBLOCK) && still_ok && still_ok(arg))
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
    }
}

/* Copies len bytes out of the stream; a large remainder is read straight
 * into dst rather than through the buffer. */
static int take(struct mstream *s, void *dst, size_t len, bool (*still_ok)(void *), void *arg)
{
    char *p = dst;
    while (len > 0) {
        size_t have = s->end - s->start;
        if (have == 0 && len >= s->cap / 2) {
            ssize_t n = read(s->fd, p, len);
            if (n > 0) {
                p += n;
                len -= (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
        }
        if (have == 0) {
            int r = fill(s, still_ok, arg);
            if (r < 0)
                return r;
            continue;
        }
        size_t n = have < len ? have : len;
        memcpy(p, s->buf + s->start, n);
        s->start += n;
        p += n;
        len -= n;
    }
    return 0;
}

/* The payload of h: in place when it fits the buffer, else allocated. */
static int take_payload(struct mstream *s, const struct mwire_header *h, const void **payload,
                        bool (*still_ok)(void *), void *arg)
{
    if (h->payload <= s->cap) {
        while (s->end - s->start < h->payload) {
            int r = fill(s, still_ok, arg);
            if (r < 0)
                return r;
        }
        *payload = s->buf + s->start;
        s->start += h->payload;
        return 0;
    }
    s->owned = malloc(h->payload);
    if (!s->owned)
        return -ENOMEM;
    *payload = s->owned;
    return take(s, s->owned, h->payload, still_ok, arg);
}

int mstream_recv(struct mstream *s, struct mwire_header *h, const void **payload, const char **why,
                 bool (*still_ok)(void *), void *arg)
{
    free(s->owned);
    s->owned = NULL;
    *payload = NULL;
    int r = take(s, h, sizeof *h, still_ok, arg);
    if (r < 0) {
        *why = strerror(-r);
        return r;
    }
    r = mwire_check_header(h, why);
    if (r < 0 || h->payload == 0)
        return r;
    r = take_payload(s, h, payload, still_ok, arg);
    if (r < 0) {
        *why = r == -ENOMEM ? "out of memory" : strerror(-r);
        *payload = NULL;
        return r;
    }
    r = mwire_check_payload(h, *payload, why);
    if (r < 0)
        *payload = NULL;
    return r;
}

/* Milliseconds left until deadline, rounded up; 0 once it has passed. */
static int ms_left(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ns = (long long)(deadline->tv_sec - now.tv_sec) * 1000000000LL +
                   (deadline->tv_nsec - now.tv_nsec);
    if (ns <= 0)
        return 0;
    long long ms = (ns + 999999) / 1000000;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* Reads exactly len bytes, nothing more, before deadline. */
static int read_exact(int fd, const struct timespec *deadline, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        int left = ms_left(deadline);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = left > 0 ? poll(&pfd, 1, left) : 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ETIMEDOUT;
        ssize_t got = recv(fd, p, len, MSG_DONTWAIT);
        if (got == 0)
            return -ECONNRESET;
        if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (got < 0)
            return -errno;
        p += got;
        len -= (size_t)got;
    }
    return 0;
}

int mstream_recv_small(int fd, const struct timespec *deadline, struct mwire_header *h, void *buf,
                       size_t max, const char **why)
{
    static __thread char why_buf[80];
    int r = read_exact(fd, deadline, h, sizeof *h);
    if (r == 0)
        r = mwire_check_header(h, why);
    else
        *why = r == -ETIMEDOUT ? "the handshake took too long" : strerror(-r);
    if (r < 0)
        return r;
    if (h->payload > max) {
        snprintf(why_buf, sizeof why_buf, "a %s of %u bytes in the handshake",
                 mwire_type_name(h->type), h->payload);
        *why = why_buf;
        return -EPROTO;
    }
    r = read_exact(fd, deadline, buf, h->payload);
    if (r < 0) {
        *why = r == -ETIMEDOUT ? "the handshake took too long" : strerror(-r);
        return r;
    }
    return mwire_check_payload(h, buf, why);
}

int mstream_writev(int fd, struct iovec *iov, int cnt)
{
    while (cnt > 0) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
        ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        iov_advance(&iov, &cnt, (size_t)n);
    }
    return 0;
}

int mstream_send(int fd, struct mwire_header *h, const void *payload)
{
    mwire_seal(h, payload);
    struct iovec iov[2] = {{h, sizeof *h}, {(void *)payload, h->payload}};
    return mstream_writev(fd, iov, h->payload ? 2 : 1);
}
