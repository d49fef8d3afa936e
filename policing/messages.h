/* messages.h - the policing protocol's messages, as multicast in agreed
 * order through the cluster transport.
 *
 * Every message is a fixed header followed by a body whose layout depends
 * on the type; integers little-endian (the structs are sent as they are,
 * so a big-endian build is refused at compile time), strings NUL-padded in
 * fixed fields (so a message is parsed without allocation and every length is
 * known). A message of an unknown version or type, or of the wrong
 * length, is dropped with a warning naming the sender: a node running a
 * newer vsan must not corrupt an older one's state.
 */
#ifndef VSAN_POLICING_MESSAGES_H
#define VSAN_POLICING_MESSAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "policing messages are sent as little-endian structs");

#define PMSG_MAGIC 0x4c505356u /* "VSPL" */
/* 4: the sync round's state goes out as a stream of STATE_PART pieces
 * (syncstream.h) instead of one STATE message; 6: heartbeats; 7: the cut
 * (snapshots); 8: grants (a node that dropped them would let clients in
 * that the others keep out); 9: a CREATE's owner, quotas and tokens (a
 * node that dropped them would let past a quota or a revoked token what
 * the others refuse); 10: a CREATE's placed replica set, and CAPACITY
 * (a node that dropped the set would give the volume a copy everywhere);
 * 11: a resize is a cut that carries the new size (CUT_BEGIN of kind
 * CONFIG; RESIZE is gone: a node that applied it at once would write past
 * the end the others still hold); 12: a CONFIG cut adds or removes a
 * replica, or replaces one (`op`, `from`: a node that took the cut for a
 * resize would change the size instead), and PROGRESS. A node drops every message of another
 * version, so nodes of different versions never complete a sync round
 * together: a cluster is upgraded all at once. */
#define PMSG_VERSION 12

enum pmsg_type {
    PMSG_HELLO = 1,      /* a member's endpoints */
    PMSG_REQUEST = 2,    /* region write priority wanted */
    PMSG_RELEASE = 3,    /* region write priority given up */
    PMSG_VOL_CREATE = 4, /* volume table changes */
    /* 5 was RESIZE until version 11: a CUT_BEGIN of kind CONFIG now. */
    PMSG_VOL_DELETE = 6,
    PMSG_OFFER = 7, /* sync round: my table's version */
    /* 8 was version 3's STATE, the winner's state in one message. */
    PMSG_REPLICA = 9,      /* a replica changes state (mirror/replicas.h) */
    PMSG_SERVICE = 10,     /* a service address moves (services.h) */
    PMSG_STATE_PART = 11,  /* sync round: a piece of the winner's state */
    PMSG_LOST = 12,        /* regions whose copies may differ (a cold start, a failed write) */
    PMSG_HEARTBEAT = 13,   /* renews the sender's read lease (protocol.h) */
    PMSG_CUT_BEGIN = 14,   /* a barrier on some volumes: hold, drain (cut.h) */
    PMSG_CUT_DRAINED = 15, /* the sender has drained the barrier's volumes */
    PMSG_CUT_ABORT = 16,   /* the sender's timer for the barrier expired */
    PMSG_GRANT = 17,       /* a volume's grant to an identity is set or revoked */
    PMSG_QUOTA = 18,       /* an identity's quota is set or removed */
    PMSG_TOKEN = 19,       /* an API bearer token is made or revoked */
    PMSG_CAPACITY = 20,    /* the sender's capacity and the space it uses */
    PMSG_OUTDATE = 21,     /* a replica missed a write another one took (a witness) */
    PMSG_PROGRESS = 22,    /* the copies the sender is filling, and how far it got */
};

#define PMSG_NAME_MAX 64
#define PMSG_UUID_LEN 36
#define PMSG_ADDR_MAX 128
#define PMSG_REPLICAS_MAX 32
/* A grant's identity: nbd-server/tls.h's NBD_TLS_IDENTITY_MAX, plus "dn:". */
#define PMSG_IDENTITY_MAX (512 + 3)
/* A bearer token (volume/tokens.h): its public id, in hex, and the
 * SHA-256 of its secret. */
