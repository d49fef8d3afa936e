/* vsand.c - the vsan node daemon: reads its config, opens the pool, serves
 * the volumes over NBD and the admin commands over libqb IPC, and stops
 * gracefully on SIGTERM or SIGINT.
 *
 * Startup is all or nothing, in dependency order: config, logging, pid
 * file (its lock keeps a second vsand off the same pool), store, volumes,
 * the NBD server and the service addresses' local side (nothing listens
 * yet, and addresses are taken only from the main loop), policing, mirror,
 * NBD listeners, admin service, network API. Only then is the daemon "ready". Without
 * -f it runs in the background, and the command that started it must be
 * able to trust its exit status: the parent waits on a pipe until the
 * daemon reports ready (exit 0) or dies (exit 1), and meanwhile relays the
 * daemon's stderr, which carries the startup errors.
 *
 * Threads: main() and the qb_loop run on the main thread, which owns
 * everything here; the NBD server runs its own threads (server.h).
 */
#include "nbd-server/export.h"
#include "nbd-server/server.h"
#include "policing/protocol.h"
#include "api/api.h"
#include "vsan/admin.h"
#include "vsan/api_glue.h"
#include "vsan/config.h"
#include "common/log.h"
#include "vsan/rebuild.h"
#include "vsan/service.h"
#include "store/actlog.h"
#include "store/store.h"
#include "volume/volume.h"
#include "mirror/engine.h"
#include "volume/access.h"
#include "volume/voltable.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <qb/qblog.h>
#include <qb/qbloop.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

struct options {
    const char *config;
    bool foreground;
    bool debug;
};

struct node {
    struct vsan_config cfg;
    int pid_fd; /* holds the pid file's lock; -1 if none */
    qb_loop_t *loop;
    qb_loop_signal_handle sig_term, sig_int, sig_hup;
    const char *config_path;
    struct nbd_tls_creds *tls; /* loaded with the config, until the NBD server takes them */
    struct store *store;
    struct volumes *vols;
    struct voltable table;
    struct policing *pc;
    struct mirror *mirror; /* NULL when standalone */
    struct actlog *actlog; /* with the mirror */
    struct nbd_server *nbd;
    /* Revoked clients still connected after the grace period are cut
     * (drop_revoked): the mark of the revoke the armed timer is for, and
     * of the last one since, which the next round is for. */
    qb_loop_timer_handle drop_timer;
    bool drop_armed;
    unsigned drop_mark, drop_next;
    qb_loop_timer_handle capacity_timer; /* announces the pool's figures (capacity_tick) */
    struct rebuild *rebuild;             /* gone copies rebuilt elsewhere (rebuild.h) */
    bool capacity_armed;
    struct service *service;
    struct admin_node admin_node;
    struct admin *admin;
    struct api *api; /* NULL without [api] listen */
};

static const char usage_line[] = "usage: vsand [-f] [-c FILE] [-d] [-h] [-V]\n";

static void help(void)
{
    printf("%s"
           "\n"
           "The vsan node daemon: serves the volumes of its pool over NBD.\n"
           "\n"
           "  -f, --foreground  stay in the foreground and log to stderr; without it\n"
           "                    vsand daemonizes and exits 0 once the daemon is ready\n"
           "  -c, --config FILE configuration file (default %s)\n"
           "  -d, --debug       log at debug level, whatever the config says\n"
           "  -h, --help        show this help\n"
           "  -V, --version     show the version\n"
           "\n"
           "SIGTERM or SIGINT stop it gracefully. Exit status: 0 ok, 1 error, 2 bad usage.\n",
           usage_line, CONFIG_DEFAULT_PATH);
}

/* Returns 0 to run, 1 to exit 0 (help, version), -1 on bad usage. */
static int parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"foreground", no_argument, NULL, 'f'}, {"config", required_argument, NULL, 'c'},
        {"debug", no_argument, NULL, 'd'},      {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},    {NULL, 0, NULL, 0}};
    int c;

    *o = (struct options){.config = CONFIG_DEFAULT_PATH};
    while ((c = getopt_long(argc, argv, "fc:dhV", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            o->foreground = true;
            break;
        case 'c':
            o->config = optarg;
            break;
        case 'd':
            o->debug = true;
            break;
        case 'h':
            help();
            return 1;
        case 'V':
            printf("vsand %s\n", VSAN_VERSION);
            return 1;
        default:
            fputs(usage_line, stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vsand: unexpected argument \"%s\"\n%s", argv[optind], usage_line);
        return -1;
    }
    return 0;
}

/* ---- pid file ---------------------------------------------------------- */

static int make_parent_dir(const char *path)
{
    char copy[PATH_MAX];

    snprintf(copy, sizeof copy, "%s", path);
    const char *dir = dirname(copy);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        int r = -errno;
        qb_log(LOG_ERR, "pid file \"%s\": mkdir %s: %s", path, dir, strerror(errno));
        return r;
    }
    return 0;
}

