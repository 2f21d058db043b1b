/*
 * edge_milter.c - the edge as a milter client: the chain of milter.mx (MX listeners) or
 * milter.submission (submission, smtps) consulted at each stage of the session, through
 * filters/filter_milter.c (protocol 6, Postfix's chain semantics).
 *
 * Stages: CONNECT before the greeting (a refusal is the greeting: 554, or 421 for a temporary
 * one, then the session ends); HELO before its reply; MAIL and each RCPT before theirs; DATA,
 * every header, the end of headers, the body and the end of message once the content is complete
 * (and after our own Authentication-Results), before the message is queued. RSET aborts the
 * milters' transaction. Each stage is asynchronous; the session waits for it holding a busy
 * reference, as for Redis.
 *
 * Verdicts: a refusal answers the command with the milter's reply; DISCARD answers the end of
 * data with 250 and drops the message; QUARANTINE queues it into the quarantine/<reason>
 * repository instead of delivering it; SHUTDOWN answers 421 and closes. A milter that fails is
 * the chain's business (its on_error, from milter.default_action). Modifications asked for at
 * the end of message are applied by edge_milter_mods.c.
 */
#include "edge.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf.h"
#include "filter_milter.h"
#include "mem.h"

/* The configured chains, made once per server. */
struct edge_milters {
    struct milter_conf *mx, *sub;
    size_t nmx, nsub;
};

static struct milter_conf *confs_new(const struct strlist *l)
{
    struct milter_conf *v = xcalloc(l->n + 1, sizeof *v);
    for (size_t i = 0; i < l->n; i++) {
        v[i].name = l->v[i];
        v[i].socket = l->v[i];
        v[i].connect_timeout = conf.milter_connect_timeout;
        v[i].command_timeout = conf.milter_command_timeout;
        v[i].content_timeout = conf.milter_content_timeout;
        v[i].on_error = (enum milter_default)conf.milter_default_action;
    }
    return v;
}

bool edge_milters_check(const struct strlist *l, struct buf *err)
{
    struct milter_conf *v = confs_new(l);
    bool ok = true;
    for (size_t i = 0; i < l->n; i++)
        if (!milter_conf_check(&v[i], err)) {
            buf_putc(err, '\n');
            ok = false;
        }
    free(v);
    return ok;
}

bool edge_milters_init(struct edge_server *srv, struct buf *err)
{
    if (!edge_milters_check(&conf.milter_mx, err) || !edge_milters_check(&conf.milter_submission, err))
        return false;
    struct edge_milters *m = xcalloc(1, sizeof *m);
    m->mx = confs_new(&conf.milter_mx);
    m->nmx = conf.milter_mx.n;
    m->sub = confs_new(&conf.milter_submission);
    m->nsub = conf.milter_submission.n;
    srv->milters = m;
    return true;
}

void edge_milters_fini(struct edge_server *srv)
{
    if (srv->milters == NULL)
        return;
    free(srv->milters->mx);
    free(srv->milters->sub);
    free(srv->milters);
    srv->milters = NULL;
}

/* ---- the common shape of a stage ---- */

static bool refuses(const struct milter_verdict *v)
{
    return v->action == MV_REJECT || v->action == MV_TEMPFAIL || v->action == MV_REPLYCODE
           || v->action == MV_SHUTDOWN;
}

static void log_verdict(struct edge_session *s, const char *stage, const struct milter_verdict *v)
{
    struct logrec lr;
    if (log_begin(&lr, LOG_INFO, "milter", &s->logctx)) {
        log_str(&lr, "stage", stage);
        log_str(&lr, "milter", v->milter != NULL ? v->milter : "");
        log_str(&lr, "reply", v->reply);
        if (v->failed)
            log_bool(&lr, "failed", true);
        log_end(&lr);
    }
}

/* Answers a command with a refusing verdict; SHUTDOWN also ends the session. */
static void refuse(struct edge_session *s, const char *stage, const struct milter_verdict *v)
{
    log_verdict(s, stage, v);
    if (v->action == MV_SHUTDOWN) {
        edge_reply(s, "%s", v->reply);
        edge_session_close(s, "milter shutdown");
        return;
    }
    edge_reply_error(s, "%s", v->reply);
}

/* ---- connect ---- */

