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
#define PMSG_VERSION 3

enum pmsg_type {
    PMSG_HELLO = 1,      /* a member's endpoints */
    PMSG_REQUEST = 2,    /* region write priority wanted */
    PMSG_RELEASE = 3,    /* region write priority given up */
    PMSG_VOL_CREATE = 4, /* volume table changes */
    PMSG_VOL_RESIZE = 5,
    PMSG_VOL_DELETE = 6,
    PMSG_OFFER = 7,    /* sync round: my table's version */
    PMSG_STATE = 8,    /* sync round: the winner's state */
    PMSG_REPLICA = 9,  /* a replica changes state (mirror/replicas.h) */
    PMSG_SERVICE = 10, /* a service address moves (services.h) */
};

#define PMSG_NAME_MAX 64
#define PMSG_UUID_LEN 36
#define PMSG_ADDR_MAX 128
#define PMSG_REPLICAS_MAX 32
#define PMSG_SERVICE_ADDR_MAX 24 /* "A.B.C.D/PREFIX", NUL-padded */
/* enum replica_state's CURRENT (mirror/replicas.h), which the service
 * rules need without depending on the mirror engine. */
#define PMSG_REPLICA_CURRENT 1

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

/* VOL_CREATE, VOL_RESIZE, VOL_DELETE share one layout; tag lets the
 * requesting node match the outcome to its waiting admin command. */
struct pmsg_volume {
    struct pmsg_header h;
    uint64_t tag;
    char uuid[PMSG_UUID_LEN + 1]; /* CREATE only */
    char name[PMSG_NAME_MAX + 1];
    uint64_t size; /* CREATE, RESIZE */
    uint8_t force; /* RESIZE: shrink allowed */
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

/* owner's service address is now served by holder; manual: moved by an
 * admin (`vsan failover`), so it stays there until a giveback. */
struct pmsg_service {
    struct pmsg_header h;
    uint32_t owner;
    uint32_t holder;
    uint8_t manual;
} __attribute__((packed));

struct pmsg_offer {
    struct pmsg_header h;
    uint64_t table_version;
    uint32_t prev_members; /* the sender's group size before the change */
    uint8_t synced;        /* the sender had a current table before this round */
} __attribute__((packed));

/* STATE: this header, then nvolumes pmsg_state_volume, then nservices
 * pmsg_state_service, then the region table (pol_snapshot bytes) up to
 * length. */
struct pmsg_state {
    struct pmsg_header h;
    uint64_t applied; /* messages the winner had applied since the confchg */
    uint64_t table_version;
    uint32_t nvolumes;
    uint32_t nservices;
} __attribute__((packed));

struct pmsg_state_service {
    uint32_t owner;
    uint32_t holder;
    uint8_t manual;
    char addr[PMSG_SERVICE_ADDR_MAX];
} __attribute__((packed));

struct pmsg_state_volume {
    char uuid[PMSG_UUID_LEN + 1];
    char name[PMSG_NAME_MAX + 1];
    uint64_t size;
    uint64_t generation;
    uint32_t nreplicas;
    struct {
        uint32_t node;
        uint8_t state;
    } __attribute__((packed)) replicas[PMSG_REPLICAS_MAX];
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
