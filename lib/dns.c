/*
 * dns.c - asynchronous DNS lookups through c-ares on a libevent loop (see dns.h).
 *
 * Owns: one c-ares channel per struct dns, a libevent event per socket c-ares keeps open (told
 * through its sock_state_cb, fed back with ares_process_fd), a timer for c-ares's retransmit
 * timeouts (ares_timeout), and the lookups in flight (struct dns_query). What an answer means
 * is dns_answer.c's business.
 *
 * Lifetimes. A lookup outlives what its caller sees: once its callback ran, or dns_cancel() was
 * called, or its deadline answered, c-ares may still hold its queries (one cannot cancel a
 * single c-ares query), so the struct stays until c-ares's last callback for it has come
 * (pending == 0). Callers' callbacks never run inside c-ares: c-ares callbacks only record the
 * answer and activate the lookup's event, whose handler calls the caller. So a caller may do
 * anything in its callback, dns_free() included, and a lookup that c-ares fails at once (inside
 * ares_query) still answers on a later loop turn. Socket events are retired to a graveyard and
 * freed from a separate event, since c-ares may close a socket from inside that socket's own
 * event handler.
 *
 * RFC 1035: queries go out as named (no search list, no HOSTALIASES), without EDNS0; an answer
 * truncated over UDP is asked again over TCP by c-ares. A server that answers SERVFAIL, REFUSED
 * or NOTIMP is skipped for the next one. Every failure reaches the caller as DNS_TEMPFAIL or
 * DNS_NOTFOUND with a short reason; nothing is logged here, and only running out of memory
 * aborts. Not thread-safe: one struct dns per loop.
 */
#include "dns.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>
#include <event2/event.h>

#include "dns_answer.h"
#include "log.h"
#include "mem.h"
#include "netaddr.h"

#define C_IN 1
#define T_A 1
#define T_PTR 12
#define T_MX 15
#define T_TXT 16
#define T_AAAA 28

/* A socket c-ares has open, and the event that watches it. */
struct dns_sock {
    struct dns *dns;
    int fd;
    struct event *ev;
    struct dns_sock *next;
};

struct dns {
    struct event_base *base;
    ares_channel channel;
    struct event *timer;        /* next c-ares retransmit timeout */
    struct event *reaper;       /* frees retired socket events */
    struct dns_sock *socks;     /* sockets c-ares watches now */
    struct dns_sock *dead;      /* retired, freed by the reaper */
    struct dns_query *queries;  /* lookups whose caller has not heard back yet */
    long long deadline_ms;      /* a lookup's whole budget: timeout x tries */
};

enum qkind { Q_MX, Q_ADDR, Q_A, Q_TXT, Q_PTR };

enum qstate {
    QS_RUNNING,     /* waiting for c-ares */
    QS_READY,       /* result in res, event activated to deliver it */
    QS_DONE,        /* delivered or cancelled: the caller is gone */
};

/* One c-ares query of a lookup (dns_addr has two). */
struct dns_sub {
    struct dns_query *q;
    int type;                   /* T_A, T_AAAA, ... */
    bool answered;              /* c-ares called back (else res means nothing yet) */
    struct dns_result res;      /* dns_addr: this family's part */
};

struct dns_query {
    struct dns *dns;            /* NULL once QS_DONE */
    struct dns_query *prev, *next; /* in dns->queries while not QS_DONE */
    enum qkind kind;
    enum qstate state;
    int pending;                /* c-ares callbacks still to come */
    bool delivering;            /* inside the caller's callback: do not free */
    dns_cb *cb;
    void *arg;
    struct event *ev;           /* the deadline, then the delivery */
    char name[DNS_NAME_MAX + 1]; /* the name queried, normalized */
    int port;                   /* dns_addr */
    struct dns_sub sub[2];
    int nsub;
    struct dns_result res;
};

/* ---- lookups --------------------------------------------------------------------------------- */

static void query_maybe_free(struct dns_query *q)
{
    if (q->state != QS_DONE || q->pending > 0 || q->delivering)
        return;
    event_free(q->ev);
    for (int i = 0; i < q->nsub; i++)
        dns_result_clear(&q->sub[i].res);
    dns_result_clear(&q->res);
    free(q);
}

/* The caller is gone or about to hear back: off the list, and nothing more will be delivered. */
static void query_unlink(struct dns_query *q)
{
    struct dns *dns = q->dns;
    if (q->prev != NULL)
        q->prev->next = q->next;
    else
        dns->queries = q->next;
    if (q->next != NULL)
        q->next->prev = q->prev;
    q->prev = q->next = NULL;
    q->dns = NULL;
    q->state = QS_DONE;
}

