/* protocol.c - the policing protocol of one node (see protocol.h for the
 * design: agreed stream, sync rounds, the write path). */
#include "policing/protocol.h"
#include "common/clock.h"
#include "policing/cut.h"
#include "policing/syncstream.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <qb/qblog.h>

_Static_assert(SVC_ADDR_MAX == PMSG_SERVICE_ADDR_MAX, "service addresses fit the messages");

/* A table or region message held back during a sync round, with its
 * position among the messages delivered since the membership change. */
struct held {
    uint64_t index;
    uint32_t nodeid, pid;
    size_t len;
    char data[];
};

struct offer {
    uint32_t nodeid;
    uint64_t version;
    uint32_t prev_members;
    bool synced;
};

/* An admin command waiting for its table change to come back agreed. */
struct pending {
    uint64_t tag;
    policing_done_fn done;
    void *arg;
    struct pending *next;
};

/* Copies being filled kept at once (PMSG_PROGRESS), and how long an
 * announce counts: three of the announcer's 2 s ticks. */
#define PROGRESS_KEPT 256
#define PROGRESS_FRESH_MS 6000

struct policing {
    struct policing_params p;
    char name[PMSG_NAME_MAX + 1], nbd[PMSG_ADDR_MAX], mirror[PMSG_ADDR_MAX],
        group[PMSG_NAME_MAX + 1], service[PMSG_SERVICE_ADDR_MAX];
    struct cluster *cl;
    uint32_t self, pid;

    /* Main loop only; members and nmembers are also read by the NBD
     * threads (policing_member_nbd), so the main loop changes them under
     * lock and reads them without it. */
    struct policing_member members[CLUSTER_NODES_MAX];
    size_t nmembers;
    bool synced;     /* this node's tables are current */
    bool round_open; /* holding table and region messages */
    /* Quorate ever since a sync round ended: the table this node holds is
     * the group's, so its copies' states can be trusted for reads. Read
     * by the NBD threads (policing_readable). */
    atomic_bool readable;
    uint32_t winner;       /* of the open round, once all offers are in */
    uint64_t since_change; /* messages delivered since the membership change */
    struct offer offers[CLUSTER_NODES_MAX];
    size_t noffers;
    uint32_t prev_members; /* members before the last change */
    struct held **held;
    size_t nheld, capheld;
    struct sync_assembly sync; /* the winner's state, as its pieces come */
    uint64_t streams_sent;     /* names this node's state streams */
    struct pending *pending;
    uint64_t next_tag;
    struct svc_table svc; /* who holds which service address (agreed) */
    /* SERVICE moves this node sent as coordinator and has not seen come
     * back, so that it does not send them again meanwhile. */
    struct svc_move moves_sent[CLUSTER_NODES_MAX];
    size_t nmoves_sent;
    /* The open cuts (cut.h); the timer polls their drains and deadlines
     * while any is open. */
    struct cut_set cuts;
    uint64_t cut_seq;  /* names this node's cuts */
    uint64_t last_cut; /* the id of the last cut committed (or loaded) */
    qb_loop_timer_handle cut_timer;
    bool cut_timer_on;
    bool refresh_queued; /* refresh_later's job is on the loop */
    /* The figures each node last announced (PMSG_CAPACITY), this node's
     * last sent, and whether a member joined since (announce again). */
    struct policing_capacity caps[CLUSTER_NODES_MAX];
    size_t ncaps;
    struct policing_capacity cap_sent;
    bool cap_due;

    bool progress_sent; /* the last PROGRESS this node sent named copies */

    /* lock guards everything below, shared with the NBD threads. cond is
     * broadcast on every grant, quorum change and stop. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct pol *pol;
    bool quorate, stopping;
    /* quorate = vq_quorate && majority. votequorum's answer (vq_quorate)
     * can lag a membership change by a moment, and in that moment a node
     * cut off would still act for the cluster; so the members must also be
     * a majority of the configured nodes (set at each change). Main loop
     * writes them under lock. */
    bool vq_quorate, majority;
    uint64_t requests_sent, releases_sent, delivered;
    /* The copies being filled, as each node last said (PMSG_PROGRESS),
     * with the monotonic ms it said so; bounded: PROGRESS_KEPT. */
    struct kept_progress {
        struct policing_progress p;
        uint64_t at_ms;
    } progress[PROGRESS_KEPT];
    size_t nprogress;
    /* Messages the state machine asked for, in the order it asked: the
     * region rules rely on a node's messages arriving in that order (a
     * REQUEST sent behind this node's own RELEASE must not overtake it),
     * so one thread at a time (draining) sends them, oldest first. One
     * that fails stays first, for the beat thread to try again (a lost
     * REQUEST or RELEASE would stall its region for good); out_fails
     * counts the tries since the last that went out. */
    struct pol_action *outbox;
    size_t nout, capout, headout;
    bool draining;
    unsigned out_fails;
    /* Replica changes this node sent, by tag: next_replica_tag is the next
     * to send, replica_applied counts up as they come back (a node's own
     * messages return in the order it sent them). */
    pthread_mutex_t replica_mu; /* orders sends of next_replica_tag */
    uint64_t next_replica_tag, replica_applied;
    /* Regions of this node's activity log still to announce (main loop). */
    struct pol_key *announce;
    size_t nannounce;
    /* The read lease (protocol.h): lease_until, monotonic ms, is moved
     * forward by the main loop when this node's heartbeat comes back and
     * read by any thread; its waiters wait on cond. The beat thread sends
     * the heartbeats until stopping. */
    _Atomic uint64_t lease_until;
    pthread_t beat;
    bool beat_started;
};

uint32_t policing_volume_id(const char *uuid)
{
    char hex[9];
    memcpy(hex, uuid, 8);
    hex[8] = '\0';
    return (uint32_t)strtoul(hex, NULL, 16);
}

/* ---- sending ------------------------------------------------------------ */

static int send_msg(struct policing *pc, const void *msg, size_t len)
{
    int r = pc->p.driver->send(pc->cl, msg, len);
    if (r < 0)
        qb_log(LOG_ERR, "policing: multicast of a %zu-byte message: %s", len, strerror(-r));
    return r;
}

/* A send the round cannot do without (an OFFER, a piece of the state):
 * corosync's send already waits out flow control for 30 s, so a
 * transient failure is tried again a few times; then the error is for
 * the caller to log. */
#define ROUND_SEND_TRIES 3

static int send_for_round(struct policing *pc, const void *msg, size_t len)
{
    int r = -EAGAIN;
    for (int i = 0; i < ROUND_SEND_TRIES; i++) {
        r = send_msg(pc, msg, len);
        if (r != -ETIMEDOUT && r != -EAGAIN && r != -ENOBUFS && r != -ENOMEM)
            break;
    }
    return r;
}

/* Without the lock; 0 or the send's -errno, logged by the caller (a
 * failed one is tried again every POLICING_LEASE_BEAT_MS). */
static int send_region(struct policing *pc, enum pmsg_type type, struct pol_key k)
{
    struct pmsg_region m;
    pmsg_init(&m.h, type, sizeof m);
    m.volume = k.volume;
    m.region = k.region;
    int r = pc->p.driver->send(pc->cl, &m, sizeof m);
    if (r < 0)
        return r;
    pthread_mutex_lock(&pc->lock);
    if (type == PMSG_REQUEST)
        pc->requests_sent++;
    else
        pc->releases_sent++;
    pthread_mutex_unlock(&pc->lock);
    return 0;
}

/* With the lock held: queues a message in order. Allocation failure is
 * fatal: a lost REQUEST or RELEASE would stall the region for good. */
static void outbox_push(struct policing *pc, const struct pol_action *x)
{
    if (pc->headout > 0 && pc->headout == pc->nout)
        pc->headout = pc->nout = 0;
    if (pc->nout == pc->capout) {
        size_t cap = pc->capout ? 2 * pc->capout : 64;
        struct pol_action *v = realloc(pc->outbox, cap * sizeof *v);
        if (!v) {
            qb_log(LOG_CRIT, "policing: out of memory queueing a region message");
            abort();
        }
        pc->outbox = v;
        pc->capout = cap;
    }
    pc->outbox[pc->nout++] = *x;
}

/* With the lock held: the first send of x failed (r), or x went out
 * after failing (r == 0): an outage is logged at its start and end, not
 * at each try. */
static void outbox_report(struct policing *pc, const struct pol_action *x, int r)
{
    const char *what = x->kind == POL_SEND_REQUEST ? "REQUEST" : "RELEASE";
    if (r == 0)
        qb_log(LOG_NOTICE, "policing: volume %08x region %llu: %s sent after %u failed tries",
               x->key.volume, (unsigned long long)x->key.region, what, pc->out_fails);
    else
        qb_log(LOG_ERR,
               "policing: volume %08x region %llu: %s not sent: %s; tried again every %d ms",
               x->key.volume, (unsigned long long)x->key.region, what, strerror(-r),
               POLICING_LEASE_BEAT_MS);
}

/* Sends what is queued, oldest first, unless another thread already is;
 * called with the lock held, returns with it held. Sending happens
 * without the lock: it may wait on corosync's flow control. A message
 * that fails stays at the head, and what follows waits behind it (the
 * order matters), until the next drain: the beat thread's, if no write
 * or agreed message comes sooner. */
static void outbox_drain(struct policing *pc)
{
    if (pc->draining)
        return;
    pc->draining = true;
    while (pc->headout < pc->nout) {
        struct pol_action x = pc->outbox[pc->headout];
        pthread_mutex_unlock(&pc->lock);
        int r = send_region(pc, x.kind == POL_SEND_REQUEST ? PMSG_REQUEST : PMSG_RELEASE, x.key);
        pthread_mutex_lock(&pc->lock);
        if (r < 0) {
            if (++pc->out_fails == 1)
                outbox_report(pc, &x, r);
            break;
        }
        if (pc->out_fails > 0)
            outbox_report(pc, &x, 0);
        pc->out_fails = 0;
        pc->headout++;
    }
    pc->draining = false;
}

/* Carries out what the region state machine asked for. Called with the
 * lock held, in the same critical section as the pol_* call that produced
 * the actions, so messages queue in the order the state machine decided
 * them. A writer (send_here) sends them itself: the lock is released while
 * sending and held again on return. The main loop only queues them for
 * the beat thread: a send may wait out corosync's flow control for 30 s,
 * and the loop must not (the admin socket, the rounds and every agreed
 * message wait behind it). */
static void carry_out(struct policing *pc, struct pol_actions *a, bool send_here)
{
    for (size_t i = 0; i < a->n; i++) {
        struct pol_action *x = &a->v[i];
        switch (x->kind) {
        case POL_SEND_REQUEST:
        case POL_SEND_RELEASE:
            outbox_push(pc, x);
            break;
        case POL_WAKE:
            pthread_cond_broadcast(&pc->cond);
            break;
        case POL_LOST:
            qb_log(LOG_INFO, "policing: volume %08x region %llu: node %u left while owning it",
                   x->key.volume, (unsigned long long)x->key.region, x->node);
            break;
        }
    }
    a->n = 0;
    if (send_here)
        outbox_drain(pc);
    else if (pc->headout < pc->nout)
        pthread_cond_broadcast(&pc->cond);
}

/* ---- the write path ----------------------------------------------------- */

/* With the lock held: 0 once quorate, else -EIO (or -EAGAIN for nowait
 * callers in suspend mode, who will come back and wait). */
static int wait_quorum(struct policing *pc, bool nowait)
{
    if (pc->quorate)
        return 0;
    if (!pc->p.suspend_on_no_quorum)
        return -EIO;
    if (nowait)
        return -EAGAIN;
    struct timespec deadline = clock_after_ms(pc->p.suspend_timeout_ms);
    while (!pc->quorate && !pc->stopping)
        if (pthread_cond_timedwait(&pc->cond, &pc->lock, &deadline) == ETIMEDOUT)
            break;
    return pc->quorate ? 0 : -EIO;
}

