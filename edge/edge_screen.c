/*
 * edge_screen.c - screening at connect, before the SMTP session proper (MX listeners only), in
 * the manner of Postfix's postscreen: what an internet MX keeps out before it spends work on a
 * message.
 *
 * In order, for a new connection:
 *   1. edge.trusted_networks and screen.allow skip screening; screen.deny is refused (554 5.7.1);
 *      more than screen.connection_rate_limit connections per minute from one IP get 421 4.7.0.
 *   2. A client that passed within screen.pass_ttl (P:screen:<ip> in Redis, shared by every edge)
 *      is greeted at once.
 *   3. Otherwise the tests run together: the pregreet test sends the first line of a multi-line
 *      greeting ("220-") and waits screen.greet_wait (screen.greet_wait_stress when the edge is
 *      near edge.max_connections); a client that talks before the final "220 " line is a bot
 *      (RFC 5321 4.3.1 says a client waits for the greeting). Meanwhile the DNSBL/DNSWL sites are
 *      queried in parallel (filters/filter_dnsbl.c) and their weights added up: a score at or
 *      over screen.dnsbl_threshold is refused, one at or under a negative
 *      screen.dnswl_threshold passes at once, without waiting for the rest.
 *   4. A client that passed every test cleanly (no DNS error) is remembered for screen.pass_ttl.
 * Every verdict is logged ("screen" event, with its reasons) and counted; the counts are logged
 * each minute they change ("screen-stats"). With an action of "ignore" a test only logs.
 *
 * The DNS lookups never hold a client longer than the greet wait (or, with no greet wait, than
 * dns.timeout): unanswered queries then count as not listed. Redis being down only means the
 * pass cache is not used.
 */
#include "edge.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "conf.h"
#include "dns.h"
#include "filter_dnsbl.h"
#include "mem.h"
#include "redis.h"

#define RATE_BUCKETS 1024
#define RATE_WINDOW_MS 60000
#define STATS_PERIOD_MS 60000

static const char *const verdict_names[SCREEN_NVERDICTS] = {
    [SCREEN_TRUSTED] = "trusted", [SCREEN_ALLOWED] = "allowed", [SCREEN_DENIED] = "denied",
    [SCREEN_RATE] = "rate", [SCREEN_CACHED] = "cached", [SCREEN_PASS] = "pass",
    [SCREEN_DNSWL] = "dnswl", [SCREEN_PREGREET] = "pregreet", [SCREEN_DNSBL] = "dnsbl",
};

/* Connections per IP in the current minute. */
struct rate_entry {
    struct rate_entry *next;
    unsigned count;
    char ip[];
};

struct edge_screen_state {
    struct dnsbl_sites *sites;          /* screen.dnsbl_sites, parsed */
    struct cidr_list allow, deny;
    struct rate_entry *rate[RATE_BUCKETS];
    long long rate_window;              /* start of the current minute window */
    unsigned long long counts[SCREEN_NVERDICTS];
    unsigned long long logged_total;    /* sum of counts at the last stats line */
    struct event *stats_timer;
};

/* One connection being screened. */
struct edge_screen {
    struct edge_session *s;
    struct dnsbl_check *dnsbl;          /* pending queries, NULL when done or not configured */
    bool dnsbl_done;
    int score;
    struct buf reasons;                 /* listings that matched, for the log */
    unsigned dns_errors;                /* errors and timeouts: the pass is not remembered */
    bool waiting;                       /* the greet wait is running */
    bool pregreet;                      /* the client talked early (action "ignore": logged) */
    bool failed_ignored;                /* a test failed with action "ignore": pass, not remembered */
};

/* ---- per-IP connection rate ---- */

static unsigned rate_hash(const char *ip)
{
    unsigned h = 5381;
    for (; *ip; ip++)
        h = h * 33 + (unsigned char)*ip;
    return h % RATE_BUCKETS;
}

