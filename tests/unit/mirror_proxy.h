/* mirror_proxy.h - a TCP proxy in front of one node's mirror listener, for
 * tests: the node announces the proxy's address, so every peer's link to
 * it goes through here, and the test decides per client node what happens
 * to its connections: passed, refused (cut now, and every new one after its
 * HELLO), held (kept open while nothing more gets through either way:
 * requests vanish unanswered, as to a frozen peer), or deaf (requests reach
 * the node, its answers vanish: a link that broke after the peer took a
 * request).
 *
 * The client is known from the HELLO that opens each connection
 * (mirror/wire.h, auth.h); the proxy forwards the bytes untouched, so the
 * handshake and its macs are the two nodes' own. */
#ifndef VSAN_TESTS_MIRROR_PROXY_H
#define VSAN_TESTS_MIRROR_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mproxy_mode { MPROXY_PASS = 0, MPROXY_REFUSE, MPROXY_HOLD, MPROXY_DEAF };

struct mproxy;

/* Listens on 127.0.0.1 (a free port, written to addr as HOST:PORT) and
 * forwards to target. 0 or -errno. */
int mproxy_start(const char *target, char *addr, size_t len, struct mproxy **out);
/* What happens to client node's connections from now on. */
void mproxy_set(struct mproxy *p, uint32_t client, enum mproxy_mode mode);
/* Whether client's link through here is up: the server's WELCOME went
 * through a connection that is still open, a moment ago. */
bool mproxy_linked(struct mproxy *p, uint32_t client);
/* Closes everything and joins every thread. */
void mproxy_stop(struct mproxy *p);

#endif
