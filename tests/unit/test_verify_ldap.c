/*
 * test_verify_ldap.c - the LDAP recipient verification source (mailbox-bridge/verify_ldap.c)
 * against a private slapd and against the scripted LDAP server of support/slapd.h on the test's
 * own loop (silent, late, out of order, failing, disconnecting, not reading, not accepting). Log
 * lines go to a file of their own, so a test can check what the source logged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "support/peer.h"
#include "support/slapd.h"
#include "verify_sources.h"

static struct event_base *base;
static char log_path[] = "/tmp/mxg-test-ldap-log-XXXXXX";
static int log_fd = -1;

/* ---- lookups and the loop ---- */

struct res {
    int called;                 /* times done ran (must end as 1) */
    enum verify_answer a;
    long long at_ms;            /* when done ran */
};

static void on_done(enum verify_answer a, void *arg)
{
    struct res *r = arg;
    r->called++;
    r->a = a;
    r->at_ms = clock_mono_ms();
}

/* An address as the edge hands it over: local part, domain and "local@domain". */
struct addr {
    struct smtp_path p;
    char mailbox[256];
    char local[128];
    char domain[128];
};

static void addr_set(struct addr *a, const char *mailbox)
{
    memset(a, 0, sizeof *a);
    snprintf(a->mailbox, sizeof a->mailbox, "%s", mailbox);
    const char *at = strrchr(mailbox, '@');
    assert_non_null(at);
    snprintf(a->local, sizeof a->local, "%.*s", (int)(at - mailbox), mailbox);
    snprintf(a->domain, sizeof a->domain, "%s", at + 1);
    a->p.mailbox = a->mailbox;
    a->p.local = a->local;
    a->p.domain = a->domain;
}

/* Runs the loop until every r[i] is answered or ms have passed. */
static bool run_until(struct res *r, size_t n, long long ms)
{
    return tp_run_all(base, r, n, sizeof *r, offsetof(struct res, called), ms) == n;
}

/* Runs the loop for ms whatever happens. */
static void run_for(long long ms)
{
    tp_run_for(base, ms);
}

/* Starts n lookups of mailbox (a[i] for r[i], zeroed first) with done. */
static void lookup_n(struct verify_source *s, struct addr *a, struct res *r, size_t n, const char *mailbox,
                     verify_done_fn *done)
{
    memset(r, 0, n * sizeof *r);
    for (size_t i = 0; i < n; i++) {
        addr_set(&a[i], mailbox);
        s->lookup(s, &a[i].p, done, &r[i]);
    }
}

/* Every r[i] was answered exactly once, with want. */
static void expect_all(const struct res *r, size_t n, enum verify_answer want)
{
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(r[i].called, 1);
        assert_int_equal(r[i].a, want);
    }
}

/* One lookup, run to its end (5 s at most); returns the answer. */
static enum verify_answer ask(struct verify_source *s, const char *mailbox)
{
    struct addr a;
    addr_set(&a, mailbox);
    struct res r = { 0 };
    s->lookup(s, &a.p, on_done, &r);
    if (!run_until(&r, 1, 5000))
        fail_msg("no answer for %s", mailbox);
    assert_int_equal(r.called, 1);
    return r.a;
}

static struct verify_source *make(const char *uri, const char *dn, const char *pw, const char *search_base,
                                  const char *tmpl, long long timeout_ms)
{
    struct buf err = BUF_INIT;
    struct verify_source *s = verify_ldap_new(base, uri, dn, pw, search_base, tmpl, timeout_ms, &err);
    if (s == NULL)
        fail_msg("verify_ldap_new: %s", buf_cstr(&err));
    buf_release(&err);
    assert_string_equal(s->name, "ldap");
    assert_true(s->cacheable);
    return s;
}

static struct verify_source *make_root(const char *tmpl)
{
    return make(tsl_uri, TSL_ROOT_DN, TSL_ROOT_PW, TSL_BASE, tmpl, 3000);
}

/* The log written since the test began (log lines go to a file of their own). */
static char *read_log(void)
{
    off_t len = lseek(log_fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)len + 1);
    assert_non_null(text);
    assert_int_equal(pread(log_fd, text, (size_t)len, 0), len);
    return text;
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(ftruncate(log_fd, 0), 0);
    assert_int_equal(lseek(log_fd, 0, SEEK_SET), 0);
    tsl_start();
    return 0;
}

/* ---- construction ---- */

