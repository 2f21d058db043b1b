/*
 * milter_role.h - `mxgate milter`: mxgate's sender checks offered to an existing Postfix (or any
 * MTA speaking the Sendmail milter protocol) through libmilter: DNSBL/DNSWL scoring at connect,
 * SPF at MAIL FROM (RFC 7208), DKIM verification of the content (RFC 6376), and one
 * Authentication-Results header (RFC 8601) in place of any incoming one that claims our
 * authserv-id.
 *
 * Files: milter_main.c (the role: settings, libmilter registration, smfi_main, signals, stop),
 * milter_checks.c (the libmilter callbacks and the per-connection / per-message state),
 * milter_loop.c (the one libevent loop thread that owns DNS, the SPF checker and the DKIM
 * filter, and the hand-off of requests from libmilter's threads to it).
 *
 * Threads: libmilter calls the callbacks synchronously on its own threads (Debian builds it with
 * its worker pool: a poll thread hands each MTA connection with a command waiting to a worker,
 * and starts another worker when none is idle, so a waiting callback holds only its own
 * connection). The filters are asynchronous on a libevent loop. A callback that needs a check
 * queues a request for the loop thread and waits on a condition variable, at most a bound derived
 * from dns.timeout, for the loop-side done callback to fill in the answer. A check that does not
 * answer in time is that check's temperror; the callback goes on (it never hangs libmilter).
 */
#ifndef MXG_MILTER_ROLE_H
#define MXG_MILTER_ROLE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "buf.h"
#include "filter_spf.h"

/* milter_main.c: runs the milter role on the loaded configuration until SIGTERM; exit status. */
int milter_main(void);

/* ---- milter_loop.c: the loop thread and the hand-off ------------------------------------------ */

struct milter_loop;
/* One message's DKIM verification, living on the loop thread (opaque to the callers). */
struct milter_dkim;

/*
 * Builds the resolver, the DNSBL site list (screen.dnsbl_sites, if any), the SPF checker and its
 * worker threads (filters.spf not off) and the DKIM filter (filters.dkim_verify), then starts the
 * loop thread. hostname is the SPF receiver name (%{r}). NULL with the reason in err.
 * Call with SIGTERM, SIGINT and SIGHUP blocked: the threads started here inherit the mask, so
 * libmilter's signal thread is the one that gets them.
 */
struct milter_loop *milter_loop_new(const char *hostname, struct buf *err)
    __attribute__((warn_unused_result));
/*
 * Stops the loop thread and frees everything. From then on the request functions fail at once;
 * none may still be waiting (no libmilter callback may be running). NULL is a no-op.
 */
void milter_loop_free(struct milter_loop *ml);

/* The longest a request function waits (the SPF bound): a stop waits that long for callbacks. */
long long milter_loop_max_wait_ms(void);

bool milter_loop_has_dnsbl(const struct milter_loop *ml);
bool milter_loop_has_spf(const struct milter_loop *ml);
bool milter_loop_has_dkim(const struct milter_loop *ml);

/* The DNSBL/DNSWL score of one client (filter_dnsbl.h's verdict, copied). */
struct milter_dnsbl_answer {
    int score;
    char reasons[512];          /* "domain=answer*weight ..." (cut to fit) */
    unsigned listed, errors, timeouts;
};

/*
 * Scores client against screen.dnsbl_sites; the loop ends the check after dns.timeout with what
 * has answered (the rest counted as timeouts). False when no answer came in time (or the loop is
 * stopping): out is then all zero.
 */
bool milter_loop_dnsbl(struct milter_loop *ml, const struct sockaddr *client,
                       struct milter_dnsbl_answer *out);

/* What one SPF check found (filter_spf.h's answer, copied; strings owned, freed by _clear). */
struct milter_spf_answer {
    enum spf_result helo, mailfrom;
    char *explanation;          /* NULL unless a fail came with an exp= text */
    char *mailfrom_domain;      /* never NULL after milter_loop_spf() */
};

/*
 * Checks the HELO and MAIL FROM identities (sender "" = null reverse-path). Always fills out;
 * false when no answer came in time (both results are then temperror).
 */
bool milter_loop_spf(struct milter_loop *ml, const struct sockaddr *client, const char *helo,
                     const char *sender, struct milter_spf_answer *out);
void milter_spf_answer_clear(struct milter_spf_answer *a);

/*
 * Starts a verification with the whole header section (CRLF line ends, the empty line included):
 * the key lookups start at once, in parallel with the body. Never waits, never fails (when the
 * loop is stopping, the handle is a dead one that _finish answers temperror for). The handle is
 * passed on to exactly one milter_loop_dkim_finish() or _cancel(), after any number of _feed().
 */
struct milter_dkim *milter_loop_dkim_start(struct milter_loop *ml, const char *queue_id,
                                           const char *header, size_t len);
/* More of the message (body bytes, CRLF line ends). Copied; never waits. */
void milter_loop_dkim_feed(struct milter_loop *ml, struct milter_dkim *d, const char *data,
                           size_t len);
/*
 * The message is complete: waits for the results and appends their resinfo ("dkim=pass
 * header.d=... header.s=... header.b=...", or "dkim=none") to out. False when no answer came in
 * time ("dkim=temperror" is appended then). d is gone either way.
 */
bool milter_loop_dkim_finish(struct milter_loop *ml, struct milter_dkim *d, struct buf *out);
/* The message went away: d is freed on the loop; never waits. NULL is a no-op. */
void milter_loop_dkim_cancel(struct milter_loop *ml, struct milter_dkim *d);

/* ---- milter_checks.c: the callbacks -------------------------------------------------------------- */

struct smfiDesc;

/*
 * The callbacks' shared state: the loop (not owned) and the authserv-id written in our
 * Authentication-Results header and looked for in incoming ones (copied).
 */
void milter_checks_init(struct milter_loop *ml, const char *authserv_id);
/* The filter description to give smfi_register(). */
const struct smfiDesc *milter_checks_desc(void);
/* MTA connections whose state is allocated (negotiated and not yet closed). */
int milter_checks_active(void);
/*
 * The role stops: from now on every callback answers at once without touching the loop
 * (SMFIS_TEMPFAIL, so the MTA applies its milter_default_action), and milter_checks_running()
 * only goes down. The loop may be freed once it reads 0.
 */
void milter_checks_close(void);
/* Callbacks running right now. */
int milter_checks_running(void);

#endif
