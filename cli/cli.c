/* cli.c - `vsan`, the command line of a vsan node.
 *
 * Each command becomes one admin request (admin_proto.h) to the local
 * vsand over libqb IPC; the reply is shown for people (cli_format.c) or,
 * with --json, printed as it came for scripts. The exit code tells scripts
 * what went wrong without parsing messages (see help_text). Arguments are
 * checked here as far as the CLI can (count, size syntax); the rules of
 * names and sizes are the daemon's, which answers with a precise error.
 */
#include "common/admin_proto.h"
#include "common/json_add.h"
#include "cli/cli_format.h"
#include "common/size.h"

#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <qb/qbipcc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

enum exit_code {
    EXIT_OK = 0,
    EXIT_ERROR = 1,
    EXIT_USAGE = 2,
    EXIT_NO_DAEMON = 3,
    EXIT_NO_VOLUME = 4,
    EXIT_EXISTS = 5,
    EXIT_IN_USE = 6,
    EXIT_BAD_SIZE = 7,
};

/* How long a command may take in the daemon (a create syncs to disk). */
#define REPLY_TIMEOUT_MS 60000

static const char help_text[] =
    "usage: vsan [-s SOCKET] [--json] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  vsan status                         the node: name, version, addresses, uptime\n"
    "  vsan volume list                    every volume: name, size, used, connections\n"
    "  vsan volume show NAME               one volume\n"
    "  vsan volume create NAME SIZE        a new, zero-filled volume\n"
    "  vsan volume resize NAME SIZE [--force]\n"
    "                                      grow it; shrinking destroys data: --force\n"
    "  vsan volume delete NAME             delete it and its data\n"
    "  vsan volume verify NAME             compare its replicas, region by region\n"
    "  vsan replica fail NAME              this node's copy failed (drills): it is\n"
    "                                      outdated, I/O goes on at the others\n"
    "  vsan replica replace NAME           this node's copy is on a new, empty disk:\n"
    "                                      rebuild it from the current replicas\n"
    "  vsan failover NODE                  move node NODE's service address to the\n"
    "                                      next member (maintenance); it stays there\n"
    "  vsan giveback NODE                  give it back to NODE (a current member)\n"
    "  vsan help                           this help\n"
    "\n"
    "SIZE is in bytes or with a binary unit: 512M, 10G, 1T, 10GiB (K = 1024);\n"
    "it must be a multiple of 512 bytes. NAME: 1 to 64 characters of\n"
    "A-Z a-z 0-9 . _ -, not starting with '.' or '-'.\n"
    "\n"
    "Options:\n"
    "  -s, --socket SOCKET  vsand's admin socket: the [admin] socket of its config\n"
    "                       (default $" ADMIN_SOCKET_ENV ", else " ADMIN_SOCKET_DEFAULT ")\n"
    "      --json           print the reply as one JSON document, for scripts\n"
    "                       (errors still go to stderr, with the exit codes below)\n"
    "  -h, --help           this help\n"
    "  -V, --version        the version\n"
    "\n"
    "Exit codes:\n"
    "  0  ok\n"
    "  1  other error\n"
    "  2  usage error: bad arguments, unknown command, bad volume name\n"
    "  3  vsand is not running, or can't be reached\n"
    "  4  no such volume\n"
    "  5  volume already exists\n"
    "  6  volume in use (NBD clients connected)\n"
    "  7  bad size: unparsable, zero, not a multiple of 512, too big, or a\n"
    "     shrink without --force\n";

struct command {
    const char *group, *verb; /* "volume", "create"; verb NULL for "status" */
    const char *args;         /* what follows, for messages */
    unsigned nargs;           /* NAME, then SIZE */
    bool takes_force;
    bool node_arg;       /* the argument is a node id ("node"), not a NAME */
    const char *request; /* the admin command */
    void (*print)(struct json_object *reply);
};

static const struct command commands[] = {
    {"status", NULL, "", 0, false, false, "status", cli_print_status},
    {"volume", "list", "", 0, false, false, "volume.list", cli_print_volume_list},
    {"volume", "show", "NAME", 1, false, false, "volume.show", cli_print_volume},
    {"volume", "create", "NAME SIZE", 2, false, false, "volume.create", cli_print_created},
    {"volume", "resize", "NAME SIZE [--force]", 2, true, false, "volume.resize", cli_print_resized},
    {"volume", "delete", "NAME", 1, false, false, "volume.delete", cli_print_deleted},
    {"volume", "verify", "NAME", 1, false, false, "volume.verify", cli_print_verified},
    {"replica", "fail", "NAME", 1, false, false, "replica.fail", cli_print_replica_failed},
    {"replica", "replace", "NAME", 1, false, false, "replica.replace", cli_print_replica_replaced},
    {"failover", NULL, "NODE", 1, false, true, "service.failover", cli_print_service_moved},
    {"giveback", NULL, "NODE", 1, false, true, "service.giveback", cli_print_service_moved},
};

