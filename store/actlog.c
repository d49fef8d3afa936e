/* actlog.c - the activity log (see actlog.h for the format and the rules).
 *
 * The entries live in an array with a hash index (rebuilt whole when some
 * are removed, which only a checkpoint does). Appends are group commits: a
 * writer queues its new keys as PENDING; the first one to find the file
 * idle (busy false) writes every PENDING record at the end of the file in
 * one pwrite, fdatasyncs, and marks them DURABLE, while writers who came
 * meanwhile wait for the next round. A rewrite (to remove entries) takes
 * the file the same way, so it never races an append to the old inode.
 * A failed append drops its entries and bumps fail_gen: a writer whose key
 * is gone fails if an append failed since it queued it, and otherwise (a
 * checkpoint evicted it meanwhile) queues it again.
 */
#include "store/actlog.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <isa-l/crc.h>
#include <qb/qblog.h>

static const char MAGIC[8] = {'V', 'S', 'A', 'N', 'A', 'L', '0', '1'};

enum ent_state {
    PENDING,  /* queued for the next append */
    WRITING,  /* in the append being synced */
    DURABLE,  /* on disk */
    EVICTING, /* on disk, about to be removed: not logged for writers */
};

struct ent {
    struct actlog_key key;
    enum ent_state state;
    bool carried;  /* in the file at open (counts beyond max) */
    uint32_t pins; /* writers between actlog_add and actlog_unpin */
    uint64_t used; /* al->clock when last added or asked for */
    int32_t next;  /* in its hash chain, or -1 */
};

struct actlog {
    char *path;
    int fd;
    size_t max, n, cap;
    size_t fresh;      /* entries not carried: at most max */
    struct ent *e;     /* cap = max + the entries carried at open */
    int32_t *bucket;   /* nbuckets chain heads, -1 if empty */
    size_t nbuckets;   /* a power of two, >= 2 * cap */
    uint64_t end;      /* file offset of the next append */
    uint64_t clock;    /* LRU stamps */
    bool busy;         /* a thread writes the file */
    bool dir_dirty;    /* a rename whose directory fsync failed */
    size_t reserved;   /* fresh slots of entries a rewrite is removing */
    int failed;        /* -errno of the last failed append, for its waiters */
    uint64_t fail_gen; /* failed appends so far */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* an append or rewrite finished, or an eviction ended */
};

static uint32_t crc32c(const void *buf, size_t len)
{
    return ~crc32_iscsi((unsigned char *)buf, (int)len, ~0u);
}

static uint32_t key_crc(const struct actlog_key *k)
{
    unsigned char b[12];
    memcpy(b, &k->volume, 4);
    memcpy(b + 4, &k->region, 8);
    return crc32c(b, sizeof b);
}

static size_t hash(const struct actlog *al, const struct actlog_key *k)
{
    uint64_t h = (k->region ^ ((uint64_t)k->volume << 32)) * UINT64_C(0x9e3779b97f4a7c15);
    return (size_t)(h >> 32) & (al->nbuckets - 1);
}

static struct ent *find(struct actlog *al, const struct actlog_key *k)
{
    for (int32_t i = al->bucket[hash(al, k)]; i >= 0; i = al->e[i].next)
        if (al->e[i].key.volume == k->volume && al->e[i].key.region == k->region)
            return &al->e[i];
    return NULL;
}

static void insert(struct actlog *al, const struct actlog_key *k, enum ent_state s, bool carried)
{
    size_t h = hash(al, k);
    al->e[al->n] = (struct ent){*k, s, carried, 0, al->clock++, al->bucket[h]};
    al->bucket[h] = (int32_t)al->n++;
    al->fresh += !carried;
}

/* Keeps the entries keep() says yes to, in their order, and re-indexes. */
static void retain(struct actlog *al, bool (*keep)(struct ent *x, void *arg), void *arg)
{
    size_t k = 0;
    al->fresh = 0;
    for (size_t i = 0; i < al->n; i++)
        if (keep(&al->e[i], arg)) {
            al->fresh += !al->e[i].carried;
            al->e[k++] = al->e[i];
        }
    al->n = k;
    for (size_t i = 0; i < al->nbuckets; i++)
        al->bucket[i] = -1;
    for (size_t i = 0; i < al->n; i++) {
        size_t h = hash(al, &al->e[i].key);
        al->e[i].next = al->bucket[h];
        al->bucket[h] = (int32_t)i;
    }
}

/* ---- the file -------------------------------------------------------- */

