/*
 * test_buf.c - unit tests of the growable buffer (lib/buf.c), table-driven where a table fits:
 * init / release / reset of empty and filled buffers, reserve, binary appends with NULs, growth to
 * 1 MB, printf on both sides of the 256-byte fast path, consume, cstr, steal, and the sanitizer
 * (printable kept, '\' doubled, everything else \xHH in lower case, "..." after a cut), and sizes
 * that overflow size_t (run in a child: they must end the process, not return or spin).
 * After every operation the buffer must hold data[len] == '\0' with len < cap.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

/* A literal with its length, NULs included. */
#define BIN(s) s, sizeof(s) - 1

/* The buffer's own invariant: either never allocated, or NUL-terminated inside its allocation. */
static void check_inv(const struct buf *b)
{
    if (b->data == NULL) {
        assert_int_equal(b->len, 0);
        assert_int_equal(b->cap, 0);
    } else {
        assert_true(b->len < b->cap);
        assert_int_equal(b->data[b->len], '\0');
    }
    assert_int_equal(buf_cstr(b)[b->len], '\0');
}

/* Asserts the buffer holds exactly the n bytes of p (which may contain NULs). */
static void check_bytes(const struct buf *b, const void *p, size_t n)
{
    check_inv(b);
    assert_int_equal(b->len, n);
    if (n > 0)
        assert_memory_equal(b->data, p, n);
}

static void check_never_written(const struct buf *b)
{
    assert_null(b->data);
    assert_int_equal(b->len, 0);
    assert_int_equal(b->cap, 0);
    assert_string_equal(buf_cstr(b), "");
}

static void test_init_release_reset(void **state)
{
    (void)state;
    struct buf a = BUF_INIT;
    check_never_written(&a);

    struct buf z;
    memset(&z, 0, sizeof z);
    check_never_written(&z);

    struct buf g;
    memset(&g, 0x5a, sizeof g);
    buf_init(&g);
    check_never_written(&g);

    /* release and reset of a never-written buffer leave it never-written */
    buf_release(&a);
    check_never_written(&a);
    buf_reset(&a);
    check_never_written(&a);
    buf_release(&a);
    check_never_written(&a);

    /* reset keeps the allocation and empties the text */
    buf_append(&a, BIN("abc\0def"));
    check_bytes(&a, BIN("abc\0def"));
    char *data = a.data;
    size_t cap = a.cap;
    buf_reset(&a);
    check_bytes(&a, "", 0);
    assert_ptr_equal(a.data, data);
    assert_int_equal(a.cap, cap);
    assert_string_equal(buf_cstr(&a), "");
    buf_reset(&a);
    check_bytes(&a, "", 0);
    buf_puts(&a, "again");
    check_bytes(&a, BIN("again"));

    /* release frees and returns to the never-written state, twice in a row too */
    buf_release(&a);
    check_never_written(&a);
    buf_release(&a);
    check_never_written(&a);
    buf_puts(&a, "reuse");
    check_bytes(&a, BIN("reuse"));
    buf_release(&a);
}

struct reserve_case {
    size_t prefill;         /* bytes written before the reserve */
    size_t extra;
};

static const struct reserve_case reserve_cases[] = {
    { 0, 0 }, { 0, 1 }, { 0, 62 }, { 0, 63 }, { 0, 64 }, { 0, 1000 },
    { 1, 0 }, { 10, 53 }, { 10, 54 }, { 63, 0 }, { 63, 1 }, { 100, 5000 },
};

static void test_reserve(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof reserve_cases / sizeof reserve_cases[0]; i++) {
        const struct reserve_case *c = &reserve_cases[i];
        char fill[128];
        for (size_t k = 0; k < sizeof fill; k++)
            fill[k] = (char)(k % 7 == 0 ? '\0' : 'a' + k % 26);
        struct buf b = BUF_INIT;
        if (c->prefill > 0)
            buf_append(&b, fill, c->prefill);
        buf_reserve(&b, c->extra);
        /* an empty buffer after reserve is allocated, so data[0] must already be '\0' */
        assert_non_null(b.data);
        check_bytes(&b, fill, c->prefill);
        assert_true(b.cap >= c->prefill + c->extra + 1);
        /* filling what was reserved must not move the allocation */
        char *data = b.data;
        size_t cap = b.cap;
        for (size_t k = 0; k < c->extra; k++)
            buf_putc(&b, 'x');
        assert_ptr_equal(b.data, data);
        assert_int_equal(b.cap, cap);
        check_inv(&b);
        assert_int_equal(b.len, c->prefill + c->extra);
        /* a reserve that already fits changes nothing */
        buf_reserve(&b, 0);
        assert_ptr_equal(b.data, data);
        assert_int_equal(b.cap, cap);
        check_inv(&b);
        buf_release(&b);
    }
}

