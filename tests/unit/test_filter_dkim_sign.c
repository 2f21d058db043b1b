/*
 * test_filter_dkim_sign.c - DKIM signing (filter_dkim_sign.c): key loading, key choice by domain,
 * signed fields and folding, errors, signing from several threads. Every signature made is
 * checked by python3-dkim (support/dkim_keys.c), given the public keys through its dnsfunc; the
 * verifier side, and libopendkim's verdict on our signatures, are test_filter_dkim.c's.
 *
 * The group setup makes keys with the openssl tool in a temp dir (support/dkim_keys.c): RSA 2048
 * as PKCS#8 and as PKCS#1, Ed25519, and unusable ones (EC P-256, RSA 512, RSA 4160, an encrypted
 * Ed25519 key).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "conf.h"
#include "filter_dkim.h"
#include "support/dkim_keys.h"
#include "support/peer.h"

static char dir[64];
static struct dkim_signer *signer;
static struct buf recs;             /* "name record" lines for python's dnsfunc */

static const char msg[] = TDK_MSG;

static void write_file(const char *name, const char *data, size_t len)
{
    tp_write_file(dir, name, data, len);
}

/* The DKIM key record of a key file. */
static void publish(const char *name, const char *file)
{
    bool ed;
    char *p = tdk_public_b64(dir, file, &ed, NULL);
    buf_printf(&recs, "%s v=DKIM1; k=%s; p=%s\n", name, ed ? "ed25519" : "rsa", p);
    free(p);
}

static int group_setup(void **state)
{
    (void)state;
    tdk_keys(dir, "mxg-dkimsign");
    tp_sh("cd %s && (openssl genrsa -out rsa4160.pem 4160 "
          "&& openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.pem "
          "&& openssl genpkey -algorithm ed25519 -aes256 -pass pass:secret -out enc.pem) 2>/dev/null", dir);
    publish("s1._domainkey.rsa.test", "rsa.pem");
    publish("s1._domainkey.dual.test", "rsa.pem");
    publish("s2._domainkey.dual.test", "ed.pem");
    publish("s1._domainkey.pkcs1.test", "rsa2.pem");
    write_file("recs.txt", recs.data, recs.len);
    static const char *const specs[] = {
        "rsa.test:s1:rsa.pem", "Dual.Test.:s1:rsa.pem", "dual.test:S2:ed.pem",
        "pkcs1.test:s1:rsa2.pem",
    };
    struct buf err = BUF_INIT;
    signer = tdk_signer(dir, specs, sizeof specs / sizeof specs[0], "", &err);
    if (signer == NULL)
        fail_msg("setup: %s", buf_cstr(&err));
    buf_release(&err);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    dkim_signer_free(signer);
    buf_release(&recs);
    tp_rmtree(dir);
    return 0;
}

/* The fields of sig without folding white space ("DKIM-Signature:v=1;a=..."), one per line. */
static void unfold(const char *sig, struct buf *out)
{
    for (const char *p = sig; *p != '\0'; p++) {
        if (p[0] == '\r' && p[1] == '\n' && p[2] != '\t' && p[2] != ' ')
            buf_putc(out, '\n');
        else if (*p != '\r' && *p != '\n' && *p != '\t' && *p != ' ')
            buf_putc(out, *p);
    }
}

/* "d=D s=S a=A" for each field, joined by "; ". */
static void summary(const char *sig, struct buf *out)
{
    struct buf flat = BUF_INIT;
    unfold(sig, &flat);
    for (const char *f = buf_cstr(&flat); *f != '\0'; f = strchr(f, '\n') + 1) {
        buf_puts(out, f == flat.data ? "" : "; ");
        static const char *const tags[] = { ";d=", ";s=", ":v=1;a=" };
        for (int t = 0; t < 3; t++) {
            const char *v = strstr(f, tags[t]) + strlen(tags[t]);
            buf_printf(out, "%s%c=%.*s", t ? " " : "", "dsa"[t], (int)strcspn(v, ";"), v);
        }
    }
    buf_release(&flat);
}

static const struct domain_case {
    const char *domain;
    const char *summary;        /* NULL: no key, err below */
    const char *python;
} domain_cases[] = {
    { "rsa.test", "d=rsa.test s=s1 a=rsa-sha256", "pass" },
    { "Mail.Sub.RSA.test.", "d=rsa.test s=s1 a=rsa-sha256", "pass" },
    { "dual.test", "d=dual.test s=s1 a=rsa-sha256; d=dual.test s=s2 a=ed25519-sha256",
      "pass pass" },
    { "x.dual.test", "d=dual.test s=s1 a=rsa-sha256; d=dual.test s=s2 a=ed25519-sha256",
      "pass pass" },
    { "pkcs1.test", "d=pkcs1.test s=s1 a=rsa-sha256", "pass" },
    { "xrsa.test", NULL, "no DKIM key for domain xrsa.test" },
    { "test", NULL, "no DKIM key for domain test" },
    { "", NULL, "no DKIM key for domain " },
};