static void rate_clear(struct edge_screen_state *st)
{
    for (size_t i = 0; i < RATE_BUCKETS; i++) {
        struct rate_entry *e = st->rate[i];
        while (e != NULL) {
            struct rate_entry *next = e->next;
            free(e);
            e = next;
        }
        st->rate[i] = NULL;
    }
}

/* Counts a connection from ip; true when it is over the limit for this minute. */
static bool rate_exceeded(struct edge_screen_state *st, const char *ip)
{
    long long now = clock_mono_ms();
    if (now - st->rate_window >= RATE_WINDOW_MS) {
        rate_clear(st);
        st->rate_window = now;
    }
    struct rate_entry **pp = &st->rate[rate_hash(ip)];
    while (*pp != NULL && strcmp((*pp)->ip, ip) != 0)
        pp = &(*pp)->next;
    if (*pp == NULL) {
        size_t n = strlen(ip) + 1;
        *pp = xcalloc(1, sizeof **pp + n);
        memcpy((*pp)->ip, ip, n);
    }
    return ++(*pp)->count > (unsigned)conf.screen_connection_rate_limit;
}

/* ---- verdicts ---- */

static void log_verdict(struct edge_session *s, enum screen_verdict v, const struct edge_screen *sc,
                        const char *detail)
{
    s->srv->screen->counts[v]++;
    struct logrec lr;
    bool bad = v == SCREEN_DENIED || v == SCREEN_RATE || v == SCREEN_PREGREET || v == SCREEN_DNSBL;
    if (!log_begin(&lr, bad ? LOG_WARN : LOG_INFO, "screen", &s->logctx))
        return;
    log_str(&lr, "verdict", verdict_names[v]);
    if (sc != NULL && (sc->dnsbl_done || sc->score != 0)) {
        log_int(&lr, "score", sc->score);
        if (sc->reasons.len > 0)
            log_str(&lr, "listed", buf_cstr(&sc->reasons));
        if (sc->dns_errors > 0)
            log_int(&lr, "dns_errors", sc->dns_errors);
    }
    if (detail != NULL)
        log_str(&lr, "detail", detail);
    log_end(&lr);
}

static void screen_free(struct edge_screen *sc)
{
    if (sc == NULL)
        return;
    dnsbl_check_cancel(sc->dnsbl);
    buf_release(&sc->reasons);
    free(sc);
}

void edge_screen_free(struct edge_session *s)
{
    screen_free(s->screen);
    s->screen = NULL;
}

/* Screening is over and the client may talk: the (final) greeting. */
static void screen_pass(struct edge_session *s, enum screen_verdict v, bool remember)
{
    struct edge_screen *sc = s->screen;
    log_verdict(s, v, sc, NULL);
    if (remember && conf.screen_pass_ttl > 0 && s->srv->redis != NULL) {
        struct buf key = BUF_INIT;
        buf_printf(&key, "%s:screen:%s", conf.redis_prefix, s->ip);
        if (!redis_commandf(s->srv->redis, NULL, NULL, "SET %s 1 PX %lld", buf_cstr(&key), conf.screen_pass_ttl))
            log_msg(LOG_WARN, "screen-cache", &s->logctx, "Redis is not connected: pass not remembered");
        buf_release(&key);
    }
    evtimer_del(s->timer);
    edge_screen_free(s);
    bufferevent_enable(s->bev, EV_READ);
    edge_session_greet(s);
}

static void screen_refuse(struct edge_session *s, enum screen_verdict v, const char *detail, const char *reply)
{
    log_verdict(s, v, s->screen, detail);
    evtimer_del(s->timer);
    edge_screen_free(s);
    edge_reply(s, "%s", reply);
    edge_session_close(s, verdict_names[v]);
}

/* Decides once every running test has its answer. */
static void screen_decide(struct edge_session *s)
{
    struct edge_screen *sc = s->screen;
    if (sc->waiting || !sc->dnsbl_done)
        return;
    screen_pass(s, SCREEN_PASS, !sc->failed_ignored && sc->dns_errors == 0);
}

