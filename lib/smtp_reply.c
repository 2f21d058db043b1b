/*
 * smtp_reply.c - SMTP reply parsing and status splitting (smtp_reply.h).
 */
#include "smtp_reply.h"

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

void smtp_reply_reset(struct smtp_reply *r)
{
    r->code = 0;
    r->nlines = 0;
    r->bytes = 0;
    r->done = false;
    buf_reset(&r->text);
}

void smtp_reply_release(struct smtp_reply *r)
{
    buf_release(&r->text);
}

enum smtp_reply_feed smtp_reply_feed(struct smtp_reply *r, const char *line, size_t n, struct buf *why)
{
    if (r->done) {
        buf_puts(why, "reply already complete");
        return SMTP_REPLY_BAD;
    }
    if (n + 2 > SMTP_REPLY_LINE_MAX) {
        buf_printf(why, "reply line longer than %d bytes", SMTP_REPLY_LINE_MAX);
        return SMTP_REPLY_BAD;
    }
    r->bytes += n + 2;
    if (++r->nlines > SMTP_REPLY_LINES_MAX || r->bytes > SMTP_REPLY_BYTES_MAX) {
        buf_printf(why, "reply longer than %d lines or %d bytes", SMTP_REPLY_LINES_MAX, SMTP_REPLY_BYTES_MAX);
        return SMTP_REPLY_BAD;
    }
    for (size_t i = 0; i < n; i++) {
        if (line[i] == '\0' || line[i] == '\r' || line[i] == '\n') {
            buf_puts(why, "NUL, CR or LF inside a reply line");
            return SMTP_REPLY_BAD;
        }
    }
    /* RFC 5321 §4.2: first digit 2-5, second 0-5, third 0-9 */
    if (n < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' || line[2] < '0'
        || line[2] > '9') {
        buf_puts(why, "malformed reply code");
        return SMTP_REPLY_BAD;
    }
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (r->code != 0 && code != r->code) {
        buf_printf(why, "reply code %d after %d in one reply", code, r->code);
        return SMTP_REPLY_BAD;
    }
    if (n > 3 && line[3] != ' ' && line[3] != '-') {
        buf_puts(why, "malformed reply separator");
        return SMTP_REPLY_BAD;
    }
    r->code = code;
    if (r->nlines > 1)
        buf_putc(&r->text, '\n');
    if (n > 4)
        buf_append(&r->text, line + 4, n - 4);
    r->done = n == 3 || line[3] == ' ';
    return r->done ? SMTP_REPLY_DONE : SMTP_REPLY_MORE;
}

/* Length of an RFC 3463 status code of class cls at p[0..n) followed by a space or the end; 0 if none. */
static size_t status_len(const char *p, size_t n, int cls)
{
    if (n < 5 || p[0] != '0' + cls || p[1] != '.')
        return 0;
    size_t i = 2;
    for (int part = 0; part < 2; part++) {
        size_t d = 0;
        while (i < n && d < 4 && p[i] >= '0' && p[i] <= '9') {
            i++;
            d++;
        }
        if (d == 0 || d > 3 || (part == 0 && (i >= n || p[i++] != '.')))
            return 0;
    }
    return i == n || p[i] == ' ' ? i : 0;
}

void smtp_reply_status(const struct smtp_reply *r, char out_status[16], struct buf *text)
{
    int cls = r->code / 100;
    snprintf(out_status, 16, "%d.0.0", cls);
    const char *p = buf_cstr(&r->text), *end = p + r->text.len;
    size_t budget = SMTP_REPLY_TEXT_MAX;
    for (bool first = true; p <= end; first = false) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        size_t s = status_len(p, n, cls);
        if (first && s > 0)
            snprintf(out_status, 16, "%.*s", (int)s, p);
        if (s > 0) {    /* servers repeat the code on every line; the text does not need it */
            p += s;
            n -= s;
            if (n > 0) {
                p++;
                n--;
            }
        }
        if (n > 0 && budget > 0) {
            if (text->len > 0)
                buf_putc(text, ' ');
            size_t take = n < budget ? n : budget;
            buf_append_sanitized(text, p, n, take);
            budget -= take;
        }
        if (nl == NULL)
            break;
        p = nl + 1;
    }
}

enum smtp_reply_read smtp_reply_read(struct evbuffer *in, struct smtp_reply *r, char line[SMTP_REPLY_LINE_MAX],
                                     size_t *len, struct buf *why)
{
    size_t avail = evbuffer_get_length(in);
    struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
    *len = 0;
    if (eol.pos < 0 && avail < SMTP_REPLY_LINE_MAX)
        return SMTP_READ_WAIT;     /* the rest of the line is on its way */
    if (eol.pos < 0 || (size_t)eol.pos + 1 > SMTP_REPLY_LINE_MAX) {
        ev_ssize_t got = evbuffer_copyout(in, line, 100);
        *len = got > 0 ? (size_t)got : 0;
        buf_printf(why, "reply line longer than %d bytes", SMTP_REPLY_LINE_MAX);
        return SMTP_READ_BAD;
    }
    size_t n = (size_t)eol.pos + 1;
    evbuffer_remove(in, line, n);
    *len = n;
    if (n < 2 || line[n - 2] != '\r') {
        buf_puts(why, "reply line not ended by CRLF");
        return SMTP_READ_BAD;
    }
    switch (smtp_reply_feed(r, line, n - 2, why)) {
    case SMTP_REPLY_MORE:
        return SMTP_READ_MORE;
    case SMTP_REPLY_DONE:
        return SMTP_READ_DONE;
    default:
        return SMTP_READ_BAD;
    }
}
