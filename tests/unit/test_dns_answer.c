/*
 * test_dns_answer.c - dns_answer.c on crafted DNS answers, and the pure helpers of dns.h.
 *
 * The answers are built byte by byte here, to cover what a test server cannot be made to send:
 * names in mixed case (dnsmasq lowers them), a target listed twice, a CNAME with nothing at its
 * end, bytes that are not text, and malformed packets. Everything against a real server is in
 * test_dns.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <ares.h>

#include "buf.h"
#include "dns.h"
#include "dns_answer.h"
#include "netaddr.h"

/* ---- building answers ------------------------------------------------------------------------ */

/* Appends a name in wire form; "" is the root. */
static void put_name(struct buf *b, const char *name)
{
    while (*name != '\0') {
        size_t len = strcspn(name, ".");
        buf_putc(b, (char)len);
        buf_append(b, name, len);
        name += len;
        if (*name == '.')
            name++;
    }
    buf_putc(b, 0);
}

static void put16(struct buf *b, unsigned v)
{
    buf_putc(b, (char)(v >> 8));
    buf_putc(b, (char)(v & 0xff));
}

static void put32(struct buf *b, unsigned long v)
{
    put16(b, (unsigned)(v >> 16));
    put16(b, (unsigned)(v & 0xffff));
}

/* A response header and question for qname/qtype; the answers are counted by put_rr(). */
static void answer_begin(struct buf *b, const char *qname, unsigned qtype)
{
    buf_reset(b);
    put16(b, 0x1234);
    put16(b, 0x8180);   /* QR, RD, RA, NOERROR */
    put16(b, 1);
    put16(b, 0);
    put16(b, 0);
    put16(b, 0);
    put_name(b, qname);
    put16(b, qtype);
    put16(b, 1);
}

/* An answer record for the question's name (a compression pointer to offset 12). */
static void put_rr(struct buf *b, unsigned type, unsigned long ttl, const struct buf *rdata)
{
    put16(b, 0xc00c);
    put16(b, type);
    put16(b, 1);
    put32(b, ttl);
    put16(b, (unsigned)rdata->len);
    buf_append(b, rdata->data, rdata->len);
    unsigned an = ((unsigned char)b->data[6] << 8 | (unsigned char)b->data[7]) + 1;
    b->data[6] = (char)(an >> 8);
    b->data[7] = (char)(an & 0xff);
}

static void put_mx(struct buf *b, unsigned pref, const char *host)
{
    struct buf rd = BUF_INIT;
    put16(&rd, pref);
    put_name(&rd, host);
    put_rr(b, 15, 300, &rd);
    buf_release(&rd);
}

static void put_name_rr(struct buf *b, unsigned type, const char *name)
{
    struct buf rd = BUF_INIT;
    put_name(&rd, name);
    put_rr(b, type, 300, &rd);
    buf_release(&rd);
}

/* A TXT record of character-strings given as (length, bytes) pairs ending with a NULL. */
static void put_txt(struct buf *b, ...)
{
    struct buf rd = BUF_INIT;
    va_list ap;
    va_start(ap, b);
    for (const char *s; (s = va_arg(ap, const char *)) != NULL;) {
        size_t len = va_arg(ap, size_t);
        buf_putc(&rd, (char)len);
        buf_append(&rd, s, len);
    }
    va_end(ap);
    put_rr(b, 16, 300, &rd);
    buf_release(&rd);
}

static void put_a(struct buf *b, const char *ip, unsigned long ttl)
{
    struct in_addr a;
    assert_int_equal(inet_pton(AF_INET, ip, &a), 1);
    struct buf rd = BUF_INIT;
    buf_append(&rd, &a, sizeof a);
    put_rr(b, 1, ttl, &rd);
    buf_release(&rd);
}

#define ABUF(b) ((const unsigned char *)(b).data), ((int)(b).len)

/* ---- tests ----------------------------------------------------------------------------------- */

/* "PREF HOST" lines of an MX result, in the order given. */
static void mx_text(const struct dns_result *r, struct buf *out)
{
    buf_reset(out);
    for (size_t i = 0; i < r->n; i++)
        buf_printf(out, "%s%u %s", i ? "\n" : "", r->mx[i].pref, r->mx[i].host);
}

