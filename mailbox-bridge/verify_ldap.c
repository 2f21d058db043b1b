/*
 * verify_ldap.c - recipient verification by an LDAP search (verify.h has the contract,
 * verify_sources.h the settings): a simple bind (RFC 4513 §5.1; anonymous when bind_dn is ""),
 * then one subtree search per address under search_base, its filter made from the template with
 * every value escaped as RFC 4515 §3 says, asking for no attributes ("1.1", RFC 4511 §4.5.1.8)
 * and at most one entry.
 *
 * libldap runs asynchronously on the caller's libevent loop: the connection is opened with
 * LDAP_OPT_CONNECT_ASYNC and the bind goes out once the socket is writable; every operation is
 * sent by message id, and whenever the socket is readable ldap_result() with a zero timeout
 * collects what has arrived. Once connected the socket is non-blocking, so a server that stops
 * reading cannot stall the loop: a request libldap could not write whole drops the connection.
 * Searches wait for the bind result (RFC 4511 §4.2.1), then any number share the one connection
 * and results are matched to lookups by message id. Referrals are not chased (that would connect
 * synchronously). Nothing blocks: the uri's host must be an IP address (libldap resolves names
 * with getaddrinfo) and ldaps:// is refused (libldap's TLS handshake polls), so the uri is
 * ldap://IP[:port] or ldapi://. SIGPIPE is ignored unless the program handles it (liblber
 * writes with write(2)).
 *
 * Owns: the LDAP handle and its socket event (one connection, made on the first lookup and again
 * after a failure, at most once a second), every lookup in flight with its timer, and the answers
 * waiting for delivery. Answers are delivered from an event of their own, so no caller code runs
 * while libldap's state is being walked.
 *
 * Fails soft: an entry is EXISTS (a sizeLimitExceeded result implies one); a search that ends
 * with none (success, or noSuchObject for the base) is DUNNO; any other result or the lookup's
 * timeout (the search is abandoned) is TEMPFAIL for that lookup. A failed connection or bind, a
 * lost connection, a Notice of Disconnection, or a lookup that times out while the server has
 * said nothing since it was sent answers TEMPFAIL to every lookup in flight and drops the
 * connection; lookups in the second after a connection attempt began then answer TEMPFAIL at once
 * rather than retry. The server's text reaches the log sanitised.
 */
#include "verify_sources.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <ldap.h>

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "mem.h"

#define VL_RETRY_MS 1000            /* least time between two connection attempts */
#define VL_TEXT_MAX 200             /* server text kept in a log line */

enum vl_state {
    VL_IDLE,                        /* no connection */
    VL_CONNECTING,                  /* connect in progress: waiting for the socket to be writable */
    VL_BINDING,                     /* bind sent, its result not yet in */
    VL_READY,                       /* bound: searches go out as they come */
};

struct vl_lookup {
    struct vl_source *src;          /* owner */
    const struct smtp_path *path;   /* the caller's, valid until done is called (logs only) */
    char *filter;                   /* the search filter, values escaped (owned) */
    int msgid;                      /* the search's message id; -1 until sent */
    bool found;                     /* an entry came back */
    enum verify_answer answer;      /* set when answered, delivered later */
    long long started_ms;           /* monotonic, for the log line */
    unsigned long long heard_at_send;  /* src->heard when the search went out */
    struct event *timer;            /* the lookup's own deadline (owned; NULL once answered) */
    verify_done_fn *done;
    void *arg;
    struct vl_lookup *prev, *next;  /* in src's pending list, or (next only) its answered list */
};

struct vl_source {
    struct verify_source vs;        /* first member: the interface handed out */
    struct event_base *base;        /* the caller's loop (not owned) */
    char *uri;                      /* ldap://IP[:port] or ldapi:// (owned copies, like the rest) */
    char *bind_dn;                  /* "" binds anonymously */
    char *bind_pw;
    char *search_base;
    char *tmpl;                     /* filter template, checked at construction */
    long long timeout_ms;           /* bound on each lookup */
    LDAP *ld;                       /* the connection; NULL when VL_IDLE */
    enum vl_state state;
    int bind_msgid;                 /* the bind in flight (VL_BINDING, or queued in libldap) */
    bool bind_queued;               /* VL_CONNECTING: libldap holds the bind until it can write it */
    struct event *io;               /* the connection's socket: write while connecting, then read */
    long long connect_ms;           /* when the last connection attempt began (monotonic) */
    unsigned long long heard;       /* messages received from servers so far */
    struct vl_lookup *head, *tail;  /* pending lookups in arrival order */
    struct vl_lookup *ans_head, *ans_tail;  /* answered lookups waiting for delivery */
    struct event *deliver;          /* runs the done callbacks of answered lookups */
    bool delivering;                /* vl_deliver is calling done callbacks */
    bool closing;                   /* free() has begun: new lookups fail at once */
};

