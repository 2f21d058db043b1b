/*
 * redis.c - one reconnecting Redis connection on a libevent loop (see redis.h).
 *
 * Owns: the hiredis async context of the current connection, a small libevent adapter for it
 * (struct conn: a read and a write event on the context's socket), the FIFO of commands waiting
 * for their reply, and three timers (reconnect, deadline, and a "reaper" that frees dead
 * connections). Speaks RESP2 through hiredis 0.14 (no pub/sub: the FIFO mirrors hiredis's reply
 * list, which holds only while every command gets exactly one reply).
 *
 * Lifetimes. hiredis frees a context itself (on EOF, on a socket error, on a failed connect, or
 * when redisAsyncFree() is called); it first calls every waiting callback with a NULL reply, then
 * the adapter's cleanup hook. The cleanup hook therefore is the one place that learns a
 * connection is gone: it marks the struct conn dead and hands it to the reaper, because it may
 * run inside the conn's own read or write callback, where freeing its events or the struct
 * itself would pull memory from under libevent and hiredis. redisAsyncFree() is only called
 * from a timer, from redis_free(), or from inside a reply callback (where hiredis defers it until
 * the callback returns); never from the connect callback, where hiredis would keep using the
 * context after it returned.
 *
 * Failures: a refused or lost connection, an AUTH/SELECT error or a deadline missed all end in
 * the same place: every waiting command's callback runs once with reply == NULL, the connection
 * is dropped, and a reconnect is scheduled with backoff. The transition is logged once
 * (redis-down, warn) and so is the recovery (redis-connected, info). A host name is resolved by
 * hiredis with a blocking getaddrinfo(), so redis.url should name an address (or a name from
 * /etc/hosts) or a unix socket. redis_new() sets SIGPIPE to ignored unless the program already
 * handles it, since hiredis writes with write(2).
 */
#include "redis.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <openssl/evp.h>

#include "log.h"
#include "mem.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

/* One command sent and not yet answered. */
struct pending {
    struct pending *next;
    redis_reply_fn *cb;         /* NULL: fire and forget */
    void *arg;
    long long deadline;         /* CLOCK_MONOTONIC ms */
    const struct redis_script *script;  /* an EVALSHA: a NOSCRIPT reply unloads it */
};

/* One connection attempt: the hiredis context and our adapter state for it. */
struct conn {
    struct redis *r;
    redisAsyncContext *ac;      /* NULL once hiredis has freed it */
    struct event *rev, *wev;    /* EV_PERSIST events on ac's socket, added/removed by hiredis */
    struct event *flush;        /* no fd: writes what this loop turn queued, after its callbacks */
    bool flushing;              /* flush_cb is writing: a write hiredis could not finish waits for wev */
    struct pending *head, *tail;/* commands in the order their replies will come */
    const char *reason;         /* why we drop it ("timeout", "shutting down"), or NULL */
    long long connect_deadline; /* while connecting: give up at this time */
    bool dead;                  /* cleanup hook ran: ac is gone, events deleted */
    bool dropping;              /* teardown under way: commands fail, no more deadlines */
    bool send_failed;           /* a handshake command could not be queued: drop on the timer */
    const struct redis_script **scripts;    /* loaded on this connection (SCRIPT LOAD sent) */
    size_t nscripts;
    struct conn *next_dead;     /* graveyard link */
};

static void script_forget(struct conn *c, const struct redis_script *s);

enum rstate { R_DOWN, R_CONNECTING, R_HANDSHAKE, R_UP };
enum rreport { REP_NONE, REP_UP, REP_DOWN };

