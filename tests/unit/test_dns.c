/*
 * test_dns.c - dns.c against a real dnsmasq (answer parsing on crafted packets: test_dns_answer.c).
 *
 * The group setup starts dnsmasq on a free loopback port (UDP and TCP) with the records below,
 * a fake upstream that answers SERVFAIL to everything but "half." A queries (dnsmasq forwards
 * fail.test to it), and a bound UDP socket that never answers (the timeout server). Every lookup
 * result is rendered to text in its callback and compared with the table. Each callback checks
 * that it is not running inside the call that started its lookup, and each lookup is checked to
 * answer exactly once. dnsmasq runs through support/dnsmasq.c, the other two through
 * support/fake_dns.c.
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
#include <unistd.h>

#include <cmocka.h>
#include <ares.h>
#include <event2/event.h>

#include "buf.h"
#include "clock.h"
#include "conf.h"
#include "dns.h"
#include "netaddr.h"
#include "support/dnsmasq.h"
#include "support/fake_dns.h"
#include "support/peer.h"

static int dns_port;            /* dnsmasq */
static struct fake_dns_pair up = FAKE_DNS_PAIR_INIT;   /* SERVFAIL (with "half." answers), silent */
static struct event_base *base;
static bool starting;           /* inside a dns_*() call that starts a lookup */

static char long_a[251], long_b[251], long_c[251];

static void dnsmasq_start(void)
{
    char local_ttl[] = "--local-ttl=60", txt_long[820];
    memset(long_a, 'a', 250);
    memset(long_b, 'b', 250);
    memset(long_c, 'c', 250);
    snprintf(txt_long, sizeof txt_long, "--txt-record=long.test,%s,%s,%s", long_a, long_b, long_c);
    const char *const args[] = {
        "--local=/2.0.192.in-addr.arpa/", "--local=/8.b.d.0.1.0.0.2.ip6.arpa/", local_ttl, up.servfail_arg,
        "--mx-host=multi.test,mx10a.multi.test,10",
        "--mx-host=multi.test,mx10b.multi.test,10",
        "--mx-host=multi.test,mx10c.multi.test,10",
        "--mx-host=multi.test,mx20.multi.test,20",
        "--mx-host=multi.test,mx5.multi.test,5",
        "--mx-host=dup.test,mx.dup.test,20", "--mx-host=dup.test,mx.dup.test,10",
        "--mx-host=dup.test,other.dup.test,15",
        "--mx-host=nullmx.test,.,0",
        "--mx-host=mixnull.test,.,0", "--mx-host=mixnull.test,mx.mixnull.test,10",
        "--mx-host=dotpref.test,.,10",
        "--host-record=nomx.test,192.0.2.10", "--cname=alias.test,nomx.test",
        "--host-record=both.test,192.0.2.1,2001:db8::1",
        "--host-record=v4.test,192.0.2.2", "--host-record=v6.test,2001:db8::2",
        "--host-record=two4.test,192.0.2.3", "--host-record=two4.test,192.0.2.4",
        "--host-record=2.0.0.127.zen.test,127.0.0.2",
        "--host-record=2.0.0.127.zen.test,127.0.0.10",
        "--txt-record=spf.test,v=spf1 ip4:192.0.2.0/24 -all",
        "--txt-record=split.test,v=spf1 ,ip4:192.0.2.1 ,-all",
        "--txt-record=two.test,first", "--txt-record=two.test,second",
        txt_long,
        "--ptr-record=5.2.0.192.in-addr.arpa,one.test",
        "--ptr-record=5.2.0.192.in-addr.arpa,two.test",
        NULL,
    };
    dns_port = tdm_start(args);
}

static int group_setup(void **state)
{
    (void)state;
    base = event_base_new();
    fake_dns_pair_start(&up, base, true, "fail.test", NULL);
    dnsmasq_start();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tdm_stop();
    fake_dns_pair_stop(&up);
    event_base_free(base);
    return 0;
}

/* ---- lookups and their results --------------------------------------------------------------- */

