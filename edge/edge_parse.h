/*
 * edge_parse.h - parsing SMTP command lines and MAIL / RCPT parameters (RFC 5321, 1870, 1652,
 * 3030, 3461, 4954, 6152, 6531). Pure functions: no I/O, no session state; unit-tested by table.
 */
#ifndef MXG_EDGE_PARSE_H
#define MXG_EDGE_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include "smtp_addr.h"

enum smtp_verb {
    VERB_UNKNOWN, VERB_EHLO, VERB_HELO, VERB_MAIL, VERB_RCPT, VERB_DATA, VERB_BDAT, VERB_RSET,
    VERB_NOOP, VERB_QUIT, VERB_VRFY, VERB_EXPN, VERB_HELP, VERB_STARTTLS, VERB_AUTH,
};

/*
 * Splits a command line (without its CRLF) into verb and argument text. The verb is matched
 * case-insensitively; *args points into line after the single space following the verb (or to
 * the terminating NUL). "MAIL FROM:" and "RCPT TO:" keep their "FROM:"/"TO:" in args.
 */
enum smtp_verb smtp_verb_parse(const char *line, const char **args);
const char *smtp_verb_name(enum smtp_verb v);

/* BODY= values. */
enum smtp_body { BODY_UNSPEC, BODY_7BIT, BODY_8BITMIME, BODY_BINARYMIME };
/* RET= values. */
enum dsn_ret { DSN_RET_UNSPEC, DSN_RET_FULL, DSN_RET_HDRS };
/* NOTIFY= flags (0 = not given). */
enum { DSN_NOTIFY_NEVER = 1, DSN_NOTIFY_SUCCESS = 2, DSN_NOTIFY_FAILURE = 4, DSN_NOTIFY_DELAY = 8 };

/* Outcome of parsing MAIL/RCPT: an SMTP reply to give when not ok. */
struct smtp_parse_err {
    int code;                   /* e.g. 501, 504, 555, 552, 553 */
    const char *enhanced;       /* e.g. "5.5.4" */
    const char *text;           /* human text, static */
};

/* MAIL FROM:<path> [SP params]. All strings owned; free with smtp_mail_clear. */
struct smtp_mail {
    struct smtp_path path;
    long long size;             /* SIZE=, -1 when absent */
    enum smtp_body body;
    bool smtputf8;              /* SMTPUTF8 */
    enum dsn_ret ret;
    char *envid;                /* ENVID= decoded from xtext, or NULL */
    char *auth;                 /* AUTH= decoded from xtext, or NULL ("<>" kept as is) */
};

/* RCPT TO:<path> [SP params]. */
struct smtp_rcpt {
    struct smtp_path path;
    unsigned notify;            /* DSN_NOTIFY_* flags */
    char *orcpt;                /* ORCPT= "addr-type;address" decoded from xtext, or NULL */
};

/* What the server offered in its EHLO reply: a parameter for an extension not offered is an error. */
struct smtp_ext_offer {
    bool size, eightbitmime, binarymime, smtputf8, dsn, auth;
};

/*
 * args is the text after "MAIL " (must start "FROM:", case-insensitive; one optional space after
 * the colon is tolerated). Returns false with *err set (555 5.5.4 for unknown/bad parameters,
 * 501 5.1.7 for a bad sender, 553 5.6.7 for UTF-8 without SMTPUTF8, 501 5.5.4 for duplicates).
 */
bool smtp_mail_parse(const char *args, const struct smtp_addr_limits *lim,
                     const struct smtp_ext_offer *offer, struct smtp_mail *out,
                     struct smtp_parse_err *err);
void smtp_mail_clear(struct smtp_mail *m);

/* args after "RCPT " (must start "TO:"). utf8 = SMTPUTF8 was given on MAIL. Bad recipient: 501 5.1.3. */
bool smtp_rcpt_parse(const char *args, const struct smtp_addr_limits *lim,
                     const struct smtp_ext_offer *offer, bool utf8, struct smtp_rcpt *out,
                     struct smtp_parse_err *err);
void smtp_rcpt_clear(struct smtp_rcpt *r);

/* BDAT args: "<size> [LAST]". false on bad syntax. */
bool smtp_bdat_parse(const char *args, unsigned long long *size, bool *last);

/* RFC 3461 xtext: "+XX" hex escapes. Returns a malloc'd string, or NULL when malformed. */
char *xtext_decode(const char *s, size_t n);
/* Appends s as xtext to b (for writing ENVID/ORCPT onward). */
struct buf;
void xtext_encode(struct buf *b, const char *s);

#endif
