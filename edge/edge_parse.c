/*
 * edge_parse.c - SMTP command lines and the parameters of MAIL and RCPT.
 *
 * RFC 5321 (commands, paths), 1870 (SIZE), 6152 (8BITMIME BODY=), 3030 (BINARYMIME, BDAT),
 * 3461 (DSN: RET, ENVID, NOTIFY, ORCPT, xtext), 4954 (AUTH=), 6531 (SMTPUTF8).
 *
 * Pure functions over a NUL-terminated line: no I/O, no session state. Every failure comes back
 * as the SMTP reply the session should give (struct smtp_parse_err, static texts); a failed parse
 * leaves nothing allocated in its output. Decoded ENVID / ORCPT / AUTH values are restricted to
 * printable ASCII so that they can later be written into DSN or header fields without escaping.
 */
#include "edge_parse.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "mem.h"

static const char *const verb_names[] = {
    [VERB_UNKNOWN] = "UNKNOWN", [VERB_EHLO] = "EHLO", [VERB_HELO] = "HELO",
    [VERB_MAIL] = "MAIL", [VERB_RCPT] = "RCPT", [VERB_DATA] = "DATA", [VERB_BDAT] = "BDAT",
    [VERB_RSET] = "RSET", [VERB_NOOP] = "NOOP", [VERB_QUIT] = "QUIT", [VERB_VRFY] = "VRFY",
    [VERB_EXPN] = "EXPN", [VERB_HELP] = "HELP", [VERB_STARTTLS] = "STARTTLS", [VERB_AUTH] = "AUTH",
};
#define NVERBS (sizeof verb_names / sizeof verb_names[0])

enum smtp_verb smtp_verb_parse(const char *line, const char **args)
{
    size_t len = strcspn(line, " ");
    enum smtp_verb v = VERB_UNKNOWN;

    for (size_t i = VERB_UNKNOWN + 1; i < NVERBS; i++) {
        if (strlen(verb_names[i]) == len && strncasecmp(line, verb_names[i], len) == 0) {
            v = (enum smtp_verb)i;
            break;
        }
    }
    *args = line[len] == ' ' ? line + len + 1 : line + len;
    return v;
}

const char *smtp_verb_name(enum smtp_verb v)
{
    return (size_t)v < NVERBS ? verb_names[v] : verb_names[VERB_UNKNOWN];
}

static bool fail(struct smtp_parse_err *err, int code, const char *enhanced, const char *text)
{
    err->code = code;
    err->enhanced = enhanced;
    err->text = text;
    return false;
}

/* Texts that differ between the sender (MAIL) and a recipient (RCPT). */
struct path_texts {
    const char *enhanced;
    const char *syntax, *local_long, *domain_long, *path_long;
};

static const struct path_texts mail_texts = {
    "5.1.7", "Bad sender address syntax", "Sender address local part too long",
    "Sender address domain too long", "Sender address too long",
};
static const struct path_texts rcpt_texts = {
    "5.1.3", "Bad recipient address syntax", "Recipient address local part too long",
    "Recipient address domain too long", "Recipient address too long",
};

#define TEXT_NEEDS_UTF8 "Non-ASCII address requires SMTPUTF8"

/*
 * Parses "<path>" at *pp (one space before it tolerated, as Postfix does) and leaves *pp on the
 * text after it, which must be empty or start with a space.
 */
static bool parse_path_arg(const char **pp, const struct smtp_addr_limits *lim, bool utf8,
                           bool allow_null, const struct path_texts *t, struct smtp_path *path,
                           struct smtp_parse_err *err)
{
    const char *p = *pp;
    size_t consumed;

    if (*p == ' ')
        p++;
    switch (smtp_path_parse(p, strlen(p), lim, utf8, allow_null, path, &consumed)) {
    case SMTP_ADDR_OK:
        break;
    case SMTP_ADDR_SYNTAX:
        return fail(err, 501, t->enhanced, t->syntax);
    case SMTP_ADDR_LOCAL_TOO_LONG:
        return fail(err, 501, t->enhanced, t->local_long);
    case SMTP_ADDR_DOMAIN_TOO_LONG:
        return fail(err, 501, t->enhanced, t->domain_long);
    case SMTP_ADDR_PATH_TOO_LONG:
        return fail(err, 501, t->enhanced, t->path_long);
    case SMTP_ADDR_NEEDS_UTF8:
        return fail(err, 553, "5.6.7", TEXT_NEEDS_UTF8);
    }
    p += consumed;
    if (*p != '\0' && *p != ' ') {
        smtp_path_clear(path);
        return fail(err, 501, t->enhanced, t->syntax);
    }
    *pp = p;
    return true;
}