struct bad_case {
    const char *uri;
    const char *tmpl;
    long long timeout_ms;
    const char *err;
};

static void test_bad_settings(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        { "http://127.0.0.1/", "(mail=%s)", 1000,
          "ldap uri must start with ldap:// or ldapi:// (ldaps:// is not supported)" },
        { "ldaps://127.0.0.1/", "(mail=%s)", 1000,
          "ldap uri scheme ldaps is not supported (libldap's TLS handshake would block): use ldap:// or "
          "ldapi://" },
        { "", "(mail=%s)", 1000, "ldap uri must start with ldap:// or ldapi:// (ldaps:// is not supported)" },
        { "ldap://127.0.0.1:99999999999/", "(mail=%s)", 1000, "ldap uri port must be 1 to 65535" },
        { "ldap://127.0.0.1:70000/", "(mail=%s)", 1000, "ldap uri port must be 1 to 65535" },
        { "ldap://127.0.0.1:-5/", "(mail=%s)", 1000, "ldap uri port must be 1 to 65535" },
        { "ldap://127.0.0.1 ldap://127.0.0.2", "(mail=%s)", 1000,
          "ldap uri is not a valid LDAP URL (ldap_url_parse error 5)" },
        { "ldap://127.0.0.1/???" "?!StartTLS", "(mail=%s)", 1000,
          "ldap uri must name only the server (the search base and filter are settings of their own)" },
        { "ldap://127.0.0.1:x/", "(mail=%s)", 1000,
          "ldap uri is not a valid LDAP URL (ldap_url_parse error 5)" },
        { "ldap://ldap.example.test/", "(mail=%s)", 1000,
          "ldap uri host must be an IP address, not ldap.example.test (libldap resolves names with a "
          "blocking getaddrinfo)" },
        { "ldap:///", "(mail=%s)", 1000, "ldap uri has no host" },
        { "ldap://127.0.0.1/dc=example,dc=test", "(mail=%s)", 1000,
          "ldap uri must name only the server (the search base and filter are settings of their own)" },
        { "ldap://127.0.0.1/??sub?(uid=x)", "(mail=%s)", 1000,
          "ldap uri must name only the server (the search base and filter are settings of their own)" },
        { "ldap://127.0.0.1/", "", 1000, "ldap filter template is empty" },
        { "ldap://127.0.0.1/", "(mail=%x)", 1000,
          "ldap filter template has an unknown sequence %x (use %s, %u, %d or %%)" },
        { "ldap://127.0.0.1/", "(mail=%S)", 1000,
          "ldap filter template has an unknown sequence %S (use %s, %u, %d or %%)" },
        { "ldap://127.0.0.1/", "(mail=%s)%", 1000, "ldap filter template ends with a lone %" },
        { "ldap://127.0.0.1/", "(objectClass=*)", 1000,
          "ldap filter template does not use the address (%s, %u or %d)" },
        { "ldap://127.0.0.1/", "(mail=%s", 1000,
          "ldap filter template does not make a valid RFC 4515 filter (tried (mail=x@x.test)" },
        { "ldap://127.0.0.1/", "mail=%s)(", 1000,
          "ldap filter template does not make a valid RFC 4515 filter (tried mail=x@x.test)()" },
        { "ldap://127.0.0.1/", "(mail=%s)", 0, "ldap timeout must be positive" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf err = BUF_INIT;
        struct verify_source *s = verify_ldap_new(base, cases[i].uri, "", "", TSL_BASE, cases[i].tmpl,
                                                  cases[i].timeout_ms, &err);
        if (s != NULL)
            fail_msg("case %zu (%s / %s) was accepted", i, cases[i].uri, cases[i].tmpl);
        if (strcmp(buf_cstr(&err), cases[i].err) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, buf_cstr(&err), cases[i].err);
        buf_release(&err);
    }
    struct buf err = BUF_INIT;
    assert_null(verify_ldap_new(base, "ldap://127.0.0.1/", "", "", NULL, "(mail=%s)", 1000, &err));
    assert_string_equal(buf_cstr(&err), "ldap search base is missing");
    buf_release(&err);
    /* Accepted: IPv6 literal, no port, ldapi, %% and every name. */
    static const char *const good[][2] = {
        { "ldap://[::1]:389/", "(mail=%s)" },
        { "ldap://127.0.0.1", "(&(uid=%u)(mail=*@%d)(description=100%%))" },
        { "ldapi://%2Ftmp%2Fx", "(mail=%s)" },
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct buf err = BUF_INIT;
        struct verify_source *s = verify_ldap_new(base, good[i][0], "", "", TSL_BASE, good[i][1], 1000, &err);
        if (s == NULL)
            fail_msg("%s / %s refused: %s", good[i][0], good[i][1], buf_cstr(&err));
        s->free(s);
        buf_release(&err);
    }
}

