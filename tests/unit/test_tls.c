/*
 * test_tls.c - server contexts and the self-signed pair (lib/tls.c): the generated certificate's
 * fields and file modes, real in-memory handshakes (TLS 1.3, TLS 1.2, refused TLS 1.1 and
 * non-AEAD suites), tls_describe's text, and errors that name the file.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "buf.h"
#include "support/peer.h"
#include "tls.h"

struct fixture {
    char dir[64];
    char cert[128], key[128];       /* dir/cert.pem, dir/key.pem */
    char cert2[128], key2[128];     /* dir/b/cert.pem, dir/b/key.pem: a second, unrelated pair */
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (fx == NULL)
        return -1;
    strcpy(fx->dir, "/tmp/test_tls.XXXXXX");
    if (mkdtemp(fx->dir) == NULL)
        return -1;
    snprintf(fx->cert, sizeof fx->cert, "%s/cert.pem", fx->dir);
    snprintf(fx->key, sizeof fx->key, "%s/key.pem", fx->dir);
    char b[100];
    snprintf(b, sizeof b, "%s/b", fx->dir);
    if (mkdir(b, 0700) != 0)
        return -1;
    snprintf(fx->cert2, sizeof fx->cert2, "%s/cert.pem", b);
    snprintf(fx->key2, sizeof fx->key2, "%s/key.pem", b);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    tp_rmtree(fx->dir);
    free(fx);
    return 0;
}

/* The whole file, NUL-terminated; *len gets its size. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    struct buf b = BUF_INIT;
    tp_read_stream(f, &b);
    fclose(f);
    *len = b.len;
    return buf_steal(&b);
}

static void put_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void make_pair(const char *cert, const char *key, const char *host)
{
    struct buf err = BUF_INIT;
    bool ok = tls_self_signed(cert, key, host, &err);
    if (!ok)
        fail_msg("tls_self_signed: %s", buf_cstr(&err));
    buf_release(&err);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void test_self_signed_fields(void **state)
{
    struct fixture *fx = *state;
    make_pair(fx->cert, fx->key, "mx.example.test");

    struct stat st;
    assert_int_equal(stat(fx->key, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(stat(fx->cert, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_int_equal(count_entries(fx->dir), 3);   /* cert, key, b/: no temporary left over */

    FILE *f = fopen(fx->cert, "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    f = fopen(fx->key, "r");
    assert_non_null(f);
    EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(pkey);

    assert_int_equal(X509_get_version(x), X509_VERSION_3);
    char cn[128];
    assert_int_equal(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn),
                     strlen("mx.example.test"));
    assert_string_equal(cn, "mx.example.test");
    assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);

    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    assert_non_null(sans);
    assert_int_equal(sk_GENERAL_NAME_num(sans), 1);
    int type;
    ASN1_IA5STRING *dns = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(sans, 0), &type);
    assert_int_equal(type, GEN_DNS);
    assert_int_equal(ASN1_STRING_length(dns), strlen("mx.example.test"));
    assert_memory_equal(ASN1_STRING_get0_data(dns), "mx.example.test", strlen("mx.example.test"));
    GENERAL_NAMES_free(sans);

    int crit = -1;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    assert_non_null(bc);
    assert_int_equal(bc->ca, 0);
    assert_int_equal(crit, 1);
    BASIC_CONSTRAINTS_free(bc);
    assert_int_equal(X509_check_ca(x), 0);

    assert_int_equal(EVP_PKEY_get_base_id(pkey), EVP_PKEY_EC);
    char group[64];
    size_t glen;
    assert_int_equal(EVP_PKEY_get_group_name(pkey, group, sizeof group, &glen), 1);
    assert_string_equal(group, "prime256v1");
    assert_int_equal(X509_check_private_key(x, pkey), 1);
    assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
    assert_int_equal(X509_verify(x, pkey), 1);

    int days, secs;
    assert_int_equal(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)), 1);
    assert_int_equal(days, 3652);
    assert_int_equal(secs, 0);
    assert_true(X509_cmp_current_time(X509_get0_notBefore(x)) <= 0);

    BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    assert_non_null(serial);
    assert_false(BN_is_negative(serial));
    assert_int_equal(BN_num_bits(serial), 159);
    BN_free(serial);

    EVP_PKEY_free(pkey);
    X509_free(x);
}

