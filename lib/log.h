/*
 * log.h - structured logging: one JSON object per line on stderr (or a chosen fd).
 *
 * Every line carries ts, level, role and event; session, client, queue_id and user are added when
 * the caller's context knows them, the way James's JSON logs carry user / ip / session ids. Values
 * are JSON-escaped and control characters written as \u00XX, so network text cannot forge a line.
 *
 *   struct logrec lr;
 *   if (log_begin(&lr, LOG_INFO, "connect", &sess->logctx)) {
 *       log_str(&lr, "listener", "mx");
 *       log_end(&lr);
 *   }
 */
#ifndef MXG_LOG_H
#define MXG_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERR, LOG_CRIT };

/* What a log line knows about where it comes from; any field may be NULL. */
struct log_ctx {
    const char *session;    /* session id */
    const char *client;     /* client IP address */
    const char *queue_id;   /* queue id of the message in hand */
    const char *user;       /* authenticated user */
};

/* One line being built; lives on the caller's stack between log_begin and log_end. */
struct logrec {
    struct buf line;        /* the JSON text so far */
};

/* Sets the role name written on every line, the lowest level written, and the fd (default 2). */
void log_init(const char *role, enum log_level min, int fd);
/* Parses "debug", "info", "warn", "error", "crit"; false for anything else. */
bool log_level_parse(const char *s, enum log_level *out);
bool log_enabled(enum log_level level);
/* The role name given to log_init. */
const char *log_role_name(void);

/* Starts a line; false (and nothing to end) when the level is filtered out. */
bool log_begin(struct logrec *lr, enum log_level level, const char *event, const struct log_ctx *ctx);
void log_str(struct logrec *lr, const char *key, const char *val);
void log_strn(struct logrec *lr, const char *key, const char *val, size_t n);
void log_int(struct logrec *lr, const char *key, long long val);
void log_bool(struct logrec *lr, const char *key, bool val);
/* Writes the line with one write(2) and frees it. */
void log_end(struct logrec *lr);

/* A one-call line with a printf-formatted "msg" field. */
void log_msg(enum log_level level, const char *event, const struct log_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A broken invariant or out of memory: logs at crit and aborts. */
_Noreturn void log_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A fatal start-up condition: logs at crit and exits 1. */
_Noreturn void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Appends s (n bytes) to b as the body of a JSON string: well-formed UTF-8 kept, controls and
 * bytes that are not UTF-8 written as \u00XX (so such a byte reads back as U+00XX).
 */
void json_escape(struct buf *b, const char *s, size_t n);

#endif
