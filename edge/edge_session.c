/*
 * edge_session.c - the SMTP server state machine (RFC 5321), one edge_cmd_<verb>() per command.
 *
 * Owns a session's lifetime: reading command lines, enforcing the command-line limit, RFC 2920
 * pipelining discipline, the error counter (replies slow down past edge.soft_error_limit and the
 * session ends with 421 at edge.hard_error_limit), the idle timeout, and closing. DATA/BDAT
 * content, STARTTLS and AUTH are in their own files and come back here through
 * edge_session_resume().
 *
 * A session is never freed inside one of its own callbacks: edge_session_close() marks it dead and
 * a deferred event (the reaper) frees it once no asynchronous operation still holds it.
 */
#include "edge.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "bev_io.h"
#include "conf.h"
#include "mem.h"

/* Stop reading a client's pipelined commands while this much of our output is unsent. */
#define OUTPUT_HIGH_WATER (256 * 1024)
/* AUTH continuation lines may be long (RFC 4954 §4). */
#define AUTH_LINE_MAX 12288

void edge_tx_free(struct edge_tx *tx)
{
    if (tx == NULL)
        return;
    edge_tx_filters_free(tx);
    free(tx->milter_walk);
    free(tx->quarantine);
    free(tx->quarantine_reason);
    smtp_mail_clear(&tx->mail);
    for (size_t i = 0; i < tx->nrcpts; i++)
        smtp_rcpt_clear(&tx->rcpts[i].rcpt);
    free(tx->rcpts);
    buf_release(&tx->content);
    free(tx);
}

void edge_session_tx_reset(struct edge_session *s)
{
    edge_tx_free(s->tx);
    s->tx = NULL;
    s->logctx.queue_id = NULL;
}

/* ---- replies ---- */

/*
 * Sends reply bytes. A client that waits for each reply gets it at once; the replies to
 * pipelined commands (more input already here) are queued and leave together in one write.
 */
static void session_out(struct edge_session *s, const char *data, size_t len)
{
    if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0)
        evbuffer_add(bufferevent_get_output(s->bev), data, len);
    else
        bev_io_write(s->bev, data, len);
}

/*
 * One reply line and its CRLF in one write, so that over TLS they travel in one record. Most
 * replies fit the stack buffer; a longer one (EHLO's, a milter's text) takes the heap.
 */
static void reply_v(struct edge_session *s, const char *fmt, va_list ap)
{
    char line[512];
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(line, sizeof line - 2, fmt, ap);
    if (n >= 0 && (size_t)n < sizeof line - 2) {
        memcpy(line + n, "\r\n", 2);
        session_out(s, line, (size_t)n + 2);
    } else {
        struct buf big = BUF_INIT;
        buf_vprintf(&big, fmt, again);
        buf_append(&big, "\r\n", 2);
        session_out(s, big.data, big.len);
        buf_release(&big);
    }
    va_end(again);
}

void edge_reply(struct edge_session *s, const char *fmt, ...)
{
    if (s->dead)
        return;
    va_list ap;
    va_start(ap, fmt);
    reply_v(s, fmt, ap);
    va_end(ap);
}

static void error_sleep_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct edge_session *s = arg;
    s->paused = false;
    if (s->dead)
        return;
    session_out(s, s->pending_reply.data, s->pending_reply.len);
    buf_reset(&s->pending_reply);
    edge_session_resume(s);
}