/* ---- answers from slapd ---- */

struct answer_case {
    const char *mailbox;
    enum verify_answer want;
};

static void check_table(struct verify_source *s, const struct answer_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        enum verify_answer got = ask(s, c[i].mailbox);
        if (got != c[i].want)
            fail_msg("%s: got %s, want %s", c[i].mailbox, verify_answer_name(got),
                     verify_answer_name(c[i].want));
    }
}

static void test_mail_filter(void **state)
{
    (void)state;
    static const struct answer_case cases[] = {
        { "bob@example.test", VERIFY_EXISTS },
        { "carol@example.test", VERIFY_EXISTS },
        { "BOB@Example.Test", VERIFY_EXISTS },      /* mail matches ignoring case */
        { "nobody@example.test", VERIFY_DUNNO },
        { "bob@other.test", VERIFY_DUNNO },
    };
    struct verify_source *s = make_root("(mail=%s)");
    check_table(s, cases, sizeof cases / sizeof cases[0]);
    s->free(s);
}

static void test_local_and_domain(void **state)
{
    (void)state;
    static const struct answer_case cases[] = {
        { "bob@example.test", VERIFY_EXISTS },
        { "carol@example.test", VERIFY_EXISTS },
        { "bob@other.test", VERIFY_DUNNO },
        { "nobody@example.test", VERIFY_DUNNO },
        { "*@example.test", VERIFY_DUNNO },         /* unescaped, uid=* would match everyone */
        { "bob@*", VERIFY_DUNNO },                  /* unescaped, mail=*@* would match */
        { "b*@example.test", VERIFY_DUNNO },
    };
    struct verify_source *s = make_root("(&(uid=%u)(mail=*@%d))");
    check_table(s, cases, sizeof cases / sizeof cases[0]);
    s->free(s);
}

static void test_escaping(void **state)
{
    (void)state;
    static const struct answer_case cases[] = {
        { "ab@example.test", VERIFY_EXISTS },
        { "a*@example.test", VERIFY_DUNNO },        /* a substring filter would find ab@ */
        { "*@example.test", VERIFY_DUNNO },
        { "pa(r)en*x@example.test", VERIFY_EXISTS },   /* unescaped: a filter syntax error */
        { "pa(r)en*@example.test", VERIFY_DUNNO },
        { "back\\slash@example.test", VERIFY_EXISTS },
        { "back\\2a@example.test", VERIFY_DUNNO },  /* a backslash is not taken as an escape */
    };
    struct verify_source *s = make_root("(mail=%s)");
    check_table(s, cases, sizeof cases / sizeof cases[0]);
    s->free(s);
}

static void test_percent(void **state)
{
    (void)state;
    static const struct answer_case cases[] = {
        { "bob@example.test", VERIFY_EXISTS },      /* description: 100% */
        { "carol@example.test", VERIFY_DUNNO },
    };
    struct verify_source *s = make_root("(&(mail=%s)(description=100%%))");
    check_table(s, cases, sizeof cases / sizeof cases[0]);
    s->free(s);
}

static void test_more_than_one_entry(void **state)
{
    (void)state;
    static const struct answer_case cases[] = {
        { "anyone@example.test", VERIFY_EXISTS },   /* six entries, sizelimit 1: sizeLimitExceeded */
        { "anyone@nowhere.test", VERIFY_DUNNO },
    };
    struct verify_source *s = make_root("(mail=*@%d)");
    check_table(s, cases, sizeof cases / sizeof cases[0]);
    s->free(s);
}

