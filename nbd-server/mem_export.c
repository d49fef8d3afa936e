/* mem_export.c - the in-memory export backend (see mem_export.h). */
#include "nbd-server/mem_export.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define PAGE 4096u

struct mem_export {
    struct mem_catalog *cat;
    char name[64];
    char description[96];
    uint64_t size;
    bool read_only;
    bool async; /* writes complete on the catalog's completer thread */
    /* lock guards data, allocated and dirty. */
    pthread_mutex_t lock;
    char *data;
    bool *allocated; /* per page */
    unsigned nbitmaps;
    char bitmap_name[MEM_BITMAPS_MAX][64];
    const char *bitmaps[MEM_BITMAPS_MAX]; /* bitmap_name, as export.h wants it */
    bool *dirty[MEM_BITMAPS_MAX];         /* per page */
};

/* A write applied, waiting for the completer to report it done. */
struct completion {
    struct nbd_async *a;
    struct completion *next;
};

struct mem_catalog {
    /* Exports are only added before serving starts. lock guards opens and
     * the completer's queue; done_cv wakes the completer. */
    pthread_mutex_t lock;
    pthread_cond_t done_cv;
    struct mem_export exports[MEM_EXPORTS_MAX];
    unsigned n;
    unsigned opens;
    bool completer_running, stopping;
    pthread_t completer;
    struct completion *head, **tail;
    unsigned long writes_done; /* reported done by the completer */
    atomic_ulong flushes;      /* flushes that reached an export */
};

struct mem_catalog *mem_catalog_new(void)
{
    struct mem_catalog *cat = calloc(1, sizeof *cat);
    if (!cat)
        return NULL;
    pthread_mutex_init(&cat->lock, NULL);
    pthread_cond_init(&cat->done_cv, NULL);
    cat->tail = &cat->head;
    return cat;
}

/* Reports queued writes done, in order, from its own thread: what a
 * mirrored volume does when its peer answers. */
static void *completer_main(void *arg)
{
    struct mem_catalog *cat = arg;
    pthread_mutex_lock(&cat->lock);
    for (;;) {
        while (!cat->head && !cat->stopping)
            pthread_cond_wait(&cat->done_cv, &cat->lock);
        struct completion *x = cat->head;
        if (!x)
            break;
        cat->head = x->next;
        if (!cat->head)
            cat->tail = &cat->head;
        pthread_mutex_unlock(&cat->lock);
        x->a->done(x->a, 0);
        free(x);
        pthread_mutex_lock(&cat->lock);
        cat->writes_done++;
    }
    pthread_mutex_unlock(&cat->lock);
    return NULL;
}

/* The completions of the writes a thread made inside a batch
 * (batch_begin in export.h), held until it ends, as a mirror holds the
 * copies it gathers: none is reported done before. */
static __thread struct {
    bool on;
    struct mem_catalog *cat;
    struct completion *head, **tail;
} batch;

static void queue_completions(struct mem_catalog *cat, struct completion *head,
                              struct completion **tail)
{
    pthread_mutex_lock(&cat->lock);
    *cat->tail = head;
    cat->tail = tail;
    pthread_cond_signal(&cat->done_cv);
    pthread_mutex_unlock(&cat->lock);
}

/* Queues a's completion (held while a batch is open); -ENOMEM if it
 * can't (the write then completes synchronously). */
static int complete_later(struct mem_catalog *cat, struct nbd_async *a)
{
    struct completion *x = malloc(sizeof *x);
    if (!x)
        return -ENOMEM;
    *x = (struct completion){a, NULL};
    if (!batch.on) {
        queue_completions(cat, x, &x->next);
        return 0;
    }
    if (!batch.head)
        batch.tail = &batch.head;
    batch.cat = cat;
    *batch.tail = x;
    batch.tail = &x->next;
    return 0;
}

static void mem_batch_begin(void *h)
{
    (void)h;
    batch.on = true;
}

static void mem_batch_end(void *h)
{
    (void)h;
    batch.on = false;
    if (batch.head)
        queue_completions(batch.cat, batch.head, batch.tail);
    batch.head = NULL;
}

int mem_catalog_add_async(struct mem_catalog *cat, const char *name, uint64_t size)
{
    if (!cat->completer_running) {
        if (pthread_create(&cat->completer, NULL, completer_main, cat) != 0)
            return -EAGAIN;
        cat->completer_running = true;
    }
    int r = mem_catalog_add(cat, name, size, false);
    if (r == 0)
        cat->exports[cat->n - 1].async = true;
    return r;
}

int mem_catalog_add(struct mem_catalog *cat, const char *name, uint64_t size, bool read_only)
{
    if (cat->n == MEM_EXPORTS_MAX || size % PAGE || strlen(name) >= sizeof cat->exports[0].name)
        return -EINVAL;
    struct mem_export *e = &cat->exports[cat->n];
    e->data = calloc(1, size);
    e->allocated = calloc(size / PAGE + 1, sizeof *e->allocated);
    if (!e->data || !e->allocated) {
        free(e->data);
        free(e->allocated);
        return -ENOMEM;
    }
    e->cat = cat;
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->description, sizeof e->description, "memory export %s", name);
    e->size = size;
    e->read_only = read_only;
    pthread_mutex_init(&e->lock, NULL);
    cat->n++;
    return 0;
}

