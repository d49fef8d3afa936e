/* svol.c - one volume's copy on this node: the record under one lock, and
 * the positioned I/O on its data file (see svol.h).
 *
 * The I/O path does no more than nbdkit's file plugin: one syscall per
 * request where the kernel allows, no lock, no allocation. What the file
 * system refuses once (RWF_DSYNC, a fallocate mode, RWF_NOWAIT) is
 * remembered in an atomic flag so it is not asked again.
 */
#include "store/svol.h"
#include "store/fileio.h"
#include "store/snap.h"
#include "common/iov.h"

#include <qb/qblog.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>

struct svol {
    struct store *st;
    int fd;      /* -1: diskless; set under mu, read lock-free by the I/O calls */
    int retired; /* a detached data file's fd, under mu (svol_detach_data) */
    bool in_memory;
    atomic_uint refs;
    _Atomic uint64_t size;     /* rec.size, for lock-free bounds checks */
    atomic_bool no_dsync;      /* pwritev2(RWF_DSYNC): use pwrite + fdatasync */
    atomic_bool no_punch;      /* FALLOC_FL_PUNCH_HOLE */
    atomic_bool no_zero_range; /* FALLOC_FL_ZERO_RANGE */
    atomic_bool no_nowait;     /* preadv2(RWF_NOWAIT) */
    struct snapset *snaps;     /* copy-on-write before every write and zero */
    pthread_mutex_t mu;        /* guards rec and its commits */
    struct store_volume rec;
    char name[STORE_NAME_MAX + 1]; /* rec's, copied: read without mu */
    char uuid[STORE_UUID_LEN + 1];
};

/* The data file, as a replica added or removed here (svol_attach_data,
 * _detach_data) last set it: -1 for a diskless copy, whose calls then
 * fail with -EBADF (the engine sends no I/O to a copy it does not hold). */
static int fd_of(const struct svol *sv)
{
    return __atomic_load_n(&sv->fd, __ATOMIC_ACQUIRE);
}

static bool in_memory(int fd)
{
    struct statfs fs;
    return fd >= 0 && fstatfs(fd, &fs) == 0 &&
           (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);
}

int svol_open(struct store *st, const struct store_volume *rec, struct svol **out)
{
    struct svol *sv = calloc(1, sizeof *sv);
    if (!sv) {
        qb_log(LOG_ERR, "volume \"%s\": out of memory", rec->name);
        return -ENOMEM;
    }
    int r = store_open_data(st, rec, &sv->fd);
    if (r < 0) {
        free(sv);
        return r;
    }
    sv->retired = -1;
    r = snap_open(st, rec->uuid, rec->name, sv->fd, &sv->snaps);
    if (r < 0) {
        if (sv->fd >= 0)
            close(sv->fd);
        free(sv);
        return r;
    }
    sv->st = st;
    sv->rec = *rec;
    memcpy(sv->name, rec->name, sizeof sv->name);
    memcpy(sv->uuid, rec->uuid, sizeof sv->uuid);
    atomic_init(&sv->refs, 1);
    atomic_init(&sv->size, rec->size);
    pthread_mutex_init(&sv->mu, NULL);
    sv->in_memory = in_memory(sv->fd);
    *out = sv;
    return 0;
}

void svol_ref(struct svol *sv)
{
    atomic_fetch_add(&sv->refs, 1);
}

void svol_unref(struct svol *sv)
{
    if (atomic_fetch_sub(&sv->refs, 1) != 1)
        return;
    snap_close(sv->snaps);
    if (sv->fd >= 0 && close(sv->fd) < 0)
        qb_log(LOG_WARNING, "volume \"%s\": close its data file: %s", sv->name, strerror(errno));
    if (sv->retired >= 0)
        close(sv->retired);
    pthread_mutex_destroy(&sv->mu);
    free(sv);
}

const char *svol_name(const struct svol *sv)
{
    return sv->name;
}

const char *svol_uuid(const struct svol *sv)
{
    return sv->uuid;
}

bool svol_in_memory(const struct svol *sv)
{
    return sv->in_memory;
}

uint64_t svol_size(const struct svol *sv)
{
    return atomic_load_explicit(&sv->size, memory_order_acquire);
}

/* ---- the record ---------------------------------------------------------- */

