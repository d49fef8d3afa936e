/* faultfs.c - a FUSE file system for power-cut and disk-failure tests, as
 * LazyFS is for Jepsen: a passthrough to a backing directory that can, on
 * command, forget everything not made durable, or fail or hang all I/O.
 * A SIGKILLed process leaves its writes in the page cache; a power cut
 * does not, and only this shows whether FLUSH, FUA and the store's
 * write-tmp, fsync, rename, fsync-dir really are what makes data durable.
 *
 *   faultfs BACKING MOUNTPOINT [-f] [-d] [-o FUSE_OPTION,...]
 *
 * BACKING may be MOUNTPOINT itself (it is opened before the mount). Write
 * one command to MOUNTPOINT/.faultfs-ctl (reading it gives the mode; it is
 * not listed, so that an empty backing dir mounts as an empty dir):
 *   crash  a power cut: take back every change not durable, then fail every
 *          operation with EIO until unmounted (the machine is off)
 *   eio    fail every operation (but on .faultfs-ctl) with EIO
 *   hang   block every operation until the next command (reads as
 *          "hang N" while N operations wait)
 *   ok     back to normal after eio or hang
 * The write of "crash" returns once the backing dir holds only what was
 * durable; kill the writers then, unmount, and mount again to "power on".
 *
 * Design: undo logs. Every change reaches the backing dir at once, so reads
 * need no merging; the layer remembers how to take back what is not durable:
 *  - per file (by inode): before a write, truncate or fallocate changes
 *    bytes below the size the file had at its last fsync, their contents
 *    (only its data extents, found with SEEK_DATA/SEEK_HOLE, so a write into
 *    a hole costs nothing), and that size. fsync and fdatasync, and a write
 *    with O_DSYNC or O_SYNC, drop the file's log. A crash replays the log
 *    backwards (punch a hole, write the old extents) and restores the size.
 *  - per directory: creates, mkdirs, unlinks, rmdirs and renames are logged
 *    in order; an unlinked or replaced file is kept (renamed or linked) in
 *    BACKING/.faultfs-graveyard so that it can come back. A change is
 *    durable once every directory it touched has been fsynced (fsync of a
 *    file does not make its name durable); a crash undoes the others,
 *    newest first. Hidden from the mount, emptied at start.
 * What FUSE delivers: the kernel's writeback cache is turned off, so every
 * write reaches this process before the writer's call returns. A FUSE_FSYNC
 * carries no range: pwritev2(RWF_DSYNC) (vsand's FUA write) arrives as a
 * WRITE with O_DSYNC in its flags, then a FSYNC of the whole file, so it
 * makes the file's earlier writes durable too, as fdatasync would. O_DIRECT
 * only bypasses the page cache; its writes are not durable without an
 * fsync, as on a disk with a volatile write cache. preadv2(RWF_NOWAIT)
 * fails with EOPNOTSUPP on FUSE (the kernel's doing, not this layer's).
 * The backing dir itself is never synced: this layer is the disk.
 * Not supported (ENOSYS): links, symlinks, chmod, chown, utimens, xattrs.
 * One lock serialises all operations; the undo logs live in memory.
 */
#define FUSE_USE_VERSION 312
#include <fuse.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define CTL_NAME ".faultfs-ctl"
#define GRAVE_NAME ".faultfs-graveyard"
#define CTL_FH UINT64_MAX

enum mode { MODE_OK, MODE_EIO, MODE_HANG, MODE_DEAD };
static const char *const mode_names[] = {"ok", "eio", "hang", "crashed"};

/* Bytes a change is about to overwrite. */
struct seg {
    off_t off;
    size_t len;
    char *data;
};

/* How to put one range back as it was before one change: make it a hole,
 * then write back its old data extents. */
struct undo {
    struct undo *prev;
    off_t off, len;
    size_t nseg;
    struct seg *segs;
};

/* A file changed since its last fsync. */
struct dirty {
    struct dirty *next;
    ino_t ino;
    int fd;      /* its own O_RDWR: the writer's may be write-only, or closed */
    off_t size0; /* the size at the last fsync */
    struct undo *top;
};

/* Something a create, unlink, rmdir or rename took away: a file kept in
 * the graveyard, or an empty directory to make again. */
