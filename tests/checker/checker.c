/* checker.c - the lost-write checker's command line: a write run through
 * NBD targets with failover, with readers judging what they read as it
 * goes, or the verification of the replicas after one (see writer.h,
 * reader.h and verify.h; the lab test t-lab-checker.sh and the nemesis
 * drive both).
 *
 *   checker --targets URI[,URI...] --volume-size N --writers W --seconds S --log FILE
 *           [--readers R] [--read-pause-ms MS] [--op-timeout-ms MS] [--resend-ms MS]
 *           [--rotate-ms MS] [--seed N] [--snapshot-cmd PROG [--snapshot-every-ms MS]
 *           [--snapshot-keep K]] [-v]
 *   checker --verify --log FILE --files F1[,F2...] [--region-size N] [--cycles N]
 *
 * R is one reader per target by default, each pausing MS (5) after a read. With --snapshot-cmd, a
 * snapshot is cut every MS (3000) through PROG and judged (snapshotter.h), K (10) kept. A run
 * prints "checker: run: ..." with its totals and exits 1 if any write went unacknowledged for the
 * whole resend budget, any read broke the readers' rule or any snapshot the snapshots'. A
 * verification prints one line, "checker: cycles=C acknowledged=A lost=L divergent=D reads=R
 * stale=S snapshots=N snap_checked=K snap_bad=B" (S: the run's reads that broke the rule; N: its
 * snapshots, K of them read and judged, B violations in them), and exits 1 if L, D, S or B is not 0
 * or K is not N. Usage errors exit 2. Details go to stderr.
 */
#include "tests/checker/journal.h"
#include "tests/checker/verify.h"
#include "tests/checker/writer.h"
#include "common/log.h"
#include "common/size.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <qb/qblog.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#define EXIT_USAGE 2
#define MAX_LIST 16

struct options {
    bool verify;
    char *targets[MAX_LIST];
    size_t ntargets;
    char *files[MAX_LIST];
    size_t nfiles;
    uint64_t volume_size;
    uint64_t region_size;
    uint64_t writers;
    uint64_t readers;
    uint64_t read_pause_ms;
    uint64_t seconds;
    uint64_t cycles;
    uint64_t op_timeout_ms;
    uint64_t resend_ms;
    uint64_t rotate_ms;
    uint64_t seed;
    const char *snap_cmd;
    uint64_t snap_every_ms;
    uint64_t snap_keep;
    const char *log;
    bool verbose;
};

static struct chk_run *running; /* for the signal handler */

static void usage(FILE *f)
{
    fputs(
        "usage: checker --targets URI[,URI...] --volume-size N --writers W --seconds S "
        "--log FILE\n"
        "               [--readers R] [--read-pause-ms MS] [--op-timeout-ms MS] [--resend-ms MS]\n"
        "               [--rotate-ms MS] [--seed N] [--snapshot-cmd PROG [--snapshot-every-ms MS]\n"
        "               [--snapshot-keep K]] [-v]\n"
        "       checker --verify --log FILE --files F1[,F2...] [--region-size N] "
        "[--cycles N]\n",
        f);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "checker: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    usage(stderr);
    return -EINVAL;
}

/* Splits a comma-separated list in place. */
static int split_list(char *s, char **out, size_t *n, const char *what)
{
    for (char *save = NULL, *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == MAX_LIST)
            return usage_error("too many %s (at most 16)", what);
        out[(*n)++] = tok;
    }
    return *n ? 0 : usage_error("--%s: empty list", what);
}

static int parse_size(const char *opt, const char *s, uint64_t *out)
{
    return size_parse(s, out) == 0 ? 0 : usage_error("bad number or size: %s", opt);
}

enum {
    OPT_TARGETS = 256,
    OPT_FILES,
    OPT_VOLUME_SIZE,
    OPT_REGION_SIZE,
    OPT_WRITERS,
    OPT_READERS,
    OPT_READ_PAUSE,
    OPT_SECONDS,
    OPT_CYCLES,
    OPT_OP_TIMEOUT,
    OPT_RESEND,
    OPT_ROTATE,
    OPT_SEED,
    OPT_SNAP_CMD,
    OPT_SNAP_EVERY,
    OPT_SNAP_KEEP,
    OPT_LOG,
    OPT_VERIFY,
};

