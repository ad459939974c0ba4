/* clock.h - the two clocks of presenced, in milliseconds.
 *
 * pd_now_ms is wall-clock time (CLOCK_REALTIME): for timestamps that leave
 * the process (events, logs, snapshots). pd_mono_ms is CLOCK_MONOTONIC: for
 * timeouts and intervals, which must not jump when the wall clock is set.
 * Loop code reads a clock once per tick and passes the value down
 * (CONTRIBUTING.md, "One loop thread owns the state"); these are the only
 * places that ask the kernel. */
#ifndef PD_CLOCK_H
#define PD_CLOCK_H
#include <stdint.h>

/* Milliseconds since the Unix epoch, UTC (plus the test offset). */
uint64_t pd_now_ms(void);

/* Tests only (PRESENCE_TEST_CLOCK_OFFSET_MS): pd_now_ms runs offset_ms
 * ahead from now on, as on a machine whose clock is wrong. Call before
 * any other thread reads the clock. */
void pd_clock_set_test_offset(uint64_t offset_ms);

/* Nanoseconds since the Unix epoch (trace reports, which are compared
 * across processes of one machine). */
uint64_t pd_now_ns(void);

/* Milliseconds since an arbitrary fixed point (boot); never goes back. */
uint64_t pd_mono_ms(void);

#endif
