/*
 * ops_repo.c - `mxgate repo list|show|delete|reprocess`: the mail repositories (docs/queue.md,
 * "Repositories"), as in Apache James.
 *
 * A repository P:repo:<name> is a zset of message ids scored by the time each entered it; the
 * message's keys stay in the queue with `repo` and `repo_reason` in its envelope. Reprocessing
 * resets a message's failed recipients to pending in the due set of a stage and takes it out of
 * the repository, in one Lua script per message, so the relay sees either the failed message or
 * the pending one, never a mix. Deleting is `queue delete` restricted to the repository's members.
 *
 * Exit status 2 on a usage error (the bad argument named), 1 when Redis cannot be reached or
 * answers an error, or a message is not in the repository.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "buf.h"
#include "conf.h"
#include "mem.h"
#include "ops.h"
#include "ops_cli.h"
#include "queue.h"
#include "relay_queue.h"

/*
 * KEYS: 1 msg, 2 rcpt, 3 body, 4 log, 5 the repository, 6 the stage's due set. ARGV: 1 id,
 * 2 repository name, 3 stage, 4 log retention (s), 5 the stage's wake channel. Returns {status, count}: 'absent' (not in the
 * repository), 'missing' (its keys were gone: the member is dropped), 'removed' (nothing left to
 * deliver: the message is gone), or 'ok' with the number of recipients made pending.
 */
static const char reprocess_lua[] =
    "if not redis.call('ZSCORE', KEYS[5], ARGV[1]) then return {'absent', 0} end\n"
    "redis.call('ZREM', KEYS[5], ARGV[1])\n"
    "if redis.call('EXISTS', KEYS[2]) == 0 then\n"
    "  redis.call('DEL', KEYS[1], KEYS[3])\n"
    "  return {'missing', 0}\n"
    "end\n"
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local n, open = 0, 0\n"
    "for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do\n"
    "  local rec = cjson.decode(redis.call('HGET', KEYS[2], f))\n"
    "  if rec.state == 'failed' then\n"
    "    rec.state = 'pending'; rec.reprocessed = true; rec.due = now\n"
    "    if ARGV[3] == 'main' then rec.stage = nil else rec.stage = ARGV[3] end\n"
    "    redis.call('HSET', KEYS[2], f, cjson.encode(rec))\n"
    "    redis.call('ZADD', KEYS[6], now, ARGV[1] .. '/' .. f)\n"
    "    n = n + 1\n"
    "  elseif rec.state ~= 'delivered' then\n"
    "    open = open + 1\n"
    "  end\n"
    "end\n"
    "redis.call('HDEL', KEYS[1], 'repo', 'repo_reason')\n"
    "redis.call('RPUSH', KEYS[4], cjson.encode({ts = now, event = 'reprocessed', repo = ARGV[2],\n"
    "  stage = ARGV[3], count = n}))\n"
    "if n == 0 and open == 0 then\n"
    "  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])\n"
    "  redis.call('EXPIRE', KEYS[4], ARGV[4])\n"
    "  return {'removed', 0}\n"
    "end\n"
    "if n > 0 then redis.call('PUBLISH', ARGV[5], '1') end\n"
    "return {'ok', n}\n";

static void repo_key(struct buf *b, const char *prefix, const char *name)
{
    buf_printf(b, "%s:repo:%s", prefix, name);
}