/* Hands the result over on the next loop turn. */
static void query_ready(struct dns_query *q)
{
    q->state = QS_READY;
    event_del(q->ev);
    event_active(q->ev, EV_TIMEOUT, 1);
}

/* dns_addr: the families' parts merged; a part still pending counts as timed out. */
static void addr_finish(struct dns_query *q)
{
    const struct dns_result *parts[2];
    for (int i = 0; i < q->nsub; i++)
        parts[i] = q->sub[i].answered ? &q->sub[i].res : NULL;
    dns_answer_merge_addrs(&q->res, parts, (size_t)q->nsub, q->port);
}

/* The lookup's event: first its deadline, then the delivery of its result. */
static void query_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dns_query *q = arg;
    if (q->state == QS_RUNNING && q->kind == Q_ADDR)
        addr_finish(q);     /* one family's addresses are worth having */
    else if (q->state == QS_RUNNING)
        dns_result_fail(&q->res, DNS_TEMPFAIL, false, "DNS lookup timed out");
    query_unlink(q);
    q->delivering = true;
    q->cb(&q->res, q->arg);
    q->delivering = false;
    query_maybe_free(q);
}

/* c-ares's answer to one query of a lookup. */
static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    struct dns_sub *s = arg;
    struct dns_query *q = s->q;
    q->pending--;
    if (q->state != QS_RUNNING || status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
        query_maybe_free(q);
        return;
    }
    s->answered = true;
    switch (q->kind) {
    case Q_MX:
        dns_answer_mx(&q->res, q->name, status, abuf, alen);
        break;
    case Q_ADDR:
        dns_answer_addrs(&s->res, s->type, status, abuf, alen);
        break;
    case Q_A:
        dns_answer_a(&q->res, status, abuf, alen);
        break;
    case Q_TXT:
        dns_answer_txt(&q->res, status, abuf, alen);
        break;
    case Q_PTR:
        dns_answer_ptr(&q->res, status, abuf, alen);
        break;
    }
    if (q->pending == 0) {
        if (q->kind == Q_ADDR)
            addr_finish(q);
        query_ready(q);
    }
}

static void arm_timer(struct dns *dns)
{
    struct timeval tv;
    if (ares_timeout(dns->channel, NULL, &tv) != NULL)
        evtimer_add(dns->timer, &tv);
    else
        evtimer_del(dns->timer);
}

static struct dns_query *query_new(struct dns *dns, enum qkind kind, dns_cb *cb, void *arg)
{
    struct dns_query *q = xcalloc(1, sizeof *q);
    q->dns = dns;
    q->kind = kind;
    q->cb = cb;
    q->arg = arg;
    q->ev = evtimer_new(dns->base, query_event, q);
    if (q->ev == NULL)
        log_panic("dns: event_new failed");
    struct timeval tv = { dns->deadline_ms / 1000, (dns->deadline_ms % 1000) * 1000 };
    evtimer_add(q->ev, &tv);
    q->next = dns->queries;
    if (q->next != NULL)
        q->next->prev = q;
    dns->queries = q;
    return q;
}

/* Sends the c-ares queries of q, one per type, for q->name. */
static struct dns_query *query_start(struct dns_query *q, const int *types, int ntypes)
{
    q->nsub = ntypes;
    q->pending = ntypes;    /* all counted before any can complete inside ares_query */
    for (int i = 0; i < ntypes; i++) {
        q->sub[i].q = q;
        q->sub[i].type = types[i];
    }
    struct dns *dns = q->dns;
    for (int i = 0; i < ntypes; i++)
        ares_query(dns->channel, q->name, C_IN, types[i], on_answer, &q->sub[i]);
    arm_timer(dns);
    return q;
}

/* Ends q (on the next loop turn) with a failure that needs no query. */
static struct dns_query *query_fail_now(struct dns_query *q, const char *error)
{
    dns_result_fail(&q->res, DNS_NOTFOUND, false, error);
    query_ready(q);
    return q;
}

struct dns_query *dns_mx(struct dns *dns, const char *domain, dns_cb *cb, void *arg)
{
    static const int types[] = { T_MX };
    struct dns_query *q = query_new(dns, Q_MX, cb, arg);
    if (!dns_name_normalize(domain, q->name))
        return query_fail_now(q, "invalid domain name");
    return query_start(q, types, 1);
}

