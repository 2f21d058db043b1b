/*
 * test_edge_parse.c - unit tests of SMTP command-line parsing (edge/edge_parse.c): tables of
 * verbs, MAIL and RCPT arguments with the exact reply (code, enhanced code, text) for every
 * refusal and every parsed field for every acceptance, BDAT arguments, and xtext both ways.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "edge_parse.h"

/* An integer check that names the table row when it fails. */
#define CHECK_ROW(row, got, want)                                                           \
    do {                                                                                    \
        long long got_ = (long long)(got), want_ = (long long)(want);                       \
        if (got_ != want_)                                                                  \
            fail_msg("row %zu: %s is %lld, want %lld", (size_t)(row), #got, got_, want_);   \
    } while (0)

/* ---- verbs ------------------------------------------------------------------------------- */

static const struct verb_row {
    const char *line;
    enum smtp_verb verb;
    const char *args;
} verb_rows[] = {
    { "MAIL FROM:<x>", VERB_MAIL, "FROM:<x>" },
    { "mail from:<x>", VERB_MAIL, "from:<x>" },
    { "MaIl FROM:<x> SIZE=1", VERB_MAIL, "FROM:<x> SIZE=1" },
    { "MAIL  FROM:<x>", VERB_MAIL, " FROM:<x>" },
    { "RCPT TO:<a@b>", VERB_RCPT, "TO:<a@b>" },
    { "rcpt to:<a@b>", VERB_RCPT, "to:<a@b>" },
    { "EHLO client.example", VERB_EHLO, "client.example" },
    { "ehlo [192.0.2.1]", VERB_EHLO, "[192.0.2.1]" },
    { "HELO x", VERB_HELO, "x" },
    { "EHLO", VERB_EHLO, "" },
    { "DATA", VERB_DATA, "" },
    { "data", VERB_DATA, "" },
    { "DATA ", VERB_DATA, "" },
    { "BDAT 10 LAST", VERB_BDAT, "10 LAST" },
    { "bdat 0", VERB_BDAT, "0" },
    { "RSET", VERB_RSET, "" },
    { "NOOP", VERB_NOOP, "" },
    { "NOOP hello there", VERB_NOOP, "hello there" },
    { "QUIT", VERB_QUIT, "" },
    { "VRFY user", VERB_VRFY, "user" },
    { "EXPN list", VERB_EXPN, "list" },
    { "HELP", VERB_HELP, "" },
    { "HELP MAIL", VERB_HELP, "MAIL" },
    { "STARTTLS", VERB_STARTTLS, "" },
    { "starttls", VERB_STARTTLS, "" },
    { "AUTH PLAIN xxx", VERB_AUTH, "PLAIN xxx" },
    { "auth login", VERB_AUTH, "login" },
    /* not verbs */
    { "", VERB_UNKNOWN, "" },
    { "MAILFROM:<x>", VERB_UNKNOWN, "" },
    { "MAIL:FROM", VERB_UNKNOWN, "" },
    { " MAIL FROM:<x>", VERB_UNKNOWN, "MAIL FROM:<x>" },
    { "MAIL\tFROM:<x>", VERB_UNKNOWN, "" },
    { "QUIT\r", VERB_UNKNOWN, "" },
    { "XCLIENT NAME=x", VERB_UNKNOWN, "NAME=x" },
    { "GET / HTTP/1.1", VERB_UNKNOWN, "/ HTTP/1.1" },
    { "STARTTLSX", VERB_UNKNOWN, "" },
    { "DAT", VERB_UNKNOWN, "" },
    { "DATAX 1", VERB_UNKNOWN, "1" },
    { "AUTHPLAIN", VERB_UNKNOWN, "" },
};

static void test_verbs(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof verb_rows / sizeof verb_rows[0]; i++) {
        const char *args = NULL;
        CHECK_ROW(i, smtp_verb_parse(verb_rows[i].line, &args), verb_rows[i].verb);
        assert_string_equal(args, verb_rows[i].args);
        /* args points into the line */
        assert_true(args >= verb_rows[i].line && args <= verb_rows[i].line + strlen(verb_rows[i].line));
    }
}