static void test_search_base(void **state)
{
    (void)state;
    /* noSuchObject for the base: the directory does not know the address. */
    struct verify_source *s = make(tsl_uri, TSL_ROOT_DN, TSL_ROOT_PW, "ou=nowhere," TSL_BASE, "(mail=%s)",
                                   3000);
    assert_int_equal(ask(s, "bob@example.test"), VERIFY_DUNNO);
    s->free(s);
    /* Another error result (invalidDNSyntax) is TEMPFAIL for the lookup, the connection stays. */
    s = make(tsl_uri, TSL_ROOT_DN, TSL_ROOT_PW, "not a dn", "(mail=%s)", 3000);
    assert_int_equal(ask(s, "bob@example.test"), VERIFY_TEMPFAIL);
    assert_int_equal(ask(s, "bob@example.test"), VERIFY_TEMPFAIL);   /* not throttled: still connected */
    s->free(s);
    char *log = read_log();
    assert_non_null(strstr(log, "\"result\":\"Invalid DN syntax\""));
    assert_non_null(strstr(log, "\"detail\":\"invalid DN\""));
    free(log);
}

static void test_binds(void **state)
{
    (void)state;
    /* The rootdn sees ou=staff; anonymous (bind_dn "", a password or not) does not. */
    struct verify_source *s = make_root("(mail=%s)");
    assert_int_equal(ask(s, "dave@example.test"), VERIFY_EXISTS);
    s->free(s);
    s = make(tsl_uri, "", "", TSL_BASE, "(mail=%s)", 3000);
    assert_int_equal(ask(s, "dave@example.test"), VERIFY_DUNNO);
    assert_int_equal(ask(s, "bob@example.test"), VERIFY_EXISTS);
    s->free(s);
    s = make(tsl_uri, "", "ignored-password", TSL_BASE, "(mail=%s)", 3000);
    assert_int_equal(ask(s, "dave@example.test"), VERIFY_DUNNO);
    assert_int_equal(ask(s, "bob@example.test"), VERIFY_EXISTS);
    s->free(s);
    /* A wrong password: TEMPFAIL, never DUNNO. */
    s = make(tsl_uri, TSL_ROOT_DN, "wrong", TSL_BASE, "(mail=%s)", 3000);
    assert_int_equal(ask(s, "bob@example.test"), VERIFY_TEMPFAIL);
    s->free(s);
    char *log = read_log();
    assert_non_null(strstr(log, "\"event\":\"verify_ldap_down\""));
    assert_non_null(strstr(log, "\"error\":\"bind as \\\"cn=admin,dc=example,dc=test\\\" refused\""));
    assert_non_null(strstr(log, "\"result\":\"Invalid credentials\""));
    free(log);
}

static void test_ldapi(void **state)
{
    (void)state;
    struct verify_source *s = make(tsl_ldapi_uri, TSL_ROOT_DN, TSL_ROOT_PW, TSL_BASE, "(mail=%s)", 3000);
    assert_int_equal(ask(s, "bob@example.test"), VERIFY_EXISTS);
    assert_int_equal(ask(s, "nobody@example.test"), VERIFY_DUNNO);
    s->free(s);
}

static void test_server_down_and_back(void **state)
{
    (void)state;
    struct verify_source *s = make_root("(mail=%s)");
    assert_int_equal(ask(s, "bob@example.test"), VERIFY_EXISTS);
    tsl_stop();
    /* Two searches on the closed connection before the loop notices: both TEMPFAIL. */
    struct addr a;
    addr_set(&a, "bob@example.test");
    struct res two[2];
    memset(two, 0, sizeof two);
    s->lookup(s, &a.p, on_done, &two[0]);
    s->lookup(s, &a.p, on_done, &two[1]);
    assert_true(run_until(two, 2, 2000));
    expect_all(two, 2, VERIFY_TEMPFAIL);
    run_for(1100);
    assert_int_equal(ask(s, "bob@example.test"), VERIFY_TEMPFAIL);        /* connection refused */
    /* Within a second of that attempt: TEMPFAIL at once, before lookup returns, no new attempt. */
    struct res r = { 0 };
    s->lookup(s, &a.p, on_done, &r);
    assert_int_equal(r.called, 1);
    assert_int_equal(r.a, VERIFY_TEMPFAIL);
    tsl_start();                                                            /* the same port */
    run_for(1100);
    assert_int_equal(ask(s, "bob@example.test"), VERIFY_EXISTS);
    assert_int_equal(ask(s, "nobody@example.test"), VERIFY_DUNNO);
    s->free(s);
}

