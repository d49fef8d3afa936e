/* nbdload - a small NBD load generator on libnbd, for the benches that fio
 * cannot run: fio's nbd engine refuses nbds:// URIs, so TLS (X.509 or PSK,
 * given in libnbd's URI query: tls-certificates, tls-psk-file,
 * tls-username) is measured with this tool, plain beside it.
 *
 *   nbdload URI WORKLOAD SECONDS CONNECTIONS QUEUE_DEPTH
 *
 * WORKLOAD is randwrite4k, randread4k, write1m or read1m. Each connection is
 * its own libnbd handle on its own thread, keeping QUEUE_DEPTH requests in
 * flight with the asynchronous API (nbd_aio_pwrite/pread + nbd_poll); the
 * random workloads spread over the whole export, the sequential ones give
 * each connection its own slice. After SECONDS no new request starts, the
 * ones in flight are waited for, and one JSON object goes to stdout: the
 * requests, IOPS, MiB/s, latency percentiles (from every request's own
 * time) and the client's CPU time per request. */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <libnbd.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define MAX_CONNECTIONS 64
#define MAX_QUEUE_DEPTH 256
#define MAX_SECONDS 3600

struct workload {
    const char *name;
    uint32_t block; /* bytes per request */
    bool write;
    bool random;
};

static const struct workload WORKLOADS[] = {
    {"randwrite4k", 4096, true, true},
    {"randread4k", 4096, false, true},
    {"write1m", 1 << 20, true, false},
    {"read1m", 1 << 20, false, false},
};

struct slot {
    struct conn *conn;
    uint64_t started; /* ns, CLOCK_MONOTONIC */
    char *buf;
    bool busy;
};

/* One connection: its handle, requests, and the latency of each request
 * it completed (ns), grown as it goes. */
