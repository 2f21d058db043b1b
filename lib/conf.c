/*
 * conf.c - reads mxgate's configuration file and -o overrides into struct conf (see conf.h), and
 * writes the reference documentation and the sample file from the settings table.
 *
 * Owns every string and list held in the global conf: conf_load() replaces them (a reload frees
 * the old ones) and conf_free() releases them. Errors are the operator's to fix, so parsing never
 * stops at the first one: each bad line becomes one "FILE:LINE: message" line in the caller's
 * buffer, with the offending text sanitised (it may hold any byte). A default that does not parse
 * is a broken table and aborts.
 */
#include "conf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>

#include "cidr.h"
#include "log.h"
#include "mem.h"
#include "netaddr.h"

/* How much of an offending key or value an error message quotes. */
#define QUOTE_MAX 120

/* Where an error was found: a file line, "-o", or a whole file (line 0). */
struct where {
    const char *file;
    int line;
};

enum vres { V_OK, V_BAD, V_RANGE };

struct unit {
    const char *suffix;
    long long mult;
};

/* Suffixes are matched whole and case-insensitively; a bare number is seconds or bytes. */
static const struct unit duration_units[] = {
    { "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 }, { "d", 86400000 },
};
static const struct unit size_units[] = {
    { "", 1 }, { "b", 1 }, { "k", 1024 }, { "kb", 1024 }, { "m", 1048576 }, { "mb", 1048576 },
    { "g", 1073741824 }, { "gb", 1073741824 },
};

/* Reads the leading decimal digits of s (at least one) into *out; *end gets what follows. */
static enum vres parse_digits(const char *s, long long *out, const char **end)
{
    long long v = 0;
    const char *p = s;
    bool overflow = false;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *p - '0', &v))
            overflow = true;
    }
    *end = p;
    if (p == s)
        return V_BAD;
    if (overflow)
        return V_RANGE;
    *out = v;
    return V_OK;
}

/* A non-negative number with one of the given suffixes (case-insensitive), scaled. */
static enum vres parse_scaled(const char *s, const struct unit *units, size_t nunits, long long *out)
{
    long long v;
    const char *end;
    enum vres r = parse_digits(s, &v, &end);
    if (r == V_BAD)
        return V_BAD;
    for (size_t i = 0; i < nunits; i++) {
        if (strcasecmp(end, units[i].suffix) != 0)
            continue;
        if (r == V_RANGE || __builtin_mul_overflow(v, units[i].mult, out))
            return V_RANGE;
        return V_OK;
    }
    return V_BAD;
}

static enum vres parse_duration(const char *s, long long *ms)
{
    return parse_scaled(s, duration_units, sizeof duration_units / sizeof duration_units[0], ms);
}

static enum vres parse_size(const char *s, long long *bytes)
{
    return parse_scaled(s, size_units, sizeof size_units / sizeof size_units[0], bytes);
}

static enum vres parse_int(const char *s, long long *out)
{
    bool neg = *s == '-';
    const char *end;
    enum vres r = parse_digits(neg ? s + 1 : s, out, &end);
    if (r == V_BAD || *end != '\0')
        return V_BAD;
    if (r == V_OK && neg)
        *out = -*out;
    return r;
}

bool conf_parse_duration(const char *s, long long *ms)
{
    return parse_duration(s, ms) == V_OK;
}

bool conf_parse_size(const char *s, long long *bytes)
{
    return parse_size(s, bytes) == V_OK;
}

bool conf_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = { "yes", "true", "on", "1" };
    static const char *const no[] = { "no", "false", "off", "0" };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

void strlist_free(struct strlist *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

bool strlist_contains_ci(const struct strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcasecmp(l->v[i], s) == 0)
            return true;
    }
    return false;
}

/* Splits a list value on commas and white space; empty items vanish. */
static void strlist_split(const char *s, struct strlist *out)
{
    static const char sep[] = ", \t\r\n";
    out->v = NULL;
    out->n = 0;
    size_t cap = 0;
    while (*s != '\0') {
        s += strspn(s, sep);
        size_t n = strcspn(s, sep);
        if (n == 0)
            break;
        if (out->n == cap) {
            cap = cap ? cap * 2 : 4;
            out->v = xrealloc(out->v, cap * sizeof *out->v);
        }
        out->v[out->n++] = xstrndup(s, n);
        s += n;
    }
}

