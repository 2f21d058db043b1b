/*
 * test_relay_smtp.c - the outbound SMTP client (relay/relay_smtp.c) against real smtp-sink
 * processes (postfix package) started on free loopback ports with their fault options (reject,
 * 421, disconnect, delay, no ESMTP/PIPELINING/8BITMIME/DSN): whole transactions, checking the
 * results, the -c counters and the dump files; connection reuse, SMTPUTF8 refusals, refused and
 * timed-out connects with fallback to the next address, QUIT and freeing from callbacks.
 * test_relay_smtp_wire.c covers what smtp-sink cannot do; support/smtp_peer.c holds the helpers.
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
#include "relay_smtp.h"
#include "support/peer.h"
#include "support/smtp_peer.h"

static void test_sink_deliver(void **state)
{
    (void)state;
    struct smtp_peer_sink s;
    smtp_peer_sink_start(&s, NULL);
    struct relay_smtp_conf conf = smtp_peer_conf();
    struct netaddr a = smtp_peer_loopback(s.port);
    struct relay_smtp_job job = smtp_peer_job3();
    struct smtp_peer_run r;
    smtp_peer_run_job(&r, &conf, &a, 1, &job, true);
    smtp_peer_expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
    assert_true(r.dsn);
    assert_false(r.tls);    /* may: smtp-sink offers no STARTTLS */
    assert_false(r.reused);
    char peer[32];
    snprintf(peer, sizeof peer, "127.0.0.1:%d", s.port);
    assert_string_equal(r.peer, peer);
    assert_int_equal(r.closed, 1);      /* idle 200 ms, then QUIT */
    smtp_peer_run_free(&r);

    char *d = smtp_peer_sink_dump(&s, 1);
    assert_string_equal(smtp_peer_dump_message(d), smtp_peer_body_dumped);
    assert_null(strchr(d, '\r'));
    assert_string_equal(smtp_peer_dump_field(d, "X-Client-Proto", 0), "ESMTP");
    assert_string_equal(smtp_peer_dump_field(d, "X-Helo-Args", 0), "relay.test");
    assert_string_equal(smtp_peer_dump_field(d, "X-Mail-Args", 0),
                        "<s@src.test> BODY=8BITMIME RET=HDRS ENVID=id+2B1+3Dx");
    assert_string_equal(smtp_peer_dump_field(d, "X-Rcpt-Args", 0),
                        "<one@remote.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;one+2Bx@remote.test");
    assert_string_equal(smtp_peer_dump_field(d, "X-Rcpt-Args", 1), "<two@remote.test> NOTIFY=NEVER");
    assert_string_equal(smtp_peer_dump_field(d, "X-Rcpt-Args", 2), "<three@remote.test>");
    free(d);
    int sess, quit, mesg;
    smtp_peer_sink_counters(&s, 2, &sess, &quit, &mesg);
    assert_int_equal(sess, 2);
    assert_int_equal(quit, 1);
    assert_int_equal(mesg, 1);
    smtp_peer_sink_stop(&s);
}

