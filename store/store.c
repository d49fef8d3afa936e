/* store.c - the pool directory on disk: marker, volume records, data files,
 * and the recovery that makes every interrupted change whole again.
 *
 * Crash safety rests on one primitive, write_atomic(): write NAME.tmp,
 * fsync it, rename it over NAME, fsync the directory. Each change orders
 * its other steps around that commit so that whatever a crash leaves is
 * something recovery recognises, and recovery only ever deletes files or
 * truncates data files to their meta's size (see store.h for the rules).
 *
 * The directory fds are opened once; every path is resolved relative to
 * them, so the pool can't change under us if data_dir is renamed. Paths in
 * messages are rebuilt from the names the admin gave.
 */
#include "store/store.h"
#include "common/size.h"

#include <ini.h>
#include <qb/qblog.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TMP_SUFFIX ".tmp"
#define META_SUFFIX ".meta"
#define DATA_SUFFIX ".data"
/* "UUID.meta.tmp" and its NUL. */
#define FILE_NAME_MAX (STORE_UUID_LEN + sizeof(META_SUFFIX) + sizeof(TMP_SUFFIX))

#define BITMAPS_DIR "bitmaps"

struct store {
    char *path;      /* data_dir as configured, for messages */
    char *vol_path;  /* data_dir/volumes, for messages */
    char *snap_path; /* data_dir/snapshots, for messages */
    int dir_fd;
    int vol_fd;
    int snap_fd;
    char pool_uuid[STORE_UUID_LEN + 1];
};

/* ---- errors ---------------------------------------------------------- */

/* Logs the message and returns -err: the reason is in the message. */
__attribute__((format(printf, 2, 3))) static int fail(int err, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    qb_log(LOG_ERR, "%s", msg);
    return -err;
}

/* Logs "message: strerror(err)" and returns -err. */
__attribute__((format(printf, 2, 3))) static int sys_fail(int err, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    qb_log(LOG_ERR, "%s: %s", msg, strerror(err));
    return -err;
}

/* ---- names ----------------------------------------------------------- */

bool store_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > STORE_NAME_MAX || name[0] == '.' || name[0] == '-')
        return false;
    return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == len;
}

static bool uuid_valid(const char *s)
{
    for (int i = 0; i < STORE_UUID_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : strchr("0123456789abcdef", s[i]) == NULL || s[i] == '\0')
            return false;
    }
    return s[STORE_UUID_LEN] == '\0';
}

/* A random (version 4) uuid; getrandom(2) only blocks before the kernel's
 * pool is initialised at boot. */
int store_uuid_generate(char out[STORE_UUID_LEN + 1])
{
    uint8_t b[16];
    ssize_t got;
    do {
        got = getrandom(b, sizeof(b), 0);
    } while (got < 0 && errno == EINTR);
    if (got < 0)
        return sys_fail(errno, "uuid: getrandom");
    if (got != sizeof(b))
        return fail(EIO, "uuid: getrandom returned %zd of %zu bytes", got, sizeof(b));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    snprintf(out, STORE_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return 0;
}

/* Strict decimal: digits only, no sign, no overflow. */
static bool parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

/* The uuid a volume file is named after, or false if name is not
 * "UUID<suffix>". */
static bool file_uuid(const char *name, const char *suffix, char uuid[STORE_UUID_LEN + 1])
{
    if (strlen(name) != STORE_UUID_LEN + strlen(suffix) || !has_suffix(name, suffix))
        return false;
    memcpy(uuid, name, STORE_UUID_LEN);
    uuid[STORE_UUID_LEN] = '\0';
    return uuid_valid(uuid);
}

static void file_name(char out[FILE_NAME_MAX], const char *uuid, const char *suffix)
{
    snprintf(out, FILE_NAME_MAX, "%s%s", uuid, suffix);
}

/* ---- files and directories ------------------------------------------- */

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fsync_dir(int dir_fd, const char *dir_path)
{
    if (fsync(dir_fd) < 0)
        return sys_fail(errno, "fsync \"%s\"", dir_path);
    return 0;
}

static int write_tmp(int dir_fd, const char *dir_path, const char *tmp, const void *buf, size_t len)
{
    int fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return sys_fail(errno, "create \"%s/%s\"", dir_path, tmp);
    int r = write_all(fd, buf, len);
    if (r < 0) {
        close(fd);
        return sys_fail(-r, "write \"%s/%s\"", dir_path, tmp);
    }
    if (fsync(fd) < 0) {
        r = -errno;
        close(fd);
        return sys_fail(-r, "fsync \"%s/%s\"", dir_path, tmp);
    }
    if (close(fd) < 0)
        return sys_fail(errno, "close \"%s/%s\"", dir_path, tmp);
    return 0;
}

/* Replaces dir/name with len bytes so that after a crash it holds either
 * the old or the new bytes, and once this returns 0 the new ones are
 * durable. */
static int replace_atomic(int dir_fd, const char *dir_path, const char *name, const void *buf,
                          size_t len)
{
    char tmp[NAME_MAX + 1];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s%s", name, TMP_SUFFIX) >= sizeof(tmp))
        return fail(ENAMETOOLONG, "\"%s/%s\": name too long", dir_path, name);
    int r = write_tmp(dir_fd, dir_path, tmp, buf, len);
    if (r == 0 && renameat(dir_fd, tmp, dir_fd, name) < 0)
        r = sys_fail(errno, "rename \"%s/%s\" to \"%s\"", dir_path, tmp, name);
    if (r < 0) {
        if (unlinkat(dir_fd, tmp, 0) < 0 && errno != ENOENT)
            qb_log(LOG_WARNING, "remove \"%s/%s\": %s (the next start removes it)", dir_path, tmp,
                   strerror(errno));
        return r;
    }
    return fsync_dir(dir_fd, dir_path);
}

static int write_atomic(int dir_fd, const char *dir_path, const char *name, const char *text)
{
    return replace_atomic(dir_fd, dir_path, name, text, strlen(text));
}

/* The entries of a directory other than "." and "..". */
struct names {
    char **v;
    size_t n;
    size_t cap;
};

static void names_free(struct names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
    *ns = (struct names){0};
}

static int names_add(struct names *ns, const char *name)
{
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? ns->cap * 2 : 16;
        char **v = realloc(ns->v, cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        ns->v = v;
        ns->cap = cap;
    }
    ns->v[ns->n] = strdup(name);
    if (ns->v[ns->n] == NULL)
        return -ENOMEM;
    ns->n++;
    return 0;
}

static int read_names(int dir_fd, const char *path, struct names *out)
{
    /* A new open file description: reading through dir_fd itself would
     * move its offset for the next listing. */
    int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return sys_fail(errno, "open \"%s\"", path);
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        int err = errno;
        close(fd);
        return sys_fail(err, "opendir \"%s\"", path);
    }
    *out = (struct names){0};
    int r = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (e == NULL) {
            if (errno != 0)
                r = sys_fail(errno, "readdir \"%s\"", path);
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        r = names_add(out, e->d_name);
        if (r < 0) {
            r = sys_fail(-r, "list \"%s\"", path);
            break;
        }
    }
    closedir(d);
    if (r < 0)
        names_free(out);
    return r;
}

