/*
 * test_redis.c - redis.c (commands, scripts, subscriptions) and queue_enqueue() against a real
 * redis-server.
 *
 * The group setup starts redis-server (Debian's 7.x) in a mkdtemp directory on a unix socket with
 * the durability settings mxgate requires, and every test drives a libevent loop. The tests
 * stop, freeze (SIGSTOP) and restart the server, make it full (maxmemory) and read-only (a
 * replica), and check that the caller always hears back exactly once and never hears "ok" when
 * Redis did not apply the whole transaction. Scripts must reach the server once per connection
 * (counted in INFO commandstats) and come back after SCRIPT FLUSH and restarts; subscribers must
 * get every message of their channel, byte for byte, across restarts, and take no other command.
 * The server is killed at exit (atexit, and PR_SET_PDEATHSIG should the test die).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "queue.h"
#include "redis.h"
#include "support/peer.h"
#include "support/redis_server.h"

static char log_path[128];
static int log_fd = -1;
static struct event_base *base;

/* ---- the server ------------------------------------------------------------------------------ */

/* Runs a command on a fresh blocking connection and checks it answered +OK. */
static void admin(const char *fmt, const char *arg)
{
    redisContext *c = trs_sync();
    redisReply *r = redisCommand(c, fmt, arg);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("%s: %s", fmt, r->str);
    freeReplyObject(r);
    redisFree(c);
}

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    trs_start();
    snprintf(log_path, sizeof log_path, "%s/mxgate.log", trs_dir);
    log_fd = open(log_path, O_RDWR | O_CREAT | O_APPEND, 0600);
    if (log_fd < 0)
        return -1;
    log_init("test", LOG_INFO, log_fd);
    base = event_base_new();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    trs_stop();
    event_base_free(base);
    close(log_fd);
    log_init("test", LOG_INFO, 2);
    return 0;
}

/* ---- the loop -------------------------------------------------------------------------------- */

static bool run_until(bool (*pred)(void *), void *arg, long long ms)
{
    return tp_run_until(base, pred, arg, ms);
}

static void run_for(long long ms)
{
    tp_run_for(base, ms);
}

static bool is_connected(void *arg)
{
    return redis_connected(arg);
}

static bool is_down(void *arg)
{
    return !redis_connected(arg);
}

/* Counts log lines of an event (that also contain text, unless NULL). */
static int log_count_with(const char *event, const char *text)
{
    char needle[64];
    snprintf(needle, sizeof needle, "\"event\":\"%s\"", event);
    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL)
        n += strstr(line, needle) != NULL && (text == NULL || strstr(line, text) != NULL);
    fclose(f);
    return n;
}

static int log_count(const char *event)
{
    return log_count_with(event, NULL);
}

static struct redis *connect_new(long long timeout_ms, const char *name)
{
    struct redis_target t = { .path = trs_sock };
    struct redis *r = redis_new(base, &t, timeout_ms, name);
    assert_true(run_until(is_connected, r, 3000));
    return r;
}

/* ---- replies --------------------------------------------------------------------------------- */

struct got {
    int calls;
    bool had_reply;
    int type;
    char str[512];
    char err[256];
};

static void on_reply(redisReply *reply, const char *err, void *arg)
{
    struct got *g = arg;
    g->calls++;
    g->had_reply = reply != NULL;
    if (reply != NULL) {
        g->type = reply->type;
        snprintf(g->str, sizeof g->str, "%s", reply->str != NULL ? reply->str : "");
    }
    snprintf(g->err, sizeof g->err, "%s", err != NULL ? err : "");
}

static bool got_called(void *arg)
{
    return ((struct got *)arg)->calls > 0;
}

struct done {
    int calls;
    bool ok;
    char err[256];
};

static void on_done(bool ok, const char *err, void *arg)
{
    struct done *d = arg;
    d->calls++;
    d->ok = ok;
    snprintf(d->err, sizeof d->err, "%s", err != NULL ? err : "(null)");
}

static bool done_called(void *arg)
{
    return ((struct done *)arg)->calls > 0;
}

/* ---- a message ------------------------------------------------------------------------------- */

static const char body[] = "From: <a@example.test>\r\nSubject: binary\r\n\r\nline one\r\n"
                           "nul\0inside\r\n.\r\n..dot\r\n\r\n\xff\xfe\x01 end\r\n";
#define BODY_LEN (sizeof body - 1)
#define RECEIVED 1700000000123LL

static const struct queue_rcpt rcpts[3] = {
    { "r0@example.test", NULL, 0 },
    { "\"a b\"@example.test", "rfc822;\"a b\"@example.test", 2 | 4 | 8 },
    { "r2@example.test", NULL, 1 },
};

static struct queue_msg make_msg(const char *id)
{
    struct queue_msg m = {
        .id = id,
        .sender = "a@example.test",
        .envid = "ENV1",
        .ret = "HDRS",
        .body_type = "8BITMIME",
        .smtputf8 = false,
        .client_ip = "192.0.2.1",
        .client_helo = "helo.example",
        .auth_user = NULL,
        .listener = "mx",
        .session = "S1",
        .received_ms = RECEIVED,
        .rcpts = rcpts,
        .nrcpts = 3,
        .body = body,
        .body_len = BODY_LEN,
    };
    return m;
}

/* Enqueues and waits for the verdict; returns false when queue_enqueue() itself refused. */
static bool enqueue(struct redis *r, const char *prefix, const char *id, struct done *d,
                    long long ms)
{
    struct queue_msg m = make_msg(id);
    memset(d, 0, sizeof *d);
    if (!queue_enqueue(r, prefix, &m, on_done, d))
        return false;
    assert_int_equal(d->calls, 0);      /* never from inside the call */
    assert_true(run_until(done_called, d, ms));
    return true;
}

static redisReply *cmd(redisContext *c, const char *fmt, const char *a, const char *b)
{
    redisReply *r = redisCommand(c, fmt, a, b);
    assert_non_null(r);
    return r;
}

static void expect_str(redisContext *c, const char *fmt, const char *a, const char *b,
                       const char *want)
{
    redisReply *r = cmd(c, fmt, a, b);
    if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS)
        fail_msg("%s %s %s: reply type %d", fmt, a, b ? b : "", r->type);
    assert_string_equal(r->str, want);
    freeReplyObject(r);
}

