/*
 * milter_loop.c - the milter role's one libevent loop thread, and the hand-off of check requests
 * from libmilter's threads to it (milter_role.h).
 *
 * The loop thread owns the c-ares resolver, the DNSBL site list, the SPF checker (whose libspf2
 * work runs on its own worker threads, done() back on this loop) and the DKIM filter; nothing
 * else touches them. A libmilter thread puts a request on a locked FIFO and activates the wake
 * event (event_active() from another thread: the base is made thread-aware with
 * evthread_use_pthreads()). The loop takes the whole FIFO in order, starts each check, and its
 * done callback fills in the answer and signals the request's condition variable.
 *
 * Ownership of a request: a waited request belongs to its waiter again once the answer is in; a
 * waiter that gives up (the bound passed) marks it abandoned under the lock and the loop frees it
 * when the answer comes. Requests nobody waits for (DKIM start, feed, cancel) are freed by the
 * loop once applied. A DKIM handle is touched by the loop only, so feeding needs no answer; the
 * FIFO keeps start, feeds and finish in order.
 *
 * Bounds (none hangs a libmilter thread): DNSBL, dns.timeout on the loop (finish_now) plus
 * WAIT_MARGIN_MS; SPF, each identity within dns.timeout x DNS_TRIES inside libspf2, so twice that
 * plus the margin; DKIM finish, the key lookup's dns.timeout x DNS_TRIES plus the margin.
 *
 * Stopping: milter_loop_free() closes the FIFO, then the loop thread itself applies what was
 * queued and frees the filters (pending checks answer as cancelled), and the base goes last.
 */
#include "milter_role.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "conf.h"
#include "dns.h"
#include "filter_dkim.h"
#include "filter_dnsbl.h"
#include "log.h"
#include "mem.h"
#include "workq.h"

#define DNS_TRIES 2
#define SPF_THREADS 4
#define WAIT_MARGIN_MS 2000

enum req_kind { REQ_DNSBL, REQ_SPF, REQ_DKIM_START, REQ_DKIM_FEED, REQ_DKIM_FINISH, REQ_DKIM_CANCEL };

struct milter_dkim {
    struct milter_dkim *prev, *next;    /* ml->dkims: started, neither finished nor cancelled */
    struct dkim_verify *v;              /* NULL: no DKIM filter, or the loop was stopping */
};

/* One request from a libmilter thread. */
struct req {
    struct req *next;                   /* the FIFO */
    struct req *live_prev, *live_next;  /* ml->live: check started, answer pending */
    bool in_live;
    struct milter_loop *ml;
    enum req_kind kind;
    bool waited;                        /* a thread waits on cond for the answer */
    bool done;                          /* the answer is in (under ml->mu) */
    bool abandoned;                     /* the waiter gave up: the loop frees it (under ml->mu) */
    pthread_cond_t cond;
    /* what to check */
    struct sockaddr_storage client;
    char *helo, *sender, *queue_id;
    struct milter_dkim *dkim;
    struct buf data;                    /* DKIM bytes to feed */
    /* loop side */
    struct dnsbl_check *dnsbl;
    struct event *timer;                /* the DNSBL check's dns.timeout */
    /* answers */
    struct milter_dnsbl_answer dnsbl_ans;
    struct milter_spf_answer spf_ans;
    struct buf resinfo;                 /* DKIM */
};

struct milter_loop {
    struct event_base *base;
    struct event *wake;                 /* activated by submitters: take the FIFO */
    struct event *stop;                 /* activated by milter_loop_free() */
    pthread_t thread;
    bool running;                       /* the thread was started */
    pthread_mutex_t mu;                 /* head, tail, closed, every request's done/abandoned */
    struct req *head, *tail;
    bool closed;
    /* loop thread only */
    struct req *live;
    struct milter_dkim *dkims;
    struct dns *dns;
    struct dnsbl_sites *sites;
    struct workq *wq;
    struct spf_checker *spf;
    struct dkim_filter *dkim;
};

