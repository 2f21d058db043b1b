/*
 * test_relay_smtp_wire.c - the outbound SMTP client (relay/relay_smtp.c) and client TLS contexts
 * (lib/tls_client.c) against the in-process responder of support/smtp_peer.c, for what smtp-sink
 * cannot do: TLS policy names and client SSL objects (SNI, verification); STARTTLS under policies
 * may, encrypt and verify (handshakes, failures, refusals, stalls, the plaintext fallback); exact
 * wire bytes with and without PIPELINING; a body larger than the socket buffers; SIZE; SMTPUTF8;
 * replies that were not asked for and malformed replies; one rejected recipient among several;
 * RSET before reuse; unsolicited replies on an idle connection; the greeting timeout.
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
#include <openssl/ssl.h>

#include "buf.h"
#include "relay_smtp.h"
#include "support/smtp_peer.h"
#include "tls.h"
#include "tls_client.h"

static void test_policy_names(void **state)
{
    (void)state;
    static const char *const names[] = { "none", "may", "encrypt", "verify" };
    for (int i = 0; i < 4; i++) {
        enum tls_policy p;
        assert_true(tls_policy_parse(names[i], &p));
        assert_int_equal(p, i);
        assert_string_equal(tls_policy_name(p), names[i]);
    }
    enum tls_policy p;
    assert_false(tls_policy_parse("dane", &p));
    assert_false(tls_policy_parse("MAY", &p));
    struct buf err = BUF_INIT;
    SSL_CTX *ctx = tls_client_ctx_new(NULL, NULL, &err);
    assert_non_null(ctx);
    assert_null(tls_client_ssl_new(ctx, TLS_POLICY_VERIFY, NULL, &err));
    assert_string_equal(buf_cstr(&err), "TLS policy verify needs the server's host name");
    SSL *ssl = tls_client_ssl_new(ctx, TLS_POLICY_VERIFY, "mx.remote.test.", &err);
    assert_non_null(ssl);
    assert_string_equal(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name), "mx.remote.test");
    assert_int_equal(SSL_get_verify_mode(ssl), SSL_VERIFY_PEER);
    SSL_free(ssl);
    ssl = tls_client_ssl_new(ctx, TLS_POLICY_ENCRYPT, "192.0.2.1", &err);
    assert_non_null(ssl);
    assert_null(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));     /* no SNI for an IP */
    assert_int_equal(SSL_get_verify_mode(ssl), SSL_VERIFY_NONE);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    buf_reset(&err);
    assert_null(tls_client_ctx_new("/nonexistent/ca.pem", NULL, &err));
    assert_int_equal(strncmp(buf_cstr(&err), "cannot load trusted certificates from /nonexistent/ca.pem: ", 59), 0);
    buf_release(&err);
}

/* The exact wire bytes: MAIL, RCPTs and DATA in one burst; the body stuffed, CRLF only. */
static void test_rsp_pipelining_wire(void **state)
{
    (void)state;
    for (int pipelining = 1; pipelining >= 0; pipelining--) {
        struct smtp_peer_rsp rsp = {
            .ehlo = pipelining ? "250-resp.test\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250 8BITMIME\r\n"
                               : "250-resp.test\r\n250-SIZE 100000\r\n250 8BITMIME\r\n",
        };
        struct relay_smtp_conf conf = smtp_peer_conf();
        struct relay_smtp_job job = smtp_peer_job3();
        struct smtp_peer_run r;
        smtp_peer_rsp_run(&r, &rsp, &conf, &job);
        smtp_peer_expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok: queued as X");
        assert_false(r.dsn);
        assert_int_equal(rsp.pending_at_mail, pipelining ? 4 : 0);
        char want[512];
        snprintf(want, sizeof want,
                 "EHLO relay.test\nMAIL FROM:<s@src.test> SIZE=%zu BODY=8BITMIME\nRCPT TO:<one@remote.test>\n"
                 "RCPT TO:<two@remote.test>\nRCPT TO:<three@remote.test>\nDATA\nQUIT\n", smtp_peer_body_in_len);
        assert_string_equal(buf_cstr(&rsp.cmds), want);
        assert_int_equal(rsp.data.len, smtp_peer_body_wire_len);
        assert_memory_equal(rsp.data.data, smtp_peer_body_wire, smtp_peer_body_wire_len);
        for (size_t i = 0; i < rsp.data.len; i++) {
            if (rsp.data.data[i] == '\r')
                assert_int_equal(rsp.data.data[i + 1], '\n');
            if (rsp.data.data[i] == '\n')
                assert_int_equal(rsp.data.data[i - 1], '\r');
        }
        smtp_peer_rsp_finish(&r, &rsp);
    }
}

