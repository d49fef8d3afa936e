/* bitmap.c - dirty bitmaps in memory and on disk (see bitmap.h).
 *
 * The words live in memory; the file is their durable copy. What is not
 * durable yet is tracked per word ("pending"), so bitmap_set() can tell a
 * writer whether it must wait for a sync even when its bits were already
 * set by someone else whose sync has not finished. Writes go out in 4 KiB
 * pages of words, the unit a device writes anyway.
 *
 * Group commit (store/gsync.h): there are two pending sets. Changes go to
 * the current one; a sync flips them under the mutex, writes the pages of
 * the other set (a snapshot taken under the mutex, written without it),
 * fdatasyncs, and then everything changed before the flip is durable. A
 * caller whose change is older than a running sync's start waits for it,
 * and the callers that arrive during a sync share the next one. A failed sync puts
 * its pages back into the current set: the next sync writes them again
 * rather than trusting what a failed fdatasync left in the page cache.
 *
 * Creation and resizing write a whole new file as path.tmp and rename it
 * over path, so the name only ever holds a complete, valid file.
 */
#include "store/bitmap.h"
#include "store/fileio.h"
#include "store/gsync.h"

#include <qb/qblog.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "VSANDBM1"
#define MAGIC_LEN 8
#define TMP_SUFFIX ".tmp"
#define WORD_BITS 64
#define WORD_BYTES 8
/* The unit of writes: 4 KiB of words. */
#define PAGE_WORDS 512
/* Pages staged per pwrite. */
#define STAGE_PAGES 64
#define STAGE_WORDS (STAGE_PAGES * PAGE_WORDS)

/* Which words (and, as a summary for finding them, which pages) hold
 * changes not yet durable. */
struct pending {
    uint64_t *words;
    uint64_t *pages;
};

struct bits {
    uint64_t nbits;
    uint64_t nwords;
    uint64_t npages;
    uint64_t *words; /* host order; bits past nbits are zero */
    struct pending pend[2];
};

struct bitmap {
    pthread_mutex_t lock;
    struct gsync sync; /* under lock */
    char *path;        /* NULL: memory only */
    int fd;
    unsigned region_shift;
    struct bits bits;
    uint64_t count;
    unsigned cur;     /* pend[cur] collects changes; pend[!cur] is the running sync's */
    bool dir_pending; /* a rename is not known durable: the next sync fsyncs the directory */
    uint64_t *stage;  /* little-endian copy of the words being written */
};

/* ---- errors ---------------------------------------------------------- */

static const char *name_of(const struct bitmap *b)
{
    return b->path ? b->path : "(memory)";
}

/* Logs "mirror: bitmap "path": message" and returns -err; with why, the
 * message ends in ": why". */
__attribute__((format(printf, 4, 0))) static int vfail(const struct bitmap *b, int err,
                                                       const char *why, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (why) {
        size_t n = strlen(msg);
        snprintf(msg + n, sizeof(msg) - n, ": %s", why);
    }
    qb_log(LOG_ERR, "mirror: bitmap \"%s\": %s", name_of(b), msg);
    return -err;
}

__attribute__((format(printf, 3, 4))) static int fail(const struct bitmap *b, int err,
                                                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vfail(b, err, NULL, fmt, ap);
    va_end(ap);
    return r;
}

/* As fail(), with strerror(err) appended. */
__attribute__((format(printf, 3, 4))) static int sys_fail(const struct bitmap *b, int err,
                                                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vfail(b, err, strerror(err), fmt, ap);
    va_end(ap);
    return r;
}

/* ---- bit arrays ------------------------------------------------------ */

static uint64_t words_for(uint64_t nbits)
{
    return (nbits + WORD_BITS - 1) / WORD_BITS;
}

/* The bits of the last word that are below nbits. */
static uint64_t tail_mask(uint64_t nbits)
{
    unsigned used = nbits % WORD_BITS;
    return used ? (UINT64_C(1) << used) - 1 : UINT64_MAX;
}

static void mark(uint64_t *a, uint64_t i)
{
    a[i / WORD_BITS] |= UINT64_C(1) << (i % WORD_BITS);
}