static void put_header(unsigned char *h)
{
    memset(h, 0, ACTLOG_HEADER_SIZE);
    memcpy(h, MAGIC, sizeof MAGIC);
    uint32_t version = ACTLOG_VERSION, rec = ACTLOG_RECORD_SIZE;
    memcpy(h + 8, &version, 4);
    memcpy(h + 12, &rec, 4);
    uint32_t crc = crc32c(h, ACTLOG_HEADER_SIZE - 4);
    memcpy(h + ACTLOG_HEADER_SIZE - 4, &crc, 4);
}

static void put_record(unsigned char *r, const struct actlog_key *k)
{
    uint32_t crc = key_crc(k);
    memcpy(r, &k->volume, 4);
    memcpy(r + 4, &crc, 4);
    memcpy(r + 8, &k->region, 8);
}

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        len -= (size_t)w;
        off += w;
    }
    return 0;
}

static bool durable_or_evicting(struct ent *x, void *arg)
{
    (void)arg;
    return x->state == DURABLE || x->state == EVICTING;
}

/* fsyncs the directory holding the log, so a rename into it lasts. */
static int sync_dir(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int r = dfd < 0 || fsync(dfd) < 0 ? -errno : 0;
    if (dfd >= 0)
        close(dfd);
    return r;
}

/* With the file taken (busy) and mu held: writes path.tmp with the entries
 * on disk (DURABLE, EVICTING), renames it over path, and appends go to it
 * from then on (*renamed). If the directory's fsync fails the rename may
 * not last: dir_dirty makes the next appends sync it before they count.
 * mu is released during the I/O; the table may gain PENDING entries
 * meanwhile, which the next append writes. */
static int rewrite(struct actlog *al, bool *renamed)
{
    size_t len = ACTLOG_HEADER_SIZE + al->n * ACTLOG_RECORD_SIZE, k = 0;
    unsigned char *buf = malloc(len);
    *renamed = false;
    if (!buf)
        return -ENOMEM;
    put_header(buf);
    for (size_t i = 0; i < al->n; i++)
        if (durable_or_evicting(&al->e[i], NULL))
            put_record(buf + ACTLOG_HEADER_SIZE + ACTLOG_RECORD_SIZE * k++, &al->e[i].key);
    len = ACTLOG_HEADER_SIZE + k * ACTLOG_RECORD_SIZE;
    pthread_mutex_unlock(&al->mu);

    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp", al->path);
    const char *what = "create";
    int r = 0, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        r = -errno;
    if (r == 0 && (what = "write", r = write_all(fd, buf, len, 0)) == 0 &&
        (what = "fsync", fsync(fd) < 0))
        r = -errno;
    if (r == 0 && (what = "rename", rename(tmp, al->path) < 0))
        r = -errno;
    bool moved = r == 0;
    if (moved) { /* a failure is logged below; dir_dirty holds the appends back */
        what = "fsync the directory of";
        r = sync_dir(al->path);
    }
    free(buf);
    if (r < 0)
        qb_log(LOG_ERR, "activity log \"%s\": %s \"%s\": %s", al->path, what, tmp, strerror(-r));
    if (!moved) {
        if (fd >= 0)
            close(fd);
        unlink(tmp);
    }
    pthread_mutex_lock(&al->mu);
    if (moved) { /* appends go to the file in place, whatever follows */
        if (al->fd >= 0)
            close(al->fd);
        al->fd = fd;
        al->end = len;
        al->dir_dirty = r < 0;
    }
    *renamed = moved;
    return r;
}

/* Sizes the table for the entries added from now on (max) and those the
 * file holds (carried). */
static int alloc_table(struct actlog *al, size_t carried)
{
    al->cap = al->max + carried;
    for (al->nbuckets = 1; al->nbuckets < 2 * al->cap;)
        al->nbuckets *= 2;
    al->e = calloc(al->cap, sizeof *al->e);
    al->bucket = malloc(al->nbuckets * sizeof *al->bucket);
    if (!al->e || !al->bucket)
        return -ENOMEM;
    for (size_t i = 0; i < al->nbuckets; i++)
        al->bucket[i] = -1;
    return 0;
}

/* Checks the header and loads the records of buf (the whole file) as
 * carried entries. Returns -EBADMSG (logged) for anything not well formed;
 * *torn: an all-zero record or a partial one was skipped. */
