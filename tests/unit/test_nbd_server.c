/* test_nbd_server.c - the NBD server against a real client (libnbd) and
 * raw sockets, over the in-memory backend.
 *
 * Each test gets its own server on a unix socket in a fresh directory;
 * the fixture shuts it down and removes the directory even when the test
 * fails. Behaviour checked is the protocol's: options, info, structured
 * reads with holes, block status, every error the issue lists, and that a
 * bad request or a broken connection harms no other client.
 */
#include "nbd-server/conn.h"
#include "nbd-server/mem_export.h"
#include "nbd-server/protocol.h"
#include "nbd-server/server.h"

#include <criterion/criterion.h>
#include <endian.h>
#include <errno.h>
#include <libnbd.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DISK_SIZE (16u << 20)

static char dir[64];
static char sock[128];
static struct mem_catalog *cat;
static struct nbd_server *srv;

static bool use_tls; /* connect_to goes through STARTTLS with a PSK */
static char psk_file[128];

static void start_server_tls(uint32_t min_block, uint32_t max_payload, int tls)
{
    snprintf(dir, sizeof dir, "/tmp/vsan-nbdtest-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(sock, sizeof sock, "%s/nbd.sock", dir);
    cat = mem_catalog_new();
    cr_assert_not_null(cat);
    cr_assert_eq(mem_catalog_add(cat, "disk", DISK_SIZE, false), 0);
    cr_assert_eq(mem_catalog_add(cat, "ro", 1u << 20, true), 0);
    cr_assert_eq(mem_catalog_add_async(cat, "async", DISK_SIZE), 0);
    cr_assert_eq(mem_catalog_add_bitmap(cat, "disk", "b1"), 0);
    cr_assert_eq(mem_catalog_add_bitmap(cat, "async", "other"), 0);
    struct nbd_server_config cfg;
    nbd_server_config_defaults(&cfg);
    cfg.threads = 4;
    cfg.min_block = min_block;
    cfg.max_payload = max_payload;
    cfg.shutdown_grace_ms = 2000;
    cfg.tls = tls;
    srv = nbd_server_new(&cfg, &mem_catalog_ops, cat);
    cr_assert_not_null(srv);
    use_tls = tls != NBD_TLS_OFF;
    if (use_tls) {
        snprintf(psk_file, sizeof psk_file, "%s/keys.psk", dir);
        FILE *f = fopen(psk_file, "w");
        cr_assert_not_null(f);
        fprintf(f, "alice:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n");
        cr_assert_eq(fclose(f), 0);
        char err[512];
        struct nbd_tls_config tc = {.certificates = "", .psk_file = psk_file};
        struct nbd_tls_creds *creds = nbd_tls_creds_load(&tc, err, sizeof err);
        cr_assert_not_null(creds, "%s", err);
        nbd_server_set_tls(srv, creds);
    }
    cr_assert_eq(nbd_server_listen(srv, sock), 0);
}

static void start_server(uint32_t min_block, uint32_t max_payload)
{
    start_server_tls(min_block, max_payload, NBD_TLS_OFF);
}

static void setup(void)
{
    start_server(1, 32u << 20);
}

static void setup_strict(void)
{
    start_server(512, 1u << 20);
}

static void teardown(void)
{
    if (srv)
        nbd_server_free(srv);
    srv = NULL;
    mem_catalog_free(cat);
    cat = NULL;
    unlink(sock);
    if (use_tls)
        unlink(psk_file);
    rmdir(dir);
}

static struct nbd_handle *connect_to(const char *export)
{
    struct nbd_handle *h = nbd_create();
    cr_assert_not_null(h);
    if (use_tls) {
        cr_assert_eq(nbd_set_tls(h, LIBNBD_TLS_REQUIRE), 0);
        cr_assert_eq(nbd_set_tls_psk_file(h, psk_file), 0);
        cr_assert_eq(nbd_set_tls_username(h, "alice"), 0);
    }
    cr_assert_eq(nbd_set_export_name(h, export), 0);
    cr_assert_eq(nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION), 0);
    cr_assert_eq(nbd_connect_unix(h, sock), 0, "connect: %s", nbd_get_error());
    return h;
}

/* A connection whose requests libnbd does not check client-side. */
static struct nbd_handle *connect_lax(const char *export)
{
    struct nbd_handle *h = nbd_create();
    cr_assert_not_null(h);
    cr_assert_eq(nbd_set_strict_mode(h, 0), 0);
    cr_assert_eq(nbd_set_export_name(h, export), 0);
    cr_assert_eq(nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION), 0);
    cr_assert_eq(nbd_connect_unix(h, sock), 0, "connect: %s", nbd_get_error());
    return h;
}

static void assert_serves(struct nbd_handle *h)
{
    char buf[512];
    cr_assert_eq(nbd_pread(h, buf, sizeof buf, 0, 0), 0, "still serving: %s", nbd_get_error());
}

static void wait_connections(unsigned n)
{
    for (int i = 0; i < 500 && nbd_server_connections(srv) != n; i++)
        usleep(10000);
    cr_assert_eq(nbd_server_connections(srv), n);
}

static void fill(char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)(seed * 131 + i * 7 + (i >> 9));
}

/* ---- options ------------------------------------------------------------ */

static int list_cb(void *user, const char *name, const char *desc)
{
    (void)desc;
    int *seen = user;
    if (strcmp(name, "disk") == 0)
        seen[0]++;
    if (strcmp(name, "ro") == 0)
        seen[1]++;
    if (strcmp(name, "async") == 0)
        seen[2]++;
    return 0;
}

Test(options, list_names_every_export, .init = setup, .fini = teardown)
{
    struct nbd_handle *h = nbd_create();
    int seen[3] = {0, 0, 0};
    cr_assert_eq(nbd_set_opt_mode(h, true), 0);
    cr_assert_eq(nbd_connect_unix(h, sock), 0);
    cr_assert_eq(nbd_opt_list(h, (nbd_list_callback){.callback = list_cb, .user_data = seen}), 3);
    cr_assert_eq(seen[0], 1);
    cr_assert_eq(seen[1], 1);
    cr_assert_eq(seen[2], 1);
    nbd_opt_abort(h);
    nbd_close(h);
}

Test(options, info_reports_size_flags_and_block_sizes, .init = setup, .fini = teardown)
{
    struct nbd_handle *h = nbd_create();
    cr_assert_eq(nbd_set_full_info(h, true), 0);
    struct nbd_handle *g = connect_to("disk");
    nbd_close(g);
    cr_assert_eq(nbd_set_export_name(h, "disk"), 0);
    cr_assert_eq(nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION), 0);
    cr_assert_eq(nbd_connect_unix(h, sock), 0);
    cr_assert_eq(nbd_get_size(h), DISK_SIZE);
    cr_assert_eq(nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM), 1);
    cr_assert_eq(nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED), 4096);
    cr_assert_eq(nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM), 32 << 20);
    char *desc = nbd_get_export_description(h);
    cr_assert_not_null(desc);
    cr_assert_str_eq(desc, "memory export disk");
    free(desc);
    cr_assert_eq(nbd_can_multi_conn(h), 1);
    cr_assert_eq(nbd_can_fua(h), 1);
    cr_assert_eq(nbd_can_trim(h), 1);
    cr_assert_eq(nbd_can_zero(h), 1);
    cr_assert_eq(nbd_can_fast_zero(h), 1);
    cr_assert_eq(nbd_can_cache(h), 1);
    cr_assert_eq(nbd_can_df(h), 1);
    cr_assert_eq(nbd_can_flush(h), 1);
    cr_assert_eq(nbd_is_read_only(h), 0);
    cr_assert_eq(nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1);
    nbd_close(h);
}

Test(options, unknown_export_is_refused_and_next_option_works, .init = setup, .fini = teardown)
{
    struct nbd_handle *h = nbd_create();
    cr_assert_eq(nbd_set_opt_mode(h, true), 0);
    cr_assert_eq(nbd_connect_unix(h, sock), 0);
    cr_assert_eq(nbd_set_export_name(h, "nope"), 0);
    cr_assert_eq(nbd_opt_go(h), -1);
    cr_assert_eq(nbd_set_export_name(h, "disk"), 0);
    cr_assert_eq(nbd_opt_go(h), 0, "%s", nbd_get_error());
    assert_serves(h);
    nbd_close(h);
}