static void test_verb_names(void **state)
{
    (void)state;
    static const struct { enum smtp_verb v; const char *name; } rows[] = {
        { VERB_UNKNOWN, "UNKNOWN" }, { VERB_EHLO, "EHLO" }, { VERB_HELO, "HELO" },
        { VERB_MAIL, "MAIL" }, { VERB_RCPT, "RCPT" }, { VERB_DATA, "DATA" }, { VERB_BDAT, "BDAT" },
        { VERB_RSET, "RSET" }, { VERB_NOOP, "NOOP" }, { VERB_QUIT, "QUIT" }, { VERB_VRFY, "VRFY" },
        { VERB_EXPN, "EXPN" }, { VERB_HELP, "HELP" }, { VERB_STARTTLS, "STARTTLS" },
        { VERB_AUTH, "AUTH" }, { (enum smtp_verb)99, "UNKNOWN" },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_string_equal(smtp_verb_name(rows[i].v), rows[i].name);
    /* every name parses back to its verb */
    for (int v = VERB_EHLO; v <= VERB_AUTH; v++) {
        const char *args;
        assert_int_equal(smtp_verb_parse(smtp_verb_name((enum smtp_verb)v), &args), v);
    }
}

/* ---- MAIL -------------------------------------------------------------------------------- */

static const struct smtp_ext_offer off_none = { false, false, false, false, false, false };
static const struct smtp_ext_offer off_all = { true, true, true, true, true, true };
static const struct smtp_ext_offer off_8bit = { true, true, false, false, false, false };
static const struct smtp_ext_offer off_bin = { false, false, true, false, false, false };
static const struct smtp_ext_offer off_no_utf8 = { true, true, true, false, true, true };
static const struct smtp_addr_limits small = { 10, 20, 30 };

#define SYN_MAIL 501, "5.5.4", "Syntax: MAIL FROM:<address>"
#define SYN_RCPT 501, "5.5.4", "Syntax: RCPT TO:<address>"
#define BAD_FROM 501, "5.1.7", "Bad sender address syntax"
#define BAD_TO 501, "5.1.3", "Bad recipient address syntax"
#define UNSUPP 555, "5.5.4", "Unsupported parameter"
#define DUP 501, "5.5.4", "Duplicate parameter"
#define PSYN 501, "5.5.4", "Syntax error in parameters"
#define NEED8 553, "5.6.7", "Non-ASCII address requires SMTPUTF8"

/* MAIL arguments that are accepted, with every parsed field. */
static const struct mail_ok_row {
    const char *args;
    const struct smtp_ext_offer *offer;
    const struct smtp_addr_limits *lim;
    const char *mailbox;
    bool null;
    long long size;
    enum smtp_body body;
    bool smtputf8;
    enum dsn_ret ret;
    const char *envid, *auth;
} mail_ok_rows[] = {
    { "FROM:<a@b>", &off_none, NULL, "a@b", false, -1, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, NULL },
    { "from:<a@b>", &off_none, NULL, "a@b", false, -1, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, NULL },
    { "From:<a@b>", NULL, NULL, "a@b", false, -1, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM: <a@b>", &off_none, NULL, "a@b", false, -1, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<>", &off_none, NULL, "", true, -1, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM: <>", &off_none, NULL, "", true, -1, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<@r.example:a@b>", &off_none, NULL, "a@b", false, -1, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<\"a b\"@x>", &off_none, NULL, "\"a b\"@x", false, -1, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<a@b> SIZE=1000", &off_all, NULL, "a@b", false, 1000, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<a@b> size=0", &off_all, NULL, "a@b", false, 0, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<a@b> SIZE=007", &off_all, NULL, "a@b", false, 7, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<a@b> SIZE=9223372036854775807", &off_all, NULL, "a@b", false, LLONG_MAX, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<a@b> BODY=8BITMIME", &off_all, NULL, "a@b", false, -1, BODY_8BITMIME, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<a@b> body=7bit", &off_8bit, NULL, "a@b", false, -1, BODY_7BIT, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<a@b> BODY=8bitmime", &off_8bit, NULL, "a@b", false, -1, BODY_8BITMIME, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<a@b> BODY=BINARYMIME", &off_all, NULL, "a@b", false, -1, BODY_BINARYMIME, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<a@b> BODY=BinaryMIME", &off_bin, NULL, "a@b", false, -1, BODY_BINARYMIME, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<a@b> SMTPUTF8", &off_all, NULL, "a@b", false, -1, BODY_UNSPEC, true, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<δ@παράδειγμα.test> smtputf8", &off_all, NULL, "δ@παράδειγμα.test", false, -1, BODY_UNSPEC, true, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<a@b> RET=FULL ENVID=QQ314159", &off_all, NULL, "a@b", false, -1, BODY_UNSPEC, false, DSN_RET_FULL, "QQ314159", NULL },
    { "FROM:<a@b> RET=hdrs ENVID=a+2Bb+3Dc", &off_all, NULL, "a@b", false, -1, BODY_UNSPEC, false, DSN_RET_HDRS, "a+b=c", NULL },
    { "FROM:<a@b> ENVID=+20", &off_all, NULL, "a@b", false, -1, BODY_UNSPEC, false, DSN_RET_UNSPEC, " ", NULL },
    { "FROM:<a@b> AUTH=<>", &off_all, NULL, "a@b", false, -1, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, "<>" },
    { "FROM:<a@b> AUTH=e+3Dmc2@example.com", &off_all, NULL, "a@b", false, -1, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, "e=mc2@example.com" },
    { "FROM:<a@b> SIZE=1 BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=x AUTH=<>", &off_all, NULL, "a@b", false, 1, BODY_8BITMIME, true, DSN_RET_FULL, "x", "<>" },
    { "FROM:<> AUTH=<> ENVID=y SIZE=2", &off_all, NULL, "", true, 2, BODY_UNSPEC, false, DSN_RET_UNSPEC, "y", "<>" },
    { "FROM:<a@b>  SIZE=1  ", &off_all, NULL, "a@b", false, 1, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<a@b> ", &off_none, NULL, "a@b", false, -1, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, NULL },
    { "FROM:<abcdefghij@x>", &off_none, &small, "abcdefghij@x", false, -1, BODY_UNSPEC, false, DSN_RET_UNSPEC, NULL, NULL },
};

/* MAIL arguments that are refused, with the exact reply. */
static const struct mail_err_row {
    const char *args;
    const struct smtp_ext_offer *offer;
    const struct smtp_addr_limits *lim;
    int code;
    const char *enhanced, *text;
} mail_err_rows[] = {
    /* the verb's argument */
    { "", &off_all, NULL, SYN_MAIL },
    { "FROM", &off_all, NULL, SYN_MAIL },
    { "FROM<a@b>", &off_all, NULL, SYN_MAIL },
    { "FROM :<a@b>", &off_all, NULL, SYN_MAIL },
    { " FROM:<a@b>", &off_all, NULL, SYN_MAIL },
    { "TO:<a@b>", &off_all, NULL, SYN_MAIL },
    { "FRM:<a@b>", &off_all, NULL, SYN_MAIL },
    /* the path */
    { "FROM:", &off_all, NULL, BAD_FROM },
    { "FROM:a@b", &off_all, NULL, BAD_FROM },
    { "FROM: a@b", &off_all, NULL, BAD_FROM },
    { "FROM:  <a@b>", &off_all, NULL, BAD_FROM },
    { "FROM:<a@b", &off_all, NULL, BAD_FROM },
    { "FROM:<a@b>SIZE=1", &off_all, NULL, BAD_FROM },
    { "FROM:<a@b>>", &off_all, NULL, BAD_FROM },
    { "FROM:<a..b@x>", &off_all, NULL, BAD_FROM },
    { "FROM:<a@b.>", &off_all, NULL, BAD_FROM },
    { "FROM:<a@[x:y]>", &off_all, NULL, BAD_FROM },
    { "FROM:<\xc3@x> SMTPUTF8", &off_all, NULL, BAD_FROM },
    { "FROM:<abcdefghijk@x>", &off_all, &small, 501, "5.1.7", "Sender address local part too long" },
    { "FROM:<a@abcdefghij.abcdefghij>", &off_all, &small, 501, "5.1.7", "Sender address domain too long" },
    { "FROM:<@abcdefghij:abcdefghij@abcdef>", &off_all, &small, 501, "5.1.7", "Sender address too long" },
    { "FROM:<δ@x>", &off_all, NULL, NEED8 },
    { "FROM:<a@δ.x> SIZE=1", &off_all, NULL, NEED8 },
    { "FROM:<δ@x>", &off_no_utf8, NULL, NEED8 },
    { "FROM:<δ@x> SMTPUTF8", &off_no_utf8, NULL, UNSUPP },
    /* parameters */
    { "FROM:<a@b> SIZE=1", &off_none, NULL, UNSUPP },
    { "FROM:<a@b> FOO=bar", &off_all, NULL, UNSUPP },
    { "FROM:<a@b> FOO", &off_all, NULL, UNSUPP },
    { "FROM:<a@b> X-FOO=1", &off_all, NULL, UNSUPP },
    { "FROM:<a@b> NOTIFY=NEVER", &off_all, NULL, UNSUPP },
    { "FROM:<a@b> ORCPT=rfc822;a@b", &off_all, NULL, UNSUPP },
    { "FROM:<a@b> SIZE=1 FOO=1", &off_all, NULL, UNSUPP },
    { "FROM:<a@b> SIZE=1 SIZE=2", &off_all, NULL, DUP },
    { "FROM:<a@b> SIZE=1 size=1", &off_all, NULL, DUP },
    { "FROM:<a@b> SMTPUTF8 SMTPUTF8", &off_all, NULL, DUP },
    { "FROM:<a@b> SIZE=x", &off_all, NULL, 501, "5.5.4", "Bad SIZE value" },
    { "FROM:<a@b> SIZE", &off_all, NULL, 501, "5.5.4", "Bad SIZE value" },
    { "FROM:<a@b> SIZE=-1", &off_all, NULL, 501, "5.5.4", "Bad SIZE value" },
    { "FROM:<a@b> SIZE=+1", &off_all, NULL, 501, "5.5.4", "Bad SIZE value" },
    { "FROM:<a@b> SIZE=1k", &off_all, NULL, 501, "5.5.4", "Bad SIZE value" },
    { "FROM:<a@b> SIZE=9223372036854775808", &off_all, NULL, 552, "5.3.4", "Message size exceeds fixed maximum message size" },
    { "FROM:<a@b> SIZE=99999999999999999999999", &off_all, NULL, 552, "5.3.4", "Message size exceeds fixed maximum message size" },
    { "FROM:<a@b> SIZE=", &off_all, NULL, PSYN },
    { "FROM:<a@b> =x", &off_all, NULL, PSYN },
    { "FROM:<a@b> -X=1", &off_all, NULL, PSYN },
    { "FROM:<a@b> S_IZE=1", &off_all, NULL, PSYN },
    { "FROM:<a@b> SIZE=1=2", &off_all, NULL, PSYN },
    { "FROM:<a@b> SIZE=1\t", &off_all, NULL, PSYN },
    { "FROM:<a@b> ENVID=\xc3\xa9", &off_all, NULL, PSYN },
    { "FROM:<a@b> BODY=8BITMIME", &off_none, NULL, UNSUPP },
    { "FROM:<a@b> BODY=BINARYMIME", &off_8bit, NULL, UNSUPP },
    { "FROM:<a@b> BODY=8BITMIME", &off_bin, NULL, UNSUPP },
    { "FROM:<a@b> BODY=9BIT", &off_all, NULL, 501, "5.5.4", "Bad BODY value" },
    { "FROM:<a@b> BODY", &off_all, NULL, 501, "5.5.4", "Bad BODY value" },
    { "FROM:<a@b> BODY=8BITMIME BODY=7BIT", &off_all, NULL, DUP },
    { "FROM:<a@b> SMTPUTF8=yes", &off_all, NULL, 501, "5.5.4", "SMTPUTF8 takes no value" },
    { "FROM:<a@b> SMTPUTF8", &off_none, NULL, UNSUPP },
    { "FROM:<a@b> RET=FULL", &off_none, NULL, UNSUPP },
    { "FROM:<a@b> ENVID=x", &off_8bit, NULL, UNSUPP },
    { "FROM:<a@b> RET=BOTH", &off_all, NULL, 501, "5.5.4", "Bad RET value" },
    { "FROM:<a@b> RET", &off_all, NULL, 501, "5.5.4", "Bad RET value" },
    { "FROM:<a@b> RET=FULL RET=HDRS", &off_all, NULL, DUP },
    { "FROM:<a@b> ENVID=", &off_all, NULL, PSYN },
    { "FROM:<a@b> ENVID", &off_all, NULL, 501, "5.5.4", "Bad ENVID value" },
    { "FROM:<a@b> ENVID=a+2", &off_all, NULL, 501, "5.5.4", "Bad ENVID value" },
    { "FROM:<a@b> ENVID=a+2b", &off_all, NULL, 501, "5.5.4", "Bad ENVID value" },
    { "FROM:<a@b> ENVID=a+0D+0A", &off_all, NULL, 501, "5.5.4", "Bad ENVID value" },
    { "FROM:<a@b> ENVID=a+00", &off_all, NULL, 501, "5.5.4", "Bad ENVID value" },
    { "FROM:<a@b> ENVID=+C3+A9", &off_all, NULL, 501, "5.5.4", "Bad ENVID value" },
    { "FROM:<a@b> ENVID=x ENVID=y", &off_all, NULL, DUP },
    { "FROM:<a@b> AUTH=<>", &off_none, NULL, UNSUPP },
    { "FROM:<a@b> AUTH=a+ZZ", &off_all, NULL, 501, "5.5.4", "Bad AUTH value" },
    { "FROM:<a@b> AUTH", &off_all, NULL, 501, "5.5.4", "Bad AUTH value" },
    { "FROM:<a@b> AUTH=a+09b", &off_all, NULL, 501, "5.5.4", "Bad AUTH value" },
};

static void test_mail_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof mail_ok_rows / sizeof mail_ok_rows[0]; i++) {
        const struct mail_ok_row *row = &mail_ok_rows[i];
        struct smtp_mail m;
        struct smtp_parse_err err;

        if (!smtp_mail_parse(row->args, row->lim, row->offer, &m, &err))
            fail_msg("row %zu: \"%s\" refused: %d %s %s", i, row->args, err.code, err.enhanced,
                     err.text);
        assert_string_equal(m.path.mailbox, row->mailbox);
        CHECK_ROW(i, m.path.null, row->null);
        CHECK_ROW(i, m.size, row->size);
        CHECK_ROW(i, m.body, row->body);
        CHECK_ROW(i, m.smtputf8, row->smtputf8);
        CHECK_ROW(i, m.ret, row->ret);
        if (row->envid != NULL)
            assert_string_equal(m.envid, row->envid);
        else
            assert_null(m.envid);
        if (row->auth != NULL)
            assert_string_equal(m.auth, row->auth);
        else
            assert_null(m.auth);
        smtp_mail_clear(&m);
        assert_null(m.path.mailbox);
        assert_null(m.envid);
        CHECK_ROW(i, m.size, -1);
        smtp_mail_clear(&m);
    }
    smtp_mail_clear(NULL);
}

