/*
 * filter_dkim_sign.c - DKIM signing (RFC 6376, relaxed/relaxed; rsa-sha256 and ed25519-sha256,
 * RFC 8463), see filter_dkim.h.
 *
 * Owns: the configured keys (parsed once by OpenSSL) and the list of fields to sign.
 *
 * libopendkim 2.11 leaks the EVP_PKEY and the output buffer of every Ed25519 signature made with
 * dkim_sign(), since dkim_free() releases the crypto state of RSA signatures only: about 550
 * bytes a message (ASan: 5.5 KB for 10 Ed25519 signatures, nothing for RSA). It also takes keys
 * only as PEM text, parsed again for every message (for Ed25519 a raw base64 seed is refused,
 * and base64 DER is decoded only when it starts with "MII", which Ed25519 DER does not). So
 * signing splits RFC 6376 section 3.7 in two: libopendkim canonicalizes and hashes, through
 * verification handles used as hashers (the body hash under a stand-in signature, then the
 * header hash of the field being built, whose b= value libopendkim deletes as every verifier
 * does), and OpenSSL signs that hash with a key parsed once: RSASSA-PKCS1-v1_5 with SHA-256, or
 * PureEdDSA over the SHA-256 hash (RFC 8463 section 3). The tests check the result with
 * libopendkim's and python3-dkim's verifiers.
 *
 * Failures are a message in the caller's err; keys that cannot be used are refused at start.
 */
#include "filter_dkim.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <dkim.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "filter_dkim_int.h"
#include "mem.h"

#define SIG_FIELD "DKIM-Signature"

static const char *const default_headers[] = {
    "from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to", "references",
    "mime-version", "content-type", "content-transfer-encoding", NULL,
};

/* One configured key. */
struct sign_key {
    char *domain;               /* d=: lower case, no trailing dot */
    char *selector;             /* s= */
    EVP_PKEY *pkey;             /* RSA of >= 1024 bits, or Ed25519 */
    bool ed25519;
};

struct dkim_signer {
    DKIM_LIB *lib;
    struct sign_key *keys;
    size_t n;
    char **hdrs;                /* lower-case names of the fields to sign, NULL-terminated */
};

/* A DNS name (domain or selector): letters, digits, '-', '_', non-empty dot-separated labels. */
static bool dns_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c == '-' || c == '_' || (c == '.' && s[i + 1] != '.')))
            return false;
    }
    return true;
}

