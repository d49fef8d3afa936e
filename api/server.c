/* server.c - the network API's HTTP server on libmicrohttpd (see api.h).
 *
 * MHD calls on_request several times per request on its own thread: once
 * with the headers (the caller is authenticated and the route found then,
 * so a refused request never has its body read), once per piece of body,
 * and once at its end, when the request is handed to the main loop and
 * the connection suspended. The main loop runs it through the daemon's
 * execute; the answer, now or once the cluster agreed, is stored in the
 * call and the connection resumed, and on_request, called again, sends it.
 *
 * A call has two owners, counted: MHD's request (until on_completed) and,
 * once queued, the daemon (until it answers). Neither frees it under the
 * other; after api_stop a late answer just drops the daemon's share.
 */
#include "api/api.h"

#include "api/creds.h"
#include "api/routes.h"
#include "common/admin_proto.h"
#include "common/identity.h"
#include "common/netaddr.h"

#include <ctype.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <qb/qblog.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Longest bearer token looked up; longer ones are refused as unknown. */
#define TOKEN_MAX 256

struct api_call {
    atomic_int refs;              /* MHD's request, and the daemon's while queued or running */
    struct api *api;              /* NULL once api_stop answered it (main loop) */
    struct api_call *next, *prev; /* in the queue (api lock), or running (main loop) */
    struct MHD_Connection *conn;
    const struct api_route *route;
    char url[256];
    char *body; /* the request body, at most API_BODY_MAX bytes */
    size_t len;
    char *request; /* the admin request, once the body is in */
    size_t reqlen;
    char identity[IDENTITY_MAX + 1];
    struct api_caller who;
    bool suspended;        /* handed to the main loop: MHD thread only */
    struct api_http reply; /* set before the response is queued or the connection resumed */
    bool answered;
};

struct api {
    struct api_params p;
    struct MHD_Daemon *mhd;
    struct api_creds *creds; /* the installed set, holding those it replaced */
    int efd;                 /* wakes the main loop for the queue */
    pthread_mutex_t lock;    /* the queue and stopping */
    struct api_call *queue_head, *queue_tail;
    bool stopping;
    struct api_call *running; /* handed to execute, not answered: main loop */
};

static void call_put(struct api_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    free(c->body);
    free(c->request);
    free(c->reply.body);
    free(c);
}

/* Queues c's reply on its connection (MHD thread). */
static enum MHD_Result send_reply(struct api_call *c)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(c->reply.len, c->reply.body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    enum MHD_Result r =
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (r == MHD_YES && c->reply.status == 401)
        r = MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (r == MHD_YES && c->reply.allow)
        r = MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, c->reply.allow);
    if (r == MHD_YES)
        r = MHD_queue_response(c->conn, c->reply.status, resp);
    MHD_destroy_response(resp);
    return r;
}

/* A refusal made on MHD's thread, sent at once. */
static enum MHD_Result refuse(struct api_call *c, const char *code, const char *fmt,
                              const char *arg)
{
    api_http_error(&c->reply, code, fmt, arg);
    qb_log(LOG_DEBUG, "api: %s refused: %s", c->url, c->reply.body);
    c->answered = true;
    return send_reply(c);
}

/* The answer to a request that comes while the API stops. */
static void set_stopping(struct api_call *c)
{
    api_http_error(&c->reply, ADMIN_E_SYSTEM, "vsand is stopping");
    c->reply.status = 503;
    c->answered = true;
}

/* ---- authentication (MHD thread) ------------------------------------- */

static bool is_admin(const struct api *a, const char *identity, bool certificate)
{
    for (size_t i = 0; i < a->p.n_admins; i++)
        if (identity_matches(a->p.admins[i], identity, certificate))
            return true;
    return false;
}

static enum MHD_Result by_token(struct api *a, struct api_call *c, const char *auth)
{
    static const char scheme[] = "Bearer ";
    if (strncasecmp(auth, scheme, sizeof scheme - 1) != 0)
        return refuse(c, API_E_UNAUTHORIZED, "%s", "Authorization: only Bearer tokens are taken");
    const char *token = auth + sizeof scheme - 1;
    token += strspn(token, " ");
    int r = -ENOENT;
    if (!a->p.ops->token_identity)
        return refuse(c, API_E_UNAUTHORIZED, "%s", "this node takes no bearer tokens");
    if (strlen(token) <= TOKEN_MAX)
        r = a->p.ops->token_identity(a->p.ctx, token, c->identity, sizeof c->identity);
    if (r == -ENOENT)
        return refuse(c, API_E_UNAUTHORIZED, "%s", "unknown or revoked bearer token");
    if (r == -EAGAIN) /* 503: the token may be revoked where the group is */
        return refuse(c, ADMIN_E_NO_QUORUM, "%s",
                      "bearer tokens are not checked now: this node has no quorum, or is not "
                      "synced with the cluster; try again, or another node");
    if (r < 0)
        return refuse(c, ADMIN_E_SYSTEM, "bearer token: %s", strerror(-r));
    c->who = (struct api_caller){c->identity, false, is_admin(a, c->identity, false)};
    return MHD_YES;
}

