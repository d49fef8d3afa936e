/* test_sync_round.c - sync rounds and cuts between two policing nodes
 * (policing/protocol.c) in one process, without corosync: a joining node
 * receives a volume table larger than one cluster message may be, and
 * loads all of it, snapshots and rollback fences included; a piece whose
 * send times out is sent again; a piece that cannot be sent at all leaves
 * the joiner unsynced, never with half a table. A cut (policing/cut.h)
 * commits on both nodes with one id once both drained, aborts on both
 * when one does not drain in time, and a second cut of a volume in one is
 * refused.
 *
 * The transport is a bus written here: every node of the process is a
 * member, every message and membership change goes to one queue and is
 * delivered from the loop to every member in that one order (CPG's
 * agreed order), and a message over CLUSTER_MSG_MAX is refused with
 * -EMSGSIZE, as cluster_corosync refuses it; it can fail the next
 * STATE_PART sends with -ETIMEDOUT. The volume table is an array
 * in memory.
 */
#include "policing/protocol.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NODES 2
#define BIG_TABLE 8000 /* volumes: about 1.5 MiB of records */

/* ---- the bus ---------------------------------------------------------------- */

struct cluster {
    uint32_t nodeid;
    const struct cluster_events *ev;
    void *ctx;
};

/* A message (len > 0) or a membership change (len 0: the members are
 * bus.members at that point, joined is `joined`). */
struct event {
    struct event *next;
    uint32_t from, joined;
    size_t nmembers;
    struct cluster_member members[NODES];
    size_t len;
    unsigned char data[];
};

static struct {
    qb_loop_t *loop;
    struct cluster *nodes[NODES];
    size_t n;
    struct event *head, **tail;
    bool scheduled;
    size_t oversize;     /* sends refused for their size */
    unsigned fail_parts; /* STATE_PART sends to fail with -ETIMEDOUT */
    bool closing;        /* the test is over: drop what is queued */
    bool hold_parts;     /* STATE_PART and what follows wait in the queue */
} bus;

static bool held_here(const struct event *e)
{
    return bus.hold_parts && e->len > 0 &&
           ((const struct pmsg_header *)e->data)->type == PMSG_STATE_PART;
}

static void deliver_all(void *data)
{
    (void)data;
    bus.scheduled = false;
    while (bus.head && !held_here(bus.head)) {
        struct event *e = bus.head;
        bus.head = e->next;
        if (!bus.head)
            bus.tail = &bus.head;
        for (size_t i = 0; i < e->nmembers && !bus.closing; i++) {
            struct cluster *c = bus.nodes[e->members[i].nodeid - 1];
            if (e->len > 0) {
                c->ev->deliver(c->ctx, e->from, (uint32_t)getpid(), e->data, e->len);
                continue;
            }
            struct cluster_member j = {.nodeid = e->joined, .pid = 100};
            c->ev->confchg(c->ctx, e->members, e->nmembers, NULL, 0, &j, 1);
            if (c->nodeid == e->joined)
                c->ev->quorum(c->ctx, true);
        }
        free(e);
    }
}

static int schedule(void)
{
    if (!bus.scheduled)
        bus.scheduled = qb_loop_job_add(bus.loop, QB_LOOP_MED, NULL, deliver_all) == 0;
    return bus.scheduled ? 0 : -EIO;
}

static int enqueue(uint32_t from, uint32_t joined, const void *msg, size_t len)
{
    struct event *e = calloc(1, sizeof *e + len);
    if (!e)
        return -ENOMEM;
    e->from = from;
    e->joined = joined;
    e->nmembers = bus.n;
    for (size_t i = 0; i < bus.n; i++)
        e->members[i] = (struct cluster_member){.nodeid = bus.nodes[i]->nodeid, .pid = 100};
    e->len = len;
    if (len > 0)
        memcpy(e->data, msg, len);
    *bus.tail = e;
    bus.tail = &e->next;
    return schedule();
}

