/* wire.h - the mirror link's wire format: what two nodes' mirror engines say
 * to each other over one TCP connection.
 *
 * Every message is a fixed 56-byte header followed by `payload` bytes. The
 * header is sent as the packed little-endian struct below (a big-endian build
 * is refused at compile time) and carries two CRC32Cs: one over itself, so a
 * corrupted length or offset is caught before it is acted on, and one over the
 * payload, so a flipped bit in replicated data never reaches a peer's disk.
 *
 * A connection starts with the handshake (HELLO, CHALLENGE, AUTH, WELCOME;
 * see auth.h), then carries requests (WRITE, ZERO, FLUSH, READ, CSUM, DIRTY,
 * EXTENTS, SNAP_READ, SNAP_EXTENTS, SNAP_CHANGED) each answered by one REPLY
 * echoing its id. Everything here is
 * pure: the connection code (elsewhere in mirror/) reads a header, checks
 * it with mwire_check_header() before trusting any field, reads the
 * payload, and checks that with mwire_check_payload(). A message that
 * fails either check ends the connection (docs/ARCHITECTURE.md, invariant
 * 6); the static reason names the problem for the log. An EXTENTS (or
 * SNAP_EXTENTS) reply's records are checked by the asker with
 * mwire_check_extents().
 */
#ifndef VSAN_MIRROR_WIRE_H
#define VSAN_MIRROR_WIRE_H

#include <stddef.h>
#include <stdint.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "mirror messages are sent as little-endian structs");

#define MWIRE_MAGIC 0x4d535356u /* "VSSM" */
#define MWIRE_VERSION 1
#define MWIRE_IO_MAX (32u << 20)    /* WRITE/READ length and any payload */
#define MWIRE_CSUM_CHUNK (1u << 20) /* a CSUM reply has one uint64 per chunk */
#define MWIRE_ERRNO_MAX 4095        /* a REPLY's arg is a positive errno */
#define MWIRE_EXTENTS_MAX 1024      /* records in an EXTENTS reply (8 KiB) */
/* SNAP_CHANGED: one bit per chunk of this size (store/snap.h's), over at
 * most MWIRE_CHANGED_MAX bytes of the volume (a 2 KiB reply). */
#define MWIRE_SNAP_CHUNK (64u << 10)
#define MWIRE_CHANGED_MAX (1u << 30)

enum mwire_type {
    MW_HELLO = 1, /* handshake, auth.h */
    MW_CHALLENGE = 2,
    MW_AUTH = 3,
    MW_WELCOME = 4,
    MW_WRITE = 16,   /* payload = data, payload == length */
    MW_ZERO = 17,    /* WRITE_ZEROES/TRIM as a command: no payload */
    MW_FLUSH = 18,   /* no payload, offset = length = 0 */
    MW_READ = 19,    /* no payload; the reply carries `length` bytes */
    MW_CSUM = 20,    /* no payload; the reply carries one uint64 per MWIRE_CSUM_CHUNK */
    MW_DIRTY = 21,   /* no payload; the reply carries a dirty bitmap's bytes */
    MW_EXTENTS = 22, /* no payload, arg = most records wanted; the reply
                      * carries 1 to arg struct mw_extent */
    /* A snapshot's data (store/snap.h), from a current copy. */
    MW_SNAP_READ = 23,    /* payload = struct mw_snap; the reply carries `length` bytes */
    MW_SNAP_EXTENTS = 24, /* payload = struct mw_snap, arg as EXTENTS; the reply as EXTENTS */
    MW_SNAP_CHANGED = 25, /* payload = struct mw_snap_changed; offset a multiple of
                           * MWIRE_SNAP_CHUNK, length 1 to MWIRE_CHANGED_MAX; the
                           * reply carries mwire_changed_reply_size(length) bytes */
    MW_REPLY = 32,        /* payload depends on the request; arg = errno */
};

enum mwire_flags {
    MW_F_FUA = 1,       /* WRITE, ZERO: durable before the reply */
    MW_F_MAY_TRIM = 2,  /* ZERO: a hole is fine */
    MW_F_RECONCILE = 4, /* WRITE: makes a lost region equal everywhere (reconcile.c) */
};

struct mwire_header {
    uint32_t magic;       /* MWIRE_MAGIC */
    uint16_t version;     /* MWIRE_VERSION */
    uint16_t type;        /* enum mwire_type */
    uint64_t id;          /* request id; a reply echoes its request's */
    uint32_t volume;      /* policing_volume_id(): first 32 bits of the uuid */
    uint32_t flags;       /* enum mwire_flags */
    uint64_t offset;      /* byte offset of the range */
    uint32_t length;      /* byte length of the range */
    uint32_t arg;         /* DIRTY: the node whose bitmap; EXTENTS: most records
                           * wanted; REPLY: positive errno, 0 = ok */
    uint32_t payload;     /* bytes that follow the header */
    uint32_t payload_crc; /* CRC32C of the payload (0 if none) */
    uint32_t header_crc;  /* CRC32C of the header with this field set to 0 */
    uint32_t cut;         /* WRITE, ZERO: the low 32 bits of the sender's cut
                           * version (mirror/cut.c); 0 on the others */
} __attribute__((packed));

