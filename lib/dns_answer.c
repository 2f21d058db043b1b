/*
 * dns_answer.c - what a DNS answer means (see dns_answer.h): the RFC rules applied to the
 * answers c-ares parses, producing the struct dns_result that dns.h documents.
 *
 * Owns nothing beyond the arrays it puts in a result; each array is one malloc'd block that
 * also holds its strings, so a caller keeps one with a single pointer and frees it with free().
 * RFCs: 5321 section 5.1 (MX sorted by preference, ties shuffled; no MX records = implicit MX),
 * 7505 (null MX), 7208 section 3.3 (a TXT record's strings joined), 1035 section 3.5 and 3596
 * (reverse names), 5782 (DNSBL query names). Names in results are lower case without a final
 * dot, so callers compare them with strcmp. An answer c-ares cannot read is DNS_TEMPFAIL
 * ("malformed DNS answer"); running out of memory aborts.
 */
#include "dns_answer.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>

#include "log.h"
#include "mem.h"

#define LABEL_MAX 63
#define MAX_ADDRS 256       /* per family and answer; a sane answer holds far fewer */
#define T_A 1
#define T_AAAA 28

bool dns_name_normalize(const char *in, char out[DNS_NAME_MAX + 1])
{
    size_t len = strlen(in);
    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len > DNS_NAME_MAX)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (c <= 0x20 || c >= 0x7f || c == '\\' || ++label > LABEL_MAX) {
            return false;   /* IDNs travel as A-labels */
        }
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    if (label == 0)
        return false;
    out[len] = '\0';
    return true;
}

/* A name from an answer, in result form, in place; its length ("" for the root). */
static size_t name_clean(char *s)
{
    size_t len = strlen(s);
    if (len > 0 && s[len - 1] == '.')
        s[--len] = '\0';
    for (size_t i = 0; i < len; i++) {
        if (s[i] >= 'A' && s[i] <= 'Z')
            s[i] = (char)(s[i] + ('a' - 'A'));
    }
    return len;
}

bool dns_reverse_name(const struct sockaddr *sa, const char *suffix, struct buf *out)
{
    const unsigned char *v4 = NULL, *v6 = NULL;
    if (sa->sa_family == AF_INET) {
        v4 = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            v4 = &a->s6_addr[12];
        else
            v6 = a->s6_addr;
    } else {
        return false;
    }
    if (v4 != NULL) {
        buf_printf(out, "%u.%u.%u.%u.%s", v4[3], v4[2], v4[1], v4[0],
                   suffix != NULL ? suffix : "in-addr.arpa");
        return true;
    }
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        char nib[4] = { hex[v6[i] & 0xf], '.', hex[v6[i] >> 4], '.' };
        buf_append(out, nib, sizeof nib);
    }
    buf_puts(out, suffix != NULL ? suffix : "ip6.arpa");
    return true;
}

void dns_mx_sort(struct dns_mx *mx, size_t n, uint32_t (*rnd)(uint32_t bound, void *arg),
                 void *rnd_arg)
{
    /* Insertion sort: stable, and MX lists are short. */
    for (size_t i = 1; i < n; i++) {
        struct dns_mx t = mx[i];
        size_t j = i;
        for (; j > 0 && mx[j - 1].pref > t.pref; j--)
            mx[j] = mx[j - 1];
        mx[j] = t;
    }
    for (size_t i = 0; i < n;) {
        size_t end = i + 1;
        while (end < n && mx[end].pref == mx[i].pref)
            end++;
        for (size_t k = end - 1; k > i; k--) {      /* Fisher-Yates over [i, end) */
            uint32_t bound = (uint32_t)(k - i + 1);
            size_t r = i + (rnd != NULL ? rnd(bound, rnd_arg) % bound : arc4random_uniform(bound));
            struct dns_mx t = mx[k];
            mx[k] = mx[r];
            mx[r] = t;
        }
        i = end;
    }
}

void dns_result_clear(struct dns_result *r)
{
    free(r->mx);
    free(r->addrs);
    free(r->a);
    free(r->txt);
    free(r->names);
    memset(r, 0, sizeof *r);
}

