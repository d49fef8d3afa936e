/* server.c - listeners, the connection list and graceful shutdown.
 *
 * Each listener has an accept thread. An accepted socket becomes a
 * connection registered in the server's list (so shutdown can find it, and
 * max_connections and NBD_HANDSHAKES_MAX are enforced before any thread is
 * spent on it), then a thread runs its handshake, against one deadline,
 * and, once in transmission, starts the other serving threads. The last
 * thread of a connection to leave closes it.
 *
 * Shutdown follows the protocol: stop accepting; requests already read run
 * to completion; requests read afterwards get ESHUTDOWN (transmission.c);
 * clients that leave by themselves within the grace period do so cleanly,
 * the rest are disconnected.
 */
#include "nbd-server/conn.h"
#include "common/clock.h"
#include "common/netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <qb/qblog.h>

/* [nbd] listen (8 at most), the local socket and the service addresses. */
#define LISTENERS_MAX 16

struct listener {
    int fd;
    char addr[128];
    bool is_unix;
    bool local_root;     /* nbd_server_listen_local's: root only, no TLS */
    atomic_bool closing; /* its accept thread is being stopped */
    pthread_t thread;
};

struct nbd_server {
    struct nbd_server_config cfg;
    const struct nbd_catalog_ops *catalog;
    void *catalog_ctx;
    atomic_bool shutting_down;

    /* The TLS credentials of new handshakes (tls_lock: swapped by a reload
     * while accept threads take references). */
    pthread_mutex_t tls_lock;
    struct nbd_tls_creds *tls;

    /* Added and removed by the main thread only; each accept thread reads
     * only its own listener, which stays put until that thread is joined. */
    struct listener *listeners[LISTENERS_MAX];
    unsigned nlisteners;

    /* lock guards conns, nconns and every conn's threads/next fields;
     * gone is signalled whenever a connection closes. */
    pthread_mutex_t lock;
    pthread_cond_t gone;
    struct nbd_conn *conns;
    unsigned nconns;
    unsigned handshaking; /* of nconns, those still in the handshake */
    unsigned ended;       /* calls of nbd_server_end_clients (never 0 once one ran) */
    /* Connections refused since the last message that said so. */
    unsigned long refused;
    time_t refused_logged;
};

void nbd_server_config_defaults(struct nbd_server_config *cfg)
{
    *cfg = (struct nbd_server_config){
        .min_block = 1,
        .pref_block = 4096,
        .max_payload = 32 * 1024 * 1024,
        .threads = 8,
        .max_connections = 256,
        .handshake_timeout_ms = 10000,
        .shutdown_grace_ms = 5000,
    };
}

struct nbd_server *nbd_server_new(const struct nbd_server_config *cfg,
                                  const struct nbd_catalog_ops *catalog, void *catalog_ctx)
{
    struct nbd_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->cfg = *cfg;
    srv->catalog = catalog;
    srv->catalog_ctx = catalog_ctx;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* shutdown's deadline */
    pthread_mutex_init(&srv->lock, NULL);
    pthread_mutex_init(&srv->tls_lock, NULL);
    pthread_cond_init(&srv->gone, &ca);
    pthread_condattr_destroy(&ca);
    return srv;
}

bool nbd_server_shutting_down(struct nbd_server *srv)
{
    return atomic_load_explicit(&srv->shutting_down, memory_order_relaxed);
}

void nbd_server_set_tls(struct nbd_server *srv, struct nbd_tls_creds *creds)
{
    pthread_mutex_lock(&srv->tls_lock);
    struct nbd_tls_creds *old = srv->tls;
    srv->tls = creds;
    pthread_mutex_unlock(&srv->tls_lock);
    nbd_tls_creds_unref(old);
}

struct nbd_tls_creds *nbd_server_tls(struct nbd_server *srv)
{
    pthread_mutex_lock(&srv->tls_lock);
    struct nbd_tls_creds *c = srv->tls;
    if (c)
        nbd_tls_creds_ref(c);
    pthread_mutex_unlock(&srv->tls_lock);
    return c;
}

const struct nbd_catalog_ops *nbd_server_catalog(struct nbd_server *srv, void **ctx)
{
    *ctx = srv->catalog_ctx;
    return srv->catalog;
}

