/* snapshotter.c - the snapshotter thread (see snapshotter.h).
 *
 * A cut: the cut log opens, the journal's acked bounds are loaded, the
 * create command runs, the sent bounds are loaded, the log closes. Loading
 * acked before the command and sent after it can only widen each block's
 * window, never wrongly narrow it. The snapshot is then read 1 MiB at a
 * time, each piece through the next target after an error, for as long
 * as a writer resends (resend_ms); a snapshot that cannot be read is
 * logged and left unchecked, which fails the verification (snap_checked
 * < snapshots). Memory: three words per block of the volume and one
 * buffer, whatever the run's length.
 */
#include "tests/checker/snapshotter.h"
#include "tests/checker/block.h"
#include "tests/checker/conn.h"
#include "tests/checker/judge.h"
#include "tests/checker/writer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <qb/qblog.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* A create ends within its cut's deadline (2 s) plus the command's own
 * start; one still running after this is killed and counted as hung. */
#define CMD_TIMEOUT_MS 20000
#define CMD_POLL_MS 2
#define CREATE_TRIES 3
#define READ_BLOCKS 256 /* 1 MiB per read */
#define BACKOFF_MIN_MS 20
#define BACKOFF_MAX_MS 1000
#define MAX_REPORTS 20 /* violations logged in detail */
#define MAX_KEPT 64    /* names waiting for their delete */
#define NAME_LEN 32
#define EXIT_NO_SNAPSHOT 8
#define EXIT_BUSY 10

extern char **environ;

struct chk_snapshotter {
    struct chk_run *run;
    pthread_t thread;
    uint64_t commands; /* the N given to the command */
    uint64_t names;    /* the last name's number: chkN */
    int64_t t0;        /* CLOCK_MONOTONIC ms at the start, for the record */
    FILE *record;      /* LOG.snaps */
    uint64_t reports;
    uint64_t *acked_before, *sent_after, *held; /* per block */
    struct chk_stamps sends, acks;
    char **uris; /* the NBD targets, to append "@SNAP" to */
    size_t nuris;
    char **snap_uris;              /* the same with "@SNAP" */
    struct chk_conn *conns;        /* one per target, for the snapshot being read */
    size_t turn;                   /* added to a piece's number to pick its target */
    char kept[MAX_KEPT][NAME_LEN]; /* oldest first */
    size_t nkept;
    unsigned char *buf;
};

static bool stopping(const struct chk_run *run)
{
    return __atomic_load_n(&run->stop, __ATOMIC_RELAXED);
}

/* Waits for pid within CMD_TIMEOUT_MS; its exit status, or -ETIMEDOUT
 * once its process group is killed, or -EINTR if a signal killed it. */
static int wait_cmd(pid_t pid)
{
    int64_t deadline = chk_now_ms() + CMD_TIMEOUT_MS;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -EINTR;
        if (chk_now_ms() >= deadline) {
            kill(-pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            return -ETIMEDOUT;
        }
        chk_sleep_ms(CMD_POLL_MS);
    }
}

/* Runs SNAP_CMD op name N in its own process group (so a timeout kills
 * what it started too), its output to /dev/null, its errors to ours. */
static int run_cmd(struct chk_snapshotter *s, const char *op, const char *name)
{
    char n[24];
    char *argv[] = {(char *)s->run->snap_cmd, (char *)op, (char *)name, n, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t dfl;
    pid_t pid;
    int r;

    snprintf(n, sizeof(n), "%" PRIu64, s->commands++);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE); /* the checker ignores it; the command should not */
    if ((r = posix_spawn_file_actions_init(&fa)) != 0)
        return -r;
    if ((r = posix_spawnattr_init(&attr)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return -r;
    }
    r = posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    if (r == 0)
        r = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF);
    if (r == 0)
        r = posix_spawnattr_setsigdefault(&attr, &dfl);
    if (r == 0)
        r = posix_spawn(&pid, s->run->snap_cmd, &fa, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0) {
        qb_log(LOG_ERR, "checker: snapshotter: cannot run %s: %s", s->run->snap_cmd, strerror(r));
        return -r;
    }
    return wait_cmd(pid);
}

