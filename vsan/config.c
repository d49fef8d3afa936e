/* config.c - parses and validates vsand's INI configuration.
 *
 * libinih does the INI syntax; we feed it through our own line reader so
 * that we know the line number of every key (this libinih is built without
 * INI_HANDLER_LINENO), can refuse what inih would accept silently (an
 * unknown section without keys, junk after "]", an over-long line that
 * inih would split in two) and can strip "#" comments after values. The reader
 * also removes leading blanks, which turns off inih's multi-line values: an
 * indented key is a key, not the continuation of the previous value.
 *
 * Keys are described by a table: section, name, a parser and the range of
 * the value. The first error stops the parse; it is reported with the
 * file, line, section, key, the value and the reason. Rules that tie keys
 * together (the NBD block sizes, a cluster node's mirror address) are
 * checked once the whole file is read, so the order of keys never matters.
 */
#include "vsan/config.h"

#include "common/identity.h"
#include "common/size.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

struct key_def;
typedef int (*value_parser)(const struct key_def *k, struct vsan_config *cfg, const char *value,
                            char *why, size_t len);

struct key_def {
    const char *section;
    const char *name;
    value_parser parse;
    size_t offset; /* of the field in struct vsan_config */
    size_t size;   /* of the field, for strings */
    uint64_t min, max;
};

struct parser {
    const char *path;
    FILE *file;
    struct vsan_config *cfg;
    char *buf; /* getline's buffer */
    size_t cap;
    unsigned lineno;
    unsigned *key_line; /* per key of the table: line it was set on, 0 = unset */
    bool failed;
    unsigned failed_line; /* of the error in err, 0 if it has none */
    char *err;
    size_t errlen;
};

static const char *const sections[] = {"node",   "nbd",   "tls", "cluster",
                                       "mirror", "admin", "api", "log"};

static const char name_chars[] =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";

static const char *const level_names[] = {
    [LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_INFO] = "info", [LOG_DEBUG] = "debug"};

_Static_assert(sizeof(uint32_t) == sizeof(unsigned), "nbd config fields are parsed as unsigned");

#define FIELD(cfg, k, type) ((type *)((char *)(cfg) + (k)->offset))

static int why_range(char *why, size_t len, uint64_t min, uint64_t max)
{
    snprintf(why, len, "out of range (%" PRIu64 "..%" PRIu64 ")", min, max);
    return -1;
}

static int parse_path(const struct key_def *k, struct vsan_config *cfg, const char *value,
                      char *why, size_t len)
{
    if (value[0] != '/') {
        snprintf(why, len, "must be an absolute path");
        return -1;
    }
    if (strlen(value) >= k->size) {
        snprintf(why, len, "too long (at most %zu characters)", k->size - 1);
        return -1;
    }
    strcpy(FIELD(cfg, k, char), value);
    return 0;
}

/* A file, so not a directory's path ending in '/'. */
static int parse_file_path(const struct key_def *k, struct vsan_config *cfg, const char *value,
                           char *why, size_t len)
{
    if (value[0] != '\0' && value[strlen(value) - 1] == '/') {
        snprintf(why, len, "must name a file, not a directory");
        return -1;
    }
    return parse_path(k, cfg, value, why, len);
}

static int parse_node_name(const struct key_def *k, struct vsan_config *cfg, const char *value,
                           char *why, size_t len)
{
    size_t n = strlen(value);

    if (n == 0 || n >= k->size || strspn(value, name_chars) != n) {
        snprintf(why, len, "must be 1 to %zu characters of A-Z a-z 0-9 . _ -", k->size - 1);
        return -1;
    }
    strcpy(FIELD(cfg, k, char), value);
    return 0;
}

/* Strict decimal: digits only, no sign, no blanks, no junk. */
static int parse_decimal(const char *value, uint64_t *out)
{
    char *end;

    if (!isdigit((unsigned char)value[0]))
        return -EINVAL;
    errno = 0;
    unsigned long long v = strtoull(value, &end, 10);
    if (*end != '\0')
        return -EINVAL;
    if (errno == ERANGE)
        return -ERANGE;
    *out = v;
    return 0;
}

static int parse_uint(const struct key_def *k, struct vsan_config *cfg, const char *value,
                      char *why, size_t len)
{
    uint64_t v;
    int r = parse_decimal(value, &v);

    if (r == -EINVAL) {
        snprintf(why, len, "not a number");
        return -1;
    }
    if (r < 0 || v < k->min || v > k->max)
        return why_range(why, len, k->min, k->max);
    *FIELD(cfg, k, unsigned) = (unsigned)v;
    return 0;
}