static int ctx_cb(void *user, const char *name)
{
    int *n = user;
    if (strcmp(name, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0)
        (*n)++;
    return 0;
}

Test(options, list_meta_context_offers_base_allocation, .init = setup, .fini = teardown)
{
    struct nbd_handle *h = nbd_create();
    int n = 0;
    cr_assert_eq(nbd_set_opt_mode(h, true), 0);
    cr_assert_eq(nbd_set_export_name(h, "disk"), 0);
    cr_assert_eq(nbd_connect_unix(h, sock), 0);
    cr_assert_eq(nbd_add_meta_context(h, "base:"), 0);
    cr_assert_eq(
        nbd_opt_list_meta_context(h, (nbd_context_callback){.callback = ctx_cb, .user_data = &n}),
        1);
    cr_assert_eq(n, 1);
    nbd_opt_abort(h);
    nbd_close(h);
}

Test(options, read_only_export_refuses_writes, .init = setup, .fini = teardown)
{
    struct nbd_handle *h = connect_lax("ro");
    char buf[512] = {1};
    cr_assert_eq(nbd_is_read_only(h), 1);
    cr_assert_eq(nbd_pwrite(h, buf, sizeof buf, 0, 0), -1);
    cr_assert_eq(nbd_get_errno(), EPERM);
    cr_assert_eq(nbd_trim(h, 512, 0, 0), -1);
    cr_assert_eq(nbd_get_errno(), EPERM);
    cr_assert_eq(nbd_zero(h, 512, 0, 0), -1);
    cr_assert_eq(nbd_get_errno(), EPERM);
    /* Past the end too: refused for being read-only, not for the range. */
    int64_t size = nbd_get_size(h);
    cr_assert_eq(nbd_pwrite(h, buf, sizeof buf, (uint64_t)size, 0), -1);
    cr_assert_eq(nbd_get_errno(), EPERM);
    cr_assert_eq(nbd_zero(h, 512, (uint64_t)size, 0), -1);
    cr_assert_eq(nbd_get_errno(), EPERM);
    /* Nothing of this client's to flush: answered without the backend. */
    unsigned long flushes = mem_catalog_flushes(cat);
    cr_assert_eq(nbd_flush(h, 0), 0, "%s", nbd_get_error());
    cr_assert_eq(mem_catalog_flushes(cat), flushes);
    cr_assert_eq(nbd_cache(h, 4096, 0, 0), 0, "%s", nbd_get_error());
    assert_serves(h);
    nbd_close(h);
}

/* ---- data path ---------------------------------------------------------- */

Test(io, write_read_flush_round_trip, .init = setup, .fini = teardown)
{
    struct nbd_handle *h = connect_to("disk");
    static char out[1 << 20], in[1 << 20];
    fill(out, sizeof out, 1);
    cr_assert_eq(nbd_pwrite(h, out, sizeof out, 12345, 0), 0);
    cr_assert_eq(nbd_pwrite(h, out, 4096, 0, LIBNBD_CMD_FLAG_FUA), 0);
    cr_assert_eq(nbd_flush(h, 0), 0);
    cr_assert_eq(nbd_pread(h, in, sizeof in, 12345, 0), 0);
    cr_assert_eq(memcmp(in, out, sizeof in), 0);
    cr_assert_eq(nbd_pread(h, in, 4096, 0, 0), 0);
    cr_assert_eq(memcmp(in, out, 4096), 0);
    nbd_close(h);
}

struct chunks {
    int data, hole;
};

static int chunk_cb(void *user, const void *sub, size_t count, uint64_t offset, unsigned status,
                    int *error)
{
    (void)sub;
    (void)count;
    (void)offset;
    (void)error;
    struct chunks *c = user;
    if (status == LIBNBD_READ_DATA)
        c->data++;
    if (status == LIBNBD_READ_HOLE)
        c->hole++;
    return 0;
}

Test(io, sparse_read_sends_holes, .init = setup, .fini = teardown)
{
    struct nbd_handle *h = connect_to("disk");
    static char buf[256 << 10], zero[256 << 10];
    fill(buf, 4096, 2);
    cr_assert_eq(nbd_pwrite(h, buf, 4096, 1 << 20, 0), 0);
    struct chunks c = {0, 0};
    cr_assert_eq(nbd_pread_structured(h, buf, sizeof buf, 1 << 20,
                                      (nbd_chunk_callback){.callback = chunk_cb, .user_data = &c},
                                      0),
                 0);
    cr_assert_eq(c.data, 1);
    cr_assert_eq(c.hole, 1);
    cr_assert_eq(memcmp(buf + 4096, zero, sizeof buf - 4096), 0);
    c = (struct chunks){0, 0};
    cr_assert_eq(nbd_pread_structured(h, buf, sizeof buf, 1 << 20,
                                      (nbd_chunk_callback){.callback = chunk_cb, .user_data = &c},
                                      LIBNBD_CMD_FLAG_DF),
                 0);
    cr_assert_eq(c.data + c.hole, 1, "DF: one chunk");
    nbd_close(h);
}

struct extents {
    uint32_t len[8], flags[8];
    int n;
};

static int extent_cb(void *user, const char *ctx, uint64_t offset, uint32_t *entries, size_t nr,
                     int *error)
{
    (void)offset;
    (void)error;
    struct extents *e = user;
    if (strcmp(ctx, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
        return 0;
    for (size_t i = 0; i + 1 < nr && e->n < 8; i += 2) {
        e->len[e->n] = entries[i];
        e->flags[e->n++] = entries[i + 1];
    }
    return 0;
}

static struct extents status(struct nbd_handle *h, uint64_t len, uint64_t off, uint32_t flags)
{
    struct extents e = {.n = 0};
    cr_assert_eq(nbd_block_status(h, len, off,
                                  (nbd_extent_callback){.callback = extent_cb, .user_data = &e},
                                  flags),
                 0, "%s", nbd_get_error());
    return e;
}

Test(io, block_status_trim_and_zero, .init = setup, .fini = teardown)
{
    struct nbd_handle *h = connect_to("disk");
    char buf[8192];
    fill(buf, sizeof buf, 3);
    cr_assert_eq(nbd_pwrite(h, buf, sizeof buf, 0, 0), 0);
    struct extents e = status(h, 65536, 0, 0);
    cr_assert_geq(e.n, 2);
    cr_assert_eq(e.len[0], 8192);
    cr_assert_eq(e.flags[0], 0);
    cr_assert_eq(e.flags[1], LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO);
    e = status(h, 65536, 0, LIBNBD_CMD_FLAG_REQ_ONE);
    cr_assert_eq(e.n, 1);

    cr_assert_eq(nbd_trim(h, 4096, 0, 0), 0);
    cr_assert_eq(nbd_pread(h, buf, 4096, 0, 0), 0);
    for (int i = 0; i < 4096; i++)
        cr_assert_eq(buf[i], 0);
    e = status(h, 8192, 0, 0);
    cr_assert_eq(e.flags[0], LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO);

    cr_assert_eq(nbd_zero(h, 4096, 0, LIBNBD_CMD_FLAG_NO_HOLE), 0);
    e = status(h, 4096, 0, 0);
    cr_assert_eq(e.flags[0], 0, "NO_HOLE keeps the range allocated");
    cr_assert_eq(nbd_zero(h, 4096, 4096, LIBNBD_CMD_FLAG_FAST_ZERO), 0);
    cr_assert_eq(nbd_pread(h, buf, 8192, 0, 0), 0);
    for (int i = 0; i < 8192; i++)
        cr_assert_eq(buf[i], 0);
    cr_assert_eq(nbd_cache(h, 65536, 0, 0), 0);
    nbd_close(h);
}

Test(io, multi_conn_write_flush_read, .init = setup, .fini = teardown)
{
    struct nbd_handle *h[3];
    for (int i = 0; i < 3; i++)
        h[i] = connect_to("disk");
    cr_assert_eq(nbd_can_multi_conn(h[0]), 1);
    char out[4096], in[4096];
    fill(out, sizeof out, 4);
    cr_assert_eq(nbd_pwrite(h[1], out, sizeof out, 65536, 0), 0);
    cr_assert_eq(nbd_flush(h[2], 0), 0);
    cr_assert_eq(nbd_pread(h[0], in, sizeof in, 65536, 0), 0);
    cr_assert_eq(memcmp(in, out, sizeof in), 0);
    for (int i = 0; i < 3; i++)
        nbd_close(h[i]);
}

/* Many writes in flight at once on one connection of export, then as many
 * reads, each verified. */
static void deep_queue(const char *export)
{
    struct nbd_handle *h = connect_to(export);
    enum { N = 64, SZ = 16384 };
    static char out[N][SZ], in[N][SZ];
    int64_t cookie[N];
    for (int i = 0; i < N; i++) {
        fill(out[i], SZ, 10 + i);
        cookie[i] = nbd_aio_pwrite(h, out[i], SZ, (uint64_t)i * SZ, NBD_NULL_COMPLETION, 0);
        cr_assert_geq(cookie[i], 1, "%s", nbd_get_error());
    }
    while (nbd_aio_in_flight(h) > 0)
        cr_assert_geq(nbd_poll(h, -1), 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(nbd_aio_command_completed(h, cookie[i]), 1);
    for (int i = 0; i < N; i++)
        cookie[i] = nbd_aio_pread(h, in[i], SZ, (uint64_t)i * SZ, NBD_NULL_COMPLETION, 0);
    while (nbd_aio_in_flight(h) > 0)
        cr_assert_geq(nbd_poll(h, -1), 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(nbd_aio_command_completed(h, cookie[i]), 1);
        cr_assert_eq(memcmp(in[i], out[i], SZ), 0, "request %d", i);
    }
    nbd_close(h);
}

Test(io, deep_queue_out_of_order, .init = setup, .fini = teardown)
{
    deep_queue("disk");
}

/* Writes the backend reports done from another thread (nbd_async), as a
 * mirrored volume does: every one is answered, in any order, with its
 * data in place; zero and trim take the same way. */
Test(io, async_writes_answered_from_another_thread, .init = setup, .fini = teardown)
{
    deep_queue("async");
    struct nbd_handle *h = connect_to("async");
    char buf[8192];
    cr_assert_eq(nbd_zero(h, 4096, 0, 0), 0, "%s", nbd_get_error());
    cr_assert_eq(nbd_trim(h, 4096, 4096, 0), 0, "%s", nbd_get_error());
    cr_assert_eq(nbd_pread(h, buf, sizeof buf, 0, 0), 0);
    for (size_t i = 0; i < sizeof buf; i++)
        cr_assert_eq(buf[i], 0, "byte %zu", i);
    nbd_close(h);
}

/* A client that goes away with writes in flight: the connection stays
 * until their completions have run, then closes its export. */
Test(io, async_writes_outlive_their_client, .init = setup, .fini = teardown)
{
    struct nbd_handle *h = connect_to("async");
    static char out[4096];
    for (int i = 0; i < 32; i++)
        cr_assert_geq(
            nbd_aio_pwrite(h, out, sizeof out, (uint64_t)i * 4096, NBD_NULL_COMPLETION, 0), 1, "%s",
            nbd_get_error());
    nbd_close(h);
    for (int i = 0; i < 2000 && mem_catalog_open_count(cat) > 0; i++)
        poll(NULL, 0, 5);
    cr_assert_eq(mem_catalog_open_count(cat), 0);
    cr_assert_eq(nbd_server_connections(srv), 0);
}

/* ---- TLS ---------------------------------------------------------------- */

static void setup_tls(void)
{
    start_server_tls(1, 32u << 20, NBD_TLS_REQUIRE);
}

/* Under TLS the replies of writes completed on another thread are queued
 * for the connection's own threads (a record cut short must be resent
 * whole by the one sender): every one still arrives, whole, in any order,
 * and so do the replies the own threads send meanwhile. */
Test(tls, async_writes_answered_through_the_queue, .init = setup_tls, .fini = teardown)
{
    for (int round = 0; round < 4; round++)
        deep_queue(round % 2 ? "disk" : "async");
    struct nbd_handle *h = connect_to("async");
    cr_assert_eq(nbd_get_tls_negotiated(h), 1);
    assert_serves(h);
    nbd_close(h);
}

/* With tls = require a plain client gets nowhere, not even the list. */
Test(tls, require_refuses_plain_clients, .init = setup_tls, .fini = teardown)
{
    use_tls = false;
    struct nbd_handle *h = nbd_create();
    cr_assert_not_null(h);
    cr_assert_eq(nbd_set_export_name(h, "disk"), 0);
    cr_assert_eq(nbd_connect_unix(h, sock), -1, "a plain client was served");
    nbd_close(h);
    use_tls = true;
}

/* The local socket under tls = require: mode 0600, served in plain to a
 * client that would take TLS if offered (STARTTLS is unsupported there),
 * and a second server on the same path is refused rather than taking it. */
Test(tls, local_socket_is_plain_and_root_only, .init = setup_tls, .fini = teardown)
{
    char local[160];
    snprintf(local, sizeof local, "%s/local.sock", dir);
    cr_assert_eq(nbd_server_listen_local(srv, local), 0);
    struct stat st;
    cr_assert_eq(stat(local, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0600);
    struct nbd_handle *h = nbd_create();
    cr_assert_not_null(h);
    cr_assert_eq(nbd_set_tls(h, LIBNBD_TLS_ALLOW), 0);
    cr_assert_eq(nbd_set_export_name(h, "disk"), 0);
    cr_assert_eq(nbd_connect_unix(h, local), 0, "connect: %s", nbd_get_error());
    cr_assert_eq(nbd_get_tls_negotiated(h), 0);
    assert_serves(h);
    struct nbd_server_config cfg;
    nbd_server_config_defaults(&cfg);
    struct nbd_server *other = nbd_server_new(&cfg, &mem_catalog_ops, cat);
    cr_assert_not_null(other);
    cr_assert_eq(nbd_server_listen_local(other, local), -EADDRINUSE);
    nbd_server_free(other);
    assert_serves(h);
    nbd_close(h);
}

/* ---- meta contexts: qemu:dirty-bitmap:NAME ------------------------------ */

static int names_cb(void *user, const char *name)
{
    char *out = user;
    size_t n = strlen(out);
    snprintf(out + n, 512 - n, "%s%s", n ? "," : "", name);
    return 0;
}

/* The contexts LIST_META_CONTEXT names for export given the queries
 * (NULL-terminated), joined with commas in the server's order. */
static const char *list_contexts(const char *export, const char *const *queries)
{
    static char out[512];
    out[0] = '\0';
    struct nbd_handle *h = nbd_create();
    cr_assert_eq(nbd_set_opt_mode(h, true), 0);
    cr_assert_eq(nbd_set_export_name(h, export), 0);
    cr_assert_eq(nbd_connect_unix(h, sock), 0, "%s", nbd_get_error());
    for (const char *const *q = queries; *q; q++)
        cr_assert_eq(nbd_add_meta_context(h, *q), 0);
    int n = nbd_opt_list_meta_context(
        h, (nbd_context_callback){.callback = names_cb, .user_data = out});
    cr_assert_geq(n, 0, "%s", nbd_get_error());
    nbd_opt_abort(h);
    nbd_close(h);
    return out;
}

#define LIST(export, ...) list_contexts(export, (const char *const[]){__VA_ARGS__, NULL})

/* Closes h and waits until no connection holds an export open. */
static void close_all(struct nbd_handle *h)
{
    nbd_close(h);
    for (int i = 0; i < 500 && mem_catalog_open_count(cat) > 0; i++)
        poll(NULL, 0, 10);
    cr_assert_eq(mem_catalog_open_count(cat), 0);
}

Test(meta, list_answers_queries_as_qemu_nbd, .init = setup, .fini = teardown)
{
    cr_assert_eq(mem_catalog_add_bitmap(cat, "disk", "b2"), 0);
    const char *all = "base:allocation,qemu:dirty-bitmap:b1,qemu:dirty-bitmap:b2";
    cr_assert_str_eq(list_contexts("disk", (const char *const[]){NULL}), all, "no query: all");
    cr_assert_str_eq(LIST("disk", "qemu:"), "qemu:dirty-bitmap:b1,qemu:dirty-bitmap:b2");
    cr_assert_str_eq(LIST("disk", "qemu:dirty-bitmap:"),
                     "qemu:dirty-bitmap:b1,qemu:dirty-bitmap:b2");
    cr_assert_str_eq(LIST("disk", "base:"), "base:allocation");
    cr_assert_str_eq(LIST("disk", "qemu:dirty-bitmap:b2"), "qemu:dirty-bitmap:b2");
    cr_assert_str_eq(LIST("disk", "qemu:dirty-bitmap:b2", "base:allocation", "qemu:"), all,
                     "each context once, whatever matches it");
    cr_assert_str_eq(LIST("disk", "qemu:dirty-bitmap:nope", "qemu:allocation-depth", "x-foo:bar",
                          "qemu:dirty-bitmap:b", "base:allocationx"),
                     "", "unknown contexts and namespaces are ignored");
    cr_assert_str_eq(LIST("async", "qemu:dirty-bitmap:"), "qemu:dirty-bitmap:other");
    cr_assert_str_eq(LIST("disk", "qemu:dirty-bitmap:other"), "",
                     "another export's bitmap is not offered");
    cr_assert_str_eq(LIST("ro", "qemu:"), "", "no bitmaps, no qemu: contexts");
    cr_assert_eq(mem_catalog_open_count(cat), 0, "LIST closes what it opened");
}

/* Per context: chunks received and their extents. */
struct ctx_extents {
    const char *ctx;
    int chunks, n;
    uint32_t len[8], flags[8];
};

static int ctx_extent_cb(void *user, const char *ctx, uint64_t offset, uint32_t *entries, size_t nr,
                         int *error)
{
    (void)offset;
    (void)error;
    for (struct ctx_extents *e = user; e->ctx; e++) {
        if (strcmp(ctx, e->ctx) != 0)
            continue;
        e->chunks++;
        for (size_t i = 0; i + 1 < nr && e->n < 8; i += 2) {
            e->len[e->n] = entries[i];
            e->flags[e->n++] = entries[i + 1];
        }
    }
    return 0;
}

static void assert_extents(const struct ctx_extents *e, int n, const uint32_t *len,
                           const uint32_t *flags)
{
    cr_assert_eq(e->chunks, 1, "%s: %d chunks", e->ctx, e->chunks);
    cr_assert_eq(e->n, n, "%s: %d extents, wanted %d", e->ctx, e->n, n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(e->len[i], len[i], "%s: extent %d length %u", e->ctx, i, e->len[i]);
        cr_assert_eq(e->flags[i], flags[i], "%s: extent %d flags %u", e->ctx, i, e->flags[i]);
    }
}

/* Writes len bytes at off through a connection of its own. */
static void write_at(const char *export, uint64_t off, uint32_t len)
{
    static char buf[65536];
    fill(buf, len, 5);
    struct nbd_handle *h = connect_to(export);
    cr_assert_eq(nbd_pwrite(h, buf, len, off, 0), 0, "%s", nbd_get_error());
    close_all(h);
}

/* Two bitmaps as two snapshots' would be: b1 older (both writes), b2 added
 * between them (the second only). With base:allocation and b2 selected,
 * BLOCK_STATUS answers one chunk for each, b1 none; the bitmap's chunk
 * is computed the slow way (mem_export says -EAGAIN inline), after the
 * base:allocation one was ready: still one chunk each. */
Test(meta, block_status_one_chunk_per_selected_context, .init = setup, .fini = teardown)
{
    write_at("disk", 8192, 4096);
    cr_assert_eq(mem_catalog_add_bitmap(cat, "disk", "b2"), 0);
    write_at("disk", 20480, 8192);

    struct nbd_handle *h = nbd_create();
    cr_assert_eq(nbd_set_export_name(h, "disk"), 0);
    cr_assert_eq(nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION), 0);
    cr_assert_eq(nbd_add_meta_context(h, "qemu:dirty-bitmap:b2"), 0);
    cr_assert_eq(nbd_add_meta_context(h, "qemu:dirty-bitmap:"), 0); /* SET: selects nothing */
    cr_assert_eq(nbd_connect_unix(h, sock), 0, "%s", nbd_get_error());
    cr_assert_eq(nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION), 1);
    cr_assert_eq(nbd_can_meta_context(h, "qemu:dirty-bitmap:b2"), 1);
    cr_assert_eq(nbd_can_meta_context(h, "qemu:dirty-bitmap:b1"), 0);

    struct ctx_extents e[] = {{.ctx = LIBNBD_CONTEXT_BASE_ALLOCATION},
                              {.ctx = "qemu:dirty-bitmap:b2"},
                              {.ctx = "qemu:dirty-bitmap:b1"},
                              {.ctx = NULL}};
    cr_assert_eq(nbd_block_status(h, 65536, 0,
                                  (nbd_extent_callback){.callback = ctx_extent_cb, .user_data = e},
                                  0),
                 0, "%s", nbd_get_error());
    const uint32_t hz = LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO, d = 1;
    assert_extents(&e[0], 5, (uint32_t[]){8192, 4096, 8192, 8192, 36864},
                   (uint32_t[]){hz, 0, hz, 0, hz});
    assert_extents(&e[1], 3, (uint32_t[]){20480, 8192, 36864}, (uint32_t[]){0, d, 0});
    cr_assert_eq(e[2].chunks, 0, "b1 was not selected");

    struct ctx_extents one[] = {
        {.ctx = LIBNBD_CONTEXT_BASE_ALLOCATION}, {.ctx = "qemu:dirty-bitmap:b2"}, {.ctx = NULL}};
    cr_assert_eq(
        nbd_block_status(h, 16384, 16384,
                         (nbd_extent_callback){.callback = ctx_extent_cb, .user_data = one},
                         LIBNBD_CMD_FLAG_REQ_ONE),
        0, "%s", nbd_get_error());
    assert_extents(&one[0], 1, (uint32_t[]){4096}, (uint32_t[]){hz});
    assert_extents(&one[1], 1, (uint32_t[]){4096}, (uint32_t[]){0});
    close_all(h);
}

/* Reads what cmd prints (its stdout) into out; asserts it succeeded. */
static void run(const char *cmd, char *out, size_t size)
{
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    size_t n = fread(out, 1, size - 1, f);
    out[n] = '\0';
    cr_assert_eq(pclose(f), 0, "%s failed: %s", cmd, out);
}

/* A dirty bitmap read by real clients: nbdinfo --map, and qemu-img map
 * with x-dirty-bitmap (which reports dirty ranges as "data": false). */
Test(meta, real_clients_map_a_dirty_bitmap, .init = setup, .fini = teardown)
{
    write_at("disk", 65536, 65536);
    write_at("disk", 1 << 20, 4096);
    char cmd[512], out[4096];
    snprintf(cmd, sizeof cmd, "nbdinfo --map=qemu:dirty-bitmap:b1 'nbd+unix:///disk?socket=%s'",
             sock);
    run(cmd, out, sizeof out);
    uint64_t want[][3] = {{0, 65536, 0},
                          {65536, 65536, 1},
                          {131072, (1 << 20) - 131072, 0},
                          {1 << 20, 4096, 1},
                          {(1 << 20) + 4096, DISK_SIZE - (1 << 20) - 4096, 0}};
    size_t n = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"), n++) {
        unsigned long long off, len;
        unsigned type;
        cr_assert_eq(sscanf(line, "%llu %llu %u", &off, &len, &type), 3, "line: %s", line);
        cr_assert_lt(n, 5, "extra line: %s", line);
        cr_assert(off == want[n][0] && len == want[n][1] && type == want[n][2], "line %zu: %s", n,
                  line);
    }
    cr_assert_eq(n, 5);

    snprintf(cmd, sizeof cmd,
             "qemu-img map --output=json --image-opts driver=nbd,export=disk,server.type=unix,"
             "server.path=%s,x-dirty-bitmap=qemu:dirty-bitmap:b1",
             sock);
    run(cmd, out, sizeof out);
    cr_assert_not_null(strstr(out, "{ \"start\": 0, \"length\": 65536, "), "%s", out);
    const char *dirty = strstr(out, "{ \"start\": 65536, \"length\": 65536, ");
    cr_assert_not_null(dirty, "%s", out);
    cr_assert_not_null(memmem(dirty, strcspn(dirty, "\n"), "\"data\": false", 13), "%s", out);
    cr_assert_not_null(strstr(out, "{ \"start\": 1048576, \"length\": 4096, "), "%s", out);
}

/* ---- bad requests ------------------------------------------------------- */

#define EXPECT_ERRNO(call, err)                                                                    \
    do {                                                                                           \
        cr_assert_eq((call), -1, #call " should fail");                                            \
        cr_assert_eq(nbd_get_errno(), (err), #call ": errno %d, wanted %d (%s)", nbd_get_errno(),  \
                     (err), nbd_get_error());                                                      \
        assert_serves(h);                                                                          \
    } while (0)

Test(errors, out_of_range_requests, .init = setup, .fini = teardown)
{
    struct nbd_handle *h = connect_lax("disk");
    static char buf[8192];
    EXPECT_ERRNO(nbd_pread(h, buf, 4096, DISK_SIZE - 2048, 0), EINVAL);
    EXPECT_ERRNO(nbd_pwrite(h, buf, 4096, DISK_SIZE - 2048, 0), ENOSPC);
    EXPECT_ERRNO(nbd_trim(h, 4096, DISK_SIZE, 0), EINVAL);
    EXPECT_ERRNO(nbd_zero(h, 4096, DISK_SIZE - 512, 0), ENOSPC);
    EXPECT_ERRNO(nbd_cache(h, 4096, UINT64_MAX - 100, 0), EINVAL);
    struct extents e = {.n = 0};
    EXPECT_ERRNO(nbd_block_status(h, 4096, DISK_SIZE,
                                  (nbd_extent_callback){.callback = extent_cb, .user_data = &e}, 0),
                 EINVAL);
    nbd_close(h);
}

Test(errors, invalid_flags, .init = setup, .fini = teardown)
{
    struct nbd_handle *h = connect_lax("disk");
    char buf[512];
    EXPECT_ERRNO(nbd_pread(h, buf, sizeof buf, 0, LIBNBD_CMD_FLAG_NO_HOLE), EINVAL);
    EXPECT_ERRNO(nbd_pwrite(h, buf, sizeof buf, 0, LIBNBD_CMD_FLAG_REQ_ONE), EINVAL);
    EXPECT_ERRNO(nbd_trim(h, 512, 0, LIBNBD_CMD_FLAG_FAST_ZERO), EINVAL);
    EXPECT_ERRNO(nbd_flush(h, LIBNBD_CMD_FLAG_DF), EINVAL);
    EXPECT_ERRNO(nbd_pread(h, buf, sizeof buf, 0, 1u << 7), EINVAL);
    nbd_close(h);
}

Test(errors, zero_length_requests_succeed, .init = setup, .fini = teardown)
{
    struct nbd_handle *h = connect_lax("disk");
    char buf[1];
    cr_assert_eq(nbd_pread(h, buf, 0, 0, 0), 0, "%s", nbd_get_error());
    cr_assert_eq(nbd_pwrite(h, buf, 0, 0, 0), 0, "%s", nbd_get_error());
    cr_assert_eq(nbd_trim(h, 0, 0, 0), 0, "%s", nbd_get_error());
    cr_assert_eq(nbd_zero(h, 0, 0, 0), 0, "%s", nbd_get_error());
    assert_serves(h);
    nbd_close(h);
}

Test(errors, misaligned_requests, .init = setup_strict, .fini = teardown)
{
    struct nbd_handle *h = connect_lax("disk");
    char buf[1024];
    cr_assert_eq(nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM), 512);
    EXPECT_ERRNO(nbd_pread(h, buf, 512, 1, 0), EINVAL);
    EXPECT_ERRNO(nbd_pwrite(h, buf, 100, 0, 0), EINVAL);
    EXPECT_ERRNO(nbd_trim(h, 512, 256, 0), EINVAL);
    nbd_close(h);
}

Test(errors, oversized_write_is_skipped_not_allocated, .init = setup_strict, .fini = teardown)
{
    struct nbd_handle *h = connect_lax("disk");
    size_t big = 4u << 20; /* max_payload is 1 MiB here */
    char *buf = calloc(1, big);
    cr_assert_not_null(buf);
    EXPECT_ERRNO(nbd_pwrite(h, buf, big, 0, 0), EINVAL);
    EXPECT_ERRNO(nbd_pread(h, buf, big, 0, 0), EINVAL);
    free(buf);
    nbd_close(h);
}

/* ---- raw sockets: what libnbd will not send ----------------------------- */

static int raw_connect(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, sock);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void raw_read(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        cr_assert_gt(n, 0, "short read from server");
        got += (size_t)n;
    }
}

/* Negotiates export with EXPORT_NAME (simple replies) and returns the
 * socket in transmission. */
static int raw_transmission_to(const char *export)
{
    int fd = raw_connect();
    char hello[18];
    raw_read(fd, hello, sizeof hello);
    uint32_t cflags = htobe32(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    uint32_t len = (uint32_t)strlen(export);
    struct nbd_option_header o = {htobe64(NBD_IHAVEOPT), htobe32(NBD_OPT_EXPORT_NAME),
                                  htobe32(len)};
    cr_assert_eq(write(fd, &cflags, 4), 4);
    cr_assert_eq(write(fd, &o, sizeof o), (ssize_t)sizeof o);
    cr_assert_eq(write(fd, export, len), (ssize_t)len);
    char info[10];
    raw_read(fd, info, sizeof info);
    return fd;
}

static int raw_transmission(void)
{
    return raw_transmission_to("disk");
}

static uint32_t raw_request(int fd, uint16_t type, uint16_t flags, uint64_t off, uint32_t len)
{
    struct nbd_request r = {
        htobe32(NBD_REQUEST_MAGIC), htobe16(flags), htobe16(type), 77, htobe64(off), htobe32(len)};
    cr_assert_eq(write(fd, &r, sizeof r), (ssize_t)sizeof r);
    struct nbd_simple_reply rep;
    raw_read(fd, &rep, sizeof rep);
    cr_assert_eq(be32toh(rep.magic), NBD_SIMPLE_REPLY_MAGIC);
    cr_assert_eq(rep.handle, 77);
    return be32toh(rep.error);
}

Test(raw, unknown_command_and_flag_get_einval, .init = setup, .fini = teardown)
{
    int fd = raw_transmission();
    cr_assert_eq(raw_request(fd, 42, 0, 0, 0), NBD_EINVAL);
    cr_assert_eq(raw_request(fd, NBD_CMD_FLUSH, 1u << 14, 0, 0), NBD_EINVAL);
    cr_assert_eq(raw_request(fd, NBD_CMD_BLOCK_STATUS, 0, 0, 512), NBD_EINVAL,
                 "no meta context negotiated");
    cr_assert_eq(raw_request(fd, NBD_CMD_FLUSH, 0, 0, 0), 0);
    close(fd);
}

Test(raw, bad_magic_closes_only_that_connection, .init = setup, .fini = teardown)
{
    struct nbd_handle *h = connect_to("disk");
    int fd = raw_transmission();
    char junk[28];
    memset(junk, 0x5a, sizeof junk);
    cr_assert_eq(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    char c;
    cr_assert_eq(read(fd, &c, 1), 0, "server closes a stream it can't follow");
    close(fd);
    assert_serves(h);
    nbd_close(h);
}

Test(raw, garbage_and_truncated_handshakes_harm_nobody, .init = setup, .fini = teardown)
{
    struct nbd_handle *h = connect_to("disk");
    char hello[18], c;
    int fd = raw_connect();
    raw_read(fd, hello, sizeof hello);
    cr_assert_eq(write(fd, "\xff\xff\xff\xff", 4), 4); /* unknown client flags */
    cr_assert_eq(read(fd, &c, 1), 0);
    close(fd);

    fd = raw_connect();
    raw_read(fd, hello, sizeof hello);
    cr_assert_eq(write(fd, "\0\0\0\3IHAVE", 9), 9); /* truncated option */
    close(fd);

    fd = raw_connect();
    raw_read(fd, hello, sizeof hello);
    cr_assert_eq(write(fd, "\0\0\0\3garbage-garbage-garbage", 27), 27);
    cr_assert_eq(read(fd, &c, 1), 0);
    close(fd);
    assert_serves(h);
    nbd_close(h);
}

Test(raw, unknown_option_then_go, .init = setup, .fini = teardown)
{
    int fd = raw_connect();
    char hello[18];
    raw_read(fd, hello, sizeof hello);
    uint32_t cflags = htobe32(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    cr_assert_eq(write(fd, &cflags, 4), 4);
    struct nbd_option_header o = {htobe64(NBD_IHAVEOPT), htobe32(4242), htobe32(3)};
    cr_assert_eq(write(fd, &o, sizeof o), (ssize_t)sizeof o);
    cr_assert_eq(write(fd, "abc", 3), 3);
    struct nbd_option_reply rep;
    raw_read(fd, &rep, sizeof rep);
    cr_assert_eq(be32toh(rep.type), NBD_REP_ERR_UNSUP);
    char msg[256];
    raw_read(fd, msg, be32toh(rep.length));
    o = (struct nbd_option_header){htobe64(NBD_IHAVEOPT), htobe32(NBD_OPT_LIST), 0};
    cr_assert_eq(write(fd, &o, sizeof o), (ssize_t)sizeof o);
    raw_read(fd, &rep, sizeof rep);
    cr_assert_eq(be32toh(rep.type), NBD_REP_SERVER, "the next option still works");
    close(fd);
}

/* ---- meta contexts on the wire: ids, and the export SET holds ----------- */

static void raw_option(int fd, uint32_t opt, const void *data, uint32_t len)
{
    struct nbd_option_header o = {htobe64(NBD_IHAVEOPT), htobe32(opt), htobe32(len)};
    cr_assert_eq(write(fd, &o, sizeof o), (ssize_t)sizeof o);
    cr_assert_eq(write(fd, data, len), (ssize_t)len);
}

/* Reads one option reply into data (NUL-terminated); returns its type. */
static uint32_t raw_option_reply(int fd, uint32_t opt, char *data, size_t size)
{
    struct nbd_option_reply rep;
    raw_read(fd, &rep, sizeof rep);
    cr_assert_eq(be64toh(rep.magic), NBD_REP_MAGIC);
    cr_assert_eq(be32toh(rep.option), opt);
    uint32_t len = be32toh(rep.length);
    cr_assert_lt(len, size);
    raw_read(fd, data, len);
    data[len] = '\0';
    return be32toh(rep.type);
}

/* Sends a LIST or SET_META_CONTEXT for export with the queries. */
static void raw_meta(int fd, uint32_t opt, const char *export, const char *const *queries)
{
    char buf[4096];
    size_t at = 0;
    uint32_t be = htobe32((uint32_t)strlen(export)), n = 0;
    memcpy(buf, &be, 4);
    memcpy(buf + 4, export, strlen(export));
    at = 4 + strlen(export) + 4;
    for (const char *const *q = queries; *q; q++, n++) {
        cr_assert_lt(at + 4 + strlen(*q), sizeof buf);
        be = htobe32((uint32_t)strlen(*q));
        memcpy(buf + at, &be, 4);
        memcpy(buf + at + 4, *q, strlen(*q));
        at += 4 + strlen(*q);
    }
    be = htobe32(n);
    memcpy(buf + 4 + strlen(export), &be, 4);
    raw_option(fd, opt, buf, (uint32_t)at);
}

/* Expects a META_CONTEXT reply with id and name. */
static void expect_context(int fd, uint32_t opt, uint32_t id, const char *name)
{
    char data[256];
    cr_assert_eq(raw_option_reply(fd, opt, data, sizeof data), NBD_REP_META_CONTEXT);
    uint32_t got;
    memcpy(&got, data, 4);
    cr_assert_eq(be32toh(got), id, "%s: id %u, wanted %u", data + 4, be32toh(got), id);
    cr_assert_str_eq(data + 4, name);
}

static void expect_ack(int fd, uint32_t opt)
{
    char data[256];
    cr_assert_eq(raw_option_reply(fd, opt, data, sizeof data), NBD_REP_ACK, "%s", data);
}

/* A raw connection past STRUCTURED_REPLY. */
static int raw_structured(void)
{
    int fd = raw_connect();
    char hello[18];
    raw_read(fd, hello, sizeof hello);
    uint32_t cflags = htobe32(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    cr_assert_eq(write(fd, &cflags, 4), 4);
    raw_option(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
    expect_ack(fd, NBD_OPT_STRUCTURED_REPLY);
    return fd;
}

/* GO export, no info requested; reads the replies up to the ACK. */
static void raw_go(int fd, const char *export)
{
    char buf[256], data[256];
    uint32_t be = htobe32((uint32_t)strlen(export));
    memcpy(buf, &be, 4);
    memcpy(buf + 4, export, strlen(export));
    memset(buf + 4 + strlen(export), 0, 2);
    raw_option(fd, NBD_OPT_GO, buf, (uint32_t)(4 + strlen(export) + 2));
    uint32_t type;
    while ((type = raw_option_reply(fd, NBD_OPT_GO, data, sizeof data)) == NBD_REP_INFO)
        ;
    cr_assert_eq(type, NBD_REP_ACK, "GO %s: %s", export, data);
}

/* Sends BLOCK_STATUS of [0, 4096) and reads the first reply chunk: its
 * flags and type, and the context id if a status chunk, or the error. */
static void raw_status(int fd, uint16_t *flags, uint16_t *type, uint32_t *id_or_error)
{
    struct nbd_request r = {
        htobe32(NBD_REQUEST_MAGIC), 0, htobe16(NBD_CMD_BLOCK_STATUS), 9, 0, htobe32(4096)};
    cr_assert_eq(write(fd, &r, sizeof r), (ssize_t)sizeof r);
    struct nbd_structured_reply h;
    raw_read(fd, &h, sizeof h);
    cr_assert_eq(be32toh(h.magic), NBD_STRUCTURED_REPLY_MAGIC);
    char payload[256];
    cr_assert_lt(be32toh(h.length), sizeof payload);
    raw_read(fd, payload, be32toh(h.length));
    memcpy(id_or_error, payload, 4);
    *id_or_error = be32toh(*id_or_error);
    *flags = be16toh(h.flags);
    *type = be16toh(h.type);
}

Test(meta, set_ids_and_the_held_export_taken_over_by_go, .init = setup, .fini = teardown)
{
    int fd = raw_structured();
    raw_meta(fd, NBD_OPT_LIST_META_CONTEXT, "disk", (const char *const[]){NULL});
    expect_context(fd, NBD_OPT_LIST_META_CONTEXT, 0, "base:allocation");
    expect_context(fd, NBD_OPT_LIST_META_CONTEXT, 0, "qemu:dirty-bitmap:b1");
    expect_ack(fd, NBD_OPT_LIST_META_CONTEXT);
    raw_meta(fd, NBD_OPT_SET_META_CONTEXT, "disk",
             (const char *const[]){"qemu:dirty-bitmap:b1",
                                   "qemu:", "base:", "qemu:dirty-bitmap:other", NULL});
    expect_context(fd, NBD_OPT_SET_META_CONTEXT, 1, "qemu:dirty-bitmap:b1");
    expect_ack(fd, NBD_OPT_SET_META_CONTEXT);
    cr_assert_eq(mem_catalog_open_count(cat), 1, "SET holds its export");
    raw_go(fd, "disk");
    cr_assert_eq(mem_catalog_open_count(cat), 1, "GO took it over");
    uint16_t flags, type;
    uint32_t id;
    raw_status(fd, &flags, &type, &id);
    cr_assert_eq(type, NBD_REPLY_TYPE_BLOCK_STATUS);
    cr_assert_eq(id, 1);
    cr_assert_eq(flags, NBD_REPLY_FLAG_DONE, "the only chunk");
    close(fd);
    wait_connections(0);
    cr_assert_eq(mem_catalog_open_count(cat), 0);
}

Test(meta, go_to_another_export_drops_the_selection, .init = setup, .fini = teardown)
{
    int fd = raw_structured();
    raw_meta(fd, NBD_OPT_SET_META_CONTEXT, "disk",
             (const char *const[]){"base:allocation", "qemu:dirty-bitmap:b1", NULL});
    expect_context(fd, NBD_OPT_SET_META_CONTEXT, 0, "base:allocation");
    expect_context(fd, NBD_OPT_SET_META_CONTEXT, 1, "qemu:dirty-bitmap:b1");
    expect_ack(fd, NBD_OPT_SET_META_CONTEXT);
    raw_go(fd, "async");
    cr_assert_eq(mem_catalog_open_count(cat), 1, "the export SET held is closed");
    uint16_t flags, type;
    uint32_t err;
    raw_status(fd, &flags, &type, &err);
    cr_assert_eq(type, NBD_REPLY_TYPE_ERROR);
    cr_assert_eq(err, NBD_EINVAL, "no context selected for async");
    close(fd);
    wait_connections(0);
}

Test(meta, set_selecting_nothing_or_a_client_leaving_holds_nothing, .init = setup, .fini = teardown)
{
    int fd = raw_structured();
    raw_meta(fd, NBD_OPT_SET_META_CONTEXT, "disk",
             (const char *const[]){"qemu:", "qemu:dirty-bitmap:", "base:", NULL});
    expect_ack(fd, NBD_OPT_SET_META_CONTEXT);
    cr_assert_eq(mem_catalog_open_count(cat), 0, "wildcards select nothing in SET");
    raw_meta(fd, NBD_OPT_SET_META_CONTEXT, "nope", (const char *const[]){"base:", NULL});
    char data[256];
    cr_assert_eq(raw_option_reply(fd, NBD_OPT_SET_META_CONTEXT, data, sizeof data),
                 NBD_REP_ERR_UNKNOWN);
    raw_meta(fd, NBD_OPT_SET_META_CONTEXT, "disk",
             (const char *const[]){"qemu:dirty-bitmap:b1", NULL});
    expect_context(fd, NBD_OPT_SET_META_CONTEXT, 1, "qemu:dirty-bitmap:b1");
    expect_ack(fd, NBD_OPT_SET_META_CONTEXT);
    cr_assert_eq(mem_catalog_open_count(cat), 1);
    close(fd);
    wait_connections(0);
    cr_assert_eq(mem_catalog_open_count(cat), 0, "the held export closed with the handshake");
}

/* Adds bitmaps s0 ... s<n-1> to ro; their queries, NULL-terminated, in q. */
static void many_bitmaps(unsigned n, char names[][32], const char **q)
{
    for (unsigned i = 0; i < n; i++) {
        snprintf(names[i], 32, "qemu:dirty-bitmap:s%u", i);
        cr_assert_eq(mem_catalog_add_bitmap(cat, "ro", names[i] + 18), 0);
        q[i] = names[i];
    }
    q[n] = NULL;
}

/* NBD_META_BITMAPS_MAX bitmaps selected at once answer one chunk each, in
 * one reply; one more is refused as too big and selects nothing. */
Test(meta, at_most_64_bitmaps_selected, .init = setup, .fini = teardown)
{
    enum { N = NBD_META_BITMAPS_MAX };
    static char names[N + 1][32];
    const char *q[N + 2];
    many_bitmaps(N + 1, names, q);
    int fd = raw_structured();
    raw_meta(fd, NBD_OPT_SET_META_CONTEXT, "ro", q);
    char data[256];
    cr_assert_eq(raw_option_reply(fd, NBD_OPT_SET_META_CONTEXT, data, sizeof data),
                 NBD_REP_ERR_TOO_BIG, "%s", data);
    cr_assert_eq(mem_catalog_open_count(cat), 0);
    q[N] = NULL;
    raw_meta(fd, NBD_OPT_SET_META_CONTEXT, "ro", q);
    for (uint32_t i = 0; i < N; i++)
        expect_context(fd, NBD_OPT_SET_META_CONTEXT, NBD_CONTEXT_ID_BITMAP(i), names[i]);
    expect_ack(fd, NBD_OPT_SET_META_CONTEXT);
    raw_go(fd, "ro");
    struct nbd_request r = {htobe32(NBD_REQUEST_MAGIC), 0, htobe16(NBD_CMD_BLOCK_STATUS), 9, 0,
                            htobe32(1u << 20)};
    cr_assert_eq(write(fd, &r, sizeof r), (ssize_t)sizeof r);
    for (uint32_t i = 0; i < N; i++) {
        struct nbd_structured_reply h;
        struct {
            uint32_t id, length, flags;
        } chunk;
        raw_read(fd, &h, sizeof h);
        cr_assert_eq(be16toh(h.type), NBD_REPLY_TYPE_BLOCK_STATUS);
        cr_assert_eq(be16toh(h.flags), i + 1 == N ? NBD_REPLY_FLAG_DONE : 0);
        cr_assert_eq(be32toh(h.length), sizeof chunk);
        raw_read(fd, &chunk, sizeof chunk);
        cr_assert_eq(be32toh(chunk.id), NBD_CONTEXT_ID_BITMAP(i));
        cr_assert_eq(be32toh(chunk.length), 1u << 20, "all clean: one extent");
        cr_assert_eq(chunk.flags, 0);
    }
    close(fd);
}

/* ---- a client that reads no replies ------------------------------------- */

static void raw_send(int fd, uint16_t type, uint64_t off, uint32_t len)
{
    struct nbd_request r = {
        htobe32(NBD_REQUEST_MAGIC), 0, htobe16(type), 5, htobe64(off), htobe32(len)};
    cr_assert_eq(send(fd, &r, sizeof r, MSG_NOSIGNAL), (ssize_t)sizeof r, "%s", strerror(errno));
}

/* A raw connection to "async" that asked for a 4 MiB READ and reads
 * nothing: once bytes pile up unread, a serving thread is blocked sending
 * that reply, holding the connection's write lock. */
static int stalled_reader(void)
{
    int fd = raw_transmission_to("async");
    raw_send(fd, NBD_CMD_READ, 0, 4u << 20);
    int queued = 0;
    for (int i = 0; i < 1000 && queued < 64 * 1024; i++) {
        poll(NULL, 0, 5);
        cr_assert_eq(ioctl(fd, FIONREAD, &queued), 0);
    }
    cr_assert_geq(queued, 64 * 1024, "the READ reply fills the socket");
    return fd;
}

/* Writes n times through h, each waited for at most 5 s in all. */
static bool writes_complete(struct nbd_handle *h, int n)
{
    static char buf[4096];
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n; i++) {
        int64_t ck = nbd_aio_pwrite(h, buf, sizeof buf, (uint64_t)i * 4096, NBD_NULL_COMPLETION, 0);
        cr_assert_geq(ck, 1, "%s", nbd_get_error());
        while (nbd_aio_command_completed(h, ck) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - t0.tv_sec > 5)
                return false;
            cr_assert_geq(nbd_poll(h, 100), 0, "%s", nbd_get_error());
        }
    }
    return true;
}

/* The completer thread of the async export answers every connection's
 * writes, as a mirror link's reader does. Client A's write completions
 * find A's write lock held by a thread blocked on A's full socket: the
 * completer must queue them and go on, so B's writes are answered. */
Test(stalled, completing_thread_never_blocks_on_a_client, .init = setup, .fini = teardown,
     .timeout = 60)
{
    int a = stalled_reader();
    for (int i = 0; i < 16; i++)
        raw_send(a, NBD_CMD_WRITE_ZEROES, (uint64_t)i * 4096, 4096);
    struct nbd_handle *b = connect_to("async");
    cr_assert(writes_complete(b, 64), "B's writes wait behind A's replies");

    /* A reads at last: the READ's reply whole, then its 16 write replies,
     * queued meanwhile, none lost or cut. */
    static char data[4u << 20];
    struct nbd_simple_reply rep;
    raw_read(a, &rep, sizeof rep);
    raw_read(a, data, sizeof data);
    for (int i = 0; i < 17; i++) {
        cr_assert_eq(be32toh(rep.magic), NBD_SIMPLE_REPLY_MAGIC, "reply %d", i);
        cr_assert_eq(rep.error, 0, "reply %d", i);
        if (i < 16)
            raw_read(a, &rep, sizeof rep);
    }
    close(a);
    wait_connections(1);
    assert_serves(b);
    nbd_close(b);
    wait_connections(0);
    cr_assert_eq(mem_catalog_open_count(cat), 0);
}

/* Many write replies to a client that reads none for a while: the
 * completer fills the socket itself (nobody else is sending), so the rest
 * waits in the queue for the connection's reader, woken to send it. When
 * the client reads, every reply is there, whole. */
Test(stalled, replies_queued_for_the_reader_arrive_whole, .init = setup, .fini = teardown,
     .timeout = 60)
{
    enum { N = 4096 };
    int a = raw_transmission_to("async");
    static struct nbd_request req[N];
    for (int i = 0; i < N; i++)
        req[i] = (struct nbd_request){htobe32(NBD_REQUEST_MAGIC),           0,
                                      htobe16(NBD_CMD_WRITE_ZEROES),        (uint64_t)i,
                                      htobe64((uint64_t)(i % 4096) * 4096), htobe32(4096)};
    cr_assert_eq(send(a, req, sizeof req, MSG_NOSIGNAL), (ssize_t)sizeof req);
    static bool seen[N];
    for (int i = 0; i < N; i++) {
        struct nbd_simple_reply rep;
        raw_read(a, &rep, sizeof rep);
        cr_assert_eq(be32toh(rep.magic), NBD_SIMPLE_REPLY_MAGIC, "reply %d", i);
        cr_assert_eq(rep.error, 0, "reply %d", i);
        cr_assert_lt(rep.handle, (uint64_t)N);
        cr_assert(!seen[rep.handle], "handle %llu twice", (unsigned long long)rep.handle);
        seen[rep.handle] = true;
    }
    close(a);
    wait_connections(0);
}

/* The same client closing with its replies still queued closes cleanly. */
Test(stalled, client_gone_with_replies_queued, .init = setup, .fini = teardown, .timeout = 60)
{
    int a = stalled_reader();
    for (int i = 0; i < 16; i++)
        raw_send(a, NBD_CMD_WRITE_ZEROES, (uint64_t)i * 4096, 4096);
    struct nbd_handle *b = connect_to("async");
    cr_assert(writes_complete(b, 4), "B's writes wait behind A's replies");
    close(a);
    wait_connections(1);
    nbd_close(b);
    wait_connections(0);
    cr_assert_eq(mem_catalog_open_count(cat), 0);
}

/* A client that sends writes and reads no replies costs bounded memory:
 * its writes complete asynchronously only up to NBD_ASYNC_MAX at once,
 * its queued replies are bounded by CONN_OUTQ_MAX (past it the connection
 * ends), and beyond both its own threads block on its own socket, so the
 * server stops reading from it. Either way another client is served. */
Test(stalled, writer_that_reads_nothing_is_bounded, .init = setup, .fini = teardown, .timeout = 60)
{
    int a = stalled_reader();
    unsigned n = CONN_OUTQ_MAX / sizeof(struct nbd_simple_reply) + 1000, sent = 0;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (; sent < n; sent++) {
        struct nbd_request r = {htobe32(NBD_REQUEST_MAGIC),
                                0,
                                htobe16(NBD_CMD_WRITE_ZEROES),
                                5,
                                htobe64((uint64_t)(sent % 4096) * 4096),
                                htobe32(4096)};
        ssize_t k = send(a, &r, sizeof r, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0 && errno == EAGAIN) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - t0.tv_sec > 3)
                break; /* the server stopped reading this client */
            poll(NULL, 0, 10);
            sent--;
            continue;
        }
        if (k != (ssize_t)sizeof r)
            break; /* ended */
    }
    struct nbd_handle *b = connect_to("async");
    cr_assert(writes_complete(b, 16), "another client waits behind the one that reads nothing");
    nbd_close(b);
    close(a);
    wait_connections(0);
    cr_assert_eq(mem_catalog_open_count(cat), 0);
}

/* A write whose payload is not all in yet: the reading thread waits for
 * the client, which may send the rest only once an earlier write is
 * answered (a libnbd client polling one of its connections at a time
 * does), so the writes gathered before it must go first. Gathered, they
 * were never sent, and t-lab-mirror's overlapping writers stopped for good
 * (their mirror copies, never sent, also timed the peers' links out). */
Test(batch, write_awaiting_its_payload_ends_the_batch, .init = setup, .fini = teardown,
     .timeout = 30)
{
    int fd = raw_transmission_to("async");
    static char msg[2 * sizeof(struct nbd_request) + 4096 + 100];
    struct nbd_request r[2] = {
        {htobe32(NBD_REQUEST_MAGIC), 0, htobe16(NBD_CMD_WRITE), 1, 0, htobe32(4096)},
        {htobe32(NBD_REQUEST_MAGIC), 0, htobe16(NBD_CMD_WRITE), 2, htobe64(4096), htobe32(4096)}};
    memcpy(msg, &r[0], sizeof r[0]);
    memcpy(msg + sizeof r[0] + 4096, &r[1], sizeof r[1]);
    cr_assert_eq(send(fd, msg, sizeof msg, MSG_NOSIGNAL), (ssize_t)sizeof msg);

    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&pfd, 1, 5000), 1,
                 "the first write is not answered before the second's payload");
    struct nbd_simple_reply rep;
    raw_read(fd, &rep, sizeof rep);
    cr_assert_eq(rep.handle, 1);
    cr_assert_eq(rep.error, 0);

    static char rest[4096 - 100];
    cr_assert_eq(send(fd, rest, sizeof rest, MSG_NOSIGNAL), (ssize_t)sizeof rest);
    raw_read(fd, &rep, sizeof rep);
    cr_assert_eq(rep.handle, 2);
    cr_assert_eq(rep.error, 0);
    close(fd);
    wait_connections(0);
}