static void test_parallel_slapd(void **state)
{
    (void)state;
    enum { N = 30 };
    static const char *const who[3] = { "bob@example.test", "nobody@example.test", "carol@example.test" };
    struct verify_source *s = make_root("(mail=%s)");
    struct addr a[N];
    struct res r[N];
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        addr_set(&a[i], who[i % 3]);
        s->lookup(s, &a[i].p, on_done, &r[i]);
    }
    assert_true(run_until(r, N, 5000));
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].called, 1);
        assert_int_equal(r[i].a, i % 3 == 1 ? VERIFY_DUNNO : VERIFY_EXISTS);
    }
    s->free(s);
}

/* ---- scripted peers ---- */

static void test_parallel_one_connection(void **state)
{
    (void)state;
    enum { N = 30 };
    struct tsl_peer pe;
    tsl_peer_start(&pe, base, TSL_PEER_REVERSE);
    pe.hold_n = N;
    struct verify_source *s = make(pe.uri, "", "", TSL_BASE, "(mail=%s)", 3000);
    struct addr a[N];
    struct res r[N];
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        char m[64];
        snprintf(m, sizeof m, "%s%d@example.test", i % 2 == 0 ? "yes" : "no", i);
        addr_set(&a[i], m);
        s->lookup(s, &a[i].p, on_done, &r[i]);
    }
    assert_true(run_until(r, N, 5000));
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].called, 1);
        assert_int_equal(r[i].a, i % 2 == 0 ? VERIFY_EXISTS : VERIFY_DUNNO);
    }
    assert_int_equal(pe.nconns, 1);
    assert_int_equal(pe.searches, N);
    s->free(s);
    tsl_peer_stop(&pe);
}

struct code_case {
    int code;
    bool entry;
    bool reference;
    bool malformed;
    enum verify_answer want;
};

static void test_result_codes(void **state)
{
    (void)state;
    static const struct code_case cases[] = {
        { 0, false, false, false, VERIFY_DUNNO },         /* success, no entry */
        { 0, true, false, false, VERIFY_EXISTS },
        { 4, false, false, false, VERIFY_EXISTS },        /* sizeLimitExceeded implies an entry */
        { 4, true, false, false, VERIFY_EXISTS },
        { 32, false, false, false, VERIFY_DUNNO },        /* noSuchObject: the base */
        { 3, true, false, false, VERIFY_EXISTS },         /* timeLimitExceeded after an entry: found */
        { 3, false, false, false, VERIFY_TEMPFAIL },
        { 10, false, false, false, VERIFY_TEMPFAIL },     /* referral: not chased */
        { 50, false, false, false, VERIFY_TEMPFAIL },     /* insufficientAccessRights */
        { 51, false, false, false, VERIFY_TEMPFAIL },     /* busy */
        { 80, false, false, false, VERIFY_TEMPFAIL },     /* other */
        { 0, false, true, false, VERIFY_DUNNO },          /* a search reference is not an entry */
        { 0, true, true, false, VERIFY_EXISTS },
        { 0, false, false, true, VERIFY_TEMPFAIL },       /* a result without all its fields */
    };
    struct tsl_peer pe;
    tsl_peer_start(&pe, base, TSL_PEER_SCRIPT);
    pe.text = "bad\x01news\nforged";
    struct verify_source *s = make(pe.uri, "", "", TSL_BASE, "(mail=%s)", 3000);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pe.code = cases[i].code;
        pe.entry = cases[i].entry;
        pe.reference = cases[i].reference;
        pe.malformed = cases[i].malformed;
        enum verify_answer got = ask(s, "bob@example.test");
        if (got != cases[i].want)
            fail_msg("case %zu: got %s", i, verify_answer_name(got));
    }
    assert_int_equal(pe.nconns, 1);     /* a failed search leaves the connection up */
    s->free(s);
    tsl_peer_stop(&pe);
    /* The server's text is escaped: no raw control character, no forged line. */
    char *log = read_log();
    assert_non_null(strstr(log, "\"detail\":\"bad\\\\x01news\\\\x0aforged\""));
    assert_null(strstr(log, "\nforged"));
    free(log);
}

static void test_notice_of_disconnection(void **state)
{
    (void)state;
    struct tsl_peer pe;
    tsl_peer_start(&pe, base, TSL_PEER_NOTICE);
    struct verify_source *s = make(pe.uri, "", "", TSL_BASE, "(mail=%s)", 3000);
    struct addr a[3];
    struct res r[3];
    lookup_n(s, a, r, 3, "bob@example.test", on_done);
    assert_true(run_until(r, 3, 2000));
    expect_all(r, 3, VERIFY_TEMPFAIL);
    s->free(s);
    tsl_peer_stop(&pe);
    char *log = read_log();
    assert_non_null(strstr(log, "\"error\":\"notice of disconnection\",\"code\":52"));
    free(log);
}

