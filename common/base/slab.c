/* slab.c - size-class pools (see slab.h). */
#include "base/slab.h"
#include <stdlib.h>
#include "base/alloc.h"
#include "base/log.h"

#define BLOCK ((size_t)1 << PD_SLAB_BLOCK_BITS)
#define CHUNK_BLOCKS 32                  /* 2 MiB of blocks per allocation */
#define BLOCK_HEADER 8                   /* the block's number; offset 0 is no record */
#define MAX_BLOCKS ((uint32_t)1 << (32 - PD_SLAB_OFF_BITS))
#define HEADER 16                        /* not pooled: size, then index */

void pd_slab_init(pd_slab *s, bool pooled) {
    memset(s, 0, sizeof *s);
    s->pooled = pooled;
}

static size_t round8(size_t n) { return (n + 7) & ~(size_t)7; }

/* The array p of n used and *cap allocated entries of size bytes, with
 * room for one more: p itself, or grown (NULL when out of memory, p then
 * unchanged). */
static void *grown(void *p, uint32_t n, uint32_t *cap, size_t size) {
    if (n < *cap) return p;
    uint32_t c = *cap ? *cap * 2 : 64;
    void *q = pd_realloc(p, size * c);
    if (q != NULL) *cap = c;
    return q;
}

/* Puts what is left of the current block on the free list of its size, so
 * that a new block wastes nothing (it is smaller than the record that did
 * not fit, so at most PD_SLAB_MAX). */
static void retire_rest(pd_slab *s) {
    if (s->left >= 8) {
        void **p = (void **)(void *)s->cur;
        *p = s->free[s->left / 8];
        s->free[s->left / 8] = p;
    }
    s->cur = NULL;
    s->left = 0;
}

/* A new block, numbered, from the current chunk or a new one. */
static bool new_block(pd_slab *s) {
    char **at = s->nat < MAX_BLOCKS ? grown(s->at, s->nat, &s->cap, sizeof *s->at) : NULL;
    if (at == NULL) return false;
    s->at = at;
    if (s->blocks_left == 0) {
        void **chunks = grown(s->chunks, s->nchunks, &s->chunks_cap, sizeof *s->chunks);
        if (chunks == NULL) return false;
        s->chunks = chunks;
        /* Aligned inside: the pages of the unused start are never touched. */
        char *c = pd_malloc(CHUNK_BLOCKS * BLOCK + BLOCK);
        if (c == NULL) return false;
        s->chunks[s->nchunks++] = c;
        s->next_block = (char *)(((uintptr_t)c + BLOCK - 1) & ~(uintptr_t)(BLOCK - 1));
        s->blocks_left = CHUNK_BLOCKS;
    }
    char *b = s->next_block;
    s->next_block += BLOCK;
    s->blocks_left--;
    uint32_t no = s->nat; /* block 0's header is at index 0: no record has it */
    memcpy(b, &no, sizeof no);
    s->at[s->nat++] = b;
    retire_rest(s);
    s->cur = b + BLOCK_HEADER;
    s->left = BLOCK - BLOCK_HEADER;
    return true;
}

static void *alloc_unpooled(pd_slab *s, size_t size) {
    uint32_t i;
    if (s->nat == 0) s->nat = 1; /* index 0 is NULL */
    bool reuse = s->nspare - s->spare_head > PD_SLAB_QUARANTINE;
    if (!reuse) {
        char **at = grown(s->at, s->nat, &s->cap, sizeof *s->at);
        if (at == NULL) return NULL;
        s->at = at;
    }
    char *p = pd_calloc(1, HEADER + size);
    if (p == NULL) return NULL;
    i = reuse ? s->spare[s->spare_head++] : s->nat++;
    s->at[i] = p + HEADER;
    memcpy(p, &size, sizeof size);
    memcpy(p + 8, &i, sizeof i);
    s->bytes += size;
    return p + HEADER;
}

void *pd_slab_alloc(pd_slab *s, size_t size) {
    if (size > PD_SLAB_MAX) return NULL;
    if (!s->pooled) return alloc_unpooled(s, size);
    size_t n = round8(size ? size : 1);
    void **head = &s->free[n / 8];
    void *p = *head;
    if (p != NULL) {
        *head = *(void **)p;
    } else {
        if (s->left < n && !new_block(s)) return NULL;
        p = s->cur;
        s->cur += n;
        s->left -= n;
    }
    memset(p, 0, n);
    s->bytes += n;
    return p;
}

static void free_unpooled(pd_slab *s, void *p, size_t size) {
    char *h = (char *)p - HEADER;
    size_t was;
    uint32_t i;
    memcpy(&was, h, sizeof was);
    memcpy(&i, h + 8, sizeof i);
    if (was != size || i == 0 || i >= s->nat || s->at[i] != p) {
        pd_log(PD_LOG_ERROR, "pd_slab_free: a record of %zu bytes freed as %zu, or not one "
               "this slab holds (index %u)", was, size, i);
        abort();
    }
    /* at[i] keeps the freed pointer while the index waits (see slab.h):
     * a stale index then reads freed memory, which ASan reports. */
    if (s->spare_head > 0 && s->nspare == s->spare_cap) {
        s->nspare -= s->spare_head;
        memmove(s->spare, s->spare + s->spare_head, sizeof *s->spare * s->nspare);
        s->spare_head = 0;
    }
    /* Out of memory: the index is not reused. */
    uint32_t *spare = grown(s->spare, s->nspare, &s->spare_cap, sizeof *s->spare);
    if (spare != NULL) {
        s->spare = spare;
        s->spare[s->nspare++] = i;
    }
    s->bytes -= size;
    pd_free(h);
}

void pd_slab_free(pd_slab *s, void *p, size_t size) {
    if (p == NULL) return;
    if (!s->pooled) {
        free_unpooled(s, p, size);
        return;
    }
    size_t n = round8(size ? size : 1);
    s->bytes -= n;
    *(void **)p = s->free[n / 8];
    s->free[n / 8] = p;
}

void pd_slab_destroy(pd_slab *s) {
    for (uint32_t i = 0; i < s->nchunks; i++) pd_free(s->chunks[i]);
    pd_free(s->chunks);
    pd_free(s->at);
    pd_free(s->spare);
    pd_slab_init(s, s->pooled);
}
