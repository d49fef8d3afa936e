/* test_config.c - the configuration parser: every key, the defaults, and
 * each kind of bad input with the exact place and reason it reports.
 */
#include "vsan/config.h"

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

static char dir[] = "/tmp/test_config.XXXXXX";
static char path[sizeof dir + 16];
static struct vsan_config cfg;
static char err[600];

static void setup(void)
{
    cr_assert(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/vsan.conf", dir);
    config_defaults(&cfg);
    err[0] = '\0';
}

static void teardown(void)
{
    unlink(path);
    rmdir(dir);
    strcpy(dir, "/tmp/test_config.XXXXXX");
}

TestSuite(config, .init = setup, .fini = teardown);

static void write_conf(const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL);
    cr_assert(fputs(text, f) >= 0);
    cr_assert(fclose(f) == 0);
}

static void parse_ok(const char *text)
{
    config_defaults(&cfg);
    write_conf(text);
    int r = config_parse(path, &cfg, err, sizeof err);
    cr_assert(r == 0, "unexpected error: %s", err);
}

/* Expects a failure reported at line (0: no line) with reason in it. */
static void parse_bad(const char *text, unsigned line, const char *reason)
{
    char where[sizeof path + 16];

    config_defaults(&cfg);
    write_conf(text);
    cr_assert(config_parse(path, &cfg, err, sizeof err) == -1, "accepted:\n%s", text);
    if (line)
        snprintf(where, sizeof where, "%s:%u: ", path, line);
    else
        snprintf(where, sizeof where, "%s: ", path);
    cr_assert(strncmp(err, where, strlen(where)) == 0, "error \"%s\" does not start with \"%s\"",
              err, where);
    cr_assert(strstr(err, reason) != NULL, "error \"%s\" lacks \"%s\"", err, reason);
}

Test(config, defaults_from_an_empty_file)
{
    char host[CONFIG_NAME_MAX + 1];

    parse_ok("# nothing set\n");
    cr_assert(gethostname(host, sizeof host) == 0);
    host[CONFIG_NAME_MAX] = '\0';
    cr_assert(eq(str, cfg.data_dir, "/var/lib/vsan"));
    cr_assert(eq(str, cfg.name, host));
    cr_assert(eq(str, cfg.pid_file, "/run/vsan/vsand.pid"));
    cr_assert(eq(u32, cfg.n_listen, 1));
    cr_assert(eq(str, cfg.listen[0], "127.0.0.1:10809"));
    cr_assert(eq(u32, cfg.nbd.min_block, 1));
    cr_assert(eq(u32, cfg.nbd.pref_block, 4096));
    cr_assert(eq(u32, cfg.nbd.max_payload, 32 * 1024 * 1024));
    cr_assert(eq(u32, cfg.nbd.threads, 8));
    cr_assert(eq(u32, cfg.nbd.max_connections, 256));
    cr_assert(eq(u32, cfg.nbd.handshake_timeout_ms, 10000));
    cr_assert(eq(u32, cfg.nbd.shutdown_grace_ms, 5000));
    cr_assert(eq(str, cfg.admin_socket, "/run/vsan/vsand.sock"));
    cr_assert(eq(str, cfg.nbd_socket, "/run/vsan/nbd-local.sock"));
    cr_assert(eq(int, cfg.log_level, LOG_INFO));
    cr_assert(cfg.log_syslog);
    cr_assert(eq(int, cfg.log_stderr, CONFIG_UNSET));
    cr_assert(eq(str, cfg.mirror_listen, ""));
    cr_assert(eq(str, cfg.mirror_secret_file, "/etc/vsan/secret"));
    cr_assert(eq(u32, cfg.mirror_timeout_ms, 4000));
    cr_assert(not(cfg.mirror_sync_received));
    cr_assert(eq(u64, cfg.mirror_resync_rate, 200ull * 1024 * 1024));
}

Test(config, minimal_file)
{
    parse_ok("[node]\ndata_dir = /srv/pool\n[nbd]\nlisten = 127.0.0.1:10809\n"
             "[admin]\nsocket = /run/vsan/vsand.sock\n");
    cr_assert(eq(str, cfg.data_dir, "/srv/pool"));
    cr_assert(eq(str, cfg.listen[0], "127.0.0.1:10809"));
}