static int bus_init(struct cluster **out, const char *group, qb_loop_t *loop,
                    const struct cluster_events *ev, void *ctx)
{
    (void)group, (void)loop;
    struct cluster *c = calloc(1, sizeof *c);
    cr_assert(c != NULL && bus.n < NODES);
    *c = (struct cluster){.nodeid = (uint32_t)bus.n + 1, .ev = ev, .ctx = ctx};
    bus.nodes[bus.n++] = c;
    *out = c;
    return enqueue(0, c->nodeid, NULL, 0);
}

static uint32_t bus_nodeid(struct cluster *c)
{
    return c->nodeid;
}

static int bus_send(struct cluster *c, const void *msg, size_t len)
{
    if (len > CLUSTER_MSG_MAX) {
        bus.oversize++;
        return -EMSGSIZE;
    }
    if (bus.fail_parts > 0 && ((const struct pmsg_header *)msg)->type == PMSG_STATE_PART) {
        bus.fail_parts--;
        return -ETIMEDOUT; /* corosync's flow control did not clear */
    }
    return enqueue(c->nodeid, 0, msg, len);
}

static int bus_nodelist(struct cluster *c, struct cluster_node *out, size_t max)
{
    (void)c;
    size_t n = 0;
    for (; n < NODES && n < max; n++)
        out[n] = (struct cluster_node){.nodeid = (uint32_t)n + 1};
    return (int)n;
}

static void bus_fini(struct cluster *c)
{
    free(c);
}

static const struct cluster_driver bus_driver = {
    .name = "bus",
    .init = bus_init,
    .local_nodeid = bus_nodeid,
    .send = bus_send,
    .nodelist = bus_nodelist,
    .fini = bus_fini,
};

/* ---- a volume table in memory -------------------------------------------- */

struct table {
    struct policing_volume *v;
    size_t n;
    struct policing_snap *snaps;
    size_t nsnaps;
    struct policing_fence *fences;
    size_t nfences;
    struct policing_grant grants[4]; /* the volume's name stands for its uuid */
    size_t ngrants;
    struct policing_quota quotas[4];
    size_t nquotas;
    struct policing_token tokens[4];
    size_t ntokens;
    uint64_t version;
    /* cuts: whether this node reports drained, and what it was told */
    bool drains, busy;
    unsigned held, commits, releases;
    uint64_t cut_id;
};

static int t_create(void *ctx, const char *uuid, const char *name, uint64_t size, const char *owner,
                    bool client, const uint32_t *members, size_t nmembers, bool fixed)
{
    (void)ctx, (void)uuid, (void)name, (void)size, (void)owner, (void)client, (void)members,
        (void)nmembers, (void)fixed;
    return -ENOTSUP;
}

static int t_remove(void *ctx, const char *uuid, const char *name)
{
    (void)ctx, (void)uuid, (void)name;
    return -ENOTSUP;
}

static int copy_volumes(const struct policing_volume *v, size_t n, struct policing_volume **out)
{
    *out = malloc((n ? n : 1) * sizeof **out);
    if (!*out)
        return -ENOMEM;
    memcpy(*out, v, n * sizeof *v);
    return 0;
}

static int t_list(void *ctx, struct policing_volume **out, size_t *n)
{
    struct table *t = ctx;
    *n = t->n;
    return copy_volumes(t->v, t->n, out);
}

static int t_load(void *ctx, const struct policing_volume *v, size_t n)
{
    struct table *t = ctx;
    free(t->v);
    t->n = n;
    return copy_volumes(v, n, &t->v);
}

static int copy_snaps(const struct policing_snap *s, size_t n, struct policing_snap **out)
{
    *out = malloc((n ? n : 1) * sizeof **out);
    if (!*out)
        return -ENOMEM;
    if (n > 0)
        memcpy(*out, s, n * sizeof *s);
    return 0;
}

static int t_snap_list(void *ctx, struct policing_snap **out, size_t *n)
{
    struct table *t = ctx;
    *n = t->nsnaps;
    return copy_snaps(t->snaps, t->nsnaps, out);
}

