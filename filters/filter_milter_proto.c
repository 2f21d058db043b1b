/*
 * filter_milter_proto.c - the milter protocol codec, MTA side (see filter_milter.h).
 *
 * Wire format (Sendmail 8 milter protocol, version 6): every packet is a 32-bit big-endian length
 * (command byte included), one command byte, then data; strings end with a NUL, integers are
 * 32-bit (16-bit for the client port) big-endian. Encoding appends whole packets to a struct buf;
 * decoding reads one packet that the caller holds and points into it. Also the plain data around
 * the wire format: the macro table and per-stage macro lists, the list of modifications (which own
 * copies of their strings), endpoint specs and client addresses. No I/O, no event loop; input
 * that breaks the protocol is reported as an enum milter_perr, nothing else fails (memory
 * exhaustion aborts).
 */
#include "filter_milter.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "log.h"
#include "mem.h"

const char *milter_perr_str(enum milter_perr e)
{
    switch (e) {
    case MILTER_P_OK: return "ok";
    case MILTER_P_MORE: return "incomplete packet";
    case MILTER_P_ZERO: return "packet length 0";
    case MILTER_P_TOOBIG: return "packet length over the bound";
    case MILTER_P_SHORT: return "packet too short for its fields";
    case MILTER_P_TRAILING: return "bytes after the last field";
    case MILTER_P_NONUL: return "string without NUL terminator";
    case MILTER_P_REPLYCODE: return "malformed reply code text";
    case MILTER_P_UNKNOWN: return "unknown reply command";
    case MILTER_P_TEXT: return "empty or forbidden bytes in a name, value or address";
    case MILTER_P_VERSION: return "unsupported protocol version";
    case MILTER_P_ACTIONS: return "actions that were not offered";
    case MILTER_P_SYMLIST: return "macro lists without SMFIF_SETSYMLIST";
    }
    return "?";
}

/* ---- encoding ---- */

static void put32(struct buf *b, uint32_t v)
{
    unsigned char x[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8),
                           (unsigned char)v };
    buf_append(b, x, 4);
}

/* Starts a packet; returns the offset of its length field, patched by end_pkt(). */
static size_t begin_pkt(struct buf *b, char cmd)
{
    size_t at = b->len;
    put32(b, 0);
    buf_putc(b, cmd);
    return at;
}

static void end_pkt(struct buf *b, size_t at)
{
    size_t len = b->len - at - 4;
    if (len > UINT32_MAX)
        log_panic("milter packet of %zu bytes", len);
    unsigned char *p = (unsigned char *)b->data + at;
    p[0] = (unsigned char)(len >> 24);
    p[1] = (unsigned char)(len >> 16);
    p[2] = (unsigned char)(len >> 8);
    p[3] = (unsigned char)len;
}

/* Appends s with its NUL. */
static void put_str(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s) + 1);
}

void milter_enc_optneg(struct buf *b, uint32_t version, uint32_t actions, uint32_t proto)
{
    size_t at = begin_pkt(b, SMFIC_OPTNEG);
    put32(b, version);
    put32(b, actions);
    put32(b, proto);
    end_pkt(b, at);
}

void milter_enc_macros(struct buf *b, char cmd, const char *const *names, const char *const *values, size_t n)
{
    size_t at = begin_pkt(b, SMFIC_MACRO);
    buf_putc(b, cmd);
    for (size_t i = 0; i < n; i++) {
        put_str(b, names[i]);
        put_str(b, values[i]);
    }
    end_pkt(b, at);
}

