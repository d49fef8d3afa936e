/* iov.h - resuming a vectored write after a short one.
 *
 * writev, pwritev and sendmsg may write less than asked (a signal, a full
 * socket buffer); every writer in vsand (the store, the NBD connections,
 * the mirror link) then goes on from where it stopped with this helper.
 */
#ifndef VSAN_IOV_H
#define VSAN_IOV_H

#include <stddef.h>
#include <sys/uio.h>

/* Drops the first done bytes of *iov (*cnt entries), in place. */
static inline void iov_advance(struct iovec **iov, int *cnt, size_t done)
{
    while (*cnt > 0 && done >= (*iov)->iov_len) {
        done -= (*iov)->iov_len;
        (*iov)++;
        (*cnt)--;
    }
    if (*cnt > 0) {
        (*iov)->iov_base = (char *)(*iov)->iov_base + done;
        (*iov)->iov_len -= done;
    }
}

#endif
