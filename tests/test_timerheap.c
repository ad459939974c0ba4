/* test_timerheap.c - the intrusive timer heap of timerheap.h.
 *
 * Every test checks the heap's shape after it mutates it: heap_ok() walks
 * the array and verifies the min-heap order and that each timer's idx points
 * back at its slot, so a sift bug shows up at the operation that caused it
 * rather than as a wrong pop much later. Random tests use a fixed-seed
 * xorshift generator so a failure reproduces. */
#include "base/alloc.h"
#include "base/timerheap.h"
#include <criterion/criterion.h>
#include <stdlib.h>

static uint64_t rng_state;

static uint64_t rng(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* True if th is a valid min-heap whose timers know their slots. */
static bool heap_ok(const pd_theap *th) {
    if (th->n > th->cap) return false;
    for (uint32_t i = 0; i < th->n; i++) {
        if (th->h[i]->idx != i + 1) return false;
        if (i > 0 && th->h[(i - 1) / 2]->due > th->h[i]->due) return false;
    }
    return true;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

Test(timerheap, empty_heap) {
    pd_theap th;
    pd_theap_init(&th);
    cr_expect_eq(pd_theap_next(&th), UINT64_MAX);
    cr_expect_eq(pd_theap_count(&th), 0u);
    cr_expect_null(pd_theap_pop_due(&th, UINT64_MAX));
    pd_timer t = {0};
    pd_theap_disarm(&th, &t); /* disarming an unarmed timer is a no-op */
    cr_expect_not(pd_timer_armed(&t));
    cr_expect_eq(pd_theap_count(&th), 0u);
    pd_theap_free(&th);
    pd_theap_free(&th); /* free of a freed (re-initialised) heap is safe */
}

Test(timerheap, arm_disarm_rearm) {
    pd_theap th;
    pd_theap_init(&th);
    pd_timer a = {0}, b = {0}, c = {0};
    cr_assert_eq(pd_theap_arm(&th, &a, 100), PD_OK);
    cr_assert_eq(pd_theap_arm(&th, &b, 200), PD_OK);
    cr_assert_eq(pd_theap_arm(&th, &c, 300), PD_OK);
    cr_expect(pd_timer_armed(&a) && pd_timer_armed(&b) && pd_timer_armed(&c));
    cr_expect_eq(pd_theap_next(&th), 100u);
    cr_expect_eq(pd_theap_count(&th), 3u);

    /* Re-arm earlier: c becomes the first. Count does not change. */
    cr_assert_eq(pd_theap_arm(&th, &c, 50), PD_OK);
    cr_expect(heap_ok(&th));
    cr_expect_eq(pd_theap_count(&th), 3u);
    cr_expect_eq(pd_theap_next(&th), 50u);

    /* Re-arm later: c goes to the back. */
    cr_assert_eq(pd_theap_arm(&th, &c, 1000), PD_OK);
    cr_expect(heap_ok(&th));
    cr_expect_eq(pd_theap_next(&th), 100u);

    /* Re-arm to the same time changes nothing. */
    cr_assert_eq(pd_theap_arm(&th, &a, 100), PD_OK);
    cr_expect(heap_ok(&th));
    cr_expect_eq(pd_theap_count(&th), 3u);

    pd_theap_disarm(&th, &a);
    cr_expect_not(pd_timer_armed(&a));
    cr_expect(heap_ok(&th));
    cr_expect_eq(pd_theap_next(&th), 200u);
    pd_theap_disarm(&th, &a); /* twice: no-op */
    cr_expect_eq(pd_theap_count(&th), 2u);

    /* A disarmed timer can be armed again. */
    cr_assert_eq(pd_theap_arm(&th, &a, 10), PD_OK);
    cr_expect_eq(pd_theap_next(&th), 10u);
    cr_expect_eq(pd_theap_pop_due(&th, 10000), &a);
    cr_expect_eq(pd_theap_pop_due(&th, 10000), &b);
    cr_expect_eq(pd_theap_pop_due(&th, 10000), &c);
    cr_expect_null(pd_theap_pop_due(&th, 10000));
    cr_expect_not(pd_timer_armed(&a) || pd_timer_armed(&b) || pd_timer_armed(&c));
    pd_theap_free(&th);
}

Test(timerheap, pop_due_respects_now) {
    pd_theap th;
    pd_theap_init(&th);
    pd_timer t[4] = {{0}};
    const uint64_t due[4] = {40, 10, 30, 20};
    for (int i = 0; i < 4; i++) cr_assert_eq(pd_theap_arm(&th, &t[i], due[i]), PD_OK);
    cr_expect_null(pd_theap_pop_due(&th, 9), "nothing is due before 10");
    cr_expect_eq(pd_theap_count(&th), 4u);
    cr_expect_eq(pd_theap_pop_due(&th, 10), &t[1], "due exactly at now fires");
    cr_expect_null(pd_theap_pop_due(&th, 19));
    cr_expect_eq(pd_theap_pop_due(&th, 35), &t[3]);
    cr_expect_eq(pd_theap_pop_due(&th, 35), &t[2]);
    cr_expect_null(pd_theap_pop_due(&th, 35));
    cr_expect_eq(pd_theap_next(&th), 40u);
    cr_expect(pd_timer_armed(&t[0]));
    pd_theap_free(&th);
    cr_expect_not(pd_timer_armed(&t[0]), "free disarms what is left");
}

Test(timerheap, random_pop_order_is_sorted) {
    enum { N = 10000 };
    pd_theap th;
    pd_theap_init(&th);
    pd_timer *t = calloc(N, sizeof *t);
    uint64_t *want = malloc(N * sizeof *want);
    cr_assert(t && want);
    rng_state = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < N; i++) {
        want[i] = rng() % 5000; /* many equal due times on purpose */
        cr_assert_eq(pd_theap_arm(&th, &t[i], want[i]), PD_OK);
    }
    cr_assert(heap_ok(&th));
    cr_expect_eq(pd_theap_count(&th), (uint32_t)N);
    qsort(want, N, sizeof *want, cmp_u64);
    cr_expect_eq(pd_theap_next(&th), want[0]);
    int popped = 0;
    pd_timer *p;
    while ((p = pd_theap_pop_due(&th, UINT64_MAX)) != NULL) {
        cr_assert_lt(popped, N);
        cr_assert_eq(p->due, want[popped], "pop %d: due %llu, want %llu", popped,
                     (unsigned long long)p->due, (unsigned long long)want[popped]);
        cr_assert_not(pd_timer_armed(p));
        popped++;
    }
    cr_expect_eq(popped, N);
    cr_expect_eq(pd_theap_next(&th), UINT64_MAX);
    pd_theap_free(&th);
    free(t);
    free(want);
}

/* Random arm / re-arm / disarm / pop against a plain array model. */
Test(timerheap, random_operations_match_model) {
    enum { N = 512, OPS = 20000 };
    pd_theap th;
    pd_theap_init(&th);
    static pd_timer t[N];
    static bool armed[N];
    static uint64_t due[N];
    rng_state = 12345;
    for (int op = 0; op < OPS; op++) {
        int i = (int)(rng() % N);
        uint64_t when = rng() % 100000;
        switch (rng() % 4) {
        case 0:
        case 1:
            cr_assert_eq(pd_theap_arm(&th, &t[i], when), PD_OK);
            armed[i] = true;
            due[i] = when;
            break;
        case 2:
            pd_theap_disarm(&th, &t[i]);
            armed[i] = false;
            break;
        default: {
            pd_timer *p = pd_theap_pop_due(&th, when);
            uint64_t min = UINT64_MAX;
            for (int k = 0; k < N; k++)
                if (armed[k] && due[k] < min) min = due[k];
            if (min > when) {
                cr_assert_null(p);
            } else {
                cr_assert_not_null(p);
                cr_assert_eq(p->due, min);
                armed[p - t] = false;
            }
        }
        }
        cr_assert(heap_ok(&th), "heap broken after op %d", op);
        uint32_t n = 0;
        for (int k = 0; k < N; k++) {
            cr_assert_eq(pd_timer_armed(&t[k]), armed[k]);
            n += armed[k];
        }
        cr_assert_eq(pd_theap_count(&th), n);
    }
    pd_theap_free(&th);
}

Test(timerheap, disarm_middle_keeps_order) {
    enum { N = 101 };
    pd_theap th;
    pd_theap_init(&th);
    pd_timer t[N] = {{0}};
    /* Arm in descending order so the heap array is well shuffled. */
    for (int i = N - 1; i >= 0; i--) cr_assert_eq(pd_theap_arm(&th, &t[i], (uint64_t)i * 10), PD_OK);
    /* Disarm the timer sitting in the middle of the array, then a few more. */
    pd_timer *mid = th.h[N / 2];
    uint64_t mid_due = mid->due;
    pd_theap_disarm(&th, mid);
    cr_expect(heap_ok(&th));
    cr_expect_not(pd_timer_armed(mid));
    pd_theap_disarm(&th, &t[0]);  /* the root */
    pd_theap_disarm(&th, th.h[th.n - 1]); /* the last slot */
    cr_expect(heap_ok(&th));
    cr_expect_eq(pd_theap_count(&th), (uint32_t)N - 3);
    uint64_t prev = 0;
    pd_timer *p;
    int n = 0;
    while ((p = pd_theap_pop_due(&th, UINT64_MAX)) != NULL) {
        cr_expect_neq(p, mid);
        cr_expect_neq(p, &t[0]);
        cr_expect_geq(p->due, prev);
        cr_expect_neq(p->due, mid_due);
        prev = p->due;
        n++;
    }
    cr_expect_eq(n, N - 3);
    pd_theap_free(&th);
}

Test(timerheap, arm_enomem_leaves_timer_unarmed_and_heap_intact) {
    pd_theap th;
    pd_theap_init(&th);
    pd_timer t[65] = {{0}};
    /* The first arm allocates 64 slots; fill them without another allocation. */
    for (int i = 0; i < 64; i++) cr_assert_eq(pd_theap_arm(&th, &t[i], (uint64_t)(64 - i)), PD_OK);
    cr_assert_eq(th.cap, 64u);
    t[64].due = 777;
    pd_alloc_fail_after(0);
    pd_status st = pd_theap_arm(&th, &t[64], 0);
    pd_alloc_fail_after(-1);
    cr_expect_eq(st, PD_ENOMEM);
    cr_expect_not(pd_timer_armed(&t[64]));
    cr_expect_eq(t[64].due, 777u, "a failed arm leaves the timer as it was");
    cr_expect_eq(pd_theap_count(&th), 64u);
    cr_expect(heap_ok(&th));
    cr_expect_eq(pd_theap_next(&th), 1u);

    /* Re-arming an already armed timer needs no memory, so it still works. */
    pd_alloc_fail_after(0);
    cr_expect_eq(pd_theap_arm(&th, &t[0], 0), PD_OK);
    pd_alloc_fail_after(-1);
    cr_expect_eq(pd_theap_next(&th), 0u);

    /* And once memory is back, the failed timer can be armed. */
    cr_expect_eq(pd_theap_arm(&th, &t[64], 5), PD_OK);
    cr_expect(heap_ok(&th));
    uint64_t prev = 0;
    int n = 0;
    for (pd_timer *p; (p = pd_theap_pop_due(&th, UINT64_MAX)) != NULL; n++) {
        cr_expect_geq(p->due, prev);
        prev = p->due;
    }
    cr_expect_eq(n, 65);
    pd_theap_free(&th);
}

Test(timerheap, free_releases_all_memory) {
    size_t before = pd_alloc_live_bytes();
    pd_theap th;
    pd_theap_init(&th);
    static pd_timer t[1000];
    for (int i = 0; i < 1000; i++) cr_assert_eq(pd_theap_arm(&th, &t[i], (uint64_t)i), PD_OK);
    cr_expect_gt(pd_alloc_live_bytes(), before);
    pd_theap_free(&th);
    cr_expect_eq(pd_alloc_live_bytes(), before);
    for (int i = 0; i < 1000; i++) cr_assert_not(pd_timer_armed(&t[i]));
}