void dns_result_fail(struct dns_result *r, enum dns_status st, bool nxdomain, const char *error)
{
    dns_result_clear(r);
    r->status = st;
    r->nxdomain = nxdomain;
    r->error = error;
}

/* Sets r from a query status that is not ARES_SUCCESS. */
static void query_failed(struct dns_result *r, int status)
{
    if (status == ARES_ENOMEM)
        log_panic("dns: c-ares out of memory");
    bool notfound = status == ARES_ENOTFOUND || status == ARES_ENODATA;
    dns_result_fail(r, notfound ? DNS_NOTFOUND : DNS_TEMPFAIL, status == ARES_ENOTFOUND,
                    ares_strerror(status));
}

/* Sets r from an ares_parse_*() status that is not ARES_SUCCESS. */
static void parse_failed(struct dns_result *r, int rc)
{
    if (rc == ARES_ENOMEM)
        log_panic("dns: c-ares out of memory");
    if (rc == ARES_ENODATA)     /* e.g. only a CNAME whose target has no such record */
        dns_result_fail(r, DNS_NOTFOUND, false, ares_strerror(rc));
    else
        dns_result_fail(r, DNS_TEMPFAIL, false, "malformed DNS answer");
}

/*
 * One block: an array of n elements of elem bytes, then n strings; copies[i] is set to where
 * strs[i] (lens[i] bytes, NUL added) went.
 */
static void *pack(size_t n, size_t elem, char *const *strs, const size_t *lens, char **copies)
{
    size_t total = n * elem;
    for (size_t i = 0; i < n; i++)
        total += lens[i] + 1;
    char *block = xmalloc(total);
    char *p = block + n * elem;
    for (size_t i = 0; i < n; i++) {
        memcpy(p, strs[i], lens[i]);
        p[lens[i]] = '\0';
        copies[i] = p;
        p += lens[i] + 1;
    }
    return block;
}

/* The index of s among v[0..n), or n. */
static size_t find_str(char *const *v, size_t n, const char *s)
{
    size_t i = 0;
    while (i < n && strcmp(v[i], s) != 0)
        i++;
    return i;
}

/* RFC 5321 section 5.1: a domain without MX records is its own exchanger, preference 0. */
static void mx_implicit(struct dns_result *r, const char *domain)
{
    char *name = (char *)domain;
    size_t len = strlen(domain);
    char *copy;
    dns_result_clear(r);
    r->mx = pack(1, sizeof *r->mx, &name, &len, &copy);
    r->mx[0].host = copy;
    r->mx[0].pref = 0;
    r->n = 1;
    r->implicit = true;
    r->status = DNS_OK;
}

void dns_answer_mx(struct dns_result *r, const char *domain, int status, const unsigned char *abuf,
                   int alen)
{
    struct ares_mx_reply *list = NULL;
    int rc = status == ARES_SUCCESS ? ares_parse_mx_reply(abuf, alen, &list) : status;
    if (rc == ARES_SUCCESS && list == NULL)
        rc = ARES_ENODATA;      /* c-ares 1.18 says SUCCESS for an answer with only a CNAME */
    if (rc == ARES_ENODATA) {
        mx_implicit(r, domain);     /* NODATA, or only a CNAME with no MX at its end */
        return;
    }
    if (rc != ARES_SUCCESS) {
        if (status == ARES_SUCCESS)
            parse_failed(r, rc);
        else
            query_failed(r, status);
        return;
    }
    size_t n = 0, kept = 0;
    for (struct ares_mx_reply *m = list; m != NULL; m = m->next)
        n++;
    char **hosts = xcalloc(n, sizeof *hosts);
    size_t *lens = xcalloc(n, sizeof *lens);
    unsigned *prefs = xcalloc(n, sizeof *prefs);
    for (struct ares_mx_reply *m = list; m != NULL; m = m->next) {
        size_t len = name_clean(m->host);
        if (len == 0)
            continue;       /* "." (RFC 7505): nobody to deliver to */
        size_t j = find_str(hosts, kept, m->host);
        if (j < kept) {     /* listed twice: keep the better preference */
            if (m->priority < prefs[j])
                prefs[j] = m->priority;
            continue;
        }
        hosts[kept] = m->host;
        lens[kept] = len;
        prefs[kept++] = m->priority;
    }
    dns_result_clear(r);
    if (kept == 0) {
        r->status = DNS_NULLMX;     /* every target was "." */
        r->error = "null MX: the domain accepts no mail";
    } else {
        char **copies = xcalloc(kept, sizeof *copies);
        r->mx = pack(kept, sizeof *r->mx, hosts, lens, copies);
        for (size_t i = 0; i < kept; i++) {
            r->mx[i].host = copies[i];
            r->mx[i].pref = prefs[i];
        }
        r->n = kept;
        dns_mx_sort(r->mx, kept, NULL, NULL);
        r->status = DNS_OK;
        free(copies);
    }
    free(hosts);
    free(lens);
    free(prefs);
    ares_free_data(list);
}

