/*
 * workq.c - worker threads for blocking calls, with results handed back to the event loop.
 *
 * Owns its threads, the job queue (FIFO, taken by whichever worker is free), the list of finished
 * jobs, and an eventfd watched by an event on the loop's event_base. A worker that finishes a job
 * appends it to the done list and, when the list was empty, bumps the eventfd; the event's
 * callback then runs done() for every finished job on the loop thread. libevent itself is only
 * touched from the loop thread, so the base needs no locking.
 *
 * Rules for callers: workq_new, workq_submit and workq_free are called on the loop thread;
 * workq_free is not called from inside a done() callback. Every job whose work() ran gets its
 * done(), including jobs that finish while workq_free waits for them (their done() runs inside
 * workq_free). Jobs still queued when workq_free is called never run and their done() is never
 * called: their arguments stay the caller's to free. Failing to make threads or the eventfd is an
 * environment failure: workq_new logs it and returns NULL. Out of memory aborts (mem.h).
 */
#include "workq.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "mem.h"

struct workq_job {
    struct workq_job *next;
    workq_fn *work;             /* runs on a worker thread */
    workq_fn *done;             /* runs on the loop thread afterwards */
    void *arg;
};

struct workq {
    struct event_base *base;    /* the loop done() runs on; not owned */
    struct event *wake_ev;      /* read event on wake_fd */
    int wake_fd;                /* eventfd bumped when the done list becomes non-empty */

    pthread_mutex_t mu;         /* guards everything below */
    pthread_cond_t cv;          /* signalled when a job is queued or stopping is set */
    struct workq_job *q_head, *q_tail;       /* waiting to run */
    struct workq_job *done_head, *done_tail; /* work() finished, done() not yet called */
    bool stopping;              /* workq_free started: workers exit instead of taking jobs */

    pthread_t *threads;
    int nthreads;               /* threads actually started */
};

static void lock(pthread_mutex_t *mu)
{
    int rc = pthread_mutex_lock(mu);
    if (rc != 0)
        log_panic("workq: pthread_mutex_lock: %s", strerror(rc));
}

static void unlock(pthread_mutex_t *mu)
{
    int rc = pthread_mutex_unlock(mu);
    if (rc != 0)
        log_panic("workq: pthread_mutex_unlock: %s", strerror(rc));
}

/* Wakes the loop; a full counter or EAGAIN still leaves the fd readable, which is all we need. */
static void wake_loop(struct workq *q)
{
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(q->wake_fd, &one, sizeof one);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN)
        log_panic("workq: write to eventfd: %s", strerror(errno));
}

static void *worker_main(void *arg)
{
    struct workq *q = arg;
    for (;;) {
        lock(&q->mu);
        while (!q->stopping && q->q_head == NULL)
            pthread_cond_wait(&q->cv, &q->mu);
        if (q->stopping) {
            unlock(&q->mu);
            return NULL;
        }
        struct workq_job *job = q->q_head;
        q->q_head = job->next;
        if (q->q_head == NULL)
            q->q_tail = NULL;
        unlock(&q->mu);

        job->work(job->arg);

        job->next = NULL;
        lock(&q->mu);
        bool was_empty = q->done_head == NULL;
        if (was_empty)
            q->done_head = job;
        else
            q->done_tail->next = job;
        q->done_tail = job;
        unlock(&q->mu);
        /* one wake-up per empty-to-non-empty change suffices: the loop drains the whole list */
        if (was_empty)
            wake_loop(q);
    }
}

/* Takes the whole done list and runs each done() in completion order, on the calling thread. */
static void run_done(struct workq *q)
{
    lock(&q->mu);
    struct workq_job *job = q->done_head;
    q->done_head = q->done_tail = NULL;
    unlock(&q->mu);
    while (job != NULL) {
        struct workq_job *next = job->next;
        job->done(job->arg);
        free(job);
        job = next;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    /*
     * Reset the counter before taking the list: a worker that appends after this read bumps the
     * counter again, so no finished job can sit on the list without a pending wake-up.
     */
    uint64_t count;
    ssize_t n;
    do {
        n = read(fd, &count, sizeof count);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN)
        log_panic("workq: read from eventfd: %s", strerror(errno));
    run_done(arg);
}

/* Stops and joins the started threads, then frees q; done() is run for finished jobs. */
static void shutdown_and_free(struct workq *q)
{
    lock(&q->mu);
    q->stopping = true;
    pthread_cond_broadcast(&q->cv);
    unlock(&q->mu);
    for (int i = 0; i < q->nthreads; i++) {
        int rc = pthread_join(q->threads[i], NULL);
        if (rc != 0)
            log_panic("workq: pthread_join: %s", strerror(rc));
    }

    /* no worker is left, so the lists are ours; done() may still submit, which lands in q_head */
    run_done(q);
    struct workq_job *job = q->q_head;
    while (job != NULL) {
        struct workq_job *next = job->next;
        free(job);
        job = next;
    }

    if (q->wake_ev != NULL)
        event_free(q->wake_ev);
    if (q->wake_fd >= 0)
        close(q->wake_fd);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q->threads);
    free(q);
}

struct workq *workq_new(struct event_base *base, int nthreads)
{
    if (nthreads < 1)
        nthreads = 1;

    struct workq *q = xcalloc(1, sizeof *q);
    q->base = base;
    q->wake_fd = -1;
    q->threads = xcalloc((size_t)nthreads, sizeof *q->threads);
    int rc = pthread_mutex_init(&q->mu, NULL);
    if (rc == 0) {
        rc = pthread_cond_init(&q->cv, NULL);
        if (rc != 0)
            pthread_mutex_destroy(&q->mu);
    }
    if (rc != 0) {
        log_msg(LOG_ERR, "workq_init", NULL, "pthread mutex/cond init: %s", strerror(rc));
        free(q->threads);
        free(q);
        return NULL;
    }

    q->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->wake_fd < 0) {
        log_msg(LOG_ERR, "workq_init", NULL, "eventfd: %s", strerror(errno));
        shutdown_and_free(q);
        return NULL;
    }
    q->wake_ev = event_new(base, q->wake_fd, EV_READ | EV_PERSIST, on_wake, q);
    if (q->wake_ev == NULL || event_add(q->wake_ev, NULL) != 0) {
        log_msg(LOG_ERR, "workq_init", NULL, "cannot add the eventfd to the event loop");
        shutdown_and_free(q);
        return NULL;
    }

    /* signals belong to the loop thread (libevent's signal events), so workers block them all */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 0; i < nthreads; i++) {
        rc = pthread_create(&q->threads[i], NULL, worker_main, q);
        if (rc != 0)
            break;
        q->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        log_msg(LOG_ERR, "workq_init", NULL, "pthread_create (thread %d of %d): %s", q->nthreads + 1,
                nthreads, strerror(rc));
        shutdown_and_free(q);
        return NULL;
    }
    return q;
}

void workq_free(struct workq *q)
{
    if (q == NULL)
        return;
    shutdown_and_free(q);
}

void workq_submit(struct workq *q, workq_fn *work, workq_fn *done, void *arg)
{
    struct workq_job *job = xmalloc(sizeof *job);
    job->next = NULL;
    job->work = work;
    job->done = done;
    job->arg = arg;

    lock(&q->mu);
    if (q->q_tail == NULL)
        q->q_head = job;
    else
        q->q_tail->next = job;
    q->q_tail = job;
    pthread_cond_signal(&q->cv);
    unlock(&q->mu);
}