void milter_enc_connect(struct buf *b, const char *hostname, const struct sockaddr *sa)
{
    size_t at = begin_pkt(b, SMFIC_CONNECT);
    put_str(b, hostname);
    char addr[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
    unsigned port;
    char family = milter_addr(sa, addr, sizeof addr, &port);
    buf_putc(b, family);
    if (family != SMFIA_UNKNOWN) {
        unsigned char p[2] = { (unsigned char)(port >> 8), (unsigned char)port };
        buf_append(b, p, 2);
        put_str(b, addr);
    }
    end_pkt(b, at);
}

void milter_enc_helo(struct buf *b, const char *helo)
{
    size_t at = begin_pkt(b, SMFIC_HELO);
    put_str(b, helo);
    end_pkt(b, at);
}

void milter_enc_envelope(struct buf *b, char cmd, const char *addr, const char *const *args, size_t nargs)
{
    size_t at = begin_pkt(b, cmd);
    put_str(b, addr);
    for (size_t i = 0; i < nargs; i++)
        put_str(b, args[i]);
    end_pkt(b, at);
}

void milter_enc_header(struct buf *b, const char *name, const char *value)
{
    size_t at = begin_pkt(b, SMFIC_HEADER);
    put_str(b, name);
    put_str(b, value);
    end_pkt(b, at);
}

void milter_enc_body(struct buf *b, char cmd, const void *data, size_t n)
{
    size_t at = begin_pkt(b, cmd);
    buf_append(b, data, n);
    end_pkt(b, at);
}

void milter_enc_unknown(struct buf *b, const char *line)
{
    size_t at = begin_pkt(b, SMFIC_UNKNOWN);
    put_str(b, line);
    end_pkt(b, at);
}

void milter_enc_cmd(struct buf *b, char cmd)
{
    end_pkt(b, begin_pkt(b, cmd));
}

/* ---- decoding ---- */

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

enum milter_perr milter_frame(const unsigned char *p, size_t n, size_t max, uint32_t *len)
{
    if (n < 4)
        return MILTER_P_MORE;
    uint32_t l = *len = get32(p);
    if (l == 0)
        return MILTER_P_ZERO;
    if (l > max)
        return MILTER_P_TOOBIG;
    return n - 4 < l ? MILTER_P_MORE : MILTER_P_OK;
}

/* A cursor over a packet's data. */
struct rd {
    const unsigned char *p;
    size_t n;
};

static enum milter_perr rd_u32(struct rd *r, uint32_t *v)
{
    if (r->n < 4)
        return MILTER_P_SHORT;
    *v = get32(r->p);
    r->p += 4;
    r->n -= 4;
    return MILTER_P_OK;
}

static enum milter_perr rd_str(struct rd *r, const char **s)
{
    const unsigned char *nul = memchr(r->p, '\0', r->n);
    if (nul == NULL)
        return MILTER_P_NONUL;
    *s = (const char *)r->p;
    r->n -= (size_t)(nul - r->p) + 1;
    r->p = nul + 1;
    return MILTER_P_OK;
}

/* A header name: printable ASCII but ':' (RFC 5322 §2.2), at least one byte. */
static bool good_name(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 33 || (unsigned char)*s > 126 || *s == ':')
            return false;
    return true;
}

/* A header value: CR and LF only as a fold ("\n" or "\r\n" followed by a space or a tab), so
 * that no value can end the header block or start another header. */
static bool good_value(const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\r' && s[1] == '\n')
            s++;
        else if (*s == '\r')
            return false;
        if (*s == '\n' && s[1] != ' ' && s[1] != '\t')
            return false;
    }
    return true;
}

