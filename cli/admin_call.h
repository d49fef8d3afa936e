/* admin_call.h - the `vsan` CLI's side of the admin protocol: one request
 * to the local vsand, its reply, and the exit codes both the table-driven
 * commands (cli.c) and backup, restore and clone (backup.c) return. */
#ifndef VSAN_CLI_ADMIN_CALL_H
#define VSAN_CLI_ADMIN_CALL_H

#include <json-c/json.h>
#include <stdbool.h>

/* The exit codes; cli.c's help text documents them. */
enum exit_code {
    EXIT_OK = 0,
    EXIT_ERROR = 1,
    EXIT_USAGE = 2,
    EXIT_NO_DAEMON = 3,
    EXIT_NO_VOLUME = 4,
    EXIT_EXISTS = 5,
    EXIT_IN_USE = 6,
    EXIT_BAD_SIZE = 7,
    EXIT_NO_SNAPSHOT = 8,
    EXIT_SNAPSHOT_EXISTS = 9,
    EXIT_BUSY = 10,
    EXIT_BAD_STREAM = 11,
    EXIT_WRONG_BASE = 12,
    EXIT_TOO_MANY_VOLUMES = 13,
    EXIT_SNAPSHOT_LIMIT = 14,
    EXIT_NO_GRANT = 15,
    EXIT_GRANT_LIMIT = 16,
    EXIT_FORBIDDEN = 17,
    EXIT_QUOTA_EXCEEDED = 18,
    EXIT_NO_TOKEN = 19,
    EXIT_TABLE_FULL = 20,
    EXIT_BAD_REPLICAS = 21,    /* a replica count or node list not allowed */
    EXIT_NO_NODE = 22,         /* a node named is not a member */
    EXIT_NO_SPACE = 23,        /* placement: too few nodes have room */
    EXIT_REPLICA_REFUSED = 24, /* replica add/remove against the set's rules */
};

/* "vsan: MESSAGE\n(see vsan help)" on stderr; returns EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* How long cli_call waits for vsand to accept, then to answer (60 s
 * unless set; ms > 0). */
void cli_set_timeout(int ms);

/* Runs req against the daemon at socket: -1 with *reply set (ok or not),
 * or an exit code, the reason on stderr. */
int cli_call(const char *socket, struct json_object *req, struct json_object **reply);

/* cli_call, and a failed reply is an error too: its message goes to
 * stderr after "vsan: " and what, and its code maps to the exit code. */
int cli_call_ok(const char *socket, const char *what, struct json_object *req,
                struct json_object **reply);

bool cli_reply_ok(struct json_object *reply);
/* Prints a successful reply as --json shows it: pretty, without "ok". */
void cli_print_json(struct json_object *reply);
/* reply[key] if a string, else "?". */
const char *cli_reply_string(struct json_object *reply, const char *key);
/* The exit code of a failed reply's "error". */
int cli_error_exit_code(const char *code);

#endif
