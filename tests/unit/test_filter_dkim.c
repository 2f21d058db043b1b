/*
 * test_filter_dkim.c - DKIM verification (filter_dkim.c) against real keys, a real dnsmasq and
 * python3-dkim; key choice, signed fields and signer errors are test_filter_dkim_sign.c's.
 *
 * The group setup makes keys with the openssl tool in a temp dir (RSA 2048 as PKCS#8 and as
 * PKCS#1, RSA 512, Ed25519), publishes the public keys as TXT records (split into strings of 250
 * bytes) through dnsmasq, and points a lib/dns.h resolver at it. broken.test is forwarded to an
 * upstream that answers SERVFAIL, slow.test to one that never answers (support/fake_dns.c). Our signer signs;
 * python3-dkim (/usr/bin/python3, the same records given through its dnsfunc) checks each verdict
 * of ours on our signatures and signs messages ours must verify.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <dkim.h>
#include <event2/event.h>

#include "buf.h"
#include "clock.h"
#include "conf.h"
#include "dns.h"
#include "filter_dkim.h"
#include "support/dkim_keys.h"
#include "support/dnsmasq.h"
#include "support/fake_dns.h"
#include "support/peer.h"

static char dir[64];
static struct event_base *base;
static struct dns *dns;
static struct dkim_filter *filter;
static struct dkim_signer *signer;
static struct fake_dns_pair up = FAKE_DNS_PAIR_INIT;   /* broken.test's SERVFAIL, slow.test's silent */
static struct buf recs;             /* "name record" lines for python's dnsfunc */
static char *ed_seed;               /* base64 Ed25519 private seed (python's key format) */
static bool starting;               /* inside dkim_verify_finish() */

static const char msg[] = TDK_MSG "\r\n\r\n";     /* and two empty lines at the body's end */

/* ---- peers, keys, records -------------------------------------------------------------------- */

static char *args[32];
static size_t nargs;

/* Publishes a TXT record (dnsmasq: comma-separated strings of at most 255 bytes each). */
static void txt(const char *name, const char *record)
{
    struct buf a = BUF_INIT;
    buf_printf(&a, "--txt-record=%s", name);
    for (size_t off = 0, len = strlen(record); off < len || off == 0; off += 250)
        buf_printf(&a, ",%.250s", record + off);
    args[nargs++] = buf_steal(&a);
    buf_printf(&recs, "%s %s\n", name, record);
}

static void write_file(const char *name, const char *data, size_t len)
{
    tp_write_file(dir, name, data, len);
}

/* python3-dkim's verdict per signature, in header order: "pass", "fail" or "error". */
static char *python_verify(const char *m, size_t len)
{
    write_file("recs.txt", recs.data, recs.len);
    return tdk_python_verify(dir, "msg.eml", m, len);
}

static int group_setup(void **state)
{
    (void)state;
    tdk_keys(dir, "mxg-dkim");

    bool is_ed;
    char *rsa = tdk_public_b64(dir, "rsa.pem", &is_ed, NULL);
    char *rsa2 = tdk_public_b64(dir, "rsa2.pem", &is_ed, NULL);
    char *ed = tdk_public_b64(dir, "ed.pem", &is_ed, &ed_seed);
    char *rsa512 = tdk_public_b64(dir, "rsa512.pem", &is_ed, NULL);
    write_file("ed.seed", ed_seed, strlen(ed_seed));
    struct buf r = BUF_INIT;
#define REC(name, k, p) (buf_reset(&r), buf_printf(&r, "v=DKIM1; k=%s; p=%s", k, p), \
                         txt(name, buf_cstr(&r)))
    REC("s1._domainkey.rsa.test", "rsa", rsa);
    REC("s2._domainkey.ed.test", "ed25519", ed);
    REC("s1._domainkey.dual.test", "rsa", rsa);
    REC("s2._domainkey.dual.test", "ed25519", ed);
    REC("s1._domainkey.wrong.test", "rsa", rsa2);
    REC("s1._domainkey.pkcs1.test", "rsa", rsa2);
    REC("s1._domainkey.revoked.test", "rsa", "");
    REC("s3._domainkey.multi.test", "rsa", rsa);
    txt("s3._domainkey.multi.test", "v=spf1 -all");
    REC("py._domainkey.py.test", "rsa", rsa);
    REC("pyed._domainkey.py.test", "ed25519", ed);
    REC("py512._domainkey.py.test", "rsa", rsa512);
