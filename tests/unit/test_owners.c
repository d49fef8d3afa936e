/* test_owners.c - owners, quotas (volume/owners.h) and tokens
 * (volume/tokens.h): the quota arithmetic (each volume once, a bare NAME
 * counting certificate owners by CN, a resize counted at its new size),
 * the refusals where the cluster applies a CREATE or a resize's cut
 * (voltable.c), the files across a restart and malformed ones, and
 * tokens: made, looked up by hash, revoked, loaded. */
#include "policing/cut.h"
#include "store/store.h"
#include "volume/access.h"
#include "volume/owners.h"
#include "volume/tokens.h"
#include "volume/volume.h"
#include "volume/volume_int.h"
#include "volume/voltable.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/test_owners.XXXXXX";
static struct store *store;
static struct volumes *vols;
static struct voltable table;

static void setup(void)
{
    cr_assert(mkdtemp(dir) != NULL);
    cr_assert(eq(int, store_open(dir, &store), 0));
    cr_assert(eq(int, volumes_open(store, &vols), 0));
    table = (struct voltable){.store = store, .vols = vols};
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    volumes_close(vols);
    store_close(store);
    nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    strcpy(dir, "/tmp/test_owners.XXXXXX");
}

TestSuite(owners, .init = setup, .fini = teardown);

/* A resize as every node applies it: a CONFIG cut (policing/cut.h) that
 * begins, holds, drains and commits here (the table's ops, in the order
 * policing/protocol.c calls them). */
static int resize(const char *uuid, const char *name, uint64_t size, bool force, bool client)
{
    struct cut c = {.id = 1, .kind = PMSG_CUT_CONFIG, .nvols = 1};
    c.config = (struct pmsg_cut_config){.size = size, .force = force, .client = client};
    snprintf(c.config.uuid, sizeof c.config.uuid, "%s", uuid);
    snprintf(c.volume, sizeof c.volume, "%s", name);
    char names[1][PMSG_NAME_MAX + 1];
    snprintf(names[0], sizeof names[0], "%s", name);
    int r = voltable_ops.cut_check(&table, &c, names);
    if (r < 0)
        return r;
    voltable_ops.cut_hold(&table, &c);
    cr_assert(eq(int, voltable_ops.cut_drained(&table, &c), 0), "an idle volume did not drain");
    return voltable_ops.cut_commit(&table, &c, 7);
}

static struct volume_info vol(const char *uuid, uint64_t size)
{
    struct volume_info v = {.size = size};
    snprintf(v.uuid, sizeof v.uuid, "%s", uuid);
    return v;
}

#define U1 "11111111-1111-4111-8111-111111111111"
#define U2 "22222222-2222-4222-8222-222222222222"
#define U3 "33333333-3333-4333-8333-333333333333"

Test(owners, quota_arithmetic_counts_each_owned_volume_once)
{
    struct owners *o = volumes_owners(vols);
    cr_assert(eq(int, owners_set(o, U1, "alice"), 0));
    cr_assert(eq(int, owners_set(o, U2, "dn:CN=alice,O=Example"), 0));
    cr_assert(eq(int, owners_set(o, U3, "bob"), 0));
    struct volume_info v[] = {vol(U1, 1 << 20), vol(U2, 2 << 20), vol(U3, 4 << 20)};
    /* A bare NAME counts the PSK owner and the certificate of that CN. */
    cr_expect(eq(u64, owners_used(o, "alice", v, 3, NULL), 3 << 20));
    cr_expect(eq(u64, owners_used(o, "dn:CN=alice,O=Example", v, 3, NULL), 2 << 20));
    cr_expect(eq(u64, owners_used(o, "bob", v, 3, NULL), 4 << 20));
    cr_expect(eq(u64, owners_used(o, "carol", v, 3, NULL), 0));

    cr_assert(eq(int, owners_quota_set(o, "alice", 4 << 20, 64), 0));
    struct policing_quota over;
    cr_expect(eq(int, owners_check(o, "alice", NULL, 1 << 20, false, v, 3, NULL), 0),
              "exactly full");
    cr_expect(
        eq(int, owners_check(o, "alice", NULL, (1 << 20) + 512, false, v, 3, &over), -EDQUOT));
    cr_expect(eq(str, over.identity, "alice"));
    cr_expect(eq(u64, over.limit, 4 << 20));
    /* The certificate's new volume counts against the bare NAME's quota. */
    cr_expect(
        eq(int, owners_check(o, "dn:CN=alice,O=Other", NULL, 2 << 20, false, v, 3, NULL), -EDQUOT));
    /* A resize counts the volume at its new size, not twice. */
    cr_expect(eq(int, owners_check(o, "alice", U1, 2 << 20, false, v, 3, NULL), 0));
    cr_expect(eq(int, owners_check(o, "alice", U1, (2 << 20) + 512, false, v, 3, NULL), -EDQUOT));
    /* No quota, no limit; a sum that would wrap is over any quota. */
    cr_expect(eq(int, owners_check(o, "bob", NULL, UINT64_MAX, false, v, 3, NULL), 0));
    cr_expect(eq(int, owners_check(o, "alice", NULL, UINT64_MAX - (1 << 20), false, v, 3, NULL),
                 -EDQUOT));
    cr_assert(eq(int, owners_forget(o, U1), 0));
    cr_expect(eq(str, (char *)owners_of(o, U1), ""));
    cr_expect(eq(u64, owners_used(o, "alice", v, 3, NULL), 2 << 20));
}

