/* test_ihtab.c - the hash table of slab records by index (ihtab.h).
 *
 * Items come from a pd_slab, pooled and not (the ASan builds' kind), and
 * start with their link as the model's users and devices do. The table
 * must find, remove, grow, shrink and scan as htab.h's does. */
#include "base/alloc.h"
#include "base/ids.h"
#include "base/ihtab.h"
#include <criterion/criterion.h>
#include <stdlib.h>

typedef struct {
    uint32_t next;
    uint32_t key;
    uint32_t visits;
} item;

static int hash_ud;

static uint64_t key_hash(uint32_t key) { return pd_hash(&key, sizeof key); }
static uint64_t item_hash(const void *ud, const void *e) {
    cr_assert_eq(ud, &hash_ud, "the table passes its hash_ud");
    return key_hash(((const item *)e)->key);
}
static uint64_t same_hash(const void *ud, const void *e) {
    (void)ud, (void)e;
    return 42;
}

static item *find(const pd_ihtab *t, uint32_t key, uint64_t h) {
    for (item *it = pd_ihtab_bucket(t, h); it; it = pd_ihtab_next(t, it))
        if (it->key == key) return it;
    return NULL;
}

static void count_visit(void *ud, void *e) {
    (void)ud;
    ((item *)e)->visits++;
}

static item **make_items(pd_slab *s, uint32_t n) {
    item **v = calloc(n, sizeof *v);
    cr_assert_not_null(v);
    for (uint32_t i = 0; i < n; i++) {
        cr_assert(v[i] = pd_slab_alloc(s, sizeof(item)));
        v[i]->key = i * 7 + 1;
    }
    return v;
}

static void free_items(pd_slab *s, item **v, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) pd_slab_free(s, v[i], sizeof(item));
    free(v);
    pd_slab_destroy(s);
}

static void insert_find_remove(bool pooled) {
    pd_slab s;
    pd_ihtab t;
    pd_slab_init(&s, pooled);
    cr_assert_eq(pd_ihtab_init(&t, &s, item_hash, &hash_ud), PD_OK);
    item **v = make_items(&s, 3);
    for (int i = 0; i < 3; i++) pd_ihtab_insert(&t, v[i], key_hash(v[i]->key));
    cr_expect_eq(t.n, 3u);
    for (int i = 0; i < 3; i++) cr_expect_eq(find(&t, v[i]->key, key_hash(v[i]->key)), v[i]);
    cr_expect_null(find(&t, 999, key_hash(999)));
    pd_ihtab_remove(&t, v[1], key_hash(v[1]->key));
    cr_expect_eq(t.n, 2u);
    cr_expect_null(find(&t, v[1]->key, key_hash(v[1]->key)));
    cr_expect_eq(find(&t, v[0]->key, key_hash(v[0]->key)), v[0]);
    cr_expect_eq(find(&t, v[2]->key, key_hash(v[2]->key)), v[2]);
    pd_ihtab_remove(&t, v[1], key_hash(v[1]->key)); /* not linked: nothing */
    cr_expect_eq(t.n, 2u);
    pd_ihtab_insert(&t, v[1], key_hash(v[1]->key));
    cr_expect_eq(find(&t, v[1]->key, key_hash(v[1]->key)), v[1]);
    pd_ihtab_free(&t);
    free_items(&s, v, 3);
}

Test(ihtab, insert_find_remove_pooled) { insert_find_remove(true); }
Test(ihtab, insert_find_remove_unpooled) { insert_find_remove(false); }

Test(ihtab, colliding_records_share_a_bucket) {
    pd_slab s;
    pd_ihtab t;
    pd_slab_init(&s, true);
    cr_assert_eq(pd_ihtab_init(&t, &s, same_hash, NULL), PD_OK);
    item **v = make_items(&s, 100);
    for (int i = 0; i < 100; i++) pd_ihtab_insert(&t, v[i], 42);
    pd_ihtab_remove(&t, v[50], 42); /* the middle, the tail and the head of the chain */
    pd_ihtab_remove(&t, v[0], 42);
    pd_ihtab_remove(&t, v[99], 42);
    cr_expect_eq(t.n, 97u);
    uint64_t c = 0;
    do c = pd_ihtab_scan(&t, c, count_visit, NULL); while (c);
    for (int i = 0; i < 100; i++) {
        bool gone = i == 50 || i == 99 || i == 0;
        cr_expect_eq(find(&t, v[i]->key, 42), gone ? NULL : v[i]);
        cr_expect_eq(v[i]->visits, gone ? 0u : 1u);
    }
    pd_ihtab_free(&t);
    free_items(&s, v, 100);
}