static const struct option longopts[] = {
    {"targets", required_argument, NULL, OPT_TARGETS},
    {"files", required_argument, NULL, OPT_FILES},
    {"volume-size", required_argument, NULL, OPT_VOLUME_SIZE},
    {"region-size", required_argument, NULL, OPT_REGION_SIZE},
    {"writers", required_argument, NULL, OPT_WRITERS},
    {"readers", required_argument, NULL, OPT_READERS},
    {"read-pause-ms", required_argument, NULL, OPT_READ_PAUSE},
    {"seconds", required_argument, NULL, OPT_SECONDS},
    {"cycles", required_argument, NULL, OPT_CYCLES},
    {"op-timeout-ms", required_argument, NULL, OPT_OP_TIMEOUT},
    {"resend-ms", required_argument, NULL, OPT_RESEND},
    {"rotate-ms", required_argument, NULL, OPT_ROTATE},
    {"seed", required_argument, NULL, OPT_SEED},
    {"snapshot-cmd", required_argument, NULL, OPT_SNAP_CMD},
    {"snapshot-every-ms", required_argument, NULL, OPT_SNAP_EVERY},
    {"snapshot-keep", required_argument, NULL, OPT_SNAP_KEEP},
    {"log", required_argument, NULL, OPT_LOG},
    {"verify", no_argument, NULL, OPT_VERIFY},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int parse_one(struct options *o, int c, char *arg)
{
    switch (c) {
    case OPT_TARGETS:
        return split_list(arg, o->targets, &o->ntargets, "targets");
    case OPT_FILES:
        return split_list(arg, o->files, &o->nfiles, "files");
    case OPT_VOLUME_SIZE:
        return parse_size("--volume-size", arg, &o->volume_size);
    case OPT_REGION_SIZE:
        return parse_size("--region-size", arg, &o->region_size);
    case OPT_WRITERS:
        return parse_size("--writers", arg, &o->writers);
    case OPT_READERS:
        return parse_size("--readers", arg, &o->readers);
    case OPT_READ_PAUSE:
        return parse_size("--read-pause-ms", arg, &o->read_pause_ms);
    case OPT_SECONDS:
        return parse_size("--seconds", arg, &o->seconds);
    case OPT_CYCLES:
        return parse_size("--cycles", arg, &o->cycles);
    case OPT_OP_TIMEOUT:
        return parse_size("--op-timeout-ms", arg, &o->op_timeout_ms);
    case OPT_RESEND:
        return parse_size("--resend-ms", arg, &o->resend_ms);
    case OPT_ROTATE:
        return parse_size("--rotate-ms", arg, &o->rotate_ms);
    case OPT_SEED:
        return parse_size("--seed", arg, &o->seed);
    case OPT_SNAP_CMD:
        o->snap_cmd = arg;
        return 0;
    case OPT_SNAP_EVERY:
        return parse_size("--snapshot-every-ms", arg, &o->snap_every_ms);
    case OPT_SNAP_KEEP:
        return parse_size("--snapshot-keep", arg, &o->snap_keep);
    case OPT_LOG:
        o->log = arg;
        return 0;
    case OPT_VERIFY:
        o->verify = true;
        return 0;
    case 'v':
        o->verbose = true;
        return 0;
    default:
        usage(stderr);
        return -EINVAL;
    }
}

static int check_options(const struct options *o)
{
    if (!o->log)
        return usage_error("%s", "--log FILE is required");
    if (o->verify)
        return o->nfiles ? 0 : usage_error("%s", "--verify needs --files");
    if (!o->ntargets)
        return usage_error("%s", "--targets is required");
    if (o->writers == 0 || o->writers > UINT32_MAX)
        return usage_error("%s", "--writers: give 1 or more");
    if (o->readers > 1024)
        return usage_error("%s", "--readers: at most 1024");
    if (o->volume_size == 0 || o->volume_size % 4096 || o->volume_size / 4096 < o->writers)
        return usage_error("%s",
                           "--volume-size: a multiple of 4096, one block per writer at least");
    if (o->seconds > UINT32_MAX || o->op_timeout_ms == 0 || o->op_timeout_ms > INT32_MAX ||
        o->resend_ms > UINT32_MAX || o->rotate_ms > UINT32_MAX || o->read_pause_ms > 60000 ||
        o->snap_every_ms > UINT32_MAX)
        return usage_error("%s", "a time out of range");
    if (o->snap_keep > 32)
        return usage_error("%s", "--snapshot-keep: at most 32");
    return 0;
}

static int parse_options(struct options *o, int argc, char **argv)
{
    int c;

    *o = (struct options){.readers = UINT64_MAX, /* one per target unless given */
                          .read_pause_ms = 5,
                          .region_size = 4u << 20,
                          .op_timeout_ms = 5000,
                          .resend_ms = 60000,
                          .rotate_ms = 2000,
                          .snap_every_ms = 3000,
                          .snap_keep = 10,
                          .seed = (uint64_t)time(NULL)};
    while ((c = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            exit(0);
        }
        int r = parse_one(o, c, optarg);
        if (r < 0)
            return r;
    }
    if (optind < argc)
        return usage_error("unexpected argument \"%s\"", argv[optind]);
    if (o->readers == UINT64_MAX)
        o->readers = o->ntargets;
    return check_options(o);
}

static void on_signal(int sig)
{
    (void)sig;
    if (running)
        __atomic_store_n(&running->stop, true, __ATOMIC_RELAXED);
}

static int setup_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal};

    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
        return -errno;
    sa.sa_handler = SIG_IGN;
    return sigaction(SIGPIPE, &sa, NULL) < 0 ? -errno : 0;
}

