/* admin_access.c - the grant commands: access.grant and access.revoke (an
 * agreed change of the volume table, answered once applied here) and
 * access.list (this node's copy of the table). See volume/access.h. */
#include "vsan/admin_int.h"

#include "common/admin_proto.h"
#include "common/json_add.h"
#include "policing/protocol.h"
#include "common/identity.h"
#include "volume/access.h"
#include "volume/volume.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

/* A grant or revoke on its way through the cluster. */
struct access_change {
    struct admin_call *call;
    uint8_t mode; /* enum pmsg_grant_mode */
    char volume[VOLUME_NAME_MAX + 1];
    char identity[PMSG_IDENTITY_MAX + 1];
    char by[PMSG_IDENTITY_MAX + 1]; /* who asked, for the log */
};

static const char *mode_name(bool read_only)
{
    return read_only ? "read-only" : "read-write";
}

static struct json_object *grant_object(const char *volume, const char *identity, bool read_only)
{
    struct json_object *o = json_object_new_object();
    if (o && (json_add(o, "volume", json_object_new_string(volume)) < 0 ||
              json_add(o, "identity", json_object_new_string(identity)) < 0 ||
              json_add(o, "mode", json_object_new_string(mode_name(read_only))) < 0)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* The reply to a failed grant change r. */
static struct json_object *access_failure(const struct access_change *ch, int r)
{
    const char *op = ch->mode == PMSG_GRANT_REVOKE ? "revoke" : "grant";
    switch (r) {
    case -ESRCH:
        return admin_reply_error(ADMIN_E_NO_SUCH_GRANT, "volume \"%s\": no grant to \"%s\"",
                                 ch->volume, ch->identity);
    case -ENOSPC:
        return admin_reply_error(ADMIN_E_GRANT_LIMIT,
                                 "volume \"%s\": it has %d grants already (the most a volume may "
                                 "have); revoke one first",
                                 ch->volume, ACCESS_GRANTS_MAX);
    case -EDQUOT:
        return admin_reply_error(ADMIN_E_GRANT_LIMIT,
                                 "volume \"%s\": the cluster's grants are at their cap (%d "
                                 "grants, %d KiB of identities); revoke one first",
                                 ch->volume, ACCESS_GRANTS_TOTAL_MAX,
                                 ACCESS_IDENTITY_BYTES_MAX / 1024);
    case -EINVAL: /* the identity was checked before sending: only a name left */
        return admin_volume_failure(ch->volume, op, -EINVAL);
    default:
        return admin_volume_failure(ch->volume, op, r);
    }
}

/* The cluster applied the change here: answer the client. */
static void access_done(void *arg, int r)
{
    struct access_change *ch = arg;
    struct json_object *reply;
    bool ro = ch->mode == PMSG_GRANT_RO;
    if (r == 0 || (r == -EALREADY && ch->mode != PMSG_GRANT_REVOKE)) {
        if (r == 0)
            qb_log(LOG_INFO, "volume \"%s\": %s \"%s\"%s by \"%s\"", ch->volume,
                   ch->mode == PMSG_GRANT_REVOKE ? "grant revoked from" : "granted to",
                   ch->identity,
                   ch->mode == PMSG_GRANT_REVOKE ? ""
                   : ro                          ? ", read-only"
                                                 : ", read-write",
                   ch->by);
        struct json_object *o = grant_object(ch->volume, ch->identity, ro);
        if (o && ch->mode == PMSG_GRANT_REVOKE)
            json_object_object_del(o, "mode");
        if (o && json_add(o, "changed", json_object_new_boolean(r == 0)) < 0) {
            json_object_put(o);
            o = NULL;
        }
        reply = admin_reply_ok(o);
    } else {
        reply = access_failure(ch, r);
    }
    admin_call_reply(ch->call, reply);
    free(ch);
}

int admin_get_identity(struct json_object *req, const char *key, const char **identity,
                       struct json_object **err)
{
    struct json_object *v = admin_field(req, key, json_type_string, "a string", err);
    if (!v)
        return -1;
    *identity = json_object_get_string(v);
    /* A DN as GnuTLS writes a certificate's subject, which owners and
     * quotas are compared with: "dn:cn=alice, o=X" is "dn:CN=alice,O=X".
     * The request holds it from now on, so the reply and the log show
     * what is kept. */
    char canon[IDENTITY_MAX + 1];
    const char *why = "a NUL character";
    int r = strlen(*identity) != (size_t)json_object_get_string_len(v) ? -EINVAL : 0;
    if (r == 0 && strlen(*identity) >= sizeof canon)
        r = access_identity_check(*identity, &why); /* too long, whatever its spaces */
    if (r == 0) {
        identity_canonical(*identity, canon, sizeof canon);
        r = access_identity_check(canon, &why);
    }
    if (r < 0) {
        *err = admin_reply_error(ADMIN_E_BAD_IDENTITY,
                                 "identity \"%.80s%s\": %s (write a PSK user or a certificate's "
                                 "CN as NAME, or a certificate's subject as dn:RFC4514-DN)",
                                 *identity, strlen(*identity) > 80 ? "..." : "", why);
        return -1;
    }
    if (strcmp(canon, *identity) == 0)
        return 0;
    struct json_object *c = json_object_new_string(canon);
    if (!c || json_object_object_add(req, key, c) < 0) {
        json_object_put(c);
        *err = admin_reply_error(ADMIN_E_SYSTEM, "out of memory");
        return -1;
    }
    *identity = json_object_get_string(c);
    return 0;
}

static struct json_object *change(const struct context *ctx, struct json_object *req, uint8_t mode)
{
    struct json_object *err = NULL;
    const char *name, *identity;
    if (admin_get_name(req, &name, &err) < 0 ||
        admin_get_identity(req, "identity", &identity, &err) < 0)
        return err;
    struct access_change probe = {.mode = mode};
    snprintf(probe.volume, sizeof probe.volume, "%s", name);
    struct volume_info info;
    int r = strlen(name) > VOLUME_NAME_MAX ? -EINVAL : volumes_info(ctx->node->vols, name, &info);
    if (r < 0)
        return access_failure(&probe, r);
    struct access_change *ch = malloc(sizeof *ch);
    if (!ch)
        return NULL;
    *ch = probe;
    ch->call = ctx->call;
    snprintf(ch->identity, sizeof ch->identity, "%s", identity);
    snprintf(ch->by, sizeof ch->by, "%s", ctx->who->identity);
    r = policing_access_change(ctx->node->pc, name, identity, mode, access_done, ch);
    if (r < 0) {
        err = access_failure(ch, r);
        free(ch);
        return err;
    }
    *ctx->later = true;
    return NULL;
}

struct json_object *admin_access_grant(const struct context *ctx, struct json_object *req)
{
    struct json_object *v;
    bool ro = false;
    if (json_object_object_get_ex(req, "read_only", &v)) {
        if (!json_object_is_type(v, json_type_boolean))
            return admin_reply_error(ADMIN_E_BAD_REQUEST, "field \"read_only\" must be a boolean");
        ro = json_object_get_boolean(v);
    }
    return change(ctx, req, ro ? PMSG_GRANT_RO : PMSG_GRANT_RW);
}

struct json_object *admin_access_revoke(const struct context *ctx, struct json_object *req)
{
    return change(ctx, req, PMSG_GRANT_REVOKE);
}

/* {"grants": [{volume, identity, mode}...]}, of one volume or all. */
struct json_object *admin_access_list(const struct context *ctx, struct json_object *req)
{
    struct json_object *err = NULL;
    const char *name = NULL;
    if (json_object_object_get_ex(req, "name", NULL) && admin_get_name(req, &name, &err) < 0)
        return err;
    struct volume_info *vols;
    size_t nvols;
    int r = volumes_list(ctx->node->vols, &vols, &nvols);
    if (r < 0)
        return admin_volume_failure(name ? name : "*", "list grants", r);
    size_t at = nvols;
    for (size_t i = 0; name && i < nvols; i++)
        if (strcmp(vols[i].name, name) == 0)
            at = i;
    if (name && at == nvols) {
        free(vols);
        return admin_volume_failure(name, "list grants", -ENOENT);
    }
    struct policing_grant *g = NULL;
    size_t n = 0;
    struct json_object *a = json_object_new_array();
    for (size_t i = 0; a && i < nvols; i++) {
        if (name && i != at)
            continue;
        r = access_list(volumes_access(ctx->node->vols), vols[i].uuid, &g, &n);
        for (size_t j = 0; r == 0 && j < n; j++) {
            struct json_object *o = grant_object(vols[i].name, g[j].identity, g[j].read_only);
            r = o ? json_object_array_add(a, o) : -1;
            if (r != 0)
                json_object_put(o);
        }
        free(g);
        if (r != 0) {
            json_object_put(a);
            a = NULL;
        }
    }
    free(vols);
    struct json_object *o = json_object_new_object();
    if (o && json_add(o, "grants", a) < 0) {
        json_object_put(o);
        o = NULL;
    }
    return admin_reply_ok(o);
}
