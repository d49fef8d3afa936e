/* wire.c - building and checking mirror-link messages (wire.h).
 *
 * The checks are ordered so that each one may rely on the ones before it:
 * magic and version say the bytes are our header at all, the header crc says
 * its fields are the ones the peer sent, and only then are the fields judged
 * against the rules of their type. Reasons that carry a number are formatted
 * into a thread-local buffer, so the connection threads never share one.
 */
#include "mirror/wire.h"

#include <isa-l/crc.h>
#include <isa-l/crc64.h>

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define MIB (1u << 20)
#define CRC_STEP_MAX (1 << 30) /* crc32_iscsi takes an int length */

static __thread char why_buf[96];

static int fail(int err, const char **why, const char *reason)
{
    *why = reason;
    return err;
}

static int failf(int err, const char **why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int failf(int err, const char **why, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why_buf, sizeof why_buf, fmt, ap);
    va_end(ap);
    *why = why_buf;
    return err;
}

uint32_t mwire_crc32c(uint32_t crc, const void *buf, size_t len)
{
    /* ISA-L works on the raw register: the standard pre- and post-inversion
     * are ours to apply, which also makes chaining over pieces work. */
    while (len > 0) {
        int n = len > CRC_STEP_MAX ? CRC_STEP_MAX : (int)len;
        crc = ~crc32_iscsi((unsigned char *)buf, n, ~crc);
        buf = (const unsigned char *)buf + n;
        len -= n;
    }
    return crc;
}

uint64_t mwire_csum64(const void *buf, size_t len)
{
    return crc64_ecma_refl(0, buf, len);
}

const char *mwire_type_name(int type)
{
    switch (type) {
    case MW_HELLO:
        return "HELLO";
    case MW_CHALLENGE:
        return "CHALLENGE";
    case MW_AUTH:
        return "AUTH";
    case MW_WELCOME:
        return "WELCOME";
    case MW_WRITE:
        return "WRITE";
    case MW_ZERO:
        return "ZERO";
    case MW_FLUSH:
        return "FLUSH";
    case MW_READ:
        return "READ";
    case MW_CSUM:
        return "CSUM";
    case MW_DIRTY:
        return "DIRTY";
    case MW_EXTENTS:
        return "EXTENTS";
    case MW_SNAP_READ:
        return "SNAP_READ";
    case MW_SNAP_EXTENTS:
        return "SNAP_EXTENTS";
    case MW_SNAP_CHANGED:
        return "SNAP_CHANGED";
    case MW_REPLY:
        return "REPLY";
    default:
        return "?";
    }
}

void mwire_init(struct mwire_header *h, enum mwire_type type, uint64_t id)
{
    memset(h, 0, sizeof *h);
    h->magic = MWIRE_MAGIC;
    h->version = MWIRE_VERSION;
    h->type = (uint16_t)type;
    h->id = id;
}

static uint32_t header_crc(const struct mwire_header *h)
{
    struct mwire_header copy = *h;
    copy.header_crc = 0;
    return mwire_crc32c(0, &copy, sizeof copy);
}

void mwire_seal(struct mwire_header *h, const void *payload)
{
    h->payload_crc = h->payload > 0 ? mwire_crc32c(0, payload, h->payload) : 0;
    h->header_crc = header_crc(h);
}

uint32_t mwire_csum_reply_size(uint32_t length)
{
    uint32_t chunks = length / MWIRE_CSUM_CHUNK + (length % MWIRE_CSUM_CHUNK != 0);
    return chunks * (uint32_t)sizeof(uint64_t);
}

uint32_t mwire_changed_reply_size(uint32_t length)
{
    uint32_t chunks = length / MWIRE_SNAP_CHUNK + (length % MWIRE_SNAP_CHUNK != 0);
    return chunks / 8 + (chunks % 8 != 0);
}

uint32_t mwire_request_payload(const struct mwire_header *h)
{
    switch (h->type) {
    case MW_WRITE:
        return h->length;
    case MW_SNAP_READ:
    case MW_SNAP_EXTENTS:
        return sizeof(struct mw_snap);
    case MW_SNAP_CHANGED:
        return sizeof(struct mw_snap_changed);
    default:
        return 0;
    }
}

