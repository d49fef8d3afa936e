/* test_placement.c - the choice of a new volume's replica nodes
 * (policing/placement.c): most free first, ties to fewer replicas then the
 * lower id, the overcommit bound, pinned nodes and every refusal. */
#include "policing/placement.h"

#include <criterion/criterion.h>
#include <errno.h>

#define G (1024ull * 1024 * 1024)

static const struct place_node four[] = {
    {.node = 1, .capacity = 100 * G, .used = 50 * G, .provisioned = 60 * G, .replicas = 3},
    {.node = 2, .capacity = 100 * G, .used = 10 * G, .provisioned = 20 * G, .replicas = 1},
    {.node = 3, .capacity = 100 * G, .used = 10 * G, .provisioned = 10 * G, .replicas = 0},
    {.node = 4, .capacity = 100 * G, .used = 90 * G, .provisioned = 190 * G, .replicas = 5},
};

Test(placement, most_free_first_then_fewer_replicas_then_lower_id)
{
    uint32_t out[4], bad;
    cr_assert_eq(place_volume(four, 4, G, 2, 2.0, NULL, 0, out, &bad), 0);
    cr_assert_eq(out[0], 2);
    cr_assert_eq(out[1], 3, "2 and 3 are the freest; the set is sorted by id");
    cr_assert_eq(place_volume(four, 4, G, 1, 2.0, NULL, 0, out, &bad), 0);
    cr_assert_eq(out[0], 3, "a tie in free space goes to the node with fewer replicas");

    struct place_node tie[] = {{.node = 7, .capacity = G}, {.node = 5, .capacity = G}};
    cr_assert_eq(place_volume(tie, 2, 1, 1, 1.0, NULL, 0, out, &bad), 0);
    cr_assert_eq(out[0], 5, "then the lower id");
}

Test(placement, overcommit_bounds_provisioned_over_capacity)
{
    uint32_t out[4], bad;
    /* Node 4 has 190 G provisioned of 200 G allowed: 11 G more does not
     * fit, so a 3-way volume of 11 G skips it for node 1. */
    cr_assert_eq(place_volume(four, 4, 11 * G, 3, 2.0, NULL, 0, out, &bad), 0);
    cr_assert_eq(out[0], 1);
    cr_assert_eq(out[1], 2);
    cr_assert_eq(out[2], 3);
    cr_assert_eq(place_volume(four, 4, 11 * G, 4, 2.0, NULL, 0, out, &bad), -ENOSPC);
    cr_assert_eq(place_volume(four, 4, 10 * G, 4, 2.0, NULL, 0, out, &bad), 0,
                 "exactly at the bound fits");
    cr_assert_eq(place_volume(four, 4, 200 * G, 1, 2.0, NULL, 0, out, &bad), -ENOSPC,
                 "a volume that fits nowhere is refused");
    struct place_node unknown = {.node = 9, .capacity = 0};
    cr_assert_not(place_fits(&unknown, 1, 2.0), "no capacity announced: nothing fits");
}

Test(placement, counts_out_of_range)
{
    uint32_t out[4], bad;
    cr_assert_eq(place_volume(four, 4, G, 0, 2.0, NULL, 0, out, &bad), -EINVAL);
    cr_assert_eq(place_volume(four, 4, G, 5, 2.0, NULL, 0, out, &bad), -EINVAL);
    uint32_t pin[] = {1, 2};
    cr_assert_eq(place_volume(four, 4, G, 3, 2.0, pin, 2, out, &bad), -EINVAL,
                 "a replica count other than the nodes named");
}

Test(placement, pinned_nodes)
{
    uint32_t out[4], bad;
    uint32_t pin[] = {4, 1};
    cr_assert_eq(place_volume(four, 4, G, 2, 2.0, pin, 2, out, &bad), 0);
    cr_assert_eq(out[0], 1);
    cr_assert_eq(out[1], 4, "the nodes named, sorted, whatever their free space");
    cr_assert_eq(place_volume(four, 4, 20 * G, 2, 2.0, pin, 2, out, &bad), -ENOSPC);
    cr_assert_eq(bad, 4, "names the node that has no room");
    uint32_t ghost[] = {1, 8};
    cr_assert_eq(place_volume(four, 4, G, 2, 2.0, ghost, 2, out, &bad), -ENOENT);
    cr_assert_eq(bad, 8);
    uint32_t twice[] = {2, 2};
    cr_assert_eq(place_volume(four, 4, G, 2, 2.0, twice, 2, out, &bad), -EINVAL);
}