#undef REC
    buf_release(&r);
    free(rsa);
    free(rsa2);
    free(ed);
    free(rsa512);

    base = event_base_new();
    fake_dns_pair_start(&up, base, false, "broken.test", "slow.test");
    args[nargs++] = strdup(up.servfail_arg);
    args[nargs++] = strdup(up.silent_arg);
    args[nargs] = NULL;
    int port = tdm_start((const char *const *)args);

    char server[32];
    snprintf(server, sizeof server, "127.0.0.1:%d", port);
    char *sv[1] = { server };
    struct strlist servers = { sv, 1 };
    struct buf err = BUF_INIT;
    dns = dns_new(base, &servers, 500, 1, &err);
    filter = dns != NULL ? dkim_filter_new(base, dns, &err) : NULL;
    static const char *const specs[] = {
        "rsa.test:s1:rsa.pem", "ed.test:s2:ed.pem", "dual.test:s1:rsa.pem", "dual.test:s2:ed.pem",
        "wrong.test:s1:rsa.pem", "pkcs1.test:s1:rsa2.pem", "nokey.test:s1:rsa.pem",
        "revoked.test:s1:rsa.pem", "broken.test:s1:rsa.pem", "slow.test:s1:rsa.pem",
        "multi.test:s3:rsa.pem",
    };
    signer = filter != NULL ? tdk_signer(dir, specs, sizeof specs / sizeof specs[0], "", &err) : NULL;
    if (signer == NULL)
        fail_msg("setup: %s", buf_cstr(&err));
    buf_release(&err);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    dkim_signer_free(signer);
    dkim_filter_free(filter);
    dns_free(dns);
    tdm_stop();
    fake_dns_pair_stop(&up);
    event_base_free(base);
    for (size_t i = 0; i < nargs; i++)
        free(args[i]);
    buf_release(&recs);
    free(ed_seed);
    tp_rmtree(dir);
    return 0;
}

/* ---- running a verification ------------------------------------------------------------------ */

/* What one verification reported. */
struct got {
    int calls;
    bool early;                 /* called inside dkim_verify_finish() */
    size_t n, ignored;
    struct buf summary;         /* "result d=D s=S a=A" per signature, joined by "; " */
    struct buf ar;              /* dkim_auth_results() */
    struct buf reason0;         /* the first signature's reason */
};

static void got_cb(const struct dkim_results *r, void *arg)
{
    struct got *g = arg;
    g->calls++;
    g->early |= starting;
    g->n = r->n;
    g->ignored = r->ignored;
    buf_reset(&g->summary);
    buf_reset(&g->ar);
    buf_reset(&g->reason0);
    for (size_t i = 0; i < r->n; i++)
        buf_printf(&g->summary, "%s%s d=%s s=%s a=%s", i ? "; " : "", r->sig[i].result,
                   r->sig[i].domain, r->sig[i].selector, r->sig[i].algorithm);
    if (r->n > 0)
        buf_puts(&g->reason0, r->sig[0].reason);
    dkim_auth_results(r, &g->ar);
}

static void got_release(struct got *g)
{
    buf_release(&g->summary);
    buf_release(&g->ar);
    buf_release(&g->reason0);
}

static void run_for(long long ms)
{
    tp_run_for(base, ms);
}

static void run_until_called(struct got *g, long long ms)
{
    tp_run_count(base, &g->calls, 1, ms);
}

static void finish(struct dkim_verify *v, struct got *g)
{
    starting = true;
    dkim_verify_finish(v, got_cb, g);
    starting = false;
}

/* Verifies m fed in chunks of chunk bytes (0: all at once); fails unless called exactly once. */
static void verify(const char *m, size_t len, size_t chunk, struct got *g)
{
    struct dkim_verify *v = dkim_verify_start(filter, "Q1");
    for (size_t off = 0; off < len;) {
        size_t n = chunk == 0 || chunk > len - off ? len - off : chunk;
        dkim_verify_feed(v, m + off, n);
        off += n;
    }
    finish(v, g);
    run_until_called(g, 5000);
    run_for(20);
    if (g->calls != 1 || g->early)
        fail_msg("callback ran %d times, early %d", g->calls, g->early);
}