static void connect_done(struct milter_session *ms, const struct milter_verdict *v, void *arg)
{
    (void)ms;
    struct edge_session *s = arg;
    if (!edge_session_release(s))
        return;
    if (refuses(v)) {
        /* A greeting can only say 220, 554 or (closing) 421. */
        log_verdict(s, "connect", v);
        const char *text = strlen(v->reply) > 4 ? v->reply + 4 : "Service unavailable";
        edge_reply(s, "%s %s", v->code >= 500 ? "554" : "421", text);
        edge_session_close(s, "milter refused the connection");
        return;
    }
    edge_session_greet_now(s);
}

bool edge_milter_connect(struct edge_session *s)
{
    struct edge_milters *m = s->srv->milters;
    bool mx = s->lst->kind == LISTENER_MX;
    size_t n = mx ? m->nmx : m->nsub;
    if (n == 0)
        return false;
    struct milter_info info = {
        .myhostname = s->srv->hostname,
        .daemon_name = edge_listener_kind_name(s->lst->kind),
        .daemon_addr = NULL,
        .daemon_port = NULL,
        .version = "mxgate",
        .log = &s->logctx,
    };
    s->milter = milter_session_new(s->srv->base, mx ? m->mx : m->sub, n, &info);
    edge_session_wait(s);
    milter_connect(s->milter, NULL, (const struct sockaddr *)&s->peer, connect_done, s);
    return true;
}

void edge_milter_free(struct edge_session *s)
{
    milter_free(s->milter);
    s->milter = NULL;
}

/* ---- HELO, MAIL, RCPT ---- */

static void helo_done(struct milter_session *ms, const struct milter_verdict *v, void *arg)
{
    (void)ms;
    struct edge_session *s = arg;
    if (!edge_session_release(s))
        return;
    if (refuses(v))
        refuse(s, "helo", v);
    else
        edge_helo_reply(s);
    edge_session_resume(s);
}

bool edge_milter_helo(struct edge_session *s)
{
    if (s->milter == NULL)
        return false;
    if (s->auth_user != NULL)
        milter_macro_set(s->milter, "{auth_authen}", s->auth_user);
    edge_session_wait(s);
    milter_helo(s->milter, s->helo, helo_done, s);
    return true;
}

static void mail_done(struct milter_session *ms, const struct milter_verdict *v, void *arg)
{
    (void)ms;
    struct edge_session *s = arg;
    if (!edge_session_release(s))
        return;
    if (refuses(v)) {
        edge_session_tx_reset(s);
        refuse(s, "mail", v);
    } else {
        edge_reply(s, "250 2.1.0 Ok");
    }
    edge_session_resume(s);
}

/* "<address>" as the milter protocol writes envelope addresses. */
static char *bracketed(const struct smtp_path *p)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "<%s>", p->null ? "" : p->mailbox);
    return buf_steal(&b);
}

bool edge_milter_mail(struct edge_session *s)
{
    if (s->milter == NULL)
        return false;
    milter_macro_set(s->milter, "{auth_authen}", s->auth_user);
    milter_macro_set(s->milter, "{auth_type}", s->auth_user != NULL ? "PLAIN" : NULL);
    char *sender = bracketed(&s->tx->mail.path);
    edge_session_wait(s);
    milter_mail(s->milter, sender, NULL, 0, mail_done, s);
    free(sender);
    return true;
}

static void rcpt_done(struct milter_session *ms, const struct milter_verdict *v, void *arg)
{
    (void)ms;
    struct edge_session *s = arg;
    if (!edge_session_release(s))
        return;
    if (refuses(v)) {
        smtp_rcpt_clear(&s->pending_rcpt);
        refuse(s, "rcpt", v);
    } else {
        edge_rcpt_add(s);
    }
    edge_session_resume(s);
}

bool edge_milter_rcpt(struct edge_session *s)
{
    if (s->milter == NULL)
        return false;
    char *rcpt = bracketed(&s->pending_rcpt.path);
    edge_session_wait(s);
    milter_rcpt(s->milter, rcpt, NULL, 0, rcpt_done, s);
    free(rcpt);
    return true;
}

void edge_milter_abort(struct edge_session *s)
{
    if (s->milter != NULL && !s->waiting)
        milter_abort(s->milter);
}

/* ---- the content ---- */

