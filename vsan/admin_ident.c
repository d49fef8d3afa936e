/* admin_ident.c - who may do what (admin_caller, admin.h), and the
 * commands of the identity tables: quota.set, quota.list (volume/owners.h),
 * token.create, token.list, token.revoke (volume/tokens.h). Changes go
 * through the cluster and are answered once applied here; lists read this
 * node's copy. Every change is logged once, with who made it, never with
 * a token's secret. */
#include "vsan/admin_int.h"

#include "common/admin_proto.h"
#include "common/json_add.h"
#include "nbd-server/export.h"
#include "policing/protocol.h"
#include "common/identity.h"
#include "volume/access.h"
#include "volume/owners.h"
#include "volume/tokens.h"
#include "volume/volume.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>
#include <qb/qblog.h>

/* ---- who may do what ------------------------------------------------------- */

struct json_object *admin_forbidden(const struct context *ctx, const char *cmd)
{
    return admin_reply_error(ADMIN_E_FORBIDDEN, "\"%s\" may not run %s: it is not an admin",
                             ctx->who->identity, cmd);
}

/* Whether the caller owns the volume uuid: the owner as recorded, of its
 * kind (a bare NAME is a PSK user's or a token's, never a certificate
 * whose CN is NAME). */
static bool owns(const struct context *ctx, const char *uuid)
{
    const char *owner = owners_of(volumes_owners(ctx->node->vols), uuid);
    return owner[0] && identity_same(owner, ctx->who->identity);
}

/* The owner always sees its volume, whatever became of its grant: it is
 * charged for it, and may change or delete it. */
bool admin_may_see(const struct context *ctx, const char *uuid)
{
    if (ctx->who->admin || owns(ctx, uuid))
        return true;
    const char *id = ctx->who->identity;
    size_t pl = strlen(ACCESS_DN_PREFIX);
    bool dn = strncmp(id, ACCESS_DN_PREFIX, pl) == 0;
    struct nbd_client client = {
        .identity = dn ? id + pl : id,
        .auth = dn ? NBD_TLS_AUTH_X509 : NBD_TLS_AUTH_PSK,
    };
    return access_of(volumes_access(ctx->node->vols), uuid, &client) != ACCESS_NONE;
}

bool admin_may_change(const struct context *ctx, const char *uuid)
{
    return ctx->who->admin || owns(ctx, uuid);
}

/* ---- changes on their way through the cluster ------------------------------ */

struct ident_change {
    struct admin_call *call;
    char by[PMSG_IDENTITY_MAX + 1]; /* who asked */
    struct policing_token token;    /* token.*: the record; quota.set: identity */
    uint64_t limit;                 /* quota.set */
    uint32_t volumes;               /* quota.set */
    bool revoke;                    /* token.revoke */
    char text[TOKEN_TEXT_LEN + 1];  /* token.create: the token, shown once */
};

static struct ident_change *ident_change_new(const struct context *ctx)
{
    struct ident_change *ch = calloc(1, sizeof *ch);
    if (ch) {
        ch->call = ctx->call;
        snprintf(ch->by, sizeof ch->by, "%s", ctx->who->identity);
    }
    return ch;
}

static void ident_change_free(struct ident_change *ch)
{
    gnutls_memset(ch->text, 0, sizeof ch->text);
    free(ch);
}

/* The reply to a failed change r of what (a quota's or a token's). */
static struct json_object *ident_failure(const char *what, int r)
{
    switch (r) {
    case -ENOLINK:
        return admin_reply_error(ADMIN_E_NO_QUORUM, "%s: this node has no quorum", what);
    case -ESRCH:
        return admin_reply_error(ADMIN_E_NO_SUCH_TOKEN, "%s: no such token", what);
    case -EDQUOT:
        return admin_reply_error(ADMIN_E_LIMIT,
                                 "%s: the cluster has %d quotas or %d tokens already (the most it "
                                 "may have); remove one first",
                                 what, OWNERS_QUOTAS_MAX, TOKENS_MAX);
    case -ECONNRESET:
        return admin_reply_error(ADMIN_E_SYSTEM,
                                 "%s: the cluster's membership changed while it was applied; "
                                 "list again for the outcome",
                                 what);
    default:
        qb_log(LOG_ERR, "admin: %s: %s", what, strerror(-r));
        return admin_reply_error(ADMIN_E_SYSTEM, "%s: %s", what, strerror(-r));
    }
}

static struct json_object *ident_submitted(const struct context *ctx, struct ident_change *ch,
                                           const char *what, int r)
{
    if (r < 0) {
        ident_change_free(ch);
        return ident_failure(what, r);
    }
    *ctx->later = true;
    return NULL;
}

