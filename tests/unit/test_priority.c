/* test_priority.c - the policing state machine (policing/priority.c) case
 * by case: the sticky fast path, two nodes alternating on one region, FIFO
 * order, leaves, deleted volumes, stray and duplicate messages, multi-region
 * writes, and the snapshot format. Several nodes are driven through a tiny
 * in-order bus; tests/unit/test_priority_sim.c does the same at random. */
#include "policing/priority.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NODES 4
#define MAX_MSGS 64

static const struct pol_key R1 = {7, 1}, R2 = {7, 2}, R3 = {7, 3}, OTHER = {8, 1};

/* ---- a little cluster: NODES state machines and an agreed message bus ---- */

struct msg {
    enum pol_action_kind kind; /* POL_SEND_REQUEST or POL_SEND_RELEASE */
    struct pol_key key;
    pol_node_t from;
};

static struct pol *node[NODES + 1]; /* node[1..NODES]; ids are the indices */
static struct pol_actions act[NODES + 1];
static struct msg bus[MAX_MSGS];
static size_t nbus;

static void setup(void)
{
    for (pol_node_t n = 1; n <= NODES; n++) {
        node[n] = pol_new(n);
        cr_assert_not_null(node[n], "pol_new(%u)", n);
    }
    nbus = 0;
}

static void teardown(void)
{
    for (pol_node_t n = 1; n <= NODES; n++) {
        pol_free(node[n]);
        node[n] = NULL;
        pol_actions_free(&act[n]);
    }
}

TestSuite(priority, .init = setup, .fini = teardown);

static bool same_key(struct pol_key a, struct pol_key b)
{
    return a.volume == b.volume && a.region == b.region;
}

/* How many actions of kind on k node n has pending. */
static size_t count(pol_node_t n, enum pol_action_kind kind, struct pol_key k)
{
    size_t c = 0;
    for (size_t i = 0; i < act[n].n; i++)
        c += act[n].v[i].kind == kind && same_key(act[n].v[i].key, k);
    return c;
}

/* Moves node n's sends to the bus, in order; other actions are dropped
 * (the tests look at them with count() first). */
static void send(pol_node_t n)
{
    for (size_t i = 0; i < act[n].n; i++) {
        const struct pol_action *a = &act[n].v[i];
        if (a->kind != POL_SEND_REQUEST && a->kind != POL_SEND_RELEASE)
            continue;
        cr_assert_lt(nbus, MAX_MSGS);
        bus[nbus++] = (struct msg){a->kind, a->key, n};
    }
    act[n].n = 0;
}

/* Node n applies message m. */
static void apply(pol_node_t n, const struct msg *m)
{
    if (m->kind == POL_SEND_REQUEST)
        pol_on_request(node[n], m->key, m->from, &act[n]);
    else
        pol_on_release(node[n], m->key, m->from, &act[n]);
}

/* Every node applies the first message on the bus, in node order. */
static void deliver_one(void)
{
    cr_assert_gt(nbus, 0, "nothing to deliver");
    struct msg m = bus[0];
    memmove(&bus[0], &bus[1], (nbus - 1) * sizeof(*bus));
    nbus--;
    for (pol_node_t n = 1; n <= NODES; n++)
        apply(n, &m);
}

static bool begin(pol_node_t n, struct pol_write *w)
{
    return pol_write_begin(node[n], w, &act[n]);
}

static void end(pol_node_t n, struct pol_write *w)
{
    pol_write_end(node[n], w, &act[n]);
}

static struct pol_write wr(struct pol_key k)
{
    return (struct pol_write){.volume = k.volume, .first = k.region, .last = k.region};
}

/* Node n gets k through the bus, with one write w that ends up in flight. */
static void own(pol_node_t n, struct pol_key k, struct pol_write *w)
{
    *w = wr(k);
    cr_assert(!begin(n, w), "n%u: a write started without a grant", n);
    cr_assert_eq(count(n, POL_SEND_REQUEST, k), 1);
    send(n);
    deliver_one();
    cr_assert_eq(count(n, POL_WAKE, k), 1, "n%u: the grant woke nothing", n);
    act[n].n = 0;
    cr_assert(begin(n, w), "n%u: woken write did not start", n);
    cr_assert_eq(act[n].n, 0);
}

