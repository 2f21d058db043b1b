/*
 * verify_lmtp.c - recipient verification by an LMTP RCPT probe of the mailbox tier
 * (verify_sources.h): LHLO once per connection, then per probe MAIL FROM:<>, RCPT TO:<address>,
 * RSET (RFC 2033, RFC 5321; the three in one write under PIPELINING, RFC 2920; SMTPUTF8 on MAIL
 * for a non-ASCII address, RFC 6531, which is answered DUNNO unasked when the server does not
 * offer it). The RCPT reply is the answer; it is given once RSET is answered, with the connection
 * back in the pool, so that the caller's next probe reuses it.
 *
 * Owns: one pool per target string (kept for the source's lifetime: targets come from the
 * configuration, so they are few), each with its connections (at most CONN_MAX, of which at most
 * IDLE_MAX idle, each idle one for idle_ms at most) and a FIFO of probes waiting for one; a copy
 * of lhlo_name; a libevent DNS base, made on the first target that is a host name. Borrows: the
 * event base, each probe's path (until its done callback).
 *
 * Failures: anything that goes wrong before the RCPT reply (refused connection, unusable target,
 * a greeting, LHLO or MAIL reply that is not 2xx, a malformed reply, a lost connection, the
 * probe's timeout) answers VERIFY_TEMPFAIL, closes the connection and is logged once with the
 * target; server text reaches the log only sanitised. A reused connection the server dropped
 * while idle, found out before any reply to the probe, is replaced once rather than answering
 * TEMPFAIL. A RSET that fails closes the connection; the probe's answer stands.
 *
 * Reentrancy: done callbacks may call lookup() or free(). Every entry from the loop (and lookup)
 * counts itself in depth; free() inside a callback answers and closes at once but releases memory
 * only when the outermost entry returns. Connections are closed at once and freed from a deferred
 * event, never inside their own bufferevent callback (but for free() called from a done callback:
 * libevent holds a reference on a bufferevent while its callback runs, so that is safe).
 */
#include "verify_sources.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "log.h"
#include "mem.h"
#include "netaddr.h"
#include "smtp_reply.h"

#define LMTP_PORT 24
#define CONN_MAX 16         /* connections per target, idle or busy */
#define IDLE_MAX 8          /* idle connections kept per target */

enum conn_state {
    CS_CONNECTING,      /* connect (and name lookup) in progress */
    CS_GREETING,        /* waiting for the 220 */
    CS_LHLO,            /* LHLO sent */
    CS_READY,           /* between commands, inside this file's own call chain only */
    CS_MAIL,            /* MAIL sent (RCPT too when pipelining) */
    CS_RCPT,            /* waiting for the RCPT reply */
    CS_RSET,            /* the RCPT reply is in the probe; waiting for the RSET reply */
    CS_IDLE,            /* in the pool's idle list */
};

static const char *const state_names[] = {
    "connect", "greeting", "LHLO", "ready", "MAIL", "RCPT", "RSET", "idle",
};

/* One lookup, from lookup() to its done callback. */
struct lmtp_probe {
    TAILQ_ENTRY(lmtp_probe) link;       /* in src->pending */
    TAILQ_ENTRY(lmtp_probe) qlink;      /* in pool->waiting while queued */
    struct lmtp_src *src;
    struct lmtp_pool *pool;
    struct lmtp_conn *conn;             /* the connection asking for it, or NULL */
    bool queued;                        /* waiting for a connection */
    bool retried;                       /* already moved off a stale reused connection once */
    const char *mailbox;                /* borrowed from the caller's path */
    bool utf8;                          /* the address has non-ASCII characters */
    enum verify_answer answer;          /* from the RCPT reply, given once RSET is answered */
    verify_done_fn *done;
    void *arg;
    struct event *timer;                /* the probe's deadline, timeout_ms after lookup() */
};

/* One LMTP connection of a pool. */
struct lmtp_conn {
    TAILQ_ENTRY(lmtp_conn) link;        /* in pool->conns */
    TAILQ_ENTRY(lmtp_conn) idle_link;   /* in pool->idle while CS_IDLE */
    struct lmtp_pool *pool;
    struct bufferevent *bev;
    struct event *timer;                /* idle expiry */
    enum conn_state state;
    struct lmtp_probe *probe;           /* the probe in hand, or NULL */
    struct smtp_reply reply;            /* the reply being read */
    bool pipelining;                    /* LHLO offered PIPELINING */
    bool smtputf8;                      /* LHLO offered SMTPUTF8 */
    bool pipelined;                     /* RCPT went out with MAIL */
    bool reused;                        /* the probe in hand is not the connection's first */
    bool heard;                         /* bytes arrived since the probe in hand started */
    bool dead;                          /* closed; waiting in src->dead to be freed */
    struct lmtp_conn *next_dead;
};