Test(owners, quota_changes)
{
    struct owners *o = volumes_owners(vols);
    cr_expect(eq(int, owners_quota_set(o, "alice", 0, 0), -ESRCH));
    cr_expect(eq(int, owners_quota_set(o, "alice", 512, 64), 0));
    cr_expect(eq(int, owners_quota_set(o, "alice", 512, 64), -EALREADY));
    cr_expect(eq(int, owners_quota_set(o, "alice", 1024, 64), 0));
    cr_expect(eq(int, owners_quota_set(o, "a=b", 1024, 64), -EINVAL));
    cr_expect(eq(int, owners_quota_set(o, "bob", 1, 64), 0));
    struct policing_quota *q;
    size_t n;
    cr_assert(eq(int, owners_quota_list(o, &q, &n), 0));
    cr_expect(eq(sz, n, 2));
    cr_expect(eq(u64, q[0].limit, 1024));
    free(q);
    cr_expect(eq(int, owners_quota_set(o, "alice", 0, 0), 0));
    cr_assert(eq(int, owners_quota_list(o, &q, &n), 0));
    cr_expect(eq(sz, n, 1));
    cr_expect(eq(str, q[0].identity, "bob"));
    free(q);
}

/* The cluster's side: what every node applies in agreed order. */
Test(owners, an_owned_create_or_resize_past_the_quota_is_refused_where_it_is_applied)
{
    const uint32_t self = 1;
    struct owners *o = volumes_owners(vols);
    cr_assert(eq(int, owners_quota_set(o, "alice", 2 << 20, 64), 0));
    cr_assert(eq(
        int, voltable_ops.create(&table, U1, "a1", 1 << 20, "alice", false, &self, 1, false), 0));
    struct volume_info info;
    cr_assert(eq(int, volumes_info(vols, "a1", &info), 0));
    cr_expect(eq(str, (char *)owners_of(o, U1), "alice"));
    struct nbd_client alice = {"alice", NBD_TLS_AUTH_PSK, false};
    cr_expect(eq(int, access_of(volumes_access(vols), U1, &alice), ACCESS_WRITE),
              "the owner got no read-write grant");
    /* The second create would pass the quota: refused, nothing made. */
    cr_expect(
        eq(int,
           voltable_ops.create(&table, U2, "a2", (1 << 20) + 512, "alice", false, &self, 1, false),
           -EDQUOT));
    cr_expect(eq(int, volumes_info(vols, "a2", &info), -ENOENT));
    cr_expect(eq(str, (char *)owners_of(o, U2), ""));
    /* An existing name is what a create without owner would hear. */
    cr_expect(eq(int,
                 voltable_ops.create(&table, U2, "a1", 8 << 20, "alice", false, &self, 1, false),
                 -EEXIST));
    cr_expect(eq(int, resize(U1, "a1", (2 << 20) + 512, false, false), -EDQUOT));
    cr_expect(eq(int, resize(U1, "a1", 2 << 20, false, false), 0));
    /* Without an owner nothing counts. */
    cr_expect(
        eq(int, voltable_ops.create(&table, U3, "free", 8 << 20, "", false, &self, 1, false), 0));
    cr_expect(eq(int, resize(U3, "free", 16 << 20, false, false), 0));
    /* A deleted volume's owner goes: its space is free again. */
    cr_assert(eq(int, voltable_ops.remove(&table, U1, "a1"), 0));
    cr_expect(eq(str, (char *)owners_of(o, U1), ""));
    cr_expect(eq(
        int, voltable_ops.create(&table, U2, "a2", 2 << 20, "alice", false, &self, 1, false), 0));
    cr_expect(eq(int, voltable_ops.create(&table, U1, "bad", 512, "a:b", false, &self, 1, false),
                 -EINVAL));
}

