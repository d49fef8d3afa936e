/* netaddr.c - HOST:PORT addresses to sockets (see netaddr.h). */
#include "vsan/netaddr.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <qb/qblog.h>

int netaddr_split(const char *addr, char *host, size_t hl, char *port, size_t pl)
{
    const char *colon;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':' || (size_t)(end - addr - 1) >= hl)
            return -EINVAL;
        snprintf(host, hl, "%.*s", (int)(end - addr - 1), addr + 1);
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= hl)
            return -EINVAL;
        snprintf(host, hl, "%.*s", (int)(colon - addr), addr);
    }
    if (colon[1] == '\0' || strlen(colon + 1) >= pl)
        return -EINVAL;
    snprintf(port, pl, "%s", colon + 1);
    return 0;
}

int netaddr_resolve(const char *addr, bool passive, struct addrinfo **res, const char *who)
{
    char host[128], port[16];
    if (netaddr_split(addr, host, sizeof host, port, sizeof port) < 0) {
        qb_log(LOG_ERR, "%s %s: not HOST:PORT", who, addr);
        return -EINVAL;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)};
    int g = getaddrinfo(host[0] ? host : NULL, port, &hints, res);
    if (g != 0) {
        qb_log(LOG_ERR, "%s %s: %s", who, addr, gai_strerror(g));
        return -EINVAL;
    }
    return 0;
}

int netaddr_listen(const char *addr, int backlog, const char *who)
{
    struct addrinfo *res;
    int fd = netaddr_resolve(addr, true, &res, who);
    if (fd < 0)
        return fd;
    fd = -EADDRNOTAVAIL;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            fd = -errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0)
            break;
        int e = -errno;
        close(fd);
        fd = e;
    }
    freeaddrinfo(res);
    return fd;
}
