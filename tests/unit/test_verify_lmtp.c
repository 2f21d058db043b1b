/*
 * test_verify_lmtp.c - the LMTP recipient probe (mailbox-bridge/verify_lmtp.c) against real LMTP
 * servers: Postfix's smtp-sink -L (TCP and unix socket) with its fault options and -c counters,
 * and Dovecot's LMTP with a passwd-file of users; plus an in-process responder
 * (support/lmtp_peer.c) for silence, malformed replies, SMTPUTF8, a 421 while idle and a dropped
 * connection. Covers the answer for each reply class, connection reuse and its limits, the
 * timeout, the FIFO of waiting probes, free() with probes pending and from a done callback, and
 * what the log says.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "clock.h"
#include "log.h"
#include "smtp_addr.h"
#include "support/lmtp_peer.h"
#include "support/peer.h"
#include "verify_sources.h"

/* Idle connections are closed after this long here (VERIFY_LMTP_IDLE_MS in the edge); longer
 * than any other test waits, so only test_idle_expiry sees it happen. */
#define TEST_IDLE_MS 5000

#define EXISTS VERIFY_EXISTS
#define DUNNO VERIFY_DUNNO
#define TEMPFAIL VERIFY_TEMPFAIL

static const char *fixed_target(const char *domain, void *arg)
{
    assert_non_null(domain);
    return arg;
}

static struct verify_source *src_new(struct event_base *base, const char *target, long long timeout_ms)
{
    struct verify_source *src = verify_lmtp_new(base, fixed_target, (void *)target, "probe.test", timeout_ms,
                                                 TEST_IDLE_MS);
    assert_non_null(src);
    assert_string_equal(src->name, "lmtp");
    assert_true(src->cacheable);
    return src;
}

/* ---- no server to ask ---- */

static void test_no_target(void **state)
{
    (void)state;
    struct event_base *base = lmtp_peer_base_new();
    static const char *const targets[] = { NULL, "" };
    for (size_t i = 0; i < 2; i++) {
        struct verify_source *src = src_new(base, targets[i], 1000);
        struct smtp_path p;
        lmtp_path(&p, "<bob@example.test>");
        struct lmtp_ans a = { 0 };
        src->lookup(src, &p, lmtp_ans_cb, &a);
        assert_int_equal(a.n, 1);       /* answered before lookup returned */
        assert_int_equal(a.a, DUNNO);
        src->free(src);
        assert_int_equal(a.n, 1);
        smtp_path_clear(&p);
    }
    lmtp_peer_base_free(base);
}

/* ---- smtp-sink: answers and faults ---- */

static const struct {
    const char *opt[2];         /* smtp-sink options */
    enum verify_answer want;
    bool closed;                /* the probe's connection is closed after the answer */
} sink_cases[] = {
    { { NULL, NULL }, EXISTS, false },              /* PIPELINING: MAIL and RCPT in one write */
    { { "-f", "RCPT" }, DUNNO, false },             /* 500 5.3.0; -f implies no PIPELINING */
    { { "-r", "RCPT" }, TEMPFAIL, false },          /* 450 4.3.0 */
    { { "-Q", "RCPT" }, TEMPFAIL, true },           /* 421, then the server hangs up */
    { { "-q", "RCPT" }, TEMPFAIL, true },           /* hangs up without a reply */
    { { "-r", "MAIL" }, TEMPFAIL, true },
    { { "-f", "MAIL" }, TEMPFAIL, true },
    { { "-q", "MAIL" }, TEMPFAIL, true },
    { { "-r", "LHLO" }, TEMPFAIL, true },
    { { "-f", "LHLO" }, TEMPFAIL, true },
    { { "-Q", "LHLO" }, TEMPFAIL, true },
    { { "-r", "CONNECT" }, TEMPFAIL, true },        /* greeting 450 */
    { { "-f", "CONNECT" }, TEMPFAIL, true },        /* greeting 500 */
    { { "-Q", "CONNECT" }, TEMPFAIL, true },        /* greeting 421 */
    { { "-r", "RSET" }, EXISTS, true },             /* the answer stands, the connection goes */
};