/* Every repository with its size, by name. */
static int list_repos(struct ops_cli *cli)
{
    struct buf pat = BUF_INIT;
    ops_glob_escape(&pat, cli->prefix);
    buf_puts(&pat, ":repo:*");
    size_t skip = strlen(cli->prefix) + strlen(":repo:");
    char **names = NULL;
    size_t n = 0, cap = 0;
    char cursor[32] = "0";
    int rc = 0;
    do {
        const char *argv[] = { "SCAN", cursor, "MATCH", pat.data, "COUNT", "1000", "TYPE", "zset" };
        redisReply *r = ops_redis(cli, 8, argv);
        if (r == NULL) {
            rc = 1;
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                names = xrealloc(names, cap * sizeof *names);
            }
            names[n++] = xstrdup(r->element[1]->element[i]->str + skip);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    ops_sort_unique(names, &n);     /* SCAN may return a key twice */
    struct buf key = BUF_INIT, line = BUF_INIT;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        buf_reset(&key);
        repo_key(&key, cli->prefix, names[i]);
        const char *argv[] = { "ZCARD", key.data };
        redisReply *r = ops_redis(cli, 2, argv);
        if (r == NULL) {
            rc = 1;
            break;
        }
        if (cli->json) {
            ops_put_json(json_pack("{s:s, s:I}", "repo", names[i], "count",
                                   (json_int_t)r->integer));
        } else {
            buf_reset(&line);
            ops_fmt_safe(&line, names[i]);
            printf("%-40s %lld\n", buf_cstr(&line), r->integer);
        }
        freeReplyObject(r);
    }
    if (rc == 0 && n == 0 && !cli->json)
        puts("no repositories");
    ops_free_ids(names, n);
    buf_release(&pat);
    buf_release(&key);
    buf_release(&line);
    return rc;
}

/* Orders the field/value pairs of a P:rcpt HGETALL reply by recipient index. */
static int cmp_pair(const void *a, const void *b)
{
    unsigned long long x = strtoull((*(redisReply *const *)a)->str, NULL, 10);
    unsigned long long y = strtoull((*(redisReply *const *)b)->str, NULL, 10);
    return x < y ? -1 : x > y;
}

/* The recipients {to, state} of a P:rcpt HGETALL reply, in index order. */
static json_t *rcpts_by_index(const redisReply *recs)
{
    json_t *rcpts = json_array();
    if (recs->type != REDIS_REPLY_ARRAY || recs->elements < 2)
        return rcpts;
    size_t n = recs->elements / 2;
    /* Pairs are adjacent: sorting element pointers two at a time keeps them together. */
    redisReply *(*pairs)[2] = xcalloc(n, sizeof *pairs);
    memcpy(pairs, recs->element, n * sizeof *pairs);
    qsort(pairs, n, sizeof *pairs, cmp_pair);
    for (size_t k = 0; k < n; k++) {
        json_t *rec = json_loads(pairs[k][1]->str, 0, NULL);
        json_t *to = json_object_get(rec, "to"), *state = json_object_get(rec, "state");
        if (json_is_string(to))
            json_array_append_new(rcpts, json_pack("{s:O, s:O}", "to", to, "state",
                                                   state ? state : json_null()));
        json_decref(rec);
    }
    free(pairs);
    return rcpts;
}