int policing_write_begin(struct policing *pc, uint32_t volume, uint64_t offset, uint64_t len,
                         bool nowait, struct pol_write *w)
{
    uint64_t rs = pc->p.region_size;
    *w = (struct pol_write){
        .volume = volume, .first = offset / rs, .last = (offset + (len ? len - 1 : 0)) / rs};
    struct pol_actions out = {0};
    int r = 0;
    pthread_mutex_lock(&pc->lock);
    for (;;) {
        if (pc->stopping) {
            r = -ESHUTDOWN;
            break;
        }
        r = wait_quorum(pc, nowait);
        if (r < 0 || pol_write_begin(pc->pol, w, &out))
            break;
        if (nowait) {
            pol_write_cancel(pc->pol, w, &out);
            r = -EAGAIN;
            break;
        }
        if (out.n > 0) { /* ask first, then wait for the grant */
            carry_out(pc, &out, true);
            continue;
        }
        pthread_cond_wait(&pc->cond, &pc->lock);
    }
    if (r < 0 && w->waiting)
        pol_write_cancel(pc->pol, w, &out);
    carry_out(pc, &out, true);
    pthread_mutex_unlock(&pc->lock);
    pol_actions_free(&out);
    return r;
}

void policing_write_end(struct policing *pc, struct pol_write *w)
{
    struct pol_actions out = {0};
    pthread_mutex_lock(&pc->lock);
    pol_write_end(pc->pol, w, &out);
    carry_out(pc, &out, true);
    pthread_mutex_unlock(&pc->lock);
    pol_actions_free(&out);
}

/* ---- applying the agreed stream ----------------------------------------- */

static struct pending *take_pending(struct policing *pc, uint64_t tag)
{
    for (struct pending **p = &pc->pending; *p; p = &(*p)->next) {
        if ((*p)->tag == tag) {
            struct pending *x = *p;
            *p = x->next;
            return x;
        }
    }
    return NULL;
}

static void bump_version(struct policing *pc)
{
    uint64_t v = pc->p.table->version(pc->p.table_ctx) + 1;
    if (pc->p.table->set_version(pc->p.table_ctx, v) < 0)
        qb_log(LOG_ERR, "policing: volume table version %llu not persisted", (unsigned long long)v);
}

static bool is_member(struct policing *pc, uint32_t node)
{
    for (size_t i = 0; i < pc->nmembers; i++)
        if (pc->members[i].nodeid == node)
            return true;
    return false;
}

/* A CREATE's placed set: sorted, distinct, and every node still a member
 * where it is applied (the same answer everywhere: membership is part of
 * the agreed order). A node that left in between would be called current
 * with a copy it never made. */
static int placed_ok(struct policing *pc, const struct pmsg_volume *m)
{
    if (m->nplaced > PMSG_REPLICAS_MAX)
        return -EINVAL;
    for (uint32_t i = 0; i < m->nplaced; i++) {
        if (m->placed[i] == 0 || (i > 0 && m->placed[i] <= m->placed[i - 1]))
            return -EINVAL;
        if (!is_member(pc, m->placed[i])) {
            qb_log(LOG_WARNING, "volume \"%s\": create refused: placed node %u left the group",
                   m->name, m->placed[i]);
            return -EHOSTDOWN;
        }
    }
    return 0;
}

static int apply_table_change(struct policing *pc, int type, const struct pmsg_volume *m)
{
    const struct policing_table_ops *t = pc->p.table;
    if (!pmsg_string_ok(m->name, sizeof m->name) || !pmsg_string_ok(m->uuid, sizeof m->uuid) ||
        !pmsg_string_ok(m->owner, sizeof m->owner))
        return -EINVAL;
    if (type == PMSG_VOL_CREATE && m->nplaced > 0) {
        int r = placed_ok(pc, m);
        uint32_t placed[PMSG_REPLICAS_MAX];
        memcpy(placed, m->placed, sizeof placed); /* aligned */
        return r < 0 ? r
                     : t->create(pc->p.table_ctx, m->uuid, m->name, m->size, m->owner,
                                 m->client != 0, placed, m->nplaced, true);
    }
    if (type == PMSG_VOL_CREATE) {
        uint32_t members[CLUSTER_NODES_MAX];
        for (size_t i = 0; i < pc->nmembers; i++)
            members[i] = pc->members[i].nodeid;
        return t->create(pc->p.table_ctx, m->uuid, m->name, m->size, m->owner, m->client != 0,
                         members, pc->nmembers, false);
    }
    uint32_t vid = 0;
    struct policing_volume *list;
    size_t n;
    if (t->list(pc->p.table_ctx, &list, &n) == 0) {
        for (size_t i = 0; i < n; i++)
            if (strcmp(list[i].name, m->name) == 0)
                vid = policing_volume_id(list[i].uuid);
        free(list);
    }
    int r = t->remove(pc->p.table_ctx, m->uuid, m->name);
    if (r == 0 && vid) {
        struct pol_actions out = {0};
        pthread_mutex_lock(&pc->lock);
        pol_on_volume_gone(pc->pol, vid, &out);
        carry_out(pc, &out, false);
        pthread_mutex_unlock(&pc->lock);
        pol_actions_free(&out);
    }
    return r;
}

static void apply_volume(struct policing *pc, uint32_t nodeid, uint32_t pid, int type,
                         const struct pmsg_volume *m)
{
    int r = apply_table_change(pc, type, m);
    if (r == 0)
        bump_version(pc);
    if (nodeid != pc->self || pid != pc->pid)
        return;
    struct pending *x = take_pending(pc, m->tag);
    if (x) {
        x->done(x->arg, r);
        free(x);
    }
}

static void apply_region(struct policing *pc, uint32_t nodeid, int type,
                         const struct pmsg_region *m)
{
    struct pol_actions out = {0};
    struct pol_key k = {m->volume, m->region};
    pthread_mutex_lock(&pc->lock);
    if (type == PMSG_REQUEST)
        pol_on_request(pc->pol, k, nodeid, &out);
    else
        pol_on_release(pc->pol, k, nodeid, &out);
    carry_out(pc, &out, false);
    pthread_mutex_unlock(&pc->lock);
    pol_actions_free(&out);
}

/* This node's replica change m has been applied, here or (in a sync
 * round) in the state it loaded: its sender may go on. */
static void replica_done(struct policing *pc, uint32_t nodeid, uint32_t pid,
                         const struct pmsg_replica *m)
{
    if (nodeid != pc->self || pid != pc->pid)
        return;
    pthread_mutex_lock(&pc->lock);
    if (m->tag > pc->replica_applied)
        pc->replica_applied = m->tag;
    pthread_cond_broadcast(&pc->cond);
    pthread_mutex_unlock(&pc->lock);
}

static void service_update(struct policing *pc);

static void refresh_job(void *data)
{
    struct policing *pc = data;
    pc->refresh_queued = false;
    pc->p.table->changed(pc->p.table_ctx);
    service_update(pc);
}

/* After a replica change the mirror looks at every volume again and the
 * service addresses are worked out again from the whole table: a pass
 * over every volume each. A rejoin brings two changes per volume (8,000
 * with 4,000 volumes), and a pass per change made that quadratic: minutes
 * of a busy main loop and an unanswered admin socket. So these passes run
 * once, at the end of the loop iteration that delivered the changes (a
 * low-priority job runs after the poll events of its iteration). Only
 * replica changes wait: a membership change or a sync round still
 * refreshes at once, because the links to a node that left must drop
 * before anything else is applied. */
static void refresh_later(struct policing *pc)
{
    if (pc->refresh_queued)
        return;
    if (!pc->stopping && qb_loop_job_add(pc->p.loop, QB_LOOP_LOW, pc, refresh_job) == 0) {
        pc->refresh_queued = true;
        return;
    }
    if (!pc->stopping)
        qb_log(LOG_WARNING, "policing: a refresh could not wait for the loop: done at once");
    refresh_job(pc);
}

/* readable from its three parts, under the lock, waking the readers that
 * wait for it (policing_read_wait). Main loop. */
static void update_readable(struct policing *pc)
{
    pthread_mutex_lock(&pc->lock);
    atomic_store(&pc->readable, pc->quorate && pc->synced && !pc->round_open);
    pthread_cond_broadcast(&pc->cond);
    pthread_mutex_unlock(&pc->lock);
}

/* A partition without quorum applies no replica change: it cannot know
 * what the majority decided meanwhile, and a table it changed would carry
 * a higher version into the next sync round and win it. Its sender sees
 * no quorum and fails its write. */
static void apply_replica_from(struct policing *pc, uint32_t nodeid, uint32_t pid,
                               const struct pmsg_replica *m, uint32_t from);

static void apply_replica(struct policing *pc, uint32_t nodeid, uint32_t pid,
                          const struct pmsg_replica *m)
{
    apply_replica_from(pc, nodeid, pid, m, nodeid);
}

/* An OUTDATE is the replica change it stands for, vouched for by its
 * witness instead of its sender (messages.h). */
static struct pmsg_replica outdate_as_replica(const struct pmsg_outdate *o)
{
    struct pmsg_replica m = {.tag = o->tag,
                             .volume = o->volume,
                             .node = o->node,
                             .state = PMSG_REPLICA_OUTDATED,
                             .first = o->first,
                             .last = o->last};
    return m;
}

static void apply_outdate(struct policing *pc, uint32_t nodeid, uint32_t pid,
                          const struct pmsg_outdate *o)
{
    struct pmsg_replica m = outdate_as_replica(o);
    apply_replica_from(pc, nodeid, pid, &m, o->witness);
}

/* from: whose copy vouches for the change (the table op's rule). */
static void apply_replica_from(struct policing *pc, uint32_t nodeid, uint32_t pid,
                               const struct pmsg_replica *m, uint32_t from)
{
    if (!pc->quorate) {
        qb_log(LOG_WARNING,
               "policing: volume %08x: node %u's replica change not applied: no quorum", m->volume,
               m->node);
        /* The majority may have applied it: this table is not the group's
         * until the next sync round, and answers no reads meanwhile. */
        pc->synced = false;
        update_readable(pc);
        replica_done(pc, nodeid, pid, m);
        return;
    }
    int r = pc->p.table->replica(pc->p.table_ctx, from, m->volume, m->node, m->state, m->first,
                                 m->last);
    if (r > 0)
        bump_version(pc);
    replica_done(pc, nodeid, pid, m);
    if (r > 0)
        refresh_later(pc);
}

/* ---- service addresses ------------------------------------------------- */

/* Whether every replica on node is current in the agreed table; a node
 * that is no replica of a volume has nothing to catch up on there. */
static bool node_current(const struct policing_volume *v, size_t n, uint32_t node)
{
    for (size_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < v[i].nreplicas && j < PMSG_REPLICAS_MAX; j++)
            if (v[i].replicas[j].node == node && v[i].replicas[j].state != PMSG_REPLICA_CURRENT)
                return false;
    return true;
}

/* The members whose replicas are all current; -errno if the table can't
 * be listed. */
static int current_members(struct policing *pc, uint32_t *out, size_t *n)
{
    struct policing_volume *vols;
    size_t nv;
    int r = pc->p.table->list(pc->p.table_ctx, &vols, &nv);
    if (r < 0)
        return r;
    *n = 0;
    for (size_t i = 0; i < pc->nmembers; i++)
        if (node_current(vols, nv, pc->members[i].nodeid))
            out[(*n)++] = pc->members[i].nodeid;
    free(vols);
    return 0;
}

static size_t member_ids(const struct policing *pc, uint32_t *out)
{
    for (size_t i = 0; i < pc->nmembers; i++)
        out[i] = pc->members[i].nodeid;
    return pc->nmembers;
}

