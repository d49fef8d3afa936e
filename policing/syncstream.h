/* syncstream.h - the state a sync round's winner hands to the group, as a
 * versioned stream of typed records cut into agreed pieces.
 *
 * The stream: a header (magic "VSSS", format version, the winner's
 * applied count and table version), then records, each a type and a
 * length followed by that many bytes. A volume record is followed by its
 * replica set; service entries and the region table are records of their
 * own. A reader skips a record of a type it does not know by its length,
 * so a later vsan adds record types (snapshots, grants, placement) without
 * changing the round; it refuses a stream of another format version.
 *
 * The pieces (PMSG_STATE_PART, messages.h): at most PMSG_PART_MAX bytes
 * each, so that no corosync message approaches the transport's limit;
 * every piece names the stream, its sequence number and the whole
 * stream's length and CRC32C. A receiver assembles them in order and uses
 * the stream only once the last piece is in and the CRC matches; it holds
 * at most PMSG_STREAM_MAX bytes. Integers are little-endian, as in
 * messages.h.
 */
#ifndef VSAN_POLICING_SYNCSTREAM_H
#define VSAN_POLICING_SYNCSTREAM_H

#include "policing/messages.h"
#include "policing/protocol.h"
#include "policing/services.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SYNC_MAGIC 0x53535356u /* "VSSS" */
#define SYNC_FORMAT 1

enum sync_record_type {
    SYNC_REC_VOLUME = 1,   /* struct sync_rec_volume */
    SYNC_REC_REPLICAS = 2, /* the replica set of the volume just before */
    SYNC_REC_SERVICE = 3,  /* one entry of the service address table */
    SYNC_REC_REGIONS = 4,  /* the region table: pol_snapshot's bytes */
    SYNC_REC_SNAPSHOT = 5, /* struct sync_rec_snapshot: one snapshot of a volume */
    SYNC_REC_CUT = 6,      /* u64: the id of the group's last committed cut */
    SYNC_REC_FENCE = 7,    /* struct sync_rec_fence: a volume fenced for a rollback */
    SYNC_REC_GRANT = 8,    /* struct sync_rec_grant: an identity's grant on a volume */
    SYNC_REC_OWNER = 9,    /* struct sync_rec_owner: who owns a volume */
    SYNC_REC_QUOTA = 10,   /* struct sync_rec_quota: an identity's quota */
    SYNC_REC_TOKEN = 11,   /* struct sync_rec_token: an API bearer token, hashed */
};

struct sync_header {
    uint32_t magic;
    uint16_t format;
    uint16_t reserved;
    uint64_t applied; /* messages the winner had applied since the change */
    uint64_t table_version;
} __attribute__((packed));

struct sync_record {
    uint16_t type;
    uint32_t length; /* of what follows */
} __attribute__((packed));

struct sync_rec_volume {
    char uuid[PMSG_UUID_LEN + 1];
    char name[PMSG_NAME_MAX + 1];
    uint64_t size;
    uint64_t generation;
    uint8_t fixed; /* placed: a joiner outside the set takes no copy */
} __attribute__((packed));

struct sync_rec_replica {
    uint32_t node;
    uint8_t state;
} __attribute__((packed));

/* Then count sync_rec_replica. */
struct sync_rec_replicas {
    char uuid[PMSG_UUID_LEN + 1]; /* the volume's, to catch misplaced records */
    uint32_t count;
} __attribute__((packed));

struct sync_rec_service {
    uint32_t owner;
    uint32_t holder;
    uint8_t manual;
    char addr[PMSG_SERVICE_ADDR_MAX];
} __attribute__((packed));

struct sync_rec_snapshot {
    char uuid[PMSG_UUID_LEN + 1]; /* the volume's */
    char name[PMSG_NAME_MAX + 1];
    uint64_t id;
    int64_t time;
    uint64_t size;
} __attribute__((packed));

struct sync_rec_fence {
    char uuid[PMSG_UUID_LEN + 1]; /* the volume's */
    uint32_t node;                /* the node rolling it back */
} __attribute__((packed));

