/*
 * edge_server.c - the edge's listeners: accepting connections and the connection limits.
 *
 * Owns the listening sockets, the list of live sessions and the count of sessions per client IP.
 * A connection over edge.max_connections or edge.max_connections_per_ip is told 421 and closed
 * before any session state is made for it, so a flood costs one write and one close each.
 * edge_server_stop() closes the listeners and lets the sessions finish (bounded by the caller).
 */
#include "edge.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "bev_io.h"
#include "conf.h"
#include "mem.h"

#define IPCOUNT_BUCKETS 4096

struct ipcount_entry {
    struct ipcount_entry *next;
    unsigned n;                     /* live sessions from this IP */
    char ip[NETADDR_STRLEN];
};

struct edge_ipcount {
    struct ipcount_entry *bucket[IPCOUNT_BUCKETS];
};

static unsigned ip_hash(const char *ip)
{
    unsigned h = 2166136261u;       /* FNV-1a */
    for (; *ip; ip++)
        h = (h ^ (unsigned char)*ip) * 16777619u;
    return h % IPCOUNT_BUCKETS;
}

static struct ipcount_entry **ipcount_find(struct edge_ipcount *c, const char *ip)
{
    struct ipcount_entry **pp = &c->bucket[ip_hash(ip)];
    while (*pp != NULL && strcmp((*pp)->ip, ip) != 0)
        pp = &(*pp)->next;
    return pp;
}

static unsigned ipcount_get(struct edge_ipcount *c, const char *ip)
{
    struct ipcount_entry *e = *ipcount_find(c, ip);
    return e != NULL ? e->n : 0;
}

static void ipcount_add(struct edge_ipcount *c, const char *ip)
{
    struct ipcount_entry **pp = ipcount_find(c, ip);
    if (*pp == NULL) {
        *pp = xcalloc(1, sizeof **pp);
        snprintf((*pp)->ip, sizeof (*pp)->ip, "%s", ip);
    }
    (*pp)->n++;
}

static void ipcount_remove(struct edge_ipcount *c, const char *ip)
{
    struct ipcount_entry **pp = ipcount_find(c, ip);
    struct ipcount_entry *e = *pp;
    if (e == NULL)
        log_panic("ipcount: no entry for %s", ip);
    if (--e->n == 0) {
        *pp = e->next;
        free(e);
    }
}

const char *edge_listener_kind_name(enum edge_listener_kind kind)
{
    static const char *const names[] = { "mx", "submission", "smtps" };
    return names[kind];
}

void edge_session_unlink(struct edge_session *s)
{
    struct edge_server *srv = s->srv;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    srv->nsessions--;
    ipcount_remove(srv->ipcount, s->ip);
}

/* A refusal before any session exists: one best-effort write, then close. */
static void refuse(evutil_socket_t fd, const char *reply)
{
    ssize_t w = send(fd, reply, strlen(reply), MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)w;
    evutil_closesocket(fd);
}

static void accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    (void)evl;
    (void)salen;
    struct edge_listener *lst = arg;
    struct edge_server *srv = lst->srv;
    char ip[NETADDR_STRLEN];
    netaddr_ip_string(sa, ip, sizeof ip);

    if (srv->nsessions >= (size_t)conf.edge_max_connections) {
        log_msg(LOG_WARN, "refused", &(struct log_ctx){ .client = ip }, "too many connections (%zu)",
                srv->nsessions);
        refuse(fd, "421 4.3.2 Too many connections, try again later\r\n");
        return;
    }
    if (conf.edge_max_connections_per_ip > 0
        && ipcount_get(srv->ipcount, ip) >= (unsigned)conf.edge_max_connections_per_ip) {
        log_msg(LOG_WARN, "refused", &(struct log_ctx){ .client = ip },
                "too many connections from this address");
        refuse(fd, "421 4.7.0 Too many connections from your address, try again later\r\n");
        return;
    }
    bev_io_nodelay(fd);
    struct bufferevent *bev =
        bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (bev == NULL) {
        refuse(fd, "421 4.3.0 Temporary failure, try again later\r\n");
        return;
    }
    struct edge_session *s = edge_session_new(srv, lst, bev, sa);
    s->next = srv->sessions;
    if (s->next != NULL)
        s->next->prev = s;
    srv->sessions = s;
    srv->nsessions++;
    ipcount_add(srv->ipcount, s->ip);

    struct logrec lr;
    if (log_begin(&lr, LOG_INFO, "connect", &s->logctx)) {
        log_str(&lr, "listener", edge_listener_kind_name(lst->kind));
        log_str(&lr, "local", lst->addr);
        if (s->trusted)
            log_bool(&lr, "trusted", true);
        log_end(&lr);
    }
    if (lst->kind == LISTENER_SMTPS) {
        if (!edge_tls_wrap(s))
            edge_session_close(s, "TLS set-up failed");
        return;
    }
    edge_session_start(s);
}