struct invocation {
    const char *socket;
    bool json;
    bool force;
    const struct command *cmd;
    const char *args[2];
    unsigned nargs;
};

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("vsan: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(see vsan help)\n", stderr);
    return EXIT_USAGE;
}

static int help(void)
{
    fputs(help_text, stdout);
    return EXIT_OK;
}

/* Options before the command: -s, --json, -h, -V. Returns -1 to go on,
 * else an exit code. */
static int parse_global_options(int argc, char **argv, struct invocation *inv)
{
    static const struct option longopts[] = {{"socket", required_argument, NULL, 's'},
                                             {"json", no_argument, NULL, 'j'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"version", no_argument, NULL, 'V'},
                                             {NULL, 0, NULL, 0}};
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:s:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            inv->socket = optarg;
            break;
        case 'j':
            inv->json = true;
            break;
        case 'h':
            return help();
        case 'V':
            printf("vsan %s\n", VSAN_VERSION);
            return EXIT_OK;
        case ':':
            return usage_error("option %s needs an argument", argv[optind - 1]);
        default: /* optopt is 0 for an unknown long option */
            if (optopt)
                return usage_error("unknown option -%c", optopt);
            return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    return -1;
}

static const struct command *find_command(const char *group, const char *verb)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        const struct command *c = &commands[i];
        if (strcmp(c->group, group) == 0 && (!c->verb || (verb && strcmp(c->verb, verb) == 0)))
            return c;
    }
    return NULL;
}

static const char *command_name(const struct command *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s%s", c->group, c->verb ? " " : "", c->verb ? c->verb : "");
    return buf;
}

/* The words after the command: positional arguments and the flags
 * --force, --json, --help anywhere among them. A size such as "-1G" is an
 * argument (and a bad size), not an unknown option. */
static int parse_command_args(char **words, int n, struct invocation *inv)
{
    char name[32];

    command_name(inv->cmd, name, sizeof name);
    for (int i = 0; i < n; i++) {
        if (strcmp(words[i], "--json") == 0) {
            inv->json = true;
        } else if (strcmp(words[i], "--force") == 0) {
            if (!inv->cmd->takes_force)
                return usage_error("%s: --force is only for volume resize", name);
            inv->force = true;
        } else if (strcmp(words[i], "-h") == 0 || strcmp(words[i], "--help") == 0) {
            return help();
        } else if (strncmp(words[i], "--", 2) == 0) {
            return usage_error("%s: unknown option %s", name, words[i]);
        } else if (inv->nargs == inv->cmd->nargs) {
            return usage_error("%s: unexpected argument \"%s\" (usage: vsan %s %s)", name, words[i],
                               name, inv->cmd->args);
        } else {
            inv->args[inv->nargs++] = words[i];
        }
    }
    if (inv->nargs < inv->cmd->nargs)
        return usage_error("%s: missing arguments (usage: vsan %s %s)", name, name, inv->cmd->args);
    return -1;
}

static int parse_command(char **words, int n, struct invocation *inv)
{
    if (n == 0)
        return usage_error("no command given");
    if (strcmp(words[0], "help") == 0)
        return help();
    bool has_verb = strcmp(words[0], "volume") == 0 || strcmp(words[0], "replica") == 0;
    if (has_verb && n < 2)
        return usage_error(strcmp(words[0], "volume") == 0
                               ? "volume: which one? list, show, create, resize, delete or verify"
                               : "replica: which one? fail or replace");
    inv->cmd = find_command(words[0], has_verb ? words[1] : NULL);
    if (!inv->cmd && has_verb)
        return usage_error("unknown command \"%s %s\"", words[0], words[1]);
    if (!inv->cmd)
        return usage_error("unknown command \"%s\"", words[0]);
    int skip = has_verb ? 2 : 1;
    return parse_command_args(words + skip, n - skip, inv);
}

static int parse_size_arg(const char *arg, uint64_t *size)
{
    int r = size_parse(arg, size);

    if (r == -ERANGE) {
        fprintf(stderr, "vsan: size \"%s\": too large\n", arg);
        return EXIT_BAD_SIZE;
    }
    if (r < 0) {
        fprintf(stderr, "vsan: size \"%s\": not a size (write e.g. 512M, 10G or 1T)\n", arg);
        return EXIT_BAD_SIZE;
    }
    return -1;
}

/* {"cmd": ..., "node": ID}: a node id is a positive decimal number. */
static int build_node_request(const struct invocation *inv, struct json_object **out)
{
    const char *arg = inv->args[0];
    char *end;
    errno = 0;
    unsigned long long id = strtoull(arg, &end, 10);
    if (arg[0] < '0' || arg[0] > '9' || *end != '\0' || errno || id == 0 || id > UINT32_MAX)
        return usage_error("node \"%s\": not a node id (a number such as 3)", arg);
    struct json_object *req = json_object_new_object();
    if (!req || json_add(req, "cmd", json_object_new_string(inv->cmd->request)) < 0 ||
        json_add(req, "node", json_object_new_int64((int64_t)id)) < 0) {
        json_object_put(req);
        fprintf(stderr, "vsan: out of memory\n");
        return EXIT_ERROR;
    }
    *out = req;
    return -1;
}

