/* test_replicas.c - the agreed replica set's transition rules
 * (mirror/replicas.c): every node applies them to the same messages, so
 * they must allow exactly the documented transitions and ignore the rest. */
#include "mirror/replicas.h"

#include <criterion/criterion.h>
#include <errno.h>

static struct store_volume vol3(void)
{
    struct store_volume v = {0};
    uint32_t nodes[] = {3, 1, 2, 1};
    replica_init(&v, nodes, 4);
    return v;
}

Test(replicas, init_sorts_and_dedups_all_current)
{
    struct store_volume v = vol3();
    cr_assert_eq(v.nreplicas, 3);
    for (uint32_t i = 0; i < 3; i++) {
        cr_assert_eq(v.replicas[i].node, i + 1);
        cr_assert_eq(v.replicas[i].state, REPLICA_CURRENT);
    }
    cr_assert_eq(replica_count(&v, REPLICA_CURRENT), 3);
}

Test(replicas, outdate_sync_current_cycle)
{
    struct store_volume v = vol3();
    cr_assert(replica_apply(&v, 2, REPLICA_OUTDATED));
    cr_assert_eq(replica_get(&v, 2), REPLICA_OUTDATED);
    cr_assert_not(replica_apply(&v, 2, REPLICA_OUTDATED), "outdating twice changes nothing");
    cr_assert_not(replica_apply(&v, 2, REPLICA_CURRENT), "outdated may not jump to current");
    cr_assert(replica_apply(&v, 2, REPLICA_SYNCING));
    cr_assert(replica_apply(&v, 2, REPLICA_CURRENT));
    cr_assert_eq(replica_count(&v, REPLICA_CURRENT), 3);
}

Test(replicas, stale_current_after_a_new_outdate_is_ignored)
{
    struct store_volume v = vol3();
    replica_apply(&v, 3, REPLICA_OUTDATED);
    replica_apply(&v, 3, REPLICA_SYNCING);
    cr_assert(replica_apply(&v, 3, REPLICA_OUTDATED), "a failed write during the resync");
    cr_assert_not(replica_apply(&v, 3, REPLICA_CURRENT), "the old resync's CURRENT");
    cr_assert_eq(replica_get(&v, 3), REPLICA_OUTDATED);
}

Test(replicas, a_new_node_joins_syncing_only)
{
    struct store_volume v = vol3();
    cr_assert_not(replica_apply(&v, 7, REPLICA_OUTDATED), "not a replica: nothing to outdate");
    cr_assert_not(replica_apply(&v, 7, REPLICA_CURRENT), "no replica becomes current uncopied");
    cr_assert_eq(replica_get(&v, 7), REPLICA_NONE);
    cr_assert(replica_apply(&v, 5, REPLICA_SYNCING));
    cr_assert_eq(v.nreplicas, 4);
    cr_assert_eq(v.replicas[3].node, 5, "kept sorted");
    cr_assert_not(replica_apply(&v, 0, REPLICA_SYNCING), "node 0 is nobody");
}

Test(replicas, a_full_set_refuses_more)
{
    struct store_volume v = {0};
    for (uint32_t n = 1; n <= STORE_REPLICAS_MAX; n++)
        cr_assert(replica_apply(&v, n, REPLICA_SYNCING));
    cr_assert_not(replica_apply(&v, STORE_REPLICAS_MAX + 1, REPLICA_SYNCING));
    cr_assert_eq(v.nreplicas, STORE_REPLICAS_MAX);
}

/* replica remove: the set shrinks and stays sorted. */
Test(replicas, remove_keeps_the_rest_in_order)
{
    struct store_volume v = {0};
    uint32_t nodes[] = {1, 2, 3};
    replica_init(&v, nodes, 3);
    cr_assert(replica_remove(&v, 2));
    cr_assert_eq(v.nreplicas, 2);
    cr_assert_eq(v.replicas[0].node, 1);
    cr_assert_eq(v.replicas[1].node, 3);
    cr_assert_eq(v.replicas[2].node, 0);
    cr_assert(!replica_remove(&v, 2));
}

/* The rules every node applies at a replica change's commit. */
Test(replicas, change_rules)
{
    struct store_volume v = {0};
    uint32_t nodes[] = {1, 2};
    replica_init(&v, nodes, 2);
    const struct store_replica *r = v.replicas;
    cr_expect_eq(replica_change_check(r, 2, true, 3, 2), 0);
    cr_expect_eq(replica_change_check(r, 2, true, 1, 2), -EEXIST);
    cr_expect_eq(replica_change_check(r, 2, false, 3, 2), -ENXIO);
    /* two current, min_current 2: neither may go; with 1, either may */
    cr_expect_eq(replica_change_check(r, 2, false, 1, 2), -EDQUOT);
    cr_expect_eq(replica_change_check(r, 2, false, 1, 1), 0);
    /* an outdated copy may go whatever min_current, unless no current
     * one would remain */
    cr_assert(replica_apply(&v, 2, REPLICA_OUTDATED));
    cr_expect_eq(replica_change_check(r, 2, false, 2, 2), 0);
    cr_expect_eq(replica_change_check(r, 2, false, 1, 0), -EDQUOT);
    cr_assert(replica_apply(&v, 1, REPLICA_OUTDATED));
    cr_expect_eq(replica_change_check(r, 2, false, 2, 0), -EDQUOT);
}

/* A placed set grows only by an agreed add: a node whose copy was removed
 * may not ask itself back in as a joiner does in an unplaced one. */
Test(replicas, a_placed_set_grows_only_by_join)
{
    struct store_volume v = {0};
    uint32_t nodes[] = {1, 2};
    replica_init(&v, nodes, 2);
    v.fixed = 1;
    cr_expect(!replica_apply(&v, 3, REPLICA_SYNCING));
    cr_assert(replica_join(&v, 3));
    cr_expect_eq(replica_get(&v, 3), REPLICA_SYNCING);
    cr_expect(!replica_join(&v, 3));
    v.fixed = 0;
    cr_expect(replica_apply(&v, 4, REPLICA_SYNCING));
}