static void reopen(void)
{
    volumes_close(vols);
    cr_assert(eq(int, volumes_open(store, &vols), 0));
    table.vols = vols;
}

Test(owners, owners_quotas_and_tokens_persist_and_a_malformed_file_is_refused)
{
    const uint32_t self = 1;
    cr_assert(eq(int, owners_quota_set(volumes_owners(vols), "dn:CN=x,O=y", 4096, 64), 0));
    cr_assert(
        eq(int, voltable_ops.create(&table, U1, "a1", 1 << 20, "bob", false, &self, 1, false), 0));
    struct policing_token rec;
    char text[TOKEN_TEXT_LEN + 1];
    cr_assert(eq(int, tokens_make("carol", &rec, text), 0));
    cr_assert(eq(int, tokens_apply(volumes_tokens(vols), &rec, false), 0));
    reopen();
    cr_expect(eq(str, (char *)owners_of(volumes_owners(vols), U1), "bob"));
    struct policing_quota *q;
    size_t n;
    cr_assert(eq(int, owners_quota_list(volumes_owners(vols), &q, &n), 0));
    cr_expect(eq(sz, n, 1));
    cr_expect(eq(str, q[0].identity, "dn:CN=x,O=y"));
    cr_expect(eq(u64, q[0].limit, 4096));
    free(q);
    char who[64];
    cr_expect(eq(int, tokens_identity(volumes_tokens(vols), text, who, sizeof who), 0));
    cr_expect(eq(str, who, "carol"));

    volumes_close(vols);
    vols = NULL;
    char path[sizeof dir + 16];
    snprintf(path, sizeof path, "%s/quotas", dir);
    FILE *f = fopen(path, "a");
    cr_assert(f != NULL);
    fputs("0 zero\n", f);
    fclose(f);
    cr_expect(eq(int, volumes_open(store, &vols), -EINVAL), "a zero quota was read");
    cr_assert(eq(int, truncate(path, 0), 0));
    snprintf(path, sizeof path, "%s/tokens", dir);
    f = fopen(path, "a");
    cr_assert(f != NULL);
    fputs("0123456789abcdef 1 00 short\n", f);
    fclose(f);
    cr_expect(eq(int, volumes_open(store, &vols), -EINVAL), "a short hash was read");
    cr_assert(eq(int, truncate(path, 0), 0));
    cr_assert(eq(int, volumes_open(store, &vols), 0));
}

