/* netaddr.h - HOST:PORT addresses, as the config file writes them, turned
 * into sockets: the NBD server's listeners and the mirror link's listener
 * and connections use the same rules.
 *
 * HOST may be a name, an IPv4 address, an IPv6 address in brackets
 * ("[::1]:10809") or empty (":10809", every address); PORT is numeric.
 */
#ifndef VSAN_NETADDR_H
#define VSAN_NETADDR_H

#include <netdb.h>
#include <stdbool.h>

/* Splits addr into host and port. -EINVAL if it has no port or a part
 * does not fit. */
int netaddr_split(const char *addr, char *host, size_t hl, char *port, size_t pl);
/* getaddrinfo for a TCP stream to (or, passive, on) addr; freeaddrinfo
 * *res after use. -EINVAL, logged with who ("nbd listen", "mirror"). */
int netaddr_resolve(const char *addr, bool passive, struct addrinfo **res, const char *who);
/* A listening TCP socket on addr (SO_REUSEADDR, close-on-exec): its fd,
 * or -errno. */
int netaddr_listen(const char *addr, int backlog, const char *who);
/* A TCP socket connected to addr, whose connect and writes give up after
 * timeout_ms: its fd, or -errno. */
int netaddr_connect(const char *addr, unsigned timeout_ms, const char *who);

#endif