static void expect_nil(redisContext *c, const char *fmt, const char *a, const char *b)
{
    redisReply *r = cmd(c, fmt, a, b);
    assert_int_equal(r->type, REDIS_REPLY_NIL);
    freeReplyObject(r);
}

static void expect_int(redisContext *c, const char *fmt, const char *a, long long want)
{
    redisReply *r = cmd(c, fmt, a, NULL);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, want);
    freeReplyObject(r);
}

static void key(char *out, size_t n, const char *prefix, const char *kind, const char *id)
{
    struct buf b = BUF_INIT;
    queue_key(&b, prefix, kind, id);
    snprintf(out, n, "%s", buf_cstr(&b));
    buf_release(&b);
}

/* Nothing of message id exists under prefix: the transaction left no trace. */
static void expect_absent(const char *prefix, const char *id)
{
    redisContext *c = trs_sync();
    static const char *const kinds[] = { "msg", "body", "rcpt", "log" };
    for (size_t i = 0; i < 4; i++) {
        char k[128];
        key(k, sizeof k, prefix, kinds[i], id);
        expect_int(c, "EXISTS %s", k, 0);
    }
    char due[64];
    snprintf(due, sizeof due, "%s:due", prefix);
    expect_int(c, "ZCARD %s", due, 0);
    redisFree(c);
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_url_parse(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        const char *host;
        int port;
        const char *path, *password;
        int db;
        const char *err;    /* NULL: must parse */
    } cases[] = {
        { "redis://127.0.0.1", "127.0.0.1", 6379, NULL, NULL, 0, NULL },
        { "redis://localhost:6380/2", "localhost", 6380, NULL, NULL, 2, NULL },
        { "redis://redis-1.example_net", "redis-1.example_net", 6379, NULL, NULL, 0, NULL },
        { "redis://:s%40cret@10.0.0.1:7000/15", "10.0.0.1", 7000, NULL, "s@cret", 15, NULL },
        { "redis://:p@ss@host", "host", 6379, NULL, "p@ss", 0, NULL },
        { "redis://[::1]:6381/3", "::1", 6381, NULL, NULL, 3, NULL },
        { "redis://[fe80::1]", "fe80::1", 6379, NULL, NULL, 0, NULL },
        { "redis://host/", "host", 6379, NULL, NULL, 0, NULL },
        { "unix:/var/run/redis.sock", NULL, 0, "/var/run/redis.sock", NULL, 0, NULL },
        { "unix:///var/run/redis.sock?db=4", NULL, 0, "/var/run/redis.sock", NULL, 4, NULL },
        { "unix:var/redis.sock", NULL, 0, "var/redis.sock", NULL, 0, NULL },
        { "", NULL, 0, NULL, NULL, 0, "redis.url \"\": empty URL" },
        { "http://x", NULL, 0, NULL, NULL, 0,
          "redis.url \"http://x\": must start with redis:// or unix:" },
        { "redis://", NULL, 0, NULL, NULL, 0, "redis.url \"redis://\": missing host" },
        { "redis://:7000", NULL, 0, NULL, NULL, 0, "redis.url \"redis://:7000\": missing host" },
        { "redis://h:0", NULL, 0, NULL, NULL, 0,
          "redis.url \"redis://h:0\": port must be a number from 1 to 65535" },
        { "redis://h:65536", NULL, 0, NULL, NULL, 0,
          "redis.url \"redis://h:65536\": port must be a number from 1 to 65535" },
        { "redis://h:", NULL, 0, NULL, NULL, 0,
          "redis.url \"redis://h:\": port must be a number from 1 to 65535" },
        { "redis://h:6379x", NULL, 0, NULL, NULL, 0,
          "redis.url \"redis://h:6379x\": port must be a number from 1 to 65535" },
        { "redis://h/x", NULL, 0, NULL, NULL, 0,
          "redis.url \"redis://h/x\": database must be a number (redis://host:port/db)" },
        { "redis://h/1?x=2", NULL, 0, NULL, NULL, 0,
          "redis.url \"redis://h/1?x=2\": database must be a number (redis://host:port/db)" },
        { "redis://user:pw@h", NULL, 0, NULL, NULL, 0,
          "redis.url \"redis://***@h\": "
          "user names are not supported (use redis://:password@host)" },
        { "redis://:@h", NULL, 0, NULL, NULL, 0, "redis.url \"redis://***@h\": empty password" },
        { "redis://:secret%zz@h", NULL, 0, NULL, NULL, 0,
          "redis.url \"redis://***@h\": bad %-escape in the password" },
        { "redis://:secret@h:99999", NULL, 0, NULL, NULL, 0,
          "redis.url \"redis://***@h:99999\": port must be a number from 1 to 65535" },
        { "redis://[::1", NULL, 0, NULL, NULL, 0,
          "redis.url \"redis://[::1\": missing ']' after an IPv6 address" },
        { "redis://[::1]x", NULL, 0, NULL, NULL, 0,
          "redis.url \"redis://[::1]x\": unexpected text after ']'" },
        { "redis://h o", NULL, 0, NULL, NULL, 0,
          "redis.url \"redis://h o\": bad character in the host" },
        { "unix:", NULL, 0, NULL, NULL, 0, "redis.url \"unix:\": missing socket path" },
        { "unix:///", NULL, 0, "/", NULL, 0, NULL },
        { "unix://relative", NULL, 0, NULL, NULL, 0,
          "redis.url \"unix://relative\": use unix:/path or unix:///path" },
        { "unix:/p?db=x", NULL, 0, NULL, NULL, 0,
          "redis.url \"unix:/p?db=x\": db must be a number" },
        { "unix:/p?foo=1", NULL, 0, NULL, NULL, 0,
          "redis.url \"unix:/p?foo=1\": the only parameter is ?db=N" },
        { "unix:?db=1", NULL, 0, NULL, NULL, 0, "redis.url \"unix:?db=1\": missing socket path" },
        { "unix:/a\nb", NULL, 0, NULL, NULL, 0,
          "redis.url \"unix:/a\\x0ab\": control character in the socket path" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct redis_target t;
        struct buf err = BUF_INIT;
        bool ok = redis_url_parse(cases[i].url, &t, &err);
        if (cases[i].err == NULL) {
            if (!ok)
                fail_msg("%s: %s", cases[i].url, buf_cstr(&err));
            if (cases[i].host != NULL)
                assert_string_equal(t.host, cases[i].host);
            else
                assert_null(t.host);
            assert_int_equal(t.port, cases[i].port);
            if (cases[i].path != NULL)
                assert_string_equal(t.path, cases[i].path);
            else
                assert_null(t.path);
            if (cases[i].password != NULL)
                assert_string_equal(t.password, cases[i].password);
            else
                assert_null(t.password);
            assert_int_equal(t.db, cases[i].db);
        } else {
            if (ok)
                fail_msg("%s: parsed, expected an error", cases[i].url);
            assert_string_equal(buf_cstr(&err), cases[i].err);
            assert_null(strstr(buf_cstr(&err), "secret"));
            assert_null(t.host);
            assert_null(t.path);
            assert_null(t.password);
        }
        redis_target_clear(&t);
        buf_release(&err);
    }
}

static void on_up(struct redis *r, void *arg)
{
    (void)r;
    (*(int *)arg)++;
}

static void test_connect_ping(void **state)
{
    (void)state;
    struct redis_target t = { .path = trs_sock };
    struct redis *r = redis_new(base, &t, 1000, "test ping");
    int ups = 0;
    redis_on_connect(r, on_up, &ups);
    /* Not connected yet: refused at once, callback never called. */
    struct got g0 = { 0 };
    assert_false(redis_connected(r));
    assert_false(redis_commandf(r, on_reply, &g0, "PING"));
    assert_true(run_until(is_connected, r, 3000));
    assert_int_equal(ups, 1);
    assert_int_equal(g0.calls, 0);

    struct got g = { 0 };
    assert_true(redis_commandf(r, on_reply, &g, "PING"));
    assert_int_equal(g.calls, 0);
    assert_true(run_until(got_called, &g, 2000));
    assert_int_equal(g.type, REDIS_REPLY_STATUS);
    assert_string_equal(g.str, "PONG");
    assert_string_equal(g.err, "");

    /* The name went through CLIENT SETNAME, spaces replaced. */
    memset(&g, 0, sizeof g);
    const char *argv[] = { "CLIENT", "GETNAME" };
    assert_true(redis_command(r, on_reply, &g, 2, argv, NULL));
    assert_true(run_until(got_called, &g, 2000));
    assert_string_equal(g.str, "test-ping");

    /* Binary-safe arguments, and an error reply reaches the callback as a reply. */
    memset(&g, 0, sizeof g);
    const char *set[] = { "SET", "t:bin", "a\0b" };
    const size_t setlen[] = { 3, 5, 3 };
    assert_true(redis_command(r, on_reply, &g, 3, set, setlen));
    assert_true(run_until(got_called, &g, 2000));
    assert_string_equal(g.str, "OK");
    memset(&g, 0, sizeof g);
    assert_true(redis_commandf(r, on_reply, &g, "NOSUCHCOMMAND %s", "x"));
    assert_true(run_until(got_called, &g, 2000));
    assert_true(g.had_reply);
    assert_int_equal(g.type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(g.str, "unknown command"));

    /* Fire and forget. */
    assert_true(redis_commandf(r, NULL, NULL, "SET %s %s", "t:ff", "1"));
    run_for(100);
    redisContext *c = trs_sync();
    expect_str(c, "GET %s", "t:ff", NULL, "1");
    redisFree(c);
    assert_int_equal(g.calls, 1);
    redis_free(r);
    redis_free(NULL);
}

static void test_enqueue_layout(void **state)
{
    (void)state;
    struct redis *r = connect_new(1000, "enq");
    char id[QUEUE_ID_LEN + 1];
    queue_id_new(id);
    struct done d;
    assert_true(enqueue(r, "t1", id, &d, 2000));
    assert_int_equal(d.calls, 1);
    if (!d.ok)
        fail_msg("enqueue failed: %s", d.err);
    assert_string_equal(d.err, "(null)");

    redisContext *c = trs_sync();
    char kmsg[64], kbody[64], krcpt[64], klog[64];
    key(kmsg, sizeof kmsg, "t1", "msg", id);
    key(kbody, sizeof kbody, "t1", "body", id);
    key(krcpt, sizeof krcpt, "t1", "rcpt", id);
    key(klog, sizeof klog, "t1", "log", id);
    expect_str(c, "TYPE %s", kmsg, NULL, "hash");
    expect_str(c, "TYPE %s", kbody, NULL, "string");
    expect_str(c, "TYPE %s", krcpt, NULL, "hash");
    expect_str(c, "TYPE %s", "t1:due", NULL, "zset");
    expect_str(c, "TYPE %s", klog, NULL, "list");

    /* The body, byte for byte. */
    redisReply *rep = cmd(c, "GET %s", kbody, NULL);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_int_equal(rep->len, BODY_LEN);
    assert_memory_equal(rep->str, body, BODY_LEN);
    freeReplyObject(rep);

    /* The envelope: exactly these fields (auth_user was NULL: absent). */
    char size[16];
    snprintf(size, sizeof size, "%zu", BODY_LEN);
    const char *fields[][2] = {
        { "sender", "a@example.test" }, { "envid", "ENV1" }, { "ret", "HDRS" },
        { "body_type", "8BITMIME" }, { "smtputf8", "0" }, { "client_ip", "192.0.2.1" },
        { "client_helo", "helo.example" }, { "listener", "mx" }, { "session", "S1" },
        { "received_ms", "1700000000123" }, { "nrcpt", "3" }, { "size", size },
    };
    size_t nf = sizeof fields / sizeof fields[0];
    expect_int(c, "HLEN %s", kmsg, (long long)nf);
    for (size_t i = 0; i < nf; i++)
        expect_str(c, "HGET %s %s", kmsg, fields[i][0], fields[i][1]);
    expect_nil(c, "HGET %s %s", kmsg, "auth_user");

    /* One JSON record per recipient. */
    expect_int(c, "HLEN %s", krcpt, 3);
    expect_str(c, "HGET %s %s", krcpt, "0",
               "{\"to\":\"r0@example.test\",\"state\":\"pending\",\"attempts\":0,"
               "\"due\":1700000000123}");
    expect_str(c, "HGET %s %s", krcpt, "1",
               "{\"to\":\"\\\"a b\\\"@example.test\",\"orcpt\":\"rfc822;\\\"a b\\\"@example.test\","
               "\"notify\":[\"SUCCESS\",\"FAILURE\",\"DELAY\"],\"state\":\"pending\","
               "\"attempts\":0,\"due\":1700000000123}");
    expect_str(c, "HGET %s %s", krcpt, "2",
               "{\"to\":\"r2@example.test\",\"notify\":[\"NEVER\"],\"state\":\"pending\","
               "\"attempts\":0,\"due\":1700000000123}");

    /* The schedule: one member per recipient, due at reception. */
    expect_int(c, "ZCARD %s", "t1:due", 3);
    for (int i = 0; i < 3; i++) {
        char member[64];
        snprintf(member, sizeof member, "%s/%d", id, i);
        expect_str(c, "ZSCORE %s %s", "t1:due", member, "1700000000123");
    }

    /* The message's history. */
    expect_int(c, "LLEN %s", klog, 1);
    char want[256];
    snprintf(want, sizeof want,
             "{\"ts\":1700000000123,\"event\":\"enqueued\",\"nrcpt\":3,\"size\":%zu,"
             "\"client\":\"192.0.2.1\",\"session\":\"S1\"}", BODY_LEN);
    expect_str(c, "LINDEX %s %s", klog, "0", want);
    redisFree(c);
    redis_free(r);
}

static void test_enqueue_server_down_and_back(void **state)
{
    (void)state;
    struct redis *r = connect_new(1000, "down");
    int down0 = log_count("redis-down"), up0 = log_count("redis-connected");
    char id[QUEUE_ID_LEN + 1];

    /* Killed, and not noticed yet: the enqueue is sent and fails. */
    trs_stop();
    assert_true(redis_connected(r));
    queue_id_new(id);
    struct done d;
    assert_true(enqueue(r, "t2", id, &d, 2000));
    assert_int_equal(d.calls, 1);
    assert_false(d.ok);
    assert_non_null(strstr(d.err, "connection lost"));

    /* Noticed: refused at once, no callback. */
    assert_true(run_until(is_down, r, 2000));
    queue_id_new(id);
    assert_false(enqueue(r, "t2", id, &d, 100));
    assert_int_equal(d.calls, 0);
    struct got g = { 0 };
    assert_false(redis_commandf(r, on_reply, &g, "PING"));

    /* Several reconnect attempts fail (100, 200, 400 ms...), logged once. */
    run_for(800);
    assert_int_equal(log_count("redis-down"), down0 + 1);
    assert_int_equal(g.calls, 0);
    assert_int_equal(d.calls, 0);

    /* Back: reconnects by itself, the enqueue works, the recovery is logged once. */
    trs_start();
    assert_true(run_until(is_connected, r, 3000));
    assert_int_equal(log_count("redis-connected"), up0 + 1);
    queue_id_new(id);
    assert_true(enqueue(r, "t2", id, &d, 2000));
    assert_true(d.ok);
    redis_free(r);
}

static void test_enqueue_oom(void **state)
{
    (void)state;
    struct redis *r = connect_new(1000, "oom");
    admin("CONFIG SET maxmemory-policy %s", "noeviction");
    admin("CONFIG SET maxmemory %s", "1");
    char id[QUEUE_ID_LEN + 1];
    queue_id_new(id);
    struct done d;
    assert_true(enqueue(r, "t3", id, &d, 2000));
    admin("CONFIG SET maxmemory %s", "0");
    assert_int_equal(d.calls, 1);
    assert_false(d.ok);
    assert_non_null(strstr(d.err, "OOM command not allowed"));
    expect_absent("t3", id);
    /* Memory back: the same message goes in. */
    assert_true(enqueue(r, "t3", id, &d, 2000));
    assert_true(d.ok);
    redis_free(r);
}

static void test_enqueue_readonly(void **state)
{
    (void)state;
    struct redis *r = connect_new(1000, "ro");
    admin("REPLICAOF 127.0.0.1 %s", "1");
    char id[QUEUE_ID_LEN + 1];
    queue_id_new(id);
    struct done d;
    /* Becoming a replica does not drop clients: the writes are refused while queuing. */
    bool sent = enqueue(r, "t4", id, &d, 2000);
    admin("REPLICAOF NO ONE%s", "");
    assert_true(sent);
    assert_int_equal(d.calls, 1);
    assert_false(d.ok);
    assert_non_null(strstr(d.err, "READONLY"));
    expect_absent("t4", id);
    assert_true(run_until(is_connected, r, 3000));
    queue_id_new(id);
    assert_true(enqueue(r, "t4", id, &d, 2000));
    assert_true(d.ok);
    redis_free(r);
}

static void test_sigstop_timeout(void **state)
{
    (void)state;
    struct redis *r = connect_new(300, "stop");
    int down0 = log_count("redis-down");
    kill(trs_pid, SIGSTOP);
    char id[QUEUE_ID_LEN + 1];
    queue_id_new(id);
    struct queue_msg m = make_msg(id);
    struct done d = { 0 };
    struct got g = { 0 };
    long long t0 = clock_mono_ms();
    assert_true(queue_enqueue(r, "t5", &m, on_done, &d));
    assert_true(redis_commandf(r, on_reply, &g, "PING"));
    assert_true(run_until(done_called, &d, 2000));
    long long took = clock_mono_ms() - t0;
    assert_true(took >= 290 && took < 2000);
    assert_false(d.ok);
    assert_non_null(strstr(d.err, "timeout"));
    /* The command behind it failed too, in the same teardown. */
    assert_int_equal(g.calls, 1);
    assert_false(g.had_reply);
    assert_string_equal(g.err, "timeout");
    assert_false(redis_connected(r));

    /* Frozen server: handshakes time out again and again; one log line. */
    run_for(1000);
    assert_false(redis_connected(r));
    assert_int_equal(log_count("redis-down"), down0 + 1);

    kill(trs_pid, SIGCONT);
    assert_true(run_until(is_connected, r, 6000));
    assert_int_equal(d.calls, 1);
    assert_int_equal(g.calls, 1);
    queue_id_new(id);
    assert_true(enqueue(r, "t5", id, &d, 2000));
    assert_true(d.ok);
    redis_free(r);
}

struct free_in_cb {
    struct redis *r;
    int calls;
};

static void free_from_cb(redisReply *reply, const char *err, void *arg)
{
    (void)reply;
    (void)err;
    struct free_in_cb *f = arg;
    f->calls++;
    redis_free(f->r);
    redis_free(f->r);   /* a second call while closing is a no-op */
}

static void test_free_pending(void **state)
{
    (void)state;
    /* redis_free() with commands waiting: each hears "shutting down", once, before it returns. */
    struct redis *r = connect_new(1000, "free");
    struct got g[3] = { { 0 } };
    for (int i = 0; i < 3; i++)
        assert_true(redis_commandf(r, on_reply, &g[i], "PING"));
    redis_free(r);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_false(g[i].had_reply);
        assert_string_equal(g[i].err, "shutting down");
    }

    /* redis_free() from inside a reply callback: the commands behind fail, memory goes later. */
    struct free_in_cb f = { connect_new(1000, "free2"), 0 };
    struct got after = { 0 };
    assert_true(redis_commandf(f.r, free_from_cb, &f, "PING"));
    assert_true(redis_commandf(f.r, on_reply, &after, "PING"));
    assert_true(run_until(got_called, &after, 2000));
    assert_int_equal(f.calls, 1);
    assert_int_equal(after.calls, 1);
    assert_false(after.had_reply);
    assert_string_equal(after.err, "shutting down");
    run_for(50);
    assert_int_equal(f.calls, 1);
    assert_int_equal(after.calls, 1);

    /* Freed while never connected. */
    struct redis_target t = { .path = "/nonexistent/redis.sock" };
    struct redis *r3 = redis_new(base, &t, 300, "none");
    run_for(150);
    assert_false(redis_connected(r3));
    redis_free(r3);
}

