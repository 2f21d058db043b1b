/*
 * tls.c - server TLS contexts, the self-signed pair of the embedded defaults, and the TLS
 * description written into Received headers (RFC 5321 section 4.4, RFC 8314 for port 465).
 *
 * Owns nothing between calls: a context returned belongs to the caller (SSL_CTX_free). Protocols
 * are TLS 1.2 and 1.3 (RFC 8996 retired the older ones); TLS 1.2 gets forward-secret AEAD suites
 * only, TLS 1.3 keeps OpenSSL's default suites. Session tickets stay on with OpenSSL's per-context
 * random keys, so a ticket is only good on the process that issued it.
 *
 * Failures are environment errors: the functions return NULL/false with a message in the
 * caller's buffer that names the file involved and carries OpenSSL's own error text; the OpenSSL
 * error queue is emptied so that stale entries never show up in a later, unrelated message.
 */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mem.h"

/* TLS 1.2 suites: ECDHE/DHE key exchange with AES-GCM or ChaCha20-Poly1305, strongest first. */
#define TLS_SERVER_CIPHERS \
    "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"
/* Ten years, counting the leap days such a span holds. */
#define TLS_SELF_SIGNED_DAYS 3652
/* ub-common-name of RFC 5280 appendix A: a longer hostname cannot be the CN. */
#define TLS_CN_MAX 64
#define TLS_HOSTNAME_MAX 253

void tls_append_errors(struct buf *err)
{
    unsigned long e;
    bool first = true;
    char text[256];
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, text, sizeof text);
        buf_printf(err, "%s%s", first ? ": " : "; ", text);
        first = false;
    }
    if (first)
        buf_puts(err, ": no OpenSSL error reported");
    ERR_clear_error();
}

SSL_CTX *tls_ctx_base(const SSL_METHOD *method, const char *side, struct buf *err)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (ctx == NULL) {
        buf_printf(err, "cannot create a TLS %s context", side);
        tls_append_errors(err);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        buf_puts(err, "cannot set the minimum TLS version");
        tls_append_errors(err);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, struct buf *err)
{
    SSL_CTX *ctx = tls_ctx_base(TLS_server_method(), "server", err);
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_set_cipher_list(ctx, TLS_SERVER_CIPHERS) != 1) {
        buf_printf(err, "cannot set the TLS 1.2 cipher list \"%s\"", TLS_SERVER_CIPHERS);
        goto fail;
    }
    SSL_CTX_set_dh_auto(ctx, 1);
    /* resumed sessions must stay within mxgate's own contexts */
    static const unsigned char sid_ctx[] = "mxgate";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);

    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        buf_printf(err, "%s: cannot load the certificate chain", cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        /* a key of the certificate's type is compared while loading: say so plainly */
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
            buf_printf(err, "%s: private key does not match certificate %s", key_file, cert_file);
        else
            buf_printf(err, "%s: cannot load the private key for certificate %s", key_file, cert_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        buf_printf(err, "%s: private key does not match certificate %s", key_file, cert_file);
        goto fail;
    }
    return ctx;

fail:
    tls_append_errors(err);
    SSL_CTX_free(ctx);
    return NULL;
}

/* true when both files hold PEM that parses and the key belongs to the certificate. */
static bool pair_loads(const char *cert_file, const char *key_file)
{
    bool ok = false;
    X509 *x = NULL;
    EVP_PKEY *pkey = NULL;
    BIO *b = BIO_new_file(cert_file, "r");
    if (b != NULL) {
        x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        BIO_free(b);
    }
    b = BIO_new_file(key_file, "r");
    if (b != NULL) {
        pkey = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        BIO_free(b);
    }
    if (x != NULL && pkey != NULL)
        ok = X509_check_private_key(x, pkey) == 1;
    X509_free(x);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return ok;
}

