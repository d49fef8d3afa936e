/* test_rbddiff.c - the "rbd diff v2" writer and reader: round trips,
 * Ceph's exact bytes, every truncation of a stream refused, corrupted
 * lengths, order, unknown tags, and huge claimed lengths costing nothing. */
#include "cli/rbddiff.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct buf {
    uint8_t *p;
    size_t len, cap, at; /* at: the read position */
    size_t max_read;     /* largest read handed out (0: any) */
    size_t reads;
};

static int buf_write(void *arg, const void *data, size_t len)
{
    struct buf *b = arg;
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

static ssize_t buf_read(void *arg, void *data, size_t len)
{
    struct buf *b = arg;
    size_t n = b->len - b->at < len ? b->len - b->at : len;
    if (b->max_read && n > b->max_read)
        n = b->max_read;
    memcpy(data, b->p + b->at, n);
    b->at += n;
    b->reads++;
    return (ssize_t)n;
}

static uint8_t pattern(uint64_t off)
{
    return (uint8_t)(off * 7 + 3);
}

/* A full stream of a 1 MiB volume with two data records and a zero one. */
static struct buf sample(bool incremental)
{
    struct buf b = {0};
    struct rbddiff_writer w;
    uint8_t data[3000];

    for (size_t i = 0; i < sizeof data; i++)
        data[i] = pattern(4096 + i);
    rbddiff_writer_init(&w, buf_write, &b);
    cr_assert_eq(rbddiff_write_header(&w), 0);
    if (incremental)
        cr_assert_eq(rbddiff_write_name(&w, RBDDIFF_FROM, "monday"), 0);
    cr_assert_eq(rbddiff_write_name(&w, RBDDIFF_TO, "tuesday"), 0);
    cr_assert_eq(rbddiff_write_size(&w, 1 << 20), 0);
    cr_assert_eq(rbddiff_write_data(&w, 4096, data, sizeof data), 0);
    cr_assert_eq(rbddiff_write_zero(&w, 8192, 65536), 0);
    cr_assert_eq(rbddiff_write_data(&w, 73728, data, 100), 0);
    cr_assert_eq(rbddiff_write_end(&w), 0);
    return b;
}

/* Reads b whole; returns 0 or -1 with the reader's error in err. */
static int read_all(struct buf *b, char *err, size_t errlen)
{
    struct rbddiff_reader r;
    struct rbddiff_record rec;

    b->at = 0;
    rbddiff_reader_init(&r, buf_read, b);
    do {
        if (rbddiff_next(&r, &rec) < 0) {
            snprintf(err, errlen, "%s", r.error);
            return -1;
        }
    } while (rec.tag != RBDDIFF_END);
    return 0;
}

static void refused(struct buf *b, const char *want)
{
    char err[256] = "";
    cr_assert_eq(read_all(b, err, sizeof err), -1, "stream accepted, expected \"%s\"", want);
    cr_assert_not_null(strstr(err, want), "error \"%s\" lacks \"%s\"", err, want);
}

Test(rbddiff, ceph_bytes)
{
    /* Export.cc, format 2: f and t are 4 + name, s 8, w 16 + data, z 16. */
    static const uint8_t want[] = {
        'r', 'b', 'd', ' ', 'd', 'i', 'f', 'f',  ' ',  'v', '2', '\n', 'f', 5, 0, 0,  0, 0, 0,
        0,   0,   1,   0,   0,   0,   'a', 't',  6,    0,   0,   0,    0,   0, 0, 0,  2, 0, 0,
        0,   'b', 'c', 's', 8,   0,   0,   0,    0,    0,   0,   0,    0,   0, 1, 0,  0, 0, 0,
        0,   'w', 18,  0,   0,   0,   0,   0,    0,    0,   0,   2,    0,   0, 0, 0,  0, 0, 2,
        0,   0,   0,   0,   0,   0,   0,   0xaa, 0xbb, 'z', 16,  0,    0,   0, 0, 0,  0, 0, 0,
        4,   0,   0,   0,   0,   0,   0,   0,    2,    0,   0,   0,    0,   0, 0, 'e'};
    struct buf b = {0};
    struct rbddiff_writer w;
    static const uint8_t two[] = {0xaa, 0xbb};

    rbddiff_writer_init(&w, buf_write, &b);
    cr_assert_eq(rbddiff_write_header(&w), 0);
    cr_assert_eq(rbddiff_write_name(&w, RBDDIFF_FROM, "a"), 0);
    cr_assert_eq(rbddiff_write_name(&w, RBDDIFF_TO, "bc"), 0);
    cr_assert_eq(rbddiff_write_size(&w, 65536), 0);
    cr_assert_eq(rbddiff_write_data(&w, 512, two, 2), 0);
    cr_assert_eq(rbddiff_write_zero(&w, 1024, 512), 0);
    cr_assert_eq(rbddiff_write_end(&w), 0);
    cr_assert_eq(b.len, sizeof want);
    cr_assert_arr_eq(b.p, want, sizeof want);
    free(b.p);
}

Test(rbddiff, round_trip)
{
    for (int inc = 0; inc < 2; inc++) {
        struct buf b = sample(inc);
        struct rbddiff_reader r;
        struct rbddiff_record rec;
        uint8_t piece[700];

        b.max_read = 13; /* a pipe hands out little at a time */
        rbddiff_reader_init(&r, buf_read, &b);
        if (inc) {
            cr_assert_eq(rbddiff_next(&r, &rec), 1, "%s", r.error);
            cr_assert_eq(rec.tag, RBDDIFF_FROM);
            cr_assert_str_eq(rec.name, "monday");
        }
        cr_assert_eq(rbddiff_next(&r, &rec), 1, "%s", r.error);
        cr_assert_eq(rec.tag, RBDDIFF_TO);
        cr_assert_str_eq(rec.name, "tuesday");
        cr_assert_eq(rbddiff_next(&r, &rec), 1, "%s", r.error);
        cr_assert_eq(rec.tag, RBDDIFF_SIZE);
        cr_assert_eq(rec.size, 1 << 20);
        cr_assert_eq(rbddiff_next(&r, &rec), 1, "%s", r.error);
        cr_assert_eq(rec.tag, RBDDIFF_WRITE);
        cr_assert_eq(rec.offset, 4096);
        cr_assert_eq(rec.length, 3000);
        uint64_t at = rec.offset;
        ssize_t n;
        while ((n = rbddiff_read_data(&r, piece, sizeof piece)) > 0) {
            cr_assert_leq(n, (ssize_t)sizeof piece);
            for (ssize_t i = 0; i < n; i++)
                cr_assert_eq(piece[i], pattern(at + (uint64_t)i), "byte %ld", (long)(at + i));
            at += (uint64_t)n;
        }
        cr_assert_eq(n, 0, "%s", r.error);
        cr_assert_eq(at, 4096 + 3000);
        cr_assert_eq(rbddiff_next(&r, &rec), 1, "%s", r.error);
        cr_assert_eq(rec.tag, RBDDIFF_ZERO);
        cr_assert_eq(rec.offset, 8192);
        cr_assert_eq(rec.length, 65536);
        /* The next w's data is skipped when the caller doesn't read it. */
        cr_assert_eq(rbddiff_next(&r, &rec), 1, "%s", r.error);
        cr_assert_eq(rec.tag, RBDDIFF_WRITE);
        cr_assert_eq(rbddiff_next(&r, &rec), 1, "%s", r.error);
        cr_assert_eq(rec.tag, RBDDIFF_END);
        cr_assert_eq(rbddiff_next(&r, &rec), -1);
        free(b.p);
    }
}

Test(rbddiff, every_truncation_refused)
{
    struct buf b = sample(true);
    size_t full = b.len;
    char err[256];

    for (size_t len = 0; len < full; len++) {
        b.len = len;
        cr_assert_eq(read_all(&b, err, sizeof err), -1, "a stream cut at %zu of %zu accepted", len,
                     full);
        bool says = strstr(err, "truncated") || strstr(err, "ends without an end record") ||
                    (len == 0 && strstr(err, "no header"));
        cr_assert(says, "cut at %zu: \"%s\" does not say it is truncated", len, err);
    }
    b.len = full;
    cr_assert_eq(read_all(&b, err, sizeof err), 0, "%s", err);
    free(b.p);
}

Test(rbddiff, error_names_record_and_byte)
{
    struct buf b = sample(false);
    b.len -= 1 + 50; /* inside the last w's data */
    refused(&b, "record 5 ('w', data): truncated in its data: the stream ends after 50 of 100");
    refused(&b, "byte 3099:");
    free(b.p);
}

/* In sample(false): 't' at byte 12 (length at 13, name length at 21, name
 * at 25), 's' at 32 (length at 33, size at 41), the first 'w' at 49
 * (length at 50, offset at 58, data length at 66). */
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

Test(rbddiff, corrupted_lengths)
{
    struct buf b = sample(false);
    uint8_t *w = b.p + 49;

    cr_assert_eq(w[0], 'w');
    put64(w + 1, 16 + 2999);
    refused(&b, "data length 3000 disagrees with the record length 3015");
    put64(w + 1, 15);
    refused(&b, "less than its offset and length");
    put64(w + 1, 16 + 3000);
    put64(w + 17, 1 << 20);
    refused(&b, "data length 1048576 disagrees");
    put64(w + 1, 16 + (1 << 20));
    refused(&b, "range 4096+1048576 ends past the size 1048576");
    put64(w + 1, 16 + 3000);
    put64(w + 17, 3000);
    cr_assert_eq(b.p[12], 't');
    put64(b.p + 13, 4 + 8);
    refused(&b, "name length 7 disagrees with the record length 12");
    put64(b.p + 13, 4 + 100);
    refused(&b, "a name of 1 to 64 bytes");
    put64(b.p + 13, 4 + 7);
    b.p[26] = 0;
    refused(&b, "holds a NUL");
    b.p[26] = 'u';
    cr_assert_eq(b.p[32], 's');
    put64(b.p + 33, 9);
    refused(&b, "byte 32: record 2 ('s', size): length 9, expected 8");
    put64(b.p + 33, 8);
    put64(b.p + 41, UINT64_MAX);
    refused(&b, "larger than any volume");
    put64(b.p + 41, 1 << 20);
    char err[256];
    cr_assert_eq(read_all(&b, err, sizeof err), 0, "%s", err);
    free(b.p);
}

/* A stream claiming a 2^62-byte w record fails at the data it lacks,
 * having read in small pieces: nothing is sized by the claim. */
Test(rbddiff, huge_claims_cost_nothing)
{
    struct buf b = {0};
    struct rbddiff_writer w;
    uint8_t rec[25] = {'w'};
    char err[256];

    rbddiff_writer_init(&w, buf_write, &b);
    cr_assert_eq(rbddiff_write_header(&w), 0);
    cr_assert_eq(rbddiff_write_size(&w, RBDDIFF_SIZE_MAX), 0);
    put64(rec + 1, 16 + (1ull << 62));
    put64(rec + 9, 0);
    put64(rec + 17, 1ull << 62);
    buf_write(&b, rec, sizeof rec);
    buf_write(&b, "some data", 9);
    cr_assert_eq(read_all(&b, err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "ends after 9 of 4611686018427387904 bytes"), "%s", err);
    cr_assert_lt(b.reads, 20, "%zu reads", b.reads);
    free(b.p);
}

static struct buf raw(const void *bytes, size_t len)
{
    struct buf b = {0};
    buf_write(&b, RBDDIFF_HEADER, RBDDIFF_HEADER_LEN);
    buf_write(&b, bytes, len);
    return b;
}

#define RAW(...)                                                                                   \
    ({                                                                                             \
        static const uint8_t bytes_[] = {__VA_ARGS__};                                             \
        raw(bytes_, sizeof bytes_);                                                                \
    })

#define SIZE_1M 's', 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0
#define Z(off) 'z', 16, 0, 0, 0, 0, 0, 0, 0, off, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0

Test(rbddiff, order_and_tags)
{
    struct buf b;

    b = RAW('A', 0, 0, 0, 0, 0, 0, 0, 0);
    refused(&b, "record 1: unknown tag 0x41 ('A')");
    free(b.p);
    b = RAW(SIZE_1M, 0x00);
    refused(&b, "byte 29: record 2: unknown tag 0x00");
    free(b.p);
    b = RAW(Z(0), SIZE_1M, 'e');
    refused(&b, "before the size record");
    free(b.p);
    b = RAW('e');
    refused(&b, "no size record");
    free(b.p);
    b = RAW(SIZE_1M, SIZE_1M, 'e');
    refused(&b, "record 2 ('s', size): a second one");
    free(b.p);
    b = RAW(SIZE_1M, Z(0), 't', 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 'x', 'e');
    refused(&b, "after a data record");
    free(b.p);
    b = RAW('t', 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 'x', 'f', 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
            'y', SIZE_1M, 'e');
    refused(&b, "after the 't' record");
    free(b.p);
    b = RAW(SIZE_1M, Z(4), Z(4), 'e');
    refused(&b,
            "byte 54: record 3 ('z', zeroes): range 4+2 starts before the previous record's end 6");
    free(b.p);
    b = RAW(SIZE_1M, Z(8), Z(4), 'e');
    refused(&b, "range 4+2 starts before");
    free(b.p);
    b = RAW(SIZE_1M, 'z', 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            'e');
    refused(&b, "an empty range");
    free(b.p);
    b = RAW(SIZE_1M, 'e', 'x');
    refused(&b, "bytes follow the end record");
    free(b.p);
    b = RAW('p', 1, 0, 0, 0, 0, 0, 0, 0, 2, SIZE_1M, 'e');
    refused(&b, "flag 2: not 0 or 1");
    free(b.p);
    /* Adjacent ranges and Ceph's protection record are fine. */
    b = RAW('t', 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 'x', 'p', 1, 0, 0, 0, 0, 0, 0, 0, 1, SIZE_1M,
            Z(4), Z(6), 'e');
    char err[256];
    cr_assert_eq(read_all(&b, err, sizeof err), 0, "%s", err);
    free(b.p);
}

Test(rbddiff, headers)
{
    struct buf b = {0};
    buf_write(&b, "rbd diff v1\n", 12);
    refused(&b, "an \"rbd diff v1\" stream");
    b.len = 0;
    buf_write(&b, "rbd image v2\n", 13);
    refused(&b, "not an \"rbd diff v2\" stream");
    b.len = 5;
    refused(&b, "not an \"rbd diff v2\" stream");
    b.len = 0;
    buf_write(&b, "rbd d", 5);
    refused(&b, "truncated in the header");
    free(b.p);
}

Test(rbddiff, writer_refuses_disorder)
{
    struct buf b = {0};
    struct rbddiff_writer w;
    char name[80];

    rbddiff_writer_init(&w, buf_write, &b);
    cr_assert_eq(rbddiff_write_size(&w, 4096), -EINVAL);
    cr_assert_eq(rbddiff_write_header(&w), 0);
    cr_assert_eq(rbddiff_write_name(&w, RBDDIFF_TO, "b"), 0);
    cr_assert_eq(rbddiff_write_name(&w, RBDDIFF_FROM, "a"), -EINVAL);
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    cr_assert_eq(rbddiff_write_name(&w, RBDDIFF_TO, name), -EINVAL);
    cr_assert_eq(rbddiff_write_zero(&w, 0, 512), -EINVAL);
    cr_assert_eq(rbddiff_write_size(&w, 4096), 0);
    cr_assert_eq(rbddiff_write_zero(&w, 512, 512), 0);
    cr_assert_eq(rbddiff_write_zero(&w, 0, 512), -EINVAL);
    cr_assert_eq(rbddiff_write_zero(&w, 1024, 4096), -EINVAL);
    cr_assert_eq(rbddiff_write_zero(&w, 1024, 0), -EINVAL);
    cr_assert_eq(rbddiff_write_end(&w), 0);
    cr_assert_eq(rbddiff_write_end(&w), -EINVAL);
    free(b.p);
}
