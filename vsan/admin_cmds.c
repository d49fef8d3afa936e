/* admin_cmds.c - the admin commands: one JSON request in, one JSON reply
 * out, by way of the volume layer.
 *
 * A request is checked completely before anything runs: it must be one
 * JSON object no larger than ADMIN_REQUEST_MAX, name a known "cmd", carry
 * exactly the fields that command takes, with the right types. Each command
 * has one small handler. Errors of the volume layer become the reply codes
 * of admin_proto.h, which the CLI turns into exit codes, with a message
 * naming the volume. Changes are logged; refused requests only at debug
 * level, since a client can send any number of them.
 */
#include "vsan/admin.h"
#include "vsan/admin_int.h"

#include "mirror/engine.h"
#include "mirror/replicas.h"
#include "nbd-server/server.h"
#include "policing/protocol.h"
#include "common/admin_proto.h"
#include "common/json_add.h"
#include "vsan/config.h"
#include "common/size.h"
#include "store/store.h"
#include "volume/access.h"
#include "volume/owners.h"
#include "volume/volume.h"

#include <errno.h>
#include <inttypes.h>
#include <qb/qblog.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

struct json_object *admin_reply_error(const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    struct json_object *r = json_object_new_object();

    if (!r)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (json_add(r, "ok", json_object_new_boolean(0)) < 0 ||
        json_add(r, "error", json_object_new_string(code)) < 0 ||
        json_add(r, "message", json_object_new_string(msg)) < 0) {
        json_object_put(r);
        return NULL;
    }
    qb_log(LOG_DEBUG, "admin: refused: %s: %s", code, msg);
    return r;
}

/* Marks r, which the caller built, as a success reply. */
struct json_object *admin_reply_ok(struct json_object *r)
{
    if (r && json_add(r, "ok", json_object_new_boolean(1)) < 0) {
        json_object_put(r);
        return NULL;
    }
    return r;
}

int admin_add_u64(struct json_object *obj, const char *key, uint64_t v)
{
    return json_add(obj, key, json_object_new_int64((int64_t)v));
}

static struct json_object *replicas_array(const struct volume_info *v)
{
    struct json_object *a = json_object_new_array();
    for (uint32_t i = 0; a && i < v->nreplicas; i++) {
        struct json_object *r = json_object_new_object();
        if (!r || admin_add_u64(r, "node", v->replicas[i].node) < 0 ||
            json_add(r, "state", json_object_new_string(replica_state_name(v->replicas[i].state))) <
                0 ||
            json_object_array_add(a, r) < 0) {
            json_object_put(r);
            json_object_put(a);
            return NULL;
        }
    }
    return a;
}

/* The copies of v being filled, as their nodes announced them: node,
 * bytes done and in all, rate (bytes/s) and the seconds left at it. */
static struct json_object *recovery_array(const struct volume_info *v)
{
    struct json_object *a = json_object_new_array();
    for (unsigned i = 0; a && i < v->nrecovery; i++) {
        const struct policing_progress *p = &v->recovery[i];
        uint64_t left = p->total > p->done ? p->total - p->done : 0;
        struct json_object *r = json_object_new_object();
        if (!r || admin_add_u64(r, "node", p->node) < 0 || admin_add_u64(r, "done", p->done) < 0 ||
            admin_add_u64(r, "total", p->total) < 0 || admin_add_u64(r, "rate", p->rate) < 0 ||
            admin_add_u64(r, "eta", p->rate ? (left + p->rate - 1) / p->rate : 0) < 0 ||
            json_object_array_add(a, r) < 0) {
            json_object_put(r);
            json_object_put(a);
            return NULL;
        }
    }
    return a;
}

/* v as the commands show it; owner: "" (none) or who owns it. */
static struct json_object *volume_object(const struct volume_info *v, const char *owner)
{
    struct json_object *o = json_object_new_object();

