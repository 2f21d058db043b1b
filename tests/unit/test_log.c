/*
 * test_log.c - unit tests of the JSON-lines logger (lib/log.c): json_escape against a table
 * (quotes, backslash, controls, DEL, well-formed UTF-8 kept, every kind of ill-formed UTF-8 of
 * RFC 3629 escaped byte by byte) and against an independent oracle over all short inputs; whole
 * lines written to a pipe or a temp file (fields, context, levels, filtering, log_msg, hostile
 * values that try to break or forge a line, log_fatal and log_panic in a child process).
 * Every line is checked by a small strict JSON parser written here (RFC 8259: one flat object,
 * UTF-8 text, no raw controls, no duplicate keys) and by exact text after the "ts" and "pid"
 * fields.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

/* A literal with its length, NULs included. */
#define BIN(s) s, sizeof(s) - 1

/* ---- a strict JSON checker, independent of log.c ---- */

/*
 * Length of the well-formed UTF-8 sequence at p, 0 if ill-formed: taken from the byte-range table
 * of RFC 3629 section 4 rather than from code points as log.c computes it.
 */
static size_t u8_len(const unsigned char *p, size_t n)
{
    static const struct { unsigned char lo, hi, b1lo, b1hi; size_t len; } rows[] = {
        { 0x00, 0x7f, 0x00, 0x00, 1 },
        { 0xc2, 0xdf, 0x80, 0xbf, 2 },
        { 0xe0, 0xe0, 0xa0, 0xbf, 3 },
        { 0xe1, 0xec, 0x80, 0xbf, 3 },
        { 0xed, 0xed, 0x80, 0x9f, 3 },
        { 0xee, 0xef, 0x80, 0xbf, 3 },
        { 0xf0, 0xf0, 0x90, 0xbf, 4 },
        { 0xf1, 0xf3, 0x80, 0xbf, 4 },
        { 0xf4, 0xf4, 0x80, 0x8f, 4 },
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        if (p[0] < rows[r].lo || p[0] > rows[r].hi)
            continue;
        size_t len = rows[r].len;
        if (len > n)
            return 0;
        if (len > 1 && (p[1] < rows[r].b1lo || p[1] > rows[r].b1hi))
            return 0;
        for (size_t k = 2; k < len; k++)
            if (p[k] < 0x80 || p[k] > 0xbf)
                return 0;
        return len;
    }
    return 0;
}

static void put_utf8(struct buf *b, unsigned cp)
{
    static const unsigned char lead[] = { 0, 0x00, 0xc0, 0xe0, 0xf0 };
    int len = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    buf_putc(b, (char)(lead[len] | cp >> (6 * (len - 1))));
    for (int k = len - 2; k >= 0; k--)
        buf_putc(b, (char)(0x80 | (cp >> (6 * k) & 0x3f)));
}

struct jfield {
    struct buf key;         /* decoded */
    struct buf val;         /* decoded string, or the text of a number / true / false / null */
};

#define JMAX 40

struct jobj {
    struct jfield f[JMAX];
    size_t n;
};

struct jp {
    const unsigned char *p, *end;
};

static bool jp_hex4(struct jp *j, unsigned *out)
{
    static const char digits[] = "0123456789abcdef";
    *out = 0;
    for (int k = 0; k < 4; k++, j->p++) {
        const char *d = j->p < j->end && *j->p != 0 ? strchr(digits, tolower(*j->p)) : NULL;
        if (d == NULL)
            return false;
        *out = *out << 4 | (unsigned)(d - digits);
    }
    return true;
}

/* A JSON string at j->p, decoded into out (escapes resolved, surrogate pairs joined). */
static bool jp_string(struct jp *j, struct buf *out)
{
    static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
    if (j->p >= j->end || *j->p++ != '"')
        return false;
    buf_append(out, "", 0);
    while (j->p < j->end) {
        unsigned char c = *j->p;
        size_t len = u8_len(j->p, (size_t)(j->end - j->p));
        if (c == '"') {
            j->p++;
            return true;
        } else if (c < 0x20 || len == 0) {
            return false;
        } else if (c != '\\') {
            buf_append(out, j->p, len);
            j->p += len;
            continue;
        }
        c = ++j->p < j->end ? *j->p++ : 0;
        const char *e = c != 0 ? strchr(esc_in, c) : NULL;
        unsigned cp, lo;
        if (e != NULL) {
            buf_putc(out, esc_out[e - esc_in]);
        } else if (c != 'u' || !jp_hex4(j, &cp) || (cp >= 0xdc00 && cp <= 0xdfff)) {
            return false;
        } else if (cp < 0xd800 || cp > 0xdbff) {
            put_utf8(out, cp);
        } else if (j->end - j->p >= 2 && j->p[0] == '\\' && j->p[1] == 'u' && (j->p += 2) &&
                   jp_hex4(j, &lo) && lo >= 0xdc00 && lo <= 0xdfff) {
            put_utf8(out, 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00));
        } else {
            return false;
        }
    }
    return false;
}

