/* alloc.c - counting allocator wrappers with failure injection for tests. */
#include "base/alloc.h"
#include <malloc.h>
#include <stdlib.h>

static long fail_after = -1;
static size_t live_bytes;

static int should_fail(void) {
    if (fail_after < 0) return 0;
    if (fail_after == 0) return 1;
    fail_after--;
    return 0;
}

void pd_alloc_fail_after(long n) { fail_after = n; }

size_t pd_alloc_live_bytes(void) { return live_bytes; }

void *pd_malloc(size_t n) {
    if (should_fail()) return NULL;
    void *p = malloc(n);
    if (p) live_bytes += malloc_usable_size(p);
    return p;
}

void *pd_calloc(size_t count, size_t size) {
    if (should_fail()) return NULL;
    void *p = calloc(count, size);
    if (p) live_bytes += malloc_usable_size(p);
    return p;
}

void *pd_realloc(void *p, size_t n) {
    if (should_fail()) return NULL;
    size_t old = p ? malloc_usable_size(p) : 0;
    void *q = realloc(p, n);
    if (q) live_bytes += malloc_usable_size(q) - old;
    return q;
}

void pd_free(void *p) {
    if (p == NULL) return;
    live_bytes -= malloc_usable_size(p);
    free(p);
}
