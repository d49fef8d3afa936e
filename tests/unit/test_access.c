/* test_access.c - grants (volume/access.h): which identity a grant
 * matches (a bare NAME: the PSK user and a certificate's CN; dn: one
 * subject exactly), the identities a grant may name, the table's changes
 * and caps, its file across a restart, and the NBD catalog filtering by
 * them (volume.c: list and open alike, read-only grants, snapshots). */
#include "store/store.h"
#include "nbd-server/server.h"
#include "volume/access.h"
#include "volume/volume.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct nbd_client alice_psk = {"alice", NBD_TLS_AUTH_PSK, false};
static const struct nbd_client alice_cert = {"CN=alice,O=Example", NBD_TLS_AUTH_X509, false};
static const struct nbd_client bob_psk = {"bob", NBD_TLS_AUTH_PSK, false};
static const struct nbd_client anon = {NBD_ANONYMOUS, NBD_TLS_AUTH_NONE, false};
static const struct nbd_client root = {"root", NBD_TLS_AUTH_LOCAL, true};

/* ---- matching ----------------------------------------------------------- */

Test(access, a_bare_name_matches_the_psk_user_and_the_certificate_cn)
{
    cr_expect(access_matches("alice", "alice", NBD_TLS_AUTH_PSK));
    cr_expect(not(access_matches("alice", "alicia", NBD_TLS_AUTH_PSK)));
    cr_expect(access_matches("alice", "CN=alice,O=Example", NBD_TLS_AUTH_X509));
    cr_expect(access_matches("alice", "O=Example+CN=alice", NBD_TLS_AUTH_X509));
    cr_expect(access_matches("alice", "2.5.4.3=alice,O=Example", NBD_TLS_AUTH_X509));
    cr_expect(access_matches("alice", "cn=alice", NBD_TLS_AUTH_X509));
    /* The CN, not another attribute, and all of it. */
    cr_expect(not(access_matches("alice", "O=alice,CN=bob", NBD_TLS_AUTH_X509)));
    cr_expect(not(access_matches("alice", "CN=alice smith,O=Example", NBD_TLS_AUTH_X509)));
    cr_expect(not(access_matches("Example", "CN=alice,O=Example", NBD_TLS_AUTH_X509)));
    /* Escapes in the DN are undone before comparing. */
    cr_expect(access_matches("bob, jr", "CN=bob\\, jr,O=Example", NBD_TLS_AUTH_X509));
    cr_expect(access_matches("bob+x", "CN=bob\\2bx", NBD_TLS_AUTH_X509));
    /* A PSK user named like a DN is not a certificate. */
    cr_expect(not(access_matches("alice", "CN=alice", NBD_TLS_AUTH_PSK)));
    cr_expect(access_matches(NBD_ANONYMOUS, NBD_ANONYMOUS, NBD_TLS_AUTH_NONE));
}

Test(access, dn_matches_one_certificate_subject_exactly)
{
    cr_expect(access_matches("dn:CN=alice,O=Example", "CN=alice,O=Example", NBD_TLS_AUTH_X509));
    cr_expect(not(access_matches("dn:CN=alice,O=Example", "CN=alice,O=Other", NBD_TLS_AUTH_X509)));
    cr_expect(not(access_matches("dn:CN=alice", "CN=alice,O=Example", NBD_TLS_AUTH_X509)));
    /* Never a PSK user, whatever its name. */
    cr_expect(not(access_matches("dn:CN=alice", "CN=alice", NBD_TLS_AUTH_PSK)));
    /* Attribute types in any case (GnuTLS writes CN, O, ...); values as
     * written, escapes included. */
    cr_expect(access_matches("dn:cn=alice,o=Example", "CN=alice,O=Example", NBD_TLS_AUTH_X509));
    cr_expect(access_matches("dn:Cn=bob\\, jr+ou=x", "CN=bob\\, jr+OU=x", NBD_TLS_AUTH_X509));
    cr_expect(not(access_matches("dn:CN=Alice", "CN=alice", NBD_TLS_AUTH_X509)));
    cr_expect(not(access_matches("dn:CN=bob\\, jr", "CN=bob\\, JR", NBD_TLS_AUTH_X509)));
    cr_expect(not(access_matches("dn:CN=a\\,o=x", "CN=a\\,O=x", NBD_TLS_AUTH_X509)));
    cr_expect(not(access_matches("dn:CN=alice", "CN=alice,O=x", NBD_TLS_AUTH_X509)));
}