static const char *const vl_no_attrs[] = { LDAP_NO_ATTRS, NULL };

static void vl_send(struct vl_source *v, struct vl_lookup *lk);

/* ---- answers ---- */

/* Ends lk with a: it leaves the pending list and waits for vl_deliver, which calls done. */
static void vl_answer(struct vl_lookup *lk, enum verify_answer a)
{
    struct vl_source *v = lk->src;
    if (lk->prev != NULL)
        lk->prev->next = lk->next;
    else
        v->head = lk->next;
    if (lk->next != NULL)
        lk->next->prev = lk->prev;
    else
        v->tail = lk->prev;
    event_free(lk->timer);
    lk->timer = NULL;
    free(lk->filter);
    lk->filter = NULL;
    lk->answer = a;
    lk->prev = lk->next = NULL;
    if (v->ans_tail != NULL)
        v->ans_tail->next = lk;
    else
        v->ans_head = lk;
    v->ans_tail = lk;
    event_active(v->deliver, EV_TIMEOUT, 0);
}

/* Takes the oldest answered lookup off the list and calls its done; false when none is left. */
static bool vl_deliver_one(struct vl_source *v)
{
    struct vl_lookup *lk = v->ans_head;
    if (lk == NULL)
        return false;
    v->ans_head = lk->next;
    if (v->ans_head == NULL)
        v->ans_tail = NULL;
    verify_done_fn *done = lk->done;
    void *arg = lk->arg;
    enum verify_answer a = lk->answer;
    free(lk);
    done(a, arg);
    return true;
}

static void vl_release(struct vl_source *v);

/* Calls done for every answered lookup; a done that frees the source leaves the release to here. */
static void vl_deliver(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct vl_source *v = arg;
    v->delivering = true;
    while (!v->closing && vl_deliver_one(v))
        ;
    v->delivering = false;
    if (v->closing)
        vl_release(v);
}

/* ---- logs ---- */

/* Adds the server's diagnostic text (network input) to a log line, escaped and cut. */
static void vl_log_text(struct logrec *lr, const char *key, const char *text)
{
    if (text == NULL || text[0] == '\0')
        return;
    struct buf b = BUF_INIT;
    buf_append_sanitized(&b, text, strlen(text), VL_TEXT_MAX);
    log_str(lr, key, buf_cstr(&b));
    buf_release(&b);
}

/* The diagnostic message libldap keeps for the last operation on ld (a server's or its own). */
static void vl_log_ld_text(struct logrec *lr, LDAP *ld)
{
    char *text = NULL;
    if (ld != NULL && ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &text) == LDAP_OPT_SUCCESS) {
        vl_log_text(lr, "detail", text);
        ldap_memfree(text);
    }
}

/* One WARN line for a lookup answered TEMPFAIL on its own (not with the whole connection). */
static void vl_log_lookup(struct vl_lookup *lk, const char *error, int code, const char *text)
{
    struct logrec lr;
    if (!log_begin(&lr, LOG_WARN, "verify_ldap_failed", NULL))
        return;
    log_str(&lr, "rcpt", lk->path->mailbox != NULL ? lk->path->mailbox : "");
    log_str(&lr, "error", error);
    if (code != LDAP_SUCCESS) {
        log_int(&lr, "code", code);
        log_str(&lr, "result", ldap_err2string(code));
    }
    vl_log_text(&lr, "detail", text);
    log_int(&lr, "ms", clock_mono_ms() - lk->started_ms);
    log_end(&lr);
}

/* ---- the connection ---- */

/* Closes the connection, if any; lookups stay pending (the caller answers them). */
static void vl_drop(struct vl_source *v)
{
    if (v->io != NULL) {
        event_free(v->io);
        v->io = NULL;
    }
    if (v->ld != NULL) {
        ldap_unbind_ext(v->ld, NULL, NULL);
        v->ld = NULL;
    }
    v->state = VL_IDLE;
    for (struct vl_lookup *lk = v->head; lk != NULL; lk = lk->next)
        lk->msgid = -1;
}

