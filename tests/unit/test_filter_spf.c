/*
 * test_filter_spf.c - filter_spf.c against a real dnsmasq, on real worker threads.
 *
 * The group setup starts dnsmasq (support/dnsmasq.c) on 127.0.0.1 and ::1 serving the records
 * every table row lists (all rows' records are served together), plus: the include chains and
 * lists of the lookup-limit rows (made in lim_records()), broken.test forwarded to a fake
 * upstream that answers SERVFAIL to everything, and slow.test forwarded to a bound UDP socket
 * that never answers (both support/fake_dns.c). The checks run on a 2-thread workq; the event loop runs while a test
 * waits, since the fake upstream answers from it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "buf.h"
#include "clock.h"
#include "conf.h"
#include "filter_spf.h"
#include "workq.h"
#include "support/dnsmasq.h"
#include "support/fake_dns.h"
#include "support/peer.h"

#define TABLE_TIMEOUT 1000      /* ms per identity for the table's checker */

static int dns_port;
static struct fake_dns_pair up = FAKE_DNS_PAIR_INIT;   /* broken.test's SERVFAIL, slow.test's silent */
static struct event_base *base;
static struct workq *wq;                            /* 2 threads */
static struct spf_checker *checker;                 /* 127.0.0.1:dns_port, TABLE_TIMEOUT */

/* ---- the table ------------------------------------------------------------------------------- */

enum { NONE = SPF_RES_NONE, NEUTRAL = SPF_RES_NEUTRAL, PASS = SPF_RES_PASS, FAIL = SPF_RES_FAIL,
       SOFT = SPF_RES_SOFTFAIL, TEMP = SPF_RES_TEMPERROR, PERM = SPF_RES_PERMERROR };

#define NOSPF "mta.nospf.test"      /* a HELO name with an address and no SPF record */
#define TXT(name, text) "--txt-record=" name "," text

/* An explanation of 210 bytes, cut to 200. */
#define X50 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define LONG_EXP_TXT TXT("why.longexpl.test", X50 X50 X50 X50 "yyyyyyyyyy")
#define LONG_EXP_WANT X50 X50 X50 X50 "..."

struct row {
    const char *client;         /* IPv4 or IPv6 literal, or "unix" for an AF_UNIX peer */
    const char *helo, *sender;
    const char *zone[5];        /* dnsmasq records the row relies on */
    int helo_res, from_res;
    const char *explanation;    /* expected; NULL = none */
};

