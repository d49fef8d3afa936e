/* replica.c - moving a volume's replicas between nodes:
 *   vsan replica add VOL [NODE]        a new copy (placement picks NODE if absent)
 *   vsan replica remove VOL NODE       a copy dropped
 *   vsan replica move VOL FROM TO      add TO, wait until it is current, remove FROM
 *   vsan node drain NODE               move every copy NODE holds elsewhere
 *
 * add and remove are one admin call each (replica.add, replica.remove:
 * a configuration epoch through the cluster). move and drain are built of
 * them here, so the copy is never fewer: the new replica is filled by a
 * full resync and removal waits until it is current. Interrupted (^C, a
 * node lost), a move leaves one copy more, never one less: `vsan volume
 * show` shows it and `replica remove` takes it away.
 */
#include "cli/replica.h"

#include "cli/admin_call.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How often a move looks whether the new copy is current, and how long it
 * waits for one that stays outdated. */
#define POLL_MS 250
#define OUTDATED_MAX_S 60

/* moving: the removal that ends a move, or lowers the count on purpose
 * (volume set): its min_current counts the copies without the one going,
 * so a move of a single copy, or 2 -> 1, is allowed by default. */
static struct json_object *request_moving(const char *cmd, const char *vol, const char *node,
                                          bool moving)
{
    struct json_object *req = json_object_new_object();
    json_object_object_add(req, "cmd", json_object_new_string(cmd));
    if (vol)
        json_object_object_add(req, "name", json_object_new_string(vol));
    if (node)
        json_object_object_add(req, "node", json_object_new_string(node));
    if (moving)
        json_object_object_add(req, "moving", json_object_new_boolean(true));
    return req;
}

static struct json_object *request(const char *cmd, const char *vol, const char *node)
{
    return request_moving(cmd, vol, node, false);
}

/* One admin call; -1 with *reply (ok), or the exit code (said on stderr). */
static int call(const char *socket, const char *what, struct json_object *req,
                struct json_object **reply)
{
    if (!req) {
        fprintf(stderr, "vsan: out of memory\n");
        return EXIT_ERROR;
    }
    int r = cli_call_ok(socket, what, req, reply);
    json_object_put(req);
    return r;
}

static int64_t get_int(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

/* The state of node's replica in a volume object ("" if it holds none). */
static const char *replica_state(struct json_object *vol, uint32_t node)
{
    struct json_object *a;
    if (!json_object_object_get_ex(vol, "replicas", &a))
        return "";
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        struct json_object *r = json_object_array_get_idx(a, i);
        if (get_int(r, "node") == node)
            return cli_reply_string(r, "state");
    }
    return "";
}

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Adds a replica of vol on node (NULL: placement's choice); *added: the
 * node. -1, or the exit code. */
static int add(const char *socket, const char *vol, const char *node, uint32_t *added)
{
    struct json_object *reply;
    int r = call(socket, "replica add", request("replica.add", vol, node), &reply);
    if (r >= 0)
        return r;
    *added = (uint32_t)get_int(reply, "replica");
    json_object_put(reply);
    return -1;
}

/* Waits until node's replica of vol is current, saying where it is every
 * 10 s on stderr. -1, or the exit code. */
static int wait_current(const char *socket, const char *vol, uint32_t node, bool quiet)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double said = 0, outdated = 0;
    for (;;) {
        struct json_object *reply;
        int r = call(socket, "replica move", request("volume.show", vol, NULL), &reply);
        if (r >= 0)
            return r;
        char state[32];
        snprintf(state, sizeof state, "%s", replica_state(reply, node));
        json_object_put(reply);
        if (strcmp(state, "current") == 0)
            return -1;
        if (state[0] == '\0') {
            fprintf(stderr, "vsan: volume \"%s\": node %u's new replica was removed meanwhile\n",
                    vol, node);
            return EXIT_ERROR;
        }
        /* A copy that stays outdated is not being filled (its node's
         * store failed, or it left): the move stops, one copy more. */
        if (strcmp(state, "outdated") != 0)
            outdated = 0;
        else if (outdated == 0)
            outdated = since(&t0);
        else if (since(&t0) - outdated > OUTDATED_MAX_S) {
            fprintf(stderr,
                    "vsan: volume \"%s\": node %u's new replica has been outdated for %d s: "
                    "stopped (see vsan volume show %s; vsan replica remove takes it away)\n",
                    vol, node, OUTDATED_MAX_S, vol);
            return EXIT_ERROR;
        }
        if (!quiet && since(&t0) - said >= 10) {
            said = since(&t0);
            fprintf(stderr, "volume \"%s\": node %u's replica is %s (%.0f s)\n", vol, node, state,
                    said);
        }
        nanosleep(&(struct timespec){0, POLL_MS * 1000 * 1000}, NULL);
    }
}

