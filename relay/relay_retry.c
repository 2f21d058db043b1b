/*
 * relay_retry.c - retry schedules in James's `delayTime` syntax, jittered due times, and the
 * maximum-age / maximum-attempts rules that turn a temporary failure into a permanent one
 * (RFC 5321 §4.5.4.1: retry for at least 4-5 days, then give up).
 *
 * Owns nothing but the schedules it returns. Pure: the caller supplies the time and the random
 * value. A bad schedule is reported by text naming the step; nothing here aborts except on
 * out-of-memory (mem.h). Arithmetic on times saturates, so a huge interval or a far-future clock
 * gives INT64_MAX rather than a wrapped, negative (= "due now") time.
 */
#include "relay_retry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "mem.h"

#define MS_SECOND 1000LL
#define MS_MINUTE (60 * MS_SECOND)
#define MS_HOUR (60 * MS_MINUTE)
#define MS_DAY (24 * MS_HOUR)

/* Unit names, matched case-insensitively (James's DurationParser list, plus second(s)). */
static const struct {
    const char *name;
    int64_t ms;
} units[] = {
    { "ms", 1 }, { "msec", 1 }, { "msecs", 1 },
    { "s", MS_SECOND }, { "sec", MS_SECOND }, { "secs", MS_SECOND },
    { "second", MS_SECOND }, { "seconds", MS_SECOND },
    { "m", MS_MINUTE }, { "min", MS_MINUTE }, { "mins", MS_MINUTE },
    { "minute", MS_MINUTE }, { "minutes", MS_MINUTE },
    { "h", MS_HOUR }, { "hour", MS_HOUR }, { "hours", MS_HOUR },
    { "d", MS_DAY }, { "day", MS_DAY }, { "days", MS_DAY },
};

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Narrows [*p, *p + *n) to exclude leading and trailing blanks. */
static void trim(const char **p, size_t *n)
{
    while (*n > 0 && is_blank(**p)) {
        (*p)++;
        (*n)--;
    }
    while (*n > 0 && is_blank((*p)[*n - 1]))
        (*n)--;
}

/* Quotes operator text for an error message: escaped, and cut at 40 bytes. */
static void put_quoted(struct buf *b, const char *p, size_t n)
{
    buf_putc(b, '"');
    buf_append_sanitized(b, p, n, 40);
    buf_putc(b, '"');
}

/*
 * Reads a decimal number of at most n bytes at p, all digits; false when not all digits, empty,
 * or above max.
 */
static bool parse_uint(const char *p, size_t n, uint64_t max, uint64_t *out, bool *too_big)
{
    uint64_t v = 0;
    *too_big = false;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(p[i]))
            return false;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (max - d) / 10) {
            *too_big = true;
            return false;
        }
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* interval = blanks digits blanks [letters] blanks (already trimmed by the caller). */
static bool parse_interval(const char *p, size_t n, int64_t *out, struct buf *why)
{
    size_t i = 0;
    while (i < n && is_digit(p[i]))
        i++;
    if (i == 0) {
        buf_puts(why, "interval must start with a number");
        return false;
    }
    uint64_t amount;
    bool too_big;
    if (!parse_uint(p, i, (uint64_t)INT64_MAX, &amount, &too_big)) {
        buf_puts(why, "interval too large");
        return false;
    }
    while (i < n && is_blank(p[i]))
        i++;
    size_t u0 = i;
    while (i < n && is_alpha(p[i]))
        i++;
    size_t ulen = i - u0;
    if (i < n) {
        buf_puts(why, "unexpected ");
        put_quoted(why, p + i, n - i);
        return false;
    }
    int64_t unit_ms = 1;
    if (ulen > 0) {
        size_t k;
        for (k = 0; k < sizeof units / sizeof units[0]; k++) {
            if (strlen(units[k].name) == ulen && strncasecmp(units[k].name, p + u0, ulen) == 0)
                break;
        }
        if (k == sizeof units / sizeof units[0]) {
            buf_puts(why, "unknown unit ");
            put_quoted(why, p + u0, ulen);
            return false;
        }
        unit_ms = units[k].ms;
    }
    if (amount == 0) {
        buf_puts(why, "interval must be greater than zero");
        return false;
    }
    if (amount > (uint64_t)(INT64_MAX / unit_ms)) {
        buf_puts(why, "interval too large");
        return false;
    }
    *out = (int64_t)amount * unit_ms;
    return true;
}

