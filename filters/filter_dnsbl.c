/*
 * filter_dnsbl.c - weighted DNSBL/DNSWL scoring of a connecting client (see filter_dnsbl.h).
 *
 * Owns: the parsed site list (entries, and the distinct domains they name) and, per check, one
 * slot per distinct domain holding its lookup and then its A answers. A check queries each
 * domain once through dns.c (RFC 5782 query names: reversed IPv4 octets, RFC 3596 nibbles for
 * IPv6) and scores every entry against its domain's answers only when all have answered, or
 * when the owner ends the check early.
 *
 * Failures: a bad site entry is reported to the caller with the entry's text; DNS trouble never
 * fails a check, it is counted (errors, timeouts), logged once per domain and check, and left
 * out of the score. Only running out of memory aborts.
 */
#include "filter_dnsbl.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>

#include "log.h"
#include "mem.h"
#include "netaddr.h"

#define WEIGHT_MAX 100000
/* A query name is 64 octets of IPv6 nibbles, then the domain: 253 octets in all (RFC 1035). */
#define DOMAIN_MAX (253 - 64)
/* Most of an entry quoted back in an error message. */
#define QUOTE_MAX 200

/* One site entry: a domain, what answers it accepts, and what a match is worth. */
struct dnsbl_entry {
    size_t domain;              /* index into dnsbl_sites.domains */
    bool any;                   /* no filter: every answer matches */
    uint64_t octet[4][4];       /* the values each octet may take, as a 256-bit set */
    int weight;
};

struct dnsbl_sites {
    struct dnsbl_entry *entries; /* in the order given */
    size_t nentries;
    char **domains;             /* distinct, lower case, no final dot; in order of first use */
    size_t ndomains;
};

enum slot_state {
    SLOT_PENDING,               /* lookup in flight */
    SLOT_ANSWERED,              /* answers in a (none: not listed) */
    SLOT_ERROR,                 /* bad answer or a DNS failure other than a timeout */
    SLOT_TIMEOUT,               /* DNS timeout, or no answer before the check ended */
};

/* One domain's lookup within a check. */
struct dnsbl_slot {
    struct dnsbl_check *c;
    struct dns_query *q;        /* while SLOT_PENDING */
    enum slot_state state;
    struct in_addr *a;          /* SLOT_ANSWERED: the A records, taken over from the result */
    size_t n;
};

struct dnsbl_check {
    const struct dnsbl_sites *s; /* borrowed: outlives the check */
    dnsbl_done_fn *done;
    void *arg;
    size_t pending;             /* slots still SLOT_PENDING */
    char client[NETADDR_STRLEN]; /* for log lines */
    struct dnsbl_slot slot[];   /* one per domain of s */
};

/* ---- parsing --------------------------------------------------------------------------------- */

static void set_bit(uint64_t set[4], unsigned v)
{
    set[v >> 6] |= (uint64_t)1 << (v & 63);
}

static bool has_bit(const uint64_t set[4], unsigned v)
{
    return (set[v >> 6] >> (v & 63)) & 1;
}

/* Copies a domain into out normalized (lower case, one final dot dropped); a reason if bad. */
static const char *parse_domain(const char *p, size_t len, char **out)
{
    if (len > 0 && p[len - 1] == '.')
        len--;
    if (len == 0)
        return "empty domain";
    if (len > DOMAIN_MAX)
        return "domain name too long";
    size_t label = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || p[i] == '.') {
            if (label == 0 || label > 63)
                return "bad domain name";
            label = 0;
        } else if (isalnum((unsigned char)p[i]) || p[i] == '-' || p[i] == '_') {
            label++;
        } else {
            return "bad domain name";
        }
    }
    char *d = xstrndup(p, len);
    for (char *q = d; *q != '\0'; q++)
        *q = (char)tolower((unsigned char)*q);
    *out = d;
    return NULL;
}

/* Reads one octet value at *p; false with a reason in why. */
static bool parse_number(const char **p, unsigned *v, struct buf *why)
{
    const char *s = *p;
    size_t n = 0;
    while (isdigit((unsigned char)s[n]))
        n++;
    if (n == 0) {
        if (*s == '\0')
            buf_puts(why, "filter ends early");
        else {
            buf_puts(why, "bad filter at '");
            buf_append_sanitized(why, s, strlen(s), QUOTE_MAX);
            buf_putc(why, '\'');
        }
        return false;
    }
    unsigned long val = n <= 3 ? strtoul(s, NULL, 10) : 256;
    if (val > 255) {
        buf_puts(why, "filter octet '");
        buf_append(why, s, n);
        buf_puts(why, "' out of range 0..255");
        return false;
    }
    *v = (unsigned)val;
    *p = s + n;
    return true;
}