/* Without 8BITMIME and DSN the parameters are left out; the 8-bit body still goes out as it is. */
static void test_sink_plain_extensions(void **state)
{
    (void)state;
    static const struct { const char *opt1, *opt2, *proto, *mail, *rcpt0; } cases[] = {
        { "-8", "-N", "ESMTP", "<s@src.test>", "<one@remote.test>" },
        { "-e", NULL, "SMTP", "<s@src.test>", "<one@remote.test>" },            /* HELO fallback */
        { "-f", "EHLO", "SMTP", "<s@src.test>", "<one@remote.test>" },          /* EHLO rejected */
        { "-p", NULL, "ESMTP", "<s@src.test> BODY=8BITMIME RET=HDRS ENVID=id+2B1+3Dx",
          "<one@remote.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;one+2Bx@remote.test" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct smtp_peer_sink s;
        smtp_peer_sink_start(&s, cases[i].opt1, cases[i].opt2, NULL);
        struct relay_smtp_conf conf = smtp_peer_conf();
        struct netaddr a = smtp_peer_loopback(s.port);
        struct relay_smtp_job job = smtp_peer_job3();
        struct smtp_peer_run r;
        smtp_peer_run_job(&r, &conf, &a, 1, &job, false);
        smtp_peer_expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
        smtp_peer_run_free(&r);
        char *d = smtp_peer_sink_dump(&s, 1);
        assert_string_equal(smtp_peer_dump_message(d), smtp_peer_body_dumped);
        assert_string_equal(smtp_peer_dump_field(d, "X-Client-Proto", 0), cases[i].proto);
        assert_string_equal(smtp_peer_dump_field(d, "X-Mail-Args", 0), cases[i].mail);
        assert_string_equal(smtp_peer_dump_field(d, "X-Rcpt-Args", 0), cases[i].rcpt0);
        free(d);
        smtp_peer_sink_stop(&s);
    }
}

struct fault_case {
    const char *opt1, *arg1, *opt2;
    bool shrink;                /* reply timeouts of 500 ms */
    enum relay_smtp_outcome outcome;
    int code;
    const char *status;
    enum relay_phase phase;
    const char *text;
};

static const struct fault_case fault_cases[] = {
    { "-f", "RCPT", NULL, false, FAILED, 500, "5.3.0", RELAY_PHASE_RCPT, "Error: command failed" },
    { "-r", "RCPT", NULL, false, DEFERRED, 450, "4.3.0", RELAY_PHASE_RCPT, "Error: command failed" },
    { "-f", "MAIL", NULL, false, FAILED, 500, "5.3.0", RELAY_PHASE_MAIL, "Error: command failed" },
    { "-r", "MAIL", NULL, false, DEFERRED, 450, "4.3.0", RELAY_PHASE_MAIL, "Error: command failed" },
    { "-f", "DATA", NULL, false, FAILED, 500, "5.3.0", RELAY_PHASE_DATA, "Error: command failed" },
    { "-r", "DATA", NULL, false, DEFERRED, 450, "4.3.0", RELAY_PHASE_DATA, "Error: command failed" },
    { "-f", ".", NULL, false, FAILED, 500, "5.3.0", RELAY_PHASE_BODY, "Error: command failed" },
    { "-r", ".", NULL, false, DEFERRED, 450, "4.3.0", RELAY_PHASE_BODY, "Error: command failed" },
    { "-f", "CONNECT", NULL, false, FAILED, 500, "5.3.0", RELAY_PHASE_GREETING, "Error: command failed" },
    { "-r", "EHLO", NULL, false, DEFERRED, 450, "4.3.0", RELAY_PHASE_EHLO, "Error: command failed" },
    { "-f", "HELO", "-e", false, FAILED, 500, "5.3.0", RELAY_PHASE_HELO, "Error: command failed" },
    { "-Q", "CONNECT", NULL, false, DEFERRED, 421, "4.0.0", RELAY_PHASE_GREETING, "Server closing connection" },
    { "-Q", "EHLO", NULL, false, DEFERRED, 421, "4.0.0", RELAY_PHASE_EHLO, "Server closing connection" },
    { "-Q", "MAIL", NULL, false, DEFERRED, 421, "4.0.0", RELAY_PHASE_MAIL, "Server closing connection" },
    { "-Q", "RCPT", NULL, false, DEFERRED, 421, "4.0.0", RELAY_PHASE_RCPT, "Server closing connection" },
    { "-Q", ".", NULL, false, DEFERRED, 421, "4.0.0", RELAY_PHASE_BODY, "Server closing connection" },
    { "-q", "CONNECT", NULL, false, DEFERRED, 0, "4.4.2", RELAY_PHASE_GREETING,
      "lost connection with mx.remote.test[127.0.0.1] while receiving the initial server greeting" },
    { "-q", "EHLO", NULL, false, DEFERRED, 0, "4.4.2", RELAY_PHASE_EHLO,
      "lost connection with mx.remote.test[127.0.0.1] while performing the EHLO handshake" },
    { "-q", "RCPT", NULL, false, DEFERRED, 0, "4.4.2", RELAY_PHASE_RCPT,
      "lost connection with mx.remote.test[127.0.0.1] while sending RCPT TO" },
    { "-q", "DATA", NULL, false, DEFERRED, 0, "4.4.2", RELAY_PHASE_DATA,
      "lost connection with mx.remote.test[127.0.0.1] while sending the DATA command" },
    { "-q", ".", NULL, false, DEFERRED, 0, "4.4.2", RELAY_PHASE_BODY,
      "lost connection with mx.remote.test[127.0.0.1] while waiting for the reply to the end of data" },
    { "-w", "2", "-p", true, DEFERRED, 0, "4.4.2", RELAY_PHASE_DATA,
      "conversation with mx.remote.test[127.0.0.1] timed out while sending the DATA command" },
    { "-W", "CONNECT:2", NULL, true, DEFERRED, 0, "4.4.2", RELAY_PHASE_GREETING,
      "conversation with mx.remote.test[127.0.0.1] timed out while receiving the initial server greeting" },
    { "-W", "EHLO:2", NULL, true, DEFERRED, 0, "4.4.2", RELAY_PHASE_EHLO, "timed out while performing the EHLO" },
    { "-W", "MAIL:2", "-p", true, DEFERRED, 0, "4.4.2", RELAY_PHASE_MAIL, "timed out while sending MAIL FROM" },
    { "-W", "RCPT:2", "-p", true, DEFERRED, 0, "4.4.2", RELAY_PHASE_RCPT, "timed out while sending RCPT TO" },
    { "-W", ".:2", NULL, true, DEFERRED, 0, "4.4.2", RELAY_PHASE_BODY,
      "timed out while waiting for the reply to the end of data" },
};

static void test_sink_faults(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof fault_cases / sizeof fault_cases[0]; i++) {
        const struct fault_case *fc = &fault_cases[i];
        struct smtp_peer_sink s;
        smtp_peer_sink_start(&s, fc->opt1, fc->arg1, fc->opt2, NULL);
        struct relay_smtp_conf conf = smtp_peer_conf();
        if (fc->shrink) {
            conf.timeouts.greeting_ms = conf.timeouts.helo_ms = conf.timeouts.mail_ms = 500;
            conf.timeouts.rcpt_ms = conf.timeouts.data_init_ms = conf.timeouts.data_done_ms = 500;
        }
        struct netaddr a = smtp_peer_loopback(s.port);
        struct relay_smtp_job job = smtp_peer_job3();
        struct smtp_peer_run r;
        smtp_peer_run_job(&r, &conf, &a, 1, &job, false);
        if (r.n != 3)
            fail_msg("case %zu: %zu results", i, r.n);
        smtp_peer_expect_case(&r, i, fc->outcome, fc->code, fc->status, fc->phase, fc->text);
        smtp_peer_run_free(&r);
        smtp_peer_sink_stop(&s);
    }
}