/* Grows past 20,000 records (and across slab blocks), shrinks back when
 * emptied, and a scan that starts before growth still sees every record. */
static void grow_shrink_scan(bool pooled) {
    enum { N = 20000 };
    pd_slab s;
    pd_ihtab t;
    pd_slab_init(&s, pooled);
    cr_assert_eq(pd_ihtab_init(&t, &s, item_hash, &hash_ud), PD_OK);
    uint64_t initial = t.mask + 1;
    item **v = make_items(&s, N);
    for (uint32_t i = 0; i < N / 2; i++) pd_ihtab_insert(&t, v[i], key_hash(v[i]->key));
    uint64_t c = pd_ihtab_scan(&t, 0, count_visit, NULL);
    for (uint32_t i = N / 2; i < N; i++) pd_ihtab_insert(&t, v[i], key_hash(v[i]->key));
    cr_expect_gt(t.mask + 1, initial, "the table grew");
    while (c) c = pd_ihtab_scan(&t, c, count_visit, NULL);
    for (uint32_t i = 0; i < N / 2; i++) cr_assert_geq(v[i]->visits, 1u, "visited across growth");
    for (uint32_t i = 0; i < N; i++) cr_assert_eq(find(&t, v[i]->key, key_hash(v[i]->key)), v[i]);
    for (uint32_t i = 100; i < N; i++) pd_ihtab_remove(&t, v[i], key_hash(v[i]->key));
    cr_expect_leq(t.mask + 1, 4 * 100, "shrunk to a quarter full at least");
    for (uint32_t i = 0; i < 100; i++) cr_assert_eq(find(&t, v[i]->key, key_hash(v[i]->key)), v[i]);
    for (uint32_t i = 100; i < N; i++) cr_assert_null(find(&t, v[i]->key, key_hash(v[i]->key)));
    pd_ihtab_reserve(&t, N);
    cr_expect_geq(t.mask + 1, (uint64_t)N, "reserved");
    for (uint32_t i = 0; i < 100; i++) cr_assert_eq(find(&t, v[i]->key, key_hash(v[i]->key)), v[i]);
    pd_ihtab_free(&t);
    free_items(&s, v, N);
}

Test(ihtab, grows_shrinks_and_scans_pooled) { grow_shrink_scan(true); }
Test(ihtab, grows_shrinks_and_scans_unpooled) { grow_shrink_scan(false); }

Test(ihtab, failed_growth_keeps_records) {
    pd_slab s;
    pd_ihtab t;
    pd_slab_init(&s, true);
    cr_assert_eq(pd_ihtab_init(&t, &s, item_hash, &hash_ud), PD_OK);
    uint64_t buckets = t.mask + 1;
    item **v = make_items(&s, 200);
    pd_alloc_fail_after(0);
    for (int i = 0; i < 200; i++) pd_ihtab_insert(&t, v[i], key_hash(v[i]->key));
    pd_alloc_fail_after(-1);
    cr_expect_eq(t.mask + 1, buckets, "no memory: the table stays denser");
    for (int i = 0; i < 200; i++) cr_expect_eq(find(&t, v[i]->key, key_hash(v[i]->key)), v[i]);
    pd_ihtab_free(&t);
    free_items(&s, v, 200);
}

/* A scan kept between loop turns (the sliced dumps, snapshots and heals of
 * sync/repl.c and snapshot.c): between its steps records come and go, the
 * table grows and shrinks, and a freed record's slot (and index) goes to
 * the next one. Every record there for the whole scan is visited, and a
 * visit only ever sees a record that is in the table. */
typedef struct {
    uint32_t next;
    uint32_t key;
    uint32_t visits;
    uint8_t live, stable;
} churn_item;

static uint64_t churn_hash(const void *ud, const void *e) {
    (void)ud;
    return key_hash(((const churn_item *)e)->key);
}

static void churn_visit(void *ud, void *e) {
    churn_item *it = e;
    (void)ud;
    cr_assert(it->live, "visited a record that left the table (key %u)", it->key);
    it->visits++;
}

