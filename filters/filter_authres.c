/*
 * filter_authres.c - Authentication-Results (RFC 8601): writing ours, recognising and removing
 * forged ones (filter_authres.h). Pure text work, no I/O.
 */
#include "filter_authres.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#define FOLD_AT 78

void authres_value(const char *authserv_id, const char *results, struct buf *out)
{
    buf_puts(out, authserv_id);
    buf_puts(out, "; ");
    buf_puts(out, results[0] != '\0' ? results : "none");
}

void authres_header(const char *authserv_id, const char *results, struct buf *out)
{
    struct buf v = BUF_INIT;
    authres_value(authserv_id, results, &v);
    size_t line = strlen("Authentication-Results: ");
    buf_puts(out, "Authentication-Results: ");
    const char *p = buf_cstr(&v);
    while (*p != '\0') {
        /* One piece: up to and including the next ';' (and the space after it is dropped). */
        const char *semi = strchr(p, ';');
        size_t n = semi != NULL ? (size_t)(semi - p) + 1 : strlen(p);
        if (line > 1 && line + n + 1 > FOLD_AT && p != buf_cstr(&v)) {
            buf_puts(out, "\r\n\t");
            line = 8;
        } else if (p != buf_cstr(&v)) {
            buf_putc(out, ' ');
            line++;
        }
        buf_append(out, p, n);
        line += n;
        p += n;
        while (*p == ' ')
            p++;
    }
    buf_puts(out, "\r\n");
    buf_release(&v);
}

/* Skips folding white space and (nested) comments. */
static size_t skip_cfws(const char *s, size_t i, size_t len)
{
    int depth = 0;
    while (i < len) {
        char c = s[i];
        if (depth > 0 && c == '\\' && i + 1 < len) {
            i += 2;
            continue;
        }
        if (c == '(')
            depth++;
        else if (c == ')' && depth > 0)
            depth--;
        else if (depth == 0 && c != ' ' && c != '\t' && c != '\r' && c != '\n')
            break;
        i++;
    }
    return i;
}

bool authres_claims(const char *value, size_t len, const char *authserv_id)
{
    size_t i = skip_cfws(value, 0, len);
    size_t start = i;
    /* The authserv-id is a value: a token or a quoted-string (RFC 8601 section 2.2). */
    if (i < len && value[i] == '"') {
        start = ++i;
        while (i < len && value[i] != '"')
            i++;
    } else {
        while (i < len && value[i] != ';' && value[i] != '(' && !isspace((unsigned char)value[i]))
            i++;
    }
    size_t n = i - start;
    return n == strlen(authserv_id) && n > 0 && strncasecmp(value + start, authserv_id, n) == 0;
}

/* Length of the header field starting at msg[i] (its continuation lines included). */
static size_t field_len(const char *msg, size_t i, size_t len)
{
    size_t j = i;
    for (;;) {
        const char *nl = memchr(msg + j, '\n', len - j);
        if (nl == NULL)
            return len - i;
        j = (size_t)(nl - msg) + 1;
        if (j >= len || (msg[j] != ' ' && msg[j] != '\t'))
            return j - i;
    }
}

size_t authres_strip(struct buf *msg, size_t from, const char *authserv_id)
{
    static const char name[] = "Authentication-Results:";
    size_t removed = 0, i = from;
    while (i < msg->len) {
        const char *p = msg->data + i;
        if (p[0] == '\r' || p[0] == '\n')
            break;      /* the empty line: end of the header section */
        size_t n = field_len(msg->data, i, msg->len);
        if (n > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0
            && authres_claims(p + sizeof name - 1, n - (sizeof name - 1), authserv_id)) {
            memmove(msg->data + i, msg->data + i + n, msg->len - i - n);
            msg->len -= n;
            msg->data[msg->len] = '\0';
            removed++;
            continue;
        }
        i += n;
    }
    return removed;
}
