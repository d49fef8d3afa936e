/* rbddiff.h - Ceph's "rbd diff v2" stream: a writer and a strict reader.
 *
 * The format (ceph doc/dev/rbd-diff.rst, as src/tools/rbd/action/Export.cc
 * writes it): the header "rbd diff v2\n", then records, each a 1-byte tag
 * and a le64 length of what follows the length:
 *   'f' from snapshot   len = 4 + n: le32 n, n bytes of name
 *   't' to snapshot     len = 4 + n: le32 n, n bytes of name
 *   'p' protected       len = 1: u8 (Ceph writes it after 't'; read, ignored)
 *   's' size            len = 8: le64 size at the end snapshot
 *   'w' data            len = 16 + n: le64 offset, le64 n, n bytes
 *   'z' zeroes          len = 16: le64 offset, le64 length
 *   'e' end             no length
 * Ceph's writer puts every metadata record (f, t, p, s) before the data
 * records, and the data records in increasing, non-overlapping offsets
 * within the size (diff_iterate walks the image once, in order); the
 * reader refuses anything else, and also: a repeated f, t, p or s, a
 * stream without s, an empty name or one over RBDDIFF_NAME_MAX bytes or
 * holding a NUL, a w or z of 0 bytes, a length field that disagrees with
 * the record's fields, an unknown tag (v2 lets a reader skip one by its
 * length; we refuse it, since a record we don't understand may change
 * what the volume should hold), and bytes after the end record.
 *
 * Ceph reads v2 diffs inside `rbd import --export-format 2` streams;
 * `rbd import-diff` itself reads v1 only.
 *
 * Pure: no I/O of its own. The writer hands its bytes to a callback, the
 * reader pulls its bytes from one, and never allocates: a w record's data
 * is handed out in pieces as large as the caller's buffer.
 */
#ifndef VSAN_RBDDIFF_H
#define VSAN_RBDDIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define RBDDIFF_HEADER "rbd diff v2\n"
#define RBDDIFF_HEADER_LEN 12
#define RBDDIFF_NAME_MAX 64
/* A size, offset or end past this is refused: it could not be a volume. */
#define RBDDIFF_SIZE_MAX ((uint64_t)INT64_MAX)

enum {
    RBDDIFF_FROM = 'f',
    RBDDIFF_TO = 't',
    RBDDIFF_PROTECTED = 'p',
    RBDDIFF_SIZE = 's',
    RBDDIFF_WRITE = 'w',
    RBDDIFF_ZERO = 'z',
    RBDDIFF_END = 'e',
};

/* Writes len bytes; returns 0 or -errno. */
typedef int (*rbddiff_write_fn)(void *arg, const void *buf, size_t len);

/* Checks the order it is called in as the reader does, so that whatever it
 * writes reads back. Call begin, then the names (from before to), then
 * size, then data and zeroes in increasing offsets, then end. */
struct rbddiff_writer {
    rbddiff_write_fn write;
    void *arg;
    int phase; /* 0 nothing, 1 header written, 2 size written, 3 ended */
    bool from, to;
    uint64_t size, next; /* next: where the last data record ended */
};

void rbddiff_writer_init(struct rbddiff_writer *w, rbddiff_write_fn write, void *arg);
/* Each returns 0, -EINVAL when called out of order or with a bad
 * argument (a bad name, a range outside the size or before the last), or
 * the callback's error. */
int rbddiff_write_header(struct rbddiff_writer *w);
int rbddiff_write_name(struct rbddiff_writer *w, int tag, const char *name);
int rbddiff_write_size(struct rbddiff_writer *w, uint64_t size);
int rbddiff_write_data(struct rbddiff_writer *w, uint64_t offset, const void *buf, size_t len);
int rbddiff_write_zero(struct rbddiff_writer *w, uint64_t offset, uint64_t len);
int rbddiff_write_end(struct rbddiff_writer *w);

/* Reads up to len bytes into buf: returns how many (fewer only at the end
 * of the input, 0 there) or -errno. */
typedef ssize_t (*rbddiff_read_fn)(void *arg, void *buf, size_t len);

struct rbddiff_record {
    int tag;
    char name[RBDDIFF_NAME_MAX + 1]; /* f, t */
    bool is_protected;               /* p */
    uint64_t size;                   /* s */
    uint64_t offset, length;         /* w, z */
};

struct rbddiff_reader {
    rbddiff_read_fn read;
    void *arg;
    uint64_t pos;      /* bytes consumed from the input */
    uint64_t nrecords; /* records started, the current one included */
    uint64_t record_pos;
    int tag;                      /* the current record's */
    uint64_t data_len, data_left; /* of the current w record; not yet handed out */
    bool header, from, to, prot, has_size, data_seen, ended;
    uint64_t size, next;
    char error[256]; /* why the last call failed */
};

void rbddiff_reader_init(struct rbddiff_reader *r, rbddiff_read_fn read, void *arg);
/* The next record, the header first read when needed; the rest of a w
 * record's data is skipped. Returns 1 with *rec filled (tag RBDDIFF_END
 * last, after which the input was seen to end), or -1 with r->error set:
 * "byte 1234: record 5 ('w'): data at 4096+512 overlaps the previous
 * record, which ended at 8192". */
int rbddiff_next(struct rbddiff_reader *r, struct rbddiff_record *rec);
/* The current w record's data, in order: returns the bytes put into buf
 * (at most len; 0 once all of it was handed out) or -1 with r->error. */
ssize_t rbddiff_read_data(struct rbddiff_reader *r, void *buf, size_t len);

#endif
