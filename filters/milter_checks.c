/*
 * milter_checks.c - the libmilter callbacks of `mxgate milter` (milter_role.h): what the MTA
 * hears at each step, and the per-connection / per-message state they keep.
 *
 *   negotiate  asks for header changes (SMFIF_ADDHDRS | SMFIF_CHGHDRS), header values with their
 *              leading space (SMFIP_HDR_LEADSPC, so DKIM sees the header as sent), no RCPT/DATA
 *              events, and the macros used below (SMFIF_SETSYMLIST).
 *   connect    DNSBL/DNSWL score of the client: at or over screen.dnsbl_threshold it is refused
 *              with 554 5.7.1 (screen.dnsbl_action = ignore: logged only); at or under a
 *              negative screen.dnswl_threshold it is noted in the log.
 *   envfrom    SPF of HELO and MAIL FROM (RFC 7208), unless the sender authenticated ({auth_authen}
 *              set): with filters.spf = reject a fail gets 550 5.7.23; mark records the result.
 *   header     collects the header section for DKIM; remembers the index of every
 *              Authentication-Results field that claims our authserv-id (RFC 8601 section 5).
 *   eoh/body   DKIM verification (RFC 6376) starts with the whole header section, then is fed the
 *              body on the loop thread while the message streams.
 *   eom        DKIM results; the forged fields are deleted (smfi_chgheader with NULL: the index
 *              counts fields of that name, 1-based) and ours inserted on top; one JSON log line.
 *   abort/close  free the message / the connection.
 *
 * Failure policy: a check that cannot be done in time counts as that check's temperror (never a
 * rejection, never a silent pass: the header says temperror) and the message goes on. Failing to
 * change the header (the MTA refused a modification) answers SMFIS_TEMPFAIL: a message whose
 * forged results could not be removed is not let through. Authenticated senders get no checks
 * and no header of ours, but lose forged fields all the same. Once the role stops
 * (milter_checks_close), every callback answers tempfail at once without touching the loop.
 */
#include "milter_role.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libmilter/mfapi.h>

#include "conf.h"
#include "filter_authres.h"
#include "log.h"
#include "mem.h"

#define AR_NAME "Authentication-Results"

static struct milter_loop *g_ml;            /* not owned */
static char g_authserv_id[256];
static atomic_int g_active;                 /* connections with state allocated */
static atomic_int g_running;                /* callbacks inside this file right now */
static atomic_bool g_closing;               /* the role stops: the loop may be gone */
static atomic_ullong g_next_id;             /* session ids for the log */

/* One message: MAIL FROM to end of message (or abort). */
struct role_msg {
    char *sender;                   /* MAIL FROM without angle brackets, "" for <> */
    char queue_id[64];              /* the MTA's {i}, "" until known */
    bool checked;                   /* not authenticated: SPF and DKIM run, our header goes in */
    bool spf_done;                  /* an SPF result is in spf_helo / spf_mailfrom */
    enum spf_result spf_helo, spf_mailfrom;
    struct buf resinfo;             /* "spf=...; dkim=..." for our header */
    struct buf dkim_res;            /* the DKIM part alone, for the log */
    struct milter_dkim *dkim;       /* verification on the loop thread, NULL when none */
    struct buf header;              /* header section collected until eoh (DKIM only) */
    int nar;                        /* Authentication-Results fields seen so far */
    int *forged;                    /* indexes (1-based among them) of those claiming our id */
    size_t nforged;
};

/* One MTA connection: one SMTP session of the MTA. */
struct role_conn {
    struct sockaddr_storage addr;   /* the client; AF_UNSPEC when the MTA did not give one */
    char ip[INET6_ADDRSTRLEN];      /* the client as text, "" when unknown */
    char session[24];               /* our id for the log */
    char mta[128];                  /* the MTA's {j} (its name), for the log; "" if not sent */
    char daemon[128];               /* the MTA's {daemon_name} (which smtpd service), or "" */
    char *helo;                     /* last HELO/EHLO argument, NULL before one */
    int score;                      /* DNSBL/DNSWL score */
    bool dnswl;                     /* the score was at or under screen.dnswl_threshold */
    bool leadspc;                   /* SMFIP_HDR_LEADSPC negotiated */
    struct role_msg *msg;           /* the message in hand, NULL between messages */
    struct log_ctx logctx;
};

