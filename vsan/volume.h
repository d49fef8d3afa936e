/* volume.h - the volume layer: the node's table of volumes and the local I/O
 * path of each one.
 *
 * It owns the registry (name -> open volume), counts the NBD connections of
 * each volume (so a volume in use can't be deleted or shrunk), and
 * implements the NBD export interface (nbd-server/export.h) over the store
 * (vsan/store.h). The mirror engine will hook into the I/O path here.
 *
 * Locking: the registry has one rwlock: lookups (open, list, info) share
 * it, create/delete/resize hold it exclusively. The I/O path takes no
 * registry lock: a connection holds a reference to its volume.
 */
#ifndef VSAN_VOLUME_H
#define VSAN_VOLUME_H

#include "nbd-server/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct volumes;

#define VOLUME_NAME_MAX 64 /* [A-Za-z0-9._-], not starting with '.' or '-' */

struct volume_info {
    char name[VOLUME_NAME_MAX + 1];
    char uuid[37];
    uint64_t size;       /* bytes */
    uint64_t allocated;  /* bytes actually stored (sparse files) */
    uint64_t generation; /* bumped by every metadata change */
    unsigned connections;
};

/* Opens every volume of the store. -errno, with the reason logged. */
int volumes_open(struct store *store, struct volumes **out);
/* Only once no export is open, i.e. after nbd_server_shutdown(). */
void volumes_close(struct volumes *vols);

/* The catalog served over NBD; its ctx is the struct volumes. */
extern const struct nbd_catalog_ops volumes_catalog;

/* -EINVAL bad name or size (0, not a multiple of 512, above VOLUME_SIZE_MAX),
 * -EEXIST name taken, other -errno from the store. uuid: the cluster's
 * choice, or NULL for a fresh one. Fills *out if non-NULL. */
int volumes_create(struct volumes *vols, const char *name, uint64_t size, const char *uuid,
                   struct volume_info *out);
/* -ENOENT, -EBUSY (connections open, unless even_if_busy: then they see
 * -ESHUTDOWN from now on, as when the cluster deleted the volume). */
int volumes_delete(struct volumes *vols, const char *name, bool even_if_busy);
/* Grows, or shrinks when force is set. -ENOENT, -EINVAL (bad size),
 * -ERANGE (shrink without force), -EBUSY (shrink while connected). */
int volumes_resize(struct volumes *vols, const char *name, uint64_t size, bool force,
                   bool even_if_busy, struct volume_info *out);
/* -ENOENT. */
int volumes_info(struct volumes *vols, const char *name, struct volume_info *out);
size_t volumes_count(struct volumes *vols);
/* A malloc'd array sorted by name, in *out (free it); *n entries. */
int volumes_list(struct volumes *vols, struct volume_info **out, size_t *n);

struct policing;
/* Puts every write of every volume under region write priority. Called
 * before the NBD server starts. */
void volumes_set_policing(struct volumes *vols, struct policing *pc);

#define VOLUME_SIZE_MAX (UINT64_C(1) << 50) /* 1 PiB: keeps offsets far from overflow */

#endif
