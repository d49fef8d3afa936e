/* export.h - the interface between the NBD protocol and what it serves.
 *
 * The protocol code (handshake.c, transmission.c, server.c) knows nothing
 * of volumes, files or mirrors. It finds exports through a catalog and does
 * I/O through the ops of an opened export. vsand's volume layer
 * (volume/volume.c) implements both over the store; mem_export.c implements
 * them in memory for the unit tests and the fuzzer.
 *
 * Contract common to every function here:
 *  - errors are negative errno values (-EIO, -ENOSPC, -EINVAL, -ENOTSUP,
 *    -ESHUTDOWN ...); the protocol maps them to NBD error codes;
 *  - every function may be called from many threads at once, for the same
 *    export and for different ones: implementations do their own locking;
 *  - the protocol has already checked bounds against the size it announced
 *    and alignment against the block sizes; a backend whose size shrank
 *    since must still refuse what is now out of range.
 */
#ifndef VSAN_NBD_EXPORT_H
#define VSAN_NBD_EXPORT_H

#include "nbd-server/tls.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* base:allocation status bits, as on the wire. */
#define NBD_EXTENT_HOLE 1u
#define NBD_EXTENT_ZERO 2u

/* qemu:dirty-bitmap:NAME status bit, as on the wire. */
#define NBD_STATE_DIRTY 1u

struct nbd_extent {
    uint64_t length;
    uint32_t flags; /* NBD_EXTENT_HOLE | NBD_EXTENT_ZERO, or NBD_STATE_DIRTY */
};

/* Flags of the I/O ops. */
#define NBD_IO_FUA (1u << 0) /* durable before returning */
#define NBD_IO_NOWAIT                                                                              \
    (1u << 1)                     /* return -EAGAIN, having done nothing, rather                   \
                                   * than wait for a device, a sync or a peer */
#define NBD_IO_MAY_TRIM (1u << 2) /* zero: the range may become a hole */
#define NBD_IO_FAST (1u << 3)     /* zero: -ENOTSUP unless cheaper than writing zeroes */
/* extents: they only plan a READ's hole chunks, so a data extent may run
 * on over holes (read as the zeroes they are) if finding their start
 * costs the backend more than reading them. */
#define NBD_IO_ROUGH (1u << 4)

/* With NBD_IO_NOWAIT the protocol runs a request on the thread that read
 * it, without handing the socket to another thread first: the fast path
 * when data is in memory. -EAGAIN sends the request the slow way (another
 * thread reads on while this one waits), so an op should say -EAGAIN
 * whenever it is unsure it can finish in microseconds.
 *
 * A write that waits on something other than this host (a mirror peer's
 * answer) can go a third way: the write ops take an nbd_async, given only
 * with NBD_IO_NOWAIT (else NULL). An op may then start the work, return
 * -EINPROGRESS, and finish it later by calling a->done exactly once, from
 * any thread; the reading thread reads on at once and no thread waits.
 * buf need only stay valid until the op returns. a->done never blocks on
 * the client: the reply goes out without waiting, or is queued for the
 * connection's own threads (conn.h), so a thread that completes writes
 * for many clients is never held by one that reads nothing. */
struct nbd_async {
    void (*done)(struct nbd_async *a, int err); /* err: 0 or -errno */
};

/* A thread that calls a->done for many requests in a row (a mirror link
 * reading a batch of its peer's answers) may hold the replies back and
 * send them with nbd_replies_flush(): one write per connection, not one
 * per reply, none of which blocks (as a->done). It must flush before it
 * waits for anything. */
void nbd_replies_hold(void);
void nbd_replies_flush(void);

