/* tls.c - GnuTLS credentials and server sessions for NBD_OPT_STARTTLS
 * (tls.h).
 *
 * Sessions never block inside GnuTLS: the push and pull functions pass
 * MSG_DONTWAIT, so GnuTLS returns GNUTLS_E_AGAIN where a socket would
 * block, and the caller waits with poll() as its phase allows. A send
 * cut short that way leaves its encrypted record inside the session, and
 * GnuTLS requires the same call again before any other send: conn_io.c
 * makes sure only one thread sends, and that it finishes.
 *
 * The reader receives while another thread sends, so a session's GnuTLS
 * calls take turns (mu). A receive must not change the sending state,
 * and in TLS 1.3 one can: a KeyUpdate that asks for one back makes
 * GnuTLS start the next send with the key change, and a send cut short
 * and retried then went out twice (a record duplicated in the stream).
 * A KeyUpdate that asks nothing back changes only the receiving key, and
 * is taken: GnuTLS clients (libnbd, qemu) send one of those on their own
 * after 2^24 records. One that asks for ours ends the session
 * (refuse_key_update) rather than risk the stream; our own key still
 * changes after 2^24 records sent, on the sending thread.
 *
 * Records are up to 16 KiB: a reply's small pieces (a 16-byte header, a
 * structured chunk's header) are gathered into one record with what
 * follows rather than each costing a record (and its 22 bytes of
 * overhead and AEAD pass) of its own; a large payload goes from its own
 * buffer, a record at a time.
 */
#include "nbd-server/tls.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <qb/qblog.h>

#define RECORD_MAX 16384
/* GnuTLS reads a record's 5-byte header and then its body, two recv(2)
 * calls, and libnbd sends a request's header and its data as two
 * records: 4 system calls per 4 KiB write, where a plain connection
 * takes a batch of requests in one. The pull function reads ahead into
 * this buffer instead (one recv for several records); a pull for at
 * least half of it, with nothing ahead (a large record's body), goes
 * straight into GnuTLS's buffer, so large writes are not copied twice. */
#define READ_AHEAD 32768
/* A piece of iov shorter than this is gathered with what follows it. */
#define GATHER_BELOW 4096

struct nbd_tls_creds {
    atomic_uint refs;
    gnutls_certificate_credentials_t x509; /* NULL without certificates */
    bool verify_peer;
    gnutls_psk_server_credentials_t psk; /* NULL without a PSK file */
    gnutls_priority_t priority;
};

struct nbd_tls_session {
    gnutls_session_t s;
    int fd;
    pthread_mutex_t mu; /* one GnuTLS call at a time; guards ahead too */
    struct nbd_tls_creds *creds;
    enum nbd_tls_auth auth;
    char identity[NBD_TLS_IDENTITY_MAX + 1];
    char gather[RECORD_MAX];
    /* What one recv(2) brought beyond what GnuTLS asked for (see pull). */
    size_t ahead_start, ahead_end;
    char ahead[READ_AHEAD];
};

/* ---- credentials -------------------------------------------------------- */

/* Paths are cut to fit: the message names the file first, then why. */
static int err_file(char *err, size_t len, const char *path, const char *why)
{
    snprintf(err, len, "%.700s: %.200s", path, why);
    return -1;
}

/* A file we are about to give GnuTLS must be readable by us: GnuTLS's own
 * message would not say which of two files it could not read. */
static int check_readable(const char *path, char *err, size_t len)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return err_file(err, len, path, strerror(errno));
    fclose(f);
    return 0;
}

