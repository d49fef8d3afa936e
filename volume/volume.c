/* volume.c - the registry of volumes and the local I/O path of each one.
 *
 * The registry maps names to open volumes (one data fd each) and is what
 * the daemon's admin calls change; the NBD server reaches it through
 * volumes_catalog. Once a connection has opened a volume, its requests go
 * straight to the data file with positioned syscalls: no registry lock, no
 * allocation, nothing shared but atomics, so many connections and threads
 * run in parallel and the path does no more than nbdkit's file plugin.
 *
 * Lifetime: a volume is freed only by volumes_delete(), which refuses while
 * connections are open, or by volumes_close(), which the daemon calls once
 * the NBD server has shut down. So an opened export's handle stays valid
 * until its close() without reference counting on the I/O path.
 */
#include "volume/volume.h"
#include "mirror/engine.h"
#include "mirror/replicas.h"
#include "nbd-server/protocol.h"
#include "policing/protocol.h"
#include "common/iov.h"
#include "store/store.h"
#include "volume/volume_int.h"

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

static void lock_shared(struct volumes *vols)
{
    lock_check(pthread_rwlock_rdlock(&vols->lock), "rdlock");
}

static void lock_excl(struct volumes *vols)
{
    lock_check(pthread_rwlock_wrlock(&vols->lock), "wrlock");
}

static void unlock(struct volumes *vols)
{
    lock_check(pthread_rwlock_unlock(&vols->lock), "unlock");
}

/* ---- the I/O path ---------------------------------------------------- */

/* The protocol checked against the size it announced; a forced shrink
 * since (impossible while connected today, but cheap to guard) must not
 * let a request reach past the new end and extend the file. */
static bool in_range(struct volume *v, uint32_t count, uint64_t offset)
{
    uint64_t size = atomic_load_explicit(&v->size, memory_order_acquire);
    return offset <= size && count <= size - offset;
}

/* Remembers that the file system refused a mode, saying so once. */
static void learn_unsupported(struct volume *v, atomic_bool *flag, const char *what,
                              const char *instead)
{
    if (!atomic_exchange_explicit(flag, true, memory_order_relaxed))
        qb_log(LOG_INFO, "volume \"%s\": %s unsupported by the file system, %s instead",
               v->rec.name, what, instead);
}

static uint64_t vol_size(void *h)
{
    struct volume *v = h;
    return atomic_load_explicit(&v->size, memory_order_acquire);
}

/* A read that must not wait for the disk: all of it from the page cache,
 * or -EAGAIN. A short read means part is not cached: also -EAGAIN, the
 * caller reads again the slow way (a read has no side effect to undo). */
static int pread_nowait(struct volume *v, void *buf, uint32_t count, uint64_t offset)
{
    if (atomic_load_explicit(&v->no_nowait, memory_order_relaxed))
        return -EAGAIN;
    struct iovec iov = {.iov_base = buf, .iov_len = count};
    ssize_t n;
    do {
        n = preadv2(v->fd, &iov, 1, (off_t)offset, RWF_NOWAIT);
    } while (n < 0 && errno == EINTR);
    if (n == (ssize_t)count)
        return 0;
    if (n < 0 && (errno == EOPNOTSUPP || errno == ENOSYS))
        learn_unsupported(v, &v->no_nowait, "preadv2(RWF_NOWAIT)", "a thread per read");
    return n < 0 && errno != EAGAIN && errno != EOPNOTSUPP && errno != ENOSYS ? -errno : -EAGAIN;
}

static int vol_pread(void *h, void *buf, uint32_t count, uint64_t offset, unsigned flags)
{
    struct volume *v = h;
    if (!in_range(v, count, offset))
        return -EINVAL;
    if (v->mirror && !mirror_local_current(v))
        return flags & NBD_IO_NOWAIT ? -EAGAIN : mirror_read(v, buf, count, offset);
    if ((flags & NBD_IO_NOWAIT) && !v->in_memory)
        return pread_nowait(v, buf, count, offset);
    return volume_local_read(v, buf, count, offset);
}