/* One repository's messages, newest first: id, time entered, sender, recipients, reason. */
static int list_repo(struct ops_cli *cli, const char *name, long long limit)
{
    struct buf key = BUF_INIT;
    repo_key(&key, cli->prefix, name);
    char stop[32];
    snprintf(stop, sizeof stop, "%lld", limit > 0 ? limit - 1 : -1);
    const char *argv[] = { "ZREVRANGE", key.data, "0", stop, "WITHSCORES" };
    redisReply *ids = ops_redis(cli, 5, argv);
    buf_release(&key);
    if (ids == NULL)
        return 1;
    size_t n = ids->elements / 2;
    struct buf msgk = BUF_INIT, rcptk = BUF_INIT, line = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        buf_reset(&msgk);
        buf_reset(&rcptk);
        queue_key(&msgk, cli->prefix, "msg", ids->element[2 * i]->str);
        queue_key(&rcptk, cli->prefix, "rcpt", ids->element[2 * i]->str);
        const char *hmget[] = { "HMGET", msgk.data, "sender", "repo_reason" };
        const char *hgetall[] = { "HGETALL", rcptk.data };
        redisAppendCommandArgv(cli->c, 4, hmget, NULL);
        redisAppendCommandArgv(cli->c, 2, hgetall, NULL);
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        void *a = NULL, *b = NULL;
        if (redisGetReply(cli->c, &a) != REDIS_OK || redisGetReply(cli->c, &b) != REDIS_OK) {
            rc = ops_fail(cli, "redis: %s", cli->c->errstr);
            if (a != NULL)
                freeReplyObject(a);
            break;
        }
        redisReply *env = a, *recs = b;
        const char *id = ids->element[2 * i]->str;
        long long entered = strtoll(ids->element[2 * i + 1]->str, NULL, 10);
        const char *sender = env->type == REDIS_REPLY_ARRAY && env->elements == 2
                             ? env->element[0]->str : NULL;
        const char *reason = sender != NULL ? env->element[1]->str : NULL;
        json_t *rcpts = rcpts_by_index(recs);
        if (cli->json) {
            json_t *o = json_pack("{s:s, s:I, s:s?, s:o, s:s?}", "id", id, "entered_ms",
                                  (json_int_t)entered, "sender", sender, "rcpts", rcpts,
                                  "repo_reason", reason);
            if (sender == NULL)
                json_object_set_new(o, "missing", json_true());
            ops_put_json(o);
        } else {
            buf_reset(&line);
            buf_printf(&line, "%s  ", id);
            ops_fmt_time(&line, entered);
            if (sender == NULL) {
                buf_puts(&line, "  (message keys missing)");
            } else {
                buf_puts(&line, "  <");
                ops_fmt_safe(&line, sender);
                buf_puts(&line, ">  ");
            }
            size_t k;
            json_t *r;
            json_array_foreach(rcpts, k, r) {
                if (k > 0)
                    buf_puts(&line, ", ");
                ops_fmt_safe(&line, json_string_value(json_object_get(r, "to")));
                const char *st = json_string_value(json_object_get(r, "state"));
                if (st != NULL)
                    buf_printf(&line, " (%s)", st);
            }
            if (reason != NULL) {
                buf_puts(&line, "  ");
                ops_fmt_safe(&line, reason);
            }
            puts(buf_cstr(&line));
            json_decref(rcpts);
        }
        freeReplyObject(env);
        freeReplyObject(recs);
    }
    if (rc == 0 && !cli->json)
        printf("-- %zu message%s\n", n, n == 1 ? "" : "s");
    freeReplyObject(ids);
    buf_release(&msgk);
    buf_release(&rcptk);
    buf_release(&line);
    return rc;
}

static int repo_list(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv)
{
    const char *limit_s = NULL;
    long long limit = 0;
    const struct ops_opt opts[] = { { "--limit", &limit_s, NULL } };
    char **pos;
    size_t npos;
    int rc = ops_cli_args(cli, argc, argv, opts, 1, &pos, &npos);
    if (rc == 0 && npos > 1)
        rc = ops_usage(cli, "takes at most one repository name, got '%s' too", pos[1]);
    if (rc == 0 && limit_s != NULL && !ops_parse_count(cli, "--limit", limit_s, &limit))
        rc = 2;
    if (rc == 0 && npos == 0 && limit_s != NULL)
        rc = ops_usage(cli, "--limit needs a repository name");
    if (rc == 0 && (rc = ops_cli_open(cli, a)) == 0)
        rc = npos == 0 ? list_repos(cli) : list_repo(cli, pos[0], limit);
    free(pos);
    return rc;
}

/* 1 when id is in the repository, 0 when not (printed), -1 on failure (printed). */
static int in_repo(struct ops_cli *cli, const char *name, const char *id)
{
    struct buf key = BUF_INIT;
    repo_key(&key, cli->prefix, name);
    const char *argv[] = { "ZSCORE", key.data, id };
    redisReply *r = ops_redis(cli, 3, argv);
    buf_release(&key);
    if (r == NULL)
        return -1;
    int in = r->type == REDIS_REPLY_STRING;
    freeReplyObject(r);
    if (!in) {
        struct buf b = BUF_INIT;
        ops_fmt_safe(&b, name);
        ops_fail(cli, "no message %s in repository %s", id, buf_cstr(&b));
        buf_release(&b);
    }
    return in;
}

