/* backup.c - `vsan backup`, `vsan restore`, `vsan volume clone`.
 *
 * backup reads the read-only export VOL@SNAP of this node's NBD server
 * and writes an rbd diff v2 stream (rbddiff.h): 't' SNAP (and 'f' PREV
 * with --since), 's' the snapshot's size, then the data. A full stream
 * holds the allocated data only ('w'); the ranges it leaves out are zero,
 * and its restore zeroes them. An incremental one holds what the
 * snapshot's qemu:dirty-bitmap:PREV context marks changed: 'w', or 'z'
 * for what reads as zeroes. The file is written as FILE.tmp, synced and
 * renamed, so FILE is a whole stream or absent.
 *
 * restore checks what it can before it writes anything: from a file, the
 * whole stream is read once first (from a pipe a bad stream stops the
 * restore where it is bad); the volume has no snapshot named by 't'; an
 * incremental's volume has the snapshot named by 'f' and no writes since
 * it (its live export's qemu:dirty-bitmap:F is all clean). Then it creates
 * or resizes the volume, writes the live export VOL, and at the end
 * creates the snapshot 't', so the next incremental applies on top.
 *
 * clone is a full backup fed straight into a restore: the same walk of
 * VOL@SNAP writes into the new volume (zero already, so no zeroing), and
 * NEW gets no snapshot: it is a volume of its own, with no history to
 * follow incrementally. A clone that fails is deleted.
 */
#include "cli/backup.h"

#include "cli/admin_call.h"
#include "cli/nbd_client.h"
#include "cli/rbddiff.h"
#include "common/json_add.h"
#include "common/size.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ADDR_MAX 256
#define EXPORT_MAX 160
#define OUT_BUF (1u << 20)
#define NAME_ARG_MAX 64 /* a volume or snapshot name (the daemon's rule) */

struct opts {
    const char *pos[2];
    int npos;
    const char *since, *out, *nbd;
    bool progress, json;
};

/* Splits the words into positional arguments and options; only the
 * options the command allows (its letters in allowed: s since, o out,
 * n nbd) are accepted. */
static int parse_opts(const char *cmd, const char *usage, const char *allowed, char **w, int n,
                      int npos, struct opts *o)
{
    for (int i = 0; i < n; i++) {
        const char **val = NULL;
        if (strcmp(w[i], "--since") == 0 && strchr(allowed, 's'))
            val = &o->since;
        else if ((strcmp(w[i], "-o") == 0 || strcmp(w[i], "--output") == 0) && strchr(allowed, 'o'))
            val = &o->out;
        else if (strcmp(w[i], "--nbd") == 0 && strchr(allowed, 'n'))
            val = &o->nbd;
        if (val) {
            if (++i == n)
                return cli_usage_error("%s: %s needs an argument", cmd, w[i - 1]);
            *val = w[i];
        } else if (strcmp(w[i], "--progress") == 0) {
            o->progress = true;
        } else if (strcmp(w[i], "--json") == 0) {
            o->json = true;
        } else if (w[i][0] == '-' && w[i][1] != '\0') {
            return cli_usage_error("%s: unknown option %s (usage: vsan %s %s)", cmd, w[i], cmd,
                                   usage);
        } else if (o->npos == npos) {
            return cli_usage_error("%s: unexpected argument \"%s\" (usage: vsan %s %s)", cmd, w[i],
                                   cmd, usage);
        } else {
            o->pos[o->npos++] = w[i];
        }
    }
    if (o->npos < npos)
        return cli_usage_error("%s: missing arguments (usage: vsan %s %s)", cmd, cmd, usage);
    return -1;
}

/* VOL@SNAP into vol and snap. */
static int split_source(const char *cmd, const char *arg, char *vol, char *snap)
{
    const char *at = strchr(arg, '@');
    if (!at || at == arg || !at[1] || (size_t)(at - arg) > NAME_ARG_MAX ||
        strlen(at + 1) > NAME_ARG_MAX)
        return cli_usage_error("%s: \"%s\" is not VOL@SNAP (a volume and one of its snapshots)",
                               cmd, arg);
    snprintf(vol, NAME_ARG_MAX + 1, "%.*s", (int)(at - arg), arg);
    snprintf(snap, NAME_ARG_MAX + 1, "%s", at + 1);
    return -1;
}

/* Where to reach the NBD server: --nbd, else the node's (nbd_client.h)
 * into addr (ADDR_MAX). -1 or an exit code. */
