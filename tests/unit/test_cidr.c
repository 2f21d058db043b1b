/*
 * test_cidr.c - unit tests of CIDR parsing and matching (lib/cidr.c), table-driven: accepted and
 * rejected notations with the network they yield, peers (IPv4, IPv6, IPv4-mapped IPv6) against
 * networks, and list parsing with its error text.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "cidr.h"

struct parse_case {
    const char *in;
    bool ok;
    int family;
    const char *net;        /* the stored address, as inet_ntop prints it */
    unsigned prefix;
};

static const struct parse_case parse_cases[] = {
    { "192.0.2.0/24", true, AF_INET, "192.0.2.0", 24 },
    { "192.0.2.77/24", true, AF_INET, "192.0.2.0", 24 },
    { "192.0.2.77", true, AF_INET, "192.0.2.77", 32 },
    { "10.255.255.255/8", true, AF_INET, "10.0.0.0", 8 },
    { "10.1.2.3/0", true, AF_INET, "0.0.0.0", 0 },
    { "10.1.2.3/32", true, AF_INET, "10.1.2.3", 32 },
    { "172.31.255.255/12", true, AF_INET, "172.16.0.0", 12 },
    { "192.0.2.255/25", true, AF_INET, "192.0.2.128", 25 },
    { "192.0.2.255/31", true, AF_INET, "192.0.2.254", 31 },
    { "2001:db8::/32", true, AF_INET6, "2001:db8::", 32 },
    { "2001:db8:abcd:1234::1/48", true, AF_INET6, "2001:db8:abcd::", 48 },
    { "2001:db8::ffff/127", true, AF_INET6, "2001:db8::fffe", 127 },
    { "::1", true, AF_INET6, "::1", 128 },
    { "::1/128", true, AF_INET6, "::1", 128 },
    { "[::1]/128", true, AF_INET6, "::1", 128 },
    { "[2001:db8::1]", true, AF_INET6, "2001:db8::1", 128 },
    { "::/0", true, AF_INET6, "::", 0 },
    { "fe80::1:2:3:4/65", true, AF_INET6, "fe80::", 65 },
    { "::ffff:192.0.2.9/120", true, AF_INET6, "::ffff:192.0.2.0", 120 },
    { "10.0.0.0/", false, 0, NULL, 0 },
    { "10.0.0.0/33", false, 0, NULL, 0 },
    { "10.0.0.0/-1", false, 0, NULL, 0 },
    { "10.0.0.0/+8", false, 0, NULL, 0 },
    { "10.0.0.0/8a", false, 0, NULL, 0 },
    { "10.0.0.0/8/8", false, 0, NULL, 0 },
    { "10.0.0.0/0008", false, 0, NULL, 0 },
    { "10.0.0.0 /8", false, 0, NULL, 0 },
    { "1.2.3", false, 0, NULL, 0 },
    { "1.2.3.4.5", false, 0, NULL, 0 },
    { "256.1.1.1", false, 0, NULL, 0 },
    { "::1/129", false, 0, NULL, 0 },
    { "2001:db8::/", false, 0, NULL, 0 },
    { "2001:db8:::/32", false, 0, NULL, 0 },
    { "[10.0.0.1]", false, 0, NULL, 0 },
    { "[::1/128", false, 0, NULL, 0 },
    { "[::1]x", false, 0, NULL, 0 },
    { "fe80::1%eth0", false, 0, NULL, 0 },
    { "localhost", false, 0, NULL, 0 },
    { "", false, 0, NULL, 0 },
    { "/8", false, 0, NULL, 0 },
    { " 10.0.0.0/8", false, 0, NULL, 0 },
    { "1111:2222:3333:4444:5555:6666:7777:8888:9999/64", false, 0, NULL, 0 },
};

static void test_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        const struct parse_case *c = &parse_cases[i];
        struct cidr n;
        memset(&n, 0xaa, sizeof n);
        bool ok = cidr_parse(c->in, &n);
        if (ok != c->ok)
            print_error("case %zu '%s': got %d\n", i, c->in, ok);
        assert_int_equal(ok, c->ok);
        if (!ok)
            continue;
        char text[INET6_ADDRSTRLEN];
        assert_int_equal(n.family, c->family);
        assert_non_null(inet_ntop(n.family, n.addr, text, sizeof text));
        assert_string_equal(text, c->net);
        assert_int_equal(n.prefix, c->prefix);
    }
}

/* Builds a socket address from text: IPv4 text gives AF_INET, anything else AF_INET6. */
static void make_sa(const char *ip, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(25);
        return;
    }
    assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(25);
}

struct match_case {
    const char *net;
    const char *peer;
    bool match;
};