/* A body far larger than the socket buffers goes out in pieces, intact. */
static void test_rsp_large_body(void **state)
{
    (void)state;
    struct buf big = BUF_INIT, wire = BUF_INIT;
    for (int i = 0; i < 40000; i++)
        buf_printf(&big, "%sline %d of a long message\n", i % 7 == 0 ? "." : "", i);
    struct relay_stuffer st;
    relay_stuff_init(&st);
    relay_stuff(&st, big.data, big.len, &wire);
    relay_stuff_end(&st, &wire);
    struct smtp_peer_rsp rsp = { 0 };
    struct relay_smtp_conf conf = smtp_peer_conf();
    struct relay_smtp_job job = smtp_peer_job3();
    job.body = big.data;
    job.body_len = big.len;
    struct smtp_peer_run r;
    smtp_peer_rsp_run(&r, &rsp, &conf, &job);
    smtp_peer_expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, NULL);
    assert_int_equal(rsp.data.len, wire.len);
    assert_memory_equal(rsp.data.data, wire.data, wire.len);
    smtp_peer_rsp_finish(&r, &rsp);
    buf_release(&big);
    buf_release(&wire);
}

/* One recipient rejected among three; a job whose every RCPT fails leaves a MAIL open, so RSET
 * comes before the next MAIL; DATA answered 354 with no recipient gets an empty message. */
static void test_rsp_rcpt_rejects(void **state)
{
    (void)state;
    struct smtp_peer_rsp rsp = { .rcpt_reject = "two@" };
    struct relay_smtp_conf conf = smtp_peer_conf();
    struct relay_smtp_job job = smtp_peer_job3();
    static const struct relay_smtp_rcpt only_two[] = { { "two@remote.test", 0, NULL } };
    struct relay_smtp_job job2 = smtp_peer_job3();
    job2.rcpts = only_two;
    job2.nrcpts = 1;
    struct relay_smtp_job job1 = smtp_peer_job3();
    job1.nrcpts = 1;
    struct smtp_peer_run r;
    smtp_peer_rsp_open(&r, &rsp, &conf);
    assert_true(relay_smtp_send(r.c, &job, smtp_peer_done_cb, &r));
    smtp_peer_run_until(&r, 1, false);
    assert_int_equal(r.res[0].outcome, DELIVERED);
    assert_int_equal(r.res[2].outcome, DELIVERED);
    smtp_peer_expect_rcpt(&r, 1, FAILED, 550, "5.1.1", RELAY_PHASE_RCPT,
                          "<rejected>: Recipient address rejected: User unknown");

    r.next = &job1;     /* sent from job2's done callback, while the RSET is outstanding */
    assert_true(relay_smtp_send(r.c, &job2, smtp_peer_done_cb, &r));
    smtp_peer_run_until(&r, 3, false);
    smtp_peer_expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");

    rsp.data_reply = "354 go ahead anyway\r\n";
    assert_true(relay_smtp_send(r.c, &job2, smtp_peer_done_cb, &r));
    smtp_peer_run_until(&r, 4, true);
    smtp_peer_expect_all(&r, FAILED, 550, "5.1.1", RELAY_PHASE_RCPT, "User unknown");
    assert_string_equal(buf_cstr(&rsp.data), ".\r\n");
    smtp_peer_rsp_wait_eof(&r, &rsp);
    assert_int_equal(rsp.conns, 1);
    assert_string_equal(buf_cstr(&rsp.cmds),
                        "EHLO relay.test\nMAIL FROM:<s@src.test> BODY=8BITMIME\nRCPT TO:<one@remote.test>\n"
                        "RCPT TO:<two@remote.test>\nRCPT TO:<three@remote.test>\nDATA\n"
                        "MAIL FROM:<s@src.test> BODY=8BITMIME\nRCPT TO:<two@remote.test>\nDATA\nRSET\n"
                        "MAIL FROM:<s@src.test> BODY=8BITMIME\nRCPT TO:<one@remote.test>\nDATA\n"
                        "MAIL FROM:<s@src.test> BODY=8BITMIME\nRCPT TO:<two@remote.test>\nDATA\nQUIT\n");
    smtp_peer_rsp_finish(&r, &rsp);
}

