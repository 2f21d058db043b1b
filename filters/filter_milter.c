/*
 * filter_milter.c - a chain of milters for one SMTP session, on libevent (see filter_milter.h for
 * the semantics, which follow Postfix's smtpd_milters).
 *
 * Owns, per session: one non-blocking connection (bufferevent) and one timer per milter, the
 * session's macros, the event in hand (its command packet, a copy of a body chunk), the
 * modifications collected at EOM and the deferred event that calls done. Each milter walks
 * CONNECTING -> NEGOTIATING -> READY, and ends CLOSED (by a decision: accept or reject at
 * CONNECT/HELO) or FAILED (see "Failures" in the header). Nothing blocks: connects are
 * non-blocking, endpoints are numeric, and done always runs from its own event.
 */
#include "filter_milter.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "mem.h"

enum mc_state { MC_CONNECTING, MC_NEGOTIATING, MC_READY, MC_CLOSED, MC_FAILED };

/* One milter's connection. */
struct milter_conn {
    struct milter_session *s;
    const struct milter_conf *conf;
    size_t idx;                     /* position in the chain */
    enum mc_state state;
    struct bufferevent *bev;        /* NULL once closed */
    struct event *timer;            /* connect, negotiation and reply timeouts */
    uint32_t actions, proto;        /* negotiated SMFIF_* and SMFIP_* */
    char *symlist[MILTER_STAGES];   /* the milter's own macro list per stage, or NULL */
    bool awaiting;                  /* a reply to the event in hand is due */
    bool session_done;              /* no more events this session (accepted, closed or failed) */
    bool msg_done;                  /* no more events this message (accepted or discarded it) */
    bool in_msg;                    /* saw MAIL of the open transaction, and not its EOM */
    bool skip_body;                 /* SMFIR_SKIP: no more body chunks this message */
    size_t body_off;                /* bytes of the event's body sent so far */
    size_t mods_mark;               /* s->mods.n when this milter's EOM began */
    size_t replbody;                /* 1 + index of this milter's MM_REPLBODY in s->mods, 0: none */
};

enum ev { EV_CONNECT, EV_HELO, EV_MAIL, EV_RCPT, EV_DATA, EV_HEADER, EV_EOH, EV_BODY, EV_EOM, EV_UNKNOWN };

/* What each event is on the wire. */
static const struct evdesc {
    const char *name;
    char cmd;
    uint32_t no, nr;        /* the SMFIP_ flags that skip it, that drop its reply */
    int stage;              /* SMFIM_ stage of its macros, -1: none */
    bool msg;               /* belongs to a message (skipped once a milter is done with it) */
    bool content;           /* content_timeout rather than command_timeout */
} evtab[] = {
    [EV_CONNECT] = { "connect", SMFIC_CONNECT, SMFIP_NOCONNECT, SMFIP_NR_CONN, SMFIM_CONNECT, false, false },
    [EV_HELO] = { "helo", SMFIC_HELO, SMFIP_NOHELO, SMFIP_NR_HELO, SMFIM_HELO, false, false },
    [EV_MAIL] = { "mail", SMFIC_MAIL, SMFIP_NOMAIL, SMFIP_NR_MAIL, SMFIM_ENVFROM, true, false },
    [EV_RCPT] = { "rcpt", SMFIC_RCPT, SMFIP_NORCPT, SMFIP_NR_RCPT, SMFIM_ENVRCPT, true, false },
    [EV_DATA] = { "data", SMFIC_DATA, SMFIP_NODATA, SMFIP_NR_DATA, SMFIM_DATA, true, false },
    [EV_HEADER] = { "header", SMFIC_HEADER, SMFIP_NOHDRS, SMFIP_NR_HDR, -1, true, true },
    [EV_EOH] = { "eoh", SMFIC_EOH, SMFIP_NOEOH, SMFIP_NR_EOH, SMFIM_EOH, true, true },
    [EV_BODY] = { "body", SMFIC_BODY, SMFIP_NOBODY, SMFIP_NR_BODY, -1, true, true },
    [EV_EOM] = { "eom", SMFIC_BODYEOB, 0, 0, SMFIM_EOM, true, true },
    [EV_UNKNOWN] = { "unknown", SMFIC_UNKNOWN, SMFIP_NOUNKNOWN, SMFIP_NR_UNKN, -1, false, false },
};

