/* voltable.c - the node's side of the replicated volume table: the
 * policing protocol's table ops (policing/protocol.h) over the volume
 * layer and the store.
 *
 * Changes arrive in agreed order and must have the same outcome on every
 * node, so nothing here depends on local state other than the table: a
 * volume deleted or shrunk by the cluster goes even while this node has
 * NBD clients on it (they get ESHUTDOWN or a shorter volume). The
 * requesting node's admin command refuses that for its own clients before
 * it asks (admin_cmds.c).
 */
#include "volume/voltable.h"

#include "mirror/engine.h"
#include "mirror/replicas.h"
#include "store/store.h"
#include "volume/access.h"
#include "volume/owners.h"
#include "volume/tokens.h"
#include "volume/volume.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

_Static_assert(REPLICA_CURRENT == PMSG_REPLICA_CURRENT,
               "the policing protocol's service rules read replica states");
_Static_assert(REPLICA_OUTDATED == PMSG_REPLICA_OUTDATED, "an OUTDATE sets replica states");

/* Whether owner may own size bytes more (a new volume: uuid NULL; client:
 * a client asks, which needs a quota), by the table alone: 0, -EDQUOT or
 * -ENODATA (logged). */
static int quota_check(struct voltable *t, const char *name, const char *owner, const char *uuid,
                       uint64_t size, bool client)
{
    struct volume_info *vols;
    size_t n;
    int r = volumes_list(t->vols, &vols, &n);
    if (r < 0)
        return r;
    struct policing_quota over;
    r = owners_check(volumes_owners(t->vols), owner, uuid, size, client, vols, n, &over);
    free(vols);
    if (r == -EDQUOT)
        qb_log(LOG_NOTICE,
               "volume \"%s\": refused: %" PRIu64 " bytes would take \"%s\" past the quota of "
               "\"%s\" (%" PRIu64 " bytes in %" PRIu32 " volumes)",
               name, size, owner, over.identity, over.limit, over.volumes);
    else if (r == -ENODATA)
        qb_log(LOG_NOTICE, "volume \"%s\": refused: client \"%s\" has no quota", name, owner);
    return r;
}

/* Whether the owner and grant tables take one more owned volume: 0 or
 * -EXFULL (logged). A volume made without its owner would be charged to
 * nobody, or to an owner that could not use it. */
static int room_check(struct voltable *t, const char *name, const char *owner)
{
    if (!owners_full(volumes_owners(t->vols)) && access_room(volumes_access(t->vols), owner) == 0)
        return 0;
    qb_log(LOG_ERR,
           "volume \"%s\": refused: the owner or grant table is full (%d owned volumes, "
           "%d grants)",
           name, OWNERS_MAX, ACCESS_GRANTS_TOTAL_MAX);
    return -EXFULL;
}

/* The volume owner just created is its: owned, with a read-write grant.
 * The create is done on every node, and so is the owner here, in memory
 * even if its file is not written (owners.h), so quota checks stay the
 * group's. A grant the grants file does not take fails closed (access.h):
 * logged, the owner still sees and changes its volume (admin_may_see). */
static void take_ownership(struct voltable *t, const char *name, const char *uuid,
                           const char *owner)
{
    bool ended;
    int r = owners_set(volumes_owners(t->vols), uuid, owner);
    if (r == 0)
        r = access_set(volumes_access(t->vols), uuid, owner, PMSG_GRANT_RW, &ended);
    if (r < 0)
        qb_log(LOG_ERR, "volume \"%s\": owner \"%s\" not recorded: %s", name, owner, strerror(-r));
    else
        qb_log(LOG_INFO, "volume \"%s\": owned by \"%s\", granted read-write", name, owner);
}