void milter_checks_init(struct milter_loop *ml, const char *authserv_id)
{
    g_ml = ml;
    snprintf(g_authserv_id, sizeof g_authserv_id, "%s", authserv_id);
}

int milter_checks_active(void)
{
    return atomic_load(&g_active);
}

void milter_checks_close(void)
{
    atomic_store(&g_closing, true);
}

int milter_checks_running(void)
{
    return atomic_load(&g_running);
}

/*
 * Counts a callback in; false once milter_checks_close() was called. Together with the order in
 * milter_checks_close() and milter_main.c (flag first, then wait for g_running to reach 0), a
 * callback either sees the flag or is waited for: none touches a freed loop.
 */
static bool enter(void)
{
    atomic_fetch_add(&g_running, 1);
    if (atomic_load(&g_closing)) {
        atomic_fetch_sub(&g_running, 1);
        return false;
    }
    return true;
}

static void leave(void)
{
    atomic_fetch_sub(&g_running, 1);
}

static void msg_free(struct role_msg *m)
{
    if (m == NULL)
        return;
    milter_loop_dkim_cancel(g_ml, m->dkim);
    free(m->sender);
    buf_release(&m->resinfo);
    buf_release(&m->dkim_res);
    buf_release(&m->header);
    free(m->forged);
    free(m);
}

/* The connection's state, made on first use (negotiation comes first). */
static struct role_conn *conn_get(SMFICTX *ctx)
{
    struct role_conn *c = smfi_getpriv(ctx);
    if (c != NULL)
        return c;
    c = xcalloc(1, sizeof *c);
    snprintf(c->session, sizeof c->session, "m%llu", atomic_fetch_add(&g_next_id, 1) + 1);
    c->logctx.session = c->session;
    if (smfi_setpriv(ctx, c) != MI_SUCCESS)
        log_panic("smfi_setpriv failed");
    atomic_fetch_add(&g_active, 1);
    return c;
}

/* Points the log context at what is known now: client, queue id. */
static void conn_logctx(struct role_conn *c)
{
    c->logctx.client = c->ip[0] != '\0' ? c->ip : NULL;
    c->logctx.queue_id = c->msg != NULL && c->msg->queue_id[0] != '\0' ? c->msg->queue_id : NULL;
}

/* Takes the MTA's {i} macro as the queue id once it is known. */
static void msg_queue_id(SMFICTX *ctx, struct role_conn *c)
{
    const char *id = smfi_getsymval(ctx, (char *)"i");
    if (c->msg != NULL && id != NULL && id[0] != '\0')
        snprintf(c->msg->queue_id, sizeof c->msg->queue_id, "%s", id);
    conn_logctx(c);
}

static sfsistat do_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
                             unsigned long f3, unsigned long *pf0, unsigned long *pf1,
                             unsigned long *pf2, unsigned long *pf3)
{
    (void)f2;
    (void)f3;
    struct role_conn *c = conn_get(ctx);
    *pf0 = SMFIF_ADDHDRS | SMFIF_CHGHDRS | (f0 & SMFIF_SETSYMLIST);
    *pf1 = f1 & (SMFIP_NORCPT | SMFIP_NOUNKNOWN | SMFIP_NODATA | SMFIP_HDR_LEADSPC);
    *pf2 = 0;
    *pf3 = 0;
    c->leadspc = (*pf1 & SMFIP_HDR_LEADSPC) != 0;
    if ((f0 & SMFIF_SETSYMLIST) != 0) {
        /* Only what is used: the MTA's names for the log, the queue id, the SASL login. */
        smfi_setsymlist(ctx, SMFIM_CONNECT, (char *)"j {daemon_name}");
        smfi_setsymlist(ctx, SMFIM_ENVFROM, (char *)"i {auth_authen}");
        smfi_setsymlist(ctx, SMFIM_EOH, (char *)"i");
        smfi_setsymlist(ctx, SMFIM_EOM, (char *)"i");
    }
    return SMFIS_CONTINUE;
}