/* The command letter of each macro stage, and Postfix's default macro names for it. */
static const char stage_cmd[MILTER_STAGES] = { SMFIC_CONNECT, SMFIC_HELO, SMFIC_MAIL, SMFIC_RCPT, SMFIC_DATA,
                                               SMFIC_BODYEOB, SMFIC_EOH };
static const char *const stage_default[MILTER_STAGES] = {
    [SMFIM_CONNECT] = ("j {daemon_name} {daemon_addr} {daemon_port} v _ {client_addr} {client_name} {client_port} "
                       "{client_ptr}"),
    [SMFIM_HELO] = "s {tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
    [SMFIM_ENVFROM] = "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}",
    [SMFIM_ENVRCPT] = "{rcpt_addr} {rcpt_host} {rcpt_mailer}",
    [SMFIM_DATA] = "i",
    [SMFIM_EOM] = "i",
    [SMFIM_EOH] = "",
};

#define REPLY_REJECT "550 5.7.1 Command rejected"
#define REPLY_TEMPFAIL "451 4.7.1 Service unavailable - try again later"
#define REPLY_FAIL_REJECT "550 5.7.1 Service unavailable"
#define REPLY_SHUTDOWN "421 4.7.0 Server closing connection"

struct milter_session {
    struct event_base *base;
    struct milter_conn *m;
    size_t n;
    const struct log_ctx *log;
    struct milter_macros macros;
    /* the event in hand */
    bool busy;
    enum ev ev;
    size_t cur;                     /* the milter it is at */
    struct buf cmd;                 /* its command packet (not for BODY) */
    struct buf body;                /* BODY: the caller's bytes */
    struct buf pkt;                 /* the reply packet being handled */
    milter_done_fn *done;
    void *arg;
    struct event *done_ev;
    struct milter_verdict v;
    /* decisions that outlive an event */
    struct milter_verdict sticky_session, sticky_msg;   /* action MV_CONTINUE: none */
    struct milter_mods mods;        /* of the current EOM */
};

enum step { STEP_NEXT, STEP_WAIT, STEP_STOP };

static void run_chain(struct milter_session *s);
static void resume(struct milter_session *s, enum step st);

/* ---- macros ---- */

void milter_macro_set(struct milter_session *s, const char *name, const char *value)
{
    milter_macros_set(&s->macros, name, value);
}

/* Sets name to the address inside angle brackets, and host to its domain. */
static void macro_addr(struct milter_session *s, const char *name, const char *host, const char *addr)
{
    size_t n = strlen(addr);
    if (n >= 2 && addr[0] == '<' && addr[n - 1] == '>')
        addr++, n -= 2;
    char *a = xstrndup(addr, n);
    const char *at = strrchr(a, '@');
    milter_macros_set(&s->macros, name, a);
    milter_macros_set(&s->macros, host, at != NULL ? at + 1 : NULL);
    free(a);
}

/* ---- connections ---- */

static long long timeout_of(const struct milter_conn *m, bool content)
{
    long long t = content ? m->conf->content_timeout : m->conf->command_timeout;
    if (t <= 0)
        t = content ? MILTER_CONTENT_TIMEOUT_DEFAULT : MILTER_COMMAND_TIMEOUT_DEFAULT;
    return t;
}

static void arm(struct milter_conn *m, long long ms)
{
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };
    evtimer_add(m->timer, &tv);
}

/* The reply m was due has come. */
static void replied(struct milter_conn *m)
{
    m->awaiting = false;
    evtimer_del(m->timer);
}

