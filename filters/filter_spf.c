/*
 * filter_spf.c - SPF checks (RFC 7208) with libspf2 on worker threads, asking the operator's DNS
 * servers through a libspf2 DNS layer of our own; the Authentication-Results resinfo (RFC 8601).
 *
 * Threads. A check is a workq job; done() gets its answer on the loop thread. The job borrows a
 * context (an SPF_server_t, its DNS layer and a c-ares channel) from the checker's pool and gives
 * it back, so a context is used by one thread at a time (the pool mutex orders the uses) and
 * there are at most as many contexts as jobs ever ran at once, i.e. workq threads. libspf2's
 * stock resolver (a pthread-key res_state) is not used; its log handlers, process globals, are
 * set once before any job runs.
 *
 * DNS. The layer answers libspf2's lookups with synchronous c-ares queries on the context's
 * channel (ares_query, then poll(2) on ares_getsock()'s sockets until the answer or the
 * deadline). c-ares takes dns.servers with ports and IPv6 ("ip", "ip:port", "[ipv6]:port"; none
 * = /etc/resolv.conf), times out in milliseconds, retries over TCP on truncation, and its
 * answers are read by lib/dns_answer.c like the loop-side resolver's. glibc's res_nquery on a
 * private res_state was the alternative: nsaddr_list takes three IPv4 servers, timeouts whole
 * seconds. Nothing is cached here: the operator's resolver caches, and a cache above the layer
 * would hide lookups from the limits.
 *
 * What the layer adds to libspf2 1.2.10:
 * - RFC 7208 section 4.6.4 limits over the whole evaluation: libspf2 (max_dns_mech = 10) let 11
 *   DNS mechanisms through, in one record or along an include chain, and has no void limit.
 *   Every query of a DNS-querying term counts (include/redirect TXT, a, mx, ptr, exists, %{p}
 *   PTR), not the identity's own record, the address lookups of MX/PTR targets or the exp= text;
 *   the 11th, or a 3rd answered NXDOMAIN/empty, is not sent: libspf2 is told TRY_AGAIN and the
 *   result is permerror. PTR answers are cut to 10 names (the rest ignored); more than 10 MX
 *   hosts is libspf2's permerror (max_dns_mx = 10).
 * - The deadline (timeout_ms per identity) ends the evaluation the same way, as temperror.
 * - Type SPF (99) is never queried (section 14.1), should a libspf2 build ask for it.
 * - No free pass for loopback clients; the exp= text only for a final fail, from exactly one TXT
 *   record (section 6.2), and no default explanation (libspf2's is an openspf.org URL).
 *
 * Failures: a context that cannot be made gives temperror for both identities and a log line;
 * out of memory aborts (mem.h); libspf2's fatal errors go to log_panic; network text reaches
 * logs through log_str only.
 */
#include "filter_spf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ares.h>
#include <spf2/spf.h>
#include <spf2/spf_dns.h>

#include "clock.h"
#include "dns_answer.h"
#include "log.h"
#include "mem.h"
#include "netaddr.h"
#include "workq.h"

#define MAX_TERMS 10            /* RFC 7208 section 4.6.4: DNS-querying terms per evaluation */
#define MAX_VOIDS 2             /* section 4.6.4: void lookups per evaluation */
#define MAX_NAMES 10            /* section 4.6.4: address lookups per MX or PTR answer */
#define EXPLANATION_MAX 200     /* fits an SMTP reply line with room to spare */
#define PVALUE_MAX 255

/* One borrowed set of libspf2 and resolver state (see the pool in the header comment). */
struct spf_ctx {
    struct spf_ctx *next;           /* in the checker's idle list */
    const struct spf_checker *c;
    ares_channel ch;
    SPF_dns_server_t layer;         /* destroy is NULL, so SPF_server_free() leaves it to us */
    SPF_server_t *spf;              /* resolves through layer */

    /* the evaluation in progress */
    SPF_request_t *req;
    SPF_response_t *resp;           /* the top-level response; its result is final once set */
    long long deadline;             /* clock_mono_ms() */
    int terms, voids;               /* section 4.6.4 counters */
    bool record_fetched;            /* the identity's own TXT query was made */
    bool in_exp;                    /* fetching the exp= text: nothing counts, nothing forced */
    enum spf_result forced;         /* set by a limit or the deadline; SPF_RES_NONE = not set */
    char *follow[MAX_NAMES];        /* MX/PTR targets whose address lookups come next */
    int nfollow, ifollow;

