/*
 * test_relay_dsn.c - unit tests of delivery status notifications (relay/relay_dsn.c).
 *
 * Every DSN built here is read back by the structural checker of support/dsn_check.c (CR LF
 * lines, header fields, boundary, parts, delivery-status groups). Tests then assert exact values:
 * the NOTIFY decision table, the null sender, RET=FULL/HDRS/absent with the size cap, NUL and long
 * lines, delayed and success reports, ENVID and ORCPT, status classes, dates and Message-ID,
 * hostile network text (CR LF in replies, addresses and ENVID), boundary collisions, bare LF in
 * the original, UTF-8 addresses, 8-bit bodies. One DSN is written to a file (kept at $MXGATE_DSN_SAMPLE when set) and read back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "buf.h"
#include "relay_dsn.h"
#include "support/dsn_check.h"

#define NOW 1700000000000LL                 /* Tue, 14 Nov 2023 22:13:20 +0000 */
#define NOW_DATE "Tue, 14 Nov 2023 22:13:20 +0000"

/* ---- fixtures ------------------------------------------------------------------------------ */

static const char orig_small[] =
    "Received: from client.example.org by mx.example.test\r\n"
    "From: Alice <alice@example.org>\r\n"
    "To: bob@remote.test\r\n"
    "Subject: lunch\r\n"
    "Message-ID: <m1@example.org>\r\n"
    "\r\n"
    "Shall we?\r\n";

static struct relay_dsn_rcpt rcpt_failed(void)
{
    return (struct relay_dsn_rcpt){
        .addr = "bob@remote.test", .action = DSN_ACTION_FAILED, .status = "5.1.1",
        .remote_mta = "mx1.remote.test", .diagnostic = "550 5.1.1 <bob@remote.test>: no such user",
        .last_attempt_ms = NOW - 60000,
    };
}

static struct relay_dsn_msg msg_for(const struct relay_dsn_rcpt *r, size_t n)
{
    return (struct relay_dsn_msg){
        .reporting_mta = "mx.example.test", .sender = "alice@example.org",
        .queue_id = "0HNV3B2C4D5E6F7G8H9J", .arrival_ms = NOW - 3600000,
        .original = orig_small, .original_len = sizeof orig_small - 1,
        .rcpts = r, .nrcpts = n, .now_ms = NOW, .rnd = 0x1234,
    };
}

/* The last DSN built, parsed back, and what the builder said; build() replaces them. */
static struct buf out;
static struct dsn_check_parsed ps;
static struct relay_dsn_info info;
static bool rep[8];

/* Builds m's DSN into out, checks its structure into ps; returns the recipient count. */
static size_t build(const struct relay_dsn_msg *m)
{
    dsn_check_free(&ps);
    buf_release(&out);
    assert_true(m->nrcpts <= sizeof rep / sizeof rep[0]);
    size_t n = relay_dsn_build(m, &out, rep, &info);
    if (n > 0)
        dsn_check_parse(out.data, out.len, &ps);
    return n;
}

static int release_all(void **state)
{
    (void)state;
    dsn_check_free(&ps);
    buf_release(&out);
    return 0;
}

/* ---- NOTIFY and the null sender ------------------------------------------------------------ */

static void test_notify_table(void **state)
{
    (void)state;
    enum { N = DSN_NOTIFY_NEVER, S = DSN_NOTIFY_SUCCESS, F = DSN_NOTIFY_FAILURE, D = DSN_NOTIFY_DELAY };
    static const struct {
        unsigned notify;
        bool failed, delayed, delivered, relayed, expanded;
    } rows[] = {
        { 0, true, true, false, false, false },
        { N, false, false, false, false, false },
        { N | S | F | D, false, false, false, false, false },
        { S, false, false, true, true, true },
        { F, true, false, false, false, false },
        { D, false, true, false, false, false },
        { S | F, true, false, true, true, true },
        { F | D, true, true, false, false, false },
        { S | D, false, true, true, true, true },
        { S | F | D, true, true, true, true, true },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const bool want[] = { rows[i].failed, rows[i].delayed, rows[i].delivered,
                              rows[i].relayed, rows[i].expanded };
        for (int a = DSN_ACTION_FAILED; a <= DSN_ACTION_EXPANDED; a++) {
            if (relay_dsn_wanted(rows[i].notify, (enum dsn_action)a) != want[a])
                fail_msg("row %zu, action %s: want %d", i, relay_dsn_action_name((enum dsn_action)a),
                         want[a]);
        }
    }
    /* never to the null sender; action names */
    assert_false(relay_dsn_sender_ok(NULL));
    assert_false(relay_dsn_sender_ok(""));
    assert_false(relay_dsn_sender_ok("<>"));
    assert_true(relay_dsn_sender_ok("alice@example.org"));
    assert_string_equal(relay_dsn_action_name(DSN_ACTION_FAILED), "failed");
    assert_string_equal(relay_dsn_action_name(DSN_ACTION_DELAYED), "delayed");
    assert_string_equal(relay_dsn_action_name(DSN_ACTION_DELIVERED), "delivered");
    assert_string_equal(relay_dsn_action_name(DSN_ACTION_RELAYED), "relayed");
    assert_string_equal(relay_dsn_action_name(DSN_ACTION_EXPANDED), "expanded");
}


