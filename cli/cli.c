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
#include "cli/access.h"
#include "cli/admin_call.h"
#include "cli/backup.h"
#include "cli/ident.h"
#include "cli/replica.h"
#include "cli/rollback.h"
#include "cli/cli_format.h"
#include "common/size.h"

#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help_text[] =
    "usage: vsan [-s SOCKET] [--json] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  vsan status                         the node: name, version, addresses, uptime\n"
    "  vsan volume list                    every volume: name, size, used, connections\n"
    "  vsan volume show NAME               one volume\n"
    "  vsan volume create NAME SIZE [--owner IDENTITY] [--replicas N] [--nodes A,B]\n"
    "                                      a new, zero-filled volume (owned by IDENTITY:\n"
    "                                      its quota counts it, it gets a read-write grant)\n"
    "                                      with N copies ([cluster] replicas) on the nodes\n"
    "                                      with most room, or on nodes A,B (id or name)\n"
    "  vsan volume resize NAME SIZE [--force]\n"
    "                                      grow it; shrinking destroys data: --force\n"
    "  vsan volume delete NAME             delete it and its data\n"
    "  vsan pool status                    per node: capacity, free, allocated,\n"
    "                                      provisioned, snapshots, its replicas\n"
    "  vsan volume verify NAME             compare its replicas, region by region\n"
    "  vsan volume clone VOL@SNAP NEW      a new volume with a snapshot's data\n"
    "  vsan snapshot create VOL[,VOL...] SNAP\n"
    "                                      one point in time of one or more volumes\n"
    "  vsan snapshot list VOL              its snapshots: time, size, exclusive size\n"
    "  vsan snapshot delete VOL SNAP       delete one (refused while a node reads it)\n"
    "  vsan snapshot rollback VOL SNAP     make VOL the snapshot (refused while a client\n"
    "                                      has VOL open on any node; newer snapshots stay)\n"
    "  vsan backup VOL@SNAP [--since PREV] -o FILE|-\n"
    "                                      write the snapshot (since PREV: what changed\n"
    "                                      after PREV) as an rbd diff v2 stream\n"
    "  vsan restore FILE|- VOL             apply a stream to VOL (created if missing);\n"
    "                                      VOL then has the stream's snapshot\n"
    "  vsan access grant VOL IDENTITY [--read-only]\n"
    "                                      let IDENTITY see VOL over NBD (and its\n"
    "                                      snapshots, read-only)\n"
    "  vsan access revoke VOL IDENTITY     take it back: its connections to VOL end\n"
    "  vsan access list [VOL]              the grants, of VOL or of every volume\n"
    "  vsan quota set IDENTITY SIZE|none [--volumes N]\n"
    "                                      how much IDENTITY may own, in at most N\n"
    "                                      volumes (default 64; 0 or none: no quota;\n"
    "                                      a client without one may create nothing)\n"
    "  vsan quota list                     the quotas: limit, used, volumes, owned, identity\n"
    "  vsan token create IDENTITY          a bearer token for the API, standing for\n"
    "                                      IDENTITY: shown once, kept only hashed\n"
    "  vsan token list                     the tokens: id, identity, created\n"
    "  vsan token revoke ID                the token stops working on every node\n"
    "  vsan replica fail NAME              this node's copy failed (drills): it is\n"
    "                                      outdated, I/O goes on at the others\n"
    "  vsan replica replace NAME           this node's copy is on a new, empty disk:\n"
    "                                      rebuild it from the current replicas\n"
    "  vsan volume set VOL --replicas N    add copies (where placement puts them, each\n"
    "                                      filled before the next) or remove the surplus\n"
    "                                      (copies not current first)\n"
    "  vsan replica add VOL [NODE]         a new copy on NODE (default: the node with\n"
    "                                      most room), filled from a current copy\n"
    "  vsan replica remove VOL NODE        drop NODE's copy (it stays a diskless\n"
    "                                      access point); [cluster] min_current\n"
    "                                      current copies must remain\n"
    "  vsan replica move VOL FROM TO       add TO, wait until it is current, remove\n"
    "                                      FROM (stopped midway: one copy more)\n"
    "  vsan node drain NODE                move every copy NODE holds to other nodes\n"
    "                                      (then deploy/remove-node takes it out)\n"
    "  vsan failover NODE                  move node NODE's service address to the\n"
    "                                      next member (maintenance); it stays there\n"
    "  vsan giveback NODE                  give it back to NODE (a current member)\n"
    "  vsan help                           this help\n"
    "\n"
    "SIZE is in bytes or with a binary unit: 512M, 10G, 1T, 10GiB (K = 1024);\n"
    "it must be a multiple of 512 bytes. NAME: 1 to 64 characters of\n"
    "A-Z a-z 0-9 . _ -, not starting with '.' or '-'. IDENTITY: a PSK user name\n"
    "or a certificate's CN (NAME, without ':' or '='), a certificate's subject\n"
    "(dn:CN=alice,O=Example, RFC 4514), or anonymous (plain clients).\n"
    "\n"
    "Options:\n"
    "  -s, --socket SOCKET  vsand's admin socket: the [admin] socket of its config\n"
    "                       (default $" ADMIN_SOCKET_ENV ", else " ADMIN_SOCKET_DEFAULT ")\n"
    "  -t, --timeout SECONDS  how long to wait for vsand to accept, then to\n"
    "                       answer (default 60; a fraction is fine: 0.5)\n"
    "      --json           print the reply as one JSON document, for scripts\n"
    "                       (errors still go to stderr, with the exit codes below)\n"
    "  -h, --help           this help\n"
    "  -V, --version        the version\n"
    "\n"
    "Exit codes:\n"
    "  0  ok\n"
    "  1  other error\n"
    "  2  usage error: bad arguments, unknown command, bad volume name or\n"
    "     identity\n"
    "  3  vsand is not running, or can't be reached\n"
    "  4  no such volume\n"
    "  5  volume already exists\n"
    "  6  volume in use (NBD clients connected)\n"
    "  7  bad size: unparsable, zero, not a multiple of 512, too big, or a\n"
    "     shrink without --force\n"
    "  8  no such snapshot\n"
    "  9  snapshot already exists\n"
    "  10 busy, try again: another snapshot is being cut, the cut aborted (a\n"
    "     node left, a timeout), or a backup is reading the snapshot\n"
    "  11 bad stream: not rbd diff v2, malformed or truncated\n"
    "  12 wrong base: VOL lacks the stream's from-snapshot, or was written\n"
    "     since it\n"
    "  13 too many volumes in one snapshot (at most 16)\n"
    "  14 snapshot limit: a volume of the snapshot has 1024 already\n"
    "  15 no such grant (access revoke)\n"
    "  16 grant limit: the volume has 256 grants already\n"
    "  17 forbidden: the caller is not an admin, or not the volume's owner\n"
    "  18 quota exceeded: the volume's owner would pass its quota (bytes or\n"
    "     volumes), or a client has no quota\n"
    "  19 no such token (token revoke)\n"
    "  20 table full: 4096 quotas, tokens or owned volumes already\n"
    "  21 bad replicas: --replicas 0 or above the node count, or not the count\n"
    "     of --nodes\n"
    "  22 no such node: a node --nodes names is not a member\n"
    "  23 no space: too few nodes have room for the volume's replicas\n"
    "  24 replica refused: the node holds a copy already (add) or none\n"
    "     (remove), or a removal would leave fewer than min_current current\n"
    "     copies\n"
    "\n"
    "backup, restore and clone show progress on stderr when it is a terminal\n"
    "(--progress: always); with --json they print a summary when done.\n"
    "backup, restore and clone reach this node's NBD server on its local socket\n"
    "([admin] nbd_socket, from `vsan status`: root only, never TLS, so they work\n"
    "under [nbd] tls = require); --nbd HOST:PORT|SOCKET names another.\n";

