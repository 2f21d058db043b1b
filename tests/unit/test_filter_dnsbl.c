/*
 * test_filter_dnsbl.c - filter_dnsbl.c: the site parser and filter matcher (tables), then whole
 * checks against a real dnsmasq (support/dnsmasq.c) serving DNSBL zones under .test.
 *
 * Peers: dnsmasq; a fake upstream on a UDP socket that answers SERVFAIL to everything (dnsmasq
 * forwards fail.test to it); a bound UDP socket that never answers, used both as a resolver that
 * times out (whose received queries show the names asked) and as the upstream of slow.test (both
 * support/fake_dns.c). The
 * client 192.0.2.1 is listed as below; 192.0.2.99 nowhere.
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
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "buf.h"
#include "conf.h"
#include "dns.h"
#include "filter_dnsbl.h"
#include "log.h"
#include "support/dnsmasq.h"
#include "support/fake_dns.h"
#include "support/peer.h"

#define V6_NIBBLES "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"

static struct event_base *base;
static int dns_port, log_fd = -1;
static struct fake_dns_pair up = FAKE_DNS_PAIR_INIT;   /* fail.test's SERVFAIL; silent: slow.test's, a resolver */
static bool starting;           /* inside dnsbl_check_start() */

/* Entries separated by spaces into l (l->v and its strings freed with strlist_free). */
static void split_list(const char *spaced, struct strlist *l)
{
    char *copy = strdup(spaced), *save = NULL;
    l->v = calloc(64, sizeof *l->v);
    l->n = 0;
    for (char *t = strtok_r(copy, " ", &save); t != NULL; t = strtok_r(NULL, " ", &save))
        l->v[l->n++] = strdup(t);
    free(copy);
}

static struct dnsbl_sites *parse_ok(const char *spaced)
{
    struct strlist l;
    struct buf err = BUF_INIT;
    split_list(spaced, &l);
    struct dnsbl_sites *s = dnsbl_sites_parse(&l, &err);
    if (s == NULL)
        fail_msg("'%s': %s", spaced, buf_cstr(&err));
    strlist_free(&l);
    buf_release(&err);
    return s;
}

/* ---- parser and matcher ---------------------------------------------------------------------- */