static void test_sink_answers(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof sink_cases / sizeof sink_cases[0]; i++) {
        struct event_base *base = lmtp_peer_base_new();
        struct lmtp_sink s;
        lmtp_sink_start(&s, false, sink_cases[i].opt[0], sink_cases[i].opt[1], NULL);
        struct verify_source *src = src_new(base, s.target, 3000);
        enum verify_answer got = lmtp_ask(base, src, "<bob@example.test>");
        if (got != sink_cases[i].want)
            fail_msg("case %zu (%s %s): answer %d, want %d", i, sink_cases[i].opt[0], sink_cases[i].opt[1], got,
                     sink_cases[i].want);
        tp_run_for(base, 200);
        int sess, quit;
        /* the readiness check is session 1; the probe's connection ends as session 2 */
        lmtp_sink_counters(&s, sink_cases[i].closed ? 2 : 1, &sess, &quit);
        if (sess != (sink_cases[i].closed ? 2 : 1))
            fail_msg("case %zu: %d sessions ended before free", i, sess);
        src->free(src);
        lmtp_sink_counters(&s, 2, &sess, &quit);
        assert_int_equal(sess, 2);
        assert_int_equal(quit, sink_cases[i].closed ? 0 : 1);  /* an idle connection says QUIT */
        lmtp_sink_stop(&s);
        lmtp_peer_base_free(base);
    }
}

/* Two probes in a row use one connection; a failed RSET makes the next one open another. */
static void test_sink_reuse(void **state)
{
    (void)state;
    static const struct {
        const char *opt[2];
        int conns;          /* connections used */
        int quit;           /* QUITs: an idle connection says it when the source goes */
    } cases[] = {
        { { NULL, NULL }, 1, 1 },
        { { "-f", "RCPT" }, 1, 1 },
        { { "-r", "RSET" }, 2, 0 },     /* each RSET fails: each connection is closed at once */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct event_base *base = lmtp_peer_base_new();
        struct lmtp_sink s;
        lmtp_sink_start(&s, false, cases[i].opt[0], cases[i].opt[1], NULL);
        struct verify_source *src = src_new(base, s.target, 3000);
        enum verify_answer want = cases[i].opt[0] != NULL && strcmp(cases[i].opt[0], "-f") == 0 ? DUNNO : EXISTS;
        assert_int_equal(lmtp_ask(base, src, "<bob@example.test>"), want);
        assert_int_equal(lmtp_ask(base, src, "<carol@example.test>"), want);
        src->free(src);
        int sess, quit;
        lmtp_sink_counters(&s, 1 + cases[i].conns, &sess, &quit);
        assert_int_equal(sess, 1 + cases[i].conns);
        tp_run_for(base, 200);
        lmtp_sink_counters(&s, 0, &sess, &quit);
        assert_int_equal(sess, 1 + cases[i].conns);
        assert_int_equal(quit, cases[i].quit);
        lmtp_sink_stop(&s);
        lmtp_peer_base_free(base);
    }
}

static void test_unix_socket(void **state)
{
    (void)state;
    struct lmtp_sink ok, rej;
    lmtp_sink_start(&ok, true, NULL);
    lmtp_sink_start(&rej, true, "-f", "RCPT", NULL);
    const char *targets[] = { ok.target, ok.target + 5, rej.target };     /* "unix:/path", "/path" */
    static const enum verify_answer want[] = { EXISTS, EXISTS, DUNNO };
    for (size_t i = 0; i < 3; i++) {
        struct event_base *base = lmtp_peer_base_new();
        struct verify_source *src = src_new(base, targets[i], 3000);
        assert_int_equal(lmtp_ask(base, src, "<bob@example.test>"), want[i]);
        assert_int_equal(lmtp_ask(base, src, "<carol@example.test>"), want[i]);
        src->free(src);
        lmtp_peer_base_free(base);
    }
    int sess, quit;
    lmtp_sink_counters(&ok, 3, &sess, &quit);
    assert_int_equal(sess, 3);      /* readiness, and one connection per source */
    /* no check of quit: smtp-sink does not count a QUIT whose 221 cannot be written, and on a
     * unix socket that write fails at once since free() does not wait for the 221 */
    lmtp_sink_stop(&ok);
    lmtp_sink_stop(&rej);
}

/* A host name (from /etc/hosts, through libevent's resolver) works like an address. */
static void test_host_name(void **state)
{
    (void)state;
    struct lmtp_sink s;
    lmtp_sink_start(&s, false, NULL);
    char target[64];
    snprintf(target, sizeof target, "localhost:%s", strchr(s.target, ':') + 1);
    struct event_base *base = lmtp_peer_base_new();
    struct verify_source *src = src_new(base, target, 3000);
    assert_int_equal(lmtp_ask(base, src, "<bob@example.test>"), EXISTS);
    src->free(src);
    lmtp_peer_base_free(base);
    lmtp_sink_stop(&s);
}

/* ---- connection failures and the timeout ---- */