struct sync_rec_grant {
    char uuid[PMSG_UUID_LEN + 1]; /* the volume's */
    uint8_t read_only;
    char identity[PMSG_IDENTITY_MAX + 1];
} __attribute__((packed));

struct sync_rec_owner {
    char uuid[PMSG_UUID_LEN + 1]; /* the volume's */
    char identity[PMSG_IDENTITY_MAX + 1];
} __attribute__((packed));

struct sync_rec_quota {
    uint64_t limit;
    uint32_t volumes;
    char identity[PMSG_IDENTITY_MAX + 1];
} __attribute__((packed));

struct sync_rec_token {
    char id[PMSG_TOKEN_ID_LEN + 1];
    int64_t created;
    uint8_t hash[PMSG_TOKEN_HASH_LEN];
    char identity[PMSG_IDENTITY_MAX + 1];
} __attribute__((packed));

/* What a stream carries. From sync_decode, vols is malloc'd (free it with
 * sync_state_free) and regions points into the stream decoded. */
struct sync_state {
    uint64_t applied, table_version;
    struct policing_volume *vols;
    size_t nvols;
    struct policing_snap *snaps; /* malloc'd by sync_decode too */
    size_t nsnaps;
    uint64_t last_cut;             /* 0 if the stream has none */
    struct policing_fence *fences; /* malloc'd by sync_decode too */
    size_t nfences;
    struct policing_grant *grants; /* malloc'd by sync_decode too */
    size_t ngrants;
    struct policing_idents idents; /* likewise */
    struct svc_table services;
    const void *regions; /* pol_snapshot bytes */
    size_t regions_len;
    size_t skipped; /* sync_decode: records of unknown types */
};

/* The stream for s, malloc'd: 0, -ENOMEM, or -EFBIG above
 * PMSG_STREAM_MAX. */
int sync_encode(const struct sync_state *s, void **out, size_t *len);
/* Fills s from a whole stream: 0, -EINVAL (malformed: another magic or
 * format, a record overrunning the stream, a known record too short, a
 * volume's strings unterminated, a replica set not after its volume,
 * no region table or two), -ENOMEM. Malformed fences (no node),
 * grants (no identity, read_only not 0 or 1), owners, quotas (limit 0)
 * and tokens (strings unterminated or empty) are dropped with an error
 * logged. Malformed service entries are
 * dropped with an error logged, never half-used. */
int sync_decode(const void *buf, size_t len, struct sync_state *s);
void sync_state_free(struct sync_state *s);

uint32_t sync_crc(const void *buf, size_t len);
/* How many pieces a stream of len bytes takes (at least one). */
uint32_t sync_pieces(size_t len);
/* Writes piece seq of the stream (of stream id `stream`, whose CRC is crc)
 * into msg, which has room for PMSG_PART_MAX bytes after its header;
 * returns the message's length. */
size_t sync_piece(const void *buf, size_t len, uint64_t stream, uint32_t crc, uint32_t seq,
                  struct pmsg_state_part *msg);

/* A stream being assembled from the winner's pieces. Zero-initialised is
 * empty. */
struct sync_assembly {
    bool active; /* a stream is being assembled */
    bool failed; /* stream `stream` failed: its later pieces are ignored */
    uint64_t stream;
    uint32_t next;       /* the sequence number expected */
    uint32_t total, crc; /* as the first piece said */
    unsigned char *buf;
    size_t len, cap;
};

/* Adds a piece that passed pmsg_check. 0: more to come (or a piece of a
 * failed stream, ignored); 1: the stream is whole, in a->buf (a->len
 * bytes) until the next reset; -EPROTO: out of sequence, or disagreeing
 * with the stream's first piece; -EBADMSG: the CRC does not match;
 * -EFBIG: longer than PMSG_STREAM_MAX; -ENOMEM. After an error, the
 * stream's remaining pieces are ignored; a new stream (sequence 0) starts
 * over. */
int sync_assembly_add(struct sync_assembly *a, const struct pmsg_state_part *p, size_t len);
/* Forgets any stream and frees its memory (a membership change). */
void sync_assembly_reset(struct sync_assembly *a);

#endif
