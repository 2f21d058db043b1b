/*
 * verify_webadmin.c - recipient verification against Apache James's WebAdmin API (verify.h has the
 * contract, verify_sources.h the settings): HEAD {url}/users/{address}, the address escaped as one
 * path segment (RFC 3986 §2.1), over HTTP/1.1 or HTTP/2 (RFC 9110 §9.3.2 for HEAD).
 *
 * libcurl's multi interface runs on the caller's libevent loop: curl says which sockets to watch
 * (socket callback) and when to wake it (timer callback), and the loop hands readiness back through
 * curl_multi_socket_action. Nothing here blocks; names go through curl's threaded resolver.
 *
 * Owns: one multi handle per source (its connection cache keeps connections to James for the next
 * lookup), one easy handle per lookup in flight, one event per socket curl watches, and the timer.
 *
 * Fails soft: 200 or 204 is EXISTS, 404 is DUNNO, and any other status, a connection or TLS
 * failure or the timeout is TEMPFAIL (logged with the status or curl's error). Redirects are not
 * followed: a 3xx is a misconfigured url, not an answer.
 */
#include "verify_sources.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "clock.h"
#include "log.h"
#include "mem.h"

struct wa_lookup;
struct wa_sock;

struct wa_source {
    struct verify_source vs;        /* first member: the interface handed out */
    struct event_base *base;        /* the caller's loop (not owned) */
    CURLM *multi;                   /* all lookups of this source; holds the connection cache */
    struct event *timer;            /* wakes curl when its timer callback asked for it */
    char *url;                      /* "http[s]://host[:port][/prefix]", no trailing '/' */
    struct curl_slist *headers;     /* "Authorization: Bearer ...", or NULL without a token */
    long long timeout_ms;           /* whole-lookup bound (CURLOPT_TIMEOUT_MS) */
    struct wa_lookup *lookups;      /* lookups in flight, doubly linked */
    struct wa_sock *socks;          /* sockets curl asked us to watch, doubly linked */
    int busy;                       /* depth of our loop callbacks currently on the stack */
    bool dying;                     /* free() was called: no new lookups, release when not busy */
};

struct wa_lookup {
    struct wa_source *src;          /* owner */
    CURL *easy;                     /* this request (owned) */
    const struct smtp_path *path;   /* the caller's, valid until done is called */
    verify_done_fn *done;
    void *arg;
    long long started_ms;           /* monotonic, for the log line */
    char errbuf[CURL_ERROR_SIZE];   /* curl's detailed error text */
    struct wa_lookup *prev, *next;
};

struct wa_sock {
    struct wa_source *src;          /* owner */
    curl_socket_t fd;               /* curl's socket (curl opens and closes it) */
    struct event *ev;               /* readiness for it on the loop */
    struct wa_sock *prev, *next;
};

static pthread_once_t wa_global_once = PTHREAD_ONCE_INIT;
static CURLcode wa_global_rc = CURLE_FAILED_INIT;

/* curl_global_init is not thread-safe and must run once per process before any other curl call. */
static void wa_global_init(void)
{
    wa_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void wa_release(struct wa_source *src);

/* ---- sockets and the timer: curl's requests mapped onto libevent ---- */

static void wa_collect(struct wa_source *src);

/* Hands control to curl for fd (or for its timer with CURL_SOCKET_TIMEOUT), then answers what ended. */
static void wa_drive(struct wa_source *src, curl_socket_t fd, int ev_bitmask)
{
    int running = 0;
    src->busy++;
    CURLMcode mc = curl_multi_socket_action(src->multi, fd, ev_bitmask, &running);
    if (mc != CURLM_OK)
        log_msg(LOG_ERR, "verify_webadmin_curl", NULL, "curl_multi_socket_action: %s",
                curl_multi_strerror(mc));
    wa_collect(src);
    src->busy--;
    if (src->dying && src->busy == 0)
        wa_release(src);
}

static void wa_sock_event(evutil_socket_t fd, short what, void *arg)
{
    struct wa_source *src = arg;
    int mask = ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    wa_drive(src, fd, mask);
}

static void wa_timer_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    wa_drive(arg, CURL_SOCKET_TIMEOUT, 0);
}

static void wa_sock_free(struct wa_sock *ws)
{
    struct wa_source *src = ws->src;
    event_free(ws->ev);
    if (ws->prev != NULL)
        ws->prev->next = ws->next;
    else
        src->socks = ws->next;
    if (ws->next != NULL)
        ws->next->prev = ws->prev;
    free(ws);
}