static int repo_show(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv)
{
    bool body = false;
    const struct ops_opt opts[] = { { "--body", NULL, &body } };
    char **pos;
    size_t npos;
    int rc = ops_cli_args(cli, argc, argv, opts, 1, &pos, &npos);
    if (rc == 0 && npos != 2)
        rc = ops_usage(cli, "needs a repository name and one queue id");
    if (rc == 0 && !ops_is_id(pos[1]))
        rc = ops_usage(cli, "'%s' is not a queue id", pos[1]);
    if (rc == 0 && (rc = ops_cli_open(cli, a)) == 0) {
        int in = in_repo(cli, pos[0], pos[1]);
        rc = in == 1 ? ops_queue_show_one(cli, pos[1], body) : 1;
    }
    free(pos);
    return rc;
}

/* Parses "NAME ID...|--all" (and the extra options); *pos[0] is the name, then the ids. */
static int repo_args(struct ops_cli *cli, int argc, char **argv, const struct ops_opt *extra,
                     size_t nextra, char ***pos, size_t *npos, bool *all)
{
    struct ops_opt opts[4] = { { "--all", NULL, all } };
    if (nextra > 0)
        memcpy(opts + 1, extra, nextra * sizeof *extra);
    int rc = ops_cli_args(cli, argc, argv, opts, 1 + nextra, pos, npos);
    if (rc == 0 && *npos == 0)
        rc = ops_usage(cli, "needs a repository name");
    if (rc == 0 && *npos == 1 && !*all)
        rc = ops_usage(cli, "needs queue ids or --all");
    if (rc == 0 && *npos > 1 && *all)
        rc = ops_usage(cli, "takes queue ids or --all, not both ('%s')", (*pos)[1]);
    for (size_t i = 1; rc == 0 && i < *npos; i++)
        if (!ops_is_id((*pos)[i]))
            rc = ops_usage(cli, "'%s' is not a queue id", (*pos)[i]);
    return rc;
}

/* The ids to work on (malloc'd strings): the given ones, or with --all every member. */
static int repo_ids(struct ops_cli *cli, char **pos, size_t npos, bool all, char ***ids, size_t *n)
{
    *n = 0;
    if (!all) {
        *ids = xcalloc(npos, sizeof **ids);
        for (size_t i = 1; i < npos; i++)
            (*ids)[(*n)++] = xstrdup(pos[i]);
        return 0;
    }
    *ids = NULL;
    struct buf key = BUF_INIT;
    repo_key(&key, cli->prefix, pos[0]);
    const char *zr[] = { "ZRANGE", key.data, "0", "-1" };
    redisReply *r = ops_redis(cli, 4, zr);
    buf_release(&key);
    if (r == NULL)
        return 1;
    *ids = xcalloc(r->elements + 1, sizeof **ids);
    for (size_t i = 0; i < r->elements; i++)
        (*ids)[(*n)++] = xstrdup(r->element[i]->str);
    freeReplyObject(r);
    return 0;
}

static int repo_delete(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv)
{
    char **pos, **ids = NULL;
    size_t npos, n = 0;
    bool all = false;
    int rc = repo_args(cli, argc, argv, NULL, 0, &pos, &npos, &all);
    if (rc == 0 && (rc = ops_cli_open(cli, a)) == 0)
        rc = repo_ids(cli, pos, npos, all, &ids, &n);
    for (size_t i = 0; rc != 2 && cli->c != NULL && i < n; i++) {
        int in = all ? 1 : in_repo(cli, pos[0], ids[i]);
        long long inflight = 0;
        int d = in == 1 ? ops_queue_delete_one(cli, ids[i], pos[0], &inflight) : in;
        if (d < 0) {
            rc = 1;
            break;
        }
        if (d == 0) {
            rc = 1;     /* not in the repository (printed), or gone meanwhile */
            if (in == 1)
                ops_fail(cli, "no message %s in the queue", ids[i]);
        } else if (cli->json) {
            ops_put_json(json_pack("{s:s, s:b}", "id", ids[i], "deleted", 1));
        } else {
            printf("%s deleted\n", ids[i]);
        }
    }
    ops_free_ids(ids, n);
    free(pos);
    return rc;
}

