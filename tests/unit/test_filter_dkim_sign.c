/*
 * test_filter_dkim_sign.c - DKIM signing (filter_dkim_sign.c): key loading, key choice by domain,
 * signed fields and folding, errors, signing from several threads. Every signature made is
 * checked by python3-dkim (/usr/bin/python3), given the public keys through its dnsfunc; the
 * verifier side, and libopendkim's verdict on our signatures, are test_filter_dkim.c's.
 *
 * The group setup makes keys with the openssl tool in a temp dir: RSA 2048 as PKCS#8 and as
 * PKCS#1, Ed25519, and unusable ones (EC P-256, RSA 512, RSA 4160, an encrypted Ed25519 key).
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
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "buf.h"
#include "conf.h"
#include "filter_dkim.h"

static char dir[64];
static struct dkim_signer *signer;
static struct buf recs;             /* "name record" lines for python's dnsfunc */

static const char msg[] =
    "From: Alice <alice@rsa.test>\r\n"
    "To: bob@example.org\r\n"
    "Subject: Hello there\r\n"
    "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    "Message-ID: <1@rsa.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain\r\n"
    "X-Folded: first\r\n"
    " second part\r\n"
    "\r\n"
    "Hello,\r\n"
    " this is  the body.\r\n";

/* Prints pass/fail/error per DKIM-Signature of argv[1], keys from the records file argv[2]. */
static const char py_verify[] =
    "import sys, dkim\n"
    "msg = open(sys.argv[1], 'rb').read()\n"
    "recs = {}\n"
    "for line in open(sys.argv[2], 'rb'):\n"
    "    name, _, val = line.rstrip(b'\\n').partition(b' ')\n"
    "    recs[name.decode()] = val\n"
    "dnsfunc = lambda name, timeout=5: recs.get(name.decode().rstrip('.'))\n"
    "head = msg.split(b'\\r\\n\\r\\n', 1)[0].split(b'\\r\\n')\n"
    "out = []\n"
    "for i in range(sum(1 for l in head if l.lower().startswith(b'dkim-signature:'))):\n"
    "    try:\n"
    "        out.append('pass' if dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc) else 'fail')\n"
    "    except Exception:\n"
    "        out.append('error')\n"
    "print(' '.join(out))\n";

static void sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

static void write_file(const char *name, const char *data, size_t len)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* The DKIM key record of a key file: p= is SubjectPublicKeyInfo for RSA, raw for Ed25519. */
static void publish(const char *name, const char *file)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(k);
    unsigned char raw[32], *der = NULL;
    size_t n = sizeof raw;
    bool ed = EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519;
    if (ed)
        assert_int_equal(EVP_PKEY_get_raw_public_key(k, raw, &n), 1);
    else
        n = (size_t)i2d_PUBKEY(k, &der);
    char *b64 = malloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)b64, ed ? raw : der, (int)n);
    buf_printf(&recs, "%s v=DKIM1; k=%s; p=%s\n", name, ed ? "ed25519" : "rsa", b64);
    free(b64);
    OPENSSL_free(der);
    EVP_PKEY_free(k);
}

/* python3-dkim's verdict on each signature of m, in header order. */
static char *python_verify(const char *m, size_t len, const char *file)
{
    write_file(file, m, len);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/verify.py %s/%s %s/recs.txt", dir, dir, file,
             dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[128] = "";
    if (fgets(out, sizeof out, p) == NULL || pclose(p) != 0)
        fail_msg("python3-dkim failed on %s", file);
    out[strcspn(out, "\n")] = '\0';
    return strdup(out);
}

/* A signer with one "domain:selector:file" key per spec (file relative to dir). */
static struct dkim_signer *new_signer(const char *const *specs, size_t n, const char *headers,
                                      struct buf *err)
{
    char *kv[8];
    for (size_t i = 0; i < n; i++) {
        struct buf s = BUF_INIT;
        const char *c = strrchr(specs[i], ':');
        buf_printf(&s, "%.*s%s/%s", (int)(c + 1 - specs[i]), specs[i], dir, c + 1);
        kv[i] = buf_steal(&s);
    }
    struct strlist keys = { kv, n };
    struct dkim_signer *s = dkim_signer_new(&keys, headers, err);
    for (size_t i = 0; i < n; i++)
        free(kv[i]);
    return s;
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/mxg-dkimsign-XXXXXX");
    assert_non_null(mkdtemp(dir));
    sh("cd %s && (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem "
       "&& openssl genrsa -traditional -out rsa2.pem 2048 && openssl genrsa -out rsa512.pem 512 "
       "&& openssl genrsa -out rsa4160.pem 4160 && openssl genpkey -algorithm ed25519 -out ed.pem "
       "&& openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.pem "
       "&& openssl genpkey -algorithm ed25519 -aes256 -pass pass:secret -out enc.pem) 2>/dev/null "
       "&& grep -q 'BEGIN PRIVATE KEY' rsa.pem && grep -q 'BEGIN RSA PRIVATE KEY' rsa2.pem", dir);
    write_file("verify.py", py_verify, sizeof py_verify - 1);
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
    signer = new_signer(specs, sizeof specs / sizeof specs[0], "", &err);
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
    sh("rm -rf %s", dir);
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
            char *py = python_verify(sig.data + 4, sig.len - 4, "msg.eml");
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
        struct dkim_signer *s = new_signer(spec, 1, header_cases[i].headers, &err);
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
        char *py = python_verify(sig.data, sig.len, "msg.eml");
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
        char *py = python_verify(w[i].last.data, w[i].last.len, "thread.eml");
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
