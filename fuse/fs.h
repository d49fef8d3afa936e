/* fs.h - the file system vsan-fuse mounts: a flat directory with one file
 * per volume, each backed by a failover client (client.h).
 *
 * Files have the volume's size, which follows a resize of the volume (the
 * watcher below), and can't be grown or shrunk from here; reads, writes,
 * fsync, fallocate (punch hole, zero range) and the extended attribute
 * user.vsan.node (the serving node: "ID ADDR") are what losetup, mkfs
 * and `vsan-fuse --status` need.
 */
#ifndef VSAN_FUSE_FS_H
#define VSAN_FUSE_FS_H

#define FUSE_USE_VERSION 312
#include <fuse.h>

#include "fuse/client.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* How often the watcher re-reads each volume's description. */
#define FS_WATCH_S 5

#define FS_XATTR_NODE "user.vsan.node"
#define FS_XATTR_REPLICAS "user.vsan.replicas"
#define FS_XATTR_FAILOVERS "user.vsan.failovers"
#define FS_XATTR_RECOVERY "user.vsan.recovery" /* copies being filled: ID:DONE/TOTAL:RATE,... */

struct fs {
    struct vclient **vols;
    size_t n;
    time_t mounted;
    /* The watcher (fs_watch_start): the sizes the kernel was told, and
     * what stops it. */
    struct fuse *fuse;
    uint64_t *told;
    pthread_t watcher;
    pthread_mutex_t watch_mu;
    pthread_cond_t watch_cv;
    bool watch_stop;
};

/* Starts the watcher of f's volumes (after fuse_daemonize: threads do not
 * survive its fork): every FS_WATCH_S seconds it re-reads each volume's
 * description (vc_refresh) and invalidates the kernel's attributes of a
 * file whose size changed. 0 or -errno. */
int fs_watch_start(struct fs *fs, struct fuse *f);
void fs_watch_stop(struct fs *fs);

extern const struct fuse_operations fs_ops;

#endif
