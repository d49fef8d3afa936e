/* services.h - who holds which node's service address: the agreed table
 * and the deterministic rules that move addresses, with no I/O.
 *
 * A node may have a service address, the one address its clients know.
 * Every node keeps the same table (owner node -> its address, the node
 * holding it now, whether an admin moved it), changed only by the agreed
 * stream: a member's announcement (HELLO) records its address, a SERVICE
 * message moves it, a sync round's STATE replaces the table. From that
 * table and the view, the functions here decide
 *
 *   - svc_plan: what the coordinator (the lowest node id of a quorate
 *     view) should send: an address whose holder left goes to the first
 *     member after its owner in ascending id order (wrapping); an address
 *     comes home once its owner is a member with every replica current,
 *     unless an admin moved it away (manual);
 *   - svc_wanted: which addresses this node should hold now: those the
 *     table gives it, only with quorum, and its own only once it is
 *     current.
 *
 * policing/protocol.c applies the messages and calls these; vsan/service.c
 * adds and removes the addresses. tests/unit/test_services.c covers them.
 */
#ifndef VSAN_POLICING_SERVICES_H
#define VSAN_POLICING_SERVICES_H

#include "policing/cluster.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SVC_ADDR_MAX 24 /* "255.255.255.255/32" and its NUL, with room */

struct svc_entry {
    uint32_t owner;
    char addr[SVC_ADDR_MAX]; /* "A.B.C.D/PREFIX", as its owner announced it */
    uint32_t holder;         /* the node serving it */
    bool manual;             /* moved by `vsan failover`: stays until giveback */
};

struct svc_table {
    struct svc_entry v[CLUSTER_NODES_MAX];
    size_t n;
};

/* A SERVICE message to send: owner's address goes to holder. */
struct svc_move {
    uint32_t owner, holder;
    bool manual;
};

/* An address this node should hold. */
struct svc_hold {
    uint32_t owner;
    char addr[SVC_ADDR_MAX];
};

/* Parses "A.B.C.D/PREFIX" (IPv4, prefix 1..32, nothing else): 0 or
 * -EINVAL. addr and prefix may be NULL. */
int svc_addr_parse(const char *s, struct in_addr *addr, unsigned *prefix);

const struct svc_entry *svc_find(const struct svc_table *t, uint32_t owner);

/* owner announced addr ("" for none). A new address starts with its owner
 * as holder; an address already in the table keeps its holder. -ENOSPC
 * when the table is full. */
int svc_announce(struct svc_table *t, uint32_t owner, const char *addr);

/* A SERVICE message: -ENOENT if owner has no address. */
int svc_apply(struct svc_table *t, uint32_t owner, uint32_t holder, bool manual);

/* The first of members (any order) after owner in ascending id order,
 * wrapping, other than owner; 0 if there is none. */
uint32_t svc_successor(const uint32_t *members, size_t n, uint32_t owner);

/* What the coordinator sends now, given the members and which of them
 * are current (every replica on it current); at most t->n moves. */
size_t svc_plan(const struct svc_table *t, const uint32_t *members, size_t n,
                const uint32_t *current, size_t ncurrent, struct svc_move *out);

/* The addresses self should hold: none without quorum; its own only when
 * self_current. Returns how many were written to out (at most t->n). */
size_t svc_wanted(const struct svc_table *t, uint32_t self, bool quorate, bool self_current,
                  struct svc_hold *out);

#endif