void svol_record(struct svol *sv, struct store_volume *out)
{
    pthread_mutex_lock(&sv->mu);
    *out = sv->rec;
    pthread_mutex_unlock(&sv->mu);
}

/* With mu held: next (the record to commit) with the replica set given. */
static void with_replicas(struct store_volume *next, const struct store_replica *replicas,
                          uint32_t n)
{
    next->nreplicas = n < STORE_REPLICAS_MAX ? n : STORE_REPLICAS_MAX;
    memset(next->replicas, 0, sizeof next->replicas);
    memcpy(next->replicas, replicas, next->nreplicas * sizeof *replicas);
}

int svol_set_state(struct svol *sv, const struct store_volume *state)
{
    pthread_mutex_lock(&sv->mu);
    struct store_volume next = sv->rec;
    with_replicas(&next, state->replicas, state->nreplicas);
    next.local = state->local;
    next.fixed = state->fixed;
    int r = store_update(sv->st, &next);
    if (r == 0)
        sv->rec = next;
    pthread_mutex_unlock(&sv->mu);
    return r;
}

int svol_bump_generation(struct svol *sv)
{
    pthread_mutex_lock(&sv->mu);
    struct store_volume next = sv->rec;
    next.generation++;
    int r = store_update(sv->st, &next);
    if (r == 0)
        sv->rec = next;
    pthread_mutex_unlock(&sv->mu);
    return r;
}

int svol_resize(struct svol *sv, uint64_t size)
{
    pthread_mutex_lock(&sv->mu);
    int r = 0;
    /* A snapshot keeps its size; chunks past the live end could not be
     * copied on write. */
    if (size < sv->rec.size && snap_count(sv->snaps) > 0) {
        qb_log(LOG_ERR, "volume \"%s\": can't shrink a volume that has %u snapshots", sv->name,
               snap_count(sv->snaps));
        r = -ENOTEMPTY;
    }
    if (r == 0)
        r = store_resize(sv->st, &sv->rec, size);
    if (r == 0)
        atomic_store_explicit(&sv->size, sv->rec.size, memory_order_release);
    pthread_mutex_unlock(&sv->mu);
    return r;
}

int svol_attach_data(struct svol *sv, const struct store_volume *state)
{
    pthread_mutex_lock(&sv->mu);
    struct store_volume next = sv->rec;
    with_replicas(&next, state->replicas, state->nreplicas);
    next.local = STORE_LOCAL_REBUILD;
    next.fixed = state->fixed;
    int fd = -1;
    int r = sv->fd >= 0 ? -EEXIST : store_data_attach(sv->st, &next);
    if (r == 0)
        r = store_open_data(sv->st, &next, &fd);
    if (r == 0)
        r = store_update(sv->st, &next);
    if (r == 0) {
        sv->rec = next;
        sv->in_memory = in_memory(fd);
        __atomic_store_n(&sv->fd, fd, __ATOMIC_RELEASE);
        snap_set_live(sv->snaps, fd);
    } else if (fd >= 0) {
        close(fd);
    }
    if (r < 0 && r != -EEXIST)
        store_data_detach(sv->st, &next);
    pthread_mutex_unlock(&sv->mu);
    return r;
}

int svol_detach_data(struct svol *sv, const struct store_volume *state)
{
    pthread_mutex_lock(&sv->mu);
    struct store_volume next = sv->rec;
    with_replicas(&next, state->replicas, state->nreplicas);
    next.local = STORE_LOCAL_DISKLESS;
    next.fixed = state->fixed;
    int r = store_update(sv->st, &next);
    if (r == 0) {
        sv->rec = next;
        snap_set_live(sv->snaps, -1);
        if (sv->fd >= 0) {
            /* The one retired before: a whole add and rebuild ago. */
            if (sv->retired >= 0)
                close(sv->retired);
            sv->retired = sv->fd;
            __atomic_store_n(&sv->fd, -1, __ATOMIC_RELEASE);
            store_data_detach(sv->st, &next);
        }
    }
    pthread_mutex_unlock(&sv->mu);
    return r;
}

int svol_empty_snapshots(struct svol *sv)
{
    return snap_empty(sv->snaps);
}