static int remove_replica(const char *socket, const char *vol, const char *node, bool moving,
                          struct json_object **reply)
{
    return call(socket, "replica remove", request_moving("replica.remove", vol, node, moving),
                reply);
}

/* The id of the pool's node named word (an id or a name), or word as a
 * number (a node that is down: its copies are moved from the others); 0
 * if none. */
static uint32_t pool_node(struct json_object *pool, const char *word)
{
    char *end;
    unsigned long id = strtoul(word, &end, 10);
    struct json_object *a;
    if (!json_object_object_get_ex(pool, "nodes", &a))
        a = NULL;
    for (size_t i = 0; a && i < json_object_array_length(a); i++) {
        struct json_object *x = json_object_array_get_idx(a, i);
        char id[16];
        snprintf(id, sizeof id, "%" PRId64, get_int(x, "node"));
        if (strcmp(id, word) == 0 || strcmp(cli_reply_string(x, "name"), word) == 0)
            return (uint32_t)get_int(x, "node");
    }
    return *word && *end == '\0' && id <= UINT32_MAX ? (uint32_t)id : 0;
}

/* The node word names (pool_node), asked of the daemon's pool status: -1
 * with *node set (0: none), or the exit code (said). */
static int resolve(const char *socket, const char *what, const char *word, uint32_t *node)
{
    struct json_object *pool;
    int r = call(socket, what, request("pool.status", NULL, NULL), &pool);
    if (r >= 0)
        return r;
    *node = pool_node(pool, word);
    json_object_put(pool);
    return -1;
}

/* Whether the node word names holds a copy of vol: -1 if so, else the exit
 * code (said), so that a move adds nothing it could not finish. */
static int holds(const char *socket, const char *vol, const char *word)
{
    struct json_object *show;
    uint32_t node;
    int r = resolve(socket, "replica move", word, &node);
    if (r >= 0)
        return r;
    r = call(socket, "replica move", request("volume.show", vol, NULL), &show);
    if (r >= 0)
        return r;
    bool has = node != 0 && replica_state(show, node)[0] != '\0';
    json_object_put(show);
    if (has)
        return -1;
    fprintf(stderr, "vsan: replica move: volume \"%s\": node %s holds no replica of it\n", vol,
            word);
    return EXIT_REPLICA_REFUSED;
}

/* add to, wait until it is current, remove from: -1 with *reply (the
 * volume after the removal) and *added, or the exit code. */
static int move(const char *socket, bool quiet, const char *vol, const char *from, const char *to,
                struct json_object **reply, uint32_t *added)
{
    int r = holds(socket, vol, from);
    if (r < 0)
        r = add(socket, vol, to, added);
    if (r < 0)
        r = wait_current(socket, vol, *added, quiet);
    if (r < 0)
        r = remove_replica(socket, vol, from, true, reply);
    return r;
}

/* Where a drain stopped, after move said why: vol and the volumes after
 * it stay on node, and a copy the move added (to, 0 if none) stays too. */
static void drain_stopped(uint32_t node, const char *vol, unsigned moved, uint32_t to)
{
    fprintf(stderr,
            "vsan: node drain: node %u: stopped at volume \"%s\" (above), %u replica(s) moved "
            "before it; it and the rest stay on node %u",
            node, vol, moved, node);
    if (to)
        fprintf(stderr,
                ", and its new copy on node %u stays too (vsan replica remove %s %u takes it "
                "away)",
                to, vol, to);
    fputc('\n', stderr);
}

/* Moves every replica node holds to a node placement picks, one volume at
 * a time (a volume's copies never fewer than before). */
static int drain(const char *socket, bool json, const char *word)
{
    struct json_object *list;
    uint32_t node;
    int r = resolve(socket, "node drain", word, &node);
    if (r >= 0)
        return r;
    if (node == 0) {
        fprintf(stderr, "vsan: node drain: node \"%s\" is not a member (see vsan pool status)\n",
                word);
        return EXIT_NO_NODE;
    }
    r = call(socket, "node drain", request("volume.list", NULL, NULL), &list);
    if (r >= 0)
        return r;
    char id[16];
    snprintf(id, sizeof id, "%u", node);
    struct json_object *a;
    unsigned moved = 0;
    r = -1;
    if (json_object_object_get_ex(list, "volumes", &a))
        for (size_t i = 0; r < 0 && i < json_object_array_length(a); i++) {
            struct json_object *v = json_object_array_get_idx(a, i);
            if (replica_state(v, node)[0] == '\0')
                continue;
            const char *vol = cli_reply_string(v, "name");
            struct timespec t0;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            struct json_object *after;
            uint32_t to = 0;
            r = move(socket, json, vol, id, NULL, &after, &to);
            if (r >= 0) {
                drain_stopped(node, vol, moved, to);
                break;
            }
            json_object_put(after);
            moved++;
            if (!json)
                printf("volume \"%s\": replica moved from node %u to node %u in %.1f s\n", vol,
                       node, to, since(&t0));
        }
    json_object_put(list);
    if (r >= 0)
        return r;
    if (json)
        printf("{\n  \"node\":%u,\n  \"moved\":%u\n}\n", node, moved);
    else
        printf("node %u drained: %u replica(s) moved\n", node, moved);
    return EXIT_OK;
}