/* A DNS name made of letters, digits, '-' and '.', so it is safe as CN and as a SAN entry. */
static bool hostname_ok(const char *h, struct buf *err)
{
    size_t n = strlen(h);
    if (n == 0 || n > TLS_HOSTNAME_MAX) {
        buf_printf(err, "hostname for a self-signed certificate must be 1 to %d characters",
                   TLS_HOSTNAME_MAX);
        return false;
    }
    if (n > TLS_CN_MAX) {
        buf_printf(err, "hostname longer than %d characters does not fit a certificate CN", TLS_CN_MAX);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
              || c == '.')) {
            buf_puts(err, "hostname for a self-signed certificate is not a DNS name: \"");
            buf_append_sanitized(err, h, n, TLS_HOSTNAME_MAX);
            buf_putc(err, '"');
            return false;
        }
    }
    return true;
}

/* Builds the self-signed X509 v3 certificate for pkey; NULL with the step that failed in err. */
static X509 *make_cert(EVP_PKEY *pkey, const char *hostname, struct buf *err)
{
    X509 *x = X509_new();
    BIGNUM *serial = BN_new();
    GENERAL_NAMES *sans = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *san = GENERAL_NAME_new();
    ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    const char *step = "allocate";
    if (x == NULL || serial == NULL || sans == NULL || san == NULL || dns == NULL || bc == NULL)
        goto fail;

    step = "set version and serial";
    /* 159 random bits with the top one set: positive, non-zero, within RFC 5280's 20 octets */
    if (X509_set_version(x, X509_VERSION_3) != 1
        || BN_rand(serial, 159, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) != 1
        || BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) == NULL)
        goto fail;

    step = "set validity";
    if (X509_gmtime_adj(X509_getm_notBefore(x), 0) == NULL
        || X509_time_adj_ex(X509_getm_notAfter(x), TLS_SELF_SIGNED_DAYS, 0, NULL) == NULL)
        goto fail;

    step = "set subject";
    X509_NAME *name = X509_get_subject_name(x);
    if (X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_ASC, (const unsigned char *)hostname,
                                   -1, -1, 0) != 1
        || X509_set_issuer_name(x, name) != 1 || X509_set_pubkey(x, pkey) != 1)
        goto fail;

    step = "add extensions";
    if (ASN1_STRING_set(dns, hostname, (int)strlen(hostname)) != 1)
        goto fail;
    GENERAL_NAME_set0_value(san, GEN_DNS, dns);
    dns = NULL;     /* san owns it now */
    if (sk_GENERAL_NAME_push(sans, san) <= 0)
        goto fail;
    san = NULL;     /* sans owns it now */
    bc->ca = 0;
    if (X509_add1_ext_i2d(x, NID_subject_alt_name, sans, 0, X509V3_ADD_DEFAULT) != 1
        || X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT) != 1)
        goto fail;

    step = "sign";
    if (X509_sign(x, pkey, EVP_sha256()) <= 0)
        goto fail;

    BN_free(serial);
    GENERAL_NAMES_free(sans);
    BASIC_CONSTRAINTS_free(bc);
    return x;

fail:
    buf_printf(err, "cannot make a self-signed certificate for %s (%s)", hostname, step);
    tls_append_errors(err);
    X509_free(x);
    BN_free(serial);
    GENERAL_NAMES_free(sans);
    GENERAL_NAME_free(san);
    ASN1_IA5STRING_free(dns);
    BASIC_CONSTRAINTS_free(bc);
    return NULL;
}

/*
 * Writes the PEM held in mem to a fresh temporary file next to path (created O_EXCL with mode
 * 0600, then set to mode), synced to disk. The temporary name goes to *tmp (malloc'd) for the
 * caller to rename or unlink; false with err on failure, with nothing left behind.
 */