struct removed {
    char *grave; /* name in the graveyard, or NULL */
    mode_t dir_mode;
    bool any;
};

enum dop { D_CREATE, D_REMOVE, D_RENAME };

/* A directory change not yet durable. Paths are relative to BACKING. */
struct dchange {
    struct dchange *prev, *next;
    enum dop op;
    char *path;          /* created, removed, or renamed from */
    char *to;            /* D_RENAME: renamed to */
    struct removed gone; /* D_REMOVE: path; D_RENAME: what "to" was */
    ino_t dirs[2];       /* the directories it touched */
    bool synced[2];
    int ndirs;
};

static struct {
    int root; /* BACKING */
    ino_t root_ino;
    int grave; /* BACKING/.faultfs-graveyard */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    enum mode mode;
    unsigned hung; /* operations waiting out a hang */
    struct dirty *dirty;
    struct dchange *first, *last;
    unsigned long grave_seq;
} fs = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* ---- paths ------------------------------------------------------------- */

static const char *rel(const char *path)
{
    return path[1] ? path + 1 : ".";
}

static bool is_ctl(const char *path)
{
    return path && strcmp(path, "/" CTL_NAME) == 0;
}

static bool hidden(const char *path)
{
    size_t n = strlen(GRAVE_NAME);
    return path && strncmp(path + 1, GRAVE_NAME, n) == 0 &&
           (path[n + 1] == '\0' || path[n + 1] == '/');
}

/* The inode of the directory holding path. */
static int parent_ino(const char *path, ino_t *ino)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    size_t n = (size_t)(slash - path);
    if (n == 0) {
        dir[0] = '.';
        n = 1;
    } else if (n >= sizeof(dir)) {
        return -ENAMETOOLONG;
    } else {
        memcpy(dir, path + 1, --n);
    }
    dir[n] = '\0';
    struct stat st;
    if (fstatat(fs.root, dir, &st, 0) < 0)
        return -errno;
    *ino = st.st_ino;
    return 0;
}

/* ---- the lock and the modes -------------------------------------------- */

/* Takes the lock for an operation, or says why it may not run. */
static int enter(const char *path)
{
    pthread_mutex_lock(&fs.mu);
    fs.hung++;
    while (fs.mode == MODE_HANG)
        pthread_cond_wait(&fs.cond, &fs.mu);
    fs.hung--;
    int r = fs.mode != MODE_OK ? -EIO : hidden(path) || is_ctl(path) ? -EPERM : 0;
    if (r < 0)
        pthread_mutex_unlock(&fs.mu);
    return r;
}

static int leave(int r)
{
    pthread_mutex_unlock(&fs.mu);
    return r;
}

/* ---- file undo logs ---------------------------------------------------- */

