/* test_link_stall.c - a mirror peer that reads nothing holds no lock the
 * rest of the link needs.
 *
 * The peer is faked on a plain socket: it goes through the real handshake
 * (auth.h), asks for data and reads no byte of the reply. The serving
 * thread blocks in sendmsg holding the connection's serve lock, and
 * mlink_drop (which the main loop calls under the link's lock) must still
 * return at once. (Our requests to such a peer are bounded already: the
 * socket has a send timeout, and the reply thread's timeout cuts it.)
 */
#include "mirror/auth.h"
#include "mirror/link.h"
#include "mirror/stream.h"

#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CLUSTER "stall"
#define US 1
#define FAKE 2
#define BIG (16u << 20)

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

static void recv_msg(struct mstream *in, enum mwire_type type, void *payload, size_t len)
{
    struct mwire_header h;
    const void *p;
    const char *why = "";
    int r = mstream_recv(in, &h, &p, &why, NULL, NULL);
    cr_assert_eq(r, 0, "recv: %s", why);
    cr_assert_eq(h.type, type, "got %s", mwire_type_name(h.type));
    cr_assert_eq(h.payload, len);
    memcpy(payload, p, len);
}

static void send_msg(int fd, enum mwire_type type, const void *payload, size_t len)
{
    struct mwire_header h;
    mwire_init(&h, type, 0);
    h.payload = (uint32_t)len;
    cr_assert_eq(mstream_send(fd, &h, payload), 0);
}

/* The fake peer as a client of our listener, with a small receive window
 * (loopback's may grow to 32 MiB). */
static int fake_connect(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int small = 16384;
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct mstream in;
    cr_assert_eq(mstream_init(&in, fd, 4096), 0);
    struct mauth a = {0};
    struct mw_hello hello;
    struct mw_challenge ch;
    struct mw_auth auth;
    char err[256];
    cr_assert_eq(mauth_client_hello(&a, &secret, CLUSTER, FAKE, &hello), 0);
    send_msg(fd, MW_HELLO, &hello, sizeof hello);
    recv_msg(&in, MW_CHALLENGE, &ch, sizeof ch);
    cr_assert_eq(mauth_client_auth(&a, &ch, US, &auth, err, sizeof err), 0, "%s", err);
    send_msg(fd, MW_AUTH, &auth, sizeof auth);
    struct mwire_header h;
    const void *p;
    const char *why = "";
    cr_assert_eq(mstream_recv(&in, &h, &p, &why, NULL, NULL), 0, "%s", why);
    cr_assert_eq(h.type, MW_WELCOME);
    mstream_free(&in);
    return fd;
}

static char *big;
static atomic_bool serving;

/* Answers every request with BIG bytes. */
static int serve_big(void *ctx, struct mlink_call *call)
{
    (void)ctx;
    atomic_store(&serving, true);
    return mlink_reply(call, 0, big, BIG);
}

static struct mlink *start_link(unsigned port, unsigned timeout_ms,
                                int (*serve)(void *ctx, struct mlink_call *call))
{
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
    struct mlink_params p = {.listen = addr,
                             .cluster = CLUSTER,
                             .self = US,
                             .secret = &secret,
                             .timeout_ms = timeout_ms,
                             .serve = serve};
    struct mlink *l;
    cr_assert_eq(mlink_start(&p, &l), 0);
    return l;
}

/* Joins t within seconds; false if it is still running. */
static bool joined_within(pthread_t t, int seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += seconds;
    return pthread_timedjoin_np(t, NULL, &ts) == 0;
}

static void setup(void)
{
    big = calloc(1, BIG);
    cr_assert_not_null(big);
}

static void teardown(void)
{
    free(big);
}

static void *drop_main(void *arg)
{
    mlink_drop(arg, FAKE);
    return NULL;
}

/* A peer that asks for data and reads no reply: the serving thread blocks
 * sending it; dropping the peer (the main loop, under the link's lock)
 * must not wait for that send. The timeout is long, so only the drop can
 * end it. */
Test(stall, drop_does_not_wait_for_a_blocked_reply, .init = setup, .fini = teardown, .timeout = 30)
{
    unsigned port = free_port();
    struct mlink *l = start_link(port, 60000, serve_big);
    int fd = fake_connect(port);
    struct mwire_header h;
    mwire_init(&h, MW_READ, 1);
    h.volume = 1;
    h.length = BIG;
    cr_assert_eq(mstream_send(fd, &h, NULL), 0);
    int queued = 0;
    for (int i = 0; i < 1000 && (!atomic_load(&serving) || queued < 8192); i++) {
        poll(NULL, 0, 5);
        cr_assert_eq(ioctl(fd, FIONREAD, &queued), 0);
    }
    cr_assert(atomic_load(&serving) && queued >= 8192, "the reply fills the socket");

    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, drop_main, l), 0);
    cr_assert(joined_within(t, 5), "mlink_drop waits for a reply the peer never reads");
    close(fd);
    mlink_stop(l);
}

/* DIRTY is answered -EAGAIN without a payload (a reply the link may hold
 * back while the next request is buffered), READ with 8 bytes at once. */
static int serve_mixed(void *ctx, struct mlink_call *call)
{
    (void)ctx;
    static const char data[8];
    if (call->req->type == MW_DIRTY)
        return -EAGAIN;
    return mlink_reply(call, 0, data, sizeof data);
}

static void send_request(int fd, enum mwire_type type, uint64_t id)
{
    struct mwire_header h;
    mwire_init(&h, type, id);
    h.volume = 1;
    h.length = 8;
    cr_assert_eq(mstream_send(fd, &h, NULL), 0);
}

/* A held reply is not kept back by the replies sent at once behind it:
 * a peer asking a DIRTY (answered -EAGAIN, held while a READ is buffered)
 * and then only READs (a node reading through this one) gets the DIRTY's
 * answer. It waited for good before, and the asker's link, seeing replies
 * arrive, never timed it out (a resync stuck in syncing in the soak). */
Test(stall, held_reply_goes_out_behind_direct_ones, .init = setup, .fini = teardown, .timeout = 30)
{
    unsigned port = free_port();
    struct mlink *l = start_link(port, 60000, serve_mixed);
    int fd = fake_connect(port);
    struct mwire_header two[2];
    mwire_init(&two[0], MW_DIRTY, 1);
    mwire_init(&two[1], MW_READ, 2);
    for (int i = 0; i < 2; i++) {
        two[i].volume = 1;
        two[i].length = 8;
        mwire_seal(&two[i], NULL);
    }
    cr_assert_eq(send(fd, two, sizeof two, MSG_NOSIGNAL), (ssize_t)sizeof two);
    struct mstream in;
    cr_assert_eq(mstream_init(&in, fd, 4096), 0);
    bool dirty_answered = false;
    for (uint64_t id = 3; id < 100 && !dirty_answered; id++) {
        send_request(fd, MW_READ, id);
        struct mwire_header h;
        const void *p;
        const char *why = "";
        for (int k = 0; k < 2 && !dirty_answered; k++) {
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            if (!mstream_has_header(&in) && poll(&pfd, 1, 20) != 1)
                break;
            cr_assert_eq(mstream_recv(&in, &h, &p, &why, NULL, NULL), 0, "%s", why);
            dirty_answered = h.id == 1;
        }
    }
    cr_assert(dirty_answered, "the DIRTY's held reply never went out behind the READs");
    mstream_free(&in);
    close(fd);
    mlink_stop(l);
}
