/*
 * ops_queue_change.c - `mxgate queue delete|flush|hold|release`: the operator's changes to the
 * Redis queue (docs/queue.md), and the delete that `mxgate repo delete` (ops_repo.c) shares.
 *
 * Every change is one Lua script per message that keeps the relay's invariants
 * (relay/relay_queue.c): a recipient is in at most one schedule set, a scheduled record's "due" is
 * its score, and the change is appended to P:log:{ID}. Leased recipients belong to a relay and are
 * never moved, except by delete, which also drops their claim so that the relay's outcome script
 * finds no owner and writes nothing. Held recipients wait in P:hold.
 *
 * Exit status 2 on a usage error (the bad argument named), 1 when Redis cannot be reached or
 * answers an error, or an id is unknown.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "mem.h"
#include "ops.h"
#include "ops_cli.h"
#include "queue.h"
#include "relay_queue.h"

/*
 * KEYS: 1 msg, 2 rcpt, 3 body, 4 log, 5 hold, then per stage its due, urgent due, lease and
 * owner, then the repository sets. ARGV: 1 id, 2 the envelope's repo as read before ("" for
 * none), 3 number of stages. {'changed'} when the envelope moved to another repository meanwhile
 * (read again).
 */
static const char delete_lua[] =
    "if (redis.call('HGET', KEYS[1], 'repo') or '') ~= ARGV[2] then return {'changed', 0} end\n"
    "local n = tonumber(redis.call('HGET', KEYS[1], 'nrcpt') or '0') or 0\n"
    "for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do\n"
    "  local i = tonumber(f)\n"
    "  if i and i + 1 > n then n = i + 1 end\n"
    "end\n"
    "local ns = tonumber(ARGV[3])\n"
    "local found = redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3])\n"
    "local inflight = 0\n"
    "for i = 0, n - 1 do\n"
    "  local m = ARGV[1] .. '/' .. i\n"
    "  found = found + redis.call('ZREM', KEYS[5], m)\n"
    "  for s = 0, ns - 1 do\n"
    "    local k = 6 + 4 * s\n"
    "    found = found + redis.call('ZREM', KEYS[k], m) + redis.call('ZREM', KEYS[k + 1], m)\n"
    "    local l = redis.call('ZREM', KEYS[k + 2], m)\n"
    "    inflight = inflight + l\n"
    "    found = found + l\n"
    "    redis.call('HDEL', KEYS[k + 3], m)\n"
    "  end\n"
    "end\n"
    "for k = 6 + 4 * ns, #KEYS do found = found + redis.call('ZREM', KEYS[k], ARGV[1]) end\n"
    "redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])\n"
    "if found == 0 then return {'unknown', 0} end\n"
    "return {'deleted', inflight}\n";

/* Redis's clock in ms, inside a script. */
#define LUA_NOW \
    "local t = redis.call('TIME')\n" \
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

/*
 * KEYS: 1 rcpt, 2 log, then the stages' due and urgent due sets. ARGV: 1 id. Makes every
 * recipient due later than now due now; -1 for an unknown id, else how many.
 */