/* The handshake payload a type must carry; 0 for the other types. */
static size_t handshake_size(int type)
{
    switch (type) {
    case MW_HELLO:
        return sizeof(struct mw_hello);
    case MW_CHALLENGE:
        return sizeof(struct mw_challenge);
    case MW_AUTH:
        return sizeof(struct mw_auth);
    default:
        return 0;
    }
}

static bool is_handshake(int type)
{
    return type >= MW_HELLO && type <= MW_WELCOME;
}

static uint32_t allowed_flags(int type)
{
    switch (type) {
    case MW_WRITE:
        return MW_F_FUA | MW_F_RECONCILE;
    case MW_ZERO:
        return MW_F_FUA | MW_F_MAY_TRIM;
    default:
        return 0;
    }
}

static int check_handshake(const struct mwire_header *h, const char **why)
{
    const char *name = mwire_type_name(h->type);
    size_t want = handshake_size(h->type);
    if (h->payload != want)
        return failf(-EBADMSG, why, "%s payload is %u bytes, not %zu", name, h->payload, want);
    if (h->offset != 0 || h->length != 0)
        return failf(-EBADMSG, why, "%s carries a range", name);
    return 0;
}

/* WRITE, ZERO, READ, CSUM: a non-empty range; only WRITE carries data. */
static int check_io(const struct mwire_header *h, const char **why)
{
    const char *name = mwire_type_name(h->type);
    if (h->length == 0)
        return failf(-EBADMSG, why, "%s of length 0", name);
    if ((h->type == MW_WRITE || h->type == MW_READ) && h->length > MWIRE_IO_MAX)
        return failf(-EBADMSG, why, "%s length %u over the %u MiB limit", name, h->length,
                     MWIRE_IO_MAX / MIB);
    if (h->type == MW_WRITE && h->payload != h->length)
        return fail(-EBADMSG, why, "WRITE payload does not match its length");
    if (h->type != MW_WRITE && h->payload != 0)
        return failf(-EBADMSG, why, "%s carries a payload", name);
    return 0;
}

/* A range to describe, and how many records the asker takes; SNAP_EXTENTS
 * says of which snapshot. */
static int check_extents_request(const struct mwire_header *h, const char **why)
{
    const char *name = mwire_type_name(h->type);
    if (h->length == 0)
        return failf(-EBADMSG, why, "%s of length 0", name);
    if (h->type == MW_EXTENTS && h->payload != 0)
        return fail(-EBADMSG, why, "EXTENTS carries a payload");
    if (h->type == MW_SNAP_EXTENTS && h->payload != sizeof(struct mw_snap))
        return failf(-EBADMSG, why, "SNAP_EXTENTS payload is %u bytes, not %zu", h->payload,
                     sizeof(struct mw_snap));
    if (h->arg == 0 || h->arg > MWIRE_EXTENTS_MAX)
        return failf(-EBADMSG, why, "%s asks for %u records, not 1 to %u", name, h->arg,
                     MWIRE_EXTENTS_MAX);
    return 0;
}

/* A range of a snapshot to read: as READ, with the snapshot's id. */
static int check_snap_read(const struct mwire_header *h, const char **why)
{
    if (h->length == 0)
        return fail(-EBADMSG, why, "SNAP_READ of length 0");
    if (h->length > MWIRE_IO_MAX)
        return failf(-EBADMSG, why, "SNAP_READ length %u over the %u MiB limit", h->length,
                     MWIRE_IO_MAX / MIB);
    if (h->payload != sizeof(struct mw_snap))
        return failf(-EBADMSG, why, "SNAP_READ payload is %u bytes, not %zu", h->payload,
                     sizeof(struct mw_snap));
    return 0;
}

