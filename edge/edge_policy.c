/*
 * edge_policy.c - who may send where: the relay policy and the recipient lookup for local domains.
 *
 * A client may relay (send to a domain that is not local) when it is in edge.trusted_networks or
 * has authenticated. Everyone else may only send to local domains, and to a local domain only with
 * a plain local part: "%", "!" and "@" in a local part are old routing syntaxes that some mailbox
 * stores still honour, so "u%ext@local", "ext!u@local" and "\"u@ext\"@local" are refused as
 * relaying (Postfix's allow_untrusted_routing = no). A source route is dropped by the parser and
 * the real destination judged. Address literals are never local.
 *
 * The recipient lookup answers accept / unknown / try-later; its first source is the static file
 * local.recipients (one address per line, or "@domain" for every address of a domain). Further
 * sources (the mailbox tier, LDAP) are added behind edge_rcpt_lookup().
 */
#include "edge.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "mem.h"

struct edge_rcptdb {
    char **addrs;       /* sorted, lower-cased "local@domain" and "@domain" entries */
    size_t n;
};

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

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct edge_rcptdb *edge_rcptdb_load(const char *path, struct buf *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        buf_printf(err, "%s: cannot read: %s\n", path, strerror(errno));
        return NULL;
    }
    struct edge_rcptdb *db = xcalloc(1, sizeof *db);
    size_t cap = 0;
    char *line = NULL;
    size_t linecap = 0;
    unsigned lineno = 0;
    bool ok = true;
    while (getline(&line, &linecap, f) >= 0) {
        lineno++;
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        char *end = p + strlen(p);
        while (end > p && isspace((unsigned char)end[-1]))
            *--end = '\0';
        if (*p == '\0' || *p == '#')
            continue;
        char *at = strrchr(p, '@');
        if (at == NULL || at[1] == '\0' || strpbrk(p, " \t") != NULL) {
            buf_printf(err, "%s:%u: '%s' is not an address or @domain\n", path, lineno, p);
            ok = false;
            continue;
        }
        if (db->n == cap) {
            cap = cap ? cap * 2 : 64;
            db->addrs = xrealloc(db->addrs, cap * sizeof *db->addrs);
        }
        db->addrs[db->n] = xstrdup(p);
        lower(db->addrs[db->n]);
        db->n++;
    }
    free(line);
    fclose(f);
    if (!ok) {
        edge_rcptdb_free(db);
        return NULL;
    }
    qsort(db->addrs, db->n, sizeof *db->addrs, cmp_str);
    return db;
}

void edge_rcptdb_free(struct edge_rcptdb *db)
{
    if (db == NULL)
        return;
    for (size_t i = 0; i < db->n; i++)
        free(db->addrs[i]);
    free(db->addrs);
    free(db);
}

static bool rcptdb_has(const struct edge_rcptdb *db, const char *key)
{
    return bsearch(&key, db->addrs, db->n, sizeof *db->addrs, cmp_str) != NULL;
}

enum edge_rcpt_verdict edge_rcpt_lookup(const struct edge_server *srv, const struct smtp_path *p)
{
    if (srv->rcptdb == NULL)
        return RCPT_ACCEPT;
    struct buf key = BUF_INIT;
    buf_printf(&key, "%s@%s", p->local, p->domain);
    char *k = key.data;
    lower(k);
    size_t dlen = strlen(p->domain);
    if (dlen > 0 && k[key.len - 1] == '.')
        k[--key.len] = '\0';        /* "example.test." is "example.test" */
    bool found = rcptdb_has(srv->rcptdb, k) || rcptdb_has(srv->rcptdb, strrchr(k, '@'));
    buf_release(&key);
    return found ? RCPT_ACCEPT : RCPT_UNKNOWN_USER;
}