static int parse_size_value(const struct key_def *k, const char *value, uint64_t *out, char *why,
                            size_t len)
{
    char lo[SIZE_FORMAT_MAX], hi[SIZE_FORMAT_MAX];
    int r = size_parse(value, out);

    if (r == -EINVAL) {
        snprintf(why, len, "not a size (write e.g. 4096, 64K or 32M)");
        return -1;
    }
    if (r < 0 || *out < k->min || *out > k->max) {
        size_format(k->min, lo, sizeof lo);
        size_format(k->max, hi, sizeof hi);
        snprintf(why, len, "out of range (%s to %s)", lo, hi);
        return -1;
    }
    return 0;
}

static int parse_size(const struct key_def *k, struct vsan_config *cfg, const char *value,
                      char *why, size_t len)
{
    uint64_t v;

    if (parse_size_value(k, value, &v, why, len) < 0)
        return -1;
    *FIELD(cfg, k, unsigned) = (unsigned)v;
    return 0;
}

/* A size of 64 bits, 0 or in the key's range. */
static int parse_size64(const struct key_def *k, struct vsan_config *cfg, const char *value,
                        char *why, size_t len)
{
    uint64_t v;
    if (parse_size_value(k, value, &v, why, len) < 0)
        return -1;
    *FIELD(cfg, k, uint64_t) = v;
    return 0;
}

/* A ratio such as 2.0, from min to max. */
static int parse_ratio(const struct key_def *k, struct vsan_config *cfg, const char *value,
                       char *why, size_t len)
{
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (errno != 0 || end == value || *end != '\0' || !(v >= (double)k->min) ||
        !(v <= (double)k->max)) {
        snprintf(why, len, "not a ratio from %" PRIu64 " to %" PRIu64 " (write e.g. 2.0)", k->min,
                 k->max);
        return -1;
    }
    *FIELD(cfg, k, double) = v;
    return 0;
}

/* Bytes per second: 0 for unlimited, or a size in the key's range. */
static int parse_rate(const struct key_def *k, struct vsan_config *cfg, const char *value,
                      char *why, size_t len)
{
    char lo[SIZE_FORMAT_MAX], hi[SIZE_FORMAT_MAX];
    uint64_t v;
    int r = size_parse(value, &v);

    if (r == -EINVAL) {
        snprintf(why, len, "not a size (write e.g. 0, 100M or 1G)");
        return -1;
    }
    if (r < 0 || (v != 0 && (v < k->min || v > k->max))) {
        size_format(k->min, lo, sizeof lo);
        size_format(k->max, hi, sizeof hi);
        snprintf(why, len, "out of range (0 for unlimited, or %s to %s)", lo, hi);
        return -1;
    }
    *FIELD(cfg, k, uint64_t) = v;
    return 0;
}

static int parse_block_size(const struct key_def *k, struct vsan_config *cfg, const char *value,
                            char *why, size_t len)
{
    uint64_t v;

    if (parse_size_value(k, value, &v, why, len) < 0)
        return -1;
    if (v & (v - 1)) {
        snprintf(why, len, "not a power of 2");
        return -1;
    }
    *FIELD(cfg, k, unsigned) = (unsigned)v;
    return 0;
}

static int parse_yes_no(const char *value, bool *out, char *why, size_t len)
{
    if (strcasecmp(value, "yes") == 0) {
        *out = true;
        return 0;
    }
    if (strcasecmp(value, "no") == 0) {
        *out = false;
        return 0;
    }
    snprintf(why, len, "must be yes or no");
    return -1;
}

static int parse_bool(const struct key_def *k, struct vsan_config *cfg, const char *value,
                      char *why, size_t len)
{
    return parse_yes_no(value, FIELD(cfg, k, bool), why, len);
}

static int parse_tristate(const struct key_def *k, struct vsan_config *cfg, const char *value,
                          char *why, size_t len)
{
    bool yes;

    if (parse_yes_no(value, &yes, why, len) < 0)
        return -1;
    *FIELD(cfg, k, enum config_tristate) = yes ? CONFIG_YES : CONFIG_NO;
    return 0;
}

static int parse_level(const struct key_def *k, struct vsan_config *cfg, const char *value,
                       char *why, size_t len)
{
    for (int l = 0; l < (int)(sizeof level_names / sizeof level_names[0]); l++) {
        if (level_names[l] && strcasecmp(value, level_names[l]) == 0) {
            *FIELD(cfg, k, int) = l;
            return 0;
        }
    }
    snprintf(why, len, "must be one of error, warning, info, debug");
    return -1;
}

static int parse_admin_socket(const struct key_def *k, struct vsan_config *cfg, const char *value,
                              char *why, size_t len)
{
    char service[ADMIN_NAME_MAX + 1];
    int r = admin_service_name(value, service, sizeof service);

    if (r == -EINVAL) {
        snprintf(why, len, "must be a name of A-Z a-z 0-9 . _ / -");
        return -1;
    }
    if (r < 0) {
        snprintf(why, len, "too long (at most %d characters after a leading '/')", ADMIN_NAME_MAX);
        return -1;
    }
    snprintf(FIELD(cfg, k, char), k->size, "%s", value);
    return 0;
}

