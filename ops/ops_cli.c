/*
 * ops_cli.c - what `mxgate queue` and `mxgate repo` share: argument parsing and subcommand
 * dispatch, the blocking Redis connection, human and --json output, the EVAL argv builder, and
 * reading a message as one snapshot (docs/queue.md).
 *
 * A message is read by one Lua script, so its envelope, records, and where each recipient sits in
 * the schedule sets (relay/relay_queue.c) are seen at one instant; many are pipelined.
 *
 * Errors are printed as "mxgate CMD: message" on stderr and returned: 2 for a usage error, 1 when
 * Redis cannot be reached or answers an error. Out of memory aborts (mem.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "conf.h"
#include "log.h"
#include "mem.h"
#include "ops_cli.h"
#include "queue.h"
#include "redis.h"
#include "relay_queue.h"

const char *const ops_stages[] = { RELAY_STAGE_MAIN, "local" };
#define NSTAGES (sizeof ops_stages / sizeof ops_stages[0])
const size_t ops_nstages = NSTAGES;

/* ---- the command line ---- */

/* Prints "mxgate CMD: " and the message, then end. */
static void vreport(const struct ops_cli *cli, const char *end, const char *fmt, va_list ap)
{
    fprintf(stderr, "mxgate %s: ", cli->cmd);
    vfprintf(stderr, fmt, ap);
    fputs(end, stderr);
}

int ops_usage(const struct ops_cli *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cli, " (see 'mxgate help')\n", fmt, ap);
    va_end(ap);
    return 2;
}

int ops_fail(const struct ops_cli *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cli, "\n", fmt, ap);
    va_end(ap);
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

/* Parses "ID..." (at least one) for the commands that change messages. */
int ops_parse_ids(struct ops_cli *cli, int argc, char **argv, const struct ops_opt *opts,
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

int ops_cli_dispatch(const char *group, const char *list, const struct ops_sub *subs, size_t nsubs,
                     const struct ops_args *a, int argc, char **argv)
{
    struct ops_cli cli = { .cmd = group };
    if (argc < 1)
        return ops_usage(&cli, "needs a subcommand: %s", list);
    for (size_t i = 0; i < nsubs; i++) {
        if (strcmp(argv[0], subs[i].name) != 0)
            continue;
        char cmd[32];
        snprintf(cmd, sizeof cmd, "%s %s", group, subs[i].name);
        cli.cmd = cmd;
        int rc = subs[i].fn(&cli, a, argc - 1, argv + 1);
        ops_cli_close(&cli);
        return rc;
    }
    return ops_usage(&cli, "unknown subcommand '%s'", argv[0]);
}

/* ---- Redis ---- */

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

/* Appends to b a glob pattern matching s literally. */
void ops_glob_escape(struct buf *b, const char *s)
{
    for (; *s; s++) {
        if (strchr("*?[]\\", *s) != NULL)
            buf_putc(b, '\\');
        buf_putc(b, *s);
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts ids[0..*n) and frees the duplicates. */
void ops_sort_unique(char **ids, size_t *n)
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

void ops_free_ids(char **ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

/* ---- output ---- */

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
void ops_fmt_dur(struct buf *b, long long ms)
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
void ops_fmt_when(struct buf *b, const struct ops_cli *cli, long long ms, bool absolute)
{
    if (absolute) {
        ops_fmt_time(b, ms);
        buf_puts(b, " (");
    }
    if (ms <= cli->now) {
        if (cli->now - ms < 1000)
            buf_puts(b, "now");
        else {
            ops_fmt_dur(b, cli->now - ms);
            buf_puts(b, " ago");
        }
    } else {
        buf_puts(b, "in ");
        ops_fmt_dur(b, ms - cli->now);
    }
    if (absolute)
        buf_putc(b, ')');
}

/* A JSON string from bytes that may not be UTF-8 (such bytes read back as U+00XX, as in logs). */
json_t *ops_jstr(const char *s, size_t n)
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
void ops_put_json(json_t *o)
{
    if (o == NULL)
        return;
    json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(o);
}

/* ---- the EVAL builder ---- */

void ops_eval_add(struct ops_eval *e, const char *s)
{
    e->v = xrealloc(e->v, (e->n + 1) * sizeof *e->v);
    e->v[e->n++] = xstrdup(s);
}

static void eval_key(struct ops_eval *e, struct buf *k)
{
    ops_eval_add(e, buf_cstr(k));
    e->nkeys++;
    buf_reset(k);
}

/* Starts an EVAL: keys and then arguments follow; ops_eval_run fills in the key count. */
void ops_eval_begin(struct ops_eval *e, const char *script)
{
    memset(e, 0, sizeof *e);
    ops_eval_add(e, "EVAL");
    ops_eval_add(e, script);
    ops_eval_add(e, "0");
}

redisReply *ops_eval_run(const struct ops_cli *cli, struct ops_eval *e)
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
void ops_eval_stage_keys(struct ops_eval *e, const char *prefix, const enum relay_stage_key *which,
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

void ops_eval_msg_key(struct ops_eval *e, const char *prefix, const char *kind, const char *id)
{
    struct buf k = BUF_INIT;
    queue_key(&k, prefix, kind, id);
    eval_key(e, &k);
    buf_release(&k);
}

void ops_eval_named_key(struct ops_eval *e, const char *prefix, const char *name)
{
    struct buf k = BUF_INIT;
    buf_printf(&k, "%s:%s", prefix, name);
    eval_key(e, &k);
    buf_release(&k);
}

void ops_eval_stage_names(struct ops_eval *e)
{
    char ns[8];
    snprintf(ns, sizeof ns, "%zu", NSTAGES);
    ops_eval_add(e, ns);
    for (size_t s = 0; s < NSTAGES; s++)
        ops_eval_add(e, ops_stages[s]);
}

/* ---- reading messages ---- */

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

void ops_msg_view_clear(struct ops_msg_view *m)
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
    long long x = ((const struct ops_rcpt_view *)a)->index;
    long long y = ((const struct ops_rcpt_view *)b)->index;
    return x < y ? -1 : x > y;
}

/* Builds m from the read script's reply; false when the message is not in the queue. */
static bool read_parse(const redisReply *r, const char *id, struct ops_msg_view *m)
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
                            ops_jstr(env->element[i + 1]->str, env->element[i + 1]->len));
    m->nr = locs->elements / 4;
    m->r = xcalloc(m->nr ? m->nr : 1, sizeof *m->r);
    for (size_t i = 0; i < m->nr; i++) {
        struct ops_rcpt_view *v = &m->r[i];
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
bool ops_read_many(const struct ops_cli *cli, char *const *ids, size_t n, struct ops_msg_view *ms,
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

const char *ops_env_get(const struct ops_msg_view *m, const char *key)
{
    return json_string_value(json_object_get(m->env, key));
}

long long ops_env_num(const struct ops_msg_view *m, const char *key)
{
    const char *v = ops_env_get(m, key);
    return v != NULL ? strtoll(v, NULL, 10) : 0;
}

long long ops_rec_num(const json_t *rec, const char *key, long long def)
{
    json_t *v = json_object_get(rec, key);
    return json_is_number(v) ? (long long)json_number_value(v) : def;
}

/* The recipient as JSON: its record, with the index, the state it is in, and its schedule. */
json_t *ops_rcpt_json(const struct ops_rcpt_view *v)
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
