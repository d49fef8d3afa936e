/* admin_pool.c - the pool across the cluster: where a new volume's
 * replicas go (admin_place, for volume.create; policing/placement.h) and
 * `vsan pool status`, both from the figures the nodes announced
 * (PMSG_CAPACITY) and the agreed volume table.
 */
#include "vsan/admin_int.h"

#include "common/admin_proto.h"
#include "common/json_add.h"
#include "common/size.h"
#include "mirror/replicas.h"
#include "policing/placement.h"
#include "policing/protocol.h"
#include "store/store.h"
#include "volume/volume.h"
#include "vsan/config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A node passing this share of its capacity in use gets a warning. */
#define POOL_WARN_PERCENT 85

struct pool_node {
    uint32_t node;
    char name[PMSG_NAME_MAX + 1];
    bool announced; /* cap holds its PMSG_CAPACITY figures */
    struct policing_capacity cap;
    uint64_t provisioned;
    unsigned replicas;
};

struct pool {
    struct pool_node nodes[CLUSTER_NODES_MAX];
    size_t n;
    size_t configured; /* nodes in corosync's nodelist (the members if it has none) */
    struct store_volume *vols;
    size_t nvols;
};

static struct pool_node *pool_find(struct pool *p, uint32_t node)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->nodes[i].node == node)
            return &p->nodes[i];
    return NULL;
}

/* The members, their figures, and what the table puts on each. */
static int pool_gather(const struct admin_node *node, struct pool *p)
{
    struct policing_status *st = malloc(sizeof *st);
    if (!st)
        return -ENOMEM;
    policing_status(node->pc, st);
    *p = (struct pool){.configured = st->nnodes > 0 ? st->nnodes : st->nmembers};
    for (size_t i = 0; i < st->nmembers; i++) {
        struct pool_node *x = &p->nodes[p->n++];
        *x = (struct pool_node){.node = st->members[i].nodeid};
        snprintf(x->name, sizeof x->name, "%s", st->members[i].name);
    }
    free(st);
    struct policing_capacity caps[CLUSTER_NODES_MAX];
    size_t ncaps = policing_capacities(node->pc, caps);
    for (size_t i = 0; i < ncaps; i++) {
        struct pool_node *x = pool_find(p, caps[i].node);
        if (x) {
            x->announced = true;
            x->cap = caps[i];
        }
    }
    int r = volumes_list_records(node->vols, &p->vols, &p->nvols);
    for (size_t i = 0; r == 0 && i < p->nvols; i++)
        for (uint32_t j = 0; j < p->vols[i].nreplicas; j++) {
            struct pool_node *x = pool_find(p, p->vols[i].replicas[j].node);
            if (x) {
                x->provisioned += p->vols[i].size;
                x->replicas++;
            }
        }
    return r;
}

/* A node named by id or by its [node] name, among the members. */
static struct pool_node *pool_lookup(struct pool *p, const char *word)
{
    char *end;
    unsigned long id = strtoul(word, &end, 10);
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->nodes[i].name, word) == 0 ||
            (*word && *end == '\0' && id == p->nodes[i].node))
            return &p->nodes[i];
    return NULL;
}

static void pool_members(const struct pool *p, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < p->n && used < len; i++)
        used += (size_t)snprintf(out + used, len - used, "%s%u (%s)", i ? ", " : "",
                                 p->nodes[i].node, p->nodes[i].name);
}