static void test_auth_select(void **state)
{
    (void)state;
    admin("CONFIG SET requirepass %s", "sekrit");
    struct redis_target t = { .path = trs_sock, .password = "sekrit", .db = 3 };
    struct redis *r = redis_new(base, &t, 1000, "auth");
    assert_true(run_until(is_connected, r, 3000));
    struct got g = { 0 };
    assert_true(redis_commandf(r, on_reply, &g, "CLIENT INFO"));
    assert_true(run_until(got_called, &g, 2000));
    assert_non_null(strstr(g.str, " db=3 "));
    assert_non_null(strstr(g.str, " name=auth "));
    redis_free(r);

    /* A wrong password never comes up, and says so once. */
    int down0 = log_count("redis-down");
    struct redis_target bad = { .path = trs_sock, .password = "wrong" };
    r = redis_new(base, &bad, 1000, "badauth");
    run_for(700);
    assert_false(redis_connected(r));
    assert_int_equal(log_count("redis-down"), down0 + 1);
    redis_free(r);

    /* The blocking helper: AUTH and SELECT, and the errors it reports. */
    struct buf err = BUF_INIT;
    redisContext *c = redis_connect_sync(&t, 1000, &err);
    assert_non_null(c);
    redisReply *rep = redisCommand(c, "CLIENT INFO");
    assert_non_null(strstr(rep->str, " db=3 "));
    freeReplyObject(rep);
    rep = redisCommand(c, "CONFIG SET requirepass %s", "");
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    redisFree(c);
    admin("CONFIG SET requirepass %s", "sekrit");
    assert_null(redis_connect_sync(&bad, 1000, &err));
    assert_non_null(strstr(buf_cstr(&err), "AUTH: WRONGPASS"));
    struct redis_target t2 = { .path = trs_sock, .password = "sekrit" };
    c = redis_connect_sync(&t2, 1000, &err);
    assert_non_null(c);
    rep = redisCommand(c, "CONFIG SET requirepass %s", "");
    freeReplyObject(rep);
    redisFree(c);
    struct redis_target nowhere = { .path = "/nonexistent/redis.sock" };
    assert_null(redis_connect_sync(&nowhere, 1000, &err));
    assert_non_null(strstr(buf_cstr(&err), "redis unix:/nonexistent/redis.sock: "));
    buf_release(&err);
}

