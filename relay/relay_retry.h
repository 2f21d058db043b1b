/*
 * relay_retry.h - retry schedules and the give-up rules of the relay. Pure functions: no I/O, no
 * clock, no randomness of their own (the caller passes the time and a random 64-bit value), so
 * every result is reproducible in a test.
 *
 * Schedule syntax: Apache James RemoteDelivery `delayTime` (its Delay and DurationParser classes),
 *
 *   schedule = step *( "," step )              e.g. "5*1m, 5*10m, 6*1h, 4h"
 *   step     = [ count "*" ] interval          count: decimal, >= 1, default 1
 *   interval = amount [ unit ]                 amount: decimal, >= 1; no unit = milliseconds
 *   unit     = ms | msec | msecs                                     milliseconds
 *            | s | sec | secs | second | seconds                     seconds
 *            | m | min | mins | minute | minutes                     minutes
 *            | h | hour | hours                                      hours
 *            | d | day | days                                        days
 *
 * Units are case-insensitive; spaces and tabs are allowed around every token ("2 * 5 minutes").
 * Step i covers `count` consecutive failures; the last step repeats for ever. Against James:
 * "second"/"seconds" are accepted in addition; an empty step ("1m,,2m", a trailing comma), a count
 * of 0 and an interval of 0 are errors here (James skips, accepts, accepts them) because a zero
 * delay would retry in a tight loop; and the number of attempts is not tied to the schedule's
 * length but limited separately (max_attempts; James maxRetries R is max_attempts R + 1).
 *
 * Time values are milliseconds in int64_t. All arithmetic saturates instead of overflowing.
 */
#ifndef MXG_RELAY_RETRY_H
#define MXG_RELAY_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

/* count consecutive failures, each followed by a wait of interval_ms. */
struct retry_step {
    unsigned count;             /* >= 1 */
    int64_t interval_ms;        /* >= 1 */
};

/* A parsed schedule; owns steps. Free with retry_schedule_free. */
struct retry_schedule {
    struct retry_step *steps;   /* nsteps entries, in order */
    size_t nsteps;              /* >= 1 */
};

/* What to do after a temporary failure. */
enum retry_verdict {
    RETRY_AT,                   /* try again at the due time given */
    RETRY_GIVE_UP_AGE,          /* the message reached the maximum age: the failure is permanent */
    RETRY_GIVE_UP_ATTEMPTS,     /* the recipient used up its attempts: the failure is permanent */
};

/* Everything the decision needs; the schedule is borrowed. */
struct retry_policy {
    const struct retry_schedule *schedule;
    double jitter;              /* fraction, 0.2 = +-20%; see retry_jitter_delay */
    int64_t max_age_ms;         /* <= 0: no age limit */
    unsigned max_attempts;      /* 0: no limit on attempts */
};

/*
 * Parses a schedule. Returns a new schedule owned by the caller, or NULL with a message naming the
 * bad step written to err (errlen bytes, always NUL-terminated when errlen > 0), for example
 * `step 2 "5*1x": unknown unit "x"`. s NULL or blank: "empty schedule".
 */
struct retry_schedule *retry_schedule_parse(const char *s, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void retry_schedule_free(struct retry_schedule *rs);

/* Appends the canonical form ("5*1m, 5*10m, 6*1h, 4h"; largest exact unit) to out. */
void retry_schedule_format(const struct retry_schedule *rs, struct buf *out);

/*
 * The wait after the failures-th failure (failures counts failed attempts so far, the one just
 * made included; 0 is taken as 1). Past the end of the schedule, the last interval.
 */
int64_t retry_delay_ms(const struct retry_schedule *rs, unsigned failures);

/* Is j usable as a jitter fraction: 0 <= j < 1 (and not NaN)? For configuration checks. */
bool retry_jitter_valid(double j);

/*
 * delay_ms moved uniformly within +-span, span = floor(delay_ms * jitter), by the random value
 * rnd: the result is delay_ms - span + (rnd mod (2 * span + 1)). A jitter that is NaN or negative
 * counts as 0; one >= 1 is cut so that the result is never below 1 ms. delay_ms < 1 counts as 1.
 */
int64_t retry_jitter_delay(int64_t delay_ms, double jitter, uint64_t rnd);

/* now_ms + retry_jitter_delay(...), saturating at INT64_MAX. Always > now_ms (unless saturated). */
int64_t retry_next_due(int64_t now_ms, int64_t delay_ms, double jitter, uint64_t rnd);

/*
 * RETRY_GIVE_UP_AGE when the message, received at received_ms, is max_age_ms old or older at
 * now_ms; RETRY_AT otherwise (also when max_age_ms <= 0, or when now_ms is before received_ms).
 */
enum retry_verdict retry_check_age(int64_t received_ms, int64_t now_ms, int64_t max_age_ms);

/* RETRY_GIVE_UP_ATTEMPTS when failures >= max_attempts (max_attempts 0: never). */
enum retry_verdict retry_check_attempts(unsigned failures, unsigned max_attempts);

/*
 * The decision after a temporary failure: the age check first, then the attempts check, then the
 * next due time (jittered), which is moved earlier to received_ms + max_age_ms when the schedule
 * would overshoot it, so the last attempt happens at the deadline rather than up to one interval
 * after it. *due_ms is written only for RETRY_AT, and is then > now_ms.
 */
enum retry_verdict retry_after_failure(const struct retry_policy *p, int64_t received_ms,
                                       int64_t now_ms, unsigned failures, uint64_t rnd,
                                       int64_t *due_ms);

/* "retry-at", "give-up-age", "give-up-attempts" (for logs). */
const char *retry_verdict_name(enum retry_verdict v);

#endif
