/* conn.h - one NBD client connection, shared by the handshake, the
 * transmission phase and the server that owns the connection list.
 *
 * A connection is served by several threads in turn (leader/followers):
 * the thread holding rlock is the only reader of the socket and of the
 * input buffer; it parses one request, releases rlock and executes it while
 * another thread becomes the reader. Replies are written under wlock, each
 * as one writev, so they never interleave. The handshake runs before the
 * other threads exist and takes no locks.
 *
 * The rule for replies: only the connection's own threads may block on its
 * socket. Under TLS only they send at all: a record cut short by a full
 * socket must be sent again whole before anything else, so conn_send_other
 * only queues (unless no own thread is left). A reply finished by any other thread (a mirror link's
 * reader completing a write, through nbd_async) goes out with conn_send_other, which never waits:
 * if wlock is busy or the socket full, what is left of the reply joins the output queue, and an own
 * thread sends it (the one holding wlock before it lets go, or the reader, woken by wake_fd). A
 * queue past CONN_OUTQ_MAX means a client that reads no replies: the
 * connection is ended rather than grown or waited for. Whole replies leave
 * in queue order, and a reply cut short is finished before any other, so
 * the chunks of one structured reply never interleave with another's.
 *
 * An own thread may block on its client, but never with a batch open
 * (batch_begin in export.h): the writes gathered in it would wait on a
 * client that may never read, and with them the mirror peers. So while a
 * batch is open a reply is first tried without blocking, and only when
 * wlock is busy or the socket full does the batch end, before the thread
 * blocks (conn_before_blocking).
 */
#ifndef VSAN_NBD_CONN_H
#define VSAN_NBD_CONN_H

#include "nbd-server/export.h"
#include "nbd-server/protocol.h"
#include "nbd-server/server.h"
#include "nbd-server/tls.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <time.h>

#define CONN_INBUF_SIZE (64 * 1024)
/* Writes a connection may have completing asynchronously at once, and
 * their bytes (transmission.c, async_room). */
#define NBD_ASYNC_MAX 128
#define NBD_ASYNC_BYTES_MAX (8u << 20)
/* Reply bytes waiting for an own thread (65536 simple replies): more than
 * any client keeps in flight, so one that reaches it reads no replies. */
#define CONN_OUTQ_MAX (1024 * 1024)
#define NBD_EXPORT_NAME_BUF (NBD_MAX_STRING + 1)
/* Dirty bitmaps one connection may select at once (more: ERR_TOO_BIG);
 * each costs a reply chunk of up to 8 KiB per BLOCK_STATUS. */
#define NBD_META_BITMAPS_MAX 64

struct nbd_conn {
    struct nbd_server *srv;
    const struct nbd_server_config *cfg;
    int in_fd, out_fd;
    bool out_is_socket;
    char peer[64];   /* for log messages: "127.0.0.1:53422" or "unix" */
    char local[64];  /* the address the client reached: "192.0.2.1", "" for unix */
    bool local_root; /* came in by nbd_server_listen_local: root, no TLS */

    /* Set by the handshake once STARTTLS succeeded, NULL before and for
     * plain connections. Then the reader (rlock) receives and the wlock
     * holder sends on it, never two senders at once, and every reply goes
     * through one of c's own threads (see conn_send_other). */
    struct nbd_tls_session *tls;

    /* Set by the handshake, read-only in transmission. */
    struct nbd_export exp;
    bool have_export;
    char export_name[NBD_EXPORT_NAME_BUF];
    uint64_t size;
    uint16_t tflags;
    bool structured; /* structured replies negotiated */
    bool no_zeroes;
    /* The meta contexts SET_META_CONTEXT selected for meta_export. The
     * handshake holds that export open (meta_exp) until GO or EXPORT_NAME
     * of the same name takes it over as exp, so that the bitmap numbers
     * chosen stay valid; GO of another name drops the selection. */
    struct nbd_export meta_exp;
    bool have_meta_exp;
    char meta_export[NBD_EXPORT_NAME_BUF];
    bool meta_allocation;                       /* base:allocation */
    unsigned meta_nbitmaps;                     /* qemu:dirty-bitmap:NAME ... */
    unsigned meta_bitmap[NBD_META_BITMAPS_MAX]; /* ... their numbers in exp */

    /* Set while the handshake runs: every read and write of it waits
     * until this moment at most (CLOCK_MONOTONIC), so the handshake as a
     * whole has one deadline. Only the handshake's thread exists then. */
    bool handshaking;
    struct timespec deadline;

    /* Guarded by rlock: the input buffer and end-of-input state. */
    pthread_mutex_t rlock;
    char *in;
    size_t in_start, in_end;
    bool eof; /* client sent DISC, closed, or broke the protocol */

    /* Guarded by wlock: the output side of the socket. */
    pthread_mutex_t wlock;

