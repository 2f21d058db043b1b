/*
 * edge_verify.c - builds the recipient lookup chain from local.verify: the file source
 * (local.recipients, edge_rcpt.c) and the mailbox tier's sources (mailbox-bridge/verify_*.c). Each
 * source is built from its own settings; nothing is contacted until the first lookup. Secrets
 * (WebAdmin token, LDAP password) are read from files, so they never show in `config show`.
 */
#include "edge.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "conf.h"
#include "mem.h"
#include "verify.h"
#include "verify_sources.h"

/* The first line of a secret file, without its line end, into out; false with err. */
static bool read_secret(const char *setting, const char *path, struct buf *out, struct buf *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        buf_printf(err, "%s: %s: cannot read: %s", setting, path, strerror(errno));
        return false;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    fclose(f);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (n > 0)
        buf_append(out, line, (size_t)n);
    free(line);
    if (n <= 0) {
        buf_printf(err, "%s: %s is empty", setting, path);
        return false;
    }
    return true;
}

/* The probe's target: local.verify_lmtp, else where the bridge delivers the domain. */
static const char *lmtp_target(const char *domain, void *arg)
{
    (void)arg;
    return conf.local_verify_lmtp[0] != '\0' ? conf.local_verify_lmtp : bridge_lmtp_target(domain);
}

/* One source by name; NULL with err (or, for "file" with no file set, NULL and no error). */
static struct verify_source *source_new(struct event_base *base, const char *name, const char *hostname,
                                       struct buf *err)
{
    long long timeout = conf.local_verify_timeout;
    if (strcmp(name, "file") == 0) {
        if (conf.local_recipients[0] == '\0')
            return NULL;
        return edge_rcpt_file_source(conf.local_recipients, err);
    }
    if (strcmp(name, "lmtp") == 0) {
        if (conf.local_verify_lmtp[0] != '\0' && !bridge_target_valid(conf.local_verify_lmtp)) {
            buf_printf(err, "local.verify_lmtp: '%s' is not host[:port] or unix:/path", conf.local_verify_lmtp);
            return NULL;
        }
        if (conf.local_verify_lmtp[0] == '\0' && conf.bridge_lmtp[0] == '\0' && conf.bridge_domain_lmtp.n == 0) {
            buf_puts(err, "lmtp needs local.verify_lmtp, bridge.lmtp or bridge.domain_lmtp");
            return NULL;
        }
        return verify_lmtp_new(base, lmtp_target, NULL, hostname, timeout, VERIFY_LMTP_IDLE_MS);
    }
    if (strcmp(name, "webadmin") == 0) {
        if (conf.local_verify_webadmin[0] == '\0') {
            buf_puts(err, "webadmin needs local.verify_webadmin");
            return NULL;
        }
        struct buf token = BUF_INIT;
        struct verify_source *src = NULL;
        if (conf.local_verify_webadmin_token_file[0] == '\0'
            || read_secret("local.verify_webadmin_token_file", conf.local_verify_webadmin_token_file, &token, err))
            src = verify_webadmin_new(base, conf.local_verify_webadmin, buf_cstr(&token), timeout, err);
        buf_release(&token);
        return src;
    }
    if (strcmp(name, "ldap") == 0) {
        if (conf.local_verify_ldap_uri[0] == '\0' || conf.local_verify_ldap_base[0] == '\0') {
            buf_puts(err, "ldap needs local.verify_ldap_uri and local.verify_ldap_base");
            return NULL;
        }
        struct buf pw = BUF_INIT;
        struct verify_source *src = NULL;
        if (conf.local_verify_ldap_password_file[0] == '\0'
            || read_secret("local.verify_ldap_password_file", conf.local_verify_ldap_password_file, &pw, err))
            src = verify_ldap_new(base, conf.local_verify_ldap_uri, conf.local_verify_ldap_bind_dn, buf_cstr(&pw),
                                  conf.local_verify_ldap_base, conf.local_verify_ldap_filter, timeout, err);
        buf_release(&pw);
        return src;
    }
    buf_printf(err, "unknown source '%s' (file, lmtp, webadmin, ldap)", name);
    return NULL;
}

bool edge_rcpt_sources_new(struct event_base *base, const char *hostname, struct verify_source ***out, size_t *n,
                           struct buf *err)
{
    struct verify_source **v = xcalloc(conf.local_verify.n + 1, sizeof *v);
    size_t count = 0;
    for (size_t i = 0; i < conf.local_verify.n; i++) {
        size_t before = err->len;
        struct verify_source *src = source_new(base, conf.local_verify.v[i], hostname, err);
        if (src != NULL) {
            v[count++] = src;
        } else if (err->len > before) {
            edge_rcpt_sources_free(v, count);
            return false;
        }
    }
    *out = v;
    *n = count;
    return true;
}

void edge_rcpt_sources_free(struct verify_source **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i]->free(v[i]);
    free(v);
}