static void expect_queue(pol_node_t n, struct pol_key k, const pol_node_t *want, size_t nwant)
{
    pol_node_t got[NODES + 1];
    size_t ngot = pol_waiters(node[n], k, got, NODES + 1);
    cr_assert_eq(ngot, nwant, "n%u: %zu waiting, expected %zu", n, ngot, nwant);
    for (size_t i = 0; i < nwant; i++)
        cr_assert_eq(got[i], want[i], "n%u: waiter %zu is n%u, expected n%u", n, i, got[i],
                     want[i]);
}

/* Every node holds the same table for k. */
static void expect_everywhere(struct pol_key k, pol_node_t owner, const pol_node_t *q, size_t nq)
{
    for (pol_node_t n = 1; n <= NODES; n++) {
        cr_assert_eq(pol_owner(node[n], k), owner, "n%u: owner n%u, expected n%u", n,
                     pol_owner(node[n], k), owner);
        expect_queue(n, k, q, nq);
    }
}

/* ---- tests ----------------------------------------------------------------- */

/* What pol_restore asks for; the restore tests check tables, not these. */
static struct pol_actions restore_out;

Test(priority, new_refuses_node_zero)
{
    errno = 0;
    cr_assert_null(pol_new(0));
    cr_assert_eq(errno, EINVAL);
}

Test(priority, sticky_fast_path_sends_nothing_after_the_grant)
{
    struct pol_write w;
    own(1, R1, &w);
    end(1, &w);
    for (int i = 0; i < 100; i++) {
        struct pol_write again = wr(R1);
        cr_assert(begin(1, &again), "write %d on an owned region waited", i);
        end(1, &again);
    }
    cr_assert_eq(act[1].n, 0, "the fast path produced %zu actions", act[1].n);
    cr_assert_eq(nbus, 0);
    expect_everywhere(R1, 1, NULL, 0);
    cr_assert_eq(pol_regions(node[1]), 1);
}

Test(priority, owner_releases_after_in_flight_writes_then_nodes_alternate)
{
    struct pol_write a1, a2, b1 = wr(R1), b2 = wr(R1);
    own(1, R1, &a1);

    /* n2 asks; n1 keeps R1 while a1 is in flight and starts nothing new. */
    cr_assert(!begin(2, &b1));
    send(2);
    deliver_one();
    cr_assert_eq(act[1].n, 0, "n1 released with a write in flight");
    a2 = wr(R1);
    cr_assert(!begin(1, &a2), "n1 started a write on a contended region");
    cr_assert_eq(act[1].n, 0, "n1 asked for a region it still owns");

    /* a1 ends: RELEASE, and right behind it a REQUEST for a2. */
    end(1, &a1);
    cr_assert_eq(act[1].n, 2);
    cr_assert_eq(act[1].v[0].kind, POL_SEND_RELEASE);
    cr_assert_eq(act[1].v[1].kind, POL_SEND_REQUEST);
    send(1);
    deliver_one(); /* RELEASE: R1 goes to n2 */
    expect_everywhere(R1, 2, NULL, 0);
    cr_assert_eq(count(2, POL_WAKE, R1), 1);
    act[2].n = 0;
    deliver_one(); /* n1's REQUEST: n2 is contended before b1 retried */
    expect_everywhere(R1, 2, (pol_node_t[]){1}, 1);
    cr_assert_eq(act[2].n, 0, "n2 released before its waiting write ran");

    /* b1 was waiting at the grant, so it may still start; b2 may not. */
    cr_assert(begin(2, &b1), "the write n2 asked for was starved");
    cr_assert(!begin(2, &b2), "n2 started a write it had not asked for");
    end(2, &b1);
    cr_assert_eq(count(2, POL_SEND_RELEASE, R1), 1);
    cr_assert_eq(count(2, POL_SEND_REQUEST, R1), 1);
    send(2);
    deliver_one();
    expect_everywhere(R1, 1, NULL, 0);
    cr_assert_eq(count(1, POL_WAKE, R1), 1);
    act[1].n = 0;
    deliver_one();
    expect_everywhere(R1, 1, (pol_node_t[]){2}, 1);
    cr_assert(begin(1, &a2), "n1's waiting write did not get its turn");
    end(1, &a2);
    send(1);
    deliver_one();
    expect_everywhere(R1, 2, NULL, 0);
    cr_assert_eq(count(2, POL_WAKE, R1), 1);
    act[2].n = 0;
    cr_assert(begin(2, &b2), "n2's held-back write did not get its turn");
}