static void send_buf(struct milter_conn *m, const struct buf *b)
{
    if (b->len > 0)
        bufferevent_write(m->bev, b->data, b->len);
}

/* Closes m's connection: QUIT first when asked and nothing else is queued. The fd is closed by
 * libevent's finalizer on the next loop turn. */
static void close_conn(struct milter_conn *m, bool quit)
{
    evtimer_del(m->timer);
    m->awaiting = false;
    if (m->bev == NULL)
        return;
    if (quit && m->state == MC_READY && evbuffer_get_length(bufferevent_get_output(m->bev)) == 0) {
        struct buf q = BUF_INIT;
        milter_enc_cmd(&q, SMFIC_QUIT);
        (void)send(bufferevent_getfd(m->bev), q.data, q.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        buf_release(&q);
    }
    bufferevent_free(m->bev);
    m->bev = NULL;
}

static void set_verdict(struct milter_verdict *v, enum milter_verdict_action a, const char *reply, const char *milter)
{
    memset(v, 0, sizeof *v);
    v->action = a;
    v->milter = milter;
    if (reply != NULL) {
        snprintf(v->reply, sizeof v->reply, "%s", reply);
        v->code = atoi(reply);
    }
}

/* Marks m failed: logs why, closes it, applies its on_error; resumes the chain if it waited on m. */
static void fail_conn(struct milter_conn *m, const char *why, const char *sample, size_t samplen)
{
    struct milter_session *s = m->s;
    struct logrec lr;
    if (log_begin(&lr, LOG_WARN, "milter_fail", s->log)) {
        log_str(&lr, "milter", m->conf->name);
        log_str(&lr, "reason", why);
        if (s->busy)
            log_str(&lr, "event", evtab[s->ev].name);
        if (sample != NULL) {
            struct buf b = BUF_INIT;
            buf_append_sanitized(&b, sample, samplen, 64);
            log_str(&lr, "sample", buf_cstr(&b));
            buf_release(&b);
        }
        log_end(&lr);
    }
    close_conn(m, false);
    m->state = MC_FAILED;
    m->session_done = true;
    for (int i = 0; i < MILTER_STAGES; i++) {
        free(m->symlist[i]);
        m->symlist[i] = NULL;
    }
    if (m->conf->on_error != MILTER_ACCEPT && s->sticky_session.action == MV_CONTINUE) {
        bool rej = m->conf->on_error == MILTER_REJECT;
        set_verdict(&s->sticky_session, rej ? MV_REJECT : MV_TEMPFAIL, rej ? REPLY_FAIL_REJECT : REPLY_TEMPFAIL,
                    m->conf->name);
        s->sticky_session.failed = true;
    }
    if (s->busy && s->cur == m->idx) {
        if (s->ev == EV_EOM) {
            milter_mods_truncate(&s->mods, m->mods_mark);
            m->replbody = 0;
        }
        run_chain(s);   /* m is failed now: step_milter() skips it or stops with the sticky verdict */
    }
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct milter_conn *m = arg;
    fail_conn(m, m->state == MC_CONNECTING ? "connect timeout" : "timeout waiting for a reply", NULL, 0);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct milter_conn *m = arg;
    if (what & BEV_EVENT_CONNECTED) {
        struct buf b = BUF_INIT;
        milter_enc_optneg(&b, MILTER_MY_VERSION, MILTER_MY_ACTIONS, MILTER_MY_PROTO);
        send_buf(m, &b);
        buf_release(&b);
        m->state = MC_NEGOTIATING;
        m->awaiting = true;
        arm(m, timeout_of(m, false));
        return;
    }
    char why[128];
    if (what & BEV_EVENT_EOF)
        snprintf(why, sizeof why, "connection closed by the milter");
    else
        snprintf(why, sizeof why, "%s: %s", m->state == MC_CONNECTING ? "connect" : "I/O error",
                 strerror(EVUTIL_SOCKET_ERROR() != 0 ? EVUTIL_SOCKET_ERROR() : EIO));
    fail_conn(m, why, NULL, 0);
}

static void handle_packet(struct milter_conn *m, const unsigned char *pkt, size_t len);

static void on_read(struct bufferevent *bev, void *arg)
{
    struct milter_conn *m = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (m->bev != NULL) {
        unsigned char hdr[4];
        size_t have = evbuffer_get_length(in);
        if (have < 4)
            return;
        evbuffer_copyout(in, hdr, 4);
        uint32_t len = 0;
        enum milter_perr e = milter_frame(hdr, 4, MILTER_PACKET_MAX, &len);
        if (e != MILTER_P_OK && e != MILTER_P_MORE) {
            fail_conn(m, milter_perr_str(e), (const char *)hdr, 4);
            return;
        }
        if (have - 4 < len)
            return;
        struct milter_session *s = m->s;
        buf_reset(&s->pkt);
        buf_reserve(&s->pkt, len);
        evbuffer_drain(in, 4);
        evbuffer_remove(in, s->pkt.data, len);
        s->pkt.len = len;
        if (!m->awaiting) {
            fail_conn(m, "packet while no reply was due", s->pkt.data, len);
            return;
        }
        handle_packet(m, (const unsigned char *)s->pkt.data, len);
    }
}

/* ---- the chain ---- */

/* Whether m still wants events of the current message (msg) or session. */
static bool wants(const struct milter_conn *m, bool msg)
{
    return m->state != MC_FAILED && m->state != MC_CLOSED && !m->session_done && !(msg && m->msg_done);
}

/* Sends the next body chunk(s) of the event to m. */
static enum step body_next(struct milter_conn *m)
{
    struct milter_session *s = m->s;
    while (m->body_off < s->body.len) {
        size_t n = s->body.len - m->body_off;
        if (n > MILTER_CHUNK_SIZE)
            n = MILTER_CHUNK_SIZE;
        struct buf b = BUF_INIT;
        milter_enc_body(&b, SMFIC_BODY, s->body.data + m->body_off, n);
        send_buf(m, &b);
        buf_release(&b);
        m->body_off += n;
        if (!(m->proto & SMFIP_NR_BODY)) {
            m->awaiting = true;
            arm(m, timeout_of(m, true));
            return STEP_WAIT;
        }
    }
    return STEP_NEXT;
}

/* Offers the event in hand to m. */
static enum step step_milter(struct milter_session *s, struct milter_conn *m)
{
    const struct evdesc *d = &evtab[s->ev];
    if (m->state == MC_FAILED && m->conf->on_error != MILTER_ACCEPT) {
        s->v = s->sticky_session;
        return STEP_STOP;
    }
    if (!wants(m, d->msg) || (s->ev == EV_BODY && m->skip_body))
        return STEP_NEXT;
    if (m->state != MC_READY)
        return STEP_WAIT;   /* resumed when the negotiation ends or fails */
    struct buf out = BUF_INIT;
    if (d->stage >= 0)
        milter_enc_stage_macros(&out, stage_cmd[d->stage],
                                m->symlist[d->stage] != NULL ? m->symlist[d->stage] : stage_default[d->stage],
                                &s->macros);
    if (s->ev == EV_MAIL)
        m->in_msg = true;
    if (m->proto & d->no) {
        send_buf(m, &out);
        buf_release(&out);
        return STEP_NEXT;
    }
    if (s->ev == EV_BODY) {
        send_buf(m, &out);
        buf_release(&out);
        m->body_off = 0;
        return body_next(m);
    }
    buf_append(&out, s->cmd.data, s->cmd.len);
    send_buf(m, &out);
    buf_release(&out);
    if (m->proto & d->nr)
        return STEP_NEXT;
    if (s->ev == EV_EOM) {
        m->mods_mark = s->mods.n;
        m->replbody = 0;
    }
    m->awaiting = true;
    arm(m, timeout_of(m, d->content));
    return STEP_WAIT;
}

/* Forgets the message: SMFIC_ABORT to milters that saw its MAIL but not its end. */
static void reset_msg(struct milter_session *s)
{
    struct buf b = BUF_INIT;
    milter_enc_cmd(&b, SMFIC_ABORT);
    for (size_t i = 0; i < s->n; i++) {
        struct milter_conn *m = &s->m[i];
        if (m->in_msg && m->bev != NULL && m->state == MC_READY)
            send_buf(m, &b);
        m->in_msg = m->msg_done = m->skip_body = false;
    }
    buf_release(&b);
    s->sticky_msg.action = MV_CONTINUE;
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct milter_session *s = arg;
    milter_done_fn *done = s->done;
    s->done = NULL;
    done(s, &s->v, s->arg);     /* may free s: nothing after this */
}

/* Ends the event in hand and schedules done. */
static void finish_event(struct milter_session *s)
{
    struct milter_verdict *v = &s->v;
    const struct evdesc *d = &evtab[s->ev];
    if (v->action == MV_CONTINUE) {
        bool any = false;
        for (size_t i = 0; i < s->n && !any; i++)
            any = wants(&s->m[i], d->msg);
        if (!any || s->ev == EV_EOM)
            v->action = MV_ACCEPT;
    }
    if (s->ev == EV_EOM) {
        for (size_t i = 0; i < s->mods.n; i++) {
            if (s->mods.v[i].type == MM_QUARANTINE && v->action == MV_ACCEPT) {
                v->action = MV_QUARANTINE;
                v->quarantine = s->mods.v[i].value;
                v->milter = s->mods.v[i].milter;
            }
        }
        v->mods = s->mods.v;
        v->nmods = s->mods.n;
        reset_msg(s);
        milter_macro_set(s, "i", NULL);
    }
    s->busy = false;
    event_active(s->done_ev, EV_TIMEOUT, 1);
}

static void run_chain(struct milter_session *s)
{
    while (s->cur < s->n) {
        enum step st = step_milter(s, &s->m[s->cur]);
        if (st == STEP_WAIT)
            return;
        if (st == STEP_STOP)
            break;
        s->cur++;
    }
    finish_event(s);
}

/* Continues the event after m (the current milter) decided st. */
static void resume(struct milter_session *s, enum step st)
{
    if (st == STEP_WAIT)
        return;
    if (st == STEP_STOP) {
        finish_event(s);
        return;
    }
    s->cur++;
    run_chain(s);
}

/* ---- replies ---- */

static void handle_optneg(struct milter_conn *m, const struct milter_reply *r, const unsigned char *pkt, size_t len)
{
    struct milter_session *s = m->s;
    uint32_t proto = 0;
    enum milter_perr e = r->cmd == SMFIC_OPTNEG ? milter_negotiate(r, MILTER_MY_ACTIONS, MILTER_MY_PROTO, &proto)
                                                 : MILTER_P_UNKNOWN;
    if (e != MILTER_P_OK) {
        char why[128];
        snprintf(why, sizeof why, "negotiation: %s", r->cmd == SMFIC_OPTNEG ? milter_perr_str(e) : "unexpected reply");
        fail_conn(m, why, (const char *)pkt, len);
        return;
    }
    m->actions = r->actions;
    m->proto = proto;
    for (int i = 0; i < MILTER_STAGES; i++)
        m->symlist[i] = r->symlist[i] != NULL ? xstrdup(r->symlist[i]) : NULL;
    m->state = MC_READY;
    replied(m);
    struct logrec lr;
    if (log_begin(&lr, LOG_DEBUG, "milter_ready", s->log)) {
        log_str(&lr, "milter", m->conf->name);
        log_int(&lr, "version", r->version);
        log_int(&lr, "actions", m->actions);
        log_int(&lr, "proto", m->proto);
        log_end(&lr);
    }
    if (s->busy && s->cur == m->idx)
        run_chain(s);
}

/* m ends the event in hand with a decision. */
static void decide(struct milter_conn *m, enum milter_verdict_action a, const char *reply)
{
    struct milter_session *s = m->s;
    enum ev ev = s->ev;
    set_verdict(&s->v, a, reply, m->conf->name);
    struct logrec lr;
    if (log_begin(&lr, LOG_INFO, "milter_verdict", s->log)) {
        log_str(&lr, "milter", m->conf->name);
        log_str(&lr, "event", evtab[ev].name);
        log_int(&lr, "action", a);
        log_str(&lr, "reply", s->v.reply);
        log_end(&lr);
    }
    if (a == MV_SHUTDOWN || ev == EV_CONNECT || ev == EV_HELO) {
        if (s->sticky_session.action == MV_CONTINUE)
            s->sticky_session = s->v;
        close_conn(m, true);
        m->state = MC_CLOSED;
        m->session_done = true;
    } else if (ev != EV_RCPT && ev != EV_UNKNOWN) {
        s->sticky_msg = s->v;
        m->msg_done = a == MV_DISCARD;
    }
    if (ev == EV_EOM)
        m->in_msg = false;
    resume(s, STEP_STOP);
}

static void handle_packet(struct milter_conn *m, const unsigned char *pkt, size_t len)
{
    struct milter_session *s = m->s;
    struct milter_reply r;
    char why[128];
    enum milter_perr e = milter_decode(pkt, len, &r);
    if (e != MILTER_P_OK) {
        snprintf(why, sizeof why, "reply 0x%02x: %s", (unsigned)pkt[0], milter_perr_str(e));
        fail_conn(m, why, (const char *)pkt, len);
        return;
    }
    if (m->state == MC_NEGOTIATING) {
        handle_optneg(m, &r, pkt, len);
        return;
    }
    enum ev ev = s->ev;
    bool conn_stage = ev == EV_CONNECT || ev == EV_HELO;
    enum milter_mod_type type;
    uint32_t need;
    switch (r.cmd) {
    case SMFIR_PROGRESS:
        arm(m, timeout_of(m, evtab[ev].content));
        return;
    case SMFIR_CONTINUE:
        replied(m);
        if (ev == EV_EOM)
            m->in_msg = false;
        resume(s, ev == EV_BODY ? body_next(m) : STEP_NEXT);
        return;
    case SMFIR_ACCEPT:
        replied(m);
        if (conn_stage) {
            close_conn(m, true);
            m->state = MC_CLOSED;
            m->session_done = true;
        } else {
            m->msg_done = true;
            if (ev == EV_EOM)
                m->in_msg = false;
        }
        resume(s, STEP_NEXT);
        return;
    case SMFIR_SKIP:
        if (ev != EV_BODY)
            break;
        replied(m);
        m->skip_body = true;
        resume(s, STEP_NEXT);
        return;
    case SMFIR_DISCARD:
        if (conn_stage || ev == EV_UNKNOWN)
            break;
        decide(m, MV_DISCARD, NULL);
        return;
    case SMFIR_REJECT:
        decide(m, MV_REJECT, REPLY_REJECT);
        return;
    case SMFIR_TEMPFAIL:
        decide(m, MV_TEMPFAIL, REPLY_TEMPFAIL);
        return;
    case SMFIR_REPLYCODE:
        decide(m, MV_REPLYCODE, r.reply);
        return;
    case SMFIR_SHUTDOWN:
    case SMFIR_CONN_FAIL:
        decide(m, MV_SHUTDOWN, REPLY_SHUTDOWN);
        return;
    default:
        need = milter_mod_action(r.cmd, &type);
        if (ev != EV_EOM || need == 0 || (m->actions & need) == 0)
            break;
        if (!milter_mods_add(&s->mods, &r, m->conf->name, &m->replbody))
            fail_conn(m, "replaced body over its bound", NULL, 0);
        return;
    }
    snprintf(why, sizeof why, "unexpected reply 0x%02x to %s", (unsigned)pkt[0], evtab[ev].name);
    fail_conn(m, why, (const char *)pkt, len);
}

/* ---- the session ---- */

struct milter_session *milter_session_new(struct event_base *base, const struct milter_conf *confs, size_t n,
                                          const struct milter_info *info)
{
    static const struct milter_info none;
    if (info == NULL)
        info = &none;
    struct milter_session *s = xcalloc(1, sizeof *s);
    s->base = base;
    s->n = n;
    s->m = xcalloc(n ? n : 1, sizeof *s->m);
    s->log = info->log;
    s->done_ev = event_new(base, -1, 0, done_cb, s);
    milter_macro_set(s, "j", info->myhostname);
    milter_macro_set(s, "{daemon_name}", info->daemon_name);
    milter_macro_set(s, "{daemon_addr}", info->daemon_addr);
    milter_macro_set(s, "{daemon_port}", info->daemon_port);
    milter_macro_set(s, "v", info->version != NULL ? info->version : "mxgate");
    for (size_t i = 0; i < n; i++) {
        struct milter_conn *m = &s->m[i];
        m->s = s;
        m->conf = &confs[i];
        m->idx = i;
        m->state = MC_CONNECTING;
        m->timer = evtimer_new(base, on_timeout, m);
        struct sockaddr_storage ss;
        socklen_t len;
        const char *why;
        if (!milter_endpoint(m->conf->socket, &ss, &len, &why)) {
            fail_conn(m, why, NULL, 0);
            continue;
        }
        m->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
        bufferevent_setcb(m->bev, on_read, NULL, on_event, m);
        bufferevent_enable(m->bev, EV_READ | EV_WRITE);
        if (bufferevent_socket_connect(m->bev, (struct sockaddr *)&ss, (int)len) != 0) {
            char msg[128];
            snprintf(msg, sizeof msg, "connect: %s", strerror(errno));
            fail_conn(m, msg, NULL, 0);
            continue;
        }
        long long t = m->conf->connect_timeout > 0 ? m->conf->connect_timeout : MILTER_CONNECT_TIMEOUT_DEFAULT;
        arm(m, t);
    }
    return s;
}

void milter_free(struct milter_session *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        struct milter_conn *m = &s->m[i];
        close_conn(m, true);
        event_free(m->timer);
        for (int k = 0; k < MILTER_STAGES; k++)
            free(m->symlist[k]);
    }
    event_free(s->done_ev);
    milter_macros_release(&s->macros);
    milter_mods_release(&s->mods);
    buf_release(&s->cmd);
    buf_release(&s->body);
    buf_release(&s->pkt);
    free(s->m);
    free(s);
}

