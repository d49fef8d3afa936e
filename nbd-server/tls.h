/* tls.h - TLS for the NBD server (NBD_OPT_STARTTLS), on GnuTLS.
 *
 * Credentials (X.509 in nbdkit's directory layout, and a PSK file in
 * psktool's format) are loaded into one reference-counted object that
 * every new handshake takes a reference to; a reload builds a whole new
 * one and swaps it in (nbd_server_set_tls), so a handshake in progress
 * and every session keep what they started with. GnuTLS reads the PSK
 * file itself at each handshake, so a key added there needs no reload.
 *
 * A session moves bytes only without blocking (its transport functions
 * use MSG_DONTWAIT): the caller decides how long to wait, against the
 * handshake's deadline or the connection's own wake-ups (conn_io.c).
 */
#ifndef VSAN_NBD_TLS_H
#define VSAN_NBD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

/* [nbd] tls: what the server offers and demands before the export. */
enum nbd_tls_mode { NBD_TLS_OFF = 0, NBD_TLS_ON = 1, NBD_TLS_REQUIRE = 2 };

/* nbdkit's names, in the directory of [tls] certificates. */
#define NBD_TLS_CA_CERT "ca-cert.pem"
#define NBD_TLS_CA_CRL "ca-crl.pem" /* optional */
#define NBD_TLS_SERVER_CERT "server-cert.pem"
#define NBD_TLS_SERVER_KEY "server-key.pem"

/* AES-GCM first, and the server's order wins: offered ChaCha20 first (as
 * Debian 12's clients do with PSK), a session would otherwise run at about
 * a sixth of the bulk throughput on CPUs with AES instructions. PSK key
 * exchanges are not in NORMAL and are added. */
#define NBD_TLS_PRIORITY                                                                           \
    "NORMAL:%SERVER_PRECEDENCE:+ECDHE-PSK:+DHE-PSK:+PSK:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"    \
    "+CHACHA20-POLY1305:+AES-128-CCM:+AES-256-CCM:+AES-128-CBC:+AES-256-CBC"

/* Longest identity kept: a PSK user name or an RFC 4514 subject DN. */
#define NBD_TLS_IDENTITY_MAX 512

struct nbd_tls_config {
    const char *certificates; /* directory, "" for none */
    bool verify_peer;         /* clients must present a certificate of the CA */
    const char *psk_file;     /* "" for none */
};

struct nbd_tls_creds;

/* Loads the credentials. NULL on failure, with err naming the file and
 * why ("/etc/vsan/tls/server-key.pem: Error while reading file."). */
struct nbd_tls_creds *nbd_tls_creds_load(const struct nbd_tls_config *cfg, char *err,
                                         size_t errlen);
void nbd_tls_creds_ref(struct nbd_tls_creds *creds);
/* Drops a reference; the last one frees (NULL: nothing). */
void nbd_tls_creds_unref(struct nbd_tls_creds *creds);

/* How a TLS client proved who it is. */
enum nbd_tls_auth {
    NBD_TLS_AUTH_NONE = 0, /* plain, or X.509 without a client certificate */
    NBD_TLS_AUTH_PSK,      /* identity: the PSK user name */
    NBD_TLS_AUTH_X509,     /* identity: the certificate's subject DN (RFC 4514) */
    NBD_TLS_AUTH_LOCAL,    /* no TLS: root on the local socket (server.h); identity "root" */
};

struct nbd_tls_session;

/* Starts TLS on the socket fd as its server and runs the handshake to its
 * end or until deadline (CLOCK_MONOTONIC). Takes its own reference to
 * creds. NULL on failure, logged with peer. */
struct nbd_tls_session *nbd_tls_accept(struct nbd_tls_creds *creds, int fd, const char *peer,
                                       const struct timespec *deadline);
void nbd_tls_session_free(struct nbd_tls_session *t);

/* Who the client is (see enum nbd_tls_auth); identity is "" for NONE. */
const char *nbd_tls_identity(const struct nbd_tls_session *t, enum nbd_tls_auth *auth);

/* One receive, never blocking: > 0 bytes, 0 at the end of the stream,
 * -1 with errno EAGAIN (nothing decrypted yet: wait for the socket),
 * EINTR, or EIO (logged at debug level with peer; also a client's TLS 1.3
 * KeyUpdate, refused: see tls.c). May run beside a send. */
ssize_t nbd_tls_recv(struct nbd_tls_session *t, void *buf, size_t len, const char *peer);
/* Sends at most one record of what iov holds, never blocking: the bytes
 * of iov it took, or -1 with errno EAGAIN (the record is not all out:
 * call again with the same iov, which sends the rest; the session is
 * stuck until then), EINTR (likewise) or EPIPE/EIO. Callers serialise
 * sends. */
ssize_t nbd_tls_send(struct nbd_tls_session *t, const struct iovec *iov, int iovcnt,
                     const char *peer);

#endif
