/* auth.h - who may open a mirror link: challenge-response over the
 * cluster's shared secret.
 *
 * A mirror link carries writes straight to a peer's disks, so a connection is
 * served only once the other end has proved it holds the cluster's secret
 * (a file every node has, see mauth_load_secret()). The secret itself never
 * crosses the wire; each side proves itself with an HMAC-SHA256 keyed by it:
 *
 *   client -> HELLO      cluster name, client node id, client nonce
 *   server -> CHALLENGE  server node id, server nonce, mac("vsan-mirror server")
 *   client -> AUTH       mac("vsan-mirror client")
 *   server -> WELCOME
 *
 * Both macs cover the label, the cluster name, both node ids and both
 * nonces. Fresh nonces on both sides make an old AUTH or CHALLENGE worthless
 * in a new session, the distinct labels stop either side's mac being
 * reflected back as the other's, and binding the node ids means a node
 * cannot be talked into a link with a different node than it meant to reach.
 * The server proves itself first, so anyone who can reach the mirror port
 * obtains one server mac over known inputs: a passphrase secret must be
 * strong enough to withstand an offline guessing attack on it (32 random
 * bytes are).
 *
 * This file is pure (no sockets, no logging): the link code moves the
 * payloads (wire.h), logs the err strings, and on any failure the server
 * answers the HELLO's id with an MW_REPLY carrying EACCES or EPROTO and
 * closes. Each function returns 0 or -errno: -EACCES for a peer that is not
 * allowed in, -EPROTO for one that does not follow the protocol.
 */
#ifndef VSAN_MIRROR_AUTH_H
#define VSAN_MIRROR_AUTH_H

#include "mirror/wire.h"

#include <stddef.h>
#include <stdint.h>

#define MAUTH_SECRET_MIN 16
#define MAUTH_SECRET_MAX 256

struct mauth_secret {
    uint8_t key[MAUTH_SECRET_MAX];
    size_t len;
};

enum mauth_step {
    MAUTH_START = 0,
    MAUTH_HELLO_SENT, /* client: waiting for CHALLENGE */
    MAUTH_CHALLENGED, /* server: waiting for AUTH */
    MAUTH_DONE,       /* both: the peer is authenticated */
    MAUTH_FAILED,     /* both: refused; every later step is too */
};

/* One side of one handshake. Zero it before the first call; the secret it
 * points to must outlive it. peer is the other end's node id once known. */
struct mauth {
    const struct mauth_secret *secret;
    enum mauth_step step;
    char cluster[MW_CLUSTER_MAX + 1];
    uint32_t client, server;
    uint8_t client_nonce[MW_NONCE_LEN];
    uint8_t server_nonce[MW_NONCE_LEN];
    uint32_t peer;
};

/* Reads the secret from path: a regular file of 16..256 bytes (one trailing
 * newline is not part of it) that group and others cannot access. 0, or
 * -errno with err naming the path and the problem. */
int mauth_load_secret(const char *path, struct mauth_secret *s, char *err, size_t errlen);

/* Wipes a secret that is no longer needed. */
void mauth_secret_clear(struct mauth_secret *s);

/* Client: the HELLO for cluster from node self. -EINVAL for a cluster name
 * that does not fit or a zero node id, -EIO if no nonce could be drawn. */
int mauth_client_hello(struct mauth *a, const struct mauth_secret *s, const char *cluster,
                       uint32_t self, struct mw_hello *out);

/* Server (node self of cluster): checks a HELLO and answers it with the
 * CHALLENGE. The caller decides afterwards whether a->peer is a node it
 * mirrors with. */
int mauth_server_challenge(struct mauth *a, const struct mauth_secret *s, const char *cluster,
                           uint32_t self, const struct mw_hello *in, struct mw_challenge *out,
                           char *err, size_t errlen);

/* Client: checks the server is expect_peer and knows the secret, and answers
 * with the AUTH. */
int mauth_client_auth(struct mauth *a, const struct mw_challenge *in, uint32_t expect_peer,
                      struct mw_auth *out, char *err, size_t errlen);

/* Server: checks the client's AUTH; 0 means send WELCOME. */
int mauth_server_verify(struct mauth *a, const struct mw_auth *in, char *err, size_t errlen);

#endif