/* One octet pattern at *p: a number, or [a;b..c;...]. */
static bool parse_octet(const char **p, uint64_t set[4], struct buf *why)
{
    unsigned lo, hi;
    if (**p != '[') {
        if (!parse_number(p, &lo, why))
            return false;
        set_bit(set, lo);
        return true;
    }
    (*p)++;
    for (;;) {
        if (!parse_number(p, &lo, why))
            return false;
        hi = lo;
        if ((*p)[0] == '.' && (*p)[1] == '.') {
            *p += 2;
            if (!parse_number(p, &hi, why))
                return false;
            if (hi < lo) {
                buf_printf(why, "empty filter range %u..%u", lo, hi);
                return false;
            }
        }
        for (unsigned v = lo; v <= hi; v++)
            set_bit(set, v);
        char c = **p;
        if (c == ';' || c == ']')
            (*p)++;
        if (c == ']')
            return true;
        if (c != ';') {
            parse_number(p, &lo, why);  /* not a number here: says where, or that it ended */
            return false;
        }
    }
}

/* The filter text f (everything between '=' and '*') into e. */
static bool parse_filter(const char *f, struct dnsbl_entry *e, struct buf *why)
{
    if (*f == '\0') {
        buf_puts(why, "empty filter");
        return false;
    }
    for (int k = 0; k < 4; k++) {
        if (k > 0) {
            if (*f == '\0') {
                buf_printf(why, "filter has %d octets, not 4", k);
                return false;
            }
            if (*f != '.') {
                buf_puts(why, "bad filter at '");
                buf_append_sanitized(why, f, strlen(f), QUOTE_MAX);
                buf_putc(why, '\'');
                return false;
            }
            f++;
        }
        if (!parse_octet(&f, e->octet[k], why))
            return false;
    }
    if (*f != '\0') {
        buf_puts(why, "junk after filter: '");
        buf_append_sanitized(why, f, strlen(f), QUOTE_MAX);
        buf_putc(why, '\'');
        return false;
    }
    return true;
}

static bool parse_weight(const char *w, int *out, struct buf *why)
{
    const char *digits = (*w == '-' || *w == '+') ? w + 1 : w;
    char *end;
    errno = 0;
    long v = strtol(w, &end, 10);
    if (!isdigit((unsigned char)*digits) || *end != '\0' || errno != 0 || v < -WEIGHT_MAX
        || v > WEIGHT_MAX) {
        buf_puts(why, "bad weight '");
        buf_append_sanitized(why, w, strlen(w), QUOTE_MAX);
        buf_printf(why, "' (an integer from %d to %d)", -WEIGHT_MAX, WEIGHT_MAX);
        return false;
    }
    *out = (int)v;
    return true;
}

/* The index of domain d in s, adding it (and taking d) if new; else d is freed. */
static size_t intern_domain(struct dnsbl_sites *s, char *d)
{
    for (size_t i = 0; i < s->ndomains; i++) {
        if (strcmp(s->domains[i], d) == 0) {
            free(d);
            return i;
        }
    }
    s->domains = xrealloc(s->domains, (s->ndomains + 1) * sizeof *s->domains);
    s->domains[s->ndomains] = d;
    return s->ndomains++;
}

/* One entry `domain[=filter][*weight]` into e (split as Postfix does: '*' first, then '='). */
static bool parse_entry(struct dnsbl_sites *s, const char *text, struct dnsbl_entry *e,
                        struct buf *why)
{
    char *head = xstrdup(text);
    char *weight = strchr(head, '*');
    if (weight != NULL)
        *weight++ = '\0';
    char *filter = strchr(head, '=');
    if (filter != NULL)
        *filter++ = '\0';
    char *domain = NULL;
    const char *bad = parse_domain(head, strlen(head), &domain);
    bool ok = bad == NULL;
    if (!ok)
        buf_puts(why, bad);
    e->weight = 1;
    e->any = filter == NULL;
    if (ok && filter != NULL)
        ok = parse_filter(filter, e, why);
    if (ok && weight != NULL)
        ok = parse_weight(weight, &e->weight, why);
    if (ok)
        e->domain = intern_domain(s, domain);
    else
        free(domain);
    free(head);
    return ok;
}

