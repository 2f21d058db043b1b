/*
 * tls_client.h - OpenSSL client contexts for outbound SMTP (STARTTLS, RFC 3207).
 *
 * One context per trust configuration (CA file / directory, or the system store) serves every
 * destination; what differs per destination (the TLS policy, the name sent as SNI and checked in
 * the certificate) is set on each connection's SSL by tls_client_ssl_new().
 */
#ifndef MXG_TLS_CLIENT_H
#define MXG_TLS_CLIENT_H

#include <stdbool.h>

#include <openssl/ssl.h>

#include "buf.h"

/* Per-destination STARTTLS policy, named as in Postfix's smtp_tls_security_level. */
enum tls_policy {
    TLS_POLICY_NONE,        /* never STARTTLS */
    TLS_POLICY_MAY,         /* STARTTLS when offered, certificate not checked (RFC 7435) */
    TLS_POLICY_ENCRYPT,     /* TLS required, certificate not checked */
    TLS_POLICY_VERIFY,      /* TLS required, chain and host name verified */
};

/* "none", "may", "encrypt", "verify"; false for anything else. */
bool tls_policy_parse(const char *s, enum tls_policy *out);
const char *tls_policy_name(enum tls_policy p);

/*
 * A client context (TLS 1.2 and 1.3, no compression, no renegotiation) trusting ca_file and/or
 * ca_dir, or the system's default store when both are NULL. NULL with a message in err on failure.
 * The caller owns the context (SSL_CTX_free).
 */
SSL_CTX *tls_client_ctx_new(const char *ca_file, const char *ca_dir, struct buf *err);

/*
 * A fresh SSL in client mode for one connection to host (the MX host name): SNI = host unless it
 * is an IP address; under TLS_POLICY_VERIFY the peer's chain must verify and host must match the
 * certificate (no partial wildcards). NULL with err on failure (host missing under verify).
 */
SSL *tls_client_ssl_new(SSL_CTX *ctx, enum tls_policy policy, const char *host, struct buf *err);

/*
 * Why the handshake of ssl failed, for a log line and a delivery status: the certificate
 * verification error when there is one ("certificate verify failed: self-signed certificate"),
 * else OpenSSL's queued error (err_code, as bufferevent_get_openssl_error() returns it; 0 = none).
 */
void tls_client_failure(SSL *ssl, unsigned long err_code, struct buf *out);

#endif
