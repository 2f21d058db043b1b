/*
 * edge_policy.c - who may send where: the relay policy and the recipient lookup for local domains.
 *
 * A client may relay (send to a domain that is not local) when it is in edge.trusted_networks or
 * has authenticated. Everyone else may only send to local domains, and to a local domain only with
 * a plain local part: "%", "!" and "@" in a local part are old routing syntaxes that some mailbox
 * stores still honour, so "u%ext@local", "ext!u@local" and "\"u@ext\"@local" are refused as
 * relaying (Postfix's allow_untrusted_routing = no). A source route is dropped by the parser and
 * the real destination judged. Address literals are never local.
 * Whether a local recipient exists is edge_rcpt.c's question.
 */
#include "edge.h"

#include <string.h>

#include "conf.h"

bool edge_domain_is_local(const char *domain)
{
    if (domain == NULL || domain[0] == '[')
        return false;
    for (size_t i = 0; i < conf.local_domains.n; i++)
        if (smtp_domain_equal(domain, conf.local_domains.v[i]))
            return true;
    return false;
}

bool edge_may_relay(const struct edge_session *s)
{
    return s->trusted || s->auth_user != NULL;
}

enum edge_rcpt_verdict edge_relay_check(const struct edge_session *s, const struct smtp_path *p)
{
    if (edge_may_relay(s))
        return RCPT_ACCEPT;
    if (!edge_domain_is_local(p->domain))
        return RCPT_RELAY_DENIED;
    if (strpbrk(p->local, "%!@") != NULL)
        return RCPT_RELAY_DENIED;
    return RCPT_ACCEPT;
}
