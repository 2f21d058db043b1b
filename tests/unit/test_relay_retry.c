/*
 * test_relay_retry.c - unit tests of retry schedules and give-up rules (relay/relay_retry.c):
 * tables of schedules that parse (with their canonical form) and that fail (with the exact
 * message naming the step), the delay per attempt for James's example schedule, exact jitter
 * values and bounds over 10,000 pseudo-random values, saturation near INT64_MAX, and the
 * maximum-age / maximum-attempts verdicts alone and combined with the due time.
 */
#include <limits.h>
#include <math.h>   /* NAN, INFINITY: macros, no libm */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "relay_retry.h"

#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

/* An integer check that names the table row when it fails. */
#define CHECK_ROW(row, got, want)                                                           \
    do {                                                                                    \
        long long got_ = (long long)(got), want_ = (long long)(want);                       \
        if (got_ != want_)                                                                  \
            fail_msg("row %zu: %s is %lld, want %lld", (size_t)(row), #got, got_, want_);   \
    } while (0)

/* Deterministic 64-bit values for the jitter tests (splitmix64). */
static uint64_t next_rnd(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static struct retry_schedule *parse_ok(const char *s)
{
    char err[200];
    struct retry_schedule *rs = retry_schedule_parse(s, err, sizeof err);
    if (rs == NULL)
        fail_msg("\"%s\" refused: %s", s, err);
    return rs;
}

/* ---- parsing: accepted ------------------------------------------------------------------- */

static const struct ok_row {
    const char *in;
    size_t nsteps;
    const char *canon;          /* retry_schedule_format of the result */
} ok_rows[] = {
    { "5*1m, 5*10m, 6*1h, 4h", 4, "5*1m, 5*10m, 6*1h, 4h" },
    { "5*1m,5*10m,6*1h,4h", 4, "5*1m, 5*10m, 6*1h, 4h" },
    { "5 minutes", 1, "5m" },
    { "10 minutes", 1, "10m" },
    { "1 hour", 1, "1h" },
    { "2 hours", 1, "2h" },
    { "2 days", 1, "2d" },
    { "1 day", 1, "1d" },
    { "3 seconds", 1, "3s" },
    { "1 second", 1, "1s" },
    { "10sec, 3*1min", 2, "10s, 3*1m" },
    { "4 secs, 2 mins", 2, "4s, 2m" },
    { "1000", 1, "1s" },
    { "1500", 1, "1500ms" },
    { "5000, 100000, 500000", 3, "5s, 100s, 500s" },
    { "250ms", 1, "250ms" },
    { "7 msec, 8msecs", 2, "7ms, 8ms" },
    { "90s", 1, "90s" },
    { "120s", 1, "2m" },
    { "24h", 1, "1d" },
    { "1440 minutes", 1, "1d" },
    { " 2 * 5 MINUTES ,1 Hour ", 2, "2*5m, 1h" },
    { "\t3*\t1M", 1, "3*1m" },
    { "1*1m", 1, "1m" },
    { "4294967295*1s", 1, "4294967295*1s" },
    { "9223372036854775807", 1, "9223372036854775807ms" },
    { "106751991167d", 1, "106751991167d" },
    { "1D, 1H, 1S, 1MS", 4, "1d, 1h, 1s, 1ms" },
};

static void test_parse_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ok_rows / sizeof ok_rows[0]; i++) {
        const struct ok_row *r = &ok_rows[i];
        struct retry_schedule *rs = parse_ok(r->in);
        CHECK_ROW(i, rs->nsteps, r->nsteps);
        struct buf b = BUF_INIT;
        retry_schedule_format(rs, &b);
        if (strcmp(buf_cstr(&b), r->canon) != 0)
            fail_msg("row %zu: \"%s\" formats as \"%s\", want \"%s\"", i, r->in, buf_cstr(&b),
                     r->canon);
        /* the canonical form parses back to the same steps */
        struct retry_schedule *again = parse_ok(buf_cstr(&b));
        CHECK_ROW(i, again->nsteps, rs->nsteps);
        for (size_t k = 0; k < rs->nsteps; k++) {
            CHECK_ROW(i, again->steps[k].count, rs->steps[k].count);
            CHECK_ROW(i, again->steps[k].interval_ms, rs->steps[k].interval_ms);
        }
        retry_schedule_free(again);
        buf_release(&b);
        retry_schedule_free(rs);
    }
}