static int report_locked(const char *path, int fd)
{
    char pid[32] = "";
    ssize_t n = pread(fd, pid, sizeof pid - 1, 0);

    if (n > 0) {
        pid[n] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        qb_log(LOG_ERR, "pid file \"%s\" is locked by pid %s: is vsand already running?", path,
               pid);
    } else {
        qb_log(LOG_ERR, "pid file \"%s\" is locked by another process: is vsand already running?",
               path);
    }
    return -EBUSY;
}

/* Whether fd is still the file at path: a vsand that is exiting unlinks
 * its pid file after we opened it and before we got its lock. */
static int still_linked(const char *path, int fd, bool *same)
{
    struct stat a, b;

    if (fstat(fd, &a) < 0) {
        qb_log(LOG_ERR, "pid file \"%s\": fstat: %s", path, strerror(errno));
        return -errno;
    }
    *same = stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
    return 0;
}

static int lock_fd(const char *path, int fd)
{
    if (flock(fd, LOCK_EX | LOCK_NB) == 0)
        return 0;
    if (errno == EWOULDBLOCK)
        return report_locked(path, fd);
    qb_log(LOG_ERR, "pid file \"%s\": flock: %s", path, strerror(errno));
    return -errno;
}

static int lock_pid_file(const char *path, int *out)
{
    for (;;) {
        bool same = false;
        int r, fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

        if (fd < 0) {
            r = -errno;
            qb_log(LOG_ERR, "pid file \"%s\": %s", path, strerror(errno));
            return r;
        }
        r = lock_fd(path, fd);
        if (r == 0)
            r = still_linked(path, fd, &same);
        if (r < 0) {
            close(fd);
            return r;
        }
        if (same) {
            *out = fd;
            return 0;
        }
        close(fd);
    }
}

static int write_pid(const char *path, int fd)
{
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());

    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, n, 0) != n) {
        qb_log(LOG_ERR, "pid file \"%s\": write: %s", path, strerror(errno));
        return -errno;
    }
    return 0;
}

static int pid_file_create(const char *path, int *out)
{
    int fd = -1, r = make_parent_dir(path);

    if (r < 0)
        return r;
    r = lock_pid_file(path, &fd);
    if (r < 0)
        return r;
    r = write_pid(path, fd);
    if (r < 0) {
        close(fd);
        return r;
    }
    *out = fd;
    return 0;
}

/* Unlinks before closing, so the file goes while we still hold the lock. */
static void pid_file_remove(const char *path, int fd)
{
    if (unlink(path) < 0)
        qb_log(LOG_WARNING, "pid file \"%s\": unlink: %s", path, strerror(errno));
    close(fd);
}

/* ---- daemonizing --------------------------------------------------------- */

/* The parent's side: relays the daemon's stderr until the daemon reports
 * ready (a byte on status) or dies (EOF on status). */