const struct conf_row *conf_find(const char *name)
{
    for (size_t i = 0; i < conf_nrows; i++) {
        if (strcmp(conf_rows[i].name, name) == 0)
            return &conf_rows[i];
    }
    return NULL;
}

static void *field(const struct conf_row *r)
{
    return (char *)&conf + r->offset;
}

/* Appends 'text', sanitised and shortened, for an error message. */
static void put_quoted(struct buf *b, const char *s)
{
    buf_putc(b, '\'');
    buf_append_sanitized(b, s, strlen(s), QUOTE_MAX);
    buf_putc(b, '\'');
}

/* Index of s among the '|'-separated choices (case-insensitive), or -1. */
static int choice_index(const char *choices, const char *s)
{
    size_t len = strlen(s);
    int i = 0;
    for (const char *p = choices;; i++) {
        size_t n = strcspn(p, "|");
        if (n == len && len > 0 && strncasecmp(p, s, n) == 0)
            return i;
        if (p[n] == '\0')
            return -1;
        p += n + 1;
    }
}

/* The idx-th of the '|'-separated choices, copied into a new string. */
static char *choice_name(const char *choices, int idx)
{
    const char *p = choices;
    for (int i = 0; i < idx; i++)
        p += strcspn(p, "|") + 1;
    return xstrndup(p, strcspn(p, "|"));
}

static void format_duration(long long ms, struct buf *out)
{
    static const struct unit units[] = {
        { "d", 86400000 }, { "h", 3600000 }, { "m", 60000 }, { "s", 1000 },
    };
    if (ms == 0) {
        buf_puts(out, "0s");
        return;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (ms % units[i].mult == 0) {
            buf_printf(out, "%lld%s", ms / units[i].mult, units[i].suffix);
            return;
        }
    }
    buf_printf(out, "%lldms", ms);
}

static void format_size(long long bytes, struct buf *out)
{
    static const struct unit units[] = {
        { "G", 1073741824 }, { "M", 1048576 }, { "k", 1024 },
    };
    for (size_t i = 0; bytes != 0 && i < sizeof units / sizeof units[0]; i++) {
        if (bytes % units[i].mult == 0) {
            buf_printf(out, "%lld%s", bytes / units[i].mult, units[i].suffix);
            return;
        }
    }
    buf_printf(out, "%lld", bytes);
}

/* A number of a row's type (INT, SIZE, DURATION) in file syntax. */
static void format_number(enum conf_type t, long long v, struct buf *out)
{
    if (t == CONF_DURATION)
        format_duration(v, out);
    else if (t == CONF_SIZE)
        format_size(v, out);
    else
        buf_printf(out, "%lld", v);
}

void conf_format_value(const struct conf_row *r, struct buf *out)
{
    void *f = field(r);
    switch (r->type) {
    case CONF_STR:
        buf_puts(out, *(char **)f != NULL ? *(char **)f : "");
        break;
    case CONF_INT:
    case CONF_SIZE:
    case CONF_DURATION:
        format_number(r->type, *(long long *)f, out);
        break;
    case CONF_BOOL:
        buf_puts(out, *(bool *)f ? "yes" : "no");
        break;
    case CONF_LIST: {
        const struct strlist *l = f;
        for (size_t i = 0; i < l->n; i++) {
            if (i > 0)
                buf_puts(out, ", ");
            buf_puts(out, l->v[i]);
        }
        break;
    }
    case CONF_ENUM: {
        char *name = choice_name(r->choices, *(int *)f);
        buf_puts(out, name);
        free(name);
        break;
    }
    }
}

/* Extra checks of single items, for settings whose mistakes would otherwise surface only at start. */
static bool listen_ok(const char *s)
{
    char *host;
    int port;
    if (!netaddr_split(s, &host, &port, 0))
        return false;
    bool ok = host[0] != '\0' && port >= 1;
    free(host);
    return ok;
}

static bool network_ok(const char *s)
{
    struct cidr c;
    return cidr_parse(s, &c);
}

