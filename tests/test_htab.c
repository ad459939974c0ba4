/* test_htab.c - the intrusive hash table of htab.h.
 *
 * Entries are `item`s keyed by an integer; the table only links them, so the
 * tests own an array of items and find them by walking a bucket as the
 * model does. Scan tests count visits per item: a scan must visit every
 * entry present for its whole duration at least once (also across growth
 * between steps) and exactly once when the table does not change. */
#include "base/alloc.h"
#include "base/htab.h"
#include "base/ids.h"
#include <criterion/criterion.h>
#include <stdlib.h>

typedef struct {
    pd_hnode h;
    uint32_t key;
    uint32_t visits;
} item;

static uint64_t key_hash(uint32_t key) { return pd_hash(&key, sizeof key); }

static uint64_t item_hash(const pd_hnode *e) { return key_hash(((const item *)e)->key); }

/* Every key hashes alike: one long chain. */
static uint64_t same_hash(const pd_hnode *e) {
    (void)e;
    return 42;
}

static item *find(const pd_htab *t, uint32_t key, uint64_t h) {
    for (pd_hnode *e = pd_htab_bucket(t, h); e; e = e->next) {
        item *it = (item *)e;
        if (it->key == key) return it;
    }
    return NULL;
}

static void count_visit(void *ud, pd_hnode *e) {
    (void)ud;
    ((item *)e)->visits++;
}

static item *make_items(uint32_t n) {
    item *v = calloc(n, sizeof *v);
    cr_assert_not_null(v);
    for (uint32_t i = 0; i < n; i++) v[i].key = i * 7 + 1;
    return v;
}

/* Runs one full scan; returns the number of steps. */
static int full_scan(const pd_htab *t) {
    uint64_t c = 0;
    int steps = 0;
    do {
        c = pd_htab_scan(t, c, count_visit, NULL);
        steps++;
    } while (c != 0);
    return steps;
}

Test(htab, insert_find_remove) {
    pd_htab t;
    cr_assert_eq(pd_htab_init(&t, item_hash), PD_OK);
    item *v = make_items(3);
    for (int i = 0; i < 3; i++) pd_htab_insert(&t, &v[i].h, key_hash(v[i].key));
    cr_expect_eq(t.n, 3u);
    for (int i = 0; i < 3; i++) cr_expect_eq(find(&t, v[i].key, key_hash(v[i].key)), &v[i]);
    cr_expect_null(find(&t, 999, key_hash(999)));

    pd_htab_remove(&t, &v[1].h, key_hash(v[1].key));
    cr_expect_eq(t.n, 2u);
    cr_expect_null(find(&t, v[1].key, key_hash(v[1].key)));
    cr_expect_eq(find(&t, v[0].key, key_hash(v[0].key)), &v[0]);
    cr_expect_eq(find(&t, v[2].key, key_hash(v[2].key)), &v[2]);

    /* Removing an entry that is not linked changes nothing. */
    pd_htab_remove(&t, &v[1].h, key_hash(v[1].key));
    cr_expect_eq(t.n, 2u);

    /* Re-insert after removal. */
    pd_htab_insert(&t, &v[1].h, key_hash(v[1].key));
    cr_expect_eq(find(&t, v[1].key, key_hash(v[1].key)), &v[1]);
    cr_expect_eq(t.n, 3u);
    pd_htab_free(&t);
    free(v);
}

Test(htab, colliding_entries_share_a_bucket) {
    pd_htab t;
    cr_assert_eq(pd_htab_init(&t, same_hash), PD_OK);
    item *v = make_items(100);
    for (int i = 0; i < 100; i++) pd_htab_insert(&t, &v[i].h, 42);
    for (int i = 0; i < 100; i++) cr_expect_eq(find(&t, v[i].key, 42), &v[i]);
    /* Remove from the middle, the head and the tail of the chain. */
    pd_htab_remove(&t, &v[50].h, 42);
    pd_htab_remove(&t, &v[99].h, 42);
    pd_htab_remove(&t, &v[0].h, 42);
    cr_expect_eq(t.n, 97u);
    for (int i = 0; i < 100; i++) {
        if (i == 50 || i == 99 || i == 0) cr_expect_null(find(&t, v[i].key, 42));
        else cr_expect_eq(find(&t, v[i].key, 42), &v[i]);
    }
    full_scan(&t);
    for (int i = 0; i < 100; i++) cr_expect_eq(v[i].visits, (i == 50 || i == 99 || i == 0) ? 0u : 1u);
    pd_htab_free(&t);
    free(v);
}