static bool listed_id(const uint32_t *v, size_t n, uint32_t x)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == x)
            return true;
    return false;
}

static bool move_sent(const struct policing *pc, const struct svc_move *m)
{
    for (size_t i = 0; i < pc->nmoves_sent; i++)
        if (pc->moves_sent[i].owner == m->owner && pc->moves_sent[i].holder == m->holder)
            return true;
    return false;
}

static int send_service(struct policing *pc, const struct svc_move *mv)
{
    struct pmsg_service m;
    pmsg_init(&m.h, PMSG_SERVICE, sizeof m);
    m.owner = mv->owner;
    m.holder = mv->holder;
    m.manual = mv->manual;
    return send_msg(pc, &m, sizeof m);
}

/* The coordinator (the lowest member id) sends the moves the rules ask
 * for; everyone else waits for them. */
static void coordinate(struct policing *pc, const uint32_t *members, size_t n,
                       const uint32_t *current, size_t ncurrent)
{
    for (size_t i = 0; i < n; i++)
        if (members[i] < pc->self)
            return;
    struct svc_move moves[CLUSTER_NODES_MAX];
    size_t k = svc_plan(&pc->svc, members, n, current, ncurrent, moves);
    for (size_t i = 0; i < k; i++) {
        if (move_sent(pc, &moves[i]) || pc->nmoves_sent == CLUSTER_NODES_MAX)
            continue;
        qb_log(LOG_INFO, "policing: service address of node %u: moving it to node %u",
               moves[i].owner, moves[i].holder);
        if (send_service(pc, &moves[i]) == 0)
            pc->moves_sent[pc->nmoves_sent++] = moves[i];
    }
}

/* After anything that may change who should hold what: tells the local
 * side which addresses to hold, and lets the coordinator move addresses.
 * Without quorum a node holds nothing (the majority takes its addresses
 * over); during a sync round it keeps what it has until it knows more. */
static void service_update(struct policing *pc)
{
    const struct policing_service_ops *ops = pc->p.service_ops;
    bool quorate = policing_quorate(pc);
    if (!quorate) {
        if (ops)
            ops->hold(pc->p.service_ctx, NULL, 0);
        return;
    }
    if (pc->round_open || !pc->synced)
        return;
    uint32_t members[CLUSTER_NODES_MAX], current[CLUSTER_NODES_MAX];
    size_t n = member_ids(pc, members), ncurrent;
    int r = current_members(pc, current, &ncurrent);
    if (r < 0) {
        qb_log(LOG_ERR, "policing: service addresses: listing the volume table: %s", strerror(-r));
        return;
    }
    if (ops) {
        struct svc_hold want[CLUSTER_NODES_MAX];
        size_t k =
            svc_wanted(&pc->svc, pc->self, true, listed_id(current, ncurrent, pc->self), want);
        ops->hold(pc->p.service_ctx, want, k);
    }
    coordinate(pc, members, n, current, ncurrent);
}

static void forget_move(struct policing *pc, uint32_t owner)
{
    for (size_t i = 0; i < pc->nmoves_sent;)
        if (pc->moves_sent[i].owner == owner)
            pc->moves_sent[i] = pc->moves_sent[--pc->nmoves_sent];
        else
            i++;
}

static void apply_service(struct policing *pc, uint32_t nodeid, const struct pmsg_service *m)
{
    forget_move(pc, m->owner);
    if (m->owner == 0 || m->holder == 0 || m->manual > 1) {
        qb_log(LOG_WARNING, "policing: node %u: malformed SERVICE message: ignored", nodeid);
        return;
    }
    if (svc_apply(&pc->svc, m->owner, m->holder, m->manual) < 0) {
        qb_log(LOG_WARNING,
               "policing: node %u moved the service address of node %u, which has "
               "none: ignored",
               nodeid, m->owner);
        return;
    }
    qb_log(LOG_INFO, "policing: service address %s of node %u now on node %u%s",
           svc_find(&pc->svc, m->owner)->addr, m->owner, m->holder, m->manual ? " (manual)" : "");
    service_update(pc);
}

static int service_move(struct policing *pc, uint32_t owner, uint32_t holder, bool manual)
{
    if (!policing_quorate(pc))
        return -ENOLINK;
    if (!svc_find(&pc->svc, owner))
        return -ENOENT;
    return send_service(pc, &(struct svc_move){owner, holder, manual});
}

int policing_service_failover(struct policing *pc, uint32_t owner, uint32_t *holder)
{
    uint32_t members[CLUSTER_NODES_MAX];
    size_t n = member_ids(pc, members);
    *holder = svc_successor(members, n, owner);
    if (*holder == 0 && policing_quorate(pc) && svc_find(&pc->svc, owner))
        return -EHOSTUNREACH;
    return service_move(pc, owner, *holder, true);
}

int policing_service_giveback(struct policing *pc, uint32_t owner)
{
    uint32_t members[CLUSTER_NODES_MAX], current[CLUSTER_NODES_MAX];
    size_t n = member_ids(pc, members), ncurrent;
    if (!policing_quorate(pc))
        return -ENOLINK;
    if (!svc_find(&pc->svc, owner))
        return -ENOENT;
    if (!listed_id(members, n, owner))
        return -EHOSTDOWN;
    int r = current_members(pc, current, &ncurrent);
    if (r < 0)
        return r;
    if (!listed_id(current, ncurrent, owner))
        return -EAGAIN;
    return service_move(pc, owner, owner, false);
}

/* ---- regions an activity log named at start ---------------------------- */

static void cut_abort_all(struct policing *pc, int why);

static void apply_lost(struct policing *pc, uint32_t nodeid, const struct pmsg_lost *m)
{
    /* A cut must not take regions whose copies may differ: the copies'
     * snapshots would differ for good. */
    cut_abort_all(pc, -EAGAIN);
    const struct pmsg_lost_key *k = (const void *)(m + 1);
    struct pol_key *keys = malloc((m->n ? m->n : 1) * sizeof *keys);
    if (!keys) {
        qb_log(LOG_CRIT, "policing: out of memory applying node %u's %u lost regions", nodeid,
               m->n);
        abort(); /* every node must apply them, or the tables differ */
    }
    for (uint32_t i = 0; i < m->n; i++)
        keys[i] = (struct pol_key){k[i].volume, k[i].region};
    qb_log(LOG_INFO,
           "policing: node %u names %u regions whose copies may differ (its activity log's from "
           "before it started, or a write that failed on every copy): they are reconciled "
           "before their next write",
           nodeid, m->n);
    if (pc->p.table->regions_lost)
        pc->p.table->regions_lost(pc->p.table_ctx, nodeid, keys, m->n);
    free(keys);
}

/* Sends what policing_announce_lost left, once this node is in sync and
 * quorate (so the majority applies it); a failed send is tried again at
 * the next chance. */
static void announce_lost(struct policing *pc)
{
    if (!pc->nannounce || !pc->synced || pc->round_open || !policing_quorate(pc))
        return;
    size_t cap = PMSG_LOST_MAX;
    size_t len = sizeof(struct pmsg_lost) + cap * sizeof(struct pmsg_lost_key);
    struct pmsg_lost *m = malloc(len);
    size_t done = 0;
    while (m && done < pc->nannounce) {
        size_t n = pc->nannounce - done < cap ? pc->nannounce - done : cap;
        size_t mlen = sizeof *m + n * sizeof(struct pmsg_lost_key);
        pmsg_init(&m->h, PMSG_LOST, mlen);
        m->n = (uint32_t)n;
        struct pmsg_lost_key *k = (void *)(m + 1);
        for (size_t i = 0; i < n; i++)
            k[i] = (struct pmsg_lost_key){pc->announce[done + i].volume,
                                          pc->announce[done + i].region};
        if (send_msg(pc, m, mlen) < 0)
            break;
        done += n;
    }
    free(m);
    if (done < pc->nannounce) {
        qb_log(LOG_ERR, "policing: %zu regions of the activity log not announced yet",
               pc->nannounce - done);
        memmove(pc->announce, pc->announce + done, (pc->nannounce - done) * sizeof *pc->announce);
    }
    pc->nannounce -= done;
}

int policing_announce_lost(struct policing *pc, const struct pol_key *keys, size_t n)
{
    if (n == 0)
        return 0;
    struct pol_key *v = realloc(pc->announce, (pc->nannounce + n) * sizeof *v);
    if (!v)
        return -ENOMEM;
    memcpy(v + pc->nannounce, keys, n * sizeof *v);
    pc->announce = v;
    pc->nannounce += n;
    announce_lost(pc);
    return 0;
}

/* ---- cuts (cut.h) --------------------------------------------------------- */

/* The admin command waiting for tag, if this node sent it. */
static void finish_pending(struct policing *pc, uint32_t nodeid, uint32_t pid, uint64_t tag,
                           int result)
{
    if (nodeid != pc->self || pid != pc->pid)
        return;
    struct pending *x = take_pending(pc, tag);
    if (x) {
        x->done(x->arg, result);
        free(x);
    }
}

/* What a cut is for, in its log lines: `snapshot "NAME"`, or the change
 * a CONFIG cut applies. */
struct cut_label {
    char s[PMSG_NAME_MAX + 64];
};

static struct cut_label cut_label(const struct cut *c)
{
    struct cut_label l;
    if (c->kind == PMSG_CUT_CONFIG && c->config.op == PMSG_CONFIG_RESIZE)
        snprintf(l.s, sizeof l.s, "resize of \"%s\" to %llu bytes", c->volume,
                 (unsigned long long)c->config.size);
    else if (c->kind == PMSG_CUT_CONFIG && c->config.op == PMSG_CONFIG_REPLACE)
        snprintf(l.s, sizeof l.s, "replica of \"%s\" on node %u rebuilt on node %u", c->volume,
                 c->config.from, c->config.node);
    else if (c->kind == PMSG_CUT_CONFIG)
        snprintf(l.s, sizeof l.s, "replica of \"%s\" on node %u %s", c->volume, c->config.node,
                 c->config.op == PMSG_CONFIG_ADD ? "added" : "removed");
    else
        snprintf(l.s, sizeof l.s, "snapshot \"%s\"", c->snapshot);
    return l;
}

static void cut_tick(void *data);

static void cut_timer_start(struct policing *pc)
{
    if (pc->cut_timer_on || pc->cuts.n == 0)
        return;
    /* 200 µs: a drain is polled, not signalled (it ends on NBD, link and
     * worker threads of the layers above), and a cut holds client writes
     * until it is seen. */
    int r = qb_loop_timer_add(pc->p.loop, QB_LOOP_HIGH, 200000, pc, cut_tick, &pc->cut_timer);
    if (r < 0)
        qb_log(LOG_ERR, "policing: cut: timer not started: %s; the cut aborts", strerror(-r));
    pc->cut_timer_on = r == 0;
}

/* 0 once sent; a failed send is logged and tried again at the next tick. */
static int send_cut(struct policing *pc, enum pmsg_type type, struct cut *c, bool busy)
{
    struct pmsg_cut m;
    pmsg_init(&m.h, type, sizeof m);
    m.id = c->id;
    m.busy = busy;
    int r = send_msg(pc, &m, sizeof m);
    if (r < 0)
        qb_log(LOG_ERR, "policing: cut %llx: %s not sent; trying again", (unsigned long long)c->id,
               type == PMSG_CUT_DRAINED ? "DRAINED" : "ABORT");
    return r;
}

/* Each open cut: DRAINED once this node has drained it, ABORT once its
 * deadline passed before it ended (whoever did not drain), each once sent. */
