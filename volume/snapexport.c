/* snapexport.c - the snapshot pseudo-devices: VOL@SNAP as a read-only
 * NBD export on every node, and the dirty bitmaps the exports offer.
 *
 * VOL@SNAP reads snapshot SNAP of VOL from a current copy (this node's
 * while it is current and leased, else a current peer's: the mirror
 * engine's mirror_snap_*; a standalone node reads its store). It offers
 * base:allocation and qemu:dirty-bitmap:PREV for each older snapshot PREV
 * (the 64 KiB chunks written between PREV's cut and SNAP's); the live
 * export VOL offers qemu:dirty-bitmap:SNAP for each snapshot (written
 * since SNAP's cut). Bit 0 set means dirty, as qemu-nbd answers, so
 * nbdinfo --map, qemu-img map with x-dirty-bitmap and libnbd read them
 * unchanged. The change tracking is the snapshots' copy-on-write maps,
 * durable before each write lands, so it survives any node's crash.
 *
 * Readers: each open VOL@SNAP counts as a reader of that snapshot (under
 * the volume's snapx_mu); a delete of a snapshot some node reads ends
 * with -EBUSY at its cut (snapshots.c), so a backup never loses its
 * snapshot midway.
 */
#include "volume/volume_int.h"

#include "mirror/engine.h"
#include "nbd-server/protocol.h"
#include "store/bitmap.h"
#include "store/snap.h"
#include "store/svol.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

/* One open VOL@SNAP. */
struct snapx {
    struct volume *v; /* a reference */
    uint64_t id, size;
    struct snapx *next;   /* v's readers, under v->snapx_mu */
    const char **bitmaps; /* the export's, freed at close */
    char description[DESCRIPTION_MAX + SNAP_NAME_MAX + 16];
};

unsigned volume_live_connections(struct volume *v)
{
    unsigned readers = 0;
    pthread_mutex_lock(&v->snapx_mu);
    for (struct snapx *x = v->readers; x; x = x->next)
        readers++;
    unsigned n = atomic_load(&v->connections) - readers;
    pthread_mutex_unlock(&v->snapx_mu);
    return n;
}

unsigned snapx_readers(struct volume *v, uint64_t id)
{
    unsigned n = 0;
    pthread_mutex_lock(&v->snapx_mu);
    for (struct snapx *x = v->readers; x; x = x->next)
        n += x->id == id;
    pthread_mutex_unlock(&v->snapx_mu);
    return n;
}

/* ---- reads -------------------------------------------------------------- */

static uint64_t sx_size(void *h)
{
    return ((struct snapx *)h)->size;
}

static bool sx_in_range(struct snapx *x, uint32_t count, uint64_t offset)
{
    return offset <= x->size && count <= x->size - offset;
}

int volume_snap_read(struct volume *v, uint64_t id, void *buf, uint32_t count, uint64_t offset)
{
    if (v->mv)
        return mirror_snap_read(v->mv, id, buf, count, offset);
    return snap_read(svol_snapshots(v->sv), id, buf, count, offset);
}

static int sx_pread(void *h, void *buf, uint32_t count, uint64_t offset, unsigned flags)
{
    struct snapx *x = h;
    if (!sx_in_range(x, count, offset))
        return -EINVAL;
    if (flags & NBD_IO_NOWAIT)
        return -EAGAIN; /* it may go to a peer or to the side files */
    return volume_snap_read(x->v, x->id, buf, count, offset);
}

static int sx_refuse_write(void *h, const void *buf, uint32_t count, uint64_t offset,
                           unsigned flags, struct nbd_async *a)
{
    (void)h, (void)buf, (void)count, (void)offset, (void)flags, (void)a;
    return -EPERM;
}

static int sx_refuse_zero(void *h, uint32_t count, uint64_t offset, unsigned flags,
                          struct nbd_async *a)
{
    (void)h, (void)count, (void)offset, (void)flags, (void)a;
    return -EPERM;
}

/* Nothing to make durable: a snapshot's chunks are durable before the
 * write that copied them lands. */
static int sx_flush(void *h, unsigned flags)
{
    (void)h, (void)flags;
    return 0;
}

static int sx_cache(void *h, uint32_t count, uint64_t offset, unsigned flags)
{
    (void)flags;
    return sx_in_range(h, count, offset) ? 0 : -EINVAL;
}

