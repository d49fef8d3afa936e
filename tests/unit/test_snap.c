/* test_snap.c - snapshots in the store (store/snap.c through store/svol.c):
 * a snapshot reads what was there at its cut after partial and whole-chunk
 * writes and zeroes; 100 snapshots with random writes, a grow, and deletes
 * from the middle match an in-memory model byte for byte, before and after
 * a reopen, and so do their changed-chunk lists and allocation; the crash
 * orders (a copy durable but the data not written, a copy written but not
 * in the map, a delete cut short) reopen to exact snapshots; a corrupt
 * index is refused naming its file; a shrink is refused while snapshots
 * exist; 8 threads writing at once after a cut leave it exact; ids and
 * times are the caller's (the cluster's), only grow, and a create cut
 * short after reserving its id leaves nothing; the exclusive size counts
 * the chunks a side file holds; snap_put, oldest first and then the live
 * write, makes every snapshot read the bytes put (a resync), in whole
 * chunks inside the snapshot only. */
#include "store/snap.h"
#include "store/store.h"
#include "store/svol.h"

#include <criterion/criterion.h>
#include <isa-l/crc.h>
#include <qb/qblog.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KiB UINT64_C(1024)
#define CH SNAP_CHUNK

static char dir[64];
static char logbuf[65536];
static struct store *st;
static struct store_volume rec;
static struct svol *sv;
/* The next snapshot's id: the cluster's ids are its table versions,
 * which skip. */
static uint64_t next_cut = 1;

static void capture(int32_t t, struct qb_log_callsite *cs, struct timespec *ts, const char *msg)
{
    (void)t;
    (void)cs;
    (void)ts;
    size_t used = strlen(logbuf);
    snprintf(logbuf + used, sizeof(logbuf) - used, "%s\n", msg);
}

