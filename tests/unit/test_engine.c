/* test_engine.c - the mirror engine between real nodes in one process: each
 * node has its own pool (a temporary data dir), volume layer, policing
 * instance and engine, joined by an in-process cluster (fake_cluster.h) and
 * by real mirror links over 127.0.0.1 with a shared secret, each link
 * through a proxy (mirror_proxy.h) the test uses to refuse or hold one
 * node's traffic to another. Every test checks the bytes in the nodes' data
 * files and the replica states in their records: fan-out before the ack,
 * outdating by an agreed message and the resync of only the dirty regions,
 * the reconcile of a region a departed writer left unequal, resize with an
 * outdated peer, and a delete while a resync runs. */
#include "tests/unit/fake_cluster.h"
#include "common/clock.h"
#include "tests/unit/mirror_proxy.h"

#include "mirror/engine.h"
/* The snapshot tests reach a node's svol through its mvol, to cut
 * snapshots as the cluster's cut will, and read them here. */
#include "mirror/engine_int.h"
#include "mirror/replicas.h"
#include "policing/protocol.h"
#include "store/store.h"
#include "store/svol.h"
#include "volume/volume.h"
#include "volume/voltable.h"

#include <criterion/criterion.h>
#include <qb/qblog.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define RS (64 * KiB) /* region size */
#define VOL "vol"
#define NODES_MAX 3
#define WAIT_MS 10000

/* ---- log capture ----------------------------------------------------------- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char logbuf[1 << 20];
static size_t logused;

static void capture(int32_t t, struct qb_log_callsite *cs, struct timespec *ts, const char *msg)
{
    (void)t;
    (void)cs;
    (void)ts;
    pthread_mutex_lock(&log_mu);
    int n = snprintf(logbuf + logused, sizeof logbuf - logused, "%s\n", msg);
    if (n > 0 && (size_t)n < sizeof logbuf - logused)
        logused += (size_t)n;
    pthread_mutex_unlock(&log_mu);
}

static bool log_has(const char *what)
{
    pthread_mutex_lock(&log_mu);
    bool has = strstr(logbuf, what) != NULL;
    pthread_mutex_unlock(&log_mu);
    return has;
}

/* ---- waiting with a deadline ------------------------------------------------- */

static struct timespec deadline_in(unsigned ms)
{
    return clock_after_ms(ms);
}

static bool past(const struct timespec *d)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > d->tv_sec || (now.tv_sec == d->tv_sec && now.tv_nsec >= d->tv_nsec);
}

static double ms_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) * 1e3 + (double)(now.tv_nsec - t->tv_nsec) / 1e6;
}

/* Polls cond every 10 ms until it holds; fails the test at the deadline. */
#define WAIT_FOR(cond, ...)                                                                        \
    do {                                                                                           \
        struct timespec wait_deadline_ = deadline_in(WAIT_MS);                                     \
        while (!(cond)) {                                                                          \
            if (past(&wait_deadline_))                                                             \
                cr_assert_fail(__VA_ARGS__);                                                       \
            poll(NULL, 0, 10);                                                                     \
        }                                                                                          \
    } while (0)

/* ---- nodes -------------------------------------------------------------------- */

struct node {
    uint32_t id;
    bool up;
    bool member; /* in the group */
    char dir[64];
    struct store *store;
    struct volumes *vols;
    struct voltable table;
    struct policing *pc;
    struct mirror *m;
    struct mproxy *proxy;
    char listen[64], announce[64];
};

static struct node nodes[NODES_MAX + 1]; /* by node id */
static char vol_uuid[STORE_UUID_LEN + 1];
static uint32_t vid;

static const struct mauth_secret secret = {.key = "engine-test-secret-of-32-bytes!!", .len = 32};

static void free_port(char *addr, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sl), 0, "bind: %s", strerror(errno));
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    snprintf(addr, len, "127.0.0.1:%u", ntohs(sa.sin_port));
    close(fd);
}

/* Starts node id, as vsand does: pool, volumes, policing, engine; it
 * delivers once all is wired (vsand's loop runs last). */
static void node_start(uint32_t id, uint64_t resync_rate)
{
    struct node *n = &nodes[id];
    *n = (struct node){.id = id};
    snprintf(n->dir, sizeof n->dir, "/tmp/vsan-test-engine.XXXXXX");
    cr_assert_not_null(mkdtemp(n->dir), "mkdtemp: %s", strerror(errno));
    int r = store_open(n->dir, &n->store);
    cr_assert_eq(r, 0, "node %u: store_open: %s", id, strerror(-r));
    r = volumes_open(n->store, &n->vols);
    cr_assert_eq(r, 0, "node %u: volumes_open: %s", id, strerror(-r));
    free_port(n->listen, sizeof n->listen);
    r = mproxy_start(n->listen, n->announce, sizeof n->announce, &n->proxy);
    cr_assert_eq(r, 0, "node %u: proxy: %s", id, strerror(-r));
    n->table = (struct voltable){.store = n->store, .vols = n->vols};
    char name[16];
    snprintf(name, sizeof name, "node%u", id);
    struct policing_params pp = {
        .driver = &fake_cluster,
        .group = "engine-test",
        .region_size = RS,
        .name = name,
        .nbd = "127.0.0.1:1",
        .mirror = n->announce,
        .service = "",
        .table = &voltable_ops,
        .table_ctx = &n->table,
    };
    fcl_expect(id);
    r = policing_start(&pp, &n->pc);
    cr_assert_eq(r, 0, "node %u: policing_start: %s", id, strerror(-r));
    volumes_set_policing(n->vols, n->pc);
    struct mirror_params mp = {
        .pc = n->pc,
        .store = n->store,
        .listen = n->listen,
        .cluster = "engine-test",
        .secret = &secret,
        .timeout_ms = 3000,
        .resync_rate = resync_rate,
    };
    r = mirror_start(&mp, &n->m);
    cr_assert_eq(r, 0, "node %u: mirror_start: %s", id, strerror(-r));
    r = volumes_set_mirror(n->vols, n->m);
    cr_assert_eq(r, 0, "node %u: volumes_set_mirror: %s", id, strerror(-r));
    n->table.mirror = n->m;
    n->up = n->member = true;
    fcl_resume(id);
}