/* Two pairs made from scratch differ (fresh key, random serial). */
static void test_self_signed_fresh_each_time(void **state)
{
    struct fixture *fx = *state;
    make_pair(fx->cert, fx->key, "a.example.test");
    make_pair(fx->cert2, fx->key2, "a.example.test");
    size_t n1, n2;
    char *k1 = slurp(fx->key, &n1), *k2 = slurp(fx->key2, &n2);
    assert_false(n1 == n2 && memcmp(k1, k2, n1) == 0);
    free(k1);
    free(k2);
}

static void test_self_signed_keeps_valid_pair(void **state)
{
    struct fixture *fx = *state;
    make_pair(fx->cert, fx->key, "mx.example.test");
    size_t clen, klen, clen2, klen2;
    char *c1 = slurp(fx->cert, &clen), *k1 = slurp(fx->key, &klen);
    struct stat st1, st2;
    assert_int_equal(stat(fx->key, &st1), 0);

    make_pair(fx->cert, fx->key, "other.example.test");   /* the hostname does not matter then */
    char *c2 = slurp(fx->cert, &clen2), *k2 = slurp(fx->key, &klen2);
    assert_int_equal(clen, clen2);
    assert_memory_equal(c1, c2, clen);
    assert_int_equal(klen, klen2);
    assert_memory_equal(k1, k2, klen);
    assert_int_equal(stat(fx->key, &st2), 0);
    assert_int_equal(st1.st_ino, st2.st_ino);
    assert_int_equal(st2.st_mode & 07777, 0600);
    free(c1);
    free(c2);
    free(k1);
    free(k2);
}