static void test_tcp(void **state)
{
    (void)state;
    struct buf err = BUF_INIT;
    struct redis_target t;
    char url[64], port[16];
    int p = tp_free_port();
    snprintf(port, sizeof port, "%d", p);

    /* Refused: the asynchronous connect fails, retries are quiet. */
    int down0 = log_count("redis-down");
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", p);
    assert_true(redis_url_parse(url, &t, &err));
    struct redis *r = redis_new(base, &t, 1000, "tcp-refused");
    run_for(400);
    assert_false(redis_connected(r));
    assert_int_equal(log_count("redis-down"), down0 + 1);
    redis_free(r);
    redis_target_clear(&t);

    /*
     * A listener whose accept queue is full: the kernel drops our SYN and the connect hangs,
     * until the deadline (the timeout) gives up on it.
     */
    struct tp_full full;
    tp_full_open(&full);
    int timeouts0 = log_count_with("redis-down", "\"reason\":\"connect timeout\"");
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", full.port);
    assert_true(redis_url_parse(url, &t, &err));
    r = redis_new(base, &t, 200, "tcp-hang");
    run_for(500);
    assert_false(redis_connected(r));
    assert_int_equal(log_count_with("redis-down", "\"reason\":\"connect timeout\""), timeouts0 + 1);
    redis_free(r);
    redis_target_clear(&t);
    tp_full_close(&full);

    /* The server also listens on loopback TCP: connect, SELECT from the URL, enqueue. */
    admin("CONFIG SET bind %s", "127.0.0.1");
    admin("CONFIG SET port %s", port);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/5", p);
    assert_true(redis_url_parse(url, &t, &err));
    r = redis_new(base, &t, 1000, "tcp");
    assert_true(run_until(is_connected, r, 3000));
    struct got g = { 0 };
    assert_true(redis_commandf(r, on_reply, &g, "CLIENT INFO"));
    assert_true(run_until(got_called, &g, 2000));
    assert_non_null(strstr(g.str, " db=5 "));
    char id[QUEUE_ID_LEN + 1];
    queue_id_new(id);
    struct done d;
    assert_true(enqueue(r, "t6", id, &d, 2000));
    assert_true(d.ok);
    redis_free(r);
    redis_target_clear(&t);
    admin("CONFIG SET port %s", "0");
    buf_release(&err);
}

