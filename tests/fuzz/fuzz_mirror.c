/* fuzz_mirror.c - libFuzzer target for the mirror link's message checks, the
 * handshake steps that take a peer's bytes, and the link's server side.
 *
 * An input is one control byte and then a stream of messages as a peer
 * would send them: a 56-byte header and its payload, repeated.
 *
 * Bit 1 of the control byte clear: each header goes through
 * mwire_check_header() and, if it passes, its payload (copied to a buffer
 * of exactly that size, so ASan sees any overread) through
 * mwire_check_payload(). Accepted messages drive one server side (HELLO,
 * AUTH) and one client side (CHALLENGE) of a handshake, and each REPLY is
 * matched against the message before it (an EXTENTS or SNAP_EXTENTS
 * answer's records too). Any refusal ends the stream, as it ends a connection.
 *
 * Bit 1 set: the stream goes over TCP to a real mirror link (link.c) that
 * listens on loopback and serves requests with a fake backend: its
 * handshake reads the stream, unauthenticated; or, with bit 2 set too, the
 * fuzzer first authenticates as node 1 of the cluster (as a peer would) and
 * the stream is served as requests. The fuzzer then hangs up its sending
 * side and reads until the link closes the connection.
 *
 * Random bytes rarely get two CRCs right, so bit 0 of the control byte has
 * each header sealed (its crcs recomputed, its payload clamped to what the
 * input holds) before the check: the mutator then explores the per-type
 * rules instead of the CRCs. The seeds (tests/fuzz/mirror-seeds/) are such
 * streams: a handshake, and each request with its reply, sealed and raw;
 * and the same over the link, unauthenticated and authenticated.
 */
#include "mirror/auth.h"
#include "mirror/link.h"
#include "mirror/stream.h"
#include "mirror/wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SELF 2
#define PEER 1
#define CLUSTER "fuzz"

struct link {
    struct mauth server, client;
    struct mwire_header last; /* the message a REPLY answers */
    const struct mauth_secret *secret;
};

static const struct mauth_secret *secret(void)
{
    static struct mauth_secret s = {.key = "a fuzzing secret of 32 bytes....", .len = 32};
    return &s;
}

/* Runs a handshake step on an accepted message; -errno when it refuses. */
static int handshake(struct link *l, const struct mwire_header *h, const uint8_t *payload)
{
    char err[256];
    switch (h->type) {
    case MW_HELLO: {
        struct mw_hello in;
        struct mw_challenge out;
        memcpy(&in, payload, sizeof in);
        return mauth_server_challenge(&l->server, l->secret, CLUSTER, SELF, &in, &out, err,
                                      sizeof err);
    }
    case MW_CHALLENGE: {
        struct mw_challenge in;
        struct mw_auth out;
        memcpy(&in, payload, sizeof in);
        return mauth_client_auth(&l->client, &in, SELF, &out, err, sizeof err);
    }
    case MW_AUTH: {
        struct mw_auth in;
        memcpy(&in, payload, sizeof in);
        return mauth_server_verify(&l->server, &in, err, sizeof err);
    }
    default:
        return 0;
    }
}

/* A REPLY against the message before it, and an EXTENTS (or SNAP_EXTENTS)
 * answer's records
 * (copied, as the asker receives them into its own buffer). */
static int check_reply(struct link *l, const struct mwire_header *h, const uint8_t *payload,
                       const char **why)
{
    int ret = mwire_check_reply(&l->last, h, why);
    bool extents = l->last.type == MW_EXTENTS || l->last.type == MW_SNAP_EXTENTS;
    if (ret < 0 || !extents || h->arg != 0)
        return ret;
    size_t n = h->payload / sizeof(struct mw_extent);
    struct mw_extent *rec = malloc(n * sizeof *rec);
    if (!rec)
        abort();
    memcpy(rec, payload, n * sizeof *rec);
    ret = mwire_check_extents(&l->last, rec, n, why);
    free(rec);
    return ret;
}

/* Checks one message and acts on it; false ends the stream. */
static bool message(struct link *l, struct mwire_header *h, const uint8_t *data, size_t avail,
                    bool seal)
{
    const char *why;
    if (seal) {
        if (h->payload > avail)
            h->payload = (uint32_t)avail;
        mwire_seal(h, data);
    }
    if (mwire_check_header(h, &why) < 0 || h->payload > avail)
        return false;
    uint8_t *payload = malloc(h->payload ? h->payload : 1);
    if (!payload)
        abort();
    memcpy(payload, data, h->payload);
    int ret = mwire_check_payload(h, payload, &why);
    if (ret == 0 && h->type == MW_REPLY)
        ret = check_reply(l, h, payload, &why);
    else if (ret == 0)
        ret = handshake(l, h, payload);
    l->last = *h;
    free(payload);
    return ret == 0;
}

/* ---- the link's server side ------------------------------------------- */

static char zeroes[64 * 1024];