/* One connection, two transactions (the second sent from the first's done callback), one QUIT. */
static void test_sink_reuse(void **state)
{
    (void)state;
    struct smtp_peer_sink s;
    smtp_peer_sink_start(&s, NULL);
    struct relay_smtp_conf conf = smtp_peer_conf();
    struct netaddr a = smtp_peer_loopback(s.port);
    struct relay_smtp_job job = smtp_peer_job3(), job2 = smtp_peer_job3();
    job2.sender = "";
    job2.nrcpts = 1;
    struct smtp_peer_run r;
    smtp_peer_run_open(&r, &conf, &a, 1);
    r.next = &job2;
    assert_true(relay_smtp_send(r.c, &job, smtp_peer_done_cb, &r));
    assert_false(relay_smtp_send(r.c, &job2, smtp_peer_done_cb, &r));    /* busy */
    smtp_peer_run_until(&r, 2, true);
    assert_int_equal(r.n, 1);
    assert_true(r.reused);
    smtp_peer_expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
    assert_int_equal(relay_smtp_transactions(r.c), 2);
    assert_int_equal(r.closed, 1);
    assert_false(relay_smtp_ready(r.c));
    assert_false(relay_smtp_send(r.c, &job, smtp_peer_done_cb, &r));     /* closed */
    smtp_peer_run_free(&r);
    int sess, quit, mesg;
    smtp_peer_sink_counters(&s, 2, &sess, &quit, &mesg);
    assert_int_equal(sess, 2);
    assert_int_equal(quit, 1);
    assert_int_equal(mesg, 2);
    char *d = smtp_peer_sink_dump(&s, 2);
    assert_non_null(strstr(d, "X-Mail-Args: <> BODY=8BITMIME RET=HDRS ENVID=id+2B1+3Dx\n"));
    free(d);
    smtp_peer_sink_stop(&s);
}