Test(access, identities_a_grant_may_name)
{
    const char *why;
    cr_expect(eq(int, access_identity_check("alice", &why), 0));
    cr_expect(eq(int, access_identity_check("Alice Smith", &why), 0));
    cr_expect(eq(int, access_identity_check("dn:CN=alice,O=Example", &why), 0));
    cr_expect(eq(int, access_identity_check("dn:CN=bob\\, jr,O=Example", &why), 0));
    cr_expect(eq(int, access_identity_check("", &why), -EINVAL));
    cr_expect(eq(int, access_identity_check("dn:", &why), -EINVAL));
    cr_expect(eq(int, access_identity_check("dn:alice", &why), -EINVAL));
    cr_expect(eq(int, access_identity_check("CN=alice", &why), -EINVAL));
    cr_expect(eq(int, access_identity_check("DN:CN=alice", &why), -EINVAL));
    cr_expect(eq(int, access_identity_check("a\tb", &why), -EINVAL));
    char longest[NBD_TLS_IDENTITY_MAX + 2];
    memset(longest, 'x', sizeof longest);
    longest[NBD_TLS_IDENTITY_MAX] = '\0';
    cr_expect(eq(int, access_identity_check(longest, &why), 0));
    longest[NBD_TLS_IDENTITY_MAX] = 'x';
    longest[NBD_TLS_IDENTITY_MAX + 1] = '\0';
    cr_expect(eq(int, access_identity_check(longest, &why), -ENAMETOOLONG));
}

/* ---- the table, with a pool --------------------------------------------- */

static char dir[64];
static struct store *store;
static struct volumes *vols;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void open_pool(void)
{
    cr_assert(eq(int, store_open(dir, &store), 0));
    cr_assert(eq(int, volumes_open(store, &vols), 0));
}

static void close_pool(void)
{
    volumes_close(vols);
    store_close(store);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/vsan-test-access-XXXXXX");
    cr_assert(mkdtemp(dir) != NULL);
    open_pool();
}

