/*
 * loop.h - the event loop every long-running role runs on.
 */
#ifndef MXG_LOOP_H
#define MXG_LOOP_H

#include <event2/event.h>

/*
 * A new libevent base (NULL on failure). On epoll it batches interest changes: an event added
 * and removed again before the loop next waits costs no epoll_ctl call at all. mxgate never
 * dup()s a socket it watches, which that mode requires.
 */
struct event_base *loop_base_new(void);

#endif
