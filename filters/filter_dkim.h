/*
 * filter_dkim.h - DKIM verification and signing (RFC 6376; Ed25519 keys, RFC 8463; RSA-SHA1 and
 * short RSA keys refused, RFC 8301) on top of libopendkim, results written for
 * Authentication-Results (RFC 8601, header.b from RFC 6008).
 *
 * Verifying, on the event loop, while the message streams in:
 *
 *   struct dkim_verify *v = dkim_verify_start(filter, tx->queue_id);
 *   dkim_verify_feed(v, chunk, len);            // as DATA arrives (CRLF, dot-unstuffed)
 *   ...
 *   dkim_verify_finish(v, got_dkim, tx);        // got_dkim(results, tx) runs later, once
 *
 * The key records (selector._domainkey.domain TXT) are fetched through lib/dns.h as soon as the
 * header section is complete, in parallel with the body, so libopendkim never does DNS itself and
 * nothing blocks the loop. One result per signature, in header order (at most
 * DKIM_VERIFY_MAX_SIGS of them are evaluated; the rest are counted and ignored, as RFC 6376
 * section 6.1 allows):
 *   pass       the signature verified (a=rsa-sha256 or ed25519-sha256, RSA key >= 1024 bits)
 *   fail       the signature or the body hash did not verify (message changed, wrong key)
 *   neutral    the signature could not be processed (syntax, expired, i= outside d=, ...)
 *   temperror  the key lookup failed temporarily (DNS_TEMPFAIL), or libopendkim ran out of a
 *              resource: ask again later
 *   permerror  no key record, or a key record that cannot be used (revoked, malformed, k= or h=
 *              not matching the signature)
 *   policy     the signature verified but is not acceptable: a=rsa-sha1 or an RSA key under
 *              1024 bits (RFC 8301), t=s violated
 * An unsigned message has no results; it renders as "dkim=none".
 *
 * Signing (the relay, before delivery): dkim_sign_message() picks the configured key(s) of the
 * sender domain or of its closest listed parent, signs relaxed/relaxed and returns the folded
 * DKIM-Signature field(s) to prepend. libopendkim canonicalizes and hashes; OpenSSL signs the
 * hash (libopendkim's own signing leaks memory on every Ed25519 signature: filter_dkim_sign.c).
 * It is CPU only, and what it shares (the DKIM_LIB, the keys) never changes after start-up, so it
 * may run on the loop or in a worker thread.
 *
 * libopendkim is initialised once per process (a DKIM_LIB shared by every filter and signer,
 * reference-counted, options set only at creation); each message gets its own handle.
 */
#ifndef MXG_FILTER_DKIM_H
#define MXG_FILTER_DKIM_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "conf.h"

struct event_base;
struct dns;

/* Signatures evaluated per message; more would let one message cost a DNS query each. */
#define DKIM_VERIFY_MAX_SIGS 8

/* ---- verification ---------------------------------------------------------------------------- */

struct dkim_filter;
struct dkim_verify;

/* The outcome for one signature. Strings are owned by the results. */
struct dkim_sig_result {
    const char *result;         /* "pass", "fail", "neutral", "temperror", "permerror", "policy" */
    const char *reason;         /* why, for logs: a constant string (never network text) */
    char *domain;               /* d= as found, "" when absent: network text, sanitise to log */
    char *selector;             /* s= as found, "" when absent: network text */
    char *algorithm;            /* a= as found, "" when absent: network text */
    char b[9];                  /* first 8 characters of b= (header.b, RFC 6008), NUL-terminated */
};

/* All signatures of one message, in header order; n == 0: unsigned. */
struct dkim_results {
    size_t n;
    struct dkim_sig_result *sig;
    size_t ignored;             /* signatures beyond DKIM_VERIFY_MAX_SIGS, not evaluated */
};

/* Called once per dkim_verify_finish(), from the event loop; r is valid during the call only. */
typedef void dkim_verify_done_fn(const struct dkim_results *r, void *arg);

/*
 * A verifier whose key lookups go through dns (and whose deferred callbacks run on base). Both
 * must outlive the filter. NULL with a message in err if libopendkim cannot be initialised.
 */
