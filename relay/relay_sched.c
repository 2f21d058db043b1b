/*
 * relay_sched.c - the relay's scheduler: claim due recipients, fetch their messages, route them,
 * and record each outcome (docs/queue.md, docs/relay.md).
 *
 * The loop claims up to relay.max_inflight recipients at a time. The recipients of one claim are
 * grouped by message; each message's envelope, body and recipient records are fetched in one
 * pipeline; then each recipient is routed: a local domain goes to the "local" stage that the
 * mailbox bridge works, anything else to outbound delivery, batched per domain so that recipients
 * of one destination share one transaction. Every outcome is written by relay_queue_outcome()
 * with the due time it implies; a temporary failure past relay.max_age or relay.max_attempts
 * becomes permanent. Nothing here blocks: Redis, DNS and SMTP are all asynchronous.
 */
#include "relay.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include <event2/event.h>
#include <jansson.h>

#include "clock.h"
#include "conf.h"
#include "edge_parse.h"
#include "log.h"
#include "mem.h"
#include "queue.h"
#include "redis.h"
#include "relay_dsn.h"

#define LOCAL_STAGE "local"

uint64_t relay_random(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v)
        v = (uint64_t)clock_mono_ms() * 6364136223846793005ULL;
    return v;
}

static bool domain_is_local(const char *domain)
{
    for (size_t i = 0; i < conf.local_domains.n; i++)
        if (strcasecmp(domain, conf.local_domains.v[i]) == 0)
            return true;
    return false;
}

static void msg_free(struct relay_msg *m)
{
    if (m == NULL)
        return;
    if (m->prev != NULL)
        m->prev->next = m->next;
    else
        m->rl->msgs = m->next;
    if (m->next != NULL)
        m->next->prev = m->prev;
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct relay_rcpt *r = &m->rcpts[i];
        free(r->claim.member);
        free(r->claim.id);
        free(r->to);
        free(r->orcpt);
        free(r->result_text);
        free(r->result_mx);
    }
    free(m->rcpts);
    free(m->id);
    free(m->sender);
    free(m->envid);
    free(m->ret);
    free(m->body);
    free(m);
}

static void schedule_tick(struct relay *rl, long long ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    evtimer_add(rl->tick, &tv);
}

/* ---- recording outcomes ---- */

static void outcome_recorded(const char *status, const char *err, void *arg)
{
    struct relay_rcpt *r = arg;
    struct relay_msg *m = r->msg;
    struct relay *rl = m->rl;
    struct log_ctx ctx = { .queue_id = m->id };
    static const char *const names[] = { "delivered", "failed", "deferred", "throttled", "routed" };
    struct logrec lr;
    if (err != NULL) {
        /* The lease runs out and another attempt follows: delivered twice at worst, never lost. */
        log_msg(LOG_ERR, "outcome-not-recorded", &ctx, "%s: %s", r->to, err);
    } else if (log_begin(&lr, strcmp(status, "stale") == 0 ? LOG_WARN : LOG_INFO, names[r->result.outcome], &ctx)) {
        log_str(&lr, "to", r->to);
        if (r->result.code != 0)
            log_int(&lr, "code", r->result.code);
        if (r->result.status != NULL)
            log_str(&lr, "status", r->result.status);
        if (r->result.text != NULL)
            log_str(&lr, "reply", r->result.text);
        if (r->result.mx != NULL)
            log_str(&lr, "mx", r->result.mx);
        if (r->result.outcome == OUTCOME_DEFERRED || r->result.outcome == OUTCOME_THROTTLED)
            log_int(&lr, "due_in_ms", r->result.due_ms - clock_wall_ms());
        log_int(&lr, "attempts", r->attempts + (r->result.outcome != OUTCOME_THROTTLED
                                                && r->result.outcome != OUTCOME_ROUTED));
        if (strcmp(status, "ok") != 0)
            log_str(&lr, "queue", status);      /* "removed" or "stale" */
        log_end(&lr);
    }
    rl->inflight--;
    if (--m->pending == 0)
        msg_free(m);
    if (!rl->stopping)
        schedule_tick(rl, 0);
}