/* Signs msg for domain; the signature field(s) followed by the message. */
static char *signed_msg(const char *domain, const char *m)
{
    struct buf out = BUF_INIT, err = BUF_INIT;
    if (!dkim_sign_message(signer, domain, m, strlen(m), &out, &err))
        fail_msg("signing for %s: %s", domain, buf_cstr(&err));
    buf_puts(&out, m);
    buf_release(&err);
    return buf_steal(&out);
}

/* The first 8 characters of the b= tag of the index-th DKIM-Signature field of m. */
static void sig_b8(const char *m, int index, char out[9])
{
    const char *h = m;
    for (int i = 0; i <= index; i++, h++)
        h = strstr(h, "DKIM-Signature:");
    struct buf flat = BUF_INIT;
    for (; *h != '\0' && !(h[0] == '\r' && h[1] == '\n' && h[2] != ' ' && h[2] != '\t'); h++)
        if (*h != '\r' && *h != '\n' && *h != ' ' && *h != '\t')
            buf_putc(&flat, *h);
    const char *b = strstr(buf_cstr(&flat), ";b=");
    assert_non_null(b);
    snprintf(out, 9, "%s", b + 3);
    buf_release(&flat);
}

/* header.b as RFC 8601 wants it: base64's '/' and '=' are not token characters. */
static const char *b_prop(const char b8[9], char out[11])
{
    snprintf(out, 11, strpbrk(b8, "/=") != NULL ? "\"%s\"" : "%s", b8);
    return out;
}

/* ---- tests ----------------------------------------------------------------------------------- */

static const struct sign_case {
    const char *domain;         /* given to dkim_sign_message() */
    const char *summary;        /* our verifier */
    const char *reason0;
    const char *python;         /* python3-dkim, NULL: not asked */
} sign_cases[] = {
    { "rsa.test", "pass d=rsa.test s=s1 a=rsa-sha256", "signature verified", "pass" },
    { "ED.Test.", "pass d=ed.test s=s2 a=ed25519-sha256", "signature verified", "pass" },
    { "mail.sub.rsa.test", "pass d=rsa.test s=s1 a=rsa-sha256", "signature verified", "pass" },
    { "dual.test", "pass d=dual.test s=s1 a=rsa-sha256; pass d=dual.test s=s2 a=ed25519-sha256",
      "signature verified", "pass pass" },
    { "multi.test", "pass d=multi.test s=s3 a=rsa-sha256", "signature verified", "pass" },
    { "pkcs1.test", "pass d=pkcs1.test s=s1 a=rsa-sha256", "signature verified", "pass" },
    { "wrong.test", "fail d=wrong.test s=s1 a=rsa-sha256", "signature verification failed",
      "fail" },
    { "nokey.test", "permerror d=nokey.test s=s1 a=rsa-sha256", "no key record", "fail" },
    { "revoked.test", "permerror d=revoked.test s=s1 a=rsa-sha256", "key revoked", "fail" },
    { "broken.test", "temperror d=broken.test s=s1 a=rsa-sha256", "key lookup failed temporarily",
      NULL },
    { "slow.test", "temperror d=slow.test s=s1 a=rsa-sha256", "key lookup failed temporarily",
      NULL },
};

/* Our signatures through our verifier and python3-dkim; key lookup failures by kind. */
static void test_sign_verify(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof sign_cases / sizeof sign_cases[0]; i++) {
        const struct sign_case *c = &sign_cases[i];
        char *m = signed_msg(c->domain, msg);
        struct got g = { 0 };
        verify(m, strlen(m), 0, &g);
        struct buf want = BUF_INIT;
        for (size_t k = 0; k < g.n; k++) {
            char b8[9], bq[11];
            sig_b8(m, (int)k, b8);
            const char *r = c->summary;
            for (size_t j = 0; j < k; j++)
                r = strstr(r, "; ") + 2;
            const char *d = strstr(r, " d=") + 3, *s = strstr(r, " s=") + 3;
            buf_printf(&want, "%sdkim=%.*s header.d=%.*s header.s=%.*s header.b=%s",
                       k ? "; " : "", (int)strcspn(r, " "), r, (int)strcspn(d, " "), d,
                       (int)strcspn(s, " "), s, b_prop(b8, bq));
        }
        if (strcmp(buf_cstr(&g.summary), c->summary) != 0
            || strcmp(buf_cstr(&g.ar), buf_cstr(&want)) != 0
            || strcmp(buf_cstr(&g.reason0), c->reason0) != 0)
            fail_msg("%s: got '%s' / '%s' / '%s', want '%s' / '%s' / '%s'", c->domain,
                     buf_cstr(&g.summary), buf_cstr(&g.ar), buf_cstr(&g.reason0), c->summary,
                     buf_cstr(&want), c->reason0);
        if (c->python != NULL) {
            char *py = python_verify(m, strlen(m));
            if (strcmp(py, c->python) != 0)
                fail_msg("%s: python3-dkim says '%s', want '%s'", c->domain, py, c->python);
            free(py);
        }
        buf_release(&want);
        got_release(&g);
        free(m);
    }
}