/* [admin] nbd_socket: a file system path (not abstract as the admin
 * socket is) that fits a sockaddr_un. */
static int parse_nbd_socket(const struct key_def *k, struct vsan_config *cfg, const char *value,
                            char *why, size_t len)
{
    size_t n = strlen(value);

    if (value[0] != '/') {
        snprintf(why, len, "must be an absolute path (a unix socket file)");
        return -1;
    }
    if (value[n - 1] == '/') {
        snprintf(why, len, "must name a file, not a directory");
        return -1;
    }
    if (n > CONFIG_UNIX_PATH_MAX) {
        snprintf(why, len, "socket path longer than %d characters", CONFIG_UNIX_PATH_MAX);
        return -1;
    }
    snprintf(FIELD(cfg, k, char), k->size, "%s", value);
    return 0;
}

/* A host name or IPv4 address; a host made of digits and dots must be a
 * valid dotted quad, so that "10.0.0.300" is caught here. */
static int check_host(const char *host, char *why, size_t len)
{
    struct in_addr a4;
    size_t n = strlen(host);

    if (n == 0 ||
        strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != n) {
        snprintf(why, len, "bad host \"%s\"", host);
        return -1;
    }
    if (strspn(host, "0123456789.") == n && inet_pton(AF_INET, host, &a4) != 1) {
        snprintf(why, len, "\"%s\" is not an IPv4 address", host);
        return -1;
    }
    return 0;
}

static int check_port(const char *port, char *why, size_t len)
{
    uint64_t v;

    if (parse_decimal(port, &v) < 0 || v < 1 || v > 65535) {
        snprintf(why, len, "port \"%s\" is not a number in 1..65535", port);
        return -1;
    }
    return 0;
}

/* "HOST:PORT", "[IPv6]:PORT" or an absolute path (a unix socket). */
static int check_address(const char *addr, char *why, size_t len)
{
    char host[CONFIG_ADDR_MAX + 1];
    struct in6_addr a6;
    const char *colon;

    if (addr[0] == '/') {
        if (strlen(addr) > CONFIG_UNIX_PATH_MAX) {
            snprintf(why, len, "socket path longer than %d characters", CONFIG_UNIX_PATH_MAX);
            return -1;
        }
        return 0;
    }
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':') {
            snprintf(why, len, "expected [IPv6]:PORT");
            return -1;
        }
        snprintf(host, sizeof host, "%.*s", (int)(end - addr - 1), addr + 1);
        if (inet_pton(AF_INET6, host, &a6) != 1) {
            snprintf(why, len, "\"%s\" is not an IPv6 address", host);
            return -1;
        }
        return check_port(end + 2, why, len);
    }
    colon = strrchr(addr, ':');
    if (!colon) {
        snprintf(why, len, "expected HOST:PORT, [IPv6]:PORT or an absolute socket path");
        return -1;
    }
    if (memchr(addr, ':', colon - addr)) {
        snprintf(why, len, "an IPv6 address needs brackets, e.g. [::1]:10809");
        return -1;
    }
    snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    if (check_host(host, why, len) < 0)
        return -1;
    return check_port(colon + 1, why, len);
}

static int add_address(struct vsan_config *cfg, const char *addr, size_t n, char *why, size_t len)
{
    char one[CONFIG_ADDR_MAX + 1];
    char reason[160];

    if (n == 0) {
        snprintf(why, len, "empty address in the list");
        return -1;
    }
    if (n > CONFIG_ADDR_MAX) {
        snprintf(why, len, "address \"%.20s...\" longer than %d characters", addr, CONFIG_ADDR_MAX);
        return -1;
    }
    snprintf(one, sizeof one, "%.*s", (int)n, addr);
    if (check_address(one, reason, sizeof reason) < 0) {
        snprintf(why, len, "\"%s\": %s", one, reason);
        return -1;
    }
    for (unsigned i = 0; i < cfg->n_listen; i++) {
        if (strcmp(cfg->listen[i], one) == 0) {
            snprintf(why, len, "\"%s\" is listed twice", one);
            return -1;
        }
    }
    if (cfg->n_listen == CONFIG_LISTEN_MAX) {
        snprintf(why, len, "more than %d addresses", CONFIG_LISTEN_MAX);
        return -1;
    }
    strcpy(cfg->listen[cfg->n_listen++], one);
    return 0;
}