static size_t skip_digits(const struct jp *j, const unsigned char **s)
{
    size_t k = 0;
    for (; *s < j->end && **s >= '0' && **s <= '9'; (*s)++)
        k++;
    return k;
}

static bool jp_number(struct jp *j)
{
    const unsigned char *s = j->p;
    if (s < j->end && *s == '-')
        s++;
    const unsigned char *first = s;
    size_t n = skip_digits(j, &s);
    if (n == 0 || (n > 1 && *first == '0'))
        return false;
    if (s < j->end && *s == '.' && (++s, skip_digits(j, &s) == 0))
        return false;
    if (s < j->end && (*s == 'e' || *s == 'E')) {
        s++;
        if (s < j->end && (*s == '+' || *s == '-'))
            s++;
        if (skip_digits(j, &s) == 0)
            return false;
    }
    j->p = s;
    return true;
}

static void jobj_free(struct jobj *o)
{
    for (size_t i = 0; i < o->n; i++) {
        buf_release(&o->f[i].key);
        buf_release(&o->f[i].val);
    }
    o->n = 0;
}

/* A scalar JSON value at j->p: a string decoded, anything else as its text. */
static bool jp_value(struct jp *j, struct buf *out)
{
    static const char *const lits[] = { "true", "false", "null" };
    const unsigned char *start = j->p;
    if (j->p < j->end && *j->p == '"')
        return jp_string(j, out);
    if (j->p < j->end && (*j->p == '-' || (*j->p >= '0' && *j->p <= '9'))) {
        if (!jp_number(j))
            return false;
        buf_append(out, start, (size_t)(j->p - start));
        return true;
    }
    for (size_t k = 0; k < 3; k++) {
        size_t l = strlen(lits[k]);
        if ((size_t)(j->end - j->p) >= l && memcmp(j->p, lits[k], l) == 0) {
            j->p += l;
            buf_puts(out, lits[k]);
            return true;
        }
    }
    return false;
}

/*
 * One log line: a flat JSON object with scalar values, then exactly one '\n' (the only one).
 * Stricter than RFC 8259 only in refusing whitespace between tokens, which log.c never writes.
 */
static bool parse_line(const char *s, size_t n, struct jobj *o)
{
    o->n = 0;
    if (n == 0 || s[n - 1] != '\n' || memchr(s, '\n', n) != s + n - 1)
        return false;
    struct jp j = { (const unsigned char *)s, (const unsigned char *)s + n - 1 };
    if (j.p >= j.end || *j.p++ != '{')
        return false;
    if (j.p < j.end && *j.p == '}')
        return ++j.p == j.end;
    while (o->n < JMAX) {
        struct jfield *f = &o->f[o->n++];
        buf_init(&f->key);
        buf_init(&f->val);
        if (!jp_string(&j, &f->key) || j.p >= j.end || *j.p++ != ':' || !jp_value(&j, &f->val))
            return false;
        for (size_t k = 0; k + 1 < o->n; k++)
            if (o->f[k].key.len == f->key.len &&
                memcmp(o->f[k].key.data, f->key.data, f->key.len) == 0)
                return false;
        if (j.p < j.end && *j.p == ',')
            j.p++;
        else
            return j.p < j.end && *j.p++ == '}' && j.p == j.end;
    }
    return false;
}

static const struct jfield *jobj_get(const struct jobj *o, const char *key)
{
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(buf_cstr(&o->f[i].key), key) == 0)
            return &o->f[i];
    return NULL;
}

struct checker_case {
    const char *line;
    size_t n;
    bool ok;
};

/* The checker itself must refuse what is not one valid line, or the line tests prove nothing. */
static const struct checker_case checker_cases[] = {
    { BIN("{}\n"), true }, { BIN("{\"a\":0}\n"), true }, { BIN("{\"a\":\"\xc3\xa9\"}\n"), true },
    { BIN("{\"a\":\"x\",\"b\":-1.5e+3,\"c\":true,\"d\":false,\"e\":null}\n"), true },
    { BIN("{\"a\":\"\\u00e9\\ud83d\\ude00\\/\\b\\f\"}\n"), true },
    /* no newline, two, a raw newline or control inside a string */
    { BIN("{\"a\":\"x\"}"), false }, { BIN("{\"a\":\"x\"}\n\n"), false },
    { BIN("{\"a\":\"x\ny\"}\n"), false }, { BIN("{\"a\":\"x\ty\"}\n"), false },
    { BIN("{\"a\":\"\0\"}\n"), false },
    /* structure, duplicate keys, numbers, literals */
    { BIN("{\"a\":\"x\"}{}\n"), false }, { BIN("{\"a\":\"x\",}\n"), false },
    { BIN("{\"a\":\"x}\n"), false }, { BIN("{\"a\":\"x\",\"a\":\"y\"}\n"), false },
    { BIN("{a:1}\n"), false }, { BIN("[1]\n"), false }, { BIN("{\"a\":01}\n"), false },
    { BIN("{\"a\":-}\n"), false }, { BIN("{\"a\":1.}\n"), false }, { BIN("{\"a\":tru}\n"), false },
    /* text that is not UTF-8, a lone surrogate escape, bad escapes */
    { BIN("{\"a\":\"\x80\"}\n"), false }, { BIN("{\"a\":\"\xed\xa0\x80\"}\n"), false },
    { BIN("{\"a\":\"\\ud800\"}\n"), false }, { BIN("{\"a\":\"\\x41\"}\n"), false },
    { BIN("{\"a\":\"\\u00g0\"}\n"), false },
};