static void test_unusable_targets(void **state)
{
    (void)state;
    char closed[32], tmpl[64];
    snprintf(closed, sizeof closed, "127.0.0.1:%d", tp_free_port());
    snprintf(tmpl, sizeof tmpl, "unix:/tmp/lmtp-absent-%d.sock", (int)getpid());
    const char *targets[] = { closed, tmpl, "unix:", "127.0.0.1:0", "127.0.0.1:99999", "[::1", ":24" };
    struct event_base *base = lmtp_peer_base_new();
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        struct verify_source *src = src_new(base, targets[i], 2000);
        long long t0 = clock_mono_ms();
        if (lmtp_ask(base, src, "<bob@example.test>") != TEMPFAIL)
            fail_msg("target %s: not TEMPFAIL", targets[i]);
        assert_true(clock_mono_ms() - t0 < 1000);   /* a failure, not the timeout */
        src->free(src);
    }
    lmtp_peer_base_free(base);
}

/* A server that accepts and never speaks: TEMPFAIL at the timeout, the connection closed. */
static void test_silent_server(void **state)
{
    (void)state;
    struct event_base *base = lmtp_peer_base_new();
    struct lmtp_rsp rsp = { .greeting = "" };
    lmtp_rsp_start(&rsp, base);
    struct verify_source *src = src_new(base, rsp.target, 300);
    struct smtp_path p;
    lmtp_path(&p, "<bob@example.test>");
    struct lmtp_ans a = { 0 };
    long long t0 = clock_mono_ms();
    src->lookup(src, &p, lmtp_ans_cb, &a);
    lmtp_wait_answers(base, &a, 1);
    assert_int_equal(a.a, TEMPFAIL);
    long long elapsed = a.at - t0;
    assert_true(elapsed >= 300);
    assert_true(elapsed < 1500);
    assert_true(tp_run_count(base, &rsp.eofs, 1, 4000));
    assert_int_equal(rsp.conns, 1);
    tp_run_for(base, 100);
    assert_int_equal(a.n, 1);
    src->free(src);
    smtp_path_clear(&p);
    lmtp_rsp_stop(&rsp);
    lmtp_peer_base_free(base);
}

/* A server that answers RCPT but never RSET: the RCPT answer stands, given at the timeout, and
 * the connection is closed. */
static void test_silent_rset(void **state)
{
    (void)state;
    static const struct {
        const char *rcpt;
        enum verify_answer want;
    } cases[] = {
        { "250 2.1.5 Ok\r\n", EXISTS },
        { "550 5.1.1 No such user\r\n", DUNNO },
        { "450 4.2.1 Later\r\n", TEMPFAIL },
    };
    for (size_t i = 0; i < 3; i++) {
        struct event_base *base = lmtp_peer_base_new();
        struct lmtp_rsp rsp = { .rcpt = cases[i].rcpt, .rset = "" };
        lmtp_rsp_start(&rsp, base);
        struct verify_source *src = src_new(base, rsp.target, 300);
        long long t0 = clock_mono_ms();
        assert_int_equal(lmtp_ask(base, src, "<bob@example.test>"), cases[i].want);
        long long elapsed = clock_mono_ms() - t0;
        assert_true(elapsed >= 300 && elapsed < 1500);
        assert_true(tp_run_count(base, &rsp.eofs, 1, 4000));
        src->free(src);
        lmtp_rsp_stop(&rsp);
        lmtp_peer_base_free(base);
    }
}

/* 17 probes to a silent server: 16 connections, the 17th waits in the queue; all time out. */
static void test_queue_cap_and_timeout(void **state)
{
    (void)state;
    struct event_base *base = lmtp_peer_base_new();
    struct lmtp_rsp rsp = { .greeting = "" };
    lmtp_rsp_start(&rsp, base);
    struct verify_source *src = src_new(base, rsp.target, 600);
    struct smtp_path p;
    lmtp_path(&p, "<bob@example.test>");
    struct lmtp_ans a[17];
    memset(a, 0, sizeof a);
    long long t0 = clock_mono_ms();
    for (int i = 0; i < 17; i++)
        src->lookup(src, &p, lmtp_ans_cb, &a[i]);
    tp_run_for(base, 300);
    assert_int_equal(rsp.conns, 16);
    for (int i = 0; i < 17; i++)
        assert_int_equal(a[i].n, 0);
    lmtp_wait_answers(base, a, 17);
    for (int i = 0; i < 17; i++) {
        assert_int_equal(a[i].n, 1);
        assert_int_equal(a[i].a, TEMPFAIL);
        assert_true(a[i].at - t0 >= 600);
        assert_true(a[i].at - t0 < 2000);
    }
    src->free(src);
    smtp_path_clear(&p);
    lmtp_rsp_stop(&rsp);
    lmtp_peer_base_free(base);
}

/* Waiting probes get a connection in the order they came: with 16 connections stuck on a silent
 * server, one closed by the server frees a slot, and the first waiting probe takes it. */
