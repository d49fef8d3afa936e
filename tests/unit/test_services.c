/* test_services.c - the service address rules (policing/services.c):
 * address parsing, the deterministic choice of the survivor, what the
 * coordinator sends as nodes leave, return and are moved by hand, and
 * which addresses a node holds with and without quorum. */
#include "policing/services.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

static struct svc_table t;

/* Nodes 1..3, each announcing NET.(100+I)/24. */
static void three_nodes(void)
{
    memset(&t, 0, sizeof t);
    cr_assert(eq(int, svc_announce(&t, 1, "198.51.100.101/24"), 0));
    cr_assert(eq(int, svc_announce(&t, 2, "198.51.100.102/24"), 0));
    cr_assert(eq(int, svc_announce(&t, 3, "198.51.100.103/24"), 0));
}

static uint32_t holder_of(uint32_t owner)
{
    const struct svc_entry *e = svc_find(&t, owner);
    cr_assert_not_null(e, "no entry for node %u", owner);
    return e->holder;
}

/* Applies every move the coordinator plans, as the agreed stream would;
 * returns how many there were. */
static size_t run_plan(const uint32_t *members, size_t n, const uint32_t *current, size_t nc)
{
    struct svc_move mv[CLUSTER_NODES_MAX];
    size_t k = svc_plan(&t, members, n, current, nc, mv);
    for (size_t i = 0; i < k; i++)
        cr_assert(eq(int, svc_apply(&t, mv[i].owner, mv[i].holder, mv[i].manual), 0));
    return k;
}

