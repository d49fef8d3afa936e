/* volume_int.h - the volume layer's internals, shared with the mirror
 * engine (mirror/engine.c), which replicates a volume's I/O and so needs
 * its data file and record. Nothing else includes this.
 */
#ifndef VSAN_VOLUME_INT_H
#define VSAN_VOLUME_INT_H

#include "store/store.h"
#include "volume/volume.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/uio.h>

#define DESCRIPTION_MAX (sizeof("vsan volume  ()") + STORE_NAME_MAX + STORE_UUID_LEN)

struct mirror;
struct mvol;

/* Locking: rec.size and rec.generation change only under the registry's
 * exclusive lock and are read under it (shared or exclusive). Everything
 * the I/O path touches is immutable while a connection holds the volume
 * (fd, description, rec.name, rec.uuid) or atomic: size mirrors rec.size
 * for lock-free bounds checks, connections is incremented under the shared
 * lock (so an exclusive holder sees a stable zero) and decremented without
 * it, and the no_* flags record what the file system refused once so it
 * is not asked again. */
struct volume {
    struct store_volume rec;
    struct store *store;
    int fd;
    char description[DESCRIPTION_MAX];
    _Atomic uint64_t size;
    atomic_uint connections;
    atomic_bool no_dsync;      /* pwritev2(RWF_DSYNC): use pwrite + fdatasync */
    atomic_bool no_punch;      /* FALLOC_FL_PUNCH_HOLE */
    atomic_bool no_zero_range; /* FALLOC_FL_ZERO_RANGE */
    atomic_bool no_nowait;     /* preadv2(RWF_NOWAIT) */
    bool in_memory;            /* tmpfs/ramfs: nothing waits for a device */
    /* The registry holds one reference, each connection another: a volume
     * deleted by the cluster while connected here lives on, gone, until its
     * last connection closes. */
    atomic_uint refs;
    atomic_bool gone;
    struct policing *pc; /* region write priority, or NULL (set before serving) */
    uint32_t vid;        /* its id in the region table */
    /* Replication (mirror/engine.c), when the node has peers. */
    struct mirror *mirror;
    struct mvol *mv;
};

/* With NBD_IO_NOWAIT, zeroing by writing zero data is done inline only up
 * to this size; more is worth another thread. */
#define NOWAIT_ZERO_MAX (256 * 1024)

/* Locking: lock guards the array (v, n, cap) and each volume's rec; see
 * volume.h for who takes it how. It prefers writers so that a stream of
 * NBD connections opening volumes can't starve an admin command. */
struct volumes {
    struct store *store;
    struct policing *pc;   /* given to every volume; NULL in unit tests */
    struct mirror *mirror; /* likewise; NULL when standalone */
    pthread_rwlock_t lock;
    struct volume **v; /* sorted by name */
    size_t n;
    size_t cap;
};

/* The local I/O primitives (volume.c), for the engine: the same calls the
 * NBD path makes on this node's copy. -errno. */
int volume_local_write(struct volume *v, const void *buf, uint32_t count, uint64_t offset,
                       bool fua);
int volume_local_zero(struct volume *v, uint32_t count, uint64_t offset, unsigned flags);
int volume_local_read(struct volume *v, void *buf, uint32_t count, uint64_t offset);
int volume_local_sync(struct volume *v);
/* Empties this node's copy (a replaced disk starts all zeroes). */
int volume_local_wipe(struct volume *v);

/* Runs fn on the volume with id vid, holding a reference; -ENOENT if
 * none. */
int volumes_with(struct volumes *vols, uint32_t vid, int (*fn)(struct volume *v, void *arg),
                 void *arg);
/* Runs fn on every volume (under the shared registry lock: fn must not
 * block on I/O of other nodes). */
void volumes_each(struct volumes *vols, void (*fn)(struct volume *v, void *arg), void *arg);
void volume_ref(struct volume *v);
void volume_unref(struct volume *v);
/* Commits v's record (replica set, local state) to the store. */
int volume_update_record(struct volume *v);

#endif