static const struct row rows[] = {
    /* results of a plain record */
    { "192.0.2.1", NOSPF, "a@ip4.test", { TXT("ip4.test", "v=spf1 ip4:192.0.2.0/24 -all") },
      NONE, PASS, NULL },
    { "198.51.100.1", NOSPF, "a@ip4.test", { NULL }, NONE, FAIL, NULL },
    { "192.0.2.1", NOSPF, "a@soft.test", { TXT("soft.test", "v=spf1 ip4:192.0.2.9 ~all") },
      NONE, SOFT, NULL },
    { "192.0.2.1", NOSPF, "a@neutral.test", { TXT("neutral.test", "v=spf1 ?all") },
      NONE, NEUTRAL, NULL },
    { "192.0.2.1", NOSPF, "a@bare.test", { TXT("bare.test", "v=spf1") }, NONE, NEUTRAL, NULL },
    { "192.0.2.1", NOSPF, "a@IP4.TEST.", { NULL }, NONE, PASS, NULL },
    /* none */
    { "192.0.2.1", NOSPF, "a@norecord.test", { "--host-record=norecord.test,192.0.2.1" },
      NONE, NONE, NULL },
    { "192.0.2.1", NOSPF, "a@nosuch.test", { NULL }, NONE, NONE, NULL },
    { "192.0.2.1", NOSPF, "a@other.test", { TXT("other.test", "hello world") }, NONE, NONE, NULL },
    { "192.0.2.1", NOSPF, "a@[192.0.2.1]", { NULL }, NONE, NONE, NULL },
    { "192.0.2.1", NOSPF, "a@spftype.test",     /* type SPF (99) is not looked at */
      { "--dns-rr=spftype.test,99,0b763d73706631202d616c6c" }, NONE, NONE, NULL },
    { "unix", NOSPF, "a@ip4.test", { NULL }, NONE, NONE, NULL },
    /* permerror: the record */
    { "192.0.2.1", NOSPF, "a@two.test",
      { TXT("two.test", "v=spf1 -all"), TXT("two.test", "v=spf1 +all") }, NONE, PERM, NULL },
    { "192.0.2.1", NOSPF, "a@syntax.test", { TXT("syntax.test", "v=spf1 ip4:192.0.2.300 -all") },
      NONE, PERM, NULL },
    { "192.0.2.1", NOSPF, "a@unknown.test", { TXT("unknown.test", "v=spf1 frobnicate -all") },
      NONE, PERM, NULL },
    { "192.0.2.1", NOSPF, "a@incnone.test", { TXT("incnone.test", "v=spf1 include:norecord.test") },
      NONE, PERM, NULL },
    /* permerror: the limits (records from lim_records()) */
    { "192.0.2.1", NOSPF, "a@ten.lim.test", { NULL }, NONE, FAIL, NULL },
    { "192.0.2.1", NOSPF, "a@eleven.lim.test", { NULL }, NONE, PERM, NULL },
    { "192.0.2.1", NOSPF, "a@c2.chain.test", { NULL }, NONE, PASS, NULL },
    { "192.0.2.1", NOSPF, "a@c1.chain.test", { NULL }, NONE, PERM, NULL },
    { "192.0.2.1", NOSPF, "a@void2.test",
      { TXT("void2.test", "v=spf1 a:n1.void.test a:n2.void.test ip4:192.0.2.1 -all") },
      NONE, PASS, NULL },
    { "192.0.2.1", NOSPF, "a@void3.test",
      { TXT("void3.test",
            "v=spf1 a:n1.void.test mx:n2.void.test a:n3.void.test ip4:192.0.2.1 -all") },
      NONE, PERM, NULL },
    { "192.0.2.1", NOSPF, "a@mx11.lim.test", { NULL }, NONE, PERM, NULL },
    { "192.0.2.81", NOSPF, "a@ptr.test", { NULL }, NONE, FAIL, NULL },  /* 11 PTR names: 10 used */
    /* temperror */
    { "192.0.2.1", NOSPF, "a@x.broken.test", { NULL }, NONE, TEMP, NULL },
    { "192.0.2.1", NOSPF, "a@incbroken.test",
      { TXT("incbroken.test", "v=spf1 include:y.broken.test -all") }, NONE, TEMP, NULL },
    { "192.0.2.1", NOSPF, "a@x.slow.test", { NULL }, NONE, TEMP, NULL },
    /* mechanisms and modifiers */
    { "192.0.2.1", NOSPF, "a@inc.test", { TXT("inc.test", "v=spf1 include:ip4.test -all") },
      NONE, PASS, NULL },
    { "198.51.100.1", NOSPF, "a@inc.test", { NULL }, NONE, FAIL, NULL },
    { "192.0.2.51", NOSPF, "a@a.test",
      { TXT("a.test", "v=spf1 a -all"), "--host-record=a.test,192.0.2.51" }, NONE, PASS, NULL },
    { "192.0.2.52", NOSPF, "a@ahost.test",
      { TXT("ahost.test", "v=spf1 a:web.ahost.test -all"),
        "--host-record=web.ahost.test,192.0.2.52" },
      NONE, PASS, NULL },
    { "192.0.2.53", NOSPF, "a@ahost.test", { NULL }, NONE, FAIL, NULL },
    { "192.0.2.60", NOSPF, "a@mx.test",
      { TXT("mx.test", "v=spf1 mx -all"), "--mx-host=mx.test,mx1.mx.test,10",
        "--host-record=mx1.mx.test,192.0.2.60" }, NONE, PASS, NULL },
    { "192.0.2.61", NOSPF, "a@mx.test", { NULL }, NONE, FAIL, NULL },
    { "192.0.2.1", NOSPF, "a@redir.test", { TXT("redir.test", "v=spf1 redirect=ip4.test") },
      NONE, PASS, NULL },
    { "198.51.100.1", NOSPF, "a@redir.test", { NULL }, NONE, FAIL, NULL },
    { "192.0.2.1", NOSPF, "a@ex.test",
      { TXT("ex.test", "v=spf1 exists:%{i}.ex.test -all"),
        "--host-record=192.0.2.1.ex.test,127.0.0.2" },
      NONE, PASS, NULL },
    { "192.0.2.2", NOSPF, "a@ex.test", { NULL }, NONE, FAIL, NULL },
    { "192.0.2.70", NOSPF, "a@ptr.test",
      { TXT("ptr.test", "v=spf1 ptr -all"), "--host-record=h70.ptr.test,192.0.2.70" },
      NONE, PASS, NULL },
    { "192.0.2.71", NOSPF, "a@ptr.test", { NULL }, NONE, FAIL, NULL },
    /* explanations: only for fail */
    { "192.0.2.1", NOSPF, "a@expl.test",
      { TXT("expl.test", "v=spf1 -all exp=why.expl.test"),
        TXT("why.expl.test", "%{i} is not one of %{d}'s senders") },
      NONE, FAIL, "192.0.2.1 is not one of expl.test's senders" },
    { "192.0.2.1", NOSPF, "a@rawexpl.test",
      { TXT("rawexpl.test", "v=spf1 -all exp=why.rawexpl.test"),
        TXT("why.rawexpl.test", "caf\xc3\xa9 a\\b  %{l}") },
      NONE, FAIL, "caf\\xc3\\xa9 a\\\\b  a" },
    { "192.0.2.1", NOSPF, "a@longexpl.test",
      { TXT("longexpl.test", "v=spf1 -all exp=why.longexpl.test"), LONG_EXP_TXT },
      NONE, FAIL, LONG_EXP_WANT },
    { "192.0.2.1", NOSPF, "a@softexpl.test",
      { TXT("softexpl.test", "v=spf1 ~all exp=why.expl.test") },
      NONE, SOFT, NULL },
    { "192.0.2.1", NOSPF, "a@badexpl.test",
      { TXT("badexpl.test", "v=spf1 -all exp=nosuch.expl.test") },
      NONE, FAIL, NULL },
    /* the HELO identity; the null sender is postmaster@HELO */
    { "192.0.2.1", "mta.helo.test", "", { TXT("mta.helo.test", "v=spf1 ip4:192.0.2.1 -all") },
      PASS, PASS, NULL },
    { "198.51.100.1", "mta.helo.test", "", { NULL }, FAIL, FAIL, NULL },
    { "198.51.100.1", "mta.helo.test", "a@soft.test", { NULL }, FAIL, SOFT, NULL },
    { "192.0.2.1", "MTA.HELO.TEST", "a@ip4.test", { NULL }, PASS, PASS, NULL },
    { "192.0.2.1", "[192.0.2.1]", "", { NULL }, NONE, NONE, NULL },
    { "192.0.2.1", "[192.0.2.1]", "a@ip4.test", { NULL }, NONE, PASS, NULL },
    { "192.0.2.1", "192.0.2.1", "a@ip4.test", { NULL }, NONE, PASS, NULL },
    { "192.0.2.1", "localhost", "", { NULL }, NONE, NONE, NULL },
    { "192.0.2.1", "", "", { NULL }, NONE, NONE, NULL },
    /* client addresses */
    { "2001:db8:1::25", NOSPF, "a@v6.test", { TXT("v6.test", "v=spf1 ip6:2001:db8:1::/48 -all") },
      NONE, PASS, NULL },
    { "2001:db8:2::25", NOSPF, "a@v6.test", { NULL }, NONE, FAIL, NULL },
    { "2001:db8:1::25", NOSPF, "a@ip4.test", { NULL }, NONE, FAIL, NULL },
    { "2001:db8:6::1", NOSPF, "a@a6.test",
      { TXT("a6.test", "v=spf1 a -all"), "--host-record=a6.test,2001:db8:6::1" },
      NONE, PASS, NULL },
    { "2001:db8:9::1", NOSPF, "a@mxv6.test",      /* AAAA-less MX hosts: not void lookups */
      { TXT("mxv6.test", "v=spf1 mx -all"), "--mx-host=mxv6.test,m1.mx.test,10",
        "--mx-host=mxv6.test,m2.mx.test,20", "--mx-host=mxv6.test,m3.mx.test,30" },
      NONE, FAIL, NULL },
    { "::ffff:192.0.2.1", NOSPF, "a@ip4.test", { NULL }, NONE, PASS, NULL },
    { "127.0.0.1", NOSPF, "a@ip4.test", { NULL }, NONE, FAIL, NULL },   /* no loopback pass */
};
#define NROWS (sizeof rows / sizeof rows[0])