struct dnsbl_sites *dnsbl_sites_parse(const struct strlist *entries, struct buf *err)
{
    if (entries->n == 0) {
        buf_puts(err, "no DNSBL sites");
        return NULL;
    }
    struct dnsbl_sites *s = xcalloc(1, sizeof *s);
    s->entries = xcalloc(entries->n, sizeof *s->entries);
    struct buf why = BUF_INIT;
    for (size_t i = 0; i < entries->n; i++) {
        if (!parse_entry(s, entries->v[i], &s->entries[i], &why)) {
            buf_puts(err, "entry '");
            buf_append_sanitized(err, entries->v[i], strlen(entries->v[i]), QUOTE_MAX);
            buf_printf(err, "': %s", buf_cstr(&why));
            buf_release(&why);
            dnsbl_sites_free(s);
            return NULL;
        }
        s->nentries++;
    }
    buf_release(&why);
    return s;
}

void dnsbl_sites_free(struct dnsbl_sites *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->ndomains; i++)
        free(s->domains[i]);
    free(s->domains);
    free(s->entries);
    free(s);
}

/* One octet's set: "7", or "[0;2..3]" with values and runs in increasing order. */
static void format_octet(const uint64_t set[4], struct buf *out)
{
    unsigned count = 0, only = 0;
    for (unsigned v = 0; v < 256; v++) {
        if (has_bit(set, v)) {
            count++;
            only = v;
        }
    }
    if (count == 1) {
        buf_printf(out, "%u", only);
        return;
    }
    buf_putc(out, '[');
    const char *sep = "";
    for (unsigned v = 0; v < 256; v++) {
        if (!has_bit(set, v))
            continue;
        unsigned end = v;
        while (end < 255 && has_bit(set, end + 1))
            end++;
        if (end == v)
            buf_printf(out, "%s%u", sep, v);
        else
            buf_printf(out, "%s%u..%u", sep, v, end);
        sep = ";";
        v = end;
    }
    buf_putc(out, ']');
}

void dnsbl_sites_format(const struct dnsbl_sites *s, struct buf *out)
{
    for (size_t i = 0; i < s->nentries; i++) {
        const struct dnsbl_entry *e = &s->entries[i];
        buf_printf(out, "%s%s", i > 0 ? " " : "", s->domains[e->domain]);
        if (!e->any) {
            for (int k = 0; k < 4; k++) {
                buf_putc(out, k == 0 ? '=' : '.');
                format_octet(e->octet[k], out);
            }
        }
        buf_printf(out, "*%d", e->weight);
    }
}

static bool entry_match(const struct dnsbl_entry *e, struct in_addr a)
{
    if (e->any)
        return true;
    const unsigned char *o = (const unsigned char *)&a.s_addr;    /* network order */
    for (int k = 0; k < 4; k++) {
        if (!has_bit(e->octet[k], o[k]))
            return false;
    }
    return true;
}

bool dnsbl_sites_match(const struct dnsbl_sites *s, size_t i, struct in_addr a)
{
    return i < s->nentries && entry_match(&s->entries[i], a);
}

/* ---- checks ---------------------------------------------------------------------------------- */

/* A timeout, as opposed to a server that said no: dns.c's deadline, or c-ares giving up. */
static bool is_timeout(const char *error)
{
    return error != NULL
           && (strcmp(error, "DNS lookup timed out") == 0
               || strcmp(error, ares_strerror(ARES_ETIMEOUT)) == 0);
}

/* Why an A answer cannot be a listing (RFC 5782 section 2.3 wants 127.0.0.0/8), or NULL. */
static const char *bad_answer(struct in_addr a)
{
    uint32_t h = ntohl(a.s_addr);
    if (h >> 24 != 127)
        return "answer outside 127.0.0.0/8";
    if (h >> 8 == 0x7fffff)
        return "answer in 127.255.255.0/24: query refused by the list";
    return NULL;
}

static void slot_log(const struct dnsbl_slot *sl, enum log_level level, const char *event,
                     const char *answer, const char *error)
{
    const struct dnsbl_check *c = sl->c;
    struct log_ctx ctx = { .client = c->client };
    struct logrec lr;
    if (!log_begin(&lr, level, event, &ctx))
        return;
    log_str(&lr, "domain", c->s->domains[sl - c->slot]);
    if (answer != NULL)
        log_str(&lr, "answer", answer);
    log_str(&lr, "error", error);
    log_end(&lr);
}

static void check_free(struct dnsbl_check *c)
{
    for (size_t i = 0; i < c->s->ndomains; i++)
        free(c->slot[i].a);
    free(c);
}