static int vt_create(void *ctx, const char *uuid, const char *name, uint64_t size,
                     const char *owner, bool client, const uint32_t *members, size_t nmembers,
                     bool fixed)
{
    struct voltable *t = ctx;
    const char *why;
    if ((owner[0] && access_identity_check(owner, &why) < 0) || (client && !owner[0]))
        return -EINVAL;
    struct volume_info info;
    if (owner[0] && volumes_info(t->vols, name, &info) == 0)
        return -EEXIST; /* before the quota: the answer a create without owner gets */
    int r = owner[0] ? quota_check(t, name, owner, NULL, size, client) : 0;
    if (r == 0 && owner[0])
        r = room_check(t, name, owner);
    if (r == 0)
        r = volumes_create_replicated(t->vols, name, size, uuid, members, nmembers, fixed, NULL);
    if (r == 0 && owner[0])
        take_ownership(t, name, uuid, owner);
    return r;
}

/* The volume name, if it is still the volume uuid the requester checked:
 * 0, or -ENOENT (gone, or another volume took its name). */
static int same_volume(struct voltable *t, const char *uuid, const char *name,
                       struct volume_info *info)
{
    int r = volumes_info(t->vols, name, info);
    if (r == 0 && strcmp(info->uuid, uuid) != 0) {
        qb_log(LOG_NOTICE, "volume \"%s\": is %s now, not %s: the change is for a volume gone",
               name, info->uuid, uuid);
        r = -ENOENT;
    }
    return r;
}

/* A CONFIG cut's resize (vt_cut_commit). */
static int vt_resize(struct voltable *t, const char *uuid, const char *name, uint64_t size,
                     bool force, bool client)
{
    struct volume_info info;
    int r = same_volume(t, uuid, name, &info);
    const char *owner = r == 0 ? owners_of(volumes_owners(t->vols), info.uuid) : "";
    if (r == 0 && owner[0] && size > info.size)
        r = quota_check(t, name, owner, info.uuid, size, client);
    if (r == 0)
        r = volumes_resize(t->vols, name, size, force, true, NULL);
    return r;
}

/* A CONFIG cut's replica change, on the engine of every node. */
struct replica_change {
    const struct cut *c;
    bool member; /* the node was a member at the BEGIN */
};

static int replica_change(struct mvol *mv, void *arg)
{
    const struct replica_change *x = arg;
    const struct pmsg_cut_config *cfg = &x->c->config;
    if (cfg->op == PMSG_CONFIG_REMOVE)
        return mirror_replica_remove(mv, cfg->node, cfg->min_current);
    /* Only a member makes its copy at the commit: one away would be
     * called syncing with no data file to take the writes. */
    if (!x->member)
        return -EHOSTDOWN;
    return cfg->op == PMSG_CONFIG_REPLACE ? mirror_replica_rebuild(mv, cfg->from, cfg->node)
                                          : mirror_replica_add(mv, cfg->node);
}

static int vt_replica_change(struct voltable *t, const struct cut *c)
{
    struct volume_info info;
    int r = same_volume(t, c->config.uuid, c->volume, &info);
    struct replica_change x = {c, false};
    for (size_t i = 0; i < c->nmembers; i++)
        x.member = x.member || c->members[i] == c->config.node;
    return r < 0 ? r : volumes_mirrored(t->vols, c->volume, replica_change, &x);
}

static int vt_remove(void *ctx, const char *uuid, const char *name)
{
    struct voltable *t = ctx;
    struct volume_info info;
    int r = same_volume(t, uuid, name, &info);
    return r < 0 ? r : volumes_delete(t->vols, name, true);
}

