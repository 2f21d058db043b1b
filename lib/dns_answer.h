/*
 * dns_answer.h - what a DNS answer means: c-ares answers turned into struct dns_result.
 *
 * The private half of dns.h: dns.c runs the queries, these functions apply the RFC rules to
 * what comes back (MX order, implicit and null MX, TXT joining, PTR names, the merging of A
 * and AAAA). They work on a raw answer, so the tests can feed them crafted packets. status is
 * the c-ares status of the query (ARES_SUCCESS, ARES_ENODATA, ...); abuf may be NULL when it is
 * not ARES_SUCCESS. Each fills r (which must be empty: zeroed or cleared) completely.
 */
#ifndef MXG_DNS_ANSWER_H
#define MXG_DNS_ANSWER_H

#include <stdbool.h>
#include <stddef.h>

#include "dns.h"

#define DNS_NAME_MAX 253    /* RFC 1035 section 2.3.4, in text form without the final dot */

/*
 * Copies a name to be queried into out (lower case, one final dot dropped); false if it is not
 * a DNS name: empty, an empty label, a label over 63 or a name over 253 octets, or a byte that
 * is a control, a space, a backslash (c-ares would read an escape) or not ASCII.
 */
bool dns_name_normalize(const char *in, char out[DNS_NAME_MAX + 1]);

/* Frees the arrays of r and zeroes it. */
void dns_result_clear(struct dns_result *r);
/* Clears r and sets a failure. error must outlive r (a string constant). */
void dns_result_fail(struct dns_result *r, enum dns_status st, bool nxdomain, const char *error);

/* An MX answer for domain (normalized), RFC 5321 section 5.1 and RFC 7505 (see dns_mx()). */
void dns_answer_mx(struct dns_result *r, const char *domain, int status, const unsigned char *abuf,
                   int alen);
/* An A (type 1) or AAAA (type 28) answer into r->addrs, with port 0. */
void dns_answer_addrs(struct dns_result *r, int type, int status, const unsigned char *abuf,
                      int alen);
/* An A answer into r->a. */
void dns_answer_a(struct dns_result *r, int status, const unsigned char *abuf, int alen);
/* A TXT answer: one entry per record, its strings joined (RFC 7208 section 3.3). */
void dns_answer_txt(struct dns_result *r, int status, const unsigned char *abuf, int alen);
/* A PTR answer: the names, lower case, duplicates dropped. */
void dns_answer_ptr(struct dns_result *r, int status, const unsigned char *abuf, int alen);
/*
 * Merges the per-family results of one dns_addr() into r (see there): IPv6 first, port set.
 * A NULL part is a query that did not answer before the deadline. The parts are not changed.
 */
void dns_answer_merge_addrs(struct dns_result *r, const struct dns_result *const *parts, size_t n,
                            int port);

#endif