    /* the c-ares query in progress */
    const char *qname;
    int qtype;
    struct dns_result *out;         /* its answer goes here */
    bool answered, cancelled;
};

struct spf_checker {
    struct workq *wq;               /* not owned */
    struct ares_addr_port_node *servers;    /* nservers linked nodes; NULL = resolv.conf */
    size_t nservers;
    char *receiver;                 /* %{r} */
    long long timeout_ms;           /* per identity */
    pthread_mutex_t mu;             /* guards idle */
    struct spf_ctx *idle;           /* contexts no job holds */
    struct spf_query *pending;      /* submitted, done_job() not run yet; loop thread only */
};

struct spf_query {
    struct spf_query *prev, *next;  /* in c->pending */
    struct spf_checker *c;
    atomic_bool cancelled;          /* set on the loop thread, read by the worker */
    struct sockaddr_storage client;
    char *helo, *sender;
    spf_done_fn *done;
    void *arg;
    struct spf_answer ans;          /* written by the worker; read after the workq hand-off */
};

const char *spf_result_name(enum spf_result r)
{
    static const char *const names[] = {
        [SPF_RES_NONE] = "none", [SPF_RES_NEUTRAL] = "neutral", [SPF_RES_PASS] = "pass",
        [SPF_RES_FAIL] = "fail", [SPF_RES_SOFTFAIL] = "softfail",
        [SPF_RES_TEMPERROR] = "temperror", [SPF_RES_PERMERROR] = "permerror",
    };
    return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "temperror";
}

/* ---- libspf2's log handlers ------------------------------------------------------------------ */

__attribute__((noreturn)) static void lib_error(const char *file, int line, const char *msg)
{
    log_panic("libspf2 %s:%d: %s", file != NULL ? file : "?", line, msg != NULL ? msg : "");
}

/* Warnings and chatter name domains and records from the network: log_str escapes them. */
static void lib_say(enum log_level level, const char *msg)
{
    struct logrec lr;
    if (log_begin(&lr, level, "spf_library", NULL)) {
        log_str(&lr, "msg", msg != NULL ? msg : "");
        log_end(&lr);
    }
}

static void lib_warning(const char *file, int line, const char *msg)
{
    (void)file;
    (void)line;
    lib_say(LOG_WARN, msg);
}

static void lib_debug(const char *file, int line, const char *msg)
{
    (void)file;
    (void)line;
    lib_say(LOG_DEBUG, msg);
}

static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;

static void set_handlers(void)
{
    SPF_error_handler = lib_error;
    SPF_warning_handler = lib_warning;
    SPF_info_handler = lib_debug;
    SPF_debug_handler = lib_debug;
}

/* ---- synchronous c-ares ---------------------------------------------------------------------- */

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    struct spf_ctx *x = arg;
    struct dns_result *r = x->out;
    x->answered = true;
    x->cancelled = status == ARES_ECANCELLED;
    if (x->cancelled)
        return;
    switch (x->qtype) {
    case ns_t_txt: dns_answer_txt(r, status, abuf, alen); break;
    case ns_t_a: dns_answer_a(r, status, abuf, alen); break;
    case ns_t_aaaa: dns_answer_addrs(r, ns_t_aaaa, status, abuf, alen); break;
    case ns_t_mx: dns_answer_mx(r, x->qname, status, abuf, alen); break;
    case ns_t_ptr: dns_answer_ptr(r, status, abuf, alen); break;
    default: dns_result_fail(r, DNS_NOTFOUND, false, "type not asked"); break;
    }
}