Test(config, every_key)
{
    parse_ok("[node]\n"
             "data_dir = /data/vsan\n"
             "name = node-1.lab\n"
             "pid_file = /tmp/x/vsand.pid\n"
             "[nbd]\n"
             "listen = 0.0.0.0:10809, [::1]:10810,localhost:10811 , /run/vsan/nbd.sock\n"
             "min_block_size = 512\n"
             "preferred_block_size = 64K\n"
             "max_payload = 16M\n"
             "threads = 4\n"
             "max_connections = 1000\n"
             "handshake_timeout = 2500\n"
             "shutdown_grace = 0\n"
             "[admin]\n"
             "socket = vsan-test\n"
             "[log]\n"
             "level = debug\n"
             "syslog = no\n"
             "stderr = YES\n");
    cr_assert(eq(str, cfg.data_dir, "/data/vsan"));
    cr_assert(eq(str, cfg.name, "node-1.lab"));
    cr_assert(eq(str, cfg.pid_file, "/tmp/x/vsand.pid"));
    cr_assert(eq(u32, cfg.n_listen, 4));
    cr_assert(eq(str, cfg.listen[0], "0.0.0.0:10809"));
    cr_assert(eq(str, cfg.listen[1], "[::1]:10810"));
    cr_assert(eq(str, cfg.listen[2], "localhost:10811"));
    cr_assert(eq(str, cfg.listen[3], "/run/vsan/nbd.sock"));
    cr_assert(eq(u32, cfg.nbd.min_block, 512));
    cr_assert(eq(u32, cfg.nbd.pref_block, 65536));
    cr_assert(eq(u32, cfg.nbd.max_payload, 16 * 1024 * 1024));
    cr_assert(eq(u32, cfg.nbd.threads, 4));
    cr_assert(eq(u32, cfg.nbd.max_connections, 1000));
    cr_assert(eq(u32, cfg.nbd.handshake_timeout_ms, 2500));
    cr_assert(eq(u32, cfg.nbd.shutdown_grace_ms, 0));
    cr_assert(eq(str, cfg.admin_socket, "vsan-test"));
    cr_assert(eq(int, cfg.log_level, LOG_DEBUG));
    cr_assert(not(cfg.log_syslog));
    cr_assert(eq(int, cfg.log_stderr, CONFIG_YES));
}

Test(config, log_levels_and_booleans)
{
    static const struct {
        const char *text, *name;
        int level;
    } levels[] = {{"error", "error", LOG_ERR},
                  {"warning", "warning", LOG_WARNING},
                  {"Info", "info", LOG_INFO},
                  {"DEBUG", "debug", LOG_DEBUG}};
    char text[100];

    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        snprintf(text, sizeof text, "[log]\nlevel = %s\nsyslog = yes\nstderr = no\n",
                 levels[i].text);
        parse_ok(text);
        cr_assert(eq(int, cfg.log_level, levels[i].level), "%s", levels[i].text);
        cr_assert(cfg.log_syslog);
        cr_assert(eq(int, cfg.log_stderr, CONFIG_NO));
        cr_assert(eq(str, (char *)config_log_level_name(cfg.log_level), (char *)levels[i].name));
    }
}

Test(config, comments_blanks_and_line_endings)
{
    parse_ok("\xEF\xBB\xBF# a comment\r\n"
             "; another\r\n"
             "\r\n"
             "  [nbd]   # section comment\r\n"
             "\tthreads = 3   # trailing comment\r\n"
             "   max_connections=7 ; trailing comment\r\n"
             "[node]\n"
             "data_dir = /a#b\n");
    cr_assert(eq(u32, cfg.nbd.threads, 3));
    cr_assert(eq(u32, cfg.nbd.max_connections, 7));
    cr_assert(eq(str, cfg.data_dir, "/a#b"), "'#' inside a value is kept");
}

Test(config, sections_may_repeat)
{
    parse_ok("[nbd]\nthreads = 2\n[log]\nlevel = error\n[nbd]\nmax_connections = 9\n");
    cr_assert(eq(u32, cfg.nbd.threads, 2));
    cr_assert(eq(u32, cfg.nbd.max_connections, 9));
}

Test(config, block_size_limits_accepted)
{
    parse_ok("[nbd]\nmin_block_size = 64K\npreferred_block_size = 64K\nmax_payload = 256M\n");
    cr_assert(eq(u32, cfg.nbd.min_block, 65536));
    cr_assert(eq(u32, cfg.nbd.max_payload, 256u * 1024 * 1024));
    parse_ok("[nbd]\nmax_payload = 5000K\n");
    cr_assert(eq(u32, cfg.nbd.max_payload, 5000u * 1024));
}

Test(config, missing_file)
{
    cr_assert(config_parse("/nonexistent/vsan.conf", &cfg, err, sizeof err) == -1);
    cr_assert(eq(str, err, "/nonexistent/vsan.conf: cannot open: No such file or directory"));
}

Test(config, exact_message_for_a_bad_number)
{
    char want[sizeof path + 64];

    write_conf("[node]\ndata_dir = /x\n\n# threads\n\n[nbd]\nthreads = abc\n");
    cr_assert(config_parse(path, &cfg, err, sizeof err) == -1);
    snprintf(want, sizeof want, "%s:7: [nbd] threads = \"abc\": not a number", path);
    cr_assert(eq(str, err, want));
}

Test(config, syntax_errors)
{
    parse_bad("[nbd]\nthreads 4\n", 2, "syntax error");
    parse_bad("[nbd\nthreads = 4\n", 1, "syntax error");
    parse_bad("[node]\ndata_dir = /x\n= value\n", 3, "syntax error: no key name before \"=\"");
}

