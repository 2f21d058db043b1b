/*
 * netaddr.c - listener specs ("host:port", "[v6]:port", "*:port") to socket addresses, printable
 * socket addresses, and opening listening sockets (see netaddr.h).
 *
 * Host names are resolved once, at start-up, with getaddrinfo (AI_PASSIVE), and every address
 * they yield is bound. "*" means both wildcards, 0.0.0.0 and [::]; the IPv6 socket is opened with
 * IPV6_V6ONLY so the two do not collide. IPv6 text follows RFC 4291 / RFC 5952 via inet_ntop;
 * bracketed literals follow RFC 3986. Failures are returned with a message that names the spec
 * or the address; nothing here aborts except running out of memory.
 */
#include "netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "mem.h"

/* How much of a bad spec an error message quotes. */
#define QUOTE_MAX 120

/* Parses a decimal port 0..65535; no sign, no white space. */
static bool parse_port(const char *s, int *port)
{
    size_t n = strspn(s, "0123456789");
    if (n == 0 || n > 5 || s[n] != '\0')
        return false;
    int v = atoi(s);
    if (v > 65535)
        return false;
    *port = v;
    return true;
}

bool netaddr_split(const char *spec, char **host, int *port, int defport)
{
    const char *hs = spec, *ps = NULL;
    size_t hn;
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (close == NULL)
            return false;
        hs = spec + 1;
        hn = (size_t)(close - hs);
        /* Brackets are for IPv6 literals only (RFC 3986 section 3.2.2). */
        char lit[INET6_ADDRSTRLEN];
        struct in6_addr a6;
        if (hn >= sizeof lit)
            return false;
        memcpy(lit, hs, hn);
        lit[hn] = '\0';
        if (inet_pton(AF_INET6, lit, &a6) != 1)
            return false;
        if (close[1] == ':')
            ps = close + 2;
        else if (close[1] != '\0')
            return false;
    } else {
        const char *colon = strchr(spec, ':');
        if (colon != NULL && strchr(colon + 1, ':') == NULL) {
            hn = (size_t)(colon - spec);
            ps = colon + 1;
        } else {
            /* No colon, or a bare IPv6 address whose colons are not a port separator. */
            hn = strlen(spec);
        }
    }
    int p = defport;
    if (ps != NULL && !parse_port(ps, &p))
        return false;
    *host = xstrndup(hs, hn);
    *port = p;
    return true;
}

static void append_addr(struct netaddr **out, size_t *n, const void *sa, socklen_t len)
{
    *out = xrealloc(*out, (*n + 1) * sizeof **out);
    struct netaddr *a = &(*out)[*n];
    memset(a, 0, sizeof *a);
    memcpy(&a->ss, sa, len);
    a->len = len;
    (*n)++;
}

/* Whether one of v[0..n) is sa; /etc/hosts may list a name's address twice. */
static bool already_have(const struct netaddr *v, size_t n, const struct sockaddr *sa, socklen_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (v[i].len == len && memcmp(&v[i].ss, sa, len) == 0)
            return true;
    }
    return false;
}

/* Starts an error message about spec: "WHAT 'SPEC'". */
static void spec_error(struct buf *err, const char *what, const char *spec)
{
    buf_printf(err, "%s '", what);
    buf_append_sanitized(err, spec, strlen(spec), QUOTE_MAX);
    buf_puts(err, "'");
}

bool netaddr_parse_listen(const char *spec, struct netaddr **out, size_t *n, struct buf *err)
{
    char *host;
    int port;
    if (!netaddr_split(spec, &host, &port, 0)) {
        spec_error(err, "bad listen address", spec);
        buf_puts(err, ": expected host:port, [ipv6]:port or *:port");
        return false;
    }
    bool ok = false;
    if (port < 1) {
        spec_error(err, "bad listen address", spec);
        buf_puts(err, ": a port from 1 to 65535 is required");
    } else if (host[0] == '\0') {
        spec_error(err, "bad listen address", spec);
        buf_puts(err, ": missing host (use *:port for every address)");
    } else if (strcmp(host, "*") == 0 && spec[0] != '[') {
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port) };
        sin.sin_addr.s_addr = htonl(INADDR_ANY);
        sin6.sin6_addr = in6addr_any;
        append_addr(out, n, &sin, sizeof sin);
        append_addr(out, n, &sin6, sizeof sin6);
        ok = true;
    } else {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = spec[0] == '[' ? AF_INET6 : AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV | (spec[0] == '[' ? AI_NUMERICHOST : 0);
        char service[12];
        snprintf(service, sizeof service, "%d", port);
        int rc = getaddrinfo(host, service, &hints, &res);
        if (rc != 0) {
            spec_error(err, "cannot resolve listen address", spec);
            buf_printf(err, ": %s", rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        } else {
            size_t first = *n;
            for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
                if ((ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
                    && !already_have(*out + first, *n - first, ai->ai_addr, ai->ai_addrlen))
                    append_addr(out, n, ai->ai_addr, ai->ai_addrlen);
            }
            freeaddrinfo(res);
            ok = true;
        }
    }
    free(host);
    return ok;
}

void netaddr_ip_string(const struct sockaddr *sa, char *out, size_t outlen)
{
    char text[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, text, sizeof text);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            inet_ntop(AF_INET, &a->s6_addr[12], text, sizeof text);
        else
            inet_ntop(AF_INET6, a, text, sizeof text);
    } else if (sa->sa_family == AF_UNIX) {
        snprintf(out, outlen, "unix:%s", ((const struct sockaddr_un *)sa)->sun_path);
        return;
    } else {
        snprintf(out, outlen, "(family %d)", (int)sa->sa_family);
        return;
    }
    snprintf(out, outlen, "%s", text);
}

void netaddr_string(const struct sockaddr *sa, char *out, size_t outlen)
{
    char ip[NETADDR_STRLEN];
    netaddr_ip_string(sa, ip, sizeof ip);
    if (sa->sa_family == AF_INET) {
        snprintf(out, outlen, "%s:%u", ip, ntohs(((const struct sockaddr_in *)sa)->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        bool v4 = IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr);
        snprintf(out, outlen, v4 ? "%s:%u" : "[%s]:%u", ip, ntohs(sin6->sin6_port));
    } else {
        snprintf(out, outlen, "%s", ip);
    }
}

int netaddr_listen(const struct netaddr *a, int backlog, struct buf *err)
{
    const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
    const char *step = "socket";
    int one = 1;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    step = "setsockopt";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        goto fail;
    /* Without V6ONLY, [::] would also take the IPv4 port and "*" could not bind 0.0.0.0 too. */
    if (sa->sa_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
        goto fail;
    step = NULL;
    if (bind(fd, sa, a->len) < 0 || listen(fd, backlog) < 0)
        goto fail;
    return fd;

fail:;
    int saved = errno;
    char where[NETADDR_STRLEN];
    netaddr_string(sa, where, sizeof where);
    buf_printf(err, "cannot listen on %s: ", where);
    if (step != NULL)
        buf_printf(err, "%s: ", step);
    buf_puts(err, strerror(saved));
    if (fd >= 0)
        close(fd);
    errno = saved;
    return -1;
}
