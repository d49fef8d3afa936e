/* fake_cluster.c - several cluster members in one process (see
 * fake_cluster.h). One lock guards the whole group: membership and every
 * member's queue. A send or a change is queued to all members under it, so
 * they all see one order; each member's thread takes its events one by
 * one and runs the callbacks without the lock, so a callback may send. */
#include "tests/unit/fake_cluster.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum ev_kind { EV_MSG, EV_CONFCHG, EV_QUORUM, EV_CALL };

struct event {
    struct event *next;
    enum ev_kind kind;
    uint32_t nodeid, pid; /* EV_MSG: the sender */
    bool quorate;         /* EV_QUORUM */
    /* EV_CONFCHG: the members after the change, and who left or joined. */
    struct cluster_member members[CLUSTER_NODES_MAX], change;
    size_t nmembers;
    bool left;
    /* EV_CALL */
    void (*fn)(void *arg);
    void *arg;
    bool *done;
    size_t len; /* EV_MSG */
    unsigned char data[];
};

struct cluster {
    uint32_t nodeid, pid;
    const struct cluster_events *ev;
    void *ctx;
    bool member; /* in the group */
    /* fcl_fail_sends: this many more sends that fail_which picks fail. */
    unsigned fail_left;
    bool (*fail_which)(const void *msg, size_t len);
    bool running;  /* fcl_resume was called */
    bool stopping; /* fini */
    struct event *head, **tail;
    pthread_cond_t cv; /* something to deliver, or stopping */
    pthread_t thread;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t called; /* an EV_CALL ran */
    unsigned nconf;
    uint32_t next_id;
    struct cluster *all[CLUSTER_NODES_MAX];
    size_t nall;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .called = PTHREAD_COND_INITIALIZER};

/* ---- queues (g.mu held) ------------------------------------------------- */

static struct cluster *find(uint32_t id)
{
    for (size_t i = 0; i < g.nall; i++)
        if (g.all[i]->nodeid == id)
            return g.all[i];
    return NULL;
}

static void push(struct cluster *c, struct event *e)
{
    e->next = NULL;
    *c->tail = e;
    c->tail = &e->next;
    pthread_cond_signal(&c->cv);
}

/* Drops what c has not delivered; a waiting fcl_call is let go. */
static void drop_queue(struct cluster *c)
{
    for (struct event *e = c->head, *next; e; e = next) {
        next = e->next;
        if (e->kind == EV_CALL)
            *e->done = true;
        free(e);
    }
    c->head = NULL;
    c->tail = &c->head;
    pthread_cond_broadcast(&g.called);
}

static struct event *event_new(enum ev_kind kind, size_t len)
{
    struct event *e = calloc(1, sizeof *e + len);
    if (!e) {
        fprintf(stderr, "fake cluster: out of memory\n");
        abort(); /* a lost event would break the promise of one order */
    }
    e->kind = kind;
    e->len = len;
    return e;
}

static bool quorate(void)
{
    size_t n = 0;
    for (size_t i = 0; i < g.nall; i++)
        n += g.all[i]->member;
    return g.nconf <= 2 || 2 * n > g.nconf;
}

/* The members sorted by node id, into out; how many. */
static size_t members(struct cluster_member *out)
{
    size_t n = 0;
    for (uint32_t id = 1; id <= CLUSTER_NODES_MAX; id++) {
        struct cluster *c = find(id);
        if (c && c->member)
            out[n++] = (struct cluster_member){.nodeid = c->nodeid, .pid = c->pid};
    }
    return n;
}

/* Tells every member that who left or joined, then the quorum. */
static void announce(const struct cluster_member *who, bool left)
{
    bool q = quorate();
    for (size_t i = 0; i < g.nall; i++) {
        struct cluster *c = g.all[i];
        if (!c->member)
            continue;
        struct event *e = event_new(EV_CONFCHG, 0);
        e->nmembers = members(e->members);
        e->change = *who;
        e->left = left;
        push(c, e);
        e = event_new(EV_QUORUM, 0);
        e->quorate = q;
        push(c, e);
    }
}

static void leave_locked(struct cluster *c, enum cluster_leave_reason reason)
{
    if (!c->member)
        return;
    c->member = false;
    drop_queue(c);
    struct event *e = event_new(EV_QUORUM, 0);
    e->quorate = false; /* final: the group is lost to it */
    push(c, e);
    announce(&(struct cluster_member){.nodeid = c->nodeid, .pid = c->pid, .reason = reason}, true);
}

/* ---- delivery ------------------------------------------------------------ */

static void run(struct cluster *c, struct event *e)
{
    switch (e->kind) {
    case EV_MSG:
        c->ev->deliver(c->ctx, e->nodeid, e->pid, e->data, e->len);
        break;
    case EV_CONFCHG:
        c->ev->confchg(c->ctx, e->members, e->nmembers, e->left ? &e->change : NULL, e->left,
                       e->left ? NULL : &e->change, !e->left);
        break;
    case EV_QUORUM:
        c->ev->quorum(c->ctx, e->quorate);
        break;
    case EV_CALL:
        e->fn(e->arg);
        pthread_mutex_lock(&g.mu);
        *e->done = true;
        pthread_cond_broadcast(&g.called);
        pthread_mutex_unlock(&g.mu);
        break;
    }
}