struct dns_query *dns_addr(struct dns *dns, const char *host, int port, int family, dns_cb *cb,
                           void *arg)
{
    static const int both[] = { T_AAAA, T_A }, v4[] = { T_A }, v6[] = { T_AAAA };
    if (port < 0 || port > 65535
        || (family != AF_INET && family != AF_INET6 && family != AF_UNSPEC))
        log_panic("dns_addr: bad port %d or family %d", port, family);
    struct dns_query *q = query_new(dns, Q_ADDR, cb, arg);
    q->port = port;
    struct sockaddr_storage lit;
    memset(&lit, 0, sizeof lit);
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)&lit)->sin_addr) == 1)
        lit.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&lit)->sin6_addr) == 1)
        lit.ss_family = AF_INET6;
    if (lit.ss_family != 0) {
        if (family != AF_UNSPEC && family != lit.ss_family)
            return query_fail_now(q, "address of the wrong family");
        q->nsub = 1;
        q->sub[0].answered = true;
        q->sub[0].res.status = DNS_OK;
        q->sub[0].res.addrs = xmalloc(sizeof lit);
        q->sub[0].res.addrs[0] = lit;
        q->sub[0].res.n = 1;
        addr_finish(q);
        query_ready(q);
        return q;
    }
    if (!dns_name_normalize(host, q->name))
        return query_fail_now(q, "invalid host name");
    if (family == AF_INET)
        return query_start(q, v4, 1);
    if (family == AF_INET6)
        return query_start(q, v6, 1);
    return query_start(q, both, 2);
}

struct dns_query *dns_a(struct dns *dns, const char *name, dns_cb *cb, void *arg)
{
    static const int types[] = { T_A };
    struct dns_query *q = query_new(dns, Q_A, cb, arg);
    if (!dns_name_normalize(name, q->name))
        return query_fail_now(q, "invalid name");
    return query_start(q, types, 1);
}

struct dns_query *dns_txt(struct dns *dns, const char *name, dns_cb *cb, void *arg)
{
    static const int types[] = { T_TXT };
    struct dns_query *q = query_new(dns, Q_TXT, cb, arg);
    if (!dns_name_normalize(name, q->name))
        return query_fail_now(q, "invalid name");
    return query_start(q, types, 1);
}

struct dns_query *dns_ptr(struct dns *dns, const struct sockaddr *sa, dns_cb *cb, void *arg)
{
    static const int types[] = { T_PTR };
    struct dns_query *q = query_new(dns, Q_PTR, cb, arg);
    struct buf name = BUF_INIT;
    bool ok = dns_reverse_name(sa, NULL, &name) && dns_name_normalize(name.data, q->name);
    buf_release(&name);
    if (!ok)
        return query_fail_now(q, "not an IP address");
    return query_start(q, types, 1);
}

void dns_cancel(struct dns_query *q)
{
    if (q == NULL)
        return;
    event_del(q->ev);
    query_unlink(q);
    query_maybe_free(q);
}

/* ---- the channel and its sockets ------------------------------------------------------------- */

static void reaper_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dns *dns = arg;
    while (dns->dead != NULL) {
        struct dns_sock *s = dns->dead;
        dns->dead = s->next;
        event_free(s->ev);
        free(s);
    }
}

static void sock_event(evutil_socket_t fd, short what, void *arg)
{
    struct dns_sock *s = arg;
    struct dns *dns = s->dns;
    ares_process_fd(dns->channel, what & EV_READ ? fd : ARES_SOCKET_BAD,
                    what & EV_WRITE ? fd : ARES_SOCKET_BAD);
    arm_timer(dns);
}

/* c-ares wants fd watched for reading and/or writing, or no longer (both false). */
static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns *dns = data;
    struct dns_sock **pp = &dns->socks;
    while (*pp != NULL && (*pp)->fd != fd)
        pp = &(*pp)->next;
    if (*pp != NULL) {
        /* Retired rather than changed: this may run inside the event's own handler. */
        struct dns_sock *old = *pp;
        *pp = old->next;
        event_del(old->ev);
        old->next = dns->dead;
        dns->dead = old;
        event_active(dns->reaper, EV_TIMEOUT, 1);
    }
    if (!readable && !writable)
        return;
    struct dns_sock *s = xcalloc(1, sizeof *s);
    s->dns = dns;
    s->fd = fd;
    short what = (short)((readable ? EV_READ : 0) | (writable ? EV_WRITE : 0) | EV_PERSIST);
    s->ev = event_new(dns->base, fd, what, sock_event, s);
    if (s->ev == NULL || event_add(s->ev, NULL) != 0)
        log_panic("dns: cannot watch socket %d", (int)fd);
    s->next = dns->socks;
    dns->socks = s;
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct dns *dns = arg;
    ares_process_fd(dns->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_timer(dns);
}