/* The "screen" log line of a DNSBL/DNSWL verdict at connect. */
static void log_screen(const struct role_conn *c, const char *verdict, const char *action,
                       const struct milter_dnsbl_answer *a)
{
    struct logrec lr;
    if (!log_begin(&lr, LOG_INFO, "screen", &c->logctx))
        return;
    log_str(&lr, "verdict", verdict);
    log_str(&lr, "action", action);
    log_int(&lr, "score", a->score);
    log_str(&lr, "reasons", a->reasons);
    if (a->errors + a->timeouts > 0)
        log_int(&lr, "dns_errors", a->errors + a->timeouts);
    log_end(&lr);
}

static sfsistat do_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *sa)
{
    (void)hostname;
    struct role_conn *c = conn_get(ctx);
    memset(&c->addr, 0, sizeof c->addr);
    c->ip[0] = '\0';
    if (sa != NULL && sa->sa_family == AF_INET) {
        memcpy(&c->addr, sa, sizeof(struct sockaddr_in));
        inet_ntop(AF_INET, &((struct sockaddr_in *)&c->addr)->sin_addr, c->ip, sizeof c->ip);
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        memcpy(&c->addr, sa, sizeof(struct sockaddr_in6));
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&c->addr)->sin6_addr, c->ip, sizeof c->ip);
    }
    const char *j = smfi_getsymval(ctx, (char *)"j");
    const char *daemon = smfi_getsymval(ctx, (char *)"{daemon_name}");
    snprintf(c->mta, sizeof c->mta, "%s", j != NULL ? j : "");
    snprintf(c->daemon, sizeof c->daemon, "%s", daemon != NULL ? daemon : "");
    conn_logctx(c);
    if (!milter_loop_has_dnsbl(g_ml) || c->ip[0] == '\0')
        return SMFIS_CONTINUE;
    struct milter_dnsbl_answer a;
    if (!milter_loop_dnsbl(g_ml, (const struct sockaddr *)&c->addr, &a))
        log_msg(LOG_WARN, "dnsbl-timeout", &c->logctx, "no DNSBL answer in time: not listed");
    c->score = a.score;
    if (a.score >= conf.screen_dnsbl_threshold) {
        if (conf.screen_dnsbl_action == SCREEN_ACTION_DROP) {
            char text[128];
            snprintf(text, sizeof text, "Service unavailable; client [%s] blocked using DNSBL", c->ip);
            log_screen(c, "dnsbl", "reject", &a);
            if (smfi_setreply(ctx, (char *)"554", (char *)"5.7.1", text) != MI_SUCCESS)
                log_msg(LOG_ERR, "milter-reply", &c->logctx, "the MTA's reply could not be set");
            return SMFIS_REJECT;
        }
        log_screen(c, "dnsbl", "ignore", &a);
    } else if (conf.screen_dnswl_threshold < 0 && a.score <= conf.screen_dnswl_threshold) {
        c->dnswl = true;
        log_screen(c, "dnswl", "pass", &a);
    } else if (a.listed > 0 || a.errors + a.timeouts > 0) {
        log_screen(c, "pass", "pass", &a);
    }
    return SMFIS_CONTINUE;
}

static sfsistat do_helo(SMFICTX *ctx, char *helo)
{
    struct role_conn *c = conn_get(ctx);
    free(c->helo);
    c->helo = xstrdup(helo != NULL ? helo : "");
    return SMFIS_CONTINUE;
}

/* The address of a MAIL FROM argument without its angle brackets ("" for <>). */
static char *path_address(const char *arg)
{
    size_t n = strlen(arg);
    if (n >= 2 && arg[0] == '<' && arg[n - 1] == '>')
        return xstrndup(arg + 1, n - 2);
    return xstrdup(arg);
}

