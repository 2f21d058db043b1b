/*
 * workq.h - a small pool of worker threads for work that would block the event loop
 * (crypt(3) password checks now; libspf2 queries later).
 *
 * work() runs on a worker thread and must touch nothing but its argument; done() then runs on the
 * loop thread (posted back through a pipe-driven event), where the result is used. Jobs run in
 * submission order per worker; there is no cancellation: a caller whose owner went away marks its
 * argument dead and done() frees it.
 */
#ifndef MXG_WORKQ_H
#define MXG_WORKQ_H

struct event_base;
struct workq;

typedef void workq_fn(void *arg);

/* NULL (logged) when the threads or the wake-up fd cannot be made. */
struct workq *workq_new(struct event_base *base, int nthreads);
/*
 * Waits for running jobs (their done() runs before it returns), drops queued ones (their done()
 * is not called), joins the threads. Not to be called from inside a done().
 */
void workq_free(struct workq *q);
void workq_submit(struct workq *q, workq_fn *work, workq_fn *done, void *arg);

#endif
