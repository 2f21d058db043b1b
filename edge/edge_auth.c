/*
 * edge_auth.c - SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms.
 *
 * Offered only on submission listeners, only over TLS, and only when edge.auth_users is set.
 * The password check (crypt(3), slow on purpose) runs on the worker pool so the loop never waits
 * on it. Secrets are wiped from memory once checked and never logged; a failed attempt counts as
 * an error, so the error sleep and the hard error limit throttle guessing.
 */
#include "edge.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "authdb.h"
#include "mem.h"
#include "sasl.h"
#include "workq.h"

enum { MECH_PLAIN = 1, MECH_LOGIN = 2 };

/* One password check in flight between the loop and a worker. */
struct auth_job {
    struct edge_session *s;
    const struct authdb *db;
    char *user;
    char *pass;
    bool ok;
};

bool edge_auth_offered(const struct edge_session *s)
{
    return s->lst->kind != LISTENER_MX && s->srv->authdb != NULL && s->ssl != NULL;
}

static void wipe_free(char *p)
{
    if (p != NULL) {
        explicit_bzero(p, strlen(p));
        free(p);
    }
}

static void auth_work(void *arg)
{
    struct auth_job *job = arg;
    job->ok = authdb_verify(job->db, job->user, job->pass);
}

static void auth_done(void *arg)
{
    struct auth_job *job = arg;
    struct edge_session *s = job->s;
    wipe_free(job->pass);
    if (!edge_session_release(s)) {
        free(job->user);
        free(job);
        return;
    }
    struct buf who = BUF_INIT;
    buf_append_sanitized(&who, job->user, strlen(job->user), 100);
    if (job->ok) {
        s->auth_user = buf_steal(&who);
        s->logctx.user = s->auth_user;
        log_msg(LOG_INFO, "auth", &s->logctx, "authenticated");
        edge_reply(s, "235 2.7.0 Authentication successful");
    } else {
        struct logrec lr;
        if (log_begin(&lr, LOG_WARN, "auth-failed", &s->logctx)) {
            log_str(&lr, "user", buf_cstr(&who));
            log_end(&lr);
        }
        buf_release(&who);
        edge_reply_error(s, "535 5.7.8 Error: authentication failed");
    }
    free(job->user);
    free(job);
    edge_session_resume(s);
}

/* Takes ownership of user and pass. */
static void auth_check(struct edge_session *s, char *user, char *pass)
{
    s->state = ST_CMD;
    struct auth_job *job = xcalloc(1, sizeof *job);
    job->s = s;
    job->db = s->srv->authdb;
    job->user = user;
    job->pass = pass;
    edge_session_wait(s);
    workq_submit(s->srv->workq, auth_work, auth_done, job);
}

static void auth_abort(struct edge_session *s, const char *reply)
{
    s->state = ST_CMD;
    wipe_free(s->auth_login_user);
    s->auth_login_user = NULL;
    edge_reply_error(s, "%s", reply);
}

/* Handles one client response (base64 text) in the mechanism's current step. */
static void auth_response(struct edge_session *s, const char *b64)
{
    struct buf dec = BUF_INIT;
    bool empty = strcmp(b64, "=") == 0;
    if (!empty && !base64_decode(b64, strlen(b64), &dec)) {
        buf_release(&dec);
        auth_abort(s, "501 5.5.2 Error: invalid base64 data");
        return;
    }
    if (s->auth_mech == MECH_PLAIN) {
        char *user, *pass;
        bool ok = sasl_plain_split(buf_cstr(&dec), dec.len, &user, &pass);
        explicit_bzero(dec.data ? dec.data : (char *)"", dec.len);
        buf_release(&dec);
        if (!ok) {
            auth_abort(s, "501 5.5.2 Error: malformed PLAIN response");
            return;
        }
        auth_check(s, user, pass);
        return;
    }
    /* LOGIN */
    if (s->auth_step == 0) {
        if (dec.len == 0 || memchr(buf_cstr(&dec), '\0', dec.len) != NULL) {
            buf_release(&dec);
            auth_abort(s, "501 5.5.2 Error: malformed user name");
            return;
        }
        s->auth_login_user = buf_steal(&dec);
        s->auth_step = 1;
        s->state = ST_AUTH;
        edge_reply(s, "334 UGFzc3dvcmQ6");     /* "Password:" */
        return;
    }
    if (memchr(buf_cstr(&dec), '\0', dec.len) != NULL) {
        explicit_bzero(dec.data, dec.len);
        buf_release(&dec);
        auth_abort(s, "501 5.5.2 Error: malformed password");
        return;
    }
    char *user = s->auth_login_user;
    s->auth_login_user = NULL;
    auth_check(s, user, buf_steal(&dec));
}

void edge_cmd_auth(struct edge_session *s, const char *args)
{
    if (s->lst->kind == LISTENER_MX || s->srv->authdb == NULL) {
        edge_reply_error(s, "503 5.5.1 Error: authentication not enabled");
        return;
    }
    if (s->ssl == NULL) {
        edge_reply_error(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        return;
    }
    if (s->helo == NULL || !s->esmtp) {
        edge_reply_error(s, "503 5.5.1 Error: send EHLO first");
        return;
    }
    if (s->auth_user != NULL) {
        edge_reply_error(s, "503 5.5.1 Error: already authenticated");
        return;
    }
    if (s->tx != NULL) {
        edge_reply_error(s, "503 5.5.1 Error: MAIL transaction in progress");
        return;
    }
    const char *sp = strchr(args, ' ');
    size_t mlen = sp ? (size_t)(sp - args) : strlen(args);
    const char *initial = sp ? sp + 1 : NULL;
    if (mlen == 5 && strncasecmp(args, "PLAIN", 5) == 0) {
        s->auth_mech = MECH_PLAIN;
    } else if (mlen == 5 && strncasecmp(args, "LOGIN", 5) == 0) {
        s->auth_mech = MECH_LOGIN;
    } else {
        edge_reply_error(s, "504 5.5.4 Error: unsupported authentication mechanism");
        return;
    }
    s->auth_step = 0;
    if (initial != NULL) {
        auth_response(s, initial);
        return;
    }
    s->state = ST_AUTH;
    edge_reply(s, s->auth_mech == MECH_PLAIN ? "334 " : "334 VXNlcm5hbWU6");  /* "Username:" */
}

void edge_auth_line(struct edge_session *s, char *line)
{
    if (strcmp(line, "*") == 0) {
        auth_abort(s, "501 5.7.0 Error: authentication aborted");
        return;
    }
    auth_response(s, line);
}
