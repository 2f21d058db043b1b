/*
 * edge_data_in.c - message content: DATA (RFC 5321 §4.1.1.4) and BDAT (RFC 3030), and the
 * durable enqueue that ends a transaction.
 *
 * Content is decoded by edge_data.c straight into the transaction's buffer, after our Received
 * header, so the message is never copied. The size limit, the data timeout and the minimum data
 * rate are enforced while it streams. At the end the message goes to Redis in one transaction and
 * the client hears 250 only when Redis has acknowledged it (appendfsync always); any failure is a
 * 451 4.3.0.
 */
#include "edge.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "conf.h"
#include "mem.h"
#include "queue.h"

/* Gives the transaction its queue id and writes the Received header ahead of the content. */
static void content_begin(struct edge_session *s, enum body_mode mode)
{
    struct edge_tx *tx = s->tx;
    tx->content_started = true;
    queue_id_new(tx->id);
    s->logctx.queue_id = tx->id;
    edge_received_header(s, tx, &tx->content);
    tx->header_len = tx->content.len;
    body_decoder_init(&tx->dec, mode, (size_t)conf.edge_max_line_length);
    s->data_started_ms = clock_wall_ms();
}

void edge_cmd_data(struct edge_session *s, const char *args)
{
    struct edge_tx *tx = s->tx;
    if (*args != '\0') {
        edge_reply_error(s, "501 5.5.4 Syntax: DATA");
        return;
    }
    if (tx == NULL) {
        edge_reply_error(s, "503 5.5.1 Error: need RCPT command");
        return;
    }
    if (tx->bdat) {
        edge_reply_error(s, "503 5.5.1 Error: DATA after BDAT");
        return;
    }
    if (tx->nrcpts == 0) {
        edge_reply_error(s, "554 5.5.1 Error: no valid recipients");
        return;
    }
    content_begin(s, BODY_MODE_DATA);
    s->state = ST_DATA;
    edge_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

void edge_cmd_bdat(struct edge_session *s, const char *args)
{
    unsigned long long size;
    bool last;
    if (!smtp_bdat_parse(args, &size, &last)) {
        /* Without a size the chunk cannot be skipped: its bytes would be read as commands. */
        edge_reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
        edge_session_close(s, "bad BDAT");
        return;
    }
    s->bdat_left = size;
    s->bdat_last = last;
    s->bdat_refusal = NULL;
    struct edge_tx *tx = s->tx;
    if (tx == NULL)
        s->bdat_refusal = "503 5.5.1 Error: need MAIL command";
    else if (tx->nrcpts == 0)
        s->bdat_refusal = "554 5.5.1 Error: no valid recipients";
    else if (tx->content_started && !tx->bdat)
        s->bdat_refusal = "503 5.5.1 Error: BDAT after DATA";
    else if (!tx->content_started) {
        content_begin(s, BODY_MODE_BDAT);
        tx->bdat = true;
    }
    s->state = ST_BDAT;
}

static void enqueue_done(bool ok, const char *err, void *arg)
{
    struct edge_session *s = arg;
    struct edge_tx *tx = s->tx;
    bool alive = edge_session_release(s);
    struct logrec lr;
    if (ok) {
        if (log_begin(&lr, LOG_INFO, "queued", alive ? &s->logctx : NULL)) {
            if (!alive)
                log_str(&lr, "queue_id", tx->id);
            log_str(&lr, "from", tx->mail.path.null ? "" : tx->mail.path.mailbox);
            log_int(&lr, "nrcpt", (long long)tx->nrcpts);
            log_int(&lr, "size", (long long)(tx->content.len - tx->header_len));
            if (!alive)
                log_bool(&lr, "client_gone", true);
            log_end(&lr);
        }
    } else {
        if (log_begin(&lr, LOG_WARN, "enqueue-failed", alive ? &s->logctx : NULL)) {
            if (!alive)
                log_str(&lr, "queue_id", tx->id);
            log_str(&lr, "error", err);
            log_end(&lr);
        }
    }
    if (!alive)
        return;     /* the session's reaper frees the transaction */
    if (ok) {
        s->messages++;
        edge_reply(s, "250 2.0.0 Ok: queued as %s", tx->id);
    } else {
        edge_reply_error(s, "451 4.3.0 Error: queue unavailable, try again later");
    }
    edge_session_tx_reset(s);
    edge_session_resume(s);
}

static const char *body_type_name(enum smtp_body b)
{
    switch (b) {
    case BODY_7BIT: return "7BIT";
    case BODY_8BITMIME: return "8BITMIME";
    case BODY_BINARYMIME: return "BINARYMIME";
    default: return NULL;
    }
}

/* Hands the finished message to the queue; the reply comes from enqueue_done. */
static void enqueue(struct edge_session *s)
{
    struct edge_tx *tx = s->tx;
    struct queue_rcpt *rc = xcalloc(tx->nrcpts, sizeof *rc);
    for (size_t i = 0; i < tx->nrcpts; i++) {
        rc[i].addr = tx->rcpts[i].rcpt.path.mailbox;
        rc[i].orcpt = tx->rcpts[i].rcpt.orcpt;
        rc[i].notify = tx->rcpts[i].rcpt.notify;
    }
    struct queue_msg m = {
        .id = tx->id,
        .sender = tx->mail.path.null ? "" : tx->mail.path.mailbox,
        .envid = tx->mail.envid,
        .ret = tx->mail.ret == DSN_RET_FULL ? "FULL" : tx->mail.ret == DSN_RET_HDRS ? "HDRS" : NULL,
        .body_type = body_type_name(tx->mail.body),
        .smtputf8 = tx->mail.smtputf8,
        /* A person waiting on a submission goes ahead of a backlog of deferred MX mail. */
        .urgent = s->lst->kind != LISTENER_MX || s->auth_user != NULL,
        .client_ip = s->ip,
        .client_helo = s->helo,
        .auth_user = s->auth_user,
        .listener = edge_listener_kind_name(s->lst->kind),
        .session = s->id,
        .received_ms = clock_wall_ms(),
        .rcpts = rc,
        .nrcpts = tx->nrcpts,
        .body = tx->content.data,
        .body_len = tx->content.len,
        .repository = tx->quarantine,
        .repository_reason = tx->quarantine_reason,
    };
    bool sent = queue_enqueue(s->srv->redis, conf.redis_prefix, &m, enqueue_done, s);
    free(rc);
    if (!sent) {
        log_msg(LOG_WARN, "enqueue-failed", &s->logctx, "redis not connected");
        edge_reply_error(s, "451 4.3.0 Error: queue unavailable, try again later");
        edge_session_tx_reset(s);
        return;
    }
    edge_session_wait(s);
}

/* The content is complete: refuse it for a reason found while it streamed, or enqueue it. */
static void content_end(struct edge_session *s)
{
    struct edge_tx *tx = s->tx;
    s->state = ST_CMD;
    const char *refusal = NULL;
    if (tx->too_big)
        refusal = "552 5.3.4 Message size exceeds fixed limit";
    else if ((tx->dec.bare_cr || tx->dec.bare_lf) && conf.edge_bare_newline == BARE_NEWLINE_REJECT)
        refusal = "550 5.5.2 Error: bare <CR> or <LF> in message content";
    else if (tx->dec.long_lines > 0)
        refusal = "550 5.5.2 Error: message has a line longer than the limit of RFC 5321";
    if (refusal != NULL) {
        struct logrec lr;
        if (log_begin(&lr, LOG_INFO, "content-refused", &s->logctx)) {
            log_int(&lr, "bare_cr", (long long)tx->dec.bare_cr);
            log_int(&lr, "bare_lf", (long long)tx->dec.bare_lf);
            log_int(&lr, "long_lines", (long long)tx->dec.long_lines);
            log_int(&lr, "raw_bytes", (long long)tx->dec.raw_bytes);
            log_end(&lr);
        }
        edge_session_tx_reset(s);
        edge_reply_error(s, "%s", refusal);
        return;
    }
    if (tx->dec.bare_cr || tx->dec.bare_lf) {
        struct logrec lr;
        if (log_begin(&lr, LOG_INFO, "bare-newline-normalized", &s->logctx)) {
            log_int(&lr, "bare_cr", (long long)tx->dec.bare_cr);
            log_int(&lr, "bare_lf", (long long)tx->dec.bare_lf);
            log_end(&lr);
        }
    }
    edge_filters_end(s);        /* then edge_content_checked */
}

void edge_content_checked(struct edge_session *s)
{
    enqueue(s);
}

/*
 * DATA deadline and minimum rate; false (session closing) when the client is too slow. As with
 * Postfix's smtpd_min_data_rate, the content may take the idle timeout plus the time its bytes
 * would take at the minimum rate: a slow trickle runs out of time, a large message at a fair rate
 * does not.
 */
static bool data_pace_ok(struct edge_session *s, unsigned long long raw_bytes)
{
    long long elapsed = clock_wall_ms() - s->data_started_ms;
    const char *why = NULL;
    if (elapsed > conf.edge_data_timeout)
        why = "data timeout";
    else if (conf.edge_min_data_rate > 0
             && elapsed > conf.edge_idle_timeout + (long long)(raw_bytes * 1000 / (unsigned long long)conf.edge_min_data_rate))
        why = "data rate too low";
    if (why == NULL)
        return true;
    edge_reply(s, "421 4.4.2 %s Error: %s", s->srv->hostname, why);
    edge_session_close(s, why);
    return false;
}

/* Feeds up to max bytes of buffered input to the decoder; returns the bytes consumed. */
static size_t feed(struct edge_session *s, struct body_decoder *dec, struct buf *out, size_t max)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    struct evbuffer_iovec v[16];
    int nv = evbuffer_peek(in, (ev_ssize_t)max, NULL, v, 16);
    if (nv > 16)
        nv = 16;    /* the rest is fed on the next round */
    size_t total = 0;
    for (int i = 0; i < nv && total < max; i++) {
        size_t n = v[i].iov_len;
        if (n > max - total)
            n = max - total;
        size_t used = body_decoder_feed(dec, v[i].iov_base, n, out);
        total += used;
        if (used < n || dec->done)
            break;
    }
    evbuffer_drain(in, total);
    return total;
}

