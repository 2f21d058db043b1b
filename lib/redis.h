/*
 * redis.h - a Redis connection on the libevent loop (hiredis async with our own small adapter).
 *
 * struct redis keeps one connection to one server: it connects, and after a failure reconnects
 * with backoff (100 ms doubling to 5 s) for as long as it lives. Every command has a deadline
 * (redis.timeout): a server that does not answer in time is treated as down, the connection is
 * dropped, and every command waiting on it gets its callback with reply == NULL and an error, so a
 * caller always hears back, in bounded time, exactly once. A command issued while disconnected
 * fails at once: redis_command() returns false and the callback is never called. Callbacks never
 * run from inside redis_command() itself. MONITOR is not supported (every command must get exactly
 * one reply); SUBSCRIBE only through redis_subscribe().
 *
 * URLs: "redis://[:password@]host[:port][/db]", "unix:/path/to/sock" or "unix:///path?db=N"
 * ("unix:relative/path" too). A password may be %-escaped.
 */
#ifndef MXG_REDIS_H
#define MXG_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#include "buf.h"

struct event_base;
struct redis;

/*
 * reply is NULL when the command failed (not connected, timeout, connection lost), with err
 * saying why; otherwise the server's reply, which may be a REDIS_REPLY_ERROR (OOM, READONLY,
 * EXECABORT...). The reply is freed after the callback returns.
 */
typedef void redis_reply_fn(redisReply *reply, const char *err, void *arg);

struct redis_target {
    char *host;         /* TCP host, or NULL for a unix socket */
    int port;
    char *path;         /* unix socket path, or NULL */
    char *password;     /* AUTH password, or NULL */
    int db;             /* SELECT db (0 = none) */
};

/* Parses a redis.url value; false with a message in err. */
bool redis_url_parse(const char *url, struct redis_target *out, struct buf *err)
    __attribute__((warn_unused_result));
void redis_target_clear(struct redis_target *t);

/* Starts connecting (asynchronously). name goes into CLIENT SETNAME and logs. Takes a copy of t. */
struct redis *redis_new(struct event_base *base, const struct redis_target *t, long long timeout_ms,
                        const char *name);
/*
 * Closes the connection; pending commands get their callback with reply == NULL and err
 * "shutting down" before redis_free() returns (or, when called from inside one of this redis's
 * callbacks, as soon as that callback returns). Safe to call from inside any of its callbacks:
 * the memory is then released on the next turn of the loop. NULL is a no-op.
 */
void redis_free(struct redis *r);
/* Connected and authenticated (and SELECTed): commands may be sent. */
bool redis_connected(const struct redis *r);
/* Called (on the loop) each time the connection comes up; for loading scripts and the like. */
void redis_on_connect(struct redis *r, void (*fn)(struct redis *r, void *arg), void *arg);

/* A message published on a subscribed channel: its payload (not NUL-terminated). */
typedef void redis_message_fn(const char *payload, size_t len, void *arg);

/*
 * Makes r a subscriber: SUBSCRIBE channel now (when connected) and after every reconnect; fn runs
 * on the loop with each message. Messages sent while the connection was down are lost, so
 * subscribers treat them as hints and also look for themselves. A subscriber takes no other
 * command (redis_command() returns false). Once per redis.
 */
void redis_subscribe(struct redis *r, const char *channel, redis_message_fn *fn, void *arg);

/*
 * Sends one command. Returns true when it was sent, in which case cb is called exactly once later.
 * Returns false (and never calls cb) when not connected. cb may be NULL (fire and forget: the
 * reply is only checked for errors, which are logged). Arguments are copied.
 */
bool redis_command(struct redis *r, redis_reply_fn *cb, void *arg, int argc, const char **argv,
                   const size_t *argvlen) __attribute__((warn_unused_result));
/* printf-style form (hiredis's %s / %b / %d). */
bool redis_commandf(struct redis *r, redis_reply_fn *cb, void *arg, const char *fmt, ...)
    __attribute__((warn_unused_result));

/*
 * A Lua script, run by its SHA-1 digest (EVALSHA) so that its text crosses the wire and gets
 * hashed by Redis once per connection instead of once per call. Define one per script, static,
 * with REDIS_SCRIPT(text); the digest is computed on first use.
 */
struct redis_script {
    const char *text;
    char sha[41];       /* hex digest of text; "" until first used */
};
#define REDIS_SCRIPT(t) { .text = (t), .sha = "" }

/*
 * Runs a script, like redis_command() with EVAL: argv is numkeys, the keys, then the arguments.
 * The first use on each connection loads the script (SCRIPT LOAD, pipelined ahead of the call,
 * so the call always finds it). A server that lost its scripts since (SCRIPT FLUSH) answers that
 * one call with a NOSCRIPT error reply, and the next call loads the script again.
 */
bool redis_eval(struct redis *r, struct redis_script *s, redis_reply_fn *cb, void *arg, int argc,
                const char **argv, const size_t *argvlen) __attribute__((warn_unused_result));

/*
 * Blocking helpers for command-line tools and start-up (never on a running loop): a plain
 * synchronous connection to the same target.
 */
redisContext *redis_connect_sync(const struct redis_target *t, long long timeout_ms, struct buf *err);

#endif
