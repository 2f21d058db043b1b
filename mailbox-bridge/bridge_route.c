/*
 * bridge_route.c - which LMTP server takes a local domain's mail: a bridge.domain_lmtp entry
 * ("domain=target") for the domain, else bridge.lmtp; "" means the embedded Maildir store. The
 * same answer serves delivery (bridge_main.c) and the edge's LMTP recipient probe.
 */
#include "bridge.h"

#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "netaddr.h"
#include "smtp_addr.h"

bool bridge_target_valid(const char *target)
{
    if (strncmp(target, "unix:/", 6) == 0 || target[0] == '/')
        return true;
    char *host = NULL;
    int port = 0;
    bool ok = netaddr_split(target, &host, &port, 24) && host[0] != '\0';
    free(host);
    return ok;
}

/* Splits "domain=target"; false when either side is empty. */
static bool entry_split(const char *e, const char **target, size_t *domain_len)
{
    const char *eq = strchr(e, '=');
    if (eq == NULL || eq == e || eq[1] == '\0')
        return false;
    *domain_len = (size_t)(eq - e);
    *target = eq + 1;
    return true;
}

bool bridge_domain_lmtp_check(const struct strlist *l, struct buf *msg)
{
    bool ok = true;
    for (size_t i = 0; i < l->n; i++) {
        const char *target;
        size_t dlen;
        if (!entry_split(l->v[i], &target, &dlen)) {
            buf_printf(msg, "'%s' is not domain=target\n", l->v[i]);
            ok = false;
        } else if (!smtp_domain_valid(l->v[i], dlen, false)) {
            buf_printf(msg, "'%.*s' is not a domain\n", (int)dlen, l->v[i]);
            ok = false;
        } else if (!bridge_target_valid(target)) {
            buf_printf(msg, "'%s' is not host[:port] or unix:/path\n", target);
            ok = false;
        }
    }
    return ok;
}

const char *bridge_lmtp_target(const char *domain)
{
    size_t n = strlen(domain);
    if (n > 0 && domain[n - 1] == '.')
        n--;
    for (size_t i = 0; i < conf.bridge_domain_lmtp.n; i++) {
        const char *target;
        size_t dlen;
        const char *e = conf.bridge_domain_lmtp.v[i];
        if (entry_split(e, &target, &dlen) && dlen == n && strncasecmp(e, domain, n) == 0)
            return target;
    }
    return conf.bridge_lmtp;
}