#define WRITE_HANDLE 1000u

/* Sends to fd, in one send, a 4 KiB WRITE at 0 of fill(7) (handle
 * WRITE_HANDLE) then n READs of len bytes at 0 (handles first..first+n-1),
 * so the server reads them all in at once and runs them in one batch. */
static void write_then_reads(int fd, int n, uint64_t first, uint32_t len)
{
    static char msg[sizeof(struct nbd_request) * 65 + 4096];
    cr_assert_leq(n, 64);
    struct nbd_request w = {
        htobe32(NBD_REQUEST_MAGIC), 0, htobe16(NBD_CMD_WRITE), WRITE_HANDLE, 0, htobe32(4096)};
    memcpy(msg, &w, sizeof w);
    fill(msg + sizeof w, 4096, 7);
    size_t at = sizeof w + 4096;
    for (int i = 0; i < n; i++, at += sizeof w) {
        struct nbd_request r = {htobe32(NBD_REQUEST_MAGIC), 0, htobe16(NBD_CMD_READ),
                                first + (uint64_t)i,        0, htobe32(len)};
        memcpy(msg + at, &r, sizeof r);
    }
    cr_assert_eq(send(fd, msg, at, MSG_NOSIGNAL), (ssize_t)at, "%s", strerror(errno));
}

