/*
 * test_relay_queue.c - the relay's queue scripts (claim, outcome, lease expiry) against a real
 * redis-server: what each leaves in Redis, exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "buf.h"
#include "log.h"
#include "queue.h"
#include "redis.h"
#include "relay_queue.h"
#include "support/peer.h"
#include "support/redis_server.h"

/* How long a removed message's history stays, as relay.history_retention would say (seconds). */
#define HISTORY_S 3600

static struct event_base *base;
static struct redis *rq;
static redisContext *sc;

static int setup(void **state)
{
    (void)state;
    trs_start();
    log_init("test", LOG_WARN, 2);
    base = event_base_new();
    struct redis_target t = { .path = trs_sock };
    rq = redis_new(base, &t, 2000, "test");
    sc = trs_sync();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    redis_free(rq);
    redisFree(sc);
    event_base_free(base);
    trs_stop();
    return 0;
}

static bool connected(void *arg)
{
    (void)arg;
    return redis_connected(rq);
}

static redisReply *sync_cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(sc, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    return r;
}

static void flushall(void)
{
    freeReplyObject(sync_cmd("FLUSHALL"));
}

/* ---- enqueue a message ---- */

struct done {
    bool called, ok;
};

static void on_enqueued(bool ok, const char *err, void *arg)
{
    (void)err;
    struct done *d = arg;
    d->called = true;
    d->ok = ok;
}

static bool done_called(void *arg)
{
    return ((struct done *)arg)->called;
}

static void enqueue_as(const char *id, const char *const *to, size_t n, bool urgent)
{
    struct queue_rcpt rc[8];
    for (size_t i = 0; i < n; i++)
        rc[i] = (struct queue_rcpt){ .addr = (char *)to[i] };
    struct queue_msg m = {
        .id = id, .sender = "a@src.test", .client_ip = "127.0.0.1", .client_helo = "h",
        .listener = "mx", .session = "s", .received_ms = 1000, .rcpts = rc, .nrcpts = n,
        .body = "Subject: t\r\n\r\nbody\r\n", .body_len = 21, .urgent = urgent,
    };
    struct done d = { false, false };
    assert_true(tp_run_until(base, connected, NULL, 3000));
    assert_true(queue_enqueue(rq, "mxg", &m, on_enqueued, &d));
    assert_true(tp_run_until(base, done_called, &d, 3000));
    assert_true(d.ok);
}

static void enqueue(const char *id, const char *const *to, size_t n)
{
    enqueue_as(id, to, n, false);
}

/* ---- claim ---- */

struct claimed {
    bool called;
    size_t n;
    struct relay_claim c[16];
    char members[16][64];
    char ids[16][32];
};

static void on_claim(struct relay_claim *claims, size_t n, const char *err, void *arg)
{
    struct claimed *got = arg;
    assert_null(err);
    got->called = true;
    got->n = n;
    for (size_t i = 0; i < n && i < 16; i++) {
        got->c[i] = claims[i];
        snprintf(got->members[i], sizeof got->members[i], "%s", claims[i].member);
        snprintf(got->ids[i], sizeof got->ids[i], "%s", claims[i].id);
        got->c[i].member = got->members[i];
        got->c[i].id = got->ids[i];
    }
}

static bool claim_called(void *arg)
{
    return ((struct claimed *)arg)->called;
}

static void claim(const char *stage, long long lease_ms, unsigned max, struct claimed *got)
{
    static unsigned seq;
    char token[RELAY_TOKEN_LEN];
    snprintf(token, sizeof token, "test-%u", ++seq);
    memset(got, 0, sizeof *got);
    assert_true(relay_queue_claim(rq, "mxg", stage, lease_ms, max, token, on_claim, got));
    assert_true(tp_run_until(base, claim_called, got, 3000));
}

/* ---- outcome ---- */

struct outcome {
    bool called;
    char status[32];
};