/* The include lists, include chains, MX list and PTR list of the limit rows. */
static void lim_records(const char **args, size_t *n)
{
    static char bufs[60][400];
    size_t k = 0;
    char ten[300] = "", eleven[330];
    for (int i = 1; i <= 11; i++) {
        snprintf(bufs[k++], sizeof bufs[0], TXT("i%d.lim.test", "v=spf1 -all"), i);
        if (i <= 10)
            snprintf(ten + strlen(ten), sizeof ten - strlen(ten), " include:i%d.lim.test", i);
    }
    snprintf(eleven, sizeof eleven, "%s include:i11.lim.test", ten);
    snprintf(bufs[k++], sizeof bufs[0], TXT("ten.lim.test", "v=spf1%s -all"), ten);
    snprintf(bufs[k++], sizeof bufs[0], TXT("eleven.lim.test", "v=spf1%s -all"), eleven);
    /* c1 -> c2 -> ... -> c12: from c1 that is 11 includes, from c2 10 */
    for (int i = 1; i <= 11; i++)
        snprintf(bufs[k++], sizeof bufs[0],
                 TXT("c%d.chain.test", "v=spf1 include:c%d.chain.test -all"), i, i + 1);
    snprintf(bufs[k++], sizeof bufs[0], TXT("c12.chain.test", "v=spf1 ip4:192.0.2.1 -all"));
    snprintf(bufs[k++], sizeof bufs[0], TXT("mx11.lim.test", "v=spf1 mx ip4:192.0.2.1 -all"));
    for (int i = 1; i <= 11; i++)
        snprintf(bufs[k++], sizeof bufs[0], "--ptr-record=81.2.0.192.in-addr.arpa,p%d.ptr.test", i);
    for (int i = 1; i <= 11; i++)
        snprintf(bufs[k++], sizeof bufs[0], "--mx-host=mx11.lim.test,h%d.mx11.lim.test,%d", i, i);
    for (size_t i = 0; i < k; i++)
        args[(*n)++] = bufs[i];
}

