/* fs.h - the file system vsan-fuse mounts: a flat directory with one file
 * per volume, each backed by a failover client (client.h).
 *
 * Files have the volume's size and can't grow or shrink; reads, writes,
 * fsync, fallocate (punch hole, zero range) and the extended attribute
 * user.vsan.node (the serving node: "ID ADDR") are what losetup, mkfs
 * and `vsan-fuse --status` need.
 */
#ifndef VSAN_FUSE_FS_H
#define VSAN_FUSE_FS_H

#define FUSE_USE_VERSION 312
#include <fuse.h>

#include "fuse/client.h"

#include <stddef.h>
#include <time.h>

#define FS_XATTR_NODE "user.vsan.node"
#define FS_XATTR_REPLICAS "user.vsan.replicas"
#define FS_XATTR_FAILOVERS "user.vsan.failovers"

struct fs {
    struct vclient **vols;
    size_t n;
    time_t mounted;
};

extern const struct fuse_operations fs_ops;

#endif
