/* test_hlc.c - the bounded hybrid logical clock (issue #11, finding 1): a
 * remote value more than the skew bound ahead of the wall clock is never
 * merged, the bound's arithmetic cannot overflow, and the clock saturates
 * at its top instead of wrapping to 0. */
#include <criterion/criterion.h>
#include <stdint.h>
#include "model/presence.h"
#include "model_fixtures.h"

#define NOW 1700000000000ULL
#define SKEW PD_MAX_CLOCK_SKEW_DEFAULT_MS

static recorder rec;

static pd_model *fresh(void) {
    static const pd_model_cfg cfg = {.idle_timeout_ms = 60000, .offline_delay_ms = 1000,
                                     .server_timeout_ms = 60000};
    pd_model *m = pd_model_new(&cfg, pd_str_c("self"), on_change, &rec);
    cr_assert(m != NULL);
    return m;
}

Test(hlc, ahead_is_strictly_beyond_the_bound) {
    cr_expect_not(pd_hlc_ahead(NOW << 16, NOW, SKEW));
    cr_expect_not(pd_hlc_ahead((NOW + SKEW) << 16 | 0xffff, NOW, SKEW));
    cr_expect(pd_hlc_ahead((NOW + SKEW + 1) << 16, NOW, SKEW));
    cr_expect_not(pd_hlc_ahead(0, NOW, SKEW), "the past is never ahead");
    cr_expect(pd_hlc_ahead(UINT64_MAX, NOW, SKEW));
    cr_expect(pd_hlc_ahead(((uint64_t)1 << 63) - 1, NOW, SKEW));
    cr_expect_not(pd_hlc_ahead(UINT64_MAX, UINT64_MAX, UINT64_MAX), "no overflow at the top");
}

Test(hlc, a_remote_clock_beyond_the_bound_is_not_merged) {
    pd_model *m = fresh();
    uint64_t before = pd_model_hlc(m);
    pd_model_hlc_observe(m, ((uint64_t)1 << 63) - 1, NOW);
    pd_model_hlc_observe(m, UINT64_MAX, NOW);
    pd_model_hlc_observe(m, (NOW + SKEW + 1) << 16, NOW);
    cr_expect_eq(pd_model_hlc(m), before, "a clock from the future was merged");
    pd_model_hlc_observe(m, (NOW + 1000) << 16, NOW);
    cr_expect_eq(pd_model_hlc(m), (NOW + 1000) << 16, "a clock within the bound is merged");
    pd_model_free(m);
}

Test(hlc, the_clock_saturates_instead_of_wrapping) {
    pd_model *m = fresh();
    pd_apply_result res;
    pd_err err;
    uint64_t last = 0;
    /* A wall clock beyond what 48 bits of milliseconds hold. */
    uint64_t far = UINT64_MAX >> 8;
    for (int i = 0; i < 3; i++) {
        pd_event ev = ev_status("u", i % 2 ? PD_CHOSEN_BUSY : PD_CHOSEN_AWAY);
        cr_assert_eq(pd_model_apply(m, &ev, far + (uint64_t)i, &res, &err), PD_OK, "%s",
                     err.msg);
        cr_expect_geq(pd_model_hlc(m), last, "the clock went back");
        cr_expect_neq(pd_model_hlc(m), 0, "the clock wrapped to 0");
        last = pd_model_hlc(m);
    }
    pd_model_free(m);
}
