/* nbd_client.h - what backup, restore and clone (backup.c) do over NBD
 * with libnbd: find this node's NBD server, open an export, walk a
 * snapshot's extents by block status (base:allocation and a
 * qemu:dirty-bitmap context), write and zero ranges; and their progress
 * line. Every failure is printed on stderr with its context and returned
 * as an exit code (admin_call.h); success is -1, as in admin_call.h. */
#ifndef VSAN_CLI_NBD_CLIENT_H
#define VSAN_CLI_NBD_CLIENT_H

#include <libnbd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "qemu:dirty-bitmap:" + a snapshot name */
#define DIRTY_CONTEXT_PREFIX "qemu:dirty-bitmap:"
#define CONTEXT_MAX 128

/* bytes, rate and ETA on stderr, at most twice a second, when on. */
struct progress {
    const char *what;
    bool on;
    uint64_t total, pos, bytes; /* pos of total done, bytes moved */
    double start, last;
};

void progress_init(struct progress *p, const char *what, uint64_t total, bool force);
void progress_update(struct progress *p, uint64_t pos, uint64_t bytes);
void progress_done(struct progress *p);
double progress_seconds(const struct progress *p);

/* The NBD address (a socket path or HOST:PORT) of the node whose admin
 * socket this is: its local socket ([admin] nbd_socket: root only, never
 * TLS, so it works under [nbd] tls = require), else (a vsand that
 * reports none) its own member's "nbd" in `status`, else its first
 * listen address. */
int nbdc_node_address(const char *socket, char *buf, size_t len);

/* Opens export at addr (a wildcard host means this host), asking for the
 * meta contexts in the NULL-terminated contexts (may be NULL). A missing
 * export is EXIT_NO_SNAPSHOT if its name holds '@', else EXIT_NO_VOLUME. */
int nbdc_open(const char *addr, const char *export, const char *const *contexts,
              struct nbd_handle **out);

/* Where the walk puts what it finds; each returns 0 or an exit code. */
struct extent_sink {
    int (*data)(void *arg, uint64_t offset, const void *buf, size_t len);
    int (*zero)(void *arg, uint64_t offset, uint64_t len);
    void *arg;
};

struct walk_stats {
    uint64_t read, data, zero; /* bytes read from the export, handed as data, as zeroes */
};

/* Walks export name's [0, size). Without dirty_ctx: the allocated data
 * (ranges base:allocation says read as zeroes are left out, and so are
 * read chunks that are all zeroes). With it: only the ranges it marks
 * dirty, and those that read as zeroes handed to sink->zero. */
int nbdc_walk(struct nbd_handle *h, const char *name, uint64_t size, const char *dirty_ctx,
              const struct extent_sink *sink, struct progress *p, struct walk_stats *st);

/* How many bytes of [0, size) ctx (a dirty bitmap) marks dirty, in *dirty. */
int nbdc_count_dirty(struct nbd_handle *h, const char *name, uint64_t size, const char *ctx,
                     uint64_t *dirty);

/* A sink writing into an export opened writable. */
struct nbd_sink {
    struct nbd_handle *h;
    const char *name;
};
int nbdc_write(void *sink, uint64_t offset, const void *buf, size_t len);
int nbdc_zero(void *sink, uint64_t offset, uint64_t len);
/* Flushes and closes h; an exit code if the flush failed. */
int nbdc_finish(struct nbd_handle *h, const char *name);

#endif
