/*
 * dkim_keys.c - test support: DKIM keys and signers over them (see dkim_keys.h).
 */
#include "dkim_keys.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "conf.h"
#include "filter_dkim.h"
#include "peer.h"

static const char py_script[] =
    "import sys, dkim\n"
    "msg = open(sys.argv[2], 'rb').read()\n"
    "if sys.argv[1] == 'sign':\n"
    "    alg, sel, dom, keyfile = sys.argv[3:7]\n"
    "    sys.stdout.buffer.write(dkim.sign(msg, sel.encode(), dom.encode(), open(keyfile, 'rb')"
    ".read(), canonicalize=(b'relaxed', b'relaxed'), signature_algorithm=alg.encode(), "
    "include_headers=[b'from', b'to', b'subject', b'date']) + msg)\n"
    "    sys.exit(0)\n"
    "recs = {}\n"
    "for line in open(sys.argv[3], 'rb'):\n"
    "    name, _, val = line.rstrip(b'\\n').partition(b' ')\n"
    "    recs.setdefault(name.decode(), val)\n"
    "dnsfunc = lambda name, timeout=5: recs.get(name.decode().rstrip('.'))\n"
    "head = msg.split(b'\\r\\n\\r\\n', 1)[0].split(b'\\r\\n')\n"
    "out = []\n"
    "for i in range(sum(1 for l in head if l.lower().startswith(b'dkim-signature:'))):\n"
    "    try:\n"
    "        out.append('pass' if dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc) else 'fail')\n"
    "    except Exception as e:\n"
    "        out.append('fail' if 'body hash mismatch' in str(e) else 'error')\n"
    "print(' '.join(out))\n";

void tdk_keys(char dir[64], const char *prefix)
{
    snprintf(dir, 64, "/tmp/%s-XXXXXX", prefix);
    assert_non_null(mkdtemp(dir));
    tp_sh("cd %s && (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem "
          "&& openssl genrsa -traditional -out rsa2.pem 2048 && openssl genrsa -out rsa512.pem 512 "
          "&& openssl genpkey -algorithm ed25519 -out ed.pem) 2>/dev/null "
          "&& grep -q 'BEGIN PRIVATE KEY' rsa.pem && grep -q 'BEGIN RSA PRIVATE KEY' rsa2.pem", dir);
    tp_write_file(dir, "dkimtool.py", py_script, sizeof py_script - 1);
}

char *tdk_python_verify(const char *dir, const char *file, const char *m, size_t len)
{
    tp_write_file(dir, file, m, len);
    return tp_sh_output("/usr/bin/python3 %s/dkimtool.py verify %s/%s %s/recs.txt", dir, dir, file, dir);
}

static char *b64(const unsigned char *p, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    assert_non_null(out);
    EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    return out;
}

char *tdk_public_b64(const char *dir, const char *file, bool *ed, char **seed)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(k);
    char *out;
    *ed = EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519;
    if (seed != NULL)
        *seed = NULL;
    if (*ed) {
        unsigned char raw[32];
        size_t n = sizeof raw;
        assert_int_equal(EVP_PKEY_get_raw_public_key(k, raw, &n), 1);
        out = b64(raw, n);
        if (seed != NULL) {
            n = sizeof raw;
            assert_int_equal(EVP_PKEY_get_raw_private_key(k, raw, &n), 1);
            *seed = b64(raw, n);
        }
    } else {
        unsigned char *der = NULL;
        int n = i2d_PUBKEY(k, &der);
        assert_true(n > 0);
        out = b64(der, (size_t)n);
        OPENSSL_free(der);
    }
    EVP_PKEY_free(k);
    return out;
}

struct dkim_signer *tdk_signer(const char *dir, const char *const *specs, size_t n, const char *headers,
                               struct buf *err)
{
    char **kv = calloc(n + 1, sizeof *kv);
    assert_non_null(kv);
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
    free(kv);
    return s;
}