void edge_reply_error(struct edge_session *s, const char *fmt, ...)
{
    if (s->dead)
        return;
    s->errors++;
    struct buf text = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&text, fmt, ap);
    va_end(ap);

    struct logrec lr;
    if (log_begin(&lr, LOG_INFO, "reject", &s->logctx)) {
        log_str(&lr, "reply", buf_cstr(&text));
        log_int(&lr, "errors", s->errors);
        log_end(&lr);
    }
    if (s->errors >= (unsigned)conf.edge_hard_error_limit) {
        edge_reply(s, "%s", buf_cstr(&text));
        edge_reply(s, "421 4.7.0 %s Error: too many errors", s->srv->hostname);
        buf_release(&text);
        edge_session_close(s, "too many errors");
        return;
    }
    if (s->errors > (unsigned)conf.edge_soft_error_limit && conf.edge_error_sleep > 0) {
        /* Tarpit: hold the reply, and with it everything the client pipelined behind it. */
        buf_append(&s->pending_reply, text.data, text.len);
        buf_append(&s->pending_reply, "\r\n", 2);
        s->paused = true;
        struct timeval tv = { conf.edge_error_sleep / 1000, (conf.edge_error_sleep % 1000) * 1000 };
        evtimer_assign(s->timer, s->srv->base, error_sleep_cb, s);
        evtimer_add(s->timer, &tv);
    } else {
        edge_reply(s, "%s", buf_cstr(&text));
    }
    buf_release(&text);
}

/* ---- lifetime ---- */

static void session_free(struct edge_session *s)
{
    struct logrec lr;
    if (log_begin(&lr, LOG_INFO, "disconnect", &s->logctx)) {
        log_int(&lr, "commands", (long long)s->commands);
        log_int(&lr, "messages", s->messages);
        log_int(&lr, "errors", s->errors);
        log_int(&lr, "duration_ms", clock_wall_ms() - s->connected_ms);
        log_end(&lr);
    }
    edge_session_unlink(s);
    edge_screen_free(s);
    edge_milter_free(s);
    edge_session_tx_reset(s);
    smtp_rcpt_clear(&s->pending_rcpt);
    if (s->drain_watch != NULL) {
        struct bufferevent *under = bufferevent_get_underlying(s->bev);
        evbuffer_remove_cb_entry(bufferevent_get_output(under), s->drain_watch);
    }
    if (s->bev != NULL)
        bufferevent_free(s->bev);   /* frees the SSL and closes the socket */
    event_free(s->timer);
    event_free(s->reaper);
    free(s->helo);
    free(s->tls_info);
    free(s->auth_user);
    if (s->auth_login_user != NULL) {
        explicit_bzero(s->auth_login_user, strlen(s->auth_login_user));
        free(s->auth_login_user);
    }
    buf_release(&s->pending_reply);
    free(s);
}

static void reaper_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct edge_session *s = arg;
    if (s->busy_refs == 0)
        session_free(s);
}

/* Marks the session dead and schedules its freeing from a fresh callback. */
static void session_kill(struct edge_session *s)
{
    if (!s->dead) {
        s->dead = true;
        evtimer_del(s->timer);
        if (s->bev != NULL)
            bufferevent_disable(s->bev, EV_READ | EV_WRITE);
    }
    event_active(s->reaper, 0, 0);
}

void edge_session_wait(struct edge_session *s)
{
    s->busy_refs++;
    s->waiting = true;
}

bool edge_session_release(struct edge_session *s)
{
    s->busy_refs--;
    if (s->dead) {
        if (s->busy_refs == 0)
            event_active(s->reaper, 0, 0);
        return false;
    }
    s->waiting = false;
    return true;
}

static void log_close(struct edge_session *s, const char *why)
{
    struct logrec lr;
    if (log_begin(&lr, LOG_INFO, "close", &s->logctx)) {
        log_str(&lr, "reason", why);
        log_end(&lr);
    }
}

/* How long a closing session reads and discards what the client still sends. */
#define LINGER_MS 2000

static void linger_read_cb(struct bufferevent *bev, void *arg)
{
    (void)arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void linger_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    session_kill(arg);      /* EOF, error or the linger timeout */
}

static void linger_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    session_kill(arg);
}

/*
 * The last reply is out: half-close and read what the client still sends until it closes (or
 * LINGER_MS pass). Closing a socket with unread input makes the kernel send RST, which can destroy
 * our last replies (the 421, the 554) before the client reads them.
 */
