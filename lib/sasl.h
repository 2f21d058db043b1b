/*
 * sasl.h - the server side of SASL PLAIN (RFC 4616) and LOGIN, as base64 decoding and splitting.
 * Pure functions; the dialog itself (334 challenges) is in edge_auth.c.
 */
#ifndef MXG_SASL_H
#define MXG_SASL_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/*
 * Decodes standard base64 (whitespace not allowed, padding required), appending to out; false if
 * malformed, with out left as it was. base64_encode appends too.
 */
bool base64_decode(const char *s, size_t n, struct buf *out);
void base64_encode(const void *p, size_t n, struct buf *out);

/*
 * PLAIN message "authzid NUL authcid NUL passwd" (already base64-decoded, len bytes). An authzid
 * that is non-empty and differs from authcid is refused. Sets malloc'd *user and *pass (both NULL
 * when false); the caller frees them.
 */
bool sasl_plain_split(const char *msg, size_t len, char **user, char **pass);

#endif
