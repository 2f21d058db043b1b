/*
 * filter_dkim.c - DKIM verification through libopendkim, and the Authentication-Results text for
 * it (filter_dkim.h). Signing is filter_dkim_sign.c.
 *
 * Owns: the process-wide DKIM_LIB (created by the first filter or signer, closed with the last),
 * the splitter that feeds raw bytes to a libopendkim handle, and per verification a libopendkim
 * handle and the key records fetched for it.
 *
 * How verification stays off the network: the library is told to delay signature processing to
 * dkim_eom() (DKIM_LIBFLAGS_DELAYSIGPROC) and to ask key_lookup() for keys instead of querying
 * DNS. After dkim_eoh() the signature list names every selector/domain pair; their TXT records
 * (RFC 6376 section 3.6.2.2) are fetched with dns_txt() while the body streams, and dkim_eom()
 * runs only once every lookup answered, key_lookup() serving the records already in hand. A
 * lookup that failed temporarily becomes temperror, a missing record permerror (RFC 8601 names).
 * Signatures with syntax errors still get a handle (DKIM_LIBFLAGS_BADSIGHANDLES), so they are
 * reported instead of making a message look unsigned. libopendkim 2.11's key lookup buffer holds
 * about 1 KiB (RSA 4096 records fit); a longer record is permerror. It keeps the id string given
 * to dkim_verify() by pointer, so the verification owns a copy.
 *
 * Nothing is logged here: failures are results. Running out of memory in our code, or a caller
 * feeding a finished verification, aborts (mem.h, log_panic); libopendkim running out of memory
 * is a temperror.
 */
#include "filter_dkim.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <dkim.h>
#include <event2/event.h>

#include "dns.h"
#include "filter_dkim_int.h"
#include "log.h"
#include "mem.h"

/* ---- the process-wide library handle --------------------------------------------------------- */

static pthread_mutex_t lib_lock = PTHREAD_MUTEX_INITIALIZER;
static DKIM_LIB *lib;           /* shared by every filter and signer of the process */
static unsigned lib_refs;

static DKIM_CBSTAT key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen);

DKIM_LIB *dkim_lib_ref(struct buf *err)
{
    pthread_mutex_lock(&lib_lock);
    if (lib == NULL) {
        DKIM_LIB *l = dkim_init(NULL, NULL);
        uint32_t flags = DKIM_LIBFLAGS_DELAYSIGPROC | DKIM_LIBFLAGS_BADSIGHANDLES;
        if (l == NULL
            || dkim_options(l, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags,
                            sizeof flags) != DKIM_STAT_OK
            || dkim_set_key_lookup(l, key_lookup) != DKIM_STAT_OK) {
            if (l != NULL)
                dkim_close(l);
            pthread_mutex_unlock(&lib_lock);
            buf_puts(err, "libopendkim could not be initialised");
            return NULL;
        }
        lib = l;
    }
    lib_refs++;
    DKIM_LIB *l = lib;
    pthread_mutex_unlock(&lib_lock);
    return l;
}

void dkim_lib_unref(void)
{
    pthread_mutex_lock(&lib_lock);
    if (--lib_refs == 0) {
        dkim_close(lib);
        lib = NULL;
    }
    pthread_mutex_unlock(&lib_lock);
}

/* ---- feeding raw message bytes to a handle --------------------------------------------------- */

/* Hands over the assembled field. One libopendkim refuses (no colon) is left out, as RFC 6376
 * verifiers would not see it as a field either. */
static void feed_field(struct dkim_feed *f)
{
    if (f->field.len > 0)
        (void)dkim_header(f->dkim, (u_char *)f->field.data, f->field.len);
    buf_reset(&f->field);
}

/* A complete header line is in f->line; true when it was the blank line ending the header. */
static bool feed_line(struct dkim_feed *f)
{
    struct buf *l = &f->line;
    if (l->len > 0 && l->data[l->len - 1] == '\r')
        l->data[--l->len] = '\0';
    if (l->len == 0) {
        feed_field(f);
        f->in_body = true;
        return true;
    }
    if ((l->data[0] == ' ' || l->data[0] == '\t') && f->field.len > 0)
        buf_append(&f->field, "\r\n", 2);
    else
        feed_field(f);
    buf_append(&f->field, l->data, l->len);
    buf_reset(l);
    return false;
}

