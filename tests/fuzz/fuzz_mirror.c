/* fuzz_mirror.c - libFuzzer target for the mirror link's message checks and
 * the handshake steps that take a peer's bytes.
 *
 * An input is one control byte and then a stream of messages as a peer
 * would send them: a 56-byte header and its payload, repeated. Each header
 * goes through mwire_check_header() and, if it passes, its payload (copied
 * to a buffer of exactly that size, so ASan sees any overread) through
 * mwire_check_payload(). Accepted messages drive one server side (HELLO,
 * AUTH) and one client side (CHALLENGE) of a handshake, and each REPLY is
 * matched against the message before it. Any refusal ends the stream, as it
 * ends a connection.
 *
 * Random bytes rarely get two CRCs right, so bit 0 of the control byte has
 * each header sealed (its crcs recomputed, its payload clamped to what the
 * input holds) before the check: the mutator then explores the per-type
 * rules instead of the CRCs. The seeds (tests/fuzz/mirror-seeds/) are such
 * streams: a handshake, and each request with its reply, sealed and raw.
 */
#include "mirror/auth.h"
#include "mirror/wire.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
        ret = mwire_check_reply(&l->last, h, &why);
    else if (ret == 0)
        ret = handshake(l, h, payload);
    l->last = *h;
    free(payload);
    return ret == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool seal = data[0] & 1;
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