static struct req *req_new(struct milter_loop *ml, enum req_kind kind)
{
    struct req *r = xcalloc(1, sizeof *r);
    r->ml = ml;
    r->kind = kind;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &attr);
    pthread_condattr_destroy(&attr);
    return r;
}

/* Frees the request (not its DKIM handle, which lives on the loop). NULL is a no-op. */
static void req_free(struct req *r)
{
    if (r == NULL)
        return;
    pthread_cond_destroy(&r->cond);
    free(r->helo);
    free(r->sender);
    free(r->queue_id);
    buf_release(&r->data);
    buf_release(&r->resinfo);
    milter_spf_answer_clear(&r->spf_ans);
    free(r);
}

static void live_add(struct req *r)
{
    struct milter_loop *ml = r->ml;
    r->live_prev = NULL;
    r->live_next = ml->live;
    if (ml->live != NULL)
        ml->live->live_prev = r;
    ml->live = r;
    r->in_live = true;
}

static void live_remove(struct req *r)
{
    if (!r->in_live)
        return;
    if (r->live_prev != NULL)
        r->live_prev->live_next = r->live_next;
    else
        r->ml->live = r->live_next;
    if (r->live_next != NULL)
        r->live_next->live_prev = r->live_prev;
    r->in_live = false;
}

/* The answer is in (loop side): wake the waiter, or free a request nobody waits for any more. */
static void complete(struct req *r)
{
    struct milter_loop *ml = r->ml;
    live_remove(r);
    pthread_mutex_lock(&ml->mu);
    if (r->waited && !r->abandoned) {
        r->done = true;
        pthread_cond_signal(&r->cond);
        pthread_mutex_unlock(&ml->mu);
        return;
    }
    pthread_mutex_unlock(&ml->mu);
    req_free(r);
}

/*
 * Queues r for the loop. wait_ms < 0: nobody waits (the loop frees r; true). Else waits up to
 * wait_ms: true when the answer came (r is the caller's again), false when not (r then belongs to
 * the loop, or was freed at once because the loop is stopping).
 */
static bool submit(struct milter_loop *ml, struct req *r, long long wait_ms)
{
    pthread_mutex_lock(&ml->mu);
    if (ml->closed) {
        pthread_mutex_unlock(&ml->mu);
        if (r->kind == REQ_DKIM_FINISH || r->kind == REQ_DKIM_CANCEL)
            free(r->dkim);      /* its last request (no callback runs while the loop stops) */
        req_free(r);
        return false;
    }
    r->waited = wait_ms >= 0;
    if (ml->tail != NULL)
        ml->tail->next = r;
    else
        ml->head = r;
    ml->tail = r;
    pthread_mutex_unlock(&ml->mu);
    event_active(ml->wake, EV_READ, 0);
    if (wait_ms < 0)
        return true;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += wait_ms / 1000;
    deadline.tv_nsec += (wait_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&ml->mu);
    while (!r->done)
        if (pthread_cond_timedwait(&r->cond, &ml->mu, &deadline) == ETIMEDOUT)
            break;
    bool ok = r->done;
    if (!ok)
        r->abandoned = true;
    pthread_mutex_unlock(&ml->mu);
    return ok;
}

/* ---- loop side: starting checks and their done callbacks ---- */

static void dnsbl_done(const struct dnsbl_verdict *v, void *arg)
{
    struct req *r = arg;
    r->dnsbl = NULL;
    if (r->timer != NULL) {
        event_free(r->timer);
        r->timer = NULL;
    }
    r->dnsbl_ans.score = v->score;
    r->dnsbl_ans.listed = v->listed;
    r->dnsbl_ans.errors = v->errors;
    r->dnsbl_ans.timeouts = v->timeouts;
    snprintf(r->dnsbl_ans.reasons, sizeof r->dnsbl_ans.reasons, "%s", buf_cstr(&v->reasons));
    complete(r);
}

/* dns.timeout passed: the check ends with what has answered (dnsbl_done runs inside). */
static void dnsbl_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct req *r = arg;
    struct event *timer = r->timer;
    r->timer = NULL;
    dnsbl_check_finish_now(r->dnsbl);
    event_free(timer);
}

