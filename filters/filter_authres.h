/*
 * filter_authres.h - the Authentication-Results header (RFC 8601) that mxgate adds, and the
 * incoming ones it removes: a header that claims our authserv-id was not written by us, and a
 * reader that trusts our results must not be fooled by it (RFC 8601 section 5).
 */
#ifndef MXG_FILTER_AUTHRES_H
#define MXG_FILTER_AUTHRES_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/*
 * Appends the field value "authserv-id; resinfo; resinfo" (no field name, no CRLF): results is
 * the ";"-separated resinfo text of the filters (spf_auth_results, dkim_auth_results), "" for
 * "none" (RFC 8601 section 2.2: no method applied).
 */
void authres_value(const char *authserv_id, const char *results, struct buf *out);
/*
 * Appends the whole header: "Authentication-Results: value" folded after each ';' so that no
 * line grows past 78 characters, ending with CRLF.
 */
void authres_header(const char *authserv_id, const char *results, struct buf *out);
/*
 * Does a received Authentication-Results field value (everything after the colon, possibly
 * folded) name authserv_id as its authserv-id? Compared case-insensitively, ignoring comments
 * (CFWS) and an optional version number after the id.
 */
bool authres_claims(const char *value, size_t len, const char *authserv_id);
/*
 * Removes from msg, whose header section starts at offset from (CRLF line ends), every
 * Authentication-Results header field of that section that claims authserv_id; the bytes before
 * from are left alone. Returns how many were removed.
 */
size_t authres_strip(struct buf *msg, size_t from, const char *authserv_id);

#endif
