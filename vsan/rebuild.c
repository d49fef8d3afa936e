/* rebuild.c - the automatic rebuild: a placed volume's copy that has been
 * gone longer than [cluster] replace_after is rebuilt on another node.
 *
 * One node decides, the coordinator: the lowest id in a quorate, synced
 * view (every member computes the same answer from the same membership,
 * so no election is needed; a new coordinator simply starts watching).
 * Every REBUILD_TICK_MS it looks at the agreed table. A replica is *gone*
 * when its node is no member, or when it stays outdated on a member (its
 * disk failed: it never resyncs); the coordinator times each from when it
 * first saw it so (a coordinator that just took over starts its clocks
 * then: it may wait longer, never less). Once one has been gone longer
 * than replace_after, and the volume has a current copy on a member and
 * no copy syncing, it asks for a rebuild (policing_replica_rebuild): one
 * configuration epoch that drops the gone copy and adds one on the node
 * placement picks (admin_pool_place_replica), filled by a full resync.
 * The set keeps its size, so nothing but the table decides what is left
 * to do. A returning node whose copy was replaced finds itself out of the
 * set in its sync round and drops the copy (mirror_replicas_load).
 *
 * One rebuild is asked at a time; the next tick looks again. Main loop
 * only: the clocks are the coordinator's own and bounded (GONE_MAX).
 */
#include "vsan/rebuild.h"

#include "mirror/replicas.h"
#include "policing/protocol.h"
#include "store/store.h"
#include "volume/volume.h"
#include "vsan/config.h"

#include <errno.h>
#include <qb/qblog.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REBUILD_TICK_MS 1000
/* Gone copies timed at once: more wait until a slot frees. */
#define GONE_MAX 1024

struct gone {
    char uuid[STORE_UUID_LEN + 1];
    uint32_t node;
    uint64_t since_ms; /* monotonic */
    bool seen;         /* still gone at this tick */
};

struct rebuild {
    const struct admin_node *node;
    qb_loop_timer_handle timer;
    bool asked; /* a rebuild's cut is on its way */
    struct gone gone[GONE_MAX];
    size_t ngone;
    uint64_t no_room_logged_ms;
};

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* When (vol, node) was first seen gone; starts its clock now if new. 0
 * when the table is full. */
static uint64_t gone_since(struct rebuild *rb, const char *uuid, uint32_t node)
{
    for (size_t i = 0; i < rb->ngone; i++)
        if (rb->gone[i].node == node && strcmp(rb->gone[i].uuid, uuid) == 0) {
            rb->gone[i].seen = true;
            return rb->gone[i].since_ms;
        }
    if (rb->ngone == GONE_MAX)
        return 0;
    struct gone *g = &rb->gone[rb->ngone++];
    *g = (struct gone){.node = node, .since_ms = now_ms(), .seen = true};
    snprintf(g->uuid, sizeof g->uuid, "%s", uuid);
    return g->since_ms;
}

/* Forgets the copies not seen gone at this tick (back, or replaced). */
static void gone_sweep(struct rebuild *rb)
{
    size_t k = 0;
    for (size_t i = 0; i < rb->ngone; i++)
        if (rb->gone[i].seen) {
            rb->gone[i].seen = false;
            rb->gone[k++] = rb->gone[i];
        }
    rb->ngone = k;
}

static bool is_member(const struct policing_status *st, uint32_t node)
{
    for (size_t i = 0; i < st->nmembers; i++)
        if (st->members[i].nodeid == node)
            return true;
    return false;
}

static void rebuilt(void *arg, int r)
{
    struct rebuild *rb = arg;
    rb->asked = false;
    if (r < 0 && r != -ESHUTDOWN)
        qb_log(LOG_WARNING, "rebuild: the cluster refused it: %s (the next look tries again)",
               strerror(-r));
}