/* step = [ count "*" ] interval, p/n already trimmed and non-empty. */
static bool parse_step(const char *p, size_t n, struct retry_step *out, struct buf *why)
{
    const char *star = memchr(p, '*', n);
    out->count = 1;
    if (star == NULL)
        return parse_interval(p, n, &out->interval_ms, why);

    const char *rest = star + 1;
    size_t rest_n = n - (size_t)(rest - p);
    if (memchr(rest, '*', rest_n) != NULL) {
        buf_puts(why, "more than one '*'");
        return false;
    }
    const char *c = p;
    size_t cn = (size_t)(star - p);
    trim(&c, &cn);
    trim(&rest, &rest_n);
    if (cn == 0) {
        buf_puts(why, "missing count before '*'");
        return false;
    }
    if (rest_n == 0) {
        buf_puts(why, "missing interval after '*'");
        return false;
    }
    uint64_t count;
    bool too_big;
    if (!parse_uint(c, cn, UINT32_MAX, &count, &too_big)) {
        if (too_big) {
            buf_puts(why, "count too large");
        } else {
            buf_puts(why, "bad count ");
            put_quoted(why, c, cn);
        }
        return false;
    }
    if (count == 0) {
        buf_puts(why, "count must be at least 1");
        return false;
    }
    out->count = (unsigned)count;
    return parse_interval(rest, rest_n, &out->interval_ms, why);
}

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (errlen > 0)
        snprintf(err, errlen, "%s", msg);
}

struct retry_schedule *retry_schedule_parse(const char *s, char *err, size_t errlen)
{
    if (errlen > 0)
        err[0] = '\0';
    size_t total = s == NULL ? 0 : strlen(s);
    const char *all = s;
    trim(&all, &total);
    if (total == 0) {
        set_err(err, errlen, "empty schedule");
        return NULL;
    }

    size_t cap = 1;
    for (size_t i = 0; i < total; i++)
        cap += all[i] == ',';
    struct retry_schedule *rs = xmalloc(sizeof *rs);
    rs->steps = xcalloc(cap, sizeof *rs->steps);
    rs->nsteps = 0;

    struct buf why = BUF_INIT;
    const char *p = all;
    const char *end = all + total;
    for (unsigned stepno = 1;; stepno++) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma != NULL ? comma : end;
        const char *t = p;
        size_t tn = (size_t)(stop - p);
        trim(&t, &tn);
        bool ok;
        if (tn == 0) {
            buf_puts(&why, "empty step");
            ok = false;
        } else {
            ok = parse_step(t, tn, &rs->steps[rs->nsteps], &why);
        }
        if (!ok) {
            struct buf msg = BUF_INIT;
            buf_printf(&msg, "step %u ", stepno);
            put_quoted(&msg, t, tn);
            buf_printf(&msg, ": %s", buf_cstr(&why));
            set_err(err, errlen, buf_cstr(&msg));
            buf_release(&msg);
            buf_release(&why);
            retry_schedule_free(rs);
            return NULL;
        }
        rs->nsteps++;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    buf_release(&why);
    return rs;
}

void retry_schedule_free(struct retry_schedule *rs)
{
    if (rs == NULL)
        return;
    free(rs->steps);
    free(rs);
}

void retry_schedule_format(const struct retry_schedule *rs, struct buf *out)
{
    static const struct {
        int64_t ms;
        const char *name;
    } fmt_units[] = { { MS_DAY, "d" }, { MS_HOUR, "h" }, { MS_MINUTE, "m" }, { MS_SECOND, "s" } };
    for (size_t i = 0; i < rs->nsteps; i++) {
        const struct retry_step *st = &rs->steps[i];
        if (i > 0)
            buf_puts(out, ", ");
        if (st->count != 1)
            buf_printf(out, "%u*", st->count);
        const char *unit = "ms";
        int64_t v = st->interval_ms;
        for (size_t k = 0; k < sizeof fmt_units / sizeof fmt_units[0]; k++) {
            if (st->interval_ms % fmt_units[k].ms == 0) {
                unit = fmt_units[k].name;
                v = st->interval_ms / fmt_units[k].ms;
                break;
            }
        }
        buf_printf(out, "%lld%s", (long long)v, unit);
    }
}