static void test_queue_fifo(void **state)
{
    (void)state;
    struct event_base *base = lmtp_peer_base_new();
    struct lmtp_rsp rsp = { .greeting = "" };
    lmtp_rsp_start(&rsp, base);
    struct verify_source *src = src_new(base, rsp.target, 3000);
    struct smtp_path p;
    lmtp_path(&p, "<bob@example.test>");
    struct lmtp_ans stuck[16], q1 = { 0 }, q2 = { 0 };
    memset(stuck, 0, sizeof stuck);
    for (int i = 0; i < 16; i++)
        src->lookup(src, &p, lmtp_ans_cb, &stuck[i]);
    src->lookup(src, &p, lmtp_ans_cb, &q1);
    src->lookup(src, &p, lmtp_ans_cb, &q2);
    assert_true(tp_run_count(base, &rsp.conns, 16, 4000));
    tp_run_for(base, 50);
    rsp.greeting = NULL;        /* connections from now on are served */
    lmtp_rsp_close_one(&rsp);
    lmtp_wait_answers(base, &q2, 1);
    assert_int_equal(q1.n, 1);
    assert_int_equal(q1.a, EXISTS);
    assert_int_equal(q2.a, EXISTS);
    assert_true(q1.seq < q2.seq);
    assert_int_equal(rsp.conns, 17);    /* q2 reused q1's connection */
    int failed = 0;
    for (int i = 0; i < 16; i++)
        failed += stuck[i].n;
    assert_int_equal(failed, 1);        /* the one whose connection was closed: TEMPFAIL */
    src->free(src);
    for (int i = 0; i < 16; i++) {
        assert_int_equal(stuck[i].n, 1);
        assert_int_equal(stuck[i].a, TEMPFAIL);
    }
    smtp_path_clear(&p);
    lmtp_rsp_stop(&rsp);
    lmtp_peer_base_free(base);
}

/* ---- many probes at once ---- */

static void test_parallel(void **state)
{
    (void)state;
    struct lmtp_sink s;
    lmtp_sink_start(&s, false, NULL);
    struct event_base *base = lmtp_peer_base_new();
    struct verify_source *src = src_new(base, s.target, 5000);
    enum { N = 40 };
    struct smtp_path p[N];
    struct lmtp_ans a[N];
    memset(a, 0, sizeof a);
    for (int i = 0; i < N; i++) {
        char addr[64];
        snprintf(addr, sizeof addr, "<user%d@example.test>", i);
        lmtp_path(&p[i], addr);
        src->lookup(src, &p[i], lmtp_ans_cb, &a[i]);
    }
    lmtp_wait_answers(base, a, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(a[i].n, 1);
        assert_int_equal(a[i].a, EXISTS);
    }
    /* 16 connections served the 40 probes; 8 of them stay idle, 8 were closed with QUIT */
    tp_run_for(base, 200);
    int sess, quit;
    lmtp_sink_counters(&s, 1 + 8, &sess, &quit);
    assert_int_equal(sess, 1 + 8);
    assert_int_equal(quit, 8);
    src->free(src);
    lmtp_sink_counters(&s, 1 + 16, &sess, &quit);
    assert_int_equal(sess, 1 + 16);
    assert_int_equal(quit, 16);
    for (int i = 0; i < N; i++)
        smtp_path_clear(&p[i]);
    lmtp_peer_base_free(base);
    lmtp_sink_stop(&s);
}

/* ---- free() ---- */

/* free() answers every pending lookup TEMPFAIL from inside free; a lookup from such a callback
 * is answered TEMPFAIL at once. */
static void test_free_pending(void **state)
{
    (void)state;
    struct event_base *base = lmtp_peer_base_new();
    struct lmtp_rsp rsp = { .greeting = "" };
    lmtp_rsp_start(&rsp, base);
    struct lmtp_sink s;
    lmtp_sink_start(&s, false, "-W", "RCPT:2", NULL);
    struct verify_source *silent = src_new(base, rsp.target, 5000);
    struct verify_source *slow = src_new(base, s.target, 5000);
    struct smtp_path p;
    lmtp_path(&p, "<bob@example.test>");
    struct lmtp_ans a[18], b = { 0 }, again = { 0 };
    memset(a, 0, sizeof a);
    a[0].again_src = silent;
    a[0].again_path = &p;
    a[0].again_ans = &again;
    for (int i = 0; i < 18; i++)            /* 16 on connections, 2 queued */
        silent->lookup(silent, &p, lmtp_ans_cb, &a[i]);
    slow->lookup(slow, &p, lmtp_ans_cb, &b);    /* waiting for its RCPT reply */
    tp_run_for(base, 300);
    assert_int_equal(rsp.conns, 16);
    assert_int_equal(b.n, 0);
    silent->free(silent);
    slow->free(slow);
    for (int i = 0; i < 18; i++) {
        assert_int_equal(a[i].n, 1);
        assert_int_equal(a[i].a, TEMPFAIL);
    }
    assert_int_equal(again.n, 1);
    assert_int_equal(again.a, TEMPFAIL);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.a, TEMPFAIL);
    assert_true(tp_run_count(base, &rsp.eofs, 16, 4000));
    int sess, quit;
    lmtp_sink_counters(&s, 2, &sess, &quit);
    assert_int_equal(sess, 2);
    assert_int_equal(quit, 0);              /* closed mid-probe: no QUIT */
    smtp_path_clear(&p);
    lmtp_rsp_stop(&rsp);
    lmtp_sink_stop(&s);
    lmtp_peer_base_free(base);
}