static void setup(void)
{
    qb_log_init("test_snap", LOG_USER, LOG_DEBUG);
    qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
    int32_t t = qb_log_custom_open(capture, NULL, NULL, NULL);
    cr_assert_geq(t, 0);
    cr_assert_eq(qb_log_filter_ctl(t, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*", LOG_DEBUG), 0);
    cr_assert_eq(qb_log_ctl(t, QB_LOG_CONF_ENABLED, QB_TRUE), 0);
    logbuf[0] = '\0';
    next_cut = 1;
    snprintf(dir, sizeof(dir), "/tmp/vsan-test-snap.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(store_open(dir, &st), 0);
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

static void teardown(void)
{
    if (sv)
        svol_unref(sv);
    sv = NULL;
    store_close(st);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    qb_log_fini();
}

TestSuite(snap, .init = setup, .fini = teardown);

/* ---- helpers ----------------------------------------------------------- */

static void make_volume(uint64_t size)
{
    int r = store_create(st, "vol", size, NULL, &rec);
    cr_assert_eq(r, 0, "store_create: %s\n%s", strerror(-r), logbuf);
    cr_assert_eq(svol_open(st, &rec, &sv), 0, "%s", logbuf);
}

/* Closes and opens the volume again, as a restart would. */
static void reopen(void)
{
    svol_record(sv, &rec);
    svol_unref(sv);
    sv = NULL;
    int r = svol_open(st, &rec, &sv);
    cr_assert_eq(r, 0, "reopen: %s\n%s", strerror(-r), logbuf);
}

static void fill(unsigned char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(seed * 131 + i * 7 + (i >> 9));
}

static void write_pattern(uint64_t off, uint64_t len, unsigned seed)
{
    unsigned char *buf = malloc(len);
    fill(buf, len, seed);
    int r = svol_write(sv, buf, (uint32_t)len, off, 0);
    cr_assert_eq(r, 0, "write %" PRIu64 "+%" PRIu64 ": %s\n%s", off, len, strerror(-r), logbuf);
    free(buf);
}

static uint64_t snap_new(const char *name)
{
    struct snap_info si;
    uint64_t id = next_cut;
    next_cut += 1 + id % 3;
    int r = svol_snapshot_create(sv, id, name, 1700000000 + (int64_t)id, &si);
    cr_assert_eq(r, 0, "snapshot %s: %s\n%s", name, strerror(-r), logbuf);
    cr_assert_eq(si.id, id);
    cr_assert_eq(si.time, 1700000000 + (int64_t)id);
    return si.id;
}

/* Snapshot id must read exactly want (its whole size). */
static void assert_snap(uint64_t id, const unsigned char *want, uint64_t size)
{
    unsigned char *got = malloc(size);
    int r = snap_read(svol_snapshots(sv), id, got, (uint32_t)size, 0);
    cr_assert_eq(r, 0, "read snapshot %" PRIu64 ": %s\n%s", id, strerror(-r), logbuf);
    for (uint64_t i = 0; i < size; i++)
        cr_assert_eq(got[i], want[i],
                     "snapshot %" PRIu64 ": byte %" PRIu64 " (chunk %" PRIu64 ") is %u, want %u",
                     id, i, i / CH, got[i], want[i]);
    free(got);
}

static void read_live(unsigned char *buf, uint64_t size)
{
    cr_assert_eq(svol_read(sv, buf, (uint32_t)size, 0, 0), 0);
}

static void snap_dir_file(char *out, size_t len, const char *suffix)
{
    snprintf(out, len, "%s/snapshots/%s%s", dir, rec.uuid, suffix);
}

/* ---- the basics --------------------------------------------------------- */

Test(snap, partial_writes_and_zeroes_leave_the_snapshot_as_it_was)
{
    const uint64_t size = 1024 * KiB;
    make_volume(size);
    write_pattern(0, size, 1);
    unsigned char *old = malloc(size);
    read_live(old, size);
    uint64_t id = snap_new("s1");
    cr_assert_eq(snap_count(svol_snapshots(sv)), 1);
    write_pattern(70000, 100, 2);                    /* inside chunk 1 */
    write_pattern(5 * CH - 10, 20, 3);               /* across chunks 4 and 5 */
    cr_assert_eq(svol_zero(sv, 4096, 8 * CH, 0), 0); /* a zero copies too */
    cr_assert_eq(svol_zero(sv, 2 * CH, 10 * CH, SVOL_MAY_TRIM), 0);
    assert_snap(id, old, size);
    write_pattern(70000, 50, 4); /* a second write to a copied chunk copies nothing */
    assert_snap(id, old, size);

    unsigned char *live = malloc(size);
    read_live(live, size);
    cr_assert_neq(memcmp(live, old, size), 0);
    unsigned char *part = malloc(CH);
    cr_assert_eq(snap_read(svol_snapshots(sv), id, part, 100, 70000), 0);
    cr_assert_eq(memcmp(part, old + 70000, 100), 0);
    cr_assert_eq(snap_read(svol_snapshots(sv), id, part, 1, size), -EINVAL, "past the end");
    cr_assert_eq(snap_read(svol_snapshots(sv), 99, part, 1, 0), -ENOENT);

    reopen();
    assert_snap(id, old, size);
    struct snap_info si;
    cr_assert_eq(snap_find(svol_snapshots(sv), "s1", &si), 0);
    cr_assert_eq(si.id, id);
    cr_assert_eq(si.size, size);
    cr_assert_eq(svol_snapshot_create(sv, next_cut, "s1", 0, &si), -EEXIST);
    cr_assert_eq(svol_snapshot_create(sv, next_cut, "-bad", 0, &si), -EINVAL);
    free(old);
    free(live);
    free(part);
}

Test(snap, nowait_zero_that_needs_a_copy_does_nothing)
{
    make_volume(256 * KiB);
    write_pattern(0, 256 * KiB, 1);
    snap_new("s");
    cr_assert_eq(svol_zero(sv, 4096, 0, SVOL_NOWAIT), -EAGAIN);
    cr_assert_eq(svol_zero(sv, 4096, 0, 0), 0);
    cr_assert_eq(svol_zero(sv, 4096, 4096, SVOL_NOWAIT), 0, "chunk 0 is copied already");
}

Test(snap, shrink_is_refused_while_snapshots_exist)
{
    make_volume(1024 * KiB);
    uint64_t id = snap_new("s");
    cr_assert_eq(svol_resize(sv, 512 * KiB), -ENOTEMPTY);
    cr_assert_eq(svol_size(sv), 1024 * KiB);
    cr_assert(strstr(logbuf, "can't shrink") != NULL, "%s", logbuf);
    cr_assert_eq(svol_resize(sv, 2048 * KiB), 0, "growing is fine");
    cr_assert_eq(snap_delete(svol_snapshots(sv), id), 0);
    cr_assert_eq(svol_resize(sv, 512 * KiB), 0, "no snapshots: shrink works");
}

/* ---- the model: 100 snapshots, random writes, deletes from the middle ---- */

#define MODEL_SNAPS 100

struct model_snap {
    uint64_t id;
    uint64_t size;
    unsigned char *bytes;
    bool *written; /* chunks written while it was the newest */
};

static struct model_snap ms[MODEL_SNAPS];
static unsigned nms;
static unsigned char *live_model;
static uint64_t live_size;

static uint64_t rnd(uint64_t n)
{
    return (uint64_t)random() % n;
}

static void model_write(void)
{
    uint64_t off = rnd(live_size);
    uint64_t len = 1 + rnd(live_size - off < 3 * CH ? live_size - off : 3 * CH);
    if (rnd(4) == 0) {
        cr_assert_eq(svol_zero(sv, (uint32_t)len, off, rnd(2) ? SVOL_MAY_TRIM : 0), 0);
        memset(live_model + off, 0, len);
    } else {
        unsigned seed = (unsigned)random();
        write_pattern(off, len, seed);
        fill(live_model + off, len, seed);
    }
    if (nms > 0)
        for (uint64_t c = off / CH; c <= (off + len - 1) / CH; c++)
            if (c * CH < ms[nms - 1].size)
                ms[nms - 1].written[c] = true;
}

static void model_snapshot(unsigned k)
{
    char name[32];
    snprintf(name, sizeof(name), "snap-%u", k);
    struct model_snap *m = &ms[nms++];
    m->id = snap_new(name);
    m->size = live_size;
    m->bytes = malloc(live_size);
    memcpy(m->bytes, live_model, live_size);
    m->written = calloc(live_size / CH + 2, sizeof(bool));
}

/* Deletes model snapshot i: what the deleted one saw written is now the
 * older one's interval. */
static void model_delete(unsigned i)
{
    int r = snap_delete(svol_snapshots(sv), ms[i].id);
    cr_assert_eq(r, 0, "delete %" PRIu64 ": %s\n%s", ms[i].id, strerror(-r), logbuf);
    if (i > 0)
        for (uint64_t c = 0; c * CH < ms[i - 1].size; c++)
            ms[i - 1].written[c] |= ms[i].written[c];
    free(ms[i].bytes);
    free(ms[i].written);
    memmove(&ms[i], &ms[i + 1], (nms - i - 1) * sizeof(ms[0]));
    nms--;
}

static uint64_t chunks(uint64_t size)
{
    return (size + CH - 1) / CH;
}

/* The changed-chunk list of (since, upto) (upto == nms: live) over
 * [first, first+n) chunks. */
static void check_changed_range(unsigned since, unsigned upto, uint64_t first, uint64_t n)
{
    uint64_t newer_size = upto == nms ? live_size : ms[upto].size;
    uint64_t len = (first + n) * CH > newer_size ? newer_size - first * CH : n * CH;
    struct bitmap *b;
    int r = snap_changed(svol_snapshots(sv), ms[since].id, upto == nms ? SNAP_LIVE : ms[upto].id,
                         live_size, first * CH, len, &b);
    cr_assert_eq(r, 0, "changed: %s", strerror(-r));
    cr_assert_eq(bitmap_nbits(b), n);
    for (uint64_t c = first; c < first + n; c++) {
        bool want = c >= chunks(ms[since].size);
        for (unsigned j = since; j < upto && !want; j++)
            want = c < chunks(ms[j].size) && ms[j].written[c];
        cr_assert_eq(bitmap_test(b, c - first), want,
                     "changed %" PRIu64 "..%s: chunk %" PRIu64 " is %d, want %d", ms[since].id,
                     upto == nms ? "live" : "snap", c, bitmap_test(b, c - first), want);
    }
    bitmap_close(b);
}

/* The whole list, and a random part of it. */
static void check_changed(unsigned since, unsigned upto)
{
    uint64_t all = chunks(upto == nms ? live_size : ms[upto].size);
    check_changed_range(since, upto, 0, all);
    uint64_t first = rnd(all);
    check_changed_range(since, upto, first, 1 + rnd(all - first));
}

static void check_all(void)
{
    unsigned char *live = malloc(live_size);
    read_live(live, live_size);
    cr_assert_eq(memcmp(live, live_model, live_size), 0, "the live data");
    free(live);
    cr_assert_eq(snap_count(svol_snapshots(sv)), nms);
    for (unsigned i = 0; i < nms; i++)
        assert_snap(ms[i].id, ms[i].bytes, ms[i].size);
    for (unsigned i = 0; i < nms; i++) {
        check_changed(i, nms);
        if (i + 1 < nms)
            check_changed(i, i + 1 + (unsigned)rnd(nms - i - 1));
    }
}

static void model_free(void)
{
    for (unsigned i = 0; i < nms; i++) {
        free(ms[i].bytes);
        free(ms[i].written);
    }
    nms = 0;
    free(live_model);
}

Test(snap, hundred_snapshots_with_deletes_from_the_middle_match_a_model)
{
    srandom(12);
    live_size = 16 * CH + 5000; /* not a whole number of chunks */
    make_volume(live_size);
    live_model = calloc(1, 64 * CH);
    for (unsigned k = 0; k < MODEL_SNAPS; k++) {
        for (int w = 0; w < 6; w++)
            model_write();
        model_snapshot(k);
        if (k == 40) { /* grow: older snapshots keep their size */
            uint64_t grown = live_size + 3 * CH + 777;
            cr_assert_eq(svol_resize(sv, grown), 0);
            live_size = grown;
        }
        if (k % 3 == 2 && nms > 2)
            model_delete(1 + (unsigned)rnd(nms - 2)); /* neither oldest nor newest */
        if (k % 10 == 9)
            model_delete(nms - 1); /* the newest */
        if (k % 25 == 24)
            check_all();
    }
    for (int w = 0; w < 20; w++)
        model_write();
    check_all();
    reopen();
    check_all();
    model_delete(0); /* the oldest */
    check_all();
    model_free();
}

Test(snap, extents_of_a_snapshot_follow_the_chain)
{
    make_volume(8 * CH);
    write_pattern(2 * CH, CH, 1); /* chunk 2 data, the rest holes */
    uint64_t id = snap_new("s");
    cr_assert_eq(svol_zero(sv, (uint32_t)CH, 2 * CH, SVOL_MAY_TRIM), 0); /* copy chunk 2 */
    write_pattern(5 * CH, CH, 2);                                        /* copy a hole */
    struct snap_extent e[8];
    int n = snap_extents(svol_snapshots(sv), id, (uint32_t)(8 * CH), 0, e, 8);
    cr_assert_eq(n, 3, "hole, data, hole: %d", n);
    cr_assert(e[0].hole && e[0].length == 2 * CH);
    cr_assert(!e[1].hole && e[1].length == CH);
    cr_assert(e[2].hole && e[2].length == 5 * CH);
    cr_assert_eq(snap_extents(svol_snapshots(sv), id, (uint32_t)(8 * CH), 0, e, 1), 1);
    cr_assert(e[0].hole && e[0].length == 2 * CH, "cut at max");
}

/* ---- crash orders --------------------------------------------------------- */

Test(snap, copy_durable_but_data_not_written)
{
    const uint64_t size = 4 * CH;
    make_volume(size);
    write_pattern(0, size, 1);
    unsigned char *old = malloc(size);
    read_live(old, size);
    uint64_t id = snap_new("s");
    /* The copy-on-write of a write to chunk 1, then a crash before the
     * write itself. */
    cr_assert_eq(snap_cow(svol_snapshots(sv), CH + 10, 10, false), 0);
    reopen();
    assert_snap(id, old, size);
    write_pattern(CH + 10, 10, 2);
    assert_snap(id, old, size);
    free(old);
}

Test(snap, copy_written_but_not_in_the_map)
{
    const uint64_t size = 4 * CH;
    make_volume(size);
    write_pattern(0, size, 1);
    unsigned char *old = malloc(size);
    read_live(old, size);
    uint64_t id = snap_new("s");
    /* A crash after the copy reached the side file but before its bit did:
     * here, garbage in the side file. */
    char side[256];
    snap_dir_file(side, sizeof(side), ".1.data");
    int fd = open(side, O_WRONLY);
    cr_assert_geq(fd, 0, "%s: %s", side, strerror(errno));
    unsigned char junk[4096];
    memset(junk, 0xee, sizeof(junk));
    cr_assert_eq(pwrite(fd, junk, sizeof(junk), 2 * CH), (ssize_t)sizeof(junk));
    close(fd);
    reopen();
    assert_snap(id, old, size);
    write_pattern(2 * CH, 100, 2); /* copies again, over the garbage */
    assert_snap(id, old, size);
    free(old);
}

/* Rewrites the index with snapshot id's line marked deleting and a valid
 * CRC: what a crash right after a delete's commit leaves. */
static void mark_deleting(uint64_t id)
{
    char path[256];
    snap_dir_file(path, sizeof(path), ".index");
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char text[8192] = "", line[256], prefix[64];
    snprintf(prefix, sizeof(prefix), "snap %" PRIu64 " ", id);
    bool found = false;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "crc ", 4) == 0)
            continue;
        char *live = strstr(line, " live ");
        if (strncmp(line, prefix, strlen(prefix)) == 0 && live) {
            found = true;
            char fixed[256];
            snprintf(fixed, sizeof(fixed), "%.*s deleting %s", (int)(live - line), line, live + 6);
            strcat(text, fixed);
        } else {
            strcat(text, line);
        }
    }
    fclose(f);
    cr_assert(found, "no line for snapshot %" PRIu64, id);
    size_t len = strlen(text);
    snprintf(text + len, sizeof(text) - len, "crc %08x\n",
             crc32_gzip_refl(0, (unsigned char *)text, len));
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fputs(text, f) >= 0, true);
    cr_assert_eq(fclose(f), 0);
}

