/* slab.h - size-class pools for the model's many small records (issue 15).
 *
 * A million devices are a million records of 80-130 bytes: from malloc,
 * each carries glibc's 8-byte header and is rounded up to 16 bytes. Here a
 * record of at most PD_SLAB_MAX bytes is rounded up to 8 and cut from
 * 64 KiB blocks, with no header; a freed record goes to the free list of
 * its size class and is the next one of that size handed out. Blocks go
 * back only when the pool is destroyed (a pool that shrank keeps its
 * records for the next ones; the model's churn reuses them).
 *
 * Every record also has a 32-bit index (pd_slab_idx, pd_slab_ptr), so
 * that records can name each other in 4 bytes instead of an 8-byte
 * pointer; 0 is no record (NULL). Blocks are 64 KiB-aligned (cut from
 * 2 MiB chunks) and start with their number: a record's index is its
 * block's number and its offset / 8 in it, found from the pointer alone.
 *
 * The caller gives the record's size when freeing it (the model computes
 * it from the record's lengths). A pool made with pooled = false hands
 * every record to pd_malloc instead, behind a 16-byte header that holds the
 * size and the index (records by index in a table), and aborts when a free
 * names another size: builds with AddressSanitizer use that
 * (PD_SLAB_POOLED), so that ASan still sees every record and the tests
 * check the sizes. There a freed record's index goes to a new record only
 * after PD_SLAB_QUARANTINE others were freed, and names the freed memory
 * meanwhile: an index kept after its record was freed (a stale link) is
 * a use after free that ASan reports, not a silent read of whichever
 * record took the index. Not thread-safe. */
#ifndef PD_SLAB_H
#define PD_SLAB_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PD_SLAB_MAX 2048       /* bytes of the largest record */
#define PD_SLAB_BLOCK_BITS 16  /* 64 KiB blocks */
#define PD_SLAB_OFF_BITS (PD_SLAB_BLOCK_BITS - 3) /* an index's offset / 8 */
#define PD_SLAB_QUARANTINE 1024 /* not pooled: freed indexes that wait */

#if defined(__SANITIZE_ADDRESS__)
#define PD_SLAB_POOLED false
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PD_SLAB_POOLED false
#endif
#endif
#ifndef PD_SLAB_POOLED
#define PD_SLAB_POOLED true
#endif

typedef struct {
    void *free[PD_SLAB_MAX / 8 + 1]; /* by size / 8 */
    char **at;                 /* pooled: blocks by number; else records by index */
    uint32_t nat, cap;         /* used and allocated entries of `at` */
    uint32_t *spare;           /* not pooled: indexes of freed records, oldest first */
    uint32_t spare_head, nspare, spare_cap; /* spare[spare_head..nspare) wait */
    void **chunks;             /* pooled: the allocations the blocks are cut from */
    uint32_t nchunks, chunks_cap;
    char *next_block;          /* the newest chunk's next unused block */
    uint32_t blocks_left;
    char *cur;                 /* the newest block's unused part */
    size_t left;
    uint64_t bytes;            /* in records handed out (rounded sizes) */
    bool pooled;
} pd_slab;

void pd_slab_init(pd_slab *s, bool pooled);
/* A zeroed record of size bytes (0 < size <= PD_SLAB_MAX), or NULL when
 * out of memory (or too large). */
void *pd_slab_alloc(pd_slab *s, size_t size);
/* Gives back p (NULL: nothing), allocated from s with the same size. */
void pd_slab_free(pd_slab *s, void *p, size_t size);
/* Frees the blocks. The caller frees its records first: those pd_malloc
 * holds (every one when not pooled) are not in a block. */
void pd_slab_destroy(pd_slab *s);

/* The index of record p of s (0 for NULL). */
static inline uint32_t pd_slab_idx(const pd_slab *s, const void *p) {
    uint32_t i;
    if (p == NULL) return 0;
    if (!s->pooled) {
        memcpy(&i, (const char *)p - 8, sizeof i);
        return i;
    }
    uintptr_t a = (uintptr_t)p, base = a & ~(((uintptr_t)1 << PD_SLAB_BLOCK_BITS) - 1);
    memcpy(&i, (const void *)base, sizeof i);
    return i << PD_SLAB_OFF_BITS | (uint32_t)((a - base) >> 3);
}

/* The record of s at index i (NULL for 0). */
static inline void *pd_slab_ptr(const pd_slab *s, uint32_t i) {
    if (i == 0) return NULL;
    if (!s->pooled) return s->at[i];
    return s->at[i >> PD_SLAB_OFF_BITS] +
           ((size_t)(i & ((1u << PD_SLAB_OFF_BITS) - 1)) << 3);
}

#endif