static int read_all(int fd, char *buf, size_t len, off_t off)
{
    while (len > 0) {
        ssize_t n = pread(fd, buf, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        buf += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

static int write_all(int fd, const char *buf, size_t len, off_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, buf, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        buf += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

static void undo_free(struct undo *u)
{
    for (size_t i = 0; i < u->nseg; i++)
        free(u->segs[i].data);
    free(u->segs);
    free(u);
}

static int add_seg(struct undo *u, int fd, off_t a, off_t b)
{
    struct seg *segs = realloc(u->segs, (u->nseg + 1) * sizeof(*segs));
    if (!segs)
        return -ENOMEM;
    u->segs = segs;
    struct seg *s = &segs[u->nseg];
    s->off = a;
    s->len = (size_t)(b - a);
    s->data = malloc(s->len);
    if (!s->data)
        return -ENOMEM;
    u->nseg++;
    return read_all(fd, s->data, s->len, a);
}

/* The data extents of [off, lim) of fd into u. */
static int save_extents(struct undo *u, int fd, off_t off, off_t lim)
{
    for (off_t pos = off; pos < lim;) {
        off_t a = lseek(fd, pos, SEEK_DATA);
        if (a < 0 && errno == ENXIO)
            return 0;
        bool no_seek = a < 0 && errno == EINVAL; /* a file system without SEEK_DATA */
        if (a < 0 && !no_seek)
            return -errno;
        off_t b = no_seek ? lim : lseek(fd, no_seek ? pos : a, SEEK_HOLE);
        a = no_seek ? pos : a;
        if (a >= lim)
            return 0;
        if (b < 0)
            return -errno;
        b = b < lim ? b : lim;
        int r = add_seg(u, fd, a, b);
        if (r < 0)
            return r;
        pos = b;
    }
    return 0;
}

/* Before bytes [off, off + len) of d change: what they were, as far as
 * they lie below the durable size (the rest goes with the size). */
static int capture(struct dirty *d, off_t off, off_t len)
{
    off_t end = off + len < d->size0 ? off + len : d->size0;
    if (off >= end)
        return 0;
    struct stat st;
    if (fstat(d->fd, &st) < 0)
        return -errno;
    struct undo *u = calloc(1, sizeof(*u));
    if (!u)
        return -ENOMEM;
    u->off = off;
    u->len = end - off;
    int r = save_extents(u, d->fd, off, end < st.st_size ? end : st.st_size);
    if (r < 0) {
        undo_free(u);
        return r;
    }
    u->prev = d->top;
    d->top = u;
    return 0;
}

static struct dirty *dirty_find(ino_t ino, struct dirty ***link)
{
    for (*link = &fs.dirty; **link; *link = &(**link)->next)
        if ((**link)->ino == ino)
            return **link;
    return NULL;
}

/* The undo log of the file open as fd, started if it has none. */
static int dirty_get(int fd, struct dirty **out)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    struct dirty **link;
    *out = dirty_find(st.st_ino, &link);
    if (*out)
        return 0;
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    struct dirty *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->fd = open(proc, O_RDWR | O_CLOEXEC);
    if (d->fd < 0) {
        int r = -errno;
        free(d);
        return r;
    }
    d->ino = st.st_ino;
    d->size0 = st.st_size;
    *link = d;
    *out = d;
    return 0;
}

static void dirty_drop(struct dirty **link)
{
    struct dirty *d = *link;
    *link = d->next;
    while (d->top) {
        struct undo *u = d->top;
        d->top = u->prev;
        undo_free(u);
    }
    close(d->fd);
    free(d);
}

/* fsync: everything written to the file open as fd is durable. */
static int make_durable(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    struct dirty **link;
    if (dirty_find(st.st_ino, &link))
        dirty_drop(link);
    return 0;
}

static int undo_apply(int fd, const struct undo *u)
{
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, u->off, u->len) < 0)
        return -errno;
    for (size_t i = 0; i < u->nseg; i++) {
        int r = write_all(fd, u->segs[i].data, u->segs[i].len, u->segs[i].off);
        if (r < 0)
            return r;
    }
    return 0;
}

/* A crash: the file as it was at its last fsync. */
static int rollback_file(struct dirty *d, size_t *bytes)
{
    for (struct undo *u = d->top; u; u = u->prev) {
        int r = undo_apply(d->fd, u);
        if (r < 0)
            return r;
        *bytes += (size_t)u->len;
    }
    return ftruncate(d->fd, d->size0) < 0 ? -errno : 0;
}

/* ---- directory changes ------------------------------------------------- */

static void dchange_free(struct dchange *c)
{
    free(c->path);
    free(c->to);
    free(c->gone.grave);
    free(c);
}

/* Appends a change touching the parents of path and (if not NULL) to. */
static int dchange_log(enum dop op, const char *path, const char *to, struct removed gone)
{
    struct dchange *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->op = op;
    c->gone = gone;
    c->path = strdup(rel(path));
    c->to = to ? strdup(rel(to)) : NULL;
    int r = !c->path || (to && !c->to) ? -ENOMEM : parent_ino(path, &c->dirs[0]);
    c->ndirs = 1;
    if (r == 0 && to) {
        r = parent_ino(to, &c->dirs[1]);
        c->ndirs = c->dirs[1] == c->dirs[0] ? 1 : 2;
    }
    if (r < 0) {
        c->gone.grave = NULL; /* the caller's */
        dchange_free(c);
        return r;
    }
    c->prev = fs.last;
    if (fs.last)
        fs.last->next = c;
    else
        fs.first = c;
    fs.last = c;
    return 0;
}

static void dchange_unlink(struct dchange *c)
{
    *(c->prev ? &c->prev->next : &fs.first) = c->next;
    *(c->next ? &c->next->prev : &fs.last) = c->prev;
}

/* fsyncdir: the changes in directory ino are durable once all theirs are. */
static void dir_synced(ino_t ino)
{
    struct dchange *next;
    for (struct dchange *c = fs.first; c; c = next) {
        next = c->next;
        bool all = true;
        for (int i = 0; i < c->ndirs; i++) {
            c->synced[i] |= c->dirs[i] == ino;
            all &= c->synced[i];
        }
        if (!all)
            continue;
        if (c->gone.grave && unlinkat(fs.grave, c->gone.grave, 0) < 0)
            fprintf(stderr, "faultfs: remove graveyard entry %s: %s\n", c->gone.grave,
                    strerror(errno));
        dchange_unlink(c);
        dchange_free(c);
    }
}

/* Removes dir_fd/name, a directory with all it holds or a file. */
static int remove_tree(int dir_fd, const char *name)
{
    struct stat st;
    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return unlinkat(dir_fd, name, 0) < 0 ? -errno : 0;
    int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = fd < 0 ? NULL : fdopendir(fd);
    if (!dir) {
        int r = -errno;
        if (fd >= 0)
            close(fd);
        return r;
    }
    int r = 0;
    struct dirent *e;
    while (r == 0 && (e = readdir(dir)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            r = remove_tree(dirfd(dir), e->d_name);
    closedir(dir);
    if (r == 0 && unlinkat(dir_fd, name, AT_REMOVEDIR) < 0)
        r = -errno;
    return r;
}

/* Takes path (relative) away so that it can come back: a file into the
 * graveyard (renamed, or linked if keep), an empty directory by its mode. */
static int take_away(const char *path, bool keep, struct removed *gone)
{
    struct stat st;
    memset(gone, 0, sizeof(*gone));
    if (fstatat(fs.root, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -errno;
    gone->any = true;
    if (S_ISDIR(st.st_mode)) {
        gone->dir_mode = st.st_mode & 07777;
        return keep || unlinkat(fs.root, path, AT_REMOVEDIR) == 0 ? 0 : -errno;
    }
    char name[32];
    snprintf(name, sizeof(name), "%lu", ++fs.grave_seq);
    int r =
        keep ? linkat(fs.root, path, fs.grave, name, 0) : renameat(fs.root, path, fs.grave, name);
    if (r < 0)
        return -errno;
    gone->grave = strdup(name);
    return gone->grave ? 0 : -ENOMEM;
}

static int bring_back(const char *path, const struct removed *gone)
{
    if (!gone->any)
        return 0;
    if (!gone->grave)
        return mkdirat(fs.root, path, gone->dir_mode) < 0 ? -errno : 0;
    return renameat(fs.grave, gone->grave, fs.root, path) < 0 ? -errno : 0;
}

static int dchange_undo(const struct dchange *c)
{
    switch (c->op) {
    case D_CREATE:
        return remove_tree(fs.root, c->path);
    case D_REMOVE:
        return bring_back(c->path, &c->gone);
    case D_RENAME:
        if (renameat(fs.root, c->to, fs.root, c->path) < 0)
            return -errno;
        return bring_back(c->to, &c->gone);
    }
    return -EINVAL;
}

/* ---- the power cut ----------------------------------------------------- */

static void crash(void)
{
    size_t files = 0, bytes = 0, dirs = 0, failed = 0;
    while (fs.dirty) {
        int r = rollback_file(fs.dirty, &bytes);
        if (r < 0) {
            fprintf(stderr, "faultfs: crash: roll back inode %lu: %s\n",
                    (unsigned long)fs.dirty->ino, strerror(-r));
            failed++;
        }
        files++;
        dirty_drop(&fs.dirty);
    }
    while (fs.last) {
        struct dchange *c = fs.last;
        int r = dchange_undo(c);
        if (r < 0) {
            fprintf(stderr, "faultfs: crash: undo %s of %s: %s\n",
                    c->op == D_CREATE   ? "create"
                    : c->op == D_REMOVE ? "remove"
                                        : "rename",
                    c->path, strerror(-r));
            failed++;
        }
        dirs++;
        dchange_unlink(c);
        dchange_free(c);
    }
    fs.mode = MODE_DEAD;
    fprintf(stderr,
            "faultfs: crash: %zu file(s) rolled back (%zu bytes of ranges), %zu directory "
            "change(s) undone, %zu failure(s)\n",
            files, bytes, dirs, failed);
}

/* ---- the control file -------------------------------------------------- */

static int ctl_stat(struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_mode = S_IFREG | 0600;
    st->st_nlink = 1;
    st->st_uid = getuid();
    st->st_gid = getgid();
    return 0;
}

static int ctl_command(const char *buf, size_t size)
{
    char cmd[16];
    size_t n = 0;
    while (n < size && n < sizeof(cmd) - 1 && buf[n] != '\n' && buf[n] != ' ')
        cmd[n] = buf[n], n++;
    cmd[n] = '\0';
    pthread_mutex_lock(&fs.mu);
    int r = 0;
    if (fs.mode == MODE_DEAD)
        r = strcmp(cmd, "crash") == 0 ? 0 : -EIO; /* off until unmounted */
    else if (strcmp(cmd, "crash") == 0)
        crash();
    else if (strcmp(cmd, "eio") == 0)
        fs.mode = MODE_EIO;
    else if (strcmp(cmd, "hang") == 0)
        fs.mode = MODE_HANG;
    else if (strcmp(cmd, "ok") == 0)
        fs.mode = MODE_OK;
    else
        r = -EINVAL;
    if (r == 0)
        fprintf(stderr, "faultfs: %s: now %s\n", cmd, mode_names[fs.mode]);
    pthread_cond_broadcast(&fs.cond);
    pthread_mutex_unlock(&fs.mu);
    return r < 0 ? r : (int)size;
}

static int ctl_read(char *buf, size_t size, off_t off)
{
    char text[32];
    pthread_mutex_lock(&fs.mu);
    int n = fs.mode == MODE_HANG ? snprintf(text, sizeof(text), "hang %u\n", fs.hung)
                                 : snprintf(text, sizeof(text), "%s\n", mode_names[fs.mode]);
    pthread_mutex_unlock(&fs.mu);
    if (off >= n)
        return 0;
    size_t len = (size_t)(n - off) < size ? (size_t)(n - off) : size;
    memcpy(buf, text + off, len);
    return (int)len;
}

/* ---- operations -------------------------------------------------------- */

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    cfg->nullpath_ok = 1;
    cfg->hard_remove = 1; /* files are reached through their handles */
    cfg->kernel_cache = 0;
    return NULL;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    if (is_ctl(path) || (fi && fi->fh == CTL_FH))
        return ctl_stat(st);
    int r = enter(path);
    if (r < 0)
        return r;
    r = fi ? fstat((int)fi->fh, st) : fstatat(fs.root, rel(path), st, AT_SYMLINK_NOFOLLOW);
    return leave(r < 0 ? -errno : 0);
}

static int op_opendir(const char *path, struct fuse_file_info *fi)
{
    int r = enter(path);
    if (r < 0)
        return r;
    int fd = openat(fs.root, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    fi->fh = (uint64_t)fd;
    return leave(fd < 0 ? -errno : 0);
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)path;
    (void)off;
    (void)flags;
    int r = enter(NULL);
    if (r < 0)
        return r;
    int fd = openat((int)fi->fh, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = fd < 0 ? NULL : fdopendir(fd);
    if (!dir) {
        r = -errno;
        if (fd >= 0)
            close(fd);
        return leave(r);
    }
    struct stat st;
    bool root = fstat(fd, &st) == 0 && st.st_ino == fs.root_ino;
    struct dirent *e;
    while ((e = readdir(dir)))
        if (!(root && strcmp(e->d_name, GRAVE_NAME) == 0))
            fill(buf, e->d_name, NULL, 0, 0);
    closedir(dir);
    return leave(0);
}

static int op_releasedir(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    close((int)fi->fh);
    return 0;
}

static int op_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)datasync;
    int r = enter(path);
    if (r < 0)
        return r;
    struct stat st;
    if (fstat((int)fi->fh, &st) < 0)
        return leave(-errno);
    dir_synced(st.st_ino);
    return leave(0);
}

static int op_mkdir(const char *path, mode_t mode)
{
    int r = enter(path);
    if (r < 0)
        return r;
    if (mkdirat(fs.root, rel(path), mode) < 0)
        return leave(-errno);
    r = dchange_log(D_CREATE, path, NULL, (struct removed){0});
    if (r < 0)
        unlinkat(fs.root, rel(path), AT_REMOVEDIR);
    return leave(r);
}

static int op_remove(const char *path, bool dir)
{
    int r = enter(path);
    if (r < 0)
        return r;
    struct stat st;
    if (fstatat(fs.root, rel(path), &st, AT_SYMLINK_NOFOLLOW) < 0)
        return leave(-errno);
    if (S_ISDIR(st.st_mode) != dir)
        return leave(dir ? -ENOTDIR : -EISDIR);
    struct removed gone;
    r = take_away(rel(path), false, &gone);
    if (r == 0)
        r = dchange_log(D_REMOVE, path, NULL, gone);
    if (r < 0 && gone.any) {
        bring_back(rel(path), &gone);
        free(gone.grave);
    }
    return leave(r);
}

static int op_unlink(const char *path)
{
    return op_remove(path, false);
}

static int op_rmdir(const char *path)
{
    return op_remove(path, true);
}

static int op_rename(const char *from, const char *to, unsigned int flags)
{
    if (flags & ~RENAME_NOREPLACE)
        return -EINVAL;
    if (hidden(to) || is_ctl(to))
        return -EPERM;
    int r = enter(from);
    if (r < 0)
        return r;
    /* The kernel checks the rename; a replaced file is linked into the
     * graveyard first, a replaced (empty) directory needs only its mode. */
    struct removed gone;
    r = take_away(rel(to), true, &gone);
    if (r == 0 && renameat2(fs.root, rel(from), fs.root, rel(to), flags) < 0)
        r = -errno;
    if (r == 0)
        r = dchange_log(D_RENAME, from, to, gone);
    if (r < 0 && gone.grave) {
        unlinkat(fs.grave, gone.grave, 0);
        free(gone.grave);
    }
    return leave(r);
}

/* The flags a backing file is opened with: durability and placement are
 * this layer's business. */
static int backing_flags(int flags)
{
    return (flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_APPEND | O_DIRECT | O_DSYNC | O_SYNC)) |
           O_CLOEXEC;
}

static int truncate_fd(int fd, off_t size)
{
    struct dirty *d;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    int r = dirty_get(fd, &d);
    if (r == 0 && size < st.st_size)
        r = capture(d, size, st.st_size - size);
    if (r == 0 && ftruncate(fd, size) < 0)
        r = -errno;
    return r;
}

/* Makes fd (just opened, or -1 with errno) fi's handle; with O_TRUNC,
 * empties the file undoably. */
static int open_file(struct fuse_file_info *fi, int fd)
{
    if (fd < 0)
        return -errno;
    int r = fi->flags & O_TRUNC ? truncate_fd(fd, 0) : 0;
    if (r < 0) {
        close(fd);
        return r;
    }
    fi->fh = (uint64_t)fd;
    return 0;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
    if (is_ctl(path)) {
        fi->fh = CTL_FH;
        fi->direct_io = 1;
        return 0;
    }
    int r = enter(path);
    if (r < 0)
        return r;
    int fd = openat(fs.root, rel(path), backing_flags(fi->flags));
    return leave(open_file(fi, fd));
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int r = enter(path);
    if (r < 0)
        return r;
    int flags = backing_flags(fi->flags);
    int fd = openat(fs.root, rel(path), flags | O_CREAT | O_EXCL, mode);
    if (fd >= 0) {
        r = dchange_log(D_CREATE, path, NULL, (struct removed){0});
        if (r < 0) {
            close(fd);
            unlinkat(fs.root, rel(path), 0);
            return leave(r);
        }
        fi->fh = (uint64_t)fd;
        return leave(0);
    }
    if (errno != EEXIST || (fi->flags & O_EXCL))
        return leave(-errno);
    fd = openat(fs.root, rel(path), flags);
    return leave(open_file(fi, fd));
}

static int op_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    if (fi->fh == CTL_FH)
        return ctl_read(buf, size, off);
    int r = enter(path);
    if (r < 0)
        return r;
    ssize_t n = pread((int)fi->fh, buf, size, off);
    return leave(n < 0 ? -errno : (int)n);
}

static int op_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    if (fi->fh == CTL_FH)
        return ctl_command(buf, size);
    int r = enter(path);
    if (r < 0)
        return r;
    struct dirty *d;
    r = dirty_get((int)fi->fh, &d);
    if (r == 0)
        r = capture(d, off, (off_t)size);
    if (r < 0)
        return leave(r);
    ssize_t n = pwrite((int)fi->fh, buf, size, off);
    if (n < 0)
        return leave(-errno);
    if (fi->flags & (O_DSYNC | O_SYNC))
        r = make_durable((int)fi->fh);
    return leave(r < 0 ? r : (int)n);
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)datasync;
    if (fi->fh == CTL_FH)
        return 0;
    int r = enter(path);
    return r < 0 ? r : leave(make_durable((int)fi->fh));
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    if (is_ctl(path) || (fi && fi->fh == CTL_FH))
        return 0;
    int r = enter(path);
    if (r < 0)
        return r;
    int fd = fi ? (int)fi->fh : openat(fs.root, rel(path), O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return leave(-errno);
    r = truncate_fd(fd, size);
    if (!fi)
        close(fd);
    return leave(r);
}

