/* test_fuse_replicas.c - vsan-fuse's endpoint logic (fuse/replicas.c): the
 * --nodes parser with its error position, the description token vsand
 * writes (volume/volume.c) and malformed ones, and the local-first order. */
#include "fuse/replicas.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>

Test(fuse_replicas, nodes_list)
{
    struct vr_list l;
    cr_assert_eq(vr_parse_nodes("10.0.0.1:10809,[2001:db8::2]:7,n3.example:65535", &l, NULL, NULL),
                 0);
    cr_assert_eq(l.n, 3);
    cr_assert_str_eq(l.v[0].host, "10.0.0.1");
    cr_assert_str_eq(l.v[0].port, "10809");
    cr_assert_str_eq(l.v[1].host, "2001:db8::2");
    cr_assert_str_eq(l.v[1].port, "7");
    cr_assert_str_eq(l.v[1].addr, "[2001:db8::2]:7");
    cr_assert_str_eq(l.v[2].host, "n3.example");
    cr_assert_eq(l.v[0].id, 0, "--nodes entries have no node id");
}

Test(fuse_replicas, nodes_unix_socket)
{
    struct vr_list l;
    cr_assert_eq(vr_parse_nodes("/run/vsan/nbd.sock", &l, NULL, NULL), 0);
    cr_assert_eq(l.n, 1);
    cr_assert_str_eq(l.v[0].host, "/run/vsan/nbd.sock");
    cr_assert_str_eq(l.v[0].port, "");
}

/* The bad entry is reported, not the whole argument. */
static void assert_bad(const char *arg, const char *entry)
{
    struct vr_list l;
    const char *bad = NULL;
    size_t len = 99;
    cr_assert_eq(vr_parse_nodes(arg, &l, &bad, &len), -EINVAL, "accepted %s", arg);
    cr_assert_not_null(bad);
    cr_assert_eq(len, strlen(entry), "%s: bad entry length %zu", arg, len);
    cr_assert_eq(strncmp(bad, entry, len), 0, "%s: bad entry %.*s", arg, (int)len, bad);
}

Test(fuse_replicas, nodes_rejected)
{
    assert_bad("10.0.0.1", "10.0.0.1");
    assert_bad("a:1,b:0", "b:0");
    assert_bad("a:1,b:65536", "b:65536");
    assert_bad("a:1,,b:2", "");
    assert_bad("a:1,", "");
    assert_bad("", "");
    assert_bad(":10809", ":10809");
    assert_bad("host:port", "host:port");
    assert_bad("2001:db8::1:10809", "2001:db8::1:10809");
    assert_bad("[2001:db8::1]10809", "[2001:db8::1]10809");
    assert_bad("a b:1", "a b:1");
    assert_bad("a@b:1", "a@b:1");
    assert_bad("x:-1", "x:-1");
}

Test(fuse_replicas, description_token)
{
    struct vr_list l;
    const char *d = "vsan volume db (7bf008e2-b842-4174-8574-8a0fe948435a) "
                    "replicas=1@198.51.100.11:10809,3@[2001:db8::3]:10810";
    cr_assert_eq(vr_parse_description(d, &l), 0);
    cr_assert_eq(l.n, 2);
    cr_assert_eq(l.v[0].id, 1);
    cr_assert_str_eq(l.v[0].host, "198.51.100.11");
    cr_assert_str_eq(l.v[0].port, "10809");
    cr_assert_eq(l.v[1].id, 3);
    cr_assert_str_eq(l.v[1].host, "2001:db8::3");
    cr_assert_str_eq(l.v[1].port, "10810");
    cr_assert_eq(vr_find_id(&l, 3), 1);
    cr_assert_eq(vr_find_id(&l, 2), -1);
}

Test(fuse_replicas, description_without_token)
{
    struct vr_list l;
    cr_assert_eq(vr_parse_description("vsan volume db (uuid)", &l), -ENOENT);
    cr_assert_eq(vr_parse_description("memory export x", &l), -ENOENT);
    cr_assert_eq(l.n, 0);
}

