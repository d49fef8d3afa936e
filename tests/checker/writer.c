/* writer.c - the writer threads and the run that drives them (see
 * writer.h).
 *
 * Connects and writes go through libnbd's asynchronous calls with
 * nbd_poll() bounded by op_timeout_ms: a node that is cut off or powered
 * off drops packets silently, and a blocking call would wait for TCP's own
 * timeout, minutes. A write that timed out may still land on the node it
 * went to; resending the very same bytes elsewhere keeps that harmless,
 * unless the node applies it after a later write of the block, which is
 * exactly what the verifier is there to catch.
 *
 * A target that is a path (it starts with '/') is a file, such as a
 * volume mounted by vsan-fuse: written with pwrite, which returns once
 * vsan-fuse has the node's acknowledgement; vsan-fuse does its own
 * failover underneath, so only its final error reaches the writer.
 */
#include "tests/checker/writer.h"
#include "tests/checker/block.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libnbd.h>
#include <pthread.h>
#include <qb/qblog.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_MIN_MS 20
#define BACKOFF_MAX_MS 1000
#define SAVE_EVERY_MS 1000

struct writer {
    struct chk_run *run;
    uint32_t id;
    size_t target;
    int64_t target_since; /* when this target was chosen, for rotate_ms */
    struct nbd_handle *h;
    int fd; /* a file target's, or -1 */
    uint64_t rng;
    pthread_t thread;
    unsigned char buf[CHK_BLOCK_SIZE] __attribute__((aligned(4096)));
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static bool stopping(const struct chk_run *run)
{
    return __atomic_load_n(&run->stop, __ATOMIC_RELAXED);
}

/* libnbd's errno for its last failure in this thread, never 0. */
static int nbd_err(void)
{
    int e = nbd_get_errno();

    return e > 0 ? -e : -EIO;
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static const char *uri_of(const struct writer *w)
{
    return w->run->targets[w->target];
}

/* Drives h until the handshake is done or deadline (CLOCK_MONOTONIC ms). */
static int wait_ready(struct nbd_handle *h, int64_t deadline)
{
    for (;;) {
        if (nbd_aio_is_ready(h) > 0)
            return 0;
        if (nbd_aio_is_dead(h) > 0 || nbd_aio_is_closed(h) > 0)
            return -ENOTCONN;
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        if (nbd_poll(h, (int)left) < 0)
            return nbd_err();
    }
}

static void writer_drop(struct writer *w)
{
    if (w->h)
        nbd_close(w->h);
    w->h = NULL;
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
}

static bool connected(const struct writer *w)
{
    return w->h || w->fd >= 0;
}

static int writer_connect(struct writer *w)
{
    if (uri_of(w)[0] == '/') {
        w->fd = open(uri_of(w), O_RDWR | O_CLOEXEC);
        return w->fd < 0 ? -errno : 0;
    }
    struct nbd_handle *h = nbd_create();
    int r;

    if (!h)
        return nbd_err();
    if (nbd_aio_connect_uri(h, uri_of(w)) < 0)
        r = nbd_err();
    else
        r = wait_ready(h, now_ms() + w->run->op_timeout_ms);
    if (r < 0) {
        nbd_close(h);
        return r;
    }
    w->h = h;
    return 0;
}

static int writer_write_once(struct writer *w, uint64_t offset)
{
    if (w->fd >= 0) {
        ssize_t n = pwrite(w->fd, w->buf, CHK_BLOCK_SIZE, (off_t)offset);
        return n == CHK_BLOCK_SIZE ? 0 : n < 0 ? -errno : -EIO;
    }
    int64_t deadline = now_ms() + w->run->op_timeout_ms;
    int64_t cookie = nbd_aio_pwrite(w->h, w->buf, CHK_BLOCK_SIZE, offset, NBD_NULL_COMPLETION, 0);

    if (cookie < 0)
        return nbd_err();
    for (;;) {
        int done = nbd_aio_command_completed(w->h, (uint64_t)cookie);
        if (done > 0)
            return 0;
        if (done < 0)
            return nbd_err();
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        if (nbd_poll(w->h, (int)left) < 0)
            return nbd_err();
    }
}

static void writer_next_target(struct writer *w)
{
    writer_drop(w);
    w->target = (w->target + 1) % w->run->ntargets;
    w->target_since = now_ms();
}

/* Sends the block in w->buf until a target acknowledges it, moving to the
 * next target after every error; gives up after resend_ms. */
static int writer_send(struct writer *w, uint64_t block, uint64_t seq)
{
    int64_t deadline = now_ms() + w->run->resend_ms;
    unsigned backoff = BACKOFF_MIN_MS;

    for (;;) {
        const char *stage = "connect";
        int r = connected(w) ? 0 : writer_connect(w);
        if (r == 0) {
            stage = "write";
            r = writer_write_once(w, block * CHK_BLOCK_SIZE);
        }
        if (r == 0)
            return 0;
        qb_log(LOG_INFO,
               "checker: writer %" PRIu32 ": block %" PRIu64 " seq %" PRIu64 " via %s: %s: %s",
               w->id, block, seq, uri_of(w), stage, strerror(-r));
        writer_next_target(w);
        __atomic_add_fetch(&w->run->failovers, 1, __ATOMIC_RELAXED);
        if (now_ms() >= deadline)
            return r;
        sleep_ms(backoff);
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

    if (w->run->rotate_ms && now_ms() - w->target_since >= w->run->rotate_ms)
        writer_next_target(w);
    /* Raised before the write leaves, so a snapshot never shows a block
     * holding a sequence above what the journal says was sent. */
    __atomic_store_n(&e->sent, seq, __ATOMIC_RELAXED);
    chk_block_encode(w->buf, w->id, block, seq);
    r = writer_send(w, block, seq);
    if (r == 0) {
        __atomic_store_n(&e->acked, seq, __ATOMIC_RELAXED);
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

    w->target_since = now_ms();
    while (!stopping(w->run))
        writer_step(w);
    writer_drop(w);
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
    int64_t end = now_ms() + (int64_t)seconds * 1000;

    while (!stopping(run) && now_ms() < end) {
        int64_t left = end - now_ms();
        sleep_ms(left < SAVE_EVERY_MS ? (unsigned)left : SAVE_EVERY_MS);
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
        w->fd = -1;
        w->target = *started % run->ntargets;
        w->rng = run->seed * 0x9e3779b97f4a7c15ull + *started + 1;
        int r = pthread_create(&w->thread, NULL, writer_main, w);
        if (r) {
            qb_log(LOG_ERR, "checker: cannot start writer %" PRIu32 ": %s", *started, strerror(r));
            return -r;
        }
    }
    return 0;
}

int chk_run_writers(struct chk_run *run, unsigned seconds)
{
    uint32_t started;
    struct writer *ws = aligned_alloc(4096, sizeof(*ws) * run->journal->writers);
    int r, r2;

    if (!ws)
        return -ENOMEM;
    memset(ws, 0, sizeof(*ws) * run->journal->writers);
    r = start_writers(run, ws, &started);
    if (r == 0)
        r = supervise(run, seconds);
    __atomic_store_n(&run->stop, true, __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < started; i++)
        pthread_join(ws[i].thread, NULL);
    free(ws);
    r2 = save(run);
    return r < 0 ? r : r2;
}
