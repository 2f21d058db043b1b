/*
 * queue.c - queue ids, key names, and the atomic enqueue of one message into Redis (see queue.h
 * and docs/queue.md for the layout).
 *
 * The enqueue is one MULTI ... EXEC written as a pipeline on the shared connection: Redis applies
 * the queued commands all together or none of them (a command refused while queuing, for OOM or
 * READONLY, makes EXEC fail with EXECABORT; a connection lost before EXEC discards the
 * transaction). So a message is either wholly in the queue or not at all, and the caller may
 * answer 250 only when EXEC returned an array of non-error replies. Every other outcome (an error
 * anywhere, a nil EXEC, a timeout, a lost connection) reaches the callback as ok == false with a
 * short reason that quotes Redis's error text, escaped (it may end up in a log line or a reply).
 */
#include "queue.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "edge_parse.h"
#include "log.h"
#include "mem.h"
#include "redis.h"

/* Commands between MULTI and EXEC: HSET msg, SET body, HSET rcpt, ZADD due, RPUSH log. */
#define ENQ_QUEUED 5
#define ERR_TEXT_MAX 200

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

void queue_id_new(char *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    uint64_t rnd;
    for (;;) {
        ssize_t n = getrandom(&rnd, sizeof rnd, 0);
        if (n == (ssize_t)sizeof rnd)
            break;
        if (n < 0 && errno != EINTR)
            log_panic("getrandom: %s", strerror(errno));
    }
    const uint64_t mask = (UINT64_C(1) << 50) - 1;
    ms &= mask;
    rnd &= mask;
    /* Most significant digit first, so that string order is time order. */
    for (int i = 9; i >= 0; i--, ms >>= 5)
        out[i] = crockford[ms & 31];
    for (int i = 19; i >= 10; i--, rnd >>= 5)
        out[i] = crockford[rnd & 31];
    out[QUEUE_ID_LEN] = '\0';
}

void queue_key(struct buf *b, const char *prefix, const char *kind, const char *id)
{
    buf_printf(b, "%s:%s:{%s}", prefix, kind, id);
}

void queue_stage_key(struct buf *b, const char *prefix, const char *stage, const char *name)
{
    if (strcmp(stage, QUEUE_STAGE_MAIN) == 0)
        buf_printf(b, "%s:%s", prefix, name);
    else
        buf_printf(b, "%s:%s:%s", prefix, stage, name);
}

/* ---- building argument vectors --------------------------------------------------------------- */

/* An argv under construction; strings added with argl_own are freed with it. */
struct argl {
    int n, cap;
    const char **v;
    size_t *len;
    char **own;
    int nown;
};

static void argl_init(struct argl *a, int cap)
{
    a->n = 0;
    a->cap = cap;
    a->v = xcalloc((size_t)cap, sizeof *a->v);
    a->len = xcalloc((size_t)cap, sizeof *a->len);
    a->own = xcalloc((size_t)cap, sizeof *a->own);
    a->nown = 0;
}

static void argl_add(struct argl *a, const char *s, size_t len)
{
    if (a->n == a->cap)
        log_panic("queue: argument vector overflow");
    a->v[a->n] = s;
    a->len[a->n] = len;
    a->n++;
}

static void argl_str(struct argl *a, const char *s)
{
    argl_add(a, s, strlen(s));
}

/* Takes ownership of the buffer's contents. */
static void argl_buf(struct argl *a, struct buf *b)
{
    size_t len = b->len;
    char *s = buf_steal(b);
    a->own[a->nown++] = s;
    argl_add(a, s, len);
}

static void argl_printf(struct argl *a, const char *fmt, long long v)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, fmt, v);
    argl_buf(a, &b);
}

static void argl_free(struct argl *a)
{
    for (int i = 0; i < a->nown; i++)
        free(a->own[i]);
    free(a->v);
    free(a->len);
    free(a->own);
}

/* A hash field, omitted when the value is NULL. */
static void argl_field(struct argl *a, const char *name, const char *val)
{
    if (val == NULL)
        return;
    argl_str(a, name);
    argl_str(a, val);
}

static void json_str(struct buf *b, const char *key, const char *val)
{
    buf_printf(b, "\"%s\":\"", key);
    json_escape(b, val, strlen(val));
    buf_putc(b, '"');
}