static void record(struct relay *rl, struct relay_rcpt *r)
{
    if (!relay_queue_outcome(rl->redis, conf.redis_prefix, conf.relay_history_retention / 1000, &r->claim,
                             &r->result, outcome_recorded, r))
        outcome_recorded(NULL, "redis not connected", r);
}

/* Sets a result the scheduler itself decides (routing, expiry, bad records). */
static void set_result(struct relay_rcpt *r, enum relay_outcome o, int code, const char *status,
                       const char *text)
{
    r->result.outcome = o;
    r->result.code = code;
    snprintf(r->result_status, sizeof r->result_status, "%s", status ? status : "");
    r->result.status = status ? r->result_status : NULL;
    free(r->result_text);
    r->result_text = text ? xstrdup(text) : NULL;
    r->result.text = r->result_text;
}

/* Failed recipients whose outcome waits for their bounce to be queued. */
struct bounce {
    struct relay *rl;
    struct relay_rcpt **rcpts;
    size_t n;
};

static void bounce_queued(bool ok, const char *err, void *arg)
{
    struct bounce *b = arg;
    struct relay_msg *m = b->rcpts[0]->msg;
    if (!ok) {
        /* Without its bounce a failure must not be final: try again later, bounce again then. */
        log_msg(LOG_ERR, "bounce-not-queued", &(struct log_ctx){ .queue_id = m->id }, "%s", err);
        for (size_t i = 0; i < b->n; i++) {
            struct relay_rcpt *r = b->rcpts[i];
            r->result.warned = r->warned;   /* the delay notice is owed still */
            if (r->result.outcome == OUTCOME_FAILED && !r->parked) {
                r->result.outcome = OUTCOME_THROTTLED;
                r->result.due_ms = clock_wall_ms() + 60000;
                r->result.repo = NULL;
            }
        }
    }
    for (size_t i = 0; i < b->n; i++)
        record(b->rl, b->rcpts[i]);
    free(b->rcpts);
    free(b);
}

/*
 * Queues the notification for the failed recipients that want one (RFC 3461), then records
 * every outcome; returns false when there is nothing to bounce (the caller records at once).
 */