static bool dns_server_ok(const char *s)
{
    char *host;
    int port;
    unsigned char a[16];
    if (!netaddr_split(s, &host, &port, 53))
        return false;
    bool ok = port >= 1 && (inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1);
    free(host);
    return ok;
}

static const struct {
    const char *name;
    bool (*ok)(const char *item);
    const char *what;           /* completes "'X' is not ..." */
} item_checks[] = {
    { "edge.listen", listen_ok, "host:port" },
    { "edge.submission_listen", listen_ok, "host:port" },
    { "edge.smtps_listen", listen_ok, "host:port" },
    { "admin.listen", listen_ok, "host:port" },
    { "edge.trusted_networks", network_ok, "a network (address or address/prefix)" },
    { "dns.servers", dns_server_ok, "ip or ip:port" },
};

/* Runs the row's item check, if any, on one item (a list element or a non-empty string). */
static bool check_item(const struct conf_row *r, const char *item, struct buf *msg)
{
    for (size_t i = 0; i < sizeof item_checks / sizeof item_checks[0]; i++) {
        if (strcmp(item_checks[i].name, r->name) != 0 || item_checks[i].ok(item))
            continue;
        buf_printf(msg, "%s: ", r->name);
        put_quoted(msg, item);
        buf_printf(msg, " is not %s", item_checks[i].what);
        return false;
    }
    return true;
}

/* Parses val for row r and stores it; on a bad value writes "key: message" to msg and stores nothing. */
static bool set_value(const struct conf_row *r, const char *val, struct buf *msg)
{
    void *f = field(r);
    switch (r->type) {
    case CONF_STR: {
        char *v;
        if (r->choices != NULL) {
            int idx = choice_index(r->choices, val);
            if (idx < 0)
                goto not_choice;
            v = choice_name(r->choices, idx);
        } else {
            if (val[0] != '\0' && !check_item(r, val, msg))
                return false;
            v = xstrdup(val);
        }
        free(*(char **)f);
        *(char **)f = v;
        return true;
    }
    case CONF_INT:
    case CONF_SIZE:
    case CONF_DURATION: {
        long long v = 0;
        enum vres res = r->type == CONF_INT ? parse_int(val, &v)
                      : r->type == CONF_SIZE ? parse_size(val, &v) : parse_duration(val, &v);
        static const char *const what[] = {
            [CONF_INT] = "an integer", [CONF_SIZE] = "a size", [CONF_DURATION] = "a duration",
        };
        if (res == V_OK && v >= r->min && v <= r->max) {
            *(long long *)f = v;
            return true;
        }
        buf_printf(msg, "%s: ", r->name);
        put_quoted(msg, val);
        if (res == V_BAD) {
            buf_printf(msg, " is not %s", what[r->type]);
        } else if (res == V_RANGE) {
            buf_puts(msg, " is out of range");
        } else {
            buf_puts(msg, v < r->min ? " is below the minimum " : " is above the maximum ");
            format_number(r->type, v < r->min ? r->min : r->max, msg);
        }
        return false;
    }
    case CONF_BOOL:
        if (conf_parse_bool(val, (bool *)f))
            return true;
        buf_printf(msg, "%s: ", r->name);
        put_quoted(msg, val);
        buf_puts(msg, " is not a boolean (yes or no)");
        return false;
    case CONF_LIST: {
        struct strlist l;
        strlist_split(val, &l);
        for (size_t i = 0; i < l.n; i++) {
            if (!check_item(r, l.v[i], msg)) {
                strlist_free(&l);
                return false;
            }
        }
        strlist_free(f);
        *(struct strlist *)f = l;
        return true;
    }
    case CONF_ENUM: {
        int idx = choice_index(r->choices, val);
        if (idx < 0)
            goto not_choice;
        *(int *)f = idx;
        return true;
    }
    }
    log_panic("conf: row %s has an unknown type %d", r->name, (int)r->type);

not_choice:
    buf_printf(msg, "%s: ", r->name);
    put_quoted(msg, val);
    buf_printf(msg, " is not one of %s", r->choices);
    return false;
}