static void cut_tick(void *data)
{
    struct policing *pc = data;
    pc->cut_timer_on = false;
    uint64_t now = clock_now_ms();
    for (size_t i = 0; i < pc->cuts.n; i++) {
        struct cut *c = &pc->cuts.open[i];
        int d = c->sent_drained ? -EAGAIN : pc->p.table->cut_drained(pc->p.table_ctx, c);
        if (d != -EAGAIN)
            c->sent_drained = send_cut(pc, PMSG_CUT_DRAINED, c, d == -EBUSY) == 0;
        if (!c->sent_abort && now >= c->deadline_ms) {
            qb_log(LOG_WARNING, "policing: cut %llx (%s): not ended in %u ms: asking to abort it",
                   (unsigned long long)c->id, cut_label(c).s, CUT_TIMEOUT_MS);
            c->sent_abort = send_cut(pc, PMSG_CUT_ABORT, c, false) == 0;
        }
    }
    cut_timer_start(pc);
}

static void cut_end(struct policing *pc, struct cut *c, int result)
{
    uint64_t tag = c->tag;
    uint32_t from = c->from;
    if (result != 0)
        pc->p.table->cut_release(pc->p.table_ctx, c);
    cut_close(&pc->cuts, c);
    if (from == pc->self)
        finish_pending(pc, pc->self, pc->pid, tag, result);
}

/* Every open cut aborts (a membership change, or regions turned lost:
 * each node applies either at the same point of the agreed stream). */
static void cut_abort_all(struct policing *pc, int why)
{
    while (pc->cuts.n > 0) {
        struct cut *c = &pc->cuts.open[0];
        qb_log(LOG_WARNING, "policing: cut %llx (%s) aborted: %s", (unsigned long long)c->id,
               cut_label(c).s, strerror(-why));
        cut_end(pc, c, why);
    }
}

static int cut_from_begin(struct policing *pc, uint32_t nodeid, const struct pmsg_cut_begin *m,
                          struct cut *c)
{
    if (!pmsg_string_ok(m->snapshot, sizeof m->snapshot) || m->n == 0 || m->n > PMSG_CUT_VOLUMES)
        return -EINVAL;
    for (uint32_t i = 0; i < m->n; i++)
        if (!pmsg_string_ok(m->volumes[i], sizeof m->volumes[i]))
            return -EINVAL;
    *c = (struct cut){.id = m->id,
                      .tag = m->tag,
                      .kind = m->kind,
                      .from = nodeid,
                      .time = m->time,
                      .nvols = m->n,
                      .deadline_ms = clock_now_ms() + CUT_TIMEOUT_MS};
    memcpy(c->snapshot, m->snapshot, sizeof c->snapshot);
    for (size_t i = 0; i < pc->nmembers; i++)
        c->members[i] = pc->members[i].nodeid;
    c->nmembers = pc->nmembers;
    if (m->kind < PMSG_CUT_SNAPSHOT || m->kind > PMSG_CUT_CONFIG)
        return -EINVAL;
    if (m->kind == PMSG_CUT_CONFIG) {
        /* one volume, named; the change's own checks are the table's */
        if (m->n != 1 || !pmsg_string_ok(m->config.uuid, sizeof m->config.uuid) ||
            m->config.op > PMSG_CONFIG_REPLACE ||
            (m->config.op != PMSG_CONFIG_RESIZE && m->config.node == 0) ||
            (m->config.op == PMSG_CONFIG_REPLACE &&
             (m->config.from == 0 || m->config.from == m->config.node)))
            return -EINVAL;
        c->config = m->config;
        memcpy(c->volume, m->volumes[0], sizeof c->volume);
    }
    return pc->p.table->cut_check(pc->p.table_ctx, c, m->volumes);
}

/* A partition without quorum opens no cut: its view of the table may be
 * behind, and its DRAINED would not reach the majority. */
static void apply_cut_begin(struct policing *pc, uint32_t nodeid, uint32_t pid,
                            const struct pmsg_cut_begin *m)
{
    struct cut c;
    int r = pc->quorate ? cut_from_begin(pc, nodeid, m, &c) : -ENOLINK;
    if (r == 0)
        r = cut_open(&pc->cuts, &c);
    if (r < 0) {
        finish_pending(pc, nodeid, pid, m->tag, r);
        return;
    }
    pc->p.table->cut_hold(pc->p.table_ctx, &c);
    qb_log(LOG_INFO, "policing: cut %llx (%s): begun on %zu volume(s)", (unsigned long long)c.id,
           cut_label(&c).s, c.nvols);
    cut_timer_start(pc);
}

/* What a committed cut of each kind (enum pmsg_cut_kind) did, for the log. */
static const char *const cut_what[] = {
    "?", "cut", "deleted", "fenced for a rollback", "rollback ended", "applied"};

static void apply_cut_drained(struct policing *pc, uint32_t nodeid, const struct pmsg_cut *m)
{
    struct cut *c = cut_find(&pc->cuts, m->id);
    if (!c || !cut_node_drained(c, nodeid, m->busy))
        return;
    if (c->busy) {
        qb_log(LOG_INFO, "policing: cut %llx (%s): a node's clients use it: nothing done",
               (unsigned long long)c->id, cut_label(c).s);
        /* not -EBUSY, which is a volume in another cut (worth a retry at
         * once): here a client must close first */
        cut_end(pc, c, -ETXTBSY);
        return;
    }
    bump_version(pc);
    uint64_t id = pc->p.table->version(pc->p.table_ctx);
    /* A snapshot and a configuration change order the writes around them
     * (mirror/cut.c's stamp): a write past a grown end must not reach a
     * copy that has not grown yet. */
    if (c->kind == PMSG_CUT_SNAPSHOT || c->kind == PMSG_CUT_CONFIG)
        pc->last_cut = id;
    uint64_t drained_ms = clock_now_ms();
    int r = pc->p.table->cut_commit(pc->p.table_ctx, c, id);
    /* How long the writes were held here: the drain and agreed round, then
     * the commit's own work (a resize's store and bitmaps). */
    uint64_t begun_ms = c->deadline_ms - CUT_TIMEOUT_MS, now = clock_now_ms();
    qb_log(LOG_INFO,
           "policing: cut %llx committed: %s %s (table version %llu) of %zu volume(s)%s; "
           "%llu ms after its BEGIN here, %llu ms of it the commit",
           (unsigned long long)c->id, cut_label(c).s, cut_what[c->kind], (unsigned long long)id,
           c->nvols, r < 0 ? "; not all here" : "", (unsigned long long)(now - begun_ms),
           (unsigned long long)(now - drained_ms));
    /* The hold ends in cut_commit, whatever its result. */
    uint64_t tag = c->tag;
    uint32_t from = c->from;
    cut_close(&pc->cuts, c);
    if (from == pc->self)
        finish_pending(pc, pc->self, pc->pid, tag, r);
}

static void apply_cut_abort(struct policing *pc, const struct pmsg_cut *m)
{
    struct cut *c = cut_find(&pc->cuts, m->id);
    if (c) {
        qb_log(LOG_WARNING, "policing: cut %llx (%s) aborted: a node did not drain in time",
               (unsigned long long)c->id, cut_label(c).s);
        cut_end(pc, c, -ETIMEDOUT);
    }
}

static int add_pending(struct policing *pc, uint64_t tag, policing_done_fn done, void *arg)
{
    struct pending *x = malloc(sizeof *x);
    if (!x)
        return -ENOMEM;
    *x = (struct pending){tag, done, arg, pc->pending};
    pc->pending = x;
    return 0;
}

static int send_pending(struct policing *pc, uint64_t tag, const void *m, size_t len,
                        policing_done_fn done, void *arg)
{
    int r = add_pending(pc, tag, done, arg);
    if (r == 0 && (r = send_msg(pc, m, len)) < 0)
        free(take_pending(pc, tag));
    return r;
}

static int send_cut_begin(struct policing *pc, uint8_t kind, const char *const *volumes, size_t n,
                          const char *snapshot, const struct pmsg_cut_config *config,
                          policing_done_fn done, void *arg)
{
    if (!policing_quorate(pc))
        return -ENOLINK;
    if (n == 0 || n > PMSG_CUT_VOLUMES)
        return -EINVAL;
    struct pmsg_cut_begin m;
    pmsg_init(&m.h, PMSG_CUT_BEGIN, sizeof m);
    if (!pmsg_set_string(m.snapshot, sizeof m.snapshot, snapshot))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!pmsg_set_string(m.volumes[i], sizeof m.volumes[i], volumes[i]))
            return -EINVAL;
    m.kind = kind;
    m.n = (uint32_t)n;
    m.tag = ++pc->next_tag;
    m.id = (uint64_t)pc->self << 32 | (uint32_t)++pc->cut_seq;
    m.time = (int64_t)time(NULL);
    if (config)
        m.config = *config;
    return send_pending(pc, m.tag, &m, sizeof m, done, arg);
}

int policing_snapshot_create(struct policing *pc, const char *const *volumes, size_t n,
                             const char *snapshot, policing_done_fn done, void *arg)
{
    return send_cut_begin(pc, PMSG_CUT_SNAPSHOT, volumes, n, snapshot, NULL, done, arg);
}

int policing_snapshot_delete(struct policing *pc, const char *volume, const char *snapshot,
                             policing_done_fn done, void *arg)
{
    return send_cut_begin(pc, PMSG_CUT_DELETE, &volume, 1, snapshot, NULL, done, arg);
}

int policing_rollback_fence(struct policing *pc, const char *volume, const char *snapshot,
                            bool fence, policing_done_fn done, void *arg)
{
    return send_cut_begin(pc, fence ? PMSG_CUT_ROLLBACK : PMSG_CUT_UNFENCE, &volume, 1, snapshot,
                          NULL, done, arg);
}

int policing_volume_resize(struct policing *pc, const char *uuid, const char *name, uint64_t size,
                           bool force, bool client, policing_done_fn done, void *arg)
{
    struct pmsg_cut_config config = {.size = size, .force = force, .client = client};
    if (!pmsg_set_string(config.uuid, sizeof config.uuid, uuid))
        return -EINVAL;
    return send_cut_begin(pc, PMSG_CUT_CONFIG, &name, 1, "", &config, done, arg);
}

static int send_replica_change(struct policing *pc, const char *uuid, const char *name,
                               struct pmsg_cut_config *config, policing_done_fn done, void *arg)
{
    if (!pmsg_set_string(config->uuid, sizeof config->uuid, uuid) || config->node == 0)
        return -EINVAL;
    return send_cut_begin(pc, PMSG_CUT_CONFIG, &name, 1, "", config, done, arg);
}

int policing_replica_set_change(struct policing *pc, const char *uuid, const char *name, bool add,
                                uint32_t node, unsigned min_current, policing_done_fn done,
                                void *arg)
{
    struct pmsg_cut_config config = {.op = add ? PMSG_CONFIG_ADD : PMSG_CONFIG_REMOVE,
                                     .node = node,
                                     .min_current =
                                         (uint8_t)(min_current > 255 ? 255 : min_current)};
    return send_replica_change(pc, uuid, name, &config, done, arg);
}

int policing_replica_rebuild(struct policing *pc, const char *uuid, const char *name, uint32_t from,
                             uint32_t node, policing_done_fn done, void *arg)
{
    struct pmsg_cut_config config = {.op = PMSG_CONFIG_REPLACE, .node = node, .from = from};
    if (from == 0 || from == node)
        return -EINVAL;
    return send_replica_change(pc, uuid, name, &config, done, arg);
}

static void apply_grant(struct policing *pc, uint32_t nodeid, uint32_t pid,
                        const struct pmsg_grant *m)
{
    int r = -EINVAL;
    if (pmsg_string_ok(m->name, sizeof m->name) &&
        pmsg_string_ok(m->identity, sizeof m->identity) && m->mode <= PMSG_GRANT_RO)
        r = pc->p.table->grant(pc->p.table_ctx, m->name, m->identity, m->mode);
    if (r == 0)
        bump_version(pc);
    finish_pending(pc, nodeid, pid, m->tag, r);
}