unsigned nbd_server_connections(struct nbd_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    unsigned n = srv->nconns;
    pthread_mutex_unlock(&srv->lock);
    return n;
}

/* ---- connections -------------------------------------------------------- */

/* The host part of a socket address, "" for anything but IPv4 and IPv6. */
static void host_of(const struct sockaddr_storage *ss, char *out, size_t len)
{
    out[0] = '\0';
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, len);
    else if (ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, out, len);
}

static void describe_local(int fd, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        ss.ss_family = AF_UNSPEC;
    host_of(&ss, out, len);
}

static void describe_peer(int fd, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
        snprintf(out, len, "fd %d", fd);
        return;
    }
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, len, "%s:%u", host, ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, len, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(out, len, "unix");
    }
}

/* With srv->lock held: logs a refused connection, at most once a minute
 * (with how many were refused since), as a flood of them would otherwise
 * flood the log too. */
static void refused(struct nbd_server *srv, const char *peer, const char *why)
{
    srv->refused++;
    time_t now = time(NULL);
    if (now - srv->refused_logged < 60)
        return;
    qb_log(LOG_WARNING, "nbd %s: refused: %s (%lu refused since the last such message)", peer, why,
           srv->refused);
    srv->refused = 0;
    srv->refused_logged = now;
}

/* Registers a new connection, or returns NULL when the server is full, has
 * NBD_HANDSHAKES_MAX connections in the handshake, or is shutting down (the
 * caller closes the fds). */