/* Appends "FILE:LINE: msg\n" ("FILE: msg\n" for line 0) to errs, which may be NULL. */
static void add_error(struct buf *errs, const struct where *w, const char *msg)
{
    if (errs == NULL)
        return;
    if (w->line > 0)
        buf_printf(errs, "%s:%d: %s\n", w->file, w->line, msg);
    else
        buf_printf(errs, "%s: %s\n", w->file, msg);
}

static void set_defaults(void)
{
    struct buf msg = BUF_INIT;
    for (size_t i = 0; i < conf_nrows; i++) {
        if (!set_value(&conf_rows[i], conf_rows[i].def, &msg))
            log_panic("conf: bad default: %s", buf_cstr(&msg));
    }
    buf_release(&msg);
}

void conf_free(void)
{
    for (size_t i = 0; i < conf_nrows; i++) {
        void *f = field(&conf_rows[i]);
        if (conf_rows[i].type == CONF_STR) {
            free(*(char **)f);
            *(char **)f = NULL;
        } else if (conf_rows[i].type == CONF_LIST) {
            strlist_free(f);
        }
    }
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/* Cuts white space from both ends of s[0..*n) in place; returns the new start. */
static char *trim(char *s, size_t *n)
{
    while (*n > 0 && is_space(s[0])) {
        s++;
        (*n)--;
    }
    while (*n > 0 && is_space(s[*n - 1]))
        (*n)--;
    return s;
}

/*
 * Applies one "key = value" text from the file (seen != NULL: a repeated key is an error) or from
 * -o (seen == NULL: the last one wins, as in Postfix). Returns false after reporting an error.
 */
static bool apply_setting(char *text, const struct where *w, int *seen, struct buf *errs)
{
    struct buf msg = BUF_INIT;
    char *eq = strchr(text, '=');
    size_t klen = eq != NULL ? (size_t)(eq - text) : 0;
    char *key = trim(text, &klen);
    bool ok = false;

    if (eq == NULL || klen == 0 || strcspn(key, " \t\r\n\f\v") < klen) {
        if (seen != NULL) {
            buf_puts(&msg, "line is not 'key = value'");
        } else {
            put_quoted(&msg, text);
            buf_puts(&msg, " is not key=value");
        }
        goto out;
    }
    key[klen] = '\0';
    size_t vlen = strlen(eq + 1);
    char *val = trim(eq + 1, &vlen);
    val[vlen] = '\0';

    const struct conf_row *r = conf_find(key);
    if (r == NULL) {
        buf_puts(&msg, "unknown key ");
        put_quoted(&msg, key);
        goto out;
    }
    if (seen != NULL) {
        int *first = &seen[r - conf_rows];
        if (*first > 0) {
            buf_printf(&msg, "'%s' is set twice (first at line %d)", r->name, *first);
            goto out;
        }
        *first = w->line;
    }
    ok = set_value(r, val, &msg);
out:
    if (!ok)
        add_error(errs, w, buf_cstr(&msg));
    buf_release(&msg);
    return ok;
}

/* Reads the whole file into b; false with errno set when it cannot. */
static bool read_file(const char *path, struct buf *b)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return false;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0)
        buf_append(b, chunk, n);
    bool ok = !ferror(fp);
    int saved = errno;
    fclose(fp);
    errno = saved;
    return ok;
}

/* Applies one logical line (a key line plus its continuations); line 0 means none is pending. */
static bool flush_logical(struct buf *logical, int line, const char *path, int *seen, struct buf *errs)
{
    if (line == 0)
        return true;
    struct where w = { path, line };
    bool ok = apply_setting(logical->data, &w, seen, errs);
    buf_reset(logical);
    return ok;
}

