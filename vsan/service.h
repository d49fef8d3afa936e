/* service.h - this node's side of the service addresses: adding and
 * removing the addresses the cluster gives it, and serving NBD on them.
 *
 * Which node holds which address is agreed by the policing protocol
 * (policing/services.h); it tells this module the set this node should
 * hold now (service_ops). Taking an address: add it to the service
 * interface (netif.h), announce it by gratuitous ARP three times (now,
 * after 300 ms and after 1 s, in case one is lost or a neighbour ignores
 * updates within its lock time), and listen for NBD on ADDR:PORT, the port
 * of the node's own NBD listener. Giving one up: stop that listener, tell
 * the NBD server to end the connections clients made to the address (their
 * next request gets ESHUTDOWN, then they close, and the client reconnects
 * to wherever the address went), and after a short release window (at
 * most 1 s, at most shutdown_grace) disconnect the clients that stayed
 * idle and remove the address.
 *
 * The window is a compromise. The new holder adds the address at the same
 * moment (the same agreed message) and announces it, so neighbours send
 * to it at once; but replies and FINs to the old connections must leave
 * from the address, and a host drops what it would send from an address
 * it no longer has: a client waiting on such a reply would wait forever.
 * So the address stays on both for up to a second, during which only the
 * gratuitous ARP of the new holder points clients at it. With no client
 * connected to it, the address goes at once.
 *
 * Main loop only.
 */
#ifndef VSAN_SERVICE_H
#define VSAN_SERVICE_H

#include "policing/protocol.h"

#include <qb/qbloop.h>

struct nbd_server;

struct service_params {
    struct nbd_server *nbd;
    qb_loop_t *loop;
    const char *interface; /* where addresses go; "" = this node holds none */
    const char *own;       /* this node's service address, "" if none */
    const char *port;      /* of the NBD listener on each address */
    unsigned grace_ms;     /* bounds the release window of an address given up */
};

struct service;

/* Also removes this node's own address from the interface, where a vsand
 * killed before it could give it up left it: until the cluster gives it
 * back, the host must not answer for it beside the node serving it. */
int service_new(const struct service_params *p, struct service **out);
/* Gives up every address held and takes no more: when stopping, once the
 * NBD server has shut down (its clients got ESHUTDOWN from its own
 * shutdown) and before this node leaves the group, so that the address is
 * gone from here before a survivor adds it. */
void service_close(struct service *s);
/* After the policing protocol has stopped. */
void service_free(struct service *s);

/* ctx: a struct service. */
extern const struct policing_service_ops service_ops;

#endif