/* ---- INI records ----------------------------------------------------- */

/* What a handler complained about first, and on which line: inih reports
 * the first bad line but goes on parsing, so the reader counts lines to
 * pair the report with its reason. */
struct ini_state {
    FILE *f;
    int line;
    int error_line;
    char error[160];
};

static char *ini_reader_counting(char *str, int num, void *stream)
{
    struct ini_state *is = stream;
    char *s = fgets(str, num, is->f);
    if (s != NULL)
        is->line++;
    return s;
}

static int ini_complain(struct ini_state *is, const char *fmt, const char *arg)
{
    if (is->error_line == 0) {
        snprintf(is->error, sizeof(is->error), fmt, arg);
        is->error_line = is->line;
    }
    return 0;
}

/* Parses dir/name with handler; logs "what "path": line N: reason". */
static int ini_read(int dir_fd, const char *dir_path, const char *name, const char *what,
                    ini_handler handler, struct ini_state *is)
{
    int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sys_fail(errno, "%s \"%s/%s\"", what, dir_path, name);
    FILE *f = fdopen(fd, "r");
    if (f == NULL) {
        int err = errno;
        close(fd);
        return sys_fail(err, "%s \"%s/%s\"", what, dir_path, name);
    }
    is->f = f;
    int line = ini_parse_stream(ini_reader_counting, is, handler, is);
    bool read_error = ferror(f);
    fclose(f);
    if (read_error)
        return fail(EIO, "%s \"%s/%s\": read error", what, dir_path, name);
    if (line > 0)
        return fail(EINVAL, "%s \"%s/%s\": line %d: %s", what, dir_path, name, line,
                    line == is->error_line ? is->error
                                           : "expected \"[section]\" or \"key = value\"");
    if (line < 0)
        return fail(ENOMEM, "%s \"%s/%s\": out of memory", what, dir_path, name);
    return 0;
}

/* Pool marker. */
struct marker {
    struct ini_state is;
    uint64_t format;
    bool have_format;
    char uuid[STORE_UUID_LEN + 1];
    bool have_created;
};

static int marker_handler(void *user, const char *section, const char *key, const char *value)
{
    struct marker *m = user;
    if (strcmp(section, "pool") != 0)
        return ini_complain(&m->is, "unexpected section [%s] (expected [pool])", section);
    if (strcmp(key, "format") == 0) {
        if (m->have_format || !parse_u64(value, &m->format))
            return ini_complain(&m->is, "bad or repeated format version \"%s\"", value);
        m->have_format = true;
    } else if (strcmp(key, "uuid") == 0) {
        if (m->uuid[0] != '\0' || !uuid_valid(value))
            return ini_complain(&m->is, "bad or repeated uuid \"%s\"", value);
        memcpy(m->uuid, value, sizeof(m->uuid));
    } else if (strcmp(key, "created") == 0) {
        m->have_created = true;
    } else if (!m->have_format || m->format == STORE_FORMAT_VERSION) {
        /* Another format may have other keys: its version is the error. */
        return ini_complain(&m->is, "unknown key \"%s\"", key);
    }
    return 1;
}