#define PMSG_TOKEN_ID_LEN 16
#define PMSG_TOKEN_HASH_LEN 32
#define PMSG_SERVICE_ADDR_MAX 24 /* "A.B.C.D/PREFIX", NUL-padded */
/* enum replica_state's CURRENT (mirror/replicas.h), which the service
 * rules need without depending on the mirror engine. */
#define PMSG_REPLICA_CURRENT 1
#define PMSG_REPLICA_OUTDATED 2 /* and OUTDATED, which an OUTDATE sets */

struct pmsg_header {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t length; /* whole message, header included */
} __attribute__((packed));

struct pmsg_hello {
    struct pmsg_header h;
    char name[PMSG_NAME_MAX + 1];
    char nbd[PMSG_ADDR_MAX];
    char mirror[PMSG_ADDR_MAX];
    char service[PMSG_SERVICE_ADDR_MAX]; /* "" when the node has none */
} __attribute__((packed));

struct pmsg_region {
    struct pmsg_header h;
    uint32_t volume;
    uint64_t region;
} __attribute__((packed));

/* VOL_CREATE, VOL_DELETE share one layout; tag lets the
 * requesting node match the outcome to its waiting admin command. */
struct pmsg_volume {
    struct pmsg_header h;
    uint64_t tag;
    /* CREATE: the new volume's; DELETE: the volume's the
     * requester checked, so a change sent twice, or late, never reaches
     * another volume made since under the name. */
    char uuid[PMSG_UUID_LEN + 1];
    char name[PMSG_NAME_MAX + 1];
    uint64_t size; /* CREATE */
    /* CREATE: who owns the volume ("" for none, an admin's): it gets a
     * read-write grant, and the volume counts against its quota. */
    char owner[PMSG_IDENTITY_MAX + 1];
    /* CREATE: asked by a client (not an admin), which may create only
     * within a quota: an owner without one is refused. */
    uint8_t client;
    /* CREATE: the nodes placement chose (policing/placement.h), sorted;
     * nplaced 0: every member holds a copy, as before placement. */
    uint32_t nplaced;
    uint32_t placed[PMSG_REPLICAS_MAX];
} __attribute__((packed));

/* CAPACITY: what the sender offers and uses, in bytes; sent after every
 * membership change that adds a member (so a joiner hears everyone) and
 * when its use moved by more than 1% of its capacity or 1 GiB. The
 * figures are not part of the table: only the node that takes a create
 * reads them, to choose the set its CREATE carries. */
struct pmsg_capacity {
    struct pmsg_header h;
    uint64_t capacity;  /* [node] capacity, or its file system's size */
    uint64_t data;      /* what its volumes' data files take */
    uint64_t snapshots; /* what its snapshots' files take */
} __attribute__((packed));

/* PROGRESS: the copies the sender is filling (a resync, a move's or a
 * rebuild's full copy), every 2 s while it does, and once with n = 0 when
 * it is done. Not part of the table, like CAPACITY: each node keeps the
 * last one per sender for the volumes' descriptions. */
#define PMSG_PROGRESS_MAX 16
struct pmsg_progress_entry {
    uint32_t volume;            /* its id */
    uint64_t done, total, rate; /* bytes, bytes, bytes per second */
} __attribute__((packed));

struct pmsg_progress {
    struct pmsg_header h;
    uint32_t n; /* entries used, at most PMSG_PROGRESS_MAX */
    struct pmsg_progress_entry e[PMSG_PROGRESS_MAX];
} __attribute__((packed));

/* GRANT: what identity may do with volume name (and its snapshots, read
 * only) from now on; tag as in pmsg_volume. */
enum pmsg_grant_mode {
    PMSG_GRANT_REVOKE = 0, /* nothing: the grant goes */
    PMSG_GRANT_RW = 1,
    PMSG_GRANT_RO = 2,
};

struct pmsg_grant {
    struct pmsg_header h;
    uint64_t tag;
    uint8_t mode; /* enum pmsg_grant_mode */
    char name[PMSG_NAME_MAX + 1];
    char identity[PMSG_IDENTITY_MAX + 1];
} __attribute__((packed));

/* QUOTA: how many bytes of volumes identity may own from now on (0: no
 * quota), in how many volumes at most; tag as in pmsg_volume. */
