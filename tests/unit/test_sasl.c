/*
 * test_sasl.c - strict base64 and SASL PLAIN splitting (lib/sasl.c), table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "sasl.h"

/* A string literal with its length, so embedded NULs count. */
#define LIT(s) s, sizeof s - 1

struct b64_case {
    const char *in;
    size_t in_len;
    bool ok;
    const char *out;    /* expected bytes when ok */
    size_t out_len;
};

static const struct b64_case b64_cases[] = {
    { LIT(""), true, LIT("") },
    { LIT("QQ=="), true, LIT("A") },
    { LIT("QUI="), true, LIT("AB") },
    { LIT("QUJD"), true, LIT("ABC") },
    { LIT("QUJDRA=="), true, LIT("ABCD") },
    { LIT("AGJvYgBwdw=="), true, LIT("\0bob\0pw") },
    { LIT("/+/+"), true, LIT("\xff\xef\xfe") },
    { LIT("AAAA"), true, LIT("\0\0\0") },
    /* non-zero bits under the padding are tolerated (RFC 4648 3.5 leaves it to the decoder) */
    { LIT("QR=="), true, LIT("A") },
    /* length not a multiple of 4, or padding left out */
    { LIT("Q"), false, LIT("") },
    { LIT("QQ"), false, LIT("") },
    { LIT("QQ="), false, LIT("") },
    { LIT("QUJ"), false, LIT("") },
    { LIT("QUJDR"), false, LIT("") },
    /* wrong padding */
    { LIT("Q==="), false, LIT("") },
    { LIT("===="), false, LIT("") },
    { LIT("=QQ="), false, LIT("") },
    { LIT("QQ=A"), false, LIT("") },
    { LIT("Q=Q="), false, LIT("") },
    { LIT("QQ==QQ=="), false, LIT("") },
    { LIT("QQ==QUJD"), false, LIT("") },
    /* characters outside the alphabet, whitespace included */
    { LIT("QUJ*"), false, LIT("") },
    { LIT("QU-D"), false, LIT("") },
    { LIT("QU_D"), false, LIT("") },
    { LIT("QUJ\x80"), false, LIT("") },
    { LIT("QU\0D"), false, LIT("") },
    { LIT("QUJD\r\n\r\n"), false, LIT("") },
    { LIT("QUJ DQ=="), false, LIT("") },
    { LIT(" QUJDRA="), false, LIT("") },
    { LIT("QUJD\tA=="), false, LIT("") },
};

/* Decoding appends to what out holds, and a failure leaves out exactly as it was. */
static void test_base64_decode_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof b64_cases / sizeof b64_cases[0]; i++) {
        const struct b64_case *c = &b64_cases[i];
        struct buf out = BUF_INIT;
        buf_puts(&out, "pre:");
        bool ok = base64_decode(c->in, c->in_len, &out);
        if (ok != c->ok)
            fail_msg("case %zu (\"%s\"): got %d, want %d", i, c->in, ok, c->ok);
        if (c->ok) {
            assert_int_equal(out.len, 4 + c->out_len);
            assert_memory_equal(out.data, "pre:", 4);
            assert_memory_equal(out.data + 4, c->out, c->out_len);
        } else {
            assert_string_equal(buf_cstr(&out), "pre:");
            assert_int_equal(out.len, 4);
        }
        assert_int_equal(out.data[out.len], '\0');
        buf_release(&out);
    }
}

static void test_base64_decode_empty_buf(void **state)
{
    (void)state;
    struct buf out = BUF_INIT;
    assert_true(base64_decode("", 0, &out));
    assert_int_equal(out.len, 0);
    assert_string_equal(buf_cstr(&out), "");
    assert_false(base64_decode("QQ=", 3, &out));
    assert_int_equal(out.len, 0);
    buf_release(&out);
}

static void test_base64_encode_table(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t in_len;
        const char *out;
    } cases[] = {
        { LIT(""), "" },
        { LIT("A"), "QQ==" },
        { LIT("AB"), "QUI=" },
        { LIT("ABC"), "QUJD" },
        { LIT("ABCD"), "QUJDRA==" },
        { LIT("\0bob\0pw"), "AGJvYgBwdw==" },
        { LIT("\xff\xef\xfe"), "/+/+" },
        { LIT("Username:"), "VXNlcm5hbWU6" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf out = BUF_INIT;
        buf_puts(&out, "334 ");
        base64_encode(cases[i].in, cases[i].in_len, &out);
        struct buf want = BUF_INIT;
        buf_printf(&want, "334 %s", cases[i].out);
        assert_string_equal(buf_cstr(&out), buf_cstr(&want));
        assert_int_equal(out.len, want.len);
        buf_release(&out);
        buf_release(&want);
    }
    struct buf empty = BUF_INIT;
    base64_encode("", 0, &empty);
    assert_non_null(empty.data);
    assert_string_equal(empty.data, "");
    buf_release(&empty);
}

/* Inputs longer than one internal slice, with padding in the last one, survive a round trip. */
static void test_base64_round_trip_large(void **state)
{
    (void)state;
    const size_t sizes[] = { 49151, 49152, 49153, 200000, 200001 };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        unsigned char *raw = malloc(n);
        assert_non_null(raw);
        for (size_t i = 0; i < n; i++)
            raw[i] = (unsigned char)(i * 131 + 7);
        struct buf enc = BUF_INIT, dec = BUF_INIT;
        base64_encode(raw, n, &enc);
        assert_int_equal(enc.len, (n + 2) / 3 * 4);
        assert_true(base64_decode(enc.data, enc.len, &dec));
        assert_int_equal(dec.len, n);
        assert_memory_equal(dec.data, raw, n);
        /* one bad character deep inside a later slice fails the whole input */
        enc.data[enc.len - 10] = '.';
        buf_reset(&dec);
        assert_false(base64_decode(enc.data, enc.len, &dec));
        assert_int_equal(dec.len, 0);
        buf_release(&enc);
        buf_release(&dec);
        free(raw);
    }
}

