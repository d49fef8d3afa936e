/* cli_format.c - human output of the `vsan` CLI: aligned tables and
 * "key: value" lines, sizes shown both for people ("10 GiB") and exactly
 * (in bytes) where a script or a careful admin would want the number.
 *
 * A field missing from a reply (an older or newer vsand) shows as "?"
 * rather than failing: the command itself has succeeded.
 */
#include "cli/cli_format.h"

#include "common/size.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define COLUMNS 5

static const char *str_of(struct json_object *o, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return "?";
    return json_object_get_string(v);
}

static uint64_t u64_of(struct json_object *o, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
        return 0;
    int64_t n = json_object_get_int64(v);
    return n < 0 ? 0 : (uint64_t)n;
}

/* "1 GiB (1073741824 bytes)" */
static void human_exact(uint64_t bytes, char *buf, size_t len)
{
    char h[SIZE_FORMAT_MAX];

    size_format(bytes, h, sizeof h);
    snprintf(buf, len, "%s (%" PRIu64 " bytes)", h, bytes);
}

static void print_field(const char *key, const char *value)
{
    printf("%-13s %s\n", key, value);
}

static void print_u64_field(const char *key, uint64_t value)
{
    char buf[32];

    snprintf(buf, sizeof buf, "%" PRIu64, value);
    print_field(key, buf);
}

static void print_size_field(const char *key, uint64_t bytes)
{
    char buf[64];

    human_exact(bytes, buf, sizeof buf);
    print_field(key, buf);
}

static void format_uptime(uint64_t s, char *buf, size_t len)
{
    if (s >= 86400)
        snprintf(buf, len, "%" PRIu64 "d %" PRIu64 "h %" PRIu64 "m", s / 86400, s / 3600 % 24,
                 s / 60 % 60);
    else if (s >= 3600)
        snprintf(buf, len, "%" PRIu64 "h %" PRIu64 "m %" PRIu64 "s", s / 3600, s / 60 % 60, s % 60);
    else if (s >= 60)
        snprintf(buf, len, "%" PRIu64 "m %" PRIu64 "s", s / 60, s % 60);
    else
        snprintf(buf, len, "%" PRIu64 "s", s);
}

static void join_strings(struct json_object *o, const char *key, char *buf, size_t len)
{
    struct json_object *a;
    size_t used = 0;

    snprintf(buf, len, "?");
    if (!json_object_object_get_ex(o, key, &a) || !json_object_is_type(a, json_type_array))
        return;
    buf[0] = '\0';
    for (size_t i = 0; i < json_object_array_length(a) && used < len; i++) {
        const char *s = json_object_get_string(json_object_array_get_idx(a, i));
        used += snprintf(buf + used, len - used, "%s%s", i ? ", " : "", s ? s : "?");
    }
}

static bool bool_of(struct json_object *o, const char *key)
{
    struct json_object *v;

    return json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

/* "n1 (1, 192.0.2.11:10809), n2 (2, ...)": name, node id and addr_key of
 * each entry of the array cluster[key]. */
static void join_nodes(struct json_object *cluster, const char *key, const char *addr_key,
                       char *buf, size_t len)
{
    struct json_object *a;
    size_t used = 0;

    buf[0] = '\0';
    if (!json_object_object_get_ex(cluster, key, &a) || !json_object_is_type(a, json_type_array))
        return;
    for (size_t i = 0; i < json_object_array_length(a) && used < len; i++) {
        struct json_object *m = json_object_array_get_idx(a, i);
        used += snprintf(buf + used, len - used, "%s%s (%" PRIu64 ", %s)", i ? ", " : "",
                         str_of(m, "name"), u64_of(m, "nodeid"), str_of(m, addr_key));
    }
}

/* One line per service address: owner, address, holder, manual. */
static void print_services(struct json_object *c)
{
    struct json_object *a;
    char buf[160];
    if (!json_object_object_get_ex(c, "services", &a) || !json_object_is_type(a, json_type_array))
        return;
    size_t n = json_object_array_length(a);
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(a, i);
        snprintf(buf, sizeof buf, "node %" PRIu64 " %s on node %" PRIu64 "%s", u64_of(e, "owner"),
                 str_of(e, "address"), u64_of(e, "holder"),
                 bool_of(e, "manual") ? " (manual failover)" : "");
        print_field(i == 0 ? "services:" : "", buf);
    }
    if (n == 0)
        print_field("services:", "none");
}

