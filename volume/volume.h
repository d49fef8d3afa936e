/* volume.h - the volume layer: the node's table of volumes and the local I/O
 * path of each one.
 *
 * It owns the registry (name -> open volume) and struct volume, counts the
 * NBD connections of each volume (so a volume in use here can't be deleted
 * or shrunk from here), and implements the NBD export interface
 * (nbd-server/export.h) over the layers below: each volume's copy is a
 * store/svol.h; in cluster mode its I/O goes through the mirror engine
 * (mirror/engine.h), which writes that copy itself. Nothing below calls
 * up to this layer.
 *
 * Locking: the registry has one rwlock: lookups (open, list, info) share
 * it, create/delete/resize hold it exclusively. The I/O path takes no
 * registry lock: a connection holds a reference to its volume.
 */
#ifndef VSAN_VOLUME_H
#define VSAN_VOLUME_H

#include "nbd-server/export.h"
#include "policing/messages.h"
#include "policing/protocol.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct volumes;

#define VOLUME_NAME_MAX 64 /* [A-Za-z0-9._-], not starting with '.' or '-' */

/* Copies being filled that a volume's description names at most. */
#define VOLUME_RECOVERY_MAX 8

struct volume_info {
    char name[VOLUME_NAME_MAX + 1];
    char uuid[37];
    uint64_t size;       /* bytes */
    uint64_t allocated;  /* bytes actually stored (sparse files) */
    uint64_t generation; /* bumped by every metadata change */
    unsigned connections;
    uint32_t nreplicas; /* the agreed replica set (mirror/replicas.h) */
    struct store_replica replicas[STORE_REPLICAS_MAX];
    /* The copies being filled, as their nodes last announced them
     * (policing_progress_of): the recovery status. */
    unsigned nrecovery;
    struct policing_progress recovery[VOLUME_RECOVERY_MAX];
};

/* Opens every volume of the store. -errno, with the reason logged. */
int volumes_open(struct store *store, struct volumes **out);
/* Only once no export is open, i.e. after nbd_server_shutdown(). */
void volumes_close(struct volumes *vols);

/* The grants (volume/access.h) of the volumes. */
struct access *volumes_access(struct volumes *vols);
/* Their owners and quotas (volume/owners.h), and the API's tokens
 * (volume/tokens.h). */
struct owners *volumes_owners(struct volumes *vols);
struct tokens *volumes_tokens(struct volumes *vols);

/* The catalog served over NBD; its ctx is the struct volumes. It shows a
 * client only the volumes it may see (access.h), and opens a volume it
 * may only read (or any VOL@SNAP) read-only. */
extern const struct nbd_catalog_ops volumes_catalog;

/* -EINVAL bad name or size (0, not a multiple of 512, above VOLUME_SIZE_MAX),
 * -EEXIST name taken, other -errno from the store. uuid: the cluster's
 * choice, or NULL for a fresh one. Fills *out if non-NULL. */
int volumes_create(struct volumes *vols, const char *name, uint64_t size, const char *uuid,
                   struct volume_info *out);
/* -ENOENT, -EBUSY (connections open, unless even_if_busy: then they see
 * -ESHUTDOWN from now on, as when the cluster deleted the volume). Its
 * grants and owner go with it. */
int volumes_delete(struct volumes *vols, const char *name, bool even_if_busy);
/* Grows, or shrinks when force is set. -ENOENT, -EINVAL (bad size),
 * -ERANGE (shrink without force), -EBUSY (shrink while connected),
 * -ENOTEMPTY (shrink while the volume has snapshots). */
int volumes_resize(struct volumes *vols, const char *name, uint64_t size, bool force,
                   bool even_if_busy, struct volume_info *out);
/* The named volume's generation bumped (svol_bump_generation), its I/O
 * not held: -ENOENT, or the store's -errno. */
int volumes_bump_generation(struct volumes *vols, const char *name);
/* -ENOENT. */
int volumes_info(struct volumes *vols, const char *name, struct volume_info *out);
size_t volumes_count(struct volumes *vols);
/* A malloc'd array sorted by name, in *out (free it); *n entries. */
int volumes_list(struct volumes *vols, struct volume_info **out, size_t *n);
/* The same volumes' records only, without what their files say (no system
 * call per volume): what the replicated table needs, which lists them at
 * every agreed change. */
int volumes_list_records(struct volumes *vols, struct store_volume **out, size_t *n);

/* Like volumes_create, with the volume's first replicas (all current):
 * the group's members when the cluster created it, or (fixed) the nodes
 * placement chose; on a node not among those, the volume is diskless
 * (store.h's STORE_LOCAL_DISKLESS). */
int volumes_create_replicated(struct volumes *vols, const char *name, uint64_t size,
                              const char *uuid, const uint32_t *nodes, size_t n, bool fixed,
                              struct volume_info *out);