/* Parses the server list into nodes[0..n), linked; false with a message in err. */
static bool parse_servers(const struct strlist *servers, struct ares_addr_port_node *nodes,
                          struct buf *err)
{
    for (size_t i = 0; i < servers->n; i++) {
        const char *spec = servers->v[i];
        struct ares_addr_port_node *nd = &nodes[i];
        char *host = NULL;
        int port;
        bool ok = netaddr_split(spec, &host, &port, 53) && port > 0;
        if (ok && inet_pton(AF_INET, host, &nd->addr.addr4) == 1) {
            nd->family = AF_INET;
        } else if (ok && inet_pton(AF_INET6, host, &nd->addr.addr6) == 1) {
            nd->family = AF_INET6;
        } else {
            buf_puts(err, "bad DNS server '");
            buf_append_sanitized(err, spec, strlen(spec), 100);
            buf_puts(err, "': expected ip, ip:port or [ipv6]:port");
            free(host);
            return false;
        }
        free(host);
        nd->udp_port = port;
        nd->tcp_port = port;
        nd->next = i + 1 < servers->n ? &nodes[i + 1] : NULL;
    }
    return true;
}

struct dns *dns_new(struct event_base *base, const struct strlist *servers, long long timeout_ms,
                    int tries, struct buf *err)
{
    if (timeout_ms < 1 || timeout_ms > 3600 * 1000 || tries < 1 || tries > 20) {
        buf_printf(err, "bad DNS timeout %lld ms or tries %d (1 ms..1 h, 1..20)", timeout_ms,
                   tries);
        return NULL;
    }
    size_t nservers = servers != NULL ? servers->n : 0;
    struct ares_addr_port_node *nodes = xcalloc(nservers, sizeof *nodes);
    if (nservers > 0 && !parse_servers(servers, nodes, err)) {
        free(nodes);
        return NULL;
    }
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        buf_printf(err, "c-ares: %s", ares_strerror(rc));
        free(nodes);
        return NULL;
    }
    struct dns *dns = xcalloc(1, sizeof *dns);
    dns->base = base;
    dns->deadline_ms = timeout_ms * tries;
    struct ares_options opt;
    memset(&opt, 0, sizeof opt);
    opt.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
    opt.timeout = (int)timeout_ms;
    opt.tries = tries;
    opt.sock_state_cb = sock_state;
    opt.sock_state_cb_data = dns;
    int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
    rc = ares_init_options(&dns->channel, &opt, mask);
    if (rc == ARES_SUCCESS && nservers > 0) {
        rc = ares_set_servers_ports(dns->channel, nodes);
        if (rc != ARES_SUCCESS)
            ares_destroy(dns->channel);
    }
    free(nodes);
    if (rc != ARES_SUCCESS) {
        buf_printf(err, "c-ares: %s", ares_strerror(rc));
        free(dns);
        ares_library_cleanup();
        return NULL;
    }
    dns->timer = evtimer_new(base, timer_cb, dns);
    dns->reaper = event_new(base, -1, 0, reaper_cb, dns);
    if (dns->timer == NULL || dns->reaper == NULL)
        log_panic("dns: event_new failed");
    return dns;
}

void dns_free(struct dns *dns)
{
    if (dns == NULL)
        return;
    while (dns->queries != NULL) {
        struct dns_query *q = dns->queries;
        event_del(q->ev);
        query_unlink(q);
        dns_result_fail(&q->res, DNS_CANCELLED, false, "DNS lookup cancelled");
        q->delivering = true;
        q->cb(&q->res, q->arg);
        q->delivering = false;
        query_maybe_free(q);
    }
    /* Ends c-ares's own queries (their callbacks free what is left) and closes its sockets. */
    ares_destroy(dns->channel);
    while (dns->socks != NULL) {
        struct dns_sock *s = dns->socks;
        dns->socks = s->next;
        s->next = dns->dead;
        dns->dead = s;
    }
    reaper_cb(-1, 0, dns);
    event_free(dns->timer);
    event_free(dns->reaper);
    free(dns);
    ares_library_cleanup();
}
