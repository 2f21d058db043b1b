/*
 * edge_data.c - the DATA / BDAT content decoder (see edge_data.h), the guard against SMTP
 * smuggling (CVE-2023-51764 and its kin: a terminator an upstream MTA does not see).
 *
 * RFC 5321 §4.1.1.4 and §4.5.2 (terminator, dot transparency), RFC 3030 (BDAT), with Postfix's
 * smtpd_forbid_bare_newline=normalize as the model for bare CR / bare LF: each ends the line and
 * is written as CR LF, and is counted so the caller can reject. The terminator is recognised only
 * as "." CR LF at the start of a line that began after a real CR LF (or at the start of the
 * content); anything else that looks like one is content.
 *
 * Owns nothing: output goes to the caller's buffer. Cannot fail. State between feeds is the line
 * state below plus whether a CR is waiting for its successor; the output never depends on how the
 * input is split. Runs of bytes that pass unchanged (most of the content, over many lines) are
 * found with memchr and copied with one buf_append.
 */
#include "edge_data.h"

#include <string.h>

/* Values of body_decoder.state. */
enum {
    ST_BOL,         /* at the start of a line */
    ST_TEXT,        /* inside a line */
    ST_CR,          /* a CR ended the previous feed, not yet written: real or bare decides */
    ST_DOT,         /* DATA, real line start: a "." was dropped; CR LF next would terminate */
    ST_DOT_CR,      /* ... and a CR followed it, not yet written */
};

void body_decoder_init(struct body_decoder *d, enum body_mode mode, size_t max_line)
{
    memset(d, 0, sizeof *d);
    d->mode = mode;
    d->max_line = max_line;
    d->state = ST_BOL;
    d->line_start_real = true;
}

/* Closes the current line (its CR LF is already written or about to be). */
static void line_end(struct body_decoder *d, bool real)
{
    if (d->max_line > 0 && d->line_len + 2 > d->max_line)
        d->long_lines++;
    d->line_len = 0;
    d->line_start_real = real;
    /* BDAT has no dot rule, so it never needs to stop at a line start. */
    d->state = d->mode == BODY_MODE_DATA ? ST_BOL : ST_TEXT;
}

static void put(struct buf *out, const char *p, size_t n)
{
    if (out != NULL && n > 0)
        buf_append(out, p, n);
}

size_t body_decoder_feed(struct body_decoder *d, const char *p, size_t n, struct buf *out)
{
    const char *s = p, *end = p + n;
    const char *run = p;            /* start of input not yet written that passes unchanged */
    const char *next_cr = NULL;     /* next CR at or after s (end: none); NULL: not searched */

    if (d->done)
        return 0;
    while (s < end) {
        switch (d->state) {
        case ST_BOL:
            if (*s == '.' && d->mode == BODY_MODE_DATA) {
                put(out, run, (size_t)(s - run));
                if (d->line_start_real && end - s >= 3 && s[1] == '\r' && s[2] == '\n') {
                    s += 3;
                    run = s;
                    d->done = true;
                    goto out;
                }
                /* Transparency: the dot goes; a real line start may still be the terminator. */
                d->state = d->line_start_real ? ST_DOT : ST_TEXT;
                run = ++s;
            } else {
                d->state = ST_TEXT;
            }
            break;

        case ST_TEXT: {
            /* Caching the CR position keeps LF-only content linear (no rescan per line). */
            if (next_cr == NULL || next_cr < s) {
                next_cr = memchr(s, '\r', (size_t)(end - s));
                if (next_cr == NULL)
                    next_cr = end;
            }
            const char *lf = memchr(s, '\n', (size_t)(next_cr - s));
            if (lf != NULL) {
                d->line_len += (size_t)(lf - s);
                put(out, run, (size_t)(lf - run));
                put(out, "\r\n", 2);
                d->bare_lf++;
                line_end(d, false);
                run = s = lf + 1;
                break;
            }
            d->line_len += (size_t)(next_cr - s);
            s = next_cr;
            if (s == end)
                break;
            if (s + 1 == end) {
                /* The CR's successor is in the next feed. */
                put(out, run, (size_t)(s - run));
                d->state = ST_CR;
                run = ++s;
            } else if (s[1] == '\n') {
                line_end(d, true);
                s += 2;
            } else {
                put(out, run, (size_t)(s + 1 - run));
                put(out, "\n", 1);
                d->bare_cr++;
                line_end(d, false);
                run = ++s;
            }
            break;
        }

        case ST_CR:
        case ST_DOT_CR:
            if (d->state == ST_DOT_CR && *s == '\n') {
                run = ++s;
                d->done = true;
                goto out;
            }
            put(out, "\r\n", 2);
            if (*s == '\n') {
                s++;
                line_end(d, true);
            } else {
                d->bare_cr++;
                line_end(d, false);
            }
            run = s;
            break;

        case ST_DOT:
            if (*s == '\r') {
                d->state = ST_DOT_CR;
                run = ++s;
            } else {
                d->state = ST_TEXT;
            }
            break;
        }
    }
out:
    put(out, run, (size_t)(s - run));
    d->raw_bytes += (unsigned long long)(s - p);
    return (size_t)(s - p);
}

void body_decoder_finish(struct body_decoder *d, struct buf *out)
{
    if (d->mode != BODY_MODE_BDAT)
        return;
    if (d->state == ST_CR) {
        put(out, "\r\n", 2);
        d->bare_cr++;
        line_end(d, false);
    } else if (d->line_len > 0) {
        put(out, "\r\n", 2);
        line_end(d, true);
    }
}
