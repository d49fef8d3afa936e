/* creds.c - the network API's TLS credentials and the check of client
 * certificates (see creds.h).
 *
 * The check is ours, not GnuTLS's inside the handshake: MHD only asks for
 * a certificate, so a client without one (a token's) still gets in, and
 * one with a bad certificate gets a 401 in JSON rather than a TLS alert.
 * It checks the whole chain against the CA and its CRL, dates included,
 * and the key purpose: a server's certificate is no client's.
 */
#include "api/creds.h"

#include "common/identity.h"

#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/x509.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* nbdkit's names, as nbd-server/tls.h has them (a layer we don't include). */
#define CA_CERT "ca-cert.pem"
#define CA_CRL "ca-crl.pem"
#define SERVER_CERT "server-cert.pem"
#define SERVER_KEY "server-key.pem"

/* Longest chain a server certificate file or a client may present. */
#define CHAIN_MAX 8

struct api_creds {
    struct api_creds *prev; /* the set this one replaced, freed with it */
    gnutls_pcert_st pcert[CHAIN_MAX];
    unsigned npcert;
    gnutls_privkey_t key;
    gnutls_x509_trust_list_t trust; /* the CA and its CRL */
    char *ca_pem;
};

/* The set handshakes and checks use: MHD's certificate callback has no
 * context of its own, so there is one API per process. */
static pthread_mutex_t installed_lock = PTHREAD_MUTEX_INITIALIZER;
static struct api_creds *installed;

static int fail(char *err, size_t len, const char *path, const char *why)
{
    snprintf(err, len, "%s: %s", path, why);
    return -1;
}

/* Reads dir/name into d (gnutls_free it). */
static int read_file(const char *dir, const char *name, gnutls_datum_t *d, char *path, size_t plen,
                     char *err, size_t len)
{
    if (snprintf(path, plen, "%s/%s", dir, name) >= (int)plen)
        return fail(err, len, dir, "path too long");
    if (access(path, R_OK) < 0)
        return fail(err, len, path, strerror(errno));
    int r = gnutls_load_file(path, d);
    return r < 0 ? fail(err, len, path, gnutls_strerror(r)) : 0;
}

static int load_trust(struct api_creds *c, const char *dir, char *err, size_t len)
{
    char path[4096], crl_path[4096];
    gnutls_datum_t ca = {NULL, 0}, crl = {NULL, 0};
    bool have_crl =
        snprintf(crl_path, sizeof crl_path, "%s/%s", dir, CA_CRL) < (int)sizeof crl_path &&
        access(crl_path, F_OK) == 0;
    int r = read_file(dir, CA_CERT, &ca, path, sizeof path, err, len);
    if (r == 0 && have_crl)
        r = read_file(dir, CA_CRL, &crl, crl_path, sizeof crl_path, err, len);
    if (r == 0 && gnutls_x509_trust_list_init(&c->trust, 0) < 0)
        r = fail(err, len, path, "out of memory");
    if (r == 0) {
        /* CRLs not signed by the CA are dropped, not trusted. */
        int n = gnutls_x509_trust_list_add_trust_mem(c->trust, &ca, have_crl ? &crl : NULL,
                                                     GNUTLS_X509_FMT_PEM, GNUTLS_TL_VERIFY_CRL, 0);
        if (n <= 0)
            r = fail(err, len, path, n < 0 ? gnutls_strerror(n) : "no certificate in it");
    }
    if (r == 0 && !(c->ca_pem = strndup((const char *)ca.data, ca.size)))
        r = fail(err, len, path, "out of memory");
    gnutls_free(ca.data);
    gnutls_free(crl.data);
    return r;
}

static int load_server(struct api_creds *c, const char *dir, char *err, size_t len)
{
    char path[4096];
    gnutls_datum_t d = {NULL, 0};
    int r = read_file(dir, SERVER_CERT, &d, path, sizeof path, err, len);
    if (r == 0) {
        c->npcert = CHAIN_MAX;
        int g = gnutls_pcert_list_import_x509_raw(c->pcert, &c->npcert, &d, GNUTLS_X509_FMT_PEM, 0);
        if (g < 0) {
            c->npcert = 0;
            r = fail(err, len, path, gnutls_strerror(g));
        }
        gnutls_free(d.data);
        d = (gnutls_datum_t){NULL, 0};
    }
    if (r == 0)
        r = read_file(dir, SERVER_KEY, &d, path, sizeof path, err, len);
    if (r == 0) {
        int g = gnutls_privkey_init(&c->key);
        if (g == 0)
            g = gnutls_privkey_import_x509_raw(c->key, &d, GNUTLS_X509_FMT_PEM, NULL, 0);
        if (g < 0)
            r = fail(err, len, path, gnutls_strerror(g));
        gnutls_free(d.data);
    }
    return r;
}

