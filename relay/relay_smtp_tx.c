/*
 * relay_smtp_tx.c - outbound SMTP client, the transaction half: MAIL, RCPT, DATA and the message
 * on a session relay_smtp.c has opened, and the per-recipient results of the replies (RFC 5321;
 * SIZE RFC 1870, PIPELINING RFC 2920, DSN RFC 3461, 8BITMIME RFC 6152, SMTPUTF8 RFC 6531).
 *
 * Owns nothing of its own: it works on the connection's struct relay_smtp (relay_smtp_int.h).
 *
 * The message goes out dot-stuffed (relay_stuff(), relay_smtp_reply.c), and any bare CR or LF is
 * written as CRLF, so the wire never carries a bare line-end byte whatever the body holds. An
 * 8-bit body goes out as it is to a server that does not offer 8BITMIME (no MIME down-conversion;
 * the body then lacks BODY=).
 *
 * Failures: 2xx delivered, 4xx deferred, 5xx failed, per recipient; a reply to DATA or to the
 * final dot decides every recipient accepted at RCPT. Local reasons: SMTPUTF8 needed but not
 * offered (5.6.7), message over the server's SIZE (5.3.4), malformed addresses (5.1.7 / 5.1.3).
 * A 3xx reply other than to DATA, or a 2xx to DATA, is a protocol error (4.5.0).
 */
#include "relay_smtp_int.h"

#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#define BODY_CHUNK 16384        /* body bytes stuffed per step */
#define BODY_HIGH 65536         /* stop filling the socket's output above this */
#define BODY_LOW 16384          /* refill when it drains below this */

static bool is_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return false;
    return true;
}

/* No byte that could end or split a command line. */
static bool addr_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

static void append_notify(struct buf *b, unsigned notify)
{
    if (notify & DSN_NOTIFY_NEVER) {
        buf_puts(b, " NOTIFY=NEVER");
        return;
    }
    static const struct { unsigned flag; const char *name; } names[] = {
        { DSN_NOTIFY_SUCCESS, "SUCCESS" }, { DSN_NOTIFY_FAILURE, "FAILURE" }, { DSN_NOTIFY_DELAY, "DELAY" },
    };
    const char *sep = " NOTIFY=";
    for (size_t i = 0; i < 3; i++) {
        if (notify & names[i].flag) {
            buf_printf(b, "%s%s", sep, names[i].name);
            sep = ",";
        }
    }
}

static void append_rcpt(struct relay_smtp *c, struct buf *b, size_t i)
{
    const struct relay_smtp_rcpt *r = &c->job->rcpts[i];
    buf_printf(b, "RCPT TO:<%s>", r->addr);
    if (c->dsn && r->notify != 0)
        append_notify(b, r->notify);
    const char *semi = c->dsn && r->orcpt != NULL ? strchr(r->orcpt, ';') : NULL;
    if (semi != NULL && semi > r->orcpt && addr_ok(r->orcpt)) {
        buf_printf(b, " ORCPT=%.*s;", (int)(semi - r->orcpt), r->orcpt);
        xtext_encode(b, semi + 1);
    }
    buf_append(b, "\r\n", 2);
}

/* Ends the transaction: results go to the caller; RSET when the server still holds a MAIL. */
static void tx_end(struct relay_smtp *c)
{
    struct verdict v;
    relay_smtp_verdict_local(&v, RELAY_SMTP_DEFERRED, "4.3.0", RELAY_PHASE_BODY,
                             "no reply from %s[%s] decided this recipient", c->mx_host, c->ip);
    relay_smtp_finish_rest(c, &v);
    c->state = CS_READY;
    if (c->need_rset) {
        c->need_rset = false;
        c->state = CS_RSET;
        relay_smtp_send_cmd(c, EX_RSET, 0, "RSET");
    } else {
        relay_smtp_rearm(c);
    }
}

static void send_next_rcpt(struct relay_smtp *c)
{
    while (c->next_rcpt < c->job->nrcpts && !c->rs[c->next_rcpt].in_tx)
        c->next_rcpt++;
    if (c->next_rcpt < c->job->nrcpts) {
        buf_reset(&c->scratch);
        append_rcpt(c, &c->scratch, c->next_rcpt);
        relay_smtp_expect_push(c, EX_RCPT, c->next_rcpt);
        bev_io_write(c->bev, c->scratch.data, c->scratch.len);
        c->next_rcpt++;
    } else if (c->naccepted > 0) {
        relay_smtp_send_cmd(c, EX_DATA, 0, "DATA");
    } else {
        tx_end(c);
    }
}

