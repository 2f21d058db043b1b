/*
 * filter_dkim_int.h - what filter_dkim.c (verification) and filter_dkim_sign.c (signing) share:
 * the process-wide libopendkim handle and the splitter that feeds raw message bytes to a
 * libopendkim handle. Private to those two files.
 */
#ifndef MXG_FILTER_DKIM_INT_H
#define MXG_FILTER_DKIM_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <dkim.h>

#include "buf.h"

/*
 * The process's DKIM_LIB, made on first use (under a mutex; options are set only then) and
 * closed when the last user lets go. Signature processing is delayed to dkim_eom() and keys come
 * from the verification's prefetched records, never from libopendkim's own DNS. NULL with err if
 * libopendkim cannot start.
 */
DKIM_LIB *dkim_lib_ref(struct buf *err);
void dkim_lib_unref(void);

/*
 * Splits a message into header fields (folds kept, line end dropped: the form dkim_header()
 * wants), the end of the header section and the body. Any chunking gives the same calls. A zeroed
 * struct with dkim set is ready; dkim_feed_release() frees what it holds.
 */
struct dkim_feed {
    DKIM *dkim;
    bool in_body;               /* the blank line was seen */
    struct buf line;            /* header section: the line being received, without its LF */
    struct buf field;           /* header section: the field being assembled */
};

/* Consumes header bytes up to and including the blank line; returns how many were used. */
size_t dkim_feed_header(struct dkim_feed *f, const char *p, size_t n);
/* The input ended inside the header section: its last line counts without a line end. */
void dkim_feed_header_end(struct dkim_feed *f);
void dkim_feed_release(struct dkim_feed *f);

#endif
