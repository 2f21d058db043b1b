/*
 * edge_tls.c - STARTTLS (RFC 3207) and implicit TLS (RFC 8314) on the edge's connections.
 *
 * The socket bufferevent gets an OpenSSL filter bufferevent on top of it, which becomes the
 * session's connection. Against STARTTLS command injection (CVE-2011-0411 and kin): STARTTLS must
 * be the last command of its group, so plaintext sent after it ends the session before any TLS
 * starts (edge_session.c, must_be_last), and the underlying buffer is drained regardless. After
 * the handshake the session forgets HELO, AUTH and any transaction: the client starts over.
 */
#include "edge.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include <openssl/err.h>

#include "mem.h"
#include "tls.h"

static void handshake_done(struct edge_session *s)
{
    struct buf info = BUF_INIT;
    tls_describe(s->ssl, &info);
    free(s->tls_info);
    s->tls_info = buf_steal(&info);
    struct logrec lr;
    if (log_begin(&lr, LOG_INFO, "tls", &s->logctx)) {
        log_str(&lr, "tls", s->tls_info);
        log_end(&lr);
    }
    if (s->lst->kind == LISTENER_SMTPS) {
        edge_session_start(s);      /* greeting only now, over TLS */
    } else {
        edge_install_callbacks(s);
        s->state = ST_CMD;
        edge_session_resume(s);
    }
}

static void handshake_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct edge_session *s = arg;
    if (what & BEV_EVENT_CONNECTED) {
        handshake_done(s);
        return;
    }
    char why[256] = "connection closed";
    unsigned long e = bufferevent_get_openssl_error(bev);
    if (e != 0)
        ERR_error_string_n(e, why, sizeof why);
    else if (what & BEV_EVENT_TIMEOUT)
        strcpy(why, "handshake timeout");
    log_msg(LOG_INFO, "tls-failed", &s->logctx, "%s", why);
    /* Nothing can be said to a client whose handshake failed: drop it now. */
    edge_session_drop(s);
}

static void handshake_read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    (void)arg;      /* nothing arrives before the handshake completes */
}

bool edge_tls_wrap(struct edge_session *s)
{
    SSL *ssl = SSL_new(s->srv->tls);
    if (ssl == NULL)
        return false;
    /* Plaintext behind STARTTLS is never read as TLS, nor as commands. */
    struct evbuffer *in = bufferevent_get_input(s->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    struct bufferevent *tls = bufferevent_openssl_filter_new(
        s->srv->base, s->bev, ssl, BUFFEREVENT_SSL_ACCEPTING,
        BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (tls == NULL) {
        SSL_free(ssl);
        return false;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
    s->bev = tls;
    s->ssl = ssl;
    s->state = ST_GREET;
    bufferevent_setcb(tls, handshake_read_cb, NULL, handshake_event_cb, s);
    struct timeval tv = { 30, 0 };
    bufferevent_set_timeouts(tls, &tv, &tv);
    bufferevent_enable(tls, EV_READ | EV_WRITE);
    return true;
}

void edge_cmd_starttls(struct edge_session *s, const char *args)
{
    if (s->srv->tls == NULL) {
        edge_reply_error(s, "502 5.5.1 Error: command not implemented");
        return;
    }
    if (s->ssl != NULL) {
        edge_reply_error(s, "554 5.5.1 Error: TLS already active");
        return;
    }
    if (*args != '\0') {
        edge_reply_error(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    if (s->tx != NULL) {
        edge_reply_error(s, "503 5.5.1 Error: MAIL transaction in progress");
        return;
    }
    edge_reply(s, "220 2.0.0 Ready to start TLS");
    /* RFC 3207 §4.2: everything learnt before TLS is forgotten. */
    free(s->helo);
    s->helo = NULL;
    s->esmtp = false;
    free(s->auth_user);
    s->auth_user = NULL;
    s->logctx.user = NULL;
    if (!edge_tls_wrap(s)) {
        log_msg(LOG_ERR, "tls-failed", &s->logctx, "cannot set up TLS");
        edge_session_close(s, "TLS set-up failed");
    }
}
