/*
 * smtp_reply.h - parsing an SMTP or LMTP server's reply line by line (RFC 5321 §4.2, bounds of
 * §4.5.3.1.5) and splitting it into an enhanced status code (RFC 3463) and sanitised text. Used by
 * every client here: the relay's outbound SMTP and the mailbox tier's LMTP probe.
 *
 * Owns nothing beyond the caller's structs: no I/O, no allocation but the caller's buffers. A
 * malformed reply is reported to the caller (SMTP_REPLY_BAD and a reason), which decides what it
 * costs the connection; nothing here fails otherwise.
 */
#ifndef MXG_SMTP_REPLY_H
#define MXG_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

struct evbuffer;

/* Longest reply line, CRLF included (RFC 5321 §4.5.3.1.5), lines per reply and bytes per reply. */
#define SMTP_REPLY_LINE_MAX 512
#define SMTP_REPLY_LINES_MAX 100
#define SMTP_REPLY_BYTES_MAX 16384
/* Input bytes of text kept per result: of a reply (smtp_reply_status) or of a local reason. */
#define SMTP_REPLY_TEXT_MAX 1000

/* A reply being parsed, line by line. Zero it (or smtp_reply_reset) before the first line. */
struct smtp_reply {
    int code;                       /* 0 until the first line */
    unsigned nlines;
    size_t bytes;                   /* bytes of the lines so far, CRLFs included */
    bool done;                      /* the last line (code + SP or code alone) was seen */
    struct buf text;                /* each line's text after "DDD-"/"DDD ", '\n'-separated, raw */
};

enum smtp_reply_feed { SMTP_REPLY_MORE, SMTP_REPLY_DONE, SMTP_REPLY_BAD };

void smtp_reply_reset(struct smtp_reply *r);
void smtp_reply_release(struct smtp_reply *r);
/*
 * Feeds one reply line without its CRLF (n < SMTP_REPLY_LINE_MAX - 1). BAD, with the reason in
 * why, for a malformed code, a code differing from the first line's, a missing separator, a NUL,
 * CR or LF inside the line, or a reply over the line or byte bounds.
 */
enum smtp_reply_feed smtp_reply_feed(struct smtp_reply *r, const char *line, size_t n, struct buf *why);
/*
 * Splits a reply into an enhanced status code (RFC 3463, class matching the reply code, taken
 * from the first line) and sanitised text: out_status gets "X.Y.Z" (derived "2.0.0", "4.0.0",
 * "5.0.0" when absent), text the lines joined with spaces, each line's status code removed.
 */
void smtp_reply_status(const struct smtp_reply *r, char out_status[16], struct buf *text);

/* What smtp_reply_read() found. */
enum smtp_reply_read { SMTP_READ_WAIT, SMTP_READ_MORE, SMTP_READ_DONE, SMTP_READ_BAD };

/*
 * Takes the next reply line out of in and feeds it to r: WAIT when no whole line is there yet
 * (nothing taken), MORE when the reply goes on, DONE when it is complete, BAD when the line is
 * over SMTP_REPLY_LINE_MAX, not ended by CRLF or malformed: the reason goes to why and the
 * offending input (at most 100 bytes of an over-long line) to line, *len bytes.
 */
enum smtp_reply_read smtp_reply_read(struct evbuffer *in, struct smtp_reply *r, char line[SMTP_REPLY_LINE_MAX],
                                     size_t *len, struct buf *why);

#endif
