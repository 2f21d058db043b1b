/*
 * sasl.c - strict base64 (RFC 4648 section 4) and the SASL PLAIN message split (RFC 4616).
 *
 * Owns nothing between calls. The bytes come straight from an SMTP client, so everything is
 * checked before it is used: OpenSSL's EVP_DecodeBlock does the arithmetic, but it skips
 * whitespace and turns padding into zero bytes, so the alphabet, the length and the padding are
 * validated here first and the padding bytes cut off afterwards. Malformed input is a plain
 * false; what to answer the client (501 5.5.2) is the caller's business.
 */
#include "sasl.h"

#include <string.h>

#include <openssl/evp.h>

#include "mem.h"

/* RFC 4616 section 2: authzid, authcid and passwd are each at most 255 octets. */
#define SASL_PLAIN_FIELD_MAX 255

/* Input is decoded in slices of this many characters (a multiple of 4) so sizes fit an int. */
#define B64_DECODE_SLICE 65536
/* Input is encoded in slices of this many bytes (a multiple of 3) for the same reason. */
#define B64_ENCODE_SLICE 49152

static bool b64_alphabet(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+'
        || c == '/';
}

bool base64_decode(const char *s, size_t n, struct buf *out)
{
    if (n % 4 != 0)
        return false;
    size_t pad = 0;
    if (n > 0 && s[n - 1] == '=')
        pad = (n > 1 && s[n - 2] == '=') ? 2 : 1;
    for (size_t i = 0; i < n - pad; i++) {
        if (!b64_alphabet((unsigned char)s[i]))
            return false;   /* also catches '=' before the last two places, "x=y=" style */
    }

    size_t start = out->len;
    for (size_t off = 0; off < n; off += B64_DECODE_SLICE) {
        size_t take = n - off < B64_DECODE_SLICE ? n - off : B64_DECODE_SLICE;
        buf_reserve(out, take / 4 * 3);
        int got = EVP_DecodeBlock((unsigned char *)out->data + out->len, (const unsigned char *)s + off,
                                  (int)take);
        if (got < 0 || (size_t)got != take / 4 * 3) {
            /* cannot happen after the checks above; do not leave half a result behind */
            out->len = start;
            out->data[start] = '\0';
            return false;
        }
        out->len += (size_t)got;
    }
    out->len -= pad;    /* EVP_DecodeBlock wrote a zero byte for each '=' */
    if (out->data != NULL)
        out->data[out->len] = '\0';
    return true;
}

void base64_encode(const void *p, size_t n, struct buf *out)
{
    const unsigned char *in = p;
    buf_reserve(out, 0);    /* an empty input still leaves out a valid string */
    for (size_t off = 0; off < n; off += B64_ENCODE_SLICE) {
        size_t take = n - off < B64_ENCODE_SLICE ? n - off : B64_ENCODE_SLICE;
        /* EVP_EncodeBlock also writes a NUL after the text, which buf_reserve left room for */
        buf_reserve(out, (take + 2) / 3 * 4);
        int got = EVP_EncodeBlock((unsigned char *)out->data + out->len, in + off, (int)take);
        out->len += (size_t)got;
    }
    out->data[out->len] = '\0';
}

bool sasl_plain_split(const char *msg, size_t len, char **user, char **pass)
{
    *user = NULL;
    *pass = NULL;

    const char *nul1 = memchr(msg, '\0', len);
    if (nul1 == NULL)
        return false;
    const char *authcid = nul1 + 1;
    const char *nul2 = memchr(authcid, '\0', len - (size_t)(authcid - msg));
    if (nul2 == NULL)
        return false;
    const char *passwd = nul2 + 1;
    size_t passwd_len = len - (size_t)(passwd - msg);
    if (memchr(passwd, '\0', passwd_len) != NULL)
        return false;   /* a third NUL: not the message RFC 4616 defines */

    size_t authzid_len = (size_t)(nul1 - msg);
    size_t authcid_len = (size_t)(nul2 - authcid);
    if (authcid_len == 0 || passwd_len == 0)
        return false;
    if (authzid_len > SASL_PLAIN_FIELD_MAX || authcid_len > SASL_PLAIN_FIELD_MAX
        || passwd_len > SASL_PLAIN_FIELD_MAX)
        return false;
    /* acting for another identity is not offered, so an authzid may only name the user itself */
    if (authzid_len != 0 && (authzid_len != authcid_len || memcmp(msg, authcid, authcid_len) != 0))
        return false;

    *user = xstrndup(authcid, authcid_len);
    *pass = xstrndup(passwd, passwd_len);
    return true;
}