static void test_mx_answers(void **state)
{
    (void)state;
    struct buf b = BUF_INIT, text = BUF_INIT;
    struct dns_result r;
    memset(&r, 0, sizeof r);

    /* Mixed case and a final dot in names, a host listed twice (case-insensitively). */
    answer_begin(&b, "Example.ORG", 15);
    put_mx(&b, 20, "MX1.Example.COM");
    put_mx(&b, 30, "b.example.com");
    put_mx(&b, 10, "mx1.EXAMPLE.com");
    dns_answer_mx(&r, "example.org", ARES_SUCCESS, ABUF(b));
    assert_int_equal(r.status, DNS_OK);
    assert_false(r.implicit);
    mx_text(&r, &text);
    assert_string_equal(buf_cstr(&text), "10 mx1.example.com\n30 b.example.com");
    dns_result_clear(&r);

    /* Only a CNAME, no MX at its end: implicit MX. */
    answer_begin(&b, "alias.example", 15);
    put_name_rr(&b, 5, "target.example");
    dns_answer_mx(&r, "alias.example", ARES_SUCCESS, ABUF(b));
    assert_int_equal(r.status, DNS_OK);
    assert_true(r.implicit);
    mx_text(&r, &text);
    assert_string_equal(buf_cstr(&text), "0 alias.example");
    dns_result_clear(&r);

    /* NODATA reported by c-ares: implicit MX. */
    dns_answer_mx(&r, "nomx.example", ARES_ENODATA, NULL, 0);
    assert_int_equal(r.status, DNS_OK);
    assert_true(r.implicit);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.mx[0].host, "nomx.example");
    assert_int_equal(r.mx[0].pref, 0);
    dns_result_clear(&r);

    /* RFC 7505 null MX, alone; and next to a real exchanger, which wins. */
    answer_begin(&b, "null.example", 15);
    put_mx(&b, 0, "");
    dns_answer_mx(&r, "null.example", ARES_SUCCESS, ABUF(b));
    assert_int_equal(r.status, DNS_NULLMX);
    assert_int_equal(r.n, 0);
    assert_null(r.mx);
    dns_result_clear(&r);
    put_mx(&b, 5, "real.example");
    dns_answer_mx(&r, "null.example", ARES_SUCCESS, ABUF(b));
    assert_int_equal(r.status, DNS_OK);
    mx_text(&r, &text);
    assert_string_equal(buf_cstr(&text), "5 real.example");
    dns_result_clear(&r);

    /* A packet cut inside its MX record. */
    answer_begin(&b, "cut.example", 15);
    put_mx(&b, 10, "mx.cut.example");
    b.len -= 4;
    dns_answer_mx(&r, "cut.example", ARES_SUCCESS, ABUF(b));
    assert_int_equal(r.status, DNS_TEMPFAIL);
    assert_string_equal(r.error, "malformed DNS answer");
    dns_result_clear(&r);

    /* Query failures. */
    static const struct {
        int status;
        enum dns_status want;
        bool nx;
    } fails[] = {
        { ARES_ENOTFOUND, DNS_NOTFOUND, true },
        { ARES_ETIMEOUT, DNS_TEMPFAIL, false },
        { ARES_ESERVFAIL, DNS_TEMPFAIL, false },
        { ARES_EREFUSED, DNS_TEMPFAIL, false },
        { ARES_ECONNREFUSED, DNS_TEMPFAIL, false },
        { ARES_EFORMERR, DNS_TEMPFAIL, false },
        { ARES_EBADRESP, DNS_TEMPFAIL, false },
    };
    for (size_t i = 0; i < sizeof fails / sizeof fails[0]; i++) {
        dns_answer_mx(&r, "x.example", fails[i].status, NULL, 0);
        assert_int_equal(r.status, fails[i].want);
        assert_int_equal(r.nxdomain, fails[i].nx);
        assert_string_equal(r.error, ares_strerror(fails[i].status));
        assert_int_equal(r.n, 0);
        dns_result_clear(&r);
    }
    buf_release(&b);
    buf_release(&text);
}