/* Targets by domain: "silent.test" to the first, anything else to the second. */
static const char *split_target(const char *domain, void *arg)
{
    const char *const *t = arg;
    return strcmp(domain, "silent.test") == 0 ? t[0] : t[1];
}

/* A done callback may free the source (the other probe hears TEMPFAIL from inside free), or look
 * again (served by the connection that has just answered). */
static void test_callbacks_reenter(void **state)
{
    (void)state;
    struct lmtp_sink s;
    lmtp_sink_start(&s, false, NULL);
    struct event_base *base = lmtp_peer_base_new();
    struct lmtp_rsp rsp = { .greeting = "" };
    lmtp_rsp_start(&rsp, base);
    const char *targets[] = { rsp.target, s.target };
    struct smtp_path p, q, silent;
    lmtp_path(&p, "<bob@example.test>");
    lmtp_path(&q, "<carol@example.test>");
    lmtp_path(&silent, "<bob@silent.test>");

    struct verify_source *src = verify_lmtp_new(base, split_target, targets, "probe.test", 3000, TEST_IDLE_MS);
    struct lmtp_ans first = { .free_src = src }, stuck = { 0 };
    src->lookup(src, &silent, lmtp_ans_cb, &stuck);
    src->lookup(src, &p, lmtp_ans_cb, &first);
    lmtp_wait_answers(base, &first, 1);
    assert_int_equal(first.n, 1);
    assert_int_equal(first.a, EXISTS);
    assert_int_equal(stuck.n, 1);
    assert_int_equal(stuck.a, TEMPFAIL);    /* from inside free, long before its timeout */
    tp_run_for(base, 100);
    assert_int_equal(first.n, 1);
    assert_int_equal(stuck.n, 1);
    assert_true(tp_run_count(base, &rsp.eofs, 1, 4000));

    src = verify_lmtp_new(base, split_target, targets, "probe.test", 3000, TEST_IDLE_MS);
    struct lmtp_ans next = { 0 };
    first = (struct lmtp_ans){ .again_src = src, .again_path = &q, .again_ans = &next };
    src->lookup(src, &p, lmtp_ans_cb, &first);
    lmtp_wait_answers(base, &next, 1);
    assert_int_equal(first.a, EXISTS);
    assert_int_equal(next.a, EXISTS);
    src->free(src);
    int sess, quit;
    lmtp_sink_counters(&s, 3, &sess, &quit);
    assert_int_equal(sess, 3);      /* readiness, one connection per source */
    assert_int_equal(quit, 2);      /* each was idle when its source went */
    smtp_path_clear(&p);
    smtp_path_clear(&q);
    smtp_path_clear(&silent);
    lmtp_rsp_stop(&rsp);
    lmtp_peer_base_free(base);
    lmtp_sink_stop(&s);
}

/* ---- reuse and the server ---- */

/* The server ends an idle connection (a 421, or a close): the next probe opens a new one. */
static void test_idle_server_gone(void **state)
{
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        struct event_base *base = lmtp_peer_base_new();
        struct lmtp_rsp rsp = { 0 };
        lmtp_rsp_start(&rsp, base);
        struct verify_source *src = src_new(base, rsp.target, 2000);
        assert_int_equal(lmtp_ask(base, src, "<bob@example.test>"), EXISTS);
        tp_run_for(base, 50);
        if (mode == 0) {
            lmtp_rsp_say(&rsp, "421 4.3.2 Shutting down\r\n");
            assert_true(tp_run_count(base, &rsp.eofs, 1, 4000));    /* the client hung up */
        } else {
            lmtp_rsp_close_all(&rsp);
            tp_run_for(base, 100);
        }
        assert_int_equal(lmtp_ask(base, src, "<carol@example.test>"), EXISTS);
        assert_int_equal(rsp.conns, 2);
        assert_non_null(strstr(buf_cstr(&rsp.cmds), "RCPT TO:<carol@example.test>\n"));
        src->free(src);
        lmtp_rsp_stop(&rsp);
        lmtp_peer_base_free(base);
    }
}