static void test_checker(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof checker_cases / sizeof checker_cases[0]; i++) {
        struct jobj o;
        bool ok = parse_line(checker_cases[i].line, checker_cases[i].n, &o);
        if (ok != checker_cases[i].ok)
            print_error("case %zu '%s': got %d\n", i, checker_cases[i].line, ok);
        assert_int_equal(ok, checker_cases[i].ok);
        if (ok && i == 4)
            assert_string_equal(buf_cstr(&jobj_get(&o, "a")->val), "\xc3\xa9\xf0\x9f\x98\x80/\b\f");
        jobj_free(&o);
    }
}

/* ---- capturing lines ---- */

static int pipe_r = -1;     /* read end, non-blocking */
static int pipe_w = -1;     /* handed to log_init */

static int setup_pipe(void **state)
{
    (void)state;
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pipe_r = fds[0];
    pipe_w = fds[1];
    log_init("edge", LOG_DEBUG, pipe_w);
    return fcntl(pipe_r, F_SETFL, O_NONBLOCK);
}

static int teardown_pipe(void **state)
{
    (void)state;
    log_init("mxgate", LOG_INFO, 2);
    close(pipe_r);
    close(pipe_w);
    pipe_r = pipe_w = -1;
    return 0;
}

/* The bytes of fd from *off on (or all a non-blocking pipe holds, when off is NULL). */
static void read_fd(int fd, off_t *off, struct buf *out)
{
    buf_reset(out);
    char tmp[8192];
    for (;;) {
        ssize_t r = off != NULL ? pread(fd, tmp, sizeof tmp, *off) : read(fd, tmp, sizeof tmp);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        buf_append(out, tmp, (size_t)r);
        if (off != NULL)
            *off += r;
    }
}

/*
 * Asserts got is one valid line of level, role "edge" and pid, whose text after the pid field is
 * exactly tail; leaves the parsed fields in o for the caller to free, or frees them if o is NULL.
 */
static void check_line_pid(const struct buf *got, const char *level, long pid, const char *tail,
                           struct jobj *o)
{
    struct jobj mine;
    if (o == NULL)
        o = &mine;
    const char *s = buf_cstr(got);
    bool ok = parse_line(s, got->len, o);
    if (!ok)
        print_error("not one valid JSON line: '%s'\n", s);
    assert_true(ok);
    assert_true(got->len > 31);
    assert_memory_equal(s, "{\"ts\":\"", 7);
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (size_t k = 0; k < 24; k++)
        assert_true(shape[k] == 'd' ? s[7 + k] >= '0' && s[7 + k] <= '9' : s[7 + k] == shape[k]);
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    assert_non_null(strptime(s + 7, "%Y-%m-%dT%H:%M:%S", &tm));
    time_t t = timegm(&tm);
    time_t now = time(NULL);
    /* time() may read a coarser clock than gettimeofday(), hence the second of slack */
    assert_true(t <= now + 1 && now - t <= 5);

    struct buf want = BUF_INIT;
    buf_printf(&want, "\",\"level\":\"%s\",\"role\":\"edge\",\"pid\":%ld%s", level, pid, tail);
    if (got->len != 31 + want.len || memcmp(s + 31, want.data, want.len) != 0)
        print_error("got  '%s'\nwant '%.31s%s'\n", s, s, want.data);
    assert_int_equal(got->len, 31 + want.len);
    assert_memory_equal(s + 31, want.data, want.len);
    buf_release(&want);
    if (o == &mine)
        jobj_free(o);
}

/* Asserts the pipe holds exactly one line, as check_line_pid() for this process. */
static void expect_line(const char *level, const char *tail, struct jobj *o)
{
    struct buf got = BUF_INIT;
    read_fd(pipe_r, NULL, &got);
    check_line_pid(&got, level, (long)getpid(), tail, o);
    buf_release(&got);
}

static void expect_nothing(void)
{
    char c;
    assert_int_equal(read(pipe_r, &c, 1), -1);
    assert_int_equal(errno, EAGAIN);
}

/* ---- json_escape ---- */

struct esc_case {
    const char *in;
    size_t n;
    const char *out;
};

