/*
 * dkim_keys.h - test support for the DKIM tests (test_filter_dkim.c, test_filter_dkim_sign.c):
 * a temp directory of private keys made with the openssl tool, their public keys as the p= of a
 * DKIM key record (RFC 6376 3.6.1, RFC 8463 for Ed25519), and signers over keys in it.
 *
 * tdk_keys() makes "/tmp/PREFIX-XXXXXX" holding rsa.pem (RSA 2048 as PKCS#8), rsa2.pem (RSA 2048
 * as PKCS#1), rsa512.pem (RSA 512), ed.pem (Ed25519) and dkimtool.py, a python3-dkim
 * (/usr/bin/python3) script:
 *   dkimtool.py verify MSG RECS    prints pass/fail/error per DKIM-Signature of MSG, in header
 *                                  order ("fail" also for a body hash mismatch), taking the key
 *                                  records from RECS ("name record" lines, the first of a name wins)
 *   dkimtool.py sign MSG ALG SEL DOM KEYFILE   prints MSG signed relaxed/relaxed over From, To,
 *                                  Subject and Date
 * The caller removes the directory (tp_rmtree). Failures fail the running test.
 */
#ifndef MXG_TEST_DKIM_KEYS_H
#define MXG_TEST_DKIM_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

struct dkim_signer;

/* The message both tests sign and verify (a folded field, runs of white space in the body). */
#define TDK_MSG                                  \
    "From: Alice <alice@rsa.test>\r\n"           \
    "To: bob@example.org\r\n"                    \
    "Subject: Hello there\r\n"                   \
    "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"   \
    "Message-ID: <1@rsa.test>\r\n"               \
    "MIME-Version: 1.0\r\n"                      \
    "Content-Type: text/plain\r\n"               \
    "X-Folded: first\r\n"                        \
    " second part\r\n"                           \
    "\r\n"                                       \
    "Hello,\r\n"                                 \
    " this is  the body.\r\n"

/* Makes the directory (its name into dir) and the keys listed above. */
void tdk_keys(char dir[64], const char *prefix);
/*
 * The p= value for the key in dir/file: base64 of the SubjectPublicKeyInfo for RSA, of the raw 32
 * bytes for Ed25519 (*ed tells which). When seed is not NULL it gets an Ed25519 key's private seed
 * in base64 (python3-dkim's key format), NULL for RSA. free() what is returned.
 */
char *tdk_public_b64(const char *dir, const char *file, bool *ed, char **seed);
/* python3-dkim's verdicts ("pass fail ...") on m, written to dir/file first, with the key records of
 * dir/recs.txt; free() them. */
char *tdk_python_verify(const char *dir, const char *file, const char *m, size_t len);
/* dkim_signer_new() over n "domain:selector:file" specs, file taken relative to dir. */
struct dkim_signer *tdk_signer(const char *dir, const char *const *specs, size_t n, const char *headers,
                               struct buf *err);

#endif