/* Replies not asked for, and malformed replies: 4.5.0, connection dropped without QUIT. */
static void test_rsp_protocol_errors(void **state)
{
    (void)state;
    char longline[700], many[1200];
    memset(longline, 'x', sizeof longline);
    memcpy(longline, "220 ", 4);
    strcpy(longline + 600, "\r\n");
    many[0] = '\0';
    for (int i = 0; i < 101; i++)
        strcat(many, "220-x\r\n");
    strcat(many, "220 x\r\n");
    static const char ehlo_nopipe[] = "250-resp.test\r\n250 8BITMIME\r\n";
    struct {
        struct smtp_peer_rsp rsp;
        enum relay_phase phase;
        const char *text;
    } cases[] = {
        { { .ehlo = ehlo_nopipe, .mail_reply = "250 2.1.0 Ok\r\n250 2.1.0 Ok again\r\n" }, RELAY_PHASE_MAIL,
          "protocol error with mx.remote.test[127.0.0.1] in reply to MAIL FROM: reply that was not asked for" },
        { { .dot_reply = "250 2.0.0 Ok\r\n250 2.0.0 Ok again\r\n" }, RELAY_PHASE_BODY, "reply that was not asked for" },
        { { .data_reply = "354 go\r\n250 early\r\n" }, RELAY_PHASE_DATA, "reply that was not asked for" },
        { { .greeting = "220 hi\r\n220 hi again\r\n" }, RELAY_PHASE_GREETING, "reply that was not asked for" },
        { { .greeting = "220-a\r\n230 b\r\n" }, RELAY_PHASE_GREETING, "reply code 230 after 220 in one reply" },
        { { .greeting = "220 bare lf\n" }, RELAY_PHASE_GREETING, "reply line not ended by CRLF" },
        { { .greeting = longline }, RELAY_PHASE_GREETING, "reply line longer than 512 bytes" },
        { { .greeting = many }, RELAY_PHASE_GREETING, "reply longer than 100 lines" },
        { { .ehlo = "250-resp.test\r\n250 PIPELINING\r\n", .mail_reply = "354 what\r\n" }, RELAY_PHASE_MAIL,
          "intermediate reply to a command that takes none" },
        { { .data_reply = "250 not 354\r\n" }, RELAY_PHASE_DATA, "2xx reply to DATA" },
        { { .tls = SMTP_PEER_TLS_INJECT }, RELAY_PHASE_STARTTLS, "reply that was not asked for" },
    };
    struct buf err = BUF_INIT;
    SSL_CTX *ctx = tls_client_ctx_new(NULL, NULL, &err);
    assert_non_null(ctx);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct relay_smtp_conf conf = smtp_peer_conf();
        conf.tls_ctx = ctx;
        struct relay_smtp_job job = smtp_peer_job3();
        struct smtp_peer_run r;
        smtp_peer_rsp_run(&r, &cases[i].rsp, &conf, &job);
        smtp_peer_expect_case(&r, i, DEFERRED, 0, "4.5.0", cases[i].phase, cases[i].text);
        assert_int_equal(r.closed, 1);
        assert_true(cases[i].rsp.eof);
        assert_null(strstr(buf_cstr(&cases[i].rsp.cmds), "QUIT"));
        smtp_peer_rsp_finish(&r, &cases[i].rsp);
    }
    SSL_CTX_free(ctx);
}

