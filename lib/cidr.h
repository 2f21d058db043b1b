/*
 * cidr.h - IPv4/IPv6 networks in CIDR notation and matching addresses against a list of them.
 *
 * Accepts "192.0.2.0/24", "2001:db8::/32", a bare address (a /32 or /128), and "[::1]/128".
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d) matches IPv4 networks.
 */
#ifndef MXG_CIDR_H
#define MXG_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "buf.h"
#include "conf.h"

struct cidr {
    int family;                 /* AF_INET or AF_INET6 */
    unsigned char addr[16];     /* network address, host bits cleared */
    unsigned prefix;            /* prefix length */
};

struct cidr_list {
    struct cidr *v;
    size_t n;
};

/* Parses one network; false on bad syntax or a prefix out of range. */
bool cidr_parse(const char *s, struct cidr *out);
/* Parses every entry of l into out; on the first bad entry writes "bad network 'X'" to err. */
bool cidr_list_parse(const struct strlist *l, struct cidr_list *out, struct buf *err)
    __attribute__((warn_unused_result));
void cidr_list_free(struct cidr_list *l);
bool cidr_match(const struct cidr *c, const struct sockaddr *sa);
bool cidr_list_match(const struct cidr_list *l, const struct sockaddr *sa);

#endif
