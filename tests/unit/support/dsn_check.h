/*
 * dsn_check.h - test support: a structural checker for delivery status notifications (RFC 3464
 * reports in an RFC 6522 multipart/report, RFC 5322 lines).
 *
 * dsn_check_parse() reads a DSN back: CR LF only, no line over 998 octets, the top header fields
 * (each exactly once), the boundary (present on no line but the delimiters), the parts with their
 * header fields, and the message/delivery-status groups with the fields RFC 3464 requires. Any
 * structural error fails the running test; what it fills lets a test assert exact values.
 */
#ifndef MXG_TEST_DSN_CHECK_H
#define MXG_TEST_DSN_CHECK_H

#include <stddef.h>

struct dsn_check_field {
    char *name;
    char *value;                /* unfolded: CR LF removed, the white space after it kept */
};

struct dsn_check_fields {
    struct dsn_check_field f[40];
    size_t n;
};

struct dsn_check_part {
    struct dsn_check_fields hdr;
    char *content;              /* bytes between the empty line and the next delimiter's CR LF */
    size_t content_len;
};

/* A DSN read back. Owns its fields and contents (dsn_check_free); body points into the text. */
struct dsn_check_parsed {
    struct dsn_check_fields top;
    char boundary[100];
    struct dsn_check_part parts[5];
    size_t nparts;
    struct dsn_check_fields groups[12];     /* delivery-status: per-message, then one per recipient */
    size_t ngroups;
    const char *body;           /* after the top header section */
};

/* Checks the whole DSN at s (n bytes) and fills ps, which must hold nothing (zeroed or freed). */
void dsn_check_parse(const char *s, size_t n, struct dsn_check_parsed *ps);
/* Releases what ps holds and zeroes it. */
void dsn_check_free(struct dsn_check_parsed *ps);
/* The value of the one field called name (case-insensitive), or NULL; fails when repeated. */
const char *dsn_check_get(const struct dsn_check_fields *fs, const char *name);
/* fs holds exactly these n fields in this order; a NULL value is not compared. */
void dsn_check_expect_fields(const struct dsn_check_fields *fs, const char *const (*want)[2], size_t n);

#endif