static void test_parse_steps(void **state)
{
    (void)state;
    struct retry_schedule *rs = parse_ok("5*1m, 5*10m, 6*1h, 4h");
    static const struct retry_step want[] = {
        { 5, MIN }, { 5, 10 * MIN }, { 6, HOUR }, { 1, 4 * HOUR },
    };
    assert_int_equal(rs->nsteps, 4);
    for (size_t i = 0; i < 4; i++) {
        CHECK_ROW(i, rs->steps[i].count, want[i].count);
        CHECK_ROW(i, rs->steps[i].interval_ms, want[i].interval_ms);
    }
    retry_schedule_free(rs);
    retry_schedule_free(NULL);
}

/* ---- parsing: refused -------------------------------------------------------------------- */

static const struct err_row {
    const char *in;
    const char *err;
} err_rows[] = {
    { NULL, "empty schedule" },
    { "", "empty schedule" },
    { "  \t ", "empty schedule" },
    { "3*", "step 1 \"3*\": missing interval after '*'" },
    { "3* ", "step 1 \"3*\": missing interval after '*'" },
    { "*1m", "step 1 \"*1m\": missing count before '*'" },
    { "0*1m", "step 1 \"0*1m\": count must be at least 1" },
    { "5*1x", "step 1 \"5*1x\": unknown unit \"x\"" },
    { "1m,,2m", "step 2 \"\": empty step" },
    { "1m, ,2m", "step 2 \"\": empty step" },
    { "1m,", "step 2 \"\": empty step" },
    { ",1m", "step 1 \"\": empty step" },
    { "1m, 5*1x", "step 2 \"5*1x\": unknown unit \"x\"" },
    { "1m, 2m, 3 fortnights", "step 3 \"3 fortnights\": unknown unit \"fortnights\"" },
    { "0m", "step 1 \"0m\": interval must be greater than zero" },
    { "0", "step 1 \"0\": interval must be greater than zero" },
    { "2*0s", "step 1 \"2*0s\": interval must be greater than zero" },
    { "1.5h", "step 1 \"1.5h\": unexpected \".5h\"" },
    { "1m30s", "step 1 \"1m30s\": unexpected \"30s\"" },
    { "1 m s", "step 1 \"1 m s\": unexpected \" s\"" },
    { "m", "step 1 \"m\": interval must start with a number" },
    { "5*m", "step 1 \"5*m\": interval must start with a number" },
    { "-1m", "step 1 \"-1m\": interval must start with a number" },
    { "2*3*1m", "step 1 \"2*3*1m\": more than one '*'" },
    { "x*1m", "step 1 \"x*1m\": bad count \"x\"" },
    { "-1*1m", "step 1 \"-1*1m\": bad count \"-1\"" },
    { "1 2*1m", "step 1 \"1 2*1m\": bad count \"1 2\"" },
    { "4294967296*1m", "step 1 \"4294967296*1m\": count too large" },
    { "9223372036854775808", "step 1 \"9223372036854775808\": interval too large" },
    { "99999999999999999999s", "step 1 \"99999999999999999999s\": interval too large" },
    { "106751991168d", "step 1 \"106751991168d\": interval too large" },
    { "1m\n", "step 1 \"1m\\x0a\": unexpected \"\\x0a\"" },
    { "1m; 2m", "step 1 \"1m; 2m\": unexpected \"; 2m\"" },
};

static void test_parse_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof err_rows / sizeof err_rows[0]; i++) {
        const struct err_row *r = &err_rows[i];
        char err[200];
        memset(err, 'Z', sizeof err);
        struct retry_schedule *rs = retry_schedule_parse(r->in, err, sizeof err);
        if (rs != NULL)
            fail_msg("row %zu: \"%s\" accepted", i, r->in ? r->in : "(null)");
        if (strcmp(err, r->err) != 0)
            fail_msg("row %zu: error \"%s\", want \"%s\"", i, err, r->err);
    }
}

static void test_parse_error_buffer(void **state)
{
    (void)state;
    /* a short buffer gets a cut, NUL-terminated message; a zero-length one is not touched */
    char small[8];
    assert_null(retry_schedule_parse("5*1x", small, sizeof small));
    assert_string_equal(small, "step 1 ");
    char none = 'Q';
    assert_null(retry_schedule_parse("5*1x", &none, 0));
    assert_int_equal(none, 'Q');
    /* an overlong step is quoted cut to 40 bytes */
#define X37 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    char err[200];
    assert_null(retry_schedule_parse("1m, 5*1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", err,
                                     sizeof err));
    assert_string_equal(err, "step 2 \"5*1" X37 "...\": unknown unit \"" X37 "xxx...\"");
}

/* ---- delay per attempt ------------------------------------------------------------------- */

