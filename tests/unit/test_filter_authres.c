/*
 * test_filter_authres.c - Authentication-Results (filters/filter_authres.c) by table: the header
 * we write and how it folds, which incoming values claim our authserv-id, and stripping them
 * from the header section only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "filter_authres.h"

static void test_header(void **state)
{
    (void)state;
    static const struct { const char *id, *results, *want; } cases[] = {
        { "mx.test", "", "Authentication-Results: mx.test; none\r\n" },
        { "mx.test", "spf=pass smtp.mailfrom=src.test",
          "Authentication-Results: mx.test; spf=pass smtp.mailfrom=src.test\r\n" },
        { "mx.test", "spf=pass smtp.mailfrom=src.test; dkim=none",
          "Authentication-Results: mx.test; spf=pass smtp.mailfrom=src.test; dkim=none\r\n" },
        { "mx.example.com", "spf=pass smtp.mailfrom=example.org; dkim=pass header.d=example.org header.s=s1 header.b=abcdefgh",
          "Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=example.org;\r\n"
          "\tdkim=pass header.d=example.org header.s=s1 header.b=abcdefgh\r\n" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf out = BUF_INIT;
        authres_header(cases[i].id, cases[i].results, &out);
        assert_string_equal(buf_cstr(&out), cases[i].want);
        buf_release(&out);
    }
}

static void test_claims(void **state)
{
    (void)state;
    static const struct { const char *value; bool claims; } cases[] = {
        { " mx.test; spf=pass", true },
        { " MX.Test; spf=pass", true },
        { " mx.test 1; spf=pass", true },
        { " (forged) mx.test; none", true },
        { "\r\n\tmx.test;\r\n\tdkim=pass", true },
        { " \"mx.test\"; none", true },
        { " mx.test.evil; spf=pass", false },
        { " other.test; spf=pass smtp.mailfrom=mx.test", false },
        { " mx.tes; none", false },
        { " ; none", false },
        { "", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(authres_claims(cases[i].value, strlen(cases[i].value), "mx.test"), cases[i].claims);
}

static void test_strip(void **state)
{
    (void)state;
    static const struct { const char *in, *out; size_t removed; } cases[] = {
        { "Subject: x\r\n\r\nbody\r\n", "Subject: x\r\n\r\nbody\r\n", 0 },
        { "Authentication-Results: mx.test; spf=pass\r\nSubject: x\r\n\r\nbody\r\n", "Subject: x\r\n\r\nbody\r\n", 1 },
        { "authentication-results: mx.test;\r\n\tdkim=pass\r\n header.d=x\r\nSubject: x\r\n\r\n",
          "Subject: x\r\n\r\n", 1 },
        { "A: 1\r\nAuthentication-Results: other.test; none\r\nAuthentication-Results: mx.test; none\r\nB: 2\r\n\r\n",
          "A: 1\r\nAuthentication-Results: other.test; none\r\nB: 2\r\n\r\n", 1 },
        /* In the body it is text, not a header field. */
        { "Subject: x\r\n\r\nAuthentication-Results: mx.test; none\r\n",
          "Subject: x\r\n\r\nAuthentication-Results: mx.test; none\r\n", 0 },
        { "Authentication-Results: mx.test; none\r\nAuthentication-Results: mx.test; none", "", 2 },
        { "Authentication-ResultsX: mx.test; none\r\n\r\n", "Authentication-ResultsX: mx.test; none\r\n\r\n", 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf m = BUF_INIT;
        buf_puts(&m, cases[i].in);
        assert_int_equal(authres_strip(&m, 0, "mx.test"), cases[i].removed);
        assert_string_equal(buf_cstr(&m), cases[i].out);
        buf_release(&m);
        /* The same after a prefix that is not searched (our own Received header). */
        static const char prefix[] = "Authentication-Results: mx.test; none\r\n";
        buf_puts(&m, prefix);
        buf_puts(&m, cases[i].in);
        assert_int_equal(authres_strip(&m, strlen(prefix), "mx.test"), cases[i].removed);
        assert_memory_equal(m.data, prefix, strlen(prefix));
        assert_string_equal(buf_cstr(&m) + strlen(prefix), cases[i].out);
        buf_release(&m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_strip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
