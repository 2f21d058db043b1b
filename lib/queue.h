/*
 * queue.h - the Redis mail queue: key layout, queue ids, and the atomic enqueue.
 *
 * docs/queue.md describes the layout. In short, with prefix P (redis.prefix, default "mxg") and a
 * message id ID, everything about one message lives under one hash tag {ID}, and the schedule is
 * one sorted set per state scored by due time in milliseconds:
 *
 *   P:msg:{ID}        hash    envelope: sender, envid, ret, body type, smtputf8, client, helo,
 *                             auth user, listener, received time, recipient count, size
 *   P:body:{ID}       string  the message as it will be delivered (with our Received header)
 *   P:rcpt:{ID}       hash    one field per recipient index "0", "1", ...: a JSON record
 *                             {"to","orcpt","notify","state","attempts","due","last"}
 *   P:due             zset    member "ID/index", score = due time (ms): work the relay claims
 *   P:due:urgent      zset    the same for urgent mail (submissions, bounces), claimed first
 *   P:lease           zset    member "ID/index", score = lease expiry (ms): work being delivered
 *   P:log:{ID}        list    one JSON line per event in the message's life (enqueue, attempts)
 *
 * The enqueue writes all of these in one MULTI/EXEC; 250 is given only when EXEC answered with
 * every command applied.
 */
#ifndef MXG_QUEUE_H
#define MXG_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

struct redis;

/* Ids are 20 characters of [0-9A-Z] (Crockford base32): 50 bits of milliseconds then 50 random. */
#define QUEUE_ID_LEN 20

/* Fills out (QUEUE_ID_LEN + 1 bytes) with a new, time-ordered, unique id. */
void queue_id_new(char *out);

struct queue_rcpt {
    char *addr;             /* the mailbox, "local@domain" */
    char *orcpt;            /* DSN ORCPT ("rfc822;addr"), or NULL */
    unsigned notify;        /* DSN_NOTIFY_* flags, 0 = not given */
};

/* Everything the enqueue writes. Strings are borrowed from the caller for the call's duration. */
struct queue_msg {
    const char *id;
    const char *sender;     /* "" for the null sender */
    const char *envid;      /* DSN ENVID or NULL */
    const char *ret;        /* "FULL", "HDRS" or NULL */
    const char *body_type;  /* "7BIT", "8BITMIME", "BINARYMIME" or NULL */
    bool smtputf8;
    bool urgent;            /* into P:due:urgent, claimed before P:due: submissions, bounces */
    const char *client_ip;
    const char *client_helo;
    const char *auth_user;  /* NULL when not authenticated */
    const char *listener;   /* "mx", "submission", "smtps" */
    const char *session;    /* session id, for tracing */
    long long received_ms;  /* wall clock at acceptance */
    const struct queue_rcpt *rcpts;
    size_t nrcpts;
    const char *body;       /* the message, CR LF line endings */
    size_t body_len;
    const char *repository; /* not NULL: held in P:repo:<repository> (quarantine), not due */
    const char *repository_reason;
};

/* ok is true only when Redis applied the whole transaction; otherwise err says why. */
typedef void queue_done_fn(bool ok, const char *err, void *arg);

/*
 * Writes the message atomically. Returns false (without calling cb) when the command could not be
 * sent (Redis not connected); otherwise cb is called exactly once.
 */
bool queue_enqueue(struct redis *r, const char *prefix, const struct queue_msg *m,
                   queue_done_fn *cb, void *arg) __attribute__((warn_unused_result));

/* Key helpers: appends "P:kind:{ID}" to b. */
void queue_key(struct buf *b, const char *prefix, const char *kind, const char *id);

/* The stage the edge enqueues into (the relay's); the mailbox bridge works another, "local". */
#define QUEUE_STAGE_MAIN "main"
/*
 * A stage's schedule key or wake channel (docs/queue.md): appends "P:name" for the main stage,
 * "P:stage:name" for another; name is "due", "due:urgent", "lease", "lease:owner" or "wake".
 */
void queue_stage_key(struct buf *b, const char *prefix, const char *stage, const char *name);

#endif