_Static_assert(sizeof(struct mwire_header) == 56, "the mirror header is 56 bytes on the wire");

/* The handshake's payloads (what they mean: auth.h). Strings are NUL-padded
 * in fixed fields so every size is known from the type. */
#define MW_CLUSTER_MAX 64
#define MW_NONCE_LEN 32
#define MW_MAC_LEN 32 /* HMAC-SHA256 */

struct mw_hello {
    char cluster[MW_CLUSTER_MAX + 1];
    uint32_t nodeid;
    uint8_t nonce[MW_NONCE_LEN];
} __attribute__((packed));

struct mw_challenge {
    uint32_t nodeid;
    uint8_t nonce[MW_NONCE_LEN];
    uint8_t mac[MW_MAC_LEN];
} __attribute__((packed));

struct mw_auth {
    uint8_t mac[MW_MAC_LEN];
} __attribute__((packed));

/* One record of an EXTENTS reply: the allocation of the next `length`
 * bytes of the range asked, with the flags of NBD's base:allocation (a
 * hole that reads zeroes is HOLE | ZERO, data 0). The records follow each
 * other from the request's offset; together they cover a prefix of its
 * range. */
#define MW_EXTENT_HOLE 1u
#define MW_EXTENT_ZERO 2u

struct mw_extent {
    uint32_t length; /* > 0 */
    uint32_t flags;  /* MW_EXTENT_* */
} __attribute__((packed));

/* SNAP_READ and SNAP_EXTENTS: which snapshot (its cluster-wide id, >= 1). */
struct mw_snap {
    uint64_t id;
} __attribute__((packed));

/* SNAP_CHANGED: the chunks written between the cut of since (>= 1) and
 * that of upto (newer than since, or 0: the live volume). The reply's
 * bit i (byte i / 8, bit i % 8) is the chunk at offset + i x
 * MWIRE_SNAP_CHUNK; bits past the range are 0. */
struct mw_snap_changed {
    uint64_t since;
    uint64_t upto;
} __attribute__((packed));

/* Zeroes h and sets magic, version, type and id. */
void mwire_init(struct mwire_header *h, enum mwire_type type, uint64_t id);

/* Sets payload_crc over h->payload bytes of payload (NULL when there are
 * none), then header_crc. The last thing done before sending. */
void mwire_seal(struct mwire_header *h, const void *payload);

/* Everything the header alone can tell: framing, crc, type, flags, sizes and
 * range for the type. 0, or -EPROTO (not a message of ours: magic, version)
 * or -EBADMSG (a broken one) with *why naming the problem; why points to a
 * static or thread-local string valid until this thread's next call. */
int mwire_check_header(const struct mwire_header *h, const char **why);

/* The payload against the header's payload_crc, and a snapshot request's
 * ids (mw_snap, mw_snap_changed): 0 or -EBADMSG. Only after
 * mwire_check_header() passed, with h->payload bytes at payload. */
int mwire_check_payload(const struct mwire_header *h, const void *payload, const char **why);

/* Whether rep (already through mwire_check_header) answers req: same id, and
 * a payload of the size req's type calls for (none on an error). 0 or
 * -EBADMSG with *why set. */
int mwire_check_reply(const struct mwire_header *req, const struct mwire_header *rep,
                      const char **why);

/* The records of a successful EXTENTS or SNAP_EXTENTS reply to req
 * (through mwire_check_reply, so n is 1 to req->arg): each non-empty, with
 * known flags, and no more than req's range in all. 0 or -EBADMSG with
 * *why. */
int mwire_check_extents(const struct mwire_header *req, const struct mw_extent *e, size_t n,
                        const char **why);

/* The payload of a successful CSUM reply covering length bytes. */
uint32_t mwire_csum_reply_size(uint32_t length);
/* The payload of a successful SNAP_CHANGED reply covering length bytes. */
uint32_t mwire_changed_reply_size(uint32_t length);
/* The payload a request carries: WRITE its data, the SNAP_* requests
 * their struct; 0 for the others. The link sets h->payload from it. */
uint32_t mwire_request_payload(const struct mwire_header *h);

/* Standard CRC32C (iSCSI, Castagnoli): pass 0 to start, or a previous
 * result to continue over more bytes. */
uint32_t mwire_crc32c(uint32_t crc, const void *buf, size_t len);

/* One chunk's checksum for `vsan volume verify` (CRC-64/ECMA reflected). */
uint64_t mwire_csum64(const void *buf, size_t len);

/* "WRITE", "REPLY", ...; "?" for a type this version does not know. */
const char *mwire_type_name(int type);

#endif