Test(htab, growth_keeps_every_entry) {
    enum { N = 20000 };
    pd_htab t;
    cr_assert_eq(pd_htab_init(&t, item_hash), PD_OK);
    uint64_t initial = t.mask + 1;
    item *v = make_items(N);
    for (uint32_t i = 0; i < N; i++) {
        pd_htab_insert(&t, &v[i].h, key_hash(v[i].key));
        /* Spot-check entries inserted before a possible growth. */
        if ((i & (i + 1)) == 0) {
            for (uint32_t k = 0; k <= i; k++)
                cr_assert_eq(find(&t, v[k].key, key_hash(v[k].key)), &v[k]);
        }
    }
    cr_expect_gt(t.mask + 1, initial, "the table grew");
    cr_expect_geq(t.mask + 1, (uint64_t)N / 2, "load stays bounded");
    cr_expect_eq(t.n, (size_t)N);
    for (uint32_t i = 0; i < N; i++) cr_assert_eq(find(&t, v[i].key, key_hash(v[i].key)), &v[i]);
    for (uint32_t i = 0; i < N; i += 2) pd_htab_remove(&t, &v[i].h, key_hash(v[i].key));
    cr_expect_eq(t.n, (size_t)N / 2);
    for (uint32_t i = 0; i < N; i++) {
        item *f = find(&t, v[i].key, key_hash(v[i].key));
        if (i % 2) cr_assert_eq(f, &v[i]);
        else cr_assert_null(f);
    }
    pd_htab_free(&t);
    free(v);
}

Test(htab, shrinks_when_emptied_and_keeps_the_rest) {
    enum { N = 20000 };
    pd_htab t;
    cr_assert_eq(pd_htab_init(&t, item_hash), PD_OK);
    uint64_t initial = t.mask + 1;
    item *v = make_items(N);
    for (uint32_t i = 0; i < N; i++) pd_htab_insert(&t, &v[i].h, key_hash(v[i].key));
    uint64_t full = t.mask + 1;
    /* Down to 100 entries: the table follows, and every survivor is found. */
    for (uint32_t i = 100; i < N; i++) {
        pd_htab_remove(&t, &v[i].h, key_hash(v[i].key));
        cr_assert(t.n >= (t.mask + 1) / 4 || t.mask + 1 == initial,
                  "%zu entries in %llu buckets: less than a quarter full", t.n,
                  (unsigned long long)(t.mask + 1));
    }
    cr_expect_lt(t.mask + 1, full / 32, "shrunk from %llu to %llu buckets",
                 (unsigned long long)full, (unsigned long long)(t.mask + 1));
    cr_expect_leq(t.mask + 1, 4 * 100, "a quarter full at least");
    for (uint32_t i = 0; i < 100; i++) cr_assert_eq(find(&t, v[i].key, key_hash(v[i].key)), &v[i]);
    for (uint32_t i = 0; i < 100; i++) pd_htab_remove(&t, &v[i].h, key_hash(v[i].key));
    cr_expect_eq(t.n, 0u);
    cr_expect_eq(t.mask + 1, initial, "empty: back to its initial size");
    /* And it grows again as before. */
    for (uint32_t i = 0; i < N; i++) pd_htab_insert(&t, &v[i].h, key_hash(v[i].key));
    for (uint32_t i = 0; i < N; i++) cr_assert_eq(find(&t, v[i].key, key_hash(v[i].key)), &v[i]);
    pd_htab_free(&t);
    free(v);
}

Test(htab, failed_growth_keeps_entries) {
    pd_htab t;
    cr_assert_eq(pd_htab_init(&t, item_hash), PD_OK);
    uint64_t buckets = t.mask + 1;
    item *v = make_items(200);
    pd_alloc_fail_after(0);
    for (int i = 0; i < 200; i++) pd_htab_insert(&t, &v[i].h, key_hash(v[i].key));
    pd_alloc_fail_after(-1);
    cr_expect_eq(t.mask + 1, buckets, "no memory: the table stays denser");
    cr_expect_eq(t.n, 200u);
    for (int i = 0; i < 200; i++) cr_expect_eq(find(&t, v[i].key, key_hash(v[i].key)), &v[i]);
    /* Growth resumes once memory is back. */
    item extra = {.key = 100000};
    pd_htab_insert(&t, &extra.h, key_hash(extra.key));
    cr_expect_gt(t.mask + 1, buckets);
    for (int i = 0; i < 200; i++) cr_expect_eq(find(&t, v[i].key, key_hash(v[i].key)), &v[i]);
    pd_htab_free(&t);
    free(v);
}

Test(htab, scan_of_empty_table_ends) {
    pd_htab t;
    cr_assert_eq(pd_htab_init(&t, item_hash), PD_OK);
    int steps = full_scan(&t);
    cr_expect_eq((uint64_t)steps, t.mask + 1, "one step per bucket");
    pd_htab_free(&t);
}

