/* conn.c - a bounded libnbd connection (see conn.h).
 *
 * A handle is driven with nbd_poll until the state we want (ready after
 * OPT_GO, a command completed) or the deadline; at the deadline the handle
 * is left as it is and the caller closes it, which drops the socket.
 */
#include "fuse/conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct nc_tls tls; /* set before any connection, read-only after */

void nc_set_tls(const struct nc_tls *t)
{
    tls = *t;
}

/* 0, or -1 with libnbd's error. */
static int apply_tls(struct nbd_handle *h)
{
    if (!tls.certificates && !tls.psk_file)
        return 0;
    if (nbd_set_tls(h, LIBNBD_TLS_REQUIRE) < 0)
        return -1;
    if (tls.certificates && nbd_set_tls_certificates(h, tls.certificates) < 0)
        return -1;
    if (tls.psk_file && nbd_set_tls_psk_file(h, tls.psk_file) < 0)
        return -1;
    return tls.username ? nbd_set_tls_username(h, tls.username) : 0;
}

int64_t nc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ms_left(int64_t deadline)
{
    int64_t left = deadline - nc_now_ms();
    return left <= 0 ? 0 : left > 60000 ? 60000 : (int)left;
}

static int nbd_err(void)
{
    int e = nbd_get_errno();
    return e > 0 ? -e : -EIO;
}

static void keep_error(char *err, size_t errlen, const char *fallback)
{
    const char *msg = nbd_get_error();
    snprintf(err, errlen, "%s", msg && *msg ? msg : fallback);
}

/* One wait for h to move on: 0 once nbd_poll has run, -ENOTCONN if the
 * connection is gone, -ETIMEDOUT at the deadline. A failed nbd_poll gives
 * -ENOTCONN when lost_on_poll_error, else libnbd's errno: while negotiating
 * that is the server's answer (e.g. -ENOENT, no such export). */
static int poll_once(struct nbd_handle *h, int64_t deadline, bool lost_on_poll_error)
{
    if (nbd_aio_is_dead(h) == 1 || nbd_aio_is_closed(h) == 1)
        return -ENOTCONN;
    int ms = ms_left(deadline);
    if (ms == 0)
        return -ETIMEDOUT;
    if (nbd_poll(h, ms) < 0)
        return lost_on_poll_error ? -ENOTCONN : nbd_err();
    return 0;
}

/* Polls h until done(h) or the connection dies or the deadline passes. */
static int poll_until(struct nbd_handle *h, int (*done)(struct nbd_handle *), int64_t deadline)
{
    int r = 0;
    while (r == 0 && done(h) != 1)
        r = poll_once(h, deadline, false);
    return r;
}

static int start_connect(struct nbd_handle *h, const struct vr_node *n)
{
    if (n->port[0] == '\0')
        return nbd_aio_connect_unix(h, n->host);
    return nbd_aio_connect_tcp(h, n->host, n->port);
}

static void fill_info(struct nbd_handle *h, struct nc_info *info)
{
    int64_t size = nbd_get_size(h);
    int64_t max = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
    info->size = size > 0 ? (uint64_t)size : 0;
    info->multi_conn = nbd_can_multi_conn(h) == 1;
    info->can_flush = nbd_can_flush(h) == 1;
    info->can_trim = nbd_can_trim(h) == 1;
    info->can_zero = nbd_can_zero(h) == 1;
    /* vsand's default max_payload is 32M; a server that says nothing gets
     * what every NBD server must accept. */
    info->max_request = max > 0 ? (max < (32 << 20) ? (uint32_t)max : 32 << 20) : 32 << 20;
    char *d = nbd_get_export_description(h);
    snprintf(info->description, sizeof info->description, "%s", d ? d : "");
    free(d);
}