static void test_garbage_reply(void **state)
{
    (void)state;
    struct tsl_peer pe;
    tsl_peer_start(&pe, base, TSL_PEER_GARBAGE);
    struct verify_source *s = make(pe.uri, "", "", TSL_BASE, "(mail=%s)", 3000);
    long long t0 = clock_mono_ms();
    assert_int_equal(ask(s, "bob@example.test"), VERIFY_TEMPFAIL);
    assert_true(clock_mono_ms() - t0 < 2000);
    run_for(50);
    assert_int_equal(pe.closed, 1);     /* the connection was dropped */
    s->free(s);
    tsl_peer_stop(&pe);
}

/* A listener that accepts and never answers (not even the bind), then one that binds and goes quiet. */
static void test_timeout(void **state)
{
    (void)state;
    static const enum tsl_peer_mode modes[] = { TSL_PEER_SILENT, TSL_PEER_NO_SEARCH };
    const long long timeout = 300;
    for (size_t m = 0; m < 2; m++) {
        struct tsl_peer pe;
        tsl_peer_start(&pe, base, modes[m]);
            struct verify_source *s = make(pe.uri, "", "", TSL_BASE, "(mail=%s)", timeout);
        struct addr a;
        addr_set(&a, "bob@example.test");
        struct res r = { 0 };
        long long t0 = clock_mono_ms();
        s->lookup(s, &a.p, on_done, &r);
        assert_true(run_until(&r, 1, 5 * timeout));
        long long elapsed = r.at_ms - t0;
        assert_int_equal(r.a, VERIFY_TEMPFAIL);
        assert_true(elapsed >= timeout);
        assert_true(elapsed < 5 * timeout);
        run_for(50);
        if (pe.nconns != 1 || pe.closed != 1)
            fail_msg("mode %zu: %d connections, %d closed", m, pe.nconns, pe.closed);
        if (modes[m] == TSL_PEER_NO_SEARCH) {
            assert_int_equal(pe.searches, 1);
            assert_int_equal(pe.abandons, 1);   /* the search was abandoned */
        }
        /* The next lookup, a second later, connects again and also ends in time. */
        run_for(1000);
        memset(&r, 0, sizeof r);
        t0 = clock_mono_ms();
        s->lookup(s, &a.p, on_done, &r);
        assert_true(run_until(&r, 1, 5 * timeout));
        assert_int_equal(r.a, VERIFY_TEMPFAIL);
        if (r.at_ms - t0 < timeout)
            fail_msg("mode %zu: second lookup answered after %lld ms", m, r.at_ms - t0);
        assert_int_equal(pe.nconns, 2);
        s->free(s);
        tsl_peer_stop(&pe);
    }
}

/* A search that times out while the server answers others: abandoned, the connection kept. */
static void test_timeout_keeps_live_connection(void **state)
{
    (void)state;
    struct tsl_peer pe;
    tsl_peer_start(&pe, base, TSL_PEER_SCRIPT);
    pe.entry = true;
    struct verify_source *s = make(pe.uri, "", "", TSL_BASE, "(mail=%s)", 300);
    struct addr a1, a2;
    addr_set(&a1, "never@example.test");
    addr_set(&a2, "bob@example.test");
    struct res r[2];
    memset(r, 0, sizeof r);
    long long t0 = clock_mono_ms();
    s->lookup(s, &a1.p, on_done, &r[0]);
    run_for(150);
    s->lookup(s, &a2.p, on_done, &r[1]);
    assert_true(run_until(r, 2, 1500));
    assert_int_equal(r[1].a, VERIFY_EXISTS);
    assert_true(r[1].at_ms < r[0].at_ms);
    assert_int_equal(r[0].a, VERIFY_TEMPFAIL);
    assert_true(r[0].at_ms - t0 >= 300);
    run_for(50);
    assert_int_equal(pe.abandons, 1);
    assert_int_equal(pe.closed, 0);
    assert_int_equal(ask(s, "bob@example.test"), VERIFY_EXISTS);
    assert_int_equal(pe.nconns, 1);
    s->free(s);
    tsl_peer_stop(&pe);
}