static bool marked(const uint64_t *a, uint64_t i)
{
    return a[i / WORD_BITS] >> (i % WORD_BITS) & 1;
}

/* The first set bit >= from in a (n bits, zero past n), or n. */
static uint64_t find_set(const uint64_t *a, uint64_t n, uint64_t from)
{
    if (from >= n)
        return n;
    uint64_t i = from / WORD_BITS;
    uint64_t x = a[i] & (UINT64_MAX << (from % WORD_BITS));
    while (x == 0) {
        if (++i >= words_for(n))
            return n;
        x = a[i];
    }
    uint64_t bit = i * WORD_BITS + (uint64_t)__builtin_ctzll(x);
    return bit < n ? bit : n;
}

static uint64_t popcount_all(const uint64_t *a, uint64_t nwords)
{
    uint64_t c = 0;
    for (uint64_t i = 0; i < nwords; i++)
        c += (uint64_t)__builtin_popcountll(a[i]);
    return c;
}

/* calloc that never returns NULL for a zero count, so NULL always means
 * out of memory. */
static uint64_t *zalloc_words(uint64_t n)
{
    return calloc(n ? n : 1, WORD_BYTES);
}

static void bits_free(struct bits *s)
{
    free(s->words);
    for (int i = 0; i < 2; i++) {
        free(s->pend[i].words);
        free(s->pend[i].pages);
    }
    *s = (struct bits){0};
}

/* All clear, nothing pending. */
static int bits_alloc(struct bits *s, uint64_t nbits)
{
    *s = (struct bits){.nbits = nbits, .nwords = words_for(nbits)};
    s->npages = (s->nwords + PAGE_WORDS - 1) / PAGE_WORDS;
    s->words = zalloc_words(s->nwords);
    bool ok = s->words != NULL;
    for (int i = 0; i < 2; i++) {
        /* Whole pages, so retire_pending() needs no bounds. */
        s->pend[i].words = zalloc_words(s->npages * (PAGE_WORDS / WORD_BITS));
        s->pend[i].pages = zalloc_words(words_for(s->npages));
        ok = ok && s->pend[i].words && s->pend[i].pages;
    }
    if (!ok) {
        bits_free(s);
        return -ENOMEM;
    }
    return 0;
}

/* ---- file I/O -------------------------------------------------------- */

static off_t word_offset(uint64_t word)
{
    return (off_t)(BITMAP_HEADER_SIZE + word * WORD_BYTES);
}

static int fsync_parent(const struct bitmap *b)
{
    char *copy = strdup(b->path);
    if (!copy)
        return fail(b, ENOMEM, "no memory for the directory name");
    const char *dir = dirname(copy);
    int r = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        r = sys_fail(b, errno, "open directory \"%s\"", dir);
    else if (fsync(fd) < 0)
        r = sys_fail(b, errno, "fsync directory \"%s\"", dir);
    if (fd >= 0 && close(fd) < 0 && r == 0)
        r = sys_fail(b, errno, "close directory \"%s\"", dir);
    free(copy);
    return r;
}

static char *tmp_path(const char *path)
{
    size_t len = strlen(path) + sizeof(TMP_SUFFIX);
    char *tmp = malloc(len);
    if (tmp)
        snprintf(tmp, len, "%s%s", path, TMP_SUFFIX);
    return tmp;
}

static void unlink_tmp(const struct bitmap *b, const char *tmp)
{
    if (unlink(tmp) < 0 && errno != ENOENT)
        qb_log(LOG_WARNING, "mirror: bitmap \"%s\": remove \"%s\": %s (the next open removes it)",
               name_of(b), tmp, strerror(errno));
}

/* A leftover of a creation or resize that a crash interrupted: path itself
 * is still whole (old or new), so the copy is garbage. */
