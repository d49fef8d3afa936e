/* test_store.c - the pool directory: creation, refusal of what is not a
 * pool, persistence of volume records, and recovery from every state a
 * crash can leave. Crash states are built by hand (the files a change
 * writes, as it would have left them), then the pool is reopened. Each test
 * works in its own temporary directory, removed by the fixture. */
#include "store/store.h"
#include "store/svol.h"

#include <criterion/criterion.h>
#include <qb/qblog.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (UINT64_C(1) << 20)

static char dir[64];
static char logbuf[16384];

/* ---- fixture: a temporary directory and a log we can read back -------- */

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
    qb_log_init("test_store", LOG_USER, LOG_DEBUG);
    qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
    int32_t t = qb_log_custom_open(capture, NULL, NULL, NULL);
    cr_assert_geq(t, 0, "qb_log_custom_open: %s", strerror(-t));
    cr_assert_eq(qb_log_filter_ctl(t, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*", LOG_DEBUG), 0);
    cr_assert_eq(qb_log_ctl(t, QB_LOG_CONF_ENABLED, QB_TRUE), 0);
    snprintf(dir, sizeof(dir), "/tmp/vsan-test-store.XXXXXX");
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

static void teardown(void)
{
    chmod(dir, 0700);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    qb_log_fini();
}

TestSuite(store, .init = setup, .fini = teardown);

/* ---- helpers ----------------------------------------------------------- */

static const char *path_of(const char *rel)
{
    static char bufs[4][256];
    static int next;
    char *p = bufs[next++ % 4];
    snprintf(p, sizeof(bufs[0]), "%s/%s", dir, rel);
    return p;
}

static const char *vol_file(const char *uuid, const char *suffix)
{
    char rel[128];
    snprintf(rel, sizeof(rel), STORE_VOLUMES_DIR "/%s%s", uuid, suffix);
    return path_of(rel);
}

static bool exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static off_t file_size(const char *path)
{
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0, "stat %s: %s", path, strerror(errno));
    return sb.st_size;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    cr_assert_eq(fputs(text, f) >= 0, true);
    cr_assert_eq(fclose(f), 0);
}

static char *read_text(const char *path)
{
    static char buf[1024];
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void set_length(const char *path, off_t len)
{
    cr_assert_eq(truncate(path, len), 0, "truncate %s: %s", path, strerror(errno));
}

static void write_meta(const char *path, const char *name, const char *uuid, uint64_t size,
                       uint64_t gen)
{
    char text[256];
    snprintf(text, sizeof(text),
             "[volume]\nname = %s\nuuid = %s\nsize = %" PRIu64 "\ngeneration = %" PRIu64 "\n", name,
             uuid, size, gen);
    write_text(path, text);
}

static void pwrite_at(const char *path, off_t off, char byte, size_t len)
{
    char buf[4096];
    memset(buf, byte, sizeof(buf));
    int fd = open(path, O_WRONLY);
    cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
    cr_assert_eq(pwrite(fd, buf, len, off), (ssize_t)len);
    close(fd);
}

static bool all_bytes(const char *path, off_t off, char byte, size_t len)
{
    char buf[4096];
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pread(fd, buf, len, off), (ssize_t)len);
    close(fd);
    for (size_t i = 0; i < len; i++)
        if (buf[i] != byte)
            return false;
    return true;
}

static struct store *open_ok(void)
{
    struct store *st = NULL;
    int r = store_open(dir, &st);
    cr_assert_eq(r, 0, "store_open: %s\nlog:\n%s", strerror(-r), logbuf);
    return st;
}

static void open_fails_at(const char *path, int err, const char *logged)
{
    struct store *st = NULL;
    logbuf[0] = '\0';
    int r = store_open(path, &st);
    cr_assert_eq(r, err, "store_open = %d (%s), expected %d\nlog:\n%s", r, strerror(-r), err,
                 logbuf);
    cr_assert_null(st);
    cr_assert_not_null(strstr(logbuf, logged), "log lacks \"%s\":\n%s", logged, logbuf);
}

static void open_fails(int err, const char *logged)
{
    open_fails_at(dir, err, logged);
}

static struct store_volume create_ok(struct store *st, const char *name, uint64_t size)
{
    struct store_volume v;
    int r = store_create(st, name, size, NULL, &v);
    cr_assert_eq(r, 0, "store_create %s: %s\nlog:\n%s", name, strerror(-r), logbuf);
    return v;
}

/* The only volume of the pool. */
static struct store_volume only_volume(struct store *st)
{
    struct store_volume *vols;
    size_t n;
    cr_assert_eq(store_list(st, &vols, &n), 0);
    cr_assert_eq(n, 1, "expected 1 volume, found %zu", n);
    struct store_volume v = vols[0];
    free(vols);
    return v;
}

static size_t count_volumes(struct store *st)
{
    struct store_volume *vols;
    size_t n;
    cr_assert_eq(store_list(st, &vols, &n), 0);
    free(vols);
    return n;
}

static size_t count_entries(const char *path)
{
    DIR *d = opendir(path);
    cr_assert_not_null(d, "opendir %s: %s", path, strerror(errno));
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* ---- opening a data_dir ------------------------------------------------ */

Test(store, missing_dir_is_an_error_and_not_created)
{
    const char *missing = path_of("nope");
    char want[128];
    snprintf(want, sizeof(want), "data_dir \"%s\": No such file or directory", missing);
    open_fails_at(missing, -ENOENT, want);
    cr_assert(!exists(missing));
}

Test(store, not_a_directory)
{
    const char *file = path_of("file");
    write_text(file, "x");
    char want[128];
    snprintf(want, sizeof(want), "data_dir \"%s\": Not a directory", file);
    open_fails_at(file, -ENOTDIR, want);
}

Test(store, no_permission)
{
    cr_assert_eq(chmod(dir, 0700), 0);
    if (geteuid() != 0) {
        cr_assert_eq(chmod(dir, 0), 0);
        open_fails(-EACCES, "Permission denied");
        return;
    }
    /* root ignores modes: check as nobody, in a child. */
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        if (setgid(65534) < 0 || setuid(65534) < 0)
            _exit(2);
        struct store *st;
        logbuf[0] = '\0';
        int r = store_open(dir, &st);
        _exit(r == -EACCES && strstr(logbuf, "Permission denied") != NULL ? 0 : 1);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
}

Test(store, empty_dir_becomes_a_pool)
{
    struct store *st = open_ok();
    const char *marker = read_text(path_of(STORE_MARKER));
    cr_assert_not_null(strstr(marker, "format = 1\n"), "marker:\n%s", marker);
    char want[64];
    snprintf(want, sizeof(want), "uuid = %s\n", store_pool_uuid(st));
    cr_assert_not_null(strstr(marker, want), "marker:\n%s", marker);
    cr_assert_not_null(strstr(marker, "created = 20"), "marker:\n%s", marker);
    cr_assert_eq(strlen(store_pool_uuid(st)), STORE_UUID_LEN);
    cr_assert_str_eq(store_path(st), dir);
    cr_assert(exists(path_of(STORE_VOLUMES_DIR)));
    cr_assert(!exists(path_of(STORE_MARKER ".tmp")));
    cr_assert_eq(count_volumes(st), 0);
    store_close(st);
}

Test(store, reopen_keeps_the_pool)
{
    struct store *st = open_ok();
    char uuid[STORE_UUID_LEN + 1];
    strcpy(uuid, store_pool_uuid(st));
    store_close(st);
    st = open_ok();
    cr_assert_str_eq(store_pool_uuid(st), uuid);
    store_close(st);
}

Test(store, foreign_dir_is_refused_and_left_alone)
{
    write_text(path_of("important.txt"), "keep me");
    cr_assert_eq(mkdir(path_of(STORE_VOLUMES_DIR), 0700), 0);
    open_fails(-ENOTEMPTY, "is not a vsan pool (foreign data_dir)");
    cr_assert_str_eq(read_text(path_of("important.txt")), "keep me");
    cr_assert(exists(path_of(STORE_VOLUMES_DIR)));
    cr_assert(!exists(path_of(STORE_MARKER)));
    cr_assert_eq(count_entries(dir), 2);
}

Test(store, foreign_volumes_dir_is_refused)
{
    cr_assert_eq(mkdir(path_of(STORE_VOLUMES_DIR), 0700), 0);
    write_text(path_of(STORE_VOLUMES_DIR "/x"), "x");
    open_fails(-ENOTEMPTY, "is not a vsan pool (foreign data_dir)");
    cr_assert(exists(path_of(STORE_VOLUMES_DIR "/x")));
}

Test(store, unknown_format_version)
{
    store_close(open_ok());
    write_text(path_of(STORE_MARKER),
               "[pool]\nformat = 2\nuuid = 00000000-0000-4000-8000-000000000000\n"
               "created = 2030-01-01T00:00:00Z\nshards = 7\n");
    open_fails(-EPROTONOSUPPORT, "unknown format version 2 (this vsand knows version 1)");
}

Test(store, corrupt_marker_names_file_and_line)
{
    store_close(open_ok());
    write_text(path_of(STORE_MARKER),
               "[pool]\nformat = 1\nuuid = not-a-uuid\ncreated = 2030-01-01T00:00:00Z\n");
    char want[160];
    snprintf(want, sizeof(want), "pool marker \"%s/%s\": line 3: bad or repeated uuid", dir,
             STORE_MARKER);
    open_fails(-EINVAL, want);
}

Test(store, marker_missing_a_key)
{
    store_close(open_ok());
    write_text(path_of(STORE_MARKER), "[pool]\nformat = 1\ncreated = 2030-01-01T00:00:00Z\n");
    open_fails(-EINVAL, "missing uuid");
}

Test(store, interrupted_pool_creation_is_completed)
{
    /* Crash after mkdir volumes/ and a partial marker .tmp, before the
     * rename that commits the pool. */
    cr_assert_eq(mkdir(path_of(STORE_VOLUMES_DIR), 0700), 0);
    write_text(path_of(STORE_MARKER ".tmp"), "[pool]\nform");
    struct store *st = open_ok();
    cr_assert(exists(path_of(STORE_MARKER)));
    cr_assert(!exists(path_of(STORE_MARKER ".tmp")));
    store_close(st);
}

/* ---- volume records ---------------------------------------------------- */

Test(store, create_makes_sparse_data_and_meta)
{
    struct store *st = open_ok();
    struct store_volume v = create_ok(st, "db", 4 * MiB);
    cr_assert_str_eq(v.name, "db");
    cr_assert_eq(v.size, 4 * MiB);
    cr_assert_eq(v.generation, 1);
    /* random v4 uuid */
    cr_assert_eq(strlen(v.uuid), STORE_UUID_LEN);
    cr_assert_eq(v.uuid[14], '4');
    cr_assert_not_null(strchr("89ab", v.uuid[19]));
    struct stat sb;
    cr_assert_eq(stat(vol_file(v.uuid, ".data"), &sb), 0);
    cr_assert_eq(sb.st_size, (off_t)(4 * MiB));
    cr_assert_eq(sb.st_blocks, 0, "data file is not sparse");
    const char *meta = read_text(vol_file(v.uuid, ".meta"));
    cr_assert_not_null(strstr(meta, "name = db\n"), "meta:\n%s", meta);
    cr_assert_not_null(strstr(meta, "size = 4194304\n"), "meta:\n%s", meta);
    cr_assert(!exists(vol_file(v.uuid, ".meta.tmp")));
    struct store_volume w = create_ok(st, "db2", MiB);
    cr_assert_str_neq(v.uuid, w.uuid);
    store_close(st);
}

/* A node outside a placed volume's replica set keeps its record only:
 * no data file, and the record survives a reopen and a resize as such. */
Test(store, diskless_record_has_no_data_file)
{
    struct store *st = open_ok();
    struct store_volume v, held;
    cr_assert_eq(store_create_placed(st, "far", 4 * MiB, NULL, false, &v), 0);
    cr_assert_eq(store_create_placed(st, "near", MiB, NULL, true, &held), 0);
    cr_assert_eq(v.local, STORE_LOCAL_DISKLESS);
    cr_assert(v.fixed && held.fixed);
    cr_assert_eq(held.local, STORE_LOCAL_OK);
    cr_assert(!exists(vol_file(v.uuid, ".data")), "a diskless record has a data file");
    cr_assert(exists(vol_file(held.uuid, ".data")));
    const char *meta = read_text(vol_file(v.uuid, ".meta"));
    cr_assert_not_null(strstr(meta, "local = diskless\nplacement = fixed\n"), "meta:\n%s", meta);
    int fd;
    cr_assert_eq(store_open_data(st, &v, &fd), 0);
    cr_assert_eq(fd, -1);
    cr_assert_eq(store_resize(st, &v, 8 * MiB), 0);
    cr_assert(!exists(vol_file(v.uuid, ".data")), "a resize made a diskless data file");
    uint64_t data, snaps;
    cr_assert_eq(store_usage(st, &data, &snaps), 0);
    store_close(st);
    st = open_ok(); /* recovery does not ask for the missing data file */
    struct store_volume *all;
    size_t n;
    cr_assert_eq(store_list(st, &all, &n), 0);
    cr_assert_eq(n, 2);
    for (size_t i = 0; i < n; i++)
        if (strcmp(all[i].name, "far") == 0)
            cr_assert(all[i].local == STORE_LOCAL_DISKLESS && all[i].fixed &&
                      all[i].size == 8 * MiB);
    free(all);
    cr_assert_eq(store_delete(st, &v), 0);
    store_close(st);
}

Test(store, create_refuses_bad_names)
{
    struct store *st = open_ok();
    const char *bad[] = {
        "",           ".hidden",
        "-opt",       "a b",
        "a/b",        "x\ny",
        "semi;colon", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct store_volume v;
        cr_assert_eq(store_create(st, bad[i], MiB, NULL, &v), -EINVAL, "name \"%s\" accepted",
                     bad[i]);
    }
    cr_assert_eq(count_volumes(st), 0);
    cr_assert_eq(count_entries(path_of(STORE_VOLUMES_DIR)), 0);
    cr_assert(store_name_valid("a"));
    cr_assert(store_name_valid("db-1.backup_2"));
    cr_assert(store_name_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    store_close(st);
}

Test(store, changes_persist_across_reopen)
{
    struct store *st = open_ok();
    struct store_volume a = create_ok(st, "a", MiB);
    struct store_volume b = create_ok(st, "b", 2 * MiB);
    cr_assert_eq(store_resize(st, &a, 4 * MiB), 0);
    cr_assert_eq(a.size, 4 * MiB);
    cr_assert_eq(a.generation, 2);
    cr_assert_eq(store_resize(st, &a, 3 * MiB), 0);
    cr_assert_eq(a.generation, 3);
    cr_assert_eq(store_delete(st, &b), 0);
    cr_assert(!exists(vol_file(b.uuid, ".data")));
    cr_assert(!exists(vol_file(b.uuid, ".meta")));
    store_close(st);

    st = open_ok();
    struct store_volume got = only_volume(st);
    cr_assert_str_eq(got.name, "a");
    cr_assert_str_eq(got.uuid, a.uuid);
    cr_assert_eq(got.size, 3 * MiB);
    cr_assert_eq(got.generation, 3);
    cr_assert_eq(file_size(vol_file(a.uuid, ".data")), (off_t)(3 * MiB));
    store_close(st);
}

Test(store, resize_to_same_size_changes_nothing)
{
    struct store *st = open_ok();
    struct store_volume a = create_ok(st, "a", MiB);
    cr_assert_eq(store_resize(st, &a, MiB), 0);
    cr_assert_eq(a.generation, 1);
    cr_assert_eq(store_resize(st, &a, 0), -EINVAL);
    store_close(st);
}

Test(store, grow_after_shrink_reads_zeroes)
{
    struct store *st = open_ok();
    struct store_volume a = create_ok(st, "a", MiB);
    const char *data = vol_file(a.uuid, ".data");
    pwrite_at(data, MiB - 4096, 'x', 4096);
    cr_assert_eq(store_resize(st, &a, MiB / 2), 0);
    cr_assert_eq(file_size(data), (off_t)(MiB / 2));
    cr_assert_eq(store_resize(st, &a, MiB), 0);
    cr_assert(all_bytes(data, MiB - 4096, 0, 4096), "old bytes came back after a grow");
    store_close(st);
}

Test(store, data_fd_sees_resize)
{
    struct store *st = open_ok();
    struct store_volume a = create_ok(st, "a", MiB);
    int fd;
    cr_assert_eq(store_open_data(st, &a, &fd), 0);
    cr_assert_eq(store_resize(st, &a, 2 * MiB), 0);
    struct stat sb;
    cr_assert_eq(fstat(fd, &sb), 0);
    cr_assert_eq(sb.st_size, (off_t)(2 * MiB));
    cr_assert_eq(pwrite(fd, "y", 1, 2 * MiB - 1), 1);
    close(fd);
    store_close(st);
}

Test(store, failed_grow_keeps_the_old_size)
{
    struct store *st = open_ok();
    struct store_volume a = create_ok(st, "a", MiB);
    /* A directory where the new meta's .tmp goes makes the meta write fail
     * after the data file has grown. */
    const char *tmp = vol_file(a.uuid, ".meta.tmp");
    cr_assert_eq(mkdir(tmp, 0700), 0);
    cr_assert_lt(store_resize(st, &a, 4 * MiB), 0);
    cr_assert_eq(a.size, MiB);
    cr_assert_eq(a.generation, 1);
    cr_assert_eq(rmdir(tmp), 0);
    store_close(st);
    st = open_ok();
    cr_assert_eq(only_volume(st).size, MiB);
    cr_assert_eq(file_size(vol_file(a.uuid, ".data")), (off_t)MiB);
    store_close(st);
}

/* ---- recovery from crash states ----------------------------------------- */

#define UUID2 "11111111-2222-4333-8444-555555555555"

Test(store, crash_during_create_before_meta)
{
    struct store *st = open_ok();
    struct store_volume a = create_ok(st, "a", MiB);
    store_close(st);
    /* data file created and sized, meta not written yet */
    write_text(vol_file(UUID2, ".data"), "");
    set_length(vol_file(UUID2, ".data"), 8 * MiB);
    st = open_ok();
    cr_assert(!exists(vol_file(UUID2, ".data")));
    cr_assert_str_eq(only_volume(st).uuid, a.uuid);
    cr_assert_not_null(strstr(logbuf, UUID2 ".data\": data file without a meta"), "%s", logbuf);
    store_close(st);
}

Test(store, crash_during_create_with_meta_tmp)
{
    struct store *st = open_ok();
    create_ok(st, "a", MiB);
    store_close(st);
    /* meta .tmp written (maybe partially), not renamed */
    write_text(vol_file(UUID2, ".data"), "");
    write_text(vol_file(UUID2, ".meta.tmp"), "[volume]\nname = b\nuu");
    st = open_ok();
    cr_assert(!exists(vol_file(UUID2, ".data")));
    cr_assert(!exists(vol_file(UUID2, ".meta.tmp")));
    cr_assert_str_eq(only_volume(st).name, "a");
    store_close(st);
}

Test(store, crash_during_delete_after_meta_unlink)
{
    struct store *st = open_ok();
    create_ok(st, "a", MiB);
    struct store_volume b = create_ok(st, "b", MiB);
    store_close(st);
    cr_assert_eq(unlink(vol_file(b.uuid, ".meta")), 0);
    st = open_ok();
    cr_assert(!exists(vol_file(b.uuid, ".data")));
    cr_assert_str_eq(only_volume(st).name, "a");
    store_close(st);
}

Test(store, crash_during_grow_after_data_truncate)
{
    struct store *st = open_ok();
    struct store_volume a = create_ok(st, "a", MiB);
    store_close(st);
    const char *data = vol_file(a.uuid, ".data");
    pwrite_at(data, 0, 'd', 4096);
    /* data grown, new meta written to .tmp but not renamed */
    set_length(data, 4 * MiB);
    write_meta(vol_file(a.uuid, ".meta.tmp"), "a", a.uuid, 4 * MiB, 2);
    st = open_ok();
    struct store_volume got = only_volume(st);
    cr_assert_eq(got.size, MiB);
    cr_assert_eq(got.generation, 1);
    cr_assert_eq(file_size(data), (off_t)MiB);
    cr_assert(all_bytes(data, 0, 'd', 4096), "data lost by recovery");
    cr_assert(!exists(vol_file(a.uuid, ".meta.tmp")));
    store_close(st);
}

Test(store, crash_during_grow_after_meta_commit)
{
    struct store *st = open_ok();
    struct store_volume a = create_ok(st, "a", MiB);
    store_close(st);
    /* The meta says 4 MiB, but the data file's new length was lost. */
    write_meta(vol_file(a.uuid, ".meta"), "a", a.uuid, 4 * MiB, 2);
    st = open_ok();
    cr_assert_eq(only_volume(st).size, 4 * MiB);
    cr_assert_eq(file_size(vol_file(a.uuid, ".data")), (off_t)(4 * MiB));
    store_close(st);
}

Test(store, crash_during_shrink_after_meta_commit)
{
    struct store *st = open_ok();
    struct store_volume a = create_ok(st, "a", 4 * MiB);
    store_close(st);
    const char *data = vol_file(a.uuid, ".data");
    pwrite_at(data, 0, 'd', 4096);
    pwrite_at(data, 3 * MiB, 'e', 4096);
    write_meta(vol_file(a.uuid, ".meta"), "a", a.uuid, MiB, 2);
    st = open_ok();
    struct store_volume got = only_volume(st);
    cr_assert_eq(got.size, MiB);
    cr_assert_eq(got.generation, 2);
    cr_assert_eq(file_size(data), (off_t)MiB);
    cr_assert(all_bytes(data, 0, 'd', 4096));
    store_close(st);
}

Test(store, crash_during_shrink_before_meta_commit)
{
    struct store *st = open_ok();
    struct store_volume a = create_ok(st, "a", 4 * MiB);
    store_close(st);
    write_meta(vol_file(a.uuid, ".meta.tmp"), "a", a.uuid, MiB, 2);
    st = open_ok();
    cr_assert_eq(only_volume(st).size, 4 * MiB);
    cr_assert_eq(file_size(vol_file(a.uuid, ".data")), (off_t)(4 * MiB));
    cr_assert(!exists(vol_file(a.uuid, ".meta.tmp")));
    store_close(st);
}

Test(store, meta_without_data_is_an_error)
{
    store_close(open_ok());
    write_meta(vol_file(UUID2, ".meta"), "ghost", UUID2, MiB, 1);
    open_fails(-EINVAL, UUID2 ".meta\" has no data file");
    cr_assert(exists(vol_file(UUID2, ".meta")));
}

Test(store, corrupt_meta_names_file_and_line)
{
    store_close(open_ok());
    write_text(vol_file(UUID2, ".data"), "");
    write_text(vol_file(UUID2, ".meta"),
               "[volume]\nname = a\nuuid = " UUID2 "\nsize = 12abc\ngeneration = 1\n");
    char want[200];
    snprintf(want, sizeof(want), "volume meta \"%s/volumes/%s.meta\": line 4: bad or repeated size",
             dir, UUID2);
    open_fails(-EINVAL, want);
    /* nothing dropped */
    cr_assert(exists(vol_file(UUID2, ".meta")));
    cr_assert(exists(vol_file(UUID2, ".data")));
}

Test(store, meta_syntax_error_names_the_line)
{
    store_close(open_ok());
    write_text(vol_file(UUID2, ".data"), "");
    write_text(vol_file(UUID2, ".meta"),
               "[volume]\nname = a\ngarbage here\nuuid = " UUID2 "\nsize = 4096\ngeneration = x\n");
    open_fails(-EINVAL, UUID2 ".meta\": line 3: expected \"[section]\" or \"key = value\"");
}

Test(store, meta_missing_key_or_wrong_uuid)
{
    store_close(open_ok());
    write_text(vol_file(UUID2, ".data"), "");
    write_text(vol_file(UUID2, ".meta"), "[volume]\nname = a\nuuid = " UUID2 "\nsize = 4096\n");
    open_fails(-EINVAL, UUID2 ".meta\": missing generation");
    write_meta(vol_file(UUID2, ".meta"), "a", "11111111-2222-4333-8444-000000000000", 4096, 1);
    open_fails(-EINVAL, "does not match the file name");
}

Test(store, meta_with_unknown_key_or_section)
{
    store_close(open_ok());
    write_text(vol_file(UUID2, ".data"), "");
    write_text(vol_file(UUID2, ".meta"), "[volume]\nname = a\nuuid = " UUID2
                                         "\nsize = 4096\ngeneration = 1\ncolour = blue\n");
    open_fails(-EINVAL, "line 6: unknown key \"colour\"");
    write_text(vol_file(UUID2, ".meta"), "[disk]\nname = a\n");
    open_fails(-EINVAL, "line 2: unexpected section [disk]");
}

Test(store, unexpected_files_are_left_alone)
{
    store_close(open_ok());
    write_text(path_of(STORE_VOLUMES_DIR "/README"), "hi");
    struct store *st = open_ok();
    cr_assert(exists(path_of(STORE_VOLUMES_DIR "/README")));
    cr_assert_eq(count_volumes(st), 0);
    store_close(st);
}

/* ---- one volume's copy (svol.h) ------------------------------------------ */

struct racer {
    struct svol *sv;
    int rounds;
};

static void *resizer(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < r->rounds; i++)
        cr_assert_eq(svol_resize(r->sv, (uint64_t)(i % 2 ? 2 : 3) * MiB), 0);
    return NULL;
}

static void *state_setter(void *arg)
{
    struct racer *r = arg;
    struct store_volume state = {.nreplicas = 2, .replicas = {{1, 1}, {2, 2}}};
    for (int i = 0; i < r->rounds; i++) {
        state.local = i % 2 ? STORE_LOCAL_OK : STORE_LOCAL_FAILED;
        cr_assert_eq(svol_set_state(r->sv, &state), 0);
    }
    return NULL;
}

/* A resize (the admin path) and replica-state changes (the mirror engine)
 * race on one record: neither undoes the other, in memory or on disk, and
 * no half-written tmp file is ever renamed into place (each reopen parses).
 * Before svol.c the two paths wrote the record from two copies under two
 * locks, and a FAILED mark could come back as OK. */
Test(store, svol_record_changes_do_not_undo_each_other)
{
    struct store *st = open_ok();
    struct store_volume a = create_ok(st, "a", MiB);
    struct svol *sv;
    cr_assert_eq(svol_open(st, &a, &sv), 0);
    struct racer r = {sv, 200};
    pthread_t t1, t2;
    cr_assert_eq(pthread_create(&t1, NULL, resizer, &r), 0);
    cr_assert_eq(pthread_create(&t2, NULL, state_setter, &r), 0);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    struct store_volume mem;
    svol_record(sv, &mem);
    cr_assert_eq(mem.size, 2 * MiB, "the last resize");
    cr_assert_eq(mem.local, STORE_LOCAL_OK, "the last state");
    cr_assert_eq(mem.nreplicas, 2);
    cr_assert_eq(mem.generation, 201);
    cr_assert_eq(svol_size(sv), 2 * MiB);
    svol_unref(sv);
    store_close(st);

    st = open_ok();
    struct store_volume got = only_volume(st);
    cr_assert_eq(got.size, mem.size);
    cr_assert_eq(got.local, mem.local);
    cr_assert_eq(got.nreplicas, 2);
    cr_assert_eq(got.replicas[1].state, 2);
    cr_assert_eq(got.generation, mem.generation);
    store_close(st);
}

/* The I/O calls: write, read back, zero (a hole where allowed), extents,
 * wipe. */
Test(store, svol_io)
{
    struct store *st = open_ok();
    struct store_volume a = create_ok(st, "a", 4 * MiB);
    struct svol *sv;
    cr_assert_eq(svol_open(st, &a, &sv), 0);
    char buf[8192], back[8192];
    memset(buf, 0xab, sizeof buf);
    cr_assert_eq(svol_write(sv, buf, sizeof buf, MiB, SVOL_FUA), 0);
    cr_assert_eq(svol_read(sv, back, sizeof back, MiB, 0), 0);
    cr_assert_eq(memcmp(buf, back, sizeof buf), 0);
    struct svol_extent ext[8];
    int n = svol_extents(sv, 4 * MiB, 0, false, ext, 8);
    cr_assert_eq(n, 3, "hole, data, hole: %d", n);
    cr_assert(ext[0].hole && !ext[1].hole && ext[2].hole);
    cr_assert_eq(ext[0].length, MiB);
    /* Rough (a READ's plan): the hole before the data still shows, the
     * data runs on over the hole after it, to the end asked for. */
    n = svol_extents(sv, 4 * MiB, 0, true, ext, 8);
    cr_assert_eq(n, 2, "rough: hole, data: %d", n);
    cr_assert(ext[0].hole && !ext[1].hole);
    cr_assert_eq(ext[0].length, MiB);
    cr_assert_eq(ext[1].length, 3 * MiB);
    n = svol_extents(sv, 2 * MiB, 2 * MiB, true, ext, 8);
    cr_assert(n == 1 && ext[0].hole && ext[0].length == 2 * MiB, "rough, all hole: %d", n);
    cr_assert_eq(svol_zero(sv, 4096, MiB, SVOL_MAY_TRIM), 0);
    cr_assert_eq(svol_read(sv, back, 4096, MiB, 0), 0);
    for (int i = 0; i < 4096; i++)
        cr_assert_eq(back[i], 0);
    cr_assert_eq(svol_wipe(sv), 0);
    cr_assert_eq(svol_read(sv, back, sizeof back, MiB, 0), 0);
    cr_assert_eq(back[5000], 0);
    cr_assert_eq(svol_read(sv, back, 1, 4 * MiB - 1, 0), 0);
    svol_unref(sv);
    store_close(st);
}