static int nbd_address(const char *socket, const struct opts *o, char *addr)
{
    if (!o->nbd)
        return nbdc_node_address(socket, addr, ADDR_MAX);
    if (snprintf(addr, ADDR_MAX, "%s", o->nbd) >= ADDR_MAX)
        return cli_usage_error("--nbd \"%.40s...\": longer than %d characters", o->nbd,
                               ADDR_MAX - 1);
    return -1;
}

static int oom(void)
{
    fprintf(stderr, "vsan: out of memory\n");
    return EXIT_ERROR;
}

/* {"cmd": cmd, "name": name} plus, if key, key: val */
static int admin(const char *socket, const char *cmd, const char *name, const char *key,
                 struct json_object *val, struct json_object **reply)
{
    struct json_object *req = json_object_new_object();
    char what[128];
    if (!req || json_add(req, "cmd", json_object_new_string(cmd)) < 0 ||
        json_add(req, "name", json_object_new_string(name)) < 0 ||
        (key && json_add(req, key, val) < 0)) {
        json_object_put(req);
        return oom();
    }
    snprintf(what, sizeof what, "%s \"%s\"", cmd, name);
    int r = cli_call_ok(socket, what, req, reply);
    json_object_put(req);
    return r;
}

static void print_summary(struct json_object *s, bool json, FILE *f, const char *line)
{
    if (json)
        fprintf(f, "%s\n",
                json_object_to_json_string_ext(s, JSON_C_TO_STRING_PRETTY |
                                                      JSON_C_TO_STRING_SPACED |
                                                      JSON_C_TO_STRING_NOSLASHESCAPE));
    else
        fprintf(f, "%s\n", line);
}

/* key: str, or key: null (json-c's null is a NULL object) */
static int add_name(struct json_object *o, const char *key, const char *str)
{
    return str ? json_add(o, key, json_object_new_string(str))
               : json_object_object_add(o, key, NULL);
}

static void human(uint64_t n, char *buf)
{
    size_format(n, buf, SIZE_FORMAT_MAX);
}

/* ---- backup's output ----------------------------------------------------- */

struct out {
    const char *path; /* NULL: stdout */
    char tmp[4096];
    int fd;
    uint8_t *buf;
    size_t used;
    uint64_t total;
    int err; /* errno of the first failed write */
};

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int out_flush(struct out *o)
{
    int r = write_all(o->fd, o->buf, o->used);
    o->used = 0;
    return r;
}

static int out_write(void *arg, const void *data, size_t len)
{
    struct out *o = arg;
    int r = 0;
    if (o->used + len > OUT_BUF)
        r = out_flush(o);
    if (r == 0 && len >= OUT_BUF)
        r = write_all(o->fd, data, len);
    else if (r == 0) {
        memcpy(o->buf + o->used, data, len);
        o->used += len;
    }
    if (r < 0 && !o->err)
        o->err = -r;
    o->total += len;
    return r;
}