static int parse_listen(const struct key_def *k, struct vsan_config *cfg, const char *value,
                        char *why, size_t len)
{
    const char *p = value;

    (void)k;
    cfg->n_listen = 0;
    for (;;) {
        p += strspn(p, " \t");
        size_t n = strcspn(p, ",");
        size_t trimmed = n;
        while (trimmed > 0 && (p[trimmed - 1] == ' ' || p[trimmed - 1] == '\t'))
            trimmed--;
        if (add_address(cfg, p, trimmed, why, len) < 0)
            return -1;
        if (p[n] == '\0')
            return 0;
        p += n + 1;
    }
}

static int parse_choice(const char *value, const char *const *names, int n, int *out, char *why,
                        size_t len)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(value, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    snprintf(why, len, "expected %s or %s", names[0], names[1]);
    return -1;
}

static int parse_cluster_mode(const struct key_def *k, struct vsan_config *cfg, const char *value,
                              char *why, size_t len)
{
    static const char *const modes[] = {"standalone", "corosync"};
    (void)k;
    return parse_choice(value, modes, 2, &cfg->cluster_mode, why, len);
}

static int parse_tls_mode(const struct key_def *k, struct vsan_config *cfg, const char *value,
                          char *why, size_t len)
{
    static const char *const modes[] = {
        [NBD_TLS_OFF] = "off", [NBD_TLS_ON] = "on", [NBD_TLS_REQUIRE] = "require"};
    (void)k;
    for (int i = 0; i < 3; i++) {
        if (strcmp(value, modes[i]) == 0) {
            cfg->nbd.tls = i;
            return 0;
        }
    }
    snprintf(why, len, "expected off, on or require");
    return -1;
}

static int parse_anonymous(const struct key_def *k, struct vsan_config *cfg, const char *value,
                           char *why, size_t len)
{
    static const char *const modes[] = {"all", "none"};
    (void)k;
    int i;
    if (parse_choice(value, modes, 2, &i, why, len) < 0)
        return -1;
    cfg->nbd.anonymous = i == 0 ? NBD_ANON_ALL : NBD_ANON_NONE;
    return 0;
}

static int parse_on_no_quorum(const struct key_def *k, struct vsan_config *cfg, const char *value,
                              char *why, size_t len)
{
    static const char *const modes[] = {"error", "suspend"};
    int m;
    (void)k;
    if (parse_choice(value, modes, 2, &m, why, len) < 0)
        return -1;
    cfg->suspend_on_no_quorum = m == 1;
    return 0;
}

static int parse_mirror_sync(const struct key_def *k, struct vsan_config *cfg, const char *value,
                             char *why, size_t len)
{
    static const char *const modes[] = {"applied", "received"};
    int m;
    (void)k;
    if (parse_choice(value, modes, 2, &m, why, len) < 0)
        return -1;
    cfg->mirror_sync_received = m == 1;
    return 0;
}

/* One TCP address: [mirror] listen, [api] listen. */
static int parse_host_port(const struct key_def *k, struct vsan_config *cfg, const char *value,
                           char *why, size_t len)
{
    if (value[0] == '/') {
        snprintf(why, len, "expected HOST:PORT or [IPv6]:PORT");
        return -1;
    }
    if (strlen(value) > CONFIG_ADDR_MAX) {
        snprintf(why, len, "longer than %d characters", CONFIG_ADDR_MAX);
        return -1;
    }
    if (check_address(value, why, len) < 0)
        return -1;
    snprintf(FIELD(cfg, k, char), k->size, "%s", value);
    return 0;
}

static int add_admin(struct vsan_config *cfg, const char *item, size_t n, char *why, size_t len)
{
    bool dn_part = !(n >= 3 && strncmp(item, IDENTITY_DN_PREFIX, 3) == 0) && memchr(item, '=', n);
    char *last = cfg->n_api_admins ? cfg->api_admins[cfg->n_api_admins - 1] : NULL;
    if (dn_part && last && strncmp(last, IDENTITY_DN_PREFIX, 3) == 0) {
        size_t used = strlen(last); /* the next attribute of the DN before it */
        if (used + 1 + n > IDENTITY_MAX) {
            snprintf(why, len, "\"%.40s...\": longer than %zu bytes", last, IDENTITY_MAX);
            return -1;
        }
        snprintf(last + used, IDENTITY_MAX + 1 - used, ",%.*s", (int)n, item);
    } else if (cfg->n_api_admins == CONFIG_API_ADMINS_MAX) {
        snprintf(why, len, "more than %d identities", CONFIG_API_ADMINS_MAX);
        return -1;
    } else if (n > IDENTITY_MAX) {
        snprintf(why, len, "\"%.40s...\": longer than %zu bytes", item, IDENTITY_MAX);
        return -1;
    } else {
        last = cfg->api_admins[cfg->n_api_admins++];
        snprintf(last, IDENTITY_MAX + 1, "%.*s", (int)n, item);
    }
    return 0;
}

