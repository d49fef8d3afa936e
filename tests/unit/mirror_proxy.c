/* mirror_proxy.c - a per-client switchable TCP proxy for mirror links (see
 * mirror_proxy.h). One thread accepts; each connection has a thread that
 * reads the client's HELLO, connects to the target and pumps both ways,
 * looking at its client's mode every 50 ms and at every read. */
#include "tests/unit/mirror_proxy.h"

#include "common/netaddr.h"
#include "mirror/wire.h"
#include "policing/cluster.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 50

/* What the server says before the link is up: CHALLENGE and WELCOME. */
#define HANDSHAKE_REPLY (2 * sizeof(struct mwire_header) + sizeof(struct mw_challenge))
/* How long after the WELCOME went through a link counts as up: the client
 * needs a moment to read it (mproxy_linked). */
#define SETTLE_MS 20

struct pconn {
    struct mproxy *p;
    int cfd;
    uint32_t client;       /* under p->mu */
    struct timespec up_at; /* when the WELCOME went through; under p->mu */
    bool up;
    pthread_t thread;
    atomic_bool done;
    struct pconn *next;
};

struct mproxy {
    char target[128];
    int lfd;
    atomic_bool stop;
    pthread_t acceptor;
    pthread_mutex_t mu; /* guards mode and conns */
    enum mproxy_mode mode[CLUSTER_NODES_MAX + 1];
    struct pconn *conns;
};

static enum mproxy_mode mode_of(struct mproxy *p, uint32_t client)
{
    if (client > CLUSTER_NODES_MAX)
        return MPROXY_REFUSE;
    pthread_mutex_lock(&p->mu);
    enum mproxy_mode m = p->mode[client];
    pthread_mutex_unlock(&p->mu);
    return m;
}

/* Waits up to a tick for fd to be readable: 1, 0 (not yet), -1 (stop). */
static int readable(struct mproxy *p, int fd)
{
    if (atomic_load(&p->stop))
        return -1;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int r = poll(&pfd, 1, TICK_MS);
    return r < 0 && errno != EINTR ? -1 : r > 0;
}

