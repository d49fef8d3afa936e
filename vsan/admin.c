/* admin.c - serves admin_execute() to the CLI over libqb IPC.
 *
 * The service lives in the daemon's qb_loop: libqb asks for its sockets to
 * be polled through the handlers below, and every request is handled to
 * completion on the loop's thread, one at a time, so the commands need no
 * locking of their own against each other. Only root and the daemon's own
 * user may connect. A request that is not ours (wrong message id, too
 * short) gets an error reply like any bad request; the connection stays.
 */
#include "vsan/admin.h"

#include "common/admin_proto.h"
#include "vsan/config.h"

#include <errno.h>
#include <qb/qbipcs.h>
#include <qb/qblog.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

struct admin {
    qb_ipcs_service_t *service;
    const struct admin_node *node;
};

/* The loop libqb's poll callbacks go to: they carry no context of their
 * own. Set by admin_start(); only the main thread touches it. */
static qb_loop_t *admin_loop;

static int32_t job_add(enum qb_loop_priority p, void *data, qb_loop_job_dispatch_fn fn)
{
    return qb_loop_job_add(admin_loop, p, data, fn);
}

static int32_t poll_add(enum qb_loop_priority p, int32_t fd, int32_t events, void *data,
                        qb_ipcs_dispatch_fn_t fn)
{
    return qb_loop_poll_add(admin_loop, p, fd, events, data, fn);
}

static int32_t poll_mod(enum qb_loop_priority p, int32_t fd, int32_t events, void *data,
                        qb_ipcs_dispatch_fn_t fn)
{
    return qb_loop_poll_mod(admin_loop, p, fd, events, data, fn);
}

static int32_t poll_del(int32_t fd)
{
    return qb_loop_poll_del(admin_loop, fd);
}

static struct qb_ipcs_poll_handlers poll_handlers = {
    .job_add = job_add,
    .dispatch_add = poll_add,
    .dispatch_mod = poll_mod,
    .dispatch_del = poll_del,
};

static int32_t on_accept(qb_ipcs_connection_t *c, uid_t uid, gid_t gid)
{
    (void)c;
    if (uid == 0 || uid == geteuid()) {
        qb_log(LOG_DEBUG, "admin: client uid %u gid %u connected", (unsigned)uid, (unsigned)gid);
        return 0;
    }
    qb_log(LOG_WARNING, "admin: refused a client of uid %u: only root and uid %u may connect",
           (unsigned)uid, (unsigned)geteuid());
    return -EACCES;
}

/* Always answers, so the client never waits for a reply that won't come. */
static void send_reply(qb_ipcs_connection_t *c, struct json_object *reply)
{
    static const char oom[] =
        "{\"ok\":false,\"error\":\"" ADMIN_E_SYSTEM "\",\"message\":\"vsand is out of memory\"}";
    static const char too_large[] = "{\"ok\":false,\"error\":\"" ADMIN_E_SYSTEM
                                    "\",\"message\":\"the reply is too large to send\"}";
    struct qb_ipc_response_header hdr = {.id = ADMIN_MSG_JSON, .error = 0};
    struct iovec iov[2] = {{&hdr, sizeof hdr}};
    size_t len = 0;
    const char *json =
        reply ? json_object_to_json_string_length(reply, JSON_C_TO_STRING_PLAIN, &len) : NULL;

    if (!json) {
        json = oom;
        len = sizeof oom - 1;
    } else if (sizeof hdr + len > ADMIN_MSG_MAX) {
        qb_log(LOG_ERR, "admin: reply of %zu bytes exceeds the IPC buffer of %d", len,
               ADMIN_MSG_MAX);
        json = too_large;
        len = sizeof too_large - 1;
    }
    iov[1] = (struct iovec){(void *)json, len};
    hdr.size = (int32_t)(sizeof hdr + len);
    ssize_t r = qb_ipcs_response_sendv(c, iov, 2);
    if (r < 0)
        qb_log(LOG_WARNING, "admin: sending a reply: %s", strerror((int)-r));
}

/* A call holds a reference on its connection until it is answered, so a
 * client that went away meanwhile costs only a failed send. */
struct ipc_call {
    struct admin_call call;
    qb_ipcs_connection_t *conn;
};

static void ipc_answer(struct admin_call *call, struct json_object *reply)
{
    struct ipc_call *ic = (struct ipc_call *)call;
    send_reply(ic->conn, reply);
    json_object_put(reply);
    qb_ipcs_connection_unref(ic->conn);
    free(ic);
}

static int32_t on_message(qb_ipcs_connection_t *c, void *data, size_t size)
{
    const struct admin *adm = qb_ipcs_connection_service_context_get(c);
    const struct qb_ipc_request_header *hdr = data;
    struct ipc_call *ic = malloc(sizeof *ic);
    struct json_object *reply = NULL;
    bool later = false;

    if (!ic) {
        send_reply(c, NULL);
        return 0;
    }
    *ic = (struct ipc_call){{ipc_answer}, c};
    qb_ipcs_connection_ref(c);
    if (size < sizeof *hdr || hdr->id != ADMIN_MSG_JSON) {
        reply = admin_reply_error(ADMIN_E_BAD_REQUEST, "not a vsan admin message (id %d)",
                                  size < sizeof *hdr ? -1 : hdr->id);
    } else {
        reply = admin_execute(adm->node, NULL, (const char *)data + sizeof *hdr, size - sizeof *hdr,
                              &ic->call, &later);
    }
    if (!later)
        admin_call_reply(&ic->call, reply);
    return 0;
}

static struct qb_ipcs_service_handlers service_handlers = {
    .connection_accept = on_accept,
    .msg_process = on_message,
};

int admin_start(qb_loop_t *loop, const struct admin_node *node, struct admin **out)
{
    const char *socket = node->cfg->admin_socket;
    char name[ADMIN_NAME_MAX + 1];
    int r = admin_service_name(socket, name, sizeof name);

    if (r < 0) {
        qb_log(LOG_ERR, "admin socket \"%s\": %s", socket, strerror(-r));
        return r;
    }
    struct admin *adm = calloc(1, sizeof *adm);
    if (!adm)
        return -ENOMEM;
    adm->node = node;
    admin_loop = loop;
    errno = 0;
    adm->service = qb_ipcs_create(name, 0, QB_IPC_SOCKET, &service_handlers);
    if (!adm->service) {
        r = errno ? -errno : -ENOMEM;
        qb_log(LOG_ERR, "admin socket \"%s\": create IPC service: %s", socket, strerror(-r));
        free(adm);
        return r;
    }
    qb_ipcs_service_context_set(adm->service, adm);
    qb_ipcs_enforce_buffer_size(adm->service, ADMIN_MSG_MAX);
    qb_ipcs_poll_handlers_set(adm->service, &poll_handlers);
    r = qb_ipcs_run(adm->service); /* on failure it frees the service */
    if (r < 0) {
        qb_log(LOG_ERR, "admin socket \"%s\": %s%s", socket, strerror(-r),
               r == -EADDRINUSE ? " (another vsand serves this name)" : "");
        free(adm);
        return r;
    }
    *out = adm;
    return 0;
}

void admin_stop(struct admin *adm)
{
    qb_ipcs_destroy(adm->service);
    free(adm);
}
