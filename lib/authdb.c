/*
 * authdb.c - the AUTH user table (edge.auth_users): "user crypt-hash" lines checked with libcrypt.
 *
 * Owns the users as one array sorted by name (bsearch on lookup) and a dummy yescrypt hash made
 * at load, which an unknown user's password is checked against so that "no such user" takes as
 * long as "wrong password". The table is read-only after authdb_load, so authdb_verify may run
 * on any number of worker threads at once (crypt_rn with a per-call work area).
 *
 * File format: one user per line, "user hash", separated by spaces or tabs. A user name is 1..255
 * printable ASCII characters other than space; names are matched exactly (case matters). The hash
 * starts with '$' (a libcrypt method: $y$, $6$, $5$, $2b$...) or is a 13-character traditional
 * DES hash. Lines whose first non-blank character is '#' and blank lines are skipped; a CR before
 * the newline is tolerated. A malformed line or a user given twice fails the load with one
 * "FILE:LINE: message" line per problem (up to AUTHDB_MAX_ERRORS of them).
 */
#include "authdb.h"

#include <crypt.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "mem.h"

#define AUTHDB_USER_MAX 255
/* Past this many problems the file is probably not a user table at all; more lines do not help. */
#define AUTHDB_MAX_ERRORS 20
/* The kind of hash the dummy is, and so the cost an unknown user's attempt pays. */
#define AUTHDB_DUMMY_PREFIX "$y$"

struct authdb_user {
    char *name;         /* user name, printable ASCII */
    char *hash;         /* crypt(3) hash */
    unsigned long line; /* where it was defined, for duplicate reports */
};

struct authdb {
    struct authdb_user *users;  /* sorted by name (strcmp) */
    size_t nusers;
    char *dummy_hash;           /* yescrypt hash of a random password nobody knows */
};

/* One problem found while loading, kept so the report comes out in line order. */
struct authdb_error {
    unsigned long line;
    char *msg;
};

struct authdb_loader {
    struct authdb_user *users;
    size_t nusers, cap;
    struct authdb_error *errors;
    size_t nerrors, errcap;
};

static void loader_error(struct authdb_loader *ld, unsigned long line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void loader_error(struct authdb_loader *ld, unsigned long line, const char *fmt, ...)
{
    if (ld->nerrors == ld->errcap) {
        ld->errcap = ld->errcap ? ld->errcap * 2 : 8;
        ld->errors = xrealloc(ld->errors, ld->errcap * sizeof *ld->errors);
    }
    struct buf b = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    ld->errors[ld->nerrors].line = line;
    ld->errors[ld->nerrors].msg = buf_steal(&b);
    ld->nerrors++;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Printable ASCII other than space: what a user name and a hash are made of. */
static bool is_graph(char c)
{
    return (unsigned char)c > 0x20 && (unsigned char)c < 0x7f;
}

static bool all_graph(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!is_graph(p[i]))
            return false;
    }
    return true;
}

/* The traditional DES form: 2 salt and 11 hash characters from crypt's own alphabet. */
static bool is_des_hash(const char *p, size_t n)
{
    if (n != 13)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.'
              || c == '/'))
            return false;
    }
    return true;
}

/* Splits off the next run of non-blank bytes of line[*pos..len); false at the end of the line. */
static bool next_field(const char *line, size_t len, size_t *pos, const char **field, size_t *flen)
{
    size_t i = *pos;
    while (i < len && is_blank(line[i]))
        i++;
    if (i == len)
        return false;
    size_t start = i;
    while (i < len && !is_blank(line[i]))
        i++;
    *field = line + start;
    *flen = i - start;
    *pos = i;
    return true;
}

/* Checks one line (without its newline) and adds its user; problems go to ld->errors. */
static void parse_line(struct authdb_loader *ld, unsigned long lineno, const char *line, size_t len)
{
    size_t pos = 0;
    const char *user, *hash, *extra;
    size_t ulen, hlen, xlen;

    if (!next_field(line, len, &pos, &user, &ulen) || user[0] == '#')
        return;
    if (ulen > AUTHDB_USER_MAX) {
        loader_error(ld, lineno, "user name longer than %d characters", AUTHDB_USER_MAX);
        return;
    }
    if (!all_graph(user, ulen)) {
        loader_error(ld, lineno, "non-printable character in user name");
        return;
    }
    if (!next_field(line, len, &pos, &hash, &hlen)) {
        loader_error(ld, lineno, "missing password hash for user \"%.*s\"", (int)ulen, user);
        return;
    }
    if (!all_graph(hash, hlen)) {
        loader_error(ld, lineno, "non-printable character in password hash");
        return;
    }
    if (next_field(line, len, &pos, &extra, &xlen)) {
        loader_error(ld, lineno, "unexpected text after the password hash");
        return;
    }
    if (hash[0] != '$' && !is_des_hash(hash, hlen)) {
        loader_error(ld, lineno, "password hash must start with '$' or be a 13-character DES hash");
        return;
    }
    char *h = xstrndup(hash, hlen);
    if (crypt_checksalt(h) == CRYPT_SALT_INVALID) {
        free(h);
        loader_error(ld, lineno, "password hash method not supported by libcrypt");
        return;
    }

    if (ld->nusers == ld->cap) {
        ld->cap = ld->cap ? ld->cap * 2 : 16;
        ld->users = xrealloc(ld->users, ld->cap * sizeof *ld->users);
    }
    ld->users[ld->nusers].name = xstrndup(user, ulen);
    ld->users[ld->nusers].hash = h;
    ld->users[ld->nusers].line = lineno;
    ld->nusers++;
}