TAILQ_HEAD(probe_list, lmtp_probe);
TAILQ_HEAD(conn_list, lmtp_conn);

/* The connections and the waiting probes of one target string. */
struct lmtp_pool {
    TAILQ_ENTRY(lmtp_pool) link;        /* in src->pools */
    struct lmtp_src *src;
    char *target;                       /* "host[:port]", "unix:/path" or "/path" */
    struct conn_list conns;             /* every open connection */
    struct conn_list idle;              /* the idle ones, most recently used first */
    unsigned nconns, nidle;
    struct probe_list waiting;          /* probes waiting for a connection, oldest first */
    bool pumping;                       /* pump() is running: a nested call leaves it to that loop */
};

TAILQ_HEAD(pool_list, lmtp_pool);

struct lmtp_src {
    struct verify_source vs;            /* first, so that a verify_source * is a lmtp_src * */
    struct event_base *base;
    verify_target_fn *target;
    void *target_arg;
    char *lhlo_name;
    long long timeout_ms;
    long long idle_ms;                  /* how long an idle connection is kept */
    struct evdns_base *dns;             /* for targets that are host names; NULL until needed */
    struct pool_list pools;
    struct probe_list pending;          /* every probe not yet answered */
    struct lmtp_conn *dead;             /* closed connections not yet freed */
    struct event *reaper;               /* frees them from the loop */
    int depth;                          /* entries from the loop or lookup() in progress */
    bool dying;                         /* free() ran; release when depth drops to 0 */
};

static void pump(struct lmtp_pool *pool);

/* ---- entries, answers, closing ---- */

/* Frees the closed connections; from the reaper event, or when the source goes. */
static void free_dead(struct lmtp_src *s)
{
    while (s->dead != NULL) {
        struct lmtp_conn *c = s->dead;
        s->dead = c->next_dead;
        bufferevent_free(c->bev);
        event_free(c->timer);
        free(c);
    }
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    free_dead(arg);
}

static void src_release(struct lmtp_src *s)
{
    free_dead(s);
    struct lmtp_pool *pool;
    while ((pool = TAILQ_FIRST(&s->pools)) != NULL) {
        TAILQ_REMOVE(&s->pools, pool, link);
        free(pool->target);
        free(pool);
    }
    if (s->dns != NULL)
        evdns_base_free(s->dns, 0);
    event_free(s->reaper);
    free(s->lhlo_name);
    free(s);
}

/* Ends an entry (begun by depth++); the source may be gone afterwards. */
static void src_leave(struct lmtp_src *s)
{
    if (--s->depth == 0 && s->dying)
        src_release(s);
}

/* Calls the probe's done callback after forgetting it; the caller's state must be consistent. */
static void probe_answer(struct lmtp_probe *pr, enum verify_answer a)
{
    struct lmtp_src *s = pr->src;
    TAILQ_REMOVE(&s->pending, pr, link);
    if (pr->queued)
        TAILQ_REMOVE(&pr->pool->waiting, pr, qlink);
    if (pr->conn != NULL)
        pr->conn->probe = NULL;
    event_free(pr->timer);
    verify_done_fn *done = pr->done;
    void *arg = pr->arg;
    free(pr);
    done(a, arg);
}

/* Takes the oldest waiting probe off the queue. */
static struct lmtp_probe *dequeue(struct lmtp_pool *pool)
{
    struct lmtp_probe *pr = TAILQ_FIRST(&pool->waiting);
    if (pr != NULL) {
        TAILQ_REMOVE(&pool->waiting, pr, qlink);
        pr->queued = false;
    }
    return pr;
}

static void attach(struct lmtp_conn *c, struct lmtp_probe *pr)
{
    c->probe = pr;
    pr->conn = c;
    c->heard = false;
}

/* Stops using c, detaching its probe (which the caller answers or queues again), and schedules
 * it to be freed. quit: say QUIT first, for a connection with nothing outstanding. */
