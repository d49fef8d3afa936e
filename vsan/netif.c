/* netif.c - interface addresses by rtnetlink, gratuitous ARP (netif.h). */
#include "vsan/netif.h"

#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/if_packet.h>
#include <linux/rtnetlink.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The address protocol (IFA_PROTO, Linux 6.1) vsand marks the addresses it
 * adds with, so that it finds them again after a crash: any value above
 * the kernel's own (IFAPROT_KERNEL_*) is the adder's to choose. */
#define NETIF_PROTO_VSAN 0x76

/* One request on a fresh netlink socket, each answer given to cb (NULL:
 * an acknowledgement is all there is), until the last. Returns 0 or the
 * -errno the kernel answered. */
static int netlink_call(struct nlmsghdr *nlh, char *buf, size_t len, mnl_cb_t cb, void *data)
{
    struct mnl_socket *nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (!nl)
        return -errno;
    int r = 0;
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0 ||
        mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
        r = -errno;
    } else {
        unsigned portid = mnl_socket_get_portid(nl);
        for (int more = MNL_CB_OK; more == MNL_CB_OK;) {
            errno = 0; /* a callback that refuses an answer sets none */
            ssize_t n = mnl_socket_recvfrom(nl, buf, len);
            more =
                n < 0 ? MNL_CB_ERROR : mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, portid, cb, data);
            if (more == MNL_CB_ERROR)
                r = errno > 0 ? -errno : -EPROTO;
            if (!cb)
                break;
        }
    }
    mnl_socket_close(nl);
    return r;
}

static int addr_request(uint16_t type, uint16_t flags, const char *ifname, struct in_addr addr,
                        unsigned prefix)
{
    unsigned index = if_nametoindex(ifname);
    if (index == 0)
        return -ENODEV;
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    nlh->nlmsg_seq = (uint32_t)time(NULL);
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof *ifa);
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = (unsigned char)prefix;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    ifa->ifa_index = index;
    mnl_attr_put_u32(nlh, IFA_LOCAL, addr.s_addr);
    mnl_attr_put_u32(nlh, IFA_ADDRESS, addr.s_addr);
    if (type == RTM_NEWADDR)
        mnl_attr_put_u8(nlh, IFA_PROTO, NETIF_PROTO_VSAN);
    return netlink_call(nlh, buf, sizeof buf, NULL, NULL);
}

int netif_addr_add(const char *ifname, struct in_addr addr, unsigned prefix)
{
    int r = addr_request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ifname, addr, prefix);
    return r == -EEXIST ? 0 : r;
}

int netif_addr_del(const char *ifname, struct in_addr addr, unsigned prefix)
{
    int r = addr_request(RTM_DELADDR, 0, ifname, addr, prefix);
    return r == -EADDRNOTAVAIL ? 0 : r;
}

/* The addresses of one interface that carry our mark, as a dump finds them. */
struct marked {
    unsigned index;
    size_t n;
    struct in_addr addr[NETIF_MARKED_MAX];
    unsigned prefix[NETIF_MARKED_MAX];
};

static int marked_attr(const struct nlattr *a, void *data)
{
    const struct nlattr **tb = data;
    uint16_t type = mnl_attr_get_type(a);
    if (mnl_attr_type_valid(a, IFA_MAX) < 0)
        return MNL_CB_OK; /* newer than these headers: not ours to read */
    if ((type == IFA_LOCAL && mnl_attr_validate(a, MNL_TYPE_U32) < 0) ||
        (type == IFA_PROTO && mnl_attr_validate(a, MNL_TYPE_U8) < 0))
        return MNL_CB_ERROR;
    tb[type] = a;
    return MNL_CB_OK;
}

static int marked_one(const struct nlmsghdr *nlh, void *data)
{
    struct marked *m = data;
    const struct ifaddrmsg *ifa = mnl_nlmsg_get_payload(nlh);
    const struct nlattr *tb[IFA_MAX + 1] = {0};
    if (ifa->ifa_family != AF_INET || ifa->ifa_index != m->index)
        return MNL_CB_OK;
    if (mnl_attr_parse(nlh, sizeof *ifa, marked_attr, tb) < 0)
        return MNL_CB_ERROR;
    if (!tb[IFA_LOCAL] || !tb[IFA_PROTO] || mnl_attr_get_u8(tb[IFA_PROTO]) != NETIF_PROTO_VSAN ||
        m->n == NETIF_MARKED_MAX)
        return MNL_CB_OK;
    m->addr[m->n].s_addr = mnl_attr_get_u32(tb[IFA_LOCAL]);
    m->prefix[m->n++] = ifa->ifa_prefixlen;
    return MNL_CB_OK;
}

int netif_addr_del_marked(const char *ifname)
{
    struct marked m = {.index = if_nametoindex(ifname)};
    if (m.index == 0)
        return -ENODEV;
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_GETADDR;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = (uint32_t)time(NULL);
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof *ifa);
    ifa->ifa_family = AF_INET;
    int r = netlink_call(nlh, buf, sizeof buf, marked_one, &m);
    for (size_t i = 0; r == 0 && i < m.n; i++)
        r = netif_addr_del(ifname, m.addr[i], m.prefix[i]);
    return r < 0 ? r : (int)m.n;
}

struct arp_ipv4 {
    struct arphdr h;
    uint8_t sha[ETH_ALEN];
    uint8_t spa[4];
    uint8_t tha[ETH_ALEN];
    uint8_t tpa[4];
} __attribute__((packed));

static int hw_address(int fd, const char *ifname, uint8_t mac[ETH_ALEN])
{
    struct ifreq ifr = {0};
    if (strlen(ifname) >= sizeof ifr.ifr_name)
        return -ENODEV;
    strcpy(ifr.ifr_name, ifname);
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0)
        return -errno;
    if (ifr.ifr_hwaddr.sa_family != ARPHRD_ETHER)
        return -EAFNOSUPPORT;
    memcpy(mac, ifr.ifr_hwaddr.sa_data, ETH_ALEN);
    return 0;
}

int netif_announce(const char *ifname, struct in_addr addr)
{
    unsigned index = if_nametoindex(ifname);
    if (index == 0)
        return -ENODEV;
    int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ARP));
    if (fd < 0)
        return -errno;
    struct arp_ipv4 p = {
        .h = {htons(ARPHRD_ETHER), htons(ETH_P_IP), ETH_ALEN, 4, htons(ARPOP_REQUEST)}};
    int r = hw_address(fd, ifname, p.sha);
    if (r == 0) {
        memcpy(p.spa, &addr.s_addr, 4);
        memcpy(p.tpa, &addr.s_addr, 4);
        struct sockaddr_ll to = {.sll_family = AF_PACKET,
                                 .sll_protocol = htons(ETH_P_ARP),
                                 .sll_ifindex = (int)index,
                                 .sll_halen = ETH_ALEN};
        memset(to.sll_addr, 0xff, ETH_ALEN);
        if (sendto(fd, &p, sizeof p, 0, (struct sockaddr *)&to, sizeof to) < 0)
            r = -errno;
    }
    close(fd);
    return r;
}
