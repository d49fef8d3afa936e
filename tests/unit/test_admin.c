/* test_admin.c - the admin commands against a real pool in a temp dir:
 * every command's success and error replies, every kind of malformed
 * request (and a few thousand mutated ones: the reply must stay a reply),
 * then the same service over libqb IPC as the CLI sees it, including a
 * foreign message id, an oversized request and a refused non-root client.
 */
#include "nbd-server/server.h"
#include "policing/protocol.h"
#include "vsan/admin.h"
#include "common/admin_proto.h"
#include "vsan/config.h"
#include "store/store.h"
#include "volume/tokens.h"
#include "volume/volume.h"
#include "volume/voltable.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <qb/qbipcc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

/* root on the local socket: sees every volume. */
static const struct nbd_client root = {"root", NBD_TLS_AUTH_LOCAL, true};

static char dir[] = "/tmp/test_admin.XXXXXX";
static struct vsan_config cfg;
static struct store *store;
static struct volumes *vols;
static struct nbd_server *nbd;
static struct admin_node node;
static qb_loop_t *loop;
static struct voltable table;
static struct policing *pc;
/* Who runs the commands: NULL is the local admin socket (root). */
static const struct admin_caller *caller;

/* Runs the loop until done() holds, polling it every millisecond. */
static bool (*until)(void);

static void check_until(void *data)
{
    (void)data;
    if (until())
        qb_loop_stop(loop);
    else
        qb_loop_timer_add(loop, QB_LOOP_HIGH, 1000000, NULL, check_until, NULL);
}

static void run_until(bool (*done)(void))
{
    until = done;
    if (done())
        return;
    qb_loop_timer_add(loop, QB_LOOP_HIGH, 1000000, NULL, check_until, NULL);
    qb_loop_run(loop);
}

static bool synced(void)
{
    struct policing_status st;
    policing_status(pc, &st);
    return st.synced && st.quorate;
}

/* The group of one the standalone daemon runs, so table changes take the
 * same agreed path as in a cluster. synced_first: waits until this node's
 * table is the group's (else it returns at once, before the first sync
 * round). */
static void start_policing_at(bool synced_first)
{
    loop = qb_loop_create();
    cr_assert(loop != NULL);
    table = (struct voltable){.store = store, .vols = vols};
    struct policing_params p = {.driver = &cluster_local,
                                .group = "test",
                                .loop = loop,
                                .region_size = 4 << 20,
                                .name = "n1",
                                .nbd = "127.0.0.1:10809",
                                .mirror = "",
                                .table = &voltable_ops,
                                .table_ctx = &table};
    cr_assert(eq(int, policing_start(&p, &pc), 0));
    volumes_set_policing(vols, pc);
    if (synced_first)
        run_until(synced);
}

static void start_policing(void)
{
    start_policing_at(true);
}

static void setup(void)
{
    cr_assert(mkdtemp(dir) != NULL);
    config_defaults(&cfg);
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", dir);
    snprintf(cfg.admin_socket, sizeof cfg.admin_socket, "vsan-test-admin-%d", (int)getpid());
    cr_assert(eq(int, store_open(dir, &store), 0));
    cr_assert(eq(int, volumes_open(store, &vols), 0));
    nbd = nbd_server_new(&cfg.nbd, &volumes_catalog, vols);
    cr_assert(nbd != NULL);
    start_policing();
    node = (struct admin_node){.cfg = &cfg,
                               .vols = vols,
                               .nbd = nbd,
                               .pc = pc,
                               .tokens = volumes_tokens(vols),
                               .started = admin_clock()};
    caller = NULL;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    policing_close_writes(pc);
    nbd_server_shutdown(nbd);
    nbd_server_free(nbd);
    policing_stop(pc);
    qb_loop_destroy(loop);
    volumes_close(vols);
    store_close(store);
    nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    strcpy(dir, "/tmp/test_admin.XXXXXX");
}

TestSuite(admin, .init = setup, .fini = teardown);

/* A call answered on the loop: the reply waits here for exec_len. */
struct test_call {
    struct admin_call call;
    struct json_object *reply;
    bool answered;
};

static struct test_call *current;

static void test_answer(struct admin_call *call, struct json_object *reply)
{
    struct test_call *tc = (struct test_call *)call;
    tc->reply = reply;
    tc->answered = true;
}

static bool answered(void)
{
    return current->answered;
}

static struct json_object *exec_len(const char *request, size_t len)
{
    struct test_call tc = {{test_answer}, NULL, false};
    bool later = false;
    struct json_object *reply = admin_execute(&node, caller, request, len, &tc.call, &later);
    struct json_object *ok;

    if (later) {
        current = &tc;
        run_until(answered);
        reply = tc.reply;
    }
    cr_assert(reply != NULL, "no reply to %.80s", request);
    cr_assert(json_object_object_get_ex(reply, "ok", &ok) &&
                  json_object_is_type(ok, json_type_boolean),
              "reply without \"ok\": %s", json_object_to_json_string(reply));
    return reply;
}

static struct json_object *exec(const char *request)
{
    return exec_len(request, strlen(request));
}

static const char *str_field(struct json_object *o, const char *key)
{
    struct json_object *v;

    cr_assert(json_object_object_get_ex(o, key, &v), "no \"%s\" in %s", key,
              json_object_to_json_string(o));
    return json_object_get_string(v);
}

static int64_t int_field(struct json_object *o, const char *key)
{
    struct json_object *v;

    cr_assert(json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_int),
              "no integer \"%s\" in %s", key, json_object_to_json_string(o));
    return json_object_get_int64(v);
}

static bool is_ok(struct json_object *reply)
{
    return json_object_get_boolean(json_object_object_get(reply, "ok"));
}

/* Runs request, expects success and returns the reply (put it). */
static struct json_object *expect_ok(const char *request)
{
    struct json_object *reply = exec(request);

    cr_assert(is_ok(reply), "%s -> %s", request, json_object_to_json_string(reply));
    return reply;
}

