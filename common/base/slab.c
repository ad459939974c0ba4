/* slab.c - size-class pools (see slab.h). */
#include "base/slab.h"
#include <stdlib.h>
#include <string.h>
#include "base/alloc.h"
#include "base/log.h"

#define BLOCK_BYTES (64 * 1024 - 64) /* leaves room for malloc's own header */
#define HEADER 16                    /* not pooled: the size, keeping 16-byte alignment */

struct pd_slab_block {
    pd_slab_block *next;
    uint64_t pad;                    /* records start 16-byte aligned */
    char mem[];
};

void pd_slab_init(pd_slab *s, bool pooled) {
    memset(s, 0, sizeof *s);
    s->pooled = pooled;
}

static size_t round8(size_t n) { return (n + 7) & ~(size_t)7; }

/* Puts what is left of the current block on the free list of its size, so
 * that a new block wastes nothing. */
static void retire_rest(pd_slab *s) {
    if (s->left >= 8) {
        void **p = (void **)(void *)s->cur;
        *p = s->free[s->left / 8];
        s->free[s->left / 8] = p;
    }
    s->cur = NULL;
    s->left = 0;
}

static void *alloc_unpooled(pd_slab *s, size_t size) {
    char *p = pd_calloc(1, HEADER + size);
    if (p == NULL) return NULL;
    memcpy(p, &size, sizeof size);
    s->bytes += size;
    return p + HEADER;
}

void *pd_slab_alloc(pd_slab *s, size_t size) {
    if (!s->pooled) return alloc_unpooled(s, size);
    size_t n = round8(size ? size : 1);
    if (n > PD_SLAB_MAX) {
        void *p = pd_calloc(1, n);
        if (p) s->bytes += n;
        return p;
    }
    void **head = &s->free[n / 8];
    void *p = *head;
    if (p != NULL) {
        *head = *(void **)p;
    } else {
        if (s->left < n) {
            pd_slab_block *b = pd_malloc(sizeof *b + BLOCK_BYTES);
            if (b == NULL) return NULL;
            retire_rest(s);
            b->next = s->blocks;
            s->blocks = b;
            s->cur = b->mem;
            s->left = BLOCK_BYTES;
        }
        p = s->cur;
        s->cur += n;
        s->left -= n;
    }
    memset(p, 0, n);
    s->bytes += n;
    return p;
}

void pd_slab_free(pd_slab *s, void *p, size_t size) {
    if (p == NULL) return;
    if (!s->pooled) {
        char *h = (char *)p - HEADER;
        size_t was;
        memcpy(&was, h, sizeof was);
        if (was != size) {
            pd_log(PD_LOG_ERROR, "pd_slab_free: a record of %zu bytes freed as %zu", was, size);
            abort();
        }
        s->bytes -= size;
        pd_free(h);
        return;
    }
    size_t n = round8(size ? size : 1);
    s->bytes -= n;
    if (n > PD_SLAB_MAX) {
        pd_free(p);
        return;
    }
    *(void **)p = s->free[n / 8];
    s->free[n / 8] = p;
}

void pd_slab_destroy(pd_slab *s) {
    while (s->blocks) {
        pd_slab_block *b = s->blocks;
        s->blocks = b->next;
        pd_free(b);
    }
    memset(s->free, 0, sizeof s->free);
    s->cur = NULL;
    s->left = 0;
    s->bytes = 0;
}