static char *lower_dup(const char *s, size_t n)
{
    char *d = xstrndup(s, n);
    for (char *p = d; *p != '\0'; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

/* OpenSSL's passphrase callback: never prompt on a terminal; an encrypted key just fails. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* Parses "domain:selector:path" and reads the key file into k; false with err. */
static bool parse_key(struct sign_key *k, const char *spec, struct buf *err)
{
    const char *c1 = strchr(spec, ':');
    const char *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
    if (c2 == NULL || c2[1] == '\0') {
        buf_printf(err, "DKIM key \"%s\": want domain:selector:/path/to/key.pem", spec);
        return false;
    }
    size_t dlen = (size_t)(c1 - spec);
    if (dlen > 0 && spec[dlen - 1] == '.')
        dlen--;
    if (!dns_name_ok(spec, dlen) || !dns_name_ok(c1 + 1, (size_t)(c2 - c1 - 1))) {
        buf_printf(err, "DKIM key \"%s\": bad domain or selector", spec);
        return false;
    }
    k->domain = lower_dup(spec, dlen);
    k->selector = lower_dup(c1 + 1, (size_t)(c2 - c1 - 1));
    const char *path = c2 + 1;
    BIO *in = BIO_new_file(path, "r");
    k->pkey = in != NULL ? PEM_read_bio_PrivateKey(in, NULL, no_passphrase, NULL) : NULL;
    BIO_free(in);
    if (k->pkey == NULL) {
        char why[256];
        ERR_error_string_n(ERR_peek_last_error(), why, sizeof why);
        ERR_clear_error();
        buf_printf(err, "DKIM key %s: cannot read a PEM private key (%s)", path, why);
        return false;
    }
    int type = EVP_PKEY_get_base_id(k->pkey);
    k->ed25519 = type == EVP_PKEY_ED25519;
    if (type == EVP_PKEY_RSA && EVP_PKEY_get_bits(k->pkey) < 1024) {
        buf_printf(err, "DKIM key %s: RSA key under 1024 bits (RFC 8301)", path);
        return false;
    }
    if (type == EVP_PKEY_RSA && EVP_PKEY_get_bits(k->pkey) > 4096) {
        buf_printf(err, "DKIM key %s: RSA key over 4096 bits (verifiers need not accept it)", path);
        return false;
    }
    if (type != EVP_PKEY_RSA && !k->ed25519) {
        buf_printf(err, "DKIM key %s: neither RSA nor Ed25519", path);
        return false;
    }
    return true;
}

/* The names of the fields to sign; NULL with err for a bad list. */
static char **parse_headers(const char *list, struct buf *err)
{
    char **v = xcalloc(1, sizeof *v);
    size_t n = 0;
    if (list == NULL || list[strspn(list, " \t")] == '\0') {
        for (const char *const *d = default_headers; *d != NULL; d++) {
            v = xrealloc(v, (n + 2) * sizeof *v);
            v[n++] = xstrdup(*d);
            v[n] = NULL;
        }
        return v;
    }
    for (const char *p = list;; p++) {
        size_t len = strcspn(p, ":");
        const char *s = p + strspn(p, " \t");
        size_t sl = (size_t)(p + len - s);
        while (sl > 0 && (s[sl - 1] == ' ' || s[sl - 1] == '\t'))
            sl--;
        bool ok = sl > 0;
        for (size_t i = 0; i < sl; i++)
            ok = ok && (isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_');
        if (!ok) {
            buf_printf(err, "DKIM signed headers: bad field name \"%.*s\"", (int)len, p);
            for (size_t i = 0; i < n; i++)
                free(v[i]);
            free(v);
            return NULL;
        }
        v = xrealloc(v, (n + 2) * sizeof *v);
        v[n++] = lower_dup(s, sl);
        v[n] = NULL;
        p += len;
        if (*p == '\0')
            return v;
    }
}

struct dkim_signer *dkim_signer_new(const struct strlist *keys, const char *signed_headers,
                                    struct buf *err)
{
    DKIM_LIB *l = dkim_lib_ref(err);
    if (l == NULL)
        return NULL;
    struct dkim_signer *s = xcalloc(1, sizeof *s);
    s->lib = l;
    s->hdrs = parse_headers(signed_headers, err);
    bool ok = s->hdrs != NULL;
    if (ok && (keys == NULL || keys->n == 0)) {
        buf_puts(err, "DKIM signing: no keys given");
        ok = false;
    }
    if (ok)
        s->keys = xcalloc(keys->n, sizeof *s->keys);
    for (size_t i = 0; ok && i < keys->n; i++)
        ok = parse_key(&s->keys[s->n++], keys->v[i], err);
    if (!ok) {
        dkim_signer_free(s);
        return NULL;
    }
    return s;
}

void dkim_signer_free(struct dkim_signer *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->keys[i].domain);
        free(s->keys[i].selector);
        EVP_PKEY_free(s->keys[i].pkey);     /* OpenSSL wipes the private key material */
    }
    free(s->keys);
    for (char **h = s->hdrs; h != NULL && *h != NULL; h++)
        free(*h);
    free(s->hdrs);
    dkim_lib_unref();
    free(s);
}

/*
 * Runs sigfield, the header fields in head and then body through a verification handle used as a
 * hasher, and copies out the SHA-256 its first signature (sigfield) computed: the body hash
 * (want_body), or the header hash, which covers sigfield with its b= value deleted.
 */
static bool hash_pass(DKIM_LIB *l, const struct buf *sigfield, const char *head, size_t headlen,
                      const char *body, size_t bodylen, bool want_body, unsigned char out[32])
{
    DKIM_STAT st;
    DKIM *d = dkim_verify(l, (const u_char *)"mxgate-sign", NULL, &st);
    if (d == NULL)
        return false;
    struct dkim_feed f = { .dkim = d };
    (void)dkim_header(d, (u_char *)sigfield->data, sigfield->len);
    (void)dkim_feed_header(&f, head, headlen);
    dkim_feed_header_end(&f);
    st = dkim_eoh(d);
    if (st == DKIM_STAT_OK && bodylen > 0)
        st = dkim_body(d, (u_char *)body, bodylen);
    if (st == DKIM_STAT_OK)
        (void)dkim_eom(d, NULL);        /* no key is served (no context): hashes only */
    DKIM_SIGINFO **sigs = NULL;
    int n = 0;
    void *hh = NULL, *bh = NULL;
    size_t hhlen = 0, bhlen = 0;
    bool ok = st == DKIM_STAT_OK && dkim_getsiglist(d, &sigs, &n) == DKIM_STAT_OK && n > 0
              && dkim_sig_gethashes(sigs[0], &hh, &hhlen, &bh, &bhlen) == DKIM_STAT_OK
              && (want_body ? bhlen : hhlen) == 32;
    if (ok)
        memcpy(out, want_body ? bh : hh, 32);
    dkim_feed_release(&f);
    (void)dkim_free(d);
    return ok;
}

/* Appends s to a field being folded: on this line if it fits in 78 columns (after a space when
 * sp), else on a new line starting with a tab (counted as 8 columns). */
static void fold(struct buf *out, size_t *col, const char *s, size_t n, bool sp)
{
    if (*col + sp + n > 78) {
        buf_append(out, "\r\n\t", 3);
        *col = 8;
    } else if (sp) {
        buf_putc(out, ' ');
        (*col)++;
    }
    buf_append(out, s, n);
    *col += n;
}

/* Signs the header section head (bh: the body hash) with k; appends the field to out. */
static bool sign_one(const struct dkim_signer *s, const struct sign_key *k, const char *head,
                     size_t headlen, const char *names, const char *bh, struct buf *out,
                     struct buf *err)
{
    struct buf f = BUF_INIT, item = BUF_INIT;
    size_t col = sizeof SIG_FIELD;
    buf_puts(&f, SIG_FIELD ":");
    buf_printf(&item, "v=1; a=%s; c=relaxed/relaxed; d=%s; s=%s; t=%lld;",
               k->ed25519 ? "ed25519-sha256" : "rsa-sha256", k->domain, k->selector,
               (long long)time(NULL));
    for (char *tok = item.data, *next; tok != NULL; tok = next) {
        next = strchr(tok, ' ');
        fold(&f, &col, tok, next != NULL ? (size_t)(next++ - tok) : strlen(tok), true);
    }
    for (const char *p = names; *p != '\0';) {      /* h= broken after colons */
        size_t n = strcspn(p, ":");
        buf_reset(&item);
        buf_printf(&item, "%s%.*s%c", p == names ? "h=" : "", (int)n, p, p[n] ? ':' : ';');
        fold(&f, &col, item.data, item.len, p == names);
        p += n + (p[n] != '\0');
    }
    buf_reset(&item);
    buf_printf(&item, "bh=%s;", bh);
    fold(&f, &col, item.data, item.len, true);
    fold(&f, &col, "b=", 2, true);
    size_t mark = f.len;
    buf_puts(&f, "AAAA");   /* deleted before hashing: any base64 will do */
    unsigned char hh[32], sig[512];
    size_t siglen = sizeof sig;
    bool ok = hash_pass(s->lib, &f, head, headlen, NULL, 0, false, hh);
    if (ok && k->ed25519) {
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        ok = c != NULL && EVP_DigestSignInit(c, NULL, NULL, NULL, k->pkey) == 1
             && EVP_DigestSign(c, sig, &siglen, hh, sizeof hh) == 1;
        EVP_MD_CTX_free(c);
    } else if (ok) {
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k->pkey, NULL);
        ok = c != NULL && EVP_PKEY_sign_init(c) == 1
             && EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) == 1
             && EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) == 1
             && EVP_PKEY_sign(c, sig, &siglen, hh, sizeof hh) == 1;
        EVP_PKEY_CTX_free(c);
    }
    ERR_clear_error();
    if (ok) {
        f.data[f.len = mark] = '\0';
        char b64[700];
        size_t n = (size_t)EVP_EncodeBlock((unsigned char *)b64, sig, (int)siglen);
        for (size_t off = 0; off < n;) {    /* b= broken anywhere: FWS is allowed in base64 */
            size_t room = col < 78 ? 78 - col : 0;
            if (room == 0) {
                buf_append(&f, "\r\n\t", 3);
                col = 8;
                continue;
            }
            size_t take = n - off < room ? n - off : room;
            buf_append(&f, b64 + off, take);
            col += take;
            off += take;
        }
        buf_printf(out, "%s\r\n", f.data);
    } else {
        buf_printf(err, "DKIM signing for %s with selector %s failed", k->domain, k->selector);
    }
    buf_release(&f);
    buf_release(&item);
    return ok;
}