/* Runs request, expects the error code with message in its message. */
static void expect_error_len(const char *request, size_t len, const char *code, const char *message)
{
    struct json_object *reply = exec_len(request, len);

    cr_assert(not(is_ok(reply)), "%.80s succeeded", request);
    cr_assert(eq(str, (char *)str_field(reply, "error"), (char *)code), "%.80s -> %s", request,
              json_object_to_json_string(reply));
    cr_assert(strstr(str_field(reply, "message"), message) != NULL, "%.80s -> message \"%s\"",
              request, str_field(reply, "message"));
    json_object_put(reply);
}

static void expect_error(const char *request, const char *code, const char *message)
{
    expect_error_len(request, strlen(request), code, message);
}

static void create(const char *name, const char *size)
{
    char req[200];

    snprintf(req, sizeof req, "{\"cmd\":\"volume.create\",\"name\":\"%s\",\"size\":%s}", name,
             size);
    json_object_put(expect_ok(req));
}

Test(admin, status)
{
    create("a", "1048576");
    struct json_object *r = expect_ok("{\"cmd\":\"status\"}");
    cr_assert(eq(str, (char *)str_field(r, "name"), cfg.name));
    cr_assert(eq(str, (char *)str_field(r, "version"), VSAN_VERSION));
    cr_assert(eq(str, (char *)str_field(r, "mode"), "standalone"));
    cr_assert(eq(str, (char *)str_field(r, "data_dir"), dir));
    cr_assert(eq(str, (char *)str_field(r, "admin_socket"), cfg.admin_socket));
    cr_assert(eq(i64, int_field(r, "volumes"), 1));
    cr_assert(eq(i64, int_field(r, "connections"), 0));
    cr_assert(eq(i64, int_field(r, "pid"), getpid()));
    cr_assert(int_field(r, "uptime") >= 0 && int_field(r, "uptime") < 60);
    struct json_object *listen = json_object_object_get(r, "nbd_listen");
    cr_assert(json_object_is_type(listen, json_type_array));
    cr_assert(eq(sz, json_object_array_length(listen), 1));
    cr_assert(eq(str, (char *)json_object_get_string(json_object_array_get_idx(listen, 0)),
                 "127.0.0.1:10809"));
    json_object_put(r);
}

Test(admin, volume_lifecycle)
{
    struct json_object *r =
        expect_ok("{\"cmd\":\"volume.create\",\"name\":\"db\",\"size\":1048576}");
    cr_assert(eq(str, (char *)str_field(r, "name"), "db"));
    cr_assert(eq(i64, int_field(r, "size"), 1048576));
    cr_assert(eq(sz, strlen(str_field(r, "uuid")), 36));
    cr_assert(eq(i64, int_field(r, "connections"), 0));
    json_object_put(r);

    create("app", "512");
    r = expect_ok("{\"cmd\":\"volume.list\"}");
    struct json_object *list = json_object_object_get(r, "volumes");
    cr_assert(eq(sz, json_object_array_length(list), 2));
    cr_assert(eq(str, (char *)str_field(json_object_array_get_idx(list, 0), "name"), "app"));
    cr_assert(eq(str, (char *)str_field(json_object_array_get_idx(list, 1), "name"), "db"));
    json_object_put(r);

    r = expect_ok("{\"cmd\":\"volume.resize\",\"name\":\"db\",\"size\":2097152}");
    cr_assert(eq(i64, int_field(r, "size"), 2097152));
    json_object_put(r);
    expect_error("{\"cmd\":\"volume.resize\",\"name\":\"db\",\"size\":1048576}", ADMIN_E_BAD_SIZE,
                 "volume \"db\": shrinking from 2 MiB to 1 MiB destroys data; use --force");
    expect_error("{\"cmd\":\"volume.resize\",\"name\":\"db\",\"size\":1048576,\"force\":false}",
                 ADMIN_E_BAD_SIZE, "use --force");
    r = expect_ok("{\"cmd\":\"volume.resize\",\"name\":\"db\",\"size\":1048576,\"force\":true}");
    cr_assert(eq(i64, int_field(r, "size"), 1048576));
    json_object_put(r);

    r = expect_ok("{\"cmd\":\"volume.show\",\"name\":\"db\"}");
    cr_assert(eq(i64, int_field(r, "size"), 1048576));
    cr_assert(eq(i64, int_field(r, "generation"), 3));
    json_object_put(r);

    r = expect_ok("{\"cmd\":\"volume.delete\",\"name\":\"db\"}");
    cr_assert(eq(str, (char *)str_field(r, "name"), "db"));
    json_object_put(r);
    expect_error("{\"cmd\":\"volume.show\",\"name\":\"db\"}", ADMIN_E_NO_SUCH_VOLUME,
                 "volume \"db\": no such volume");
}

Test(admin, volume_errors)
{
    create("db", "1048576");
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"db\",\"size\":512}", ADMIN_E_VOLUME_EXISTS,
                 "volume \"db\": already exists");
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"x\",\"size\":0}", ADMIN_E_BAD_SIZE,
                 "volume \"x\": size must not be zero");
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"x\",\"size\":1000}", ADMIN_E_BAD_SIZE,
                 "size 1000 is not a multiple of 512 bytes");
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"x\",\"size\":-512}", ADMIN_E_BAD_SIZE,
                 "size -512 is negative");
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"x\",\"size\":2251799813685248}",
                 ADMIN_E_BAD_SIZE,
                 "size 2 PiB (2251799813685248 bytes) is larger than the maximum");
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"x\",\"size\":18446744073709551615}",
                 ADMIN_E_BAD_SIZE, "larger than the maximum");
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"a b\",\"size\":512}", ADMIN_E_BAD_NAME,
                 "volume name \"a b\"");
    expect_error("{\"cmd\":\"volume.create\",\"name\":\".x\",\"size\":512}", ADMIN_E_BAD_NAME,
                 "volume name \".x\"");
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"\",\"size\":512}", ADMIN_E_BAD_NAME,
                 "volume name \"\"");
    expect_error("{\"cmd\":\"volume.delete\",\"name\":\"db\\u0000x\"}", ADMIN_E_BAD_NAME,
                 "volume name contains a NUL character");
    expect_error("{\"cmd\":\"volume.resize\",\"name\":\"nope\",\"size\":512}",
                 ADMIN_E_NO_SUCH_VOLUME, "volume \"nope\": no such volume");
    expect_error("{\"cmd\":\"volume.resize\",\"name\":\"db\",\"size\":0,\"force\":true}",
                 ADMIN_E_BAD_SIZE, "must not be zero");
    expect_error("{\"cmd\":\"volume.delete\",\"name\":\"nope\"}", ADMIN_E_NO_SUCH_VOLUME,
                 "volume \"nope\": no such volume");
}