static void teardown(void)
{
    close_pool();
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static const char *uuid_of(const char *name)
{
    static struct volume_info info;
    cr_assert(eq(int, volumes_info(vols, name, &info), 0));
    return info.uuid;
}

static int set(const char *vol, const char *identity, int mode, bool *ended)
{
    bool dummy;
    return access_set(volumes_access(vols), uuid_of(vol), identity, mode, ended ? ended : &dummy);
}

Test(access, grants_change_revoke_and_say_when_connections_end, .init = setup, .fini = teardown)
{
    cr_assert(eq(int, volumes_create(vols, "db", 1 << 20, NULL, NULL), 0));
    struct access *a = volumes_access(vols);
    const char *u = uuid_of("db");
    bool ended = true;
    cr_expect(eq(int, access_of(a, u, &alice_psk), ACCESS_NONE));
    cr_expect(eq(int, set("db", "alice", PMSG_GRANT_RW, &ended), 0));
    cr_expect(not(ended), "a new grant ends nothing");
    cr_expect(eq(int, access_of(a, u, &alice_psk), ACCESS_WRITE));
    cr_expect(eq(int, access_of(a, u, &alice_cert), ACCESS_WRITE));
    cr_expect(eq(int, access_of(a, u, &bob_psk), ACCESS_NONE));
    cr_expect(eq(int, access_of(a, u, &root), ACCESS_WRITE));
    cr_expect(eq(int, set("db", "alice", PMSG_GRANT_RW, NULL), -EALREADY));
    cr_expect(eq(int, set("db", "alice", PMSG_GRANT_RO, &ended), 0));
    cr_expect(ended, "a mode change ends the identity's connections");
    cr_expect(eq(int, access_of(a, u, &alice_psk), ACCESS_READ));
    cr_expect(eq(int, set("db", "alice", PMSG_GRANT_REVOKE, &ended), 0));
    cr_expect(ended);
    cr_expect(eq(int, access_of(a, u, &alice_psk), ACCESS_NONE));
    cr_expect(eq(int, set("db", "alice", PMSG_GRANT_REVOKE, NULL), -ESRCH));
    cr_expect(eq(int, set("db", "CN=alice", PMSG_GRANT_RW, NULL), -EINVAL));
}

Test(access, a_volume_takes_at_most_ACCESS_GRANTS_MAX_grants, .init = setup, .fini = teardown)
{
    cr_assert(eq(int, volumes_create(vols, "db", 1 << 20, NULL, NULL), 0));
    char name[32];
    for (int i = 0; i < ACCESS_GRANTS_MAX; i++) {
        snprintf(name, sizeof name, "user%d", i);
        cr_assert(eq(int, set("db", name, PMSG_GRANT_RW, NULL), 0), "grant %d", i);
    }
    cr_expect(eq(int, set("db", "one-more", PMSG_GRANT_RW, NULL), -ENOSPC));
    /* A change of an existing grant is no new grant. */
    cr_expect(eq(int, set("db", "user0", PMSG_GRANT_RO, NULL), 0));
}

Test(access, grants_survive_a_restart_and_go_with_their_volume, .init = setup, .fini = teardown)
{
    cr_assert(eq(int, volumes_create(vols, "db", 1 << 20, NULL, NULL), 0));
    cr_assert(eq(int, volumes_create(vols, "web", 1 << 20, NULL, NULL), 0));
    cr_assert(eq(int, set("db", "alice", PMSG_GRANT_RO, NULL), 0));
    cr_assert(eq(int, set("db", "dn:CN=bob\\, jr,O=Example", PMSG_GRANT_RW, NULL), 0));
    cr_assert(eq(int, set("web", "alice", PMSG_GRANT_RW, NULL), 0));
    close_pool();
    open_pool();
    struct policing_grant *g;
    size_t n;
    cr_assert(eq(int, access_list(volumes_access(vols), uuid_of("db"), &g, &n), 0));
    cr_assert(eq(sz, n, 2));
    cr_expect(eq(str, g[0].identity, "alice"));
    cr_expect(eq(u8, g[0].read_only, 1));
    cr_expect(eq(str, g[1].identity, "dn:CN=bob\\, jr,O=Example"));
    cr_expect(eq(u8, g[1].read_only, 0));
    free(g);
    cr_assert(eq(int, volumes_delete(vols, "db", false), 0));
    cr_assert(eq(int, access_list(volumes_access(vols), NULL, &g, &n), 0));
    cr_expect(eq(sz, n, 1), "the deleted volume's grants went");
    free(g);
}

/* ---- the catalog ---------------------------------------------------------- */

struct names {
    char v[4][16];
    int n;
};

static int collect(void *arg, const char *name, const char *description)
{
    (void)description;
    struct names *s = arg;
    snprintf(s->v[s->n++], sizeof s->v[0], "%s", name);
    return 0;
}

static int open_as(const char *name, const struct nbd_client *who, bool *read_only)
{
    struct nbd_export exp;
    int r = volumes_catalog.open(vols, name, who, &exp);
    if (r == 0) {
        *read_only = exp.read_only;
        volumes_catalog.close(vols, &exp);
    }
    return r;
}

Test(access, the_catalog_shows_and_opens_only_what_a_client_may_see, .init = setup,
     .fini = teardown)
{
    cr_assert(eq(int, volumes_create(vols, "a", 1 << 20, NULL, NULL), 0));
    cr_assert(eq(int, volumes_create(vols, "b", 1 << 20, NULL, NULL), 0));
    cr_assert(eq(int, set("a", "alice", PMSG_GRANT_RW, NULL), 0));
    cr_assert(eq(int, set("b", "bob", PMSG_GRANT_RO, NULL), 0));
    struct names s = {0};
    cr_assert(eq(int, volumes_catalog.list(vols, &alice_cert, collect, &s), 0));
    cr_expect(eq(int, s.n, 1));
    cr_expect(eq(str, s.v[0], "a"));
    s = (struct names){0};
    cr_assert(eq(int, volumes_catalog.list(vols, &anon, collect, &s), 0));
    cr_expect(eq(int, s.n, 0), "anonymous without all sees nothing ungranted");
    s = (struct names){0};
    cr_assert(eq(int, volumes_catalog.list(vols, &root, collect, &s), 0));
    cr_expect(eq(int, s.n, 2));

    bool ro = true;
    cr_expect(eq(int, open_as("a", &alice_psk, &ro), 0));
    cr_expect(not(ro));
    cr_expect(eq(int, open_as("b", &alice_psk, &ro), -ENOENT), "as for a missing volume");
    cr_expect(eq(int, open_as("b@s", &alice_psk, &ro), -ENOENT));
    cr_expect(eq(int, open_as("b", &bob_psk, &ro), 0));
    cr_expect(ro, "a read-only grant opens read-only");
}

/* ---- a grants file that can't be written --------------------------------- */

/* Makes DATA_DIR/grants a directory that is not empty: rewriting the file
 * (a rename over it) fails until unbroken. */
static void break_grants_file(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/grants", dir);
    cr_assert(eq(int, unlink(path), 0));
    cr_assert(eq(int, mkdir(path, 0700), 0));
    snprintf(path, sizeof path, "%s/grants/x", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL);
    fclose(f);
}

static void unbreak_grants_file(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/grants", dir);
    cr_assert(eq(int, nftw(path, rm_entry, 8, FTW_DEPTH | FTW_PHYS), 0));
}

Test(access, a_revoke_the_file_does_not_take_is_in_force_and_written_later, .init = setup,
     .fini = teardown)
{
    cr_assert(eq(int, volumes_create(vols, "db", 1 << 20, NULL, NULL), 0));
    struct access *a = volumes_access(vols);
    cr_assert(eq(int, set("db", "alice", PMSG_GRANT_RW, NULL), 0));
    cr_assert(eq(int, set("db", "bob", PMSG_GRANT_RW, NULL), 0));
    break_grants_file();
    bool ended = false;
    cr_expect(eq(int, set("db", "alice", PMSG_GRANT_REVOKE, &ended), 0));
    cr_expect(ended, "the revoke ends alice's connections though the file kept her grant");
    cr_expect(eq(int, access_of(a, uuid_of("db"), &alice_psk), ACCESS_NONE));
    ended = false;
    cr_expect(eq(int, set("db", "bob", PMSG_GRANT_RO, &ended), 0));
    cr_expect(ended);
    cr_expect(eq(int, access_of(a, uuid_of("db"), &bob_psk), ACCESS_READ));
    cr_expect(lt(int, set("db", "carol", PMSG_GRANT_RW, NULL), 0), "a new grant fails closed");
    unbreak_grants_file();
    /* The sync round brings the same table: the file is written all the same. */
    struct policing_grant *g;
    size_t n;
    cr_assert(eq(int, access_list(a, NULL, &g, &n), 0));
    cr_assert(eq(int, access_load(a, g, n, NULL, NULL), 0));
    free(g);
    close_pool();
    open_pool();
    cr_expect(eq(int, access_of(volumes_access(vols), uuid_of("db"), &alice_psk), ACCESS_NONE));
    cr_expect(eq(int, access_of(volumes_access(vols), uuid_of("db"), &bob_psk), ACCESS_READ));
}

/* ---- the table's caps and order -------------------------------------------- */

/* Loads (as a sync round does) count grants on volume "v" (made here):
 * identities of len bytes, numbered; 0 or as access_load. */
static int load_grants(size_t count, size_t len)
{
    cr_assert(eq(int, volumes_create(vols, "v", 1 << 20, NULL, NULL), 0));
    struct policing_grant *g = calloc(count, sizeof *g);
    cr_assert(g != NULL);
    for (size_t i = 0; i < count; i++) {
        snprintf(g[i].uuid, sizeof g[i].uuid, "%s", uuid_of("v"));
        snprintf(g[i].identity, sizeof g[i].identity, "%0*zu", (int)len, i);
    }
    int r = access_load(volumes_access(vols), g, count, NULL, NULL);
    free(g);
    return r;
}

Test(access, the_table_takes_at_most_its_grants, .init = setup, .fini = teardown)
{
    cr_assert(eq(int, load_grants(ACCESS_GRANTS_TOTAL_MAX, 8), 0));
    cr_assert(eq(int, volumes_create(vols, "more", 1 << 20, NULL, NULL), 0));
    cr_expect(eq(int, set("more", "alice", PMSG_GRANT_RW, NULL), -EDQUOT));
    cr_assert(eq(int, set("v", "00000000", PMSG_GRANT_REVOKE, NULL), 0));
    cr_expect(eq(int, set("more", "alice", PMSG_GRANT_RW, NULL), 0));
}

Test(access, the_table_takes_at_most_its_identity_bytes, .init = setup, .fini = teardown)
{
    size_t fit = ACCESS_IDENTITY_BYTES_MAX / NBD_TLS_IDENTITY_MAX;
    cr_assert(eq(int, load_grants(fit, NBD_TLS_IDENTITY_MAX), 0));
    cr_assert(eq(int, volumes_create(vols, "more", 1 << 20, NULL, NULL), 0));
    cr_expect(eq(int, set("more", "a", PMSG_GRANT_RW, NULL), -EDQUOT));
}

Test(access, grants_of_interleaved_volumes_are_found_and_keep_their_order, .init = setup,
     .fini = teardown)
{
    const char *names[] = {"a", "b", "c"};
    for (int v = 0; v < 3; v++)
        cr_assert(eq(int, volumes_create(vols, names[v], 1 << 20, NULL, NULL), 0));
    char id[16];
    for (int i = 0; i < 9; i++) {
        snprintf(id, sizeof id, "u%d", 8 - i);
        cr_assert(eq(int, set(names[i % 3], id, i % 2 ? PMSG_GRANT_RO : PMSG_GRANT_RW, NULL), 0));
    }
    /* Written in an older version's order (as given), the file reads alike. */
    char path[128];
    snprintf(path, sizeof path, "%s/grants", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL);
    for (int i = 0; i < 9; i++)
        fprintf(f, "%s %s u%d\n", uuid_of(names[i % 3]), i % 2 ? "ro" : "rw", 8 - i);
    fclose(f);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 9; i++) {
            snprintf(id, sizeof id, "u%d", 8 - i);
            struct nbd_client who = {id, NBD_TLS_AUTH_PSK, false};
            cr_expect(eq(int, access_of(volumes_access(vols), uuid_of(names[i % 3]), &who),
                         i % 2 ? ACCESS_READ : ACCESS_WRITE),
                      "round %d, %s on %s", round, id, names[i % 3]);
            cr_expect(eq(int, access_of(volumes_access(vols), uuid_of(names[(i + 1) % 3]), &who),
                         ACCESS_NONE));
        }
        struct policing_grant *g;
        size_t n;
        cr_assert(eq(int, access_list(volumes_access(vols), uuid_of("b"), &g, &n), 0));
        cr_assert(eq(sz, n, 3));
        cr_expect(eq(str, g[0].identity, "u7"));
        cr_expect(eq(str, g[1].identity, "u4"));
        cr_expect(eq(str, g[2].identity, "u1"));
        free(g);
        close_pool();
        open_pool();
    }
}

