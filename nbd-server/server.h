/* server.h - the NBD server as the daemon sees it: listeners, connections,
 * graceful shutdown. What is served comes from an nbd_catalog (export.h).
 *
 * Threads: each listener has an accept thread; each connection runs its
 * handshake on one thread and then up to `threads` worker threads that take
 * turns reading requests (leader/followers), execute them and send their
 * replies, so replies go out of order and a slow request does not hold the
 * others. All functions here are called from the daemon's main thread.
 *
 * What a client costs before it has chosen an export is bounded: the
 * whole handshake, from the greeting through option haggling to
 * transmission, must be over within handshake_timeout_ms of the accept
 * (one deadline, however slowly the bytes come; not one per read); at most
 * NBD_HANDSHAKES_MAX connections are in the handshake at once, and those
 * beyond it (or beyond max_connections) are closed at once, logged at most
 * once a minute; each buffers at most its 64 KiB input buffer and one
 * option of up to 16 KiB (longer ones are skipped unread into memory and
 * answered ERR_TOO_BIG, past 1 MiB the connection is closed).
 */
#ifndef VSAN_NBD_SERVER_H
#define VSAN_NBD_SERVER_H

#include "nbd-server/export.h"
#include "nbd-server/tls.h"

#include <stdbool.h>
#include <stdint.h>

/* Connections in the handshake at once; more are closed at once. */
#define NBD_HANDSHAKES_MAX 32

struct nbd_server_config {
    uint32_t min_block;            /* advertised minimum block size, power of 2, 1..65536 */
    uint32_t pref_block;           /* preferred block size, power of 2, >= max(min, 512) */
    uint32_t max_payload;          /* largest READ/WRITE payload accepted */
    unsigned threads;              /* worker threads per connection, >= 1 */
    unsigned max_connections;      /* further connections are closed at once */
    unsigned handshake_timeout_ms; /* for the whole handshake, from the accept */
    unsigned shutdown_grace_ms;    /* how long shutdown waits for clients to leave */
    int tls;                       /* enum nbd_tls_mode (tls.h) */
    int anonymous;                 /* enum nbd_anonymous */
};

/* [nbd] anonymous: what a client without an identity (plain, or TLS
 * without a client certificate) sees: every export, or only those granted
 * to "anonymous". DEFAULT: all, unless tls = require. */
enum nbd_anonymous { NBD_ANON_DEFAULT = 0, NBD_ANON_ALL = 1, NBD_ANON_NONE = 2 };

/* The identity of a client without one. */
#define NBD_ANONYMOUS "anonymous"

/* Fills the defaults documented in deploy/vsan.conf.sample. */
void nbd_server_config_defaults(struct nbd_server_config *cfg);

struct nbd_server;

struct nbd_server *nbd_server_new(const struct nbd_server_config *cfg,
                                  const struct nbd_catalog_ops *catalog, void *catalog_ctx);

/* Listens on "HOST:PORT" ("[v6]:PORT" too) or, when addr starts with '/',
 * on a unix socket at that path (replacing a stale one). Returns 0, or
 * -errno with a message logged that names the address. */
int nbd_server_listen(struct nbd_server *srv, const char *addr);

/* Listens on a unix socket at path that only root may use: the socket
 * is made mode 0600 (its directory 0755 if missing) and each client's
 * SO_PEERCRED uid must be 0 (others are closed at once, logged with their
 * uid). Its connections never negotiate TLS, whatever [nbd] tls says, and
 * carry the identity "root" (NBD_TLS_AUTH_LOCAL): the way in for tools on
 * the node itself. A live socket already at path (another server's) is
 * -EADDRINUSE. Returns 0, or -errno with a message logged. */
int nbd_server_listen_local(struct nbd_server *srv, const char *path);

/* Sets the TLS credentials of new handshakes, taking over the caller's
 * reference; those in use by a handshake or a session stay until it ends.
 * With tls on or require, call it before listening. */
void nbd_server_set_tls(struct nbd_server *srv, struct nbd_tls_creds *creds);

/* Stops the listener started on addr (the same string) and closes it;
 * connections it accepted go on. 0 or -ENOENT. */
int nbd_server_unlisten(struct nbd_server *srv, const char *addr);

/* Ends every connection whose local address is the host local (as
 * inet_ntop writes it): its next request is answered ESHUTDOWN and then
 * it closes, so the client reconnects, wherever that address now lives.
 * Returns how many were marked. */
unsigned nbd_server_end_connections(struct nbd_server *srv, const char *local);
/* Ends every connection to export VOL or VOL@SNAP (vol) whose client
 * match(arg, who) says, as nbd_server_end_connections does: a revoked
 * grant. Connections still in the handshake when it runs are checked
 * again as they enter transmission (their export may have been opened
 * under the old grants), and closed if the client would not open it alike
 * now (nbd_catalog_ops.still).
 * *mark: this call's mark for nbd_server_drop_clients. Any thread.
 * Returns how many were marked. */
unsigned nbd_server_end_clients(struct nbd_server *srv, const char *vol,
                                bool (*match)(void *arg, const struct nbd_client *who), void *arg,
                                unsigned *mark);
/* Disconnects the connections ended by nbd_server_end_clients up to the
 * call that returned mark and still there: idle clients, which would
 * otherwise keep their socket, and keep their volume in use, for ever.
 * Returns how many. */
unsigned nbd_server_drop_clients(struct nbd_server *srv, unsigned mark);
/* Disconnects those marked by nbd_server_end_connections that are still
 * there (idle clients); returns how many. */
unsigned nbd_server_drop_connections(struct nbd_server *srv, const char *local);

/* Serves one connected stream on the calling thread until it ends; reads
 * from in_fd and writes to out_fd (the same socket, normally). Used by the
 * accept threads, and by the fuzzer with a file and /dev/null. Closes both. */
void nbd_server_serve(struct nbd_server *srv, int in_fd, int out_fd);

/* Number of connections in transmission or handshake. */
unsigned nbd_server_connections(struct nbd_server *srv);

/* Graceful shutdown as the protocol asks: stop accepting, let in-flight
 * requests finish, answer later ones with ESHUTDOWN, and after the grace
 * period (or once clients have left) close what is left. Returns when every
 * connection is gone. */
void nbd_server_shutdown(struct nbd_server *srv);

void nbd_server_free(struct nbd_server *srv);

#endif