enum kind { K_MX, K_ADDR, K_A, K_TXT, K_PTR };

/* What one lookup's callback saw. */
struct got {
    enum kind kind;             /* set by start() */
    int calls;
    bool early;                 /* called inside the starting call */
    enum dns_status status;
    bool nxdomain, implicit;
    char error[128];
    struct buf text;            /* the entries rendered (see render) */
    struct buf order;           /* MX hosts in the order given */
    unsigned ttl;
    long long at;               /* when it was called */
    const char *bad;            /* a broken promise seen in the callback (asserted later: an
                                 * assert cannot longjmp out of the event loop) */
};

/* Orders "PREF HOST" lines by preference, then host; any other lines as strings. */
static int cmp_line(const void *a, const void *b)
{
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    unsigned long px = strtoul(x, NULL, 10), py = strtoul(y, NULL, 10);
    return px != py ? (px < py ? -1 : 1) : strcmp(x, y);
}

/*
 * Entries as text, one per line: "PREF HOST" for MX (sorted by host within a preference, so the
 * expected text does not depend on the shuffle), "ADDR:PORT" for addresses, "IP" for A, the
 * data for TXT, the name for PTR. TXT and PTR lines are sorted too (the answer order is
 * dnsmasq's); address lines are not (dns.c's order is the point).
 */
static void render(const struct dns_result *r, struct got *g)
{
    char **lines = calloc(r->n + 1, sizeof *lines);
    for (size_t i = 0; i < r->n; i++) {
        struct buf l = BUF_INIT;
        char ip[NETADDR_STRLEN];
        switch (g->kind) {
        case K_MX:
            if (i > 0 && r->mx[i - 1].pref > r->mx[i].pref)
                g->bad = "MX not sorted by preference";
            buf_printf(&g->order, "%s%s", i ? " " : "", r->mx[i].host);
            buf_printf(&l, "%u %s", r->mx[i].pref, r->mx[i].host);
            break;
        case K_ADDR:
            netaddr_string((const struct sockaddr *)&r->addrs[i], ip, sizeof ip);
            buf_puts(&l, ip);
            break;
        case K_A:
            inet_ntop(AF_INET, &r->a[i], ip, sizeof ip);
            buf_puts(&l, ip);
            break;
        case K_TXT:
            if (strlen(r->txt[i].data) != r->txt[i].len)
                g->bad = "TXT length";
            buf_append(&l, r->txt[i].data, r->txt[i].len);
            break;
        case K_PTR:
            buf_puts(&l, r->names[i]);
            break;
        }
        lines[i] = buf_steal(&l);
    }
    if (g->kind == K_MX || g->kind == K_TXT || g->kind == K_PTR)
        qsort(lines, r->n, sizeof *lines, cmp_line);
    for (size_t i = 0; i < r->n; i++) {
        buf_printf(&g->text, "%s%s", i ? "\n" : "", lines[i]);
        free(lines[i]);
    }
    free(lines);
}

static void got_cb(struct dns_result *r, void *arg)
{
    struct got *g = arg;
    g->calls++;
    g->early |= starting;
    g->status = r->status;
    g->nxdomain = r->nxdomain;
    g->implicit = r->implicit;
    g->ttl = r->ttl;
    g->at = clock_mono_ms();
    snprintf(g->error, sizeof g->error, "%s", r->error != NULL ? r->error : "");
    if (r->status == DNS_OK)
        render(r, g);
    else if (r->n != 0)
        g->bad = "entries in a failed result";
}

