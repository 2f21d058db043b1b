/*
 * relay_queue.c - the relay's queue operations as Lua scripts (see relay_queue.h, docs/queue.md).
 *
 * Scripts are sent with EVAL; Redis caches them by digest, so the cost is the script's bytes on
 * the wire. Key names inside a script all come from KEYS, as Redis requires for correctness under
 * replication (and, once the schedule is sharded, under Cluster).
 */
#include "relay_queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"
#include "queue.h"
#include "redis.h"

/*
 * KEYS: 1 urgent due, 2 due, 3 lease, 4 lease owner. ARGV: 1 lease ms, 2 max, 3 token. Urgent
 * work is taken first, so it never waits behind a backlog of retries that came due together.
 */
static const char claim_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local max = tonumber(ARGV[2])\n"
    "local expiry = now + tonumber(ARGV[1])\n"
    "local out = {}\n"
    "for k = 1, 2 do\n"
    "  if #out < max then\n"
    "    local m = redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', now, 'LIMIT', 0, max - #out)\n"
    "    for _, id in ipairs(m) do\n"
    "      redis.call('ZREM', KEYS[k], id)\n"
    "      redis.call('ZADD', KEYS[3], expiry, id)\n"
    "      redis.call('HSET', KEYS[4], id, ARGV[3])\n"
    "      out[#out + 1] = id\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* KEYS: 1 lease, 2 lease owner. ARGV: 1 lease ms, then member, token pairs. */
static const char renew_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local n = 0\n"
    "for i = 2, #ARGV, 2 do\n"
    "  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then\n"
    "    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";

/*
 * The common case, a message's only recipient reaching its end, skips rewriting a record that is
 * deleted at once and the scan of the others.
 *
 * KEYS: 1 lease set, 2 target due set, 3 P:rcpt:{ID}, 4 P:msg:{ID}, 5 P:body:{ID}, 6 P:log:{ID},
 *       7 the repository set (or a dummy), 8 lease owner
 * ARGV: 1 member, 2 index, 3 token, 4 outcome, 5 due ms, 6 last (JSON), 7 stage, 8 log
 *       retention s, 9 repository name or "", 10 message id, 11 "1" if a delay notice went out,
 *       12 the wake channel of the stage routed to
 */
static const char outcome_lua[] =
    "if redis.call('HGET', KEYS[8], ARGV[1]) ~= ARGV[3] then return 'stale' end\n"
    "redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "redis.call('HDEL', KEYS[8], ARGV[1])\n"
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local raw = redis.call('HGET', KEYS[3], ARGV[2])\n"
    "if not raw then return 'stale' end\n"
    "local rec = cjson.decode(raw)\n"
    "local out = ARGV[4]\n"
    "local last = cjson.decode(ARGV[6])\n"
    "last.ts = now\n"
    "rec.last = last\n"
    "if ARGV[11] == '1' then rec.warned = true end\n"
    "local final = out == 'delivered' or out == 'failed'\n"
    "if final then\n"
    "  rec.state = out; rec.due = nil; rec.attempts = rec.attempts + 1\n"
    "elseif out == 'deferred' or out == 'throttled' then\n"
    "  rec.state = 'deferred'; rec.due = tonumber(ARGV[5])\n"
    "  if out == 'deferred' then rec.attempts = rec.attempts + 1 end\n"
    "  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])\n"
    "elseif out == 'routed' then\n"
    "  rec.state = 'pending'; rec.stage = ARGV[7]; rec.due = now\n"
    "  redis.call('ZADD', KEYS[2], now, ARGV[1])\n"
    "  redis.call('PUBLISH', ARGV[12], '1')\n"
    "end\n"
    "redis.call('RPUSH', KEYS[6], cjson.encode({ts = now, event = out, rcpt = tonumber(ARGV[2]),\n"
    "  to = rec.to, code = last.code, status = last.status, text = last.text, mx = last.mx,\n"
    "  due = rec.due, stage = rec.stage}))\n"
    "local to_repo = out == 'failed' and ARGV[9] ~= ''\n"
    "if final and not to_repo and redis.call('HLEN', KEYS[3]) == 1\n"
    "   and redis.call('HEXISTS', KEYS[4], 'repo') == 0 then\n"
    "  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])\n"
    "  redis.call('EXPIRE', KEYS[6], ARGV[8])\n"
    "  return 'removed'\n"
    "end\n"
    "redis.call('HSET', KEYS[3], ARGV[2], cjson.encode(rec))\n"
    "if to_repo then\n"
    "  redis.call('ZADD', KEYS[7], now, ARGV[10])\n"
    "  redis.call('HSET', KEYS[4], 'repo', ARGV[9], 'repo_reason', last.text or '')\n"
    "end\n"
    "if not final then return 'ok' end\n"
    "for _, v in ipairs(redis.call('HVALS', KEYS[3])) do\n"
    "  local r = cjson.decode(v)\n"
    "  if r.state ~= 'delivered' and r.state ~= 'failed' then return 'ok' end\n"
    "end\n"
    "if redis.call('HEXISTS', KEYS[4], 'repo') == 1 then return 'ok' end\n"
    "redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])\n"
    "redis.call('EXPIRE', KEYS[6], ARGV[8])\n"
    "return 'removed'\n";