static void session_linger(struct edge_session *s)
{
    evutil_socket_t fd = bufferevent_getfd(s->bev);
    if (s->dead || fd < 0) {
        session_kill(s);
        return;
    }
    shutdown(fd, SHUT_WR);
    struct evbuffer *in = bufferevent_get_input(s->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    bufferevent_setcb(s->bev, linger_read_cb, NULL, linger_event_cb, s);
    bufferevent_disable(s->bev, EV_WRITE);
    bufferevent_enable(s->bev, EV_READ);
    struct timeval tv = { LINGER_MS / 1000, (LINGER_MS % 1000) * 1000 };
    bufferevent_set_timeouts(s->bev, &tv, NULL);
    evtimer_assign(s->timer, s->srv->base, linger_timeout_cb, s);
    evtimer_add(s->timer, &tv);
}

static void socket_drained_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)info;
    struct edge_session *s = arg;
    if (evbuffer_get_length(buf) == 0 && !s->lingering) {
        s->lingering = true;
        session_linger(s);
    }
}

/*
 * Frees the session once every byte of its last reply has left: over TLS that is when the
 * socket's own buffer under the TLS filter is empty, not just the filter's.
 */
static void kill_when_flushed(struct edge_session *s)
{
    if (evbuffer_get_length(bufferevent_get_output(s->bev)) > 0)
        return;     /* write_cb calls again */
    struct bufferevent *under = bufferevent_get_underlying(s->bev);
    if (under != NULL && evbuffer_get_length(bufferevent_get_output(under)) > 0) {
        if (s->drain_watch == NULL)
            s->drain_watch = evbuffer_add_cb(bufferevent_get_output(under), socket_drained_cb, s);
        return;
    }
    if (!s->lingering) {
        s->lingering = true;
        session_linger(s);
    }
}

void edge_session_drop(struct edge_session *s)
{
    if (s->state != ST_CLOSING)
        log_close(s, "dropped");
    s->state = ST_CLOSING;
    session_kill(s);
}

void edge_session_close(struct edge_session *s, const char *why)
{
    if (s->dead || s->state == ST_CLOSING)
        return;
    log_close(s, why);
    s->state = ST_CLOSING;
    evtimer_del(s->timer);
    bufferevent_disable(s->bev, EV_READ);
    /* Whatever the client sent after this point is not read. */
    evbuffer_drain(bufferevent_get_input(s->bev), evbuffer_get_length(bufferevent_get_input(s->bev)));
    /* Freed once the last reply is out (bounded by the write timeout). */
    kill_when_flushed(s);
}

/* ---- commands ---- */