static int marker_read(struct store *st)
{
    struct marker m = {0};
    int r = ini_read(st->dir_fd, st->path, STORE_MARKER, "pool marker", marker_handler, &m.is);
    if (m.have_format && m.format != STORE_FORMAT_VERSION)
        return fail(EPROTONOSUPPORT,
                    "pool marker \"%s/%s\": unknown format version %" PRIu64
                    " (this vsand knows version %d)",
                    st->path, STORE_MARKER, m.format, STORE_FORMAT_VERSION);
    if (r < 0)
        return r;
    if (!m.have_format || m.uuid[0] == '\0' || !m.have_created)
        return fail(EINVAL, "pool marker \"%s/%s\": missing %s", st->path, STORE_MARKER,
                    !m.have_format      ? "format"
                    : m.uuid[0] == '\0' ? "uuid"
                                        : "created");
    memcpy(st->pool_uuid, m.uuid, sizeof(st->pool_uuid));
    return 0;
}

static int marker_write(struct store *st)
{
    char created[32];
    struct tm tm;
    time_t now = time(NULL);
    if (gmtime_r(&now, &tm) == NULL || strftime(created, sizeof(created), "%FT%TZ", &tm) == 0)
        return fail(EOVERFLOW, "pool marker \"%s/%s\": can't format the time", st->path,
                    STORE_MARKER);
    char text[256];
    snprintf(text, sizeof(text),
             "# vsan storage pool; written by vsand, do not edit\n"
             "[pool]\nformat = %d\nuuid = %s\ncreated = %s\n",
             STORE_FORMAT_VERSION, st->pool_uuid, created);
    return write_atomic(st->dir_fd, st->path, STORE_MARKER, text);
}

/* Volume record. The replica set is written "NODE:STATE NODE:STATE ...",
 * sorted by node, with the state's number (mirror/replicas.h). */
static bool parse_replicas(const char *value, struct store_volume *v)
{
    v->nreplicas = 0;
    const char *p = value;
    while (*p != '\0') {
        unsigned node, state;
        int used;
        if (v->nreplicas == STORE_REPLICAS_MAX || sscanf(p, "%u:%u%n", &node, &state, &used) != 2 ||
            node == 0 || state > 255)
            return false;
        if (v->nreplicas > 0 && v->replicas[v->nreplicas - 1].node >= node)
            return false;
        v->replicas[v->nreplicas++] = (struct store_replica){node, (uint8_t)state};
        p += used;
        p += strspn(p, " ");
    }
    return true;
}

static const char *const local_names[] = {"ok", "failed", "rebuild", "diskless"};
#define LOCAL_NAMES (sizeof(local_names) / sizeof(local_names[0]))

static bool parse_local(const char *value, uint8_t *out)
{
    for (uint8_t i = 0; i < LOCAL_NAMES; i++) {
        if (strcmp(value, local_names[i]) == 0) {
            *out = i;
            return true;
        }
    }
    return false;
}

struct meta {
    struct ini_state is;
    struct store_volume vol;
    bool have_size, have_generation;
};

static int meta_handler(void *user, const char *section, const char *key, const char *value)
{
    struct meta *m = user;
    struct store_volume *v = &m->vol;
    if (strcmp(section, "volume") != 0)
        return ini_complain(&m->is, "unexpected section [%s] (expected [volume])", section);
    if (strcmp(key, "name") == 0) {
        if (v->name[0] != '\0' || !store_name_valid(value))
            return ini_complain(&m->is, "bad or repeated name \"%s\"", value);
        snprintf(v->name, sizeof(v->name), "%s", value);
    } else if (strcmp(key, "uuid") == 0) {
        if (v->uuid[0] != '\0' || !uuid_valid(value))
            return ini_complain(&m->is, "bad or repeated uuid \"%s\"", value);
        memcpy(v->uuid, value, sizeof(v->uuid));
    } else if (strcmp(key, "size") == 0) {
        if (m->have_size || !parse_u64(value, &v->size) || v->size == 0 || v->size > INT64_MAX)
            return ini_complain(&m->is, "bad or repeated size \"%s\"", value);
        m->have_size = true;
    } else if (strcmp(key, "generation") == 0) {
        if (m->have_generation || !parse_u64(value, &v->generation) || v->generation == 0)
            return ini_complain(&m->is, "bad or repeated generation \"%s\"", value);
        m->have_generation = true;
    } else if (strcmp(key, "replicas") == 0) {
        if (!parse_replicas(value, v))
            return ini_complain(&m->is, "bad replicas \"%s\"", value);
    } else if (strcmp(key, "local") == 0) {
        if (!parse_local(value, &v->local))
            return ini_complain(&m->is, "bad local state \"%s\"", value);
    } else if (strcmp(key, "placement") == 0) {
        if (strcmp(value, "fixed") != 0 && strcmp(value, "all") != 0)
            return ini_complain(&m->is, "bad placement \"%s\" (fixed or all)", value);
        v->fixed = strcmp(value, "fixed") == 0;
    } else {
        return ini_complain(&m->is, "unknown key \"%s\"", key);
    }
    return 1;
}

static int meta_read(struct store *st, const char *uuid, struct store_volume *out)
{
    char name[FILE_NAME_MAX];
    file_name(name, uuid, META_SUFFIX);
    struct meta m = {0};
    int r = ini_read(st->vol_fd, st->vol_path, name, "volume meta", meta_handler, &m.is);
    if (r < 0)
        return r;
    const char *missing = m.vol.name[0] == '\0'   ? "name"
                          : m.vol.uuid[0] == '\0' ? "uuid"
                          : !m.have_size          ? "size"
                          : !m.have_generation    ? "generation"
                                                  : NULL;
    if (missing != NULL)
        return fail(EINVAL, "volume meta \"%s/%s\": missing %s", st->vol_path, name, missing);
    if (strcmp(m.vol.uuid, uuid) != 0)
        return fail(EINVAL, "volume meta \"%s/%s\": uuid %s does not match the file name",
                    st->vol_path, name, m.vol.uuid);
    *out = m.vol;
    return 0;
}

