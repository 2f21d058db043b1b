/*
 * buf.h - the one growable byte buffer used everywhere.
 *
 * data is always NUL-terminated (data[len] == '\0'), so a buf can be handed to string functions,
 * yet it may hold any bytes, NULs included. A zeroed struct buf (or BUF_INIT) is a valid empty
 * buffer; buf_release() frees what it holds. Growth aborts on out-of-memory (mem.h).
 */
#ifndef MXG_BUF_H
#define MXG_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;     /* bytes, NUL-terminated; NULL until the first write (buf_cstr() hides that) */
    size_t len;     /* bytes used, not counting the terminating NUL */
    size_t cap;     /* bytes allocated */
};

#define BUF_INIT { NULL, 0, 0 }

void buf_init(struct buf *b);
void buf_release(struct buf *b);
void buf_reset(struct buf *b);
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Removes the first n bytes. */
void buf_consume(struct buf *b, size_t n);
/* The contents as a C string; "" for a buffer never written. */
const char *buf_cstr(const struct buf *b);
/* Hands the allocation to the caller (who frees it) and leaves b empty. Never NULL. */
char *buf_steal(struct buf *b);
/*
 * Appends at most max bytes of p, escaping anything but printable ASCII as \xHH (and '\' as
 * "\\"), so that text from the network can go into a log line or a header comment. A cut is marked
 * with "...".
 */
void buf_append_sanitized(struct buf *b, const char *p, size_t n, size_t max);

#endif