/* Builds the request; returns -1 with *out set, or an exit code. */
static int build_request(const struct invocation *inv, struct json_object **out)
{
    struct json_object *req;
    uint64_t size = 0;
    int r;

    if (inv->cmd->nargs == 2 && (r = parse_size_arg(inv->args[1], &size)) >= 0)
        return r;
    if (inv->cmd->node_arg)
        return build_node_request(inv, out);
    req = json_object_new_object();
    if (!req || json_add(req, "cmd", json_object_new_string(inv->cmd->request)) < 0 ||
        (inv->nargs >= 1 && json_add(req, "name", json_object_new_string(inv->args[0])) < 0) ||
        (inv->nargs >= 2 && json_add(req, "size", json_object_new_int64((int64_t)size)) < 0) ||
        (inv->force && json_add(req, "force", json_object_new_boolean(1)) < 0)) {
        fprintf(stderr, "vsan: out of memory\n");
        json_object_put(req);
        return EXIT_ERROR;
    }
    *out = req;
    return -1;
}

static int connect_daemon(const char *socket, qb_ipcc_connection_t **out)
{
    char name[ADMIN_NAME_MAX + 1];
    int r = admin_service_name(socket, name, sizeof name);

    if (r < 0)
        return usage_error("bad admin socket \"%s\": %s", socket,
                           r == -EINVAL ? "use A-Z a-z 0-9 . _ / -" : "name too long");
    *out = qb_ipcc_connect(name, ADMIN_MSG_MAX);
    if (!*out) {
        int e = errno;
        fprintf(stderr, "vsan: cannot connect to vsand at \"%s\": %s%s\n", socket, strerror(e),
                e == ECONNREFUSED || e == ENOENT ? " (is vsand running?)" : "");
        return EXIT_NO_DAEMON;
    }
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

    ssize_t n = qb_ipcc_sendv_recv(c, iov, 2, buf, len - 1, REPLY_TIMEOUT_MS);
    if (n == -ETIMEDOUT) {
        fprintf(stderr, "vsan: vsand at \"%s\" did not answer within %d s\n", socket,
                REPLY_TIMEOUT_MS / 1000);
        return EXIT_ERROR;
    }
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
static bool reply_ok(struct json_object *reply)
{
    return json_object_get_boolean(json_object_object_get(reply, "ok"));
}

/* Runs req against the daemon; -1 with *reply set, or an exit code. */
static int call_daemon(const char *socket, struct json_object *req, struct json_object **reply)
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

static int error_exit_code(const char *code)
{
    static const struct {
        const char *code;
        int exit;
    } map[] = {{ADMIN_E_NO_SUCH_VOLUME, EXIT_NO_VOLUME}, {ADMIN_E_VOLUME_EXISTS, EXIT_EXISTS},
               {ADMIN_E_VOLUME_IN_USE, EXIT_IN_USE},     {ADMIN_E_BAD_SIZE, EXIT_BAD_SIZE},
               {ADMIN_E_BAD_NAME, EXIT_USAGE},           {ADMIN_E_UNKNOWN_COMMAND, EXIT_USAGE}};

    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (strcmp(map[i].code, code) == 0)
            return map[i].exit;
    }
    return EXIT_ERROR;
}

static const char *reply_string(struct json_object *reply, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(reply, key, &v) || !json_object_is_type(v, json_type_string))
        return "?";
    return json_object_get_string(v);
}

static int show_reply(const struct invocation *inv, struct json_object *reply)
{
    if (!reply_ok(reply)) {
        fprintf(stderr, "vsan: %s\n", reply_string(reply, "message"));
        return error_exit_code(reply_string(reply, "error"));
    }
    if (!inv->json) {
        inv->cmd->print(reply);
        return EXIT_OK;
    }
    json_object_object_del(reply, "ok");
    puts(json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                   JSON_C_TO_STRING_NOSLASHESCAPE));
    return EXIT_OK;
}

static int run(const struct invocation *inv)
{
    struct json_object *req = NULL, *reply;
    int r = build_request(inv, &req);

    if (r >= 0)
        return r;
    r = call_daemon(inv->socket, req, &reply);
    json_object_put(req);
    if (r >= 0)
        return r;
    r = show_reply(inv, reply);
    json_object_put(reply);
    return r;
}

static int flush_stdout(int code)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "vsan: write to stdout: %s\n", strerror(errno));
        return code == EXIT_OK ? EXIT_ERROR : code;
    }
    return code;
}

int main(int argc, char **argv)
{
    struct invocation inv = {.socket = getenv(ADMIN_SOCKET_ENV)};
    int r;

    if (!inv.socket || !inv.socket[0])
        inv.socket = ADMIN_SOCKET_DEFAULT;
    r = parse_global_options(argc, argv, &inv);
    if (r < 0)
        r = parse_command(argv + optind, argc - optind, &inv);
    if (r < 0)
        r = run(&inv);
    return flush_stdout(r);
}