static void test_mail_err(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof mail_err_rows / sizeof mail_err_rows[0]; i++) {
        const struct mail_err_row *row = &mail_err_rows[i];
        struct smtp_mail m;
        struct smtp_parse_err err;

        if (smtp_mail_parse(row->args, row->lim, row->offer, &m, &err))
            fail_msg("row %zu: \"%s\" accepted", i, row->args);
        CHECK_ROW(i, err.code, row->code);
        assert_string_equal(err.enhanced, row->enhanced);
        assert_string_equal(err.text, row->text);
        /* nothing is left allocated */
        assert_null(m.path.mailbox);
        assert_null(m.envid);
        assert_null(m.auth);
        CHECK_ROW(i, m.size, -1);
    }
}

/* ENVID is at most 100 characters of xtext (RFC 3461 §4.4). */
static void test_mail_envid_length(void **state)
{
    (void)state;
    for (size_t len = 99; len <= 101; len++) {
        struct buf args = BUF_INIT;
        struct smtp_mail m;
        struct smtp_parse_err err;

        buf_puts(&args, "FROM:<a@b> ENVID=");
        for (size_t k = 0; k < len; k++)
            buf_putc(&args, (char)('a' + k % 26));
        bool ok = smtp_mail_parse(args.data, NULL, &off_all, &m, &err);
        if (len <= 100) {
            assert_true(ok);
            assert_int_equal(strlen(m.envid), len);
            smtp_mail_clear(&m);
        } else {
            assert_false(ok);
            assert_int_equal(err.code, 501);
            assert_string_equal(err.enhanced, "5.5.4");
            assert_string_equal(err.text, "Bad ENVID value");
        }
        buf_release(&args);
    }
}