static int vt_list(void *ctx, struct policing_volume **out, size_t *n)
{
    struct voltable *t = ctx;
    struct store_volume *rec;
    int r = volumes_list_records(t->vols, &rec, n);
    if (r < 0)
        return r;
    *out = calloc(*n ? *n : 1, sizeof **out);
    if (!*out) {
        free(rec);
        return -ENOMEM;
    }
    for (size_t i = 0; i < *n; i++) {
        struct policing_volume *v = &(*out)[i];
        snprintf(v->uuid, sizeof v->uuid, "%s", rec[i].uuid);
        snprintf(v->name, sizeof v->name, "%s", rec[i].name);
        v->size = rec[i].size;
        v->generation = rec[i].generation;
        v->fixed = rec[i].fixed;
        v->nreplicas = rec[i].nreplicas;
        for (uint32_t j = 0; j < rec[i].nreplicas && j < PMSG_REPLICAS_MAX; j++)
            v->replicas[j] =
                (struct policing_replica){rec[i].replicas[j].node, rec[i].replicas[j].state};
    }
    free(rec);
    return 0;
}

static const struct policing_volume *find_uuid(const struct policing_volume *v, size_t n,
                                               const char *uuid)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].uuid, uuid) == 0)
            return &v[i];
    return NULL;
}

/* Local replicas the group does not have, or has under another name. */
static int drop_extra(struct voltable *t, const struct policing_volume *want, size_t n)
{
    struct policing_volume *have;
    size_t nh;
    int r = vt_list(t, &have, &nh);
    for (size_t i = 0; r == 0 && i < nh; i++) {
        const struct policing_volume *w = find_uuid(want, n, have[i].uuid);
        if (w && strcmp(w->name, have[i].name) == 0)
            continue;
        qb_log(LOG_INFO, "volume \"%s\" (%s): not in the group's table: deleting the local replica",
               have[i].name, have[i].uuid);
        r = volumes_delete(t->vols, have[i].name, true);
    }
    free(have);
    return r;
}

/* The group's volume, here: a placed one with its set (diskless if this
 * node is not in it), else a copy that joins the set by a resync. */
static int create_from(struct voltable *t, const struct policing_volume *want)
{
    if (!want->fixed)
        return volumes_create(t->vols, want->name, want->size, want->uuid, NULL);
    uint32_t nodes[PMSG_REPLICAS_MAX];
    for (uint32_t i = 0; i < want->nreplicas && i < PMSG_REPLICAS_MAX; i++)
        nodes[i] = want->replicas[i].node;
    return volumes_create_replicated(t->vols, want->name, want->size, want->uuid, nodes,
                                     want->nreplicas, true, NULL);
}

static int take_replicas(struct voltable *t, const struct policing_volume *want)
{
    struct store_replica r[STORE_REPLICAS_MAX];
    uint32_t n = want->nreplicas < STORE_REPLICAS_MAX ? want->nreplicas : STORE_REPLICAS_MAX;
    for (uint32_t i = 0; i < n; i++)
        r[i] = (struct store_replica){want->replicas[i].node, want->replicas[i].state};
    return volumes_set_replicas(t->vols, want->name, want->fixed, r, n);
}

/* Creates or resizes local replicas to match the group's table, and takes
 * its replica sets. */
static int add_missing(struct voltable *t, const struct policing_volume *want, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct volume_info info;
        int r = volumes_info(t->vols, want[i].name, &info);
        if (r == -ENOENT) {
            qb_log(LOG_INFO, "volume \"%s\" (%s): creating the local replica", want[i].name,
                   want[i].uuid);
            r = create_from(t, &want[i]);
        } else if (r == 0 && info.size != want[i].size) {
            qb_log(LOG_INFO, "volume \"%s\": resizing the local replica to the group's size",
                   want[i].name);
            r = volumes_resize(t->vols, want[i].name, want[i].size, true, true, NULL);
        }
        if (r == 0)
            r = take_replicas(t, &want[i]);
        if (r < 0)
            return r;
    }
    return 0;
}

static int vt_load(void *ctx, const struct policing_volume *v, size_t n)
{
    struct voltable *t = ctx;
    int r = drop_extra(t, v, n);
    return r < 0 ? r : add_missing(t, v, n);
}

