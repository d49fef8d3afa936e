/* fs.c - the FUSE operations of vsan-fuse (see fs.h), on libfuse3's
 * high-level API: paths are one level deep and files never change shape,
 * so the path-based API costs nothing and keeps each operation a few
 * lines; libfuse runs them on its thread pool, and the clients are
 * thread-safe.
 *
 * Files are opened with direct_io: every read and write reaches vsand, so
 * the page cache never serves data another client changed through another
 * node, and an fsync has nothing of ours left to write back.
 *
 * A volume's size changes with a resize, committed on every node (README,
 * "Configuration epochs"): the watcher (fs_watch_start) re-reads every
 * volume's description each FS_WATCH_S seconds and invalidates the
 * kernel's attributes of a file whose size moved, so `stat` shows it
 * without a remount; a read or write past the end known re-reads it at
 * once, so a write past the old end succeeds as soon as vsand took the
 * grow.
 */
#include "fuse/fs.h"

#include <qb/qblog.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct fs *fs_get(void)
{
    return fuse_get_context()->private_data;
}

/* The volume a path names, or NULL. */
static struct vclient *lookup(const char *path)
{
    struct fs *fs = fs_get();
    if (path[0] != '/')
        return NULL;
    for (size_t i = 0; i < fs->n; i++)
        if (strcmp(path + 1, vc_name(fs->vols[i])) == 0)
            return fs->vols[i];
    return NULL;
}

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)conn;
    cfg->direct_io = 1;
    cfg->kernel_cache = 0;
    /* A size changes only with a resize, and the watcher invalidates the
     * file's attributes then. */
    cfg->attr_timeout = 3600;
    cfg->entry_timeout = 3600;
    return fuse_get_context()->private_data;
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = fs_get();
    memset(st, 0, sizeof *st);
    st->st_uid = getuid();
    st->st_gid = getgid();
    st->st_atime = st->st_mtime = st->st_ctime = fs->mounted;
    if (strcmp(path, "/") == 0) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
        return 0;
    }
    struct vclient *vc = lookup(path);
    if (!vc)
        return -ENOENT;
    st->st_mode = S_IFREG | 0600;
    st->st_nlink = 1;
    st->st_size = (off_t)vc_size(vc);
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)((vc_size(vc) + 511) / 512);
    return 0;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)off;
    (void)fi;
    (void)flags;
    if (strcmp(path, "/") != 0)
        return -ENOTDIR;
    struct fs *fs = fs_get();
    if (fill(buf, ".", NULL, 0, 0) != 0 || fill(buf, "..", NULL, 0, 0) != 0)
        return -ENOMEM;
    for (size_t i = 0; i < fs->n; i++)
        if (fill(buf, vc_name(fs->vols[i]), NULL, 0, 0) != 0)
            return -ENOMEM;
    return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
    if (!lookup(path))
        return -ENOENT;
    fi->direct_io = 1;
    return 0;
}

/* The part of [off, off+*count) inside the volume; false if none. */
static bool clip_to(uint64_t size, off_t off, size_t *count)
{
    if (off < 0 || (uint64_t)off >= size)
        return false;
    if (*count > size - (uint64_t)off)
        *count = (size_t)(size - (uint64_t)off);
    return true;
}

/* Likewise; a request that reaches past the end known first re-reads the
 * size (the volume may have grown since). */
static bool clip(struct vclient *vc, off_t off, size_t *count)
{
    size_t want = *count;
    if (clip_to(vc_size(vc), off, count) && *count == want)
        return true;
    *count = want;
    vc_refresh(vc); /* logged; the size known stays */
    return clip_to(vc_size(vc), off, count);
}

static int fs_read(const char *path, char *buf, size_t count, off_t off, struct fuse_file_info *fi)
{
    (void)fi;
    struct vclient *vc = lookup(path);
    if (!vc)
        return -ENOENT;
    if (!clip(vc, off, &count))
        return 0;
    int r = vc_pread(vc, buf, (uint32_t)count, (uint64_t)off);
    return r < 0 ? r : (int)count;
}