/* Scores every entry against its domain's answers, tells the owner, and frees c. */
static void check_finish(struct dnsbl_check *c)
{
    const struct dnsbl_sites *s = c->s;
    struct dnsbl_verdict v = { 0, BUF_INIT, 0, 0, 0 };
    long long score = 0;
    for (size_t i = 0; i < s->nentries; i++) {
        const struct dnsbl_entry *e = &s->entries[i];
        const struct dnsbl_slot *sl = &c->slot[e->domain];
        if (sl->state != SLOT_ANSWERED)
            continue;
        for (size_t j = 0; j < sl->n; j++) {
            if (!entry_match(e, sl->a[j]))
                continue;
            char ip[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &sl->a[j], ip, sizeof ip);
            buf_printf(&v.reasons, "%s%s=%s*%d", v.listed > 0 ? " " : "", s->domains[e->domain],
                       ip, e->weight);
            score += e->weight;
            v.listed++;
            break;
        }
    }
    for (size_t i = 0; i < s->ndomains; i++) {
        v.errors += c->slot[i].state == SLOT_ERROR;
        v.timeouts += c->slot[i].state == SLOT_TIMEOUT || c->slot[i].state == SLOT_PENDING;
    }
    v.score = score > INT_MAX ? INT_MAX : score < INT_MIN ? INT_MIN : (int)score;
    c->done(&v, c->arg);
    buf_release(&v.reasons);
    check_free(c);
}

/* One domain answered (or dns_free() cancelled it): record what it means. */
static void on_answer(struct dns_result *r, void *arg)
{
    struct dnsbl_slot *sl = arg;
    struct dnsbl_check *c = sl->c;
    sl->q = NULL;
    switch (r->status) {
    case DNS_OK: {
        const char *why = NULL;
        size_t j = 0;
        while (j < r->n && (why = bad_answer(r->a[j])) == NULL)
            j++;
        if (why != NULL) {
            char ip[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &r->a[j], ip, sizeof ip);
            sl->state = SLOT_ERROR;
            slot_log(sl, LOG_WARN, "dnsbl_bad_answer", ip, why);
        } else {
            sl->state = SLOT_ANSWERED;
            sl->a = r->a;
            sl->n = r->n;
            r->a = NULL;
        }
        break;
    }
    case DNS_NOTFOUND:
        sl->state = SLOT_ANSWERED;     /* NXDOMAIN or no A record: not listed */
        break;
    case DNS_CANCELLED:
        sl->state = SLOT_TIMEOUT;      /* the resolver went away before the answer came */
        break;
    case DNS_TEMPFAIL:
    case DNS_NULLMX:
    default:
        sl->state = is_timeout(r->error) ? SLOT_TIMEOUT : SLOT_ERROR;
        slot_log(sl, LOG_INFO, "dnsbl_lookup_failed", NULL, r->error);
        break;
    }
    if (--c->pending == 0)
        check_finish(c);
}

struct dnsbl_check *dnsbl_check_start(struct dns *dns, const struct dnsbl_sites *s,
                                      const struct sockaddr *client, dnsbl_done_fn *done,
                                      void *arg)
{
    struct dnsbl_check *c = xcalloc(1, sizeof *c + s->ndomains * sizeof c->slot[0]);
    c->s = s;
    c->done = done;
    c->arg = arg;
    c->pending = s->ndomains;
    netaddr_ip_string(client, c->client, sizeof c->client);
    struct buf name = BUF_INIT;
    for (size_t i = 0; i < s->ndomains; i++) {
        struct dnsbl_slot *sl = &c->slot[i];
        sl->c = c;
        sl->state = SLOT_PENDING;
        buf_reset(&name);
        /* Not an IP address: "" is no DNS name, so dns.c answers "not found" from the loop. */
        if (!dns_reverse_name(client, s->domains[i], &name))
            buf_reset(&name);
        sl->q = dns_a(dns, buf_cstr(&name), on_answer, sl);
    }
    buf_release(&name);
    return c;
}

void dnsbl_check_finish_now(struct dnsbl_check *c)
{
    for (size_t i = 0; i < c->s->ndomains; i++) {
        struct dnsbl_slot *sl = &c->slot[i];
        if (sl->state == SLOT_PENDING) {
            dns_cancel(sl->q);
            sl->q = NULL;
            sl->state = SLOT_TIMEOUT;
        }
    }
    c->pending = 0;
    check_finish(c);
}

void dnsbl_check_cancel(struct dnsbl_check *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->s->ndomains; i++)
        dns_cancel(c->slot[i].q);
    check_free(c);
}