/* Orders by name, then by line, so the first definition of a duplicate comes first. */
static int user_cmp(const void *a, const void *b)
{
    const struct authdb_user *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c != 0)
        return c;
    return (x->line > y->line) - (x->line < y->line);
}

static int error_cmp(const void *a, const void *b)
{
    const struct authdb_error *x = a, *y = b;
    return (x->line > y->line) - (x->line < y->line);
}

static int user_key_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct authdb_user *)elem)->name);
}

/* A hash of a random password, to spend an unknown user's check on; NULL if libcrypt fails. */
static char *make_dummy_hash(void)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    if (crypt_gensalt_rn(AUTHDB_DUMMY_PREFIX, 0, NULL, 0, setting, sizeof setting) == NULL)
        return NULL;
    unsigned char rnd[16];
    char pw[2 * sizeof rnd + 1];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return NULL;
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(pw + 2 * i, 3, "%02x", rnd[i]);
    struct crypt_data *cd = xcalloc(1, sizeof *cd);
    char *res = crypt_rn(pw, setting, cd, sizeof *cd);
    char *out = res != NULL ? xstrdup(res) : NULL;
    OPENSSL_cleanse(cd, sizeof *cd);
    OPENSSL_cleanse(pw, sizeof pw);
    free(cd);
    return out;
}

static void free_users(struct authdb_user *users, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(users[i].name);
        free(users[i].hash);
    }
    free(users);
}

struct authdb *authdb_load(const char *path, struct buf *err)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        buf_printf(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }

    struct authdb_loader ld = { 0 };
    char *line = NULL;
    size_t linecap = 0;
    ssize_t n;
    unsigned long lineno = 0;
    while ((n = getline(&line, &linecap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)n;
        if (len > 0 && line[len - 1] == '\n')
            len--;
        if (len > 0 && line[len - 1] == '\r')
            len--;
        parse_line(&ld, lineno, line, len);
    }
    int read_errno = ferror(f) ? errno : 0;
    free(line);
    fclose(f);

    if (read_errno != 0) {
        free_users(ld.users, ld.nusers);
        for (size_t i = 0; i < ld.nerrors; i++)
            free(ld.errors[i].msg);
        free(ld.errors);
        buf_printf(err, "%s: read error: %s", path, strerror(read_errno));
        return NULL;
    }

    if (ld.nusers > 1)
        qsort(ld.users, ld.nusers, sizeof *ld.users, user_cmp);
    size_t first = 0;   /* index of the first definition of the current name */
    for (size_t i = 1; i < ld.nusers; i++) {
        if (strcmp(ld.users[i].name, ld.users[first].name) == 0)
            loader_error(&ld, ld.users[i].line, "duplicate user \"%s\" (first defined on line %lu)",
                         ld.users[i].name, ld.users[first].line);
        else
            first = i;
    }

    if (ld.nerrors > 0) {
        qsort(ld.errors, ld.nerrors, sizeof *ld.errors, error_cmp);
        for (size_t i = 0; i < ld.nerrors; i++) {
            if (i < AUTHDB_MAX_ERRORS)
                buf_printf(err, "%s%s:%lu: %s", i ? "\n" : "", path, ld.errors[i].line, ld.errors[i].msg);
            free(ld.errors[i].msg);
        }
        if (ld.nerrors > AUTHDB_MAX_ERRORS)
            buf_printf(err, "\n%s: %zu more errors not shown", path, ld.nerrors - AUTHDB_MAX_ERRORS);
        free(ld.errors);
        free_users(ld.users, ld.nusers);
        return NULL;
    }
    free(ld.errors);

    char *dummy = make_dummy_hash();
    if (dummy == NULL) {
        buf_printf(err, "%s: cannot make the %s dummy hash: libcrypt or the random source failed",
                   path, AUTHDB_DUMMY_PREFIX);
        free_users(ld.users, ld.nusers);
        return NULL;
    }

    struct authdb *db = xmalloc(sizeof *db);
    db->users = ld.users;
    db->nusers = ld.nusers;
    db->dummy_hash = dummy;
    return db;
}

void authdb_free(struct authdb *db)
{
    if (db == NULL)
        return;
    free_users(db->users, db->nusers);
    free(db->dummy_hash);
    free(db);
}

bool authdb_verify(const struct authdb *db, const char *user, const char *password)
{
    const struct authdb_user *u = NULL;
    if (db->nusers > 0)
        u = bsearch(user, db->users, db->nusers, sizeof *db->users, user_key_cmp);
    const char *hash = u != NULL ? u->hash : db->dummy_hash;

    /* struct crypt_data is tens of kilobytes: too much for a worker thread's stack */
    struct crypt_data *cd = xcalloc(1, sizeof *cd);
    const char *res = crypt_rn(password, hash, cd, sizeof *cd);
    bool ok = false;
    if (res != NULL) {
        size_t hlen = strlen(hash);
        ok = strlen(res) == hlen && CRYPTO_memcmp(res, hash, hlen) == 0;
    }
    OPENSSL_cleanse(cd, sizeof *cd);
    free(cd);
    /* the dummy can only match by a 128-bit coincidence, but never let it count */
    return ok && u != NULL;
}