/* One esmtp-param split into keyword and value (value NULL when there is no "="). */
struct param {
    const char *key;
    size_t key_len;
    const char *val;
    size_t val_len;
};

/*
 * Takes the next SP-separated esmtp-param from *pp. Returns 0 at the end, 1 with *prm set, -1
 * (with *err set) when the keyword or value breaks RFC 5321 §4.1.2 esmtp-param syntax.
 */
static int next_param(const char **pp, struct param *prm, struct smtp_parse_err *err)
{
    const char *p = *pp;

    while (*p == ' ')
        p++;
    if (*p == '\0')
        return 0;
    const char *tok = p;
    p += strcspn(p, " ");
    *pp = p;

    const char *eq = memchr(tok, '=', (size_t)(p - tok));
    prm->key = tok;
    prm->key_len = (size_t)((eq != NULL ? eq : p) - tok);
    prm->val = eq != NULL ? eq + 1 : NULL;
    prm->val_len = eq != NULL ? (size_t)(p - eq - 1) : 0;

    for (size_t i = 0; i < prm->key_len; i++) {
        unsigned char c = (unsigned char)tok[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || c != '-'))
            goto bad;
    }
    if (prm->key_len == 0)
        goto bad;
    if (prm->val != NULL) {
        if (prm->val_len == 0)
            goto bad;
        for (size_t i = 0; i < prm->val_len; i++) {
            unsigned char c = (unsigned char)prm->val[i];
            if (c < 33 || c > 126 || c == '=')
                goto bad;
        }
    }
    return 1;
bad:
    fail(err, 501, "5.5.4", "Syntax error in parameters");
    return -1;
}

static bool key_is(const struct param *prm, const char *name)
{
    return strlen(name) == prm->key_len && strncasecmp(prm->key, name, prm->key_len) == 0;
}

static bool val_is(const struct param *prm, const char *name)
{
    return prm->val != NULL && strlen(name) == prm->val_len &&
           strncasecmp(prm->val, name, prm->val_len) == 0;
}

/* xtext decoded, and printable ASCII (RFC 3461 §4: ENVID and ORCPT must be). NULL otherwise. */
static char *decode_printable(const char *s, size_t n)
{
    char *v = xtext_decode(s, n);
    if (v == NULL)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++) {
        if (*p < 32 || *p > 126) {
            free(v);
            return NULL;
        }
    }
    return v;
}

/* SIZE value: -1 bad syntax, -2 beyond what a long long holds. */
static long long parse_size(const struct param *prm)
{
    long long v = 0;
    if (prm->val == NULL)
        return -1;
    for (size_t i = 0; i < prm->val_len; i++) {
        unsigned char c = (unsigned char)prm->val[i];
        if (c < '0' || c > '9')
            return -1;
        if (v > (LLONG_MAX - (c - '0')) / 10)
            return -2;
        v = v * 10 + (c - '0');
    }
    return v;
}

#define ENVID_MAX 100           /* RFC 3461 §4.4 */
#define ORCPT_MAX 500           /* RFC 3461 §4.2 */

enum { M_SIZE = 1, M_BODY = 2, M_SMTPUTF8 = 4, M_RET = 8, M_ENVID = 16, M_AUTH = 32 };

/* Applies one MAIL parameter to m; false with *err set. */
static bool mail_param(const struct param *prm, const struct smtp_ext_offer *o, unsigned *seen,
                       struct smtp_mail *m, struct smtp_parse_err *err)
{
    unsigned bit;
    bool offered;

    if (key_is(prm, "SIZE"))
        bit = M_SIZE, offered = o->size;
    else if (key_is(prm, "BODY"))
        bit = M_BODY, offered = o->eightbitmime || o->binarymime;
    else if (key_is(prm, "SMTPUTF8"))
        bit = M_SMTPUTF8, offered = o->smtputf8;
    else if (key_is(prm, "RET"))
        bit = M_RET, offered = o->dsn;
    else if (key_is(prm, "ENVID"))
        bit = M_ENVID, offered = o->dsn;
    else if (key_is(prm, "AUTH"))
        bit = M_AUTH, offered = o->auth;
    else
        return fail(err, 555, "5.5.4", "Unsupported parameter");
    if (!offered)
        return fail(err, 555, "5.5.4", "Unsupported parameter");
    if (*seen & bit)
        return fail(err, 501, "5.5.4", "Duplicate parameter");
    *seen |= bit;