/* SIZE over the server's limit: 5.3.4 without MAIL; SMTPUTF8 offered: the parameter goes out. */
static void test_rsp_size_utf8(void **state)
{
    (void)state;
    struct smtp_peer_rsp rsp = { .ehlo = "250-resp.test\r\n250-SIZE 100\r\n250 PIPELINING\r\n" };
    struct relay_smtp_conf conf = smtp_peer_conf();
    struct relay_smtp_job job = smtp_peer_job3();
    struct smtp_peer_run r;
    smtp_peer_rsp_run(&r, &rsp, &conf, &job);
    char want[160];
    snprintf(want, sizeof want, "message size %zu exceeds size limit 100 of server mx.remote.test[127.0.0.1]",
             smtp_peer_body_in_len);
    smtp_peer_expect_all(&r, FAILED, 0, "5.3.4", RELAY_PHASE_MAIL, want);
    assert_string_equal(buf_cstr(&rsp.cmds), "EHLO relay.test\nQUIT\n");
    smtp_peer_rsp_finish(&r, &rsp);

    struct smtp_peer_rsp rsp2 = { .ehlo = "250-resp.test\r\n250-SMTPUTF8\r\n250-DSN\r\n250 PIPELINING\r\n" };
    static const struct relay_smtp_rcpt rc[] = { { "j\xc3\xb6rg@remote.test", DSN_NOTIFY_SUCCESS, NULL } };
    job.rcpts = rc;
    job.nrcpts = 1;
    job.envid = NULL;
    job.ret = DSN_RET_FULL;
    smtp_peer_rsp_run(&r, &rsp2, &conf, &job);
    smtp_peer_expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, NULL);
    assert_string_equal(buf_cstr(&rsp2.cmds), "EHLO relay.test\nMAIL FROM:<s@src.test> SMTPUTF8 RET=FULL\n"
                                              "RCPT TO:<j\xc3\xb6rg@remote.test> NOTIFY=SUCCESS\nDATA\nQUIT\n");
    smtp_peer_rsp_finish(&r, &rsp2);
}

struct tls_case {
    enum smtp_peer_tls mode;
    enum tls_policy policy;
    bool trust_cert;            /* the client trusts the responder's certificate */
    const char *mx_host;
    enum relay_smtp_outcome outcome;
    const char *status;
    enum relay_phase phase;
    const char *text;
    bool tls, fallback;
    const char *cmds;
};

