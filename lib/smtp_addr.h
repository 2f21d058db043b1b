/*
 * smtp_addr.h - RFC 5321 paths and mailboxes (with RFC 6531 SMTPUTF8 extensions).
 *
 *   Path        = "<" [ A-d-l ":" ] Mailbox ">"
 *   Mailbox     = Local-part "@" ( Domain / address-literal )
 *   Local-part  = Dot-string / Quoted-string
 *
 * A source route (A-d-l) is accepted and dropped, as RFC 5321 §C tells servers to. The parser is
 * strict: no spaces inside the brackets, no missing brackets (Postfix's strict_rfc821_envelopes).
 */
#ifndef MXG_SMTP_ADDR_H
#define MXG_SMTP_ADDR_H

#include <stdbool.h>
#include <stddef.h>

struct smtp_addr_limits {
    size_t max_local_part;      /* 64 */
    size_t max_domain;          /* 255 */
    size_t max_path;            /* 256, counting the angle brackets */
};

enum smtp_addr_err {
    SMTP_ADDR_OK,
    SMTP_ADDR_SYNTAX,           /* 501 5.1.3 (RCPT) / 5.1.7 (MAIL) */
    SMTP_ADDR_LOCAL_TOO_LONG,   /* 501 5.1.3 / 553 */
    SMTP_ADDR_DOMAIN_TOO_LONG,
    SMTP_ADDR_PATH_TOO_LONG,
    SMTP_ADDR_NEEDS_UTF8,       /* non-ASCII without SMTPUTF8: 553 5.6.7 */
};

/* A parsed path. All strings are owned (free with smtp_path_clear). */
struct smtp_path {
    bool null;                  /* the null path <> */
    char *local;                /* local part as the mailbox will use it: quotes removed, escapes resolved */
    char *domain;               /* domain as sent (case kept), or "[...]" for an address literal */
    char *mailbox;              /* "local@domain" in canonical form: local part re-quoted if it needs it */
    bool quoted;                /* the local part was a Quoted-string */
    bool literal;               /* the domain is an address literal */
    bool had_route;             /* a source route was dropped */
    bool utf8;                  /* contains non-ASCII (UTF-8) */
};

/*
 * Parses a path starting at s[0] == '<' (n bytes available). On success fills out and sets
 * *consumed to the bytes up to and including '>'. allow_utf8 = SMTPUTF8 was given on MAIL.
 * allow_null = "<>" is acceptable (MAIL FROM only).
 */
enum smtp_addr_err smtp_path_parse(const char *s, size_t n, const struct smtp_addr_limits *lim,
                                   bool allow_utf8, bool allow_null, struct smtp_path *out,
                                   size_t *consumed);
void smtp_path_clear(struct smtp_path *p);
/* Is c a valid Domain (RFC 5321 sub-domains, or U-labels when utf8)? address literals excluded. */
bool smtp_domain_valid(const char *d, size_t n, bool utf8);
/* Case-insensitive ASCII compare of two domains, ignoring one trailing dot. */
bool smtp_domain_equal(const char *a, const char *b);

#endif