Test(priority, waiters_are_served_in_agreed_order)
{
    struct pol_write w;
    own(1, R1, &w);
    struct pol_write x[NODES + 1];
    for (pol_node_t n = 2; n <= NODES; n++) {
        x[n] = wr(R1);
        cr_assert(!begin(n, &x[n]));
    }
    /* The bus orders them 3, 4, 2, whatever the order they asked in. */
    send(3);
    send(4);
    send(2);
    for (int i = 0; i < 3; i++)
        deliver_one();
    expect_everywhere(R1, 1, (pol_node_t[]){3, 4, 2}, 3);
    end(1, &w);
    send(1);
    deliver_one();
    expect_everywhere(R1, 3, (pol_node_t[]){4, 2}, 2);
    act[3].n = 0;
    cr_assert(begin(3, &x[3]));
    end(3, &x[3]);
    send(3);
    deliver_one();
    expect_everywhere(R1, 4, (pol_node_t[]){2}, 1);
    act[4].n = 0;
    cr_assert(begin(4, &x[4]));
    end(4, &x[4]);
    send(4);
    deliver_one();
    expect_everywhere(R1, 2, NULL, 0);
}

Test(priority, leave_passes_regions_to_the_first_waiter_and_reports_them_lost)
{
    struct pol_write w1, w3;
    own(1, R1, &w1);
    own(3, R3, &w3);
    struct pol_write b = wr(R1), c = wr(R1), a3 = wr(R3);
    cr_assert(!begin(2, &b));
    send(2);
    cr_assert(!begin(4, &c));
    send(4);
    cr_assert(!begin(1, &a3));
    send(1);
    for (int i = 0; i < 3; i++)
        deliver_one();
    expect_everywhere(R1, 1, (pol_node_t[]){2, 4}, 2);
    expect_everywhere(R3, 3, (pol_node_t[]){1}, 1);

    /* n1 applies its own leave too, as after cpg_leave. */
    for (pol_node_t n = 1; n <= NODES; n++)
        pol_on_leave(node[n], 1, &act[n]);
    expect_everywhere(R1, 2, (pol_node_t[]){4}, 1);
    expect_everywhere(R3, 3, NULL, 0);
    for (pol_node_t n = 1; n <= NODES; n++) {
        cr_assert_eq(count(n, POL_LOST, R1), 1, "n%u: R1 not reported lost", n);
        cr_assert_eq(count(n, POL_LOST, R3), 0, "n%u: R3 reported lost", n);
    }
    /* On the new owner, LOST comes before the WAKE that lets writes run. */
    cr_assert_eq(act[2].n, 2);
    cr_assert_eq(act[2].v[0].kind, POL_LOST);
    cr_assert_eq(act[2].v[0].node, 1);
    cr_assert_eq(act[2].v[1].kind, POL_WAKE);
    act[2].n = 0;
    cr_assert(begin(2, &b));
}