static void test_nothing_to_send(void **state)
{
    (void)state;
    struct relay_dsn_rcpt r[2] = { rcpt_failed(), rcpt_failed() };
    struct relay_dsn_msg m = msg_for(r, 2);
    static const char *const null_senders[] = { "", "<>", NULL };
    struct buf keep = BUF_INIT;
    buf_puts(&keep, "keep");
    for (size_t i = 0; i < 3; i++) {
        m.sender = null_senders[i];
        bool flags[2] = { true, true };
        struct relay_dsn_info inf = { .nreported = 9 };
        assert_int_equal(relay_dsn_build(&m, &keep, flags, &inf), 0);
        assert_string_equal(buf_cstr(&keep), "keep");
        assert_false(flags[0] || flags[1]);
        assert_int_equal(inf.nreported, 0);
    }
    /* nobody wants it: NEVER, and SUCCESS-only for a failure */
    m.sender = "alice@example.org";
    r[0].notify = DSN_NOTIFY_NEVER;
    r[1].notify = DSN_NOTIFY_SUCCESS;
    assert_int_equal(relay_dsn_build(&m, &keep, NULL, NULL), 0);
    /* no recipients at all */
    m.nrcpts = 0;
    assert_int_equal(relay_dsn_build(&m, &keep, NULL, NULL), 0);
    assert_string_equal(buf_cstr(&keep), "keep");
    buf_release(&keep);
}

/* ---- a failure report, field by field ------------------------------------------------------ */

static void test_failed_full(void **state)
{
    (void)state;
    struct relay_dsn_rcpt r[1] = { rcpt_failed() };
    r[0].orcpt = "rfc822;Bob.Original@remote.test";
    struct relay_dsn_msg m = msg_for(r, 1);
    m.envid = "QQ314159";
    assert_int_equal(build(&m), 1);
    assert_true(rep[0]);
    assert_int_equal(info.nreported, 1);
    assert_int_equal(info.kind, DSN_ACTION_FAILED);
    assert_true(info.full);
    assert_false(info.eightbit);
    assert_false(info.smtputf8);

    /* the header, exactly, in order */
    static const char *const top[][2] = {
        { "From", "Mail Delivery System <MAILER-DAEMON@mx.example.test>" },
        { "To", "<alice@example.org>" },
        { "Subject", "Undelivered Mail Returned to Sender" },
        { "Date", NOW_DATE },
        { "Message-ID", NULL },
        { "MIME-Version", "1.0" },
        { "Auto-Submitted", "auto-replied" },
        { "Content-Type", NULL },
    };
    dsn_check_expect_fields(&ps.top, top, 8);
    char want_ct[200];
    snprintf(want_ct, sizeof want_ct,
             "multipart/report; report-type=delivery-status;\tboundary=\"%s\"", ps.boundary);
    assert_string_equal(dsn_check_get(&ps.top, "Content-Type"), want_ct);
    assert_int_equal(strncmp(ps.boundary, "=_mxgate_", 9), 0);
    assert_int_equal(strlen(ps.boundary), 9 + 16);
    /* Message-ID: <YYYYMMDDhhmmss.<16 hex>@host>, and info has it without brackets */
    const char *mid = dsn_check_get(&ps.top, "Message-ID");
    assert_int_equal(strncmp(mid, "<20231114221320.", 16), 0);
    assert_int_equal(strspn(mid + 16, "0123456789abcdef"), 16);
    assert_string_equal(mid + 32, "@mx.example.test>");
    assert_int_equal(strncmp(mid + 1, info.message_id, strlen(mid) - 2), 0);
    assert_int_equal(strlen(info.message_id), strlen(mid) - 2);
    /* the preamble */
    static const char preamble[] = "This is a MIME-encapsulated delivery status notification.\r\n\r\n--";
    assert_memory_equal(ps.body, preamble, sizeof preamble - 1);

    /* parts */
    assert_int_equal(ps.nparts, 3);
    assert_string_equal(dsn_check_get(&ps.parts[0].hdr, "Content-Type"), "text/plain; charset=us-ascii");
    assert_string_equal(dsn_check_get(&ps.parts[0].hdr, "Content-Description"), "Notification");
    assert_null(dsn_check_get(&ps.parts[0].hdr, "Content-Transfer-Encoding"));
    assert_string_equal(dsn_check_get(&ps.parts[1].hdr, "Content-Type"), "message/delivery-status");
    assert_string_equal(dsn_check_get(&ps.parts[1].hdr, "Content-Description"), "Delivery report");
    assert_string_equal(dsn_check_get(&ps.parts[2].hdr, "Content-Type"), "message/rfc822");
    assert_string_equal(dsn_check_get(&ps.parts[2].hdr, "Content-Description"), "Undelivered Message");
    /* the original comes back byte for byte */
    assert_int_equal(ps.parts[2].content_len, sizeof orig_small - 1);
    assert_memory_equal(ps.parts[2].content, orig_small, sizeof orig_small - 1);

    /* the human text names the recipient, the status, the server and its reply */
    const char *h = ps.parts[0].content;
    assert_non_null(strstr(h, "This is the mail delivery system at mx.example.test.\r\n"));
    assert_non_null(strstr(h, "\r\nThe reason is given below for each of them.\r\n"
                              "Your message is attached.\r\n\r\nQueue id: 0HNV3B2C4D5E6F7G8H9J\r\n"));
    assert_non_null(strstr(h, "\r\n<bob@remote.test>: delivery failed (5.1.1)\r\n"
                              "    Remote server: mx1.remote.test\r\n"
                              "    It said: 550 5.1.1 <bob@remote.test>: no such user\r\n"));

    /* delivery-status, every field exact and in RFC 3464 order */
    assert_int_equal(ps.ngroups, 2);
    static const char *const g0[][2] = {
        { "Original-Envelope-Id", "QQ314159" },
        { "Reporting-MTA", "dns; mx.example.test" },
        { "Arrival-Date", "Tue, 14 Nov 2023 21:13:20 +0000" },
        { "X-Mxgate-Queue-ID", "0HNV3B2C4D5E6F7G8H9J" },
    };
    static const char *const g1[][2] = {
        { "Original-Recipient", "rfc822;Bob.Original@remote.test" },
        { "Final-Recipient", "rfc822;bob@remote.test" },
        { "Action", "failed" },
        { "Status", "5.1.1" },
        { "Remote-MTA", "dns; mx1.remote.test" },
        { "Diagnostic-Code", "smtp; 550 5.1.1 <bob@remote.test>: no such user" },
        { "Last-Attempt-Date", "Tue, 14 Nov 2023 22:12:20 +0000" },
    };
    dsn_check_expect_fields(&ps.groups[0], g0, 4);
    dsn_check_expect_fields(&ps.groups[1], g1, 7);
}

