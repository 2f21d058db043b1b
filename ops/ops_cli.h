/*
 * ops_cli.h - what the operator commands `mxgate queue` (ops_queue.c, ops_queue_change.c) and
 * `mxgate repo` (ops_repo.c) share: argument parsing, the blocking Redis connection, human and
 * --json output, the EVAL argv builder, and the one-snapshot view of a queued message.
 *
 * Everything here prints its own error to stderr and returns it; nothing here exits.
 */
#ifndef MXG_OPS_CLI_H
#define MXG_OPS_CLI_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "buf.h"
#include "ops.h"
#include "queue.h"
#include "relay_queue.h"

/* One run of an operator command. */
struct ops_cli {
    const char *cmd;            /* "queue list", for messages */
    redisContext *c;            /* blocking connection (ops_cli_open), or NULL */
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

/* A subcommand: its name ("list") and what runs it; 0, 1 on a failure, 2 on a usage error. */
struct ops_sub {
    const char *name;
    int (*fn)(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv);
};

/* The stages whose due, lease and owner sets hold recipients ("main" first). */
extern const char *const ops_stages[];
extern const size_t ops_nstages;

/* ---- the command line ---- */

/*
 * Runs the subcommand argv[0] of `mxgate GROUP` (list names the choices, for the usage message)
 * with the rest of argv, then closes the connection; its exit status.
 */
int ops_cli_dispatch(const char *group, const char *list, const struct ops_sub *subs, size_t nsubs,
                     const struct ops_args *a, int argc, char **argv);
/*
 * Splits argv into the options of opts (plus --json, always accepted) and positional arguments
 * (*pos, malloc'd, pointing into argv); prints the error and returns 2 on a usage error.
 */
int ops_cli_args(struct ops_cli *cli, int argc, char **argv, const struct ops_opt *opts,
                 size_t nopts, char ***pos, size_t *npos);
/* ops_cli_args where every positional is a queue id (at least one when need); 2 on a bad one. */
int ops_parse_ids(struct ops_cli *cli, int argc, char **argv, const struct ops_opt *opts,
                  size_t nopts, char ***ids, size_t *n, bool need);
/* Prints "mxgate CMD: message (see 'mxgate help')" and returns 2. */
int ops_usage(const struct ops_cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "mxgate CMD: message" and returns 1. */
int ops_fail(const struct ops_cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parses a positive count ("--limit"); false (after a usage message) when it is not one. */
bool ops_parse_count(const struct ops_cli *cli, const char *opt, const char *s, long long *out);
/* True when s has the form of a queue id (20 characters of Crockford base32). */
bool ops_is_id(const char *s);

/* ---- Redis ---- */

/* Loads the configuration and connects to Redis; 0, or 1 after printing why. */
int ops_cli_open(struct ops_cli *cli, const struct ops_args *a) __attribute__((warn_unused_result));
void ops_cli_close(struct ops_cli *cli);
/* Sends one command; the reply, or NULL after printing the error (lost connection, error reply). */
redisReply *ops_redis(const struct ops_cli *cli, int argc, const char **argv)
    __attribute__((warn_unused_result));
/* Appends to b a glob pattern (SCAN MATCH) matching s literally. */
void ops_glob_escape(struct buf *b, const char *s);
/* Sorts ids[0..*n) and frees the duplicates (SCAN may return a key twice). */
void ops_sort_unique(char **ids, size_t *n);
/* Frees ids[0..n) and the array. */
void ops_free_ids(char **ids, size_t n);

/* ---- output ---- */

/* Appends "2024-05-01T12:00:00Z" for a time in ms. */
void ops_fmt_time(struct buf *b, long long ms);
/* Appends s with anything but printable ASCII escaped (text from the network, for a terminal). */
void ops_fmt_safe(struct buf *b, const char *s);
/* Appends a duration as "42s", "3m05s", "2h10m" or "4d03h". */
void ops_fmt_dur(struct buf *b, long long ms);
/* Appends "2024-..Z (in 42s)" or "(3m ago)" for an absolute time, or only the relative part. */
void ops_fmt_when(struct buf *b, const struct ops_cli *cli, long long ms, bool absolute);
/* A JSON string from bytes that may not be UTF-8 (such bytes read back as U+00XX, as in logs). */
json_t *ops_jstr(const char *s, size_t n);
/* Prints one JSON object on its own line and drops the reference (NULL prints nothing). */
void ops_put_json(json_t *o);

/* ---- the EVAL builder ---- */

/* The argv of an EVAL: EVAL, script, key count, keys, args; strings owned. */
struct ops_eval {
    char **v;
    size_t n, nkeys;
};

/* Starts an EVAL: keys and then arguments follow; ops_eval_run fills in the key count. */
void ops_eval_begin(struct ops_eval *e, const char *script);
/* Appends an argument (copied). */
void ops_eval_add(struct ops_eval *e, const char *s);
/* Appends the key P:kind:{id}. */
void ops_eval_msg_key(struct ops_eval *e, const char *prefix, const char *kind, const char *id);
/* Appends the key P:name. */
void ops_eval_named_key(struct ops_eval *e, const char *prefix, const char *name);
/* Appends the keys of each stage: which[0..nwhich) of due, urgent, lease, owner. */
void ops_eval_stage_keys(struct ops_eval *e, const char *prefix, const enum relay_stage_key *which,
                         size_t nwhich);
/* Appends the number of stages, then their names. */
void ops_eval_stage_names(struct ops_eval *e);
/* Sends the EVAL and frees e; the reply, or NULL as ops_redis. */
redisReply *ops_eval_run(const struct ops_cli *cli, struct ops_eval *e)
    __attribute__((warn_unused_result));

/* ---- the view of a message ---- */

/* One recipient as the snapshot shows it. */
struct ops_rcpt_view {
    long long index;
    json_t *rec;            /* its JSON record (owned), or an empty object when unreadable */
    const char *to;         /* in rec */
    const char *state;      /* pending, deferred, held, inflight, delivered, failed (static or
                             * in rec) */
    const char *stage;      /* the stage of its schedule set (an ops_stages entry), "" in none */
    long long score;        /* due time, lease expiry or time held; -1 when in no set */
    bool urgent;            /* due in the stage's urgent set (claimed first) */
};

/* One message: envelope and recipients in index order. */
struct ops_msg_view {
    char id[QUEUE_ID_LEN + 1];
    json_t *env;            /* envelope fields, all strings (owned) */
    struct ops_rcpt_view *r;
    size_t nr;
};

/*
 * Reads ids[0..n) in one pipeline, each as one snapshot (envelope, records, schedule places);
 * found[i] false for a message not in the queue. False after printing a Redis error.
 */
bool ops_read_many(const struct ops_cli *cli, char *const *ids, size_t n, struct ops_msg_view *ms,
                   bool *found);
void ops_msg_view_clear(struct ops_msg_view *m);
/* An envelope field, or NULL. */
const char *ops_env_get(const struct ops_msg_view *m, const char *key);
/* A numeric envelope field, 0 when absent. */
long long ops_env_num(const struct ops_msg_view *m, const char *key);
/* A number of a JSON record, def when absent or not a number. */
long long ops_rec_num(const json_t *rec, const char *key, long long def);
/* The recipient as JSON: its record, with the index, the state it is in, and its schedule. */
json_t *ops_rcpt_json(const struct ops_rcpt_view *v);

/* ---- queue commands used across files ---- */

/*
 * Prints one message (envelope, recipients, history; the body too when asked); 0, or 1 when the
 * message is not in the queue. In ops_queue.c.
 */
int ops_queue_show_one(struct ops_cli *cli, const char *id, bool body);
/*
 * Removes every key and schedule entry of one message, and its member from the repository repo
 * (or NULL) as well as from the one its envelope names; 1 deleted, 0 unknown id, -1 on failure
 * (printed). *inflight gets how many of its recipients were under lease. In ops_queue_change.c.
 */
int ops_queue_delete_one(struct ops_cli *cli, const char *id, const char *repo, long long *inflight)
    __attribute__((warn_unused_result));
/* `queue delete|flush|hold|release ID...` (ops_queue_change.c), run by ops_queue(). */
int ops_queue_delete(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv);
int ops_queue_flush(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv);
int ops_queue_hold(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv);
int ops_queue_release(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv);

#endif