static void spf_done(const struct spf_answer *a, void *arg)
{
    struct req *r = arg;
    r->spf_ans.helo = a->helo;
    r->spf_ans.mailfrom = a->mailfrom;
    r->spf_ans.explanation = a->explanation != NULL ? xstrdup(a->explanation) : NULL;
    r->spf_ans.mailfrom_domain = xstrdup(a->mailfrom_domain);
    complete(r);
}

static void dkim_done(const struct dkim_results *res, void *arg)
{
    struct req *r = arg;
    dkim_auth_results(res, &r->resinfo);
    complete(r);
}

static void dkim_unlink(struct milter_loop *ml, struct milter_dkim *d)
{
    if (d->prev != NULL)
        d->prev->next = d->next;
    else if (ml->dkims == d)
        ml->dkims = d->next;
    if (d->next != NULL)
        d->next->prev = d->prev;
    d->prev = d->next = NULL;
}

/* Applies one request from the FIFO, in order. */
static void start(struct milter_loop *ml, struct req *r)
{
    struct milter_dkim *d = r->dkim;
    switch (r->kind) {
    case REQ_DNSBL:
        if (ml->sites == NULL || (r->client.ss_family != AF_INET && r->client.ss_family != AF_INET6)) {
            complete(r);
            return;
        }
        live_add(r);
        r->timer = evtimer_new(ml->base, dnsbl_timeout_cb, r);
        struct timeval tv = { conf.dns_timeout / 1000, (conf.dns_timeout % 1000) * 1000 };
        evtimer_add(r->timer, &tv);
        r->dnsbl = dnsbl_check_start(ml->dns, ml->sites, (const struct sockaddr *)&r->client,
                                     dnsbl_done, r);
        return;
    case REQ_SPF:
        if (ml->spf == NULL) {
            r->spf_ans.helo = r->spf_ans.mailfrom = SPF_RES_NONE;
            complete(r);
            return;
        }
        live_add(r);
        spf_check(ml->spf, (const struct sockaddr *)&r->client, r->helo, r->sender, spf_done, r);
        return;
    case REQ_DKIM_START:
        if (ml->dkim != NULL) {
            d->v = dkim_verify_start(ml->dkim, r->queue_id);
            d->next = ml->dkims;
            if (ml->dkims != NULL)
                ml->dkims->prev = d;
            ml->dkims = d;
            dkim_verify_feed(d->v, r->data.data, r->data.len);
        }
        break;
    case REQ_DKIM_FEED:
        if (d->v != NULL && r->data.len > 0)
            dkim_verify_feed(d->v, r->data.data, r->data.len);
        break;
    case REQ_DKIM_FINISH:
        r->dkim = NULL;
        if (d->v == NULL) {
            buf_puts(&r->resinfo, "dkim=temperror");
            free(d);
            complete(r);
            return;
        }
        dkim_unlink(ml, d);
        live_add(r);
        dkim_verify_finish(d->v, dkim_done, r);
        free(d);
        return;
    case REQ_DKIM_CANCEL:
        if (d->v != NULL) {
            dkim_unlink(ml, d);
            dkim_verify_cancel(d->v);
        }
        free(d);
        break;
    }
    req_free(r);
}

/* Takes the whole FIFO under the lock, then applies it without the lock held. */
static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct milter_loop *ml = arg;
    pthread_mutex_lock(&ml->mu);
    struct req *r = ml->head;
    ml->head = ml->tail = NULL;
    pthread_mutex_unlock(&ml->mu);
    while (r != NULL) {
        struct req *next = r->next;
        r->next = NULL;
        start(ml, r);
        r = next;
    }
}

/*
 * Frees the filters in an order that answers every pending check: the SPF workers first (running
 * jobs finish, queued ones are dropped), DKIM verifications still being fed, then the resolver
 * (pending DNSBL checks and DKIM key lookups answer as cancelled). Requests whose check was
 * dropped are answered last, as they are.
 */
