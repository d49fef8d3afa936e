/* volume.c - the volume layer: the registry of volumes and the NBD export
 * of each one (nbd-server/export.h).
 *
 * The registry maps names to open volumes and is what the daemon's admin
 * calls and the agreed volume table (voltable.c) change; the NBD server
 * reaches it through volumes_catalog. A request takes region write
 * priority (policing) and then goes, in cluster mode, through the mirror
 * engine (mirror/engine.h), which writes this node's copy and the peers';
 * standalone, straight to the copy (store/svol.h). The I/O path takes no
 * registry lock and allocates nothing but an asynchronous write's state.
 *
 * Lifetime: the registry holds a reference to each volume, each NBD
 * connection another. A deleted volume leaves the registry at once (its
 * files go, the engine detaches it, its connections get ESHUTDOWN) and is
 * freed with its last connection.
 */
#include "volume/volume.h"
#include "volume/volume_int.h"
#include "volume/access.h"
#include "volume/owners.h"
#include "volume/tokens.h"
#include "mirror/engine.h"
#include "mirror/replicas.h"
#include "nbd-server/protocol.h"
#include "policing/protocol.h"
#include "store/store.h"
#include "store/svol.h"

#include <qb/qblog.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/uio.h>
#include <unistd.h>

_Static_assert(VOLUME_NAME_MAX == STORE_NAME_MAX, "the store persists volume names");

_Static_assert(sizeof(((struct volume_info *)0)->uuid) == STORE_UUID_LEN + 1, "uuid length");

/* Lock calls fail only on misuse (deadlock, too many readers): a bug, so
 * abort rather than run unguarded. */
static void lock_check(int err, const char *what)
{
    if (err != 0) {
        qb_log(LOG_CRIT, "volumes: %s: %s", what, strerror(err));
        abort();
    }
}

void volumes_lock_shared(struct volumes *vols)
{
    lock_check(pthread_rwlock_rdlock(&vols->lock), "rdlock");
}

void volumes_lock_excl(struct volumes *vols)
{
    lock_check(pthread_rwlock_wrlock(&vols->lock), "wrlock");
}

void volumes_unlock(struct volumes *vols)
{
    lock_check(pthread_rwlock_unlock(&vols->lock), "unlock");
}

/* ---- the I/O path ---------------------------------------------------- */

/* The NBD flags are the store's, bit for bit, so the path passes them on. */
_Static_assert(NBD_IO_FUA == SVOL_FUA && NBD_IO_NOWAIT == SVOL_NOWAIT &&
                   NBD_IO_MAY_TRIM == SVOL_MAY_TRIM && NBD_IO_FAST == SVOL_FAST,
               "NBD I/O flags are the store's");

/* The protocol checked against the size it announced; a shrink since
 * (forced by the cluster while connected) must not let a request reach
 * past the new end and extend the file. */
static bool in_range(struct volume *v, uint32_t count, uint64_t offset)
{
    uint64_t size = atomic_load_explicit(&v->size, memory_order_acquire);
    return offset <= size && count <= size - offset;
}

static uint64_t vol_size(void *h)
{
    struct volume *v = h;
    return atomic_load_explicit(&v->size, memory_order_acquire);
}

static int vol_pread(void *h, void *buf, uint32_t count, uint64_t offset, unsigned flags)
{
    struct volume *v = h;
    if (!in_range(v, count, offset))
        return -EINVAL;
    if (atomic_load_explicit(&v->broken, memory_order_relaxed))
        return -EIO;
    int r = v->mv ? mirror_read_ok(v->mv, !(flags & NBD_IO_NOWAIT)) : 0;
    if (r < 0)
        return r;
    if (v->mv && !mirror_local_current(v->mv))
        return flags & NBD_IO_NOWAIT ? -EAGAIN : mirror_read(v->mv, buf, count, offset);
    return svol_read(v->sv, buf, count, offset, flags);
}

/* Passes the cut gate (snapshots.c), then takes write priority on the
 * regions a write touches (cluster mode). */
static int guard_begin(struct volume *v, uint64_t offset, uint32_t count, unsigned flags,
                       struct pol_write *w)
{
    if (atomic_load_explicit(&v->gone, memory_order_relaxed))
        return -ESHUTDOWN;
    if (atomic_load_explicit(&v->broken, memory_order_relaxed))
        return -EIO;
    int r = cut_gate_enter(v, flags & NBD_IO_NOWAIT);
    if (r < 0 || !v->pc)
        return r;
    r = policing_write_begin(v->pc, v->vid, offset, count, flags & NBD_IO_NOWAIT, w);
    if (r < 0)
        cut_gate_leave(v);
    return r;
}

static int guard_end(struct volume *v, struct pol_write *w, int result)
{
    if (v->pc)
        policing_write_end(v->pc, w);
    cut_gate_leave(v);
    return result;
}

/* Whether an op with these flags must go the slow way: a sync waits for
 * the device, unless the file lives in memory; a mirrored write waits for
 * its peers unless it may complete asynchronously (a). Plain writes, trims
 * and zeroes land in the page cache and count as fast. */
static bool must_wait(const struct volume *v, unsigned flags, const struct nbd_async *a)
{
    if (!(flags & NBD_IO_NOWAIT))
        return false;
    return (v->mv && !a) || ((flags & NBD_IO_FUA) && !svol_in_memory(v->sv));
}

/* A mirrored write finishing asynchronously: it holds its write priority
 * until the engine reports it done. */
struct vol_async {
    struct mirror_async a; /* the engine's */
    struct nbd_async *outer;
    struct volume *v;
    struct pol_write w;
};

static void vol_async_done(struct mirror_async *a, int err)
{
    struct vol_async *va = (struct vol_async *)a;
    struct nbd_async *outer = va->outer;
    guard_end(va->v, &va->w, 0);
    free(va);
    outer->done(outer, err);
}