    switch (bit) {
    case M_SIZE: {
        long long v = parse_size(prm);
        if (v == -2)
            return fail(err, 552, "5.3.4", "Message size exceeds fixed maximum message size");
        if (v < 0)
            return fail(err, 501, "5.5.4", "Bad SIZE value");
        m->size = v;
        return true;
    }
    case M_BODY:
        if (val_is(prm, "7BIT") && o->eightbitmime)
            m->body = BODY_7BIT;
        else if (val_is(prm, "8BITMIME") && o->eightbitmime)
            m->body = BODY_8BITMIME;
        else if (val_is(prm, "BINARYMIME") && o->binarymime)
            m->body = BODY_BINARYMIME;
        else if (val_is(prm, "7BIT") || val_is(prm, "8BITMIME") || val_is(prm, "BINARYMIME"))
            return fail(err, 555, "5.5.4", "Unsupported parameter");
        else
            return fail(err, 501, "5.5.4", "Bad BODY value");
        return true;
    case M_SMTPUTF8:
        if (prm->val != NULL)
            return fail(err, 501, "5.5.4", "SMTPUTF8 takes no value");
        m->smtputf8 = true;
        return true;
    case M_RET:
        if (val_is(prm, "FULL"))
            m->ret = DSN_RET_FULL;
        else if (val_is(prm, "HDRS"))
            m->ret = DSN_RET_HDRS;
        else
            return fail(err, 501, "5.5.4", "Bad RET value");
        return true;
    case M_ENVID:
        if (prm->val == NULL || prm->val_len > ENVID_MAX ||
            (m->envid = decode_printable(prm->val, prm->val_len)) == NULL)
            return fail(err, 501, "5.5.4", "Bad ENVID value");
        return true;
    default: /* M_AUTH */
        if (val_is(prm, "<>"))
            m->auth = xstrdup("<>");
        else if (prm->val == NULL || (m->auth = decode_printable(prm->val, prm->val_len)) == NULL)
            return fail(err, 501, "5.5.4", "Bad AUTH value");
        return true;
    }
}

static const struct smtp_ext_offer no_offer;

bool smtp_mail_parse(const char *args, const struct smtp_addr_limits *lim,
                     const struct smtp_ext_offer *offer, struct smtp_mail *out,
                     struct smtp_parse_err *err)
{
    const char *p = args;
    struct param prm;
    unsigned seen = 0;
    int r;