struct redis {
    struct event_base *base;
    struct redis_target t;      /* owned copy */
    char *name;                 /* CLIENT SETNAME value (no spaces) */
    char *where;                /* "unix:/path" or "host:port", for logs */
    long long timeout_ms;
    enum rstate state;
    enum rreport reported;      /* last transition logged, so each is logged once */
    struct conn *conn;          /* the live connection attempt, or NULL */
    struct conn *graveyard;     /* dead conns the reaper frees */
    struct event *retry;        /* reconnect timer */
    struct event *timer;        /* deadline of the oldest command or of the connect */
    struct event *reaper;       /* activated to free the graveyard outside conn callbacks */
    long long backoff_ms;       /* next reconnect delay */
    int handshake_left;         /* AUTH/SELECT/SETNAME replies still expected */
    void (*on_connect)(struct redis *r, void *arg);
    void *on_connect_arg;
    char *sub_channel;          /* a subscriber: SUBSCRIBEd to this after each handshake */
    redis_message_fn *sub_fn;
    void *sub_arg;
    int depth;                  /* nesting of our callbacks on the stack */
    bool closing;               /* redis_free() was called */
    bool destroy_scheduled;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval ms_tv(long long ms)
{
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
    return tv;
}

/* ---- URL parsing ---------------------------------------------------------------------------- */

/* The URL as it may appear in an error: password masked, non-printables escaped. */
static void url_for_error(struct buf *b, const char *url)
{
    const char *at = strrchr(url, '@');
    buf_puts(b, "redis.url \"");
    if (at != NULL && strncmp(url, "redis://", 8) == 0) {
        buf_puts(b, "redis://***");
        buf_append_sanitized(b, at, strlen(at), 200);
    } else {
        buf_append_sanitized(b, url, strlen(url), 200);
    }
    buf_puts(b, "\": ");
}

static bool url_fail(struct buf *err, const char *url, const char *what, struct redis_target *out)
{
    buf_reset(err);
    url_for_error(err, url);
    buf_puts(err, what);
    redis_target_clear(out);
    return false;
}

/* Decimal in [lo, hi], the whole of [s, s+n). */
static bool parse_num(const char *s, size_t n, long lo, long hi, long *out)
{
    if (n == 0 || n > 10)
        return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Percent-decodes [s, s+n) into a new string; NULL when a %XX is malformed or decodes to NUL. */
static char *pct_decode(const char *s, size_t n)
{
    struct buf b = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            buf_putc(&b, s[i]);
            continue;
        }
        int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
        int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            buf_release(&b);
            return NULL;
        }
        buf_putc(&b, (char)(hi * 16 + lo));
        i += 2;
    }
    return buf_steal(&b);
}

static bool host_char_ok(char c, bool bracketed)
{
    if (isalnum((unsigned char)c) || c == '.' || c == '-')
        return true;
    return bracketed ? (c == ':' || c == '%') : c == '_';
}

/* "redis://[:password@]host[:port][/db]"; p points after "redis://". */
static bool parse_tcp(const char *url, const char *p, struct redis_target *out, struct buf *err)
{
    const char *at = strrchr(p, '@');
    if (at != NULL) {
        if (p[0] != ':')
            return url_fail(err, url, "user names are not supported (use redis://:password@host)",
                            out);
        if (at == p + 1)
            return url_fail(err, url, "empty password", out);
        out->password = pct_decode(p + 1, (size_t)(at - p - 1));
        if (out->password == NULL)
            return url_fail(err, url, "bad %-escape in the password", out);
        p = at + 1;
    }
    const char *host, *host_end;
    bool bracketed = p[0] == '[';
    if (bracketed) {
        host = p + 1;
        host_end = strchr(host, ']');
        if (host_end == NULL)
            return url_fail(err, url, "missing ']' after an IPv6 address", out);
        p = host_end + 1;
        if (*p != '\0' && *p != ':' && *p != '/')
            return url_fail(err, url, "unexpected text after ']'", out);
    } else {
        host = p;
        host_end = p + strcspn(p, ":/");
        p = host_end;
    }
    if (host_end == host)
        return url_fail(err, url, "missing host", out);
    for (const char *h = host; h < host_end; h++)
        if (!host_char_ok(*h, bracketed))
            return url_fail(err, url, "bad character in the host", out);
    out->host = xstrndup(host, (size_t)(host_end - host));
    out->port = 6379;
    if (*p == ':') {
        p++;
        size_t n = strcspn(p, "/");
        long port;
        if (!parse_num(p, n, 1, 65535, &port))
            return url_fail(err, url, "port must be a number from 1 to 65535", out);
        out->port = (int)port;
        p += n;
    }
    if (*p == '/') {
        p++;
        long db = 0;
        if (*p != '\0' && !parse_num(p, strlen(p), 0, INT_MAX, &db))
            return url_fail(err, url, "database must be a number (redis://host:port/db)", out);
        out->db = (int)db;
    }
    return true;
}

