/*
 * smtp_addr.c - parsing RFC 5321 §4.1.2 paths and mailboxes, with the RFC 6531 (SMTPUTF8)
 * extensions of atext, qtextSMTP and sub-domain.
 *
 * Owns nothing beyond the strings it puts into a struct smtp_path (freed by smtp_path_clear).
 * Strict by design: no spaces, brackets required, no trailing dot in a domain, General-address-
 * literals refused, IPv4 literals as inet_pton reads them (so no leading zeros, which RFC 5321's
 * Snum would allow but which some stacks read as octal), malformed UTF-8 is a syntax error. Non-ASCII is parsed in any case so that a
 * well-formed UTF-8 address sent without SMTPUTF8 can be told apart (SMTP_ADDR_NEEDS_UTF8) from
 * garbage (SMTP_ADDR_SYNTAX). Errors are reported in this order: syntax, needs-UTF-8, local part
 * length, domain length, path length. Lengths are counted in octets as sent (quotes and
 * brackets included), as RFC 5321 §4.5.3.1 does.
 */
#include "smtp_addr.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "mem.h"

/* RFC 5321 §4.5.3.1: the smallest maxima every implementation must accept. */
static const struct smtp_addr_limits default_limits = { 64, 255, 256 };

#define MAX_LABEL 63
#define MAX_DOMAIN 255

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_letdig(unsigned char c)
{
    return is_alpha(c) || is_digit(c);
}

/* RFC 5322 atext, ASCII part (RFC 6531 adds UTF8-non-ascii, handled by the callers). */
static bool is_atext(unsigned char c)
{
    return is_letdig(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* Length of the well-formed UTF-8 sequence (RFC 3629) starting at p, 0 when malformed. */
static size_t utf8_seq_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xBF;
    size_t len;

    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;          /* overlong */
        else if (c == 0xED)
            hi = 0x9F;          /* UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;          /* overlong */
        else if (c == 0xF4)
            hi = 0x8F;          /* beyond U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return len;
}

/* Read position over the path being parsed. */
struct cursor {
    const unsigned char *s;
    size_t n;
    size_t i;
    bool nonascii;              /* a UTF-8 sequence was seen */
};

static int peek(const struct cursor *c)
{
    return c->i < c->n ? c->s[c->i] : -1;
}

/* Consumes one UTF-8 sequence at the cursor; false when it is malformed. */
static bool take_utf8(struct cursor *c)
{
    size_t l = utf8_seq_len(c->s + c->i, c->n - c->i);
    if (l == 0)
        return false;
    c->i += l;
    c->nonascii = true;
    return true;
}

/* sub-domain = Let-dig [Ldh-str], or a U-label: 1..63 octets, no hyphen at either end. */
static bool parse_label(struct cursor *c)
{
    size_t start = c->i;
    bool last_hyphen = false;

    for (int ch; (ch = peek(c)) >= 0;) {
        if (is_letdig((unsigned char)ch)) {
            c->i++;
            last_hyphen = false;
        } else if (ch == '-') {
            if (c->i == start)
                return false;
            c->i++;
            last_hyphen = true;
        } else if (ch >= 0x80) {
            if (!take_utf8(c))
                return false;
            last_hyphen = false;
        } else {
            break;
        }
    }
    return c->i > start && !last_hyphen && c->i - start <= MAX_LABEL;
}

/* Domain = sub-domain *("." sub-domain); stops at the first octet that cannot continue it. */
static bool parse_domain(struct cursor *c)
{
    if (!parse_label(c))
        return false;
    while (peek(c) == '.') {
        c->i++;
        if (!parse_label(c))
            return false;
    }
    return true;
}

/*
 * address-literal = "[" (IPv4 / "IPv6:" IPv6) "]", checked with inet_pton. A General-address-
 * literal (any other "tag:") has no use on the public Internet and is refused.
 */
static bool parse_literal(struct cursor *c)
{
    char text[64];
    size_t start = ++c->i, len;
    int ch;

    while ((ch = peek(c)) >= 33 && ch <= 126 && ch != '[' && ch != ']' && ch != '\\')
        c->i++;
    if (ch != ']')
        return false;
    len = c->i - start;
    c->i++;
    if (len == 0 || len >= sizeof text)
        return false;
    memcpy(text, c->s + start, len);
    text[len] = '\0';

    unsigned char addr[16];
    if (len > 5 && strncasecmp(text, "IPv6:", 5) == 0)
        return inet_pton(AF_INET6, text + 5, addr) == 1;
    if (strchr(text, ':') != NULL)
        return false;
    return inet_pton(AF_INET, text, addr) == 1;
}

/* Quoted-string: the content, unescaped, goes to out. */
static bool parse_quoted(struct cursor *c, struct buf *out)
{
    c->i++;
    for (;;) {
        int ch = peek(c);
        if (ch == '"') {
            c->i++;
            return true;
        }
        if (ch == '\\') {
            c->i++;
            ch = peek(c);
            if (ch < 32 || ch > 126)
                return false;
            buf_putc(out, (char)ch);
            c->i++;
        } else if (ch >= 32 && ch <= 126) {
            buf_putc(out, (char)ch);
            c->i++;
        } else if (ch >= 0x80) {
            size_t at = c->i;
            if (!take_utf8(c))
                return false;
            buf_append(out, c->s + at, c->i - at);
        } else {
            return false;           /* control octet or end of input */
        }
    }
}

/* Dot-string = Atom *("." Atom), atext extended with UTF-8. */
static bool parse_dot_string(struct cursor *c)
{
    for (;;) {
        size_t start = c->i;
        for (int ch; (ch = peek(c)) >= 0;) {
            if (is_atext((unsigned char)ch))
                c->i++;
            else if (ch >= 0x80) {
                if (!take_utf8(c))
                    return false;
            } else
                break;
        }
        if (c->i == start)
            return false;
        if (peek(c) != '.')
            return true;
        c->i++;
    }
}

/* Does s (already known to be valid UTF-8 where non-ASCII) form a Dot-string? */
static bool is_dot_string(const char *s)
{
    bool atom_empty = true;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '.') {
            if (atom_empty)
                return false;
            atom_empty = true;
        } else if (is_atext(*p) || *p >= 0x80) {
            atom_empty = false;
        } else {
            return false;
        }
    }
    return !atom_empty;
}

