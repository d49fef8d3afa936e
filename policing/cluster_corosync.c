/* cluster_corosync.c - the cluster transport over the local corosync.
 *
 * Three connections to corosync: CPG carries the process group (agreed
 * order, virtual synchrony), votequorum says whether this partition is
 * quorate, cmap reads the nodelist, so corosync.conf stays the one source
 * of membership. The CPG and votequorum descriptors are polled in the
 * daemon's qb_loop, so every event reaches the daemon on its main thread;
 * send() may come from any thread and uses CPG's request channel under a
 * lock.
 *
 * Losing corosync (it died or was restarted) is final for one instance:
 * the driver stops dispatching, closes its connections, reports quorum
 * lost (a node that cannot hear the cluster must not write) and send()
 * returns -ENOTCONN from then on. Whether to reconnect is the daemon's
 * decision, since it must rebuild its replicated state from the group.
 */
#include "policing/cluster.h"

#include <corosync/cmap.h>
#include <corosync/corotypes.h>
#include <corosync/cpg.h>
#include <corosync/votequorum.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <qb/qblog.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#define NSEC_PER_SEC 1000000000LL

/* corosync answers CS_ERR_TRY_AGAIN while its flow control is on or a
 * membership change is being synchronised; that lasts milliseconds, or
 * about token + consensus (a few seconds) when a node is lost. Calls are
 * retried with a backoff from 0.1 ms to 20 ms for up to this long, which
 * only a wedged corosync exceeds. */
#define RETRY_TIMEOUT_NS (30 * NSEC_PER_SEC)
#define BACKOFF_MIN_NS 100000L
#define BACKOFF_MAX_NS 20000000L

struct cluster {
    qb_loop_t *loop;
    const struct cluster_events *ev;
    void *ctx;
    struct cpg_name group;
    char name[CPG_MAX_NAME_LENGTH + 1]; /* group, for messages */
    uint32_t nodeid;

    /* Main thread only. */
    votequorum_handle_t vq;
    cmap_handle_t cmap;
    int cpg_fd;
    int vq_fd;
    int quorate; /* last value reported, -1 before the first */

    /* send_lock serialises the CPG request channel (libcpg toggles the
     * connection's flow-control setting around every multicast and pairs
     * each fragment of a large one with a reply, so two threads must not
     * interleave) and guards the handle's life: up is set and cleared by
     * the main thread with send_lock held, and the handle is used only
     * while it is set. The main thread reads up without the lock (it is
     * the only writer) and dispatches CPG events without it: those come on
     * the separate event channel. */
    pthread_mutex_t send_lock;
    cpg_handle_t cpg;
    bool up;
};

struct cs_error_desc {
    const char *name;
    int err;
};

/* Names as corosync's headers spell them, so a log line can be searched
 * for, with the errno each one is reported as. */