Test(snap, a_delete_cut_short_is_finished_at_open)
{
    const uint64_t size = 8 * CH;
    make_volume(size);
    unsigned char *v[3];
    uint64_t id[3];
    for (int k = 0; k < 3; k++) {
        write_pattern((uint64_t)k * CH, 3 * CH, 10 + (unsigned)k);
        v[k] = malloc(size);
        read_live(v[k], size);
        char name[8];
        snprintf(name, sizeof(name), "s%d", k);
        id[k] = snap_new(name);
    }
    write_pattern(0, size, 20);
    /* The middle one holds chunks the oldest needs (1, 2, 3). */
    svol_unref(sv);
    sv = NULL;
    mark_deleting(id[1]);
    char side[64];
    snprintf(side, sizeof(side), ".%" PRIu64 ".data", id[1]);
    char path[256];
    snap_dir_file(path, sizeof(path), side);
    cr_assert_eq(access(path, F_OK), 0);
    int r = svol_open(st, &rec, &sv);
    cr_assert_eq(r, 0, "%s\n%s", strerror(-r), logbuf);
    cr_assert(strstr(logbuf, "finishing the delete") != NULL, "%s", logbuf);
    cr_assert_neq(access(path, F_OK), 0, "the side file is gone");
    cr_assert_eq(snap_count(svol_snapshots(sv)), 2);
    struct snap_info si;
    cr_assert_eq(snap_find(svol_snapshots(sv), "s1", &si), -ENOENT);
    assert_snap(id[0], v[0], size);
    assert_snap(id[2], v[2], size);

    /* Cut short after the merge and the removal of a file: the line is
     * dropped. (A snapshot that holds nothing: its merge is empty.) */
    uint64_t last = snap_new("s3");
    svol_unref(sv);
    sv = NULL;
    mark_deleting(last);
    snprintf(side, sizeof(side), ".%" PRIu64 ".data", last);
    snap_dir_file(path, sizeof(path), side);
    cr_assert_eq(unlink(path), 0);
    r = svol_open(st, &rec, &sv);
    cr_assert_eq(r, 0, "%s\n%s", strerror(-r), logbuf);
    cr_assert_eq(snap_count(svol_snapshots(sv)), 2);
    cr_assert_eq(snap_find(svol_snapshots(sv), "s3", &si), -ENOENT);
    snprintf(side, sizeof(side), ".%" PRIu64 ".map", last);
    snap_dir_file(path, sizeof(path), side);
    cr_assert_neq(access(path, F_OK), 0, "the map is gone too");
    assert_snap(id[0], v[0], size);
    assert_snap(id[2], v[2], size);
    for (int k = 0; k < 3; k++)
        free(v[k]);
}