static void test_txt_answers(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    struct dns_result r;
    memset(&r, 0, sizeof r);
    answer_begin(&b, "t.example", 16);
    put_txt(&b, "v=spf1 ", (size_t)7, "-all", (size_t)4, (char *)NULL);
    put_txt(&b, "a\0b", (size_t)3, (char *)NULL);     /* not text: kept as bytes */
    put_txt(&b, "", (size_t)0, (char *)NULL);
    dns_answer_txt(&r, ARES_SUCCESS, ABUF(b));
    assert_int_equal(r.status, DNS_OK);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.txt[0].len, 11);
    assert_string_equal(r.txt[0].data, "v=spf1 -all");
    assert_int_equal(r.txt[1].len, 3);
    assert_memory_equal(r.txt[1].data, "a\0b", 4);
    assert_int_equal(r.txt[2].len, 0);
    assert_string_equal(r.txt[2].data, "");
    dns_result_clear(&r);

    answer_begin(&b, "t.example", 16);
    put_name_rr(&b, 5, "other.example");
    dns_answer_txt(&r, ARES_SUCCESS, ABUF(b));
    assert_int_equal(r.status, DNS_NOTFOUND);
    assert_false(r.nxdomain);
    dns_result_clear(&r);

    dns_answer_txt(&r, ARES_ENOTFOUND, NULL, 0);
    assert_int_equal(r.status, DNS_NOTFOUND);
    assert_true(r.nxdomain);
    dns_result_clear(&r);
    buf_release(&b);
}

static void test_ptr_and_a_answers(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    struct dns_result r;
    memset(&r, 0, sizeof r);
    answer_begin(&b, "5.2.0.192.in-addr.arpa", 12);
    put_name_rr(&b, 12, "Host.EXAMPLE");
    put_name_rr(&b, 12, "other.example");
    put_name_rr(&b, 12, "host.example");
    dns_answer_ptr(&r, ARES_SUCCESS, ABUF(b));
    assert_int_equal(r.status, DNS_OK);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.names[0], "host.example");
    assert_string_equal(r.names[1], "other.example");
    dns_result_clear(&r);

    answer_begin(&b, "2.0.0.127.zen.example", 1);
    put_a(&b, "127.0.0.2", 300);
    put_a(&b, "127.0.0.4", 60);
    dns_answer_a(&r, ARES_SUCCESS, ABUF(b));
    assert_int_equal(r.status, DNS_OK);
    assert_int_equal(r.n, 2);
    assert_null(r.addrs);
    assert_int_equal(r.ttl, 60);
    char ip[INET_ADDRSTRLEN];
    assert_string_equal(inet_ntop(AF_INET, &r.a[0], ip, sizeof ip), "127.0.0.2");
    assert_string_equal(inet_ntop(AF_INET, &r.a[1], ip, sizeof ip), "127.0.0.4");
    dns_result_clear(&r);

    answer_begin(&b, "alias.example", 1);
    put_name_rr(&b, 5, "target.example");
    dns_answer_a(&r, ARES_SUCCESS, ABUF(b));
    assert_int_equal(r.status, DNS_NOTFOUND);
    assert_false(r.nxdomain);
    dns_result_clear(&r);
    answer_begin(&b, "5.2.0.192.in-addr.arpa", 12);
    put_name_rr(&b, 5, "5.0-63.2.0.192.in-addr.arpa");
    dns_answer_ptr(&r, ARES_SUCCESS, ABUF(b));
    assert_int_equal(r.status, DNS_NOTFOUND);
    assert_false(r.nxdomain);
    dns_result_clear(&r);

    dns_answer_a(&r, ARES_ENODATA, NULL, 0);
    assert_int_equal(r.status, DNS_NOTFOUND);
    assert_false(r.nxdomain);
    dns_result_clear(&r);
    buf_release(&b);
}

/* A part of a dns_addr() result: OK with one address, or a failure. */
static struct dns_result *part(const char *ip, enum dns_status st, bool nx, const char *error)
{
    struct dns_result *p = calloc(1, sizeof *p);
    p->status = st;
    p->nxdomain = nx;
    p->error = error;
    if (ip != NULL) {
        p->addrs = calloc(1, sizeof *p->addrs);
        if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)p->addrs)->sin_addr) == 1)
            p->addrs->ss_family = AF_INET;
        else if (inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)p->addrs)->sin6_addr) == 1)
            p->addrs->ss_family = AF_INET6;
        p->n = 1;
        p->ttl = p->addrs->ss_family == AF_INET ? 40 : 50;
    }
    return p;
}