static int meta_write(struct store *st, const struct store_volume *v)
{
    char name[FILE_NAME_MAX];
    file_name(name, v->uuid, META_SUFFIX);
    char replicas[STORE_REPLICAS_MAX * 16] = "";
    size_t used = 0;
    for (uint32_t i = 0; i < v->nreplicas && i < STORE_REPLICAS_MAX; i++)
        used += (size_t)snprintf(replicas + used, sizeof(replicas) - used, "%s%u:%u", i ? " " : "",
                                 v->replicas[i].node, v->replicas[i].state);
    char text[1024];
    snprintf(text, sizeof(text),
             "# vsan volume record; written by vsand, do not edit\n"
             "[volume]\nname = %s\nuuid = %s\nsize = %" PRIu64 "\ngeneration = %" PRIu64
             "\nreplicas = %s\nlocal = %s\nplacement = %s\n",
             v->name, v->uuid, v->size, v->generation, replicas,
             local_names[v->local < LOCAL_NAMES ? v->local : 0], v->fixed ? "fixed" : "all");
    return write_atomic(st->vol_fd, st->vol_path, name, text);
}

/* ---- data files ------------------------------------------------------ */

/* Sets v's data file to size bytes; durable: and fsyncs it. */
static int data_resize(struct store *st, const struct store_volume *v, uint64_t size, bool durable)
{
    char name[FILE_NAME_MAX];
    file_name(name, v->uuid, DATA_SUFFIX);
    char human[SIZE_FORMAT_MAX];
    size_format(size, human, sizeof(human));
    int fd = openat(st->vol_fd, name, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return sys_fail(errno, "volume \"%s\": open \"%s/%s\"", v->name, st->vol_path, name);
    int r = 0;
    if (ftruncate(fd, (off_t)size) < 0)
        r = sys_fail(errno, "volume \"%s\": set \"%s/%s\" to %s: ftruncate", v->name, st->vol_path,
                     name, human);
    else if (durable && fsync(fd) < 0)
        r = sys_fail(errno, "volume \"%s\": fsync \"%s/%s\"", v->name, st->vol_path, name);
    if (close(fd) < 0 && r == 0)
        r = sys_fail(errno, "volume \"%s\": close \"%s/%s\"", v->name, st->vol_path, name);
    return r;
}

static int data_set_size(struct store *st, const struct store_volume *v, uint64_t size)
{
    return data_resize(st, v, size, true);
}

/* The length of v's data file. */
static int data_length(struct store *st, const struct store_volume *v, uint64_t *out)
{
    char name[FILE_NAME_MAX];
    file_name(name, v->uuid, DATA_SUFFIX);
    struct stat sb;
    if (fstatat(st->vol_fd, name, &sb, 0) < 0)
        return sys_fail(errno, "volume \"%s\": stat \"%s/%s\"", v->name, st->vol_path, name);
    *out = (uint64_t)sb.st_size;
    return 0;
}

static void remove_file(struct store *st, const struct store_volume *v, const char *suffix)
{
    char name[FILE_NAME_MAX];
    file_name(name, v->uuid, suffix);
    if (unlinkat(st->vol_fd, name, 0) < 0 && errno != ENOENT)
        qb_log(LOG_WARNING, "volume \"%s\": remove \"%s/%s\": %s (the next start removes it)",
               v->name, st->vol_path, name, strerror(errno));
}

static int data_create(struct store *st, const struct store_volume *v)
{
    char name[FILE_NAME_MAX];
    file_name(name, v->uuid, DATA_SUFFIX);
    int fd = openat(st->vol_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return sys_fail(errno, "volume \"%s\": create \"%s/%s\"", v->name, st->vol_path, name);
    int r = 0;
    if (close(fd) < 0)
        r = sys_fail(errno, "volume \"%s\": close \"%s/%s\"", v->name, st->vol_path, name);
    if (r == 0)
        r = data_set_size(st, v, v->size);
    if (r < 0)
        remove_file(st, v, DATA_SUFFIX);
    return r;
}

int store_data_attach(struct store *st, const struct store_volume *vol)
{
    /* A file a detach left (its unlink failed) holds old data: the copy
     * starts empty, as a rebuild must. */
    remove_file(st, vol, DATA_SUFFIX);
    return data_create(st, vol);
}

void store_data_detach(struct store *st, const struct store_volume *vol)
{
    remove_file(st, vol, DATA_SUFFIX);
}

/* ---- recovery -------------------------------------------------------- */

/* What a scan of volumes/ found, once *.tmp files are gone. */
struct scan {
    struct store_volume *vols;
    size_t n;
    struct names data; /* uuids with a data file */
    bool changed;      /* an entry was removed: the directory needs an fsync */
};

static void scan_free(struct scan *sc)
{
    free(sc->vols);
    names_free(&sc->data);
}

static int scan_meta(struct store *st, struct scan *sc, const char *uuid)
{
    struct store_volume *v = realloc(sc->vols, (sc->n + 1) * sizeof(*v));
    if (v == NULL)
        return fail(ENOMEM, "\"%s\": out of memory", st->vol_path);
    sc->vols = v;
    int r = meta_read(st, uuid, &sc->vols[sc->n]);
    if (r == 0)
        sc->n++;
    return r;
}

static int scan_entry(struct store *st, struct scan *sc, const char *name, bool repair)
{
    char uuid[STORE_UUID_LEN + 1];
    if (has_suffix(name, TMP_SUFFIX)) {
        if (!repair)
            return 0;
        if (unlinkat(st->vol_fd, name, 0) < 0)
            return sys_fail(errno, "remove leftover \"%s/%s\"", st->vol_path, name);
        qb_log(LOG_INFO, "removed \"%s/%s\", left by an interrupted change", st->vol_path, name);
        sc->changed = true;
        return 0;
    }
    if (file_uuid(name, META_SUFFIX, uuid))
        return scan_meta(st, sc, uuid);
    if (file_uuid(name, DATA_SUFFIX, uuid)) {
        int r = names_add(&sc->data, uuid);
        return r < 0 ? fail(-r, "\"%s\": out of memory", st->vol_path) : 0;
    }
    if (has_suffix(name, META_SUFFIX))
        return fail(EINVAL, "volume meta \"%s/%s\": name is not UUID%s", st->vol_path, name,
                    META_SUFFIX);
    qb_log(LOG_WARNING, "\"%s/%s\": not a vsan file, ignored", st->vol_path, name);
    return 0;
}

/* Reads every record of volumes/; with repair, also removes *.tmp files. */
static int scan(struct store *st, struct scan *sc, bool repair)
{
    struct names ns;
    int r = read_names(st->vol_fd, st->vol_path, &ns);
    if (r < 0)
        return r;
    *sc = (struct scan){0};
    for (size_t i = 0; i < ns.n && r == 0; i++)
        r = scan_entry(st, sc, ns.v[i], repair);
    names_free(&ns);
    if (r < 0)
        scan_free(sc);
    return r;
}

static const struct store_volume *scan_find(const struct scan *sc, const char *uuid)
{
    for (size_t i = 0; i < sc->n; i++)
        if (strcmp(sc->vols[i].uuid, uuid) == 0)
            return &sc->vols[i];
    return NULL;
}

/* A data file without a meta is a volume whose creation or deletion was
 * cut short: nobody was ever told it exists, or it was already deleted.
 * One beside a diskless meta is a replica whose removal, or addition, was
 * cut short: it holds nothing the record vouches for. */
static int remove_orphans(struct store *st, struct scan *sc)
{
    for (size_t i = 0; i < sc->data.n; i++) {
        const char *uuid = sc->data.v[i];
        const struct store_volume *v = scan_find(sc, uuid);
        if (v != NULL && v->local != STORE_LOCAL_DISKLESS)
            continue;
        char name[FILE_NAME_MAX];
        file_name(name, uuid, DATA_SUFFIX);
        if (unlinkat(st->vol_fd, name, 0) < 0)
            return sys_fail(errno, "remove orphan data file \"%s/%s\"", st->vol_path, name);
        qb_log(LOG_WARNING,
               "removed \"%s/%s\": data file without a meta (or with a diskless one), left by an "
               "interrupted create, delete or replica change",
               st->vol_path, name);
        sc->changed = true;
    }
    return 0;
}

/* The meta's size is the truth: a longer data file is an interrupted grow
 * (nothing was written past the old end) or shrink (already committed). */
static int fix_data_size(struct store *st, const struct store_volume *v)
{
    if (v->local == STORE_LOCAL_DISKLESS)
        return 0;
    char name[FILE_NAME_MAX];
    file_name(name, v->uuid, DATA_SUFFIX);
    struct stat sb;
    if (fstatat(st->vol_fd, name, &sb, 0) < 0) {
        if (errno == ENOENT)
            return fail(EINVAL, "volume \"%s\": meta \"%s/%s%s\" has no data file \"%s\"", v->name,
                        st->vol_path, v->uuid, META_SUFFIX, name);
        return sys_fail(errno, "volume \"%s\": stat \"%s/%s\"", v->name, st->vol_path, name);
    }
    if (!S_ISREG(sb.st_mode))
        return fail(EINVAL, "volume \"%s\": \"%s/%s\" is not a regular file", v->name, st->vol_path,
                    name);
    if ((uint64_t)sb.st_size == v->size)
        return 0;
    qb_log(LOG_WARNING,
           "volume \"%s\": data file \"%s/%s\" is %jd bytes, its meta says %" PRIu64
           ": setting it to the meta's size (interrupted resize)",
           v->name, st->vol_path, name, (intmax_t)sb.st_size, v->size);
    return data_set_size(st, v, v->size);
}

static int recover(struct store *st)
{
    struct scan sc;
    int r = scan(st, &sc, true);
    if (r < 0)
        return r;
    r = remove_orphans(st, &sc);
    for (size_t i = 0; i < sc.n && r == 0; i++)
        r = fix_data_size(st, &sc.vols[i]);
    if (r == 0 && sc.changed)
        r = fsync_dir(st->vol_fd, st->vol_path);
    scan_free(&sc);
    return r;
}

/* ---- opening a pool -------------------------------------------------- */

static bool is_empty_dir(int dir_fd, const char *name)
{
    int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return false;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return false;
    }
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL &&
           (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0))
        ;
    bool empty = e == NULL && errno == 0;
    closedir(d);
    return empty;
}