Test(owners, tokens_are_found_by_their_hash_and_go_when_revoked)
{
    struct tokens *t = volumes_tokens(vols);
    struct policing_token a, b;
    char ta[TOKEN_TEXT_LEN + 1], tb[TOKEN_TEXT_LEN + 1], who[PMSG_IDENTITY_MAX + 1];
    cr_assert(eq(int, tokens_make("alice", &a, ta), 0));
    cr_assert(eq(int, tokens_make("dn:CN=bob,O=Example", &b, tb), 0));
    cr_expect(ne(str, a.id, b.id));
    cr_expect(ne(str, ta, tb));
    /* Not applied: unknown. */
    cr_expect(eq(int, tokens_identity(t, ta, who, sizeof who), -ENOENT));
    cr_assert(eq(int, tokens_apply(t, &a, false), 0));
    cr_assert(eq(int, tokens_apply(t, &b, false), 0));
    cr_expect(eq(int, tokens_apply(t, &a, false), -EEXIST));
    cr_assert(eq(int, tokens_identity(t, tb, who, sizeof who), 0));
    cr_expect(eq(str, who, "dn:CN=bob,O=Example"));
    /* b's id with a's secret: the hash decides. */
    char mixed[TOKEN_TEXT_LEN + 1];
    memcpy(mixed, tb, 22);
    memcpy(mixed + 22, ta + 22, sizeof mixed - 22);
    cr_expect(eq(int, tokens_identity(t, mixed, who, sizeof who), -ENOENT));
    char upper[TOKEN_TEXT_LEN + 1];
    memcpy(upper, ta, sizeof upper);
    for (char *p = upper + 22; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    cr_expect(eq(int, tokens_identity(t, upper, who, sizeof who), strcmp(upper, ta) ? -ENOENT : 0));
    char longer[TOKEN_TEXT_LEN + 2];
    snprintf(longer, sizeof longer, "%s0", ta);
    cr_expect(eq(int, tokens_identity(t, longer, who, sizeof who), -ENOENT));
    cr_expect(eq(int, tokens_identity(t, ta + 1, who, sizeof who), -ENOENT));

    cr_assert(eq(int, tokens_apply(t, &a, true), 0));
    cr_expect(eq(int, tokens_identity(t, ta, who, sizeof who), -ENOENT));
    cr_expect(eq(int, tokens_apply(t, &a, true), -ESRCH));
    struct policing_token bad = a;
    strcpy(bad.id, "nothex!!nothex!!");
    cr_expect(eq(int, tokens_apply(t, &bad, false), -EINVAL));

    /* A sync round: the group's table replaces this one's. */
    cr_assert(eq(int, tokens_load(t, &a, 1), 0));
    cr_expect(eq(int, tokens_identity(t, ta, who, sizeof who), 0));
    cr_expect(eq(int, tokens_identity(t, tb, who, sizeof who), -ENOENT));
    struct policing_token *list;
    size_t n;
    cr_assert(eq(int, tokens_list(t, &list, &n), 0));
    cr_expect(eq(sz, n, 1));
    cr_expect(eq(str, list[0].identity, "alice"));
    free(list);
}

/* DATA_DIR/file becomes a directory with an entry: a rename onto it
 * fails, as a full or broken disk would. */
static void break_file(const char *file)
{
    char path[sizeof dir + 64];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    cr_assert(eq(int, unlink(path) == 0 || errno == ENOENT, 1));
    cr_assert(eq(int, mkdir(path, 0700), 0));
    snprintf(path, sizeof path, "%s/%s/x", dir, file);
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL);
    fclose(f);
}

static void unbreak_file(const char *file)
{
    char path[sizeof dir + 64];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    cr_assert(eq(int, nftw(path, remove_entry, 8, FTW_DEPTH | FTW_PHYS), 0));
}

Test(owners, a_revoke_the_tokens_file_does_not_take_is_in_force_and_written_later)
{
    struct tokens *t = volumes_tokens(vols);
    struct policing_token a, b;
    char ta[TOKEN_TEXT_LEN + 1], tb[TOKEN_TEXT_LEN + 1], who[PMSG_IDENTITY_MAX + 1];
    cr_assert(eq(int, tokens_make("alice", &a, ta), 0));
    cr_assert(eq(int, tokens_make("bob", &b, tb), 0));
    cr_assert(eq(int, tokens_apply(t, &a, false), 0));
    cr_assert(eq(int, tokens_apply(t, &b, false), 0));
    break_file("tokens");
    cr_expect(eq(int, tokens_apply(t, &a, true), 0), "the group revoked it: so does this node");
    cr_expect(eq(int, tokens_identity(t, ta, who, sizeof who), -ENOENT), "a revoked token works");
    /* A sync round with the group's table (b's token only) fails closed alike. */
    cr_expect(eq(int, tokens_load(t, &b, 1), 0));
    cr_expect(eq(int, tokens_identity(t, ta, who, sizeof who), -ENOENT));
    struct policing_token c;
    char tc[TOKEN_TEXT_LEN + 1];
    cr_assert(eq(int, tokens_make("carol", &c, tc), 0));
    cr_expect(lt(int, tokens_apply(t, &c, false), 0), "a new token the file does not take fails");
    unbreak_file("tokens");
    /* The next sync round, with the same table, rewrites the file. */
    cr_assert(eq(int, tokens_load(t, &b, 1), 0));
    reopen();
    t = volumes_tokens(vols);
    cr_expect(eq(int, tokens_identity(t, ta, who, sizeof who), -ENOENT), "the revoke was written");
    cr_expect(eq(int, tokens_identity(t, tb, who, sizeof who), 0));
}