static const struct esc_case esc_cases[] = {
    { BIN(""), "" },
    { BIN("plain text 123 <a@b.example>"), "plain text 123 <a@b.example>" },
    { BIN(" ~/'{}[]:,"), " ~/'{}[]:," },
    { BIN("\""), "\\\"" }, { BIN("\\"), "\\\\" },
    { BIN("say \"hi\\\""), "say \\\"hi\\\\\\\"" },
    { BIN("\n"), "\\n" }, { BIN("\r"), "\\r" }, { BIN("\t"), "\\t" },
    { BIN("a\r\nb"), "a\\r\\nb" },
    { BIN("\0"), "\\u0000" }, { BIN("a\0b"), "a\\u0000b" }, { BIN("\x01"), "\\u0001" },
    { BIN("\b"), "\\u0008" }, { BIN("\v"), "\\u000b" }, { BIN("\f"), "\\u000c" },
    { BIN("\x1b[31m"), "\\u001b[31m" }, { BIN("\x1f"), "\\u001f" }, { BIN("\x7f"), "\\u007f" },
    /* well-formed UTF-8 of 2, 3 and 4 bytes (é, €, 😀), and the edges of each length, kept */
    { BIN("\xc3\xa9"), "\xc3\xa9" },
    { BIN("\xe2\x82\xac"), "\xe2\x82\xac" },
    { BIN("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80" },
    { BIN("caf\xc3\xa9 5\xe2\x82\xac \xf0\x9f\x98\x80!"),
      "caf\xc3\xa9 5\xe2\x82\xac \xf0\x9f\x98\x80!" },
    { BIN("\xc2\x80"), "\xc2\x80" }, { BIN("\xdf\xbf"), "\xdf\xbf" },     /* U+0080, U+07FF */
    /* U+0800, U+D7FF, U+E000, U+FFFF */
    { BIN("\xe0\xa0\x80"), "\xe0\xa0\x80" }, { BIN("\xed\x9f\xbf"), "\xed\x9f\xbf" },
    { BIN("\xee\x80\x80"), "\xee\x80\x80" }, { BIN("\xef\xbf\xbf"), "\xef\xbf\xbf" },
    { BIN("\xe2\x80\xa8"), "\xe2\x80\xa8" },                /* U+2028, legal in JSON strings */
    { BIN("\xf0\x90\x80\x80"), "\xf0\x90\x80\x80" },        /* U+10000 */
    { BIN("\xf4\x8f\xbf\xbf"), "\xf4\x8f\xbf\xbf" },        /* U+10FFFF */
    /* lone continuation bytes */
    { BIN("\x80"), "\\u0080" }, { BIN("\xbf"), "\\u00bf" }, { BIN("a\x80z"), "a\\u0080z" },
    { BIN("\xc3\xa9\xa9"), "\xc3\xa9\\u00a9" },
    /* sequences cut by the end of the input */
    { BIN("\xc3"), "\\u00c3" }, { BIN("ok\xf0"), "ok\\u00f0" },
    { BIN("\xe2\x82"), "\\u00e2\\u0082" },
    { BIN("\xf0\x9f\x98"), "\\u00f0\\u009f\\u0098" },
    /* sequences cut by a byte that does not continue them */
    { BIN("\xe2\x82" "A"), "\\u00e2\\u0082A" },
    { BIN("\xc3\xc3\xa9"), "\\u00c3\xc3\xa9" },
    { BIN("\xf0\x9f\x98" "\n"), "\\u00f0\\u009f\\u0098\\n" },
    { BIN("\xc3\""), "\\u00c3\\\"" },
    /* overlong encodings */
    { BIN("\xc0\x80"), "\\u00c0\\u0080" }, { BIN("\xc0\xaf"), "\\u00c0\\u00af" },
    { BIN("\xc1\xbf"), "\\u00c1\\u00bf" },
    { BIN("\xe0\x80\x80"), "\\u00e0\\u0080\\u0080" },
    { BIN("\xe0\x9f\xbf"), "\\u00e0\\u009f\\u00bf" },
    { BIN("\xf0\x80\x80\x80"), "\\u00f0\\u0080\\u0080\\u0080" },
    { BIN("\xf0\x8f\xbf\xbf"), "\\u00f0\\u008f\\u00bf\\u00bf" },
    /* UTF-16 surrogates, alone and as a pair */
    { BIN("\xed\xa0\x80"), "\\u00ed\\u00a0\\u0080" },
    { BIN("\xed\xbf\xbf"), "\\u00ed\\u00bf\\u00bf" },
    { BIN("\xed\xa0\xbd\xed\xb8\x80"), "\\u00ed\\u00a0\\u00bd\\u00ed\\u00b8\\u0080" },
    /* above U+10FFFF */
    { BIN("\xf4\x90\x80\x80"), "\\u00f4\\u0090\\u0080\\u0080" },
    { BIN("\xf4\xbf\xbf\xbf"), "\\u00f4\\u00bf\\u00bf\\u00bf" },
    /* lead bytes F5..FF never start a sequence */
    { BIN("\xf5\x80\x80\x80"), "\\u00f5\\u0080\\u0080\\u0080" },
    { BIN("\xf7\xbf\xbf\xbf"), "\\u00f7\\u00bf\\u00bf\\u00bf" },
    { BIN("\xf8\x88\x80\x80\x80"), "\\u00f8\\u0088\\u0080\\u0080\\u0080" },
    { BIN("\xfc\x84\x80\x80\x80\x80"), "\\u00fc\\u0084\\u0080\\u0080\\u0080\\u0080" },
    { BIN("\xfe"), "\\u00fe" }, { BIN("\xff"), "\\u00ff" },
    { BIN("\xff\xc3\xa9"), "\\u00ff\xc3\xa9" },
};

/* The escaping log.h promises, computed independently: what json_escape must produce. */
static void oracle_escape(struct buf *b, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = u8_len(s + i, n - i);
        if (s[i] == '"' || s[i] == '\\') {
            buf_putc(b, '\\');
            buf_putc(b, (char)s[i]);
        } else if (s[i] == '\n' || s[i] == '\r' || s[i] == '\t') {
            buf_puts(b, s[i] == '\n' ? "\\n" : s[i] == '\r' ? "\\r" : "\\t");
        } else if (s[i] < 0x20 || s[i] == 0x7f || len == 0) {
            buf_printf(b, "\\u%04x", s[i]);
        } else {
            buf_append(b, s + i, len);
            i += len - 1;
        }
    }
}