/* The initial JSON record of one recipient (see docs/queue.md). */
static void rcpt_json(struct buf *b, const struct queue_rcpt *rc, long long due)
{
    static const struct { unsigned flag; const char *name; } notify[] = {
        { DSN_NOTIFY_NEVER, "NEVER" },
        { DSN_NOTIFY_SUCCESS, "SUCCESS" },
        { DSN_NOTIFY_FAILURE, "FAILURE" },
        { DSN_NOTIFY_DELAY, "DELAY" },
    };
    buf_putc(b, '{');
    json_str(b, "to", rc->addr);
    if (rc->orcpt != NULL) {
        buf_putc(b, ',');
        json_str(b, "orcpt", rc->orcpt);
    }
    if (rc->notify != 0) {
        buf_puts(b, ",\"notify\":[");
        const char *sep = "";
        for (size_t i = 0; i < sizeof notify / sizeof notify[0]; i++) {
            if (rc->notify & notify[i].flag) {
                buf_printf(b, "%s\"%s\"", sep, notify[i].name);
                sep = ",";
            }
        }
        buf_putc(b, ']');
    }
    buf_printf(b, ",\"state\":\"pending\",\"attempts\":0,\"due\":%lld}", due);
}

/* ---- the transaction ------------------------------------------------------------------------- */

/* One enqueue in flight: lives until the last of its replies (EXEC's) has come back. */
struct enq {
    queue_done_fn *cb;
    void *arg;
    int outstanding;    /* replies still expected */
    bool failed;
    struct buf err;     /* the first failure seen */
};

static void enq_fail(struct enq *e, const char *what, const char *text, size_t len)
{
    if (e->failed)
        return;
    e->failed = true;
    buf_printf(&e->err, "%s: ", what);
    buf_append_sanitized(&e->err, text, len, ERR_TEXT_MAX);
}

static void enq_fail_str(struct enq *e, const char *what, const char *text)
{
    enq_fail(e, what, text, strlen(text));
}

/* reply is an error reply, or NULL with err from redis.c ("timeout", "connection lost"...). */
static void enq_fail_reply(struct enq *e, const char *what, const redisReply *reply,
                           const char *err)
{
    if (reply == NULL)
        enq_fail_str(e, what, err != NULL ? err : "no reply");
    else
        enq_fail(e, what, reply->str, reply->len);
}

static void enq_done(struct enq *e)
{
    if (--e->outstanding > 0)
        return;
    e->cb(!e->failed, e->failed ? buf_cstr(&e->err) : NULL, e->arg);
    buf_release(&e->err);
    free(e);
}

static void multi_reply(redisReply *reply, const char *err, void *arg)
{
    struct enq *e = arg;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
        enq_fail_reply(e, "MULTI", reply, err);
    enq_done(e);
}

/* A command inside MULTI: "+QUEUED", or an error that makes EXEC abort. */
static void queued_reply(redisReply *reply, const char *err, void *arg)
{
    struct enq *e = arg;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
        enq_fail_reply(e, "queuing", reply, err);
    else if (reply->type != REDIS_REPLY_STATUS || strcmp(reply->str, "QUEUED") != 0)
        enq_fail_str(e, "queuing", "unexpected reply");
    enq_done(e);
}

static void exec_reply(redisReply *reply, const char *err, void *arg)
{
    struct enq *e = arg;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        enq_fail_reply(e, "EXEC", reply, err);
    } else if (reply->type == REDIS_REPLY_NIL) {
        enq_fail_str(e, "EXEC", "transaction aborted");
    } else if (reply->type != REDIS_REPLY_ARRAY || reply->elements != ENQ_QUEUED) {
        enq_fail_str(e, "EXEC", "unexpected reply");
    } else {
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *el = reply->element[i];
            if (el->type == REDIS_REPLY_ERROR) {
                enq_fail(e, "EXEC", el->str, el->len);
                break;
            }
        }
    }
    enq_done(e);
}

/*
 * Tells the relays that work is due (PUBLISH on "<prefix>:wake", docs/queue.md) so that they claim
 * it now rather than at their next poll. Only a hint: a relay that misses it still polls.
 */
static void wake_relays(struct redis *r, const char *prefix)
{
    struct buf chan = BUF_INIT;
    queue_stage_key(&chan, prefix, QUEUE_STAGE_MAIN, "wake");
    const char *argv[] = { "PUBLISH", chan.data, "1" };
    if (!redis_command(r, NULL, NULL, 3, argv, NULL))
        log_msg(LOG_DEBUG, "wake-not-sent", NULL, "redis not connected");
    buf_release(&chan);
}