static struct nbd_conn *conn_new(struct nbd_server *srv, int in_fd, int out_fd)
{
    struct nbd_conn *c = calloc(1, sizeof *c);
    if (!c || !(c->in = malloc(CONN_INBUF_SIZE))) {
        free(c);
        return NULL;
    }
    c->srv = srv;
    c->cfg = &srv->cfg;
    c->in_fd = in_fd;
    c->out_fd = out_fd;
    c->threads = 1;
    c->wake_fd = -1;
    atomic_init(&c->refs, 1);
    atomic_init(&c->async_bytes, 0);
    int type;
    socklen_t tl = sizeof type;
    c->out_is_socket = getsockopt(out_fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0;
    describe_peer(in_fd, c->peer, sizeof c->peer);
    describe_local(in_fd, c->local, sizeof c->local);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&c->rlock, &ma);
    pthread_mutex_init(&c->wlock, &ma);
    pthread_mutex_init(&c->qlock, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_mutex_lock(&srv->lock);
    char why[64] = "";
    if (nbd_server_shutting_down(srv))
        snprintf(why, sizeof why, "shutting down");
    else if (srv->nconns >= srv->cfg.max_connections)
        snprintf(why, sizeof why, "%u connections open", srv->cfg.max_connections);
    else if (srv->handshaking >= NBD_HANDSHAKES_MAX)
        snprintf(why, sizeof why, "%d connections in the handshake", NBD_HANDSHAKES_MAX);
    if (!why[0]) {
        c->next = srv->conns;
        srv->conns = c;
        srv->nconns++;
        srv->handshaking++;
        c->ended_epoch = srv->ended;
    } else {
        refused(srv, c->peer, why);
    }
    pthread_mutex_unlock(&srv->lock);
    if (why[0]) {
        free(c->in);
        free(c);
        return NULL;
    }
    return c;
}

static void conn_free(struct nbd_conn *c)
{
    void *ctx;
    const struct nbd_catalog_ops *cat = nbd_server_catalog(c->srv, &ctx);
    if (c->have_export)
        cat->close(ctx, &c->exp);
    close(c->in_fd);
    if (c->out_fd != c->in_fd)
        close(c->out_fd);
    if (c->wake_fd >= 0)
        close(c->wake_fd);
    nbd_tls_session_free(c->tls);
    pthread_mutex_destroy(&c->rlock);
    pthread_mutex_destroy(&c->wlock);
    pthread_mutex_destroy(&c->qlock);
    free(c->outq);
    free(c->in);
    free(c);
}

const char *conn_identity(const struct nbd_conn *c, enum nbd_tls_auth *auth)
{
    if (c->tls)
        return nbd_tls_identity(c->tls, auth);
    if (c->local_root) {
        *auth = NBD_TLS_AUTH_LOCAL;
        return "root";
    }
    *auth = NBD_TLS_AUTH_NONE;
    return "";
}

void conn_client(const struct nbd_conn *c, struct nbd_client *who)
{
    who->identity = conn_identity(c, &who->auth);
    bool nobody = who->auth == NBD_TLS_AUTH_NONE;
    if (nobody)
        who->identity = NBD_ANONYMOUS;
    int anon = c->cfg->anonymous;
    if (anon == NBD_ANON_DEFAULT)
        anon = c->cfg->tls == NBD_TLS_REQUIRE ? NBD_ANON_NONE : NBD_ANON_ALL;
    who->all = who->auth == NBD_TLS_AUTH_LOCAL || (nobody && anon == NBD_ANON_ALL);
}

/* c enters transmission. A revoke that ran during its handshake may have
 * missed it (its export was opened under the old grants): then whether
 * the client would open it alike now is asked again, and if not, c is
 * closed (a new connection gets the new answer). false: closed. */
static bool conn_serving(struct nbd_conn *c)
{
    pthread_mutex_lock(&c->srv->lock);
    c->serving = true; /* from now on a revoke finds c */
    bool recheck = c->srv->ended != c->ended_epoch;
    pthread_mutex_unlock(&c->srv->lock);
    if (!recheck)
        return true;
    void *ctx;
    const struct nbd_catalog_ops *cat = nbd_server_catalog(c->srv, &ctx);
    struct nbd_client who;
    conn_client(c, &who);
    if (cat->still && cat->still(ctx, c->export_name, &who, &c->exp))
        return true;
    qb_log(LOG_INFO, "nbd %s: export \"%s\": its grant changed during the handshake: closing",
           c->peer, c->export_name);
    return false;
}

/* Called by each serving thread as it leaves; the last one drops the
 * threads' reference. */
static void conn_leave(struct nbd_conn *c)
{
    struct nbd_server *srv = c->srv;
    /* A thread leaves only once input is over (DISC, EOF, broken stream or
     * socket error): wake any thread blocked reading, but let those still
     * executing send their replies. */
    shutdown(c->in_fd, SHUT_RD);
    pthread_mutex_lock(&srv->lock);
    bool last = --c->threads == 0;
    pthread_mutex_unlock(&srv->lock);
    if (!last)
        return;
    conn_outq_last_owner(c);
    conn_unref(c);
}

void conn_unref(struct nbd_conn *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    struct nbd_server *srv = c->srv;
    pthread_mutex_lock(&srv->lock);
    struct nbd_conn **p = &srv->conns;
    while (*p != c)
        p = &(*p)->next;
    *p = c->next;
    pthread_mutex_unlock(&srv->lock);
    qb_log(LOG_DEBUG, "nbd %s: export \"%s\": closed", c->peer, c->export_name);
    conn_free(c);
    pthread_mutex_lock(&srv->lock);
    srv->nconns--;
    pthread_cond_broadcast(&srv->gone);
    pthread_mutex_unlock(&srv->lock);
}

static void *follower_main(void *arg)
{
    struct nbd_conn *c = arg;
    nbd_transmission(c);
    conn_leave(c);
    return NULL;
}

static void start_followers(struct nbd_conn *c)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (unsigned i = 1; i < c->cfg->threads; i++) {
        pthread_mutex_lock(&c->srv->lock);
        c->threads++;
        pthread_mutex_unlock(&c->srv->lock);
        pthread_t t;
        int e = pthread_create(&t, &attr, follower_main, c);
        if (e != 0) {
            qb_log(LOG_WARNING, "nbd %s: serving thread: %s; going on with %u", c->peer,
                   strerror(e), i);
            conn_leave(c);
            break;
        }
    }
    pthread_attr_destroy(&attr);
}

static void handshake_slot_free(struct nbd_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->handshaking--;
    pthread_mutex_unlock(&srv->lock);
}

/* Runs the handshake against its one deadline, then gives its slot back. */
static int handshake(struct nbd_conn *c)
{
    unsigned ms = c->cfg->handshake_timeout_ms;
    c->deadline = clock_after_ms(ms);
    c->handshaking = true;
    int r = nbd_handshake(c);
    c->handshaking = false;
    handshake_slot_free(c->srv);
    return r;
}