struct mirror;
struct mvol;
struct pol_key;
/* Replicates every volume's I/O through the mirror engine (set once, when
 * it starts; never: standalone): each volume is attached to it. -errno if
 * one can't be (a bitmap unreadable, an id taken), logged. */
int volumes_set_mirror(struct volumes *vols, struct mirror *m);
/* A fresh uuid whose id in the region table no volume here has. */
int volumes_new_uuid(struct volumes *vols, char out[STORE_UUID_LEN + 1]);
/* The agreed table's replica changes, asked for by node from (main loop;
 * see mirror/engine.h): 1 if a set changed, 0 if not, -errno. */
int volumes_replica(struct volumes *vols, uint32_t from, uint32_t vid, uint32_t node, uint8_t state,
                    uint64_t first, uint64_t last);
int volumes_node_left(struct volumes *vols, uint32_t node, const struct pol_key *lost, size_t nlost,
                      const uint32_t *members, size_t nmembers);
/* Runs fn (a mirror_* admin call, mirror/engine.h) on the named volume's
 * replication state while holding it: -ENOENT, or -ENODEV when the node
 * is standalone. */
int volumes_mirrored(struct volumes *vols, const char *name, int (*fn)(struct mvol *mv, void *arg),
                     void *arg);
/* Replaces a volume's replica set with the group's (a sync round), and
 * whether it is placed (mirror_replicas_load). */
int volumes_set_replicas(struct volumes *vols, const char *name, bool fixed,
                         const struct store_replica *r, uint32_t n);

struct policing;
/* Puts every write of every volume under region write priority. Called
 * before the NBD server starts. */
void volumes_set_policing(struct volumes *vols, struct policing *pc);

/* ---- cuts and snapshots (snapshots.c) ------------------------------------ */

struct policing_snap;
struct snap_info;
/* The agreed table's cut ops (policing/protocol.h, policing/cut.h), on
 * the main loop. */
struct cut;
int volumes_cut_check(struct volumes *vols, struct cut *c, const char (*names)[PMSG_NAME_MAX + 1]);
void volumes_cut_hold(struct volumes *vols, const struct cut *c);
int volumes_cut_drained(struct volumes *vols, const struct cut *c);
int volumes_cut_commit(struct volumes *vols, const struct cut *c, uint64_t id);
/* A CONFIG cut, drained everywhere: waits until the writes peers had
 * acknowledged are applied here (mirror_cut_settle), so its change, made
 * next, comes after every write before the cut; volumes_cut_commit then
 * lets the writes go. */
void volumes_cut_settle(struct volumes *vols, const struct cut *c);
void volumes_cut_release(struct volumes *vols, const struct cut *c);
/* A volume's snapshots, oldest first, malloc'd: -ENOENT, -ENOMEM. */
int volumes_snapshots(struct volumes *vols, const char *name, struct snap_info **out, size_t *n);
/* Every volume's snapshots (a sync round's state), malloc'd. */
int volumes_snapshot_list_all(struct volumes *vols, struct policing_snap **out, size_t *n);
/* Makes this node's snapshots the group's; last_cut: the group's cut
 * version (mirror_cut_applied). */
int volumes_snapshot_load(struct volumes *vols, const struct policing_snap *s, size_t n,
                          uint64_t last_cut);
/* The rollback fences (a sync round's state), malloc'd; and the group's
 * fences made this node's (any other volume unfenced). */
struct policing_fence;
int volumes_fence_list(struct volumes *vols, struct policing_fence **out, size_t *n);
int volumes_fence_load(struct volumes *vols, const struct policing_fence *f, size_t n);
/* Before a `replica replace`: cuts the snapshots the named volume's copy
 * lacks (a failed cut, snapshots.c), oldest first, whose rebuild then
 * copies their chunks. 0, -ENOENT, or the first cut's -errno (logged;
 * those not cut stay missing, and the copy must not be rebuilt yet). */
int volumes_snapshot_fill(struct volumes *vols, const char *name);

/* ---- rollback (rollback.c; main loop) ----------------------------------- */

/* Starts copying the named volume back to its snapshot (the caller has
 * fenced it); efd (an eventfd) is written once it ends. -EBUSY while
 * another rollback runs here, -ENOENT, -ENOMSG (no such snapshot). */
int volumes_rollback_start(struct volumes *vols, const char *name, const char *snapshot, int efd);
struct rollback_status {
    bool running;
    int result; /* once not running: 0 or -errno */
    uint64_t done, total;
    double seconds;
    char snapshot[STORE_NAME_MAX + 1];
};
/* The last rollback of the named volume started here: -ENOENT if none. */
int volumes_rollback_status(struct volumes *vols, const char *name, struct rollback_status *st);
/* Whether a rollback fences the named volume (no client may open it). */
bool volumes_fenced(struct volumes *vols, const char *name);
/* At shutdown, before the mirror stops: stops and joins it. */
void volumes_rollback_stop(struct volumes *vols);

#define VOLUME_SIZE_MAX (UINT64_C(1) << 50) /* 1 PiB: keeps offsets far from overflow */

#endif
