/* journal.c - saves and loads the checker's record of writes (see
 * journal.h).
 *
 * File: a 96-byte header (magic "VSANCLOG", version, writers, volume
 * size, block count, the writers', readers' and snapshotter's totals),
 * then one (acked, sent) pair per block, all little-endian. Entries are read with relaxed atomic
 * loads: each is written by one writer thread only, and a snapshot needs no more than every entry's
 * own consistency, because sent is raised before a write goes out and acked only after its reply.
 */
#include "tests/checker/journal.h"
#include "tests/checker/block.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define JOURNAL_MAGIC "VSANCLOG"
#define JOURNAL_VERSION 3u /* 2: the readers' totals; 3: the snapshotter's */
#define HEADER_SIZE 96
#define CHUNK_ENTRIES 4096 /* entries converted and written per write(2) */

struct disk_header {
    char magic[8];
    uint32_t version;
    uint32_t writers;
    uint64_t volume_size;
    uint64_t nblocks;
    uint64_t acknowledged;
    uint64_t failed;
    uint64_t reads;
    uint64_t stale;
    uint64_t snapshots;
    uint64_t snap_checked;
    uint64_t snap_bad;
    uint64_t reserved;
};

_Static_assert(sizeof(struct disk_header) == HEADER_SIZE, "journal header is 96 bytes");

int chk_journal_init(struct chk_journal *j, uint64_t volume_size, uint32_t writers)
{
    memset(j, 0, sizeof(*j));
    if (volume_size == 0 || volume_size % CHK_BLOCK_SIZE || writers == 0)
        return -EINVAL;
    j->volume_size = volume_size;
    j->writers = writers;
    j->nblocks = volume_size / CHK_BLOCK_SIZE;
    j->blocks = calloc(j->nblocks, sizeof(*j->blocks));
    return j->blocks ? 0 : -ENOMEM;
}

void chk_journal_free(struct chk_journal *j)
{
    free(j->blocks);
    j->blocks = NULL;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len) {
        ssize_t n = read(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EBADMSG;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Only the main thread saves, so one static chunk buffer is enough. */
static int write_entries(int fd, const struct chk_journal *j)
{
    static uint64_t chunk[2 * CHUNK_ENTRIES];

    for (uint64_t b = 0; b < j->nblocks; b += CHUNK_ENTRIES) {
        uint64_t n = j->nblocks - b < CHUNK_ENTRIES ? j->nblocks - b : CHUNK_ENTRIES;

        for (uint64_t i = 0; i < n; i++) {
            chunk[2 * i] = htole64(__atomic_load_n(&j->blocks[b + i].acked, __ATOMIC_RELAXED));
            chunk[2 * i + 1] = htole64(__atomic_load_n(&j->blocks[b + i].sent, __ATOMIC_RELAXED));
        }
        int r = write_all(fd, chunk, n * 2 * sizeof(uint64_t));
        if (r < 0)
            return r;
    }
    return 0;
}

static int write_file(int fd, const struct chk_journal *j)
{
    struct disk_header h = {
        .version = htole32(JOURNAL_VERSION),
        .writers = htole32(j->writers),
        .volume_size = htole64(j->volume_size),
        .nblocks = htole64(j->nblocks),
        .acknowledged = htole64(__atomic_load_n(&j->acknowledged, __ATOMIC_RELAXED)),
        .failed = htole64(__atomic_load_n(&j->failed, __ATOMIC_RELAXED)),
        .reads = htole64(__atomic_load_n(&j->reads, __ATOMIC_RELAXED)),
        .stale = htole64(__atomic_load_n(&j->stale, __ATOMIC_RELAXED)),
        .snapshots = htole64(__atomic_load_n(&j->snapshots, __ATOMIC_RELAXED)),
        .snap_checked = htole64(__atomic_load_n(&j->snap_checked, __ATOMIC_RELAXED)),
        .snap_bad = htole64(__atomic_load_n(&j->snap_bad, __ATOMIC_RELAXED))};
    int r;

    memcpy(h.magic, JOURNAL_MAGIC, sizeof(h.magic));
    r = write_all(fd, &h, sizeof(h));
    if (r < 0)
        return r;
    return write_entries(fd, j);
}

int chk_journal_save(const struct chk_journal *j, const char *path)
{
    char tmp[4096];
    int fd, r;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    r = write_file(fd, j);
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0)
        unlink(tmp);
    return r;
}

static int load_header(int fd, struct chk_journal *j)
{
    struct disk_header h;
    int r = read_all(fd, &h, sizeof(h));

    if (r < 0)
        return r;
    if (memcmp(h.magic, JOURNAL_MAGIC, sizeof(h.magic)) || le32toh(h.version) != JOURNAL_VERSION)
        return -EBADMSG;
    r = chk_journal_init(j, le64toh(h.volume_size), le32toh(h.writers));
    if (r < 0)
        return r == -EINVAL ? -EBADMSG : r;
    if (le64toh(h.nblocks) != j->nblocks) {
        chk_journal_free(j);
        return -EBADMSG;
    }
    j->acknowledged = le64toh(h.acknowledged);
    j->failed = le64toh(h.failed);
    j->reads = le64toh(h.reads);
    j->stale = le64toh(h.stale);
    j->snapshots = le64toh(h.snapshots);
    j->snap_checked = le64toh(h.snap_checked);
    j->snap_bad = le64toh(h.snap_bad);
    return 0;
}

int chk_journal_load(struct chk_journal *j, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int r;

    if (fd < 0)
        return -errno;
    r = load_header(fd, j);
    if (r == 0) {
        r = read_all(fd, j->blocks, j->nblocks * sizeof(*j->blocks));
        for (uint64_t b = 0; r == 0 && b < j->nblocks; b++) {
            j->blocks[b].acked = le64toh(j->blocks[b].acked);
            j->blocks[b].sent = le64toh(j->blocks[b].sent);
            if (j->blocks[b].acked > j->blocks[b].sent)
                r = -EBADMSG;
        }
        if (r < 0)
            chk_journal_free(j);
    }
    close(fd);
    return r;
}
