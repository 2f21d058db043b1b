/*
 * relay_main.c - the roles built on the scheduler (`mxgate relay`, and `mxgate bridge` through
 * relay_role_main()): start-up, signals, graceful stop.
 *
 * Connects to the queue's Redis, sets up DNS (c-ares) and an outbound TLS context, and runs the
 * scheduler (relay_sched.c). SIGTERM or SIGINT stops claiming and waits up to STOP_GRACE_MS for
 * the deliveries in hand to be recorded; whatever is still in flight then comes back to the queue
 * when its lease expires (delivered twice at worst, never lost).
 */
#include "relay.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "clock.h"
#include "conf.h"
#include "dns.h"
#include "loop.h"
#include "log.h"
#include "redis.h"
#include "tls_client.h"

#define STOP_GRACE_MS 30000

struct relay_main {
    struct relay rl;
    struct event *sigterm, *sigint, *stop_check;
    long long stop_deadline_ms;
    long long stop_started_ms;
};

static void stop_check_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct relay_main *m = arg;
    if (m->rl.inflight == 0) {
        event_base_loopexit(m->rl.base, NULL);
        return;
    }
    if (clock_mono_ms() > m->stop_deadline_ms) {
        log_msg(LOG_WARN, "stop-deadline", NULL,
                "%u recipients still in delivery; their leases bring them back", m->rl.inflight);
        _exit(0);
    }
    struct timeval tv = { 0, 100000 };
    evtimer_add(m->stop_check, &tv);
}

static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct relay_main *m = arg;
    if (m->rl.stopping)
        return;
    log_msg(LOG_INFO, "stopping", NULL, "signal %d: %u recipients in delivery", (int)sig, m->rl.inflight);
    relay_stop(&m->rl);
    m->stop_deadline_ms = clock_mono_ms() + STOP_GRACE_MS;
    stop_check_cb(-1, 0, m);
}

static bool setup(struct relay_main *m)
{
    struct relay *rl = &m->rl;
    struct buf err = BUF_INIT;
    bool ok = false;
    conf_host_name(conf.relay_helo_name[0] ? conf.relay_helo_name : conf.edge_hostname, rl->hostname,
                   sizeof rl->hostname);
    struct redis_target target;
    if (conf.redis_url[0] == '\0') {
        buf_printf(&err, "redis.url is empty: the %s needs the queue's Redis (`mxgate run` starts one)",
                   rl->role->name);
        goto out;
    }
    if (!redis_url_parse(conf.redis_url, &target, &err))
        goto out;
    char name[64];
    snprintf(name, sizeof name, "mxgate-%s", rl->role->name);
    rl->redis = redis_new(rl->base, &target, conf.redis_timeout, name);
    snprintf(name, sizeof name, "mxgate-%s-wake", rl->role->name);
    rl->wake = redis_new(rl->base, &target, conf.redis_timeout, name);
    redis_target_clear(&target);
    rl->dns = dns_new(rl->base, &conf.dns_servers, conf.dns_timeout, DNS_TRIES, &err);
    if (rl->dns == NULL)
        goto out;
    if (rl->role->deliver == NULL && (conf.relay_tls != RELAY_TLS_NONE || conf.relay_domain_tls.n > 0)) {
        rl->tls_ctx = tls_client_ctx_new(NULL, NULL, &err);
        if (rl->tls_ctx == NULL)
            goto out;
    }
    if (rl->role->init != NULL && !rl->role->init(rl, &err))
        goto out;
    ok = relay_start(rl);
out:
    if (!ok && err.len > 0)
        log_msg(LOG_CRIT, "start-failed", NULL, "%s", buf_cstr(&err));
    buf_release(&err);
    return ok;
}

static void teardown(struct relay_main *m)
{
    struct relay *rl = &m->rl;
    relay_stop(rl);
    if (rl->renew_timer != NULL)
        event_free(rl->renew_timer);
    retry_schedule_free(rl->schedule);
    relay_deliver_shutdown(rl);
    if (rl->role->fini != NULL)
        rl->role->fini(rl);
    dns_free(rl->dns);
    redis_free(rl->redis);
    redis_free(rl->wake);
    SSL_CTX_free(rl->tls_ctx);
    struct event *evs[] = { m->sigterm, m->sigint, m->stop_check };
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i] != NULL)
            event_free(evs[i]);
    event_base_free(rl->base);
}

int relay_main(void)
{
    static const struct relay_role relay = { "relay", RELAY_STAGE_MAIN, NULL, NULL, NULL, NULL };
    return relay_role_main(&relay);
}

int relay_role_main(const struct relay_role *role)
{
    signal(SIGPIPE, SIG_IGN);
    struct relay_main m;
    memset(&m, 0, sizeof m);
    m.rl.role = role;
    m.rl.base = loop_base_new();
    if (m.rl.base == NULL)
        log_fatal("cannot create the event loop");
    if (!setup(&m)) {
        teardown(&m);
        return 1;
    }
    m.sigterm = evsignal_new(m.rl.base, SIGTERM, stop_cb, &m);
    m.sigint = evsignal_new(m.rl.base, SIGINT, stop_cb, &m);
    m.stop_check = evtimer_new(m.rl.base, stop_check_cb, &m);
    evsignal_add(m.sigterm, NULL);
    evsignal_add(m.sigint, NULL);
    log_msg(LOG_INFO, "started", NULL, "%s %s ready", role->name, m.rl.hostname);
    event_base_dispatch(m.rl.base);
    log_msg(LOG_INFO, "stopped", NULL, "%s stopped: %llu delivered, %llu deferred, %llu failed",
            role->name, m.rl.delivered, m.rl.deferred, m.rl.failed);
    teardown(&m);
    return 0;
}