static int wait_for_daemon(int status_fd, int err_fd)
{
    char buf[4096], ready = 0;
    size_t relayed = 0;
    ssize_t n;

    do
        n = read(status_fd, &ready, 1);
    while (n < 0 && errno == EINTR);
    while ((n = read(err_fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
        if (n > 0 && fwrite(buf, 1, n, stderr) != (size_t)n)
            break;
        relayed += n > 0 ? n : 0;
    }
    if (ready == 'R')
        return 0;
    if (relayed == 0)
        fprintf(stderr, "vsand: the daemon exited during startup\n");
    return 1;
}

static int redirect_stdio(int err_fd)
{
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);

    if (null < 0)
        return -errno;
    if (dup2(null, STDIN_FILENO) < 0 || dup2(null, STDOUT_FILENO) < 0 ||
        dup2(err_fd, STDERR_FILENO) < 0) {
        int r = -errno;
        close(null);
        return r;
    }
    close(null);
    return 0;
}

/* The daemon's side after the double fork: a new session, no terminal, /
 * as working directory, stdin and stdout on /dev/null, stderr to the parent
 * until ready. */
static void become_daemon(int err_fd)
{
    if (setsid() < 0 || chdir("/") < 0 || redirect_stdio(err_fd) < 0) {
        fprintf(stderr, "vsand: daemonize: %s\n", strerror(errno));
        _exit(1);
    }
    close(err_fd);
}

/* Returns in the daemon only, with the write end of the status pipe. */
static int daemonize(int *status_out)
{
    int status[2], err[2];

    if (pipe(status) < 0 || pipe(err) < 0) {
        fprintf(stderr, "vsand: pipe: %s\n", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t child = fork();
    if (child < 0) {
        fprintf(stderr, "vsand: fork: %s\n", strerror(errno));
        return -1;
    }
    if (child > 0) {
        close(status[1]);
        close(err[1]);
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
            ;
        exit(wait_for_daemon(status[0], err[0]));
    }
    close(status[0]);
    close(err[0]);
    become_daemon(err[1]);
    child = fork(); /* so that the daemon is no session leader */
    if (child < 0) {
        fprintf(stderr, "vsand: fork: %s\n", strerror(errno));
        _exit(1);
    }
    if (child > 0)
        _exit(0);
    *status_out = status[1];
    return 0;
}

/* Ends the startup conversation with the parent: stderr goes to /dev/null
 * first, so the parent sees the end of it right after the ready byte. */
static void report_ready(int status_fd)
{
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

    if (log_stderr(-1) < 0)
        qb_log(LOG_WARNING, "cannot stop logging to stderr");
    if (null < 0 || dup2(null, STDERR_FILENO) < 0)
        qb_log(LOG_WARNING, "redirect stderr to /dev/null: %s", strerror(errno));
    if (null >= 0)
        close(null);
    if (write(status_fd, "R", 1) != 1)
        qb_log(LOG_WARNING, "report readiness to the parent: %s", strerror(errno));
    close(status_fd);
}

/* ---- the node ------------------------------------------------------------ */

static int32_t on_stop_signal(int32_t sig, void *data)
{
    struct node *n = data;

    qb_log(LOG_INFO, "%s received: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    qb_loop_stop(n->loop);
    return 0;
}

/* Loads the [tls] credentials the config names. 0, or -1 with a message
 * naming the config file, the key and the file at fault. */
static int load_tls(const char *path, const struct vsan_config *cfg, struct nbd_tls_creds **out,
                    char *err, size_t len)
{
    struct nbd_tls_config tc = {.certificates = cfg->tls_certificates,
                                .verify_peer = cfg->tls_verify_peer,
                                .psk_file = cfg->tls_psk_file};
    char why[1500];
    *out = NULL;
    if (cfg->nbd.tls == NBD_TLS_OFF)
        return 0;
    *out = nbd_tls_creds_load(&tc, why, sizeof why);
    if (*out)
        return 0;
    snprintf(err, len, "%.200s: [tls] %s", path, why);
    return -1;
}

/* SIGHUP: new certificates and CRL for the handshakes to come (a restart
 * would be a failover). Those begun keep the credentials they began with;
 * a failure keeps the old ones. The PSK file needs no reload. */
static void reload_nbd_tls(struct node *n)
{
    struct nbd_tls_creds *creds;
    char err[1800];
    if (load_tls(n->config_path, &n->cfg, &creds, err, sizeof err) < 0) {
        qb_log(LOG_ERR, "SIGHUP received: TLS credentials not reloaded, the old ones stay: %s",
               err);
        return;
    }
    nbd_server_set_tls(n->nbd, creds);
    qb_log(LOG_INFO, "SIGHUP received: TLS credentials reloaded for new connections");
}

/* The API's certificate, key, CA and CRL: the same files, loaded apart
 * (api/ shares no code with nbd-server/). */
static void reload_api(struct node *n)
{
    char err[1800];
    if (api_reload(n->api, err, sizeof err) < 0)
        qb_log(LOG_ERR, "SIGHUP received: API credentials not reloaded, the old ones stay: %s",
               err);
    else
        qb_log(LOG_INFO, "SIGHUP received: API credentials reloaded for new connections");
}

static int32_t on_reload_signal(int32_t sig, void *data)
{
    struct node *n = data;
    (void)sig;
    if (n->cfg.nbd.tls == NBD_TLS_OFF && !n->api)
        qb_log(LOG_INFO, "SIGHUP received: nothing to reload ([nbd] tls = off, no [api])");
    if (n->cfg.nbd.tls != NBD_TLS_OFF)
        reload_nbd_tls(n);
    if (n->api)
        reload_api(n);
    return 0;
}

static int start_loop(struct node *n)
{
    int r;

    n->loop = qb_loop_create();
    if (!n->loop) {
        qb_log(LOG_ERR, "cannot create the main loop");
        return -ENOMEM;
    }
    r = qb_loop_signal_add(n->loop, QB_LOOP_HIGH, SIGTERM, n, on_stop_signal, &n->sig_term);
    if (r == 0)
        r = qb_loop_signal_add(n->loop, QB_LOOP_HIGH, SIGINT, n, on_stop_signal, &n->sig_int);
    if (r == 0)
        r = qb_loop_signal_add(n->loop, QB_LOOP_HIGH, SIGHUP, n, on_reload_signal, &n->sig_hup);
    if (r < 0)
        qb_log(LOG_ERR, "cannot watch SIGTERM, SIGINT and SIGHUP: %s", strerror(-r));
    return r;
}

static int create_nbd(struct node *n)
{
    n->nbd = nbd_server_new(&n->cfg.nbd, &volumes_catalog, n->vols);
    if (!n->nbd) {
        qb_log(LOG_ERR, "cannot create the NBD server: %s", strerror(ENOMEM));
        return -ENOMEM;
    }
    nbd_server_set_tls(n->nbd, n->tls);
    n->tls = NULL;
    return 0;
}

/* Service addresses are served on the port of the first NBD listener
 * (config.c makes sure it is HOST:PORT when the node has one). */
static int create_service(struct node *n)
{
    const char *colon = strrchr(n->cfg.listen[0], ':');
    struct service_params p = {
        .nbd = n->nbd,
        .loop = n->loop,
        .interface = n->cfg.service_interface,
        .own = n->cfg.service_address,
        .port = colon && n->cfg.listen[0][0] != '/' ? colon + 1 : "10809",
        .grace_ms = n->cfg.nbd.shutdown_grace_ms,
    };
    int r = service_new(&p, &n->service);
    if (r < 0)
        qb_log(LOG_ERR, "service addresses: %s", strerror(-r));
    return r;
}

static int start_nbd(struct node *n)
{
    for (unsigned i = 0; i < n->cfg.n_listen; i++) {
        int r = nbd_server_listen(n->nbd, n->cfg.listen[i]);
        if (r < 0)
            return r; /* the server names the address in its message */
    }
    return nbd_server_listen_local(n->nbd, n->cfg.nbd_socket);
}

struct grant_match {
    const char *identity;
};

static void drop_revoked(void *arg);

static bool grant_matches(void *arg, const struct nbd_client *who)
{
    const struct grant_match *m = arg;
    return !who->all && access_matches(m->identity, who->identity, who->auth);
}

static void drop_arm(struct node *n, unsigned mark)
{
    uint64_t ns = (uint64_t)n->cfg.nbd.shutdown_grace_ms * 1000000ull;
    n->drop_mark = mark;
    n->drop_armed =
        qb_loop_timer_add(n->loop, QB_LOOP_MED, ns, n, drop_revoked, &n->drop_timer) == 0;
    if (!n->drop_armed)
        qb_log(LOG_WARNING, "nbd: revoked clients: no timer to disconnect the idle ones");
}

/* The grace period of the revokes up to drop_mark is over: their clients
 * had the time to hear ESHUTDOWN; those still connected are idle, and go. */
static void drop_revoked(void *arg)
{
    struct node *n = arg;
    n->drop_armed = false;
    if (n->nbd)
        nbd_server_drop_clients(n->nbd, n->drop_mark);
    if (n->drop_next != n->drop_mark)
        drop_arm(n, n->drop_next);
}

/* A grant went or changed mode (voltable.h): the identity's connections
 * here to the volume and its snapshots end (ESHUTDOWN), and those still
 * there after the grace period are disconnected. */
static void grant_ended(void *arg, const char *volume, const char *identity)
{
    struct node *n = arg;
    struct grant_match m = {identity};
    unsigned mark;
    if (!n->nbd || nbd_server_end_clients(n->nbd, volume, grant_matches, &m, &mark) == 0)
        return;
    n->drop_next = mark;
    if (!n->drop_armed)
        drop_arm(n, mark);
}

/* The cluster, or a group of one in standalone mode: either way volume
 * table changes and writes go through the same protocol. */
static int start_policing(struct node *n)
{
    const struct vsan_config *c = &n->cfg;
    n->table = (struct voltable){
        .store = n->store, .vols = n->vols, .grant_ended = grant_ended, .grant_ended_arg = n};
    struct policing_params p = {
        .driver = c->cluster_mode == CONFIG_COROSYNC ? &cluster_corosync : &cluster_local,
        .group = c->cluster_name,
        .loop = n->loop,
        .region_size = c->region_size,
        .suspend_on_no_quorum = c->suspend_on_no_quorum,
        .suspend_timeout_ms = c->suspend_timeout_ms,
        .name = c->name,
        .nbd = c->listen[0],
        .mirror = c->mirror_listen,
        .service = c->service_address,
        .table = &voltable_ops,
        .table_ctx = &n->table,
        .service_ops = &service_ops,
        .service_ctx = n->service,
    };
    int r = policing_start(&p, &n->pc);
    if (r < 0) {
        qb_log(LOG_ERR, "cluster \"%s\" (%s mode): %s", c->cluster_name,
               c->cluster_mode == CONFIG_COROSYNC ? "corosync" : "standalone", strerror(-r));
        return r;
    }
    volumes_set_policing(n->vols, n->pc);
    return 0;
}

/* Opens the activity log and has the regions it holds announced to the
 * group: they may differ between replicas after a power cut. A log that
 * can't be read stops the start (actlog_open names the file). */
static int open_actlog(struct node *n)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/activity.log", n->cfg.data_dir) >= (int)sizeof path) {
        qb_log(LOG_ERR, "activity log in \"%s\": the path is too long", n->cfg.data_dir);
        return -ENAMETOOLONG;
    }
    int r = actlog_open(path, mirror_actlog_size(n->cfg.region_size), &n->actlog);
    size_t count = r == 0 ? actlog_carried(n->actlog, NULL, 0) : 0;
    struct actlog_key *k = count ? malloc(count * sizeof *k) : NULL;
    struct pol_key *p = count ? malloc(count * sizeof *p) : NULL;
    if (count && (!k || !p))
        r = -ENOMEM;
    size_t got = r == 0 && count ? actlog_carried(n->actlog, k, count) : 0;
    for (size_t i = 0; i < got && i < count; i++)
        p[i] = (struct pol_key){k[i].volume, k[i].region};
    if (r == 0 && got > 0) {
        qb_log(LOG_WARNING,
               "activity log \"%s\": %zu regions this node may have been writing when it "
               "stopped: they are reconciled before their next write",
               path, got);
        r = policing_announce_lost(n->pc, p, got);
    }
    free(k);
    free(p);
    return r;
}

/* In a cluster: the mirror link and engine, so every write reaches every
 * current replica. Standalone nodes have no peers and skip it. */
static int start_mirror(struct node *n)
{
    const struct vsan_config *c = &n->cfg;
    if (c->cluster_mode != CONFIG_COROSYNC)
        return 0;
    int r = open_actlog(n);
    if (r < 0)
        return r;
    struct mauth_secret secret;
    char err[512];
    r = mauth_load_secret(c->mirror_secret_file, &secret, err, sizeof err);
    if (r < 0) {
        qb_log(LOG_ERR, "[mirror] secret_file: %s", err);
        return r;
    }
    struct mirror_params p = {
        .pc = n->pc,
        .store = n->store,
        .listen = c->mirror_listen,
        .cluster = c->cluster_name,
        .secret = &secret,
        .timeout_ms = c->mirror_timeout_ms,
        .sync_received = c->mirror_sync_received,
        .resync_rate = c->mirror_resync_rate,
        .actlog = n->actlog,
        /* NBD replies completed by a link thread go out together. */
        .batch_begin = nbd_replies_hold,
        .batch_end = nbd_replies_flush,
    };
    r = mirror_start(&p, &n->mirror);
    mauth_secret_clear(&secret);
    if (r == 0)
        r = volumes_set_mirror(n->vols, n->mirror);
    if (r < 0)
        return r;
    n->table.mirror = n->mirror;
    return 0;
}

/* Every CAPACITY_TICK_MS this node measures what it offers and uses and
 * announces it when it moved (policing_capacity_announce): placement
 * reads the figures. A measure that fails is logged and tried again. It
 * also announces how far the copies it fills got (the volumes'
 * descriptions show it on every node). */
#define CAPACITY_TICK_MS 2000

static void capacity_tick(void *data)
{
    struct node *n = data;
    struct policing_capacity c = {.capacity = n->cfg.capacity};
    struct statvfs fs;
    int r = store_usage(n->store, &c.data, &c.snapshots);
    if (r == 0 && c.capacity == 0) {
        if (statvfs(n->cfg.data_dir, &fs) == 0)
            c.capacity = (uint64_t)fs.f_blocks * fs.f_frsize;
        else
            r = -errno;
    }
    if (r == 0)
        r = policing_capacity_announce(n->pc, &c);
    struct policing_progress filling[PMSG_PROGRESS_MAX];
    size_t nf = mirror_progress(n->mirror, filling, PMSG_PROGRESS_MAX);
    if (policing_progress_announce(n->pc, filling, nf) < 0)
        qb_log(LOG_DEBUG, "pool: the progress of %zu copies being filled not announced", nf);
    if (r < 0 && r != -ENOTCONN)
        qb_log(LOG_DEBUG, "pool: capacity of \"%s\" not announced: %s", n->cfg.data_dir,
               strerror(-r));
    n->capacity_armed = qb_loop_timer_add(n->loop, QB_LOOP_LOW, CAPACITY_TICK_MS * 1000000ull, n,
                                          capacity_tick, &n->capacity_timer) == 0;
    if (!n->capacity_armed)
        qb_log(LOG_ERR, "pool: no timer to announce this node's capacity");
}

/* Each step logs its own error, naming what failed. */
static int start_node(struct node *n)
{
    int r = start_loop(n);

    if (r == 0)
        r = pid_file_create(n->cfg.pid_file, &n->pid_fd);
    if (r == 0)
        r = store_open(n->cfg.data_dir, &n->store);
    if (r == 0)
        r = volumes_open(n->store, &n->vols);
    if (r == 0)
        r = create_nbd(n);
    if (r == 0)
        r = create_service(n);
    if (r == 0)
        r = start_policing(n);
    if (r == 0)
        r = start_mirror(n);
    if (r == 0)
        r = start_nbd(n);
    if (r < 0)
        return r;
    if (n->mirror)
        capacity_tick(n);
    n->admin_node = (struct admin_node){.cfg = &n->cfg,
                                        .vols = n->vols,
                                        .nbd = n->nbd,
                                        .pc = n->pc,
                                        .mirror = n->mirror,
                                        .loop = n->loop,
                                        .tokens = volumes_tokens(n->vols),
                                        .started = admin_clock()};
    r = admin_start(n->loop, &n->admin_node, &n->admin);
    if (r == 0)
        r = rebuild_start(&n->admin_node, &n->rebuild);
    return r < 0 ? r : api_glue_start(&n->admin_node, &n->api);
}

/* Undoes whatever start_node() got done, in reverse. */
static void stop_node(struct node *n)
{
    if (n->api)
        api_stop(n->api);
    if (n->admin)
        admin_stop(n->admin);
    if (n->capacity_armed)
        qb_loop_timer_del(n->loop, n->capacity_timer);
    if (n->pc)
        policing_close_writes(n->pc); /* no grant can come once the loop stopped */
    if (n->nbd)
        nbd_server_shutdown(n->nbd);
    if (n->vols)
        volumes_rollback_stop(n->vols); /* its writes fail from now on */
    service_close(n->service);          /* the others take the addresses over once we leave */
    nbd_server_free(n->nbd);
    mirror_stop(n->mirror);
    actlog_close(n->actlog);
    if (n->pc)
        policing_stop(n->pc);
    rebuild_stop(n->rebuild);
    service_free(n->service);
    if (n->vols)
        volumes_close(n->vols);
    if (n->store)
        store_close(n->store);
    if (n->pid_fd >= 0)
        pid_file_remove(n->cfg.pid_file, n->pid_fd);
    if (n->sig_term && qb_loop_signal_del(n->loop, n->sig_term) < 0)
        qb_log(LOG_WARNING, "cannot stop watching SIGTERM");
    if (n->sig_int && qb_loop_signal_del(n->loop, n->sig_int) < 0)
        qb_log(LOG_WARNING, "cannot stop watching SIGINT");
    if (n->sig_hup && qb_loop_signal_del(n->loop, n->sig_hup) < 0)
        qb_log(LOG_WARNING, "cannot stop watching SIGHUP");
    nbd_tls_creds_unref(n->tls);
    if (n->loop)
        qb_loop_destroy(n->loop);
}

static void log_ready(const struct node *n)
{
    char listen[CONFIG_LISTEN_MAX * (CONFIG_ADDR_MAX + 1)] = "";
    size_t used = 0;

    for (unsigned i = 0; i < n->cfg.n_listen && used < sizeof listen; i++)
        used +=
            snprintf(listen + used, sizeof listen - used, "%s%s", i ? "," : "", n->cfg.listen[i]);
    qb_log(LOG_INFO, "vsand ready: nbd %s, local nbd %s, admin %s", listen, n->cfg.nbd_socket,
           n->cfg.admin_socket);
}

/* ---- main ---------------------------------------------------------------- */

/* The level of messages that go to stderr, or -1 for none. A daemon's
 * stderr reaches its parent during startup only: errors and warnings go
 * there even with stderr = no, so that the parent can show why it failed. */
static int stderr_level(const struct vsan_config *cfg, bool foreground)
{
    if (foreground)
        return cfg->log_stderr == CONFIG_NO ? -1 : cfg->log_level;
    if (cfg->log_stderr == CONFIG_YES || cfg->log_level < LOG_WARNING)
        return cfg->log_level;
    return LOG_WARNING;
}

static int setup_logging(const struct vsan_config *cfg, bool foreground)
{
    int r = log_open("vsand", cfg->log_level, cfg->log_syslog);

    if (r == 0)
        r = log_stderr(stderr_level(cfg, foreground));
    if (r < 0)
        fprintf(stderr, "vsand: cannot set up logging: %s\n", strerror(-r));
    return r;
}

/* The config, and the TLS credentials it names: a bad file stops vsand
 * before it forks, with the message on stderr. */
static int load_config(const struct options *o, struct node *n)
{
    char err[1800];
    struct vsan_config *cfg = &n->cfg;

    config_defaults(cfg);
    n->config_path = o->config;
    if (config_parse(o->config, cfg, err, sizeof err) < 0 ||
        load_tls(o->config, cfg, &n->tls, err, sizeof err) < 0) {
        fprintf(stderr, "vsand: %s\n", err);
        return -1;
    }
    if (o->debug)
        cfg->log_level = LOG_DEBUG;
    return 0;
}

/* Every volume keeps its data file open (and a bitmap's file while it
 * syncs), so 4,000 volumes pass the usual soft limit of 1,024
 * descriptors: take the whole hard limit. A failure is not fatal; the
 * limit in force is logged. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        qb_log(LOG_WARNING, "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return;
    }
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (was != rl.rlim_max && setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        qb_log(LOG_WARNING, "open file limit: raising %llu to the hard limit %llu: %s",
               (unsigned long long)was, (unsigned long long)rl.rlim_max, strerror(errno));
        return;
    }
    qb_log(LOG_INFO, "open file limit: %llu (was %llu)", (unsigned long long)rl.rlim_cur,
           (unsigned long long)was);
}

int main(int argc, char **argv)
{
    struct node n = {.pid_fd = -1};
    struct options o;
    int status_fd = -1;
    int r = parse_args(argc, argv, &o);

    if (r != 0)
        return r > 0 ? 0 : 2;
    if (load_config(&o, &n) < 0 || setup_logging(&n.cfg, o.foreground) < 0)
        return 1;
    if (!o.foreground && daemonize(&status_fd) < 0)
        return 1;
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        qb_log(LOG_WARNING, "cannot ignore SIGPIPE: %s", strerror(errno));
    qb_log(LOG_INFO, "vsand %s starting: config %s, node %s, log level %s", VSAN_VERSION, o.config,
           n.cfg.name, config_log_level_name(n.cfg.log_level));
    raise_nofile();
    if (start_node(&n) < 0) {
        qb_log(LOG_ERR, "vsand did not start");
        stop_node(&n);
        log_close();
        return 1;
    }
    log_ready(&n);
    if (status_fd >= 0)
        report_ready(status_fd);
    qb_loop_run(n.loop);
    stop_node(&n);
    qb_log(LOG_INFO, "vsand stopped");
    log_close();
    return 0;
}