static void apply_quota(struct policing *pc, uint32_t nodeid, uint32_t pid,
                        const struct pmsg_quota *m)
{
    int r = -EINVAL;
    if (pmsg_string_ok(m->identity, sizeof m->identity))
        r = pc->p.table->quota(pc->p.table_ctx, m->identity, m->limit, m->volumes);
    if (r == 0)
        bump_version(pc);
    finish_pending(pc, nodeid, pid, m->tag, r);
}

static void apply_token(struct policing *pc, uint32_t nodeid, uint32_t pid,
                        const struct pmsg_token *m)
{
    int r = -EINVAL;
    if (pmsg_string_ok(m->id, sizeof m->id) && pmsg_string_ok(m->identity, sizeof m->identity) &&
        (m->op == PMSG_TOKEN_CREATE || m->op == PMSG_TOKEN_REVOKE)) {
        struct policing_token t = {.created = m->created};
        memcpy(t.id, m->id, sizeof t.id);
        memcpy(t.identity, m->identity, sizeof t.identity);
        memcpy(t.hash, m->hash, sizeof t.hash);
        r = pc->p.table->token(pc->p.table_ctx, &t, m->op == PMSG_TOKEN_REVOKE);
    }
    if (r == 0)
        bump_version(pc);
    finish_pending(pc, nodeid, pid, m->tag, r);
}

/* A table or region message, applied now. */
static void apply(struct policing *pc, uint32_t nodeid, uint32_t pid, int type, const void *msg)
{
    if (type == PMSG_REQUEST || type == PMSG_RELEASE)
        apply_region(pc, nodeid, type, msg);
    else if (type == PMSG_REPLICA)
        apply_replica(pc, nodeid, pid, msg);
    else if (type == PMSG_OUTDATE)
        apply_outdate(pc, nodeid, pid, msg);
    else if (type == PMSG_SERVICE)
        apply_service(pc, nodeid, msg);
    else if (type == PMSG_LOST)
        apply_lost(pc, nodeid, msg);
    else if (type == PMSG_CUT_BEGIN)
        apply_cut_begin(pc, nodeid, pid, msg);
    else if (type == PMSG_CUT_DRAINED)
        apply_cut_drained(pc, nodeid, msg);
    else if (type == PMSG_CUT_ABORT)
        apply_cut_abort(pc, msg);
    else if (type == PMSG_GRANT)
        apply_grant(pc, nodeid, pid, msg);
    else if (type == PMSG_QUOTA)
        apply_quota(pc, nodeid, pid, msg);
    else if (type == PMSG_TOKEN)
        apply_token(pc, nodeid, pid, msg);
    else
        apply_volume(pc, nodeid, pid, type, msg);
}