    /* Guarded by qlock (taken after wlock, or with wlock only tried): the
     * output queue (see the rule above). owners_gone: no own thread is
     * left to send it, so a reply that can't go at once ends the
     * connection. wake_fd (an eventfd, -1 before transmission) tells the
     * reader that queued bytes wait for an own thread. */
    pthread_mutex_t qlock;
    char *outq;
    size_t outq_len, outq_cap;
    bool owners_gone;
    int wake_fd;
    atomic_bool outq_wanted; /* wake_fd was written: the reader sends first */

    /* One reference for the serving threads together, one per write the
     * backend finishes asynchronously; the last one frees the connection. */
    atomic_uint refs;
    atomic_uint_fast64_t async_bytes; /* payload of the writes completing asynchronously */
    atomic_bool dead;                 /* an I/O error on the socket: every thread stops */
    atomic_bool ending;               /* the next request gets ESHUTDOWN, then input ends */

    /* Guarded by the server's lock. */
    unsigned threads;      /* threads still serving this connection */
    bool serving;          /* in transmission: export_name and the identity are set */
    unsigned ended_epoch;  /* the server's revoke count when the handshake began */
    unsigned revoked;      /* nbd_server_end_clients's mark when it ended c, or 0 */
    struct nbd_conn *next; /* the server's list of connections */
};

/* Reads exactly len bytes (buffered). 0, or -1 at EOF or error (logged at
 * debug level: a client going away is normal). */
int conn_read(struct nbd_conn *c, void *buf, size_t len);
/* Whether len bytes are buffered: conn_read of them won't block. */
bool conn_buffered(const struct nbd_conn *c, size_t len);
/* Reads and drops len bytes without allocating them. */
int conn_discard(struct nbd_conn *c, uint64_t len);
/* Writes all of iov. 0 or -1; on error the connection is marked dead.
 * Callers serialise (the handshake, or under wlock). */
int conn_writev(struct nbd_conn *c, struct iovec *iov, int iovcnt);
int conn_write(struct nbd_conn *c, const void *buf, size_t len);

/* Starts the output queue's wake-up, as transmission begins. 0 or -1. */
int conn_outq_start(struct nbd_conn *c);
/* Sends a reply from one of c's own threads: under wlock, after what is
 * queued, blocking as long as the client makes it (calling the thread's
 * conn_before_blocking hook first). 0 or -1. */
int conn_send_own(struct nbd_conn *c, struct iovec *iov, int iovcnt);
/* Sets what the calling thread runs, once, before its next send would
 * block (waiting for wlock, or for room in the socket): fn(arg), after
 * which the hook is unset. fn NULL unsets it. Until it runs, each send of
 * this thread is tried without blocking first. fn runs with wlock possibly
 * held by this very thread: it may send only with conn_send_other
 * (transmission.c's cork flush, which it runs, finds the cork empty: the
 * cork is emptied before any send that could block). */
void conn_before_blocking(void (*fn)(void *arg), void *arg);
/* Sends a reply from any other thread without ever blocking on c: sent,
 * queued for c's own threads, or (queue full, or no own thread left and
 * the socket full) the connection is ended. */
void conn_send_other(struct nbd_conn *c, struct iovec *iov, int iovcnt);
/* The last own thread, leaving: sends what is queued, blocking, and hands
 * the output over to conn_send_other alone. */
void conn_outq_last_owner(struct nbd_conn *c);

/* Who the client proved to be over TLS (tls.h): a PSK user name or a
 * certificate's subject DN; "root" with NBD_TLS_AUTH_LOCAL on the local
 * socket; "" with NBD_TLS_AUTH_NONE for another plain connection, or TLS
 * without a client certificate. */
const char *conn_identity(const struct nbd_conn *c, enum nbd_tls_auth *auth);
/* c as the catalog sees it (export.h): "anonymous" for a client without an
 * identity, and whether it sees all ([nbd] anonymous, root). */
void conn_client(const struct nbd_conn *c, struct nbd_client *who);

/* Drops a reference; the last one closes and frees c. */
void conn_unref(struct nbd_conn *c);

/* Option negotiation. Returns 0 when the client entered transmission with
 * an export open, -1 when the connection must be closed. */
int nbd_handshake(struct nbd_conn *c);

/* The transmission loop of one serving thread; returns when this thread
 * should stop (end of input, a hard error, or shutdown). */
void nbd_transmission(struct nbd_conn *c);

/* The [nbd] tls mode that applies to c: off on the local socket. */
static inline int conn_tls_mode(const struct nbd_conn *c)
{
    return c->local_root ? NBD_TLS_OFF : c->cfg->tls;
}

/* Server-wide state the protocol needs. */
bool nbd_server_shutting_down(struct nbd_server *srv);
/* The TLS credentials new handshakes use, with a reference for the
 * caller; NULL if none were set. */
struct nbd_tls_creds *nbd_server_tls(struct nbd_server *srv);
const struct nbd_catalog_ops *nbd_server_catalog(struct nbd_server *srv, void **ctx);

#endif