/* KEYS: 1 lease, 2 due, 3 lease owner. */
static const char expire_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local m = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, 1000)\n"
    "for _, id in ipairs(m) do\n"
    "  redis.call('ZREM', KEYS[1], id)\n"
    "  redis.call('HDEL', KEYS[3], id)\n"
    "  redis.call('ZADD', KEYS[2], now, id)\n"
    "end\n"
    "return #m\n";

static struct redis_script claim_script = REDIS_SCRIPT(claim_lua);
static struct redis_script renew_script = REDIS_SCRIPT(renew_lua);
static struct redis_script outcome_script = REDIS_SCRIPT(outcome_lua);
static struct redis_script expire_script = REDIS_SCRIPT(expire_lua);

void relay_stage_key(struct buf *b, const char *prefix, const char *stage, enum relay_stage_key which)
{
    static const char *const names[] = { "due", "due:urgent", "lease", "lease:owner", "wake" };
    queue_stage_key(b, prefix, stage, names[which]);
}

/* Why a script's reply is not the one expected: the transport's error, Redis's, or its shape. */
static const char *reply_error(const redisReply *reply, const char *err)
{
    if (err != NULL)
        return err;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
        return reply->str;
    return "unexpected reply";
}

/* ---- claim ---- */

struct claim_call {
    relay_claim_fn *cb;
    void *arg;
    const char *stage;
    char token[RELAY_TOKEN_LEN];
};

static void claim_reply(redisReply *reply, const char *err, void *arg)
{
    struct claim_call *call = arg;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        call->cb(NULL, 0, reply_error(reply, err), call->arg);
        free(call);
        return;
    }
    size_t n = reply->elements;
    struct relay_claim *claims = xcalloc(n ? n : 1, sizeof *claims);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *m = reply->element[i]->str;
        const char *slash = m != NULL ? strrchr(m, '/') : NULL;
        if (slash == NULL || slash == m || slash[1] == '\0') {
            log_msg(LOG_ERR, "queue-corrupt", NULL, "claimed member '%s' is not ID/index", m ? m : "");
            continue;
        }
        claims[k].stage = call->stage;
        claims[k].member = xstrdup(m);
        claims[k].id = xstrndup(m, (size_t)(slash - m));
        claims[k].index = (unsigned)strtoul(slash + 1, NULL, 10);
        snprintf(claims[k].token, sizeof claims[k].token, "%s", call->token);
        k++;
    }
    call->cb(claims, k, NULL, call->arg);
    for (size_t i = 0; i < k; i++) {
        free(claims[i].member);
        free(claims[i].id);
    }
    free(claims);
    free(call);
}