Test(access, a_sync_round_drops_grants_this_node_would_refuse, .init = setup, .fini = teardown)
{
    cr_assert(eq(int, volumes_create(vols, "db", 1 << 20, NULL, NULL), 0));
    const char *ids[] = {"alice", "CN=mallory", "a\tb", "dn:", "bob"};
    struct policing_grant g[6] = {{.read_only = 0}};
    for (int i = 0; i < 5; i++) {
        snprintf(g[i].uuid, sizeof g[i].uuid, "%s", uuid_of("db"));
        snprintf(g[i].identity, sizeof g[i].identity, "%s", ids[i]);
    }
    snprintf(g[5].uuid, sizeof g[5].uuid, "not a uuid");
    snprintf(g[5].identity, sizeof g[5].identity, "carol");
    cr_assert(eq(int, access_load(volumes_access(vols), g, 6, NULL, NULL), 0));
    close_pool();
    open_pool(); /* the file it wrote reads back */
    struct policing_grant *got;
    size_t n;
    cr_assert(eq(int, access_list(volumes_access(vols), NULL, &got, &n), 0));
    cr_assert(eq(sz, n, 2));
    cr_expect(eq(str, got[0].identity, "alice"));
    cr_expect(eq(str, got[1].identity, "bob"));
    free(got);
}

Test(access, grants_of_a_volume_gone_are_dropped_at_open, .init = setup, .fini = teardown)
{
    cr_assert(eq(int, volumes_create(vols, "db", 1 << 20, NULL, NULL), 0));
    cr_assert(eq(int, set("db", "alice", PMSG_GRANT_RW, NULL), 0));
    /* A crash between the delete of a volume and the drop of its grants. */
    char path[128];
    snprintf(path, sizeof path, "%s/grants", dir);
    FILE *f = fopen(path, "a");
    cr_assert(f != NULL);
    fprintf(f, "00000000-0000-4000-8000-000000000000 rw bob\n");
    fclose(f);
    close_pool();
    open_pool();
    struct policing_grant *g;
    size_t n;
    cr_assert(eq(int, access_list(volumes_access(vols), NULL, &g, &n), 0));
    cr_assert(eq(sz, n, 1));
    cr_expect(eq(str, g[0].identity, "alice"));
    free(g);
    f = fopen(path, "r");
    cr_assert(f != NULL);
    char line[256];
    int lines = 0;
    while (fgets(line, sizeof line, f))
        lines++;
    fclose(f);
    cr_expect(eq(int, lines, 1), "the file was rewritten without the stale grant");
}