static int do_run(const struct options *o)
{
    struct chk_journal j;
    struct chk_run run = {.targets = (char **)o->targets,
                          .ntargets = o->ntargets,
                          .op_timeout_ms = (unsigned)o->op_timeout_ms,
                          .resend_ms = (unsigned)o->resend_ms,
                          .rotate_ms = (unsigned)o->rotate_ms,
                          .seed = o->seed,
                          .journal = &j,
                          .log_path = o->log,
                          .readers = (unsigned)o->readers,
                          .read_pause_ms = (unsigned)o->read_pause_ms,
                          .snap_cmd = o->snap_cmd,
                          .snap_every_ms = (unsigned)o->snap_every_ms,
                          .snap_keep = (unsigned)o->snap_keep};
    int r = chk_journal_init(&j, o->volume_size, (uint32_t)o->writers);

    if (r < 0) {
        qb_log(LOG_ERR, "checker: cannot set up the journal: %s", strerror(-r));
        return EXIT_USAGE;
    }
    running = &run;
    r = setup_signals();
    if (r == 0)
        r = chk_run_for(&run, (unsigned)o->seconds);
    running = NULL;
    printf("checker: run: seconds=%" PRIu64 " writers=%" PRIu64 " targets=%zu acknowledged=%" PRIu64
           " failed=%" PRIu64 " failovers=%" PRIu64 " readers=%" PRIu64 " reads=%" PRIu64
           " stale=%" PRIu64 " read_failures=%" PRIu64 " snapshots=%" PRIu64
           " snap_aborted=%" PRIu64 " snap_failed=%" PRIu64 " snap_hung=%" PRIu64
           " snap_checked=%" PRIu64 " snap_bad=%" PRIu64 " seed=%" PRIu64 "\n",
           o->seconds, o->writers, o->ntargets, j.acknowledged, j.failed, run.failovers, o->readers,
           j.reads, j.stale, run.read_failures, j.snapshots, run.snap_aborted, run.snap_failed,
           run.snap_hung, j.snap_checked, j.snap_bad, o->seed);
    chk_journal_free(&j);
    if (r < 0) {
        qb_log(LOG_ERR, "checker: run failed: %s", strerror(-r));
        return EXIT_USAGE;
    }
    return j.failed || j.stale || j.snap_bad || j.snap_checked < j.snapshots ? 1 : 0;
}

static int do_verify(const struct options *o)
{
    struct chk_journal j;
    struct chk_verdict v;
    int r = chk_journal_load(&j, o->log);

    if (r < 0) {
        qb_log(LOG_ERR, "checker: cannot load the journal %s: %s", o->log, strerror(-r));
        return EXIT_USAGE;
    }
    r = chk_verify_files(&j, (char **)o->files, o->nfiles, o->region_size, &v);
    if (r < 0) {
        qb_log(LOG_ERR, "checker: verify failed: %s", strerror(-r));
        chk_journal_free(&j);
        return EXIT_USAGE;
    }
    printf("checker: cycles=%" PRIu64 " acknowledged=%" PRIu64 " lost=%" PRIu64
           " divergent=%" PRIu64 " reads=%" PRIu64 " stale=%" PRIu64 " snapshots=%" PRIu64
           " snap_checked=%" PRIu64 " snap_bad=%" PRIu64 "\n",
           o->cycles, j.acknowledged, v.lost, v.divergent, j.reads, j.stale, j.snapshots,
           j.snap_checked, j.snap_bad);
    chk_journal_free(&j);
    return v.lost || v.divergent || j.stale || j.snap_bad || j.snap_checked < j.snapshots ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct options o;
    int status;

    if (parse_options(&o, argc, argv) < 0)
        return EXIT_USAGE;
    if (log_open("checker", o.verbose ? LOG_INFO : LOG_WARNING, false) < 0 ||
        log_stderr(o.verbose ? LOG_INFO : LOG_WARNING) < 0) {
        fprintf(stderr, "checker: cannot set up logging\n");
        return EXIT_USAGE;
    }
    status = o.verify ? do_verify(&o) : do_run(&o);
    log_close();
    return status;
}
