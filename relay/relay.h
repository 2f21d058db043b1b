/*
 * relay.h - the relay role (private to relay/): the scheduler that works the Redis queue.
 *
 * A relay process claims due recipients (relay_queue.c), fetches what their messages need,
 * routes each recipient (local domains to the mailbox bridge's stage, others to outbound SMTP),
 * and records every outcome with a real due time. Files: relay_main.c (role entry), relay_sched.c
 * (claim, fetch, route, record), relay_deliver.c (MX lookup and the outbound transaction),
 * relay_retry.c (schedules), relay_dsn.c (bounces), relay_smtp.c (the SMTP client).
 */
#ifndef MXG_RELAY_H
#define MXG_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "relay_queue.h"
#include "relay_retry.h"
#include "tls_client.h"

struct event_base;
struct event;
struct redis;
struct dns;
struct relay_dest;
typedef struct ssl_ctx_st SSL_CTX;

struct relay;
struct relay_rcpt;

/*
 * What a role does with claimed recipients it delivers itself: the recipients of one message;
 * relay_delivered() follows once each has its result.
 */
typedef void relay_deliver_fn(struct relay *rl, struct relay_rcpt **rcpts, size_t n);

/* A role built on the scheduler: the relay (main stage, routes) or the mailbox bridge. */
struct relay_role {
    const char *name;               /* "relay", "bridge": logs, Redis client name */
    const char *stage;              /* the stage it claims from */
    relay_deliver_fn *deliver;      /* NULL: route (local stage or outbound SMTP) */
    bool (*init)(struct relay *rl, struct buf *err);  /* may be NULL */
    void (*fini)(struct relay *rl);                   /* may be NULL */
    const char *unknown_repo;       /* repository for 5.1.x (unknown address) failures, or NULL:
                                     * relay.failed_repository as for every other failure */
};

struct relay {
    const struct relay_role *role;  /* what this process is */
    void *role_data;                /* the role's own state */
    struct event_base *base;
    struct redis *redis;
    struct redis *wake;             /* subscribed to this stage's wake channel, or NULL */
    struct dns *dns;
    struct retry_schedule *schedule; /* relay.retry_schedule */
    struct retry_policy retry;      /* schedule, jitter, maximum age and attempts */
    char hostname[256];             /* EHLO name, Reporting-MTA */
    struct event *tick;             /* claims due work */
    struct event *lease_timer;      /* returns expired leases */
    struct event *renew_timer;      /* extends the leases of work in hand */
    char node[17];                  /* random id of this process, in claim tokens */
    unsigned long long claims;      /* claims made, in claim tokens */
    unsigned long long slots;       /* concurrency slots taken, in slot names */
    struct relay_msg *msgs;         /* messages with recipients in hand (doubly linked) */
    unsigned inflight;              /* recipients claimed and not yet recorded */
    bool claiming;                  /* a claim is on its way */
    bool woken;                     /* work arrived while claiming: claim again at once */
    bool stopping;                  /* no more claims; exit when inflight reaches 0 */
    unsigned long long delivered, deferred, failed;     /* counters, for logs */
    SSL_CTX *tls_ctx;               /* outbound STARTTLS */
    struct relay_dest *dests;       /* destination hosts with their connections (relay_deliver.c) */
};

/* One claimed recipient, with what its record says. */
struct relay_rcpt {
    struct relay_msg *msg;          /* its message */
    struct relay_claim claim;       /* member, id, index, token (owned) */
    char *to;                       /* mailbox */
    char *domain;                   /* points into to */
    char *orcpt;                    /* DSN ORCPT or NULL */
    unsigned notify;                /* DSN NOTIFY flags */
    unsigned attempts;              /* attempts so far */
    bool warned;                    /* a delay notice already went out */
    bool parked;                    /* kept in relay.temporary_repository: no bounce */
    struct relay_result result;     /* filled by the delivery */
    char *result_text;              /* owned storage for result.text */
    char *result_mx;                /* owned storage for result.mx */
    char result_status[16];         /* owned storage for result.status */
};

/* A message some of whose recipients are being worked on. Freed when the last is recorded. */
struct relay_msg {
    struct relay *rl;
    struct relay_msg *prev, *next;  /* in rl->msgs */
    char *id;
    char *sender;                   /* "" for the null sender */
    char *envid, *ret;              /* DSN, or NULL */
    bool smtputf8, eightbit;
    long long received_ms;
    char *body;                     /* the message, CR LF */
    size_t body_len;
    struct relay_rcpt *rcpts;
    size_t nrcpts;
    unsigned pending;               /* recipients not yet recorded */
};

/* relay_sched.c */
/* 64 random bits (getrandom), for jitter and ids. */
uint64_t relay_random(void);
bool relay_start(struct relay *rl) __attribute__((warn_unused_result));
void relay_stop(struct relay *rl);
/* A delivery finished: every rcpt's result is set; decide and record each outcome. */
void relay_delivered(struct relay *rl, struct relay_rcpt **rcpts, size_t n);

/* relay_deliver.c: delivers rcpts (all of one message and one domain); calls relay_delivered. */
void relay_deliver(struct relay *rl, struct relay_rcpt **rcpts, size_t n);
/* Delivers rcpts (all of one message) over LMTP to target: "host[:port]" (24) or "unix:/path". */
void relay_deliver_to(struct relay *rl, struct relay_rcpt **rcpts, size_t n, const char *target);
/* Closes every connection to destination hosts (at exit). */
void relay_deliver_shutdown(struct relay *rl);
/* The STARTTLS policy for a recipient domain: its relay.domain_tls entry, else relay.tls. */
enum tls_policy relay_tls_policy_for(const char *domain);
/* Checks relay.domain_tls entries ("domain:policy"); false with err naming the bad one. */
struct strlist;
bool relay_tls_check(const struct strlist *entries, struct buf *err) __attribute__((warn_unused_result));

/* relay_main.c: runs a role on the loaded configuration until SIGTERM; exit status. */
int relay_role_main(const struct relay_role *role);
/* `mxgate relay`. */
int relay_main(void);

#endif