static int remove_stale_tmp(const struct bitmap *b)
{
    char *tmp = tmp_path(b->path);
    if (!tmp)
        return fail(b, ENOMEM, "no memory for the temporary name");
    int r = 0;
    if (unlink(tmp) == 0)
        qb_log(LOG_NOTICE, "mirror: bitmap \"%s\": removed \"%s\" left by an interrupted update",
               name_of(b), tmp);
    else if (errno != ENOENT)
        r = sys_fail(b, errno, "remove \"%s\"", tmp);
    free(tmp);
    return r;
}

/* ---- the header ------------------------------------------------------ */

struct header {
    uint32_t version;
    uint32_t region_shift;
    uint64_t nbits;
    uint64_t reserved;
};

static void header_encode(unsigned char out[BITMAP_HEADER_SIZE], unsigned region_shift,
                          uint64_t nbits)
{
    uint32_t version = htole32(BITMAP_VERSION), shift = htole32(region_shift);
    uint64_t n = htole64(nbits), reserved = 0;
    memcpy(out, MAGIC, MAGIC_LEN);
    memcpy(out + 8, &version, 4);
    memcpy(out + 12, &shift, 4);
    memcpy(out + 16, &n, 8);
    memcpy(out + 24, &reserved, 8);
}

/* Checks the header against the file's size and the caller's region
 * shift; the bitmap's words are then safe to read. */
static int header_check(const struct bitmap *b, const unsigned char in[BITMAP_HEADER_SIZE],
                        off_t size, struct header *h)
{
    if (memcmp(in, MAGIC, MAGIC_LEN) != 0)
        return fail(b, EINVAL, "bad magic, not a dirty bitmap");
    memcpy(&h->version, in + 8, 4);
    memcpy(&h->region_shift, in + 12, 4);
    memcpy(&h->nbits, in + 16, 8);
    memcpy(&h->reserved, in + 24, 8);
    h->version = le32toh(h->version);
    h->region_shift = le32toh(h->region_shift);
    h->nbits = le64toh(h->nbits);
    h->reserved = le64toh(h->reserved);
    if (h->version != BITMAP_VERSION)
        return fail(b, EPROTONOSUPPORT, "version %" PRIu32 ", this build reads %d", h->version,
                    BITMAP_VERSION);
    if (h->reserved != 0)
        return fail(b, EINVAL, "reserved header field is %#" PRIx64 ", not 0", h->reserved);
    if (h->nbits > BITMAP_MAX_NBITS)
        return fail(b, EINVAL, "%" PRIu64 " bits, more than the maximum %" PRIu64, h->nbits,
                    BITMAP_MAX_NBITS);
    uint64_t want = (uint64_t)word_offset(words_for(h->nbits));
    if ((uint64_t)size != want)
        return fail(b, EINVAL, "%lld bytes, a bitmap of %" PRIu64 " bits has %" PRIu64,
                    (long long)size, h->nbits, want);
    if (h->region_shift != b->region_shift)
        return fail(b, EINVAL, "region shift %" PRIu32 " in the file, %u expected", h->region_shift,
                    b->region_shift);
    return 0;
}

/* ---- loading and writing whole files ---------------------------------- */

static int read_words(const struct bitmap *b, struct bits *s)
{
    int r = fileio_pread(b->fd, s->words, s->nwords * WORD_BYTES, word_offset(0));
    if (r < 0)
        return sys_fail(b, -r, "read");
    for (uint64_t i = 0; i < s->nwords; i++)
        s->words[i] = le64toh(s->words[i]);
    if (s->nwords > 0 && (s->words[s->nwords - 1] & ~tail_mask(s->nbits)))
        return fail(b, EINVAL, "bits past the last region (%" PRIu64 ") are set", s->nbits);
    return 0;
}

/* Reads and checks b->fd into b->bits (sized as the file says). */
static int load(struct bitmap *b)
{
    struct stat st;
    if (fstat(b->fd, &st) < 0)
        return sys_fail(b, errno, "stat");
    unsigned char raw[BITMAP_HEADER_SIZE];
    if (st.st_size < BITMAP_HEADER_SIZE)
        return fail(b, EINVAL, "truncated: %lld bytes, shorter than the header",
                    (long long)st.st_size);
    int r = fileio_pread(b->fd, raw, sizeof(raw), 0);
    if (r < 0)
        return sys_fail(b, -r, "read the header");
    struct header h = {0};
    r = header_check(b, raw, st.st_size, &h);
    if (r < 0)
        return r;
    if (bits_alloc(&b->bits, h.nbits) < 0)
        return fail(b, ENOMEM, "no memory for %" PRIu64 " bits", h.nbits);
    r = read_words(b, &b->bits);
    if (r < 0)
        return r;
    b->count = popcount_all(b->bits.words, b->bits.nwords);
    return 0;
}