/* Whether data_dir holds nothing but what an interrupted pool creation
 * leaves: an empty volumes/ and a marker .tmp. Changes nothing, so that a
 * foreign directory is left exactly as it was. */
static int is_blank(struct store *st, bool *blank)
{
    struct names ns;
    int r = read_names(st->dir_fd, st->path, &ns);
    if (r < 0)
        return r;
    *blank = true;
    for (size_t i = 0; i < ns.n && *blank; i++) {
        const char *name = ns.v[i];
        if (strcmp(name, STORE_VOLUMES_DIR) == 0)
            *blank = is_empty_dir(st->dir_fd, name);
        else
            *blank = strcmp(name, STORE_MARKER TMP_SUFFIX) == 0;
    }
    names_free(&ns);
    return 0;
}

static int pool_init(struct store *st)
{
    bool blank;
    int r = is_blank(st, &blank);
    if (r < 0)
        return r;
    if (!blank)
        return fail(ENOTEMPTY,
                    "data_dir \"%s\": is not a vsan pool (foreign data_dir): it has no %s "
                    "marker and is not empty",
                    st->path, STORE_MARKER);
    r = store_uuid_generate(st->pool_uuid);
    if (r < 0)
        return r;
    if (mkdirat(st->dir_fd, STORE_VOLUMES_DIR, 0700) < 0 && errno != EEXIST)
        return sys_fail(errno, "data_dir \"%s\": mkdir \"%s\"", st->path, STORE_VOLUMES_DIR);
    /* The marker is the pool's commit point, so it comes last. */
    r = marker_write(st);
    if (r < 0)
        return r;
    qb_log(LOG_INFO, "data_dir \"%s\": created pool %s", st->path, st->pool_uuid);
    return 0;
}

