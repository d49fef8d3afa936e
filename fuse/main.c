/* main.c - vsan-fuse's command line: mounts vsan volumes as files that
 * survive the failure of the node serving them, or reports which node
 * serves each file of a mount (--status).
 *
 *   vsan-fuse MOUNTPOINT --nodes HOST:PORT[,HOST:PORT...] [--volume NAME]
 *             [--connections N] [--retry SECONDS] [--io-timeout SECONDS]
 *             [--tls-certificates DIR | --tls-psk-file FILE [--tls-username USER]]
 *             [-f] [-d] [-s] [-o FUSE_OPTION,...]
 *   vsan-fuse --status MOUNTPOINT
 *
 * Everything a user can get wrong (a bad --nodes entry, no node answering,
 * no such volume) is found before mounting, and reported on stderr with
 * what it concerns; once mounted, the process daemonizes (unless -f) and
 * logs through libqb (common/log.c) to syslog, or stderr with -f.
 */
#include "fuse/conn.h"
#include "fuse/fs.h"
#include "common/log.h"

#include <fuse_lowlevel.h>

#include <qb/qblog.h>

#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <syslog.h>

#define EXIT_USAGE 2

struct options {
    char *nodes;
    char *volume;
    unsigned connections;
    unsigned retry_s;
    unsigned io_timeout_s;
    char *tls_certificates;
    char *tls_psk_file;
    char *tls_username;
    int help;
};

#define OPT(t, f)                                                                                  \
    {                                                                                              \
        t, offsetof(struct options, f), 1                                                          \
    }
static const struct fuse_opt option_spec[] = {
    OPT("--nodes=%s", nodes),
    OPT("--nodes %s", nodes),
    OPT("--volume=%s", volume),
    OPT("--volume %s", volume),
    OPT("--connections=%u", connections),
    OPT("--connections %u", connections),
    OPT("--retry=%u", retry_s),
    OPT("--retry %u", retry_s),
    OPT("--io-timeout=%u", io_timeout_s),
    OPT("--io-timeout %u", io_timeout_s),
    OPT("--tls-certificates=%s", tls_certificates),
    OPT("--tls-certificates %s", tls_certificates),
    OPT("--tls-psk-file=%s", tls_psk_file),
    OPT("--tls-psk-file %s", tls_psk_file),
    OPT("--tls-username=%s", tls_username),
    OPT("--tls-username %s", tls_username),
    OPT("-h", help),
    OPT("--help", help),
    FUSE_OPT_END,
};

static void usage(FILE *f)
{
    fprintf(f, "usage: vsan-fuse MOUNTPOINT --nodes HOST:PORT[,HOST:PORT...] [--volume NAME]\n"
               "                 [--connections N] [--retry SECONDS] [--io-timeout SECONDS]\n"
               "                 [--tls-certificates DIR | --tls-psk-file FILE\n"
               "                 [--tls-username USER]]\n"
               "                 [-f] [-d] [-s] [-o FUSE_OPTION[,...]]\n"
               "       vsan-fuse --status MOUNTPOINT\n"
               "\n"
               "Mounts vsan volumes as files, one per volume (all of the first node that\n"
               "answers, or just --volume), and keeps them working while one current replica\n"
               "is reachable: a failed node's requests go again to another replica.\n"
               "\n"
               "  --nodes LIST       nodes to ask first: HOST:PORT, [IPV6]:PORT or /unix/socket\n"
               "  --volume NAME      mount this volume only\n"
               "  --connections N    connections per volume when the server allows several (4)\n"
               "  --retry SECONDS    how long a request keeps trying replicas before EIO (30)\n"
               "  --io-timeout SECONDS  a node that does not answer this long is left (10)\n"
               "  --tls-certificates DIR  TLS with X.509: DIR holds ca-cert.pem (and\n"
               "                     client-cert.pem, client-key.pem if the nodes verify clients)\n"
               "  --tls-psk-file FILE  TLS with a pre-shared key (psktool's format)\n"
               "  --tls-username USER  the key of FILE to use (default: the login name)\n"
               "  -f                 stay in the foreground, log to stderr\n"
               "  -o OPTIONS         FUSE mount options, e.g. allow_other\n"
               "  --status MOUNTPOINT  the node serving each file of a vsan-fuse mount\n");
}

/* ---- --status ------------------------------------------------------------ */

/* The copies of the volume at path being filled, one line each:
 *   recovery: node 3: 40% (26843545 of 67108864 bytes) at 1048576 B/s, 39 s left */
