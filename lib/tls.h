/*
 * tls.h - OpenSSL contexts for the edge (server side) and, later, the relay (client side).
 *
 * Server contexts allow TLS 1.2 and 1.3 only, prefer the server's cipher order, disable
 * compression, renegotiation and session tickets' cross-process reuse issues (tickets on, keys
 * per process), and load a PEM chain and key. A self-signed certificate can be generated for the
 * embedded defaults, so a fresh `mxgate run` offers STARTTLS and AUTH at once.
 */
#ifndef MXG_TLS_H
#define MXG_TLS_H

#include <stdbool.h>

#include <openssl/ssl.h>

#include "buf.h"

/*
 * A context both sides start from: TLS 1.2 or newer, no compression, no renegotiation. NULL with
 * "cannot create a TLS <side> context: ..." in err on failure.
 */
SSL_CTX *tls_ctx_base(const SSL_METHOD *method, const char *side, struct buf *err);
/* A server context from PEM files; NULL with a message in err (naming the file) on failure. */
SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, struct buf *err);
/*
 * Writes a fresh self-signed certificate and key (EC P-256, 10 years, CN and SAN = hostname) to
 * cert_file and key_file (key mode 0600), unless both already exist. false with err on failure.
 */
bool tls_self_signed(const char *cert_file, const char *key_file, const char *hostname, struct buf *err)
    __attribute__((warn_unused_result));
/* Appends ": " and every queued OpenSSL error (or a note that there is none), then empties the queue. */
void tls_append_errors(struct buf *err);
/* "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)" for the Received header. */
void tls_describe(SSL *ssl, struct buf *out);

#endif
