/*
 * relay_smtp.c - outbound SMTP client, the session half: one connection to one destination host
 * (connect, greeting, EHLO/HELO, STARTTLS, reuse, idle, QUIT), carrying one transaction at a time
 * (relay_smtp_tx.c) (RFC 5321; PIPELINING RFC 2920, STARTTLS RFC 3207, enhanced status codes
 * RFC 3463).
 *
 * Owns: the socket (and TLS layer), copies of the configuration and addresses, the results of the
 * job in hand. Borrows: the job (until its done callback), the TLS context, the log context.
 *
 * Every command waits for its reply in order: a queue of expected replies is filled as commands
 * are written (MAIL, all RCPTs and DATA in one write under PIPELINING) and each reply takes the
 * head. Bytes arriving while the queue is empty were never asked for: a protocol error (4.5.0),
 * the connection is dropped. Replies are parsed strictly (codes, separators, 512-byte lines, a
 * bounded number of lines and bytes) by smtp_reply_feed() in relay_smtp_reply.c. Each wait is
 * bounded by its RFC 5321 §4.5.3.2 timeout.
 *
 * Failures: a reply to the greeting, EHLO/HELO or STARTTLS that refuses the session decides every
 * recipient by its class; 421, timeouts, refused and lost connections defer everything not yet
 * decided. Local reasons: TLS required but not offered (4.7.4) or failed (4.7.5). Callbacks run
 * from a deferred event only.
 */
#include "relay_smtp_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#include "mem.h"
#include "tls.h"

void relay_smtp_timeouts_default(struct relay_smtp_timeouts *t)
{
    *t = (struct relay_smtp_timeouts){
        .connect_ms = 30000, .greeting_ms = 300000, .helo_ms = 300000, .starttls_ms = 300000,
        .mail_ms = 300000, .rcpt_ms = 300000, .data_init_ms = 120000, .data_block_ms = 180000,
        .data_done_ms = 600000, .rset_ms = 300000, .quit_ms = 300000,
    };
}

/* ---- verdicts and results ---- */

void relay_smtp_verdict_local(struct verdict *v, enum relay_smtp_outcome o, const char *status, enum relay_phase ph,
                              const char *fmt, ...)
{
    v->outcome = o;
    v->code = 0;
    snprintf(v->status, sizeof v->status, "%s", status);
    v->phase = ph;
    buf_init(&v->text);
    struct buf raw = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&raw, fmt, ap);
    va_end(ap);
    buf_append_sanitized(&v->text, raw.data, raw.len, SMTP_REPLY_TEXT_MAX);
    buf_release(&raw);
}

/* The verdict of the reply just parsed; the outcome follows the reply's class. */
void relay_smtp_verdict_reply(struct relay_smtp *c, struct verdict *v, enum relay_phase ph)
{
    int cls = c->reply.code / 100;
    v->outcome = cls == 2 ? RELAY_SMTP_DELIVERED : cls == 5 ? RELAY_SMTP_FAILED : RELAY_SMTP_DEFERRED;
    v->code = c->reply.code;
    v->phase = ph;
    buf_init(&v->text);
    smtp_reply_status(&c->reply, v->status, &v->text);
}

void relay_smtp_apply(struct relay_smtp *c, size_t i, const struct verdict *v)
{
    struct relay_smtp_result *r = &c->res[i];
    r->outcome = v->outcome;
    r->code = v->code;
    memcpy(r->status, v->status, sizeof r->status);
    free((char *)r->text);
    r->text = xstrdup(buf_cstr(&v->text));
    r->mx_host = c->mx_host;
    r->phase = v->phase;
    c->rs[i].final = true;
}

/* Every recipient not decided yet gets v; the job is then complete. */
void relay_smtp_finish_rest(struct relay_smtp *c, struct verdict *v)
{
    if (c->job != NULL && !c->job_finished) {
        for (size_t i = 0; i < c->job->nrcpts; i++)
            if (!c->rs[i].final)
                relay_smtp_apply(c, i, v);
        c->job_finished = true;
        event_active(c->notify, EV_TIMEOUT, 1);
    }
    buf_release(&v->text);
}