static void test_delay_james_example(void **state)
{
    (void)state;
    struct retry_schedule *rs = parse_ok("5*1m, 5*10m, 6*1h, 4h");
    static const struct {
        unsigned failures;
        int64_t delay;
    } rows[] = {
        { 0, MIN }, { 1, MIN }, { 2, MIN }, { 3, MIN }, { 4, MIN }, { 5, MIN },
        { 6, 10 * MIN }, { 7, 10 * MIN }, { 8, 10 * MIN }, { 9, 10 * MIN }, { 10, 10 * MIN },
        { 11, HOUR }, { 12, HOUR }, { 13, HOUR }, { 14, HOUR }, { 15, HOUR }, { 16, HOUR },
        { 17, 4 * HOUR }, { 18, 4 * HOUR }, { 19, 4 * HOUR }, { 100, 4 * HOUR },
        { UINT_MAX, 4 * HOUR },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        CHECK_ROW(i, retry_delay_ms(rs, rows[i].failures), rows[i].delay);
    retry_schedule_free(rs);

    /* one step: it repeats for ever; a huge count does not overflow the walk */
    rs = parse_ok("30s");
    CHECK_ROW(0, retry_delay_ms(rs, 1), 30 * SEC);
    CHECK_ROW(1, retry_delay_ms(rs, UINT_MAX), 30 * SEC);
    retry_schedule_free(rs);
    rs = parse_ok("4294967295*1s, 4294967295*2s, 3s");
    CHECK_ROW(2, retry_delay_ms(rs, UINT_MAX), SEC);
    retry_schedule_free(rs);
}

/* ---- jitter ------------------------------------------------------------------------------ */

static void test_jitter_exact(void **state)
{
    (void)state;
    static const struct {
        int64_t delay;
        double jitter;
        uint64_t rnd;
        int64_t want;
    } rows[] = {
        /* span = floor(600000 * 0.2) = 120000, width 240001 */
        { 600000, 0.2, 0, 480000 },
        { 600000, 0.2, 120000, 600000 },
        { 600000, 0.2, 240000, 720000 },
        { 600000, 0.2, 240001, 480000 },
        { 600000, 0.2, UINT64_MAX, 480000 + (int64_t)(UINT64_MAX % 240001) },
        /* no jitter, or nonsense jitter: the delay itself */
        { 600000, 0.0, 12345, 600000 },
        { 600000, -0.5, 12345, 600000 },
        { 600000, NAN, 12345, 600000 },
        /* jitter >= 1 is cut to span = delay - 1: never below 1 ms */
        { 100, 1.0, 0, 1 },
        { 100, 5.0, 0, 1 },
        { 100, 5.0, 198, 199 },
        { 100, INFINITY, 0, 1 },
        /* a span below 1 ms: unchanged */
        { 4, 0.2, 999, 4 },
        /* delay below 1 ms counts as 1 */
        { 0, 0.5, 7, 1 },
        { -50, 0.0, 7, 1 },
        /* saturation at the top */
        { INT64_MAX, 0.5, UINT64_MAX - 1, INT64_MAX },
        { INT64_MAX, 0.0, 0, INT64_MAX },
        { INT64_MAX, 0.999, 0, INT64_MAX - (int64_t)((double)INT64_MAX * 0.999) },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        CHECK_ROW(i, retry_jitter_delay(rows[i].delay, rows[i].jitter, rows[i].rnd), rows[i].want);
}

static void test_jitter_bounds(void **state)
{
    (void)state;
    static const struct {
        int64_t delay;
        double jitter;
    } rows[] = {
        { MIN, 0.2 }, { 10 * MIN, 0.2 }, { 4 * HOUR, 0.1 }, { 1500, 0.5 }, { 3, 0.9 },
        { 5 * DAY, 0.25 }, { 1000, 0.0 },
    };
    uint64_t st = 42;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int64_t span = (int64_t)((double)rows[i].delay * rows[i].jitter);
        int64_t lo = rows[i].delay - span, hi = rows[i].delay + span;
        int64_t seen_lo = INT64_MAX, seen_hi = INT64_MIN;
        double sum = 0;
        for (int k = 0; k < 10000; k++) {
            uint64_t rnd = next_rnd(&st);
            int64_t d = retry_jitter_delay(rows[i].delay, rows[i].jitter, rnd);
            if (d < lo || d > hi)
                fail_msg("row %zu: %lld outside [%lld, %lld]", i, (long long)d, (long long)lo,
                         (long long)hi);
            seen_lo = d < seen_lo ? d : seen_lo;
            seen_hi = d > seen_hi ? d : seen_hi;
            sum += (double)d;
            /* the due time is now plus the same jittered delay */
            CHECK_ROW(i, retry_next_due(1700000000000LL, rows[i].delay, rows[i].jitter, rnd),
                      1700000000000LL + d);
        }
        /* uniform: both ends of the range are reached (within 1% of the span) and the mean is
         * the delay (within 2% of the span) */
        assert_true(seen_lo <= lo + span / 100);
        assert_true(seen_hi >= hi - span / 100);
        double mean = sum / 10000;
        double off = mean - (double)rows[i].delay;
        assert_true(off <= 0.02 * (double)span + 0.5 && -off <= 0.02 * (double)span + 0.5);
    }
}

static void test_next_due_saturates(void **state)
{
    (void)state;
    assert_int_equal(retry_next_due(INT64_MAX - 10, 100, 0.0, 0), INT64_MAX);
    assert_int_equal(retry_next_due(INT64_MAX - 100, 100, 0.0, 0), INT64_MAX);
    assert_int_equal(retry_next_due(INT64_MAX - 101, 100, 0.0, 0), INT64_MAX - 1);
    assert_int_equal(retry_next_due(1000, INT64_MAX, 0.0, 0), INT64_MAX);
    assert_int_equal(retry_next_due(1000, 500, 0.0, 0), 1500);
    assert_true(retry_jitter_valid(0.0));
    assert_true(retry_jitter_valid(0.2));
    assert_true(retry_jitter_valid(0.999));
    assert_false(retry_jitter_valid(1.0));
    assert_false(retry_jitter_valid(-0.1));
    assert_false(retry_jitter_valid(NAN));
}

/* ---- max age and max attempts ------------------------------------------------------------ */

static void test_check_age(void **state)
{
    (void)state;
    const int64_t t0 = 1700000000000LL;
    static const struct {
        int64_t received_off;   /* received = t0 + this */
        int64_t now_off;        /* now = t0 + this */
        int64_t max_age;
        enum retry_verdict want;
    } rows[] = {
        { 0, 0, 5 * DAY, RETRY_AT },
        { 0, 5 * DAY - 1, 5 * DAY, RETRY_AT },
        { 0, 5 * DAY, 5 * DAY, RETRY_GIVE_UP_AGE },
        { 0, 5 * DAY + 1, 5 * DAY, RETRY_GIVE_UP_AGE },
        { 0, 30 * DAY, 5 * DAY, RETRY_GIVE_UP_AGE },
        { 0, 30 * DAY, 0, RETRY_AT },           /* no limit */
        { 0, 30 * DAY, -1, RETRY_AT },
        { HOUR, 0, 1, RETRY_AT },               /* clock behind the arrival time */
        { 0, 2 * SEC, SEC, RETRY_GIVE_UP_AGE },  /* shrunk for tests */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        CHECK_ROW(i, retry_check_age(t0 + rows[i].received_off, t0 + rows[i].now_off,
                                     rows[i].max_age), rows[i].want);
    /* extremes: the subtraction overflows, the age is "infinite" */
    assert_int_equal(retry_check_age(INT64_MIN, INT64_MAX, 5 * DAY), RETRY_GIVE_UP_AGE);
    assert_int_equal(retry_check_age(INT64_MIN, INT64_MAX, INT64_MAX), RETRY_GIVE_UP_AGE);
    assert_int_equal(retry_check_age(INT64_MAX, INT64_MIN, 1), RETRY_AT);
}

static void test_check_attempts(void **state)
{
    (void)state;
    static const struct {
        unsigned failures, max;
        enum retry_verdict want;
    } rows[] = {
        { 1, 0, RETRY_AT }, { UINT_MAX, 0, RETRY_AT },
        { 1, 1, RETRY_GIVE_UP_ATTEMPTS },
        { 1, 6, RETRY_AT }, { 5, 6, RETRY_AT }, { 6, 6, RETRY_GIVE_UP_ATTEMPTS },
        { 7, 6, RETRY_GIVE_UP_ATTEMPTS }, { 0, 6, RETRY_AT },
        { UINT_MAX - 1, UINT_MAX, RETRY_AT }, { UINT_MAX, UINT_MAX, RETRY_GIVE_UP_ATTEMPTS },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        CHECK_ROW(i, retry_check_attempts(rows[i].failures, rows[i].max), rows[i].want);
}

static void test_after_failure(void **state)
{
    (void)state;
    const int64_t t0 = 1700000000000LL;
    struct retry_schedule *rs = parse_ok("5*1m, 5*10m, 6*1h, 4h");
    static const struct {
        double jitter;
        int64_t max_age;
        unsigned max_attempts;
        int64_t now_off;        /* received = t0, now = t0 + this */
        unsigned failures;
        uint64_t rnd;
        enum retry_verdict want;
        int64_t due_off;        /* want due = t0 + this (RETRY_AT only) */
    } rows[] = {
        { 0, 5 * DAY, 0, 0, 1, 0, RETRY_AT, MIN },
        { 0, 5 * DAY, 0, 10 * MIN, 6, 0, RETRY_AT, 20 * MIN },
        { 0, 5 * DAY, 0, 2 * DAY, 20, 0, RETRY_AT, 2 * DAY + 4 * HOUR },
        /* jitter 0.2 of 1m: span 12000; rnd 0 = lowest, rnd 24000 = highest */
        { 0.2, 5 * DAY, 0, 0, 1, 0, RETRY_AT, MIN - 12000 },
        { 0.2, 5 * DAY, 0, 0, 1, 24000, RETRY_AT, MIN + 12000 },
        /* the next attempt would land after the deadline: moved to the deadline */
        { 0, 5 * DAY, 0, 5 * DAY - HOUR, 20, 0, RETRY_AT, 5 * DAY },
        { 0, 5 * DAY, 0, 5 * DAY - 1, 20, 0, RETRY_AT, 5 * DAY },
        { 0, 5 * DAY, 0, 5 * DAY - 4 * HOUR, 20, 0, RETRY_AT, 5 * DAY },
        { 0, 5 * DAY, 0, 5 * DAY - 4 * HOUR - 1, 20, 0, RETRY_AT, 5 * DAY - 1 },
        /* old enough: permanent */
        { 0, 5 * DAY, 0, 5 * DAY, 20, 0, RETRY_GIVE_UP_AGE, 0 },
        { 0, 5 * DAY, 0, 6 * DAY, 1, 0, RETRY_GIVE_UP_AGE, 0 },
        /* attempts used up */
        { 0, 5 * DAY, 3, HOUR, 2, 0, RETRY_AT, HOUR + MIN },
        { 0, 5 * DAY, 3, HOUR, 3, 0, RETRY_GIVE_UP_ATTEMPTS, 0 },
        /* both: the age wins */
        { 0, 5 * DAY, 3, 5 * DAY, 3, 0, RETRY_GIVE_UP_AGE, 0 },
        /* no age limit: no clamping */
        { 0, 0, 0, 400 * DAY, 20, 0, RETRY_AT, 400 * DAY + 4 * HOUR },
        /* seconds for tests */
        { 0, 10 * SEC, 0, 9 * SEC, 20, 0, RETRY_AT, 10 * SEC },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct retry_policy p = {
            .schedule = rs, .jitter = rows[i].jitter, .max_age_ms = rows[i].max_age,
            .max_attempts = rows[i].max_attempts,
        };
        int64_t due = -7;
        enum retry_verdict v = retry_after_failure(&p, t0, t0 + rows[i].now_off, rows[i].failures,
                                                   rows[i].rnd, &due);
        CHECK_ROW(i, v, rows[i].want);
        if (rows[i].want == RETRY_AT) {
            CHECK_ROW(i, due, t0 + rows[i].due_off);
            assert_true(due > t0 + rows[i].now_off);
        } else {
            CHECK_ROW(i, due, -7);      /* untouched */
        }
    }

    /* a deadline that overflows is no deadline; the due time saturates */
    struct retry_policy p = { .schedule = rs, .jitter = 0, .max_age_ms = INT64_MAX };
    int64_t due;
    assert_int_equal(retry_after_failure(&p, INT64_MAX - HOUR, INT64_MAX - HOUR, 20, 0, &due),
                     RETRY_AT);
    assert_int_equal(due, INT64_MAX);
    retry_schedule_free(rs);
}

static void test_verdict_names(void **state)
{
    (void)state;
    assert_string_equal(retry_verdict_name(RETRY_AT), "retry-at");
    assert_string_equal(retry_verdict_name(RETRY_GIVE_UP_AGE), "give-up-age");
    assert_string_equal(retry_verdict_name(RETRY_GIVE_UP_ATTEMPTS), "give-up-attempts");
    assert_string_equal(retry_verdict_name((enum retry_verdict)99), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_steps),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_error_buffer),
        cmocka_unit_test(test_delay_james_example),
        cmocka_unit_test(test_jitter_exact),
        cmocka_unit_test(test_jitter_bounds),
        cmocka_unit_test(test_next_due_saturates),
        cmocka_unit_test(test_check_age),
        cmocka_unit_test(test_check_attempts),
        cmocka_unit_test(test_after_failure),
        cmocka_unit_test(test_verdict_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