static void test_rsp_starttls(void **state)
{
    (void)state;
    static const char *const tls_cmds = "EHLO relay.test\nSTARTTLS\n<TLS>\nEHLO relay.test\n"
                                        "MAIL FROM:<s@src.test> BODY=8BITMIME\nRCPT TO:<one@remote.test>\n"
                                        "RCPT TO:<two@remote.test>\nRCPT TO:<three@remote.test>\nDATA\nQUIT\n";
    static const char *const plain_cmds = "EHLO relay.test\nMAIL FROM:<s@src.test> BODY=8BITMIME\n"
                                          "RCPT TO:<one@remote.test>\nRCPT TO:<two@remote.test>\n"
                                          "RCPT TO:<three@remote.test>\nDATA\nQUIT\n";
    static const struct tls_case cases[] = {
        { SMTP_PEER_TLS_OK, TLS_POLICY_MAY, false, "mx.remote.test", DELIVERED, "2.0.0", RELAY_PHASE_BODY, "Ok",
          true, false, NULL },
        { SMTP_PEER_TLS_OK, TLS_POLICY_ENCRYPT, false, "mx.remote.test", DELIVERED, "2.0.0", RELAY_PHASE_BODY, "Ok",
          true, false, NULL },
        { SMTP_PEER_TLS_OK, TLS_POLICY_VERIFY, true, "mx.remote.test", DELIVERED, "2.0.0", RELAY_PHASE_BODY, "Ok",
          true, false, NULL },
        { SMTP_PEER_TLS_OK, TLS_POLICY_NONE, false, "mx.remote.test", DELIVERED, "2.0.0", RELAY_PHASE_BODY, "Ok",
          false, false, NULL },
        { SMTP_PEER_TLS_OK, TLS_POLICY_VERIFY, false, "mx.remote.test", DEFERRED, "4.7.5", RELAY_PHASE_TLS,
          "TLS with mx.remote.test[127.0.0.1] failed: certificate verify failed: self-signed certificate", false,
          false, "EHLO relay.test\nSTARTTLS\n" },
        { SMTP_PEER_TLS_OK, TLS_POLICY_VERIFY, true, "other.remote.test", DEFERRED, "4.7.5", RELAY_PHASE_TLS,
          "certificate verify failed: hostname mismatch", false, false, "EHLO relay.test\nSTARTTLS\n" },
        { SMTP_PEER_TLS_BROKEN, TLS_POLICY_MAY, false, "mx.remote.test", DEFERRED, "4.7.5", RELAY_PHASE_TLS,
          "TLS with mx.remote.test[127.0.0.1] failed: ", false, true, "EHLO relay.test\nSTARTTLS\n" },
        { SMTP_PEER_TLS_BROKEN, TLS_POLICY_ENCRYPT, false, "mx.remote.test", DEFERRED, "4.7.5", RELAY_PHASE_TLS,
          "TLS with mx.remote.test[127.0.0.1] failed: ", false, false, "EHLO relay.test\nSTARTTLS\n" },
        { SMTP_PEER_TLS_OFF, TLS_POLICY_ENCRYPT, false, "mx.remote.test", DEFERRED, "4.7.4", RELAY_PHASE_STARTTLS,
          "TLS is required, but was not offered by host mx.remote.test[127.0.0.1]", false, false,
          "EHLO relay.test\nQUIT\n" },
        { SMTP_PEER_TLS_OFF, TLS_POLICY_VERIFY, true, "mx.remote.test", DEFERRED, "4.7.4", RELAY_PHASE_STARTTLS,
          "TLS is required, but was not offered", false, false, "EHLO relay.test\nQUIT\n" },
        { SMTP_PEER_TLS_OFF, TLS_POLICY_MAY, false, "mx.remote.test", DELIVERED, "2.0.0", RELAY_PHASE_BODY, "Ok",
          false, false, NULL },
        { SMTP_PEER_TLS_REFUSE, TLS_POLICY_MAY, false, "mx.remote.test", DELIVERED, "2.0.0", RELAY_PHASE_BODY, "Ok",
          false, false, "EHLO relay.test\nSTARTTLS\nMAIL FROM:<s@src.test> BODY=8BITMIME\nRCPT TO:<one@remote.test>\n"
          "RCPT TO:<two@remote.test>\nRCPT TO:<three@remote.test>\nDATA\nQUIT\n" },
        { SMTP_PEER_TLS_REFUSE, TLS_POLICY_ENCRYPT, false, "mx.remote.test", DEFERRED, "4.7.4", RELAY_PHASE_STARTTLS,
          "TLS is required, but host mx.remote.test[127.0.0.1] refused STARTTLS: 454 4.7.0 TLS not available due to "
          "local problem", false, false, "EHLO relay.test\nSTARTTLS\nQUIT\n" },
        { SMTP_PEER_TLS_STALL, TLS_POLICY_MAY, false, "mx.remote.test", DEFERRED, "4.7.5", RELAY_PHASE_TLS,
          "TLS with mx.remote.test[127.0.0.1] failed: handshake timed out", false, true,
          "EHLO relay.test\nSTARTTLS\n" },
    };
    struct buf err = BUF_INIT;
    if (!tls_self_signed(smtp_peer_cert_file, smtp_peer_key_file, "mx.remote.test", &err))
        fail_msg("tls_self_signed: %s", buf_cstr(&err));
    SSL_CTX *system_ctx = tls_client_ctx_new(NULL, NULL, &err);
    SSL_CTX *pinned_ctx = tls_client_ctx_new(smtp_peer_cert_file, NULL, &err);
    assert_non_null(system_ctx);
    assert_non_null(pinned_ctx);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct tls_case *tc = &cases[i];
        struct smtp_peer_rsp rsp = { .tls = tc->mode };
        struct relay_smtp_conf conf = smtp_peer_conf();
        conf.tls = tc->policy;
        conf.mx_host = tc->mx_host;
        conf.tls_ctx = tc->trust_cert ? pinned_ctx : system_ctx;
        conf.timeouts.starttls_ms = 500;
        struct relay_smtp_job job = smtp_peer_job3();
        struct smtp_peer_run r;
        smtp_peer_rsp_open(&r, &rsp, &conf);
        r.want_host = tc->mx_host;
        assert_true(relay_smtp_send(r.c, &job, smtp_peer_done_cb, &r));
        smtp_peer_run_until(&r, 1, true);
        smtp_peer_rsp_wait_eof(&r, &rsp);
        assert_true(rsp.eof);
        smtp_peer_expect_case(&r, i, tc->outcome, tc->outcome == DELIVERED ? 250 : 0, tc->status, tc->phase,
                              tc->text);
        if (r.tls != tc->tls || r.tls_fallback != tc->fallback)
            fail_msg("case %zu: tls %d fallback %d", i, r.tls, r.tls_fallback);
        const char *want = tc->cmds != NULL ? tc->cmds : tc->tls ? tls_cmds : plain_cmds;
        if (strcmp(buf_cstr(&rsp.cmds), want) != 0)
            fail_msg("case %zu: commands \"%s\"", i, buf_cstr(&rsp.cmds));
        if (tc->outcome == DELIVERED) {
            assert_int_equal(rsp.data.len, smtp_peer_body_wire_len);
            assert_memory_equal(rsp.data.data, smtp_peer_body_wire, smtp_peer_body_wire_len);
        }
        if (tc->fallback) {     /* what the caller does next: plaintext on a new connection */
            relay_smtp_free(r.c);
            conf.tls = TLS_POLICY_NONE;
            struct netaddr a = smtp_peer_loopback(rsp.port);
            r.c = relay_smtp_new(r.base, &conf, &a, 1, smtp_peer_closed_cb, &r);
            rsp.tls = SMTP_PEER_TLS_OFF;
            assert_true(relay_smtp_send(r.c, &job, smtp_peer_done_cb, &r));
            smtp_peer_run_until(&r, 2, false);
            smtp_peer_expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
            assert_int_equal(rsp.conns, 2);
        }
        smtp_peer_rsp_finish(&r, &rsp);
    }
    SSL_CTX_free(system_ctx);
    SSL_CTX_free(pinned_ctx);
    buf_release(&err);
}