/* "unix:/path", "unix:///path", "unix:relative/path", each with an optional "?db=N". */
static bool parse_unix(const char *url, const char *p, struct redis_target *out, struct buf *err)
{
    if (p[0] == '/' && p[1] == '/') {
        if (p[2] != '/')
            return url_fail(err, url, "use unix:/path or unix:///path", out);
        p += 2;
    }
    size_t n = strcspn(p, "?");
    if (n == 0)
        return url_fail(err, url, "missing socket path", out);
    if (n >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return url_fail(err, url, "socket path too long", out);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
            return url_fail(err, url, "control character in the socket path", out);
    out->path = xstrndup(p, n);
    if (p[n] == '?') {
        const char *q = p + n + 1;
        long db;
        if (strncmp(q, "db=", 3) != 0)
            return url_fail(err, url, "the only parameter is ?db=N", out);
        if (!parse_num(q + 3, strlen(q + 3), 0, INT_MAX, &db))
            return url_fail(err, url, "db must be a number", out);
        out->db = (int)db;
    }
    return true;
}

bool redis_url_parse(const char *url, struct redis_target *out, struct buf *err)
{
    memset(out, 0, sizeof *out);
    if (url == NULL || *url == '\0')
        return url_fail(err, "", "empty URL", out);
    if (strncmp(url, "redis://", 8) == 0)
        return parse_tcp(url, url + 8, out, err);
    if (strncmp(url, "unix:", 5) == 0)
        return parse_unix(url, url + 5, out, err);
    return url_fail(err, url, "must start with redis:// or unix:", out);
}

void redis_target_clear(struct redis_target *t)
{
    if (t == NULL)
        return;
    free(t->host);
    free(t->path);
    free(t->password);
    memset(t, 0, sizeof *t);
}

static void target_copy(struct redis_target *dst, const struct redis_target *src)
{
    dst->host = src->host ? xstrdup(src->host) : NULL;
    dst->port = src->port;
    dst->path = src->path ? xstrdup(src->path) : NULL;
    dst->password = src->password ? xstrdup(src->password) : NULL;
    dst->db = src->db;
}

static char *target_where(const struct redis_target *t)
{
    struct buf b = BUF_INIT;
    if (t->path != NULL)
        buf_printf(&b, "unix:%s", t->path);
    else if (strchr(t->host, ':') != NULL)
        buf_printf(&b, "[%s]:%d", t->host, t->port);
    else
        buf_printf(&b, "%s:%d", t->host, t->port);
    return buf_steal(&b);
}

/* ---- state changes and logging -------------------------------------------------------------- */

static void enter(struct redis *r)
{
    r->depth++;
}

static void destroy(struct redis *r);

static void destroy_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    destroy(arg);
}

/* Leaves one of our callbacks; a redis_free() made inside it completes on the next loop turn. */
static void leave(struct redis *r)
{
    if (--r->depth > 0 || !r->closing || r->destroy_scheduled)
        return;
    r->destroy_scheduled = true;
    struct timeval zero = { 0, 0 };
    if (event_base_once(r->base, -1, EV_TIMEOUT, destroy_cb, r, &zero) != 0)
        log_panic("redis: event_base_once failed");
}

/* The connection is no longer usable; logs the transition unless it was already reported. */
static void mark_down(struct redis *r, const char *reason, const char *detail)
{
    r->state = R_DOWN;
    if (r->closing || r->reported == REP_DOWN)
        return;
    r->reported = REP_DOWN;
    struct logrec lr;
    if (log_begin(&lr, LOG_WARN, "redis-down", NULL)) {
        log_str(&lr, "name", r->name);
        log_str(&lr, "server", r->where);
        log_str(&lr, "reason", reason);
        if (detail != NULL && *detail != '\0')
            log_str(&lr, "error", detail);
        log_end(&lr);
    }
}