static int group_setup(void **state)
{
    (void)state;
    base = event_base_new();
    fake_dns_pair_start(&up, base, false, "broken.test", "slow.test");

    static const char *args[256];
    size_t n = 0;
    args[n++] = "--listen-address=::1";
    args[n++] = "--local=/2.0.192.in-addr.arpa/";
    args[n++] = up.servfail_arg;
    args[n++] = up.silent_arg;
    args[n++] = "--host-record=" NOSPF ",192.0.2.1";
    lim_records(args, &n);
    for (size_t i = 0; i < NROWS; i++) {
        for (size_t j = 0; j < 5 && rows[i].zone[j] != NULL; j++)
            args[n++] = rows[i].zone[j];
    }
    assert_true(n < sizeof args / sizeof args[0]);
    args[n] = NULL;
    dns_port = tdm_start(args);

    wq = workq_new(base, 2);
    assert_non_null(wq);
    char spec[32];
    snprintf(spec, sizeof spec, "127.0.0.1:%d", dns_port);
    char *v[] = { spec };
    struct strlist servers = { v, 1 };
    struct buf err = BUF_INIT;
    checker = spf_checker_new(wq, &servers, "mx.receiver.test", TABLE_TIMEOUT, &err);
    if (checker == NULL)
        fail_msg("spf_checker_new: %s", buf_cstr(&err));
    buf_release(&err);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    workq_free(wq);
    spf_checker_free(checker);
    tdm_stop();
    fake_dns_pair_stop(&up);
    event_base_free(base);
    return 0;
}

/* ---- running checks -------------------------------------------------------------------------- */

/* What one check's done() saw. */
struct got {
    int calls;
    int helo, from;
    char *explanation, *domain;
    long long at;               /* when done() ran */
};

