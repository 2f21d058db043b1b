/*
 * test_workq.c - the worker pool (lib/workq.c): results come back right and on the loop thread,
 * order is kept with one worker, and workq_free drops queued jobs without leaking (run under ASan).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>
#include <event2/event.h>

#include "support/peer.h"
#include "workq.h"

/* One job's input, output, and where its two halves ran. */
struct job {
    struct shared *sh;
    unsigned n;             /* input */
    uint64_t result;        /* written by work() */
    pthread_t work_thread;
    pthread_t done_thread;
    int work_runs, done_runs;
    int done_seq;           /* position among done() calls */
};

struct shared {
    struct event_base *base;
    struct workq *q;
    int ndone;
    int expect;             /* loop stops after this many done() calls */
    pthread_mutex_t mu;     /* guards started, released */
    pthread_cond_t cv;
    int started;
    bool released;
};

/* Sum of the first n squares, the slow way, so the work is real. */
static uint64_t sum_squares(unsigned n)
{
    uint64_t s = 0;
    for (uint64_t i = 1; i <= n; i++)
        s += i * i;
    return s;
}

static void job_work(void *p)
{
    struct job *j = p;
    j->work_thread = pthread_self();
    j->work_runs++;
    j->result = sum_squares(j->n);
}

static void job_done(void *p)
{
    struct job *j = p;
    j->done_thread = pthread_self();
    j->done_runs++;
    j->done_seq = j->sh->ndone++;
    if (j->sh->ndone == j->sh->expect)
        event_base_loopbreak(j->sh->base);
}

static struct job *make_jobs(struct shared *sh, int n)
{
    struct job *jobs = calloc((size_t)n, sizeof *jobs);
    assert_non_null(jobs);
    for (int i = 0; i < n; i++) {
        jobs[i].sh = sh;
        jobs[i].n = 1000 + (unsigned)i * 37;
        jobs[i].done_seq = -1;
    }
    return jobs;
}

/* Runs the loop until sh->expect done() calls happened; fails after 30 s. */
static void run_loop(struct shared *sh)
{
    struct timeval limit = { 30, 0 };
    event_base_loopexit(sh->base, &limit);
    assert_int_equal(event_base_dispatch(sh->base), 0);
    assert_int_equal(sh->ndone, sh->expect);
}

static void test_many_jobs_four_threads(void **state)
{
    (void)state;
    const int n = 1000;
    struct shared sh = { .base = event_base_new(), .expect = n };
    assert_non_null(sh.base);
    sh.q = workq_new(sh.base, 4);
    assert_non_null(sh.q);
    struct job *jobs = make_jobs(&sh, n);
    for (int i = 0; i < n; i++)
        workq_submit(sh.q, job_work, job_done, &jobs[i]);
    run_loop(&sh);

    pthread_t loop_thread = pthread_self();
    bool seen[1000] = { false };
    for (int i = 0; i < n; i++) {
        uint64_t m = jobs[i].n;
        assert_int_equal(jobs[i].result, m * (m + 1) * (2 * m + 1) / 6);
        assert_int_equal(jobs[i].work_runs, 1);
        assert_int_equal(jobs[i].done_runs, 1);
        assert_true(pthread_equal(jobs[i].done_thread, loop_thread));
        assert_false(pthread_equal(jobs[i].work_thread, loop_thread));
        assert_in_range(jobs[i].done_seq, 0, n - 1);
        assert_false(seen[jobs[i].done_seq]);
        seen[jobs[i].done_seq] = true;
    }
    workq_free(sh.q);
    event_base_free(sh.base);
    free(jobs);
}

/* With one worker, done() calls come back in submission order. */
static void test_one_thread_keeps_order(void **state)
{
    (void)state;
    const int n = 200;
    struct shared sh = { .base = event_base_new(), .expect = n };
    sh.q = workq_new(sh.base, 1);
    assert_non_null(sh.q);
    struct job *jobs = make_jobs(&sh, n);
    for (int i = 0; i < n; i++)
        workq_submit(sh.q, job_work, job_done, &jobs[i]);
    run_loop(&sh);
    for (int i = 0; i < n; i++)
        assert_int_equal(jobs[i].done_seq, i);
    workq_free(sh.q);
    event_base_free(sh.base);
    free(jobs);
}