/* UTF-8 addresses to a server without SMTPUTF8: 5.6.7 for those recipients, or all for the sender. */
static void test_sink_smtputf8(void **state)
{
    (void)state;
    struct smtp_peer_sink s;
    smtp_peer_sink_start(&s, NULL);
    struct relay_smtp_conf conf = smtp_peer_conf();
    struct netaddr a = smtp_peer_loopback(s.port);
    static const struct relay_smtp_rcpt rc[] = {
        { "one@remote.test", 0, NULL }, { "j\xc3\xb6rg@remote.test", 0, NULL }, { "three@remote.test", 0, NULL },
    };
    struct relay_smtp_job job = smtp_peer_job3();
    job.rcpts = rc;
    struct smtp_peer_run r;
    smtp_peer_run_job(&r, &conf, &a, 1, &job, true);
    assert_int_equal(r.res[0].outcome, DELIVERED);
    assert_int_equal(r.res[2].outcome, DELIVERED);
    smtp_peer_expect_rcpt(&r, 1, FAILED, 0, "5.6.7", RELAY_PHASE_RCPT,
                          "SMTPUTF8 is required, but was not offered by host mx.remote.test[127.0.0.1]");
    smtp_peer_run_free(&r);
    char *d = smtp_peer_sink_dump(&s, 1);
    assert_string_equal(smtp_peer_dump_field(d, "X-Rcpt-Args", 1), "<three@remote.test>");
    assert_string_equal(smtp_peer_dump_field(d, "X-Rcpt-Args", 2), "");
    free(d);

    job.sender = "s\xc3\xa9@src.test";
    smtp_peer_run_job(&r, &conf, &a, 1, &job, true);
    smtp_peer_expect_all(&r, FAILED, 0, "5.6.7", RELAY_PHASE_MAIL, "SMTPUTF8 is required");
    smtp_peer_run_free(&r);
    job.sender = "s@src.test";
    job.smtputf8 = true;    /* UTF-8 headers */
    smtp_peer_run_job(&r, &conf, &a, 1, &job, true);
    smtp_peer_expect_all(&r, FAILED, 0, "5.6.7", RELAY_PHASE_MAIL, "SMTPUTF8 is required");
    smtp_peer_run_free(&r);
    int sess, quit, mesg;
    smtp_peer_sink_counters(&s, 4, &sess, &quit, &mesg);
    assert_int_equal(sess, 4);
    assert_int_equal(quit, 3);
    assert_int_equal(mesg, 1);      /* nothing more was sent */
    smtp_peer_sink_stop(&s);
}

static void test_connect_failures(void **state)
{
    (void)state;
    struct relay_smtp_conf conf = smtp_peer_conf();
    struct relay_smtp_job job = smtp_peer_job3();
    int port = tp_free_port();
    struct netaddr a = smtp_peer_loopback(port);
    struct smtp_peer_run r;
    smtp_peer_run_job(&r, &conf, &a, 1, &job, true);
    char want[128];
    snprintf(want, sizeof want, "connect to mx.remote.test[127.0.0.1]:%d: Connection refused", port);
    smtp_peer_expect_all(&r, DEFERRED, 0, "4.4.1", RELAY_PHASE_CONNECT, NULL);
    assert_string_equal(r.res[0].text, want);
    smtp_peer_run_free(&r);

    /* refused, then a working address */
    struct smtp_peer_sink s;
    smtp_peer_sink_start(&s, NULL);
    struct netaddr two[2] = { smtp_peer_loopback(port), smtp_peer_loopback(s.port) };
    smtp_peer_run_job(&r, &conf, two, 2, &job, false);
    smtp_peer_expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
    char peer[32];
    snprintf(peer, sizeof peer, "127.0.0.1:%d", s.port);
    assert_string_equal(r.peer, peer);
    smtp_peer_run_free(&r);
    smtp_peer_sink_stop(&s);

    /* a listener whose backlog is full never completes the handshake: connect timeout */
    struct tp_full full;
    tp_full_open(&full);
    struct netaddr la = smtp_peer_loopback(full.port);
    conf.timeouts.connect_ms = 300;
    smtp_peer_run_job(&r, &conf, &la, 1, &job, true);
    smtp_peer_expect_all(&r, DEFERRED, 0, "4.4.1", RELAY_PHASE_CONNECT, "Connection timed out");
    smtp_peer_run_free(&r);
    tp_full_close(&full);
}