static void free_one(struct api_creds *c)
{
    for (unsigned i = 0; i < c->npcert; i++)
        gnutls_pcert_deinit(&c->pcert[i]);
    if (c->key)
        gnutls_privkey_deinit(c->key);
    if (c->trust)
        gnutls_x509_trust_list_deinit(c->trust, 1);
    free(c->ca_pem);
    free(c);
}

struct api_creds *api_creds_load(const char *dir, char *err, size_t errlen)
{
    struct api_creds *c = calloc(1, sizeof *c);
    if (!c) {
        fail(err, errlen, dir, "out of memory");
        return NULL;
    }
    if (load_trust(c, dir, err, errlen) < 0 || load_server(c, dir, err, errlen) < 0) {
        free_one(c);
        return NULL;
    }
    return c;
}

void api_creds_free(struct api_creds *c)
{
    pthread_mutex_lock(&installed_lock);
    if (installed == c)
        installed = NULL;
    pthread_mutex_unlock(&installed_lock);
    while (c) {
        struct api_creds *prev = c->prev;
        free_one(c);
        c = prev;
    }
}

const char *api_creds_ca_pem(const struct api_creds *c)
{
    return c->ca_pem;
}

void api_creds_install(struct api_creds *c)
{
    pthread_mutex_lock(&installed_lock);
    c->prev = installed;
    installed = c;
    pthread_mutex_unlock(&installed_lock);
}

static struct api_creds *current(void)
{
    pthread_mutex_lock(&installed_lock);
    struct api_creds *c = installed;
    pthread_mutex_unlock(&installed_lock);
    return c;
}

int api_creds_retrieve(gnutls_session_t s, const gnutls_datum_t *req_ca_dn, int nreqs,
                       const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                       gnutls_pcert_st **pcert, unsigned int *pcert_length, gnutls_privkey_t *pkey)
{
    (void)s, (void)req_ca_dn, (void)nreqs, (void)pk_algos, (void)pk_algos_length;
    struct api_creds *c = current();
    if (!c)
        return -1;
    *pcert = c->pcert;
    *pcert_length = c->npcert;
    *pkey = c->key;
    return 0;
}

static const char *status_why(unsigned status)
{
    if (status & GNUTLS_CERT_REVOKED)
        return "revoked by the CA's CRL";
    if (status & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNER_NOT_CA))
        return "not signed by the CA of [tls] certificates";
    if (status & GNUTLS_CERT_EXPIRED)
        return "expired";
    if (status & GNUTLS_CERT_NOT_ACTIVATED)
        return "not valid yet";
    if (status & GNUTLS_CERT_PURPOSE_MISMATCH)
        return "not a certificate for TLS clients (key purpose)";
    return "not valid";
}

/* Checks the chain crts[0..n) against the installed CA and CRL; on
 * success copies the subject DN of crts[0]. */
static int verify_chain(gnutls_x509_crt_t *crts, unsigned n, char *identity, size_t size,
                        const char **why)
{
    struct api_creds *c = current();
    gnutls_typed_vdata_st purpose = {GNUTLS_DT_KEY_PURPOSE_OID,
                                     (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT, 0};
    unsigned status = 0;
    if (!c) {
        *why = "no credentials loaded";
        return -EACCES;
    }
    int r = gnutls_x509_trust_list_verify_crt2(c->trust, crts, n, &purpose, 1, 0, &status, NULL);
    if (r < 0 || status) {
        *why = r < 0 ? gnutls_strerror(r) : status_why(status);
        return -EACCES;
    }
    gnutls_datum_t dn = {NULL, 0};
    if (gnutls_x509_crt_get_dn3(crts[0], &dn, 0) < 0) {
        *why = "its subject can't be read";
        return -EACCES;
    }
    r = 0;
    if (dn.size > IDENTITY_BODY_MAX || dn.size >= size) {
        *why = "its subject is longer than 512 bytes";
        r = -ENAMETOOLONG;
    } else {
        memcpy(identity, dn.data, dn.size);
        identity[dn.size] = '\0';
    }
    gnutls_free(dn.data);
    return r;
}

int api_creds_identify(gnutls_session_t s, char *identity, size_t size, const char **why)
{
    unsigned n = 0;
    const gnutls_datum_t *raw = gnutls_certificate_get_peers(s, &n);
    if (!raw || n == 0)
        return -ENOENT;
    if (n > CHAIN_MAX) {
        *why = "a chain of more than 8 certificates";
        return -EACCES;
    }
    gnutls_x509_crt_t crts[CHAIN_MAX];
    unsigned k = 0;
    int r = 0;
    for (; r == 0 && k < n; k++) {
        if (gnutls_x509_crt_init(&crts[k]) < 0) {
            r = -ENOMEM;
            break;
        }
        if (gnutls_x509_crt_import(crts[k], &raw[k], GNUTLS_X509_FMT_DER) < 0) {
            *why = "a certificate that does not parse";
            r = -EACCES;
        }
    }
    if (r == 0)
        r = verify_chain(crts, n, identity, size, why);
    for (unsigned i = 0; i < k; i++)
        gnutls_x509_crt_deinit(crts[i]);
    return r;
}