Test(owners, an_owner_or_quota_the_files_do_not_take_is_in_force_and_written_later)
{
    const uint32_t self = 1;
    struct owners *o = volumes_owners(vols);
    cr_assert(eq(int, owners_quota_set(o, "bob", 3 << 20, 64), 0));
    break_file("owners");
    break_file("quotas");
    cr_assert(
        eq(int, voltable_ops.create(&table, U1, "a1", 2 << 20, "bob", false, &self, 1, false), 0));
    cr_expect(eq(str, (char *)owners_of(o, U1), "bob"), "the group's owner is this node's");
    cr_expect(eq(int, voltable_ops.create(&table, U2, "a2", 2 << 20, "bob", false, &self, 1, false),
                 -EDQUOT),
              "bob's volume counts here as on the others");
    cr_expect(eq(int, owners_quota_set(o, "carol", 1 << 20, 64), 0));
    unbreak_file("owners");
    unbreak_file("quotas");
    /* The sync round brings the same tables: the files are written all the same. */
    struct policing_idents id = {0};
    cr_assert(eq(int, owners_list(o, &id), 0));
    cr_assert(eq(int, owners_load(o, &id), 0));
    policing_idents_free(&id);
    reopen();
    o = volumes_owners(vols);
    cr_expect(eq(str, (char *)owners_of(o, U1), "bob"));
    struct policing_quota *q;
    size_t n;
    cr_assert(eq(int, owners_quota_list(o, &q, &n), 0));
    cr_expect(eq(sz, n, 2));
    free(q);
}

Test(owners, a_client_creates_only_within_a_quota_of_bytes_and_volumes)
{
    const uint32_t self = 1;
    struct owners *o = volumes_owners(vols);
    cr_expect(eq(int,
                 voltable_ops.create(&table, U1, "a1", 1 << 20, "alice", true, &self, 1, false),
                 -ENODATA),
              "a client without a quota created a volume");
    cr_expect(
        eq(int, voltable_ops.create(&table, U1, "a1", 1 << 20, "alice", false, &self, 1, false), 0),
        "an admin may name an owner without a quota");
    cr_assert(eq(int, owners_quota_set(o, "alice", 64 << 20, 2), 0));
    cr_expect(
        eq(int, voltable_ops.create(&table, U2, "a2", 1 << 20, "alice", true, &self, 1, false), 0));
    cr_expect(eq(int,
                 voltable_ops.create(&table, U3, "a3", 1 << 20, "alice", true, &self, 1, false),
                 -EDQUOT),
              "a third volume passes a quota of two");
    cr_expect(eq(int, resize(U2, "a2", 2 << 20, false, true), 0), "a resize adds no volume");
    cr_expect(
        eq(int, voltable_ops.create(&table, U3, "a3", 1 << 20, "", true, &self, 1, false), -EINVAL),
        "a client's volume has its owner");
}

static void no_end(void *arg, const char *uuid, const char *identity)
{
    (void)arg, (void)uuid, (void)identity;
}

/* The identity numbered i, of the longest length a name may have. */
static void long_identity(char *buf, size_t size, size_t i)
{
    snprintf(buf, size, "%0512zu", i);
}

Test(owners, a_full_owner_or_grant_table_refuses_a_create_on_every_node)
{
    const uint32_t self = 1;
    /* The grants table full (its count of grants). */
    struct policing_grant *g = calloc(ACCESS_GRANTS_TOTAL_MAX, sizeof *g);
    cr_assert(g != NULL);
    for (size_t i = 0; i < ACCESS_GRANTS_TOTAL_MAX; i++) {
        snprintf(g[i].uuid, sizeof g[i].uuid, "%s", U3);
        snprintf(g[i].identity, sizeof g[i].identity, "id%zu", i);
    }
    cr_assert(
        eq(int, access_load(volumes_access(vols), g, ACCESS_GRANTS_TOTAL_MAX, NULL, NULL), 0));
    free(g);
    cr_expect(eq(int,
                 voltable_ops.create(&table, U1, "a1", 1 << 20, "alice", false, &self, 1, false),
                 -EXFULL));
    struct volume_info info;
    cr_expect(eq(int, volumes_info(vols, "a1", &info), -ENOENT), "an ownerless volume was made");
    cr_expect(eq(str, (char *)owners_of(volumes_owners(vols), U1), ""));
    cr_expect(
        eq(int, voltable_ops.create(&table, U1, "a1", 1 << 20, "", false, &self, 1, false), 0),
        "a volume without an owner needs no grant");
    cr_assert(eq(int, access_load(volumes_access(vols), NULL, 0, no_end, NULL), 0));
    /* The owners table full. */
    struct policing_idents id = {.owners = calloc(OWNERS_MAX, sizeof *id.owners),
                                 .nowners = OWNERS_MAX};
    cr_assert(id.owners != NULL);
    for (size_t i = 0; i < OWNERS_MAX; i++) {
        snprintf(id.owners[i].uuid, sizeof id.owners[i].uuid, "%08zx-1111-4111-8111-111111111111",
                 i + 0x10000000);
        snprintf(id.owners[i].identity, sizeof id.owners[i].identity, "bob");
    }
    cr_assert(eq(int, owners_load(volumes_owners(vols), &id), 0));
    policing_idents_free(&id);
    cr_expect(eq(int,
                 voltable_ops.create(&table, U2, "a2", 1 << 20, "alice", false, &self, 1, false),
                 -EXFULL));
    cr_expect(eq(int, volumes_info(vols, "a2", &info), -ENOENT));
}