struct append_case {
    const char *p;
    size_t n;
};

/* Appended one after another to one buffer; the result must be their concatenation. */
static const struct append_case append_cases[] = {
    { BIN("") },
    { BIN("\0") },
    { BIN("abc") },
    { BIN("\0\0\0") },
    { BIN("x\0y") },
    { BIN("") },
    { BIN("\r\n.\r\n") },
    { BIN("\xff\x00\x80\x7f") },
    { BIN("tail\0") },
};

static void test_append_binary(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    char want[256];
    size_t wlen = 0;
    for (size_t i = 0; i < sizeof append_cases / sizeof append_cases[0]; i++) {
        buf_append(&b, append_cases[i].p, append_cases[i].n);
        memcpy(want + wlen, append_cases[i].p, append_cases[i].n);
        wlen += append_cases[i].n;
        check_bytes(&b, want, wlen);
    }
    assert_int_equal(wlen, 0 + 1 + 3 + 3 + 3 + 0 + 5 + 4 + 5);
    buf_release(&b);

    /* a zero-length append to a never-written buffer yields an allocated empty string */
    buf_append(&b, NULL, 0);
    check_bytes(&b, "", 0);
    assert_string_equal(buf_cstr(&b), "");
    buf_release(&b);

    /* puts stops at the NUL; putc of '\0' stores it and counts it */
    buf_puts(&b, "ab\0cd");
    check_bytes(&b, BIN("ab"));
    buf_puts(&b, "");
    check_bytes(&b, BIN("ab"));
    buf_putc(&b, '\0');
    check_bytes(&b, BIN("ab\0"));
    buf_putc(&b, 'z');
    check_bytes(&b, BIN("ab\0z"));
    buf_putc(&b, (char)0xff);
    check_bytes(&b, BIN("ab\0z\xff"));
    buf_release(&b);

    struct buf c = BUF_INIT;
    buf_putc(&c, '\0');
    check_bytes(&c, BIN("\0"));
    buf_release(&c);
}

/* Byte k of the 1 MB test pattern: every value, NUL included, recurring with an odd period. */
static char pattern(size_t k)
{
    return (char)((k * 7 + k / 251) & 0xff);
}

static void test_growth(void **state)
{
    (void)state;
    const size_t total = 1u << 20;
    char *want = malloc(total);
    assert_non_null(want);
    for (size_t k = 0; k < total; k++)
        want[k] = pattern(k);

    /* many appends of varying size, the invariant checked after each one */
    struct buf b = BUF_INIT;
    size_t off = 0;
    size_t step = 1;
    while (off < total) {
        size_t n = step < total - off ? step : total - off;
        buf_append(&b, want + off, n);
        off += n;
        assert_int_equal(b.len, off);
        assert_true(b.cap > b.len);
        assert_int_equal(b.data[b.len], '\0');
        step = step % 997 + 13;
    }
    check_bytes(&b, want, total);
    buf_release(&b);

    /* a million single-byte appends */
    for (size_t k = 0; k < total; k++) {
        buf_putc(&b, want[k]);
        assert_int_equal(b.data[b.len], '\0');
    }
    check_bytes(&b, want, total);
    buf_release(&b);

    /* one append of the whole megabyte */
    buf_append(&b, want, total);
    check_bytes(&b, want, total);
    buf_release(&b);
    free(want);
}

/* buf_vprintf through a caller's own variadic function, as log.c uses it. */
static void __attribute__((format(printf, 2, 3))) via_vprintf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

struct printf_case {
    const char *prefix;     /* already in the buffer */
    size_t width;           /* formatted as "[%d:%s]" with 12345 and a-z text this long */
};