int64_t retry_delay_ms(const struct retry_schedule *rs, unsigned failures)
{
    uint64_t n = failures == 0 ? 1 : failures;
    uint64_t covered = 0;   /* counts are < 2^32: overflow would take 2^32 steps */
    for (size_t i = 0; i < rs->nsteps; i++) {
        covered += rs->steps[i].count;
        if (n <= covered)
            return rs->steps[i].interval_ms;
    }
    return rs->steps[rs->nsteps - 1].interval_ms;
}

bool retry_jitter_valid(double j)
{
    return j >= 0.0 && j < 1.0;     /* false for NaN */
}

int64_t retry_jitter_delay(int64_t delay_ms, double jitter, uint64_t rnd)
{
    if (delay_ms < 1)
        delay_ms = 1;
    if (!(jitter > 0.0))            /* NaN, negative or zero */
        return delay_ms;
    /* span < delay_ms keeps the result >= 1 ms; the double compare keeps the cast defined, and
     * the cast of a non-negative value truncates, which is floor() without libm */
    int64_t span;
    double s = (double)delay_ms * jitter;
    if (s >= (double)(delay_ms - 1))
        span = delay_ms - 1;
    else
        span = (int64_t)s;
    if (span == 0)
        return delay_ms;
    uint64_t width = 2 * (uint64_t)span + 1;         /* <= 2^64 - 3: no wrap */
    uint64_t v = (uint64_t)(delay_ms - span) + rnd % width;
    return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
}

int64_t retry_next_due(int64_t now_ms, int64_t delay_ms, double jitter, uint64_t rnd)
{
    int64_t due;
    if (__builtin_add_overflow(now_ms, retry_jitter_delay(delay_ms, jitter, rnd), &due))
        return INT64_MAX;
    return due;
}

enum retry_verdict retry_check_age(int64_t received_ms, int64_t now_ms, int64_t max_age_ms)
{
    if (max_age_ms <= 0 || now_ms <= received_ms)
        return RETRY_AT;
    int64_t age;
    if (__builtin_sub_overflow(now_ms, received_ms, &age))
        age = INT64_MAX;            /* now_ms > received_ms, so only a too-large age overflows */
    return age >= max_age_ms ? RETRY_GIVE_UP_AGE : RETRY_AT;
}

enum retry_verdict retry_check_attempts(unsigned failures, unsigned max_attempts)
{
    return max_attempts != 0 && failures >= max_attempts ? RETRY_GIVE_UP_ATTEMPTS : RETRY_AT;
}

enum retry_verdict retry_after_failure(const struct retry_policy *p, int64_t received_ms,
                                       int64_t now_ms, unsigned failures, uint64_t rnd,
                                       int64_t *due_ms)
{
    if (retry_check_age(received_ms, now_ms, p->max_age_ms) == RETRY_GIVE_UP_AGE)
        return RETRY_GIVE_UP_AGE;
    if (retry_check_attempts(failures, p->max_attempts) == RETRY_GIVE_UP_ATTEMPTS)
        return RETRY_GIVE_UP_ATTEMPTS;
    int64_t due = retry_next_due(now_ms, retry_delay_ms(p->schedule, failures), p->jitter, rnd);
    int64_t deadline;
    if (p->max_age_ms > 0 && !__builtin_add_overflow(received_ms, p->max_age_ms, &deadline) &&
        due > deadline) {
        /* the age check passed, so deadline > now_ms and the result stays in the future */
        due = deadline;
    }
    *due_ms = due;
    return RETRY_AT;
}

const char *retry_verdict_name(enum retry_verdict v)
{
    switch (v) {
    case RETRY_AT:
        return "retry-at";
    case RETRY_GIVE_UP_AGE:
        return "give-up-age";
    case RETRY_GIVE_UP_ATTEMPTS:
        return "give-up-attempts";
    }
    return "?";
}
