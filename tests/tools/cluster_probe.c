/* cluster_probe.c - drives one cluster transport from the command line,
 * for the integration tests (tests/integration/t-corosync.sh).
 *
 * It joins a group with the corosync driver (or the local one, -l) and
 * prints every event as one line on stdout, prefixed with the wall-clock
 * time so that a test can measure detection delays:
 *
 *   TIME ready nodeid=N pid=P
 *   TIME quorum 0|1
 *   TIME confchg members=N/P,... left=N/P/left|nodedown|procdown,... joined=N/P,...
 *   TIME deliver NODEID PID LEN TEXT      (TEXT: the message, if printable,
 *                                         else fnv=HASH of its bytes)
 *
 * Commands come one per line on stdin:
 *
 *   send TEXT                 multicast TEXT from the loop thread
 *   big LEN                   multicast LEN pattern bytes; prints "sent-big LEN fnv=HASH"
 *   burst TAG THREADS COUNT   THREADS threads each send "TAG T I" for I < COUNT,
 *                             then "burst-done TAG" is printed
 *   nodelist                  prints "node ID NAME ADDR" lines, then "nodelist N"
 *   quit                      leaves the group and exits (so does end of input)
 *
 * A failed send prints "send-failed -ERRNO NAME". If init fails it prints
 * "init-failed -ERRNO NAME" and exits 1. Logs go to stderr.
 *
 * Build: make build/tests/cluster_probe (SANITIZE=1: build/sanitize/...).
 * Usage: cluster_probe [-l] [-v] [-g GROUP]
 */
#include "policing/cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <qb/qbdefs.h>
#include <qb/qblog.h>
#include <qb/qbloop.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_BURSTS 16
#define MAX_THREADS 16
#define LINE_MAX_LEN 512

struct probe {
    const struct cluster_driver *drv;
    struct cluster *c;
    qb_loop_t *loop;
    char in[LINE_MAX_LEN];
    size_t in_len;
    pthread_t bursts[MAX_BURSTS]; /* main thread only */
    size_t nbursts;
};

struct burst {
    struct probe *p;
    char tag[64];
    int threads;
    int count;
    int index; /* of one worker */
};

/* Keeps lines from several threads whole. */
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void __attribute__((format(printf, 1, 2))) out(const char *fmt, ...)
{
    struct timespec ts;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    pthread_mutex_lock(&out_lock);
    printf("%lld.%06ld ", (long long)ts.tv_sec, ts.tv_nsec / 1000);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
}