/* Whether the async export has reported n writes done, waiting 5 s at most. */
static bool writes_done_within_5s(unsigned long n)
{
    for (int i = 0; i < 500 && mem_catalog_writes_done(cat) < n; i++)
        poll(NULL, 0, 10);
    return mem_catalog_writes_done(cat) >= n;
}

/* Reads one simple reply, success expected, and the payload of a READ
 * (any handle but WRITE_HANDLE) into data[0..len). Returns its handle. */
static uint64_t read_reply(int fd, char *data, uint32_t len)
{
    struct nbd_simple_reply rep;
    raw_read(fd, &rep, sizeof rep);
    cr_assert_eq(be32toh(rep.magic), NBD_SIMPLE_REPLY_MAGIC);
    cr_assert_eq(rep.error, 0);
    if (rep.handle != WRITE_HANDLE)
        raw_read(fd, data, len);
    return rep.handle;
}

/* An inline READ's reply the client does not read: the reading thread
 * would block sending it with the write before it gathered in the batch,
 * never sent to the peers (with a mirror, its links time out and the
 * peers are outdated). The batch ends before the send blocks: the write
 * completes while the client still reads nothing. Then every reply
 * arrives whole, the READs' in order. */
Test(batch, inline_reply_that_would_block_ends_the_batch, .init = setup, .fini = teardown,
     .timeout = 30)
{
    enum { N = 16, LEN = 256 * 1024 }; /* 4 MiB: more than any socket buffer */
    int fd = raw_transmission_to("async");
    write_then_reads(fd, N, 0, LEN);
    cr_assert(writes_done_within_5s(1), "the write waits for the client to read a reply");

    static char data[LEN], want[4096];
    fill(want, sizeof want, 7);
    bool write_answered = false;
    for (uint64_t next = 0; next < N || !write_answered;) {
        uint64_t h = read_reply(fd, data, LEN);
        if (h == WRITE_HANDLE) {
            cr_assert(!write_answered, "the write answered twice");
            write_answered = true;
            continue;
        }
        cr_assert_eq(h, next, "READ replies in order");
        cr_assert_eq(memcmp(data, want, sizeof want), 0, "READ %llu sees the write",
                     (unsigned long long)h);
        next++;
    }
    close(fd);
    wait_connections(0);
}

