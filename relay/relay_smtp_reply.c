/*
 * relay_smtp_reply.c - the pure pieces of the outbound SMTP client (relay_smtp.h): dot-stuffing
 * the message with CRLF line ends (RFC 5321 §4.5.2) and the names of the conversation's phases.
 * Replies are parsed by lib/smtp_reply.c.
 *
 * Owns nothing beyond the caller's structs: no I/O, no allocation but the caller's buffers.
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