Test(services, address_parsing)
{
    struct in_addr a;
    unsigned p = 0;
    cr_assert(eq(int, svc_addr_parse("192.0.2.101/24", &a, &p), 0));
    cr_assert(eq(u32, a.s_addr, inet_addr("192.0.2.101")));
    cr_assert(eq(u32, p, 24));
    cr_assert(eq(int, svc_addr_parse("10.0.0.1/32", NULL, &p), 0));
    cr_assert(eq(u32, p, 32));
    cr_assert(eq(int, svc_addr_parse("10.0.0.1/1", NULL, NULL), 0));
    static const char *const bad[] = {"",
                                      "10.0.0.1",
                                      "10.0.0.1/",
                                      "10.0.0.1/0",
                                      "10.0.0.1/33",
                                      "10.0.0.1/08",
                                      "10.0.0.1/2a",
                                      "10.0.0.1/24/",
                                      "10.0.0/24",
                                      "10.0.0.256/24",
                                      "::1/128",
                                      " 10.0.0.1/24",
                                      "10.0.0.1/ 24",
                                      "10.0.0.1/100",
                                      "/24"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert(eq(int, svc_addr_parse(bad[i], NULL, NULL), -EINVAL), "accepted \"%s\"", bad[i]);
}

Test(services, successor_is_the_next_id_wrapping)
{
    const uint32_t m[] = {7, 3, 12, 1};
    cr_assert(eq(u32, svc_successor(m, 4, 3), 7));
    cr_assert(eq(u32, svc_successor(m, 4, 5), 7)); /* owner not a member */
    cr_assert(eq(u32, svc_successor(m, 4, 7), 12));
    cr_assert(eq(u32, svc_successor(m, 4, 12), 1)); /* wraps to the lowest */
    cr_assert(eq(u32, svc_successor(m, 4, 99), 1));
    cr_assert(eq(u32, svc_successor(m, 4, 1), 3));
    const uint32_t alone[] = {4};
    cr_assert(eq(u32, svc_successor(alone, 1, 4), 0)); /* no one else */
    cr_assert(eq(u32, svc_successor(alone, 1, 2), 4));
    cr_assert(eq(u32, svc_successor(NULL, 0, 2), 0));
}

Test(services, announce_keeps_the_holder_and_forgets_an_empty_address)
{
    three_nodes();
    cr_assert(eq(u32, holder_of(2), 2));
    cr_assert(eq(int, svc_apply(&t, 2, 3, false), 0));
    cr_assert(eq(int, svc_announce(&t, 2, "198.51.100.202/24"), 0));
    cr_assert(eq(u32, holder_of(2), 3), "a new HELLO must not take the address back");
    cr_assert(eq(str, (char *)svc_find(&t, 2)->addr, "198.51.100.202/24"));
    cr_assert(eq(int, svc_announce(&t, 2, ""), 0));
    cr_assert_null(svc_find(&t, 2));
    cr_assert(eq(sz, t.n, 2));
    cr_assert(eq(int, svc_apply(&t, 2, 1, false), -ENOENT));
    cr_assert_not_null(svc_find(&t, 3)); /* the others stay */
}

Test(services, nothing_moves_in_a_steady_view)
{
    three_nodes();
    const uint32_t all[] = {1, 2, 3};
    struct svc_move mv[CLUSTER_NODES_MAX];
    cr_assert(eq(sz, svc_plan(&t, all, 3, all, 3, mv), 0));
    /* Nor while a member is resyncing and holds its own. */
    const uint32_t cur[] = {1, 3};
    cr_assert(eq(sz, svc_plan(&t, all, 3, cur, 2, mv), 0));
}

Test(services, takeover_then_giveback_once_current)
{
    three_nodes();
    const uint32_t without2[] = {1, 3};
    struct svc_move mv[CLUSTER_NODES_MAX];
    size_t k = svc_plan(&t, without2, 2, without2, 2, mv);
    cr_assert(eq(sz, k, 1));
    cr_assert(eq(u32, mv[0].owner, 2));
    cr_assert(eq(u32, mv[0].holder, 3));
    cr_assert(not(mv[0].manual));
    run_plan(without2, 2, without2, 2);
    cr_assert(eq(sz, run_plan(without2, 2, without2, 2), 0), "moves again once applied");

    /* Node 2 returns, not current yet: the address stays on 3. */
    const uint32_t all[] = {1, 2, 3};
    cr_assert(eq(sz, run_plan(all, 3, without2, 2), 0));
    cr_assert(eq(u32, holder_of(2), 3));
    /* Current: back to 2. */
    cr_assert(eq(sz, run_plan(all, 3, all, 3), 1));
    cr_assert(eq(u32, holder_of(2), 2));
}

Test(services, the_highest_id_goes_to_the_lowest)
{
    three_nodes();
    const uint32_t without3[] = {2, 1};
    run_plan(without3, 2, without3, 2);
    cr_assert(eq(u32, holder_of(3), 1));
}

Test(services, a_holder_that_leaves_passes_it_on)
{
    three_nodes();
    const uint32_t without2[] = {1, 3};
    run_plan(without2, 2, without2, 2);
    cr_assert(eq(u32, holder_of(2), 3));
    /* 3 goes too: 1 serves both 2's address and 3's. */
    const uint32_t only1[] = {1};
    run_plan(only1, 1, only1, 1);
    cr_assert(eq(u32, holder_of(2), 1));
    cr_assert(eq(u32, holder_of(3), 1));
    /* 3 returns current: its own comes back; 2's stays on 1, alive. */
    const uint32_t with3[] = {1, 3};
    run_plan(with3, 2, with3, 2);
    cr_assert(eq(u32, holder_of(3), 3));
    cr_assert(eq(u32, holder_of(2), 1));
}

Test(services, a_manual_failover_stays_until_giveback)
{
    three_nodes();
    const uint32_t all[] = {1, 2, 3};
    cr_assert(eq(int, svc_apply(&t, 3, 1, true), 0));
    cr_assert(eq(sz, run_plan(all, 3, all, 3), 0), "the coordinator undid a manual failover");
    cr_assert(eq(u32, holder_of(3), 1));
    /* The manual holder leaves: the owner, current, takes it back, and the
     * manual mark goes. */
    const uint32_t without1[] = {2, 3};
    cr_assert(eq(sz, run_plan(without1, 2, without1, 2), 2)); /* 1's address and 3's */
    cr_assert(eq(u32, holder_of(3), 3));
    cr_assert(not(svc_find(&t, 3)->manual));
    cr_assert(eq(u32, holder_of(1), 2));
}

Test(services, wanted_only_with_quorum_and_own_only_when_current)
{
    three_nodes();
    cr_assert(eq(int, svc_apply(&t, 2, 1, false), 0));
    struct svc_hold h[CLUSTER_NODES_MAX];
    size_t k = svc_wanted(&t, 1, true, true, h);
    cr_assert(eq(sz, k, 2));
    cr_assert(eq(u32, h[0].owner, 1));
    cr_assert(eq(str, h[0].addr, "198.51.100.101/24"));
    cr_assert(eq(u32, h[1].owner, 2));
    cr_assert(eq(str, h[1].addr, "198.51.100.102/24"));
    k = svc_wanted(&t, 1, true, false, h); /* resyncing: others' yes, own no */
    cr_assert(eq(sz, k, 1));
    cr_assert(eq(u32, h[0].owner, 2));
    cr_assert(eq(sz, svc_wanted(&t, 1, false, true, h), 0), "held addresses without quorum");
    cr_assert(eq(sz, svc_wanted(&t, 2, true, true, h), 0));
    cr_assert(eq(sz, svc_wanted(&t, 3, true, true, h), 1));
}

Test(services, a_full_table_refuses_more)
{
    memset(&t, 0, sizeof t);
    for (uint32_t i = 1; i <= CLUSTER_NODES_MAX; i++)
        cr_assert(eq(int, svc_announce(&t, i, "10.0.0.1/8"), 0));
    cr_assert(eq(int, svc_announce(&t, CLUSTER_NODES_MAX + 1, "10.0.0.2/8"), -ENOSPC));
    cr_assert(eq(int, svc_announce(&t, 5, "10.0.0.5/8"), 0), "an update needs no room");
}