Test(admin, volume_in_use)
{
    struct nbd_export exp;

    create("db", "1048576");
    cr_assert(eq(int, volumes_catalog.open(vols, "db", &root, &exp), 0));
    struct json_object *r = expect_ok("{\"cmd\":\"volume.show\",\"name\":\"db\"}");
    cr_assert(eq(i64, int_field(r, "connections"), 1));
    json_object_put(r);
    expect_error("{\"cmd\":\"volume.delete\",\"name\":\"db\"}", ADMIN_E_VOLUME_IN_USE,
                 "volume \"db\": cannot delete: in use by NBD connections");
    expect_error("{\"cmd\":\"volume.resize\",\"name\":\"db\",\"size\":512,\"force\":true}",
                 ADMIN_E_VOLUME_IN_USE, "volume \"db\": cannot shrink: in use");
    json_object_put(expect_ok("{\"cmd\":\"volume.resize\",\"name\":\"db\",\"size\":2097152}"));
    volumes_catalog.close(vols, &exp);
    json_object_put(expect_ok("{\"cmd\":\"volume.delete\",\"name\":\"db\"}"));
}

Test(admin, malformed_requests)
{
    expect_error("", ADMIN_E_BAD_REQUEST, "request is not JSON: incomplete");
    expect_error("{\"cmd\":", ADMIN_E_BAD_REQUEST, "request is not JSON");
    expect_error("nonsense", ADMIN_E_BAD_REQUEST, "request is not JSON");
    expect_error("[\"status\"]", ADMIN_E_BAD_REQUEST, "request must be a JSON object");
    expect_error("\"status\"", ADMIN_E_BAD_REQUEST, "request must be a JSON object");
    expect_error("{\"cmd\":\"status\"} {}", ADMIN_E_BAD_REQUEST, "data after its JSON object");
    expect_error_len("{\"cmd\":\"status\"}\0junk", 21, ADMIN_E_BAD_REQUEST, "data after");
    expect_error("{}", ADMIN_E_BAD_REQUEST, "missing field \"cmd\"");
    expect_error("{\"cmd\":5}", ADMIN_E_BAD_REQUEST, "field \"cmd\" must be a string");
    expect_error("{\"cmd\":\"volume.frob\"}", ADMIN_E_UNKNOWN_COMMAND,
                 "unknown command \"volume.frob\"");
    expect_error("{\"cmd\":\"status\",\"verbose\":true}", ADMIN_E_BAD_REQUEST,
                 "status: unknown field \"verbose\"");
    expect_error("{\"cmd\":\"volume.show\"}", ADMIN_E_BAD_REQUEST, "missing field \"name\"");
    expect_error("{\"cmd\":\"volume.show\",\"name\":null}", ADMIN_E_BAD_REQUEST,
                 "field \"name\" must be a string");
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"x\"}", ADMIN_E_BAD_REQUEST,
                 "missing field \"size\"");
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"x\",\"size\":\"1G\"}", ADMIN_E_BAD_REQUEST,
                 "field \"size\" must be an integer (bytes)");
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"x\",\"size\":1.5}", ADMIN_E_BAD_REQUEST,
                 "must be an integer");
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"x\",\"size\":512,\"force\":true}",
                 ADMIN_E_BAD_REQUEST, "volume.create: unknown field \"force\"");
    expect_error("{\"cmd\":\"volume.resize\",\"name\":\"x\",\"size\":512,\"force\":1}",
                 ADMIN_E_BAD_REQUEST, "field \"force\" must be true or false");
    json_object_put(expect_ok(" {\"cmd\":\"status\"}\n "));
}

Test(admin, oversized_and_deep_requests)
{
    size_t len = ADMIN_REQUEST_MAX + 1;
    char *big = malloc(len);
    cr_assert(big != NULL);
    memset(big, ' ', len);
    memcpy(big, "{\"cmd\":\"status\"}", 16);
    expect_error_len(big, len, ADMIN_E_TOO_LARGE, "larger than 65536 bytes");
    free(big);

    char deep[4000];
    size_t n = 0;
    n += sprintf(deep, "{\"cmd\":\"status\",\"x\":");
    for (int i = 0; i < 1000; i++)
        deep[n++] = '[';
    deep[n] = '\0';
    expect_error(deep, ADMIN_E_BAD_REQUEST, "request is not JSON");
}

/* Mutated valid requests: whatever the bytes, a well-formed reply comes
 * back (run under ASan, this also shows that nothing leaks). */
Test(admin, mutated_requests_always_get_a_reply)
{
    static const char *const seeds[] = {
        "{\"cmd\":\"volume.create\",\"name\":\"db\",\"size\":1048576}",
        "{\"cmd\":\"volume.resize\",\"name\":\"db\",\"size\":2097152,\"force\":true}",
        "{\"cmd\":\"volume.show\",\"name\":\"db\"}", "{\"cmd\":\"volume.list\"}",
        "{\"cmd\":\"status\"}"};
    char buf[256];
    unsigned seed = 12345;

    for (int i = 0; i < 5000; i++) {
        const char *s = seeds[i % 5];
        size_t len = strlen(s);
        memcpy(buf, s, len);
        for (int m = 0; m < 1 + i % 4; m++) {
            size_t at = rand_r(&seed) % len;
            buf[at] = (char)(rand_r(&seed) % 256);
        }
        if (i % 7 == 0)
            len = rand_r(&seed) % len;
        json_object_put(exec_len(buf, len));
    }
}

