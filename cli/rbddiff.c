/* rbddiff.c - the "rbd diff v2" stream's writer and reader (rbddiff.h has
 * the format and the rules the reader holds a stream to). */
#include "cli/rbddiff.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The longest record before any data: tag, length, le32 + name. */
#define RECORD_MAX (1 + 8 + 4 + RBDDIFF_NAME_MAX)

static size_t put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return 8;
}

static size_t put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return 4;
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- writer ------------------------------------------------------------ */

void rbddiff_writer_init(struct rbddiff_writer *w, rbddiff_write_fn write, void *arg)
{
    *w = (struct rbddiff_writer){.write = write, .arg = arg};
}

int rbddiff_write_header(struct rbddiff_writer *w)
{
    if (w->phase != 0)
        return -EINVAL;
    int r = w->write(w->arg, RBDDIFF_HEADER, RBDDIFF_HEADER_LEN);
    if (r == 0)
        w->phase = 1;
    return r;
}

static bool name_ok(const char *name)
{
    size_t n = strnlen(name, RBDDIFF_NAME_MAX + 1);
    return n > 0 && n <= RBDDIFF_NAME_MAX;
}

int rbddiff_write_name(struct rbddiff_writer *w, int tag, const char *name)
{
    if (w->phase != 1 || !name_ok(name) || (tag != RBDDIFF_FROM && tag != RBDDIFF_TO) ||
        (tag == RBDDIFF_FROM && (w->from || w->to)) || (tag == RBDDIFF_TO && w->to))
        return -EINVAL;
    uint8_t rec[RECORD_MAX];
    size_t n = strlen(name), at = 0;
    rec[at++] = (uint8_t)tag;
    at += put_le64(rec + at, 4 + n);
    at += put_le32(rec + at, (uint32_t)n);
    memcpy(rec + at, name, n);
    int r = w->write(w->arg, rec, at + n);
    if (r == 0)
        *(tag == RBDDIFF_FROM ? &w->from : &w->to) = true;
    return r;
}

int rbddiff_write_size(struct rbddiff_writer *w, uint64_t size)
{
    if (w->phase != 1 || size > RBDDIFF_SIZE_MAX)
        return -EINVAL;
    uint8_t rec[17] = {RBDDIFF_SIZE};
    put_le64(rec + 1, 8);
    put_le64(rec + 9, size);
    int r = w->write(w->arg, rec, sizeof rec);
    if (r == 0) {
        w->phase = 2;
        w->size = size;
    }
    return r;
}

/* The tag, length, offset and length of a w or z record. */
static int write_extent(struct rbddiff_writer *w, int tag, uint64_t offset, uint64_t len)
{
    if (w->phase != 2 || len == 0 || offset < w->next || offset > w->size || len > w->size - offset)
        return -EINVAL;
    uint8_t rec[25] = {(uint8_t)tag};
    put_le64(rec + 1, tag == RBDDIFF_WRITE ? 16 + len : 16);
    put_le64(rec + 9, offset);
    put_le64(rec + 17, len);
    int r = w->write(w->arg, rec, sizeof rec);
    if (r == 0)
        w->next = offset + len;
    return r;
}

int rbddiff_write_data(struct rbddiff_writer *w, uint64_t offset, const void *buf, size_t len)
{
    int r = write_extent(w, RBDDIFF_WRITE, offset, len);
    return r < 0 ? r : w->write(w->arg, buf, len);
}

int rbddiff_write_zero(struct rbddiff_writer *w, uint64_t offset, uint64_t len)
{
    return write_extent(w, RBDDIFF_ZERO, offset, len);
}

int rbddiff_write_end(struct rbddiff_writer *w)
{
    if (w->phase != 2)
        return -EINVAL;
    uint8_t e = RBDDIFF_END;
    int r = w->write(w->arg, &e, 1);
    if (r == 0)
        w->phase = 3;
    return r;
}

/* ---- reader ------------------------------------------------------------ */

void rbddiff_reader_init(struct rbddiff_reader *r, rbddiff_read_fn read, void *arg)
{
    *r = (struct rbddiff_reader){.read = read, .arg = arg};
}

static const char *tag_name(int tag)
{
    switch (tag) {
    case RBDDIFF_FROM:
        return "'f', from snapshot";
    case RBDDIFF_TO:
        return "'t', to snapshot";
    case RBDDIFF_PROTECTED:
        return "'p', protection";
    case RBDDIFF_SIZE:
        return "'s', size";
    case RBDDIFF_WRITE:
        return "'w', data";
    case RBDDIFF_ZERO:
        return "'z', zeroes";
    case RBDDIFF_END:
        return "'e', end";
    default:
        return NULL;
    }
}

