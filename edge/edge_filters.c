/*
 * edge_filters.c - sender authentication in the edge: SPF at MAIL FROM, DKIM verification while
 * the content streams in, one Authentication-Results header (RFC 8601) at the end of data, and
 * DKIM signing of mail from authenticated or trusted senders.
 *
 * Who is checked: clients that are neither authenticated nor in edge.trusted_networks get SPF
 * (filters.spf) and DKIM verification (filters.dkim_verify), and their message gets our
 * Authentication-Results header. Authenticated and trusted senders get their mail signed when
 * filters.dkim_sign has a key for the From domain. Every message loses the incoming
 * Authentication-Results fields that claim our authserv-id (they cannot be ours).
 *
 * The checks are asynchronous (SPF on worker threads, DKIM keys through c-ares); the session
 * waits for them as it waits for Redis, holding a busy reference. A check that cannot be done is
 * reported as temperror, never as a rejection.
 */
#include "edge.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf.h"
#include "filter_authres.h"
#include "filter_dkim.h"
#include "filter_spf.h"
#include "mem.h"

#define SPF_TIMEOUT_MS 20000

/* What the server's filters need, made once. */
struct edge_filters {
    struct spf_checker *spf;            /* NULL with filters.spf = off */
    struct dkim_filter *dkim;           /* NULL with filters.dkim_verify = no */
    struct dkim_signer *signer;         /* NULL without filters.dkim_sign */
    char authserv_id[256];
};

/* Per transaction. */
struct edge_tx_filters {
    struct spf_query *spf_query;        /* pending SPF check */
    struct buf resinfo;                 /* "spf=...; dkim=..." for Authentication-Results */
    bool checked;                       /* the sender is checked (not authenticated or trusted) */
    struct dkim_verify *dkim;           /* verification being fed */
    size_t fed;                         /* content bytes fed to it so far */
};

bool edge_filters_init(struct edge_server *srv, struct buf *err)
{
    struct edge_filters *f = xcalloc(1, sizeof *f);
    srv->filters = f;
    snprintf(f->authserv_id, sizeof f->authserv_id, "%s",
             conf.filters_authserv_id[0] != '\0' ? conf.filters_authserv_id : srv->hostname);
    if (conf.filters_spf != SPF_POLICY_OFF) {
        f->spf = spf_checker_new(srv->workq, &conf.dns_servers, srv->hostname, SPF_TIMEOUT_MS, err);
        if (f->spf == NULL)
            return false;
    }
    if (conf.filters_dkim_verify) {
        f->dkim = dkim_filter_new(srv->base, srv->dns, err);
        if (f->dkim == NULL)
            return false;
    }
    if (conf.filters_dkim_sign.n > 0) {
        f->signer = dkim_signer_new(&conf.filters_dkim_sign, conf.filters_dkim_signed_headers, err);
        if (f->signer == NULL)
            return false;
    }
    return true;
}

void edge_filters_fini(struct edge_server *srv)
{
    struct edge_filters *f = srv->filters;
    if (f == NULL)
        return;
    spf_checker_free(f->spf);
    dkim_filter_free(f->dkim);
    dkim_signer_free(f->signer);
    free(f);
    srv->filters = NULL;
}

void edge_tx_filters_free(struct edge_tx *tx)
{
    struct edge_tx_filters *tf = tx->filters;
    if (tf == NULL)
        return;
    spf_cancel(tf->spf_query);
    dkim_verify_cancel(tf->dkim);
    buf_release(&tf->resinfo);
    free(tf);
    tx->filters = NULL;
}

static struct edge_tx_filters *tx_filters(struct edge_tx *tx)
{
    if (tx->filters == NULL)
        tx->filters = xcalloc(1, sizeof *tx->filters);
    return tx->filters;
}

/* Appends one resinfo to the transaction's list. */
static void add_resinfo(struct edge_tx_filters *tf, const struct buf *r)
{
    if (r->len == 0)
        return;
    if (tf->resinfo.len > 0)
        buf_puts(&tf->resinfo, "; ");
    buf_append(&tf->resinfo, r->data, r->len);
}

/* ---- SPF at MAIL FROM ---- */

static void spf_done(const struct spf_answer *a, void *arg)
{
    struct edge_session *s = arg;
    struct edge_tx *tx = s->tx;
    tx->filters->spf_query = NULL;
    if (!edge_session_release(s))
        return;
    struct buf r = BUF_INIT;
    spf_auth_results(a, tx->mail.path.null ? "" : tx->mail.path.mailbox, s->helo, &r);
    add_resinfo(tx->filters, &r);
    struct logrec lr;
    if (log_begin(&lr, LOG_INFO, "spf", &s->logctx)) {
        log_str(&lr, "helo", spf_result_name(a->helo));
        log_str(&lr, "mailfrom", spf_result_name(a->mailfrom));
        log_str(&lr, "domain", a->mailfrom_domain);
        log_end(&lr);
    }
    buf_release(&r);
    if (a->mailfrom == SPF_RES_FAIL && conf.filters_spf == SPF_POLICY_REJECT) {
        /* The explanation comes sanitised (printable ASCII, 200 bytes at most). */
        const char *why = a->explanation;
        edge_mail_checked(s, "550 5.7.23 SPF validation failed%s%s", why ? ": " : "", why ? why : "");
    } else {
        edge_mail_checked(s, NULL);
    }
    edge_session_resume(s);
}