/* ---- over IPC ------------------------------------------------------------ */

static int stop_pipe[2];

static int32_t on_stop(int32_t fd, int32_t revents, void *data)
{
    (void)fd, (void)revents, (void)data;
    qb_loop_stop(loop);
    return 0;
}

static void *loop_main(void *arg)
{
    (void)arg;
    qb_loop_run(loop);
    return NULL;
}

/* Serves the fixture's loop (policing included) on a thread of its own. */
static void start_service(struct admin **adm, pthread_t *thread)
{
    cr_assert(eq(int, pipe(stop_pipe), 0));
    cr_assert(
        eq(int, qb_loop_poll_add(loop, QB_LOOP_HIGH, stop_pipe[0], POLLIN, NULL, on_stop), 0));
    cr_assert(eq(int, admin_start(loop, &node, adm), 0));
    cr_assert(eq(int, pthread_create(thread, NULL, loop_main, NULL), 0));
}

static void stop_service(struct admin *adm, pthread_t thread)
{
    cr_assert(eq(int, (int)write(stop_pipe[1], "x", 1), 1));
    cr_assert(eq(int, pthread_join(thread, NULL), 0));
    admin_stop(adm);
    cr_assert(eq(int, qb_loop_poll_del(loop, stop_pipe[0]), 0));
    close(stop_pipe[0]);
    close(stop_pipe[1]);
}

static qb_ipcc_connection_t *client(void)
{
    char name[ADMIN_NAME_MAX + 1];

    cr_assert(eq(int, admin_service_name(cfg.admin_socket, name, sizeof name), 0));
    qb_ipcc_connection_t *c = qb_ipcc_connect(name, ADMIN_MSG_MAX);
    cr_assert(c != NULL, "connect: %s", strerror(errno));
    return c;
}

/* Sends payload under message id; returns the reply object. */
static struct json_object *call(qb_ipcc_connection_t *c, int32_t id, const char *payload,
                                size_t len)
{
    static char buf[ADMIN_MSG_MAX + 1];
    struct qb_ipc_request_header hdr = {.id = id, .size = (int32_t)(sizeof hdr + len)};
    struct iovec iov[2] = {{&hdr, sizeof hdr}, {(void *)payload, len}};
    const size_t rh = sizeof(struct qb_ipc_response_header);

    ssize_t n = qb_ipcc_sendv_recv(c, iov, 2, buf, ADMIN_MSG_MAX, 10000);
    cr_assert(n >= (ssize_t)rh, "sendv_recv: %zd", n);
    buf[n] = '\0';
    cr_assert(eq(i32, ((struct qb_ipc_response_header *)buf)->size, (int32_t)n));
    struct json_object *reply = json_tokener_parse(buf + rh);
    cr_assert(reply != NULL, "reply is not JSON: %s", buf + rh);
    return reply;
}

Test(admin, over_ipc)
{
    struct admin *adm;
    pthread_t thread;

    start_service(&adm, &thread);
    qb_ipcc_connection_t *c = client();

    const char *status = "{\"cmd\":\"status\"}";
    struct json_object *r = call(c, ADMIN_MSG_JSON, status, strlen(status));
    cr_assert(is_ok(r));
    cr_assert(eq(str, (char *)str_field(r, "mode"), "standalone"));
    json_object_put(r);

    r = call(c, 77, status, strlen(status));
    cr_assert(not(is_ok(r)));
    cr_assert(eq(str, (char *)str_field(r, "error"), ADMIN_E_BAD_REQUEST));
    cr_assert(strstr(str_field(r, "message"), "not a vsan admin message (id 77)") != NULL);
    json_object_put(r);

    size_t len = ADMIN_REQUEST_MAX * 4;
    char *big = malloc(len);
    cr_assert(big != NULL);
    memset(big, 'x', len);
    r = call(c, ADMIN_MSG_JSON, big, len);
    free(big);
    cr_assert(eq(str, (char *)str_field(r, "error"), ADMIN_E_TOO_LARGE));
    json_object_put(r);

    const char *create = "{\"cmd\":\"volume.create\",\"name\":\"ipc\",\"size\":4096}";
    r = call(c, ADMIN_MSG_JSON, create, strlen(create));
    cr_assert(is_ok(r), "the connection still works after bad requests");
    json_object_put(r);

    qb_ipcc_disconnect(c);
    stop_service(adm, thread);
}

Test(admin, second_service_on_the_same_name_is_refused)
{
    struct admin *adm, *other;

    cr_assert(eq(int, admin_start(loop, &node, &adm), 0));
    cr_assert(eq(int, admin_start(loop, &node, &other), -EADDRINUSE));
    admin_stop(adm);
}

/* The child is forked before the loop thread exists and connects once told
 * to; it reports through its exit status. */
static pid_t fork_foreign_client(int *go)
{
    char name[ADMIN_NAME_MAX + 1];
    int p[2];
    char x;

    cr_assert(eq(int, admin_service_name(cfg.admin_socket, name, sizeof name), 0));
    cr_assert(eq(int, pipe(p), 0));
    pid_t child = fork();
    cr_assert(child >= 0);
    if (child == 0) {
        close(p[1]);
        if (setgid(65534) < 0 || setuid(65534) < 0 || read(p[0], &x, 1) != 1)
            _exit(10);
        qb_ipcc_connection_t *c = qb_ipcc_connect(name, ADMIN_MSG_MAX);
        _exit(c == NULL && errno == EACCES ? 0 : 11);
    }
    close(p[0]);
    *go = p[1];
    return child;
}

