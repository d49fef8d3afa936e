/* volume_int.h - what the volume layer's files share (volume.c: the
 * registry and the live export; snapshots.c: cuts and snapshots;
 * snapexport.c: the snapshot exports). Not for other layers. */
#ifndef VSAN_VOLUME_INT_H
#define VSAN_VOLUME_INT_H

#include "volume/volume.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define DESCRIPTION_MAX (sizeof("vsan volume  ()") + STORE_NAME_MAX + STORE_UUID_LEN)

struct policing;
struct svol;

/* Locking: the size changes only under the registry's exclusive lock and
 * is atomic, for the I/O path's lock-free bounds checks. Everything else
 * the I/O path touches is immutable while a connection holds the volume
 * (sv, mv, description, name) or atomic: connections is incremented under
 * the shared lock (so an exclusive holder sees a stable zero) and
 * decremented without it. The record (size, replica set) is the store's
 * (svol.h), under its own lock. */
struct volume {
    struct svol *sv;
    const char *name; /* svol_name(sv) */
    char description[DESCRIPTION_MAX];
    _Atomic uint64_t size;
    atomic_uint connections;
    /* The registry holds one reference, each connection another: a volume
     * deleted by the cluster while connected here lives on, gone, until its
     * last connection closes. */
    atomic_uint refs;
    atomic_bool gone;
    atomic_bool broken;  /* replicated, but its replication state is lost: I/O fails */
    struct policing *pc; /* region write priority, or NULL (set before serving) */
    uint32_t vid;        /* its id in the region table */
    struct mvol *mv;     /* its replication state, or NULL when standalone */
    /* The cut gate (snapshots.c): cut_writers counts the writes between
     * guard_begin and guard_end; while cut_held, new ones wait on gate_cv
     * (under gate_mu) or, inline, say -EAGAIN. */
    atomic_uint cut_writers;
    atomic_bool cut_held;
    pthread_mutex_t gate_mu;
    pthread_cond_t gate_cv;
    /* The snapshot the cut holding the gate takes ("" for a rollback's),
     * under gate_mu: an open of VOL@it waits for that cut to end. */
    char cut_snapshot[STORE_NAME_MAX + 1];
    /* The node rolling v back to a snapshot (rollback.c), 0 if none:
     * clients may not open v meanwhile. */
    atomic_uint fenced_by;
    /* snapshots.c: a rollback's fence or a delete is being decided: no
     * client may open v (closing), or its snapshot deleting (an id). */
    atomic_bool closing;
    _Atomic uint64_t deleting;
    /* The group's snapshots this copy lacks (snapshots.c), oldest first.
     * Changed only on the main loop, under missing_mu, and read there
     * freely; other threads (an NBD open of VOL@SNAP) read under it. */
    pthread_mutex_t missing_mu;
    struct snap_info *missing;
    size_t nmissing;
    /* The open VOL@SNAP exports (snapexport.c), under snapx_mu. */
    pthread_mutex_t snapx_mu;
    struct snapx *readers;
};

/* Locking: lock guards the array (v, n, cap); see volume.h for who takes
 * it how. It prefers writers so that a stream of NBD connections opening
 * volumes can't starve an admin command. */
struct volumes {
    struct store *store;
    struct policing *pc;   /* given to every volume; NULL in unit tests */
    struct mirror *mirror; /* likewise; NULL when standalone */
    pthread_rwlock_t lock;
    struct volume **v;         /* sorted by name */
    struct rollback *rollback; /* rollback.c: the last one started here; main loop */
    struct access *access;     /* the grants (access.h) */
    struct owners *owners;     /* owners and quotas (owners.h) */
    struct tokens *tokens;     /* the API's tokens (tokens.h) */
    size_t n;
    size_t cap;
};

