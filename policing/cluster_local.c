/* cluster_local.c - the cluster transport for a group of one.
 *
 * The standalone mode and the unit tests run the same policing code as a
 * real cluster, so this driver keeps corosync's promises in-process: node
 * 1 (this process) is the only member and always quorate, and a sent
 * message comes back through deliver() on the loop thread, in send order.
 * send() may be called from any thread: it appends to a queue and wakes
 * the loop through an eventfd (qb_loop's own job list is not
 * thread-safe). The same wakeup announces the initial membership and
 * quorum, so they precede every message, as CPG's own join does.
 */
#include "policing/cluster.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <qb/qblog.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define LOCAL_NODEID 1

struct local_msg {
    struct local_msg *next;
    size_t len;
    unsigned char data[];
};

struct cluster {
    qb_loop_t *loop;
    const struct cluster_events *ev;
    void *ctx;
    char *group; /* for messages */
    uint32_t pid;
    int efd;        /* readable while there is something to deliver */
    bool announced; /* main thread only */

    /* lock guards the queue (head, tail): senders append, the main thread
     * takes the whole queue and delivers it without the lock, so a
     * callback may send. */
    pthread_mutex_t lock;
    struct local_msg *head;
    struct local_msg **tail;
};

static void announce(struct cluster *c)
{
    struct cluster_member self = {.nodeid = LOCAL_NODEID, .pid = c->pid};

    c->announced = true;
    c->ev->confchg(c->ctx, &self, 1, NULL, 0, &self, 1);
    c->ev->quorum(c->ctx, true);
}

static struct local_msg *take_queue(struct cluster *c)
{
    struct local_msg *m;

    pthread_mutex_lock(&c->lock);
    m = c->head;
    c->head = NULL;
    c->tail = &c->head;
    pthread_mutex_unlock(&c->lock);
    return m;
}

static int32_t on_wakeup(int32_t fd, int32_t revents, void *data)
{
    struct cluster *c = data;
    struct local_msg *m, *next;
    uint64_t count;

    (void)revents;
    /* Only a wakeup: the queue says what there is, and a send racing
     * with this read leaves the counter set for one more round. */
    if (read(fd, &count, sizeof count) < 0 && errno != EAGAIN)
        qb_log(LOG_WARNING, "local cluster \"%s\": reading the wakeup eventfd: %s", c->group,
               strerror(errno));
    if (!c->announced)
        announce(c);
    for (m = take_queue(c); m != NULL; m = next) {
        next = m->next;
        c->ev->deliver(c->ctx, LOCAL_NODEID, c->pid, m->data, m->len);
        free(m);
    }
    return 0;
}

static int wake(struct cluster *c)
{
    uint64_t one = 1;

    if (write(c->efd, &one, sizeof one) < 0) {
        int r = -errno;

        qb_log(LOG_ERR, "local cluster \"%s\": writing the wakeup eventfd: %s", c->group,
               strerror(errno));
        return r;
    }
    return 0;
}

static void free_queue(struct local_msg *m)
{
    struct local_msg *next;

    for (; m != NULL; m = next) {
        next = m->next;
        free(m);
    }
}

static void local_free(struct cluster *c)
{
    free_queue(c->head);
    if (c->efd >= 0)
        close(c->efd);
    pthread_mutex_destroy(&c->lock);
    free(c->group);
    free(c);
}

static struct cluster *local_new(const char *group, qb_loop_t *loop,
                                 const struct cluster_events *ev, void *ctx)
{
    struct cluster *c = calloc(1, sizeof *c);
    int r;

    if (c == NULL)
        return NULL;
    r = pthread_mutex_init(&c->lock, NULL);
    if (r != 0) {
        qb_log(LOG_ERR, "local cluster \"%s\": pthread_mutex_init: %s", group, strerror(r));
        free(c);
        return NULL;
    }
    c->efd = -1;
    c->group = strdup(group);
    if (c->group == NULL) {
        local_free(c);
        return NULL;
    }
    c->loop = loop;
    c->ev = ev;
    c->ctx = ctx;
    c->pid = (uint32_t)getpid();
    c->tail = &c->head;
    return c;
}

static int local_init(struct cluster **out, const char *group, qb_loop_t *loop,
                      const struct cluster_events *ev, void *ctx)
{
    struct cluster *c = local_new(group, loop, ev, ctx);
    int r;

    if (c == NULL) {
        qb_log(LOG_ERR, "local cluster \"%s\": out of memory", group);
        return -ENOMEM;
    }
    c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->efd < 0) {
        r = -errno;
        qb_log(LOG_ERR, "local cluster \"%s\": eventfd: %s", group, strerror(errno));
        goto fail;
    }
    r = qb_loop_poll_add(loop, QB_LOOP_MED, c->efd, POLLIN, c, on_wakeup);
    if (r < 0) {
        qb_log(LOG_ERR, "local cluster \"%s\": adding the eventfd to the loop: %s", group,
               strerror(-r));
        goto fail;
    }
    r = wake(c);
    if (r < 0) {
        qb_loop_poll_del(loop, c->efd);
        goto fail;
    }
    qb_log(LOG_INFO, "local cluster \"%s\": this process is node %d, the only member", group,
           LOCAL_NODEID);
    *out = c;
    return 0;
fail:
    local_free(c);
    return r;
}

static uint32_t local_nodeid(struct cluster *c)
{
    (void)c;
    return LOCAL_NODEID;
}

static int local_send(struct cluster *c, const void *msg, size_t len)
{
    struct local_msg *m, **prev;
    int r;

    if (len > CLUSTER_MSG_MAX) {
        qb_log(LOG_ERR, "local cluster \"%s\": send: %zu bytes is over the %d-byte limit", c->group,
               len, CLUSTER_MSG_MAX);
        return -EMSGSIZE;
    }
    m = malloc(sizeof *m + len);
    if (m == NULL) {
        qb_log(LOG_ERR, "local cluster \"%s\": send: out of memory for %zu bytes", c->group, len);
        return -ENOMEM;
    }
    m->next = NULL;
    m->len = len;
    if (len > 0)
        memcpy(m->data, msg, len);
    pthread_mutex_lock(&c->lock);
    prev = c->tail;
    *prev = m;
    c->tail = &m->next;
    /* Woken under the lock, so that a message that cannot be announced
     * is taken back before the loop can see it: an error means unsent. */
    r = wake(c);
    if (r < 0) {
        *prev = NULL;
        c->tail = prev;
    }
    pthread_mutex_unlock(&c->lock);
    if (r < 0)
        free(m);
    return r;
}

static int local_nodelist(struct cluster *c, struct cluster_node *out, size_t max)
{
    struct cluster_node self = {.nodeid = LOCAL_NODEID, .addr = "127.0.0.1"};

    if (max == 0)
        return 0;
    if (gethostname(self.name, sizeof self.name) < 0) {
        int r = -errno;

        qb_log(LOG_ERR, "local cluster \"%s\": gethostname: %s", c->group, strerror(errno));
        return r;
    }
    self.name[sizeof self.name - 1] = '\0';
    out[0] = self;
    return 1;
}

static void local_fini(struct cluster *c)
{
    int r = qb_loop_poll_del(c->loop, c->efd);

    if (r < 0)
        qb_log(LOG_WARNING, "local cluster \"%s\": removing the eventfd from the loop: %s",
               c->group, strerror(-r));
    local_free(c);
}

const struct cluster_driver cluster_local = {
    .name = "local",
    .init = local_init,
    .local_nodeid = local_nodeid,
    .send = local_send,
    .nodelist = local_nodelist,
    .fini = local_fini,
};