typedef int (*mirror_fn)(struct mvol *mv, const void *buf, uint32_t count, uint64_t offset,
                         unsigned flags, struct mirror_async *a);

static int mirror_zero_fn(struct mvol *mv, const void *buf, uint32_t count, uint64_t offset,
                          unsigned flags, struct mirror_async *a)
{
    (void)buf;
    return mirror_zero(mv, count, offset, flags, a);
}

/* A write through the mirror engine under write priority; with a, it may
 * complete asynchronously (-EINPROGRESS). */
static int mirrored(struct volume *v, mirror_fn fn, const void *buf, uint32_t count,
                    uint64_t offset, unsigned flags, struct nbd_async *a)
{
    struct pol_write w;
    if (!a) {
        int r = guard_begin(v, offset, count, flags, &w);
        return r < 0 ? r : guard_end(v, &w, fn(v->mv, buf, count, offset, flags, NULL));
    }
    struct vol_async *va = malloc(sizeof *va);
    if (!va)
        return -EAGAIN;
    int r = guard_begin(v, offset, count, flags, &va->w);
    if (r < 0) {
        free(va);
        return r;
    }
    va->a.done = vol_async_done;
    va->outer = a;
    va->v = v;
    r = fn(v->mv, buf, count, offset, flags, &va->a);
    if (r == -EINPROGRESS)
        return r;
    guard_end(v, &va->w, 0);
    free(va);
    return r;
}

static int vol_pwrite(void *h, const void *buf, uint32_t count, uint64_t offset, unsigned flags,
                      struct nbd_async *a)
{
    struct volume *v = h;
    if (!in_range(v, count, offset))
        return -ENOSPC;
    if (must_wait(v, flags, a))
        return -EAGAIN;
    if (v->mv)
        return mirrored(v, mirror_write, buf, count, offset, flags, a);
    struct pol_write w;
    int r = guard_begin(v, offset, count, flags, &w);
    if (r < 0)
        return r;
    return guard_end(v, &w, svol_write(v->sv, buf, count, offset, flags & NBD_IO_FUA));
}

static int vol_flush(void *h, unsigned flags)
{
    struct volume *v = h;
    if (must_wait(v, flags | NBD_IO_FUA, NULL))
        return -EAGAIN;
    return v->mv ? mirror_flush(v->mv) : svol_sync(v->sv);
}

/* Zeroes a range under write priority; a range past the end answers
 * range_err (the protocol wants ENOSPC for WRITE_ZEROES, EINVAL for TRIM). */
static int zero_guarded(struct volume *v, uint32_t count, uint64_t offset, unsigned flags,
                        int range_err, struct nbd_async *a)
{
    if (!in_range(v, count, offset))
        return range_err;
    if (must_wait(v, flags, a))
        return -EAGAIN;
    if (v->mv)
        return mirrored(v, mirror_zero_fn, NULL, count, offset, flags, a);
    struct pol_write w;
    int r = guard_begin(v, offset, count, flags, &w);
    if (r < 0)
        return r;
    return guard_end(v, &w, svol_zero(v->sv, count, offset, flags));
}

static int vol_zero(void *h, uint32_t count, uint64_t offset, unsigned flags, struct nbd_async *a)
{
    return zero_guarded(h, count, offset, flags, -ENOSPC, a);
}

/* vsan promises that trimmed ranges read zeroes, so a trim is a zero that
 * may leave a hole. */
static int vol_trim(void *h, uint32_t count, uint64_t offset, unsigned flags, struct nbd_async *a)
{
    return zero_guarded(h, count, offset, (flags & ~NBD_IO_FAST) | NBD_IO_MAY_TRIM, -EINVAL, a);
}

int volume_write(struct volume *v, const void *buf, uint32_t count, uint64_t offset)
{
    return vol_pwrite(v, buf, count, offset, 0, NULL);
}

int volume_zero(struct volume *v, uint32_t count, uint64_t offset)
{
    return zero_guarded(v, count, offset, NBD_IO_MAY_TRIM, -ENOSPC, NULL);
}

/* Readahead is asynchronous: fast whatever the flags. A copy that is not
 * current serves no reads (they go to a peer), so warming its stale data
 * would only cost: the hint is then a no-op, which CACHE allows. */
static int vol_cache(void *h, uint32_t count, uint64_t offset, unsigned flags)
{
    struct volume *v = h;
    (void)flags;
    if (!in_range(v, count, offset))
        return -EINVAL;
    if (v->mv && !mirror_local_current(v->mv))
        return 0;
    return svol_cache(v->sv, count, offset);
}

/* A copy that is not current may have holes where the volume has data, so
 * its allocation is asked of a current peer (a round trip: never inline). */
/* Appends extents to ext (n of them, at most max), merging one of the
 * kind of the last; returns the bytes they cover. */
uint64_t volume_add_extents(struct nbd_extent *ext, unsigned *n, unsigned max,
                            const struct svol_extent *se, int k)
{
    uint64_t bytes = 0;
    for (int i = 0; i < k; i++) {
        uint32_t f = se[i].hole ? NBD_EXTENT_HOLE | NBD_EXTENT_ZERO : 0;
        if (*n > 0 && ext[*n - 1].flags == f)
            ext[*n - 1].length += se[i].length;
        else if (*n < max)
            ext[(*n)++] = (struct nbd_extent){.length = se[i].length, .flags = f};
        else
            break;
        bytes += se[i].length;
    }
    return bytes;
}

/* Up to max extents (BLOCK_STATUS asks for up to 1,024), read from the
 * copy a stack array at a time; from a current peer when this copy is
 * not current (one request, at most SE_MAX). */