void dns_answer_addrs(struct dns_result *r, int type, int status, const unsigned char *abuf,
                      int alen)
{
    if (status != ARES_SUCCESS) {
        query_failed(r, status);
        return;
    }
    struct ares_addrttl v4[MAX_ADDRS];
    struct ares_addr6ttl v6[MAX_ADDRS];
    int cnt = MAX_ADDRS;
    int rc = type == T_A ? ares_parse_a_reply(abuf, alen, NULL, v4, &cnt)
                         : ares_parse_aaaa_reply(abuf, alen, NULL, v6, &cnt);
    if (rc == ARES_SUCCESS && cnt <= 0)
        rc = ARES_ENODATA;
    if (rc != ARES_SUCCESS) {
        parse_failed(r, rc);
        return;
    }
    dns_result_clear(r);
    r->addrs = xcalloc((size_t)cnt, sizeof *r->addrs);
    r->n = (size_t)cnt;
    unsigned ttl = UINT_MAX;
    for (int i = 0; i < cnt; i++) {
        int t;
        if (type == T_A) {
            struct sockaddr_in *sin = (struct sockaddr_in *)&r->addrs[i];
            sin->sin_family = AF_INET;
            sin->sin_addr = v4[i].ipaddr;
            t = v4[i].ttl;
        } else {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&r->addrs[i];
            sin6->sin6_family = AF_INET6;
            memcpy(&sin6->sin6_addr, &v6[i].ip6addr, sizeof sin6->sin6_addr);
            t = v6[i].ttl;
        }
        if (t >= 0 && (unsigned)t < ttl)
            ttl = (unsigned)t;
    }
    r->ttl = ttl == UINT_MAX ? 0 : ttl;
    r->status = DNS_OK;
}

void dns_answer_a(struct dns_result *r, int status, const unsigned char *abuf, int alen)
{
    dns_answer_addrs(r, T_A, status, abuf, alen);
    if (r->status != DNS_OK)
        return;
    r->a = xcalloc(r->n, sizeof *r->a);
    for (size_t i = 0; i < r->n; i++)
        r->a[i] = ((const struct sockaddr_in *)&r->addrs[i])->sin_addr;
    free(r->addrs);
    r->addrs = NULL;
}

void dns_answer_txt(struct dns_result *r, int status, const unsigned char *abuf, int alen)
{
    if (status != ARES_SUCCESS) {
        query_failed(r, status);
        return;
    }
    struct ares_txt_ext *list = NULL;
    int rc = ares_parse_txt_reply_ext(abuf, alen, &list);
    if (rc == ARES_SUCCESS && list == NULL)
        rc = ARES_ENODATA;      /* only a CNAME (see dns_answer_mx) */
    if (rc != ARES_SUCCESS) {
        parse_failed(r, rc);
        return;
    }
    size_t n = 0;
    for (struct ares_txt_ext *t = list; t != NULL; t = t->next)
        n += t == list || t->record_start;
    struct buf *joined = xcalloc(n, sizeof *joined);
    char **strs = xcalloc(n, sizeof *strs);
    size_t *lens = xcalloc(n, sizeof *lens);
    char **copies = xcalloc(n, sizeof *copies);
    size_t i = 0;
    for (struct ares_txt_ext *t = list; t != NULL; t = t->next) {
        if (t != list && t->record_start)
            i++;
        buf_append(&joined[i], t->txt, t->length);
    }
    for (i = 0; i < n; i++) {
        strs[i] = joined[i].data != NULL ? joined[i].data : "";
        lens[i] = joined[i].len;
    }
    dns_result_clear(r);
    r->txt = pack(n, sizeof *r->txt, strs, lens, copies);
    for (i = 0; i < n; i++) {
        r->txt[i].data = copies[i];
        r->txt[i].len = lens[i];
        buf_release(&joined[i]);
    }
    r->n = n;
    r->status = DNS_OK;
    free(joined);
    free(strs);
    free(lens);
    free(copies);
    ares_free_data(list);
}