int mem_catalog_add_bitmap(struct mem_catalog *cat, const char *export, const char *name)
{
    for (unsigned i = 0; i < cat->n; i++) {
        struct mem_export *e = &cat->exports[i];
        if (strcmp(e->name, export) != 0)
            continue;
        if (e->nbitmaps == MEM_BITMAPS_MAX || strlen(name) >= sizeof e->bitmap_name[0])
            return -EINVAL;
        bool *dirty = calloc(e->size / PAGE + 1, sizeof *dirty);
        if (!dirty)
            return -ENOMEM;
        pthread_mutex_lock(&e->lock);
        unsigned b = e->nbitmaps;
        e->dirty[b] = dirty;
        snprintf(e->bitmap_name[b], sizeof e->bitmap_name[b], "%s", name);
        e->bitmaps[b] = e->bitmap_name[b];
        e->nbitmaps++;
        pthread_mutex_unlock(&e->lock);
        return 0;
    }
    return -ENOENT;
}

unsigned mem_catalog_open_count(struct mem_catalog *cat)
{
    pthread_mutex_lock(&cat->lock);
    unsigned n = cat->opens;
    pthread_mutex_unlock(&cat->lock);
    return n;
}

unsigned long mem_catalog_flushes(struct mem_catalog *cat)
{
    return atomic_load(&cat->flushes);
}

unsigned long mem_catalog_writes_done(struct mem_catalog *cat)
{
    pthread_mutex_lock(&cat->lock);
    unsigned long n = cat->writes_done;
    pthread_mutex_unlock(&cat->lock);
    return n;
}

void mem_catalog_free(struct mem_catalog *cat)
{
    if (!cat)
        return;
    if (cat->completer_running) {
        pthread_mutex_lock(&cat->lock);
        cat->stopping = true;
        pthread_cond_signal(&cat->done_cv);
        pthread_mutex_unlock(&cat->lock);
        pthread_join(cat->completer, NULL);
    }
    for (unsigned i = 0; i < cat->n; i++) {
        free(cat->exports[i].data);
        free(cat->exports[i].allocated);
        for (unsigned b = 0; b < cat->exports[i].nbitmaps; b++)
            free(cat->exports[i].dirty[b]);
        pthread_mutex_destroy(&cat->exports[i].lock);
    }
    pthread_cond_destroy(&cat->done_cv);
    pthread_mutex_destroy(&cat->lock);
    free(cat);
}

static uint64_t mem_size(void *h)
{
    return ((struct mem_export *)h)->size;
}

static int mem_pread(void *h, void *buf, uint32_t count, uint64_t offset, unsigned flags)
{
    struct mem_export *e = h;
    (void)flags;
    pthread_mutex_lock(&e->lock);
    memcpy(buf, e->data + offset, count);
    pthread_mutex_unlock(&e->lock);
    return 0;
}

/* Marks every page the range touches dirty in every bitmap. */
static void dirty(struct mem_export *e, uint64_t offset, uint32_t count)
{
    for (unsigned b = 0; b < e->nbitmaps; b++)
        for (uint64_t p = offset / PAGE; p * PAGE < offset + count; p++)
            e->dirty[b][p] = true;
}

static void mark(struct mem_export *e, uint64_t offset, uint32_t count, bool allocated)
{
    for (uint64_t p = offset / PAGE; p * PAGE < offset + count; p++)
        e->allocated[p] = allocated;
    dirty(e, offset, count);
}

/* The result of a write already applied: 0, or -EINPROGRESS when an
 * async export will report it done later. */
static int finish(struct mem_export *e, struct nbd_async *a)
{
    return e->async && a && complete_later(e->cat, a) == 0 ? -EINPROGRESS : 0;
}

static int mem_pwrite(void *h, const void *buf, uint32_t count, uint64_t offset, unsigned flags,
                      struct nbd_async *a)
{
    struct mem_export *e = h;
    (void)flags;
    pthread_mutex_lock(&e->lock);
    memcpy(e->data + offset, buf, count);
    mark(e, offset, count, true);
    pthread_mutex_unlock(&e->lock);
    return finish(e, a);
}

static int mem_flush(void *h, unsigned flags)
{
    struct mem_export *e = h;
    (void)flags;
    atomic_fetch_add(&e->cat->flushes, 1);
    return 0;
}