/* The key(s) of the domain or its closest listed parent sign; python3-dkim verifies. */
static void test_domain_choice(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof domain_cases / sizeof domain_cases[0]; i++) {
        const struct domain_case *c = &domain_cases[i];
        struct buf sig = BUF_INIT, err = BUF_INIT, got = BUF_INIT;
        buf_puts(&sig, "kept");
        bool ok = dkim_sign_message(signer, c->domain, msg, sizeof msg - 1, &sig, &err);
        if (c->summary == NULL) {
            if (ok || strcmp(buf_cstr(&err), c->python) != 0 || strcmp(sig.data, "kept") != 0)
                fail_msg("%s: signed, or err '%s'", c->domain, buf_cstr(&err));
        } else {
            if (!ok)
                fail_msg("%s: %s", c->domain, buf_cstr(&err));
            summary(sig.data + 4, &got);
            buf_puts(&sig, msg);
            char *py = tdk_python_verify(dir, "msg.eml", sig.data + 4, sig.len - 4);
            if (strcmp(buf_cstr(&got), c->summary) != 0 || strcmp(py, c->python) != 0)
                fail_msg("%s: '%s', python '%s'", c->domain, buf_cstr(&got), py);
            free(py);
        }
        buf_release(&sig);
        buf_release(&err);
        buf_release(&got);
    }
}

static const struct header_case {
    const char *headers;        /* signed_headers given */
    const char *h;              /* the h= tag produced */
} header_cases[] = {
    { "", "h=from:to:subject:date:message-id:mime-version:content-type:from;" },
    { NULL, "h=from:to:subject:date:message-id:mime-version:content-type:from;" },
    { " Subject : X-Folded", "h=from:subject:x-folded:from;" },
    { "to:to:x-none", "h=from:to:from;" },
};

/* Which fields are signed (From always, and once more), and the field folded into CRLF lines of
 * at most 78 characters whose continuations start with a tab. */
static void test_signed_headers(void **state)
{
    (void)state;
    static const char *const spec[] = { "rsa.test:s1:rsa.pem" };
    for (size_t i = 0; i < sizeof header_cases / sizeof header_cases[0]; i++) {
        struct buf err = BUF_INIT, sig = BUF_INIT, flat = BUF_INIT;
        struct dkim_signer *s = tdk_signer(dir, spec, 1, header_cases[i].headers, &err);
        assert_non_null(s);
        assert_true(dkim_sign_message(s, "rsa.test", msg, sizeof msg - 1, &sig, &err));
        assert_true(strncmp(sig.data, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; "
                            "d=rsa.test; s=s1;", 66) == 0);
        assert_true(sig.len > 2 && strcmp(sig.data + sig.len - 2, "\r\n") == 0);
        for (const char *l = sig.data; *l != '\0';) {
            const char *e = strstr(l, "\r\n");
            if (e == NULL || e - l > 78 || (l != sig.data && *l != '\t'))
                fail_msg("bad line '%s'", l);
            l = e + 2;
        }
        unfold(sig.data, &flat);
        if (strstr(buf_cstr(&flat), header_cases[i].h) == NULL)
            fail_msg("'%s' lacks '%s'", buf_cstr(&flat), header_cases[i].h);
        buf_puts(&sig, msg);
        char *py = tdk_python_verify(dir, "msg.eml", sig.data, sig.len);
        assert_string_equal(py, "pass");
        free(py);
        buf_release(&err);
        buf_release(&sig);
        buf_release(&flat);
        dkim_signer_free(s);
    }
}