static void close_fd(const struct bitmap *b, int fd)
{
    if (fd >= 0 && close(fd) < 0)
        qb_log(LOG_WARNING, "mirror: bitmap \"%s\": close: %s", name_of(b), strerror(errno));
}

static int write_words(const struct bitmap *b, int fd, const struct bits *s)
{
    for (uint64_t first = 0; first < s->nwords; first += STAGE_WORDS) {
        uint64_t n = s->nwords - first < STAGE_WORDS ? s->nwords - first : STAGE_WORDS;
        for (uint64_t i = 0; i < n; i++)
            b->stage[i] = htole64(s->words[first + i]);
        int r = fileio_pwrite(fd, b->stage, n * WORD_BYTES, word_offset(first));
        if (r < 0)
            return r;
    }
    return 0;
}

/* Writes s as a complete, synced path.tmp; returns its fd (read-write). */
static int write_tmp(const struct bitmap *b, const char *tmp, const struct bits *s)
{
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return sys_fail(b, errno, "create \"%s\"", tmp);
    unsigned char raw[BITMAP_HEADER_SIZE];
    header_encode(raw, b->region_shift, s->nbits);
    int r = fileio_pwrite(fd, raw, sizeof(raw), 0);
    if (r == 0)
        r = write_words(b, fd, s);
    if (r < 0)
        r = sys_fail(b, -r, "write \"%s\"", tmp);
    else if (fsync(fd) < 0)
        r = sys_fail(b, errno, "fsync \"%s\"", tmp);
    if (r < 0) {
        close_fd(b, fd);
        return r;
    }
    return fd;
}

/* Replaces path with a file holding s, via path.tmp, and returns its fd.
 * The caller fsyncs the directory; until then the rename may not survive
 * a crash, but path already holds s, so the caller may use the fd (or
 * close it: the file is open only while it is used, see drop_fd). */
static int replace_file(const struct bitmap *b, const struct bits *s)
{
    char *tmp = tmp_path(b->path);
    if (!tmp)
        return fail(b, ENOMEM, "no memory for the temporary name");
    int fd = write_tmp(b, tmp, s);
    if (fd >= 0 && rename(tmp, b->path) < 0) {
        int r = sys_fail(b, errno, "rename \"%s\" over it", tmp);
        close_fd(b, fd);
        fd = r;
    }
    if (fd < 0)
        unlink_tmp(b, tmp);
    free(tmp);
    return fd;
}

/* ---- open, close, remove ----------------------------------------------- */

static int create(struct bitmap *b, uint64_t nbits)
{
    if (bits_alloc(&b->bits, nbits) < 0)
        return fail(b, ENOMEM, "no memory for %" PRIu64 " bits", nbits);
    if (!b->path)
        return 0;
    int fd = replace_file(b, &b->bits);
    if (fd < 0)
        return fd;
    b->fd = fd;
    return fsync_parent(b);
}

static int resize_locked(struct bitmap *b, uint64_t nbits);

/* Between uses a bitmap's descriptor waits in a small process-wide cache,
 * the least recently used closed when it is full: a node with 4,000
 * volumes and a bitmap per outdated peer would otherwise hold a descriptor
 * for each, past the default limit of 1,024; and the maps that sync all
 * the time (a snapshot's under copy-on-write, a dirty bitmap during an
 * outage) would otherwise open and close their file on every sync, which
 * measured 6% of a first write's CPU on the copy-on-write bench. A file
 * replaced (resize) or removed has its cached descriptor closed first. */
#define FD_KEPT 64