/* ---- RCPT -------------------------------------------------------------------------------- */

/* RCPT arguments that are accepted, with every parsed field. */
static const struct rcpt_ok_row {
    const char *args;
    const struct smtp_ext_offer *offer;
    const struct smtp_addr_limits *lim;
    bool utf8;
    const char *mailbox, *local, *domain;
    unsigned notify;
    const char *orcpt;
} rcpt_ok_rows[] = {
    { "TO:<a@b>", &off_none, NULL, false, "a@b", "a", "b", 0, NULL },
    { "to:<a@b>", NULL, NULL, false, "a@b", "a", "b", 0, NULL },
    { "To: <a@b>", &off_none, NULL, false, "a@b", "a", "b", 0, NULL },
    { "TO:<a@b> ", &off_none, NULL, false, "a@b", "a", "b", 0, NULL },
    { "TO:<u%ext@local.test>", &off_none, NULL, false, "u%ext@local.test", "u%ext", "local.test", 0, NULL },
    { "TO:<ext!u@local.test>", &off_none, NULL, false, "ext!u@local.test", "ext!u", "local.test", 0, NULL },
    { "TO:<@local.test:u@ext.test>", &off_none, NULL, false, "u@ext.test", "u", "ext.test", 0, NULL },
    { "TO:<\"u@ext.test\"@local.test>", &off_none, NULL, false, "\"u@ext.test\"@local.test", "u@ext.test", "local.test", 0, NULL },
    { "TO:<u@[192.0.2.1]>", &off_none, NULL, false, "u@[192.0.2.1]", "u", "[192.0.2.1]", 0, NULL },
    { "TO:<δ@παράδειγμα.test>", &off_none, NULL, true, "δ@παράδειγμα.test", "δ", "παράδειγμα.test", 0, NULL },
    { "TO:<a@b> NOTIFY=NEVER", &off_all, NULL, false, "a@b", "a", "b", DSN_NOTIFY_NEVER, NULL },
    { "TO:<a@b> NOTIFY=SUCCESS,FAILURE,DELAY", &off_all, NULL, false, "a@b", "a", "b",
      DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE | DSN_NOTIFY_DELAY, NULL },
    { "TO:<a@b> notify=delay,success", &off_all, NULL, false, "a@b", "a", "b",
      DSN_NOTIFY_SUCCESS | DSN_NOTIFY_DELAY, NULL },
    { "TO:<a@b> NOTIFY=Failure", &off_all, NULL, false, "a@b", "a", "b", DSN_NOTIFY_FAILURE, NULL },
    { "TO:<a@b> ORCPT=rfc822;a+40b", &off_all, NULL, false, "a@b", "a", "b", 0, "rfc822;a@b" },
    { "TO:<a@b> ORCPT=rfc822;a@b NOTIFY=FAILURE", &off_all, NULL, false, "a@b", "a", "b", DSN_NOTIFY_FAILURE, "rfc822;a@b" },
    { "TO:<a@b> orcpt=RFC822;x+2By+3B+20z@c", &off_all, NULL, false, "a@b", "a", "b", 0, "RFC822;x+y; z@c" },
    { "TO:<a@b> ORCPT=rfc822;a;b", &off_all, NULL, false, "a@b", "a", "b", 0, "rfc822;a;b" },
    { "TO:<abcdefghij@x>", &off_none, &small, false, "abcdefghij@x", "abcdefghij", "x", 0, NULL },
};