enum arg_kind {
    ARG_NAME,         /* NAME [SIZE]: "name", "size" */
    ARG_NODE,         /* NODE: "node" */
    ARG_NAME_SNAP,    /* NAME SNAP: "name", "snapshot" */
    ARG_VOLUMES_SNAP, /* VOL[,VOL...] SNAP: "volumes", "snapshot" */
};

struct command {
    const char *group, *verb; /* "volume", "create"; verb NULL for "status" */
    const char *args;         /* what follows, for messages */
    unsigned nargs;           /* NAME, then SIZE */
    bool takes_force;
    enum arg_kind kind;  /* what the arguments become in the request */
    const char *request; /* the admin command */
    void (*print)(struct json_object *reply);
};

static const struct command commands[] = {
    {"status", NULL, "", 0, false, ARG_NAME, "status", cli_print_status},
    {"volume", "list", "", 0, false, ARG_NAME, "volume.list", cli_print_volume_list},
    {"volume", "show", "NAME", 1, false, ARG_NAME, "volume.show", cli_print_volume},
    {"volume", "create", "NAME SIZE [--owner IDENTITY] [--replicas N] [--nodes A,B]", 2, false,
     ARG_NAME, "volume.create", cli_print_created},
    {"pool", "status", "", 0, false, ARG_NAME, "pool.status", cli_print_pool},
    {"volume", "resize", "NAME SIZE [--force]", 2, true, ARG_NAME, "volume.resize",
     cli_print_resized},
    {"volume", "delete", "NAME", 1, false, ARG_NAME, "volume.delete", cli_print_deleted},
    {"volume", "verify", "NAME", 1, false, ARG_NAME, "volume.verify", cli_print_verified},
    {"replica", "fail", "NAME", 1, false, ARG_NAME, "replica.fail", cli_print_replica_failed},
    {"replica", "replace", "NAME", 1, false, ARG_NAME, "replica.replace",
     cli_print_replica_replaced},
    {"failover", NULL, "NODE", 1, false, ARG_NODE, "service.failover", cli_print_service_moved},
    {"giveback", NULL, "NODE", 1, false, ARG_NODE, "service.giveback", cli_print_service_moved},
    {"snapshot", "create", "VOL[,VOL...] SNAP", 2, false, ARG_VOLUMES_SNAP, "snapshot.create",
     cli_print_snapshots_created},
    {"snapshot", "list", "VOL", 1, false, ARG_NAME, "snapshot.list", cli_print_snapshot_list},
    {"snapshot", "delete", "VOL SNAP", 2, false, ARG_NAME_SNAP, "snapshot.delete",
     cli_print_snapshot_deleted},
};

