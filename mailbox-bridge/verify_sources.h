/*
 * verify_sources.h - recipient verification sources that ask the mailbox tier (lib/verify.h has
 * the interface and its contract): an LMTP RCPT probe, Apache James WebAdmin, and LDAP. Each is
 * asynchronous on the caller's libevent loop, bounded by its timeout, and answers VERIFY_TEMPFAIL
 * when the tier cannot be asked.
 */
#ifndef MXG_VERIFY_SOURCES_H
#define MXG_VERIFY_SOURCES_H

#include "buf.h"
#include "verify.h"

struct event_base;

/*
 * verify_lmtp.c: asks the mailbox tier's LMTP server (RFC 2033) whether it takes RCPT TO for the
 * address: LHLO, MAIL FROM:<>, RCPT TO:<address>, then RSET; the connection is kept for the next
 * probe. 2xx: EXISTS; 5xx: DUNNO; 4xx, a connection failure, a malformed reply or the timeout:
 * TEMPFAIL. target(domain, arg) names the server for the address's domain: "host[:port]" (port 24)
 * or "unix:/path"; NULL or "" answers DUNNO. lhlo_name is copied. An idle connection is closed
 * (QUIT) after idle_ms; VERIFY_LMTP_IDLE_MS is what the edge uses.
 */
#define VERIFY_LMTP_IDLE_MS 30000
typedef const char *verify_target_fn(const char *domain, void *arg);
struct verify_source *verify_lmtp_new(struct event_base *base, verify_target_fn *target, void *target_arg,
                                      const char *lhlo_name, long long timeout_ms, long long idle_ms);

/*
 * verify_webadmin.c: HEAD {url}/users/{address} against Apache James's WebAdmin API (libcurl):
 * 200 or 204: EXISTS; 404: DUNNO; anything else, a connection failure or the timeout: TEMPFAIL.
 * url is "http[s]://host:port[/prefix]"; token, when not empty, is sent as "Authorization:
 * Bearer <token>". NULL with err for an unusable url or a libcurl failure.
 */
struct verify_source *verify_webadmin_new(struct event_base *base, const char *url, const char *token,
                                          long long timeout_ms, struct buf *err);

/*
 * verify_ldap.c: searches LDAP (libldap) under search_base with filter_template, in which %s is
 * the address, %u its local part, %d its domain and %% a percent sign, each value escaped as RFC
 * 4515 says. One entry or more: EXISTS; none: DUNNO; a server down, an error result or the
 * timeout: TEMPFAIL. bind_dn "" binds anonymously. NULL with err for a bad uri or template.
 */
struct verify_source *verify_ldap_new(struct event_base *base, const char *uri, const char *bind_dn,
                                      const char *bind_password, const char *search_base,
                                      const char *filter_template, long long timeout_ms, struct buf *err);

#endif