/* A chunk-aligned range, bounded so the reply's bits stay small. */
static int check_snap_changed(const struct mwire_header *h, const char **why)
{
    if (h->offset % MWIRE_SNAP_CHUNK != 0)
        return failf(-EBADMSG, why, "SNAP_CHANGED offset %llu is not a multiple of %u",
                     (unsigned long long)h->offset, MWIRE_SNAP_CHUNK);
    if (h->length == 0 || h->length > MWIRE_CHANGED_MAX)
        return failf(-EBADMSG, why, "SNAP_CHANGED length %u, not 1 to %u", h->length,
                     MWIRE_CHANGED_MAX);
    if (h->payload != sizeof(struct mw_snap_changed))
        return failf(-EBADMSG, why, "SNAP_CHANGED payload is %u bytes, not %zu", h->payload,
                     sizeof(struct mw_snap_changed));
    return 0;
}

static int check_reply(const struct mwire_header *h, const char **why)
{
    if (h->arg > MWIRE_ERRNO_MAX)
        return failf(-EBADMSG, why, "REPLY errno %u out of range", h->arg);
    if (h->arg != 0 && h->payload != 0)
        return fail(-EBADMSG, why, "error REPLY carries a payload");
    return 0;
}

static int check_type(const struct mwire_header *h, const char **why)
{
    switch (h->type) {
    case MW_HELLO:
    case MW_CHALLENGE:
    case MW_AUTH:
    case MW_WELCOME:
        return check_handshake(h, why);
    case MW_WRITE:
    case MW_ZERO:
    case MW_READ:
    case MW_CSUM:
        return check_io(h, why);
    case MW_FLUSH:
        if (h->payload != 0 || h->offset != 0 || h->length != 0)
            return fail(-EBADMSG, why, "FLUSH carries a range or payload");
        return 0;
    case MW_DIRTY:
        if (h->payload != 0)
            return fail(-EBADMSG, why, "DIRTY carries a payload");
        return 0;
    case MW_EXTENTS:
    case MW_SNAP_EXTENTS:
        return check_extents_request(h, why);
    case MW_SNAP_READ:
        return check_snap_read(h, why);
    case MW_SNAP_CHANGED:
        return check_snap_changed(h, why);
    case MW_REPLY:
        return check_reply(h, why);
    default:
        return failf(-EBADMSG, why, "unknown type %u", h->type);
    }
}

static int check_payload_size(uint32_t payload, const char **why)
{
    if (payload % MIB == 0)
        return failf(-EBADMSG, why, "payload %u MiB over the %u MiB limit", payload / MIB,
                     MWIRE_IO_MAX / MIB);
    return failf(-EBADMSG, why, "payload %u bytes over the %u MiB limit", payload,
                 MWIRE_IO_MAX / MIB);
}

int mwire_check_header(const struct mwire_header *h, const char **why)
{
    if (h->magic != MWIRE_MAGIC)
        return fail(-EPROTO, why, "bad magic");
    if (h->version != MWIRE_VERSION)
        return failf(-EPROTO, why, "unknown version %u", h->version);
    if (h->header_crc != header_crc(h))
        return fail(-EBADMSG, why, "header crc mismatch");
    if (h->cut != 0 && h->type != MW_WRITE && h->type != MW_ZERO)
        return fail(-EBADMSG, why, "cut field set on a message that carries none");
    if (mwire_type_name(h->type)[0] == '?')
        return failf(-EBADMSG, why, "unknown type %u", h->type);
    if (h->payload > MWIRE_IO_MAX)
        return check_payload_size(h->payload, why);
    if (h->payload == 0 && h->payload_crc != 0)
        return fail(-EBADMSG, why, "payload crc set without a payload");
    if (h->flags & ~allowed_flags(h->type))
        return failf(-EBADMSG, why, "flags 0x%x not valid for %s", h->flags,
                     mwire_type_name(h->type));
    /* Ranges end up as off_t in pread/pwrite, so they must fit in one. */
    if (h->offset > INT64_MAX || h->length > INT64_MAX - h->offset)
        return fail(-EBADMSG, why, "range overflows");
    return check_type(h, why);
}