int svol_delete(struct svol *sv)
{
    pthread_mutex_lock(&sv->mu);
    int r = store_delete(sv->st, &sv->rec);
    /* The volume is gone with its meta: snapshot files a failure leaves
     * are a leak (uuids are never reused), not a volume. */
    if (r == 0 && snap_remove_all(sv->snaps) < 0)
        qb_log(LOG_WARNING, "volume \"%s\": deleted; some of its snapshot files stay", sv->name);
    pthread_mutex_unlock(&sv->mu);
    return r;
}

struct snapset *svol_snapshots(struct svol *sv)
{
    return sv->snaps;
}

int svol_snapshot_create(struct svol *sv, uint64_t id, const char *name, int64_t time,
                         struct snap_info *out)
{
    pthread_mutex_lock(&sv->mu);
    int r = snap_create(sv->snaps, id, name, sv->rec.size, time, out);
    pthread_mutex_unlock(&sv->mu);
    return r;
}

int svol_allocated(struct svol *sv, uint64_t *bytes)
{
    *bytes = 0;
    if (fd_of(sv) < 0)
        return 0; /* diskless: nothing here */
    struct stat sb;
    if (fstat(fd_of(sv), &sb) < 0) {
        int err = errno;
        qb_log(LOG_ERR, "volume \"%s\": fstat its data file: %s", sv->name, strerror(err));
        return -err;
    }
    *bytes = (uint64_t)sb.st_blocks * 512;
    return 0;
}

/* ---- I/O ----------------------------------------------------------------- */

/* Remembers that the file system refused a mode, saying so once. */
static void learn_unsupported(struct svol *sv, atomic_bool *flag, const char *what,
                              const char *instead)
{
    if (!atomic_exchange_explicit(flag, true, memory_order_relaxed))
        qb_log(LOG_INFO, "volume \"%s\": %s unsupported by the file system, %s instead", sv->name,
               what, instead);
}

/* A read that must not wait for the disk: all of it from the page cache,
 * or -EAGAIN. A short read means part is not cached: also -EAGAIN, the
 * caller reads again the slow way (a read has no side effect to undo).
 * FUSE answers RWF_NOWAIT with EOPNOTSUPP: "would block", for good. */
static int read_nowait(struct svol *sv, void *buf, uint32_t count, uint64_t offset)
{
    if (atomic_load_explicit(&sv->no_nowait, memory_order_relaxed))
        return -EAGAIN;
    struct iovec iov = {.iov_base = buf, .iov_len = count};
    ssize_t n;
    do {
        n = preadv2(fd_of(sv), &iov, 1, (off_t)offset, RWF_NOWAIT);
    } while (n < 0 && errno == EINTR);
    if (n == (ssize_t)count)
        return 0;
    if (n < 0 && (errno == EOPNOTSUPP || errno == ENOSYS))
        learn_unsupported(sv, &sv->no_nowait, "preadv2(RWF_NOWAIT)", "a thread per read");
    return n < 0 && errno != EAGAIN && errno != EOPNOTSUPP && errno != ENOSYS ? -errno : -EAGAIN;
}

int svol_read(struct svol *sv, void *buf, uint32_t count, uint64_t offset, unsigned flags)
{
    if ((flags & SVOL_NOWAIT) && !sv->in_memory)
        return read_nowait(sv, buf, count, offset);
    /* -EIO if the data file is shorter than its meta says. */
    return fileio_pread(fd_of(sv), buf, count, offset);
}

int svol_sync(struct svol *sv)
{
    return fdatasync(fd_of(sv)) < 0 ? -errno : 0;
}

/* One pwritev, durable if *dsync; clears *dsync if the kernel can't. */
static ssize_t pwritev_once(struct svol *sv, const struct iovec *iov, int cnt, uint64_t offset,
                            bool *dsync)
{
    if (*dsync) {
        ssize_t n = pwritev2(fd_of(sv), iov, cnt, (off_t)offset, RWF_DSYNC);
        if (n >= 0 || (errno != EOPNOTSUPP && errno != ENOSYS))
            return n;
        learn_unsupported(sv, &sv->no_dsync, "pwritev2(RWF_DSYNC)", "pwrite + fdatasync");
        *dsync = false;
    }
    return pwritev(fd_of(sv), iov, cnt, (off_t)offset);
}

