/* admin_snap.c - the snapshot commands: snapshot.create (a cut through
 * the cluster, answered once it committed here), snapshot.list and
 * snapshot.delete (an agreed change). */
#include "vsan/admin_int.h"

#include "common/admin_proto.h"
#include "common/json_add.h"
#include "mirror/replicas.h"
#include "policing/protocol.h"
#include "store/snap.h"
#include "volume/volume.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <qb/qblog.h>

/* A cut or a delete on its way through the cluster. */
struct snap_change {
    const struct admin_node *node;
    struct admin_call *call;
    char snapshot[SNAP_NAME_MAX + 1];
    char volumes[PMSG_CUT_VOLUMES][VOLUME_NAME_MAX + 1];
    size_t n;
};

/* The reply to a failed snapshot call r on volume's snapshot during op. */
static struct json_object *snap_failure(const char *volume, const char *snapshot, const char *op,
                                        int r)
{
    switch (r) {
    case -EEXIST:
        return admin_reply_error(ADMIN_E_SNAPSHOT_EXISTS,
                                 "snapshot \"%s\": a volume of the cut already has one by that "
                                 "name",
                                 snapshot);
    case -EBUSY:
        return admin_reply_error(ADMIN_E_BUSY,
                                 "snapshot \"%s\": a volume of it is in another cut now; try again",
                                 snapshot);
    case -ETXTBSY: /* a delete: policing_snapshot_delete */
        return admin_reply_error(ADMIN_E_SNAPSHOT_BUSY,
                                 "volume \"%s\": snapshot \"%s\" is being read by a client "
                                 "(VOL@SNAP open on a node, a backup?): not deleted; try again "
                                 "once it closed",
                                 volume, snapshot);
    case -ETIMEDOUT:
        return admin_reply_error(
            ADMIN_E_ABORTED,
            "snapshot \"%s\": aborted: a node did not drain its writes in time "
            "(nothing was cut; try again)",
            snapshot);
    case -ECONNRESET:
    case -EAGAIN:
        return admin_reply_error(ADMIN_E_ABORTED,
                                 "snapshot \"%s\": aborted: the cluster changed during the cut "
                                 "(nothing was cut; try again)",
                                 snapshot);
    case -ENOSPC: /* cut meanwhile (check_volume named it if it could) */
        return admin_reply_error(ADMIN_E_SNAPSHOT_LIMIT,
                                 "snapshot \"%s\": a volume of it has %d snapshots already, the "
                                 "most a volume may have: delete one first",
                                 snapshot, SNAP_MAX);
    case -EINVAL:
        return admin_reply_error(ADMIN_E_BAD_NAME,
                                 "snapshot name \"%s\": must be 1 to %d characters of A-Z a-z 0-9 "
                                 ". _ - and not start with '.' or '-'",
                                 snapshot, SNAP_NAME_MAX);
    case -ENOMSG:
        return admin_reply_error(ADMIN_E_NO_SUCH_SNAPSHOT, "volume \"%s\": no snapshot \"%s\"",
                                 volume, snapshot);
    default:
        return admin_volume_failure(volume, op, r);
    }
}