Test(owners, the_largest_tables_written_are_read_back)
{
    size_t most = OWNERS_MAX > OWNERS_QUOTAS_MAX ? OWNERS_MAX : OWNERS_QUOTAS_MAX;
    struct policing_idents id = {
        .owners = calloc(OWNERS_MAX + 1, sizeof *id.owners),
        .nowners = OWNERS_MAX + 1, /* one more than a table takes: dropped */
        .quotas = calloc(OWNERS_QUOTAS_MAX, sizeof *id.quotas),
        .nquotas = OWNERS_QUOTAS_MAX,
    };
    struct policing_token *tok = calloc(TOKENS_MAX, sizeof *tok);
    cr_assert(id.owners && id.quotas && tok);
    for (size_t i = 0; i < most + 1; i++) {
        if (i <= OWNERS_MAX) {
            snprintf(id.owners[i].uuid, sizeof id.owners[i].uuid,
                     "%08zx-1111-4111-8111-111111111111", i + 0x10000000);
            long_identity(id.owners[i].identity, sizeof id.owners[i].identity, i);
        }
        if (i < OWNERS_QUOTAS_MAX) {
            id.quotas[i] = (struct policing_quota){.limit = UINT64_MAX, .volumes = UINT32_MAX};
            long_identity(id.quotas[i].identity, sizeof id.quotas[i].identity, i);
        }
        if (i < TOKENS_MAX) {
            tok[i] = (struct policing_token){.created = INT64_MIN};
            snprintf(tok[i].id, sizeof tok[i].id, "%016zx", i);
            long_identity(tok[i].identity, sizeof tok[i].identity, i);
        }
    }
    cr_assert(eq(int, owners_load(volumes_owners(vols), &id), 0));
    cr_assert(eq(int, tokens_load(volumes_tokens(vols), tok, TOKENS_MAX), 0));
    policing_idents_free(&id);
    free(tok);
    reopen(); /* every file at its largest is read back */
    cr_assert(eq(int, owners_list(volumes_owners(vols), &id), 0));
    cr_expect(eq(sz, id.nowners, OWNERS_MAX));
    cr_expect(eq(sz, id.nquotas, OWNERS_QUOTAS_MAX));
    policing_idents_free(&id);
    size_t n;
    cr_assert(eq(int, tokens_list(volumes_tokens(vols), &tok, &n), 0));
    cr_expect(eq(sz, n, TOKENS_MAX));
    free(tok);
}

Test(owners, a_delete_or_resize_sent_twice_never_reaches_a_volume_made_since_under_its_name)
{
    const uint32_t self = 1;
    cr_assert(eq(int, owners_quota_set(volumes_owners(vols), "bob", 64 << 20, 4), 0));
    cr_assert(eq(
        int, voltable_ops.create(&table, U1, "db", 1 << 20, "alice", false, &self, 1, false), 0));
    /* alice's delete, sent twice (a retry); bob creates "db" in between. */
    cr_assert(eq(int, voltable_ops.remove(&table, U1, "db"), 0));
    cr_assert(
        eq(int, voltable_ops.create(&table, U2, "db", 1 << 20, "bob", true, &self, 1, false), 0));
    cr_expect(eq(int, voltable_ops.remove(&table, U1, "db"), -ENOENT));
    cr_expect(eq(int, resize(U1, "db", 4 << 20, false, true), -ENOENT));
    struct volume_info info;
    cr_assert(eq(int, volumes_info(vols, "db", &info), 0), "bob's volume was deleted");
    cr_expect(eq(str, info.uuid, U2));
    cr_expect(eq(u64, info.size, 1 << 20));
    cr_expect(eq(str, (char *)owners_of(volumes_owners(vols), U2), "bob"));
    cr_expect(eq(int, voltable_ops.remove(&table, U2, "db"), 0));
}

