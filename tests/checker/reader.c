/* reader.c - the reader threads (see reader.h).
 *
 * For each block of a read, the last sequence acknowledged is loaded
 * before the read is sent and the highest sent after it returns; the
 * writers store sent before a write leaves and acked after its reply
 * (release), so these bounds hold whatever the reader's timing. Memory is
 * one 256 KiB buffer and one bound per block of it, per reader.
 */
#include "tests/checker/reader.h"
#include "tests/checker/block.h"
#include "tests/checker/conn.h"
#include "tests/checker/judge.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <qb/qblog.h>
#include <stdlib.h>
#include <string.h>

#define MAX_READ_BLOCKS 64 /* 256 KiB */
#define BACKOFF_MIN_MS 20
#define BACKOFF_MAX_MS 1000
#define MAX_REPORTS 20 /* violations logged in detail, over all readers */

struct reader {
    struct chk_run *run;
    unsigned id;
    struct chk_conn conn;
    uint64_t rng;
    unsigned backoff;
    pthread_t thread;
    uint64_t acked[MAX_READ_BLOCKS];
    unsigned char buf[MAX_READ_BLOCKS * CHK_BLOCK_SIZE];
};

struct chk_readers {
    struct chk_run *run;
    unsigned started;
    struct reader r[];
};

static uint64_t reports; /* violations logged so far */

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void report(const struct reader *rd, uint64_t block, enum chk_read_verdict v, uint64_t seq,
                   const struct chk_window *w)
{
    int level = chk_read_violation(v) ? LOG_ERR : LOG_INFO;

    if (level == LOG_ERR && __atomic_fetch_add(&reports, 1, __ATOMIC_RELAXED) >= MAX_REPORTS)
        return;
    qb_log(level,
           "checker: reader %u: %s: block %" PRIu64 " (offset %" PRIu64 "): read seq %" PRIu64
           ": %s; journal: acked %" PRIu64 " before the read, sent %" PRIu64 " after it",
           rd->id, rd->conn.target, block, block * CHK_BLOCK_SIZE, seq, chk_read_verdict_str(v),
           w->acked_at_send, w->sent_at_return);
}

/* Judges the n blocks from first in rd->buf; returns the violations. */
static uint64_t judge_all(struct reader *rd, uint64_t first, unsigned n)
{
    struct chk_journal *j = rd->run->journal;
    uint64_t bad = 0;

    for (unsigned i = 0; i < n; i++) {
        struct chk_window w = {.acked_at_send = rd->acked[i],
                               .sent_at_return =
                                   __atomic_load_n(&j->blocks[first + i].sent, __ATOMIC_ACQUIRE)};
        uint64_t seq;
        enum chk_read_verdict v =
            chk_read_judge(rd->buf + (size_t)i * CHK_BLOCK_SIZE, first + i, j->writers, &w, &seq);
        if (v != CHK_READ_OK)
            report(rd, first + i, v, seq, &w);
        bad += chk_read_violation(v) ? 1 : 0;
    }
    return bad;
}

static void read_failed(struct reader *rd, uint64_t first, unsigned n, const char *stage, int r)
{
    qb_log(LOG_INFO, "checker: reader %u: %s: %s of %u blocks at block %" PRIu64 ": %s", rd->id,
           rd->conn.target, stage, n, first, strerror(-r));
    chk_conn_close(&rd->conn);
    __atomic_add_fetch(&rd->run->read_failures, 1, __ATOMIC_RELAXED);
    chk_sleep_ms(rd->backoff);
    rd->backoff = rd->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : rd->backoff * 2;
}

/* One read of 1 to MAX_READ_BLOCKS blocks at a random place. */
static void reader_step(struct reader *rd)
{
    struct chk_journal *j = rd->run->journal;
    unsigned max = j->nblocks < MAX_READ_BLOCKS ? (unsigned)j->nblocks : MAX_READ_BLOCKS;
    /* 1, 2, 4 ... 64 blocks, each as often: mostly small reads, some
     * large enough to be answered in structured chunks. */
    unsigned n = 1u << (xorshift(&rd->rng) % 7);
    n = n > max ? max : n;
    uint64_t first = xorshift(&rd->rng) % (j->nblocks - n + 1);
    unsigned timeout = rd->run->op_timeout_ms;
    int r = chk_conn_open_p(&rd->conn) ? 0 : chk_conn_open(&rd->conn, timeout);

    if (r < 0) {
        read_failed(rd, first, n, "connect", r);
        return;
    }
    for (unsigned i = 0; i < n; i++)
        rd->acked[i] = __atomic_load_n(&j->blocks[first + i].acked, __ATOMIC_ACQUIRE);
    r = chk_conn_pread(&rd->conn, rd->buf, (size_t)n * CHK_BLOCK_SIZE, first * CHK_BLOCK_SIZE,
                       timeout);
    if (r < 0) {
        read_failed(rd, first, n, "read", r);
        return;
    }
    rd->backoff = BACKOFF_MIN_MS;
    uint64_t bad = judge_all(rd, first, n);
    __atomic_add_fetch(&j->reads, n, __ATOMIC_RELAXED);
    if (bad)
        __atomic_add_fetch(&j->stale, bad, __ATOMIC_RELAXED);
}

static void *reader_main(void *arg)
{
    struct reader *rd = arg;

    while (!__atomic_load_n(&rd->run->stop, __ATOMIC_RELAXED)) {
        reader_step(rd);
        chk_sleep_ms(rd->run->read_pause_ms);
    }
    chk_conn_close(&rd->conn);
    return NULL;
}

void chk_readers_join(struct chk_readers *rs)
{
    if (!rs)
        return;
    for (unsigned i = 0; i < rs->started; i++)
        pthread_join(rs->r[i].thread, NULL);
    free(rs);
}

int chk_readers_start(struct chk_run *run, struct chk_readers **out)
{
    struct chk_readers *rs = calloc(1, sizeof(*rs) + run->readers * sizeof(struct reader));

    *out = NULL;
    if (!rs)
        return -ENOMEM;
    rs->run = run;
    for (; rs->started < run->readers; rs->started++) {
        struct reader *rd = &rs->r[rs->started];
        rd->run = run;
        rd->id = rs->started;
        rd->rng = run->seed * 0xbf58476d1ce4e5b9ull + rs->started + 1;
        rd->backoff = BACKOFF_MIN_MS;
        chk_conn_init(&rd->conn, run->targets[rs->started % run->ntargets]);
        int r = pthread_create(&rd->thread, NULL, reader_main, rd);
        if (r) {
            qb_log(LOG_ERR, "checker: cannot start reader %u: %s", rs->started, strerror(r));
            __atomic_store_n(&run->stop, true, __ATOMIC_RELAXED);
            chk_readers_join(rs);
            return -r;
        }
    }
    *out = rs;
    return 0;
}