static void test_parse(void **state)
{
    (void)state;
#define E(x) "entry '" x "': "
#define BADW(w) "bad weight '" w "' (an integer from -100000 to 100000)"
    static const struct {
        const char *in[4];      /* the entries, NULL-terminated */
        const char *out;        /* dnsbl_sites_format(), or NULL for an error */
        const char *err;
    } cases[] = {
        { { "zen.test" }, "zen.test*1", NULL },
        { { "Zen.Test.*3" }, "zen.test*3", NULL },
        { { "wl.test*-2", "x.test*+4", "y.test*0" }, "wl.test*-2 x.test*4 y.test*0", NULL },
        { { "list.dnswl.test=127.0.[2..15].0*-2" }, "list.dnswl.test=127.0.[2..15].0*-2", NULL },
        { { "x.test=127.0.0.[1;3..5]" }, "x.test=127.0.0.[1;3..5]*1", NULL },
        { { "x.test=127.0.0.[5;1;2;3]*2" }, "x.test=127.0.0.[1..3;5]*2", NULL },
        { { "x.test=127.0.[0..255].[4..4]" }, "x.test=127.0.[0..255].4*1", NULL },
        { { "x.test=127.0.0.[0;255;254]" }, "x.test=127.0.0.[0;254..255]*1", NULL },
        { { "_bl-1.x.test=127.000.0.2*100000", "zen.test*-100000" },
          "_bl-1.x.test=127.0.0.2*100000 zen.test*-100000", NULL },
        { { "a.test=127.0.0.2*3", "b.test", "A.test=127.0.0.[3;4]" },
          "a.test=127.0.0.2*3 b.test*1 a.test=127.0.0.[3..4]*1", NULL },
        { { NULL }, NULL, "no DNSBL sites" },
        { { "" }, NULL, E("") "empty domain" },
        { { "=127.0.0.2" }, NULL, E("=127.0.0.2") "empty domain" },
        { { "*3" }, NULL, E("*3") "empty domain" },
        { { "." }, NULL, E(".") "empty domain" },
        { { "zen..test" }, NULL, E("zen..test") "bad domain name" },
        { { "zen.test/x" }, NULL, E("zen.test/x") "bad domain name" },
        { { "ok.test", "bad te\x01st" }, NULL, E("bad te\\x01st") "bad domain name" },
        { { "zen.test=127.0.0.256" }, NULL,
          E("zen.test=127.0.0.256") "filter octet '256' out of range 0..255" },
        { { "zen.test=127.0.0.[1;0002]" }, NULL,
          E("zen.test=127.0.0.[1;0002]") "filter octet '0002' out of range 0..255" },
        { { "zen.test=127.0.0.[5..2]" }, NULL, E("zen.test=127.0.0.[5..2]") "empty filter range 5..2" },
        { { "zen.test*x" }, NULL, E("zen.test*x") BADW("x") },
        { { "zen.test*" }, NULL, E("zen.test*") BADW("") },
        { { "zen.test*3x" }, NULL, E("zen.test*3x") BADW("3x") },
        { { "zen.test*-" }, NULL, E("zen.test*-") BADW("-") },
        { { "zen.test*100001" }, NULL, E("zen.test*100001") BADW("100001") },
        { { "zen.test*3=127.0.0.2" }, NULL, E("zen.test*3=127.0.0.2") BADW("3=127.0.0.2") },
        { { "zen.test=127.0.0.2x" }, NULL, E("zen.test=127.0.0.2x") "junk after filter: 'x'" },
        { { "zen.test=127.0.0.2.1*3" }, NULL, E("zen.test=127.0.0.2.1*3") "junk after filter: '.1'" },
        { { "zen.test=" }, NULL, E("zen.test=") "empty filter" },
        { { "zen.test=127.0.0" }, NULL, E("zen.test=127.0.0") "filter has 3 octets, not 4" },
        { { "zen.test=127.0.0." }, NULL, E("zen.test=127.0.0.") "filter ends early" },
        { { "zen.test=127.0.0.[1" }, NULL, E("zen.test=127.0.0.[1") "filter ends early" },
        { { "zen.test=127.0.0.[1;]" }, NULL, E("zen.test=127.0.0.[1;]") "bad filter at ']'" },
        { { "zen.test=127.0.0.[1.2]" }, NULL, E("zen.test=127.0.0.[1.2]") "bad filter at '.2]'" },
        { { "zen.test=127.0,0.1" }, NULL, E("zen.test=127.0,0.1") "bad filter at ',0.1'" },
        { { "zen.test=127.0.0.-1" }, NULL, E("zen.test=127.0.0.-1") "bad filter at '-1'" },
    };
#undef E
#undef BADW
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct strlist l = { (char **)cases[i].in, 0 };
        while (l.n < 4 && cases[i].in[l.n] != NULL)
            l.n++;
        struct buf err = BUF_INIT, out = BUF_INIT;
        struct dnsbl_sites *s = dnsbl_sites_parse(&l, &err);
        if (s != NULL)
            dnsbl_sites_format(s, &out);
        if (cases[i].out != NULL ? s == NULL || strcmp(buf_cstr(&out), cases[i].out) != 0
                                 : s != NULL || strcmp(buf_cstr(&err), cases[i].err) != 0)
            fail_msg("case %zu: got '%s' / error '%s'", i, buf_cstr(&out), buf_cstr(&err));
        dnsbl_sites_free(s);
        buf_release(&err);
        buf_release(&out);
    }
    dnsbl_sites_free(NULL);
}

static void test_match(void **state)
{
    (void)state;
    static const struct {
        const char *entry;
        const char *addr;
        bool match;
    } cases[] = {
        { "t.test=127.0.0.2", "127.0.0.2", true },
        { "t.test=127.0.0.2", "127.0.0.3", false },
        { "t.test=127.0.0.2", "127.0.1.2", false },
        { "t.test=127.0.0.2", "2.0.0.127", false },
        { "t.test=127.0.[2..15].0", "127.0.2.0", true },
        { "t.test=127.0.[2..15].0", "127.0.15.0", true },
        { "t.test=127.0.[2..15].0", "127.0.16.0", false },
        { "t.test=127.0.[2..15].0", "127.0.1.0", false },
        { "t.test=127.0.[2..15].0", "127.0.5.1", false },
        { "t.test=127.0.0.[1;3..5]", "127.0.0.1", true },
        { "t.test=127.0.0.[1;3..5]", "127.0.0.2", false },
        { "t.test=127.0.0.[1;3..5]", "127.0.0.3", true },
        { "t.test=127.0.0.[1;3..5]", "127.0.0.5", true },
        { "t.test=127.0.0.[1;3..5]", "127.0.0.6", false },
        { "t.test=127.0.0.[0;255]", "127.0.0.0", true },
        { "t.test=127.0.0.[0;255]", "127.0.0.255", true },
        { "t.test=127.0.0.[0;255]", "127.0.0.128", false },
        { "t.test=[0..255].[0..255].[0..255].[0..255]", "10.1.2.3", true },
        { "t.test", "127.0.0.77", true },
        { "t.test", "10.1.2.3", true },     /* the matcher; the verdict rejects such answers */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dnsbl_sites *s = parse_ok(cases[i].entry);
        struct in_addr a;
        assert_int_equal(inet_pton(AF_INET, cases[i].addr, &a), 1);
        if (dnsbl_sites_match(s, 0, a) != cases[i].match)
            fail_msg("case %zu: %s vs %s", i, cases[i].entry, cases[i].addr);
        assert_false(dnsbl_sites_match(s, 1, a));  /* no such entry */
        dnsbl_sites_free(s);
    }
}