    memset(out, 0, sizeof *out);
    out->size = -1;
    memset(err, 0, sizeof *err);
    if (offer == NULL)
        offer = &no_offer;
    if (strncasecmp(p, "FROM:", 5) != 0)
        return fail(err, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
    p += 5;
    /* The path is parsed UTF-8-tolerant: SMTPUTF8, which allows it, comes after it. */
    if (!parse_path_arg(&p, lim, true, true, &mail_texts, &out->path, err))
        return false;
    while ((r = next_param(&p, &prm, err)) > 0)
        if (!mail_param(&prm, offer, &seen, out, err))
            goto fail;
    if (r < 0)
        goto fail;
    if (out->path.utf8 && !out->smtputf8) {
        fail(err, 553, "5.6.7", TEXT_NEEDS_UTF8);
        goto fail;
    }
    return true;
fail:
    smtp_mail_clear(out);
    return false;
}

void smtp_mail_clear(struct smtp_mail *m)
{
    if (m == NULL)
        return;
    smtp_path_clear(&m->path);
    free(m->envid);
    free(m->auth);
    memset(m, 0, sizeof *m);
    m->size = -1;
}

/* NOTIFY = "NEVER" / 1#("SUCCESS" / "FAILURE" / "DELAY"); 0 when malformed. */
static unsigned parse_notify(const struct param *prm)
{
    static const struct { const char *name; unsigned flag; } words[] = {
        { "NEVER", DSN_NOTIFY_NEVER }, { "SUCCESS", DSN_NOTIFY_SUCCESS },
        { "FAILURE", DSN_NOTIFY_FAILURE }, { "DELAY", DSN_NOTIFY_DELAY },
    };
    unsigned flags = 0;
    const char *p = prm->val, *end = prm->val + prm->val_len;

    if (prm->val == NULL)
        return 0;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma != NULL ? comma : end;
        unsigned f = 0;
        for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
            if (strlen(words[i].name) == (size_t)(e - p) &&
                strncasecmp(p, words[i].name, (size_t)(e - p)) == 0)
                f = words[i].flag;
        if (f == 0 || (flags & f))
            return 0;
        flags |= f;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    if ((flags & DSN_NOTIFY_NEVER) && flags != DSN_NOTIFY_NEVER)
        return 0;
    return flags;
}

/* ORCPT = addr-type ";" xtext, stored as "addr-type;decoded"; NULL when malformed. */
static char *parse_orcpt(const struct param *prm)
{
    if (prm->val == NULL || prm->val_len > ORCPT_MAX)
        return NULL;
    const char *semi = memchr(prm->val, ';', prm->val_len);
    if (semi == NULL || semi == prm->val || semi + 1 == prm->val + prm->val_len)
        return NULL;
    for (const char *p = prm->val; p < semi; p++) {
        unsigned char c = (unsigned char)*p;
        bool atext = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
        if (!atext)
            return NULL;
    }
    char *addr = decode_printable(semi + 1, (size_t)(prm->val + prm->val_len - semi - 1));
    if (addr == NULL)
        return NULL;
    struct buf b = BUF_INIT;
    buf_append(&b, prm->val, (size_t)(semi - prm->val) + 1);
    buf_puts(&b, addr);
    free(addr);
    return buf_steal(&b);
}

enum { R_NOTIFY = 1, R_ORCPT = 2 };

bool smtp_rcpt_parse(const char *args, const struct smtp_addr_limits *lim,
                     const struct smtp_ext_offer *offer, bool utf8, struct smtp_rcpt *out,
                     struct smtp_parse_err *err)
{
    const char *p = args;
    struct param prm;
    unsigned seen = 0;
    int r;

    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    if (offer == NULL)
        offer = &no_offer;
    if (strncasecmp(p, "TO:", 3) != 0)
        return fail(err, 501, "5.5.4", "Syntax: RCPT TO:<address>");
    p += 3;
    if (!parse_path_arg(&p, lim, utf8, false, &rcpt_texts, &out->path, err))
        return false;
    while ((r = next_param(&p, &prm, err)) > 0) {
        unsigned bit = key_is(&prm, "NOTIFY") ? R_NOTIFY : key_is(&prm, "ORCPT") ? R_ORCPT : 0;
        if (bit == 0 || !offer->dsn) {
            fail(err, 555, "5.5.4", "Unsupported parameter");
            goto fail;
        }
        if (seen & bit) {
            fail(err, 501, "5.5.4", "Duplicate parameter");
            goto fail;
        }
        seen |= bit;
        if (bit == R_NOTIFY && (out->notify = parse_notify(&prm)) == 0) {
            fail(err, 501, "5.5.4", "Bad NOTIFY value");
            goto fail;
        }
        if (bit == R_ORCPT && (out->orcpt = parse_orcpt(&prm)) == NULL) {
            fail(err, 501, "5.5.4", "Bad ORCPT value");
            goto fail;
        }
    }
    if (r < 0)
        goto fail;
    return true;
fail:
    smtp_rcpt_clear(out);
    return false;
}

void smtp_rcpt_clear(struct smtp_rcpt *r)
{
    if (r == NULL)
        return;
    smtp_path_clear(&r->path);
    free(r->orcpt);
    memset(r, 0, sizeof *r);
}

bool smtp_bdat_parse(const char *args, unsigned long long *size, bool *last)
{
    const char *p = args;
    unsigned long long v = 0;

    if (*p < '0' || *p > '9')
        return false;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (ULLONG_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (*p == '\0') {
        *last = false;
    } else if (*p == ' ' && strcasecmp(p + 1, "LAST") == 0) {
        *last = true;
    } else {
        return false;
    }
    *size = v;
    return true;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *xtext_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1), *o = out;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '+') {
            int hi = i + 2 < n ? hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
            /* "+00" would cut the C string short: refused rather than silently truncated. */
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(out);
                return NULL;
            }
            *o++ = (char)(hi * 16 + lo);
            i += 2;
        } else if (c >= 33 && c <= 126 && c != '=') {
            *o++ = (char)c;
        } else {
            free(out);
            return NULL;
        }
    }
    *o = '\0';
    return out;
}

void xtext_encode(struct buf *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p >= 33 && *p <= 126 && *p != '+' && *p != '=')
            buf_putc(b, (char)*p);
        else
            buf_printf(b, "+%02X", *p);
    }
}