/* A reused connection lost before any reply to the probe is replaced once; a new one is not. */
static void test_stale_connection(void **state)
{
    (void)state;
    struct event_base *base = lmtp_peer_base_new();
    struct lmtp_rsp rsp = { .drop_at_mail = 2 };
    lmtp_rsp_start(&rsp, base);
    struct verify_source *src = src_new(base, rsp.target, 2000);
    assert_int_equal(lmtp_ask(base, src, "<bob@example.test>"), EXISTS);
    assert_int_equal(lmtp_ask(base, src, "<carol@example.test>"), EXISTS);
    assert_int_equal(rsp.conns, 2);
    src->free(src);
    lmtp_rsp_stop(&rsp);

    rsp = (struct lmtp_rsp){ .drop_at_mail = 1 };
    lmtp_rsp_start(&rsp, base);
    src = src_new(base, rsp.target, 2000);
    assert_int_equal(lmtp_ask(base, src, "<bob@example.test>"), TEMPFAIL);
    assert_int_equal(rsp.conns, 1);
    src->free(src);
    lmtp_rsp_stop(&rsp);
    lmtp_peer_base_free(base);
}

/* An idle connection says QUIT and goes after 30 s. */
static void test_idle_expiry(void **state)
{
    (void)state;
    struct event_base *base = lmtp_peer_base_new();
    struct lmtp_rsp rsp = { 0 };
    lmtp_rsp_start(&rsp, base);
    struct verify_source *src = src_new(base, rsp.target, 2000);
    assert_int_equal(lmtp_ask(base, src, "<bob@example.test>"), EXISTS);
    long long t0 = clock_mono_ms();
    tp_run_count(base, &rsp.quits, 1, TEST_IDLE_MS + 2000);
    long long idle = clock_mono_ms() - t0;
    assert_int_equal(rsp.quits, 1);
    assert_true(idle >= TEST_IDLE_MS - 100 && idle < TEST_IDLE_MS + 1000);
    const char *cmds = buf_cstr(&rsp.cmds);
    assert_string_equal(cmds + strlen(cmds) - 5, "QUIT\n");
    assert_int_equal(lmtp_ask(base, src, "<dave@example.test>"), EXISTS);
    assert_int_equal(rsp.conns, 2);
    src->free(src);
    lmtp_rsp_stop(&rsp);
    lmtp_peer_base_free(base);
}

/* ---- what goes on the wire ---- */

static const struct {
    const char *lhlo;       /* the server's LHLO reply */
    const char *addr;
    enum verify_answer want;
    const char *wire;       /* the commands seen, in full */
    bool pipelined;
} wire_cases[] = {
    { "250-rsp\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n", "<j\xc3\xb6s\xc3\xa9@example.test>", EXISTS,
      "LHLO probe.test\nMAIL FROM:<> SMTPUTF8\nRCPT TO:<j\xc3\xb6s\xc3\xa9@example.test>\nRSET\n", true },
    { "250-rsp\r\n250 smtputf8\r\n", "<j\xc3\xb6s\xc3\xa9@example.test>", EXISTS,
      "LHLO probe.test\nMAIL FROM:<> SMTPUTF8\nRCPT TO:<j\xc3\xb6s\xc3\xa9@example.test>\nRSET\n", false },
    { "250-rsp\r\n250-PIPELINING\r\n250 8BITMIME\r\n", "<j\xc3\xb6s\xc3\xa9@example.test>", DUNNO,
      "LHLO probe.test\n", false },
    { "250-rsp\r\n250-SMTPUTF8\r\n250 PIPELINING\r\n", "<bob@example.test>", EXISTS,
      "LHLO probe.test\nMAIL FROM:<>\nRCPT TO:<bob@example.test>\nRSET\n", true },
    { "250 rsp\r\n", "<\"bob smith\"@example.test>", EXISTS,
      "LHLO probe.test\nMAIL FROM:<>\nRCPT TO:<\"bob smith\"@example.test>\nRSET\n", false },
    { "250-rsp\r\n250-PIPELININGX\r\n250 SMTPUTF8X\r\n", "<j\xc3\xb6s\xc3\xa9@example.test>", DUNNO,
      "LHLO probe.test\n", false },
};