static const struct printf_case printf_cases[] = {
    { "", 0 }, { "", 1 }, { "", 240 }, { "", 246 }, { "", 247 }, { "", 248 }, { "", 249 },
    { "", 300 }, { "", 4000 }, { "pre:", 247 }, { "pre:", 248 }, { "pre:", 10000 },
};

static void test_printf(void **state)
{
    (void)state;
    /* short formats */
    struct buf b = BUF_INIT;
    buf_printf(&b, "%s", "");
    check_bytes(&b, "", 0);
    assert_string_equal(buf_cstr(&b), "");
    buf_printf(&b, "%d-%s-%c-%x", -42, "ok", 'Z', 0xbeefu);
    check_bytes(&b, BIN("-42-ok-Z-beef"));
    buf_printf(&b, "%%");
    check_bytes(&b, BIN("-42-ok-Z-beef%"));
    buf_printf(&b, "%c", '\0');
    check_bytes(&b, BIN("-42-ok-Z-beef%\0"));
    buf_printf(&b, "%s", "!");
    check_bytes(&b, BIN("-42-ok-Z-beef%\0!"));
    buf_release(&b);

    /* around the 256-byte fast path: "[12345:" + width + "]" is width + 8 bytes, so width 247
     * still fits the fast path (255 bytes + NUL) and 248 is the first to take the long one */
    for (size_t i = 0; i < sizeof printf_cases / sizeof printf_cases[0]; i++) {
        const struct printf_case *c = &printf_cases[i];
        char *text = malloc(c->width + 1);
        assert_non_null(text);
        for (size_t k = 0; k < c->width; k++)
            text[k] = (char)('a' + k % 26);
        text[c->width] = '\0';
        size_t plen = strlen(c->prefix);
        size_t flen = c->width + 8;
        char *want = malloc(plen + flen + 1);
        assert_non_null(want);
        memcpy(want, c->prefix, plen);
        memcpy(want + plen, "[12345:", 7);
        memcpy(want + plen + 7, text, c->width);
        want[plen + flen - 1] = ']';

        for (int how = 0; how < 2; how++) {
            struct buf p = BUF_INIT;
            buf_puts(&p, c->prefix);
            if (how == 0)
                buf_printf(&p, "[%d:%s]", 12345, text);
            else
                via_vprintf(&p, "[%d:%s]", 12345, text);
            if (p.len != plen + flen)
                print_error("case %zu (width %zu): len %zu\n", i, c->width, p.len);
            check_bytes(&p, want, plen + flen);
            /* a second format after a long one lands behind it */
            buf_printf(&p, "%s|%d", "end", 7);
            check_inv(&p);
            assert_int_equal(p.len, plen + flen + 5);
            assert_memory_equal(p.data, want, plen + flen);
            assert_string_equal(p.data + plen + flen, "end|7");
            buf_release(&p);
        }
        free(want);
        free(text);
    }

    /* a long format whose text holds a NUL keeps it and the length */
    struct buf n = BUF_INIT;
    buf_printf(&n, "%0300d%c%s", 5, '\0', "x");
    check_inv(&n);
    assert_int_equal(n.len, 302);
    assert_int_equal(n.data[298], '0');
    assert_int_equal(n.data[299], '5');
    assert_int_equal(n.data[300], '\0');
    assert_int_equal(n.data[301], 'x');
    buf_release(&n);
}

struct consume_case {
    size_t n;
    const char *rest;
    size_t rest_len;
};

/* Each consumes from a fresh "hello\0world" (11 bytes). */
static const struct consume_case consume_cases[] = {
    { 0, BIN("hello\0world") },
    { 1, BIN("ello\0world") },
    { 5, BIN("\0world") },
    { 6, BIN("world") },
    { 10, BIN("d") },
    { 11, BIN("") },
    { 12, BIN("") },
    { 1000, BIN("") },
    { SIZE_MAX, BIN("") },
};