/* Anything the server sends to an idle connection ends it (no QUIT); the results stand. */
static void test_rsp_idle_unsolicited(void **state)
{
    (void)state;
    struct smtp_peer_rsp rsp = { 0 };
    struct relay_smtp_conf conf = smtp_peer_conf();
    conf.idle_ms = 60000;
    struct relay_smtp_job job = smtp_peer_job3();
    struct smtp_peer_run r;
    smtp_peer_rsp_open(&r, &rsp, &conf);
    assert_true(relay_smtp_send(r.c, &job, smtp_peer_done_cb, &r));
    smtp_peer_run_until(&r, 1, false);
    smtp_peer_expect_all(&r, DELIVERED, 250, "2.0.0", RELAY_PHASE_BODY, "Ok");
    assert_true(relay_smtp_ready(r.c));
    smtp_peer_rsp_say(&rsp, "421 4.4.2 resp.test Error: timeout exceeded\r\n");
    smtp_peer_run_until(&r, 1, true);
    smtp_peer_rsp_wait_eof(&r, &rsp);
    assert_true(rsp.eof);
    assert_null(strstr(buf_cstr(&rsp.cmds), "QUIT"));
    assert_false(relay_smtp_ready(r.c));
    smtp_peer_rsp_finish(&r, &rsp);
}

/* No greeting at all: the greeting timeout. */
static void test_rsp_greeting_timeout(void **state)
{
    (void)state;
    struct smtp_peer_rsp rsp = { .greeting = "" };
    struct relay_smtp_conf conf = smtp_peer_conf();
    conf.timeouts.greeting_ms = 300;
    struct relay_smtp_job job = smtp_peer_job3();
    struct smtp_peer_run r;
    smtp_peer_rsp_run(&r, &rsp, &conf, &job);
    smtp_peer_expect_all(&r, DEFERRED, 0, "4.4.2", RELAY_PHASE_GREETING,
               "conversation with mx.remote.test[127.0.0.1] timed out while receiving the initial server greeting");
    smtp_peer_rsp_finish(&r, &rsp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_names),
        cmocka_unit_test(test_rsp_pipelining_wire),
        cmocka_unit_test(test_rsp_large_body),
        cmocka_unit_test(test_rsp_rcpt_rejects),
        cmocka_unit_test(test_rsp_protocol_errors),
        cmocka_unit_test(test_rsp_size_utf8),
        cmocka_unit_test(test_rsp_starttls),
        cmocka_unit_test(test_rsp_idle_unsolicited),
        cmocka_unit_test(test_rsp_greeting_timeout),
    };
    return cmocka_run_group_tests(tests, smtp_peer_setup, smtp_peer_teardown);
}