static struct json_object *snap_object(const char *volume, const struct snap_info *si)
{
    struct json_object *o = json_object_new_object();
    if (o && ((volume && json_add(o, "volume", json_object_new_string(volume)) < 0) ||
              json_add(o, "name", json_object_new_string(si->name)) < 0 ||
              admin_add_u64(o, "id", si->id) < 0 ||
              json_add(o, "time", json_object_new_int64(si->time)) < 0 ||
              admin_add_u64(o, "size", si->size) < 0 ||
              admin_add_u64(o, "exclusive", si->exclusive) < 0)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* volume's snapshot called name, into *out: 0, -ENOENT (no volume),
 * -ENOMSG (no such snapshot), -ENOMEM. */
static int find_snapshot(struct volumes *vols, const char *volume, const char *name,
                         struct snap_info *out)
{
    struct snap_info *si;
    size_t n;
    int r = volumes_snapshots(vols, volume, &si, &n);
    if (r < 0)
        return r;
    r = -ENOMSG;
    for (size_t i = 0; i < n && r < 0; i++)
        if (strcmp(si[i].name, name) == 0) {
            *out = si[i];
            r = 0;
        }
    free(si);
    return r;
}

static struct json_object *cut_reply(struct snap_change *sc)
{
    struct json_object *a = json_object_new_array();
    for (size_t i = 0; a && i < sc->n; i++) {
        struct snap_info si;
        int r = find_snapshot(sc->node->vols, sc->volumes[i], sc->snapshot, &si);
        if (r < 0)
            return json_object_put(a), snap_failure(sc->volumes[i], sc->snapshot, "snapshot", r);
        if (json_object_array_add(a, snap_object(sc->volumes[i], &si)) < 0) {
            json_object_put(a);
            a = NULL;
        }
    }
    struct json_object *o = json_object_new_object();
    if (o && json_add(o, "snapshots", a) < 0) {
        json_object_put(o);
        o = NULL;
    }
    return admin_reply_ok(o);
}

static void cut_done(void *arg, int r)
{
    struct snap_change *sc = arg;
    struct json_object *reply;
    if (r == 0) {
        qb_log(LOG_INFO, "snapshot \"%s\" of %zu volume(s) cut", sc->snapshot, sc->n);
        reply = cut_reply(sc);
    } else {
        reply = snap_failure(sc->volumes[0], sc->snapshot, "snapshot", r);
    }
    admin_call_reply(sc->call, reply);
    free(sc);
}

/* "volumes": 1 to PMSG_CUT_VOLUMES names, each once, into sc. */
static struct json_object *get_volumes(struct json_object *req, struct snap_change *sc)
{
    struct json_object *err = NULL;
    struct json_object *a = admin_field(req, "volumes", json_type_array, "an array of names", &err);
    if (!a)
        return err;
    size_t n = json_object_array_length(a);
    if (n == 0)
        return admin_reply_error(ADMIN_E_BAD_REQUEST, "a snapshot takes 1 to %d volumes, not 0",
                                 PMSG_CUT_VOLUMES);
    if (n > PMSG_CUT_VOLUMES)
        return admin_reply_error(ADMIN_E_TOO_MANY_VOLUMES,
                                 "%zu volumes: one snapshot (one point in time) takes at most %d",
                                 n, PMSG_CUT_VOLUMES);
    for (size_t i = 0; i < n; i++) {
        struct json_object *v = json_object_array_get_idx(a, i);
        const char *name = json_object_get_string(v);
        if (!json_object_is_type(v, json_type_string) ||
            strlen(name) != (size_t)json_object_get_string_len(v) || strlen(name) > VOLUME_NAME_MAX)
            return admin_reply_error(ADMIN_E_BAD_NAME,
                                     "volume %zu of the snapshot: not a volume "
                                     "name",
                                     i + 1);
        for (size_t j = 0; j < i; j++)
            if (strcmp(sc->volumes[j], name) == 0)
                return admin_reply_error(ADMIN_E_BAD_REQUEST,
                                         "volume \"%s\" is named twice in the snapshot", name);
        snprintf(sc->volumes[i], sizeof sc->volumes[i], "%s", name);
    }
    sc->n = n;
    return NULL;
}

static struct json_object *get_snapshot(struct json_object *req, char *out)
{
    struct json_object *err = NULL;
    struct json_object *v = admin_field(req, "snapshot", json_type_string, "a string", &err);
    if (!v)
        return err;
    const char *s = json_object_get_string(v);
    if (strlen(s) != (size_t)json_object_get_string_len(v) || !store_name_valid(s))
        return snap_failure("", s, "snapshot", -EINVAL);
    snprintf(out, SNAP_NAME_MAX + 1, "%s", s);
    return NULL;
}

/* Whether volume may take one more snapshot, as this node sees it: NULL,
 * or the error reply (no such volume, or SNAP_MAX snapshots already; the
 * cut checks the limit again in agreed order). */
static struct json_object *check_volume(struct volumes *vols, const char *volume)
{
    struct snap_info *si;
    size_t n;
    int r = volumes_snapshots(vols, volume, &si, &n);
    if (r < 0)
        return admin_volume_failure(volume, "snapshot", r);
    free(si);
    if (n >= SNAP_MAX)
        return admin_reply_error(ADMIN_E_SNAPSHOT_LIMIT,
                                 "volume \"%s\": %zu snapshots already, the most a volume may "
                                 "have: delete one first",
                                 volume, n);
    return NULL;
}

struct json_object *admin_snapshot_create(const struct context *ctx, struct json_object *req)
{
    struct snap_change *sc = calloc(1, sizeof *sc);
    if (!sc)
        return NULL;
    *sc = (struct snap_change){.node = ctx->node, .call = ctx->call};
    struct json_object *err = get_volumes(req, sc);
    if (!err)
        err = get_snapshot(req, sc->snapshot);
    for (size_t i = 0; !err && i < sc->n; i++)
        err = check_volume(ctx->node->vols, sc->volumes[i]);
    if (err) {
        free(sc);
        return err;
    }
    const char *names[PMSG_CUT_VOLUMES];
    for (size_t i = 0; i < sc->n; i++)
        names[i] = sc->volumes[i];
    int r = policing_snapshot_create(ctx->node->pc, names, sc->n, sc->snapshot, cut_done, sc);
    if (r < 0) {
        err = snap_failure(sc->volumes[0], sc->snapshot, "snapshot", r);
        free(sc);
        return err;
    }
    *ctx->later = true;
    return NULL;
}

/* The nodes whose copy is current: a snapshot is read from them. */
static struct json_object *current_nodes(const struct volume_info *info)
{
    struct json_object *a = json_object_new_array();
    for (uint32_t i = 0; a && i < info->nreplicas; i++)
        if (info->replicas[i].state == REPLICA_CURRENT &&
            json_object_array_add(a, json_object_new_int64(info->replicas[i].node)) < 0) {
            json_object_put(a);
            a = NULL;
        }
    return a;
}

static struct json_object *snapshot_array(const struct volume_info *info,
                                          const struct snap_info *si, size_t n)
{
    struct json_object *a = json_object_new_array();
    for (size_t i = 0; a && i < n; i++) {
        struct json_object *o = snap_object(NULL, &si[i]);
        if (!o || json_add(o, "replicas", current_nodes(info)) < 0 ||
            json_object_array_add(a, o) < 0) {
            json_object_put(o);
            json_object_put(a);
            a = NULL;
        }
    }
    return a;
}

struct json_object *admin_snapshot_list(const struct context *ctx, struct json_object *req)
{
    struct json_object *err = NULL;
    const char *name;
    if (admin_get_name(req, &name, &err) < 0)
        return err;
    struct volume_info info;
    struct snap_info *si = NULL;
    size_t n = 0;
    int r = volumes_info(ctx->node->vols, name, &info);
    if (r == 0)
        r = volumes_snapshots(ctx->node->vols, name, &si, &n);
    if (r < 0)
        return admin_volume_failure(name, "list snapshots", r);
    struct json_object *o = json_object_new_object();
    if (o && json_add(o, "snapshots", snapshot_array(&info, si, n)) < 0) {
        json_object_put(o);
        o = NULL;
    }
    free(si);
    return admin_reply_ok(o);
}

static void delete_done(void *arg, int r)
{
    struct snap_change *sc = arg;
    struct json_object *reply;
    if (r == 0) {
        qb_log(LOG_INFO, "volume \"%s\": snapshot \"%s\" deleted", sc->volumes[0], sc->snapshot);
        reply = admin_reply_ok(json_object_new_object());
    } else {
        reply = snap_failure(sc->volumes[0], sc->snapshot, "delete a snapshot",
                             r == -ENOENT ? -ENOMSG : r);
    }
    admin_call_reply(sc->call, reply);
    free(sc);
}

struct json_object *admin_snapshot_delete(const struct context *ctx, struct json_object *req)
{
    struct json_object *err = NULL;
    const char *name;
    struct snap_change *sc = calloc(1, sizeof *sc);
    if (!sc)
        return NULL;
    *sc = (struct snap_change){.node = ctx->node, .call = ctx->call, .n = 1};
    if (admin_get_name(req, &name, &err) == 0)
        err = get_snapshot(req, sc->snapshot);
    struct snap_info si;
    int r = err ? 0 : find_snapshot(ctx->node->vols, name, sc->snapshot, &si);
    if (!err && r < 0)
        err = snap_failure(name, sc->snapshot, "delete a snapshot", r);
    if (!err) {
        snprintf(sc->volumes[0], sizeof sc->volumes[0], "%s", name);
        r = policing_snapshot_delete(ctx->node->pc, name, sc->snapshot, delete_done, sc);
        if (r < 0)
            err = snap_failure(name, sc->snapshot, "delete a snapshot", r);
    }
    if (err) {
        free(sc);
        return err;
    }
    *ctx->later = true;
    return NULL;
}

/* ---- rollback ------------------------------------------------------------ */

/* A rollback this node runs: fenced, copied, unfenced (rollback.c). */
struct rollback_call {
    const struct admin_node *node;
    struct admin_call *call; /* answered once the copy has started */
    char volume[VOLUME_NAME_MAX + 1];
    char snapshot[SNAP_NAME_MAX + 1];
    int efd;
};

static void rollback_call_free(struct rollback_call *rc)
{
    if (rc->efd >= 0) {
        qb_loop_poll_del(rc->node->loop, rc->efd);
        close(rc->efd);
    }
    free(rc);
}

static void unfence(struct rollback_call *rc);

static void unfence_again(void *data)
{
    unfence(data);
}

/* An unfence refused (another cut of the volume open, a sync round, no
 * quorum for a moment) is asked again each second until it is lifted: a
 * volume fenced for good would refuse every client. */
static void unfence_done(void *arg, int r)
{
    struct rollback_call *rc = arg;
    if (r == 0 || r == -ESHUTDOWN) {
        rollback_call_free(rc);
        return;
    }
    qb_log(LOG_WARNING,
           "volume \"%s\": rollback to \"%s\": the fence not lifted yet (%s); again "
           "in 1 s",
           rc->volume, rc->snapshot, strerror(-r));
    qb_loop_timer_handle t;
    if (qb_loop_timer_add(rc->node->loop, QB_LOOP_MED, 1000000000ULL, rc, unfence_again, &t) < 0) {
        qb_log(LOG_ERR,
               "volume \"%s\": the fence not lifted: no timer; it ends when this node "
               "leaves the group",
               rc->volume);
        rollback_call_free(rc);
    }
}

static void unfence(struct rollback_call *rc)
{
    int r =
        policing_rollback_fence(rc->node->pc, rc->volume, rc->snapshot, false, unfence_done, rc);
    if (r < 0)
        unfence_done(rc, r);
}

/* The copy ended (rollback.c wrote the eventfd): lift the fence. */
static int32_t rollback_ended(int32_t fd, int32_t revents, void *data)
{
    struct rollback_call *rc = data;
    uint64_t n;
    (void)revents;
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN)
        qb_log(LOG_ERR, "admin: rollback: eventfd: %s", strerror(errno));
    qb_loop_poll_del(rc->node->loop, fd);
    unfence(rc);
    return 0;
}

static struct json_object *rollback_failure(const char *volume, const char *snapshot, int r)
{
    if (r == -EALREADY)
        return admin_reply_error(ADMIN_E_BUSY, "volume \"%s\": a rollback of it runs already",
                                 volume);
    if (r == -EBUSY || r == -ETXTBSY) /* here, or on a node (the fence) */
        return admin_reply_error(ADMIN_E_VOLUME_IN_USE,
                                 "volume \"%s\": cannot roll back: clients have it open on a node",
                                 volume);
    return snap_failure(volume, snapshot, "roll back", r);
}

static void fence_done(void *arg, int r)
{
    struct rollback_call *rc = arg;
    if (r == 0) {
        rc->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        r = rc->efd < 0 ? -errno : 0;
        if (r == 0)
            r = qb_loop_poll_add(rc->node->loop, QB_LOOP_MED, rc->efd, POLLIN, rc, rollback_ended);
        if (r == 0)
            r = volumes_rollback_start(rc->node->vols, rc->volume, rc->snapshot, rc->efd);
        if (r < 0) {
            admin_call_reply(rc->call, rollback_failure(rc->volume, rc->snapshot, r));
            rc->call = NULL;
            rollback_ended(rc->efd, 0, rc); /* lifts the fence */
            return;
        }
        qb_log(LOG_INFO, "volume \"%s\": rolling back to snapshot \"%s\"", rc->volume,
               rc->snapshot);
        admin_call_reply(rc->call, admin_reply_ok(json_object_new_object()));
        return;
    }
    admin_call_reply(rc->call, rollback_failure(rc->volume, rc->snapshot, r));
    rollback_call_free(rc);
}

struct json_object *admin_snapshot_rollback(const struct context *ctx, struct json_object *req)
{
    struct json_object *err = NULL;
    const char *name;
    struct rollback_call *rc = calloc(1, sizeof *rc);
    if (!rc)
        return NULL;
    *rc = (struct rollback_call){.node = ctx->node, .call = ctx->call, .efd = -1};
    if (admin_get_name(req, &name, &err) == 0)
        err = get_snapshot(req, rc->snapshot);
    struct snap_info si;
    struct volume_info info;
    int r = err ? 0 : find_snapshot(ctx->node->vols, name, rc->snapshot, &si);
    if (!err && r == 0 && (r = volumes_info(ctx->node->vols, name, &info)) == 0 &&
        info.connections > 0)
        r = -EBUSY;
    struct rollback_status st;
    if (!err && r == 0 && volumes_rollback_status(ctx->node->vols, name, &st) == 0 && st.running)
        err = admin_reply_error(ADMIN_E_BUSY, "volume \"%s\": a rollback runs already", name);
    if (!err && r < 0)
        err = rollback_failure(name, rc->snapshot, r);
    if (!err) {
        snprintf(rc->volume, sizeof rc->volume, "%s", name);
        r = policing_rollback_fence(ctx->node->pc, name, rc->snapshot, true, fence_done, rc);
        if (r < 0)
            err = rollback_failure(name, rc->snapshot, r);
    }
    if (err) {
        free(rc);
        return err;
    }
    *ctx->later = true;
    return NULL;
}

struct json_object *admin_snapshot_rollback_status(const struct context *ctx,
                                                   struct json_object *req)
{
    struct json_object *err = NULL;
    const char *name;
    if (admin_get_name(req, &name, &err) < 0)
        return err;
    struct rollback_status st;
    struct volume_info info;
    int r = volumes_info(ctx->node->vols, name, &info);
    if (r < 0)
        return admin_volume_failure(name, "rollback status", r);
    if (volumes_rollback_status(ctx->node->vols, name, &st) < 0)
        return admin_reply_error(ADMIN_E_NO_SUCH_SNAPSHOT,
                                 "volume \"%s\": no rollback was started on this node", name);
    struct json_object *o = json_object_new_object();
    if (o && (json_add(o, "snapshot", json_object_new_string(st.snapshot)) < 0 ||
              json_add(o, "running", json_object_new_boolean(st.running)) < 0 ||
              json_add(o, "fenced",
                       json_object_new_boolean(volumes_fenced(ctx->node->vols, name))) < 0 ||
              admin_add_u64(o, "done", st.done) < 0 || admin_add_u64(o, "total", st.total) < 0 ||
              json_add(o, "seconds", json_object_new_double(st.seconds)) < 0 ||
              (st.result < 0 &&
               json_add(o, "error", json_object_new_string(strerror(-st.result))) < 0))) {
        json_object_put(o);
        o = NULL;
    }
    return admin_reply_ok(o);
}
