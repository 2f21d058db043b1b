/*
 * edge_main.c - the edge role (`mxgate edge`): start-up, signals, graceful stop.
 *
 * Builds the shared server state from the loaded configuration (Redis queue connection, TLS
 * context, AUTH users, trusted networks, recipient table, worker pool, listeners) and runs the
 * loop. SIGTERM or SIGINT stops accepting, tells idle sessions 421, lets sessions in the middle of
 * a message finish (their enqueue is answered) for up to STOP_GRACE_MS, then exits. A start-up
 * failure (bad file, port in use) exits 1 with the reason logged.
 */
#include "edge.h"

#include <signal.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "authdb.h"
#include "conf.h"
#include "dns.h"
#include "loop.h"
#include "mem.h"
#include "redis.h"
#include "tls.h"
#include "workq.h"

#define STOP_GRACE_MS 10000
#define WORKER_THREADS 2

struct edge_main {
    struct edge_server srv;
    struct event *sigterm, *sigint, *sighup;
    struct event *stop_check;       /* polls for the last session to end */
    long long stop_deadline_ms;
};

static void stop_check_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct edge_main *m = arg;
    if (m->srv.nsessions == 0) {
        event_base_loopexit(m->srv.base, NULL);
        return;
    }
    if (clock_wall_ms() > m->stop_deadline_ms) {
        log_msg(LOG_WARN, "stop-deadline", NULL, "%zu sessions still open; exiting", m->srv.nsessions);
        /* Those clients got no 250 for what they were sending, so nothing acknowledged is lost. */
        _exit(0);
    }
    struct timeval tv = { 0, 100000 };
    evtimer_add(m->stop_check, &tv);
}

static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct edge_main *m = arg;
    if (m->srv.stopping)
        return;
    log_msg(LOG_INFO, "stopping", NULL, "signal %d: closing listeners, %zu sessions open", (int)sig,
            m->srv.nsessions);
    edge_server_stop(&m->srv);
    for (struct edge_session *s = m->srv.sessions; s != NULL;) {
        struct edge_session *next = s->next;
        if ((s->state == ST_CMD || s->state == ST_AUTH) && !s->waiting)
            edge_session_resume(s);      /* idle or in the AUTH dialog: hears 421 now */
        else if (s->state == ST_GREET)
            edge_session_drop(s);        /* greeting not sent, or TLS handshake unfinished */
        s = next;
    }
    m->stop_deadline_ms = clock_wall_ms() + STOP_GRACE_MS;
    stop_check_cb(-1, 0, m);
}

static void hup_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    log_msg(LOG_WARN, "reload", NULL, "SIGHUP: reloading is not supported yet; restart to apply changes");
}

static void redis_durability_cb(redisReply *reply, const char *err, void *arg)
{
    (void)arg;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        log_msg(LOG_WARN, "redis-durability-unknown", NULL, "cannot read the Redis setting: %s",
                err ? err : reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        return;
    }
    const char *key = reply->element[0]->str;
    const char *val = reply->element[1]->str;
    const char *want = strcmp(key, "appendfsync") == 0 ? "always" : "yes";
    if (val == NULL || strcmp(val, want) != 0)
        log_msg(LOG_WARN, "redis-not-durable", NULL,
                "Redis has %s=%s; an acknowledged message may be lost in a crash (want %s)", key,
                val ? val : "?", want);
}

/* Each time the queue connection comes up: is that Redis durable? */
static void redis_up(struct redis *r, void *arg)
{
    (void)arg;
    if (!redis_commandf(r, redis_durability_cb, NULL, "CONFIG GET appendfsync")
        || !redis_commandf(r, redis_durability_cb, NULL, "CONFIG GET appendonly"))
        log_msg(LOG_WARN, "redis-durability-unknown", NULL, "connection lost while checking");
}

/* Descriptors beyond the sessions': listeners, Redis, the worker pipe, files being read. */
#define FD_SPARE 64