/* Waits for the channel's sockets or its next timeout, at most until the deadline. */
static void wait_channel(struct spf_ctx *x, long long now)
{
    ares_socket_t socks[ARES_GETSOCK_MAXNUM];
    struct pollfd pfd[ARES_GETSOCK_MAXNUM];
    /* the bit mask read unsigned: ARES_GETSOCK_WRITABLE() shifts a signed 1 into the sign bit */
    unsigned bits = (unsigned)ares_getsock(x->ch, socks, ARES_GETSOCK_MAXNUM);
    nfds_t n = 0;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
        short ev = (short)(((bits >> i) & 1u ? POLLIN : 0)
                           | ((bits >> (i + ARES_GETSOCK_MAXNUM)) & 1u ? POLLOUT : 0));
        if (ev != 0)
            pfd[n++] = (struct pollfd){ .fd = socks[i], .events = ev };
    }
    long long left = x->deadline - now;
    struct timeval max = { .tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000 }, tv;
    struct timeval *t = ares_timeout(x->ch, &max, &tv);
    long long ms = (long long)t->tv_sec * 1000 + (t->tv_usec + 999) / 1000;
    int rc = poll(pfd, n, (int)(ms < 1 ? 1 : ms));
    if (rc < 0 && errno != EINTR)
        log_panic("spf: poll: %s", strerror(errno));
    bool any = false;
    for (nfds_t i = 0; rc > 0 && i < n; i++) {
        short re = pfd[i].revents;
        if (re == 0)
            continue;
        any = true;
        ares_process_fd(x->ch, (re & (POLLIN | POLLERR | POLLHUP)) ? pfd[i].fd : ARES_SOCKET_BAD,
                        (re & POLLOUT) ? pfd[i].fd : ARES_SOCKET_BAD);
    }
    if (!any)
        ares_process_fd(x->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);     /* c-ares's timeouts */
}

/*
 * Asks for name (normalized) and reads the answer into r (which must be empty). False, with r
 * left empty, when the evaluation's deadline passed first.
 */
static bool ask(struct spf_ctx *x, const char *name, int type, struct dns_result *r)
{
    if (clock_mono_ms() >= x->deadline)
        return false;
    x->qname = name;
    x->qtype = type;
    x->out = r;
    x->answered = false;
    ares_query(x->ch, name, ns_c_in, type, on_answer, x);
    while (!x->answered) {
        long long now = clock_mono_ms();
        if (now >= x->deadline)
            ares_cancel(x->ch);     /* calls on_answer with ARES_ECANCELLED */
        else
            wait_channel(x, now);
    }
    return !x->cancelled;
}

/* ---- the libspf2 DNS layer ------------------------------------------------------------------- */

static void follow_clear(struct spf_ctx *x)
{
    for (int i = 0; i < x->nfollow; i++)
        free(x->follow[i]);
    x->nfollow = x->ifollow = 0;
}

/* Ends the evaluation with r (the first reason wins); the exp= fetch never decides anything. */
static void force(struct spf_ctx *x, enum spf_result r)
{
    if (!x->in_exp && x->forced == SPF_RES_NONE)
        x->forced = r;
}

/*
 * Whether a query is one of the DNS-querying terms section 4.6.4 limits, rather than the
 * identity's own record, an address lookup of an MX or PTR target, or the exp= text. libspf2
 * looks up the targets right after the MX/PTR answer, in answer order, so they are recognised
 * by position.
 */
static bool counts(struct spf_ctx *x, const char *name, ns_type type)
{
    if (x->in_exp)
        return false;
    if ((type == ns_t_a || type == ns_t_aaaa) && x->ifollow < x->nfollow
        && strcasecmp(name, x->follow[x->ifollow]) == 0) {
        x->ifollow++;
        return false;
    }
    follow_clear(x);
    if (type == ns_t_txt && !x->record_fetched) {
        x->record_fetched = true;
        return false;
    }
    return true;
}

/* p, which libspf2 returned NULL for only when out of memory. */
static void *need(void *p)
{
    if (p == NULL)
        log_panic("spf: out of memory");
    return p;
}

/* r as libspf2's answer type: no implicit MX (RFC 7208 section 5.4); a null MX matches nothing. */
static SPF_dns_rr_t *to_rr(SPF_dns_server_t *layer, const char *domain, ns_type type,
                           const struct dns_result *r)
{
    bool records = r->status == DNS_OK && !(type == ns_t_mx && r->implicit);
    int herrno = records || r->status == DNS_NULLMX ? NETDB_SUCCESS
                 : r->status == DNS_TEMPFAIL ? TRY_AGAIN : r->nxdomain ? HOST_NOT_FOUND : NO_DATA;
    SPF_dns_rr_t *rr = need(SPF_dns_rr_new_init(layer, domain, type, (int)r->ttl, herrno));
    int n = records ? (int)r->n : 0;
    if (type == ns_t_ptr && n > MAX_NAMES)
        n = MAX_NAMES;      /* section 4.6.4: names past the 10th are ignored */
    for (int i = 0; i < n; i++) {
        const char *s = type == ns_t_mx ? r->mx[i].host : type == ns_t_ptr ? r->names[i]
                        : type == ns_t_txt ? r->txt[i].data : NULL;
        if (SPF_dns_rr_buf_realloc(rr, i, s != NULL ? strlen(s) + 1 : sizeof **rr->rr) != 0)
            log_panic("spf: out of memory");
        if (s != NULL)
            strcpy(rr->rr[i]->txt, s);      /* txt, mx and ptr are one char array */
        else if (type == ns_t_a)
            rr->rr[i]->a = r->a[i];
        else
            rr->rr[i]->aaaa = ((const struct sockaddr_in6 *)&r->addrs[i])->sin6_addr;
    }
    rr->num_rr = n;
    return rr;
}