/* Sets c->who from the client certificate or the bearer token; refuses
 * the request (401) when neither proves who the caller is. */
static enum MHD_Result authenticate(struct api *a, struct api_call *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    const char *why = "no session";
    int r =
        ci ? api_creds_identify(ci->tls_session, c->identity, sizeof c->identity, &why) : -EACCES;
    if (r == 0) {
        c->who = (struct api_caller){c->identity, true, is_admin(a, c->identity, true)};
        return MHD_YES;
    }
    if (r != -ENOENT)
        return refuse(c, API_E_UNAUTHORIZED, "client certificate refused: %s", why);
    const char *auth =
        MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth)
        return by_token(a, c, auth);
    return refuse(c, API_E_UNAUTHORIZED, "%s",
                  "no credentials: present a client certificate signed by the cluster's CA, "
                  "or Authorization: Bearer TOKEN");
}

/* ---- requests (MHD thread) ------------------------------------------- */

/* The headers are in: who, which route, and whether the body may fit. */
static enum MHD_Result begin(struct api *a, struct api_call *c, const char *method, const char *url)
{
    if (snprintf(c->url, sizeof c->url, "%s", url) >= (int)sizeof c->url)
        return refuse(c, API_E_NOT_FOUND, "%s", "no resource has so long a path");
    enum MHD_Result r = authenticate(a, c);
    if (r != MHD_YES || c->answered)
        return r;
    c->route = api_route_find(method, url, &c->reply);
    if (!c->route) {
        c->answered = true;
        return send_reply(c);
    }
    const char *cl =
        MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > API_BODY_MAX)
        return refuse(c, ADMIN_E_TOO_LARGE, "request body of %s bytes is larger than 65536", cl);
    return MHD_YES;
}

/* A piece of the body. One that would pass API_BODY_MAX (only a chunked
 * body can: a Content-Length is checked first) closes the connection. */
static enum MHD_Result take_body(struct api_call *c, const char *data, size_t *size)
{
    if (c->answered) {
        *size = 0; /* a refusal is queued: MHD discards the rest */
        return MHD_YES;
    }
    if (*size > API_BODY_MAX - c->len) {
        qb_log(LOG_DEBUG, "api: %s: chunked body above %d bytes: connection closed", c->url,
               API_BODY_MAX);
        return MHD_NO;
    }
    char *b = realloc(c->body, c->len + *size + 1);
    if (!b)
        return MHD_NO;
    memcpy(b + c->len, data, *size);
    c->len += *size;
    b[c->len] = '\0';
    c->body = b;
    *size = 0;
    return MHD_YES;
}

/* The whole request is in: hand it to the main loop, its connection
 * suspended until the answer comes. */
static enum MHD_Result hand_over(struct api *a, struct api_call *c)
{
    if (api_route_request(c->route, c->url, c->body ? c->body : "", c->len, &c->request, &c->reqlen,
                          &c->reply) < 0) {
        c->answered = true;
        return send_reply(c);
    }
    pthread_mutex_lock(&a->lock);
    if (a->stopping) {
        pthread_mutex_unlock(&a->lock);
        set_stopping(c);
        return send_reply(c);
    }
    MHD_suspend_connection(c->conn);
    c->suspended = true;
    atomic_fetch_add(&c->refs, 1); /* the daemon's, until it answers */
    c->next = NULL;
    if (a->queue_tail)
        a->queue_tail->next = c;
    else
        a->queue_head = c;
    a->queue_tail = c;
    pthread_mutex_unlock(&a->lock);
    uint64_t one = 1;
    if (write(a->efd, &one, sizeof one) != sizeof one)
        qb_log(LOG_ERR, "api: can't wake the main loop: %s", strerror(errno));
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *size, void **con_cls)
{
    struct api *a = cls;
    struct api_call *c = *con_cls;
    (void)version;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            return MHD_NO;
        atomic_init(&c->refs, 1);
        c->conn = conn;
        *con_cls = c;
        return begin(a, c, method, url);
    }
    if (*size)
        return take_body(c, data, size);
    if (c->answered)
        return c->suspended ? send_reply(c) : MHD_YES;
    return hand_over(a, c);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
    (void)cls, (void)conn, (void)why;
    if (*con_cls)
        call_put(*con_cls);
    *con_cls = NULL;
}

