/* auth.c - the mirror link's challenge-response handshake (auth.h).
 *
 * Each mac is computed from the values this side holds (its own cluster name,
 * the node ids, the nonces it drew or received), never from the received
 * bytes around them, so the padding of a fixed field cannot change what is
 * authenticated. Macs are compared in constant time.
 */
#include "mirror/auth.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char SERVER_LABEL[] = "vsan-mirror server";
static const char CLIENT_LABEL[] = "vsan-mirror client";

/* What both macs cover after their label; sizes fixed, integers little-endian. */
struct transcript {
    char cluster[MW_CLUSTER_MAX + 1];
    uint32_t client;
    uint32_t server;
    uint8_t client_nonce[MW_NONCE_LEN];
    uint8_t server_nonce[MW_NONCE_LEN];
} __attribute__((packed));

static int failf(int ret, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int failf(int ret, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return ret;
}

/* ---- the secret file ---- */

void mauth_secret_clear(struct mauth_secret *s)
{
    explicit_bzero(s, sizeof *s);
}

/* Reads up to len bytes; the count, or -errno. */
static ssize_t read_all(int fd, uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static int check_file(int fd, const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        return failf(-e, err, errlen, "secret file %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode))
        return failf(-EINVAL, err, errlen, "secret file %s is not a regular file", path);
    if (st.st_mode & 077)
        return failf(-EPERM, err, errlen,
                     "secret file %s has mode 0%03o: group and others must have no access "
                     "(chmod 600)",
                     path, (unsigned)(st.st_mode & 0777));
    return 0;
}

/* Takes the key out of buf (n bytes read, at most MAUTH_SECRET_MAX + 2). */
static int take_key(const uint8_t *buf, size_t n, const char *path, struct mauth_secret *s,
                    char *err, size_t errlen)
{
    /* `echo secret > file` and editors add a newline nobody means as key. */
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n < MAUTH_SECRET_MIN)
        return failf(-EINVAL, err, errlen, "secret file %s holds %zu bytes, at least %d needed",
                     path, n, MAUTH_SECRET_MIN);
    if (n > MAUTH_SECRET_MAX)
        return failf(-EINVAL, err, errlen, "secret file %s holds more than %d bytes", path,
                     MAUTH_SECRET_MAX);
    memcpy(s->key, buf, n);
    s->len = n;
    return 0;
}

static int read_key(int fd, const char *path, struct mauth_secret *s, char *err, size_t errlen)
{
    /* Two bytes beyond the maximum tell a too-long key from a maximal one
     * with its newline. */
    uint8_t buf[MAUTH_SECRET_MAX + 2];
    ssize_t n = read_all(fd, buf, sizeof buf);
    int ret;
    if (n < 0)
        ret = failf((int)n, err, errlen, "secret file %s: %s", path, strerror((int)-n));
    else
        ret = take_key(buf, (size_t)n, path, s, err, errlen);
    explicit_bzero(buf, sizeof buf);
    return ret;
}

int mauth_load_secret(const char *path, struct mauth_secret *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        return failf(-e, err, errlen, "secret file %s: %s", path, strerror(e));
    }
    int ret = check_file(fd, path, err, errlen);
    if (ret == 0)
        ret = read_key(fd, path, s, err, errlen);
    if (close(fd) < 0 && ret == 0) {
        int e = errno;
        ret = failf(-e, err, errlen, "secret file %s: %s", path, strerror(e));
    }
    if (ret < 0)
        mauth_secret_clear(s);
    return ret;
}

/* ---- the handshake ---- */

static int draw_nonce(uint8_t nonce[MW_NONCE_LEN])
{
    return gnutls_rnd(GNUTLS_RND_NONCE, nonce, MW_NONCE_LEN) < 0 ? -EIO : 0;
}

static int compute_mac(const struct mauth *a, const char *label, uint8_t mac[MW_MAC_LEN])
{
    uint8_t msg[sizeof SERVER_LABEL - 1 + sizeof(struct transcript)];
    struct transcript t;
    memset(&t, 0, sizeof t);
    memcpy(t.cluster, a->cluster, sizeof t.cluster);
    t.client = a->client;
    t.server = a->server;
    memcpy(t.client_nonce, a->client_nonce, MW_NONCE_LEN);
    memcpy(t.server_nonce, a->server_nonce, MW_NONCE_LEN);
    _Static_assert(sizeof SERVER_LABEL == sizeof CLIENT_LABEL, "labels of one length");
    memcpy(msg, label, sizeof SERVER_LABEL - 1);
    memcpy(msg + sizeof SERVER_LABEL - 1, &t, sizeof t);
    int rc =
        gnutls_hmac_fast(GNUTLS_MAC_SHA256, a->secret->key, a->secret->len, msg, sizeof msg, mac);
    return rc < 0 ? -EIO : 0;
}

/* Whether received is the mac this side expects under label. */
static int verify_mac(const struct mauth *a, const char *label, const uint8_t received[MW_MAC_LEN],
                      bool *ok)
{
    uint8_t want[MW_MAC_LEN];
    int ret = compute_mac(a, label, want);
    *ok = ret == 0 && gnutls_memcmp(want, received, MW_MAC_LEN) == 0;
    explicit_bzero(want, sizeof want);
    return ret;
}

static int refuse(struct mauth *a, int ret)
{
    a->step = MAUTH_FAILED;
    return ret;
}

static bool set_cluster(struct mauth *a, const char *cluster)
{
    size_t n = strnlen(cluster, sizeof a->cluster);
    if (n == 0 || n >= sizeof a->cluster)
        return false;
    memset(a->cluster, 0, sizeof a->cluster);
    memcpy(a->cluster, cluster, n);
    return true;
}

int mauth_client_hello(struct mauth *a, const struct mauth_secret *s, const char *cluster,
                       uint32_t self, struct mw_hello *out)
{
    memset(a, 0, sizeof *a);
    a->secret = s;
    if (self == 0 || !set_cluster(a, cluster))
        return refuse(a, -EINVAL);
    a->client = self;
    int ret = draw_nonce(a->client_nonce);
    if (ret < 0)
        return refuse(a, ret);
    memset(out, 0, sizeof *out);
    memcpy(out->cluster, a->cluster, sizeof out->cluster);
    out->nodeid = self;
    memcpy(out->nonce, a->client_nonce, MW_NONCE_LEN);
    a->step = MAUTH_HELLO_SENT;
    return 0;
}

/* Whether a received fixed field holds a printable, terminated string. */
static bool printable(const char *field, size_t size)
{
    size_t n = strnlen(field, size);
    if (n == size)
        return false;
    for (size_t i = 0; i < n; i++)
        if (field[i] < 0x20 || field[i] > 0x7e)
            return false;
    return true;
}

static int check_hello(const struct mauth *a, const struct mw_hello *in, char *err, size_t errlen)
{
    if (!printable(in->cluster, sizeof in->cluster))
        return failf(-EPROTO, err, errlen, "HELLO from node %u: cluster name is not a string",
                     in->nodeid);
    if (strcmp(in->cluster, a->cluster) != 0)
        return failf(-EACCES, err, errlen,
                     "HELLO from node %u: cluster name \"%s\" is not ours (\"%s\")", in->nodeid,
                     in->cluster, a->cluster);
    if (in->nodeid == 0)
        return failf(-EPROTO, err, errlen, "HELLO with node id 0");
    if (in->nodeid == a->server)
        return failf(-EACCES, err, errlen, "HELLO from node %u: that is our own node id",
                     in->nodeid);
    return 0;
}

int mauth_server_challenge(struct mauth *a, const struct mauth_secret *s, const char *cluster,
                           uint32_t self, const struct mw_hello *in, struct mw_challenge *out,
                           char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    a->secret = s;
    if (self == 0 || !set_cluster(a, cluster))
        return refuse(a, failf(-EINVAL, err, errlen, "bad local cluster name or node id"));
    a->server = self;
    int ret = check_hello(a, in, err, errlen);
    if (ret < 0)
        return refuse(a, ret);
    a->client = a->peer = in->nodeid;
    memcpy(a->client_nonce, in->nonce, MW_NONCE_LEN);
    memset(out, 0, sizeof *out);
    ret = draw_nonce(a->server_nonce);
    if (ret == 0)
        ret = compute_mac(a, SERVER_LABEL, out->mac);
    if (ret < 0)
        return refuse(
            a, failf(ret, err, errlen, "peer %u: cannot draw a nonce or compute a mac", a->peer));
    out->nodeid = self;
    memcpy(out->nonce, a->server_nonce, MW_NONCE_LEN);
    a->step = MAUTH_CHALLENGED;
    return 0;
}

int mauth_client_auth(struct mauth *a, const struct mw_challenge *in, uint32_t expect_peer,
                      struct mw_auth *out, char *err, size_t errlen)
{
    if (a->step != MAUTH_HELLO_SENT)
        return refuse(a, failf(-EPROTO, err, errlen, "CHALLENGE out of order"));
    if (in->nodeid != expect_peer)
        return refuse(a, failf(-EACCES, err, errlen, "connected to node %u, expected node %u",
                               in->nodeid, expect_peer));
    a->server = a->peer = in->nodeid;
    memcpy(a->server_nonce, in->nonce, MW_NONCE_LEN);
    bool ok;
    int ret = verify_mac(a, SERVER_LABEL, in->mac, &ok);
    if (ret == 0 && ok)
        ret = compute_mac(a, CLIENT_LABEL, out->mac);
    if (ret < 0)
        return refuse(a, failf(ret, err, errlen, "peer %u: cannot compute a mac", a->peer));
    if (!ok)
        return refuse(a, failf(-EACCES, err, errlen, "peer %u failed authentication: wrong secret?",
                               a->peer));
    a->step = MAUTH_DONE;
    return 0;
}

int mauth_server_verify(struct mauth *a, const struct mw_auth *in, char *err, size_t errlen)
{
    if (a->step != MAUTH_CHALLENGED)
        return refuse(a, failf(-EPROTO, err, errlen, "AUTH out of order"));
    bool ok;
    int ret = verify_mac(a, CLIENT_LABEL, in->mac, &ok);
    if (ret < 0)
        return refuse(a, failf(ret, err, errlen, "peer %u: cannot compute a mac", a->peer));
    if (!ok)
        return refuse(a, failf(-EACCES, err, errlen, "peer %u failed authentication: wrong secret?",
                               a->peer));
    a->step = MAUTH_DONE;
    return 0;
}