/* libspf2's lookup hook: every query of an evaluation comes through here. */
static SPF_dns_rr_t *layer_lookup(SPF_dns_server_t *layer, const char *domain, ns_type type,
                                  int should_cache)
{
    (void)should_cache;
    struct spf_ctx *x = layer->hook;
    if (type == ns_t_spf)   /* RFC 7208 section 14.1; Debian's build asks for TXT only */
        return to_rr(layer, domain, type, &(struct dns_result){ .status = DNS_NOTFOUND });
    bool counted = counts(x, domain, type);
    struct dns_result r = { .status = DNS_TEMPFAIL };
    if (x->forced != SPF_RES_NONE && !x->in_exp)
        return to_rr(layer, domain, type, &r);
    if (counted && ++x->terms > MAX_TERMS) {
        force(x, SPF_RES_PERMERROR);
        return to_rr(layer, domain, type, &r);
    }
    char name[DNS_NAME_MAX + 1];
    r.status = DNS_OK;
    if (!dns_name_normalize(domain, name)) {
        dns_result_fail(&r, DNS_NOTFOUND, true, "invalid domain name");
    } else if (!ask(x, name, type, &r)) {
        force(x, SPF_RES_TEMPERROR);
        r.status = DNS_TEMPFAIL;
    }
    bool is_void = (r.status == DNS_NOTFOUND) || (type == ns_t_mx && r.implicit);
    if (counted && is_void && ++x->voids > MAX_VOIDS) {
        force(x, SPF_RES_PERMERROR);
        dns_result_clear(&r);
        r.status = DNS_TEMPFAIL;
    }
    SPF_dns_rr_t *rr = to_rr(layer, domain, type, &r);
    dns_result_clear(&r);
    if ((type == ns_t_mx || type == ns_t_ptr) && rr->herrno == NETDB_SUCCESS) {
        for (int i = 0; i < rr->num_rr && i < MAX_NAMES; i++)
            x->follow[x->nfollow++] = xstrdup(type == ns_t_mx ? rr->rr[i]->mx : rr->rr[i]->ptr);
    }
    return rr;
}

/*
 * Expands an explain-string (RFC 7208 section 6.2: macro-strings and spaces) into out; false on
 * a syntax error. libspf2's macro compiler takes a space for the end of its input, so each
 * macro-string is compiled and expanded on its own and the spaces are kept as they are.
 */
static bool expand_explanation(struct spf_ctx *x, const char *text, struct buf *out)
{
    SPF_response_t *scratch = need(SPF_response_new(x->req));  /* errors in the text: dropped */
    size_t explen = 256;
    char *exp = xmalloc(explen);
    bool ok = true;
    for (const char *p = text; ok && *p != '\0';) {
        size_t n = strcspn(p, " ");
        if (n == 0) {
            buf_putc(out, *p++);
            continue;
        }
        char *piece = xstrndup(p, n);
        SPF_macro_t *mac = NULL;
        /* a compiled macro-string's data follows its header (spf_record.h) */
        ok = SPF_record_compile_macro(x->spf, scratch, &mac, piece) == SPF_E_SUCCESS && mac != NULL
             && SPF_record_expand_data(x->spf, x->req, scratch, (SPF_data_t *)(mac + 1),
                                       mac->macro_len, &exp, &explen) == SPF_E_SUCCESS
             && exp != NULL;
        if (ok)
            buf_puts(out, exp);
        if (mac != NULL)
            SPF_macro_free(mac);
        free(piece);
        p += n;
    }
    free(exp);
    SPF_response_free(scratch);
    return ok;
}

/*
 * libspf2's explanation hook, called with the exp= target (macros expanded) whenever a result
 * other than pass is finished, includes' inner results too. Only the top-level fail gets the
 * text: one TXT record, expanded (section 6.2); any trouble gives no explanation. domain aliases
 * *bufp, which is replaced.
 */
