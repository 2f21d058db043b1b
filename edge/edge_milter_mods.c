/*
 * edge_milter_mods.c - applies what the milters asked for at the end of message to the
 * transaction: header fields added, inserted, changed or deleted (in the client's header
 * section, never in our Received header), the envelope sender changed, recipients added or
 * removed, the body replaced. Addresses from milters go through the same parser as the client's
 * (RFC 5321), and header text gets CRLF line ends, so a milter cannot smuggle a bare line end or
 * a malformed address into the queue. A modification that cannot be applied is logged and
 * skipped; a message left without recipients is discarded.
 */
#include "edge.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "filter_milter.h"
#include "mem.h"

size_t edge_tx_header_end(const struct edge_tx *tx)
{
    const char *c = tx->content.data;
    size_t i = tx->header_len;
    while (i < tx->content.len && c[i] != '\r' && c[i] != '\n') {
        const char *nl = memchr(c + i, '\n', tx->content.len - i);
        i = nl ? (size_t)(nl - c) + 1 : tx->content.len;
    }
    return i;
}

size_t edge_tx_field_end(const struct edge_tx *tx, size_t i, size_t hdr_end)
{
    const char *c = tx->content.data;
    for (;;) {
        const char *nl = memchr(c + i, '\n', hdr_end - i);
        i = nl ? (size_t)(nl - c) + 1 : hdr_end;
        if (i >= hdr_end || (c[i] != ' ' && c[i] != '\t'))
            return i;
    }
}

/* Replaces content[at, at + n) by text. */
static void splice(struct edge_tx *tx, size_t at, size_t n, const struct buf *text)
{
    struct buf *c = &tx->content;
    if (text->len > n)
        buf_reserve(c, text->len - n);
    memmove(c->data + at + text->len, c->data + at + n, c->len - at - n);
    if (text->len > 0)
        memcpy(c->data + at, text->data, text->len);
    c->len = c->len - n + text->len;
    c->data[c->len] = '\0';
}

/* "name: value\r\n" with every line end of the value as CRLF. */
static void field_text(const char *name, const char *value, struct buf *out)
{
    buf_printf(out, "%s: ", name);
    for (const char *p = value; *p != '\0'; p++) {
        if (*p == '\r')
            continue;
        if (*p == '\n')
            buf_putc(out, '\r');
        buf_putc(out, *p);
    }
    buf_puts(out, "\r\n");
}

/* Offset of the index-th (1-based) field called name, or of the index-th field at all (name NULL,
 * 0-based); hdr_end when there is none. */
static size_t find_field(const struct edge_tx *tx, const char *name, uint32_t index, size_t hdr_end)
{
    const char *c = tx->content.data;
    size_t nlen = name ? strlen(name) : 0;
    uint32_t seen = 0;
    for (size_t i = tx->header_len; i < hdr_end; i = edge_tx_field_end(tx, i, hdr_end)) {
        if (name == NULL) {
            if (seen++ == index)
                return i;
        } else if (hdr_end - i > nlen && c[i + nlen] == ':' && strncasecmp(c + i, name, nlen) == 0) {
            if (++seen == (index == 0 ? 1 : index))
                return i;
        }
    }
    return hdr_end;
}

static void header_mod(struct edge_tx *tx, const struct milter_mod *m)
{
    size_t hdr_end = edge_tx_header_end(tx);
    struct buf text = BUF_INIT;
    switch (m->type) {
    case MM_ADDHEADER:
        field_text(m->name, m->value, &text);
        splice(tx, hdr_end, 0, &text);
        break;
    case MM_INSHEADER:
        field_text(m->name, m->value, &text);
        splice(tx, find_field(tx, NULL, m->index, hdr_end), 0, &text);
        break;
    case MM_CHGHEADER: {
        size_t at = find_field(tx, m->name, m->index, hdr_end);
        if (at == hdr_end) {
            /* Sendmail and Postfix add a field that is changed but missing. */
            if (m->value[0] != '\0') {
                field_text(m->name, m->value, &text);
                splice(tx, hdr_end, 0, &text);
            }
            break;
        }
        if (m->value[0] != '\0')
            field_text(m->name, m->value, &text);
        splice(tx, at, edge_tx_field_end(tx, at, hdr_end) - at, &text);
        break;
    }
    default:
        break;
    }
    buf_release(&text);
}

/* The body from the first byte after the empty line, with every line end made CRLF. */
static void replace_body(struct edge_tx *tx, const struct buf *body)
{
    size_t at = edge_tx_header_end(tx);
    struct buf text = BUF_INIT;
    if (at >= tx->content.len || (tx->content.data[at] != '\r' && tx->content.data[at] != '\n'))
        buf_puts(&text, "\r\n");    /* a message without a body gets its empty line */
    else
        at += tx->content.data[at] == '\r' ? 2 : 1;
    for (size_t i = 0; i < body->len; i++) {
        char ch = body->data[i];
        if (ch == '\n' && (i == 0 || body->data[i - 1] != '\r'))
            buf_putc(&text, '\r');
        buf_putc(&text, ch);
        if (ch == '\r' && (i + 1 == body->len || body->data[i + 1] != '\n'))
            buf_putc(&text, '\n');
    }
    splice(tx, at, tx->content.len - at, &text);
    buf_release(&text);
}