static void test_consume(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof consume_cases / sizeof consume_cases[0]; i++) {
        const struct consume_case *c = &consume_cases[i];
        struct buf b = BUF_INIT;
        buf_append(&b, BIN("hello\0world"));
        char *data = b.data;
        buf_consume(&b, c->n);
        if (b.len != c->rest_len)
            print_error("case %zu (n %zu): len %zu\n", i, c->n, b.len);
        check_bytes(&b, c->rest, c->rest_len);
        assert_ptr_equal(b.data, data);
        /* the buffer stays usable */
        buf_puts(&b, "+");
        check_inv(&b);
        assert_int_equal(b.len, c->rest_len + 1);
        assert_int_equal(b.data[c->rest_len], '+');
        buf_release(&b);
    }

    /* consuming from a never-written buffer leaves it never-written */
    struct buf e = BUF_INIT;
    buf_consume(&e, 0);
    check_never_written(&e);
    buf_consume(&e, 5);
    check_never_written(&e);

    /* repeated partial consumes, as a line reader does */
    buf_puts(&e, "EHLO a\r\nMAIL FROM:<>\r\nRSET\r\n");
    buf_consume(&e, 8);
    check_bytes(&e, BIN("MAIL FROM:<>\r\nRSET\r\n"));
    buf_consume(&e, 14);
    check_bytes(&e, BIN("RSET\r\n"));
    buf_consume(&e, 6);
    check_bytes(&e, "", 0);
    assert_string_equal(buf_cstr(&e), "");
    buf_release(&e);
}

static void test_cstr(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    const char *s = buf_cstr(&b);
    assert_non_null(s);
    assert_string_equal(s, "");
    buf_puts(&b, "text");
    assert_ptr_equal(buf_cstr(&b), b.data);
    assert_string_equal(buf_cstr(&b), "text");
    buf_reset(&b);
    assert_string_equal(buf_cstr(&b), "");
    buf_release(&b);
    assert_string_equal(buf_cstr(&b), "");
}

static void test_steal(void **state)
{
    (void)state;
    /* a filled buffer hands over its own allocation, NULs and all */
    struct buf b = BUF_INIT;
    buf_append(&b, BIN("a\0b"));
    char *data = b.data;
    char *p = buf_steal(&b);
    assert_ptr_equal(p, data);
    assert_memory_equal(p, "a\0b", 4);
    check_never_written(&b);
    buf_puts(&b, "after");
    check_bytes(&b, BIN("after"));
    assert_memory_equal(p, "a\0b", 4);
    free(p);
    buf_release(&b);

    /* a never-written buffer gives a fresh "" the caller frees */
    p = buf_steal(&b);
    assert_non_null(p);
    assert_string_equal(p, "");
    check_never_written(&b);
    free(p);

    /* an allocated but reset buffer gives "" too */
    buf_puts(&b, "gone");
    buf_reset(&b);
    p = buf_steal(&b);
    assert_non_null(p);
    assert_string_equal(p, "");
    check_never_written(&b);
    free(p);

    /* steal twice in a row: both are separate allocations */
    char *q1 = buf_steal(&b);
    char *q2 = buf_steal(&b);
    assert_ptr_not_equal(q1, q2);
    free(q1);
    free(q2);
}

struct san_case {
    const char *in;
    size_t n;
    size_t max;
    const char *out;
};

static const struct san_case san_cases[] = {
    { BIN(""), 10, "" },
    { BIN(""), 0, "" },
    { BIN("hello world"), 100, "hello world" },
    { BIN(" !~"), 100, " !~" },
    { BIN("<a@b.example>"), 100, "<a@b.example>" },
    { BIN("\"quoted\" 'single'"), 100, "\"quoted\" 'single'" },
    { BIN("a\\b"), 100, "a\\\\b" },
    { BIN("\\"), 100, "\\\\" },
    { BIN("\\x41"), 100, "\\\\x41" },
    { BIN("\r\n"), 100, "\\x0d\\x0a" },
    { BIN("a\tb"), 100, "a\\x09b" },
    { BIN("\0"), 100, "\\x00" },
    { BIN("a\0b"), 100, "a\\x00b" },
    { BIN("\x1f"), 100, "\\x1f" },
    { BIN("\x1b[31mred"), 100, "\\x1b[31mred" },
    { BIN("\x7f"), 100, "\\x7f" },
    { BIN("\x80"), 100, "\\x80" },
    { BIN("\xAB\xCD\xEF"), 100, "\\xab\\xcd\\xef" },
    { BIN("\xff"), 100, "\\xff" },
    { BIN("caf\xc3\xa9"), 100, "caf\\xc3\\xa9" },
    /* a cut: at most max input bytes, then "..." */
    { BIN("abcdef"), 6, "abcdef" },
    { BIN("abcdef"), 7, "abcdef" },
    { BIN("abcdef"), 5, "abcde..." },
    { BIN("abcdef"), 3, "abc..." },
    { BIN("abcdef"), 1, "a..." },
    { BIN("abcdef"), 0, "..." },
    { BIN("\x01\x02\x03"), 2, "\\x01\\x02..." },
    { BIN("\\\\\\"), 1, "\\\\..." },
    { BIN("ab\r\n"), 3, "ab\\x0d..." },
    { BIN("..."), 2, "....." },
};