static bool on_loop_thread_only = true;  /* done() never runs inside spf_check() */
static bool in_check;

static void got_done(const struct spf_answer *a, void *arg)
{
    struct got *g = arg;
    if (in_check)
        on_loop_thread_only = false;
    g->calls++;
    g->helo = a->helo;
    g->from = a->mailfrom;
    free(g->explanation);
    free(g->domain);
    g->explanation = a->explanation != NULL ? strdup(a->explanation) : NULL;
    g->domain = strdup(a->mailfrom_domain);
    g->at = clock_mono_ms();
}

static void got_release(struct got *g)
{
    free(g->explanation);
    free(g->domain);
    memset(g, 0, sizeof *g);
}

static void make_client(const char *s, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (strcmp(s, "unix") == 0) {
        ss->ss_family = AF_UNIX;
    } else if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(40000);
    } else {
        assert_int_equal(inet_pton(AF_INET6, s, &sin6->sin6_addr), 1);
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(40000);
    }
}

static struct spf_query *start(struct spf_checker *c, const struct row *r, struct got *g)
{
    struct sockaddr_storage ss;
    make_client(r->client, &ss);
    in_check = true;
    struct spf_query *q = spf_check(c, (struct sockaddr *)&ss, r->helo, r->sender, got_done, g);
    in_check = false;
    return q;
}

/* Runs the loop for at most ms. */
static void run_for(long long ms)
{
    tp_run_for(base, ms);
}

/* Runs the loop until n checks of g answered, failing after ms. */
static void run_until(struct got *g, size_t n, long long ms)
{
    size_t done = tp_run_all(base, g, n, sizeof *g, offsetof(struct got, calls), ms);
    if (done != n)
        fail_msg("%zu of %zu checks answered within %lld ms", done, n, ms);
}

/* Appends a line to bad unless g holds what row r expects; whether it did. */
static bool row_ok(const struct row *r, const struct got *g, struct buf *bad)
{
    const char *at = strrchr(r->sender, '@');
    const char *domain = r->sender[0] == '\0' ? r->helo : at + 1;
    bool expl_ok = r->explanation == NULL ? g->explanation == NULL
                   : g->explanation != NULL && strcmp(g->explanation, r->explanation) == 0;
    if (g->calls == 1 && g->helo == r->helo_res && g->from == r->from_res && expl_ok
        && g->domain != NULL && strcmp(g->domain, domain) == 0)
        return true;
    buf_printf(bad, "client %s helo '%s' sender '%s': calls %d, helo %s mailfrom %s, explanation "
               "'%s', domain '%s' (want helo %s mailfrom %s, explanation '%s', domain '%s')\n",
               r->client, r->helo, r->sender, g->calls, spf_result_name(g->helo),
               spf_result_name(g->from), g->explanation != NULL ? g->explanation : "(null)",
               g->domain != NULL ? g->domain : "(null)", spf_result_name(r->helo_res),
               spf_result_name(r->from_res), r->explanation != NULL ? r->explanation : "(null)",
               domain);
    return false;
}

static void check_row(const struct row *r, const struct got *g)
{
    struct buf bad = BUF_INIT;
    if (!row_ok(r, g, &bad))
        fail_msg("%s", buf_cstr(&bad));
    buf_release(&bad);
}

static struct spf_checker *checker_for(const char *server, long long timeout_ms)
{
    char *v[] = { (char *)server };
    struct strlist servers = { v, 1 };
    struct buf err = BUF_INIT;
    struct spf_checker *c = spf_checker_new(wq, &servers, "mx.receiver.test", timeout_ms, &err);
    if (c == NULL)
        fail_msg("spf_checker_new(%s): %s", server, buf_cstr(&err));
    buf_release(&err);
    return c;
}

/* ---- tests ----------------------------------------------------------------------------------- */

/* Every row, one check at a time. */
static void test_table(void **state)
{
    (void)state;
    int before = up.servfail.servfails;
    struct buf bad = BUF_INIT;
    for (size_t i = 0; i < NROWS; i++) {
        struct got g = { 0 };
        start(checker, &rows[i], &g);
        run_until(&g, 1, 3 * TABLE_TIMEOUT + 2000);
        row_ok(&rows[i], &g, &bad);
        got_release(&g);
    }
    if (bad.len > 0)
        fail_msg("%s", buf_cstr(&bad));
    buf_release(&bad);
    run_for(20);
    assert_true(on_loop_thread_only);
    assert_true(up.servfail.servfails > before);     /* SERVFAIL came from the upstream, via dnsmasq */
}