static void print_cluster(struct json_object *c)
{
    char buf[1200];
    struct json_object *pol = NULL;

    snprintf(buf, sizeof buf, "%s, node %" PRIu64 ", %s", str_of(c, "name"), u64_of(c, "nodeid"),
             !bool_of(c, "quorate") ? "NO QUORUM"
             : bool_of(c, "synced") ? "quorate"
                                    : "quorate, syncing");
    print_field("cluster:", buf);
    if (!bool_of(c, "quorate")) {
        snprintf(buf, sizeof buf, "writes %s (on_no_quorum = %s)",
                 strcmp(str_of(c, "on_no_quorum"), "suspend") == 0 ? "wait" : "fail with EIO",
                 str_of(c, "on_no_quorum"));
        print_field("", buf);
    }
    join_nodes(c, "members", "nbd", buf, sizeof buf);
    print_field("members:", buf);
    join_nodes(c, "nodes", "addr", buf, sizeof buf);
    print_field("nodes:", buf);
    print_size_field("region size:", u64_of(c, "region_size"));
    json_object_object_get_ex(c, "policing", &pol);
    snprintf(buf, sizeof buf,
             "%" PRIu64 " regions in use; sent %" PRIu64 " requests, %" PRIu64 " releases; %" PRIu64
             " messages delivered",
             u64_of(pol, "regions"), u64_of(pol, "requests_sent"), u64_of(pol, "releases_sent"),
             u64_of(pol, "messages_delivered"));
    print_field("policing:", buf);
    print_services(c);
}

void cli_print_status(struct json_object *reply)
{
    struct json_object *cluster;
    char buf[1200];

    print_field("node:", str_of(reply, "name"));
    print_field("version:", str_of(reply, "version"));
    print_field("mode:", str_of(reply, "mode"));
    print_u64_field("pid:", u64_of(reply, "pid"));
    print_field("data dir:", str_of(reply, "data_dir"));
    join_strings(reply, "nbd_listen", buf, sizeof buf);
    print_field("nbd listen:", buf);
    print_field("admin socket:", str_of(reply, "admin_socket"));
    print_u64_field("volumes:", u64_of(reply, "volumes"));
    print_u64_field("connections:", u64_of(reply, "connections"));
    format_uptime(u64_of(reply, "uptime"), buf, sizeof buf);
    print_field("uptime:", buf);
    if (json_object_object_get_ex(reply, "cluster", &cluster))
        print_cluster(cluster);
}

struct row {
    char cell[COLUMNS][48];
};

static void fill_row(struct row *r, struct json_object *v)
{
    snprintf(r->cell[0], sizeof r->cell[0], "%s", str_of(v, "name"));
    size_format(u64_of(v, "size"), r->cell[1], sizeof r->cell[1]);
    size_format(u64_of(v, "allocated"), r->cell[2], sizeof r->cell[2]);
    snprintf(r->cell[3], sizeof r->cell[3], "%" PRIu64, u64_of(v, "connections"));
    snprintf(r->cell[4], sizeof r->cell[4], "%s", str_of(v, "uuid"));
}

static void print_row(const struct row *r, const int *width)
{
    /* Numbers right-aligned, text left; the last column is not padded. */
    printf("%-*s  %*s  %*s  %*s  %s\n", width[0], r->cell[0], width[1], r->cell[1], width[2],
           r->cell[2], width[3], r->cell[3], r->cell[4]);
}

static void widen(int *width, const struct row *r)
{
    for (int c = 0; c < COLUMNS; c++) {
        int n = (int)strlen(r->cell[c]);
        if (n > width[c])
            width[c] = n;
    }
}

void cli_print_volume_list(struct json_object *reply)
{
    static const struct row header = {{"NAME", "SIZE", "USED", "CONNECTIONS", "UUID"}};
    struct json_object *vols;
    int width[COLUMNS] = {0};
    struct row r;

    if (!json_object_object_get_ex(reply, "volumes", &vols) ||
        !json_object_is_type(vols, json_type_array))
        return;
    size_t n = json_object_array_length(vols);
    widen(width, &header);
    for (size_t i = 0; i < n; i++) {
        fill_row(&r, json_object_array_get_idx(vols, i));
        widen(width, &r);
    }
    print_row(&header, width);
    for (size_t i = 0; i < n; i++) {
        fill_row(&r, json_object_array_get_idx(vols, i));
        print_row(&r, width);
    }
}

/* "1 current, 2 outdated, 3 syncing" */
static void print_replicas(struct json_object *reply)
{
    struct json_object *a;
    if (!json_object_object_get_ex(reply, "replicas", &a) || json_object_array_length(a) == 0)
        return;
    char line[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < json_object_array_length(a) && used < sizeof line; i++) {
        struct json_object *r = json_object_array_get_idx(a, i);
        used += (size_t)snprintf(line + used, sizeof line - used, "%snode %" PRIu64 " %s",
                                 i ? ", " : "", u64_of(r, "node"), str_of(r, "state"));
    }
    print_field("replicas:", line);
}

