/* client.c - the failover NBD client of one volume (see client.h).
 *
 * State: the node serving now (`serving`) and a generation number bumped
 * at every move and every new size. A pooled connection remembers the generation it was made
 * in; one from an older generation is closed and remade to the new node
 * before use, so after a move every request goes to the new node, also
 * those whose connection to the old one still looks alive (a node that
 * answered EIO is left even though it still talks).
 *
 * A failed request moves the volume only if nobody moved it since the
 * request started (same generation), and one thread at a time probes:
 * the others wait for its result instead of piling connections on the
 * candidates. The probe tries the known current replicas (this host's
 * first, the node that failed last), then the --nodes seeds; the first
 * that negotiates the export serves, and its description replaces the
 * replica list.
 *
 * The volume's description (size, replicas) is re-read at every move and
 * by vc_refresh (vsan-fuse's watcher every few seconds, and a request
 * past the end): a resize or a replica change reaches the mount without a
 * remount. The size is atomic: every request clips against it.
 *
 * Logging goes through libqb like the rest of vsan (stderr with -f,
 * syslog once vsan-fuse is in the background), so a failover is on record
 * where the admin looks for the node's own messages.
 */
#include "fuse/client.h"
#include "fuse/conn.h"

#include <qb/qblog.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOCAL_MAX 64
/* The most one TRIM or WRITE_ZEROES asks for: well below NBD's 32-bit
 * length, block aligned. */
#define ZERO_CHUNK (1u << 30)
/* A move waits this long for one candidate before trying the next. */
#define PROBE_TIMEOUT_MS 3000
/* Pause between rounds when no candidate answered. */
#define RETRY_PAUSE_MS 200

struct slot {
    struct nbd_handle *h; /* NULL: not connected */
    uint64_t gen;         /* the generation it was connected in */
    struct vr_node node;  /* where */
    bool busy;
};

struct vclient {
    char *name;
    unsigned retry_ms, io_timeout_ms;
    struct nc_info info; /* as negotiated first; size below */
    _Atomic uint64_t size;
    struct vr_list seeds;
    char local_buf[LOCAL_MAX][INET6_ADDRSTRLEN];
    const char *local[LOCAL_MAX];
    size_t nlocal;

    /* mu guards everything below; cond is broadcast when a slot is freed
     * and when a move ends. */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct vr_list reps; /* the current replicas, in the order to try */
    struct vr_node serving;
    uint64_t gen;
    bool moving;
    unsigned failovers;
    char recovery[VC_RECOVERY_MAX]; /* the description's recovery=..., "" if none */
    unsigned nslots;
    struct slot slots[VC_CONNECTIONS_MAX];
};

enum op { OP_READ, OP_WRITE, OP_FLUSH, OP_TRIM, OP_ZERO };

struct req {
    enum op op;
    void *buf;
    uint32_t count;
    uint64_t offset;
};

static const char *op_name(enum op op)
{
    static const char *const names[] = {"read", "write", "flush", "trim", "zero"};
    return names[op];
}

/* ---- this host's addresses ------------------------------------------- */