/* ---- peers ----------------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names of the queries the silent server received since last asked, sorted. */
static void silent_drain(struct buf *names)
{
    char *v[16];
    size_t n = 0;
    unsigned char pkt[512];
    ssize_t len;
    while (n < 16 && (len = recv(up.silent.fd, pkt, sizeof pkt, MSG_DONTWAIT)) > 12) {
        struct buf name = BUF_INIT;
        for (ssize_t i = 12; i < len && pkt[i] != 0 && i + 1 + pkt[i] <= len; i += 1 + pkt[i])
            buf_printf(&name, "%s%.*s", name.len ? "." : "", pkt[i], (const char *)pkt + i + 1);
        v[n++] = buf_steal(&name);
    }
    qsort(v, n, sizeof *v, cmp_str);
    for (size_t i = 0; i < n; i++) {
        buf_printf(names, "%s%s", i ? " " : "", v[i]);
        free(v[i]);
    }
}

static int group_setup(void **state)
{
    (void)state;
    base = event_base_new();
    fake_dns_pair_start(&up, base, false, "fail.test", "slow.test");
    log_fd = memfd_create("dnsbl-log", MFD_CLOEXEC);
    log_init("test", LOG_INFO, log_fd);
    const char *const args[] = {
        up.servfail_arg, up.silent_arg,
        "--host-record=1.2.0.192.zen.test,127.0.0.2",
        "--host-record=1.2.0.192.bl.test,127.0.0.4",
        "--host-record=1.2.0.192.wl.test,127.0.10.1",
        "--host-record=1.2.0.192.multi.test,127.0.0.3",
        "--host-record=1.2.0.192.multi.test,127.0.0.9",
        "--host-record=1.2.0.192.pub.test,127.255.255.254",
        "--host-record=1.2.0.192.wild.test,10.0.0.1",
        "--host-record=1.2.0.192.mixed.test,127.0.0.2",
        "--host-record=1.2.0.192.mixed.test,10.0.0.1",
        "--host-record=" V6_NIBBLES ".zen.test,127.0.0.2",
        NULL,
    };
    dns_port = tdm_start(args);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tdm_stop();
    fake_dns_pair_stop(&up);
    close(log_fd);
    event_base_free(base);
    return 0;
}

/* ---- checks ---------------------------------------------------------------------------------- */

/* What done saw. */
struct got {
    int calls;
    bool early;                 /* called inside dnsbl_check_start() */
    int score;
    unsigned listed, errors, timeouts;
    char reasons[256];
};

static void got_cb(const struct dnsbl_verdict *v, void *arg)
{
    struct got *g = arg;
    g->calls++;
    g->early |= starting;
    g->score = v->score;
    g->listed = v->listed;
    g->errors = v->errors;
    g->timeouts = v->timeouts;
    snprintf(g->reasons, sizeof g->reasons, "%s", buf_cstr(&v->reasons));
}

static void run_for(long long ms)
{
    tp_run_for(base, ms);
}

static void run_until_called(const struct got *g, long long ms)
{
    tp_run_count(base, &g->calls, 1, ms);
}

static struct dns *resolver(int port, long long timeout_ms)
{
    char server[64];
    snprintf(server, sizeof server, "127.0.0.1:%d", port);
    char *v[1] = { server };
    struct strlist l = { v, 1 };
    struct buf err = BUF_INIT;
    struct dns *dns = dns_new(base, &l, timeout_ms, 1, &err);
    if (dns == NULL)
        fail_msg("dns_new: %s", buf_cstr(&err));
    buf_release(&err);
    return dns;
}

/* An IP literal as a socket address; anything else as an AF_UNIX one. */
static void client_addr(const char *ip, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)ss)->sin_addr) == 1)
        ss->ss_family = AF_INET;
    else if (inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1)
        ss->ss_family = AF_INET6;
    else
        ss->ss_family = AF_UNIX;
}