struct invocation {
    const char *socket;
    bool json;
    bool force;
    const struct command *cmd;
    const char *args[2];
    unsigned nargs;
    const char *owner;            /* volume create --owner */
    const char *replicas, *nodes; /* volume create --replicas, --nodes */
};

static int help(void)
{
    fputs(help_text, stdout);
    return EXIT_OK;
}

/* --timeout SECONDS: 0 or -EINVAL. */
static int set_timeout(const char *arg)
{
    char *end;
    errno = 0;
    double sec = strtod(arg, &end);
    if (errno || end == arg || *end || !(sec > 0 && sec <= 86400))
        return -EINVAL;
    int ms = (int)(sec * 1000);
    cli_set_timeout(ms > 0 ? ms : 1);
    return 0;
}

/* Options before the command: -s, -t, --json, -h, -V. Returns -1 to go on,
 * else an exit code. */
static int parse_global_options(int argc, char **argv, struct invocation *inv)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'}, {"timeout", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},         {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0}};
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:s:t:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            inv->socket = optarg;
            break;
        case 't':
            if (set_timeout(optarg) < 0)
                return cli_usage_error("bad --timeout \"%s\": seconds, more than 0 and at most "
                                       "86400",
                                       optarg);
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
            return cli_usage_error("option %s needs an argument", argv[optind - 1]);
        default: /* optopt is 0 for an unknown long option */
            if (optopt)
                return cli_usage_error("unknown option -%c", optopt);
            return cli_usage_error("unknown option %s", argv[optind - 1]);
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
                return cli_usage_error("%s: --force is only for volume resize", name);
            inv->force = true;
        } else if (strcmp(words[i], "--owner") == 0 &&
                   strcmp(inv->cmd->request, "volume.create") == 0) {
            if (i + 1 == n)
                return cli_usage_error("%s: --owner needs an IDENTITY", name);
            inv->owner = words[++i];
        } else if ((strcmp(words[i], "--replicas") == 0 || strcmp(words[i], "--nodes") == 0) &&
                   strcmp(inv->cmd->request, "volume.create") == 0) {
            if (i + 1 == n)
                return cli_usage_error("%s: %s needs a value", name, words[i]);
            *(words[i][2] == 'r' ? &inv->replicas : &inv->nodes) = words[i + 1];
            i++;
        } else if (strcmp(words[i], "-h") == 0 || strcmp(words[i], "--help") == 0) {
            return help();
        } else if (strncmp(words[i], "--", 2) == 0) {
            return cli_usage_error("%s: unknown option %s", name, words[i]);
        } else if (inv->nargs == inv->cmd->nargs) {
            return cli_usage_error("%s: unexpected argument \"%s\" (usage: vsan %s %s)", name,
                                   words[i], name, inv->cmd->args);
        } else {
            inv->args[inv->nargs++] = words[i];
        }
    }
    if (inv->nargs < inv->cmd->nargs)
        return cli_usage_error("%s: missing arguments (usage: vsan %s %s)", name, name,
                               inv->cmd->args);
    return -1;
}