static int parse(struct actlog *al, const unsigned char *buf, size_t len, bool *torn)
{
    unsigned char want[ACTLOG_HEADER_SIZE];
    put_header(want);
    if (len < ACTLOG_HEADER_SIZE || memcmp(buf, want, ACTLOG_HEADER_SIZE) != 0) {
        qb_log(LOG_ERR,
               "activity log \"%s\": not an activity log of version %d (bad header): refusing "
               "to start without it (it names regions that may differ between replicas); see "
               "README, \"A whole-cluster power cut\"",
               al->path, ACTLOG_VERSION);
        return -EBADMSG;
    }
    static const unsigned char zero[ACTLOG_RECORD_SIZE];
    size_t nrec = (len - ACTLOG_HEADER_SIZE) / ACTLOG_RECORD_SIZE;
    *torn = (len - ACTLOG_HEADER_SIZE) % ACTLOG_RECORD_SIZE != 0;
    int r = alloc_table(al, nrec);
    for (size_t i = 0; r == 0 && i < nrec; i++) {
        const unsigned char *rec = buf + ACTLOG_HEADER_SIZE + i * ACTLOG_RECORD_SIZE;
        if (memcmp(rec, zero, sizeof zero) == 0) {
            *torn = true;
            continue;
        }
        struct actlog_key k;
        uint32_t crc;
        memcpy(&k.volume, rec, 4);
        memcpy(&crc, rec + 4, 4);
        memcpy(&k.region, rec + 8, 8);
        if (crc != key_crc(&k)) {
            qb_log(LOG_ERR,
                   "activity log \"%s\": record %zu is corrupt: refusing to start without it (it "
                   "names regions that may differ between replicas); see README, \"A "
                   "whole-cluster power cut\"",
                   al->path, i);
            return -EBADMSG;
        }
        if (!find(al, &k))
            insert(al, &k, DURABLE, true);
    }
    return r;
}

