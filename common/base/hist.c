/* hist.c - fixed-bucket histograms (see hist.h). The bounds are those of
 * Prometheus client libraries' defaults, widened down to 100 us: a node
 * handles an event in tens of microseconds. */
#include "base/hist.h"

const double pd_hist_bounds[PD_HIST_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1,      2.5,   10,
};

/* The same bounds in microseconds, exact. */
static const uint64_t bounds_us[PD_HIST_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 10000000,
};

void pd_hist_observe_us(pd_hist *h, uint64_t us) {
    int i = 0;
    while (i < PD_HIST_BUCKETS && us > bounds_us[i]) i++;
    h->counts[i]++;
    h->count++;
    h->sum_us += us;
}

uint64_t pd_hist_cumulative(const pd_hist *h, int i) {
    uint64_t n = 0;
    for (int k = 0; k <= i && k <= PD_HIST_BUCKETS; k++) n += h->counts[k];
    return n;
}
