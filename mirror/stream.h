/* stream.h - the byte streams under the mirror link: whole messages
 * (wire.h) read from and written to a connected socket.
 *
 * Reads are buffered: one read() takes in as many messages as the kernel
 * holds, so a peer that pipelines 32 writes costs this side one system
 * call, not 64; and a payload that arrived whole in the buffer is handed
 * out in place, without a copy or an allocation. Writes gather a header and
 * its payload, or a batch of replies, into one sendmsg().
 *
 * A stream belongs to one reading thread; nothing here locks. Senders that
 * share a socket serialise themselves (link.c).
 *
 * The handshake is read without a stream (mstream_recv_small): a peer that
 * has not authenticated yet gets no buffer, and nothing of it is read
 * beyond the small fixed-size message due, against one deadline.
 */
#ifndef VSAN_MIRROR_STREAM_H
#define VSAN_MIRROR_STREAM_H

#include "mirror/wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>
#include <time.h>

struct mstream {
    int fd;
    char *buf;
    size_t start, end, cap;
    void *owned; /* the payload last returned, when it was allocated */
};

/* Binds s to fd with a buffer of cap bytes. -ENOMEM. */
int mstream_init(struct mstream *s, int fd, size_t cap);
void mstream_free(struct mstream *s);

/* Whether a whole header is buffered: the next mstream_recv won't block
 * before it has one. */
bool mstream_has_header(const struct mstream *s);

/* Steps through the messages buffered behind the one mstream_recv
 * returned last, without taking them: *pos (0 to begin) is where the next
 * one starts. Fills *h with its header and returns true while a whole,
 * checked header is buffered there (its payload need not be). */
bool mstream_peek(const struct mstream *s, size_t *pos, struct mwire_header *h);

/* Reads and checks one message. *payload (NULL if none) stays valid until
 * the next call or mstream_free. On error, *why says what was wrong:
 * -ECONNRESET at EOF; with a receive timeout on the socket, a wait that
 * runs out asks still_ok(arg) whether to go on (else -ETIMEDOUT). */
int mstream_recv(struct mstream *s, struct mwire_header *h, const void **payload, const char **why,
                 bool (*still_ok)(void *), void *arg);

/* Reads exactly one message from fd, whose payload must be at most max
 * bytes, into h and buf: a longer one is refused (-EPROTO) on its header
 * alone, before any of it is read. Waits until deadline (CLOCK_MONOTONIC)
 * at most, over all its reads: -ETIMEDOUT then. Errors as mstream_recv. */
int mstream_recv_small(int fd, const struct timespec *deadline, struct mwire_header *h, void *buf,
                       size_t max, const char **why);

/* Writes all of iov (cnt entries, modified). 0 or -errno. */
int mstream_writev(int fd, struct iovec *iov, int cnt);
/* Seals h over payload (h->payload bytes) and sends both. */
int mstream_send(int fd, struct mwire_header *h, const void *payload);

#endif