static const struct change_case {
    const char *what, *from, *to;
    const char *result;         /* ours and python3-dkim's */
} change_cases[] = {
    { "body changed", "Hello,", "Hellp,", "fail" },
    { "signed field changed", "Subject: Hello there", "Subject: Hello world", "fail" },
    { "From added (oversigned)", "To: bob", "From: eve@evil.test\r\nTo: bob", "fail" },
    { "unsigned field added", "X-Folded:", "X-Extra: 1\r\nX-Folded:", "pass" },
    { "signed field refolded", "Subject: Hello there", "Subject:  Hello\r\n\tthere", "pass" },
    { "trailing blank lines", "the body.\r\n", "the body.\r\n\r\n\r\n", "pass" },
    { "whitespace in body line", "this is  the", "this is \t the", "pass" },
};

/* Changes after signing: what breaks the signature and what relaxed/relaxed tolerates. */
static void test_changed_after_signing(void **state)
{
    (void)state;
    char *m = signed_msg("rsa.test", msg);
    for (size_t i = 0; i < sizeof change_cases / sizeof change_cases[0]; i++) {
        const struct change_case *c = &change_cases[i];
        const char *at = strstr(m, c->from);
        assert_non_null(at);
        struct buf x = BUF_INIT;
        buf_printf(&x, "%.*s%s%s", (int)(at - m), m, c->to, at + strlen(c->from));
        struct got g = { 0 };
        verify(x.data, x.len, 0, &g);
        char want[128];
        snprintf(want, sizeof want, "%s d=rsa.test s=s1 a=rsa-sha256", c->result);
        char *py = python_verify(x.data, x.len);
        if (strcmp(buf_cstr(&g.summary), want) != 0 || strcmp(py, c->result) != 0)
            fail_msg("%s: got '%s', python '%s', want '%s'", c->what, buf_cstr(&g.summary), py,
                     want);
        free(py);
        got_release(&g);
        buf_release(&x);
    }
    free(m);
}

static const struct plain_case {
    const char *what, *msg;
    const char *summary, *ar;
} plain_cases[] = {
    { "unsigned", msg, "", "dkim=none" },
    { "no body", "From: a@rsa.test\r\nSubject: x\r\n", "", "dkim=none" },
    { "no line end", "From: a@rsa.test", "", "dkim=none" },
    { "empty", "", "", "dkim=none" },
    { "malformed signature",
      "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=rsa.test; s=s1; h=from;\r\n"
      "\tbh=; b=AAAA\r\n" "From: a@rsa.test\r\n\r\nbody\r\n",
      "neutral d=rsa.test s=s1 a=rsa-sha256", "dkim=neutral header.d=rsa.test header.s=s1 "
      "header.b=AAAA" },
    { "expired signature",
      "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=rsa.test; s=s1; h=from;\r\n"
      "\tt=1000; x=2000; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA/BBBB\r\n"
      "From: a@rsa.test\r\n\r\n",
      "neutral d=rsa.test s=s1 a=rsa-sha256", "dkim=neutral header.d=rsa.test header.s=s1 "
      "header.b=\"AAAA/BBB\"" },
};