static const struct signer_error_case {
    const char *spec;           /* %s: the key directory */
    const char *headers;
    const char *err;            /* %s: the key directory */
    bool prefix;                /* err is the start of the message (OpenSSL's reason follows) */
} signer_error_cases[] = {
    { "rsa.test:s1", "", "DKIM key \"rsa.test:s1\": want domain:selector:/path/to/key.pem", 0 },
    { "rsa.test:s1:", "", "DKIM key \"rsa.test:s1:\": want domain:selector:/path/to/key.pem", 0 },
    { "bad..test:s1:%s/rsa.pem", "", "DKIM key \"bad..test:s1:%s/rsa.pem\": bad domain or "
      "selector", 0 },
    { "rsa.test:s 1:%s/rsa.pem", "", "DKIM key \"rsa.test:s 1:%s/rsa.pem\": bad domain or "
      "selector", 0 },
    { ":s1:%s/rsa.pem", "", "DKIM key \":s1:%s/rsa.pem\": bad domain or selector", 0 },
    { "rsa.test:s1:%s/missing.pem", "", "DKIM key %s/missing.pem: cannot read a PEM private key "
      "(", 1 },
    { "rsa.test:s1:%s/enc.pem", "", "DKIM key %s/enc.pem: cannot read a PEM private key (", 1 },
    { "rsa.test:s1:%s/ec.pem", "", "DKIM key %s/ec.pem: neither RSA nor Ed25519", 0 },
    { "rsa.test:s1:%s/rsa512.pem", "", "DKIM key %s/rsa512.pem: RSA key under 1024 bits "
      "(RFC 8301)", 0 },
    { "rsa.test:s1:%s/rsa4160.pem", "", "DKIM key %s/rsa4160.pem: RSA key over 4096 bits "
      "(verifiers need not accept it)", 0 },
    { "rsa.test:s1:%s/rsa.pem", "from:bad header", "DKIM signed headers: bad field name \"bad "
      "header\"", 0 },
    { "rsa.test:s1:%s/rsa.pem", "from::to", "DKIM signed headers: bad field name \"\"", 0 },
    { "rsa.test:s1:%s/rsa.pem", "fr.om", "DKIM signed headers: bad field name \"fr.om\"", 0 },
};

/* Bad key specs, keys and header lists are refused at start; a message without From is not
 * signed. */
static void test_signer_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof signer_error_cases / sizeof signer_error_cases[0]; i++) {
        const struct signer_error_case *c = &signer_error_cases[i];
        char spec[128], want[256];
        snprintf(spec, sizeof spec, c->spec, dir);
        snprintf(want, sizeof want, c->err, dir);
        char *kv[1] = { spec };
        struct strlist keys = { kv, 1 };
        struct buf err = BUF_INIT;
        assert_null(dkim_signer_new(&keys, c->headers, &err));
        if (c->prefix ? strncmp(buf_cstr(&err), want, strlen(want)) != 0
                      : strcmp(buf_cstr(&err), want) != 0)
            fail_msg("%s: '%s', want '%s'", spec, buf_cstr(&err), want);
        buf_release(&err);
    }
    struct strlist none = { NULL, 0 };
    struct buf err = BUF_INIT, sig = BUF_INIT;
    assert_null(dkim_signer_new(&none, NULL, &err));
    assert_string_equal(buf_cstr(&err), "DKIM signing: no keys given");
    buf_reset(&err);
    buf_puts(&sig, "kept");
    static const char nofrom[] = "To: bob@example.org\r\nSubject: x\r\n\r\nbody\r\n";
    assert_false(dkim_sign_message(signer, "dual.test", nofrom, sizeof nofrom - 1, &sig, &err));
    assert_string_equal(buf_cstr(&err), "DKIM signing for dual.test: no From field");
    assert_string_equal(buf_cstr(&sig), "kept");
    buf_release(&err);
    buf_release(&sig);
}

enum { THREADS = 4, ROUNDS = 25 };

/* One signing thread's work and last output. */
struct worker {
    pthread_t t;
    int failed;
    struct buf last;
};

static void *sign_many(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < ROUNDS; i++) {
        struct buf err = BUF_INIT;
        buf_reset(&w->last);
        w->failed += !dkim_sign_message(signer, "dual.test", msg, sizeof msg - 1, &w->last, &err);
        buf_release(&err);
    }
    buf_puts(&w->last, msg);
    return NULL;
}

/* One signer used by several threads at once (the relay's workers): every signature verifies. */
static void test_threads(void **state)
{
    (void)state;
    struct worker w[THREADS];
    memset(w, 0, sizeof w);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&w[i].t, NULL, sign_many, &w[i]), 0);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(w[i].t, NULL), 0);
        assert_int_equal(w[i].failed, 0);
        char *py = tdk_python_verify(dir, "thread.eml", w[i].last.data, w[i].last.len);
        assert_string_equal(py, "pass pass");
        free(py);
        buf_release(&w[i].last);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_domain_choice),
        cmocka_unit_test(test_signed_headers),
        cmocka_unit_test(test_signer_errors),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