static void serve_conn(struct nbd_conn *c)
{
    if (handshake(c) < 0 || conn_outq_start(c) < 0) {
        conn_leave(c);
        return;
    }
    if (!conn_serving(c)) {
        conn_leave(c);
        return;
    }
    enum nbd_tls_auth auth;
    const char *who = conn_identity(c, &auth);
    qb_log(LOG_DEBUG, "nbd %s: export \"%s\": transmission, %s replies, %s%s%s", c->peer,
           c->export_name, c->structured ? "structured" : "simple", c->tls ? "TLS" : "plain",
           who[0] ? " as " : "", who);
    start_followers(c);
    nbd_transmission(c);
    conn_leave(c);
}

void nbd_server_serve(struct nbd_server *srv, int in_fd, int out_fd)
{
    struct nbd_conn *c = conn_new(srv, in_fd, out_fd);
    if (!c) {
        close(in_fd);
        if (out_fd != in_fd)
            close(out_fd);
        return;
    }
    serve_conn(c);
}

static void *conn_main(void *arg)
{
    serve_conn(arg);
    return NULL;
}

/* ---- listeners ---------------------------------------------------------- */

/* Whether the client on fd, accepted by a local listener, is root; a
 * refusal is logged with the uid (the socket's mode keeps others out, so
 * one means the mode was changed). */
static bool peer_is_root(const struct listener *l, int fd)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        qb_log(LOG_WARNING, "nbd %s: refused a client: SO_PEERCRED: %s", l->addr, strerror(errno));
        return false;
    }
    if (cred.uid == 0)
        return true;
    qb_log(LOG_WARNING, "nbd %s: refused a client of uid %u (pid %d): only root may connect",
           l->addr, (unsigned)cred.uid, (int)cred.pid);
    return false;
}

static void accepted(struct nbd_server *srv, struct listener *l, int fd)
{
    if (l->local_root && !peer_is_root(l, fd)) {
        close(fd);
        return;
    }
    if (!l->is_unix) {
        int one = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
            qb_log(LOG_WARNING, "nbd %s: TCP_NODELAY: %s", l->addr, strerror(errno));
    }
    struct nbd_conn *c = conn_new(srv, fd, fd);
    if (!c) {
        close(fd);
        return;
    }
    c->local_root = l->local_root;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int e = pthread_create(&t, &attr, conn_main, c);
    pthread_attr_destroy(&attr);
    if (e != 0) {
        qb_log(LOG_ERR, "nbd %s: connection thread: %s", l->addr, strerror(e));
        handshake_slot_free(srv);
        conn_leave(c);
    }
}

static void *accept_main(void *arg)
{
    struct nbd_server *srv = ((void **)arg)[0];
    struct listener *l = ((void **)arg)[1];
    free(arg);
    while (!nbd_server_shutting_down(srv) && !atomic_load(&l->closing)) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            accepted(srv, l, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (nbd_server_shutting_down(srv) || atomic_load(&l->closing))
            break;
        qb_log(LOG_ERR, "nbd %s: accept: %s", l->addr, strerror(errno));
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            struct timespec ts = {0, 100 * 1000 * 1000}; /* let descriptors free up */
            nanosleep(&ts, NULL);
            continue;
        }
        break;
    }
    return NULL;
}

static int bind_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path); /* stale socket of a previous run */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 128) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

/* Starts the accept thread of a bound socket fd (taken over) at addr. */
static int add_listener(struct nbd_server *srv, const char *addr, int fd, bool local_root)
{
    struct listener *l = calloc(1, sizeof *l);
    void **arg = malloc(2 * sizeof *arg);
    int e = l && arg ? 0 : ENOMEM;
    if (e == 0) {
        l->fd = fd;
        l->is_unix = addr[0] == '/';
        l->local_root = local_root;
        snprintf(l->addr, sizeof l->addr, "%s", addr);
        arg[0] = srv;
        arg[1] = l;
        e = pthread_create(&l->thread, NULL, accept_main, arg);
    }
    if (e != 0) {
        free(arg);
        close(fd);
        if (l && l->is_unix)
            unlink(addr);
        free(l);
        qb_log(LOG_ERR, "nbd listen %s: accept thread: %s", addr, strerror(e));
        return -e;
    }
    srv->listeners[srv->nlisteners++] = l;
    qb_log(LOG_INFO, "nbd: listening on %s%s", addr, local_root ? " (root only, no TLS)" : "");
    return 0;
}