size_t dkim_feed_header(struct dkim_feed *f, const char *p, size_t n)
{
    size_t used = 0;
    while (used < n) {
        const char *lf = memchr(p + used, '\n', n - used);
        if (lf == NULL) {
            buf_append(&f->line, p + used, n - used);
            return n;
        }
        buf_append(&f->line, p + used, (size_t)(lf - (p + used)));
        used = (size_t)(lf - p) + 1;
        if (feed_line(f))
            break;
    }
    return used;
}

void dkim_feed_header_end(struct dkim_feed *f)
{
    if (f->line.len > 0)
        (void)feed_line(f);
    feed_field(f);
    f->in_body = true;
}

void dkim_feed_release(struct dkim_feed *f)
{
    buf_release(&f->line);
    buf_release(&f->field);
}

/* ---- verification ---------------------------------------------------------------------------- */

struct dkim_filter {
    DKIM_LIB *lib;
    struct event_base *base;
    struct dns *dns;
};

enum key_state {
    KEY_PENDING,                /* lookup in flight */
    KEY_OK,                     /* record in hand */
    KEY_NONE,                   /* no such record: permerror */
    KEY_TEMPFAIL,               /* DNS failed for now: temperror */
    KEY_BAD,                    /* records that cannot be handed over (NUL, too long): permerror */
};

/* The key record of one selector/domain pair, shared by the signatures that name it. */
struct key_fetch {
    struct dkim_verify *v;
    char *selector;
    char *domain;
    struct dns_query *q;        /* in flight; NULL once answered */
    enum key_state state;
    char *record;               /* KEY_OK: the TXT record used */
};

struct dkim_verify {
    struct dkim_filter *f;
    char *id;                   /* libopendkim keeps a pointer to it for the handle's life */
    DKIM *dkim;                 /* NULL if libopendkim could not make one (stat says why) */
    DKIM_STAT stat;             /* first libopendkim failure; DKIM_STAT_OK if none */
    struct dkim_feed feed;
    bool nosig;                 /* no DKIM-Signature field: nothing more to do */
    DKIM_SIGINFO **sigs;        /* libopendkim's signature list (its memory), once the header
                                 * section is in */
    size_t nsigs;               /* entries evaluated: at most DKIM_VERIFY_MAX_SIGS */
    struct key_fetch *sigkey[DKIM_VERIFY_MAX_SIGS]; /* the key each signature needs, or NULL */
    struct key_fetch *keys[DKIM_VERIFY_MAX_SIGS];   /* distinct lookups */
    size_t nkeys;
    size_t pending;             /* lookups in flight */
    size_t ignored;             /* signatures past DKIM_VERIFY_MAX_SIGS */
    bool finishing;             /* dkim_verify_finish() was called */
    dkim_verify_done_fn *done;
    void *arg;
    struct event *defer;        /* runs complete() on a later loop turn */
};

struct dkim_filter *dkim_filter_new(struct event_base *base, struct dns *dns, struct buf *err)
{
    DKIM_LIB *l = dkim_lib_ref(err);
    if (l == NULL)
        return NULL;
    struct dkim_filter *f = xcalloc(1, sizeof *f);
    f->lib = l;
    f->base = base;
    f->dns = dns;
    return f;
}

void dkim_filter_free(struct dkim_filter *f)
{
    if (f == NULL)
        return;
    dkim_lib_unref();
    free(f);
}

static struct key_fetch *key_find(struct dkim_verify *v, const char *domain, const char *selector)
{
    for (size_t i = 0; i < v->nkeys; i++)
        if (strcasecmp(v->keys[i]->domain, domain) == 0
            && strcasecmp(v->keys[i]->selector, selector) == 0)
            return v->keys[i];
    return NULL;
}

/* Serves libopendkim the record fetched earlier: it never queries DNS itself. */
static DKIM_CBSTAT key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
    struct dkim_verify *v = dkim_get_user_context(dkim);
    const char *d = (const char *)dkim_sig_getdomain(sig);
    const char *s = (const char *)dkim_sig_getselector(sig);
    struct key_fetch *k = v != NULL && d != NULL && s != NULL ? key_find(v, d, s) : NULL;
    if (k == NULL)
        return DKIM_CBSTAT_ERROR;
    switch (k->state) {
    case KEY_OK: {
        size_t n = strlen(k->record);
        if (n < buflen) {
            memcpy(buf, k->record, n + 1);
            return DKIM_CBSTAT_CONTINUE;
        }
        k->state = KEY_BAD;
        return DKIM_CBSTAT_ERROR;
    }
    case KEY_NONE:
        return DKIM_CBSTAT_NOTFOUND;
    case KEY_BAD:
        return DKIM_CBSTAT_ERROR;
    case KEY_PENDING:
    case KEY_TEMPFAIL:
        break;
    }
    return DKIM_CBSTAT_TRYAGAIN;
}