static const struct cs_error_desc cs_errors[] = {
    [CS_OK] = {"CS_OK", 0},
    [CS_ERR_LIBRARY] = {"CS_ERR_LIBRARY", ENOTCONN},
    [CS_ERR_VERSION] = {"CS_ERR_VERSION", EPROTO},
    [CS_ERR_INIT] = {"CS_ERR_INIT", EIO},
    [CS_ERR_TIMEOUT] = {"CS_ERR_TIMEOUT", ETIMEDOUT},
    [CS_ERR_TRY_AGAIN] = {"CS_ERR_TRY_AGAIN", EAGAIN},
    [CS_ERR_INVALID_PARAM] = {"CS_ERR_INVALID_PARAM", EINVAL},
    [CS_ERR_NO_MEMORY] = {"CS_ERR_NO_MEMORY", ENOMEM},
    [CS_ERR_BAD_HANDLE] = {"CS_ERR_BAD_HANDLE", EBADF},
    [CS_ERR_BUSY] = {"CS_ERR_BUSY", EBUSY},
    [CS_ERR_ACCESS] = {"CS_ERR_ACCESS", EACCES},
    [CS_ERR_NOT_EXIST] = {"CS_ERR_NOT_EXIST", ENOENT},
    [CS_ERR_NAME_TOO_LONG] = {"CS_ERR_NAME_TOO_LONG", ENAMETOOLONG},
    [CS_ERR_EXIST] = {"CS_ERR_EXIST", EEXIST},
    [CS_ERR_NO_SPACE] = {"CS_ERR_NO_SPACE", ENOSPC},
    [CS_ERR_INTERRUPT] = {"CS_ERR_INTERRUPT", EINTR},
    [CS_ERR_NAME_NOT_FOUND] = {"CS_ERR_NAME_NOT_FOUND", ENOENT},
    [CS_ERR_NO_RESOURCES] = {"CS_ERR_NO_RESOURCES", ENOBUFS},
    [CS_ERR_NOT_SUPPORTED] = {"CS_ERR_NOT_SUPPORTED", EOPNOTSUPP},
    [CS_ERR_BAD_OPERATION] = {"CS_ERR_BAD_OPERATION", EINVAL},
    [CS_ERR_FAILED_OPERATION] = {"CS_ERR_FAILED_OPERATION", EIO},
    [CS_ERR_MESSAGE_ERROR] = {"CS_ERR_MESSAGE_ERROR", EBADMSG},
    [CS_ERR_QUEUE_FULL] = {"CS_ERR_QUEUE_FULL", ENOBUFS},
    [CS_ERR_QUEUE_NOT_AVAILABLE] = {"CS_ERR_QUEUE_NOT_AVAILABLE", ENOTCONN},
    [CS_ERR_BAD_FLAGS] = {"CS_ERR_BAD_FLAGS", EINVAL},
    [CS_ERR_TOO_BIG] = {"CS_ERR_TOO_BIG", EMSGSIZE},
    [CS_ERR_NO_SECTIONS] = {"CS_ERR_NO_SECTIONS", ENOENT},
    [CS_ERR_CONTEXT_NOT_FOUND] = {"CS_ERR_CONTEXT_NOT_FOUND", ENOENT},
    [CS_ERR_TOO_MANY_GROUPS] = {"CS_ERR_TOO_MANY_GROUPS", EMFILE},
    [CS_ERR_SECURITY] = {"CS_ERR_SECURITY", EACCES},
};

static const struct cs_error_desc *cs_desc(cs_error_t err)
{
    static const struct cs_error_desc unknown = {"CS_ERR_UNKNOWN", EIO};
    size_t i = (size_t)err;

    if (i < sizeof cs_errors / sizeof cs_errors[0] && cs_errors[i].name != NULL)
        return &cs_errors[i];
    return &unknown;
}

/* Logs "corosync: WHAT: CS_ERR_X: why" at level and returns -errno. */
static int __attribute__((format(printf, 3, 4)))
cs_log(int level, cs_error_t err, const char *fmt, ...)
{
    const struct cs_error_desc *d = cs_desc(err);
    char what[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (err == CS_ERR_LIBRARY)
        qb_log(level, "corosync: %s: %s: no connection to corosync (is corosync running?)", what,
               d->name);
    else
        qb_log(level, "corosync: %s: %s (%d): %s", what, d->name, (int)err, strerror(d->err));
    return -d->err;
}

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

static void backoff_sleep(long *ns)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = *ns};

    nanosleep(&ts, NULL);
    *ns = *ns * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : *ns * 2;
}

static struct cluster *cpg_owner(cpg_handle_t h)
{
    void *ctx = NULL;
    cs_error_t err = cpg_context_get(h, &ctx);

    if (err != CS_OK) {
        cs_log(LOG_ERR, err, "cpg_context_get");
        return NULL;
    }
    return ctx;
}

static void report_quorum(struct cluster *c, bool quorate)
{
    if (c->quorate == (int)quorate)
        return;
    if (quorate)
        qb_log(LOG_INFO, "corosync: group \"%s\": this partition is quorate", c->name);
    else
        qb_log(LOG_WARNING, "corosync: group \"%s\": this partition is not quorate", c->name);
    c->quorate = quorate;
    c->ev->quorum(c->ctx, quorate);
}

static void on_deliver(cpg_handle_t h, const struct cpg_name *group, uint32_t nodeid, uint32_t pid,
                       void *msg, size_t len)
{
    struct cluster *c = cpg_owner(h);

    (void)group;
    if (c != NULL)
        c->ev->deliver(c->ctx, nodeid, pid, msg, len);
}