/* One create, with the journal's bounds and stamps around it. */
static int cut(struct chk_snapshotter *s, const char *name, int64_t *sent_ms, int64_t *back_ms,
               int *log_r)
{
    struct chk_journal *j = s->run->journal;
    int st;

    chk_cut_log_open(&s->run->cuts);
    for (uint64_t b = 0; b < j->nblocks; b++)
        s->acked_before[b] = __atomic_load_n(&j->blocks[b].acked, __ATOMIC_ACQUIRE);
    *sent_ms = chk_now_ms();
    st = run_cmd(s, "create", name);
    *back_ms = chk_now_ms();
    for (uint64_t b = 0; b < j->nblocks; b++)
        s->sent_after[b] = __atomic_load_n(&j->blocks[b].sent, __ATOMIC_ACQUIRE);
    *log_r = chk_cut_log_close(&s->run->cuts, &s->sends, &s->acks);
    return st;
}

static void keep(struct chk_snapshotter *s, const char *name)
{
    if (s->nkept == MAX_KEPT) {
        qb_log(LOG_WARNING, "checker: snapshotter: %s: too many snapshots left to delete", name);
        return;
    }
    snprintf(s->kept[s->nkept++], NAME_LEN, "%s", name);
}

/* Reads n blocks from first into s->buf: piece number piece goes to the
 * next target after the previous piece's, so a snapshot is read from
 * every node's copy in turn, and copies that differ (a write applied
 * before the cut on one node and after it on another) show as a mix
 * that breaks the rule; after an error, to the next target again, until
 * resend_ms have passed. */