/*
 * Where the header section ends (after its blank line, or len), and the h= list: each field
 * whose name is listed, in message order, then "from" once more so that no From can be added
 * (RFC 6376 section 8.15). False when there is no From field.
 */
static bool scan_header(const struct dkim_signer *s, const char *msg, size_t len, size_t *headlen,
                        struct buf *names)
{
    bool from = false;
    size_t off = 0;
    while (off < len) {
        const char *line = msg + off, *lf = memchr(line, '\n', len - off);
        off = lf != NULL ? (size_t)(lf - msg) + 1 : len;
        size_t n = (size_t)(msg + off - line);
        n -= n > 0 && line[n - 1] == '\n';
        n -= n > 0 && line[n - 1] == '\r';
        if (n == 0)
            break;
        const char *colon = memchr(line, ':', n);
        if (line[0] == ' ' || line[0] == '\t' || colon == NULL)
            continue;
        size_t nl = (size_t)(colon - line);
        while (nl > 0 && (line[nl - 1] == ' ' || line[nl - 1] == '\t'))
            nl--;
        bool listed = nl == 4 && strncasecmp(line, "from", 4) == 0;
        from = from || listed;
        for (char **h = s->hdrs; !listed && *h != NULL; h++)
            listed = strlen(*h) == nl && strncasecmp(line, *h, nl) == 0;
        if (listed) {
            char *name = lower_dup(line, nl);
            buf_printf(names, "%s:", name);
            free(name);
        }
    }
    *headlen = off;
    buf_puts(names, "from");
    return from;
}