static void mark_up(struct redis *r)
{
    r->state = R_UP;
    r->backoff_ms = BACKOFF_MIN_MS;
    if (r->reported == REP_UP)
        return;
    r->reported = REP_UP;
    struct logrec lr;
    if (log_begin(&lr, LOG_INFO, "redis-connected", NULL)) {
        log_str(&lr, "name", r->name);
        log_str(&lr, "server", r->where);
        log_end(&lr);
    }
}

static void schedule_retry(struct redis *r)
{
    struct timeval tv = ms_tv(r->backoff_ms);
    evtimer_add(r->retry, &tv);
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/* Points the deadline timer at the earliest thing that can time out on the live connection. */
static void arm_timer(struct redis *r)
{
    struct conn *c = r->conn;
    long long when = -1;
    if (c != NULL && !c->dead && !c->dropping) {
        if (c->send_failed)
            when = 0;
        else if (r->state == R_CONNECTING)
            when = c->connect_deadline;
        else if (c->head != NULL)
            when = c->head->deadline;
    }
    if (when < 0) {
        evtimer_del(r->timer);
        return;
    }
    long long d = when - now_ms();
    struct timeval tv = ms_tv(d < 0 ? 0 : d);
    evtimer_add(r->timer, &tv);
}

/*
 * Drops the live connection: hiredis calls every waiting callback with a NULL reply (at once, or
 * right after the reply callback we are in returns) and then our cleanup hook.
 */
static void drop(struct redis *r, const char *reason, const char *detail)
{
    struct conn *c = r->conn;
    if (c == NULL || c->dead || c->dropping)
        return;
    c->dropping = true;
    c->reason = reason;
    mark_down(r, reason, detail);
    evtimer_del(r->timer);
    redisAsyncFree(c->ac);
}

/* ---- the libevent adapter -------------------------------------------------------------------- */

/* The read and write events' callback: hands the socket to hiredis unless the conn died. */
static void conn_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct conn *c = arg;
    struct redis *r = c->r;
    enter(r);
    if (!c->dead && (what & EV_WRITE))
        redisAsyncHandleWrite(c->ac);
    else if (!c->dead && (what & EV_READ))
        redisAsyncHandleRead(c->ac);
    leave(r);
}

static void ev_add_read(void *priv)
{
    struct conn *c = priv;
    if (!c->dead)
        event_add(c->rev, NULL);
}

static void ev_del_read(void *priv)
{
    struct conn *c = priv;
    event_del(c->rev);
}

/*
 * Commands queued on a connected socket are written once the current loop turn's callbacks have
 * run (they share one write), not after a trip through epoll. Only what the socket did not take
 * waits for it to turn writable; so does the connect.
 */
static void ev_add_write(void *priv)
{
    struct conn *c = priv;
    if (c->dead)
        return;
    if ((c->ac->c.flags & REDIS_CONNECTED) && !c->flushing)
        event_active(c->flush, EV_WRITE, 0);
    else
        event_add(c->wev, NULL);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    struct redis *r = c->r;
    enter(r);
    if (!c->dead) {
        c->flushing = true;
        redisAsyncHandleWrite(c->ac);
        c->flushing = false;
    }
    leave(r);
}

static void ev_del_write(void *priv)
{
    struct conn *c = priv;
    event_del(c->wev);
}

/* hiredis is freeing the context (after running every callback): retire the conn. */
static void ev_cleanup(void *priv)
{
    struct conn *c = priv;
    struct redis *r = c->r;
    event_del(c->rev);
    event_del(c->wev);
    event_del(c->flush);
    const char *detail = c->ac->err != 0 ? c->ac->errstr : NULL;
    if (!c->dropping)
        mark_down(r, r->state == R_CONNECTING ? "connect failed" : "connection lost", detail);
    c->dead = true;
    c->dropping = true;
    c->ac = NULL;
    /* hiredis has answered every command; this only guards the exactly-once promise. */
    while (c->head != NULL) {
        struct pending *p = c->head;
        c->head = p->next;
        if (p->cb != NULL)
            p->cb(NULL, c->reason ? c->reason : "connection lost", p->arg);
        free(p);
    }
    c->tail = NULL;
    if (r->conn == c)
        r->conn = NULL;
    c->next_dead = r->graveyard;
    r->graveyard = c;
    event_active(r->reaper, EV_TIMEOUT, 1);
    evtimer_del(r->timer);
    if (!r->closing) {
        r->state = R_DOWN;
        schedule_retry(r);
    }
}