/* The ids of a snapshot request (its payload's size already checked). */
static int check_snap_ids(const struct mwire_header *h, const void *payload, const char **why)
{
    const char *name = mwire_type_name(h->type);
    if (h->type == MW_SNAP_READ || h->type == MW_SNAP_EXTENTS) {
        struct mw_snap s;
        memcpy(&s, payload, sizeof s);
        return s.id == 0 ? failf(-EBADMSG, why, "%s of snapshot 0", name) : 0;
    }
    struct mw_snap_changed c;
    memcpy(&c, payload, sizeof c);
    if (c.since == 0)
        return fail(-EBADMSG, why, "SNAP_CHANGED since snapshot 0");
    if (c.upto != 0 && c.upto <= c.since)
        return failf(-EBADMSG, why, "SNAP_CHANGED up to snapshot %llu, not after %llu",
                     (unsigned long long)c.upto, (unsigned long long)c.since);
    return 0;
}

int mwire_check_payload(const struct mwire_header *h, const void *payload, const char **why)
{
    uint32_t crc = h->payload > 0 ? mwire_crc32c(0, payload, h->payload) : 0;
    if (crc != h->payload_crc)
        return fail(-EBADMSG, why, "payload crc mismatch");
    if (h->type == MW_SNAP_READ || h->type == MW_SNAP_EXTENTS || h->type == MW_SNAP_CHANGED)
        return check_snap_ids(h, payload, why);
    return 0;
}

/* The payload a successful reply to req carries; -1 when any size will do. */
static int64_t reply_payload(const struct mwire_header *req)
{
    switch (req->type) {
    case MW_READ:
    case MW_SNAP_READ:
        return req->length;
    case MW_CSUM:
        return mwire_csum_reply_size(req->length);
    case MW_SNAP_CHANGED:
        return mwire_changed_reply_size(req->length);
    case MW_DIRTY:
        return -1;
    default:
        return 0;
    }
}

/* 1 to req->arg whole records. */
static int check_extents_reply_size(const struct mwire_header *req, const struct mwire_header *rep,
                                    const char **why)
{
    size_t rec = sizeof(struct mw_extent);
    if (rep->payload % rec != 0 || rep->payload == 0 || rep->payload / rec > req->arg)
        return failf(-EBADMSG, why, "REPLY to %s carries %u bytes, not 1 to %u records",
                     mwire_type_name(req->type), rep->payload, req->arg);
    return 0;
}

int mwire_check_reply(const struct mwire_header *req, const struct mwire_header *rep,
                      const char **why)
{
    if (rep->type != MW_REPLY)
        return failf(-EBADMSG, why, "expected a REPLY to %s, got %s", mwire_type_name(req->type),
                     mwire_type_name(rep->type));
    if (rep->id != req->id)
        return failf(-EBADMSG, why, "REPLY id %llu does not match %s %llu",
                     (unsigned long long)rep->id, mwire_type_name(req->type),
                     (unsigned long long)req->id);
    if (rep->arg != 0)
        return 0;
    /* The handshake succeeds with CHALLENGE and WELCOME, so a REPLY there
     * only ever refuses. */
    if (is_handshake(req->type))
        return failf(-EBADMSG, why, "REPLY to %s without an error", mwire_type_name(req->type));
    if (req->type == MW_EXTENTS || req->type == MW_SNAP_EXTENTS)
        return check_extents_reply_size(req, rep, why);
    int64_t want = reply_payload(req);
    if (want >= 0 && rep->payload != want)
        return failf(-EBADMSG, why, "REPLY to %s carries %u bytes, not %lld",
                     mwire_type_name(req->type), rep->payload, (long long)want);
    return 0;
}

int mwire_check_extents(const struct mwire_header *req, const struct mw_extent *e, size_t n,
                        const char **why)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        if (e[i].length == 0)
            return failf(-EBADMSG, why, "EXTENTS record %zu is empty", i);
        if (e[i].flags & ~(MW_EXTENT_HOLE | MW_EXTENT_ZERO))
            return failf(-EBADMSG, why, "EXTENTS record %zu has flags 0x%x", i, e[i].flags);
        sum += e[i].length;
        if (sum > req->length)
            return failf(-EBADMSG, why, "EXTENTS records pass the %u bytes asked", req->length);
    }
    return 0;
}