static int hold(struct policing *pc, uint32_t nodeid, uint32_t pid, const void *msg, size_t len)
{
    if (pc->nheld == pc->capheld) {
        size_t cap = pc->capheld ? 2 * pc->capheld : 64;
        struct held **v = realloc(pc->held, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        pc->held = v;
        pc->capheld = cap;
    }
    struct held *h = malloc(sizeof *h + len);
    if (!h)
        return -ENOMEM;
    *h = (struct held){pc->since_change, nodeid, pid, len};
    memcpy(h->data, msg, len);
    pc->held[pc->nheld++] = h;
    return 0;
}

/* A held message that the state loaded already accounts for (or, on the
 * winner, refuse_cuts): its sender, if it is this node, hears of it. A
 * table change took effect in the state, with an outcome this node cannot
 * tell: -ECONNRESET, look again. A cut held during the round is refused
 * everywhere: the winner does not open it (a joiner would not either, as
 * cuts are not part of the state) and its sender hears -ECONNRESET. */
static void held_done(struct policing *pc, const struct held *h, int type)
{
    if (type == PMSG_REPLICA) {
        replica_done(pc, h->nodeid, h->pid, (const void *)h->data);
    } else if (type == PMSG_OUTDATE) {
        struct pmsg_replica m = outdate_as_replica((const void *)h->data);
        replica_done(pc, h->nodeid, h->pid, &m);
    } else if (type == PMSG_CUT_BEGIN) {
        const struct pmsg_cut_begin *m = (const void *)h->data;
        finish_pending(pc, h->nodeid, h->pid, m->tag, -ECONNRESET);
    } else if (type == PMSG_VOL_CREATE || type == PMSG_VOL_DELETE) {
        const struct pmsg_volume *m = (const void *)h->data;
        finish_pending(pc, h->nodeid, h->pid, m->tag, -ECONNRESET);
    } else if (type == PMSG_GRANT) {
        const struct pmsg_grant *m = (const void *)h->data;
        finish_pending(pc, h->nodeid, h->pid, m->tag, -ECONNRESET);
    } else if (type == PMSG_QUOTA) {
        const struct pmsg_quota *m = (const void *)h->data;
        finish_pending(pc, h->nodeid, h->pid, m->tag, -ECONNRESET);
    } else if (type == PMSG_TOKEN) {
        const struct pmsg_token *m = (const void *)h->data;
        finish_pending(pc, h->nodeid, h->pid, m->tag, -ECONNRESET);
    }
}

/* Applies the held messages delivered after the first `from` since the
 * change (positions count from 1), and forgets all; refuse_cuts: the
 * winner's replay, whose cuts would not open on the others. */
static void replay_held(struct policing *pc, uint64_t from, bool refuse_cuts)
{
    for (size_t i = 0; i < pc->nheld; i++) {
        struct held *h = pc->held[i];
        int type = ((struct pmsg_header *)h->data)->type;
        if (h->index > from && !(refuse_cuts && type == PMSG_CUT_BEGIN))
            apply(pc, h->nodeid, h->pid, type, h->data);
        else
            held_done(pc, h, type);
        free(h);
    }
    pc->nheld = 0;
}

/* ---- sync rounds -------------------------------------------------------- */

static bool better_offer(const struct offer *a, const struct offer *b)
{
    if (a->synced != b->synced)
        return a->synced;
    if (a->prev_members != b->prev_members)
        return a->prev_members > b->prev_members;
    if (a->version != b->version)
        return a->version > b->version;
    return a->nodeid < b->nodeid;
}

static void send_hello_and_offer(struct policing *pc)
{
    struct pmsg_hello h;
    pmsg_init(&h.h, PMSG_HELLO, sizeof h);
    pmsg_set_string(h.name, sizeof h.name, pc->name);
    pmsg_set_string(h.nbd, sizeof h.nbd, pc->nbd);
    pmsg_set_string(h.mirror, sizeof h.mirror, pc->mirror);
    pmsg_set_string(h.service, sizeof h.service, pc->service);
    struct pmsg_offer o;
    pmsg_init(&o.h, PMSG_OFFER, sizeof o);
    o.table_version = pc->p.table->version(pc->p.table_ctx);
    o.prev_members = pc->prev_members;
    o.synced = pc->synced;
    int r = send_for_round(pc, &h, sizeof h);
    if (r == 0)
        r = send_for_round(pc, &o, sizeof o);
    if (r < 0)
        qb_log(LOG_ERR,
               "policing: sync round: this node's offer not sent: %s; the round waits "
               "for the next membership change",
               strerror(-r));
}

/* The state this node hands the group: its volume table (snapshots and
 * rollback fences included), service table and region table, as of
 * `applied` messages since the change. */
static int build_state(struct policing *pc, void **out, size_t *len)
{
    struct sync_state st = {.applied = pc->since_change};
    void *snap;
    int r = pc->p.table->list(pc->p.table_ctx, &st.vols, &st.nvols);
    if (r < 0)
        return r;
    r = pc->p.table->snap_list(pc->p.table_ctx, &st.snaps, &st.nsnaps);
    if (r == 0)
        r = pc->p.table->fence_list(pc->p.table_ctx, &st.fences, &st.nfences);
    if (r == 0)
        r = pc->p.table->grant_list(pc->p.table_ctx, &st.grants, &st.ngrants);
    if (r == 0)
        r = pc->p.table->idents_list(pc->p.table_ctx, &st.idents);
    if (r < 0) {
        sync_state_free(&st);
        return r;
    }
    pthread_mutex_lock(&pc->lock);
    r = pol_snapshot(pc->pol, &snap, &st.regions_len);
    pthread_mutex_unlock(&pc->lock);
    if (r == 0) {
        st.regions = snap;
        st.table_version = pc->p.table->version(pc->p.table_ctx);
        st.services = pc->svc;
        st.last_cut = pc->last_cut;
        r = sync_encode(&st, out, len);
        free(snap);
    }
    sync_state_free(&st);
    return r;
}

/* Multicasts the stream in pieces; the first failed piece ends it. */
static int send_stream(struct policing *pc, const void *buf, size_t len)
{
    struct pmsg_state_part *msg = malloc(sizeof *msg + PMSG_PART_MAX);
    if (!msg)
        return -ENOMEM;
    uint64_t id = ++pc->streams_sent;
    uint32_t crc = sync_crc(buf, len), n = sync_pieces(len);
    int r = 0;
    for (uint32_t seq = 0; seq < n && r == 0; seq++) {
        r = send_for_round(pc, msg, sync_piece(buf, len, id, crc, seq, msg));
        if (r < 0)
            qb_log(LOG_ERR, "policing: sync round: piece %u of %u of the state: %s", seq + 1, n,
                   strerror(-r));
    }
    free(msg);
    if (r == 0)
        qb_log(LOG_INFO, "policing: sync round: state of %zu bytes sent in %u piece(s)", len, n);
    return r;
}

/* At the end of a sync round: what this node holds now is the group's
 * table, if it has quorum. */
static void round_ended(struct policing *pc)
{
    pc->round_open = false;
    pc->synced = true;
    update_readable(pc);
}

/* The winner: applies what it held, multicasts its state, goes on. */
static void win_round(struct policing *pc)
{
    replay_held(pc, 0, true);
    round_ended(pc);
    void *state;
    size_t len;
    int r = build_state(pc, &state, &len);
    if (r == 0) {
        r = send_stream(pc, state, len);
        free(state);
    }
    if (r < 0)
        qb_log(LOG_ERR,
               "policing: sync round aborted: the state for joining members not sent: %s; they "
               "stay unsynced until the next membership change",
               strerror(-r));
    qb_log(LOG_INFO, "policing: in sync, table version %llu%s",
           (unsigned long long)pc->p.table->version(pc->p.table_ctx),
           r == 0 ? ", sent to the group" : "");
    pc->p.table->changed(pc->p.table_ctx);
    service_update(pc);
    announce_lost(pc);
}

static void on_offer(struct policing *pc, uint32_t nodeid, const struct pmsg_offer *m)
{
    if (!pc->round_open || pc->winner)
        return;
    for (size_t i = 0; i < pc->noffers; i++)
        if (pc->offers[i].nodeid == nodeid)
            return;
    if (pc->noffers == CLUSTER_NODES_MAX)
        return;
    pc->offers[pc->noffers++] =
        (struct offer){nodeid, m->table_version, m->prev_members, m->synced};
    if (pc->noffers < pc->nmembers)
        return;
    const struct offer *best = &pc->offers[0];
    for (size_t i = 1; i < pc->noffers; i++)
        if (better_offer(&pc->offers[i], best))
            best = &pc->offers[i];
    pc->winner = best->nodeid;
    qb_log(LOG_DEBUG, "policing: sync round won by node %u (version %llu)", pc->winner,
           (unsigned long long)best->version);
    if (pc->winner == pc->self)
        win_round(pc);
}

/* Makes the group's state ours: 0, or -errno with the reason logged. */
static int load_state(struct policing *pc, uint32_t from, const struct sync_state *st)
{
    int r = pc->p.table->load(pc->p.table_ctx, st->vols, st->nvols);
    if (r == 0)
        r = pc->p.table->snap_load(pc->p.table_ctx, st->snaps, st->nsnaps, st->last_cut);
    /* Whatever the snapshots' load did: a fence keeps clients out. */
    int fr = pc->p.table->fence_load(pc->p.table_ctx, st->fences, st->nfences);
    if (r == 0)
        r = fr;
    /* Likewise: a revoke must reach this node whatever else failed. */
    int gr = pc->p.table->grant_load(pc->p.table_ctx, st->grants, st->ngrants);
    if (r == 0)
        r = gr;
    /* And a token's revoke. */
    int ir = pc->p.table->idents_load(pc->p.table_ctx, &st->idents);
    if (r == 0)
        r = ir;
    pc->last_cut = st->last_cut;
    if (r == 0)
        r = pc->p.table->set_version(pc->p.table_ctx, st->table_version);
    pc->svc = st->services;
    struct pol_actions out = {0};
    pthread_mutex_lock(&pc->lock);
    int pr = pol_restore(pc->pol, st->regions, st->regions_len, &out);
    carry_out(pc, &out, false);
    pthread_cond_broadcast(&pc->cond);
    pthread_mutex_unlock(&pc->lock);
    pol_actions_free(&out);
    if (r < 0 || pr < 0)
        qb_log(LOG_ERR, "policing: loading node %u's state: table %s, regions %s", from,
               strerror(-r), strerror(-pr));
    return r < 0 ? r : pr;
}

/* The whole stream is in: load it, replay what came after it. */
static void on_stream(struct policing *pc, uint32_t nodeid, const void *buf, size_t len)
{
    struct sync_state st;
    int r = sync_decode(buf, len, &st);
    if (r < 0) {
        qb_log(LOG_ERR,
               "policing: sync round: node %u's state of %zu bytes is malformed: %s; not loaded, "
               "unsynced until the next membership change",
               nodeid, len, strerror(-r));
        return;
    }
    if (st.skipped > 0)
        qb_log(LOG_INFO,
               "policing: sync round: skipped %zu record(s) of types this vsan does not know",
               st.skipped);
    load_state(pc, nodeid, &st);
    replay_held(pc, st.applied, false);
    round_ended(pc);
    qb_log(LOG_INFO, "policing: in sync with node %u, table version %llu (%zu volumes, %zu bytes)",
           nodeid, (unsigned long long)st.table_version, st.nvols, len);
    sync_state_free(&st);
    pc->p.table->changed(pc->p.table_ctx);
    service_update(pc);
    announce_lost(pc);
}

static void on_state_part(struct policing *pc, uint32_t nodeid, const struct pmsg_state_part *p,
                          size_t len)
{
    if (!pc->round_open || !pc->winner)
        return; /* the winner's own pieces, or a stale stream */
    if (nodeid != pc->winner) {
        qb_log(LOG_WARNING,
               "policing: sync round: a piece of state from node %u, not the winner (node %u): "
               "ignored",
               nodeid, pc->winner);
        return;
    }
    int r = sync_assembly_add(&pc->sync, p, len);
    if (r < 0)
        qb_log(LOG_ERR,
               "policing: sync round: node %u's state, stream %llu, piece %u: %s; not loaded, "
               "unsynced until the next membership change",
               nodeid, (unsigned long long)p->stream, p->seq + 1,
               r == -EPROTO    ? "out of sequence"
               : r == -EBADMSG ? "CRC mismatch"
               : r == -EFBIG   ? "over the size limit"
                               : strerror(-r));
    if (r != 1)
        return;
    on_stream(pc, nodeid, pc->sync.buf, pc->sync.len);
    sync_assembly_reset(&pc->sync);
}

static void on_hello(struct policing *pc, uint32_t nodeid, const struct pmsg_hello *m)
{
    if (!pmsg_string_ok(m->name, sizeof m->name) || !pmsg_string_ok(m->nbd, sizeof m->nbd) ||
        !pmsg_string_ok(m->mirror, sizeof m->mirror) ||
        !pmsg_string_ok(m->service, sizeof m->service) ||
        (m->service[0] && svc_addr_parse(m->service, NULL, NULL) < 0)) {
        qb_log(LOG_WARNING, "policing: node %u: malformed HELLO: ignored", nodeid);
        return;
    }
    if (svc_announce(&pc->svc, nodeid, m->service) < 0)
        qb_log(LOG_ERR, "policing: node %u: service address %s: the table is full", nodeid,
               m->service);
    for (size_t i = 0; i < pc->nmembers; i++) {
        struct policing_member *x = &pc->members[i];
        if (x->nodeid != nodeid)
            continue;
        pthread_mutex_lock(&pc->lock);
        memcpy(x->name, m->name, sizeof x->name);
        memcpy(x->nbd, m->nbd, sizeof x->nbd);
        memcpy(x->mirror, m->mirror, sizeof x->mirror);
        memcpy(x->service, m->service, sizeof x->service);
        pthread_mutex_unlock(&pc->lock);
    }
    service_update(pc);
}

/* ---- read leases ---------------------------------------------------------
 *
 * See protocol.h. A heartbeat goes out every POLICING_LEASE_BEAT_MS from a
 * thread of its own (a multicast may wait out corosync's flow control,
 * which the main loop must not), and renews the lease when it comes back
 * in agreed order: everything ordered before it, an outdate of this
 * node's copies included, has then been applied here. The lease counts
 * from the heartbeat's send, not its return, so it never outlasts what a
 * node that outdated us waits for.
 */

/* Whether the outbox holds messages the beat thread should send now:
 * new ones (a failed head waits for the next beat). With the lock held. */
static bool outbox_fresh(struct policing *pc)
{
    return pc->headout < pc->nout && !pc->draining && pc->out_fails == 0;
}

static void *beat_main(void *arg)
{
    struct policing *pc = arg;
    uint64_t next_beat = 0;
    pthread_mutex_lock(&pc->lock);
    while (!pc->stopping) {
        bool beat = clock_now_ms() >= next_beat;
        if (beat) {
            pthread_mutex_unlock(&pc->lock);
            struct pmsg_heartbeat m;
            pmsg_init(&m.h, PMSG_HEARTBEAT, sizeof m);
            m.sent_ms = clock_now_ms();
            int r = pc->p.driver->send(pc->cl, &m, sizeof m);
            if (r < 0 && r != -ENOTCONN)
                qb_log(LOG_DEBUG, "policing: heartbeat: %s", strerror(-r));
            pthread_mutex_lock(&pc->lock);
            next_beat = m.sent_ms + POLICING_LEASE_BEAT_MS;
        }
        /* The heartbeat first: a drain may wait out corosync's flow
         * control, and the lease must not wait behind it. A failed head
         * is tried again once a beat. */
        if (outbox_fresh(pc) || (beat && pc->headout < pc->nout && !pc->draining))
            outbox_drain(pc);
        uint64_t now = clock_now_ms();
        struct timespec deadline = clock_after_ms(next_beat > now ? next_beat - now : 0);
        while (!pc->stopping && !outbox_fresh(pc) &&
               pthread_cond_timedwait(&pc->cond, &pc->lock, &deadline) == 0)
            ;
    }
    pthread_mutex_unlock(&pc->lock);
    return NULL;
}

/* This node's own heartbeat came back: the lease runs on, if this node
 * may read. */
static void on_heartbeat(struct policing *pc, uint32_t nodeid, uint32_t pid,
                         const struct pmsg_heartbeat *m)
{
    /* In a sync round the messages before it may still be held, not
     * applied (an outdate of this node's copy among them). */
    if (nodeid != pc->self || pid != pc->pid || !atomic_load(&pc->readable) || pc->round_open)
        return;
    uint64_t until = m->sent_ms + POLICING_LEASE_MS;
    if (until <= atomic_load(&pc->lease_until))
        return;
    pthread_mutex_lock(&pc->lock);
    atomic_store(&pc->lease_until, until);
    pthread_cond_broadcast(&pc->cond);
    pthread_mutex_unlock(&pc->lock);
}

bool policing_lease_valid(struct policing *pc)
{
    return atomic_load(&pc->readable) && clock_now_ms() < atomic_load(&pc->lease_until);
}

/* Whether a reader may go on: with lease, this node's copy may answer;
 * without, this node's table may say which copies are current. */
static bool read_ready(struct policing *pc, bool lease)
{
    return lease ? policing_lease_valid(pc) : atomic_load(&pc->readable);
}

int policing_read_wait(struct policing *pc, bool lease, unsigned timeout_ms)
{
    pthread_mutex_lock(&pc->lock);
    /* Without quorum, as a write: at once, or up to suspend_timeout. */
    int r = wait_quorum(pc, false);
    /* Then a sync round may be open (its winner's state comes in pieces:
     * 2 s with 4,000 volumes), or a heartbeat late: the deadline starts
     * once quorum is here. */
    struct timespec deadline = clock_after_ms(timeout_ms);
    while (r == 0 && !read_ready(pc, lease)) {
        if (pc->stopping)
            r = -ESHUTDOWN;
        else if (!pc->quorate && !pc->p.suspend_on_no_quorum)
            r = -EIO; /* lost meanwhile */
        else if (pthread_cond_timedwait(&pc->cond, &pc->lock, &deadline) == ETIMEDOUT)
            r = read_ready(pc, lease) ? 0 : -ETIMEDOUT;
    }
    pthread_mutex_unlock(&pc->lock);
    return r;
}

/* ---- capacity ---------------------------------------------------------- */

static void on_capacity(struct policing *pc, uint32_t nodeid, const struct pmsg_capacity *m)
{
    struct policing_capacity c = {nodeid, m->capacity, m->data, m->snapshots};
    for (size_t i = 0; i < pc->ncaps; i++)
        if (pc->caps[i].node == nodeid) {
            pc->caps[i] = c;
            return;
        }
    if (pc->ncaps < CLUSTER_NODES_MAX)
        pc->caps[pc->ncaps++] = c;
}

static uint64_t delta(uint64_t a, uint64_t b)
{
    return a > b ? a - b : b - a;
}

int policing_capacity_announce(struct policing *pc, const struct policing_capacity *mine)
{
    const struct policing_capacity *last = &pc->cap_sent;
    uint64_t step = mine->capacity / 100 < (1ull << 30) ? mine->capacity / 100 : (1ull << 30);
    bool moved = mine->capacity != last->capacity ||
                 delta(mine->data + mine->snapshots, last->data + last->snapshots) > step;
    if (!pc->cap_due && !moved)
        return 0;
    struct pmsg_capacity m;
    pmsg_init(&m.h, PMSG_CAPACITY, sizeof m);
    m.capacity = mine->capacity;
    m.data = mine->data;
    m.snapshots = mine->snapshots;
    int r = pc->p.driver->send(pc->cl, &m, sizeof m);
    if (r == 0) {
        pc->cap_sent = *mine;
        pc->cap_due = false;
    }
    return r;
}

size_t policing_capacities(struct policing *pc, struct policing_capacity out[CLUSTER_NODES_MAX])
{
    size_t n = 0;
    for (size_t i = 0; i < pc->ncaps; i++)
        if (is_member(pc, pc->caps[i].node))
            out[n++] = pc->caps[i];
    return n;
}

/* ---- progress of the copies being filled --------------------------------- */

/* The sender's entries replace what it said before. */
static void on_progress(struct policing *pc, uint32_t nodeid, const struct pmsg_progress *m)
{
    uint64_t now = clock_now_ms();
    pthread_mutex_lock(&pc->lock);
    size_t k = 0;
    for (size_t i = 0; i < pc->nprogress; i++)
        if (pc->progress[i].p.node != nodeid && now - pc->progress[i].at_ms < PROGRESS_FRESH_MS)
            pc->progress[k++] = pc->progress[i];
    pc->nprogress = k;
    for (uint32_t i = 0; i < m->n && i < PMSG_PROGRESS_MAX && pc->nprogress < PROGRESS_KEPT; i++)
        pc->progress[pc->nprogress++] = (struct kept_progress){
            {nodeid, m->e[i].volume, m->e[i].done, m->e[i].total, m->e[i].rate}, now};
    pthread_mutex_unlock(&pc->lock);
}

int policing_progress_announce(struct policing *pc, const struct policing_progress *mine, size_t n)
{
    if (n == 0 && !pc->progress_sent)
        return 0;
    struct pmsg_progress m = {0};
    pmsg_init(&m.h, PMSG_PROGRESS, sizeof m);
    m.n = n < PMSG_PROGRESS_MAX ? (uint32_t)n : PMSG_PROGRESS_MAX;
    for (uint32_t i = 0; i < m.n; i++)
        m.e[i] =
            (struct pmsg_progress_entry){mine[i].volume, mine[i].done, mine[i].total, mine[i].rate};
    int r = pc->p.driver->send(pc->cl, &m, sizeof m);
    if (r == 0)
        pc->progress_sent = n > 0;
    return r;
}

size_t policing_progress_of(struct policing *pc, uint32_t volume, struct policing_progress *out,
                            size_t max)
{
    uint64_t now = clock_now_ms();
    size_t n = 0;
    pthread_mutex_lock(&pc->lock);
    for (size_t i = 0; i < pc->nprogress && n < max; i++)
        if (pc->progress[i].p.volume == volume && now - pc->progress[i].at_ms < PROGRESS_FRESH_MS)
            out[n++] = pc->progress[i].p;
    pthread_mutex_unlock(&pc->lock);
    return n;
}

/* ---- transport callbacks ------------------------------------------------ */

static void on_deliver(void *ctx, uint32_t nodeid, uint32_t pid, const void *msg, size_t len)
{
    struct policing *pc = ctx;
    const char *why;
    int type = pmsg_check(msg, len, &why);
    if (type == PMSG_HEARTBEAT) { /* not counted: `delivered` shows the policing traffic */
        on_heartbeat(pc, nodeid, pid, msg);
        return;
    }
    /* Nor capacity and progress announcements, which come on their own
     * clock (after a join, when usage moved, while copies are filled),
     * not with writes. */
    if (type != PMSG_CAPACITY && type != PMSG_PROGRESS) {
        pthread_mutex_lock(&pc->lock);
        pc->delivered++;
        pthread_mutex_unlock(&pc->lock);
    }
    if (type < 0) {
        qb_log(LOG_WARNING, "policing: node %u pid %u: dropped a message: %s", nodeid, pid, why);
        return;
    }
    if (pc->round_open)
        pc->since_change++;
    switch (type) {
    case PMSG_HELLO:
        on_hello(pc, nodeid, msg);
        return;
    case PMSG_OFFER:
        on_offer(pc, nodeid, msg);
        return;
    case PMSG_STATE_PART:
        on_state_part(pc, nodeid, msg, len);
        return;
    case PMSG_CAPACITY: /* not part of the table: never held */
        on_capacity(pc, nodeid, msg);
        return;
    case PMSG_PROGRESS: /* nor this */
        on_progress(pc, nodeid, msg);
        return;
    default:
        break;
    }
    if (pc->round_open) {
        if (hold(pc, nodeid, pid, msg, len) < 0)
            qb_log(LOG_ERR, "policing: out of memory holding a message during sync");
        return;
    }
    apply(pc, nodeid, pid, type, msg);
}

static void update_members(struct policing *pc, const struct cluster_member *m, size_t n)
{
    struct policing_member next[CLUSTER_NODES_MAX];
    size_t k = 0;
    for (size_t i = 0; i < n && k < CLUSTER_NODES_MAX; i++) {
        next[k] = (struct policing_member){.nodeid = m[i].nodeid};
        for (size_t j = 0; j < pc->nmembers; j++)
            if (pc->members[j].nodeid == m[i].nodeid)
                next[k] = pc->members[j];
        k++;
    }
    pc->prev_members = (uint32_t)pc->nmembers;
    pthread_mutex_lock(&pc->lock);
    memcpy(pc->members, next, k * sizeof next[0]);
    pc->nmembers = k;
    pthread_mutex_unlock(&pc->lock);
}

/* The keys of the POL_LOST actions in a, malloc'd (NULL if none). */
static struct pol_key *lost_keys(const struct pol_actions *a, size_t *n)
{
    *n = 0;
    struct pol_key *keys = malloc((a->n ? a->n : 1) * sizeof *keys);
    for (size_t i = 0; keys && i < a->n; i++)
        if (a->v[i].kind == POL_LOST)
            keys[(*n)++] = a->v[i].key;
    return keys;
}

/* A member left: its regions go to their waiters (the state machine), its
 * replicas become outdated with the regions it held marked dirty for it:
 * it may have written them here and there before it went. */
static void on_leave(struct policing *pc, uint32_t node)
{
    struct pol_actions out = {0};
    pthread_mutex_lock(&pc->lock);
    pol_on_leave(pc->pol, node, &out);
    size_t nlost;
    struct pol_key *lost = lost_keys(&out, &nlost);
    carry_out(pc, &out, false);
    pthread_mutex_unlock(&pc->lock);
    pol_actions_free(&out);
    if (!lost)
        qb_log(LOG_ERR, "policing: node %u left: out of memory listing its regions", node);
    /* Without quorum the departure may be ours, not theirs: the majority
     * decides what is outdated (see apply_replica). */
    uint32_t members[CLUSTER_NODES_MAX];
    for (size_t i = 0; i < pc->nmembers; i++)
        members[i] = pc->members[i].nodeid;
    if (node != pc->self && pc->quorate &&
        pc->p.table->node_left(pc->p.table_ctx, node, lost, nlost, members, pc->nmembers) > 0) {
        bump_version(pc);
        pc->p.table->changed(pc->p.table_ctx);
    }
    free(lost);
}

/* Recomputes quorate from its two halves and acts on a change. */
static void quorum_update(struct policing *pc)
{
    pthread_mutex_lock(&pc->lock);
    bool quorate = pc->vq_quorate && pc->majority;
    bool changed = pc->quorate != quorate;
    pc->quorate = quorate;
    pthread_cond_broadcast(&pc->cond);
    pthread_mutex_unlock(&pc->lock);
    /* Quorum lost: the majority may outdate this node's copies at once,
     * and this table is no longer the group's: only a sync round makes it
     * so again (a heal may bring quorum back before the round opens, and
     * the checker's readers caught reads from the old table then).
     * Gained: the table is the group's only once a round has ended since
     * (the round may have ended before this news came). */
    if (changed && !quorate)
        pc->synced = false;
    update_readable(pc);
    if (!changed)
        return;
    qb_log(quorate ? LOG_INFO : LOG_WARNING, "policing: quorum %s%s", quorate ? "gained" : "lost",
           quorate                      ? ""
           : pc->p.suspend_on_no_quorum ? ": writes wait"
                                        : ": writes fail");
    service_update(pc);
    /* What waits for quorum (a resync, reconciling lost regions) looks
     * again: the sync round may have ended before this news came. */
    if (quorate && pc->synced) {
        pc->p.table->changed(pc->p.table_ctx);
        announce_lost(pc);
    }
}

/* Whether n members are a majority of the configured nodes (two or fewer:
 * votequorum's two_node rule decides alone). */
static bool is_majority(struct policing *pc, size_t n)
{
    struct cluster_node nodes[CLUSTER_NODES_MAX];
    int nconf = pc->p.driver->nodelist(pc->cl, nodes, CLUSTER_NODES_MAX);
    return nconf < 3 || 2 * n > (size_t)nconf;
}

static void on_confchg(void *ctx, const struct cluster_member *members, size_t n,
                       const struct cluster_member *left, size_t nleft,
                       const struct cluster_member *joined, size_t njoined)
{
    struct policing *pc = ctx;
    bool was_open = pc->round_open;
    /* What was held belongs before this change: apply it on this node's
     * table (a round follows whenever the tables may differ). */
    replay_held(pc, 0, false);
    cut_abort_all(pc, -ECONNRESET);
    update_members(pc, members, n);
    pc->majority = is_majority(pc, n);
    quorum_update(pc);
    for (size_t i = 0; i < nleft; i++) {
        qb_log(LOG_INFO, "policing: node %u (pid %u) left the group (%s)", left[i].nodeid,
               left[i].pid,
               left[i].reason == CLUSTER_PROCDOWN   ? "process died"
               : left[i].reason == CLUSTER_NODEDOWN ? "node down"
                                                    : "left");
        on_leave(pc, left[i].nodeid);
    }
    /* The mirror drops its links to who left even where the table does
     * not change (a minority): their buffered writes must not land late. */
    if (nleft > 0)
        pc->p.table->changed(pc->p.table_ctx);
    for (size_t i = 0; i < njoined; i++)
        qb_log(LOG_INFO, "policing: node %u (pid %u) joined the group", joined[i].nodeid,
               joined[i].pid);
    pc->nmoves_sent = 0; /* the new view decides again */
    if (njoined == 0 && !was_open) {
        service_update(pc);
        return;
    }
    pc->cap_due = true; /* the joiners hear every node's figures */
    pc->round_open = true;
    pc->winner = 0;
    pc->noffers = 0;
    pc->since_change = 0;
    sync_assembly_reset(&pc->sync); /* a stream cut by the change is void */
    send_hello_and_offer(pc);
    service_update(pc);
}

static void on_quorum(void *ctx, bool quorate)
{
    struct policing *pc = ctx;
    pc->vq_quorate = quorate;
    quorum_update(pc);
}

static const struct cluster_events events = {
    .deliver = on_deliver,
    .confchg = on_confchg,
    .quorum = on_quorum,
};

/* ---- table change requests ---------------------------------------------- */

static int request_change(struct policing *pc, enum pmsg_type type, const char *uuid,
                          const char *name, uint64_t size, const char *owner, bool client,
                          const uint32_t *placed, size_t nplaced, policing_done_fn done, void *arg)
{
    if (nplaced > PMSG_REPLICAS_MAX)
        return -EINVAL;
    pthread_mutex_lock(&pc->lock);
    bool quorate = pc->quorate;
    pthread_mutex_unlock(&pc->lock);
    if (!quorate)
        return -ENOLINK; /* no quorum: the table can't change */
    struct pmsg_volume m;
    pmsg_init(&m.h, type, sizeof m);
    if (!pmsg_set_string(m.name, sizeof m.name, name) ||
        !pmsg_set_string(m.uuid, sizeof m.uuid, uuid ? uuid : "") ||
        !pmsg_set_string(m.owner, sizeof m.owner, owner ? owner : ""))
        return -EINVAL;
    m.size = size;
    m.client = client;
    m.nplaced = (uint32_t)nplaced;
    for (size_t i = 0; i < nplaced; i++)
        m.placed[i] = placed[i];
    m.tag = ++pc->next_tag;
    return send_pending(pc, m.tag, &m, sizeof m, done, arg);
}

int policing_volume_create(struct policing *pc, const char *uuid, const char *name, uint64_t size,
                           const char *owner, bool client, const uint32_t *placed, size_t nplaced,
                           policing_done_fn done, void *arg)
{
    return request_change(pc, PMSG_VOL_CREATE, uuid, name, size, owner, client, placed, nplaced,
                          done, arg);
}

int policing_volume_delete(struct policing *pc, const char *uuid, const char *name,
                           policing_done_fn done, void *arg)
{
    return request_change(pc, PMSG_VOL_DELETE, uuid, name, 0, NULL, false, NULL, 0, done, arg);
}

int policing_access_change(struct policing *pc, const char *volume, const char *identity,
                           uint8_t mode, policing_done_fn done, void *arg)
{
    pthread_mutex_lock(&pc->lock);
    bool quorate = pc->quorate;
    pthread_mutex_unlock(&pc->lock);
    if (!quorate)
        return -ENOLINK;
    struct pmsg_grant m;
    pmsg_init(&m.h, PMSG_GRANT, sizeof m);
    if (!pmsg_set_string(m.name, sizeof m.name, volume) ||
        !pmsg_set_string(m.identity, sizeof m.identity, identity))
        return -EINVAL;
    m.mode = mode;
    m.tag = ++pc->next_tag;
    return send_pending(pc, m.tag, &m, sizeof m, done, arg);
}

static bool quorate_now(struct policing *pc)
{
    pthread_mutex_lock(&pc->lock);
    bool quorate = pc->quorate;
    pthread_mutex_unlock(&pc->lock);
    return quorate;
}

int policing_quota_set(struct policing *pc, const char *identity, uint64_t limit, uint32_t volumes,
                       policing_done_fn done, void *arg)
{
    if (!quorate_now(pc))
        return -ENOLINK;
    struct pmsg_quota m;
    pmsg_init(&m.h, PMSG_QUOTA, sizeof m);
    if (!pmsg_set_string(m.identity, sizeof m.identity, identity))
        return -EINVAL;
    m.limit = limit;
    m.volumes = volumes;
    m.tag = ++pc->next_tag;
    return send_pending(pc, m.tag, &m, sizeof m, done, arg);
}

int policing_token_change(struct policing *pc, const struct policing_token *t, bool revoke,
                          policing_done_fn done, void *arg)
{
    if (!quorate_now(pc))
        return -ENOLINK;
    struct pmsg_token m;
    pmsg_init(&m.h, PMSG_TOKEN, sizeof m);
    if (!pmsg_set_string(m.id, sizeof m.id, t->id) ||
        !pmsg_set_string(m.identity, sizeof m.identity, t->identity))
        return -EINVAL;
    m.op = revoke ? PMSG_TOKEN_REVOKE : PMSG_TOKEN_CREATE;
    m.created = t->created;
    memcpy(m.hash, t->hash, sizeof m.hash);
    m.tag = ++pc->next_tag;
    return send_pending(pc, m.tag, &m, sizeof m, done, arg);
}

/* How long a replica change may wait for its own delivery: far above a
 * ring re-formation here (corosync was seen to hold deliveries for 8 s),
 * and a bound on how long a write waits on a group that no longer
 * delivers (its contract promises -ENOTCONN). */
#define REPLICA_WAIT_MS 30000u

/* With the lock held: waits until every change up to tag is applied here,
 * at most REPLICA_WAIT_MS. */
static int wait_replica_applied(struct policing *pc, uint64_t tag)
{
    struct timespec deadline = clock_after_ms(REPLICA_WAIT_MS);
    bool late = false;
    while (pc->replica_applied < tag && !pc->stopping && !late)
        late = pthread_cond_timedwait(&pc->cond, &pc->lock, &deadline) == ETIMEDOUT;
    if (pc->replica_applied >= tag)
        return 0;
    if (pc->stopping)
        return -ESHUTDOWN;
    qb_log(LOG_ERR,
           "policing: replica change %llu not applied after %u ms: the group does not "
           "deliver",
           (unsigned long long)tag, REPLICA_WAIT_MS);
    return -ENOTCONN;
}

int policing_replica_change(struct policing *pc, uint32_t volume, uint32_t node, uint8_t state,
                            uint64_t first, uint64_t last, bool wait)
{
    struct pmsg_replica m;
    pmsg_init(&m.h, PMSG_REPLICA, sizeof m);
    m.volume = volume;
    m.node = node;
    m.state = state;
    m.first = first;
    m.last = last;
    /* Tags go out in order: replica_mu is held across the send. */
    pthread_mutex_lock(&pc->replica_mu);
    m.tag = ++pc->next_replica_tag;
    int r = send_msg(pc, &m, sizeof m);
    if (r < 0) /* never delivered: the next change reuses the tag */
        pc->next_replica_tag--;
    pthread_mutex_unlock(&pc->replica_mu);
    pthread_mutex_lock(&pc->lock);
    if (pc->stopping)
        r = -ESHUTDOWN;
    if (r == 0 && wait)
        r = wait_replica_applied(pc, m.tag);
    pthread_mutex_unlock(&pc->lock);
    return r;
}

int policing_replica_outdate(struct policing *pc, uint32_t volume, uint32_t node, uint32_t witness,
                             uint64_t first, uint64_t last)
{
    struct pmsg_outdate m;
    pmsg_init(&m.h, PMSG_OUTDATE, sizeof m);
    m.volume = volume;
    m.node = node;
    m.witness = witness;
    m.first = first;
    m.last = last;
    pthread_mutex_lock(&pc->replica_mu);
    m.tag = ++pc->next_replica_tag;
    int r = send_msg(pc, &m, sizeof m);
    if (r < 0)
        pc->next_replica_tag--;
    pthread_mutex_unlock(&pc->replica_mu);
    return r;
}

int policing_regions_doubtful(struct policing *pc, uint32_t volume, uint64_t first, uint64_t last)
{
    if (last < first || last - first >= PMSG_LOST_MAX)
        return -EINVAL;
    size_t n = (size_t)(last - first + 1);
    size_t len = sizeof(struct pmsg_lost) + n * sizeof(struct pmsg_lost_key);
    struct pmsg_lost *m = malloc(len);
    if (!m)
        return -ENOMEM;
    pmsg_init(&m->h, PMSG_LOST, len);
    m->n = (uint32_t)n;
    struct pmsg_lost_key *k = (void *)(m + 1);
    for (size_t i = 0; i < n; i++)
        k[i] = (struct pmsg_lost_key){volume, first + i};
    int r = send_msg(pc, m, len);
    free(m);
    return r;
}

int policing_replica_sync(struct policing *pc)
{
    pthread_mutex_lock(&pc->replica_mu);
    uint64_t tag = pc->next_replica_tag;
    pthread_mutex_unlock(&pc->replica_mu);
    pthread_mutex_lock(&pc->lock);
    int r = wait_replica_applied(pc, tag);
    pthread_mutex_unlock(&pc->lock);
    return r;
}

bool policing_quorate(struct policing *pc)
{
    pthread_mutex_lock(&pc->lock);
    bool q = pc->quorate;
    pthread_mutex_unlock(&pc->lock);
    return q;
}

bool policing_readable(struct policing *pc)
{
    return atomic_load(&pc->readable);
}

uint32_t policing_self(struct policing *pc)
{
    return pc->self;
}

uint64_t policing_region_size(struct policing *pc)
{
    return pc->p.region_size;
}

/* ---- life cycle --------------------------------------------------------- */

void policing_status(struct policing *pc, struct policing_status *st)
{
    pthread_mutex_lock(&pc->lock);
    *st = (struct policing_status){
        .nodeid = pc->self,
        .quorate = pc->quorate,
        .synced = pc->synced,
        .region_size = pc->p.region_size,
        .requests_sent = pc->requests_sent,
        .releases_sent = pc->releases_sent,
        .messages_delivered = pc->delivered,
        .regions = pol_regions(pc->pol),
    };
    pthread_mutex_unlock(&pc->lock);
    st->table_version = pc->p.table->version(pc->p.table_ctx);
    st->nmembers = pc->nmembers;
    memcpy(st->members, pc->members, pc->nmembers * sizeof pc->members[0]);
    st->services = pc->svc;
    int n = pc->p.driver->nodelist(pc->cl, st->nodes, CLUSTER_NODES_MAX);
    st->nnodes = n < 0 ? 0 : (size_t)n < CLUSTER_NODES_MAX ? (size_t)n : CLUSTER_NODES_MAX;
}

int policing_member_nbd(struct policing *pc, uint32_t node, char *out, size_t len)
{
    int r = -ENOENT;
    pthread_mutex_lock(&pc->lock);
    for (size_t i = 0; i < pc->nmembers && r == -ENOENT; i++)
        if (pc->members[i].nodeid == node && pc->members[i].nbd[0] != '\0')
            r = snprintf(out, len, "%s", pc->members[i].nbd) < (int)len ? 0 : -ENAMETOOLONG;
    pthread_mutex_unlock(&pc->lock);
    return r;
}

int policing_start(const struct policing_params *p, struct policing **out)
{
    struct policing *pc = calloc(1, sizeof *pc);
    if (!pc)
        return -ENOMEM;
    pc->majority = true; /* until the first membership says otherwise */
    pc->p = *p;
    if (!pmsg_set_string(pc->name, sizeof pc->name, p->name) ||
        !pmsg_set_string(pc->nbd, sizeof pc->nbd, p->nbd) ||
        !pmsg_set_string(pc->mirror, sizeof pc->mirror, p->mirror) ||
        !pmsg_set_string(pc->group, sizeof pc->group, p->group) ||
        !pmsg_set_string(pc->service, sizeof pc->service, p->service ? p->service : "")) {
        free(pc);
        return -ENAMETOOLONG;
    }
    pc->p.name = pc->name;
    pc->p.nbd = pc->nbd;
    pc->p.mirror = pc->mirror;
    pc->p.group = pc->group;
    pc->p.service = pc->service;
    pc->pid = (uint32_t)getpid();
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&pc->lock, NULL);
    pthread_mutex_init(&pc->replica_mu, NULL);
    pthread_cond_init(&pc->cond, &ca);
    pthread_condattr_destroy(&ca);
    int r = p->driver->init(&pc->cl, pc->group, p->loop, &events, pc);
    if (r < 0) {
        pthread_cond_destroy(&pc->cond);
        pthread_mutex_destroy(&pc->lock);
        free(pc);
        return r;
    }
    pc->self = p->driver->local_nodeid(pc->cl);
    pc->pol = pol_new(pc->self);
    if (!pc->pol) {
        p->driver->fini(pc->cl);
        pthread_cond_destroy(&pc->cond);
        pthread_mutex_destroy(&pc->lock);
        free(pc);
        return -ENOMEM;
    }
    qb_log(LOG_INFO, "policing: node %u joined group \"%s\" (%s), regions of %llu bytes", pc->self,
           pc->group, p->driver->name, (unsigned long long)p->region_size);
    r = -pthread_create(&pc->beat, NULL, beat_main, pc);
    if (r < 0) {
        qb_log(LOG_ERR, "policing: starting the heartbeat thread: %s", strerror(-r));
        policing_stop(pc);
        return r;
    }
    pc->beat_started = true;
    *out = pc;
    return 0;
}

