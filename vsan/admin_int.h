/* admin_int.h - what the admin command files share (admin_cmds.c: the
 * request checks and the volume commands; admin_snap.c: snapshots;
 * admin_access.c: grants; admin_ident.c: quotas, tokens, and who may do
 * what). */
#ifndef VSAN_ADMIN_INT_H
#define VSAN_ADMIN_INT_H

#include "vsan/admin.h"

#include <json-c/json.h>

struct volume_info;
#include <stdbool.h>
#include <stdint.h>

/* A command returns its reply, or NULL with *later set when it will
 * answer through admin_call_reply(call, ...). */
struct context {
    const struct admin_node *node;
    const struct admin_caller *who; /* never NULL: root for the admin socket */
    struct admin_call *call;
    bool *later;
};

typedef struct json_object *(*command_fn)(const struct context *ctx, struct json_object *req);

struct command {
    const char *name;
    const char *const *fields; /* accepted besides "cmd", NULL-terminated */
    command_fn run;
    bool clients; /* clients may run it (admin_caller), not only admins */
};

/* Marks r, which the caller built, as a success reply. */
struct json_object *admin_reply_ok(struct json_object *r);
int admin_add_u64(struct json_object *obj, const char *key, uint64_t v);
/* The reply to a failed volume call r on volume name during op. */
struct json_object *admin_volume_failure(const char *name, const char *op, int r);
/* req's field key of type (what: its description for the error), or
 * NULL with *err set. */
struct json_object *admin_field(struct json_object *req, const char *key, json_type type,
                                const char *what, struct json_object **err);
/* req's "size" (bytes, not negative): 0, or -1 with *err set. */
int admin_get_size(struct json_object *req, uint64_t *size, struct json_object **err);
/* req's "name": 0, or -1 with *err set. */
int admin_get_name(struct json_object *req, const char **name, struct json_object **err);

/* admin_snap.c */
struct json_object *admin_snapshot_create(const struct context *ctx, struct json_object *req);
struct json_object *admin_snapshot_list(const struct context *ctx, struct json_object *req);
struct json_object *admin_snapshot_delete(const struct context *ctx, struct json_object *req);
struct json_object *admin_snapshot_rollback(const struct context *ctx, struct json_object *req);
struct json_object *admin_snapshot_rollback_status(const struct context *ctx,
                                                   struct json_object *req);

/* admin_ident.c */
struct json_object *admin_quota_set(const struct context *ctx, struct json_object *req);
struct json_object *admin_quota_list(const struct context *ctx, struct json_object *req);
struct json_object *admin_token_create(const struct context *ctx, struct json_object *req);
struct json_object *admin_token_list(const struct context *ctx, struct json_object *req);
struct json_object *admin_token_revoke(const struct context *ctx, struct json_object *req);
/* The forbidden reply to a client running cmd. */
struct json_object *admin_forbidden(const struct context *ctx, const char *cmd);
/* Whether the caller may see the volume uuid: an admin, or a client with
 * a grant on it. */
bool admin_may_see(const struct context *ctx, const char *uuid);
/* Whether the caller may resize or delete the volume uuid: an admin, or
 * its owner. */
bool admin_may_change(const struct context *ctx, const char *uuid);
/* req's field key, an identity checked as a grant's: 0, or -1 with *err. */
int admin_get_identity(struct json_object *req, const char *key, const char **identity,
                       struct json_object **err);

/* admin_pool.c */
/* Where volume vol (size bytes) of a create request goes: req's
 * "replicas" and "nodes" (or [cluster] replicas), into placed (sorted);
 * *nplaced 0: every node holds a copy. 0, or -1 with *err set. */
int admin_place(const struct context *ctx, struct json_object *req, const char *vol, uint64_t size,
                uint32_t *placed, size_t *nplaced, struct json_object **err);
struct json_object *admin_pool_status(const struct context *ctx, struct json_object *req);
/* replica.add and replica.remove: the node the request names in "node"
 * (an id or a member's name; a removal also takes the id of a node that
 * is no member), or for an add without one, where placement puts a new
 * replica of info (among the members without one, with room under
 * [cluster] overcommit). 0, or -1 with *err. */
int admin_replica_node(const struct context *ctx, struct json_object *req,
                       const struct volume_info *info, bool add, uint32_t *node,
                       struct json_object **err);
/* admin_access.c */
struct json_object *admin_access_grant(const struct context *ctx, struct json_object *req);
struct json_object *admin_access_revoke(const struct context *ctx, struct json_object *req);
struct json_object *admin_access_list(const struct context *ctx, struct json_object *req);

#endif