static bool bounce(struct relay *rl, struct relay_rcpt **rcpts, size_t n)
{
    struct relay_msg *m = rcpts[0]->msg;
    if (!relay_dsn_sender_ok(m->sender))
        return false;
    struct relay_dsn_rcpt *dr = xcalloc(n, sizeof *dr);
    struct buf *diag = xcalloc(n, sizeof *diag);      /* the reply as received, code first */
    size_t nfailed = 0;
    long long now = clock_wall_ms();
    for (size_t i = 0; i < n; i++) {
        const struct relay_rcpt *r = rcpts[i];
        bool failed = r->result.outcome == OUTCOME_FAILED && !r->parked;
        bool delayed = r->result.outcome == OUTCOME_DEFERRED && r->result.warned && !r->warned;
        if (!failed && !delayed)
            continue;
        if (r->result.code != 0)
            buf_printf(&diag[nfailed], "%d %s %s", r->result.code,
                       r->result.status ? r->result.status : "", r->result.text ? r->result.text : "");
        else
            buf_puts(&diag[nfailed], r->result.text ? r->result.text : "");
        dr[nfailed] = (struct relay_dsn_rcpt){
            .addr = r->to, .orcpt = r->orcpt, .notify = r->notify,
            .action = failed ? DSN_ACTION_FAILED : DSN_ACTION_DELAYED,
            .status = r->result.status, .remote_mta = r->result.mx,
            .diagnostic = buf_cstr(&diag[nfailed]), .last_attempt_ms = now,
            .retry_until_ms = failed ? 0 : m->received_ms + conf.relay_max_age,
        };
        nfailed++;
    }
    struct relay_dsn_msg dm = {
        .reporting_mta = rl->hostname, .sender = m->sender, .queue_id = m->id, .envid = m->envid,
        .ret = m->ret, .arrival_ms = m->received_ms, .original = m->body,
        .original_len = m->body_len, .max_full = (size_t)conf.edge_message_size_limit / 2,
        .rcpts = dr, .nrcpts = nfailed, .now_ms = now, .rnd = relay_random(),
    };
    struct buf text = BUF_INIT;
    struct relay_dsn_info info;
    size_t reported = nfailed > 0 ? relay_dsn_build(&dm, &text, NULL, &info) : 0;
    for (size_t i = 0; i < nfailed; i++)
        buf_release(&diag[i]);
    free(diag);
    free(dr);
    if (reported == 0) {
        buf_release(&text);
        return false;
    }
    char id[QUEUE_ID_LEN + 1];
    queue_id_new(id);
    struct queue_rcpt to = { .addr = m->sender };
    struct queue_msg bm = {
        .id = id, .sender = "", .body_type = info.eightbit ? "8BITMIME" : NULL,
        .smtputf8 = info.smtputf8, .urgent = true, .listener = "bounce", .received_ms = now, .rcpts = &to,
        .nrcpts = 1, .body = text.data, .body_len = text.len,
    };
    struct bounce *b = xcalloc(1, sizeof *b);
    b->rl = rl;
    b->n = n;
    b->rcpts = xcalloc(n, sizeof *b->rcpts);
    memcpy(b->rcpts, rcpts, n * sizeof *rcpts);
    bool sent = queue_enqueue(rl->redis, conf.redis_prefix, &bm, bounce_queued, b);
    buf_release(&text);
    if (!sent)
        bounce_queued(false, "redis not connected", b);
    else
        log_msg(LOG_INFO, "bounce-queued", &(struct log_ctx){ .queue_id = m->id },
                "bounce %s to %s for %zu recipients", id, m->sender, reported);
    return true;
}

void relay_delivered(struct relay *rl, struct relay_rcpt **rcpts, size_t n)
{
    long long now = clock_wall_ms();
    for (size_t i = 0; i < n; i++) {
        struct relay_rcpt *r = rcpts[i];
        struct relay_result *res = &r->result;
        if (res->outcome == OUTCOME_DEFERRED) {
            int64_t due = 0;
            enum retry_verdict v = retry_after_failure(&rl->retry, r->msg->received_ms, now,
                                                       r->attempts + 1, relay_random(), &due);
            if (conf.relay_temporary_repository[0] != '\0') {
                /* Single try: kept for an operator's reprocess, not retried, not bounced. */
                res->outcome = OUTCOME_FAILED;
                res->repo = conf.relay_temporary_repository;
                r->parked = true;
                rl->deferred++;
                continue;
            } else if (v == RETRY_AT) {
                res->due_ms = due;
                res->warned = r->warned || (conf.relay_delay_warning > 0
                                            && now - r->msg->received_ms >= conf.relay_delay_warning
                                            && relay_dsn_wanted(r->notify, DSN_ACTION_DELAYED));
                rl->deferred++;
            } else {
                /* Too old, or out of attempts: the temporary failure becomes permanent. */
                struct buf why = BUF_INIT;
                buf_printf(&why, "%s (%s)", res->text ? res->text : "temporary failure",
                           v == RETRY_GIVE_UP_AGE ? "message too old" : "too many attempts");
                res->outcome = OUTCOME_FAILED;
                free(r->result_text);
                r->result_text = buf_steal(&why);
                res->text = r->result_text;
                if (res->status != NULL && res->status[0] == '4')
                    r->result_status[0] = '5';
            }
        }
        if (res->outcome == OUTCOME_FAILED && res->repo == NULL) {
            bool unknown = rl->role->unknown_repo != NULL && res->status != NULL
                           && strncmp(res->status, "5.1.", 4) == 0;
            res->repo = unknown ? rl->role->unknown_repo
                        : conf.relay_failed_repository[0] ? conf.relay_failed_repository : NULL;
            rl->failed++;
        } else if (res->outcome == OUTCOME_DELIVERED) {
            rl->delivered++;
        }
    }
    if (bounce(rl, rcpts, n))
        return;
    for (size_t i = 0; i < n; i++)
        record(rl, rcpts[i]);
}