/* CURLMOPT_SOCKETFUNCTION: watch s for what curl asks (or stop watching it). */
static int wa_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    struct wa_source *src = userp;
    struct wa_sock *ws = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (ws != NULL)
            wa_sock_free(ws);
        return 0;
    }
    if (ws == NULL) {
        ws = xcalloc(1, sizeof *ws);
        ws->src = src;
        ws->fd = s;
        ws->ev = event_new(src->base, s, 0, wa_sock_event, src);
        if (ws->ev == NULL)
            log_panic("verify_webadmin: event_new failed");
        ws->next = src->socks;
        if (src->socks != NULL)
            src->socks->prev = ws;
        src->socks = ws;
        curl_multi_assign(src->multi, s, ws);
    } else {
        event_del(ws->ev);
    }
    short flags = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0)
                  | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    event_assign(ws->ev, src->base, s, flags, wa_sock_event, src);
    if (event_add(ws->ev, NULL) != 0)
        log_panic("verify_webadmin: event_add failed for fd %d", (int)s);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: curl wants to be woken in ms (0: on the next loop turn; -1: never). */
static int wa_timer_cb(CURLM *multi, long ms, void *userp)
{
    (void)multi;
    struct wa_source *src = userp;
    if (ms < 0) {
        evtimer_del(src->timer);
        return 0;
    }
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    if (evtimer_add(src->timer, &tv) != 0)
        log_panic("verify_webadmin: evtimer_add failed");
    return 0;
}

/* ---- lookups ---- */

/* Takes l out of curl and out of the list, frees it, then answers its caller. */
static void wa_finish(struct wa_lookup *l, enum verify_answer a)
{
    struct wa_source *src = l->src;
    curl_multi_remove_handle(src->multi, l->easy);
    curl_easy_cleanup(l->easy);
    if (l->prev != NULL)
        l->prev->next = l->next;
    else
        src->lookups = l->next;
    if (l->next != NULL)
        l->next->prev = l->prev;
    verify_done_fn *done = l->done;
    void *arg = l->arg;
    free(l);
    done(a, arg);
}

