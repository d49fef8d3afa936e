/* test_volume.c - the volume registry (admin operations, connection
 * counting, EBUSY rules) and the local I/O path through the NBD export ops,
 * checked against the data file it writes. Each test has its own pool in a
 * temporary directory on /tmp; the test of file systems without
 * FALLOC_FL_ZERO_RANGE uses /dev/shm (tmpfs). */
#include "store/store.h"
#include "volume/volume.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <qb/qblog.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* root on the local socket: sees every volume. */
static const struct nbd_client root = {"root", NBD_TLS_AUTH_LOCAL, true};

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)

static char dir[64];
static struct store *store;
static struct volumes *vols;
static char logbuf[16384];

/* ---- fixture ----------------------------------------------------------- */

static void capture(int32_t t, struct qb_log_callsite *cs, struct timespec *ts, const char *msg)
{
    (void)t;
    (void)cs;
    (void)ts;
    size_t used = strlen(logbuf);
    snprintf(logbuf + used, sizeof(logbuf) - used, "%s\n", msg);
}

static void open_pool(void)
{
    int r = store_open(dir, &store);
    cr_assert_eq(r, 0, "store_open: %s\n%s", strerror(-r), logbuf);
    r = volumes_open(store, &vols);
    cr_assert_eq(r, 0, "volumes_open: %s\n%s", strerror(-r), logbuf);
}

static void close_pool(void)
{
    volumes_close(vols);
    vols = NULL;
    store_close(store);
    store = NULL;
}