Test(owners, an_identity_keeps_its_spaces_or_is_refused)
{
    struct tokens *t = volumes_tokens(vols);
    struct policing_token a, b;
    char ta[TOKEN_TEXT_LEN + 1], tb[TOKEN_TEXT_LEN + 1], who[PMSG_IDENTITY_MAX + 1];
    cr_assert(eq(int, tokens_make(" alice", &a, ta), 0));
    cr_expect(eq(int, tokens_apply(t, &a, false), -EINVAL), "\" alice\" would read back as alice");
    cr_assert(eq(int, tokens_make("alice ", &a, ta), 0));
    cr_expect(eq(int, tokens_apply(t, &a, false), -EINVAL));
    cr_expect(eq(int, owners_quota_set(volumes_owners(vols), " alice", 1 << 20, 1), -EINVAL));
    const char *why;
    cr_expect(eq(int, access_identity_check("dn:CN=alice\\ ", &why), 0), "an escaped space");
    cr_assert(eq(int, tokens_make("alice smith", &b, tb), 0));
    cr_assert(eq(int, tokens_apply(t, &b, false), 0));
    reopen();
    cr_assert(eq(int, tokens_identity(volumes_tokens(vols), tb, who, sizeof who), 0));
    cr_expect(eq(str, who, "alice smith"));
    /* A line whose fields are not where they are written is malformed. */
    volumes_close(vols);
    vols = NULL;
    char path[sizeof dir + 16];
    snprintf(path, sizeof path, "%s/tokens", dir);
    FILE *f = fopen(path, "a");
    cr_assert(f != NULL);
    fprintf(f, "00000000000000ff 1  %064d bob\n", 0);
    fclose(f);
    cr_expect(eq(int, volumes_open(store, &vols), -EINVAL), "two spaces were read as one");
    cr_assert(eq(int, truncate(path, 0), 0));
    cr_assert(eq(int, volumes_open(store, &vols), 0));
    table.vols = vols;
}

Test(owners, a_sync_round_drops_owners_quotas_and_tokens_this_node_would_refuse)
{
    struct policing_owner own[3] = {{.uuid = U1, .identity = "a:b"},
                                    {.uuid = "not a uuid", .identity = "bob"},
                                    {.uuid = U2, .identity = "bob"}};
    struct policing_quota q[3] = {{.identity = "bob", .limit = 1 << 20, .volumes = 0},
                                  {.identity = " bob", .limit = 1 << 20, .volumes = 1},
                                  {.identity = "bob", .limit = 1 << 20, .volumes = 2}};
    struct policing_idents id = {.owners = own, .nowners = 3, .quotas = q, .nquotas = 3};
    cr_assert(eq(int, owners_load(volumes_owners(vols), &id), 0));
    struct policing_token tok[3];
    char text[TOKEN_TEXT_LEN + 1];
    for (int i = 0; i < 3; i++)
        cr_assert(eq(int, tokens_make(i == 1 ? " carol" : "carol", &tok[i], text), 0));
    strcpy(tok[0].id, "nothex!!nothex!!");
    cr_assert(eq(int, tokens_load(volumes_tokens(vols), tok, 3), 0));
    reopen(); /* the files written read back */
    struct policing_idents got = {0};
    cr_assert(eq(int, owners_list(volumes_owners(vols), &got), 0));
    cr_assert(eq(sz, got.nowners, 1));
    cr_expect(eq(str, got.owners[0].uuid, U2));
    cr_assert(eq(sz, got.nquotas, 1));
    cr_expect(eq(u32, got.quotas[0].volumes, 2));
    policing_idents_free(&got);
    struct policing_token *t;
    size_t n;
    cr_assert(eq(int, tokens_list(volumes_tokens(vols), &t, &n), 0));
    cr_assert(eq(sz, n, 1));
    cr_expect(eq(str, t[0].id, tok[2].id));
    free(t);
}

