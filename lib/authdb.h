/*
 * authdb.h - the users allowed to AUTH (edge.auth_users): lines of "user crypt-hash".
 *
 * The hash is any crypt(3) form libcrypt knows ($y$ yescrypt, $6$ sha512crypt, $5$, $2b$...), as
 * made by `mkpasswd -m yescrypt` or `openssl passwd -6`. '#' comments and blank lines are skipped;
 * a malformed line is an error with file and line. Checking a password is slow on purpose, so it
 * is done on a worker thread (authdb_verify is thread-safe), and a missing user costs the same time
 * as a wrong password (checked against a dummy hash).
 */
#ifndef MXG_AUTHDB_H
#define MXG_AUTHDB_H

#include <stdbool.h>

#include "buf.h"

struct authdb;

/* Loads the file; NULL with "FILE:LINE: message" lines in err on failure. */
struct authdb *authdb_load(const char *path, struct buf *err);
void authdb_free(struct authdb *db);
/* true when user exists and password matches. Constant-time compare; thread-safe. */
bool authdb_verify(const struct authdb *db, const char *user, const char *password);

#endif
