/* The monotonic clock every program times and schedules by: durations, deadlines and
 * heartbeats must not jump when the wall clock is set. */
#ifndef BITNET_CLOCK_H
#define BITNET_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds on CLOCK_MONOTONIC. */
static inline uint64_t clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline double clock_seconds(void) { return (double)clock_ns() * 1e-9; }
static inline double clock_ms(void) { return (double)clock_ns() * 1e-6; }
static inline uint64_t clock_us(void) { return clock_ns() / 1000u; }
/* Whole milliseconds, as the wire's heartbeat fields count them. */
static inline uint64_t clock_whole_ms(void) { return clock_ns() / 1000000u; }

#endif