int nc_connect(const struct vr_node *n, const char *export, int64_t deadline,
               struct nbd_handle **out, struct nc_info *info, char *err, size_t errlen)
{
    struct nbd_handle *h = nbd_create();
    if (!h) {
        keep_error(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int r = 0;
    if (nbd_set_export_name(h, export) < 0 || nbd_set_full_info(h, true) < 0 || apply_tls(h) < 0 ||
        start_connect(h, n) < 0) {
        r = nbd_err();
        keep_error(err, errlen, "connect failed");
    }
    if (r == 0) {
        r = poll_until(h, nbd_aio_is_ready, deadline);
        if (r == -ETIMEDOUT)
            snprintf(err, errlen, "no answer within the time allowed");
        else if (r < 0)
            keep_error(err, errlen, "connection closed during negotiation");
    }
    if (r < 0) {
        nbd_close(h);
        return r;
    }
    if (info)
        fill_info(h, info);
    *out = h;
    return 0;
}

int nc_wait(struct nbd_handle *h, int64_t cookie, int64_t deadline)
{
    if (cookie < 0)
        return nbd_aio_is_ready(h) == 1 ? nbd_err() : -ENOTCONN;
    int r;
    while ((r = nbd_aio_command_completed(h, (uint64_t)cookie)) == 0) {
        int e = poll_once(h, deadline, true);
        if (e < 0)
            return e;
    }
    if (r == 1)
        return 0;
    /* A command failed by a dying connection: the connection's fault, not
     * the server's answer. */
    int e = nbd_err();
    return nbd_aio_is_ready(h) == 1 ? e : -ENOTCONN;
}

struct list_ctx {
    int (*fn)(void *arg, const char *name, const char *description);
    void *arg;
    int stop;
    bool done;
};

static int list_one(void *user, const char *name, const char *description)
{
    struct list_ctx *c = user;
    if (c->stop == 0)
        c->stop = c->fn(c->arg, name, description);
    return 0;
}

static int list_done(void *user, int *error)
{
    struct list_ctx *c = user;
    (void)error;
    c->done = true;
    return 1;
}

/* Polls h until the list reply is complete. */
static int wait_list(struct nbd_handle *h, struct list_ctx *c, int64_t deadline)
{
    int r = 0;
    while (r == 0 && !c->done)
        r = poll_once(h, deadline, true);
    return r;
}

int nc_list(const struct vr_node *n, int64_t deadline,
            int (*fn)(void *arg, const char *name, const char *description), void *arg, char *err,
            size_t errlen)
{
    struct nbd_handle *h = nbd_create();
    if (!h) {
        keep_error(err, errlen, "out of memory");
        return -ENOMEM;
    }
    struct list_ctx ctx = {fn, arg, 0, false};
    int r = nbd_set_opt_mode(h, true) < 0 || apply_tls(h) < 0 || start_connect(h, n) < 0 ? nbd_err()
                                                                                         : 0;
    if (r == 0)
        r = poll_until(h, nbd_aio_is_negotiating, deadline);
    if (r == 0 &&
        nbd_aio_opt_list(h, (nbd_list_callback){.callback = list_one, .user_data = &ctx},
                         (nbd_completion_callback){.callback = list_done, .user_data = &ctx}) < 0)
        r = nbd_err();
    if (r == 0)
        r = wait_list(h, &ctx, deadline);
    if (r == -ETIMEDOUT)
        snprintf(err, errlen, "no answer within the time allowed");
    else if (r < 0)
        keep_error(err, errlen, "listing the exports failed");
    /* A polite goodbye, so the server does not log a client that vanished
     * mid-negotiation; whether it gets there changes nothing for us. */
    if (r == 0 && nbd_aio_opt_abort(h) == 0)
        (void)poll_until(h, nbd_aio_is_closed, nc_now_ms() + 1000);
    nbd_close(h);
    return r < 0 ? r : ctx.stop;
}

bool nc_failover_error(int err)
{
    return err == -ENOTCONN || err == -ETIMEDOUT || err == -ESHUTDOWN || err == -EIO;
}