/* An inline reply behind another thread's, blocked on the same client
 * (a 4 MiB READ, run the slow way, that the client does not read): the
 * reading thread would wait for the write lock with the write before it
 * gathered. The batch ends before it waits. */
Test(batch, inline_reply_behind_a_blocked_sender_ends_the_batch, .init = setup, .fini = teardown,
     .timeout = 30)
{
    int fd = stalled_reader();
    write_then_reads(fd, 1, 6, 4096);
    cr_assert(writes_done_within_5s(1), "the write waits for the client to read a reply");

    static char data[4u << 20], want[4096];
    fill(want, sizeof want, 7);
    cr_assert_eq(read_reply(fd, data, sizeof data), 5, "the 4 MiB READ's reply first, whole");
    bool write_answered = false, read_answered = false;
    while (!write_answered || !read_answered) {
        uint64_t h = read_reply(fd, data, 4096);
        if (h == WRITE_HANDLE) {
            cr_assert(!write_answered, "the write answered twice");
            write_answered = true;
            continue;
        }
        cr_assert_eq(h, 6);
        cr_assert(!read_answered, "the READ answered twice");
        cr_assert_eq(memcmp(data, want, sizeof want), 0, "the READ sees the write");
        read_answered = true;
    }
    close(fd);
    wait_connections(0);
}