/* Broken, missing or mismatched files are replaced by a fresh pair that loads. */
static void test_self_signed_replaces_bad_pair(void **state)
{
    struct fixture *fx = *state;
    make_pair(fx->cert2, fx->key2, "b.example.test");
    size_t n1, n2;
    enum { GARBAGE_KEY, MISSING_KEY, MISSING_CERT, FOREIGN_KEY, NCASES };
    for (int c = 0; c < NCASES; c++) {
        make_pair(fx->cert, fx->key, "mx.example.test");
        char *before = slurp(fx->cert, &n1);
        switch (c) {
        case GARBAGE_KEY: put_file(fx->key, "-----BEGIN PRIVATE KEY-----\nnot a key\n"); break;
        case MISSING_KEY: assert_int_equal(unlink(fx->key), 0); break;
        case MISSING_CERT: assert_int_equal(unlink(fx->cert), 0); break;
        case FOREIGN_KEY: {
            size_t kn;
            char *k = slurp(fx->key2, &kn);
            put_file(fx->key, k);
            free(k);
            break;
        }
        }
        make_pair(fx->cert, fx->key, "mx.example.test");
        char *after = slurp(fx->cert, &n2);
        assert_false(n1 == n2 && memcmp(before, after, n1) == 0);
        struct stat st;
        assert_int_equal(stat(fx->key, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);

        struct buf err = BUF_INIT;
        SSL_CTX *ctx = tls_server_ctx_new(fx->cert, fx->key, &err);
        if (ctx == NULL)
            fail_msg("case %d: %s", c, buf_cstr(&err));
        SSL_CTX_free(ctx);
        buf_release(&err);
        free(before);
        free(after);
    }
}

static void test_self_signed_bad_hostname(void **state)
{
    struct fixture *fx = *state;
    char long_host[70];
    memset(long_host, 'a', 65);
    long_host[65] = '\0';
    static const struct {
        const char *host;
        const char *want;
    } cases[] = {
        { "", "hostname for a self-signed certificate must be 1 to 253 characters" },
        { "bad host", "hostname for a self-signed certificate is not a DNS name: \"bad host\"" },
        { "mx.example.test,DNS:evil.test",
          "hostname for a self-signed certificate is not a DNS name: \"mx.example.test,DNS:evil.test\"" },
        { "mx\n", "hostname for a self-signed certificate is not a DNS name: \"mx\\x0a\"" },
        { NULL, "hostname longer than 64 characters does not fit a certificate CN" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf err = BUF_INIT;
        const char *host = cases[i].host != NULL ? cases[i].host : long_host;
        assert_false(tls_self_signed(fx->cert, fx->key, host, &err));
        assert_string_equal(buf_cstr(&err), cases[i].want);
        buf_release(&err);
        assert_int_equal(count_entries(fx->dir), 1);    /* only b/: nothing written */
    }
}

static void test_self_signed_unwritable_dir(void **state)
{
    struct fixture *fx = *state;
    char cert[160], key[160];
    snprintf(cert, sizeof cert, "%s/missing/cert.pem", fx->dir);
    snprintf(key, sizeof key, "%s/missing/key.pem", fx->dir);
    struct buf err = BUF_INIT;
    assert_false(tls_self_signed(cert, key, "mx.example.test", &err));
    assert_int_equal(strncmp(buf_cstr(&err), key, strlen(key)), 0);
    assert_non_null(strstr(buf_cstr(&err), ": cannot create a temporary file: No such file or directory"));
    buf_release(&err);
}

/* Drives both ends of a BIO pair until the handshake completes or one side fails. */
static bool handshake(SSL *server, SSL *client)
{
    BIO *sb, *cb;
    assert_int_equal(BIO_new_bio_pair(&sb, 0, &cb, 0), 1);
    SSL_set_bio(server, sb, sb);
    SSL_set_bio(client, cb, cb);
    SSL_set_accept_state(server);
    SSL_set_connect_state(client);
    bool s_done = false, c_done = false;
    for (int i = 0; i < 100 && !(s_done && c_done); i++) {
        if (!c_done) {
            int r = SSL_do_handshake(client);
            if (r == 1)
                c_done = true;
            else if (SSL_get_error(client, r) != SSL_ERROR_WANT_READ)
                return false;
        }
        if (!s_done) {
            int r = SSL_do_handshake(server);
            if (r == 1)
                s_done = true;
            else if (SSL_get_error(server, r) != SSL_ERROR_WANT_READ)
                return false;
        }
    }
    return s_done && c_done;
}

struct hs_case {
    int client_min, client_max;     /* 0: OpenSSL's default */
    const char *client_ciphers;     /* NULL: OpenSSL's default */
    bool ok;
    const char *want;               /* tls_describe() of the server end */
};

static const struct hs_case hs_cases[] = {
    { 0, 0, NULL, true, "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)" },
    { TLS1_2_VERSION, TLS1_2_VERSION, NULL, true,
      "TLSv1.2 with cipher ECDHE-ECDSA-AES256-GCM-SHA384 (256/256 bits)" },
    /* server preference: the client's order does not win */
    { TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384", true,
      "TLSv1.2 with cipher ECDHE-ECDSA-AES256-GCM-SHA384 (256/256 bits)" },
    { TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305", true,
      "TLSv1.2 with cipher ECDHE-ECDSA-CHACHA20-POLY1305 (256/256 bits)" },
    /* CBC suites are not offered */
    { TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA", false, NULL },
    /* nor are protocols older than TLS 1.2 */
    { TLS1_VERSION, TLS1_1_VERSION, "DEFAULT:@SECLEVEL=0", false, NULL },
};

static void test_handshakes(void **state)
{
    struct fixture *fx = *state;
    make_pair(fx->cert, fx->key, "mx.example.test");
    struct buf err = BUF_INIT;
    SSL_CTX *sctx = tls_server_ctx_new(fx->cert, fx->key, &err);
    if (sctx == NULL)
        fail_msg("tls_server_ctx_new: %s", buf_cstr(&err));
    assert_int_equal(SSL_CTX_get_options(sctx) & SSL_OP_NO_COMPRESSION, SSL_OP_NO_COMPRESSION);
    assert_int_equal(SSL_CTX_get_options(sctx) & SSL_OP_NO_RENEGOTIATION, SSL_OP_NO_RENEGOTIATION);
    assert_int_equal(SSL_CTX_get_min_proto_version(sctx), TLS1_2_VERSION);

    for (size_t i = 0; i < sizeof hs_cases / sizeof hs_cases[0]; i++) {
        const struct hs_case *c = &hs_cases[i];
        SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
        assert_non_null(cctx);
        SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
        if (c->client_min)
            assert_int_equal(SSL_CTX_set_min_proto_version(cctx, c->client_min), 1);
        if (c->client_max)
            assert_int_equal(SSL_CTX_set_max_proto_version(cctx, c->client_max), 1);
        if (c->client_ciphers)
            assert_int_equal(SSL_CTX_set_cipher_list(cctx, c->client_ciphers), 1);
        SSL *server = SSL_new(sctx), *client = SSL_new(cctx);
        assert_non_null(server);
        assert_non_null(client);
        bool ok = handshake(server, client);
        ERR_clear_error();
        if (ok != c->ok)
            fail_msg("case %zu: handshake %s", i, ok ? "succeeded" : "failed");
        if (ok) {
            struct buf d = BUF_INIT;
            buf_puts(&d, "with TLS: ");
            tls_describe(server, &d);
            assert_int_equal(strncmp(buf_cstr(&d), "with TLS: TLSv1.", 16), 0);
            struct buf want = BUF_INIT;
            buf_printf(&want, "with TLS: %s", c->want);
            assert_string_equal(buf_cstr(&d), buf_cstr(&want));
            buf_release(&d);
            buf_release(&want);
        }
        SSL_free(server);
        SSL_free(client);
        SSL_CTX_free(cctx);
    }
    SSL_CTX_free(sctx);
    buf_release(&err);
}

/* Each failure names the file at the start of the message and leaves no OpenSSL error queued. */
static void test_ctx_errors(void **state)
{
    struct fixture *fx = *state;
    make_pair(fx->cert, fx->key, "mx.example.test");
    make_pair(fx->cert2, fx->key2, "b.example.test");
    char missing[160], garbage[160];
    snprintf(missing, sizeof missing, "%s/missing.pem", fx->dir);
    snprintf(garbage, sizeof garbage, "%s/garbage.pem", fx->dir);
    put_file(garbage, "this is not PEM\n");
    /* a key of another type lands in its own slot, so only the final check sees the mismatch */
    char rsa[160];
    snprintf(rsa, sizeof rsa, "%s/rsa.pem", fx->dir);
    EVP_PKEY *rsa_key = EVP_RSA_gen(2048);
    assert_non_null(rsa_key);
    FILE *f = fopen(rsa, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, rsa_key, NULL, NULL, 0, NULL, NULL), 1);
    assert_int_equal(fclose(f), 0);
    EVP_PKEY_free(rsa_key);

    struct {
        const char *cert, *key;
        const char *prefix;     /* "%1$s" is cert, "%2$s" is key */
        const char *reason;     /* OpenSSL's text somewhere after it */
    } cases[] = {
        { missing, fx->key, "%1$s: cannot load the certificate chain: error:", "No such file or directory" },
        { garbage, fx->key, "%1$s: cannot load the certificate chain: error:", "no start line" },
        { fx->cert, missing, "%2$s: cannot load the private key for certificate %1$s: error:",
          "No such file or directory" },
        { fx->cert, garbage, "%2$s: cannot load the private key for certificate %1$s: error:",
          "PEM lib" },
        { fx->cert, rsa, "%2$s: private key does not match certificate %1$s: error:",
          "no certificate assigned" },
        { fx->cert, fx->key2, "%2$s: private key does not match certificate %1$s: error:",
          "key values mismatch" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf err = BUF_INIT, prefix = BUF_INIT;
        buf_printf(&prefix, cases[i].prefix, cases[i].cert, cases[i].key);
        assert_null(tls_server_ctx_new(cases[i].cert, cases[i].key, &err));
        if (strncmp(buf_cstr(&err), buf_cstr(&prefix), prefix.len) != 0
            || strstr(buf_cstr(&err) + prefix.len, cases[i].reason) == NULL)
            fail_msg("case %zu: got \"%s\"", i, buf_cstr(&err));
        assert_int_equal(ERR_peek_error(), 0);
        buf_release(&err);
        buf_release(&prefix);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_self_signed_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_self_signed_fresh_each_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_self_signed_keeps_valid_pair, setup, teardown),
        cmocka_unit_test_setup_teardown(test_self_signed_replaces_bad_pair, setup, teardown),
        cmocka_unit_test_setup_teardown(test_self_signed_bad_hostname, setup, teardown),
        cmocka_unit_test_setup_teardown(test_self_signed_unwritable_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handshakes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ctx_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