Test(admin, non_root_client_is_refused)
{
    struct admin *adm;
    pthread_t thread;
    int go, status;

    if (geteuid() != 0)
        cr_skip_test("needs root to switch to another uid");
    pid_t child = fork_foreign_client(&go);
    start_service(&adm, &thread);
    cr_assert(eq(int, (int)write(go, "x", 1), 1));
    close(go);
    cr_assert(eq(int, waitpid(child, &status, 0), child));
    bool refused = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    cr_assert(refused, "child status %d", status);
    stop_service(adm, thread);
}

/* ---- callers: clients and admins (admin_caller) ---------------------------- */

static const struct admin_caller alice = {"alice", false};
static const struct admin_caller bob = {"bob", false};
static const struct admin_caller carol_cert = {"dn:CN=carol,O=Example", false};
static const struct admin_caller api_admin = {"ops", true};

/* The names in r's "volumes", joined by ','. */
static void volume_names(struct json_object *r, char *out, size_t size)
{
    struct json_object *list = json_object_object_get(r, "volumes");
    out[0] = '\0';
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        size_t len = strlen(out);
        snprintf(out + len, size - len, "%s%s", i ? "," : "",
                 str_field(json_object_array_get_idx(list, i), "name"));
    }
}

Test(admin, a_client_lists_and_shows_only_the_volumes_it_has_a_grant_on)
{
    create("a", "1048576");
    create("b", "1048576");
    create("c", "1048576");
    json_object_put(expect_ok("{\"cmd\":\"access.grant\",\"name\":\"a\",\"identity\":\"alice\"}"));
    json_object_put(expect_ok(
        "{\"cmd\":\"access.grant\",\"name\":\"c\",\"identity\":\"carol\",\"read_only\":true}"));
    char names[200];
    caller = &alice;
    struct json_object *r = expect_ok("{\"cmd\":\"volume.list\"}");
    volume_names(r, names, sizeof names);
    cr_expect(eq(str, names, "a"));
    json_object_put(r);
    json_object_put(expect_ok("{\"cmd\":\"volume.show\",\"name\":\"a\"}"));
    /* Another's volume answers exactly as a missing one. */
    expect_error("{\"cmd\":\"volume.show\",\"name\":\"b\"}", ADMIN_E_NO_SUCH_VOLUME,
                 "volume \"b\": no such volume");
    expect_error("{\"cmd\":\"volume.resize\",\"name\":\"b\",\"size\":2097152}",
                 ADMIN_E_NO_SUCH_VOLUME, "volume \"b\": no such volume");
    expect_error("{\"cmd\":\"volume.delete\",\"name\":\"b\"}", ADMIN_E_NO_SUCH_VOLUME,
                 "volume \"b\": no such volume");
    /* A certificate whose CN is carol matches the bare grant to carol. */
    caller = &carol_cert;
    r = expect_ok("{\"cmd\":\"volume.list\"}");
    volume_names(r, names, sizeof names);
    cr_expect(eq(str, names, "c"));
    json_object_put(r);
    /* An admin of the API sees everything, as root does. */
    caller = &api_admin;
    r = expect_ok("{\"cmd\":\"volume.list\"}");
    volume_names(r, names, sizeof names);
    cr_expect(eq(str, names, "a,b,c"));
    json_object_put(r);
}

Test(admin, a_client_may_run_only_the_volume_commands)
{
    create("a", "1048576");
    caller = &alice;
    const char *admin_only[] = {
        "{\"cmd\":\"status\"}",
        "{\"cmd\":\"snapshot.list\",\"name\":\"a\"}",
        "{\"cmd\":\"snapshot.create\",\"volumes\":[\"a\"],\"snapshot\":\"s\"}",
        "{\"cmd\":\"access.grant\",\"name\":\"a\",\"identity\":\"alice\"}",
        "{\"cmd\":\"access.list\"}",
        "{\"cmd\":\"quota.set\",\"identity\":\"alice\",\"size\":0}",
        "{\"cmd\":\"quota.list\"}",
        "{\"cmd\":\"token.create\",\"identity\":\"alice\"}",
        "{\"cmd\":\"token.list\"}",
        "{\"cmd\":\"token.revoke\",\"id\":\"0123456789abcdef\"}",
        "{\"cmd\":\"replica.fail\",\"name\":\"a\"}",
        "{\"cmd\":\"service.failover\",\"node\":1}",
    };
    for (size_t i = 0; i < sizeof admin_only / sizeof admin_only[0]; i++)
        expect_error(admin_only[i], ADMIN_E_FORBIDDEN, "\"alice\" may not run");
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"x\",\"size\":512,\"owner\":\"bob\"}",
                 ADMIN_E_FORBIDDEN, "may not name a volume's owner");
    caller = NULL;
    struct json_object *r = expect_ok("{\"cmd\":\"access.list\"}");
    cr_expect(eq(sz, json_object_array_length(json_object_object_get(r, "grants")), 0),
              "a forbidden grant went through");
    json_object_put(r);
}