static int t_snap_load(void *ctx, const struct policing_snap *s, size_t n, uint64_t last_cut)
{
    struct table *t = ctx;
    (void)last_cut;
    free(t->snaps);
    t->nsnaps = n;
    return copy_snaps(s, n, &t->snaps);
}

static int copy_fences(const struct policing_fence *f, size_t n, struct policing_fence **out)
{
    *out = malloc((n ? n : 1) * sizeof **out);
    if (!*out)
        return -ENOMEM;
    if (n > 0)
        memcpy(*out, f, n * sizeof *f);
    return 0;
}

static int t_fence_list(void *ctx, struct policing_fence **out, size_t *n)
{
    struct table *t = ctx;
    *n = t->nfences;
    return copy_fences(t->fences, t->nfences, out);
}

static int t_fence_load(void *ctx, const struct policing_fence *f, size_t n)
{
    struct table *t = ctx;
    free(t->fences);
    t->nfences = n;
    return copy_fences(f, n, &t->fences);
}

/* Grants: set or replaced (no revokes in these tests). */
static int t_grant(void *ctx, const char *name, const char *identity, uint8_t mode)
{
    struct table *t = ctx;
    if (t->ngrants == 4)
        return -ENOSPC;
    struct policing_grant *g = &t->grants[t->ngrants++];
    *g = (struct policing_grant){.read_only = mode == PMSG_GRANT_RO};
    snprintf(g->uuid, sizeof g->uuid, "%s", name);
    snprintf(g->identity, sizeof g->identity, "%s", identity);
    return 0;
}

static int t_grant_list(void *ctx, struct policing_grant **out, size_t *n)
{
    struct table *t = ctx;
    *n = t->ngrants;
    *out = malloc(sizeof t->grants);
    if (*out)
        memcpy(*out, t->grants, sizeof t->grants);
    return *out ? 0 : -ENOMEM;
}

static int t_grant_load(void *ctx, const struct policing_grant *g, size_t n)
{
    struct table *t = ctx;
    t->ngrants = n < 4 ? n : 4;
    memcpy(t->grants, g, t->ngrants * sizeof *g);
    return 0;
}

static int t_replica(void *ctx, uint32_t from, uint32_t volume, uint32_t node, uint8_t state,
                     uint64_t first, uint64_t last)
{
    (void)ctx, (void)from, (void)volume, (void)node, (void)state, (void)first, (void)last;
    return 0;
}

static int t_node_left(void *ctx, uint32_t node, const struct pol_key *lost, size_t nlost,
                       const uint32_t *members, size_t nmembers)
{
    (void)ctx, (void)node, (void)lost, (void)nlost, (void)members, (void)nmembers;
    return 0;
}

static void t_changed(void *ctx)
{
    (void)ctx;
}

static uint64_t t_version(void *ctx)
{
    return ((struct table *)ctx)->version;
}

static int t_set_version(void *ctx, uint64_t version)
{
    ((struct table *)ctx)->version = version;
    return 0;
}

static int t_cut_check(void *ctx, struct cut *c, const char (*names)[PMSG_NAME_MAX + 1])
{
    (void)ctx;
    for (size_t i = 0; i < c->nvols; i++)
        c->vids[i] = (uint32_t)strtoul(names[i] + 1, NULL, 10); /* "v7": volume 7 */
    return 0;
}

static void t_cut_hold(void *ctx, const struct cut *c)
{
    (void)c;
    ((struct table *)ctx)->held++;
}

static int t_cut_drained(void *ctx, const struct cut *c)
{
    (void)c;
    struct table *t = ctx;
    return !t->drains ? -EAGAIN : t->busy ? -EBUSY : 0;
}

static int t_cut_commit(void *ctx, const struct cut *c, uint64_t id)
{
    (void)c;
    struct table *t = ctx;
    t->commits++;
    t->cut_id = id;
    return 0;
}

static void t_cut_release(void *ctx, const struct cut *c)
{
    (void)c;
    ((struct table *)ctx)->releases++;
}