static void free_filters(struct milter_loop *ml)
{
    workq_free(ml->wq);
    ml->wq = NULL;
    spf_checker_free(ml->spf);
    ml->spf = NULL;
    while (ml->dkims != NULL) {
        struct milter_dkim *d = ml->dkims;
        dkim_unlink(ml, d);
        dkim_verify_cancel(d->v);
        d->v = NULL;        /* the handle itself is freed by its finish or cancel request */
    }
    dns_free(ml->dns);
    ml->dns = NULL;
    while (ml->live != NULL) {
        struct req *r = ml->live;
        if (r->timer != NULL) {
            event_free(r->timer);
            r->timer = NULL;
        }
        complete(r);
    }
    dkim_filter_free(ml->dkim);
    ml->dkim = NULL;
    dnsbl_sites_free(ml->sites);
    ml->sites = NULL;
}

/* milter_loop_free() asked: apply what is queued, free the filters, leave the loop. */
static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    wake_cb(fd, what, arg);
    struct milter_loop *ml = arg;
    free_filters(ml);
    event_base_loopbreak(ml->base);
}

static void *loop_main(void *arg)
{
    struct milter_loop *ml = arg;
    event_base_loop(ml->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static long long spf_timeout_ms(void)
{
    return conf.dns_timeout * DNS_TRIES;
}

long long milter_loop_max_wait_ms(void)
{
    return 2 * spf_timeout_ms() + WAIT_MARGIN_MS;
}

struct milter_loop *milter_loop_new(const char *hostname, struct buf *err)
{
    if (evthread_use_pthreads() != 0) {
        buf_puts(err, "libevent cannot use pthreads");
        return NULL;
    }
    struct milter_loop *ml = xcalloc(1, sizeof *ml);
    pthread_mutex_init(&ml->mu, NULL);
    ml->base = event_base_new();
    if (ml->base == NULL) {
        buf_puts(err, "cannot create the event loop");
        goto fail;
    }
    ml->wake = event_new(ml->base, -1, 0, wake_cb, ml);
    ml->stop = event_new(ml->base, -1, 0, stop_cb, ml);
    ml->dns = dns_new(ml->base, &conf.dns_servers, conf.dns_timeout, DNS_TRIES, err);
    if (ml->dns == NULL)
        goto fail;
    if (conf.screen_dnsbl_sites.n > 0) {
        ml->sites = dnsbl_sites_parse(&conf.screen_dnsbl_sites, err);
        if (ml->sites == NULL)
            goto fail;
    }
    if (conf.filters_spf != SPF_POLICY_OFF) {
        ml->wq = workq_new(ml->base, SPF_THREADS);
        if (ml->wq == NULL) {
            buf_puts(err, "cannot start the SPF worker threads");
            goto fail;
        }
        ml->spf = spf_checker_new(ml->wq, &conf.dns_servers, hostname, spf_timeout_ms(), err);
        if (ml->spf == NULL)
            goto fail;
    }
    if (conf.filters_dkim_verify) {
        ml->dkim = dkim_filter_new(ml->base, ml->dns, err);
        if (ml->dkim == NULL)
            goto fail;
    }
    int rc = pthread_create(&ml->thread, NULL, loop_main, ml);
    if (rc != 0) {
        buf_printf(err, "cannot start the loop thread: %s", strerror(rc));
        goto fail;
    }
    ml->running = true;
    return ml;
fail:
    milter_loop_free(ml);
    return NULL;
}

void milter_loop_free(struct milter_loop *ml)
{
    if (ml == NULL)
        return;
    pthread_mutex_lock(&ml->mu);
    ml->closed = true;
    pthread_mutex_unlock(&ml->mu);
    if (ml->running) {
        event_active(ml->stop, EV_READ, 0);
        pthread_join(ml->thread, NULL);
    } else {
        free_filters(ml);
    }
    if (ml->wake != NULL)
        event_free(ml->wake);
    if (ml->stop != NULL)
        event_free(ml->stop);
    if (ml->base != NULL)
        event_base_free(ml->base);
    pthread_mutex_destroy(&ml->mu);
    free(ml);
}

bool milter_loop_has_dnsbl(const struct milter_loop *ml)
{
    return ml->sites != NULL;
}

bool milter_loop_has_spf(const struct milter_loop *ml)
{
    return ml->spf != NULL;
}

bool milter_loop_has_dkim(const struct milter_loop *ml)
{
    return ml->dkim != NULL;
}

/* Copies an AF_INET or AF_INET6 address; anything else is left AF_UNSPEC (checked as nothing). */
static void copy_client(struct sockaddr_storage *to, const struct sockaddr *sa)
{
    memset(to, 0, sizeof *to);
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET)
        memcpy(to, sa, sizeof(struct sockaddr_in));
    else if (sa->sa_family == AF_INET6)
        memcpy(to, sa, sizeof(struct sockaddr_in6));
}

bool milter_loop_dnsbl(struct milter_loop *ml, const struct sockaddr *client,
                       struct milter_dnsbl_answer *out)
{
    memset(out, 0, sizeof *out);
    struct req *r = req_new(ml, REQ_DNSBL);
    copy_client(&r->client, client);
    if (!submit(ml, r, conf.dns_timeout + WAIT_MARGIN_MS))
        return false;
    *out = r->dnsbl_ans;
    req_free(r);
    return true;
}

void milter_spf_answer_clear(struct milter_spf_answer *a)
{
    free(a->explanation);
    free(a->mailfrom_domain);
    a->explanation = a->mailfrom_domain = NULL;
}

/* The domain the MAIL FROM identity is about: the sender's domain, or helo for a null sender. */
static char *mailfrom_domain(const char *helo, const char *sender)
{
    const char *at = strrchr(sender, '@');
    return xstrdup(sender[0] == '\0' ? helo : at != NULL ? at + 1 : sender);
}

bool milter_loop_spf(struct milter_loop *ml, const struct sockaddr *client, const char *helo,
                     const char *sender, struct milter_spf_answer *out)
{
    memset(out, 0, sizeof *out);
    struct req *r = req_new(ml, REQ_SPF);
    copy_client(&r->client, client);
    r->helo = xstrdup(helo);
    r->sender = xstrdup(sender);
    if (!submit(ml, r, milter_loop_max_wait_ms())) {
        out->helo = out->mailfrom = SPF_RES_TEMPERROR;
        out->mailfrom_domain = mailfrom_domain(helo, sender);
        return false;
    }
    *out = r->spf_ans;
    memset(&r->spf_ans, 0, sizeof r->spf_ans);
    if (out->mailfrom_domain == NULL)
        out->mailfrom_domain = mailfrom_domain(helo, sender);
    req_free(r);
    return true;
}

struct milter_dkim *milter_loop_dkim_start(struct milter_loop *ml, const char *queue_id,
                                           const char *header, size_t len)
{
    struct milter_dkim *d = xcalloc(1, sizeof *d);
    struct req *r = req_new(ml, REQ_DKIM_START);
    r->dkim = d;
    r->queue_id = xstrdup(queue_id != NULL ? queue_id : "");
    buf_append(&r->data, header, len);
    submit(ml, r, -1);
    return d;
}

void milter_loop_dkim_feed(struct milter_loop *ml, struct milter_dkim *d, const char *data,
                           size_t len)
{
    struct req *r = req_new(ml, REQ_DKIM_FEED);
    r->dkim = d;
    buf_append(&r->data, data, len);
    submit(ml, r, -1);
}

bool milter_loop_dkim_finish(struct milter_loop *ml, struct milter_dkim *d, struct buf *out)
{
    struct req *r = req_new(ml, REQ_DKIM_FINISH);
    r->dkim = d;
    if (!submit(ml, r, conf.dns_timeout * DNS_TRIES + WAIT_MARGIN_MS)) {
        buf_puts(out, "dkim=temperror");
        return false;
    }
    buf_append(out, r->resinfo.data, r->resinfo.len);
    req_free(r);
    return true;
}

void milter_loop_dkim_cancel(struct milter_loop *ml, struct milter_dkim *d)
{
    if (d == NULL)
        return;
    struct req *r = req_new(ml, REQ_DKIM_CANCEL);
    r->dkim = d;
    submit(ml, r, -1);
}