/*
 * The connection failed: logs why (error, and code / ld's diagnostic when known), drops it and
 * answers TEMPFAIL to every pending lookup. A loss with nothing pending is only INFO: servers
 * close idle connections.
 */
static void vl_fail_all(struct vl_source *v, const char *error, int code, const char *text)
{
    struct logrec lr;
    if (log_begin(&lr, v->head != NULL ? LOG_WARN : LOG_INFO, "verify_ldap_down", NULL)) {
        log_str(&lr, "uri", v->uri);
        log_str(&lr, "error", error);
        if (code != LDAP_SUCCESS) {
            log_int(&lr, "code", code);
            log_str(&lr, "result", ldap_err2string(code));
        }
        if (text != NULL)
            vl_log_text(&lr, "detail", text);
        else
            vl_log_ld_text(&lr, v->ld);
        int n = 0;
        for (struct vl_lookup *lk = v->head; lk != NULL; lk = lk->next)
            n++;
        log_int(&lr, "pending", n);
        log_end(&lr);
    }
    vl_drop(v);
    while (v->head != NULL)
        vl_answer(v->head, VERIFY_TEMPFAIL);
}

/* libldap's result code for the last operation on ld. */
static int vl_ld_errno(LDAP *ld)
{
    int code = LDAP_OTHER;
    if (ld != NULL)
        ldap_get_option(ld, LDAP_OPT_RESULT_CODE, &code);
    return code;
}

static void vl_io(evutil_socket_t fd, short what, void *arg);

/* (Re)arms the socket event: EV_WRITE once while connecting, then EV_READ for good. */
static bool vl_watch(struct vl_source *v, short what)
{
    int fd = -1;
    if (ldap_get_option(v->ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS || fd < 0)
        return false;
    if (v->io != NULL) {
        event_free(v->io);
        v->io = NULL;
    }
    if (what & EV_READ) {
        /* Connected: from here on a write that cannot complete must not wait (see the header). */
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
            return false;
    }
    v->io = event_new(v->base, fd, what, vl_io, v);
    if (v->io == NULL || event_add(v->io, NULL) != 0)
        return false;
    return true;
}

/* Waits for the connect to finish; queued = libldap already holds the bind. */
static void vl_wait_connect(struct vl_source *v, bool queued)
{
    v->state = VL_CONNECTING;
    v->bind_queued = queued;
    if (!vl_watch(v, EV_WRITE))
        vl_fail_all(v, "cannot watch the connection's socket", LDAP_SUCCESS, "");
}

/*
 * Sends the bind. While the connect is in progress libldap either says LDAP_X_CONNECTING (call
 * again once the socket is writable) or takes the bind and keeps it unwritten (LDAP_BUSY as its
 * result code) until an ldap_result() finds the socket writable; both wait for EV_WRITE.
 */
static void vl_bind(struct vl_source *v)
{
    const char *dn = v->bind_dn;
    struct berval cred = { 0, NULL };
    if (dn[0] != '\0') {
        cred.bv_val = v->bind_pw;
        cred.bv_len = strlen(v->bind_pw);
    }
    int msgid = -1;
    int rc = ldap_sasl_bind(v->ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, &msgid);
    if (rc == LDAP_X_CONNECTING) {
        vl_wait_connect(v, false);
        return;
    }
    if (rc != LDAP_SUCCESS) {
        vl_fail_all(v, "cannot connect", rc, NULL);
        return;
    }
    v->bind_msgid = msgid;
    if (vl_ld_errno(v->ld) == LDAP_BUSY) {
        vl_wait_connect(v, true);
        return;
    }
    v->state = VL_BINDING;
    if (!vl_watch(v, EV_READ | EV_PERSIST))
        vl_fail_all(v, "cannot watch the connection's socket", LDAP_SUCCESS, "");
}

static void vl_read(struct vl_source *v);

/* The socket became writable while connecting: the connect ended, well or not. */
static void vl_connected(struct vl_source *v)
{
    int fd = -1, soerr = 0;
    socklen_t len = sizeof soerr;
    if (ldap_get_option(v->ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS || fd < 0
        || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
        soerr = EBADF;
    if (soerr != 0) {
        vl_fail_all(v, "cannot connect", LDAP_CONNECT_ERROR, strerror(soerr));
        return;
    }
    if (!v->bind_queued) {
        vl_bind(v);
        return;
    }
    v->state = VL_BINDING;
    if (!vl_watch(v, EV_READ | EV_PERSIST)) {
        vl_fail_all(v, "cannot watch the connection's socket", LDAP_SUCCESS, "");
        return;
    }
    vl_read(v);     /* its first ldap_result() writes the bind */
}

static void vl_connect(struct vl_source *v)
{
    v->connect_ms = clock_mono_ms();
    LDAP *ld = NULL;
    int rc = ldap_initialize(&ld, v->uri);
    if (rc != LDAP_SUCCESS || ld == NULL) {
        vl_fail_all(v, "ldap_initialize failed", rc, "");
        return;
    }
    v->ld = ld;
    int version = LDAP_VERSION3;
    struct timeval net = { (time_t)(v->timeout_ms / 1000), (suseconds_t)(v->timeout_ms % 1000 * 1000) };
    if (ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version) != LDAP_OPT_SUCCESS
        || ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF) != LDAP_OPT_SUCCESS
        || ldap_set_option(ld, LDAP_OPT_CONNECT_ASYNC, LDAP_OPT_ON) != LDAP_OPT_SUCCESS
        || ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &net) != LDAP_OPT_SUCCESS) {
        vl_fail_all(v, "ldap_set_option failed", LDAP_SUCCESS, "");
        return;
    }
    vl_bind(v);
}

