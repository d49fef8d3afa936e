/* test_cluster_local.c - the in-process cluster driver keeps the promises
 * of cluster.h that the policing code relies on: the initial membership
 * and quorum come first, through the loop; every message sent, from any
 * thread or from a callback, is delivered exactly once, on the loop
 * thread, in each sender's order and intact; oversized sends are refused;
 * fini drops what was never delivered without leaking or calling back.
 */
#include "policing/cluster.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <pthread.h>
#include <qb/qbloop.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

#define SENDERS 4
#define PER_SENDER 20000

/* What the callbacks saw; only the loop thread touches it. */
struct seen {
    qb_loop_t *loop;
    pthread_t loop_thread;
    int confchgs;
    int quorums;
    bool quorate;
    struct cluster_member members[4], joined[4];
    size_t nmembers, nleft, njoined;
    size_t delivered;
    size_t delivered_before_confchg;
    size_t off_thread;
    size_t out_of_order;
    size_t bad_sender;
    uint32_t next_seq[SENDERS];
    size_t want; /* stop the loop after this many deliveries */
    size_t lens[8];
    bool contents_ok[8];
    int chain; /* messages a deliver callback still has to send */
    struct cluster *c;
};

struct tagged {
    uint32_t sender;
    uint32_t seq;
};

static struct seen seen;
static struct cluster *cl;

static void maybe_stop(void)
{
    if (seen.confchgs > 0 && seen.quorums > 0 && seen.delivered >= seen.want)
        qb_loop_stop(seen.loop);
}

static void check_thread(void)
{
    if (!pthread_equal(pthread_self(), seen.loop_thread))
        seen.off_thread++;
}

static void on_deliver(void *ctx, uint32_t nodeid, uint32_t pid, const void *msg, size_t len)
{
    struct tagged t;

    cr_assert(eq(ptr, ctx, &seen));
    check_thread();
    if (seen.confchgs == 0)
        seen.delivered_before_confchg++;
    if (nodeid != 1 || pid != (uint32_t)getpid())
        seen.bad_sender++;
    if (len == sizeof t) {
        memcpy(&t, msg, sizeof t);
        if (t.sender >= SENDERS || t.seq != seen.next_seq[t.sender])
            seen.out_of_order++;
        else
            seen.next_seq[t.sender]++;
    }
    if (seen.delivered < 8)
        seen.lens[seen.delivered] = len;
    seen.delivered++;
    if (seen.chain > 0) {
        seen.chain--;
        t = (struct tagged){.sender = 0, .seq = seen.next_seq[0]};
        cr_assert(eq(int, cluster_local.send(seen.c, &t, sizeof t), 0));
    }
    maybe_stop();
}

static void on_confchg(void *ctx, const struct cluster_member *members, size_t n,
                       const struct cluster_member *left, size_t nleft,
                       const struct cluster_member *joined, size_t njoined)
{
    (void)ctx, (void)left;
    check_thread();
    seen.confchgs++;
    cr_assert(n <= 4 && njoined <= 4);
    memcpy(seen.members, members, n * sizeof *members);
    memcpy(seen.joined, joined, njoined * sizeof *joined);
    seen.nmembers = n;
    seen.nleft = nleft;
    seen.njoined = njoined;
    maybe_stop();
}

static void on_quorum(void *ctx, bool quorate)
{
    (void)ctx;
    check_thread();
    seen.quorums++;
    seen.quorate = quorate;
    maybe_stop();
}

static const struct cluster_events events = {
    .deliver = on_deliver,
    .confchg = on_confchg,
    .quorum = on_quorum,
};

static bool timed_out;

static void on_timeout(void *data)
{
    (void)data;
    timed_out = true;
    qb_loop_stop(seen.loop);
}