Test(priority, leave_of_the_only_waiter_wakes_writes_held_back)
{
    struct pol_write a, held, b = wr(R1);
    own(1, R1, &a);
    cr_assert(!begin(2, &b));
    send(2);
    deliver_one();
    held = wr(R1);
    cr_assert(!begin(1, &held));
    pol_on_leave(node[1], 2, &act[1]);
    cr_assert_eq(count(1, POL_WAKE, R1), 1, "contention ended, nothing woken");
    act[1].n = 0;
    cr_assert(begin(1, &held));
    end(1, &a);
    end(1, &held);
    cr_assert_eq(act[1].n, 0, "released with nobody waiting");
}

Test(priority, cancelled_wait_releases_an_unwanted_grant)
{
    struct pol_write a, b = wr(R1), c = wr(R1);
    own(1, R1, &a);
    cr_assert(!begin(2, &b));
    send(2);
    cr_assert(!begin(3, &c));
    send(3);
    deliver_one();
    deliver_one();
    pol_write_cancel(node[2], &b, &act[2]);
    cr_assert_eq(act[2].n, 0);
    end(1, &a);
    send(1);
    deliver_one();
    /* n2 no longer wants R1: it passes it straight on to n3. */
    cr_assert_eq(count(2, POL_WAKE, R1), 0);
    cr_assert_eq(count(2, POL_SEND_RELEASE, R1), 1);
    send(2);
    deliver_one();
    expect_everywhere(R1, 3, NULL, 0);
}

Test(priority, volume_gone_forgets_its_regions)
{
    struct pol_write a, o, b = wr(R1);
    own(1, R1, &a);
    own(1, OTHER, &o);
    cr_assert(!begin(2, &b));
    send(2);
    deliver_one();
    for (pol_node_t n = 1; n <= NODES; n++) {
        pol_on_volume_gone(node[n], R1.volume, &act[n]);
        cr_assert_eq(act[n].n, 0);
        cr_assert_eq(pol_owner(node[n], R1), 0);
        cr_assert_eq(pol_waiters(node[n], R1, NULL, 0), 0);
        cr_assert_eq(pol_owner(node[n], OTHER), 1, "n%u lost another volume's region", n);
        cr_assert_eq(pol_regions(node[n]), 1);
    }
    /* The writes of the deleted volume end or give up harmlessly. */
    end(1, &a);
    pol_write_cancel(node[2], &b, &act[2]);
    cr_assert_eq(act[1].n + act[2].n, 0);
    end(1, &o);
    cr_assert_eq(pol_regions(node[1]), 1);
}

Test(priority, duplicate_and_stray_messages_are_ignored)
{
    struct pol *p = node[4];
    struct pol_actions *out = &act[4];
    pol_on_request(p, R1, 1, out);
    pol_on_request(p, R1, 2, out);
    pol_on_request(p, R1, 1, out); /* the owner again */
    pol_on_request(p, R1, 2, out); /* a waiter again */
    pol_on_request(p, R1, 0, out); /* nobody */
    expect_queue(4, R1, (pol_node_t[]){2}, 1);
    cr_assert_eq(pol_owner(p, R1), 1);
    pol_on_release(p, R1, 2, out); /* not the owner */
    pol_on_release(p, R2, 1, out); /* a region nobody holds */
    pol_on_release(p, R1, 0, out);
    pol_on_leave(p, 3, out); /* not a member of anything */
    pol_on_leave(p, 0, out);
    cr_assert_eq(pol_owner(p, R1), 1);
    expect_queue(4, R1, (pol_node_t[]){2}, 1);
    cr_assert_eq(pol_regions(p), 1);
    cr_assert_eq(out->n, 0, "stray messages produced %zu actions", out->n);
    pol_on_release(p, R1, 1, out);
    pol_on_release(p, R1, 1, out); /* a late duplicate: n1 owns nothing now */
    cr_assert_eq(pol_owner(p, R1), 2);
    pol_on_release(p, R1, 2, out);
    cr_assert_eq(pol_owner(p, R1), 0);
    cr_assert_eq(pol_regions(p), 0, "a free region stayed in the table");
    cr_assert_eq(out->n, 0);
}

