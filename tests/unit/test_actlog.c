/* test_actlog.c - the activity log (store/actlog.c): entries durable
 * across reopen, the bound (entries carried from the file count beyond
 * it), pinned entries never evicted, eviction rewriting the file, a
 * corrupt or oversized file refused, an append cut short by a power cut
 * skipped, and 8 threads adding at once (group commit), each finding its
 * keys in the file it reopens. */
#include "store/actlog.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/test_actlog.XXXXXX";
static char path[sizeof(dir) + 32];

static void setup(void)
{
    strcpy(dir, "/tmp/test_actlog.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/activity.log", dir);
}

static void teardown(void)
{
    char tmp[sizeof(path) + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(tmp);
    unlink(path);
    cr_assert_eq(rmdir(dir), 0, "rmdir %s: %s", dir, strerror(errno));
}

TestSuite(actlog, .init = setup, .fini = teardown);

static struct actlog *open_ok(size_t max)
{
    struct actlog *al;
    int r = actlog_open(path, max, &al);
    cr_assert_eq(r, 0, "actlog_open(%s): %s", path, strerror(-r));
    return al;
}

static void add_ok(struct actlog *al, uint32_t vol, uint64_t region)
{
    struct actlog_key k = {vol, region};
    int r = actlog_add(al, &k, 1);
    cr_assert_eq(r, 0, "add %u/%llu: %s", vol, (unsigned long long)region, strerror(-r));
    actlog_unpin(al, &k, 1);
}

static bool logged(struct actlog *al, uint32_t vol, uint64_t region)
{
    struct actlog_key k = {vol, region};
    return actlog_logged(al, &k, 1);
}

static off_t file_size(void)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    return st.st_size;
}

static void patch(off_t off, const void *bytes, size_t len)
{
    int fd = open(path, O_WRONLY);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pwrite(fd, bytes, len, off), (ssize_t)len);
    close(fd);
}

Test(actlog, created_empty_then_entries_survive_reopen)
{
    struct actlog *al = open_ok(16);
    cr_assert_eq(actlog_room(al), 16);
    cr_assert_eq(file_size(), ACTLOG_HEADER_SIZE);
    cr_assert_not(logged(al, 7, 3));
    add_ok(al, 7, 3);
    add_ok(al, 7, 3); /* already there: no second record */
    add_ok(al, 0xdeadbeef, UINT64_C(1) << 40);
    cr_assert(logged(al, 7, 3));
    cr_assert_eq(file_size(), ACTLOG_HEADER_SIZE + 2 * ACTLOG_RECORD_SIZE);
    actlog_close(al);

    al = open_ok(16);
    cr_assert_eq(actlog_carried(al, NULL, 0), 2);
    cr_assert_eq(actlog_room(al), 16, "carried entries count beyond the bound");
    cr_assert(logged(al, 7, 3));
    cr_assert(logged(al, 0xdeadbeef, UINT64_C(1) << 40));
    cr_assert_not(logged(al, 7, 4));
    struct actlog_key keys[4];
    cr_assert_eq(actlog_carried(al, keys, 4), 2);
    cr_assert_eq(keys[0].volume, 7);
    cr_assert_eq(keys[0].region, 3);
    actlog_close(al);
}

Test(actlog, bounded)
{
    struct actlog *al = open_ok(4);
    for (uint64_t r = 0; r < 4; r++)
        add_ok(al, 1, r);
    struct actlog_key two[2] = {{1, 3}, {1, 9}};
    cr_assert_eq(actlog_add(al, two, 2), -ENOSPC, "a full log takes no new entry");
    cr_assert_not(logged(al, 1, 9), "nothing of a refused add is kept");
    add_ok(al, 1, 2); /* one it holds is fine */
    actlog_close(al);
}

Test(actlog, eviction_rewrites_the_file_oldest_first)
{
    struct actlog *al = open_ok(4);
    for (uint64_t r = 0; r < 4; r++)
        add_ok(al, 1, r);
    cr_assert(logged(al, 1, 0)); /* 0 is used again: 1 is now the oldest */
    struct actlog_key old[2];
    cr_assert_eq(actlog_oldest(al, old, 2), 2);
    cr_assert_eq(old[0].region, 1);
    cr_assert_eq(old[1].region, 2);

    actlog_evict_begin(al, old, 2);
    cr_assert_not(logged(al, 1, 1), "an entry being evicted is not logged for writers");
    cr_assert_eq(actlog_evict_end(al, old, 2, false), 0);
    cr_assert(logged(al, 1, 1), "an eviction given up leaves the entry");

    actlog_evict_begin(al, old, 2);
    cr_assert_eq(actlog_evict_end(al, old, 2, true), 0);
    cr_assert_eq(actlog_room(al), 2);
    cr_assert_eq(file_size(), ACTLOG_HEADER_SIZE + 2 * ACTLOG_RECORD_SIZE);
    add_ok(al, 1, 5);
    add_ok(al, 1, 6);
    actlog_close(al);

    al = open_ok(4);
    cr_assert_eq(actlog_carried(al, NULL, 0), 4);
    cr_assert(logged(al, 1, 0) && logged(al, 1, 3) && logged(al, 1, 5) && logged(al, 1, 6));
    cr_assert_not(logged(al, 1, 1) || logged(al, 1, 2));
    actlog_close(al);
}