/* Zeroes the range; whole pages inside it become holes when allowed. */
static void zero_range(struct mem_export *e, uint32_t count, uint64_t offset, bool may_trim)
{
    pthread_mutex_lock(&e->lock);
    memset(e->data + offset, 0, count);
    uint64_t first = (offset + PAGE - 1) / PAGE, end = (offset + count) / PAGE;
    for (uint64_t p = first; p < end; p++)
        e->allocated[p] = !may_trim;
    dirty(e, offset, count);
    pthread_mutex_unlock(&e->lock);
}

static int mem_trim(void *h, uint32_t count, uint64_t offset, unsigned flags, struct nbd_async *a)
{
    (void)flags;
    zero_range(h, count, offset, true);
    return finish(h, a);
}

static int mem_zero(void *h, uint32_t count, uint64_t offset, unsigned flags, struct nbd_async *a)
{
    zero_range(h, count, offset, flags & NBD_IO_MAY_TRIM);
    return finish(h, a);
}

static int mem_cache(void *h, uint32_t count, uint64_t offset, unsigned flags)
{
    (void)flags;
    (void)h;
    (void)count;
    (void)offset;
    return 0;
}

/* Extents of runs of equal pages[] in [offset, offset+count): flags set
 * where pages[] is true, clear where false. Called with e->lock held. */
static int page_runs(const bool *pages, uint32_t count, uint64_t offset, struct nbd_extent *ext,
                     unsigned max, uint32_t set, uint32_t clear)
{
    uint64_t end = offset + count;
    unsigned n = 0;
    for (uint64_t off = offset; off < end && n < max;) {
        bool v = pages[off / PAGE];
        uint64_t next = (off / PAGE + 1) * PAGE;
        while (next < end && pages[next / PAGE] == v)
            next += PAGE;
        if (next > end)
            next = end;
        ext[n++] = (struct nbd_extent){next - off, v ? set : clear};
        off = next;
    }
    return (int)n;
}

static int mem_extents(void *h, uint32_t count, uint64_t offset, struct nbd_extent *ext,
                       unsigned max, unsigned flags)
{
    (void)flags;
    struct mem_export *e = h;
    pthread_mutex_lock(&e->lock);
    int n = page_runs(e->allocated, count, offset, ext, max, 0, NBD_EXTENT_HOLE | NBD_EXTENT_ZERO);
    pthread_mutex_unlock(&e->lock);
    return n;
}

/* Says -EAGAIN to NBD_IO_NOWAIT, as a backend that asks a peer would, so
 * that the tests see a block status run the slow way after its
 * base:allocation chunk was ready inline. */
static int mem_bitmap_extents(void *h, unsigned bitmap, const char *name, uint32_t count,
                              uint64_t offset, struct nbd_extent *ext, unsigned max, unsigned flags)
{
    struct mem_export *e = h;
    (void)name;
    if (flags & NBD_IO_NOWAIT)
        return -EAGAIN;
    pthread_mutex_lock(&e->lock);
    int n = page_runs(e->dirty[bitmap], count, offset, ext, max, NBD_STATE_DIRTY, 0);
    pthread_mutex_unlock(&e->lock);
    return n;
}

static const struct nbd_export_ops mem_ops = {
    .size = mem_size,
    .pread = mem_pread,
    .pwrite = mem_pwrite,
    .flush = mem_flush,
    .trim = mem_trim,
    .zero = mem_zero,
    .cache = mem_cache,
    .extents = mem_extents,
    .bitmap_extents = mem_bitmap_extents,
    .batch_begin = mem_batch_begin,
    .batch_end = mem_batch_end,
};

/* Serves every export to every client: the in-memory catalog has no
 * grants (the volume layer's catalog filters). */
static int mem_open(void *ctx, const char *name, const struct nbd_client *who,
                    struct nbd_export *exp)
{
    (void)who;
    struct mem_catalog *cat = ctx;
    for (unsigned i = 0; i < cat->n; i++) {
        struct mem_export *e = &cat->exports[i];
        if (strcmp(e->name, name) != 0)
            continue;
        *exp =
            (struct nbd_export){&mem_ops, e, e->description, e->read_only, e->bitmaps, e->nbitmaps};
        pthread_mutex_lock(&cat->lock);
        cat->opens++;
        pthread_mutex_unlock(&cat->lock);
        return 0;
    }
    return -ENOENT;
}

static void mem_close(void *ctx, struct nbd_export *exp)
{
    struct mem_catalog *cat = ctx;
    (void)exp;
    pthread_mutex_lock(&cat->lock);
    cat->opens--;
    pthread_mutex_unlock(&cat->lock);
}

static int mem_list(void *ctx, const struct nbd_client *who,
                    int (*fn)(void *, const char *, const char *), void *arg)
{
    (void)who;
    struct mem_catalog *cat = ctx;
    for (unsigned i = 0; i < cat->n; i++) {
        int r = fn(arg, cat->exports[i].name, cat->exports[i].description);
        if (r)
            return r;
    }
    return 0;
}

const struct nbd_catalog_ops mem_catalog_ops = {
    .open = mem_open,
    .close = mem_close,
    .list = mem_list,
};
