/*
 * filter_dnsbl.h - weighted DNSBL/DNSWL scoring of a connecting client (postscreen-style).
 *
 * Sites are written as Postfix's postscreen_dnsbl_sites: `domain[=filter][*weight]`.
 *   filter  a dotted quad pattern; each octet is a number (0..255), or a bracketed list of
 *           numbers and ranges separated by ';': 127.0.[2..15].[0;2..3]. No filter: any answer.
 *   weight  an integer from -100000 to 100000, default 1; negative for allowlists (DNSWL).
 * Several entries may name the same domain with different filters: the domain is queried once
 * per check, and each entry adds its weight once if any A answer matches its filter.
 *
 *   struct dnsbl_sites *s = dnsbl_sites_parse(&conf_list, &err);
 *   struct dnsbl_check *c = dnsbl_check_start(dns, s, (struct sockaddr *)&peer, got_score, sess);
 *   ...greet wait over:  dnsbl_check_finish_now(c);     session gone:  dnsbl_check_cancel(c);
 *
 * What an answer means (RFC 5782):
 * - A records inside 127.0.0.0/8 but outside 127.255.255.0/24: listed, if an entry's filter
 *   matches.
 * - Any A record outside 127.0.0.0/8, or inside 127.255.255.0/24 (Spamhaus's "query refused",
 *   such as 127.255.255.254 for a public resolver): the whole answer of that domain is an error,
 *   never a listing (a refusal or a wildcard says nothing about the client). Logged once per
 *   check with the domain, counted in errors, ignored for the score.
 * - NXDOMAIN or no A record: not listed.
 * - SERVFAIL and other temporary failures: counted in errors; a DNS timeout, or an answer that
 *   had not come when the check ended (finish_now, dns_free), in timeouts. Not listed.
 */
#ifndef MXG_FILTER_DNSBL_H
#define MXG_FILTER_DNSBL_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "buf.h"
#include "conf.h"
#include "dns.h"

/* A parsed site list; immutable once parsed, so any number of checks may share it. */
struct dnsbl_sites;
/* One client being checked against every domain of a site list. */
struct dnsbl_check;

/*
 * Parses entries (one site each, in order); the result owns copies of everything it needs and is
 * freed with dnsbl_sites_free(). On a bad entry: NULL, and err gets "entry 'TEXT': reason" (the
 * first bad entry). An empty list is an error too ("no DNSBL sites"): a listener without DNSBL
 * screening simply starts no checks.
 */
struct dnsbl_sites *dnsbl_sites_parse(const struct strlist *entries, struct buf *err)
    __attribute__((warn_unused_result));
/* NULL is a no-op. No check may still be using s. */
void dnsbl_sites_free(struct dnsbl_sites *s);
/*
 * Appends the parsed sites in canonical form, separated by single spaces: domain in lower case
 * without a final dot, each octet as a number or a sorted bracket of values and ranges, the
 * weight always written ("zen.test=127.0.[2..15].[0;2..3]*-2 bl.test*1").
 */
void dnsbl_sites_format(const struct dnsbl_sites *s, struct buf *out);
/* Whether entry number i (in the order given) accepts answer a; no filter accepts anything. */
bool dnsbl_sites_match(const struct dnsbl_sites *s, size_t i, struct in_addr a);

/* The outcome of one check. */
struct dnsbl_verdict {
    int score;              /* sum of the weights of the matching entries */
    struct buf reasons;     /* "domain=answer*weight" per matching entry, in site order,
                             * space-separated: "zen.test=127.0.0.2*3 wl.test=127.0.10.1*-2" */
    unsigned listed;        /* matching entries (allowlist entries included) */
    unsigned errors;        /* domains that failed: bad answer, SERVFAIL, REFUSED... */
    unsigned timeouts;      /* domains that did not answer in time (or before the check ended) */
};

/* The verdict is valid during the call only (copy what is needed). */
typedef void dnsbl_done_fn(const struct dnsbl_verdict *v, void *arg);

/*
 * Queries every domain of s for client in parallel (IPv4: reversed octets; IPv6: 32 reversed
 * nibbles; an IPv4-mapped IPv6 address as IPv4), through dns. done is called exactly once, from
 * the event loop (never from inside this call), when every domain has answered, unless the check
 * is cancelled. dns, s and arg must outlive the check; client is copied. A client that is not an
 * IPv4 or IPv6 address is listed nowhere (and the verdict still comes from the loop).
 *
 * The handle is valid until done is entered or dnsbl_check_finish_now() / dnsbl_check_cancel()
 * is called; the check frees itself then (so done must not cancel its own check).
 *
 * dns_free() while a check is pending: the check then ends with what it has, from inside
 * dns_free(): done is called there, the domains that had not answered counted as timeouts, and
 * done must not use that struct dns again. An owner that does not want this cancels its checks
 * before freeing the resolver.
 */
struct dnsbl_check *dnsbl_check_start(struct dns *dns, const struct dnsbl_sites *s,
                                      const struct sockaddr *client, dnsbl_done_fn *done,
                                      void *arg);
/*
 * Calls done now (from inside this call) with what has answered so far, the rest counted as
 * timeouts and their lookups cancelled; then frees c. For the end of the greet wait.
 */
void dnsbl_check_finish_now(struct dnsbl_check *c);
/* Stops c without a verdict: done is never called. NULL is a no-op. */
void dnsbl_check_cancel(struct dnsbl_check *c);

#endif