Test(actlog, corrupt_file_refused)
{
    struct actlog *al = open_ok(8);
    add_ok(al, 1, 1);
    add_ok(al, 1, 2);
    actlog_close(al);
    unsigned char byte = 0x55;
    patch(ACTLOG_HEADER_SIZE + 9, &byte, 1); /* first record's region */
    cr_assert_eq(actlog_open(path, 8, &al), -EBADMSG);
    patch(0, "XXXX", 4);
    cr_assert_eq(actlog_open(path, 8, &al), -EBADMSG);
    cr_assert_eq(file_size(), ACTLOG_HEADER_SIZE + 2 * ACTLOG_RECORD_SIZE, "left as it was");
}

Test(actlog, carried_entries_leave_room_for_new_ones)
{
    struct actlog *al = open_ok(8);
    for (uint64_t r = 0; r < 8; r++)
        add_ok(al, 1, r);
    actlog_close(al);
    al = open_ok(4); /* a cold start after a full log, with a smaller bound */
    cr_assert_eq(actlog_carried(al, NULL, 0), 8);
    cr_assert_eq(actlog_room(al), 4);
    for (uint64_t r = 100; r < 104; r++)
        add_ok(al, 1, r);
    struct actlog_key k = {1, 200};
    cr_assert_eq(actlog_add(al, &k, 1), -ENOSPC);
    struct actlog_key old[3];
    cr_assert_eq(actlog_oldest(al, old, 3), 3);
    cr_assert_eq(old[0].region, 0, "carried entries are the oldest");
    actlog_evict_begin(al, old, 3);
    cr_assert_eq(actlog_evict_end(al, old, 3, true), 0);
    cr_assert_eq(actlog_carried(al, NULL, 0), 5);
    cr_assert_eq(actlog_add(al, &k, 1), -ENOSPC, "a carried slot freed is no room for new ones");
    actlog_close(al);
}

Test(actlog, a_file_past_the_limit_refused)
{
    struct actlog *al = open_ok(8);
    actlog_close(al);
    cr_assert_eq(
        truncate(path, ACTLOG_HEADER_SIZE + ((off_t)ACTLOG_MAX_LIMIT + 1) * ACTLOG_RECORD_SIZE), 0);
    cr_assert_eq(actlog_open(path, 8, &al), -EBADMSG);
}

Test(actlog, pinned_entries_are_not_evicted)
{
    struct actlog *al = open_ok(4);
    struct actlog_key k[2] = {{1, 1}, {1, 2}};
    cr_assert_eq(actlog_add(al, k, 2), 0);
    struct actlog_key old[2];
    cr_assert_eq(actlog_oldest(al, old, 2), 0, "both pinned by their writer");
    actlog_evict_begin(al, k, 2);
    cr_assert(logged(al, 1, 1) && logged(al, 1, 2), "evict_begin skips pinned entries");
    cr_assert_eq(actlog_evict_end(al, k, 2, true), 0);
    cr_assert(logged(al, 1, 1) && logged(al, 1, 2));
    actlog_unpin(al, k, 1);
    cr_assert_eq(actlog_oldest(al, old, 2), 1);
    cr_assert_eq(old[0].region, 1);
    actlog_unpin(al, k + 1, 1);
    cr_assert_eq(actlog_oldest(al, old, 2), 2);
    actlog_close(al);
}

Test(actlog, unsynced_append_cut_short_is_skipped)
{
    struct actlog *al = open_ok(8);
    add_ok(al, 1, 1);
    actlog_close(al);
    /* A power cut after the file grew but before the record's data did:
     * zeros, then half a record. */
    unsigned char zeros[ACTLOG_RECORD_SIZE + 5] = {0};
    patch(ACTLOG_HEADER_SIZE + ACTLOG_RECORD_SIZE, zeros, sizeof zeros);
    al = open_ok(8);
    cr_assert_eq(actlog_carried(al, NULL, 0), 1);
    cr_assert(logged(al, 1, 1));
    cr_assert_eq(file_size(), ACTLOG_HEADER_SIZE + ACTLOG_RECORD_SIZE, "rewritten whole");
    add_ok(al, 1, 2);
    actlog_close(al);
    al = open_ok(8);
    cr_assert_eq(actlog_carried(al, NULL, 0), 2);
    actlog_close(al);
}

#define THREADS 8
#define PER_THREAD 50

struct adder {
    struct actlog *al;
    uint32_t id;
};

static void *add_many(void *arg)
{
    struct adder *a = arg;
    for (uint64_t r = 0; r < PER_THREAD; r++) {
        struct actlog_key k[2] = {{a->id, r}, {100, r}}; /* the second one shared */
        if (actlog_add(a->al, k, 2) != 0 || !actlog_logged(a->al, k, 2))
            return (void *)1;
        actlog_unpin(a->al, k, 2);
    }
    return NULL;
}

Test(actlog, concurrent_adds_share_syncs)
{
    struct actlog *al = open_ok(THREADS * PER_THREAD + PER_THREAD);
    pthread_t t[THREADS];
    struct adder a[THREADS];
    for (uint32_t i = 0; i < THREADS; i++) {
        a[i] = (struct adder){al, i + 1};
        cr_assert_eq(pthread_create(&t[i], NULL, add_many, &a[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        cr_assert_null(ret, "thread %d: an add failed or was not logged after it returned", i);
    }
    actlog_close(al);
    al = open_ok(THREADS * PER_THREAD + PER_THREAD);
    cr_assert_eq(actlog_carried(al, NULL, 0), THREADS * PER_THREAD + PER_THREAD);
    cr_assert_eq(file_size(), ACTLOG_HEADER_SIZE + (THREADS + 1) * PER_THREAD * ACTLOG_RECORD_SIZE,
                 "each entry appended once");
    actlog_close(al);
}