/* RCPT arguments that are refused, with the exact reply. */
static const struct rcpt_err_row {
    const char *args;
    const struct smtp_ext_offer *offer;
    const struct smtp_addr_limits *lim;
    bool utf8;
    int code;
    const char *enhanced, *text;
} rcpt_err_rows[] = {
    /* the verb's argument */
    { "", &off_all, NULL, false, SYN_RCPT },
    { "TO", &off_all, NULL, false, SYN_RCPT },
    { "TO <a@b>", &off_all, NULL, false, SYN_RCPT },
    { "FROM:<a@b>", &off_all, NULL, false, SYN_RCPT },
    { "T0:<a@b>", &off_all, NULL, false, SYN_RCPT },
    /* the path */
    { "TO:<>", &off_all, NULL, false, BAD_TO },
    { "TO:", &off_all, NULL, false, BAD_TO },
    { "TO:a@b", &off_all, NULL, false, BAD_TO },
    { "TO:  <a@b>", &off_all, NULL, false, BAD_TO },
    { "TO:<a@b>x", &off_all, NULL, false, BAD_TO },
    { "TO:<a@b", &off_all, NULL, false, BAD_TO },
    { "TO:<Postmaster>", &off_all, NULL, false, BAD_TO },
    { "TO:<a b@c>", &off_all, NULL, false, BAD_TO },
    { "TO:<a@[1.2.3.999]>", &off_all, NULL, false, BAD_TO },
    { "TO:<abcdefghijk@x>", &off_all, &small, false, 501, "5.1.3", "Recipient address local part too long" },
    { "TO:<a@abcdefghij.abcdefghij>", &off_all, &small, false, 501, "5.1.3", "Recipient address domain too long" },
    { "TO:<@abcdefghij:abcdefghij@abcdef>", &off_all, &small, false, 501, "5.1.3", "Recipient address too long" },
    { "TO:<δ@x>", &off_all, NULL, false, NEED8 },
    { "TO:<a@δ.x>", &off_all, NULL, false, NEED8 },
    { "TO:<\xc3@x>", &off_all, NULL, true, BAD_TO },
    /* parameters */
    { "TO:<a@b> NOTIFY=NEVER", &off_none, NULL, false, UNSUPP },
    { "TO:<a@b> ORCPT=rfc822;a@b", &off_8bit, NULL, false, UNSUPP },
    { "TO:<a@b> SIZE=1", &off_all, NULL, false, UNSUPP },
    { "TO:<a@b> BODY=8BITMIME", &off_all, NULL, false, UNSUPP },
    { "TO:<a@b> FOO", &off_all, NULL, false, UNSUPP },
    { "TO:<a@b> NOTIFY=NEVER,SUCCESS", &off_all, NULL, false, 501, "5.5.4", "Bad NOTIFY value" },
    { "TO:<a@b> NOTIFY=FAILURE,NEVER", &off_all, NULL, false, 501, "5.5.4", "Bad NOTIFY value" },
    { "TO:<a@b> NOTIFY=SUCCESS,SUCCESS", &off_all, NULL, false, 501, "5.5.4", "Bad NOTIFY value" },
    { "TO:<a@b> NOTIFY=SUCCESS,", &off_all, NULL, false, 501, "5.5.4", "Bad NOTIFY value" },
    { "TO:<a@b> NOTIFY=,SUCCESS", &off_all, NULL, false, 501, "5.5.4", "Bad NOTIFY value" },
    { "TO:<a@b> NOTIFY=ALWAYS", &off_all, NULL, false, 501, "5.5.4", "Bad NOTIFY value" },
    { "TO:<a@b> NOTIFY", &off_all, NULL, false, 501, "5.5.4", "Bad NOTIFY value" },
    { "TO:<a@b> NOTIFY=", &off_all, NULL, false, PSYN },
    { "TO:<a@b> NOTIFY=NEVER NOTIFY=NEVER", &off_all, NULL, false, DUP },
    { "TO:<a@b> ORCPT=a@b", &off_all, NULL, false, 501, "5.5.4", "Bad ORCPT value" },
    { "TO:<a@b> ORCPT=;a@b", &off_all, NULL, false, 501, "5.5.4", "Bad ORCPT value" },
    { "TO:<a@b> ORCPT=rfc822;", &off_all, NULL, false, 501, "5.5.4", "Bad ORCPT value" },
    { "TO:<a@b> ORCPT=rfc(822;a", &off_all, NULL, false, 501, "5.5.4", "Bad ORCPT value" },
    { "TO:<a@b> ORCPT=rfc822;a+4", &off_all, NULL, false, 501, "5.5.4", "Bad ORCPT value" },
    { "TO:<a@b> ORCPT=rfc822;a+0Ab", &off_all, NULL, false, 501, "5.5.4", "Bad ORCPT value" },
    { "TO:<a@b> ORCPT", &off_all, NULL, false, 501, "5.5.4", "Bad ORCPT value" },
    { "TO:<a@b> ORCPT=rfc822;a ORCPT=rfc822;b", &off_all, NULL, false, DUP },
    { "TO:<a@b> NOTIFY=NEVER ORCPT=rfc822;a+0D NOTIFY=NEVER", &off_all, NULL, false, 501, "5.5.4", "Bad ORCPT value" },

};