/* The registry's lock (see struct volumes). */
void volumes_lock_shared(struct volumes *vols);
void volumes_lock_excl(struct volumes *vols);
void volumes_unlock(struct volumes *vols);
void volume_ref(struct volume *v);
void volume_unref(struct volume *v);
/* With the lock held: the volume whose region-table id is vid, or NULL. */
struct volume *volumes_find_vid(struct volumes *vols, uint32_t vid);
/* With the lock held: the named volume, or NULL. */
struct volume *volumes_find_name(struct volumes *vols, const char *name);
/* The named volume with a reference the caller drops, or NULL. */
struct volume *volumes_get(struct volumes *vols, const char *name);

struct nbd_export;
struct nbd_extent;
struct snap_info;
struct svol_extent;

/* Appends the extents se[0..k) to ext (at most max, *n so far), merging
 * alike neighbours; returns the bytes taken (volume.c). */
uint64_t volume_add_extents(struct nbd_extent *ext, unsigned *n, unsigned max,
                            const struct svol_extent *se, int k);

/* The group's snapshots v's copy lacks (snapshots.c): read at open from
 * DATA_DIR/snapshots/UUID.missing (none if there is no such file): 0,
 * -EINVAL for a malformed file (logged), -errno; freed with the volume;
 * the file removed with the volume's files. */
int volume_missing_open(struct volume *v, struct store *st);
void volume_missing_free(struct volume *v);
/* v's snapshot called name, held or missing here: 0, -ENOENT. Any
 * thread. */
int volume_snap_find(struct volume *v, const char *name, struct snap_info *out);
int volume_missing_remove(struct volume *v, struct store *st);

/* v's snapshots, oldest first, malloc'd (snapshots.c): those its copy
 * holds and those it lacks. Any thread. */
int volume_records(struct volume *v, struct snap_info **out, size_t *n);

/* snapexport.c. The names of v's snapshots older than upto (0: all),
 * for an export's bitmaps, in one malloc'd block (NULL, *n 0: none). */
const char **volume_bitmap_names(struct volume *v, uint64_t upto, unsigned *n);
/* The live export's bitmap_extents op (export.h): written since the cut
 * of the snapshot called bitmap. */
int volume_bitmap_extents(void *h, unsigned i, const char *bitmap, uint32_t count, uint64_t offset,
                          struct nbd_extent *ext, unsigned max, unsigned flags);
/* VOL@SNAP for v (the export holds the caller's reference on v until
 * snapx_close): -ENOENT if v has no snapshot snap, -ENOMEM. */
int snapx_open(struct volume *v, const char *snap, struct nbd_export *exp);
void snapx_close(struct nbd_export *exp);
/* Whether exp is a VOL@SNAP; its volume. */
bool snapx_is(const struct nbd_export *exp);
struct volume *snapx_volume(const struct nbd_export *exp);
/* How many VOL@SNAP of v's snapshot id are open here. */
unsigned snapx_readers(struct volume *v, uint64_t id);
/* How many clients have v itself (not a snapshot) open here. */
unsigned volume_live_connections(struct volume *v);
/* The 64 KiB chunks of [offset, offset+count) written between the cuts
 * of snapshots since and upto (0: now), from a current copy, as runs. */
struct mirror_changed_run;
int volume_changed_runs(struct volume *v, uint64_t since, uint64_t upto, uint64_t offset,
                        uint32_t count, struct mirror_changed_run *runs, unsigned max);
/* count bytes of v's snapshot id, from a current copy. */
int volume_snap_read(struct volume *v, uint64_t id, void *buf, uint32_t count, uint64_t offset);
/* A write or zero through v's ordinary path (cut gate, region priority,
 * mirror), as a client's (volume.c). */
int volume_write(struct volume *v, const void *buf, uint32_t count, uint64_t offset);
int volume_zero(struct volume *v, uint32_t count, uint64_t offset);

/* The cut gate around every write (snapshots.c): 0, -EAGAIN (nowait and
 * held), -EIO (held far longer than any cut lasts). */
int cut_gate_enter(struct volume *v, bool nowait);
void cut_gate_leave(struct volume *v);
/* Whether the cut holding v's gate takes snapshot name; if so, returns
 * once that cut has ended here (committed or aborted), or after the cut's
 * timeout. */
bool cut_gate_awaited(struct volume *v, const char *name);

#endif