static int repo_reprocess(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv)
{
    const char *stage = RELAY_STAGE_MAIN;
    const struct ops_opt extra[] = { { "--stage", &stage, NULL } };
    char **pos, **ids = NULL;
    size_t npos, n = 0;
    bool all = false;
    int rc = repo_args(cli, argc, argv, extra, 1, &pos, &npos, &all);
    bool known = false;
    for (size_t s = 0; s < ops_nstages; s++)
        known |= strcmp(stage, ops_stages[s]) == 0;
    if (rc == 0 && !known)
        rc = ops_usage(cli, "--stage: unknown stage '%s' (main or local)", stage);
    if (rc == 0 && (rc = ops_cli_open(cli, a)) == 0)
        rc = repo_ids(cli, pos, npos, all, &ids, &n);
    const char *name = npos > 0 ? pos[0] : "";
    struct buf keys[6] = { BUF_INIT };
    struct buf wake = BUF_INIT;
    relay_stage_key(&wake, cli->prefix, stage, STAGE_WAKE);
    char retention[32];
    snprintf(retention, sizeof retention, "%lld", conf.relay_history_retention / 1000);
    for (size_t i = 0; rc != 2 && cli->c != NULL && i < n; i++) {
        for (size_t k = 0; k < 6; k++)
            buf_reset(&keys[k]);
        queue_key(&keys[0], cli->prefix, "msg", ids[i]);
        queue_key(&keys[1], cli->prefix, "rcpt", ids[i]);
        queue_key(&keys[2], cli->prefix, "body", ids[i]);
        queue_key(&keys[3], cli->prefix, "log", ids[i]);
        repo_key(&keys[4], cli->prefix, name);
        relay_stage_key(&keys[5], cli->prefix, stage, STAGE_DUE);
        const char *argv2[] = { "EVAL", reprocess_lua, "6", keys[0].data, keys[1].data,
                                keys[2].data, keys[3].data, keys[4].data, keys[5].data,
                                ids[i], name, stage, retention, wake.data };
        redisReply *r = ops_redis(cli, 14, argv2);
        if (r == NULL) {
            rc = 1;
            break;
        }
        const char *st = r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? r->element[0]->str : "";
        long long count = r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? r->element[1]->integer : 0;
        struct buf nm = BUF_INIT;
        ops_fmt_safe(&nm, name);
        if (strcmp(st, "absent") == 0) {
            rc = ops_fail(cli, "no message %s in repository %s", ids[i], buf_cstr(&nm));
        } else if (strcmp(st, "missing") == 0) {
            rc = ops_fail(cli, "message %s had no keys left; dropped from repository %s", ids[i],
                          buf_cstr(&nm));
        } else if (cli->json) {
            ops_put_json(json_pack("{s:s, s:I, s:s, s:b}", "id", ids[i], "reprocessed",
                                   (json_int_t)count, "stage", stage, "removed",
                                   strcmp(st, "removed") == 0));
        } else if (strcmp(st, "removed") == 0) {
            printf("%s: no failed recipient to reprocess; nothing left to deliver, removed\n", ids[i]);
        } else {
            printf("%s: %lld recipient%s reprocessed into stage %s\n", ids[i], count,
                   count == 1 ? "" : "s", stage);
        }
        buf_release(&nm);
        freeReplyObject(r);
    }
    for (size_t k = 0; k < 6; k++)
        buf_release(&keys[k]);
    buf_release(&wake);
    ops_free_ids(ids, n);
    free(pos);
    return rc;
}

int ops_repo(const struct ops_args *a, int argc, char **argv)
{
    static const struct ops_sub subs[] = {
        { "list", repo_list }, { "show", repo_show }, { "delete", repo_delete },
        { "reprocess", repo_reprocess },
    };
    return ops_cli_dispatch("repo", "list, show, delete or reprocess", subs,
                            sizeof subs / sizeof subs[0], a, argc, argv);
}