/* ---- scripts --------------------------------------------------------------------------------- */

/* A reply kept byte for byte: a string, status or error, an integer, or an array of those. */
struct elem {
    int type;
    size_t len;
    char str[64];
    long long integer;
};

struct got_eval {
    int calls;
    bool had_reply;
    struct elem top;            /* the reply itself */
    size_t n;                   /* array elements (up to 4 kept) */
    struct elem el[4];
    char err[128];
};

static void keep(struct elem *e, const redisReply *reply)
{
    e->type = reply->type;
    e->integer = reply->integer;
    e->len = reply->str != NULL ? reply->len : 0;
    if (e->len > sizeof e->str)
        e->len = sizeof e->str;
    if (e->len > 0)
        memcpy(e->str, reply->str, e->len);
}

static void on_eval(redisReply *reply, const char *err, void *arg)
{
    struct got_eval *g = arg;
    g->calls++;
    g->had_reply = reply != NULL;
    snprintf(g->err, sizeof g->err, "%s", err != NULL ? err : "");
    if (reply == NULL)
        return;
    keep(&g->top, reply);
    g->n = reply->type == REDIS_REPLY_ARRAY ? reply->elements : 0;
    for (size_t i = 0; i < g->n && i < 4; i++)
        keep(&g->el[i], reply->element[i]);
}

