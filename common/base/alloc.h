/* alloc.h - the allocator of the common library, with a test hook.
 *
 * All of common/ allocates through these so that tests can make the n-th
 * allocation fail (as hiredis' allocator injection does) and check that every
 * error path frees what it took. pd_free(NULL) is a no-op. */
#ifndef PD_ALLOC_H
#define PD_ALLOC_H
#include <stddef.h>

void *pd_malloc(size_t n);
void *pd_calloc(size_t count, size_t size);
void *pd_realloc(void *p, size_t n);
void  pd_free(void *p);

/* Tests only: make the allocation after `n` more succeed fail (n = 0 fails
 * the next one); a negative n disables injection. Not thread-safe. */
void pd_alloc_fail_after(long n);

/* Bytes currently allocated through this module (approximate: sizes given
 * by callers, no allocator overhead). For memory reports. */
size_t pd_alloc_live_bytes(void);

#endif
