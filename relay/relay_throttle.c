/*
 * relay_throttle.c - per-destination rate and concurrency limits in Redis (see relay_throttle.h).
 *
 * Keys, with prefix P and domain D (lower case): P:throttle:rate:D (string, the GCRA theoretical
 * arrival time in ms, expiring when idle) and P:throttle:conc:D (zset of slots scored by expiry).
 * With relay.throttle_scope = node both carry the node id as a suffix.
 */
#include "relay_throttle.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "mem.h"
#include "redis.h"

/* How long to wait before asking again when every concurrency slot is taken. */
#define CONC_RETRY_MS 1000

/*
 * KEYS: 1 rate key, 2 concurrency key. ARGV: 1 interval ms (0 = no rate), 2 concurrency (0 =
 * none), 3 slot name, 4 slot ttl ms, 5 wait when every slot is taken. Returns {1, 0} when the
 * delivery may start, {0, wait_ms} when not. The concurrency check comes first, so a refused
 * delivery consumes no rate.
 */
static const char acquire_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local conc = tonumber(ARGV[2])\n"
    "if conc > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
    "  if redis.call('ZCARD', KEYS[2]) >= conc then return {0, tonumber(ARGV[5])} end\n"
    "end\n"
    "local interval = tonumber(ARGV[1])\n"
    "if interval > 0 then\n"
    "  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "  if tat > now then return {0, tat - now} end\n"
    "  redis.call('SET', KEYS[1], now + interval, 'PX', interval + 60000)\n"
    "end\n"
    "if conc > 0 then\n"
    "  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])\n"
    "  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]) + 60000)\n"
    "end\n"
    "return {1, 0}\n";

static struct redis_script acquire_script = REDIS_SCRIPT(acquire_lua);

/* Parses "domain:rate:concurrency"; false when malformed. *name_len is the domain's length in e. */
static bool parse_entry(const char *e, size_t *name_len, struct relay_limits *lim)
{
    const char *c1 = strchr(e, ':');
    const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (c1 == NULL || c2 == NULL || c1 == e || strchr(c2 + 1, ':') != NULL)
        return false;
    char *end;
    long long rate = strtoll(c1 + 1, &end, 10);
    if (end != c2 || end == c1 + 1 || rate < 0)
        return false;
    long long conc = strtoll(c2 + 1, &end, 10);
    if (*end != '\0' || end == c2 + 1 || conc < 0)
        return false;
    *name_len = (size_t)(c1 - e);
    lim->rate = rate;
    lim->concurrency = conc;
    return true;
}

bool relay_limits_check(const struct strlist *entries, struct buf *err)
{
    for (size_t i = 0; i < entries->n; i++) {
        size_t len;
        struct relay_limits lim;
        if (!parse_entry(entries->v[i], &len, &lim)) {
            buf_printf(err, "'%s' is not domain:rate:concurrency", entries->v[i]);
            return false;
        }
    }
    return true;
}

/* name's entry in entries, else the defaults given. Runs for every delivery: allocates nothing. */
static void limits_lookup(const struct strlist *entries, const char *name, long long rate, long long conc,
                          struct relay_limits *out)
{
    out->rate = rate;
    out->concurrency = conc;
    size_t want = strlen(name);
    for (size_t i = 0; i < entries->n; i++) {
        size_t len;
        struct relay_limits lim;
        if (!parse_entry(entries->v[i], &len, &lim))
            continue;       /* refused by `mxgate config check` */
        if (len == want && strncasecmp(entries->v[i], name, len) == 0) {
            *out = lim;
            return;
        }
    }
}

void relay_limits_for(const char *domain, struct relay_limits *out)
{
    limits_lookup(&conf.relay_domain_limits, domain, conf.relay_rate_limit, conf.relay_concurrency_limit, out);
}

void relay_mx_limits_for(const char *host, struct relay_limits *out)
{
    limits_lookup(&conf.relay_mx_limits, host, 0, 0, out);
}

/* "P:throttle:KIND:domain" (lower case), with ":node" when limits are per node. */
static void throttle_key(struct buf *b, const char *kind, const char *domain, const char *node)
{
    buf_printf(b, "%s:throttle:%s:", conf.redis_prefix, kind);
    for (const char *p = domain; *p; p++)
        buf_putc(b, (char)tolower((unsigned char)*p));
    if (conf.relay_throttle_scope == THROTTLE_NODE)
        buf_printf(b, ":%s", node);
}

struct acquire_call {
    relay_throttle_fn *cb;
    void *arg;
    char *slot;
};

static void acquire_reply(redisReply *reply, const char *err, void *arg)
{
    struct acquire_call *call = arg;
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_INTEGER && reply->element[1]->type == REDIS_REPLY_INTEGER) {
        bool ok = reply->element[0]->integer == 1;
        call->cb(ok, reply->element[1]->integer, ok ? call->slot : "", NULL, call->arg);
    } else {
        call->cb(false, 0, "", err ? err : reply && reply->type == REDIS_REPLY_ERROR ? reply->str
                                                                                    : "unexpected reply",
                 call->arg);
    }
    free(call->slot);
    free(call);
}

bool relay_throttle_acquire(struct redis *r, const char *domain, const struct relay_limits *lim,
                            const char *node, const char *slot, long long slot_ttl_ms,
                            relay_throttle_fn *cb, void *arg)
{
    struct buf rate = BUF_INIT, conc = BUF_INIT;
    throttle_key(&rate, "rate", domain, node);
    throttle_key(&conc, "conc", domain, node);
    char interval_s[32], conc_s[32], ttl_s[32], retry_s[16];
    snprintf(retry_s, sizeof retry_s, "%d", CONC_RETRY_MS);
    snprintf(interval_s, sizeof interval_s, "%lld", lim->rate > 0 ? 60000 / lim->rate : 0);
    if (lim->rate > 60000)
        snprintf(interval_s, sizeof interval_s, "1");
    snprintf(conc_s, sizeof conc_s, "%lld", lim->concurrency);
    snprintf(ttl_s, sizeof ttl_s, "%lld", slot_ttl_ms);
    const char *argv[] = { "2", rate.data, conc.data, interval_s, conc_s, slot,
                           ttl_s, retry_s };
    struct acquire_call *call = xcalloc(1, sizeof *call);
    call->cb = cb;
    call->arg = arg;
    call->slot = xstrdup(slot);
    bool sent = redis_eval(r, &acquire_script, acquire_reply, call, 8, argv, NULL);
    if (!sent) {
        free(call->slot);
        free(call);
    }
    buf_release(&rate);
    buf_release(&conc);
    return sent;
}

void relay_throttle_release(struct redis *r, const char *domain, const char *node, const char *slot)
{
    struct buf conc = BUF_INIT;
    throttle_key(&conc, "conc", domain, node);
    const char *argv[] = { "ZREM", conc.data, slot };
    if (!redis_command(r, NULL, NULL, 3, argv, NULL))
        log_msg(LOG_DEBUG, "throttle-release-lost", NULL, "%s: slot expires with its lease", domain);
    buf_release(&conc);
}