/* Writes every byte of iov (which it consumes), resuming after short
 * writes and signals; with fua, durably. */
static int write_iov(struct svol *sv, struct iovec *iov, int cnt, uint64_t offset, bool fua)
{
    bool dsync = fua && !atomic_load_explicit(&sv->no_dsync, memory_order_relaxed);
    while (cnt > 0) {
        ssize_t n = pwritev_once(sv, iov, cnt, offset, &dsync);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        offset += (uint64_t)n;
        iov_advance(&iov, &cnt, (size_t)n);
    }
    return fua && !dsync ? svol_sync(sv) : 0;
}

int svol_write(struct svol *sv, const void *buf, uint32_t count, uint64_t offset, unsigned flags)
{
    int r = snap_cow(sv->snaps, offset, count, false);
    if (r < 0)
        return r;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = count};
    return write_iov(sv, &iov, 1, offset, flags & SVOL_FUA);
}

/* fallocate with mode, or -ENOTSUP (remembered in *flag) if the file
 * system has no such mode. */
static int try_fallocate(struct svol *sv, int mode, atomic_bool *flag, const char *what,
                         uint32_t count, uint64_t offset)
{
    if (atomic_load_explicit(flag, memory_order_relaxed))
        return -ENOTSUP;
    int r;
    do {
        r = fallocate(fd_of(sv), mode, (off_t)offset, (off_t)count);
    } while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0;
    if (errno == EOPNOTSUPP) {
        learn_unsupported(sv, flag, what, "the next way down");
        return -ENOTSUP;
    }
    return -errno;
}

static int write_zeroes(struct svol *sv, uint32_t count, uint64_t offset)
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
        int r = write_iov(sv, iov, cnt, offset, false);
        if (r < 0)
            return r;
        count -= batch;
        offset += batch;
    }
    return 0;
}

/* A hole if allowed, else zeroed extents, else (unless fast) zero data. */
static int make_zero(struct svol *sv, uint32_t count, uint64_t offset, unsigned flags)
{
    bool may_trim = flags & SVOL_MAY_TRIM, fast = flags & SVOL_FAST;
    int r = -ENOTSUP;
    if (may_trim)
        r = try_fallocate(sv, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, &sv->no_punch,
                          "fallocate(PUNCH_HOLE)", count, offset);
    if (r == -ENOTSUP)
        r = try_fallocate(sv, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, &sv->no_zero_range,
                          "fallocate(ZERO_RANGE)", count, offset);
    if (r == -ENOTSUP && !fast && (flags & SVOL_NOWAIT) && count > SVOL_NOWAIT_ZERO_MAX)
        return -EAGAIN;
    if (r == -ENOTSUP && !fast)
        r = write_zeroes(sv, count, offset);
    return r;
}

int svol_zero(struct svol *sv, uint32_t count, uint64_t offset, unsigned flags)
{
    int r = snap_cow(sv->snaps, offset, count, flags & SVOL_NOWAIT);
    if (r == 0)
        r = make_zero(sv, count, offset, flags);
    return r == 0 && (flags & SVOL_FUA) ? svol_sync(sv) : r;
}

int svol_wipe(struct svol *sv)
{
    uint64_t size = svol_size(sv);
    if (ftruncate(fd_of(sv), 0) < 0 || ftruncate(fd_of(sv), (off_t)size) < 0)
        return -errno;
    return svol_sync(sv);
}

int svol_cache(struct svol *sv, uint32_t count, uint64_t offset)
{
    return -posix_fadvise(fd_of(sv), (off_t)offset, (off_t)count, POSIX_FADV_WILLNEED);
}

int svol_extents(struct svol *sv, uint32_t count, uint64_t offset, bool rough,
                 struct svol_extent *ext, unsigned max)
{
    uint64_t end = offset + count;
    unsigned n = 0;
    while (offset < end && n < max) {
        struct svol_extent e;
        int r = fileio_extent(fd_of(sv), offset, end, rough, &e.length, &e.hole);
        if (r < 0)
            return n > 0 ? (int)n : r;
        if (n > 0 && ext[n - 1].hole == e.hole)
            ext[n - 1].length += e.length;
        else
            ext[n++] = e;
        offset += e.length;
    }
    return (int)n;
}