/* ---- routing ---- */

static int cmp_domain(const void *a, const void *b)
{
    const struct relay_rcpt *x = *(struct relay_rcpt *const *)a, *y = *(struct relay_rcpt *const *)b;
    return strcasecmp(x->domain, y->domain);
}

/* Routes every recipient of a fetched message: local stage, or outbound per domain. */
static void route(struct relay *rl, struct relay_msg *m)
{
    if (rl->role->deliver != NULL) {
        /* A role that delivers itself (the mailbox bridge) takes the whole message. */
        struct relay_rcpt **mine = xcalloc(m->nrcpts, sizeof *mine);
        size_t n = 0;
        for (size_t i = 0; i < m->nrcpts; i++) {
            struct relay_rcpt *r = &m->rcpts[i];
            if (r->to == NULL) {
                set_result(r, OUTCOME_FAILED, 0, "5.3.0", "recipient record unreadable");
                record(rl, r);
            } else {
                mine[n++] = r;
            }
        }
        if (n > 0)
            rl->role->deliver(rl, mine, n);
        free(mine);
        return;
    }
    struct relay_rcpt **remote = xcalloc(m->nrcpts, sizeof *remote);
    size_t nremote = 0;
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct relay_rcpt *r = &m->rcpts[i];
        if (r->to == NULL) {
            set_result(r, OUTCOME_FAILED, 0, "5.3.0", "recipient record unreadable");
            record(rl, r);
        } else if (domain_is_local(r->domain)) {
            set_result(r, OUTCOME_ROUTED, 0, NULL, "local domain");
            r->result.stage = LOCAL_STAGE;
            record(rl, r);
        } else {
            remote[nremote++] = r;
        }
    }
    qsort(remote, nremote, sizeof *remote, cmp_domain);
    for (size_t i = 0; i < nremote;) {
        size_t j = i + 1;
        while (j < nremote && strcasecmp(remote[j]->domain, remote[i]->domain) == 0)
            j++;
        relay_deliver(rl, remote + i, j - i);
        i = j;
    }
    free(remote);
}

/* ---- fetching ---- */

/* Fills r from its JSON record; false when the record is missing or unreadable. */
static bool parse_rcpt(struct relay_rcpt *r, const char *text)
{
    json_error_t jerr;
    json_t *j = text ? json_loads(text, 0, &jerr) : NULL;
    if (j == NULL)
        return false;
    const char *to = json_string_value(json_object_get(j, "to"));
    const char *orcpt = json_string_value(json_object_get(j, "orcpt"));
    const char *at = to ? strrchr(to, '@') : NULL;
    bool ok = at != NULL && at[1] != '\0';
    if (ok) {
        r->to = xstrdup(to);
        r->domain = strrchr(r->to, '@') + 1;
        r->orcpt = orcpt ? xstrdup(orcpt) : NULL;
        r->attempts = (unsigned)json_integer_value(json_object_get(j, "attempts"));
        r->warned = json_is_true(json_object_get(j, "warned"));
        json_t *notify = json_object_get(j, "notify");
        size_t k;
        json_t *v;
        json_array_foreach(notify, k, v) {
            const char *f = json_string_value(v);
            if (f == NULL)
                continue;
            if (strcmp(f, "NEVER") == 0)
                r->notify |= DSN_NOTIFY_NEVER;
            else if (strcmp(f, "SUCCESS") == 0)
                r->notify |= DSN_NOTIFY_SUCCESS;
            else if (strcmp(f, "FAILURE") == 0)
                r->notify |= DSN_NOTIFY_FAILURE;
            else if (strcmp(f, "DELAY") == 0)
                r->notify |= DSN_NOTIFY_DELAY;
        }
    }
    json_decref(j);
    return ok;
}