size_t milter_session_connected(const struct milter_session *s)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++)
        k += s->m[i].bev != NULL;
    return k;
}

/* Takes the event in hand; a second one while one is pending is a caller bug. */
static void begin(struct milter_session *s, enum ev ev, milter_done_fn *done, void *arg)
{
    if (s->busy)
        log_panic("milter: %s event while the %s event is pending", evtab[ev].name, evtab[s->ev].name);
    s->busy = true;
    s->ev = ev;
    s->cur = 0;
    s->done = done;
    s->arg = arg;
    set_verdict(&s->v, MV_CONTINUE, NULL, NULL);
    milter_mods_truncate(&s->mods, 0);
    buf_reset(&s->cmd);
}

/* Runs the event in hand, unless an earlier decision already answers it. */
static void start(struct milter_session *s)
{
    if (s->sticky_session.action != MV_CONTINUE) {
        s->v = s->sticky_session;
        finish_event(s);
    } else if (evtab[s->ev].msg && s->ev != EV_MAIL && s->sticky_msg.action != MV_CONTINUE) {
        s->v = s->sticky_msg;
        finish_event(s);
    } else {
        run_chain(s);
    }
}

void milter_connect(struct milter_session *s, const char *hostname, const struct sockaddr *client,
                    milter_done_fn *done, void *arg)
{
    begin(s, EV_CONNECT, done, arg);
    char addr[110], name[400];
    unsigned port;
    char family = milter_addr(client, addr, sizeof addr, &port);
    bool inet = family == SMFIA_INET || family == SMFIA_INET6;
    if (inet) {
        char text[400];
        snprintf(text, sizeof text, "%u", port);
        milter_macro_set(s, "{client_port}", text);
        milter_macro_set(s, "{client_addr}", addr);
        snprintf(text, sizeof text, "%s [%s]", hostname != NULL ? hostname : "unknown", addr);
        milter_macro_set(s, "_", text);
    }
    milter_macro_set(s, "{client_name}", hostname != NULL ? hostname : "unknown");
    /* the hostname field: the verified name, else "[addr]" as Sendmail and Postfix write it */
    if (hostname != NULL || !inet)
        snprintf(name, sizeof name, "%s", hostname != NULL ? hostname : "unknown");
    else
        snprintf(name, sizeof name, "[%s]", addr);
    milter_enc_connect(&s->cmd, name, client);
    start(s);
}