/* Quotas: set (no removals in these tests). */
static int t_quota(void *ctx, const char *identity, uint64_t limit, uint32_t volumes)
{
    struct table *t = ctx;
    if (t->nquotas == 4)
        return -EDQUOT;
    struct policing_quota *q = &t->quotas[t->nquotas++];
    *q = (struct policing_quota){.limit = limit, .volumes = volumes};
    snprintf(q->identity, sizeof q->identity, "%s", identity);
    return 0;
}

static int t_token(void *ctx, const struct policing_token *rec, bool revoke)
{
    struct table *t = ctx;
    for (size_t i = 0; revoke && i < t->ntokens; i++) {
        if (strcmp(t->tokens[i].id, rec->id) == 0) {
            t->tokens[i] = t->tokens[--t->ntokens];
            return 0;
        }
    }
    if (revoke)
        return -ESRCH;
    if (t->ntokens == 4)
        return -EDQUOT;
    t->tokens[t->ntokens++] = *rec;
    return 0;
}

static int t_idents_list(void *ctx, struct policing_idents *out)
{
    struct table *t = ctx;
    *out = (struct policing_idents){.nquotas = t->nquotas, .ntokens = t->ntokens};
    out->quotas = malloc(sizeof t->quotas);
    out->tokens = malloc(sizeof t->tokens);
    if (!out->quotas || !out->tokens) {
        policing_idents_free(out);
        return -ENOMEM;
    }
    memcpy(out->quotas, t->quotas, sizeof t->quotas);
    memcpy(out->tokens, t->tokens, sizeof t->tokens);
    return 0;
}

static int t_idents_load(void *ctx, const struct policing_idents *in)
{
    struct table *t = ctx;
    t->nquotas = in->nquotas < 4 ? in->nquotas : 4;
    memcpy(t->quotas, in->quotas, t->nquotas * sizeof *in->quotas);
    t->ntokens = in->ntokens < 4 ? in->ntokens : 4;
    memcpy(t->tokens, in->tokens, t->ntokens * sizeof *in->tokens);
    return 0;
}

static const struct policing_table_ops table_ops = {
    .quota = t_quota,
    .token = t_token,
    .idents_list = t_idents_list,
    .idents_load = t_idents_load,
    .cut_check = t_cut_check,
    .cut_hold = t_cut_hold,
    .cut_drained = t_cut_drained,
    .cut_commit = t_cut_commit,
    .cut_release = t_cut_release,
    .create = t_create,
    .remove = t_remove,
    .list = t_list,
    .load = t_load,
    .snap_list = t_snap_list,
    .snap_load = t_snap_load,
    .fence_list = t_fence_list,
    .fence_load = t_fence_load,
    .grant = t_grant,
    .grant_list = t_grant_list,
    .grant_load = t_grant_load,
    .replica = t_replica,
    .node_left = t_node_left,
    .changed = t_changed,
    .version = t_version,
    .set_version = t_set_version,
};

/* ---- the test --------------------------------------------------------------- */

static struct table tables[NODES];
static struct policing *pcs[NODES];
static bool timed_out;

static void fill(struct table *t, size_t n)
{
    t->v = calloc(n, sizeof *t->v);
    cr_assert(t->v != NULL);
    t->n = n;
    t->version = n;
    for (size_t i = 0; i < n; i++) {
        struct policing_volume *v = &t->v[i];
        snprintf(v->uuid, sizeof v->uuid, "%08zx-0000-4000-8000-%012zu", i + 1, i);
        snprintf(v->name, sizeof v->name, "volume-with-a-longish-name-%zu", i);
        v->size = (i + 1) << 20;
        v->generation = i % 7;
        v->nreplicas = 3;
        for (uint32_t j = 0; j < 3; j++)
            v->replicas[j] = (struct policing_replica){j + 1, (uint8_t)((i + j) % 4)};
    }
    /* A snapshot of every third volume: they ride the stream too. */
    t->snaps = calloc(n / 3 + 1, sizeof *t->snaps);
    cr_assert(t->snaps != NULL);
    for (size_t i = 0; i < n; i += 3) {
        struct policing_snap *p = &t->snaps[t->nsnaps++];
        memcpy(p->uuid, t->v[i].uuid, sizeof p->uuid);
        snprintf(p->name, sizeof p->name, "snap-%zu", i);
        p->id = i + 1;
        p->time = 1700000000 + (int64_t)i;
        p->size = t->v[i].size;
    }
}

