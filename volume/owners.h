/* owners.h - who owns which volume, and how much each identity may own:
 * the owners and quotas of the replicated volume table (policing/protocol.h).
 *
 * A volume created through the API (admin_caller, vsan/admin.h) is owned
 * by its creator; an admin may name an owner (`vsan volume create --owner`).
 * An admin's volume has none. A quota bounds the sum of the sizes of the
 * volumes an identity owns, each counted once whatever its replica count.
 * A quota's identity matches owners as a grant's matches clients
 * (access.h): a bare NAME counts the volumes of NAME and of every
 * certificate subject whose CN is NAME; "dn:DN" those of that subject.
 * The checks run where the cluster applies a CREATE or a RESIZE, in
 * agreed order, from the table alone, so every node refuses alike.
 *
 * A quota also bounds how many volumes the identity owns. A client (not an
 * admin) may create a volume only within a quota: without one it may
 * create none (an admin sets one with `vsan quota set`).
 *
 * Persistence: DATA_DIR/owners ("UUID IDENTITY" lines) and DATA_DIR/quotas
 * ("LIMIT VOLUMES IDENTITY"), each replaced whole and atomically on a
 * change.
 * Every change is the group's, agreed: it is in force here even if its
 * file can't be written (logged; the file is rewritten at the next change
 * or sync round), so that this node's quota checks stay the group's.
 *
 * Threads: main loop only (the agreed stream and the admin commands).
 */
#ifndef VSAN_VOLUME_OWNERS_H
#define VSAN_VOLUME_OWNERS_H

#include "policing/protocol.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Quotas in the table: the sync round's stream carries them all. */
#define OWNERS_QUOTAS_MAX 4096
/* Owned volumes: each has its owner's grant, so the grants table
 * (ACCESS_GRANTS_TOTAL_MAX) would be full first; the owners file is read
 * back with this bound. */
#define OWNERS_MAX 4096
/* What a quota set without a count of volumes allows. */
#define OWNERS_VOLUMES_DEFAULT 64
/* The smallest volume a client (not an admin) may have: smaller ones
 * would let a quota's count, not its bytes, bound what it costs. */
#define OWNERS_CLIENT_SIZE_MIN ((uint64_t)1 << 20)

struct store;
struct owners;
struct volume_info;

/* Reads DATA_DIR/owners and DATA_DIR/quotas (none: empty). -EINVAL for a
 * malformed file (logged with its line), -errno. */
int owners_open(struct store *st, struct owners **out);
void owners_close(struct owners *o);

/* The owner of the volume uuid, or "" (none). The pointer stays valid
 * until the next change. */
const char *owners_of(const struct owners *o, const char *uuid);
/* Whether the table has OWNERS_MAX owners: a new owned volume is refused. */
bool owners_full(const struct owners *o);
/* uuid (a volume just created) is owned by identity from now on,
 * persisted. 0, -EINVAL (a bad identity), -EXFULL (owners_full),
 * -ENOMEM. */
int owners_set(struct owners *o, const char *uuid, const char *identity);
/* Drops a deleted volume's owner, persisted. */
int owners_forget(struct owners *o, const char *uuid);

/* identity's quota becomes limit bytes in at most volumes volumes (limit
 * 0: none), persisted. 0, -ESRCH (no quota to remove), -EALREADY, -EINVAL
 * (a bad identity, or a limit without volumes), -EDQUOT
 * (OWNERS_QUOTAS_MAX quotas already), -ENOMEM. */
int owners_quota_set(struct owners *o, const char *identity, uint64_t limit, uint32_t volumes);
/* The quotas, malloc'd, in the order set. */
int owners_quota_list(const struct owners *o, struct policing_quota **out, size_t *n);

/* Bytes that count against the quota of identity q: the sizes of the
 * volumes among vols (n) whose owner q matches; how many in *count (if
 * not NULL). */
uint64_t owners_used(const struct owners *o, const char *q, const struct volume_info *vols,
                     size_t n, size_t *count);
/* Whether owner may own size bytes more: a new volume (uuid NULL), which
 * also counts as one volume more, or the volume uuid at its new size (its
 * old one not counted). client: a client asks, which needs a quota. 0,
 * -EDQUOT with the first quota it would pass in *over (if not NULL), or
 * -ENODATA (client, and no quota matches owner). */
int owners_check(const struct owners *o, const char *owner, const char *uuid, uint64_t size,
                 bool client, const struct volume_info *vols, size_t n,
                 struct policing_quota *over);

/* Owners and quotas into id (its owners and quotas, malloc'd). */
int owners_list(const struct owners *o, struct policing_idents *id);
/* The group's owners and quotas replace this node's, persisted. */
int owners_load(struct owners *o, const struct policing_idents *id);

#endif
