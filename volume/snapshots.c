/* snapshots.c - the volume layer's part in cuts (policing/cut.h) and its
 * snapshots: the cut gate that holds client writes, the drain check, the
 * commit that cuts every volume's copy here, and the snapshot records the
 * agreed table reads and loads.
 *
 * The gate: every client write passes cut_gate_enter before it asks for
 * region priority and leaves at its completion (guard_begin/guard_end in
 * volume.c, the asynchronous ones when the engine reports them done), so
 * cut_writers counts the writes this node has started and not finished.
 * A cut sets cut_held, then polls cut_writers down to 0: a writer
 * increments before it looks at cut_held and the cut sets cut_held before
 * it looks at cut_writers (sequentially consistent atomics), so no writer
 * slips past a cut that sees no writers. Inline writes that meet the gate
 * say -EAGAIN and go the slow way, which waits on gate_cv.
 *
 * The commit cuts this node's copy whatever its state: a copy outdated
 * at the cut is repaired, snapshots included, by its resync before it
 * serves anything (mirror/resync.c), so every copy keeps the same
 * snapshots with the same ids, which peers' reads name.
 *
 * A copy that can't cut one (its store is full or failing) is failed, and
 * keeps the snapshot's record as "missing" (DATA_DIR/snapshots/UUID.missing,
 * replaced atomically): the list this node hands a sync round, checks a
 * cut against and shows is the group's, whatever its store holds, so a
 * failed node that wins a round drops no snapshot. The snapshots cut
 * after it join it (a store's ids only rise), until `replica replace`
 * cuts them all, oldest first, before its rebuild copies their chunks.
 */
#include "volume/volume_int.h"

#include "mirror/engine.h"
#include "policing/cut.h"
#include "policing/protocol.h"
#include "store/snap.h"
#include "store/svol.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <qb/qblog.h>

/* A write waits at the gate at most this long: every cut ends (commits,
 * aborts at its deadline, or with the membership) well before, so only a
 * node whose main loop no longer runs gets here; its client sees EIO
 * rather than a write held for good. */
#define GATE_WAIT_MAX_MS (4 * CUT_TIMEOUT_MS)

void cut_gate_leave(struct volume *v)
{
    atomic_fetch_sub(&v->cut_writers, 1);
}