bool relay_queue_claim(struct redis *r, const char *prefix, const char *stage, long long lease_ms,
                       unsigned max, const char *token, relay_claim_fn *cb, void *arg)
{
    struct buf urgent = BUF_INIT, due = BUF_INIT, lease = BUF_INIT, owner = BUF_INIT;
    relay_stage_key(&urgent, prefix, stage, STAGE_URGENT);
    relay_stage_key(&due, prefix, stage, STAGE_DUE);
    relay_stage_key(&lease, prefix, stage, STAGE_LEASE);
    relay_stage_key(&owner, prefix, stage, STAGE_OWNER);
    char lease_s[32], max_s[16];
    snprintf(lease_s, sizeof lease_s, "%lld", lease_ms);
    snprintf(max_s, sizeof max_s, "%u", max);
    const char *argv[] = { "4", urgent.data, due.data, lease.data, owner.data,
                           lease_s, max_s, token };
    struct claim_call *call = xcalloc(1, sizeof *call);
    call->cb = cb;
    call->arg = arg;
    call->stage = stage;
    snprintf(call->token, sizeof call->token, "%s", token);
    bool sent = redis_eval(r, &claim_script, claim_reply, call, 8, argv, NULL);
    if (!sent)
        free(call);
    buf_release(&urgent);
    buf_release(&due);
    buf_release(&lease);
    buf_release(&owner);
    return sent;
}

/* ---- outcome ---- */

struct outcome_call {
    relay_outcome_fn *cb;
    void *arg;
};

static void outcome_reply(redisReply *reply, const char *err, void *arg)
{
    struct outcome_call *call = arg;
    if (reply != NULL && (reply->type == REDIS_REPLY_STATUS || reply->type == REDIS_REPLY_STRING))
        call->cb(reply->str, NULL, call->arg);
    else
        call->cb(NULL, reply_error(reply, err), call->arg);
    free(call);
}

static const char *outcome_name(enum relay_outcome o)
{
    static const char *const names[] = { "delivered", "failed", "deferred", "throttled", "routed" };
    return names[o];
}

bool relay_queue_outcome(struct redis *r, const char *prefix, long long history_s,
                         const struct relay_claim *c, const struct relay_result *res,
                         relay_outcome_fn *cb, void *arg)
{
    struct buf lease = BUF_INIT, target = BUF_INIT, rcpt = BUF_INIT, msg = BUF_INIT, body = BUF_INIT,
               logk = BUF_INIT, repo = BUF_INIT, last = BUF_INIT, owner = BUF_INIT, wake = BUF_INIT;
    relay_stage_key(&lease, prefix, c->stage, STAGE_LEASE);
    relay_stage_key(&owner, prefix, c->stage, STAGE_OWNER);
    relay_stage_key(&target, prefix, res->outcome == OUTCOME_ROUTED ? res->stage : c->stage, STAGE_DUE);
    relay_stage_key(&wake, prefix, res->outcome == OUTCOME_ROUTED ? res->stage : c->stage, STAGE_WAKE);
    queue_key(&rcpt, prefix, "rcpt", c->id);
    queue_key(&msg, prefix, "msg", c->id);
    queue_key(&body, prefix, "body", c->id);
    queue_key(&logk, prefix, "log", c->id);
    buf_printf(&repo, "%s:repo:%s", prefix, res->repo ? res->repo : "none");

    buf_printf(&last, "{\"code\":%d", res->code);
    if (res->status != NULL) {
        buf_puts(&last, ",\"status\":\"");
        json_escape(&last, res->status, strlen(res->status));
        buf_putc(&last, '"');
    }
    if (res->text != NULL) {
        buf_puts(&last, ",\"text\":\"");
        json_escape(&last, res->text, strlen(res->text));
        buf_putc(&last, '"');
    }
    if (res->mx != NULL) {
        buf_puts(&last, ",\"mx\":\"");
        json_escape(&last, res->mx, strlen(res->mx));
        buf_putc(&last, '"');
    }
    buf_putc(&last, '}');

    char index_s[16], due_s[32], retention_s[32];
    snprintf(index_s, sizeof index_s, "%u", c->index);
    snprintf(due_s, sizeof due_s, "%lld", res->due_ms);
    snprintf(retention_s, sizeof retention_s, "%lld", history_s);
    const char *argv[] = {
        "8", lease.data, target.data, rcpt.data, msg.data, body.data, logk.data,
        repo.data, owner.data, c->member, index_s, c->token, outcome_name(res->outcome), due_s, last.data,
        res->stage ? res->stage : "", retention_s, res->repo ? res->repo : "", c->id,
        res->warned ? "1" : "0", wake.data,
    };
    struct outcome_call *call = xcalloc(1, sizeof *call);
    call->cb = cb;
    call->arg = arg;
    bool sent = redis_eval(r, &outcome_script, outcome_reply, call, (int)(sizeof argv / sizeof argv[0]), argv,
                           NULL);
    if (!sent)
        free(call);
    struct buf *bufs[] = { &lease, &target, &rcpt, &msg, &body, &logk, &repo, &last, &owner, &wake };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        buf_release(bufs[i]);
    return sent;
}