/* The bind result: on success every queued search goes out. */
static void vl_bound(struct vl_source *v, LDAPMessage *msg)
{
    int code = LDAP_OTHER;
    char *text = NULL;
    int rc = ldap_parse_result(v->ld, msg, &code, NULL, &text, NULL, NULL, 0);
    if (rc != LDAP_SUCCESS || code != LDAP_SUCCESS) {
        char what[300];
        snprintf(what, sizeof what, "bind as \"%.200s\" refused", v->bind_dn);
        vl_fail_all(v, rc != LDAP_SUCCESS ? "malformed bind response" : what,
                    rc != LDAP_SUCCESS ? rc : code, text != NULL ? text : "");
        ldap_memfree(text);
        return;
    }
    ldap_memfree(text);
    v->state = VL_READY;
    /* vl_send may drop the connection, which answers every lookup: then the walk stops. */
    struct vl_lookup *next;
    for (struct vl_lookup *lk = v->head; lk != NULL && v->state == VL_READY; lk = next) {
        next = lk->next;
        if (lk->msgid < 0)
            vl_send(v, lk);
    }
}

/* A search's final result: the lookup's answer. */
static void vl_search_done(struct vl_source *v, struct vl_lookup *lk, LDAPMessage *msg)
{
    int code = LDAP_OTHER;
    char *text = NULL;
    int rc = ldap_parse_result(v->ld, msg, &code, NULL, &text, NULL, NULL, 0);
    if (rc != LDAP_SUCCESS) {
        vl_log_lookup(lk, "malformed search result", rc, NULL);
        vl_answer(lk, VERIFY_TEMPFAIL);
    } else if (lk->found || code == LDAP_SIZELIMIT_EXCEEDED) {
        vl_answer(lk, VERIFY_EXISTS);
    } else if (code == LDAP_SUCCESS || code == LDAP_NO_SUCH_OBJECT) {
        vl_answer(lk, VERIFY_DUNNO);
    } else {
        vl_log_lookup(lk, "search failed", code, text);
        vl_answer(lk, VERIFY_TEMPFAIL);
    }
    ldap_memfree(text);
}

static struct vl_lookup *vl_find(struct vl_source *v, int msgid)
{
    for (struct vl_lookup *lk = v->head; lk != NULL; lk = lk->next)
        if (lk->msgid == msgid)
            return lk;
    return NULL;
}