/* ---- which part of the original comes back ------------------------------------------------- */

static void test_ret_table(void **state)
{
    (void)state;
    char longline[1200];
    memset(longline, 'x', sizeof longline);
    longline[sizeof longline - 1] = '\0';
    char orig_long_body[1400], orig_nul[64], orig_long_hdr[1400];
    snprintf(orig_long_body, sizeof orig_long_body, "Subject: s\r\n\r\n%s\r\n", longline);
    snprintf(orig_long_hdr, sizeof orig_long_hdr, "X-Long: %s\r\nSubject: s\r\n\r\nbody\r\n", longline);
    static const char nul_src[] = "Subject: s\r\n\r\nhas\0nul\r\n";
    memcpy(orig_nul, nul_src, sizeof nul_src);
    const size_t small = sizeof orig_small - 1;
    static const char small_headers[] =
        "Received: from client.example.org by mx.example.test\r\n"
        "From: Alice <alice@example.org>\r\n"
        "To: bob@remote.test\r\n"
        "Subject: lunch\r\n"
        "Message-ID: <m1@example.org>\r\n";
    const struct {
        const char *ret;
        enum dsn_action action;
        const char *orig;
        size_t orig_len;
        size_t max_full;
        const char *type;           /* NULL: no third part */
        const char *descr;
        const char *content;        /* exact content, or NULL to skip */
    } rows[] = {
        { NULL, DSN_ACTION_FAILED, orig_small, small, 0, "message/rfc822", "Undelivered Message", orig_small },
        { "FULL", DSN_ACTION_FAILED, orig_small, small, 0, "message/rfc822", "Undelivered Message", orig_small },
        { "full", DSN_ACTION_FAILED, orig_small, small, 0, "message/rfc822", "Undelivered Message", orig_small },
        { "HDRS", DSN_ACTION_FAILED, orig_small, small, 0, "text/rfc822-headers", "Undelivered Message Headers", small_headers },
        { "hdrs", DSN_ACTION_FAILED, orig_small, small, 0, "text/rfc822-headers", "Undelivered Message Headers", small_headers },
        /* the size cap: exactly at it the whole message, one byte over only the headers */
        { "FULL", DSN_ACTION_FAILED, orig_small, small, small, "message/rfc822", "Undelivered Message", orig_small },
        { "FULL", DSN_ACTION_FAILED, orig_small, small, small - 1, "text/rfc822-headers", "Undelivered Message Headers", small_headers },
        { NULL, DSN_ACTION_FAILED, orig_small, small, 100, "text/rfc822-headers", "Undelivered Message Headers", NULL },
        /* not transportable as message/rfc822 */
        { "FULL", DSN_ACTION_FAILED, orig_long_body, strlen(orig_long_body), 0, "text/rfc822-headers", "Undelivered Message Headers", "Subject: s\r\n" },
        { "FULL", DSN_ACTION_FAILED, orig_nul, sizeof nul_src - 1, 0, "text/rfc822-headers", "Undelivered Message Headers", "Subject: s\r\n" },
        { "FULL", DSN_ACTION_FAILED, orig_long_hdr, strlen(orig_long_hdr), 0, "text/rfc822-headers", "Undelivered Message Headers", NULL },
        /* no failure: headers only whatever RET says (RFC 3461 §4.3) */
        { "FULL", DSN_ACTION_DELAYED, orig_small, small, 0, "text/rfc822-headers", "Delayed Message Headers", small_headers },
        { NULL, DSN_ACTION_DELIVERED, orig_small, small, 0, "text/rfc822-headers", "Delivered Message Headers", small_headers },
        /* no original: two parts */
        { NULL, DSN_ACTION_FAILED, NULL, 0, 0, NULL, NULL, NULL },
        { NULL, DSN_ACTION_FAILED, orig_small, 0, 0, NULL, NULL, NULL },
        /* headers only and no header section */
        { "HDRS", DSN_ACTION_FAILED, "\r\nbody only\r\n", 13, 0, "text/rfc822-headers", "Undelivered Message Headers", "" },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct relay_dsn_rcpt r[1] = { rcpt_failed() };
        r[0].action = rows[i].action;
        r[0].notify = DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY;
        struct relay_dsn_msg m = msg_for(r, 1);
        m.ret = rows[i].ret;
        m.original = rows[i].orig;
        m.original_len = rows[i].orig_len;
        m.max_full = rows[i].max_full;
        assert_int_equal(build(&m), 1);
        /* the text says what is attached, and only that */
        const char *h = ps.parts[0].content;
        bool says_full = strstr(h, "\r\nYour message is attached.\r\n") != NULL;
        bool says_hdrs = strstr(h, "\r\nThe header section of your message is attached.\r\n") != NULL;
        if (says_full != (rows[i].type != NULL && strcmp(rows[i].type, "message/rfc822") == 0) ||
            says_hdrs != (rows[i].type != NULL && strcmp(rows[i].type, "message/rfc822") != 0))
            fail_msg("row %zu: text says full %d, headers %d", i, says_full, says_hdrs);
        if (rows[i].type == NULL) {
            if (ps.nparts != 2)
                fail_msg("row %zu: %zu parts, want 2", i, ps.nparts);
        } else {
            if (ps.nparts != 3)
                fail_msg("row %zu: %zu parts, want 3", i, ps.nparts);
            if (strcmp(dsn_check_get(&ps.parts[2].hdr, "Content-Type"), rows[i].type) != 0)
                fail_msg("row %zu: type %s, want %s", i, dsn_check_get(&ps.parts[2].hdr, "Content-Type"),
                         rows[i].type);
            assert_string_equal(dsn_check_get(&ps.parts[2].hdr, "Content-Description"), rows[i].descr);
            if (info.full != (strcmp(rows[i].type, "message/rfc822") == 0))
                fail_msg("row %zu: info.full %d", i, info.full);
            if (rows[i].content != NULL &&
                (ps.parts[2].content_len != strlen(rows[i].content) ||
                 memcmp(ps.parts[2].content, rows[i].content, ps.parts[2].content_len) != 0))
                fail_msg("row %zu: content [%s], want [%s]", i, ps.parts[2].content, rows[i].content);
        }
    }
}