/* A delete returns once it is committed: the merge runs in the
 * background, beside writes that copy into the snapshot being deleted (the
 * newest), and a close stops it after a batch, the open finishing it. */
Test(snap, a_delete_merges_in_the_background_beside_writes)
{
    const uint64_t size = 1024 * CH;
    make_volume(size);
    write_pattern(0, size, 1);
    unsigned char *v0 = malloc(size);
    read_live(v0, size);
    uint64_t s0 = snap_new("s0");
    uint64_t s1 = snap_new("s1");
    write_pattern(0, size / 2, 2); /* the first half copied into s1 */
    cr_assert_eq(snap_delete(svol_snapshots(sv), s1), 0, "%s", logbuf);
    char side[64], path[256];
    snprintf(side, sizeof(side), ".%" PRIu64 ".data", s1);
    snap_dir_file(path, sizeof(path), side);
    cr_assert_eq(access(path, F_OK), 0, "the delete waited for its merge");
    write_pattern(size / 2, size / 2, 3); /* copies into s1, which s0 needs */
    assert_snap(s0, v0, size);
    reopen();
    cr_assert_neq(access(path, F_OK), 0, "the open finished the delete");
    cr_assert_eq(snap_count(svol_snapshots(sv)), 1);
    assert_snap(s0, v0, size);
    free(v0);
}