static uint64_t vt_version(void *ctx)
{
    struct voltable *t = ctx;
    uint64_t v = 0;
    if (store_version_get(t->store, &v) < 0)
        return 0;
    return v;
}

static int vt_set_version(void *ctx, uint64_t version)
{
    struct voltable *t = ctx;
    return store_version_set(t->store, version);
}

static int vt_replica(void *ctx, uint32_t from, uint32_t volume, uint32_t node, uint8_t state,
                      uint64_t first, uint64_t last)
{
    struct voltable *t = ctx;
    return volumes_replica(t->vols, from, volume, node, state, first, last);
}

static int vt_node_left(void *ctx, uint32_t node, const struct pol_key *lost, size_t nlost,
                        const uint32_t *members, size_t nmembers)
{
    struct voltable *t = ctx;
    return volumes_node_left(t->vols, node, lost, nlost, members, nmembers);
}

static void vt_regions_lost(void *ctx, uint32_t from, const struct pol_key *keys, size_t n)
{
    struct voltable *t = ctx;
    if (t->mirror)
        mirror_regions_lost(t->mirror, from, keys, n);
}

static void vt_changed(void *ctx)
{
    struct voltable *t = ctx;
    mirror_changed(t->mirror);
}

static int vt_cut_check(void *ctx, struct cut *c, const char (*names)[PMSG_NAME_MAX + 1])
{
    struct voltable *t = ctx;
    return volumes_cut_check(t->vols, c, names);
}

static void vt_cut_hold(void *ctx, const struct cut *c)
{
    struct voltable *t = ctx;
    volumes_cut_hold(t->vols, c);
}

static int vt_cut_drained(void *ctx, const struct cut *c)
{
    struct voltable *t = ctx;
    return volumes_cut_drained(t->vols, c);
}

/* A configuration change applies between the drain and the release: no
 * write of the old configuration is in flight anywhere, none of the new
 * one has started. Its checks are the ones a resize always had here. */
static int vt_cut_commit(void *ctx, const struct cut *c, uint64_t id)
{
    struct voltable *t = ctx;
    if (c->kind != PMSG_CUT_CONFIG)
        return volumes_cut_commit(t->vols, c, id);
    volumes_cut_settle(t->vols, c);
    int r = c->config.op == PMSG_CONFIG_RESIZE
                ? vt_resize(t, c->config.uuid, c->volume, c->config.size, c->config.force,
                            c->config.client != 0)
                : vt_replica_change(t, c);
    int e = volumes_cut_commit(t->vols, c, id);
    return r < 0 ? r : e;
}

static void vt_cut_release(void *ctx, const struct cut *c)
{
    struct voltable *t = ctx;
    volumes_cut_release(t->vols, c);
}

static int vt_snap_list(void *ctx, struct policing_snap **out, size_t *n)
{
    struct voltable *t = ctx;
    return volumes_snapshot_list_all(t->vols, out, n);
}

static int vt_snap_load(void *ctx, const struct policing_snap *s, size_t n, uint64_t last_cut)
{
    struct voltable *t = ctx;
    return volumes_snapshot_load(t->vols, s, n, last_cut);
}

static int vt_fence_list(void *ctx, struct policing_fence **out, size_t *n)
{
    struct voltable *t = ctx;
    return volumes_fence_list(t->vols, out, n);
}

static int vt_fence_load(void *ctx, const struct policing_fence *f, size_t n)
{
    struct voltable *t = ctx;
    return volumes_fence_load(t->vols, f, n);
}

/* identity's grant on the volume went or changed: its connections to
 * the volume end on this node (each node ends its own). */
static void grant_ended(struct voltable *t, const char *name, const char *identity)
{
    qb_log(LOG_INFO, "volume \"%s\": the grant of \"%s\" changed: its connections here end", name,
           identity);
    if (t->grant_ended)
        t->grant_ended(t->grant_ended_arg, name, identity);
}

