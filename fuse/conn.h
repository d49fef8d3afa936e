/* conn.h - one libnbd connection to one node, with every wait bounded.
 *
 * libnbd's synchronous calls wait as long as TCP does: minutes for a node
 * that was powered off or cut from the network. vsan-fuse must give up on
 * such a node in seconds and go to another replica, so everything here is
 * libnbd's asynchronous API polled against a deadline (milliseconds on the
 * monotonic clock, nc_now_ms()).
 *
 * Errors are -errno. -ENOTCONN and -ETIMEDOUT mean the connection is
 * unusable (closed by the server, broken, or too slow); any other error is
 * the server's answer to the request, the connection still good.
 */
#ifndef VSAN_FUSE_CONN_H
#define VSAN_FUSE_CONN_H

#include "fuse/replicas.h"

#include <libnbd.h>

#include <stdbool.h>
#include <stdint.h>

int64_t nc_now_ms(void);

/* TLS for every connection made from now on (vsan-fuse's --tls-*
 * options): with certificates (a directory with ca-cert.pem and, for
 * servers that verify clients, client-cert.pem and client-key.pem) or a
 * PSK file (psktool's format; username picks the key, libnbd's default
 * is the login name), TLS is required and the server's certificate is
 * verified against the address connected to. All NULL: plain. Called
 * once, before any connection. */
struct nc_tls {
    const char *certificates;
    const char *psk_file;
    const char *username;
};
void nc_set_tls(const struct nc_tls *tls);

/* What the server said about the export when we connected. */
struct nc_info {
    uint64_t size;
    bool multi_conn;
    bool can_flush, can_trim, can_zero;
    uint32_t max_request; /* the largest READ/WRITE to send */
    char description[4097];
};

/* Connects to export on n and negotiates. info may be NULL. On failure the
 * reason is left in err (libnbd's message). */
int nc_connect(const struct vr_node *n, const char *export, int64_t deadline,
               struct nbd_handle **out, struct nc_info *info, char *err, size_t errlen);

/* Waits for the command cookie (from an nbd_aio_* call) to complete. */
int nc_wait(struct nbd_handle *h, int64_t cookie, int64_t deadline);

/* Lists the exports of n: fn(arg, name, description) for each, until it
 * returns non-zero. */
int nc_list(const struct vr_node *n, int64_t deadline,
            int (*fn)(void *arg, const char *name, const char *description), void *arg, char *err,
            size_t errlen);

/* Whether an error means "this node can't serve now: try another". */
bool nc_failover_error(int err);

#endif