static void conn_close(struct lmtp_conn *c, bool quit)
{
    if (c->dead)
        return;
    struct lmtp_pool *pool = c->pool;
    struct lmtp_src *s = pool->src;
    if (c->probe != NULL) {
        c->probe->conn = NULL;
        c->probe = NULL;
    }
    if (c->state == CS_IDLE) {
        TAILQ_REMOVE(&pool->idle, c, idle_link);
        pool->nidle--;
    }
    TAILQ_REMOVE(&pool->conns, c, link);
    pool->nconns--;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (quit && fd >= 0 && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        (void)send(fd, "QUIT\r\n", 6, MSG_DONTWAIT | MSG_NOSIGNAL);     /* a courtesy: no reply awaited */
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    event_del(c->timer);
    smtp_reply_release(&c->reply);
    c->dead = true;
    c->next_dead = s->dead;
    s->dead = c;
    event_active(s->reaper, EV_TIMEOUT, 1);
}

/* Logs why a connection to the pool's target failed: one line per failure. */
static void log_failure(struct lmtp_pool *pool, enum log_level lvl, const char *phase, const char *error)
{
    struct logrec lr;
    if (log_begin(&lr, lvl, "verify-lmtp-failed", NULL)) {
        log_str(&lr, "target", pool->target);
        log_str(&lr, "phase", phase);
        log_str(&lr, "error", error);
        log_end(&lr);
    }
}

/*
 * Closes c after a failure and answers its probe TEMPFAIL (or, for a reused connection the
 * server had dropped, queues the probe again once); then lets waiting probes use the freed slot.
 * stale: the failure is a lost connection, which a dropped idle connection looks like.
 */
static void conn_fail(struct lmtp_conn *c, bool stale, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conn_fail(struct lmtp_conn *c, bool stale, const char *fmt, ...)
{
    struct lmtp_pool *pool = c->pool;
    struct lmtp_src *s = pool->src;
    struct lmtp_probe *pr = c->probe;
    struct buf why = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&why, fmt, ap);
    va_end(ap);
    bool retry = pr != NULL && stale && c->reused && !c->heard && !pr->retried;
    log_failure(pool, retry ? LOG_DEBUG : LOG_WARN, state_names[c->state], buf_cstr(&why));
    buf_release(&why);
    conn_close(c, false);
    if (retry) {
        pr->retried = true;
        pr->queued = true;
        TAILQ_INSERT_HEAD(&pool->waiting, pr, qlink);
    } else if (pr != NULL) {
        probe_answer(pr, VERIFY_TEMPFAIL);
    }
    if (!s->dying)
        pump(pool);
}

/* The reply in hand as "code status text", sanitised, for a log line. */
static void reply_describe(const struct smtp_reply *r, struct buf *out)
{
    char status[16];
    struct buf text = BUF_INIT;
    smtp_reply_status(r, status, &text);
    buf_printf(out, "%d %s %s", r->code, status, buf_cstr(&text));
    buf_release(&text);
}

/* Closes c after a reply it cannot go on from (see conn_fail). */
static void conn_fail_reply(struct lmtp_conn *c, const char *what)
{
    struct buf d = BUF_INIT;
    reply_describe(&c->reply, &d);
    conn_fail(c, false, "%s: %s", what, buf_cstr(&d));
    buf_release(&d);
}

/* ---- commands ---- */

static void send_cmd(struct lmtp_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void send_cmd(struct lmtp_conn *c, const char *fmt, ...)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(out, fmt, ap);
    va_end(ap);
    evbuffer_add(out, "\r\n", 2);
}

/* Starts the transaction of the probe in hand on a connection past LHLO: under PIPELINING,
 * MAIL, RCPT and RSET in one write (RFC 2920 §3.1 lets RSET sit anywhere in a group). */
static void send_probe(struct lmtp_conn *c)
{
    struct lmtp_probe *pr = c->probe;
    send_cmd(c, "MAIL FROM:<>%s", pr->utf8 ? " SMTPUTF8" : "");
    c->pipelined = c->pipelining;
    if (c->pipelined) {
        send_cmd(c, "RCPT TO:<%s>", pr->mailbox);
        send_cmd(c, "RSET");
    }
    c->state = CS_MAIL;
}

/* Puts c, healthy and with nothing outstanding, in the idle list (or closes it when IDLE_MAX
 * are idle already). Calls no callback. */
static void conn_idle(struct lmtp_conn *c)
{
    struct lmtp_pool *pool = c->pool;
    if (pool->nidle >= IDLE_MAX) {
        conn_close(c, true);
        return;
    }
    c->state = CS_IDLE;
    TAILQ_INSERT_HEAD(&pool->idle, c, idle_link);
    pool->nidle++;
    long long idle_ms = pool->src->idle_ms;
    struct timeval tv = { idle_ms / 1000, (idle_ms % 1000) * 1000 };
    evtimer_add(c->timer, &tv);
}

/*
 * Hands c, just taken off the idle list, to the oldest waiting probe it can carry; a non-ASCII
 * address it cannot carry (no SMTPUTF8) is answered DUNNO without asking. With none left, c goes
 * back to idle. Called by pump() only.
 */
static void conn_release(struct lmtp_conn *c)
{
    struct lmtp_pool *pool = c->pool;
    struct lmtp_src *s = pool->src;
    c->state = CS_READY;
    event_del(c->timer);
    for (;;) {
        if (s->dying || c->dead)
            return;
        struct lmtp_probe *pr = dequeue(pool);
        if (pr == NULL)
            break;
        if (pr->utf8 && !c->smtputf8) {
            probe_answer(pr, VERIFY_DUNNO);
            continue;
        }
        attach(c, pr);
        c->reused = true;
        send_probe(c);
        return;
    }
    conn_idle(c);
}

/*
 * Ends the probe in hand with answer a: c goes back to the pool first (idle, or closed when
 * keep is false), so that a lookup made from the done callback can reuse it; then waiting probes
 * are served.
 */
static void conn_finish(struct lmtp_conn *c, enum verify_answer a, bool keep)
{
    struct lmtp_pool *pool = c->pool;
    struct lmtp_src *s = pool->src;
    struct lmtp_probe *pr = c->probe;
    c->probe = NULL;
    pr->conn = NULL;
    if (keep)
        conn_idle(c);
    else
        conn_close(c, false);
    probe_answer(pr, a);
    if (!s->dying)
        pump(pool);
}

/* ---- replies ---- */

/* Notes the LHLO keywords this probe uses (RFC 5321 §4.1.1.1: one per line after the first). */
static void lhlo_keywords(struct lmtp_conn *c)
{
    const char *p = buf_cstr(&c->reply.text);
    const char *nl = strchr(p, '\n');
    while (nl != NULL) {
        p = nl + 1;
        nl = strchr(p, '\n');
        size_t n = nl != NULL ? (size_t)(nl - p) : strlen(p);
        size_t k = strcspn(p, " ");
        if (k > n)
            k = n;
        if (k == 10 && strncasecmp(p, "PIPELINING", 10) == 0)
            c->pipelining = true;
        else if (k == 8 && strncasecmp(p, "SMTPUTF8", 8) == 0)
            c->smtputf8 = true;
    }
}

/* Logs a reply that costs the probe or the connection something, sanitised. */
static void log_reply(struct lmtp_conn *c, enum log_level lvl, const char *phase)
{
    if (!log_enabled(lvl))
        return;
    struct buf d = BUF_INIT;
    reply_describe(&c->reply, &d);
    log_failure(c->pool, lvl, phase, buf_cstr(&d));
    buf_release(&d);
}

/* Acts on the complete reply in c->reply. */
static void on_reply(struct lmtp_conn *c)
{
    struct lmtp_src *s = c->pool->src;
    int code = c->reply.code, cls = code / 100;
    switch (c->state) {
    case CS_GREETING:
        if (cls != 2) {
            conn_fail_reply(c, "greeting");
            return;
        }
        send_cmd(c, "LHLO %s", s->lhlo_name);
        c->state = CS_LHLO;
        return;
    case CS_LHLO:
        if (cls != 2) {
            conn_fail_reply(c, "LHLO");
            return;
        }
        lhlo_keywords(c);
        if (c->probe->utf8 && !c->smtputf8)
            conn_finish(c, VERIFY_DUNNO, true);     /* not asked: it cannot be */
        else
            send_probe(c);
        return;
    case CS_MAIL:
        if (cls != 2) {
            conn_fail_reply(c, "MAIL");
            return;
        }
        if (!c->pipelined)
            send_cmd(c, "RCPT TO:<%s>", c->probe->mailbox);
        c->state = CS_RCPT;
        return;
    case CS_RCPT:
        if (code == 421) {      /* the server is going away: a connection failure */
            conn_fail_reply(c, "RCPT");
            return;
        }
        c->probe->answer = cls == 2 ? VERIFY_EXISTS : cls == 5 ? VERIFY_DUNNO : VERIFY_TEMPFAIL;
        if (cls == 4)
            log_reply(c, LOG_INFO, "RCPT");
        if (!c->pipelined)
            send_cmd(c, "RSET");
        c->state = CS_RSET;
        return;
    case CS_RSET:
        if (cls != 2)
            log_reply(c, LOG_WARN, "RSET");
        conn_finish(c, c->probe->answer, cls == 2);
        return;
    case CS_CONNECTING:
    case CS_READY:
    case CS_IDLE:
        break;
    }
    log_panic("verify_lmtp: reply in state %s", state_names[c->state]);
}

/* A connection sitting idle got bytes or lost its peer: let it go, quietly. */
static void idle_drop(struct lmtp_conn *c, const char *why)
{
    struct lmtp_pool *pool = c->pool;
    log_failure(pool, LOG_DEBUG, "idle", why);
    conn_close(c, false);
    pump(pool);
}

/* Feeds every complete line of input to the reply parser; stops when c is closed. */
static void read_lines(struct lmtp_conn *c)
{
    struct lmtp_src *s = c->pool->src;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->dead && !s->dying) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            return;
        if (c->state == CS_IDLE) {
            idle_drop(c, "the server spoke while idle");
            return;
        }
        c->heard = true;
        char line[SMTP_REPLY_LINE_MAX];
        size_t n;
        struct buf why = BUF_INIT;
        enum smtp_reply_read r = smtp_reply_read(in, &c->reply, line, &n, &why);
        if (r == SMTP_READ_WAIT) {
            buf_release(&why);
            return;
        }
        if (r == SMTP_READ_BAD) {
            struct buf sample = BUF_INIT;
            buf_append_sanitized(&sample, line, n, 100);
            conn_fail(c, false, "malformed reply (%s): %s", buf_cstr(&why), buf_cstr(&sample));
            buf_release(&sample);
            buf_release(&why);
            return;
        }
        buf_release(&why);
        if (r == SMTP_READ_DONE) {
            on_reply(c);
            if (!c->dead)
                smtp_reply_reset(&c->reply);
        }
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct lmtp_conn *c = arg;
    struct lmtp_src *s = c->pool->src;
    (void)bev;
    s->depth++;
    read_lines(c);
    src_leave(s);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct lmtp_conn *c = arg;
    struct lmtp_src *s = c->pool->src;
    s->depth++;
    if (what & BEV_EVENT_CONNECTED) {
        c->state = CS_GREETING;
    } else if (c->state == CS_IDLE) {
        idle_drop(c, "connection closed while idle");
    } else if (c->state == CS_RSET) {
        log_failure(c->pool, LOG_WARN, "RSET", "connection closed by the server");
        conn_finish(c, c->probe->answer, false);
    } else if (c->state == CS_CONNECTING) {
        int dnserr = bufferevent_socket_get_dns_error(bev);
        int err = EVUTIL_SOCKET_ERROR();
        if (dnserr != 0)
            conn_fail(c, false, "cannot resolve: %s", evutil_gai_strerror(dnserr));
        else
            conn_fail(c, false, "connect: %s", err != 0 ? evutil_socket_error_to_string(err) : "failed");
    } else if (what & BEV_EVENT_EOF) {
        conn_fail(c, true, "connection closed by the server");
    } else {
        int err = EVUTIL_SOCKET_ERROR();
        conn_fail(c, true, "connection lost: %s", err != 0 ? evutil_socket_error_to_string(err) : "error");
    }
    src_leave(s);
}