/* [api] admins: NAME or dn:DN, comma-separated. A DN's own commas
 * separate its attributes: an item with '=' that follows a dn: item (a
 * bare NAME has none) is that DN's next attribute. */
static int parse_admins(const struct key_def *k, struct vsan_config *cfg, const char *value,
                        char *why, size_t len)
{
    (void)k;
    cfg->n_api_admins = 0;
    for (const char *p = value; *p;) {
        size_t n = 0;
        while (p[n] && p[n] != ',')
            n += p[n] == '\\' && p[n + 1] ? 2 : 1;
        size_t b = strspn(p, " \t"), e = n;
        while (e > b && (p[e - 1] == ' ' || p[e - 1] == '\t'))
            e--;
        if (e > b && add_admin(cfg, p + b, e - b, why, len) < 0)
            return -1;
        p += p[n] ? n + 1 : n;
    }
    for (unsigned i = 0; i < cfg->n_api_admins; i++) {
        const char *reason;
        if (identity_check(cfg->api_admins[i], &reason) < 0) {
            snprintf(why, len, "\"%.200s\": %s", cfg->api_admins[i], reason);
            return -1;
        }
    }
    return 0;
}

/* IPv4 is enough for a service address: the clients it serves (kernel
 * nbd-client, qemu) reach it on the servers' own LAN. */
static int parse_service_address(const struct key_def *k, struct vsan_config *cfg,
                                 const char *value, char *why, size_t len)
{
    if (strlen(value) >= k->size || svc_addr_parse(value, NULL, NULL) < 0) {
        snprintf(why, len, "expected an IPv4 address and prefix length, e.g. 192.0.2.101/24");
        return -1;
    }
    strcpy(FIELD(cfg, k, char), value);
    return 0;
}

static int parse_interface(const struct key_def *k, struct vsan_config *cfg, const char *value,
                           char *why, size_t len)
{
    size_t n = strlen(value);
    if (n == 0 || n >= k->size || strcspn(value, "/: \t") != n || strcmp(value, ".") == 0 ||
        strcmp(value, "..") == 0) {
        snprintf(why, len, "not an interface name (1 to %zu characters, no '/', ':' or blank)",
                 k->size - 1);
        return -1;
    }
    strcpy(FIELD(cfg, k, char), value);
    return 0;
}

#define KEY(sec, key, fn, field, lo, hi)                                                           \
    {                                                                                              \
        sec, key, fn, offsetof(struct vsan_config, field),                                         \
            sizeof(((struct vsan_config *)0)->field), lo, hi                                       \
    }

static const struct key_def keys[] = {
    KEY("node", "data_dir", parse_path, data_dir, 0, 0),
    KEY("node", "name", parse_node_name, name, 0, 0),
    KEY("node", "pid_file", parse_path, pid_file, 0, 0),
    KEY("node", "service_address", parse_service_address, service_address, 0, 0),
    KEY("node", "service_interface", parse_interface, service_interface, 0, 0),
    KEY("node", "capacity", parse_size64, capacity, 0, UINT64_MAX),
    KEY("nbd", "listen", parse_listen, listen, 0, 0),
    KEY("nbd", "min_block_size", parse_block_size, nbd.min_block, 1, 65536),
    KEY("nbd", "preferred_block_size", parse_block_size, nbd.pref_block, 512,
        CONFIG_MAX_PAYLOAD_MAX),
    KEY("nbd", "max_payload", parse_size, nbd.max_payload, 512, CONFIG_MAX_PAYLOAD_MAX),
    KEY("nbd", "threads", parse_uint, nbd.threads, 1, CONFIG_THREADS_MAX),
    KEY("nbd", "max_connections", parse_uint, nbd.max_connections, 1, CONFIG_CONNECTIONS_MAX),
    KEY("nbd", "handshake_timeout", parse_uint, nbd.handshake_timeout_ms, 1, CONFIG_TIMEOUT_MS_MAX),
    KEY("nbd", "shutdown_grace", parse_uint, nbd.shutdown_grace_ms, 0, CONFIG_TIMEOUT_MS_MAX),
    KEY("nbd", "tls", parse_tls_mode, nbd.tls, 0, 0),
    KEY("nbd", "anonymous", parse_anonymous, nbd.anonymous, 0, 0),
    KEY("tls", "certificates", parse_path, tls_certificates, 0, 0),
    KEY("tls", "verify_peer", parse_bool, tls_verify_peer, 0, 0),
    KEY("tls", "psk_file", parse_file_path, tls_psk_file, 0, 0),
    KEY("cluster", "mode", parse_cluster_mode, cluster_mode, 0, 0),
    KEY("cluster", "name", parse_node_name, cluster_name, 0, 0),
    KEY("cluster", "region_size", parse_block_size, region_size, CONFIG_REGION_MIN,
        CONFIG_REGION_MAX),
    KEY("cluster", "on_no_quorum", parse_on_no_quorum, suspend_on_no_quorum, 0, 0),
    KEY("cluster", "suspend_timeout", parse_uint, suspend_timeout_ms, 1, CONFIG_TIMEOUT_MS_MAX),
    KEY("cluster", "replicas", parse_uint, replicas, 1, 32),
    KEY("cluster", "overcommit", parse_ratio, overcommit, 1, 100),
    KEY("cluster", "min_current", parse_uint, min_current, 0, 32),
    KEY("cluster", "replace_after", parse_uint, replace_after_s, 0, 30 * 24 * 3600),
    KEY("mirror", "listen", parse_host_port, mirror_listen, 0, 0),
    KEY("mirror", "secret_file", parse_file_path, mirror_secret_file, 0, 0),
    KEY("mirror", "timeout", parse_uint, mirror_timeout_ms, CONFIG_MIRROR_TIMEOUT_MIN,
        CONFIG_TIMEOUT_MS_MAX),
    KEY("mirror", "sync", parse_mirror_sync, mirror_sync_received, 0, 0),
    KEY("mirror", "resync_rate", parse_rate, mirror_resync_rate, CONFIG_RESYNC_RATE_MIN,
        CONFIG_RESYNC_RATE_MAX),
    KEY("admin", "socket", parse_admin_socket, admin_socket, 0, 0),
    KEY("admin", "nbd_socket", parse_nbd_socket, nbd_socket, 0, 0),
    KEY("api", "listen", parse_host_port, api_listen, 0, 0),
    KEY("api", "admins", parse_admins, api_admins, 0, 0),
    KEY("api", "connections", parse_uint, api_connections, 1, CONFIG_CONNECTIONS_MAX),
    KEY("api", "timeout", parse_uint, api_timeout_ms, 1000, CONFIG_TIMEOUT_MS_MAX),
    KEY("log", "level", parse_level, log_level, 0, 0),
    KEY("log", "syslog", parse_bool, log_syslog, 0, 0),
    KEY("log", "stderr", parse_tristate, log_stderr, 0, 0),
};

