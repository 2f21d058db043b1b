/*
 * ops_queue.c - `mxgate queue list|show|delete|flush|hold|release`: the operator's view of the
 * Redis queue (docs/queue.md), and the helpers `mxgate repo` (ops_repo.c) shares.
 *
 * A command line tool on a blocking hiredis connection. Reads go through one Lua script per
 * message, so a message is seen as one snapshot: envelope, records, and where each recipient sits
 * in the schedule sets. Every change is one Lua script per message that keeps the relay's
 * invariants (relay/relay_queue.c): a recipient is in at most one schedule set, a scheduled
 * record's "due" is its score, and the change is appended to P:log:{ID}. Leased recipients belong
 * to a relay and are never moved, except by delete, which also drops their claim so that the
 * relay's outcome script finds no owner and writes nothing. Held recipients wait in P:hold.
 *
 * Exit status 2 on a usage error (the bad argument named), 1 when Redis cannot be reached or
 * answers an error, or an id is unknown.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "conf.h"
#include "log.h"
#include "mem.h"
#include "ops.h"
#include "queue.h"
#include "redis.h"
#include "relay_queue.h"

const char *const ops_stages[] = { RELAY_STAGE_MAIN, "local" };
#define NSTAGES (sizeof ops_stages / sizeof ops_stages[0])
const size_t ops_nstages = NSTAGES;

/* Messages read per pipeline by `queue list`. */
#define LIST_BATCH 100

/*
 * Where each recipient of a message is. KEYS: 1 msg, 2 rcpt, 3 hold, then per stage its due,
 * urgent due and lease sets. ARGV: 1 id, 2 number of stages, then the stage names. Returns the
 * envelope and the records (HGETALL) and, per recipient: field, place (held, inflight, due,
 * urgent, none), stage, score.
 */
static const char read_lua[] =
    "local out = {}\n"
    "for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do\n"
    "  local m = ARGV[1] .. '/' .. f\n"
    "  local w, st, sc = 'none', '', ''\n"
    "  local s = redis.call('ZSCORE', KEYS[3], m)\n"
    "  if s then w, sc = 'held', s else\n"
    "    for i = 0, tonumber(ARGV[2]) - 1 do\n"
    "      local b = 4 + 3 * i\n"
    "      s = redis.call('ZSCORE', KEYS[b + 2], m)\n"
    "      if s then w, st, sc = 'inflight', ARGV[3 + i], s; break end\n"
    "      s = redis.call('ZSCORE', KEYS[b], m)\n"
    "      if s then w, st, sc = 'due', ARGV[3 + i], s; break end\n"
    "      s = redis.call('ZSCORE', KEYS[b + 1], m)\n"
    "      if s then w, st, sc = 'urgent', ARGV[3 + i], s; break end\n"
    "    end\n"
    "  end\n"
    "  out[#out + 1] = f; out[#out + 1] = w; out[#out + 1] = st; out[#out + 1] = sc\n"
    "end\n"
    "return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), out}\n";

/*
 * KEYS: 1 msg, 2 rcpt, 3 body, 4 log, 5 hold, then per stage its due, urgent due, lease and
 * owner, then the repository sets. ARGV: 1 id, 2 the envelope's repo as read before ("" for none), 3 number of
 * stages. {'changed'} when the envelope moved to another repository meanwhile (read again).
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

/* ---- the command line ---- */

static void vreport(const struct ops_cli *cli, const char *fmt, va_list ap)
{
    fprintf(stderr, "mxgate %s: ", cli->cmd);
    vfprintf(stderr, fmt, ap);
}

int ops_usage(const struct ops_cli *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cli, fmt, ap);
    va_end(ap);
    fputs(" (see 'mxgate help')\n", stderr);
    return 2;
}