#define SE_MAX 64

static int sx_extents(void *h, uint32_t count, uint64_t offset, struct nbd_extent *ext,
                      unsigned max, unsigned flags)
{
    struct snapx *x = h;
    if (count == 0 || max == 0 || !sx_in_range(x, count, offset))
        return -EINVAL;
    if (flags & NBD_IO_NOWAIT)
        return -EAGAIN;
    struct svol_extent se[SE_MAX];
    unsigned m = max < SE_MAX ? max : SE_MAX;
    int k;
    if (x->v->mv) {
        k = mirror_snap_extents(x->v->mv, x->id, count, offset, se, m);
    } else {
        struct snap_extent sn[SE_MAX];
        k = snap_extents(svol_snapshots(x->v->sv), x->id, count, offset, sn, m);
        for (int i = 0; i < k; i++)
            se[i] = (struct svol_extent){sn[i].length, sn[i].hole};
    }
    if (k < 0)
        return k;
    unsigned n = 0;
    volume_add_extents(ext, &n, max, se, k);
    return (int)n;
}

/* ---- dirty bitmaps -------------------------------------------------------- */

#define RUNS_MAX 64

/* A standalone node's changed runs, from its store's maps. */
static int store_changed(struct volume *v, uint64_t since, uint64_t upto, uint64_t offset,
                         uint32_t count, struct mirror_changed_run *runs, unsigned max)
{
    uint64_t first = offset & ~(SNAP_CHUNK - 1), end = offset + count;
    uint64_t span = (end - first + SNAP_CHUNK - 1) & ~(SNAP_CHUNK - 1);
    struct bitmap *bm;
    int r = snap_changed(svol_snapshots(v->sv), since, upto, svol_size(v->sv), first, span, &bm);
    if (r < 0)
        return r;
    unsigned n = 0;
    for (uint64_t pos = offset; pos < end && n < max;) {
        uint64_t chunk_end = ((pos / SNAP_CHUNK) + 1) * SNAP_CHUNK;
        uint64_t len = (chunk_end < end ? chunk_end : end) - pos;
        bool changed = bitmap_test(bm, (pos - first) >> SNAP_CHUNK_SHIFT);
        if (n > 0 && runs[n - 1].changed == changed)
            runs[n - 1].length += len;
        else
            runs[n++] = (struct mirror_changed_run){len, changed};
        pos += len;
    }
    bitmap_close(bm);
    return (int)n;
}

int volume_changed_runs(struct volume *v, uint64_t since, uint64_t upto, uint64_t offset,
                        uint32_t count, struct mirror_changed_run *runs, unsigned max)
{
    return v->mv ? mirror_snap_changed(v->mv, since, upto, offset, count, runs, max)
                 : store_changed(v, since, upto, offset, count, runs, max);
}

/* The chunks written between since's cut and upto's (0: now) as NBD
 * extents of the dirty bitmap context. */
static int changed_extents(struct volume *v, uint64_t since, uint64_t upto, uint32_t count,
                           uint64_t offset, struct nbd_extent *ext, unsigned max)
{
    struct mirror_changed_run runs[RUNS_MAX];
    unsigned m = max < RUNS_MAX ? max : RUNS_MAX;
    int k = volume_changed_runs(v, since, upto, offset, count, runs, m);
    for (int i = 0; i < k; i++)
        ext[i] = (struct nbd_extent){.length = runs[i].length,
                                     .flags = runs[i].changed ? NBD_STATE_DIRTY : 0};
    return k;
}

/* The id of v's snapshot called name, or 0 (gone since the export
 * opened: a delete waits for readers of this export's snapshot only). */
static uint64_t snapshot_id(struct volume *v, const char *name)
{
    struct snap_info si;
    return volume_snap_find(v, name, &si) == 0 ? si.id : 0;
}

static int sx_bitmap_extents(void *h, unsigned i, const char *bitmap, uint32_t count,
                             uint64_t offset, struct nbd_extent *ext, unsigned max, unsigned flags)
{
    struct snapx *x = h;
    (void)i;
    if (count == 0 || max == 0 || !sx_in_range(x, count, offset))
        return -EINVAL;
    if (flags & NBD_IO_NOWAIT)
        return -EAGAIN;
    uint64_t since = snapshot_id(x->v, bitmap);
    if (since == 0)
        return -ENOENT;
    return changed_extents(x->v, since, x->id, count, offset, ext, max);
}