/* A snapshot being deleted counts until its merge drops it: a create at
 * the limit waits for the merge rather than fail. */
Test(snap, a_create_at_the_limit_waits_for_a_pending_merge)
{
    const uint64_t size = 1024 * CH;
    make_volume(size);
    write_pattern(0, size, 1);
    snap_new("s0");
    uint64_t s1 = snap_new("s1");
    write_pattern(0, size, 2); /* every chunk copied into s1, which s0 needs */
    for (unsigned k = 2; k < SNAP_MAX; k++) {
        char name[16];
        snprintf(name, sizeof(name), "s%u", k);
        snap_new(name);
    }
    cr_assert_eq(snap_delete(svol_snapshots(sv), s1), 0, "%s", logbuf);
    snap_new("one-more");
    cr_assert_eq(snap_count(svol_snapshots(sv)), SNAP_MAX);
}

/* ---- refusals ------------------------------------------------------------- */

Test(snap, a_corrupt_index_is_refused_naming_the_file)
{
    make_volume(4 * CH);
    snap_new("s");
    snap_new("t");
    svol_unref(sv);
    sv = NULL;
    char path[256];
    snap_dir_file(path, sizeof(path), ".index");
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    char c;
    cr_assert_eq(pread(fd, &c, 1, 70), 1);
    c ^= 0x01;
    cr_assert_eq(pwrite(fd, &c, 1, 70), 1);
    struct stat sb;
    cr_assert_eq(fstat(fd, &sb), 0);
    logbuf[0] = '\0';
    struct svol *bad = NULL;
    cr_assert_eq(svol_open(st, &rec, &bad), -EINVAL);
    cr_assert_null(bad);
    cr_assert(strstr(logbuf, path) != NULL, "the error names %s:\n%s", path, logbuf);
    cr_assert(strstr(logbuf, "CRC") != NULL, "%s", logbuf);

    /* Truncated: no CRC line. */
    c ^= 0x01;
    cr_assert_eq(pwrite(fd, &c, 1, 70), 1);
    cr_assert_eq(ftruncate(fd, sb.st_size - 5), 0);
    close(fd);
    logbuf[0] = '\0';
    cr_assert_eq(svol_open(st, &rec, &bad), -EINVAL);
    cr_assert(strstr(logbuf, path) != NULL, "%s", logbuf);
}