static int room_for_listener(const struct nbd_server *srv, const char *addr)
{
    if (srv->nlisteners < LISTENERS_MAX)
        return 0;
    qb_log(LOG_ERR, "nbd listen %s: at most %d listeners", addr, LISTENERS_MAX);
    return -EMFILE;
}

/* Splits "host:port" or "[v6]:port". */
int nbd_server_listen(struct nbd_server *srv, const char *addr)
{
    int r = room_for_listener(srv, addr);
    if (r < 0)
        return r;
    int fd = addr[0] == '/' ? bind_unix(addr) : netaddr_listen(addr, 128, "nbd listen");
    if (fd < 0) {
        qb_log(LOG_ERR, "nbd listen %s: %s", addr, strerror(-fd));
        return fd;
    }
    return add_listener(srv, addr, fd, false);
}

/* Whether a server answers on the unix socket at path. */
static bool unix_socket_live(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool live = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return live;
}

/* mkdir of path's directory, 0755 (as /run/vsan for the pid file). */
static int make_socket_dir(const char *path)
{
    char dir[sizeof(struct sockaddr_un){0}.sun_path];
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path || (size_t)(slash - path) >= sizeof dir)
        return 0;
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        int e = errno;
        qb_log(LOG_ERR, "nbd listen %s: mkdir %s: %s", path, dir, strerror(e));
        return -e;
    }
    return 0;
}

int nbd_server_listen_local(struct nbd_server *srv, const char *path)
{
    int r = room_for_listener(srv, path);
    if (r == 0)
        r = make_socket_dir(path);
    if (r < 0)
        return r;
    if (unix_socket_live(path)) {
        qb_log(LOG_ERR,
               "nbd listen %s: another server answers there (each vsand needs its own "
               "[admin] nbd_socket)",
               path);
        return -EADDRINUSE;
    }
    /* Until the chmod the socket has the umask's mode: the uid check on
     * accept keeps that moment safe. */
    int fd = bind_unix(path);
    if (fd >= 0 && chmod(path, 0600) < 0) {
        int e = -errno;
        close(fd);
        unlink(path);
        fd = e;
    }
    if (fd < 0) {
        qb_log(LOG_ERR, "nbd listen %s: %s", path, strerror(-fd));
        return fd;
    }
    return add_listener(srv, path, fd, true);
}

static void stop_listener(struct listener *l)
{
    atomic_store(&l->closing, true);
    shutdown(l->fd, SHUT_RDWR); /* wakes accept() */
    pthread_join(l->thread, NULL);
    close(l->fd);
    if (l->is_unix)
        unlink(l->addr);
    free(l);
}

int nbd_server_unlisten(struct nbd_server *srv, const char *addr)
{
    for (unsigned i = 0; i < srv->nlisteners; i++) {
        struct listener *l = srv->listeners[i];
        if (strcmp(l->addr, addr) != 0)
            continue;
        stop_listener(l);
        srv->listeners[i] = srv->listeners[--srv->nlisteners];
        qb_log(LOG_INFO, "nbd: no longer listening on %s", addr);
        return 0;
    }
    return -ENOENT;
}

/* ---- ending connections ------------------------------------------------- */

unsigned nbd_server_end_connections(struct nbd_server *srv, const char *local)
{
    unsigned n = 0;
    pthread_mutex_lock(&srv->lock);
    for (struct nbd_conn *c = srv->conns; c; c = c->next) {
        if (strcmp(c->local, local) != 0 || atomic_exchange(&c->ending, true))
            continue;
        n++;
    }
    pthread_mutex_unlock(&srv->lock);
    if (n > 0)
        qb_log(LOG_INFO, "nbd: ending %u connections to %s: their next request gets ESHUTDOWN", n,
               local);
    return n;
}

/* Whether export is vol or one of its snapshots. */
static bool export_of(const char *export, const char *vol)
{
    size_t n = strlen(vol);
    return strncmp(export, vol, n) == 0 && (export[n] == '\0' || export[n] == '@');
}