#define N_KEYS (sizeof keys / sizeof keys[0])

void config_defaults(struct vsan_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->data_dir, "/var/lib/vsan");
    if (gethostname(cfg->name, sizeof cfg->name) < 0 || cfg->name[0] == '\0')
        strcpy(cfg->name, "localhost");
    cfg->name[sizeof cfg->name - 1] = '\0';
    strcpy(cfg->pid_file, "/run/vsan/vsand.pid");
    strcpy(cfg->listen[0], "127.0.0.1:10809");
    cfg->n_listen = 1;
    nbd_server_config_defaults(&cfg->nbd);
    cfg->nbd.anonymous = NBD_ANON_ALL; /* none under tls = require: resolve_anonymous */
    cfg->cluster_mode = CONFIG_STANDALONE;
    strcpy(cfg->cluster_name, "vsan");
    cfg->region_size = 4u * 1024 * 1024;
    cfg->suspend_timeout_ms = 30000;
    cfg->replicas = 3;
    cfg->overcommit = 2.0;
    cfg->replace_after_s = 600;
    strcpy(cfg->mirror_secret_file, CONFIG_SECRET_DEFAULT);
    cfg->mirror_timeout_ms = 4000;
    cfg->mirror_resync_rate = 200u * 1024 * 1024;
    strcpy(cfg->admin_socket, ADMIN_SOCKET_DEFAULT);
    strcpy(cfg->nbd_socket, CONFIG_NBD_SOCKET_DEFAULT);
    cfg->api_connections = 64;
    cfg->api_timeout_ms = 30000;
    cfg->log_level = LOG_INFO;
    cfg->log_syslog = true;
    cfg->log_stderr = CONFIG_UNSET;
}

const char *config_log_level_name(int level)
{
    if (level < 0 || level >= (int)(sizeof level_names / sizeof level_names[0]) ||
        !level_names[level])
        return "?";
    return level_names[level];
}

static void fail(struct parser *p, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct parser *p, unsigned line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line)
        snprintf(p->err, p->errlen, "%s:%u: %s", p->path, line, msg);
    else
        snprintf(p->err, p->errlen, "%s: %s", p->path, msg);
    p->failed = true;
    p->failed_line = line;
}

static bool section_known(const char *name, size_t n)
{
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        if (strlen(sections[i]) == n && strncmp(sections[i], name, n) == 0)
            return true;
    }
    return false;
}

/* Checks a "[section]" line; a line without "]" is left to inih, which
 * reports it as a syntax error. */
