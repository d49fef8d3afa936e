/* access.h - who may see which volume: the grants of the replicated volume
 * table (policing/protocol.h), and the one check the NBD catalog makes
 * (volume.c: listing and opening filter alike).
 *
 * A grant gives an identity a volume, read-write or read-only; it covers
 * the volume's snapshots VOL@SNAP, read-only. The identity in a grant is a
 * bare NAME, matching the PSK user NAME and any certificate whose subject
 * has a CN of NAME (and the plain clients' "anonymous"), or "dn:" and an
 * RFC 4514 DN, matching that one certificate subject exactly (but for the
 * case of attribute types). Grants are keyed by the volume's uuid, so a
 * volume deleted and made again under its name starts without any.
 *
 * Persistence: DATA_DIR/grants, one line per grant "UUID rw|ro IDENTITY",
 * replaced whole and atomically on each change (store_grants_set), before
 * the table version that counts the change.
 *
 * Threads: changes come from the main loop (the agreed stream); checks
 * from the NBD threads; a rwlock guards the table.
 */
#ifndef VSAN_VOLUME_ACCESS_H
#define VSAN_VOLUME_ACCESS_H

#include "common/identity.h"
#include "nbd-server/export.h"
#include "policing/protocol.h"

#include <stdbool.h>
#include <stddef.h>

/* Grants on one volume, and in the whole table: at most TOTAL_MAX
 * grants whose identities take at most IDENTITY_BYTES_MAX bytes together.
 * Both bound what each change rewrites and fsyncs on the main loop (the
 * grants file: under 512 KiB) and what `vsan access list` answers in one
 * admin reply of ADMIN_MSG_MAX (1 MiB): about 120 bytes of JSON per grant
 * and twice its identity's length at worst (escapes). */
#define ACCESS_GRANTS_MAX 256
#define ACCESS_GRANTS_TOTAL_MAX 4096
#define ACCESS_IDENTITY_BYTES_MAX (256 * 1024)
#define ACCESS_DN_PREFIX IDENTITY_DN_PREFIX

_Static_assert(PMSG_IDENTITY_MAX == IDENTITY_MAX && NBD_TLS_IDENTITY_MAX == IDENTITY_BODY_MAX,
               "a grant holds any identity the NBD server keeps, with its prefix");

enum access_mode { ACCESS_NONE = 0, ACCESS_READ = 1, ACCESS_WRITE = 2 };

/* Whether s is a grant's identity (common/identity.h's rules): 0; -EINVAL with why set (empty, a
 * control character, ':' or '=' in a bare NAME, "dn:" without a DN);
 * -ENAMETOOLONG (a NAME or DN above NBD_TLS_IDENTITY_MAX bytes). */
int access_identity_check(const char *s, const char **why);

/* Whether the grant's identity (checked) matches a client's: identity as
 * the NBD server has it (conn.h), "anonymous" for a client without one. */
bool access_matches(const char *grant, const char *identity, enum nbd_tls_auth auth);

/* Likewise for an identity as the admin commands have it (admin_caller,
 * vsan/admin.h; an owner, owners.h): "dn:DN" is the certificate subject
 * DN, anything else a PSK user or a token's identity. */
bool access_matches_caller(const char *grant, const char *caller);

struct store;
struct access;

/* Reads DATA_DIR/grants (none: no grants). -EINVAL for a malformed file
 * (logged with its line), -errno. */
int access_open(struct store *st, struct access **out);
void access_close(struct access *a);

/* What who may do with the volume uuid (who->all: everything). */
enum access_mode access_of(struct access *a, const char *uuid, const struct nbd_client *who);

/* identity's grant on uuid becomes mode (enum pmsg_grant_mode), persisted.
 * 0 (changed; *ended: an existing grant was revoked or changed mode, so
 * identity's connections go), -ESRCH, -EALREADY, -EINVAL, -ENOSPC (the
 * volume's cap), -EDQUOT (the table's, in grants or bytes), -errno from
 * the store. */
int access_set(struct access *a, const char *uuid, const char *identity, int mode, bool *ended);
/* Whether the table has room for one more grant to identity (on a new
 * volume, so the volume's cap does not count): 0 or -EDQUOT. */
int access_room(struct access *a, const char *identity);
/* Drops the grants of a deleted volume, persisted. */
int access_forget(struct access *a, const char *uuid);
/* Drops (logged, persisted) the grants of every volume exists(arg, uuid)
 * says is gone: a crash between a delete and access_forget left them. */
int access_forget_gone(struct access *a, bool (*exists)(void *arg, const char *uuid), void *arg);
/* The grants of uuid (NULL: every grant), malloc'd, by volume uuid and
 * then in the order given. */
int access_list(struct access *a, const char *uuid, struct policing_grant **out, size_t *n);
/* The group's grants replace this node's, persisted (a sync round).
 * *ended: called for each grant that went or changed mode. */
int access_load(struct access *a, const struct policing_grant *g, size_t n,
                void (*ended)(void *arg, const char *uuid, const char *identity), void *arg);

#endif
