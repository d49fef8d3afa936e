/* store.h - the node's pool directory: where volumes live on disk.
 *
 * A pool is the directory the config names as data_dir:
 *
 *   DATA_DIR/vsan-pool           marker (INI): format version, pool uuid,
 *                                creation time; written once, atomically
 *   DATA_DIR/volumes/UUID.meta   one volume's record (INI): name, uuid,
 *                                size, generation
 *   DATA_DIR/volumes/UUID.data   its bytes: a sparse file of exactly size
 *   DATA_DIR/bitmaps/UUID.NODE   dirty bitmaps (bitmap.h)
 *   DATA_DIR/snapshots/UUID.*    snapshots: index, side files (snap.h)
 *   DATA_DIR/grants              who may see which volume (volume/access.h)
 *   DATA_DIR/owners, quotas      who owns which volume, how much each may own
 *                                (volume/owners.h)
 *   DATA_DIR/tokens              the API's bearer tokens, hashed (volume/tokens.h)
 *
 * The meta file is the commit point of every change: a volume exists iff
 * its meta does, and its size is the one the meta says. Each change is
 * ordered so that a crash at any point leaves the old or the new state plus
 * leftovers that store_open() recognises and repairs: *.tmp files (removed),
 * data files without a meta (removed), data files longer or shorter than
 * their meta's size (truncated to it). What it can't explain (a corrupt
 * meta, a meta without data) is an error, never a silently dropped volume.
 *
 * The store knows nothing of NBD or connections; volume/volume.c sits on top.
 * It has no lock: the volume layer serialises every call that changes the
 * pool. Every error is returned as -errno and logged with the path it
 * concerns.
 */
#ifndef VSAN_STORE_H
#define VSAN_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_FORMAT_VERSION 1
#define STORE_NAME_MAX 64 /* [A-Za-z0-9._-], not starting with '.' or '-' */
#define STORE_UUID_LEN 36 /* 8-4-4-4-12 lowercase hex */
#define STORE_MARKER "vsan-pool"
#define STORE_VOLUMES_DIR "volumes"
#define STORE_SNAPSHOTS_DIR "snapshots"

struct store;

#define STORE_REPLICAS_MAX 32

/* A replica's state in the cluster's agreed view (mirror/replicas.h). */
struct store_replica {
    uint32_t node;
    uint8_t state; /* enum replica_state */
};

/* What this node knows of its own copy, beyond the agreed view. */
enum store_local {
    STORE_LOCAL_OK = 0,
    STORE_LOCAL_FAILED = 1,  /* the disk failed (or a drill said so): touch nothing */
    STORE_LOCAL_REBUILD = 2, /* a replacement disk: every region must be copied */
    /* Not in the volume's placed replica set: no data file; I/O goes to
     * the replicas (mirror/, "diskless access" in docs/ARCHITECTURE.md). */
    STORE_LOCAL_DISKLESS = 3,
};

/* A volume's metadata record, as committed on disk. */
struct store_volume {
    char name[STORE_NAME_MAX + 1];
    char uuid[STORE_UUID_LEN + 1];
    uint64_t size;       /* bytes, > 0 */
    uint64_t generation; /* 1 at creation, +1 by every change */
    uint32_t nreplicas;  /* the agreed replica set, sorted by node */
    struct store_replica replicas[STORE_REPLICAS_MAX];
    uint8_t local; /* enum store_local */
    /* The replica set was placed (a create with a replica count): a node
     * that joins later takes no copy. Without, every node holds one. */
    bool fixed;
};

/* Opens the pool in data_dir, which must exist. An empty directory becomes
 * a new pool; an existing pool is recovered (see above). Errors: -ENOENT,
 * -ENOTDIR, -EACCES ..., -EINVAL for a foreign or corrupt directory,
 * -EPROTONOSUPPORT for a marker of an unknown format version. */
int store_open(const char *data_dir, struct store **out);
void store_close(struct store *st);

const char *store_path(const struct store *st);
const char *store_pool_uuid(const struct store *st);

