/*
 * buf.c - growable NUL-terminated byte buffer (see buf.h).
 */
#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"

void buf_init(struct buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void buf_release(struct buf *b)
{
    free(b->data);
    buf_init(b);
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

void buf_reserve(struct buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1)
        log_panic("buffer of %zu bytes cannot grow by %zu", b->len, extra);
    size_t need = b->len + extra + 1;
    if (need <= b->cap) {
        if (b->data != NULL)
            b->data[b->len] = '\0';
        return;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
    b->data[b->len] = '\0';
}

void buf_append(struct buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void buf_puts(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_putc(struct buf *b, char c)
{
    buf_append(b, &c, 1);
}

void buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        buf_append(b, small, (size_t)n);
        return;
    }
    buf_reserve(b, (size_t)n);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

const char *buf_cstr(const struct buf *b)
{
    return b->data != NULL ? b->data : "";
}

char *buf_steal(struct buf *b)
{
    char *p = b->data != NULL ? b->data : xstrdup("");
    buf_init(b);
    return p;
}

void buf_append_sanitized(struct buf *b, const char *p, size_t n, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    size_t take = n < max ? n : max;
    buf_reserve(b, take + 3);
    for (size_t i = 0; i < take; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\\') {
            buf_append(b, "\\\\", 2);
        } else if (c >= 0x20 && c < 0x7f) {
            buf_putc(b, (char)c);
        } else {
            char esc[4] = { '\\', 'x', hex[c >> 4], hex[c & 15] };
            buf_append(b, esc, 4);
        }
    }
    if (take < n)
        buf_append(b, "...", 3);
}
