/*
 * test_smtp_addr.c - unit tests of RFC 5321 path parsing (lib/smtp_addr.c): a table of valid
 * and invalid paths with every parsed field, the three length limits at their boundaries, and
 * tables for smtp_domain_valid and smtp_domain_equal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "smtp_addr.h"

#define LEN_AUTO ((size_t)-1)   /* n = strlen(in) */

/* An integer check that names the table row when it fails. */
#define CHECK_ROW(row, got, want)                                                           \
    do {                                                                                    \
        long long got_ = (long long)(got), want_ = (long long)(want);                       \
        if (got_ != want_)                                                                  \
            fail_msg("row %zu: %s is %lld, want %lld", (size_t)(row), #got, got_, want_);   \
    } while (0)

static const struct smtp_addr_limits small = { 10, 20, 30 };

enum { F_QUOTED = 1, F_LITERAL = 2, F_ROUTE = 4, F_UTF8 = 8, F_NULL = 16 };

static const struct path_row {
    const char *in;
    size_t n;                   /* LEN_AUTO: strlen(in) */
    bool allow_utf8, allow_null;
    const struct smtp_addr_limits *lim;  /* NULL: the RFC 5321 defaults */
    enum smtp_addr_err err;
    size_t consumed;            /* checked when err == SMTP_ADDR_OK; 0: all of in */
    const char *local, *domain, *mailbox;
    unsigned flags;
} path_rows[] = {
    /* plain */
    { "<user@example.com>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "user", "example.com", "user@example.com", 0 },
    { "<User.Name+tag@Example.COM>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "User.Name+tag", "Example.COM", "User.Name+tag@Example.COM", 0 },
    { "<a@b>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0, "a", "b", "a@b", 0 },
    { "<!#$%&'*+-/=?^_`{|}~@x.test>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "!#$%&'*+-/=?^_`{|}~", "x.test", "!#$%&'*+-/=?^_`{|}~@x.test", 0 },
    { "<a-b@x-y.z0>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0, "a-b", "x-y.z0", "a-b@x-y.z0", 0 },
    { "<a@1.2.3.4>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0, "a", "1.2.3.4", "a@1.2.3.4", 0 },
    { "<a@xn--bcher-kva.example>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "a", "xn--bcher-kva.example", "a@xn--bcher-kva.example", 0 },
    { "<a@b> SIZE=10", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 5, "a", "b", "a@b", 0 },
    { "<a@b>>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 5, "a", "b", "a@b", 0 },
    { "<a@b>xyz", 5, false, false, NULL, SMTP_ADDR_OK, 5, "a", "b", "a@b", 0 },
    /* the cases relay policy depends on */
    { "<u%ext@local.test>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "u%ext", "local.test", "u%ext@local.test", 0 },
    { "<ext!u@local.test>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "ext!u", "local.test", "ext!u@local.test", 0 },
    { "<@local.test:u@ext.test>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "u", "ext.test", "u@ext.test", F_ROUTE },
    { "<\"u@ext.test\"@local.test>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "u@ext.test", "local.test", "\"u@ext.test\"@local.test", F_QUOTED },
    { "<u@[192.0.2.1]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "u", "[192.0.2.1]", "u@[192.0.2.1]", F_LITERAL },
    /* source routes */
    { "<@a.example,@b.example:u@c.example>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "u", "c.example", "u@c.example", F_ROUTE },
    { "<@x:a@[192.0.2.1]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "a", "[192.0.2.1]", "a@[192.0.2.1]", F_ROUTE | F_LITERAL },
    /* address literals */
    { "<u@[IPv6:2001:db8::1]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "u", "[IPv6:2001:db8::1]", "u@[IPv6:2001:db8::1]", F_LITERAL },
    { "<u@[ipv6:::1]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "u", "[ipv6:::1]", "u@[ipv6:::1]", F_LITERAL },
    { "<u@[IPv6:::ffff:192.0.2.1]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "u", "[IPv6:::ffff:192.0.2.1]", "u@[IPv6:::ffff:192.0.2.1]", F_LITERAL },
    /* quoted local parts: unquoted in local, re-quoted in mailbox only when needed */
    { "<\"john\"@x.example>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "john", "x.example", "john@x.example", F_QUOTED },
    { "<\"a b\"@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0, "a b", "x", "\"a b\"@x", F_QUOTED },
    { "<\"a\\\"b\\\\c\"@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "a\"b\\c", "x", "\"a\\\"b\\\\c\"@x", F_QUOTED },
    { "<\"\"@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0, "", "x", "\"\"@x", F_QUOTED },
    { "<\"a..b\"@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0, "a..b", "x", "\"a..b\"@x", F_QUOTED },
    { "<\".a\"@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0, ".a", "x", "\".a\"@x", F_QUOTED },
    { "<\"\\a\"@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0, "a", "x", "a@x", F_QUOTED },
    { "<\"a>b\"@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0, "a>b", "x", "\"a>b\"@x", F_QUOTED },
    { "<\"a,b:c\"@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_OK, 0,
      "a,b:c", "x", "\"a,b:c\"@x", F_QUOTED },
    /* null path */
    { "<>", LEN_AUTO, false, true, NULL, SMTP_ADDR_OK, 2, "", "", "", F_NULL },
    { "<> SIZE=1", LEN_AUTO, false, true, NULL, SMTP_ADDR_OK, 2, "", "", "", F_NULL },
    { "<>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<@a:>", LEN_AUTO, false, true, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    /* SMTPUTF8 */
    { "<δοκιμή@παράδειγμα.δοκιμή>", LEN_AUTO, true, false, NULL, SMTP_ADDR_OK, 0,
      "δοκιμή", "παράδειγμα.δοκιμή", "δοκιμή@παράδειγμα.δοκιμή", F_UTF8 },
    { "<δ@x>", LEN_AUTO, true, false, NULL, SMTP_ADDR_OK, 0, "δ", "x", "δ@x", F_UTF8 },
    { "<\"δ x\"@x>", LEN_AUTO, true, false, NULL, SMTP_ADDR_OK, 0,
      "δ x", "x", "\"δ x\"@x", F_UTF8 | F_QUOTED },
    { "<a@b-\xf0\x9f\x98\x80.x>", LEN_AUTO, true, false, NULL, SMTP_ADDR_OK, 0,
      "a", "b-\xf0\x9f\x98\x80.x", "a@b-\xf0\x9f\x98\x80.x", F_UTF8 },
    { "<δ@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_NEEDS_UTF8, 0, NULL, NULL, NULL, 0 },
    { "<a@δ.x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_NEEDS_UTF8, 0, NULL, NULL, NULL, 0 },
    { "<\"δ\"@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_NEEDS_UTF8, 0, NULL, NULL, NULL, 0 },
    { "<@δ.x:a@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_NEEDS_UTF8, 0, NULL, NULL, NULL, 0 },
    /* malformed UTF-8 is a syntax error, SMTPUTF8 or not */
    { "<\xc3@x>", LEN_AUTO, true, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<\xc0\xaf@x>", LEN_AUTO, true, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<\xe0\x80\xaf@x>", LEN_AUTO, true, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<\xed\xa0\x80@x>", LEN_AUTO, true, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<\xf4\x90\x80\x80@x>", LEN_AUTO, true, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<\xf8\x88\x80\x80\x80@x>", LEN_AUTO, true, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@\xff.x>", LEN_AUTO, true, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<\"\x80\"@x>", LEN_AUTO, true, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<\xc3@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@-δ.x>", LEN_AUTO, true, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    /* syntax */
    { "", LEN_AUTO, false, true, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<", LEN_AUTO, false, true, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@b>", 4, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "user@x", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<user@x", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "< user@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<user@x >", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<user @x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a b@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<user>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<Postmaster>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<user@>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<@x:>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<@x,u@y>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<@x,y:u@z>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<@x:@y:u@z>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<@[192.0.2.1]:u@z>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<.a@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a.@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a..b@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a(c)@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a\x7f@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a\x00@x>", 6, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@x\x00>", 6, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@-x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@x->", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@x-.y>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@x..y>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@.x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@x.>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@x_y>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@x:25>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@x@y>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<<a@x>>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<\"a@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<\"a\x01\"@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<\"a\\\x01\"@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<\"a\tb\"@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<\"a\"b@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a\"b\"@x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@[192.0.2.256]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@[192.0.2.01]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@[192.0.2]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@[192.0.2.1.5]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@[IPv6:zz::1]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@[IPv6:1:2:3:4:5:6:7:8:9]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@[IPv6:192.0.2.1]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@[2001:db8::1]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@[x400:c=us]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@[]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@[1.2.3.4>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@[ 1.2.3.4]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@[1.2.3.4].x>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    { "<a@x.[1.2.3.4]>", LEN_AUTO, false, false, NULL, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
    /* limits (small: local 10, domain 20, path 30) */
    { "<abcdefghij@x>", LEN_AUTO, false, false, &small, SMTP_ADDR_OK, 0,
      "abcdefghij", "x", "abcdefghij@x", 0 },
    { "<abcdefghijk@x>", LEN_AUTO, false, false, &small, SMTP_ADDR_LOCAL_TOO_LONG, 0, NULL, NULL, NULL, 0 },
    { "<\"abcdefgh\"@x>", LEN_AUTO, false, false, &small, SMTP_ADDR_OK, 0,
      "abcdefgh", "x", "abcdefgh@x", F_QUOTED },
    { "<\"abcdefghi\"@x>", LEN_AUTO, false, false, &small, SMTP_ADDR_LOCAL_TOO_LONG, 0, NULL, NULL, NULL, 0 },
    { "<a@abcdefghi.abcdefghij>", LEN_AUTO, false, false, &small, SMTP_ADDR_OK, 0,
      "a", "abcdefghi.abcdefghij", "a@abcdefghi.abcdefghij", 0 },
    { "<a@abcdefghij.abcdefghij>", LEN_AUTO, false, false, &small, SMTP_ADDR_DOMAIN_TOO_LONG, 0, NULL, NULL, NULL, 0 },
    { "<a@[IPv6:2001:db8::10:2]>", LEN_AUTO, false, false, &small, SMTP_ADDR_DOMAIN_TOO_LONG, 0, NULL, NULL, NULL, 0 },
    { "<@abcdefghij:abcdefghij@abcde>", LEN_AUTO, false, false, &small, SMTP_ADDR_OK, 0,
      "abcdefghij", "abcde", "abcdefghij@abcde", F_ROUTE },
    { "<@abcdefghij:abcdefghij@abcdef>", LEN_AUTO, false, false, &small, SMTP_ADDR_PATH_TOO_LONG, 0, NULL, NULL, NULL, 0 },
    { "<abcdefghijk@abcdefghij.abcdefghij>", LEN_AUTO, false, false, &small, SMTP_ADDR_LOCAL_TOO_LONG, 0, NULL, NULL, NULL, 0 },
    { "<δδδδδδ@x>", LEN_AUTO, false, false, &small, SMTP_ADDR_NEEDS_UTF8, 0, NULL, NULL, NULL, 0 },
    { "<δδδδδδ@x>", LEN_AUTO, true, false, &small, SMTP_ADDR_LOCAL_TOO_LONG, 0, NULL, NULL, NULL, 0 },
    { "<a..b@abcdefghijabcdefghijabcdefghij>", LEN_AUTO, false, false, &small, SMTP_ADDR_SYNTAX, 0, NULL, NULL, NULL, 0 },
};

static void test_path_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof path_rows / sizeof path_rows[0]; i++) {
        const struct path_row *row = &path_rows[i];
        size_t n = row->n == LEN_AUTO ? strlen(row->in) : row->n;
        size_t consumed = 12345;
        struct smtp_path p;

        enum smtp_addr_err err = smtp_path_parse(row->in, n, row->lim, row->allow_utf8,
                                                 row->allow_null, &p, &consumed);
        CHECK_ROW(i, err, row->err);
        if (err != SMTP_ADDR_OK) {
            assert_null(p.local);
            assert_null(p.domain);
            assert_null(p.mailbox);
            continue;
        }
        CHECK_ROW(i, consumed, row->consumed ? row->consumed : n);
        assert_string_equal(p.local, row->local);
        assert_string_equal(p.domain, row->domain);
        assert_string_equal(p.mailbox, row->mailbox);
        CHECK_ROW(i, p.quoted, (row->flags & F_QUOTED) != 0);
        CHECK_ROW(i, p.literal, (row->flags & F_LITERAL) != 0);
        CHECK_ROW(i, p.had_route, (row->flags & F_ROUTE) != 0);
        CHECK_ROW(i, p.utf8, (row->flags & F_UTF8) != 0);
        CHECK_ROW(i, p.null, (row->flags & F_NULL) != 0);
        smtp_path_clear(&p);
        assert_null(p.mailbox);
        smtp_path_clear(&p);
    }
    smtp_path_clear(NULL);
}

/* "<" local "@" domain ">": local_len octets, then labels of the given lengths (0 ends). */
static char *make_path(size_t local_len, const size_t *labels)
{
    struct buf b = BUF_INIT;
    buf_putc(&b, '<');
    for (size_t i = 0; i < local_len; i++)
        buf_putc(&b, 'l');
    buf_putc(&b, '@');
    for (size_t l = 0; labels[l] != 0; l++) {
        if (l > 0)
            buf_putc(&b, '.');
        for (size_t i = 0; i < labels[l]; i++)
            buf_putc(&b, 'd');
    }
    buf_putc(&b, '>');
    return buf_steal(&b);
}

/* The RFC 5321 defaults (lim NULL, and the same given explicitly) at and past each boundary. */
static void test_default_limits(void **state)
{
    (void)state;
    static const struct smtp_addr_limits rfc = { 64, 255, 256 };
    static const struct {
        size_t local_len;
        size_t labels[6];
        size_t path_len;
        enum smtp_addr_err err;
    } rows[] = {
        { 64, { 10 }, 77, SMTP_ADDR_OK },
        { 65, { 10 }, 78, SMTP_ADDR_LOCAL_TOO_LONG },
        { 10, { 63 }, 76, SMTP_ADDR_OK },
        { 10, { 64 }, 77, SMTP_ADDR_SYNTAX },                       /* label over 63 */
        { 10, { 63, 64, 1 }, 143, SMTP_ADDR_SYNTAX },
        { 1, { 63, 63, 63, 61, 1 }, 259, SMTP_ADDR_PATH_TOO_LONG },  /* domain 255 */
        { 1, { 63, 63, 63, 62, 1 }, 260, SMTP_ADDR_DOMAIN_TOO_LONG },/* domain 256 */
        { 64, { 63, 63, 61 }, 256, SMTP_ADDR_OK },                  /* path exactly 256 */
        { 64, { 63, 63, 62 }, 257, SMTP_ADDR_PATH_TOO_LONG },
        { 65, { 63, 63, 63, 61, 1 }, 323, SMTP_ADDR_LOCAL_TOO_LONG },/* first limit reported */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char *in = make_path(rows[i].local_len, rows[i].labels);
        size_t n = strlen(in);
        CHECK_ROW(i, n, rows[i].path_len);
        for (int k = 0; k < 2; k++) {
            struct smtp_path p;
            size_t consumed = 0;
            CHECK_ROW(i, smtp_path_parse(in, n, k ? &rfc : NULL, false, false, &p, &consumed),
                      rows[i].err);
            if (rows[i].err == SMTP_ADDR_OK) {
                assert_int_equal(consumed, n);
                assert_int_equal(strlen(p.local), rows[i].local_len);
            }
            smtp_path_clear(&p);
        }
        free(in);
    }
}

static const struct domain_row {
    const char *d;
    size_t n;                   /* LEN_AUTO: strlen */
    bool utf8;
    bool valid;
} domain_rows[] = {
    { "example.com", LEN_AUTO, false, true },
    { "a", LEN_AUTO, false, true },
    { "1.2.3.4", LEN_AUTO, false, true },
    { "xn--bcher-kva.example", LEN_AUTO, false, true },
    { "a-b.c--d.e", LEN_AUTO, false, true },
    { "", LEN_AUTO, false, false },
    { "a.", LEN_AUTO, false, false },
    { ".a", LEN_AUTO, false, false },
    { "a..b", LEN_AUTO, false, false },
    { "-a", LEN_AUTO, false, false },
    { "a-", LEN_AUTO, false, false },
    { "a-.b", LEN_AUTO, false, false },
    { "a_b", LEN_AUTO, false, false },
    { "a b", LEN_AUTO, false, false },
    { "[192.0.2.1]", LEN_AUTO, false, false },
    { "a@b", LEN_AUTO, false, false },
    { "abc.def", 3, false, true },
    { "abc.def", 4, false, false },
    { "a\0b", 3, false, false },
    { "παράδειγμα.δοκιμή", LEN_AUTO, true, true },
    { "παράδειγμα.δοκιμή", LEN_AUTO, false, false },
    { "a\xff.b", LEN_AUTO, true, false },
    { "ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd", LEN_AUTO, false, true },
    { "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd", LEN_AUTO, false, false },
};

static void test_domain_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof domain_rows / sizeof domain_rows[0]; i++) {
        const struct domain_row *row = &domain_rows[i];
        size_t n = row->n == LEN_AUTO ? strlen(row->d) : row->n;
        CHECK_ROW(i, smtp_domain_valid(row->d, n, row->utf8), row->valid);
    }
    /* 255 octets in all is a Domain, 256 is not */
    struct buf b = BUF_INIT;
    for (int i = 0; i < 4; i++) {
        if (i > 0)
            buf_putc(&b, '.');
        for (int k = 0; k < 63; k++)
            buf_putc(&b, 'd');
    }
    assert_int_equal(b.len, 255);
    assert_true(smtp_domain_valid(b.data, b.len, false));
    buf_reset(&b);
    for (int i = 0; i < 4; i++) {
        if (i > 0)
            buf_putc(&b, '.');
        for (int k = 0; k < 63; k++)
            buf_putc(&b, 'd');
    }
    buf_puts(&b, "x");
    assert_int_equal(b.len, 256);
    assert_false(smtp_domain_valid(b.data, b.len, false));
    buf_release(&b);
}

static const struct equal_row {
    const char *a, *b;
    bool equal;
} equal_rows[] = {
    { "example.com", "example.com", true },
    { "Example.COM", "example.com", true },
    { "example.com.", "example.com", true },
    { "example.com", "EXAMPLE.COM.", true },
    { "example.com.", "example.com.", true },
    { "example.com..", "example.com", false },
    { "example.com", "example.co", false },
    { "a.b", "a.c", false },
    { "ex-ample.com", "ex_ample.com", false },
    { "ÄB.test", "äb.test", false },
    { "[192.0.2.1]", "[192.0.2.1]", true },
    { NULL, "a", false },
    { "a", NULL, false },
};

static void test_domain_equal(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof equal_rows / sizeof equal_rows[0]; i++) {
        CHECK_ROW(i, smtp_domain_equal(equal_rows[i].a, equal_rows[i].b), equal_rows[i].equal);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_table),
        cmocka_unit_test(test_default_limits),
        cmocka_unit_test(test_domain_valid),
        cmocka_unit_test(test_domain_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