/* Idle expiry: the connection says QUIT and goes. */
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lmtp_conn *c = arg;
    struct lmtp_src *s = c->pool->src;
    (void)fd;
    (void)what;
    s->depth++;
    conn_close(c, true);
    src_leave(s);
}

/* ---- opening connections ---- */

/* Starts connecting c to its pool's target; false with a reason when that cannot start. */
static bool conn_connect(struct lmtp_conn *c, struct buf *why)
{
    struct lmtp_src *s = c->pool->src;
    const char *t = c->pool->target;
    const char *path = strncmp(t, "unix:", 5) == 0 ? t + 5 : t[0] == '/' ? t : NULL;
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
        struct sockaddr_un un;
    } a;
    memset(&a, 0, sizeof a);
    socklen_t len = 0;
    char *host = NULL;
    int port = 0, rc;
    if (path != NULL) {
        if (path[0] == '\0' || strlen(path) >= sizeof a.un.sun_path) {
            buf_puts(why, "bad unix socket path");
            return false;
        }
        a.un.sun_family = AF_UNIX;
        memcpy(a.un.sun_path, path, strlen(path));
        len = sizeof a.un;
    } else if (!netaddr_split(t, &host, &port, LMTP_PORT) || host[0] == '\0' || port < 1 || port > 65535) {
        free(host);
        buf_puts(why, "target is not host[:port] or unix:/path");
        return false;
    } else if (inet_pton(AF_INET, host, &a.in.sin_addr) == 1) {
        a.in.sin_family = AF_INET;
        a.in.sin_port = htons((uint16_t)port);
        len = sizeof a.in;
    } else if (inet_pton(AF_INET6, host, &a.in6.sin6_addr) == 1) {
        a.in6.sin6_family = AF_INET6;
        a.in6.sin6_port = htons((uint16_t)port);
        len = sizeof a.in6;
    }
    if (len > 0) {
        rc = bufferevent_socket_connect(c->bev, &a.sa, (int)len);
    } else {
        /* a host name: libevent's asynchronous resolver (resolv.conf servers, /etc/hosts) */
        if (s->dns == NULL)
            s->dns = evdns_base_new(s->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
        rc = s->dns != NULL ? bufferevent_socket_connect_hostname(c->bev, s->dns, AF_UNSPEC, host, port) : -1;
    }
    free(host);
    if (rc != 0)
        buf_printf(why, "connect: %s", errno != 0 ? strerror(errno) : "cannot start");
    return rc == 0;
}

