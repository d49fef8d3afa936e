/* verify.c - checks replica files against the journal (see verify.h).
 *
 * The files are read a region at a time, one buffer per replica, so
 * memory stays at nfiles x region_size however large the volume. Each
 * problem is logged with what the journal expected and what the replica
 * holds, up to MAX_REPORTS of each kind: enough to start from the node
 * logs without drowning them.
 */
#include "tests/checker/verify.h"
#include "tests/checker/block.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <qb/qblog.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_REPORTS 20

struct replicas {
    char **files;
    size_t n;
    int *fds;
    unsigned char **bufs;
};

static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    char *p = buf;

    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ENODATA;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static void replicas_close(struct replicas *rs)
{
    for (size_t i = 0; i < rs->n; i++) {
        if (rs->fds && rs->fds[i] >= 0)
            close(rs->fds[i]);
        if (rs->bufs)
            free(rs->bufs[i]);
    }
    free(rs->fds);
    free(rs->bufs);
}

static int replicas_open(struct replicas *rs, char **files, size_t n, uint64_t region_size)
{
    rs->files = files;
    rs->n = n;
    rs->fds = malloc(n * sizeof(*rs->fds));
    rs->bufs = calloc(n, sizeof(*rs->bufs));
    if (!rs->fds || !rs->bufs)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        rs->fds[i] = -1;
    for (size_t i = 0; i < n; i++) {
        rs->fds[i] = open(files[i], O_RDONLY | O_CLOEXEC);
        if (rs->fds[i] < 0) {
            int r = -errno;
            qb_log(LOG_ERR, "checker: verify: cannot open %s: %s", files[i], strerror(-r));
            return r;
        }
        rs->bufs[i] = malloc(region_size);
        if (!rs->bufs[i])
            return -ENOMEM;
    }
    return 0;
}

/* Judges block b in every replica's buffer (at boff): true if it holds a
 * sequence the journal allows everywhere. */
static bool block_ok(const struct chk_journal *j, const struct replicas *rs, uint64_t b,
                     size_t boff, uint64_t *reports)
{
    const struct chk_entry *e = &j->blocks[b];
    bool ok = true;

    for (size_t i = 0; i < rs->n; i++) {
        uint64_t seq = 0;
        int r = chk_block_check(rs->bufs[i] + boff, b, j->writers, &seq);
        if (r == 0 && seq >= e->acked && seq <= e->sent)
            continue;
        ok = false;
        if ((*reports)++ >= MAX_REPORTS)
            continue;
        if (r < 0)
            qb_log(LOG_ERR,
                   "checker: verify: %s: block %" PRIu64 " (offset %" PRIu64
                   "): %s; journal: acked %" PRIu64 " sent %" PRIu64,
                   rs->files[i], b, b * CHK_BLOCK_SIZE,
                   r == -EDOM ? "belongs to another block or writer" : "torn or corrupt", e->acked,
                   e->sent);
        else
            qb_log(LOG_ERR,
                   "checker: verify: %s: block %" PRIu64 " (offset %" PRIu64 "): holds seq %" PRIu64
                   ", journal: acked %" PRIu64 " sent %" PRIu64 "%s",
                   rs->files[i], b, b * CHK_BLOCK_SIZE, seq, e->acked, e->sent,
                   seq < e->acked ? " (an acknowledged write is lost)" : " (never sent)");
    }
    return ok;
}

/* The first block where replica i differs from replica 0, for the report. */
static uint64_t first_difference(const struct replicas *rs, size_t i, size_t len)
{
    size_t off = 0;

    while (off < len && !memcmp(rs->bufs[0] + off, rs->bufs[i] + off, CHK_BLOCK_SIZE))
        off += CHK_BLOCK_SIZE;
    return off / CHK_BLOCK_SIZE;
}

static bool region_same(const struct replicas *rs, uint64_t region, uint64_t first_block,
                        size_t len, uint64_t *reports)
{
    bool same = true;

    for (size_t i = 1; i < rs->n; i++) {
        if (!memcmp(rs->bufs[0], rs->bufs[i], len))
            continue;
        same = false;
        if ((*reports)++ < MAX_REPORTS)
            qb_log(LOG_ERR,
                   "checker: verify: region %" PRIu64 ": %s and %s differ (first at block %" PRIu64
                   ")",
                   region, rs->files[0], rs->files[i], first_block + first_difference(rs, i, len));
    }
    return same;
}

static int verify_region(const struct chk_journal *j, struct replicas *rs, uint64_t region,
                         uint64_t region_size, struct chk_verdict *v, uint64_t reports[2])
{
    uint64_t off = region * region_size;
    size_t len = (size_t)(j->volume_size - off < region_size ? j->volume_size - off : region_size);
    uint64_t first = off / CHK_BLOCK_SIZE;

    for (size_t i = 0; i < rs->n; i++) {
        int r = pread_all(rs->fds[i], rs->bufs[i], len, off);
        if (r < 0) {
            qb_log(LOG_ERR, "checker: verify: %s: cannot read %zu bytes at %" PRIu64 ": %s",
                   rs->files[i], len, off,
                   r == -ENODATA ? "shorter than the volume" : strerror(-r));
            return r;
        }
    }
    if (!region_same(rs, region, first, len, &reports[0]))
        v->divergent++;
    for (uint64_t b = first; b < first + len / CHK_BLOCK_SIZE; b++) {
        if (j->blocks[b].acked)
            v->blocks_written++;
        if (!block_ok(j, rs, b, (size_t)((b - first) * CHK_BLOCK_SIZE), &reports[1]))
            v->lost++;
    }
    return 0;
}

int chk_verify_files(const struct chk_journal *j, char **files, size_t nfiles, uint64_t region_size,
                     struct chk_verdict *v)
{
    struct replicas rs = {0};
    uint64_t reports[2] = {0, 0}; /* divergences, lost blocks */
    uint64_t regions;
    int r;

    memset(v, 0, sizeof(*v));
    if (nfiles == 0 || region_size == 0 || region_size % CHK_BLOCK_SIZE)
        return -EINVAL;
    regions = (j->volume_size + region_size - 1) / region_size;
    r = replicas_open(&rs, files, nfiles, region_size);
    for (uint64_t region = 0; r == 0 && region < regions; region++)
        r = verify_region(j, &rs, region, region_size, v, reports);
    replicas_close(&rs);
    return r;
}