static int read_piece(struct chk_snapshotter *s, uint64_t piece, uint64_t first, unsigned n)
{
    int64_t deadline = chk_now_ms() + s->run->resend_ms;
    unsigned backoff = BACKOFF_MIN_MS;
    unsigned timeout = s->run->op_timeout_ms;

    for (;;) {
        struct chk_conn *c = &s->conns[(piece + s->turn) % s->nuris];
        int r = chk_conn_open_p(c) ? 0 : chk_conn_open(c, timeout);
        if (r == 0)
            r = chk_conn_pread(c, s->buf, (size_t)n * CHK_BLOCK_SIZE, first * CHK_BLOCK_SIZE,
                               timeout);
        if (r == 0)
            return 0;
        qb_log(LOG_INFO, "checker: snapshotter: %s: read of %u blocks at block %" PRIu64 ": %s",
               c->target, n, first, strerror(-r));
        chk_conn_close(c);
        if (chk_now_ms() >= deadline)
            return r;
        s->turn++;
        chk_sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}

static void close_snapshot(struct chk_snapshotter *s)
{
    for (size_t i = 0; i < s->nuris; i++) {
        chk_conn_close(&s->conns[i]);
        free(s->snap_uris[i]);
        s->snap_uris[i] = NULL;
    }
}

/* Names snap_uris and sets up conns for snapshot name. */
static int open_snapshot(struct chk_snapshotter *s, const char *name)
{
    for (size_t i = 0; i < s->nuris; i++) {
        if (asprintf(&s->snap_uris[i], "%s@%s", s->uris[i], name) < 0) {
            s->snap_uris[i] = NULL;
            close_snapshot(s);
            return -ENOMEM;
        }
        chk_conn_init(&s->conns[i], s->snap_uris[i]);
    }
    return 0;
}

static uint64_t judge_piece(struct chk_snapshotter *s, const char *name, const struct chk_cut *c,
                            uint64_t first, unsigned n)
{
    uint32_t writers = s->run->journal->writers;
    uint64_t bad = 0;

    for (unsigned i = 0; i < n; i++) {
        uint64_t b = first + i;
        enum chk_read_verdict v =
            chk_snap_judge_block(s->buf + (size_t)i * CHK_BLOCK_SIZE, b, writers, c, &s->held[b]);
        if (!chk_read_violation(v))
            continue;
        bad++;
        if (s->reports++ < MAX_REPORTS)
            qb_log(LOG_ERR,
                   "checker: snapshot %s: block %" PRIu64 " (offset %" PRIu64
                   "): holds seq %" PRIu64 ": %s; journal: acked %" PRIu64
                   " before the cut was asked, sent %" PRIu64 " when it returned",
                   name, b, b * CHK_BLOCK_SIZE, s->held[b], chk_read_verdict_str(v),
                   c->acked_before[b], c->sent_after[b]);
    }
    return bad;
}

static uint64_t judge_causal(struct chk_snapshotter *s, const char *name, const struct chk_cut *c)
{
    struct chk_causal_miss m;
    uint64_t misses = chk_snap_judge_causal(c, s->held, &m);

    if (misses && s->reports++ < MAX_REPORTS)
        qb_log(LOG_ERR,
               "checker: snapshot %s: not a point in time: it holds block %" PRIu64
               "'s seq %" PRIu64 " but block %" PRIu64 " holds seq %" PRIu64 ", not seq %" PRIu64
               " acknowledged before that was sent (%" PRIu64 " such writes missing)",
               name, m.t_block, m.t_seq, m.block, m.held, m.seq, misses);
    return misses;
}

/* Reads snapshot name whole and judges it; 0 and *bad, or -errno if it
 * could not be read. */
static int check(struct chk_snapshotter *s, const char *name, uint64_t *bad)
{
    const struct chk_journal *j = s->run->journal;
    struct chk_cut c = {.acked_before = s->acked_before,
                        .sent_after = s->sent_after,
                        .sends = s->sends.v,
                        .nsends = s->sends.n,
                        .acks = s->acks.v,
                        .nacks = s->acks.n};
    int r = open_snapshot(s, name);

    *bad = 0;
    for (uint64_t first = 0; r == 0 && first < j->nblocks; first += READ_BLOCKS) {
        unsigned n =
            j->nblocks - first < READ_BLOCKS ? (unsigned)(j->nblocks - first) : READ_BLOCKS;
        r = read_piece(s, first / READ_BLOCKS, first, n);
        if (r == 0)
            *bad += judge_piece(s, name, &c, first, n);
    }
    close_snapshot(s);
    if (r < 0) {
        qb_log(LOG_ERR, "checker: snapshot %s: unreadable through every target for %u ms: %s", name,
               s->run->resend_ms, strerror(-r));
        return r;
    }
    *bad += judge_causal(s, name, &c);
    return 0;
}

static void judge_cut(struct chk_snapshotter *s, const char *name, int log_r)
{
    struct chk_journal *j = s->run->journal;
    uint64_t bad = 0;
    int r = log_r;

    __atomic_add_fetch(&j->snapshots, 1, __ATOMIC_RELAXED);
    if (r < 0)
        qb_log(LOG_ERR, "checker: snapshot %s: the writers' stamps were not all kept: unchecked",
               name);
    else
        r = check(s, name, &bad);
    if (r == 0) {
        __atomic_add_fetch(&j->snap_checked, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&j->snap_bad, bad, __ATOMIC_RELAXED);
    }
    fprintf(s->record,
            "%s %s violations=%" PRIu64 " (%zu writes sent, %zu acknowledged in the cut)\n", name,
            r == 0 ? "checked" : "unchecked", bad, s->sends.n, s->acks.n);
    qb_log(LOG_INFO, "checker: snapshot %s: %s, %" PRIu64 " violations", name,
           r == 0 ? "checked" : "unchecked", bad);
}

/* One snapshot, through up to CREATE_TRIES nodes. */
static void take_one(struct chk_snapshotter *s)
{
    for (int t = 0; t < CREATE_TRIES && !stopping(s->run); t++) {
        char name[NAME_LEN];
        int64_t sent_ms, back_ms;
        int log_r;

        snprintf(name, sizeof(name), "chk%" PRIu64, ++s->names);
        int st = cut(s, name, &sent_ms, &back_ms, &log_r);
        fprintf(s->record,
                "%s create: exit %d, sent at %" PRId64 " ms, returned at %" PRId64 " ms\n", name,
                st, sent_ms - s->t0, back_ms - s->t0);
        qb_log(LOG_INFO, "checker: snapshot %s: create exited %d after %" PRId64 " ms", name, st,
               back_ms - sent_ms);
        if (st == EXIT_BUSY) {
            __atomic_add_fetch(&s->run->snap_aborted, 1, __ATOMIC_RELAXED);
            return;
        }
        keep(s, name); /* after any other failure, it might have been cut all the same */
        if (st == 0) {
            judge_cut(s, name, log_r);
            return;
        }
        if (st == -ETIMEDOUT) {
            qb_log(LOG_WARNING, "checker: snapshot %s: create still running after %u ms: killed",
                   name, CMD_TIMEOUT_MS);
            __atomic_add_fetch(&s->run->snap_hung, 1, __ATOMIC_RELAXED);
        }
        __atomic_add_fetch(&s->run->snap_failed, 1, __ATOMIC_RELAXED);
    }
}

/* Deletes the oldest names beyond snap_keep; stops at the first refusal
 * (tried again after the next cut, through another node). */
static void prune(struct chk_snapshotter *s)
{
    while (s->nkept > s->run->snap_keep) {
        int st = run_cmd(s, "delete", s->kept[0]);
        fprintf(s->record, "%s delete: exit %d\n", s->kept[0], st);
        if (st != 0 && st != EXIT_NO_SNAPSHOT)
            return;
        memmove(s->kept[0], s->kept[1], (s->nkept - 1) * sizeof(s->kept[0]));
        s->nkept--;
    }
}

static void *snapshotter_main(void *arg)
{
    struct chk_snapshotter *s = arg;
    int64_t next = chk_now_ms() + s->run->snap_every_ms;

    while (!stopping(s->run)) {
        int64_t now = chk_now_ms();
        if (now < next) {
            chk_sleep_ms(next - now < 100 ? (unsigned)(next - now) : 100);
            continue;
        }
        next = now + s->run->snap_every_ms;
        take_one(s);
        prune(s);
        fflush(s->record);
    }
    return NULL;
}

static void snapshotter_free(struct chk_snapshotter *s)
{
    if (s->record)
        fclose(s->record);
    free(s->acked_before);
    free(s->sent_after);
    free(s->held);
    free(s->sends.v);
    free(s->acks.v);
    free(s->uris);
    free(s->snap_uris);
    free(s->conns);
    free(s->buf);
    free(s);
}

static int snapshotter_alloc(struct chk_run *run, struct chk_snapshotter *s)
{
    uint64_t nblocks = run->journal->nblocks;
    char path[4096];

    s->run = run;
    s->t0 = chk_now_ms();
    s->acked_before = calloc(nblocks, sizeof(uint64_t));
    s->sent_after = calloc(nblocks, sizeof(uint64_t));
    s->held = calloc(nblocks, sizeof(uint64_t));
    s->uris = calloc(run->ntargets, sizeof(char *));
    s->snap_uris = calloc(run->ntargets, sizeof(char *));
    s->conns = calloc(run->ntargets, sizeof(struct chk_conn));
    s->buf = aligned_alloc(4096, READ_BLOCKS * CHK_BLOCK_SIZE);
    if (!s->acked_before || !s->sent_after || !s->held || !s->uris || !s->snap_uris || !s->conns ||
        !s->buf)
        return -ENOMEM;
    for (size_t i = 0; i < run->ntargets; i++) {
        chk_conn_init(&s->conns[i], NULL); /* closed: no descriptor */
        if (run->targets[i][0] != '/')
            s->uris[s->nuris++] = run->targets[i];
    }
    if (!s->nuris) {
        qb_log(LOG_ERR, "checker: snapshotter: no NBD target to read snapshots through");
        return -EINVAL;
    }
    if (snprintf(path, sizeof(path), "%s.snaps", run->log_path) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    s->record = fopen(path, "we");
    if (!s->record) {
        int r = -errno;
        qb_log(LOG_ERR, "checker: snapshotter: cannot open %s: %s", path, strerror(-r));
        return r;
    }
    return 0;
}

int chk_snapshotter_start(struct chk_run *run, struct chk_snapshotter **out)
{
    struct chk_snapshotter *s;
    int r;

    *out = NULL;
    if (!run->snap_cmd)
        return 0;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    r = snapshotter_alloc(run, s);
    if (r == 0) {
        r = -pthread_create(&s->thread, NULL, snapshotter_main, s);
        if (r < 0)
            qb_log(LOG_ERR, "checker: cannot start the snapshotter: %s", strerror(-r));
    }
    if (r < 0) {
        snapshotter_free(s);
        return r;
    }
    *out = s;
    return 0;
}

void chk_snapshotter_join(struct chk_snapshotter *s)
{
    if (!s)
        return;
    pthread_join(s->thread, NULL);
    snapshotter_free(s);
}