/* A connect that stays in progress: TEMPFAIL at the timeout; one that completes late still binds. */
static void test_connect_in_progress(void **state)
{
    (void)state;
    struct tsl_peer pe;
    tsl_peer_start(&pe, base, TSL_PEER_SCRIPT);
    pe.entry = true;
    tsl_peer_block_accepts(&pe);
    struct verify_source *s = make(pe.uri, "", "", TSL_BASE, "(mail=%s)", 300);
    long long t0 = clock_mono_ms();
    assert_int_equal(ask(s, "bob@example.test"), VERIFY_TEMPFAIL);
    long long elapsed = clock_mono_ms() - t0;
    assert_true(elapsed >= 300);
    assert_true(elapsed < 1500);
    s->free(s);
    char *log = read_log();
    assert_non_null(strstr(log, "\"error\":\"no answer within the timeout\""));
    free(log);
    /* The SYN is dropped while the queue is full; the kernel sends it again after a second. */
    s = make(pe.uri, "", "", TSL_BASE, "(mail=%s)", 4500);
    struct addr a;
    addr_set(&a, "bob@example.test");
    struct res r = { 0 };
    s->lookup(s, &a.p, on_done, &r);
    run_for(200);
    assert_int_equal(r.called, 0);
    tsl_peer_allow_accepts(&pe);
    assert_true(run_until(&r, 1, 4500));
    assert_int_equal(r.a, VERIFY_EXISTS);
    assert_int_equal(pe.searches, 1);
    s->free(s);
    tsl_peer_stop(&pe);
    /* A connect in progress that is refused (the listener closes): TEMPFAIL well before the timeout. */
    tsl_peer_start(&pe, base, TSL_PEER_SCRIPT);
    tsl_peer_block_accepts(&pe);
    s = make(pe.uri, "", "", TSL_BASE, "(mail=%s)", 4500);
    memset(&r, 0, sizeof r);
    t0 = clock_mono_ms();
    s->lookup(s, &a.p, on_done, &r);
    run_for(200);
    tsl_peer_stop(&pe);
    assert_true(run_until(&r, 1, 4500));
    assert_int_equal(r.a, VERIFY_TEMPFAIL);
    assert_true(r.at_ms - t0 < 4000);
    s->free(s);
    log = read_log();
    assert_non_null(strstr(log, "\"error\":\"cannot connect\",\"code\":-11,\"result\":\"Connect error\","
                                "\"detail\":\"Connection refused\""));
    free(log);
}

/* A server that stops reading: once the socket takes no more, the connection is dropped. */
static void test_server_not_reading(void **state)
{
    (void)state;
    enum { MAX = 20000 };
    struct tsl_peer pe;
    tsl_peer_start(&pe, base, TSL_PEER_NO_READ);
    struct verify_source *s = make(pe.uri, "", "", TSL_BASE, "(mail=%s)", 3000);
    struct addr *a = calloc(MAX, sizeof *a);
    struct res *r = calloc(MAX, sizeof *r);
    assert_non_null(a);
    assert_non_null(r);
    char local[201];
    memset(local, 'x', 200);
    local[200] = '\0';
    char m[256];
    snprintf(m, sizeof m, "%s@example.test", local);
    addr_set(&a[0], m);
    s->lookup(s, &a[0].p, on_done, &r[0]);
    run_for(100);                           /* bound; the first search sits unread */
    int n = 1;
    while (n < MAX) {
        addr_set(&a[n], m);
        s->lookup(s, &a[n].p, on_done, &r[n]);
        n++;
        if (r[n - 1].called)                /* answered at once: the connection is gone */
            break;
    }
    assert_true(n < MAX);
    assert_true(run_until(r, (size_t)n, 2000));
    expect_all(r, (size_t)n, VERIFY_TEMPFAIL);
    char *log = read_log();
    assert_non_null(strstr(log, "\"error\":\"the server does not read its requests\""));
    free(log);
    s->free(s);
    tsl_peer_stop(&pe);
    free(a);
    free(r);
}

