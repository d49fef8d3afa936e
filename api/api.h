/* api.h - the network API: HTTPS with JSON under /api/v1, on
 * libmicrohttpd (MHD) and GnuTLS.
 *
 * The HTTP layer knows nothing of volumes: it authenticates the caller,
 * turns each request into one admin request (the JSON the admin socket
 * takes, vsan/admin.h), has the daemon run it through callbacks, and turns
 * the reply into an HTTP status and a JSON body. So validation, errors and
 * the audit line are those of the admin commands. vsand wires it
 * (vsan/api_glue.c).
 *
 * Resources (sizes are JSON integers in bytes):
 *   GET    /api/v1/volumes        volume.list   the caller's volumes
 *   POST   /api/v1/volumes        volume.create {"name": ..., "size": ...}
 *   GET    /api/v1/volumes/NAME   volume.show   its description
 *   PATCH  /api/v1/volumes/NAME   volume.resize {"size": ..., "force": ...}
 *   DELETE /api/v1/volumes/NAME   volume.delete
 *   GET    /api/v1/nodes          status        the cluster (admins)
 *   GET    /api/v1/status         status        the node (admins)
 * An error is {"code": CODE, "message": ...}: CODE is the admin reply's
 * (common/admin_proto.h), or one of the API_E_* below; the status follows
 * from it (api_status()). docs/openapi.yaml describes it all.
 *
 * Authentication: a client certificate signed by the CA of [tls]
 * certificates (checked against its CRL), whose identity is its subject
 * DN; or "Authorization: Bearer TOKEN", whose identity is the token's.
 * A caller whose identity matches one of the admins patterns
 * (common/identity.h) is an admin.
 *
 * Threads: MHD runs one thread of its own, which parses, authenticates
 * and holds connections; it never calls the daemon's execute. A request
 * goes to the main loop through a queue and an eventfd the loop polls,
 * its connection suspended meanwhile; the answer resumes it. Everything
 * else here is main loop only.
 *
 * Limits, so that slow, half-open or hostile clients cost bounded memory:
 * at most connections at once (more are closed at accept), each with a
 * fixed memory pool (headers over it get 431 from MHD), a body of at most
 * API_BODY_MAX bytes (more: 413), and closed when idle for timeout_s.
 */
#ifndef VSAN_API_H
#define VSAN_API_H

#include <json-c/json.h>
#include <qb/qbloop.h>
#include <stdbool.h>
#include <stddef.h>

/* Largest request body; larger ones get 413 without being kept. */
#define API_BODY_MAX (64 * 1024)
/* Memory MHD gives each connection for its headers and buffers. */
#define API_CONNECTION_MEMORY (32 * 1024)

/* Error codes of the HTTP layer itself (the others are the admin's). */
#define API_E_UNAUTHORIZED "unauthorized"             /* 401: no or bad credentials */
#define API_E_NOT_FOUND "not_found"                   /* 404: no such resource */
#define API_E_METHOD_NOT_ALLOWED "method_not_allowed" /* 405 */

/* Who made a request, as the daemon is told. */
struct api_caller {
    const char *identity; /* a certificate's subject DN (RFC 4514), or a token's identity */
    bool certificate;     /* identity is a subject DN (identity_matches' certificate) */
    bool admin;           /* identity matches one of api_params.admins */
};

/* One request being run by the daemon; answered exactly once. */
struct api_call;

struct api_ops {
    /* Runs request (len bytes: one JSON object {"cmd": ..., ...} as the
     * admin socket takes it) for who. Main loop. who and request are valid
     * during the call only. Must answer with api_call_answer(), before it
     * returns or later (once the cluster agreed), from the main loop. */
    void (*execute)(void *ctx, struct api_call *call, const struct api_caller *who,
                    const char *request, size_t len);
    /* The identity a bearer token stands for, into identity (size bytes,
     * NUL-terminated): 0, -ENOENT (unknown or revoked: 401), or another
     * -errno (500). Called on MHD's thread: must be thread-safe and not
     * wait for the main loop. NULL: tokens are not accepted. */
    int (*token_identity)(void *ctx, const char *token, char *identity, size_t size);
};

struct api_params {
    const char *listen;        /* "HOST:PORT" or "[V6]:PORT" */
    const char *certificates;  /* directory in nbdkit's layout: ca-cert.pem, server-cert.pem,
                                * server-key.pem, optional ca-crl.pem */
    const char *const *admins; /* identity patterns (checked), n_admins of them */
    size_t n_admins;
    unsigned connections; /* at once, >= 1 */
    unsigned timeout_s;   /* an idle connection is closed after this, >= 1 */
    qb_loop_t *loop;      /* the daemon's main loop */
    const struct api_ops *ops;
    void *ctx; /* given to ops */
};

struct api;

/* Loads the credentials, binds p->listen and starts serving. 0, or -errno
 * with err naming the file or address and why ("/etc/vsan/tls/
 * server-key.pem: ..."). p's strings must outlive the api. Main loop. */
int api_start(const struct api_params *p, struct api **out, char *err, size_t errlen);

/* Reads the certificate, key, CA and CRL again (SIGHUP): new handshakes
 * and new client checks use them, those under way keep the old ones. 0,
 * or -errno with err set, the old credentials kept. Main loop. */
int api_reload(struct api *a, char *err, size_t errlen);

/* Answers the requests still queued or running with 503, closes every
 * connection and frees a. A call the daemon answers after this is
 * dropped then. Main loop. */
void api_stop(struct api *a);

/* The daemon's answer to call: reply is the admin reply, {"ok": true,
 * ...} or {"ok": false, "error": CODE, "message": ...}, taken (put here);
 * NULL means out of memory (500). Main loop, exactly once per call. */
void api_call_answer(struct api_call *call, struct json_object *reply);

/* The HTTP status of an error code (admin or API_E_*); 500 for unknown
 * ones. */
unsigned api_status(const char *code);

#endif