static void find_local(struct vclient *vc)
{
    struct ifaddrs *ifa;
    if (getifaddrs(&ifa) < 0) {
        qb_log(LOG_WARNING, "vsan-fuse: getifaddrs: %s; no node counts as local", strerror(errno));
        return;
    }
    for (struct ifaddrs *i = ifa; i && vc->nlocal < LOCAL_MAX; i = i->ifa_next) {
        if (!i->ifa_addr)
            continue;
        int fam = i->ifa_addr->sa_family;
        const void *a =
            fam == AF_INET    ? (const void *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr
            : fam == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr
                              : NULL;
        char *buf = vc->local_buf[vc->nlocal];
        if (a && inet_ntop(fam, a, buf, INET6_ADDRSTRLEN)) {
            vc->local[vc->nlocal] = buf;
            vc->nlocal++;
        }
    }
    freeifaddrs(ifa);
}

/* ---- the replica list -------------------------------------------------- */

/* The replicas a description names, ordered; just `from` if it names none.
 * Keeps the copies being filled it names too (vc_status). */
static void read_replicas(struct vclient *vc, const struct vr_node *from, const char *desc,
                          struct vr_list *out)
{
    char recovery[VC_RECOVERY_MAX];
    vr_recovery(desc, recovery, sizeof recovery);
    pthread_mutex_lock(&vc->mu);
    memcpy(vc->recovery, recovery, sizeof recovery);
    pthread_mutex_unlock(&vc->mu);
    int r = vr_parse_description(desc, out);
    if (r == -EINVAL)
        qb_log(LOG_WARNING, "vsan-fuse: volume \"%s\": %s: unreadable replica list in \"%s\"",
               vc->name, from->addr, desc);
    if (r < 0) {
        out->n = 1;
        out->v[0] = *from;
    }
    vr_order(out, vc->local, vc->nlocal);
}

static int find_addr(const struct vr_list *l, const char *addr)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].addr, addr) == 0)
            return (int)i;
    return -1;
}

/* n, with its node id if the list knows its address. */
static struct vr_node identify(const struct vr_list *l, const struct vr_node *n)
{
    int i = find_addr(l, n->addr);
    return i >= 0 ? l->v[i] : *n;
}

/* Where a move looks, in order: the replicas but the one that failed, it,
 * then the seeds not listed already. */
static void candidates(const struct vclient *vc, const struct vr_node *failed, struct vr_list *out)
{
    out->n = 0;
    for (size_t i = 0; i < vc->reps.n; i++)
        if (strcmp(vc->reps.v[i].addr, failed->addr) != 0)
            out->v[out->n++] = vc->reps.v[i];
    out->v[out->n++] = *failed;
    for (size_t i = 0; i < vc->seeds.n && out->n < VR_NODES_MAX; i++)
        if (find_addr(out, vc->seeds.v[i].addr) < 0)
            out->v[out->n++] = vc->seeds.v[i];
}

/* ---- the pool ---------------------------------------------------------- */

static struct slot *slot_get(struct vclient *vc)
{
    pthread_mutex_lock(&vc->mu);
    for (;;) {
        for (unsigned i = 0; i < vc->nslots; i++) {
            if (!vc->slots[i].busy) {
                vc->slots[i].busy = true;
                pthread_mutex_unlock(&vc->mu);
                return &vc->slots[i];
            }
        }
        pthread_cond_wait(&vc->cond, &vc->mu);
    }
}

static void slot_put(struct vclient *vc, struct slot *s)
{
    pthread_mutex_lock(&vc->mu);
    s->busy = false;
    pthread_cond_broadcast(&vc->cond);
    pthread_mutex_unlock(&vc->mu);
}