/* This node's copy and its resync, if the node is in a cluster. */
static void print_mirror(struct json_object *reply)
{
    struct json_object *m, *rs;
    if (!json_object_object_get_ex(reply, "mirror", &m))
        return;
    print_field("local copy:", str_of(m, "local"));
    if (!json_object_object_get_ex(m, "resync", &rs) ||
        !json_object_get_boolean(json_object_object_get(rs, "active")))
        return;
    char done[32], total[32], rate[32], line[160];
    human_exact(u64_of(rs, "done"), done, sizeof done);
    human_exact(u64_of(rs, "total"), total, sizeof total);
    human_exact(u64_of(rs, "rate"), rate, sizeof rate);
    snprintf(line, sizeof line, "%s of %s at %s/s, %" PRIu64 " s left", done, total, rate,
             u64_of(rs, "eta"));
    print_field("resync:", line);
}

/* The copies being filled (on any node): "node 3: 12 MiB of 64 MiB at
 * 4 MiB/s, 13 s left". */
static void print_recovery(struct json_object *reply)
{
    struct json_object *a;
    if (!json_object_object_get_ex(reply, "recovery", &a))
        return;
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        struct json_object *r = json_object_array_get_idx(a, i);
        char done[32], total[32], rate[32], line[192];
        human_exact(u64_of(r, "done"), done, sizeof done);
        human_exact(u64_of(r, "total"), total, sizeof total);
        human_exact(u64_of(r, "rate"), rate, sizeof rate);
        snprintf(line, sizeof line, "node %" PRIu64 ": %s of %s at %s/s, %" PRIu64 " s left",
                 u64_of(r, "node"), done, total, rate, u64_of(r, "eta"));
        print_field("recovery:", line);
    }
}

void cli_print_volume(struct json_object *reply)
{
    print_field("name:", str_of(reply, "name"));
    print_field("uuid:", str_of(reply, "uuid"));
    if (json_object_object_get_ex(reply, "owner", NULL))
        print_field("owner:", str_of(reply, "owner"));
    print_size_field("size:", u64_of(reply, "size"));
    print_size_field("used:", u64_of(reply, "allocated"));
    print_u64_field("connections:", u64_of(reply, "connections"));
    print_u64_field("generation:", u64_of(reply, "generation"));
    print_replicas(reply);
    print_recovery(reply);
    print_mirror(reply);
}

void cli_print_created(struct json_object *reply)
{
    char size[64];

    human_exact(u64_of(reply, "size"), size, sizeof size);
    bool owned = json_object_object_get_ex(reply, "owner", NULL);
    printf("volume \"%s\" created: %s, uuid %s%s%s\n", str_of(reply, "name"), size,
           str_of(reply, "uuid"), owned ? ", owner " : "", owned ? str_of(reply, "owner") : "");
}

void cli_print_resized(struct json_object *reply)
{
    char size[64];

    human_exact(u64_of(reply, "size"), size, sizeof size);
    printf("volume \"%s\" resized to %s\n", str_of(reply, "name"), size);
}

void cli_print_deleted(struct json_object *reply)
{
    printf("volume \"%s\" deleted\n", str_of(reply, "name"));
}

void cli_print_verified(struct json_object *reply)
{
    uint64_t n = u64_of(reply, "differing");
    printf("volume \"%s\": %" PRIu64 " regions compared, %" PRIu64 " differ\n",
           str_of(reply, "name"), u64_of(reply, "regions"), n);
    struct json_object *a;
    if (n == 0 || !json_object_object_get_ex(reply, "differing_regions", &a))
        return;
    for (size_t i = 0; i < json_object_array_length(a); i++)
        printf("  region %" PRId64 "\n", json_object_get_int64(json_object_array_get_idx(a, i)));
}

void cli_print_replica_failed(struct json_object *reply)
{
    printf("volume \"%s\": this node's replica is failed and outdated; replace it with "
           "`vsan replica replace %s`\n",
           str_of(reply, "name"), str_of(reply, "name"));
}

void cli_print_service_moved(struct json_object *reply)
{
    printf("service address of node %" PRIu64 ": moving to node %" PRIu64 "%s\n",
           u64_of(reply, "owner"), u64_of(reply, "holder"),
           bool_of(reply, "manual") ? " until `vsan giveback`" : "");
}

void cli_print_replica_replaced(struct json_object *reply)
{
    printf("volume \"%s\": this node's replica is being rebuilt; see `vsan volume show %s`\n",
           str_of(reply, "name"), str_of(reply, "name"));
}

void cli_print_snapshots_created(struct json_object *reply)
{
    struct json_object *a;
    char size[64];
    if (!json_object_object_get_ex(reply, "snapshots", &a) ||
        !json_object_is_type(a, json_type_array))
        return;
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        struct json_object *s = json_object_array_get_idx(a, i);
        human_exact(u64_of(s, "size"), size, sizeof size);
        printf("snapshot \"%s@%s\" created: %s, id %" PRIu64 "\n", str_of(s, "volume"),
               str_of(s, "name"), size, u64_of(s, "id"));
    }
}