static int open_dir(int at, const char *name, const char *label, const char *path, int *fd)
{
    *fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0)
        return sys_fail(errno, "%s \"%s\"", label, path);
    return 0;
}

static int pool_open(struct store *st)
{
    int r;
    if (faccessat(st->dir_fd, STORE_MARKER, F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno != ENOENT)
            return sys_fail(errno, "data_dir \"%s\": %s", st->path, STORE_MARKER);
        r = pool_init(st);
    } else {
        r = marker_read(st);
    }
    if (r < 0)
        return r;
    r = open_dir(st->dir_fd, STORE_VOLUMES_DIR, "volumes directory", st->vol_path, &st->vol_fd);
    if (r < 0)
        return r;
    if (mkdirat(st->dir_fd, BITMAPS_DIR, 0700) < 0 && errno != EEXIST)
        return sys_fail(errno, "data_dir \"%s\": create %s/", st->path, BITMAPS_DIR);
    if (mkdirat(st->dir_fd, STORE_SNAPSHOTS_DIR, 0700) < 0 && errno != EEXIST)
        return sys_fail(errno, "data_dir \"%s\": create %s/", st->path, STORE_SNAPSHOTS_DIR);
    r = open_dir(st->dir_fd, STORE_SNAPSHOTS_DIR, "snapshots directory", st->snap_path,
                 &st->snap_fd);
    if (r < 0)
        return r;
    return recover(st);
}

int store_open(const char *data_dir, struct store **out)
{
    struct store *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return fail(ENOMEM, "data_dir \"%s\": out of memory", data_dir);
    st->dir_fd = -1;
    st->vol_fd = -1;
    st->snap_fd = -1;
    st->path = strdup(data_dir);
    /* asprintf leaves its pointer undefined on failure. */
    if (st->path == NULL || asprintf(&st->vol_path, "%s/%s", data_dir, STORE_VOLUMES_DIR) < 0)
        st->vol_path = NULL;
    if (st->path == NULL || asprintf(&st->snap_path, "%s/%s", data_dir, STORE_SNAPSHOTS_DIR) < 0)
        st->snap_path = NULL;
    if (st->vol_path == NULL || st->snap_path == NULL) {
        store_close(st);
        return fail(ENOMEM, "data_dir \"%s\": out of memory", data_dir);
    }
    int r = open_dir(AT_FDCWD, data_dir, "data_dir", data_dir, &st->dir_fd);
    if (r == 0)
        r = pool_open(st);
    if (r < 0) {
        store_close(st);
        return r;
    }
    *out = st;
    return 0;
}

void store_close(struct store *st)
{
    if (st == NULL)
        return;
    if (st->vol_fd >= 0)
        close(st->vol_fd);
    if (st->dir_fd >= 0)
        close(st->dir_fd);
    if (st->snap_fd >= 0)
        close(st->snap_fd);
    free(st->snap_path);
    free(st->vol_path);
    free(st->path);
    free(st);
}

const char *store_path(const struct store *st)
{
    return st->path;
}

const char *store_pool_uuid(const struct store *st)
{
    return st->pool_uuid;
}

int store_snap_dir_fd(const struct store *st)
{
    return st->snap_fd;
}

const char *store_snap_dir_path(const struct store *st)
{
    return st->snap_path;
}

int store_snap_replace(struct store *st, const char *name, const void *buf, size_t len)
{
    return replace_atomic(st->snap_fd, st->snap_path, name, buf, len);
}

/* ---- volumes --------------------------------------------------------- */