/* free() answers every pending lookup TEMPFAIL from inside free. */
static void test_free_pending(void **state)
{
    (void)state;
    /* Lookups queued behind a bind that never completes. */
    struct tsl_peer pe;
    tsl_peer_start(&pe, base, TSL_PEER_SILENT);
    struct verify_source *s = make(pe.uri, "", "", TSL_BASE, "(mail=%s)", 3000);
    struct addr a[5];
    struct res r[5];
    lookup_n(s, a, r, 5, "bob@example.test", on_done);
    run_for(50);
    assert_int_equal(pe.nconns, 1);
    s->free(s);
    expect_all(r, 5, VERIFY_TEMPFAIL);
    run_for(20);
    tsl_peer_stop(&pe);
    /* Searches in flight on slapd, sent but not answered yet. */
    s = make_root("(mail=%s)");
    assert_int_equal(ask(s, "bob@example.test"), VERIFY_EXISTS);
    lookup_n(s, a, r, 5, "bob@example.test", on_done);
    s->free(s);
    expect_all(r, 5, VERIFY_TEMPFAIL);
    run_for(20);
    for (int i = 0; i < 5; i++)
        assert_int_equal(r[i].called, 1);
}

/* A done callback run by free() that asks the same source again: answered at once, TEMPFAIL. */
static struct verify_source *closing_src;
static struct res again;
static struct addr again_addr;

static void lookup_again_on_done(enum verify_answer a, void *arg)
{
    on_done(a, arg);
    if (closing_src != NULL)
        closing_src->lookup(closing_src, &again_addr.p, on_done, &again);
}

static void test_lookup_during_free(void **state)
{
    (void)state;
    closing_src = make_root("(mail=%s)");
    addr_set(&again_addr, "bob@example.test");
    memset(&again, 0, sizeof again);
    struct addr a;
    addr_set(&a, "bob@example.test");
    struct res r = { 0 };
    closing_src->lookup(closing_src, &a.p, lookup_again_on_done, &r);
    closing_src->free(closing_src);
    closing_src = NULL;
    assert_int_equal(r.called, 1);
    assert_int_equal(r.a, VERIFY_TEMPFAIL);
    assert_int_equal(again.called, 1);
    assert_int_equal(again.a, VERIFY_TEMPFAIL);
}

/* A done callback that frees the source: the other lookups are answered once, nothing else runs. */
static struct verify_source *freeing_src;

static void free_on_done(enum verify_answer a, void *arg)
{
    on_done(a, arg);
    if (freeing_src != NULL) {
        struct verify_source *s = freeing_src;
        freeing_src = NULL;
        s->free(s);
    }
}

static void test_free_from_done(void **state)
{
    (void)state;
    freeing_src = make_root("(mail=%s)");
    struct addr a[4];
    struct res r[4];
    lookup_n(freeing_src, a, r, 4, "bob@example.test", free_on_done);
    assert_true(run_until(r, 4, 3000));
    assert_null(freeing_src);
    int exists = 0;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].called, 1);
        exists += r[i].a == VERIFY_EXISTS;
    }
    assert_true(exists >= 1);
    run_for(20);
    for (int i = 0; i < 4; i++)
        assert_int_equal(r[i].called, 1);
}

int main(void)
{
    log_fd = mkstemp(log_path);
    assert_true(log_fd >= 0);
    unlink(log_path);
    log_init("test", LOG_INFO, log_fd);
    base = event_base_new();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_bad_settings, setup),
        cmocka_unit_test_setup(test_mail_filter, setup),
        cmocka_unit_test_setup(test_local_and_domain, setup),
        cmocka_unit_test_setup(test_escaping, setup),
        cmocka_unit_test_setup(test_percent, setup),
        cmocka_unit_test_setup(test_more_than_one_entry, setup),
        cmocka_unit_test_setup(test_search_base, setup),
        cmocka_unit_test_setup(test_binds, setup),
        cmocka_unit_test_setup(test_ldapi, setup),
        cmocka_unit_test_setup(test_server_down_and_back, setup),
        cmocka_unit_test_setup(test_parallel_slapd, setup),
        cmocka_unit_test_setup(test_parallel_one_connection, setup),
        cmocka_unit_test_setup(test_result_codes, setup),
        cmocka_unit_test_setup(test_notice_of_disconnection, setup),
        cmocka_unit_test_setup(test_garbage_reply, setup),
        cmocka_unit_test_setup(test_timeout, setup),
        cmocka_unit_test_setup(test_timeout_keeps_live_connection, setup),
        cmocka_unit_test_setup(test_connect_in_progress, setup),
        cmocka_unit_test_setup(test_server_not_reading, setup),
        cmocka_unit_test_setup(test_free_pending, setup),
        cmocka_unit_test_setup(test_lookup_during_free, setup),
        cmocka_unit_test_setup(test_free_from_done, setup),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    event_base_free(base);
    close(log_fd);
    return failed;
}