static SPF_errcode_t layer_get_exp(SPF_server_t *spf, const char *domain, char **bufp,
                                   size_t *buflenp)
{
    struct spf_ctx *x = spf->resolver->hook;
    char name[DNS_NAME_MAX + 1];
    bool valid = dns_name_normalize(domain, name);
    struct buf text = BUF_INIT;
    if (valid && x->forced == SPF_RES_NONE && x->resp != NULL
        && x->resp->result == SPF_RESULT_FAIL) {
        x->in_exp = true;
        struct dns_result r = { .status = DNS_OK };
        if (ask(x, name, ns_t_txt, &r) && r.status == DNS_OK && r.n == 1
            && !expand_explanation(x, r.txt[0].data, &text))
            buf_reset(&text);
        dns_result_clear(&r);
        x->in_exp = false;
    }
    free(*bufp);
    *buflenp = text.len + 1;
    *bufp = xstrdup(buf_cstr(&text));
    buf_release(&text);
    return SPF_E_SUCCESS;
}

/* ---- contexts -------------------------------------------------------------------------------- */

static void ctx_free(struct spf_ctx *x)
{
    if (x->spf != NULL)
        SPF_server_free(x->spf);
    if (x->ch != NULL)
        ares_destroy(x->ch);
    follow_clear(x);
    free(x);
}

/* A new context for c; NULL with a message in err. Runs on any thread. */
static struct spf_ctx *ctx_new(const struct spf_checker *c, struct buf *err)
{
    struct spf_ctx *x = xcalloc(1, sizeof *x);
    x->c = c;
    struct ares_options opt;
    memset(&opt, 0, sizeof opt);
    opt.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
    /* two tries (t, then 2t) fit the budget; the deadline cuts whatever c-ares would add */
    opt.timeout = (int)(c->timeout_ms / 3 > 0 ? c->timeout_ms / 3 : 1);
    opt.tries = 2;
    int rc = ares_init_options(&x->ch, &opt, ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        x->ch = NULL;
    } else if (c->nservers > 0) {
        rc = ares_set_servers_ports(x->ch, c->servers);
    }
    if (rc != ARES_SUCCESS) {
        buf_printf(err, "c-ares: %s", ares_strerror(rc));
        ctx_free(x);
        return NULL;
    }
    x->layer.lookup = layer_lookup;
    x->layer.get_exp = layer_get_exp;
    x->layer.name = "mxgate";
    x->layer.hook = x;
    x->spf = SPF_server_new_dns(&x->layer, 0);
    SPF_response_t *resp = NULL;
    bool ok = x->spf != NULL && SPF_server_set_rec_dom(x->spf, c->receiver) == SPF_E_SUCCESS
              && SPF_server_set_explanation(x->spf, "", &resp) == SPF_E_SUCCESS;
    if (resp != NULL)
        SPF_response_free(resp);
    if (!ok) {
        buf_puts(err, "libspf2: cannot set up a server");
        ctx_free(x);
        return NULL;
    }
    SPF_server_set_max_dns_mech(x->spf, MAX_TERMS);
    SPF_server_set_max_dns_mx(x->spf, MAX_NAMES);
    SPF_server_set_max_dns_ptr(x->spf, MAX_NAMES);
    return x;
}

/* Borrows an idle context, or makes one; NULL (logged) if it cannot be made. */
static struct spf_ctx *ctx_take(struct spf_checker *c)
{
    pthread_mutex_lock(&c->mu);
    struct spf_ctx *x = c->idle;
    if (x != NULL)
        c->idle = x->next;
    pthread_mutex_unlock(&c->mu);
    if (x == NULL) {
        struct buf err = BUF_INIT;
        x = ctx_new(c, &err);
        if (x == NULL)
            log_msg(LOG_ERR, "spf_setup", NULL, "%s", buf_cstr(&err));
        buf_release(&err);
    }
    return x;
}

static void ctx_give(struct spf_checker *c, struct spf_ctx *x)
{
    pthread_mutex_lock(&c->mu);
    x->next = c->idle;
    c->idle = x;
    pthread_mutex_unlock(&c->mu);
}

/* ---- evaluation ------------------------------------------------------------------------------ */