#define SE_MAX 64
static int vol_extents(void *h, uint32_t count, uint64_t offset, struct nbd_extent *ext,
                       unsigned max, unsigned flags)
{
    struct volume *v = h;
    if (count == 0 || max == 0 || !in_range(v, count, offset))
        return -EINVAL;
    int r = v->mv ? mirror_read_ok(v->mv, !(flags & NBD_IO_NOWAIT)) : 0;
    if (r < 0)
        return r;
    struct svol_extent se[SE_MAX];
    unsigned n = 0;
    if (v->mv && !mirror_local_current(v->mv)) {
        if (flags & NBD_IO_NOWAIT)
            return -EAGAIN;
        int k = mirror_extents(v->mv, count, offset, se, max < SE_MAX ? max : SE_MAX);
        if (k < 0)
            return k;
        volume_add_extents(ext, &n, max, se, k);
        return (int)n;
    }
    for (uint64_t pos = offset, end = offset + count; pos < end && n < max;) {
        int k = svol_extents(v->sv, (uint32_t)(end - pos), pos, flags & NBD_IO_ROUGH, se,
                             max - n < SE_MAX ? max - n : SE_MAX);
        if (k < 0)
            return n > 0 ? (int)n : k;
        pos += volume_add_extents(ext, &n, max, se, k);
    }
    return (int)n;
}

/* A mirrored volume sends the copies of the writes run inline together. */
static void vol_batch_begin(void *h)
{
    if (((struct volume *)h)->mv)
        mirror_gather_begin();
}

static void vol_batch_end(void *h)
{
    if (((struct volume *)h)->mv)
        mirror_gather_end();
}

static const struct nbd_export_ops volume_export_ops = {
    .size = vol_size,
    .pread = vol_pread,
    .pwrite = vol_pwrite,
    .flush = vol_flush,
    .trim = vol_trim,
    .zero = vol_zero,
    .cache = vol_cache,
    .extents = vol_extents,
    .bitmap_extents = volume_bitmap_extents,
    .batch_begin = vol_batch_begin,
    .batch_end = vol_batch_end,
};

/* ---- the registry ---------------------------------------------------- */

/* Index of name in the sorted array, or where it would go. */
static bool find(struct volumes *vols, const char *name, size_t *idx);

struct volume *volumes_find_name(struct volumes *vols, const char *name)
{
    size_t idx;
    return find(vols, name, &idx) ? vols->v[idx] : NULL;
}

static bool find(struct volumes *vols, const char *name, size_t *idx)
{
    size_t lo = 0, hi = vols->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(vols->v[mid]->name, name);
        if (c == 0) {
            *idx = mid;
            return true;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *idx = lo;
    return false;
}

static int reserve(struct volumes *vols)
{
    if (vols->n < vols->cap)
        return 0;
    size_t cap = vols->cap ? vols->cap * 2 : 16;
    struct volume **v = realloc(vols->v, cap * sizeof(*v));
    if (v == NULL)
        return -ENOMEM;
    vols->v = v;
    vols->cap = cap;
    return 0;
}

/* Needs a reserved slot. */
static void insert_at(struct volumes *vols, size_t idx, struct volume *v)
{
    memmove(&vols->v[idx + 1], &vols->v[idx], (vols->n - idx) * sizeof(*vols->v));
    vols->v[idx] = v;
    vols->n++;
}

static void remove_at(struct volumes *vols, size_t idx)
{
    vols->n--;
    memmove(&vols->v[idx], &vols->v[idx + 1], (vols->n - idx) * sizeof(*vols->v));
}

static int volume_new(struct store *store, const struct store_volume *rec, struct volume **out)
{
    struct volume *v = calloc(1, sizeof(*v));
    if (v == NULL) {
        qb_log(LOG_ERR, "volume \"%s\": out of memory", rec->name);
        return -ENOMEM;
    }
    int r = svol_open(store, rec, &v->sv);
    if (r == 0 && (r = volume_missing_open(v, store)) < 0)
        svol_unref(v->sv);
    if (r < 0) {
        free(v);
        return r;
    }
    v->name = svol_name(v->sv);
    snprintf(v->description, sizeof(v->description), "vsan volume %s (%s)", rec->name, rec->uuid);
    atomic_init(&v->size, rec->size);
    atomic_init(&v->connections, 0);
    atomic_init(&v->refs, 1);
    atomic_init(&v->gone, false);
    atomic_init(&v->broken, false);
    atomic_init(&v->cut_writers, 0);
    atomic_init(&v->cut_held, false);
    atomic_init(&v->fenced_by, 0);
    atomic_init(&v->closing, false);
    atomic_init(&v->deleting, 0);
    pthread_mutex_init(&v->gate_mu, NULL);
    pthread_cond_init(&v->gate_cv, NULL);
    pthread_mutex_init(&v->snapx_mu, NULL);
    pthread_mutex_init(&v->missing_mu, NULL);
    v->vid = policing_volume_id(rec->uuid);
    *out = v;
    return 0;
}

void volume_ref(struct volume *v)
{
    atomic_fetch_add(&v->refs, 1);
}

void volume_unref(struct volume *v)
{
    if (atomic_fetch_sub(&v->refs, 1) != 1)
        return;
    if (v->mv) /* detached at its delete, or by mirror_stop */
        mirror_volume_put(v->mv);
    svol_unref(v->sv);
    volume_missing_free(v);
    pthread_cond_destroy(&v->gate_cv);
    pthread_mutex_destroy(&v->gate_mu);
    pthread_mutex_destroy(&v->snapx_mu);
    pthread_mutex_destroy(&v->missing_mu);
    free(v);
}

/* v's record, with the replica state the engine applied (mirror_state_into). */
static void record_of(struct volume *v, struct store_volume *rec)
{
    svol_record(v->sv, rec);
    if (v->mv)
        mirror_state_into(v->mv, rec);
}

static int fill_info(struct volume *v, struct volume_info *out)
{
    struct store_volume rec;
    record_of(v, &rec);
    *out = (struct volume_info){
        .size = rec.size,
        .generation = rec.generation,
        .connections = atomic_load(&v->connections),
        .nreplicas = rec.nreplicas,
    };
    int r = svol_allocated(v->sv, &out->allocated);
    if (r < 0)
        return r;
    memcpy(out->name, rec.name, sizeof(out->name));
    memcpy(out->uuid, rec.uuid, sizeof(out->uuid));
    memcpy(out->replicas, rec.replicas, sizeof(out->replicas));
    if (v->pc)
        out->nrecovery =
            (unsigned)policing_progress_of(v->pc, v->vid, out->recovery, VOLUME_RECOVERY_MAX);
    return 0;
}

static bool check_name(const char *name)
{
    if (store_name_valid(name))
        return true;
    qb_log(LOG_WARNING,
           "volume \"%s\": invalid name: use 1 to %d of A-Z a-z 0-9 . _ -, not starting "
           "with '.' or '-'",
           name, VOLUME_NAME_MAX);
    return false;
}

static bool check_size(const char *name, uint64_t size)
{
    if (size > 0 && size % 512 == 0 && size <= VOLUME_SIZE_MAX)
        return true;
    qb_log(LOG_WARNING,
           "volume \"%s\": invalid size %" PRIu64 ": must be a non-zero multiple of 512 bytes, "
           "at most 1 PiB",
           name, size);
    return false;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct store_volume *)a)->name, ((const struct store_volume *)b)->name);
}