Test(config, unknown_sections)
{
    parse_bad("[node]\ndata_dir = /x\n[bogus]\nkey = 1\n", 3, "unknown section [bogus]");
    parse_bad("[node]\n[nbdd]\n", 2, "unknown section [nbdd]");
    parse_bad("[]\n", 1, "unknown section []");
    parse_bad("[mirrors]\n", 1,
              "(known: [node], [nbd], [tls], [cluster], [mirror], [admin], [api], [log])");
    parse_bad("[nbd] x\n", 1, "junk after section header \"[nbd]\"");
}

Test(config, unknown_and_misplaced_keys)
{
    parse_bad("threads = 4\n", 1, "key \"threads\" is outside of any section");
    parse_bad("[nbd]\nthread = 4\n", 2, "[nbd] unknown key \"thread\"");
    parse_bad("[node]\nthreads = 4\n", 2, "[node] unknown key \"threads\"");
    parse_bad("[log]\nLevel = info\n", 2, "[log] unknown key \"Level\"");
}

Test(config, duplicate_keys)
{
    parse_bad("[nbd]\nthreads = 4\n[log]\nlevel = info\n[nbd]\nthreads = 4\n", 6,
              "[nbd] threads: duplicate key (first set on line 2)");
    parse_bad("[nbd]\nthreads = 4\n  threads = 5\n", 3, "duplicate key");
}

Test(config, bad_numbers)
{
    parse_bad("[nbd]\nthreads = \n", 2, "[nbd] threads = \"\": not a number");
    parse_bad("[nbd]\nthreads = -1\n", 2, "not a number");
    parse_bad("[nbd]\nthreads = +1\n", 2, "not a number");
    parse_bad("[nbd]\nthreads = 4x\n", 2, "not a number");
    parse_bad("[nbd]\nthreads = 0\n", 2, "[nbd] threads = \"0\": out of range (1..256)");
    parse_bad("[nbd]\nthreads = 257\n", 2, "out of range (1..256)");
    parse_bad("[nbd]\nmax_connections = 99999999999999999999999\n", 2, "out of range");
    parse_bad("[nbd]\nmax_connections = 0\n", 2, "out of range (1..65536)");
    parse_bad("[nbd]\nhandshake_timeout = 0\n", 2, "out of range (1..3600000)");
    parse_bad("[nbd]\nshutdown_grace = 3600001\n", 2, "out of range (0..3600000)");
}

Test(config, bad_sizes)
{
    parse_bad("[nbd]\nmax_payload = 12X\n", 2, "[nbd] max_payload = \"12X\": not a size");
    parse_bad("[nbd]\nmax_payload = 1.5M\n", 2, "not a size");
    parse_bad("[nbd]\nmax_payload = 257M\n", 2, "out of range (512 B to 256 MiB)");
    parse_bad("[nbd]\nmax_payload = 99999999999999999999\n", 2, "out of range");
    parse_bad("[nbd]\nmin_block_size = 3000\n", 2,
              "[nbd] min_block_size = \"3000\": not a power of 2");
    parse_bad("[nbd]\nmin_block_size = 0\n", 2, "out of range");
    parse_bad("[nbd]\nmin_block_size = 128K\n", 2, "out of range");
    parse_bad("[nbd]\npreferred_block_size = 256\n", 2, "out of range");
    parse_bad("[nbd]\npreferred_block_size = 12K\n", 2, "not a power of 2");
}

Test(config, block_sizes_must_agree)
{
    parse_bad("[nbd]\nmin_block_size = 8K\n", 2,
              "[nbd] preferred_block_size (4096) is smaller than min_block_size (8192)");
    parse_bad("[nbd]\npreferred_block_size = 1K\nmin_block_size = 2K\n", 3,
              "is smaller than min_block_size");
    parse_bad("[nbd]\nmax_payload = 1K\n", 2,
              "[nbd] max_payload (1024) is smaller than preferred_block_size (4096)");
    parse_bad("[nbd]\nmax_payload = 1048577\npreferred_block_size = 512\nmin_block_size = 512\n", 4,
              "[nbd] max_payload (1048577) is not a multiple of min_block_size (512)");
}

Test(config, tls_keys)
{
    parse_ok("[nbd]\ntls = require\n[tls]\ncertificates = /etc/vsan/tls\nverify_peer = yes\n"
             "psk_file = /etc/vsan/keys.psk\n");
    cr_assert(eq(int, cfg.nbd.tls, NBD_TLS_REQUIRE));
    cr_assert(eq(str, cfg.tls_certificates, "/etc/vsan/tls"));
    cr_assert(cfg.tls_verify_peer);
    cr_assert(eq(str, cfg.tls_psk_file, "/etc/vsan/keys.psk"));
    parse_ok("[tls]\npsk_file = /k\n[nbd]\ntls = on\n");
    cr_assert(eq(int, cfg.nbd.tls, NBD_TLS_ON));
    parse_bad("[nbd]\ntls = yes\n", 2, "[nbd] tls = \"yes\": expected off, on or require");
    parse_bad("[nbd]\ntls = require\n", 2,
              "[nbd] tls = require needs [tls] certificates (a directory with ca-cert.pem, "
              "server-cert.pem and server-key.pem) or [tls] psk_file");
    parse_bad("[tls]\nverify_peer = yes\npsk_file = /k\n", 2,
              "[tls] verify_peer = yes needs [tls] certificates");
    parse_bad("[tls]\ncertificates = tls\n", 2,
              "[tls] certificates = \"tls\": must be an absolute path");
    parse_bad("[tls]\npsk_file = /etc/vsan/\n", 2, "must name a file, not a directory");
}