static int out_open(struct out *o, const char *path)
{
    o->buf = malloc(OUT_BUF);
    if (!o->buf)
        return oom();
    if (strcmp(path, "-") == 0) {
        if (isatty(STDOUT_FILENO))
            return cli_usage_error("backup: stdout is a terminal: write the stream to -o FILE "
                                   "or a pipe");
        o->fd = STDOUT_FILENO;
        return -1;
    }
    o->path = path;
    if (snprintf(o->tmp, sizeof o->tmp, "%s.tmp", path) >= (int)sizeof o->tmp)
        return cli_usage_error("backup: output path too long");
    o->fd = open(o->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (o->fd < 0) {
        fprintf(stderr, "vsan: backup: create %s: %s\n", o->tmp, strerror(errno));
        return EXIT_ERROR;
    }
    return -1;
}

static int sync_dir(const char *path)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

/* Flushes; a file is synced, renamed to its name and its directory synced. */
static int out_commit(struct out *o)
{
    int r = out_flush(o);
    const char *step = "write";
    if (r == 0 && o->path) {
        step = "fsync";
        r = fsync(o->fd) < 0 ? -errno : 0;
        if (close(o->fd) < 0 && r == 0)
            r = -errno;
        o->fd = -1;
        if (r == 0) {
            step = "rename";
            r = rename(o->tmp, o->path) < 0 ? -errno : sync_dir(o->path);
        }
    }
    if (r < 0) {
        fprintf(stderr, "vsan: backup: %s %s: %s\n", step, o->path ? o->tmp : "stdout",
                strerror(-r));
        return EXIT_ERROR;
    }
    return -1;
}

static void out_close(struct out *o, bool failed)
{
    if (o->path && o->fd >= 0)
        close(o->fd);
    if (o->path && failed)
        unlink(o->tmp);
    free(o->buf);
}

/* ---- backup -------------------------------------------------------------- */

/* Turns a writer error into an exit code. */
static int stream_error(struct out *o, int r)
{
    if (r == 0)
        return -1;
    fprintf(stderr, "vsan: backup: write %s: %s\n", o->path ? o->tmp : "stdout",
            strerror(o->err ? o->err : -r));
    return EXIT_ERROR;
}

/* The walk's sink: zeroes are held back and joined with the next
 * adjacent ones, so a run of zero chunks is one 'z' record. */
struct stream_sink {
    struct rbddiff_writer w;
    struct out *out;
    uint64_t zoff, zlen;
};

static int flush_zero(struct stream_sink *s)
{
    int r = s->zlen ? rbddiff_write_zero(&s->w, s->zoff, s->zlen) : 0;
    s->zlen = 0;
    return stream_error(s->out, r);
}

static int sink_data(void *arg, uint64_t off, const void *buf, size_t len)
{
    struct stream_sink *s = arg;
    int r = flush_zero(s);
    if (r < 0)
        r = stream_error(s->out, rbddiff_write_data(&s->w, off, buf, len));
    return r < 0 ? 0 : r;
}

static int sink_zero(void *arg, uint64_t off, uint64_t len)
{
    struct stream_sink *s = arg;
    if (s->zlen && s->zoff + s->zlen == off) {
        s->zlen += len;
        return 0;
    }
    int r = flush_zero(s);
    s->zoff = off;
    s->zlen = len;
    return r < 0 ? 0 : r;
}

static int write_head(struct stream_sink *s, const char *since, const char *snap, uint64_t size)
{
    int r = rbddiff_write_header(&s->w);
    if (r == 0 && since)
        r = rbddiff_write_name(&s->w, RBDDIFF_FROM, since);
    if (r == 0)
        r = rbddiff_write_name(&s->w, RBDDIFF_TO, snap);
    if (r == 0)
        r = rbddiff_write_size(&s->w, size);
    return stream_error(s->out, r);
}

static int backup_summary(const struct opts *o, const char *src, uint64_t size,
                          const struct walk_stats *st, uint64_t stream, double secs)
{
    char line[512], sz[SIZE_FORMAT_MAX], data[SIZE_FORMAT_MAX], zero[SIZE_FORMAT_MAX],
        out[SIZE_FORMAT_MAX];
    struct json_object *s = json_object_new_object();
    if (!s || json_add(s, "source", json_object_new_string(src)) < 0 ||
        add_name(s, "since", o->since) < 0 ||
        json_add(s, "output", json_object_new_string(o->out)) < 0 ||
        json_add(s, "size", json_object_new_int64((int64_t)size)) < 0 ||
        json_add(s, "bytes_read", json_object_new_int64((int64_t)st->read)) < 0 ||
        json_add(s, "data_bytes", json_object_new_int64((int64_t)st->data)) < 0 ||
        json_add(s, "zero_bytes", json_object_new_int64((int64_t)st->zero)) < 0 ||
        json_add(s, "stream_bytes", json_object_new_int64((int64_t)stream)) < 0 ||
        json_add(s, "seconds", json_object_new_double(secs)) < 0) {
        json_object_put(s);
        return oom();
    }
    human(size, sz);
    human(st->data, data);
    human(st->zero, zero);
    human(stream, out);
    snprintf(line, sizeof line,
             "%s backup of %s%s%s (%s): %s of data, %s of zeroes, %s stream in %.1f s",
             o->since ? "incremental" : "full", src, o->since ? " since " : "",
             o->since ? o->since : "", sz, data, zero, out, secs);
    /* stdout carries the stream with -o -: the summary goes to stderr. */
    print_summary(s, o->json, strcmp(o->out, "-") == 0 ? stderr : stdout, line);
    json_object_put(s);
    return EXIT_OK;
}

static int run_backup(const struct opts *o, const char *addr, const char *src, const char *snap)
{
    char ctx[CONTEXT_MAX];
    const char *contexts[] = {LIBNBD_CONTEXT_BASE_ALLOCATION, o->since ? ctx : NULL, NULL};
    struct nbd_handle *h = NULL;
    struct out out = {.fd = -1};
    struct stream_sink ss = {.out = &out};
    struct extent_sink sink = {sink_data, sink_zero, &ss};
    struct walk_stats st = {0};
    struct progress p;

    snprintf(ctx, sizeof ctx, "%s%s", DIRTY_CONTEXT_PREFIX, o->since ? o->since : "");
    int r = nbdc_open(addr, src, contexts, &h);
    if (r >= 0)
        return r;
    if (o->since && nbd_can_meta_context(h, ctx) != 1) {
        fprintf(stderr,
                "vsan: backup: %s offers no %s: \"%s\" is not an older snapshot of the volume\n",
                src, ctx, o->since);
        nbd_close(h);
        return EXIT_NO_SNAPSHOT;
    }
    int64_t size = nbd_get_size(h);
    if (size < 0) {
        fprintf(stderr, "vsan: backup: %s: size: %s\n", src, nbd_get_error());
        nbd_close(h);
        return EXIT_ERROR;
    }
    r = out_open(&out, o->out);
    rbddiff_writer_init(&ss.w, out_write, &out);
    if (r < 0)
        r = write_head(&ss, o->since, snap, (uint64_t)size);
    progress_init(&p, src, (uint64_t)size, o->progress);
    if (r < 0)
        r = nbdc_walk(h, src, (uint64_t)size, o->since ? ctx : NULL, &sink, &p, &st);
    if (r < 0)
        r = flush_zero(&ss);
    if (r < 0)
        r = stream_error(&out, rbddiff_write_end(&ss.w));
    if (r < 0)
        r = out_commit(&out);
    progress_done(&p);
    nbd_close(h);
    out_close(&out, r >= 0);
    if (r >= 0)
        return r;
    return backup_summary(o, src, (uint64_t)size, &st, out.total, progress_seconds(&p));
}

int cli_backup(const char *socket, bool json, char **words, int n)
{
    static const char usage[] = "VOL@SNAP [--since PREV] -o FILE|- [--progress] [--nbd ADDR]";
    struct opts o = {.json = json};
    char vol[NAME_ARG_MAX + 1], snap[NAME_ARG_MAX + 1], addr[ADDR_MAX];
    int r = parse_opts("backup", usage, "son", words, n, 1, &o);
    if (r < 0)
        r = split_source("backup", o.pos[0], vol, snap);
    if (r >= 0)
        return r;
    if (!o.out)
        return cli_usage_error("backup: where to? -o FILE, or -o - for stdout (usage: vsan "
                               "backup %s)",
                               usage);
    if (o.since && (!o.since[0] || strlen(o.since) > RBDDIFF_NAME_MAX))
        return cli_usage_error("backup: --since \"%s\": not a snapshot name", o.since);
    if ((r = nbd_address(socket, &o, addr)) >= 0)
        return r;
    return run_backup(&o, addr, o.pos[0], snap);
}

/* ---- restore ------------------------------------------------------------- */

struct input {
    int fd;
    const char *name;
};

static ssize_t input_read(void *arg, void *buf, size_t len)
{
    struct input *in = arg;
    for (;;) {
        ssize_t n = read(in->fd, buf, len);
        if (n >= 0 || errno != EINTR)
            return n < 0 ? -errno : n;
    }
}

/* What the stream's metadata says, and its first data record. */
struct head {
    bool from, to;
    char from_name[RBDDIFF_NAME_MAX + 1], to_name[RBDDIFF_NAME_MAX + 1];
    uint64_t size;
    struct rbddiff_record first;
};

static int bad_stream(const struct input *in, const struct rbddiff_reader *r)
{
    fprintf(stderr, "vsan: restore: %s: %s\n", in->name, r->error);
    return EXIT_BAD_STREAM;
}

static int read_head(struct rbddiff_reader *r, const struct input *in, struct head *h)
{
    for (;;) {
        struct rbddiff_record rec;
        if (rbddiff_next(r, &rec) < 0)
            return bad_stream(in, r);
        if (rec.tag == RBDDIFF_FROM || rec.tag == RBDDIFF_TO) {
            bool f = rec.tag == RBDDIFF_FROM;
            *(f ? &h->from : &h->to) = true;
            memcpy(f ? h->from_name : h->to_name, rec.name, sizeof rec.name);
        } else if (rec.tag == RBDDIFF_SIZE) {
            h->size = rec.size;
        } else if (rec.tag != RBDDIFF_PROTECTED) {
            h->first = rec;
            return -1;
        }
    }
}

/* A file is read whole once before anything is written. */
static int check_file(struct input *in)
{
    struct stat sb;
    if (fstat(in->fd, &sb) < 0 || !S_ISREG(sb.st_mode))
        return -1;
    struct rbddiff_reader r;
    struct rbddiff_record rec = {0};
    rbddiff_reader_init(&r, input_read, in);
    while (rec.tag != RBDDIFF_END) {
        if (rbddiff_next(&r, &rec) < 0)
            return bad_stream(in, &r);
    }
    if (lseek(in->fd, 0, SEEK_SET) < 0) {
        fprintf(stderr, "vsan: restore: %s: seek: %s\n", in->name, strerror(errno));
        return EXIT_ERROR;
    }
    return -1;
}

/* *exists, and whether the volume has snapshot name (in *has). */
static int list_snapshots(const char *socket, const char *vol, bool *exists, const char *a,
                          bool *has_a, const char *b, bool *has_b)
{
    struct json_object *req = json_object_new_object(), *reply = NULL, *list;
    if (!req || json_add(req, "cmd", json_object_new_string("snapshot.list")) < 0 ||
        json_add(req, "name", json_object_new_string(vol)) < 0) {
        json_object_put(req);
        return oom();
    }
    int r = cli_call(socket, req, &reply);
    json_object_put(req);
    if (r >= 0)
        return r;
    *exists = cli_reply_ok(reply);
    *has_a = *has_b = false;
    if (!*exists && strcmp(cli_reply_string(reply, "error"), "no_such_volume") != 0) {
        fprintf(stderr, "vsan: restore: snapshot.list \"%s\": %s\n", vol,
                cli_reply_string(reply, "message"));
        r = cli_error_exit_code(cli_reply_string(reply, "error"));
    }
    if (*exists && json_object_object_get_ex(reply, "snapshots", &list)) {
        for (size_t i = 0; i < json_object_array_length(list); i++) {
            const char *s = cli_reply_string(json_object_array_get_idx(list, i), "name");
            *has_a |= a && strcmp(s, a) == 0;
            *has_b |= b && strcmp(s, b) == 0;
        }
    }
    json_object_put(reply);
    return r;
}

/* VOL has snapshot F and its live export has no writes since. */
static int check_base(const char *addr, const char *vol, const char *from)
{
    char ctx[CONTEXT_MAX];
    const char *contexts[] = {ctx, NULL};
    struct nbd_handle *h = NULL;
    uint64_t dirty = 0;

    snprintf(ctx, sizeof ctx, "%s%s", DIRTY_CONTEXT_PREFIX, from);
    int r = nbdc_open(addr, vol, contexts, &h);
    if (r >= 0)
        return r;
    int64_t size = nbd_get_size(h);
    if (nbd_can_meta_context(h, ctx) != 1 || size < 0) {
        fprintf(stderr, "vsan: restore: the export %s offers no %s\n", vol, ctx);
        nbd_close(h);
        return EXIT_ERROR;
    }
    r = nbdc_count_dirty(h, vol, (uint64_t)size, ctx, &dirty);
    nbd_close(h);
    if (r < 0 && dirty > 0) {
        char d[SIZE_FORMAT_MAX];
        human(dirty, d);
        fprintf(stderr,
                "vsan: restore: volume \"%s\" was written since snapshot \"%s\" (%s changed): "
                "roll it back to \"%s\" first\n",
                vol, from, d, from);
        return EXIT_WRONG_BASE;
    }
    return r;
}

/* The checks before any write; *created if VOL did not exist. */
static int prepare_volume(const char *socket, const char *addr, const char *vol,
                          const struct head *h, bool *created)
{
    bool exists, has_from, has_to;
    int r = list_snapshots(socket, vol, &exists, h->from ? h->from_name : NULL, &has_from,
                           h->to ? h->to_name : NULL, &has_to);
    if (r >= 0)
        return r;
    if (has_to) {
        fprintf(stderr,
                "vsan: restore: volume \"%s\" already has a snapshot \"%s\", which the "
                "stream would create\n",
                vol, h->to_name);
        return EXIT_SNAPSHOT_EXISTS;
    }
    if (h->from && !exists) {
        fprintf(stderr,
                "vsan: restore: no volume \"%s\": an incremental stream (since \"%s\") "
                "applies to a volume with that snapshot\n",
                vol, h->from_name);
        return EXIT_NO_VOLUME;
    }
    if (h->from && !has_from) {
        fprintf(stderr,
                "vsan: restore: volume \"%s\" has no snapshot \"%s\": the stream holds "
                "the changes since it\n",
                vol, h->from_name);
        return EXIT_WRONG_BASE;
    }
    if (h->from && (r = check_base(addr, vol, h->from_name)) >= 0)
        return r;
    *created = !exists;
    return -1;
}

/* Creates VOL, or resizes it to the stream's size. A full stream replaces
 * all of it, so a shrink is forced; an incremental's is not. */
static int size_volume(const char *socket, const char *vol, const struct head *h, bool created)
{
    struct json_object *reply = NULL, *v;
    int r;
    if (created) {
        r = admin(socket, "volume.create", vol, "size", json_object_new_int64((int64_t)h->size),
                  &reply);
        json_object_put(reply);
        return r;
    }
    r = admin(socket, "volume.show", vol, NULL, NULL, &reply);
    if (r >= 0)
        return r;
    bool same = json_object_object_get_ex(reply, "size", &v) &&
                (uint64_t)json_object_get_int64(v) == h->size;
    json_object_put(reply);
    if (same)
        return -1;
    struct json_object *req = json_object_new_object();
    if (!req || json_add(req, "cmd", json_object_new_string("volume.resize")) < 0 ||
        json_add(req, "name", json_object_new_string(vol)) < 0 ||
        json_add(req, "size", json_object_new_int64((int64_t)h->size)) < 0 ||
        (!h->from && json_add(req, "force", json_object_new_boolean(1)) < 0)) {
        json_object_put(req);
        return oom();
    }
    char what[128];
    snprintf(what, sizeof what, "resize \"%s\" to the stream's size", vol);
    r = cli_call_ok(socket, what, req, &reply);
    json_object_put(req);
    json_object_put(reply);
    return r;
}

struct apply {
    struct rbddiff_reader *r;
    const struct input *in;
    struct nbd_sink sink;
    bool fill; /* zero what the stream does not write (a full stream, an old volume) */
    uint64_t size, next, data, zero;
    uint8_t *buf;
    struct progress *p;
};

static int apply_zero(struct apply *a, uint64_t off, uint64_t len)
{
    a->zero += len;
    int r = len ? nbdc_zero(&a->sink, off, len) : 0;
    return r == 0 ? -1 : r;
}

static int apply_data(struct apply *a, const struct rbddiff_record *rec)
{
    uint64_t off = rec->offset;
    for (;;) {
        ssize_t n = rbddiff_read_data(a->r, a->buf, OUT_BUF);
        if (n < 0)
            return bad_stream(a->in, a->r);
        if (n == 0)
            return -1;
        int r = nbdc_write(&a->sink, off, a->buf, (size_t)n);
        if (r != 0)
            return r;
        off += (uint64_t)n;
        a->data += (uint64_t)n;
        progress_update(a->p, off, a->data + a->zero);
    }
}

static int apply_record(struct apply *a, const struct rbddiff_record *rec)
{
    int r = -1;
    if (a->fill && rec->tag != RBDDIFF_END)
        r = apply_zero(a, a->next, rec->offset - a->next);
    else if (a->fill)
        r = apply_zero(a, a->next, a->size - a->next);
    if (r >= 0 || rec->tag == RBDDIFF_END)
        return r;
    a->next = rec->offset + rec->length;
    if (rec->tag == RBDDIFF_ZERO)
        r = apply_zero(a, rec->offset, rec->length);
    else
        r = apply_data(a, rec);
    progress_update(a->p, a->next, a->data + a->zero);
    return r;
}

static int apply_stream(struct apply *a, const struct rbddiff_record *first)
{
    struct rbddiff_record rec = *first;
    for (;;) {
        int r = apply_record(a, &rec);
        if (r >= 0 || rec.tag == RBDDIFF_END)
            return r;
        if (rbddiff_next(a->r, &rec) < 0)
            return bad_stream(a->in, a->r);
    }
}

static int write_volume(const char *addr, const char *vol, struct rbddiff_reader *rd,
                        const struct input *in, const struct head *h, bool fill, struct progress *p,
                        struct apply *a)
{
    struct nbd_handle *nh = NULL;
    *a = (struct apply){.r = rd, .in = in, .fill = fill, .size = h->size, .p = p};
    int r = nbdc_open(addr, vol, NULL, &nh);
    if (r >= 0)
        return r;
    a->sink = (struct nbd_sink){nh, vol};
    a->buf = malloc(OUT_BUF);
    r = a->buf ? apply_stream(a, &h->first) : oom();
    free(a->buf);
    if (r >= 0) {
        nbd_close(nh);
        return r;
    }
    return nbdc_finish(nh, vol);
}

static int create_snapshot(const char *socket, const char *vol, const char *snap)
{
    struct json_object *req = json_object_new_object(), *vols = json_object_new_array(),
                       *reply = NULL;
    if (!req || !vols || json_object_array_add(vols, json_object_new_string(vol)) < 0 ||
        json_add(req, "cmd", json_object_new_string("snapshot.create")) < 0 ||
        json_add(req, "volumes", vols) < 0 ||
        json_add(req, "snapshot", json_object_new_string(snap)) < 0) {
        json_object_put(req);
        return oom();
    }
    char what[192];
    snprintf(what, sizeof what, "restored \"%s\", but snapshot \"%s\" failed", vol, snap);
    int r = cli_call_ok(socket, what, req, &reply);
    json_object_put(req);
    json_object_put(reply);
    return r;
}

static int restore_summary(bool json, const char *vol, const struct head *h, bool created,
                           const struct apply *a, double secs)
{
    char line[512], sz[SIZE_FORMAT_MAX], data[SIZE_FORMAT_MAX], zero[SIZE_FORMAT_MAX];
    struct json_object *s = json_object_new_object();
    if (!s || json_add(s, "volume", json_object_new_string(vol)) < 0 ||
        json_add(s, "created", json_object_new_boolean(created)) < 0 ||
        add_name(s, "from", h->from ? h->from_name : NULL) < 0 ||
        add_name(s, "snapshot", h->to ? h->to_name : NULL) < 0 ||
        json_add(s, "size", json_object_new_int64((int64_t)h->size)) < 0 ||
        json_add(s, "data_bytes", json_object_new_int64((int64_t)a->data)) < 0 ||
        json_add(s, "zero_bytes", json_object_new_int64((int64_t)a->zero)) < 0 ||
        json_add(s, "seconds", json_object_new_double(secs)) < 0) {
        json_object_put(s);
        return oom();
    }
    human(h->size, sz);
    human(a->data, data);
    human(a->zero, zero);
    snprintf(line, sizeof line,
             "volume \"%s\"%s restored (%s): %s written, %s zeroed in %.1f s%s%s%s", vol,
             created ? " created and" : "", sz, data, zero, secs, h->to ? "; snapshot \"" : "",
             h->to ? h->to_name : "", h->to ? "\" created" : "");
    print_summary(s, json, stdout, line);
    json_object_put(s);
    return EXIT_OK;
}

static int run_restore(const char *socket, const struct opts *o, struct input *in)
{
    const char *vol = o->pos[1];
    struct rbddiff_reader rd;
    struct head h = {0};
    struct apply a = {0};
    struct progress p;
    char addr[ADDR_MAX];
    bool created = false;

    int r = check_file(in);
    rbddiff_reader_init(&rd, input_read, in);
    if (r < 0)
        r = read_head(&rd, in, &h);
    if (r < 0)
        r = nbd_address(socket, o, addr);
    if (r < 0)
        r = prepare_volume(socket, addr, vol, &h, &created);
    if (r < 0)
        r = size_volume(socket, vol, &h, created);
    if (r >= 0)
        return r;
    progress_init(&p, vol, h.size, o->progress);
    /* A new volume is zero already: only an old one needs the gaps of a
     * full stream zeroed. */
    r = write_volume(addr, vol, &rd, in, &h, !h.from && !created, &p, &a);
    progress_done(&p);
    if (r < 0 && h.to)
        r = create_snapshot(socket, vol, h.to_name);
    if (r >= 0)
        return r;
    return restore_summary(o->json, vol, &h, created, &a, progress_seconds(&p));
}

int cli_restore(const char *socket, bool json, char **words, int n)
{
    static const char usage[] = "FILE|- VOL [--progress] [--nbd ADDR]";
    struct opts o = {.json = json};
    int r = parse_opts("restore", usage, "n", words, n, 2, &o);
    if (r >= 0)
        return r;
    struct input in = {.fd = STDIN_FILENO, .name = "stdin"};
    if (strcmp(o.pos[0], "-") != 0) {
        in.name = o.pos[0];
        in.fd = open(o.pos[0], O_RDONLY | O_CLOEXEC);
        if (in.fd < 0) {
            fprintf(stderr, "vsan: restore: open %s: %s\n", o.pos[0], strerror(errno));
            return EXIT_ERROR;
        }
    }
    r = run_restore(socket, &o, &in);
    if (in.fd != STDIN_FILENO)
        close(in.fd);
    return r;
}

/* ---- clone --------------------------------------------------------------- */

static int copy_into(const char *addr, const char *newvol, struct nbd_handle *src,
                     const char *srcname, uint64_t size, struct progress *p, struct walk_stats *st)
{
    struct nbd_handle *dst = NULL;
    int r = nbdc_open(addr, newvol, NULL, &dst);
    if (r >= 0)
        return r;
    struct nbd_sink ns = {dst, newvol};
    struct extent_sink sink = {nbdc_write, nbdc_zero, &ns};
    r = nbdc_walk(src, srcname, size, NULL, &sink, p, st);
    if (r >= 0) {
        nbd_close(dst);
        return r;
    }
    return nbdc_finish(dst, newvol);
}

static int clone_summary(bool json, const char *src, const char *newvol, uint64_t size,
                         const struct walk_stats *st, double secs)
{
    char line[512], sz[SIZE_FORMAT_MAX], data[SIZE_FORMAT_MAX];
    struct json_object *s = json_object_new_object();
    if (!s || json_add(s, "source", json_object_new_string(src)) < 0 ||
        json_add(s, "volume", json_object_new_string(newvol)) < 0 ||
        json_add(s, "size", json_object_new_int64((int64_t)size)) < 0 ||
        json_add(s, "data_bytes", json_object_new_int64((int64_t)st->data)) < 0 ||
        json_add(s, "seconds", json_object_new_double(secs)) < 0) {
        json_object_put(s);
        return oom();
    }
    human(size, sz);
    human(st->data, data);
    snprintf(line, sizeof line, "volume \"%s\" created from %s (%s): %s copied in %.1f s", newvol,
             src, sz, data, secs);
    print_summary(s, json, stdout, line);
    json_object_put(s);
    return EXIT_OK;
}

static int run_clone(const char *socket, const struct opts *o, const char *addr)
{
    const char *src = o->pos[0], *newvol = o->pos[1];
    const char *contexts[] = {LIBNBD_CONTEXT_BASE_ALLOCATION, NULL};
    struct nbd_handle *h = NULL;
    struct json_object *reply = NULL;
    struct walk_stats st = {0};
    struct progress p;

    int r = nbdc_open(addr, src, contexts, &h);
    if (r >= 0)
        return r;
    int64_t size = nbd_get_size(h);
    if (size < 0) {
        fprintf(stderr, "vsan: clone: %s: size: %s\n", src, nbd_get_error());
        nbd_close(h);
        return EXIT_ERROR;
    }
    r = admin(socket, "volume.create", newvol, "size", json_object_new_int64(size), &reply);
    json_object_put(reply);
    if (r >= 0) {
        nbd_close(h);
        return r;
    }
    progress_init(&p, newvol, (uint64_t)size, o->progress);
    r = copy_into(addr, newvol, h, src, (uint64_t)size, &p, &st);
    progress_done(&p);
    nbd_close(h);
    if (r < 0)
        return clone_summary(o->json, src, newvol, (uint64_t)size, &st, progress_seconds(&p));
    reply = NULL;
    if (admin(socket, "volume.delete", newvol, NULL, NULL, &reply) < 0)
        fprintf(stderr, "vsan: clone: the unfinished volume \"%s\" was deleted\n", newvol);
    json_object_put(reply);
    return r;
}

int cli_clone(const char *socket, bool json, char **words, int n)
{
    static const char usage[] = "VOL@SNAP NEW [--progress] [--nbd ADDR]";
    struct opts o = {.json = json};
    char vol[NAME_ARG_MAX + 1], snap[NAME_ARG_MAX + 1], addr[ADDR_MAX];
    int r = parse_opts("volume clone", usage, "n", words, n, 2, &o);
    if (r < 0)
        r = split_source("volume clone", o.pos[0], vol, snap);
    if (r < 0)
        r = nbd_address(socket, &o, addr);
    if (r >= 0)
        return r;
    return run_clone(socket, &o, addr);
}