/* A done() that submits the next job: the chain runs to its end on the loop thread. */
static void chain_done(void *p)
{
    struct job *j = p;
    job_done(p);
    if (j->sh->ndone < j->sh->expect)
        workq_submit(j->sh->q, job_work, chain_done, j + 1);
}

static void test_submit_from_done(void **state)
{
    (void)state;
    const int n = 50;
    struct shared sh = { .base = event_base_new(), .expect = n };
    sh.q = workq_new(sh.base, 3);
    assert_non_null(sh.q);
    struct job *jobs = make_jobs(&sh, n);
    workq_submit(sh.q, job_work, chain_done, &jobs[0]);
    run_loop(&sh);
    for (int i = 0; i < n; i++) {
        assert_int_equal(jobs[i].done_seq, i);
        assert_true(pthread_equal(jobs[i].done_thread, pthread_self()));
    }
    workq_free(sh.q);
    event_base_free(sh.base);
    free(jobs);
}

/* Blocks until the test releases it, so the test knows exactly which jobs were running. */
static void gated_work(void *p)
{
    struct job *j = p;
    pthread_mutex_lock(&j->sh->mu);
    j->sh->started++;
    pthread_cond_broadcast(&j->sh->cv);
    while (!j->sh->released)
        pthread_cond_wait(&j->sh->cv, &j->sh->mu);
    pthread_mutex_unlock(&j->sh->mu);
    job_work(p);
}

static void *release_later(void *p)
{
    struct shared *sh = p;
    tp_sleep_ms(200);
    pthread_mutex_lock(&sh->mu);
    sh->released = true;
    pthread_cond_broadcast(&sh->cv);
    pthread_mutex_unlock(&sh->mu);
    return NULL;
}

/*
 * workq_free while two jobs run and 98 wait: the two finish and get their done() (on this
 * thread, inside workq_free), the 98 never run and never get a done(), and nothing leaks.
 */
static void test_free_with_queued_jobs(void **state)
{
    (void)state;
    const int n = 100;
    struct shared sh = { .base = event_base_new(), .expect = -1 };
    pthread_mutex_init(&sh.mu, NULL);
    pthread_cond_init(&sh.cv, NULL);
    sh.q = workq_new(sh.base, 2);
    assert_non_null(sh.q);
    struct job *jobs = make_jobs(&sh, n);
    for (int i = 0; i < n; i++)
        workq_submit(sh.q, gated_work, job_done, &jobs[i]);

    pthread_mutex_lock(&sh.mu);
    while (sh.started < 2)
        pthread_cond_wait(&sh.cv, &sh.mu);
    pthread_mutex_unlock(&sh.mu);
    pthread_t releaser;
    assert_int_equal(pthread_create(&releaser, NULL, release_later, &sh), 0);
    workq_free(sh.q);      /* returns once the two running jobs are done */
    assert_int_equal(pthread_join(releaser, NULL), 0);

    assert_int_equal(sh.started, 2);
    assert_int_equal(sh.ndone, 2);
    int ran = 0;
    for (int i = 0; i < n; i++) {
        assert_int_equal(jobs[i].work_runs, jobs[i].done_runs);
        if (jobs[i].work_runs) {
            ran++;
            assert_true(i < 2);     /* FIFO: the first two were taken */
            assert_true(pthread_equal(jobs[i].done_thread, pthread_self()));
            uint64_t m = jobs[i].n;
            assert_int_equal(jobs[i].result, m * (m + 1) * (2 * m + 1) / 6);
        }
    }
    assert_int_equal(ran, 2);

    /* the loop has nothing left to deliver for the freed queue */
    assert_int_equal(event_base_loop(sh.base, EVLOOP_NONBLOCK), 1);
    event_base_free(sh.base);
    pthread_cond_destroy(&sh.cv);
    pthread_mutex_destroy(&sh.mu);
    free(jobs);
}

static void test_free_idle_and_null(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct workq *q = workq_new(base, 0);   /* fewer than one thread means one */
    assert_non_null(q);
    workq_free(q);
    workq_free(NULL);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_jobs_four_threads),
        cmocka_unit_test(test_one_thread_keeps_order),
        cmocka_unit_test(test_submit_from_done),
        cmocka_unit_test(test_free_with_queued_jobs),
        cmocka_unit_test(test_free_idle_and_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