/* Starts one lookup whose result lands in g. */
static struct dns_query *start(struct dns *dns, enum kind kind, const char *name, int arg,
                               struct got *g)
{
    g->kind = kind;
    struct dns_query *q = NULL;
    starting = true;
    switch (kind) {
    case K_MX:
        q = dns_mx(dns, name, got_cb, g);
        break;
    case K_ADDR:
        q = dns_addr(dns, name, 25, arg, got_cb, g);
        break;
    case K_A:
        q = dns_a(dns, name, got_cb, g);
        break;
    case K_TXT:
        q = dns_txt(dns, name, got_cb, g);
        break;
    case K_PTR: {
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof ss);
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET, name, &sin->sin_addr) == 1)
            ss.ss_family = AF_INET;
        else if (inet_pton(AF_INET6, name, &sin6->sin6_addr) == 1)
            ss.ss_family = AF_INET6;
        else
            ss.ss_family = AF_UNIX;
        q = dns_ptr(dns, (struct sockaddr *)&ss, got_cb, g);
        break;
    }
    }
    starting = false;
    assert_non_null(q);
    assert_int_equal(g->calls, 0);
    return q;
}

/* Runs the loop until every g[0..n) was called, or the time is up. */
static void run_until(struct got *g, size_t n, long long ms)
{
    tp_run_all(base, g, n, sizeof *g, offsetof(struct got, calls), ms);
}

/* Runs the loop for ms whatever happens. */
static void run_for(long long ms)
{
    tp_run_for(base, ms);
}

static void got_release(struct got *g)
{
    buf_release(&g->text);
    buf_release(&g->order);
}

static struct dns *new_dns(const char *server, long long timeout_ms, int tries)
{
    char *v[1] = { (char *)server };
    struct strlist l = { v, 1 };
    struct buf err = BUF_INIT;
    struct dns *dns = dns_new(base, &l, timeout_ms, tries, &err);
    if (dns == NULL)
        fail_msg("dns_new: %s", buf_cstr(&err));
    buf_release(&err);
    return dns;
}

/* A resolver whose only server is one of the test's UDP sockets. */
static struct dns *local_dns(int port, long long timeout_ms, int tries)
{
    char server[64];
    snprintf(server, sizeof server, "127.0.0.1:%d", port);
    return new_dns(server, timeout_ms, tries);
}

static struct dns *dnsmasq_dns(void)
{
    return local_dns(dns_port, 1000, 2);
}

/* ---- tests ----------------------------------------------------------------------------------- */

/*
 * The error text of a lookup that got SERVFAIL or REFUSED on every try: c-ares names the rcode,
 * or (1.18.1, once its retries are spent) reports ARES_ECONNREFUSED. The status is TEMPFAIL.
 */
#define SERVER_FAILED "(server failure)"
#define NODATA "DNS server returned answer with no data"    /* ares_strerror(ARES_ENODATA) */