/* relay_smtp_quit ends an idle connection at once; a failing greeting moves on to the next address. */
static void test_quit_and_greeting_fallback(void **state)
{
    (void)state;
    struct smtp_peer_sink s, bad;
    smtp_peer_sink_start(&s, NULL);
    smtp_peer_sink_start(&bad, "-Q", "CONNECT", NULL);
    struct relay_smtp_conf conf = smtp_peer_conf();
    conf.idle_ms = 60000;
    struct netaddr two[2] = { smtp_peer_loopback(bad.port), smtp_peer_loopback(s.port) };
    struct relay_smtp_job job = smtp_peer_job3();
    struct smtp_peer_run r;
    smtp_peer_run_job(&r, &conf, two, 2, &job, false);
    smtp_peer_expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
    assert_true(relay_smtp_ready(r.c));
    assert_int_equal(r.closed, 0);
    assert_true(relay_smtp_quit(r.c));
    assert_false(relay_smtp_quit(r.c));
    assert_int_equal(r.closed, 0);      /* never from inside the call */
    smtp_peer_run_until(&r, 1, true);
    assert_false(relay_smtp_ready(r.c));
    smtp_peer_run_free(&r);
    int sess, quit, mesg;
    smtp_peer_sink_counters(&s, 2, &sess, &quit, &mesg);
    assert_int_equal(sess, 2);
    assert_int_equal(quit, 1);
    assert_int_equal(mesg, 1);
    smtp_peer_sink_stop(&s);
    smtp_peer_sink_stop(&bad);
}

/* relay_smtp_free inside the done callback, and with a job in hand (no callback follows). */
static void test_free_paths(void **state)
{
    (void)state;
    struct smtp_peer_sink s;
    smtp_peer_sink_start(&s, "-w", "1", NULL);
    struct relay_smtp_conf conf = smtp_peer_conf();
    struct netaddr a = smtp_peer_loopback(s.port);
    struct relay_smtp_job job = smtp_peer_job3();
    struct smtp_peer_run r;
    smtp_peer_run_open(&r, &conf, &a, 1);
    assert_true(relay_smtp_send(r.c, &job, smtp_peer_done_cb, &r));
    for (int i = 0; i < 20; i++)    /* well into the conversation: DATA is being delayed */
        event_base_loop(r.base, EVLOOP_NONBLOCK);
    tp_sleep_ms(100);
    event_base_loop(r.base, EVLOOP_NONBLOCK);
    relay_smtp_free(r.c);
    event_base_loop(r.base, EVLOOP_NONBLOCK);
    assert_int_equal(r.done, 0);
    assert_int_equal(r.closed, 0);
    event_base_free(r.base);
    smtp_peer_sink_stop(&s);

    smtp_peer_sink_start(&s, NULL);
    a = smtp_peer_loopback(s.port);
    smtp_peer_run_open(&r, &conf, &a, 1);
    r.free_in_done = true;
    assert_true(relay_smtp_send(r.c, &job, smtp_peer_done_cb, &r));
    smtp_peer_run_until(&r, 1, false);
    assert_null(r.c);
    smtp_peer_expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
    event_base_loop(r.base, EVLOOP_NONBLOCK);
    assert_int_equal(r.closed, 0);
    event_base_free(r.base);
    relay_smtp_free(NULL);
    smtp_peer_sink_stop(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sink_deliver),
        cmocka_unit_test(test_sink_plain_extensions),
        cmocka_unit_test(test_sink_faults),
        cmocka_unit_test(test_sink_reuse),
        cmocka_unit_test(test_sink_smtputf8),
        cmocka_unit_test(test_connect_failures),
        cmocka_unit_test(test_quit_and_greeting_fallback),
        cmocka_unit_test(test_free_paths),
    };
    return cmocka_run_group_tests(tests, smtp_peer_setup, smtp_peer_teardown);
}
