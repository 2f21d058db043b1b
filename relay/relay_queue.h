/*
 * relay_queue.h - the relay's operations on the Redis queue (docs/queue.md, "The relay on this
 * layout"): claiming due recipients under a lease, recording each attempt's outcome, returning
 * the work of dead nodes, and reading what a delivery needs.
 *
 * Every operation is one Lua script, so it is atomic on the server and uses the server's clock
 * (TIME): nodes' clocks do not matter. All calls are asynchronous on the struct redis of the
 * caller; a callback is called exactly once (redis.h).
 */
#ifndef MXG_RELAY_QUEUE_H
#define MXG_RELAY_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "queue.h"

struct redis;

/* The stage the edge enqueues into: the relay routes from it. */
#define RELAY_STAGE_MAIN QUEUE_STAGE_MAIN

/* Room for a claim token: the claiming process's random id and its claim number. */
#define RELAY_TOKEN_LEN 40

/* A claimed recipient: "ID/index" and the token that proves the claim is still ours. */
struct relay_claim {
    const char *stage;      /* the stage it was claimed from (static string) */
    char *member;           /* "ID/index" */
    char *id;               /* ID */
    unsigned index;
    char token[RELAY_TOKEN_LEN]; /* written to P:lease:owner at claim time; the lease's score is
                                  * only its expiry, which renewals move */
};

/* claims[n] are owned by the callee and freed after the callback; err set when reply failed. */
typedef void relay_claim_fn(struct relay_claim *claims, size_t n, const char *err, void *arg);

/*
 * Moves up to max members whose due time has come from the due set of `stage` (RELAY_STAGE_MAIN
 * for the relay's routing, "local" for the mailbox bridge) into its lease set, for lease_ms,
 * owned by token (unique per claim: a process's random id and a counter).
 */
bool relay_queue_claim(struct redis *r, const char *prefix, const char *stage, long long lease_ms,
                       unsigned max, const char *token, relay_claim_fn *cb, void *arg)
    __attribute__((warn_unused_result));

/*
 * Extends to now + lease_ms the leases of claims[0..n) that are still owned by their tokens;
 * cb gets how many were (fewer: some lease expired and was taken over).
 */
typedef void relay_count_fn(long long n, const char *err, void *arg);
bool relay_queue_renew(struct redis *r, const char *prefix, const char *stage, long long lease_ms,
                       const struct relay_claim *const *claims, size_t n, relay_count_fn *cb,
                       void *arg) __attribute__((warn_unused_result));

/* What happened to one recipient. */
enum relay_outcome {
    OUTCOME_DELIVERED,      /* final */
    OUTCOME_FAILED,         /* final */
    OUTCOME_DEFERRED,       /* back to the due set at due_ms; counts an attempt */
    OUTCOME_THROTTLED,      /* back to the due set at due_ms; not an attempt */
    OUTCOME_ROUTED,         /* moved to another stage's due set (e.g. "local"), due now */
};

struct relay_result {
    enum relay_outcome outcome;
    const char *repo;       /* FAILED: keep the message in this repository (NULL: none) */
    long long due_ms;       /* DEFERRED / THROTTLED */
    const char *stage;      /* ROUTED: the stage */
    int code;               /* the remote reply's code, 0 if none */
    const char *status;     /* enhanced status "4.4.1" */
    const char *text;       /* reply text or reason (sanitised by the caller) */
    const char *mx;         /* the host that answered, or NULL */
    bool warned;            /* a delay notice went out for this recipient (kept in its record) */
};

/*
 * A deferred or throttled recipient goes back to the due set of the stage it was claimed from;
 * a routed one to res->stage's.
 * history_s is how long P:log:{ID} stays once the message is removed (relay.history_retention).
 * "ok" (recorded), "removed" (recorded, and it was the message's last recipient: its keys are
 * gone), "stale" (our lease had expired: someone else owns the recipient; nothing written), or
 * err on failure.
 */
typedef void relay_outcome_fn(const char *status, const char *err, void *arg);

bool relay_queue_outcome(struct redis *r, const char *prefix, long long history_s,
                         const struct relay_claim *c, const struct relay_result *res,
                         relay_outcome_fn *cb, void *arg)
    __attribute__((warn_unused_result));

/* Returns members whose lease has expired in `stage` to its due set; cb gets how many (or -1). */
bool relay_queue_expire_leases(struct redis *r, const char *prefix, const char *stage,
                               relay_count_fn *cb, void *arg) __attribute__((warn_unused_result));

enum relay_stage_key { STAGE_DUE, STAGE_URGENT, STAGE_LEASE, STAGE_OWNER, STAGE_WAKE };
/*
 * Keys of a stage: "P:due", "P:due:urgent", "P:lease", "P:lease:owner" and the wake channel
 * "P:wake" for the main stage; "P:S:due" and so on for stage S (queue_stage_key()).
 */
void relay_stage_key(struct buf *b, const char *prefix, const char *stage, enum relay_stage_key which);

#endif