/* What a JSON reader gets back: the text, with each byte that is not UTF-8 read as U+00XX. */
static void oracle_decode(struct buf *b, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = u8_len(s + i, n - i);
        if (len == 0) {
            put_utf8(b, s[i]);
        } else {
            buf_append(b, s + i, len);
            i += len - 1;
        }
    }
}

/* Escapes in into a {"k":"..."} line and asserts it parses back to oracle_decode(in). */
static void check_roundtrip(const unsigned char *in, size_t n, const struct buf *escaped)
{
    struct buf line = BUF_INIT, want = BUF_INIT;
    buf_puts(&line, "{\"k\":\"");
    buf_append(&line, escaped->data, escaped->len);
    buf_puts(&line, "\"}\n");
    struct jobj o;
    bool ok = parse_line(line.data, line.len, &o);
    if (!ok)
        print_error("not valid JSON: '%s'\n", line.data);
    assert_true(ok);
    oracle_decode(&want, in, n);
    const struct jfield *f = jobj_get(&o, "k");
    assert_non_null(f);
    assert_int_equal(f->val.len, want.len);
    if (want.len > 0)
        assert_memory_equal(f->val.data, want.data, want.len);
    jobj_free(&o);
    buf_release(&line);
    buf_release(&want);
}

static void test_json_escape_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof esc_cases / sizeof esc_cases[0]; i++) {
        const struct esc_case *c = &esc_cases[i];
        /* continuation bytes right after the input: a reader that runs past n would take them */
        char padded[64];
        assert_true(c->n + 3 <= sizeof padded);
        memcpy(padded, c->in, c->n);
        memset(padded + c->n, 0x80, 3);
        struct buf b = BUF_INIT;
        buf_puts(&b, "pre");
        json_escape(&b, padded, c->n);
        if (strcmp(buf_cstr(&b) + 3, c->out) != 0)
            print_error("case %zu: got '%s' want 'pre%s'\n", i, buf_cstr(&b), c->out);
        assert_memory_equal(b.data, "pre", 3);
        assert_string_equal(b.data + 3, c->out);
        assert_int_equal(b.len, 3 + strlen(c->out));
        assert_int_equal(b.data[b.len], '\0');
        buf_consume(&b, 3);
        check_roundtrip((const unsigned char *)c->in, c->n, &b);
        buf_release(&b);
    }
}

/*
 * Compares json_escape with the oracle on one input and checks the escaped text reads back;
 * returns 1 on a mismatch, printed while fewer than 10 were seen (bad) to keep a failure legible.
 */
static size_t cmp_oracle(const unsigned char *in, size_t n, size_t bad)
{
    /* continuation bytes right after the input: a reader that runs past n would take them */
    unsigned char padded[8];
    memcpy(padded, in, n);
    memset(padded + n, 0x80, sizeof padded - n);
    struct buf got = BUF_INIT, want = BUF_INIT;
    json_escape(&got, (const char *)padded, n);
    oracle_escape(&want, in, n);
    bool same = got.len == want.len && memcmp(buf_cstr(&got), buf_cstr(&want), got.len) == 0;
    if (!same && bad < 10)
        print_error("input %02x %02x %02x %02x (%zu bytes): got '%s' want '%s'\n", in[0],
                    n > 1 ? in[1] : 0, n > 2 ? in[2] : 0, n > 3 ? in[3] : 0, n,
                    buf_cstr(&got), buf_cstr(&want));
    if (same && n <= 2)
        check_roundtrip(in, n, &got);
    buf_release(&got);
    buf_release(&want);
    return same ? 0 : 1;
}

