/*
 * relay_deliver.c - outbound delivery of one message's recipients in one domain: the route (MX
 * lookup, RFC 5321 §5.1, or relay.smarthost), the hosts tried in order, and the SMTP transaction.
 *
 * Connections are kept per destination host (host:port), at most relay.destination_concurrency; a
 * delivery that finds them all busy waits in that host's queue and gets the next connection that
 * finishes a transaction, so a busy destination is served over a few reused connections rather
 * than hundreds of new ones. A failure before any transaction (refused or lost connection,
 * greeting, EHLO, TLS) moves on to the next MX host; a reply to MAIL, RCPT or DATA is the
 * destination's answer and decides. NXDOMAIN and null MX (RFC 7505) fail permanently; a DNS
 * failure defers.
 */
#include "relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <strings.h>

#include "clock.h"
#include "conf.h"
#include "dns.h"
#include "log.h"
#include "mem.h"
#include "netaddr.h"
#include "relay_smtp.h"
#include "relay_throttle.h"

/* An idle connection is kept this long for the next message to the same host. */
#define CONN_IDLE_MS 5000

struct attempt;

/* One connection to a destination host. */
struct relay_conn {
    struct relay_conn *next;
    struct relay_dest *dest;
    struct relay_smtp *smtp;
    struct attempt *busy;           /* the delivery using it, or NULL when idle */
};

/* A destination host (an MX host or the smarthost) and its connections. */
struct relay_dest {
    struct relay_dest *next;
    struct relay *rl;
    char *host;                     /* a host name or address, or a unix socket's path */
    int port;
    bool lmtp;                      /* its connections speak LMTP */
    enum tls_policy tls;            /* connections to one host under different policies stay apart */
    struct relay_conn *conns;
    unsigned nconns;
    struct attempt *wait_head, *wait_tail;  /* deliveries waiting for a connection */
};

/* One delivery: recipients of one message in one domain, walking the destination's hosts. */
struct attempt {
    struct relay *rl;
    struct relay_rcpt **rcpts;      /* borrowed from the scheduler until relay_delivered */
    size_t n;
    struct relay_smtp_rcpt *srcpts;
    struct relay_smtp_job job;
    char **hosts;                   /* hosts to try, in order */
    size_t nhosts, next_host;
    int port;
    enum tls_policy tls;            /* STARTTLS policy for this domain */
    bool lmtp;                      /* to the mailbox tier over LMTP (the bridge) */
    struct relay_dest *dest;        /* the host being tried */
    struct attempt *wait_next;      /* in dest's wait queue */
    struct buf why;                 /* the last connection-level failure */
    char why_status[16];
    struct log_ctx logctx;
    char slot[RELAY_TOKEN_LEN + 24]; /* the domain's concurrency slot, "" when none is held */
    char mx_slot[RELAY_TOKEN_LEN + 24]; /* the current MX host's slot, "" when none is held */
    char *mx_key;                   /* "mx:HOST" the mx_slot belongs to */
};

static void next_host(struct attempt *a);
static void finish_throttled(struct attempt *a, long long wait_ms, const char *why);
static void dest_dispatch(struct relay_dest *d);
static void dest_release_if_idle(struct relay_dest *d);

/* Gives back the MX host's concurrency slot, if one is held. */
static void release_mx_slot(struct attempt *a)
{
    if (a->mx_slot[0] != '\0')
        relay_throttle_release(a->rl->redis, a->mx_key, a->rl->node, a->mx_slot);
    a->mx_slot[0] = '\0';
    free(a->mx_key);
    a->mx_key = NULL;
}

static void attempt_free(struct attempt *a)
{
    release_mx_slot(a);
    if (a->slot[0] != '\0')
        relay_throttle_release(a->rl->redis, a->rcpts[0]->domain, a->rl->node, a->slot);
    for (size_t i = 0; i < a->nhosts; i++)
        free(a->hosts[i]);
    free(a->hosts);
    free(a->srcpts);
    free(a->rcpts);
    buf_release(&a->why);
    free(a);
}

