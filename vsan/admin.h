/* admin.h - vsand's admin server: the commands behind the `vsan` CLI.
 *
 * Two layers. admin_execute() (admin_cmds.c) turns one JSON request into
 * one JSON reply by calling the volume layer; it knows nothing of IPC, so
 * it is tested directly. admin_start() (admin.c) serves it as a libqb IPC
 * service inside the daemon's qb_loop; the wire format is in admin_proto.h.
 *
 * Everything here runs on the daemon's main thread, in the loop, but for
 * tokens_identity (volume/tokens.h), which any thread may call.
 */
#ifndef VSAN_ADMIN_H
#define VSAN_ADMIN_H

#include <json-c/json.h>
#include <qb/qbloop.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct nbd_server;
struct policing;
struct tokens;
struct volumes;
struct vsan_config;

/* What the commands act on and report; owned by the daemon, which keeps it
 * valid until admin_stop(). */
struct admin_node {
    const struct vsan_config *cfg;
    struct volumes *vols;
    struct nbd_server *nbd;
    struct policing *pc;   /* the replicated volume table and the cluster */
    struct mirror *mirror; /* NULL when standalone */
    qb_loop_t *loop;       /* where answers computed on other threads go */
    /* The API's bearer tokens: tokens_identity() (volume/tokens.h) tells
     * who a token stands for, from any thread. */
    struct tokens *tokens;
    uint64_t started; /* admin_clock() at startup, for the uptime */
};

/* Where placement puts a new replica of info: the member without a copy
 * with the most room, within [cluster] overcommit. 0, -ENOSPC (none has
 * room), -ENOENT, -EEXIST (every member holds a copy), -EINVAL (no member
 * without a copy announced its capacity), -ENOMEM. For the automatic
 * rebuild (vsan/rebuild.c). */
struct volume_info;
int admin_pool_place_replica(const struct admin_node *node, const struct volume_info *info,
                             uint32_t *out);

/* Seconds on a clock that never jumps (CLOCK_MONOTONIC). */
uint64_t admin_clock(void);

/* One client request whose reply may come later: volume table changes
 * are answered once the cluster has agreed on them. The IPC server makes
 * one per message; tests make their own. */
struct admin_call {
    /* Sends reply (and puts it) to the client that made the call, which
     * ends. Main loop only. */
    void (*answer)(struct admin_call *call, struct json_object *reply);
};

static inline void admin_call_reply(struct admin_call *call, struct json_object *reply)
{
    call->answer(call, reply);
}

/* Who asks. identity: a grant's identity (volume/access.h): a PSK user
 * or a token's identity as NAME, a certificate subject as "dn:" and its
 * RFC 4514 DN. An admin may do everything; anyone else (a client) may
 * list and describe the volumes it has a grant on or owns (others answer
 * as missing ones), create volumes (which it owns, within its quota), and
 * resize or delete the volumes it owns (others it can see: forbidden);
 * every other command is forbidden to it. */
struct admin_caller {
    const char *identity;
    bool admin;
};

/* Parses request (len bytes, not NUL-terminated), runs it for who (NULL:
 * the local admin socket, i.e. "root", an admin) and returns the reply
 * {"ok": true, ...} or {"ok": false, "error": ..., "message": ...};
 * NULL only when out of memory, or when it set *later: then the command
 * answers through admin_call_reply(call, ...). The caller puts the reply.
 * Every change is logged once, with who made it. */
struct json_object *admin_execute(const struct admin_node *node, const struct admin_caller *who,
                                  const char *request, size_t len, struct admin_call *call,
                                  bool *later);

/* An error reply; NULL only when out of memory. */
struct json_object *admin_reply_error(const char *code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

struct admin;

/* Publishes the IPC service named after node->cfg->admin_socket in loop.
 * Returns 0, or -errno with the reason logged (-EADDRINUSE: another daemon
 * serves that name). */
int admin_start(qb_loop_t *loop, const struct admin_node *node, struct admin **out);

/* Disconnects every client and withdraws the service. */
void admin_stop(struct admin *adm);

#endif