static const struct lookup_case {
    enum kind kind;
    const char *name;
    int arg;                    /* K_ADDR: family */
    enum dns_status status;
    bool nxdomain;
    bool implicit;
    const char *text;           /* DNS_OK: render()'s text; else the error */
} lookup_cases[] = {
    /* MX, RFC 5321 section 5.1 */
    { K_MX, "multi.test", 0, DNS_OK, false, false,
      "5 mx5.multi.test\n10 mx10a.multi.test\n10 mx10b.multi.test\n10 mx10c.multi.test\n"
      "20 mx20.multi.test" },
    { K_MX, "Multi.TEST.", 0, DNS_OK, false, false,
      "5 mx5.multi.test\n10 mx10a.multi.test\n10 mx10b.multi.test\n10 mx10c.multi.test\n"
      "20 mx20.multi.test" },
    { K_MX, "dup.test", 0, DNS_OK, false, false, "10 mx.dup.test\n15 other.dup.test" },
    { K_MX, "NoMX.Test.", 0, DNS_OK, false, true, "0 nomx.test" },
    { K_MX, "alias.test", 0, DNS_OK, false, true, "0 alias.test" },      /* CNAME, no MX */
    { K_MX, "nullmx.test", 0, DNS_NULLMX, false, false, "null MX: the domain accepts no mail" },
    { K_MX, "mixnull.test", 0, DNS_OK, false, false, "10 mx.mixnull.test" },
    { K_MX, "dotpref.test", 0, DNS_NULLMX, false, false, "null MX: the domain accepts no mail" },
    { K_MX, "nosuch.test", 0, DNS_NOTFOUND, true, false, "Domain name not found" },
    { K_MX, "x.fail.test", 0, DNS_TEMPFAIL, false, false, SERVER_FAILED },
    { K_MX, "refused.example", 0, DNS_TEMPFAIL, false, false, SERVER_FAILED },
    { K_MX, "bad..test", 0, DNS_NOTFOUND, false, false, "invalid domain name" },
    { K_MX, "", 0, DNS_NOTFOUND, false, false, "invalid domain name" },
    { K_MX, ".", 0, DNS_NOTFOUND, false, false, "invalid domain name" },
    { K_MX, "sp ace.test", 0, DNS_NOTFOUND, false, false, "invalid domain name" },
    { K_MX, "back\\slash.test", 0, DNS_NOTFOUND, false, false, "invalid domain name" },
    { K_MX, "a234567890123456789012345678901234567890123456789012345678901234.test", 0,
      DNS_NOTFOUND, false, false, "invalid domain name" },
    /* addresses: A and AAAA in parallel, IPv6 first */
    { K_ADDR, "both.test", AF_UNSPEC, DNS_OK, false, false, "[2001:db8::1]:25\n192.0.2.1:25" },
    { K_ADDR, "BOTH.test.", AF_INET, DNS_OK, false, false, "192.0.2.1:25" },
    { K_ADDR, "both.test", AF_INET6, DNS_OK, false, false, "[2001:db8::1]:25" },
    { K_ADDR, "v4.test", AF_UNSPEC, DNS_OK, false, false, "192.0.2.2:25" },
    { K_ADDR, "v6.test", AF_UNSPEC, DNS_OK, false, false, "[2001:db8::2]:25" },
    { K_ADDR, "v6.test", AF_INET, DNS_NOTFOUND, false, false, NODATA },
    { K_ADDR, "alias.test", AF_UNSPEC, DNS_OK, false, false, "192.0.2.10:25" },
    { K_ADDR, "two4.test", AF_UNSPEC, DNS_OK, false, false, "192.0.2.3:25\n192.0.2.4:25" },
    { K_ADDR, "nosuch.test", AF_UNSPEC, DNS_NOTFOUND, true, false, "Domain name not found" },
    { K_ADDR, "multi.test", AF_UNSPEC, DNS_NOTFOUND, false, false, NODATA },
    { K_ADDR, "x.fail.test", AF_UNSPEC, DNS_TEMPFAIL, false, false, SERVER_FAILED },
    { K_ADDR, "192.0.2.9", AF_UNSPEC, DNS_OK, false, false, "192.0.2.9:25" },
    { K_ADDR, "2001:db8::9", AF_INET6, DNS_OK, false, false, "[2001:db8::9]:25" },
    { K_ADDR, "2001:db8::9", AF_INET, DNS_NOTFOUND, false, false, "address of the wrong family" },
    { K_ADDR, "-bad..", AF_UNSPEC, DNS_NOTFOUND, false, false, "invalid host name" },
    /* A records of a DNSBL name */
    { K_A, "2.0.0.127.zen.test", 0, DNS_OK, false, false, "127.0.0.2\n127.0.0.10" },
    { K_A, "3.0.0.127.zen.test", 0, DNS_NOTFOUND, true, false, "Domain name not found" },
    { K_A, "v6.test", 0, DNS_NOTFOUND, false, false, NODATA },
    { K_A, "x.fail.test", 0, DNS_TEMPFAIL, false, false, SERVER_FAILED },
    /* TXT: each record's strings joined */
    { K_TXT, "spf.test", 0, DNS_OK, false, false, "v=spf1 ip4:192.0.2.0/24 -all" },
    { K_TXT, "split.test", 0, DNS_OK, false, false, "v=spf1 ip4:192.0.2.1 -all" },
    { K_TXT, "two.test", 0, DNS_OK, false, false, "first\nsecond" },
    { K_TXT, "nomx.test", 0, DNS_NOTFOUND, false, false, NODATA },
    { K_TXT, "nosuch.test", 0, DNS_NOTFOUND, true, false, "Domain name not found" },
    { K_TXT, "x.fail.test", 0, DNS_TEMPFAIL, false, false, SERVER_FAILED },
    /* PTR, v4 and v6 reverse names built by dns.c */
    { K_PTR, "192.0.2.1", 0, DNS_OK, false, false, "both.test" },
    { K_PTR, "2001:db8::1", 0, DNS_OK, false, false, "both.test" },
    { K_PTR, "::ffff:192.0.2.2", 0, DNS_OK, false, false, "v4.test" },
    { K_PTR, "192.0.2.5", 0, DNS_OK, false, false, "one.test\ntwo.test" },
    { K_PTR, "192.0.2.99", 0, DNS_NOTFOUND, true, false, "Domain name not found" },
    { K_PTR, "2001:db8::99", 0, DNS_NOTFOUND, true, false, "Domain name not found" },
    { K_PTR, "unix", 0, DNS_NOTFOUND, false, false, "not an IP address" },
};