void milter_helo(struct milter_session *s, const char *helo, milter_done_fn *done, void *arg)
{
    begin(s, EV_HELO, done, arg);
    milter_macro_set(s, "s", helo);
    milter_enc_helo(&s->cmd, helo);
    start(s);
}

void milter_mail(struct milter_session *s, const char *sender, const char *const *args, size_t nargs,
                 milter_done_fn *done, void *arg)
{
    begin(s, EV_MAIL, done, arg);
    reset_msg(s);
    macro_addr(s, "{mail_addr}", "{mail_host}", sender);
    milter_macro_set(s, "{rcpt_addr}", NULL);
    milter_macro_set(s, "{rcpt_host}", NULL);
    milter_enc_envelope(&s->cmd, SMFIC_MAIL, sender, args, nargs);
    start(s);
}

void milter_rcpt(struct milter_session *s, const char *rcpt, const char *const *args, size_t nargs,
                 milter_done_fn *done, void *arg)
{
    begin(s, EV_RCPT, done, arg);
    macro_addr(s, "{rcpt_addr}", "{rcpt_host}", rcpt);
    milter_enc_envelope(&s->cmd, SMFIC_RCPT, rcpt, args, nargs);
    start(s);
}

void milter_data(struct milter_session *s, milter_done_fn *done, void *arg)
{
    begin(s, EV_DATA, done, arg);
    milter_enc_cmd(&s->cmd, SMFIC_DATA);
    start(s);
}