#define SNAP_COLUMNS 5

struct snap_row {
    char cell[SNAP_COLUMNS][80];
};

/* "2024-05-01 12:00:00" in local time */
static void format_time(uint64_t t, char *buf, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!localtime_r(&tt, &tm) || strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        snprintf(buf, len, "%" PRIu64, t);
}

static void fill_snap_row(struct snap_row *r, struct json_object *s)
{
    struct json_object *a;
    size_t used = 0;
    snprintf(r->cell[0], sizeof r->cell[0], "%s", str_of(s, "name"));
    format_time(u64_of(s, "time"), r->cell[1], sizeof r->cell[1]);
    size_format(u64_of(s, "size"), r->cell[2], sizeof r->cell[2]);
    size_format(u64_of(s, "exclusive"), r->cell[3], sizeof r->cell[3]);
    snprintf(r->cell[4], sizeof r->cell[4], "?");
    if (!json_object_object_get_ex(s, "replicas", &a) || !json_object_is_type(a, json_type_array))
        return;
    r->cell[4][0] = '\0';
    for (size_t i = 0; i < json_object_array_length(a) && used < sizeof r->cell[4]; i++)
        used +=
            (size_t)snprintf(r->cell[4] + used, sizeof r->cell[4] - used, "%s%" PRId64,
                             i ? "," : "", json_object_get_int64(json_object_array_get_idx(a, i)));
}

static void print_snap_row(const struct snap_row *r, const int *w)
{
    printf("%-*s  %-*s  %*s  %*s  %s\n", w[0], r->cell[0], w[1], r->cell[1], w[2], r->cell[2], w[3],
           r->cell[3], r->cell[4]);
}

void cli_print_snapshot_list(struct json_object *reply)
{
    static const struct snap_row header = {{"NAME", "TIME", "SIZE", "EXCLUSIVE", "REPLICAS"}};
    struct json_object *a;
    int w[SNAP_COLUMNS] = {0};
    struct snap_row r;
    if (!json_object_object_get_ex(reply, "snapshots", &a) ||
        !json_object_is_type(a, json_type_array))
        return;
    size_t n = json_object_array_length(a);
    for (size_t i = 0; i <= n; i++) {
        if (i == n)
            r = header;
        else
            fill_snap_row(&r, json_object_array_get_idx(a, i));
        for (int c = 0; c < SNAP_COLUMNS; c++)
            w[c] = (int)strlen(r.cell[c]) > w[c] ? (int)strlen(r.cell[c]) : w[c];
    }
    print_snap_row(&header, w);
    for (size_t i = 0; i < n; i++) {
        fill_snap_row(&r, json_object_array_get_idx(a, i));
        print_snap_row(&r, w);
    }
}

void cli_print_snapshot_deleted(struct json_object *reply)
{
    (void)reply;
    printf("snapshot deleted\n");
}

/* `vsan pool status`: a line per node, then its replicas and any warning. */
void cli_print_pool(struct json_object *reply)
{
    struct json_object *a;
    if (!json_object_object_get_ex(reply, "nodes", &a))
        return;
    printf("%-4s %-12s %10s %10s %10s %10s %11s\n", "NODE", "NAME", "CAPACITY", "FREE", "ALLOCATED",
           "SNAPSHOTS", "PROVISIONED");
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        struct json_object *x = json_object_array_get_idx(a, i), *w, *reps;
        char cap[32] = "?", fr[32] = "?", al[32], sn[32], pr[32];
        if (json_object_get_boolean(json_object_object_get(x, "announced"))) {
            human_exact(u64_of(x, "capacity"), cap, sizeof cap);
            human_exact(u64_of(x, "free"), fr, sizeof fr);
        }
        human_exact(u64_of(x, "allocated"), al, sizeof al);
        human_exact(u64_of(x, "snapshots"), sn, sizeof sn);
        human_exact(u64_of(x, "provisioned"), pr, sizeof pr);
        printf("%-4" PRIu64 " %-12s %10s %10s %10s %10s %11s\n", u64_of(x, "node"),
               str_of(x, "name"), cap, fr, al, sn, pr);
        if (json_object_object_get_ex(x, "replicas", &reps))
            for (size_t j = 0; j < json_object_array_length(reps); j++) {
                struct json_object *r = json_object_array_get_idx(reps, j);
                printf("     replica %s (%s)\n", str_of(r, "volume"), str_of(r, "state"));
            }
        if (json_object_object_get_ex(x, "warning", &w))
            printf("     warning: %s\n", json_object_get_string(w));
    }
}