Test(config, bad_booleans_and_levels)
{
    parse_bad("[log]\nsyslog = maybe\n", 2, "[log] syslog = \"maybe\": must be yes or no");
    parse_bad("[log]\nstderr = 1\n", 2, "must be yes or no");
    parse_bad("[log]\nlevel = notice\n", 2,
              "[log] level = \"notice\": must be one of error, warning, info, debug");
}

Test(config, bad_paths_and_names)
{
    parse_bad("[node]\ndata_dir = var/lib/vsan\n", 2,
              "[node] data_dir = \"var/lib/vsan\": must be an absolute path");
    parse_bad("[node]\ndata_dir =\n", 2, "must be an absolute path");
    parse_bad("[node]\npid_file = vsand.pid\n", 2, "must be an absolute path");
    parse_bad("[node]\nname = bad name\n", 2, "[node] name = \"bad name\": must be 1 to 64");
    parse_bad("[node]\nname =\n", 2, "must be 1 to 64");
    parse_bad("[node]\nname = "
              "a23456789012345678901234567890123456789012345678901234567890123456789\n",
              2, "must be 1 to 64");
}

Test(config, bad_listen_addresses)
{
    parse_bad("[nbd]\nlisten = 127.0.0.1\n", 2,
              "[nbd] listen = \"127.0.0.1\": \"127.0.0.1\": expected HOST:PORT");
    parse_bad("[nbd]\nlisten = 127.0.0.1:0\n", 2, "port \"0\" is not a number in 1..65535");
    parse_bad("[nbd]\nlisten = 127.0.0.1:65536\n", 2, "port \"65536\"");
    parse_bad("[nbd]\nlisten = 127.0.0.1:\n", 2, "port \"\"");
    parse_bad("[nbd]\nlisten = 127.0.0.1:http\n", 2, "port \"http\"");
    parse_bad("[nbd]\nlisten = 10.0.0.300:10809\n", 2, "\"10.0.0.300\" is not an IPv4 address");
    parse_bad("[nbd]\nlisten = :10809\n", 2, "bad host \"\"");
    parse_bad("[nbd]\nlisten = a_b:10809\n", 2, "bad host \"a_b\"");
    parse_bad("[nbd]\nlisten = ::1:10809\n", 2, "an IPv6 address needs brackets");
    parse_bad("[nbd]\nlisten = [::g]:10809\n", 2, "\"::g\" is not an IPv6 address");
    parse_bad("[nbd]\nlisten = [::1]10809\n", 2, "expected [IPv6]:PORT");
    parse_bad("[nbd]\nlisten = run/nbd.sock\n", 2, "expected HOST:PORT");
    parse_bad("[nbd]\nlisten = /run/"
              "a2345678901234567890123456789012345678901234567890123456789012345678901234567890"
              "12345678901234567890123\n",
              2, "socket path longer than 107 characters");
    parse_bad("[nbd]\nlisten = 127.0.0.1:1,,127.0.0.1:2\n", 2, "empty address in the list");
    parse_bad("[nbd]\nlisten = 127.0.0.1:1,\n", 2, "empty address in the list");
    parse_bad("[nbd]\nlisten = 127.0.0.1:1, 127.0.0.1:1\n", 2, "\"127.0.0.1:1\" is listed twice");
    parse_bad("[nbd]\nlisten = h:1,h:2,h:3,h:4,h:5,h:6,h:7,h:8,h:9\n", 2, "more than 8 addresses");
}

Test(config, bad_admin_socket)
{
    parse_bad("[admin]\nsocket = vsan sock\n", 2,
              "[admin] socket = \"vsan sock\": must be a name of A-Z a-z 0-9 . _ / -");
    parse_bad("[admin]\nsocket =\n", 2, "must be a name");
    parse_bad("[admin]\nsocket = /\n", 2, "must be a name");
    parse_bad("[admin]\nsocket = /run/vsan/a-very-long-admin-socket-name-that-libqb-cuts\n", 2,
              "too long (at most 48 characters");
}