static struct dnsbl_check *start(struct dns *dns, const struct dnsbl_sites *s, const char *ip,
                                 struct got *g)
{
    struct sockaddr_storage ss;
    client_addr(ip, &ss);
    starting = true;
    struct dnsbl_check *c = dnsbl_check_start(dns, s, (struct sockaddr *)&ss, got_cb, g);
    starting = false;
    assert_non_null(c);
    assert_int_equal(g->calls, 0);
    return c;
}

/* How many times needle occurs in the log written since the last log_reset(). */
static int log_count(const char *needle)
{
    char text[8192];
    ssize_t n = pread(log_fd, text, sizeof text - 1, 0);
    text[n > 0 ? n : 0] = '\0';
    int count = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
        count++;
    return count;
}

static void log_reset(void)
{
    assert_int_equal(ftruncate(log_fd, 0), 0);
    lseek(log_fd, 0, SEEK_SET);
}

static void test_checks(void **state)
{
    (void)state;
#define L(d, a) "\"domain\":\"" d "\",\"answer\":\"" a "\""
#define F(d) "\"event\":\"dnsbl_lookup_failed\",\"client\":\"192.0.2.1\",\"domain\":\"" d "\""
    static const struct {
        const char *client;     /* an IP literal; "unix" = not an IP address */
        const char *sites;
        bool silent;            /* resolver: the silent server (200 ms, 1 try), not dnsmasq */
        int score;
        const char *reasons;
        unsigned listed, errors, timeouts;
        const char *log;        /* text the log must hold exactly once, or NULL */
        const char *asked;      /* silent: the names it was asked, sorted */
    } cases[] = {
        { "192.0.2.1", "zen.test*3 bl.test*2", false, 5,
          "zen.test=127.0.0.2*3 bl.test=127.0.0.4*2", 2, 0, 0, NULL, NULL },
        { "192.0.2.1", "zen.test*3 wl.test*-2", false, 1,
          "zen.test=127.0.0.2*3 wl.test=127.0.10.1*-2", 2, 0, 0, NULL, NULL },
        { "192.0.2.1", "multi.test=127.0.0.2*4 multi.test=127.0.0.[3;5]*1 "
          "multi.test=127.0.0.[8..10]*2 multi.test*10 nx.test*7", false, 13,
          "multi.test=127.0.0.3*1 multi.test=127.0.0.9*2 multi.test=127.0.0.3*10", 3, 0, 0, NULL,
          NULL },   /* an entry counts once, however many answers match (dnsmasq: 3, then 9) */
        { "192.0.2.1", "pub.test*5 zen.test*1", false, 1, "zen.test=127.0.0.2*1", 1, 1, 0,
          L("pub.test", "127.255.255.254"), NULL },
        { "192.0.2.1", "wild.test*5", false, 0, "", 0, 1, 0, L("wild.test", "10.0.0.1"), NULL },
        { "192.0.2.1", "mixed.test=127.0.0.2*5 mixed.test*1", false, 0, "", 0, 1, 0,
          L("mixed.test", "10.0.0.1"), NULL },
        { "192.0.2.1", "nx.test*5", false, 0, "", 0, 0, 0, NULL, NULL },
        { "192.0.2.99", "zen.test*3 bl.test*2 wl.test*-2", false, 0, "", 0, 0, 0, NULL, NULL },
        { "192.0.2.1", "fail.test*5 zen.test*3", false, 3, "zen.test=127.0.0.2*3", 1, 1, 0,
          F("fail.test"), NULL },
        { "2001:db8::1", "zen.test*3 bl.test*2", false, 3, "zen.test=127.0.0.2*3", 1, 0, 0,
          NULL, NULL },
        { "::ffff:192.0.2.1", "zen.test*3 bl.test*2", false, 5,
          "zen.test=127.0.0.2*3 bl.test=127.0.0.4*2", 2, 0, 0, NULL, NULL },
        { "unix", "zen.test*3", false, 0, "", 0, 0, 0, NULL, NULL },
        { "192.0.2.1", "zen.test*3 zen.test=127.0.0.2*1 bl.test*2", true, 0, "", 0, 0, 2,
          F("zen.test"),
          "1.2.0.192.bl.test 1.2.0.192.zen.test" },
        { "2001:db8::1", "Zen.Test.", true, 0, "", 0, 0, 1, NULL, V6_NIBBLES ".zen.test" },
        { "::ffff:192.0.2.1", "zen.test", true, 0, "", 0, 0, 1, NULL, "1.2.0.192.zen.test" },
    };
#undef L
#undef F
    struct dns *fast = resolver(dns_port, 1000), *silent = resolver(up.silent.port, 200);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct dnsbl_sites *s = parse_ok(cases[i].sites);
        struct got g = { 0 };
        struct buf asked = BUF_INIT;
        silent_drain(&asked);
        buf_reset(&asked);
        log_reset();
        start(cases[i].silent ? silent : fast, s, cases[i].client, &g);
        run_until_called(&g, 2000);
        run_for(20);
        if (cases[i].silent)
            silent_drain(&asked);
        if (g.calls != 1 || g.early || g.score != cases[i].score
            || strcmp(g.reasons, cases[i].reasons) != 0 || g.listed != cases[i].listed
            || g.errors != cases[i].errors || g.timeouts != cases[i].timeouts
            || (cases[i].log != NULL && log_count(cases[i].log) != 1)
            || (cases[i].asked != NULL && strcmp(buf_cstr(&asked), cases[i].asked) != 0))
            fail_msg("case %zu (%s %s): calls %d early %d score %d '%s' listed %u errors %u "
                     "timeouts %u, log has it %d times, asked '%s'", i, cases[i].client,
                     cases[i].sites, g.calls, g.early, g.score, g.reasons, g.listed, g.errors,
                     g.timeouts, cases[i].log ? log_count(cases[i].log) : -1, buf_cstr(&asked));
        buf_release(&asked);
        dnsbl_sites_free(s);
    }
    dns_free(fast);
    dns_free(silent);
}

