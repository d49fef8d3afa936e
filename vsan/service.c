/* service.c - adds, announces and gives up service addresses (service.h). */
#include "vsan/service.h"

#include "nbd-server/server.h"
#include "vsan/netif.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>

struct held {
    uint32_t owner;
    char addr[SVC_ADDR_MAX]; /* "A.B.C.D/P" */
    char host[INET_ADDRSTRLEN];
    char listen[INET_ADDRSTRLEN + 8]; /* "A.B.C.D:PORT", "" if not listening */
    struct in_addr in;
    unsigned prefix;
};

enum job_kind {
    JOB_ANNOUNCE, /* the next gratuitous ARP of an address taken */
    JOB_RELEASE,  /* the end of an address given up: cut its clients, remove it */
};

struct job {
    struct service *s;
    qb_loop_timer_handle timer;
    enum job_kind kind;
    struct held h;
    unsigned next; /* JOB_ANNOUNCE: the index in announce_at of this one */
    struct job *prev, *next_job;
};

struct service {
    struct service_params p;
    char interface[IF_NAMESIZE];
    char port[8];
    struct held held[CLUSTER_NODES_MAX];
    size_t nheld;
    struct job *jobs;
    bool closed; /* stopping: holds nothing more */
};

/* When each announcement goes, in ms after the address was added. */
static const unsigned announce_at[] = {0, 300, 1000};
#define ANNOUNCEMENTS (sizeof announce_at / sizeof announce_at[0])

/* How long an address given up stays while its clients are told to go:
 * long enough for the ESHUTDOWN replies (and the FIN of idle connections)
 * to leave from it, short enough that two hosts answer for it only
 * briefly. */
#define RELEASE_MS_MAX 1000

static void job_unlink(struct job *j)
{
    if (j->prev)
        j->prev->next_job = j->next_job;
    else
        j->s->jobs = j->next_job;
    if (j->next_job)
        j->next_job->prev = j->prev;
}

static void job_fire(void *data);

static int job_arm(struct job *j, unsigned ms)
{
    int r = qb_loop_timer_add(j->s->p.loop, QB_LOOP_MED, (uint64_t)ms * 1000000ull, j, job_fire,
                              &j->timer);
    if (r < 0)
        qb_log(LOG_ERR, "service %s: timer: %s", j->h.addr, strerror(-r));
    return r;
}

static int job_start(struct service *s, enum job_kind kind, const struct held *h, unsigned ms)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    *j = (struct job){.s = s, .kind = kind, .h = *h, .next = 1};
    int r = job_arm(j, ms);
    if (r < 0) {
        free(j);
        return r;
    }
    j->next_job = s->jobs;
    if (s->jobs)
        s->jobs->prev = j;
    s->jobs = j;
    return 0;
}

static void job_cancel(struct job *j)
{
    qb_loop_timer_del(j->s->p.loop, j->timer);
    job_unlink(j);
    free(j);
}

static void announce(struct service *s, const struct held *h)
{
    int r = netif_announce(s->interface, h->in);
    if (r < 0)
        qb_log(LOG_WARNING, "service %s: gratuitous ARP on %s: %s", h->addr, s->interface,
               strerror(-r));
}

static bool holding_in(const struct service *s, struct in_addr in)
{
    for (size_t i = 0; i < s->nheld; i++)
        if (s->held[i].in.s_addr == in.s_addr)
            return true;
    return false;
}

/* The last step of giving h up. An address taken again meanwhile stays. */
static void release(struct service *s, const struct held *h)
{
    nbd_server_drop_connections(s->p.nbd, h->host);
    if (holding_in(s, h->in))
        return;
    int r = netif_addr_del(s->interface, h->in, h->prefix);
    if (r < 0)
        qb_log(LOG_ERR, "service %s of node %u: removing it from %s: %s", h->addr, h->owner,
               s->interface, strerror(-r));
    else
        qb_log(LOG_INFO, "service %s of node %u: removed from %s", h->addr, h->owner, s->interface);
}

static void job_fire(void *data)
{
    struct job *j = data;
    struct service *s = j->s;
    if (j->kind == JOB_RELEASE) {
        release(s, &j->h);
    } else {
        announce(s, &j->h);
        if (++j->next < ANNOUNCEMENTS &&
            job_arm(j, announce_at[j->next] - announce_at[j->next - 1]) == 0)
            return;
    }
    job_unlink(j);
    free(j);
}

static int take(struct service *s, uint32_t owner, const char *addr)
{
    struct held h = {.owner = owner};
    memcpy(h.addr, addr, sizeof h.addr);
    if (svc_addr_parse(addr, &h.in, &h.prefix) < 0 ||
        !inet_ntop(AF_INET, &h.in, h.host, sizeof h.host))
        return -EINVAL;
    if (s->interface[0] == '\0') {
        qb_log(LOG_ERR, "service %s of node %u: this node has no [node] service_interface", addr,
               owner);
        return -ENODEV;
    }
    int r = netif_addr_add(s->interface, h.in, h.prefix);
    if (r < 0) {
        qb_log(LOG_ERR, "service %s of node %u: adding it to %s: %s", addr, owner, s->interface,
               strerror(-r));
        return r;
    }
    announce(s, &h);
    if (job_start(s, JOB_ANNOUNCE, &h, announce_at[1]) < 0)
        qb_log(LOG_WARNING, "service %s: announced once only", addr);
    snprintf(h.listen, sizeof h.listen, "%s:%s", h.host, s->port);
    if (nbd_server_listen(s->p.nbd, h.listen) < 0)
        h.listen[0] = '\0'; /* the server logged why; a wildcard listener may serve it */
    s->held[s->nheld++] = h;
    qb_log(LOG_INFO, "service %s of node %u: taken on %s", addr, owner, s->interface);
    return 0;
}