static void resume_accept_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    evconnlistener_enable(arg);
}

static void accept_error_cb(struct evconnlistener *evl, void *arg)
{
    struct edge_listener *lst = arg;
    int err = EVUTIL_SOCKET_ERROR();
    log_msg(LOG_ERR, "accept-failed", NULL, "%s: %s", lst->addr, evutil_socket_error_to_string(err));
    if (err == EMFILE || err == ENFILE) {
        /* Out of descriptors: pause accepting for a moment rather than spin. */
        evconnlistener_disable(evl);
        struct timeval tv = { 1, 0 };
        event_base_once(lst->srv->base, -1, EV_TIMEOUT, resume_accept_cb, evl, &tv);
    }
}

/* Binds every address of one listener setting, appending to srv->listeners and *fds. */
static bool bind_listeners(struct edge_server *srv, const struct strlist *specs,
                           enum edge_listener_kind kind, int **fds, struct buf *err)
{
    for (size_t i = 0; i < specs->n; i++) {
        struct netaddr *addrs = NULL;
        size_t naddrs = 0;
        if (!netaddr_parse_listen(specs->v[i], &addrs, &naddrs, err))
            return false;
        for (size_t j = 0; j < naddrs; j++) {
            int fd = netaddr_listen(&addrs[j], 1024, err);
            if (fd < 0) {
                free(addrs);
                return false;
            }
            srv->listeners = xrealloc(srv->listeners, (srv->nlisteners + 1) * sizeof *srv->listeners);
            *fds = xrealloc(*fds, (srv->nlisteners + 1) * sizeof **fds);
            struct edge_listener *lst = &srv->listeners[srv->nlisteners];
            memset(lst, 0, sizeof *lst);
            lst->srv = srv;
            lst->kind = kind;
            netaddr_string((struct sockaddr *)&addrs[j].ss, lst->addr, sizeof lst->addr);
            (*fds)[srv->nlisteners++] = fd;
        }
        free(addrs);
    }
    return true;
}

int edge_server_start(struct edge_server *srv)
{
    srv->ipcount = xcalloc(1, sizeof *srv->ipcount);
    struct buf err = BUF_INIT;
    int *fds = NULL;        /* listening sockets not yet owned by an evconnlistener */
    bool ok = true;
    if (conf.edge_smtps_listen.n > 0 && srv->tls == NULL) {
        buf_puts(&err, "edge.smtps_listen needs tls.cert and tls.key");
        ok = false;
    }
    /* The listener array moves while it grows, so every socket is bound first and watched after. */
    ok = ok && bind_listeners(srv, &conf.edge_listen, LISTENER_MX, &fds, &err)
         && bind_listeners(srv, &conf.edge_submission_listen, LISTENER_SUBMISSION, &fds, &err)
         && bind_listeners(srv, &conf.edge_smtps_listen, LISTENER_SMTPS, &fds, &err);
    for (size_t i = 0; ok && i < srv->nlisteners; i++) {
        struct edge_listener *lst = &srv->listeners[i];
        lst->evl = evconnlistener_new(srv->base, accept_cb, lst, LEV_OPT_CLOSE_ON_FREE, -1, fds[i]);
        if (lst->evl == NULL) {
            buf_printf(&err, "%s: cannot watch the socket", lst->addr);
            ok = false;
            break;
        }
        fds[i] = -1;
        evconnlistener_set_error_cb(lst->evl, accept_error_cb);
        struct logrec lr;
        if (log_begin(&lr, LOG_INFO, "listening", NULL)) {
            log_str(&lr, "listener", edge_listener_kind_name(lst->kind));
            log_str(&lr, "address", lst->addr);
            log_end(&lr);
        }
    }
    if (!ok) {
        log_msg(LOG_CRIT, "listen-failed", NULL, "%s", buf_cstr(&err));
        for (size_t i = 0; i < srv->nlisteners; i++)
            if (fds[i] >= 0 && srv->listeners[i].evl == NULL)
                close(fds[i]);
    }
    free(fds);
    buf_release(&err);
    return ok ? 0 : -1;
}

void edge_server_stop(struct edge_server *srv)
{
    srv->stopping = true;
    for (size_t i = 0; i < srv->nlisteners; i++) {
        if (srv->listeners[i].evl != NULL) {
            evconnlistener_free(srv->listeners[i].evl);
            srv->listeners[i].evl = NULL;
        }
    }
}

void edge_server_free(struct edge_server *srv)
{
    edge_server_stop(srv);
    free(srv->listeners);
    srv->listeners = NULL;
    srv->nlisteners = 0;
    if (srv->ipcount != NULL) {
        for (size_t i = 0; i < IPCOUNT_BUCKETS; i++) {
            struct ipcount_entry *e = srv->ipcount->bucket[i];
            while (e != NULL) {
                struct ipcount_entry *next = e->next;
                free(e);
                e = next;
            }
        }
        free(srv->ipcount);
        srv->ipcount = NULL;
    }
}