static bool eval_called(void *arg)
{
    return ((struct got_eval *)arg)->calls > 0;
}

/* Runs a script and waits for its one callback. */
static void eval_wait(struct redis *r, struct redis_script *s, struct got_eval *g, int argc,
                      const char **argv, const size_t *argvlen)
{
    memset(g, 0, sizeof *g);
    assert_true(redis_eval(r, s, on_eval, g, argc, argv, argvlen));
    assert_int_equal(g->calls, 0);      /* never from inside the call */
    assert_true(run_until(eval_called, g, 2000));
    assert_int_equal(g->calls, 1);
}

static void expect_eval_int(const struct got_eval *g, long long want)
{
    assert_true(g->had_reply);
    if (g->top.type == REDIS_REPLY_ERROR)
        fail_msg("error reply: %.*s", (int)g->top.len, g->top.str);
    assert_int_equal(g->top.type, REDIS_REPLY_INTEGER);
    assert_int_equal(g->top.integer, want);
}

static void expect_noscript(const struct got_eval *g)
{
    assert_true(g->had_reply);
    assert_string_equal(g->err, "");
    assert_int_equal(g->top.type, REDIS_REPLY_ERROR);
    assert_true(g->top.len >= 8);
    assert_memory_equal(g->top.str, "NOSCRIPT", 8);
}

/* Calls of a command since the server started (INFO commandstats), e.g. "script|load". */
static long long cmd_calls(const char *name)
{
    redisContext *c = trs_sync();
    redisReply *rep = cmd(c, "INFO %s", "commandstats", NULL);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    char needle[64];
    snprintf(needle, sizeof needle, "cmdstat_%s:calls=", name);
    const char *p = strstr(rep->str, needle);
    long long n = p != NULL ? strtoll(p + strlen(needle), NULL, 10) : 0;
    freeReplyObject(rep);
    redisFree(c);
    return n;
}

/* SCRIPT EXISTS sha: 1 when the server holds the script, 0 when not. */
static long long script_exists(const char *sha)
{
    redisContext *c = trs_sync();
    redisReply *rep = cmd(c, "SCRIPT EXISTS %s", sha, NULL);
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    assert_int_equal(rep->elements, 1);
    assert_int_equal(rep->element[0]->type, REDIS_REPLY_INTEGER);
    long long n = rep->element[0]->integer;
    freeReplyObject(rep);
    redisFree(c);
    return n;
}

/* The digest Redis computes for s's text; loads it on the server. */
static void expect_digest(const struct redis_script *s)
{
    redisContext *c = trs_sync();
    redisReply *rep = cmd(c, "SCRIPT LOAD %s", s->text, NULL);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_string_equal(s->sha, rep->str);
    freeReplyObject(rep);
    redisFree(c);
}

/* Each script's text is unique to this file, so no other test has loaded it. */
static struct redis_script echo_script = REDIS_SCRIPT(
    "-- test_redis: echo\n"
    "return {KEYS[1], ARGV[1], ARGV[2], #ARGV}");
static struct redis_script incr_script = REDIS_SCRIPT(
    "-- test_redis: incr\n"
    "return redis.call('INCRBY', KEYS[1], ARGV[1])");
static struct redis_script flush_script = REDIS_SCRIPT(
    "-- test_redis: flush\n"
    "return redis.call('INCRBY', KEYS[1], ARGV[1])");
static struct redis_script restart_script = REDIS_SCRIPT(
    "-- test_redis: restart\n"
    "return redis.call('INCRBY', KEYS[1], ARGV[1])");