static int load_x509(struct nbd_tls_creds *c, const char *dir, char *err, size_t len)
{
    char ca[4096], crl[4096], cert[4096], key[4096];
    if (snprintf(ca, sizeof ca, "%s/%s", dir, NBD_TLS_CA_CERT) >= (int)sizeof ca ||
        snprintf(crl, sizeof crl, "%s/%s", dir, NBD_TLS_CA_CRL) >= (int)sizeof crl ||
        snprintf(cert, sizeof cert, "%s/%s", dir, NBD_TLS_SERVER_CERT) >= (int)sizeof cert ||
        snprintf(key, sizeof key, "%s/%s", dir, NBD_TLS_SERVER_KEY) >= (int)sizeof key)
        return err_file(err, len, dir, "path too long");
    if (check_readable(ca, err, len) < 0 || check_readable(cert, err, len) < 0 ||
        check_readable(key, err, len) < 0)
        return -1;
    int r = gnutls_certificate_allocate_credentials(&c->x509);
    if (r < 0)
        return err_file(err, len, dir, gnutls_strerror(r));
    r = gnutls_certificate_set_x509_trust_file(c->x509, ca, GNUTLS_X509_FMT_PEM);
    if (r == 0)
        return err_file(err, len, ca, "no certificate in it");
    if (r < 0)
        return err_file(err, len, ca, gnutls_strerror(r));
    if (access(crl, F_OK) == 0) {
        r = gnutls_certificate_set_x509_crl_file(c->x509, crl, GNUTLS_X509_FMT_PEM);
        if (r < 0)
            return err_file(err, len, crl, gnutls_strerror(r));
    }
    r = gnutls_certificate_set_x509_key_file(c->x509, cert, key, GNUTLS_X509_FMT_PEM);
    if (r < 0) {
        snprintf(err, len, "%.400s and %.400s: %.150s", cert, key, gnutls_strerror(r));
        return -1;
    }
    return 0;
}

/* psktool's format, one "user:hexkey" a line: checked here so that a bad
 * file stops the start, naming its line, rather than failing handshakes
 * one by one. GnuTLS reads it again at each handshake. */
static int check_psk_file(const char *path, char *err, size_t len)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return err_file(err, len, path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0, keys = 0;
    int r = 0;
    while (r == 0 && getline(&line, &cap, f) >= 0) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0')
            continue;
        char *colon = strchr(line, ':');
        size_t hex = colon ? strlen(colon + 1) : 0;
        if (!colon || colon == line || hex == 0 || hex % 2 ||
            strspn(colon + 1, "0123456789abcdefABCDEF") != hex) {
            snprintf(err, len, "%s:%u: expected USER:HEXKEY (psktool's format)", path, lineno);
            r = -1;
        }
        keys++;
    }
    free(line);
    fclose(f);
    if (r == 0 && keys == 0)
        return err_file(err, len, path, "no key in it");
    return r;
}

static int load_psk(struct nbd_tls_creds *c, const char *path, char *err, size_t len)
{
    if (check_psk_file(path, err, len) < 0)
        return -1;
    int r = gnutls_psk_allocate_server_credentials(&c->psk);
    if (r == 0)
        r = gnutls_psk_set_server_credentials_file(c->psk, path);
    return r < 0 ? err_file(err, len, path, gnutls_strerror(r)) : 0;
}

static void creds_free(struct nbd_tls_creds *c)
{
    if (c->x509)
        gnutls_certificate_free_credentials(c->x509);
    if (c->psk)
        gnutls_psk_free_server_credentials(c->psk);
    if (c->priority)
        gnutls_priority_deinit(c->priority);
    free(c);
}

struct nbd_tls_creds *nbd_tls_creds_load(const struct nbd_tls_config *cfg, char *err, size_t errlen)
{
    struct nbd_tls_creds *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "%s", strerror(ENOMEM));
        return NULL;
    }
    atomic_init(&c->refs, 1);
    c->verify_peer = cfg->verify_peer;
    const char *at;
    int r = gnutls_priority_init(&c->priority, NBD_TLS_PRIORITY, &at);
    if (r < 0)
        snprintf(err, errlen, "priority string at \"%s\": %s", at, gnutls_strerror(r));
    /* The message names the setting (as nbdkit's options and vsand's
     * [tls] keys do), then the file. */
    char why[1024];
    if (r == 0 && cfg->certificates[0] && load_x509(c, cfg->certificates, why, sizeof why) < 0) {
        snprintf(err, errlen, "certificates = %.400s: %s", cfg->certificates, why);
        r = -1;
    }
    if (r == 0 && cfg->psk_file[0] && load_psk(c, cfg->psk_file, why, sizeof why) < 0) {
        snprintf(err, errlen, "psk_file = %.400s: %s", cfg->psk_file, why);
        r = -1;
    }
    if (r == 0 && !c->x509 && !c->psk) {
        snprintf(err, errlen, "neither certificates nor a PSK file");
        r = -1;
    }
    if (r < 0) {
        creds_free(c);
        return NULL;
    }
    return c;
}