#define NCASES (sizeof lookup_cases / sizeof lookup_cases[0])

static const char *const kind_names[] = { "MX", "ADDR", "A", "TXT", "PTR" };

static void test_lookups(void **state)
{
    (void)state;
    struct dns *dns = dnsmasq_dns();
    struct got got[NCASES];
    memset(got, 0, sizeof got);
    int before = up.servfail.servfails;
    for (size_t i = 0; i < NCASES; i++)
        start(dns, lookup_cases[i].kind, lookup_cases[i].name, lookup_cases[i].arg, &got[i]);
    run_until(got, NCASES, 5000);
    run_for(50);        /* anything called twice would be called by now */
    for (size_t i = 0; i < NCASES; i++) {
        const struct lookup_case *c = &lookup_cases[i];
        struct got *g = &got[i];
        const char *text = g->status == DNS_OK ? buf_cstr(&g->text) : g->error;
        bool text_ok = strcmp(text, c->text) == 0;
        if (strcmp(c->text, SERVER_FAILED) == 0)
            text_ok = strcmp(text, ares_strerror(ARES_ESERVFAIL)) == 0
                      || strcmp(text, ares_strerror(ARES_ECONNREFUSED)) == 0;
        if (g->calls != 1 || g->early || g->bad != NULL || g->status != c->status
            || g->nxdomain != c->nxdomain || g->implicit != c->implicit || !text_ok)
            fail_msg("%s %s: calls %d early %d bad %s status %d nx %d implicit %d text '%s' (want "
                     "status %d nx %d implicit %d '%s')", kind_names[c->kind], c->name, g->calls,
                     g->early, g->bad != NULL ? g->bad : "-", g->status, g->nxdomain, g->implicit,
                     text, c->status, c->nxdomain, c->implicit, c->text);
        got_release(g);
    }
    assert_true(up.servfail.servfails > before);     /* SERVFAIL came from the upstream, through dnsmasq */
    dns_free(dns);
}

/* The TTL of A and address answers, and a TXT answer too long for UDP (c-ares retries on TCP). */
static void test_ttl_and_long_txt(void **state)
{
    (void)state;
    struct dns *dns = dnsmasq_dns();
    struct got g[3];
    memset(g, 0, sizeof g);
    start(dns, K_A, "2.0.0.127.zen.test", 0, &g[0]);
    start(dns, K_ADDR, "both.test", AF_UNSPEC, &g[1]);
    start(dns, K_TXT, "long.test", 0, &g[2]);
    run_until(g, 3, 5000);
    assert_int_equal(g[0].status, DNS_OK);
    assert_int_equal(g[0].ttl, 60);
    assert_int_equal(g[1].status, DNS_OK);
    assert_int_equal(g[1].ttl, 60);
    assert_int_equal(g[2].status, DNS_OK);
    char want[751];
    snprintf(want, sizeof want, "%s%s%s", long_a, long_b, long_c);
    assert_string_equal(buf_cstr(&g[2].text), want);
    for (int i = 0; i < 3; i++)
        got_release(&g[i]);
    dns_free(dns);
}