static void complete(struct dkim_verify *v);

/*
 * The TXT answer for one key. Of several records, the first that starts with "v=DKIM1" is used,
 * else the first (RFC 6376 leaves the choice to the verifier); one holding a NUL cannot be used.
 */
static void got_key(struct dns_result *res, void *arg)
{
    struct key_fetch *k = arg;
    struct dkim_verify *v = k->v;
    k->q = NULL;
    v->pending--;
    if (res->status == DNS_OK && res->n > 0) {
        const struct dns_txt *pick = NULL;
        for (size_t i = 0; i < res->n; i++) {
            const struct dns_txt *t = &res->txt[i];
            if (memchr(t->data, '\0', t->len) != NULL)
                continue;
            const char *p = t->data + strspn(t->data, " \t");
            if (strncmp(p, "v=DKIM1", 7) == 0 && (p[7] == ';' || p[7] == ' ' || p[7] == '\t'
                                                  || p[7] == '\0')) {
                pick = t;
                break;
            }
            if (pick == NULL)
                pick = t;
        }
        k->state = pick != NULL ? KEY_OK : KEY_BAD;
        if (pick != NULL)
            k->record = xstrndup(pick->data, pick->len);
    } else if (res->status == DNS_OK || res->status == DNS_NOTFOUND || res->status == DNS_NULLMX) {
        k->state = KEY_NONE;
    } else {
        k->state = KEY_TEMPFAIL;
    }
    if (v->finishing && v->pending == 0)
        complete(v);
}

/* The header section is complete: learn the signatures and start their key lookups. */
static void at_eoh(struct dkim_verify *v)
{
    DKIM_STAT st = dkim_eoh(v->dkim);
    if (st == DKIM_STAT_NOSIG) {
        v->nosig = true;
        return;
    }
    DKIM_SIGINFO **sigs = NULL;
    int n = 0;
    if (st == DKIM_STAT_OK)
        st = dkim_getsiglist(v->dkim, &sigs, &n);
    if (st != DKIM_STAT_OK) {
        v->stat = st;
        return;
    }
    v->sigs = sigs;
    for (int i = 0; i < n; i++) {
        if ((size_t)i >= DKIM_VERIFY_MAX_SIGS) {
            dkim_sig_ignore(sigs[i]);
            v->ignored++;
            continue;
        }
        v->nsigs++;
        const char *d = (const char *)dkim_sig_getdomain(sigs[i]);
        const char *s = (const char *)dkim_sig_getselector(sigs[i]);
        if (dkim_sig_geterror(sigs[i]) != DKIM_SIGERROR_UNKNOWN || d == NULL || s == NULL)
            continue;   /* already judged (syntax): no key needed */
        struct key_fetch *k = key_find(v, d, s);
        if (k == NULL) {
            k = xcalloc(1, sizeof *k);
            k->v = v;
            k->domain = xstrdup(d);
            k->selector = xstrdup(s);
            v->keys[v->nkeys++] = k;
            struct buf name = BUF_INIT;
            buf_printf(&name, "%s.%s.%s", s, DKIM_DNSKEYNAME, d);
            v->pending++;
            k->q = dns_txt(v->f->dns, buf_cstr(&name), got_key, k);
            buf_release(&name);
        }
        v->sigkey[i] = k;
    }
}

struct dkim_verify *dkim_verify_start(struct dkim_filter *f, const char *queue_id)
{
    struct dkim_verify *v = xcalloc(1, sizeof *v);
    v->f = f;
    v->id = xstrdup(queue_id != NULL && queue_id[0] != '\0' ? queue_id : "-");
    v->stat = DKIM_STAT_OK;
    v->dkim = dkim_verify(f->lib, (const u_char *)v->id, NULL, &v->stat);
    if (v->dkim == NULL && v->stat == DKIM_STAT_OK)
        v->stat = DKIM_STAT_NORESOURCE;
    if (v->dkim != NULL)
        dkim_set_user_context(v->dkim, v);
    v->feed.dkim = v->dkim;
    return v;
}