/* ---- quotas ----------------------------------------------------------------- */

static void quota_done(void *arg, int r)
{
    struct ident_change *ch = arg;
    const char *identity = ch->token.identity;
    struct json_object *reply;
    /* Removing no quota leaves what was asked for: no quota. */
    if (r == 0 || r == -EALREADY || (r == -ESRCH && ch->limit == 0)) {
        if (r == 0 && ch->limit)
            qb_log(LOG_INFO,
                   "quota of \"%s\" set to %" PRIu64 " bytes in %" PRIu32 " volumes by \"%s\"",
                   identity, ch->limit, ch->volumes, ch->by);
        else if (r == 0)
            qb_log(LOG_INFO, "quota of \"%s\" removed by \"%s\"", identity, ch->by);
        struct json_object *o = json_object_new_object();
        if (o && (json_add(o, "identity", json_object_new_string(identity)) < 0 ||
                  admin_add_u64(o, "limit", ch->limit) < 0 ||
                  admin_add_u64(o, "volumes", ch->volumes) < 0 ||
                  json_add(o, "changed", json_object_new_boolean(r == 0)) < 0)) {
            json_object_put(o);
            o = NULL;
        }
        reply = admin_reply_ok(o);
    } else {
        char what[PMSG_IDENTITY_MAX + 32];
        snprintf(what, sizeof what, "quota of \"%s\"", identity);
        reply = ident_failure(what, r);
    }
    admin_call_reply(ch->call, reply);
    ident_change_free(ch);
}

/* The optional "volumes" of a quota of limit bytes: how many volumes at
 * most (OWNERS_VOLUMES_DEFAULT if not given; 0 with no quota). 0, or -1
 * with *err set. */
static int get_volumes(struct json_object *req, uint64_t limit, uint32_t *volumes,
                       struct json_object **err)
{
    *volumes = limit ? OWNERS_VOLUMES_DEFAULT : 0;
    if (!json_object_object_get_ex(req, "volumes", NULL))
        return 0;
    struct json_object *v =
        admin_field(req, "volumes", json_type_int, "an integer (a count of volumes)", err);
    if (!v)
        return -1;
    int64_t n = json_object_get_int64(v);
    if (limit && (n < 1 || n > OWNERS_MAX)) {
        *err = admin_reply_error(ADMIN_E_BAD_REQUEST, "volumes %" PRId64 ": must be 1 to %d", n,
                                 OWNERS_MAX);
        return -1;
    }
    if (!limit) {
        *err = admin_reply_error(ADMIN_E_BAD_REQUEST, "volumes: there is no quota to count them");
        return -1;
    }
    *volumes = (uint32_t)n;
    return 0;
}

/* {"identity", "size", "volumes"?}: identity's quota becomes size bytes
 * in at most volumes volumes; size 0: none. */
struct json_object *admin_quota_set(const struct context *ctx, struct json_object *req)
{
    struct json_object *err = NULL;
    const char *identity;
    uint64_t limit;
    uint32_t volumes;
    if (admin_get_identity(req, "identity", &identity, &err) < 0 ||
        admin_get_size(req, &limit, &err) < 0 || get_volumes(req, limit, &volumes, &err) < 0)
        return err;
    struct ident_change *ch = ident_change_new(ctx);
    if (!ch)
        return NULL;
    snprintf(ch->token.identity, sizeof ch->token.identity, "%s", identity);
    ch->limit = limit;
    ch->volumes = volumes;
    return ident_submitted(
        ctx, ch, "quota",
        policing_quota_set(ctx->node->pc, identity, limit, volumes, quota_done, ch));
}

/* {"quotas": [{identity, limit, volumes, used, used_volumes}...]}: used
 * counts the volumes the quota's identity owns here, each once. */
struct json_object *admin_quota_list(const struct context *ctx, struct json_object *req)
{
    (void)req;
    struct owners *ow = volumes_owners(ctx->node->vols);
    struct policing_quota *q = NULL;
    struct volume_info *vols = NULL;
    size_t nq = 0, nvols = 0;
    int r = owners_quota_list(ow, &q, &nq);
    if (r == 0)
        r = volumes_list(ctx->node->vols, &vols, &nvols);
    struct json_object *a = r == 0 ? json_object_new_array() : NULL;
    for (size_t i = 0; a && i < nq; i++) {
        size_t count;
        uint64_t used = owners_used(ow, q[i].identity, vols, nvols, &count);
        struct json_object *o = json_object_new_object();
        if (!o || json_add(o, "identity", json_object_new_string(q[i].identity)) < 0 ||
            admin_add_u64(o, "limit", q[i].limit) < 0 ||
            admin_add_u64(o, "volumes", q[i].volumes) < 0 || admin_add_u64(o, "used", used) < 0 ||
            admin_add_u64(o, "used_volumes", count) < 0 || json_object_array_add(a, o) < 0) {
            json_object_put(o);
            json_object_put(a);
            a = NULL;
        }
    }
    free(q);
    free(vols);
    if (r < 0)
        return admin_reply_error(ADMIN_E_SYSTEM, "list quotas: %s", strerror(-r));
    struct json_object *o = json_object_new_object();
    if (o && json_add(o, "quotas", a) < 0) {
        json_object_put(o);
        o = NULL;
    }
    return admin_reply_ok(o);
}