/* Equal preferences come in varying order; the preference order never varies. */
static void test_mx_shuffle(void **state)
{
    (void)state;
    enum { RUNS = 100 };
    struct dns *dns = dnsmasq_dns();
    struct got *g = calloc(RUNS, sizeof *g);
    for (int i = 0; i < RUNS; i++)
        start(dns, K_MX, "multi.test", 0, &g[i]);
    run_until(g, RUNS, 5000);
#define M(a, b, c) "mx5.multi.test mx10" a ".multi.test mx10" b ".multi.test mx10" c \
                         ".multi.test mx20.multi.test"
    static const char *const perms[] = {
        M("a", "b", "c"), M("a", "c", "b"), M("b", "a", "c"),
        M("b", "c", "a"), M("c", "a", "b"), M("c", "b", "a"),
    };
#undef M
    int seen[6] = { 0 };
    for (int i = 0; i < RUNS; i++) {
        int k = 0;
        while (k < 6 && strcmp(buf_cstr(&g[i].order), perms[k]) != 0)
            k++;
        if (g[i].status != DNS_OK || k == 6)
            fail_msg("run %d: status %d, order '%s'", i, g[i].status, buf_cstr(&g[i].order));
        seen[k]++;
        got_release(&g[i]);
    }
    /* Each of the 6 orders has probability 1/6: missing one in 100 runs is a 1e-7 event. */
    for (int k = 0; k < 6; k++) {
        if (seen[k] == 0)
            fail_msg("order '%s' never seen in %d runs", perms[k], RUNS);
    }
    free(g);
    dns_free(dns);
}

/* A server that never answers: TEMPFAIL after timeout x tries, not c-ares's doubled schedule. */
static void test_timeout(void **state)
{
    (void)state;
    static const struct { int tries; long long min, max; } cases[] = {
        { 1, 280, 450 },
        { 2, 580, 800 },    /* c-ares alone would wait 300 + 600 ms */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dns *dns = local_dns(up.silent.port, 300, cases[i].tries);
        struct got g[2];
        memset(g, 0, sizeof g);
        long long t0 = clock_mono_ms();
        start(dns, K_MX, "multi.test", 0, &g[0]);
        start(dns, K_ADDR, "both.test", AF_UNSPEC, &g[1]);
        run_until(g, 2, 3000);
        for (int j = 0; j < 2; j++) {
            long long took = g[j].at - t0;
            if (g[j].calls != 1 || g[j].status != DNS_TEMPFAIL || took < cases[i].min
                || took > cases[i].max)
                fail_msg("tries %d lookup %d: calls %d status %d after %lld ms (%s)",
                         cases[i].tries, j, g[j].calls, g[j].status, took, g[j].error);
            got_release(&g[j]);
        }
        dns_free(dns);     /* c-ares may still hold the queries: freed without a callback */
    }
}

/* A family that answers is used when the other one times out, by c-ares or by the deadline. */
static void test_addr_half_timeout(void **state)
{
    (void)state;
    for (int tries = 1; tries <= 2; tries++) {
        struct dns *dns = local_dns(up.servfail.port, 300, tries);
        struct got g[2];
        memset(g, 0, sizeof g);
        long long t0 = clock_mono_ms();
        g[0].kind = K_ADDR;
        dns_addr(dns, "half.example", 587, AF_UNSPEC, got_cb, &g[0]);
        start(dns, K_ADDR, "half.example", AF_INET6, &g[1]);
        run_until(g, 2, 3000);
        assert_int_equal(g[0].calls, 1);
        assert_int_equal(g[0].status, DNS_OK);
        assert_string_equal(buf_cstr(&g[0].text), "192.0.2.77:587");
        assert_int_equal(g[0].ttl, 30);
        assert_true(g[0].at - t0 >= 280 && g[0].at - t0 <= 300 * tries + 200);
        assert_int_equal(g[1].calls, 1);
        assert_int_equal(g[1].status, DNS_TEMPFAIL);
        got_release(&g[0]);
        got_release(&g[1]);
        dns_free(dns);
    }
}

