/* fileio.c - positioned I/O that finishes, and allocation extents (see
 * fileio.h). */
#include "store/fileio.h"

#include <errno.h>
#include <unistd.h>

int fileio_pread(int fd, void *buf, size_t len, uint64_t off)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

int fileio_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

int fileio_extent(int fd, uint64_t pos, uint64_t end, bool rough, uint64_t *len, bool *hole)
{
    off_t data = lseek(fd, (off_t)pos, SEEK_DATA);
    if (data < 0 && errno != ENXIO)
        return -errno;
    /* ENXIO: no data from pos to the end of the file. */
    if (data < 0 || (uint64_t)data > pos) {
        uint64_t stop = data < 0 || (uint64_t)data > end ? end : (uint64_t)data;
        *len = stop - pos;
        *hole = true;
        return 0;
    }
    if (rough) {
        *len = end - pos;
        *hole = false;
        return 0;
    }
    off_t h = lseek(fd, (off_t)pos, SEEK_HOLE);
    if (h < 0)
        return -errno;
    /* A hole at pos means a trim raced us; "data" claims nothing, so it is
     * always a safe answer. */
    uint64_t stop = (uint64_t)h <= pos || (uint64_t)h > end ? end : (uint64_t)h;
    *len = stop - pos;
    *hole = false;
    return 0;
}