Test(snap, a_missing_side_file_is_refused)
{
    make_volume(4 * CH);
    snap_new("s");
    svol_unref(sv);
    sv = NULL;
    char path[256];
    snap_dir_file(path, sizeof(path), ".1.map");
    cr_assert_eq(unlink(path), 0);
    struct svol *bad = NULL;
    cr_assert_eq(svol_open(st, &rec, &bad), -EINVAL);
    cr_assert(strstr(logbuf, "missing") != NULL, "%s", logbuf);
}

Test(snap, deleting_the_volume_removes_its_snapshots)
{
    make_volume(4 * CH);
    write_pattern(0, 4 * CH, 1);
    snap_new("s");
    write_pattern(0, 4 * CH, 2);
    cr_assert_eq(svol_delete(sv), 0);
    char path[256];
    snap_dir_file(path, sizeof(path), ".index");
    cr_assert_neq(access(path, F_OK), 0);
    snap_dir_file(path, sizeof(path), ".1.data");
    cr_assert_neq(access(path, F_OK), 0);
}

/* ---- concurrency: 8 writers share the group commit ------------------------ */

#define WRITERS 8
#define THREAD_WRITES 200

static void *writer(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    unsigned char buf[4096];
    memset(buf, (int)seed, sizeof(buf));
    for (int i = 0; i < THREAD_WRITES; i++) {
        uint64_t off = (uint64_t)(rand_r(&seed) % (32 * CH / 4096)) * 4096;
        int r = svol_write(sv, buf, sizeof(buf), off, 0);
        if (r < 0)
            return (void *)(intptr_t)r;
    }
    return NULL;
}

Test(snap, concurrent_first_writes_keep_the_snapshot_exact)
{
    const uint64_t size = 32 * CH;
    make_volume(size);
    write_pattern(0, size, 7);
    unsigned char *old = malloc(size);
    read_live(old, size);
    uint64_t id = snap_new("s");
    pthread_t t[WRITERS];
    for (uintptr_t i = 0; i < WRITERS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, writer, (void *)(i + 1)), 0);
    for (int i = 0; i < WRITERS; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        cr_assert_null(ret, "writer %d: %s", i, strerror(-(int)(intptr_t)ret));
    }
    assert_snap(id, old, size);
    reopen();
    assert_snap(id, old, size);
    free(old);
}

/* ---- the cluster's ids and times ------------------------------------------ */

/* Rewrites the index's "next" line to next, with a valid CRC: what a crash
 * right after a create reserved that id leaves. */
static void set_next(uint64_t next)
{
    char path[256];
    snap_dir_file(path, sizeof(path), ".index");
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char text[8192] = "", line[256];
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "crc ", 4) == 0)
            continue;
        if (strncmp(line, "next ", 5) == 0)
            snprintf(line, sizeof(line), "next %" PRIu64 "\n", next);
        strcat(text, line);
    }
    fclose(f);
    size_t len = strlen(text);
    snprintf(text + len, sizeof(text) - len, "crc %08x\n",
             crc32_gzip_refl(0, (unsigned char *)text, len));
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fputs(text, f) >= 0, true);
    cr_assert_eq(fclose(f), 0);
}

static void touch_snap_file(const char *suffix)
{
    char path[256];
    snap_dir_file(path, sizeof(path), suffix);
    int fd = open(path, O_WRONLY | O_CREAT, 0600);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, "junk", 4), 4);
    close(fd);
}

static bool snap_file_exists(const char *suffix)
{
    char path[256];
    snap_dir_file(path, sizeof(path), suffix);
    return access(path, F_OK) == 0;
}

Test(snap, ids_and_times_are_the_callers_and_only_grow)
{
    make_volume(4 * CH);
    struct snap_info si;
    cr_assert_eq(svol_snapshot_create(sv, 0, "zero", 5, &si), -EINVAL, "id 0");
    cr_assert_eq(svol_snapshot_create(sv, 12, "a", 1234567, &si), 0, "%s", logbuf);
    cr_assert_eq(si.id, 12);
    cr_assert_eq(si.time, 1234567);
    cr_assert_eq(svol_snapshot_create(sv, 12, "b", 1, &si), -EINVAL, "an id used");
    cr_assert_eq(svol_snapshot_create(sv, 7, "b", 1, &si), -EINVAL, "an id below");
    cr_assert(strstr(logbuf, "id 7 is not above every id the volume had (12 and below") != NULL,
              "%s", logbuf);
    cr_assert_eq(svol_snapshot_create(sv, 13, "b", 1234999, &si), 0, "the next one");
    cr_assert_eq(snap_delete(svol_snapshots(sv), 13), 0);
    cr_assert_eq(svol_snapshot_create(sv, 13, "c", 1, &si), -EINVAL, "a deleted id stays used");
    reopen();
    cr_assert_eq(svol_snapshot_create(sv, 13, "c", 1, &si), -EINVAL, "across a reopen too");
    cr_assert_eq(snap_find(svol_snapshots(sv), "a", &si), 0);
    cr_assert_eq(si.id, 12);
    cr_assert_eq(si.time, 1234567, "the time survives a reopen");

    /* A create of id 40 cut short after it reserved the id and made its
     * files: the open removes them, and 40 is taken. */
    svol_unref(sv);
    sv = NULL;
    set_next(40);
    touch_snap_file(".40.data");
    touch_snap_file(".40.map");
    int r = svol_open(st, &rec, &sv);
    cr_assert_eq(r, 0, "%s\n%s", strerror(-r), logbuf);
    cr_assert(!snap_file_exists(".40.data") && !snap_file_exists(".40.map"),
              "a create's leftovers outlived the open");
    cr_assert_eq(svol_snapshot_create(sv, 39, "c", 1, &si), -EINVAL);
    cr_assert_eq(svol_snapshot_create(sv, 40, "c", 1, &si), 0, "%s", logbuf);
    cr_assert_eq(snap_count(svol_snapshots(sv)), 2);
}