static void *deliver_main(void *arg)
{
    struct cluster *c = arg;
    pthread_mutex_lock(&g.mu);
    for (;;) {
        while (!c->stopping && (!c->running || !c->head))
            pthread_cond_wait(&c->cv, &g.mu);
        if (c->stopping)
            break;
        struct event *e = c->head;
        c->head = e->next;
        if (!c->head)
            c->tail = &c->head;
        pthread_mutex_unlock(&g.mu);
        run(c, e);
        free(e);
        pthread_mutex_lock(&g.mu);
    }
    pthread_mutex_unlock(&g.mu);
    return NULL;
}

/* ---- the driver ------------------------------------------------------------ */

static int fake_init(struct cluster **out, const char *group, qb_loop_t *loop,
                     const struct cluster_events *ev, void *ctx)
{
    (void)group;
    (void)loop;
    struct cluster *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    pthread_mutex_lock(&g.mu);
    *c = (struct cluster){.nodeid = g.next_id, .pid = (uint32_t)getpid(), .ev = ev, .ctx = ctx};
    c->tail = &c->head;
    int r = c->nodeid == 0 || find(c->nodeid) || g.nall == CLUSTER_NODES_MAX ? -EINVAL : 0;
    if (r == 0) {
        pthread_cond_init(&c->cv, NULL);
        r = -pthread_create(&c->thread, NULL, deliver_main, c);
        if (r < 0)
            pthread_cond_destroy(&c->cv);
    }
    if (r == 0) {
        g.next_id = 0;
        g.all[g.nall++] = c;
        c->member = true;
        announce(&(struct cluster_member){.nodeid = c->nodeid, .pid = c->pid}, false);
    }
    pthread_mutex_unlock(&g.mu);
    if (r < 0) {
        free(c);
        return r;
    }
    *out = c;
    return 0;
}

static uint32_t fake_nodeid(struct cluster *c)
{
    return c->nodeid;
}

static int fake_send(struct cluster *c, const void *msg, size_t len)
{
    if (len > CLUSTER_MSG_MAX)
        return -EMSGSIZE;
    pthread_mutex_lock(&g.mu);
    int r = c->member ? 0 : -ENOTCONN;
    if (r == 0 && c->fail_left > 0 && c->fail_which(msg, len)) {
        c->fail_left--;
        r = -ETIMEDOUT; /* as corosync's send after 30 s of flow control */
    }
    for (size_t i = 0; r == 0 && i < g.nall; i++) {
        if (!g.all[i]->member)
            continue;
        struct event *e = event_new(EV_MSG, len);
        e->nodeid = c->nodeid;
        e->pid = c->pid;
        memcpy(e->data, msg, len);
        push(g.all[i], e);
    }
    pthread_mutex_unlock(&g.mu);
    return r;
}

static int fake_nodelist(struct cluster *c, struct cluster_node *out, size_t max)
{
    (void)c;
    pthread_mutex_lock(&g.mu);
    size_t n = g.nconf < max ? g.nconf : max;
    pthread_mutex_unlock(&g.mu);
    for (size_t i = 0; i < n; i++) {
        out[i] = (struct cluster_node){.nodeid = (uint32_t)i + 1, .addr = "127.0.0.1"};
        snprintf(out[i].name, sizeof out[i].name, "node%zu", i + 1);
    }
    return (int)n;
}

static void fake_fini(struct cluster *c)
{
    pthread_mutex_lock(&g.mu);
    leave_locked(c, CLUSTER_LEFT);
    c->stopping = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&g.mu);
    pthread_join(c->thread, NULL);
    pthread_mutex_lock(&g.mu);
    drop_queue(c);
    for (size_t i = 0; i < g.nall; i++) {
        if (g.all[i] == c) {
            g.all[i] = g.all[--g.nall];
            break;
        }
    }
    pthread_mutex_unlock(&g.mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

const struct cluster_driver fake_cluster = {
    .name = "fake",
    .init = fake_init,
    .local_nodeid = fake_nodeid,
    .send = fake_send,
    .nodelist = fake_nodelist,
    .fini = fake_fini,
};

/* ---- the test's controls ----------------------------------------------------- */

void fcl_setup(unsigned nconfigured)
{
    pthread_mutex_lock(&g.mu);
    g.nconf = nconfigured;
    g.next_id = 0;
    pthread_mutex_unlock(&g.mu);
}

void fcl_expect(uint32_t id)
{
    pthread_mutex_lock(&g.mu);
    g.next_id = id;
    pthread_mutex_unlock(&g.mu);
}

void fcl_resume(uint32_t id)
{
    pthread_mutex_lock(&g.mu);
    struct cluster *c = find(id);
    if (c) {
        c->running = true;
        pthread_cond_signal(&c->cv);
    }
    pthread_mutex_unlock(&g.mu);
}

void fcl_leave(uint32_t id, enum cluster_leave_reason reason)
{
    pthread_mutex_lock(&g.mu);
    struct cluster *c = find(id);
    if (c)
        leave_locked(c, reason);
    pthread_mutex_unlock(&g.mu);
}

void fcl_call(uint32_t id, void (*fn)(void *arg), void *arg)
{
    bool done = false;
    pthread_mutex_lock(&g.mu);
    struct cluster *c = find(id);
    if (c) {
        struct event *e = event_new(EV_CALL, 0);
        e->fn = fn;
        e->arg = arg;
        e->done = &done;
        push(c, e);
    }
    while (c && !done)
        pthread_cond_wait(&g.called, &g.mu);
    pthread_mutex_unlock(&g.mu);
}

void fcl_fail_sends(uint32_t id, unsigned n, bool (*which)(const void *msg, size_t len))
{
    pthread_mutex_lock(&g.mu);
    struct cluster *c = find(id);
    if (c) {
        c->fail_left = n;
        c->fail_which = which;
    }
    pthread_mutex_unlock(&g.mu);
}