/* The JSON line that sums up one message: its verdicts and what became of it. */
static void log_message(const struct role_conn *c, const struct role_msg *m, const char *action,
                        const char *reply, size_t removed)
{
    struct logrec lr;
    if (!log_begin(&lr, LOG_INFO, "message", &c->logctx))
        return;
    log_str(&lr, "action", action);
    if (c->mta[0] != '\0')
        log_str(&lr, "mta", c->mta);
    if (c->daemon[0] != '\0')
        log_str(&lr, "daemon", c->daemon);
    if (reply != NULL)
        log_str(&lr, "reply", reply);
    log_str(&lr, "from", m->sender);
    log_str(&lr, "helo", c->helo != NULL ? c->helo : "");
    log_bool(&lr, "checked", m->checked);
    if (m->spf_done) {
        log_str(&lr, "spf_helo", spf_result_name(m->spf_helo));
        log_str(&lr, "spf_mailfrom", spf_result_name(m->spf_mailfrom));
    }
    if (m->dkim_res.len > 0)
        log_str(&lr, "dkim", buf_cstr(&m->dkim_res));
    if (milter_loop_has_dnsbl(g_ml)) {
        log_int(&lr, "score", c->score);
        log_bool(&lr, "dnswl", c->dnswl);
    }
    log_int(&lr, "authres_removed", (long long)removed);
    log_end(&lr);
}

/* Appends s with every '%' doubled: the MTA reads the reply text as Sendmail does. */
static void put_reply_text(struct buf *out, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '%')
            buf_putc(out, '%');
        buf_putc(out, *s);
    }
}

/* Appends one resinfo ("spf=..." or "dkim=...") to the message's list. */
static void add_resinfo(struct role_msg *m, const char *r)
{
    if (r[0] == '\0')
        return;
    if (m->resinfo.len > 0)
        buf_puts(&m->resinfo, "; ");
    buf_puts(&m->resinfo, r);
}

static sfsistat do_envfrom(SMFICTX *ctx, char **argv)
{
    struct role_conn *c = conn_get(ctx);
    msg_free(c->msg);
    struct role_msg *m = xcalloc(1, sizeof *m);
    c->msg = m;
    m->sender = path_address(argv != NULL && argv[0] != NULL ? argv[0] : "");
    const char *auth = smfi_getsymval(ctx, (char *)"{auth_authen}");
    m->checked = auth == NULL || auth[0] == '\0';
    msg_queue_id(ctx, c);
    if (!m->checked || !milter_loop_has_spf(g_ml))
        return SMFIS_CONTINUE;

    const char *helo = c->helo != NULL ? c->helo : "";
    struct milter_spf_answer a;
    if (!milter_loop_spf(g_ml, (const struct sockaddr *)&c->addr, helo, m->sender, &a))
        log_msg(LOG_WARN, "spf-timeout", &c->logctx, "no SPF answer in time: temperror");
    m->spf_done = true;
    m->spf_helo = a.helo;
    m->spf_mailfrom = a.mailfrom;
    struct spf_answer sa = { a.helo, a.mailfrom, a.explanation, a.mailfrom_domain };
    struct buf r = BUF_INIT;
    spf_auth_results(&sa, m->sender, helo, &r);
    add_resinfo(m, buf_cstr(&r));
    buf_release(&r);

    sfsistat rc = SMFIS_CONTINUE;
    if (a.mailfrom == SPF_RES_FAIL && conf.filters_spf == SPF_POLICY_REJECT) {
        struct buf text = BUF_INIT, logged = BUF_INIT;
        buf_puts(&text, "SPF validation failed");
        if (a.explanation != NULL) {
            buf_puts(&text, ": ");
            put_reply_text(&text, a.explanation);
        }
        buf_printf(&logged, "550 5.7.23 SPF validation failed%s%s", a.explanation ? ": " : "",
                   a.explanation ? a.explanation : "");
        log_message(c, m, "reject", buf_cstr(&logged), 0);
        if (smfi_setreply(ctx, (char *)"550", (char *)"5.7.23", (char *)buf_cstr(&text)) != MI_SUCCESS)
            log_msg(LOG_ERR, "milter-reply", &c->logctx, "the MTA's reply could not be set");
        buf_release(&text);
        buf_release(&logged);
        msg_free(m);
        c->msg = NULL;
        rc = SMFIS_REJECT;
    }
    milter_spf_answer_clear(&a);
    return rc;
}

/* Appends a header value, its line ends as CRLF whatever the MTA sent (LF in Postfix). */
static void put_crlf(struct buf *out, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\n' && (out->len == 0 || out->data[out->len - 1] != '\r'))
            buf_putc(out, '\r');
        buf_putc(out, *s);
    }
}