static void test_merge_addrs(void **state)
{
    (void)state;
    static const struct {
        const char *v6, *v4;    /* an address, "" for NOTFOUND, "nx" for NXDOMAIN, "tf" for
                                 * TEMPFAIL, NULL for no answer yet */
        enum dns_status want;
        bool nx;
        const char *text;       /* the addresses, or the error */
        unsigned ttl;           /* part() gives IPv4 a TTL of 40, IPv6 50 */
    } cases[] = {
        { "2001:db8::1", "192.0.2.1", DNS_OK, false, "[2001:db8::1]:25 192.0.2.1:25", 40 },
        { "2001:db8::1", "tf", DNS_OK, false, "[2001:db8::1]:25", 50 },
        { NULL, "192.0.2.1", DNS_OK, false, "192.0.2.1:25", 40 },
        { "", "192.0.2.1", DNS_OK, false, "192.0.2.1:25", 40 },
        { NULL, "", DNS_TEMPFAIL, false, "DNS lookup timed out", 0 },
        { "tf", "", DNS_TEMPFAIL, false, "tempfail", 0 },
        { "", "", DNS_NOTFOUND, false, "no data", 0 },
        { "nx", "nx", DNS_NOTFOUND, true, "no such domain", 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *spec[2] = { cases[i].v6, cases[i].v4 };
        struct dns_result *parts[2];
        for (int k = 0; k < 2; k++) {
            const char *s = spec[k];
            if (s == NULL)
                parts[k] = NULL;
            else if (strcmp(s, "") == 0)
                parts[k] = part(NULL, DNS_NOTFOUND, false, "no data");
            else if (strcmp(s, "nx") == 0)
                parts[k] = part(NULL, DNS_NOTFOUND, true, "no such domain");
            else if (strcmp(s, "tf") == 0)
                parts[k] = part(NULL, DNS_TEMPFAIL, false, "tempfail");
            else
                parts[k] = part(s, DNS_OK, false, NULL);
        }
        struct dns_result r;
        memset(&r, 0, sizeof r);
        /* The v4 part first: the merge puts IPv6 first whatever the order of the parts. */
        const struct dns_result *const order[2] = { parts[1], parts[0] };
        dns_answer_merge_addrs(&r, order, 2, 25);
        struct buf text = BUF_INIT;
        for (size_t j = 0; j < r.n; j++) {
            char s[NETADDR_STRLEN];
            netaddr_string((const struct sockaddr *)&r.addrs[j], s, sizeof s);
            buf_printf(&text, "%s%s", j ? " " : "", s);
        }
        const char *got = r.status == DNS_OK ? buf_cstr(&text) : r.error;
        if (r.status != cases[i].want || r.nxdomain != cases[i].nx || strcmp(got, cases[i].text)
            || r.ttl != cases[i].ttl)
            fail_msg("case %zu: status %d nx %d '%s' ttl %u", i, r.status, r.nxdomain, got, r.ttl);
        buf_release(&text);
        dns_result_clear(&r);
        for (int k = 0; k < 2; k++) {
            if (parts[k] != NULL)
                dns_result_clear(parts[k]);
            free(parts[k]);
        }
    }
}

static void test_name_normalize(void **state)
{
    (void)state;
    char l63[64], l64[65], n253[254], n254[255];
    memset(l63, 'a', 63);
    l63[63] = '\0';
    memset(l64, 'a', 64);
    l64[64] = '\0';
    /* 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 */
    snprintf(n253, sizeof n253, "%s.%s.%s.%.61s", l63, l63, l63, l63);
    snprintf(n254, sizeof n254, "%s.%s.%s.%.62s", l63, l63, l63, l63);
    static const char *bad[] = { "", ".", "a..b", ".a", "a b", "a\\.b", "caf\xc3\xa9.example",
                                 "tab\t.example", "a.b..", "\x7f" };
    const struct {
        const char *in, *want;
    } good[] = {
        { "Example.COM.", "example.com" },
        { "example.com", "example.com" },
        { "_dmarc.Example.org", "_dmarc.example.org" },
        { "2.0.0.127.zen.example", "2.0.0.127.zen.example" },
        { "a", "a" },
        { l63, l63 },
        { n253, n253 },
    };
    char out[DNS_NAME_MAX + 1];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_true(dns_name_normalize(good[i].in, out));
        assert_string_equal(out, good[i].want);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (dns_name_normalize(bad[i], out))
            fail_msg("accepted '%s'", bad[i]);
    }
    assert_false(dns_name_normalize(l64, out));
    assert_false(dns_name_normalize(n254, out));
}