static bool synced(size_t i)
{
    struct policing_status st;
    policing_status(pcs[i], &st);
    return st.synced && st.nmembers == NODES;
}

static bool both_synced(void)
{
    return synced(0) && synced(1);
}

/* Node 1 has sent what it had to, and the bus has delivered it all. */
static bool settled(void)
{
    return synced(0) && bus.head == NULL;
}

static bool (*done)(void);

static void check_done(void *data)
{
    (void)data;
    if (done())
        qb_loop_stop(bus.loop);
    else
        qb_loop_timer_add(bus.loop, QB_LOOP_HIGH, 10000000, NULL, check_done, NULL);
}

static void on_timeout(void *data)
{
    (void)data;
    timed_out = true;
    qb_loop_stop(bus.loop);
}

static void start(size_t i, const char *service)
{
    struct policing_params p = {.driver = &bus_driver,
                                .group = "test",
                                .loop = bus.loop,
                                .region_size = 4 << 20,
                                .name = i == 0 ? "n1" : "n2",
                                .nbd = "127.0.0.1:10809",
                                .mirror = "",
                                .service = service,
                                .table = &table_ops,
                                .table_ctx = &tables[i]};
    cr_assert(eq(int, policing_start(&p, &pcs[i]), 0));
}

/* Runs the loop until until() holds, 20 s at most (then timed_out). */
static void run(bool (*until)(void))
{
    qb_loop_timer_handle timer;
    done = until;
    timed_out = false;
    cr_assert(eq(int,
                 qb_loop_timer_add(bus.loop, QB_LOOP_LOW, 20000000000ULL, NULL, on_timeout, &timer),
                 0));
    qb_loop_timer_add(bus.loop, QB_LOOP_HIGH, 10000000, NULL, check_done, NULL);
    qb_loop_run(bus.loop);
    qb_loop_timer_del(bus.loop, timer);
}

/* Node 1 holds a table of n volumes, node 2 none; both start. */
static void start_both(size_t n)
{
    bus = (typeof(bus)){.loop = qb_loop_create(), .tail = &bus.head};
    cr_assert(bus.loop != NULL);
    fill(&tables[0], n);
    tables[1] = (struct table){0};
    start(0, "10.9.0.1/24");
    start(1, "");
}

static bool idle(void)
{
    return !bus.scheduled;
}

static void stop_both(void)
{
    /* The job that delivers is let run (libqb frees a job only once it
     * has run): what it delivers now is dropped. */
    bus.closing = true;
    run(idle);
    for (size_t i = 0; i < NODES; i++) {
        policing_stop(pcs[i]);
        free(tables[i].v);
        free(tables[i].snaps);
        free(tables[i].fences);
    }
    qb_loop_destroy(bus.loop);
}

static void expect_same_tables(void)
{
    cr_assert(eq(sz, tables[1].n, tables[0].n));
    cr_expect(eq(u64, tables[1].version, tables[0].version));
    size_t differ = 0;
    for (size_t i = 0; i < tables[0].n; i++)
        differ += memcmp(&tables[0].v[i], &tables[1].v[i], sizeof tables[0].v[i]) != 0;
    cr_expect(eq(sz, differ, 0), "%zu volumes differ", differ);
    cr_assert(eq(sz, tables[1].nsnaps, tables[0].nsnaps));
    cr_expect(
        eq(int,
           memcmp(tables[1].snaps, tables[0].snaps, tables[0].nsnaps * sizeof *tables[0].snaps), 0),
        "the snapshots differ");
}