/* A reply too large for the cork (transmission.c), sent while smaller
 * replies wait in it, that blocks on a client not reading: the batch ends
 * before the send blocks, and ending it sends the cork, from a thread
 * that already holds the connection's write lock. Both go out, the cork's
 * first: the write's reply, then every READ's, whole. */
Test(batch, large_reply_behind_corked_replies_that_would_block, .init = setup, .fini = teardown,
     .timeout = 30)
{
    enum { N = 16, LEN = 256 * 1024 }; /* 4 MiB: more than any socket buffer */
    int fd = raw_transmission_to("disk");
    write_then_reads(fd, N, 0, LEN);
    static char data[LEN], want[4096];
    fill(want, sizeof want, 7);
    cr_assert_eq(read_reply(fd, data, LEN), WRITE_HANDLE, "the corked write's reply first");
    for (uint64_t next = 0; next < N; next++) {
        cr_assert_eq(read_reply(fd, data, LEN), next, "the READs' replies in order");
        cr_assert_eq(memcmp(data, want, sizeof want), 0, "READ %" PRIu64 " sees the write", next);
    }
    close(fd);
    wait_connections(0);
}

/* A reply that does not fit beside the cork's: sending the cork first
 * waits for the write lock (another thread blocked on the client holds
 * it), and that ends the batch. The reply must not then wait in the cork
 * of a batch that has ended: nothing more comes to end it again. */