/* An address or ESMTP arguments: no control characters (8-bit bytes allowed, RFC 6531). */
static bool good_line(const char *s, bool allow_empty)
{
    if (*s == '\0')
        return allow_empty;
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

/* Two strings name, value; both must pass the header checks. */
static enum milter_perr rd_header(struct rd *d, struct milter_reply *r)
{
    enum milter_perr e;
    if ((e = rd_str(d, &r->name)) != MILTER_P_OK || (e = rd_str(d, &r->value)) != MILTER_P_OK)
        return e;
    if (d->n != 0)
        return MILTER_P_TRAILING;
    return good_name(r->name) && good_value(r->value) ? MILTER_P_OK : MILTER_P_TEXT;
}

/* An address, then (if more) one string of ESMTP arguments. */
static enum milter_perr rd_addr(struct rd *d, struct milter_reply *r, bool args)
{
    enum milter_perr e;
    if ((e = rd_str(d, &r->name)) != MILTER_P_OK)
        return e;
    r->value = NULL;
    if (args && d->n > 0 && (e = rd_str(d, &r->value)) != MILTER_P_OK)
        return e;
    if (d->n != 0)
        return MILTER_P_TRAILING;
    if (r->value != NULL && r->value[0] == '\0')
        r->value = NULL;
    if (!good_line(r->name, false) || (r->value != NULL && !good_line(r->value, true)))
        return MILTER_P_TEXT;
    return MILTER_P_OK;
}

static enum milter_perr rd_optneg(struct rd *d, struct milter_reply *r)
{
    enum milter_perr e;
    if ((e = rd_u32(d, &r->version)) != MILTER_P_OK || (e = rd_u32(d, &r->actions)) != MILTER_P_OK ||
        (e = rd_u32(d, &r->proto)) != MILTER_P_OK)
        return e;
    /* v6 macro lists: (stage, "names") pairs; an unknown stage is ignored, as Postfix does */
    while (d->n > 0) {
        uint32_t stage;
        const char *list;
        if ((e = rd_u32(d, &stage)) != MILTER_P_OK || (e = rd_str(d, &list)) != MILTER_P_OK)
            return e;
        if (stage < MILTER_STAGES)
            r->symlist[stage] = list;
    }
    return MILTER_P_OK;
}

enum milter_perr milter_decode(const unsigned char *pkt, size_t len, struct milter_reply *r)
{
    memset(r, 0, sizeof *r);
    if (len == 0)
        return MILTER_P_ZERO;
    r->cmd = (char)pkt[0];
    struct rd d = { pkt + 1, len - 1 };
    enum milter_perr e;
    switch (r->cmd) {
    case SMFIR_ACCEPT:
    case SMFIR_CONTINUE:
    case SMFIR_DISCARD:
    case SMFIR_REJECT:
    case SMFIR_TEMPFAIL:
    case SMFIR_SKIP:
    case SMFIR_PROGRESS:
    case SMFIR_CONN_FAIL:
    case SMFIR_SHUTDOWN:
        return d.n == 0 ? MILTER_P_OK : MILTER_P_TRAILING;
    case SMFIC_OPTNEG:
        return rd_optneg(&d, r);
    case SMFIR_REPLYCODE: {
        const char *text;
        if ((e = rd_str(&d, &text)) != MILTER_P_OK)
            return e;
        if (d.n != 0)
            return MILTER_P_TRAILING;
        return milter_replycode(text, &r->code, r->reply);
    }
    case SMFIR_ADDHEADER:
        return rd_header(&d, r);
    case SMFIR_INSHEADER:
    case SMFIR_CHGHEADER:
        if ((e = rd_u32(&d, &r->index)) != MILTER_P_OK)
            return e;
        if (r->cmd == SMFIR_CHGHEADER && r->index == 0)
            r->index = 1;   /* Sendmail treats 0 as the first occurrence */
        if (r->cmd == SMFIR_CHGHEADER) {
            /* an empty value deletes the header, so only the name must be non-empty */
            if ((e = rd_str(&d, &r->name)) != MILTER_P_OK || (e = rd_str(&d, &r->value)) != MILTER_P_OK)
                return e;
            if (d.n != 0)
                return MILTER_P_TRAILING;
            return good_name(r->name) && good_value(r->value) ? MILTER_P_OK : MILTER_P_TEXT;
        }
        return rd_header(&d, r);
    case SMFIR_CHGFROM:
    case SMFIR_ADDRCPT_PAR:
        return rd_addr(&d, r, true);
    case SMFIR_ADDRCPT:
    case SMFIR_DELRCPT:
        return rd_addr(&d, r, false);
    case SMFIR_REPLBODY:
        r->body = d.p;
        r->bodylen = d.n;
        return MILTER_P_OK;
    case SMFIR_QUARANTINE:
        if ((e = rd_str(&d, &r->value)) != MILTER_P_OK)
            return e;
        return d.n == 0 ? MILTER_P_OK : MILTER_P_TRAILING;
    default:
        return MILTER_P_UNKNOWN;
    }
}

enum milter_perr milter_negotiate(const struct milter_reply *r, uint32_t my_actions, uint32_t my_proto,
                                  uint32_t *proto)
{
    if (r->version < 2 || r->version > MILTER_MY_VERSION)
        return MILTER_P_VERSION;
    if ((r->actions & ~my_actions) != 0)
        return MILTER_P_ACTIONS;
    if ((r->actions & SMFIF_SETSYMLIST) == 0)
        for (int i = 0; i < MILTER_STAGES; i++)
            if (r->symlist[i] != NULL)
                return MILTER_P_SYMLIST;
    *proto = r->proto & my_proto;
    return MILTER_P_OK;
}

/* ---- modifications ---- */

uint32_t milter_mod_action(char cmd, enum milter_mod_type *type)
{
    switch (cmd) {
    case SMFIR_ADDHEADER: *type = MM_ADDHEADER; return SMFIF_ADDHDRS;
    case SMFIR_INSHEADER: *type = MM_INSHEADER; return SMFIF_ADDHDRS;
    case SMFIR_CHGHEADER: *type = MM_CHGHEADER; return SMFIF_CHGHDRS;
    case SMFIR_CHGFROM: *type = MM_CHGFROM; return SMFIF_CHGFROM;
    case SMFIR_ADDRCPT: *type = MM_ADDRCPT; return SMFIF_ADDRCPT;
    case SMFIR_ADDRCPT_PAR: *type = MM_ADDRCPT_PAR; return SMFIF_ADDRCPT_PAR;
    case SMFIR_DELRCPT: *type = MM_DELRCPT; return SMFIF_DELRCPT;
    case SMFIR_REPLBODY: *type = MM_REPLBODY; return SMFIF_CHGBODY;
    case SMFIR_QUARANTINE: *type = MM_QUARANTINE; return SMFIF_QUARANTINE;
    default: return 0;
    }
}

bool milter_mods_add(struct milter_mods *mm, const struct milter_reply *r, const char *milter, size_t *replbody)
{
    enum milter_mod_type type;
    if (milter_mod_action(r->cmd, &type) == 0)
        log_panic("milter reply 0x%02x is no modification", (unsigned char)r->cmd);
    if (type == MM_REPLBODY && *replbody > 0) {
        struct buf *b = &mm->v[*replbody - 1].body;
        if (r->bodylen > MILTER_REPLBODY_MAX - b->len)
            return false;
        buf_append(b, r->body, r->bodylen);
        return true;
    }
    if (mm->n == mm->cap) {
        mm->cap = mm->cap ? mm->cap * 2 : 8;
        mm->v = xrealloc(mm->v, mm->cap * sizeof *mm->v);
    }
    struct milter_mod *mod = &mm->v[mm->n++];
    memset(mod, 0, sizeof *mod);
    mod->type = type;
    mod->milter = milter;
    mod->index = r->index;
    mod->name = r->name != NULL ? xstrdup(r->name) : NULL;
    if (type == MM_QUARANTINE) {
        struct buf b = BUF_INIT;
        buf_append_sanitized(&b, r->value, strlen(r->value), 200);
        mod->value = buf_steal(&b);
    } else {
        mod->value = r->value != NULL ? xstrdup(r->value) : NULL;
    }
    if (type == MM_REPLBODY) {
        buf_append(&mod->body, r->body, r->bodylen);
        *replbody = mm->n;
    }
    return true;
}

void milter_mods_truncate(struct milter_mods *mm, size_t k)
{
    for (size_t i = k; i < mm->n; i++) {
        free(mm->v[i].name);
        free(mm->v[i].value);
        buf_release(&mm->v[i].body);
    }
    if (mm->n > k)
        mm->n = k;
}

void milter_mods_release(struct milter_mods *mm)
{
    milter_mods_truncate(mm, 0);
    free(mm->v);
    mm->v = NULL;
    mm->cap = 0;
}

/* ---- macros ---- */

/* The canonical form of a macro name: one character bare, longer ones in braces. */
static void canon(const char *name, size_t n, char *out, size_t outlen)
{
    if (n >= 2 && name[0] == '{' && name[n - 1] == '}')
        name++, n -= 2;
    if (n == 1)
        snprintf(out, outlen, "%c", name[0]);
    else
        snprintf(out, outlen, "{%.*s}", (int)n, name);
}

void milter_macros_set(struct milter_macros *mm, const char *name, const char *value)
{
    char key[128];
    canon(name, strlen(name), key, sizeof key);
    for (size_t i = 0; i < mm->n; i++) {
        if (strcmp(mm->v[i].name, key) == 0) {
            free(mm->v[i].value);
            if (value != NULL) {
                mm->v[i].value = xstrdup(value);
            } else {
                free(mm->v[i].name);
                mm->v[i] = mm->v[--mm->n];
            }
            return;
        }
    }
    if (value == NULL)
        return;
    mm->v = xrealloc(mm->v, (mm->n + 1) * sizeof *mm->v);
    mm->v[mm->n].name = xstrdup(key);
    mm->v[mm->n].value = xstrdup(value);
    mm->n++;
}

const char *milter_macros_get(const struct milter_macros *mm, const char *name)
{
    char key[128];
    canon(name, strlen(name), key, sizeof key);
    for (size_t i = 0; i < mm->n; i++)
        if (strcmp(mm->v[i].name, key) == 0)
            return mm->v[i].value;
    return NULL;
}

void milter_macros_release(struct milter_macros *mm)
{
    for (size_t i = 0; i < mm->n; i++) {
        free(mm->v[i].name);
        free(mm->v[i].value);
    }
    free(mm->v);
    mm->v = NULL;
    mm->n = 0;
}

void milter_enc_stage_macros(struct buf *b, char cmd, const char *list, const struct milter_macros *mm)
{
    const char *names[MILTER_MACROS_MAX], *values[MILTER_MACROS_MAX];
    char keys[MILTER_MACROS_MAX][128];
    size_t n = 0;
    for (const char *p = list; *p != '\0' && n < MILTER_MACROS_MAX;) {
        size_t l = strcspn(p, " ,\t");
        if (l > 0 && l < sizeof keys[n] - 2) {
            canon(p, l, keys[n], sizeof keys[n]);
            for (size_t i = 0; i < mm->n; i++) {
                if (strcmp(mm->v[i].name, keys[n]) == 0) {
                    names[n] = mm->v[i].name;
                    values[n++] = mm->v[i].value;
                    break;
                }
            }
        }
        p += l;
        p += strspn(p, " ,\t");
    }
    if (n > 0)
        milter_enc_macros(b, cmd, names, values, n);
}

/* ---- endpoints and addresses ---- */

bool milter_endpoint(const char *spec, struct sockaddr_storage *ss, socklen_t *len, const char **why)
{
    memset(ss, 0, sizeof *ss);
    const char *colon = spec != NULL ? strchr(spec, ':') : NULL;
    if (colon == NULL) {
        *why = "no transport: want inet:port@host or unix:/path";
        return false;
    }
    const char *ep = colon + 1;
    size_t tlen = (size_t)(colon - spec);
    if ((tlen == 4 && memcmp(spec, "unix", 4) == 0) || (tlen == 5 && memcmp(spec, "local", 5) == 0)) {
        struct sockaddr_un *sun = (struct sockaddr_un *)ss;
        if (*ep == '\0' || strlen(ep) >= sizeof sun->sun_path) {
            *why = "bad unix socket path";
            return false;
        }
        sun->sun_family = AF_UNIX;
        strcpy(sun->sun_path, ep);
        *len = sizeof *sun;
        return true;
    }
    if (!((tlen == 4 && memcmp(spec, "inet", 4) == 0) || (tlen == 5 && memcmp(spec, "inet6", 5) == 0))) {
        *why = "unknown transport";
        return false;
    }
    char host[INET6_ADDRSTRLEN + 2], port[8];
    const char *at = strchr(ep, '@'), *h, *p;
    size_t hlen, plen;
    if (at != NULL) {                                   /* port@host (Sendmail) */
        p = ep, plen = (size_t)(at - ep), h = at + 1, hlen = strlen(h);
    } else {                                            /* host:port or [v6]:port (Postfix) */
        const char *last = strrchr(ep, ':');
        if (last == NULL) {
            *why = "no port";
            return false;
        }
        h = ep, hlen = (size_t)(last - ep), p = last + 1, plen = strlen(p);
        if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']')
            h++, hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof host || plen == 0 || plen >= sizeof port) {
        *why = "bad host or port";
        return false;
    }
    memcpy(host, h, hlen), host[hlen] = '\0';
    memcpy(port, p, plen), port[plen] = '\0';
    char *end;
    long pn = strtol(port, &end, 10);
    if (*end != '\0' || pn < 1 || pn > 65535 || port[0] == '+' || port[0] == '-') {
        *why = "bad port";
        return false;
    }
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)pn);
        *len = sizeof *sin;
    } else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)pn);
        *len = sizeof *sin6;
    } else {
        *why = "host is not an IP address";
        return false;
    }
    return true;
}

