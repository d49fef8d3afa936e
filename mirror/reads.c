/* reads.c - reads and extents from a current peer, for a volume whose copy
 * on this node is not current, and the choice of the peers to ask; the
 * resync (resync.c) and the reconcile (reconcile.c) read through read_peer
 * too, and a snapshot's extents (snapio.c) are checked as the volume's.
 */
#include "mirror/engine_int.h"

#include "common/clock.h"
#include "mirror/replicas.h"
#include "policing/protocol.h"
#include "store/svol.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <qb/qblog.h>

bool mirror_local_current(struct mvol *v)
{
    return atomic_load(&v->serve_local);
}

/* A node cut off from the majority cannot know whether it has been
 * outdated meanwhile, and its copy misses every write the majority has
 * acknowledged since; a node that has just started or rejoined holds its
 * own old table until the sync round ends, which may call its copy current
 * when the group has outdated it. Either answers no reads (t-lab-checker's
 * readers caught both serving their own copy). Nor does a node whose read
 * lease ran out (policing/protocol.h): the others may have outdated it
 * before it heard (a node cut off before its corosync noticed: the readers
 * caught that too). A quorate node waits for its round's end or its lease
 * up to the mirror timeout: every membership change opens a round, and a
 * read that failed at once then (t-lab-lease's, as a node rejoined) would
 * fail a client's file system for a change elsewhere in the cluster. */
int mirror_read_ok(struct mvol *v, bool wait)
{
    for (;;) {
        /* A read that goes to a peer needs the peer's lease, not this
         * node's; a copy that became current during the wait needs this
         * node's, so the wait is for what holds at its end. */
        bool own = atomic_load(&v->serve_local);
        if (own ? policing_lease_valid(v->pc) : policing_readable(v->pc))
            return 0;
        if (!wait)
            return -EAGAIN;
        if (policing_read_wait(v->pc, own, v->m->p.timeout_ms) < 0)
            return -EIO;
        if (atomic_load(&v->serve_local) == own)
            return 0;
    }
}

/* The peers whose copy of v is current, into peers; how many. */
size_t current_peers(struct mvol *v, uint32_t peers[STORE_REPLICAS_MAX])
{
    size_t n = 0;
    pthread_mutex_lock(&v->mu);
    for (uint32_t i = 0; i < v->rec.nreplicas; i++)
        if (v->rec.replicas[i].state == REPLICA_CURRENT && v->rec.replicas[i].node != v->m->self)
            peers[n++] = v->rec.replicas[i].node;
    pthread_mutex_unlock(&v->mu);
    return n;
}

/* Reads from the first current peer that answers. */
static int read_peer_once(struct mvol *v, void *buf, uint32_t count, uint64_t offset)
{
    struct mirror *m = v->m;
    uint32_t peers[STORE_REPLICAS_MAX];
    size_t n = current_peers(v, peers);
    int r = -EIO;
    for (size_t i = 0; i < n; i++) {
        struct mlink_op op = {.peer = peers[i], .reply_buf = buf, .reply_max = count};
        mwire_init(&op.req, MW_READ, 0);
        op.req.volume = v->vid;
        op.req.offset = offset;
        op.req.length = count;
        mlink_call(m->link, &op, 1);
        if (op.result == 0 && op.reply_len == count)
            return 0;
        r = op.result < 0 ? op.result : -EIO;
    }
    if (n == 0)
        qb_log(LOG_WARNING, "volume \"%s\": no current replica to read from", v->name);
    return r;
}

/* A peer whose read lease lapsed for a moment (-EAGAIN: its heartbeat is
 * late, as around a membership change) is asked again, every 50 ms, up to
 * the mirror timeout. */
int read_peer(struct mvol *v, void *buf, uint32_t count, uint64_t offset)
{
    uint64_t deadline = clock_now_ms() + v->m->p.timeout_ms;
    int r;
    while ((r = read_peer_once(v, buf, count, offset)) == -EAGAIN && clock_now_ms() < deadline &&
           !atomic_load(&v->m->stopping) && !atomic_load(&v->gone)) {
        struct timespec d = {0, 50 * 1000000L};
        nanosleep(&d, NULL);
    }
    return r;
}

int mirror_read(struct mvol *v, void *buf, uint32_t count, uint64_t offset)
{
    char *p = buf;
    while (count > 0) {
        uint32_t n = count < MWIRE_IO_MAX ? count : MWIRE_IO_MAX;
        int r = read_peer(v, p, n, offset);
        if (r < 0)
            return -EIO;
        p += n;
        count -= n;
        offset += n;
    }
    return 0;
}

/* ---- extents ---------------------------------------------------------------- */

int extents_reply(struct mvol *v, const struct mlink_op *op, const struct mw_extent *rec,
                  struct svol_extent *ext)
{
    size_t n = op->reply_len / sizeof *rec;
    const char *why;
    if (mwire_check_extents(&op->req, rec, n, &why) < 0) {
        qb_log(LOG_ERR, "volume \"%s\": node %u: %s reply refused: %s", v->name, op->peer,
               mwire_type_name(op->req.type), why);
        return -EIO;
    }
    for (size_t i = 0; i < n; i++)
        ext[i] = (struct svol_extent){.length = rec[i].length,
                                      .hole = (rec[i].flags & MW_EXTENT_ZERO) != 0};
    return (int)n;
}

/* One peer's extents of the range, checked, into ext; how many, or -errno. */
static int extents_peer(struct mvol *v, uint32_t peer, uint32_t count, uint64_t offset,
                        struct mw_extent *rec, struct svol_extent *ext, unsigned max)
{
    struct mlink_op op = {.peer = peer, .reply_buf = rec, .reply_max = max * sizeof *rec};
    mwire_init(&op.req, MW_EXTENTS, 0);
    op.req.volume = v->vid;
    op.req.offset = offset;
    op.req.length = count;
    op.req.arg = max;
    mlink_call(v->m->link, &op, 1);
    return op.result < 0 ? op.result : extents_reply(v, &op, rec, ext);
}

int mirror_extents(struct mvol *v, uint32_t count, uint64_t offset, struct svol_extent *ext,
                   unsigned max)
{
    max = max < MWIRE_EXTENTS_MAX ? max : MWIRE_EXTENTS_MAX;
    uint32_t peers[STORE_REPLICAS_MAX];
    size_t n = current_peers(v, peers);
    struct mw_extent *rec = malloc(max * sizeof *rec);
    int r = rec ? -EIO : -ENOMEM;
    for (size_t i = 0; rec && i < n; i++) {
        r = extents_peer(v, peers[i], count, offset, rec, ext, max);
        if (r > 0)
            break;
    }
    free(rec);
    if (r > 0)
        return r;
    qb_log(LOG_WARNING, "volume \"%s\": extents at %llu: %s", v->name, (unsigned long long)offset,
           n == 0 ? "no current replica to ask" : strerror(r < 0 ? -r : EIO));
    return -EIO;
}