/* Where the content walk stands. */
struct content_walk {
    enum { WALK_HEADERS, WALK_EOH, WALK_BODY, WALK_EOM } phase;
    size_t pos;             /* offset in tx->content of the next header field */
    size_t hdr_end;         /* offset of the empty line that ends the header section */
    size_t body;            /* offset of the body, after that line */
};

static void content_step(struct edge_session *s);

/* The chain's verdict on the message, at the end or early (a refusal, DISCARD). */
static void content_verdict(struct edge_session *s, const struct milter_verdict *v)
{
    struct edge_tx *tx = s->tx;
    free(tx->milter_walk);
    tx->milter_walk = NULL;
    switch (v->action) {
    case MV_CONTINUE:
    case MV_ACCEPT:
    case MV_QUARANTINE:
        if (!edge_milter_apply(s, v))
            break;      /* it answered the client itself */
        if (v->action == MV_QUARANTINE) {
            log_verdict(s, "eom", v);
            edge_tx_quarantine(tx, v->quarantine);
        }
        edge_content_checked(s);
        return;
    case MV_DISCARD:
        log_verdict(s, "eom", v);
        edge_reply(s, "250 2.0.0 Ok: discarded");
        edge_session_tx_reset(s);
        break;
    default:
        edge_session_tx_reset(s);
        refuse(s, "content", v);
        break;
    }
    edge_session_resume(s);
}

static void content_done(struct milter_session *ms, const struct milter_verdict *v, void *arg)
{
    (void)ms;
    struct edge_session *s = arg;
    if (!edge_session_release(s))
        return;
    if (refuses(v) || v->action == MV_DISCARD || ((struct content_walk *)s->tx->milter_walk)->phase == WALK_EOM) {
        content_verdict(s, v);
        return;
    }
    content_step(s);
}

/* Sends the next header, the end of headers, the body, then the end of message. */
static void content_step(struct edge_session *s)
{
    struct edge_tx *tx = s->tx;
    struct content_walk *w = tx->milter_walk;
    const char *c = tx->content.data;
    size_t len = tx->content.len;
    if (w->phase == WALK_HEADERS && w->pos < w->hdr_end) {
        /* One field: "name: value" with its continuation lines. */
        size_t start = w->pos, end = edge_tx_field_end(tx, start, w->hdr_end);
        w->pos = end;
        const char *colon = memchr(c + start, ':', end - start);
        if (colon == NULL) {
            content_step(s);    /* not a field (the content is kept as sent): not for milters */
            return;
        }
        char *name = xstrndup(c + start, (size_t)(colon - (c + start)));
        const char *vp = colon + 1;
        if (vp < c + end && *vp == ' ')
            vp++;
        /* The value without its line end; a fold is "\n" and white space, as libmilter expects. */
        struct buf value = BUF_INIT;
        for (const char *q = vp; q < c + end; q++)
            if (*q != '\r')
                buf_putc(&value, *q);
        if (value.len > 0 && value.data[value.len - 1] == '\n')
            value.data[--value.len] = '\0';
        edge_session_wait(s);
        milter_header(s->milter, name, buf_cstr(&value), content_done, s);
        free(name);
        buf_release(&value);
        return;
    }
    edge_session_wait(s);
    switch (w->phase) {
    case WALK_HEADERS:
        w->phase = WALK_EOH;
        milter_eoh(s->milter, content_done, s);
        return;
    case WALK_EOH:
        w->phase = WALK_BODY;
        milter_body(s->milter, c + w->body, len - w->body, content_done, s);
        return;
    default:
        w->phase = WALK_EOM;
        milter_eom(s->milter, tx->id, content_done, s);
        return;
    }
}

bool edge_milter_content(struct edge_session *s)
{
    if (s->milter == NULL)
        return false;
    struct edge_tx *tx = s->tx;
    struct content_walk *w = xcalloc(1, sizeof *w);
    /* The client's header section: after our Received header and the fields we added. */
    w->pos = tx->header_len;
    w->hdr_end = edge_tx_header_end(tx);
    w->body = w->hdr_end;
    const char *c = tx->content.data;
    if (w->body < tx->content.len && c[w->body] == '\r')
        w->body++;
    if (w->body < tx->content.len && c[w->body] == '\n')
        w->body++;
    tx->milter_walk = w;
    milter_macro_set(s->milter, "i", tx->id);
    edge_session_wait(s);
    milter_data(s->milter, content_done, s);
    return true;
}