bool milter_conf_check(const struct milter_conf *conf, struct buf *err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    const char *why;
    if (milter_endpoint(conf->socket, &ss, &len, &why))
        return true;
    buf_printf(err, "milter %s: %s: %s", conf->name, conf->socket != NULL ? conf->socket : "(none)", why);
    return false;
}


char milter_addr(const struct sockaddr *sa, char *addr, size_t addrlen, unsigned *port)
{
    *port = 0;
    addr[0] = '\0';
    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, addr, (socklen_t)addrlen);
        *port = ntohs(sin->sin_port);
        return SMFIA_INET;
    }
    if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        *port = ntohs(sin6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            inet_ntop(AF_INET, &sin6->sin6_addr.s6_addr[12], addr, (socklen_t)addrlen);
            return SMFIA_INET;
        }
        inet_ntop(AF_INET6, &sin6->sin6_addr, addr, (socklen_t)addrlen);
        return SMFIA_INET6;
    }
    if (sa != NULL && sa->sa_family == AF_UNIX) {
        snprintf(addr, addrlen, "%s", ((const struct sockaddr_un *)sa)->sun_path);
        return SMFIA_UNIX;
    }
    return SMFIA_UNKNOWN;
}

/* ---- reply codes ---- */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Length of an enhanced status code "c.d{1,3}.d{1,3}" at s (followed by a space or the end of
 * the line at end), or 0. */