static int vt_grant(void *ctx, const char *name, const char *identity, uint8_t mode)
{
    struct voltable *t = ctx;
    struct volume_info info;
    int r = volumes_info(t->vols, name, &info);
    bool ended = false;
    if (r == 0)
        r = access_set(volumes_access(t->vols), info.uuid, identity, mode, &ended);
    if (ended)
        grant_ended(t, name, identity);
    /* A grant is part of the volume's configuration: its generation moves
     * (on every node, in agreed order) without holding its I/O, which the
     * grant does not change for anyone it still lets in. */
    int g = r == 0 ? volumes_bump_generation(t->vols, name) : 0;
    if (g < 0)
        qb_log(LOG_ERR, "volume \"%s\": generation not bumped for a grant change: %s", name,
               strerror(-g));
    return r;
}

static int vt_grant_list(void *ctx, struct policing_grant **out, size_t *n)
{
    struct voltable *t = ctx;
    return access_list(volumes_access(t->vols), NULL, out, n);
}

struct load_ended {
    struct voltable *t;
    struct store_volume *vols;
    size_t n;
};

static void load_ended(void *arg, const char *uuid, const char *identity)
{
    struct load_ended *le = arg;
    for (size_t i = 0; i < le->n; i++)
        if (strcmp(le->vols[i].uuid, uuid) == 0)
            grant_ended(le->t, le->vols[i].name, identity);
}

static int vt_grant_load(void *ctx, const struct policing_grant *g, size_t n)
{
    struct voltable *t = ctx;
    struct load_ended le = {.t = t};
    int r = volumes_list_records(t->vols, &le.vols, &le.n);
    if (r < 0)
        return r;
    r = access_load(volumes_access(t->vols), g, n, load_ended, &le);
    free(le.vols);
    return r;
}

static int vt_quota(void *ctx, const char *identity, uint64_t limit, uint32_t volumes)
{
    struct voltable *t = ctx;
    return owners_quota_set(volumes_owners(t->vols), identity, limit, volumes);
}

static int vt_token(void *ctx, const struct policing_token *rec, bool revoke)
{
    struct voltable *t = ctx;
    return tokens_apply(volumes_tokens(t->vols), rec, revoke);
}

static int vt_idents_list(void *ctx, struct policing_idents *out)
{
    struct voltable *t = ctx;
    *out = (struct policing_idents){0};
    int r = owners_list(volumes_owners(t->vols), out);
    if (r == 0)
        r = tokens_list(volumes_tokens(t->vols), &out->tokens, &out->ntokens);
    if (r < 0)
        policing_idents_free(out);
    return r;
}

static int vt_idents_load(void *ctx, const struct policing_idents *in)
{
    struct voltable *t = ctx;
    /* Tokens first: a revoke must reach this node whatever else fails. */
    int r = tokens_load(volumes_tokens(t->vols), in->tokens, in->ntokens);
    int o = owners_load(volumes_owners(t->vols), in);
    return r < 0 ? r : o;
}

const struct policing_table_ops voltable_ops = {
    .quota = vt_quota,
    .token = vt_token,
    .idents_list = vt_idents_list,
    .idents_load = vt_idents_load,
    .grant = vt_grant,
    .grant_list = vt_grant_list,
    .grant_load = vt_grant_load,
    .cut_check = vt_cut_check,
    .cut_hold = vt_cut_hold,
    .cut_drained = vt_cut_drained,
    .cut_commit = vt_cut_commit,
    .cut_release = vt_cut_release,
    .snap_list = vt_snap_list,
    .snap_load = vt_snap_load,
    .fence_list = vt_fence_list,
    .fence_load = vt_fence_load,
    .replica = vt_replica,
    .node_left = vt_node_left,
    .regions_lost = vt_regions_lost,
    .changed = vt_changed,
    .create = vt_create,
    .remove = vt_remove,
    .list = vt_list,
    .load = vt_load,
    .version = vt_version,
    .set_version = vt_set_version,
};