static void setup_in(const char *parent)
{
    qb_log_init("test_volume", LOG_USER, LOG_DEBUG);
    qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
    int32_t t = qb_log_custom_open(capture, NULL, NULL, NULL);
    cr_assert_geq(t, 0);
    cr_assert_eq(qb_log_filter_ctl(t, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*", LOG_DEBUG), 0);
    cr_assert_eq(qb_log_ctl(t, QB_LOG_CONF_ENABLED, QB_TRUE), 0);
    snprintf(dir, sizeof(dir), "%s/vsan-test-volume.XXXXXX", parent);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    open_pool();
}

static void setup(void)
{
    setup_in("/tmp");
}

static void setup_tmpfs(void)
{
    setup_in("/dev/shm");
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

static void teardown(void)
{
    if (vols != NULL)
        close_pool();
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    qb_log_fini();
}

TestSuite(volume, .init = setup, .fini = teardown);
TestSuite(volume_io, .init = setup, .fini = teardown);
TestSuite(volume_tmpfs, .init = setup_tmpfs, .fini = teardown);

/* ---- helpers ----------------------------------------------------------- */

static struct volume_info create_ok(const char *name, uint64_t size)
{
    struct volume_info info;
    int r = volumes_create(vols, name, size, NULL, &info);
    cr_assert_eq(r, 0, "create %s: %s\n%s", name, strerror(-r), logbuf);
    return info;
}

static struct nbd_export open_ok(const char *name)
{
    struct nbd_export exp;
    int r = volumes_catalog.open(vols, name, &root, &exp);
    cr_assert_eq(r, 0, "open export %s: %s", name, strerror(-r));
    return exp;
}

static void close_export(struct nbd_export *exp)
{
    volumes_catalog.close(vols, exp);
}

static struct volume_info info_of(const char *name)
{
    struct volume_info info;
    int r = volumes_info(vols, name, &info);
    cr_assert_eq(r, 0, "info %s: %s", name, strerror(-r));
    return info;
}

static const char *data_path(const struct volume_info *info)
{
    static char path[160];
    snprintf(path, sizeof(path), "%s/" STORE_VOLUMES_DIR "/%s.data", dir, info->uuid);
    return path;
}

/* The bytes a test writes: a function of the seed and the absolute offset,
 * so any part of a write can be checked on its own. */
static void fill(char *buf, size_t len, unsigned seed, uint64_t base)
{
    for (size_t i = 0; i < len; i++) {
        uint64_t at = base + i;
        buf[i] = (char)(seed * 31 + at * 7 + (at >> 9));
    }
}

static bool is_zero(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != 0)
            return false;
    return true;
}

static void write_ok(struct nbd_export *exp, uint64_t off, uint32_t len, unsigned seed, bool fua)
{
    char *buf = malloc(len);
    fill(buf, len, seed, off);
    int r = exp->ops->pwrite(exp->handle, buf, len, off, fua ? NBD_IO_FUA : 0, NULL);
    cr_assert_eq(r, 0, "pwrite %u at %llu: %s", len, (unsigned long long)off, strerror(-r));
    free(buf);
}

static void expect_data(struct nbd_export *exp, uint64_t off, uint32_t len, unsigned seed)
{
    char *want = malloc(len), *got = malloc(len);
    fill(want, len, seed, off);
    int r = exp->ops->pread(exp->handle, got, len, off, 0);
    cr_assert_eq(r, 0, "pread: %s", strerror(-r));
    cr_assert_arr_eq(got, want, len, "data at %llu differs", (unsigned long long)off);
    free(want);
    free(got);
}

static void expect_zero(struct nbd_export *exp, uint64_t off, uint32_t len)
{
    char *got = malloc(len);
    int r = exp->ops->pread(exp->handle, got, len, off, 0);
    cr_assert_eq(r, 0, "pread: %s", strerror(-r));
    cr_assert(is_zero(got, len), "range %llu+%u does not read zeroes", (unsigned long long)off,
              len);
    free(got);
}

static int extents(struct nbd_export *exp, uint64_t off, uint32_t len, struct nbd_extent *ext,
                   unsigned max)
{
    int n = exp->ops->extents(exp->handle, len, off, ext, max, 0);
    cr_assert_geq(n, 1, "extents: %s", strerror(-n));
    uint64_t sum = 0;
    for (int i = 0; i < n; i++)
        sum += ext[i].length;
    cr_assert(sum >= 1 && sum <= len, "extents sum to %llu of %u", (unsigned long long)sum, len);
    return n;
}

#define HOLE (NBD_EXTENT_HOLE | NBD_EXTENT_ZERO)

static void expect_extent(const struct nbd_extent *e, uint64_t length, uint32_t flags)
{
    cr_assert_eq(e->length, length, "extent length %llu, expected %llu",
                 (unsigned long long)e->length, (unsigned long long)length);
    cr_assert_eq(e->flags, flags, "extent flags %u, expected %u", e->flags, flags);
}

/* ---- registry ---------------------------------------------------------- */

Test(volume, create_info_list_sorted)
{
    struct volume_info b = create_ok("beta", 2 * MiB);
    create_ok("alpha", MiB);
    create_ok("gamma.1", 512);
    cr_assert_str_eq(b.name, "beta");
    cr_assert_eq(b.size, 2 * MiB);
    cr_assert_eq(b.generation, 1);
    cr_assert_eq(b.connections, 0);
    cr_assert_eq(b.allocated, 0);
    cr_assert_eq(strlen(b.uuid), 36);

    struct volume_info *list;
    size_t n;
    cr_assert_eq(volumes_list(vols, &list, &n), 0);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(list[0].name, "alpha");
    cr_assert_str_eq(list[1].name, "beta");
    cr_assert_str_eq(list[2].name, "gamma.1");
    cr_assert_str_eq(list[1].uuid, b.uuid);
    free(list);

    struct volume_info got = info_of("beta");
    cr_assert_str_eq(got.uuid, b.uuid);
    cr_assert_eq(volumes_info(vols, "nope", &got), -ENOENT);
}

Test(volume, empty_list)
{
    struct volume_info *list;
    size_t n = 99;
    cr_assert_eq(volumes_list(vols, &list, &n), 0);
    cr_assert_eq(n, 0);
    free(list);
}

Test(volume, create_refuses_bad_input)
{
    const char *names[] = {"",
                           ".x",
                           "-x",
                           "a b",
                           "a/b",
                           "ä",
                           "12345678901234567890123456789012345678901234567890123456789012345"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        cr_assert_eq(volumes_create(vols, names[i], MiB, NULL, NULL), -EINVAL, "name \"%s\"",
                     names[i]);
    cr_assert_not_null(strstr(logbuf, "volume \"a b\": invalid name"), "%s", logbuf);
    cr_assert_eq(volumes_create(vols, "ok", 0, NULL, NULL), -EINVAL);
    cr_assert_eq(volumes_create(vols, "ok", 1000, NULL, NULL), -EINVAL);
    cr_assert_eq(volumes_create(vols, "ok", VOLUME_SIZE_MAX + 512, NULL, NULL), -EINVAL);
    cr_assert_not_null(strstr(logbuf, "volume \"ok\": invalid size 1000"), "%s", logbuf);
    create_ok("12345678901234567890123456789012345678901234567890123456789012_4", 512);
    create_ok("ok", MiB);
    cr_assert_eq(volumes_create(vols, "ok", MiB, NULL, NULL), -EEXIST);
    struct volume_info *list;
    size_t n;
    cr_assert_eq(volumes_list(vols, &list, &n), 0);
    cr_assert_eq(n, 2);
    free(list);
}

Test(volume, too_large_for_the_file_system)
{
    /* ext4 files end at 16 TiB: the store's error comes back and nothing
     * of the half-made volume stays. */
    logbuf[0] = '\0';
    cr_assert_eq(volumes_create(vols, "big", VOLUME_SIZE_MAX, NULL, NULL), -EFBIG);
    cr_assert_not_null(strstr(logbuf, "volume \"big\": set \""), "%s", logbuf);
    cr_assert_not_null(strstr(logbuf, "to 1 PiB: ftruncate: File too large"), "%s", logbuf);
    struct volume_info info;
    cr_assert_eq(volumes_info(vols, "big", &info), -ENOENT);
    char path[128];
    snprintf(path, sizeof(path), "%s/" STORE_VOLUMES_DIR, dir);
    DIR *d = opendir(path);
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        cr_assert(e->d_name[0] == '.', "left behind: %s", e->d_name);
    closedir(d);
}

Test(volume_tmpfs, largest_size_is_sparse)
{
    struct volume_info big = create_ok("big", VOLUME_SIZE_MAX);
    cr_assert_eq(big.size, VOLUME_SIZE_MAX);
    cr_assert_eq(big.allocated, 0);
    struct nbd_export exp = open_ok("big");
    write_ok(&exp, VOLUME_SIZE_MAX - 4096, 4096, 8, false);
    expect_data(&exp, VOLUME_SIZE_MAX - 4096, 4096, 8);
    close_export(&exp);
}

Test(volume, persists_across_reopen)
{
    create_ok("a", MiB);
    struct volume_info b = create_ok("b", MiB);
    cr_assert_eq(volumes_resize(vols, "a", 3 * MiB, false, false, NULL), 0);
    struct nbd_export exp = open_ok("b");
    write_ok(&exp, 4096, 4096, 7, true);
    close_export(&exp);
    close_pool();
    open_pool();
    struct volume_info a = info_of("a");
    cr_assert_eq(a.size, 3 * MiB);
    cr_assert_eq(a.generation, 2);
    cr_assert_str_eq(info_of("b").uuid, b.uuid);
    exp = open_ok("b");
    expect_data(&exp, 4096, 4096, 7);
    close_export(&exp);
    cr_assert_eq(volumes_delete(vols, "a", false), 0);
    close_pool();
    open_pool();
    cr_assert_eq(volumes_info(vols, "a", &a), -ENOENT);
}

Test(volume, duplicate_names_on_disk_are_an_error)
{
    struct volume_info a = create_ok("a", MiB);
    close_pool();
    /* A second record claiming the same name. */
    const char *other = "11111111-2222-4333-8444-555555555555";
    char path[200], text[256];
    snprintf(path, sizeof(path), "%s/volumes/%s.data", dir, other);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fclose(f);
    cr_assert_eq(truncate(path, MiB), 0);
    snprintf(path, sizeof(path), "%s/volumes/%s.meta", dir, other);
    snprintf(text, sizeof(text), "[volume]\nname = a\nuuid = %s\nsize = %llu\ngeneration = 1\n",
             other, (unsigned long long)MiB);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    cr_assert_eq(store_open(dir, &store), 0);
    logbuf[0] = '\0';
    cr_assert_eq(volumes_open(store, &vols), -EINVAL);
    vols = NULL;
    cr_assert_not_null(strstr(logbuf, "two volumes named \"a\""), "%s", logbuf);
    cr_assert_not_null(strstr(logbuf, a.uuid), "%s", logbuf);
    store_close(store);
    store = NULL;
}

Test(volume, catalog_open_counts_connections)
{
    struct volume_info a = create_ok("a", MiB);
    struct nbd_export e1 = open_ok("a");
    struct nbd_export e2 = open_ok("a");
    char want[128];
    snprintf(want, sizeof(want), "vsan volume a (%s)", a.uuid);
    cr_assert_str_eq(e1.description, want);
    cr_assert_not(e1.read_only);
    cr_assert_eq(e1.ops->size(e1.handle), MiB);
    cr_assert_eq(info_of("a").connections, 2);
    close_export(&e1);
    cr_assert_eq(info_of("a").connections, 1);
    close_export(&e2);
    cr_assert_eq(info_of("a").connections, 0);
    struct nbd_export none;
    cr_assert_eq(volumes_catalog.open(vols, "b", &root, &none), -ENOENT);
    cr_assert_eq(volumes_catalog.open(vols, "", &root, &none), -ENOENT);
}

struct seen {
    char names[8][VOLUME_NAME_MAX + 1];
    char descriptions[8][128];
    int n;
    int stop_after;
};

static int collect(void *arg, const char *name, const char *description)
{
    struct seen *s = arg;
    snprintf(s->names[s->n], sizeof(s->names[0]), "%s", name);
    snprintf(s->descriptions[s->n], sizeof(s->descriptions[0]), "%s", description);
    s->n++;
    return s->n == s->stop_after ? 42 : 0;
}

Test(volume, catalog_list_in_order_and_stops)
{
    create_ok("b", MiB);
    struct volume_info a = create_ok("a", MiB);
    struct seen s = {.stop_after = 0};
    cr_assert_eq(volumes_catalog.list(vols, &root, collect, &s), 0);
    cr_assert_eq(s.n, 2);
    cr_assert_str_eq(s.names[0], "a");
    cr_assert_str_eq(s.names[1], "b");
    char want[128];
    snprintf(want, sizeof(want), "vsan volume a (%s)", a.uuid);
    cr_assert_str_eq(s.descriptions[0], want);
    struct seen first = {.stop_after = 1};
    cr_assert_eq(volumes_catalog.list(vols, &root, collect, &first), 42);
    cr_assert_eq(first.n, 1);
}

Test(volume, delete_refused_while_open)
{
    struct volume_info a = create_ok("a", MiB);
    struct nbd_export exp = open_ok("a");
    logbuf[0] = '\0';
    cr_assert_eq(volumes_delete(vols, "a", false), -EBUSY);
    cr_assert_not_null(strstr(logbuf, "volume \"a\": delete refused: 1 NBD connection(s) open"),
                       "%s", logbuf);
    /* still served */
    write_ok(&exp, 0, 4096, 1, false);
    expect_data(&exp, 0, 4096, 1);
    close_export(&exp);
    cr_assert_eq(volumes_delete(vols, "a", false), 0);
    cr_assert_eq(access(data_path(&a), F_OK), -1);
    cr_assert_eq(volumes_delete(vols, "a", false), -ENOENT);
    struct nbd_export none;
    cr_assert_eq(volumes_catalog.open(vols, "a", &root, &none), -ENOENT);
}

Test(volume, resize_rules)
{
    create_ok("a", 4 * MiB);
    cr_assert_eq(volumes_resize(vols, "nope", MiB, true, false, NULL), -ENOENT);
    cr_assert_eq(volumes_resize(vols, "a", 1000, true, false, NULL), -EINVAL);
    cr_assert_eq(volumes_resize(vols, "a", 0, true, false, NULL), -EINVAL);
    cr_assert_eq(volumes_resize(vols, "a", MiB, false, false, NULL), -ERANGE);
    struct nbd_export exp = open_ok("a");
    cr_assert_eq(volumes_resize(vols, "a", MiB, true, false, NULL), -EBUSY);
    cr_assert_eq(info_of("a").size, 4 * MiB);

    /* growing under a connection is fine, and the connection sees it */
    struct volume_info got;
    cr_assert_eq(volumes_resize(vols, "a", 8 * MiB, false, false, &got), 0);
    cr_assert_eq(got.size, 8 * MiB);
    cr_assert_eq(got.generation, 2);
    cr_assert_eq(got.connections, 1);
    cr_assert_eq(exp.ops->size(exp.handle), 8 * MiB);
    write_ok(&exp, 8 * MiB - 4096, 4096, 3, false);
    expect_data(&exp, 8 * MiB - 4096, 4096, 3);
    close_export(&exp);

    cr_assert_eq(volumes_resize(vols, "a", 2 * MiB, true, false, &got), 0);
    cr_assert_eq(got.size, 2 * MiB);
    cr_assert_eq(got.generation, 3);
    struct stat sb;
    cr_assert_eq(stat(data_path(&got), &sb), 0);
    cr_assert_eq(sb.st_size, (off_t)(2 * MiB));
    /* same size: nothing to do */
    cr_assert_eq(volumes_resize(vols, "a", 2 * MiB, false, false, &got), 0);
    cr_assert_eq(got.generation, 3);
}

Test(volume, grown_space_reads_zeroes)
{
    create_ok("a", MiB);
    struct nbd_export exp = open_ok("a");
    write_ok(&exp, MiB - 64 * KiB, 64 * KiB, 9, false);
    close_export(&exp);
    cr_assert_eq(volumes_resize(vols, "a", MiB / 2, true, false, NULL), 0);
    cr_assert_eq(volumes_resize(vols, "a", MiB, false, false, NULL), 0);
    exp = open_ok("a");
    expect_zero(&exp, MiB / 2, MiB / 2);
    close_export(&exp);
}

/* ---- I/O path ----------------------------------------------------------- */

Test(volume_io, write_read_back_and_on_disk)
{
    struct volume_info a = create_ok("a", MiB);
    struct nbd_export exp = open_ok("a");
    write_ok(&exp, 0, 512, 1, false);
    write_ok(&exp, 12345, 777, 2, false);
    write_ok(&exp, MiB - 128 * KiB, 128 * KiB, 3, true);
    expect_data(&exp, 0, 512, 1);
    expect_data(&exp, 12345, 777, 2);
    expect_data(&exp, MiB - 128 * KiB, 128 * KiB, 3);
    expect_zero(&exp, 4096, 4096);
    cr_assert_eq(exp.ops->flush(exp.handle, 0), 0);
    cr_assert_eq(exp.ops->cache(exp.handle, 4096, 0, 0), 0);

    /* the bytes are in the data file, where the next start finds them */
    char want[777], got[777];
    fill(want, sizeof(want), 2, 12345);
    int fd = open(data_path(&a), O_RDONLY);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pread(fd, got, sizeof(got), 12345), (ssize_t)sizeof(got));
    close(fd);
    cr_assert_arr_eq(got, want, sizeof(got));
    cr_assert_gt(info_of("a").allocated, 0);
    close_export(&exp);
}

Test(volume_io, out_of_range_refused)
{
    create_ok("a", MiB);
    struct nbd_export exp = open_ok("a");
    char buf[4096] = {0};
    struct nbd_extent ext[4];
    void *h = exp.handle;
    cr_assert_eq(exp.ops->pread(h, buf, 4096, MiB - 2048, 0), -EINVAL);
    cr_assert_eq(exp.ops->pread(h, buf, 1, MiB, 0), -EINVAL);
    cr_assert_eq(exp.ops->pread(h, buf, 1, UINT64_MAX, 0), -EINVAL);
    cr_assert_eq(exp.ops->pwrite(h, buf, 4096, MiB - 2048, 0, NULL), -ENOSPC);
    cr_assert_eq(exp.ops->pwrite(h, buf, 4096, UINT64_MAX - 100, NBD_IO_FUA, NULL), -ENOSPC);
    cr_assert_eq(exp.ops->zero(h, 4096, MiB, NBD_IO_MAY_TRIM, NULL), -ENOSPC);
    cr_assert_eq(exp.ops->trim(h, 4096, MiB, 0, NULL), -EINVAL);
    cr_assert_eq(exp.ops->cache(h, 4096, MiB, 0), -EINVAL);
    cr_assert_eq(exp.ops->extents(h, 4096, MiB, ext, 4, 0), -EINVAL);
    struct stat sb;
    struct volume_info a = info_of("a");
    cr_assert_eq(stat(data_path(&a), &sb), 0);
    cr_assert_eq(sb.st_size, (off_t)MiB, "a refused request changed the file's length");
    /* the last byte is in range */
    cr_assert_eq(exp.ops->pwrite(h, "z", 1, MiB - 1, 0, NULL), 0);
    close_export(&exp);
}

Test(volume_io, trim_reads_zeroes_and_makes_a_hole)
{
    create_ok("a", MiB);
    struct nbd_export exp = open_ok("a");
    write_ok(&exp, 0, 256 * KiB, 5, false);
    uint64_t before = info_of("a").allocated;
    cr_assert_eq(exp.ops->trim(exp.handle, 64 * KiB, 64 * KiB, NBD_IO_FUA, NULL), 0);
    expect_zero(&exp, 64 * KiB, 64 * KiB);
    expect_data(&exp, 0, 64 * KiB, 5);
    cr_assert_eq(info_of("a").allocated, before - 64 * KiB);

    struct nbd_extent ext[8];
    int n = extents(&exp, 0, 256 * KiB, ext, 8);
    cr_assert_eq(n, 3);
    expect_extent(&ext[0], 64 * KiB, 0);
    expect_extent(&ext[1], 64 * KiB, HOLE);
    expect_extent(&ext[2], 128 * KiB, 0);
    close_export(&exp);
}

Test(volume_io, zero_with_and_without_trim)
{
    create_ok("a", MiB);
    struct nbd_export exp = open_ok("a");
    write_ok(&exp, 0, 256 * KiB, 6, false);
    /* may_trim: a hole */
    cr_assert_eq(exp.ops->zero(exp.handle, 64 * KiB, 0, NBD_IO_MAY_TRIM | NBD_IO_FUA, NULL), 0);
    expect_zero(&exp, 0, 64 * KiB);
    struct nbd_extent ext[4];
    extents(&exp, 0, 64 * KiB, ext, 4);
    expect_extent(&ext[0], 64 * KiB, HOLE);
    /* no trim, fast: ZERO_RANGE on this file system (ext4) */
    cr_assert_eq(exp.ops->zero(exp.handle, 64 * KiB, 64 * KiB, NBD_IO_FAST, NULL), 0);
    expect_zero(&exp, 64 * KiB, 64 * KiB);
    /* unaligned, slow allowed */
    cr_assert_eq(exp.ops->zero(exp.handle, 1000, 128 * KiB + 10, 0, NULL), 0);
    expect_zero(&exp, 128 * KiB + 10, 1000);
    char edge[10];
    cr_assert_eq(exp.ops->pread(exp.handle, edge, 10, 128 * KiB, 0), 0);
    char want[10];
    fill(want, sizeof(want), 6, 128 * KiB);
    cr_assert_arr_eq(edge, want, 10, "zero spilled before its range");
    expect_data(&exp, 192 * KiB, 64 * KiB, 6);
    close_export(&exp);
}

Test(volume_io, extents_across_data_and_holes)
{
    create_ok("a", MiB);
    struct nbd_export exp = open_ok("a");
    struct nbd_extent ext[8];

    int n = extents(&exp, 0, MiB, ext, 8);
    cr_assert_eq(n, 1);
    expect_extent(&ext[0], MiB, HOLE);

    write_ok(&exp, 64 * KiB, 4 * KiB, 1, false);
    write_ok(&exp, 512 * KiB, 8 * KiB, 2, false);
    n = extents(&exp, 0, MiB, ext, 8);
    cr_assert_eq(n, 5);
    expect_extent(&ext[0], 64 * KiB, HOLE);
    expect_extent(&ext[1], 4 * KiB, 0);
    expect_extent(&ext[2], 512 * KiB - 68 * KiB, HOLE);
    expect_extent(&ext[3], 8 * KiB, 0);
    expect_extent(&ext[4], MiB - 520 * KiB, HOLE);

    /* starting inside a data extent, ending inside a hole */
    n = extents(&exp, 66 * KiB, 10 * KiB, ext, 8);
    cr_assert_eq(n, 2);
    expect_extent(&ext[0], 2 * KiB, 0);
    expect_extent(&ext[1], 8 * KiB, HOLE);

    /* at most max extents, in order from the offset */
    n = extents(&exp, 0, MiB, ext, 2);
    cr_assert_eq(n, 2);
    expect_extent(&ext[0], 64 * KiB, HOLE);
    expect_extent(&ext[1], 4 * KiB, 0);

    /* the last extent of a fully written end reaches the end exactly */
    write_ok(&exp, MiB - 4 * KiB, 4 * KiB, 3, false);
    n = extents(&exp, MiB - 8 * KiB, 8 * KiB, ext, 8);
    cr_assert_eq(n, 2);
    expect_extent(&ext[0], 4 * KiB, HOLE);
    expect_extent(&ext[1], 4 * KiB, 0);
    close_export(&exp);
}

/* Whether a file system refuses FALLOC_FL_ZERO_RANGE, as tmpfs does. */
static bool lacks_zero_range(const char *path)
{
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    bool lacks = fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 0, 4096) < 0 &&
                 errno == EOPNOTSUPP;
    close(fd);
    return lacks;
}

Test(volume_tmpfs, zero_fast_without_zero_range)
{
    struct volume_info a = create_ok("a", MiB);
    if (!lacks_zero_range(data_path(&a)))
        cr_skip_test("%s supports FALLOC_FL_ZERO_RANGE", dir);
    struct nbd_export exp = open_ok("a");
    write_ok(&exp, 0, 128 * KiB, 4, false);
    /* fast and no trim: only ZERO_RANGE would be cheap, so refuse */
    cr_assert_eq(exp.ops->zero(exp.handle, 64 * KiB, 0, NBD_IO_FAST, NULL), -ENOTSUP);
    expect_data(&exp, 0, 128 * KiB, 4);
    /* again: the refusal is remembered, not retried, and still refused */
    cr_assert_eq(exp.ops->zero(exp.handle, 64 * KiB, 0, NBD_IO_FAST, NULL), -ENOTSUP);
    /* may_trim: punching a hole is cheap */
    cr_assert_eq(exp.ops->zero(exp.handle, 32 * KiB, 0, NBD_IO_MAY_TRIM | NBD_IO_FAST, NULL), 0);
    expect_zero(&exp, 0, 32 * KiB);
    /* not fast: zeroes are written */
    uint64_t before = info_of("a").allocated;
    cr_assert_eq(exp.ops->zero(exp.handle, 64 * KiB, 64 * KiB, NBD_IO_FUA, NULL), 0);
    expect_zero(&exp, 64 * KiB, 64 * KiB);
    expect_data(&exp, 32 * KiB, 32 * KiB, 4);
    cr_assert_eq(info_of("a").allocated, before, "written zeroes should stay allocated");
    /* a large zero spans several batches of the zero buffer */
    cr_assert_eq(exp.ops->zero(exp.handle, 3 * MiB / 4 + 512, 4096, 0, NULL), 0);
    expect_zero(&exp, 4096, 3 * MiB / 4 + 512);
    close_export(&exp);
}

/* NBD_IO_NOWAIT: what would wait for the disk says -EAGAIN and does
 * nothing, so the protocol can run it on another thread; what is in memory
 * runs at once. /tmp is a disk file system here, /dev/shm is tmpfs. */
Test(volume_io, nowait_refuses_what_waits_for_the_disk)
{
    create_ok("a", MiB);
    struct nbd_export exp = open_ok("a");
    write_ok(&exp, 0, 64 * KiB, 5, false);
    char buf[4096];
    fill(buf, sizeof buf, 6, 0);
    cr_assert_eq(exp.ops->pwrite(exp.handle, buf, sizeof buf, 0, NBD_IO_FUA | NBD_IO_NOWAIT, NULL),
                 -EAGAIN);
    expect_data(&exp, 0, 64 * KiB, 5);
    cr_assert_eq(exp.ops->flush(exp.handle, NBD_IO_NOWAIT), -EAGAIN);
    cr_assert_eq(exp.ops->trim(exp.handle, 4096, 0, NBD_IO_FUA | NBD_IO_NOWAIT, NULL), -EAGAIN);
    cr_assert_eq(exp.ops->zero(exp.handle, 4096, 0, NBD_IO_FUA | NBD_IO_NOWAIT, NULL), -EAGAIN);
    expect_data(&exp, 0, 64 * KiB, 5);
    /* A plain write lands in the page cache: fast, done inline. */
    cr_assert_eq(exp.ops->pwrite(exp.handle, buf, sizeof buf, 0, NBD_IO_NOWAIT, NULL), 0);
    int r = exp.ops->pread(exp.handle, buf, sizeof buf, 4096, NBD_IO_NOWAIT);
    cr_assert(r == 0 || r == -EAGAIN, "cached read: %s", strerror(-r));
    if (r == 0)
        expect_data(&exp, 4096, 4096, 5);
    close_export(&exp);
}

Test(volume_tmpfs, nowait_runs_everything_in_memory)
{
    create_ok("a", MiB);
    struct nbd_export exp = open_ok("a");
    char buf[4096];
    fill(buf, sizeof buf, 7, 0);
    cr_assert_eq(exp.ops->pwrite(exp.handle, buf, sizeof buf, 0, NBD_IO_FUA | NBD_IO_NOWAIT, NULL),
                 0);
    cr_assert_eq(exp.ops->flush(exp.handle, NBD_IO_NOWAIT), 0);
    char got[4096];
    cr_assert_eq(exp.ops->pread(exp.handle, got, sizeof got, 0, NBD_IO_NOWAIT), 0);
    cr_assert_arr_eq(got, buf, sizeof got);
    close_export(&exp);
}

/* ---- concurrency --------------------------------------------------------- */

#define WORKERS 4
#define ROUNDS 200
#define SLOT (64 * KiB)

struct worker {
    pthread_t thread;
    unsigned id;
    int error;
};

/* Opens, writes its own slot, reads it back, closes; over and over. */
static void *worker_run(void *arg)
{
    struct worker *w = arg;
    static _Thread_local char buf[SLOT], back[SLOT];
    for (unsigned round = 0; round < ROUNDS && w->error == 0; round++) {
        struct nbd_export exp;
        int r = volumes_catalog.open(vols, "shared", &root, &exp);
        if (r < 0) {
            w->error = r;
            break;
        }
        fill(buf, SLOT, w->id * 1000 + round, w->id * SLOT);
        r = exp.ops->pwrite(exp.handle, buf, SLOT, w->id * SLOT, round % 8 == 0 ? NBD_IO_FUA : 0,
                            NULL);
        if (r == 0)
            r = exp.ops->pread(exp.handle, back, SLOT, w->id * SLOT, 0);
        if (r == 0 && memcmp(buf, back, SLOT) != 0)
            r = -EILSEQ;
        volumes_catalog.close(vols, &exp);
        w->error = r;
    }
    return NULL;
}

Test(volume, io_and_admin_concurrently)
{
    create_ok("shared", WORKERS * SLOT);
    /* Held throughout, so that delete and shrink must be refused. */
    struct nbd_export held = open_ok("shared");
    struct worker w[WORKERS];
    for (unsigned i = 0; i < WORKERS; i++) {
        w[i] = (struct worker){.id = i};
        cr_assert_eq(pthread_create(&w[i].thread, NULL, worker_run, &w[i]), 0);
    }
    /* Admin work on the main thread while the workers run. */
    uint64_t size = WORKERS * SLOT;
    for (unsigned i = 0; i < 50; i++) {
        char name[16];
        snprintf(name, sizeof(name), "tmp%u", i);
        cr_assert_eq(volumes_create(vols, name, MiB, NULL, NULL), 0);
        size += 4096;
        cr_assert_eq(volumes_resize(vols, "shared", size, false, false, NULL), 0);
        struct volume_info *list;
        size_t n;
        cr_assert_eq(volumes_list(vols, &list, &n), 0);
        free(list);
        cr_assert_eq(volumes_delete(vols, name, false), 0);
        cr_assert_eq(volumes_delete(vols, "shared", false), -EBUSY);
        cr_assert_eq(volumes_resize(vols, "shared", SLOT, true, false, NULL), -EBUSY);
    }
    for (unsigned i = 0; i < WORKERS; i++) {
        cr_assert_eq(pthread_join(w[i].thread, NULL), 0);
        cr_assert_eq(w[i].error, 0, "worker %u: %s", i, strerror(-w[i].error));
    }
    cr_assert_eq(held.ops->size(held.handle), size);
    close_export(&held);
    cr_assert_eq(info_of("shared").connections, 0);
    cr_assert_eq(info_of("shared").size, size);
}

/* A volume's id in the region table is its uuid's first 32 bits: a uuid
 * sharing them with another volume's is refused, never two volumes on one
 * set of regions. */
Test(volume, uuid_with_a_taken_id_is_refused)
{
    cr_assert_eq(volumes_create(vols, "a", MiB, "0123abcd-0000-4000-8000-000000000001", NULL), 0);
    cr_assert_eq(volumes_create(vols, "b", MiB, "0123abcd-ffff-4fff-bfff-ffffffffffff", NULL),
                 -EEXIST);
    cr_assert_eq(volumes_count(vols), 1);
    cr_assert_eq(volumes_create(vols, "b", MiB, "0123abce-0000-4000-8000-000000000001", NULL), 0);
    char uuid[STORE_UUID_LEN + 1];
    cr_assert_eq(volumes_new_uuid(vols, uuid), 0);
    cr_assert_neq(strncmp(uuid, "0123abcd", 8), 0);
}