static void test_json_escape_oracle(void **state)
{
    (void)state;
    static const unsigned char tails[] = {
        0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff,
    };
    size_t bad = 0;
    unsigned char in[4] = { 0, 0, 0, 0 };
    /* every input of 1 and 2 bytes */
    for (unsigned a = 0; a < 256; a++) {
        in[0] = (unsigned char)a;
        bad += cmp_oracle(in, 1, bad);
        for (unsigned b = 0; b < 256; b++) {
            in[1] = (unsigned char)b;
            bad += cmp_oracle(in, 2, bad);
        }
    }
    /* 3 and 4 bytes from a lead >= 0xc0: every second byte, boundary values after it */
    for (unsigned a = 0xc0; a < 256; a++) {
        in[0] = (unsigned char)a;
        for (unsigned b = 0; b < 256; b++) {
            in[1] = (unsigned char)b;
            for (size_t t = 0; t < sizeof tails; t++) {
                in[2] = tails[t];
                bad += cmp_oracle(in, 3, bad);
                for (size_t u = 0; u < sizeof tails; u++) {
                    in[3] = tails[u];
                    bad += cmp_oracle(in, 4, bad);
                }
            }
        }
    }
    assert_int_equal(bad, 0);
}

/* ---- whole lines ---- */

struct ctx_case {
    bool has_ctx;
    struct log_ctx ctx;
    const char *text;       /* what the context adds after "event" */
};

static const struct ctx_case ctx_cases[] = {
    { false, { NULL, NULL, NULL, NULL }, "" },
    { true, { NULL, NULL, NULL, NULL }, "" },
    { true, { "S1", NULL, NULL, NULL }, ",\"session\":\"S1\"" },
    { true, { NULL, "192.0.2.1", NULL, NULL }, ",\"client\":\"192.0.2.1\"" },
    { true, { NULL, NULL, "Q42", NULL }, ",\"queue_id\":\"Q42\"" },
    { true, { NULL, NULL, NULL, "alice@example.test" }, ",\"user\":\"alice@example.test\"" },
    { true, { "S1", NULL, NULL, "bob" }, ",\"session\":\"S1\",\"user\":\"bob\"" },
    { true, { NULL, "2001:db8::1", "Q7", NULL },
      ",\"client\":\"2001:db8::1\",\"queue_id\":\"Q7\"" },
    { true, { "S2", "198.51.100.7", "Q9", "carol" },
      ",\"session\":\"S2\",\"client\":\"198.51.100.7\",\"queue_id\":\"Q9\",\"user\":\"carol\"" },
    { true, { "", NULL, NULL, "a\"b\nc\\" }, ",\"session\":\"\",\"user\":\"a\\\"b\\nc\\\\\"" },
};

static void test_line_fields(void **state)
{
    (void)state;
    struct jobj o;
    for (size_t i = 0; i < sizeof ctx_cases / sizeof ctx_cases[0]; i++) {
        const struct ctx_case *c = &ctx_cases[i];
        struct logrec lr;
        assert_true(log_begin(&lr, LOG_INFO, "connect", c->has_ctx ? &c->ctx : NULL));
        log_str(&lr, "listener", "mx");
        log_int(&lr, "port", 25);
        log_bool(&lr, "tls", true);
        log_end(&lr);
        struct buf tail = BUF_INIT;
        buf_printf(&tail, ",\"event\":\"connect\"%s,\"listener\":\"mx\",\"port\":25,"
                   "\"tls\":true}\n", c->text);
        /* the exact text already says which context fields are there; check the decoding too */
        expect_line("info", tail.data, &o);
        if (c->has_ctx && c->ctx.user != NULL)
            assert_string_equal(buf_cstr(&jobj_get(&o, "user")->val), c->ctx.user);
        jobj_free(&o);
        buf_release(&tail);
    }

    /* every kind of value */
    struct logrec lr;
    assert_true(log_begin(&lr, LOG_DEBUG, "values", NULL));
    log_str(&lr, "s", "");
    log_strn(&lr, "sn", "ab\0cd", 5);
    log_strn(&lr, "cut", "abcdef", 3);
    log_int(&lr, "zero", 0);
    log_int(&lr, "neg", -1);
    log_int(&lr, "min", LLONG_MIN);
    log_int(&lr, "max", LLONG_MAX);
    log_bool(&lr, "no", false);
    log_end(&lr);
    expect_line("debug", ",\"event\":\"values\",\"s\":\"\",\"sn\":\"ab\\u0000cd\",\"cut\":\"abc\","
                "\"zero\":0,\"neg\":-1,\"min\":-9223372036854775808,\"max\":9223372036854775807,"
                "\"no\":false}\n", &o);
    assert_int_equal(jobj_get(&o, "sn")->val.len, 5);
    assert_memory_equal(jobj_get(&o, "sn")->val.data, "ab\0cd", 5);
    jobj_free(&o);
    assert_string_equal(log_role_name(), "edge");
}

static const char *const level_names[] = { "debug", "info", "warn", "error", "crit" };