void dkim_verify_feed(struct dkim_verify *v, const char *data, size_t len)
{
    if (v->finishing)
        log_panic("dkim_verify_feed() after dkim_verify_finish()");
    if (v->stat != DKIM_STAT_OK || v->nosig)
        return;
    if (!v->feed.in_body) {
        size_t used = dkim_feed_header(&v->feed, data, len);
        if (!v->feed.in_body)
            return;
        at_eoh(v);
        if (v->stat != DKIM_STAT_OK || v->nosig)
            return;
        data += used;
        len -= used;
    }
    if (len > 0) {
        DKIM_STAT st = dkim_body(v->dkim, (u_char *)data, len);
        if (st != DKIM_STAT_OK)
            v->stat = st;
    }
}

size_t dkim_verify_lookups(const struct dkim_verify *v)
{
    return v->nkeys;
}

static void defer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    complete(arg);
}

void dkim_verify_finish(struct dkim_verify *v, dkim_verify_done_fn *done, void *arg)
{
    if (v->finishing)
        log_panic("dkim_verify_finish() called twice");
    v->done = done;
    v->arg = arg;
    if (v->stat == DKIM_STAT_OK && !v->feed.in_body) {
        dkim_feed_header_end(&v->feed);
        at_eoh(v);
    }
    v->finishing = true;
    if (v->pending == 0) {
        v->defer = event_new(v->f->base, -1, 0, defer_cb, v);
        if (v->defer == NULL)
            log_panic("dkim: event_new failed");
        event_active(v->defer, EV_TIMEOUT, 0);
    }
}

void dkim_verify_cancel(struct dkim_verify *v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < v->nkeys; i++) {
        dns_cancel(v->keys[i]->q);
        free(v->keys[i]->domain);
        free(v->keys[i]->selector);
        free(v->keys[i]->record);
        free(v->keys[i]);
    }
    if (v->defer != NULL)
        event_free(v->defer);
    if (v->dkim != NULL)
        (void)dkim_free(v->dkim);
    dkim_feed_release(&v->feed);
    free(v->id);
    free(v);
}

const char *dkim_sigerror_result(int sigerror)
{
    switch (sigerror) {
    case DKIM_SIGERROR_OK:
        return "pass";
    case DKIM_SIGERROR_UNKNOWN:         /* never evaluated: a resource ran out */
    case DKIM_SIGERROR_KEYFAIL:
        return "temperror";
    case DKIM_SIGERROR_BADSIG:
        return "fail";
    case DKIM_SIGERROR_NOKEY:
    case DKIM_SIGERROR_DNSSYNTAX:
    case DKIM_SIGERROR_MULTIREPLY:
    case DKIM_SIGERROR_KEYVERSION:
    case DKIM_SIGERROR_KEYUNKNOWNHASH:
    case DKIM_SIGERROR_KEYHASHMISMATCH:
    case DKIM_SIGERROR_NOTEMAILKEY:
    case DKIM_SIGERROR_KEYTYPEMISSING:
    case DKIM_SIGERROR_KEYTYPEUNKNOWN:
    case DKIM_SIGERROR_KEYREVOKED:
    case DKIM_SIGERROR_KEYDECODE:
        return "permerror";
    case DKIM_SIGERROR_KEYTOOSMALL:
    case DKIM_SIGERROR_SUBDOMAIN:
    case DKIM_SIGERROR_MBSFAILED:
        return "policy";
    default:                            /* the signature itself is malformed or out of date */
        return "neutral";
    }
}