/* Handles one message; false when it ended the connection. */
static bool vl_message(struct vl_source *v, int type, LDAPMessage *msg)
{
    int id = ldap_msgid(msg);
    if (id == 0) {
        /* Unsolicited (RFC 4511 §4.4): the only one defined says the server is closing. */
        int code = LDAP_OTHER;
        char *text = NULL;
        ldap_parse_result(v->ld, msg, &code, NULL, &text, NULL, NULL, 0);
        vl_fail_all(v, "notice of disconnection", code, text != NULL ? text : "");
        ldap_memfree(text);
        return false;
    }
    struct vl_lookup *lk;
    switch (type) {
    case LDAP_RES_BIND:
        if (v->state == VL_BINDING && id == v->bind_msgid)
            vl_bound(v, msg);
        break;
    case LDAP_RES_SEARCH_ENTRY:
        if ((lk = vl_find(v, id)) != NULL)
            lk->found = true;
        break;
    case LDAP_RES_SEARCH_RESULT:
        if ((lk = vl_find(v, id)) != NULL)
            vl_search_done(v, lk, msg);
        break;
    default:
        break;      /* references and anything else: not an answer */
    }
    return v->ld != NULL;
}

/* Collects everything libldap can hand over without waiting. */
static void vl_read(struct vl_source *v)
{
    while (v->ld != NULL) {
        LDAPMessage *msg = NULL;
        struct timeval zero = { 0, 0 };
        int type = ldap_result(v->ld, LDAP_RES_ANY, LDAP_MSG_ONE, &zero, &msg);
        if (type == 0)
            return;
        if (type < 0) {
            if (msg != NULL)
                ldap_msgfree(msg);
            vl_fail_all(v, "connection lost", vl_ld_errno(v->ld), NULL);
            return;
        }
        v->heard++;
        bool alive = vl_message(v, type, msg);
        ldap_msgfree(msg);
        if (!alive)
            return;
    }
}

static void vl_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct vl_source *v = arg;
    if (v->state == VL_CONNECTING)
        vl_connected(v);
    else
        vl_read(v);
}

/* ---- lookups ---- */

static void vl_send(struct vl_source *v, struct vl_lookup *lk)
{
    int msgid = -1;
    int rc = ldap_search_ext(v->ld, v->search_base, LDAP_SCOPE_SUBTREE, lk->filter, (char **)vl_no_attrs,
                             1, NULL, NULL, NULL, 1, &msgid);
    if (rc != LDAP_SUCCESS) {       /* the filter was checked at construction: the connection failed */
        vl_fail_all(v, "search not sent", rc, NULL);
        return;
    }
    lk->msgid = msgid;
    lk->heard_at_send = v->heard;
    if (vl_ld_errno(v->ld) == LDAP_BUSY)      /* the socket took only part of it: server not reading */
        vl_fail_all(v, "the server does not read its requests", LDAP_BUSY, "");
}

static void vl_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct vl_lookup *lk = arg;
    struct vl_source *v = lk->src;
    long long left = lk->started_ms + v->timeout_ms - clock_mono_ms();
    if (left > 0) {
        /* libevent's coarse monotonic clock can fire a few ms early: wait out the rest. */
        struct timeval tv = { (time_t)(left / 1000), (suseconds_t)(left % 1000 * 1000) };
        evtimer_add(lk->timer, &tv);
        return;
    }
    /* Silent since this lookup was sent (or never got connected and bound): the server is gone. */
    bool silent = v->state != VL_READY || lk->msgid < 0 || v->heard == lk->heard_at_send;
    vl_log_lookup(lk, silent ? "timed out, no answer from the server" : "timed out", LDAP_SUCCESS, NULL);
    if (lk->msgid >= 0 && v->ld != NULL)
        ldap_abandon_ext(v->ld, lk->msgid, NULL, NULL);
    if (silent && v->ld != NULL)
        vl_fail_all(v, "no answer within the timeout", LDAP_TIMEOUT, "");     /* answers lk too */
    else
        vl_answer(lk, VERIFY_TEMPFAIL);
}

/* Appends s to f escaped as an RFC 4515 assertion value. */
static void vl_put_value(struct buf *f, const char *s)
{
    struct berval in = { s != NULL ? strlen(s) : 0, (char *)(s != NULL ? s : "") };
    struct berval out = { 0, NULL };
    if (ldap_bv2escaped_filter_value(&in, &out) != 0)
        log_panic("verify_ldap: ldap_bv2escaped_filter_value failed");
    if (out.bv_val != NULL) {
        buf_append(f, out.bv_val, out.bv_len);
        ber_memfree(out.bv_val);
    }
}