Test(snap, a_create_that_skips_ids_leaves_nothing_after_a_crash_before_its_files)
{
    make_volume(4 * CH);
    struct snap_info si;
    cr_assert_eq(svol_snapshot_create(sv, 100, "a", 1, &si), 0, "%s", logbuf);
    /* The index of the reservation alone (the crash came before the
     * files): the id is taken, nothing else changed. */
    svol_unref(sv);
    sv = NULL;
    set_next(205);
    int r = svol_open(st, &rec, &sv);
    cr_assert_eq(r, 0, "%s\n%s", strerror(-r), logbuf);
    cr_assert_eq(snap_count(svol_snapshots(sv)), 1);
    cr_assert_eq(svol_snapshot_create(sv, 204, "b", 1, &si), -EINVAL);
    cr_assert_eq(svol_snapshot_create(sv, 205, "b", 1, &si), 0, "%s", logbuf);
}

/* ---- exclusive size ---------------------------------------------------------- */

static uint64_t exclusive_of(const char *name)
{
    struct snap_info si;
    cr_assert_eq(snap_find(svol_snapshots(sv), name, &si), 0);
    struct snap_info all[4];
    int n = snap_list(svol_snapshots(sv), all, 4);
    for (int i = 0; i < n; i++)
        if (all[i].id == si.id)
            cr_assert_eq(all[i].exclusive, si.exclusive, "snap_list and snap_find agree");
    return si.exclusive;
}

/* Copies ahead of several writes (a peer's, queued): every chunk they
 * cover that the snapshot lacks is copied and durable, nothing past its
 * size or of an empty range; then the writes find their chunks held. */
Test(snap, copies_ahead_of_several_writes_are_durable)
{
    const uint64_t size = 8 * CH;
    make_volume(size);
    write_pattern(0, size, 1);
    unsigned char *old = malloc(size);
    read_live(old, size);
    uint64_t id = snap_new("s");
    struct snap_range rg[] = {
        {CH + 10, 10}, {3 * CH, 2 * CH}, {7 * CH + 100, 100}, {100 * CH, CH}, {0, 0}};
    struct snapset *ss = svol_snapshots(sv);
    cr_assert_eq(snap_cow_many(ss, rg, sizeof rg / sizeof rg[0]), 0);
    reopen();
    ss = svol_snapshots(sv);
    for (uint64_t c = 0; c < 8; c++) {
        bool copied = c == 1 || c == 3 || c == 4 || c == 7;
        cr_assert_eq(snap_cow(ss, c * CH, 1, true), copied ? 0 : -EAGAIN,
                     "chunk %" PRIu64 ": %s after a reopen", c, copied ? "held" : "not held");
    }
    cr_assert_eq(exclusive_of("s"), 4 * CH);
    write_pattern(0, size, 2);
    assert_snap(id, old, size);
    free(old);
}

Test(snap, exclusive_size_is_the_chunks_its_side_file_holds)
{
    const uint64_t size = 4 * CH + 5000;
    make_volume(size);
    write_pattern(0, size, 1);
    snap_new("s1");
    cr_assert_eq(exclusive_of("s1"), 0);
    write_pattern(10, 100, 2);        /* chunk 0 */
    write_pattern(CH + 5, 2 * CH, 3); /* chunks 1, 2, 3 */
    write_pattern(CH + 9, 10, 4);     /* chunk 1 again: nothing new */
    cr_assert_eq(exclusive_of("s1"), 4 * CH);
    write_pattern(size - 10, 10, 5); /* the last, partial chunk */
    cr_assert_eq(exclusive_of("s1"), 4 * CH + 5000);
    snap_new("s2");
    cr_assert_eq(exclusive_of("s2"), 0);
    write_pattern(0, 10, 6);
    cr_assert_eq(exclusive_of("s2"), CH);
    cr_assert_eq(exclusive_of("s1"), 4 * CH + 5000, "an older one is unchanged");
    reopen();
    cr_assert_eq(exclusive_of("s2"), CH);
}

/* ---- put: a resync makes a snapshot read a current copy's bytes ------------- */

static unsigned char *pattern(uint64_t len, unsigned seed)
{
    unsigned char *p = malloc(len);
    fill(p, len, seed);
    return p;
}