Test(sync_round, a_table_over_one_message_reaches_a_joining_node)
{
    cr_assert(gt(sz, BIG_TABLE * 180, (size_t)CLUSTER_MSG_MAX), "the table must pass the limit");
    start_both(BIG_TABLE);
    run(both_synced);
    cr_expect(not(timed_out), "node 1 synced %d, node 2 synced %d", synced(0), synced(1));
    cr_expect(eq(sz, bus.oversize, 0), "%zu sends refused for their size", bus.oversize);
    expect_same_tables();
    struct policing_status st;
    policing_status(pcs[1], &st);
    cr_expect(eq(sz, st.services.n, 1));
    cr_expect(eq(str, st.services.v[0].addr, "10.9.0.1/24"));
    stop_both();
}

static bool joiner_in_round(void)
{
    struct policing_status st;
    policing_status(pcs[1], &st);
    return st.quorate && !st.synced && bus.head != NULL && held_here(bus.head);
}

static atomic_int read_result;

static void *read_wait(void *arg)
{
    (void)arg;
    atomic_store(&read_result, policing_read_wait(pcs[1], false, 15000));
    return NULL;
}

/* Every membership change opens a round on every node; a read arriving
 * then waits for its end instead of failing (t-lab-lease read EIO through
 * a node as it rejoined). */
Test(sync_round, a_read_during_the_round_waits_for_its_end)
{
    start_both(3);
    bus.hold_parts = true;
    run(joiner_in_round);
    cr_assert(not(timed_out));
    cr_assert(not(policing_readable(pcs[1])));
    atomic_store(&read_result, 1);
    pthread_t t;
    cr_assert(eq(int, pthread_create(&t, NULL, read_wait, NULL), 0));
    usleep(200000); /* the reader is waiting, not failed at once */
    int r = atomic_load(&read_result);
    cr_expect(eq(int, r, 1), "the read gave up during the round: %d", r);
    bus.hold_parts = false;
    cr_assert(eq(int, schedule(), 0));
    run(both_synced);
    cr_expect(not(timed_out));
    pthread_join(t, NULL);
    cr_expect(eq(int, atomic_load(&read_result), 0));
    stop_both();
}

Test(sync_round, a_piece_whose_send_times_out_is_sent_again)
{
    start_both(BIG_TABLE);
    bus.fail_parts = 2;
    run(both_synced);
    cr_expect(not(timed_out), "node 2 synced %d", synced(1));
    cr_expect(eq(u32, bus.fail_parts, 0));
    expect_same_tables();
    stop_both();
}

Test(sync_round, a_piece_that_cannot_be_sent_aborts_the_round)
{
    start_both(BIG_TABLE);
    bus.fail_parts = 3; /* every try of the first piece */
    run(settled);
    cr_assert(not(timed_out));
    /* The winner goes on; the joiner waits, unsynced, for the next change
     * rather than loading a partial table. */
    cr_expect(not(synced(1)));
    cr_expect(eq(sz, tables[1].n, 0));
    stop_both();
}

Test(sync_round, a_rollback_fence_reaches_a_joining_node)
{
    start_both(3);
    /* Node 1 rolls volume 1 back: fenced when node 2 joins. */
    struct policing_fence f = {.node = 1};
    memcpy(f.uuid, tables[0].v[1].uuid, sizeof f.uuid);
    cr_assert(eq(int, copy_fences(&f, 1, &tables[0].fences), 0));
    tables[0].nfences = 1;
    run(both_synced);
    cr_assert(not(timed_out));
    cr_assert(eq(sz, tables[1].nfences, 1), "node 2 did not learn the fence");
    cr_expect(eq(str, tables[1].fences[0].uuid, f.uuid));
    cr_expect(eq(u32, tables[1].fences[0].node, 1));
    stop_both();
}

Test(sync_round, a_grant_reaches_a_joining_node)
{
    start_both(3);
    cr_assert(eq(int, t_grant(&tables[0], "v1", "dn:CN=alice,O=Example", PMSG_GRANT_RO), 0));
    run(both_synced);
    cr_assert(not(timed_out));
    cr_assert(eq(sz, tables[1].ngrants, 1), "node 2 did not learn the grant");
    cr_expect(eq(str, tables[1].grants[0].uuid, "v1"));
    cr_expect(eq(str, tables[1].grants[0].identity, "dn:CN=alice,O=Example"));
    cr_expect(eq(u8, tables[1].grants[0].read_only, 1));
    stop_both();
}