Test(htab, scan_visits_each_entry_exactly_once_when_unchanged) {
    enum { N = 5000 };
    pd_htab t;
    cr_assert_eq(pd_htab_init(&t, item_hash), PD_OK);
    item *v = make_items(N);
    for (uint32_t i = 0; i < N; i++) pd_htab_insert(&t, &v[i].h, key_hash(v[i].key));
    int steps = full_scan(&t);
    cr_expect_eq((uint64_t)steps, t.mask + 1);
    for (uint32_t i = 0; i < N; i++) cr_assert_eq(v[i].visits, 1u, "item %u visited %u times", i, v[i].visits);
    pd_htab_free(&t);
    free(v);
}

/* Scans part of the table, inserts `more` new items (growing it several
 * times), finishes the scan; every original item must have been seen. A
 * repeat visit is allowed by the contract and only reported. */
static void scan_across_growth(uint32_t n, uint32_t more, int stop_after) {
    pd_htab t;
    cr_assert_eq(pd_htab_init(&t, item_hash), PD_OK);
    item *v = make_items(n + more);
    for (uint32_t i = 0; i < n; i++) pd_htab_insert(&t, &v[i].h, key_hash(v[i].key));
    uint64_t before = t.mask + 1;
    uint64_t c = 0;
    int steps = 0;
    do {
        c = pd_htab_scan(&t, c, count_visit, NULL);
        if (++steps == stop_after) {
            for (uint32_t i = n; i < n + more; i++) pd_htab_insert(&t, &v[i].h, key_hash(v[i].key));
            cr_assert_gt(t.mask + 1, before, "the table grew midway");
        }
    } while (c != 0);
    cr_assert_geq(steps, stop_after, "the scan was still running when the table grew");
    uint32_t twice = 0;
    for (uint32_t i = 0; i < n; i++) {
        cr_assert_geq(v[i].visits, 1u, "item %u present all along was never visited", i);
        twice += v[i].visits > 1;
    }
    cr_log_info("scan across growth %u -> %llu buckets: %u of %u seen twice", (unsigned)before,
                (unsigned long long)(t.mask + 1), twice, n);
    pd_htab_free(&t);
    free(v);
}

Test(htab, scan_across_growth_early) { scan_across_growth(1000, 20000, 3); }
Test(htab, scan_across_growth_midway) { scan_across_growth(1000, 20000, 512); }
Test(htab, scan_across_growth_late) { scan_across_growth(1000, 20000, 1020); }
Test(htab, scan_across_single_doubling) { scan_across_growth(1024, 1, 700); }

static void free_visit(void *ud, pd_hnode *e) {
    (*(uint32_t *)ud)++;
    pd_free(e);
}

Test(htab, scan_may_free_the_visited_entry) {
    /* pd_model_free frees entries from inside the scan callback, so the
     * scan must read an entry's next pointer before calling fn. */
    enum { N = 300 };
    size_t base = pd_alloc_live_bytes();
    pd_htab t;
    cr_assert_eq(pd_htab_init(&t, same_hash), PD_OK); /* one long chain */
    for (uint32_t i = 0; i < N; i++) {
        item *it = pd_calloc(1, sizeof *it);
        cr_assert_not_null(it);
        it->key = i;
        pd_htab_insert(&t, &it->h, 42);
    }
    uint32_t freed = 0;
    uint64_t c = 0;
    do c = pd_htab_scan(&t, c, free_visit, &freed); while (c != 0);
    cr_expect_eq(freed, (uint32_t)N);
    pd_htab_free(&t);
    cr_expect_eq(pd_alloc_live_bytes(), base, "every entry was freed once");
}

/* reserve: one rehash to the size asked for (entries already in stay
 * findable), none while inserting up to it, and never a shrink. */
Test(htab, reserve_sizes_once_and_keeps_entries) {
    pd_htab t;
    item *v = make_items(3000);
    cr_assert_eq(pd_htab_init(&t, item_hash), PD_OK);
    for (uint32_t i = 0; i < 100; i++) pd_htab_insert(&t, &v[i].h, key_hash(v[i].key));
    pd_htab_reserve(&t, 3000);
    uint64_t mask = t.mask;
    cr_assert_geq(mask + 1, 3000);
    cr_assert_lt(mask + 1, 2 * 4096);
    for (uint32_t i = 0; i < 100; i++) cr_assert_eq(find(&t, v[i].key, key_hash(v[i].key)), &v[i]);
    for (uint32_t i = 100; i < 3000; i++) pd_htab_insert(&t, &v[i].h, key_hash(v[i].key));
    cr_assert_eq(t.mask, mask, "the table grew again after reserve");
    pd_htab_reserve(&t, 10);
    cr_assert_eq(t.mask, mask, "reserve shrank the table");
    full_scan(&t);
    for (uint32_t i = 0; i < 3000; i++) cr_assert_eq(v[i].visits, 1, "key %u", v[i].key);
    pd_htab_free(&t);
    free(v);
}
