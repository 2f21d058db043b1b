/*
 * edge_received.c - the Received header the edge adds to every message (RFC 5321 §4.4,
 * RFC 3848 protocol types, RFC 6531 §3.7.3 for SMTPUTF8).
 *
 *   Received: from HELO ([IP])
 *           by HOSTNAME (mxgate) with ESMTPSA id QUEUEID
 *           (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))
 *           (authenticated user USER)
 *           for <RCPT>; Wed, 25 Nov 2026 10:00:00 +0000
 *
 * Text that came from the client (HELO, user name) is reduced to a safe alphabet first, so it
 * can neither break the header nor the comment it sits in.
 */
#include "edge.h"

#include <string.h>
#include <time.h>

void edge_header_safe(struct buf *out, const char *s, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(s);
    size_t take = n < max ? n : max;
    for (size_t i = 0; i < take; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
            || strchr(".-_:@[]+=", c) != NULL) {
            buf_putc(out, (char)c);
        } else {
            char esc[4] = { '\\', 'x', hex[c >> 4], hex[c & 15] };
            buf_append(out, esc, 4);
        }
    }
    if (take < n)
        buf_append(out, "...", 3);
}

static const char *protocol(const struct edge_session *s, const struct edge_tx *tx)
{
    static const char *const names[2][2][2] = {
        /* [utf8][tls][auth] */
        { { "ESMTP", "ESMTPA" }, { "ESMTPS", "ESMTPSA" } },
        { { "UTF8SMTP", "UTF8SMTPA" }, { "UTF8SMTPS", "UTF8SMTPSA" } },
    };
    if (!s->esmtp)
        return "SMTP";
    return names[tx->mail.smtputf8][s->ssl != NULL][s->auth_user != NULL];
}

void edge_received_header(const struct edge_session *s, const struct edge_tx *tx, struct buf *out)
{
    buf_puts(out, "Received: from ");
    buf_puts(out, s->helo != NULL ? s->helo : "unknown");
    buf_printf(out, " (%s%s])\r\n", strchr(s->ip, ':') != NULL ? "[IPv6:" : "[", s->ip);
    buf_printf(out, "\tby %s (mxgate) with %s id %s", s->srv->hostname, protocol(s, tx), tx->id);
    if (s->tls_info != NULL)
        buf_printf(out, "\r\n\t(using %s)", s->tls_info);
    if (s->auth_user != NULL) {
        buf_puts(out, "\r\n\t(authenticated user ");
        edge_header_safe(out, s->auth_user, 100);
        buf_putc(out, ')');
    }
    if (tx->nrcpts == 1) {
        /* Only for a single recipient, so a Bcc stays private. */
        buf_puts(out, "\r\n\tfor <");
        edge_header_safe(out, tx->rcpts[0].rcpt.path.mailbox, 300);
        buf_putc(out, '>');
    }
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    buf_printf(out, "; %s\r\n", date);
}