static void on_outcome(const char *status, const char *err, void *arg)
{
    struct outcome *o = arg;
    assert_null(err);
    o->called = true;
    snprintf(o->status, sizeof o->status, "%s", status);
}

static bool outcome_called(void *arg)
{
    return ((struct outcome *)arg)->called;
}

static const char *record(const struct relay_claim *c, const struct relay_result *res)
{
    static struct outcome o;
    memset(&o, 0, sizeof o);
    assert_true(relay_queue_outcome(rq, "mxg", HISTORY_S, c, res, on_outcome, &o));
    assert_true(tp_run_until(base, outcome_called, &o, 3000));
    return o.status;
}

static long long zscore(const char *key, const char *member)
{
    redisReply *r = sync_cmd("ZSCORE %s %s", key, member);
    long long v = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : -1;
    freeReplyObject(r);
    return v;
}

/* The token that owns member's lease in the owner hash, or "" when none does. */
static const char *owner(const char *key, const char *member)
{
    static char text[RELAY_TOKEN_LEN];
    redisReply *r = sync_cmd("HGET %s %s", key, member);
    snprintf(text, sizeof text, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    return text;
}

static long long integer(const char *fmt, const char *arg)
{
    redisReply *r = sync_cmd(fmt, arg);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

/* The message's keys are gone; its history of n events stays for HISTORY_S. */
static void expect_removed(const char *id, long long n)
{
    static const char *const kinds[] = { "msg", "body", "rcpt" };
    char key[128];
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        snprintf(key, sizeof key, "mxg:%s:{%s}", kinds[i], id);
        assert_int_equal(integer("EXISTS %s", key), 0);
    }
    snprintf(key, sizeof key, "mxg:log:{%s}", id);
    long long ttl = integer("TTL %s", key);
    assert_true(ttl > HISTORY_S - 10 && ttl <= HISTORY_S);
    assert_int_equal(integer("LLEN %s", key), n);
}

/* The recipient record's JSON text. */
static char *rcpt_json(const char *id, unsigned idx)
{
    static char text[1024];
    redisReply *r = sync_cmd("HGET mxg:rcpt:{%s} %u", id, idx);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    snprintf(text, sizeof text, "%s", r->str);
    freeReplyObject(r);
    return text;
}

/* ---- tests ---- */

static void test_claim_moves_due_to_lease(void **state)
{
    (void)state;
    flushall();
    const char *to[] = { "b@x.test", "c@x.test", "d@y.test" };
    enqueue("ID1", to, 3);
    struct claimed got;
    claim(RELAY_STAGE_MAIN, 60000, 10, &got);
    assert_int_equal(got.n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(got.c[i].id, "ID1");
        assert_int_equal(got.c[i].index, i);
        assert_true(zscore("mxg:lease", got.c[i].member) > 0);
        assert_string_equal(owner("mxg:lease:owner", got.c[i].member), got.c[i].token);
    }
    assert_int_equal(integer("ZCARD %s", "mxg:due"), 0);
    /* Nothing is due any more: a second claim (another node) gets nothing. */
    struct claimed again;
    claim(RELAY_STAGE_MAIN, 60000, 10, &again);
    assert_int_equal(again.n, 0);
}

static void test_claim_respects_max_and_due_time(void **state)
{
    (void)state;
    flushall();
    const char *to[] = { "a@x.test", "b@x.test", "c@x.test", "d@x.test" };
    enqueue("ID2", to, 4);
    freeReplyObject(sync_cmd("ZADD mxg:due 99999999999999 ID2/3"));   /* not due */
    struct claimed got;
    claim(RELAY_STAGE_MAIN, 60000, 2, &got);
    assert_int_equal(got.n, 2);
    claim(RELAY_STAGE_MAIN, 60000, 10, &got);
    assert_int_equal(got.n, 1);
    assert_string_equal(got.c[0].member, "ID2/2");
    assert_int_equal(integer("ZCARD %s", "mxg:due"), 1);
}

static void test_outcomes_and_removal(void **state)
{
    (void)state;
    flushall();
    const char *to[] = { "b@x.test", "c@x.test", "d@y.test" };
    enqueue("ID3", to, 3);
    struct claimed got;
    claim(RELAY_STAGE_MAIN, 60000, 10, &got);
    assert_int_equal(got.n, 3);

    struct relay_result delivered = { .outcome = OUTCOME_DELIVERED, .code = 250, .status = "2.0.0",
                                      .text = "Ok: queued as X", .mx = "mx.x.test" };
    assert_string_equal(record(&got.c[0], &delivered), "ok");
    const char *j = rcpt_json("ID3", 0);
    assert_non_null(strstr(j, "\"state\":\"delivered\""));
    assert_non_null(strstr(j, "\"attempts\":1"));
    assert_non_null(strstr(j, "\"code\":250"));
    assert_null(strstr(j, "\"due\""));
    assert_int_equal(zscore("mxg:lease", "ID3/0"), -1);
    assert_string_equal(owner("mxg:lease:owner", "ID3/0"), "");

    struct relay_result deferred = { .outcome = OUTCOME_DEFERRED, .due_ms = 5000000000000LL,
                                     .code = 451, .status = "4.3.0", .text = "try later" };
    assert_string_equal(record(&got.c[1], &deferred), "ok");
    j = rcpt_json("ID3", 1);
    assert_non_null(strstr(j, "\"state\":\"deferred\""));
    assert_non_null(strstr(j, "\"due\":5000000000000"));
    assert_int_equal(zscore("mxg:due", "ID3/1"), 5000000000000LL);

    /* A stale claim (token no longer ours) writes nothing. */
    struct relay_claim stale = got.c[2];
    snprintf(stale.token, sizeof stale.token, "someone-else");
    assert_string_equal(record(&stale, &delivered), "stale");
    assert_string_equal(owner("mxg:lease:owner", "ID3/2"), got.c[2].token);

    struct relay_result failed = { .outcome = OUTCOME_FAILED, .code = 550, .status = "5.1.1",
                                   .text = "no such user" };
    assert_string_equal(record(&got.c[2], &failed), "ok");      /* ID3/1 is still deferred */
    assert_int_equal(integer("EXISTS %s", "mxg:msg:{ID3}"), 1);

    /* The deferred one comes due, is claimed and delivered: the message is gone. */
    freeReplyObject(sync_cmd("ZADD mxg:due 0 ID3/1"));
    claim(RELAY_STAGE_MAIN, 60000, 10, &got);
    assert_int_equal(got.n, 1);
    assert_string_equal(record(&got.c[0], &delivered), "removed");
    /* enqueued + 4 recorded outcomes (the stale one wrote nothing) */
    expect_removed("ID3", 5);
}

static void test_throttle_does_not_count_attempt(void **state)
{
    (void)state;
    flushall();
    const char *to[] = { "b@x.test" };
    enqueue("ID4", to, 1);
    struct claimed got;
    claim(RELAY_STAGE_MAIN, 60000, 10, &got);
    struct relay_result thr = { .outcome = OUTCOME_THROTTLED, .due_ms = 4000000000000LL,
                                .text = "throttled" };
    assert_string_equal(record(&got.c[0], &thr), "ok");
    const char *j = rcpt_json("ID4", 0);
    assert_non_null(strstr(j, "\"attempts\":0"));
    assert_non_null(strstr(j, "\"due\":4000000000000"));
    assert_int_equal(zscore("mxg:due", "ID4/0"), 4000000000000LL);
}

struct count {
    bool called;
    long long n;
};

static void on_count(long long v, const char *err, void *arg)
{
    assert_null(err);
    struct count *c = arg;
    c->n = v;
    c->called = true;
}

static bool count_called(void *arg)
{
    return ((struct count *)arg)->called;
}

static void test_lease_expiry_returns_work(void **state)
{
    (void)state;
    flushall();
    const char *to[] = { "b@x.test", "c@x.test" };
    enqueue("ID5", to, 2);
    struct claimed got;
    claim(RELAY_STAGE_MAIN, 1, 10, &got);        /* a 1 ms lease: a node that died at once */
    assert_int_equal(got.n, 2);
    tp_sleep_ms(20);
    struct count c = { false, -2 };
    assert_true(relay_queue_expire_leases(rq, "mxg", RELAY_STAGE_MAIN, on_count, &c));
    assert_true(tp_run_until(base, count_called, &c, 3000));
    assert_int_equal(c.n, 2);
    assert_int_equal(integer("ZCARD %s", "mxg:lease"), 0);
    assert_int_equal(integer("HLEN %s", "mxg:lease:owner"), 0);
    assert_int_equal(integer("ZCARD %s", "mxg:due"), 2);
    /* The old holder's late outcome is stale once another node claimed the work. */
    struct claimed again;
    claim(RELAY_STAGE_MAIN, 60000, 10, &again);
    assert_int_equal(again.n, 2);
    struct relay_result delivered = { .outcome = OUTCOME_DELIVERED, .code = 250 };
    assert_string_equal(record(&got.c[0], &delivered), "stale");
}

static void test_renewal_extends_only_owned_leases(void **state)
{
    (void)state;
    flushall();
    const char *to[] = { "b@x.test", "c@x.test" };
    enqueue("ID9", to, 2);
    struct claimed got;
    claim(RELAY_STAGE_MAIN, 1000, 10, &got);
    assert_int_equal(got.n, 2);
    long long before = zscore("mxg:lease", "ID9/0");
    struct relay_claim other = got.c[1];
    snprintf(other.token, sizeof other.token, "not-the-owner");
    const struct relay_claim *batch[] = { &got.c[0], &other };
    struct count c = { false, -2 };
    assert_true(relay_queue_renew(rq, "mxg", RELAY_STAGE_MAIN, 600000, batch, 2, on_count, &c));
    assert_true(tp_run_until(base, count_called, &c, 3000));
    assert_int_equal(c.n, 1);
    assert_true(zscore("mxg:lease", "ID9/0") >= before + 500000);
    assert_true(zscore("mxg:lease", "ID9/1") < before + 1000);
}

static void test_urgent_work_is_claimed_first(void **state)
{
    (void)state;
    flushall();
    const char *to[] = { "a@x.test", "b@x.test", "c@x.test" };
    enqueue("OLD", to, 3);          /* a backlog, due long ago */
    const char *one[] = { "boss@x.test" };
    enqueue_as("BOUNCE", one, 1, true);
    assert_int_equal(integer("ZCARD %s", "mxg:due:urgent"), 1);
    struct claimed got;
    claim(RELAY_STAGE_MAIN, 60000, 1, &got);
    assert_int_equal(got.n, 1);
    assert_string_equal(got.c[0].member, "BOUNCE/0");
    claim(RELAY_STAGE_MAIN, 60000, 10, &got);
    assert_int_equal(got.n, 3);
    assert_int_equal(integer("ZCARD %s", "mxg:due:urgent"), 0);
}

static void test_route_to_local_stage(void **state)
{
    (void)state;
    flushall();
    const char *to[] = { "bob@local.test" };
    enqueue("ID6", to, 1);
    struct claimed got;
    claim(RELAY_STAGE_MAIN, 60000, 10, &got);
    struct relay_result routed = { .outcome = OUTCOME_ROUTED, .stage = "local", .text = "local domain" };
    assert_string_equal(record(&got.c[0], &routed), "ok");
    assert_true(zscore("mxg:local:due", "ID6/0") > 0);
    assert_non_null(strstr(rcpt_json("ID6", 0), "\"stage\":\"local\""));
    struct claimed local;
    claim("local", 60000, 10, &local);
    assert_int_equal(local.n, 1);
    assert_string_equal(owner("mxg:local:lease:owner", "ID6/0"), local.c[0].token);
}

static void test_failed_into_repository_keeps_message(void **state)
{
    (void)state;
    flushall();
    const char *to[] = { "b@x.test" };
    enqueue("ID7", to, 1);
    struct claimed got;
    claim(RELAY_STAGE_MAIN, 60000, 10, &got);
    struct relay_result failed = { .outcome = OUTCOME_FAILED, .code = 550, .status = "5.1.1",
                                   .text = "unknown", .repo = "remote-delivery/permanent" };
    assert_string_equal(record(&got.c[0], &failed), "ok");
    assert_true(zscore("mxg:repo:remote-delivery/permanent", "ID7") > 0);
    assert_int_equal(integer("EXISTS %s", "mxg:body:{ID7}"), 1);
    redisReply *r = sync_cmd("HGET mxg:msg:{ID7} repo");
    assert_string_equal(r->str, "remote-delivery/permanent");
    freeReplyObject(r);
}

/* A message's only recipient reaches its end: the message goes at once, its history stays. */
static void test_single_recipient_removed(void **state)
{
    (void)state;
    struct relay_result delivered = { .outcome = OUTCOME_DELIVERED, .code = 250, .status = "2.0.0",
                                      .text = "Ok", .mx = "mx.x.test" };
    struct relay_result failed = { .outcome = OUTCOME_FAILED, .code = 550, .status = "5.1.1",
                                   .text = "unknown" };
    const struct relay_result *ends[] = { &delivered, &failed };
    const char *events[] = { "\"event\":\"delivered\"", "\"event\":\"failed\"" };
    for (size_t i = 0; i < 2; i++) {
        flushall();
        const char *to[] = { "b@x.test" };
        enqueue("ID9", to, 1);
        struct claimed got;
        claim(RELAY_STAGE_MAIN, 60000, 10, &got);
        assert_int_equal(got.n, 1);
        assert_string_equal(record(&got.c[0], ends[i]), "removed");
        expect_removed("ID9", 2);
        assert_int_equal(integer("ZCARD %s", "mxg:lease"), 0);
        assert_int_equal(integer("HLEN %s", "mxg:lease:owner"), 0);
        redisReply *r = sync_cmd("LINDEX mxg:log:{ID9} 1");
        assert_int_equal(r->type, REDIS_REPLY_STRING);
        assert_non_null(strstr(r->str, events[i]));
        assert_non_null(strstr(r->str, "\"to\":\"b@x.test\""));
        freeReplyObject(r);
    }
}

static void test_utf8_survives_lua_json(void **state)
{
    (void)state;
    flushall();
    const char *to[] = { "\xc3\xbcser@x.test" };
    enqueue("ID8", to, 1);
    struct claimed got;
    claim(RELAY_STAGE_MAIN, 60000, 10, &got);
    struct relay_result deferred = { .outcome = OUTCOME_DEFERRED, .due_ms = 1, .code = 451,
                                     .text = "quote \" and \xc3\xa9" };
    assert_string_equal(record(&got.c[0], &deferred), "ok");
    const char *j = rcpt_json("ID8", 0);
    assert_non_null(strstr(j, "\"to\":\"\xc3\xbcser@x.test\""));
    assert_non_null(strstr(j, "quote \\\" and \xc3\xa9"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_claim_moves_due_to_lease),
        cmocka_unit_test(test_claim_respects_max_and_due_time),
        cmocka_unit_test(test_outcomes_and_removal),
        cmocka_unit_test(test_throttle_does_not_count_attempt),
        cmocka_unit_test(test_lease_expiry_returns_work),
        cmocka_unit_test(test_renewal_extends_only_owned_leases),
        cmocka_unit_test(test_urgent_work_is_claimed_first),
        cmocka_unit_test(test_route_to_local_stage),
        cmocka_unit_test(test_failed_into_repository_keeps_message),
        cmocka_unit_test(test_single_recipient_removed),
        cmocka_unit_test(test_utf8_survives_lua_json),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
