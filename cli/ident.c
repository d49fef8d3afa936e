/* ident.c - `vsan quota set IDENTITY SIZE|none [--volumes N]`, `vsan quota list`,
 * `vsan token create IDENTITY`, `vsan token list`, `vsan token revoke ID`:
 * the quotas and the API's bearer tokens of the replicated volume table
 * (admin quota.*, token.*). A new token is printed once, here, and kept by
 * the cluster only as a hash. */
#include "cli/ident.h"

#include "cli/admin_call.h"
#include "common/json_add.h"
#include "common/size.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QUOTA_USAGE "usage: vsan quota set IDENTITY SIZE|none [--volumes N] | list"
#define TOKEN_USAGE "usage: vsan token create IDENTITY | list | revoke ID"

static const char *str_of(struct json_object *o, const char *key)
{
    return cli_reply_string(o, key);
}

static uint64_t u64_of(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_uint64(v) : 0;
}

/* The reply's array key, or NULL. */
static struct json_object *array_of(struct json_object *reply, const char *key)
{
    struct json_object *a;
    if (!json_object_object_get_ex(reply, key, &a) || !json_object_is_type(a, json_type_array))
        return NULL;
    return a;
}

static void print_quotas(struct json_object *reply)
{
    struct json_object *a = array_of(reply, "quotas");
    size_t n = a ? json_object_array_length(a) : 0;
    if (n == 0) {
        printf("no quotas\n");
        return;
    }
    printf("%-12s %-12s %-8s %-8s %s\n", "LIMIT", "USED", "VOLUMES", "OWNED", "IDENTITY");
    for (size_t i = 0; i < n; i++) {
        struct json_object *q = json_object_array_get_idx(a, i);
        char limit[SIZE_FORMAT_MAX], used[SIZE_FORMAT_MAX];
        size_format(u64_of(q, "limit"), limit, sizeof limit);
        size_format(u64_of(q, "used"), used, sizeof used);
        printf("%-12s %-12s %-8" PRIu64 " %-8" PRIu64 " %s\n", limit, used, u64_of(q, "volumes"),
               u64_of(q, "used_volumes"), str_of(q, "identity"));
    }
}

static void print_quota_set(struct json_object *reply)
{
    struct json_object *v;
    bool changed = json_object_object_get_ex(reply, "changed", &v) && json_object_get_boolean(v);
    uint64_t limit = u64_of(reply, "limit");
    char human[SIZE_FORMAT_MAX];
    size_format(limit, human, sizeof human);
    if (limit)
        printf("quota of \"%s\": %s in %" PRIu64 " volumes%s\n", str_of(reply, "identity"), human,
               u64_of(reply, "volumes"), changed ? "" : " (it was already)");
    else
        printf("quota of \"%s\": none%s\n", str_of(reply, "identity"),
               changed ? "" : " (there was none)");
}

/* A token's creation time, in UTC. */
static void format_time(int64_t t, char *buf, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, size, "%" PRId64, t);
}

static void print_tokens(struct json_object *reply)
{
    struct json_object *a = array_of(reply, "tokens");
    size_t n = a ? json_object_array_length(a) : 0;
    if (n == 0) {
        printf("no tokens\n");
        return;
    }
    printf("%-16s %-20s %s\n", "ID", "CREATED", "IDENTITY");
    for (size_t i = 0; i < n; i++) {
        struct json_object *t = json_object_array_get_idx(a, i);
        char when[32];
        format_time((int64_t)u64_of(t, "created"), when, sizeof when);
        printf("%-16s %-20s %s\n", str_of(t, "id"), when, str_of(t, "identity"));
    }
}

static void print_token_made(struct json_object *reply)
{
    printf("token %s for \"%s\" (shown only now; keep it secret):\n%s\n", str_of(reply, "id"),
           str_of(reply, "identity"), str_of(reply, "token"));
}

static void print_token_revoked(struct json_object *reply)
{
    printf("token %s of \"%s\" revoked\n", str_of(reply, "id"), str_of(reply, "identity"));
}

/* Sends req (put here) as what; prints the reply with print, or as JSON. */
static int call(const char *socket, bool json, const char *what, struct json_object *req,
                void (*print)(struct json_object *reply))
{
    struct json_object *reply = NULL;
    int r = cli_call_ok(socket, what, req, &reply);
    json_object_put(req);
    if (r >= 0)
        return r;
    if (json) {
        cli_print_json(reply);
    } else {
        print(reply);
    }
    json_object_put(reply);
    return EXIT_OK;
}

/* The want positional words after the verb into args, --json anywhere,
 * and (volumes not NULL) --volumes N: -1, or an exit code. */