static struct {
    pthread_mutex_t mu;
    uint64_t clock;
    struct kept {
        const struct bitmap *b; /* NULL: free */
        int fd;
        uint64_t used;
    } slot[FD_KEPT];
} kept = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* b's cached descriptor, taken out of the cache, or -1. */
static int kept_take(const struct bitmap *b)
{
    int fd = -1;
    pthread_mutex_lock(&kept.mu);
    for (int i = 0; i < FD_KEPT && fd < 0; i++) {
        if (kept.slot[i].b == b) {
            fd = kept.slot[i].fd;
            kept.slot[i] = (struct kept){0};
        }
    }
    pthread_mutex_unlock(&kept.mu);
    return fd;
}

/* Caches b's descriptor fd, closing the least recently used one if full. */
static void kept_put(const struct bitmap *b, int fd)
{
    pthread_mutex_lock(&kept.mu);
    int at = 0;
    for (int i = 0; i < FD_KEPT; i++) {
        if (!kept.slot[i].b) {
            at = i;
            break;
        }
        if (kept.slot[i].used < kept.slot[at].used)
            at = i;
    }
    struct kept old = kept.slot[at];
    kept.slot[at] = (struct kept){.b = b, .fd = fd, .used = ++kept.clock};
    pthread_mutex_unlock(&kept.mu);
    if (old.b)
        close_fd(old.b, old.fd);
}

/* Closes b's cached descriptor, if any. */
static void kept_forget(const struct bitmap *b)
{
    close_fd(b, kept_take(b));
}

static void drop_fd(struct bitmap *b)
{
    if (b->fd >= 0)
        kept_put(b, b->fd);
    b->fd = -1;
}

static int reopen_fd(struct bitmap *b)
{
    if (b->fd >= 0)
        return 0;
    b->fd = kept_take(b);
    if (b->fd >= 0)
        return 0;
    b->fd = open(b->path, O_RDWR | O_CLOEXEC);
    return b->fd < 0 ? sys_fail(b, errno, "open") : 0;
}

/* Opens an existing file, or creates it; -ENOENT never escapes. */
static int open_file(struct bitmap *b, uint64_t nbits)
{
    int r = remove_stale_tmp(b);
    if (r < 0)
        return r;
    b->stage = malloc(STAGE_WORDS * WORD_BYTES);
    if (!b->stage)
        return fail(b, ENOMEM, "no memory for the write buffer");
    b->fd = open(b->path, O_RDWR | O_CLOEXEC);
    if (b->fd < 0 && errno == ENOENT) {
        r = create(b, nbits);
        drop_fd(b);
        return r;
    }
    if (b->fd < 0)
        return sys_fail(b, errno, "open");
    r = load(b);
    if (r == 0 && b->bits.nbits != nbits) {
        qb_log(LOG_NOTICE, "mirror: bitmap \"%s\": resizing from %" PRIu64 " to %" PRIu64 " bits",
               name_of(b), b->bits.nbits, nbits);
        r = resize_locked(b, nbits);
    }
    drop_fd(b);
    return r;
}

static void bitmap_free(struct bitmap *b)
{
    kept_forget(b);
    close_fd(b, b->fd);
    bits_free(&b->bits);
    free(b->stage);
    free(b->path);
    free(b);
}

/* A bitmap with nothing loaded, or NULL. */
static struct bitmap *bitmap_new(const char *path, unsigned region_shift)
{
    struct bitmap *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->fd = -1;
    b->region_shift = region_shift;
    if (path && !(b->path = strdup(path))) {
        free(b);
        return NULL;
    }
    if (pthread_mutex_init(&b->lock, NULL) != 0) {
        bitmap_free(b);
        return NULL;
    }
    if (gsync_init(&b->sync, &b->lock) != 0) {
        pthread_mutex_destroy(&b->lock);
        bitmap_free(b);
        return NULL;
    }
    return b;
}

