/* admin_call.c - one admin request to the local vsand over libqb IPC
 * (admin_proto.h), and what its failures mean as exit codes. */
#include "cli/admin_call.h"

#include "common/admin_proto.h"

#include <errno.h>
#include <poll.h>
#include <qb/qbipcc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

/* How long vsand may take to accept the connection, and then to answer
 * (a create syncs to disk): cli_set_timeout, 60 s by default. vsand
 * accepts from its main loop, so a loop that is stuck would otherwise
 * hang the caller (a script, a monitoring check) for good. */
static int timeout_ms = 60000;

void cli_set_timeout(int ms)
{
    timeout_ms = ms;
}

static int no_answer(const char *socket, const char *what)
{
    fprintf(stderr, "vsan: vsand at \"%s\" did not %s within %g s\n", socket, what,
            timeout_ms / 1000.0);
    return EXIT_ERROR;
}

/* Waits for fd to be readable, at most timeout_ms: 1, 0 on timeout, or
 * -errno. */
static int wait_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n;
    while ((n = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
        ;
    return n < 0 ? -errno : n;
}

int cli_usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("vsan: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(see vsan help)\n", stderr);
    return EXIT_USAGE;
}

static int connect_daemon(const char *socket, qb_ipcc_connection_t **out)
{
    char name[ADMIN_NAME_MAX + 1];
    int r = admin_service_name(socket, name, sizeof name);

    if (r < 0)
        return cli_usage_error("bad admin socket \"%s\": %s", socket,
                               r == -EINVAL ? "use A-Z a-z 0-9 . _ / -" : "name too long");
    int fd, e = 0;
    qb_ipcc_connection_t *c = qb_ipcc_connect_async(name, ADMIN_MSG_MAX, &fd);
    if (!c)
        e = errno;
    else if ((r = wait_readable(fd)) == 0)
        return no_answer(socket, "accept the connection"); /* c is dropped at exit */
    else if (r < 0 || (r = qb_ipcc_connect_continue(c)) < 0)
        e = -r; /* a failed continue freed c */
    if (e) {
        fprintf(stderr, "vsan: cannot connect to vsand at \"%s\": %s%s\n", socket, strerror(e),
                e == ECONNREFUSED || e == ENOENT ? " (is vsand running?)" : "");
        return EXIT_NO_DAEMON;
    }
    *out = c;
    return -1;
}

/* Sends req and fills buf with the reply's JSON text (NUL-terminated). */
static int exchange(qb_ipcc_connection_t *c, const char *socket, struct json_object *req, char *buf,
                    size_t len)
{
    size_t json_len;
    const char *json = json_object_to_json_string_length(req, JSON_C_TO_STRING_PLAIN, &json_len);
    struct qb_ipc_request_header hdr = {.id = ADMIN_MSG_JSON,
                                        .size = (int32_t)(sizeof hdr + json_len)};
    struct iovec iov[2] = {{&hdr, sizeof hdr}, {(void *)json, json_len}};
    const size_t rh = sizeof(struct qb_ipc_response_header);

    ssize_t n = qb_ipcc_sendv_recv(c, iov, 2, buf, len - 1, timeout_ms);
    if (n == -ETIMEDOUT)
        return no_answer(socket, "answer");
    if (n < 0) {
        fprintf(stderr, "vsan: talking to vsand at \"%s\": %s\n", socket, strerror((int)-n));
        return EXIT_NO_DAEMON;
    }
    if ((size_t)n < rh) {
        fprintf(stderr, "vsan: vsand at \"%s\" sent a truncated reply\n", socket);
        return EXIT_ERROR;
    }
    memmove(buf, buf + rh, n - rh);
    buf[n - rh] = '\0';
    return -1;
}

static int parse_reply(const char *text, struct json_object **out)
{
    struct json_object *ok, *reply = json_tokener_parse(text);

    if (!reply || !json_object_is_type(reply, json_type_object) ||
        !json_object_object_get_ex(reply, "ok", &ok) ||
        !json_object_is_type(ok, json_type_boolean)) {
        fprintf(stderr, "vsan: vsand sent a reply that is not ours\n");
        json_object_put(reply);
        return EXIT_ERROR;
    }
    *out = reply;
    return -1;
}

