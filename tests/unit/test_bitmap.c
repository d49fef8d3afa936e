/* test_bitmap.c - dirty bitmaps (store/bitmap.c): the bit operations, the
 * on-disk format byte by byte, durability through close and reopen,
 * resizing, corrupt files rejected without being touched, export and
 * merge between nodes, removal, a leftover .tmp from a crash, and 8
 * threads setting and syncing at once, each checking its bits reached the
 * file when its sync returned. */
#include "store/bitmap.h"

#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHIFT 20

static char dir[] = "/tmp/test_bitmap.XXXXXX";
static char path[sizeof(dir) + 32];

static void setup(void)
{
    strcpy(dir, "/tmp/test_bitmap.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/vol.bitmap", dir);
}

static int remove_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void teardown(void)
{
    cr_assert_eq(nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS), 0);
}

TestSuite(bitmap, .init = setup, .fini = teardown);

/* ---- helpers ----------------------------------------------------------- */

static struct bitmap *open_ok(const char *p, uint64_t nbits)
{
    struct bitmap *b;
    int r = bitmap_open(p, nbits, SHIFT, &b);
    cr_assert_eq(r, 0, "bitmap_open(%s, %llu): %s", p ? p : "NULL", (unsigned long long)nbits,
                 strerror(-r));
    return b;
}

static off_t file_size(const char *p)
{
    struct stat st;
    cr_assert_eq(stat(p, &st), 0, "stat %s: %s", p, strerror(errno));
    return st.st_size;
}

static bool exists(const char *p)
{
    return access(p, F_OK) == 0;
}

/* The whole file, malloc'd. */
static unsigned char *slurp(const char *p, size_t *len)
{
    *len = (size_t)file_size(p);
    unsigned char *buf = malloc(*len + 1);
    cr_assert_not_null(buf);
    int fd = open(p, O_RDONLY);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pread(fd, buf, *len, 0), (ssize_t)*len);
    cr_assert_eq(close(fd), 0);
    return buf;
}

static void spit(const char *p, const void *buf, size_t len)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, buf, len), (ssize_t)len);
    cr_assert_eq(close(fd), 0);
}