int bitmap_open(const char *path, uint64_t nbits, unsigned region_shift, struct bitmap **out)
{
    *out = NULL;
    struct bitmap *b = bitmap_new(path, region_shift);
    if (!b)
        return -ENOMEM;
    int r;
    if (region_shift < BITMAP_MIN_REGION_SHIFT || region_shift > BITMAP_MAX_REGION_SHIFT)
        r = fail(b, EINVAL, "region shift %u outside %d..%d", region_shift, BITMAP_MIN_REGION_SHIFT,
                 BITMAP_MAX_REGION_SHIFT);
    else if (nbits > BITMAP_MAX_NBITS)
        r = fail(b, EINVAL, "%" PRIu64 " bits, more than the maximum %" PRIu64, nbits,
                 BITMAP_MAX_NBITS);
    else if (b->path)
        r = open_file(b, nbits);
    else
        r = create(b, nbits);
    if (r < 0) {
        bitmap_close(b);
        return r;
    }
    *out = b;
    return 0;
}

void bitmap_close(struct bitmap *b)
{
    if (!b)
        return;
    gsync_destroy(&b->sync);
    pthread_mutex_destroy(&b->lock);
    bitmap_free(b);
}

int bitmap_remove(struct bitmap *b)
{
    int r = 0;
    kept_forget(b);
    if (b->path && unlink(b->path) < 0)
        r = sys_fail(b, errno, "remove");
    else if (b->path)
        r = fsync_parent(b);
    bitmap_close(b);
    return r;
}

/* ---- changing bits ------------------------------------------------------ */

/* Called locked. ORs mask into word w and returns whether that bit range
 * is not all durable yet (some bit was clear, or a sync still owes it). */
static bool or_word(struct bitmap *b, uint64_t w, uint64_t mask)
{
    struct bits *s = &b->bits;
    uint64_t fresh = mask & ~s->words[w];
    if (fresh == 0)
        return b->path && (marked(s->pend[0].words, w) || marked(s->pend[1].words, w));
    s->words[w] |= fresh;
    b->count += (uint64_t)__builtin_popcountll(fresh);
    if (b->path) {
        mark(s->pend[b->cur].words, w);
        mark(s->pend[b->cur].pages, w / PAGE_WORDS);
    }
    return true;
}

int bitmap_clear(struct bitmap *b)
{
    pthread_mutex_lock(&b->lock);
    struct bits *s = &b->bits;
    for (uint64_t w = 0; w < words_for(s->nbits); w++) {
        if (s->words[w] == 0)
            continue;
        s->words[w] = 0;
        if (b->path) {
            mark(s->pend[b->cur].words, w);
            mark(s->pend[b->cur].pages, w / PAGE_WORDS);
        }
    }
    if (b->count != 0)
        gsync_change(&b->sync);
    b->count = 0;
    pthread_mutex_unlock(&b->lock);
    return bitmap_sync(b);
}

/* The bits of word w that lie in first..last. */
static uint64_t range_mask(uint64_t w, uint64_t first, uint64_t last)
{
    unsigned lo = w == first / WORD_BITS ? first % WORD_BITS : 0;
    unsigned hi = w == last / WORD_BITS ? last % WORD_BITS : WORD_BITS - 1;
    return (UINT64_MAX >> (WORD_BITS - 1 - hi)) & (UINT64_MAX << lo);
}

int bitmap_set(struct bitmap *b, uint64_t first, uint64_t last)
{
    if (first > last)
        return fail(b, EINVAL, "set of bits %" PRIu64 "..%" PRIu64 ": empty range", first, last);
    pthread_mutex_lock(&b->lock);
    bool owed = false;
    uint64_t before = b->count;
    if (first < b->bits.nbits) {
        if (last >= b->bits.nbits)
            last = b->bits.nbits - 1;
        for (uint64_t w = first / WORD_BITS; w <= last / WORD_BITS; w++)
            owed |= or_word(b, w, range_mask(w, first, last));
    }
    if (b->count != before)
        gsync_change(&b->sync);
    pthread_mutex_unlock(&b->lock);
    return owed;
}

/* ---- group commit -------------------------------------------------------- */

/* Called locked by the sync leader: writes the pages of pend[!cur], each
 * copied under the mutex, written without it. */