/* dns_cancel: the callback never comes, whether c-ares holds the query or its answer is in hand. */
static struct dns_query *victim;

static void cancel_victim_cb(struct dns_result *r, void *arg)
{
    got_cb(r, arg);
    dns_cancel(victim);     /* answered too, and waiting for its turn to be delivered */
    victim = NULL;
}

static void test_cancel(void **state)
{
    (void)state;
    struct dns *silent = local_dns(up.silent.port, 100, 1);
    struct dns *dns = dnsmasq_dns();
    struct got g[6];
    memset(g, 0, sizeof g);
    dns_cancel(start(silent, K_MX, "multi.test", 0, &g[0]));         /* c-ares holds it */
    dns_cancel(start(dns, K_TXT, "spf.test", 0, &g[1]));             /* dnsmasq will answer */
    dns_cancel(start(dns, K_ADDR, "192.0.2.1", AF_UNSPEC, &g[2]));   /* answered at once */
    dns_cancel(start(dns, K_MX, "bad..name", 0, &g[3]));             /* failed at once */
    dns_cancel(NULL);
    g[4].kind = K_ADDR;
    starting = true;
    dns_addr(dns, "192.0.2.4", 25, AF_UNSPEC, cancel_victim_cb, &g[4]);
    starting = false;
    victim = start(dns, K_ADDR, "192.0.2.5", AF_UNSPEC, &g[5]);
    run_for(300);                   /* past silent's deadline, and dnsmasq's answer */
    assert_int_equal(g[4].calls, 1);
    assert_string_equal(buf_cstr(&g[4].text), "192.0.2.4:25");
    assert_null(victim);
    for (int i = 0; i < 6; i++) {
        if (i != 4)
            assert_int_equal(g[i].calls, 0);
        got_release(&g[i]);
    }
    dns_free(silent);
    dns_free(dns);
}

/* dns_free: every pending lookup hears DNS_CANCELLED once, from inside dns_free. */
static bool freeing;
static int cancelled_calls, cancelled_wrong;

static void cancelled_cb(struct dns_result *r, void *arg)
{
    (void)arg;
    cancelled_calls++;
    if (!freeing || r->status != DNS_CANCELLED || r->n != 0
        || strcmp(r->error, "DNS lookup cancelled") != 0)
        cancelled_wrong++;
}

static void test_free_cancels(void **state)
{
    (void)state;
    struct dns *dns = local_dns(up.silent.port, 5000, 1);
    static const struct sockaddr_in sin = { .sin_family = AF_INET };
    dns_mx(dns, "multi.test", cancelled_cb, NULL);
    dns_addr(dns, "both.test", 25, AF_UNSPEC, cancelled_cb, NULL);
    dns_a(dns, "2.0.0.127.zen.test", cancelled_cb, NULL);
    dns_txt(dns, "spf.test", cancelled_cb, NULL);
    dns_ptr(dns, (const struct sockaddr *)&sin, cancelled_cb, NULL);
    run_for(50);                    /* sent; the server stays silent */
    assert_int_equal(cancelled_calls, 0);
    dns_addr(dns, "192.0.2.1", 25, AF_UNSPEC, cancelled_cb, NULL);  /* ready, not delivered */
    freeing = true;
    dns_free(dns);
    freeing = false;
    assert_int_equal(cancelled_calls, 6);
    assert_int_equal(cancelled_wrong, 0);
    dns_free(NULL);
}

/* A callback may free its own struct dns; the other pending lookup is cancelled. */
static struct dns *self_dns;
static int self_calls, self_cancelled;

static void self_free_cb(struct dns_result *r, void *arg)
{
    (void)arg;
    self_calls++;
    if (r->status == DNS_CANCELLED) {
        self_cancelled++;
        return;
    }
    /* The first answer frees the resolver; the other lookup is cancelled by that. */
    struct dns *d = self_dns;
    self_dns = NULL;
    dns_free(d);
}