static void test_eval(void **state)
{
    (void)state;
    struct redis *r = connect_new(1000, "eval");
    long long loads0 = cmd_calls("script|load"), evals0 = cmd_calls("eval");
    long long shas0 = cmd_calls("evalsha");
    assert_string_equal(echo_script.sha, "");

    /* Keys and arguments arrive byte for byte (NUL inside, an empty one), in order. */
    struct got_eval g;
    const char *argv[] = { "1", "k\0ey", "a\0b", "" };
    const size_t argvlen[] = { 1, 4, 3, 0 };
    eval_wait(r, &echo_script, &g, 4, argv, argvlen);
    assert_true(g.had_reply);
    assert_string_equal(g.err, "");
    assert_int_equal(g.top.type, REDIS_REPLY_ARRAY);
    assert_int_equal(g.n, 4);
    assert_int_equal(g.el[0].type, REDIS_REPLY_STRING);
    assert_int_equal(g.el[0].len, 4);
    assert_memory_equal(g.el[0].str, "k\0ey", 4);
    assert_int_equal(g.el[1].type, REDIS_REPLY_STRING);
    assert_int_equal(g.el[1].len, 3);
    assert_memory_equal(g.el[1].str, "a\0b", 3);
    assert_int_equal(g.el[2].type, REDIS_REPLY_STRING);
    assert_int_equal(g.el[2].len, 0);
    assert_int_equal(g.el[3].type, REDIS_REPLY_INTEGER);
    assert_int_equal(g.el[3].integer, 2);

    /* Loaded once, run by digest: the digest is Redis's own, and the text went over once. */
    assert_int_equal(strlen(echo_script.sha), 40);
    assert_int_equal(script_exists(echo_script.sha), 1);
    assert_int_equal(cmd_calls("script|load"), loads0 + 1);
    eval_wait(r, &echo_script, &g, 4, argv, argvlen);
    assert_int_equal(g.n, 4);
    assert_memory_equal(g.el[1].str, "a\0b", 3);
    assert_int_equal(cmd_calls("script|load"), loads0 + 1);
    assert_int_equal(cmd_calls("evalsha"), shas0 + 2);
    assert_int_equal(cmd_calls("eval"), evals0);

    /* A first use pipelined twice in one turn (C strings: no lengths): one load, both run. */
    struct got_eval g2 = { 0 };
    const char *incr[] = { "1", "t:eval:n", "5" };
    memset(&g, 0, sizeof g);
    assert_true(redis_eval(r, &incr_script, on_eval, &g, 3, incr, NULL));
    assert_true(redis_eval(r, &incr_script, on_eval, &g2, 3, incr, NULL));
    assert_true(run_until(eval_called, &g2, 2000));
    assert_int_equal(g.calls, 1);
    assert_int_equal(g2.calls, 1);
    expect_eval_int(&g, 5);
    expect_eval_int(&g2, 10);
    assert_int_equal(cmd_calls("script|load"), loads0 + 2);
    redisContext *c = trs_sync();
    expect_str(c, "GET %s", "t:eval:n", NULL, "10");
    redisFree(c);

    /* An error raised by the script reaches the callback as an error reply. */
    const char *bad[] = { "1", "t:eval:n", "not-a-number" };
    eval_wait(r, &incr_script, &g, 3, bad, NULL);
    assert_true(g.had_reply);
    assert_int_equal(g.top.type, REDIS_REPLY_ERROR);
    assert_non_null(memmem(g.top.str, g.top.len, "not an integer", 14));

    /* Another connection loads it for itself, once. */
    struct redis *r2 = connect_new(1000, "eval2");
    eval_wait(r2, &incr_script, &g, 3, incr, NULL);
    expect_eval_int(&g, 15);
    eval_wait(r2, &incr_script, &g, 3, incr, NULL);
    expect_eval_int(&g, 20);
    assert_int_equal(cmd_calls("script|load"), loads0 + 3);
    redis_free(r2);

    /* Not connected: refused at once, no callback. */
    struct redis_target t = { .path = trs_sock };
    struct redis *r3 = redis_new(base, &t, 1000, "eval3");
    memset(&g, 0, sizeof g);
    assert_false(redis_eval(r3, &incr_script, on_eval, &g, 3, incr, NULL));
    run_for(50);
    assert_int_equal(g.calls, 0);
    redis_free(r3);

    expect_digest(&echo_script);
    expect_digest(&incr_script);
    redis_free(r);
}

static void test_eval_noscript(void **state)
{
    (void)state;
    struct redis *r = connect_new(1000, "noscript");
    struct got_eval g, g2;
    const char *argv[] = { "1", "t:flush:n", "1" };
    eval_wait(r, &flush_script, &g, 3, argv, NULL);
    expect_eval_int(&g, 1);

    /* The server forgets its scripts: that call hears NOSCRIPT, the next one loads it again. */
    admin("SCRIPT FLUSH%s", "");
    assert_int_equal(script_exists(flush_script.sha), 0);
    long long loads0 = cmd_calls("script|load");
    eval_wait(r, &flush_script, &g, 3, argv, NULL);
    expect_noscript(&g);
    assert_int_equal(cmd_calls("script|load"), loads0);
    eval_wait(r, &flush_script, &g, 3, argv, NULL);
    expect_eval_int(&g, 2);
    assert_int_equal(cmd_calls("script|load"), loads0 + 1);
    assert_int_equal(script_exists(flush_script.sha), 1);
    assert_true(redis_connected(r));

    /* Two calls already on their way both hear NOSCRIPT; the next call loads it once. */
    admin("SCRIPT FLUSH%s", "");
    memset(&g, 0, sizeof g);
    memset(&g2, 0, sizeof g2);
    assert_true(redis_eval(r, &flush_script, on_eval, &g, 3, argv, NULL));
    assert_true(redis_eval(r, &flush_script, on_eval, &g2, 3, argv, NULL));
    assert_true(run_until(eval_called, &g2, 2000));
    assert_int_equal(g.calls, 1);
    expect_noscript(&g);
    expect_noscript(&g2);
    eval_wait(r, &flush_script, &g, 3, argv, NULL);
    expect_eval_int(&g, 3);
    eval_wait(r, &flush_script, &g, 3, argv, NULL);
    expect_eval_int(&g, 4);
    assert_int_equal(cmd_calls("script|load"), loads0 + 2);
    redis_free(r);
}

static void test_eval_server_restart(void **state)
{
    (void)state;
    struct redis *r = connect_new(1000, "evalrestart");
    struct got_eval g;
    const char *argv[] = { "1", "t:restart:n", "1" };
    eval_wait(r, &restart_script, &g, 3, argv, NULL);
    expect_eval_int(&g, 1);

    /* Killed and not noticed yet: the call is sent and fails; noticed: refused. */
    trs_stop();
    assert_true(redis_connected(r));
    eval_wait(r, &restart_script, &g, 3, argv, NULL);
    assert_false(g.had_reply);
    assert_string_equal(g.err, "connection lost");
    assert_true(run_until(is_down, r, 2000));
    memset(&g, 0, sizeof g);
    assert_false(redis_eval(r, &restart_script, on_eval, &g, 3, argv, NULL));

    /* A new server holds no scripts: the new connection loads it before its first call. */
    trs_start();
    assert_true(run_until(is_connected, r, 3000));
    assert_int_equal(script_exists(restart_script.sha), 0);
    eval_wait(r, &restart_script, &g, 3, argv, NULL);
    expect_eval_int(&g, 2);
    assert_int_equal(script_exists(restart_script.sha), 1);
    assert_int_equal(cmd_calls("script|load"), 1);
    assert_int_equal(g.calls, 1);
    redis_free(r);
}

/* ---- subscriptions --------------------------------------------------------------------------- */

struct msgs {
    int n;
    size_t len[8];
    char data[8][32];
};

static void on_msg(const char *payload, size_t len, void *arg)
{
    struct msgs *m = arg;
    if (m->n < 8 && len <= sizeof m->data[0]) {
        m->len[m->n] = len;
        memcpy(m->data[m->n], payload, len);
    }
    m->n++;
}

static void expect_msg(const struct msgs *m, int i, const char *data, size_t len)
{
    assert_true(i < m->n);
    assert_int_equal(m->len[i], len);
    assert_memory_equal(m->data[i], data, len);
}