/* finish_now: the verdict at once from what answered; the slow domain counts as a timeout. */
static void test_finish_now(void **state)
{
    (void)state;
    struct dns *dns = resolver(dns_port, 1000);
    struct dnsbl_sites *s = parse_ok("zen.test*3 slow.test*5 bl.test*2");
    struct got g = { 0 };
    struct dnsbl_check *c = start(dns, s, "192.0.2.1", &g);
    run_for(300);               /* dnsmasq answers zen and bl; slow.test's upstream is silent */
    assert_int_equal(g.calls, 0);
    dnsbl_check_finish_now(c);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.score, 5);
    assert_string_equal(g.reasons, "zen.test=127.0.0.2*3 bl.test=127.0.0.4*2");
    assert_int_equal(g.timeouts, 1);
    assert_int_equal(g.errors, 0);
    run_for(1100);              /* past the lookup's deadline: nothing more comes */
    assert_int_equal(g.calls, 1);
    dns_free(dns);
    dnsbl_sites_free(s);
}

/* cancel: done never comes, whether nothing, some or all but one domain had answered. */
static void test_cancel(void **state)
{
    (void)state;
    struct dns *dns = resolver(dns_port, 1000);
    struct dnsbl_sites *s = parse_ok("zen.test*3 slow.test*5");
    struct got g[2] = { { 0 }, { 0 } };
    dnsbl_check_cancel(start(dns, s, "192.0.2.1", &g[0]));
    struct dnsbl_check *c = start(dns, s, "192.0.2.1", &g[1]);
    run_for(200);
    dnsbl_check_cancel(c);
    dnsbl_check_cancel(NULL);
    run_for(1100);
    assert_int_equal(g[0].calls, 0);
    assert_int_equal(g[1].calls, 0);
    dns_free(dns);
    dnsbl_sites_free(s);
}

/* dns_free with checks pending: each ends there with what it has, the rest as timeouts. */
static void test_dns_free(void **state)
{
    (void)state;
    struct dns *dns = resolver(dns_port, 1000);
    struct dnsbl_sites *s = parse_ok("zen.test*3 slow.test*5");
    struct got g[2] = { { 0 }, { 0 } };
    start(dns, s, "192.0.2.1", &g[0]);
    run_for(200);
    start(dns, s, "192.0.2.1", &g[1]);      /* nothing answered yet */
    dns_free(dns);
    assert_int_equal(g[0].calls, 1);
    assert_int_equal(g[0].score, 3);
    assert_string_equal(g[0].reasons, "zen.test=127.0.0.2*3");
    assert_int_equal(g[0].timeouts, 1);
    assert_int_equal(g[1].calls, 1);
    assert_int_equal(g[1].score, 0);
    assert_int_equal(g[1].timeouts, 2);
    run_for(50);
    assert_int_equal(g[0].calls + g[1].calls, 2);
    dnsbl_sites_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_checks),
        cmocka_unit_test(test_finish_now),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_dns_free),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