Test(admin, a_client_owns_what_it_creates_and_only_the_owner_resizes_or_deletes)
{
    json_object_put(expect_ok("{\"cmd\":\"quota.set\",\"identity\":\"alice\",\"size\":4194304}"));
    caller = &alice;
    struct json_object *r =
        expect_ok("{\"cmd\":\"volume.create\",\"name\":\"mine\",\"size\":1048576}");
    cr_expect(eq(str, (char *)str_field(r, "owner"), "alice"));
    json_object_put(r);
    r = expect_ok("{\"cmd\":\"volume.list\"}");
    char names[100];
    volume_names(r, names, sizeof names);
    cr_expect(eq(str, names, "mine"), "the owner sees its volume: it has a grant");
    json_object_put(r);
    caller = NULL;
    r = expect_ok("{\"cmd\":\"access.list\",\"name\":\"mine\"}");
    struct json_object *g = json_object_array_get_idx(json_object_object_get(r, "grants"), 0);
    cr_assert(g != NULL, "the owner got no grant");
    cr_expect(eq(str, (char *)str_field(g, "identity"), "alice"));
    cr_expect(eq(str, (char *)str_field(g, "mode"), "read-write"));
    json_object_put(r);
    /* bob can see it, but it is not his. */
    json_object_put(expect_ok("{\"cmd\":\"access.grant\",\"name\":\"mine\",\"identity\":\"bob\"}"));
    caller = &bob;
    expect_error("{\"cmd\":\"volume.resize\",\"name\":\"mine\",\"size\":2097152}",
                 ADMIN_E_FORBIDDEN, "\"bob\" may not resize it");
    expect_error("{\"cmd\":\"volume.delete\",\"name\":\"mine\"}", ADMIN_E_FORBIDDEN,
                 "\"bob\" may not delete it");
    caller = &alice;
    r = expect_ok("{\"cmd\":\"volume.resize\",\"name\":\"mine\",\"size\":2097152}");
    cr_expect(eq(i64, int_field(r, "size"), 2097152));
    json_object_put(r);
    /* An admin's volume has no owner: a client may not change it. */
    caller = NULL;
    create("shared", "1048576");
    r = expect_ok("{\"cmd\":\"volume.show\",\"name\":\"shared\"}");
    cr_expect(not(json_object_object_get_ex(r, "owner", NULL)));
    json_object_put(r);
    json_object_put(
        expect_ok("{\"cmd\":\"access.grant\",\"name\":\"shared\",\"identity\":\"alice\"}"));
    caller = &alice;
    expect_error("{\"cmd\":\"volume.delete\",\"name\":\"shared\"}", ADMIN_E_FORBIDDEN,
                 "only its owner or an admin may");
    json_object_put(expect_ok("{\"cmd\":\"volume.delete\",\"name\":\"mine\"}"));
    caller = NULL;
    r = expect_ok("{\"cmd\":\"access.list\"}");
    cr_expect(eq(sz, json_object_array_length(json_object_object_get(r, "grants")), 1),
              "the deleted volume's grants stayed");
    json_object_put(r);
}

Test(admin, an_owner_whose_grant_was_revoked_still_sees_and_changes_its_volume)
{
    json_object_put(expect_ok("{\"cmd\":\"quota.set\",\"identity\":\"alice\",\"size\":4194304}"));
    caller = &alice;
    json_object_put(expect_ok("{\"cmd\":\"volume.create\",\"name\":\"mine\",\"size\":1048576}"));
    caller = NULL;
    json_object_put(
        expect_ok("{\"cmd\":\"access.revoke\",\"name\":\"mine\",\"identity\":\"alice\"}"));
    caller = &alice;
    struct json_object *r = expect_ok("{\"cmd\":\"volume.list\"}");
    char names[100];
    volume_names(r, names, sizeof names);
    cr_expect(eq(str, names, "mine"), "the owner, charged for it, does not see its volume");
    json_object_put(r);
    json_object_put(expect_ok("{\"cmd\":\"volume.show\",\"name\":\"mine\"}"));
    json_object_put(expect_ok("{\"cmd\":\"volume.resize\",\"name\":\"mine\",\"size\":2097152}"));
    json_object_put(expect_ok("{\"cmd\":\"volume.delete\",\"name\":\"mine\"}"));
}

/* The quota entry of identity in quota.list. */
static struct json_object *quota_of(struct json_object *r, const char *identity)
{
    struct json_object *list = json_object_object_get(r, "quotas");
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        struct json_object *q = json_object_array_get_idx(list, i);
        if (strcmp(str_field(q, "identity"), identity) == 0)
            return q;
    }
    cr_assert(false, "no quota for %s", identity);
    return NULL;
}

Test(admin, an_owner_is_matched_exactly_and_dns_are_kept_canonical)
{
    json_object_put(expect_ok("{\"cmd\":\"quota.set\",\"identity\":\"alice\",\"size\":4194304}"));
    caller = &alice; /* a token's or a PSK user's bare name */
    json_object_put(expect_ok("{\"cmd\":\"volume.create\",\"name\":\"mine\",\"size\":1048576}"));
    /* A certificate with CN alice sees it (the grant "alice" matches it),
     * but it is not the owner. */
    static const struct admin_caller alice_cert = {"dn:CN=alice,O=Elsewhere", false};
    caller = &alice_cert;
    json_object_put(expect_ok("{\"cmd\":\"volume.show\",\"name\":\"mine\"}"));
    expect_error("{\"cmd\":\"volume.resize\",\"name\":\"mine\",\"size\":2097152}",
                 ADMIN_E_FORBIDDEN, "may not resize it");
    expect_error("{\"cmd\":\"volume.delete\",\"name\":\"mine\"}", ADMIN_E_FORBIDDEN,
                 "may not delete it");
    /* A DN given with spaces or lower-case types is kept as GnuTLS writes it. */
    caller = NULL;
    struct json_object *r = expect_ok("{\"cmd\":\"quota.set\",\"identity\":"
                                      "\"dn:cn=carol, o=Example\",\"size\":4194304}");
    cr_expect(eq(str, (char *)str_field(r, "identity"), "dn:CN=carol,O=Example"));
    json_object_put(r);
    r = expect_ok("{\"cmd\":\"volume.create\",\"name\":\"c\",\"size\":1048576,"
                  "\"owner\":\"dn:cn = carol ,o=Example\"}");
    cr_expect(eq(str, (char *)str_field(r, "owner"), "dn:CN=carol,O=Example"));
    json_object_put(r);
    caller = &carol_cert;
    json_object_put(expect_ok("{\"cmd\":\"volume.resize\",\"name\":\"c\",\"size\":2097152}"));
    caller = NULL;
    r = expect_ok("{\"cmd\":\"quota.list\"}");
    cr_expect(eq(i64, int_field(quota_of(r, "dn:CN=carol,O=Example"), "used"), 2097152));
    json_object_put(r);
}