Test(snap, put_in_every_snapshot_oldest_first_then_live_reads_the_source)
{
    /* This copy was outdated at both cuts: its chunks 2..4 are stale. The
     * source's s1, s2 and live bytes there are A, B, C (chunk 3 of A all
     * zeroes). */
    const uint64_t size = 8 * CH;
    make_volume(size);
    write_pattern(0, size, 1);
    uint64_t s1 = snap_new("s1");
    write_pattern(3 * CH, CH, 2); /* s1 holds a stale chunk 3 */
    uint64_t s2 = snap_new("s2");
    write_pattern(4 * CH, CH, 3); /* s2 holds a stale chunk 4 */
    unsigned char *old1 = malloc(size), *old2 = malloc(size);
    cr_assert_eq(snap_read(svol_snapshots(sv), s1, old1, (uint32_t)size, 0), 0);
    cr_assert_eq(snap_read(svol_snapshots(sv), s2, old2, (uint32_t)size, 0), 0);

    unsigned char *a = pattern(3 * CH, 10), *b = pattern(3 * CH, 11), *c = pattern(3 * CH, 12);
    memset(a + CH, 0, CH);
    cr_assert_eq(snap_put(svol_snapshots(sv), s1, a, (uint32_t)(3 * CH), 2 * CH), 0, "%s", logbuf);
    cr_assert_eq(snap_put(svol_snapshots(sv), s2, b, (uint32_t)(3 * CH), 2 * CH), 0, "%s", logbuf);
    uint64_t ex2 = exclusive_of("s2");
    cr_assert_eq(svol_write(sv, c, (uint32_t)(3 * CH), 2 * CH, 0), 0);
    cr_assert_eq(exclusive_of("s2"), ex2, "the live write copied nothing: s2 holds the range");

    memcpy(old1 + 2 * CH, a, 3 * CH);
    memcpy(old2 + 2 * CH, b, 3 * CH);
    assert_snap(s1, old1, size);
    assert_snap(s2, old2, size);
    unsigned char *live = malloc(size);
    read_live(live, size);
    cr_assert_eq(memcmp(live + 2 * CH, c, 3 * CH), 0);
    reopen();
    assert_snap(s1, old1, size);
    assert_snap(s2, old2, size);
    free(a);
    free(b);
    free(c);
    free(old1);
    free(old2);
    free(live);
}

Test(snap, put_into_an_older_snapshot_leaves_the_newer_ones)
{
    const uint64_t size = 4 * CH;
    make_volume(size);
    write_pattern(0, size, 1);
    unsigned char *orig = malloc(size);
    read_live(orig, size);
    uint64_t s1 = snap_new("s1");
    uint64_t s2 = snap_new("s2");
    /* s1 held nothing: chunk 1 read through s2 to live. Now it holds its
     * own, and s2 and live still read the old bytes. */
    unsigned char *a = pattern(CH, 20);
    cr_assert_eq(snap_put(svol_snapshots(sv), s1, a, (uint32_t)CH, CH), 0, "%s", logbuf);
    unsigned char *want = malloc(size);
    memcpy(want, orig, size);
    memcpy(want + CH, a, CH);
    assert_snap(s1, want, size);
    assert_snap(s2, orig, size);
    unsigned char *live = malloc(size);
    read_live(live, size);
    cr_assert_eq(memcmp(live, orig, size), 0);
    free(a);
    free(want);
    free(orig);
    free(live);
}

Test(snap, put_takes_whole_chunks_inside_the_snapshot)
{
    const uint64_t size = 3 * CH + 5000;
    make_volume(size);
    uint64_t id = snap_new("s");
    struct snapset *ss = svol_snapshots(sv);
    unsigned char *buf = pattern(2 * CH, 30);
    cr_assert_eq(snap_put(ss, id + 1, buf, (uint32_t)CH, 0), -ENOENT);
    cr_assert_eq(snap_put(ss, id, buf, (uint32_t)CH, 4096), -EINVAL, "unaligned offset");
    cr_assert_eq(snap_put(ss, id, buf, 4096, 0), -EINVAL, "a part of a chunk");
    cr_assert_eq(snap_put(ss, id, buf, 0, 0), -EINVAL, "nothing");
    cr_assert_eq(snap_put(ss, id, buf, (uint32_t)(2 * CH), 2 * CH), -EINVAL, "past its end");
    cr_assert(strstr(logbuf, "not whole chunks inside it") != NULL, "%s", logbuf);
    /* The last, partial chunk: exactly up to the end. */
    cr_assert_eq(snap_put(ss, id, buf, (uint32_t)(CH + 5000), 2 * CH), 0, "%s", logbuf);
    unsigned char *got = malloc(CH + 5000);
    cr_assert_eq(snap_read(ss, id, got, (uint32_t)(CH + 5000), 2 * CH), 0);
    cr_assert_eq(memcmp(got, buf, CH + 5000), 0);
    cr_assert_eq(exclusive_of("s"), CH + 5000);
    free(buf);
    free(got);
}
