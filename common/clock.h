/* clock.h - deadlines on the monotonic clock, for the timed waits of every
 * layer (a condition variable that waits for one must use CLOCK_MONOTONIC
 * too: pthread_condattr_setclock).
 */
#ifndef VSAN_CLOCK_H
#define VSAN_CLOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* The monotonic time ms milliseconds from now. */
static inline struct timespec clock_after_ms(unsigned ms)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Milliseconds since boot, counting time suspended (a resumed node must
 * not think its read lease still runs): for leases, not for condition
 * variable deadlines. */
static inline uint64_t clock_now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_BOOTTIME, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static inline bool clock_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

#endif