/* Header lines over 998 octets are split; the size cap keeps whole fields only. */
static void test_headers_cut(void **state)
{
    (void)state;
    char big[2100];
    memset(big, 'y', 2000);
    big[2000] = '\0';
    char orig[2200];
    snprintf(orig, sizeof orig, "X-Big: %s\r\nSubject: s\r\n\r\nbody\r\n", big);
    struct relay_dsn_rcpt r[1] = { rcpt_failed() };
    struct relay_dsn_msg m = msg_for(r, 1);
    m.ret = "HDRS";
    m.original = orig;
    m.original_len = strlen(orig);
    assert_int_equal(build(&m), 1);
    /* lines of 998 octets, each further one starting with a space */
    struct buf want = BUF_INIT;
    buf_printf(&want, "X-Big: %.991s\r\n %.997s\r\n %s\r\nSubject: s\r\n", big, big + 991,
               big + 1988);
    assert_int_equal(ps.parts[2].content_len, want.len);
    assert_memory_equal(ps.parts[2].content, want.data, want.len);

    /* cap 60: "Received: ..." (54 bytes with CR LF) fits, "From: ..." would pass 60 */
    m.original = orig_small;
    m.original_len = sizeof orig_small - 1;
    m.max_full = 60;
    assert_int_equal(build(&m), 1);
    assert_string_equal(ps.parts[2].content, "Received: from client.example.org by mx.example.test\r\n");
    buf_release(&want);
}

/* ---- delayed and success reports ----------------------------------------------------------- */

