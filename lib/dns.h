/*
 * dns.h - asynchronous DNS on a libevent loop: MX (RFC 5321 section 5.1 done for the caller),
 * addresses (A + AAAA in parallel), A, TXT (RFC 7208 joining) and PTR lookups, through c-ares.
 *
 *   static void got_mx(struct dns_result *res, void *arg)
 *   {
 *       if (res->status == DNS_OK)
 *           for (size_t i = 0; i < res->n; i++)
 *               try_host(arg, res->mx[i].host);     // preference order, ties shuffled
 *   }
 *   struct dns_query *q = dns_mx(dns, "example.org", got_mx, ctx);
 *
 * Contract, for every lookup function:
 * - It never blocks and never fails to start: its callback is called exactly once, always from
 *   the event loop, never from inside the call that started the lookup (an invalid name or an
 *   IP literal is answered on the next loop turn too).
 * - The returned handle is valid until the callback is entered or dns_cancel() is called.
 *   dns_cancel() guarantees the callback is never called (its arg may be freed right after).
 * - dns_free() calls the callback of every lookup still pending with DNS_CANCELLED, from inside
 *   dns_free(); such a callback must not use that struct dns again.
 * - Every lookup ends within timeout_ms x tries (the dns_new() arguments) with DNS_TEMPFAIL at
 *   the latest, whatever c-ares's own retry schedule would do.
 * - The result belongs to the library and is freed after the callback returns. Each array in it
 *   (mx, addrs, a, txt, names) is a single malloc'd block that also holds its strings: the
 *   callback may keep one by copying the pointer and setting the field to NULL, and later free()
 *   it.
 * - Names in results are lower case without a trailing dot; names given are compared
 *   case-insensitively, and one trailing dot is accepted.
 */
#ifndef MXG_DNS_H
#define MXG_DNS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "conf.h"

struct event_base;
struct dns;
struct dns_query;

enum dns_status {
    DNS_OK,         /* records found (for MX: also an implicit MX) */
    DNS_NOTFOUND,   /* no such records: NXDOMAIN, or (except for MX) no record of the type asked;
                     * also a name that is not a valid DNS name */
    DNS_NULLMX,     /* MX only: the domain says it accepts no mail (RFC 7505 null MX) */
    DNS_TEMPFAIL,   /* SERVFAIL, REFUSED, timeout, network error, malformed answer: try later */
    DNS_CANCELLED,  /* dns_free() ran before the answer came */
};

/* One mail exchanger. */
struct dns_mx {
    const char *host;   /* lower case, no trailing dot */
    unsigned pref;      /* preference: lower is tried first */
};

/* One TXT record: its character-strings joined without separator (RFC 7208 section 3.3). */
struct dns_txt {
    const char *data;   /* NUL-terminated for convenience; may hold NULs, so use len */
    size_t len;
};

struct dns_result {
    enum dns_status status;
    bool nxdomain;              /* DNS_NOTFOUND: the name does not exist at all (else: no record
                                 * of that type, or an invalid name) */
    const char *error;          /* every status but DNS_OK: a short reason for logs (a
                                 * constant string; not network text) */
    size_t n;                   /* number of entries in the one array below that applies */
    /* dns_mx(): sorted by preference, equal preferences in random order, duplicates dropped */
    struct dns_mx *mx;
    bool implicit;              /* dns_mx(): no MX records; mx[0] is the domain itself, pref 0 */
    /* dns_addr(): addresses with the port set, IPv6 first then IPv4 (within a family in the
     * order of the answer) */
    struct sockaddr_storage *addrs;
    /* dns_a(): IPv4 addresses in the order of the answer */
    struct in_addr *a;
    /* dns_txt(): one entry per TXT record, in the order of the answer */
    struct dns_txt *txt;
    /* dns_ptr(): host names, in the order of the answer, duplicates dropped */
    char **names;
    unsigned ttl;               /* dns_a(), dns_addr(): smallest TTL of the records returned */
};

/* Tries per server of the roles' resolvers (dns.timeout is the wait of one try). */
#define DNS_TRIES 2

/* Called exactly once per lookup (see the contract above). */
typedef void dns_cb(struct dns_result *res, void *arg);

/*
 * A resolver on base. servers: "ip", "ip:port" or "[ipv6]:port" entries (port 53 by default);
 * NULL or empty = the servers of /etc/resolv.conf. timeout_ms: how long one try waits for an
 * answer (c-ares doubles it on each later round over the servers); tries: attempts per server.
 * NULL with a message in err for a bad server, bound or c-ares failure.
 */
struct dns *dns_new(struct event_base *base, const struct strlist *servers, long long timeout_ms,
                    int tries, struct buf *err) __attribute__((warn_unused_result));
/* Cancels everything pending (callbacks get DNS_CANCELLED) and frees. NULL is a no-op. */
void dns_free(struct dns *dns);

/*
 * The mail exchangers of domain, RFC 5321 section 5.1: DNS_OK with the MX list, or with an
 * implicit MX (the domain itself, pref 0, implicit = true) when the domain exists without MX
 * records; DNS_NOTFOUND for NXDOMAIN; DNS_NULLMX when the only MX targets are "." (RFC 7505; a
 * "." target next to real ones is dropped and the rest used); DNS_TEMPFAIL otherwise.
 */
struct dns_query *dns_mx(struct dns *dns, const char *domain, dns_cb *cb, void *arg);
/*
 * The addresses of host (A and AAAA queried in parallel; family AF_INET or AF_INET6 asks for
 * one only, AF_UNSPEC for both), each with port set. An IP literal is answered as itself. DNS_OK
 * as soon as one family has addresses, even if the other failed; else DNS_TEMPFAIL if either
 * failed temporarily; else DNS_NOTFOUND (nxdomain when the name does not exist).
 */
struct dns_query *dns_addr(struct dns *dns, const char *host, int port, int family, dns_cb *cb,
                           void *arg);
/* The A records of name (a DNSBL query such as "2.0.0.127.zen.example"). */
struct dns_query *dns_a(struct dns *dns, const char *name, dns_cb *cb, void *arg);
/* The TXT records of name, each record's strings joined. */
struct dns_query *dns_txt(struct dns *dns, const char *name, dns_cb *cb, void *arg);
/* The PTR names of an IPv4 or IPv6 address (an IPv4-mapped IPv6 address counts as IPv4). */
struct dns_query *dns_ptr(struct dns *dns, const struct sockaddr *sa, dns_cb *cb, void *arg);
/* Stops a pending lookup: its callback will not be called. NULL is a no-op. */
void dns_cancel(struct dns_query *q);

/*
 * Appends the reversed form of an address and then ".suffix": "4.3.2.1.zen.example" for
 * 1.2.3.4 (RFC 5782 DNSBL form), 32 nibbles for IPv6 (RFC 3596). suffix NULL means the reverse
 * tree: "in-addr.arpa" or "ip6.arpa". An IPv4-mapped IPv6 address counts as IPv4. False (out
 * untouched) for another address family.
 */
bool dns_reverse_name(const struct sockaddr *sa, const char *suffix, struct buf *out);

/*
 * Sorts by preference and shuffles each run of equal preferences (RFC 5321 section 5.1).
 * rnd(bound, arg) returns a number below bound; NULL uses arc4random_uniform().
 */
void dns_mx_sort(struct dns_mx *mx, size_t n, uint32_t (*rnd)(uint32_t bound, void *arg),
                 void *rnd_arg);

#endif
