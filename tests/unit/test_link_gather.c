/* test_link_gather.c - the buffer a thread gathers its mirror requests in
 * (mlink_gather_begin) ends with the thread.
 *
 * vsand's NBD threads come and go with their clients, and each one that
 * gathered a write kept a 256 KiB buffer for good: LeakSanitizer found
 * them in t-lab-mirror's and t-lab-stall's vsands. Threads here gather
 * writes to a peer that is down and end; then no allocation may be left
 * that nothing points to. The check needs LeakSanitizer (make check
 * SANITIZE=1); without it the threads only run.
 */
#include "mirror/auth.h"
#include "mirror/link.h"

#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

#define CLUSTER "gather"
#define US 1
#define PEER 2
#define THREADS 8

static struct mauth_secret secret = {.key = "correct horse battery staple", .len = 28};

/* A TCP port free on 127.0.0.1 a moment ago. */
static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_geq(fd, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static int serve_nothing(void *ctx, struct mlink_call *call)
{
    (void)ctx;
    (void)call;
    return -EIO;
}

static atomic_int failed;

static void write_done(struct mlink_wait *w)
{
    (void)w;
}

/* One NBD thread's life: a gathered write, then the end. */
static void *gathering_thread(void *arg)
{
    static const char data[4096];
    struct mlink_op op = {.peer = PEER, .payload = data};
    mwire_init(&op.req, MW_WRITE, 0);
    op.req.volume = 1;
    op.req.length = sizeof data;
    struct mlink_wait w;
    mlink_gather_begin();
    mlink_send_async(arg, &op, 1, &w, write_done);
    mlink_release(&w);
    mlink_gather_end();
    if (op.result != -ENOTCONN)
        atomic_fetch_add(&failed, 1);
    return NULL;
}

Test(gather, buffer_ends_with_its_thread, .timeout = 30)
{
    char addr[32], down[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", free_port());
    snprintf(down, sizeof down, "127.0.0.1:%u", free_port()); /* nothing listens */
    struct mlink_params p = {.listen = addr,
                             .cluster = CLUSTER,
                             .self = US,
                             .secret = &secret,
                             .timeout_ms = 1000,
                             .serve = serve_nothing};
    struct mlink *l;
    cr_assert_eq(mlink_start(&p, &l), 0);
    struct mlink_peer peer = {.node = PEER};
    snprintf(peer.addr, sizeof peer.addr, "%s", down);
    mlink_set_peers(l, &peer, 1);
    for (int i = 0; i < THREADS; i++) {
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, gathering_thread, l), 0);
        cr_assert_eq(pthread_join(t, NULL), 0);
    }
    cr_assert_eq(atomic_load(&failed), 0, "a write to a peer that is down did not fail ENOTCONN");
    mlink_stop(l);
#ifdef __SANITIZE_ADDRESS__
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,
                 "threads that gathered left their buffers behind (see the leak report)");
#endif
}