struct pmsg_quota {
    struct pmsg_header h;
    uint64_t tag;
    uint64_t limit;
    uint32_t volumes;
    char identity[PMSG_IDENTITY_MAX + 1];
} __attribute__((packed));

/* TOKEN: a bearer token made (id, identity, hash, created) or revoked
 * (id only); tag as in pmsg_volume. */
enum pmsg_token_op {
    PMSG_TOKEN_CREATE = 1,
    PMSG_TOKEN_REVOKE = 2,
};

struct pmsg_token {
    struct pmsg_header h;
    uint64_t tag;
    uint8_t op; /* enum pmsg_token_op */
    char id[PMSG_TOKEN_ID_LEN + 1];
    int64_t created; /* seconds since the epoch, on the node that made it */
    uint8_t hash[PMSG_TOKEN_HASH_LEN];
    char identity[PMSG_IDENTITY_MAX + 1];
} __attribute__((packed));

/* A replica's new state. With first <= last, every node that holds a
 * current replica also records regions first..last dirty for node (the
 * writes it missed); tag lets the sender wait for it to come back. */
struct pmsg_replica {
    struct pmsg_header h;
    uint64_t tag;
    uint32_t volume; /* policing_volume_id */
    uint32_t node;
    uint8_t state; /* enum replica_state */
    uint64_t first, last;
} __attribute__((packed));

/* OUTDATE: from a writer without a current copy of its own (a diskless
 * node, or one whose copy failed): node missed a write (regions
 * first..last) that witness, a replica current in the sender's view,
 * acknowledged. Every node applies it as an outdate vouched for by
 * witness, and refuses it if witness is no longer current there (the
 * writer then fails its write): a writer never outdates a copy on the
 * word of none. tag as in pmsg_replica (the same sequence). */
struct pmsg_outdate {
    struct pmsg_header h;
    uint64_t tag;
    uint32_t volume;
    uint32_t node;
    uint32_t witness;
    uint64_t first, last;
} __attribute__((packed));

/* owner's service address is now served by holder; manual: moved by an
 * admin (`vsan failover`), so it stays there until a giveback. */
struct pmsg_service {
    struct pmsg_header h;
    uint32_t owner;
    uint32_t holder;
    uint8_t manual;
} __attribute__((packed));

/* HEARTBEAT: sent every POLICING_LEASE_BEAT_MS; when it comes back to its
 * sender in a view where the sender may read, the sender's read lease runs
 * to sent_ms + POLICING_LEASE_MS. sent_ms is the sender's monotonic clock
 * (only the sender reads it). */
struct pmsg_heartbeat {
    struct pmsg_header h;
    uint64_t sent_ms;
} __attribute__((packed));

/* LOST: regions the sender may have written on some replicas and not
 * others: its activity log (store/actlog.h) named them when it started
 * (a power cut), or a write to them just failed on every copy it went to
 * (policing_regions_doubtful). Every node marks them lost (reconciled
 * before their next write). This header, then n pmsg_lost_key,
 * n <= PMSG_LOST_MAX. */
#define PMSG_LOST_MAX 1024
struct pmsg_lost {
    struct pmsg_header h;
    uint32_t n;
} __attribute__((packed));

struct pmsg_lost_key {
    uint32_t volume;
    uint64_t region;
} __attribute__((packed));

/* What a cut does once every member has drained (policing/cut.h). */
enum pmsg_cut_kind {
    PMSG_CUT_SNAPSHOT = 1, /* cut snapshot `snapshot` of each volume */
    PMSG_CUT_DELETE = 2,   /* delete it (no writes held), unless a node reads it */
    PMSG_CUT_ROLLBACK = 3, /* fence the volume for a rollback to the snapshot by the
                            * sender, unless a node has clients on it */
    PMSG_CUT_UNFENCE = 4,  /* the sender's rollback ended: clients may open it again */
    PMSG_CUT_CONFIG = 5,   /* commit `config` to the cut's one volume (a configuration
                            * epoch: a resize, a replica added or removed) */
};

/* CUT_BEGIN of kind CONFIG: the configuration change its commit applies,
 * with the volume's writes held and drained on every node, checked again
 * there (the volume is still uuid; an owner's quota; the replica rules of
 * mirror/engine.h's mirror_replica_add and _remove). */