/* Unsigned and malformed messages need no DNS and still answer from the loop. */
static void test_plain(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof plain_cases / sizeof plain_cases[0]; i++) {
        const struct plain_case *c = &plain_cases[i];
        struct got g = { 0 };
        verify(c->msg, strlen(c->msg), 0, &g);
        if (strcmp(buf_cstr(&g.summary), c->summary) != 0 || strcmp(buf_cstr(&g.ar), c->ar) != 0)
            fail_msg("%s: got '%s' / '%s'", c->what, buf_cstr(&g.summary), buf_cstr(&g.ar));
        got_release(&g);
    }
}

static const struct py_case {
    const char *alg, *selector, *key;
    const char *summary, *reason0;
} py_cases[] = {
    { "rsa-sha256", "py", "rsa.pem", "pass d=py.test s=py a=rsa-sha256", "signature verified" },
    { "ed25519-sha256", "pyed", "ed.seed", "pass d=py.test s=pyed a=ed25519-sha256",
      "signature verified" },
    { "rsa-sha1", "py", "rsa.pem", "policy d=py.test s=py a=rsa-sha1",
      "rsa-sha1 is not acceptable (RFC 8301)" },
    { "rsa-sha256", "py512", "rsa512.pem", "policy d=py.test s=py512 a=rsa-sha256",
      "signing key too small" },
};

/* Signatures made by python3-dkim (relaxed/relaxed), verified by ours. */
static void test_python_signed(void **state)
{
    (void)state;
    write_file("plain.eml", msg, sizeof msg - 1);
    for (size_t i = 0; i < sizeof py_cases / sizeof py_cases[0]; i++) {
        const struct py_case *c = &py_cases[i];
        char *m = tp_sh_output("/usr/bin/python3 %s/dkimtool.py sign %s/plain.eml %s %s py.test %s/%s", dir,
                      dir, c->alg, c->selector, dir, c->key);
        struct got g = { 0 };
        verify(m, strlen(m), 0, &g);
        if (strcmp(buf_cstr(&g.summary), c->summary) != 0
            || strcmp(buf_cstr(&g.reason0), c->reason0) != 0)
            fail_msg("%s: got '%s' (%s)", c->alg, buf_cstr(&g.summary), buf_cstr(&g.reason0));
        got_release(&g);
        free(m);
    }
}

/* The message with a bad signature (wrong.test) above a good one (rsa.test). */
static char *two_sigs(void)
{
    struct buf out = BUF_INIT, err = BUF_INIT;
    assert_true(dkim_sign_message(signer, "rsa.test", msg, sizeof msg - 1, &out, &err));
    struct buf all = BUF_INIT;
    assert_true(dkim_sign_message(signer, "wrong.test", msg, sizeof msg - 1, &all, &err));
    buf_append(&all, out.data, out.len);
    buf_puts(&all, msg);
    buf_release(&out);
    buf_release(&err);
    return buf_steal(&all);
}

/* Two signatures, one good and one bad: two results, in header order, as python3-dkim sees. */
static void test_two_signatures(void **state)
{
    (void)state;
    char *m = two_sigs();
    struct got g = { 0 };
    verify(m, strlen(m), 0, &g);
    char b0[9], b1[9], q0[11], q1[11], want[256];
    sig_b8(m, 0, b0);
    sig_b8(m, 1, b1);
    snprintf(want, sizeof want, "dkim=fail header.d=wrong.test header.s=s1 header.b=%s; "
             "dkim=pass header.d=rsa.test header.s=s1 header.b=%s", b_prop(b0, q0),
             b_prop(b1, q1));
    assert_string_equal(buf_cstr(&g.summary),
                        "fail d=wrong.test s=s1 a=rsa-sha256; pass d=rsa.test s=s1 a=rsa-sha256");
    assert_string_equal(buf_cstr(&g.ar), want);
    char *py = python_verify(m, strlen(m));
    assert_string_equal(py, "fail pass");
    free(py);
    got_release(&g);
    free(m);
}

/* Feeding 1, 7 or 64 bytes at a time gives what one chunk gives. */
static void test_chunking(void **state)
{
    (void)state;
    char *ms[2] = { signed_msg("dual.test", msg), two_sigs() };
    static const size_t sizes[] = { 1, 7, 64 };
    for (size_t i = 0; i < 2; i++) {
        struct got whole = { 0 };
        verify(ms[i], strlen(ms[i]), 0, &whole);
        assert_true(strstr(buf_cstr(&whole.ar), "dkim=pass") != NULL);
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            struct got g = { 0 };
            verify(ms[i], strlen(ms[i]), sizes[k], &g);
            if (strcmp(buf_cstr(&g.ar), buf_cstr(&whole.ar)) != 0)
                fail_msg("chunks of %zu: '%s', whole: '%s'", sizes[k], buf_cstr(&g.ar),
                         buf_cstr(&whole.ar));
            got_release(&g);
        }
        got_release(&whole);
        free(ms[i]);
    }
}

