/* rollback.c - `vsan snapshot rollback VOL SNAP [--progress]`: asks the
 * local vsand to roll VOL back (admin snapshot.rollback: a fence through
 * the cluster, then a copy on the node), then follows it
 * (snapshot.rollback_status) with a progress line until the copy is done
 * and the fence lifted. */
#include "cli/rollback.h"

#include "cli/admin_call.h"
#include "cli/nbd_client.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static struct json_object *request(const char *cmd, const char *vol, const char *snap)
{
    struct json_object *req = json_object_new_object();
    json_object_object_add(req, "cmd", json_object_new_string(cmd));
    json_object_object_add(req, "name", json_object_new_string(vol));
    if (snap)
        json_object_object_add(req, "snapshot", json_object_new_string(snap));
    return req;
}

static int64_t get_int(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

static bool get_bool(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

/* Polls the status every 200 ms until the copy ended and the fence is
 * lifted; prints progress. */
static int follow(const char *socket, const char *vol, struct progress *p,
                  struct json_object **last)
{
    for (;;) {
        struct json_object *req = request("snapshot.rollback_status", vol, NULL), *st = NULL;
        int r = cli_call_ok(socket, "rollback", req, &st);
        json_object_put(req);
        if (r >= 0)
            return r;
        p->total = (uint64_t)get_int(st, "total");
        progress_update(p, (uint64_t)get_int(st, "done"), (uint64_t)get_int(st, "done"));
        if (!get_bool(st, "running") && !get_bool(st, "fenced")) {
            *last = st;
            return -1;
        }
        json_object_put(st);
        nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
    }
}

int cli_rollback(const char *socket, bool json, char **words, int n)
{
    bool force = false;
    const char *args[2];
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(words[i], "--progress") == 0)
            force = true;
        else if (k < 2)
            args[k++] = words[i];
        else
            return cli_usage_error("snapshot rollback: too many arguments (usage: vsan snapshot "
                                   "rollback VOL SNAP [--progress])");
    }
    if (k < 2)
        return cli_usage_error("snapshot rollback: usage: vsan snapshot rollback VOL SNAP "
                               "[--progress]");
    struct json_object *req = request("snapshot.rollback", args[0], args[1]), *reply = NULL;
    int r = cli_call_ok(socket, "snapshot rollback", req, &reply);
    json_object_put(req);
    if (r >= 0)
        return r;
    json_object_put(reply);
    struct progress p;
    progress_init(&p, args[0], 0, force);
    struct json_object *st = NULL;
    r = follow(socket, args[0], &p, &st);
    if (r >= 0)
        return r;
    progress_done(&p);
    struct json_object *err;
    bool failed = json_object_object_get_ex(st, "error", &err) && err;
    if (json)
        printf("%s\n", json_object_to_json_string_ext(st, JSON_C_TO_STRING_PRETTY));
    else if (failed)
        fprintf(stderr, "vsan: volume \"%s\": rollback to \"%s\" failed: %s\n", args[0], args[1],
                json_object_get_string(err));
    else
        printf("volume \"%s\" rolled back to snapshot \"%s\": %" PRId64 " bytes copied back in "
               "%.1f s\n",
               args[0], args[1], get_int(st, "done"), progress_seconds(&p));
    json_object_put(st);
    return failed ? EXIT_ERROR : EXIT_OK;
}