/* Parses the text of a configuration file; reports every error, returns false if there was one. */
static bool parse_file(const char *path, struct buf *text, struct buf *errs)
{
    int *seen = xcalloc(conf_nrows, sizeof *seen);
    struct buf logical = BUF_INIT;
    int logical_line = 0;   /* line of the pending key line, 0 = none */
    bool ok = true;
    size_t pos = 0;

    for (int lineno = 1; pos < text->len; lineno++) {
        char *line = text->data + pos;
        char *nl = memchr(line, '\n', text->len - pos);
        size_t len = nl != NULL ? (size_t)(nl - line) : text->len - pos;
        pos += len + (nl != NULL);
        size_t tlen = len;
        char *t = trim(line, &tlen);

        if (memchr(line, '\0', len) != NULL) {
            struct where w = { path, lineno };
            add_error(errs, &w, "line contains a NUL byte");
            ok = false;
            continue;
        }
        if (tlen == 0 || t[0] == '#')
            continue;
        if (is_space(line[0])) {
            if (logical_line == 0) {
                struct where w = { path, lineno };
                add_error(errs, &w, "continuation line has no 'key = value' line before it");
                ok = false;
                continue;
            }
            buf_putc(&logical, ' ');
            buf_append(&logical, t, tlen);
            continue;
        }
        ok &= flush_logical(&logical, logical_line, path, seen, errs);
        logical_line = lineno;
        buf_append(&logical, t, tlen);
    }
    ok &= flush_logical(&logical, logical_line, path, seen, errs);
    buf_release(&logical);
    free(seen);
    return ok;
}

/* Rules that tie settings together, checked once everything is read. */
static bool check_cross(const char *where, struct buf *errs)
{
    struct where w = { where, 0 };
    struct buf msg = BUF_INIT;
    bool ok = true;
    if (conf.edge_soft_error_limit > conf.edge_hard_error_limit) {
        buf_printf(&msg, "edge.soft_error_limit (%lld) is above edge.hard_error_limit (%lld)",
                   conf.edge_soft_error_limit, conf.edge_hard_error_limit);
        add_error(errs, &w, buf_cstr(&msg));
        buf_reset(&msg);
        ok = false;
    }
    if ((conf.tls_cert[0] == '\0') != (conf.tls_key[0] == '\0')) {
        buf_printf(&msg, "tls.cert and tls.key must be set together (%s is empty)",
                   conf.tls_cert[0] == '\0' ? "tls.cert" : "tls.key");
        add_error(errs, &w, buf_cstr(&msg));
        ok = false;
    }
    buf_release(&msg);
    return ok;
}

bool conf_load(const char *path, char *const *overrides, size_t noverrides, struct buf *errs)
{
    bool ok = true;
    set_defaults();

    if (path != NULL) {
        struct buf text = BUF_INIT;
        if (read_file(path, &text)) {
            ok &= parse_file(path, &text, errs);
        } else {
            struct where w = { path, 0 };
            struct buf msg = BUF_INIT;
            buf_printf(&msg, "cannot read: %s", strerror(errno));
            add_error(errs, &w, buf_cstr(&msg));
            buf_release(&msg);
            ok = false;
        }
        buf_release(&text);
    }

    struct where o = { "-o", 0 };
    for (size_t i = 0; i < noverrides; i++) {
        char *copy = xstrdup(overrides[i]);
        ok &= apply_setting(copy, &o, NULL, errs);
        free(copy);
    }

    ok &= check_cross(path != NULL ? path : "-o", errs);
    return ok;
}

/* The section a key belongs to: the text before its first dot, or "general". */
static size_t group_of(const char *name, const char **group)
{
    const char *dot = strchr(name, '.');
    if (dot == NULL) {
        *group = "general";
        return strlen(*group);
    }
    *group = name;
    return (size_t)(dot - name);
}

static bool same_group(const struct conf_row *a, const struct conf_row *b)
{
    const char *ga, *gb;
    size_t na = group_of(a->name, &ga), nb = group_of(b->name, &gb);
    return na == nb && strncmp(ga, gb, na) == 0;
}

/* True when no row before i is in row i's group, so row i opens a section. */
static bool opens_group(size_t i)
{
    for (size_t j = 0; j < i; j++) {
        if (same_group(&conf_rows[j], &conf_rows[i]))
            return false;
    }
    return true;
}

static const char *type_name(enum conf_type t)
{
    switch (t) {
    case CONF_STR: return "string";
    case CONF_INT: return "integer";
    case CONF_SIZE: return "size";
    case CONF_DURATION: return "duration";
    case CONF_BOOL: return "boolean";
    case CONF_LIST: return "list";
    case CONF_ENUM: return "choice";
    }
    return "?";
}