static const char flush_lua[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end\n"
    LUA_NOW
    "local n = 0\n"
    "for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do\n"
    "  local m = ARGV[1] .. '/' .. f\n"
    "  for k = 3, #KEYS do\n"
    "    local s = redis.call('ZSCORE', KEYS[k], m)\n"
    "    if s and tonumber(s) > now then\n"
    "      redis.call('ZADD', KEYS[k], now, m)\n"
    "      local rec = cjson.decode(redis.call('HGET', KEYS[1], f))\n"
    "      rec.due = now\n"
    "      redis.call('HSET', KEYS[1], f, cjson.encode(rec))\n"
    "      n = n + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if n > 0 then\n"
    "  redis.call('RPUSH', KEYS[2], cjson.encode({ts = now, event = 'flushed', count = n}))\n"
    "end\n"
    "return n\n";

/*
 * KEYS: 1 rcpt, 2 log, 3 hold, then per stage its due, urgent due and lease sets. ARGV: 1 id,
 * 2 number of stages, then the stage names. Returns {held, in flight, already held}, or {-1} for
 * an unknown id. The record keeps where the recipient was (held_due, held_state, held_stage,
 * held_urgent) for the release.
 */
static const char hold_lua[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end\n"
    LUA_NOW
    "local held, leased, already = 0, 0, 0\n"
    "for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do\n"
    "  local m = ARGV[1] .. '/' .. f\n"
    "  if redis.call('ZSCORE', KEYS[3], m) then already = already + 1 else\n"
    "    for i = 0, tonumber(ARGV[2]) - 1 do\n"
    "      local b = 4 + 3 * i\n"
    "      if redis.call('ZSCORE', KEYS[b + 2], m) then leased = leased + 1; break end\n"
    "      local from, s = b, redis.call('ZSCORE', KEYS[b], m)\n"
    "      if not s then from, s = b + 1, redis.call('ZSCORE', KEYS[b + 1], m) end\n"
    "      if s then\n"
    "        redis.call('ZREM', KEYS[from], m)\n"
    "        redis.call('ZADD', KEYS[3], now, m)\n"
    "        local rec = cjson.decode(redis.call('HGET', KEYS[1], f))\n"
    "        rec.held_due = tonumber(s); rec.held_state = rec.state; rec.held_stage = ARGV[3 + i]\n"
    "        if from == b + 1 then rec.held_urgent = true end\n"
    "        rec.state = 'held'; rec.due = nil\n"
    "        redis.call('HSET', KEYS[1], f, cjson.encode(rec))\n"
    "        held = held + 1\n"
    "        break\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if held > 0 then\n"
    "  redis.call('RPUSH', KEYS[2], cjson.encode({ts = now, event = 'held', count = held}))\n"
    "end\n"
    "return {held, leased, already}\n";

/*
 * KEYS: 1 rcpt, 2 log, 3 hold, then per stage its due and urgent due sets. ARGV: 1 id, 2 "1" to
 * keep the old due time, 3 number of stages, then the stage names. Puts each held recipient back
 * where it was held from; -1 for an unknown id, else how many released.
 */
static const char release_lua[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end\n"
    LUA_NOW
    "local n = 0\n"
    "for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do\n"
    "  local m = ARGV[1] .. '/' .. f\n"
    "  if redis.call('ZREM', KEYS[3], m) == 1 then\n"
    "    local rec = cjson.decode(redis.call('HGET', KEYS[1], f))\n"
    "    local k = 4\n"
    "    for i = 0, tonumber(ARGV[3]) - 1 do\n"
    "      if ARGV[4 + i] == rec.held_stage then k = 4 + 2 * i end\n"
    "    end\n"
    "    if rec.held_urgent then k = k + 1 end\n"
    "    local due = now\n"
    "    if ARGV[2] == '1' and rec.held_due then due = rec.held_due end\n"
    "    redis.call('ZADD', KEYS[k], due, m)\n"
    "    rec.state = rec.held_state or ((rec.attempts or 0) > 0 and 'deferred' or 'pending')\n"
    "    rec.due = due; rec.held_due = nil; rec.held_state = nil; rec.held_stage = nil\n"
    "    rec.held_urgent = nil\n"
    "    redis.call('HSET', KEYS[1], f, cjson.encode(rec))\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "if n > 0 then\n"
    "  redis.call('RPUSH', KEYS[2], cjson.encode({ts = now, event = 'released', count = n}))\n"
    "end\n"
    "return n\n";

int ops_queue_delete_one(struct ops_cli *cli, const char *id, const char *repo, long long *inflight)
{
    static const enum relay_stage_key all[] = { STAGE_DUE, STAGE_URGENT, STAGE_LEASE, STAGE_OWNER };
    struct buf msgk = BUF_INIT;
    queue_key(&msgk, cli->prefix, "msg", id);
    int rc = -1;
    /* The envelope names the repository to leave; a relay may set it between read and script. */
    for (int attempt = 0; attempt < 5 && rc == -1; attempt++) {
        const char *hget[] = { "HGET", msgk.data, "repo" };
        redisReply *cur = ops_redis(cli, 3, hget);
        if (cur == NULL)
            break;
        char *in = xstrdup(cur->type == REDIS_REPLY_STRING ? cur->str : "");
        freeReplyObject(cur);
        struct ops_eval e;
        ops_eval_begin(&e, delete_lua);
        ops_eval_msg_key(&e, cli->prefix, "msg", id);
        ops_eval_msg_key(&e, cli->prefix, "rcpt", id);
        ops_eval_msg_key(&e, cli->prefix, "body", id);
        ops_eval_msg_key(&e, cli->prefix, "log", id);
        ops_eval_named_key(&e, cli->prefix, "hold");
        ops_eval_stage_keys(&e, cli->prefix, all, 4);
        struct buf rk = BUF_INIT;
        if (in[0] != '\0') {
            buf_printf(&rk, "repo:%s", in);
            ops_eval_named_key(&e, cli->prefix, buf_cstr(&rk));
        }
        if (repo != NULL && strcmp(repo, in) != 0) {
            buf_reset(&rk);
            buf_printf(&rk, "repo:%s", repo);
            ops_eval_named_key(&e, cli->prefix, buf_cstr(&rk));
        }
        buf_release(&rk);
        ops_eval_add(&e, id);
        ops_eval_add(&e, in);
        char ns[8];
        snprintf(ns, sizeof ns, "%zu", ops_nstages);
        ops_eval_add(&e, ns);
        free(in);
        redisReply *r = ops_eval_run(cli, &e);
        if (r == NULL)
            break;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->str != NULL) {
            if (strcmp(r->element[0]->str, "deleted") == 0) {
                *inflight = r->element[1]->integer;
                rc = 1;
            } else if (strcmp(r->element[0]->str, "unknown") == 0) {
                rc = 0;
            }
        }
        freeReplyObject(r);
        if (rc == -1 && attempt == 4)
            ops_fail(cli, "%s: its repository kept changing; try again", id);
    }
    buf_release(&msgk);
    return rc;
}

/* What one change does to one message: 0 done (printed), 1 no such message, -1 Redis failed. */
typedef int change_fn(struct ops_cli *cli, const char *id, const void *arg);

/*
 * Parses "ID..." (at least one, and the options opts), connects, and applies one to each message
 * in turn, stopping when Redis fails.
 */
static int change_each(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv,
                       const struct ops_opt *opts, size_t nopts, change_fn *one, const void *arg)
{
    char **ids;
    size_t n;
    int rc = ops_parse_ids(cli, argc, argv, opts, nopts, &ids, &n, true);
    if (rc == 0)
        rc = ops_cli_open(cli, a);
    for (size_t i = 0; rc != 2 && cli->c != NULL && i < n; i++) {
        int r = one(cli, ids[i], arg);
        if (r != 0)
            rc = 1;
        if (r < 0)
            break;
    }
    free(ids);
    return rc;
}

/*
 * Starts the EVAL of a change script on message id: KEYS rcpt, log, P:hold (when hold), then the
 * keys which[0..nwhich) of each stage; ARGV id. The script's own arguments follow.
 */
static void change_begin(struct ops_eval *e, const struct ops_cli *cli, const char *script,
                         const char *id, bool hold, const enum relay_stage_key *which,
                         size_t nwhich)
{
    ops_eval_begin(e, script);
    ops_eval_msg_key(e, cli->prefix, "rcpt", id);
    ops_eval_msg_key(e, cli->prefix, "log", id);
    if (hold)
        ops_eval_named_key(e, cli->prefix, "hold");
    ops_eval_stage_keys(e, cli->prefix, which, nwhich);
    ops_eval_add(e, id);
}

static int delete_one(struct ops_cli *cli, const char *id, const void *arg)
{
    (void)arg;
    long long inflight = 0;
    int d = ops_queue_delete_one(cli, id, NULL, &inflight);
    if (d < 0)
        return -1;
    if (d == 0)
        return ops_fail(cli, "no message %s in the queue", id);
    if (cli->json) {
        json_t *o = json_pack("{s:s, s:b, s:I}", "id", id, "deleted", 1, "inflight",
                              (json_int_t)inflight);
        ops_put_json(o);
    } else if (inflight > 0) {
        printf("%s deleted (%lld recipient%s in flight: that delivery goes on, its outcome "
               "is not recorded)\n", id, inflight, inflight == 1 ? " was" : "s were");
    } else {
        printf("%s deleted\n", id);
    }
    return 0;
}

int ops_queue_delete(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv)
{
    return change_each(cli, a, argc, argv, NULL, 0, delete_one, NULL);
}

/* Ids of the messages with a recipient due later than now, in any stage's due or urgent set. */
static bool deferred_ids(const struct ops_cli *cli, char ***ids, size_t *n)
{
    size_t cap = 0;
    *ids = NULL;
    *n = 0;
    char min[32];
    snprintf(min, sizeof min, "(%lld", cli->now);
    struct buf key = BUF_INIT;
    for (size_t s = 0; s < 2 * ops_nstages; s++) {
        buf_reset(&key);
        relay_stage_key(&key, cli->prefix, ops_stages[s / 2], s % 2 ? STAGE_URGENT : STAGE_DUE);
        for (long long off = 0;; off += 1000) {
            char off_s[32];
            snprintf(off_s, sizeof off_s, "%lld", off);
            const char *argv[] = { "ZRANGEBYSCORE", key.data, min, "+inf", "LIMIT", off_s, "1000" };
            redisReply *r = ops_redis(cli, 7, argv);
            if (r == NULL) {
                buf_release(&key);
                return false;
            }
            for (size_t i = 0; i < r->elements; i++) {
                const char *m = r->element[i]->str, *slash = strchr(m, '/');
                if (slash == NULL)
                    continue;
                if (*n == cap) {
                    cap = cap ? 2 * cap : 256;
                    *ids = xrealloc(*ids, cap * sizeof **ids);
                }
                (*ids)[(*n)++] = xstrndup(m, (size_t)(slash - m));
            }
            size_t got = r->elements;
            freeReplyObject(r);
            if (got < 1000)
                break;
        }
    }
    buf_release(&key);
    ops_sort_unique(*ids, n);
    return true;
}

int ops_queue_flush(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv)
{
    char **given, **ids = NULL;
    size_t ngiven, n = 0;
    int rc = ops_parse_ids(cli, argc, argv, NULL, 0, &given, &ngiven, false);
    if (rc == 0)
        rc = ops_cli_open(cli, a);
    if (rc == 0 && ngiven == 0 && !deferred_ids(cli, &ids, &n))
        rc = 1;
    char *const *list = ngiven > 0 ? given : ids;
    size_t nlist = ngiven > 0 ? ngiven : n;
    long long total = 0;
    for (size_t i = 0; rc != 2 && cli->c != NULL && i < nlist; i++) {
        static const enum relay_stage_key due[] = { STAGE_DUE, STAGE_URGENT };
        struct ops_eval e;
        change_begin(&e, cli, flush_lua, list[i], false, due, 2);
        redisReply *r = ops_eval_run(cli, &e);
        if (r == NULL) {
            rc = 1;
            break;
        }
        if (r->integer >= 0)
            total += r->integer;
        else if (ngiven > 0)    /* a message gone meanwhile is not an error of "flush all" */
            rc = ops_fail(cli, "no message %s in the queue", list[i]);
        freeReplyObject(r);
    }
    if (cli->c != NULL && (rc == 0 || total > 0)) {
        if (cli->json)
            ops_put_json(json_pack("{s:I}", "flushed", (json_int_t)total));
        else
            printf("%lld recipient%s made due now\n", total, total == 1 ? "" : "s");
    }
    free(given);
    ops_free_ids(ids, n);
    return rc;
}

static int hold_one(struct ops_cli *cli, const char *id, const void *arg)
{
    static const enum relay_stage_key due_lease[] = { STAGE_DUE, STAGE_URGENT, STAGE_LEASE };
    (void)arg;
    struct ops_eval e;
    change_begin(&e, cli, hold_lua, id, true, due_lease, 3);
    ops_eval_stage_names(&e);
    redisReply *r = ops_eval_run(cli, &e);
    if (r == NULL)
        return -1;
    long long held = r->elements > 0 ? r->element[0]->integer : -1;
    long long leased = r->elements > 2 ? r->element[1]->integer : 0;
    long long already = r->elements > 2 ? r->element[2]->integer : 0;
    freeReplyObject(r);
    if (held < 0)
        return ops_fail(cli, "no message %s in the queue", id);
    if (cli->json) {
        ops_put_json(json_pack("{s:s, s:I, s:I, s:I}", "id", id, "held", (json_int_t)held,
                               "inflight", (json_int_t)leased, "already_held", (json_int_t)already));
    } else {
        printf("%s: %lld recipient%s held", id, held, held == 1 ? "" : "s");
        if (leased > 0)
            printf(", %lld in flight left alone", leased);
        if (already > 0)
            printf(", %lld already held", already);
        putchar('\n');
    }
    return 0;
}

int ops_queue_hold(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv)
{
    return change_each(cli, a, argc, argv, NULL, 0, hold_one, NULL);
}

/* arg: the bool of --keep-due. */
static int release_one(struct ops_cli *cli, const char *id, const void *arg)
{
    static const enum relay_stage_key due[] = { STAGE_DUE, STAGE_URGENT };
    struct ops_eval e;
    change_begin(&e, cli, release_lua, id, true, due, 2);
    ops_eval_add(&e, *(const bool *)arg ? "1" : "0");
    ops_eval_stage_names(&e);
    redisReply *r = ops_eval_run(cli, &e);
    if (r == NULL)
        return -1;
    long long released = r->integer;
    freeReplyObject(r);
    if (released < 0)
        return ops_fail(cli, "no message %s in the queue", id);
    if (cli->json)
        ops_put_json(json_pack("{s:s, s:I}", "id", id, "released", (json_int_t)released));
    else
        printf("%s: %lld recipient%s released\n", id, released, released == 1 ? "" : "s");
    return 0;
}

int ops_queue_release(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv)
{
    bool keep = false;
    const struct ops_opt opts[] = { { "--keep-due", NULL, &keep } };
    return change_each(cli, a, argc, argv, opts, 1, release_one, &keep);
}