static void test_delayed_and_success(void **state)
{
    (void)state;
    struct relay_dsn_rcpt r[3] = { rcpt_failed(), rcpt_failed(), rcpt_failed() };
    r[0].action = DSN_ACTION_DELAYED;
    r[0].status = "4.4.1";
    r[0].diagnostic = "451 4.4.1 try again later";
    r[0].retry_until_ms = NOW + 4 * 86400000LL;
    r[1].action = DSN_ACTION_DELIVERED;     /* NOTIFY absent: no success report */
    r[1].status = "2.0.0";
    r[2].action = DSN_ACTION_DELAYED;
    r[2].notify = DSN_NOTIFY_FAILURE;       /* did not ask for DELAY */
    struct relay_dsn_msg m = msg_for(r, 3);
    assert_int_equal(build(&m), 1);
    assert_true(rep[0]);
    assert_false(rep[1]);
    assert_false(rep[2]);
    assert_int_equal(info.kind, DSN_ACTION_DELAYED);
    assert_string_equal(dsn_check_get(&ps.top, "Subject"), "Delayed Mail (still being retried)");
    assert_int_equal(ps.ngroups, 2);
    assert_string_equal(dsn_check_get(&ps.groups[1], "Action"), "delayed");
    assert_string_equal(dsn_check_get(&ps.groups[1], "Status"), "4.4.1");
    assert_string_equal(dsn_check_get(&ps.groups[1], "Will-Retry-Until"), "Sat, 18 Nov 2023 22:13:20 +0000");
    assert_string_equal(dsn_check_get(&ps.groups[1], "Diagnostic-Code"), "smtp; 451 4.4.1 try again later");
    assert_null(dsn_check_get(&ps.groups[0], "Original-Envelope-Id"));
    assert_null(dsn_check_get(&ps.groups[1], "Original-Recipient"));
    assert_non_null(strstr(ps.parts[0].content, "<bob@remote.test>: not delivered yet (4.4.1); trying "
                                                "until Sat, 18 Nov 2023\r\n    22:13:20 +0000\r\n"));

    /* Will-Retry-Until only for delayed */
    r[0].action = DSN_ACTION_FAILED;
    r[0].status = "5.4.7";
    assert_int_equal(build(&m), 1);
    assert_null(dsn_check_get(&ps.groups[1], "Will-Retry-Until"));
    assert_string_equal(dsn_check_get(&ps.top, "Subject"), "Undelivered Mail Returned to Sender");

    /* success: only for NOTIFY=SUCCESS; relayed and expanded too */
    static const enum dsn_action ok[] = { DSN_ACTION_DELIVERED, DSN_ACTION_RELAYED, DSN_ACTION_EXPANDED };
    for (size_t i = 0; i < 3; i++) {
        struct relay_dsn_rcpt s[1] = { rcpt_failed() };
        s[0].action = ok[i];
        s[0].status = "2.0.0";
        s[0].diagnostic = "250 2.0.0 Ok: queued as 4TXYZ";
        s[0].notify = DSN_NOTIFY_SUCCESS;
        struct relay_dsn_msg sm = msg_for(s, 1);
        assert_int_equal(build(&sm), 1);
        assert_int_equal(info.kind, DSN_ACTION_DELIVERED);
        assert_string_equal(dsn_check_get(&ps.top, "Subject"), "Successful Mail Delivery Report");
        assert_string_equal(dsn_check_get(&ps.groups[1], "Action"), relay_dsn_action_name(ok[i]));
        assert_string_equal(dsn_check_get(&ps.groups[1], "Status"), "2.0.0");
    }
}

/* ---- status codes -------------------------------------------------------------------------- */

static void test_status_table(void **state)
{
    (void)state;
    static const struct {
        enum dsn_action action;
        const char *status;
        const char *want;
    } rows[] = {
        { DSN_ACTION_FAILED, "5.1.1", "5.1.1" },
        { DSN_ACTION_FAILED, "5.7.26", "5.7.26" },
        { DSN_ACTION_FAILED, "5.999.999", "5.999.999" },
        { DSN_ACTION_FAILED, "4.4.7", "5.4.7" },        /* class follows the action */
        { DSN_ACTION_FAILED, "2.0.0", "5.0.0" },
        { DSN_ACTION_DELAYED, "5.1.1", "4.1.1" },
        { DSN_ACTION_DELIVERED, "5.1.1", "2.1.1" },
        { DSN_ACTION_FAILED, NULL, "5.0.0" },
        { DSN_ACTION_DELAYED, NULL, "4.0.0" },
        { DSN_ACTION_RELAYED, NULL, "2.0.0" },
        { DSN_ACTION_FAILED, "", "5.0.0" },
        { DSN_ACTION_FAILED, "5.1", "5.0.0" },
        { DSN_ACTION_FAILED, "5.1.1.", "5.0.0" },
        { DSN_ACTION_FAILED, "5.1000.1", "5.0.0" },
        { DSN_ACTION_FAILED, " 5.1.1", "5.0.0" },
        { DSN_ACTION_FAILED, "5. 1.1", "5.0.0" },
        { DSN_ACTION_FAILED, "5.+1.1", "5.0.0" },
        { DSN_ACTION_FAILED, "3.1.1", "5.0.0" },
        { DSN_ACTION_FAILED, "5.1.1\r\nX: y", "5.0.0" },
        { DSN_ACTION_FAILED, "550", "5.0.0" },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct relay_dsn_rcpt r[1] = { rcpt_failed() };
        r[0].action = rows[i].action;
        r[0].status = rows[i].status;
        r[0].notify = DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY;
        struct relay_dsn_msg m = msg_for(r, 1);
        assert_int_equal(build(&m), 1);
        if (strcmp(dsn_check_get(&ps.groups[1], "Status"), rows[i].want) != 0)
            fail_msg("row %zu: Status %s, want %s", i, dsn_check_get(&ps.groups[1], "Status"), rows[i].want);
    }
}