static int write_pending(struct bitmap *b)
{
    const struct pending *p = &b->bits.pend[!b->cur];
    for (uint64_t pg = find_set(p->pages, b->bits.npages, 0); pg < b->bits.npages;) {
        uint64_t first = pg * PAGE_WORDS, n = 0;
        for (; pg < b->bits.npages && marked(p->pages, pg) && n < STAGE_WORDS; pg++) {
            uint64_t end = (pg + 1) * PAGE_WORDS;
            if (end > b->bits.nwords)
                end = b->bits.nwords;
            for (uint64_t w = pg * PAGE_WORDS; w < end; w++)
                b->stage[n++] = htole64(b->bits.words[w]);
        }
        pthread_mutex_unlock(&b->lock);
        int r = fileio_pwrite(b->fd, b->stage, n * WORD_BYTES, word_offset(first));
        pthread_mutex_lock(&b->lock);
        if (r < 0)
            return sys_fail(b, -r, "write words %" PRIu64 "..%" PRIu64, first, first + n - 1);
        pg = find_set(p->pages, b->bits.npages, pg);
    }
    return 0;
}

/* Called locked: empties pend[!cur], moving it into pend[cur] if the sync
 * failed (so the next one writes those pages again). */
static void retire_pending(struct bitmap *b, bool failed)
{
    struct pending *done = &b->bits.pend[!b->cur], *cur = &b->bits.pend[b->cur];
    const uint64_t per_page = PAGE_WORDS / WORD_BITS;
    for (uint64_t pg = find_set(done->pages, b->bits.npages, 0); pg < b->bits.npages;
         pg = find_set(done->pages, b->bits.npages, pg + 1)) {
        for (uint64_t i = pg * per_page; i < (pg + 1) * per_page; i++) {
            if (failed)
                cur->words[i] |= done->words[i];
            done->words[i] = 0;
        }
        if (failed)
            mark(cur->pages, pg);
    }
    memset(done->pages, 0, words_for(b->bits.npages) * WORD_BYTES);
}

static int sync_file(struct bitmap *b)
{
    if (fdatasync(b->fd) < 0)
        return sys_fail(b, errno, "fdatasync");
    return 0;
}

/* The group commit's leader (gsync.h): called locked with no sync
 * running; returns locked. */
static int lead_sync(void *arg)
{
    struct bitmap *b = arg;
    bool dir = b->dir_pending;
    b->cur = !b->cur;
    int r = reopen_fd(b);
    if (r == 0)
        r = write_pending(b);
    if (r == 0) {
        pthread_mutex_unlock(&b->lock);
        r = sync_file(b);
        if (r == 0 && dir)
            r = fsync_parent(b);
        pthread_mutex_lock(&b->lock);
    }
    retire_pending(b, r < 0);
    if (r < 0) {
        /* A descriptor a sync failed on is not kept for the next. */
        close_fd(b, b->fd);
        b->fd = -1;
    }
    drop_fd(b);
    if (r == 0)
        b->dir_pending = false;
    return r;
}

int bitmap_sync(struct bitmap *b)
{
    if (!b->path)
        return 0;
    pthread_mutex_lock(&b->lock);
    int r = gsync_wait(&b->sync, b->sync.gen, lead_sync, b);
    pthread_mutex_unlock(&b->lock);
    return r;
}

/* ---- reading ------------------------------------------------------------- */

bool bitmap_test(struct bitmap *b, uint64_t bit)
{
    pthread_mutex_lock(&b->lock);
    bool set = bit < b->bits.nbits && marked(b->bits.words, bit);
    pthread_mutex_unlock(&b->lock);
    return set;
}

uint64_t bitmap_count(struct bitmap *b)
{
    pthread_mutex_lock(&b->lock);
    uint64_t c = b->count;
    pthread_mutex_unlock(&b->lock);
    return c;
}

uint64_t bitmap_nbits(struct bitmap *b)
{
    pthread_mutex_lock(&b->lock);
    uint64_t n = b->bits.nbits;
    pthread_mutex_unlock(&b->lock);
    return n;
}