static enum cluster_leave_reason leave_reason(const struct cpg_address *a)
{
    switch (a->reason) {
    case CPG_REASON_LEAVE:
        return CLUSTER_LEFT;
    case CPG_REASON_NODEDOWN:
        return CLUSTER_NODEDOWN;
    case CPG_REASON_PROCDOWN:
        return CLUSTER_PROCDOWN;
    default:
        /* Assume the worst: the member stopped without a goodbye. */
        qb_log(LOG_WARNING, "corosync: member %u/%u left for unknown CPG reason %u", a->nodeid,
               a->pid, a->reason);
        return CLUSTER_NODEDOWN;
    }
}

static int member_cmp(const void *a, const void *b)
{
    const struct cluster_member *x = a, *y = b;

    if (x->nodeid != y->nodeid)
        return x->nodeid < y->nodeid ? -1 : 1;
    if (x->pid != y->pid)
        return x->pid < y->pid ? -1 : 1;
    return 0;
}

/* Copies a CPG address list, sorted by (nodeid, pid) so that every member
 * sees the same list in the same order. */
static size_t to_members(const struct cpg_address *in, size_t n, bool left,
                         struct cluster_member *out)
{
    size_t i;

    if (n > CPG_MEMBERS_MAX) {
        qb_log(LOG_ERR, "corosync: a configuration change lists %zu members, over CPG's %d", n,
               CPG_MEMBERS_MAX);
        n = CPG_MEMBERS_MAX;
    }
    for (i = 0; i < n; i++) {
        out[i] = (struct cluster_member){.nodeid = in[i].nodeid, .pid = in[i].pid};
        if (left)
            out[i].reason = leave_reason(&in[i]);
    }
    qsort(out, n, sizeof *out, member_cmp);
    return n;
}

/* Asks votequorum now, so a membership change is handled knowing the
 * quorum of the new membership: its own notification comes through
 * another descriptor and may be dispatched after the change. A minority
 * must not take the departures it sees for agreed facts (policing). */
static void refresh_quorum(struct cluster *c)
{
    struct votequorum_info info;
    cs_error_t err = votequorum_getinfo(c->vq, c->nodeid, &info);
    if (err != CS_OK) {
        qb_log(LOG_DEBUG, "corosync: votequorum_getinfo: %d; keeping the last quorum", err);
        return;
    }
    report_quorum(c, (info.flags & VOTEQUORUM_INFO_QUORATE) != 0);
}

static void on_confchg(cpg_handle_t h, const struct cpg_name *group,
                       const struct cpg_address *members, size_t nmembers,
                       const struct cpg_address *left, size_t nleft,
                       const struct cpg_address *joined, size_t njoined)
{
    struct cluster_member m[CPG_MEMBERS_MAX], l[CPG_MEMBERS_MAX], j[CPG_MEMBERS_MAX];
    struct cluster *c = cpg_owner(h);

    (void)group;
    if (c == NULL)
        return;
    nmembers = to_members(members, nmembers, false, m);
    nleft = to_members(left, nleft, true, l);
    njoined = to_members(joined, njoined, false, j);
    qb_log(LOG_INFO, "corosync: group \"%s\": %zu members, %zu left, %zu joined", c->name, nmembers,
           nleft, njoined);
    refresh_quorum(c);
    c->ev->confchg(c->ctx, m, nmembers, l, nleft, j, njoined);
}

static void on_quorum_notify(votequorum_handle_t h, uint64_t context, uint32_t quorate,
                             uint32_t nnodes, votequorum_node_t nodes[])
{
    (void)h, (void)nnodes, (void)nodes;
    report_quorum((struct cluster *)(uintptr_t)context, quorate != 0);
}

/* The close_* functions are also used on connections that are already
 * broken, where finalize fails as expected: hence only a debug message. */
static void close_cpg(struct cluster *c)
{
    cs_error_t err;

    pthread_mutex_lock(&c->send_lock);
    c->up = false;
    err = cpg_finalize(c->cpg);
    pthread_mutex_unlock(&c->send_lock);
    if (err != CS_OK)
        cs_log(LOG_DEBUG, err, "cpg_finalize \"%s\"", c->name);
}

static void close_votequorum(struct cluster *c)
{
    cs_error_t err = votequorum_finalize(c->vq);

    if (err != CS_OK)
        cs_log(LOG_DEBUG, err, "votequorum_finalize");
}

static void close_cmap(struct cluster *c)
{
    cs_error_t err = cmap_finalize(c->cmap);

    if (err != CS_OK)
        cs_log(LOG_DEBUG, err, "cmap_finalize");
}

