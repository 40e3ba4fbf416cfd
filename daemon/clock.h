/* lorad — daemon/clock.h: the daemon's clock, CLOCK_MONOTONIC in
 * nanoseconds: request latencies, the drain and flush deadlines, staging
 * times, the stuck-worker probe and uptime all read it.
 *
 * Threads: any.
 */
#ifndef LORAD_CLOCK_H
#define LORAD_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic nanoseconds (since an arbitrary start). */
static inline uint64_t clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
