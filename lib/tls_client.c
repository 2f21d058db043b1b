/*
 * tls_client.c - client TLS contexts and per-connection SSL objects for outbound SMTP
 * (RFC 3207 STARTTLS, RFC 7435 opportunistic TLS, RFC 6125 host name checks, RFC 6066 SNI).
 *
 * Owns nothing between calls: contexts and SSL objects returned belong to the caller. Protocols are
 * TLS 1.2 and 1.3 (RFC 8996); the cipher list is OpenSSL's default, since an opportunistic client
 * gains nothing by refusing a server's choice that OpenSSL's security level already accepts.
 * Under "may" and "encrypt" the certificate is not checked (SSL_VERIFY_NONE); under "verify" the
 * handshake itself fails when the chain or the name does not verify, so no byte of mail is ever
 * written to an unverified peer.
 *
 * Failures are environment errors: NULL with a message in the caller's buffer carrying OpenSSL's
 * own error text; the OpenSSL error queue is emptied so later messages never show stale entries.
 */
#include "tls_client.h"
#include "tls.h"

#include <arpa/inet.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

/* RFC 1035: a host name (without the trailing dot) is at most 253 characters. */
#define TLS_CLIENT_HOST_MAX 253

static const char *const policy_names[] = {
    [TLS_POLICY_NONE] = "none",
    [TLS_POLICY_MAY] = "may",
    [TLS_POLICY_ENCRYPT] = "encrypt",
    [TLS_POLICY_VERIFY] = "verify",
};

bool tls_policy_parse(const char *s, enum tls_policy *out)
{
    for (size_t i = 0; i < sizeof policy_names / sizeof policy_names[0]; i++) {
        if (strcmp(s, policy_names[i]) == 0) {
            *out = (enum tls_policy)i;
            return true;
        }
    }
    return false;
}

const char *tls_policy_name(enum tls_policy p)
{
    if ((size_t)p < sizeof policy_names / sizeof policy_names[0])
        return policy_names[p];
    return "unknown";
}

SSL_CTX *tls_client_ctx_new(const char *ca_file, const char *ca_dir, struct buf *err)
{
    SSL_CTX *ctx = tls_ctx_base(TLS_client_method(), "client", err);
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    if (ca_file != NULL || ca_dir != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, ca_file, ca_dir) != 1) {
            buf_printf(err, "cannot load trusted certificates from %s%s%s",
                       ca_file != NULL ? ca_file : "", ca_file != NULL && ca_dir != NULL ? " and " : "",
                       ca_dir != NULL ? ca_dir : "");
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        buf_puts(err, "cannot load the system's trusted certificates");
        goto fail;
    }
    return ctx;

fail:
    tls_append_errors(err);
    SSL_CTX_free(ctx);
    return NULL;
}

/* true for "192.0.2.1" or "2001:db8::1": such a name is never sent as SNI (RFC 6066 §3). */
static bool is_ip_literal(const char *host)
{
    unsigned char tmp[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
}

SSL *tls_client_ssl_new(SSL_CTX *ctx, enum tls_policy policy, const char *host, struct buf *err)
{
    ERR_clear_error();
    char name[TLS_CLIENT_HOST_MAX + 2] = "";
    if (host != NULL) {
        size_t n = strlen(host);
        if (n > 0 && host[n - 1] == '.')
            n--;    /* the absolute form names the same host; certificates never carry the dot */
        if (n > TLS_CLIENT_HOST_MAX) {
            buf_printf(err, "TLS peer name longer than %d characters", TLS_CLIENT_HOST_MAX);
            return NULL;
        }
        memcpy(name, host, n);
        name[n] = '\0';
    }
    if (policy == TLS_POLICY_VERIFY && name[0] == '\0') {
        buf_puts(err, "TLS policy verify needs the server's host name");
        return NULL;
    }
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL) {
        buf_puts(err, "cannot create a TLS connection");
        tls_append_errors(err);
        return NULL;
    }
    SSL_set_connect_state(ssl);
    if (name[0] != '\0' && !is_ip_literal(name) && SSL_set_tlsext_host_name(ssl, name) != 1) {
        buf_puts(err, "cannot set the TLS server name indication");
        goto fail;
    }
    if (policy == TLS_POLICY_VERIFY) {
        X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        int ok = is_ip_literal(name) ? X509_VERIFY_PARAM_set1_ip_asc(param, name)
                                     : X509_VERIFY_PARAM_set1_host(param, name, 0);
        if (ok != 1) {
            buf_puts(err, "cannot set the TLS peer name to verify");
            goto fail;
        }
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    }
    return ssl;

fail:
    tls_append_errors(err);
    SSL_free(ssl);
    return NULL;
}

void tls_client_failure(SSL *ssl, unsigned long err_code, struct buf *out)
{
    /* under VERIFY_NONE the verification result is computed too, but it did not fail anything */
    long v = SSL_get_verify_result(ssl);
    if ((SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) && v != X509_V_OK) {
        buf_printf(out, "certificate verify failed: %s", X509_verify_cert_error_string(v));
    } else if (err_code != 0) {
        char text[256];
        ERR_error_string_n(err_code, text, sizeof text);
        buf_puts(out, text);
    } else {
        buf_puts(out, "connection closed during the TLS handshake");
    }
    ERR_clear_error();
}
