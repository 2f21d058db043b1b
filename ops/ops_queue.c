/*
 * ops_queue.c - `mxgate queue list|show`: the operator's view of the Redis queue (docs/queue.md),
 * and the `queue` subcommand dispatch; the changes (delete, flush, hold, release) are in
 * ops_queue_change.c, what they share with `mxgate repo` in ops_cli.c.
 *
 * A command line tool on a blocking hiredis connection. Each message is read by one Lua script
 * (ops_read_many), so it is seen as one snapshot: envelope, records, and where each recipient
 * sits in the schedule sets. Leased recipients show as in flight, held ones (P:hold) as held.
 *
 * Exit status 2 on a usage error (the bad argument named), 1 when Redis cannot be reached or
 * answers an error, or an id is unknown.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "mem.h"
#include "ops.h"
#include "ops_cli.h"
#include "queue.h"
#include "relay_queue.h"

/* Messages read per pipeline by `queue list`. */
#define LIST_BATCH 100

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

static bool rcpt_matches(const struct filter *f, const struct ops_rcpt_view *v)
{
    const char *at = strrchr(v->to, '@');
    return (f->rcpt == NULL || addr_eq(v->to, f->rcpt))
           && (f->domain == NULL || (at != NULL && strcasecmp(at + 1, f->domain) == 0))
           && (f->state == NULL || strcmp(v->state, f->state) == 0);
}

/* The sender matches, and one recipient matches every recipient filter. */
static bool msg_matches(const struct filter *f, const struct ops_msg_view *m)
{
    const char *sender = ops_env_get(m, "sender");
    if (f->sender != NULL && !addr_eq(sender ? sender : "", f->sender))
        return false;
    if (f->rcpt == NULL && f->domain == NULL && f->state == NULL)
        return true;
    for (size_t i = 0; i < m->nr; i++)
        if (rcpt_matches(f, &m->r[i]))
            return true;
    return false;
}