/* Lifts the soft limit on open files to the hard one, so edge.max_connections can be reached. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)conf.edge_max_connections + FD_SPARE)
        log_msg(LOG_WARN, "fd-limit", NULL,
                "open files limited to %llu: fewer than edge.max_connections (%lld) can be served",
                (unsigned long long)rl.rlim_cur, conf.edge_max_connections);
}

/* Loads everything the sessions share; false (with the reason logged) on any failure. */
static bool setup(struct edge_main *m)
{
    struct edge_server *srv = &m->srv;
    struct buf err = BUF_INIT;
    bool ok = false;
    conf_host_name(conf.edge_hostname, srv->hostname, sizeof srv->hostname);
    raise_fd_limit();

    struct redis_target target;
    if (conf.redis_url[0] == '\0') {
        buf_puts(&err, "redis.url is empty: the edge needs a Redis (`mxgate run` starts one)");
        goto out;
    }
    if (!redis_url_parse(conf.redis_url, &target, &err))
        goto out;
    srv->redis = redis_new(srv->base, &target, conf.redis_timeout, "mxgate-edge");
    redis_target_clear(&target);
    redis_on_connect(srv->redis, redis_up, NULL);

    if (conf.tls_cert[0] != '\0') {
        srv->tls = tls_server_ctx_new(conf.tls_cert, conf.tls_key, &err);
        if (srv->tls == NULL)
            goto out;
    }
    if (conf.edge_auth_users[0] != '\0') {
        srv->authdb = authdb_load(conf.edge_auth_users, &err);
        if (srv->authdb == NULL)
            goto out;
    }
    if (!cidr_list_parse(&conf.edge_trusted_networks, &srv->trusted, &err))
        goto out;
    if (!edge_rcpt_sources_new(srv->base, srv->hostname, &srv->rcpt_sources, &srv->nrcpt_sources, &err))
        goto out;
    srv->dns = dns_new(srv->base, &conf.dns_servers, conf.dns_timeout, DNS_TRIES, &err);
    if (srv->dns == NULL || !edge_screen_init(srv, &err))
        goto out;
    srv->workq = workq_new(srv->base, WORKER_THREADS);
    if (srv->workq == NULL || !edge_filters_init(srv, &err) || !edge_milters_init(srv, &err)
        || edge_server_start(srv) != 0)
        goto out;
    ok = true;
out:
    if (!ok && err.len > 0)
        log_msg(LOG_CRIT, "start-failed", NULL, "%s", buf_cstr(&err));
    buf_release(&err);
    return ok;
}

static void teardown(struct edge_main *m)
{
    struct edge_server *srv = &m->srv;
    workq_free(srv->workq);
    /* Freeing a source answers its pending lookups (450); lookups from now on answer 450 too. */
    struct verify_source **sources = srv->rcpt_sources;
    srv->rcpt_sources = NULL;
    srv->rcpt_closed = true;
    edge_rcpt_sources_free(sources, srv->nrcpt_sources);
    srv->nrcpt_sources = 0;
    redis_free(srv->redis);
    edge_server_free(srv);
    edge_screen_fini(srv);
    edge_filters_fini(srv);
    edge_milters_fini(srv);
    dns_free(srv->dns);
    SSL_CTX_free(srv->tls);
    authdb_free(srv->authdb);
    cidr_list_free(&srv->trusted);
    /* event_free(NULL) is not a no-op in libevent 2.1. */
    struct event *evs[] = { m->sigterm, m->sigint, m->sighup, m->stop_check };
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i] != NULL)
            event_free(evs[i]);
    event_base_free(srv->base);
}

int edge_main(void)
{
    signal(SIGPIPE, SIG_IGN);
    struct edge_main m;
    memset(&m, 0, sizeof m);
    m.srv.base = loop_base_new();
    if (m.srv.base == NULL)
        log_fatal("cannot create the event loop");
    if (!setup(&m)) {
        teardown(&m);
        return 1;
    }
    m.sigterm = evsignal_new(m.srv.base, SIGTERM, stop_cb, &m);
    m.sigint = evsignal_new(m.srv.base, SIGINT, stop_cb, &m);
    m.sighup = evsignal_new(m.srv.base, SIGHUP, hup_cb, &m);
    m.stop_check = evtimer_new(m.srv.base, stop_check_cb, &m);
    evsignal_add(m.sigterm, NULL);
    evsignal_add(m.sigint, NULL);
    evsignal_add(m.sighup, NULL);
    log_msg(LOG_INFO, "started", NULL, "edge %s ready", m.srv.hostname);
    event_base_dispatch(m.srv.base);
    log_msg(LOG_INFO, "stopped", NULL, "edge stopped");
    teardown(&m);
    return 0;
}
