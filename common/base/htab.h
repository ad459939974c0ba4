/* htab.h - an intrusive chained hash table with power-of-two buckets.
 *
 * Entries embed a pd_hnode as their first member and are owned by the
 * caller; the table only links them. The caller supplies the hash of each
 * entry (so the table stores no hashes) and compares keys itself while
 * walking a bucket. Scanning uses the reverse-binary cursor of Redis' SCAN:
 * every entry present for the whole scan is visited at least once, even if
 * the table grows in between; an entry may be visited twice. */
#ifndef PD_HTAB_H
#define PD_HTAB_H
#include <stddef.h>
#include <stdint.h>
#include "base/status.h"

typedef struct pd_hnode {
    struct pd_hnode *next;
} pd_hnode;

typedef uint64_t (*pd_hash_fn)(const pd_hnode *e);

typedef struct {
    pd_hnode **b;
    uint64_t mask;    /* buckets - 1 */
    size_t n;
    pd_hash_fn hash;
} pd_htab;

pd_status pd_htab_init(pd_htab *t, pd_hash_fn hash);
void pd_htab_free(pd_htab *t);
/* First entry of the bucket for hash h; walk with ->next and compare keys. */
static inline pd_hnode *pd_htab_bucket(const pd_htab *t, uint64_t h) {
    return t->b[h & t->mask];
}
/* Links e (whose hash is h); grows the table when it gets full. A failed
 * growth is not an error: the table just stays denser. */
void pd_htab_insert(pd_htab *t, pd_hnode *e, uint64_t h);
/* Grows the table at once to hold n entries without growing again (a bulk
 * load: one rehash instead of one per doubling). Out of memory: unchanged. */
void pd_htab_reserve(pd_htab *t, uint64_t n);
/* Unlinks e (whose hash is h); shrinks the table by half when it is a
 * quarter full, down to its initial size, so that emptied tables give
 * their memory back. Not while a pd_htab_scan callback runs. */
void pd_htab_remove(pd_htab *t, pd_hnode *e, uint64_t h);

/* Reverses the bits of v (the scan cursor's order). */
static inline uint64_t pd_rev64(uint64_t v) {
    v = ((v >> 1) & 0x5555555555555555ULL) | ((v & 0x5555555555555555ULL) << 1);
    v = ((v >> 2) & 0x3333333333333333ULL) | ((v & 0x3333333333333333ULL) << 2);
    v = ((v >> 4) & 0x0f0f0f0f0f0f0f0fULL) | ((v & 0x0f0f0f0f0f0f0f0fULL) << 4);
    v = ((v >> 8) & 0x00ff00ff00ff00ffULL) | ((v & 0x00ff00ff00ff00ffULL) << 8);
    v = ((v >> 16) & 0x0000ffff0000ffffULL) | ((v & 0x0000ffff0000ffffULL) << 16);
    return (v >> 32) | (v << 32);
}

/* Visits the bucket at cursor and returns the next cursor (0 = done). */
typedef void (*pd_htab_visit)(void *ud, pd_hnode *e);
uint64_t pd_htab_scan(const pd_htab *t, uint64_t cursor, pd_htab_visit fn, void *ud);

#endif