/* Opens a new connection of pool for pr (already off the queue). */
static void conn_open(struct lmtp_pool *pool, struct lmtp_probe *pr)
{
    struct lmtp_src *s = pool->src;
    struct lmtp_conn *c = xcalloc(1, sizeof *c);
    c->pool = pool;
    c->state = CS_CONNECTING;
    c->bev = bufferevent_socket_new(s->base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    c->timer = evtimer_new(s->base, conn_timer_cb, c);
    if (c->bev == NULL || c->timer == NULL)
        log_panic("verify_lmtp: cannot allocate a connection");
    TAILQ_INSERT_TAIL(&pool->conns, c, link);
    pool->nconns++;
    attach(c, pr);
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
    struct buf why = BUF_INIT;
    errno = 0;
    if (conn_connect(c, &why))
        bufferevent_enable(c->bev, EV_READ);
    else
        conn_fail(c, false, "%s", buf_cstr(&why));
    buf_release(&why);
}

/*
 * Gives waiting probes a connection: an idle one, else a new one while under CONN_MAX. Nested
 * calls (a connection failing as it opens, a done callback asking again) return at once and the
 * outer loop, which checks everything again on each turn, serves them: the stack stays flat
 * however long the queue.
 */
static void pump(struct lmtp_pool *pool)
{
    struct lmtp_src *s = pool->src;
    if (pool->pumping)
        return;
    pool->pumping = true;
    while (!s->dying && !TAILQ_EMPTY(&pool->waiting)) {
        struct lmtp_conn *c = TAILQ_FIRST(&pool->idle);
        if (c != NULL) {
            TAILQ_REMOVE(&pool->idle, c, idle_link);
            pool->nidle--;
            conn_release(c);
        } else if (pool->nconns < CONN_MAX) {
            conn_open(pool, dequeue(pool));
        } else {
            break;
        }
    }
    pool->pumping = false;
}

/* ---- the source ---- */

/* The probe's deadline: answers TEMPFAIL, closing the connection asking for it. */
static void probe_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lmtp_probe *pr = arg;
    struct lmtp_src *s = pr->src;
    (void)fd;
    (void)what;
    s->depth++;
    if (pr->conn != NULL && pr->conn->state == CS_RSET) {
        log_failure(pr->pool, LOG_WARN, "RSET", "timed out");
        conn_finish(pr->conn, pr->answer, false);   /* the RCPT reply stands */
    } else if (pr->conn != NULL) {
        conn_fail(pr->conn, false, "timed out after %lld ms", s->timeout_ms);
    } else {
        log_failure(pr->pool, LOG_WARN, "queue", "timed out waiting for a connection");
        probe_answer(pr, VERIFY_TEMPFAIL);
    }
    src_leave(s);
}