/* ---- connection plumbing ---- */

static void read_cb(struct bufferevent *bev, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);
static void connect_next(struct relay_smtp *c);

static unsigned expect_timeout(const struct relay_smtp *c, enum expect_kind k)
{
    switch (k) {
    case EX_GREETING: return c->to.greeting_ms;
    case EX_EHLO: case EX_HELO: return c->to.helo_ms;
    case EX_STARTTLS: return c->to.starttls_ms;
    case EX_MAIL: return c->to.mail_ms;
    case EX_RCPT: return c->to.rcpt_ms;
    case EX_DATA: return c->to.data_init_ms;
    case EX_DOT: return c->to.data_done_ms;
    case EX_RSET: return c->to.rset_ms;
    case EX_QUIT: return c->to.quit_ms;
    }
    return c->to.mail_ms;
}

static enum relay_phase expect_phase(enum expect_kind k)
{
    static const enum relay_phase map[] = {
        [EX_GREETING] = RELAY_PHASE_GREETING, [EX_EHLO] = RELAY_PHASE_EHLO, [EX_HELO] = RELAY_PHASE_HELO,
        [EX_STARTTLS] = RELAY_PHASE_STARTTLS, [EX_MAIL] = RELAY_PHASE_MAIL, [EX_RCPT] = RELAY_PHASE_RCPT,
        [EX_DATA] = RELAY_PHASE_DATA, [EX_DOT] = RELAY_PHASE_BODY, [EX_RSET] = RELAY_PHASE_RSET,
        [EX_QUIT] = RELAY_PHASE_QUIT,
    };
    return map[k];
}

void relay_smtp_arm(struct relay_smtp *c, unsigned ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(c->timer, &tv);
}

/* Restarts the timer for whatever the connection waits for now. */
void relay_smtp_rearm(struct relay_smtp *c)
{
    if (c->exp_n > 0)
        relay_smtp_arm(c, expect_timeout(c, c->exp[c->exp_head].kind));
    else if (c->state == CS_BODY)
        relay_smtp_arm(c, c->to.data_block_ms);
    else if (c->state == CS_READY)
        relay_smtp_arm(c, c->idle_ms);
    else
        evtimer_del(c->timer);
}

void relay_smtp_expect_push(struct relay_smtp *c, enum expect_kind k, size_t rcpt)
{
    if (c->exp_n == c->exp_cap) {   /* grow, unrolling the ring */
        size_t cap = c->exp_cap ? c->exp_cap * 2 : 8;
        struct expect *e = xmalloc(cap * sizeof *e);
        for (size_t i = 0; i < c->exp_n; i++)
            e[i] = c->exp[(c->exp_head + i) % c->exp_cap];
        free(c->exp);
        c->exp = e;
        c->exp_cap = cap;
        c->exp_head = 0;
    }
    c->exp[(c->exp_head + c->exp_n) % c->exp_cap] = (struct expect){ k, rcpt };
    if (c->exp_n++ == 0)
        relay_smtp_arm(c, expect_timeout(c, k));
}

void relay_smtp_send_cmd(struct relay_smtp *c, enum expect_kind k, size_t rcpt, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_reset(&c->scratch);
    buf_vprintf(&c->scratch, fmt, ap);
    va_end(ap);
    buf_append(&c->scratch, "\r\n", 2);
    relay_smtp_expect_push(c, k, rcpt);
    bev_io_write(c->bev, c->scratch.data, c->scratch.len);
}

/* What the connection was doing, for "lost connection ... while ..." texts. */
static enum relay_phase current_phase(const struct relay_smtp *c)
{
    if (c->exp_n > 0)
        return expect_phase(c->exp[c->exp_head].kind);
    if (c->state == CS_TLS)
        return RELAY_PHASE_TLS;
    if (c->state == CS_CONNECTING)
        return RELAY_PHASE_CONNECT;
    if (c->state == CS_BODY)
        return RELAY_PHASE_BODY;
    return c->last_phase;
}