Test(batch, reply_after_a_flush_that_ended_the_batch, .init = setup, .fini = teardown,
     .timeout = 30)
{
    enum { LEN = 8192 }; /* two READ replies do not fit in one cork */
    int fd = stalled_reader();
    write_then_reads(fd, 2, 6, LEN);
    static char data[4u << 20], want[4096];
    fill(want, sizeof want, 7);
    cr_assert_eq(read_reply(fd, data, sizeof data), 5, "the 4 MiB READ's reply first, whole");
    unsigned answered = 0;
    for (int i = 0; i < 3; i++) {
        uint64_t h = read_reply(fd, data, LEN);
        unsigned bit = h == WRITE_HANDLE ? 1u : h == 6 ? 2u : h == 7 ? 4u : 8u;
        cr_assert(bit != 8 && !(answered & bit), "handle %" PRIu64 ": unknown or twice", h);
        answered |= bit;
    }
    close(fd);
    wait_connections(0);
}

/* ---- shutdown ----------------------------------------------------------- */

static void *shutdown_thread(void *arg)
{
    nbd_server_shutdown(arg);
    return NULL;
}

Test(shutdown, later_requests_get_eshutdown, .init = setup, .fini = teardown)
{
    struct nbd_handle *h = connect_to("disk");
    assert_serves(h);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, shutdown_thread, srv), 0);
    char buf[512];
    int r;
    /* The listener closes first; wait for the flag through the protocol. */
    while ((r = nbd_pread(h, buf, sizeof buf, 0, 0)) == 0)
        ;
    cr_assert_eq(nbd_get_errno(), ESHUTDOWN, "%s", nbd_get_error());
    nbd_close(h); /* soft disconnect lets shutdown finish before the grace ends */
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_eq(nbd_server_connections(srv), 0);
    cr_assert_eq(mem_catalog_open_count(cat), 0);
}