/* Announcements still to come for an address given up would point the
 * neighbours back at this host, away from the new holder. */
static void cancel_announcements(struct service *s, struct in_addr in)
{
    for (struct job *j = s->jobs, *next; j; j = next) {
        next = j->next_job;
        if (j->kind == JOB_ANNOUNCE && j->h.in.s_addr == in.s_addr)
            job_cancel(j);
    }
}

/* No new clients; those connected get ESHUTDOWN on their next request
 * and close; the address goes once they had the time to hear it (at once
 * when there are none), so that those replies can still leave from it. */
static void give_up(struct service *s, size_t i)
{
    struct held h = s->held[i];
    s->held[i] = s->held[--s->nheld];
    cancel_announcements(s, h.in);
    if (s->closed) { /* the NBD server has shut down: nothing to tell anyone */
        qb_log(LOG_INFO, "service %s of node %u: given up", h.addr, h.owner);
        release(s, &h);
        return;
    }
    if (h.listen[0] && nbd_server_unlisten(s->p.nbd, h.listen) < 0)
        qb_log(LOG_WARNING, "service %s: no listener on %s", h.addr, h.listen);
    unsigned ending = nbd_server_end_connections(s->p.nbd, h.host);
    unsigned ms = s->p.grace_ms < RELEASE_MS_MAX ? s->p.grace_ms : RELEASE_MS_MAX;
    qb_log(LOG_INFO, "service %s of node %u: given up", h.addr, h.owner);
    if (ending == 0 || job_start(s, JOB_RELEASE, &h, ms) < 0)
        release(s, &h);
}

static bool wanted(const struct svc_hold *want, size_t n, const struct held *h)
{
    for (size_t i = 0; i < n; i++)
        if (want[i].owner == h->owner && strcmp(want[i].addr, h->addr) == 0)
            return true;
    return false;
}

static bool holding(const struct service *s, const struct svc_hold *w)
{
    for (size_t i = 0; i < s->nheld; i++)
        if (s->held[i].owner == w->owner && strcmp(s->held[i].addr, w->addr) == 0)
            return true;
    return false;
}

static void hold(void *ctx, const struct svc_hold *want, size_t n)
{
    struct service *s = ctx;
    if (s->closed)
        n = 0;
    for (size_t i = 0; i < s->nheld;)
        if (!wanted(want, n, &s->held[i]))
            give_up(s, i);
        else
            i++;
    for (size_t i = 0; i < n && s->nheld < CLUSTER_NODES_MAX; i++)
        if (!holding(s, &want[i]))
            take(s, want[i].owner, want[i].addr);
}

const struct policing_service_ops service_ops = {.hold = hold};

/* What a vsand killed outright left on the interface: every address it
 * held (they carry netif's mark), and this node's own address, which
 * the cluster gives back once this node is current. */
static void remove_stale(struct service *s, const char *own)
{
    if (s->interface[0] == '\0')
        return;
    int r = netif_addr_del_marked(s->interface);
    if (r < 0)
        qb_log(LOG_WARNING, "service: removing the addresses an earlier vsand left on %s: %s",
               s->interface, strerror(-r));
    else if (r > 0)
        qb_log(LOG_INFO, "service: removed %d address(es) an earlier vsand left on %s", r,
               s->interface);
    struct in_addr in;
    unsigned prefix;
    if (own[0] == '\0' || svc_addr_parse(own, &in, &prefix) < 0)
        return;
    r = netif_addr_del(s->interface, in, prefix);
    if (r < 0)
        qb_log(LOG_WARNING, "service %s: removing it from %s until the cluster gives it back: %s",
               own, s->interface, strerror(-r));
}

int service_new(const struct service_params *p, struct service **out)
{
    struct service *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->p = *p;
    if (snprintf(s->interface, sizeof s->interface, "%s", p->interface) >=
            (int)sizeof s->interface ||
        snprintf(s->port, sizeof s->port, "%s", p->port) >= (int)sizeof s->port) {
        free(s);
        return -ENAMETOOLONG;
    }
    s->p.interface = s->interface;
    s->p.port = s->port;
    s->p.own = NULL;
    remove_stale(s, p->own);
    *out = s;
    return 0;
}

void service_close(struct service *s)
{
    if (!s)
        return;
    s->closed = true;
    hold(s, NULL, 0);
    while (s->jobs) {
        struct job *j = s->jobs;
        if (j->kind == JOB_RELEASE)
            release(s, &j->h);
        job_cancel(j);
    }
}

void service_free(struct service *s)
{
    free(s);
}