void dns_answer_ptr(struct dns_result *r, int status, const unsigned char *abuf, int alen)
{
    if (status != ARES_SUCCESS) {
        query_failed(r, status);
        return;
    }
    /* The address only fills h_addr_list, which is not used: any 4 bytes do. */
    static const unsigned char any[4];
    struct hostent *h = NULL;
    int rc = ares_parse_ptr_reply(abuf, alen, any, sizeof any, AF_INET, &h);
    if (rc != ARES_SUCCESS) {
        parse_failed(r, rc);
        return;
    }
    /* Every PTR target is among the aliases, in answer order; h_name repeats one of them. */
    size_t n = 1, kept = 0;
    for (char **a = h->h_aliases; a != NULL && *a != NULL; a++)
        n++;
    char **strs = xcalloc(n, sizeof *strs);
    size_t *lens = xcalloc(n, sizeof *lens);
    for (size_t i = 0; i < n; i++) {
        char *s = i + 1 < n ? h->h_aliases[i] : h->h_name;
        size_t len = s != NULL ? name_clean(s) : 0;
        if (len > 0 && find_str(strs, kept, s) == kept) {
            strs[kept] = s;
            lens[kept++] = len;
        }
    }
    dns_result_clear(r);
    if (kept == 0) {
        r->status = DNS_NOTFOUND;
        r->error = "no PTR names";
    } else {
        char **copies = xcalloc(kept, sizeof *copies);
        r->names = pack(kept, sizeof *r->names, strs, lens, copies);
        memcpy(r->names, copies, kept * sizeof *copies);
        r->n = kept;
        r->status = DNS_OK;
        free(copies);
    }
    free(strs);
    free(lens);
    ares_free_hostent(h);
}

void dns_answer_merge_addrs(struct dns_result *r, const struct dns_result *const *parts, size_t n,
                            int port)
{
    size_t total = 0;
    unsigned ttl = UINT_MAX;
    const char *fail = NULL;
    bool nx = false;
    for (size_t i = 0; i < n; i++) {
        const struct dns_result *p = parts[i];
        if (p == NULL) {
            if (fail == NULL)
                fail = "DNS lookup timed out";
        } else if (p->status == DNS_OK) {
            total += p->n;
            ttl = p->ttl < ttl ? p->ttl : ttl;
        } else if (p->status == DNS_TEMPFAIL && fail == NULL) {
            fail = p->error;
        } else {
            nx |= p->nxdomain;
        }
    }
    dns_result_clear(r);
    if (total == 0) {
        if (fail != NULL)
            dns_result_fail(r, DNS_TEMPFAIL, false, fail);
        else
            dns_result_fail(r, DNS_NOTFOUND, nx, n > 0 ? parts[0]->error : "no addresses");
        return;
    }
    r->addrs = xcalloc(total, sizeof *r->addrs);
    for (int fam = 0; fam < 2; fam++) {
        for (size_t i = 0; i < n; i++) {
            const struct dns_result *p = parts[i];
            for (size_t j = 0; p != NULL && p->status == DNS_OK && j < p->n; j++) {
                struct sockaddr_storage ss = p->addrs[j];
                if ((ss.ss_family == AF_INET6) != (fam == 0))
                    continue;
                if (ss.ss_family == AF_INET)
                    ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
                else
                    ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
                r->addrs[r->n++] = ss;
            }
        }
    }
    r->ttl = ttl;
    r->status = DNS_OK;
}