/* Every level against every threshold: written exactly when level >= threshold. */
static void test_levels_and_filter(void **state)
{
    (void)state;
    for (int m = LOG_DEBUG; m <= LOG_CRIT; m++) {
        log_init("edge", (enum log_level)m, pipe_w);
        for (int l = LOG_DEBUG; l <= LOG_CRIT; l++) {
            bool want = l >= m;
            assert_int_equal(log_enabled((enum log_level)l), want);
            struct logrec lr;
            assert_int_equal(log_begin(&lr, (enum log_level)l, "lvl", NULL), want);
            if (want) {
                log_end(&lr);
                expect_line(level_names[l], ",\"event\":\"lvl\"}\n", NULL);
            }
            log_msg((enum log_level)l, "lvl", NULL, "n=%d", 1);
            if (want)
                expect_line(level_names[l], ",\"event\":\"lvl\",\"msg\":\"n=1\"}\n", NULL);
            expect_nothing();
        }
    }
}

struct parse_case {
    const char *in;
    bool ok;
    enum log_level level;
};

static const struct parse_case parse_cases[] = {
    { "debug", true, LOG_DEBUG }, { "info", true, LOG_INFO }, { "warn", true, LOG_WARN },
    { "error", true, LOG_ERR }, { "crit", true, LOG_CRIT },
    { "", false, 0 }, { "INFO", false, 0 }, { "Debug", false, 0 }, { "warning", false, 0 },
    { "err", false, 0 }, { "critical", false, 0 }, { "inf", false, 0 }, { "info ", false, 0 },
    { " info", false, 0 }, { "info\n", false, 0 }, { "fatal", false, 0 }, { "trace", false, 0 },
    { "notice", false, 0 }, { "0", false, 0 }, { "1", false, 0 },
};

static void test_level_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        const struct parse_case *c = &parse_cases[i];
        enum log_level out = (enum log_level)77;
        bool ok = log_level_parse(c->in, &out);
        if (ok != c->ok)
            print_error("case %zu '%s': got %d\n", i, c->in, ok);
        assert_int_equal(ok, c->ok);
        assert_int_equal(out, c->ok ? c->level : (enum log_level)77);
    }
}

static void test_log_msg(void **state)
{
    (void)state;
    struct log_ctx ctx = { "S1", "192.0.2.1", NULL, NULL };
    log_msg(LOG_WARN, "reject", &ctx, "client %s said %d", "x", 5);
    expect_line("warn", ",\"event\":\"reject\",\"session\":\"S1\",\"client\":\"192.0.2.1\","
                "\"msg\":\"client x said 5\"}\n", NULL);
    log_msg(LOG_INFO, "empty", NULL, "%s", "");
    expect_line("info", ",\"event\":\"empty\",\"msg\":\"\"}\n", NULL);
    log_msg(LOG_INFO, "nul", NULL, "a%cb", '\0');
    expect_line("info", ",\"event\":\"nul\",\"msg\":\"a\\u0000b\"}\n", NULL);

    /* longer than buf_printf's fast path, with characters to escape */
    struct buf text = BUF_INIT, tail = BUF_INIT;
    buf_puts(&tail, ",\"event\":\"long\",\"msg\":\"<");
    for (int k = 0; k < 100; k++) {
        buf_puts(&text, "q\"\n");
        buf_puts(&tail, "q\\\"\\n");
    }
    buf_puts(&tail, ">\"}\n");
    log_msg(LOG_ERR, "long", NULL, "<%s>", text.data);
    expect_line("error", tail.data, NULL);
    buf_release(&text);
    buf_release(&tail);
}

struct hostile_case {
    const char *in;         /* NUL-terminated, so it fits event, context and log_str alike */
    const char *esc;        /* as it must appear between the quotes */
};

static const struct hostile_case hostile_cases[] = {
    { "a\nb", "a\\nb" },
    { "\"", "\\\"" },
    { "\"}\n{\"level\":\"crit\",\"event\":\"forged\"}\n",
      "\\\"}\\n{\\\"level\\\":\\\"crit\\\",\\\"event\\\":\\\"forged\\\"}\\n" },
    { "x\\\",\"user\":\"root", "x\\\\\\\",\\\"user\\\":\\\"root" },
    { "\r\n.\r\n", "\\r\\n.\\r\\n" },
    { "\\", "\\\\" },
    { "\xc0\x8a", "\\u00c0\\u008a" },                      /* an overlong '\n' */
    { "\xc2\x85", "\xc2\x85" },                            /* U+0085 NEL, valid UTF-8 */
    { "\x85", "\\u0085" },
    { "\x1b]0;title\x07", "\\u001b]0;title\\u0007" },
};

