/*
 * test_smtp_reply.c - the pure pieces of the SMTP clients (relay/relay_smtp_reply.c, lib/smtp_reply.c), by
 * table: dot-stuffing and CRLF normalisation of a message fed in any two pieces (RFC 5321 §4.5.2),
 * and the reply parser (codes, separators, multi-line replies, line and reply bounds of
 * §4.5.3.1.5) with the enhanced status code and text it extracts (RFC 3463).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "relay_smtp.h"

static void test_stuff_table(void **state)
{
    (void)state;
    static const struct { const char *in, *want; } cases[] = {
        { "", ".\r\n" },
        { "a", "a\r\n.\r\n" },
        { "a\r\n", "a\r\n.\r\n" },
        { "a\nb\n", "a\r\nb\r\n.\r\n" },
        { "a\rb\r", "a\r\nb\r\n.\r\n" },
        { "a\r\r\nb", "a\r\n\r\nb\r\n.\r\n" },
        { "a\n\rb", "a\r\n\r\nb\r\n.\r\n" },
        { ".\r\n", "..\r\n.\r\n" },
        { ".a\r\n..b\r\nc.d\r\n", "..a\r\n...b\r\nc.d\r\n.\r\n" },
        { "x\n.\n", "x\r\n..\r\n.\r\n" },
        { "x\r.y", "x\r\n..y\r\n.\r\n" },
        { "\r\n\r\n", "\r\n\r\n.\r\n" },
        { "h: \xc3\xa9\r\n", "h: \xc3\xa9\r\n.\r\n" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = strlen(cases[i].in);
        /* every split into two pieces gives the same bytes as one piece */
        for (size_t cut = 0; cut <= n; cut++) {
            struct relay_stuffer st;
            struct buf out = BUF_INIT;
            relay_stuff_init(&st);
            relay_stuff(&st, cases[i].in, cut, &out);
            relay_stuff(&st, cases[i].in + cut, n - cut, &out);
            relay_stuff_end(&st, &out);
            if (strcmp(buf_cstr(&out), cases[i].want) != 0)
                fail_msg("case %zu cut %zu: got \"%s\"", i, cut, buf_cstr(&out));
            buf_release(&out);
        }
    }
}

static void test_reply_table(void **state)
{
    (void)state;
    static const struct {
        const char *lines[4];
        enum smtp_reply_feed want;     /* after the last line */
        int code;
        const char *status, *text, *why;
    } cases[] = {
        { { "250 ok" }, SMTP_REPLY_DONE, 250, "2.0.0", "ok", NULL },
        { { "250" }, SMTP_REPLY_DONE, 250, "2.0.0", "", NULL },
        { { "250-a", "250-b", "250 c" }, SMTP_REPLY_DONE, 250, "2.0.0", "a b c", NULL },
        { { "250-a" }, SMTP_REPLY_MORE, 250, "2.0.0", "a", NULL },
        { { "550 5.1.1 <x@y>: unknown" }, SMTP_REPLY_DONE, 550, "5.1.1", "<x@y>: unknown", NULL },
        { { "550-5.7.1 first", "550 5.7.1 second" }, SMTP_REPLY_DONE, 550, "5.7.1", "first second", NULL },
        { { "451 4.3.0" }, SMTP_REPLY_DONE, 451, "4.3.0", "", NULL },
        { { "421 4.4.2 bye" }, SMTP_REPLY_DONE, 421, "4.4.2", "bye", NULL },
        { { "550 4.1.1 class mismatch" }, SMTP_REPLY_DONE, 550, "5.0.0", "4.1.1 class mismatch", NULL },
        { { "550 5.1234.1 too long" }, SMTP_REPLY_DONE, 550, "5.0.0", "5.1234.1 too long", NULL },
        { { "250 2.1.0Ok" }, SMTP_REPLY_DONE, 250, "2.0.0", "2.1.0Ok", NULL },
        { { "250 a\tb \x01" }, SMTP_REPLY_DONE, 250, "2.0.0", "a\\x09b \\x01", NULL },
        { { "250-a", "251 b" }, SMTP_REPLY_BAD, 0, NULL, NULL, "reply code 251 after 250 in one reply" },
        { { "25" }, SMTP_REPLY_BAD, 0, NULL, NULL, "malformed reply code" },
        { { "2x0 ok" }, SMTP_REPLY_BAD, 0, NULL, NULL, "malformed reply code" },
        { { "150 ok" }, SMTP_REPLY_BAD, 0, NULL, NULL, "malformed reply code" },
        { { "260 ok" }, SMTP_REPLY_BAD, 0, NULL, NULL, "malformed reply code" },
        { { "250_ok" }, SMTP_REPLY_BAD, 0, NULL, NULL, "malformed reply separator" },
        { { "250 a\rb" }, SMTP_REPLY_BAD, 0, NULL, NULL, "NUL, CR or LF inside a reply line" },
        { { "250 a\nb" }, SMTP_REPLY_BAD, 0, NULL, NULL, "NUL, CR or LF inside a reply line" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct smtp_reply r = { 0 };
        struct buf why = BUF_INIT;
        enum smtp_reply_feed got = SMTP_REPLY_MORE;
        for (size_t l = 0; l < 4 && cases[i].lines[l] != NULL && got == SMTP_REPLY_MORE; l++)
            got = smtp_reply_feed(&r, cases[i].lines[l], strlen(cases[i].lines[l]), &why);
        if (got != cases[i].want)
            fail_msg("case %zu: got %d (%s)", i, got, buf_cstr(&why));
        if (got == SMTP_REPLY_BAD) {
            assert_string_equal(buf_cstr(&why), cases[i].why);
        } else {
            char st[16];
            struct buf text = BUF_INIT;
            assert_int_equal(r.code, cases[i].code);
            smtp_reply_status(&r, st, &text);
            assert_string_equal(st, cases[i].status);
            assert_string_equal(buf_cstr(&text), cases[i].text);
            buf_release(&text);
        }
        smtp_reply_release(&r);
        buf_release(&why);
    }

    /* bounds: 512 bytes with CRLF pass, 513 do not; at most 100 lines */
    char line[600];
    memset(line, 'x', sizeof line);
    memcpy(line, "250 ", 4);
    struct smtp_reply r = { 0 };
    struct buf why = BUF_INIT;
    assert_int_equal(smtp_reply_feed(&r, line, 510, &why), SMTP_REPLY_DONE);
    smtp_reply_reset(&r);
    assert_int_equal(smtp_reply_feed(&r, line, 511, &why), SMTP_REPLY_BAD);
    assert_string_equal(buf_cstr(&why), "reply line longer than 512 bytes");
    smtp_reply_reset(&r);
    buf_reset(&why);
    for (int l = 0; l < 100; l++)
        assert_int_equal(smtp_reply_feed(&r, "250-x", 5, &why), SMTP_REPLY_MORE);
    assert_int_equal(smtp_reply_feed(&r, "250 x", 5, &why), SMTP_REPLY_BAD);
    assert_string_equal(buf_cstr(&why), "reply longer than 100 lines or 16384 bytes");
    smtp_reply_release(&r);
    buf_release(&why);
}
int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stuff_table),
        cmocka_unit_test(test_reply_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
