/* test_hist.c - latency histograms: bucket edges (a value equal to a bound
 * is in that bucket, as Prometheus' "le" says), cumulative counts, sum. */
#include "base/hist.h"
#include <criterion/criterion.h>

Test(hist, edges_cumulative_and_sum) {
    pd_hist h = {0};
    pd_hist_observe_us(&h, 0);
    pd_hist_observe_us(&h, 100);      /* le 0.0001 */
    pd_hist_observe_us(&h, 101);      /* le 0.00025 */
    pd_hist_observe_us(&h, 1000000);  /* le 1 */
    pd_hist_observe_us(&h, 20000000); /* +Inf */
    cr_expect_eq(pd_hist_cumulative(&h, 0), 2u);
    cr_expect_eq(pd_hist_cumulative(&h, 1), 3u);
    cr_expect_eq(pd_hist_cumulative(&h, 11), 3u); /* le 0.5 */
    cr_expect_eq(pd_hist_cumulative(&h, 12), 4u); /* le 1 */
    cr_expect_eq(pd_hist_cumulative(&h, PD_HIST_BUCKETS - 1), 4u);
    cr_expect_eq(pd_hist_cumulative(&h, PD_HIST_BUCKETS), 5u);
    cr_expect_eq(h.count, 5u);
    cr_expect_eq(h.sum_us, 21000201u);
}

Test(hist, bounds_grow) {
    for (int i = 1; i < PD_HIST_BUCKETS; i++)
        cr_expect_gt(pd_hist_bounds[i], pd_hist_bounds[i - 1]);
    cr_expect_eq(pd_hist_bounds[12], 1.0);
}