/* Hostile text in every place a line takes text: one line, valid, reading back as sent. */
static void test_hostile_values(void **state)
{
    (void)state;
    const char *keys[] = { "event", "session", "client", "queue_id", "user", "v", "msg" };
    for (size_t i = 0; i < sizeof hostile_cases / sizeof hostile_cases[0]; i++) {
        const struct hostile_case *c = &hostile_cases[i];
        struct log_ctx ctx = { c->in, c->in, c->in, c->in };
        struct buf want = BUF_INIT;
        oracle_decode(&want, (const unsigned char *)c->in, strlen(c->in));
        for (int how = 0; how < 2; how++) {
            if (how == 0) {
                struct logrec lr;
                assert_true(log_begin(&lr, LOG_INFO, c->in, &ctx));
                log_str(&lr, "v", c->in);
                log_end(&lr);
            } else {
                log_msg(LOG_INFO, c->in, &ctx, "%s", c->in);
            }
            struct buf tail = BUF_INIT;
            buf_printf(&tail, ",\"event\":\"%s\",\"session\":\"%s\",\"client\":\"%s\","
                       "\"queue_id\":\"%s\",\"user\":\"%s\",\"%s\":\"%s\"}\n", c->esc, c->esc,
                       c->esc, c->esc, c->esc, keys[5 + how], c->esc);
            struct jobj o;
            expect_line("info", tail.data, &o);
            assert_int_equal(o.n, 10);
            assert_string_equal(buf_cstr(&jobj_get(&o, "level")->val), "info");
            for (size_t k = 0; k < 5; k++)
                assert_string_equal(buf_cstr(&jobj_get(&o, keys[k])->val), want.data);
            assert_string_equal(buf_cstr(&jobj_get(&o, keys[5 + how])->val), want.data);
            jobj_free(&o);
            buf_release(&tail);
        }
        buf_release(&want);
    }
}

/* Lines go to any fd: a temp file gets whole lines in order, one far over PIPE_BUF too. */
static void test_temp_file(void **state)
{
    (void)state;
    char path[] = "/tmp/test_log.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    log_init("edge", LOG_INFO, fd);
    struct buf got = BUF_INIT, big = BUF_INIT, tail = BUF_INIT;
    off_t off = 0;
    log_msg(LOG_INFO, "one", NULL, "first");
    log_msg(LOG_DEBUG, "skipped", NULL, "filtered");
    read_fd(fd, &off, &got);
    check_line_pid(&got, "info", (long)getpid(), ",\"event\":\"one\",\"msg\":\"first\"}\n", NULL);

    for (int k = 0; k < 100000; k++)
        buf_putc(&big, (char)('a' + k % 26));
    log_msg(LOG_CRIT, "two", NULL, "%s", big.data);
    read_fd(fd, &off, &got);
    buf_printf(&tail, ",\"event\":\"two\",\"msg\":\"%s\"}\n", big.data);
    check_line_pid(&got, "crit", (long)getpid(), tail.data, NULL);
    close(fd);
    buf_release(&got);
    buf_release(&big);
    buf_release(&tail);
}

/* Runs fn in a child logging to the pipe; returns its wait status and pid. */
static int in_child(void (*fn)(void), pid_t *pid_out)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGABRT, SIG_DFL);
        alarm(5);
        fn();
        _exit(42);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    *pid_out = pid;
    return st;
}

static void call_fatal(void)
{
    log_fatal("bad %s \"%d\"", "conf\n", 7);
}

static void call_panic(void)
{
    log_panic("x \"y\" \\%d\n\t%s", 5, "end");
}

static void test_fatal_and_panic(void **state)
{
    (void)state;
    pid_t pid;
    log_init("edge", LOG_CRIT, pipe_w);
    int st = in_child(call_fatal, &pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    struct buf got = BUF_INIT;
    read_fd(pipe_r, NULL, &got);
    check_line_pid(&got, "crit", (long)pid,
                   ",\"event\":\"fatal\",\"msg\":\"bad conf\\n \\\"7\\\"\"}\n", NULL);

    /* the panic line is built without allocating: no ts, unsafe characters become '?' */
    st = in_child(call_panic, &pid);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGABRT);
    read_fd(pipe_r, NULL, &got);
    struct buf want = BUF_INIT;
    buf_printf(&want, "{\"level\":\"crit\",\"role\":\"edge\",\"pid\":%ld,\"event\":\"panic\","
               "\"msg\":\"x ?y? ?5??end\"}\n", (long)pid);
    assert_string_equal(buf_cstr(&got), want.data);
    struct jobj o;
    assert_true(parse_line(got.data, got.len, &o));
    jobj_free(&o);
    buf_release(&want);
    buf_release(&got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checker),
        cmocka_unit_test(test_json_escape_table),
        cmocka_unit_test(test_json_escape_oracle),
        cmocka_unit_test_setup_teardown(test_line_fields, setup_pipe, teardown_pipe),
        cmocka_unit_test_setup_teardown(test_levels_and_filter, setup_pipe, teardown_pipe),
        cmocka_unit_test(test_level_parse),
        cmocka_unit_test_setup_teardown(test_log_msg, setup_pipe, teardown_pipe),
        cmocka_unit_test_setup_teardown(test_hostile_values, setup_pipe, teardown_pipe),
        cmocka_unit_test_setup_teardown(test_temp_file, setup_pipe, teardown_pipe),
        cmocka_unit_test_setup_teardown(test_fatal_and_panic, setup_pipe, teardown_pipe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