static void test_wire(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof wire_cases / sizeof wire_cases[0]; i++) {
        struct event_base *base = lmtp_peer_base_new();
        struct lmtp_rsp rsp = { .lhlo = wire_cases[i].lhlo };
        lmtp_rsp_start(&rsp, base);
        struct verify_source *src = src_new(base, rsp.target, 2000);
        if (lmtp_ask(base, src, wire_cases[i].addr) != wire_cases[i].want)
            fail_msg("case %zu: wrong answer", i);
        tp_run_for(base, 50);
        assert_string_equal(buf_cstr(&rsp.cmds), wire_cases[i].wire);
        if (wire_cases[i].want == EXISTS && rsp.mail_pipelined != wire_cases[i].pipelined)
            fail_msg("case %zu: pipelined %d", i, rsp.mail_pipelined);
        /* the same again on the idle connection: no new connection, no new LHLO */
        if (lmtp_ask(base, src, wire_cases[i].addr) != wire_cases[i].want)
            fail_msg("case %zu: wrong second answer", i);
        assert_int_equal(rsp.conns, 1);
        assert_int_equal(rsp.eofs, 0);
        src->free(src);
        lmtp_rsp_stop(&rsp);
        lmtp_peer_base_free(base);
    }
}

/* ---- replies ---- */

static const struct {
    const char *greeting, *lhlo, *mail, *rcpt, *rset;   /* NULL: the responder's default */
    enum verify_answer want;
    bool closed;            /* the client closed the connection */
} reply_cases[] = {
    { NULL, NULL, NULL, "251 2.1.5 Will forward\r\n", NULL, EXISTS, false },
    { NULL, NULL, NULL, "250-2.1.5 Ok\r\n250 2.1.5 really\r\n", NULL, EXISTS, false },
    { NULL, NULL, NULL, "550 5.1.1 No such user\r\n", NULL, DUNNO, false },
    { NULL, NULL, NULL, "552 5.2.2 Over quota\r\n", NULL, DUNNO, false },
    { NULL, NULL, NULL, "452 4.2.2 Try later\r\n", NULL, TEMPFAIL, false },
    { NULL, NULL, NULL, "421 4.3.2 Going away\r\n", NULL, TEMPFAIL, true },
    { NULL, NULL, NULL, "250 2.1.5 Ok\n", NULL, TEMPFAIL, true },
    { NULL, NULL, NULL, "2x0 Ok\r\n", NULL, TEMPFAIL, true },
    { NULL, NULL, NULL, "250-Ok\r\n550 No\r\n", NULL, TEMPFAIL, true },
    { NULL, NULL, NULL, NULL, "500 5.5.1 No RSET today\r\n", EXISTS, true },
    { NULL, NULL, NULL, "550 5.1.1 No\r\n", "421 4.3.2 Bye\r\n", DUNNO, true },
    { NULL, NULL, "451 4.3.0 Later\r\n", NULL, NULL, TEMPFAIL, true },
    { NULL, NULL, "550 5.7.1 No\r\n", NULL, NULL, TEMPFAIL, true },
    { NULL, "500 5.5.1 What\r\n", NULL, NULL, NULL, TEMPFAIL, true },
    { NULL, "250-rsp\r\n251 PIPELINING\r\n", NULL, NULL, NULL, TEMPFAIL, true },
    { "554 5.3.2 Go away\r\n", NULL, NULL, NULL, NULL, TEMPFAIL, true },
    { "421 4.3.2 Busy\r\n", NULL, NULL, NULL, NULL, TEMPFAIL, true },
    { "220 No CR\n", NULL, NULL, NULL, NULL, TEMPFAIL, true },
    { "Hello there\r\n", NULL, NULL, NULL, NULL, TEMPFAIL, true },
};

static void test_replies(void **state)
{
    (void)state;
    char longline[700];
    memset(longline, 'x', sizeof longline);
    memcpy(longline, "220 ", 4);
    memcpy(longline + sizeof longline - 3, "\r\n", 3);
    size_t n = sizeof reply_cases / sizeof reply_cases[0];
    for (size_t i = 0; i <= n; i++) {
        struct event_base *base = lmtp_peer_base_new();
        struct lmtp_rsp rsp = { 0 };
        enum verify_answer want = TEMPFAIL;
        bool closed = true;
        if (i < n) {
            rsp.greeting = reply_cases[i].greeting;
            rsp.lhlo = reply_cases[i].lhlo;
            rsp.mail = reply_cases[i].mail;
            rsp.rcpt = reply_cases[i].rcpt;
            rsp.rset = reply_cases[i].rset;
            want = reply_cases[i].want;
            closed = reply_cases[i].closed;
        } else {
            rsp.greeting = longline;    /* one line over 512 bytes */
        }
        lmtp_rsp_start(&rsp, base);
        struct verify_source *src = src_new(base, rsp.target, 2000);
        long long t0 = clock_mono_ms();
        enum verify_answer got = lmtp_ask(base, src, "<bob@example.test>");
        if (got != want)
            fail_msg("case %zu: answer %d, want %d", i, got, want);
        assert_true(clock_mono_ms() - t0 < 1000);
        if (closed)
            assert_true(tp_run_count(base, &rsp.eofs, 1, 4000));
        else
            tp_run_for(base, 100);
        if (rsp.eofs != (closed ? 1 : 0))
            fail_msg("case %zu: %d connections closed by the client", i, rsp.eofs);
        src->free(src);
        lmtp_rsp_stop(&rsp);
        lmtp_peer_base_free(base);
    }
}