static int op_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
    int r = enter(path);
    if (r < 0)
        return r;
    struct dirty *d;
    r = dirty_get((int)fi->fh, &d);
    if (r == 0)
        r = capture(d, off, len);
    if (r == 0 && fallocate((int)fi->fh, mode, off, len) < 0)
        r = -errno;
    return leave(r);
}

static off_t op_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
    int r = enter(path);
    if (r < 0)
        return r;
    off_t at = lseek((int)fi->fh, off, whence);
    int err = errno;
    leave(0);
    return at < 0 ? -err : at;
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    if (fi->fh != CTL_FH)
        close((int)fi->fh);
    return 0;
}

static int op_statfs(const char *path, struct statvfs *st)
{
    int r = enter(path);
    if (r < 0)
        return r;
    return leave(fstatvfs(fs.root, st) < 0 ? -errno : 0);
}

static const struct fuse_operations ops = {
    .init = op_init,
    .getattr = op_getattr,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .rename = op_rename,
    .open = op_open,
    .create = op_create,
    .read = op_read,
    .write = op_write,
    .fsync = op_fsync,
    .truncate = op_truncate,
    .fallocate = op_fallocate,
    .lseek = op_lseek,
    .release = op_release,
    .statfs = op_statfs,
};

/* An empty graveyard: what a former run kept is not coming back. */
static int open_graveyard(const char *backing)
{
    int r = remove_tree(fs.root, GRAVE_NAME);
    if (r < 0 && r != -ENOENT) {
        fprintf(stderr, "faultfs: remove %s/%s: %s\n", backing, GRAVE_NAME, strerror(-r));
        return -1;
    }
    fs.grave = -1;
    if (mkdirat(fs.root, GRAVE_NAME, 0700) == 0)
        fs.grave = openat(fs.root, GRAVE_NAME, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fs.grave < 0)
        fprintf(stderr, "faultfs: %s/%s: %s\n", backing, GRAVE_NAME, strerror(errno));
    return fs.grave;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argv[1][0] == '-') {
        fprintf(stderr, "usage: %s BACKING MOUNTPOINT [-f] [-d] [-o FUSE_OPTION,...]\n", argv[0]);
        return 2;
    }
    fs.root = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fs.root < 0) {
        fprintf(stderr, "faultfs: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    struct stat st;
    if (fstat(fs.root, &st) < 0 || open_graveyard(argv[1]) < 0)
        return 1;
    fs.root_ino = st.st_ino;
    /* Hung operations each hold a thread: leave room for the control file.
     * (libfuse 3.14 warns about its own default of max_idle_threads.) */
    char *args[argc + 1];
    args[0] = argv[0];
    for (int i = 2; i < argc; i++)
        args[i - 1] = argv[i];
    args[argc - 1] = "-omax_threads=64,max_idle_threads=16";
    args[argc] = NULL;
    return fuse_main(argc, args, &ops, NULL);
}
