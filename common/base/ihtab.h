/* ihtab.h - a chained hash table of slab records linked by 32-bit index.
 *
 * The same table as htab.h (power-of-two buckets, the caller's hashes and
 * key comparisons, the reverse-binary scan cursor), for records that come
 * from one pd_slab (base/slab.h): each starts with a uint32_t, the index
 * of the next record of its bucket, and the buckets are indexes too. A
 * million records then take 4 bytes of link and about 4 of bucket each,
 * not 8 and 8 (issue 15). Index 0 is no record. */
#ifndef PD_IHTAB_H
#define PD_IHTAB_H
#include <stddef.h>
#include <stdint.h>
#include "base/slab.h"
#include "base/status.h"

/* rec: a record of the table's slab, whose first member is its link; ud:
 * the table's hash_ud. */
typedef uint64_t (*pd_ihash_fn)(const void *ud, const void *rec);

typedef struct {
    uint32_t *b;
    uint64_t mask;             /* buckets - 1 */
    size_t n;
    pd_ihash_fn hash;
    const void *hash_ud;
    const pd_slab *slab;
} pd_ihtab;

pd_status pd_ihtab_init(pd_ihtab *t, const pd_slab *slab, pd_ihash_fn hash, const void *hash_ud);
void pd_ihtab_free(pd_ihtab *t);

static inline uint32_t pd_ihtab_link(const void *rec) {
    uint32_t i;
    memcpy(&i, rec, sizeof i);
    return i;
}
/* First record of the bucket for hash h (NULL: none); walk with
 * pd_ihtab_next and compare keys. */
static inline void *pd_ihtab_bucket(const pd_ihtab *t, uint64_t h) {
    return pd_slab_ptr(t->slab, t->b[h & t->mask]);
}
static inline void *pd_ihtab_next(const pd_ihtab *t, const void *rec) {
    return pd_slab_ptr(t->slab, pd_ihtab_link(rec));
}
/* As pd_htab_insert, pd_htab_reserve and pd_htab_remove (htab.h). */
void pd_ihtab_insert(pd_ihtab *t, void *rec, uint64_t h);
void pd_ihtab_reserve(pd_ihtab *t, uint64_t n);
void pd_ihtab_remove(pd_ihtab *t, void *rec, uint64_t h);

/* Visits the bucket at cursor and returns the next cursor (0 = done), as
 * pd_htab_scan. */
typedef void (*pd_ihtab_visit)(void *ud, void *rec);
uint64_t pd_ihtab_scan(const pd_ihtab *t, uint64_t cursor, pd_ihtab_visit fn, void *ud);

#endif
