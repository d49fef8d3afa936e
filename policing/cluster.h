/* cluster.h - the cluster transport under the policing protocol.
 *
 * The policing protocol is a deterministic state machine replicated on
 * every node; it needs from the layer below exactly this: every member
 * delivers the same messages and membership changes in the same order
 * (virtual synchrony: corosync CPG with CPG_TYPE_AGREED), a node id, and
 * whether this partition has quorum. Two drivers provide it:
 *
 *  - cluster_corosync: libcpg for the group, libvotequorum for quorum,
 *    libcmap for the nodelist, so corosync.conf stays the one source of
 *    membership;
 *  - cluster_local: an in-process group of one, always quorate, for the
 *    standalone mode and for unit tests; it delivers through the same
 *    callbacks, from the same loop, so both modes run the same code.
 *
 * Threading: init, fini and every callback run on the daemon's main
 * thread (the qb_loop the driver registers its descriptors with). send()
 * may be called from any thread, also from a callback; fini may not be
 * called from a callback.
 */
#ifndef VSAN_CLUSTER_H
#define VSAN_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <qb/qbloop.h>

#define CLUSTER_NAME_MAX 64
#define CLUSTER_ADDR_MAX 64
#define CLUSTER_NODES_MAX 32
#define CLUSTER_MSG_MAX (1024 * 1024) /* larger sends get -EMSGSIZE */

/* Why a member left a configuration, as CPG reports it. */
enum cluster_leave_reason {
    CLUSTER_LEFT = 1,     /* left the group cleanly (cpg_leave) */
    CLUSTER_NODEDOWN = 2, /* its node left the corosync membership */
    CLUSTER_PROCDOWN = 3, /* its process died (seen within milliseconds) */
};

struct cluster_member {
    uint32_t nodeid;
    uint32_t pid;
    enum cluster_leave_reason reason; /* only in the left list */
};

/* A node of corosync's nodelist (cmap nodelist.node.N.*). */
struct cluster_node {
    uint32_t nodeid;
    char name[CLUSTER_NAME_MAX];
    char addr[CLUSTER_ADDR_MAX]; /* ring0_addr */
};

struct cluster_events {
    /* A message multicast by (nodeid, pid), this process included, in the
     * agreed order every member sees. msg is valid during the call only. */
    void (*deliver)(void *ctx, uint32_t nodeid, uint32_t pid, const void *msg, size_t len);
    /* The group's membership changed: the members now (this one included,
     * sorted by nodeid), who left and who joined. Ordered with deliver():
     * a message sent before the change is delivered before it everywhere. */
    void (*confchg)(void *ctx, const struct cluster_member *members, size_t n,
                    const struct cluster_member *left, size_t nleft,
                    const struct cluster_member *joined, size_t njoined);
    /* This partition gained or lost quorum. Also called once at init, from
     * the loop after init has returned, and with false when the
     * connection to corosync is lost (that is final: send() then fails
     * with -ENOTCONN). */
    void (*quorum)(void *ctx, bool quorate);
};

struct cluster;

struct cluster_driver {
    const char *name;
    /* Connects, registers with loop and joins the process group named
     * group. Events go to ev with ctx. Returns 0 or -errno, the reason
     * logged ("corosync: cpg_initialize: CS_ERR_LIBRARY: is corosync
     * running?"). */
    int (*init)(struct cluster **out, const char *group, qb_loop_t *loop,
                const struct cluster_events *ev, void *ctx);
    uint32_t (*local_nodeid)(struct cluster *c);
    /* Multicasts msg to every member, this one included, in agreed order.
     * Waits out corosync's flow control (-ETIMEDOUT if it has not cleared
     * in 30 s); -ENOTCONN once the group is lost, -EMSGSIZE above
     * CLUSTER_MSG_MAX. Thread-safe. */
    int (*send)(struct cluster *c, const void *msg, size_t len);
    /* Fills up to max entries of the configured nodelist; returns how many
     * (the local driver: this node only). */
    int (*nodelist)(struct cluster *c, struct cluster_node *out, size_t max);
    /* Leaves the group and disconnects. */
    void (*fini)(struct cluster *c);
};

extern const struct cluster_driver cluster_corosync;
extern const struct cluster_driver cluster_local;

#endif
