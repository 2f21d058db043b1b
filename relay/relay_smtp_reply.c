/*
 * relay_smtp_reply.c - the pure pieces of the outbound SMTP client (relay_smtp.h): parsing a
 * server's reply line by line (RFC 5321 §4.2, bounds of §4.5.3.1.5), splitting it into an enhanced
 * status code (RFC 3463) and sanitised text, dot-stuffing the message with CRLF line ends (RFC 5321
 * §4.5.2), and the names of the conversation's phases.
 *
 * Owns nothing beyond the caller's structs: no I/O, no allocation but the caller's buffers. A
 * malformed reply is reported to the caller (RELAY_REPLY_BAD and a reason), which decides what it
 * costs the connection; nothing here fails otherwise.
 */
#include "relay_smtp.h"

#include <stdio.h>
#include <string.h>

static const char *const phase_names[] = {
    [RELAY_PHASE_CONNECT] = "connect", [RELAY_PHASE_GREETING] = "greeting", [RELAY_PHASE_EHLO] = "EHLO",
    [RELAY_PHASE_HELO] = "HELO", [RELAY_PHASE_STARTTLS] = "STARTTLS", [RELAY_PHASE_TLS] = "TLS handshake",
    [RELAY_PHASE_MAIL] = "MAIL FROM", [RELAY_PHASE_RCPT] = "RCPT TO", [RELAY_PHASE_DATA] = "DATA",
    [RELAY_PHASE_BODY] = "end of data", [RELAY_PHASE_RSET] = "RSET", [RELAY_PHASE_QUIT] = "QUIT",
};

const char *relay_phase_name(enum relay_phase p)
{
    return (size_t)p < sizeof phase_names / sizeof phase_names[0] ? phase_names[p] : "unknown";
}

/* ---- replies ---- */

void relay_reply_reset(struct relay_reply *r)
{
    r->code = 0;
    r->nlines = 0;
    r->bytes = 0;
    r->done = false;
    buf_reset(&r->text);
}

void relay_reply_release(struct relay_reply *r)
{
    buf_release(&r->text);
}

enum relay_reply_feed relay_reply_feed(struct relay_reply *r, const char *line, size_t n, struct buf *why)
{
    if (r->done) {
        buf_puts(why, "reply already complete");
        return RELAY_REPLY_BAD;
    }
    if (n + 2 > RELAY_REPLY_LINE_MAX) {
        buf_printf(why, "reply line longer than %d bytes", RELAY_REPLY_LINE_MAX);
        return RELAY_REPLY_BAD;
    }
    r->bytes += n + 2;
    if (++r->nlines > RELAY_REPLY_LINES_MAX || r->bytes > RELAY_REPLY_BYTES_MAX) {
        buf_printf(why, "reply longer than %d lines or %d bytes", RELAY_REPLY_LINES_MAX, RELAY_REPLY_BYTES_MAX);
        return RELAY_REPLY_BAD;
    }
    for (size_t i = 0; i < n; i++) {
        if (line[i] == '\0' || line[i] == '\r' || line[i] == '\n') {
            buf_puts(why, "NUL, CR or LF inside a reply line");
            return RELAY_REPLY_BAD;
        }
    }
    /* RFC 5321 §4.2: first digit 2-5, second 0-5, third 0-9 */
    if (n < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' || line[2] < '0'
        || line[2] > '9') {
        buf_puts(why, "malformed reply code");
        return RELAY_REPLY_BAD;
    }
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (r->code != 0 && code != r->code) {
        buf_printf(why, "reply code %d after %d in one reply", code, r->code);
        return RELAY_REPLY_BAD;
    }
    if (n > 3 && line[3] != ' ' && line[3] != '-') {
        buf_puts(why, "malformed reply separator");
        return RELAY_REPLY_BAD;
    }
    r->code = code;
    if (r->nlines > 1)
        buf_putc(&r->text, '\n');
    if (n > 4)
        buf_append(&r->text, line + 4, n - 4);
    r->done = n == 3 || line[3] == ' ';
    return r->done ? RELAY_REPLY_DONE : RELAY_REPLY_MORE;
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

void relay_reply_status(const struct relay_reply *r, char out_status[16], struct buf *text)
{
    int cls = r->code / 100;
    snprintf(out_status, 16, "%d.0.0", cls);
    const char *p = buf_cstr(&r->text), *end = p + r->text.len;
    size_t budget = RELAY_REPLY_TEXT_MAX;
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

/* ---- dot-stuffing ---- */

void relay_stuff_init(struct relay_stuffer *s)
{
    s->bol = true;
    s->cr = false;
}

void relay_stuff(struct relay_stuffer *s, const char *p, size_t n, struct buf *out)
{
    size_t i = 0;
    while (i < n) {
        char ch = p[i];
        if (s->cr) {    /* CR then anything: the line ended; CRLF keeps its LF */
            s->cr = false;
            buf_append(out, "\r\n", 2);
            s->bol = true;
            if (ch == '\n') {
                i++;
                continue;
            }
        }
        if (ch == '\r') {
            s->cr = true;
            i++;
        } else if (ch == '\n') {
            buf_append(out, "\r\n", 2);
            s->bol = true;
            i++;
        } else {
            if (s->bol && ch == '.')
                buf_putc(out, '.');
            size_t j = i;
            while (j < n && p[j] != '\r' && p[j] != '\n')
                j++;
            buf_append(out, p + i, j - i);
            s->bol = false;
            i = j;
        }
    }
}

void relay_stuff_end(struct relay_stuffer *s, struct buf *out)
{
    if (s->cr || !s->bol)
        buf_append(out, "\r\n", 2);
    s->cr = false;
    s->bol = true;
    buf_append(out, ".\r\n", 3);
}