Test(config, nbd_socket)
{
    parse_ok("[admin]\nnbd_socket = /srv/vsan/local-nbd.sock\n");
    cr_assert(eq(str, cfg.nbd_socket, "/srv/vsan/local-nbd.sock"));
    parse_bad("[admin]\nnbd_socket = run/nbd.sock\n", 2,
              "[admin] nbd_socket = \"run/nbd.sock\": must be an absolute path (a unix socket "
              "file)");
    parse_bad("[admin]\nnbd_socket =\n", 2, "must be an absolute path");
    parse_bad("[admin]\nnbd_socket = /run/vsan/\n", 2, "must name a file, not a directory");
    parse_bad("[admin]\nnbd_socket = /run/"
              "a2345678901234567890123456789012345678901234567890123456789012345678901234567890"
              "12345678901234567890123\n",
              2, "socket path longer than 107 characters");
    parse_bad("[nbd]\nlisten = /run/vsan/nbd-local.sock\n", 2,
              "[admin] nbd_socket = \"/run/vsan/nbd-local.sock\" is also an [nbd] listen address");
    parse_bad("[nbd]\nlisten = 127.0.0.1:10809\n[admin]\nnbd_socket = 127.0.0.1:10809\n", 4,
              "must be an absolute path");
}

Test(config, over_long_line)
{
    char text[400];

    snprintf(text, sizeof text, "[node]\ndata_dir = /%0300d\n", 0);
    parse_bad(text, 2, "line too long");
}

Test(config, first_error_wins)
{
    parse_bad("[nbd]\nthreads = x\nmax_connections = y\n", 2, "threads");
    parse_bad("[nbd]\nthreads 4\nbogus = 1\n", 2, "syntax error");
    parse_bad("[nbd]\nbogus = 1\nthreads 4\n", 2, "unknown key \"bogus\"");
}

Test(config, admin_service_names)
{
    char name[ADMIN_NAME_MAX + 1];

    cr_assert(eq(int, admin_service_name("/run/vsan/vsand.sock", name, sizeof name), 0));
    cr_assert(eq(str, name, "run_vsan_vsand.sock"));
    cr_assert(eq(int, admin_service_name("vsan-demo", name, sizeof name), 0));
    cr_assert(eq(str, name, "vsan-demo"));
    cr_assert(eq(int, admin_service_name("", name, sizeof name), -EINVAL));
    cr_assert(eq(int, admin_service_name("a b", name, sizeof name), -EINVAL));
    cr_assert(eq(
        int,
        admin_service_name("/0123456789012345678901234567890123456789012345678", name, sizeof name),
        -ENAMETOOLONG));
}

/* Every key of the parser, as "[section] key". */
static const char *const all_keys[] = {
    "[node] data_dir",
    "[node] name",
    "[node] pid_file",
    "[node] service_address",
    "[node] service_interface",
    "[nbd] listen",
    "[nbd] min_block_size",
    "[nbd] preferred_block_size",
    "[nbd] max_payload",
    "[nbd] threads",
    "[nbd] max_connections",
    "[nbd] handshake_timeout",
    "[nbd] shutdown_grace",
    "[nbd] tls",
    "[nbd] anonymous",
    "[tls] certificates",
    "[tls] verify_peer",
    "[tls] psk_file",
    "[cluster] mode",
    "[cluster] name",
    "[cluster] region_size",
    "[cluster] on_no_quorum",
    "[cluster] suspend_timeout",
    "[mirror] listen",
    "[mirror] secret_file",
    "[mirror] timeout",
    "[mirror] sync",
    "[mirror] resync_rate",
    "[admin] socket",
    "[api] listen",
    "[api] admins",
    "[api] connections",
    "[api] timeout",
    "[log] level",
    "[log] syslog",
    "[log] stderr",
};

/* The sample documents every key and its default: uncommenting the first
 * example of every key of every section must give a valid file that
 * changes nothing but the keys without a default to show ([node] name,
 * [mirror] listen) and [log] stderr. */
Test(config, anonymous_is_all_unless_tls_is_required_or_it_is_set)
{
    parse_ok("[nbd]\ntls = on\n[tls]\npsk_file = /dev/null\n");
    cr_expect(eq(int, cfg.nbd.anonymous, NBD_ANON_ALL));
    parse_ok("[nbd]\ntls = require\n[tls]\npsk_file = /dev/null\n");
    cr_expect(eq(int, cfg.nbd.anonymous, NBD_ANON_NONE));
    parse_ok("[nbd]\ntls = require\nanonymous = all\n[tls]\npsk_file = /dev/null\n");
    cr_expect(eq(int, cfg.nbd.anonymous, NBD_ANON_ALL));
    parse_ok("[nbd]\nanonymous = none\n");
    cr_expect(eq(int, cfg.nbd.anonymous, NBD_ANON_NONE));
    parse_bad("[nbd]\nanonymous = some\n", 2, "[nbd] anonymous = \"some\": expected all or none");
}