/* Asks for from's copy of v to be rebuilt elsewhere; true if asked. */
static bool ask(struct rebuild *rb, const struct store_volume *v, uint32_t from)
{
    struct volume_info info = {.size = v->size, .nreplicas = v->nreplicas};
    snprintf(info.name, sizeof info.name, "%s", v->name);
    memcpy(info.replicas, v->replicas, sizeof info.replicas);
    uint32_t to;
    int r = admin_pool_place_replica(rb->node, &info, &to);
    if (r < 0) {
        if (now_ms() - rb->no_room_logged_ms > 60000) {
            qb_log(LOG_WARNING,
                   "rebuild: volume \"%s\": node %u's copy is gone, but no other node can take "
                   "it (%s); see vsan pool status",
                   v->name, from, strerror(-r));
            rb->no_room_logged_ms = now_ms();
        }
        return false;
    }
    r = policing_replica_rebuild(rb->node->pc, v->uuid, v->name, from, to, rebuilt, rb);
    if (r < 0) {
        qb_log(LOG_WARNING, "rebuild: volume \"%s\": node %u's copy: not asked: %s", v->name, from,
               strerror(-r));
        return false;
    }
    qb_log(LOG_NOTICE, "rebuild: volume \"%s\": node %u's copy is gone: rebuilding it on node %u",
           v->name, from, to);
    return true;
}

/* The copy of v to rebuild now, or 0. Times every gone copy it sees. */
static uint32_t due(struct rebuild *rb, const struct policing_status *st,
                    const struct store_volume *v)
{
    bool current = false, syncing = false;
    uint32_t pick = 0;
    uint64_t after = (uint64_t)rb->node->cfg->replace_after_s * 1000;
    for (uint32_t i = 0; i < v->nreplicas; i++) {
        const struct store_replica *r = &v->replicas[i];
        bool member = is_member(st, r->node);
        current = current || (member && r->state == REPLICA_CURRENT);
        syncing = syncing || r->state == REPLICA_SYNCING;
        if (member && r->state != REPLICA_OUTDATED)
            continue;
        uint64_t since = gone_since(rb, v->uuid, r->node);
        if (!pick && since && now_ms() - since >= after)
            pick = r->node;
    }
    return current && !syncing ? pick : 0;
}

static void look(struct rebuild *rb)
{
    struct policing_status *st = malloc(sizeof *st);
    if (!st)
        return;
    policing_status(rb->node->pc, st);
    bool coordinator = st->quorate && st->synced && st->nmembers > 0;
    for (size_t i = 0; coordinator && i < st->nmembers; i++)
        coordinator = st->members[i].nodeid >= st->nodeid;
    struct store_volume *recs = NULL;
    size_t n = 0;
    if (coordinator && volumes_list_records(rb->node->vols, &recs, &n) < 0)
        n = 0;
    for (size_t i = 0; i < n; i++) {
        if (!recs[i].fixed)
            continue; /* a copy on every node: none to rebuild it on */
        uint32_t from = due(rb, st, &recs[i]);
        if (from && !rb->asked)
            rb->asked = ask(rb, &recs[i], from);
    }
    free(recs);
    free(st);
    gone_sweep(rb);
}

static void tick(void *data)
{
    struct rebuild *rb = data;
    look(rb);
    if (qb_loop_timer_add(rb->node->loop, QB_LOOP_LOW, REBUILD_TICK_MS * 1000000ull, rb, tick,
                          &rb->timer) != 0)
        qb_log(LOG_ERR, "rebuild: no timer: gone copies are no longer rebuilt on their own");
}

int rebuild_start(const struct admin_node *node, struct rebuild **out)
{
    *out = NULL;
    if (!node->mirror || node->cfg->replace_after_s == 0)
        return 0;
    struct rebuild *rb = calloc(1, sizeof *rb);
    if (!rb)
        return -ENOMEM;
    rb->node = node;
    *out = rb;
    tick(rb);
    return 0;
}

void rebuild_stop(struct rebuild *rb)
{
    if (!rb)
        return;
    qb_loop_timer_del(rb->node->loop, rb->timer);
    /* A cut still on its way calls rebuilt() with rb: only at shutdown,
     * after the policing stopped, is rb freed. */
    free(rb);
}