struct plain_case {
    const char *msg;
    size_t len;
    bool ok;
    const char *user;
    const char *pass;
};

static const struct plain_case plain_cases[] = {
    { LIT("\0bob\0secret"), true, "bob", "secret" },
    { LIT("bob\0bob\0secret"), true, "bob", "secret" },
    { LIT("\0bob@example.test\0p\xc3\xa4ss word"), true, "bob@example.test", "p\xc3\xa4ss word" },
    { LIT("\0b\0s"), true, "b", "s" },
    /* authzid names somebody else */
    { LIT("alice\0bob\0secret"), false, NULL, NULL },
    { LIT("Bob\0bob\0secret"), false, NULL, NULL },
    { LIT("bo\0bob\0secret"), false, NULL, NULL },
    { LIT("bobb\0bob\0secret"), false, NULL, NULL },
    /* NULs missing */
    { LIT(""), false, NULL, NULL },
    { LIT("bobsecret"), false, NULL, NULL },
    { LIT("bob\0secret"), false, NULL, NULL },
    { LIT("\0bobsecret"), false, NULL, NULL },
    /* a third NUL, i.e. a NUL inside the password */
    { LIT("\0bob\0sec\0ret"), false, NULL, NULL },
    { LIT("\0bob\0secret\0"), false, NULL, NULL },
    { LIT("\0\0\0"), false, NULL, NULL },
    /* empty fields */
    { LIT("\0bob\0"), false, NULL, NULL },
    { LIT("\0\0secret"), false, NULL, NULL },
    { LIT("bob\0\0secret"), false, NULL, NULL },
    { LIT("\0\0"), false, NULL, NULL },
};

static void test_plain_split_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof plain_cases / sizeof plain_cases[0]; i++) {
        const struct plain_case *c = &plain_cases[i];
        char *user = (char *)"untouched", *pass = (char *)"untouched";
        bool ok = sasl_plain_split(c->msg, c->len, &user, &pass);
        if (ok != c->ok)
            fail_msg("case %zu: got %d, want %d", i, ok, c->ok);
        if (c->ok) {
            assert_string_equal(user, c->user);
            assert_string_equal(pass, c->pass);
        } else {
            assert_null(user);
            assert_null(pass);
        }
        free(user);
        free(pass);
    }
}

/* Builds authzid NUL authcid NUL passwd with fields of the given lengths ('z', 'u', 'p'). */
static size_t make_plain(char *msg, size_t zlen, char zc, size_t ulen, size_t plen)
{
    size_t n = 0;
    memset(msg + n, zc, zlen);
    n += zlen;
    msg[n++] = '\0';
    memset(msg + n, 'u', ulen);
    n += ulen;
    msg[n++] = '\0';
    memset(msg + n, 'p', plen);
    n += plen;
    return n;
}

static void test_plain_split_lengths(void **state)
{
    (void)state;
    static const struct {
        size_t zlen;
        char zc;
        size_t ulen, plen;
        bool ok;
    } cases[] = {
        { 0, 'u', 255, 255, true },
        { 255, 'u', 255, 1, true },     /* authzid equal to a 255-octet authcid */
        { 0, 'u', 256, 1, false },
        { 0, 'u', 1, 256, false },
        { 256, 'u', 256, 1, false },
        { 256, 'z', 1, 1, false },
    };
    char msg[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = make_plain(msg, cases[i].zlen, cases[i].zc, cases[i].ulen, cases[i].plen);
        char *user = NULL, *pass = NULL;
        bool ok = sasl_plain_split(msg, n, &user, &pass);
        if (ok != cases[i].ok)
            fail_msg("case %zu: got %d, want %d", i, ok, cases[i].ok);
        if (ok) {
            assert_int_equal(strlen(user), cases[i].ulen);
            assert_int_equal(strlen(pass), cases[i].plen);
            assert_int_equal(strspn(user, "u"), cases[i].ulen);
            assert_int_equal(strspn(pass, "p"), cases[i].plen);
        } else {
            assert_null(user);
            assert_null(pass);
        }
        free(user);
        free(pass);
    }
}

/* What a client sends on the AUTH PLAIN line, decoded and split. */
static void test_plain_from_base64(void **state)
{
    (void)state;
    const char *line = "AGJvYkBleGFtcGxlLnRlc3QAc2VjcmV0";   /* \0bob@example.test\0secret */
    struct buf dec = BUF_INIT;
    assert_true(base64_decode(line, strlen(line), &dec));
    char *user, *pass;
    assert_true(sasl_plain_split(dec.data, dec.len, &user, &pass));
    assert_string_equal(user, "bob@example.test");
    assert_string_equal(pass, "secret");
    free(user);
    free(pass);
    buf_release(&dec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64_decode_table),
        cmocka_unit_test(test_base64_decode_empty_buf),
        cmocka_unit_test(test_base64_encode_table),
        cmocka_unit_test(test_base64_round_trip_large),
        cmocka_unit_test(test_plain_split_table),
        cmocka_unit_test(test_plain_split_lengths),
        cmocka_unit_test(test_plain_from_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