/* One message's fetch: three replies (envelope, body, recipient records), in order. */
struct fetch {
    struct relay_msg *m;
    int replies;
    bool failed;
};

static char *reply_str(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_STRING ? xstrndup(r->str, r->len) : NULL;
}

static void fetch_done(struct fetch *f)
{
    struct relay_msg *m = f->m;
    struct relay *rl = m->rl;
    free(f);
    if (m->body == NULL || m->sender == NULL) {
        /* Deleted by an operator, or claimed from a stale schedule entry: clear the claims. */
        for (size_t i = 0; i < m->nrcpts; i++) {
            set_result(&m->rcpts[i], OUTCOME_FAILED, 0, "5.3.0", "message no longer in the queue");
            record(rl, &m->rcpts[i]);
        }
        return;
    }
    route(rl, m);
}

static void fetch_reply(redisReply *reply, const char *err, void *arg)
{
    struct fetch *f = arg;
    struct relay_msg *m = f->m;
    int which = f->replies++;
    if (reply == NULL) {
        if (!f->failed)
            log_msg(LOG_WARN, "fetch-failed", &(struct log_ctx){ .queue_id = m->id }, "%s", err);
        f->failed = true;
    } else if (which == 0 && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < reply->elements; i += 2) {
            const char *k = reply->element[i]->str;
            redisReply *v = reply->element[i + 1];
            if (strcmp(k, "sender") == 0)
                m->sender = reply_str(v);
            else if (strcmp(k, "envid") == 0)
                m->envid = reply_str(v);
            else if (strcmp(k, "ret") == 0)
                m->ret = reply_str(v);
            else if (strcmp(k, "smtputf8") == 0)
                m->smtputf8 = v->str != NULL && strcmp(v->str, "1") == 0;
            else if (strcmp(k, "body_type") == 0)
                m->eightbit = v->str != NULL && strcmp(v->str, "7BIT") != 0;
            else if (strcmp(k, "received_ms") == 0)
                m->received_ms = v->str ? strtoll(v->str, NULL, 10) : 0;
        }
    } else if (which == 1 && reply->type == REDIS_REPLY_STRING) {
        m->body = xmalloc(reply->len + 1);
        memcpy(m->body, reply->str, reply->len);
        m->body[reply->len] = '\0';
        m->body_len = reply->len;
    } else if (which == 2 && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < m->nrcpts && i < reply->elements; i++)
            if (!parse_rcpt(&m->rcpts[i], reply->element[i]->str))
                m->rcpts[i].to = NULL;
    }
    if (f->replies < 3)
        return;
    if (f->failed) {
        /* Redis went away mid-fetch: the leases bring the work back later. */
        struct relay *rl = m->rl;
        rl->inflight -= (unsigned)m->nrcpts;
        free(f);
        msg_free(m);
        return;
    }
    fetch_done(f);
}

/* Sends the three reads of one message; on failure its claims simply expire. */
static void fetch(struct relay *rl, struct relay_msg *m)
{
    struct buf msgk = BUF_INIT, bodyk = BUF_INIT, rcptk = BUF_INIT;
    queue_key(&msgk, conf.redis_prefix, "msg", m->id);
    queue_key(&bodyk, conf.redis_prefix, "body", m->id);
    queue_key(&rcptk, conf.redis_prefix, "rcpt", m->id);
    size_t argc = 2 + m->nrcpts;
    const char **argv = xcalloc(argc, sizeof *argv);
    char (*idx)[16] = xcalloc(m->nrcpts, sizeof *idx);
    argv[0] = "HMGET";
    argv[1] = rcptk.data;
    for (size_t i = 0; i < m->nrcpts; i++) {
        snprintf(idx[i], sizeof idx[i], "%u", m->rcpts[i].claim.index);
        argv[2 + i] = idx[i];
    }
    struct fetch *f = xcalloc(1, sizeof *f);
    f->m = m;
    const char *hgetall[] = { "HGETALL", msgk.data };
    const char *get[] = { "GET", bodyk.data };
    int sent = redis_command(rl->redis, fetch_reply, f, 2, hgetall, NULL)
               + redis_command(rl->redis, fetch_reply, f, 2, get, NULL)
               + redis_command(rl->redis, fetch_reply, f, (int)argc, argv, NULL);
    if (sent < 3) {
        /* Connection lost between the commands: the ones sent will answer with reply NULL. */
        f->replies += 3 - sent;
        f->failed = true;
        if (sent == 0) {
            rl->inflight -= (unsigned)m->nrcpts;
            free(f);
            msg_free(m);
        }
    }
    free(idx);
    free(argv);
    buf_release(&msgk);
    buf_release(&bodyk);
    buf_release(&rcptk);
}