static void conn_destroy(struct conn *c)
{
    event_free(c->rev);
    event_free(c->wev);
    event_free(c->flush);
    free(c->scripts);
    free(c);
}

static void reaper_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct redis *r = arg;
    enter(r);
    while (r->graveyard != NULL) {
        struct conn *c = r->graveyard;
        r->graveyard = c->next_dead;
        conn_destroy(c);
    }
    leave(r);
}

/* ---- commands -------------------------------------------------------------------------------- */

/* Every reply (or NULL on teardown) comes here, in the order the commands were sent. */
static void on_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    struct conn *c = ac->data;
    struct redis *r = c->r;
    struct pending *p = privdata;
    redisReply *reply = reply_;
    if (c->head != p)
        log_panic("redis: reply does not match the oldest command");
    c->head = p->next;
    if (c->head == NULL)
        c->tail = NULL;
    const char *err = NULL;
    if (p->script != NULL && reply != NULL && reply->type == REDIS_REPLY_ERROR
        && strncmp(reply->str, "NOSCRIPT", 8) == 0)
        script_forget(c, p->script);
    if (reply == NULL) {
        if (!c->dropping) {
            c->dropping = true;
            mark_down(r, "connection lost", ac->err != 0 ? ac->errstr : NULL);
        }
        err = c->reason != NULL ? c->reason : "connection lost";
    } else {
        arm_timer(r);
    }
    if (p->cb != NULL) {
        p->cb(reply, err, p->arg);
    } else if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        struct logrec lr;
        if (log_begin(&lr, LOG_WARN, "redis-error", NULL)) {
            log_str(&lr, "name", r->name);
            log_strn(&lr, "error", reply->str, reply->len);
            log_end(&lr);
        }
    }
    free(p);
}

/* Queues a formatted command on the live connection, whatever the state. */
static bool send_script_formatted(struct redis *r, const struct redis_script *script,
                                  redis_reply_fn *cb, void *arg, const char *cmd, size_t len)
{
    struct conn *c = r->conn;
    if (c == NULL || c->dead || c->dropping)
        return false;
    struct pending *p = xcalloc(1, sizeof *p);
    p->cb = cb;
    p->arg = arg;
    p->deadline = now_ms() + r->timeout_ms;
    p->script = script;
    if (redisAsyncFormattedCommand(c->ac, on_reply, p, cmd, len) != REDIS_OK) {
        free(p);
        return false;
    }
    if (c->tail != NULL) {
        c->tail->next = p;
    } else {
        c->head = p;
        arm_timer(r);
    }
    c->tail = p;
    return true;
}

static bool send_formatted(struct redis *r, redis_reply_fn *cb, void *arg, const char *cmd,
                           size_t len)
{
    return send_script_formatted(r, NULL, cb, arg, cmd, len);
}

static bool send_script_argv(struct redis *r, const struct redis_script *script, redis_reply_fn *cb,
                             void *arg, int argc, const char **argv, const size_t *argvlen)
{
    char *cmd;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0)
        log_panic("redis: out of memory formatting a command");
    bool ok = send_script_formatted(r, script, cb, arg, cmd, (size_t)len);
    redisFreeCommand(cmd);
    return ok;
}

static bool send_argv(struct redis *r, redis_reply_fn *cb, void *arg, int argc, const char **argv,
                      const size_t *argvlen)
{
    return send_script_argv(r, NULL, cb, arg, argc, argv, argvlen);
}

bool redis_command(struct redis *r, redis_reply_fn *cb, void *arg, int argc, const char **argv,
                   const size_t *argvlen)
{
    if (!redis_connected(r) || r->sub_channel != NULL)
        return false;
    return send_argv(r, cb, arg, argc, argv, argvlen);
}