/* Key lookups start when the header section is complete, before the body or the end. */
static void test_lookups_at_end_of_header(void **state)
{
    (void)state;
    char *m = signed_msg("dual.test", msg);
    size_t head = (size_t)(strstr(m, "\r\n\r\n") + 4 - m);
    struct dkim_verify *v = dkim_verify_start(filter, NULL);
    dkim_verify_feed(v, m, head - 2);
    assert_int_equal(dkim_verify_lookups(v), 0);
    dkim_verify_feed(v, m + head - 2, 2);
    assert_int_equal(dkim_verify_lookups(v), 2);
    run_for(200);                       /* the answers arrive while the body is still to come */
    dkim_verify_feed(v, m + head, strlen(m) - head);
    struct got g = { 0 };
    long long t0 = clock_mono_ms();
    finish(v, &g);
    run_until_called(&g, 5000);
    assert_true(clock_mono_ms() - t0 < 100);  /* nothing left to wait for */
    assert_int_equal(g.calls, 1);
    assert_false(g.early);
    assert_string_equal(buf_cstr(&g.summary),
                        "pass d=dual.test s=s1 a=rsa-sha256; "
                        "pass d=dual.test s=s2 a=ed25519-sha256");
    got_release(&g);
    free(m);
}

/* Past DKIM_VERIFY_MAX_SIGS, signatures are counted, not evaluated; one lookup per key. */
static void test_too_many_signatures(void **state)
{
    (void)state;
    struct buf sig = BUF_INIT, err = BUF_INIT, m = BUF_INIT;
    assert_true(dkim_sign_message(signer, "rsa.test", msg, sizeof msg - 1, &sig, &err));
    for (int i = 0; i < DKIM_VERIFY_MAX_SIGS + 2; i++)
        buf_append(&m, sig.data, sig.len);
    buf_puts(&m, msg);
    struct dkim_verify *v = dkim_verify_start(filter, "Q2");
    dkim_verify_feed(v, m.data, m.len);
    assert_int_equal(dkim_verify_lookups(v), 1);
    struct got g = { 0 };
    finish(v, &g);
    run_until_called(&g, 5000);
    assert_int_equal(g.n, DKIM_VERIFY_MAX_SIGS);
    assert_int_equal(g.ignored, 2);
    assert_non_null(strstr(buf_cstr(&g.summary), "pass d=rsa.test"));
    assert_null(strstr(buf_cstr(&g.summary), "fail"));
    got_release(&g);
    buf_release(&sig);
    buf_release(&err);
    buf_release(&m);
}

/* Cancelling at any point: no callback, nothing leaked (ASan), lookups in flight dropped. */
static void test_cancel(void **state)
{
    (void)state;
    char *m = signed_msg("slow.test", msg);
    size_t len = strlen(m);
    struct got g = { 0 };

    dkim_verify_cancel(dkim_verify_start(filter, "C1"));           /* before any byte */

    size_t head = (size_t)(strstr(m, "\r\n\r\n") + 4 - m);
    struct dkim_verify *v = dkim_verify_start(filter, "C2");       /* lookup in flight */
    dkim_verify_feed(v, m, head + 3);
    assert_int_equal(dkim_verify_lookups(v), 1);
    dkim_verify_cancel(v);

    v = dkim_verify_start(filter, "C3");                           /* finished, waiting */
    dkim_verify_feed(v, m, len);
    finish(v, &g);
    dkim_verify_cancel(v);

    v = dkim_verify_start(filter, "C4");                           /* callback deferred */
    dkim_verify_feed(v, msg, sizeof msg - 1);
    finish(v, &g);
    dkim_verify_cancel(v);

    run_for(800);                       /* past the 500 ms DNS timeout */
    assert_int_equal(g.calls, 0);
    dkim_verify_cancel(NULL);
    free(m);
}