static int grant_result = 1;

static void grant_done(void *arg, int result)
{
    (void)arg;
    grant_result = result;
}

static bool grant_applied(void)
{
    return grant_result != 1 && tables[0].ngrants == 1 && tables[1].ngrants == 1;
}

static void start_synced(void);

Test(sync_round, a_quota_and_a_token_reach_a_joining_node_and_a_revoke_too)
{
    start_both(3);
    struct policing_token tok = {.id = "0123456789abcdef", .identity = "alice", .created = 7};
    tok.hash[0] = 0xab;
    cr_assert(eq(int, t_quota(&tables[0], "alice", 1 << 20, 64), 0));
    cr_assert(eq(int, t_token(&tables[0], &tok, false), 0));
    cr_assert(eq(int,
                 t_token(&tables[1], &(struct policing_token){.id = "feedfeedfeedfeed"}, false),
                 0)); /* node 2's own, revoked while it was away: goes */
    run(both_synced);
    cr_assert(not(timed_out));
    cr_assert(eq(sz, tables[1].nquotas, 1), "node 2 did not learn the quota");
    cr_expect(eq(str, tables[1].quotas[0].identity, "alice"));
    cr_expect(eq(u64, tables[1].quotas[0].limit, 1 << 20));
    cr_assert(eq(sz, tables[1].ntokens, 1), "node 2 kept a token the group has not");
    cr_expect(eq(str, tables[1].tokens[0].id, tok.id));
    cr_expect(eq(str, tables[1].tokens[0].identity, "alice"));
    cr_expect(eq(u8, tables[1].tokens[0].hash[0], 0xab));
    cr_expect(eq(i64, tables[1].tokens[0].created, 7));
    stop_both();
}

static int ident_result = 1;

static void ident_done(void *arg, int result)
{
    (void)arg;
    ident_result = result;
}

static bool quota_applied(void)
{
    return ident_result != 1 && tables[0].nquotas == 1 && tables[1].nquotas == 1;
}

static bool token_gone(void)
{
    return ident_result != 1 && tables[0].ntokens == 0 && tables[1].ntokens == 0;
}

Test(sync_round, a_quota_and_a_token_revoke_asked_on_one_node_apply_on_both)
{
    start_synced();
    uint64_t v0 = tables[0].version;
    ident_result = 1;
    cr_assert(eq(int, policing_quota_set(pcs[1], "bob", 4096, 64, ident_done, NULL), 0));
    run(quota_applied);
    cr_assert(not(timed_out));
    cr_expect(eq(int, ident_result, 0));
    struct policing_token tok = {.id = "00000000000000aa", .identity = "bob"};
    for (size_t i = 0; i < NODES; i++) {
        cr_expect(eq(str, tables[i].quotas[0].identity, "bob"), "node %zu", i + 1);
        cr_expect(eq(u64, tables[i].quotas[0].limit, 4096));
        cr_expect(eq(u64, tables[i].version, v0 + 1), "node %zu's version", i + 1);
        cr_assert(eq(int, t_token(&tables[i], &tok, false), 0));
    }
    ident_result = 1;
    cr_assert(eq(int, policing_token_change(pcs[0], &tok, true, ident_done, NULL), 0));
    run(token_gone);
    cr_assert(not(timed_out));
    cr_expect(eq(int, ident_result, 0));
    stop_both();
}

/* ---- cuts ------------------------------------------------------------------- */

static int cut_result;
static bool cut_answered;

static void cut_done(void *arg, int result)
{
    (void)arg;
    cut_result = result;
    cut_answered = true;
}

static bool answered(void)
{
    return cut_answered;
}

static void cut(size_t node, const char *volume)
{
    cut_answered = false;
    const char *names[] = {volume};
    cr_assert(eq(int, policing_snapshot_create(pcs[node], names, 1, "s", cut_done, NULL), 0));
}