Test(config, sample_config_matches_the_defaults)
{
    struct vsan_config defaults;
    char line[512], section[32] = "", seen[4096] = "|";
    FILE *in = fopen("deploy/vsan.conf.sample", "r");
    FILE *out = fopen(path, "w");

    cr_assert(in != NULL && out != NULL, "run from the top of the repository");
    while (fgets(line, sizeof line, in)) {
        char key[64], tag[128];
        const char *text = line;
        sscanf(line, "[%31[a-z]]", section);
        if (sscanf(line, "#%63[a-z_] = ", key) == 1 && strstr(line, " = ")) {
            snprintf(tag, sizeof tag, "|[%s] %s|", section, key);
            if (!strstr(seen, tag)) {
                strcat(seen, tag + 1);
                text = line + 1;
            }
        }
        cr_assert(fputs(text, out) >= 0);
    }
    fclose(in);
    cr_assert(eq(int, fclose(out), 0));
    for (size_t i = 0; i < sizeof all_keys / sizeof all_keys[0]; i++) {
        char tag[128];
        snprintf(tag, sizeof tag, "|%s|", all_keys[i]);
        cr_assert(strstr(seen, tag) != NULL, "%s is not in the sample; found: %s", all_keys[i],
                  seen);
    }

    config_defaults(&defaults);
    cr_assert(eq(int, config_parse(path, &cfg, err, sizeof err), 0), "%s", err);
    cr_assert(eq(str, cfg.name, "node1"));
    cr_assert(eq(int, cfg.log_stderr, CONFIG_YES));
    cr_assert(eq(str, cfg.data_dir, defaults.data_dir));
    cr_assert(eq(str, cfg.pid_file, defaults.pid_file));
    cr_assert(eq(u32, cfg.n_listen, 1));
    cr_assert(eq(str, cfg.listen[0], defaults.listen[0]));
    cr_assert(memcmp(&cfg.nbd, &defaults.nbd, sizeof cfg.nbd) == 0, "an [nbd] default differs");
    cr_assert(eq(str, cfg.admin_socket, defaults.admin_socket));
    cr_assert(eq(int, cfg.log_level, defaults.log_level));
    cr_assert(eq(int, cfg.log_syslog, defaults.log_syslog));
    cr_assert(eq(int, cfg.cluster_mode, defaults.cluster_mode));
    cr_assert(eq(u32, cfg.region_size, defaults.region_size));
    cr_assert(eq(int, cfg.suspend_on_no_quorum, defaults.suspend_on_no_quorum));
    cr_assert(eq(u32, cfg.suspend_timeout_ms, defaults.suspend_timeout_ms));
    cr_assert(eq(str, cfg.cluster_name, defaults.cluster_name));
    cr_assert(eq(str, cfg.mirror_listen, "192.0.2.11:10810"));
    cr_assert(eq(str, cfg.service_address, "192.0.2.101/24"));
    cr_assert(eq(str, cfg.service_interface, "eth0"));
    cr_assert(eq(str, cfg.api_listen, "0.0.0.0:10443"));
    cr_assert(eq(u32, cfg.n_api_admins, 2));
    cr_assert(eq(u32, cfg.api_connections, defaults.api_connections));
    cr_assert(eq(u32, cfg.api_timeout_ms, defaults.api_timeout_ms));
    cr_assert(eq(str, cfg.mirror_secret_file, defaults.mirror_secret_file));
    cr_assert(eq(u32, cfg.mirror_timeout_ms, defaults.mirror_timeout_ms));
    cr_assert(eq(int, cfg.mirror_sync_received, defaults.mirror_sync_received));
    cr_assert(eq(u64, cfg.mirror_resync_rate, defaults.mirror_resync_rate));
}

Test(config, cluster_keys)
{
    struct vsan_config c;
    char e[256];
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL);
    fputs("[cluster]\nmode = corosync\nname = lab\nregion_size = 1M\non_no_quorum = suspend\n"
          "suspend_timeout = 500\n[mirror]\nlisten = 192.0.2.11:10810\n",
          f);
    cr_assert(eq(int, fclose(f), 0));
    config_defaults(&c);
    cr_assert(eq(int, config_parse(path, &c, e, sizeof e), 0), "%s", e);
    cr_assert(eq(int, c.cluster_mode, CONFIG_COROSYNC));
    cr_assert(eq(str, c.cluster_name, "lab"));
    cr_assert(eq(u32, c.region_size, 1u << 20));
    cr_assert(c.suspend_on_no_quorum);
    cr_assert(eq(u32, c.suspend_timeout_ms, 500));
    cr_assert(eq(str, c.mirror_listen, "192.0.2.11:10810"));
}