int volume_bitmap_extents(void *h, unsigned i, const char *bitmap, uint32_t count, uint64_t offset,
                          struct nbd_extent *ext, unsigned max, unsigned flags)
{
    struct volume *v = h;
    (void)i;
    if (count == 0 || max == 0 || offset > svol_size(v->sv) || count > svol_size(v->sv) - offset)
        return -EINVAL;
    if (flags & NBD_IO_NOWAIT)
        return -EAGAIN;
    uint64_t since = snapshot_id(v, bitmap);
    if (since == 0)
        return -ENOENT;
    return changed_extents(v, since, SNAP_LIVE, count, offset, ext, max);
}

static const struct nbd_export_ops snapx_ops = {
    .size = sx_size,
    .pread = sx_pread,
    .pwrite = sx_refuse_write,
    .flush = sx_flush,
    .trim = sx_refuse_zero,
    .zero = sx_refuse_zero,
    .cache = sx_cache,
    .extents = sx_extents,
    .bitmap_extents = sx_bitmap_extents,
};

/* ---- open and close ----------------------------------------------------- */

/* The names of v's snapshots older than upto (0: all), for an export's
 * bitmaps: one malloc'd block (the array, then the strings), or NULL
 * with *n 0 when there are none. */
const char **volume_bitmap_names(struct volume *v, uint64_t upto, unsigned *n)
{
    *n = 0;
    struct snap_info *si;
    size_t k;
    if (volume_records(v, &si, &k) < 0)
        return NULL;
    if (k == 0) {
        free(si);
        return NULL;
    }
    size_t m = 0;
    while (m < k && (upto == 0 || si[m].id < upto))
        m++;
    const char **names = malloc(m * (sizeof *names + SNAP_NAME_MAX + 1) + 1);
    char *s = (char *)(names + m);
    for (size_t i = 0; names && i < m; i++) {
        names[i] = s;
        s += snprintf(s, SNAP_NAME_MAX + 1, "%s", si[i].name) + 1;
    }
    free(si);
    *n = names ? (unsigned)m : 0;
    return names;
}

/* Opens VOL@SNAP for v (a reference the export keeps): -ENOENT if v has
 * no snapshot called snap, once no cut of it is still open here. */
int snapx_open(struct volume *v, const char *snap, struct nbd_export *exp)
{
    struct snap_info si;
    int r = volume_snap_find(v, snap, &si);
    if (r < 0 && cut_gate_awaited(v, snap))
        r = volume_snap_find(v, snap, &si);
    if (r < 0)
        return -ENOENT;
    struct snapx *x = calloc(1, sizeof *x);
    if (!x)
        return -ENOMEM;
    *x = (struct snapx){.v = v, .id = si.id, .size = si.size};
    snprintf(x->description, sizeof x->description, "vsan snapshot %s@%s, read-only", v->name,
             si.name);
    pthread_mutex_lock(&v->snapx_mu);
    x->next = v->readers;
    v->readers = x;
    pthread_mutex_unlock(&v->snapx_mu);
    if (atomic_load(&v->deleting) == si.id) { /* counted in, then looked: snapshots.c */
        struct nbd_export gone = {.handle = x};
        snapx_close(&gone);
        return -ENOENT;
    }
    unsigned nb;
    const char **names = volume_bitmap_names(v, si.id, &nb);
    x->bitmaps = names;
    *exp = (struct nbd_export){.ops = &snapx_ops,
                               .handle = x,
                               .description = x->description,
                               .read_only = true,
                               .bitmaps = names,
                               .nbitmaps = nb};
    return 0;
}

void snapx_close(struct nbd_export *exp)
{
    struct snapx *x = exp->handle;
    struct volume *v = x->v;
    pthread_mutex_lock(&v->snapx_mu);
    for (struct snapx **p = &v->readers; *p; p = &(*p)->next)
        if (*p == x) {
            *p = x->next;
            break;
        }
    pthread_mutex_unlock(&v->snapx_mu);
    free(x->bitmaps);
    free(x);
}

bool snapx_is(const struct nbd_export *exp)
{
    return exp->ops == &snapx_ops;
}

struct volume *snapx_volume(const struct nbd_export *exp)
{
    return ((struct snapx *)exp->handle)->v;
}
