/* creds.h - the network API's TLS credentials: the server's certificate
 * and key for the handshakes, and the CA and CRL its clients'
 * certificates are checked against (api.h).
 *
 * MHD takes the server certificate from a callback at each handshake and
 * leaves checking the client's to us, so both come from the set loaded
 * last: a reload (SIGHUP) swaps in a new one for the handshakes and
 * checks to come. A handshake may still use the set it took, so sets are
 * freed only when the API stops (one per reload: a few KiB each).
 */
#ifndef VSAN_API_CREDS_H
#define VSAN_API_CREDS_H

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <stddef.h>

struct api_creds;

/* Loads the set in dir (nbdkit's names, as the NBD side's). NULL on
 * failure with err naming the file and why. */
struct api_creds *api_creds_load(const char *dir, char *err, size_t errlen);
/* Frees c and every set loaded before it. */
void api_creds_free(struct api_creds *c);

/* The CA certificates of c as PEM text, NUL-terminated: MHD names them in
 * its certificate requests. */
const char *api_creds_ca_pem(const struct api_creds *c);

/* Makes c the set handshakes and checks use; c keeps the previous one
 * (freed with it). Main loop. */
void api_creds_install(struct api_creds *c);

/* gnutls_certificate_retrieve_function2 for MHD: the installed set's
 * certificate and key. Any thread. */
int api_creds_retrieve(gnutls_session_t s, const gnutls_datum_t *req_ca_dn, int nreqs,
                       const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                       gnutls_pcert_st **pcert, unsigned int *pcert_length, gnutls_privkey_t *pkey);

/* The verified identity of the client of session s, its certificate's
 * subject DN, into identity: 0; -ENOENT (no certificate); -EACCES (not
 * signed by the CA, revoked, expired, not for TLS clients: why set);
 * -ENAMETOOLONG; -ENOMEM. Any thread. */
int api_creds_identify(gnutls_session_t s, char *identity, size_t size, const char **why);

#endif
