/* fake_cluster.h - a cluster transport (policing/cluster.h) for several
 * members in one process, so a unit test runs 2-3 whole nodes (store,
 * policing, mirror engine) side by side.
 *
 * It keeps corosync's promises: every member delivers the messages and
 * membership changes in one global order (each send and each change is
 * queued to every member at once, under one lock); a member's callbacks
 * run on its own delivery thread, which stands for that node's main loop
 * (the qb_loop argument of init is not used). Quorum is a majority of the
 * configured nodes, or always with two or fewer (votequorum's two_node).
 *
 * The test decides who is who: fcl_expect() names the node id the next
 * init gets, and a member delivers nothing until fcl_resume(), so its
 * node is wired up first (as vsand starts its loop last). fcl_leave()
 * takes a member out as a crash or a clean leave would; fcl_call() runs
 * a function on a member's delivery thread, ordered with its deliveries.
 */
#ifndef VSAN_TESTS_FAKE_CLUSTER_H
#define VSAN_TESTS_FAKE_CLUSTER_H

#include "policing/cluster.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

extern const struct cluster_driver fake_cluster;

/* A new group of nconfigured nodes (ids 1..n), no member yet. */
void fcl_setup(unsigned nconfigured);
/* The next init joins as node id. */
void fcl_expect(uint32_t id);
/* Member id starts delivering. */
void fcl_resume(uint32_t id);
/* Member id leaves the group: the others see it go (reason), it gets
 * quorum false and nothing more, and its sends fail with -ENOTCONN. */
void fcl_leave(uint32_t id, enum cluster_leave_reason reason);
/* The next n sends of member id that which() picks fail with -ETIMEDOUT
 * and go nowhere, as corosync's after 30 s of flow control. */
void fcl_fail_sends(uint32_t id, unsigned n, bool (*which)(const void *msg, size_t len));
/* Runs fn(arg) on member id's delivery thread and waits for it. */
void fcl_call(uint32_t id, void (*fn)(void *arg), void *arg);

#endif