/* ---- lease expiry ---- */

struct count_call {
    relay_count_fn *cb;
    void *arg;
};

static void count_reply(redisReply *reply, const char *err, void *arg)
{
    struct count_call *call = arg;
    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER)
        call->cb(reply->integer, NULL, call->arg);
    else
        call->cb(-1, reply_error(reply, err), call->arg);
    free(call);
}

bool relay_queue_expire_leases(struct redis *r, const char *prefix, const char *stage,
                               relay_count_fn *cb, void *arg)
{
    struct buf due = BUF_INIT, lease = BUF_INIT, owner = BUF_INIT;
    relay_stage_key(&due, prefix, stage, STAGE_DUE);
    relay_stage_key(&lease, prefix, stage, STAGE_LEASE);
    relay_stage_key(&owner, prefix, stage, STAGE_OWNER);
    const char *argv[] = { "3", lease.data, due.data, owner.data };
    struct count_call *call = xcalloc(1, sizeof *call);
    call->cb = cb;
    call->arg = arg;
    bool sent = redis_eval(r, &expire_script, count_reply, call, 4, argv, NULL);
    if (!sent)
        free(call);
    buf_release(&due);
    buf_release(&lease);
    buf_release(&owner);
    return sent;
}

bool relay_queue_renew(struct redis *r, const char *prefix, const char *stage, long long lease_ms,
                       const struct relay_claim *const *claims, size_t n, relay_count_fn *cb, void *arg)
{
    struct buf lease = BUF_INIT, owner = BUF_INIT;
    relay_stage_key(&lease, prefix, stage, STAGE_LEASE);
    relay_stage_key(&owner, prefix, stage, STAGE_OWNER);
    char lease_s[32];
    snprintf(lease_s, sizeof lease_s, "%lld", lease_ms);
    size_t argc = 4 + 2 * n;
    const char **argv = xcalloc(argc, sizeof *argv);
    argv[0] = "2";
    argv[1] = lease.data;
    argv[2] = owner.data;
    argv[3] = lease_s;
    for (size_t i = 0; i < n; i++) {
        argv[4 + 2 * i] = claims[i]->member;
        argv[5 + 2 * i] = claims[i]->token;
    }
    struct count_call *call = xcalloc(1, sizeof *call);
    call->cb = cb;
    call->arg = arg;
    bool sent = redis_eval(r, &renew_script, count_reply, call, (int)argc, argv, NULL);
    if (!sent)
        free(call);
    free(argv);
    buf_release(&lease);
    buf_release(&owner);
    return sent;
}