/* ---- hostile text -------------------------------------------------------------------------- */

static void test_hostile_text(void **state)
{
    (void)state;
    char longword[10001];
    memset(longword, 'w', 10000);
    longword[10000] = '\0';
    char longreply[10100];
    snprintf(longreply, sizeof longreply, "550 %s", longword);

    struct relay_dsn_rcpt r[2] = { rcpt_failed(), rcpt_failed() };
    r[0].addr = "bob@remote.test\r\nBcc: victim@example.net";
    r[0].orcpt = "rfc822;x\r\n\r\n--=_mxgate_0000000000000000";
    r[0].remote_mta = "mx1.remote.test\r\nX-Evil: 1";
    r[0].diagnostic = "550-5.1.1 first\r\n550-5.1.1 \x01second\t\r\n\r\n550 5.1.1 \xc3\xa9third \r\n"
                      "Subject: injected\r\n.\r\n";
    r[1].addr = "carol@remote.test";
    r[1].diagnostic = longreply;
    struct relay_dsn_msg m = msg_for(r, 2);
    m.envid = "id\r\nSubject: injected";
    m.queue_id = "Q\nX-Q: 1";
    m.reporting_mta = "mx.example.test\r\nX: y";
    m.sender = "alice@example.org>\r\nCc: victim@example.net";
    assert_int_equal(build(&m), 2);

    /* no injected field anywhere in the header */
    assert_int_equal(ps.top.n, 8);
    assert_null(dsn_check_get(&ps.top, "Cc"));
    assert_null(dsn_check_get(&ps.top, "Bcc"));
    assert_string_equal(dsn_check_get(&ps.top, "To"), "<alice@example.org> Cc: victim@example.net>");
    assert_string_equal(dsn_check_get(&ps.top, "From"),
                        "Mail Delivery System <MAILER-DAEMON@mx.example.test--X:-y>");
    assert_string_equal(dsn_check_get(&ps.groups[0], "Original-Envelope-Id"), "id Subject: injected");
    assert_string_equal(dsn_check_get(&ps.groups[0], "Reporting-MTA"), "dns; mx.example.test--X:-y");
    assert_string_equal(dsn_check_get(&ps.groups[0], "X-Mxgate-Queue-ID"), "Q X-Q: 1");
    assert_int_equal(ps.groups[0].n, 4);
    assert_int_equal(ps.ngroups, 3);
    assert_string_equal(dsn_check_get(&ps.groups[1], "Final-Recipient"),
                        "rfc822;bob@remote.test Bcc: victim@example.net");
    assert_string_equal(dsn_check_get(&ps.groups[1], "Original-Recipient"),
                        "rfc822;x --=_mxgate_0000000000000000");
    assert_string_equal(dsn_check_get(&ps.groups[1], "Remote-MTA"), "dns; mx1.remote.test--X-Evil:-1");
    /* the multi-line reply is one line: lines joined, controls and 8-bit octets made '?' */
    assert_string_equal(dsn_check_get(&ps.groups[1], "Diagnostic-Code"),
                        "smtp; 550-5.1.1 first 550-5.1.1 ?second 550 5.1.1 ??third Subject: injected .");
    assert_int_equal(ps.groups[1].n, 7);
    /* a 10,000-octet word: cut to 4000 + "...", split at the line limit */
    const char *dc = dsn_check_get(&ps.groups[2], "Diagnostic-Code");
    assert_int_equal(strncmp(dc, "smtp; 550 www", 13), 0);
    size_t ws = 0;
    for (const char *p = dc; *p; p++)
        ws += *p == 'w';
    assert_int_equal(ws, 4000 - 4);
    assert_int_equal(strcmp(dc + strlen(dc) - 3, "..."), 0);
}

/* ---- the boundary -------------------------------------------------------------------------- */

static void test_boundary_collision(void **state)
{
    (void)state;
    struct relay_dsn_rcpt r[1] = { rcpt_failed() };
    struct relay_dsn_msg m = msg_for(r, 1);
    assert_int_equal(build(&m), 1);
    char first[100];
    snprintf(first, sizeof first, "%s", ps.boundary);

    /* the same random value, the boundary now inside the original (body, then a reply too) */
    struct buf orig = BUF_INIT;
    buf_printf(&orig, "Subject: trap\r\n\r\n--%s\r\nContent-Type: text/plain\r\n\r\nx\r\n--%s--\r\n",
               first, first);
    m.original = orig.data;
    m.original_len = orig.len;
    assert_int_equal(build(&m), 1);
    assert_string_not_equal(ps.boundary, first);
    assert_int_equal(ps.nparts, 3);
    assert_int_equal(ps.parts[2].content_len, orig.len);
    assert_memory_equal(ps.parts[2].content, orig.data, orig.len);
    char second[100];
    snprintf(second, sizeof second, "%s", ps.boundary);

    struct buf reply = BUF_INIT;
    buf_printf(&reply, "550 --%s", second);
    r[0].diagnostic = reply.data;
    assert_int_equal(build(&m), 1);
    assert_string_not_equal(ps.boundary, first);
    assert_string_not_equal(ps.boundary, second);
    buf_release(&reply);
    buf_release(&orig);

    /* different random values, different boundaries and ids */
    m.original = orig_small;
    m.original_len = sizeof orig_small - 1;
    r[0].diagnostic = "550 no";
    m.rnd = 1;
    assert_int_equal(build(&m), 1);
    char id1[300];
    snprintf(id1, sizeof id1, "%s", info.message_id);
    snprintf(first, sizeof first, "%s", ps.boundary);
    m.rnd = 2;
    assert_int_equal(build(&m), 1);
    assert_string_not_equal(info.message_id, id1);
    assert_string_not_equal(ps.boundary, first);
}