/* 50 checks at once on 2 worker threads, each answered once and right. */
static void test_parallel(void **state)
{
    (void)state;
    enum { N = 50 };
    struct got g[N];
    const struct row *which[N];
    memset(g, 0, sizeof g);
    size_t r = 0;
    for (int i = 0; i < N; i++) {
        while (strstr(rows[r].sender, "slow") != NULL)      /* keep the test quick */
            r = (r + 1) % NROWS;
        which[i] = &rows[r];
        start(checker, which[i], &g[i]);
        r = (r + 1) % NROWS;
    }
    run_until(g, N, 20000);
    run_for(50);
    for (int i = 0; i < N; i++) {
        check_row(which[i], &g[i]);
        got_release(&g[i]);
    }
}

/* The configured server with its port, given as [ipv6]:port. */
static void test_ipv6_server(void **state)
{
    (void)state;
    char spec[32];
    snprintf(spec, sizeof spec, "[::1]:%d", dns_port);
    struct spf_checker *c = checker_for(spec, 1000);
    struct got g = { 0 };
    start(c, &rows[0], &g);
    run_until(&g, 1, 5000);
    check_row(&rows[0], &g);
    got_release(&g);
    spf_checker_free(c);
}

/* A server that never answers: temperror for both identities, each after the timeout. */
static void test_timeout(void **state)
{
    (void)state;
    char spec[32];
    snprintf(spec, sizeof spec, "127.0.0.1:%d", up.silent.port);
    struct spf_checker *c = checker_for(spec, 300);
    struct row r = { "192.0.2.1", NOSPF, "a@ip4.test", { NULL }, TEMP, TEMP, NULL };
    struct got g = { 0 };
    long long t0 = clock_mono_ms();
    start(c, &r, &g);
    run_until(&g, 1, 3000);
    check_row(&r, &g);
    long long took = g.at - t0;
    if (took < 590 || took > 1500)
        fail_msg("answered after %lld ms, want 2 x 300 ms", took);
    got_release(&g);
    spf_checker_free(c);
}

/* Bad settings are refused with a message; no servers means resolv.conf's. */
static void test_new_errors(void **state)
{
    (void)state;
    static const struct { const char *server; long long timeout; const char *msg; } cases[] = {
        { "dns.example", 1000,
          "bad DNS server 'dns.example': expected ip, ip:port or [ipv6]:port" },
        { "192.0.2.1:0", 1000,
          "bad DNS server '192.0.2.1:0': expected ip, ip:port or [ipv6]:port" },
        { "192.0.2.1:70000", 1000,
          "bad DNS server '192.0.2.1:70000': expected ip, ip:port or [ipv6]:port" },
        { "[192.0.2.1]:53", 1000,
          "bad DNS server '[192.0.2.1]:53': expected ip, ip:port or [ipv6]:port" },
        { "192.0.2.1\n", 1000,
          "bad DNS server '192.0.2.1\\x0a': expected ip, ip:port or [ipv6]:port" },
        { "192.0.2.1", 0, "bad SPF timeout 0 ms (1 ms..1 h)" },
        { "192.0.2.1", 3600001, "bad SPF timeout 3600001 ms (1 ms..1 h)" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *v[] = { (char *)cases[i].server };
        struct strlist servers = { v, 1 };
        struct buf err = BUF_INIT;
        struct spf_checker *c = spf_checker_new(wq, &servers, "r.test", cases[i].timeout, &err);
        assert_null(c);
        assert_string_equal(buf_cstr(&err), cases[i].msg);
        buf_release(&err);
    }
    struct buf err = BUF_INIT;
    assert_null(spf_checker_new(NULL, NULL, "r.test", 1000, &err));
    assert_string_equal(buf_cstr(&err), "SPF checks need a worker queue");
    buf_reset(&err);
    static const char *const good[] = { "192.0.2.1", "192.0.2.1:5353", "[2001:db8::1]:53",
                                        "2001:db8::1" };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char *v[] = { (char *)good[i] };
        struct strlist servers = { v, 1 };
        struct spf_checker *c = spf_checker_new(wq, &servers, NULL, 1000, &err);
        assert_non_null(c);
        spf_checker_free(c);
    }
    struct spf_checker *c = spf_checker_new(wq, NULL, "", 1000, &err);  /* no traffic sent */
    assert_non_null(c);
    spf_checker_free(c);
    spf_checker_free(NULL);
    spf_cancel(NULL);
    assert_int_equal(err.len, 0);
    buf_release(&err);
}

