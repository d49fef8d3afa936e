/* config.h - vsand's configuration file (INI) as a validated struct.
 *
 * Parsing is a pure function of the file: it reads nothing else, logs
 * nothing and changes no global state, so every rule is unit-tested
 * (tests/unit/test_config.c) and vsand can report one precise error before
 * it touches anything. Every key, its default and its range are documented
 * in deploy/vsan.conf.sample; the defaults live here and in
 * nbd_server_config_defaults().
 */
#ifndef VSAN_CONFIG_H
#define VSAN_CONFIG_H

#include "nbd-server/server.h"
#include "policing/services.h"
#include "common/admin_proto.h"
#include "common/identity.h"

#include <limits.h>
#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_DEFAULT_PATH "/etc/vsan/vsan.conf"
#define CONFIG_NBD_SOCKET_DEFAULT "/run/vsan/nbd-local.sock"

#define CONFIG_NAME_MAX 64       /* node name: [A-Za-z0-9._-] */
#define CONFIG_LISTEN_MAX 8      /* as many listeners as the NBD server takes */
#define CONFIG_ADDR_MAX 127      /* longest "HOST:PORT" or socket path */
#define CONFIG_UNIX_PATH_MAX 107 /* sun_path minus its NUL */

/* Upper bounds we accept; the NBD server allocates max_payload buffers. */
#define CONFIG_MAX_PAYLOAD_MAX (256u * 1024 * 1024)
#define CONFIG_THREADS_MAX 256
#define CONFIG_CONNECTIONS_MAX 65536
#define CONFIG_TIMEOUT_MS_MAX 3600000 /* one hour */
#define CONFIG_API_ADMINS_MAX 16

enum config_tristate { CONFIG_UNSET = -1, CONFIG_NO = 0, CONFIG_YES = 1 };

enum config_cluster_mode { CONFIG_STANDALONE = 0, CONFIG_COROSYNC = 1 };

#define CONFIG_REGION_MIN (64u * 1024)
#define CONFIG_REGION_MAX (1024u * 1024 * 1024)

#define CONFIG_SECRET_DEFAULT "/etc/vsan/secret"
/* Below this a peer on a loaded machine would be declared failed for a
 * scheduling hiccup, outdating a healthy replica. */
#define CONFIG_MIRROR_TIMEOUT_MIN 100
/* A resync rate is 0 (unlimited) or in this range: slower would leave a
 * replica outdated for days; the cap keeps rate x CONFIG_TIMEOUT_MS_MAX
 * within 64 bits for the throttle's arithmetic. */
#define CONFIG_RESYNC_RATE_MIN (1024u * 1024)
#define CONFIG_RESYNC_RATE_MAX (1ull << 40)

struct vsan_config {
    /* [node] */
    char data_dir[PATH_MAX];
    char name[CONFIG_NAME_MAX + 1];
    char pid_file[PATH_MAX];
    char service_address[SVC_ADDR_MAX];  /* "A.B.C.D/PREFIX"; "" = none */
    char service_interface[IF_NAMESIZE]; /* where service addresses go */
    uint64_t capacity;                   /* bytes offered; 0 = data_dir's file system size */
    /* [nbd] */
    char listen[CONFIG_LISTEN_MAX][CONFIG_ADDR_MAX + 1];
    unsigned n_listen;
    struct nbd_server_config nbd; /* with [nbd] tls */
    /* [tls] */
    char tls_certificates[PATH_MAX]; /* nbdkit's layout (tls.h); "" = none */
    bool tls_verify_peer;
    char tls_psk_file[PATH_MAX]; /* psktool's format; "" = none */
    /* [cluster] */
    int cluster_mode; /* enum config_cluster_mode */
    char cluster_name[CONFIG_NAME_MAX + 1];
    unsigned region_size;      /* power of 2 */
    bool suspend_on_no_quorum; /* on_no_quorum = suspend (else error) */
    unsigned suspend_timeout_ms;
    /* Copies of a new volume. Capped at the number of configured nodes
     * when used: a node holds at most one copy of a volume. */
    unsigned replicas;
    double overcommit; /* provisioned bytes per byte of capacity a node may reach */
    /* Current copies a replica removal or move must leave; 0 = 2 for a
     * volume of 2 or more replicas, else 1. Writes go on with one. */
    unsigned min_current;
    /* Seconds a placed volume's copy may be gone (its node away, or it
     * outdated on a member) before it is rebuilt elsewhere; 0 = never. */
    unsigned replace_after_s;
    /* [mirror] */
    char mirror_listen[CONFIG_ADDR_MAX + 1]; /* announced; "" = none (standalone only) */
    char mirror_secret_file[PATH_MAX];       /* read by mauth_load_secret() */
    unsigned mirror_timeout_ms;              /* a peer silent this long is outdated */
    bool mirror_sync_received;               /* sync = received: peers answer before applying */
    uint64_t mirror_resync_rate;             /* bytes per second; 0 = unlimited */
    /* [admin] */
    char admin_socket[ADMIN_NAME_MAX + 2];     /* a leading '/' does not count */
    char nbd_socket[CONFIG_UNIX_PATH_MAX + 1]; /* the local NBD socket: root, no TLS */
    /* [api] */
    char api_listen[CONFIG_ADDR_MAX + 1];                     /* HOST:PORT; "" = no API */
    char api_admins[CONFIG_API_ADMINS_MAX][IDENTITY_MAX + 1]; /* identity patterns */
    unsigned n_api_admins;
    unsigned api_connections; /* at once */
    unsigned api_timeout_ms;  /* an idle connection is closed (rounded up to seconds) */
    /* [log] */
    int log_level; /* LOG_ERR, LOG_WARNING, LOG_INFO or LOG_DEBUG */
    bool log_syslog;
    enum config_tristate log_stderr; /* UNSET: the daemon decides (-f) */
};

/* Fills every default; name is the host name. */
void config_defaults(struct vsan_config *cfg);

/* Reads the INI file at path over cfg (normally fresh defaults) and
 * validates it. Returns 0, or -1 with err set to one line naming the
 * problem, e.g. `vsan.conf:7: [nbd] threads = "abc": not a number`. cfg is
 * unspecified after a failure. */
int config_parse(const char *path, struct vsan_config *cfg, char *err, size_t errlen);

/* The name of a level as written in the file ("info"). */
const char *config_log_level_name(int level);

#endif
