/* client.h - the failover NBD client of one volume.
 *
 * A vclient does a volume's I/O on one node at a time, over a small pool
 * of connections (several only if the server advertises CAN_MULTI_CONN, so
 * a FLUSH on one covers writes done on the others). When a request fails
 * because the connection broke, timed out, or the server answered
 * ESHUTDOWN or EIO (it is stopping, lost quorum, or its copy failed), the
 * client moves to another current replica and sends the request again:
 * writes in full (vsand's writes are idempotent: a write that landed before
 * the failure lands again with the same bytes), flushes too (a FLUSH on the
 * new node makes every write acknowledged by any current replica durable,
 * because the mirror engine applied it on all of them before its reply).
 * The application sees an error only if no current replica answered within
 * the retry time.
 *
 * Where to go: the replicas named in the export description (replicas.h),
 * this host's first; re-read from whichever node answers at each move,
 * and by vc_refresh.
 *
 * Threads: every function may be called from many threads at once (FUSE
 * runs its operations on a thread pool); each request holds one connection
 * of the pool while it runs.
 */
#ifndef VSAN_FUSE_CLIENT_H
#define VSAN_FUSE_CLIENT_H

#include "fuse/replicas.h"

#include <stdbool.h>
#include <stdint.h>

#define VC_CONNECTIONS_MAX 16

struct vc_params {
    const char *volume;          /* the export name */
    const struct vr_list *seeds; /* nodes to ask first (--nodes) */
    unsigned connections;        /* pool size with multi-conn (1..VC_CONNECTIONS_MAX) */
    unsigned retry_ms;           /* how long one request may keep failing over */
    unsigned io_timeout_ms;      /* one attempt's wait for a node before giving it up */
};

struct vclient;

/* Asks the seeds, in order, for the volume's size and replicas. On
 * failure, err says why (each node's answer). -ENOENT: no node has it. */
int vc_open(const struct vc_params *p, struct vclient **out, char *err, size_t errlen);
void vc_close(struct vclient *vc);

/* The volume's size as last read (vc_open, a move, vc_refresh). */
uint64_t vc_size(struct vclient *vc);
/* Re-reads the volume's description from the serving node: its size and
 * replicas (a resize, a replica change). 0, or -errno (logged; the I/O
 * path's failover handles a node that stopped answering). */
int vc_refresh(struct vclient *vc);
const char *vc_name(const struct vclient *vc);

/* The I/O: 0 or -errno, after failing over as above. */
int vc_pread(struct vclient *vc, void *buf, uint32_t count, uint64_t offset);
int vc_pwrite(struct vclient *vc, const void *buf, uint32_t count, uint64_t offset);
int vc_flush(struct vclient *vc);
/* Discards (reads return zeroes afterwards), or writes zeroes. count may
 * be larger than one NBD request. */
int vc_trim(struct vclient *vc, uint64_t count, uint64_t offset);
int vc_zero(struct vclient *vc, uint64_t count, uint64_t offset);

/* Which node serves now, the replicas known, and the copies being filled
 * as the last description named them ("ID:DONE/TOTAL:RATE,...", bytes and
 * bytes/s; "" if none). */
#define VC_RECOVERY_MAX 256
struct vc_status {
    uint32_t node; /* 0 if the server did not say */
    char addr[VR_ADDR_MAX];
    unsigned failovers;
    struct vr_list replicas;
    char recovery[VC_RECOVERY_MAX];
};
void vc_status(struct vclient *vc, struct vc_status *st);

#endif