struct conn {
    const struct workload *w;
    const char *uri;
    uint64_t seconds, deadline; /* the deadline: seconds after all are open */
    unsigned qd;
    int index, nconns;
    struct nbd_handle *nbd;
    struct slot slots[MAX_QUEUE_DEPTH];
    unsigned in_flight;
    uint64_t next;          /* the sequential workloads' next offset */
    uint64_t first, end;    /* the slice they cover */
    unsigned short rand[3]; /* nrand48 state */
    uint64_t size;
    uint64_t *lat;
    size_t nlat, caplat;
    int io_error; /* first errno a request completed with */
    char err[512];
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int completed(void *user_data, int *error)
{
    struct slot *s = user_data;
    struct conn *c = s->conn;
    s->busy = false;
    c->in_flight--;
    if (*error) {
        if (!c->io_error)
            c->io_error = *error;
        return 1;
    }
    if (c->nlat == c->caplat) {
        size_t cap = c->caplat ? c->caplat * 2 : 65536;
        uint64_t *n = realloc(c->lat, cap * sizeof *n);
        if (!n) {
            c->io_error = ENOMEM;
            return 1;
        }
        c->lat = n;
        c->caplat = cap;
    }
    c->lat[c->nlat++] = now_ns() - s->started;
    return 1;
}

static uint64_t next_offset(struct conn *c)
{
    uint64_t blocks = c->size / c->w->block;
    if (c->w->random) {
        uint64_t r = ((uint64_t)nrand48(c->rand) << 31) ^ (uint64_t)nrand48(c->rand);
        return r % blocks * c->w->block;
    }
    uint64_t off = c->next;
    c->next += c->w->block;
    if (c->next + c->w->block > c->end)
        c->next = c->first;
    return off;
}

static int submit(struct conn *c, struct slot *s)
{
    nbd_completion_callback cb = {.callback = completed, .user_data = s};
    uint64_t off = next_offset(c);
    int64_t cookie;
    s->busy = true;
    s->started = now_ns();
    c->in_flight++;
    if (c->w->write)
        cookie = nbd_aio_pwrite(c->nbd, s->buf, c->w->block, off, cb, 0);
    else
        cookie = nbd_aio_pread(c->nbd, s->buf, c->w->block, off, cb, 0);
    if (cookie == -1) {
        s->busy = false;
        c->in_flight--;
        snprintf(c->err, sizeof c->err, "connection %d: %s at offset %" PRIu64 ": %s", c->index,
                 c->w->write ? "write" : "read", off, nbd_get_error());
        return -1;
    }
    return 0;
}

/* Keeps qd requests in flight until the deadline, then drains. */
static int run_conn(struct conn *c)
{
    for (;;) {
        bool more = now_ns() < c->deadline && !c->io_error;
        for (unsigned i = 0; more && i < c->qd; i++) {
            if (!c->slots[i].busy && submit(c, &c->slots[i]) == -1)
                return -1;
        }
        if (!more && c->in_flight == 0)
            break;
        if (nbd_poll(c->nbd, -1) == -1) {
            snprintf(c->err, sizeof c->err, "connection %d: %s", c->index, nbd_get_error());
            return -1;
        }
    }
    if (c->io_error) {
        snprintf(c->err, sizeof c->err, "connection %d: a request failed: %s", c->index,
                 strerror(c->io_error));
        return -1;
    }
    return 0;
}

static int open_conn(struct conn *c)
{
    c->nbd = nbd_create();
    if (!c->nbd) {
        snprintf(c->err, sizeof c->err, "nbd_create: %s", nbd_get_error());
        return -1;
    }
    /* tls-certificates and tls-psk-file name local files. */
    if (nbd_set_uri_allow_local_file(c->nbd, true) == -1 || nbd_connect_uri(c->nbd, c->uri) == -1) {
        snprintf(c->err, sizeof c->err, "connection %d: %s: %s", c->index, c->uri, nbd_get_error());
        return -1;
    }
    int64_t size = nbd_get_size(c->nbd);
    if (size == -1) {
        snprintf(c->err, sizeof c->err, "connection %d: %s", c->index, nbd_get_error());
        return -1;
    }
    c->size = (uint64_t)size;
    uint64_t slice = c->size / (uint64_t)c->nconns / c->w->block * c->w->block;
    if (slice < c->w->block) {
        snprintf(c->err, sizeof c->err,
                 "%s: the export (%" PRIu64 " bytes) is too small for %d x %u bytes", c->uri,
                 c->size, c->nconns, c->w->block);
        return -1;
    }
    c->first = c->next = slice * (uint64_t)c->index;
    c->end = c->first + slice;
    if (c->w->write && nbd_is_read_only(c->nbd) == 1) {
        snprintf(c->err, sizeof c->err, "%s: the export is read-only", c->uri);
        return -1;
    }
    return 0;
}

static int alloc_slots(struct conn *c)
{
    for (unsigned i = 0; i < c->qd; i++) {
        c->slots[i].conn = c;
        c->slots[i].buf = malloc(c->w->block);
        if (!c->slots[i].buf) {
            snprintf(c->err, sizeof c->err, "out of memory");
            return -1;
        }
        /* Random bytes: no server can skip them as zeroes. */
        for (uint32_t j = 0; j < c->w->block; j += 4) {
            uint32_t r = (uint32_t)nrand48(c->rand);
            memcpy(c->slots[i].buf + j, &r, 4);
        }
    }
    return 0;
}

/* The connections open first, all of them, then start together. */
static pthread_barrier_t ready;
static bool open_failed;

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    int rc = alloc_slots(c) == 0 ? open_conn(c) : -1;
    if (rc == -1)
        __atomic_store_n(&open_failed, true, __ATOMIC_SEQ_CST);
    pthread_barrier_wait(&ready);
    c->deadline = now_ns() + c->seconds * 1000000000u;
    if (rc == 0 && !__atomic_load_n(&open_failed, __ATOMIC_SEQ_CST))
        rc = run_conn(c);
    return rc == 0 ? NULL : c;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double percentile_us(const uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return (double)v[i] / 1000.0;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == -1)
        return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int report(const struct workload *w, struct conn *conns, int nconns, unsigned qd,
                  double elapsed, double cpu)
{
    size_t n = 0;
    for (int i = 0; i < nconns; i++)
        n += conns[i].nlat;
    uint64_t *all = malloc((n ? n : 1) * sizeof *all);
    if (!all) {
        fprintf(stderr, "nbdload: out of memory\n");
        return -1;
    }
    size_t k = 0;
    double sum = 0;
    for (int i = 0; i < nconns; i++) {
        memcpy(all + k, conns[i].lat, conns[i].nlat * sizeof *all);
        k += conns[i].nlat;
    }
    for (size_t i = 0; i < n; i++)
        sum += (double)all[i];
    qsort(all, n, sizeof *all, cmp_u64);
    struct json_object *o = json_object_new_object(), *lat = json_object_new_object();
    json_object_object_add(o, "workload", json_object_new_string(w->name));
    json_object_object_add(o, "block_size", json_object_new_int(w->block));
    json_object_object_add(o, "connections", json_object_new_int(nconns));
    json_object_object_add(o, "queue_depth", json_object_new_int((int)qd));
    json_object_object_add(o, "multi_conn",
                           json_object_new_boolean(nbd_can_multi_conn(conns[0].nbd) == 1));
    json_object_object_add(o, "tls",
                           json_object_new_boolean(nbd_get_tls_negotiated(conns[0].nbd) == 1));
    json_object_object_add(o, "seconds", json_object_new_double(elapsed));
    json_object_object_add(o, "requests", json_object_new_int64((int64_t)n));
    json_object_object_add(o, "iops", json_object_new_double((double)n / elapsed));
    json_object_object_add(o, "mib_s",
                           json_object_new_double((double)n * w->block / 1048576.0 / elapsed));
    json_object_object_add(lat, "mean", json_object_new_double(n ? sum / (double)n / 1000.0 : 0));
    json_object_object_add(lat, "p50", json_object_new_double(percentile_us(all, n, 50)));
    json_object_object_add(lat, "p99", json_object_new_double(percentile_us(all, n, 99)));
    json_object_object_add(lat, "max", json_object_new_double(n ? (double)all[n - 1] / 1000.0 : 0));
    json_object_object_add(o, "latency_us", lat);
    json_object_object_add(o, "client_cpu_us_per_request",
                           json_object_new_double(n ? cpu * 1e6 / (double)n : 0));
    free(all);
    int rc = puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY)) == EOF ? -1 : 0;
    json_object_put(o);
    if (rc == -1 || fflush(stdout) == EOF) {
        perror("nbdload: stdout");
        return -1;
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: nbdload URI WORKLOAD SECONDS CONNECTIONS QUEUE_DEPTH\n"
            "  URI          nbd://, nbds://, nbd+unix://, nbds+unix:// (libnbd's; TLS\n"
            "               credentials in its query: tls-certificates=DIR,\n"
            "               tls-psk-file=FILE, tls-username=NAME)\n"
            "  WORKLOAD     randwrite4k, randread4k, write1m or read1m\n"
            "  SECONDS      1 to %d\n"
            "  CONNECTIONS  1 to %d\n"
            "  QUEUE_DEPTH  requests in flight per connection, 1 to %d\n",
            MAX_SECONDS, MAX_CONNECTIONS, MAX_QUEUE_DEPTH);
}