/* The filter for p: the template with %s, %u, %d replaced (escaped) and %% made '%'. */
static char *vl_filter(const char *tmpl, const struct smtp_path *p)
{
    struct buf f = BUF_INIT;
    for (const char *t = tmpl; *t != '\0'; t++) {
        if (*t != '%') {
            buf_putc(&f, *t);
            continue;
        }
        t++;
        switch (*t) {
        case 's':
            vl_put_value(&f, p->mailbox);
            break;
        case 'u':
            vl_put_value(&f, p->local);
            break;
        case 'd':
            vl_put_value(&f, p->domain);
            break;
        default:            /* '%': the template was checked at construction */
            buf_putc(&f, '%');
            break;
        }
    }
    return buf_steal(&f);
}

static void vl_lookup(struct verify_source *src, const struct smtp_path *p, verify_done_fn *done, void *arg)
{
    struct vl_source *v = (struct vl_source *)src;
    if (v->closing) {
        done(VERIFY_TEMPFAIL, arg);
        return;
    }
    long long now = clock_mono_ms();
    if (v->ld == NULL && now - v->connect_ms < VL_RETRY_MS) {
        log_msg(LOG_DEBUG, "verify_ldap_retry_wait", NULL, "%s: last connection attempt %lld ms ago",
                v->uri, now - v->connect_ms);
        done(VERIFY_TEMPFAIL, arg);
        return;
    }
    struct vl_lookup *lk = xcalloc(1, sizeof *lk);
    lk->src = v;
    lk->path = p;
    lk->filter = vl_filter(v->tmpl, p);
    lk->msgid = -1;
    lk->started_ms = now;
    lk->done = done;
    lk->arg = arg;
    lk->timer = evtimer_new(v->base, vl_timeout, lk);
    struct timeval tv = { (time_t)(v->timeout_ms / 1000), (suseconds_t)(v->timeout_ms % 1000 * 1000) };
    if (lk->timer == NULL || evtimer_add(lk->timer, &tv) != 0)
        log_panic("verify_ldap: cannot add a timer");
    lk->prev = v->tail;
    if (v->tail != NULL)
        v->tail->next = lk;
    else
        v->head = lk;
    v->tail = lk;
    if (v->ld == NULL)
        vl_connect(v);
    else if (v->state == VL_READY)
        vl_send(v, lk);
}

static void vl_release(struct vl_source *v)
{
    event_free(v->deliver);
    free(v->uri);
    free(v->bind_dn);
    free(v->bind_pw);
    free(v->search_base);
    free(v->tmpl);
    free(v);
}

static void vl_free(struct verify_source *src)
{
    struct vl_source *v = (struct vl_source *)src;
    v->closing = true;
    vl_drop(v);
    while (v->head != NULL)
        vl_answer(v->head, VERIFY_TEMPFAIL);
    while (vl_deliver_one(v))
        ;
    if (!v->delivering)         /* else a done callback freed us: vl_deliver releases v on return */
        vl_release(v);
}

/* ---- construction ---- */

/* Checks uri as the header says: one ldap://IP[:port] or ldapi:// URL with nothing after the host. */
static bool vl_check_uri(const char *uri, struct buf *err)
{
    if (!ldap_is_ldap_url(uri) && !ldap_is_ldapi_url(uri)) {
        buf_puts(err, "ldap uri must start with ldap:// or ldapi:// (ldaps:// is not supported)");
        return false;
    }
    LDAPURLDesc *lud = NULL;
    int rc = ldap_url_parse(uri, &lud);
    if (rc != LDAP_URL_SUCCESS) {
        buf_printf(err, "ldap uri is not a valid LDAP URL (ldap_url_parse error %d)", rc);
        return false;
    }
    bool ok = false;
    if (lud->lud_port < 0 || lud->lud_port > 65535) {
        buf_puts(err, "ldap uri port must be 1 to 65535");
    } else if (strcasecmp(lud->lud_scheme, "ldap") != 0 && strcasecmp(lud->lud_scheme, "ldapi") != 0) {
        buf_printf(err, "ldap uri scheme %s is not supported (libldap's TLS handshake would block): use "
                   "ldap:// or ldapi://", lud->lud_scheme);
    } else if ((lud->lud_dn != NULL && lud->lud_dn[0] != '\0') || lud->lud_attrs != NULL
               || lud->lud_filter != NULL || lud->lud_exts != NULL) {
        buf_puts(err, "ldap uri must name only the server (the search base and filter are settings of "
                 "their own)");
    } else if (strcasecmp(lud->lud_scheme, "ldap") == 0) {
        unsigned char addr[sizeof(struct in6_addr)];
        const char *h = lud->lud_host;
        if (h == NULL || h[0] == '\0')
            buf_puts(err, "ldap uri has no host");
        else if (inet_pton(AF_INET, h, addr) != 1 && inet_pton(AF_INET6, h, addr) != 1)
            buf_printf(err, "ldap uri host must be an IP address, not %s (libldap resolves names with a "
                       "blocking getaddrinfo)", h);
        else
            ok = true;
    } else {
        ok = true;
    }
    ldap_free_urldesc(lud);
    return ok;
}