static int fail(struct rbddiff_reader *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* "byte B: record N ('w', data): " then the reason; the byte is where
 * the current record starts. */
static int fail(struct rbddiff_reader *r, const char *fmt, ...)
{
    va_list ap;
    int n = 0;

    if (r->nrecords == 0)
        n = snprintf(r->error, sizeof r->error, "byte %" PRIu64 ": ", r->pos);
    else if (!tag_name(r->tag))
        n = snprintf(r->error, sizeof r->error, "byte %" PRIu64 ": record %" PRIu64 ": ",
                     r->record_pos, r->nrecords);
    else
        n = snprintf(r->error, sizeof r->error,
                     "byte %" PRIu64 ": record %" PRIu64 " (%s): ", r->record_pos, r->nrecords,
                     tag_name(r->tag));
    va_start(ap, fmt);
    vsnprintf(r->error + n, sizeof r->error - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* Reads exactly len bytes; *got says how many came before the end. */
static int read_exact(struct rbddiff_reader *r, void *buf, size_t len, size_t *got)
{
    *got = 0;
    while (*got < len) {
        ssize_t n = r->read(r->arg, (uint8_t *)buf + *got, len - *got);
        if (n < 0) {
            snprintf(r->error, sizeof r->error, "byte %" PRIu64 ": read: %s", r->pos + *got,
                     strerror((int)-n));
            return -1;
        }
        if (n == 0)
            return 0;
        *got += (size_t)n;
    }
    r->pos += len;
    return 1;
}

/* Reads len bytes of the current record, what: which field, for errors. */
static int read_field(struct rbddiff_reader *r, void *buf, size_t len, const char *what)
{
    size_t got;
    int k = read_exact(r, buf, len, &got);
    if (k == 0)
        return fail(r, "truncated in its %s: the stream ends after %zu of %zu bytes", what, got,
                    len);
    return k < 0 ? -1 : 0;
}

static int read_header(struct rbddiff_reader *r)
{
    char h[RBDDIFF_HEADER_LEN];
    size_t got;
    int k = read_exact(r, h, sizeof h, &got);
    if (k < 0)
        return -1;
    if (k == 0 && memcmp(h, RBDDIFF_HEADER, got) == 0)
        return fail(r, "truncated in the header \"rbd diff v2\\n\" (%zu of %d bytes)", got,
                    RBDDIFF_HEADER_LEN);
    if (k == 1 && memcmp(h, "rbd diff v1\n", sizeof h) == 0)
        return fail(r, "an \"rbd diff v1\" stream (rbd export-diff); this reads v2 only");
    if (k == 0 || memcmp(h, RBDDIFF_HEADER, sizeof h) != 0)
        return fail(r, "not an \"rbd diff v2\" stream (no header \"rbd diff v2\\n\")");
    r->header = true;
    return 0;
}

static int expect_length(struct rbddiff_reader *r, uint64_t len, uint64_t want)
{
    if (len != want)
        return fail(r, "length %" PRIu64 ", expected %" PRIu64, len, want);
    return 0;
}

static int metadata_allowed(struct rbddiff_reader *r, bool seen)
{
    if (seen)
        return fail(r, "a second one");
    if (r->data_seen)
        return fail(r, "after a data record (metadata comes first)");
    return 0;
}

static int read_name(struct rbddiff_reader *r, uint64_t len, struct rbddiff_record *rec)
{
    uint8_t n4[4];
    bool *seen = rec->tag == RBDDIFF_FROM ? &r->from : &r->to;

    if (metadata_allowed(r, *seen) < 0)
        return -1;
    if (rec->tag == RBDDIFF_FROM && r->to)
        return fail(r, "after the 't' record (Ceph writes 'f' first)");
    if (len < 4 + 1 || len > 4 + RBDDIFF_NAME_MAX)
        return fail(r, "length %" PRIu64 ": a name of 1 to %d bytes has 5 to %d", len,
                    RBDDIFF_NAME_MAX, 4 + RBDDIFF_NAME_MAX);
    if (read_field(r, n4, 4, "name length") < 0)
        return -1;
    uint32_t n = get_le32(n4);
    if (n != len - 4)
        return fail(r, "name length %" PRIu32 " disagrees with the record length %" PRIu64 "", n,
                    len);
    if (read_field(r, rec->name, n, "name") < 0)
        return -1;
    rec->name[n] = '\0';
    if (strlen(rec->name) != n)
        return fail(r, "the name holds a NUL byte");
    *seen = true;
    return 0;
}

static int read_protected(struct rbddiff_reader *r, uint64_t len, struct rbddiff_record *rec)
{
    uint8_t b;
    if (metadata_allowed(r, r->prot) < 0 || expect_length(r, len, 1) < 0 ||
        read_field(r, &b, 1, "flag") < 0)
        return -1;
    if (b > 1)
        return fail(r, "flag %u: not 0 or 1", b);
    rec->is_protected = b;
    r->prot = true;
    return 0;
}

static int read_size(struct rbddiff_reader *r, uint64_t len, struct rbddiff_record *rec)
{
    uint8_t b[8];
    if (metadata_allowed(r, r->has_size) < 0 || expect_length(r, len, 8) < 0 ||
        read_field(r, b, 8, "size") < 0)
        return -1;
    rec->size = get_le64(b);
    if (rec->size > RBDDIFF_SIZE_MAX)
        return fail(r, "size %" PRIu64 ": larger than any volume", rec->size);
    r->size = rec->size;
    r->has_size = true;
    return 0;
}

static int read_extent(struct rbddiff_reader *r, uint64_t len, struct rbddiff_record *rec)
{
    uint8_t b[16];
    if (!r->has_size)
        return fail(r, "before the size record 's'");
    if (len < 16)
        return fail(r, "length %" PRIu64 ": less than its offset and length (16 bytes)", len);
    if (rec->tag == RBDDIFF_ZERO && expect_length(r, len, 16) < 0)
        return -1;
    if (read_field(r, b, 16, "offset and length") < 0)
        return -1;
    rec->offset = get_le64(b);
    rec->length = get_le64(b + 8);
    if (rec->tag == RBDDIFF_WRITE && rec->length != len - 16)
        return fail(r,
                    "data length %" PRIu64 " disagrees with the record length %" PRIu64
                    " (16 + data length)",
                    rec->length, len);
    if (rec->length == 0)
        return fail(r, "an empty range at %" PRIu64, rec->offset);
    if (rec->offset > r->size || rec->length > r->size - rec->offset)
        return fail(r, "range %" PRIu64 "+%" PRIu64 " ends past the size %" PRIu64, rec->offset,
                    rec->length, r->size);
    if (rec->offset < r->next)
        return fail(r,
                    "range %" PRIu64 "+%" PRIu64 " starts before the previous record's end %" PRIu64
                    " (ranges come in increasing, non-overlapping order)",
                    rec->offset, rec->length, r->next);
    r->next = rec->offset + rec->length;
    r->data_seen = true;
    if (rec->tag == RBDDIFF_WRITE)
        r->data_left = r->data_len = rec->length;
    return 0;
}

static int read_end(struct rbddiff_reader *r)
{
    uint8_t b;
    size_t got;
    if (!r->has_size)
        return fail(r, "the stream has no size record 's'");
    int k = read_exact(r, &b, 1, &got);
    if (k < 0)
        return -1;
    if (k == 1) {
        r->pos--;
        return fail(r, "bytes follow the end record, at byte %" PRIu64, r->pos + 1);
    }
    r->ended = true;
    return 0;
}

static int skip_data(struct rbddiff_reader *r)
{
    uint8_t buf[4096];
    while (r->data_left > 0) {
        ssize_t n = rbddiff_read_data(r, buf, sizeof buf);
        if (n < 0)
            return -1;
    }
    return 0;
}

/* The tag, and the length if the tag has one. */
static int read_tag(struct rbddiff_reader *r, uint64_t *len)
{
    uint8_t t, b[8];
    size_t got;

    r->record_pos = r->pos;
    int k = read_exact(r, &t, 1, &got);
    if (k < 0)
        return -1;
    if (k == 0)
        return fail(r, "the stream ends without an end record 'e' (truncated)");
    r->nrecords++;
    r->tag = t;
    if (!tag_name(t)) {
        if (t >= 0x20 && t < 0x7f)
            return fail(r, "unknown tag 0x%02x ('%c')", t, t);
        return fail(r, "unknown tag 0x%02x", t);
    }
    if (t == RBDDIFF_END)
        return 0;
    if (read_field(r, b, 8, "length") < 0)
        return -1;
    *len = get_le64(b);
    return 0;
}

int rbddiff_next(struct rbddiff_reader *r, struct rbddiff_record *rec)
{
    uint64_t len = 0;

    if (r->ended) {
        snprintf(r->error, sizeof r->error, "byte %" PRIu64 ": read past the end record", r->pos);
        return -1;
    }
    if (!r->header && read_header(r) < 0)
        return -1;
    if (skip_data(r) < 0 || read_tag(r, &len) < 0)
        return -1;
    memset(rec, 0, sizeof *rec);
    rec->tag = r->tag;
    int k;
    switch (r->tag) {
    case RBDDIFF_FROM:
    case RBDDIFF_TO:
        k = read_name(r, len, rec);
        break;
    case RBDDIFF_PROTECTED:
        k = read_protected(r, len, rec);
        break;
    case RBDDIFF_SIZE:
        k = read_size(r, len, rec);
        break;
    case RBDDIFF_WRITE:
    case RBDDIFF_ZERO:
        k = read_extent(r, len, rec);
        break;
    default:
        k = read_end(r);
        break;
    }
    return k < 0 ? -1 : 1;
}

ssize_t rbddiff_read_data(struct rbddiff_reader *r, void *buf, size_t len)
{
    size_t want = len < r->data_left ? len : (size_t)r->data_left, got;
    if (want == 0)
        return 0;
    int k = read_exact(r, buf, want, &got);
    if (k < 0)
        return -1;
    if (k == 0)
        return fail(r,
                    "truncated in its data: the stream ends after %" PRIu64 " of %" PRIu64 " bytes",
                    r->data_len - r->data_left + got, r->data_len);
    r->data_left -= want;
    return (ssize_t)want;
}