static int fs_write(const char *path, const char *buf, size_t count, off_t off,
                    struct fuse_file_info *fi)
{
    (void)fi;
    struct vclient *vc = lookup(path);
    if (!vc)
        return -ENOENT;
    if (count == 0)
        return 0;
    if (!clip(vc, off, &count))
        return -ENOSPC;
    int r = vc_pwrite(vc, buf, (uint32_t)count, (uint64_t)off);
    return r < 0 ? r : (int)count;
}

static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)datasync;
    (void)fi;
    struct vclient *vc = lookup(path);
    return vc ? vc_flush(vc) : -ENOENT;
}

/* close(2): what was written is durable once close returns, as nbdfuse
 * and a block device's last close promise. */
static int fs_flush(const char *path, struct fuse_file_info *fi)
{
    return fs_fsync(path, 1, fi);
}

/* loop devices turn discards into PUNCH_HOLE and WRITE_ZEROES into
 * ZERO_RANGE; both stay within the file, which never grows. */
static int fs_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
    (void)fi;
    struct vclient *vc = lookup(path);
    if (!vc)
        return -ENOENT;
    if (off < 0 || len <= 0)
        return -EINVAL;
    uint64_t size = vc_size(vc), start = (uint64_t)off, end = start + (uint64_t)len;
    bool keep = mode & FALLOC_FL_KEEP_SIZE;
    uint64_t count = start < size ? (end < size ? end : size) - start : 0;
    if (mode & FALLOC_FL_PUNCH_HOLE)
        return !keep ? -EOPNOTSUPP : count ? vc_trim(vc, count, start) : 0;
    if (mode & FALLOC_FL_ZERO_RANGE) {
        if (end > size && !keep)
            return -EFBIG;
        return count ? vc_zero(vc, count, start) : 0;
    }
    if (mode & ~FALLOC_FL_KEEP_SIZE)
        return -EOPNOTSUPP;
    /* Plain allocation: every byte of a volume exists already. */
    return end > size && !keep ? -EFBIG : 0;
}

/* A volume's size is fixed: only "truncating" to its own size succeeds. */
static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    (void)fi;
    struct vclient *vc = lookup(path);
    if (!vc)
        return -ENOENT;
    return size >= 0 && (uint64_t)size == vc_size(vc) ? 0 : -EINVAL;
}

static int xattr_value(struct vclient *vc, const char *name, char *out, size_t cap)
{
    struct vc_status st;
    vc_status(vc, &st);
    if (strcmp(name, FS_XATTR_NODE) == 0)
        return snprintf(out, cap, "%u %s", st.node, st.addr);
    if (strcmp(name, FS_XATTR_FAILOVERS) == 0)
        return snprintf(out, cap, "%u", st.failovers);
    if (strcmp(name, FS_XATTR_RECOVERY) == 0)
        return snprintf(out, cap, "%s", st.recovery);
    if (strcmp(name, FS_XATTR_REPLICAS) != 0)
        return -ENODATA;
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < st.replicas.n && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%u@%s", i ? "," : "",
                                 st.replicas.v[i].id, st.replicas.v[i].addr);
    return (int)(used < cap ? used : cap - 1);
}

static int fs_getxattr(const char *path, const char *name, char *value, size_t size)
{
    struct vclient *vc = lookup(path);
    if (!vc)
        return strcmp(path, "/") == 0 ? -ENODATA : -ENOENT;
    char buf[VR_NODES_MAX * (VR_ADDR_MAX + 12)];
    int n = xattr_value(vc, name, buf, sizeof buf);
    if (n < 0 || size == 0)
        return n;
    if ((size_t)n > size)
        return -ERANGE;
    memcpy(value, buf, (size_t)n);
    return n;
}