Test(admin, quotas_count_what_an_identity_owns_and_refuse_past_them)
{
    json_object_put(expect_ok("{\"cmd\":\"quota.set\",\"identity\":\"alice\",\"size\":3145728}"));
    json_object_put(expect_ok("{\"cmd\":\"quota.set\",\"identity\":\"carol\",\"size\":1048576}"));
    caller = &alice;
    json_object_put(expect_ok("{\"cmd\":\"volume.create\",\"name\":\"a1\",\"size\":2097152}"));
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"a2\",\"size\":2097152}",
                 ADMIN_E_QUOTA_EXCEEDED, "would pass the quota of \"alice\": 3 MiB");
    expect_error("{\"cmd\":\"volume.resize\",\"name\":\"a1\",\"size\":4194304}",
                 ADMIN_E_QUOTA_EXCEEDED, "of which 2 MiB are used");
    json_object_put(expect_ok("{\"cmd\":\"volume.resize\",\"name\":\"a1\",\"size\":3145728}"));
    /* An admin naming alice the owner is held to her quota too. */
    caller = NULL;
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"a3\",\"size\":512,\"owner\":\"alice\"}",
                 ADMIN_E_QUOTA_EXCEEDED, "quota of \"alice\"");
    expect_error("{\"cmd\":\"volume.show\",\"name\":\"a3\"}", ADMIN_E_NO_SUCH_VOLUME, "");
    /* A certificate with CN carol counts against carol's quota. */
    caller = &carol_cert;
    json_object_put(expect_ok("{\"cmd\":\"volume.create\",\"name\":\"c1\",\"size\":1048576}"));
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"c2\",\"size\":1048576}",
                 ADMIN_E_QUOTA_EXCEEDED, "quota of \"carol\"");
    caller = NULL;
    struct json_object *r = expect_ok("{\"cmd\":\"quota.list\"}");
    cr_expect(eq(i64, int_field(quota_of(r, "alice"), "limit"), 3145728));
    cr_expect(eq(i64, int_field(quota_of(r, "alice"), "used"), 3145728));
    cr_expect(eq(i64, int_field(quota_of(r, "carol"), "used"), 1048576));
    json_object_put(r);
    /* Admins are not held to quotas; removing one frees its identity. */
    json_object_put(expect_ok("{\"cmd\":\"volume.create\",\"name\":\"big\",\"size\":8388608}"));
    r = expect_ok("{\"cmd\":\"quota.set\",\"identity\":\"alice\",\"size\":0}");
    cr_expect(json_object_get_boolean(json_object_object_get(r, "changed")));
    json_object_put(r);
    r = expect_ok("{\"cmd\":\"quota.set\",\"identity\":\"alice\",\"size\":0}");
    cr_expect(not(json_object_get_boolean(json_object_object_get(r, "changed"))));
    json_object_put(r);
    /* Without a quota, a client creates nothing (and grows nothing). */
    caller = &alice;
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"a2\",\"size\":2097152}",
                 ADMIN_E_QUOTA_EXCEEDED, "an admin must set one with `vsan quota set`");
    expect_error("{\"cmd\":\"volume.resize\",\"name\":\"a1\",\"size\":4194304}",
                 ADMIN_E_QUOTA_EXCEEDED, "has no quota");
    caller = NULL;
    expect_error("{\"cmd\":\"volume.show\",\"name\":\"a2\"}", ADMIN_E_NO_SUCH_VOLUME, "");
    expect_error("{\"cmd\":\"quota.set\",\"identity\":\"a:b\",\"size\":512}", ADMIN_E_BAD_IDENTITY,
                 "':' or '='");
    expect_error("{\"cmd\":\"quota.set\",\"identity\":\"alice\",\"size\":\"1G\"}",
                 ADMIN_E_BAD_REQUEST, "\"size\"");
}

Test(admin, a_client_needs_a_quota_which_bounds_its_bytes_and_its_volumes)
{
    caller = &alice;
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"v1\",\"size\":1048576}",
                 ADMIN_E_QUOTA_EXCEEDED, "an admin must set one with `vsan quota set`");
    caller = NULL;
    expect_error("{\"cmd\":\"quota.set\",\"identity\":\"alice\",\"size\":1048576,"
                 "\"volumes\":0}",
                 ADMIN_E_BAD_REQUEST, "must be 1 to 4096");
    struct json_object *r =
        expect_ok("{\"cmd\":\"quota.set\",\"identity\":\"alice\",\"size\":67108864,\"volumes\":2}");
    cr_expect(eq(i64, int_field(r, "volumes"), 2));
    json_object_put(r);
    caller = &alice;
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"v1\",\"size\":512}", ADMIN_E_BAD_SIZE,
                 "below the smallest a client may have, 1M");
    json_object_put(expect_ok("{\"cmd\":\"volume.create\",\"name\":\"v1\",\"size\":1048576}"));
    json_object_put(expect_ok("{\"cmd\":\"volume.create\",\"name\":\"v2\",\"size\":1048576}"));
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"v3\",\"size\":1048576}",
                 ADMIN_E_QUOTA_EXCEEDED, "in 2 volumes, of which 2 MiB are used, in 2 volumes");
    expect_error("{\"cmd\":\"volume.resize\",\"name\":\"v1\",\"size\":512,\"force\":true}",
                 ADMIN_E_BAD_SIZE, "below the smallest");
    caller = NULL;
    r = expect_ok("{\"cmd\":\"quota.list\"}");
    cr_expect(eq(i64, int_field(quota_of(r, "alice"), "volumes"), 2));
    cr_expect(eq(i64, int_field(quota_of(r, "alice"), "used_volumes"), 2));
    json_object_put(r);
    /* Without a count, a quota allows 64 volumes. */
    r = expect_ok("{\"cmd\":\"quota.set\",\"identity\":\"alice\",\"size\":67108864}");
    cr_expect(eq(i64, int_field(r, "volumes"), 64));
    json_object_put(r);
    caller = &alice;
    json_object_put(expect_ok("{\"cmd\":\"volume.create\",\"name\":\"v3\",\"size\":1048576}"));
}