/* Runs the loop until the callbacks stop it; fails after 20 s. */
static void run_loop(void)
{
    qb_loop_timer_handle timer;
    int r;

    timed_out = false;
    r = qb_loop_timer_add(seen.loop, QB_LOOP_LOW, 20000000000ULL, NULL, on_timeout, &timer);
    cr_assert(eq(int, r, 0));
    qb_loop_run(seen.loop);
    cr_assert(not(timed_out), "timed out: %zu of %zu messages delivered", seen.delivered,
              seen.want);
    qb_loop_timer_del(seen.loop, timer);
}

static void setup(void)
{
    memset(&seen, 0, sizeof seen);
    seen.loop = qb_loop_create();
    cr_assert(not(eq(ptr, seen.loop, NULL)));
    seen.loop_thread = pthread_self();
    cr_assert(eq(int, cluster_local.init(&cl, "test", seen.loop, &events, &seen), 0));
    seen.c = cl;
}

static void teardown(void)
{
    if (cl != NULL)
        cluster_local.fini(cl);
    cl = NULL;
    if (seen.loop != NULL)
        qb_loop_destroy(seen.loop);
    seen.loop = NULL;
}

/* Ends a test: closes everything, and under ASan checks for leaks now,
 * since Criterion ignores LeakSanitizer's exit status of a passed test. */
static void finish(void)
{
    teardown();
#ifdef __SANITIZE_ADDRESS__
    cr_assert(eq(int, __lsan_do_recoverable_leak_check(), 0),
              "memory leaked: see the report above");
#endif
}

static void assert_clean_delivery(void)
{
    cr_assert(eq(sz, seen.off_thread, 0), "callbacks off the loop thread");
    cr_assert(eq(sz, seen.delivered_before_confchg, 0), "a message came before the membership");
    cr_assert(eq(sz, seen.bad_sender, 0), "a message came from a node other than 1/getpid()");
    cr_assert(eq(sz, seen.out_of_order, 0), "a message was lost, repeated or reordered");
}

TestSuite(cluster_local, .init = setup, .fini = teardown, .timeout = 60);

Test(cluster_local, announces_one_quorate_member_through_the_loop)
{
    struct cluster_node nodes[2];
    char host[CLUSTER_NAME_MAX];

    cr_assert(eq(int, seen.confchgs + seen.quorums, 0), "init called back before the loop ran");
    run_loop();
    cr_assert(eq(int, seen.confchgs, 1));
    cr_assert(eq(int, seen.quorums, 1));
    cr_assert(seen.quorate);
    cr_assert(eq(sz, seen.nmembers, 1));
    cr_assert(eq(u32, seen.members[0].nodeid, 1));
    cr_assert(eq(u32, seen.members[0].pid, (uint32_t)getpid()));
    cr_assert(eq(sz, seen.nleft, 0));
    cr_assert(eq(sz, seen.njoined, 1));
    cr_assert(eq(u32, seen.joined[0].nodeid, 1));
    cr_assert(eq(u32, cluster_local.local_nodeid(cl), 1));

    cr_assert(eq(int, gethostname(host, sizeof host), 0));
    cr_assert(eq(int, cluster_local.nodelist(cl, nodes, 2), 1));
    cr_assert(eq(u32, nodes[0].nodeid, 1));
    cr_assert(eq(str, nodes[0].name, host));
    cr_assert(eq(int, cluster_local.nodelist(cl, nodes, 0), 0));
    assert_clean_delivery();
    finish();
}

static void *sender(void *arg)
{
    struct tagged t = {.sender = (uint32_t)(uintptr_t)arg};

    for (t.seq = 0; t.seq < PER_SENDER; t.seq++)
        if (cluster_local.send(cl, &t, sizeof t) != 0)
            return (void *)1;
    return NULL;
}

