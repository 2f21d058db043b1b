/*
 * edge_data.h - decoding the message content of DATA and BDAT, safely against SMTP smuggling.
 *
 * DATA (RFC 5321 §4.1.1.4): the content ends only at CR LF "." CR LF where the first CR LF is a
 * real one (or the start of the content). Every other sequence of dots, CRs, LFs and NULs is
 * content and never ends it: "\n.\n", "\r.\r", "\r.\n", "\n.\r\n", "\r\n.\n", "\r\n.\r\r\n", ...
 * A line starting with "." has that dot removed (transparency) unless it is the terminator.
 *
 * A bare CR (not followed by LF) or bare LF (not preceded by CR) is handled by the policy:
 *   normalize: written to the content as CR LF (the line ends there), counted;
 *   reject:    counted, content kept as normalize would, and the caller answers 550 at the end.
 * BDAT (RFC 3030) content is counted in octets by the caller and has no terminator and no dot
 * transparency; the same bare CR/LF policy applies, across chunk boundaries.
 *
 * Output content always uses CR LF line endings. The decoder keeps at most one byte of state
 * between calls (a CR whose successor has not arrived).
 */
#ifndef MXG_EDGE_DATA_H
#define MXG_EDGE_DATA_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

enum body_mode { BODY_MODE_DATA, BODY_MODE_BDAT };

struct body_decoder {
    enum body_mode mode;
    size_t max_line;            /* longest text line allowed, octets including CR LF */
    /* internal state */
    int state;                  /* where in a line we are (start, after dot, in line, after CR...) */
    bool line_start_real;       /* the current line began after a real CR LF (or at the start) */
    size_t line_len;            /* octets of the current line so far */
    /* results */
    unsigned long long raw_bytes;   /* octets consumed */
    unsigned long bare_cr;      /* bare CRs seen */
    unsigned long bare_lf;      /* bare LFs seen */
    unsigned long long_lines;   /* lines over max_line */
    bool done;                  /* DATA: the terminator has been consumed */
};

void body_decoder_init(struct body_decoder *d, enum body_mode mode, size_t max_line);
/*
 * Consumes up to n bytes of p, appending decoded content to out (NULL = parse and count, but
 * store nothing, for a message already over its size limit). In DATA mode stops right after the
 * terminator (d->done set) and returns the bytes consumed, so what follows stays unread.
 */
size_t body_decoder_feed(struct body_decoder *d, const char *p, size_t n, struct buf *out);
/* BDAT LAST: settles a trailing CR and ends the content with CR LF if it does not already. */
void body_decoder_finish(struct body_decoder *d, struct buf *out);

#endif