/* ---- claiming ---- */

static int cmp_claim_id(const void *a, const void *b)
{
    return strcmp(((const struct relay_claim *)a)->id, ((const struct relay_claim *)b)->id);
}

static void claimed(struct relay_claim *claims, size_t n, const char *err, void *arg)
{
    struct relay *rl = arg;
    rl->claiming = false;
    bool woken = rl->woken;
    rl->woken = false;
    if (err != NULL) {
        if (!rl->stopping) {
            log_msg(LOG_WARN, "claim-failed", NULL, "%s", err);
            schedule_tick(rl, conf.relay_poll);
        }
        return;
    }
    qsort(claims, n, sizeof *claims, cmp_claim_id);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && strcmp(claims[j].id, claims[i].id) == 0)
            j++;
        struct relay_msg *m = xcalloc(1, sizeof *m);
        m->rl = rl;
        m->next = rl->msgs;
        if (m->next != NULL)
            m->next->prev = m;
        rl->msgs = m;
        m->id = xstrdup(claims[i].id);
        m->nrcpts = j - i;
        m->pending = (unsigned)m->nrcpts;
        m->rcpts = xcalloc(m->nrcpts, sizeof *m->rcpts);
        for (size_t k = 0; k < m->nrcpts; k++) {
            struct relay_rcpt *r = &m->rcpts[k];
            r->msg = m;
            r->claim = claims[i + k];
            r->claim.member = xstrdup(claims[i + k].member);
            r->claim.id = xstrdup(claims[i + k].id);
        }
        rl->inflight += (unsigned)m->nrcpts;
        fetch(rl, m);
        i = j;
    }
    /* A claim that arrives while stopping is still delivered: the stop waits for it. */
    if (!rl->stopping)
        schedule_tick(rl, n > 0 || woken ? 0 : conf.relay_poll);
}

/* New work on this stage (an enqueue, a routing): claim now rather than at the next poll. */
static void woken_cb(const char *payload, size_t len, void *arg)
{
    (void)payload;
    (void)len;
    struct relay *rl = arg;
    if (rl->stopping)
        return;
    if (rl->claiming)
        rl->woken = true;
    else if (rl->inflight < (unsigned)conf.relay_max_inflight)
        schedule_tick(rl, 0);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct relay *rl = arg;
    if (rl->stopping || rl->claiming)
        return;
    long long room = conf.relay_max_inflight - (long long)rl->inflight;
    if (room <= 0)
        return;     /* outcome_recorded ticks again as room frees up */
    char token[RELAY_TOKEN_LEN];
    snprintf(token, sizeof token, "%s-%llu", rl->node, ++rl->claims);
    if (relay_queue_claim(rl->redis, conf.redis_prefix, rl->role->stage, conf.relay_lease,
                          (unsigned)(room < 100 ? room : 100), token, claimed, rl))
        rl->claiming = true;
    else
        schedule_tick(rl, conf.relay_poll);
}

static void expired_cb(long long n, const char *err, void *arg)
{
    (void)arg;
    if (err != NULL)
        log_msg(LOG_WARN, "lease-expiry-failed", NULL, "%s", err);
    else if (n > 0)
        log_msg(LOG_WARN, "leases-expired", NULL, "%lld recipients came back from a stopped relay", n);
}