static int parse_command(char **words, int n, struct invocation *inv)
{
    if (n == 0)
        return cli_usage_error("no command given");
    if (strcmp(words[0], "help") == 0)
        return help();
    if (strcmp(words[0], "backup") == 0)
        return cli_backup(inv->socket, inv->json, words + 1, n - 1);
    if (strcmp(words[0], "restore") == 0)
        return cli_restore(inv->socket, inv->json, words + 1, n - 1);
    if (n >= 2 && strcmp(words[0], "volume") == 0 && strcmp(words[1], "set") == 0)
        return cli_volume_set(inv->socket, inv->json, words + 2, n - 2);
    if (n >= 2 && strcmp(words[0], "volume") == 0 && strcmp(words[1], "clone") == 0)
        return cli_clone(inv->socket, inv->json, words + 2, n - 2);
    if (strcmp(words[0], "access") == 0)
        return cli_access(inv->socket, inv->json, words + 1, n - 1);
    if (strcmp(words[0], "quota") == 0)
        return cli_quota(inv->socket, inv->json, words + 1, n - 1);
    if (strcmp(words[0], "token") == 0)
        return cli_token(inv->socket, inv->json, words + 1, n - 1);
    if (n >= 2 && strcmp(words[0], "snapshot") == 0 && strcmp(words[1], "rollback") == 0)
        return cli_rollback(inv->socket, inv->json, words + 2, n - 2);
    if (n >= 2 && strcmp(words[0], "replica") == 0 &&
        (strcmp(words[1], "add") == 0 || strcmp(words[1], "remove") == 0 ||
         strcmp(words[1], "move") == 0))
        return cli_replica(inv->socket, inv->json, words + 1, n - 1);
    if (strcmp(words[0], "node") == 0)
        return cli_node(inv->socket, inv->json, words + 1, n - 1);
    bool has_verb = strcmp(words[0], "volume") == 0 || strcmp(words[0], "replica") == 0 ||
                    strcmp(words[0], "snapshot") == 0 || strcmp(words[0], "pool") == 0;
    if (has_verb && n < 2)
        return cli_usage_error(
            "%s: which one? %s", words[0],
            strcmp(words[0], "volume") == 0
                ? "list, show, create, resize, delete, verify, set or clone"
            : strcmp(words[0], "snapshot") == 0 ? "create, list, delete or rollback"
            : strcmp(words[0], "pool") == 0     ? "status"
                                                : "fail, replace, add, remove or move");
    inv->cmd = find_command(words[0], has_verb ? words[1] : NULL);
    if (!inv->cmd && has_verb)
        return cli_usage_error("unknown command \"%s %s\"", words[0], words[1]);
    if (!inv->cmd)
        return cli_usage_error("unknown command \"%s\"", words[0]);
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
        return cli_usage_error("node \"%s\": not a node id (a number such as 3)", arg);
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

/* "a,b" -> ["a", "b"]; NULL if out of memory. Names are the daemon's to
 * check: an empty one ("a,,b") is sent and refused there as a bad name. */
static struct json_object *volume_list(const char *arg)
{
    struct json_object *a = json_object_new_array();
    for (const char *p = arg; a; p++) {
        size_t n = strcspn(p, ",");
        if (json_object_array_add(a, json_object_new_string_len(p, (int)n)) < 0) {
            json_object_put(a);
            return NULL;
        }
        p += n;
        if (*p == '\0')
            break;
    }
    return a;
}

/* {"cmd": ..., "name" or "volumes": ..., "snapshot": SNAP} */
static int build_snapshot_request(const struct invocation *inv, struct json_object **out)
{
    struct json_object *req = json_object_new_object();
    bool many = inv->cmd->kind == ARG_VOLUMES_SNAP;
    if (!req || json_add(req, "cmd", json_object_new_string(inv->cmd->request)) < 0 ||
        json_add(req, many ? "volumes" : "name",
                 many ? volume_list(inv->args[0]) : json_object_new_string(inv->args[0])) < 0 ||
        json_add(req, "snapshot", json_object_new_string(inv->args[1])) < 0) {
        json_object_put(req);
        fprintf(stderr, "vsan: out of memory\n");
        return EXIT_ERROR;
    }
    *out = req;
    return -1;
}

/* --replicas N: a whole number (the node checks its range, so that 0 and
 * too many get the same precise error as from the API). -1, or an exit code. */
static int parse_count_arg(const char *arg, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0')
        return cli_usage_error("volume create: --replicas \"%s\": not a number", arg);
    *out = v;
    return -1;
}

/* Builds the request; returns -1 with *out set, or an exit code. */
static int build_request(const struct invocation *inv, struct json_object **out)
{
    struct json_object *req;
    uint64_t size = 0;
    int r;

    if (inv->cmd->kind == ARG_NODE)
        return build_node_request(inv, out);
    if (inv->cmd->kind != ARG_NAME)
        return build_snapshot_request(inv, out);
    if (inv->cmd->nargs == 2 && (r = parse_size_arg(inv->args[1], &size)) >= 0)
        return r;
    int64_t replicas = 0;
    if (inv->replicas && (r = parse_count_arg(inv->replicas, &replicas)) >= 0)
        return r;
    req = json_object_new_object();
    if (!req || json_add(req, "cmd", json_object_new_string(inv->cmd->request)) < 0 ||
        (inv->nargs >= 1 && json_add(req, "name", json_object_new_string(inv->args[0])) < 0) ||
        (inv->nargs >= 2 && json_add(req, "size", json_object_new_int64((int64_t)size)) < 0) ||
        (inv->force && json_add(req, "force", json_object_new_boolean(1)) < 0) ||
        (inv->owner && json_add(req, "owner", json_object_new_string(inv->owner)) < 0) ||
        (inv->nodes && json_add(req, "nodes", json_object_new_string(inv->nodes)) < 0)) {
        fprintf(stderr, "vsan: out of memory\n");
        json_object_put(req);
        return EXIT_ERROR;
    }
    if (inv->replicas && json_add(req, "replicas", json_object_new_int64(replicas)) < 0) {
        fprintf(stderr, "vsan: out of memory\n");
        json_object_put(req);
        return EXIT_ERROR;
    }
    *out = req;
    return -1;
}

static int show_reply(const struct invocation *inv, struct json_object *reply)
{
    if (!cli_reply_ok(reply)) {
        fprintf(stderr, "vsan: %s\n", cli_reply_string(reply, "message"));
        return cli_error_exit_code(cli_reply_string(reply, "error"));
    }
    if (!inv->json) {
        inv->cmd->print(reply);
        return EXIT_OK;
    }
    cli_print_json(reply);
    return EXIT_OK;
}

static int run(const struct invocation *inv)
{
    struct json_object *req = NULL, *reply;
    int r = build_request(inv, &req);

    if (r >= 0)
        return r;
    r = cli_call(inv->socket, req, &reply);
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