static void check_section_line(struct parser *p, const char *s)
{
    const char *end = strchr(s, ']');

    if (!end)
        return;
    if (end[1 + strspn(end + 1, " \t")] != '\0') {
        fail(p, p->lineno, "junk after section header \"%.*s\"", (int)(end - s + 1), s);
        return;
    }
    if (!section_known(s + 1, end - s - 1))
        fail(p, p->lineno,
             "unknown section [%.*s] (known: [node], [nbd], [tls], [cluster], [mirror], [admin], "
             "[api], [log])",
             (int)(end - s - 1), s + 1);
}

/* Cuts a comment: ';' or '#' at the start or after a blank. */
static void cut_comment(char *s)
{
    for (char *c = s; *c; c++) {
        if ((*c == '#' || *c == ';') && (c == s || c[-1] == ' ' || c[-1] == '\t')) {
            *c = '\0';
            return;
        }
    }
}

static char *read_line(char *out, int size, void *stream)
{
    struct parser *p = stream;

    if (p->failed)
        return NULL;
    ssize_t n = getline(&p->buf, &p->cap, p->file);
    if (n < 0)
        return NULL;
    p->lineno++;
    char *s = p->buf;
    if (p->lineno == 1 && strncmp(s, "\xEF\xBB\xBF", 3) == 0)
        s += 3;
    s[strcspn(s, "\r\n")] = '\0';
    s += strspn(s, " \t");
    cut_comment(s);
    if ((int)strlen(s) >= size) {
        fail(p, p->lineno, "line too long (at most %d characters)", size - 1);
        return NULL;
    }
    if (s[0] == '[')
        check_section_line(p, s);
    if (p->failed)
        return NULL;
    strcpy(out, s);
    return out;
}

static const struct key_def *find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    }
    return NULL;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct parser *p = user;
    char why[400];

    if (name[0] == '\0') {
        fail(p, p->lineno, "syntax error: no key name before \"=\"");
        return 0;
    }
    if (section[0] == '\0') {
        fail(p, p->lineno, "key \"%s\" is outside of any section", name);
        return 0;
    }
    const struct key_def *k = find_key(section, name);
    if (!k) {
        fail(p, p->lineno, "[%s] unknown key \"%s\"", section, name);
        return 0;
    }
    unsigned *seen = &p->key_line[k - keys];
    if (*seen) {
        fail(p, p->lineno, "[%s] %s: duplicate key (first set on line %u)", section, name, *seen);
        return 0;
    }
    *seen = p->lineno;
    if (k->parse(k, p->cfg, value, why, sizeof why) < 0) {
        fail(p, p->lineno, "[%s] %s = \"%s\": %s", section, name, value, why);
        return 0;
    }
    return 1;
}

/* The line to blame for a rule between [nbd] keys a and b: the one set
 * last, as the other one is its default or was accepted before it. */
static unsigned blame_line(const struct parser *p, const char *a, const char *b)
{
    unsigned la = p->key_line[find_key("nbd", a) - keys];
    unsigned lb = p->key_line[find_key("nbd", b) - keys];

    return la > lb ? la : lb;
}

static int check_block_sizes(struct parser *p)
{
    const struct nbd_server_config *n = &p->cfg->nbd;

    if (n->pref_block < n->min_block) {
        fail(p, blame_line(p, "preferred_block_size", "min_block_size"),
             "[nbd] preferred_block_size (%u) is smaller than min_block_size (%u)", n->pref_block,
             n->min_block);
        return -1;
    }
    if (n->max_payload < n->pref_block) {
        fail(p, blame_line(p, "max_payload", "preferred_block_size"),
             "[nbd] max_payload (%u) is smaller than preferred_block_size (%u)", n->max_payload,
             n->pref_block);
        return -1;
    }
    if (n->max_payload % n->min_block) {
        fail(p, blame_line(p, "max_payload", "min_block_size"),
             "[nbd] max_payload (%u) is not a multiple of min_block_size (%u)", n->max_payload,
             n->min_block);
        return -1;
    }
    return 0;
}

/* A cluster node is useless to its peers unless they can reach its
 * mirror engine; standalone has no peers. */
static int check_mirror_listen(struct parser *p)
{
    if (p->cfg->cluster_mode != CONFIG_COROSYNC || p->cfg->mirror_listen[0] != '\0')
        return 0;
    fail(p, p->key_line[find_key("cluster", "mode") - keys],
         "[cluster] mode = corosync needs [mirror] listen (the HOST:PORT the other nodes' "
         "mirror engines connect to)");
    return -1;
}

/* A service address needs an interface to live on, and a TCP port to
 * serve: that of the first [nbd] listen address. */
static int check_service(struct parser *p)
{
    const struct vsan_config *c = p->cfg;
    unsigned line = p->key_line[find_key("node", "service_address") - keys];
    if (c->service_address[0] == '\0')
        return 0;
    if (c->service_interface[0] == '\0') {
        fail(p, line,
             "[node] service_address = \"%s\" needs [node] service_interface (the "
             "interface it is added to)",
             c->service_address);
        return -1;
    }
    if (c->listen[0][0] == '/') {
        fail(p, line,
             "[node] service_address = \"%s\" needs a HOST:PORT as the first [nbd] "
             "listen address (its port is served on the service address)",
             c->service_address);
        return -1;
    }
    return 0;
}

