/* admin_proto.h - the admin protocol between vsand and the `vsan` CLI.
 *
 * Transport: a libqb IPC service of type QB_IPC_SOCKET. Its name comes from
 * [admin] socket; on Linux libqb binds an abstract unix socket named after
 * it (no file, one namespace per network namespace). While a client is
 * connected libqb also keeps a 24-byte control file in
 * /dev/shm/qb-SERVERPID-CLIENTPID-FD-XXXXXX/: it is removed when the
 * connection closes, and only a daemon killed with SIGKILL during a CLI
 * command leaves one behind (safe to delete). The shared-memory type would
 * leave six files per connection, ring buffers included, in the same case.
 *
 * Messages: a qb_ipc_request_header with id ADMIN_MSG_JSON followed by one
 * JSON object {"cmd": "...", ...}; the reply is a qb_ipc_response_header
 * with the same id followed by {"ok": true, ...data} or
 * {"ok": false, "error": CODE, "message": "..."} with a CODE from the list
 * below. Both sides include this header, so it is the protocol's contract.
 */
#ifndef VSAN_ADMIN_PROTO_H
#define VSAN_ADMIN_PROTO_H

#include <errno.h>
#include <stddef.h>
#include <string.h>

#define VSAN_VERSION "0.1.0"

#define ADMIN_SOCKET_DEFAULT "/run/vsan/vsand.sock"
#define ADMIN_SOCKET_ENV "VSAN_SOCKET"

#define ADMIN_MSG_JSON 1
/* IPC buffer size, each way. A reply lists every volume, so it is large;
 * requests are small and capped far lower so garbage is cheap to refuse. */
#define ADMIN_MSG_MAX (1024 * 1024)
#define ADMIN_REQUEST_MAX (64 * 1024)

/* Error codes of failed replies. */
#define ADMIN_E_BAD_REQUEST "bad_request"         /* not JSON, wrong fields */
#define ADMIN_E_UNKNOWN_COMMAND "unknown_command" /* "cmd" names nothing */
#define ADMIN_E_TOO_LARGE "request_too_large"     /* above ADMIN_REQUEST_MAX */
#define ADMIN_E_BAD_NAME "bad_name"               /* volume name not allowed */
#define ADMIN_E_BAD_SIZE "bad_size"               /* zero, unaligned, too big, shrink */
#define ADMIN_E_NO_SUCH_VOLUME "no_such_volume"
#define ADMIN_E_VOLUME_EXISTS "volume_exists"
#define ADMIN_E_VOLUME_IN_USE "volume_in_use"
#define ADMIN_E_NO_QUORUM "no_quorum" /* the cluster can't change now */
#define ADMIN_E_SYSTEM "system_error" /* the store failed: I/O, space ... */
#define ADMIN_E_SNAPSHOT_EXISTS "snapshot_exists"
#define ADMIN_E_NO_SUCH_SNAPSHOT "no_such_snapshot"
#define ADMIN_E_SNAPSHOT_BUSY "snapshot_busy"       /* a client reads it: no delete */
#define ADMIN_E_SNAPSHOT_LIMIT "snapshot_limit"     /* SNAP_MAX on a volume already */
#define ADMIN_E_TOO_MANY_VOLUMES "too_many_volumes" /* over PMSG_CUT_VOLUMES in a cut */
#define ADMIN_E_BUSY "busy"                         /* a volume is in another cut */
#define ADMIN_E_ABORTED "aborted"           /* the cut aborted: a node did not drain, or left */
#define ADMIN_E_BAD_IDENTITY "bad_identity" /* not a grant's identity (volume/access.h) */
#define ADMIN_E_NO_SUCH_GRANT "no_such_grant"
#define ADMIN_E_GRANT_LIMIT "grant_limit" /* ACCESS_GRANTS_MAX on the volume already */
#define ADMIN_E_FORBIDDEN "forbidden"     /* the caller may not (admin_caller, vsan/admin.h) */
#define ADMIN_E_QUOTA_EXCEEDED "quota_exceeded" /* the owner would pass its quota */
#define ADMIN_E_NO_SUCH_TOKEN "no_such_token"
#define ADMIN_E_BAD_REPLICAS "bad_replicas" /* a replica count or node list not allowed */
#define ADMIN_E_NO_SUCH_NODE "no_such_node" /* a node named is not a member */
#define ADMIN_E_NO_SPACE "no_space"         /* placement: too few nodes have room */
#define ADMIN_E_LIMIT "table_full"          /* OWNERS_QUOTAS_MAX quotas, or TOKENS_MAX tokens */
#define ADMIN_E_REPLICA_REFUSED "replica_refused" /* replica add/remove against the set's rules */

/* libqb puts the service name into file names under /dev/shm and into
 * abstract socket names of at most 107 bytes, with about 50 bytes of its
 * own around it; longer names would be truncated silently. */
#define ADMIN_NAME_MAX 48

/* Maps an [admin] socket value to the libqb service name: libqb uses the
 * name as a file name, so a '/' would name a missing directory. Skips a
 * leading '/' and turns the others into '_', so the default
 * "/run/vsan/vsand.sock" becomes "run_vsan_vsand.sock". Allowed
 * characters: [A-Za-z0-9._/-]. Returns 0, -EINVAL (empty or a bad
 * character) or -ENAMETOOLONG (more than ADMIN_NAME_MAX). */
static inline int admin_service_name(const char *socket, char *buf, size_t len)
{
    static const char allowed[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "0123456789._/-";
    const char *s = socket[0] == '/' ? socket + 1 : socket;
    size_t n = strlen(s);

    if (n == 0 || strspn(s, allowed) != n)
        return -EINVAL;
    if (n > ADMIN_NAME_MAX || n >= len)
        return -ENAMETOOLONG;
    for (size_t i = 0; i <= n; i++)
        buf[i] = s[i] == '/' ? '_' : s[i];
    return 0;
}

#endif
