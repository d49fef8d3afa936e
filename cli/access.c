/* access.c - `vsan access grant VOL IDENTITY [--read-only]`, `vsan access
 * revoke VOL IDENTITY`, `vsan access list [VOL]`: the grants of the
 * replicated volume table (admin access.*). The identity's rules are the
 * daemon's, which answers a bad one with bad_identity (exit 2). */
#include "cli/access.h"

#include "cli/admin_call.h"
#include "common/json_add.h"

#include <stdio.h>
#include <string.h>

#define USAGE                                                                                      \
    "usage: vsan access grant VOL IDENTITY [--read-only] | revoke VOL IDENTITY | list [VOL]"

static const char *str_of(struct json_object *o, const char *key)
{
    return cli_reply_string(o, key);
}

static void print_list(struct json_object *reply)
{
    struct json_object *a;
    if (!json_object_object_get_ex(reply, "grants", &a) || !json_object_is_type(a, json_type_array))
        return;
    size_t n = json_object_array_length(a);
    if (n == 0) {
        printf("no grants\n");
        return;
    }
    printf("%-24s %-10s %s\n", "VOLUME", "MODE", "IDENTITY");
    for (size_t i = 0; i < n; i++) {
        struct json_object *g = json_object_array_get_idx(a, i);
        printf("%-24s %-10s %s\n", str_of(g, "volume"), str_of(g, "mode"), str_of(g, "identity"));
    }
}

static void print_change(const char *verb, struct json_object *reply)
{
    struct json_object *v;
    bool changed = json_object_object_get_ex(reply, "changed", &v) && json_object_get_boolean(v);
    if (strcmp(verb, "revoke") == 0)
        printf("volume \"%s\": grant to \"%s\" revoked\n", str_of(reply, "volume"),
               str_of(reply, "identity"));
    else
        printf("volume \"%s\": granted to \"%s\", %s%s\n", str_of(reply, "volume"),
               str_of(reply, "identity"), str_of(reply, "mode"),
               changed ? "" : " (it was already)");
}

/* The request of verb with its positional args; -1 with *out, or an exit
 * code. */
static int build(const char *verb, const char *const *args, int k, bool read_only,
                 struct json_object **out)
{
    bool list = strcmp(verb, "list") == 0;
    char cmd[32];
    snprintf(cmd, sizeof cmd, "access.%s", verb);
    struct json_object *req = json_object_new_object();
    if (!req || json_add(req, "cmd", json_object_new_string(cmd)) < 0 ||
        (k > 0 && json_add(req, "name", json_object_new_string(args[0])) < 0) ||
        (!list && json_add(req, "identity", json_object_new_string(args[1])) < 0) ||
        (read_only && json_add(req, "read_only", json_object_new_boolean(1)) < 0)) {
        json_object_put(req);
        fprintf(stderr, "vsan: out of memory\n");
        return EXIT_ERROR;
    }
    *out = req;
    return -1;
}

int cli_access(const char *socket, bool json, char **words, int n)
{
    if (n == 0)
        return cli_usage_error("access: which one? grant, revoke or list (" USAGE ")");
    const char *verb = words[0];
    bool grant = strcmp(verb, "grant") == 0, list = strcmp(verb, "list") == 0;
    if (!grant && !list && strcmp(verb, "revoke") != 0)
        return cli_usage_error("unknown command \"access %s\" (" USAGE ")", verb);
    const char *args[2];
    int k = 0, want = list ? 1 : 2;
    bool read_only = false;
    for (int i = 1; i < n; i++) {
        if (strcmp(words[i], "--json") == 0)
            json = true;
        else if (strcmp(words[i], "--read-only") == 0 && grant)
            read_only = true;
        else if (strncmp(words[i], "--", 2) == 0)
            return cli_usage_error("access %s: unknown option %s (" USAGE ")", verb, words[i]);
        else if (k == want)
            return cli_usage_error("access %s: unexpected argument \"%s\" (" USAGE ")", verb,
                                   words[i]);
        else
            args[k++] = words[i];
    }
    if (!list && k < want)
        return cli_usage_error("access %s: missing arguments (" USAGE ")", verb);
    struct json_object *req = NULL, *reply = NULL;
    int r = build(verb, args, k, read_only, &req);
    if (r >= 0)
        return r;
    char what[32];
    snprintf(what, sizeof what, "access %s", verb);
    r = cli_call_ok(socket, what, req, &reply);
    json_object_put(req);
    if (r >= 0)
        return r;
    if (json) {
        cli_print_json(reply);
    } else if (list) {
        print_list(reply);
    } else {
        print_change(verb, reply);
    }
    json_object_put(reply);
    return EXIT_OK;
}