/* Size accounting after a feed: past the limit, the content is dropped and only parsed on. */
static void check_size(struct edge_tx *tx)
{
    if (!tx->too_big && tx->content.len - tx->header_len > (size_t)conf.edge_message_size_limit) {
        tx->too_big = true;
        buf_release(&tx->content);
    }
}

static bool data_input(struct edge_session *s)
{
    struct edge_tx *tx = s->tx;
    struct evbuffer *in = bufferevent_get_input(s->bev);
    if (evbuffer_get_length(in) == 0)
        return false;
    feed(s, &tx->dec, tx->too_big ? NULL : &tx->content, evbuffer_get_length(in));
    check_size(tx);
    edge_filters_content(s);
    if (tx->dec.done) {
        content_end(s);
        return true;
    }
    if (!data_pace_ok(s, tx->dec.raw_bytes))
        return false;
    return evbuffer_get_length(in) > 0;
}

/* A BDAT chunk has been read in full. */
static void chunk_end(struct edge_session *s)
{
    struct edge_tx *tx = s->tx;
    s->state = ST_CMD;
    if (s->bdat_refusal != NULL) {
        edge_reply_error(s, "%s", s->bdat_refusal);
        return;
    }
    if (s->bdat_last) {
        body_decoder_finish(&tx->dec, tx->too_big ? NULL : &tx->content);
        check_size(tx);
        content_end(s);
        return;
    }
    if (tx->too_big) {
        /* RFC 3030 §2: the transaction has failed; later chunks meet no transaction. */
        edge_session_tx_reset(s);
        edge_reply_error(s, "552 5.3.4 Message size exceeds fixed limit");
        return;
    }
    edge_reply(s, "250 2.0.0 Ok: %llu octets received", (unsigned long long)tx->dec.raw_bytes);
}

static bool bdat_input(struct edge_session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    if (s->bdat_left > 0) {
        size_t have = evbuffer_get_length(in);
        if (have == 0)
            return false;
        size_t take = have < s->bdat_left ? have : (size_t)s->bdat_left;
        if (s->bdat_refusal != NULL) {
            evbuffer_drain(in, take);
        } else {
            struct edge_tx *tx = s->tx;
            take = feed(s, &tx->dec, tx->too_big ? NULL : &tx->content, take);
            check_size(tx);
        }
        s->bdat_left -= take;
        if (s->bdat_left > 0) {
            if (s->tx != NULL && s->bdat_refusal == NULL && !data_pace_ok(s, s->tx->dec.raw_bytes))
                return false;
            return evbuffer_get_length(in) > 0;
        }
    }
    chunk_end(s);
    return true;
}

bool edge_content_input(struct edge_session *s)
{
    return s->state == ST_DATA ? data_input(s) : bdat_input(s);
}