static void test_rcpt_ok(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rcpt_ok_rows / sizeof rcpt_ok_rows[0]; i++) {
        const struct rcpt_ok_row *row = &rcpt_ok_rows[i];
        struct smtp_rcpt r;
        struct smtp_parse_err err;

        if (!smtp_rcpt_parse(row->args, row->lim, row->offer, row->utf8, &r, &err))
            fail_msg("row %zu: \"%s\" refused: %d %s %s", i, row->args, err.code, err.enhanced,
                     err.text);
        assert_string_equal(r.path.mailbox, row->mailbox);
        assert_string_equal(r.path.local, row->local);
        assert_string_equal(r.path.domain, row->domain);
        CHECK_ROW(i, r.notify, row->notify);
        if (row->orcpt != NULL)
            assert_string_equal(r.orcpt, row->orcpt);
        else
            assert_null(r.orcpt);
        smtp_rcpt_clear(&r);
        assert_null(r.path.mailbox);
        assert_null(r.orcpt);
        smtp_rcpt_clear(&r);
    }
    smtp_rcpt_clear(NULL);
}

static void test_rcpt_err(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rcpt_err_rows / sizeof rcpt_err_rows[0]; i++) {
        const struct rcpt_err_row *row = &rcpt_err_rows[i];
        struct smtp_rcpt r;
        struct smtp_parse_err err;

        if (smtp_rcpt_parse(row->args, row->lim, row->offer, row->utf8, &r, &err))
            fail_msg("row %zu: \"%s\" accepted", i, row->args);
        CHECK_ROW(i, err.code, row->code);
        assert_string_equal(err.enhanced, row->enhanced);
        assert_string_equal(err.text, row->text);
        assert_null(r.path.mailbox);
        assert_null(r.orcpt);
        CHECK_ROW(i, r.notify, 0);
    }
}

