/* test_slab.c - the size-class pools of common/base/slab.c. */
#include <criterion/criterion.h>
#include <signal.h>
#include <string.h>
#include "base/alloc.h"
#include "base/slab.h"

static bool zeroed(const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i]) return false;
    return true;
}

Test(slab, records_are_zeroed_aligned_and_reused_by_size) {
    pd_slab s;
    pd_slab_init(&s, true);
    char *a = pd_slab_alloc(&s, 120), *b = pd_slab_alloc(&s, 117);
    cr_assert(a && b);
    cr_expect_eq((uintptr_t)a % 8, 0);
    cr_expect_eq((uintptr_t)b % 8, 0);
    cr_expect(b >= a + 120 || a >= b + 120, "records do not overlap");
    cr_expect(zeroed(a, 120) && zeroed(b, 117));
    cr_expect_eq(s.bytes, 240, "117 is rounded up to 120");
    memset(a, 0xab, 120);
    pd_slab_free(&s, a, 120);
    char *c = pd_slab_alloc(&s, 144);
    cr_expect_neq(c, a, "another size class does not take it");
    char *d = pd_slab_alloc(&s, 115);
    cr_expect_eq(d, a, "the same class reuses the freed record");
    cr_expect(zeroed(d, 115), "and hands it out zeroed");
    pd_slab_free(&s, b, 117);
    pd_slab_free(&s, c, 144);
    pd_slab_free(&s, d, 115);
    cr_expect_eq(s.bytes, 0);
    pd_slab_destroy(&s);
}

Test(slab, many_records_over_many_blocks) {
    pd_slab s;
    pd_slab_init(&s, true);
    enum { N = 20000 };
    static char *v[N];
    for (int i = 0; i < N; i++) {
        size_t n = 8 + (size_t)(i % 200);
        v[i] = pd_slab_alloc(&s, n);
        cr_assert(v[i]);
        memset(v[i], i & 0xff, n);
    }
    for (int i = 0; i < N; i++) {
        size_t n = 8 + (size_t)(i % 200);
        for (size_t k = 0; k < n; k++) cr_assert_eq((unsigned char)v[i][k], (unsigned)(i & 0xff));
    }
    for (int i = 0; i < N; i += 2) pd_slab_free(&s, v[i], 8 + (size_t)(i % 200));
    for (int i = 0; i < N; i += 2) cr_assert(v[i] = pd_slab_alloc(&s, 8 + (size_t)(i % 200)));
    for (int i = 0; i < N; i++) pd_slab_free(&s, v[i], 8 + (size_t)(i % 200));
    cr_expect_eq(s.bytes, 0);
    pd_slab_destroy(&s);
}

Test(slab, the_largest_record_and_out_of_memory) {
    pd_slab s;
    pd_slab_init(&s, true);
    pd_alloc_fail_after(0);
    cr_expect_null(pd_slab_alloc(&s, 64), "no block to cut it from");
    pd_alloc_fail_after(-1);
    char *big = pd_slab_alloc(&s, PD_SLAB_MAX);
    cr_assert(big && zeroed(big, PD_SLAB_MAX));
    cr_expect_eq(pd_slab_ptr(&s, pd_slab_idx(&s, big)), big);
    pd_slab_free(&s, big, PD_SLAB_MAX);
    cr_expect_null(pd_slab_alloc(&s, PD_SLAB_MAX + 1), "larger than any record");
    cr_expect_eq(s.bytes, 0);
    pd_slab_destroy(&s);
}

Test(slab, unpooled_records_go_to_malloc) {
    pd_slab s;
    pd_slab_init(&s, false);
    char *a = pd_slab_alloc(&s, 100);
    cr_assert(a && zeroed(a, 100));
    cr_expect_eq((uintptr_t)a % 16, 0);
    pd_slab_free(&s, a, 100);
    pd_slab_free(&s, NULL, 100);
    cr_expect_eq(s.bytes, 0);
    pd_slab_destroy(&s);
}