static void lease_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct relay *rl = arg;
    if (!relay_queue_expire_leases(rl->redis, conf.redis_prefix, rl->role->stage, expired_cb, rl))
        return;
}

static void renewed_cb(long long n, const char *err, void *arg)
{
    size_t asked = (size_t)(uintptr_t)arg;
    if (err != NULL)
        log_msg(LOG_WARN, "lease-renewal-failed", NULL, "%s", err);
    else if ((size_t)n < asked)
        log_msg(LOG_DEBUG, "leases-renewed", NULL, "%lld of %zu (the rest are recorded or lost)", n, asked);
}

/* Extends the leases of every recipient in hand, so a slow delivery is not taken over. */
static void renew_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct relay *rl = arg;
    const struct relay_claim **batch = xcalloc(rl->inflight ? rl->inflight : 1, sizeof *batch);
    size_t n = 0;
    for (struct relay_msg *m = rl->msgs; m != NULL && n < rl->inflight; m = m->next)
        for (size_t i = 0; i < m->nrcpts && n < rl->inflight; i++)
            batch[n++] = &m->rcpts[i].claim;
    for (size_t i = 0; i < n; i += 500) {
        size_t k = n - i < 500 ? n - i : 500;
        if (!relay_queue_renew(rl->redis, conf.redis_prefix, rl->role->stage, conf.relay_lease,
                               batch + i, k, renewed_cb, (void *)(uintptr_t)k))
            break;
    }
    free(batch);
}

bool relay_start(struct relay *rl)
{
    uint64_t node = relay_random();
    snprintf(rl->node, sizeof rl->node, "%016llx", (unsigned long long)node);
    char err[256];
    rl->schedule = retry_schedule_parse(conf.relay_retry_schedule, err, sizeof err);
    if (rl->schedule == NULL) {
        log_msg(LOG_CRIT, "start-failed", NULL, "relay.retry_schedule: %s", err);
        return false;
    }
    rl->retry.schedule = rl->schedule;
    rl->retry.jitter = (double)conf.relay_retry_jitter / 100.0;
    if (rl->retry.jitter >= 1.0)
        rl->retry.jitter = 0.99;
    rl->retry.max_age_ms = conf.relay_max_age;
    rl->retry.max_attempts = (unsigned)conf.relay_max_attempts;
    rl->tick = evtimer_new(rl->base, tick_cb, rl);
    rl->lease_timer = event_new(rl->base, -1, EV_PERSIST, lease_timer_cb, rl);
    /* Expired leases are looked for a few times per lease, and at least every 10 s. */
    long long every = conf.relay_lease / 4 < 10000 ? conf.relay_lease / 4 : 10000;
    struct timeval tv = { every / 1000, (every % 1000) * 1000 };
    evtimer_add(rl->lease_timer, &tv);
    rl->renew_timer = event_new(rl->base, -1, EV_PERSIST, renew_timer_cb, rl);
    long long renew = conf.relay_lease / 3;
    struct timeval rtv = { renew / 1000, (renew % 1000) * 1000 };
    evtimer_add(rl->renew_timer, &rtv);
    if (rl->wake != NULL) {
        struct buf chan = BUF_INIT;
        relay_stage_key(&chan, conf.redis_prefix, rl->role->stage, STAGE_WAKE);
        redis_subscribe(rl->wake, chan.data, woken_cb, rl);
        buf_release(&chan);
    }
    schedule_tick(rl, 0);
    return true;
}

void relay_stop(struct relay *rl)
{
    rl->stopping = true;
    if (rl->tick != NULL)
        event_free(rl->tick);
    if (rl->lease_timer != NULL)
        event_free(rl->lease_timer);
    rl->tick = rl->lease_timer = NULL;
    /*
     * Leases of the work still in hand keep being renewed until it is recorded, and its outcomes
     * still need the retry schedule: both go only when the process does (relay_main.c teardown).
     */
}