Test(cluster_local, delivers_every_message_once_in_sender_order_on_the_loop_thread)
{
    pthread_t threads[SENDERS];
    void *failed;
    uintptr_t i;

    seen.want = SENDERS * PER_SENDER;
    for (i = 0; i < SENDERS; i++)
        cr_assert(eq(int, pthread_create(&threads[i], NULL, sender, (void *)i), 0));
    run_loop();
    for (i = 0; i < SENDERS; i++) {
        cr_assert(eq(int, pthread_join(threads[i], &failed), 0));
        cr_assert(eq(ptr, failed, NULL), "send failed in sender %zu", (size_t)i);
        cr_assert(eq(u32, seen.next_seq[i], PER_SENDER), "sender %zu: %u of %d delivered",
                  (size_t)i, seen.next_seq[i], PER_SENDER);
    }
    cr_assert(eq(sz, seen.delivered, (size_t)SENDERS * PER_SENDER));
    assert_clean_delivery();
    finish();
}

Test(cluster_local, a_callback_may_send)
{
    struct tagged t = {.sender = 0, .seq = 0};

    /* The first message sets off a chain: each delivery sends the next. */
    seen.chain = 99;
    seen.want = 100;
    cr_assert(eq(int, cluster_local.send(cl, &t, sizeof t), 0));
    run_loop();
    cr_assert(eq(sz, seen.delivered, 100));
    cr_assert(eq(u32, seen.next_seq[0], 100));
    assert_clean_delivery();
    finish();
}

static bool check_big(const unsigned char *p, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        if (p[i] != (unsigned char)(i * 31 + 7))
            return false;
    return true;
}

static void on_deliver_big(void *ctx, uint32_t nodeid, uint32_t pid, const void *msg, size_t len)
{
    size_t i = seen.delivered;

    on_deliver(ctx, nodeid, pid, msg, len);
    if (i < 8)
        seen.contents_ok[i] = check_big(msg, len);
}

Test(cluster_local, sizes_up_to_the_limit_arrive_intact_and_larger_are_refused)
{
    static const struct cluster_events big_events = {
        .deliver = on_deliver_big,
        .confchg = on_confchg,
        .quorum = on_quorum,
    };
    size_t i, max = CLUSTER_MSG_MAX;
    unsigned char *buf = malloc(max + 1);

    cr_assert(not(eq(ptr, buf, NULL)));
    for (i = 0; i <= max; i++)
        buf[i] = (unsigned char)(i * 31 + 7);
    cluster_local.fini(cl);
    cr_assert(eq(int, cluster_local.init(&cl, "test", seen.loop, &big_events, &seen), 0));

    cr_assert(eq(int, cluster_local.send(cl, buf, max + 1), -EMSGSIZE));
    cr_assert(eq(int, cluster_local.send(cl, buf, max), 0));
    cr_assert(eq(int, cluster_local.send(cl, NULL, 0), 0));
    cr_assert(eq(int, cluster_local.send(cl, buf, 1), 0));
    seen.want = 3;
    run_loop();
    free(buf);
    cr_assert(eq(sz, seen.delivered, 3), "the refused message was delivered");
    cr_assert(eq(sz, seen.lens[0], max));
    cr_assert(eq(sz, seen.lens[1], 0));
    cr_assert(eq(sz, seen.lens[2], 1));
    cr_assert(seen.contents_ok[0] && seen.contents_ok[2], "message contents changed");
    assert_clean_delivery();
    finish();
}

static void on_settle(void *data)
{
    (void)data;
    qb_loop_stop(seen.loop);
}

Test(cluster_local, fini_drops_undelivered_messages_and_calls_nothing_back)
{
    qb_loop_timer_handle timer;
    struct tagged t = {0};
    int i, r;

    for (i = 0; i < 100; i++)
        cr_assert(eq(int, cluster_local.send(cl, &t, sizeof t), 0));
    cluster_local.fini(cl);
    cl = NULL;
    /* Give the loop a chance to misbehave: nothing may call back now. */
    r = qb_loop_timer_add(seen.loop, QB_LOOP_LOW, 100000000ULL, NULL, on_settle, &timer);
    cr_assert(eq(int, r, 0));
    qb_loop_run(seen.loop);
    cr_assert(eq(int, seen.confchgs + seen.quorums, 0));
    cr_assert(eq(sz, seen.delivered, 0));
    finish();
}