void nbd_tls_creds_ref(struct nbd_tls_creds *creds)
{
    atomic_fetch_add(&creds->refs, 1);
}

void nbd_tls_creds_unref(struct nbd_tls_creds *creds)
{
    if (creds && atomic_fetch_sub(&creds->refs, 1) == 1)
        creds_free(creds);
}

/* ---- the transport ------------------------------------------------------ */

/* Called by GnuTLS under mu. GnuTLS answers GNUTLS_E_AGAIN only once a
 * pull met EAGAIN, which happens only with nothing left ahead: so a
 * caller that waits with poll() after GNUTLS_E_AGAIN never waits while
 * bytes sit here. */
static ssize_t pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
    struct nbd_tls_session *t = p;
    if (t->ahead_start == t->ahead_end) {
        t->ahead_start = t->ahead_end = 0;
        if (len >= READ_AHEAD / 2)
            return recv(t->fd, buf, len, MSG_DONTWAIT);
        ssize_t n = recv(t->fd, t->ahead, READ_AHEAD, MSG_DONTWAIT);
        if (n <= 0)
            return n;
        t->ahead_end = (size_t)n;
    }
    size_t have = t->ahead_end - t->ahead_start;
    size_t n = have < len ? have : len;
    memcpy(buf, t->ahead + t->ahead_start, n);
    t->ahead_start += n;
    return (ssize_t)n;
}

/* GnuTLS asks it whether data is there (ms: how long to wait for it). */
static int pull_timeout(gnutls_transport_ptr_t p, unsigned ms)
{
    struct nbd_tls_session *t = p;
    if (t->ahead_start < t->ahead_end)
        return 1;
    struct pollfd pfd = {.fd = t->fd, .events = POLLIN};
    return poll(&pfd, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms);
}