Test(slab, unpooled_free_of_another_size_aborts, .signal = SIGABRT) {
    pd_slab s;
    pd_slab_init(&s, false);
    char *a = pd_slab_alloc(&s, 100);
    pd_slab_free(&s, a, 104);
}

/* Records name each other by 32-bit index: every live record's index
 * gives it back, over many blocks and chunks, pooled or not; 0 is NULL. */
static void check_indexes(bool pooled) {
    pd_slab s;
    pd_slab_init(&s, pooled);
    enum { N = 40000 };
    static char *v[N];
    static uint32_t ix[N];
    cr_expect_eq(pd_slab_idx(&s, NULL), 0u);
    cr_expect_null(pd_slab_ptr(&s, 0));
    for (int i = 0; i < N; i++) {
        size_t n = 8 + (size_t)(i % 150);
        cr_assert(v[i] = pd_slab_alloc(&s, n));
        ix[i] = pd_slab_idx(&s, v[i]);
        cr_assert_neq(ix[i], 0u);
        cr_assert_eq(pd_slab_ptr(&s, ix[i]), v[i]);
    }
    for (int i = 1; i < N; i++) cr_assert_neq(ix[i], ix[i - 1], "indexes are distinct");
    for (int i = 0; i < N; i += 3) pd_slab_free(&s, v[i], 8 + (size_t)(i % 150));
    for (int i = 0; i < N; i += 3) {
        cr_assert(v[i] = pd_slab_alloc(&s, 8 + (size_t)(i % 150)));
        ix[i] = pd_slab_idx(&s, v[i]);
    }
    for (int i = 0; i < N; i++) {
        cr_assert_eq(pd_slab_ptr(&s, ix[i]), v[i]);
        cr_assert_eq(pd_slab_idx(&s, v[i]), ix[i]);
    }
    for (int i = 0; i < N; i++) pd_slab_free(&s, v[i], 8 + (size_t)(i % 150));
    cr_expect_eq(s.bytes, 0);
    pd_slab_destroy(&s);
}

Test(slab, indexes_name_records_pooled) { check_indexes(true); }
Test(slab, indexes_name_records_unpooled) { check_indexes(false); }

/* Not pooled (the ASan builds): a freed record's index is not handed out
 * again before PD_SLAB_QUARANTINE other records were freed, and names the
 * freed memory meanwhile, so that a stale index is a use after free ASan
 * reports rather than a silent read of the record that took the index.
 * After that the indexes are reused: their number stays bounded. */
Test(slab, unpooled_indexes_wait_before_reuse) {
    pd_slab s;
    pd_slab_init(&s, false);
    char *a = pd_slab_alloc(&s, 40);
    cr_assert_not_null(a);
    uint32_t ia = pd_slab_idx(&s, a);
    pd_slab_free(&s, a, 40);
    for (uint32_t k = 0; k < PD_SLAB_QUARANTINE; k++) {
        char *b = pd_slab_alloc(&s, 40);
        cr_assert_not_null(b);
        cr_assert_neq(pd_slab_idx(&s, b), ia, "index %u reused after %u frees", ia, k);
        pd_slab_free(&s, b, 40);
    }
    uint32_t most = 0;
    for (uint32_t k = 0; k < 3 * PD_SLAB_QUARANTINE; k++) {
        char *b = pd_slab_alloc(&s, 40);
        cr_assert_not_null(b);
        uint32_t ib = pd_slab_idx(&s, b);
        cr_assert_eq(pd_slab_ptr(&s, ib), b);
        if (ib > most) most = ib;
        pd_slab_free(&s, b, 40);
    }
    cr_expect_leq(most, PD_SLAB_QUARANTINE + 2u, "indexes are reused after the wait");
    cr_expect_eq(s.bytes, 0);
    pd_slab_destroy(&s);
}