static uint64_t le64_at(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* A valid file of 100 bits with bits 3 and 70 set; tests then break it. */
static unsigned char good[BITMAP_HEADER_SIZE + 16];

static void make_good(void)
{
    memset(good, 0, sizeof(good));
    memcpy(good, "VSANDBM1", 8);
    put_le32(good + 8, 1);
    put_le32(good + 12, SHIFT);
    put_le64(good + 16, 100);
    put_le64(good + 32, UINT64_C(1) << 3);
    put_le64(good + 40, UINT64_C(1) << 6);
}

/* bitmap_open must refuse what is at path with want and leave it as is. */
static void assert_rejected(const void *content, size_t len, int want)
{
    spit(path, content, len);
    struct bitmap *b = NULL;
    int r = bitmap_open(path, 100, SHIFT, &b);
    cr_assert_eq(r, want, "open gave %d (%s), want %d", r, strerror(-r), want);
    cr_assert_null(b);
    size_t now_len;
    unsigned char *now = slurp(path, &now_len);
    cr_assert_eq(now_len, len, "a rejected file was changed");
    cr_assert_eq(memcmp(now, content, len), 0, "a rejected file was changed");
    free(now);
}

/* ---- bit operations ------------------------------------------------------ */

static void check_ops(struct bitmap *b)
{
    cr_assert_eq(bitmap_nbits(b), 1000);
    cr_assert_eq(bitmap_region_shift(b), SHIFT);
    cr_assert_eq(bitmap_count(b), 0);
    cr_assert_eq(bitmap_next(b, 0), 1000, "empty bitmap: next is nbits");

    cr_assert_eq(bitmap_set(b, 5, 5), 1);
    cr_assert_eq(bitmap_set(b, 60, 130), 1, "a range across three words");
    cr_assert_eq(bitmap_count(b), 1 + 71);
    cr_assert(bitmap_test(b, 5));
    cr_assert_not(bitmap_test(b, 4));
    cr_assert_not(bitmap_test(b, 6));
    cr_assert_not(bitmap_test(b, 59));
    for (uint64_t i = 60; i <= 130; i++)
        cr_assert(bitmap_test(b, i), "bit %llu", (unsigned long long)i);
    cr_assert_not(bitmap_test(b, 131));
    cr_assert_not(bitmap_test(b, 5000), "past nbits is never set");

    cr_assert_eq(bitmap_next(b, 0), 5);
    cr_assert_eq(bitmap_next(b, 5), 5);
    cr_assert_eq(bitmap_next(b, 6), 60);
    cr_assert_eq(bitmap_next(b, 100), 100);
    cr_assert_eq(bitmap_next(b, 131), 1000);
    cr_assert_eq(bitmap_next(b, 99999), 1000);

    cr_assert_eq(bitmap_set(b, 990, 5000), 1, "clipped to nbits");
    cr_assert_eq(bitmap_count(b), 72 + 10);
    cr_assert(bitmap_test(b, 999));
    cr_assert_eq(bitmap_next(b, 131), 990);
    cr_assert_eq(bitmap_set(b, 1000, 2000), 0, "wholly past nbits: nothing to do");
    cr_assert_eq(bitmap_set(b, 7, 6), -EINVAL);
    cr_assert_eq(bitmap_count(b), 82);
}

Test(bitmap, ops_in_memory)
{
    struct bitmap *b = open_ok(NULL, 1000);
    check_ops(b);
    cr_assert_eq(bitmap_set(b, 5, 5), 0, "memory only: set bits owe nothing");
    cr_assert_eq(bitmap_sync(b), 0);
    cr_assert_eq(bitmap_remove(b), 0);
}

Test(bitmap, ops_on_file)
{
    struct bitmap *b = open_ok(path, 1000);
    check_ops(b);
    bitmap_close(b);
}

Test(bitmap, bad_arguments)
{
    struct bitmap *b = (struct bitmap *)1;
    cr_assert_eq(bitmap_open(path, 10, 15, &b), -EINVAL, "region below 64 KiB");
    cr_assert_null(b);
    cr_assert_eq(bitmap_open(path, 10, 31, &b), -EINVAL, "region above 1 GiB");
    cr_assert_eq(bitmap_open(path, BITMAP_MAX_NBITS + 1, SHIFT, &b), -EINVAL);
    cr_assert_not(exists(path), "nothing created for bad arguments");
    b = open_ok(NULL, 10);
    cr_assert_eq(bitmap_resize(b, BITMAP_MAX_NBITS + 1), -EINVAL);
    cr_assert_eq(bitmap_nbits(b), 10);
    bitmap_close(b);
}

Test(bitmap, zero_bits)
{
    struct bitmap *b = open_ok(path, 0);
    cr_assert_eq(file_size(path), BITMAP_HEADER_SIZE);
    cr_assert_eq(bitmap_set(b, 0, 10), 0);
    cr_assert_eq(bitmap_next(b, 0), 0);
    void *buf = (void *)1;
    size_t len = 1;
    cr_assert_eq(bitmap_export(b, &buf, &len), 0);
    cr_assert_null(buf);
    cr_assert_eq(len, 0);
    cr_assert_eq(bitmap_merge(b, NULL, 0), 0);
    cr_assert_eq(bitmap_resize(b, 65), 0);
    cr_assert_eq(bitmap_set(b, 64, 64), 1);
    cr_assert_eq(bitmap_sync(b), 0);
    bitmap_close(b);
    b = open_ok(path, 65);
    cr_assert_eq(bitmap_next(b, 0), 64);
    bitmap_close(b);
}

/* ---- durability and the format -------------------------------------------- */

Test(bitmap, set_owes_a_sync_until_durable)
{
    struct bitmap *b = open_ok(path, 1000);
    cr_assert_eq(bitmap_set(b, 10, 20), 1, "clear bits: sync needed");
    cr_assert_eq(bitmap_set(b, 12, 12), 1, "set but not durable yet: still owes a sync");
    cr_assert_eq(bitmap_set(b, 500, 500), 1);
    cr_assert_eq(bitmap_sync(b), 0);
    cr_assert_eq(bitmap_set(b, 10, 20), 0, "durable: nothing to wait for");
    cr_assert_eq(bitmap_set(b, 12, 12), 0);
    cr_assert_eq(bitmap_set(b, 500, 500), 0);
    cr_assert_eq(bitmap_set(b, 20, 21), 1, "one new bit is enough");
    cr_assert_eq(bitmap_sync(b), 0);
    cr_assert_eq(bitmap_sync(b), 0, "nothing pending: a no-op");
    cr_assert_eq(bitmap_set(b, 10, 21), 0);
    bitmap_close(b);
}

Test(bitmap, file_format)
{
    struct bitmap *b = open_ok(path, 130);
    cr_assert_eq(file_size(path), BITMAP_HEADER_SIZE + 3 * 8);
    cr_assert_eq(bitmap_set(b, 0, 0), 1);
    cr_assert_eq(bitmap_set(b, 65, 65), 1);
    cr_assert_eq(bitmap_set(b, 129, 129), 1);
    cr_assert_eq(bitmap_sync(b), 0);

    size_t len;
    unsigned char *f = slurp(path, &len);
    cr_assert_eq(len, BITMAP_HEADER_SIZE + 24);
    cr_assert_eq(memcmp(f, "VSANDBM1", 8), 0);
    cr_assert_eq(f[8], 1, "version, little-endian");
    cr_assert_eq(f[9] | f[10] | f[11], 0);
    cr_assert_eq(f[12], SHIFT);
    cr_assert_eq(le64_at(f + 16), 130);
    cr_assert_eq(le64_at(f + 24), 0, "reserved");
    cr_assert_eq(le64_at(f + 32), 1);
    cr_assert_eq(le64_at(f + 40), 2);
    cr_assert_eq(le64_at(f + 48), 2);
    cr_assert_eq(f[40], 2, "words are little-endian");
    free(f);

    void *buf;
    cr_assert_eq(bitmap_export(b, &buf, &len), 0);
    cr_assert_eq(len, 24);
    f = slurp(path, &len);
    cr_assert_eq(memcmp(buf, f + BITMAP_HEADER_SIZE, 24), 0, "export is the file's body");
    free(f);
    free(buf);
    bitmap_close(b);
}

Test(bitmap, reopen_keeps_synced_bits)
{
    struct bitmap *b = open_ok(path, 100000);
    cr_assert_eq(bitmap_set(b, 7, 7), 1);
    cr_assert_eq(bitmap_set(b, 4000, 4100), 1);
    cr_assert_eq(bitmap_set(b, 99999, 99999), 1);
    cr_assert_eq(bitmap_sync(b), 0);
    bitmap_close(b);

    b = open_ok(path, 100000);
    cr_assert_eq(bitmap_count(b), 103);
    cr_assert_eq(bitmap_next(b, 0), 7);
    cr_assert_eq(bitmap_next(b, 8), 4000);
    cr_assert_eq(bitmap_next(b, 4101), 99999);
    cr_assert_eq(bitmap_set(b, 4050, 4050), 0, "loaded bits are durable");
    bitmap_close(b);
}

/* A cleared map is clear on reopen too, and takes bits again. */
Test(bitmap, clear_is_durable)
{
    struct bitmap *b = open_ok(path, 100000);
    cr_assert_eq(bitmap_set(b, 7, 7), 1);
    cr_assert_eq(bitmap_set(b, 60000, 70000), 1);
    cr_assert_eq(bitmap_sync(b), 0);
    cr_assert_eq(bitmap_clear(b), 0);
    cr_assert_eq(bitmap_count(b), 0);
    cr_assert_eq(bitmap_next(b, 0), 100000);
    bitmap_close(b);

    b = open_ok(path, 100000);
    cr_assert_eq(bitmap_count(b), 0, "cleared bits came back from the file");
    cr_assert_eq(bitmap_set(b, 60000, 60000), 1, "a bit set after the clear is owed a sync");
    cr_assert_eq(bitmap_sync(b), 0);
    bitmap_close(b);
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* 2,000 bitmaps open, set, synced and resized hold no descriptor at rest
 * (a node with thousands of volumes would pass RLIMIT_NOFILE), and keep
 * working. */
Test(bitmap, no_descriptor_at_rest)
{
    enum { N = 2000 };
    static struct bitmap *bs[N];
    int before = open_fds();
    for (int i = 0; i < N; i++) {
        char p[sizeof(dir) + 32];
        snprintf(p, sizeof p, "%s/v%d", dir, i);
        bs[i] = open_ok(p, 64);
        cr_assert_eq(bitmap_set(bs[i], (uint64_t)i % 64, (uint64_t)i % 64), 1);
        cr_assert_eq(bitmap_sync(bs[i]), 0);
        cr_assert_eq(bitmap_resize(bs[i], 128), 0);
    }
    cr_assert_eq(open_fds(), before, "descriptors held: %d", open_fds() - before);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(bitmap_set(bs[i], 100, 100), 1);
        cr_assert_eq(bitmap_sync(bs[i]), 0);
        bitmap_close(bs[i]);
        char p[sizeof(dir) + 32];
        snprintf(p, sizeof p, "%s/v%d", dir, i);
        struct bitmap *b = open_ok(p, 128);
        cr_assert_eq(bitmap_count(b), 2);
        bitmap_close(b);
    }
}

/* More pages than one write stages, so syncs write several runs. */
Test(bitmap, large_scattered_and_full)
{
    const uint64_t n = UINT64_C(64) * 512 * 150 + 17;
    struct bitmap *b = open_ok(path, n);
    uint64_t set = 0;
    for (uint64_t i = 3; i < n; i += 40009, set++)
        cr_assert_eq(bitmap_set(b, i, i), 1);
    cr_assert_eq(bitmap_sync(b), 0);
    bitmap_close(b);
    b = open_ok(path, n);
    cr_assert_eq(bitmap_count(b), set);
    for (uint64_t i = 3; i < n; i += 40009)
        cr_assert(bitmap_test(b, i));
    cr_assert_eq(bitmap_set(b, 0, UINT64_MAX), 1);
    cr_assert_eq(bitmap_count(b), n);
    cr_assert_eq(bitmap_sync(b), 0);
    bitmap_close(b);
    b = open_ok(path, n);
    cr_assert_eq(bitmap_count(b), n);
    bitmap_close(b);
}

/* ---- resizing ------------------------------------------------------------------- */

Test(bitmap, resize_keeps_bits)
{
    struct bitmap *b = open_ok(path, 200);
    cr_assert_eq(bitmap_set(b, 1, 1), 1);
    cr_assert_eq(bitmap_set(b, 150, 199), 1);
    cr_assert_eq(bitmap_resize(b, 100000), 0);
    cr_assert_eq(bitmap_nbits(b), 100000);
    cr_assert_eq(file_size(path), BITMAP_HEADER_SIZE + 1563 * 8);
    cr_assert_eq(bitmap_count(b), 51);
    cr_assert_eq(bitmap_set(b, 150, 199), 0, "resize made every bit durable");
    cr_assert_eq(bitmap_set(b, 99000, 99000), 1);
    cr_assert_eq(bitmap_sync(b), 0);

    cr_assert_eq(bitmap_resize(b, 160), 0);
    cr_assert_eq(bitmap_count(b), 11, "bits 1 and 150..159 remain");
    cr_assert_eq(bitmap_next(b, 2), 150);
    cr_assert_eq(bitmap_next(b, 160), 160);
    cr_assert_eq(file_size(path), BITMAP_HEADER_SIZE + 3 * 8);
    cr_assert_eq(bitmap_resize(b, 200), 0);
    cr_assert_not(bitmap_test(b, 170), "bits cut off by a shrink do not come back");
    cr_assert_eq(bitmap_count(b), 11);
    bitmap_close(b);
    char tmp[sizeof(path) + 4];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    cr_assert_not(exists(tmp), "no leftover after resizes");

    b = open_ok(path, 200);
    cr_assert_eq(bitmap_count(b), 11);
    cr_assert(bitmap_test(b, 1));
    cr_assert(bitmap_test(b, 159));
    bitmap_close(b);
}

Test(bitmap, open_resizes_to_the_volume)
{
    struct bitmap *b = open_ok(path, 1000);
    cr_assert_eq(bitmap_set(b, 10, 10), 1);
    cr_assert_eq(bitmap_set(b, 900, 900), 1);
    cr_assert_eq(bitmap_sync(b), 0);
    bitmap_close(b);

    b = open_ok(path, 5000);
    cr_assert_eq(bitmap_nbits(b), 5000);
    cr_assert_eq(bitmap_count(b), 2);
    bitmap_close(b);
    cr_assert_eq(file_size(path), BITMAP_HEADER_SIZE + 79 * 8, "the file was grown too");

    b = open_ok(path, 500);
    cr_assert_eq(bitmap_count(b), 1);
    cr_assert(bitmap_test(b, 10));
    bitmap_close(b);
    cr_assert_eq(file_size(path), BITMAP_HEADER_SIZE + 8 * 8);
}

Test(bitmap, resize_in_memory)
{
    struct bitmap *b = open_ok(NULL, 64);
    cr_assert_eq(bitmap_set(b, 0, 63), 1);
    cr_assert_eq(bitmap_resize(b, 10), 0);
    cr_assert_eq(bitmap_count(b), 10);
    cr_assert_eq(bitmap_resize(b, 64), 0);
    cr_assert_eq(bitmap_count(b), 10, "the tail of the last word was cleared");
    bitmap_close(b);
}

/* ---- corrupt files ----------------------------------------------------------- */

Test(bitmap, good_fixture_opens)
{
    make_good();
    spit(path, good, sizeof(good));
    struct bitmap *b = open_ok(path, 100);
    cr_assert_eq(bitmap_count(b), 2);
    cr_assert(bitmap_test(b, 3));
    cr_assert(bitmap_test(b, 70));
    bitmap_close(b);
}

Test(bitmap, bad_magic)
{
    make_good();
    good[7] = '2';
    assert_rejected(good, sizeof(good), -EINVAL);
}

Test(bitmap, wrong_version)
{
    make_good();
    put_le32(good + 8, 2);
    assert_rejected(good, sizeof(good), -EPROTONOSUPPORT);
}

Test(bitmap, truncated)
{
    make_good();
    assert_rejected(good, sizeof(good) - 1, -EINVAL);
    assert_rejected(good, sizeof(good) - 8, -EINVAL);
    assert_rejected(good, 20, -EINVAL);
    assert_rejected(good, 0, -EINVAL);
}

Test(bitmap, too_long)
{
    unsigned char longer[sizeof(good) + 8] = {0};
    make_good();
    memcpy(longer, good, sizeof(good));
    assert_rejected(longer, sizeof(longer), -EINVAL);
}

Test(bitmap, nonzero_reserved)
{
    make_good();
    good[31] = 1;
    assert_rejected(good, sizeof(good), -EINVAL);
}

Test(bitmap, bits_past_the_end)
{
    make_good();
    good[BITMAP_HEADER_SIZE + 15] = 0x80; /* bit 127 of a 100-bit map */
    assert_rejected(good, sizeof(good), -EINVAL);
}

Test(bitmap, region_shift_mismatch)
{
    make_good();
    put_le32(good + 12, SHIFT + 1);
    assert_rejected(good, sizeof(good), -EINVAL);
}

Test(bitmap, huge_nbits_in_header)
{
    make_good();
    put_le64(good + 16, UINT64_MAX);
    assert_rejected(good, sizeof(good), -EINVAL);
}

/* ---- crash leftovers, removal -------------------------------------------------- */

Test(bitmap, leftover_tmp_without_file)
{
    char tmp[sizeof(path) + 4];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    spit(tmp, "VSANDB", 6); /* a creation cut short */
    struct bitmap *b = open_ok(path, 100);
    cr_assert_eq(bitmap_count(b), 0);
    cr_assert_not(exists(tmp), "the leftover was removed");
    cr_assert_eq(file_size(path), BITMAP_HEADER_SIZE + 16);
    bitmap_close(b);
}

Test(bitmap, leftover_tmp_beside_file)
{
    char tmp[sizeof(path) + 4];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    make_good();
    spit(path, good, sizeof(good));
    spit(tmp, "garbage", 7); /* a resize cut short */
    struct bitmap *b = open_ok(path, 100);
    cr_assert_eq(bitmap_count(b), 2, "the real file's bits, not the leftover's");
    cr_assert_not(exists(tmp));
    bitmap_close(b);
}

Test(bitmap, remove_deletes_the_file)
{
    struct bitmap *b = open_ok(path, 100);
    cr_assert_eq(bitmap_set(b, 1, 1), 1);
    cr_assert_eq(bitmap_sync(b), 0);
    cr_assert(exists(path));
    cr_assert_eq(bitmap_remove(b), 0);
    cr_assert_not(exists(path));
    b = open_ok(path, 100);
    cr_assert_eq(bitmap_count(b), 0, "a new bitmap starts clear");
    bitmap_close(b);
}

/* ---- between nodes ---------------------------------------------------------------- */

Test(bitmap, export_merge_round_trip)
{
    struct bitmap *a = open_ok(path, 1000);
    cr_assert_eq(bitmap_set(a, 0, 3), 1);
    cr_assert_eq(bitmap_set(a, 999, 999), 1);
    void *buf;
    size_t len;
    cr_assert_eq(bitmap_export(a, &buf, &len), 0);
    cr_assert_eq(len, 16 * 8);

    /* The resync target, in memory, already knowing of region 500. */
    struct bitmap *t = open_ok(NULL, 1000);
    cr_assert_eq(bitmap_set(t, 500, 500), 1);
    cr_assert_eq(bitmap_merge(t, buf, len), 0);
    cr_assert_eq(bitmap_count(t), 6);
    uint64_t want[] = {0, 1, 2, 3, 500, 999}, got = 0;
    for (size_t i = 0; (got = bitmap_next(t, got)) < 1000; got++, i++) {
        cr_assert_lt(i, 6);
        cr_assert_eq(got, want[i]);
    }
    bitmap_close(t);

    /* Merging into a file-backed bitmap makes the merged bits durable. */
    char other[sizeof(path) + 8];
    snprintf(other, sizeof(other), "%s.other", path);
    struct bitmap *o = open_ok(other, 1000);
    cr_assert_eq(bitmap_merge(o, buf, len), 0);
    cr_assert_eq(bitmap_set(o, 0, 3), 0, "merge synced");
    bitmap_close(o);
    o = open_ok(other, 1000);
    cr_assert_eq(bitmap_count(o), 5);
    bitmap_close(o);
    free(buf);
    bitmap_close(a);
}

Test(bitmap, merge_rejects_bad_input)
{
    struct bitmap *b = open_ok(NULL, 100);
    unsigned char buf[24] = {0};
    buf[0] = 1;
    cr_assert_eq(bitmap_merge(b, buf, 8), -EINVAL, "too short");
    cr_assert_eq(bitmap_merge(b, buf, 24), -EINVAL, "too long");
    cr_assert_eq(bitmap_merge(b, buf, 0), -EINVAL);
    buf[15] = 0x10; /* bit 124 of a 100-bit map */
    cr_assert_eq(bitmap_merge(b, buf, 16), -EINVAL, "bits past nbits");
    cr_assert_eq(bitmap_count(b), 0, "nothing merged from rejected input");
    buf[15] = 0;
    cr_assert_eq(bitmap_merge(b, buf, 16), 0);
    cr_assert_eq(bitmap_count(b), 1);
    bitmap_close(b);
}

/* ---- concurrency ------------------------------------------------------------------- */

#define THREADS 8
#define PER_THREAD 3000

struct worker {
    struct bitmap *b;
    int fd; /* the file, to check each sync reached it */
    uint64_t first;
    int failures;
};

static bool on_disk(int fd, uint64_t bit)
{
    unsigned char w[8];
    if (pread(fd, w, 8, BITMAP_HEADER_SIZE + (off_t)(bit / 64) * 8) != 8)
        return false;
    return le64_at(w) >> (bit % 64) & 1;
}

/* Sets its bits one or two at a time, syncing when told to, and checks
 * the file holds them once the sync returns. Criterion asserts are not
 * thread-safe, so failures are counted. */
static void *work(void *arg)
{
    struct worker *w = arg;
    for (uint64_t i = 0; i < PER_THREAD; i += 2) {
        uint64_t bit = w->first + i;
        int r = bitmap_set(w->b, bit, bit + 1);
        if (r != 1 || bitmap_sync(w->b) != 0 || !on_disk(w->fd, bit) || !on_disk(w->fd, bit + 1))
            w->failures++;
        if (bitmap_set(w->b, bit, bit + 1) != 0)
            w->failures++;
    }
    return NULL;
}

Test(bitmap, concurrent_setters)
{
    const uint64_t n = THREADS * PER_THREAD + 5;
    struct bitmap *b = open_ok(path, n);
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0);
    pthread_t th[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){b, fd, (uint64_t)i * PER_THREAD, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        cr_assert_eq(pthread_join(th[i], NULL), 0);
        cr_assert_eq(w[i].failures, 0, "thread %d: %d failures", i, w[i].failures);
    }
    cr_assert_eq(close(fd), 0);
    cr_assert_eq(bitmap_count(b), THREADS * PER_THREAD);
    bitmap_close(b);

    b = open_ok(path, n);
    cr_assert_eq(bitmap_count(b), THREADS * PER_THREAD);
    cr_assert_eq(bitmap_next(b, 0), 0);
    cr_assert_eq(bitmap_next(b, THREADS * PER_THREAD - 1), THREADS * PER_THREAD - 1);
    cr_assert_eq(bitmap_next(b, THREADS * PER_THREAD), n);
    bitmap_close(b);
}
