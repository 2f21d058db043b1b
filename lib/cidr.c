/*
 * cidr.c - IPv4/IPv6 networks in CIDR notation (RFC 4632, RFC 4291 section 2.3) and matching
 * peer addresses against them (see cidr.h).
 *
 * Addresses are parsed with inet_pton, so only the strict forms are accepted: dotted quads with
 * four parts, RFC 4291 text for IPv6. Host bits of the given address are cleared, so
 * "192.0.2.7/24" means 192.0.2.0/24. A peer arriving as an IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d, RFC 4291 section 2.5.5.2, seen on dual-stack sockets) is matched as IPv4.
 * A cidr_list owns its array. Bad input is reported by returning false, never by aborting.
 */
#include "cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

/* How much of a bad entry an error message quotes. */
#define QUOTE_MAX 120

static const unsigned char v4mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* Clears every bit of addr past the first prefix bits. */
static void clear_host_bits(unsigned char *addr, size_t len, unsigned prefix)
{
    for (size_t i = 0; i < len; i++) {
        unsigned keep = prefix > i * 8 ? prefix - (unsigned)i * 8 : 0;
        if (keep >= 8)
            continue;
        addr[i] &= (unsigned char)(0xff00u >> keep);
    }
}

bool cidr_parse(const char *s, struct cidr *out)
{
    char text[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
    bool bracketed = alen >= 2 && s[0] == '[' && s[alen - 1] == ']';
    if (bracketed) {
        s++;
        alen -= 2;
    }
    if (alen == 0 || alen >= sizeof text)
        return false;
    memcpy(text, s, alen);
    text[alen] = '\0';

    struct cidr c;
    memset(&c, 0, sizeof c);
    unsigned maxprefix;
    if (inet_pton(AF_INET, text, c.addr) == 1 && !bracketed) {
        c.family = AF_INET;
        maxprefix = 32;
    } else if (inet_pton(AF_INET6, text, c.addr) == 1) {
        c.family = AF_INET6;
        maxprefix = 128;
    } else {
        return false;
    }

    c.prefix = maxprefix;
    if (slash != NULL) {
        const char *p = slash + 1;
        size_t n = strspn(p, "0123456789");
        if (n == 0 || n > 3 || p[n] != '\0')
            return false;
        c.prefix = (unsigned)atoi(p);
        if (c.prefix > maxprefix)
            return false;
    }
    clear_host_bits(c.addr, c.family == AF_INET ? 4 : 16, c.prefix);
    *out = c;
    return true;
}

bool cidr_list_parse(const struct strlist *l, struct cidr_list *out, struct buf *err)
{
    out->v = l->n > 0 ? xcalloc(l->n, sizeof *out->v) : NULL;
    out->n = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (!cidr_parse(l->v[i], &out->v[i])) {
            buf_puts(err, "bad network '");
            buf_append_sanitized(err, l->v[i], strlen(l->v[i]), QUOTE_MAX);
            buf_putc(err, '\'');
            cidr_list_free(out);
            return false;
        }
        out->n++;
    }
    return true;
}

void cidr_list_free(struct cidr_list *l)
{
    if (l == NULL)
        return;
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* Whether the first prefix bits of a and b agree. */
static bool prefix_equal(const unsigned char *a, const unsigned char *b, unsigned prefix)
{
    size_t whole = prefix / 8;
    if (memcmp(a, b, whole) != 0)
        return false;
    unsigned rest = prefix % 8;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff00u >> rest);
    return (a[whole] & mask) == (b[whole] & mask);
}

bool cidr_match(const struct cidr *c, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        return c->family == AF_INET
            && prefix_equal(c->addr, (const unsigned char *)&sin->sin_addr, c->prefix);
    }
    if (sa->sa_family == AF_INET6) {
        const unsigned char *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        if (c->family == AF_INET6)
            return prefix_equal(c->addr, a, c->prefix);
        return c->family == AF_INET && memcmp(a, v4mapped_prefix, sizeof v4mapped_prefix) == 0
            && prefix_equal(c->addr, a + 12, c->prefix);
    }
    return false;
}

bool cidr_list_match(const struct cidr_list *l, const struct sockaddr *sa)
{
    for (size_t i = 0; i < l->n; i++) {
        if (cidr_match(&l->v[i], sa))
            return true;
    }
    return false;
}