static int status_recovery(const char *path)
{
    char buf[VC_RECOVERY_MAX];
    ssize_t n = getxattr(path, FS_XATTR_RECOVERY, buf, sizeof buf - 1);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    char *save = NULL;
    for (char *e = strtok_r(buf, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        unsigned long node;
        unsigned long long done, total, rate;
        if (sscanf(e, "%lu:%llu/%llu:%llu", &node, &done, &total, &rate) != 4 || total == 0)
            continue;
        unsigned long long left = total > done ? total - done : 0;
        printf("  recovery: node %lu: %llu%% (%llu of %llu bytes) at %llu B/s, %llu s left\n", node,
               done * 100 / total, done, total, rate, rate ? (left + rate - 1) / rate : 0);
    }
    return 0;
}

static int status_one(const char *dir, const char *name)
{
    char path[4096], node[512];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return -ENAMETOOLONG;
    ssize_t n = getxattr(path, FS_XATTR_NODE, node, sizeof node - 1);
    if (n < 0)
        return -errno;
    node[n] = '\0';
    printf("%s  node %s\n", name, node);
    return status_recovery(path);
}

static int status(const char *mountpoint)
{
    DIR *d = opendir(mountpoint);
    if (!d) {
        fprintf(stderr, "vsan-fuse: --status %s: %s\n", mountpoint, strerror(errno));
        return EXIT_FAILURE;
    }
    int rc = EXIT_SUCCESS;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int r = status_one(mountpoint, e->d_name);
        if (r < 0) {
            fprintf(stderr, "vsan-fuse: --status %s: %s: %s%s\n", mountpoint, e->d_name,
                    strerror(-r), r == -ENODATA ? " (not a vsan-fuse mount?)" : "");
            rc = EXIT_FAILURE;
        }
    }
    closedir(d);
    return rc;
}

/* ---- the volumes ----------------------------------------------------------- */

struct names {
    char **v;
    size_t n;
};

static int add_name(void *arg, const char *name, const char *description)
{
    (void)description;
    struct names *l = arg;
    char **v = realloc(l->v, (l->n + 1) * sizeof *v);
    if (!v)
        return -ENOMEM;
    l->v = v;
    l->v[l->n] = strdup(name);
    return l->v[l->n++] ? 0 : -ENOMEM;
}

