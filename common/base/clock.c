/* clock.c - wall and monotonic clocks in milliseconds.
 *
 * clock_gettime cannot fail for these two clock ids on Linux; if it ever did,
 * 0 is returned rather than an uninitialised value. */
#include "base/clock.h"
#include <time.h>

static uint64_t clock_ms(clockid_t id) {
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0) return 0;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t test_offset_ms;

void pd_clock_set_test_offset(uint64_t offset_ms) { test_offset_ms = offset_ms; }

uint64_t pd_now_ms(void) {
    return clock_ms(CLOCK_REALTIME) + test_offset_ms;
}

uint64_t pd_mono_ms(void) {
    return clock_ms(CLOCK_MONOTONIC);
}

uint64_t pd_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