static int positional(char **words, int n, const char *cmd, const char *usage, int want,
                      const char **args, bool *json, const char **volumes)
{
    int k = 0;
    for (int i = 1; i < n; i++) {
        if (strcmp(words[i], "--json") == 0)
            *json = true;
        else if (volumes && strcmp(words[i], "--volumes") == 0 && i + 1 < n)
            *volumes = words[++i];
        else if (strncmp(words[i], "--", 2) == 0)
            return cli_usage_error("%s: unknown option %s (%s)", cmd, words[i], usage);
        else if (k == want)
            return cli_usage_error("%s: unexpected argument \"%s\" (%s)", cmd, words[i], usage);
        else
            args[k++] = words[i];
    }
    if (k < want)
        return cli_usage_error("%s: missing arguments (%s)", cmd, usage);
    return -1;
}

/* {"cmd": cmd, key: value} (key NULL: {"cmd": cmd}), or NULL. */
static struct json_object *request(const char *cmd, const char *key, const char *value)
{
    struct json_object *req = json_object_new_object();
    if (!req || json_add(req, "cmd", json_object_new_string(cmd)) < 0 ||
        (key && json_add(req, key, json_object_new_string(value)) < 0)) {
        json_object_put(req);
        fprintf(stderr, "vsan: out of memory\n");
        return NULL;
    }
    return req;
}

/* SIZE, or "none" (0, as is "0"): -1 with *size, or EXIT_BAD_SIZE. */
static int quota_size(const char *arg, uint64_t *size)
{
    if (strcmp(arg, "none") == 0 || strcmp(arg, "0") == 0) {
        *size = 0;
        return -1;
    }
    int r = size_parse(arg, size);
    if (r < 0) {
        fprintf(stderr, "vsan: quota \"%s\": %s\n", arg,
                r == -ERANGE ? "too large" : "not a size (write e.g. 100G, or none)");
        return EXIT_BAD_SIZE;
    }
    return -1;
}

int cli_quota(const char *socket, bool json, char **words, int n)
{
    if (n == 0)
        return cli_usage_error("quota: which one? set or list (" QUOTA_USAGE ")");
    const char *args[2];
    bool set = strcmp(words[0], "set") == 0;
    if (!set && strcmp(words[0], "list") != 0)
        return cli_usage_error("unknown command \"quota %s\" (" QUOTA_USAGE ")", words[0]);
    const char *volumes = NULL;
    int r = positional(words, n, set ? "quota set" : "quota list", QUOTA_USAGE, set ? 2 : 0, args,
                       &json, set ? &volumes : NULL);
    if (r >= 0)
        return r;
    if (!set) {
        struct json_object *req = request("quota.list", NULL, NULL);
        return req ? call(socket, json, "quota list", req, print_quotas) : EXIT_ERROR;
    }
    uint64_t size;
    if ((r = quota_size(args[1], &size)) >= 0)
        return r;
    char *end = NULL;
    long long count = volumes ? strtoll(volumes, &end, 10) : 0;
    if (volumes && (end == volumes || *end || count < 1 || count > INT32_MAX))
        return cli_usage_error("quota set: --volumes %s: not a count of volumes (%s)", volumes,
                               QUOTA_USAGE);
    struct json_object *req = request("quota.set", "identity", args[0]);
    if (req && ((volumes && json_add(req, "volumes", json_object_new_int64(count)) < 0) ||
                json_add(req, "size", json_object_new_int64((int64_t)size)) < 0)) {
        json_object_put(req);
        req = NULL;
    }
    return req ? call(socket, json, "quota set", req, print_quota_set) : EXIT_ERROR;
}

int cli_token(const char *socket, bool json, char **words, int n)
{
    static const struct {
        const char *verb, *cmd, *field;
        void (*print)(struct json_object *reply);
    } verbs[] = {
        {"create", "token.create", "identity", print_token_made},
        {"list", "token.list", NULL, print_tokens},
        {"revoke", "token.revoke", "id", print_token_revoked},
    };
    if (n == 0)
        return cli_usage_error("token: which one? create, list or revoke (" TOKEN_USAGE ")");
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (strcmp(words[0], verbs[i].verb) != 0)
            continue;
        char what[32];
        snprintf(what, sizeof what, "token %s", verbs[i].verb);
        const char *arg = NULL;
        int r = positional(words, n, what, TOKEN_USAGE, verbs[i].field ? 1 : 0, &arg, &json, NULL);
        if (r >= 0)
            return r;
        struct json_object *req = request(verbs[i].cmd, verbs[i].field, arg);
        return req ? call(socket, json, what, req, verbs[i].print) : EXIT_ERROR;
    }
    return cli_usage_error("unknown command \"token %s\" (" TOKEN_USAGE ")", words[0]);
}