/* ORCPT is at most 500 characters (RFC 3461 §4.2). */
static void test_rcpt_orcpt_length(void **state)
{
    (void)state;
    for (size_t len = 499; len <= 501; len++) {
        struct buf args = BUF_INIT;
        struct smtp_rcpt r;
        struct smtp_parse_err err;

        buf_puts(&args, "TO:<a@b> ORCPT=rfc822;");
        for (size_t k = strlen("rfc822;"); k < len; k++)
            buf_putc(&args, 'x');
        bool ok = smtp_rcpt_parse(args.data, NULL, &off_all, false, &r, &err);
        assert_int_equal(ok, len <= 500);
        if (ok) {
            assert_int_equal(strlen(r.orcpt), len);
            smtp_rcpt_clear(&r);
        } else {
            assert_string_equal(err.text, "Bad ORCPT value");
        }
        buf_release(&args);
    }
}

/* ---- BDAT -------------------------------------------------------------------------------- */

static const struct bdat_row {
    const char *args;
    bool ok;
    unsigned long long size;
    bool last;
} bdat_rows[] = {
    { "10", true, 10, false },
    { "10 LAST", true, 10, true },
    { "0 last", true, 0, true },
    { "0", true, 0, false },
    { "0010 Last", true, 10, true },
    { "18446744073709551615", true, 18446744073709551615ULL, false },
    { "18446744073709551615 LAST", true, 18446744073709551615ULL, true },
    { "18446744073709551616", false, 0, false },
    { "99999999999999999999999", false, 0, false },
    { "", false, 0, false },
    { "LAST", false, 0, false },
    { " 10", false, 0, false },
    { "10 ", false, 0, false },
    { "10  LAST", false, 0, false },
    { "10 LAST ", false, 0, false },
    { "10\tLAST", false, 0, false },
    { "-1", false, 0, false },
    { "+1", false, 0, false },
    { "1x", false, 0, false },
    { "0x10", false, 0, false },
    { "10 LASTX", false, 0, false },
    { "10 LAS", false, 0, false },
    { "10 FIRST", false, 0, false },
    { "10 LAST LAST", false, 0, false },
};