static struct lmtp_pool *pool_get(struct lmtp_src *s, const char *target)
{
    struct lmtp_pool *pool;
    TAILQ_FOREACH(pool, &s->pools, link)
        if (strcmp(pool->target, target) == 0)
            return pool;
    pool = xcalloc(1, sizeof *pool);
    pool->src = s;
    pool->target = xstrdup(target);
    TAILQ_INIT(&pool->conns);
    TAILQ_INIT(&pool->idle);
    TAILQ_INIT(&pool->waiting);
    TAILQ_INSERT_TAIL(&s->pools, pool, link);
    return pool;
}

static void lmtp_lookup(struct verify_source *vs, const struct smtp_path *p, verify_done_fn *done, void *arg)
{
    struct lmtp_src *s = (struct lmtp_src *)vs;
    if (s->dying) {
        done(VERIFY_TEMPFAIL, arg);
        return;
    }
    const char *target = p->domain != NULL ? s->target(p->domain, s->target_arg) : NULL;
    /* no server to ask, or nothing a RCPT TO can carry */
    if (target == NULL || target[0] == '\0' || p->null || p->mailbox == NULL
        || strpbrk(p->mailbox, "\r\n") != NULL) {
        done(VERIFY_DUNNO, arg);
        return;
    }
    s->depth++;
    struct lmtp_pool *pool = pool_get(s, target);
    struct lmtp_probe *pr = xcalloc(1, sizeof *pr);
    pr->src = s;
    pr->pool = pool;
    pr->mailbox = p->mailbox;
    pr->utf8 = p->utf8;
    pr->done = done;
    pr->arg = arg;
    pr->timer = evtimer_new(s->base, probe_timer_cb, pr);
    if (pr->timer == NULL)
        log_panic("verify_lmtp: cannot allocate a timer");
    struct timeval tv = { s->timeout_ms / 1000, (s->timeout_ms % 1000) * 1000 };
    evtimer_add(pr->timer, &tv);
    TAILQ_INSERT_TAIL(&s->pending, pr, link);
    pr->queued = true;
    TAILQ_INSERT_TAIL(&pool->waiting, pr, qlink);
    pump(pool);
    src_leave(s);
}

