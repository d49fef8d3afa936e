/* replicas.h - where vsan-fuse may send a volume's I/O: the --nodes list
 * the user gives, the replicas a vsand names in an export's description,
 * and the order to try them in.
 *
 * vsand describes each export as
 *   vsan volume NAME (UUID) replicas=1@198.51.100.11:10809,3@[2001:db8::3]:10809
 * listing the volume's current replicas by node id with their first NBD
 * listen address (volume/volume.c, describe()). Any of them serves the volume
 * with the same data, so the client uses one and moves to the next when it
 * fails. The local node comes first: its reads cost no network hop.
 *
 * Pure string and list logic, no I/O: the caller finds this host's
 * addresses (getifaddrs, fuse/client.c) and connects.
 */
#ifndef VSAN_FUSE_REPLICAS_H
#define VSAN_FUSE_REPLICAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VR_NODES_MAX 32
#define VR_HOST_MAX 128
#define VR_ADDR_MAX (VR_HOST_MAX + 8)

/* One NBD endpoint: a TCP host and port, or a unix socket path (port
 * empty). id is the vsand node id, 0 while unknown (a --nodes entry). */
struct vr_node {
    uint32_t id;
    char host[VR_HOST_MAX]; /* without the brackets of an IPv6 literal */
    char port[6];
    char addr[VR_ADDR_MAX]; /* as written: HOST:PORT, [V6]:PORT or /path */
};

struct vr_list {
    size_t n;
    struct vr_node v[VR_NODES_MAX];
};

/* Splits one address (HOST:PORT, [V6]:PORT, or an absolute unix socket
 * path) into n (id untouched). 0 or -EINVAL. */
int vr_parse_addr(const char *addr, size_t len, struct vr_node *n);

/* Parses --nodes: HOST:PORT[,HOST:PORT...]. On -EINVAL, *bad (if given)
 * points at the offending entry in s (its length in *badlen). */
int vr_parse_nodes(const char *s, struct vr_list *out, const char **bad, size_t *badlen);

/* The replicas named by an export description. 0; -ENOENT if it names
 * none (another NBD server, an older vsand); -EINVAL if the token is
 * malformed. */
int vr_parse_description(const char *desc, struct vr_list *out);
/* The value of desc's " recovery=" token (the copies being filled, as
 * "ID:DONE/TOTAL:RATE,..."), into out; "" if it has none, or one that is
 * not made of digits, ':', '/' and ',' only. */
void vr_recovery(const char *desc, char *out, size_t cap);

/* Whether n is on this host: its host is one of local[] (numeric
 * addresses as inet_ntop writes them), a loopback name, or a unix socket. */
bool vr_is_local(const struct vr_node *n, const char *const *local, size_t nlocal);

/* Reorders l in place: local nodes first, then the rest, each group in its
 * original order (stable). */
void vr_order(struct vr_list *l, const char *const *local, size_t nlocal);

/* Index of node id in l, or -1. */
int vr_find_id(const struct vr_list *l, uint32_t id);

#endif
