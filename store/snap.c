/* snap.c - copy-on-write snapshots of one volume (see snap.h).
 *
 * Three locks per volume. `list` (a writer-preferring rwlock) guards the
 * array of snapshots: I/O holds it shared, so a create or the end of a
 * delete (exclusive) never sees a copy half done. `admin` serialises
 * creates and deletes and guards next_id. `mu` guards the claims and the
 * group commit.
 *
 * A delete commits the snapshot as deleting and returns; one of the
 * process's merger threads then copies the chunks the next older snapshot
 * needs, a batch at a time with `list` shared and no `admin` (creates and
 * deletes go on between batches; only a merge drops a snapshot, and one
 * volume's merges run on one thread at a time, so the two it merges
 * stay), and drops it with both held.
 *
 * A claim says "this chunk is being copied into that snapshot and its bit
 * is not durable yet". A writer claims the chunks it must copy, copies
 * them without the lock, queues its claims and waits for a group commit;
 * the leader fdatasyncs the side files, sets and syncs the bits, and only
 * then drops the claims. So a chunk whose bit is set and that nobody
 * claims is durably copied: a writer finding one writes at once, one
 * finding a claim waits for it to go. A reader that takes a chunk from the
 * live file checks afterwards that nobody claimed it meanwhile (a claim
 * comes before any write to that chunk), else it reads again.
 */
#include "store/snap.h"
#include "store/fileio.h"
#include "store/gsync.h"

#include <isa-l/crc.h>
#include <qb/qblog.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define INDEX_FORMAT 1
/* A line is at most ~120 bytes; anything longer than this is corrupt. */
#define INDEX_MAX ((size_t)SNAP_MAX * 160 + 256)

struct snap {
    uint64_t id;
    char name[SNAP_NAME_MAX + 1];
    int64_t time;
    uint64_t size;
    bool deleting;       /* committed as deleting: gone for users */
    int err;             /* a failed commit: copies into it fail (under mu) */
    struct bitmap *held; /* chunks its side file holds */
};

/* A chunk being copied into s by owner (a writer's token): gen 0 while
 * copying, then the generation of the group commit it waits for. */
struct claim {
    struct snap *s;
    uint64_t chunk;
    uint64_t gen;
    const void *owner;
};

struct snapset {
    struct store *st;
    char uuid[STORE_UUID_LEN + 1];
    char volume[STORE_NAME_MAX + 1];
    int live_fd;
    pthread_rwlock_t list;
    pthread_mutex_t admin;
    pthread_mutex_t mu;
    pthread_cond_t claim_done; /* a claim went */
    struct gsync sync;         /* under mu */
    struct claim *claims;      /* under mu */
    size_t nclaims, capclaims;
    struct snap **snaps; /* oldest first; under list */
    unsigned n;
    uint64_t next_id;           /* under admin */
    struct snapset *queue_next; /* under mergers.mu: */
    bool queued;                /* in the mergers' queue */
    bool merging;               /* a merger finishes its deletes */
    bool again;                 /* a delete came while it did */
    atomic_bool stop;           /* its merges stop after their batch (close, remove all) */
    atomic_uint visible;        /* snapshots not being deleted */
    atomic_bool no_clone;       /* FICLONERANGE refused for good */
};

/* ---- errors ---------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static int fail(const struct snapset *ss, int err,
                                                      const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    qb_log(LOG_ERR, "volume \"%s\": snapshots: %s", ss->volume, msg);
    return -err;
}

/* As fail(), with strerror(err) appended. */
__attribute__((format(printf, 3, 4))) static int sys_fail(const struct snapset *ss, int err,
                                                          const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    qb_log(LOG_ERR, "volume \"%s\": snapshots: %s: %s", ss->volume, msg, strerror(err));
    return -err;
}

/* ---- names and paths --------------------------------------------------- */

static void side_name(const struct snapset *ss, uint64_t id, char *out, size_t len)
{
    snprintf(out, len, "%s.%" PRIu64 ".data", ss->uuid, id);
}

static void map_path(const struct snapset *ss, uint64_t id, char *out, size_t len)
{
    snprintf(out, len, "%s/%s.%" PRIu64 ".map", store_snap_dir_path(ss->st), ss->uuid, id);
}

static void index_name(const struct snapset *ss, char *out, size_t len)
{
    snprintf(out, len, "%s.index", ss->uuid);
}

static uint64_t chunks_of(uint64_t size)
{
    return (size + SNAP_CHUNK - 1) >> SNAP_CHUNK_SHIFT;
}

/* ---- side-file descriptors: one bounded cache per process -------------- */

static struct {
    pthread_mutex_t mu;
    uint64_t clock;
    struct fdslot {
        const struct snap *s; /* NULL: free */
        int fd;
        unsigned users;
        uint64_t used;
    } slot[SNAP_FD_CACHE];
} fdc = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* A descriptor of s's side file; *slot says where it is cached (-1: not,
 * side_put closes it). */
static int side_get(struct snapset *ss, const struct snap *s, int *fd, int *slot)
{
    pthread_mutex_lock(&fdc.mu);
    for (int i = 0; i < SNAP_FD_CACHE; i++) {
        if (fdc.slot[i].s == s) {
            fdc.slot[i].users++;
            fdc.slot[i].used = ++fdc.clock;
            *fd = fdc.slot[i].fd;
            *slot = i;
            pthread_mutex_unlock(&fdc.mu);
            return 0;
        }
    }
    pthread_mutex_unlock(&fdc.mu);
    char name[NAME_MAX + 1];
    side_name(ss, s->id, name, sizeof(name));
    *fd = openat(store_snap_dir_fd(ss->st), name, O_RDWR | O_CLOEXEC);
    if (*fd < 0)
        return sys_fail(ss, errno, "open \"%s/%s\"", store_snap_dir_path(ss->st), name);
    pthread_mutex_lock(&fdc.mu);
    int victim = -1;
    for (int i = 0; i < SNAP_FD_CACHE; i++)
        if (fdc.slot[i].users == 0 && (victim < 0 || fdc.slot[i].used < fdc.slot[victim].used))
            victim = i;
    *slot = victim;
    if (victim >= 0) {
        if (fdc.slot[victim].s)
            close(fdc.slot[victim].fd);
        fdc.slot[victim] = (struct fdslot){.s = s, .fd = *fd, .users = 1, .used = ++fdc.clock};
    }
    pthread_mutex_unlock(&fdc.mu);
    return 0;
}

static void side_put(int fd, int slot)
{
    if (slot < 0) {
        close(fd);
        return;
    }
    pthread_mutex_lock(&fdc.mu);
    fdc.slot[slot].users--;
    pthread_mutex_unlock(&fdc.mu);
}

/* Closes s's cached descriptors; nobody may be using them. */
static void side_forget(const struct snap *s)
{
    pthread_mutex_lock(&fdc.mu);
    for (int i = 0; i < SNAP_FD_CACHE; i++) {
        if (fdc.slot[i].s == s) {
            close(fdc.slot[i].fd);
            fdc.slot[i] = (struct fdslot){0};
        }
    }
    pthread_mutex_unlock(&fdc.mu);
}

/* fdatasync of s's side file. */
static int side_sync(struct snapset *ss, const struct snap *s)
{
    int fd, slot;
    int r = side_get(ss, s, &fd, &slot);
    if (r < 0)
        return r;
    if (fdatasync(fd) < 0)
        r = sys_fail(ss, errno, "snapshot %" PRIu64 ": fdatasync its side file", s->id);
    side_put(fd, slot);
    return r;
}

/* ---- the index --------------------------------------------------------- */