/* ---- tokens ----------------------------------------------------------------- */

static struct json_object *token_object(const struct policing_token *t)
{
    struct json_object *o = json_object_new_object();
    if (o && (json_add(o, "id", json_object_new_string(t->id)) < 0 ||
              json_add(o, "identity", json_object_new_string(t->identity)) < 0 ||
              json_add(o, "created", json_object_new_int64(t->created)) < 0)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

static void token_done(void *arg, int r)
{
    struct ident_change *ch = arg;
    struct json_object *reply;
    if (r == 0) {
        qb_log(LOG_INFO, "token %s of \"%s\" %s by \"%s\"", ch->token.id, ch->token.identity,
               ch->revoke ? "revoked" : "made", ch->by);
        struct json_object *o = token_object(&ch->token);
        if (ch->revoke && o)
            json_object_object_del(o, "created");
        if (o && !ch->revoke && json_add(o, "token", json_object_new_string(ch->text)) < 0) {
            json_object_put(o);
            o = NULL;
        }
        reply = admin_reply_ok(o);
    } else {
        char what[64];
        snprintf(what, sizeof what, "token %s", ch->token.id);
        reply = ident_failure(what, r);
    }
    admin_call_reply(ch->call, reply);
    ident_change_free(ch);
}

/* {"identity"}: a new token standing for identity; the reply carries it,
 * the only time it is shown. */
struct json_object *admin_token_create(const struct context *ctx, struct json_object *req)
{
    struct json_object *err = NULL;
    const char *identity;
    if (admin_get_identity(req, "identity", &identity, &err) < 0)
        return err;
    struct ident_change *ch = ident_change_new(ctx);
    if (!ch)
        return NULL;
    int r = tokens_make(identity, &ch->token, ch->text);
    if (r == 0)
        r = policing_token_change(ctx->node->pc, &ch->token, false, token_done, ch);
    return ident_submitted(ctx, ch, "token", r);
}

/* {"tokens": [{id, identity, created}...]}: never a secret or a hash. */
struct json_object *admin_token_list(const struct context *ctx, struct json_object *req)
{
    (void)req;
    struct policing_token *t;
    size_t n;
    int r = tokens_list(volumes_tokens(ctx->node->vols), &t, &n);
    if (r < 0)
        return admin_reply_error(ADMIN_E_SYSTEM, "list tokens: %s", strerror(-r));
    struct json_object *a = json_object_new_array();
    for (size_t i = 0; a && i < n; i++) {
        struct json_object *o = token_object(&t[i]);
        if (!o || json_object_array_add(a, o) < 0) {
            json_object_put(o);
            json_object_put(a);
            a = NULL;
        }
    }
    free(t);
    struct json_object *o = json_object_new_object();
    if (o && json_add(o, "tokens", a) < 0) {
        json_object_put(o);
        o = NULL;
    }
    return admin_reply_ok(o);
}

/* {"id"}: the token goes on every node. */
struct json_object *admin_token_revoke(const struct context *ctx, struct json_object *req)
{
    struct json_object *err = NULL;
    struct json_object *v = admin_field(req, "id", json_type_string, "a string", &err);
    if (!v)
        return err;
    const char *id = json_object_get_string(v);
    struct policing_token *t;
    size_t n;
    int r = tokens_list(volumes_tokens(ctx->node->vols), &t, &n);
    if (r < 0)
        return ident_failure("token", r);
    size_t at = n;
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].id, id) == 0)
            at = i;
    struct ident_change *ch = at < n ? ident_change_new(ctx) : NULL;
    if (ch) {
        ch->token = t[at];
        ch->revoke = true;
    }
    free(t);
    if (at == n)
        return admin_reply_error(ADMIN_E_NO_SUCH_TOKEN, "token \"%.40s\": no such token", id);
    if (!ch)
        return NULL;
    return ident_submitted(ctx, ch, "token",
                           policing_token_change(ctx->node->pc, &ch->token, true, token_done, ch));
}