    if (!o)
        return NULL;
    if (owner[0] && json_add(o, "owner", json_object_new_string(owner)) < 0) {
        json_object_put(o);
        return NULL;
    }
    if (json_add(o, "name", json_object_new_string(v->name)) < 0 ||
        json_add(o, "uuid", json_object_new_string(v->uuid)) < 0 ||
        admin_add_u64(o, "size", v->size) < 0 || admin_add_u64(o, "allocated", v->allocated) < 0 ||
        admin_add_u64(o, "generation", v->generation) < 0 ||
        admin_add_u64(o, "connections", v->connections) < 0 ||
        json_add(o, "replicas", replicas_array(v)) < 0 ||
        json_add(o, "recovery", recovery_array(v)) < 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* The reply to a failed volume call r on volume name during op. */
struct json_object *admin_volume_failure(const char *name, const char *op, int r)
{
    switch (r) {
    case -ENOENT:
        return admin_reply_error(ADMIN_E_NO_SUCH_VOLUME, "volume \"%s\": no such volume", name);
    case -EEXIST:
        return admin_reply_error(ADMIN_E_VOLUME_EXISTS, "volume \"%s\": already exists", name);
    case -EBUSY:
        return admin_reply_error(ADMIN_E_VOLUME_IN_USE,
                                 "volume \"%s\": cannot %s: in use by NBD connections", name, op);
    case -ENOTEMPTY: /* svol_resize: a snapshot keeps its size */
        return admin_reply_error(ADMIN_E_BAD_SIZE,
                                 "volume \"%s\": cannot %s: it has snapshots, which keep their "
                                 "size; delete them first",
                                 name, op);
    case -ENOLINK:
        return admin_reply_error(ADMIN_E_NO_QUORUM,
                                 "volume \"%s\": cannot %s: this node has no quorum", name, op);
    case -ESHUTDOWN:
        return admin_reply_error(ADMIN_E_SYSTEM, "volume \"%s\": %s: vsand is stopping", name, op);
    case -ECONNRESET:
        return admin_reply_error(ADMIN_E_SYSTEM,
                                 "volume \"%s\": %s: the cluster's membership changed while it "
                                 "was applied; see `vsan volume show %s` for the outcome",
                                 name, op, name);
    case -EHOSTDOWN: /* policing_volume_create: a placed node left first */
        return admin_reply_error(ADMIN_E_NO_SUCH_NODE,
                                 "volume \"%s\": cannot %s: a node chosen for a replica left the "
                                 "group before the change applied; try again",
                                 name, op);
    case -EDQUOT:
        return admin_reply_error(ADMIN_E_QUOTA_EXCEEDED,
                                 "volume \"%s\": cannot %s: its owner would pass its quota "
                                 "(see `vsan quota list`)",
                                 name, op);
    case -ENODATA:
        return admin_reply_error(ADMIN_E_QUOTA_EXCEEDED,
                                 "volume \"%s\": cannot %s: its owner has no quota; an admin "
                                 "must set one with `vsan quota set`",
                                 name, op);
    case -EXFULL:
        return admin_reply_error(ADMIN_E_LIMIT,
                                 "volume \"%s\": cannot %s: the cluster has %d owned volumes or "
                                 "%d grants already (the most it may have)",
                                 name, op, OWNERS_MAX, ACCESS_GRANTS_TOTAL_MAX);
    case -EINVAL:
        return admin_reply_error(
            ADMIN_E_BAD_NAME,
            "volume name \"%s\": must be 1 to %d characters of A-Z a-z 0-9 . _ - "
            "and not start with '.' or '-'",
            name, VOLUME_NAME_MAX);
    default:
        qb_log(LOG_ERR, "admin: volume \"%s\": %s: %s", name, op, strerror(-r));
        return admin_reply_error(ADMIN_E_SYSTEM, "volume \"%s\": %s: %s", name, op, strerror(-r));
    }
}

/* The size rules of volume.h, checked here so that a bad size is told
 * apart from a bad name (both are -EINVAL there); a client's volumes are
 * at least OWNERS_CLIENT_SIZE_MIN. */
static struct json_object *check_size(const struct context *ctx, const char *name, uint64_t size)
{
    char human[SIZE_FORMAT_MAX], max[SIZE_FORMAT_MAX];

    if (size == 0)
        return admin_reply_error(ADMIN_E_BAD_SIZE, "volume \"%s\": size must not be zero", name);
    if (!ctx->who->admin && size < OWNERS_CLIENT_SIZE_MIN)
        return admin_reply_error(ADMIN_E_BAD_SIZE,
                                 "volume \"%s\": size %" PRIu64
                                 " bytes is below the smallest a client may have, 1M (%" PRIu64
                                 " bytes)",
                                 name, size, OWNERS_CLIENT_SIZE_MIN);
    if (size > VOLUME_SIZE_MAX) {
        size_format(size, human, sizeof human);
        size_format(VOLUME_SIZE_MAX, max, sizeof max);
        return admin_reply_error(ADMIN_E_BAD_SIZE,
                                 "volume \"%s\": size %s (%" PRIu64
                                 " bytes) is larger than the maximum, %s",
                                 name, human, size, max);
    }
    if (size % 512)
        return admin_reply_error(ADMIN_E_BAD_SIZE,
                                 "volume \"%s\": size %" PRIu64 " is not a multiple of 512 bytes",
                                 name, size);
    return NULL;
}

struct json_object *admin_field(struct json_object *req, const char *key, json_type type,
                                const char *what, struct json_object **err)
{
    struct json_object *v;

    if (!json_object_object_get_ex(req, key, &v)) {
        *err = admin_reply_error(ADMIN_E_BAD_REQUEST, "missing field \"%s\"", key);
        return NULL;
    }
    if (!json_object_is_type(v, type)) {
        *err = admin_reply_error(ADMIN_E_BAD_REQUEST, "field \"%s\" must be %s", key, what);
        return NULL;
    }
    return v;
}

int admin_get_name(struct json_object *req, const char **name, struct json_object **err)
{
    struct json_object *v = admin_field(req, "name", json_type_string, "a string", err);

    if (!v)
        return -1;
    *name = json_object_get_string(v);
    /* "db\u0000x" must not act on "db". */
    if (strlen(*name) != (size_t)json_object_get_string_len(v)) {
        *err = admin_reply_error(ADMIN_E_BAD_NAME, "volume name contains a NUL character");
        return -1;
    }
    return 0;
}

int admin_get_size(struct json_object *req, uint64_t *size, struct json_object **err)
{
    struct json_object *v = admin_field(req, "size", json_type_int, "an integer (bytes)", err);

    if (!v)
        return -1;
    int64_t s = json_object_get_int64(v);
    if (s < 0) {
        *err = admin_reply_error(ADMIN_E_BAD_SIZE, "size %" PRId64 " is negative", s);
        return -1;
    }
    /* json-c keeps integers above INT64_MAX as unsigned ones (and clamps
     * what does not fit in 64 bits), which only this getter returns. */
    *size = json_object_get_uint64(v);
    return 0;
}

static int get_force(struct json_object *req, bool *force, struct json_object **err)
{
    *force = false;
    if (!json_object_object_get_ex(req, "force", NULL))
        return 0;
    struct json_object *v = admin_field(req, "force", json_type_boolean, "true or false", err);
    if (!v)
        return -1;
    *force = json_object_get_boolean(v);
    return 0;
}

uint64_t admin_clock(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
        return 0;
    return (uint64_t)ts.tv_sec;
}

static struct json_object *listen_array(const struct vsan_config *cfg)
{
    struct json_object *a = json_object_new_array();

    for (unsigned i = 0; a && i < cfg->n_listen; i++) {
        struct json_object *s = json_object_new_string(cfg->listen[i]);
        if (!s || json_object_array_add(a, s) < 0) {
            json_object_put(s);
            json_object_put(a);
            return NULL;
        }
    }
    return a;
}

static struct json_object *member_object(const struct policing_member *m)
{
    struct json_object *o = json_object_new_object();
    if (o && (admin_add_u64(o, "nodeid", m->nodeid) < 0 ||
              json_add(o, "name", json_object_new_string(m->name)) < 0 ||
              json_add(o, "nbd", json_object_new_string(m->nbd)) < 0 ||
              json_add(o, "mirror", json_object_new_string(m->mirror)) < 0 ||
              json_add(o, "service", json_object_new_string(m->service)) < 0)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

static struct json_object *members_array(const struct policing_status *st)
{
    struct json_object *a = json_object_new_array();
    for (size_t i = 0; a && i < st->nmembers; i++) {
        struct json_object *m = member_object(&st->members[i]);
        if (!m || json_object_array_add(a, m) < 0) {
            json_object_put(m);
            json_object_put(a);
            return NULL;
        }
    }
    return a;
}

static struct json_object *nodes_array(const struct policing_status *st)
{
    struct json_object *a = json_object_new_array();
    for (size_t i = 0; a && i < st->nnodes; i++) {
        struct json_object *o = json_object_new_object();
        if (!o || admin_add_u64(o, "nodeid", st->nodes[i].nodeid) < 0 ||
            json_add(o, "name", json_object_new_string(st->nodes[i].name)) < 0 ||
            json_add(o, "addr", json_object_new_string(st->nodes[i].addr)) < 0 ||
            json_object_array_add(a, o) < 0) {
            json_object_put(o);
            json_object_put(a);
            return NULL;
        }
    }
    return a;
}

static struct json_object *services_array(const struct svc_table *t)
{
    struct json_object *a = json_object_new_array();
    for (size_t i = 0; a && i < t->n; i++) {
        const struct svc_entry *e = &t->v[i];
        struct json_object *o = json_object_new_object();
        if (!o || admin_add_u64(o, "owner", e->owner) < 0 ||
            json_add(o, "address", json_object_new_string(e->addr)) < 0 ||
            admin_add_u64(o, "holder", e->holder) < 0 ||
            json_add(o, "manual", json_object_new_boolean(e->manual)) < 0 ||
            json_object_array_add(a, o) < 0) {
            json_object_put(o);
            json_object_put(a);
            return NULL;
        }
    }
    return a;
}

static struct json_object *policing_object(const struct policing_status *st)
{
    struct json_object *o = json_object_new_object();
    if (o && (admin_add_u64(o, "requests_sent", st->requests_sent) < 0 ||
              admin_add_u64(o, "releases_sent", st->releases_sent) < 0 ||
              admin_add_u64(o, "messages_delivered", st->messages_delivered) < 0 ||
              admin_add_u64(o, "regions", st->regions) < 0)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

static struct json_object *cluster_object(const struct admin_node *node)
{
    struct policing_status st;
    policing_status(node->pc, &st);
    const struct vsan_config *cfg = node->cfg;
    struct json_object *o = json_object_new_object();
    if (o &&
        (json_add(o, "name", json_object_new_string(cfg->cluster_name)) < 0 ||
         admin_add_u64(o, "nodeid", st.nodeid) < 0 ||
         json_add(o, "quorate", json_object_new_boolean(st.quorate)) < 0 ||
         json_add(o, "synced", json_object_new_boolean(st.synced)) < 0 ||
         json_add(o, "on_no_quorum",
                  json_object_new_string(cfg->suspend_on_no_quorum ? "suspend" : "error")) < 0 ||
         admin_add_u64(o, "region_size", st.region_size) < 0 ||
         admin_add_u64(o, "table_version", st.table_version) < 0 ||
         json_add(o, "members", members_array(&st)) < 0 ||
         json_add(o, "nodes", nodes_array(&st)) < 0 ||
         json_add(o, "services", services_array(&st.services)) < 0 ||
         json_add(o, "policing", policing_object(&st)) < 0)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

static struct json_object *mirror_object(struct volumes *vols, const char *name);

/* The link's counters and, per volume, any resync running here. */
static struct json_object *mirror_status(const struct admin_node *node)
{
    struct mirror_stats ms;
    mirror_stats(node->mirror, &ms);
    struct json_object *o = json_object_new_object(), *rs = json_object_new_array();
    struct volume_info *list = NULL;
    size_t n = 0;
    bool bad = !o || !rs || volumes_list(node->vols, &list, &n) < 0;
    for (size_t i = 0; !bad && i < n; i++) {
        struct json_object *m = mirror_object(node->vols, list[i].name), *r;
        bool active = m && json_object_object_get_ex(m, "resync", &r) &&
                      json_object_get_boolean(json_object_object_get(r, "active"));
        if (active) {
            json_object_get(r);
            bad = json_add(r, "volume", json_object_new_string(list[i].name)) < 0 ||
                  json_object_array_add(rs, r) < 0;
        }
        json_object_put(m);
    }
    free(list);
    if (bad || admin_add_u64(o, "requests_sent", ms.requests_sent) < 0 ||
        admin_add_u64(o, "requests_served", ms.requests_served) < 0 ||
        admin_add_u64(o, "refused", ms.refused) < 0 || json_add(o, "resyncs", rs) < 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

static struct json_object *cmd_status(const struct context *ctx, struct json_object *req)
{
    const struct admin_node *node = ctx->node;
    size_t n = volumes_count(node->vols);

    (void)req;
    uint64_t now = admin_clock();
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    if (json_add(o, "name", json_object_new_string(node->cfg->name)) < 0 ||
        json_add(o, "version", json_object_new_string(VSAN_VERSION)) < 0 ||
        json_add(o, "mode",
                 json_object_new_string(
                     node->cfg->cluster_mode == CONFIG_COROSYNC ? "corosync" : "standalone")) < 0 ||
        json_add(o, "pid", json_object_new_int(getpid())) < 0 ||
        json_add(o, "data_dir", json_object_new_string(node->cfg->data_dir)) < 0 ||
        json_add(o, "nbd_listen", listen_array(node->cfg)) < 0 ||
        json_add(o, "admin_socket", json_object_new_string(node->cfg->admin_socket)) < 0 ||
        json_add(o, "nbd_socket", json_object_new_string(node->cfg->nbd_socket)) < 0 ||
        admin_add_u64(o, "volumes", n) < 0 ||
        admin_add_u64(o, "connections", nbd_server_connections(node->nbd)) < 0 ||
        admin_add_u64(o, "uptime", now > node->started ? now - node->started : 0) < 0 ||
        json_add(o, "cluster", cluster_object(node)) < 0 ||
        (node->mirror && json_add(o, "mirror", mirror_status(node)) < 0)) {
        json_object_put(o);
        return NULL;
    }
    return admin_reply_ok(o);
}

/* The volumes of list (n) the caller may see. */
static struct json_object *volume_array(const struct context *ctx, const struct volume_info *list,
                                        size_t n)
{
    struct json_object *a = json_object_new_array_ext((int)n);
    struct owners *ow = volumes_owners(ctx->node->vols);

    for (size_t i = 0; a && i < n; i++) {
        if (!admin_may_see(ctx, list[i].uuid))
            continue;
        struct json_object *v = volume_object(&list[i], owners_of(ow, list[i].uuid));
        if (!v || json_object_array_add(a, v) < 0) {
            json_object_put(v);
            json_object_put(a);
            return NULL;
        }
    }
    return a;
}

static struct json_object *cmd_volume_list(const struct context *ctx, struct json_object *req)
{
    const struct admin_node *node = ctx->node;
    struct volume_info *list;
    size_t n;
    int r = volumes_list(node->vols, &list, &n);

    (void)req;
    if (r < 0)
        return admin_reply_error(ADMIN_E_SYSTEM, "list volumes: %s", strerror(-r));
    struct json_object *o = json_object_new_object();
    if (o && json_add(o, "volumes", volume_array(ctx, list, n)) < 0) {
        json_object_put(o);
        o = NULL;
    }
    free(list);
    return admin_reply_ok(o);
}

static int get_mirror_status(struct mvol *v, void *arg)
{
    mirror_volume_status(v, arg);
    return 0;
}

/* This node's view of a volume's replication: its copy, what it recorded
 * for outdated peers, its resync; NULL when standalone. */
static struct json_object *mirror_object(struct volumes *vols, const char *name)
{
    struct mirror_volume_status st;
    if (volumes_mirrored(vols, name, get_mirror_status, &st) < 0)
        return NULL;
    struct json_object *o = json_object_new_object(), *dirty = json_object_new_object(),
                       *rs = json_object_new_object();
    uint64_t left = st.resync_total > st.resync_done ? st.resync_total - st.resync_done : 0;
    bool bad = !o || !dirty || !rs;
    for (uint32_t i = 0; !bad && i < st.nreplicas; i++) {
        char key[16];
        snprintf(key, sizeof key, "%u", st.replicas[i].node);
        bad =
            st.replicas[i].dirty_bytes && admin_add_u64(dirty, key, st.replicas[i].dirty_bytes) < 0;
    }
    bad = bad || json_add(rs, "active", json_object_new_boolean(st.resyncing)) < 0 ||
          admin_add_u64(rs, "done", st.resync_done) < 0 ||
          admin_add_u64(rs, "total", st.resync_total) < 0 ||
          admin_add_u64(rs, "rate", (uint64_t)st.resync_rate) < 0 ||
          admin_add_u64(rs, "eta",
                        st.resync_rate > 0 ? (uint64_t)((double)left / st.resync_rate) : 0) < 0;
    if (bad || json_add(o, "local", json_object_new_string(st.local)) < 0 ||
        json_add(o, "dirty", dirty) < 0 || json_add(o, "resync", rs) < 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* "nbd://HOST:PORT/NAME", nbds:// when the node serves TLS: how an NBD
 * client names the volume at addr ("HOST:PORT"). */
static struct json_object *nbd_uri(const struct admin_node *node, const char *addr,
                                   const char *name)
{
    char uri[PMSG_ADDR_MAX + VOLUME_NAME_MAX + 16];
    snprintf(uri, sizeof uri, "%s://%s/%s", node->cfg->nbd.tls == NBD_TLS_OFF ? "nbd" : "nbds",
             addr, name);
    return json_object_new_string(uri);
}

/* Each replica's NBD URI, on the address its node announced (none for a
 * node that is not a member now). */
static int add_replica_uris(const struct admin_node *node, struct json_object *o, const char *name)
{
    struct json_object *a = json_object_object_get(o, "replicas");
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        struct json_object *r = json_object_array_get_idx(a, i);
        char addr[PMSG_ADDR_MAX];
        uint32_t id = (uint32_t)json_object_get_int64(json_object_object_get(r, "node"));
        if (policing_member_nbd(node->pc, id, addr, sizeof addr) == 0 &&
            json_add(r, "uri", nbd_uri(node, addr, name)) < 0)
            return -1;
    }
    return 0;
}

/* The volume's URIs on the service addresses, which survivors take over:
 * served on the port of the first [nbd] listen address (config.c). */
static struct json_object *service_uris(const struct admin_node *node, const char *name)
{
    struct policing_status st;
    policing_status(node->pc, &st);
    const char *colon = strrchr(node->cfg->listen[0], ':');
    struct json_object *a = json_object_new_array();
    for (size_t i = 0; a && colon && i < st.services.n; i++) {
        char addr[PMSG_ADDR_MAX];
        const char *svc = st.services.v[i].addr;
        snprintf(addr, sizeof addr, "%.*s%s", (int)strcspn(svc, "/"), svc, colon);
        struct json_object *u = nbd_uri(node, addr, name);
        if (!u || json_object_array_add(a, u) < 0) {
            json_object_put(u);
            json_object_put(a);
            return NULL;
        }
    }
    return a;
}

/* What a client needs to use the volume, besides its record: the block
 * size to align to, and where to connect. */
static int describe(const struct admin_node *node, struct json_object *o, const char *name)
{
    return admin_add_u64(o, "block_size", node->cfg->nbd.pref_block) < 0 ||
                   add_replica_uris(node, o, name) < 0 ||
                   json_add(o, "services", service_uris(node, name)) < 0
               ? -1
               : 0;
}

static struct json_object *cmd_volume_show(const struct context *ctx, struct json_object *req)
{
    const struct admin_node *node = ctx->node;
    struct json_object *err = NULL;
    struct volume_info info;
    const char *name;

    if (admin_get_name(req, &name, &err) < 0)
        return err;
    int r = volumes_info(node->vols, name, &info);
    if (r == 0 && !admin_may_see(ctx, info.uuid))
        r = -ENOENT; /* as if there were none: no client learns what it may not see */
    if (r < 0)
        return admin_volume_failure(name, "show", r);
    struct json_object *o = volume_object(&info, owners_of(volumes_owners(node->vols), info.uuid));
    if (o && describe(node, o, name) < 0) {
        json_object_put(o);
        return NULL;
    }
    struct json_object *m = o ? mirror_object(node->vols, name) : NULL;
    if (m && json_add(o, "mirror", m) < 0) {
        json_object_put(o);
        return NULL;
    }
    return admin_reply_ok(o);
}

/* A volume table change on its way through the cluster. */
struct change {
    const struct admin_node *node;
    struct admin_call *call;
    const char *op; /* "create", "resize", "delete", "replica add", "replica remove" */
    char name[VOLUME_NAME_MAX + 1];
    bool force;
    char by[PMSG_IDENTITY_MAX + 1]; /* who asked, for the log */
    uint32_t replica;               /* replica add, remove: the node */
    unsigned min_current;           /* replica remove */
};

/* The replica rules of mirror_replica_add and _remove, as the requester
 * saw them or the commit found them. NULL for other errors. */
static struct json_object *replica_failure(const struct change *ch, int r)
{
    switch (r) {
    case -EEXIST:
        return admin_reply_error(ADMIN_E_REPLICA_REFUSED,
                                 "volume \"%s\": node %u holds a replica of it already", ch->name,
                                 ch->replica);
    case -ENXIO:
        return admin_reply_error(ADMIN_E_REPLICA_REFUSED,
                                 "volume \"%s\": node %u holds no replica of it", ch->name,
                                 ch->replica);
    case -EDQUOT:
        return admin_reply_error(ADMIN_E_REPLICA_REFUSED,
                                 "volume \"%s\": removing node %u's replica would leave fewer "
                                 "than %u current copies ([cluster] min_current), or none: add "
                                 "one first (`vsan replica move` does)",
                                 ch->name, ch->replica, ch->min_current);
    case -EHOSTDOWN:
        return admin_reply_error(ADMIN_E_NO_SUCH_NODE,
                                 "volume \"%s\": node %u is not a member: a new replica goes "
                                 "only to a node that is up",
                                 ch->name, ch->replica);
    case -ENOSPC:
        return admin_reply_error(ADMIN_E_BAD_REPLICAS,
                                 "volume \"%s\": it has %d replicas, the most a volume may have",
                                 ch->name, STORE_REPLICAS_MAX);
    default:
        return NULL;
    }
}

/* A resize and a replica change are cuts (policing_volume_resize,
 * policing_replica_set_change): one that did not commit changed nothing,
 * and says why as an aborted snapshot does. */
static struct json_object *change_failure(const struct change *ch, int r)
{
    struct json_object *err = strncmp(ch->op, "replica", 7) == 0 ? replica_failure(ch, r) : NULL;
    if (err)
        return err;
    if (strcmp(ch->op, "resize") != 0 && strncmp(ch->op, "replica", 7) != 0)
        return admin_volume_failure(ch->name, ch->op, r);
    const char *unchanged =
        strcmp(ch->op, "resize") == 0 ? "the size is unchanged" : "the replicas are unchanged";
    switch (r) {
    case -EBUSY:
        return admin_reply_error(ADMIN_E_BUSY,
                                 "volume \"%s\": %s: the volume is in another cut (a "
                                 "snapshot, a rollback, a resize or a replica change) now; try "
                                 "again",
                                 ch->name, ch->op);
    case -ETIMEDOUT:
        return admin_reply_error(ADMIN_E_ABORTED,
                                 "volume \"%s\": %s aborted: a node did not drain its writes "
                                 "in time (%s; try again)",
                                 ch->name, ch->op, unchanged);
    case -ECONNRESET:
    case -EAGAIN:
        return admin_reply_error(ADMIN_E_ABORTED,
                                 "volume \"%s\": %s aborted: the cluster changed during it "
                                 "(%s; try again)",
                                 ch->name, ch->op, unchanged);
    default:
        return admin_volume_failure(ch->name, ch->op, r);
    }
}

/* The cluster applied the change here: answer the client. */
static void change_done(void *arg, int r)
{
    struct change *ch = arg;
    struct volume_info info;
    struct json_object *reply;
    if (r == 0 && strcmp(ch->op, "delete") == 0) {
        qb_log(LOG_INFO, "volume \"%s\" deleted by \"%s\"", ch->name, ch->by);
        struct json_object *o = json_object_new_object();
        if (o && json_add(o, "name", json_object_new_string(ch->name)) < 0) {
            json_object_put(o);
            o = NULL;
        }
        reply = admin_reply_ok(o);
    } else if (r == 0 && (r = volumes_info(ch->node->vols, ch->name, &info)) == 0) {
        char human[SIZE_FORMAT_MAX];
        size_format(info.size, human, sizeof human);
        const char *owner = owners_of(volumes_owners(ch->node->vols), info.uuid);
        if (ch->replica)
            qb_log(LOG_INFO, "volume \"%s\": %s on node %u by \"%s\"", info.name, ch->op,
                   ch->replica, ch->by);
        else
            qb_log(LOG_INFO, "volume \"%s\" %sd by \"%s\": %s (%" PRIu64 " bytes), uuid %s%s%s%s",
                   info.name, ch->op, ch->by, human, info.size, info.uuid,
                   ch->force ? ", forced" : "", owner[0] ? ", owner " : "", owner);
        struct json_object *o = volume_object(&info, owner);
        if (o && ch->replica && admin_add_u64(o, "replica", ch->replica) < 0) {
            json_object_put(o);
            o = NULL;
        }
        reply = admin_reply_ok(o);
    } else {
        reply = change_failure(ch, r);
    }
    admin_call_reply(ch->call, reply);
    free(ch);
}

static struct change *change_new(const struct context *ctx, const char *op, const char *name,
                                 bool force)
{
    struct change *ch = calloc(1, sizeof *ch);
    if (ch) {
        *ch = (struct change){ctx->node, ctx->call, op, "", force, "", 0, 0};
        snprintf(ch->name, sizeof ch->name, "%s", name);
        snprintf(ch->by, sizeof ch->by, "%s", ctx->who->identity);
    }
    return ch;
}

/* Hands ch to the cluster (r: what the policing call returned). */
static struct json_object *submitted(const struct context *ctx, struct change *ch, int r)
{
    if (r < 0) {
        struct json_object *err = change_failure(ch, r);
        free(ch);
        return err;
    }
    *ctx->later = true;
    return NULL;
}

/* Who will own a new volume: a client itself, or whom an admin names
 * ("owner"; none: NULL). 0, or -1 with *err set. */
static int get_owner(const struct context *ctx, struct json_object *req, const char **owner,
                     struct json_object **err)
{
    *owner = NULL;
    if (json_object_object_get_ex(req, "owner", NULL)) {
        if (!ctx->who->admin) {
            *err = admin_reply_error(ADMIN_E_FORBIDDEN,
                                     "\"%s\" may not name a volume's owner: it is not an admin",
                                     ctx->who->identity);
            return -1;
        }
        return admin_get_identity(req, "owner", owner, err) < 0 ? -1 : 0;
    }
    if (ctx->who->admin)
        return 0;
    const char *why;
    if (access_identity_check(ctx->who->identity, &why) < 0) {
        *err = admin_reply_error(ADMIN_E_BAD_IDENTITY, "identity \"%.80s\" cannot own a volume: %s",
                                 ctx->who->identity, why);
        return -1;
    }
    *owner = ctx->who->identity;
    return 0;
}

/* Before asking the cluster, for a clear error: whether owner may own
 * size bytes more (uuid: the volume resized; NULL: a new one). The
 * cluster checks again where it applies the change. */
static struct json_object *check_quota(const struct context *ctx, const char *name,
                                       const char *owner, const char *uuid, uint64_t size)
{
    struct volume_info *vols;
    size_t n;
    int r = volumes_list(ctx->node->vols, &vols, &n);
    if (r < 0)
        return admin_volume_failure(name, uuid ? "resize" : "create", r);
    struct policing_quota over;
    r = owners_check(volumes_owners(ctx->node->vols), owner, uuid, size, !ctx->who->admin, vols, n,
                     &over);
    size_t count = 0;
    uint64_t used =
        r == -EDQUOT ? owners_used(volumes_owners(ctx->node->vols), over.identity, vols, n, &count)
                     : 0;
    free(vols);
    if (r == 0)
        return NULL;
    if (r != -EDQUOT)
        return admin_volume_failure(name, uuid ? "resize" : "create", r);
    char want[SIZE_FORMAT_MAX], limit[SIZE_FORMAT_MAX], have[SIZE_FORMAT_MAX];
    size_format(size, want, sizeof want);
    size_format(over.limit, limit, sizeof limit);
    size_format(used, have, sizeof have);
    return admin_reply_error(
        ADMIN_E_QUOTA_EXCEEDED,
        "volume \"%s\": %s of \"%s\" would pass the quota of \"%s\": %s "
        "(%" PRIu64 " bytes) in %" PRIu32 " volumes, of which %s are used, in %zu volumes",
        name, want, owner, over.identity, limit, over.limit, over.volumes, have, count);
}

static struct json_object *cmd_volume_create(const struct context *ctx, struct json_object *req)
{
    struct json_object *err = NULL;
    const char *name, *owner;
    uint64_t size;

    if (admin_get_name(req, &name, &err) < 0 || admin_get_size(req, &size, &err) < 0 ||
        get_owner(ctx, req, &owner, &err) < 0)
        return err;
    err = check_size(ctx, name, size);
    if (err)
        return err;
    if (strlen(name) > VOLUME_NAME_MAX)
        return admin_volume_failure(name, "create", -EINVAL);
    struct volume_info info;
    if (owner && volumes_info(ctx->node->vols, name, &info) == 0)
        return admin_volume_failure(name, "create", -EEXIST);
    if (owner && (err = check_quota(ctx, name, owner, NULL, size)) != NULL)
        return err;
    if (volumes_info(ctx->node->vols, name, &info) == 0)
        return admin_volume_failure(name, "create", -EEXIST); /* before placement's errors */
    uint32_t placed[PMSG_REPLICAS_MAX];
    size_t nplaced;
    if (admin_place(ctx, req, name, size, placed, &nplaced, &err) < 0)
        return err;
    char uuid[STORE_UUID_LEN + 1];
    int r = volumes_new_uuid(ctx->node->vols, uuid);
    if (r < 0)
        return admin_volume_failure(name, "create", r);
    struct change *ch = change_new(ctx, "create", name, false);
    if (!ch)
        return NULL;
    return submitted(ctx, ch,
                     policing_volume_create(ctx->node->pc, uuid, name, size, owner,
                                            !ctx->who->admin, placed, nplaced, change_done, ch));
}

/* -ERANGE from volumes_resize: a shrink without force. */
static struct json_object *refuse_shrink(const struct admin_node *node, const char *name,
                                         uint64_t size)
{
    char from[SIZE_FORMAT_MAX] = "?", to[SIZE_FORMAT_MAX];
    struct volume_info info;

    if (volumes_info(node->vols, name, &info) == 0)
        size_format(info.size, from, sizeof from);
    size_format(size, to, sizeof to);
    return admin_reply_error(ADMIN_E_BAD_SIZE,
                             "volume \"%s\": shrinking from %s to %s destroys data; use --force",
                             name, from, to);
}

/* Before asking the cluster: what this node can tell by itself (a shrink
 * of a volume with snapshots, without force, under this node's own
 * clients). The snapshots are checked again where the shrink is applied:
 * one may be cut meanwhile. uuid: the volume's checked (the change is for
 * it, not for another that takes its name meanwhile). */
static struct json_object *check_resize(const struct context *ctx, const char *name, uint64_t size,
                                        bool force, char uuid[STORE_UUID_LEN + 1])
{
    const struct admin_node *node = ctx->node;
    struct volume_info info;
    int r = volumes_info(node->vols, name, &info);
    if (r == 0 && !admin_may_see(ctx, info.uuid))
        r = -ENOENT;
    if (r < 0)
        return admin_volume_failure(name, "resize", r);
    snprintf(uuid, STORE_UUID_LEN + 1, "%s", info.uuid);
    if (!admin_may_change(ctx, info.uuid))
        return admin_reply_error(ADMIN_E_FORBIDDEN,
                                 "volume \"%s\": \"%s\" may not resize it: only its owner or "
                                 "an admin may",
                                 name, ctx->who->identity);
    const char *owner = owners_of(volumes_owners(node->vols), info.uuid);
    struct json_object *err;
    if (owner[0] && size > info.size && (err = check_quota(ctx, name, owner, info.uuid, size)))
        return err;
    struct snap_info *si = NULL;
    size_t nsnaps = 0;
    if (size < info.size && (r = volumes_snapshots(node->vols, name, &si, &nsnaps)) < 0)
        return admin_volume_failure(name, "shrink", r);
    free(si);
    if (nsnaps > 0)
        return admin_volume_failure(name, "shrink", -ENOTEMPTY);
    if (size < info.size && !force)
        return refuse_shrink(node, name, size);
    if (size < info.size && info.connections > 0)
        return admin_volume_failure(name, "shrink", -EBUSY);
    return NULL;
}

static struct json_object *cmd_volume_resize(const struct context *ctx, struct json_object *req)
{
    const struct admin_node *node = ctx->node;
    struct json_object *err = NULL;
    const char *name;
    uint64_t size;
    bool force;
    char uuid[STORE_UUID_LEN + 1];

    if (admin_get_name(req, &name, &err) < 0 || admin_get_size(req, &size, &err) < 0 ||
        get_force(req, &force, &err) < 0)
        return err;
    err = check_size(ctx, name, size);
    if (!err)
        err = check_resize(ctx, name, size, force, uuid);
    if (err)
        return err;
    struct change *ch = change_new(ctx, "resize", name, force);
    if (!ch)
        return NULL;
    return submitted(ctx, ch,
                     policing_volume_resize(node->pc, uuid, name, size, force, !ctx->who->admin,
                                            change_done, ch));
}

/* The current copies a removal must leave ([cluster] min_current; by
 * default 2 for a volume of 2 or more replicas, else 1). For the removal
 * that ends a move or lowers the count on purpose ("moving"), the count
 * is the one without the copy going: moving a single copy, or setting 2
 * replicas to 1, leaves one. */
static unsigned min_current(const struct context *ctx, const struct volume_info *info, bool moving)
{
    if (ctx->node->cfg->min_current)
        return ctx->node->cfg->min_current;
    return info->nreplicas - (moving ? 1 : 0) >= 2 ? 2 : 1;
}

/* replica.add, replica.remove: a CONFIG cut (policing_replica_set_change). */
static struct json_object *replica_change(const struct context *ctx, struct json_object *req,
                                          bool add)
{
    struct json_object *err = NULL;
    const char *name;
    struct volume_info info;
    uint32_t node;
    if (admin_get_name(req, &name, &err) < 0)
        return err;
    if (!ctx->node->mirror)
        return admin_reply_error(ADMIN_E_BAD_REPLICAS,
                                 "volume \"%s\": a standalone node holds the only copy", name);
    int r = volumes_info(ctx->node->vols, name, &info);
    if (r < 0)
        return admin_volume_failure(name, add ? "add a replica" : "remove a replica", r);
    if (admin_replica_node(ctx, req, &info, add, &node, &err) < 0)
        return err;
    struct change *ch = change_new(ctx, add ? "replica add" : "replica remove", name, false);
    if (!ch)
        return NULL;
    struct json_object *mv;
    bool moving = json_object_object_get_ex(req, "moving", &mv) && json_object_get_boolean(mv);
    ch->replica = node;
    ch->min_current = min_current(ctx, &info, moving);
    /* The commit checks again: the set may change meanwhile. */
    r = replica_change_check(info.replicas, info.nreplicas, add, node, ch->min_current);
    if (r == 0)
        r = policing_replica_set_change(ctx->node->pc, info.uuid, name, add, node, ch->min_current,
                                        change_done, ch);
    return submitted(ctx, ch, r);
}

static struct json_object *cmd_replica_add(const struct context *ctx, struct json_object *req)
{
    return replica_change(ctx, req, true);
}

static struct json_object *cmd_replica_remove(const struct context *ctx, struct json_object *req)
{
    return replica_change(ctx, req, false);
}

static struct json_object *cmd_volume_delete(const struct context *ctx, struct json_object *req)
{
    struct json_object *err = NULL;
    struct volume_info info;
    const char *name;

    if (admin_get_name(req, &name, &err) < 0)
        return err;
    int r = volumes_info(ctx->node->vols, name, &info);
    if (r == 0 && !admin_may_see(ctx, info.uuid))
        r = -ENOENT;
    if (r == 0 && !admin_may_change(ctx, info.uuid))
        return admin_reply_error(ADMIN_E_FORBIDDEN,
                                 "volume \"%s\": \"%s\" may not delete it: only its owner or "
                                 "an admin may",
                                 name, ctx->who->identity);
    if (r == 0 && info.connections > 0)
        r = -EBUSY;
    if (r < 0)
        return admin_volume_failure(name, "delete", r);
    struct change *ch = change_new(ctx, "delete", name, false);
    if (!ch)
        return NULL;
    return submitted(ctx, ch,
                     policing_volume_delete(ctx->node->pc, info.uuid, name, change_done, ch));
}

static int do_fail(struct mvol *v, void *arg)
{
    (void)arg;
    return mirror_replica_fail(v);
}

static int do_replace(struct mvol *v, void *arg)
{
    (void)arg;
    return mirror_replica_replace(v);
}

static struct json_object *replica_cmd(const struct context *ctx, struct json_object *req,
                                       const char *op, int (*fn)(struct mvol *, void *))
{
    struct json_object *err = NULL;
    const char *name;
    if (admin_get_name(req, &name, &err) < 0)
        return err;
    int r = volumes_mirrored(ctx->node->vols, name, fn, NULL);
    if (r == -ENODEV)
        return admin_reply_error(ADMIN_E_BAD_REQUEST,
                                 "volume \"%s\": %s: a standalone node has no other replica", name,
                                 op);
    if (r == -ENXIO)
        return admin_reply_error(ADMIN_E_BAD_REQUEST,
                                 "volume \"%s\": %s: this node holds no replica of it (diskless)",
                                 name, op);
    if (r < 0)
        return admin_volume_failure(name, op, r);
    struct json_object *o = json_object_new_object();
    if (o && json_add(o, "name", json_object_new_string(name)) < 0) {
        json_object_put(o);
        o = NULL;
    }
    return admin_reply_ok(o);
}

static struct json_object *cmd_replica_fail(const struct context *ctx, struct json_object *req)
{
    return replica_cmd(ctx, req, "fail the replica", do_fail);
}

/* The snapshots this copy lacks are cut first, so that the rebuild copies
 * their chunks too; a copy that still can't cut them is not rebuilt. */
static struct json_object *cmd_replica_replace(const struct context *ctx, struct json_object *req)
{
    struct json_object *err = NULL;
    const char *name;
    if (admin_get_name(req, &name, &err) < 0)
        return err;
    int r = volumes_snapshot_fill(ctx->node->vols, name);
    if (r < 0)
        return admin_volume_failure(name, "cut the snapshots its copy lacks", r);
    return replica_cmd(ctx, req, "replace the replica", do_replace);
}

/* A verify runs on its own thread; its result comes back to the main loop
 * through an eventfd, where the client is answered. */
struct verify_call {
    struct admin_call *call;
    qb_loop_t *loop;
    int efd;
    char name[VOLUME_NAME_MAX + 1];
    struct json_object *reply;
};

static void verify_done(void *arg, int result, const uint64_t *regions, size_t nlisted,
                        uint64_t ndiff, uint64_t nregions)
{
    struct verify_call *vc = arg;
    struct json_object *o = NULL;
    if (result < 0) {
        vc->reply = admin_reply_error(ADMIN_E_SYSTEM, "volume \"%s\": verify: %s", vc->name,
                                      strerror(-result));
    } else {
        o = json_object_new_object();
        struct json_object *a = json_object_new_array();
        for (size_t i = 0; a && i < nlisted; i++)
            json_object_array_add(a, json_object_new_int64((int64_t)regions[i]));
        if (!o || json_add(o, "name", json_object_new_string(vc->name)) < 0 ||
            admin_add_u64(o, "regions", nregions) < 0 || admin_add_u64(o, "differing", ndiff) < 0 ||
            json_add(o, "differing_regions", a) < 0) {
            json_object_put(o);
            o = NULL;
        }
        vc->reply = admin_reply_ok(o);
    }
    uint64_t one = 1;
    if (write(vc->efd, &one, sizeof one) != sizeof one)
        qb_log(LOG_ERR, "admin: verify \"%s\": can't wake the main loop", vc->name);
}

static int32_t verify_answer(int32_t fd, int32_t revents, void *data)
{
    struct verify_call *vc = data;
    (void)revents;
    qb_loop_poll_del(vc->loop, fd);
    close(fd);
    admin_call_reply(vc->call,
                     vc->reply ? vc->reply : admin_reply_error(ADMIN_E_SYSTEM, "out of memory"));
    free(vc);
    return 0;
}

static int start_verify(struct mvol *v, void *arg)
{
    return mirror_verify(v, verify_done, arg);
}

static struct json_object *cmd_volume_verify(const struct context *ctx, struct json_object *req)
{
    struct json_object *err = NULL;
    const char *name;
    if (admin_get_name(req, &name, &err) < 0)
        return err;
    struct verify_call *vc = calloc(1, sizeof *vc);
    if (!vc)
        return NULL;
    *vc = (struct verify_call){.call = ctx->call, .loop = ctx->node->loop};
    snprintf(vc->name, sizeof vc->name, "%s", name);
    vc->efd = eventfd(0, EFD_CLOEXEC);
    int r = vc->efd < 0 ? -errno : 0;
    if (r == 0)
        r = qb_loop_poll_add(vc->loop, QB_LOOP_MED, vc->efd, POLLIN, vc, verify_answer);
    if (r == 0)
        r = volumes_mirrored(ctx->node->vols, name, start_verify, vc);
    if (r == 0) {
        *ctx->later = true;
        return NULL;
    }
    if (vc->efd >= 0) {
        qb_loop_poll_del(vc->loop, vc->efd);
        close(vc->efd);
    }
    free(vc);
    if (r == -ENODEV)
        return admin_reply_error(ADMIN_E_BAD_REQUEST,
                                 "volume \"%s\": verify: a standalone node has one replica only",
                                 name);
    return admin_volume_failure(name, "verify", r);
}

/* ---- service addresses ------------------------------------------------- */

static int get_node(struct json_object *req, uint32_t *node, struct json_object **err)
{
    struct json_object *v = admin_field(req, "node", json_type_int, "a node id", err);
    if (!v)
        return -1;
    int64_t id = json_object_get_int64(v);
    if (id < 1 || id > UINT32_MAX) {
        *err = admin_reply_error(ADMIN_E_BAD_REQUEST, "node %" PRId64 ": not a node id", id);
        return -1;
    }
    *node = (uint32_t)id;
    return 0;
}

static struct json_object *service_failure(const char *op, uint32_t node, int r)
{
    switch (r) {
    case -ENOLINK:
        return admin_reply_error(ADMIN_E_NO_QUORUM, "%s node %u: this node has no quorum", op,
                                 node);
    case -ENOENT:
        return admin_reply_error(ADMIN_E_BAD_REQUEST, "%s node %u: it has no service address", op,
                                 node);
    case -EHOSTUNREACH:
        return admin_reply_error(ADMIN_E_BAD_REQUEST,
                                 "%s node %u: no other member could take its address", op, node);
    case -EHOSTDOWN:
        return admin_reply_error(ADMIN_E_BAD_REQUEST, "%s node %u: it is not a member now", op,
                                 node);
    case -EAGAIN:
        return admin_reply_error(ADMIN_E_BAD_REQUEST,
                                 "%s node %u: a replica on it is not current yet (resyncing)", op,
                                 node);
    default:
        return admin_reply_error(ADMIN_E_SYSTEM, "%s node %u: %s", op, node, strerror(-r));
    }
}

static struct json_object *service_moved(uint32_t owner, uint32_t holder, bool manual)
{
    qb_log(LOG_INFO, "admin: service address of node %u: moving it to node %u%s", owner, holder,
           manual ? " (manual failover)" : " (giveback)");
    struct json_object *o = json_object_new_object();
    if (o && (admin_add_u64(o, "owner", owner) < 0 || admin_add_u64(o, "holder", holder) < 0 ||
              json_add(o, "manual", json_object_new_boolean(manual)) < 0)) {
        json_object_put(o);
        o = NULL;
    }
    return admin_reply_ok(o);
}

static struct json_object *cmd_service_failover(const struct context *ctx, struct json_object *req)
{
    struct json_object *err = NULL;
    uint32_t owner, holder = 0;
    if (get_node(req, &owner, &err) < 0)
        return err;
    int r = policing_service_failover(ctx->node->pc, owner, &holder);
    return r < 0 ? service_failure("failover", owner, r) : service_moved(owner, holder, true);
}

static struct json_object *cmd_service_giveback(const struct context *ctx, struct json_object *req)
{
    struct json_object *err = NULL;
    uint32_t owner;
    if (get_node(req, &owner, &err) < 0)
        return err;
    int r = policing_service_giveback(ctx->node->pc, owner);
    return r < 0 ? service_failure("giveback", owner, r) : service_moved(owner, owner, false);
}

static const char *const no_fields[] = {NULL};
static const char *const node_fields[] = {"node", NULL};
static const char *const name_fields[] = {"name", NULL};
static const char *const replica_fields[] = {"name", "node", "moving", NULL};
static const char *const create_fields[] = {"name", "size", "owner", "replicas", "nodes", NULL};
static const char *const resize_fields[] = {"name", "size", "force", NULL};
static const char *const snapshot_create_fields[] = {"volumes", "snapshot", NULL};
static const char *const snapshot_fields[] = {"name", "snapshot", NULL};
static const char *const grant_fields[] = {"name", "identity", "read_only", NULL};
static const char *const revoke_fields[] = {"name", "identity", NULL};
static const char *const quota_fields[] = {"identity", "size", "volumes", NULL};
static const char *const identity_fields[] = {"identity", NULL};
static const char *const id_fields[] = {"id", NULL};

static const struct command commands[] = {
    {"status", no_fields, cmd_status, false},
    {"volume.list", no_fields, cmd_volume_list, true},
    {"volume.show", name_fields, cmd_volume_show, true},
    {"volume.verify", name_fields, cmd_volume_verify, false},
    {"replica.fail", name_fields, cmd_replica_fail, false},
    {"replica.replace", name_fields, cmd_replica_replace, false},
    {"replica.add", replica_fields, cmd_replica_add, false},
    {"replica.remove", replica_fields, cmd_replica_remove, false},
    {"volume.create", create_fields, cmd_volume_create, true},
    {"volume.resize", resize_fields, cmd_volume_resize, true},
    {"volume.delete", name_fields, cmd_volume_delete, true},
    {"service.failover", node_fields, cmd_service_failover, false},
    {"service.giveback", node_fields, cmd_service_giveback, false},
    {"snapshot.create", snapshot_create_fields, admin_snapshot_create, false},
    {"snapshot.list", name_fields, admin_snapshot_list, false},
    {"snapshot.delete", snapshot_fields, admin_snapshot_delete, false},
    {"snapshot.rollback", snapshot_fields, admin_snapshot_rollback, false},
    {"snapshot.rollback_status", name_fields, admin_snapshot_rollback_status, false},
    {"access.grant", grant_fields, admin_access_grant, false},
    {"access.revoke", revoke_fields, admin_access_revoke, false},
    {"access.list", name_fields, admin_access_list, false},
    {"quota.set", quota_fields, admin_quota_set, false},
    {"quota.list", no_fields, admin_quota_list, false},
    {"token.create", identity_fields, admin_token_create, false},
    {"token.list", no_fields, admin_token_list, false},
    {"token.revoke", id_fields, admin_token_revoke, false},
    {"pool.status", no_fields, admin_pool_status, false},
};

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    }
    return NULL;
}

static bool field_allowed(const struct command *c, const char *key)
{
    if (strcmp(key, "cmd") == 0)
        return true;
    for (const char *const *f = c->fields; *f; f++) {
        if (strcmp(*f, key) == 0)
            return true;
    }
    return false;
}

static struct json_object *check_fields(const struct command *c, struct json_object *req)
{
    json_object_object_foreach(req, key, val)
    {
        (void)val;
        if (!field_allowed(c, key))
            return admin_reply_error(ADMIN_E_BAD_REQUEST, "%s: unknown field \"%s\"", c->name, key);
    }
    return NULL;
}

static bool only_blanks(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
            return false;
    }
    return true;
}

/* One JSON object filling request exactly (blanks may follow), or NULL
 * with *err set. */
static struct json_object *parse_request(const char *request, size_t len, struct json_object **err)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *req;

    if (!tok)
        return NULL;
    req = json_tokener_parse_ex(tok, request, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!req) {
        *err = admin_reply_error(ADMIN_E_BAD_REQUEST, "request is not JSON: %s",
                                 jerr == json_tokener_continue ? "incomplete"
                                                               : json_tokener_error_desc(jerr));
        return NULL;
    }
    if (end < len && !only_blanks(request + end, len - end)) {
        *err = admin_reply_error(ADMIN_E_BAD_REQUEST, "request has data after its JSON object");
    } else if (!json_object_is_type(req, json_type_object)) {
        *err = admin_reply_error(ADMIN_E_BAD_REQUEST, "request must be a JSON object");
    } else {
        return req;
    }
    json_object_put(req);
    return NULL;
}

static struct json_object *run_request(const struct context *ctx, struct json_object *req)
{
    struct json_object *cmd, *err = NULL;

    cmd = admin_field(req, "cmd", json_type_string, "a string", &err);
    if (!cmd)
        return err;
    const struct command *c = find_command(json_object_get_string(cmd));
    if (!c)
        return admin_reply_error(ADMIN_E_UNKNOWN_COMMAND, "unknown command \"%s\"",
                                 json_object_get_string(cmd));
    err = check_fields(c, req);
    if (err)
        return err;
    if (!c->clients && !ctx->who->admin)
        return admin_forbidden(ctx, c->name);
    return c->run(ctx, req);
}

struct json_object *admin_execute(const struct admin_node *node, const struct admin_caller *who,
                                  const char *request, size_t len, struct admin_call *call,
                                  bool *later)
{
    static const struct admin_caller root = {"root", true};
    const struct context ctx = {node, who ? who : &root, call, later};
    struct json_object *req, *err = NULL;

    if (len > ADMIN_REQUEST_MAX)
        return admin_reply_error(ADMIN_E_TOO_LARGE, "request of %zu bytes is larger than %d bytes",
                                 len, ADMIN_REQUEST_MAX);
    req = parse_request(request, len, &err);
    if (!req)
        return err;
    struct json_object *reply = run_request(&ctx, req);
    json_object_put(req);
    return reply;
}