/*
 * Whether s can be check_host()'s <domain>: a multi-label DNS name of letters, digits, hyphens
 * and underscores whose last label is not all digits (RFC 7208 section 4.3; an address literal
 * or a bare IP address is not one).
 */
static bool is_domain(const char *s)
{
    char name[DNS_NAME_MAX + 1];
    const char *last;
    if (!dns_name_normalize(s, name) || (last = strrchr(name, '.')) == NULL)
        return false;
    return name[strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-_.")] == '\0'
           && last[1 + strspn(last + 1, "0123456789")] != '\0';
}

static enum spf_result from_lib(SPF_result_t r)
{
    static const enum spf_result map[] = {
        [SPF_RESULT_INVALID] = SPF_RES_TEMPERROR,   /* nothing was decided */
        [SPF_RESULT_NEUTRAL] = SPF_RES_NEUTRAL, [SPF_RESULT_PASS] = SPF_RES_PASS,
        [SPF_RESULT_FAIL] = SPF_RES_FAIL, [SPF_RESULT_SOFTFAIL] = SPF_RES_SOFTFAIL,
        [SPF_RESULT_NONE] = SPF_RES_NONE, [SPF_RESULT_TEMPERROR] = SPF_RES_TEMPERROR,
        [SPF_RESULT_PERMERROR] = SPF_RES_PERMERROR,
    };
    return (unsigned)r < sizeof map / sizeof map[0] ? map[r] : SPF_RES_TEMPERROR;
}

/*
 * The result when the identity's own record could not be had (SPF_server_get_record() failed
 * with err): none for no record (section 4.5), temperror for a DNS failure, permerror for
 * several records or one that does not compile (section 4.6).
 */
static enum spf_result record_error(SPF_response_t *resp, SPF_errcode_t err)
{
    if (resp->result == SPF_RESULT_PERMERROR)
        return SPF_RES_PERMERROR;
    if (err == SPF_E_DNS_ERROR)
        return SPF_RES_TEMPERROR;
    if (resp->result == SPF_RESULT_NONE)
        return SPF_RES_NONE;
    for (int i = 0; i < SPF_response_messages(resp); i++) {
        SPF_error_t *e = SPF_response_message(resp, i);
        if (SPF_error_errorp(e) && SPF_error_code(e) != SPF_E_NOT_SPF)
            return SPF_RES_PERMERROR;   /* the compiler's complaint */
    }
    return err == SPF_E_NOT_SPF ? SPF_RES_NONE : SPF_RES_TEMPERROR;
}

/*
 * check_host(client, domain, mailbox) of RFC 7208 section 4 on context x; helo feeds %{h}. On a
 * fail with an explanation, *explanation gets it (malloc'd, sanitized).
 */
static enum spf_result evaluate(struct spf_ctx *x, const struct sockaddr *client, const char *helo,
                                const char *mailbox, const char *domain, char **explanation)
{
    if (!is_domain(domain))
        return SPF_RES_NONE;
    SPF_request_t *req = need(SPF_request_new(x->spf));
    if (client->sa_family == AF_INET) {
        SPF_request_set_ipv4(req, ((const struct sockaddr_in *)client)->sin_addr);
    } else {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)client)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            struct in_addr a4;
            memcpy(&a4, &a6->s6_addr[12], sizeof a4);
            SPF_request_set_ipv4(req, a4);
        } else {
            SPF_request_set_ipv6(req, *a6);
        }
    }
    if (SPF_request_set_helo_dom(req, helo) != SPF_E_SUCCESS
        || SPF_request_set_env_from(req, mailbox) != SPF_E_SUCCESS)
        log_panic("spf: out of memory");
    req->cur_dom = req->env_from_dp;
    SPF_response_t *resp = need(SPF_response_new(req));
    x->req = req;
    x->resp = resp;
    x->deadline = clock_mono_ms() + x->c->timeout_ms;
    x->terms = x->voids = 0;
    x->record_fetched = x->in_exp = false;
    x->forced = SPF_RES_NONE;
    follow_clear(x);

    /* what SPF_request_query_mailfrom() does, without its pass for loopback clients */
    enum spf_result res;
    SPF_record_t *rec = NULL;
    SPF_errcode_t err = SPF_server_get_record(x->spf, req, resp, &rec);
    if (err == SPF_E_SUCCESS) {
        resp->spf_record_exp = rec;
        SPF_record_interpret(rec, req, resp, 0);
        res = from_lib(resp->result);
    } else {
        res = record_error(resp, err);
    }
    if (rec != NULL)
        SPF_record_free(rec);
    if (x->forced != SPF_RES_NONE)
        res = x->forced;
    if (res == SPF_RES_FAIL && resp->explanation != NULL && resp->explanation[0] != '\0') {
        struct buf b = BUF_INIT;
        buf_append_sanitized(&b, resp->explanation, strlen(resp->explanation), EXPLANATION_MAX);
        *explanation = buf_steal(&b);
    }
    x->req = NULL;
    x->resp = NULL;
    follow_clear(x);
    SPF_response_free(resp);
    SPF_request_free(req);
    return res;
}