/* Gives every recipient the same result and hands them back to the scheduler. */
static void finish_all(struct attempt *a, enum relay_outcome o, const char *status, const char *text)
{
    for (size_t i = 0; i < a->n; i++) {
        struct relay_rcpt *r = a->rcpts[i];
        r->result.outcome = o;
        r->result.code = 0;
        snprintf(r->result_status, sizeof r->result_status, "%s", status);
        r->result.status = r->result_status;
        free(r->result_text);
        r->result_text = xstrdup(text);
        r->result.text = r->result_text;
    }
    relay_delivered(a->rl, a->rcpts, a->n);
    attempt_free(a);
}

/* ---- destinations and their connections ---- */

static struct relay_dest *dest_get(struct relay *rl, const char *host, int port, enum tls_policy tls,
                                   bool lmtp)
{
    for (struct relay_dest *d = rl->dests; d != NULL; d = d->next)
        if (d->port == port && d->tls == tls && d->lmtp == lmtp && strcmp(d->host, host) == 0)
            return d;
    struct relay_dest *d = xcalloc(1, sizeof *d);
    d->rl = rl;
    d->host = xstrdup(host);
    d->port = port;
    d->tls = tls;
    d->lmtp = lmtp;
    d->next = rl->dests;
    rl->dests = d;
    return d;
}