/* ---- the log ---- */

static void test_log(void **state)
{
    (void)state;
    char logpath[] = "/tmp/lmtp-log-XXXXXX";
    int fd = mkstemp(logpath);
    assert_true(fd >= 0);
    log_init("test", LOG_WARN, fd);
    struct event_base *base = lmtp_peer_base_new();
    char closed[32];
    snprintf(closed, sizeof closed, "127.0.0.1:%d", tp_free_port());
    struct verify_source *src = src_new(base, closed, 2000);
    assert_int_equal(lmtp_ask(base, src, "<bob@example.test>"), TEMPFAIL);
    src->free(src);
    struct lmtp_rsp rsp = { .greeting = "554 5.0.0 bad\x01\x1b[31m red \xff\r\n" };
    lmtp_rsp_start(&rsp, base);
    src = src_new(base, rsp.target, 2000);
    assert_int_equal(lmtp_ask(base, src, "<bob@example.test>"), TEMPFAIL);
    src->free(src);
    lmtp_rsp_stop(&rsp);
    lmtp_peer_base_free(base);
    log_init("test", LOG_CRIT, 2);

    char text[4096];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    unlink(logpath);
    assert_true(n > 0);
    text[n] = '\0';
    int lines = 0;
    for (const char *p = text; (p = strstr(p, "\"verify-lmtp-failed\"")) != NULL; p++)
        lines++;
    assert_int_equal(lines, 2);     /* one per failure */
    char want[128];
    snprintf(want, sizeof want, "\"target\":\"%s\"", closed);
    const char *l1 = strstr(text, want);
    assert_non_null(l1);
    assert_non_null(strstr(l1, "Connection refused"));
    snprintf(want, sizeof want, "\"target\":\"%s\"", rsp.target);
    assert_non_null(strstr(text, want));
    assert_non_null(strstr(text, "554 5.0.0 bad\\\\x01\\\\x1b[31m red \\\\xff"));
    assert_null(strchr(text, '\x1b'));
    assert_null(strchr(text, '\x01'));
    assert_null(strchr(text, '\xff'));
}

/* ---- Dovecot ---- */

static void test_dovecot(void **state)
{
    (void)state;
    struct lmtp_dovecot d;
    lmtp_dovecot_start(&d, "bob carol");
    struct event_base *base = lmtp_peer_base_new();
    struct verify_source *src = src_new(base, d.target, 5000);
    assert_int_equal(lmtp_ask(base, src, "<bob@example.test>"), EXISTS);
    assert_int_equal(lmtp_ask(base, src, "<nobody@example.test>"), DUNNO);
    assert_int_equal(lmtp_ask(base, src, "<carol@example.test>"), EXISTS);
    assert_int_equal(lmtp_ask(base, src, "<b\xc3\xb8""b@example.test>"), DUNNO);    /* no SMTPUTF8 offered */
    src->free(src);
    lmtp_peer_base_free(base);
    lmtp_dovecot_stop(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_target),
        cmocka_unit_test(test_sink_answers),
        cmocka_unit_test(test_sink_reuse),
        cmocka_unit_test(test_unix_socket),
        cmocka_unit_test(test_host_name),
        cmocka_unit_test(test_unusable_targets),
        cmocka_unit_test(test_silent_server),
        cmocka_unit_test(test_silent_rset),
        cmocka_unit_test(test_queue_cap_and_timeout),
        cmocka_unit_test(test_queue_fifo),
        cmocka_unit_test(test_parallel),
        cmocka_unit_test(test_free_pending),
        cmocka_unit_test(test_callbacks_reenter),
        cmocka_unit_test(test_idle_server_gone),
        cmocka_unit_test(test_stale_connection),
        cmocka_unit_test(test_wire),
        cmocka_unit_test(test_replies),
        cmocka_unit_test(test_log),
        cmocka_unit_test(test_dovecot),
        cmocka_unit_test(test_idle_expiry),
    };
    return cmocka_run_group_tests(tests, lmtp_peer_setup, lmtp_peer_teardown);
}
