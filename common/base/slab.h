/* slab.h - size-class pools for the model's many small records (issue 15).
 *
 * A million devices are a million records of 110-130 bytes: from malloc,
 * each carries glibc's 8-byte header and is rounded up to 16 bytes. Here a
 * record of at most PD_SLAB_MAX bytes is rounded up to 8 and cut from
 * 64 KiB blocks, with no header; a freed record goes to the free list of
 * its size class and is the next one of that size handed out. Blocks go
 * back only when the pool is destroyed (a pool that shrank keeps its
 * records for the next ones; the model's churn reuses them). Larger
 * records go to pd_malloc.
 *
 * The caller gives the record's size when freeing it (the model computes
 * it from the record's lengths). A pool made with pooled = false hands
 * every record to pd_malloc instead, behind a 16-byte header that holds the
 * size, and aborts when a free names another size: builds with
 * AddressSanitizer use that (PD_SLAB_POOLED), so that ASan still sees
 * every record and the tests check the sizes. Not thread-safe. */
#ifndef PD_SLAB_H
#define PD_SLAB_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PD_SLAB_MAX 512

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

typedef struct pd_slab_block pd_slab_block;

typedef struct {
    void *free[PD_SLAB_MAX / 8 + 1]; /* by size / 8 */
    pd_slab_block *blocks;
    char *cur;                 /* the newest block's unused part */
    size_t left;
    uint64_t bytes;            /* in records handed out (rounded sizes) */
    bool pooled;
} pd_slab;

void pd_slab_init(pd_slab *s, bool pooled);
/* A zeroed record of size bytes (size > 0), or NULL when out of memory. */
void *pd_slab_alloc(pd_slab *s, size_t size);
/* Gives back p (NULL: nothing), allocated from s with the same size. */
void pd_slab_free(pd_slab *s, void *p, size_t size);
/* Frees the blocks. The caller frees its records first: those pd_malloc
 * holds (larger ones, or every one when not pooled) are not in a block. */
void pd_slab_destroy(pd_slab *s);

#endif