static bool self_freed(void *arg)
{
    (void)arg;
    return self_dns == NULL;
}

static void test_free_in_callback(void **state)
{
    (void)state;
    self_dns = dnsmasq_dns();
    dns_mx(self_dns, "multi.test", self_free_cb, NULL);
    dns_txt(self_dns, "x.fail.test", self_free_cb, NULL);
    tp_run_until(base, self_freed, NULL, 3000);
    assert_null(self_dns);
    assert_int_equal(self_calls, 2);
    assert_int_equal(self_cancelled, 1);
}

/* A callback may keep an array by taking it out of the result. */
static struct dns_mx *kept_mx;
static size_t kept_n;
static enum dns_status kept_status = DNS_CANCELLED;

static void keep_cb(struct dns_result *r, void *arg)
{
    (void)arg;
    kept_status = r->status;
    kept_mx = r->mx;
    kept_n = r->n;
    r->mx = NULL;
}

static bool kept_called(void *arg)
{
    (void)arg;
    return kept_status != DNS_CANCELLED;
}

static void test_keep_result(void **state)
{
    (void)state;
    struct dns *dns = dnsmasq_dns();
    dns_mx(dns, "dup.test", keep_cb, NULL);
    tp_run_until(base, kept_called, NULL, 3000);
    dns_free(dns);
    assert_int_equal(kept_status, DNS_OK);
    assert_int_equal(kept_n, 2);
    assert_string_equal(kept_mx[0].host, "mx.dup.test");
    assert_int_equal(kept_mx[0].pref, 10);
    assert_string_equal(kept_mx[1].host, "other.dup.test");
    free(kept_mx);
}

static void test_new_errors(void **state)
{
    (void)state;
#define BAD(s) "bad DNS server '" s "': expected ip, ip:port or [ipv6]:port"
    static const struct {
        const char *server;     /* NULL: no list, /etc/resolv.conf */
        long long timeout;
        int tries;
        const char *err;        /* NULL: success */
    } cases[] = {
        { NULL, 1000, 2, NULL },
        { "127.0.0.1", 1000, 2, NULL },
        { "127.0.0.1:5353", 1, 20, NULL },
        { "::1", 3600000, 1, NULL },
        { "[::1]:5353", 1000, 2, NULL },
        { "dns.example", 1000, 2, BAD("dns.example") },
        { "127.0.0.1:0", 1000, 2, BAD("127.0.0.1:0") },
        { "127.0.0.1:65536", 1000, 2, BAD("127.0.0.1:65536") },
        { "[dns.example]:53", 1000, 2, BAD("[dns.example]:53") },
        { "127.0.0.1", 0, 2, "bad DNS timeout 0 ms or tries 2 (1 ms..1 h, 1..20)" },
        { "127.0.0.1", 1000, 0, "bad DNS timeout 1000 ms or tries 0 (1 ms..1 h, 1..20)" },
        { "127.0.0.1", 1000, 21, "bad DNS timeout 1000 ms or tries 21 (1 ms..1 h, 1..20)" },
    };
#undef BAD
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *v[1] = { (char *)cases[i].server };
        struct strlist l = { v, cases[i].server != NULL ? 1 : 0 };
        struct buf err = BUF_INIT;
        struct dns *dns = dns_new(base, &l, cases[i].timeout, cases[i].tries, &err);
        if (cases[i].err == NULL) {
            if (dns == NULL)
                fail_msg("%s: %s", cases[i].server, buf_cstr(&err));
        } else {
            assert_null(dns);
            assert_string_equal(buf_cstr(&err), cases[i].err);
        }
        dns_free(dns);
        buf_release(&err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_errors),
        cmocka_unit_test(test_lookups),
        cmocka_unit_test(test_ttl_and_long_txt),
        cmocka_unit_test(test_mx_shuffle),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_addr_half_timeout),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_free_cancels),
        cmocka_unit_test(test_free_in_callback),
        cmocka_unit_test(test_keep_result),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