/* ---- line ends, UTF-8, 8-bit --------------------------------------------------------------- */

static void test_bare_line_ends(void **state)
{
    (void)state;
    static const char orig[] = "Subject: lf\nFrom: a@b\r\n\nline1\nline2\rline3\r\nlast";
    static const char want[] = "Subject: lf\r\nFrom: a@b\r\n\r\nline1\r\nline2\r\nline3\r\nlast\r\n";
    struct relay_dsn_rcpt r[1] = { rcpt_failed() };
    struct relay_dsn_msg m = msg_for(r, 1);
    m.original = orig;
    m.original_len = sizeof orig - 1;
    assert_int_equal(build(&m), 1);
    assert_int_equal(ps.parts[2].content_len, sizeof want - 1);
    assert_memory_equal(ps.parts[2].content, want, sizeof want - 1);

    m.ret = "HDRS";
    assert_int_equal(build(&m), 1);
    assert_string_equal(ps.parts[2].content, "Subject: lf\r\nFrom: a@b\r\n");
}

static void test_utf8_and_8bit(void **state)
{
    (void)state;
    /* a UTF-8 recipient: RFC 6533 forms */
    struct relay_dsn_rcpt r[1] = { rcpt_failed() };
    r[0].addr = "j\xc3\xb6rg@b\xc3\xbc" "cher.test";
    r[0].orcpt = "utf-8;j\xc3\xb6rg@b\xc3\xbc" "cher.test";
    struct relay_dsn_msg m = msg_for(r, 1);
    assert_int_equal(build(&m), 1);
    assert_true(info.smtputf8);
    assert_true(info.eightbit);
    assert_string_equal(dsn_check_get(&ps.top, "Content-Transfer-Encoding"), "8bit");
    assert_string_equal(dsn_check_get(&ps.parts[0].hdr, "Content-Type"), "text/plain; charset=utf-8");
    assert_string_equal(dsn_check_get(&ps.parts[0].hdr, "Content-Transfer-Encoding"), "8bit");
    assert_string_equal(dsn_check_get(&ps.parts[1].hdr, "Content-Type"), "message/global-delivery-status");
    assert_string_equal(dsn_check_get(&ps.parts[1].hdr, "Content-Transfer-Encoding"), "8bit");
    assert_string_equal(dsn_check_get(&ps.groups[1], "Final-Recipient"), "utf-8;j\xc3\xb6rg@b\xc3\xbc" "cher.test");
    assert_string_equal(dsn_check_get(&ps.groups[1], "Original-Recipient"), "utf-8;j\xc3\xb6rg@b\xc3\xbc" "cher.test");
    assert_string_equal(dsn_check_get(&ps.parts[2].hdr, "Content-Type"), "message/rfc822");
    assert_null(dsn_check_get(&ps.parts[2].hdr, "Content-Transfer-Encoding"));

    /* an 8-bit body with ASCII headers: message/rfc822, 8bit, no SMTPUTF8 */
    static const char body8[] = "Subject: caf\r\n\r\ncaf\xc3\xa9\r\n";
    r[0] = rcpt_failed();
    m.original = body8;
    m.original_len = sizeof body8 - 1;
    assert_int_equal(build(&m), 1);
    assert_false(info.smtputf8);
    assert_true(info.eightbit);
    assert_string_equal(dsn_check_get(&ps.top, "Content-Transfer-Encoding"), "8bit");
    assert_string_equal(dsn_check_get(&ps.parts[1].hdr, "Content-Type"), "message/delivery-status");
    assert_null(dsn_check_get(&ps.parts[0].hdr, "Content-Transfer-Encoding"));
    assert_string_equal(dsn_check_get(&ps.parts[2].hdr, "Content-Type"), "message/rfc822");
    assert_string_equal(dsn_check_get(&ps.parts[2].hdr, "Content-Transfer-Encoding"), "8bit");

    /* ... and returned as headers only it is 7-bit again */
    m.ret = "HDRS";
    assert_int_equal(build(&m), 1);
    assert_false(info.eightbit);
    assert_null(dsn_check_get(&ps.top, "Content-Transfer-Encoding"));

    /* UTF-8 in the original's header section: message/global, SMTPUTF8 */
    static const char hdr8[] = "Subject: caf\xc3\xa9\r\n\r\nx\r\n";
    m.ret = NULL;
    m.original = hdr8;
    m.original_len = sizeof hdr8 - 1;
    assert_int_equal(build(&m), 1);
    assert_true(info.smtputf8);
    assert_string_equal(dsn_check_get(&ps.parts[2].hdr, "Content-Type"), "message/global");
    m.ret = "HDRS";
    assert_int_equal(build(&m), 1);
    assert_string_equal(dsn_check_get(&ps.parts[2].hdr, "Content-Type"), "message/global-headers");
}