/* Whether reply, checked by parse_reply(), reports success. */
void cli_print_json(struct json_object *reply)
{
    json_object_object_del(reply, "ok");
    puts(json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                   JSON_C_TO_STRING_NOSLASHESCAPE));
}

bool cli_reply_ok(struct json_object *reply)
{
    return json_object_get_boolean(json_object_object_get(reply, "ok"));
}

/* Runs req against the daemon; -1 with *reply set, or an exit code. */
int cli_call(const char *socket, struct json_object *req, struct json_object **reply)
{
    qb_ipcc_connection_t *c = NULL;
    char *buf = malloc(ADMIN_MSG_MAX + 1);
    int r;

    if (!buf) {
        fprintf(stderr, "vsan: out of memory\n");
        return EXIT_ERROR;
    }
    r = connect_daemon(socket, &c);
    if (r < 0) {
        r = exchange(c, socket, req, buf, ADMIN_MSG_MAX + 1);
        qb_ipcc_disconnect(c);
    }
    if (r < 0)
        r = parse_reply(buf, reply);
    free(buf);
    return r;
}

int cli_error_exit_code(const char *code)
{
    static const struct {
        const char *code;
        int exit;
    } map[] = {{ADMIN_E_NO_SUCH_VOLUME, EXIT_NO_VOLUME},
               {ADMIN_E_VOLUME_EXISTS, EXIT_EXISTS},
               {ADMIN_E_VOLUME_IN_USE, EXIT_IN_USE},
               {ADMIN_E_BAD_SIZE, EXIT_BAD_SIZE},
               {ADMIN_E_BAD_NAME, EXIT_USAGE},
               {ADMIN_E_UNKNOWN_COMMAND, EXIT_USAGE},
               {ADMIN_E_NO_SUCH_SNAPSHOT, EXIT_NO_SNAPSHOT},
               {ADMIN_E_SNAPSHOT_EXISTS, EXIT_SNAPSHOT_EXISTS},
               {ADMIN_E_SNAPSHOT_BUSY, EXIT_BUSY},
               {ADMIN_E_BUSY, EXIT_BUSY},
               {ADMIN_E_ABORTED, EXIT_BUSY},
               {ADMIN_E_TOO_MANY_VOLUMES, EXIT_TOO_MANY_VOLUMES},
               {ADMIN_E_SNAPSHOT_LIMIT, EXIT_SNAPSHOT_LIMIT},
               {ADMIN_E_BAD_IDENTITY, EXIT_USAGE},
               {ADMIN_E_NO_SUCH_GRANT, EXIT_NO_GRANT},
               {ADMIN_E_GRANT_LIMIT, EXIT_GRANT_LIMIT},
               {ADMIN_E_FORBIDDEN, EXIT_FORBIDDEN},
               {ADMIN_E_QUOTA_EXCEEDED, EXIT_QUOTA_EXCEEDED},
               {ADMIN_E_NO_SUCH_TOKEN, EXIT_NO_TOKEN},
               {ADMIN_E_LIMIT, EXIT_TABLE_FULL},
               {ADMIN_E_BAD_REPLICAS, EXIT_BAD_REPLICAS},
               {ADMIN_E_NO_SUCH_NODE, EXIT_NO_NODE},
               {ADMIN_E_NO_SPACE, EXIT_NO_SPACE},
               {ADMIN_E_REPLICA_REFUSED, EXIT_REPLICA_REFUSED}};

    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (strcmp(map[i].code, code) == 0)
            return map[i].exit;
    }
    return EXIT_ERROR;
}

const char *cli_reply_string(struct json_object *reply, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(reply, key, &v) || !json_object_is_type(v, json_type_string))
        return "?";
    return json_object_get_string(v);
}

int cli_call_ok(const char *socket, const char *what, struct json_object *req,
                struct json_object **reply)
{
    int r = cli_call(socket, req, reply);
    if (r >= 0)
        return r;
    if (cli_reply_ok(*reply))
        return -1;
    fprintf(stderr, "vsan: %s: %s\n", what, cli_reply_string(*reply, "message"));
    r = cli_error_exit_code(cli_reply_string(*reply, "error"));
    json_object_put(*reply);
    *reply = NULL;
    return r;
}
