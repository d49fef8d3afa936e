/* rollback.c - `vsan snapshot rollback`: a volume made equal to one of its
 * snapshots, by copying back the 64 KiB chunks written since the
 * snapshot's cut, through the ordinary write path.
 *
 * The admin side fences the volume first (a cut, policing_rollback_fence:
 * refused if any node has a client on it; from its commit on, no node lets
 * a client open it), then runs this copy, then lifts the fence. The copy
 * goes through the volume's own write path (cut gate, region priority,
 * mirror, copy-on-write), so every current copy gets it, and snapshots
 * newer than the one rolled back to keep their data (their copy-on-write
 * runs as for any write). Bytes past the snapshot's size (the volume grew
 * since) are zeroed: the volume keeps its size.
 *
 * One rollback at a time per node, on a thread of its own, joined only by
 * volumes_rollback_stop at shutdown; its progress is read by the admin
 * commands (atomics), its end is told to the main loop through an eventfd
 * the caller polls. A node that dies mid-way leaves the volume half rolled
 * back and unfenced (volumes_node_left): a second rollback finishes it.
 * The snapshot is read from a current copy, so a node whose own copy
 * lacks it (snapshots.c, "missing") rolls back too.
 */
#include "volume/volume_int.h"

#include "mirror/engine.h"
#include "store/snap.h"
#include "store/svol.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <qb/qblog.h>

#define COPY_MAX (1u << 20) /* bytes per write */
#define RUNS 64
#define WINDOW (UINT32_C(1) << 30) /* the most one changed-runs call covers */

struct rollback {
    struct volume *v; /* a reference */
    uint64_t id, snap_size;
    char snapshot[SNAP_NAME_MAX + 1];
    int efd; /* written once, at the end */
    pthread_t thread;
    atomic_bool stop;
    atomic_bool running;
    _Atomic uint64_t done, total; /* bytes */
    int result;                   /* once not running */
    struct timespec started;
};

/* Copies back [off, off+len) of the snapshot (zeroes past its size). */
static int copy_back(struct rollback *rb, char *buf, uint64_t off, uint64_t len)
{
    for (uint64_t end = off + len; off < end && !atomic_load(&rb->stop);) {
        uint32_t n = end - off < COPY_MAX ? (uint32_t)(end - off) : COPY_MAX;
        int r;
        if (off >= rb->snap_size) {
            r = volume_zero(rb->v, n, off);
        } else {
            if (off + n > rb->snap_size)
                n = (uint32_t)(rb->snap_size - off);
            r = volume_snap_read(rb->v, rb->id, buf, n, off);
            if (r == 0)
                r = volume_write(rb->v, buf, n, off);
        }
        if (r < 0) {
            qb_log(LOG_ERR, "volume \"%s\": rollback to \"%s\": at byte %" PRIu64 ": %s",
                   rb->v->name, rb->snapshot, off, strerror(-r));
            return r;
        }
        atomic_fetch_add(&rb->done, n);
        off += n;
    }
    return atomic_load(&rb->stop) ? -ESHUTDOWN : 0;
}

/* Calls fn for each run of changed chunks in the volume, in order. */
static int each_changed(struct rollback *rb,
                        int (*fn)(struct rollback *, char *, uint64_t, uint64_t), char *buf)
{
    uint64_t size = svol_size(rb->v->sv);
    struct mirror_changed_run runs[RUNS];
    for (uint64_t pos = 0; pos < size && !atomic_load(&rb->stop);) {
        uint32_t span = size - pos < WINDOW ? (uint32_t)(size - pos) : WINDOW;
        int k = volume_changed_runs(rb->v, rb->id, 0, pos, span, runs, RUNS);
        if (k < 0)
            return k;
        for (int i = 0; i < k; i++) {
            int r = runs[i].changed ? fn(rb, buf, pos, runs[i].length) : 0;
            if (r < 0)
                return r;
            pos += runs[i].length;
        }
    }
    return 0;
}

static int count_run(struct rollback *rb, char *buf, uint64_t off, uint64_t len)
{
    (void)buf, (void)off;
    atomic_fetch_add(&rb->total, len);
    return 0;
}

static void *rollback_main(void *arg)
{
    struct rollback *rb = arg;
    char *buf = malloc(COPY_MAX);
    int r = buf ? each_changed(rb, count_run, buf) : -ENOMEM;
    if (r == 0)
        r = each_changed(rb, copy_back, buf);
    free(buf);
    rb->result = r;
    qb_log(r < 0 ? LOG_ERR : LOG_INFO,
           "volume \"%s\": rollback to snapshot \"%s\": %s, %" PRIu64 " bytes copied back",
           rb->v->name, rb->snapshot, r < 0 ? strerror(-r) : "done", atomic_load(&rb->done));
    atomic_store(&rb->running, false);
    uint64_t one = 1;
    if (write(rb->efd, &one, sizeof one) != sizeof one)
        qb_log(LOG_ERR, "volume \"%s\": rollback: can't wake the main loop", rb->v->name);
    return NULL;
}

static void rollback_free(struct rollback *rb)
{
    if (!rb)
        return;
    pthread_join(rb->thread, NULL);
    volume_unref(rb->v);
    free(rb);
}

int volumes_rollback_start(struct volumes *vols, const char *name, const char *snapshot, int efd)
{
    if (vols->rollback && atomic_load(&vols->rollback->running))
        return -EBUSY;
    rollback_free(vols->rollback);
    vols->rollback = NULL;
    struct volume *v = volumes_get(vols, name);
    if (!v)
        return -ENOENT;
    struct snap_info si;
    struct rollback *rb = calloc(1, sizeof *rb);
    int r = !rb ? -ENOMEM : volume_snap_find(v, snapshot, &si) < 0 ? -ENOMSG : 0;
    if (r == 0) {
        *rb = (struct rollback){.v = v, .id = si.id, .snap_size = si.size, .efd = efd};
        snprintf(rb->snapshot, sizeof rb->snapshot, "%s", snapshot);
        atomic_init(&rb->running, true);
        clock_gettime(CLOCK_MONOTONIC, &rb->started);
        r = -pthread_create(&rb->thread, NULL, rollback_main, rb);
    }
    if (r < 0) {
        free(rb);
        volume_unref(v);
        return r;
    }
    vols->rollback = rb;
    return 0;
}

int volumes_rollback_status(struct volumes *vols, const char *name, struct rollback_status *st)
{
    struct rollback *rb = vols->rollback;
    if (!rb || strcmp(rb->v->name, name) != 0)
        return -ENOENT;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    *st = (struct rollback_status){
        .running = atomic_load(&rb->running),
        .done = atomic_load(&rb->done),
        .total = atomic_load(&rb->total),
        .seconds = (double)(now.tv_sec - rb->started.tv_sec) +
                   (double)(now.tv_nsec - rb->started.tv_nsec) / 1e9,
    };
    snprintf(st->snapshot, sizeof st->snapshot, "%s", rb->snapshot);
    st->result = st->running ? 0 : rb->result;
    return 0;
}

bool volumes_fenced(struct volumes *vols, const char *name)
{
    struct volume *v = volumes_get(vols, name);
    bool fenced = v && atomic_load(&v->fenced_by) != 0;
    if (v)
        volume_unref(v);
    return fenced;
}

void volumes_rollback_stop(struct volumes *vols)
{
    if (vols->rollback)
        atomic_store(&vols->rollback->stop, true);
    rollback_free(vols->rollback);
    vols->rollback = NULL;
}