/* MHD's unescaping of the path, except that "%00" stays as it is: a NUL
 * would cut "/api/v1/volumes/db%00x" to volume "db". Returns the new
 * length of s, unescaped in place. */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls, (void)conn;
    char *w = s;
    for (const char *r = s; *r; r++) {
        int v;
        if (r[0] == '%' && isxdigit((unsigned char)r[1]) && isxdigit((unsigned char)r[2]) &&
            sscanf(r + 1, "%2x", &v) == 1 && v != 0) {
            *w++ = (char)v;
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    qb_log(LOG_DEBUG, "api: libmicrohttpd: %s", msg);
}

/* ---- the main loop's side -------------------------------------------- */

static void unlink_running(struct api *a, struct api_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        a->running = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
}

/* Stores reply in c and resumes its connection, whose next on_request
 * sends it. */
static void resume_with(struct api_call *c)
{
    c->answered = true;
    MHD_resume_connection(c->conn);
}

void api_call_answer(struct api_call *call, struct json_object *reply)
{
    struct api *a = call->api;
    if (a) {
        unlink_running(a, call);
        api_route_reply(call->route, reply, &call->reply);
        resume_with(call);
    }
    json_object_put(reply);
    call_put(call);
}

static struct api_call *take_queue(struct api *a)
{
    pthread_mutex_lock(&a->lock);
    struct api_call *q = a->queue_head;
    a->queue_head = a->queue_tail = NULL;
    pthread_mutex_unlock(&a->lock);
    return q;
}

static int32_t on_queue(int32_t fd, int32_t revents, void *data)
{
    struct api *a = data;
    uint64_t n;
    (void)revents;
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN)
        qb_log(LOG_ERR, "api: reading the queue's eventfd: %s", strerror(errno));
    struct api_call *c = take_queue(a);
    while (c) {
        struct api_call *next = c->next;
        c->api = a;
        c->prev = NULL;
        c->next = a->running;
        if (a->running)
            a->running->prev = c;
        a->running = c;
        a->p.ops->execute(a->p.ctx, c, &c->who, c->request, c->reqlen);
        c = next;
    }
    return 0;
}

static int start_mhd(struct api *a, int fd, char *err, size_t errlen)
{
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TLS |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    a->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, a, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, a,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_HTTPS_CERT_CALLBACK, api_creds_retrieve,
        MHD_OPTION_HTTPS_MEM_TRUST, api_creds_ca_pem(a->creds), MHD_OPTION_CONNECTION_LIMIT,
        a->p.connections, MHD_OPTION_CONNECTION_TIMEOUT, a->p.timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)API_CONNECTION_MEMORY,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, a, MHD_OPTION_UNESCAPE_CALLBACK, unescape, a,
        MHD_OPTION_END);
    if (!a->mhd) {
        snprintf(err, errlen, "[api] listen = %s: libmicrohttpd did not start (debug log says why)",
                 a->p.listen);
        return -EIO;
    }
    return 0;
}

int api_start(const struct api_params *p, struct api **out, char *err, size_t errlen)
{
    struct api *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->p = *p;
    a->efd = -1;
    pthread_mutex_init(&a->lock, NULL);
    int r = 0;
    a->creds = api_creds_load(p->certificates, err, errlen);
    if (!a->creds)
        r = -EINVAL;
    if (r == 0) {
        api_creds_install(a->creds);
        a->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        r = a->efd < 0 ? -errno
                       : qb_loop_poll_add(p->loop, QB_LOOP_MED, a->efd, POLLIN, a, on_queue);
        if (r < 0)
            snprintf(err, errlen, "api: main loop: %s", strerror(-r));
    }
    int fd = r == 0 ? netaddr_listen(p->listen, 64, "api listen") : -1;
    if (r == 0 && fd < 0) {
        r = fd;
        snprintf(err, errlen, "[api] listen = %s: %s", p->listen, strerror(-r));
    }
    if (r == 0)
        r = start_mhd(a, fd, err, errlen); /* MHD owns fd from here, and closes it on failure */
    if (r < 0) {
        if (a->efd >= 0) {
            qb_loop_poll_del(p->loop, a->efd);
            close(a->efd);
        }
        api_creds_free(a->creds);
        pthread_mutex_destroy(&a->lock);
        free(a);
        return r;
    }
    qb_log(LOG_INFO, "api: serving https://%s/api/v1 (%zu admin identities)", p->listen,
           p->n_admins);
    *out = a;
    return 0;
}

int api_reload(struct api *a, char *err, size_t errlen)
{
    struct api_creds *c = api_creds_load(a->p.certificates, err, errlen);
    if (!c)
        return -EINVAL;
    api_creds_install(c);
    a->creds = c;
    return 0;
}

/* Answers c with 503 (main loop). */
static void stop_answer(struct api_call *c)
{
    set_stopping(c);
    MHD_resume_connection(c->conn);
}

void api_stop(struct api *a)
{
    pthread_mutex_lock(&a->lock);
    a->stopping = true;
    pthread_mutex_unlock(&a->lock);
    for (struct api_call *c = take_queue(a), *next; c; c = next) {
        next = c->next;
        stop_answer(c);
        call_put(c); /* the daemon never saw it */
    }
    for (struct api_call *c = a->running, *next; c; c = next) {
        next = c->next;
        c->api = NULL; /* the daemon's answer, if it comes, is dropped */
        stop_answer(c);
    }
    MHD_stop_daemon(a->mhd);
    qb_loop_poll_del(a->p.loop, a->efd);
    close(a->efd);
    api_creds_free(a->creds);
    pthread_mutex_destroy(&a->lock);
    free(a);
}