unsigned bitmap_region_shift(struct bitmap *b)
{
    return b->region_shift;
}

uint64_t bitmap_next(struct bitmap *b, uint64_t from)
{
    pthread_mutex_lock(&b->lock);
    uint64_t bit = find_set(b->bits.words, b->bits.nbits, from);
    pthread_mutex_unlock(&b->lock);
    return bit;
}

/* ---- exchange with other nodes -------------------------------------------- */

int bitmap_export(struct bitmap *b, void **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    pthread_mutex_lock(&b->lock);
    uint64_t n = b->bits.nwords;
    uint64_t *out = n ? malloc(n * WORD_BYTES) : NULL;
    if (out)
        for (uint64_t i = 0; i < n; i++)
            out[i] = htole64(b->bits.words[i]);
    pthread_mutex_unlock(&b->lock);
    if (n && !out)
        return fail(b, ENOMEM, "no memory to export %" PRIu64 " words", n);
    *buf = out;
    *len = n * WORD_BYTES;
    return 0;
}

static uint64_t load_le64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return le64toh(v);
}

/* Called locked. */
static int merge_locked(struct bitmap *b, const unsigned char *in, size_t len)
{
    struct bits *s = &b->bits;
    if (len != s->nwords * WORD_BYTES)
        return fail(b, EINVAL, "merge of %zu bytes, a bitmap of %" PRIu64 " bits has %" PRIu64, len,
                    s->nbits, s->nwords * WORD_BYTES);
    if (s->nwords > 0 && (load_le64(in + len - WORD_BYTES) & ~tail_mask(s->nbits)))
        return fail(b, EINVAL, "merge sets bits past the last region (%" PRIu64 ")", s->nbits);
    uint64_t before = b->count;
    for (uint64_t w = 0; w < s->nwords; w++) {
        uint64_t v = load_le64(in + w * WORD_BYTES);
        if (v)
            or_word(b, w, v);
    }
    if (b->count != before)
        gsync_change(&b->sync);
    return 0;
}

int bitmap_merge(struct bitmap *b, const void *buf, size_t len)
{
    pthread_mutex_lock(&b->lock);
    int r = merge_locked(b, buf, len);
    pthread_mutex_unlock(&b->lock);
    return r < 0 ? r : bitmap_sync(b);
}

/* ---- resizing --------------------------------------------------------------- */

/* Called locked with no sync running. The new file holds every bit, so
 * nothing is pending afterwards. */
static int resize_locked(struct bitmap *b, uint64_t nbits)
{
    struct bits s;
    if (bits_alloc(&s, nbits) < 0)
        return fail(b, ENOMEM, "no memory for %" PRIu64 " bits", nbits);
    uint64_t keep = s.nwords < b->bits.nwords ? s.nwords : b->bits.nwords;
    memcpy(s.words, b->bits.words, keep * WORD_BYTES);
    if (s.nwords > 0)
        s.words[s.nwords - 1] &= tail_mask(nbits);
    int r = 0;
    if (b->path) {
        int fd = replace_file(b, &s);
        if (fd < 0) {
            bits_free(&s);
            return fd;
        }
        /* Descriptors of the replaced file, open or cached, go. */
        kept_forget(b);
        close_fd(b, b->fd);
        b->fd = -1;
        close_fd(b, fd);
        r = fsync_parent(b);
        b->dir_pending = r < 0;
    }
    bits_free(&b->bits);
    b->bits = s;
    b->count = popcount_all(s.words, s.nwords);
    gsync_all_durable(&b->sync);
    return r;
}

int bitmap_resize(struct bitmap *b, uint64_t nbits)
{
    if (nbits > BITMAP_MAX_NBITS)
        return fail(b, EINVAL, "resize to %" PRIu64 " bits, more than the maximum %" PRIu64, nbits,
                    BITMAP_MAX_NBITS);
    pthread_mutex_lock(&b->lock);
    gsync_idle(&b->sync);
    int r = nbits == b->bits.nbits ? 0 : resize_locked(b, nbits);
    pthread_mutex_unlock(&b->lock);
    return r;
}