static void edge_cmd_helo(struct edge_session *s, const char *args, bool esmtp)
{
    if (*args == '\0') {
        edge_reply_error(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
        return;
    }
    struct buf helo = BUF_INIT;
    edge_header_safe(&helo, args, 255);
    free(s->helo);
    s->helo = buf_steal(&helo);
    s->esmtp = esmtp;
    edge_session_tx_reset(s);
    if (!edge_milter_helo(s))
        edge_helo_reply(s);
}

void edge_helo_reply(struct edge_session *s)
{
    if (!s->esmtp) {
        edge_reply(s, "250 %s", s->srv->hostname);
        return;
    }
    edge_reply(s, "250-%s", s->srv->hostname);
    edge_reply(s, "250-PIPELINING");
    edge_reply(s, "250-SIZE %lld", conf.edge_message_size_limit);
    if (s->srv->tls != NULL && s->ssl == NULL)
        edge_reply(s, "250-STARTTLS");
    if (edge_auth_offered(s) && s->auth_user == NULL)
        edge_reply(s, "250-AUTH PLAIN LOGIN");
    edge_reply(s, "250-ENHANCEDSTATUSCODES");
    edge_reply(s, "250-8BITMIME");
    edge_reply(s, "250-DSN");
    edge_reply(s, "250-SMTPUTF8");
    edge_reply(s, "250 CHUNKING");
}

static struct smtp_addr_limits addr_limits(void)
{
    struct smtp_addr_limits lim = {
        .max_local_part = (size_t)conf.edge_max_local_part,
        .max_domain = (size_t)conf.edge_max_domain,
        .max_path = (size_t)conf.edge_max_path,
    };
    return lim;
}

static struct smtp_ext_offer ext_offer(const struct edge_session *s)
{
    struct smtp_ext_offer o = {
        .size = s->esmtp, .eightbitmime = s->esmtp, .binarymime = false,
        .smtputf8 = s->esmtp, .dsn = s->esmtp, .auth = s->esmtp,
    };
    return o;
}

bool edge_parse_mail(const struct edge_session *s, const char *args, struct smtp_mail *out,
                     struct smtp_parse_err *err)
{
    struct smtp_addr_limits lim = addr_limits();
    struct smtp_ext_offer offer = ext_offer(s);
    return smtp_mail_parse(args, &lim, &offer, out, err);
}

bool edge_parse_rcpt(const struct edge_session *s, const char *args, struct smtp_rcpt *out,
                     struct smtp_parse_err *err)
{
    struct smtp_addr_limits lim = addr_limits();
    struct smtp_ext_offer offer = ext_offer(s);
    return smtp_rcpt_parse(args, &lim, &offer, s->tx->mail.smtputf8, out, err);
}

static void edge_cmd_mail(struct edge_session *s, const char *args)
{
    if (s->helo == NULL) {
        edge_reply_error(s, "503 5.5.1 Error: send HELO/EHLO first");
        return;
    }
    if (s->tx != NULL) {
        edge_reply_error(s, "503 5.5.1 Error: nested MAIL command");
        return;
    }
    if (s->lst->kind != LISTENER_MX && s->auth_user == NULL) {
        edge_reply_error(s, "530 5.7.0 Authentication required");
        return;
    }
    if (s->messages >= (unsigned)conf.edge_max_messages) {
        edge_reply(s, "421 4.7.0 %s Error: too many messages in one session", s->srv->hostname);
        edge_session_close(s, "message limit");
        return;
    }
    struct smtp_addr_limits lim = addr_limits();
    struct smtp_ext_offer offer = ext_offer(s);
    struct edge_tx *tx = xcalloc(1, sizeof *tx);
    struct smtp_parse_err err;
    if (!smtp_mail_parse(args, &lim, &offer, &tx->mail, &err)) {
        edge_tx_free(tx);
        edge_reply_error(s, "%d %s %s", err.code, err.enhanced, err.text);
        return;
    }
    if (tx->mail.size > conf.edge_message_size_limit) {
        edge_tx_free(tx);
        edge_reply_error(s, "552 5.3.4 Message size exceeds fixed limit");
        return;
    }
    s->tx = tx;
    if (!edge_filters_mail(s))
        edge_mail_checked(s, NULL);
}

void edge_mail_checked(struct edge_session *s, const char *refusal_fmt, ...)
{
    if (refusal_fmt == NULL) {
        if (!edge_milter_mail(s))
            edge_reply(s, "250 2.1.0 Ok");
        return;
    }
    struct buf r = BUF_INIT;
    va_list ap;
    va_start(ap, refusal_fmt);
    buf_vprintf(&r, refusal_fmt, ap);
    va_end(ap);
    edge_session_tx_reset(s);
    edge_reply_error(s, "%s", buf_cstr(&r));
    buf_release(&r);
}

/* Replies to RCPT once its verdict is known, keeping the recipient when accepted. */
static void rcpt_finish(struct edge_session *s, enum edge_rcpt_verdict v)
{
    struct smtp_rcpt r = s->pending_rcpt;
    memset(&s->pending_rcpt, 0, sizeof s->pending_rcpt);
    struct buf who = BUF_INIT;
    edge_header_safe(&who, r.path.mailbox, 300);
    switch (v) {
    case RCPT_ACCEPT:
        break;
    case RCPT_RELAY_DENIED:
        edge_reply_error(s, "554 5.7.1 <%s>: Relay access denied", buf_cstr(&who));
        break;
    case RCPT_UNKNOWN_USER:
        edge_reply_error(s, "550 5.1.1 <%s>: Recipient address rejected: User unknown", buf_cstr(&who));
        break;
    case RCPT_TEMPFAIL:
        edge_reply_error(s, "450 4.3.0 <%s>: Recipient address lookup failed, try again later",
                         buf_cstr(&who));
        break;
    }
    buf_release(&who);
    if (v != RCPT_ACCEPT) {
        smtp_rcpt_clear(&r);
        return;
    }
    s->pending_rcpt = r;
    if (!edge_milter_rcpt(s))
        edge_rcpt_add(s);
}

void edge_tx_add_rcpt(struct edge_tx *tx, struct smtp_rcpt *r)
{
    if (tx->nrcpts == tx->rcpt_cap) {
        tx->rcpt_cap = tx->rcpt_cap ? tx->rcpt_cap * 2 : 4;
        tx->rcpts = xrealloc(tx->rcpts, tx->rcpt_cap * sizeof *tx->rcpts);
    }
    memset(&tx->rcpts[tx->nrcpts], 0, sizeof tx->rcpts[tx->nrcpts]);
    tx->rcpts[tx->nrcpts++].rcpt = *r;
    memset(r, 0, sizeof *r);
}

void edge_rcpt_add(struct edge_session *s)
{
    edge_tx_add_rcpt(s->tx, &s->pending_rcpt);
    edge_reply(s, "250 2.1.5 Ok");
}

static void rcpt_lookup_done(enum edge_rcpt_verdict v, void *arg)
{
    struct edge_session *s = arg;
    if (s->lookup_inline) {
        /* Answered before edge_rcpt_lookup returned: edge_cmd_rcpt finishes it. */
        s->lookup_answered = true;
        s->lookup_verdict = v;
        return;
    }
    if (!edge_session_release(s))
        return;
    rcpt_finish(s, v);
    edge_session_resume(s);
}

static void edge_cmd_rcpt(struct edge_session *s, const char *args)
{
    struct edge_tx *tx = s->tx;
    if (tx == NULL) {
        edge_reply_error(s, "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (tx->nrcpts >= (size_t)conf.edge_max_recipients) {
        /* RFC 5321 4.5.3.1.10: a client may send more and take the 452s; not an error. */
        edge_reply(s, "452 4.5.3 Error: too many recipients");
        return;
    }
    struct smtp_addr_limits lim = addr_limits();
    struct smtp_ext_offer offer = ext_offer(s);
    struct smtp_parse_err err;
    memset(&s->pending_rcpt, 0, sizeof s->pending_rcpt);
    if (!smtp_rcpt_parse(args, &lim, &offer, tx->mail.smtputf8, &s->pending_rcpt, &err)) {
        edge_reply_error(s, "%d %s %s", err.code, err.enhanced, err.text);
        return;
    }
    const struct smtp_path *p = &s->pending_rcpt.path;
    enum edge_rcpt_verdict v = edge_relay_check(s, p);
    if (v != RCPT_ACCEPT || !edge_domain_is_local(p->domain)) {
        rcpt_finish(s, v);
        return;
    }
    s->lookup_inline = true;
    s->lookup_answered = false;
    edge_rcpt_lookup(s->srv, p, rcpt_lookup_done, s);
    s->lookup_inline = false;
    if (s->lookup_answered) {
        rcpt_finish(s, s->lookup_verdict);
        return;
    }
    edge_session_wait(s);
}

static void edge_cmd_rset(struct edge_session *s, const char *args)
{
    if (*args != '\0') {
        edge_reply_error(s, "501 5.5.4 Syntax: RSET");
        return;
    }
    edge_milter_abort(s);
    edge_session_tx_reset(s);
    edge_reply(s, "250 2.0.0 Ok");
}

static void edge_cmd_noop(struct edge_session *s, const char *args)
{
    (void)args;
    edge_reply(s, "250 2.0.0 Ok");
}

static void edge_cmd_quit(struct edge_session *s, const char *args)
{
    (void)args;
    edge_reply(s, "221 2.0.0 Bye");
    edge_session_close(s, "quit");
}

static void edge_cmd_vrfy(struct edge_session *s, const char *args)
{
    if (*args == '\0') {
        edge_reply_error(s, "501 5.5.4 Syntax: VRFY address");
        return;
    }
    edge_reply(s, "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static void edge_cmd_expn(struct edge_session *s, const char *args)
{
    (void)args;
    edge_reply_error(s, "502 5.5.1 Error: EXPN is not supported");
}

static void edge_cmd_help(struct edge_session *s, const char *args)
{
    (void)args;
    edge_reply(s, "214-2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP");
    edge_reply(s, "214 2.0.0 STARTTLS AUTH; see RFC 5321");
}

/* Words that show an HTTP or other non-SMTP client talking to the SMTP port. */
static bool non_smtp_word(const char *line)
{
    static const char *const words[] = { "GET ", "POST ", "HEAD ", "PUT ", "CONNECT ", "USER " };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strncmp(line, words[i], strlen(words[i])) == 0)
            return true;
    return false;
}

/*
 * RFC 2920 §3.1: EHLO, DATA, VRFY, EXPN, TURN, QUIT and NOOP may only be the last command of a
 * group; so may STARTTLS (RFC 3207) and AUTH (RFC 4954). A client that did not get PIPELINING
 * (HELO) may not pipeline at all.
 */
static bool must_be_last(const struct edge_session *s, enum smtp_verb v)
{
    switch (v) {
    case VERB_EHLO: case VERB_HELO: case VERB_DATA: case VERB_VRFY: case VERB_EXPN:
    case VERB_NOOP: case VERB_STARTTLS: case VERB_AUTH: case VERB_HELP:
        return true;
    case VERB_QUIT:
        return false;
    default:
        return !s->esmtp;
    }
}

static void sync_violation(struct edge_session *s, const char *line)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    size_t n = evbuffer_get_length(in);
    const char *ahead = (const char *)evbuffer_pullup(in, n < 100 ? (ssize_t)n : 100);
    struct buf sample = BUF_INIT;
    buf_append_sanitized(&sample, ahead, n < 100 ? n : 100, 100);
    struct logrec lr;
    if (log_begin(&lr, LOG_WARN, "pipelining-violation", &s->logctx)) {
        log_str(&lr, "command", line);
        log_str(&lr, "unexpected_input", buf_cstr(&sample));
        log_end(&lr);
    }
    buf_release(&sample);
    edge_reply(s, "554 5.5.0 Error: SMTP protocol synchronization");
    edge_session_close(s, "pipelining violation");
}

static void dispatch(struct edge_session *s, char *line)
{
    const char *args;
    enum smtp_verb v = smtp_verb_parse(line, &args);
    s->commands++;
    if (v != VERB_QUIT && must_be_last(s, v)
        && evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
        sync_violation(s, line);
        return;
    }
    switch (v) {
    case VERB_EHLO: edge_cmd_helo(s, args, true); break;
    case VERB_HELO: edge_cmd_helo(s, args, false); break;
    case VERB_MAIL: edge_cmd_mail(s, args); break;
    case VERB_RCPT: edge_cmd_rcpt(s, args); break;
    case VERB_DATA: edge_cmd_data(s, args); break;
    case VERB_BDAT: edge_cmd_bdat(s, args); break;
    case VERB_RSET: edge_cmd_rset(s, args); break;
    case VERB_NOOP: edge_cmd_noop(s, args); break;
    case VERB_QUIT: edge_cmd_quit(s, args); break;
    case VERB_VRFY: edge_cmd_vrfy(s, args); break;
    case VERB_EXPN: edge_cmd_expn(s, args); break;
    case VERB_HELP: edge_cmd_help(s, args); break;
    case VERB_STARTTLS: edge_cmd_starttls(s, args); break;
    case VERB_AUTH: edge_cmd_auth(s, args); break;
    case VERB_UNKNOWN:
        if (non_smtp_word(line)) {
            struct buf sample = BUF_INIT;
            buf_append_sanitized(&sample, line, strlen(line), 100);
            log_msg(LOG_WARN, "non-smtp-command", &s->logctx, "%s", buf_cstr(&sample));
            buf_release(&sample);
            edge_reply(s, "554 5.7.0 Error: non-SMTP command");
            edge_session_close(s, "non-SMTP command");
        } else {
            edge_reply_error(s, "502 5.5.2 Error: command not recognized");
        }
        break;
    }
}

/*
 * Reads one command line (CR LF, or a bare LF under the normalize policy) and handles it.
 * Returns false when no complete line is buffered.
 */
static bool read_command(struct edge_session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    size_t limit = s->state == ST_AUTH ? AUTH_LINE_MAX : (size_t)conf.edge_max_command_line;
    struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
    if (eol.pos < 0) {
        size_t have = evbuffer_get_length(in);
        if (have > limit) {
            /* Drop what we have; the rest of the line goes when its LF arrives. */
            evbuffer_drain(in, have);
            if (!s->discard_line) {
                s->discard_line = true;
                edge_reply_error(s, "500 5.5.2 Error: line too long");
            }
        }
        return false;
    }
    size_t len = (size_t)eol.pos;          /* bytes before the LF */
    if (s->discard_line) {
        evbuffer_drain(in, len + 1);
        s->discard_line = false;
        return true;
    }
    if (len + 1 > limit) {
        evbuffer_drain(in, len + 1);
        edge_reply_error(s, "500 5.5.2 Error: line too long");
        return true;
    }
    char *line = xmalloc(len + 1);
    evbuffer_remove(in, line, len);
    evbuffer_drain(in, 1);
    bool bare_lf = len == 0 || line[len - 1] != '\r';
    if (!bare_lf)
        len--;
    line[len] = '\0';
    if (bare_lf && conf.edge_bare_newline == BARE_NEWLINE_REJECT) {
        edge_reply_error(s, "500 5.5.2 Error: bare <LF> received");
    } else if (memchr(line, '\0', len) != NULL || memchr(line, '\r', len) != NULL) {
        edge_reply_error(s, "500 5.5.2 Error: bad character in command");
    } else if (s->state == ST_AUTH) {
        edge_auth_line(s, line);
    } else {
        dispatch(s, line);
    }
    explicit_bzero(line, len);      /* may be an AUTH secret */
    free(line);
    return true;
}

/* Handles buffered input until it runs out or the session has to wait. */
void edge_session_resume(struct edge_session *s)
{
    while (!s->dead && !s->waiting && !s->paused) {
        if (s->srv->stopping && (s->state == ST_CMD || s->state == ST_AUTH)) {
            edge_reply(s, "421 4.3.2 %s Service shutting down", s->srv->hostname);
            edge_session_close(s, "shutdown");
            break;
        }
        bool more;
        switch (s->state) {
        case ST_CMD:
        case ST_AUTH:
            more = read_command(s);
            break;
        case ST_DATA:
        case ST_BDAT:
            more = edge_content_input(s);
            break;
        default:
            more = false;
            break;
        }
        if (!more || s->dead || s->state == ST_CLOSING)
            break;
        if (evbuffer_get_length(bufferevent_get_output(s->bev)) > OUTPUT_HIGH_WATER) {
            /* The client is not reading our replies: stop reading its commands until it does. */
            bufferevent_disable(s->bev, EV_READ);
            break;
        }
    }
}

/* ---- libevent callbacks ---- */

/* At most this much message content is taken from the socket per loop turn, beyond libevent's read. */
#define CONTENT_READ_MAX (256 * 1024)

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct edge_session *s = arg;
    /* Only content that is consumed now: a session waiting on a check reads no further ahead. */
    if ((s->state == ST_DATA || s->state == ST_BDAT) && !s->waiting && !s->paused)
        bev_io_read(bev, CONTENT_READ_MAX);
    if (s->state == ST_GREET) {
        /* The client talked before our greeting: a spambot's shortcut (RFC 5321 §4.3.1). */
        if (s->screen != NULL)
            edge_screen_input(s);
        else
            sync_violation(s, "(before greeting)");
        return;
    }
    edge_session_resume(s);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct edge_session *s = arg;
    if (s->state == ST_CLOSING) {
        kill_when_flushed(s);
        return;
    }
    if (!s->dead && !(bufferevent_get_enabled(bev) & EV_READ)) {
        bufferevent_enable(bev, EV_READ);
        edge_session_resume(s);
    }
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct edge_session *s = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;     /* the TLS layer handles its own; see edge_tls.c */
    if (what & BEV_EVENT_TIMEOUT) {
        if (s->state != ST_CLOSING) {
            edge_reply(s, "421 4.4.2 %s Error: timeout exceeded", s->srv->hostname);
            edge_session_close(s, "timeout");
            if (!s->dead) {
                /* Give the 421 one more idle period at most. */
                bufferevent_enable(s->bev, EV_WRITE);
                return;
            }
        }
        session_kill(s);
        return;
    }
    const char *why = (what & BEV_EVENT_EOF) ? "client closed" : "connection error";
    if (s->state != ST_CLOSING)
        log_close(s, why);
    if (s->tx != NULL && s->tx->content_started && s->state != ST_CLOSING)
        log_msg(LOG_INFO, "lost-in-data", &s->logctx, "client went away during message content");
    session_kill(s);
}

void edge_install_callbacks(struct edge_session *s)
{
    bufferevent_setcb(s->bev, read_cb, write_cb, event_cb, s);
    struct timeval idle = { conf.edge_idle_timeout / 1000, (conf.edge_idle_timeout % 1000) * 1000 };
    bufferevent_set_timeouts(s->bev, &idle, &idle);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

void edge_session_greet(struct edge_session *s)
{
    if (!edge_milter_connect(s))
        edge_session_greet_now(s);
}

void edge_session_greet_now(struct edge_session *s)
{
    s->state = ST_CMD;
    edge_reply(s, "220 %s %s", s->srv->hostname, conf.edge_banner);
    /* Input that raced the greeting is handled as commands. */
    edge_session_resume(s);
}

/* The session timer gets its real callback (evtimer_assign) before each use. */
static void timer_unset_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

struct edge_session *edge_session_new(struct edge_server *srv, struct edge_listener *lst,
                                      struct bufferevent *bev, const struct sockaddr *sa)
{
    struct edge_session *s = xcalloc(1, sizeof *s);
    s->srv = srv;
    s->lst = lst;
    s->bev = bev;
    s->state = ST_GREET;
    s->connected_ms = clock_wall_ms();
    s->reaper = event_new(srv->base, -1, 0, reaper_cb, s);
    s->timer = evtimer_new(srv->base, timer_unset_cb, s);
    queue_id_new(s->id);
    memcpy(&s->peer, sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                    : sizeof(struct sockaddr_in));
    netaddr_ip_string(sa, s->ip, sizeof s->ip);
    s->logctx.session = s->id;
    s->logctx.client = s->ip;
    s->trusted = cidr_list_match(&srv->trusted, sa);
    return s;
}

/* Called once the connection is usable (for implicit TLS: after the handshake). */
void edge_session_start(struct edge_session *s)
{
    edge_install_callbacks(s);
    if (s->lst->kind == LISTENER_MX && edge_screen_start(s))
        return;     /* edge_screen.c greets the client, or refuses it */
    edge_session_greet(s);
}