static void lmtp_free(struct verify_source *vs)
{
    struct lmtp_src *s = (struct lmtp_src *)vs;
    if (s->dying)
        return;
    s->dying = true;
    struct lmtp_probe *pr;
    while ((pr = TAILQ_FIRST(&s->pending)) != NULL) {
        if (pr->conn != NULL)
            conn_close(pr->conn, false);
        probe_answer(pr, VERIFY_TEMPFAIL);
    }
    struct lmtp_pool *pool;
    TAILQ_FOREACH(pool, &s->pools, link) {
        struct lmtp_conn *c;
        while ((c = TAILQ_FIRST(&pool->conns)) != NULL)
            conn_close(c, c->state == CS_IDLE);
    }
    if (s->depth == 0)
        src_release(s);
}

struct verify_source *verify_lmtp_new(struct event_base *base, verify_target_fn *target, void *target_arg,
                                      const char *lhlo_name, long long timeout_ms, long long idle_ms)
{
    struct lmtp_src *s = xcalloc(1, sizeof *s);
    s->vs.name = "lmtp";
    s->vs.cacheable = true;
    s->vs.lookup = lmtp_lookup;
    s->vs.free = lmtp_free;
    s->base = base;
    s->target = target;
    s->target_arg = target_arg;
    s->lhlo_name = xstrdup(lhlo_name != NULL && lhlo_name[0] != '\0' ? lhlo_name : "localhost");
    s->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
    s->idle_ms = idle_ms > 0 ? idle_ms : 1;
    TAILQ_INIT(&s->pools);
    TAILQ_INIT(&s->pending);
    s->reaper = event_new(base, -1, 0, reap_cb, s);
    if (s->reaper == NULL)
        log_panic("verify_lmtp: cannot allocate an event");
    return &s->vs;
}