/* "<a@b>" or "a@b", then ESMTP args, as a MAIL or RCPT argument string: "FROM:<a@b> args". */
static void envelope_args(const char *verb, const char *addr, const char *args, struct buf *out)
{
    buf_printf(out, "%s:%s%s%s", verb, addr[0] == '<' ? "" : "<", addr, addr[0] == '<' ? "" : ">");
    if (args != NULL && args[0] != '\0')
        buf_printf(out, " %s", args);
}

static bool same_address(const char *mailbox, const char *addr)
{
    size_t n = strlen(addr);
    if (n >= 2 && addr[0] == '<' && addr[n - 1] == '>') {
        addr++;
        n -= 2;
    }
    return strlen(mailbox) == n && strncasecmp(mailbox, addr, n) == 0;
}

static void log_skip(struct edge_session *s, const struct milter_mod *m, const char *why)
{
    struct logrec lr;
    if (log_begin(&lr, LOG_WARN, "milter-mod-skipped", &s->logctx)) {
        log_str(&lr, "milter", m->milter);
        log_str(&lr, "address", m->name != NULL ? m->name : "");
        log_str(&lr, "reason", why);
        log_end(&lr);
    }
}

static void envelope_mod(struct edge_session *s, const struct milter_mod *m)
{
    struct edge_tx *tx = s->tx;
    struct buf args = BUF_INIT;
    struct smtp_parse_err err;
    switch (m->type) {
    case MM_CHGFROM: {
        struct smtp_mail mail;
        memset(&mail, 0, sizeof mail);
        envelope_args("FROM", m->name, m->value, &args);
        if (edge_parse_mail(s, buf_cstr(&args), &mail, &err)) {
            smtp_mail_clear(&tx->mail);
            tx->mail = mail;
        } else {
            log_skip(s, m, err.text);
        }
        break;
    }
    case MM_ADDRCPT:
    case MM_ADDRCPT_PAR: {
        struct smtp_rcpt r;
        memset(&r, 0, sizeof r);
        envelope_args("TO", m->name, m->type == MM_ADDRCPT_PAR ? m->value : NULL, &args);
        if (edge_parse_rcpt(s, buf_cstr(&args), &r, &err))
            edge_tx_add_rcpt(tx, &r);
        else
            log_skip(s, m, err.text);
        break;
    }
    case MM_DELRCPT:
        for (size_t i = 0; i < tx->nrcpts;) {
            if (same_address(tx->rcpts[i].rcpt.path.mailbox, m->name)) {
                smtp_rcpt_clear(&tx->rcpts[i].rcpt);
                memmove(&tx->rcpts[i], &tx->rcpts[i + 1], (tx->nrcpts - i - 1) * sizeof *tx->rcpts);
                tx->nrcpts--;
            } else {
                i++;
            }
        }
        break;
    default:
        break;
    }
    buf_release(&args);
}

bool edge_milter_apply(struct edge_session *s, const struct milter_verdict *v)
{
    struct edge_tx *tx = s->tx;
    for (size_t i = 0; i < v->nmods; i++) {
        const struct milter_mod *m = &v->mods[i];
        switch (m->type) {
        case MM_ADDHEADER:
        case MM_INSHEADER:
        case MM_CHGHEADER:
            header_mod(tx, m);
            break;
        case MM_REPLBODY:
            replace_body(tx, &m->body);
            break;
        case MM_CHGFROM:
        case MM_ADDRCPT:
        case MM_ADDRCPT_PAR:
        case MM_DELRCPT:
            envelope_mod(s, m);
            break;
        case MM_QUARANTINE:
            break;      /* the verdict says it */
        }
    }
    if (v->nmods > 0)
        log_msg(LOG_INFO, "milter-modified", &s->logctx, "%zu modifications applied", v->nmods);
    if (tx->nrcpts == 0) {
        log_msg(LOG_INFO, "milter-discard", &s->logctx, "no recipients left after the milters");
        edge_reply(s, "250 2.0.0 Ok: discarded");
        edge_session_tx_reset(s);
        return false;
    }
    return true;
}

void edge_tx_quarantine(struct edge_tx *tx, const char *reason)
{
    /* quarantine/<first word of the reason>: quarantine/spam, quarantine/virus... */
    struct buf name = BUF_INIT;
    buf_puts(&name, "quarantine/");
    size_t start = name.len;
    for (const char *p = reason != NULL ? reason : ""; *p != '\0' && name.len - start < 32; p++) {
        char ch = *p;
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch + 32);
        if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-')
            buf_putc(&name, ch);
        else if (name.len > start)
            break;
    }
    if (name.len == start)
        buf_puts(&name, "milter");
    free(tx->quarantine);
    tx->quarantine = buf_steal(&name);
    free(tx->quarantine_reason);
    tx->quarantine_reason = xstrdup(reason != NULL ? reason : "");
}
