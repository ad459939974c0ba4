/* htab.c - intrusive chained hash table (see htab.h). */
#include "base/htab.h"
#include "base/alloc.h"

#define HTAB_INITIAL 16

pd_status pd_htab_init(pd_htab *t, pd_hash_fn hash) {
    t->b = pd_calloc(HTAB_INITIAL, sizeof *t->b);
    if (t->b == NULL) return PD_ENOMEM;
    t->mask = HTAB_INITIAL - 1;
    t->n = 0;
    t->hash = hash;
    return PD_OK;
}

void pd_htab_free(pd_htab *t) {
    pd_free(t->b);
    t->b = NULL;
    t->n = 0;
}

/* Moves every entry into a table of `size` buckets (a power of two). */
static void rehash(pd_htab *t, uint64_t size) {
    pd_hnode **nb = pd_calloc(size, sizeof *nb);
    if (nb == NULL) return;
    for (uint64_t i = 0; i <= t->mask; i++) {
        pd_hnode *e = t->b[i];
        while (e) {
            pd_hnode *next = e->next;
            uint64_t j = t->hash(e) & (size - 1);
            e->next = nb[j];
            nb[j] = e;
            e = next;
        }
    }
    pd_free(t->b);
    t->b = nb;
    t->mask = size - 1;
}

void pd_htab_reserve(pd_htab *t, uint64_t n) {
    uint64_t size = t->mask + 1;
    while (size < n && size < ((uint64_t)1 << 40)) size *= 2;
    if (size > t->mask + 1) rehash(t, size);
}

void pd_htab_insert(pd_htab *t, pd_hnode *e, uint64_t h) {
    if (t->n >= t->mask + 1) rehash(t, (t->mask + 1) * 2);
    pd_hnode **slot = &t->b[h & t->mask];
    e->next = *slot;
    *slot = e;
    t->n++;
}

void pd_htab_remove(pd_htab *t, pd_hnode *e, uint64_t h) {
    pd_hnode **p = &t->b[h & t->mask];
    while (*p && *p != e) p = &(*p)->next;
    if (*p == NULL) return;
    *p = e->next;
    e->next = NULL;
    t->n--;
    /* Shrinks when a quarter full: half full after, so that growing again
     * takes as many inserts as the table holds (no flapping). A failed
     * shrink leaves it sparser. */
    uint64_t size = t->mask + 1;
    if (size > HTAB_INITIAL && t->n < size / 4) rehash(t, size / 2);
}


uint64_t pd_htab_scan(const pd_htab *t, uint64_t cursor, pd_htab_visit fn, void *ud) {
    uint64_t m = t->mask;
    for (pd_hnode *e = t->b[cursor & m]; e; ) {
        pd_hnode *next = e->next; /* fn may not unlink, but be safe */
        fn(ud, e);
        e = next;
    }
    /* Increment the reversed cursor over the bits of the mask. */
    cursor |= ~m;
    cursor = pd_rev64(cursor);
    cursor++;
    cursor = pd_rev64(cursor);
    return cursor;
}