struct dkim_filter *dkim_filter_new(struct event_base *base, struct dns *dns, struct buf *err)
    __attribute__((warn_unused_result));
/* Every verification must be finished (its callback run) or cancelled first. NULL is a no-op. */
void dkim_filter_free(struct dkim_filter *f);

/*
 * Starts verifying one message. queue_id (may be NULL) names it in libopendkim's own state; it
 * is copied. Never fails: a libopendkim failure shows in the results as temperror.
 */
struct dkim_verify *dkim_verify_start(struct dkim_filter *f, const char *queue_id);
/*
 * The next bytes of the message exactly as received (CRLF line ends, dot-unstuffed), in chunks
 * of any size. Once the header section is complete the key lookups start. CPU only. Calling it
 * after dkim_verify_finish() is a bug (the process aborts).
 */
void dkim_verify_feed(struct dkim_verify *v, const char *data, size_t len);
/*
 * The message is complete: done(results, arg) is called once the key lookups have answered
 * (within the dns timeout), always from the event loop and never from inside this call. v is
 * freed right after done returns; neither done nor anyone else may use v again after this call,
 * except dkim_verify_cancel() before done ran. A lookup that dns_free() cancels counts as
 * temperror (and done then runs from inside dns_free).
 */
void dkim_verify_finish(struct dkim_verify *v, dkim_verify_done_fn *done, void *arg);
/* Stops and frees a verification: pending lookups cancelled, done never called. NULL: no-op. */
void dkim_verify_cancel(struct dkim_verify *v);
/* Key lookups started so far (distinct selector/domain pairs): for tests and logs. */
size_t dkim_verify_lookups(const struct dkim_verify *v);

/*
 * Appends the RFC 8601 resinfo part for r: "dkim=pass header.d=example.test header.s=sel
 * header.b=abcdefgh" per signature joined by "; ", or "dkim=none". Empty properties are left out;
 * a value that is not an RFC 2045 token is written as a quoted-string, and bytes outside
 * printable ASCII as '?', so network text cannot break the header field.
 */
void dkim_auth_results(const struct dkim_results *r, struct buf *out);
/* The result name for a libopendkim DKIM_SIGERROR_* code (see the table at the top). */
const char *dkim_sigerror_result(int sigerror);

/* ---- signing --------------------------------------------------------------------------------- */

struct dkim_signer;

/*
 * Loads signing keys (reads files: call at start-up or reload, not per message). keys entries are
 * "domain:selector:/path/to/key.pem": a PEM private key (PKCS#8 or traditional, unencrypted; an
 * encrypted key is refused, never prompted for), RSA of 1024 to 4096 bits (rsa-sha256) or
 * Ed25519 (ed25519-sha256); several entries may name the same domain (each gives one signature,
 * e.g. RSA and Ed25519 side by side). signed_headers: colon-separated header field names; NULL or
 * "" = from:to:cc:subject:date:message-id:reply-to:in-reply-to:references:mime-version:
 * content-type:content-transfer-encoding. Every instance of a listed field present is signed;
 * From is always signed and always oversigned (listed once more in h=, RFC 6376 section 8.15),
 * so no From can be added. NULL with a message in err on any error.
 */
struct dkim_signer *dkim_signer_new(const struct strlist *keys, const char *signed_headers,
                                    struct buf *err) __attribute__((warn_unused_result));
/* Forgets the keys (private key text is wiped). NULL is a no-op. */
void dkim_signer_free(struct dkim_signer *s);

/*
 * Signs msg (the whole message, CRLF line ends, not dot-stuffed) for domain (the author's domain,
 * any case, one trailing dot allowed) with every key listed for that domain or, failing that,
 * for its closest listed parent domain (d= is then the parent). Appends the complete
 * "DKIM-Signature: ..." field(s), folded into lines of at most 78 characters and CRLF-terminated,
 * to sig_header, to be prepended to the message (in that order). False with a message in err
 * (sig_header untouched) when no key covers the domain (the caller decides whether that matters)
 * or signing failed (e.g. no From field).
 */
bool dkim_sign_message(const struct dkim_signer *s, const char *domain, const char *msg,
                       size_t len, struct buf *sig_header, struct buf *err)
    __attribute__((warn_unused_result));

#endif
