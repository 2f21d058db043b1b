/*
 * ops_config.c - semantic checks of a loaded configuration, for `mxgate config check`.
 *
 * The file parser (lib/conf.c) knows types and bounds; this knows what the values mean, and loads
 * every file they name exactly as the roles will, so a configuration that passes here starts.
 */
#include "ops.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include <event2/event.h>

#include "authdb.h"
#include "bridge.h"
#include "cidr.h"
#include "conf.h"
#include "edge.h"
#include "filter_dnsbl.h"
#include "netaddr.h"
#include "redis.h"
#include "relay.h"
#include "relay_retry.h"
#include "relay_throttle.h"
#include "tls.h"

/* Runs one check; on failure prefixes each of its message lines with "FILE: key: ". */
static bool report(struct buf *errs, const char *file, const char *key, bool ok, struct buf *msg)
{
    if (!ok) {
        const char *p = buf_cstr(msg);
        while (*p != '\0') {
            const char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            buf_printf(errs, "%s: %s: %.*s\n", file ? file : "(defaults)", key, (int)n, p);
            p += n + (nl != NULL);
        }
    }
    buf_reset(msg);
    return ok;
}

static bool check_listen(const struct strlist *l, struct buf *msg)
{
    bool ok = true;
    for (size_t i = 0; i < l->n; i++) {
        struct netaddr *a = NULL;
        size_t n = 0;
        if (!netaddr_parse_listen(l->v[i], &a, &n, msg)) {
            buf_putc(msg, '\n');
            ok = false;
        }
        free(a);
    }
    return ok;
}

bool ops_config_validate(const char *file, struct buf *errs)
{
    struct buf msg = BUF_INIT;
    bool ok = true;
    ok &= report(errs, file, "edge.listen", check_listen(&conf.edge_listen, &msg), &msg);
    ok &= report(errs, file, "edge.submission_listen", check_listen(&conf.edge_submission_listen, &msg), &msg);
    ok &= report(errs, file, "edge.smtps_listen", check_listen(&conf.edge_smtps_listen, &msg), &msg);

    struct cidr_list nets = { NULL, 0 };
    ok &= report(errs, file, "edge.trusted_networks",
                 cidr_list_parse(&conf.edge_trusted_networks, &nets, &msg), &msg);
    cidr_list_free(&nets);
    ok &= report(errs, file, "screen.allow", cidr_list_parse(&conf.screen_allow, &nets, &msg), &msg);
    cidr_list_free(&nets);
    ok &= report(errs, file, "screen.deny", cidr_list_parse(&conf.screen_deny, &nets, &msg), &msg);
    cidr_list_free(&nets);
    if (conf.screen_dnsbl_sites.n > 0) {
        struct dnsbl_sites *sites = dnsbl_sites_parse(&conf.screen_dnsbl_sites, &msg);
        ok &= report(errs, file, "screen.dnsbl_sites", sites != NULL, &msg);
        dnsbl_sites_free(sites);
    }

    if (conf.redis_url[0] != '\0') {
        struct redis_target t;
        bool good = redis_url_parse(conf.redis_url, &t, &msg);
        if (good)
            redis_target_clear(&t);
        ok &= report(errs, file, "redis.url", good, &msg);
    }
    char rerr[256];
    struct retry_schedule *rs = retry_schedule_parse(conf.relay_retry_schedule, rerr, sizeof rerr);
    if (rs == NULL)
        buf_puts(&msg, rerr);
    ok &= report(errs, file, "relay.retry_schedule", rs != NULL, &msg);
    retry_schedule_free(rs);
    ok &= report(errs, file, "relay.domain_limits", relay_limits_check(&conf.relay_domain_limits, &msg), &msg);
    ok &= report(errs, file, "relay.mx_limits", relay_limits_check(&conf.relay_mx_limits, &msg), &msg);
    ok &= report(errs, file, "relay.domain_tls", relay_tls_check(&conf.relay_domain_tls, &msg), &msg);
    if (conf.relay_smarthost[0] != '\0') {
        char *host = NULL;
        int port = 0;
        bool good = netaddr_split(conf.relay_smarthost, &host, &port, 25) && host[0] != '\0';
        free(host);
        if (!good)
            buf_printf(&msg, "'%s' is not host[:port]", conf.relay_smarthost);
        ok &= report(errs, file, "relay.smarthost", good, &msg);
    }
    ok &= report(errs, file, "milter.mx", edge_milters_check(&conf.milter_mx, &msg), &msg);
    ok &= report(errs, file, "milter.submission", edge_milters_check(&conf.milter_submission, &msg), &msg);
    bool file_ok = true;
    if (conf.local_recipients[0] != '\0') {
        struct edge_rcptdb *db = edge_rcptdb_load(conf.local_recipients, &msg);
        file_ok = db != NULL;
        ok &= report(errs, file, "local.recipients", file_ok, &msg);
        edge_rcptdb_free(db);
    }
    /* The other recipient sources are built as the edge builds them (nothing is contacted). */
    struct event_base *base = file_ok ? event_base_new() : NULL;
    struct verify_source **sources = NULL;
    size_t nsources = 0;
    bool built = base != NULL && edge_rcpt_sources_new(base, "localhost", &sources, &nsources, &msg);
    if (built)
        edge_rcpt_sources_free(sources, nsources);
    ok &= report(errs, file, "local.verify", built || !file_ok, &msg);
    if (base != NULL)
        event_base_free(base);
    if (conf.bridge_lmtp[0] != '\0' && !bridge_target_valid(conf.bridge_lmtp))
        buf_printf(&msg, "'%s' is not host[:port] or unix:/path", conf.bridge_lmtp);
    ok &= report(errs, file, "bridge.lmtp", msg.len == 0, &msg);
    ok &= report(errs, file, "bridge.domain_lmtp", bridge_domain_lmtp_check(&conf.bridge_domain_lmtp, &msg), &msg);
    if (conf.edge_auth_users[0] != '\0') {
        struct authdb *db = authdb_load(conf.edge_auth_users, &msg);
        ok &= report(errs, file, "edge.auth_users", db != NULL, &msg);
        authdb_free(db);
    }
    if (conf.tls_cert[0] != '\0') {
        SSL_CTX *ctx = tls_server_ctx_new(conf.tls_cert, conf.tls_key, &msg);
        ok &= report(errs, file, "tls.cert", ctx != NULL, &msg);
        SSL_CTX_free(ctx);
    }
    buf_release(&msg);
    return ok;
}