static uint64_t fnv1a(const unsigned char *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;

    for (i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static bool printable(const unsigned char *p, size_t len)
{
    size_t i;

    if (len == 0 || len > 256)
        return false;
    for (i = 0; i < len; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return false;
    return true;
}

static void on_deliver(void *ctx, uint32_t nodeid, uint32_t pid, const void *msg, size_t len)
{
    (void)ctx;
    if (printable(msg, len))
        out("deliver %" PRIu32 " %" PRIu32 " %zu %.*s", nodeid, pid, len, (int)len,
            (const char *)msg);
    else
        out("deliver %" PRIu32 " %" PRIu32 " %zu fnv=%016" PRIx64, nodeid, pid, len,
            fnv1a(msg, len));
}

static const char *reason_name(enum cluster_leave_reason r)
{
    switch (r) {
    case CLUSTER_LEFT:
        return "left";
    case CLUSTER_NODEDOWN:
        return "nodedown";
    case CLUSTER_PROCDOWN:
        return "procdown";
    }
    return "unknown";
}

static void format_members(char *buf, size_t size, const struct cluster_member *m, size_t n,
                           bool reasons)
{
    size_t i, used = 0;

    buf[0] = '\0';
    for (i = 0; i < n && used < size; i++) {
        int w = snprintf(buf + used, size - used, "%s%" PRIu32 "/%" PRIu32 "%s%s", i ? "," : "",
                         m[i].nodeid, m[i].pid, reasons ? "/" : "",
                         reasons ? reason_name(m[i].reason) : "");
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

static void on_confchg(void *ctx, const struct cluster_member *members, size_t n,
                       const struct cluster_member *left, size_t nleft,
                       const struct cluster_member *joined, size_t njoined)
{
    char m[1024], l[1024], j[1024];

    (void)ctx;
    format_members(m, sizeof m, members, n, false);
    format_members(l, sizeof l, left, nleft, true);
    format_members(j, sizeof j, joined, njoined, false);
    out("confchg members=%s left=%s joined=%s", m, l, j);
}

static void on_quorum(void *ctx, bool quorate)
{
    (void)ctx;
    out("quorum %d", quorate ? 1 : 0);
}

static const struct cluster_events events = {
    .deliver = on_deliver,
    .confchg = on_confchg,
    .quorum = on_quorum,
};

static const char *errname(int r)
{
    const char *name = strerrorname_np(-r);

    return name ? name : "?";
}

static void send_failed(int r)
{
    out("send-failed %d %s", r, errname(r));
}

static void cmd_send(struct probe *p, const char *text)
{
    int r = p->drv->send(p->c, text, strlen(text));

    if (r < 0)
        send_failed(r);
}

static void cmd_big(struct probe *p, const char *arg)
{
    unsigned char *buf;
    char *end;
    size_t len, i;
    int r;

    errno = 0;
    len = strtoul(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || len > 2 * CLUSTER_MSG_MAX) {
        out("error big: bad length \"%s\" (0..%d)", arg, 2 * CLUSTER_MSG_MAX);
        return;
    }
    buf = malloc(len ? len : 1);
    if (buf == NULL) {
        out("error big %zu: out of memory", len);
        return;
    }
    for (i = 0; i < len; i++)
        buf[i] = (unsigned char)(i * 7 + len);
    r = p->drv->send(p->c, buf, len);
    if (r < 0)
        send_failed(r);
    else
        out("sent-big %zu fnv=%016" PRIx64, len, fnv1a(buf, len));
    free(buf);
}

static void *burst_worker(void *arg)
{
    struct burst *b = arg;
    char msg[128];
    int i, r;

    for (i = 0; i < b->count; i++) {
        snprintf(msg, sizeof msg, "%s %d %d", b->tag, b->index, i);
        r = b->p->drv->send(b->p->c, msg, strlen(msg));
        if (r < 0) {
            send_failed(r);
            break;
        }
    }
    return NULL;
}

/* Starts the workers together and reports when all have sent. */
static void *burst_main(void *arg)
{
    struct burst *b = arg, w[MAX_THREADS];
    pthread_t t[MAX_THREADS];
    int i, started = 0;

    for (i = 0; i < b->threads; i++) {
        w[i] = *b;
        w[i].index = i;
        if (pthread_create(&t[i], NULL, burst_worker, &w[i]) != 0) {
            out("error burst %s: pthread_create failed", b->tag);
            break;
        }
        started++;
    }
    for (i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    out("burst-done %s", b->tag);
    free(b);
    return NULL;
}

static void cmd_burst(struct probe *p, const char *arg)
{
    struct burst *b = calloc(1, sizeof *b);

    if (b == NULL || p->nbursts == MAX_BURSTS ||
        sscanf(arg, "%63s %d %d", b->tag, &b->threads, &b->count) != 3 || b->threads < 1 ||
        b->threads > MAX_THREADS || b->count < 0) {
        out("error burst: bad arguments \"%s\" (TAG THREADS<=%d COUNT)", arg, MAX_THREADS);
        free(b);
        return;
    }
    b->p = p;
    if (pthread_create(&p->bursts[p->nbursts], NULL, burst_main, b) != 0) {
        out("error burst %s: pthread_create failed", b->tag);
        free(b);
        return;
    }
    p->nbursts++;
}

static void cmd_nodelist(struct probe *p)
{
    struct cluster_node nodes[CLUSTER_NODES_MAX];
    int i, n = p->drv->nodelist(p->c, nodes, CLUSTER_NODES_MAX);

    if (n < 0) {
        out("nodelist-failed %d %s", n, errname(n));
        return;
    }
    for (i = 0; i < n; i++)
        out("node %" PRIu32 " %s %s", nodes[i].nodeid, nodes[i].name, nodes[i].addr);
    out("nodelist %d", n);
}

static void run_command(struct probe *p, char *line)
{
    if (strncmp(line, "send ", 5) == 0)
        cmd_send(p, line + 5);
    else if (strncmp(line, "big ", 4) == 0)
        cmd_big(p, line + 4);
    else if (strncmp(line, "burst ", 6) == 0)
        cmd_burst(p, line + 6);
    else if (strcmp(line, "nodelist") == 0)
        cmd_nodelist(p);
    else if (strcmp(line, "quit") == 0)
        qb_loop_stop(p->loop);
    else if (line[0] != '\0')
        out("error unknown command \"%s\"", line);
}

static int32_t on_stdin(int32_t fd, int32_t revents, void *data)
{
    struct probe *p = data;
    ssize_t n;
    char *nl;

    (void)revents;
    n = read(fd, p->in + p->in_len, sizeof p->in - 1 - p->in_len);
    if (n <= 0) {
        qb_loop_stop(p->loop);
        return -1;
    }
    p->in_len += (size_t)n;
    p->in[p->in_len] = '\0';
    while ((nl = strchr(p->in, '\n')) != NULL) {
        *nl = '\0';
        run_command(p, p->in);
        p->in_len -= (size_t)(nl + 1 - p->in);
        memmove(p->in, nl + 1, p->in_len + 1);
    }
    if (p->in_len == sizeof p->in - 1) {
        out("error command line too long");
        p->in_len = 0;
    }
    return 0;
}

static int32_t on_signal(int32_t sig, void *data)
{
    (void)sig;
    qb_loop_stop(((struct probe *)data)->loop);
    return 0;
}

static void setup_log(bool verbose)
{
    qb_log_init("cluster_probe", LOG_DAEMON, LOG_INFO);
    qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
    qb_log_filter_ctl(QB_LOG_STDERR, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*",
                      verbose ? LOG_DEBUG : LOG_INFO);
    qb_log_format_set(QB_LOG_STDERR, "%t cluster_probe: %p: %b");
    qb_log_ctl(QB_LOG_STDERR, QB_LOG_CONF_ENABLED, QB_TRUE);
}

static int run(struct probe *p, const char *group)
{
    qb_loop_signal_handle sig_term, sig_int;
    int r;

    p->loop = qb_loop_create();
    if (p->loop == NULL) {
        fprintf(stderr, "cluster_probe: qb_loop_create failed\n");
        return 1;
    }
    if (qb_loop_signal_add(p->loop, QB_LOOP_HIGH, SIGTERM, p, on_signal, &sig_term) < 0 ||
        qb_loop_signal_add(p->loop, QB_LOOP_HIGH, SIGINT, p, on_signal, &sig_int) < 0 ||
        qb_loop_poll_add(p->loop, QB_LOOP_LOW, STDIN_FILENO, POLLIN, p, on_stdin) < 0) {
        fprintf(stderr, "cluster_probe: setting up the loop failed\n");
        qb_loop_destroy(p->loop);
        return 1;
    }
    r = p->drv->init(&p->c, group, p->loop, &events, p);
    if (r < 0) {
        out("init-failed %d %s", r, errname(r));
        qb_loop_destroy(p->loop);
        return 1;
    }
    out("ready nodeid=%" PRIu32 " pid=%d", p->drv->local_nodeid(p->c), (int)getpid());
    qb_loop_run(p->loop);
    while (p->nbursts > 0)
        pthread_join(p->bursts[--p->nbursts], NULL);
    p->drv->fini(p->c);
    qb_loop_destroy(p->loop);
    return 0;
}

int main(int argc, char **argv)
{
    struct probe p = {.drv = &cluster_corosync};
    const char *group = "vsan-probe";
    bool verbose = false;
    int opt, status;

    while ((opt = getopt(argc, argv, "lvg:")) != -1) {
        switch (opt) {
        case 'l':
            p.drv = &cluster_local;
            break;
        case 'v':
            verbose = true;
            break;
        case 'g':
            group = optarg;
            break;
        default:
            fprintf(stderr, "usage: %s [-l] [-v] [-g GROUP]\n", argv[0]);
            return 2;
        }
    }
    setup_log(verbose);
    status = run(&p, group);
    qb_log_fini();
    return status;
}
