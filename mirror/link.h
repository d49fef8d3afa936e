/* link.h - the mirror link: authenticated, persistent connections between
 * the mirror engines of every pair of nodes, carrying requests (wire.h).
 *
 * Each node listens on its mirror address and serves the requests peers
 * send it (a write to apply, a range to read, a bitmap to hand over); and it
 * keeps one outgoing connection to every peer it has been told about, over
 * which its own requests go, pipelined: any number in flight, each matched
 * to its reply by id. So a pair of nodes shares two connections, one per
 * direction, and neither side ever waits on the other's requests.
 *
 * Both ends prove they hold the cluster's secret (auth.h) before anything
 * else is said; a peer that fails is refused and logged. What anyone who
 * can reach the mirror port may cost is bounded (docs/ARCHITECTURE.md,
 * invariants 9 and 10): until it has authenticated, a connection is read
 * one fixed-size handshake message at a time, with no buffer of its own (a
 * header that announces anything larger ends it), and the whole handshake
 * must be over within one deadline, the timeout below, however slowly its
 * bytes come; at most MLINK_HANDSHAKES_MAX connections are in the
 * handshake at once, and any beyond are closed as soon as they are
 * accepted (counted as refused, logged at most once a minute). Only an
 * authenticated peer's stream is buffered (256 KiB) and may carry payloads
 * up to the wire's 32 MiB, one message at a time per connection. A
 * malformed message ends its connection (docs/ARCHITECTURE.md, invariant
 * 6); a peer that does not answer within the timeout, or takes none of
 * our bytes for that long (a send timeout on both directions), has its
 * connection cut, which fails everything in flight to it: the caller (the
 * engine) then marks that replica outdated. So no thread blocks on one
 * peer longer than that, and mlink_drop cuts the connection before it
 * waits for its serving thread.
 *
 * Threads: one accepts, one per incoming connection serves its requests in
 * order (so a peer's writes apply in the order it sent them), one per peer
 * connects, reads replies and completes requests; it is the only thread
 * that completes them, so a reply's buffer is never written after its
 * caller has returned. What a completion does on that thread must never
 * block on anything but this link: the NBD replies it sends go out without
 * waiting (conn_send_other in nbd-server/conn.h), since one client that
 * reads nothing would otherwise stall every write to that peer and the
 * peer's timeout, which this thread checks.
 *
 * Batching, so a queue of small writes costs few system calls: messages
 * are read through a buffer (stream.h), many per read(); a serving thread
 * holds back the replies to requests while more are already buffered and
 * sends them in one write; a caller may gather its asynchronous requests
 * (mlink_gather_begin) and send them in one write per peer; and a reply
 * thread tells the caller when it has drained what it read (batch_end),
 * so the work its completions started can be flushed together.
 */
#ifndef VSAN_MIRROR_LINK_H
#define VSAN_MIRROR_LINK_H

#include "mirror/auth.h"
#include "mirror/wire.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct mlink;

/* Incoming connections in the handshake at once; a cluster has at most 32
 * nodes, so every peer can reconnect at the same time. */
#define MLINK_HANDSHAKES_MAX 32

/* One request being served: valid during the serve callback only. */
struct mlink_call {
    uint32_t peer;
    const struct mwire_header *req;
    const void *payload; /* req->payload bytes, checked */
    struct mlink_conn *conn;
    bool replied;
};

struct mlink_params {
    const char *listen; /* HOST:PORT */
    const char *cluster;
    uint32_t self;
    const struct mauth_secret *secret;
    unsigned timeout_ms; /* a request unanswered this long cuts its connection,
                          * and a handshake not over this long after it began */
    /* Serves one request of an authenticated peer, on its connection's
     * thread. Returns 0 or -errno; unless it already answered with
     * mlink_reply(), the link answers with that result and no payload. */
    int (*serve)(void *ctx, struct mlink_call *call);
    void *ctx;
    /* Optional, on each thread that reads a peer's answers: batch_begin
     * once it starts, batch_end whenever it has no whole answer buffered
     * and is about to wait, and as it stops; so work the answers complete
     * (replies to NBD clients) can be gathered in between. */
    void (*batch_begin)(void);
    void (*batch_end)(void);
};

/* Binds the listener and starts serving. -errno, logged. */
int mlink_start(const struct mlink_params *p, struct mlink **out);
/* Closes every connection and joins every thread; requests in flight fail
 * with -ESHUTDOWN first. */