static void scan_across_churn(bool pooled) {
    enum { STABLE = 300, MOVING = 4000 };
    pd_slab s;
    pd_ihtab t;
    churn_item *st[STABLE], *mv[MOVING] = {0};
    uint32_t key = 1, rnd = 12345;
    pd_slab_init(&s, pooled);
    cr_assert_eq(pd_ihtab_init(&t, &s, churn_hash, NULL), PD_OK);
    for (int i = 0; i < STABLE; i++) {
        cr_assert(st[i] = pd_slab_alloc(&s, sizeof(churn_item)));
        st[i]->key = key++;
        st[i]->live = st[i]->stable = 1;
        pd_ihtab_insert(&t, st[i], key_hash(st[i]->key));
    }
    uint64_t c = 0, grew = 0, shrank = 0;
    int steps = 0;
    do {
        uint64_t size = t.mask;
        c = pd_ihtab_scan(&t, c, churn_visit, NULL);
        /* Waves: fill up (growth), then empty out (shrinks), slots reused. */
        bool filling = (steps / 40) % 2 == 0;
        for (int k = 0; k < 200; k++) {
            rnd = rnd * 1103515245u + 12345u;
            churn_item **p = &mv[(rnd >> 8) % MOVING];
            if (*p == NULL && filling) {
                cr_assert(*p = pd_slab_alloc(&s, sizeof(churn_item)));
                (*p)->key = key++;
                (*p)->live = 1;
                pd_ihtab_insert(&t, *p, key_hash((*p)->key));
            } else if (*p != NULL && !filling) {
                pd_ihtab_remove(&t, *p, key_hash((*p)->key));
                (*p)->live = 0;
                pd_slab_free(&s, *p, sizeof(churn_item));
                *p = NULL;
            }
        }
        grew += t.mask > size;
        shrank += t.mask < size;
        steps++;
    } while (c != 0 && steps < 100000);
    cr_assert_eq(c, 0u, "the scan ends");
    cr_expect(grew > 0 && shrank > 0, "the table grew (%llu) and shrank (%llu) mid-scan",
              (unsigned long long)grew, (unsigned long long)shrank);
    for (int i = 0; i < STABLE; i++)
        cr_expect_geq(st[i]->visits, 1u, "record %u, there all along, not visited", st[i]->key);
    for (int i = 0; i < MOVING; i++)
        if (mv[i]) pd_slab_free(&s, mv[i], sizeof(churn_item));
    for (int i = 0; i < STABLE; i++) pd_slab_free(&s, st[i], sizeof(churn_item));
    pd_ihtab_free(&t);
    pd_slab_destroy(&s);
}

Test(ihtab, a_scan_across_churn_sees_every_stable_record_pooled) { scan_across_churn(true); }
Test(ihtab, a_scan_across_churn_sees_every_stable_record_unpooled) { scan_across_churn(false); }

/* The sharpest case of the above: a third of the way through, the table
 * shrinks by one size, folding buckets not visited yet into ones that
 * were. */
Test(ihtab, a_scan_across_one_shrink_sees_every_stable_record) {
    enum { STABLE = 1000, MOVING = 5000 };
    pd_slab s;
    pd_ihtab t;
    churn_item *v[STABLE + MOVING];
    pd_slab_init(&s, true);
    cr_assert_eq(pd_ihtab_init(&t, &s, churn_hash, NULL), PD_OK);
    for (uint32_t i = 0; i < STABLE + MOVING; i++) {
        cr_assert(v[i] = pd_slab_alloc(&s, sizeof(churn_item)));
        v[i]->key = i + 1;
        v[i]->live = 1;
        pd_ihtab_insert(&t, v[i], key_hash(v[i]->key));
    }
    uint64_t size = t.mask + 1, c = 0;
    for (uint64_t k = 0; k < size / 3; k++) c = pd_ihtab_scan(&t, c, churn_visit, NULL);
    uint32_t i = STABLE + MOVING;
    while (t.mask + 1 == size) {
        cr_assert_gt(i, (uint32_t)STABLE, "the table did not shrink");
        i--;
        pd_ihtab_remove(&t, v[i], key_hash(v[i]->key));
        v[i]->live = 0;
    }
    cr_assert_eq(t.mask + 1, size / 2);
    while (c) c = pd_ihtab_scan(&t, c, churn_visit, NULL);
    for (uint32_t k = 0; k < STABLE; k++)
        cr_expect_geq(v[k]->visits, 1u, "record %u, there all along, not visited", v[k]->key);
    for (uint32_t k = 0; k < STABLE + MOVING; k++) pd_slab_free(&s, v[k], sizeof(churn_item));
    pd_ihtab_free(&t);
    pd_slab_destroy(&s);
}