Test(fuse_replicas, description_malformed)
{
    struct vr_list l;
    const char *bad[] = {
        "v replicas=",               /* empty */
        "v replicas=1@a:1,",         /* trailing comma */
        "v replicas=a:1",            /* no id */
        "v replicas=0@a:1",          /* id 0 is "unknown" */
        "v replicas=x@a:1",          /* id not a number */
        "v replicas=1@a:1,1@b:2",    /* the same node twice */
        "v replicas=1@a",            /* no port */
        "v replicas=4294967296@a:1", /* id too large */
        "v replicas=1@a:1,,2@b:2",   /* empty entry */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(vr_parse_description(bad[i], &l), -EINVAL, "accepted \"%s\"", bad[i]);
}

/* Text after the token (a future field) ends it. */
Test(fuse_replicas, description_token_then_more)
{
    struct vr_list l;
    cr_assert_eq(vr_parse_description("v replicas=2@h:5 next=x", &l), 0);
    cr_assert_eq(l.n, 1);
    cr_assert_eq(l.v[0].id, 2);
    cr_assert_str_eq(l.v[0].port, "5");
}

Test(fuse_replicas, local_first_stable)
{
    struct vr_list l;
    cr_assert_eq(vr_parse_description("v replicas=1@10.0.0.1:1,2@10.0.0.2:1,3@10.0.0.3:1,"
                                      "4@10.0.0.4:1",
                                      &l),
                 0);
    const char *local[] = {"192.168.1.5", "10.0.0.3"};
    vr_order(&l, local, 2);
    cr_assert_eq(l.n, 4);
    uint32_t want[] = {3, 1, 2, 4};
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(l.v[i].id, want[i], "position %zu: node %u", i, l.v[i].id);
}

Test(fuse_replicas, local_names)
{
    struct vr_node n = {0};
    cr_assert_eq(vr_parse_addr("127.0.0.1:5", 11, &n), 0);
    cr_assert(vr_is_local(&n, NULL, 0));
    cr_assert_eq(vr_parse_addr("[::1]:5", 7, &n), 0);
    cr_assert(vr_is_local(&n, NULL, 0));
    cr_assert_eq(vr_parse_addr("/tmp/s", 6, &n), 0);
    cr_assert(vr_is_local(&n, NULL, 0));
    cr_assert_eq(vr_parse_addr("10.1.1.1:5", 10, &n), 0);
    cr_assert_not(vr_is_local(&n, NULL, 0));
    const char *local[] = {"10.1.1.1"};
    cr_assert(vr_is_local(&n, local, 1));
}

Test(fuse_replicas, no_local_keeps_order)
{
    struct vr_list l;
    cr_assert_eq(vr_parse_nodes("a:1,b:2,c:3", &l, NULL, NULL), 0);
    vr_order(&l, NULL, 0);
    cr_assert_str_eq(l.v[0].host, "a");
    cr_assert_str_eq(l.v[1].host, "b");
    cr_assert_str_eq(l.v[2].host, "c");
}

/* The copies being filled, as the description names them after the
 * replicas; anything but digits, ':', '/' and ',' is not taken. */
Test(fuse_replicas, recovery_token)
{
    char out[64];
    vr_recovery("vsan volume m (u) replicas=1@a:1 recovery=3:10/100:5,4:0/100:0", out, sizeof out);
    cr_expect_str_eq(out, "3:10/100:5,4:0/100:0");
    vr_recovery("vsan volume m (u) replicas=1@a:1", out, sizeof out);
    cr_expect_str_eq(out, "");
    vr_recovery("vsan volume m (u) recovery=3:1/2:3;rm", out, sizeof out);
    cr_expect_str_eq(out, "");
    vr_recovery("x recovery=", out, sizeof out);
    cr_expect_str_eq(out, "");
    vr_recovery("x recovery=1:2/3:4", out, 5);
    cr_expect_str_eq(out, "");
}