/* One WARN line for a lookup that could not be answered; the address is escaped by log_str. */
static void wa_log_failure(struct wa_lookup *l, long status, CURLcode rc)
{
    struct logrec lr;
    if (!log_begin(&lr, LOG_WARN, "verify_webadmin_failed", NULL))
        return;
    log_str(&lr, "rcpt", l->path->mailbox);
    if (rc != CURLE_OK) {
        log_str(&lr, "error", curl_easy_strerror(rc));
        if (l->errbuf[0] != '\0')
            log_str(&lr, "detail", l->errbuf);
    } else {
        log_int(&lr, "status", status);
    }
    char *ip = NULL;
    long port = 0;
    if (curl_easy_getinfo(l->easy, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK && ip != NULL && ip[0] != '\0') {
        log_str(&lr, "peer_ip", ip);
        if (curl_easy_getinfo(l->easy, CURLINFO_PRIMARY_PORT, &port) == CURLE_OK)
            log_int(&lr, "peer_port", port);
    }
    log_int(&lr, "ms", clock_mono_ms() - l->started_ms);
    log_end(&lr);
}

/* Answers every transfer curl reports finished. Stops once the source is being freed. */
static void wa_collect(struct wa_source *src)
{
    CURLMsg *msg;
    int left;
    while (!src->dying && (msg = curl_multi_info_read(src->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        struct wa_lookup *l = (struct wa_lookup *)(void *)priv;
        if (l == NULL)
            log_panic("verify_webadmin: finished transfer without its lookup");
        CURLcode rc = msg->data.result;
        long status = 0;
        enum verify_answer a = VERIFY_TEMPFAIL;
        if (rc == CURLE_OK) {
            curl_easy_getinfo(l->easy, CURLINFO_RESPONSE_CODE, &status);
            if (status == 200 || status == 204)
                a = VERIFY_EXISTS;
            else if (status == 404)
                a = VERIFY_DUNNO;
        }
        if (a == VERIFY_TEMPFAIL)
            wa_log_failure(l, status, rc);
        wa_finish(l, a);
    }
}

/* Sets one option; a failure means libcurl lacks something this file relies on. */
#define WA_SETOPT(easy, opt, val) \
    do { if (curl_easy_setopt((easy), (opt), (val)) != CURLE_OK) goto setopt_failed; } while (0)

static void wa_lookup(struct verify_source *vs, const struct smtp_path *p, verify_done_fn *done, void *arg)
{
    struct wa_source *src = (struct wa_source *)vs;
    if (src->dying) {
        done(VERIFY_TEMPFAIL, arg);
        return;
    }
    /* No mailbox (the null path) is never a user. */
    if (p->mailbox == NULL || p->mailbox[0] == '\0') {
        done(VERIFY_DUNNO, arg);
        return;
    }
    CURL *easy = curl_easy_init();
    if (easy == NULL) {
        log_msg(LOG_ERR, "verify_webadmin_curl", NULL, "curl_easy_init failed");
        done(VERIFY_TEMPFAIL, arg);
        return;
    }
    struct wa_lookup *l = xcalloc(1, sizeof *l);
    l->src = src;
    l->easy = easy;
    l->path = p;
    l->done = done;
    l->arg = arg;
    l->started_ms = clock_mono_ms();

    /* curl_easy_escape keeps only RFC 3986 unreserved bytes: '/', '@', '%', '?' stay in the segment. */
    char *seg = curl_easy_escape(easy, p->mailbox, (int)strlen(p->mailbox));
    if (seg == NULL) {
        log_msg(LOG_ERR, "verify_webadmin_curl", NULL, "curl_easy_escape failed");
        goto fail;
    }
    struct buf u = BUF_INIT;
    buf_printf(&u, "%s/users/%s", src->url, seg);
    curl_free(seg);
    CURLcode urc = curl_easy_setopt(easy, CURLOPT_URL, buf_cstr(&u));   /* curl copies it */
    buf_release(&u);
    if (urc != CURLE_OK)
        goto setopt_failed;

    WA_SETOPT(easy, CURLOPT_PRIVATE, (void *)l);
    WA_SETOPT(easy, CURLOPT_ERRORBUFFER, l->errbuf);
    WA_SETOPT(easy, CURLOPT_NOBODY, 1L);
    WA_SETOPT(easy, CURLOPT_NOSIGNAL, 1L);
    WA_SETOPT(easy, CURLOPT_TIMEOUT_MS, (long)src->timeout_ms);
    WA_SETOPT(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    WA_SETOPT(easy, CURLOPT_FOLLOWLOCATION, 0L);
    WA_SETOPT(easy, CURLOPT_USERAGENT, "mxgate-verify");
    /* Without it, ending a transfer whose name is still being resolved (its timeout, free()) joins
     * the resolver thread and so blocks the loop for as long as getaddrinfo takes; with it the
     * thread is detached and cleans up after itself. */
    WA_SETOPT(easy, CURLOPT_QUICK_EXIT, 1L);
    if (src->headers != NULL)
        WA_SETOPT(easy, CURLOPT_HTTPHEADER, src->headers);

    l->next = src->lookups;
    if (src->lookups != NULL)
        src->lookups->prev = l;
    src->lookups = l;
    /* Starts nothing by itself: curl asks for a timer of 0 and the loop takes it from there. */
    CURLMcode mc = curl_multi_add_handle(src->multi, easy);
    if (mc != CURLM_OK) {
        log_msg(LOG_ERR, "verify_webadmin_curl", NULL, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
        wa_finish(l, VERIFY_TEMPFAIL);
    }
    return;

setopt_failed:
    log_msg(LOG_ERR, "verify_webadmin_curl", NULL, "curl_easy_setopt failed");
fail:
    curl_easy_cleanup(easy);
    free(l);
    done(VERIFY_TEMPFAIL, arg);
}

/* ---- construction and release ---- */

/* Frees everything once no lookup is left and none of our callbacks is on the stack. */
static void wa_release(struct wa_source *src)
{
    if (src->multi != NULL)
        curl_multi_cleanup(src->multi);     /* may still call wa_socket_cb to drop cached connections */
    while (src->socks != NULL)
        wa_sock_free(src->socks);
    if (src->timer != NULL)
        event_free(src->timer);
    curl_slist_free_all(src->headers);
    free(src->url);
    free(src);
}

/* Answers every pending lookup TEMPFAIL, then releases (now, or when our callback on the stack returns). */
static void wa_free(struct verify_source *vs)
{
    struct wa_source *src = (struct wa_source *)vs;
    if (src->dying)
        return;
    src->dying = true;
    while (src->lookups != NULL)
        wa_finish(src->lookups, VERIFY_TEMPFAIL);
    if (src->busy == 0)
        wa_release(src);
}

/* Checks url as verify_sources.h describes it; returns a copy without its trailing '/', or NULL with err. */
static char *wa_check_url(const char *url, struct buf *err)
{
    if (url == NULL || url[0] == '\0') {
        buf_puts(err, "webadmin url is empty");
        return NULL;
    }
    if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0) {
        buf_puts(err, "webadmin url must start with http:// or https://");
        return NULL;
    }
    for (const char *c = url; *c != '\0'; c++) {
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c == 0x7f) {
            buf_puts(err, "webadmin url must not contain spaces or control characters");
            return NULL;
        }
    }
    CURLU *h = curl_url();
    if (h == NULL)
        log_panic("verify_webadmin: curl_url failed");
    char *host = NULL, *query = NULL, *fragment = NULL;
    CURLUcode uc = curl_url_set(h, CURLUPART_URL, url, 0);
    bool ok = false;
    if (uc != CURLUE_OK)
        buf_printf(err, "webadmin url is not a valid URL: %s", curl_url_strerror(uc));
    else if (curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK || host == NULL || host[0] == '\0')
        buf_puts(err, "webadmin url has no host");
    else if (curl_url_get(h, CURLUPART_QUERY, &query, 0) == CURLUE_OK
             || curl_url_get(h, CURLUPART_FRAGMENT, &fragment, 0) == CURLUE_OK)
        buf_puts(err, "webadmin url must not have a query or a fragment");
    else
        ok = true;
    curl_free(host);
    curl_free(query);
    curl_free(fragment);
    curl_url_cleanup(h);
    if (!ok)
        return NULL;
    size_t n = strlen(url);
    if (url[n - 1] == '/')
        n--;
    return xstrndup(url, n);
}

struct verify_source *verify_webadmin_new(struct event_base *base, const char *url, const char *token,
                                          long long timeout_ms, struct buf *err)
{
    buf_reset(err);
    pthread_once(&wa_global_once, wa_global_init);
    if (wa_global_rc != CURLE_OK) {
        buf_printf(err, "libcurl: curl_global_init: %s", curl_easy_strerror(wa_global_rc));
        return NULL;
    }
    if (timeout_ms <= 0) {
        buf_puts(err, "webadmin timeout must be positive");
        return NULL;
    }
    if (token != NULL) {
        for (const char *c = token; *c != '\0'; c++) {
            if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7f) {
                buf_puts(err, "webadmin token must not contain control characters");
                return NULL;
            }
        }
    }
    char *clean = wa_check_url(url, err);
    if (clean == NULL)
        return NULL;

    struct wa_source *src = xcalloc(1, sizeof *src);
    src->vs.name = "webadmin";
    src->vs.cacheable = true;
    src->vs.lookup = wa_lookup;
    src->vs.free = wa_free;
    src->base = base;
    src->url = clean;
    src->timeout_ms = timeout_ms;
    if (token != NULL && token[0] != '\0') {
        struct buf h = BUF_INIT;
        buf_printf(&h, "Authorization: Bearer %s", token);
        src->headers = curl_slist_append(NULL, buf_cstr(&h));   /* curl copies the string */
        buf_release(&h);
        if (src->headers == NULL)
            log_panic("verify_webadmin: curl_slist_append failed");
    }
    src->timer = evtimer_new(base, wa_timer_event, src);
    if (src->timer == NULL)
        log_panic("verify_webadmin: evtimer_new failed");
    src->multi = curl_multi_init();
    if (src->multi == NULL) {
        buf_puts(err, "libcurl: curl_multi_init failed");
        wa_release(src);
        return NULL;
    }
    if (curl_multi_setopt(src->multi, CURLMOPT_SOCKETFUNCTION, wa_socket_cb) != CURLM_OK
        || curl_multi_setopt(src->multi, CURLMOPT_SOCKETDATA, src) != CURLM_OK
        || curl_multi_setopt(src->multi, CURLMOPT_TIMERFUNCTION, wa_timer_cb) != CURLM_OK
        || curl_multi_setopt(src->multi, CURLMOPT_TIMERDATA, src) != CURLM_OK) {
        buf_puts(err, "libcurl: curl_multi_setopt failed");
        wa_release(src);
        return NULL;
    }
    return &src->vs;
}