static void conn_remove(struct relay_conn *c)
{
    struct relay_dest *d = c->dest;
    for (struct relay_conn **pp = &d->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    d->nconns--;
    relay_smtp_free(c->smtp);
    free(c);
}

static void conn_closed(struct relay_smtp *smtp, void *arg)
{
    (void)smtp;
    struct relay_conn *c = arg;
    struct relay_dest *d = c->dest;
    conn_remove(c);
    dest_dispatch(d);       /* a waiting delivery may open a new one */
}

static enum relay_outcome map_outcome(enum relay_smtp_outcome o)
{
    switch (o) {
    case RELAY_SMTP_DELIVERED: return OUTCOME_DELIVERED;
    case RELAY_SMTP_FAILED: return OUTCOME_FAILED;
    default: return OUTCOME_DEFERRED;
    }
}

/* Failed before the destination said anything about this message: try the next host. */
static bool connection_level(const struct relay_smtp_report *rep)
{
    for (size_t i = 0; i < rep->nrcpts; i++) {
        const struct relay_smtp_result *r = &rep->results[i];
        if (r->outcome != RELAY_SMTP_DEFERRED)
            return false;
        switch (r->phase) {
        case RELAY_PHASE_CONNECT: case RELAY_PHASE_GREETING: case RELAY_PHASE_EHLO:
        case RELAY_PHASE_HELO: case RELAY_PHASE_STARTTLS: case RELAY_PHASE_TLS:
            break;
        default:
            return false;
        }
    }
    return rep->nrcpts > 0;
}

static void smtp_done(struct relay_smtp *smtp, const struct relay_smtp_report *rep, void *arg)
{
    struct relay_conn *c = arg;
    struct attempt *a = c->busy;
    struct relay_dest *d = c->dest;
    c->busy = NULL;
    (void)smtp;
    if (rep->tls_fallback && d->tls == TLS_POLICY_MAY) {
        /* Opportunistic TLS failed: the same host again, in plaintext (RFC 7435). */
        log_msg(LOG_INFO, "tls-fallback", &a->logctx, "%s: TLS handshake failed, retrying without TLS",
                d->host);
        struct relay_dest *plain = dest_get(a->rl, d->host, d->port, TLS_POLICY_NONE, d->lmtp);
        a->dest = plain;
        if (plain->wait_tail != NULL)
            plain->wait_tail->wait_next = a;
        else
            plain->wait_head = a;
        plain->wait_tail = a;
        dest_dispatch(plain);
        dest_dispatch(d);
        return;
    }
    if (connection_level(rep)) {
        const struct relay_smtp_result *r = &rep->results[0];
        buf_reset(&a->why);
        buf_printf(&a->why, "%s: %s%s%s", d->host, relay_phase_name(r->phase), r->text ? ": " : "",
                   r->text ? r->text : "");
        snprintf(a->why_status, sizeof a->why_status, "%s", r->status);
        log_msg(LOG_INFO, "host-failed", &a->logctx, "%s", buf_cstr(&a->why));
        next_host(a);
    } else {
        for (size_t i = 0; i < a->n && i < rep->nrcpts; i++) {
            struct relay_rcpt *r = a->rcpts[i];
            const struct relay_smtp_result *sr = &rep->results[i];
            r->result.outcome = map_outcome(sr->outcome);
            r->result.code = sr->code;
            snprintf(r->result_status, sizeof r->result_status, "%s", sr->status);
            r->result.status = r->result_status;
            free(r->result_text);
            r->result_text = xstrdup(sr->text ? sr->text : "");
            r->result.text = r->result_text;
            free(r->result_mx);
            r->result_mx = xstrdup(d->host);
            r->result.mx = r->result_mx;
        }
        relay_delivered(a->rl, a->rcpts, a->n);
        attempt_free(a);
    }
    /* The connection is free for whoever waits for this host. */
    dest_dispatch(d);
}

/* Starts a's transaction on c; on a refusal (the connection closed meanwhile) tries elsewhere. */
static void conn_use(struct relay_conn *c, struct attempt *a)
{
    c->busy = a;
    if (!relay_smtp_send(c->smtp, &a->job, smtp_done, c)) {
        c->busy = NULL;
        buf_reset(&a->why);
        buf_printf(&a->why, "%s: connection not usable", c->dest->host);
        snprintf(a->why_status, sizeof a->why_status, "4.4.2");
        conn_remove(c);
        next_host(a);
    }
}

/* The addresses of a new connection's host have been looked up. */
struct conn_open {
    struct relay_dest *dest;
    struct attempt *a;
};

/* Opens a connection to d over addrs and starts a's transaction on it. */
static void conn_open(struct relay_dest *d, struct attempt *a, const struct netaddr *addrs, size_t naddrs)
{
    struct relay *rl = a->rl;
    struct relay_smtp_conf sc = {
        .lmtp = d->lmtp,
        .helo_name = rl->hostname,
        .mx_host = d->host,
        .tls = d->tls,
        .tls_ctx = rl->tls_ctx,
        .idle_ms = CONN_IDLE_MS,
        .logctx = NULL,
    };
    relay_smtp_timeouts_default(&sc.timeouts);
    sc.timeouts.connect_ms = (unsigned)conf.relay_connect_timeout;
    sc.timeouts.greeting_ms = sc.timeouts.helo_ms = sc.timeouts.starttls_ms = sc.timeouts.mail_ms =
        sc.timeouts.rcpt_ms = sc.timeouts.rset_ms = sc.timeouts.quit_ms =
            (unsigned)conf.relay_command_timeout;
    sc.timeouts.data_init_ms = sc.timeouts.data_block_ms = (unsigned)conf.relay_data_timeout;
    sc.timeouts.data_done_ms = (unsigned)conf.relay_final_timeout;
    struct relay_conn *c = xcalloc(1, sizeof *c);
    c->dest = d;
    c->smtp = relay_smtp_new(rl->base, &sc, addrs, naddrs, conn_closed, c);
    c->next = d->conns;
    d->conns = c;
    d->nconns++;
    conn_use(c, a);
}

static void conn_addr_cb(struct dns_result *res, void *arg)
{
    struct conn_open *o = arg;
    struct relay_dest *d = o->dest;
    struct attempt *a = o->a;
    free(o);
    d->nconns--;        /* counted while the lookup ran */
    if (res->status == DNS_CANCELLED) {
        attempt_free(a);    /* shutting down: the lease brings the work back */
        return;             /* the destinations go in relay_deliver_shutdown */
    }
    if (res->status != DNS_OK) {
        buf_reset(&a->why);
        buf_printf(&a->why, "%s: address lookup failed: %s", d->host, res->error ? res->error : "");
        snprintf(a->why_status, sizeof a->why_status, "%s",
                 res->status == DNS_NOTFOUND ? "5.4.4" : "4.4.3");
        next_host(a);
        dest_release_if_idle(d);
        return;
    }
    struct netaddr *addrs = xcalloc(res->n, sizeof *addrs);
    for (size_t i = 0; i < res->n; i++) {
        addrs[i].ss = res->addrs[i];
        addrs[i].len = res->addrs[i].ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                           : sizeof(struct sockaddr_in);
    }
    conn_open(d, a, addrs, res->n);
    free(addrs);
}

/* Forgets a destination with no connection and nobody waiting, so the list stays short. */
static void dest_release_if_idle(struct relay_dest *d)
{
    if (d->conns != NULL || d->nconns > 0 || d->wait_head != NULL)
        return;
    for (struct relay_dest **pp = &d->rl->dests; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    }
    free(d->host);
    free(d);
}

/*
 * Hands idle connections (or new ones, within the limit) to the deliveries waiting for d. d may
 * be freed on return.
 */
static void dest_dispatch(struct relay_dest *d)
{
    while (d->wait_head != NULL) {
        struct relay_conn *idle = NULL;
        for (struct relay_conn *c = d->conns; c != NULL; c = c->next)
            if (c->busy == NULL && relay_smtp_ready(c->smtp)) {
                idle = c;
                break;
            }
        if (idle == NULL && d->nconns >= (unsigned)conf.relay_destination_concurrency)
            return;     /* busy: not idle, so not released */
        struct attempt *a = d->wait_head;
        d->wait_head = a->wait_next;
        if (d->wait_head == NULL)
            d->wait_tail = NULL;
        a->wait_next = NULL;
        if (idle != NULL) {
            conn_use(idle, a);
            continue;
        }
        if (d->host[0] == '/') {
            /* A unix socket (the mailbox tier's LMTP): no lookup. */
            struct netaddr un;
            memset(&un, 0, sizeof un);
            struct sockaddr_un *sun = (struct sockaddr_un *)&un.ss;
            sun->sun_family = AF_UNIX;
            snprintf(sun->sun_path, sizeof sun->sun_path, "%s", d->host);
            un.len = sizeof *sun;
            conn_open(d, a, &un, 1);
            continue;
        }
        struct conn_open *o = xcalloc(1, sizeof *o);
        o->dest = d;
        o->a = a;
        d->nconns++;        /* reserve the slot while the address is looked up */
        dns_addr(d->rl->dns, d->host, d->port, AF_UNSPEC, conn_addr_cb, o);
    }
    dest_release_if_idle(d);
}

/* ---- the route ---- */

/* "domain:policy" from relay.domain_tls; false when malformed. */
static bool tls_entry(const char *e, const char *domain, enum tls_policy *out, bool *match)
{
    const char *colon = strrchr(e, ':');
    if (colon == NULL || colon == e || !tls_policy_parse(colon + 1, out))
        return false;
    *match = domain != NULL && strlen(domain) == (size_t)(colon - e)
             && strncasecmp(e, domain, (size_t)(colon - e)) == 0;
    return true;
}

bool relay_tls_check(const struct strlist *entries, struct buf *err)
{
    for (size_t i = 0; i < entries->n; i++) {
        enum tls_policy p;
        bool match;
        if (!tls_entry(entries->v[i], NULL, &p, &match)) {
            buf_printf(err, "'%s' is not domain:none|may|encrypt|verify", entries->v[i]);
            return false;
        }
    }
    return true;
}

enum tls_policy relay_tls_policy_for(const char *domain)
{
    for (size_t i = 0; i < conf.relay_domain_tls.n; i++) {
        enum tls_policy p;
        bool match = false;
        if (tls_entry(conf.relay_domain_tls.v[i], domain, &p, &match) && match)
            return p;
    }
    return (enum tls_policy)conf.relay_tls;
}

/* Puts a in the queue of its next host's connections. */
static void queue_on_host(struct attempt *a, const char *host)
{
    struct relay_dest *d = dest_get(a->rl, host, a->port, a->tls, a->lmtp);
    a->dest = d;
    if (d->wait_tail != NULL)
        d->wait_tail->wait_next = a;
    else
        d->wait_head = a;
    d->wait_tail = a;
    dest_dispatch(d);
}

static void mx_throttled_cb(bool ok, long long wait_ms, const char *slot, const char *err, void *arg)
{
    struct attempt *a = arg;
    if (err != NULL) {
        finish_throttled(a, 5000, "MX host limits could not be checked");
        return;
    }
    if (!ok) {
        finish_throttled(a, wait_ms, "MX host rate or concurrency limit");
        return;
    }
    snprintf(a->mx_slot, sizeof a->mx_slot, "%s", slot);
    queue_on_host(a, a->hosts[a->next_host - 1]);
}

static void next_host(struct attempt *a)
{
    release_mx_slot(a);     /* the previous host's, if any */
    if (a->next_host >= a->nhosts) {
        finish_all(a, OUTCOME_DEFERRED, a->why_status[0] ? a->why_status : "4.4.1",
                   a->why.len ? buf_cstr(&a->why) : "no host could be reached");
        return;
    }
    const char *host = a->hosts[a->next_host++];
    struct relay_limits lim;
    relay_mx_limits_for(host, &lim);
    if (a->lmtp || (lim.rate == 0 && lim.concurrency == 0)) {
        queue_on_host(a, host);
        return;
    }
    struct buf key = BUF_INIT;
    buf_printf(&key, "mx:%s", host);
    a->mx_key = buf_steal(&key);
    char slot[RELAY_TOKEN_LEN + 24];
    snprintf(slot, sizeof slot, "%s-%llu", a->rl->node, ++a->rl->slots);
    if (!relay_throttle_acquire(a->rl->redis, a->mx_key, &lim, a->rl->node, lim.concurrency ? slot : "",
                                conf.relay_lease, mx_throttled_cb, a)) {
        free(a->mx_key);
        a->mx_key = NULL;
        finish_throttled(a, 5000, "MX host limits could not be checked");
    }
}

static void mx_cb(struct dns_result *res, void *arg)
{
    struct attempt *a = arg;
    const char *domain = a->rcpts[0]->domain;
    struct buf why = BUF_INIT;
    switch (res->status) {
    case DNS_OK:
        a->hosts = xcalloc(res->n, sizeof *a->hosts);
        for (size_t i = 0; i < res->n; i++)
            a->hosts[a->nhosts++] = xstrdup(res->mx[i].host);
        next_host(a);
        break;
    case DNS_NOTFOUND:
        buf_printf(&why, "domain %s not found", domain);
        finish_all(a, OUTCOME_FAILED, "5.1.2", buf_cstr(&why));
        break;
    case DNS_NULLMX:
        buf_printf(&why, "domain %s accepts no mail (null MX)", domain);
        finish_all(a, OUTCOME_FAILED, "5.1.10", buf_cstr(&why));
        break;
    case DNS_CANCELLED:
        attempt_free(a);    /* shutting down: the lease brings the work back */
        break;
    default:
        buf_printf(&why, "MX lookup for %s failed: %s", domain, res->error ? res->error : "");
        finish_all(a, OUTCOME_DEFERRED, "4.4.3", buf_cstr(&why));
        break;
    }
    buf_release(&why);
}

/* Holds every recipient back until wait_ms from now, without counting an attempt. */
static void finish_throttled(struct attempt *a, long long wait_ms, const char *why)
{
    long long due = clock_wall_ms() + wait_ms + (long long)(relay_random() % 200);     /* spread the returns a little */
    for (size_t i = 0; i < a->n; i++) {
        struct relay_rcpt *r = a->rcpts[i];
        r->result.outcome = OUTCOME_THROTTLED;
        r->result.due_ms = due;
        r->result.code = 0;
        snprintf(r->result_status, sizeof r->result_status, "4.7.0");
        r->result.status = r->result_status;
        free(r->result_text);
        r->result_text = xstrdup(why);
        r->result.text = r->result_text;
    }
    relay_delivered(a->rl, a->rcpts, a->n);
    attempt_free(a);
}

static void start_route(struct attempt *a);

static void throttled_cb(bool ok, long long wait_ms, const char *slot, const char *err, void *arg)
{
    struct attempt *a = arg;
    if (err != NULL) {
        finish_throttled(a, 5000, "destination limits could not be checked");
        return;
    }
    if (!ok) {
        finish_throttled(a, wait_ms, "destination rate or concurrency limit");
        return;
    }
    snprintf(a->slot, sizeof a->slot, "%s", slot);
    start_route(a);
}

/* A delivery of rcpts (one message's), not started yet. */
static struct attempt *attempt_new(struct relay *rl, struct relay_rcpt **rcpts, size_t n)
{
    struct relay_msg *m = rcpts[0]->msg;
    struct attempt *a = xcalloc(1, sizeof *a);
    a->rl = rl;
    a->n = n;
    a->rcpts = xcalloc(n, sizeof *a->rcpts);
    memcpy(a->rcpts, rcpts, n * sizeof *rcpts);
    a->logctx.queue_id = m->id;
    a->tls = relay_tls_policy_for(rcpts[0]->domain);
    a->srcpts = xcalloc(n, sizeof *a->srcpts);
    for (size_t i = 0; i < n; i++) {
        a->srcpts[i].addr = rcpts[i]->to;
        a->srcpts[i].notify = rcpts[i]->notify;
        a->srcpts[i].orcpt = rcpts[i]->orcpt;
    }
    a->job = (struct relay_smtp_job){
        .sender = m->sender,
        .envid = m->envid,
        .ret = m->ret == NULL ? DSN_RET_UNSPEC : strcmp(m->ret, "FULL") == 0 ? DSN_RET_FULL : DSN_RET_HDRS,
        .body = m->body,
        .body_len = m->body_len,
        .eightbit = m->eightbit,
        .smtputf8 = m->smtputf8,
        .rcpts = a->srcpts,
        .nrcpts = n,
    };
    return a;
}

/* The route is one host (the smarthost, or the bridge's LMTP target); takes ownership of host. */
static void route_to_one(struct attempt *a, char *host, int port)
{
    a->hosts = xcalloc(1, sizeof *a->hosts);
    a->hosts[0] = host;
    a->nhosts = 1;
    a->port = port;
    next_host(a);
}

void relay_deliver_to(struct relay *rl, struct relay_rcpt **rcpts, size_t n, const char *target)
{
    struct attempt *a = attempt_new(rl, rcpts, n);
    a->lmtp = true;
    a->tls = TLS_POLICY_NONE;
    char *host = NULL;
    int port = 24;
    const char *path = strncmp(target, "unix:", 5) == 0 ? target + 5 : target[0] == '/' ? target : NULL;
    if (path != NULL) {
        host = xstrdup(path);
    } else if (!netaddr_split(target, &host, &port, 24)) {
        finish_all(a, OUTCOME_DEFERRED, "4.3.5", "bridge.lmtp is not host[:port] or unix:/path");
        return;
    }
    route_to_one(a, host, port);
}

void relay_deliver(struct relay *rl, struct relay_rcpt **rcpts, size_t n)
{
    struct attempt *a = attempt_new(rl, rcpts, n);
    struct relay_limits lim;
    relay_limits_for(rcpts[0]->domain, &lim);
    if (lim.rate == 0 && lim.concurrency == 0) {
        start_route(a);
        return;
    }
    char slot[RELAY_TOKEN_LEN + 24];
    snprintf(slot, sizeof slot, "%s-%llu", rl->node, ++rl->slots);
    if (!relay_throttle_acquire(rl->redis, rcpts[0]->domain, &lim, rl->node, lim.concurrency ? slot : "",
                                conf.relay_lease, throttled_cb, a))
        finish_throttled(a, 5000, "destination limits could not be checked");
}

/* The destination's hosts: the smarthost, or the domain's MX. */
static void start_route(struct attempt *a)
{
    struct relay *rl = a->rl;
    if (conf.relay_smarthost[0] != '\0') {
        char *host = NULL;
        int port = 25;
        if (!netaddr_split(conf.relay_smarthost, &host, &port, 25)) {
            finish_all(a, OUTCOME_DEFERRED, "4.3.5", "relay.smarthost is not host[:port]");
            return;
        }
        route_to_one(a, host, port);
        return;
    }
    a->port = (int)conf.relay_mx_port;
    dns_mx(rl->dns, a->rcpts[0]->domain, mx_cb, a);
}

void relay_deliver_shutdown(struct relay *rl)
{
    struct relay_dest *d = rl->dests;
    while (d != NULL) {
        struct relay_dest *next = d->next;
        while (d->conns != NULL)
            conn_remove(d->conns);
        free(d->host);
        free(d);
        d = next;
    }
    rl->dests = NULL;
}