static bool write_temp(const char *path, mode_t mode, BIO *mem, char **tmp, struct buf *err)
{
    char *name = xmalloc(strlen(path) + sizeof ".XXXXXX");
    strcpy(name, path);
    strcat(name, ".XXXXXX");
    int fd = mkstemp(name);     /* O_CREAT | O_EXCL, mode 0600: never readable by others */
    if (fd < 0) {
        buf_printf(err, "%s: cannot create a temporary file: %s", name, strerror(errno));
        free(name);
        return false;
    }
    char *data;
    long len = BIO_get_mem_data(mem, &data);
    const char *what = NULL;
    int e = 0;
    if (mode != 0600 && fchmod(fd, mode) != 0) {
        what = "fchmod";
        e = errno;
    }
    for (long off = 0; what == NULL && off < len;) {
        ssize_t n = write(fd, data + off, (size_t)(len - off));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            what = "write";
            e = errno;
        } else {
            off += n;
        }
    }
    if (what == NULL && fsync(fd) != 0) {
        what = "fsync";
        e = errno;
    }
    if (close(fd) != 0 && what == NULL) {
        what = "close";
        e = errno;
    }
    if (what != NULL) {
        buf_printf(err, "%s: %s: %s", name, what, strerror(e));
        unlink(name);
        free(name);
        return false;
    }
    *tmp = name;
    return true;
}

/* Makes a rename in the directory of path durable; failure only costs durability, not the pair. */
static void sync_dir_of(const char *path)
{
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        strcpy(dir, ".");
    else if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

bool tls_self_signed(const char *cert_file, const char *key_file, const char *hostname, struct buf *err)
{
    ERR_clear_error();
    if (pair_loads(cert_file, key_file))
        return true;
    if (!hostname_ok(hostname, err))
        return false;

    bool ok = false;
    X509 *x = NULL;
    BIO *key_pem = NULL, *cert_pem = NULL;
    char *key_tmp = NULL, *cert_tmp = NULL;

    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (pkey == NULL) {
        buf_puts(err, "cannot generate an EC P-256 key");
        tls_append_errors(err);
        goto out;
    }
    x = make_cert(pkey, hostname, err);
    if (x == NULL)
        goto out;

    key_pem = BIO_new(BIO_s_secmem());  /* the key's PEM text is wiped when freed */
    cert_pem = BIO_new(BIO_s_mem());
    if (key_pem == NULL || cert_pem == NULL
        || PEM_write_bio_PrivateKey(key_pem, pkey, NULL, NULL, 0, NULL, NULL) != 1
        || PEM_write_bio_X509(cert_pem, x) != 1) {
        buf_puts(err, "cannot encode the self-signed pair as PEM");
        tls_append_errors(err);
        goto out;
    }

    if (!write_temp(key_file, 0600, key_pem, &key_tmp, err)
        || !write_temp(cert_file, 0644, cert_pem, &cert_tmp, err))
        goto out;
    /*
     * Key first: a crash between the two renames leaves a key that does not match the old
     * certificate, which pair_loads() rejects, so the next start makes a fresh pair.
     */
    if (rename(key_tmp, key_file) != 0) {
        buf_printf(err, "%s: cannot rename %s into place: %s", key_file, key_tmp, strerror(errno));
        goto out;
    }
    free(key_tmp);
    key_tmp = NULL;
    if (rename(cert_tmp, cert_file) != 0) {
        buf_printf(err, "%s: cannot rename %s into place: %s", cert_file, cert_tmp, strerror(errno));
        goto out;
    }
    free(cert_tmp);
    cert_tmp = NULL;
    sync_dir_of(key_file);
    sync_dir_of(cert_file);
    ok = true;

out:
    if (key_tmp != NULL) {
        unlink(key_tmp);
        free(key_tmp);
    }
    if (cert_tmp != NULL) {
        unlink(cert_tmp);
        free(cert_tmp);
    }
    BIO_free(key_pem);
    BIO_free(cert_pem);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return ok;
}

void tls_describe(SSL *ssl, struct buf *out)
{
    int alg_bits = 0;
    int bits = SSL_get_cipher_bits(ssl, &alg_bits);
    buf_printf(out, "%s with cipher %s (%d/%d bits)", SSL_get_version(ssl), SSL_get_cipher_name(ssl),
               bits, alg_bits);
}