static int fs_listxattr(const char *path, char *list, size_t size)
{
    static const char names[] =
        FS_XATTR_NODE "\0" FS_XATTR_REPLICAS "\0" FS_XATTR_FAILOVERS "\0" FS_XATTR_RECOVERY;
    if (!lookup(path))
        return strcmp(path, "/") == 0 ? 0 : -ENOENT;
    if (size == 0)
        return sizeof names;
    if (size < sizeof names)
        return -ERANGE;
    memcpy(list, names, sizeof names);
    return sizeof names;
}

/* ---- the watcher --------------------------------------------------------- */

/* Each volume's size as the kernel was last told (by getattr, then by an
 * invalidation). */
static void *watch(void *arg)
{
    struct fs *fs = arg;
    pthread_mutex_lock(&fs->watch_mu);
    while (!fs->watch_stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += FS_WATCH_S;
        while (!fs->watch_stop &&
               pthread_cond_timedwait(&fs->watch_cv, &fs->watch_mu, &until) != ETIMEDOUT)
            ;
        if (fs->watch_stop)
            break;
        pthread_mutex_unlock(&fs->watch_mu);
        for (size_t i = 0; i < fs->n; i++) {
            struct vclient *vc = fs->vols[i];
            vc_refresh(vc);
            uint64_t size = vc_size(vc);
            if (size == fs->told[i])
                continue;
            char path[NAME_MAX + 2];
            snprintf(path, sizeof path, "/%s", vc_name(vc));
            /* -ENOENT: the kernel holds no attributes of it to drop */
            int r = fuse_invalidate_path(fs->fuse, path);
            if (r < 0 && r != -ENOENT)
                qb_log(LOG_WARNING, "vsan-fuse: %s: the kernel's attributes not invalidated: %s",
                       path, strerror(-r));
            fs->told[i] = size;
        }
        pthread_mutex_lock(&fs->watch_mu);
    }
    pthread_mutex_unlock(&fs->watch_mu);
    return NULL;
}

int fs_watch_start(struct fs *fs, struct fuse *f)
{
    fs->fuse = f;
    fs->told = calloc(fs->n ? fs->n : 1, sizeof *fs->told);
    if (!fs->told)
        return -ENOMEM;
    for (size_t i = 0; i < fs->n; i++)
        fs->told[i] = vc_size(fs->vols[i]);
    pthread_mutex_init(&fs->watch_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&fs->watch_cv, &ca);
    pthread_condattr_destroy(&ca);
    fs->watch_stop = false;
    int r = pthread_create(&fs->watcher, NULL, watch, fs);
    if (r != 0) {
        pthread_cond_destroy(&fs->watch_cv);
        pthread_mutex_destroy(&fs->watch_mu);
        free(fs->told);
        fs->told = NULL;
        return -r;
    }
    return 0;
}

void fs_watch_stop(struct fs *fs)
{
    pthread_mutex_lock(&fs->watch_mu);
    fs->watch_stop = true;
    pthread_cond_signal(&fs->watch_cv);
    pthread_mutex_unlock(&fs->watch_mu);
    pthread_join(fs->watcher, NULL);
    pthread_cond_destroy(&fs->watch_cv);
    pthread_mutex_destroy(&fs->watch_mu);
    free(fs->told);
    fs->told = NULL;
}

static int fs_statfs(const char *path, struct statvfs *st)
{
    (void)path;
    struct fs *fs = fs_get();
    uint64_t total = 0;
    for (size_t i = 0; i < fs->n; i++)
        total += vc_size(fs->vols[i]);
    memset(st, 0, sizeof *st);
    st->f_bsize = st->f_frsize = 4096;
    st->f_blocks = total / 4096;
    st->f_files = fs->n + 1;
    st->f_namemax = 255;
    return 0;
}

const struct fuse_operations fs_ops = {
    .init = fs_init,
    .getattr = fs_getattr,
    .readdir = fs_readdir,
    .open = fs_open,
    .read = fs_read,
    .write = fs_write,
    .flush = fs_flush,
    .fsync = fs_fsync,
    .fallocate = fs_fallocate,
    .truncate = fs_truncate,
    .getxattr = fs_getxattr,
    .listxattr = fs_listxattr,
    .statfs = fs_statfs,
};