static sfsistat do_header(SMFICTX *ctx, char *name, char *value)
{
    struct role_conn *c = conn_get(ctx);
    struct role_msg *m = c->msg;
    if (m == NULL)
        return SMFIS_CONTINUE;
    if (strcasecmp(name, AR_NAME) == 0) {
        m->nar++;
        if (authres_claims(value, strlen(value), g_authserv_id)) {
            m->forged = xrealloc(m->forged, (m->nforged + 1) * sizeof *m->forged);
            m->forged[m->nforged++] = m->nar;
        }
    }
    if (m->checked && milter_loop_has_dkim(g_ml)) {
        buf_puts(&m->header, name);
        buf_putc(&m->header, ':');
        if (!c->leadspc)
            buf_putc(&m->header, ' ');      /* what the MTA took away, most likely */
        put_crlf(&m->header, value);
        buf_puts(&m->header, "\r\n");
    }
    return SMFIS_CONTINUE;
}

static sfsistat do_eoh(SMFICTX *ctx)
{
    struct role_conn *c = conn_get(ctx);
    struct role_msg *m = c->msg;
    if (m == NULL || !m->checked || !milter_loop_has_dkim(g_ml))
        return SMFIS_CONTINUE;
    msg_queue_id(ctx, c);
    buf_puts(&m->header, "\r\n");
    m->dkim = milter_loop_dkim_start(g_ml, m->queue_id, m->header.data, m->header.len);
    buf_release(&m->header);
    return SMFIS_CONTINUE;
}

static sfsistat do_body(SMFICTX *ctx, unsigned char *data, size_t len)
{
    struct role_conn *c = conn_get(ctx);
    if (c->msg != NULL && c->msg->dkim != NULL)
        milter_loop_dkim_feed(g_ml, c->msg->dkim, (const char *)data, len);
    return SMFIS_CONTINUE;
}

/* Our header's value as the MTA takes it: folded with LF + tab, the leading space if negotiated. */
static void header_value(const struct role_conn *c, const struct buf *resinfo, struct buf *out)
{
    struct buf h = BUF_INIT;
    authres_header(g_authserv_id, buf_cstr(resinfo), &h);
    const char *p = buf_cstr(&h) + strlen(AR_NAME ":");
    if (!c->leadspc && *p == ' ')
        p++;
    for (; *p != '\0'; p++)
        if (*p != '\r')
            buf_putc(out, *p);
    if (out->len > 0 && out->data[out->len - 1] == '\n')
        out->data[--out->len] = '\0';
    buf_release(&h);
}

static sfsistat do_eom(SMFICTX *ctx)
{
    struct role_conn *c = conn_get(ctx);
    struct role_msg *m = c->msg;
    if (m == NULL)
        return SMFIS_CONTINUE;
    msg_queue_id(ctx, c);
    if (m->dkim != NULL) {
        struct milter_dkim *d = m->dkim;
        m->dkim = NULL;
        if (!milter_loop_dkim_finish(g_ml, d, &m->dkim_res))
            log_msg(LOG_WARN, "dkim-timeout", &c->logctx, "no DKIM answer in time: temperror");
        add_resinfo(m, buf_cstr(&m->dkim_res));
    }
    /* From the last one: an earlier field's index stays right whatever a deletion does. */
    size_t removed = 0;
    for (size_t i = m->nforged; i-- > 0;) {
        if (smfi_chgheader(ctx, (char *)AR_NAME, m->forged[i], NULL) != MI_SUCCESS) {
            log_msg(LOG_ERR, "milter-modify", &c->logctx,
                    "the MTA refused to delete Authentication-Results #%d: tempfail", m->forged[i]);
            goto tempfail;
        }
        removed++;
    }
    if (m->checked && (milter_loop_has_spf(g_ml) || milter_loop_has_dkim(g_ml))) {
        struct buf v = BUF_INIT;
        header_value(c, &m->resinfo, &v);
        int rc = smfi_insheader(ctx, 0, (char *)AR_NAME, (char *)buf_cstr(&v));
        buf_release(&v);
        if (rc != MI_SUCCESS) {
            log_msg(LOG_ERR, "milter-modify", &c->logctx,
                    "the MTA refused our Authentication-Results: tempfail");
            goto tempfail;
        }
    }
    log_message(c, m, "accept", NULL, removed);
    msg_free(m);
    c->msg = NULL;
    return SMFIS_CONTINUE;
tempfail:
    log_message(c, m, "tempfail", NULL, removed);
    msg_free(m);
    c->msg = NULL;
    return SMFIS_TEMPFAIL;
}