static const struct render_case {
    size_t n;
    struct dkim_sig_result sig[2];
    const char *want;
} render_cases[] = {
    { 0, { { 0 } }, "dkim=none" },
    { 1, { { "pass", "", "example.test", "sel", "rsa-sha256", "abcdefgh" } },
      "dkim=pass header.d=example.test header.s=sel header.b=abcdefgh" },
    { 2, { { "pass", "", "a.test", "s1", "", "abcd+efg" },
           { "fail", "", "b.test", "s2", "", "xyz" } },
      "dkim=pass header.d=a.test header.s=s1 header.b=abcd+efg; "
      "dkim=fail header.d=b.test header.s=s2 header.b=xyz" },
    { 1, { { "temperror", "", "", "", "", "" } }, "dkim=temperror" },
    { 1, { { "fail", "", "ex ample;\"\\\r\n", "s=1", "", "ab/cd=ef" } },
      "dkim=fail header.d=\"ex ample;\\\"\\\\??\" header.s=\"s=1\" header.b=\"ab/cd=ef\"" },
    { 1, { { "neutral", "", "b\xc3\xa4r.test", "(x)", "", "" } },
      "dkim=neutral header.d=\"b??r.test\" header.s=\"(x)\"" },
};

/* RFC 8601 rendering: properties left out when empty, quoted when not a token. */
static void test_render(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof render_cases / sizeof render_cases[0]; i++) {
        const struct render_case *c = &render_cases[i];
        struct dkim_results r = { c->n, (struct dkim_sig_result *)c->sig, 0 };
        struct buf out = BUF_INIT;
        buf_puts(&out, "mx.test; ");
        dkim_auth_results(&r, &out);
        char want[256];
        snprintf(want, sizeof want, "mx.test; %s", c->want);
        assert_string_equal(buf_cstr(&out), want);
        buf_release(&out);
    }
}

static const struct { int err; const char *result; } sigerror_cases[] = {
    { DKIM_SIGERROR_OK, "pass" },           { DKIM_SIGERROR_BADSIG, "fail" },
    { DKIM_SIGERROR_UNKNOWN, "temperror" }, { DKIM_SIGERROR_KEYFAIL, "temperror" },
    { DKIM_SIGERROR_NOKEY, "permerror" },   { DKIM_SIGERROR_KEYREVOKED, "permerror" },
    { DKIM_SIGERROR_DNSSYNTAX, "permerror" }, { DKIM_SIGERROR_KEYDECODE, "permerror" },
    { DKIM_SIGERROR_KEYHASHMISMATCH, "permerror" }, { DKIM_SIGERROR_MULTIREPLY, "permerror" },
    { DKIM_SIGERROR_NOTEMAILKEY, "permerror" }, { DKIM_SIGERROR_KEYTYPEUNKNOWN, "permerror" },
    { DKIM_SIGERROR_KEYTOOSMALL, "policy" }, { DKIM_SIGERROR_SUBDOMAIN, "policy" },
    { DKIM_SIGERROR_MBSFAILED, "policy" },   { DKIM_SIGERROR_EXPIRED, "neutral" },
    { DKIM_SIGERROR_FUTURE, "neutral" },     { DKIM_SIGERROR_VERSION, "neutral" },
    { DKIM_SIGERROR_DOMAIN, "neutral" },     { DKIM_SIGERROR_INVALID_H, "neutral" },
    { DKIM_SIGERROR_CORRUPT_B, "neutral" },  { DKIM_SIGERROR_EMPTY_BH, "neutral" },
    { DKIM_SIGERROR_TOOLARGE_L, "neutral" }, { DKIM_SIGERROR_MISSING_A, "neutral" },
};

static void test_sigerror_results(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof sigerror_cases / sizeof sigerror_cases[0]; i++)
        if (strcmp(dkim_sigerror_result(sigerror_cases[i].err), sigerror_cases[i].result) != 0)
            fail_msg("sigerror %d: %s, want %s", sigerror_cases[i].err,
                     dkim_sigerror_result(sigerror_cases[i].err), sigerror_cases[i].result);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_changed_after_signing),
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_python_signed),
        cmocka_unit_test(test_two_signatures),
        cmocka_unit_test(test_chunking),
        cmocka_unit_test(test_lookups_at_end_of_header),
        cmocka_unit_test(test_too_many_signatures),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_sigerror_results),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
