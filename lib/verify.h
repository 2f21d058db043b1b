/*
 * verify.h - recipient verification: does a local address have a mailbox? One interface, several
 * sources (the static file, an LMTP RCPT probe of the mailbox tier, James WebAdmin, LDAP), asked
 * by the edge at RCPT time in the order the operator lists them.
 *
 * A source answers EXISTS when it knows the address and DUNNO when it does not; the next source
 * is then asked, and when none is left the address is unknown (550 5.1.1). A source that cannot
 * answer (down, timed out, malformed reply) says TEMPFAIL, which the client hears as 450: a broken
 * lookup must never bounce good mail.
 *
 * Contract for every source:
 * - lookup() calls done exactly once, now (before lookup returns) or later from the event loop,
 *   and within the source's own timeout: a session waits for it.
 * - p (and the strings it points to) stays valid until done is called.
 * - free() first answers every lookup still pending with VERIFY_TEMPFAIL (from inside free), then
 *   releases everything. free(NULL) is not called; the owner checks.
 */
#ifndef MXG_VERIFY_H
#define MXG_VERIFY_H

#include <stdbool.h>

#include "smtp_addr.h"

enum verify_answer {
    VERIFY_EXISTS,      /* the address has a mailbox */
    VERIFY_DUNNO,       /* not known to this source: ask the next one */
    VERIFY_TEMPFAIL,    /* the source could not answer: 450, try later */
};

typedef void verify_done_fn(enum verify_answer a, void *arg);

struct verify_source {
    const char *name;   /* for logs and settings: "file", "lmtp", "webadmin", "ldap" */
    bool cacheable;     /* answers are worth keeping in the shared Redis cache (remote sources) */
    void (*lookup)(struct verify_source *src, const struct smtp_path *p, verify_done_fn *done,
                   void *arg);
    void (*free)(struct verify_source *src);
};

/* "ok", "unknown" or "tempfail" for logs. */
const char *verify_answer_name(enum verify_answer a);

#endif
