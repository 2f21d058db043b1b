/*
 * clock.h - the two clocks mxgate uses, in milliseconds: the wall clock (timestamps that go into
 * Redis and headers, compared across nodes) and the monotonic clock (durations and deadlines
 * inside one process, immune to clock steps).
 */
#ifndef MXG_CLOCK_H
#define MXG_CLOCK_H

long long clock_wall_ms(void);
long long clock_mono_ms(void);

#endif