bool redis_commandf(struct redis *r, redis_reply_fn *cb, void *arg, const char *fmt, ...)
{
    if (!redis_connected(r) || r->sub_channel != NULL)
        return false;
    char *cmd;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len == -2)
        log_panic("redis: bad command format \"%s\"", fmt);
    if (len < 0)
        log_panic("redis: out of memory formatting a command");
    bool ok = send_formatted(r, cb, arg, cmd, (size_t)len);
    redisFreeCommand(cmd);
    return ok;
}

/* ---- scripts --------------------------------------------------------------------------------- */

static void script_digest(struct redis_script *s)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(s->text, strlen(s->text), md, &n, EVP_sha1(), NULL) != 1 || n != 20)
        log_panic("redis: SHA-1 of a script failed");
    for (unsigned i = 0; i < n; i++) {
        s->sha[2 * i] = hex[md[i] >> 4];
        s->sha[2 * i + 1] = hex[md[i] & 15];
    }
    s->sha[40] = '\0';
}

static bool script_loaded(const struct conn *c, const struct redis_script *s)
{
    for (size_t i = 0; i < c->nscripts; i++)
        if (c->scripts[i] == s)
            return true;
    return false;
}

static void script_forget(struct conn *c, const struct redis_script *s)
{
    for (size_t i = 0; i < c->nscripts; i++) {
        if (c->scripts[i] == s) {
            c->scripts[i] = c->scripts[--c->nscripts];
            return;
        }
    }
}

bool redis_eval(struct redis *r, struct redis_script *s, redis_reply_fn *cb, void *arg, int argc,
                const char **argv, const size_t *argvlen)
{
    if (!redis_connected(r) || r->sub_channel != NULL)
        return false;
    struct conn *c = r->conn;
    if (s->sha[0] == '\0')
        script_digest(s);
    if (!script_loaded(c, s)) {
        const char *load[] = { "SCRIPT", "LOAD", s->text };
        if (!send_argv(r, NULL, NULL, 3, load, NULL))
            return false;
        c->scripts = xrealloc(c->scripts, (c->nscripts + 1) * sizeof *c->scripts);
        c->scripts[c->nscripts++] = s;
    }
    const char **v = xcalloc((size_t)argc + 2, sizeof *v);
    size_t *len = argvlen != NULL ? xcalloc((size_t)argc + 2, sizeof *len) : NULL;
    v[0] = "EVALSHA";
    v[1] = s->sha;
    for (int i = 0; i < argc; i++) {
        v[i + 2] = argv[i];
        if (len != NULL)
            len[i + 2] = argvlen[i];
    }
    if (len != NULL) {
        len[0] = 7;
        len[1] = 40;
    }
    bool ok = send_script_argv(r, s, cb, arg, argc + 2, v, len);
    free(v);
    free(len);
    return ok;
}

/* ---- connecting ------------------------------------------------------------------------------ */

/*
 * hiredis calls this with SUBSCRIBE's confirmation, with each message, and with NULL when the
 * connection goes (r may be on its way out then: it is not touched).
 */
static void on_message(redisAsyncContext *ac, void *reply_, void *privdata)
{
    (void)ac;
    const redisReply *reply = reply_;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3)
        return;
    const redisReply *kind = reply->element[0], *payload = reply->element[2];
    if (kind->type != REDIS_REPLY_STRING || strcmp(kind->str, "message") != 0
        || payload->type != REDIS_REPLY_STRING)
        return;
    struct redis *r = privdata;
    r->sub_fn(payload->str, payload->len, r->sub_arg);
}

static void subscribe_now(struct redis *r)
{
    struct conn *c = r->conn;
    if (redisAsyncCommand(c->ac, on_message, r, "SUBSCRIBE %s", r->sub_channel) != REDIS_OK)
        drop(r, "subscribe failed", NULL);
}

