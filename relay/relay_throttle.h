/*
 * relay_throttle.h - per-destination limits: messages per minute and deliveries at the same time
 * to one recipient domain, counted in Redis so that every relay node shares them
 * (relay.throttle_scope = shared) or per node (node).
 *
 * The rate limit is GCRA (the generic cell rate algorithm): Redis keeps, per domain, the
 * theoretical arrival time of the next message; a delivery may start when that time has come, and
 * moves it one interval (60 s / rate) on. The concurrency limit is a sorted set of slots scored by
 * their expiry (a lease, so a dead node's slots free themselves). Both are one Lua script using
 * the server's clock. A delivery that may not start now is told how long to wait; the scheduler
 * turns that into a real due time, without counting an attempt.
 */
#ifndef MXG_RELAY_THROTTLE_H
#define MXG_RELAY_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "conf.h"

struct redis;

struct relay_limits {
    long long rate;         /* messages per minute, 0 = none */
    long long concurrency;  /* at the same time, 0 = none */
};

/* Parses relay.domain_limits entries ("domain:rate:concurrency"); false with err naming the entry. */
bool relay_limits_check(const struct strlist *entries, struct buf *err) __attribute__((warn_unused_result));
/* The limits for a recipient domain: its relay.domain_limits entry, else the defaults. */
void relay_limits_for(const char *domain, struct relay_limits *out);
/*
 * The limits for an MX host: its relay.mx_limits entry, else none. They are kept under the name
 * "mx:HOST" (pass that as the domain to acquire and release), apart from the domains' limits.
 */
void relay_mx_limits_for(const char *host, struct relay_limits *out);

/*
 * ok: the delivery may start (slot, when non-empty, must be given back with relay_throttle_release);
 * otherwise wait_ms says when to try again. err on failure (the caller defers briefly).
 */
typedef void relay_throttle_fn(bool ok, long long wait_ms, const char *slot, const char *err, void *arg);

/*
 * Asks whether a delivery to domain may start. node is this process's id (used as the key scope
 * when relay.throttle_scope = node, and in slot names). Returns false when Redis is not connected.
 */
bool relay_throttle_acquire(struct redis *r, const char *domain, const struct relay_limits *lim,
                            const char *node, const char *slot, long long slot_ttl_ms,
                            relay_throttle_fn *cb, void *arg) __attribute__((warn_unused_result));
/* Gives a concurrency slot back (fire and forget; an unreturned slot expires with its lease). */
void relay_throttle_release(struct redis *r, const char *domain, const char *node, const char *slot);

#endif