static int index_write(struct snapset *ss)
{
    size_t cap = INDEX_MAX, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return fail(ss, ENOMEM, "no memory for the index");
    len += (size_t)snprintf(buf + len, cap - len,
                            "# vsan snapshot index; written by vsand, do not edit\n"
                            "format %d\nnext %" PRIu64 "\n",
                            INDEX_FORMAT, ss->next_id);
    for (unsigned i = 0; i < ss->n; i++) {
        const struct snap *s = ss->snaps[i];
        len += (size_t)snprintf(buf + len, cap - len,
                                "snap %" PRIu64 " %" PRIu64 " %" PRId64 " %s %s\n", s->id, s->size,
                                s->time, s->deleting ? "deleting" : "live", s->name);
    }
    uint32_t crc = crc32_gzip_refl(0, (unsigned char *)buf, len);
    len += (size_t)snprintf(buf + len, cap - len, "crc %08" PRIx32 "\n", crc);
    char name[NAME_MAX + 1];
    index_name(ss, name, sizeof(name));
    int r = store_snap_replace(ss->st, name, buf, len);
    free(buf);
    return r;
}

/* One "snap" line into a new struct snap (its map not loaded). */
static int parse_snap(const char *line, struct snap **out)
{
    struct snap *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    char state[16], name[SNAP_NAME_MAX + 2];
    int used = 0;
    if (sscanf(line, "snap %" SCNu64 " %" SCNu64 " %" SCNd64 " %15s %65s%n", &s->id, &s->size,
               &s->time, state, name, &used) != 5 ||
        line[used] != '\0' || s->id == 0 || s->size == 0 || s->size > SNAP_SIZE_MAX ||
        !store_name_valid(name) || (strcmp(state, "live") != 0 && strcmp(state, "deleting") != 0)) {
        free(s);
        return -EINVAL;
    }
    s->deleting = strcmp(state, "deleting") == 0;
    memcpy(s->name, name, sizeof(s->name));
    *out = s;
    return 0;
}