static int read_full(struct mproxy *p, int fd, void *buf, size_t len)
{
    for (size_t got = 0; got < len;) {
        int r = readable(p, fd);
        if (r < 0)
            return -1;
        if (r == 0)
            continue;
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
    for (size_t done = 0; done < len;) {
        ssize_t n = send(fd, (const char *)buf + done, len - done, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

/* Moves what from has to to (or nowhere, held), counting into *moved;
 * false at its end. */
static bool pump(int from, int to, bool held, size_t *moved)
{
    char buf[64 * 1024];
    ssize_t n = read(from, buf, sizeof buf);
    if (n <= 0)
        return false;
    if (held)
        return true;
    *moved += (size_t)n;
    return write_full(to, buf, (size_t)n) == 0;
}

static void note_up(struct pconn *c)
{
    pthread_mutex_lock(&c->p->mu);
    c->up = true;
    clock_gettime(CLOCK_MONOTONIC, &c->up_at);
    pthread_mutex_unlock(&c->p->mu);
}

/* The client's HELLO: who it is. 0 on success. */
static int read_hello(struct mproxy *p, int fd, struct mwire_header *h, struct mw_hello *hello)
{
    if (read_full(p, fd, h, sizeof *h) < 0 || h->type != MW_HELLO || h->payload != sizeof *hello)
        return -1;
    return read_full(p, fd, hello, sizeof *hello);
}

static void serve(struct pconn *c)
{
    struct mproxy *p = c->p;
    struct mwire_header h;
    struct mw_hello hello;
    if (read_hello(p, c->cfd, &h, &hello) < 0 || mode_of(p, hello.nodeid) == MPROXY_REFUSE)
        return;
    pthread_mutex_lock(&p->mu);
    c->client = hello.nodeid;
    pthread_mutex_unlock(&p->mu);
    int sfd = netaddr_connect(p->target, 2000, "test proxy");
    if (sfd < 0)
        return;
    size_t to_client = 0, ignored = 0;
    bool ok = write_full(sfd, &h, sizeof h) == 0 && write_full(sfd, &hello, sizeof hello) == 0;
    while (ok && !atomic_load(&p->stop)) {
        enum mproxy_mode m = mode_of(p, hello.nodeid);
        if (m == MPROXY_REFUSE)
            break;
        struct pollfd pfd[2] = {{.fd = c->cfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        int r = poll(pfd, 2, TICK_MS);
        if (r < 0 && errno != EINTR)
            break;
        if (r <= 0)
            continue;
        /* The mode again: what was read after a change obeys it. */
        m = mode_of(p, hello.nodeid);
        if (m == MPROXY_REFUSE)
            break;
        if (pfd[0].revents)
            ok = pump(c->cfd, sfd, m == MPROXY_HOLD, &ignored);
        if (ok && pfd[1].revents) {
            bool was = to_client >= HANDSHAKE_REPLY;
            ok = pump(sfd, c->cfd, m == MPROXY_HOLD || m == MPROXY_DEAF, &to_client);
            if (!was && to_client >= HANDSHAKE_REPLY)
                note_up(c);
        }
    }
    close(sfd);
}

static void *conn_main(void *arg)
{
    struct pconn *c = arg;
    serve(c);
    /* Under mu: mproxy_set never shuts down a number reused since. */
    pthread_mutex_lock(&c->p->mu);
    close(c->cfd);
    c->cfd = -1;
    pthread_mutex_unlock(&c->p->mu);
    atomic_store(&c->done, true);
    return NULL;
}

/* Joins the connections that ended (all of them when stopping). */
static void reap(struct mproxy *p, bool all)
{
    pthread_mutex_lock(&p->mu);
    for (struct pconn **pp = &p->conns; *pp;) {
        struct pconn *c = *pp;
        if (!all && !atomic_load(&c->done)) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        pthread_mutex_unlock(&p->mu);
        pthread_join(c->thread, NULL);
        free(c);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
}

static void *accept_main(void *arg)
{
    struct mproxy *p = arg;
    for (int r; (r = readable(p, p->lfd)) >= 0;) {
        reap(p, false);
        int fd = r > 0 ? accept(p->lfd, NULL, NULL) : -1;
        if (fd < 0)
            continue;
        struct pconn *c = calloc(1, sizeof *c);
        if (!c || (c->p = p, c->cfd = fd, pthread_create(&c->thread, NULL, conn_main, c) != 0)) {
            close(fd);
            free(c);
            continue;
        }
        pthread_mutex_lock(&p->mu);
        c->next = p->conns;
        p->conns = c;
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

int mproxy_start(const char *target, char *addr, size_t len, struct mproxy **out)
{
    struct mproxy *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    snprintf(p->target, sizeof p->target, "%s", target);
    pthread_mutex_init(&p->mu, NULL);
    p->lfd = netaddr_listen("127.0.0.1:0", 64, "test proxy");
    int r = p->lfd < 0 ? p->lfd : 0;
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    if (r == 0 && getsockname(p->lfd, (struct sockaddr *)&sa, &sl) < 0)
        r = -errno;
    if (r == 0)
        snprintf(addr, len, "127.0.0.1:%u", ntohs(sa.sin_port));
    if (r == 0)
        r = -pthread_create(&p->acceptor, NULL, accept_main, p);
    if (r < 0) {
        if (p->lfd >= 0)
            close(p->lfd);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return r;
    }
    *out = p;
    return 0;
}

void mproxy_set(struct mproxy *p, uint32_t client, enum mproxy_mode mode)
{
    if (client > CLUSTER_NODES_MAX)
        return;
    pthread_mutex_lock(&p->mu);
    p->mode[client] = mode;
    /* Cut now, not at the next tick: the client sees its link go at once. */
    for (struct pconn *c = p->conns; c && mode == MPROXY_REFUSE; c = c->next)
        if (c->client == client && c->cfd >= 0)
            shutdown(c->cfd, SHUT_RDWR);
    pthread_mutex_unlock(&p->mu);
}

static long ms_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

bool mproxy_linked(struct mproxy *p, uint32_t client)
{
    bool linked = false;
    pthread_mutex_lock(&p->mu);
    for (struct pconn *c = p->conns; c && !linked; c = c->next)
        linked = !atomic_load(&c->done) && c->up && c->client == client &&
                 ms_since(&c->up_at) >= SETTLE_MS;
    pthread_mutex_unlock(&p->mu);
    return linked;
}

void mproxy_stop(struct mproxy *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, true);
    pthread_join(p->acceptor, NULL);
    reap(p, true);
    close(p->lfd);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