static const char syntax_text[] =
    "Syntax: one `key = value` per line. A line starting with `#` is a comment; a line starting\n"
    "with white space continues the value above it. List values are separated by commas and/or\n"
    "white space; an empty value means an empty string or list. Durations take `ms`, `s`, `m`,\n"
    "`h` or `d` (a bare number is seconds); sizes take `k`, `M` or `G` (powers of 1024, an\n"
    "optional `B`, any case).\n";

void conf_write_reference(struct buf *out)
{
    buf_puts(out, "# Configuration reference\n\n");
    buf_puts(out, "This page is generated from mxgate's settings table (`make docs`); do not edit it.\n\n");
    buf_puts(out, syntax_text);
    buf_puts(out, "\n"
        "Any key can also be given on the command line as `-o key=value`; it wins over the file.\n"
        "`mxgate config check [FILE]` reads a file and reports every mistake as `FILE:LINE: message`.\n"
        "A key may appear only once in a file. Settings marked \"reloadable: no\" take effect only\n"
        "after a restart; the others are meant to be applied by a reload (SIGHUP), which the roles\n"
        "do not implement yet, so today every change needs a restart, with one exception: the\n"
        "file named by `local.recipients` is re-read by the edge whenever it changes.\n"
        "`conf/mxgate.conf` lists every key with its default.\n");

    for (size_t i = 0; i < conf_nrows; i++) {
        if (!opens_group(i))
            continue;
        const char *g;
        size_t gn = group_of(conf_rows[i].name, &g);
        buf_printf(out, "\n## %.*s\n", (int)gn, g);
        for (size_t j = i; j < conf_nrows; j++) {
            const struct conf_row *r = &conf_rows[j];
            if (!same_group(r, &conf_rows[i]))
                continue;
            buf_printf(out, "\n### `%s`\n\n", r->name);
            buf_printf(out, "Type: %s; default: ", type_name(r->type));
            if (r->def[0] == '\0')
                buf_puts(out, "(empty)");
            else
                buf_printf(out, "`%s`", r->def);
            if (r->type == CONF_INT || r->type == CONF_SIZE || r->type == CONF_DURATION) {
                buf_puts(out, "; range: ");
                format_number(r->type, r->min, out);
                buf_puts(out, " to ");
                format_number(r->type, r->max, out);
            } else if (r->choices != NULL) {
                buf_printf(out, "; one of: `%s`", r->choices);
            }
            buf_printf(out, "; reloadable: %s.\n\n%s\n", r->reloadable ? "yes" : "no", r->help);
        }
    }
}

void conf_write_sample(struct buf *out)
{
    buf_puts(out,
        "# mxgate configuration file.\n"
        "#\n"
        "# Syntax: one \"key = value\" per line. A line starting with \"#\" is a comment; a line\n"
        "# starting with white space continues the value above it. Lists are separated by commas\n"
        "# and/or white space. Durations: 250ms, 30s, 5m, 2h, 1d (a bare number is seconds).\n"
        "# Sizes: 512, 64k, 35M, 2G (powers of 1024, optional B). Any key can also be given on the\n"
        "# command line as -o key=value, which wins over this file.\n"
        "#\n"
        "# Every setting below is commented out and shows its default: remove the leading \"#\"\n"
        "# and change the value to override it. Check the result with: mxgate config check FILE\n"
        "# docs/configuration.md describes each setting. Generated by \"make docs\".\n");
    for (size_t i = 0; i < conf_nrows; i++) {
        if (!opens_group(i))
            continue;
        buf_putc(out, '\n');
        for (size_t j = i; j < conf_nrows; j++) {
            const struct conf_row *r = &conf_rows[j];
            if (!same_group(r, &conf_rows[i]))
                continue;
            buf_printf(out, "# %s\n#%s =%s%s\n", r->help, r->name, r->def[0] ? " " : "", r->def);
        }
    }
}

void conf_host_name(const char *name, char *out, size_t n)
{
    if (name != NULL && name[0] != '\0') {
        snprintf(out, n, "%s", name);
        return;
    }
    memset(out, 0, n);
    if (gethostname(out, n - 1) != 0 || out[0] == '\0')
        snprintf(out, n, "localhost");
}