Test(config, bad_cluster_values)
{
    static const char *const bad[][2] = {
        {"[cluster]\nmode = raft\n", "[cluster] mode = \"raft\": expected standalone or corosync"},
        {"[cluster]\nregion_size = 3M\n", "[cluster] region_size = \"3M\": not a power of 2"},
        {"[cluster]\nregion_size = 4K\n", "[cluster] region_size = \"4K\": out of range"},
        {"[cluster]\non_no_quorum = wait\n", "expected error or suspend"},
        {"[mirror]\nlisten = /tmp/x\n", "[mirror] listen = \"/tmp/x\": expected HOST:PORT"},
        {"[mirror]\nlisten = nohost\n", "[mirror] listen = \"nohost\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct vsan_config c;
        char e[256];
        FILE *f = fopen(path, "w");
        cr_assert(f != NULL);
        fputs(bad[i][0], f);
        cr_assert(eq(int, fclose(f), 0));
        config_defaults(&c);
        cr_assert(eq(int, config_parse(path, &c, e, sizeof e), -1), "%s accepted", bad[i][0]);
        cr_assert(strstr(e, bad[i][1]) != NULL, "%s -> %s", bad[i][0], e);
    }
}

Test(config, mirror_keys)
{
    parse_ok("[mirror]\nlisten = [fd00::11]:10810\nsecret_file = /srv/vsan/cluster.key\n"
             "timeout = 5000\nsync = received\nresync_rate = 50M\n");
    cr_assert(eq(str, cfg.mirror_listen, "[fd00::11]:10810"));
    cr_assert(eq(str, cfg.mirror_secret_file, "/srv/vsan/cluster.key"));
    cr_assert(eq(u32, cfg.mirror_timeout_ms, 5000));
    cr_assert(cfg.mirror_sync_received);
    cr_assert(eq(u64, cfg.mirror_resync_rate, 50ull << 20));

    parse_ok("[mirror]\nsync = applied\nresync_rate = 0\ntimeout = 100\n");
    cr_assert(not(cfg.mirror_sync_received));
    cr_assert(eq(u64, cfg.mirror_resync_rate, 0), "0 is unlimited");
    cr_assert(eq(u32, cfg.mirror_timeout_ms, 100));

    parse_ok("[mirror]\nresync_rate = 1 MiB\ntimeout = 3600000\n");
    cr_assert(eq(u64, cfg.mirror_resync_rate, 1ull << 20));
    cr_assert(eq(u32, cfg.mirror_timeout_ms, 3600000));
    parse_ok("[mirror]\nresync_rate = 1T\n");
    cr_assert(eq(u64, cfg.mirror_resync_rate, 1ull << 40));
    parse_ok("[mirror]\nresync_rate = 104857600\n");
    cr_assert(eq(u64, cfg.mirror_resync_rate, 100ull << 20));
}

Test(config, bad_mirror_values)
{
    parse_bad("[mirror]\nsecret_file = etc/vsan/secret\n", 2,
              "[mirror] secret_file = \"etc/vsan/secret\": must be an absolute path");
    parse_bad("[mirror]\nsecret_file =\n", 2,
              "[mirror] secret_file = \"\": must be an absolute path");
    parse_bad("[mirror]\nsecret_file = /etc/vsan/\n", 2,
              "[mirror] secret_file = \"/etc/vsan/\": must name a file, not a directory");
    parse_bad("[mirror]\ntimeout = 99\n", 2,
              "[mirror] timeout = \"99\": out of range (100..3600000)");
    parse_bad("[mirror]\ntimeout = 3600001\n", 2, "out of range (100..3600000)");
    parse_bad("[mirror]\ntimeout = 2s\n", 2, "[mirror] timeout = \"2s\": not a number");
    parse_bad("[mirror]\ntimeout =\n", 2, "not a number");
    parse_bad("[mirror]\nsync = async\n", 2,
              "[mirror] sync = \"async\": expected applied or received");
    parse_bad("[mirror]\nsync =\n", 2, "expected applied or received");
    parse_bad("[mirror]\nresync_rate = fast\n", 2,
              "[mirror] resync_rate = \"fast\": not a size (write e.g. 0, 100M or 1G)");
    parse_bad("[mirror]\nresync_rate = -1\n", 2, "not a size");
    parse_bad("[mirror]\nresync_rate = 1.5M\n", 2, "not a size");
    parse_bad("[mirror]\nresync_rate = 512K\n", 2,
              "[mirror] resync_rate = \"512K\": out of range (0 for unlimited, or 1 MiB to 1 TiB)");
    parse_bad("[mirror]\nresync_rate = 1025G\n", 2, "out of range (0 for unlimited");
    parse_bad("[mirror]\nresync_rate = 99999999999999999999\n", 2, "out of range");
}

/* A line's limit (199 characters) bounds the path long before PATH_MAX. */
Test(config, secret_file_lengths)
{
    char text[256];

    parse_ok("[mirror]\nsecret_file = /s\n");
    cr_assert(eq(str, cfg.mirror_secret_file, "/s"));
    snprintf(text, sizeof text, "[mirror]\nsecret_file = /%0184d\n", 0);
    parse_ok(text);
    cr_assert(eq(u64, strlen(cfg.mirror_secret_file), 185));
    snprintf(text, sizeof text, "[mirror]\nsecret_file = /%0185d\n", 0);
    parse_bad(text, 2, "line too long (at most 199 characters)");
}

Test(config, a_cluster_node_needs_a_mirror_address)
{
    parse_bad("[node]\nname = n1\n[cluster]\nmode = corosync\nname = lab\n", 4,
              "[cluster] mode = corosync needs [mirror] listen");
    parse_bad("[mirror]\ntimeout = 500\n[cluster]\nmode = corosync\n", 4, "needs [mirror] listen");

    parse_ok("[mirror]\nlisten = 192.0.2.11:10810\n[cluster]\nmode = corosync\n");
    cr_assert(eq(int, cfg.cluster_mode, CONFIG_COROSYNC));
    cr_assert(eq(str, cfg.mirror_listen, "192.0.2.11:10810"));
    parse_ok("[cluster]\nmode = standalone\n");
    cr_assert(eq(str, cfg.mirror_listen, ""));
    parse_ok("[cluster]\nname = lab\n");
    cr_assert(eq(int, cfg.cluster_mode, CONFIG_STANDALONE));
}

Test(config, service_address)
{
    parse_ok("[node]\nservice_address = 198.51.100.101/24\nservice_interface = eth0\n");
    cr_assert(eq(str, cfg.service_address, "198.51.100.101/24"));
    cr_assert(eq(str, cfg.service_interface, "eth0"));
    parse_ok("[node]\nservice_interface = bond0.12\n"); /* stands in for others only */
    cr_assert(eq(str, cfg.service_address, ""));
    cr_assert(eq(str, cfg.service_interface, "bond0.12"));
    parse_ok("[node]\n");
    cr_assert(eq(str, cfg.service_address, ""));
}

Test(config, bad_service_address_values)
{
    static const char *const bad[] = {
        "198.51.100.101",     "198.51.100.101/",
        "198.51.100.101/0",   "198.51.100.101/33",
        "198.51.100.101/024", "198.51.100.101/x",
        "198.51.100.300/24",  "host.example/24",
        "fd00::1/64",         "/24",
        "1.2.3.4/24 junk",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[128], want[128];
        snprintf(text, sizeof text, "[node]\nservice_interface = eth0\nservice_address = %s\n",
                 bad[i]);
        snprintf(want, sizeof want, "[node] service_address = \"%s\": expected an IPv4 address",
                 bad[i]);
        parse_bad(text, 3, want);
    }
    parse_bad("[node]\nservice_interface = eth0/1\n", 2,
              "[node] service_interface = \"eth0/1\": not an interface name");
    parse_bad("[node]\nservice_interface = 0123456789abcdef\n", 2,
              "[node] service_interface = \"0123456789abcdef\": not an interface name");
    parse_bad("[node]\nservice_interface = ..\n", 2, "not an interface name");
}

Test(config, service_address_needs_an_interface_and_a_tcp_port)
{
    parse_bad("[node]\nservice_address = 198.51.100.101/24\n", 2,
              "[node] service_address = \"198.51.100.101/24\" needs [node] service_interface");
    parse_bad("[nbd]\nlisten = /run/vsan/nbd.sock, 127.0.0.1:10809\n[node]\nservice_interface = "
              "eth0\nservice_address = 198.51.100.101/24\n",
              5, "needs a HOST:PORT as the first [nbd] listen address");
}

Test(config, api)
{
    parse_ok("[api]\nlisten = 127.0.0.1:10443\n"
             "admins = ops , dn:CN=bob\\, jr,O=Example,alice,dn:CN=x+UID=1\n"
             "connections = 8\ntimeout = 1500\n[tls]\ncertificates = /etc/vsan/tls\n");
    cr_assert(eq(str, cfg.api_listen, "127.0.0.1:10443"));
    cr_assert(eq(u32, cfg.n_api_admins, 4));
    cr_assert(eq(str, cfg.api_admins[0], "ops"));
    cr_assert(eq(str, cfg.api_admins[1], "dn:CN=bob\\, jr,O=Example"));
    cr_assert(eq(str, cfg.api_admins[2], "alice"));
    cr_assert(eq(str, cfg.api_admins[3], "dn:CN=x+UID=1"));
    cr_assert(eq(u32, cfg.api_connections, 8));
    cr_assert(eq(u32, cfg.api_timeout_ms, 1500));
    parse_ok("[api]\n");
    cr_assert(eq(str, cfg.api_listen, ""));
    cr_assert(eq(u32, cfg.api_connections, 64));
    cr_assert(eq(u32, cfg.api_timeout_ms, 30000));

    parse_bad("[api]\nlisten = 127.0.0.1:10443\n", 2,
              "[api] listen = 127.0.0.1:10443 needs [tls] certificates");
    parse_bad("[api]\nlisten = /run/api.sock\n", 2, "expected HOST:PORT");
    parse_bad("[api]\nadmins = ops,CN=x\n", 2, "':' or '=' in a bare name");
    parse_bad("[api]\nadmins = dn:\n", 2, "dn: needs a DN");
    parse_bad("[api]\nadmins = a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q\n", 2, "more than 16 identities");
    parse_bad("[api]\ntimeout = 999\n", 2, "out of range");
    parse_bad("[api]\nconnections = 0\n", 2, "out of range");
}