static size_t enhanced_len(const char *s, const char *end)
{
    const char *p = s;
    if (p >= end || !is_digit(*p))
        return 0;
    p++;
    for (int part = 0; part < 2; part++) {
        if (p >= end || *p != '.')
            return 0;
        p++;
        int digits = 0;
        while (p < end && is_digit(*p) && digits < 4) {
            p++;
            digits++;
        }
        if (digits < 1 || digits > 3)
            return 0;
    }
    if (p < end && *p != ' ')
        return 0;
    return (size_t)(p - s);
}

/* Appends the text of one line to out (at *o), "%%" unescaped, lone '%' dropped, bytes outside
 * printable ASCII as '?'; stops when out is full. */
static void put_text(char *out, size_t *o, const char *s, const char *end)
{
    for (; s < end && *o < MILTER_REPLY_MAX - 1; s++) {
        if (*s == '%') {
            if (s + 1 < end && s[1] == '%')
                s++;
            else
                continue;
        }
        unsigned char c = (unsigned char)*s;
        out[(*o)++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
}

enum milter_perr milter_replycode(const char *text, int *code, char out[MILTER_REPLY_MAX])
{
    char status[16] = "";
    size_t o = 0;
    out[0] = '\0';
    if (!((text[0] == '4' || text[0] == '5') && is_digit(text[1]) && is_digit(text[2])))
        return MILTER_P_REPLYCODE;
    for (const char *line = text;;) {
        const char *end = strstr(line, "\r\n");
        bool last = end == NULL;
        if (last)
            end = line + strlen(line);
        if (end - line < 4 || memcmp(line, text, 3) != 0 || line[3] != (last ? ' ' : '-'))
            return MILTER_P_REPLYCODE;
        const char *t = line + 4;
        if (t < end && is_digit(*t) && *t != text[0])
            return MILTER_P_REPLYCODE;  /* an enhanced code of another class (Postfix's check) */
        size_t el = enhanced_len(t, end);
        if (el > 0) {
            if (status[0] == '\0')
                memcpy(status, t, el < sizeof status ? el : sizeof status - 1);
            t += el;
            if (t < end)
                t++;
        }
        if (t < end) {
            static const char space[] = " ";
            if (o > 0)
                put_text(out, &o, space, space + 1);
            put_text(out, &o, t, end);
        }
        if (last)
            break;
        line = end + 2;
    }
    char tmp[MILTER_REPLY_MAX];
    memcpy(tmp, out, o);
    if (status[0] == '\0')
        snprintf(status, sizeof status, "%c.7.1", text[0]);
    *code = (text[0] - '0') * 100 + (text[1] - '0') * 10 + (text[2] - '0');
    size_t n = (size_t)snprintf(out, MILTER_REPLY_MAX, "%d %s", *code, status);
    if (o > 0) {
        size_t take = o < MILTER_REPLY_MAX - 2 - n ? o : MILTER_REPLY_MAX - 2 - n;
        out[n++] = ' ';
        memcpy(out + n, tmp, take);
        n += take;
    }
    out[n] = '\0';
    return MILTER_P_OK;
}
