/* ihtab.c - chained hash table of slab records by index (see ihtab.h). */
#include "base/ihtab.h"
#include "base/alloc.h"
#include "base/htab.h"

#define IHTAB_INITIAL 16

static void set_link(void *rec, uint32_t i) { memcpy(rec, &i, sizeof i); }

pd_status pd_ihtab_init(pd_ihtab *t, const pd_slab *slab, pd_ihash_fn hash, const void *hash_ud) {
    t->b = pd_calloc(IHTAB_INITIAL, sizeof *t->b);
    if (t->b == NULL) return PD_ENOMEM;
    t->mask = IHTAB_INITIAL - 1;
    t->n = 0;
    t->hash = hash;
    t->hash_ud = hash_ud;
    t->slab = slab;
    return PD_OK;
}

void pd_ihtab_free(pd_ihtab *t) {
    pd_free(t->b);
    t->b = NULL;
    t->n = 0;
}

/* Moves every record into a table of `size` buckets (a power of two). */
static void rehash(pd_ihtab *t, uint64_t size) {
    uint32_t *nb = pd_calloc(size, sizeof *nb);
    if (nb == NULL) return;
    for (uint64_t i = 0; i <= t->mask; i++) {
        uint32_t e = t->b[i];
        while (e) {
            void *rec = pd_slab_ptr(t->slab, e);
            uint32_t next = pd_ihtab_link(rec);
            uint64_t j = t->hash(t->hash_ud, rec) & (size - 1);
            set_link(rec, nb[j]);
            nb[j] = e;
            e = next;
        }
    }
    pd_free(t->b);
    t->b = nb;
    t->mask = size - 1;
}

void pd_ihtab_reserve(pd_ihtab *t, uint64_t n) {
    uint64_t size = t->mask + 1;
    while (size < n && size < ((uint64_t)1 << 32)) size *= 2;
    if (size > t->mask + 1) rehash(t, size);
}

void pd_ihtab_insert(pd_ihtab *t, void *rec, uint64_t h) {
    if (t->n >= t->mask + 1) rehash(t, (t->mask + 1) * 2);
    uint32_t *slot = &t->b[h & t->mask];
    set_link(rec, *slot);
    *slot = pd_slab_idx(t->slab, rec);
    t->n++;
}

void pd_ihtab_remove(pd_ihtab *t, void *rec, uint64_t h) {
    uint32_t i = pd_slab_idx(t->slab, rec);
    uint32_t *p = &t->b[h & t->mask];
    while (*p && *p != i) p = (uint32_t *)pd_slab_ptr(t->slab, *p); /* its link is first */
    if (*p == 0) return;
    *p = pd_ihtab_link(rec);
    set_link(rec, 0);
    t->n--;
    /* As pd_htab_remove: half full after a shrink, so no flapping. */
    uint64_t size = t->mask + 1;
    if (size > IHTAB_INITIAL && t->n < size / 4) rehash(t, size / 2);
}

uint64_t pd_ihtab_scan(const pd_ihtab *t, uint64_t cursor, pd_ihtab_visit fn, void *ud) {
    uint64_t m = t->mask;
    for (uint32_t e = t->b[cursor & m]; e;) {
        void *rec = pd_slab_ptr(t->slab, e);
        e = pd_ihtab_link(rec); /* fn may not unlink, but be safe */
        fn(ud, rec);
    }
    cursor |= ~m;
    cursor = pd_rev64(cursor);
    cursor++;
    cursor = pd_rev64(cursor);
    return cursor;
}