static void test_sanitized(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof san_cases / sizeof san_cases[0]; i++) {
        const struct san_case *c = &san_cases[i];
        for (int pre = 0; pre < 2; pre++) {
            struct buf b = BUF_INIT;
            const char *prefix = pre ? "x=" : "";
            buf_puts(&b, prefix);
            buf_append_sanitized(&b, c->in, c->n, c->max);
            check_inv(&b);
            assert_non_null(b.data);
            if (strcmp(b.data + strlen(prefix), c->out) != 0)
                print_error("case %zu: got '%s' want '%s'\n", i, b.data, c->out);
            assert_int_equal(strncmp(b.data, prefix, strlen(prefix)), 0);
            assert_string_equal(b.data + strlen(prefix), c->out);
            assert_int_equal(b.len, strlen(prefix) + strlen(c->out));
            buf_release(&b);
        }
    }

    /* every byte value alone: printable ASCII kept, '\' doubled, the rest \xHH lower case */
    for (unsigned v = 0; v < 256; v++) {
        char in = (char)v;
        char want[8];
        if (v == '\\')
            strcpy(want, "\\\\");
        else if (v >= 0x20 && v <= 0x7e)
            snprintf(want, sizeof want, "%c", (int)v);
        else
            snprintf(want, sizeof want, "\\x%02x", v);
        struct buf b = BUF_INIT;
        buf_append_sanitized(&b, &in, 1, 1);
        check_inv(&b);
        if (strcmp(buf_cstr(&b), want) != 0)
            print_error("byte 0x%02x: got '%s' want '%s'\n", v, buf_cstr(&b), want);
        assert_string_equal(buf_cstr(&b), want);
        buf_release(&b);
    }
}

/*
 * Runs buf_reserve(extra) after prefill bytes in a child and returns its wait status. A size that
 * cannot be allocated (len + extra + 1 overflows size_t, or no power-of-two capacity can hold it)
 * is out of memory: the process must not come back from buf_reserve (exit 42) nor spin (SIGALRM).
 */
static int reserve_in_child(size_t prefill, size_t extra)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGABRT, SIG_DFL);
        /* the panic line (or a sanitizer's report) is expected; keep it off the test output */
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, 2);
        log_init("test", LOG_INFO, 2);
        alarm(3);
        struct buf b = BUF_INIT;
        for (size_t k = 0; k < prefill; k++)
            buf_putc(&b, 'x');
        buf_reserve(&b, extra);
        _exit(42);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return st;
}

struct huge_case {
    size_t prefill;
    size_t extra;
};

static const struct huge_case huge_cases[] = {
    { 0, SIZE_MAX },                /* len + extra + 1 wraps to 0 */
    { 10, SIZE_MAX - 5 },           /* wraps to 6, below the current capacity */
    { 0, SIZE_MAX / 2 + 10 },       /* no power of two >= need: the doubling wraps to 0 */
};

static void test_reserve_huge(void **state)
{
    (void)state;
    size_t bad = 0;
    for (size_t i = 0; i < sizeof huge_cases / sizeof huge_cases[0]; i++) {
        int st = reserve_in_child(huge_cases[i].prefill, huge_cases[i].extra);
        bool returned = WIFEXITED(st) && WEXITSTATUS(st) == 42;
        bool spun = WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM;
        if (returned || spun) {
            print_error("case %zu: buf_reserve(%zu) after %zu bytes %s\n", i, huge_cases[i].extra,
                        huge_cases[i].prefill,
                        returned ? "returned without room" : "looped until SIGALRM");
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_release_reset),
        cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_append_binary),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_printf),
        cmocka_unit_test(test_consume),
        cmocka_unit_test(test_cstr),
        cmocka_unit_test(test_steal),
        cmocka_unit_test(test_sanitized),
        cmocka_unit_test(test_reserve_huge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