int store_list(struct store *st, struct store_volume **out, size_t *n)
{
    struct scan sc;
    int r = scan(st, &sc, false);
    if (r < 0)
        return r;
    names_free(&sc.data);
    *out = sc.vols;
    *n = sc.n;
    return 0;
}

static int check_size(const char *name, uint64_t size)
{
    if (size == 0 || size > INT64_MAX)
        return fail(EINVAL, "volume \"%s\": size %" PRIu64 " out of range", name, size);
    return 0;
}

/* Order: data file (created, sized, fsynced), then the meta. A crash in
 * between leaves an orphan data file that recovery removes. A failed meta
 * write may still have renamed the meta into place, so cleanup goes in
 * delete order. */
static int create(struct store *st, const char *name, uint64_t size, const char *uuid, bool fixed,
                  bool diskless, struct store_volume *out)
{
    if (!store_name_valid(name))
        return fail(EINVAL, "volume \"%s\": invalid name", name);
    int r = check_size(name, size);
    if (r < 0)
        return r;
    struct store_volume v = {.size = size, .generation = 1};
    snprintf(v.name, sizeof(v.name), "%s", name);
    if (uuid && !uuid_valid(uuid))
        return fail(EINVAL, "volume \"%s\": invalid uuid \"%s\"", name, uuid);
    if (uuid)
        snprintf(v.uuid, sizeof(v.uuid), "%s", uuid);
    else if ((r = store_uuid_generate(v.uuid)) < 0)
        return r;
    v.fixed = fixed;
    if (diskless)
        v.local = STORE_LOCAL_DISKLESS;
    r = diskless ? 0 : data_create(st, &v);
    if (r < 0)
        return r;
    r = meta_write(st, &v);
    if (r < 0) {
        remove_file(st, &v, META_SUFFIX);
        remove_file(st, &v, DATA_SUFFIX);
        return r;
    }
    *out = v;
    return 0;
}

int store_create(struct store *st, const char *name, uint64_t size, const char *uuid,
                 struct store_volume *out)
{
    return create(st, name, size, uuid, false, false, out);
}

int store_create_placed(struct store *st, const char *name, uint64_t size, const char *uuid,
                        bool holds, struct store_volume *out)
{
    return create(st, name, size, uuid, true, !holds, out);
}

int store_open_data(struct store *st, const struct store_volume *vol, int *fd)
{
    *fd = -1;
    if (vol->local == STORE_LOCAL_DISKLESS)
        return 0;
    char name[FILE_NAME_MAX];
    file_name(name, vol->uuid, DATA_SUFFIX);
    *fd = openat(st->vol_fd, name, O_RDWR | O_CLOEXEC);
    if (*fd < 0)
        return sys_fail(errno, "volume \"%s\": open \"%s/%s\"", vol->name, st->vol_path, name);
    return 0;
}

/* Grow: data first, then the meta; until the meta commits, the new bytes
 * are past the volume's end, unread (I/O is bounded by the committed size),
 * and recovery cuts them off, so a failure needs no undo. A data file
 * longer than the old size (a failed grow, or a shrink whose truncation
 * failed after its commit, left bytes there) is first cut to it, durably:
 * a grown volume must read zeroes. The extension itself need not be
 * durable before the meta: recovery sets the file to the meta's size
 * (fix_data_size), and a write past the old end makes the length it needs
 * durable with its data (fdatasync, RWF_DSYNC). An fsync here would flush
 * every write not flushed yet, while a resize holds the volume's writes
 * (a configuration epoch): measured, 160 ms of a 170 ms hold under fio. */
static int grow(struct store *st, struct store_volume *next, uint64_t old_size)
{
    uint64_t length = 0;
    int r = data_length(st, next, &length);
    if (r == 0 && length != old_size)
        r = data_set_size(st, next, old_size);
    if (r == 0)
        r = data_resize(st, next, next->size, false);
    if (r == 0)
        r = meta_write(st, next);
    return r;
}

/* Shrink: the meta first; the cut that follows only frees space, so if it
 * fails the volume is still consistent (reads are bounded by the meta's
 * size) and recovery completes it. */
static int shrink(struct store *st, struct store_volume *next)
{
    int r = meta_write(st, next);
    if (r < 0)
        return r;
    if (data_set_size(st, next, next->size) < 0)
        qb_log(LOG_WARNING,
               "volume \"%s\": shrunk, but its data file keeps its old length "
               "until the next start",
               next->name);
    return 0;
}

int store_resize(struct store *st, struct store_volume *vol, uint64_t size)
{
    int r = check_size(vol->name, size);
    if (r < 0)
        return r;
    if (size == vol->size)
        return 0;
    struct store_volume next = *vol;
    next.size = size;
    next.generation++;
    if (vol->local == STORE_LOCAL_DISKLESS)
        r = meta_write(st, &next); /* no data file to size */
    else
        r = size > vol->size ? grow(st, &next, vol->size) : shrink(st, &next);
    if (r == 0)
        *vol = next;
    return r;
}

int store_update(struct store *st, const struct store_volume *vol)
{
    return meta_write(st, vol);
}

void store_bitmap_path(const struct store *st, const char *uuid, uint32_t node, char *out,
                       size_t len)
{
    snprintf(out, len, "%s/%s/%s.%u", st->path, BITMAPS_DIR, uuid, node);
}

/* A volume's bitmaps go with it; one left behind by a crash is harmless
 * (uuids are never reused) but would waste space, so try them all. */
