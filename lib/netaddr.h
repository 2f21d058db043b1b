/*
 * netaddr.h - listener and peer addresses: "host:port" specs and printable socket addresses.
 *
 * Listener specs: "127.0.0.1:2525", "[::1]:2525", "*:25" (all IPv4 and IPv6), "0.0.0.0:25",
 * "[::]:25", "localhost:25" (resolved with getaddrinfo at start-up, each address bound).
 */
#ifndef MXG_NETADDR_H
#define MXG_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "buf.h"

struct netaddr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/*
 * Resolves a listener spec into one or more addresses (appended to *out, *n grows; caller frees
 * *out). On failure writes a message naming the spec into err.
 */
bool netaddr_parse_listen(const char *spec, struct netaddr **out, size_t *n, struct buf *err)
    __attribute__((warn_unused_result));
/* Splits "host:port" / "[v6]:port" / "host" (port = defport) without resolving. host is malloc'd. */
bool netaddr_split(const char *spec, char **host, int *port, int defport);
/* "192.0.2.1" or "2001:db8::1" (no port); an IPv4-mapped IPv6 address is printed as IPv4. */
void netaddr_ip_string(const struct sockaddr *sa, char *out, size_t outlen);
/* "192.0.2.1:25" or "[2001:db8::1]:25". */
void netaddr_string(const struct sockaddr *sa, char *out, size_t outlen);
/* Opens a non-blocking, close-on-exec listening TCP socket (SO_REUSEADDR, IPV6_V6ONLY for v6). */
int netaddr_listen(const struct netaddr *a, int backlog, struct buf *err) __attribute__((warn_unused_result));

#define NETADDR_STRLEN 64

#endif