void relay_smtp_tx_start(struct relay_smtp *c)
{
    const struct relay_smtp_job *j = c->job;
    c->job_waiting = false;
    c->ntx++;
    c->mail_ok = c->need_rset = false;
    c->next_rcpt = c->naccepted = 0;
    c->pipelined = c->pipelining;
    c->state = CS_TX;
    bool utf8_all = j->smtputf8 || !is_ascii(j->sender, strlen(j->sender));
    bool eightbit = j->eightbit || !is_ascii(j->body, j->body_len);
    struct verdict v;
    if (!addr_ok(j->sender)) {
        relay_smtp_verdict_local(&v, RELAY_SMTP_FAILED, "5.1.7", RELAY_PHASE_MAIL, "malformed sender address");
        relay_smtp_finish_rest(c, &v);
    } else if (utf8_all && !c->smtputf8) {
        relay_smtp_verdict_local(&v, RELAY_SMTP_FAILED, "5.6.7", RELAY_PHASE_MAIL,
                                 "SMTPUTF8 is required, but was not offered by host %s[%s]", c->mx_host, c->ip);
        relay_smtp_finish_rest(c, &v);
    } else if (c->size && c->size_limit > 0 && j->body_len > c->size_limit) {
        relay_smtp_verdict_local(&v, RELAY_SMTP_FAILED, "5.3.4", RELAY_PHASE_MAIL,
                                 "message size %zu exceeds size limit %llu of server %s[%s]", j->body_len,
                                 c->size_limit, c->mx_host, c->ip);
        relay_smtp_finish_rest(c, &v);
    }
    size_t n = 0;
    bool utf8 = utf8_all;
    for (size_t i = 0; i < j->nrcpts && !c->job_finished; i++) {
        const char *a = j->rcpts[i].addr;
        bool ascii = is_ascii(a, strlen(a));
        if (!addr_ok(a) || *a == '\0') {
            relay_smtp_verdict_local(&v, RELAY_SMTP_FAILED, "5.1.3", RELAY_PHASE_RCPT, "malformed recipient address");
            relay_smtp_apply(c, i, &v);
            buf_release(&v.text);
        } else if (!ascii && !c->smtputf8) {
            relay_smtp_verdict_local(&v, RELAY_SMTP_FAILED, "5.6.7", RELAY_PHASE_RCPT,
                                     "SMTPUTF8 is required, but was not offered by host %s[%s]", c->mx_host, c->ip);
            relay_smtp_apply(c, i, &v);
            buf_release(&v.text);
        } else {
            c->rs[i].in_tx = true;
            utf8 |= !ascii;
            n++;
        }
    }
    if (n == 0) {   /* nothing to send: no MAIL, the session stays clean */
        tx_end(c);
        return;
    }

    struct buf *b = &c->scratch;
    buf_reset(b);
    buf_printf(b, "MAIL FROM:<%s>", j->sender);
    if (c->size)
        buf_printf(b, " SIZE=%zu", j->body_len);
    if (eightbit && c->eightbitmime)
        buf_puts(b, " BODY=8BITMIME");
    if (utf8)
        buf_puts(b, " SMTPUTF8");
    if (c->dsn && j->ret != DSN_RET_UNSPEC)
        buf_puts(b, j->ret == DSN_RET_FULL ? " RET=FULL" : " RET=HDRS");
    if (c->dsn && j->envid != NULL) {
        buf_puts(b, " ENVID=");
        xtext_encode(b, j->envid);
    }
    buf_append(b, "\r\n", 2);
    relay_smtp_expect_push(c, EX_MAIL, 0);
    if (c->pipelined) {     /* RFC 2920: MAIL, every RCPT and DATA in one write */
        for (size_t i = 0; i < j->nrcpts; i++) {
            if (c->rs[i].in_tx) {
                append_rcpt(c, b, i);
                relay_smtp_expect_push(c, EX_RCPT, i);
            }
        }
        buf_append(b, "DATA\r\n", 6);
        relay_smtp_expect_push(c, EX_DATA, 0);
    }
    bev_io_write(c->bev, b->data, b->len);
}