static void handshake_reply(redisReply *reply, const char *err, void *arg)
{
    (void)err;
    struct redis *r = arg;
    if (reply == NULL || r->state != R_HANDSHAKE)
        return;     /* the connection is going away; cleanup reschedules */
    if (reply->type == REDIS_REPLY_ERROR) {
        struct buf detail = BUF_INIT;
        buf_append(&detail, reply->str, reply->len);
        drop(r, "handshake failed", buf_cstr(&detail));
        buf_release(&detail);
        return;
    }
    if (--r->handshake_left > 0)
        return;
    mark_up(r);
    if (r->sub_channel != NULL)
        subscribe_now(r);
    if (r->on_connect != NULL)
        r->on_connect(r, r->on_connect_arg);
}

/* hiredis's connect callback: the socket is connected (or failed, and cleanup follows). */
static void on_connected(const redisAsyncContext *ac, int status)
{
    struct conn *c = ac->data;
    struct redis *r = c->r;
    if (status != REDIS_OK)
        return;
    r->state = R_HANDSHAKE;
    r->handshake_left = 0;
    bool ok = true;
    if (r->t.password != NULL) {
        const char *argv[] = { "AUTH", r->t.password };
        ok = ok && send_argv(r, handshake_reply, r, 2, argv, NULL);
        r->handshake_left++;
    }
    if (r->t.db > 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->t.db);
        const char *argv[] = { "SELECT", db };
        ok = ok && send_argv(r, handshake_reply, r, 2, argv, NULL);
        r->handshake_left++;
    }
    const char *argv[] = { "CLIENT", "SETNAME", r->name };
    ok = ok && send_argv(r, handshake_reply, r, 3, argv, NULL);
    r->handshake_left++;
    if (!ok) {
        /* Freeing the context here would pull it from under hiredis: let the timer drop it. */
        c->send_failed = true;
        arm_timer(r);
    }
}