static const struct match_case match_cases[] = {
    { "192.0.2.0/24", "192.0.2.1", true },
    { "192.0.2.0/24", "192.0.2.255", true },
    { "192.0.2.0/24", "192.0.3.0", false },
    { "192.0.2.0/24", "192.0.1.255", false },
    { "192.0.2.128/25", "192.0.2.127", false },
    { "192.0.2.128/25", "192.0.2.128", true },
    { "10.0.0.0/7", "11.255.0.1", true },
    { "10.0.0.0/7", "12.0.0.1", false },
    { "0.0.0.0/0", "203.0.113.9", true },
    { "0.0.0.0/0", "2001:db8::1", false },
    { "203.0.113.9", "203.0.113.9", true },
    { "203.0.113.9", "203.0.113.8", false },
    { "127.0.0.0/8", "::ffff:127.0.0.1", true },
    { "192.0.2.0/24", "::ffff:192.0.2.77", true },
    { "192.0.2.0/24", "::ffff:198.51.100.1", false },
    { "192.0.2.0/24", "::192.0.2.1", false },
    { "192.0.2.0/24", "2001:db8::c000:201", false },
    { "2001:db8::/32", "2001:db8:ffff::1", true },
    { "2001:db8::/32", "2001:db9::1", false },
    { "2001:db8::/33", "2001:db8:7fff::1", true },
    { "2001:db8::/33", "2001:db8:8000::1", false },
    { "::1/128", "::1", true },
    { "::1/128", "::2", false },
    { "::/0", "2001:db8::1", true },
    { "::/0", "192.0.2.1", false },
    { "::ffff:192.0.2.0/120", "::ffff:192.0.2.5", true },
    { "fe80::/10", "febf::1", true },
    { "fe80::/10", "fec0::1", false },
};

static void test_match(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof match_cases / sizeof match_cases[0]; i++) {
        const struct match_case *c = &match_cases[i];
        struct cidr n;
        struct sockaddr_storage ss;
        assert_true(cidr_parse(c->net, &n));
        make_sa(c->peer, &ss);
        bool m = cidr_match(&n, (struct sockaddr *)&ss);
        if (m != c->match)
            print_error("case %zu: %s vs %s: got %d\n", i, c->net, c->peer, m);
        assert_int_equal(m, c->match);
    }
    /* Neither IPv4 nor IPv6: never a match. */
    struct cidr any;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_family = AF_UNIX;
    assert_true(cidr_parse("0.0.0.0/0", &any));
    assert_false(cidr_match(&any, (struct sockaddr *)&ss));
}

static void test_list(void **state)
{
    (void)state;
    char *items[] = { "10.0.0.0/8", "2001:db8::/32", "192.0.2.7" };
    struct strlist l = { items, 3 };
    struct cidr_list cl;
    struct buf err = BUF_INIT;
    assert_true(cidr_list_parse(&l, &cl, &err));
    assert_int_equal(cl.n, 3);
    assert_string_equal(buf_cstr(&err), "");

    static const struct { const char *peer; bool match; } peers[] = {
        { "10.9.8.7", true }, { "::ffff:10.0.0.1", true }, { "2001:db8::25", true },
        { "192.0.2.7", true }, { "192.0.2.8", false }, { "2001:db9::", false }, { "::1", false },
    };
    for (size_t i = 0; i < sizeof peers / sizeof peers[0]; i++) {
        struct sockaddr_storage ss;
        make_sa(peers[i].peer, &ss);
        assert_int_equal(cidr_list_match(&cl, (struct sockaddr *)&ss), peers[i].match);
    }
    cidr_list_free(&cl);
    assert_null(cl.v);
    assert_int_equal(cl.n, 0);
    cidr_list_free(NULL);

    /* The empty list matches nothing. */
    struct strlist empty = { NULL, 0 };
    assert_true(cidr_list_parse(&empty, &cl, &err));
    struct sockaddr_storage ss;
    make_sa("127.0.0.1", &ss);
    assert_false(cidr_list_match(&cl, (struct sockaddr *)&ss));
    cidr_list_free(&cl);

    static const struct { const char *bad, *err; } bad[] = {
        { "10.0.0.0/33", "bad network '10.0.0.0/33'" },
        { "1.2.3", "bad network '1.2.3'" },
        { "\x1b[31m", "bad network '\\x1b[31m'" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *v[] = { "192.0.2.0/24", (char *)bad[i].bad, "10.0.0.0/8" };
        struct strlist bl = { v, 3 };
        buf_reset(&err);
        assert_false(cidr_list_parse(&bl, &cl, &err));
        assert_string_equal(buf_cstr(&err), bad[i].err);
        assert_null(cl.v);
        assert_int_equal(cl.n, 0);
    }
    buf_release(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