static const char *doing(const struct relay_smtp *c)
{
    if (c->state == CS_BODY)
        return "sending the message body";
    switch (current_phase(c)) {
    case RELAY_PHASE_GREETING: return "receiving the initial server greeting";
    case RELAY_PHASE_EHLO: return "performing the EHLO handshake";
    case RELAY_PHASE_HELO: return "performing the HELO handshake";
    case RELAY_PHASE_STARTTLS: return "sending STARTTLS";
    case RELAY_PHASE_TLS: return "performing the TLS handshake";
    case RELAY_PHASE_MAIL: return "sending MAIL FROM";
    case RELAY_PHASE_RCPT: return "sending RCPT TO";
    case RELAY_PHASE_DATA: return "sending the DATA command";
    case RELAY_PHASE_BODY: return "waiting for the reply to the end of data";
    case RELAY_PHASE_RSET: return "sending RSET";
    default: return "talking";
    }
}

static void close_socket(struct relay_smtp *c)
{
    if (c->bev != NULL)
        bufferevent_free(c->bev);   /* frees the SSL and closes the socket */
    c->bev = NULL;
    c->ssl = NULL;
    c->exp_n = 0;
    c->exp_head = 0;
    smtp_reply_reset(&c->reply);
    evtimer_del(c->timer);
}

/* The connection is over: no more I/O; the closed callback is owed. */
static void conn_drop(struct relay_smtp *c)
{
    close_socket(c);
    c->state = CS_CLOSED;
    if (c->job != NULL && !c->job_finished) {
        struct verdict v;
        relay_smtp_verdict_local(&v, RELAY_SMTP_DEFERRED, "4.4.2", RELAY_PHASE_QUIT, "connection to %s[%s] closed",
                                 c->mx_host, c->ip);
        relay_smtp_finish_rest(c, &v);
    }
    c->closed_pending = true;
    event_active(c->notify, EV_TIMEOUT, 1);
}

static void start_quit(struct relay_smtp *c)
{
    c->state = CS_QUIT;
    c->exp_n = 0;
    relay_smtp_send_cmd(c, EX_QUIT, 0, "QUIT");
}

/* Ends the session with v for every undecided recipient; QUIT when the session is still sound. */
static void session_fail(struct relay_smtp *c, struct verdict *v, bool quit)
{
    relay_smtp_finish_rest(c, v);
    if (quit && c->bev != NULL && c->state != CS_TLS)
        start_quit(c);
    else
        conn_drop(c);
}

/* A failure before the greeting completed: the next address gets its chance, if any. */
static void addr_failed(struct relay_smtp *c, struct verdict *v)
{
    log_msg(LOG_INFO, "relay-connect-failed", c->logctx, "%s (%s)", buf_cstr(&v->text), c->mx_host);
    if (c->ai + 1 < c->naddrs) {
        buf_release(&v->text);
        close_socket(c);
        c->ai++;
        connect_next(c);
        return;
    }
    session_fail(c, v, false);
}

/* The conversation broke off (a lost connection, a timeout): while the greeting is awaited the next
 * address gets its chance, otherwise everything undecided gets v. */
static void broken_off(struct relay_smtp *c, struct verdict *v)
{
    if (c->exp_n > 0 && c->exp[c->exp_head].kind == EX_GREETING)
        addr_failed(c, v);
    else
        session_fail(c, v, false);
}