/* Checks the template's % sequences, then that it makes a valid filter (libldap encodes a trial one). */
static bool vl_check_template(const char *tmpl, const char *uri, struct buf *err)
{
    if (tmpl[0] == '\0') {
        buf_puts(err, "ldap filter template is empty");
        return false;
    }
    bool names = false;
    for (const char *t = tmpl; *t != '\0'; t++) {
        if (*t != '%')
            continue;
        t++;
        if (*t == 's' || *t == 'u' || *t == 'd') {
            names = true;
        } else if (*t != '%') {
            if (*t == '\0')
                buf_puts(err, "ldap filter template ends with a lone %");
            else
                buf_printf(err, "ldap filter template has an unknown sequence %%%c (use %%s, %%u, %%d or "
                           "%%%%)", *t);
            return false;
        }
    }
    if (!names) {
        buf_puts(err, "ldap filter template does not use the address (%s, %u or %d)");
        return false;
    }
    struct smtp_path trial = { .local = "x", .domain = "x.test", .mailbox = "x@x.test" };
    char *filter = vl_filter(tmpl, &trial);
    LDAP *ld = NULL;
    bool ok = false;
    if (ldap_initialize(&ld, uri) != LDAP_SUCCESS || ld == NULL) {
        buf_puts(err, "ldap_initialize refused the uri");
    } else {
        struct berval enc = { 0, NULL };
        int rc = ldap_create_assertion_control_value(ld, filter, &enc);
        if (rc != LDAP_SUCCESS)
            buf_printf(err, "ldap filter template does not make a valid RFC 4515 filter (tried %s)", filter);
        else
            ok = true;
        ber_memfree(enc.bv_val);
    }
    if (ld != NULL)
        ldap_unbind_ext(ld, NULL, NULL);
    free(filter);
    return ok;
}

struct verify_source *verify_ldap_new(struct event_base *base, const char *uri, const char *bind_dn,
                                      const char *bind_password, const char *search_base,
                                      const char *filter_template, long long timeout_ms, struct buf *err)
{
    buf_reset(err);
    if (uri == NULL || !vl_check_uri(uri, err))
        return NULL;
    if (filter_template == NULL || !vl_check_template(filter_template, uri, err))
        return NULL;
    if (timeout_ms <= 0) {
        buf_puts(err, "ldap timeout must be positive");
        return NULL;
    }
    if (search_base == NULL) {
        buf_puts(err, "ldap search base is missing");
        return NULL;
    }
    /*
     * liblber writes with write(2): a server gone away would kill the process with SIGPIPE instead
     * of failing the request. Left alone if the program installed its own handling.
     */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
    struct vl_source *v = xcalloc(1, sizeof *v);
    v->vs.name = "ldap";
    v->vs.cacheable = true;
    v->vs.lookup = vl_lookup;
    v->vs.free = vl_free;
    v->base = base;
    v->uri = xstrdup(uri);
    v->bind_dn = xstrdup(bind_dn != NULL ? bind_dn : "");
    v->bind_pw = xstrdup(bind_password != NULL ? bind_password : "");
    v->search_base = xstrdup(search_base);
    v->tmpl = xstrdup(filter_template);
    v->timeout_ms = timeout_ms;
    v->state = VL_IDLE;
    v->connect_ms = clock_mono_ms() - VL_RETRY_MS;
    v->deliver = event_new(base, -1, 0, vl_deliver, v);
    if (v->deliver == NULL)
        log_panic("verify_ldap: event_new failed");
    return &v->vs;
}