unsigned nbd_server_end_clients(struct nbd_server *srv, const char *vol,
                                bool (*match)(void *arg, const struct nbd_client *who), void *arg,
                                unsigned *mark)
{
    unsigned n = 0;
    pthread_mutex_lock(&srv->lock);
    if (++srv->ended == 0)
        srv->ended++; /* 0 is no mark */
    *mark = srv->ended;
    for (struct nbd_conn *c = srv->conns; c; c = c->next) {
        if (!c->serving)
            continue; /* ends as it enters transmission (conn_serving) */
        struct nbd_client who;
        conn_client(c, &who);
        if (!export_of(c->export_name, vol) || !match(arg, &who) ||
            atomic_exchange(&c->ending, true))
            continue;
        c->revoked = *mark;
        n++;
    }
    pthread_mutex_unlock(&srv->lock);
    if (n > 0)
        qb_log(LOG_INFO,
               "nbd: volume \"%s\": ending %u connections whose grant changed: their next "
               "request gets ESHUTDOWN",
               vol, n);
    return n;
}

unsigned nbd_server_drop_clients(struct nbd_server *srv, unsigned mark)
{
    unsigned n = 0;
    pthread_mutex_lock(&srv->lock);
    for (struct nbd_conn *c = srv->conns; c; c = c->next) {
        /* Marks count up from 1 and wrap after 2^32 revokes: compared as
         * a distance, a mark made after this one is never taken for it. */
        if (c->revoked == 0 || (int)(mark - c->revoked) < 0)
            continue;
        shutdown(c->in_fd, SHUT_RDWR);
        c->revoked = 0;
        n++;
    }
    pthread_mutex_unlock(&srv->lock);
    if (n > 0)
        qb_log(LOG_INFO, "nbd: disconnected %u idle connections whose grant changed", n);
    return n;
}

unsigned nbd_server_drop_connections(struct nbd_server *srv, const char *local)
{
    unsigned n = 0;
    pthread_mutex_lock(&srv->lock);
    for (struct nbd_conn *c = srv->conns; c; c = c->next) {
        if (strcmp(c->local, local) != 0 || !atomic_load(&c->ending))
            continue;
        shutdown(c->in_fd, SHUT_RDWR);
        n++;
    }
    pthread_mutex_unlock(&srv->lock);
    if (n > 0)
        qb_log(LOG_INFO, "nbd: disconnected %u idle connections to %s", n, local);
    return n;
}

/* ---- shutdown ----------------------------------------------------------- */

static void stop_listeners(struct nbd_server *srv)
{
    for (unsigned i = 0; i < srv->nlisteners; i++)
        stop_listener(srv->listeners[i]);
    srv->nlisteners = 0;
}

/* Waits until no connection is left, or the deadline (if any) passes. */
static void wait_connections(struct nbd_server *srv, const struct timespec *deadline)
{
    pthread_mutex_lock(&srv->lock);
    while (srv->nconns > 0) {
        if (!deadline) {
            pthread_cond_wait(&srv->gone, &srv->lock);
        } else if (pthread_cond_timedwait(&srv->gone, &srv->lock, deadline) == ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&srv->lock);
}

void nbd_server_shutdown(struct nbd_server *srv)
{
    atomic_store(&srv->shutting_down, true);
    stop_listeners(srv);
    struct timespec deadline = clock_after_ms(srv->cfg.shutdown_grace_ms);
    wait_connections(srv, &deadline);
    pthread_mutex_lock(&srv->lock);
    if (srv->nconns > 0)
        qb_log(LOG_INFO, "nbd: disconnecting %u clients still connected", srv->nconns);
    for (struct nbd_conn *c = srv->conns; c; c = c->next)
        shutdown(c->in_fd, SHUT_RDWR);
    pthread_mutex_unlock(&srv->lock);
    wait_connections(srv, NULL);
}

void nbd_server_free(struct nbd_server *srv)
{
    if (!srv)
        return;
    if (!nbd_server_shutting_down(srv) || srv->nlisteners > 0)
        nbd_server_shutdown(srv);
    nbd_tls_creds_unref(srv->tls);
    pthread_cond_destroy(&srv->gone);
    pthread_mutex_destroy(&srv->tls_lock);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
}