/* PUBLISH channel payload; returns how many subscribers received it. */
static long long publish(const char *channel, const char *data, size_t len)
{
    redisContext *c = trs_sync();
    redisReply *rep = redisCommand(c, "PUBLISH %s %b", channel, data, len);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
    long long n = rep->integer;
    freeReplyObject(rep);
    redisFree(c);
    return n;
}

/* PUBSUB NUMSUB channel. */
static long long numsub(const char *channel)
{
    if (!trs_answers())
        return -1;
    redisContext *c = trs_sync();
    redisReply *rep = cmd(c, "PUBSUB NUMSUB %s", channel, NULL);
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    assert_int_equal(rep->elements, 2);
    long long n = rep->element[1]->integer;
    freeReplyObject(rep);
    redisFree(c);
    return n;
}

static bool one_subscriber(void *arg)
{
    return numsub(arg) == 1;
}

static bool no_subscriber(void *arg)
{
    return numsub(arg) == 0;
}

/* Runs the loop until m holds want messages, then a little longer to catch any extra. */
static void wait_msgs(struct msgs *m, int want)
{
    assert_true(tp_run_count(base, &m->n, want, 2000));
    run_for(50);
    assert_int_equal(m->n, want);
}

/* A connection subscribed to channel before it connects, once the server counts it. */
static struct redis *subscriber_new(const char *name, const char *channel, struct msgs *m)
{
    struct redis_target t = { .path = trs_sock };
    struct redis *r = redis_new(base, &t, 1000, name);
    redis_subscribe(r, channel, on_msg, m);
    assert_true(run_until(is_connected, r, 3000));
    assert_true(run_until(one_subscriber, (void *)channel, 2000));
    return r;
}

static void test_subscribe(void **state)
{
    (void)state;
    /* Subscribed before it connects: the SUBSCRIBE follows the handshake. */
    struct msgs m = { 0 };
    struct redis *r = subscriber_new("sub", "t:wake", &m);

    /* Messages in order, byte for byte; other channels' messages do not arrive. */
    assert_int_equal(publish("t:other", "x", 1), 0);
    assert_int_equal(publish("t:wake", "one", 3), 1);
    assert_int_equal(publish("t:wakeup", "y", 1), 0);
    assert_int_equal(publish("t:wake", "t\0wo", 4), 1);
    assert_int_equal(publish("t:wake", "", 0), 1);
    assert_int_equal(publish("t:wake", "\xff\r\nfour", 7), 1);
    wait_msgs(&m, 4);
    expect_msg(&m, 0, "one", 3);
    expect_msg(&m, 1, "t\0wo", 4);
    expect_msg(&m, 2, "", 0);
    expect_msg(&m, 3, "\xff\r\nfour", 7);

    /* The server restarts: the new connection subscribes again. */
    trs_stop();
    assert_true(run_until(is_down, r, 2000));
    trs_start();
    assert_true(run_until(is_connected, r, 3000));
    assert_true(run_until(one_subscriber, "t:wake", 2000));
    assert_int_equal(publish("t:wake", "after\0restart", 13), 1);
    wait_msgs(&m, 5);
    expect_msg(&m, 4, "after\0restart", 13);

    /* Subscribed once connected: at once. */
    struct redis *r2 = connect_new(1000, "sub2");
    struct msgs m2 = { 0 };
    redis_subscribe(r2, "t:late", on_msg, &m2);
    assert_true(run_until(one_subscriber, "t:late", 2000));
    assert_int_equal(publish("t:late", "late", 4), 1);
    assert_int_equal(publish("t:wake", "six", 3), 1);
    wait_msgs(&m2, 1);
    expect_msg(&m2, 0, "late", 4);
    wait_msgs(&m, 6);
    expect_msg(&m, 5, "six", 3);

    /* Freed with nothing pending: gone from the server, no message after. */
    redis_free(r2);
    redis_free(r);
    assert_true(run_until(no_subscriber, "t:wake", 2000));
    assert_true(run_until(no_subscriber, "t:late", 2000));
    assert_int_equal(publish("t:wake", "gone", 4), 0);
    assert_int_equal(m.n, 6);
    assert_int_equal(m2.n, 1);
}

static void test_subscriber_takes_no_command(void **state)
{
    (void)state;
    struct msgs m = { 0 };
    struct redis *r = subscriber_new("subcmd", "t:nocmd", &m);

    struct got g = { 0 };
    struct got_eval ge = { 0 };
    const char *ping[] = { "PING" };
    const char *argv[] = { "1", "t:nocmd:n", "1" };
    assert_false(redis_command(r, on_reply, &g, 1, ping, NULL));
    assert_false(redis_commandf(r, on_reply, &g, "GET %s", "t:nocmd:n"));
    assert_false(redis_eval(r, &incr_script, on_eval, &ge, 3, argv, NULL));

    /* Still a subscriber, and its messages still go to it. */
    assert_int_equal(publish("t:nocmd", "m1", 2), 1);
    wait_msgs(&m, 1);
    expect_msg(&m, 0, "m1", 2);
    run_for(1200);      /* past the timeout: nothing was waiting, so nothing timed out */
    assert_true(redis_connected(r));
    assert_int_equal(g.calls, 0);
    assert_int_equal(ge.calls, 0);
    assert_int_equal(publish("t:nocmd", "m2", 2), 1);
    wait_msgs(&m, 2);
    expect_msg(&m, 1, "m2", 2);
    redis_free(r);
    assert_int_equal(g.calls, 0);
    assert_int_equal(ge.calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parse),
        cmocka_unit_test(test_connect_ping),
        cmocka_unit_test(test_enqueue_layout),
        cmocka_unit_test(test_enqueue_oom),
        cmocka_unit_test(test_enqueue_readonly),
        cmocka_unit_test(test_free_pending),
        cmocka_unit_test(test_auth_select),
        cmocka_unit_test(test_tcp),
        cmocka_unit_test(test_sigstop_timeout),
        cmocka_unit_test(test_enqueue_server_down_and_back),
        cmocka_unit_test(test_eval),
        cmocka_unit_test(test_eval_noscript),
        cmocka_unit_test(test_eval_server_restart),
        cmocka_unit_test(test_subscribe),
        cmocka_unit_test(test_subscriber_takes_no_command),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