Test(admin, quotas_owners_and_tokens_survive_a_restart)
{
    json_object_put(expect_ok("{\"cmd\":\"quota.set\",\"identity\":\"alice\",\"size\":1048576}"));
    struct json_object *r = expect_ok("{\"cmd\":\"token.create\",\"identity\":\"alice\"}");
    char token[TOKEN_TEXT_LEN + 1];
    snprintf(token, sizeof token, "%s", str_field(r, "token"));
    json_object_put(r);
    caller = &alice;
    json_object_put(expect_ok("{\"cmd\":\"volume.create\",\"name\":\"a\",\"size\":1048576}"));
    caller = NULL;
    /* The daemon stops and starts again on the same data dir. */
    policing_close_writes(pc);
    nbd_server_shutdown(nbd);
    nbd_server_free(nbd);
    policing_stop(pc);
    qb_loop_destroy(loop);
    volumes_close(vols);
    cr_assert(eq(int, volumes_open(store, &vols), 0));
    nbd = nbd_server_new(&cfg.nbd, &volumes_catalog, vols);
    start_policing();
    node.vols = vols, node.nbd = nbd, node.pc = pc, node.tokens = volumes_tokens(vols);
    r = expect_ok("{\"cmd\":\"volume.show\",\"name\":\"a\"}");
    cr_expect(eq(str, (char *)str_field(r, "owner"), "alice"));
    json_object_put(r);
    char who[PMSG_IDENTITY_MAX + 1];
    cr_expect(eq(int, tokens_identity(node.tokens, token, who, sizeof who), 0));
    caller = &alice;
    expect_error("{\"cmd\":\"volume.create\",\"name\":\"b\",\"size\":1048576}",
                 ADMIN_E_QUOTA_EXCEEDED, "quota of \"alice\"");
}

Test(admin, a_node_not_synced_checks_no_token)
{
    struct json_object *r = expect_ok("{\"cmd\":\"token.create\",\"identity\":\"alice\"}");
    char token[TOKEN_TEXT_LEN + 1], who[PMSG_IDENTITY_MAX + 1];
    snprintf(token, sizeof token, "%s", str_field(r, "token"));
    json_object_put(r);
    cr_assert(eq(int, tokens_identity(node.tokens, token, who, sizeof who), 0));
    /* A restart: until its first sync round, the node may lack a revoke. */
    policing_close_writes(pc);
    policing_stop(pc);
    qb_loop_destroy(loop);
    start_policing_at(false);
    node.pc = pc;
    cr_assert(not(policing_readable(pc)));
    cr_expect(eq(int, tokens_identity(node.tokens, token, who, sizeof who), -EAGAIN),
              "a node not synced took a token");
    run_until(synced);
    cr_expect(eq(int, tokens_identity(node.tokens, token, who, sizeof who), 0));
}

Test(admin, tokens_are_shown_once_listed_without_secrets_and_revoked)
{
    struct json_object *r = expect_ok("{\"cmd\":\"token.create\",\"identity\":\"alice\"}");
    char token[TOKEN_TEXT_LEN + 1], id[PMSG_TOKEN_ID_LEN + 1];
    snprintf(token, sizeof token, "%s", str_field(r, "token"));
    snprintf(id, sizeof id, "%s", str_field(r, "id"));
    cr_expect(eq(str, (char *)str_field(r, "identity"), "alice"));
    cr_expect(eq(sz, strlen(token), TOKEN_TEXT_LEN));
    cr_expect(eq(int, strncmp(token, "vsan_", 5), 0));
    cr_expect(eq(int, strncmp(token + 5, id, PMSG_TOKEN_ID_LEN), 0), "the id is in the token");
    json_object_put(r);

    char who[PMSG_IDENTITY_MAX + 1] = "";
    cr_assert(eq(int, tokens_identity(node.tokens, token, who, sizeof who), 0));
    cr_expect(eq(str, who, "alice"));
    cr_expect(eq(int, tokens_identity(node.tokens, token, who, 3), -ENAMETOOLONG));
    char wrong[TOKEN_TEXT_LEN + 1];
    snprintf(wrong, sizeof wrong, "%s", token);
    wrong[TOKEN_TEXT_LEN - 1] = wrong[TOKEN_TEXT_LEN - 1] == '0' ? '1' : '0';
    cr_expect(eq(int, tokens_identity(node.tokens, wrong, who, sizeof who), -ENOENT),
              "a wrong secret passed");
    cr_expect(eq(int, tokens_identity(node.tokens, "vsan_", who, sizeof who), -ENOENT));
    cr_expect(eq(int, tokens_identity(node.tokens, "", who, sizeof who), -ENOENT));
    wrong[TOKEN_TEXT_LEN - 1] = 'G';
    cr_expect(eq(int, tokens_identity(node.tokens, wrong, who, sizeof who), -ENOENT));

    r = expect_ok("{\"cmd\":\"token.create\",\"identity\":\"dn:CN=bob,O=Example\"}");
    json_object_put(r);
    r = expect_ok("{\"cmd\":\"token.list\"}");
    struct json_object *list = json_object_object_get(r, "tokens");
    cr_assert(eq(sz, json_object_array_length(list), 2));
    struct json_object *t0 = json_object_array_get_idx(list, 0);
    cr_expect(eq(str, (char *)str_field(t0, "id"), id));
    cr_expect(eq(str, (char *)str_field(t0, "identity"), "alice"));
    cr_expect(int_field(t0, "created") > 0);
    cr_expect(not(json_object_object_get_ex(t0, "token", NULL)), "the list shows a secret");
    cr_expect(strstr(json_object_to_json_string(r), token + 22) == NULL);
    json_object_put(r);

    char req[120];
    snprintf(req, sizeof req, "{\"cmd\":\"token.revoke\",\"id\":\"%s\"}", id);
    json_object_put(expect_ok(req));
    cr_expect(eq(int, tokens_identity(node.tokens, token, who, sizeof who), -ENOENT),
              "a revoked token still works");
    expect_error(req, ADMIN_E_NO_SUCH_TOKEN, "no such token");
    expect_error("{\"cmd\":\"token.create\",\"identity\":\"\"}", ADMIN_E_BAD_IDENTITY, "empty");
}