/* Cancelled while running: done() is not called, and its arg may be gone already. */
static void test_cancel_running(void **state)
{
    (void)state;
    static const struct row slow = { "192.0.2.1", NOSPF, "a@x.slow.test", { NULL }, NONE, TEMP,
                                     NULL };
    struct got *g = calloc(1, sizeof *g);
    struct spf_query *q = start(checker, &slow, g);
    tp_sleep_ms(200);               /* the worker is waiting for slow.test now */
    spf_cancel(q);
    free(g);                        /* ASan reports it if done() still uses it */
    struct got other = { 0 };
    start(checker, &rows[0], &other);
    run_until(&other, 1, 5000);
    check_row(&rows[0], &other);
    got_release(&other);
    run_for(TABLE_TIMEOUT + 500);   /* the cancelled check ends on its worker meanwhile */
}

static bool three_answered(void *arg)
{
    struct got **w = arg;
    return w[0]->calls + w[1]->calls + w[2]->calls >= 3;
}

/* Cancelled while queued behind busy workers: skipped; the others are answered. */
static void test_cancel_queued(void **state)
{
    (void)state;
    static const struct row slow = { "192.0.2.1", NOSPF, "a@x.slow.test", { NULL }, NONE, TEMP,
                                     NULL };
    struct got g[4];
    memset(g, 0, sizeof g);
    start(checker, &slow, &g[0]);
    start(checker, &slow, &g[1]);
    struct spf_query *q = start(checker, &rows[0], &g[2]);
    start(checker, &rows[1], &g[3]);
    spf_cancel(q);
    struct got *wait[] = { &g[0], &g[1], &g[3] };
    if (!tp_run_until(base, three_answered, wait, 5000))
        fail_msg("checks not answered");
    run_for(50);
    check_row(&slow, &g[0]);
    check_row(&slow, &g[1]);
    check_row(&rows[1], &g[3]);
    assert_int_equal(g[2].calls, 0);
    for (int i = 0; i < 4; i++)
        got_release(&g[i]);
}

/*
 * workq_free() finishes the running check (its done() runs) and drops the queued ones;
 * spf_checker_free() then frees those without calling done() (ASan: no leak).
 */
static void test_free_with_dropped(void **state)
{
    (void)state;
    struct workq *q1 = workq_new(base, 1);
    assert_non_null(q1);
    char spec[32];
    snprintf(spec, sizeof spec, "127.0.0.1:%d", dns_port);
    char *v[] = { spec };
    struct strlist servers = { v, 1 };
    struct buf err = BUF_INIT;
    struct spf_checker *c = spf_checker_new(q1, &servers, "r.test", 300, &err);
    assert_non_null(c);
    static const struct row slow = { "192.0.2.1", NOSPF, "a@x.slow.test", { NULL }, NONE, TEMP,
                                     NULL };
    struct got g[4];
    memset(g, 0, sizeof g);
    start(c, &slow, &g[0]);
    for (int i = 1; i < 4; i++)
        start(c, &rows[0], &g[i]);
    tp_sleep_ms(200);               /* the worker is waiting for slow.test now */
    workq_free(q1);
    assert_int_equal(g[0].calls, 1);
    check_row(&slow, &g[0]);
    for (int i = 1; i < 4; i++)
        assert_int_equal(g[i].calls, 0);
    spf_checker_free(c);
    for (int i = 0; i < 4; i++)
        got_release(&g[i]);
    buf_release(&err);
}

