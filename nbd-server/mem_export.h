/* mem_export.h - exports held in memory, for the unit tests and the fuzzer.
 *
 * A catalog of a few named exports, each a zero-filled buffer whose
 * allocation is tracked per 4 KiB page, so trim, zero and block status
 * behave like a sparse file's. One mutex per export: speed is not the point.
 * An async export applies each write at once but reports it done from
 * another thread (nbd_async in export.h), as a mirrored volume does; like
 * one, it reports none of the writes made inside a batch (batch_begin in
 * export.h) done before the batch ends. An export may carry a few named
 * dirty bitmaps (qemu:dirty-bitmap:NAME): each marks every page written,
 * zeroed or trimmed since it was added, as the live volume's bitmap since
 * a snapshot does.
 */
#ifndef VSAN_NBD_MEM_EXPORT_H
#define VSAN_NBD_MEM_EXPORT_H

#include "nbd-server/export.h"

#define MEM_EXPORTS_MAX 8
/* Per export: more than a connection may select (NBD_META_BITMAPS_MAX),
 * so that the tests reach that bound. */
#define MEM_BITMAPS_MAX 72

struct mem_catalog;

extern const struct nbd_catalog_ops mem_catalog_ops;

struct mem_catalog *mem_catalog_new(void);
/* Adds an export of size bytes (a multiple of 4096). 0 or -errno. */
int mem_catalog_add(struct mem_catalog *cat, const char *name, uint64_t size, bool read_only);
/* The same, writable, with writes completed asynchronously. */
int mem_catalog_add_async(struct mem_catalog *cat, const char *name, uint64_t size);
/* Adds a dirty bitmap called name (< 64 bytes), all clean, to export,
 * while no connection holds it open (export.h: a connection's bitmaps
 * don't change until close). 0, -ENOENT (no such export), -EINVAL (too
 * many, name too long) or -ENOMEM. */
int mem_catalog_add_bitmap(struct mem_catalog *cat, const char *export, const char *name);
/* Number of connections holding any export open. */
unsigned mem_catalog_open_count(struct mem_catalog *cat);
/* Number of async writes reported done so far, on every connection. */
unsigned long mem_catalog_writes_done(struct mem_catalog *cat);
/* Number of flushes that reached an export, on every connection. */
unsigned long mem_catalog_flushes(struct mem_catalog *cat);
void mem_catalog_free(struct mem_catalog *cat);

#endif