bool dkim_sign_message(const struct dkim_signer *s, const char *domain, const char *msg,
                       size_t len, struct buf *sig_header, struct buf *err)
{
    size_t dlen = strlen(domain);
    char *want = lower_dup(domain, dlen - (dlen > 0 && domain[dlen - 1] == '.'));
    const char *d = want;
    bool found = false;
    for (;;) {      /* the domain itself, then each parent: the first with keys signs */
        for (size_t i = 0; i < s->n && !found; i++)
            found = strcmp(s->keys[i].domain, d) == 0;
        const char *dot = strchr(d, '.');
        if (found || dot == NULL)
            break;
        d = dot + 1;
    }
    struct buf out = BUF_INIT, names = BUF_INIT, dummy = BUF_INIT;
    size_t headlen = 0;
    unsigned char bh[32];
    char bh64[48];
    bool ok = found;
    if (!found) {
        buf_puts(err, "no DKIM key for domain ");
        buf_append_sanitized(err, domain, strlen(domain), 256);
    } else if (!scan_header(s, msg, len, &headlen, &names)) {
        buf_printf(err, "DKIM signing for %s: no From field", d);
        ok = false;
    } else {
        /* the body hash is the same for every key: one pass, under a stand-in signature */
        buf_puts(&dummy, SIG_FIELD ": v=1; a=rsa-sha256; c=relaxed/relaxed; d=invalid; s=x; "
                 "h=from; bh=AAAA; b=AAAA");
        ok = hash_pass(s->lib, &dummy, NULL, 0, msg + headlen, len - headlen, true, bh);
        if (ok)
            EVP_EncodeBlock((unsigned char *)bh64, bh, sizeof bh);
        else
            buf_printf(err, "DKIM signing for %s: libopendkim could not hash the body", d);
    }
    for (size_t i = 0; ok && i < s->n; i++)
        if (strcmp(s->keys[i].domain, d) == 0)
            ok = sign_one(s, &s->keys[i], msg, headlen, names.data, bh64, &out, err);
    if (ok)
        buf_append(sig_header, out.data, out.len);
    buf_release(&out);
    buf_release(&names);
    buf_release(&dummy);
    free(want);
    return ok;
}