enum pmsg_config_op {
    PMSG_CONFIG_RESIZE = 0,  /* size, force, client */
    PMSG_CONFIG_ADD = 1,     /* a new replica on node, filled by a full resync */
    PMSG_CONFIG_REMOVE = 2,  /* node's replica dropped; min_current copies stay current */
    PMSG_CONFIG_REPLACE = 3, /* from's replica (not current) dropped and node's added at once:
                              * the automatic rebuild of a copy gone for good */
};

struct pmsg_cut_config {
    char uuid[PMSG_UUID_LEN + 1]; /* the volume's the requester checked */
    uint64_t size;                /* RESIZE: the new size */
    uint8_t force;                /* RESIZE: a shrink is allowed */
    uint8_t client;               /* RESIZE asked by a client: it may grow only within a quota */
    uint8_t op;                   /* enum pmsg_config_op */
    uint32_t node;                /* ADD, REMOVE: the replica's node */
    uint8_t min_current;          /* REMOVE: the current copies that must remain */
    uint32_t from;                /* REPLACE: the replica given up */
} __attribute__((packed));

/* CUT_BEGIN: a barrier (policing/cut.h) of kind on n volumes, named, for
 * the snapshot `snapshot` of each; id is unique (the sender's node id in
 * the high 32 bits), time the sender's wall clock (the snapshots' time,
 * the same everywhere). tag lets the sender match the outcome to its
 * waiting admin command. */
#define PMSG_CUT_VOLUMES 16
struct pmsg_cut_begin {
    struct pmsg_header h;
    uint64_t tag;
    uint64_t id;
    int64_t time;
    uint8_t kind;
    char snapshot[PMSG_NAME_MAX + 1];
    uint32_t n;
    char volumes[PMSG_CUT_VOLUMES][PMSG_NAME_MAX + 1];
    struct pmsg_cut_config config; /* CONFIG (n is 1); zero for the others */
} __attribute__((packed));

/* CUT_DRAINED, CUT_ABORT. busy (DRAINED): the sender's clients use what
 * the cut would change (a snapshot being read, for a delete): the cut
 * then ends with -EBUSY everywhere. */
struct pmsg_cut {
    struct pmsg_header h;
    uint64_t id;
    uint8_t busy;
} __attribute__((packed));

struct pmsg_offer {
    struct pmsg_header h;
    uint64_t table_version;
    uint32_t prev_members; /* the sender's group size before the change */
    uint8_t synced;        /* the sender had a current table before this round */
} __attribute__((packed));

/* A piece of the winner's state stream (syncstream.h): every piece of
 * one stream names it (the winner's count of streams sent), its place in
 * it (seq from 0), the stream's whole length and CRC32C; `last` marks the
 * final piece. The piece's bytes follow the header, 1 to PMSG_PART_MAX of
 * them (every piece but the last carries exactly PMSG_PART_MAX). */
#define PMSG_PART_MAX (256 * 1024)
/* The longest stream a node sends or assembles: 100,000 volumes at the
 * largest records (32 replicas: 331 bytes) take 31.6 MiB, and a million
 * regions held at once, each with 3 writers waiting (32 bytes), take 30.5
 * MiB; twice their sum leaves room for record types to come. So a receiver holds at
 * most this much, whatever the pieces claim. */
#define PMSG_STREAM_MAX (128u * 1024 * 1024)

struct pmsg_state_part {
    struct pmsg_header h;
    uint64_t stream;
    uint32_t seq;
    uint8_t last;
    uint32_t total; /* bytes in the whole stream */
    uint32_t crc;   /* CRC32C of the whole stream */
} __attribute__((packed));

void pmsg_init(struct pmsg_header *h, enum pmsg_type type, size_t length);

/* Checks the header and the length the type needs; returns the type, or
 * -1 (with why set to a static string) for a message to drop. */
int pmsg_check(const void *msg, size_t len, const char **why);

/* Copies a string into a fixed field; false if it does not fit. */
bool pmsg_set_string(char *field, size_t size, const char *s);
/* Whether a fixed field holds a NUL-terminated string. */
bool pmsg_string_ok(const char *field, size_t size);

#endif