static void free_names(struct names *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

/* Every export of the first node that answers. */
static int list_volumes(const struct vr_list *nodes, unsigned timeout_ms, struct names *out)
{
    for (size_t i = 0; i < nodes->n; i++) {
        char err[256];
        int r = nc_list(&nodes->v[i], nc_now_ms() + timeout_ms, add_name, out, err, sizeof err);
        if (r == 0)
            return out->n > 0 ? 0 : -ENOENT;
        fprintf(stderr, "vsan-fuse: listing the volumes of %s: %s\n", nodes->v[i].addr,
                r == -ENOMEM ? strerror(ENOMEM) : err);
        free_names(out);
        *out = (struct names){0};
    }
    return -EHOSTUNREACH;
}

static int open_volumes(const struct options *o, const struct vr_list *nodes, struct fs *fs)
{
    struct names names = {0};
    int r = 0;
    if (o->volume)
        r = add_name(&names, o->volume, "");
    else
        r = list_volumes(nodes, o->io_timeout_s * 1000, &names);
    if (r == -ENOENT)
        fprintf(stderr, "vsan-fuse: %s has no volumes\n", o->nodes);
    fs->vols = r == 0 ? calloc(names.n, sizeof *fs->vols) : NULL;
    if (r == 0 && !fs->vols)
        r = -ENOMEM;
    struct vc_params p = {.seeds = nodes,
                          .connections = o->connections,
                          .retry_ms = o->retry_s * 1000,
                          .io_timeout_ms = o->io_timeout_s * 1000};
    for (size_t i = 0; r == 0 && i < names.n; i++) {
        char err[2048];
        p.volume = names.v[i];
        r = vc_open(&p, &fs->vols[fs->n], err, sizeof err);
        if (r < 0)
            fprintf(stderr, "vsan-fuse: volume \"%s\": %s: %s\n", names.v[i],
                    r == -ENOENT ? "no node of --nodes serves it" : "no node of --nodes answered",
                    err);
        else
            fs->n++;
    }
    free_names(&names);
    return r;
}

static void close_volumes(struct fs *fs)
{
    for (size_t i = 0; i < fs->n; i++)
        vc_close(fs->vols[i]);
    free(fs->vols);
}

/* ---- mounting ---------------------------------------------------------------- */

static int check_options(struct options *o, struct vr_list *nodes)
{
    if (!o->nodes) {
        fprintf(stderr, "vsan-fuse: --nodes is required\n");
        return -EINVAL;
    }
    const char *bad;
    size_t badlen;
    if (vr_parse_nodes(o->nodes, nodes, &bad, &badlen) < 0) {
        fprintf(stderr,
                "vsan-fuse: --nodes \"%s\": bad entry \"%.*s\": want HOST:PORT, [IPV6]:PORT "
                "or /unix/socket, at most %d\n",
                o->nodes, (int)badlen, bad, VR_NODES_MAX);
        return -EINVAL;
    }
    if (o->connections < 1 || o->connections > VC_CONNECTIONS_MAX) {
        fprintf(stderr, "vsan-fuse: --connections %u: want 1 to %d\n", o->connections,
                VC_CONNECTIONS_MAX);
        return -EINVAL;
    }
    if (o->retry_s < 1 || o->retry_s > 3600 || o->io_timeout_s < 1 || o->io_timeout_s > 3600) {
        fprintf(stderr, "vsan-fuse: --retry and --io-timeout: want 1 to 3600 seconds\n");
        return -EINVAL;
    }
    if (o->tls_certificates && o->tls_psk_file) {
        fprintf(stderr, "vsan-fuse: --tls-certificates or --tls-psk-file, not both\n");
        return -EINVAL;
    }
    if (o->tls_username && !o->tls_psk_file) {
        fprintf(stderr, "vsan-fuse: --tls-username names a key of --tls-psk-file, not given\n");
        return -EINVAL;
    }
    nc_set_tls(&(struct nc_tls){o->tls_certificates, o->tls_psk_file, o->tls_username});
    return 0;
}

static int loop(struct fuse *f, const struct fuse_cmdline_opts *co)
{
    if (co->singlethread)
        return fuse_loop(f);
    struct fuse_loop_config *lc = fuse_loop_cfg_create();
    if (!lc)
        return -ENOMEM;
    fuse_loop_cfg_set_clone_fd(lc, co->clone_fd);
    fuse_loop_cfg_set_idle_threads(lc, co->max_idle_threads);
    fuse_loop_cfg_set_max_threads(lc, co->max_threads);
    int r = fuse_loop_mt(f, lc);
    fuse_loop_cfg_destroy(lc);
    return r;
}

/* Mounts, daemonizes unless foreground, serves until unmounted. */
static int serve(struct fuse_args *args, const struct fuse_cmdline_opts *co, struct fs *fs)
{
    struct fuse *f = fuse_new(args, &fs_ops, sizeof fs_ops, fs);
    if (!f)
        return EXIT_FAILURE;
    int rc = EXIT_FAILURE;
    if (fuse_mount(f, co->mountpoint) == 0) {
        if (fuse_daemonize(co->foreground) == 0 &&
            fuse_set_signal_handlers(fuse_get_session(f)) == 0) {
            if (!co->foreground && log_stderr(-1) < 0)
                qb_log(LOG_WARNING, "vsan-fuse: can't turn stderr logging off");
            qb_log(LOG_INFO, "vsan-fuse: %zu volume(s) mounted on %s", fs->n, co->mountpoint);
            int w = fs_watch_start(fs, f);
            if (w < 0)
                qb_log(LOG_ERR, "vsan-fuse: the watcher of resizes did not start: %s",
                       strerror(-w));
            else
                rc = loop(f, co) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
            if (w == 0)
                fs_watch_stop(fs);
            fuse_remove_signal_handlers(fuse_get_session(f));
        }
        fuse_unmount(f);
    }
    fuse_destroy(f);
    return rc;
}

static int run(struct fuse_args *args, struct options *o)
{
    struct vr_list nodes;
    if (check_options(o, &nodes) < 0)
        return EXIT_USAGE;
    struct fuse_cmdline_opts co = {0};
    if (fuse_parse_cmdline(args, &co) != 0)
        return EXIT_USAGE;
    int rc = EXIT_USAGE;
    if (co.show_version) {
        printf("vsan-fuse, FUSE library %s\n", fuse_pkgversion());
        rc = EXIT_SUCCESS;
    } else if (!co.mountpoint) {
        fprintf(stderr, "vsan-fuse: no MOUNTPOINT given\n");
        usage(stderr);
    } else {
        rc = EXIT_FAILURE;
        bool to_syslog = !co.foreground;
        if (log_open("vsan-fuse", LOG_INFO, to_syslog) < 0 || log_stderr(LOG_INFO) < 0)
            fprintf(stderr, "vsan-fuse: logging could not be set up\n");
        struct fs fs = {.mounted = time(NULL)};
        if (open_volumes(o, &nodes, &fs) == 0)
            rc = serve(args, &co, &fs);
        close_volumes(&fs);
        log_close();
    }
    free(co.mountpoint);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--status") == 0)
        return status(argv[2]);
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct options o = {.connections = 4, .retry_s = 30, .io_timeout_s = 10};
    if (fuse_opt_parse(&args, &o, option_spec, NULL) != 0)
        return EXIT_USAGE;
    int rc;
    if (o.help) {
        usage(stdout);
        rc = EXIT_SUCCESS;
    } else {
        rc = run(&args, &o);
    }
    fuse_opt_free_args(&args);
    free(o.nodes);
    free(o.volume);
    free(o.tls_certificates);
    free(o.tls_psk_file);
    free(o.tls_username);
    return rc;
}