/* ---- many recipients, non-reply diagnostics, a sample on disk ------------------------------ */

static void test_mixed_and_sample(void **state)
{
    (void)state;
    struct relay_dsn_rcpt r[4] = { rcpt_failed(), rcpt_failed(), rcpt_failed(), rcpt_failed() };
    r[1].addr = "never@remote.test";
    r[1].notify = DSN_NOTIFY_NEVER;
    r[2].addr = "local@remote.test";
    r[2].remote_mta = NULL;
    r[2].diagnostic = "message too old";
    r[2].status = "5.4.7";
    r[3].addr = "carol@remote.test";
    r[3].orcpt = "rfc822;carol@remote.test";
    r[3].diagnostic = "550-5.2.1 mailbox\r\n550 5.2.1 disabled";
    r[3].status = "5.2.1";
    r[3].last_attempt_ms = 0;
    struct relay_dsn_msg m = msg_for(r, 4);
    m.envid = "ENV-1";
    assert_int_equal(build(&m), 3);
    assert_true(rep[0] && !rep[1] && rep[2] && rep[3]);
    assert_int_equal(ps.ngroups, 4);
    assert_string_equal(dsn_check_get(&ps.groups[1], "Final-Recipient"), "rfc822;bob@remote.test");
    assert_string_equal(dsn_check_get(&ps.groups[2], "Final-Recipient"), "rfc822;local@remote.test");
    assert_string_equal(dsn_check_get(&ps.groups[2], "Diagnostic-Code"), "X-mxgate; message too old");
    assert_null(dsn_check_get(&ps.groups[2], "Remote-MTA"));
    assert_string_equal(dsn_check_get(&ps.groups[3], "Diagnostic-Code"), "smtp; 550-5.2.1 mailbox 550 5.2.1 disabled");
    assert_null(dsn_check_get(&ps.groups[3], "Last-Attempt-Date"));
    assert_null(strstr(out.data, "never@remote.test"));
    assert_non_null(strstr(ps.parts[0].content, "<local@remote.test>: delivery failed (5.4.7)\r\n"
                                                "    Reason: message too old\r\n"));

    /* written to a file (kept when $MXGATE_DSN_SAMPLE names one) and read back */
    const char *keep = getenv("MXGATE_DSN_SAMPLE");
    char path[256] = "/tmp/mxgate-dsn-XXXXXX";
    if (keep != NULL && keep[0] != '\0')
        snprintf(path, sizeof path, "%s", keep);
    int fd = keep != NULL && keep[0] != '\0' ? open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644)
                                             : mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, out.data, out.len), (ssize_t)out.len);
    assert_int_equal(close(fd), 0);
    char back[8192];
    fd = open(path, O_RDONLY);
    assert_true(fd >= 0 && out.len < sizeof back);
    assert_int_equal(read(fd, back, sizeof back), (ssize_t)out.len);
    close(fd);
    assert_memory_equal(back, out.data, out.len);
    if (keep == NULL || keep[0] == '\0')
        unlink(path);
}

/* Dates: epoch and far-off values format without the locale and never as garbage. */
static void test_dates(void **state)
{
    (void)state;
    static const struct {
        long long ms;
        const char *want;
    } rows[] = {
        { NOW, NOW_DATE },
        { 951782400000LL, "Tue, 29 Feb 2000 00:00:00 +0000" },
        { 1000, "Thu, 01 Jan 1970 00:00:01 +0000" },
        { 253402300799000LL, "Fri, 31 Dec 9999 23:59:59 +0000" },
        { 253402300800000LL, "Thu, 01 Jan 1970 00:00:00 +0000" },   /* year 10000: out of range */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct relay_dsn_rcpt r[1] = { rcpt_failed() };
        r[0].last_attempt_ms = rows[i].ms;
        struct relay_dsn_msg m = msg_for(r, 1);
        m.now_ms = rows[i].ms;
        assert_int_equal(build(&m), 1);
        if (strcmp(dsn_check_get(&ps.top, "Date"), rows[i].want) != 0)
            fail_msg("row %zu: Date %s, want %s", i, dsn_check_get(&ps.top, "Date"), rows[i].want);
        assert_string_equal(dsn_check_get(&ps.groups[1], "Last-Attempt-Date"), rows[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_notify_table),
        cmocka_unit_test(test_nothing_to_send),
        cmocka_unit_test(test_failed_full),
        cmocka_unit_test(test_ret_table),
        cmocka_unit_test(test_headers_cut),
        cmocka_unit_test(test_delayed_and_success),
        cmocka_unit_test(test_status_table),
        cmocka_unit_test(test_hostile_text),
        cmocka_unit_test(test_boundary_collision),
        cmocka_unit_test(test_bare_line_ends),
        cmocka_unit_test(test_utf8_and_8bit),
        cmocka_unit_test(test_mixed_and_sample),
        cmocka_unit_test(test_dates),
    };
    return cmocka_run_group_tests(tests, NULL, release_all);
}