int ops_fail(const struct ops_cli *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cli, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int ops_cli_args(struct ops_cli *cli, int argc, char **argv, const struct ops_opt *opts,
                 size_t nopts, char ***pos, size_t *npos)
{
    *pos = xcalloc((size_t)argc + 1, sizeof **pos);
    *npos = 0;
    bool rest = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (rest || a[0] != '-' || a[1] == '\0') {
            (*pos)[(*npos)++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            rest = true;
            continue;
        }
        if (strcmp(a, "--json") == 0) {
            cli->json = true;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const struct ops_opt *o = NULL;
        for (size_t k = 0; k < nopts && o == NULL; k++)
            if (strlen(opts[k].name) == len && strncmp(opts[k].name, a, len) == 0)
                o = &opts[k];
        if (o == NULL)
            return ops_usage(cli, "unknown option '%.*s'", (int)len, a);
        if (o->flag != NULL) {
            if (eq != NULL)
                return ops_usage(cli, "option '%s' takes no value", o->name);
            *o->flag = true;
        } else if (eq != NULL) {
            *o->arg = eq + 1;
        } else if (i + 1 < argc) {
            *o->arg = argv[++i];
        } else {
            return ops_usage(cli, "option '%s' needs a value", o->name);
        }
    }
    return 0;
}

bool ops_parse_count(const struct ops_cli *cli, const char *opt, const char *s, long long *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v <= 0) {
        ops_usage(cli, "%s: '%s' is not a positive number", opt, s);
        return false;
    }
    *out = v;
    return true;
}

bool ops_is_id(const char *s)
{
    if (strlen(s) != QUEUE_ID_LEN)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z')) || strchr("ILOU", *p) != NULL)
            return false;
    return true;
}

int ops_cli_open(struct ops_cli *cli, const struct ops_args *a)
{
    struct buf err = BUF_INIT, url = BUF_INIT;
    int rc = 1;
    struct redis_target t;
    memset(&t, 0, sizeof t);
    if (!conf_load(a->conf_file, a->overrides, a->noverrides, &err)) {
        fputs(buf_cstr(&err), stderr);
        goto out;
    }
    cli->prefix = conf.redis_prefix;
    /* An empty redis.url is the private Redis that `mxgate run` starts in the state directory. */
    if (conf.redis_url[0] != '\0')
        buf_puts(&url, conf.redis_url);
    else
        buf_printf(&url, "unix:%s/redis.sock", conf.state_dir);
    if (!redis_url_parse(buf_cstr(&url), &t, &err)) {
        rc = ops_fail(cli, "redis.url: %s", buf_cstr(&err));
        goto out;
    }
    cli->c = redis_connect_sync(&t, conf.redis_timeout, &err);
    if (cli->c == NULL) {
        rc = ops_fail(cli, "cannot connect to Redis: %s", buf_cstr(&err));
        goto out;
    }
    const char *argv[] = { "TIME" };
    redisReply *r = ops_redis(cli, 1, argv);
    if (r == NULL)
        goto out;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        cli->now = strtoll(r->element[0]->str, NULL, 10) * 1000
                   + strtoll(r->element[1]->str, NULL, 10) / 1000;
    freeReplyObject(r);
    rc = 0;
out:
    redis_target_clear(&t);
    buf_release(&err);
    buf_release(&url);
    return rc;
}

void ops_cli_close(struct ops_cli *cli)
{
    if (cli->c != NULL)
        redisFree(cli->c);
    cli->c = NULL;
    conf_free();
}

/* Checks a reply got from the connection (sent directly or pipelined); NULL after printing. */
static redisReply *checked(const struct ops_cli *cli, redisReply *r)
{
    if (r == NULL) {
        ops_fail(cli, "redis: %s", cli->c->errstr[0] ? cli->c->errstr : "connection lost");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        struct buf b = BUF_INIT;
        buf_append_sanitized(&b, r->str, r->len, 300);
        ops_fail(cli, "redis: %s", buf_cstr(&b));
        buf_release(&b);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

redisReply *ops_redis(const struct ops_cli *cli, int argc, const char **argv)
{
    return checked(cli, redisCommandArgv(cli->c, argc, argv, NULL));
}

void ops_fmt_time(struct buf *b, long long ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char s[32];
    gmtime_r(&t, &tm);
    strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    buf_puts(b, s);
}

void ops_fmt_safe(struct buf *b, const char *s)
{
    buf_append_sanitized(b, s, strlen(s), 4096);
}

/* Appends a duration as "42s", "3m05s", "2h10m" or "4d03h". */
static void fmt_dur(struct buf *b, long long ms)
{
    long long s = (ms < 0 ? -ms : ms) / 1000;
    if (s < 60)
        buf_printf(b, "%llds", s);
    else if (s < 3600)
        buf_printf(b, "%lldm%02llds", s / 60, s % 60);
    else if (s < 86400)
        buf_printf(b, "%lldh%02lldm", s / 3600, s % 3600 / 60);
    else
        buf_printf(b, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
}

/* Appends "2024-..Z (in 42s)" or "(3m ago)" for an absolute time, or only the relative part. */
static void fmt_when(struct buf *b, const struct ops_cli *cli, long long ms, bool absolute)
{
    if (absolute) {
        ops_fmt_time(b, ms);
        buf_puts(b, " (");
    }
    if (ms <= cli->now) {
        if (cli->now - ms < 1000)
            buf_puts(b, "now");
        else {
            fmt_dur(b, cli->now - ms);
            buf_puts(b, " ago");
        }
    } else {
        buf_puts(b, "in ");
        fmt_dur(b, ms - cli->now);
    }
    if (absolute)
        buf_putc(b, ')');
}

/* A JSON string from bytes that may not be UTF-8 (such bytes read back as U+00XX, as in logs). */
static json_t *jstr(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j != NULL)
        return j;
    struct buf b = BUF_INIT;
    buf_putc(&b, '"');
    json_escape(&b, s, n);
    buf_putc(&b, '"');
    j = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    buf_release(&b);
    return j != NULL ? j : json_string("");
}

/* Prints one JSON object on its own line and drops the reference. */
static void put_json(json_t *o)
{
    if (o == NULL)
        return;
    json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(o);
}

/* ---- reading messages ---- */

/* One recipient as the snapshot shows it. */
struct rcpt_view {
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
struct msg_view {
    char id[QUEUE_ID_LEN + 1];
    json_t *env;            /* envelope fields, all strings (owned) */
    struct rcpt_view *r;
    size_t nr;
};

static void msg_view_clear(struct msg_view *m)
{
    for (size_t i = 0; i < m->nr; i++)
        json_decref(m->r[i].rec);
    free(m->r);
    json_decref(m->env);
    memset(m, 0, sizeof *m);
}

/* Appends the read script's EVAL for id to the pipeline. */
static void read_append(const struct ops_cli *cli, const char *id)
{
    struct buf keys[3 + 3 * NSTAGES] = { BUF_INIT };
    size_t nk = sizeof keys / sizeof keys[0];
    queue_key(&keys[0], cli->prefix, "msg", id);
    queue_key(&keys[1], cli->prefix, "rcpt", id);
    buf_printf(&keys[2], "%s:hold", cli->prefix);
    for (size_t s = 0; s < ops_nstages; s++) {
        relay_stage_key(&keys[3 + 3 * s], cli->prefix, ops_stages[s], STAGE_DUE);
        relay_stage_key(&keys[4 + 3 * s], cli->prefix, ops_stages[s], STAGE_URGENT);
        relay_stage_key(&keys[5 + 3 * s], cli->prefix, ops_stages[s], STAGE_LEASE);
    }
    const char *argv[3 + sizeof keys / sizeof keys[0] + 2 + NSTAGES];
    char nk_s[8], ns_s[8];
    snprintf(nk_s, sizeof nk_s, "%zu", nk);
    snprintf(ns_s, sizeof ns_s, "%zu", ops_nstages);
    int argc = 0;
    argv[argc++] = "EVAL";
    argv[argc++] = read_lua;
    argv[argc++] = nk_s;
    for (size_t k = 0; k < nk; k++)
        argv[argc++] = keys[k].data;
    argv[argc++] = id;
    argv[argc++] = ns_s;
    for (size_t s = 0; s < ops_nstages; s++)
        argv[argc++] = ops_stages[s];
    redisAppendCommandArgv(cli->c, argc, argv, NULL);
    for (size_t k = 0; k < nk; k++)
        buf_release(&keys[k]);
}

static int cmp_rcpt(const void *a, const void *b)
{
    long long x = ((const struct rcpt_view *)a)->index, y = ((const struct rcpt_view *)b)->index;
    return x < y ? -1 : x > y;
}

/* Builds m from the read script's reply; false when the message is not in the queue. */
static bool read_parse(const redisReply *r, const char *id, struct msg_view *m)
{
    memset(m, 0, sizeof *m);
    snprintf(m->id, sizeof m->id, "%s", id);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3)
        return false;
    const redisReply *env = r->element[0], *recs = r->element[1], *locs = r->element[2];
    if (env->elements == 0)
        return false;
    m->env = json_object();
    for (size_t i = 0; i + 1 < env->elements; i += 2)
        json_object_set_new(m->env, env->element[i]->str,
                            jstr(env->element[i + 1]->str, env->element[i + 1]->len));
    m->nr = locs->elements / 4;
    m->r = xcalloc(m->nr ? m->nr : 1, sizeof *m->r);
    for (size_t i = 0; i < m->nr; i++) {
        struct rcpt_view *v = &m->r[i];
        const char *field = locs->element[4 * i]->str;
        const char *where = locs->element[4 * i + 1]->str;
        const char *score = locs->element[4 * i + 3]->str;
        v->index = strtoll(field, NULL, 10);
        for (size_t k = 0; k + 1 < recs->elements && v->rec == NULL; k += 2)
            if (strcmp(recs->element[k]->str, field) == 0)
                v->rec = json_loads(recs->element[k + 1]->str, 0, NULL);
        if (v->rec == NULL)
            v->rec = json_object();
        v->to = json_string_value(json_object_get(v->rec, "to"));
        if (v->to == NULL)
            v->to = "?";
        const char *stage = locs->element[4 * i + 2]->str;
        v->stage = "";
        for (size_t k = 0; k < ops_nstages; k++)
            if (strcmp(stage, ops_stages[k]) == 0)
                v->stage = ops_stages[k];
        v->score = score[0] ? strtoll(score, NULL, 10) : -1;
        const char *rs = json_string_value(json_object_get(v->rec, "state"));
        v->urgent = strcmp(where, "urgent") == 0;
        v->state = strcmp(where, "held") == 0       ? "held"
                   : strcmp(where, "inflight") == 0 ? "inflight"
                   : rs != NULL                     ? rs
                                                    : "pending";
    }
    qsort(m->r, m->nr, sizeof *m->r, cmp_rcpt);
    return true;
}

/* Reads ids[0..n) in one pipeline; found[i] false for a message not in the queue. */
static bool read_many(const struct ops_cli *cli, char *const *ids, size_t n, struct msg_view *ms,
                      bool *found)
{
    for (size_t i = 0; i < n; i++)
        read_append(cli, ids[i]);
    for (size_t i = 0; i < n; i++) {
        void *rp = NULL;
        if (redisGetReply(cli->c, &rp) != REDIS_OK)
            rp = NULL;
        redisReply *r = checked(cli, rp);
        if (r == NULL)
            return false;   /* the caller exits: replies left unread do not matter */
        found[i] = read_parse(r, ids[i], &ms[i]);
        freeReplyObject(r);
    }
    return true;
}

static const char *env_get(const struct msg_view *m, const char *key)
{
    return json_string_value(json_object_get(m->env, key));
}

static long long env_num(const struct msg_view *m, const char *key)
{
    const char *v = env_get(m, key);
    return v != NULL ? strtoll(v, NULL, 10) : 0;
}

static long long rec_num(const json_t *rec, const char *key, long long def)
{
    json_t *v = json_object_get(rec, key);
    return json_is_number(v) ? (long long)json_number_value(v) : def;
}

/* The recipient as JSON: its record, with the index, the state it is in, and its schedule. */
static json_t *rcpt_json(const struct rcpt_view *v)
{
    json_t *o = json_deep_copy(v->rec);
    json_object_del(o, "due");      /* the schedule set's score says it (a claim leaves it stale) */
    json_object_set_new(o, "index", json_integer(v->index));
    json_object_set_new(o, "state", json_string(v->state));
    if (v->stage[0] != '\0')
        json_object_set_new(o, "stage", json_string(v->stage));
    if (strcmp(v->state, "inflight") == 0)
        json_object_set_new(o, "lease_until", json_integer(v->score));
    else if (strcmp(v->state, "held") == 0)
        json_object_set_new(o, "held_since", json_integer(v->score));
    else if (v->score >= 0)
        json_object_set_new(o, "due", json_integer(v->score));
    if (v->urgent)
        json_object_set_new(o, "urgent", json_true());
    return o;
}

/* ---- queue list ---- */

struct filter {
    char *sender, *rcpt;        /* without angle brackets; "" is the null sender */
    const char *domain, *state;
    long long limit;
};

/* Equal addresses: the local part exactly, the domain in any case. */
static bool addr_eq(const char *a, const char *b)
{
    const char *x = strrchr(a, '@'), *y = strrchr(b, '@');
    if (x == NULL || y == NULL)
        return strcmp(a, b) == 0;
    return x - a == y - b && strncmp(a, b, (size_t)(x - a)) == 0 && strcasecmp(x, y) == 0;
}

static char *unbracket(const char *s)
{
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '<' && s[n - 1] == '>')
        return xstrndup(s + 1, n - 2);
    return xstrdup(s);
}

static bool rcpt_matches(const struct filter *f, const struct rcpt_view *v)
{
    const char *at = strrchr(v->to, '@');
    return (f->rcpt == NULL || addr_eq(v->to, f->rcpt))
           && (f->domain == NULL || (at != NULL && strcasecmp(at + 1, f->domain) == 0))
           && (f->state == NULL || strcmp(v->state, f->state) == 0);
}

/* The sender matches, and one recipient matches every recipient filter. */
static bool msg_matches(const struct filter *f, const struct msg_view *m)
{
    const char *sender = env_get(m, "sender");
    if (f->sender != NULL && !addr_eq(sender ? sender : "", f->sender))
        return false;
    if (f->rcpt == NULL && f->domain == NULL && f->state == NULL)
        return true;
    for (size_t i = 0; i < m->nr; i++)
        if (rcpt_matches(f, &m->r[i]))
            return true;
    return false;
}

static void list_print(const struct ops_cli *cli, const struct msg_view *m)
{
    long long received = env_num(m, "received_ms");
    const char *sender = env_get(m, "sender"), *repo = env_get(m, "repo");
    if (cli->json) {
        json_t *o = json_object();
        json_object_set_new(o, "id", json_string(m->id));
        json_object_set_new(o, "received_ms", json_integer(received));
        json_object_set_new(o, "age_ms", json_integer(cli->now - received));
        json_object_set_new(o, "size", json_integer(env_num(m, "size")));
        json_object_set_new(o, "sender", json_string(sender ? sender : ""));
        if (repo != NULL)
            json_object_set_new(o, "repo", json_string(repo));
        json_t *rs = json_array();
        for (size_t i = 0; i < m->nr; i++)
            json_array_append_new(rs, rcpt_json(&m->r[i]));
        json_object_set_new(o, "rcpts", rs);
        put_json(o);
        return;
    }
    struct buf b = BUF_INIT;
    buf_printf(&b, "%s  ", m->id);
    fmt_dur(&b, cli->now - received);
    buf_printf(&b, "  %lld  <", env_num(m, "size"));
    ops_fmt_safe(&b, sender ? sender : "");
    buf_putc(&b, '>');
    for (size_t i = 0; i < m->nr; i++) {
        const struct rcpt_view *v = &m->r[i];
        buf_puts(&b, i == 0 ? "  " : "; ");
        ops_fmt_safe(&b, v->to);
        buf_printf(&b, " %s", v->state);
        if (strcmp(v->state, "inflight") == 0 || strcmp(v->state, "held") == 0 || v->score < 0)
            continue;
        buf_puts(&b, " (due ");
        fmt_when(&b, cli, v->score, false);
        buf_puts(&b, v->urgent ? ", urgent)" : ")");
    }
    if (repo != NULL) {
        buf_puts(&b, "  [repository ");
        ops_fmt_safe(&b, repo);
        buf_putc(&b, ']');
    }
    puts(buf_cstr(&b));
    buf_release(&b);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts ids[0..*n) and frees the duplicates. */
static void sort_unique(char **ids, size_t *n)
{
    if (*n > 1)
        qsort(ids, *n, sizeof *ids, cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < *n; i++) {
        if (k > 0 && strcmp(ids[k - 1], ids[i]) == 0)
            free(ids[i]);
        else
            ids[k++] = ids[i];
    }
    *n = k;
}

/* Appends to b a glob pattern matching s literally. */
static void glob_escape(struct buf *b, const char *s)
{
    for (; *s; s++) {
        if (strchr("*?[]\\", *s) != NULL)
            buf_putc(b, '\\');
        buf_putc(b, *s);
    }
}

/* Every message id in the queue, sorted (oldest first), from SCAN over P:msg:{*}. */
static bool scan_ids(const struct ops_cli *cli, char ***ids, size_t *n)
{
    struct buf pat = BUF_INIT;
    glob_escape(&pat, cli->prefix);
    buf_puts(&pat, ":msg:{*}");
    size_t skip = strlen(cli->prefix) + strlen(":msg:{");
    char cursor[32] = "0";
    size_t cap = 0;
    bool ok = true;
    *ids = NULL;
    *n = 0;
    do {
        const char *argv[] = { "SCAN", cursor, "MATCH", pat.data, "COUNT", "1000" };
        redisReply *r = ops_redis(cli, 6, argv);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            ok = false;
            if (r != NULL)
                freeReplyObject(r);
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        const redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements; i++) {
            const char *k = keys->element[i]->str;
            if (keys->element[i]->len != skip + QUEUE_ID_LEN + 1)
                continue;
            char *id = xstrndup(k + skip, QUEUE_ID_LEN);
            if (!ops_is_id(id)) {
                free(id);
                continue;
            }
            if (*n == cap) {
                cap = cap ? 2 * cap : 256;
                *ids = xrealloc(*ids, cap * sizeof **ids);
            }
            (*ids)[(*n)++] = id;
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    buf_release(&pat);
    sort_unique(*ids, n);     /* SCAN may return a key twice */
    return ok;
}

static void free_ids(char **ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

static const char *const list_states[] = { "pending", "deferred", "held", "inflight", "delivered",
                                           "failed" };

static int queue_list(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv)
{
    const char *sender = NULL, *rcpt = NULL, *limit = NULL;
    struct filter f = { 0 };
    const struct ops_opt opts[] = {
        { "--sender", &sender, NULL }, { "--rcpt", &rcpt, NULL }, { "--domain", &f.domain, NULL },
        { "--state", &f.state, NULL }, { "--limit", &limit, NULL },
    };
    char **pos;
    size_t npos;
    int rc = ops_cli_args(cli, argc, argv, opts, sizeof opts / sizeof opts[0], &pos, &npos);
    if (rc == 0 && npos > 0)
        rc = ops_usage(cli, "unexpected argument '%s'", pos[0]);
    if (rc == 0 && limit != NULL && !ops_parse_count(cli, "--limit", limit, &f.limit))
        rc = 2;
    if (rc == 0 && f.state != NULL) {
        bool known = false;
        for (size_t i = 0; i < sizeof list_states / sizeof list_states[0]; i++)
            known |= strcmp(f.state, list_states[i]) == 0;
        if (!known)
            rc = ops_usage(cli, "--state: '%s' is not one of pending, deferred, held, inflight, "
                           "delivered, failed", f.state);
    }
    free(pos);
    if (rc != 0 || (rc = ops_cli_open(cli, a)) != 0)
        return rc;
    f.sender = sender ? unbracket(sender) : NULL;
    f.rcpt = rcpt ? unbracket(rcpt) : NULL;
    char **ids;
    size_t n;
    long long shown = 0;
    if (!scan_ids(cli, &ids, &n))
        rc = 1;
    for (size_t i = 0; rc == 0 && i < n && (f.limit == 0 || shown < f.limit); i += LIST_BATCH) {
        size_t k = n - i < LIST_BATCH ? n - i : LIST_BATCH;
        struct msg_view ms[LIST_BATCH];
        bool found[LIST_BATCH] = { false };
        memset(ms, 0, sizeof ms);
        if (!read_many(cli, ids + i, k, ms, found))
            rc = 1;
        for (size_t j = 0; j < k; j++) {
            if (rc == 0 && found[j] && msg_matches(&f, &ms[j]) && (f.limit == 0 || shown < f.limit)) {
                list_print(cli, &ms[j]);
                shown++;
            }
            msg_view_clear(&ms[j]);
        }
    }
    if (rc == 0 && !cli->json)
        printf("-- %lld message%s\n", shown, shown == 1 ? "" : "s");
    free_ids(ids, n);
    free(f.sender);
    free(f.rcpt);
    return rc;
}

/* ---- queue show ---- */

/* Appends a JSON value of the history as text: strings as they are (escaped), others as JSON. */
static void fmt_value(struct buf *b, const json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        bool quote = *s == '\0' || strpbrk(s, " \t\"") != NULL;
        if (quote)
            buf_putc(b, '"');
        ops_fmt_safe(b, s);
        if (quote)
            buf_putc(b, '"');
        return;
    }
    char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    ops_fmt_safe(b, t ? t : "?");
    free(t);
}

/* Appends an event's fields as key=value, the usual ones first, due times as times. */
static void show_event_fields(struct buf *b, json_t *e)
{
    static const char *const first[] = { "rcpt", "to", "code", "status", "text", "mx", "due",
                                         "stage", "repo", "count" };
    for (size_t i = 0; i < sizeof first / sizeof first[0]; i++) {
        json_t *v = json_object_get(e, first[i]);
        if (v == NULL)
            continue;
        buf_printf(b, " %s=", first[i]);
        if (strcmp(first[i], "due") == 0 && json_is_number(v))
            ops_fmt_time(b, (long long)json_number_value(v));
        else
            fmt_value(b, v);
    }
    const char *k;
    json_t *v;
    json_object_foreach(e, k, v) {
        bool shown = strcmp(k, "ts") == 0 || strcmp(k, "event") == 0;
        for (size_t i = 0; i < sizeof first / sizeof first[0]; i++)
            shown |= strcmp(k, first[i]) == 0;
        if (!shown) {
            buf_printf(b, " %s=", k);
            fmt_value(b, v);
        }
    }
}

static void show_rcpt(const struct ops_cli *cli, struct buf *b, const struct rcpt_view *v)
{
    const json_t *rec = v->rec;
    buf_printf(b, "recipient %lld  <", v->index);
    ops_fmt_safe(b, v->to);
    buf_printf(b, ">\n  state       %s, attempts %lld", v->state, rec_num(rec, "attempts", 0));
    if (v->stage[0] != '\0' && strcmp(v->stage, RELAY_STAGE_MAIN) != 0)
        buf_printf(b, ", stage %s", v->stage);
    if (strcmp(v->state, "inflight") == 0) {
        buf_puts(b, ", lease until ");
        fmt_when(b, cli, v->score, true);
    } else if (strcmp(v->state, "held") == 0) {
        buf_puts(b, ", held since ");
        fmt_when(b, cli, v->score, true);
        long long was = rec_num(rec, "held_due", -1);
        if (was >= 0) {
            buf_puts(b, ", was due ");
            fmt_when(b, cli, was, true);
        }
    } else if (v->score >= 0) {
        buf_puts(b, v->urgent ? ", urgent, due " : ", due ");
        fmt_when(b, cli, v->score, true);
    }
    if (json_is_true(json_object_get(rec, "reprocessed")))
        buf_puts(b, ", reprocessed");
    buf_putc(b, '\n');
    const char *orcpt = json_string_value(json_object_get(rec, "orcpt"));
    if (orcpt != NULL) {
        buf_puts(b, "  orcpt       ");
        ops_fmt_safe(b, orcpt);
        buf_putc(b, '\n');
    }
    const json_t *notify = json_object_get(rec, "notify");
    if (json_array_size(notify) > 0) {
        buf_puts(b, "  notify      ");
        for (size_t i = 0; i < json_array_size(notify); i++) {
            if (i > 0)
                buf_putc(b, ',');
            fmt_value(b, json_array_get(notify, i));
        }
        buf_putc(b, '\n');
    }
    const json_t *last = json_object_get(rec, "last");
    if (json_is_object(last)) {
        buf_puts(b, "  last reply  ");
        long long ts = rec_num(last, "ts", -1);
        if (ts >= 0)
            ops_fmt_time(b, ts);
        const char *mx = json_string_value(json_object_get(last, "mx"));
        if (mx != NULL) {
            buf_puts(b, " from ");
            ops_fmt_safe(b, mx);
        }
        buf_putc(b, ':');
        long long code = rec_num(last, "code", 0);
        if (code != 0)
            buf_printf(b, " %lld", code);
        const char *st = json_string_value(json_object_get(last, "status"));
        const char *text = json_string_value(json_object_get(last, "text"));
        if (st != NULL) {
            buf_putc(b, ' ');
            ops_fmt_safe(b, st);
        }
        if (text != NULL) {
            buf_putc(b, ' ');
            ops_fmt_safe(b, text);
        }
        buf_putc(b, '\n');
    }
}

static void show_envelope(const struct ops_cli *cli, struct buf *b, const struct msg_view *m)
{
    static const char *const order[] = { "sender", "received_ms", "size", "nrcpt", "envid", "ret",
                                         "body_type", "smtputf8", "listener", "client_ip",
                                         "client_helo", "auth_user", "session", "repo",
                                         "repo_reason" };
    buf_printf(b, "message     %s\n", m->id);
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        const char *v = env_get(m, order[i]);
        if (v == NULL)
            continue;
        buf_printf(b, "%-11s ", order[i]);
        if (strcmp(order[i], "received_ms") == 0) {
            fmt_when(b, cli, strtoll(v, NULL, 10), true);
        } else if (strcmp(order[i], "sender") == 0) {
            buf_putc(b, '<');
            ops_fmt_safe(b, v);
            buf_putc(b, '>');
        } else {
            ops_fmt_safe(b, v);
        }
        buf_putc(b, '\n');
    }
    const char *k;
    json_t *v;
    json_object_foreach(m->env, k, v) {
        bool known = false;
        for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
            known |= strcmp(k, order[i]) == 0;
        if (!known) {
            buf_printf(b, "%-11s ", k);
            ops_fmt_safe(b, json_string_value(v));
            buf_putc(b, '\n');
        }
    }
}

int ops_queue_show_one(struct ops_cli *cli, const char *id, bool body)
{
    struct msg_view m;
    bool found = false;
    char *ids[] = { (char *)id };
    if (!read_many(cli, ids, 1, &m, &found))
        return 1;
    if (!found)
        return ops_fail(cli, "no message %s in the queue", id);
    struct buf logk = BUF_INIT, bodyk = BUF_INIT;
    queue_key(&logk, cli->prefix, "log", id);
    queue_key(&bodyk, cli->prefix, "body", id);
    const char *lrange[] = { "LRANGE", logk.data, "0", "-1" };
    const char *get[] = { "GET", bodyk.data };
    redisReply *log = ops_redis(cli, 4, lrange);
    redisReply *text = log != NULL && body ? ops_redis(cli, 2, get) : NULL;
    int rc = log == NULL || (body && text == NULL) ? 1 : 0;
    if (rc == 0 && cli->json) {
        json_t *o = json_object(), *rs = json_array(), *events = json_array();
        json_object_set_new(o, "id", json_string(id));
        json_object_set(o, "envelope", m.env);
        for (size_t i = 0; i < m.nr; i++)
            json_array_append_new(rs, rcpt_json(&m.r[i]));
        json_object_set_new(o, "rcpts", rs);
        for (size_t i = 0; i < log->elements; i++) {
            json_t *e = json_loadb(log->element[i]->str, log->element[i]->len, 0, NULL);
            json_array_append_new(events, e ? e : jstr(log->element[i]->str, log->element[i]->len));
        }
        json_object_set_new(o, "log", events);
        if (text != NULL)
            json_object_set_new(o, "body", text->type == REDIS_REPLY_STRING
                                               ? jstr(text->str, text->len) : json_null());
        put_json(o);
    } else if (rc == 0) {
        struct buf b = BUF_INIT;
        show_envelope(cli, &b, &m);
        for (size_t i = 0; i < m.nr; i++)
            show_rcpt(cli, &b, &m.r[i]);
        buf_puts(&b, "history\n");
        for (size_t i = 0; i < log->elements; i++) {
            json_t *e = json_loadb(log->element[i]->str, log->element[i]->len, 0, NULL);
            buf_puts(&b, "  ");
            if (!json_is_object(e)) {
                buf_append_sanitized(&b, log->element[i]->str, log->element[i]->len, 4096);
            } else {
                ops_fmt_time(&b, rec_num(e, "ts", 0));
                buf_puts(&b, "  ");
                const char *ev = json_string_value(json_object_get(e, "event"));
                ops_fmt_safe(&b, ev ? ev : "?");
                show_event_fields(&b, e);
            }
            json_decref(e);
            buf_putc(&b, '\n');
        }
        fputs(buf_cstr(&b), stdout);
        buf_release(&b);
        if (text != NULL && text->type == REDIS_REPLY_STRING) {
            puts("body");
            fwrite(text->str, 1, text->len, stdout);
        }
    }
    if (log != NULL)
        freeReplyObject(log);
    if (text != NULL)
        freeReplyObject(text);
    buf_release(&logk);
    buf_release(&bodyk);
    msg_view_clear(&m);
    return rc;
}

/* Parses "ID..." (at least one) for the commands that change messages. */
static int parse_ids(struct ops_cli *cli, int argc, char **argv, const struct ops_opt *opts,
                     size_t nopts, char ***ids, size_t *n, bool need)
{
    int rc = ops_cli_args(cli, argc, argv, opts, nopts, ids, n);
    if (rc == 0 && need && *n == 0)
        rc = ops_usage(cli, "needs at least one queue id");
    for (size_t i = 0; rc == 0 && i < *n; i++)
        if (!ops_is_id((*ids)[i]))
            rc = ops_usage(cli, "'%s' is not a queue id", (*ids)[i]);
    return rc;
}

static int queue_show(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv)
{
    bool body = false;
    const struct ops_opt opts[] = { { "--body", NULL, &body } };
    char **ids;
    size_t n;
    int rc = parse_ids(cli, argc, argv, opts, 1, &ids, &n, true);
    if (rc == 0 && n > 1)
        rc = ops_usage(cli, "takes one queue id, got '%s' too", ids[1]);
    if (rc == 0 && (rc = ops_cli_open(cli, a)) == 0)
        rc = ops_queue_show_one(cli, ids[0], body);
    free(ids);
    return rc;
}

/* ---- changes ---- */

/* The argv of an EVAL: EVAL, script, key count, keys, args; strings owned. */
struct eval {
    char **v;
    size_t n, nkeys;
};

static void eval_add(struct eval *e, const char *s)
{
    e->v = xrealloc(e->v, (e->n + 1) * sizeof *e->v);
    e->v[e->n++] = xstrdup(s);
}

static void eval_key(struct eval *e, struct buf *k)
{
    eval_add(e, buf_cstr(k));
    e->nkeys++;
    buf_reset(k);
}

/* Starts an EVAL: keys and then arguments follow; eval_run fills in the key count. */
static void eval_begin(struct eval *e, const char *script)
{
    memset(e, 0, sizeof *e);
    eval_add(e, "EVAL");
    eval_add(e, script);
    eval_add(e, "0");
}

static redisReply *eval_run(const struct ops_cli *cli, struct eval *e)
{
    free(e->v[2]);
    struct buf nk = BUF_INIT;
    buf_printf(&nk, "%zu", e->nkeys);
    e->v[2] = buf_steal(&nk);
    redisReply *r = ops_redis(cli, (int)e->n, (const char **)e->v);
    for (size_t i = 0; i < e->n; i++)
        free(e->v[i]);
    free(e->v);
    memset(e, 0, sizeof *e);
    return r;
}

/* Adds the keys of each stage: which[0..nwhich) of due, lease, owner. */
static void eval_stage_keys(struct eval *e, const char *prefix, const enum relay_stage_key *which,
                            size_t nwhich)
{
    struct buf k = BUF_INIT;
    for (size_t s = 0; s < NSTAGES; s++)
        for (size_t w = 0; w < nwhich; w++) {
            relay_stage_key(&k, prefix, ops_stages[s], which[w]);
            eval_key(e, &k);
        }
    buf_release(&k);
}

static void eval_msg_key(struct eval *e, const char *prefix, const char *kind, const char *id)
{
    struct buf k = BUF_INIT;
    queue_key(&k, prefix, kind, id);
    eval_key(e, &k);
    buf_release(&k);
}

static void eval_named_key(struct eval *e, const char *prefix, const char *name)
{
    struct buf k = BUF_INIT;
    buf_printf(&k, "%s:%s", prefix, name);
    eval_key(e, &k);
    buf_release(&k);
}

static void eval_stage_names(struct eval *e)
{
    char ns[8];
    snprintf(ns, sizeof ns, "%zu", NSTAGES);
    eval_add(e, ns);
    for (size_t s = 0; s < NSTAGES; s++)
        eval_add(e, ops_stages[s]);
}

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
        struct eval e;
        eval_begin(&e, delete_lua);
        eval_msg_key(&e, cli->prefix, "msg", id);
        eval_msg_key(&e, cli->prefix, "rcpt", id);
        eval_msg_key(&e, cli->prefix, "body", id);
        eval_msg_key(&e, cli->prefix, "log", id);
        eval_named_key(&e, cli->prefix, "hold");
        eval_stage_keys(&e, cli->prefix, all, 4);
        struct buf rk = BUF_INIT;
        if (in[0] != '\0') {
            buf_printf(&rk, "repo:%s", in);
            eval_named_key(&e, cli->prefix, buf_cstr(&rk));
        }
        if (repo != NULL && strcmp(repo, in) != 0) {
            buf_reset(&rk);
            buf_printf(&rk, "repo:%s", repo);
            eval_named_key(&e, cli->prefix, buf_cstr(&rk));
        }
        buf_release(&rk);
        eval_add(&e, id);
        eval_add(&e, in);
        char ns[8];
        snprintf(ns, sizeof ns, "%zu", NSTAGES);
        eval_add(&e, ns);
        free(in);
        redisReply *r = eval_run(cli, &e);
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

static int queue_delete(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv)
{
    char **ids;
    size_t n;
    int rc = parse_ids(cli, argc, argv, NULL, 0, &ids, &n, true);
    if (rc == 0)
        rc = ops_cli_open(cli, a);
    for (size_t i = 0; rc != 2 && cli->c != NULL && i < n; i++) {
        long long inflight = 0;
        int d = ops_queue_delete_one(cli, ids[i], NULL, &inflight);
        if (d < 0) {
            rc = 1;
            break;
        }
        if (d == 0) {
            rc = ops_fail(cli, "no message %s in the queue", ids[i]);
        } else if (cli->json) {
            json_t *o = json_pack("{s:s, s:b, s:I}", "id", ids[i], "deleted", 1, "inflight",
                                  (json_int_t)inflight);
            put_json(o);
        } else if (inflight > 0) {
            printf("%s deleted (%lld recipient%s in flight: that delivery goes on, its outcome "
                   "is not recorded)\n", ids[i], inflight, inflight == 1 ? " was" : "s were");
        } else {
            printf("%s deleted\n", ids[i]);
        }
    }
    free(ids);
    return rc;
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
    for (size_t s = 0; s < 2 * NSTAGES; s++) {
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
    sort_unique(*ids, n);
    return true;
}

static int queue_flush(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv)
{
    char **given, **ids = NULL;
    size_t ngiven, n = 0;
    int rc = parse_ids(cli, argc, argv, NULL, 0, &given, &ngiven, false);
    if (rc == 0)
        rc = ops_cli_open(cli, a);
    if (rc == 0 && ngiven == 0 && !deferred_ids(cli, &ids, &n))
        rc = 1;
    char *const *list = ngiven > 0 ? given : ids;
    size_t nlist = ngiven > 0 ? ngiven : n;
    long long total = 0;
    for (size_t i = 0; rc != 2 && cli->c != NULL && i < nlist; i++) {
        static const enum relay_stage_key due[] = { STAGE_DUE, STAGE_URGENT };
        struct eval e;
        eval_begin(&e, flush_lua);
        eval_msg_key(&e, cli->prefix, "rcpt", list[i]);
        eval_msg_key(&e, cli->prefix, "log", list[i]);
        eval_stage_keys(&e, cli->prefix, due, 2);
        eval_add(&e, list[i]);
        redisReply *r = eval_run(cli, &e);
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
            put_json(json_pack("{s:I}", "flushed", (json_int_t)total));
        else
            printf("%lld recipient%s made due now\n", total, total == 1 ? "" : "s");
    }
    free(given);
    free_ids(ids, n);
    return rc;
}

static int queue_hold(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv)
{
    char **ids;
    size_t n;
    int rc = parse_ids(cli, argc, argv, NULL, 0, &ids, &n, true);
    if (rc == 0)
        rc = ops_cli_open(cli, a);
    for (size_t i = 0; rc != 2 && cli->c != NULL && i < n; i++) {
        static const enum relay_stage_key due_lease[] = { STAGE_DUE, STAGE_URGENT, STAGE_LEASE };
        struct eval e;
        eval_begin(&e, hold_lua);
        eval_msg_key(&e, cli->prefix, "rcpt", ids[i]);
        eval_msg_key(&e, cli->prefix, "log", ids[i]);
        eval_named_key(&e, cli->prefix, "hold");
        eval_stage_keys(&e, cli->prefix, due_lease, 3);
        eval_add(&e, ids[i]);
        eval_stage_names(&e);
        redisReply *r = eval_run(cli, &e);
        if (r == NULL) {
            rc = 1;
            break;
        }
        long long held = r->elements > 0 ? r->element[0]->integer : -1;
        long long leased = r->elements > 2 ? r->element[1]->integer : 0;
        long long already = r->elements > 2 ? r->element[2]->integer : 0;
        freeReplyObject(r);
        if (held < 0) {
            rc = ops_fail(cli, "no message %s in the queue", ids[i]);
        } else if (cli->json) {
            put_json(json_pack("{s:s, s:I, s:I, s:I}", "id", ids[i], "held", (json_int_t)held,
                               "inflight", (json_int_t)leased, "already_held", (json_int_t)already));
        } else {
            printf("%s: %lld recipient%s held", ids[i], held, held == 1 ? "" : "s");
            if (leased > 0)
                printf(", %lld in flight left alone", leased);
            if (already > 0)
                printf(", %lld already held", already);
            putchar('\n');
        }
    }
    free(ids);
    return rc;
}

static int queue_release(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv)
{
    bool keep = false;
    const struct ops_opt opts[] = { { "--keep-due", NULL, &keep } };
    char **ids;
    size_t n;
    int rc = parse_ids(cli, argc, argv, opts, 1, &ids, &n, true);
    if (rc == 0)
        rc = ops_cli_open(cli, a);
    for (size_t i = 0; rc != 2 && cli->c != NULL && i < n; i++) {
        static const enum relay_stage_key due[] = { STAGE_DUE, STAGE_URGENT };
        struct eval e;
        eval_begin(&e, release_lua);
        eval_msg_key(&e, cli->prefix, "rcpt", ids[i]);
        eval_msg_key(&e, cli->prefix, "log", ids[i]);
        eval_named_key(&e, cli->prefix, "hold");
        eval_stage_keys(&e, cli->prefix, due, 2);
        eval_add(&e, ids[i]);
        eval_add(&e, keep ? "1" : "0");
        eval_stage_names(&e);
        redisReply *r = eval_run(cli, &e);
        if (r == NULL) {
            rc = 1;
            break;
        }
        long long released = r->integer;
        freeReplyObject(r);
        if (released < 0)
            rc = ops_fail(cli, "no message %s in the queue", ids[i]);
        else if (cli->json)
            put_json(json_pack("{s:s, s:I}", "id", ids[i], "released", (json_int_t)released));
        else
            printf("%s: %lld recipient%s released\n", ids[i], released, released == 1 ? "" : "s");
    }
    free(ids);
    return rc;
}

int ops_queue(const struct ops_args *a, int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv);
    } subs[] = {
        { "list", queue_list }, { "show", queue_show }, { "delete", queue_delete },
        { "flush", queue_flush }, { "hold", queue_hold }, { "release", queue_release },
    };
    struct ops_cli cli = { .cmd = "queue" };
    if (argc < 1)
        return ops_usage(&cli, "needs a subcommand: list, show, delete, flush, hold or release");
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        if (strcmp(argv[0], subs[i].name) != 0)
            continue;
        char cmd[32];
        snprintf(cmd, sizeof cmd, "queue %s", subs[i].name);
        cli.cmd = cmd;
        int rc = subs[i].fn(&cli, a, argc - 1, argv + 1);
        ops_cli_close(&cli);
        return rc;
    }
    return ops_usage(&cli, "unknown subcommand '%s'", argv[0]);
}