static void test_bdat(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bdat_rows / sizeof bdat_rows[0]; i++) {
        unsigned long long size = 777;
        bool last = true;
        bool ok = smtp_bdat_parse(bdat_rows[i].args, &size, &last);
        CHECK_ROW(i, ok, bdat_rows[i].ok);
        if (ok) {
            assert_true(size == bdat_rows[i].size);
            CHECK_ROW(i, last, bdat_rows[i].last);
        }
    }
}

/* ---- xtext ------------------------------------------------------------------------------- */

static const struct xdec_row {
    const char *in;
    const char *out;            /* NULL: malformed */
} xdec_rows[] = {
    { "", "" },
    { "abc", "abc" },
    { "a+2Bb", "a+b" },
    { "+3D", "=" },
    { "+41", "A" },
    { "+C3+A9", "\xc3\xa9" },
    { "+0D+0A", "\r\n" },
    { "!~<>;", "!~<>;" },
    { "a+2b", NULL },
    { "a+2", NULL },
    { "a+", NULL },
    { "+", NULL },
    { "a+G0", NULL },
    { "a=b", NULL },
    { "a b", NULL },
    { "+00", NULL },
    { "a\x7f", NULL },
    { "a\t", NULL },
    { "\xc3\xa9", NULL },
};

static void test_xtext_decode(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof xdec_rows / sizeof xdec_rows[0]; i++) {
        char *got = xtext_decode(xdec_rows[i].in, strlen(xdec_rows[i].in));
        if (xdec_rows[i].out == NULL) {
            if (got != NULL)
                fail_msg("row %zu: \"%s\" decoded, want NULL", i, xdec_rows[i].in);
        } else {
            assert_non_null(got);
            assert_string_equal(got, xdec_rows[i].out);
        }
        free(got);
    }
    /* n bounds the input: the bytes after it are not read */
    char *got = xtext_decode("ab+41", 2);
    assert_string_equal(got, "ab");
    free(got);
    assert_null(xtext_decode("ab+41", 4));
}

static const struct xenc_row {
    const char *in, *out;
} xenc_rows[] = {
    { "", "" },
    { "abc", "abc" },
    { "a+b=c", "a+2Bb+3Dc" },
    { "a b", "a+20b" },
    { "\r\n", "+0D+0A" },
    { "\xc3\xa9", "+C3+A9" },
    { "!~<>;\"", "!~<>;\"" },
    { "\x7f", "+7F" },
};

static void test_xtext_encode(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof xenc_rows / sizeof xenc_rows[0]; i++) {
        struct buf b = BUF_INIT;
        buf_puts(&b, "pre:");
        xtext_encode(&b, xenc_rows[i].in);
        assert_string_equal(buf_cstr(&b) + 4, xenc_rows[i].out);
        char *back = xtext_decode(b.data + 4, b.len - 4);
        assert_non_null(back);
        assert_string_equal(back, xenc_rows[i].in);
        free(back);
        buf_release(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verbs),
        cmocka_unit_test(test_verb_names),
        cmocka_unit_test(test_mail_ok),
        cmocka_unit_test(test_mail_err),
        cmocka_unit_test(test_mail_envid_length),
        cmocka_unit_test(test_rcpt_ok),
        cmocka_unit_test(test_rcpt_err),
        cmocka_unit_test(test_rcpt_orcpt_length),
        cmocka_unit_test(test_bdat),
        cmocka_unit_test(test_xtext_decode),
        cmocka_unit_test(test_xtext_encode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