/* parse_count: a decimal integer in [1, max], or -1. */
static long parse_count(const char *what, const char *s, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > max) {
        fprintf(stderr, "nbdload: %s \"%s\": expected an integer from 1 to %ld\n", what, s, max);
        return -1;
    }
    return v;
}

static const struct workload *find_workload(const char *name)
{
    for (size_t i = 0; i < sizeof WORKLOADS / sizeof WORKLOADS[0]; i++) {
        if (strcmp(WORKLOADS[i].name, name) == 0)
            return &WORKLOADS[i];
    }
    fprintf(stderr,
            "nbdload: workload \"%s\": expected randwrite4k, randread4k, write1m or read1m\n",
            name);
    return NULL;
}

static int check_uri(const char *uri)
{
    static const char *const schemes[] = {"nbd://", "nbds://", "nbd+unix://", "nbds+unix://"};
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        if (strncmp(uri, schemes[i], strlen(schemes[i])) == 0)
            return 0;
    }
    fprintf(stderr, "nbdload: URI \"%s\": expected nbd://, nbds://, nbd+unix:// or nbds+unix://\n",
            uri);
    return -1;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        usage();
        return 2;
    }
    const struct workload *w = find_workload(argv[2]);
    long seconds = parse_count("SECONDS", argv[3], MAX_SECONDS);
    long nconns = parse_count("CONNECTIONS", argv[4], MAX_CONNECTIONS);
    long qd = parse_count("QUEUE_DEPTH", argv[5], MAX_QUEUE_DEPTH);
    if (check_uri(argv[1]) == -1 || !w || seconds == -1 || nconns == -1 || qd == -1)
        return 2;

    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    pthread_t *threads = calloc((size_t)nconns, sizeof *threads);
    if (!conns || !threads || pthread_barrier_init(&ready, NULL, (unsigned)nconns + 1) != 0) {
        fprintf(stderr, "nbdload: out of memory\n");
        return 1;
    }
    uint64_t seed = now_ns();
    int started = 0, rc = 0;
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        *c = (struct conn){.w = w,
                           .uri = argv[1],
                           .seconds = (uint64_t)seconds,
                           .qd = (unsigned)qd,
                           .index = i,
                           .nconns = (int)nconns};
        c->rand[0] = (unsigned short)(seed + (uint64_t)i);
        c->rand[1] = (unsigned short)(seed >> 16);
        c->rand[2] = (unsigned short)(i * 7919);
        int e = pthread_create(&threads[i], NULL, conn_main, c);
        if (e) {
            /* The barrier counts every connection: without them all, stop. */
            fprintf(stderr, "nbdload: cannot start connection %d: %s\n", i, strerror(e));
            exit(1);
        }
        started++;
    }
    pthread_barrier_wait(&ready);
    uint64_t t0 = now_ns();
    double cpu0 = cpu_seconds();
    for (int i = 0; i < started; i++) {
        void *failed;
        pthread_join(threads[i], &failed);
        if (failed && conns[i].err[0]) {
            fprintf(stderr, "nbdload: %s\n", conns[i].err);
            rc = 1;
        }
    }
    double elapsed = (double)(now_ns() - t0) / 1e9;
    if (open_failed)
        rc = 1;
    if (rc == 0)
        rc =
            report(w, conns, (int)nconns, (unsigned)qd, elapsed, cpu_seconds() - cpu0) == 0 ? 0 : 1;
    for (int i = 0; i < nconns; i++) {
        if (conns[i].nbd) {
            nbd_shutdown(conns[i].nbd, 0);
            nbd_close(conns[i].nbd);
        }
        for (unsigned j = 0; j < (unsigned)qd; j++)
            free(conns[i].slots[j].buf);
        free(conns[i].lat);
    }
    free(conns);
    free(threads);
    return rc;
}