/* ---- listeners added and removed, connections ended by address ---------- */

/* A TCP port free on 127.0.0.1 a moment ago. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert(fd >= 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static struct nbd_handle *connect_tcp(const char *port)
{
    struct nbd_handle *h = nbd_create();
    cr_assert_not_null(h);
    cr_assert_eq(nbd_set_export_name(h, "disk"), 0);
    cr_assert_eq(nbd_connect_tcp(h, "127.0.0.1", port), 0, "connect: %s", nbd_get_error());
    return h;
}

Test(listeners, ended_connections_get_eshutdown_others_go_on, .init = setup, .fini = teardown)
{
    char addr[32], port[8];
    snprintf(port, sizeof port, "%d", free_port());
    snprintf(addr, sizeof addr, "127.0.0.1:%s", port);
    cr_assert_eq(nbd_server_listen(srv, addr), 0);
    struct nbd_handle *tcp = connect_tcp(port), *idle = connect_tcp(port);
    struct nbd_handle *local = connect_to("disk");
    assert_serves(tcp);
    assert_serves(idle);
    wait_connections(3);

    cr_assert_eq(nbd_server_unlisten(srv, addr), 0);
    cr_assert_eq(nbd_server_unlisten(srv, addr), -ENOENT);
    struct nbd_handle *late = nbd_create();
    cr_assert_neq(nbd_connect_tcp(late, "127.0.0.1", port), 0, "connected after unlisten");
    nbd_close(late);
    assert_serves(tcp); /* connections outlive their listener */

    cr_assert_eq(nbd_server_end_connections(srv, "127.0.0.2"), 0);
    cr_assert_eq(nbd_server_end_connections(srv, "127.0.0.1"), 2);
    cr_assert_eq(nbd_server_end_connections(srv, "127.0.0.1"), 0, "marked twice");
    char buf[512];
    cr_assert_neq(nbd_pread(tcp, buf, sizeof buf, 0, 0), 0);
    cr_assert_eq(nbd_get_errno(), ESHUTDOWN, "%s", nbd_get_error());
    wait_connections(2); /* it closed after that reply */
    assert_serves(local);

    cr_assert_eq(nbd_server_drop_connections(srv, "127.0.0.1"), 1); /* the idle one */
    wait_connections(1);
    cr_assert_neq(nbd_pread(idle, buf, sizeof buf, 0, 0), 0);
    assert_serves(local);
    nbd_close(tcp);
    nbd_close(idle);
    nbd_close(local);
}
