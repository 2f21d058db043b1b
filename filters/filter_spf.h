/*
 * filter_spf.h - SPF checks (RFC 7208) of the HELO and MAIL FROM identities, off the event loop,
 * and their rendering as an Authentication-Results resinfo (RFC 8601).
 *
 *   static void spf_done(const struct spf_answer *a, void *arg)
 *   {
 *       struct edge_tx *tx = arg;
 *       tx->spf_query = NULL;
 *       if (a->mailfrom == SPF_RES_FAIL)
 *           reply(tx, 550, a->explanation);     // copy it: a is freed after this returns
 *   }
 *   tx->spf_query = spf_check(checker, client, helo, sender, spf_done, tx);
 *   ...
 *   spf_cancel(tx->spf_query);                  // the transaction went away first
 *
 * libspf2 is synchronous, so every check runs on a worker thread of the workq given to
 * spf_checker_new(), with its own libspf2 server and its own DNS resolver state (see
 * filter_spf.c); done() is called on the loop thread. DNS goes to the operator's servers (the
 * dns.servers setting) or, when none are given, to those of /etc/resolv.conf.
 *
 * All functions are called on the loop thread.
 */
#ifndef MXG_FILTER_SPF_H
#define MXG_FILTER_SPF_H

#include <sys/socket.h>

#include "buf.h"
#include "conf.h"

struct workq;
struct spf_checker;
struct spf_query;

/* The results of RFC 7208 section 2.6. */
enum spf_result {
    SPF_RES_NONE,
    SPF_RES_NEUTRAL,
    SPF_RES_PASS,
    SPF_RES_FAIL,
    SPF_RES_SOFTFAIL,
    SPF_RES_TEMPERROR,
    SPF_RES_PERMERROR,
};

/*
 * What one spf_check() found. The struct and its strings belong to the checker and are freed
 * when done() returns: a caller that keeps a string copies it.
 */
struct spf_answer {
    enum spf_result helo;       /* the HELO identity (RFC 7208 section 2.3); none when the HELO
                                 * name is an address literal or not a multi-label domain */
    enum spf_result mailfrom;   /* the MAIL FROM identity (section 2.4); for a null reverse-path
                                 * this is postmaster@HELO, i.e. the HELO result */
    char *explanation;          /* only when a result is fail and the domain published an exp=
                                 * text (section 6.2): expanded, its first 200 bytes (a cut marked
                                 * "..."), printable ASCII with any other byte written \xHH and
                                 * '\' written "\\"; the MAIL FROM one when that failed, else the
                                 * HELO one. NULL otherwise */
    char *mailfrom_domain;      /* the domain the MAIL FROM check was about: the sender's domain
                                 * part, or the HELO name for a null reverse-path; never NULL */
};

/* "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror" (RFC 8601 section
 * 2.7.2); a value outside the enum reads "temperror", the result that decides nothing. */
const char *spf_result_name(enum spf_result r);

/*
 * A checker whose checks run on wq (not owned; it must outlive the checker).
 * dns_servers: "ip", "ip:port" or "[ipv6]:port" entries (port 53 by default); NULL or empty =
 * the servers of /etc/resolv.conf. receiver_name: this host's name, the %{r} macro (NULL or ""
 * = "unknown", RFC 7208 section 7.3). timeout_ms: the most one identity's evaluation may take,
 * all its DNS queries together (RFC 7208 section 4.6.4): past it the result is temperror.
 * NULL with a message in err for no wq, a bad server, a timeout outside 1 ms..1 h, or a
 * resolver or libspf2 server that cannot be set up.
 */
struct spf_checker *spf_checker_new(struct workq *wq, const struct strlist *dns_servers,
                                    const char *receiver_name, long long timeout_ms,
                                    struct buf *err) __attribute__((warn_unused_result));
/*
 * Frees the checker. Only once no check of it is running or queued on the workq any more (the
 * workq drained, or workq_free() was called): checks that workq_free() dropped before they ran
 * are freed here, without their done() being called. NULL is a no-op.
 */
void spf_checker_free(struct spf_checker *c);

/* Called exactly once per check that was not cancelled, on the loop thread. */
typedef void spf_done_fn(const struct spf_answer *a, void *arg);

/*
 * Starts the checks of the HELO and MAIL FROM identities for a client at client (AF_INET or
 * AF_INET6; an IPv4-mapped IPv6 address counts as IPv4; any other family gives none for both).
 * helo: the EHLO/HELO argument as given. sender: the MAIL FROM address without the angle
 * brackets, "" for the null reverse-path (then the MAIL FROM identity is postmaster@helo, RFC
 * 7208 section 2.4). All three are copied. done(a, arg) is called later on the loop thread,
 * never from inside spf_check(). The handle is valid until done() is entered or spf_cancel()
 * is called. Never fails (out of memory aborts).
 */
struct spf_query *spf_check(struct spf_checker *c, const struct sockaddr *client, const char *helo,
                            const char *sender, spf_done_fn *done, void *arg);
/*
 * done() will not be called (arg may be freed right away). A check that has not started yet
 * is skipped; a running one finishes on its worker and is freed then. NULL is a no-op.
 */
void spf_cancel(struct spf_query *q);

/*
 * Appends the Authentication-Results resinfo for SPF (RFC 8601 section 2.7.2): "spf=pass
 * smtp.mailfrom=example.test" with the MAIL FROM result and the sender's domain; for a null
 * sender ("") "spf=pass smtp.helo=mx.example.test" with the HELO result and name. A value that
 * is not an RFC 2045 token is written as a quoted-string ('"' and '\' escaped, bytes outside
 * printable ASCII written as '?'), cut to 255 bytes with "..." marking the cut.
 */
void spf_auth_results(const struct spf_answer *a, const char *sender, const char *helo,
                      struct buf *out);

#endif