static void unpoll(struct cluster *c, int fd, const char *what)
{
    int r = qb_loop_poll_del(c->loop, fd);

    if (r < 0)
        qb_log(LOG_WARNING, "corosync: removing the %s descriptor from the loop: %s", what,
               strerror(-r));
}

/* Closes every connection. The descriptor being dispatched (or -1) is
 * left to its handler, which returns -1 so that libqb drops its entry;
 * the others are taken out of the loop before they are closed. */
static void disconnect(struct cluster *c, int dispatching_fd)
{
    if (c->cpg_fd != dispatching_fd)
        unpoll(c, c->cpg_fd, "CPG");
    if (c->vq_fd != dispatching_fd)
        unpoll(c, c->vq_fd, "votequorum");
    close_cpg(c);
    close_votequorum(c);
    close_cmap(c);
}

static void connection_lost(struct cluster *c, int dispatching_fd)
{
    qb_log(LOG_ERR,
           "corosync: group \"%s\": lost the connection to corosync; this node is out of the "
           "cluster and its sends fail with ENOTCONN",
           c->name);
    disconnect(c, dispatching_fd);
    report_quorum(c, false);
}

static int32_t on_cpg_ready(int32_t fd, int32_t revents, void *data)
{
    struct cluster *c = data;
    cs_error_t err = cpg_dispatch(c->cpg, CS_DISPATCH_ALL);

    if (err != CS_OK && err != CS_ERR_TRY_AGAIN) {
        cs_log(LOG_ERR, err, "cpg_dispatch \"%s\"", c->name);
        connection_lost(c, fd);
        return -1;
    }
    if (revents & (POLLHUP | POLLERR | POLLNVAL)) {
        qb_log(LOG_ERR, "corosync: group \"%s\": corosync closed the CPG connection", c->name);
        connection_lost(c, fd);
        return -1;
    }
    return 0;
}

static int32_t on_vq_ready(int32_t fd, int32_t revents, void *data)
{
    struct cluster *c = data;
    cs_error_t err = votequorum_dispatch(c->vq, CS_DISPATCH_ALL);

    if (err != CS_OK && err != CS_ERR_TRY_AGAIN) {
        cs_log(LOG_ERR, err, "votequorum_dispatch");
        connection_lost(c, fd);
        return -1;
    }
    if (revents & (POLLHUP | POLLERR | POLLNVAL)) {
        qb_log(LOG_ERR, "corosync: corosync closed the votequorum connection");
        connection_lost(c, fd);
        return -1;
    }
    return 0;
}

static int open_cpg(struct cluster *c)
{
    cpg_model_v1_data_t model = {
        .model = CPG_MODEL_V1,
        .cpg_deliver_fn = on_deliver,
        .cpg_confchg_fn = on_confchg,
    };
    cs_error_t err;
    unsigned int nodeid;

    err = cpg_model_initialize(&c->cpg, CPG_MODEL_V1, (cpg_model_data_t *)&model, c);
    if (err != CS_OK)
        return cs_log(LOG_ERR, err, "cpg_initialize");
    err = cpg_local_get(c->cpg, &nodeid);
    if (err == CS_OK)
        err = cpg_fd_get(c->cpg, &c->cpg_fd);
    if (err != CS_OK) {
        int r = cs_log(LOG_ERR, err, "cpg_local_get/cpg_fd_get");

        close_cpg(c);
        return r;
    }
    c->nodeid = nodeid;
    return 0;
}

/* CS_TRACK_CURRENT makes corosync send the present state as the first
 * notification, so the initial quorum callback arrives through the loop
 * like every later one and cannot overtake a newer value. */
static int open_votequorum(struct cluster *c)
{
    votequorum_callbacks_t cb = {.votequorum_quorum_notify_fn = on_quorum_notify};
    cs_error_t err;

    err = votequorum_initialize(&c->vq, &cb);
    /* CPG answered just before, so no answer here means no such service. */
    if (err == CS_ERR_LIBRARY || err == CS_ERR_NOT_EXIST) {
        qb_log(LOG_ERR,
               "corosync: votequorum_initialize: %s: corosync runs without votequorum "
               "(corosync.conf needs quorum { provider: corosync_votequorum })",
               cs_desc(err)->name);
        return -ENOENT;
    }
    if (err != CS_OK)
        return cs_log(LOG_ERR, err, "votequorum_initialize");
    err = votequorum_fd_get(c->vq, &c->vq_fd);
    if (err == CS_OK)
        err = votequorum_trackstart(c->vq, (uintptr_t)c, CS_TRACK_CURRENT | CS_TRACK_CHANGES);
    if (err != CS_OK) {
        int r = cs_log(LOG_ERR, err, "votequorum_fd_get/votequorum_trackstart");

        close_votequorum(c);
        return r;
    }
    return 0;
}

