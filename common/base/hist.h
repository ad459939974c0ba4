/* hist.h - a fixed-bucket latency histogram, as Prometheus wants it: counts
 * per upper bound (seconds), a sum and a count. Observations are in
 * microseconds; one histogram is owned by one thread (the node's loop). */
#ifndef PD_HIST_H
#define PD_HIST_H
#include <stdint.h>

#define PD_HIST_BUCKETS 15

/* Upper bounds in seconds, growing: 100 us ... 10 s (then +Inf). */
extern const double pd_hist_bounds[PD_HIST_BUCKETS];

typedef struct pd_hist {
    uint64_t counts[PD_HIST_BUCKETS + 1]; /* per bucket, not cumulative; last: +Inf */
    uint64_t count;
    uint64_t sum_us;
} pd_hist;

/* Counts one observation of us microseconds. */
void pd_hist_observe_us(pd_hist *h, uint64_t us);

/* Observations at or below bound i (cumulative, as the _bucket series);
 * i == PD_HIST_BUCKETS is +Inf, i.e. the count. */
uint64_t pd_hist_cumulative(const pd_hist *h, int i);

#endif