void mlink_stop(struct mlink *l);

/* Stops serving node's connections: a request of node being served is
 * finished first, none after; node reconnects if it still runs. For a
 * node that left the group, whose queued writes must not land late. */
void mlink_drop(struct mlink *l, uint32_t node);

/* Answers call now (err: 0 or -errno; data: the reply payload, or NULL).
 * A serve callback may go on working after it (sync = received). */
int mlink_reply(struct mlink_call *call, int err, const void *data, size_t len);
/* Steps through the requests of call's peer already buffered behind it
 * (not yet served), as mstream_peek: *pos 0 to begin; true while *h is
 * one. For the serve callback, on its own thread. */
bool mlink_ahead(const struct mlink_call *call, size_t *pos, struct mwire_header *h);

struct mlink_peer {
    uint32_t node;
    char addr[128]; /* its mirror address, HOST:PORT */
};

/* The peers to stay connected to (the group's members, this node
 * excluded); links to others are closed, both ways (their incoming
 * connections are dropped as by mlink_drop). Any thread. */
void mlink_set_peers(struct mlink *l, const struct mlink_peer *peers, size_t n);
/* Whether the link to node is up and authenticated. */
bool mlink_connected(struct mlink *l, uint32_t node);
/* Waits up to ms for the link to node to come up. */
bool mlink_wait_connected(struct mlink *l, uint32_t node, unsigned ms);

/* One request to one peer. The caller fills peer, req (type, volume,
 * flags, offset, length, arg: mlink fills id, payload size and crcs),
 * payload for a WRITE or SNAP_* (mwire_request_payload), and reply_buf/reply_max for requests whose
 * answer carries bytes. */
struct mlink_op {
    uint32_t peer;
    struct mwire_header req;
    const void *payload;
    void *reply_buf;
    size_t reply_max;
    /* Results. */
    int result;       /* 0, the peer's -errno, or the link's: -ENOTCONN,
                       * -ECONNRESET, -ETIMEDOUT, -ESHUTDOWN */
    size_t reply_len; /* bytes stored in reply_buf */
};

/* A request in flight; private to link.c. */
struct mlink_pending {
    uint64_t id;
    struct mlink_op *op;
    struct mlink_wait *wait;
    struct timespec sent;
    struct mlink_pending *next;
};

#define MLINK_WAIT_SLOTS 4

/* The requests of one mlink_send, counted down as they complete. A
 * synchronous one lives in the caller's frame until mlink_wait returns; an
 * asynchronous one (mlink_send_async) until its done callback. */
struct mlink_wait {
    atomic_size_t left;
    void (*done)(struct mlink_wait *w); /* NULL: mlink_wait waits */
    pthread_mutex_t mu;                 /* synchronous only: guards left */
    pthread_cond_t cv;
    struct mlink_pending slots[MLINK_WAIT_SLOTS];
    struct mlink_pending *extra; /* more than MLINK_WAIT_SLOTS ops */
};

/* Sends every op to its peer and returns; mlink_wait() then waits until
 * each has its answer or has failed (the caller may do its own part of
 * the work in between). Any thread. */
void mlink_send(struct mlink *l, struct mlink_op *ops, size_t n, struct mlink_wait *w);
void mlink_wait(struct mlink_wait *w);
/* Both at once. */
void mlink_call(struct mlink *l, struct mlink_op *ops, size_t n);

/* Sends like mlink_send, but nobody waits: done(w) runs exactly once, on
 * whichever thread finishes last, when every op has its result and the
 * caller has called mlink_release(w) (so the caller can do its own part
 * in between and still see done run after it). done may free w. */
void mlink_send_async(struct mlink *l, struct mlink_op *ops, size_t n, struct mlink_wait *w,
                      void (*done)(struct mlink_wait *w));
void mlink_release(struct mlink_wait *w);

/* Between these two, on one thread, asynchronous requests are not sent at
 * once but gathered, and go out at mlink_gather_end in one write per peer
 * (or as soon as a synchronous one is sent, in order). The thread must end
 * the gathering before it waits for anything. */
void mlink_gather_begin(void);
void mlink_gather_end(void);

/* Counters for status. */
struct mlink_stats {
    uint64_t requests_sent, requests_served, refused;
};
void mlink_stats(struct mlink *l, struct mlink_stats *out);

#endif