void relay_smtp_protocol_error(struct relay_smtp *c, enum relay_phase ph, const char *why, const char *sample, size_t n)
{
    struct logrec lr;
    if (log_begin(&lr, LOG_WARN, "relay-protocol-error", c->logctx)) {
        log_str(&lr, "host", c->mx_host);
        log_str(&lr, "peer", c->peer);
        log_str(&lr, "error", why);
        log_strn(&lr, "sample", sample, n < 100 ? n : 100);
        log_end(&lr);
    }
    if (c->job == NULL || c->job_finished) {
        conn_drop(c);
        return;
    }
    struct verdict v;
    relay_smtp_verdict_local(&v, RELAY_SMTP_DEFERRED, "4.5.0", ph, "protocol error with %s[%s] in reply to %s: %s",
                             c->mx_host, c->ip, relay_phase_name(ph), why);
    session_fail(c, &v, false);
}

static void connect_next(struct relay_smtp *c)
{
    const struct netaddr *a = &c->addrs[c->ai];
    const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
    netaddr_ip_string(sa, c->ip, sizeof c->ip);
    netaddr_string(sa, c->peer, sizeof c->peer);
    c->port = sa->sa_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)sa)->sin6_port)
                                        : ntohs(((const struct sockaddr_in *)sa)->sin_port);
    c->bev = bufferevent_socket_new(c->base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (c->bev == NULL)
        log_panic("bufferevent_socket_new failed");
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    c->state = CS_CONNECTING;
    c->tls_tried = false;
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&a->ss, (int)a->len) == 0) {
        relay_smtp_arm(c, c->to.connect_ms);
        return;
    }
    struct verdict v;
    relay_smtp_verdict_local(&v, RELAY_SMTP_DEFERRED, "4.4.1", RELAY_PHASE_CONNECT, "connect to %s[%s]:%d: %s",
                             c->mx_host, c->ip, c->port, strerror(errno));
    addr_failed(c, &v);
}

/* ---- the session ---- */

static void parse_ehlo(struct relay_smtp *c)
{
    c->pipelining = c->eightbitmime = c->smtputf8 = c->dsn = c->starttls = c->size = false;
    c->size_limit = 0;
    const char *p = buf_cstr(&c->reply.text);
    for (p = strchr(p, '\n'); p != NULL; p = strchr(p, '\n')) {   /* the first line is the name */
        p++;
        size_t n = strcspn(p, " \n");
        if (n == 10 && strncasecmp(p, "PIPELINING", n) == 0)
            c->pipelining = true;
        else if (n == 8 && strncasecmp(p, "8BITMIME", n) == 0)
            c->eightbitmime = true;
        else if (n == 8 && strncasecmp(p, "SMTPUTF8", n) == 0)
            c->smtputf8 = true;
        else if (n == 3 && strncasecmp(p, "DSN", n) == 0)
            c->dsn = true;
        else if (n == 8 && strncasecmp(p, "STARTTLS", n) == 0)
            c->starttls = true;
        else if (n == 4 && strncasecmp(p, "SIZE", n) == 0) {
            c->size = true;
            c->size_limit = p[n] == ' ' ? strtoull(p + n + 1, NULL, 10) : 0;
        }
    }
}