static void nothing(void *arg)
{
    (void)arg;
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

/* Stops node id as vsand does, once it is out of the group (so no agreed
 * change reaches its engine while it stops). */
static void node_stop(uint32_t id)
{
    struct node *n = &nodes[id];
    if (!n->up)
        return;
    n->up = n->member = false;
    fcl_leave(id, CLUSTER_LEFT);
    fcl_call(id, nothing, NULL); /* what it was delivering is done */
    policing_close_writes(n->pc);
    mirror_stop(n->m);
    n->table.mirror = NULL;
    policing_stop(n->pc);
    volumes_close(n->vols);
    store_close(n->store);
    mproxy_stop(n->proxy);
    nftw(n->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- fixture ------------------------------------------------------------------ */

static void setup(void)
{
    logused = 0;
    logbuf[0] = '\0';
    qb_log_init("test_engine", LOG_USER, LOG_DEBUG);
    qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
    int32_t t = qb_log_custom_open(capture, NULL, NULL, NULL);
    cr_assert_geq(t, 0);
    cr_assert_eq(qb_log_filter_ctl(t, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*", LOG_INFO), 0);
    cr_assert_eq(qb_log_ctl(t, QB_LOG_CONF_ENABLED, QB_TRUE), 0);
    if (getenv("ENGINE_TEST_LOG")) {
        qb_log_filter_ctl(QB_LOG_STDERR, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*", LOG_INFO);
        qb_log_ctl(QB_LOG_STDERR, QB_LOG_CONF_ENABLED, QB_TRUE);
    }
}

static void stop_all(void)
{
    for (uint32_t id = NODES_MAX; id >= 1; id--)
        node_stop(id);
}

static void teardown(void)
{
    stop_all();
    qb_log_fini();
}

/* Ends a test: stops every node, and under ASan checks for leaks now,
 * since Criterion ignores LeakSanitizer's exit status of a passed test. */
static void finish(void)
{
    stop_all();
#ifdef __SANITIZE_ADDRESS__
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked: see the report above");
#endif
}

TestSuite(engine, .init = setup, .fini = teardown, .timeout = 30);

/* ---- the volume table ----------------------------------------------------------- */

struct change {
    uint32_t node;
    int kind; /* 0 create, 2 delete */
    uint64_t size;
    const uint32_t *placed; /* create: the nodes with a copy (NULL: every node) */
    size_t nplaced;
    atomic_bool done;
    atomic_int result;
};

static void change_done(void *arg, int result)
{
    struct change *c = arg;
    atomic_store(&c->result, result);
    atomic_store(&c->done, true);
}

/* On the node's main thread, as the admin commands are. */
static void change_send(void *arg)
{
    struct change *c = arg;
    struct policing *pc = nodes[c->node].pc;
    int r = c->kind == 0 ? policing_volume_create(pc, vol_uuid, VOL, c->size, NULL, false,
                                                  c->placed, c->nplaced, change_done, c)
                         : policing_volume_delete(pc, vol_uuid, VOL, change_done, c);
    if (r < 0)
        change_done(c, r);
}

/* Asks node for a table change and waits until it is applied there. */
static void change_placed(uint32_t node, int kind, uint64_t size, const uint32_t *placed,
                          size_t nplaced)
{
    struct change c = {
        .node = node, .kind = kind, .size = size, .placed = placed, .nplaced = nplaced};
    fcl_call(node, change_send, &c);
    WAIT_FOR(atomic_load(&c.done), "node %u: table change %d not applied", node, kind);
    cr_assert_eq(atomic_load(&c.result), 0, "node %u: table change %d: %s", node, kind,
                 strerror(-atomic_load(&c.result)));
}

static void change(uint32_t node, int kind, uint64_t size)
{
    change_placed(node, kind, size, NULL, 0);
}

static bool has_volume(uint32_t node, uint64_t size)
{
    struct volume_info info;
    return volumes_info(nodes[node].vols, VOL, &info) == 0 && info.size == size;
}

static uint8_t state_on(uint32_t at, uint32_t node)
{
    struct volume_info info;
    if (volumes_info(nodes[at].vols, VOL, &info) < 0)
        return REPLICA_NONE;
    for (uint32_t i = 0; i < info.nreplicas; i++)
        if (info.replicas[i].node == node)
            return info.replicas[i].state;
    return REPLICA_NONE;
}

/* The state every member records for node's replica. */
static bool agreed(uint32_t node, uint8_t state)
{
    for (uint32_t at = 1; at <= NODES_MAX; at++)
        if (nodes[at].member && state_on(at, node) != state)
            return false;
    return true;
}

static void wait_agreed(uint32_t node, uint8_t state)
{
    WAIT_FOR(agreed(node, state), "node %u's replica is not %s everywhere", node,
             replica_state_name(state));
}

static bool in(uint32_t id, const uint32_t *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (set[i] == id)
            return true;
    return !set;
}

/* A group of n nodes (of n configured) with the volume on the nplaced
 * nodes placed (on all of them: NULL), every replica current, every link
 * up; node slow_resync_on (or 0: none) resyncs at 256 KiB/s. */
static void cluster_up_placed(uint32_t n, uint64_t size, uint64_t slow_resync_on,
                              const uint32_t *placed, size_t nplaced)
{
    fcl_setup(n);
    for (uint32_t id = 1; id <= n; id++)
        node_start(id, id == slow_resync_on ? 256 * KiB : 0);
    int r = store_uuid_generate(vol_uuid);
    cr_assert_eq(r, 0);
    vid = policing_volume_id(vol_uuid);
    WAIT_FOR(policing_quorate(nodes[1].pc), "node 1 has no quorum");
    change_placed(1, 0, size, placed, nplaced);
    for (uint32_t id = 1; id <= n; id++) {
        WAIT_FOR(has_volume(id, size), "node %u lacks the volume", id);
        wait_agreed(id, in(id, placed, nplaced) ? REPLICA_CURRENT : REPLICA_NONE);
    }
    for (uint32_t a = 1; a <= n; a++)
        for (uint32_t b = 1; b <= n; b++)
            if (a != b)
                WAIT_FOR(mproxy_linked(nodes[b].proxy, a), "node %u is not linked to node %u", a,
                         b);
}

static void cluster_up(uint32_t n, uint64_t size, uint64_t slow_resync_on)
{
    cluster_up_placed(n, size, slow_resync_on, NULL, 0);
}

/* Node from's requests to node to: passed, refused or held. */
static void traffic(uint32_t from, uint32_t to, enum mproxy_mode mode)
{
    mproxy_set(nodes[to].proxy, from, mode);
}

/* ---- I/O through the engine, under region priority ------------------------------ */

enum io_type { IO_WRITE, IO_ZERO, IO_FLUSH, IO_READ };

struct io {
    uint32_t node;
    enum io_type type;
    void *buf;
    uint32_t count;
    uint64_t off;
};

static int io_fn(struct mvol *mv, void *arg)
{
    struct io *io = arg;
    struct policing *pc = nodes[io->node].pc;
    bool write = io->type == IO_WRITE || io->type == IO_ZERO;
    struct pol_write w;
    if (write) {
        int r = policing_write_begin(pc, vid, io->off, io->count, false, &w);
        if (r < 0)
            return r;
    }
    int r = io->type == IO_WRITE  ? mirror_write(mv, io->buf, io->count, io->off, 0, NULL)
            : io->type == IO_ZERO ? mirror_zero(mv, io->count, io->off, 0, NULL)
            : io->type == IO_READ ? mirror_read(mv, io->buf, io->count, io->off)
                                  : mirror_flush(mv);
    if (write)
        policing_write_end(pc, &w);
    return r;
}

static int io(uint32_t node, enum io_type type, void *buf, uint32_t count, uint64_t off)
{
    struct io x = {node, type, buf, count, off};
    return volumes_mirrored(nodes[node].vols, VOL, io_fn, &x);
}

/* The bytes a test writes: a function of the seed and the offset. */
static void fill(uint8_t *buf, size_t len, unsigned seed, uint64_t base)
{
    for (size_t i = 0; i < len; i++) {
        uint64_t at = base + i;
        buf[i] = (uint8_t)(seed * 31 + at * 7 + (at >> 9));
    }
}

static void write_ok(uint32_t node, uint64_t off, uint32_t len, unsigned seed)
{
    uint8_t *buf = malloc(len);
    fill(buf, len, seed, off);
    int r = io(node, IO_WRITE, buf, len, off);
    free(buf);
    cr_assert_eq(r, 0, "node %u: write %u at %llu: %s", node, len, (unsigned long long)off,
                 strerror(-r));
}

/* ---- what the data files hold ---------------------------------------------------- */

static void data_path(uint32_t node, char *path, size_t len)
{
    snprintf(path, len, "%s/" STORE_VOLUMES_DIR "/%s.data", nodes[node].dir, vol_uuid);
}

static void read_copy(uint32_t node, void *buf, size_t len, uint64_t off)
{
    char path[PATH_MAX];
    data_path(node, path, sizeof path);
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
    ssize_t n = pread(fd, buf, len, (off_t)off);
    close(fd);
    cr_assert_eq(n, (ssize_t)len, "node %u: read %zu at %llu of its copy: %zd", node, len,
                 (unsigned long long)off, n);
}

static bool copy_holds(uint32_t node, uint64_t off, uint32_t len, unsigned seed)
{
    uint8_t *want = malloc(len), *got = malloc(len);
    fill(want, len, seed, off);
    read_copy(node, got, len, off);
    bool same = memcmp(want, got, len) == 0;
    free(want);
    free(got);
    return same;
}

static bool copies_equal(uint32_t a, uint32_t b, uint64_t off, uint64_t len)
{
    uint8_t *x = malloc(len), *y = malloc(len);
    read_copy(a, x, len, off);
    read_copy(b, y, len, off);
    bool same = memcmp(x, y, len) == 0;
    free(x);
    free(y);
    return same;
}

static uint64_t data_size(uint32_t node)
{
    char path[PATH_MAX];
    data_path(node, path, sizeof path);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
    return (uint64_t)st.st_size;
}

/* ---- the engine's own view --------------------------------------------------------- */

static int status_fn(struct mvol *mv, void *arg)
{
    mirror_volume_status(mv, arg);
    return 0;
}

static struct mirror_volume_status status(uint32_t node)
{
    struct mirror_volume_status st;
    int r = volumes_mirrored(nodes[node].vols, VOL, status_fn, &st);
    cr_assert_eq(r, 0, "node %u: status: %s", node, strerror(-r));
    return st;
}

/* The bytes at records dirty for node. */
static uint64_t dirty_at(uint32_t at, uint32_t node)
{
    struct mirror_volume_status st = status(at);
    for (uint32_t i = 0; i < st.nreplicas; i++)
        if (st.replicas[i].node == node)
            return st.replicas[i].dirty_bytes;
    return 0;
}

static uint64_t served(uint32_t node)
{
    struct mirror_stats st;
    mirror_stats(nodes[node].m, &st);
    return st.requests_served;
}

/* ---- fan-out ------------------------------------------------------------------------- */

struct async_check {
    struct mirror_async a;
    atomic_bool done;
    atomic_int err;
    atomic_bool peer_had_it; /* node 2's copy held the data when done ran */
    uint64_t off;
    uint32_t len;
    unsigned seed;
    uint8_t *buf; /* the caller's until done */
};

static void async_done(struct mirror_async *a, int err)
{
    struct async_check *c = (struct async_check *)a;
    atomic_store(&c->peer_had_it, copy_holds(2, c->off, c->len, c->seed));
    atomic_store(&c->err, err);
    atomic_store(&c->done, true);
}

static int async_fn(struct mvol *mv, void *arg)
{
    struct async_check *c = arg;
    return mirror_write(mv, c->buf, c->len, c->off, 0, &c->a);
}

Test(engine, fanout)
{
    cluster_up(2, 1 * MiB, 0);

    /* A synchronous write is on node 2's disk when it returns. */
    write_ok(1, 2 * RS, RS, 1);
    cr_assert(copy_holds(2, 2 * RS, RS, 1), "node 2 lacks an acknowledged write");
    cr_assert(copy_holds(1, 2 * RS, RS, 1));
    /* Across a region boundary, and from node 2 to node 1. */
    write_ok(2, 5 * RS - 4096, 8192, 2);
    cr_assert(copy_holds(1, 5 * RS - 4096, 8192, 2), "node 1 lacks node 2's write");

    /* An asynchronous write: node 2 has it when its completion runs. */
    uint8_t buf[4096];
    struct async_check c = {
        .a.done = async_done, .off = 7 * RS, .len = sizeof buf, .seed = 3, .buf = buf};
    fill(buf, sizeof buf, c.seed, c.off);
    struct pol_write w;
    int r = policing_write_begin(nodes[1].pc, vid, c.off, c.len, false, &w);
    cr_assert_eq(r, 0);
    r = volumes_mirrored(nodes[1].vols, VOL, async_fn, &c);
    cr_assert_eq(r, -EINPROGRESS, "async write: %s", strerror(-r));
    WAIT_FOR(atomic_load(&c.done), "the async write never completed");
    policing_write_end(nodes[1].pc, &w);
    cr_assert_eq(atomic_load(&c.err), 0, "async write: %s", strerror(-atomic_load(&c.err)));
    cr_assert(atomic_load(&c.peer_had_it), "completed before node 2 had the data");

    /* Zeroes too. */
    r = io(1, IO_ZERO, NULL, 4096, 2 * RS);
    cr_assert_eq(r, 0, "zero: %s", strerror(-r));
    uint8_t got[4096], zero[4096] = {0};
    read_copy(2, got, sizeof got, 2 * RS);
    cr_assert_arr_eq(got, zero, sizeof got, "node 2 did not zero");

    /* A flush is a request node 2 serves before it returns. */
    uint64_t before = served(2);
    r = io(1, IO_FLUSH, NULL, 0, 0);
    cr_assert_eq(r, 0, "flush: %s", strerror(-r));
    cr_assert_eq(served(2), before + 1, "node 2 served %llu requests for one flush",
                 (unsigned long long)(served(2) - before));

    cr_assert(agreed(1, REPLICA_CURRENT) && agreed(2, REPLICA_CURRENT));
    cr_assert(copies_equal(1, 2, 0, 1 * MiB));
    finish();
}

/* ---- outdate and resync ------------------------------------------------------------------ */

Test(engine, outdate_then_resync_dirty_only)
{
    cluster_up(2, 1 * MiB, 0);
    write_ok(1, 0, RS, 9); /* both have it */

    /* Node 2 refuses node 1's requests (and can't reach node 1 to resync). */
    traffic(1, 2, MPROXY_REFUSE);
    traffic(2, 1, MPROXY_REFUSE);
    write_ok(1, 3 * RS, 4096, 1);
    /* Acknowledged only once node 2 was outdated here, with the region. */
    cr_assert_eq(state_on(1, 2), REPLICA_OUTDATED, "acknowledged with node 2 %s",
                 replica_state_name(state_on(1, 2)));
    cr_assert_eq(dirty_at(1, 2), RS, "dirty for node 2: %llu bytes",
                 (unsigned long long)dirty_at(1, 2));
    wait_agreed(2, REPLICA_OUTDATED); /* an agreed message: node 2 knows it too */
    cr_assert(!copy_holds(2, 3 * RS, 4096, 1));

    /* Later writes only set its bitmap; the region written twice counts once. */
    write_ok(1, 5 * RS, 2 * RS, 2);
    write_ok(1, 3 * RS + 8192, 4096, 3);
    cr_assert_eq(dirty_at(1, 2), 3 * RS, "dirty for node 2: %llu bytes",
                 (unsigned long long)dirty_at(1, 2));
    cr_assert_eq(state_on(1, 2), REPLICA_OUTDATED);

    /* Back: it copies exactly the three dirty regions. */
    traffic(1, 2, MPROXY_PASS);
    traffic(2, 1, MPROXY_PASS);
    wait_agreed(2, REPLICA_CURRENT);
    struct mirror_volume_status st = status(2);
    cr_assert_eq(st.resync_total, 3 * RS, "resynced %llu bytes, not the 3 dirty regions",
                 (unsigned long long)st.resync_total);
    cr_assert_eq(st.resync_done, 3 * RS);
    cr_assert(log_has("volume \"vol\": resync: 3 of 16 regions to copy"));
    cr_assert_eq(dirty_at(1, 2), 0, "node 2's bitmap outlived its resync");
    cr_assert(copies_equal(1, 2, 0, 1 * MiB), "node 2's copy differs after its resync");

    /* And it takes writes again. */
    write_ok(1, 9 * RS, 4096, 4);
    cr_assert(copy_holds(2, 9 * RS, 4096, 4));
    cr_assert(agreed(2, REPLICA_CURRENT));
    finish();
}

/* ---- a writer leaves mid-write ------------------------------------------------------------ */

struct bg_write {
    pthread_t thread;
    uint32_t node;
    uint64_t off;
    uint32_t len;
    unsigned seed;
    atomic_bool done;
    atomic_int result;
};

static void *bg_write_main(void *arg)
{
    struct bg_write *b = arg;
    uint8_t *buf = malloc(b->len);
    fill(buf, b->len, b->seed, b->off);
    atomic_store(&b->result, io(b->node, IO_WRITE, buf, b->len, b->off));
    free(buf);
    atomic_store(&b->done, true);
    return NULL;
}

Test(engine, lost_region_reconciled)
{
    cluster_up(3, 1 * MiB, 0);
    uint64_t off = 4 * RS + 4096;
    uint32_t len = 8192;

    /* Node 3 writes region 4; node 1 gets it, node 2 never does: node 3's
     * requests to node 2 vanish (a link stalled at that moment). */
    traffic(3, 2, MPROXY_HOLD);
    struct bg_write b = {.node = 3, .off = off, .len = len, .seed = 5};
    cr_assert_eq(pthread_create(&b.thread, NULL, bg_write_main, &b), 0);
    WAIT_FOR(copy_holds(1, off, len, 5), "node 1 never got node 3's write");
    cr_assert(!atomic_load(&b.done), "the write was acknowledged without node 2");
    cr_assert(!copy_holds(2, off, len, 5));

    /* Node 3 dies holding region 4: the survivors find it lost, and the
     * lowest current one makes the copies equal. */
    nodes[3].member = false;
    fcl_leave(3, CLUSTER_PROCDOWN);
    wait_agreed(3, REPLICA_OUTDATED);
    WAIT_FOR(log_has("volume \"vol\": region 4: reconciled (copies "
                     "differed)"),
             "region 4 was not reconciled");
    cr_assert(copies_equal(1, 2, 0, 1 * MiB), "nodes 1 and 2 differ after the reconcile");
    cr_assert(copy_holds(2, off, len, 5), "the reconcile did not keep node 1's version");
    cr_assert(agreed(1, REPLICA_CURRENT) && agreed(2, REPLICA_CURRENT));

    /* The dead node's write ends (its link to node 2 was dropped), failed. */
    WAIT_FOR(atomic_load(&b.done), "node 3's write never ended");
    pthread_join(b.thread, NULL);
    cr_assert_lt(atomic_load(&b.result), 0, "node 3's write succeeded without the group");

    /* The region takes writes from the survivors again. */
    write_ok(2, 4 * RS, RS, 6);
    cr_assert(copy_holds(1, 4 * RS, RS, 6));
    finish();
}

/* A diskless writer's write that no copy acknowledged: node 1 took it but
 * its answer vanished, node 2 never got it. Nobody vouches for a copy, so
 * none is outdated and the write fails; but the copies now differ, and
 * both stay current: the writer names the region doubtful, and the lowest
 * current copy makes them equal. */
Test(engine, write_no_copy_acknowledged_is_reconciled)
{
    static const uint32_t placed[] = {1, 2};
    cluster_up_placed(3, 1 * MiB, 0, placed, 2);
    uint64_t off = 6 * RS + 4096;
    uint32_t len = 8192;
    traffic(3, 1, MPROXY_DEAF);
    traffic(3, 2, MPROXY_HOLD);
    uint8_t *buf = malloc(len);
    fill(buf, len, 7, off);
    int r = io(3, IO_WRITE, buf, len, off);
    free(buf);
    cr_assert_lt(r, 0, "a write no copy acknowledged succeeded");
    cr_assert(copy_holds(1, off, len, 7), "node 1 never got the write");
    cr_assert(agreed(1, REPLICA_CURRENT) && agreed(2, REPLICA_CURRENT),
              "a copy was outdated with nobody to vouch for another");
    WAIT_FOR(copies_equal(1, 2, 0, 1 * MiB), "the copies stay unequal after a write none took");
    cr_assert(log_has("volume \"vol\": region 6: reconciled (copies differed)"));

    /* The links come back; the region takes the diskless node's writes. */
    traffic(3, 1, MPROXY_PASS);
    traffic(3, 2, MPROXY_PASS);
    WAIT_FOR(io(3, IO_WRITE, (uint8_t[4096]){0}, 4096, 6 * RS) == 0,
             "node 3 cannot write again once linked");
    cr_assert(copies_equal(1, 2, 0, 1 * MiB));
    finish();
}

/* ---- resize with an outdated peer ------------------------------------------------------------ */

/* A resize's commit as the policing protocol makes it on each member (a
 * cut of kind CONFIG; this fake cluster runs no timers, so no cut of its
 * own), through the table ops. */
struct resize_commit {
    uint32_t node;
    uint64_t size, id;
    uint32_t add; /* a replica added on this node instead of a resize */
    int result;
};

static void resize_commit_fn(void *arg)
{
    struct resize_commit *rc = arg;
    struct cut c = {.kind = PMSG_CUT_CONFIG, .from = 1, .nvols = 1, .vids = {vid}};
    c.config = rc->add ? (struct pmsg_cut_config){.op = PMSG_CONFIG_ADD, .node = rc->add}
                       : (struct pmsg_cut_config){.size = rc->size, .force = 1};
    for (uint32_t id = 1; id <= NODES_MAX; id++)
        if (nodes[id].member)
            c.members[c.nmembers++] = id;
    snprintf(c.config.uuid, sizeof c.config.uuid, "%s", vol_uuid);
    snprintf(c.volume, sizeof c.volume, "%s", VOL);
    rc->result = voltable_ops.cut_commit(&nodes[rc->node].table, &c, rc->id);
}

/* The commit of a resize to size, or of a replica added on node add, on
 * every member; each member's result in results (NULL: all must be 0). */
static void config_everywhere(uint64_t size, uint32_t add, int *results)
{
    static uint64_t id = 100; /* the table version the commit makes */
    id++;
    for (uint32_t node = 1; node <= NODES_MAX; node++) {
        if (!nodes[node].member)
            continue;
        struct resize_commit rc = {.node = node, .size = size, .id = id, .add = add};
        fcl_call(node, resize_commit_fn, &rc);
        if (results)
            results[node] = rc.result;
        else
            cr_assert_eq(rc.result, 0, "node %u: config change: %s", node, strerror(-rc.result));
    }
}

static void resize_everywhere(uint64_t size)
{
    config_everywhere(size, 0, NULL);
}

/* A replica added on a node whose store cannot commit it (its record
 * cannot be written: here a directory where the record's temporary file
 * goes): that node's copy is outdated by its own word, instead of staying
 * "syncing" in every node's table with nothing ever filling it; the other
 * copies go on taking writes. */
Test(engine, a_replica_its_node_cannot_commit_is_outdated)
{
    static const uint32_t placed[] = {1, 2};
    cluster_up_placed(3, 1 * MiB, 0, placed, 2);
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/" STORE_VOLUMES_DIR "/%s.meta.tmp", nodes[3].dir, vol_uuid);
    cr_assert_eq(mkdir(tmp, 0700), 0, "mkdir %s: %s", tmp, strerror(errno));
    int results[NODES_MAX + 1] = {0};
    config_everywhere(0, 3, results);
    cr_assert_eq(results[1], 0);
    cr_assert_eq(results[2], 0);
    cr_assert_lt(results[3], 0, "node 3 committed a record it cannot write");
    wait_agreed(3, REPLICA_OUTDATED);
    cr_assert(log_has("the replica set could not be committed here"));
    write_ok(1, 2 * RS, 4096, 8);
    cr_assert(copy_holds(2, 2 * RS, 4096, 8));
    cr_assert_eq(rmdir(tmp), 0);
    finish();
}

Test(engine, resize_with_outdated_peer)
{
    cluster_up(2, 1 * MiB, 0); /* 16 regions */
    traffic(1, 2, MPROXY_REFUSE);
    traffic(2, 1, MPROXY_REFUSE);
    write_ok(1, 2 * RS, 4096, 1);
    wait_agreed(2, REPLICA_OUTDATED);
    cr_assert_eq(dirty_at(1, 2), RS);

    /* Grow to 32 regions, then write two past the old end: both are dirty
     * for node 2 (its bitmap grew with the volume). */
    resize_everywhere(2 * MiB);
    WAIT_FOR(has_volume(2, 2 * MiB), "node 2 did not grow");
    write_ok(1, 20 * RS, 4096, 2);
    write_ok(1, 31 * RS + RS - 4096, 4096, 3);
    cr_assert_eq(dirty_at(1, 2), 3 * RS, "dirty for node 2 after the grow: %llu bytes",
                 (unsigned long long)dirty_at(1, 2));

    traffic(1, 2, MPROXY_PASS);
    traffic(2, 1, MPROXY_PASS);
    wait_agreed(2, REPLICA_CURRENT);
    cr_assert_eq(status(2).resync_total, 3 * RS);
    cr_assert(copies_equal(1, 2, 0, 2 * MiB), "node 2 differs after the resync");

    /* Outdated again with a region past the size to come; shrink back to
     * 16 regions: that one is no longer dirty, the rest resyncs. */
    WAIT_FOR(mproxy_linked(nodes[2].proxy, 1), "node 1 is not linked to node 2 again");
    traffic(1, 2, MPROXY_REFUSE);
    traffic(2, 1, MPROXY_REFUSE);
    write_ok(1, 25 * RS, 4096, 4);
    wait_agreed(2, REPLICA_OUTDATED);
    write_ok(1, 1 * RS, 4096, 5);
    cr_assert_eq(dirty_at(1, 2), 2 * RS);
    resize_everywhere(1 * MiB);
    WAIT_FOR(has_volume(2, 1 * MiB), "node 2 did not shrink");
    cr_assert_eq(data_size(1), 1 * MiB);
    cr_assert_eq(data_size(2), 1 * MiB);
    cr_assert_eq(dirty_at(1, 2), RS, "dirty for node 2 after the shrink: %llu bytes",
                 (unsigned long long)dirty_at(1, 2));

    traffic(1, 2, MPROXY_PASS);
    traffic(2, 1, MPROXY_PASS);
    wait_agreed(2, REPLICA_CURRENT);
    cr_assert_eq(status(2).resync_total, RS);
    cr_assert(copies_equal(1, 2, 0, 1 * MiB), "node 2 differs after the shrink and resync");
    finish();
}

/* ---- delete during a resync ----------------------------------------------------------------- */

/* Whether this process still has node's data file open. */
static bool data_open(uint32_t node)
{
    char path[PATH_MAX], fdpath[300], target[PATH_MAX];
    data_path(node, path, sizeof path);
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    bool found = false;
    for (struct dirent *e; !found && (e = readdir(d));) {
        snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(fdpath, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        found = strncmp(target, path, strlen(path)) == 0;
    }
    closedir(d);
    return found;
}

Test(engine, delete_during_resync)
{
    cluster_up(2, 4 * MiB, 2); /* node 2 resyncs at 256 KiB/s */
    traffic(1, 2, MPROXY_REFUSE);
    traffic(2, 1, MPROXY_REFUSE);
    write_ok(1, 0, 32 * RS, 1); /* 2 MiB: 8 s of resync */
    wait_agreed(2, REPLICA_OUTDATED);
    traffic(1, 2, MPROXY_PASS);
    traffic(2, 1, MPROXY_PASS);
    WAIT_FOR(status(2).resync_done > 0 && status(2).resync_done < status(2).resync_total,
             "node 2's resync did not start");

    /* The delete is applied everywhere at once: node 2's does not wait for
     * its resync, which ends at its next step and lets the copy go. */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    change(1, 2, 0);
    WAIT_FOR(!has_volume(2, 4 * MiB), "node 2 kept the volume");
    double took = ms_since(&t0);
    cr_assert_lt(took, 2000, "the delete took %.0f ms while node 2 resynced", took);
    cr_assert(!has_volume(1, 4 * MiB));
    char path[PATH_MAX];
    data_path(2, path, sizeof path);
    cr_assert_neq(access(path, F_OK), 0, "node 2's data file is still there");
    WAIT_FOR(!data_open(2), "node 2's deleted copy is still open: its resync holds it");
    WAIT_FOR(!data_open(1), "node 1's deleted copy is still open");
    finish();
}

/* ---- a peer outdated that resyncs at once ------------------------------------------------ */

Test(engine, outdated_peer_resyncing_at_once)
{
    cluster_up(2, 1 * MiB, 0);
    /* Only node 1's requests to node 2 fail: node 2 can still reach node 1,
     * so it asks to resync as soon as it learns it is outdated. */
    for (unsigned i = 0; i < 5; i++) {
        WAIT_FOR(mproxy_linked(nodes[2].proxy, 1) && agreed(2, REPLICA_CURRENT),
                 "round %u: node 2 is not back", i);
        traffic(1, 2, MPROXY_REFUSE);
        write_ok(1, (uint64_t)i * RS, 4096, 10 + i);
        traffic(1, 2, MPROXY_PASS);
    }
    wait_agreed(2, REPLICA_CURRENT);
    cr_assert(copies_equal(1, 2, 0, 1 * MiB));
    finish();
}

/* ---- snapshots ---------------------------------------------------------------------------- */

struct snap_op {
    int kind; /* 0 cut, 1 read here, 2 mirror_snap_read, 3 put here */
    uint64_t id;
    const char *name;
    void *buf;
    uint32_t count;
    uint64_t off;
};

static int snap_fn(struct mvol *mv, void *arg)
{
    struct snap_op *o = arg;
    struct snap_info si;
    switch (o->kind) {
    case 0:
        return svol_snapshot_create(mv->sv, o->id, o->name, 1700000000, &si);
    case 1:
        return snap_read(svol_snapshots(mv->sv), o->id, o->buf, o->count, o->off);
    case 2:
        return mirror_snap_read(mv, o->id, o->buf, o->count, o->off);
    default:
        return snap_put(svol_snapshots(mv->sv), o->id, o->buf, o->count, o->off);
    }
}

static int snap_op(uint32_t node, int kind, uint64_t id, void *buf, uint32_t count, uint64_t off)
{
    struct snap_op o = {.kind = kind, .id = id, .name = "", .buf = buf, .count = count, .off = off};
    return volumes_mirrored(nodes[node].vols, VOL, snap_fn, &o);
}

/* The cluster's cut, by hand: the same id on every node, no write in
 * flight. */
static void cut(uint32_t n, uint64_t id, const char *name)
{
    for (uint32_t node = 1; node <= n; node++) {
        struct snap_op o = {.kind = 0, .id = id, .name = name};
        int r = volumes_mirrored(nodes[node].vols, VOL, snap_fn, &o);
        cr_assert_eq(r, 0, "node %u: snapshot %llu: %s", node, (unsigned long long)id,
                     strerror(-r));
    }
}

/* Snapshot id as node's own store has it equals node 1's. */
static bool snap_copies_equal(uint32_t node, uint64_t id, uint64_t size)
{
    uint8_t *a = malloc(size), *b = malloc(size);
    int r1 = snap_op(1, 1, id, a, (uint32_t)size, 0),
        r2 = snap_op(node, 1, id, b, (uint32_t)size, 0);
    cr_assert_eq(r1, 0, "node 1: snapshot %llu: %s", (unsigned long long)id, strerror(-r1));
    cr_assert_eq(r2, 0, "node %u: snapshot %llu: %s", node, (unsigned long long)id, strerror(-r2));
    bool same = memcmp(a, b, size) == 0;
    free(a);
    free(b);
    return same;
}

/* Whether node's snapshot id holds seed's bytes at [off, off+len). */
static bool snap_holds(uint32_t node, uint64_t id, uint64_t off, uint32_t len, unsigned seed)
{
    uint8_t *want = malloc(len), *got = malloc(len);
    fill(want, len, seed, off);
    int r = snap_op(node, 1, id, got, len, off);
    cr_assert_eq(r, 0, "node %u: snapshot %llu: %s", node, (unsigned long long)id, strerror(-r));
    bool same = memcmp(want, got, len) == 0;
    free(want);
    free(got);
    return same;
}

Test(engine, resync_copies_the_snapshots_of_a_copy_outdated_at_the_cut)
{
    cluster_up(2, 1 * MiB, 0);
    write_ok(1, 0, 1 * MiB, 1);
    traffic(1, 2, MPROXY_REFUSE);
    traffic(2, 1, MPROXY_REFUSE);
    write_ok(1, 2 * RS, RS, 2); /* node 2 misses it */
    wait_agreed(2, REPLICA_OUTDATED);

    /* The cut, on every copy: node 2's snapshot 7 is cut from its stale
     * region 2. Then writes it misses too. */
    cut(2, 7, "s7");
    cr_assert(!snap_holds(2, 7, 2 * RS, RS, 2), "node 2 was meant to be stale at the cut");
    write_ok(1, 2 * RS, RS, 3);
    write_ok(1, 5 * RS, 4096, 4);

    traffic(1, 2, MPROXY_PASS);
    traffic(2, 1, MPROXY_PASS);
    wait_agreed(2, REPLICA_CURRENT);
    cr_assert(copies_equal(1, 2, 0, 1 * MiB), "node 2's live copy differs after its resync");
    cr_assert(snap_holds(1, 7, 2 * RS, RS, 2));
    cr_assert(snap_holds(2, 7, 2 * RS, RS, 2),
              "node 2's snapshot 7 lacks region 2 as it was at the cut: its resync did not "
              "copy the snapshot's chunks");
    cr_assert(snap_copies_equal(2, 7, 1 * MiB), "node 2's snapshot 7 differs from node 1's");

    /* Current again: it answers from its own copy, and the changed chunks
     * agree with node 1's. */
    uint8_t *buf = malloc(RS);
    uint64_t before = served(1);
    int r = snap_op(2, 2, 7, buf, RS, 2 * RS);
    cr_assert_eq(r, 0, "mirror_snap_read: %s", strerror(-r));
    cr_assert_eq(served(1), before, "a current copy asked a peer");
    free(buf);
    finish();
}

struct changed_op {
    uint64_t since, upto, off, len;
    struct mirror_changed_run runs[8];
    struct svol_extent ext[8];
    int n;
};

static int changed_fn(struct mvol *mv, void *arg)
{
    struct changed_op *o = arg;
    return o->n = mirror_snap_changed(mv, o->since, o->upto, o->off, o->len, o->runs, 8);
}

static int extents_fn(struct mvol *mv, void *arg)
{
    struct changed_op *o = arg;
    return o->n = mirror_snap_extents(mv, o->since, (uint32_t)o->len, o->off, o->ext, 8);
}

static void expect_runs(const struct changed_op *o, const uint64_t *len, const bool *changed, int n)
{
    cr_assert_eq(o->n, n, "%d runs, want %d", o->n, n);
    for (int i = 0; i < n; i++)
        cr_assert(o->runs[i].length == len[i] && o->runs[i].changed == changed[i],
                  "run %d: %llu %s, want %llu %s", i, (unsigned long long)o->runs[i].length,
                  o->runs[i].changed ? "changed" : "same", (unsigned long long)len[i],
                  changed[i] ? "changed" : "same");
}

/* An admin call on a node's main thread, as the admin socket makes it. */
struct admin_call {
    uint32_t node;
    int (*fn)(struct mvol *mv, void *arg);
    int result;
};

static void admin_run(void *arg)
{
    struct admin_call *a = arg;
    a->result = volumes_mirrored(nodes[a->node].vols, VOL, a->fn, NULL);
}

static void admin(uint32_t node, int (*fn)(struct mvol *mv, void *arg))
{
    struct admin_call a = {.node = node, .fn = fn};
    fcl_call(node, admin_run, &a);
    cr_assert_eq(a.result, 0, "node %u: admin call: %s", node, strerror(-a.result));
}

static int replica_fail_fn(struct mvol *mv, void *arg)
{
    (void)arg;
    return mirror_replica_fail(mv);
}

static int replica_replace_fn(struct mvol *mv, void *arg)
{
    (void)arg;
    return mirror_replica_replace(mv);
}

Test(engine, snapshots_read_from_a_current_peer_and_rebuilt_by_replace)
{
    cluster_up(2, 1 * MiB, 0);
    write_ok(1, 0, 8 * RS, 1); /* the rest are holes */
    cut(2, 7, "s7");
    write_ok(1, 3 * RS, 4096, 2);
    cut(2, 9, "s9");
    write_ok(1, 4 * RS + 100, 100, 3);

    /* Node 2's copy fails: it serves nothing, and asks node 1. */
    admin(2, replica_fail_fn);
    wait_agreed(2, REPLICA_OUTDATED);
    uint8_t *a = malloc(1 * MiB), *b = malloc(1 * MiB);
    uint64_t before = served(1);
    int r = snap_op(2, 2, 7, b, 1 * MiB, 0);
    cr_assert_eq(r, 0, "node 2: mirror_snap_read: %s", strerror(-r));
    cr_assert_gt(served(1), before, "node 2 read its own failed copy");
    cr_assert_eq(snap_op(1, 1, 7, a, 1 * MiB, 0), 0);
    cr_assert(memcmp(a, b, 1 * MiB) == 0, "snapshot 7 through node 2 differs from node 1's");
    cr_assert_eq(snap_op(2, 2, 99, b, 4096, 0), -ENOENT, "no snapshot 99");
    cr_assert_eq(snap_op(2, 2, 7, b, 4096, 1 * MiB), -EINVAL, "past its end");

    /* Allocation: data up to 8 regions, holes after. */
    struct changed_op o = {.since = 7, .off = 0, .len = 1 * MiB};
    r = volumes_mirrored(nodes[2].vols, VOL, extents_fn, &o);
    cr_assert_eq(r, 2, "extents: %d (%s)", r, r < 0 ? strerror(-r) : "");
    cr_assert(!o.ext[0].hole && o.ext[0].length == 8 * RS && o.ext[1].hole);

    /* Changed since 7: regions 3 and 4; between 7 and 9: region 3; from an
     * offset inside a chunk. */
    o = (struct changed_op){.since = 7, .upto = 0, .off = 0, .len = 1 * MiB};
    r = volumes_mirrored(nodes[2].vols, VOL, changed_fn, &o);
    cr_assert_geq(r, 0, "changed: %s", strerror(-r));
    expect_runs(&o, (uint64_t[]){3 * RS, 2 * RS, 11 * RS}, (bool[]){false, true, false}, 3);
    o = (struct changed_op){.since = 7, .upto = 9, .off = 3 * RS + 100, .len = 2 * RS};
    r = volumes_mirrored(nodes[2].vols, VOL, changed_fn, &o);
    cr_assert_geq(r, 0, "changed: %s", strerror(-r));
    expect_runs(&o, (uint64_t[]){RS - 100, RS + 100}, (bool[]){true, false}, 2);
    o = (struct changed_op){.since = 9, .upto = 7, .off = 0, .len = RS};
    cr_assert_eq(volumes_mirrored(nodes[2].vols, VOL, changed_fn, &o), -EINVAL);

    /* Replace: its disk lost a chunk of snapshot 7 (as a new disk would);
     * the rebuild copies every region of every snapshot. */
    memset(b, 0xee, RS);
    cr_assert_eq(snap_op(2, 3, 7, b, RS, 6 * RS), 0);
    admin(2, replica_replace_fn);
    wait_agreed(2, REPLICA_CURRENT);
    cr_assert(copies_equal(1, 2, 0, 1 * MiB));
    cr_assert(snap_copies_equal(2, 7, 1 * MiB), "node 2's snapshot 7 was not rebuilt");
    cr_assert(snap_copies_equal(2, 9, 1 * MiB), "node 2's snapshot 9 was not rebuilt");
    free(a);
    free(b);
    finish();
}

/* ---- a snapshot a copy could not cut ------------------------------------------------------- */

/* A cut's commit as the policing protocol makes it on each member, in
 * agreed order (this fake cluster runs no timers, so no cut of its own):
 * kind snapshot name, with id. */
struct cut_commit {
    uint32_t node;
    struct cut c;
    uint64_t id;
    int result;
};

static void cut_commit_fn(void *arg)
{
    struct cut_commit *cc = arg;
    cc->result = volumes_cut_commit(nodes[cc->node].vols, &cc->c, cc->id);
}

static void commit_everywhere(uint8_t kind, const char *name, uint64_t id)
{
    for (uint32_t node = 1; node <= NODES_MAX; node++) {
        if (!nodes[node].member)
            continue;
        struct cut_commit cc = {.node = node, .id = id};
        cc.c = (struct cut){.kind = kind, .from = 2, .time = 1700000000, .nvols = 1};
        cc.c.vids[0] = vid;
        snprintf(cc.c.snapshot, sizeof cc.c.snapshot, "%s", name);
        fcl_call(node, cut_commit_fn, &cc);
        cr_assert_eq(cc.result, 0, "node %u: snapshot \"%s\": %s", node, name,
                     strerror(-cc.result));
    }
}

/* The id of the snapshot name in node's list (what `vsan snapshot list`
 * shows), or 0. */
static uint64_t listed(uint32_t node, const char *name)
{
    struct snap_info *si;
    size_t n;
    if (volumes_snapshots(nodes[node].vols, VOL, &si, &n) < 0)
        return 0;
    uint64_t id = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(si[i].name, name) == 0)
            id = si[i].id;
    free(si);
    return id;
}

/* Makes node's store fail to cut snapshot id (a directory where its side
 * file goes), or, with undo, lets it. */
static void block_cut(uint32_t node, uint64_t id, bool undo)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/" STORE_SNAPSHOTS_DIR "/%s.%llu.data", nodes[node].dir,
             vol_uuid, (unsigned long long)id);
    int r = undo ? rmdir(path) : mkdir(path, 0700);
    cr_assert_eq(r, 0, "%s %s: %s", undo ? "rmdir" : "mkdir", path, strerror(errno));
}

/* `vsan replica replace`'s first step on node 1. */
static void fill_fn(void *arg)
{
    *(int *)arg = volumes_snapshot_fill(nodes[1].vols, VOL);
}

/* Node 1 (the lowest id, so the winner of a round among nodes in sync)
 * can't cut snapshot s: its copy is failed, but it keeps s's record. When
 * node 3 restarts, node 1 wins the round: nodes 2 and 3 keep s (before,
 * the round's list was node 1's store, and they deleted it). A snapshot
 * cut while node 1 lacks s is missing there too, and its delete drops the
 * record; a replace cuts s and rebuilds it from node 2. */
Test(engine, a_snapshot_a_copy_could_not_cut_survives_that_node_winning_a_round)
{
    cluster_up(3, 1 * MiB, 0);
    write_ok(2, 0, 4 * RS, 1);
    block_cut(1, 20, false);
    commit_everywhere(PMSG_CUT_SNAPSHOT, "s", 20);
    block_cut(1, 20, true);
    wait_agreed(1, REPLICA_OUTDATED);
    cr_assert_eq(listed(2, "s"), 20, "node 2 has no snapshot s");
    cr_assert_eq(listed(1, "s"), 20, "node 1 lost the record of the snapshot it could not cut");
    write_ok(2, 0, RS, 2);

    node_stop(3);
    node_start(3, 0);
    WAIT_FOR(has_volume(3, 1 * MiB) && listed(3, "s") == 20,
             "node 3 did not get snapshot s in node 1's round");
    cr_assert_eq(listed(2, "s"), 20, "node 2 dropped snapshot s in node 1's round");
    cr_assert(snap_holds(2, 20, 0, RS, 1), "node 2's snapshot s lost its data");

    commit_everywhere(PMSG_CUT_SNAPSHOT, "t", 21);
    cr_assert_eq(listed(1, "t"), 21, "node 1 has no record of t, cut while it lacks s");
    commit_everywhere(PMSG_CUT_DELETE, "t", 22);
    cr_assert_eq(listed(1, "t"), 0, "node 1 kept the record of t, deleted");

    int r = -1;
    fcl_call(1, fill_fn, &r);
    cr_assert_eq(r, 0, "node 1: cutting the snapshots it lacks: %s", strerror(-r));
    admin(1, replica_replace_fn);
    wait_agreed(1, REPLICA_CURRENT);
    cr_assert(snap_holds(1, 20, 0, RS, 1), "node 1's snapshot s was not rebuilt");
    cr_assert(snap_copies_equal(2, 20, 1 * MiB), "node 1's snapshot s differs from node 2's");
    finish();
}

static bool is_type(const void *msg, size_t len, int type)
{
    return len >= sizeof(struct pmsg_header) && ((const struct pmsg_header *)msg)->type == type;
}

static bool is_request(const void *msg, size_t len)
{
    return is_type(msg, len, PMSG_REQUEST);
}

static bool is_release(const void *msg, size_t len)
{
    return is_type(msg, len, PMSG_RELEASE);
}

/* Node 1's next fails sends that which picks fail; a write of 4 KiB at 0
 * through node writer must still succeed, and node 1 log sent. */
static void write_past_failed_sends(uint32_t writer, unsigned seed, unsigned fails,
                                    bool (*which)(const void *msg, size_t len), const char *sent)
{
    fcl_fail_sends(1, fails, which);
    struct bg_write b = {.node = writer, .off = 0, .len = 4096, .seed = seed};
    cr_assert_eq(pthread_create(&b.thread, NULL, bg_write_main, &b), 0);
    WAIT_FOR(atomic_load(&b.done), "node %u's write waits for a message node 1 never sent", writer);
    pthread_join(b.thread, NULL);
    cr_assert_eq(atomic_load(&b.result), 0);
    cr_assert(log_has(sent), "no \"%s\" in the log", sent);
}

/* A REQUEST or RELEASE whose multicast fails (corosync's flow control did
 * not clear in 30 s) is sent again, in order: dropped, its region stayed
 * asked (or owned) for good, and every write to it, a resync's copy too,
 * waited with it (CI's t-lab-checker: a copy stuck syncing). */
Test(engine, a_region_message_that_fails_to_go_out_is_sent_again)
{
    cluster_up(2, 1 * MiB, 0);
    write_ok(2, 0, 4096, 1); /* node 2 owns region 0 */

    /* Node 1's REQUEST fails twice. */
    write_past_failed_sends(1, 2, 2, is_request, "REQUEST sent after 2 failed tries");
    /* Node 1 owns region 0 now; its RELEASE to node 2 fails once. */
    write_past_failed_sends(2, 3, 1, is_release, "RELEASE sent after 1 failed tries");
    cr_assert(copy_holds(1, 0, 4096, 3) && copy_holds(2, 0, 4096, 3));
    finish();
}

/* The group's last current copy goes away with its node: it stays
 * current, or the volume would have none (the 5-node soak: a partition
 * held both copies of c, and the majority outdated both). Node 2's copy
 * failed earlier; node 1, holding the only current one, leaves. */
Test(engine, the_last_current_copy_stays_current_when_its_node_leaves)
{
    static const uint32_t placed[] = {1, 2};
    cluster_up_placed(3, 1 * MiB, 0, placed, 2);
    write_ok(3, 0, 4096, 1);
    admin(2, replica_fail_fn);
    wait_agreed(2, REPLICA_OUTDATED);

    nodes[1].member = false;
    fcl_leave(1, CLUSTER_PROCDOWN);
    for (uint32_t id = 2; id <= 3; id++)
        fcl_call(id, nothing, NULL); /* the leave is applied there */
    cr_assert(policing_quorate(nodes[3].pc));
    cr_assert_eq(state_on(3, 1), REPLICA_CURRENT, "node 3 outdated the last current copy");
    cr_assert_eq(state_on(2, 1), REPLICA_CURRENT, "node 2 outdated the last current copy");
    cr_assert(log_has("node 1 left with the group's last current copy"));
    uint8_t buf[4096];
    cr_assert_lt(io(3, IO_READ, buf, sizeof buf, 0), 0, "a read with no current copy reachable");
    finish();
}