/* A resize is a configuration epoch: its cut holds the volume's writes
 * from BEGIN; an abort leaves size and generation as they were and lets
 * the writes go; a commit applies the size with the generation bumped
 * once, then lets them go. */
Test(owners, a_resize_holds_writes_and_applies_only_at_its_commit)
{
    const uint32_t self = 1;
    cr_assert(
        eq(int, voltable_ops.create(&table, U1, "db", 1 << 20, "", false, &self, 1, false), 0));
    struct volume_info before, after;
    cr_assert(eq(int, volumes_info(vols, "db", &before), 0));
    struct volume *v = volumes_get(vols, "db");
    cr_assert(v != NULL);

    struct cut c = {.id = 1, .kind = PMSG_CUT_CONFIG, .nvols = 1};
    c.config = (struct pmsg_cut_config){.size = 4 << 20};
    snprintf(c.config.uuid, sizeof c.config.uuid, "%s", U1);
    snprintf(c.volume, sizeof c.volume, "db");
    char names[1][PMSG_NAME_MAX + 1] = {"db"};
    cr_assert(eq(int, voltable_ops.cut_check(&table, &c, names), 0));
    voltable_ops.cut_hold(&table, &c);
    cr_expect(eq(int, cut_gate_enter(v, true), -EAGAIN), "a write passed a resize's hold");
    voltable_ops.cut_release(&table, &c); /* aborted: a timeout, a membership change */
    cr_assert(eq(int, volumes_info(vols, "db", &after), 0));
    cr_expect(eq(u64, after.size, before.size), "an aborted resize changed the size");
    cr_expect(eq(u64, after.generation, before.generation));
    cr_expect(eq(int, cut_gate_enter(v, true), 0), "the writes were not let go after an abort");
    cut_gate_leave(v);

    voltable_ops.cut_hold(&table, &c);
    cr_expect(eq(int, cut_gate_enter(v, true), -EAGAIN));
    cr_expect(eq(int, volumes_info(vols, "db", &after), 0));
    cr_expect(eq(u64, after.size, before.size), "the size changed before the commit");
    cr_assert(eq(int, voltable_ops.cut_drained(&table, &c), 0));
    cr_expect(eq(int, voltable_ops.cut_commit(&table, &c, 9), 0));
    cr_assert(eq(int, volumes_info(vols, "db", &after), 0));
    cr_expect(eq(u64, after.size, 4 << 20));
    cr_expect(eq(u64, after.generation, before.generation + 1), "the generation moved by %llu",
              (unsigned long long)(after.generation - before.generation));
    cr_expect(eq(int, cut_gate_enter(v, true), 0), "the writes were not let go after the commit");
    cut_gate_leave(v);
    volume_unref(v);
}

/* The commit checks what the asking node checked before: a shrink of a
 * volume that got a snapshot meanwhile is refused there, on every node
 * alike, nothing changed. */
Test(owners, a_shrink_is_refused_at_its_commit_once_the_volume_has_a_snapshot)
{
    const uint32_t self = 1;
    cr_assert(
        eq(int, voltable_ops.create(&table, U1, "db", 4 << 20, "", false, &self, 1, false), 0));
    struct cut snap = {.id = 2, .kind = PMSG_CUT_SNAPSHOT, .nvols = 1, .time = 1700000000};
    snprintf(snap.snapshot, sizeof snap.snapshot, "s1");
    char names[1][PMSG_NAME_MAX + 1] = {"db"};
    cr_assert(eq(int, voltable_ops.cut_check(&table, &snap, names), 0));
    voltable_ops.cut_hold(&table, &snap);
    cr_assert(eq(int, voltable_ops.cut_commit(&table, &snap, 5), 0));
    struct volume_info before, after;
    cr_assert(eq(int, volumes_info(vols, "db", &before), 0));
    cr_expect(eq(int, resize(U1, "db", 1 << 20, true, false), -ENOTEMPTY));
    cr_assert(eq(int, volumes_info(vols, "db", &after), 0));
    cr_expect(eq(u64, after.size, 4 << 20));
    cr_expect(eq(u64, after.generation, before.generation));
    struct volume *v = volumes_get(vols, "db");
    cr_assert(v != NULL);
    cr_expect(eq(int, cut_gate_enter(v, true), 0), "a refused resize kept the writes held");
    cut_gate_leave(v);
    volume_unref(v);
    cr_expect(eq(int, resize(U1, "db", 8 << 20, false, false), 0), "a grow is still allowed");
}