void milter_header(struct milter_session *s, const char *name, const char *value, milter_done_fn *done, void *arg)
{
    begin(s, EV_HEADER, done, arg);
    milter_enc_header(&s->cmd, name, value);
    start(s);
}

void milter_eoh(struct milter_session *s, milter_done_fn *done, void *arg)
{
    begin(s, EV_EOH, done, arg);
    milter_enc_cmd(&s->cmd, SMFIC_EOH);
    start(s);
}

void milter_body(struct milter_session *s, const void *chunk, size_t len, milter_done_fn *done, void *arg)
{
    begin(s, EV_BODY, done, arg);
    buf_reset(&s->body);
    buf_append(&s->body, chunk, len);
    start(s);
}

void milter_eom(struct milter_session *s, const char *queue_id, milter_done_fn *done, void *arg)
{
    begin(s, EV_EOM, done, arg);
    if (queue_id != NULL)
        milter_macro_set(s, "i", queue_id);
    milter_enc_body(&s->cmd, SMFIC_BODYEOB, "", 0);
    start(s);
}

void milter_unknown(struct milter_session *s, const char *line, milter_done_fn *done, void *arg)
{
    begin(s, EV_UNKNOWN, done, arg);
    milter_enc_unknown(&s->cmd, line);
    start(s);
}

void milter_abort(struct milter_session *s)
{
    if (s->busy)
        log_panic("milter: abort while the %s event is pending", evtab[s->ev].name);
    reset_msg(s);
    milter_macro_set(s, "i", NULL);
}