/* The replica of vol to remove first when there are too many: one not
 * current (it serves nothing), else the highest id; 0 if none. */
static uint32_t victim(struct json_object *vol)
{
    struct json_object *a;
    uint32_t pick = 0;
    bool pick_current = true;
    if (!json_object_object_get_ex(vol, "replicas", &a))
        return 0;
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        struct json_object *r = json_object_array_get_idx(a, i);
        uint32_t node = (uint32_t)get_int(r, "node");
        bool current = strcmp(cli_reply_string(r, "state"), "current") == 0;
        if (!pick || (pick_current && !current) || (current == pick_current && node > pick)) {
            pick = node;
            pick_current = current;
        }
    }
    return pick;
}

/* `volume set VOL --replicas N`: adds copies where placement puts them,
 * one at a time, each current before the next; or removes the surplus,
 * copies not current first, under min_current. */
static int set_replicas(const char *socket, bool json, const char *vol, unsigned want)
{
    for (;;) {
        struct json_object *show;
        int r = call(socket, "volume set", request("volume.show", vol, NULL), &show);
        if (r >= 0)
            return r;
        struct json_object *a;
        size_t have =
            json_object_object_get_ex(show, "replicas", &a) ? json_object_array_length(a) : 0;
        uint32_t drop = victim(show);
        if (have == want) {
            if (json)
                cli_print_json(show);
            else
                printf("volume \"%s\": %u replica(s)\n", vol, want);
            json_object_put(show);
            return EXIT_OK;
        }
        json_object_put(show);
        uint32_t added;
        if (have < want) {
            r = add(socket, vol, NULL, &added);
            if (r < 0)
                r = wait_current(socket, vol, added, json);
        } else {
            char id[16];
            snprintf(id, sizeof id, "%u", drop);
            struct json_object *after;
            r = remove_replica(socket, vol, id, true, &after);
            if (r < 0)
                json_object_put(after);
        }
        if (r >= 0)
            return r;
    }
}

int cli_volume_set(const char *socket, bool json, char **words, int n)
{
    char *end;
    unsigned long want =
        n == 3 && strcmp(words[1], "--replicas") == 0 ? strtoul(words[2], &end, 10) : 0;
    if (n != 3 || strcmp(words[1], "--replicas") != 0 || !*words[2] || *end)
        return cli_usage_error("volume set: usage: vsan volume set VOL --replicas N");
    if (want < 1 || want > 32) {
        fprintf(stderr, "vsan: volume set: --replicas %s: must be from 1 to 32\n", words[2]);
        return EXIT_BAD_REPLICAS;
    }
    return set_replicas(socket, json, words[0], (unsigned)want);
}

int cli_replica(const char *socket, bool json, char **words, int n)
{
    const char *verb = n > 0 ? words[0] : "";
    struct json_object *reply;
    int r;
    if (strcmp(verb, "add") == 0 && (n == 2 || n == 3)) {
        uint32_t added;
        r = add(socket, words[1], n == 3 ? words[2] : NULL, &added);
        if (r >= 0)
            return r;
        if (json)
            printf("{\n  \"name\":\"%s\",\n  \"replica\":%u\n}\n", words[1], added);
        else
            printf("volume \"%s\": replica added on node %u: it is filled from a current copy "
                   "now (see vsan volume show %s)\n",
                   words[1], added, words[1]);
        return EXIT_OK;
    }
    if (strcmp(verb, "remove") == 0 && n == 3) {
        r = remove_replica(socket, words[1], words[2], false, &reply);
        if (r >= 0)
            return r;
        if (json)
            cli_print_json(reply);
        else
            printf("volume \"%s\": replica on node %s removed\n", words[1], words[2]);
        json_object_put(reply);
        return EXIT_OK;
    }
    if (strcmp(verb, "move") == 0 && n == 4) {
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        uint32_t to;
        r = move(socket, json, words[1], words[2], words[3], &reply, &to);
        if (r >= 0)
            return r;
        if (json)
            cli_print_json(reply);
        else
            printf("volume \"%s\": replica moved from node %s to node %u in %.1f s\n", words[1],
                   words[2], to, since(&t0));
        json_object_put(reply);
        return EXIT_OK;
    }
    return cli_usage_error("replica %s: usage: vsan replica add VOL [NODE] | remove VOL NODE | "
                           "move VOL FROM TO",
                           verb);
}

int cli_node(const char *socket, bool json, char **words, int n)
{
    if (n == 2 && strcmp(words[0], "drain") == 0)
        return drain(socket, json, words[1]);
    return cli_usage_error("node: usage: vsan node drain NODE");
}