static int load(struct volumes *vols, struct store_volume *recs, size_t n)
{
    if (n > 1)
        qsort(recs, n, sizeof(*recs), by_name);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(recs[i - 1].name, recs[i].name) == 0) {
            qb_log(LOG_ERR, "data_dir \"%s\": two volumes named \"%s\" (uuids %s and %s)",
                   store_path(vols->store), recs[i].name, recs[i - 1].uuid, recs[i].uuid);
            return -EINVAL;
        }
        int r = reserve(vols);
        if (r < 0) {
            qb_log(LOG_ERR, "data_dir \"%s\": out of memory", store_path(vols->store));
            return r;
        }
        struct volume *v;
        r = volume_new(vols->store, &recs[i], &v);
        if (r < 0)
            return r;
        vols->v[vols->n++] = v;
    }
    return 0;
}

static bool volume_exists(void *arg, const char *uuid)
{
    struct volumes *vols = arg;
    for (size_t i = 0; i < vols->n; i++)
        if (strcmp(svol_uuid(vols->v[i]->sv), uuid) == 0)
            return true;
    return false;
}

int volumes_open(struct store *store, struct volumes **out)
{
    struct volumes *vols = calloc(1, sizeof(*vols));
    if (vols == NULL) {
        qb_log(LOG_ERR, "data_dir \"%s\": out of memory", store_path(store));
        return -ENOMEM;
    }
    vols->store = store;
    pthread_rwlockattr_t attr;
    int r = -pthread_rwlockattr_init(&attr);
    if (r == 0)
        r = -pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    if (r == 0)
        r = -pthread_rwlock_init(&vols->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (r < 0) {
        qb_log(LOG_ERR, "volumes: rwlock: %s", strerror(-r));
        free(vols);
        return r;
    }
    struct store_volume *recs;
    size_t n;
    r = access_open(store, &vols->access);
    if (r == 0)
        r = owners_open(store, &vols->owners);
    if (r == 0)
        r = tokens_open(store, &vols->tokens);
    if (r == 0)
        r = store_list(store, &recs, &n);
    if (r == 0) {
        r = load(vols, recs, n);
        free(recs);
    }
    if (r == 0)
        r = access_forget_gone(vols->access, volume_exists, vols);
    if (r < 0) {
        volumes_close(vols);
        return r;
    }
    qb_log(LOG_INFO, "data_dir \"%s\": %zu volume%s", store_path(store), vols->n,
           vols->n == 1 ? "" : "s");
    *out = vols;
    return 0;
}

void volumes_close(struct volumes *vols)
{
    if (vols == NULL)
        return;
    for (size_t i = 0; i < vols->n; i++)
        volume_unref(vols->v[i]);
    free(vols->v);
    access_close(vols->access);
    owners_close(vols->owners);
    tokens_close(vols->tokens);
    pthread_rwlock_destroy(&vols->lock);
    free(vols);
}

struct access *volumes_access(struct volumes *vols)
{
    return vols->access;
}

struct owners *volumes_owners(struct volumes *vols)
{
    return vols->owners;
}

struct tokens *volumes_tokens(struct volumes *vols)
{
    return vols->tokens;
}

/* ---- admin operations ------------------------------------------------ */

/* Registers a volume the store has just created; undoes the creation if
 * its data file can't be opened, so what is on disk is what is served. */
static int delete_files(struct volumes *vols, struct volume *v);

static int add_created(struct volumes *vols, size_t idx, const struct store_volume *rec,
                       struct volume **out)
{
    int r = volume_new(vols->store, rec, out);
    if (r < 0) {
        if (store_delete(vols->store, rec) < 0)
            qb_log(LOG_ERR,
                   "volume \"%s\": created on disk, can't be opened or removed; it "
                   "reappears at the next start",
                   rec->name);
        return r;
    }
    insert_at(vols, idx, *out);
    return 0;
}

/* Under the exclusive lock: takes back a volume created at idx. */
static void undo_create(struct volumes *vols, size_t idx, struct volume *v)
{
    remove_at(vols, idx);
    if (delete_files(vols, v) < 0)
        qb_log(LOG_ERR,
               "volume \"%s\": created on disk, can't be set up or removed; it "
               "reappears at the next start",
               v->name);
    volume_unref(v);
}

int volumes_create(struct volumes *vols, const char *name, uint64_t size, const char *uuid,
                   struct volume_info *out)
{
    return volumes_create_replicated(vols, name, size, uuid, NULL, 0, false, out);
}

/* Sets the first replica set (every node current) before anyone sees it,
 * and gives the volume to the mirror engine. */
static int init_replicas(struct volumes *vols, struct volume *v, const uint32_t *nodes, size_t n)
{
    if (n > 0) {
        struct store_volume rec;
        svol_record(v->sv, &rec);
        replica_init(&rec, nodes, n);
        int r = svol_set_state(v->sv, &rec);
        if (r < 0)
            return r;
    }
    return vols->mirror ? mirror_volume_attach(vols->mirror, v->sv, v->vid, v->pc, &v->mv) : 0;
}

struct volume *volumes_find_vid(struct volumes *vols, uint32_t vid)
{
    for (size_t i = 0; i < vols->n; i++)
        if (vols->v[i]->vid == vid)
            return vols->v[i];
    return NULL;
}

/* With the lock held: whether uuid may name a new volume here. Its id in
 * the region table is the uuid's first 32 bits, so two volumes whose
 * uuids share them would share regions and peers' requests: refused. The
 * table is the same on every node, so every node decides alike. */
static int check_uuid(struct volumes *vols, const char *name, const char *uuid)
{
    struct volume *other = volumes_find_vid(vols, policing_volume_id(uuid));
    if (!other)
        return 0;
    qb_log(LOG_WARNING, "volume \"%s\": create: its uuid %s has the id of volume \"%s\"", name,
           uuid, other->name);
    return -EEXIST;
}

int volumes_new_uuid(struct volumes *vols, char out[STORE_UUID_LEN + 1])
{
    volumes_lock_shared(vols);
    int r = -EEXIST;
    for (int tries = 0; tries < 16 && r == -EEXIST; tries++) {
        r = store_uuid_generate(out);
        if (r == 0 && volumes_find_vid(vols, policing_volume_id(out)))
            r = -EEXIST;
    }
    volumes_unlock(vols);
    return r;
}

/* Whether this node is among the n nodes (standalone: it always is). */
static bool holds_replica(struct volumes *vols, const uint32_t *nodes, size_t n)
{
    if (!vols->pc)
        return true;
    uint32_t self = policing_self(vols->pc);
    for (size_t i = 0; i < n; i++)
        if (nodes[i] == self)
            return true;
    return false;
}

int volumes_create_replicated(struct volumes *vols, const char *name, uint64_t size,
                              const char *uuid, const uint32_t *nodes, size_t n, bool fixed,
                              struct volume_info *out)
{
    if (!check_name(name) || !check_size(name, size))
        return -EINVAL;
    char fresh[STORE_UUID_LEN + 1];
    if (!uuid) {
        int r = volumes_new_uuid(vols, fresh);
        if (r < 0)
            return r;
        uuid = fresh;
    }
    volumes_lock_excl(vols);
    size_t idx;
    int r = 0;
    if (find(vols, name, &idx)) {
        qb_log(LOG_WARNING, "volume \"%s\": create: a volume of that name exists", name);
        r = -EEXIST;
    } else if (reserve(vols) < 0) {
        qb_log(LOG_ERR, "volume \"%s\": create: out of memory", name);
        r = -ENOMEM;
    }
    if (r == 0)
        r = check_uuid(vols, name, uuid);
    struct store_volume rec;
    struct volume *v = NULL;
    if (r == 0)
        r = fixed ? store_create_placed(vols->store, name, size, uuid,
                                        holds_replica(vols, nodes, n), &rec)
                  : store_create(vols->store, name, size, uuid, &rec);
    if (r == 0)
        r = add_created(vols, idx, &rec, &v);
    if (r == 0)
        v->pc = vols->pc;
    if (r == 0 && (r = init_replicas(vols, v, nodes, n)) < 0)
        undo_create(vols, idx, v); /* never served without its replication */
    else if (r == 0 && out != NULL)
        r = fill_info(v, out);
    volumes_unlock(vols);
    return r;
}

/* Under the exclusive lock: the engine lets go of the volume first (no
 * peer's write recreates a bitmap after its files are gone; its resync
 * ends by itself, nothing waits for it), then the files go. If they can't,
 * the volume is attached again. */
static int delete_files(struct volumes *vols, struct volume *v)
{
    if (v->mv)
        mirror_volume_detach(v->mv);
    int r = svol_delete(v->sv);
    if (r == 0)
        volume_missing_remove(v, vols->store); /* logged; a leftover is harmless */
    if (r < 0 && v->mv) {
        mirror_volume_put(v->mv);
        v->mv = NULL;
        if (mirror_volume_attach(vols->mirror, v->sv, v->vid, v->pc, &v->mv) < 0) {
            qb_log(LOG_ERR,
                   "volume \"%s\": not deleted, and can't be replicated any more: it "
                   "serves nothing until vsand restarts",
                   v->name);
            atomic_store(&v->broken, true);
        }
    }
    return r;
}

int volumes_delete(struct volumes *vols, const char *name, bool even_if_busy)
{
    volumes_lock_excl(vols);
    size_t idx;
    struct volume *v = NULL;
    int r = 0;
    if (!find(vols, name, &idx)) {
        r = -ENOENT;
    } else if (!even_if_busy && atomic_load(&vols->v[idx]->connections) > 0) {
        qb_log(LOG_WARNING, "volume \"%s\": delete refused: %u NBD connection(s) open here", name,
               atomic_load(&vols->v[idx]->connections));
        r = -EBUSY;
    } else {
        r = delete_files(vols, vols->v[idx]);
        if (r == 0) {
            v = vols->v[idx];
            atomic_store(&v->gone, true);
            remove_at(vols, idx);
        }
    }
    volumes_unlock(vols);
    if (v != NULL && access_forget(vols->access, svol_uuid(v->sv)) < 0)
        qb_log(LOG_ERR, "volume \"%s\": deleted, but its grants stay in the grants file", name);
    if (v != NULL && owners_forget(vols->owners, svol_uuid(v->sv)) < 0)
        qb_log(LOG_ERR, "volume \"%s\": deleted, but its owner stays in the owners file", name);
    if (v != NULL)
        volume_unref(v);
    return r;
}

/* Under the exclusive lock. A shrink first lowers the bound the I/O path
 * checks (so no client writes into the range being cut), then cuts the
 * store (its meta commits first), then the engine's marks and bitmaps:
 * if the store fails, nothing else changed but the bound, which is put
 * back. A grow resizes the store, then the engine (all or nothing), and
 * only then raises the bound; a grow that failed in the engine is
 * completed by trying again (the store is already grown). */
static int resize_locked(struct volume *v, uint64_t size, bool force, bool even_if_busy)
{
    uint64_t old = atomic_load(&v->size);
    if (size < old) {
        if (!force) {
            qb_log(LOG_WARNING,
                   "volume \"%s\": shrinking destroys data past the new end; "
                   "refused without force",
                   v->name);
            return -ERANGE;
        }
        unsigned conns = atomic_load(&v->connections);
        if (conns > 0 && !even_if_busy) {
            qb_log(LOG_WARNING, "volume \"%s\": shrink refused: %u NBD connection(s) open here",
                   v->name, conns);
            return -EBUSY;
        }
    }
    if (size == old)
        return 0;
    if (size < old) {
        atomic_store_explicit(&v->size, size, memory_order_release);
        int r = svol_resize(v->sv, size);
        if (r < 0) {
            atomic_store_explicit(&v->size, old, memory_order_release);
            return r;
        }
        return v->mv ? mirror_volume_resize(v->mv, size) : 0;
    }
    int r = svol_resize(v->sv, size);
    if (r == 0 && v->mv)
        r = mirror_volume_resize(v->mv, size);
    if (r == 0)
        atomic_store_explicit(&v->size, size, memory_order_release);
    return r;
}

int volumes_resize(struct volumes *vols, const char *name, uint64_t size, bool force,
                   bool even_if_busy, struct volume_info *out)
{
    if (!check_size(name, size))
        return -EINVAL;
    volumes_lock_excl(vols);
    size_t idx;
    int r =
        find(vols, name, &idx) ? resize_locked(vols->v[idx], size, force, even_if_busy) : -ENOENT;
    if (r == 0 && out != NULL)
        r = fill_info(vols->v[idx], out);
    volumes_unlock(vols);
    return r;
}

int volumes_info(struct volumes *vols, const char *name, struct volume_info *out)
{
    volumes_lock_shared(vols);
    size_t idx;
    int r = find(vols, name, &idx) ? fill_info(vols->v[idx], out) : -ENOENT;
    volumes_unlock(vols);
    return r;
}

int volumes_bump_generation(struct volumes *vols, const char *name)
{
    volumes_lock_shared(vols);
    size_t idx;
    int r = find(vols, name, &idx) ? svol_bump_generation(vols->v[idx]->sv) : -ENOENT;
    volumes_unlock(vols);
    return r;
}

size_t volumes_count(struct volumes *vols)
{
    volumes_lock_shared(vols);
    size_t n = vols->n;
    volumes_unlock(vols);
    return n;
}

int volumes_list_records(struct volumes *vols, struct store_volume **out, size_t *n)
{
    volumes_lock_shared(vols);
    size_t count = vols->n;
    struct store_volume *recs = calloc(count ? count : 1, sizeof(*recs));
    for (size_t i = 0; recs && i < count; i++)
        record_of(vols->v[i], &recs[i]);
    volumes_unlock(vols);
    if (!recs) {
        qb_log(LOG_ERR, "volumes: list: out of memory");
        return -ENOMEM;
    }
    *out = recs;
    *n = count;
    return 0;
}

int volumes_list(struct volumes *vols, struct volume_info **out, size_t *n)
{
    volumes_lock_shared(vols);
    struct volume_info *infos = calloc(vols->n ? vols->n : 1, sizeof(*infos));
    int r = infos == NULL ? -ENOMEM : 0;
    if (r < 0)
        qb_log(LOG_ERR, "volumes: list: out of memory");
    for (size_t i = 0; r == 0 && i < vols->n; i++)
        r = fill_info(vols->v[i], &infos[i]);
    size_t count = vols->n;
    volumes_unlock(vols);
    if (r < 0) {
        free(infos);
        return r;
    }
    *out = infos;
    *n = count;
    return 0;
}

/* ---- the NBD catalog ------------------------------------------------- */

/* Appends " ID@ADDR" (the separator first) to d, keeping it within
 * NBD_MAX_STRING: a longer description would not be sent at all. */
static void describe_replica(struct volume *v, uint32_t node, char *d, size_t *len, char sep)
{
    char addr[PMSG_ADDR_MAX];
    if (policing_member_nbd(v->pc, node, addr, sizeof addr) < 0)
        return;
    int n = snprintf(d + *len, NBD_MAX_STRING + 1 - *len, "%c%" PRIu32 "@%s", sep, node, addr);
    if (n > 0 && (size_t)n < NBD_MAX_STRING + 1 - *len)
        *len += (size_t)n;
    else
        d[*len] = '\0';
}

/* Appends " recovery=ID:DONE/TOTAL:RATE,..." for the copies being filled
 * (bytes, bytes, bytes/s), if any, within NBD_MAX_STRING. */
static void describe_recovery(struct volume *v, char *d, size_t *len)
{
    struct policing_progress p[VOLUME_RECOVERY_MAX];
    size_t n = policing_progress_of(v->pc, v->vid, p, VOLUME_RECOVERY_MAX);
    for (size_t i = 0; i < n; i++) {
        size_t room = NBD_MAX_STRING + 1 - *len;
        int k = snprintf(d + *len, room, "%s%" PRIu32 ":%" PRIu64 "/%" PRIu64 ":%" PRIu64,
                         i ? "," : " recovery=", p[i].node, p[i].done, p[i].total, p[i].rate);
        if (k <= 0 || (size_t)k >= room) {
            d[*len] = '\0';
            return;
        }
        *len += (size_t)k;
    }
}

/* The export's description, fresh for each connection: the volume, then
 * the NBD addresses of its current replicas, which vsan-fuse reads to know
 * where to go when the node it uses fails, then the copies being filled:
 *   vsan volume NAME (UUID) replicas=1@198.51.100.11:10809,3@...:10809
 *     recovery=2:1048576/67108864:524288
 * A volume that is not mirrored (standalone) names this node only. The
 * static description without replicas if it can't be built. */
static const char *describe(struct volume *v)
{
    char *d = malloc(NBD_MAX_STRING + 1);
    if (!d || !v->pc) {
        free(d);
        return v->description;
    }
    size_t len = (size_t)snprintf(d, NBD_MAX_STRING + 1, "%s replicas", v->description);
    size_t base = len;
    if (v->mv) {
        struct store_replica reps[STORE_REPLICAS_MAX];
        uint32_t n;
        mirror_replicas_copy(v->mv, reps, &n);
        for (uint32_t i = 0; i < n; i++)
            if (reps[i].state == REPLICA_CURRENT)
                describe_replica(v, reps[i].node, d, &len, len == base ? '=' : ',');
    } else {
        describe_replica(v, policing_self(v->pc), d, &len, '=');
    }
    if (len > base)
        describe_recovery(v, d, &len);
    if (len == base) {
        free(d);
        return v->description;
    }
    return d;
}

static void describe_free(struct volume *v, const char *d)
{
    if (d != v->description)
        free((char *)d);
}

/* Under the lock: the volume of export name (VOL or VOL@SNAP) and what
 * who may do with it; NULL if there is none or who may not see it. */
static struct volume *export_volume(struct volumes *vols, const char *name,
                                    const struct nbd_client *who, enum access_mode *mode)
{
    char vname[VOLUME_NAME_MAX + 1];
    const char *at = strchr(name, '@');
    size_t len = at ? (size_t)(at - name) : strlen(name);
    /* Too long is unknown, never cut: the server ends a revoked client's
     * connections by the name it asked for, which must be the volume's. */
    if (len > VOLUME_NAME_MAX)
        return NULL;
    snprintf(vname, sizeof vname, "%.*s", (int)len, name);
    struct volume *v = volumes_find_name(vols, vname);
    *mode = v ? access_of(vols->access, svol_uuid(v->sv), who) : ACCESS_NONE;
    return *mode == ACCESS_NONE ? NULL : v;
}

/* name is VOL, or VOL@SNAP: a snapshot of VOL (snapexport.c), which
 * counts as a connection to VOL too (VOL is not deleted under it). */
static int cat_open(void *ctx, const char *name, const struct nbd_client *who,
                    struct nbd_export *exp)
{
    struct volumes *vols = ctx;
    enum access_mode mode;
    const char *at = strchr(name, '@');
    volumes_lock_shared(vols);
    /* None the client may see is as if there were none: no client learns
     * what it may not see. */
    struct volume *v = export_volume(vols, name, who, &mode);
    if (v != NULL) {
        atomic_fetch_add(&v->refs, 1);
        atomic_fetch_add(&v->connections, 1);
    }
    volumes_unlock(vols);
    if (v == NULL)
        return -ENOENT;
    int r = 0;
    if (at) {
        r = snapx_open(v, at + 1, exp);
    } else if (atomic_load(&v->fenced_by) || atomic_load(&v->closing)) {
        r = -EBUSY; /* being rolled back to a snapshot */
    } else {
        unsigned nb;
        const char **names = volume_bitmap_names(v, 0, &nb);
        *exp = (struct nbd_export){
            .ops = &volume_export_ops,
            .handle = v,
            .description = describe(v),
            .read_only = mode == ACCESS_READ,
            .bitmaps = names,
            .nbitmaps = nb,
        };
    }
    if (r < 0) {
        atomic_fetch_sub(&v->connections, 1);
        volume_unref(v);
    }
    return r;
}

/* A snapshot is read-only whatever the grant: only its going matters. */
static bool cat_still(void *ctx, const char *name, const struct nbd_client *who,
                      const struct nbd_export *exp)
{
    struct volumes *vols = ctx;
    enum access_mode mode;
    volumes_lock_shared(vols);
    bool still = export_volume(vols, name, who, &mode) != NULL &&
                 (snapx_is(exp) || exp->read_only == (mode == ACCESS_READ));
    volumes_unlock(vols);
    return still;
}

static void cat_close(void *ctx, struct nbd_export *exp)
{
    (void)ctx;
    struct volume *v;
    if (snapx_is(exp)) {
        v = snapx_volume(exp);
        snapx_close(exp);
    } else {
        v = exp->handle;
        describe_free(v, exp->description);
        free((void *)exp->bitmaps);
    }
    atomic_fetch_sub(&v->connections, 1);
    volume_unref(v);
}

int volumes_set_mirror(struct volumes *vols, struct mirror *m)
{
    volumes_lock_excl(vols);
    vols->mirror = m;
    int r = 0;
    for (size_t i = 0; r == 0 && i < vols->n; i++) {
        struct volume *v = vols->v[i];
        r = mirror_volume_attach(m, v->sv, v->vid, v->pc, &v->mv);
        if (r < 0)
            qb_log(LOG_ERR, "volume \"%s\": can't be replicated: %s", v->name, strerror(-r));
    }
    volumes_unlock(vols);
    return r;
}

/* Runs fn on the volume with id vid, holding a reference; -ENOENT if
 * none. */
static int volumes_with(struct volumes *vols, uint32_t vid, int (*fn)(struct volume *v, void *arg),
                        void *arg)
{
    volumes_lock_shared(vols);
    struct volume *v = NULL;
    for (size_t i = 0; i < vols->n && !v; i++)
        if (vols->v[i]->vid == vid)
            v = vols->v[i];
    if (v)
        volume_ref(v);
    volumes_unlock(vols);
    if (!v)
        return -ENOENT;
    int r = fn(v, arg);
    volume_unref(v);
    return r;
}

/* Runs fn on every volume, under the shared lock. */
static void volumes_each(struct volumes *vols, void (*fn)(struct volume *v, void *arg), void *arg)
{
    volumes_lock_shared(vols);
    for (size_t i = 0; i < vols->n; i++)
        fn(vols->v[i], arg);
    volumes_unlock(vols);
}

struct replica_msg {
    uint32_t from, node;
    uint8_t state;
    uint64_t first, last;
};

static int apply_replica(struct volume *v, void *arg)
{
    struct replica_msg *m = arg;
    return v->mv ? mirror_replica_request(v->mv, m->from, m->node, m->state, m->first, m->last) : 0;
}

int volumes_replica(struct volumes *vols, uint32_t from, uint32_t vid, uint32_t node, uint8_t state,
                    uint64_t first, uint64_t last)
{
    struct replica_msg m = {from, node, state, first, last};
    int r = volumes_with(vols, vid, apply_replica, &m);
    return r == -ENOENT ? 0 : r;
}

struct left_msg {
    uint32_t node;
    const struct pol_key *lost;
    size_t nlost;
    const uint32_t *members;
    size_t nmembers;
    int changed;
};

static void apply_left(struct volume *v, void *arg)
{
    struct left_msg *m = arg;
    if (v->mv && mirror_node_left(v->mv, m->node, m->lost, m->nlost, m->members, m->nmembers) > 0)
        m->changed = 1;
    /* Its rollback ends with it (half done: see rollback.c). */
    if (atomic_compare_exchange_strong(&v->fenced_by, &(unsigned){m->node}, 0))
        qb_log(LOG_WARNING,
               "volume \"%s\": node %u left during its rollback: clients may open "
               "it again; roll it back again for the snapshot's data",
               v->name, m->node);
}

int volumes_node_left(struct volumes *vols, uint32_t node, const struct pol_key *lost, size_t nlost,
                      const uint32_t *members, size_t nmembers)
{
    struct left_msg m = {node, lost, nlost, members, nmembers, 0};
    volumes_each(vols, apply_left, &m);
    return m.changed;
}

/* The volume called name, with a reference the caller drops; NULL if none. */
struct volume *volumes_get(struct volumes *vols, const char *name)
{
    volumes_lock_shared(vols);
    size_t idx;
    struct volume *v = find(vols, name, &idx) ? vols->v[idx] : NULL;
    if (v)
        volume_ref(v);
    volumes_unlock(vols);
    return v;
}

int volumes_mirrored(struct volumes *vols, const char *name, int (*fn)(struct mvol *mv, void *arg),
                     void *arg)
{
    struct volume *v = volumes_get(vols, name);
    if (!v)
        return -ENOENT;
    int r = v->mv ? fn(v->mv, arg) : -ENODEV;
    volume_unref(v);
    return r;
}

int volumes_set_replicas(struct volumes *vols, const char *name, bool fixed,
                         const struct store_replica *r, uint32_t n)
{
    struct volume *v = volumes_get(vols, name);
    if (!v)
        return -ENOENT;
    int e = v->mv ? mirror_replicas_load(v->mv, r, n, fixed) : 0;
    volume_unref(v);
    return e;
}

void volumes_set_policing(struct volumes *vols, struct policing *pc)
{
    tokens_set_policing(vols->tokens, pc);
    volumes_lock_excl(vols);
    vols->pc = pc;
    for (size_t i = 0; i < vols->n; i++)
        vols->v[i]->pc = pc;
    volumes_unlock(vols);
}

/* fn may be slow (it writes to a client), and describing a volume takes
 * the mirror's and policing's locks, so both run outside the lock that
 * admin commands wait for, on references to the volumes. */
static int cat_list(void *ctx, const struct nbd_client *who,
                    int (*fn)(void *arg, const char *name, const char *description), void *arg)
{
    struct volumes *vols = ctx;
    volumes_lock_shared(vols);
    size_t n = 0;
    struct volume **copy = calloc(vols->n ? vols->n : 1, sizeof(*copy));
    for (size_t i = 0; copy != NULL && i < vols->n; i++) {
        if (access_of(vols->access, svol_uuid(vols->v[i]->sv), who) == ACCESS_NONE)
            continue;
        copy[n] = vols->v[i];
        volume_ref(copy[n++]);
    }
    volumes_unlock(vols);
    if (copy == NULL) {
        qb_log(LOG_ERR, "volumes: list exports: out of memory");
        return -ENOMEM;
    }
    int r = 0;
    for (size_t i = 0; i < n; i++) {
        if (r == 0) {
            const char *d = describe(copy[i]);
            r = fn(arg, copy[i]->name, d);
            describe_free(copy[i], d);
        }
        volume_unref(copy[i]);
    }
    free(copy);
    return r;
}

const struct nbd_catalog_ops volumes_catalog = {
    .open = cat_open,
    .close = cat_close,
    .still = cat_still,
    .list = cat_list,
};