Test(priority, multi_region_write_takes_regions_in_ascending_order)
{
    struct pol_write w = {.volume = 7, .first = 1, .last = 3};
    struct pol_write other = wr(R2);
    own(2, R2, &other);

    /* Only the lowest region is asked for, then each next one in turn. */
    cr_assert(!begin(1, &w));
    cr_assert_eq(act[1].n, 1);
    cr_assert_eq(count(1, POL_SEND_REQUEST, R1), 1);
    send(1);
    deliver_one();
    act[1].n = 0;
    cr_assert(!begin(1, &w), "started without R2 and R3");
    cr_assert_eq(count(1, POL_SEND_REQUEST, R2), 1);
    cr_assert_eq(count(1, POL_SEND_REQUEST, R3), 0, "asked for R3 before holding R2");
    send(1);
    deliver_one();

    /* R1 stays pinned while the write waits: n3's request must wait. */
    struct pol_write c = wr(R1);
    cr_assert(!begin(3, &c));
    send(3);
    deliver_one();
    cr_assert_eq(count(1, POL_SEND_RELEASE, R1), 0, "a pinned region was released");
    end(2, &other);
    send(2);
    deliver_one();
    act[1].n = 0;
    cr_assert(!begin(1, &w));
    cr_assert_eq(count(1, POL_SEND_REQUEST, R3), 1);
    send(1);
    deliver_one();
    act[1].n = 0;
    cr_assert(begin(1, &w), "all three regions granted, the write did not start");
    for (pol_node_t n = 1; n <= NODES; n++)
        for (uint64_t r = 1; r <= 3; r++)
            cr_assert_eq(pol_owner(node[n], (struct pol_key){7, r}), 1);
    end(1, &w);
    cr_assert_eq(count(1, POL_SEND_RELEASE, R1), 1, "R1 not released to n3 after the write");
    cr_assert_eq(count(1, POL_SEND_RELEASE, R2), 0);
    send(1);
    deliver_one();
    expect_everywhere(R1, 3, NULL, 0);
}

/* ---- snapshots ---------------------------------------------------------- */

static void build_table(struct pol *p)
{
    struct pol_actions out = {0};
    pol_on_request(p, R1, 1, &out);
    pol_on_request(p, R1, 3, &out);
    pol_on_request(p, R1, 2, &out);
    pol_on_request(p, R2, 2, &out);
    pol_on_request(p, OTHER, 3, &out);
    pol_on_request(p, OTHER, 1, &out);
    pol_on_request(p, (struct pol_key){1, UINT64_C(1) << 40}, 4, &out);
    pol_actions_free(&out);
}

static void snapshot(struct pol *p, void **buf, size_t *len)
{
    int r = pol_snapshot(p, buf, len);
    cr_assert_eq(r, 0, "pol_snapshot: %s", strerror(-r));
}

Test(priority, snapshot_round_trip)
{
    build_table(node[4]);
    void *buf, *again;
    size_t len, len2;
    snapshot(node[4], &buf, &len);
    const uint8_t *b = buf;
    cr_assert(memcmp(b, "VPOL\1\0\0\0\4\0\0\0", 12) == 0, "header not little endian VPOL v1 n4");
    cr_assert_eq(len, 12 + 4 * 20 + 4 * 3);

    cr_assert_eq(pol_restore(node[2], buf, len, &restore_out), 0);
    for (pol_node_t n = 2; n <= 4; n += 2) {
        cr_assert_eq(pol_owner(node[n], R1), 1);
        expect_queue(n, R1, (pol_node_t[]){3, 2}, 2);
        cr_assert_eq(pol_owner(node[n], R2), 2);
        expect_queue(n, OTHER, (pol_node_t[]){1}, 1);
        cr_assert_eq(pol_owner(node[n], ((struct pol_key){1, UINT64_C(1) << 40})), 4);
        cr_assert_eq(pol_regions(node[n]), 4);
    }
    snapshot(node[2], &again, &len2);
    cr_assert(len == len2 && memcmp(buf, again, len) == 0, "restored table encodes differently");
    free(again);

    /* The restored node goes on under the same rules. */
    pol_on_release(node[2], R1, 1, &act[2]);
    cr_assert_eq(pol_owner(node[2], R1), 3);

    /* Restoring replaces the table; an empty snapshot empties it. */
    cr_assert_eq(pol_restore(node[2], buf, len, &restore_out), 0);
    cr_assert_eq(pol_owner(node[2], R1), 1);
    free(buf);
    snapshot(node[1], &buf, &len);
    cr_assert_eq(len, 12);
    cr_assert_eq(pol_restore(node[2], buf, len, &restore_out), 0);
    cr_assert_eq(pol_regions(node[2]), 0);
    free(buf);
}

