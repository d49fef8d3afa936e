/* writer.c - the writer threads and the run that drives them, the
 * readers and the snapshotter (see writer.h).
 *
 * Every connect and write is bounded by op_timeout_ms (conn.h). A write
 * that timed out may still land on the node it went to; resending the
 * very same bytes elsewhere keeps that harmless, unless the node applies
 * it after a later write of the block, which is exactly what the verifier
 * and the readers are there to catch.
 *
 * A file target (vsan-fuse) is written with pwrite, which returns once
 * vsan-fuse has the node's acknowledgement; vsan-fuse does its own
 * failover underneath, so only its final error reaches the writer.
 */
#include "tests/checker/writer.h"
#include "tests/checker/block.h"
#include "tests/checker/conn.h"
#include "tests/checker/reader.h"
#include "tests/checker/snapshotter.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <qb/qblog.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN_MS 20
#define BACKOFF_MAX_MS 1000
#define SAVE_EVERY_MS 1000

struct writer {
    struct chk_run *run;
    uint32_t id;
    size_t target;
    int64_t target_since; /* when this target was chosen, for rotate_ms */
    struct chk_conn conn;
    uint64_t rng;
    pthread_t thread;
    unsigned char buf[CHK_BLOCK_SIZE] __attribute__((aligned(4096)));
};

static bool stopping(const struct chk_run *run)
{
    return __atomic_load_n(&run->stop, __ATOMIC_RELAXED);
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void writer_next_target(struct writer *w)
{
    chk_conn_close(&w->conn);
    w->target = (w->target + 1) % w->run->ntargets;
    chk_conn_init(&w->conn, w->run->targets[w->target]);
    w->target_since = chk_now_ms();
}

/* Sends the block in w->buf until a target acknowledges it, moving to the
 * next target after every error; gives up after resend_ms. */
static int writer_send(struct writer *w, uint64_t block, uint64_t seq)
{
    int64_t deadline = chk_now_ms() + w->run->resend_ms;
    unsigned backoff = BACKOFF_MIN_MS;

    for (;;) {
        const char *stage = "connect";
        int r = chk_conn_open_p(&w->conn) ? 0 : chk_conn_open(&w->conn, w->run->op_timeout_ms);
        if (r == 0) {
            stage = "write";
            r = chk_conn_pwrite(&w->conn, w->buf, CHK_BLOCK_SIZE, block * CHK_BLOCK_SIZE,
                                w->run->op_timeout_ms);
        }
        if (r == 0)
            return 0;
        qb_log(LOG_INFO,
               "checker: writer %" PRIu32 ": block %" PRIu64 " seq %" PRIu64 " via %s: %s: %s",
               w->id, block, seq, w->conn.target, stage, strerror(-r));
        writer_next_target(w);
        __atomic_add_fetch(&w->run->failovers, 1, __ATOMIC_RELAXED);
        if (chk_now_ms() >= deadline)
            return r;
        chk_sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}

/* One write: the next sequence of one of this writer's blocks, chosen at
 * random so that writers on different nodes contend for regions. */
static void writer_step(struct writer *w)
{
    struct chk_journal *j = w->run->journal;
    uint64_t owned = (j->nblocks - w->id + j->writers - 1) / j->writers;
    uint64_t block = w->id + j->writers * (xorshift(&w->rng) % owned);
    struct chk_entry *e = &j->blocks[block];
    uint64_t seq = e->sent + 1;
    int r;

    if (w->run->rotate_ms && chk_now_ms() - w->target_since >= w->run->rotate_ms)
        writer_next_target(w);
    /* Raised before the write leaves, so neither a snapshot nor a reader
     * ever sees a block holding a sequence above what the journal says
     * was sent; stamped before that, so that a cut that loads it has its
     * stamp (cutlog.h). */
    chk_cut_log_send(&w->run->cuts, block, seq);
    __atomic_store_n(&e->sent, seq, __ATOMIC_RELEASE);
    chk_block_encode(w->buf, w->id, block, seq);
    r = writer_send(w, block, seq);
    if (r == 0) {
        __atomic_store_n(&e->acked, seq, __ATOMIC_RELEASE);
        chk_cut_log_ack(&w->run->cuts, block, seq);
        __atomic_add_fetch(&j->acknowledged, 1, __ATOMIC_RELAXED);
        return;
    }
    __atomic_add_fetch(&j->failed, 1, __ATOMIC_RELAXED);
    qb_log(LOG_ERR,
           "checker: writer %" PRIu32 ": block %" PRIu64 " seq %" PRIu64
           ": no target acknowledged it in %u ms (last error: %s)",
           w->id, block, seq, w->run->resend_ms, strerror(-r));
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;

    w->target_since = chk_now_ms();
    while (!stopping(w->run))
        writer_step(w);
    chk_conn_close(&w->conn);
    return NULL;
}

static int save(const struct chk_run *run)
{
    int r = chk_journal_save(run->journal, run->log_path);

    if (r < 0)
        qb_log(LOG_ERR, "checker: cannot save the journal to %s: %s", run->log_path, strerror(-r));
    return r;
}

/* Saves snapshots until the deadline or a stop request. */
static int supervise(struct chk_run *run, unsigned seconds)
{
    int64_t end = chk_now_ms() + (int64_t)seconds * 1000;

    while (!stopping(run) && chk_now_ms() < end) {
        int64_t left = end - chk_now_ms();
        chk_sleep_ms(left < SAVE_EVERY_MS ? (unsigned)left : SAVE_EVERY_MS);
        int r = save(run);
        if (r < 0)
            return r;
    }
    return 0;
}

static int start_writers(struct chk_run *run, struct writer *ws, uint32_t *started)
{
    for (*started = 0; *started < run->journal->writers; (*started)++) {
        struct writer *w = &ws[*started];
        w->run = run;
        w->id = *started;
        w->target = *started % run->ntargets;
        chk_conn_init(&w->conn, run->targets[w->target]);
        w->rng = run->seed * 0x9e3779b97f4a7c15ull + *started + 1;
        int r = pthread_create(&w->thread, NULL, writer_main, w);
        if (r) {
            qb_log(LOG_ERR, "checker: cannot start writer %" PRIu32 ": %s", *started, strerror(r));
            return -r;
        }
    }
    return 0;
}

int chk_run_for(struct chk_run *run, unsigned seconds)
{
    uint32_t started;
    struct writer *ws = aligned_alloc(4096, sizeof(*ws) * run->journal->writers);
    struct chk_readers *readers = NULL;
    struct chk_snapshotter *snapshotter = NULL;
    int r, r2;

    if (!ws)
        return -ENOMEM;
    memset(ws, 0, sizeof(*ws) * run->journal->writers);
    chk_cut_log_init(&run->cuts);
    r = start_writers(run, ws, &started);
    if (r == 0)
        r = chk_readers_start(run, &readers);
    if (r == 0)
        r = chk_snapshotter_start(run, &snapshotter);
    if (r == 0)
        r = supervise(run, seconds);
    __atomic_store_n(&run->stop, true, __ATOMIC_RELAXED);
    chk_snapshotter_join(snapshotter);
    chk_readers_join(readers);
    for (uint32_t i = 0; i < started; i++)
        pthread_join(ws[i].thread, NULL);
    free(ws);
    chk_cut_log_free(&run->cuts);
    r2 = save(run);
    return r < 0 ? r : r2;
}