bool edge_filters_mail(struct edge_session *s)
{
    struct edge_filters *f = s->srv->filters;
    struct edge_tx *tx = s->tx;
    struct edge_tx_filters *tf = tx_filters(tx);
    tf->checked = s->auth_user == NULL && !s->trusted;
    if (!tf->checked || f->spf == NULL)
        return false;
    tf->spf_query = spf_check(f->spf, (const struct sockaddr *)&s->peer, s->helo,
                              tx->mail.path.null ? "" : tx->mail.path.mailbox, spf_done, s);
    edge_session_wait(s);
    return true;
}

/* ---- DKIM while the content streams ---- */

void edge_filters_content(struct edge_session *s)
{
    struct edge_filters *f = s->srv->filters;
    struct edge_tx *tx = s->tx;
    struct edge_tx_filters *tf = tx_filters(tx);
    if (!tf->checked || f->dkim == NULL || tx->too_big)
        return;
    if (tf->dkim == NULL && tf->fed == 0) {
        tf->dkim = dkim_verify_start(f->dkim, tx->id);
        tf->fed = tx->header_len;      /* our Received header is not part of what was signed */
    }
    if (tf->dkim != NULL && tx->content.len > tf->fed) {
        dkim_verify_feed(tf->dkim, tx->content.data + tf->fed, tx->content.len - tf->fed);
        tf->fed = tx->content.len;
    }
}

static void finish_headers(struct edge_session *s);

static void dkim_done(const struct dkim_results *r, void *arg)
{
    struct edge_session *s = arg;
    struct edge_tx *tx = s->tx;
    tx->filters->dkim = NULL;
    if (!edge_session_release(s))
        return;
    struct buf ar = BUF_INIT;
    dkim_auth_results(r, &ar);
    add_resinfo(tx->filters, &ar);
    struct logrec lr;
    if (log_begin(&lr, LOG_INFO, "dkim", &s->logctx)) {
        log_str(&lr, "results", buf_cstr(&ar));
        log_end(&lr);
    }
    buf_release(&ar);
    finish_headers(s);
}

/* ---- the end of data ---- */

/* The domain of the first address in the From field of the client's header, lower-cased. */
static bool from_domain(const struct edge_tx *tx, char *out, size_t outlen)
{
    const char *c = tx->content.data;
    size_t hdr_end = edge_tx_header_end(tx);
    for (size_t i = tx->header_len; i < hdr_end;) {
        size_t next = edge_tx_field_end(tx, i, hdr_end);
        if (next - i > 5 && strncasecmp(c + i, "From:", 5) == 0) {
            const char *at = memchr(c + i, '@', next - i);
            if (at == NULL)
                return false;
            size_t n = 0;
            for (const char *q = at + 1; q < c + next && n + 1 < outlen; q++) {
                char ch = *q;
                if (ch == '>' || ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == ',' || ch == ')')
                    break;
                out[n++] = (char)((ch >= 'A' && ch <= 'Z') ? ch + 32 : ch);
            }
            out[n] = '\0';
            return n > 0;
        }
        i = next;
    }
    return false;
}

/* Inserts text into the content right after our Received header. */
static void insert_after_received(struct edge_tx *tx, const struct buf *text)
{
    buf_reserve(&tx->content, text->len);
    char *at = tx->content.data + tx->header_len;
    memmove(at + text->len, at, tx->content.len - tx->header_len);
    memcpy(at, text->data, text->len);
    tx->content.len += text->len;
    tx->content.data[tx->content.len] = '\0';
    tx->header_len += text->len;
}

/* Strips forged results, adds ours (or a signature), then lets the message be queued. */
static void finish_headers(struct edge_session *s)
{
    struct edge_filters *f = s->srv->filters;
    struct edge_tx *tx = s->tx;
    struct edge_tx_filters *tf = tx_filters(tx);
    /* Only the client's part is searched: our own Received header holds no such field. */
    size_t removed = authres_strip(&tx->content, tx->header_len, f->authserv_id);
    if (removed > 0)
        log_msg(LOG_INFO, "authres-removed", &s->logctx, "%zu Authentication-Results claiming %s removed",
                removed, f->authserv_id);
    struct buf add = BUF_INIT;
    if (tf->checked && (f->spf != NULL || f->dkim != NULL)) {
        authres_header(f->authserv_id, buf_cstr(&tf->resinfo), &add);
    } else if (!tf->checked && f->signer != NULL) {
        char domain[256];
        struct buf err = BUF_INIT;
        if (from_domain(tx, domain, sizeof domain)
            && !dkim_sign_message(f->signer, domain, tx->content.data + tx->header_len,
                                  tx->content.len - tx->header_len, &add, &err))
            log_msg(LOG_INFO, "dkim-not-signed", &s->logctx, "%s", buf_cstr(&err));
        buf_release(&err);
    }
    if (add.len > 0)
        insert_after_received(tx, &add);
    buf_release(&add);
    if (!edge_milter_content(s))
        edge_content_checked(s);
}

void edge_filters_end(struct edge_session *s)
{
    struct edge_tx *tx = s->tx;
    struct edge_tx_filters *tf = tx_filters(tx);
    edge_filters_content(s);
    if (tf->dkim != NULL) {
        dkim_verify_finish(tf->dkim, dkim_done, s);
        edge_session_wait(s);
        return;
    }
    finish_headers(s);
}