int volume_local_read(struct volume *v, void *buf, uint32_t count, uint64_t offset)
{
    char *p = buf;
    while (count > 0) {
        ssize_t n = pread(v->fd, p, count, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO; /* the data file is shorter than its meta says */
        p += n;
        count -= (uint32_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

static int sync_data(struct volume *v)
{
    return fdatasync(v->fd) < 0 ? -errno : 0;
}

int volume_local_sync(struct volume *v)
{
    return sync_data(v);
}

/* One pwritev, durable if *dsync; clears *dsync if the kernel can't. */
static ssize_t pwritev_once(struct volume *v, const struct iovec *iov, int cnt, uint64_t offset,
                            bool *dsync)
{
    if (*dsync) {
        ssize_t n = pwritev2(v->fd, iov, cnt, (off_t)offset, RWF_DSYNC);
        if (n >= 0 || (errno != EOPNOTSUPP && errno != ENOSYS))
            return n;
        learn_unsupported(v, &v->no_dsync, "pwritev2(RWF_DSYNC)", "pwrite + fdatasync");
        *dsync = false;
    }
    return pwritev(v->fd, iov, cnt, (off_t)offset);
}

/* Writes every byte of iov (which it consumes), resuming after short
 * writes and signals; with fua, durably. */
static int write_iov(struct volume *v, struct iovec *iov, int cnt, uint64_t offset, bool fua)
{
    bool dsync = fua && !atomic_load_explicit(&v->no_dsync, memory_order_relaxed);
    while (cnt > 0) {
        ssize_t n = pwritev_once(v, iov, cnt, offset, &dsync);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        offset += (uint64_t)n;
        iov_advance(&iov, &cnt, (size_t)n);
    }
    return fua && !dsync ? sync_data(v) : 0;
}

/* Takes write priority on the regions a write touches (cluster mode). */
static int guard_begin(struct volume *v, uint64_t offset, uint32_t count, unsigned flags,
                       struct pol_write *w)
{
    if (atomic_load_explicit(&v->gone, memory_order_relaxed))
        return -ESHUTDOWN;
    if (!v->pc)
        return 0;
    return policing_write_begin(v->pc, v->vid, offset, count, flags & NBD_IO_NOWAIT, w);
}

static int guard_end(struct volume *v, struct pol_write *w, int result)
{
    if (v->pc)
        policing_write_end(v->pc, w);
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
    return (v->mirror && !a) || ((flags & NBD_IO_FUA) && !v->in_memory);
}

/* A mirrored write finishing asynchronously: it holds its write priority
 * until the engine reports it done. */
struct vol_async {
    struct nbd_async a; /* the engine's */
    struct nbd_async *outer;
    struct volume *v;
    struct pol_write w;
};

static void vol_async_done(struct nbd_async *a, int err)
{
    struct vol_async *va = (struct vol_async *)a;
    struct nbd_async *outer = va->outer;
    guard_end(va->v, &va->w, 0);
    free(va);
    outer->done(outer, err);
}

typedef int (*mirror_fn)(struct volume *v, const void *buf, uint32_t count, uint64_t offset,
                         unsigned flags, struct nbd_async *a);

static int mirror_zero_fn(struct volume *v, const void *buf, uint32_t count, uint64_t offset,
                          unsigned flags, struct nbd_async *a)
{
    (void)buf;
    return mirror_zero(v, count, offset, flags, a);
}

/* A write through the mirror engine under write priority; with a, it may
 * complete asynchronously (-EINPROGRESS). */
static int mirrored(struct volume *v, mirror_fn fn, const void *buf, uint32_t count,
                    uint64_t offset, unsigned flags, struct nbd_async *a)
{
    struct pol_write w;
    if (!a) {
        int r = guard_begin(v, offset, count, flags, &w);
        return r < 0 ? r : guard_end(v, &w, fn(v, buf, count, offset, flags, NULL));
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
    r = fn(v, buf, count, offset, flags, &va->a);
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
    if (v->mirror)
        return mirrored(v, mirror_write, buf, count, offset, flags, a);
    struct pol_write w;
    int r = guard_begin(v, offset, count, flags, &w);
    if (r < 0)
        return r;
    return guard_end(v, &w, volume_local_write(v, buf, count, offset, flags & NBD_IO_FUA));
}

int volume_local_write(struct volume *v, const void *buf, uint32_t count, uint64_t offset, bool fua)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = count};
    return write_iov(v, &iov, 1, offset, fua);
}

static int vol_flush(void *h, unsigned flags)
{
    struct volume *v = h;
    if (must_wait(v, flags | NBD_IO_FUA, NULL))
        return -EAGAIN;
    return v->mirror ? mirror_flush(v) : sync_data(v);
}

/* fallocate with mode, or -ENOTSUP (remembered in *flag) if the file
 * system has no such mode. */
static int try_fallocate(struct volume *v, int mode, atomic_bool *flag, const char *what,
                         uint32_t count, uint64_t offset)
{
    if (atomic_load_explicit(flag, memory_order_relaxed))
        return -ENOTSUP;
    int r;
    do {
        r = fallocate(v->fd, mode, (off_t)offset, (off_t)count);
    } while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0;
    if (errno == EOPNOTSUPP) {
        learn_unsupported(v, flag, what, "the next way down");
        return -ENOTSUP;
    }
    return -errno;
}

static int write_zeroes(struct volume *v, uint32_t count, uint64_t offset)
{
    static const char zeroes[64 * 1024];
    struct iovec iov[16];
    while (count > 0) {
        int cnt = 0;
        uint32_t batch = 0;
        for (; cnt < 16 && batch < count; cnt++) {
            uint32_t len = count - batch < sizeof(zeroes) ? count - batch : sizeof(zeroes);
            iov[cnt] = (struct iovec){.iov_base = (void *)zeroes, .iov_len = len};
            batch += len;
        }
        int r = write_iov(v, iov, cnt, offset, false);
        if (r < 0)
            return r;
        count -= batch;
        offset += batch;
    }
    return 0;
}

/* The cheapest way the file system offers to make a range read zeroes:
 * a hole if allowed, else zeroed extents, else (unless fast) zero data. */
static int make_zero(struct volume *v, uint32_t count, uint64_t offset, unsigned flags)
{
    bool may_trim = flags & NBD_IO_MAY_TRIM, fast = flags & NBD_IO_FAST;
    int r = -ENOTSUP;
    if (may_trim)
        r = try_fallocate(v, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, &v->no_punch,
                          "fallocate(PUNCH_HOLE)", count, offset);
    if (r == -ENOTSUP)
        r = try_fallocate(v, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, &v->no_zero_range,
                          "fallocate(ZERO_RANGE)", count, offset);
    if (r == -ENOTSUP && !fast && (flags & NBD_IO_NOWAIT) && count > NOWAIT_ZERO_MAX)
        return -EAGAIN;
    if (r == -ENOTSUP && !fast)
        r = write_zeroes(v, count, offset);
    return r;
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
    if (v->mirror)
        return mirrored(v, mirror_zero_fn, NULL, count, offset, flags, a);
    struct pol_write w;
    int r = guard_begin(v, offset, count, flags, &w);
    if (r < 0)
        return r;
    r = make_zero(v, count, offset, flags);
    return guard_end(v, &w, r == 0 && (flags & NBD_IO_FUA) ? sync_data(v) : r);
}

int volume_local_wipe(struct volume *v)
{
    uint64_t size = atomic_load(&v->size);
    if (ftruncate(v->fd, 0) < 0 || ftruncate(v->fd, (off_t)size) < 0)
        return -errno;
    return sync_data(v);
}

int volume_local_zero(struct volume *v, uint32_t count, uint64_t offset, unsigned flags)
{
    int r = make_zero(v, count, offset, flags & ~NBD_IO_NOWAIT);
    return r == 0 && (flags & NBD_IO_FUA) ? sync_data(v) : r;
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

/* Readahead is asynchronous: fast whatever the flags. */
static int vol_cache(void *h, uint32_t count, uint64_t offset, unsigned flags)
{
    struct volume *v = h;
    (void)flags;
    if (!in_range(v, count, offset))
        return -EINVAL;
    return -posix_fadvise(v->fd, (off_t)offset, (off_t)count, POSIX_FADV_WILLNEED);
}

/* The extent that starts at pos, cut at end. */
static int extent_at(struct volume *v, uint64_t pos, uint64_t end, struct nbd_extent *e)
{
    off_t data = lseek(v->fd, (off_t)pos, SEEK_DATA);
    if (data < 0 && errno != ENXIO)
        return -errno;
    /* ENXIO: no data from pos to the end of the file. */
    if (data < 0 || (uint64_t)data > pos) {
        uint64_t stop = data < 0 || (uint64_t)data > end ? end : (uint64_t)data;
        *e = (struct nbd_extent){.length = stop - pos, .flags = NBD_EXTENT_HOLE | NBD_EXTENT_ZERO};
        return 0;
    }
    off_t hole = lseek(v->fd, (off_t)pos, SEEK_HOLE);
    if (hole < 0)
        return -errno;
    /* A hole at pos means a trim raced us; "data" claims nothing, so it is
     * always a safe answer. */
    uint64_t stop = (uint64_t)hole <= pos || (uint64_t)hole > end ? end : (uint64_t)hole;
    *e = (struct nbd_extent){.length = stop - pos, .flags = 0};
    return 0;
}

static int vol_extents(void *h, uint32_t count, uint64_t offset, struct nbd_extent *ext,
                       unsigned max)
{
    struct volume *v = h;
    if (count == 0 || max == 0 || !in_range(v, count, offset))
        return -EINVAL;
    uint64_t end = offset + count;
    unsigned n = 0;
    while (offset < end && n < max) {
        struct nbd_extent e;
        int r = extent_at(v, offset, end, &e);
        if (r < 0)
            return n > 0 ? (int)n : r;
        if (n > 0 && ext[n - 1].flags == e.flags)
            ext[n - 1].length += e.length;
        else
            ext[n++] = e;
        offset += e.length;
    }
    return (int)n;
}

/* A mirrored volume sends the copies of the writes run inline together. */
static void vol_batch_begin(void *h)
{
    if (((struct volume *)h)->mirror)
        mirror_gather_begin();
}

static void vol_batch_end(void *h)
{
    if (((struct volume *)h)->mirror)
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
    .batch_begin = vol_batch_begin,
    .batch_end = vol_batch_end,
};

/* ---- the registry ---------------------------------------------------- */

/* Index of name in the sorted array, or where it would go. */
static bool find(struct volumes *vols, const char *name, size_t *idx)
{
    size_t lo = 0, hi = vols->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(vols->v[mid]->rec.name, name);
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
    v->rec = *rec;
    v->store = store;
    int r = store_open_data(store, rec, &v->fd);
    if (r < 0) {
        free(v);
        return r;
    }
    snprintf(v->description, sizeof(v->description), "vsan volume %s (%s)", rec->name, rec->uuid);
    atomic_init(&v->size, rec->size);
    atomic_init(&v->connections, 0);
    atomic_init(&v->no_dsync, false);
    atomic_init(&v->no_punch, false);
    atomic_init(&v->no_zero_range, false);
    atomic_init(&v->no_nowait, false);
    atomic_init(&v->refs, 1);
    atomic_init(&v->gone, false);
    v->vid = policing_volume_id(rec->uuid);
    struct statfs fs;
    v->in_memory =
        fstatfs(v->fd, &fs) == 0 && (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);
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
    mirror_volume_detach(v);
    if (close(v->fd) < 0)
        qb_log(LOG_WARNING, "volume \"%s\": close its data file: %s", v->rec.name, strerror(errno));
    free(v);
}

static int fill_info(struct volume *v, struct volume_info *out)
{
    struct stat sb;
    if (fstat(v->fd, &sb) < 0) {
        int err = errno;
        qb_log(LOG_ERR, "volume \"%s\": fstat its data file: %s", v->rec.name, strerror(err));
        return -err;
    }
    *out = (struct volume_info){
        .size = v->rec.size,
        .allocated = (uint64_t)sb.st_blocks * 512,
        .generation = v->rec.generation,
        .connections = atomic_load(&v->connections),
    };
    memcpy(out->name, v->rec.name, sizeof(out->name));
    memcpy(out->uuid, v->rec.uuid, sizeof(out->uuid));
    if (v->mv)
        mirror_replicas_copy(v, out->replicas, &out->nreplicas);
    else
        out->nreplicas = v->rec.nreplicas;
    if (!v->mv)
        memcpy(out->replicas, v->rec.replicas, sizeof(out->replicas));
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
    r = store_list(store, &recs, &n);
    if (r == 0) {
        r = load(vols, recs, n);
        free(recs);
    }
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
    pthread_rwlock_destroy(&vols->lock);
    free(vols);
}

/* ---- admin operations ------------------------------------------------ */

/* Registers a volume the store has just created; undoes the creation if
 * its data file can't be opened, so what is on disk is what is served. */
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

int volumes_create(struct volumes *vols, const char *name, uint64_t size, const char *uuid,
                   struct volume_info *out)
{
    return volumes_create_replicated(vols, name, size, uuid, NULL, 0, out);
}

/* Sets the first replica set (every node current) before anyone sees it. */
static int init_replicas(struct volumes *vols, struct volume *v, const uint32_t *nodes, size_t n)
{
    if (n > 0) {
        replica_init(&v->rec, nodes, n);
        int r = store_update(vols->store, &v->rec);
        if (r < 0)
            return r;
    }
    return vols->mirror ? mirror_volume_attach(vols->mirror, v) : 0;
}

int volumes_create_replicated(struct volumes *vols, const char *name, uint64_t size,
                              const char *uuid, const uint32_t *nodes, size_t n,
                              struct volume_info *out)
{
    if (!check_name(name) || !check_size(name, size))
        return -EINVAL;
    lock_excl(vols);
    size_t idx;
    int r = 0;
    if (find(vols, name, &idx)) {
        qb_log(LOG_WARNING, "volume \"%s\": create: a volume of that name exists", name);
        r = -EEXIST;
    } else if (reserve(vols) < 0) {
        qb_log(LOG_ERR, "volume \"%s\": create: out of memory", name);
        r = -ENOMEM;
    }
    struct store_volume rec;
    struct volume *v = NULL;
    if (r == 0)
        r = store_create(vols->store, name, size, uuid, &rec);
    if (r == 0)
        r = add_created(vols, idx, &rec, &v);
    if (r == 0)
        v->pc = vols->pc;
    if (r == 0)
        r = init_replicas(vols, v, nodes, n);
    if (r == 0 && out != NULL)
        r = fill_info(v, out);
    unlock(vols);
    return r;
}

int volumes_delete(struct volumes *vols, const char *name, bool even_if_busy)
{
    lock_excl(vols);
    size_t idx;
    struct volume *v = NULL;
    int r = 0;
    if (!find(vols, name, &idx)) {
        r = -ENOENT;
    } else if (!even_if_busy && atomic_load(&vols->v[idx]->connections) > 0) {
        qb_log(LOG_WARNING, "volume \"%s\": delete refused: %u NBD connection(s) open", name,
               atomic_load(&vols->v[idx]->connections));
        r = -EBUSY;
    } else {
        r = store_delete(vols->store, &vols->v[idx]->rec);
        if (r == 0) {
            v = vols->v[idx];
            atomic_store(&v->gone, true);
            remove_at(vols, idx);
        }
    }
    unlock(vols);
    if (v != NULL)
        volume_unref(v);
    return r;
}

/* Under the exclusive lock. */
static int resize_locked(struct volumes *vols, struct volume *v, uint64_t size, bool force,
                         bool even_if_busy)
{
    if (size < v->rec.size) {
        if (!force) {
            qb_log(LOG_WARNING,
                   "volume \"%s\": shrinking destroys data past the new end; "
                   "refused without force",
                   v->rec.name);
            return -ERANGE;
        }
        unsigned conns = atomic_load(&v->connections);
        if (conns > 0 && !even_if_busy) {
            qb_log(LOG_WARNING, "volume \"%s\": shrink refused: %u NBD connection(s) open",
                   v->rec.name, conns);
            return -EBUSY;
        }
    }
    int r = store_resize(vols->store, &v->rec, size);
    if (r < 0)
        return r;
    /* Released after the data file has its new length. */
    atomic_store_explicit(&v->size, v->rec.size, memory_order_release);
    return 0;
}

int volumes_resize(struct volumes *vols, const char *name, uint64_t size, bool force,
                   bool even_if_busy, struct volume_info *out)
{
    if (!check_size(name, size))
        return -EINVAL;
    lock_excl(vols);
    size_t idx;
    int r = find(vols, name, &idx) ? resize_locked(vols, vols->v[idx], size, force, even_if_busy)
                                   : -ENOENT;
    if (r == 0 && out != NULL)
        r = fill_info(vols->v[idx], out);
    unlock(vols);
    return r;
}

int volumes_info(struct volumes *vols, const char *name, struct volume_info *out)
{
    lock_shared(vols);
    size_t idx;
    int r = find(vols, name, &idx) ? fill_info(vols->v[idx], out) : -ENOENT;
    unlock(vols);
    return r;
}

size_t volumes_count(struct volumes *vols)
{
    lock_shared(vols);
    size_t n = vols->n;
    unlock(vols);
    return n;
}

int volumes_list(struct volumes *vols, struct volume_info **out, size_t *n)
{
    lock_shared(vols);
    struct volume_info *infos = calloc(vols->n ? vols->n : 1, sizeof(*infos));
    int r = infos == NULL ? -ENOMEM : 0;
    if (r < 0)
        qb_log(LOG_ERR, "volumes: list: out of memory");
    for (size_t i = 0; r == 0 && i < vols->n; i++)
        r = fill_info(vols->v[i], &infos[i]);
    size_t count = vols->n;
    unlock(vols);
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

/* The export's description, fresh for each connection: the volume, then
 * the NBD addresses of its current replicas, which vsan-fuse reads to know
 * where to go when the node it uses fails:
 *   vsan volume NAME (UUID) replicas=1@198.51.100.11:10809,3@...:10809
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
        mirror_replicas_copy(v, reps, &n);
        for (uint32_t i = 0; i < n; i++)
            if (reps[i].state == REPLICA_CURRENT)
                describe_replica(v, reps[i].node, d, &len, len == base ? '=' : ',');
    } else {
        describe_replica(v, policing_self(v->pc), d, &len, '=');
    }
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

static int cat_open(void *ctx, const char *name, struct nbd_export *exp)
{
    struct volumes *vols = ctx;
    lock_shared(vols);
    size_t idx;
    struct volume *v = find(vols, name, &idx) ? vols->v[idx] : NULL;
    if (v != NULL) {
        atomic_fetch_add(&v->refs, 1);
        atomic_fetch_add(&v->connections, 1);
    }
    unlock(vols);
    if (v == NULL)
        return -ENOENT;
    *exp = (struct nbd_export){
        .ops = &volume_export_ops,
        .handle = v,
        .description = describe(v),
        .read_only = false,
    };
    return 0;
}

static void cat_close(void *ctx, struct nbd_export *exp)
{
    (void)ctx;
    struct volume *v = exp->handle;
    describe_free(v, exp->description);
    atomic_fetch_sub(&v->connections, 1);
    volume_unref(v);
}

void volumes_set_mirror(struct volumes *vols, struct mirror *m)
{
    lock_excl(vols);
    vols->mirror = m;
    unlock(vols);
}

int volumes_with(struct volumes *vols, uint32_t vid, int (*fn)(struct volume *v, void *arg),
                 void *arg)
{
    lock_shared(vols);
    struct volume *v = NULL;
    for (size_t i = 0; i < vols->n && !v; i++)
        if (vols->v[i]->vid == vid)
            v = vols->v[i];
    if (v)
        volume_ref(v);
    unlock(vols);
    if (!v)
        return -ENOENT;
    int r = fn(v, arg);
    volume_unref(v);
    return r;
}

void volumes_each(struct volumes *vols, void (*fn)(struct volume *v, void *arg), void *arg)
{
    lock_shared(vols);
    for (size_t i = 0; i < vols->n; i++)
        fn(vols->v[i], arg);
    unlock(vols);
}

int volume_update_record(struct volume *v)
{
    return store_update(v->store, &v->rec);
}

struct replica_msg {
    uint32_t from, node;
    uint8_t state;
    uint64_t first, last;
};

static int apply_replica(struct volume *v, void *arg)
{
    struct replica_msg *m = arg;
    return v->mv ? mirror_replica_request(v, m->from, m->node, m->state, m->first, m->last) : 0;
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
    int changed;
};

static void apply_left(struct volume *v, void *arg)
{
    struct left_msg *m = arg;
    if (v->mv && mirror_node_left(v, m->node, m->lost, m->nlost) > 0)
        m->changed = 1;
}

int volumes_node_left(struct volumes *vols, uint32_t node, const struct pol_key *lost, size_t nlost)
{
    struct left_msg m = {node, lost, nlost, 0};
    volumes_each(vols, apply_left, &m);
    return m.changed;
}

/* The volume called name, with a reference the caller drops; NULL if none. */
static struct volume *get_by_name(struct volumes *vols, const char *name)
{
    lock_shared(vols);
    size_t idx;
    struct volume *v = find(vols, name, &idx) ? vols->v[idx] : NULL;
    if (v)
        volume_ref(v);
    unlock(vols);
    return v;
}

int volumes_mirrored(struct volumes *vols, const char *name, int (*fn)(struct volume *v, void *arg),
                     void *arg)
{
    struct volume *v = get_by_name(vols, name);
    if (!v)
        return -ENOENT;
    int r = v->mv ? fn(v, arg) : -ENODEV;
    volume_unref(v);
    return r;
}

int volumes_set_replicas(struct volumes *vols, const char *name, const struct store_replica *r,
                         uint32_t n)
{
    struct volume *v = get_by_name(vols, name);
    if (!v)
        return -ENOENT;
    int e = v->mv ? mirror_replicas_load(v, r, n) : 0;
    volume_unref(v);
    return e;
}

void volumes_set_policing(struct volumes *vols, struct policing *pc)
{
    lock_excl(vols);
    vols->pc = pc;
    for (size_t i = 0; i < vols->n; i++)
        vols->v[i]->pc = pc;
    unlock(vols);
}

/* fn may be slow (it writes to a client), and describing a volume takes
 * the mirror's and policing's locks, so both run outside the lock that
 * admin commands wait for, on references to the volumes. */
static int cat_list(void *ctx, int (*fn)(void *arg, const char *name, const char *description),
                    void *arg)
{
    struct volumes *vols = ctx;
    lock_shared(vols);
    size_t n = vols->n;
    struct volume **copy = calloc(n ? n : 1, sizeof(*copy));
    for (size_t i = 0; copy != NULL && i < n; i++) {
        copy[i] = vols->v[i];
        volume_ref(copy[i]);
    }
    unlock(vols);
    if (copy == NULL) {
        qb_log(LOG_ERR, "volumes: list exports: out of memory");
        return -ENOMEM;
    }
    int r = 0;
    for (size_t i = 0; i < n; i++) {
        if (r == 0) {
            const char *d = describe(copy[i]);
            r = fn(arg, copy[i]->rec.name, d);
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
    .list = cat_list,
};