static void dnsbl_done(const struct dnsbl_verdict *v, void *arg)
{
    struct edge_session *s = arg;
    struct edge_screen *sc = s->screen;
    sc->dnsbl = NULL;
    sc->dnsbl_done = true;
    sc->score = v->score;
    buf_reset(&sc->reasons);
    buf_append(&sc->reasons, v->reasons.data, v->reasons.len);
    sc->dns_errors = v->errors + v->timeouts;
    if (sc->score >= conf.screen_dnsbl_threshold) {
        if (conf.screen_dnsbl_action == SCREEN_ACTION_DROP) {
            struct buf reply = BUF_INIT;
            buf_printf(&reply, "554 5.7.1 Service unavailable; client [%s] blocked using DNSBL", s->ip);
            screen_refuse(s, SCREEN_DNSBL, NULL, buf_cstr(&reply));
            buf_release(&reply);
            return;
        }
        log_verdict(s, SCREEN_DNSBL, sc, "action ignore");
        sc->failed_ignored = true;
    } else if (conf.screen_dnswl_threshold < 0 && sc->score <= conf.screen_dnswl_threshold && !sc->failed_ignored) {
        sc->waiting = false;
        screen_pass(s, SCREEN_DNSWL, true);
        return;
    }
    screen_decide(s);
}

static void greet_wait_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct edge_session *s = arg;
    if (s->dead || s->screen == NULL)
        return;
    s->screen->waiting = false;
    if (s->screen->dnsbl != NULL) {
        dnsbl_check_finish_now(s->screen->dnsbl);   /* calls dnsbl_done */
        return;
    }
    screen_decide(s);
}

/* The tests proper: the bait line, the wait, and the DNS lists in parallel. */
static void screen_run(struct edge_session *s)
{
    struct edge_screen_state *st = s->srv->screen;
    struct edge_screen *sc = s->screen;
    long long wait = conf.screen_greet_wait;
    if (s->srv->nsessions * 5 >= (size_t)conf.edge_max_connections * 4 && conf.screen_greet_wait_stress < wait)
        wait = conf.screen_greet_wait_stress;
    if (wait > 0) {
        edge_reply(s, "220-%s %s", s->srv->hostname, conf.edge_banner);
        sc->waiting = true;
        struct timeval tv = { wait / 1000, (wait % 1000) * 1000 };
        evtimer_assign(s->timer, s->srv->base, greet_wait_cb, s);
        evtimer_add(s->timer, &tv);
    }
    if (st->sites != NULL)
        sc->dnsbl = dnsbl_check_start(s->srv->dns, st->sites, (const struct sockaddr *)&s->peer, dnsbl_done, s);
    else
        sc->dnsbl_done = true;
    if (!sc->waiting && sc->dnsbl_done)
        screen_decide(s);
}

static void cache_cb(redisReply *reply, const char *err, void *arg)
{
    struct edge_session *s = arg;
    if (!edge_session_release(s) || s->screen == NULL)
        return;
    if (err == NULL && reply != NULL && reply->type == REDIS_REPLY_STRING) {
        screen_pass(s, SCREEN_CACHED, false);
        return;
    }
    screen_run(s);
}

void edge_screen_input(struct edge_session *s)
{
    struct edge_screen *sc = s->screen;
    struct evbuffer *in = bufferevent_get_input(s->bev);
    size_t n = evbuffer_get_length(in);
    const char *ahead = (const char *)evbuffer_pullup(in, n < 100 ? (ssize_t)n : 100);
    struct buf sample = BUF_INIT;
    buf_append_sanitized(&sample, ahead, n < 100 ? n : 100, 100);
    if (conf.screen_pregreet_action == SCREEN_ACTION_DROP) {
        screen_refuse(s, SCREEN_PREGREET, buf_cstr(&sample), "554 5.5.1 Error: talked before the greeting");
    } else {
        /* Keep the input for after the greeting, and read no more until then. */
        if (!sc->pregreet)
            log_verdict(s, SCREEN_PREGREET, sc, buf_cstr(&sample));
        sc->pregreet = true;
        sc->failed_ignored = true;
        bufferevent_disable(s->bev, EV_READ);
    }
    buf_release(&sample);
}