/* The result of signature i, and why. */
static const char *sig_result(const struct dkim_verify *v, size_t i, const char **reason)
{
    const struct key_fetch *k = v->sigkey[i];
    if (v->stat != DKIM_STAT_OK) {
        *reason = dkim_getresultstr(v->stat);
        return "temperror";
    }
    if (k != NULL && k->state == KEY_TEMPFAIL) {
        *reason = "key lookup failed temporarily";
        return "temperror";
    }
    if (k != NULL && k->state == KEY_NONE) {
        *reason = "no key record";
        return "permerror";
    }
    if (k != NULL && k->state == KEY_BAD) {
        *reason = "key record unusable";
        return "permerror";
    }
    DKIM_SIGINFO *sig = v->sigs[i];
    int err = dkim_sig_geterror(sig);
    if (err == DKIM_SIGERROR_OK && (dkim_sig_getflags(sig) & DKIM_SIGFLAG_PASSED) != 0
        && dkim_sig_getbh(sig) == DKIM_SIGBH_MATCH) {
        dkim_alg_t alg = DKIM_SIGN_UNKNOWN;
        if (dkim_sig_getsignalg(sig, &alg) == DKIM_STAT_OK && alg == DKIM_SIGN_RSASHA1) {
            *reason = "rsa-sha1 is not acceptable (RFC 8301)";
            return "policy";
        }
        *reason = "signature verified";
        return "pass";
    }
    if (err == DKIM_SIGERROR_OK)
        err = DKIM_SIGERROR_BADSIG;
    const char *why = dkim_sig_geterrorstr(err);
    *reason = why != NULL ? why : "not evaluated";
    return dkim_sigerror_result(err);
}

/* A tag value of a signature as a new string, "" when absent. */
static char *sig_tag(DKIM_SIGINFO *sig, const char *tag)
{
    const char *val = (const char *)dkim_sig_gettagvalue(sig, false, (u_char *)tag);
    return xstrdup(val != NULL ? val : "");
}

/* Evaluates the signatures (CPU only: every key is in hand), reports, and frees v. */
static void complete(struct dkim_verify *v)
{
    struct dkim_results r = { 0, NULL, v->ignored };
    if (v->stat == DKIM_STAT_OK && !v->nosig)
        (void)dkim_eom(v->dkim, NULL);  /* per-signature outcomes are read below */
    if (v->stat != DKIM_STAT_OK && v->sigs == NULL) {
        r.n = 1;
        r.sig = xcalloc(1, sizeof *r.sig);
        r.sig->result = "temperror";
        r.sig->reason = dkim_getresultstr(v->stat);
        r.sig->domain = xstrdup("");
        r.sig->selector = xstrdup("");
        r.sig->algorithm = xstrdup("");
    } else if (!v->nosig && v->nsigs > 0) {
        r.n = v->nsigs;
        r.sig = xcalloc(r.n, sizeof *r.sig);
        for (size_t i = 0; i < r.n; i++) {
            struct dkim_sig_result *e = &r.sig[i];
            e->result = sig_result(v, i, &e->reason);
            e->domain = sig_tag(v->sigs[i], "d");
            e->selector = sig_tag(v->sigs[i], "s");
            e->algorithm = sig_tag(v->sigs[i], "a");
            const char *b = (const char *)dkim_sig_gettagvalue(v->sigs[i], false, (u_char *)"b");
            snprintf(e->b, sizeof e->b, "%s", b != NULL ? b : "");
        }
    }
    v->done(&r, v->arg);
    for (size_t i = 0; i < r.n; i++) {
        free(r.sig[i].domain);
        free(r.sig[i].selector);
        free(r.sig[i].algorithm);
    }
    free(r.sig);
    dkim_verify_cancel(v);
}

/* RFC 2045 token characters: a pvalue made only of them needs no quotes. */
static bool token_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/* Appends " prop=value" (RFC 8601 propspec), quoting when needed; nothing for an empty value. */
static void put_prop(struct buf *out, const char *prop, const char *val)
{
    if (val[0] == '\0')
        return;
    bool token = true;
    for (const unsigned char *p = (const unsigned char *)val; *p != '\0'; p++)
        token = token && token_char(*p);
    buf_printf(out, " %s=", prop);
    if (token) {
        buf_puts(out, val);
        return;
    }
    buf_putc(out, '"');
    for (const unsigned char *p = (const unsigned char *)val; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            buf_putc(out, '\\');
        buf_putc(out, *p >= 0x20 && *p < 0x7f ? (char)*p : '?');
    }
    buf_putc(out, '"');
}

void dkim_auth_results(const struct dkim_results *r, struct buf *out)
{
    if (r->n == 0) {
        buf_puts(out, "dkim=none");
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        const struct dkim_sig_result *e = &r->sig[i];
        buf_printf(out, "%sdkim=%s", i > 0 ? "; " : "", e->result);
        put_prop(out, "header.d", e->domain);
        put_prop(out, "header.s", e->selector);
        put_prop(out, "header.b", e->b);
    }
}