static void deadline_in(struct timespec *t, unsigned ms)
{
    clock_gettime(CLOCK_REALTIME, t);
    t->tv_sec += ms / 1000;
    t->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

static int gate_wait(struct volume *v)
{
    struct timespec until;
    deadline_in(&until, GATE_WAIT_MAX_MS);
    int e = 0;
    pthread_mutex_lock(&v->gate_mu);
    while (e == 0 && atomic_load(&v->cut_held) && !atomic_load(&v->gone))
        e = pthread_cond_timedwait(&v->gate_cv, &v->gate_mu, &until);
    pthread_mutex_unlock(&v->gate_mu);
    if (atomic_load(&v->gone))
        return -ESHUTDOWN;
    if (e == ETIMEDOUT) {
        qb_log(LOG_ERR, "volume \"%s\": a write held by a cut for %u ms: failed", v->name,
               GATE_WAIT_MAX_MS);
        return -EIO;
    }
    return 0;
}

int cut_gate_enter(struct volume *v, bool nowait)
{
    for (;;) {
        atomic_fetch_add(&v->cut_writers, 1);
        if (!atomic_load(&v->cut_held))
            return 0;
        cut_gate_leave(v);
        if (nowait)
            return -EAGAIN;
        int r = gate_wait(v);
        if (r < 0)
            return r;
    }
}

/* A node applies a commit a few ms after the node whose client asked for
 * the cut: a client of this node that opens the new snapshot meanwhile
 * (the cut is still held here, this node's DRAINED sent) waits for it
 * rather than hear it is unknown. */
bool cut_gate_awaited(struct volume *v, const char *name)
{
    struct timespec until;
    deadline_in(&until, CUT_TIMEOUT_MS);
    int e = 0;
    pthread_mutex_lock(&v->gate_mu);
    bool named = atomic_load(&v->cut_held) && strcmp(v->cut_snapshot, name) == 0;
    while (e == 0 && named && atomic_load(&v->cut_held) && !atomic_load(&v->gone))
        e = pthread_cond_timedwait(&v->gate_cv, &v->gate_mu, &until);
    pthread_mutex_unlock(&v->gate_mu);
    return named;
}

static void gate_close(struct volume *v, const struct cut *c)
{
    pthread_mutex_lock(&v->gate_mu);
    snprintf(v->cut_snapshot, sizeof v->cut_snapshot, "%s",
             c->kind == PMSG_CUT_SNAPSHOT ? c->snapshot : "");
    atomic_store(&v->cut_held, true);
    pthread_mutex_unlock(&v->gate_mu);
}

static void gate_open(struct volume *v)
{
    pthread_mutex_lock(&v->gate_mu);
    v->cut_snapshot[0] = '\0';
    atomic_store(&v->cut_held, false);
    pthread_cond_broadcast(&v->gate_cv);
    pthread_mutex_unlock(&v->gate_mu);
    if (v->mv)
        mirror_cut_release(v->mv);
}

/* ---- snapshots this copy lacks --------------------------------------------- */

#define MISSING_HEAD "vsan-missing 1\n"

static void missing_name(const struct volume *v, char *out, size_t len)
{
    snprintf(out, len, "%s.missing", svol_uuid(v->sv));
}

static int missing_find(const struct volume *v, const char *name)
{
    for (size_t i = 0; i < v->nmissing; i++)
        if (strcmp(v->missing[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* One line: "ID SIZE TIME NAME". */
static int missing_parse(struct volume *v, const char *line)
{
    struct snap_info si = {0};
    int end = 0;
    _Static_assert(SNAP_NAME_MAX == 64, "the %64s below");
    if (sscanf(line, "%" SCNu64 " %" SCNu64 " %" SCNd64 " %64s%n", &si.id, &si.size, &si.time,
               si.name, &end) != 4 ||
        line[end] != '\n' || !store_name_valid(si.name) || si.id == 0 ||
        (v->nmissing > 0 && si.id <= v->missing[v->nmissing - 1].id))
        return -EINVAL;
    struct snap_info have;
    if (snap_find(svol_snapshots(v->sv), si.name, &have) == 0 && have.id == si.id)
        return 0; /* cut since, and the list not saved then */
    struct snap_info *m = realloc(v->missing, (v->nmissing + 1) * sizeof *m);
    if (!m)
        return -ENOMEM;
    v->missing = m;
    m[v->nmissing++] = si;
    return 0;
}

static int missing_read(struct volume *v, FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    int r = getline(&line, &cap, f) >= 0 && strcmp(line, MISSING_HEAD) == 0 ? 0 : -EINVAL;
    while (r == 0 && getline(&line, &cap, f) >= 0)
        r = missing_parse(v, line);
    if (r == 0 && ferror(f))
        r = -EIO;
    free(line);
    return r;
}

int volume_missing_open(struct volume *v, struct store *st)
{
    char name[NAME_MAX + 1];
    missing_name(v, name, sizeof name);
    int fd = openat(store_snap_dir_fd(st), name, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return 0;
    FILE *f = fd < 0 ? NULL : fdopen(fd, "r");
    int r = f ? missing_read(v, f) : -errno;
    if (f)
        fclose(f);
    else if (fd >= 0)
        close(fd);
    if (r < 0) {
        qb_log(LOG_ERR, "volume \"%s\": \"%s/%s\": %s", v->name, store_snap_dir_path(st), name,
               r == -EINVAL ? "malformed" : strerror(-r));
        volume_missing_free(v);
    } else if (v->nmissing > 0) {
        qb_log(LOG_WARNING,
               "volume \"%s\": this node's copy lacks %zu of the group's snapshots (\"%s\" "
               "first): a replace rebuilds them",
               v->name, v->nmissing, v->missing[0].name);
    }
    return r;
}

int volume_snap_find(struct volume *v, const char *name, struct snap_info *out)
{
    pthread_mutex_lock(&v->missing_mu);
    int i = missing_find(v, name);
    if (i >= 0)
        *out = v->missing[i];
    pthread_mutex_unlock(&v->missing_mu);
    return i < 0 ? snap_find(svol_snapshots(v->sv), name, out) : 0;
}

void volume_missing_free(struct volume *v)
{
    free(v->missing);
    v->missing = NULL;
    v->nmissing = 0;
}

int volume_missing_remove(struct volume *v, struct store *st)
{
    char name[NAME_MAX + 1];
    missing_name(v, name, sizeof name);
    if (unlinkat(store_snap_dir_fd(st), name, 0) == 0 || errno == ENOENT)
        return 0;
    int r = -errno;
    qb_log(LOG_ERR, "volume \"%s\": remove \"%s/%s\": %s", v->name, store_snap_dir_path(st), name,
           strerror(-r));
    return r;
}

/* Writes v's missing list, durably. A failure is logged: the records stay
 * in memory (this node's rounds keep them) until vsand restarts. */
static int missing_save(struct volume *v, struct store *st)
{
    size_t cap = sizeof MISSING_HEAD + v->nmissing * (3 * 21 + SNAP_NAME_MAX + 4);
    char *buf = malloc(cap);
    int r = buf ? 0 : -ENOMEM;
    size_t len = 0;
    if (buf)
        len = (size_t)snprintf(buf, cap, "%s", MISSING_HEAD);
    for (size_t i = 0; buf && i < v->nmissing; i++) {
        const struct snap_info *m = &v->missing[i];
        len += (size_t)snprintf(buf + len, cap - len, "%" PRIu64 " %" PRIu64 " %" PRId64 " %s\n",
                                m->id, m->size, m->time, m->name);
    }
    if (r == 0) {
        char name[NAME_MAX + 1];
        missing_name(v, name, sizeof name);
        r = store_snap_replace(st, name, buf, len);
    }
    free(buf);
    if (r < 0)
        qb_log(LOG_ERR,
               "volume \"%s\": the list of snapshots this copy lacks not saved: %s; kept "
               "until vsand restarts",
               v->name, strerror(-r));
    return r;
}

/* Records that v's copy lacks snapshot name (id, cut at time, of size
 * bytes) and fails the copy, which can't serve as current without it. */
static int missing_add(struct volume *v, struct store *st, const char *name, uint64_t id,
                       int64_t time, uint64_t size)
{
    pthread_mutex_lock(&v->missing_mu);
    struct snap_info *m = realloc(v->missing, (v->nmissing + 1) * sizeof *m);
    if (m) {
        v->missing = m;
        m[v->nmissing] = (struct snap_info){.id = id, .time = time, .size = size};
        snprintf(m[v->nmissing].name, sizeof m->name, "%s", name);
        v->nmissing++;
    }
    pthread_mutex_unlock(&v->missing_mu);
    if (!m) {
        qb_log(LOG_ERR, "volume \"%s\": snapshot \"%s\": out of memory for its record", v->name,
               name);
        return -ENOMEM;
    }
    qb_log(LOG_WARNING, "volume \"%s\": snapshot \"%s\" (id %" PRIu64 ") kept as missing here",
           v->name, name, id);
    missing_save(v, st);
    /* The first one fails the copy; a later one finds it failed. */
    if (v->nmissing == 1 && mirror_replica_fail(v->mv) == 0)
        qb_log(LOG_ERR, "volume \"%s\": this node's copy is failed: it lacks snapshot \"%s\"",
               v->name, name);
    return 0;
}

static void missing_drop(struct volume *v, struct store *st, size_t i)
{
    qb_log(LOG_INFO, "volume \"%s\": snapshot \"%s\", missing here, deleted", v->name,
           v->missing[i].name);
    pthread_mutex_lock(&v->missing_mu);
    memmove(&v->missing[i], &v->missing[i + 1], (v->nmissing - i - 1) * sizeof *v->missing);
    v->nmissing--;
    pthread_mutex_unlock(&v->missing_mu);
    missing_save(v, st);
}

int volumes_snapshot_fill(struct volumes *vols, const char *name)
{
    int r = 0;
    volumes_lock_shared(vols);
    struct volume *v = volumes_find_name(vols, name);
    size_t done = 0;
    while (v && r == 0 && done < v->nmissing) {
        const struct snap_info *m = &v->missing[done];
        struct snap_info si;
        r = snap_create(svol_snapshots(v->sv), m->id, m->name, m->size, m->time, &si);
        if (r < 0)
            qb_log(LOG_ERR, "volume \"%s\": snapshot \"%s\" (id %" PRIu64 ") still not cut: %s",
                   v->name, m->name, m->id, strerror(-r));
        else
            done++;
    }
    if (done > 0) {
        pthread_mutex_lock(&v->missing_mu);
        memmove(v->missing, v->missing + done, (v->nmissing - done) * sizeof *v->missing);
        v->nmissing -= done;
        pthread_mutex_unlock(&v->missing_mu);
        missing_save(v, vols->store); /* a stale line is dropped at the next open */
    }
    volumes_unlock(vols);
    return v ? r : -ENOENT;
}

/* ---- the cut's ops (main loop, agreed order) ----------------------------- */

static bool name_twice(const char (*names)[PMSG_NAME_MAX + 1], size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (strcmp(names[j], names[i]) == 0)
            return true;
    return false;
}

/* With the registry lock held: whether the cut c may take volume v. */
static int check_volume(const struct cut *c, struct volume *v)
{
    struct snap_info si;
    bool exists = snap_find(svol_snapshots(v->sv), c->snapshot, &si) == 0 ||
                  missing_find(v, c->snapshot) >= 0;
    if (c->kind == PMSG_CUT_UNFENCE)
        return 0;
    /* A configuration change is checked at its commit, where it applies:
     * the volume may change meanwhile. */
    if (c->kind == PMSG_CUT_CONFIG)
        return 0;
    /* During a rollback (an agreed fence), its snapshot must stay and no
     * second one may start. */
    if (atomic_load(&v->fenced_by))
        return c->kind == PMSG_CUT_ROLLBACK ? -EALREADY : c->kind == PMSG_CUT_DELETE ? -ETXTBSY : 0;
    if (c->kind == PMSG_CUT_DELETE || c->kind == PMSG_CUT_ROLLBACK)
        return exists ? 0 : -ENOMSG;
    if (exists)
        return -EEXIST;
    return snap_count(svol_snapshots(v->sv)) + v->nmissing >= SNAP_MAX ? -ENOSPC : 0;
}

int volumes_cut_check(struct volumes *vols, struct cut *c, const char (*names)[PMSG_NAME_MAX + 1])
{
    if (c->kind != PMSG_CUT_CONFIG && !store_name_valid(c->snapshot))
        return -EINVAL;
    int r = 0;
    volumes_lock_shared(vols);
    for (size_t i = 0; r == 0 && i < c->nvols; i++) {
        struct volume *v = volumes_find_name(vols, names[i]);
        if (!v)
            r = -ENOENT;
        else if (name_twice(names, i))
            r = -EINVAL;
        else if ((r = check_volume(c, v)) == 0)
            c->vids[i] = v->vid;
    }
    volumes_unlock(vols);
    return r;
}

/* A cut, a rollback's fence and a configuration change hold the writes;
 * a delete and an unfence change no data. */
static bool holds(const struct cut *c)
{
    return c->kind == PMSG_CUT_SNAPSHOT || c->kind == PMSG_CUT_ROLLBACK ||
           c->kind == PMSG_CUT_CONFIG;
}

/* A delete or a rollback closes what it changes to new clients from its
 * BEGIN on: a client opening it after this node said "not busy" would
 * otherwise lose its snapshot, or share the volume with the rollback.
 * (cat_open and snapx_open count themselves in first, then look.) */
static void close_to_clients(struct volume *v, const struct cut *c, bool closed)
{
    struct snap_info si;
    if (c->kind == PMSG_CUT_ROLLBACK)
        atomic_store(&v->closing, closed);
    else if (c->kind == PMSG_CUT_DELETE)
        atomic_store(&v->deleting,
                     closed && volume_snap_find(v, c->snapshot, &si) == 0 ? si.id : 0);
}

void volumes_cut_hold(struct volumes *vols, const struct cut *c)
{
    volumes_lock_shared(vols);
    for (size_t i = 0; i < c->nvols; i++) {
        struct volume *v = volumes_find_vid(vols, c->vids[i]);
        if (!v)
            continue;
        close_to_clients(v, c, true);
        if (!holds(c))
            continue;
        gate_close(v, c);
        if (v->mv)
            mirror_cut_hold(v->mv);
    }
    volumes_unlock(vols);
}

/* With the lock held: -EAGAIN, 0, or -EBUSY (see the op). */
static int volume_drained(const struct cut *c, struct volume *v)
{
    if (c->kind == PMSG_CUT_DELETE) {
        struct snap_info si;
        /* volume_snap_find: a snapshot this copy lacks is read too,
         * through this node from a current copy. */
        bool read = volume_snap_find(v, c->snapshot, &si) == 0 && snapx_readers(v, si.id) > 0;
        return read ? -EBUSY : 0;
    }
    if (c->kind == PMSG_CUT_UNFENCE)
        return 0;
    bool idle = atomic_load(&v->cut_writers) == 0 && (!v->mv || mirror_cut_idle(v->mv));
    if (!idle)
        return -EAGAIN;
    return c->kind == PMSG_CUT_ROLLBACK && volume_live_connections(v) > 0 ? -EBUSY : 0;
}

int volumes_cut_drained(struct volumes *vols, const struct cut *c)
{
    int r = 0;
    volumes_lock_shared(vols);
    for (size_t i = 0; i < c->nvols && r != -EAGAIN; i++) {
        struct volume *v = volumes_find_vid(vols, c->vids[i]);
        int e = v ? volume_drained(c, v) : 0;
        if (e < 0)
            r = e;
    }
    volumes_unlock(vols);
    return r;
}

static int cut_volume(struct volume *v, const char *snapshot, uint64_t id, int64_t time)
{
    struct snap_info si;
    int r = svol_snapshot_create(v->sv, id, snapshot, time, &si);
    if (r < 0)
        qb_log(LOG_ERR, "volume \"%s\": snapshot \"%s\" (id %" PRIu64 ") not cut here: %s", v->name,
               snapshot, id, strerror(-r));
    return r;
}

static int delete_snapshot(struct volume *v, struct store *st, const char *snapshot)
{
    struct snap_info si;
    int m = missing_find(v, snapshot);
    if (m >= 0) {
        missing_drop(v, st, (size_t)m);
        return 0;
    }
    int r = snap_find(svol_snapshots(v->sv), snapshot, &si);
    if (r == 0)
        r = snap_delete(svol_snapshots(v->sv), si.id);
    if (r < 0)
        qb_log(LOG_ERR, "volume \"%s\": snapshot \"%s\": delete: %s", v->name, snapshot,
               strerror(-r));
    return r;
}

/* Cuts snapshot name (id, time, size) of v's copy as it is, or, if it
 * can't (or already lacks an older one), keeps its record as missing:
 * a replicated copy then is failed (it serves nothing, and is rebuilt),
 * and the group keeps the snapshot. A standalone one has no other copy:
 * the snapshot is not cut. */
static int cut_or_miss(struct volume *v, struct store *st, const char *name, uint64_t id,
                       int64_t time, uint64_t size)
{
    int r = v->mv && v->nmissing > 0 ? -ENODATA : cut_volume(v, name, id, time);
    return r < 0 && v->mv ? missing_add(v, st, name, id, time, size) : r;
}

static int commit_volume(struct volume *v, struct store *st, const struct cut *c, uint64_t id)
{
    switch (c->kind) {
    case PMSG_CUT_SNAPSHOT:
        if (v->mv)
            mirror_cut_settle(v->mv);
        return cut_or_miss(v, st, c->snapshot, id, c->time, svol_size(v->sv));
    case PMSG_CUT_DELETE:
        return delete_snapshot(v, st, c->snapshot);
    case PMSG_CUT_ROLLBACK: /* no client opens v until the unfence, or until
                             * the node rolling it back leaves (volumes_node_left) */
        atomic_store(&v->fenced_by, c->from);
        return 0;
    case PMSG_CUT_CONFIG: /* applied by the table (voltable.c) before this */
        return 0;
    default:
        atomic_compare_exchange_strong(&v->fenced_by, &(unsigned){c->from}, 0);
        return 0;
    }
}

static void release_locked(struct volumes *vols, const struct cut *c)
{
    for (size_t i = 0; i < c->nvols; i++) {
        struct volume *v = volumes_find_vid(vols, c->vids[i]);
        if (!v)
            continue;
        close_to_clients(v, c, false);
        if (holds(c))
            gate_open(v);
    }
}

int volumes_cut_commit(struct volumes *vols, const struct cut *c, uint64_t id)
{
    int first = 0;
    volumes_lock_shared(vols);
    for (size_t i = 0; i < c->nvols; i++) {
        struct volume *v = volumes_find_vid(vols, c->vids[i]);
        int r = v ? commit_volume(v, vols->store, c, id) : -ENOENT;
        if (first == 0)
            first = r;
    }
    /* Before any write goes: peers' writes stamped with this cut wait
     * for it here (mirror/cut.c). */
    if (vols->mirror && (c->kind == PMSG_CUT_SNAPSHOT || c->kind == PMSG_CUT_CONFIG))
        mirror_cut_applied(vols->mirror, id);
    release_locked(vols, c);
    volumes_unlock(vols);
    return first;
}

void volumes_cut_settle(struct volumes *vols, const struct cut *c)
{
    volumes_lock_shared(vols);
    for (size_t i = 0; i < c->nvols; i++) {
        struct volume *v = volumes_find_vid(vols, c->vids[i]);
        if (v && v->mv)
            mirror_cut_settle(v->mv);
    }
    volumes_unlock(vols);
}

void volumes_cut_release(struct volumes *vols, const struct cut *c)
{
    volumes_lock_shared(vols);
    release_locked(vols, c);
    volumes_unlock(vols);
}

/* ---- snapshot records ------------------------------------------------------ */

/* v's snapshots its copy holds, oldest first, malloc'd. */
static int volume_snapshots(struct volume *v, struct snap_info **out, size_t *n)
{
    struct snapset *ss = svol_snapshots(v->sv);
    for (;;) {
        unsigned cap = snap_count(ss) + 1;
        *out = malloc(cap * sizeof **out);
        if (!*out)
            return -ENOMEM;
        int k = snap_list(ss, *out, cap);
        if (k >= 0 && (unsigned)k <= cap) {
            *n = (size_t)k;
            return 0;
        }
        free(*out); /* cut meanwhile: again */
    }
}

static int by_info_id(const void *a, const void *b)
{
    const struct snap_info *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

int volume_records(struct volume *v, struct snap_info **out, size_t *n)
{
    int r = volume_snapshots(v, out, n);
    if (r < 0)
        return r;
    pthread_mutex_lock(&v->missing_mu);
    size_t k = v->nmissing;
    struct snap_info *all = k ? realloc(*out, (*n + k) * sizeof *all) : *out;
    if (all && k)
        memcpy(all + *n, v->missing, k * sizeof *all);
    pthread_mutex_unlock(&v->missing_mu);
    if (!all) {
        free(*out);
        return -ENOMEM;
    }
    *n += k;
    qsort(all, *n, sizeof *all, by_info_id);
    *out = all;
    return 0;
}

int volumes_snapshots(struct volumes *vols, const char *name, struct snap_info **out, size_t *n)
{
    struct volume *v = volumes_get(vols, name);
    if (!v)
        return -ENOENT;
    int r = volume_records(v, out, n);
    volume_unref(v);
    return r;
}

static int append_snaps(struct volume *v, struct policing_snap **out, size_t *n, size_t *cap)
{
    struct snap_info *si;
    size_t k;
    int r = volume_records(v, &si, &k);
    if (r < 0)
        return r;
    if (*n + k > *cap) {
        size_t c = (*n + k) * 2;
        struct policing_snap *p = realloc(*out, c * sizeof *p);
        if (!p) {
            free(si);
            return -ENOMEM;
        }
        *out = p;
        *cap = c;
    }
    for (size_t i = 0; i < k; i++) {
        struct policing_snap *p = &(*out)[(*n)++];
        *p = (struct policing_snap){.id = si[i].id, .time = si[i].time, .size = si[i].size};
        snprintf(p->uuid, sizeof p->uuid, "%s", svol_uuid(v->sv));
        snprintf(p->name, sizeof p->name, "%s", si[i].name);
    }
    free(si);
    return 0;
}

int volumes_snapshot_list_all(struct volumes *vols, struct policing_snap **out, size_t *n)
{
    size_t cap = 0;
    int r = 0;
    *out = NULL;
    *n = 0;
    volumes_lock_shared(vols);
    for (size_t i = 0; r == 0 && i < vols->n; i++)
        r = append_snaps(vols->v[i], out, n, &cap);
    volumes_unlock(vols);
    if (r < 0) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return r;
}

static bool wanted(const struct policing_snap *s, size_t n, const char *uuid, uint64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (s[i].id == id && strcmp(s[i].uuid, uuid) == 0)
            return true;
    return false;
}

static bool held(const struct snap_info *si, size_t k, uint64_t id)
{
    for (size_t i = 0; i < k; i++)
        if (si[i].id == id)
            return true;
    return false;
}

static int by_id(const void *a, const void *b)
{
    const struct policing_snap *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Makes v's snapshots the group's: deletes those the group has not (it
 * deleted them while this node was away), then cuts those it lacks, oldest
 * first, of its copy as it is: it is outdated if it missed them, and its
 * resync brings their chunks (or keeps them as missing, cut_or_miss). */
static int load_volume(struct volume *v, struct store *st, const struct policing_snap *s, size_t n)
{
    struct snap_info *si;
    size_t k;
    int r = volume_snapshots(v, &si, &k);
    if (r < 0)
        return r;
    const char *uuid = svol_uuid(v->sv);
    for (size_t i = 0; r == 0 && i < k; i++)
        if (!wanted(s, n, uuid, si[i].id)) {
            qb_log(LOG_INFO, "volume \"%s\": snapshot \"%s\" was deleted by the group", v->name,
                   si[i].name);
            r = snap_delete(svol_snapshots(v->sv), si[i].id);
        }
    for (size_t i = v->nmissing; i-- > 0;)
        if (!wanted(s, n, uuid, v->missing[i].id))
            missing_drop(v, st, i);
    for (size_t i = 0; r == 0 && i < n; i++)
        if (strcmp(s[i].uuid, uuid) == 0 && !held(si, k, s[i].id) &&
            !held(v->missing, v->nmissing, s[i].id)) {
            qb_log(LOG_INFO, "volume \"%s\": snapshot \"%s\" was cut by the group meanwhile",
                   v->name, s[i].name);
            r = cut_or_miss(v, st, s[i].name, s[i].id, s[i].time, s[i].size);
        }
    free(si);
    return r;
}

int volumes_snapshot_load(struct volumes *vols, const struct policing_snap *s, size_t n,
                          uint64_t last_cut)
{
    struct policing_snap *sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (!sorted)
        return -ENOMEM;
    if (n > 0)
        memcpy(sorted, s, n * sizeof *s);
    qsort(sorted, n, sizeof *sorted, by_id);
    int r = 0;
    volumes_lock_shared(vols);
    for (size_t i = 0; i < vols->n; i++) {
        int e = load_volume(vols->v[i], vols->store, sorted, n);
        if (e < 0 && r == 0)
            r = e;
    }
    if (vols->mirror)
        mirror_cut_applied(vols->mirror, last_cut);
    volumes_unlock(vols);
    free(sorted);
    return r;
}

/* ---- rollback fences in the sync round --------------------------------------- */

int volumes_fence_list(struct volumes *vols, struct policing_fence **out, size_t *n)
{
    *n = 0;
    volumes_lock_shared(vols);
    *out = malloc((vols->n ? vols->n : 1) * sizeof **out);
    for (size_t i = 0; *out && i < vols->n; i++) {
        unsigned node = atomic_load(&vols->v[i]->fenced_by);
        if (node == 0)
            continue;
        struct policing_fence *f = &(*out)[(*n)++];
        f->node = node;
        snprintf(f->uuid, sizeof f->uuid, "%s", svol_uuid(vols->v[i]->sv));
    }
    volumes_unlock(vols);
    return *out ? 0 : -ENOMEM;
}

int volumes_fence_load(struct volumes *vols, const struct policing_fence *f, size_t n)
{
    volumes_lock_shared(vols);
    for (size_t i = 0; i < vols->n; i++) {
        struct volume *v = vols->v[i];
        unsigned node = 0;
        for (size_t j = 0; j < n; j++)
            if (strcmp(f[j].uuid, svol_uuid(v->sv)) == 0)
                node = f[j].node;
        if (atomic_exchange(&v->fenced_by, node) != node)
            qb_log(LOG_INFO, "volume \"%s\": %s", v->name,
                   node ? "fenced for a rollback by the group" : "its rollback's fence ended");
    }
    volumes_unlock(vols);
    return 0;
}