/* The workq job: both identities, on a borrowed context. */
static void run_job(void *arg)
{
    struct spf_query *q = arg;
    struct spf_answer *a = &q->ans;
    const char *at = strrchr(q->sender, '@');
    a->mailfrom_domain = xstrdup(q->sender[0] == '\0' ? q->helo : at != NULL ? at + 1 : q->sender);
    a->helo = a->mailfrom = SPF_RES_NONE;
    if (atomic_load(&q->cancelled))
        return;
    const struct sockaddr *client = (const struct sockaddr *)&q->client;
    if (client->sa_family != AF_INET && client->sa_family != AF_INET6)
        return;
    struct spf_ctx *x = ctx_take(q->c);
    if (x == NULL) {
        a->helo = a->mailfrom = SPF_RES_TEMPERROR;
        return;
    }
    struct buf mailbox = BUF_INIT;
    buf_printf(&mailbox, "postmaster@%s", q->helo);
    char *helo_exp = NULL, *from_exp = NULL;
    a->helo = evaluate(x, client, q->helo, buf_cstr(&mailbox), q->helo, &helo_exp);
    if (q->sender[0] == '\0') {
        a->mailfrom = a->helo;      /* the same check_host() call: section 2.4 */
    } else if (!atomic_load(&q->cancelled)) {
        a->mailfrom = evaluate(x, client, q->helo, q->sender, a->mailfrom_domain, &from_exp);
    }
    ctx_give(q->c, x);
    buf_release(&mailbox);
    if (from_exp != NULL) {     /* only a fail has one; the MAIL FROM one first */
        free(helo_exp);
        helo_exp = from_exp;
    }
    a->explanation = helo_exp;
}

static void query_free(struct spf_query *q)
{
    free(q->helo);
    free(q->sender);
    free(q->ans.explanation);
    free(q->ans.mailfrom_domain);
    free(q);
}

static void unlink_query(struct spf_query *q)
{
    if (q->prev != NULL)
        q->prev->next = q->next;
    else
        q->c->pending = q->next;
    if (q->next != NULL)
        q->next->prev = q->prev;
}

/* The loop side of a finished job. */
static void done_job(void *arg)
{
    struct spf_query *q = arg;
    unlink_query(q);
    if (!atomic_load(&q->cancelled))
        q->done(&q->ans, q->arg);
    query_free(q);
}

/* ---- the public side ------------------------------------------------------------------------- */

/* Parses dns.servers into c->servers, as lib/dns.c reads the same setting. */
static bool parse_servers(struct spf_checker *c, const struct strlist *servers, struct buf *err)
{
    c->nservers = servers != NULL ? servers->n : 0;
    if (c->nservers == 0)
        return true;
    c->servers = xcalloc(c->nservers, sizeof *c->servers);
    for (size_t i = 0; i < c->nservers; i++) {
        struct ares_addr_port_node *nd = &c->servers[i];
        char *host = NULL;
        int port = 0;
        bool ok = netaddr_split(servers->v[i], &host, &port, 53) && port > 0;
        if (ok && inet_pton(AF_INET, host, &nd->addr.addr4) == 1)
            nd->family = AF_INET;
        else if (ok && inet_pton(AF_INET6, host, &nd->addr.addr6) == 1)
            nd->family = AF_INET6;
        else
            ok = false;
        free(host);
        if (!ok) {
            buf_puts(err, "bad DNS server '");
            buf_append_sanitized(err, servers->v[i], strlen(servers->v[i]), 100);
            buf_puts(err, "': expected ip, ip:port or [ipv6]:port");
            return false;
        }
        nd->udp_port = nd->tcp_port = port;
        nd->next = i + 1 < c->nservers ? &c->servers[i + 1] : NULL;
    }
    return true;
}