static void start_tls(struct relay_smtp *c)
{
    struct verdict v;
    struct buf err = BUF_INIT;
    SSL *ssl = c->tls_ctx != NULL ? tls_client_ssl_new(c->tls_ctx, c->policy, c->mx_host, &err) : NULL;
    struct bufferevent *f = NULL;
    if (ssl != NULL)
        f = bufferevent_openssl_filter_new(c->base, c->bev, ssl, BUFFEREVENT_SSL_CONNECTING,
                                           BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (f == NULL) {
        if (ssl != NULL)
            SSL_free(ssl);
        relay_smtp_verdict_local(&v, RELAY_SMTP_DEFERRED, "4.7.5", RELAY_PHASE_TLS, "cannot start TLS with %s[%s]: %s",
                                 c->mx_host, c->ip,
                                 c->tls_ctx == NULL ? "no TLS client context" : err.len ? err.data : "filter failed");
        buf_release(&err);
        session_fail(c, &v, false);     /* the server now expects a handshake, not QUIT */
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(f, 1);
    c->bev = f;
    c->ssl = ssl;
    c->state = CS_TLS;
    bufferevent_setcb(f, read_cb, write_cb, event_cb, c);
    bufferevent_enable(f, EV_READ | EV_WRITE);
    relay_smtp_arm(c, c->to.starttls_ms);
}

static void tls_failed(struct relay_smtp *c, const char *why)
{
    struct verdict v;
    relay_smtp_verdict_local(&v, RELAY_SMTP_DEFERRED, "4.7.5", RELAY_PHASE_TLS, "TLS with %s[%s] failed: %s",
                             c->mx_host, c->ip, why);
    log_msg(LOG_WARN, "relay-tls-failed", c->logctx, "%s (policy %s)", buf_cstr(&v.text), tls_policy_name(c->policy));
    if (c->policy == TLS_POLICY_MAY)
        c->tls_fallback = true;
    session_fail(c, &v, false);
}

/* The greeting or EHLO/HELO/STARTTLS exchange is through: go on to TLS or to the transaction. */
static void after_hello(struct relay_smtp *c)
{
    if (c->ssl == NULL && !c->tls_tried && c->policy != TLS_POLICY_NONE && c->starttls) {
        c->tls_tried = true;
        relay_smtp_send_cmd(c, EX_STARTTLS, 0, "STARTTLS");
        return;
    }
    if (c->ssl == NULL && (c->policy == TLS_POLICY_ENCRYPT || c->policy == TLS_POLICY_VERIFY)) {
        struct verdict v;
        relay_smtp_verdict_local(&v, RELAY_SMTP_DEFERRED, "4.7.4", RELAY_PHASE_STARTTLS,
                                 "TLS is required, but was not offered by host %s[%s]", c->mx_host, c->ip);
        session_fail(c, &v, true);
        return;
    }
    c->state = CS_READY;
    if (c->job_waiting)
        relay_smtp_tx_start(c);
    else
        relay_smtp_rearm(c);
}

static void on_hello_reply(struct relay_smtp *c, enum expect_kind k)
{
    int cls = c->reply.code / 100;
    struct verdict v;
    if (k == EX_GREETING && cls != 2) {
        relay_smtp_verdict_reply(c, &v, RELAY_PHASE_GREETING);
        addr_failed(c, &v);
    } else if (k == EX_GREETING) {
        relay_smtp_send_cmd(c, EX_EHLO, 0, "%s %s", c->lmtp ? "LHLO" : "EHLO", c->helo_name);
    } else if (k == EX_EHLO && cls == 2) {
        parse_ehlo(c);
        after_hello(c);
    } else if (k == EX_EHLO && cls == 5 && !c->lmtp) {   /* RFC 5321 §3.2: a server without EHLO */
        relay_smtp_send_cmd(c, EX_HELO, 0, "HELO %s", c->helo_name);
    } else if (k == EX_HELO && cls == 2) {
        c->pipelining = c->eightbitmime = c->smtputf8 = c->dsn = c->starttls = c->size = false;
        after_hello(c);
    } else if (k == EX_STARTTLS && cls == 2) {
        start_tls(c);
    } else if (k == EX_STARTTLS && c->policy == TLS_POLICY_MAY) {
        after_hello(c);     /* opportunistic: carry on in plaintext */
    } else if (k == EX_STARTTLS) {
        char st[16];
        struct buf said = BUF_INIT;
        smtp_reply_status(&c->reply, st, &said);   /* sanitised already: appended as it is */
        relay_smtp_verdict_local(&v, RELAY_SMTP_DEFERRED, "4.7.4", RELAY_PHASE_STARTTLS,
                                 "TLS is required, but host %s[%s] refused STARTTLS: %d %s ", c->mx_host, c->ip,
                                 c->reply.code, st);
        buf_append(&v.text, said.data, said.len);
        buf_release(&said);
        session_fail(c, &v, true);
    } else {
        relay_smtp_verdict_reply(c, &v, expect_phase(k));
        session_fail(c, &v, true);
    }
}

/* A complete reply arrived for the head of the queue. */
static void on_reply(struct relay_smtp *c)
{
    struct expect e = c->exp[c->exp_head];
    c->exp_head = (c->exp_head + 1) % c->exp_cap;
    c->exp_n--;
    c->last_phase = expect_phase(e.kind);
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t extra = evbuffer_get_length(in);
    if (e.kind != EX_QUIT && c->exp_n == 0 && extra > 0) {
        /* more than was asked for (covers plaintext injected behind STARTTLS's 220, RFC 3207 §5) */
        char sample[100];
        size_t n = extra < sizeof sample ? extra : sizeof sample;
        evbuffer_copyout(in, sample, n);
        relay_smtp_protocol_error(c, c->last_phase, "reply that was not asked for", sample, n);
        smtp_reply_reset(&c->reply);
        return;
    }
    relay_smtp_rearm(c);
    struct verdict v;
    if (e.kind == EX_QUIT) {
        conn_drop(c);
    } else if (c->reply.code == 421) {  /* the server is closing: everything open is deferred */
        relay_smtp_verdict_reply(c, &v, expect_phase(e.kind));
        if (e.kind == EX_GREETING)
            addr_failed(c, &v);
        else
            session_fail(c, &v, false);
    } else if (e.kind == EX_RSET) {
        if (c->reply.code / 100 != 2) {
            relay_smtp_verdict_reply(c, &v, RELAY_PHASE_RSET);
            session_fail(c, &v, true);
        } else if (c->quit_wanted) {
            start_quit(c);
        } else {
            c->state = CS_READY;
            if (c->job_waiting)
                relay_smtp_tx_start(c);
            else
                relay_smtp_rearm(c);
        }
    } else if (e.kind <= EX_STARTTLS) {
        on_hello_reply(c, e.kind);
    } else if (c->job != NULL && !c->job_finished) {
        relay_smtp_on_tx_reply(c, e);
    }
    smtp_reply_reset(&c->reply);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct relay_smtp *c = arg;
    (void)bev;
    while (c->bev != NULL && c->state != CS_TLS && c->state != CS_CLOSED) {
        struct evbuffer *in = bufferevent_get_input(c->bev);
        size_t avail = evbuffer_get_length(in);
        char line[SMTP_REPLY_LINE_MAX];
        if (avail == 0)
            return;
        if (c->exp_n == 0) {
            size_t n = avail < sizeof line ? avail : sizeof line;
            evbuffer_copyout(in, line, n);
            relay_smtp_protocol_error(c, current_phase(c), "reply that was not asked for", line, n);
            return;
        }
        size_t n;
        struct buf why = BUF_INIT;
        enum smtp_reply_read r = smtp_reply_read(in, &c->reply, line, &n, &why);
        if (r == SMTP_READ_BAD)
            relay_smtp_protocol_error(c, current_phase(c), buf_cstr(&why), line, n);
        else if (r == SMTP_READ_DONE)
            on_reply(c);
        buf_release(&why);
        if (r == SMTP_READ_BAD || r == SMTP_READ_WAIT)
            return;
    }
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct relay_smtp *c = arg;
    (void)bev;
    if (c->state == CS_BODY)
        relay_smtp_body_fill(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct relay_smtp *c = arg;
    struct verdict v;
    if (c->state == CS_CONNECTING) {
        if (what & BEV_EVENT_CONNECTED) {
            bev_io_nodelay(bufferevent_getfd(c->bev));
            c->state = CS_HELLO;
            relay_smtp_expect_push(c, EX_GREETING, 0);
            bufferevent_enable(c->bev, EV_READ | EV_WRITE);
            return;
        }
        int e = EVUTIL_SOCKET_ERROR();
        relay_smtp_verdict_local(&v, RELAY_SMTP_DEFERRED, "4.4.1", RELAY_PHASE_CONNECT, "connect to %s[%s]:%d: %s",
                                 c->mx_host, c->ip, c->port,
                                 /* libevent reports a connect refused at once without an errno */
                                 e != 0 ? evutil_socket_error_to_string(e) : "Connection refused");
        addr_failed(c, &v);
        return;
    }
    if (c->state == CS_TLS) {
        if (what & BEV_EVENT_CONNECTED) {
            struct buf info = BUF_INIT;
            tls_describe(c->ssl, &info);
            free(c->tls_info);
            c->tls_info = buf_steal(&info);
            log_msg(LOG_INFO, "relay-tls", c->logctx, "%s[%s]: %s", c->mx_host, c->ip, c->tls_info);
            c->state = CS_HELLO;    /* RFC 3207 §4.2: start over, EHLO again */
            relay_smtp_send_cmd(c, EX_EHLO, 0, "%s %s", c->lmtp ? "LHLO" : "EHLO", c->helo_name);
            return;
        }
        struct buf why = BUF_INIT;
        tls_client_failure(c->ssl, bufferevent_get_openssl_error(bev), &why);
        tls_failed(c, buf_cstr(&why));
        buf_release(&why);
        return;
    }
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    if (c->state == CS_QUIT || c->state == CS_READY || c->job == NULL || c->job_finished) {
        conn_drop(c);
        return;
    }
    relay_smtp_verdict_local(&v, RELAY_SMTP_DEFERRED, "4.4.2", current_phase(c), "lost connection with %s[%s] while %s",
                             c->mx_host, c->ip, doing(c));
    broken_off(c, &v);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct relay_smtp *c = arg;
    (void)fd;
    (void)what;
    struct verdict v;
    switch (c->state) {
    case CS_CONNECTING:
        relay_smtp_verdict_local(&v, RELAY_SMTP_DEFERRED, "4.4.1", RELAY_PHASE_CONNECT,
                                 "connect to %s[%s]:%d: Connection timed out", c->mx_host, c->ip, c->port);
        addr_failed(c, &v);
        return;
    case CS_READY:
        start_quit(c);
        return;
    case CS_QUIT:
    case CS_CLOSED:
    case CS_NEW:
        conn_drop(c);
        return;
    case CS_TLS:
        tls_failed(c, "handshake timed out");
        return;
    default:
        break;
    }
    if (c->job == NULL || c->job_finished) {    /* an RSET nobody waits for */
        conn_drop(c);
        return;
    }
    relay_smtp_verdict_local(&v, RELAY_SMTP_DEFERRED, "4.4.2", current_phase(c),
                             "conversation with %s[%s] timed out while %s", c->mx_host, c->ip, doing(c));
    broken_off(c, &v);
}

/* ---- lifecycle ---- */

static void destroy(struct relay_smtp *c)
{
    close_socket(c);
    event_free(c->timer);
    event_free(c->notify);
    if (c->res != NULL)
        for (size_t i = 0; i < c->job->nrcpts; i++)
            free((char *)c->res[i].text);
    free(c->res);
    free(c->rs);
    free(c->exp);
    smtp_reply_release(&c->reply);
    buf_release(&c->scratch);
    free(c->tls_info);
    free(c->addrs);
    free(c->helo_name);
    free(c->mx_host);
    free(c);
}

/* Runs the callbacks owed, outside any relay_smtp_* call. */
static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
    struct relay_smtp *c = arg;
    (void)fd;
    (void)what;
    c->in_cb = true;
    if (c->job != NULL && c->job_finished) {
        const struct relay_smtp_job *job = c->job;
        struct relay_smtp_result *res = c->res;
        struct relay_smtp_report rep = {
            .results = res, .nrcpts = job->nrcpts, .peer = c->peer, .tls = c->ssl != NULL || c->tls_info != NULL,
            .tls_info = c->tls_info, .tls_fallback = c->tls_fallback, .dsn = c->dsn, .reused = c->ntx > 1,
        };
        relay_smtp_done_cb cb = c->done_cb;
        c->job = NULL;
        c->res = NULL;
        free(c->rs);
        c->rs = NULL;
        c->job_finished = false;
        cb(c, &rep, c->done_arg);   /* may send the next job, or free c */
        for (size_t i = 0; i < rep.nrcpts; i++)
            free((char *)res[i].text);
        free(res);
    }
    if (!c->freed && c->closed_pending && c->job == NULL) {
        c->closed_pending = false;
        if (c->closed_cb != NULL)
            c->closed_cb(c, c->closed_arg);
    }
    c->in_cb = false;
    if (c->freed)
        destroy(c);
}

struct relay_smtp *relay_smtp_new(struct event_base *base, const struct relay_smtp_conf *conf,
                                  const struct netaddr *addrs, size_t naddrs, relay_smtp_closed_cb closed, void *arg)
{
    struct relay_smtp *c = xcalloc(1, sizeof *c);
    c->base = base;
    c->helo_name = xstrdup(conf->helo_name != NULL ? conf->helo_name : "localhost");
    c->lmtp = conf->lmtp;
    c->mx_host = xstrdup(conf->mx_host != NULL ? conf->mx_host : "");
    c->policy = conf->tls == TLS_POLICY_MAY && conf->tls_ctx == NULL ? TLS_POLICY_NONE : conf->tls;
    c->tls_ctx = conf->tls_ctx;
    c->to = conf->timeouts;
    c->idle_ms = conf->idle_ms;
    c->logctx = conf->logctx;
    c->addrs = xcalloc(naddrs ? naddrs : 1, sizeof *c->addrs);
    memcpy(c->addrs, addrs, naddrs * sizeof *addrs);
    c->naddrs = naddrs;
    c->closed_cb = closed;
    c->closed_arg = arg;
    c->timer = evtimer_new(base, timer_cb, c);
    c->notify = event_new(base, -1, 0, notify_cb, c);
    if (c->timer == NULL || c->notify == NULL)
        log_panic("event_new failed");
    return c;
}

bool relay_smtp_send(struct relay_smtp *c, const struct relay_smtp_job *job, relay_smtp_done_cb done, void *arg)
{
    if (c->freed || c->job != NULL || job->nrcpts == 0 || c->state == CS_CLOSED || c->state == CS_QUIT
        || (c->state == CS_NEW && c->naddrs == 0))
        return false;
    c->job = job;
    c->done_cb = done;
    c->done_arg = arg;
    c->res = xcalloc(job->nrcpts, sizeof *c->res);
    c->rs = xcalloc(job->nrcpts, sizeof *c->rs);
    c->job_waiting = true;
    c->job_finished = false;
    if (c->state == CS_NEW)
        connect_next(c);
    else if (c->state == CS_READY)
        relay_smtp_tx_start(c);
    /* CS_RSET: the transaction starts with the RSET reply */
    return true;
}

bool relay_smtp_ready(const struct relay_smtp *c)
{
    return !c->freed && c->job == NULL && (c->state == CS_NEW || c->state == CS_READY || c->state == CS_RSET);
}

bool relay_smtp_quit(struct relay_smtp *c)
{
    if (c->freed || c->job != NULL || c->state == CS_CLOSED || c->state == CS_QUIT)
        return false;
    if (c->state == CS_READY)
        start_quit(c);
    else if (c->state == CS_RSET)
        c->quit_wanted = true;
    else
        conn_drop(c);
    return true;
}

void relay_smtp_free(struct relay_smtp *c)
{
    if (c == NULL)
        return;
    if (c->in_cb) {     /* notify_cb releases it when the callback returns */
        close_socket(c);
        c->state = CS_CLOSED;
        c->freed = true;
        return;
    }
    destroy(c);
}

unsigned relay_smtp_transactions(const struct relay_smtp *c)
{
    return c->ntx;
}