/* The fake backend: answers what carries a payload with zeroes of the size
 * due (small ones only), everything else with success. */
static int serve(void *ctx, struct mlink_call *call)
{
    (void)ctx;
    const struct mwire_header *h = call->req;
    size_t len = h->type == MW_READ || h->type == MW_SNAP_READ ? h->length
                 : h->type == MW_CSUM                          ? mwire_csum_reply_size(h->length)
                 : h->type == MW_SNAP_CHANGED                  ? mwire_changed_reply_size(h->length)
                 : h->type == MW_DIRTY                         ? 8
                                                               : 0;
    if (len == 0)
        return 0;
    if (len > sizeof zeroes)
        return -EINVAL;
    return mlink_reply(call, 0, zeroes, len);
}

/* The link, started once on a free loopback port: that port. */
static uint16_t link_port(void)
{
    static uint16_t port;
    static struct mlink *l;
    if (l)
        return port;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
        abort();
    close(fd);
    port = ntohs(sa.sin_port);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
    struct mlink_params p = {
        .listen = addr,
        .cluster = CLUSTER,
        .self = SELF,
        .secret = secret(),
        .timeout_ms = 2000,
        .serve = serve,
    };
    if (mlink_start(&p, &l) < 0)
        abort();
    return port;
}

/* A connection to the link. The link closes first, so each connection
 * leaves a TIME_WAIT behind for a minute: at hundreds of inputs a second
 * one source address would run out of ports, so they rotate over 127/8. */
static int connect_link(void)
{
    static uint32_t n;
    struct sockaddr_in src = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(0x7f000002u + n++ % 0xfffff0u)};
    struct sockaddr_in dst = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                              .sin_port = htons(link_port())};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof src) < 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) {
        perror("fuzz_mirror: connecting to the link");
        abort();
    }
    return fd;
}

/* The client's half of the handshake, as a peer does it. */
static bool authenticate(int fd)
{
    struct mauth a;
    memset(&a, 0, sizeof a);
    struct mw_hello hello;
    struct mw_challenge ch;
    struct mw_auth auth;
    struct mwire_header h;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += 5;
    const char *why;
    char err[256];
    if (mauth_client_hello(&a, secret(), CLUSTER, PEER, &hello) < 0)
        abort();
    mwire_init(&h, MW_HELLO, 0);
    h.payload = sizeof hello;
    if (mstream_send(fd, &h, &hello) < 0 ||
        mstream_recv_small(fd, &deadline, &h, &ch, sizeof ch, &why) < 0 || h.type != MW_CHALLENGE ||
        mauth_client_auth(&a, &ch, SELF, &auth, err, sizeof err) < 0)
        return false;
    mwire_init(&h, MW_AUTH, 0);
    h.payload = sizeof auth;
    return mstream_send(fd, &h, &auth) == 0 &&
           mstream_recv_small(fd, &deadline, &h, NULL, 0, &why) == 0 && h.type == MW_WELCOME;
}

/* Seals every whole header of the stream in place, as message() does. */
static void seal_stream(uint8_t *data, size_t size)
{
    while (size >= sizeof(struct mwire_header)) {
        struct mwire_header h;
        memcpy(&h, data, sizeof h);
        size_t avail = size - sizeof h;
        if (h.payload > avail)
            h.payload = (uint32_t)avail;
        mwire_seal(&h, data + sizeof h);
        memcpy(data, &h, sizeof h);
        data += sizeof h + h.payload;
        size -= sizeof h + h.payload;
    }
}

static void over_the_link(const uint8_t *data, size_t size, bool seal, bool auth)
{
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        abort();
    memcpy(copy, data, size);
    if (seal)
        seal_stream(copy, size);
    int fd = connect_link();
    if (!auth || authenticate(fd)) {
        for (size_t off = 0; off < size;) {
            ssize_t n = send(fd, copy + off, size - off, MSG_NOSIGNAL);
            if (n <= 0)
                break;
            off += (size_t)n;
        }
        shutdown(fd, SHUT_WR);
    }
    char buf[64 * 1024];
    while (read(fd, buf, sizeof buf) > 0)
        ;
    close(fd);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool seal = data[0] & 1;
    if (data[0] & 2) {
        over_the_link(data + 1, size - 1, seal, data[0] & 4);
        return 0;
    }
    data++;
    size--;
    struct link l;
    memset(&l, 0, sizeof l);
    l.secret = secret();
    struct mw_hello hello;
    if (mauth_client_hello(&l.client, l.secret, CLUSTER, PEER, &hello) < 0)
        abort();
    mwire_init(&l.last, MW_FLUSH, 0);
    while (size >= sizeof(struct mwire_header)) {
        struct mwire_header h;
        memcpy(&h, data, sizeof h);
        data += sizeof h;
        size -= sizeof h;
        if (!message(&l, &h, data, size, seal))
            break;
        data += h.payload;
        size -= h.payload;
    }
    return 0;
}