struct spf_checker *spf_checker_new(struct workq *wq, const struct strlist *dns_servers,
                                    const char *receiver_name, long long timeout_ms,
                                    struct buf *err)
{
    if (wq == NULL) {
        buf_puts(err, "SPF checks need a worker queue");
        return NULL;
    }
    if (timeout_ms < 1 || timeout_ms > 3600 * 1000) {
        buf_printf(err, "bad SPF timeout %lld ms (1 ms..1 h)", timeout_ms);
        return NULL;
    }
    int rc = ares_library_init(ARES_LIB_INIT_ALL);     /* spf_checker_free() cleans up */
    if (rc != ARES_SUCCESS) {
        buf_printf(err, "c-ares: %s", ares_strerror(rc));
        return NULL;
    }
    pthread_once(&handlers_once, set_handlers);
    struct spf_checker *c = xcalloc(1, sizeof *c);
    c->wq = wq;
    c->timeout_ms = timeout_ms;
    c->receiver = xstrdup(receiver_name != NULL && receiver_name[0] != '\0' ? receiver_name
                                                                              : "unknown");
    pthread_mutex_init(&c->mu, NULL);
    /* one context now, so that a set-up problem is reported here rather than per check */
    if (!parse_servers(c, dns_servers, err) || (c->idle = ctx_new(c, err)) == NULL) {
        spf_checker_free(c);
        return NULL;
    }
    return c;
}

void spf_checker_free(struct spf_checker *c)
{
    if (c == NULL)
        return;
    while (c->pending != NULL) {
        struct spf_query *q = c->pending;
        unlink_query(q);
        query_free(q);
    }
    while (c->idle != NULL) {
        struct spf_ctx *x = c->idle;
        c->idle = x->next;
        ctx_free(x);
    }
    ares_library_cleanup();
    pthread_mutex_destroy(&c->mu);
    free(c->servers);
    free(c->receiver);
    free(c);
}

struct spf_query *spf_check(struct spf_checker *c, const struct sockaddr *client, const char *helo,
                            const char *sender, spf_done_fn *done, void *arg)
{
    struct spf_query *q = xcalloc(1, sizeof *q);
    q->c = c;
    atomic_init(&q->cancelled, false);
    memcpy(&q->client, client, client->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                               : client->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                               : sizeof client->sa_family);
    q->helo = xstrdup(helo != NULL ? helo : "");
    q->sender = xstrdup(sender != NULL ? sender : "");
    q->done = done;
    q->arg = arg;
    q->next = c->pending;
    if (q->next != NULL)
        q->next->prev = q;
    c->pending = q;
    workq_submit(c->wq, run_job, done_job, q);
    return q;
}

void spf_cancel(struct spf_query *q)
{
    if (q != NULL)
        atomic_store(&q->cancelled, true);
}

/* ---- Authentication-Results ------------------------------------------------------------------ */

/* RFC 2045 token characters: printable ASCII but space and tspecials. */
static bool token_char(unsigned char ch)
{
    return ch > 0x20 && ch < 0x7f && strchr("()<>@,;:\\\"/[]?=", ch) == NULL;
}

/* An RFC 8601 pvalue: s as a token when it is one, else as a quoted-string. */
static void put_pvalue(struct buf *out, const char *s)
{
    size_t len = strlen(s);
    bool cut = len > PVALUE_MAX;
    if (cut)
        len = PVALUE_MAX;
    bool token = len > 0;
    for (size_t i = 0; i < len && token; i++)
        token = token_char((unsigned char)s[i]);
    if (!token)
        buf_putc(out, '"');
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            buf_putc(out, '\\');
        buf_putc(out, ch >= 0x20 && ch < 0x7f ? (char)ch : '?');
    }
    if (cut)
        buf_puts(out, "...");
    if (!token)
        buf_putc(out, '"');
}

void spf_auth_results(const struct spf_answer *a, const char *sender, const char *helo,
                      struct buf *out)
{
    if (sender != NULL && sender[0] != '\0') {
        const char *at = strrchr(sender, '@');
        buf_printf(out, "spf=%s smtp.mailfrom=", spf_result_name(a->mailfrom));
        put_pvalue(out, at != NULL ? at + 1 : sender);
    } else {
        buf_printf(out, "spf=%s smtp.helo=", spf_result_name(a->helo));
        put_pvalue(out, helo != NULL ? helo : "");
    }
}