/* Writes the message while the socket drains, then the final dot. */
void relay_smtp_body_fill(struct relay_smtp *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    const struct relay_smtp_job *j = c->job;
    while (c->body_pos < j->body_len && evbuffer_get_length(out) < BODY_HIGH) {
        size_t n = j->body_len - c->body_pos < BODY_CHUNK ? j->body_len - c->body_pos : BODY_CHUNK;
        buf_reset(&c->scratch);
        relay_stuff(&c->stuffer, j->body + c->body_pos, n, &c->scratch);
        bev_io_write(c->bev, c->scratch.data, c->scratch.len);
        c->body_pos += n;
    }
    if (c->body_pos < j->body_len) {
        relay_smtp_arm(c, c->to.data_block_ms);
        return;
    }
    buf_reset(&c->scratch);
    relay_stuff_end(&c->stuffer, &c->scratch);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    c->state = CS_TX;
    c->dots_left = 0;
    if (c->lmtp) {
        /* RFC 2033 §4.2: one reply per recipient accepted at RCPT, in that order. */
        for (size_t i = 0; i < c->job->nrcpts; i++) {
            if (c->rs[i].accepted && !c->rs[i].final) {
                relay_smtp_expect_push(c, EX_DOT, i);
                c->dots_left++;
            }
        }
    }
    if (c->dots_left == 0)
        relay_smtp_expect_push(c, EX_DOT, 0);
    bev_io_write(c->bev, c->scratch.data, c->scratch.len);
}

/* The reply just parsed decides every recipient accepted at RCPT and not decided yet. */
static void decide_accepted(struct relay_smtp *c, enum relay_phase ph)
{
    struct verdict v;
    relay_smtp_verdict_reply(c, &v, ph);
    for (size_t i = 0; i < c->job->nrcpts; i++)
        if (c->rs[i].accepted && !c->rs[i].final)
            relay_smtp_apply(c, i, &v);
    buf_release(&v.text);
}

void relay_smtp_on_tx_reply(struct relay_smtp *c, struct expect e)
{
    int cls = c->reply.code / 100;
    struct verdict v;
    if (cls == 3 && e.kind != EX_DATA) {
        relay_smtp_protocol_error(c, c->last_phase, "intermediate reply to a command that takes none",
                                  buf_cstr(&c->reply.text), c->reply.text.len);
        return;
    }
    if (cls == 2 && e.kind == EX_DATA) {
        relay_smtp_protocol_error(c, c->last_phase, "2xx reply to DATA", buf_cstr(&c->reply.text), c->reply.text.len);
        return;
    }
    switch (e.kind) {
    case EX_MAIL:
        if (cls == 2) {
            c->mail_ok = c->need_rset = true;
        } else {
            relay_smtp_verdict_reply(c, &v, RELAY_PHASE_MAIL);
            for (size_t i = 0; i < c->job->nrcpts; i++)
                if (c->rs[i].in_tx && !c->rs[i].final)
                    relay_smtp_apply(c, i, &v);
            buf_release(&v.text);
        }
        if (!c->pipelined) {
            if (c->mail_ok)
                send_next_rcpt(c);
            else
                tx_end(c);
        }
        break;
    case EX_RCPT:
        if (c->mail_ok && cls == 2) {
            c->rs[e.rcpt].accepted = true;
            c->naccepted++;
        } else if (c->mail_ok) {
            relay_smtp_verdict_reply(c, &v, RELAY_PHASE_RCPT);
            relay_smtp_apply(c, e.rcpt, &v);
            buf_release(&v.text);
        }
        if (!c->pipelined)
            send_next_rcpt(c);
        break;
    case EX_DATA:
        if (cls == 3 && c->mail_ok && c->naccepted > 0) {
            c->state = CS_BODY;
            c->body_pos = 0;
            relay_stuff_init(&c->stuffer);
            bufferevent_setwatermark(c->bev, EV_WRITE, BODY_LOW, 0);
            relay_smtp_body_fill(c);
        } else if (cls == 3) {  /* RFC 2920 §3.1: DATA accepted with no recipient: empty message */
            relay_smtp_expect_push(c, EX_DOT, 0);
            bev_io_write(c->bev, ".\r\n", 3);
        } else {
            if (c->mail_ok)
                decide_accepted(c, RELAY_PHASE_DATA);
            tx_end(c);
        }
        break;
    case EX_DOT:
        c->need_rset = false;   /* the transaction is over whatever the reply */
        if (c->dots_left > 0) {
            /* LMTP: this reply is this recipient's alone. */
            relay_smtp_verdict_reply(c, &v, RELAY_PHASE_BODY);
            relay_smtp_apply(c, e.rcpt, &v);
            buf_release(&v.text);
            if (--c->dots_left > 0)
                break;
        } else {
            decide_accepted(c, RELAY_PHASE_BODY);
        }
        tx_end(c);
        break;
    default:
        break;
    }
}