bool queue_enqueue(struct redis *r, const char *prefix, const struct queue_msg *m,
                   queue_done_fn *cb, void *arg)
{
    if (m->id == NULL || m->nrcpts == 0 || cb == NULL)
        log_panic("queue_enqueue: no id, no recipients or no callback");
    if (!redis_connected(r))
        return false;

    struct buf k_msg = BUF_INIT, k_body = BUF_INIT, k_rcpt = BUF_INIT, k_log = BUF_INIT;
    struct buf k_due = BUF_INIT;
    queue_key(&k_msg, prefix, "msg", m->id);
    queue_key(&k_body, prefix, "body", m->id);
    queue_key(&k_rcpt, prefix, "rcpt", m->id);
    queue_key(&k_log, prefix, "log", m->id);
    /* A held message (quarantine) waits in its repository instead of the due set. */
    if (m->repository != NULL)
        buf_printf(&k_due, "%s:repo:%s", prefix, m->repository);
    else
        queue_stage_key(&k_due, prefix, QUEUE_STAGE_MAIN, m->urgent ? "due:urgent" : "due");

    struct argl hmsg, set, hrcpt, zadd, rpush;
    argl_init(&hmsg, 32);
    argl_str(&hmsg, "HSET");
    argl_str(&hmsg, k_msg.data);
    argl_field(&hmsg, "sender", m->sender);
    argl_field(&hmsg, "envid", m->envid);
    argl_field(&hmsg, "ret", m->ret);
    argl_field(&hmsg, "body_type", m->body_type);
    argl_field(&hmsg, "smtputf8", m->smtputf8 ? "1" : "0");
    argl_field(&hmsg, "client_ip", m->client_ip);
    argl_field(&hmsg, "client_helo", m->client_helo);
    argl_field(&hmsg, "auth_user", m->auth_user);
    argl_field(&hmsg, "listener", m->listener);
    argl_field(&hmsg, "session", m->session);
    argl_str(&hmsg, "received_ms");
    argl_printf(&hmsg, "%lld", m->received_ms);
    argl_str(&hmsg, "nrcpt");
    argl_printf(&hmsg, "%lld", (long long)m->nrcpts);
    argl_str(&hmsg, "size");
    argl_printf(&hmsg, "%lld", (long long)m->body_len);
    argl_field(&hmsg, "repo", m->repository);
    argl_field(&hmsg, "repo_reason", m->repository_reason);

    argl_init(&set, 3);
    argl_str(&set, "SET");
    argl_str(&set, k_body.data);
    argl_add(&set, m->body != NULL ? m->body : "", m->body_len);

    int n2 = 2 + 2 * (int)m->nrcpts;
    argl_init(&hrcpt, n2);
    argl_init(&zadd, n2);
    argl_str(&hrcpt, "HSET");
    argl_str(&hrcpt, k_rcpt.data);
    argl_str(&zadd, "ZADD");
    argl_str(&zadd, k_due.data);
    for (size_t i = 0; i < m->nrcpts; i++) {
        argl_printf(&hrcpt, "%lld", (long long)i);
        struct buf j = BUF_INIT;
        rcpt_json(&j, &m->rcpts[i], m->received_ms);
        argl_buf(&hrcpt, &j);
        if (m->repository != NULL && i > 0)
            continue;
        argl_printf(&zadd, "%lld", m->received_ms);
        struct buf member = BUF_INIT;
        if (m->repository != NULL)
            buf_printf(&member, "%s", m->id);
        else
            buf_printf(&member, "%s/%zu", m->id, i);
        argl_buf(&zadd, &member);
    }

    struct buf line = BUF_INIT;
    buf_printf(&line, "{\"ts\":%lld,\"event\":\"enqueued\",\"nrcpt\":%zu,\"size\":%zu",
               m->received_ms, m->nrcpts, m->body_len);
    if (m->client_ip != NULL) {
        buf_putc(&line, ',');
        json_str(&line, "client", m->client_ip);
    }
    if (m->session != NULL) {
        buf_putc(&line, ',');
        json_str(&line, "session", m->session);
    }
    buf_putc(&line, '}');
    argl_init(&rpush, 3);
    argl_str(&rpush, "RPUSH");
    argl_str(&rpush, k_log.data);
    argl_buf(&rpush, &line);

    struct enq *e = xcalloc(1, sizeof *e);
    e->cb = cb;
    e->arg = arg;
    buf_init(&e->err);
    const char *multi[] = { "MULTI" }, *exec[] = { "EXEC" };
    struct argl *body[ENQ_QUEUED] = { &hmsg, &set, &hrcpt, &zadd, &rpush };

    bool sent = redis_command(r, multi_reply, e, 1, multi, NULL);
    if (sent) {
        e->outstanding = 1;
        /*
         * redis_command() fails only when the connection is going away, and then Redis drops the
         * open transaction with it: stop sending, and let the replies already owed report.
         */
        bool all = true;
        for (int i = 0; i < ENQ_QUEUED && all; i++) {
            all = redis_command(r, queued_reply, e, body[i]->n, body[i]->v, body[i]->len);
            if (all)
                e->outstanding++;
        }
        if (all && redis_command(r, exec_reply, e, 1, exec, NULL)) {
            e->outstanding++;
            if (m->repository == NULL)
                wake_relays(r, prefix);
        } else {
            enq_fail_str(e, "redis", "connection lost before EXEC");
        }
    } else {
        buf_release(&e->err);
        free(e);
    }

    for (int i = 0; i < ENQ_QUEUED; i++)
        argl_free(body[i]);
    buf_release(&k_msg);
    buf_release(&k_body);
    buf_release(&k_rcpt);
    buf_release(&k_log);
    buf_release(&k_due);
    return sent;
}
