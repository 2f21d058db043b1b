/*
 * ops.h - operator-facing commands of the mxgate binary: the appliance supervisor (`mxgate run`)
 * and configuration checks.
 */
#ifndef MXG_OPS_H
#define MXG_OPS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* The global command-line options, passed on to the roles `mxgate run` starts. */
struct ops_args {
    const char *argv0;
    const char *conf_file;      /* -c FILE, or NULL */
    char **overrides;           /* -o key=value, in order */
    size_t noverrides;
};

/* `mxgate run`: the private Redis (when redis.url is empty), the roles, restarts; exit status. */
int ops_run(const struct ops_args *a);

/*
 * Checks what the file parser cannot: listener specs, networks, the Redis URL, and that the files
 * named (recipients, AUTH users, TLS certificate and key) load. Appends "FILE: key: message" lines.
 */
bool ops_config_validate(const char *file, struct buf *errs) __attribute__((warn_unused_result));

/* ---- operator commands on the queue (ops_queue.c) and the repositories (ops_repo.c) ---- */

struct redisContext;
struct redisReply;

/* `mxgate queue list|show|delete|flush|hold|release ...`: 0, 1 on a failure, 2 on a usage error. */
int ops_queue(const struct ops_args *a, int argc, char **argv);
/* `mxgate repo list|show|delete|reprocess ...`: the same exit statuses. */
int ops_repo(const struct ops_args *a, int argc, char **argv);

/* One run of an operator command: what ops_queue.c shares with ops_repo.c. */
struct ops_cli {
    const char *cmd;            /* "queue list", for messages */
    struct redisContext *c;     /* blocking connection (ops_cli_open), or NULL */
    const char *prefix;         /* redis.prefix */
    bool json;                  /* --json: one JSON object per line */
    long long now;              /* Redis's clock (ms) when the command started */
};

/* An option of a subcommand: a value option sets *arg, a flag sets *flag. */
struct ops_opt {
    const char *name;           /* "--sender" */
    const char **arg;
    bool *flag;
};

/* The stages whose due, lease and owner sets hold recipients ("main" first). */
extern const char *const ops_stages[];
extern const size_t ops_nstages;

/*
 * Splits argv into the options of opts (plus --json, always accepted) and positional arguments
 * (*pos, malloc'd, pointing into argv); prints the error and returns 2 on a usage error.
 */
int ops_cli_args(struct ops_cli *cli, int argc, char **argv, const struct ops_opt *opts,
                 size_t nopts, char ***pos, size_t *npos);
/* Prints "mxgate CMD: message (see 'mxgate help')" and returns 2. */
int ops_usage(const struct ops_cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "mxgate CMD: message" and returns 1. */
int ops_fail(const struct ops_cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parses a positive count ("--limit"); false (after a usage message) when it is not one. */
bool ops_parse_count(const struct ops_cli *cli, const char *opt, const char *s, long long *out);
/* True when s has the form of a queue id (20 characters of Crockford base32). */
bool ops_is_id(const char *s);
/* Loads the configuration and connects to Redis; 0, or 1 after printing why. */
int ops_cli_open(struct ops_cli *cli, const struct ops_args *a) __attribute__((warn_unused_result));
void ops_cli_close(struct ops_cli *cli);
/* Sends one command; the reply, or NULL after printing the error (lost connection, error reply). */
struct redisReply *ops_redis(const struct ops_cli *cli, int argc, const char **argv)
    __attribute__((warn_unused_result));
/* Appends "2024-05-01T12:00:00Z" for a time in ms. */
void ops_fmt_time(struct buf *b, long long ms);
/* Appends s with anything but printable ASCII escaped (text from the network, for a terminal). */
void ops_fmt_safe(struct buf *b, const char *s);
/*
 * Prints one message (envelope, recipients, history; the body too when asked); 0, or 1 when the
 * message is not in the queue.
 */
int ops_queue_show_one(struct ops_cli *cli, const char *id, bool body);
/*
 * Removes every key and schedule entry of one message, and its member from the repository repo
 * (or NULL) as well as from the one its envelope names; 1 deleted, 0 unknown id, -1 on failure
 * (printed). *inflight gets how many of its recipients were under lease.
 */
int ops_queue_delete_one(struct ops_cli *cli, const char *id, const char *repo, long long *inflight)
    __attribute__((warn_unused_result));

#endif