/* A sync round: node 2 held back what node 1 applied and then loads node
 * 1's table. What those events meant for node 2 must still happen: the
 * region it asked for was granted (its write wakes and starts), and the
 * region it owns that node 1 now waits for goes (node 2 has no write on
 * it). Before, both stayed with node 2 and every writer waited for good. */
Test(priority, restore_catches_up_with_a_round)
{
    struct pol_write w1 = wr(R1), w2 = wr(R2), w3;
    own(1, R1, &w3);
    end(1, &w3);
    own(2, R2, &w3);
    end(2, &w3);
    act[1].n = act[2].n = 0;
    cr_assert(!begin(2, &w1), "n2: wrote R1 without it");
    cr_assert(!begin(1, &w2), "n1: wrote R2 without it");
    /* Node 1 applies both requests (it is the winner); node 2 holds them. */
    pol_on_request(node[1], R1, 2, &act[1]);
    pol_on_request(node[1], R2, 1, &act[1]);
    cr_assert_eq(count(1, POL_SEND_RELEASE, R1), 1, "n1 gives R1 up to the waiting n2");
    pol_on_release(node[1], R1, 1, &act[1]);
    cr_assert_eq(pol_owner(node[1], R1), 2);
    cr_assert_eq(pol_owner(node[1], R2), 2);
    void *buf;
    size_t len;
    snapshot(node[1], &buf, &len);
    act[2].n = 0;
    cr_assert_eq(pol_restore(node[2], buf, len, &act[2]), 0);
    free(buf);
    cr_assert_eq(count(2, POL_WAKE, R1), 1, "n2: the grant of R1 during the round woke nothing");
    cr_assert_eq(count(2, POL_SEND_RELEASE, R2), 1, "n2 keeps R2 although n1 waits for it");
    act[2].n = 0;
    cr_assert(begin(2, &w1), "n2: its write on R1 does not start");
    end(2, &w1);
}