static int open_cmap(struct cluster *c)
{
    cs_error_t err = cmap_initialize(&c->cmap);

    return err == CS_OK ? 0 : cs_log(LOG_ERR, err, "cmap_initialize");
}

static int poll_fds(struct cluster *c)
{
    int r = qb_loop_poll_add(c->loop, QB_LOOP_MED, c->cpg_fd, POLLIN, c, on_cpg_ready);

    if (r < 0) {
        qb_log(LOG_ERR, "corosync: adding the CPG descriptor to the loop: %s", strerror(-r));
        return r;
    }
    r = qb_loop_poll_add(c->loop, QB_LOOP_MED, c->vq_fd, POLLIN, c, on_vq_ready);
    if (r < 0) {
        qb_log(LOG_ERR, "corosync: adding the votequorum descriptor to the loop: %s", strerror(-r));
        unpoll(c, c->cpg_fd, "CPG");
    }
    return r;
}

/* A join during a membership change is refused with TRY_AGAIN. */
static int join(struct cluster *c)
{
    int64_t deadline = now_ns() + RETRY_TIMEOUT_NS;
    long backoff = BACKOFF_MIN_NS;
    cs_error_t err;

    while ((err = cpg_join(c->cpg, &c->group)) == CS_ERR_TRY_AGAIN && now_ns() < deadline)
        backoff_sleep(&backoff);
    if (err == CS_ERR_EXIST) {
        qb_log(LOG_ERR, "corosync: cpg_join \"%s\": CS_ERR_EXIST: already a member", c->name);
        return -EEXIST;
    }
    return err == CS_OK ? 0 : cs_log(LOG_ERR, err, "cpg_join \"%s\"", c->name);
}

static int check_group(const char *group)
{
    size_t len = strlen(group);

    if (len == 0) {
        qb_log(LOG_ERR, "corosync: the process group name is empty");
        return -EINVAL;
    }
    if (len > CPG_MAX_NAME_LENGTH) {
        qb_log(LOG_ERR, "corosync: process group name \"%s\" is %zu bytes, over CPG's %d", group,
               len, CPG_MAX_NAME_LENGTH);
        return -ENAMETOOLONG;
    }
    return 0;
}

static struct cluster *cluster_new(const char *group, qb_loop_t *loop,
                                   const struct cluster_events *ev, void *ctx)
{
    struct cluster *c = calloc(1, sizeof *c);
    int r;

    if (c == NULL) {
        qb_log(LOG_ERR, "corosync: group \"%s\": out of memory", group);
        return NULL;
    }
    r = pthread_mutex_init(&c->send_lock, NULL);
    if (r != 0) {
        qb_log(LOG_ERR, "corosync: group \"%s\": pthread_mutex_init: %s", group, strerror(r));
        free(c);
        return NULL;
    }
    c->loop = loop;
    c->ev = ev;
    c->ctx = ctx;
    c->quorate = -1;
    c->group.length = (uint32_t)strlen(group);
    memcpy(c->group.value, group, c->group.length);
    memcpy(c->name, group, c->group.length + 1);
    return c;
}

static void cluster_free(struct cluster *c)
{
    pthread_mutex_destroy(&c->send_lock);
    free(c);
}

/* Everything is connected and polled before the join: the first
 * messages may come in the same dispatch as our own join. */