static void slot_drop(struct slot *s)
{
    if (s->h)
        nbd_close(s->h);
    s->h = NULL;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Makes s a connection to the serving node of this generation. */
static int slot_connect(struct vclient *vc, struct slot *s, int64_t deadline)
{
    pthread_mutex_lock(&vc->mu);
    uint64_t gen = vc->gen;
    struct vr_node node = vc->serving;
    pthread_mutex_unlock(&vc->mu);
    if (s->h && s->gen == gen)
        return 0;
    slot_drop(s);
    s->gen = gen;
    s->node = node;
    char err[256];
    int r = nc_connect(&node, vc->name, min64(deadline, nc_now_ms() + PROBE_TIMEOUT_MS), &s->h,
                       NULL, err, sizeof err);
    if (r < 0) {
        qb_log(LOG_INFO, "vsan-fuse: volume \"%s\": node %u (%s): %s", vc->name, node.id, node.addr,
               err);
        return nc_failover_error(r) ? r : -ENOTCONN;
    }
    return 0;
}

/* ---- moving to another node --------------------------------------------- */

/* An NBD connection keeps the size it negotiated (vsand refuses a request
 * past it), so a new size makes the pooled connections remade, as a move
 * does, before their next request. */
static void set_size(struct vclient *vc, uint64_t size)
{
    uint64_t was = atomic_exchange(&vc->size, size);
    if (was == size)
        return;
    pthread_mutex_lock(&vc->mu);
    vc->gen++;
    pthread_cond_broadcast(&vc->cond);
    pthread_mutex_unlock(&vc->mu);
    qb_log(LOG_NOTICE, "vsan-fuse: volume \"%s\": its size is %llu bytes now (was %llu)", vc->name,
           (unsigned long long)size, (unsigned long long)was);
}

/* Probes the candidates; fills *to, *fresh, and the size. -EHOSTUNREACH if
 * none answered. */
static int probe(struct vclient *vc, const struct vr_list *cand, int64_t deadline,
                 struct vr_node *to, struct vr_list *fresh)
{
    for (size_t i = 0; i < cand->n && nc_now_ms() < deadline; i++) {
        struct nbd_handle *h;
        struct nc_info info;
        char err[256];
        int r = nc_connect(&cand->v[i], vc->name, min64(deadline, nc_now_ms() + PROBE_TIMEOUT_MS),
                           &h, &info, err, sizeof err);
        if (r < 0) {
            qb_log(LOG_INFO, "vsan-fuse: volume \"%s\": node %u (%s): %s", vc->name, cand->v[i].id,
                   cand->v[i].addr, err);
            continue;
        }
        nbd_close(h);
        read_replicas(vc, &cand->v[i], info.description, fresh);
        *to = identify(fresh, &cand->v[i]);
        set_size(vc, info.size);
        return 0;
    }
    return -EHOSTUNREACH;
}

/* The request that saw err on node `failed` in generation gen moves the
 * volume, unless another thread did already. */
static void move(struct vclient *vc, uint64_t gen, const struct vr_node *failed, int err,
                 int64_t deadline)
{
    pthread_mutex_lock(&vc->mu);
    while (vc->moving && vc->gen == gen)
        pthread_cond_wait(&vc->cond, &vc->mu);
    if (vc->gen != gen) {
        pthread_mutex_unlock(&vc->mu);
        return;
    }
    vc->moving = true;
    struct vr_list cand;
    candidates(vc, failed, &cand);
    pthread_mutex_unlock(&vc->mu);

    struct vr_node to;
    struct vr_list fresh;
    int r = probe(vc, &cand, deadline, &to, &fresh);

    pthread_mutex_lock(&vc->mu);
    vc->moving = false;
    if (r == 0) {
        vc->reps = fresh;
        vc->serving = to;
        vc->gen++;
        vc->failovers++;
    }
    pthread_cond_broadcast(&vc->cond);
    pthread_mutex_unlock(&vc->mu);
    if (r == 0)
        qb_log(LOG_WARNING,
               "vsan-fuse: volume \"%s\": node %u (%s) failed (%s); now served by node %u (%s)",
               vc->name, failed->id, failed->addr, strerror(-err), to.id, to.addr);
    else
        qb_log(LOG_WARNING,
               "vsan-fuse: volume \"%s\": node %u (%s) failed (%s); no replica answers yet",
               vc->name, failed->id, failed->addr, strerror(-err));
}

int vc_refresh(struct vclient *vc)
{
    pthread_mutex_lock(&vc->mu);
    struct vr_node node = vc->serving;
    uint64_t gen = vc->gen;
    pthread_mutex_unlock(&vc->mu);
    struct nbd_handle *h;
    struct nc_info info;
    char err[256];
    int r =
        nc_connect(&node, vc->name, nc_now_ms() + vc->io_timeout_ms, &h, &info, err, sizeof err);
    if (r < 0) {
        qb_log(LOG_INFO, "vsan-fuse: volume \"%s\": node %u (%s): description not re-read: %s",
               vc->name, node.id, node.addr, err);
        return r;
    }
    nbd_close(h);
    struct vr_list fresh;
    read_replicas(vc, &node, info.description, &fresh);
    pthread_mutex_lock(&vc->mu);
    if (vc->gen == gen) /* a move re-read it meanwhile, perhaps from newer news */
        vc->reps = fresh;
    pthread_mutex_unlock(&vc->mu);
    set_size(vc, info.size);
    return 0;
}

/* ---- requests ------------------------------------------------------------ */

static int64_t issue(struct nbd_handle *h, const struct req *q)
{
    nbd_completion_callback none = NBD_NULL_COMPLETION;
    switch (q->op) {
    case OP_READ:
        return nbd_aio_pread(h, q->buf, q->count, q->offset, none, 0);
    case OP_WRITE:
        return nbd_aio_pwrite(h, q->buf, q->count, q->offset, none, 0);
    case OP_FLUSH:
        return nbd_aio_flush(h, none, 0);
    case OP_TRIM:
        return nbd_aio_trim(h, q->count, q->offset, none, 0);
    case OP_ZERO:
        return nbd_aio_zero(h, q->count, q->offset, none, 0);
    }
    return -1;
}

/* One attempt on s: -ENOTCONN/-ETIMEDOUT if the connection is lost (and
 * dropped), the server's error otherwise. */
static int attempt(struct vclient *vc, struct slot *s, const struct req *q, int64_t deadline)
{
    int r = slot_connect(vc, s, deadline);
    if (r == 0)
        r = nc_wait(s->h, issue(s->h, q), min64(deadline, nc_now_ms() + vc->io_timeout_ms));
    if (r == -ENOTCONN || r == -ETIMEDOUT)
        slot_drop(s);
    return r;
}

static void pause_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Runs q until it succeeds, fails for a reason another node would not
 * change, or the retry time is up (-EIO). */
static int run(struct vclient *vc, const struct req *q)
{
    int64_t deadline = nc_now_ms() + vc->retry_ms;
    for (;;) {
        struct slot *s = slot_get(vc);
        int r = attempt(vc, s, q, deadline);
        uint64_t gen = s->gen;
        struct vr_node node = s->node;
        slot_put(vc, s);
        if (r == 0 || !nc_failover_error(r))
            return r;
        if (nc_now_ms() >= deadline) {
            qb_log(LOG_ERR,
                   "vsan-fuse: volume \"%s\": %s of %u bytes at %llu: no replica answered "
                   "within %u ms (last: node %u, %s)",
                   vc->name, op_name(q->op), q->count, (unsigned long long)q->offset, vc->retry_ms,
                   node.id, strerror(-r));
            return -EIO;
        }
        move(vc, gen, &node, r, deadline);
        pthread_mutex_lock(&vc->mu);
        bool stuck = vc->gen == gen;
        pthread_mutex_unlock(&vc->mu);
        if (stuck)
            pause_ms(min64(RETRY_PAUSE_MS, deadline - nc_now_ms()));
    }
}

/* Splits [offset, offset+count) into requests of at most max bytes. */
static int run_split(struct vclient *vc, enum op op, char *buf, uint64_t count, uint64_t offset,
                     uint32_t max)
{
    while (count > 0) {
        uint32_t n = count < max ? (uint32_t)count : max;
        struct req q = {.op = op, .buf = buf, .count = n, .offset = offset};
        int r = run(vc, &q);
        if (r < 0)
            return r;
        if (buf)
            buf += n;
        count -= n;
        offset += n;
    }
    return 0;
}

int vc_pread(struct vclient *vc, void *buf, uint32_t count, uint64_t offset)
{
    return run_split(vc, OP_READ, buf, count, offset, vc->info.max_request);
}

int vc_pwrite(struct vclient *vc, const void *buf, uint32_t count, uint64_t offset)
{
    return run_split(vc, OP_WRITE, (char *)buf, count, offset, vc->info.max_request);
}

int vc_flush(struct vclient *vc)
{
    if (!vc->info.can_flush)
        return 0;
    struct req q = {.op = OP_FLUSH};
    return run(vc, &q);
}

int vc_trim(struct vclient *vc, uint64_t count, uint64_t offset)
{
    if (!vc->info.can_trim)
        return -EOPNOTSUPP;
    return run_split(vc, OP_TRIM, NULL, count, offset, ZERO_CHUNK);
}

int vc_zero(struct vclient *vc, uint64_t count, uint64_t offset)
{
    if (!vc->info.can_zero)
        return -EOPNOTSUPP;
    return run_split(vc, OP_ZERO, NULL, count, offset, ZERO_CHUNK);
}

/* ---- open, close, status ---------------------------------------------------- */

static void append(char *err, size_t errlen, const char *addr, const char *why)
{
    size_t used = strlen(err);
    snprintf(err + used, errlen - used, "%s%s: %s", used ? "; " : "", addr, why);
}

/* Asks the seeds in order; the first that negotiates the export says what
 * it is and where its replicas are. */
static int first_answer(struct vclient *vc, char *err, size_t errlen)
{
    struct vr_list order = vc->seeds;
    vr_order(&order, vc->local, vc->nlocal);
    int result = -ENOENT;
    err[0] = '\0';
    for (size_t i = 0; i < order.n; i++) {
        struct nbd_handle *h;
        char why[256];
        int r = nc_connect(&order.v[i], vc->name, nc_now_ms() + vc->io_timeout_ms, &h, &vc->info,
                           why, sizeof why);
        if (r < 0) {
            append(err, errlen, order.v[i].addr, why);
            if (r != -ENOENT)
                result = r;
            continue;
        }
        nbd_close(h);
        read_replicas(vc, &order.v[i], vc->info.description, &vc->reps);
        /* This host's replica if it has one, else the node that answered. */
        bool local = vr_is_local(&vc->reps.v[0], vc->local, vc->nlocal);
        vc->serving = local ? vc->reps.v[0] : identify(&vc->reps, &order.v[i]);
        return 0;
    }
    return result;
}

static void vc_free(struct vclient *vc)
{
    pthread_mutex_destroy(&vc->mu);
    pthread_cond_destroy(&vc->cond);
    free(vc->name);
    free(vc);
}

int vc_open(const struct vc_params *p, struct vclient **out, char *err, size_t errlen)
{
    struct vclient *vc = calloc(1, sizeof *vc);
    if (!vc) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    vc->name = strdup(p->volume);
    vc->retry_ms = p->retry_ms;
    vc->io_timeout_ms = p->io_timeout_ms;
    vc->seeds = *p->seeds;
    pthread_mutex_init(&vc->mu, NULL);
    pthread_cond_init(&vc->cond, NULL);
    if (!vc->name) {
        vc_free(vc);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    find_local(vc);
    int r = first_answer(vc, err, errlen);
    if (r < 0) {
        vc_free(vc);
        return r;
    }
    atomic_store(&vc->size, vc->info.size);
    vc->nslots = vc->info.multi_conn ? p->connections : 1;
    if (vc->nslots < 1 || vc->nslots > VC_CONNECTIONS_MAX)
        vc->nslots = vc->nslots < 1 ? 1 : VC_CONNECTIONS_MAX;
    *out = vc;
    return 0;
}

void vc_close(struct vclient *vc)
{
    if (!vc)
        return;
    for (unsigned i = 0; i < vc->nslots; i++)
        slot_drop(&vc->slots[i]);
    vc_free(vc);
}

uint64_t vc_size(struct vclient *vc)
{
    return atomic_load(&vc->size);
}

const char *vc_name(const struct vclient *vc)
{
    return vc->name;
}

void vc_status(struct vclient *vc, struct vc_status *st)
{
    pthread_mutex_lock(&vc->mu);
    st->node = vc->serving.id;
    snprintf(st->addr, sizeof st->addr, "%s", vc->serving.addr);
    st->failovers = vc->failovers;
    st->replicas = vc->reps;
    memcpy(st->recovery, vc->recovery, sizeof st->recovery);
    pthread_mutex_unlock(&vc->mu);
}