/* The local socket is served apart from [nbd] listen (root only, no
 * TLS): the same path in both would be two listeners on one file. */
static int check_nbd_socket(struct parser *p)
{
    const struct vsan_config *c = p->cfg;
    for (unsigned i = 0; i < c->n_listen; i++) {
        if (strcmp(c->listen[i], c->nbd_socket) != 0)
            continue;
        unsigned line = p->key_line[find_key("admin", "nbd_socket") - keys];
        fail(p, line ? line : p->key_line[find_key("nbd", "listen") - keys],
             "[admin] nbd_socket = \"%s\" is also an [nbd] listen address (the local socket, "
             "root only and without TLS, needs a path of its own)",
             c->nbd_socket);
        return -1;
    }
    return 0;
}

/* TLS needs credentials, and verifying clients' certificates a CA. The
 * files themselves are read when vsand starts (nbd_tls_creds_load). */
static int check_tls(struct parser *p)
{
    const struct vsan_config *c = p->cfg;
    static const char *const modes[] = {"off", "on", "require"};
    if (c->nbd.tls != NBD_TLS_OFF && !c->tls_certificates[0] && !c->tls_psk_file[0]) {
        fail(p, p->key_line[find_key("nbd", "tls") - keys],
             "[nbd] tls = %s needs [tls] certificates (a directory with %s, %s and %s) or "
             "[tls] psk_file",
             modes[c->nbd.tls], NBD_TLS_CA_CERT, NBD_TLS_SERVER_CERT, NBD_TLS_SERVER_KEY);
        return -1;
    }
    if (c->tls_verify_peer && !c->tls_certificates[0]) {
        fail(p, p->key_line[find_key("tls", "verify_peer") - keys],
             "[tls] verify_peer = yes needs [tls] certificates (its %s checks the clients' "
             "certificates)",
             NBD_TLS_CA_CERT);
        return -1;
    }
    return 0;
}

/* The API is HTTPS only, with the node's certificate and its CA. */
static int check_api(struct parser *p)
{
    const struct vsan_config *c = p->cfg;
    if (c->api_listen[0] && !c->tls_certificates[0]) {
        fail(p, p->key_line[find_key("api", "listen") - keys],
             "[api] listen = %s needs [tls] certificates (the API is HTTPS only: %s, %s and %s, "
             "whose CA also signs the clients' certificates)",
             c->api_listen, NBD_TLS_CA_CERT, NBD_TLS_SERVER_CERT, NBD_TLS_SERVER_KEY);
        return -1;
    }
    return 0;
}

/* [nbd] anonymous, when not given: all, unless tls = require. */
static void resolve_anonymous(struct parser *p)
{
    if (!p->key_line[find_key("nbd", "anonymous") - keys])
        p->cfg->nbd.anonymous = p->cfg->nbd.tls == NBD_TLS_REQUIRE ? NBD_ANON_NONE : NBD_ANON_ALL;
}

/* inih goes on after a syntax error and returns the line of the first
 * error it saw, ours included; an earlier line than ours is its own. */
static int run_parser(struct parser *p)
{
    int r = ini_parse_stream(read_line, p, on_key, p);

    if (r > 0 && (!p->failed || (unsigned)r < p->failed_line)) {
        fail(p, (unsigned)r, "syntax error: expected \"[section]\" or \"key = value\"");
        return -1;
    }
    if (p->failed)
        return -1;
    if (ferror(p->file)) {
        fail(p, 0, "read: %s", strerror(errno));
        return -1;
    }
    if (r < 0) {
        fail(p, 0, "out of memory");
        return -1;
    }
    resolve_anonymous(p);
    if (check_block_sizes(p) < 0 || check_service(p) < 0 || check_tls(p) < 0 || check_api(p) < 0 ||
        check_nbd_socket(p) < 0)
        return -1;
    return check_mirror_listen(p);
}

int config_parse(const char *path, struct vsan_config *cfg, char *err, size_t errlen)
{
    unsigned key_line[N_KEYS] = {0};
    struct parser p = {
        .path = path, .cfg = cfg, .key_line = key_line, .err = err, .errlen = errlen};

    p.file = fopen(path, "re");
    if (!p.file) {
        fail(&p, 0, "cannot open: %s", strerror(errno));
        return -1;
    }
    int r = run_parser(&p);
    free(p.buf);
    if (fclose(p.file) != 0 && r == 0) {
        fail(&p, 0, "close: %s", strerror(errno));
        r = -1;
    }
    return r;
}