static int cc_init(struct cluster **out, const char *group, qb_loop_t *loop,
                   const struct cluster_events *ev, void *ctx)
{
    struct cluster *c;
    int r = check_group(group);

    if (r < 0)
        return r;
    c = cluster_new(group, loop, ev, ctx);
    if (c == NULL)
        return -ENOMEM;
    r = open_cpg(c);
    if (r < 0)
        goto free;
    r = open_votequorum(c);
    if (r < 0)
        goto cpg;
    r = open_cmap(c);
    if (r < 0)
        goto vq;
    r = poll_fds(c);
    if (r < 0)
        goto cmap;
    c->up = true;
    r = join(c);
    if (r < 0) {
        disconnect(c, -1);
        goto free;
    }
    qb_log(LOG_INFO, "corosync: joined group \"%s\" as node %u", c->name, c->nodeid);
    *out = c;
    return 0;
cmap:
    close_cmap(c);
vq:
    close_votequorum(c);
cpg:
    close_cpg(c);
free:
    cluster_free(c);
    return r;
}

static uint32_t cc_local_nodeid(struct cluster *c)
{
    return c->nodeid;
}

/* With send_lock held; drops it while backing off, so that the main
 * thread can tear the connection down and other senders get their turn. */
static int mcast_locked(struct cluster *c, const struct iovec *iov)
{
    int64_t deadline = now_ns() + RETRY_TIMEOUT_NS;
    long backoff = BACKOFF_MIN_NS;
    cs_error_t err;

    for (;;) {
        if (!c->up)
            return -ENOTCONN;
        err = cpg_mcast_joined(c->cpg, CPG_TYPE_AGREED, iov, 1);
        if (err == CS_OK)
            return 0;
        if (err != CS_ERR_TRY_AGAIN) {
            int r =
                cs_log(LOG_ERR, err, "cpg_mcast_joined \"%s\" (%zu bytes)", c->name, iov->iov_len);

            /* Corosync gone, handle closed or group not joined: all mean
             * this process is not in the group. */
            if (err == CS_ERR_LIBRARY || err == CS_ERR_BAD_HANDLE || err == CS_ERR_NOT_EXIST)
                return -ENOTCONN;
            return r;
        }
        if (now_ns() >= deadline) {
            qb_log(LOG_ERR,
                   "corosync: cpg_mcast_joined \"%s\" (%zu bytes): CS_ERR_TRY_AGAIN for %lld s: "
                   "corosync's flow control does not clear",
                   c->name, iov->iov_len, RETRY_TIMEOUT_NS / NSEC_PER_SEC);
            return -ETIMEDOUT;
        }
        pthread_mutex_unlock(&c->send_lock);
        backoff_sleep(&backoff);
        pthread_mutex_lock(&c->send_lock);
    }
}

static int cc_send(struct cluster *c, const void *msg, size_t len)
{
    struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
    int r;

    if (len > CLUSTER_MSG_MAX) {
        qb_log(LOG_ERR, "corosync: send to group \"%s\": %zu bytes is over the %d-byte limit",
               c->name, len, CLUSTER_MSG_MAX);
        return -EMSGSIZE;
    }
    pthread_mutex_lock(&c->send_lock);
    r = mcast_locked(c, &iov);
    pthread_mutex_unlock(&c->send_lock);
    return r;
}

/* One node of the nodelist as read so far, keyed by the N of
 * nodelist.node.N. */
struct node_entry {
    unsigned int index;
    bool has_id;
    struct cluster_node node;
};

struct node_table {
    struct node_entry *v;
    size_t n;
    size_t cap;
};

static struct node_entry *node_entry(struct node_table *t, unsigned int index)
{
    struct node_entry *e;
    size_t i;

    for (i = 0; i < t->n; i++)
        if (t->v[i].index == index)
            return &t->v[i];
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : CLUSTER_NODES_MAX;

        e = realloc(t->v, cap * sizeof *e);
        if (e == NULL)
            return NULL;
        t->v = e;
        t->cap = cap;
    }
    e = &t->v[t->n++];
    *e = (struct node_entry){.index = index};
    return e;
}

static int read_string_key(cmap_handle_t h, const char *key, char *out, size_t size)
{
    char *s = NULL;
    cs_error_t err = cmap_get_string(h, key, &s);
    size_t len;

    if (err != CS_OK)
        return cs_log(LOG_ERR, err, "cmap_get_string %s", key);
    len = strlen(s);
    if (len >= size) {
        qb_log(LOG_ERR, "corosync: %s \"%s\" is %zu bytes, over vsan's limit of %zu", key, s, len,
               size - 1);
        free(s);
        return -ENAMETOOLONG;
    }
    memcpy(out, s, len + 1);
    free(s);
    return 0;
}