static void remove_bitmaps(struct store *st, const struct store_volume *vol)
{
    for (uint32_t i = 0; i < vol->nreplicas; i++) {
        char path[PATH_MAX];
        store_bitmap_path(st, vol->uuid, vol->replicas[i].node, path, sizeof(path));
        if (unlink(path) < 0 && errno != ENOENT)
            qb_log(LOG_WARNING, "volume \"%s\": remove \"%s\": %s", vol->name, path,
                   strerror(errno));
    }
}

/* The meta goes first: once it is gone the volume is, and a crash before
 * the data file follows leaves an orphan that recovery removes. If the
 * unlink can't be made durable, the data file stays, so that a meta that
 * comes back after a crash still has its data. */
int store_delete(struct store *st, const struct store_volume *vol)
{
    char name[FILE_NAME_MAX];
    file_name(name, vol->uuid, META_SUFFIX);
    if (unlinkat(st->vol_fd, name, 0) < 0)
        return sys_fail(errno, "volume \"%s\": delete \"%s/%s\"", vol->name, st->vol_path, name);
    if (fsync_dir(st->vol_fd, st->vol_path) < 0)
        qb_log(LOG_WARNING, "volume \"%s\": deleted; its data file stays until the next start",
               vol->name);
    else
        remove_file(st, vol, DATA_SUFFIX);
    remove_bitmaps(st, vol);
    return 0;
}

#define GRANTS_FILE "grants"

int store_file_get(struct store *st, const char *file, size_t max, char **buf, size_t *len)
{
    int fd = openat(st->dir_fd, file, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT)
        return sys_fail(errno, "open \"%s/%s\"", st->path, file);
    struct stat sb = {0};
    if (fd >= 0 && fstat(fd, &sb) < 0) {
        int e = errno;
        close(fd);
        return sys_fail(e, "stat \"%s/%s\"", st->path, file);
    }
    if ((uint64_t)sb.st_size > max) {
        close(fd);
        return fail(EFBIG, "\"%s/%s\": above %zu bytes", st->path, file, max);
    }
    char *b = malloc((size_t)sb.st_size + 1);
    if (!b) {
        if (fd >= 0)
            close(fd);
        return -ENOMEM;
    }
    ssize_t n = fd >= 0 ? pread(fd, b, (size_t)sb.st_size, 0) : 0;
    int e = errno;
    if (fd >= 0)
        close(fd);
    if (n < 0 || n != sb.st_size) {
        free(b);
        return n < 0 ? sys_fail(e, "read \"%s/%s\"", st->path, file)
                     : fail(EIO, "read \"%s/%s\": short read", st->path, file);
    }
    b[n] = '\0';
    *buf = b;
    *len = (size_t)n;
    return 0;
}

int store_file_set(struct store *st, const char *file, const void *buf, size_t len)
{
    return replace_atomic(st->dir_fd, st->path, file, buf, len);
}

int store_grants_get(struct store *st, size_t max, char **buf, size_t *len)
{
    return store_file_get(st, GRANTS_FILE, max, buf, len);
}

int store_grants_set(struct store *st, const void *buf, size_t len)
{
    return store_file_set(st, GRANTS_FILE, buf, len);
}

/* The cluster's volume table version: a counter in its own small file,
 * replaced atomically like every record of the pool. Absent means 0. */
#define VERSION_FILE "cluster-version"

int store_version_get(struct store *st, uint64_t *version)
{
    char buf[32] = "";
    int fd = openat(st->dir_fd, VERSION_FILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        *version = 0;
        return 0;
    }
    if (fd < 0)
        return sys_fail(errno, "open \"%s/%s\"", st->path, VERSION_FILE);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int e = errno;
    close(fd);
    if (n < 0)
        return sys_fail(e, "read \"%s/%s\"", st->path, VERSION_FILE);
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    if (!parse_u64(buf, version))
        return fail(EINVAL, "\"%s/%s\": not a version number", st->path, VERSION_FILE);
    return 0;
}

int store_version_set(struct store *st, uint64_t version)
{
    char text[32];
    snprintf(text, sizeof text, "%" PRIu64 "\n", version);
    return write_atomic(st->dir_fd, st->path, VERSION_FILE, text);
}

/* ---- usage ------------------------------------------------------------- */

/* The blocks the regular files of dir (whose names end in suffix, "" for
 * all) take, in bytes; files that go meanwhile are skipped. */
static int dir_usage(int dir_fd, const char *path, const char *suffix, uint64_t *bytes)
{
    int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return sys_fail(errno, "usage: open \"%s\"", path);
    DIR *d = fdopendir(fd);
    if (!d) {
        int err = errno;
        close(fd);
        return sys_fail(err, "usage: read \"%s\"", path);
    }
    *bytes = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat sb;
        if (has_suffix(e->d_name, suffix) && fstatat(dir_fd, e->d_name, &sb, 0) == 0 &&
            S_ISREG(sb.st_mode))
            *bytes += (uint64_t)sb.st_blocks * 512;
    }
    closedir(d);
    return 0;
}

int store_usage(struct store *st, uint64_t *data, uint64_t *snapshots)
{
    int r = dir_usage(st->vol_fd, st->vol_path, DATA_SUFFIX, data);
    return r < 0 ? r : dir_usage(st->snap_fd, st->snap_path, "", snapshots);
}