static void start_connect(struct redis *r)
{
    if (r->closing || r->conn != NULL)
        return;
    redisAsyncContext *ac = r->t.path != NULL ? redisAsyncConnectUnix(r->t.path)
                                              : redisAsyncConnect(r->t.host, r->t.port);
    if (ac == NULL)
        log_panic("redis: out of memory connecting");
    if (ac->err != 0) {
        mark_down(r, "connect failed", ac->errstr);
        redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    struct conn *c = xcalloc(1, sizeof *c);
    c->r = r;
    c->ac = ac;
    c->rev = event_new(r->base, ac->c.fd, EV_READ | EV_PERSIST, conn_event, c);
    c->wev = event_new(r->base, ac->c.fd, EV_WRITE | EV_PERSIST, conn_event, c);
    c->flush = event_new(r->base, -1, 0, flush_cb, c);
    if (c->rev == NULL || c->wev == NULL || c->flush == NULL)
        log_panic("redis: event_new failed");
    c->connect_deadline = now_ms() + r->timeout_ms;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    r->conn = c;
    r->state = R_CONNECTING;
    /* Adds the write event: the connect completes (or fails) when the socket turns writable. */
    redisAsyncSetConnectCallback(ac, on_connected);
    arm_timer(r);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct redis *r = arg;
    enter(r);
    start_connect(r);
    leave(r);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct redis *r = arg;
    enter(r);
    struct conn *c = r->conn;
    if (c != NULL && !c->dead && !c->dropping) {
        long long now = now_ms();
        if (c->send_failed)
            drop(r, "handshake failed", "could not queue a command");
        else if (r->state == R_CONNECTING && now >= c->connect_deadline)
            drop(r, "connect timeout", NULL);
        else if (r->state != R_CONNECTING && c->head != NULL && now >= c->head->deadline)
            drop(r, "timeout", NULL);
        else
            arm_timer(r);
    }
    leave(r);
}

/* CLIENT SETNAME refuses spaces and newlines. */
static char *client_name(const char *name)
{
    char *s = xstrdup(name != NULL && *name != '\0' ? name : "mxgate");
    for (char *p = s; *p != '\0'; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            *p = '-';
    return s;
}

struct redis *redis_new(struct event_base *base, const struct redis_target *t, long long timeout_ms,
                        const char *name)
{
    if (base == NULL || t == NULL || (t->path == NULL && t->host == NULL))
        log_panic("redis_new: no event base or no target");
    /*
     * hiredis writes with write(2): a server gone away would kill the process with SIGPIPE
     * instead of failing the command. Left alone if the program installed its own handling.
     */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
    struct redis *r = xcalloc(1, sizeof *r);
    r->base = base;
    target_copy(&r->t, t);
    r->name = client_name(name);
    r->where = target_where(&r->t);
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
    r->state = R_DOWN;
    r->backoff_ms = BACKOFF_MIN_MS;
    r->retry = evtimer_new(base, retry_cb, r);
    r->timer = evtimer_new(base, timer_cb, r);
    r->reaper = event_new(base, -1, 0, reaper_cb, r);
    if (r->retry == NULL || r->timer == NULL || r->reaper == NULL)
        log_panic("redis: event_new failed");
    /* The first attempt runs from the loop, so nothing happens inside redis_new(). */
    struct timeval zero = { 0, 0 };
    evtimer_add(r->retry, &zero);
    return r;
}

static void destroy(struct redis *r)
{
    while (r->graveyard != NULL) {
        struct conn *c = r->graveyard;
        r->graveyard = c->next_dead;
        conn_destroy(c);
    }
    event_free(r->retry);
    event_free(r->timer);
    event_free(r->reaper);
    redis_target_clear(&r->t);
    free(r->name);
    free(r->sub_channel);
    free(r->where);
    free(r);
}

void redis_free(struct redis *r)
{
    if (r == NULL || r->closing)
        return;
    r->closing = true;
    r->depth++;
    evtimer_del(r->retry);
    evtimer_del(r->timer);
    drop(r, "shutting down", NULL);
    /* Inside one of our callbacks, the outermost leave() schedules the release instead. */
    if (--r->depth == 0)
        destroy(r);
}

bool redis_connected(const struct redis *r)
{
    return r != NULL && !r->closing && r->state == R_UP && r->conn != NULL && !r->conn->dropping;
}

void redis_on_connect(struct redis *r, void (*fn)(struct redis *r, void *arg), void *arg)
{
    r->on_connect = fn;
    r->on_connect_arg = arg;
}

void redis_subscribe(struct redis *r, const char *channel, redis_message_fn *fn, void *arg)
{
    if (r->sub_channel != NULL)
        log_panic("redis: %s is already a subscriber", r->name);
    r->sub_channel = xstrdup(channel);
    r->sub_fn = fn;
    r->sub_arg = arg;
    if (redis_connected(r))
        subscribe_now(r);
}

/* ---- synchronous connection for tools -------------------------------------------------------- */

static bool sync_check(redisContext *c, redisReply *reply, const char *what, const char *where,
                       struct buf *err)
{
    if (reply == NULL) {
        buf_printf(err, "redis %s: %s: %s", where, what, c->errstr);
        return false;
    }
    bool ok = reply->type != REDIS_REPLY_ERROR;
    if (!ok) {
        buf_printf(err, "redis %s: %s: ", where, what);
        buf_append_sanitized(err, reply->str, reply->len, 200);
    }
    freeReplyObject(reply);
    return ok;
}

redisContext *redis_connect_sync(const struct redis_target *t, long long timeout_ms,
                                 struct buf *err)
{
    buf_reset(err);
    struct timeval tv = ms_tv(timeout_ms > 0 ? timeout_ms : 1);
    char *where = target_where(t);
    redisContext *c = t->path != NULL ? redisConnectUnixWithTimeout(t->path, tv)
                                      : redisConnectWithTimeout(t->host, t->port, tv);
    if (c == NULL)
        log_panic("redis: out of memory connecting");
    bool ok = true;
    if (c->err != 0) {
        buf_printf(err, "redis %s: %s", where, c->errstr);
        ok = false;
    }
    if (ok && redisSetTimeout(c, tv) != REDIS_OK) {
        buf_printf(err, "redis %s: cannot set the timeout", where);
        ok = false;
    }
    if (ok && t->password != NULL)
        ok = sync_check(c, redisCommand(c, "AUTH %s", t->password), "AUTH", where, err);
    if (ok && t->db > 0)
        ok = sync_check(c, redisCommand(c, "SELECT %d", t->db), "SELECT", where, err);
    free(where);
    if (!ok) {
        redisFree(c);
        return NULL;
    }
    return c;
}