/* "nodes": "A,B" into pinned ids; 0, or -1 with *err. */
static int get_pinned(const char *vol, struct pool *p, const char *list, uint32_t *pinned,
                      size_t *npinned, struct json_object **err)
{
    char buf[1024];
    if (snprintf(buf, sizeof buf, "%s", list) >= (int)sizeof buf) {
        *err = admin_reply_error(ADMIN_E_BAD_REPLICAS, "volume \"%s\": --nodes is too long", vol);
        return -1;
    }
    *npinned = 0;
    char *save = NULL;
    for (char *w = strtok_r(buf, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
        struct pool_node *x = pool_lookup(p, w);
        if (!x) {
            char members[512];
            pool_members(p, members, sizeof members);
            *err = admin_reply_error(ADMIN_E_NO_SUCH_NODE,
                                     "volume \"%s\": node \"%s\": no such member (members: %s)",
                                     vol, w, members);
            return -1;
        }
        if (*npinned == PMSG_REPLICAS_MAX) {
            *err =
                admin_reply_error(ADMIN_E_BAD_REPLICAS, "volume \"%s\": more than %d nodes named",
                                  vol, PMSG_REPLICAS_MAX);
            return -1;
        }
        pinned[(*npinned)++] = x->node;
    }
    if (*npinned == 0) {
        *err = admin_reply_error(ADMIN_E_BAD_REPLICAS, "volume \"%s\": --nodes names no node", vol);
        return -1;
    }
    return 0;
}

/* How many copies the request asks for (want) and which nodes it names.
 * 0, or -1 with *err. */
static int get_request(const struct context *ctx, struct json_object *req, const char *vol,
                       struct pool *p, unsigned *want, uint32_t *pinned, size_t *npinned,
                       struct json_object **err)
{
    struct json_object *v;
    bool asked = json_object_object_get_ex(req, "replicas", &v);
    int64_t n = ctx->node->cfg->replicas;
    if (asked) {
        if (!json_object_is_type(v, json_type_int)) {
            *err = admin_reply_error(ADMIN_E_BAD_REQUEST, "\"replicas\" must be a number");
            return -1;
        }
        n = json_object_get_int64(v);
        if (n < 1 || (uint64_t)n > p->configured) {
            *err = admin_reply_error(ADMIN_E_BAD_REPLICAS,
                                     "volume \"%s\": --replicas %" PRId64
                                     ": must be from 1 to the number of nodes (%zu)",
                                     vol, n, p->configured);
            return -1;
        }
    }
    *npinned = 0;
    if (json_object_object_get_ex(req, "nodes", &v)) {
        if (!json_object_is_type(v, json_type_string)) {
            *err = admin_reply_error(ADMIN_E_BAD_REQUEST, "\"nodes\" must be a string \"A,B\"");
            return -1;
        }
        if (get_pinned(vol, p, json_object_get_string(v), pinned, npinned, err) < 0)
            return -1;
        if (asked && (size_t)n != *npinned) {
            *err = admin_reply_error(ADMIN_E_BAD_REPLICAS,
                                     "volume \"%s\": --replicas %" PRId64 " but %zu nodes named",
                                     vol, n, *npinned);
            return -1;
        }
        n = (int64_t)*npinned;
    }
    /* The configured count is capped: a node holds one copy at most. */
    *want = (uint64_t)n < p->configured ? (unsigned)n : (unsigned)p->configured;
    return 0;
}

static struct json_object *no_room(const char *vol, const struct pool *p, uint64_t size,
                                   unsigned want, double overcommit, uint32_t bad)
{
    char human[SIZE_FORMAT_MAX], why[768];
    size_format(size, human, sizeof human);
    size_t used = 0;
    why[0] = '\0';
    for (size_t i = 0; i < p->n && used < sizeof why; i++) {
        const struct pool_node *x = &p->nodes[i];
        char prov[SIZE_FORMAT_MAX], lim[SIZE_FORMAT_MAX];
        size_format(x->provisioned, prov, sizeof prov);
        size_format((uint64_t)((long double)x->cap.capacity * overcommit), lim, sizeof lim);
        if (!bad || x->node == bad)
            used +=
                (size_t)snprintf(why + used, sizeof why - used, "%s%s: %s of %s", used ? "; " : "",
                                 x->name, prov, x->announced ? lim : "? (no capacity announced)");
    }
    return admin_reply_error(ADMIN_E_NO_SPACE,
                             "volume \"%s\": no room for %u replica(s) of %s: provisioned of the "
                             "most a node may hold at overcommit %.2f: %s",
                             vol, want, human, overcommit, why);
}

int admin_place(const struct context *ctx, struct json_object *req, const char *vol, uint64_t size,
                uint32_t *placed, size_t *nplaced, struct json_object **err)
{
    *nplaced = 0;
    bool asked = json_object_object_get_ex(req, "replicas", NULL) ||
                 json_object_object_get_ex(req, "nodes", NULL);
    if (!ctx->node->mirror) {
        if (asked)
            *err = admin_reply_error(ADMIN_E_BAD_REPLICAS,
                                     "volume \"%s\": a standalone node holds the only copy: no "
                                     "--replicas or --nodes",
                                     vol);
        return asked ? -1 : 0;
    }
    struct pool *p = malloc(sizeof *p);
    if (!p || pool_gather(ctx->node, p) < 0) {
        if (p)
            free(p->vols);
        free(p);
        *err = admin_volume_failure(vol, "create", -ENOMEM);
        return -1;
    }
    unsigned want;
    uint32_t pinned[PMSG_REPLICAS_MAX];
    size_t npinned;
    int r = get_request(ctx, req, vol, p, &want, pinned, &npinned, err) < 0 ? -1 : 0;
    /* As many copies as nodes: every node holds one, as before placement,
     * so a node down now takes its copy when it returns. */
    if (r == 0 && (npinned > 0 || want < p->configured)) {
        struct place_node cand[CLUSTER_NODES_MAX];
        size_t nc = 0;
        for (size_t i = 0; i < p->n; i++)
            if (p->nodes[i].announced)
                cand[nc++] = (struct place_node){p->nodes[i].node, p->nodes[i].cap.capacity,
                                                 p->nodes[i].cap.data + p->nodes[i].cap.snapshots,
                                                 p->nodes[i].provisioned, p->nodes[i].replicas};
        uint32_t bad;
        double oc = ctx->node->cfg->overcommit;
        int e = place_volume(cand, nc, size, want, oc, pinned, npinned, placed, &bad);
        if (e == 0)
            *nplaced = want;
        else if (e == -ENOSPC)
            *err = no_room(vol, p, size, want, oc, bad);
        else if (e == -ENOENT)
            *err = admin_reply_error(ADMIN_E_NO_SPACE,
                                     "volume \"%s\": node %u has not announced its capacity yet",
                                     vol, bad);
        else if (e == -EINVAL && npinned > 0 && nc >= want)
            *err =
                admin_reply_error(ADMIN_E_BAD_REPLICAS, "volume \"%s\": a node named twice", vol);
        else if (e == -EINVAL)
            *err = admin_reply_error(ADMIN_E_BAD_REPLICAS,
                                     "volume \"%s\": %u replicas, but only %zu members announced "
                                     "their capacity",
                                     vol, want, nc);
        else
            *err = admin_volume_failure(vol, "create", e);
        r = e == 0 ? 0 : -1;
    }
    free(p->vols);
    free(p);
    return r;
}

/* ---- replica add and remove ----------------------------------------------- */

/* The node "node" names: a member by id or name, or, for a removal, any
 * node id (a node gone for good keeps its place in the set until it is
 * removed). 0, or -1 with *err. */
static int named_node(struct pool *p, const char *vol, const char *word, bool add, uint32_t *node,
                      struct json_object **err)
{
    struct pool_node *x = pool_lookup(p, word);
    char *end;
    unsigned long id = strtoul(word, &end, 10);
    if (x)
        *node = x->node;
    else if (!add && *word && *end == '\0' && id > 0 && id <= UINT32_MAX)
        *node = (uint32_t)id;
    else {
        char members[512];
        pool_members(p, members, sizeof members);
        *err = admin_reply_error(ADMIN_E_NO_SUCH_NODE,
                                 "volume \"%s\": node \"%s\" is not a member (members: %s)", vol,
                                 word, members);
        return -1;
    }
    return 0;
}

/* Where a new replica of info goes: the node pinned (checked for room), or
 * placement's first choice among the members without a copy. place_volume's
 * errors, -EEXIST (every member holds a copy) or -EINVAL (none of those
 * without one announced its capacity). */
static int pick(const struct admin_node *node, struct pool *p, const struct volume_info *info,
                uint32_t pinned, uint32_t *out, uint32_t *bad)
{
    struct place_node cand[CLUSTER_NODES_MAX];
    size_t nc = 0, without = 0;
    for (size_t i = 0; i < p->n; i++) {
        const struct pool_node *x = &p->nodes[i];
        bool holds = false;
        for (uint32_t j = 0; j < info->nreplicas; j++)
            holds = holds || info->replicas[j].node == x->node;
        without += !holds;
        if (x->announced && !holds)
            cand[nc++] =
                (struct place_node){x->node, x->cap.capacity, x->cap.data + x->cap.snapshots,
                                    x->provisioned, x->replicas};
    }
    if (nc == 0)
        return without == 0 ? -EEXIST : -EINVAL;
    return place_volume(cand, nc, info->size, 1, node->cfg->overcommit, pinned ? &pinned : NULL,
                        pinned ? 1 : 0, out, bad);
}

int admin_pool_place_replica(const struct admin_node *node, const struct volume_info *info,
                             uint32_t *out)
{
    struct pool *p = malloc(sizeof *p);
    int r = p ? pool_gather(node, p) : -ENOMEM;
    uint32_t bad;
    if (r == 0)
        r = pick(node, p, info, 0, out, &bad);
    if (p)
        free(p->vols);
    free(p);
    return r;
}

/* pick, for the admin: a clear error in *err. */
static int place_one(const struct context *ctx, struct pool *p, const struct volume_info *info,
                     uint32_t pinned, uint32_t *node, struct json_object **err)
{
    uint32_t bad;
    double oc = ctx->node->cfg->overcommit;
    int e = pick(ctx->node, p, info, pinned, node, &bad);
    if (e == -ENOSPC)
        *err = no_room(info->name, p, info->size, 1, oc, pinned);
    else if (e == -ENOENT)
        *err = admin_reply_error(ADMIN_E_NO_SPACE,
                                 "volume \"%s\": node %u has not announced its capacity yet",
                                 info->name, pinned);
    else if (e == -EINVAL)
        *err = admin_reply_error(ADMIN_E_NO_SPACE,
                                 "volume \"%s\": no member without a replica of it has announced "
                                 "its capacity",
                                 info->name);
    else if (e == -EEXIST)
        *err = admin_reply_error(ADMIN_E_NO_SPACE,
                                 "volume \"%s\": every member holds a replica of it already: no "
                                 "node to take another",
                                 info->name);
    else if (e < 0)
        *err = admin_volume_failure(info->name, "add a replica", e);
    return e < 0 ? -1 : 0;
}

int admin_replica_node(const struct context *ctx, struct json_object *req,
                       const struct volume_info *info, bool add, uint32_t *node,
                       struct json_object **err)
{
    struct json_object *v;
    bool named = json_object_object_get_ex(req, "node", &v);
    if (named && !json_object_is_type(v, json_type_string)) {
        *err = admin_reply_error(ADMIN_E_BAD_REQUEST, "\"node\" must be a string");
        return -1;
    }
    if (!named && !add) {
        *err = admin_reply_error(ADMIN_E_BAD_REQUEST, "replica.remove: \"node\" is required");
        return -1;
    }
    struct pool *p = malloc(sizeof *p);
    int r = p ? pool_gather(ctx->node, p) : -ENOMEM;
    if (r < 0) {
        *err = admin_volume_failure(info->name, add ? "add a replica" : "remove a replica", r);
    } else {
        uint32_t pinned = 0;
        r = named ? named_node(p, info->name, json_object_get_string(v), add, &pinned, err) : 0;
        *node = pinned;
        /* A node already holding one is the change's own error, below. */
        bool holds = false;
        for (uint32_t j = 0; j < info->nreplicas; j++)
            holds = holds || info->replicas[j].node == pinned;
        if (r == 0 && add && !holds)
            r = place_one(ctx, p, info, pinned, node, err);
    }
    if (p)
        free(p->vols);
    free(p);
    return r < 0 ? -1 : 0;
}

/* ---- pool status ------------------------------------------------------------ */

static struct json_object *node_replicas(const struct pool *p, uint32_t node)
{
    struct json_object *a = json_object_new_array();
    for (size_t i = 0; a && i < p->nvols; i++)
        for (uint32_t j = 0; j < p->vols[i].nreplicas; j++) {
            if (p->vols[i].replicas[j].node != node)
                continue;
            struct json_object *o = json_object_new_object();
            if (!o || json_add(o, "volume", json_object_new_string(p->vols[i].name)) < 0 ||
                json_add(o, "state",
                         json_object_new_string(replica_state_name(p->vols[i].replicas[j].state))) <
                    0 ||
                json_object_array_add(a, o) < 0) {
                json_object_put(o);
                json_object_put(a);
                return NULL;
            }
        }
    return a;
}

static struct json_object *node_object(const struct pool *p, const struct pool_node *x)
{
    struct json_object *o = json_object_new_object();
    const struct policing_capacity *c = &x->cap;
    uint64_t use = c->data + c->snapshots;
    int r = o ? 0 : -1;
    if (r == 0)
        r = admin_add_u64(o, "node", x->node);
    if (r == 0)
        r = json_add(o, "name", json_object_new_string(x->name));
    if (r == 0)
        r = json_add(o, "announced", json_object_new_boolean(x->announced));
    if (r == 0)
        r = admin_add_u64(o, "capacity", c->capacity);
    if (r == 0)
        r = admin_add_u64(o, "free", c->capacity > use ? c->capacity - use : 0);
    if (r == 0)
        r = admin_add_u64(o, "allocated", c->data);
    if (r == 0)
        r = admin_add_u64(o, "snapshots", c->snapshots);
    if (r == 0)
        r = admin_add_u64(o, "provisioned", x->provisioned);
    if (r == 0)
        r = json_add(o, "replicas", node_replicas(p, x->node));
    if (r == 0 && x->announced && use * 100 >= (uint64_t)POOL_WARN_PERCENT * c->capacity) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "node %u (%s): %" PRIu64 "%% of its capacity in use (warns at %d%%)", x->node,
                 x->name, c->capacity ? use * 100 / c->capacity : 100, POOL_WARN_PERCENT);
        r = json_add(o, "warning", json_object_new_string(msg));
    }
    if (r < 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

struct json_object *admin_pool_status(const struct context *ctx, struct json_object *req)
{
    (void)req;
    if (!ctx->node->mirror)
        return admin_reply_error(ADMIN_E_BAD_REQUEST,
                                 "pool status: a standalone node has no pool to show");
    struct pool *p = malloc(sizeof *p);
    if (!p || pool_gather(ctx->node, p) < 0) {
        if (p)
            free(p->vols);
        free(p);
        return admin_reply_error(ADMIN_E_SYSTEM, "pool status: out of memory");
    }
    struct json_object *o = json_object_new_object();
    struct json_object *a = json_object_new_array();
    int r = o && a ? 0 : -1;
    for (size_t i = 0; r == 0 && i < p->n; i++) {
        struct json_object *x = node_object(p, &p->nodes[i]);
        r = x ? json_object_array_add(a, x) : -1;
        if (r < 0)
            json_object_put(x);
    }
    if (r == 0) {
        r = json_add(o, "nodes", a);
        a = NULL;
    }
    if (r == 0)
        r = admin_add_u64(o, "warn_percent", POOL_WARN_PERCENT);
    if (r == 0)
        r = json_add(o, "overcommit", json_object_new_double(ctx->node->cfg->overcommit));
    json_object_put(a);
    free(p->vols);
    free(p);
    if (r < 0) {
        json_object_put(o);
        return admin_reply_error(ADMIN_E_SYSTEM, "pool status: out of memory");
    }
    return admin_reply_ok(o);
}