static void start_synced(void)
{
    start_both(3);
    run(both_synced);
    cr_assert(not(timed_out));
}

Test(sync_round, a_grant_asked_on_one_node_applies_on_both_and_bumps_the_version)
{
    start_synced();
    uint64_t v0 = tables[0].version;
    cr_assert(
        eq(int, policing_access_change(pcs[1], "v2", "bob", PMSG_GRANT_RW, grant_done, NULL), 0));
    run(grant_applied);
    cr_assert(not(timed_out));
    cr_expect(eq(int, grant_result, 0));
    for (size_t i = 0; i < NODES; i++) {
        cr_expect(eq(str, tables[i].grants[0].identity, "bob"), "node %zu", i + 1);
        cr_expect(eq(u8, tables[i].grants[0].read_only, 0));
        cr_expect(eq(u64, tables[i].version, v0 + 1), "node %zu's version", i + 1);
    }
    stop_both();
}

Test(sync_round, a_cut_commits_on_both_nodes_with_one_id_once_both_drained)
{
    start_synced();
    tables[0].drains = tables[1].drains = true;
    cut(1, "v1");
    run(answered);
    cr_assert(not(timed_out));
    cr_expect(eq(int, cut_result, 0));
    for (size_t i = 0; i < NODES; i++) {
        cr_expect(eq(u32, tables[i].held, 1), "node %zu held", i + 1);
        cr_expect(eq(u32, tables[i].commits, 1), "node %zu committed", i + 1);
        cr_expect(eq(u32, tables[i].releases, 0));
    }
    cr_expect(eq(u64, tables[0].cut_id, tables[1].cut_id));
    cr_expect(eq(u64, tables[0].cut_id, tables[0].version), "the id is the table version");
    stop_both();
}

Test(sync_round, a_cut_that_a_node_does_not_drain_aborts_on_both)
{
    start_synced();
    tables[0].drains = true; /* node 2 never drains: its deadline aborts */
    cut(0, "v1");
    run(answered);
    cr_assert(not(timed_out));
    cr_expect(eq(int, cut_result, -ETIMEDOUT));
    for (size_t i = 0; i < NODES; i++) {
        cr_expect(eq(u32, tables[i].commits, 0), "node %zu committed", i + 1);
        cr_expect(eq(u32, tables[i].releases, 1), "node %zu released", i + 1);
    }
    stop_both();
}

Test(sync_round, a_delete_that_a_node_reads_ends_busy_on_both)
{
    start_synced();
    tables[0].drains = tables[1].drains = true;
    tables[1].busy = true; /* node 2 has the snapshot's export open */
    cut_answered = false;
    cr_assert(eq(int, policing_snapshot_delete(pcs[0], "v1", "s", cut_done, NULL), 0));
    run(answered);
    cr_assert(not(timed_out));
    cr_expect(eq(int, cut_result, -ETXTBSY));
    for (size_t i = 0; i < NODES; i++) {
        cr_expect(eq(u32, tables[i].commits, 0), "node %zu deleted", i + 1);
        cr_expect(eq(u32, tables[i].releases, 1), "node %zu released", i + 1);
    }
    stop_both();
}

Test(sync_round, a_volume_in_a_cut_is_refused_a_second_one)
{
    start_synced();
    cut(0, "v1"); /* nobody drains: it stays open until its deadline */
    int first_result = 0;
    bool first_answered = false;
    const char *names[] = {"v1"};
    cr_assert(eq(int, policing_snapshot_create(pcs[1], names, 1, "t", cut_done, NULL), 0));
    run(answered); /* the second one's answer comes first: refused at once */
    first_result = cut_result;
    first_answered = cut_answered;
    cr_expect(first_answered);
    cr_expect(eq(int, first_result, -EBUSY));
    cut_answered = false;
    run(answered); /* the first one aborts at its deadline */
    cr_expect(eq(int, cut_result, -ETIMEDOUT));
    stop_both();
}