static void list_print(const struct ops_cli *cli, const struct ops_msg_view *m)
{
    long long received = ops_env_num(m, "received_ms");
    const char *sender = ops_env_get(m, "sender"), *repo = ops_env_get(m, "repo");
    if (cli->json) {
        json_t *o = json_object();
        json_object_set_new(o, "id", json_string(m->id));
        json_object_set_new(o, "received_ms", json_integer(received));
        json_object_set_new(o, "age_ms", json_integer(cli->now - received));
        json_object_set_new(o, "size", json_integer(ops_env_num(m, "size")));
        json_object_set_new(o, "sender", json_string(sender ? sender : ""));
        if (repo != NULL)
            json_object_set_new(o, "repo", json_string(repo));
        json_t *rs = json_array();
        for (size_t i = 0; i < m->nr; i++)
            json_array_append_new(rs, ops_rcpt_json(&m->r[i]));
        json_object_set_new(o, "rcpts", rs);
        ops_put_json(o);
        return;
    }
    struct buf b = BUF_INIT;
    buf_printf(&b, "%s  ", m->id);
    ops_fmt_dur(&b, cli->now - received);
    buf_printf(&b, "  %lld  <", ops_env_num(m, "size"));
    ops_fmt_safe(&b, sender ? sender : "");
    buf_putc(&b, '>');
    for (size_t i = 0; i < m->nr; i++) {
        const struct ops_rcpt_view *v = &m->r[i];
        buf_puts(&b, i == 0 ? "  " : "; ");
        ops_fmt_safe(&b, v->to);
        buf_printf(&b, " %s", v->state);
        if (strcmp(v->state, "inflight") == 0 || strcmp(v->state, "held") == 0 || v->score < 0)
            continue;
        buf_puts(&b, " (due ");
        ops_fmt_when(&b, cli, v->score, false);
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

/* Every message id in the queue, sorted (oldest first), from SCAN over P:msg:{*}. */
static bool scan_ids(const struct ops_cli *cli, char ***ids, size_t *n)
{
    struct buf pat = BUF_INIT;
    ops_glob_escape(&pat, cli->prefix);
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
    ops_sort_unique(*ids, n);     /* SCAN may return a key twice */
    return ok;
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
        struct ops_msg_view ms[LIST_BATCH];
        bool found[LIST_BATCH] = { false };
        memset(ms, 0, sizeof ms);
        if (!ops_read_many(cli, ids + i, k, ms, found))
            rc = 1;
        for (size_t j = 0; j < k; j++) {
            if (rc == 0 && found[j] && msg_matches(&f, &ms[j]) && (f.limit == 0 || shown < f.limit)) {
                list_print(cli, &ms[j]);
                shown++;
            }
            ops_msg_view_clear(&ms[j]);
        }
    }
    if (rc == 0 && !cli->json)
        printf("-- %lld message%s\n", shown, shown == 1 ? "" : "s");
    ops_free_ids(ids, n);
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

static void show_rcpt(const struct ops_cli *cli, struct buf *b, const struct ops_rcpt_view *v)
{
    const json_t *rec = v->rec;
    buf_printf(b, "recipient %lld  <", v->index);
    ops_fmt_safe(b, v->to);
    buf_printf(b, ">\n  state       %s, attempts %lld", v->state, ops_rec_num(rec, "attempts", 0));
    if (v->stage[0] != '\0' && strcmp(v->stage, RELAY_STAGE_MAIN) != 0)
        buf_printf(b, ", stage %s", v->stage);
    if (strcmp(v->state, "inflight") == 0) {
        buf_puts(b, ", lease until ");
        ops_fmt_when(b, cli, v->score, true);
    } else if (strcmp(v->state, "held") == 0) {
        buf_puts(b, ", held since ");
        ops_fmt_when(b, cli, v->score, true);
        long long was = ops_rec_num(rec, "held_due", -1);
        if (was >= 0) {
            buf_puts(b, ", was due ");
            ops_fmt_when(b, cli, was, true);
        }
    } else if (v->score >= 0) {
        buf_puts(b, v->urgent ? ", urgent, due " : ", due ");
        ops_fmt_when(b, cli, v->score, true);
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
        long long ts = ops_rec_num(last, "ts", -1);
        if (ts >= 0)
            ops_fmt_time(b, ts);
        const char *mx = json_string_value(json_object_get(last, "mx"));
        if (mx != NULL) {
            buf_puts(b, " from ");
            ops_fmt_safe(b, mx);
        }
        buf_putc(b, ':');
        long long code = ops_rec_num(last, "code", 0);
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

static void show_envelope(const struct ops_cli *cli, struct buf *b, const struct ops_msg_view *m)
{
    static const char *const order[] = { "sender", "received_ms", "size", "nrcpt", "envid", "ret",
                                         "body_type", "smtputf8", "listener", "client_ip",
                                         "client_helo", "auth_user", "session", "repo",
                                         "repo_reason" };
    buf_printf(b, "message     %s\n", m->id);
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        const char *v = ops_env_get(m, order[i]);
        if (v == NULL)
            continue;
        buf_printf(b, "%-11s ", order[i]);
        if (strcmp(order[i], "received_ms") == 0) {
            ops_fmt_when(b, cli, strtoll(v, NULL, 10), true);
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
    struct ops_msg_view m;
    bool found = false;
    char *ids[] = { (char *)id };
    if (!ops_read_many(cli, ids, 1, &m, &found))
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
            json_array_append_new(rs, ops_rcpt_json(&m.r[i]));
        json_object_set_new(o, "rcpts", rs);
        for (size_t i = 0; i < log->elements; i++) {
            json_t *e = json_loadb(log->element[i]->str, log->element[i]->len, 0, NULL);
            json_array_append_new(events,
                                  e ? e : ops_jstr(log->element[i]->str, log->element[i]->len));
        }
        json_object_set_new(o, "log", events);
        if (text != NULL)
            json_object_set_new(o, "body", text->type == REDIS_REPLY_STRING
                                               ? ops_jstr(text->str, text->len) : json_null());
        ops_put_json(o);
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
                ops_fmt_time(&b, ops_rec_num(e, "ts", 0));
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
    ops_msg_view_clear(&m);
    return rc;
}

static int queue_show(struct ops_cli *cli, const struct ops_args *a, int argc, char **argv)
{
    bool body = false;
    const struct ops_opt opts[] = { { "--body", NULL, &body } };
    char **ids;
    size_t n;
    int rc = ops_parse_ids(cli, argc, argv, opts, 1, &ids, &n, true);
    if (rc == 0 && n > 1)
        rc = ops_usage(cli, "takes one queue id, got '%s' too", ids[1]);
    if (rc == 0 && (rc = ops_cli_open(cli, a)) == 0)
        rc = ops_queue_show_one(cli, ids[0], body);
    free(ids);
    return rc;
}

int ops_queue(const struct ops_args *a, int argc, char **argv)
{
    static const struct ops_sub subs[] = {
        { "list", queue_list }, { "show", queue_show }, { "delete", ops_queue_delete },
        { "flush", ops_queue_flush }, { "hold", ops_queue_hold }, { "release", ops_queue_release },
    };
    return ops_cli_dispatch("queue", "list, show, delete, flush, hold or release", subs,
                            sizeof subs / sizeof subs[0], a, argc, argv);
}
