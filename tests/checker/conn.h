/* conn.h - one way in to the volume for a checker thread: an NBD URI,
 * driven through libnbd's asynchronous calls so that every connect, read
 * and write is bounded by a timeout, or a path (it starts with '/'), such
 * as the volume's file in a vsan-fuse mount, used with pread and pwrite.
 *
 * A node that is cut off or powered off drops packets silently, and a
 * blocking call would wait for TCP's own timeout, minutes; hence the
 * bound. A file target has none of its own: vsan-fuse bounds and fails
 * over underneath, so only its final error comes back.
 */
#ifndef VSAN_CHECKER_CONN_H
#define VSAN_CHECKER_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct nbd_handle;

struct chk_conn {
    const char *target;
    struct nbd_handle *h;
    int fd; /* a file target's, or -1 */
};

/* A closed connection to target (nothing is opened yet). */
void chk_conn_init(struct chk_conn *c, const char *target);

bool chk_conn_open_p(const struct chk_conn *c);

/* Connects (NBD: handshake included) within timeout_ms; 0 or -errno. */
int chk_conn_open(struct chk_conn *c, unsigned timeout_ms);
void chk_conn_close(struct chk_conn *c);

/* One write or read of len bytes at offset, answered within timeout_ms
 * (NBD); 0 or -errno (-ETIMEDOUT without an answer). After an error the
 * caller closes the connection: a late reply must not be taken for the
 * answer to a later request. */
int chk_conn_pwrite(struct chk_conn *c, const void *buf, size_t len, uint64_t offset,
                    unsigned timeout_ms);
int chk_conn_pread(struct chk_conn *c, void *buf, size_t len, uint64_t offset, unsigned timeout_ms);

/* CLOCK_MONOTONIC in ms, and a sleep that resumes after signals. */
int64_t chk_now_ms(void);
void chk_sleep_ms(unsigned ms);

#endif