static void put32(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

/* The snapshot of build_table with one 32-bit field replaced must be
 * refused, leaving the target table as it was. */
static void refused(const uint8_t *good, size_t len, size_t off, uint32_t value, const char *why)
{
    uint8_t *bad = malloc(len);
    cr_assert_not_null(bad);
    memcpy(bad, good, len);
    put32(bad + off, value);
    void *before, *after;
    size_t lb, la;
    snapshot(node[1], &before, &lb);
    int r = pol_restore(node[1], bad, len, &restore_out);
    cr_assert_eq(r, -EINVAL, "%s: pol_restore = %d, expected -EINVAL", why, r);
    snapshot(node[1], &after, &la);
    cr_assert(lb == la && memcmp(before, after, lb) == 0, "%s: the table changed", why);
    free(before);
    free(after);
    free(bad);
}

Test(priority, malformed_snapshots_are_rejected_unchanged)
{
    struct pol_write w;
    own(1, R3, &w); /* node 1 has a table to keep */
    struct pol *src = pol_new(9);
    cr_assert_not_null(src);
    build_table(src);
    void *buf;
    size_t len;
    snapshot(src, &buf, &len);
    pol_free(src);
    const uint8_t *b = buf;
    /* Entries, sorted: v1 r2^40 (n4) | v7 r1 (n1: 3, 2) | v7 r2 (n2) | v8 r1 (n3: 1). */
    const size_t e0 = 12, e1 = e0 + 20, e2 = e1 + 28, e3 = e2 + 20;
    refused(b, len, 0, 0x4c4f5057, "bad magic");
    refused(b, len, 4, 2, "unknown version");
    refused(b, len, 8, 5, "count too large");
    refused(b, len, 8, 3, "count too small (trailing bytes)");
    refused(b, len, 8, UINT32_MAX, "absurd count");
    refused(b, len, e0 + 12, 0, "owner 0");
    refused(b, len, e1 + 16, 14, "waiter count beyond the end");
    refused(b, len, e1 + 16, UINT32_MAX, "absurd waiter count");
    refused(b, len, e1 + 20, 0, "waiter 0");
    refused(b, len, e1 + 20, 1, "owner among its waiters");
    refused(b, len, e1 + 24, 3, "duplicate waiter");
    refused(b, len, e2 + 4, 1, "duplicate key");
    refused(b, len, e3, 7, "duplicate key, out of order");

    void *before, *after;
    size_t lb, la;
    snapshot(node[1], &before, &lb);
    for (size_t cut = 0; cut < len; cut++)
        cr_assert_eq(pol_restore(node[1], b, cut, &restore_out), -EINVAL,
                     "truncated to %zu accepted", cut);
    uint8_t *longer = calloc(1, len + 4);
    cr_assert_not_null(longer);
    memcpy(longer, b, len);
    cr_assert_eq(pol_restore(node[1], longer, len + 4, &restore_out), -EINVAL,
                 "trailing bytes accepted");
    cr_assert_eq(pol_restore(node[1], NULL, 0, &restore_out), -EINVAL);
    snapshot(node[1], &after, &la);
    cr_assert(lb == la && memcmp(before, after, lb) == 0, "a refused snapshot changed the table");
    free(longer);
    free(before);
    free(after);
    free(buf);

    /* Local bookkeeping survived too: node 1 still writes R3. */
    end(1, &w);
    cr_assert(begin(1, &w));
}

/* A RELEASE this node decided but has not sent yet (the main loop leaves
 * it to the beat thread, which may be waiting out corosync's flow
 * control) when a round restores the table: the region is still on its
 * way out, so no write may start on it here, or it would run on while
 * the RELEASE hands the region to another writer. */
Test(priority, a_restore_keeps_a_release_not_yet_sent_releasing)
{
    struct pol_write w = wr(R1), w3 = wr(R1), tmp;
    own(1, R1, &tmp);
    end(1, &tmp);
    act[1].n = 0;
    /* Node 2 asks; node 1 decides its RELEASE, not sent yet. */
    cr_assert(!begin(2, &tmp));
    send(2);
    deliver_one();
    cr_assert_eq(count(1, POL_SEND_RELEASE, R1), 1);
    struct pol_actions pending = act[1];
    act[1] = (struct pol_actions){0};
    /* Node 2 restarts: it leaves, and a round gives node 1 node 3's table. */
    for (pol_node_t n = 1; n <= NODES; n++)
        pol_on_leave(node[n], 2, &act[n]);
    act[1].n = 0;
    void *buf;
    size_t len;
    snapshot(node[3], &buf, &len);
    cr_assert_eq(pol_restore(node[1], buf, len, &act[1]), 0);
    free(buf);
    act[1].n = 0;
    cr_expect(!begin(1, &w), "node 1 started a write on R1 while its RELEASE was still to go");
    /* The RELEASE goes out; node 3 asks and is granted. */
    act[1] = pending;
    send(1);
    deliver_one();
    cr_assert(!begin(3, &w3));
    send(3);
    deliver_one();
    act[3].n = 0;
    cr_expect(begin(3, &w3), "node 3 was not granted R1 after node 1's RELEASE");
}