struct nbd_export_ops {
    /* Current size in bytes. Cheap: called once per negotiation. */
    uint64_t (*size)(void *h);
    /* Reads exactly count bytes. Flags: NOWAIT. */
    int (*pread)(void *h, void *buf, uint32_t count, uint64_t offset, unsigned flags);
    /* Writes exactly count bytes. Flags: FUA, NOWAIT. */
    int (*pwrite)(void *h, const void *buf, uint32_t count, uint64_t offset, unsigned flags,
                  struct nbd_async *a);
    /* Makes every write completed so far, on any connection, durable.
     * Flags: NOWAIT. */
    int (*flush)(void *h, unsigned flags);
    /* Discards; later reads return zeroes (vsan's promise, stronger than
     * the protocol's). Flags: FUA, NOWAIT. */
    int (*trim)(void *h, uint32_t count, uint64_t offset, unsigned flags, struct nbd_async *a);
    /* Writes zeroes. Flags: FUA, NOWAIT, MAY_TRIM, FAST. */
    int (*zero)(void *h, uint32_t count, uint64_t offset, unsigned flags, struct nbd_async *a);
    /* Prefetches into cache; may be a no-op. Flags: NOWAIT. */
    int (*cache)(void *h, uint32_t count, uint64_t offset, unsigned flags);
    /* Describes the allocation of [offset, offset+count) in at most max
     * extents, in order, starting at offset. The lengths sum to at least 1
     * and at most count. Returns the number of extents written (>= 1).
     * Flags: NOWAIT (a backend that must ask elsewhere, as a mirror whose
     * own copy is not current asks a peer, says -EAGAIN). */
    int (*extents)(void *h, uint32_t count, uint64_t offset, struct nbd_extent *ext, unsigned max,
                   unsigned flags);
    /* As extents, for dirty bitmap number bitmap (< nbitmaps of struct
     * nbd_export), called name (its bitmaps[bitmap]: a backend whose
     * handle all connections share finds it by name): extents in order
     * from offset, lengths summing to 1 .. count, each's flags
     * NBD_STATE_DIRTY (changed) or 0. Returns how many (>= 1) or -errno.
     * Flags: NOWAIT (-EAGAIN, having done nothing, rather than wait).
     * Required when the export offers bitmaps. */
    int (*bitmap_extents)(void *h, unsigned bitmap, const char *name, uint32_t count,
                          uint64_t offset, struct nbd_extent *ext, unsigned max, unsigned flags);
    /* Optional. The reading thread calls batch_begin before it runs
     * requests inline, and batch_end before it waits for anything: more
     * input (a write's payload not all read in yet too), a reply that
     * can't go out at once (the client not reading, or another thread
     * sending), or a request run the slow way. A backend may gather the
     * work of the requests in between (a mirror sends their copies in one
     * write per peer). A request alone (no batch open, no other one read
     * in) runs outside a batch, so that nothing holds it back. batch_end
     * may run while the thread is in the middle of sending a reply: a->done
     * called from it queues its reply behind that one (it never blocks). */
    void (*batch_begin)(void *h);
    void (*batch_end)(void *h);
};

/* One opened export, held by one connection from negotiation to close.
 * It offers the meta context base:allocation, and qemu:dirty-bitmap:NAME
 * for each of its bitmaps (bitmap_extents), a client may select. */
struct nbd_export {
    const struct nbd_export_ops *ops;
    void *handle;
    const char *description; /* owned by the backend, valid until close */
    bool read_only;
    /* Names without the "qemu:dirty-bitmap:" prefix, each at most
     * NBD_BITMAP_NAME_MAX bytes (longer ones are not offered); owned by the
     * backend, valid and unchanged until close. */
    const char *const *bitmaps;
    unsigned nbitmaps;
};

/* Longest bitmap name: with its prefix, a context name fits the
 * protocol's 4096-byte strings. */
#define NBD_BITMAP_NAME_MAX (4096 - 18)

/* Who asks the catalog: the catalog alone decides what a client may see
 * and how (its grants), so that listing and opening filter alike. */
struct nbd_client {
    const char *identity; /* a PSK user, a subject DN, "root", or "anonymous" (plain) */
    enum nbd_tls_auth auth;
    /* Sees every export read-write: root on the local socket, or a plain
     * client under [nbd] anonymous = all. */
    bool all;
};

struct nbd_catalog_ops {
    /* Opens the export called name for who. Returns 0 and fills *exp,
     * -ENOENT if there is none or who may not see it (the same answer),
     * another -errno if it can't be served now. The export stays valid
     * (and counts as in use) until close. */
    int (*open)(void *ctx, const char *name, const struct nbd_client *who, struct nbd_export *exp);
    void (*close)(void *ctx, struct nbd_export *exp);
    /* Whether who, having opened name as exp, would open it alike now
     * (the grants may have changed since); NULL: never. */
    bool (*still)(void *ctx, const char *name, const struct nbd_client *who,
                  const struct nbd_export *exp);
    /* Calls fn for every export who may see, in a stable order, until fn
     * returns non-zero; returns that value, or 0. */
    int (*list)(void *ctx, const struct nbd_client *who,
                int (*fn)(void *arg, const char *name, const char *description), void *arg);
};

#endif