static void test_reverse_name(void **state)
{
    (void)state;
    static const struct {
        const char *ip;
        const char *suffix;
        const char *want;       /* NULL: false */
    } cases[] = {
        { "1.2.3.4", NULL, "4.3.2.1.in-addr.arpa" },
        { "127.0.0.2", "zen.example", "2.0.0.127.zen.example" },
        { "::ffff:192.0.2.7", NULL, "7.2.0.192.in-addr.arpa" },
        { "2001:db8::1", NULL,
          "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa" },
        { "2001:db8:abcd:12::ff", "dnsbl.example",
          "f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.1.0.0.d.c.b.a.8.b.d.0.1.0.0.2.dnsbl.example" },
        { "unix", NULL, NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof ss);
        if (inet_pton(AF_INET, cases[i].ip, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
            ss.ss_family = AF_INET;
        else if (inet_pton(AF_INET6, cases[i].ip, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
            ss.ss_family = AF_INET6;
        else
            ss.ss_family = AF_UNIX;
        struct buf out = BUF_INIT;
        bool ok = dns_reverse_name((struct sockaddr *)&ss, cases[i].suffix, &out);
        if (cases[i].want == NULL) {
            assert_false(ok);
            assert_int_equal(out.len, 0);
        } else {
            assert_true(ok);
            assert_string_equal(buf_cstr(&out), cases[i].want);
        }
        buf_release(&out);
    }
}

/* Fake random sources for dns_mx_sort. */
static uint32_t rnd_zero(uint32_t bound, void *arg)
{
    (void)bound;
    (void)arg;
    return 0;
}

static uint32_t rnd_max(uint32_t bound, void *arg)
{
    (void)arg;
    return bound - 1;
}

static void test_mx_sort(void **state)
{
    (void)state;
    static const struct {
        const char *in;         /* "pref host" pairs */
        uint32_t (*rnd)(uint32_t, void *);
        const char *want;
    } cases[] = {
        { "", rnd_zero, "" },
        { "10 a", rnd_zero, "10 a" },
        { "20 b 10 a", rnd_max, "10 a 20 b" },
        /* rnd_max keeps every element in place: a stable sort by preference */
        { "10 a 5 x 10 b 10 c 20 z", rnd_max, "5 x 10 a 10 b 10 c 20 z" },
        /* rnd_zero: Fisher-Yates swaps k with the run's first: a b c -> c b a -> b c a */
        { "10 a 5 x 10 b 10 c 20 z", rnd_zero, "5 x 10 b 10 c 10 a 20 z" },
        { "1 a 1 b", rnd_zero, "1 b 1 a" },
        { "0 a 65535 b 0 c", rnd_max, "0 a 0 c 65535 b" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dns_mx mx[8];
        char hosts[8][8];
        size_t n = 0;
        const char *p = cases[i].in;
        unsigned pref;
        int used;
        while (n < 8 && sscanf(p, "%u %7s%n", &pref, hosts[n], &used) == 2) {
            mx[n].pref = pref;
            mx[n].host = hosts[n];
            n++;
            p += used;
        }
        dns_mx_sort(mx, n, cases[i].rnd, NULL);
        struct buf out = BUF_INIT;
        for (size_t j = 0; j < n; j++)
            buf_printf(&out, "%s%u %s", j ? " " : "", mx[j].pref, mx[j].host);
        assert_string_equal(buf_cstr(&out), cases[i].want);
        buf_release(&out);
    }
    /* The internal source: sorted, every element kept, and both orders of a tie seen. */
    int seen_ab = 0, seen_ba = 0;
    for (int run = 0; run < 200; run++) {
        struct dns_mx mx[4] = { { "c", 2 }, { "a", 1 }, { "b", 1 }, { "d", 0 } };
        dns_mx_sort(mx, 4, NULL, NULL);
        assert_string_equal(mx[0].host, "d");
        assert_string_equal(mx[3].host, "c");
        assert_int_equal(mx[1].pref, 1);
        assert_int_equal(mx[2].pref, 1);
        if (strcmp(mx[1].host, "a") == 0 && strcmp(mx[2].host, "b") == 0)
            seen_ab++;
        else if (strcmp(mx[1].host, "b") == 0 && strcmp(mx[2].host, "a") == 0)
            seen_ba++;
        else
            fail_msg("lost a host: %s %s", mx[1].host, mx[2].host);
    }
    assert_true(seen_ab > 0 && seen_ba > 0);    /* each missing has probability 2^-200 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mx_answers),
        cmocka_unit_test(test_txt_answers),
        cmocka_unit_test(test_ptr_and_a_answers),
        cmocka_unit_test(test_merge_addrs),
        cmocka_unit_test(test_name_normalize),
        cmocka_unit_test(test_reverse_name),
        cmocka_unit_test(test_mx_sort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