bool edge_screen_start(struct edge_session *s)
{
    struct edge_screen_state *st = s->srv->screen;
    const struct sockaddr *sa = (const struct sockaddr *)&s->peer;
    if (s->trusted) {
        st->counts[SCREEN_TRUSTED]++;
        return false;
    }
    if (cidr_list_match(&st->allow, sa)) {
        log_verdict(s, SCREEN_ALLOWED, NULL, NULL);
        return false;
    }
    s->screen = xcalloc(1, sizeof *s->screen);
    s->screen->s = s;
    if (cidr_list_match(&st->deny, sa)) {
        screen_refuse(s, SCREEN_DENIED, NULL, "554 5.7.1 Service unavailable; client address refused");
        return true;
    }
    if (conf.screen_connection_rate_limit > 0 && rate_exceeded(st, s->ip)) {
        screen_refuse(s, SCREEN_RATE, NULL, "421 4.7.0 Error: too many connections from your address");
        return true;
    }
    if (conf.screen_greet_wait == 0 && st->sites == NULL) {
        edge_screen_free(s);
        return false;
    }
    if (conf.screen_pass_ttl > 0 && s->srv->redis != NULL) {
        struct buf key = BUF_INIT;
        buf_printf(&key, "%s:screen:%s", conf.redis_prefix, s->ip);
        bool sent = redis_commandf(s->srv->redis, cache_cb, s, "GET %s", buf_cstr(&key));
        buf_release(&key);
        if (sent) {
            edge_session_wait(s);
            return true;
        }
    }
    screen_run(s);
    return true;
}

/* ---- the server's part ---- */

static void stats_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct edge_screen_state *st = arg;
    unsigned long long total = 0;
    for (size_t i = 0; i < SCREEN_NVERDICTS; i++)
        total += st->counts[i];
    if (total == st->logged_total)
        return;
    st->logged_total = total;
    struct logrec lr;
    if (log_begin(&lr, LOG_INFO, "screen-stats", NULL)) {
        for (size_t i = 0; i < SCREEN_NVERDICTS; i++)
            log_int(&lr, verdict_names[i], (long long)st->counts[i]);
        log_end(&lr);
    }
}

bool edge_screen_init(struct edge_server *srv, struct buf *err)
{
    struct edge_screen_state *st = xcalloc(1, sizeof *st);
    srv->screen = st;
    if (!cidr_list_parse(&conf.screen_allow, &st->allow, err)
        || !cidr_list_parse(&conf.screen_deny, &st->deny, err))
        return false;
    if (conf.screen_dnsbl_sites.n > 0) {
        st->sites = dnsbl_sites_parse(&conf.screen_dnsbl_sites, err);
        if (st->sites == NULL)
            return false;
    }
    st->rate_window = clock_mono_ms();
    st->stats_timer = event_new(srv->base, -1, EV_PERSIST, stats_cb, st);
    struct timeval tv = { STATS_PERIOD_MS / 1000, 0 };
    event_add(st->stats_timer, &tv);
    return true;
}

void edge_screen_fini(struct edge_server *srv)
{
    struct edge_screen_state *st = srv->screen;
    if (st == NULL)
        return;
    if (st->stats_timer != NULL) {
        stats_cb(-1, 0, st);
        event_free(st->stats_timer);
    }
    dnsbl_sites_free(st->sites);
    cidr_list_free(&st->allow);
    cidr_list_free(&st->deny);
    rate_clear(st);
    free(st);
    srv->screen = NULL;
}