static void test_result_names(void **state)
{
    (void)state;
    static const struct { int r; const char *name; } cases[] = {
        { SPF_RES_NONE, "none" }, { SPF_RES_NEUTRAL, "neutral" }, { SPF_RES_PASS, "pass" },
        { SPF_RES_FAIL, "fail" }, { SPF_RES_SOFTFAIL, "softfail" },
        { SPF_RES_TEMPERROR, "temperror" }, { SPF_RES_PERMERROR, "permerror" },
        { 99, "temperror" }, { -1, "temperror" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(spf_result_name((enum spf_result)cases[i].r), cases[i].name);
}

static void test_auth_results(void **state)
{
    (void)state;
    char long_dom[301];
    memset(long_dom, 'a', 300);
    long_dom[300] = '\0';
    char long_sender[310], long_want[400];
    snprintf(long_sender, sizeof long_sender, "u@%s", long_dom);
    snprintf(long_want, sizeof long_want, "spf=pass smtp.mailfrom=%.255s...", long_dom);
    static const struct {
        int helo, from;
        const char *sender, *helo_name, *want;
    } fixed[] = {
        { NONE, PASS, "a@example.test", "mx.example.test", "spf=pass smtp.mailfrom=example.test" },
        { PASS, FAIL, "a@example.test", "mx.example.test", "spf=fail smtp.mailfrom=example.test" },
        { NONE, SOFT, "a@Example.Test.", "x", "spf=softfail smtp.mailfrom=Example.Test." },
        { NONE, NEUTRAL, "a\"b@c@example.test", "x", "spf=neutral smtp.mailfrom=example.test" },
        { NONE, TEMP, "example.test", "x", "spf=temperror smtp.mailfrom=example.test" },
        { NONE, PERM, "a@[192.0.2.1]", "x", "spf=permerror smtp.mailfrom=\"[192.0.2.1]\"" },
        { NONE, NONE, "a@", "x", "spf=none smtp.mailfrom=\"\"" },
        { NONE, NONE, "a@ex\"am\\ple", "x", "spf=none smtp.mailfrom=\"ex\\\"am\\\\ple\"" },
        { NONE, NONE, "a@b\r\nX-Evil: 1", "x", "spf=none smtp.mailfrom=\"b??X-Evil: 1\"" },
        { NONE, NONE, "a@b\xc3\xa9.test", "x", "spf=none smtp.mailfrom=\"b??.test\"" },
        { PASS, PASS, "", "mx.example.test", "spf=pass smtp.helo=mx.example.test" },
        { FAIL, FAIL, "", "mx.example.test", "spf=fail smtp.helo=mx.example.test" },
        { NONE, NONE, "", "[192.0.2.1]", "spf=none smtp.helo=\"[192.0.2.1]\"" },
        { NONE, NONE, "", "", "spf=none smtp.helo=\"\"" },
        { NONE, NONE, "", "my host", "spf=none smtp.helo=\"my host\"" },
        { NONE, NONE, "", "a=b;c", "spf=none smtp.helo=\"a=b;c\"" },
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        struct spf_answer a = { (enum spf_result)fixed[i].helo, (enum spf_result)fixed[i].from,
                                NULL, NULL };
        struct buf out = BUF_INIT;
        spf_auth_results(&a, fixed[i].sender, fixed[i].helo_name, &out);
        assert_string_equal(buf_cstr(&out), fixed[i].want);
        buf_release(&out);
    }
    /* long values are cut; the renderer appends to what the buffer holds */
    struct spf_answer a = { SPF_RES_NONE, SPF_RES_PASS, NULL, NULL };
    struct buf out = BUF_INIT;
    spf_auth_results(&a, long_sender, "x", &out);
    assert_string_equal(buf_cstr(&out), long_want);
    buf_reset(&out);
    buf_puts(&out, "mx.example.test; ");
    spf_auth_results(&a, "a@example.test", "x", &out);
    assert_string_equal(buf_cstr(&out), "mx.example.test; spf=pass smtp.mailfrom=example.test");
    buf_release(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_result_names),
        cmocka_unit_test(test_auth_results),
        cmocka_unit_test(test_new_errors),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_parallel),
        cmocka_unit_test(test_ipv6_server),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_cancel_running),
        cmocka_unit_test(test_cancel_queued),
        cmocka_unit_test(test_free_with_dropped),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