static int add_snap(struct snapset *ss, struct snap *s)
{
    struct snap **v = realloc(ss->snaps, (ss->n + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    ss->snaps = v;
    ss->snaps[ss->n++] = s;
    return 0;
}

/* Parses the lines of a CRC-checked index (NUL-terminated text). */
static int index_parse(struct snapset *ss, char *text, const char *path)
{
    int lineno = 0;
    bool have_format = false, have_next = false;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        unsigned format;
        int r = 0;
        if (line[0] == '#' || strncmp(line, "crc ", 4) == 0)
            continue;
        if (sscanf(line, "format %u", &format) == 1) {
            if (format != INDEX_FORMAT)
                return fail(ss, EPROTONOSUPPORT, "index \"%s\": format %u (this vsand knows %d)",
                            path, format, INDEX_FORMAT);
            have_format = true;
        } else if (sscanf(line, "next %" SCNu64, &ss->next_id) == 1) {
            have_next = true;
        } else {
            struct snap *s = NULL;
            r = parse_snap(line, &s);
            if (r == 0 &&
                ((ss->n > 0 && ss->snaps[ss->n - 1]->id >= s->id) ||
                 (ss->n > 0 && ss->snaps[ss->n - 1]->size > s->size) || ss->n == SNAP_MAX))
                r = -EINVAL;
            if (r == 0)
                r = add_snap(ss, s);
            if (r < 0)
                free(s);
        }
        if (r < 0)
            return fail(ss, -r, "index \"%s\": line %d: %s", path, lineno,
                        r == -ENOMEM ? "out of memory" : "malformed");
    }
    if (!have_format || !have_next || (ss->n > 0 && ss->snaps[ss->n - 1]->id >= ss->next_id))
        return fail(ss, EINVAL, "index \"%s\": %s", path,
                    !have_format ? "no format line"
                    : !have_next ? "no next line"
                                 : "next id not above every snapshot's");
    return 0;
}

/* Reads the index: no file means no snapshots. */
static int index_read(struct snapset *ss)
{
    char name[NAME_MAX + 1], path[PATH_MAX];
    index_name(ss, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", store_snap_dir_path(ss->st), name);
    ss->next_id = 1;
    int fd = openat(store_snap_dir_fd(ss->st), name, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return 0;
    if (fd < 0)
        return sys_fail(ss, errno, "open \"%s\"", path);
    char *buf = malloc(INDEX_MAX + 1);
    if (!buf) {
        close(fd);
        return fail(ss, ENOMEM, "no memory to read \"%s\"", path);
    }
    ssize_t len;
    do {
        len = pread(fd, buf, INDEX_MAX + 1, 0);
    } while (len < 0 && errno == EINTR);
    int err = errno;
    close(fd);
    int r = 0;
    if (len < 0) {
        r = sys_fail(ss, err, "read \"%s\"", path);
    } else {
        buf[len] = '\0';
        /* The last line is "crc XXXXXXXX\n" over every byte before it. */
        char *crc_line = len >= 14 ? buf + len - 13 : NULL;
        unsigned long want;
        char *end;
        if ((size_t)len > INDEX_MAX || !crc_line || crc_line[-1] != '\n' ||
            strncmp(crc_line, "crc ", 4) != 0 || buf[len - 1] != '\n' ||
            (want = strtoul(crc_line + 4, &end, 16), end != buf + len - 1))
            r = fail(ss, EINVAL, "index \"%s\": truncated or not an index", path);
        else if (crc32_gzip_refl(0, (unsigned char *)buf, (uint64_t)(crc_line - buf)) != want)
            r = fail(ss, EINVAL, "index \"%s\": CRC mismatch (corrupt)", path);
        else
            r = index_parse(ss, buf, path);
    }
    free(buf);
    return r;
}

/* ---- copying a chunk ----------------------------------------------------- */

static bool all_zero(const unsigned char *p, size_t len)
{
    return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/* Writes len bytes of buf at off of fd: a hole for zeroes (a side file
 * stays as sparse as the data it copies). */
static int write_chunk(int fd, const unsigned char *buf, uint64_t len, uint64_t off)
{
    if (all_zero(buf, len) &&
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    return fileio_pwrite(fd, buf, len, off);
}

/* Copies [off, off+len) from src to the same offset of dst: shared blocks
 * where the file system can (FICLONERANGE), else read and write, a hole
 * for zeroes. buf holds SNAP_CHUNK bytes. */
static int copy_range(struct snapset *ss, int src, int dst, uint64_t off, uint64_t len,
                      unsigned char *buf)
{
    if (!atomic_load_explicit(&ss->no_clone, memory_order_relaxed)) {
        struct file_clone_range fcr = {
            .src_fd = src, .src_offset = off, .src_length = len, .dest_offset = off};
        if (ioctl(dst, FICLONERANGE, &fcr) == 0)
            return 0;
        if (errno == EOPNOTSUPP || errno == EXDEV || errno == ENOTTY) {
            if (!atomic_exchange(&ss->no_clone, true))
                qb_log(LOG_INFO, "volume \"%s\": snapshots: FICLONERANGE unsupported (%s), copying",
                       ss->volume, strerror(errno));
        } else if (errno != EINVAL) {
            return -errno;
        }
        /* EINVAL: this range is not aligned to the file system's blocks. */
    }
    int r = fileio_pread(src, buf, len, off);
    return r < 0 ? r : write_chunk(dst, buf, len, off);
}

/* ---- claims and the group commit ---------------------------------------- */

/* Called with mu. */
static struct claim *claim_find(struct snapset *ss, uint64_t chunk)
{
    for (size_t i = 0; i < ss->nclaims; i++)
        if (ss->claims[i].chunk == chunk)
            return &ss->claims[i];
    return NULL;
}

static int claim_add(struct snapset *ss, struct snap *s, uint64_t chunk, const void *owner)
{
    if (ss->nclaims == ss->capclaims) {
        size_t cap = ss->capclaims ? ss->capclaims * 2 : 64;
        struct claim *v = realloc(ss->claims, cap * sizeof(*v));
        if (!v)
            return fail(ss, ENOMEM, "no memory to copy a chunk");
        ss->claims = v;
        ss->capclaims = cap;
    }
    ss->claims[ss->nclaims++] = (struct claim){.s = s, .chunk = chunk, .owner = owner};
    return 0;
}

/* Called with mu: drops owner's claims, or (owner NULL) every claim
 * queued up to generation upto. */
static void claims_drop(struct snapset *ss, const void *owner, uint64_t upto)
{
    size_t kept = 0;
    for (size_t i = 0; i < ss->nclaims; i++) {
        const struct claim *c = &ss->claims[i];
        bool drop = owner ? c->owner == owner : c->gen != 0 && c->gen <= upto;
        if (!drop)
            ss->claims[kept++] = *c;
    }
    ss->nclaims = kept;
    pthread_cond_broadcast(&ss->claim_done);
}

/* The group commit's leader (gsync.h), called with mu: every queued claim
 * up to the current generation becomes durable: side files first, then
 * the bits. */
static int lead_commit(void *arg)
{
    struct snapset *ss = arg;
    uint64_t upto = ss->sync.gen;
    size_t n = 0;
    struct claim *batch = malloc((ss->nclaims ? ss->nclaims : 1) * sizeof(*batch));
    if (!batch) {
        /* The waiters learn it from err (gsync_wait tells only the leader). */
        for (size_t i = 0; i < ss->nclaims; i++)
            if (ss->claims[i].gen != 0 && ss->claims[i].gen <= upto)
                ss->claims[i].s->err = -ENOMEM;
        claims_drop(ss, NULL, upto);
        return fail(ss, ENOMEM, "no memory to commit copies");
    }
    for (size_t i = 0; i < ss->nclaims; i++)
        if (ss->claims[i].gen != 0 && ss->claims[i].gen <= upto)
            batch[n++] = ss->claims[i];
    pthread_mutex_unlock(&ss->mu);
    int r = 0;
    /* A batch's claims are nearly always of one snapshot, the newest. */
    for (size_t i = 0; i < n && r == 0; i++)
        if (i == 0 || batch[i].s != batch[i - 1].s)
            r = side_sync(ss, batch[i].s);
    for (size_t i = 0; i < n && r == 0; i++)
        r = bitmap_set(batch[i].s->held, batch[i].chunk, batch[i].chunk) < 0 ? -EINVAL : 0;
    for (size_t i = 0; i < n && r == 0; i++)
        if (i == 0 || batch[i].s != batch[i - 1].s)
            r = bitmap_sync(batch[i].s->held);
    pthread_mutex_lock(&ss->mu);
    for (size_t i = 0; i < n && r < 0; i++)
        batch[i].s->err = -EIO;
    claims_drop(ss, NULL, upto);
    free(batch);
    return r;
}

/* ---- copy-on-write ------------------------------------------------------- */

/* Copies the chunks of the live file into s; stops at the first error. */
static int copy_claimed(struct snapset *ss, struct snap *s, const uint64_t *chunks, size_t n)
{
    unsigned char *buf = malloc(SNAP_CHUNK);
    if (!buf)
        return fail(ss, ENOMEM, "no memory to copy a chunk");
    int fd, slot;
    int r = side_get(ss, s, &fd, &slot);
    for (size_t i = 0; i < n && r == 0; i++) {
        uint64_t off = chunks[i] << SNAP_CHUNK_SHIFT;
        uint64_t len = s->size - off < SNAP_CHUNK ? s->size - off : SNAP_CHUNK;
        r = copy_range(ss, ss->live_fd, fd, off, len, buf);
        if (r < 0)
            r = sys_fail(ss, -r, "snapshot %" PRIu64 ": copy chunk %" PRIu64 " into it", s->id,
                         chunks[i]);
        if (i + 1 == n || r < 0)
            side_put(fd, slot);
    }
    free(buf);
    return r;
}

/* Called with mu: whether any of first..last is claimed. */
static bool any_claimed(struct snapset *ss, uint64_t first, uint64_t last)
{
    for (size_t i = 0; i < ss->nclaims; i++)
        if (ss->claims[i].chunk >= first && ss->claims[i].chunk <= last)
            return true;
    return false;
}

/* Called with list shared and mu: claims, for owner, what of first..last
 * s lacks and nobody copies; *n of them into chunks. nowait: -EAGAIN,
 * claiming nothing (chunks may be NULL), if a copy is needed. On an
 * error every claim of owner's is dropped. */
static int claim_range(struct snapset *ss, struct snap *s, uint64_t first, uint64_t last,
                       bool nowait, const void *owner, uint64_t *chunks, size_t *n)
{
    *n = 0;
    for (uint64_t c = first; c <= last; c++) {
        if (claim_find(ss, c))
            continue;
        if (bitmap_test(s->held, c))
            continue;
        if (nowait)
            return -EAGAIN;
        int r = claim_add(ss, s, c, owner);
        if (r < 0) {
            claims_drop(ss, owner, 0);
            *n = 0;
            return r;
        }
        chunks[(*n)++] = c;
    }
    return nowait && any_claimed(ss, first, last) ? -EAGAIN : 0;
}

/* Called with mu: queues the owner's copies and waits for their commit. */
static int commit_claimed(struct snapset *ss, struct snap *s, const void *owner)
{
    uint64_t gen = gsync_change(&ss->sync);
    for (size_t i = 0; i < ss->nclaims; i++)
        if (ss->claims[i].owner == owner)
            ss->claims[i].gen = gen;
    int r = gsync_wait(&ss->sync, gen, lead_commit, ss);
    return r < 0 ? r : s->err;
}

/* Called with list shared and mu: copies the n chunks claimed for chunks
 * (the owner token) into s and waits for their commit; a failed copy
 * drops the claims. */
static int copy_commit(struct snapset *ss, struct snap *s, uint64_t *chunks, size_t n)
{
    pthread_mutex_unlock(&ss->mu);
    int r = copy_claimed(ss, s, chunks, n);
    pthread_mutex_lock(&ss->mu);
    if (r < 0) {
        claims_drop(ss, chunks, 0);
        return r;
    }
    return commit_claimed(ss, s, chunks);
}

/* Called with list shared and mu: one round of copy-on-write of chunks
 * first..last into s; *busy if other writers are copying some of them. */
static int cow_round(struct snapset *ss, struct snap *s, uint64_t first, uint64_t last, bool nowait,
                     uint64_t *chunks, bool *busy)
{
    size_t n = 0;
    int r = s->err;
    if (r == 0)
        r = claim_range(ss, s, first, last, nowait, chunks, chunks, &n);
    if (r == 0 && n > 0)
        r = copy_commit(ss, s, chunks, n);
    *busy = r == 0 && any_claimed(ss, first, last);
    return r;
}

/* Called with list shared: copy-on-write of chunks first..last into s.
 * Chunks other writers are copying are waited for (their copy must be
 * durable before this write overwrites the chunk), then checked again: a
 * copy that failed left them for this writer. */
static int cow_locked(struct snapset *ss, struct snap *s, uint64_t first, uint64_t last,
                      bool nowait)
{
    /* nowait claims nothing: a check, with no list to fill. */
    uint64_t *chunks = nowait ? NULL : malloc((last - first + 1) * sizeof(*chunks));
    if (!nowait && !chunks)
        return fail(ss, ENOMEM, "no memory to copy %" PRIu64 " chunks", last - first + 1);
    pthread_mutex_lock(&ss->mu);
    bool busy;
    int r;
    while ((r = cow_round(ss, s, first, last, nowait, chunks, &busy)) == 0 && busy)
        while (any_claimed(ss, first, last))
            pthread_cond_wait(&ss->claim_done, &ss->mu);
    pthread_mutex_unlock(&ss->mu);
    free(chunks);
    return r;
}

/* The chunks of the newest snapshot s that the range rg covers, as
 * first..last; false if none (past s's size, or empty). */
static bool range_chunks(const struct snap *s, const struct snap_range *rg, uint64_t *first,
                         uint64_t *last)
{
    if (rg->count == 0 || rg->offset >= s->size)
        return false;
    uint64_t end = rg->offset + rg->count < s->size ? rg->offset + rg->count : s->size;
    *first = rg->offset >> SNAP_CHUNK_SHIFT;
    *last = (end - 1) >> SNAP_CHUNK_SHIFT;
    return true;
}

int snap_cow(struct snapset *ss, uint64_t offset, uint64_t count, bool nowait)
{
    if (count == 0 || atomic_load_explicit(&ss->visible, memory_order_acquire) == 0)
        return 0;
    pthread_rwlock_rdlock(&ss->list);
    int r = 0;
    /* The newest, even while it is being deleted: its delete merges what
     * it gains meanwhile. */
    struct snap *s = ss->n > 0 ? ss->snaps[ss->n - 1] : NULL;
    uint64_t first, last;
    if (s && range_chunks(s, &(struct snap_range){offset, count}, &first, &last))
        r = cow_locked(ss, s, first, last, nowait);
    pthread_rwlock_unlock(&ss->list);
    return r;
}

/* Called with list shared: snap_cow_many's copies into s, under one
 * commit; chunks claims them all (the owner token). */
static int cow_many_locked(struct snapset *ss, struct snap *s, const struct snap_range *rg,
                           size_t n, uint64_t *chunks)
{
    size_t total = 0;
    pthread_mutex_lock(&ss->mu);
    int r = s->err;
    for (size_t i = 0; i < n && r == 0; i++) {
        uint64_t first, last;
        size_t k = 0;
        if (range_chunks(s, &rg[i], &first, &last))
            r = claim_range(ss, s, first, last, false, chunks, chunks + total, &k);
        total += k;
    }
    if (r == 0 && total > 0)
        r = copy_commit(ss, s, chunks, total);
    pthread_mutex_unlock(&ss->mu);
    return r;
}

int snap_cow_many(struct snapset *ss, const struct snap_range *rg, size_t n)
{
    if (n == 0 || atomic_load_explicit(&ss->visible, memory_order_acquire) == 0)
        return 0;
    pthread_rwlock_rdlock(&ss->list);
    struct snap *s = ss->n > 0 ? ss->snaps[ss->n - 1] : NULL;
    size_t max = 0;
    for (size_t i = 0; s && i < n; i++) {
        uint64_t first, last;
        if (range_chunks(s, &rg[i], &first, &last))
            max += last - first + 1;
    }
    int r = 0;
    uint64_t *chunks = max ? malloc(max * sizeof(*chunks)) : NULL;
    if (max && !chunks)
        r = fail(ss, ENOMEM, "no memory to copy %zu chunks", max);
    else if (max)
        r = cow_many_locked(ss, s, rg, n, chunks);
    pthread_rwlock_unlock(&ss->list);
    free(chunks);
    return r;
}

/* ---- reading a snapshot ---------------------------------------------------- */

/* Called with list shared: the snapshot with this id users may see, or
 * NULL; *at its index. */
static struct snap *find_id(struct snapset *ss, uint64_t id, unsigned *at)
{
    for (unsigned i = 0; i < ss->n; i++) {
        if (ss->snaps[i]->id == id && !ss->snaps[i]->deleting) {
            *at = i;
            return ss->snaps[i];
        }
    }
    return NULL;
}

/* Called with list shared: where chunk c of snaps[at] lives: the oldest
 * snapshot from at on that holds it, or NULL for the live file. */
static struct snap *resolve(struct snapset *ss, unsigned at, uint64_t c)
{
    for (unsigned i = at; i < ss->n; i++)
        if (bitmap_test(ss->snaps[i]->held, c))
            return ss->snaps[i];
    return NULL;
}

/* Called with list shared: resolve(), once no copy of c is under way. */
static struct snap *resolve_settled(struct snapset *ss, unsigned at, uint64_t c)
{
    pthread_mutex_lock(&ss->mu);
    while (claim_find(ss, c))
        pthread_cond_wait(&ss->claim_done, &ss->mu);
    struct snap *t = resolve(ss, at, c);
    pthread_mutex_unlock(&ss->mu);
    return t;
}

/* Called with list shared: whether chunk c still comes from the live
 * file and nobody is copying it (so no write to it has begun). */
static bool still_live(struct snapset *ss, unsigned at, uint64_t c)
{
    pthread_mutex_lock(&ss->mu);
    bool live = !claim_find(ss, c) && resolve(ss, at, c) == NULL;
    pthread_mutex_unlock(&ss->mu);
    return live;
}

static int read_side(struct snapset *ss, const struct snap *t, void *buf, size_t len, uint64_t off)
{
    int fd, slot;
    int r = side_get(ss, t, &fd, &slot);
    if (r < 0)
        return r;
    r = fileio_pread(fd, buf, len, off);
    side_put(fd, slot);
    if (r < 0)
        r = sys_fail(ss, -r, "snapshot %" PRIu64 ": read its side file at %" PRIu64, t->id, off);
    return r;
}

/* Called with list shared: len bytes at off of snaps[at], within chunk c. */
static int read_piece(struct snapset *ss, unsigned at, uint64_t c, void *buf, size_t len,
                      uint64_t off)
{
    for (;;) {
        struct snap *t = resolve_settled(ss, at, c);
        if (t)
            return read_side(ss, t, buf, len, off);
        int r = fileio_pread(ss->live_fd, buf, len, off);
        if (r < 0)
            return sys_fail(ss, -r, "read the data file at %" PRIu64, off);
        if (still_live(ss, at, c))
            return 0;
    }
}

/* Called with list shared: the snapshot id, with [offset, offset+count)
 * inside it, on a node that holds a copy: -EBADF without a live file (the
 * copy left, snap_set_live(-1): its snapshots' chunks say nothing, and
 * snap_empty may have emptied them). */
static int check_range(struct snapset *ss, uint64_t id, uint64_t count, uint64_t offset,
                       unsigned *at)
{
    if (ss->live_fd < 0)
        return -EBADF;
    struct snap *s = find_id(ss, id, at);
    if (!s)
        return -ENOENT;
    if (offset > s->size || count > s->size - offset)
        return -EINVAL;
    return 0;
}

int snap_read(struct snapset *ss, uint64_t id, void *buf, uint32_t count, uint64_t offset)
{
    pthread_rwlock_rdlock(&ss->list);
    unsigned at;
    int r = check_range(ss, id, count, offset, &at);
    char *p = buf;
    while (r == 0 && count > 0) {
        uint64_t c = offset >> SNAP_CHUNK_SHIFT;
        uint64_t len = ((c + 1) << SNAP_CHUNK_SHIFT) - offset;
        if (len > count)
            len = count;
        r = read_piece(ss, at, c, p, len, offset);
        p += len;
        offset += len;
        count -= (uint32_t)len;
    }
    pthread_rwlock_unlock(&ss->list);
    return r;
}

/* ---- putting a snapshot's chunks (a resync) ------------------------------ */

/* Called with mu: once none of first..last is claimed, claims them all
 * for owner, so readers and copy-on-write of those chunks wait for it. */
static int claim_all(struct snapset *ss, struct snap *s, uint64_t first, uint64_t last,
                     const void *owner)
{
    while (any_claimed(ss, first, last))
        pthread_cond_wait(&ss->claim_done, &ss->mu);
    for (uint64_t c = first; c <= last; c++) {
        int r = claim_add(ss, s, c, owner);
        if (r < 0) {
            claims_drop(ss, owner, 0);
            return r;
        }
    }
    return 0;
}

/* Writes count bytes of buf at offset of s's side file, and syncs it. */
static int put_data(struct snapset *ss, struct snap *s, const unsigned char *buf, uint64_t count,
                    uint64_t offset)
{
    int fd, slot;
    int r = side_get(ss, s, &fd, &slot);
    if (r < 0)
        return r;
    for (uint64_t done = 0; r == 0 && done < count; done += SNAP_CHUNK) {
        uint64_t len = count - done < SNAP_CHUNK ? count - done : SNAP_CHUNK;
        r = write_chunk(fd, buf + done, len, offset + done);
        if (r < 0)
            r = sys_fail(ss, -r, "snapshot %" PRIu64 ": write its side file at %" PRIu64, s->id,
                         offset + done);
    }
    if (r == 0 && fdatasync(fd) < 0)
        r = sys_fail(ss, errno, "snapshot %" PRIu64 ": fdatasync its side file", s->id);
    side_put(fd, slot);
    return r;
}

/* Called with list shared: the data, durable, then the bits, durable,
 * with the chunks claimed throughout. */
static int put_locked(struct snapset *ss, struct snap *s, const void *buf, uint64_t count,
                      uint64_t offset)
{
    uint64_t first = offset >> SNAP_CHUNK_SHIFT, last = (offset + count - 1) >> SNAP_CHUNK_SHIFT;
    const char owner = 0; /* this call's claims */
    pthread_mutex_lock(&ss->mu);
    int r = s->err;
    if (r == 0)
        r = claim_all(ss, s, first, last, &owner);
    pthread_mutex_unlock(&ss->mu);
    if (r < 0)
        return r;
    r = put_data(ss, s, buf, count, offset);
    bool bits = r == 0;
    if (bits)
        r = bitmap_set(s->held, first, last) < 0 ? -EINVAL : bitmap_sync(s->held);
    if (bits && r < 0)
        sys_fail(ss, -r, "snapshot %" PRIu64 ": sync its map", s->id);
    pthread_mutex_lock(&ss->mu);
    if (bits && r < 0)
        s->err = -EIO; /* its map in memory may be ahead of its file */
    claims_drop(ss, &owner, 0);
    pthread_mutex_unlock(&ss->mu);
    return r;
}

int snap_put(struct snapset *ss, uint64_t id, const void *buf, uint32_t count, uint64_t offset)
{
    pthread_rwlock_rdlock(&ss->list);
    unsigned at;
    int r = check_range(ss, id, count, offset, &at);
    struct snap *s = r == 0 ? ss->snaps[at] : NULL;
    if (r == 0 && (count == 0 || offset % SNAP_CHUNK != 0 ||
                   (count % SNAP_CHUNK != 0 && offset + count != s->size)))
        r = -EINVAL;
    if (r == -EINVAL)
        fail(ss, EINVAL,
             "snapshot %" PRIu64 ": put %" PRIu32 " bytes at %" PRIu64 ": not whole "
             "chunks inside it",
             id, count, offset);
    if (r == 0)
        r = put_locked(ss, s, buf, count, offset);
    pthread_rwlock_unlock(&ss->list);
    return r;
}

/* Called with list shared: the extent of snaps[at] at pos, cut at the end
 * of its chunk and at end. */
static int extent_at(struct snapset *ss, unsigned at, uint64_t pos, uint64_t end,
                     struct snap_extent *e)
{
    uint64_t c = pos >> SNAP_CHUNK_SHIFT;
    struct snap *t = resolve(ss, at, c);
    /* One lseek pair for the whole run of chunks this file holds, not one
     * per chunk: tmpfs answers SEEK_HOLE by walking to the next hole, so
     * per chunk a fully written volume cost time in its size squared (a
     * 1 GiB backup did not end in 14 minutes). */
    uint64_t last = (end - 1) >> SNAP_CHUNK_SHIFT;
    while (c < last && resolve(ss, at, c + 1) == t)
        c++;
    uint64_t stop = (c + 1) << SNAP_CHUNK_SHIFT;
    if (stop > end)
        stop = end;
    if (!t)
        return fileio_extent(ss->live_fd, pos, stop, false, &e->length, &e->hole);
    int fd, slot;
    int r = side_get(ss, t, &fd, &slot);
    if (r < 0)
        return r;
    r = fileio_extent(fd, pos, stop, false, &e->length, &e->hole);
    side_put(fd, slot);
    return r;
}

int snap_extents(struct snapset *ss, uint64_t id, uint32_t count, uint64_t offset,
                 struct snap_extent *ext, unsigned max)
{
    pthread_rwlock_rdlock(&ss->list);
    unsigned at, n = 0;
    int r = check_range(ss, id, count, offset, &at);
    uint64_t end = offset + count;
    while (r == 0 && offset < end) {
        struct snap_extent e;
        r = extent_at(ss, at, offset, end, &e);
        if (r < 0)
            break;
        if (n > 0 && ext[n - 1].hole == e.hole)
            ext[n - 1].length += e.length;
        else if (n < max)
            ext[n++] = e;
        else
            break;
        offset += e.length;
    }
    pthread_rwlock_unlock(&ss->list);
    if (r < 0 && n == 0)
        return r == -ENOENT || r == -EINVAL || r == -EBADF
                   ? r
                   : sys_fail(ss, -r, "allocation of a snapshot");
    return (int)n;
}

/* Called with list shared: ORs into out (bit i: chunk first + i) the
 * chunks held among first..first+n-1. */
static void held_into(struct bitmap *held, uint64_t first, uint64_t n, struct bitmap *out)
{
    uint64_t end = first + n < bitmap_nbits(held) ? first + n : bitmap_nbits(held);
    for (uint64_t c = bitmap_next(held, first); c < end; c = bitmap_next(held, c + 1))
        bitmap_set(out, c - first, c - first);
}

int snap_changed(struct snapset *ss, uint64_t since, uint64_t upto, uint64_t live_size,
                 uint64_t offset, uint64_t length, struct bitmap **out)
{
    *out = NULL;
    pthread_rwlock_rdlock(&ss->list);
    unsigned from, to = ss->n;
    int r = 0;
    struct snap *s = find_id(ss, since, &from), *u = NULL;
    if (ss->live_fd < 0)
        r = -EBADF; /* as check_range */
    else if (!s || (upto != SNAP_LIVE && !(u = find_id(ss, upto, &to))))
        r = -ENOENT;
    else if (u && u->id <= s->id)
        r = -EINVAL;
    uint64_t newer = u ? u->size : live_size;
    if (r == 0 &&
        (offset % SNAP_CHUNK != 0 || length == 0 || offset > newer || length > newer - offset))
        r = -EINVAL;
    uint64_t first = offset >> SNAP_CHUNK_SHIFT, n = chunks_of(length);
    if (r == 0)
        r = bitmap_open(NULL, n, SNAP_CHUNK_SHIFT, out);
    /* A chunk written while snapshot i was the newest was copied into it
     * (or, if i was deleted, into the older one that needed it). */
    for (unsigned i = from; r == 0 && i < to; i++)
        held_into(ss->snaps[i]->held, first, n, *out);
    uint64_t past = chunks_of(r == 0 ? s->size : 0);
    if (r == 0 && past < first + n)
        bitmap_set(*out, past > first ? past - first : 0, n - 1);
    pthread_rwlock_unlock(&ss->list);
    return r;
}

/* ---- the list ------------------------------------------------------------ */

/* The bytes s's side file holds: its chunks, the last one clipped. */
static uint64_t exclusive_of(const struct snap *s)
{
    if (!s->held)
        return 0;
    uint64_t bytes = bitmap_count(s->held) << SNAP_CHUNK_SHIFT;
    uint64_t last = chunks_of(s->size) - 1;
    if (s->size % SNAP_CHUNK != 0 && bitmap_test(s->held, last))
        bytes -= SNAP_CHUNK - s->size % SNAP_CHUNK;
    return bytes;
}

static void info_of(const struct snap *s, struct snap_info *out)
{
    *out = (struct snap_info){
        .id = s->id, .time = s->time, .size = s->size, .exclusive = exclusive_of(s)};
    memcpy(out->name, s->name, sizeof(out->name));
}

unsigned snap_count(struct snapset *ss)
{
    return atomic_load_explicit(&ss->visible, memory_order_acquire);
}

int snap_list(struct snapset *ss, struct snap_info *out, unsigned max)
{
    pthread_rwlock_rdlock(&ss->list);
    unsigned n = 0;
    for (unsigned i = 0; i < ss->n; i++)
        if (!ss->snaps[i]->deleting && n++ < max)
            info_of(ss->snaps[i], &out[n - 1]);
    pthread_rwlock_unlock(&ss->list);
    return (int)n;
}

/* Called with list held: the visible snapshot named name, or NULL. */
static struct snap *find_name(struct snapset *ss, const char *name)
{
    for (unsigned i = 0; i < ss->n; i++)
        if (!ss->snaps[i]->deleting && strcmp(ss->snaps[i]->name, name) == 0)
            return ss->snaps[i];
    return NULL;
}

int snap_find(struct snapset *ss, const char *name, struct snap_info *out)
{
    pthread_rwlock_rdlock(&ss->list);
    struct snap *s = find_name(ss, name);
    if (s)
        info_of(s, out);
    pthread_rwlock_unlock(&ss->list);
    return s ? 0 : -ENOENT;
}

/* ---- files of one snapshot ------------------------------------------------- */

/* Removes id's side file and map (either may be missing) durably. */
static int remove_files(struct snapset *ss, uint64_t id)
{
    char name[NAME_MAX + 1], path[PATH_MAX];
    side_name(ss, id, name, sizeof(name));
    map_path(ss, id, path, sizeof(path));
    int r = 0;
    bool removed = false;
    if (unlinkat(store_snap_dir_fd(ss->st), name, 0) == 0)
        removed = true;
    else if (errno != ENOENT)
        r = sys_fail(ss, errno, "remove \"%s/%s\"", store_snap_dir_path(ss->st), name);
    if (unlink(path) == 0)
        removed = true;
    else if (errno != ENOENT && r == 0)
        r = sys_fail(ss, errno, "remove \"%s\"", path);
    if (removed && fsync(store_snap_dir_fd(ss->st)) < 0 && r == 0)
        r = sys_fail(ss, errno, "fsync \"%s\"", store_snap_dir_path(ss->st));
    return r;
}

static void snap_free(struct snap *s)
{
    if (!s)
        return;
    side_forget(s);
    bitmap_close(s->held);
    free(s);
}

/* Creates s's side file (sparse, s->size bytes) and its empty map, both
 * durable. */
static int create_files(struct snapset *ss, struct snap *s)
{
    char name[NAME_MAX + 1], path[PATH_MAX];
    side_name(ss, s->id, name, sizeof(name));
    int fd = openat(store_snap_dir_fd(ss->st), name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return sys_fail(ss, errno, "create \"%s/%s\"", store_snap_dir_path(ss->st), name);
    int r = 0;
    if (ftruncate(fd, (off_t)s->size) < 0 || fsync(fd) < 0)
        r = sys_fail(ss, errno, "size \"%s/%s\"", store_snap_dir_path(ss->st), name);
    close(fd);
    map_path(ss, s->id, path, sizeof(path));
    /* bitmap_open fsyncs the directory, for the side file too. */
    if (r == 0)
        r = bitmap_open(path, chunks_of(s->size), SNAP_CHUNK_SHIFT, &s->held);
    return r;
}

/* Called with admin and list exclusive: s's map cleared, then its side
 * file emptied (sparse, its size kept), both durable. In that order: a
 * crash in between leaves space behind, never a bit naming a chunk that
 * is gone (a delete's merge would take it for data). */
static int empty_files(struct snapset *ss, struct snap *s)
{
    int r = bitmap_clear(s->held);
    if (r < 0)
        return r;
    char name[NAME_MAX + 1];
    side_name(ss, s->id, name, sizeof(name));
    side_forget(s);
    int fd = openat(store_snap_dir_fd(ss->st), name, O_RDWR | O_TRUNC | O_CLOEXEC);
    if (fd < 0)
        return sys_fail(ss, errno, "empty \"%s/%s\"", store_snap_dir_path(ss->st), name);
    if (ftruncate(fd, (off_t)s->size) < 0 || fsync(fd) < 0)
        r = sys_fail(ss, errno, "empty \"%s/%s\"", store_snap_dir_path(ss->st), name);
    close(fd);
    return r;
}

/* Whether both of id's files exist. */
static bool files_exist(struct snapset *ss, uint64_t id)
{
    char name[NAME_MAX + 1], path[PATH_MAX];
    side_name(ss, id, name, sizeof(name));
    map_path(ss, id, path, sizeof(path));
    return faccessat(store_snap_dir_fd(ss->st), name, F_OK, 0) == 0 && access(path, F_OK) == 0;
}

/* ---- create ---------------------------------------------------------------- */

static int check_new(struct snapset *ss, uint64_t id, const char *name, uint64_t size)
{
    if (id < ss->next_id)
        return fail(ss, EINVAL,
                    "snapshot \"%s\": id %" PRIu64 " is not above every id the volume had (%" PRIu64
                    " and below are taken)",
                    name, id, ss->next_id - 1);
    if (!store_name_valid(name))
        return fail(ss, EINVAL, "invalid snapshot name \"%s\"", name);
    if (size == 0)
        return fail(ss, EINVAL, "snapshot \"%s\": size 0", name);
    if (size > SNAP_SIZE_MAX)
        return fail(ss, EFBIG, "snapshot \"%s\": size %" PRIu64 " above the maximum %" PRIu64, name,
                    size, SNAP_SIZE_MAX);
    if (find_name(ss, name))
        return fail(ss, EEXIST, "snapshot \"%s\" exists", name);
    if (ss->n >= SNAP_MAX)
        return fail(ss, ENOSPC, "snapshot \"%s\": %d snapshots already, the maximum", name,
                    SNAP_MAX);
    return 0;
}

/* Called with admin: makes id the next id in the index, durably, unless
 * it is already: a create a crash cuts short leaves the files of the next
 * id only, which the open removes. One more index write when the cluster's
 * ids skip some (they are its table versions). */
static int reserve_id(struct snapset *ss, uint64_t id)
{
    if (id == ss->next_id)
        return 0;
    uint64_t old = ss->next_id;
    ss->next_id = id;
    int r = index_write(ss);
    if (r < 0)
        ss->next_id = old;
    return r;
}

/* Called with admin: the new snapshot's files, then the index naming it. */
static int create_locked(struct snapset *ss, uint64_t id, const char *name, uint64_t size,
                         int64_t time, struct snap_info *out)
{
    int r = check_new(ss, id, name, size);
    if (r < 0)
        return r;
    struct snap *s = calloc(1, sizeof(*s));
    if (!s)
        return fail(ss, ENOMEM, "snapshot \"%s\": out of memory", name);
    *s = (struct snap){.id = id, .time = time, .size = size};
    snprintf(s->name, sizeof(s->name), "%s", name);
    r = reserve_id(ss, id);
    /* Left by a create of this id a crash cut short (reserved, not named). */
    if (r == 0)
        r = remove_files(ss, s->id);
    if (r == 0)
        r = create_files(ss, s);
    pthread_rwlock_wrlock(&ss->list);
    if (r == 0)
        r = add_snap(ss, s) < 0 ? fail(ss, ENOMEM, "snapshot \"%s\": out of memory", name) : 0;
    if (r == 0) {
        ss->next_id = id + 1;
        r = index_write(ss);
        if (r < 0) {
            ss->n--;
            ss->next_id = id;
        }
    }
    if (r == 0)
        atomic_fetch_add(&ss->visible, 1);
    pthread_rwlock_unlock(&ss->list);
    if (r < 0) {
        snap_free(s);
        remove_files(ss, id);
        return r;
    }
    info_of(s, out);
    return 0;
}

static void merger_wait(struct snapset *ss);
static bool merger_busy(struct snapset *ss);

int snap_create(struct snapset *ss, uint64_t id, const char *name, uint64_t size, int64_t time,
                struct snap_info *out)
{
    pthread_mutex_lock(&ss->admin);
    /* Snapshots being deleted count until their merge drops them: at the
     * limit, a create waits for the merges pending (the cluster admitted
     * it counting only the visible ones). */
    while (ss->n >= SNAP_MAX && atomic_load(&ss->visible) < ss->n) {
        pthread_mutex_unlock(&ss->admin);
        merger_wait(ss);
        pthread_mutex_lock(&ss->admin);
        if (ss->n >= SNAP_MAX && atomic_load(&ss->visible) < ss->n && !merger_busy(ss))
            break;
    }
    int r = create_locked(ss, id, name, size, time, out);
    pthread_mutex_unlock(&ss->admin);
    return r;
}

/* ---- delete ---------------------------------------------------------------- */

/* Chunks a background merge copies per hold of the list (4 MiB): a create
 * waits for at most one batch. */
#define MERGE_BATCH 64

/* Copies into p the chunks first..end-1 d holds and p lacks (below p's
 * size), durably: data, fdatasync, bits, map sync. Runs with list held
 * (shared while writers may still copy into d: a last pass, exclusive,
 * takes what d gained meanwhile). */
static int merge(struct snapset *ss, struct snap *d, struct snap *p, uint64_t first, uint64_t end)
{
    uint64_t nbits = chunks_of(p->size);
    if (end > nbits)
        end = nbits;
    struct bitmap *copied;
    int r = bitmap_open(NULL, nbits, SNAP_CHUNK_SHIFT, &copied);
    if (r < 0)
        return r;
    unsigned char *buf = malloc(SNAP_CHUNK);
    int dfd = -1, dslot, pfd = -1, pslot;
    if (!buf)
        r = fail(ss, ENOMEM, "no memory to merge snapshot %" PRIu64, d->id);
    if (r == 0)
        r = side_get(ss, d, &dfd, &dslot);
    if (r == 0 && (r = side_get(ss, p, &pfd, &pslot)) < 0)
        side_put(dfd, dslot);
    for (uint64_t c = bitmap_next(d->held, first); r == 0 && c < end;
         c = bitmap_next(d->held, c + 1)) {
        if (bitmap_test(p->held, c))
            continue;
        uint64_t off = c << SNAP_CHUNK_SHIFT;
        uint64_t len = p->size - off < SNAP_CHUNK ? p->size - off : SNAP_CHUNK;
        r = copy_range(ss, dfd, pfd, off, len, buf);
        if (r < 0)
            r = sys_fail(ss, -r, "merge chunk %" PRIu64 " of snapshot %" PRIu64 " into %" PRIu64, c,
                         d->id, p->id);
        else
            bitmap_set(copied, c, c);
    }
    if (r == 0 && bitmap_count(copied) > 0 && fdatasync(pfd) < 0)
        r = sys_fail(ss, errno, "snapshot %" PRIu64 ": fdatasync its side file", p->id);
    if (pfd >= 0) {
        side_put(dfd, dslot);
        side_put(pfd, pslot);
    }
    for (uint64_t c = bitmap_next(copied, 0); r == 0 && c < nbits; c = bitmap_next(copied, c + 1))
        bitmap_set(p->held, c, c);
    if (r == 0)
        r = bitmap_sync(p->held);
    free(buf);
    bitmap_close(copied);
    return r;
}

/* Called with list exclusive and admin: drops snaps[at], already merged,
 * and its files, then the index line. */
static void drop_merged(struct snapset *ss, unsigned at)
{
    struct snap *d = ss->snaps[at];
    memmove(&ss->snaps[at], &ss->snaps[at + 1], (ss->n - at - 1) * sizeof(*ss->snaps));
    ss->n--;
    uint64_t id = d->id;
    snap_free(d);
    if (remove_files(ss, id) < 0 || index_write(ss) < 0)
        qb_log(LOG_WARNING,
               "volume \"%s\": snapshot %" PRIu64 " deleted; its files or index line stay until "
               "the volume opens again",
               ss->volume, id);
}

/* Called with list held: the snapshot just older than d, or NULL. */
static struct snap *older_than(struct snapset *ss, const struct snap *d, unsigned *at)
{
    *at = 0;
    while (ss->snaps[*at] != d)
        (*at)++;
    return *at > 0 ? ss->snaps[*at - 1] : NULL;
}

/* Merges d, marked deleting, into the snapshot older than it, a batch at
 * a time with list shared, beside the volume's I/O, creates and deletes
 * (only a merge drops a snapshot, so d and its older neighbour stay).
 * -ECANCELED once stop is set: the next open finishes the delete. */
static int merge_batches(struct snapset *ss, struct snap *d)
{
    int r = 0;
    for (uint64_t c = 0; r == 0; c += MERGE_BATCH) {
        if (atomic_load(&ss->stop))
            return -ECANCELED;
        pthread_rwlock_rdlock(&ss->list);
        unsigned at;
        struct snap *p = older_than(ss, d, &at);
        bool done = !p || c >= chunks_of(p->size);
        if (!done)
            r = merge(ss, d, p, c, c + MERGE_BATCH);
        pthread_rwlock_unlock(&ss->list);
        if (done)
            break;
    }
    return r;
}

/* Called with admin: finishes the delete of d, marked deleting in the
 * index, with list exclusive: merges what d gained since merge_batches
 * (or everything, at open), then drops it. */
static int finish_delete(struct snapset *ss, struct snap *d)
{
    pthread_rwlock_wrlock(&ss->list);
    unsigned at;
    struct snap *p = older_than(ss, d, &at);
    int r = p ? merge(ss, d, p, 0, UINT64_MAX) : 0;
    if (r == 0)
        drop_merged(ss, at);
    pthread_rwlock_unlock(&ss->list);
    return r;
}

/* Called with admin: the oldest snapshot marked deleting, or NULL. */
static struct snap *next_deleting(struct snapset *ss)
{
    struct snap *d = NULL;
    pthread_rwlock_rdlock(&ss->list);
    for (unsigned i = 0; i < ss->n && !d; i++)
        if (ss->snaps[i]->deleting)
            d = ss->snaps[i];
    pthread_rwlock_unlock(&ss->list);
    return d;
}

/* Finishes ss's deletes, oldest first. A merge that fails is left to the
 * next delete or open. */
static void merge_all(struct snapset *ss)
{
    pthread_mutex_lock(&ss->admin);
    struct snap *d;
    while (!atomic_load(&ss->stop) && (d = next_deleting(ss)) != NULL) {
        uint64_t id = d->id;
        pthread_mutex_unlock(&ss->admin);
        int r = merge_batches(ss, d);
        pthread_mutex_lock(&ss->admin);
        if (r == 0)
            r = finish_delete(ss, d);
        if (r == -ECANCELED)
            break;
        if (r < 0) {
            qb_log(LOG_ERR,
                   "volume \"%s\": snapshot %" PRIu64 ": its delete's merge failed (%s); the next "
                   "delete or open of the volume tries again",
                   ss->volume, id, strerror(-r));
            break;
        }
    }
    pthread_mutex_unlock(&ss->admin);
}

/* The mergers: a few threads for the whole process, started on first use
 * and idle until it exits, that finish deletes in the background, one
 * volume at a time each (a queue of volumes with deletes pending). */
#define MERGERS 2

static struct {
    pthread_mutex_t mu;
    pthread_cond_t work; /* a volume queued */
    pthread_cond_t done; /* a volume's merges ended (merging went false) */
    struct snapset *head, *tail;
    unsigned threads, idle;
} mergers = {.mu = PTHREAD_MUTEX_INITIALIZER,
             .work = PTHREAD_COND_INITIALIZER,
             .done = PTHREAD_COND_INITIALIZER};

/* Called with mergers.mu. */
static void merger_enqueue(struct snapset *ss)
{
    ss->queued = true;
    ss->queue_next = NULL;
    if (mergers.tail)
        mergers.tail->queue_next = ss;
    else
        mergers.head = ss;
    mergers.tail = ss;
    pthread_cond_signal(&mergers.work);
}

/* Called with mergers.mu: takes ss out of the queue. */
static void merger_dequeue(struct snapset *ss)
{
    struct snapset **pp = &mergers.head, *prev = NULL;
    while (*pp && *pp != ss) {
        prev = *pp;
        pp = &(*pp)->queue_next;
    }
    if (!*pp)
        return;
    *pp = ss->queue_next;
    if (mergers.tail == ss)
        mergers.tail = prev;
    ss->queued = false;
}

static void *merger_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mergers.mu);
    for (;;) {
        while (!mergers.head) {
            mergers.idle++;
            pthread_cond_wait(&mergers.work, &mergers.mu);
            mergers.idle--;
        }
        struct snapset *ss = mergers.head;
        merger_dequeue(ss);
        ss->merging = true;
        do {
            ss->again = false;
            pthread_mutex_unlock(&mergers.mu);
            merge_all(ss);
            pthread_mutex_lock(&mergers.mu);
        } while (ss->again && !atomic_load(&ss->stop));
        ss->merging = false;
        pthread_cond_broadcast(&mergers.done);
    }
    return NULL;
}

/* ss has a delete to finish: a merger will. -errno if no merger runs and
 * none could be started. */
static int merger_kick(struct snapset *ss)
{
    pthread_mutex_lock(&mergers.mu);
    int r = 0;
    if (ss->merging)
        ss->again = true;
    else if (!ss->queued)
        merger_enqueue(ss);
    if (mergers.idle == 0 && mergers.threads < MERGERS) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int e = pthread_create(&t, &attr, merger_main, NULL);
        pthread_attr_destroy(&attr);
        if (e == 0)
            mergers.threads++;
        else if (mergers.threads == 0)
            r = -e;
    }
    if (r < 0)
        merger_dequeue(ss);
    pthread_mutex_unlock(&mergers.mu);
    return r < 0 ? sys_fail(ss, -r, "start a thread to finish deletes") : 0;
}

/* Whether ss's deletes are queued or being merged. */
static bool merger_busy(struct snapset *ss)
{
    pthread_mutex_lock(&mergers.mu);
    bool busy = ss->queued || ss->merging;
    pthread_mutex_unlock(&mergers.mu);
    return busy;
}

/* Waits until ss's deletes are neither queued nor being merged. Called
 * without admin. */
static void merger_wait(struct snapset *ss)
{
    pthread_mutex_lock(&mergers.mu);
    while (ss->queued || ss->merging)
        pthread_cond_wait(&mergers.done, &mergers.mu);
    pthread_mutex_unlock(&mergers.mu);
}

/* Stops ss's merges after their batch and waits for them; takes ss out of
 * the queue. Called without admin. */
static void merger_stop(struct snapset *ss)
{
    atomic_store(&ss->stop, true);
    pthread_mutex_lock(&mergers.mu);
    merger_dequeue(ss);
    while (ss->merging)
        pthread_cond_wait(&mergers.done, &mergers.mu);
    pthread_mutex_unlock(&mergers.mu);
}

int snap_delete(struct snapset *ss, uint64_t id)
{
    pthread_mutex_lock(&ss->admin);
    pthread_rwlock_wrlock(&ss->list);
    unsigned at;
    struct snap *d = find_id(ss, id, &at);
    int r = d ? 0 : -ENOENT;
    if (r == 0) {
        d->deleting = true;
        r = index_write(ss);
        if (r < 0)
            d->deleting = false;
        else
            atomic_fetch_sub(&ss->visible, 1);
    }
    pthread_rwlock_unlock(&ss->list);
    /* The merge (seconds for a snapshot holding gigabytes) runs in the
     * background: the caller (a cut's commit on the node's main loop)
     * goes on at once. Without a thread, it runs here. */
    if (r == 0 && merger_kick(ss) < 0) {
        r = merge_batches(ss, d);
        if (r == 0)
            r = finish_delete(ss, d);
    }
    pthread_mutex_unlock(&ss->admin);
    return r;
}

/* ---- open, close ------------------------------------------------------------ */

/* Loads the maps and finishes the deletes a crash interrupted. */
static int load(struct snapset *ss)
{
    int r = index_read(ss);
    for (unsigned i = 0; r == 0 && i < ss->n; i++) {
        struct snap *s = ss->snaps[i];
        char path[PATH_MAX];
        map_path(ss, s->id, path, sizeof(path));
        /* A delete removes the files only after its merge is durable. */
        if (s->deleting && !files_exist(ss, s->id))
            continue;
        if (!files_exist(ss, s->id))
            return fail(ss, EINVAL,
                        "snapshot %" PRIu64 " (\"%s\"): its side file or map is missing", s->id,
                        s->name);
        r = bitmap_open(path, chunks_of(s->size), SNAP_CHUNK_SHIFT, &s->held);
        if (r == 0 && bitmap_nbits(s->held) != chunks_of(s->size))
            r = fail(ss, EINVAL, "map \"%s\": does not match the snapshot's size", path);
    }
    /* No leftover of a create a crash cut short outlives the open. */
    if (r == 0)
        r = remove_files(ss, ss->next_id);
    for (unsigned i = 0; r == 0 && i < ss->n;) {
        struct snap *s = ss->snaps[i];
        if (!s->deleting) {
            atomic_fetch_add(&ss->visible, 1);
            i++;
            continue;
        }
        qb_log(LOG_NOTICE, "volume \"%s\": finishing the delete of snapshot %" PRIu64 " (\"%s\")",
               ss->volume, s->id, s->name);
        bool merged = !s->held;
        pthread_mutex_lock(&ss->admin);
        r = merged ? 0 : finish_delete(ss, s);
        if (r == 0 && merged) {
            pthread_rwlock_wrlock(&ss->list);
            drop_merged(ss, i);
            pthread_rwlock_unlock(&ss->list);
        }
        pthread_mutex_unlock(&ss->admin);
    }
    return r;
}

int snap_open(struct store *st, const char *uuid, const char *volume, int live_fd,
              struct snapset **out)
{
    *out = NULL;
    struct snapset *ss = calloc(1, sizeof(*ss));
    if (!ss)
        return -ENOMEM;
    ss->st = st;
    ss->live_fd = live_fd;
    snprintf(ss->uuid, sizeof(ss->uuid), "%s", uuid);
    snprintf(ss->volume, sizeof(ss->volume), "%s", volume);
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* A delete's final step must not starve behind a stream of writes. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int r = -pthread_rwlock_init(&ss->list, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (r == 0)
        r = -pthread_mutex_init(&ss->admin, NULL);
    if (r == 0)
        r = -pthread_mutex_init(&ss->mu, NULL);
    if (r == 0)
        r = -pthread_cond_init(&ss->claim_done, NULL);
    if (r == 0)
        r = gsync_init(&ss->sync, &ss->mu);
    if (r < 0) {
        fail(ss, -r, "initialise the locks");
        free(ss);
        return r;
    }
    r = load(ss);
    if (r < 0) {
        snap_close(ss);
        return r;
    }
    *out = ss;
    return 0;
}

void snap_set_live(struct snapset *ss, int live_fd)
{
    /* Exclusive: no copy-on-write or read of the live file is in flight. */
    pthread_rwlock_wrlock(&ss->list);
    ss->live_fd = live_fd;
    pthread_rwlock_unlock(&ss->list);
}

void snap_close(struct snapset *ss)
{
    if (!ss)
        return;
    merger_stop(ss);
    for (unsigned i = 0; i < ss->n; i++)
        snap_free(ss->snaps[i]);
    free(ss->snaps);
    free(ss->claims);
    gsync_destroy(&ss->sync);
    pthread_cond_destroy(&ss->claim_done);
    pthread_mutex_destroy(&ss->mu);
    pthread_mutex_destroy(&ss->admin);
    pthread_rwlock_destroy(&ss->list);
    free(ss);
}

int snap_empty(struct snapset *ss)
{
    pthread_mutex_lock(&ss->admin);
    pthread_rwlock_wrlock(&ss->list);
    int r = 0;
    /* A copy added here again since (snap_set_live) is being filled. */
    for (unsigned i = 0; ss->live_fd < 0 && i < ss->n; i++) {
        int e = empty_files(ss, ss->snaps[i]);
        if (r == 0)
            r = e;
    }
    pthread_rwlock_unlock(&ss->list);
    pthread_mutex_unlock(&ss->admin);
    return r;
}

int snap_remove_all(struct snapset *ss)
{
    merger_stop(ss);
    pthread_mutex_lock(&ss->admin);
    pthread_rwlock_wrlock(&ss->list);
    int r = 0;
    for (unsigned i = 0; i < ss->n; i++) {
        uint64_t id = ss->snaps[i]->id;
        snap_free(ss->snaps[i]);
        int e = remove_files(ss, id);
        if (r == 0)
            r = e;
    }
    ss->n = 0;
    atomic_store(&ss->visible, 0);
    atomic_store(&ss->stop, false);
    char name[NAME_MAX + 1];
    index_name(ss, name, sizeof(name));
    if (unlinkat(store_snap_dir_fd(ss->st), name, 0) < 0 && errno != ENOENT && r == 0)
        r = sys_fail(ss, errno, "remove \"%s/%s\"", store_snap_dir_path(ss->st), name);
    pthread_rwlock_unlock(&ss->list);
    pthread_mutex_unlock(&ss->admin);
    return r;
}
