/* netaddr.c - HOST:PORT addresses to sockets (see netaddr.h). */
#include "common/netaddr.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
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

/* A socket for the first address of addr that use() accepts: its fd, or
 * the last -errno. */
static int first_socket(const char *addr, bool passive, const char *who,
                        int (*use)(int fd, const struct addrinfo *ai, int arg), int arg)
{
    struct addrinfo *res;
    int fd = netaddr_resolve(addr, passive, &res, who);
    if (fd < 0)
        return fd;
    fd = -EADDRNOTAVAIL;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            fd = -errno;
            continue;
        }
        if (use(fd, ai, arg) == 0)
            break;
        int e = -errno;
        close(fd);
        fd = e;
    }
    freeaddrinfo(res);
    return fd;
}

static int bind_listen(int fd, const struct addrinfo *ai, int backlog)
{
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    return bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? listen(fd, backlog) : -1;
}

static int timed_connect(int fd, const struct addrinfo *ai, int timeout_ms)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return connect(fd, ai->ai_addr, ai->ai_addrlen);
}

int netaddr_listen(const char *addr, int backlog, const char *who)
{
    return first_socket(addr, true, who, bind_listen, backlog);
}

int netaddr_connect(const char *addr, unsigned timeout_ms, const char *who)
{
    return first_socket(addr, false, who, timed_connect, (int)timeout_ms);
}