static ssize_t push(gnutls_transport_ptr_t p, const giovec_t *iov, int iovcnt)
{
    struct nbd_tls_session *t = p;
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    return sendmsg(t->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* ---- sessions ----------------------------------------------------------- */

/* A client's KeyUpdate asking for ours ends its session before GnuTLS
 * acts on it (see the header). Its body is one byte, request_update
 * (RFC 8446 4.6.3): 1 asks; the hook may be handed the message's 4-byte
 * header too, so the byte is the last. */
static int refuse_key_update(gnutls_session_t s, unsigned htype, unsigned when, unsigned incoming,
                             const gnutls_datum_t *msg)
{
    (void)s, (void)htype, (void)when;
    bool asks = msg->size == 0 || msg->data[msg->size - 1] != 0;
    return incoming && asks ? GNUTLS_E_UNEXPECTED_HANDSHAKE_PACKET : 0;
}

static int setup(struct nbd_tls_session *t, int fd)
{
    struct nbd_tls_creds *c = t->creds;
    int r = gnutls_init(&t->s, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
    if (r < 0)
        return r;
    r = gnutls_priority_set(t->s, c->priority);
    if (r == 0 && c->x509)
        r = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, c->x509);
    if (r == 0 && c->psk)
        r = gnutls_credentials_set(t->s, GNUTLS_CRD_PSK, c->psk);
    if (r < 0)
        return r;
    if (c->x509 && c->verify_peer) {
        gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
        /* The handshake fails on a certificate the CA did not sign, or revoked. */
        gnutls_session_set_verify_cert(t->s, NULL, 0);
    }
    gnutls_handshake_set_hook_function(t->s, GNUTLS_HANDSHAKE_KEY_UPDATE, GNUTLS_HOOK_PRE,
                                       refuse_key_update);
    t->fd = fd;
    gnutls_transport_set_ptr(t->s, t);
    gnutls_transport_set_pull_function(t->s, pull);
    gnutls_transport_set_pull_timeout_function(t->s, pull_timeout);
    gnutls_transport_set_vec_push_function(t->s, push);
    return 0;
}

/* Milliseconds left until deadline, rounded up; 0 once it passed. */
static int ms_until(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ns = (long long)(deadline->tv_sec - now.tv_sec) * 1000000000LL +
                   (deadline->tv_nsec - now.tv_nsec);
    return ns <= 0 ? 0 : (int)((ns + 999999) / 1000000);
}

static int handshake(struct nbd_tls_session *t, int fd, const char *peer,
                     const struct timespec *deadline)
{
    for (;;) {
        int r = gnutls_handshake(t->s);
        if (r == 0)
            return 0;
        if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED) {
            const char *alert =
                r == GNUTLS_E_FATAL_ALERT_RECEIVED || r == GNUTLS_E_WARNING_ALERT_RECEIVED
                    ? gnutls_alert_get_name(gnutls_alert_get(t->s))
                    : NULL;
            qb_log(LOG_INFO, "nbd %s: TLS handshake: %s%s%s", peer, gnutls_strerror(r),
                   alert ? ": " : "", alert ? alert : "");
            return -1;
        }
        struct pollfd p = {.fd = fd,
                           .events = gnutls_record_get_direction(t->s) ? POLLOUT : POLLIN};
        int left = ms_until(deadline);
        int n = left > 0 ? poll(&p, 1, left) : 0;
        if (n < 0 && errno != EINTR) {
            qb_log(LOG_INFO, "nbd %s: TLS handshake: poll: %s", peer, strerror(errno));
            return -1;
        }
        if (n == 0) {
            qb_log(LOG_INFO, "nbd %s: TLS handshake: not over by the handshake's deadline: closing",
                   peer);
            return -1;
        }
    }
}

/* Keeps name as t's identity, refusing (logged) one that does not fit:
 * cut, a subject or user name could match a grant the whole one does not
 * ("CN=mallory,OU=...,CN=administrator" cut to "...,CN=admin"). */
static int keep_identity(struct nbd_tls_session *t, const char *peer, const char *what,
                         const char *name, size_t len)
{
    if (len > NBD_TLS_IDENTITY_MAX) {
        qb_log(LOG_WARNING, "nbd %s: TLS: %s is longer than %d bytes: closing", peer, what,
               NBD_TLS_IDENTITY_MAX);
        return -1;
    }
    memcpy(t->identity, name, len);
    t->identity[len] = '\0';
    return 0;
}

/* The identity the handshake established, for logs now and access
 * control later. -1 (logged) for one that can't be kept: a PSK user or a
 * subject too long, or a certificate whose subject can't be read (GnuTLS
 * prints no empty one), which must not pass for a client without any. */
static int take_identity(struct nbd_tls_session *t, const char *peer)
{
    t->identity[0] = '\0';
    t->auth = NBD_TLS_AUTH_NONE;
    if (gnutls_auth_get_type(t->s) == GNUTLS_CRD_PSK) {
        const char *user = gnutls_psk_server_get_username(t->s);
        t->auth = NBD_TLS_AUTH_PSK;
        return keep_identity(t, peer, "the PSK user name", user ? user : "",
                             user ? strlen(user) : 0);
    }
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(t->s, &n);
    if (!certs || n == 0)
        return 0; /* no client certificate (verify_peer = no) */
    gnutls_x509_crt_t crt;
    gnutls_datum_t dn = {NULL, 0};
    int r = gnutls_x509_crt_init(&crt);
    if (r == 0) {
        r = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
        if (r == 0)
            r = gnutls_x509_crt_get_dn3(crt, &dn, 0);
        gnutls_x509_crt_deinit(crt);
    }
    if (r == 0 && dn.size == 0)
        r = GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE;
    if (r < 0) {
        qb_log(LOG_WARNING,
               "nbd %s: TLS: client certificate: its subject can't be read: %s: closing", peer,
               gnutls_strerror(r));
        gnutls_free(dn.data);
        return -1;
    }
    t->auth = NBD_TLS_AUTH_X509;
    r = keep_identity(t, peer, "client certificate: its subject", (const char *)dn.data, dn.size);
    gnutls_free(dn.data);
    return r;
}

struct nbd_tls_session *nbd_tls_accept(struct nbd_tls_creds *creds, int fd, const char *peer,
                                       const struct timespec *deadline)
{
    struct nbd_tls_session *t = calloc(1, sizeof *t);
    if (!t) {
        qb_log(LOG_WARNING, "nbd %s: TLS: %s", peer, strerror(ENOMEM));
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    nbd_tls_creds_ref(creds);
    t->creds = creds;
    int r = setup(t, fd);
    if (r < 0) {
        qb_log(LOG_WARNING, "nbd %s: TLS session: %s", peer, gnutls_strerror(r));
        nbd_tls_session_free(t);
        return NULL;
    }
    if (handshake(t, fd, peer, deadline) < 0) {
        nbd_tls_session_free(t);
        return NULL;
    }
    if (take_identity(t, peer) < 0) {
        nbd_tls_session_free(t);
        return NULL;
    }
    char *desc = gnutls_session_get_desc(t->s);
    qb_log(LOG_INFO, "nbd %s: TLS %s, %s%s", peer, desc ? desc : "?",
           t->auth == NBD_TLS_AUTH_PSK    ? "PSK user "
           : t->auth == NBD_TLS_AUTH_X509 ? "certificate "
                                          : "no client certificate",
           t->identity);
    gnutls_free(desc);
    return t;
}

void nbd_tls_session_free(struct nbd_tls_session *t)
{
    if (!t)
        return;
    if (t->s)
        gnutls_deinit(t->s);
    nbd_tls_creds_unref(t->creds);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

const char *nbd_tls_identity(const struct nbd_tls_session *t, enum nbd_tls_auth *auth)
{
    *auth = t->auth;
    return t->identity;
}

static ssize_t fail(int r, const char *what, const char *peer)
{
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
        errno = r == GNUTLS_E_AGAIN ? EAGAIN : EINTR;
        return -1;
    }
    qb_log(LOG_DEBUG, "nbd %s: TLS %s: %s", peer, what, gnutls_strerror(r));
    errno = r == GNUTLS_E_PUSH_ERROR ? EPIPE : EIO;
    return -1;
}

ssize_t nbd_tls_recv(struct nbd_tls_session *t, void *buf, size_t len, const char *peer)
{
    pthread_mutex_lock(&t->mu);
    ssize_t n = gnutls_record_recv(t->s, buf, len);
    pthread_mutex_unlock(&t->mu);
    if (n >= 0)
        return n;
    if (n == GNUTLS_E_PREMATURE_TERMINATION)
        return 0; /* closed without close_notify: as common as a plain close */
    return fail((int)n, "receive", peer);
}

ssize_t nbd_tls_send(struct nbd_tls_session *t, const struct iovec *iov, int iovcnt,
                     const char *peer)
{
    const void *p = iov[0].iov_base;
    size_t len = iov[0].iov_len < RECORD_MAX ? iov[0].iov_len : RECORD_MAX;
    if (iov[0].iov_len < GATHER_BELOW && iovcnt > 1) {
        /* The same iov gathers the same bytes: a retry after EAGAIN is
         * the same call, as GnuTLS requires. */
        len = 0;
        for (int i = 0; i < iovcnt && len < RECORD_MAX; i++) {
            size_t n = iov[i].iov_len < RECORD_MAX - len ? iov[i].iov_len : RECORD_MAX - len;
            memcpy(t->gather + len, iov[i].iov_base, n);
            len += n;
        }
        p = t->gather;
    }
    pthread_mutex_lock(&t->mu);
    ssize_t n = gnutls_record_send(t->s, p, len);
    pthread_mutex_unlock(&t->mu);
    return n >= 0 ? n : fail((int)n, "send", peer);
}