void policing_close_writes(struct policing *pc)
{
    pthread_mutex_lock(&pc->lock);
    pc->stopping = true;
    pthread_cond_broadcast(&pc->cond);
    pthread_mutex_unlock(&pc->lock);
    /* Writes held by a cut must not wait for a loop that no longer runs. */
    if (pc->cut_timer_on)
        qb_loop_timer_del(pc->p.loop, pc->cut_timer);
    pc->cut_timer_on = false;
    if (pc->refresh_queued)
        qb_loop_job_del(pc->p.loop, QB_LOOP_LOW, pc, refresh_job);
    pc->refresh_queued = false;
    cut_abort_all(pc, -ESHUTDOWN);
}

void policing_stop(struct policing *pc)
{
    if (!pc)
        return;
    policing_close_writes(pc);
    if (pc->beat_started)
        pthread_join(pc->beat, NULL); /* at its next beat, or once corosync takes its send */
    pc->p.driver->fini(pc->cl);
    replay_held(pc, UINT64_MAX, false);
    free(pc->held);
    sync_assembly_reset(&pc->sync);
    free(pc->announce);
    while (pc->pending) {
        struct pending *x = pc->pending;
        pc->pending = x->next;
        x->done(x->arg, -ESHUTDOWN);
        free(x);
    }
    pol_free(pc->pol);
    free(pc->outbox);
    pthread_cond_destroy(&pc->cond);
    pthread_mutex_destroy(&pc->replica_mu);
    pthread_mutex_destroy(&pc->lock);
    free(pc);
}