/* Reads the existing file into al; -ENOENT if there is none. */
static int load(struct actlog *al, bool *torn)
{
    int fd = open(al->path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    size_t limit = ACTLOG_HEADER_SIZE + (size_t)ACTLOG_MAX_LIMIT * ACTLOG_RECORD_SIZE;
    int r = fstat(fd, &st) < 0 ? -errno : 0;
    if (r == 0 && (size_t)st.st_size > limit) {
        qb_log(LOG_ERR, "activity log \"%s\": more than %u entries: refusing it", al->path,
               ACTLOG_MAX_LIMIT);
        r = -EBADMSG;
    }
    unsigned char *buf = r == 0 ? malloc(st.st_size ? (size_t)st.st_size : 1) : NULL;
    if (r == 0 && !buf)
        r = -ENOMEM;
    size_t got = 0;
    while (r == 0 && got < (size_t)st.st_size) {
        ssize_t n = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            r = n < 0 ? -errno : -EIO;
        else
            got += (size_t)n;
    }
    if (r < 0 && r != -EBADMSG)
        qb_log(LOG_ERR, "activity log \"%s\": reading it: %s", al->path, strerror(-r));
    else if (r == 0)
        r = parse(al, buf, got, torn);
    free(buf);
    if (r < 0) {
        close(fd);
        return r == -ENOENT ? -EIO : r;
    }
    al->fd = fd;
    al->end = got;
    return 0;
}

int actlog_open(const char *path, size_t max, struct actlog **out)
{
    if (max == 0 || max > ACTLOG_MAX_LIMIT)
        return -EINVAL;
    struct actlog *al = calloc(1, sizeof *al);
    if (!al)
        return -ENOMEM;
    al->max = max;
    al->fd = -1;
    al->path = strdup(path);
    if (!al->path) {
        free(al);
        return -ENOMEM;
    }
    pthread_mutex_init(&al->mu, NULL);
    pthread_cond_init(&al->cv, NULL);
    bool torn = false;
    int r = load(al, &torn);
    if (r == -ENOENT)
        r = alloc_table(al, 0);
    else if (r == 0 && torn)
        qb_log(LOG_WARNING,
               "activity log \"%s\": an append a power cut cut short (never synced): "
               "rewriting it without it",
               path);
    if (r == 0 && (torn || al->fd < 0)) {
        bool renamed;
        pthread_mutex_lock(&al->mu);
        r = rewrite(al, &renamed);
        pthread_mutex_unlock(&al->mu);
    }
    if (r < 0 && r != -EBADMSG)
        qb_log(LOG_ERR, "activity log \"%s\": %s", path, strerror(-r));
    if (r < 0) {
        actlog_close(al);
        return r;
    }
    *out = al;
    return 0;
}

void actlog_close(struct actlog *al)
{
    if (!al)
        return;
    if (al->fd >= 0)
        close(al->fd);
    pthread_cond_destroy(&al->cv);
    pthread_mutex_destroy(&al->mu);
    free(al->bucket);
    free(al->e);
    free(al->path);
    free(al);
}

const char *actlog_path(const struct actlog *al)
{
    return al->path;
}

size_t actlog_room(struct actlog *al)
{
    pthread_mutex_lock(&al->mu);
    size_t n = al->max - al->fresh - al->reserved;
    pthread_mutex_unlock(&al->mu);
    return n;
}

size_t actlog_carried(struct actlog *al, struct actlog_key *out, size_t max)
{
    size_t k = 0;
    pthread_mutex_lock(&al->mu);
    for (size_t i = 0; i < al->n; i++)
        if (al->e[i].carried && k++ < max && out)
            out[k - 1] = al->e[i].key;
    pthread_mutex_unlock(&al->mu);
    return k;
}

bool actlog_logged(struct actlog *al, const struct actlog_key *keys, size_t n)
{
    bool ok = true;
    pthread_mutex_lock(&al->mu);
    for (size_t i = 0; ok && i < n; i++) {
        struct ent *x = find(al, &keys[i]);
        ok = x && x->state == DURABLE;
        if (ok)
            x->used = al->clock++;
    }
    pthread_mutex_unlock(&al->mu);
    return ok;
}

/* ---- appends ----------------------------------------------------------- */

static bool pending(struct ent *x, void *arg)
{
    (void)arg;
    return x->state == PENDING;
}

static bool not_written(struct ent *x, void *arg)
{
    (void)arg;
    return x->state != WRITING;
}

/* With mu held and the file taken: appends every PENDING entry (and
 * first syncs the directory if a rename into it is not durable yet). On
 * failure the entries are dropped and fail_gen bumped (their writers
 * fail). */
static void append_round(struct actlog *al)
{
    size_t k = 0;
    unsigned char *buf = malloc(al->n * ACTLOG_RECORD_SIZE + 1);
    for (size_t i = 0; i < al->n; i++) {
        if (!pending(&al->e[i], NULL))
            continue;
        if (buf)
            put_record(buf + ACTLOG_RECORD_SIZE * k++, &al->e[i].key);
        al->e[i].state = WRITING;
    }
    uint64_t off = al->end;
    int fd = al->fd;
    bool dir = al->dir_dirty;
    pthread_mutex_unlock(&al->mu);
    int r = buf ? 0 : -ENOMEM;
    if (r == 0 && dir)
        r = sync_dir(al->path);
    if (r == 0)
        r = write_all(fd, buf, k * ACTLOG_RECORD_SIZE, (off_t)off);
    if (r == 0 && fdatasync(fd) < 0)
        r = -errno;
    free(buf);
    pthread_mutex_lock(&al->mu);
    if (r < 0) {
        qb_log(LOG_ERR, "activity log \"%s\": appending %zu entries: %s", al->path, k,
               strerror(-r));
        al->failed = r;
        al->fail_gen++;
        retain(al, not_written, NULL);
        return;
    }
    if (dir && al->fd == fd)
        al->dir_dirty = false;
    al->end = off + k * ACTLOG_RECORD_SIZE;
    for (size_t i = 0; i < al->n; i++)
        if (al->e[i].state == WRITING)
            al->e[i].state = DURABLE;
}

/* With mu held: 1 if some key is still to be written (PENDING or
 * WRITING), 0 if all are durable, -ENOENT if one is gone (evicted, or its
 * append failed). */
static int unwritten(struct actlog *al, const struct actlog_key *keys, size_t n)
{
    int more = 0;
    for (size_t i = 0; i < n; i++) {
        struct ent *x = find(al, &keys[i]);
        if (!x || x->state == EVICTING)
            return -ENOENT;
        more |= x->state == PENDING || x->state == WRITING;
    }
    return more;
}

/* With mu held: waits until no key is being evicted, then queues the ones
 * not in the log. 0, or -ENOSPC if they do not fit (none is queued). */
static int queue_keys(struct actlog *al, const struct actlog_key *keys, size_t n)
{
    for (;;) {
        bool evicting = false;
        size_t fresh = 0;
        for (size_t i = 0; i < n; i++) {
            struct ent *x = find(al, &keys[i]);
            evicting |= x && x->state == EVICTING;
            fresh += !x;
        }
        if (!evicting) {
            if (fresh > al->max - al->fresh - al->reserved)
                return -ENOSPC;
            break;
        }
        pthread_cond_wait(&al->cv, &al->mu);
    }
    for (size_t i = 0; i < n; i++) {
        struct ent *x = find(al, &keys[i]);
        if (!x)
            insert(al, &keys[i], PENDING, false);
        else
            x->used = al->clock++;
    }
    return 0;
}

static void pin(struct actlog *al, const struct actlog_key *keys, size_t n, int by)
{
    for (size_t i = 0; i < n; i++) {
        struct ent *x = find(al, &keys[i]);
        if (x)
            x->pins += by;
    }
}

int actlog_add(struct actlog *al, const struct actlog_key *keys, size_t n)
{
    if (n > al->max)
        return -EINVAL;
    pthread_mutex_lock(&al->mu);
    uint64_t gen = al->fail_gen;
    int r = queue_keys(al, keys, n);
    while (r == 0 && (r = unwritten(al, keys, n)) != 0) {
        if (r == -ENOENT) { /* evicted meanwhile: again; a failed append fails us */
            r = al->fail_gen != gen ? al->failed : queue_keys(al, keys, n);
            continue;
        }
        r = 0;
        if (al->busy) {
            pthread_cond_wait(&al->cv, &al->mu);
            continue;
        }
        al->busy = true;
        append_round(al);
        al->busy = false;
        pthread_cond_broadcast(&al->cv);
    }
    if (r == 0)
        pin(al, keys, n, 1);
    pthread_mutex_unlock(&al->mu);
    return r;
}

void actlog_unpin(struct actlog *al, const struct actlog_key *keys, size_t n)
{
    pthread_mutex_lock(&al->mu);
    pin(al, keys, n, -1);
    pthread_mutex_unlock(&al->mu);
}

/* ---- checkpoints --------------------------------------------------------- */

static int by_use(const void *a, const void *b)
{
    const struct ent *x = a, *y = b;
    return x->used < y->used ? -1 : x->used > y->used;
}

size_t actlog_oldest(struct actlog *al, struct actlog_key *out, size_t max)
{
    pthread_mutex_lock(&al->mu);
    struct ent *copy = malloc((al->n ? al->n : 1) * sizeof *copy);
    size_t k = 0;
    for (size_t i = 0; copy && i < al->n; i++)
        if (al->e[i].state == DURABLE && al->e[i].pins == 0)
            copy[k++] = al->e[i];
    pthread_mutex_unlock(&al->mu);
    if (!copy)
        return 0;
    qsort(copy, k, sizeof *copy, by_use);
    size_t n = k < max ? k : max;
    for (size_t i = 0; i < n; i++)
        out[i] = copy[i].key;
    free(copy);
    return n;
}

void actlog_evict_begin(struct actlog *al, const struct actlog_key *keys, size_t n)
{
    pthread_mutex_lock(&al->mu);
    for (size_t i = 0; i < n; i++) {
        struct ent *x = find(al, &keys[i]);
        if (x && x->state == DURABLE && x->pins == 0)
            x->state = EVICTING;
    }
    pthread_mutex_unlock(&al->mu);
}

static bool not_evicting(struct ent *x, void *arg)
{
    (void)arg;
    return x->state != EVICTING;
}

/* With mu held and the file taken: rewrites the file without the EVICTING
 * entries. Their fresh slots stay reserved meanwhile; if the old file is
 * still in place they are put back, durable there. (After a rename they
 * are gone for good: the caller settled their writes.) */
static int remove_evicting(struct actlog *al)
{
    struct ent *gone = malloc((al->n ? al->n : 1) * sizeof *gone);
    if (!gone)
        return -ENOMEM;
    size_t k = 0, fresh = 0;
    for (size_t i = 0; i < al->n; i++)
        if (al->e[i].state == EVICTING) {
            fresh += !al->e[i].carried;
            gone[k++] = al->e[i];
        }
    retain(al, not_evicting, NULL);
    al->reserved = fresh;
    bool renamed;
    int r = rewrite(al, &renamed);
    al->reserved = 0;
    for (size_t i = 0; !renamed && i < k; i++)
        if (!find(al, &gone[i].key))
            insert(al, &gone[i].key, DURABLE, gone[i].carried);
    free(gone);
    return r;
}

int actlog_evict_end(struct actlog *al, const struct actlog_key *keys, size_t n, bool remove)
{
    pthread_mutex_lock(&al->mu);
    int r = 0;
    if (remove) {
        while (al->busy)
            pthread_cond_wait(&al->cv, &al->mu);
        al->busy = true;
        r = remove_evicting(al);
        al->busy = false;
    }
    for (size_t i = 0; i < n; i++) {
        struct ent *x = find(al, &keys[i]);
        if (x && x->state == EVICTING)
            x->state = DURABLE;
    }
    pthread_cond_broadcast(&al->cv);
    pthread_mutex_unlock(&al->mu);
    return r;
}