/* A fresh random (version 4) uuid, lowercase. */
int store_uuid_generate(char out[STORE_UUID_LEN + 1]);

/* Whether name may name a volume (the rule next to STORE_NAME_MAX). */
bool store_name_valid(const char *name);

/* Reads every volume record into a malloc'd array (NULL when empty) that
 * the caller frees; *n entries, in no particular order. */
int store_list(struct store *st, struct store_volume **out, size_t *n);

/* Creates a volume with the given uuid (NULL: a fresh random one) and an all-zero (sparse) data
 * file. The caller checks that the name is unique. Fills *out. */
int store_create(struct store *st, const char *name, uint64_t size, const char *uuid,
                 struct store_volume *out);
/* The same for a volume of a placed replica set (fixed): on a node
 * outside the set (!holds), the record only (local STORE_LOCAL_DISKLESS),
 * no data file. */
int store_create_placed(struct store *st, const char *name, uint64_t size, const char *uuid,
                        bool holds, struct store_volume *out);

/* A replica added on this node: creates vol's data file, empty (sparse)
 * at vol's size, replacing any left there; the caller then commits a
 * record whose local state is STORE_LOCAL_REBUILD (a crash in between
 * leaves a diskless record and a file the next attach replaces). */
int store_data_attach(struct store *st, const struct store_volume *vol);
/* A replica removed from this node: unlinks vol's data file, once the
 * caller committed the diskless record (a failed unlink is logged; the
 * space comes back when the last fd closes). */
void store_data_detach(struct store *st, const struct store_volume *vol);

/* The bytes the pool's files take on disk: the volumes' data files, and
 * the snapshots' side files and maps. */
int store_usage(struct store *st, uint64_t *data, uint64_t *snapshots);

/* Opens vol's data file read-write; the caller owns the fd (-1 for a
 * diskless record). */
int store_open_data(struct store *st, const struct store_volume *vol, int *fd);

/* Sets vol's size and bumps its generation, updating *vol once the change
 * is committed. Other fds open on the data file see the new length. */
int store_resize(struct store *st, struct store_volume *vol, uint64_t size);

/* Commits vol's replica set and local state (the rest of the record is
 * unchanged). */
int store_update(struct store *st, const struct store_volume *vol);

/* Where the dirty bitmap of vol for node lives: DATA_DIR/bitmaps/UUID.NODE
 * (the directory exists once the store is open). */
void store_bitmap_path(const struct store *st, const char *uuid, uint32_t node, char *out,
                       size_t len);

/* The snapshots directory, DATA_DIR/snapshots (it exists once the store
 * is open; snap.c owns what is in it): its fd, for the *at() calls, and its
 * path, for messages. */
int store_snap_dir_fd(const struct store *st);
const char *store_snap_dir_path(const struct store *st);
/* Replaces name in the snapshots directory with len bytes the way every
 * record of the pool is replaced (name.tmp, fsync, rename, fsync of the
 * directory): after a crash it holds the old or the new bytes, and on 0
 * the new ones are durable. */
int store_snap_replace(struct store *st, const char *name, const void *buf, size_t len);

/* Deletes vol's meta, data and dirty bitmaps (not its snapshots: snap.h). */
int store_delete(struct store *st, const struct store_volume *vol);

/* The grants of the volume table (volume/access.h): DATA_DIR/grants,
 * read whole (*buf malloc'd and NUL-terminated; none: ""; -EFBIG above
 * max bytes) and replaced whole, atomically. */
int store_grants_get(struct store *st, size_t max, char **buf, size_t *len);
int store_grants_set(struct store *st, const void *buf, size_t len);
/* Likewise for any other table of the cluster kept as one file in
 * DATA_DIR (owners, quotas, tokens). */
int store_file_get(struct store *st, const char *file, size_t max, char **buf, size_t *len);
int store_file_set(struct store *st, const char *file, const void *buf, size_t len);

/* The cluster's volume table version (0 until set), persisted atomically. */
int store_version_get(struct store *st, uint64_t *version);
int store_version_set(struct store *st, uint64_t version);

#endif
