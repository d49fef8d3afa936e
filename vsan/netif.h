/* netif.h - the few changes vsand makes to the host's network: an IPv4
 * address added to or removed from an interface, and its announcement by
 * gratuitous ARP. vsan/service.c uses them to move service addresses.
 *
 * Addresses go through rtnetlink (RTM_NEWADDR / RTM_DELADDR) by way of
 * libmnl, the way iproute2 does it, rather than by running `ip`: an error
 * comes back as an errno, and nothing depends on PATH or on parsing output.
 * The ARP announcement is an ARP request for the address from the address
 * itself (sender = target, RFC 5227's announcement), broadcast on an
 * AF_PACKET socket: every host on the segment that has the address in its
 * neighbour table points it at this interface's MAC address.
 *
 * Every address added carries a mark of vsand's (the address protocol,
 * IFA_PROTO), so a vsand that starts after a crash finds and removes the
 * ones it held, its own and other nodes' alike.
 *
 * All need CAP_NET_ADMIN (the address) or CAP_NET_RAW (the ARP).
 */
#ifndef VSAN_NETIF_H
#define VSAN_NETIF_H

#include <netinet/in.h>

/* Adds addr/prefix to ifname; an address already there counts as added.
 * 0 or -errno (-ENODEV: no such interface). */
int netif_addr_add(const char *ifname, struct in_addr addr, unsigned prefix);
/* Removes it; an address already gone counts as removed. */
int netif_addr_del(const char *ifname, struct in_addr addr, unsigned prefix);
/* Removes every IPv4 address of ifname that netif_addr_add added, by this
 * process or an earlier one (they carry a mark, IFA_PROTO): what a vsand
 * killed outright left behind. Returns how many, or -errno. At most
 * NETIF_MARKED_MAX go at a time. */
#define NETIF_MARKED_MAX 64
int netif_addr_del_marked(const char *ifname);
/* Broadcasts one gratuitous ARP announcement of addr on ifname. */
int netif_announce(const char *ifname, struct in_addr addr);

#endif
