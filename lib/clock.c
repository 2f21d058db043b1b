/*
 * clock.c - wall and monotonic milliseconds (see clock.h).
 */
#include "clock.h"

#include <time.h>

static long long ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long clock_wall_ms(void)
{
    return ms(CLOCK_REALTIME);
}

long long clock_mono_ms(void)
{
    return ms(CLOCK_MONOTONIC);
}