static sfsistat do_abort(SMFICTX *ctx)
{
    struct role_conn *c = smfi_getpriv(ctx);
    if (c != NULL) {
        msg_free(c->msg);
        c->msg = NULL;
    }
    return SMFIS_CONTINUE;
}

static sfsistat do_close(SMFICTX *ctx)
{
    struct role_conn *c = smfi_getpriv(ctx);
    if (c == NULL)
        return SMFIS_CONTINUE;
    smfi_setpriv(ctx, NULL);
    msg_free(c->msg);
    free(c->helo);
    free(c);
    atomic_fetch_sub(&g_active, 1);
    return SMFIS_CONTINUE;
}

/* ---- what libmilter calls: each step counted in, and answered 4xx once the role stops ---- */

static sfsistat cb_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
                             unsigned long f3, unsigned long *pf0, unsigned long *pf1,
                             unsigned long *pf2, unsigned long *pf3)
{
    if (!enter())
        return SMFIS_TEMPFAIL;      /* libmilter ends the session: the MTA's default action */
    sfsistat rc = do_negotiate(ctx, f0, f1, f2, f3, pf0, pf1, pf2, pf3);
    leave();
    return rc;
}

static sfsistat cb_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *sa)
{
    if (!enter())
        return SMFIS_TEMPFAIL;
    sfsistat rc = do_connect(ctx, hostname, sa);
    leave();
    return rc;
}

static sfsistat cb_helo(SMFICTX *ctx, char *helo)
{
    if (!enter())
        return SMFIS_TEMPFAIL;
    sfsistat rc = do_helo(ctx, helo);
    leave();
    return rc;
}

static sfsistat cb_envfrom(SMFICTX *ctx, char **argv)
{
    if (!enter())
        return SMFIS_TEMPFAIL;
    sfsistat rc = do_envfrom(ctx, argv);
    leave();
    return rc;
}

static sfsistat cb_header(SMFICTX *ctx, char *name, char *value)
{
    if (!enter())
        return SMFIS_TEMPFAIL;
    sfsistat rc = do_header(ctx, name, value);
    leave();
    return rc;
}

static sfsistat cb_eoh(SMFICTX *ctx)
{
    if (!enter())
        return SMFIS_TEMPFAIL;
    sfsistat rc = do_eoh(ctx);
    leave();
    return rc;
}

static sfsistat cb_body(SMFICTX *ctx, unsigned char *data, size_t len)
{
    if (!enter())
        return SMFIS_TEMPFAIL;
    sfsistat rc = do_body(ctx, data, len);
    leave();
    return rc;
}

static sfsistat cb_eom(SMFICTX *ctx)
{
    if (!enter())
        return SMFIS_TEMPFAIL;
    sfsistat rc = do_eom(ctx);
    leave();
    return rc;
}

/* Once the role stops, the state of a connection still open is left to the process exit. */
static sfsistat cb_abort(SMFICTX *ctx)
{
    if (!enter())
        return SMFIS_CONTINUE;
    sfsistat rc = do_abort(ctx);
    leave();
    return rc;
}

static sfsistat cb_close(SMFICTX *ctx)
{
    if (!enter())
        return SMFIS_CONTINUE;
    sfsistat rc = do_close(ctx);
    leave();
    return rc;
}

static struct smfiDesc desc = {
    .xxfi_name = (char *)"mxgate",
    .xxfi_version = SMFI_VERSION,
    .xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS,
    .xxfi_connect = cb_connect,
    .xxfi_helo = cb_helo,
    .xxfi_envfrom = cb_envfrom,
    .xxfi_envrcpt = NULL,
    .xxfi_header = cb_header,
    .xxfi_eoh = cb_eoh,
    .xxfi_body = cb_body,
    .xxfi_eom = cb_eom,
    .xxfi_abort = cb_abort,
    .xxfi_close = cb_close,
    .xxfi_unknown = NULL,
    .xxfi_data = NULL,
    .xxfi_negotiate = cb_negotiate,
};

const struct smfiDesc *milter_checks_desc(void)
{
    return &desc;
}
