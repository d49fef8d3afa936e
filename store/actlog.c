/* actlog.c - the activity log (see actlog.h for the format and the rules).
 *
 * The entries live in an array with a hash index (rebuilt whole when some
 * are removed, which only a checkpoint does). Appends are group commits: a
 * writer queues its new keys as PENDING; the first one to find the file
 * idle (busy false) writes every PENDING record at the end of the file in
 * one pwrite, fdatasyncs, and marks them DURABLE, while writers who came
 * meanwhile wait for the next round. A rewrite (to remove entries) takes
 * the file the same way, so it never races an append to the old inode.
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
    uint64_t used; /* al->clock when last added or asked for */
    int32_t next;  /* in its hash chain, or -1 */
};

struct actlog {
    char *path;
    int fd;
    size_t max, n;
    struct ent *e;   /* max entries */
    int32_t *bucket; /* nbuckets chain heads, -1 if empty */
    size_t nbuckets; /* a power of two, >= 2 * max */
    uint64_t end;    /* file offset of the next append */
    uint64_t clock;  /* LRU stamps */
    bool busy;       /* a thread writes the file */
    size_t reserved; /* slots of entries a rewrite is removing */
    int failed;      /* -errno of the last failed append, for its waiters */
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

static void insert(struct actlog *al, const struct actlog_key *k, enum ent_state s)
{
    size_t h = hash(al, k);
    al->e[al->n] = (struct ent){*k, s, al->clock++, al->bucket[h]};
    al->bucket[h] = (int32_t)al->n++;
}

/* Keeps the entries keep() says yes to, in their order, and re-indexes. */
static void retain(struct actlog *al, bool (*keep)(struct ent *x, void *arg), void *arg)
{
    size_t k = 0;
    for (size_t i = 0; i < al->n; i++)
        if (keep(&al->e[i], arg))
            al->e[k++] = al->e[i];
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

/* With the file taken (busy) and mu held: writes path.tmp with the entries
 * on disk (DURABLE, EVICTING), renames it over path, and appends go to it
 * from then on. mu is released during the I/O; the table may gain PENDING
 * entries meanwhile, which the next append writes. */
static int rewrite(struct actlog *al)
{
    size_t len = ACTLOG_HEADER_SIZE + al->n * ACTLOG_RECORD_SIZE, k = 0;
    unsigned char *buf = malloc(len);
    if (!buf)
        return -ENOMEM;
    put_header(buf);
    for (size_t i = 0; i < al->n; i++)
        if (durable_or_evicting(&al->e[i], NULL))
            put_record(buf + ACTLOG_HEADER_SIZE + ACTLOG_RECORD_SIZE * k++, &al->e[i].key);
    len = ACTLOG_HEADER_SIZE + k * ACTLOG_RECORD_SIZE;
    pthread_mutex_unlock(&al->mu);

    char tmp[PATH_MAX], dir[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp", al->path);
    snprintf(dir, sizeof dir, "%s", al->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    const char *what = "create";
    int r = 0, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        r = -errno;
    if (r == 0 && (what = "write", r = write_all(fd, buf, len, 0)) == 0 &&
        (what = "fsync", fsync(fd) < 0))
        r = -errno;
    if (r == 0 && (what = "rename", rename(tmp, al->path) < 0))
        r = -errno;
    bool renamed = r == 0;
    int dfd = r == 0 ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (r == 0 && (what = "fsync the directory of", dfd < 0 || fsync(dfd) < 0))
        r = -errno;
    if (dfd >= 0)
        close(dfd);
    free(buf);
    if (r < 0)
        qb_log(LOG_ERR, "activity log \"%s\": %s \"%s\": %s", al->path, what, tmp, strerror(-r));
    if (!renamed) {
        if (fd >= 0)
            close(fd);
        unlink(tmp);
    }
    pthread_mutex_lock(&al->mu);
    if (renamed) { /* appends go to the file in place, whatever follows */
        if (al->fd >= 0)
            close(al->fd);
        al->fd = fd;
        al->end = len;
    }
    return r;
}

/* Checks the header and loads the records of buf (the whole file).
 * Returns -EBADMSG (logged) for anything not well formed; *torn: an
 * all-zero record or a partial one was skipped. */
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
    for (size_t i = 0; i < nrec; i++) {
        const unsigned char *r = buf + ACTLOG_HEADER_SIZE + i * ACTLOG_RECORD_SIZE;
        if (memcmp(r, zero, sizeof zero) == 0) {
            *torn = true;
            continue;
        }
        struct actlog_key k;
        uint32_t crc;
        memcpy(&k.volume, r, 4);
        memcpy(&crc, r + 4, 4);
        memcpy(&k.region, r + 8, 8);
        if (crc != key_crc(&k)) {
            qb_log(LOG_ERR,
                   "activity log \"%s\": record %zu is corrupt: refusing to start without it (it "
                   "names regions that may differ between replicas); see README, \"A "
                   "whole-cluster power cut\"",
                   al->path, i);
            return -EBADMSG;
        }
        if (find(al, &k))
            continue;
        if (al->n == al->max) {
            qb_log(LOG_ERR, "activity log \"%s\": more than %zu entries: refusing it", al->path,
                   al->max);
            return -EBADMSG;
        }
        insert(al, &k, DURABLE);
    }
    return 0;
}

/* Reads the existing file into al; -ENOENT if there is none. */
static int load(struct actlog *al, bool *torn)
{
    int fd = open(al->path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    size_t cap = ACTLOG_HEADER_SIZE + (size_t)ACTLOG_MAX_LIMIT * ACTLOG_RECORD_SIZE;
    int r = fstat(fd, &st) < 0 ? -errno : 0;
    if (r == 0 && (size_t)st.st_size > cap)
        r = -EFBIG;
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
    if (r < 0)
        qb_log(LOG_ERR, "activity log \"%s\": reading it: %s", al->path, strerror(-r));
    else
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
    for (al->nbuckets = 1; al->nbuckets < 2 * max;)
        al->nbuckets *= 2;
    al->path = strdup(path);
    al->e = calloc(max, sizeof *al->e);
    al->bucket = malloc(al->nbuckets * sizeof *al->bucket);
    if (!al->path || !al->e || !al->bucket) {
        actlog_close(al);
        return -ENOMEM;
    }
    for (size_t i = 0; i < al->nbuckets; i++)
        al->bucket[i] = -1;
    pthread_mutex_init(&al->mu, NULL);
    pthread_cond_init(&al->cv, NULL);
    bool torn = false;
    int r = load(al, &torn);
    if (r == -ENOENT || (r == 0 && torn)) {
        if (torn)
            qb_log(LOG_WARNING,
                   "activity log \"%s\": an append a power cut cut short (never synced): "
                   "rewriting it without it",
                   path);
        pthread_mutex_lock(&al->mu);
        r = rewrite(al);
        pthread_mutex_unlock(&al->mu);
    } else if (r < 0 && r != -EBADMSG) {
        qb_log(LOG_ERR, "activity log \"%s\": %s", path, strerror(-r));
    }
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
    if (al->bucket) {
        pthread_cond_destroy(&al->cv);
        pthread_mutex_destroy(&al->mu);
    }
    free(al->bucket);
    free(al->e);
    free(al->path);
    free(al);
}

const char *actlog_path(const struct actlog *al)
{
    return al->path;
}

size_t actlog_count(struct actlog *al)
{
    pthread_mutex_lock(&al->mu);
    size_t n = al->n;
    pthread_mutex_unlock(&al->mu);
    return n;
}

size_t actlog_list(struct actlog *al, struct actlog_key *out, size_t max)
{
    pthread_mutex_lock(&al->mu);
    size_t n = al->n < max ? al->n : max;
    for (size_t i = 0; i < n; i++)
        out[i] = al->e[i].key;
    pthread_mutex_unlock(&al->mu);
    return n;
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

/* With mu held and the file taken: appends every PENDING entry. On
 * failure the entries written are dropped (their writers fail). */
static void append_round(struct actlog *al)
{
    size_t k = 0;
    unsigned char *buf = malloc(al->n * ACTLOG_RECORD_SIZE + 1);
    for (size_t i = 0; buf && i < al->n; i++) {
        if (!pending(&al->e[i], NULL))
            continue;
        put_record(buf + ACTLOG_RECORD_SIZE * k++, &al->e[i].key);
        al->e[i].state = WRITING;
    }
    uint64_t off = al->end;
    int fd = al->fd;
    pthread_mutex_unlock(&al->mu);
    int r = buf ? write_all(fd, buf, k * ACTLOG_RECORD_SIZE, (off_t)off) : -ENOMEM;
    if (r == 0 && fdatasync(fd) < 0)
        r = -errno;
    free(buf);
    pthread_mutex_lock(&al->mu);
    if (r < 0) {
        qb_log(LOG_ERR, "activity log \"%s\": appending %zu entries: %s", al->path, k,
               strerror(-r));
        al->failed = r;
        retain(al, not_written, NULL);
        return;
    }
    al->end = off + k * ACTLOG_RECORD_SIZE;
    for (size_t i = 0; i < al->n; i++)
        if (al->e[i].state == WRITING)
            al->e[i].state = DURABLE;
}

/* With mu held: whether some key is still to be written (PENDING or
 * WRITING); -errno if one is gone (its append failed). */
static int unwritten(struct actlog *al, const struct actlog_key *keys, size_t n)
{
    int more = 0;
    for (size_t i = 0; i < n; i++) {
        struct ent *x = find(al, &keys[i]);
        if (!x)
            return al->failed < 0 ? al->failed : -EIO;
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
            if (fresh > al->max - al->n - al->reserved)
                return -ENOSPC;
            break;
        }
        pthread_cond_wait(&al->cv, &al->mu);
    }
    for (size_t i = 0; i < n; i++) {
        struct ent *x = find(al, &keys[i]);
        if (!x)
            insert(al, &keys[i], PENDING);
        else
            x->used = al->clock++;
    }
    return 0;
}

int actlog_add(struct actlog *al, const struct actlog_key *keys, size_t n)
{
    pthread_mutex_lock(&al->mu);
    int r = queue_keys(al, keys, n);
    while (r == 0 && (r = unwritten(al, keys, n)) == 1) {
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
    pthread_mutex_unlock(&al->mu);
    return r;
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
        if (al->e[i].state == DURABLE)
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

static void set_state(struct actlog *al, const struct actlog_key *keys, size_t n,
                      enum ent_state from, enum ent_state to)
{
    for (size_t i = 0; i < n; i++) {
        struct ent *x = find(al, &keys[i]);
        if (x && x->state == from)
            x->state = to;
    }
}

void actlog_evict_begin(struct actlog *al, const struct actlog_key *keys, size_t n)
{
    pthread_mutex_lock(&al->mu);
    set_state(al, keys, n, DURABLE, EVICTING);
    pthread_mutex_unlock(&al->mu);
}

static bool not_evicting(struct ent *x, void *arg)
{
    (void)arg;
    return x->state != EVICTING;
}

/* With mu held and the file taken: rewrites the file without the EVICTING
 * entries. Their slots stay reserved meanwhile; if the rewrite fails they
 * are appended again (to whichever file is in place), so none is lost. */
static int remove_evicting(struct actlog *al)
{
    struct actlog_key *gone = malloc((al->n ? al->n : 1) * sizeof *gone);
    if (!gone)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < al->n; i++)
        if (al->e[i].state == EVICTING)
            gone[k++] = al->e[i].key;
    retain(al, not_evicting, NULL);
    al->reserved = k;
    int r = rewrite(al);
    al->reserved = 0;
    if (r < 0) {
        for (size_t i = 0; i < k; i++)
            if (!find(al, &gone[i]))
                insert(al, &gone[i], PENDING);
        append_round(al);
    }
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
    set_state(al, keys, n, EVICTING, DURABLE);
    pthread_cond_broadcast(&al->cv);
    pthread_mutex_unlock(&al->mu);
    return r;
}