/* One key of nodelist.node.N.*; keys other than nodeid, name and
 * ring0_addr (ring1_addr, link settings) are no concern of ours. */
static int read_node_key(struct cluster *c, const char *key, struct node_table *t)
{
    unsigned int index;
    struct node_entry *e;
    const char *field;
    int off = 0;
    cs_error_t err;

    if (sscanf(key, "nodelist.node.%u.%n", &index, &off) != 1 || off == 0)
        return 0;
    field = key + off;
    if (strcmp(field, "nodeid") != 0 && strcmp(field, "name") != 0 &&
        strcmp(field, "ring0_addr") != 0)
        return 0;
    e = node_entry(t, index);
    if (e == NULL) {
        qb_log(LOG_ERR, "corosync: reading the nodelist: out of memory");
        return -ENOMEM;
    }
    if (strcmp(field, "name") == 0)
        return read_string_key(c->cmap, key, e->node.name, sizeof e->node.name);
    if (strcmp(field, "ring0_addr") == 0)
        return read_string_key(c->cmap, key, e->node.addr, sizeof e->node.addr);
    err = cmap_get_uint32(c->cmap, key, &e->node.nodeid);
    if (err != CS_OK)
        return cs_log(LOG_ERR, err, "cmap_get_uint32 %s", key);
    e->has_id = true;
    return 0;
}

static int read_nodelist(struct cluster *c, struct node_table *t)
{
    char key[CMAP_KEYNAME_MAXLEN + 1];
    cmap_iter_handle_t iter;
    cs_error_t err;
    int r = 0;

    err = cmap_iter_init(c->cmap, "nodelist.node.", &iter);
    if (err != CS_OK)
        return cs_log(LOG_ERR, err, "cmap_iter_init nodelist.node.");
    while (r == 0 && (err = cmap_iter_next(c->cmap, iter, key, NULL, NULL)) == CS_OK)
        r = read_node_key(c, key, t);
    if (r == 0 && err != CS_ERR_NO_SECTIONS)
        r = cs_log(LOG_ERR, err, "cmap_iter_next nodelist.node.");
    err = cmap_iter_finalize(c->cmap, iter);
    if (err != CS_OK)
        cs_log(LOG_WARNING, err, "cmap_iter_finalize nodelist.node.");
    return r;
}

/* Entries without a nodeid sort last, to be skipped. */
static int entry_cmp(const void *a, const void *b)
{
    const struct node_entry *x = a, *y = b;

    if (x->has_id != y->has_id)
        return x->has_id ? -1 : 1;
    return x->node.nodeid < y->node.nodeid ? -1 : x->node.nodeid > y->node.nodeid;
}

static int cc_nodelist(struct cluster *c, struct cluster_node *out, size_t max)
{
    struct node_table t = {0};
    size_t i, n = 0;
    int r;

    if (!c->up)
        return -ENOTCONN;
    r = read_nodelist(c, &t);
    if (r == 0) {
        qsort(t.v, t.n, sizeof *t.v, entry_cmp);
        for (i = 0; i < t.n; i++) {
            if (!t.v[i].has_id)
                qb_log(LOG_WARNING, "corosync: nodelist.node.%u has no nodeid; ignored",
                       t.v[i].index);
            else if (n < max)
                out[n++] = t.v[i].node;
        }
        r = (int)n;
    }
    free(t.v);
    return r;
}

static void cc_fini(struct cluster *c)
{
    int64_t deadline = now_ns() + RETRY_TIMEOUT_NS;
    long backoff = BACKOFF_MIN_NS;
    cs_error_t err;

    if (c->up) {
        while ((err = cpg_leave(c->cpg, &c->group)) == CS_ERR_TRY_AGAIN && now_ns() < deadline)
            backoff_sleep(&backoff);
        if (err != CS_OK)
            cs_log(LOG_WARNING, err, "cpg_leave \"%s\" (closing the connection instead)", c->name);
        else
            qb_log(LOG_INFO, "corosync: left group \"%s\"", c->name);
        disconnect(c, -1);
    }
    cluster_free(c);
}

const struct cluster_driver cluster_corosync = {
    .name = "corosync",
    .init = cc_init,
    .local_nodeid = cc_local_nodeid,
    .send = cc_send,
    .nodelist = cc_nodelist,
    .fini = cc_fini,
};
