/* conn.c - a checker thread's way in to the volume (see conn.h).
 *
 * A request goes out with nbd_aio_pread/nbd_aio_pwrite and nbd_poll() is
 * driven until its completion or the deadline. libnbd negotiates
 * structured replies, so a read is answered the way qemu's or nbdcopy's
 * would be: data and hole chunks, holes filled with zeroes by libnbd.
 */
#include "tests/checker/conn.h"

#include <errno.h>
#include <fcntl.h>
#include <libnbd.h>
#include <time.h>
#include <unistd.h>

int64_t chk_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void chk_sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* libnbd's errno for its last failure in this thread, never 0. */
static int nbd_err(void)
{
    int e = nbd_get_errno();

    return e > 0 ? -e : -EIO;
}

void chk_conn_init(struct chk_conn *c, const char *target)
{
    c->target = target;
    c->h = NULL;
    c->fd = -1;
}

bool chk_conn_open_p(const struct chk_conn *c)
{
    return c->h || c->fd >= 0;
}

void chk_conn_close(struct chk_conn *c)
{
    if (c->h)
        nbd_close(c->h);
    c->h = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* Drives h until the handshake is done or deadline (CLOCK_MONOTONIC ms). */
static int wait_ready(struct nbd_handle *h, int64_t deadline)
{
    for (;;) {
        if (nbd_aio_is_ready(h) > 0)
            return 0;
        if (nbd_aio_is_dead(h) > 0 || nbd_aio_is_closed(h) > 0)
            return -ENOTCONN;
        int64_t left = deadline - chk_now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        if (nbd_poll(h, (int)left) < 0)
            return nbd_err();
    }
}

int chk_conn_open(struct chk_conn *c, unsigned timeout_ms)
{
    if (c->target[0] == '/') {
        c->fd = open(c->target, O_RDWR | O_CLOEXEC);
        return c->fd < 0 ? -errno : 0;
    }
    struct nbd_handle *h = nbd_create();
    int r;

    if (!h)
        return nbd_err();
    if (nbd_aio_connect_uri(h, c->target) < 0)
        r = nbd_err();
    else
        r = wait_ready(h, chk_now_ms() + timeout_ms);
    if (r < 0) {
        nbd_close(h);
        return r;
    }
    c->h = h;
    return 0;
}

/* Drives h until the command cookie completes or timeout_ms pass. */
static int wait_command(struct nbd_handle *h, int64_t cookie, unsigned timeout_ms)
{
    int64_t deadline = chk_now_ms() + timeout_ms;

    if (cookie < 0)
        return nbd_err();
    for (;;) {
        int done = nbd_aio_command_completed(h, (uint64_t)cookie);
        if (done > 0)
            return 0;
        if (done < 0)
            return nbd_err();
        int64_t left = deadline - chk_now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        if (nbd_poll(h, (int)left) < 0)
            return nbd_err();
    }
}

int chk_conn_pwrite(struct chk_conn *c, const void *buf, size_t len, uint64_t offset,
                    unsigned timeout_ms)
{
    if (c->fd >= 0) {
        ssize_t n = pwrite(c->fd, buf, len, (off_t)offset);
        return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
    }
    return wait_command(c->h, nbd_aio_pwrite(c->h, buf, len, offset, NBD_NULL_COMPLETION, 0),
                        timeout_ms);
}

int chk_conn_pread(struct chk_conn *c, void *buf, size_t len, uint64_t offset, unsigned timeout_ms)
{
    if (c->fd >= 0) {
        ssize_t n = pread(c->fd, buf, len, (off_t)offset);
        return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
    }
    return wait_command(c->h, nbd_aio_pread(c->h, buf, len, offset, NBD_NULL_COMPLETION, 0),
                        timeout_ms);
}