/* "local@domain", quoting the local part when it is not a Dot-string. */
static char *canonical_mailbox(const char *local, const char *domain)
{
    struct buf b = BUF_INIT;
    if (is_dot_string(local)) {
        buf_puts(&b, local);
    } else {
        buf_putc(&b, '"');
        for (const char *p = local; *p != '\0'; p++) {
            if (*p == '"' || *p == '\\')
                buf_putc(&b, '\\');
            buf_putc(&b, *p);
        }
        buf_putc(&b, '"');
    }
    buf_putc(&b, '@');
    buf_puts(&b, domain);
    return buf_steal(&b);
}

/* A-d-l ":" = At-domain *("," At-domain) ":"; the route is checked, then forgotten. */
static bool parse_route(struct cursor *c)
{
    for (;;) {
        if (peek(c) != '@')
            return false;
        c->i++;
        if (!parse_domain(c))
            return false;
        int ch = peek(c);
        if (ch != ':' && ch != ',')
            return false;
        c->i++;
        if (ch == ':')
            return true;
    }
}

enum smtp_addr_err smtp_path_parse(const char *s, size_t n, const struct smtp_addr_limits *lim,
                                   bool allow_utf8, bool allow_null, struct smtp_path *out,
                                   size_t *consumed)
{
    struct cursor c = { (const unsigned char *)s, n, 0, false };
    struct buf local = BUF_INIT;
    size_t local_start, local_end, dom_start, dom_end;
    bool quoted = false, literal = false, had_route = false;

    memset(out, 0, sizeof *out);
    if (lim == NULL)
        lim = &default_limits;
    if (peek(&c) != '<')
        return SMTP_ADDR_SYNTAX;
    c.i++;

    if (peek(&c) == '>') {
        if (!allow_null)
            return SMTP_ADDR_SYNTAX;
        out->null = true;
        out->local = xstrdup("");
        out->domain = xstrdup("");
        out->mailbox = xstrdup("");
        *consumed = 2;
        return SMTP_ADDR_OK;
    }
    if (peek(&c) == '@') {
        if (!parse_route(&c))
            return SMTP_ADDR_SYNTAX;
        had_route = true;
    }

    local_start = c.i;
    if (peek(&c) == '"') {
        quoted = true;
        if (!parse_quoted(&c, &local))
            goto syntax;
    } else {
        if (!parse_dot_string(&c))
            goto syntax;
        buf_append(&local, s + local_start, c.i - local_start);
    }
    local_end = c.i;
    if (peek(&c) != '@')
        goto syntax;
    c.i++;

    dom_start = c.i;
    if (peek(&c) == '[') {
        literal = true;
        if (!parse_literal(&c))
            goto syntax;
    } else if (!parse_domain(&c)) {
        goto syntax;
    }
    dom_end = c.i;
    if (peek(&c) != '>')
        goto syntax;
    c.i++;

    enum smtp_addr_err err = SMTP_ADDR_OK;
    if (c.nonascii && !allow_utf8)
        err = SMTP_ADDR_NEEDS_UTF8;
    else if (local_end - local_start > lim->max_local_part)
        err = SMTP_ADDR_LOCAL_TOO_LONG;
    else if (dom_end - dom_start > lim->max_domain)
        err = SMTP_ADDR_DOMAIN_TOO_LONG;
    else if (c.i > lim->max_path)
        err = SMTP_ADDR_PATH_TOO_LONG;
    if (err != SMTP_ADDR_OK) {
        buf_release(&local);
        return err;
    }

    out->local = buf_steal(&local);
    out->domain = xstrndup(s + dom_start, dom_end - dom_start);
    out->mailbox = canonical_mailbox(out->local, out->domain);
    out->quoted = quoted;
    out->literal = literal;
    out->had_route = had_route;
    out->utf8 = c.nonascii;
    *consumed = c.i;
    return SMTP_ADDR_OK;

syntax:
    buf_release(&local);
    return SMTP_ADDR_SYNTAX;
}

void smtp_path_clear(struct smtp_path *p)
{
    if (p == NULL)
        return;
    free(p->local);
    free(p->domain);
    free(p->mailbox);
    memset(p, 0, sizeof *p);
}

bool smtp_domain_valid(const char *d, size_t n, bool utf8)
{
    struct cursor c = { (const unsigned char *)d, n, 0, false };
    if (d == NULL || n > MAX_DOMAIN)
        return false;
    return parse_domain(&c) && c.i == n && (utf8 || !c.nonascii);
}

bool smtp_domain_equal(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return false;
    size_t la = strlen(a), lb = strlen(b);
    if (la > 0 && a[la - 1] == '.')
        la--;
    if (lb > 0 && b[lb - 1] == '.')
        lb--;
    if (la != lb)
        return false;
    for (size_t i = 0; i < la; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return false;
    return true;
}
