/* timerheap.h - a binary min-heap of intrusive timers.
 *
 * Every timer of the model (offline delay, custom status expiry, socket-server
 * timeout) is a pd_timer embedded in its owner and armed here, so a tick
 * costs O(k log n) for the k timers that are due, whatever the number of
 * users. Timers that may be pushed back are re-armed lazily by their owner
 * when they fire. The devices' idle timers, one timeout for all, are a
 * queue of the model instead (model/presence_idle.c). */
#ifndef PD_TIMERHEAP_H
#define PD_TIMERHEAP_H
#include <stdbool.h>
#include <stdint.h>
#include "base/status.h"

typedef struct {
    uint64_t due;    /* absolute time in ms */
    uint32_t idx;    /* 1 + position in the heap; 0 when not armed */
    uint8_t kind;    /* owner's tag, to find the owner when it fires */
} pd_timer;

typedef struct {
    pd_timer **h;
    uint32_t n, cap;
} pd_theap;

void pd_theap_init(pd_theap *th);
/* Frees the heap's array; armed timers are simply forgotten. */
void pd_theap_free(pd_theap *th);

/* Arms t to fire at due, or moves it there if armed. Fails only on ENOMEM,
 * and then t is left as it was. */
pd_status pd_theap_arm(pd_theap *th, pd_timer *t, uint64_t due);
void pd_theap_disarm(pd_theap *th, pd_timer *t);
static inline bool pd_timer_armed(const pd_timer *t) { return t->idx != 0; }

/* Removes and returns the earliest timer due at or before now, or NULL. */
pd_timer *pd_theap_pop_due(pd_theap *th, uint64_t now);
/* Time of the earliest armed timer, UINT64_MAX when none. */
uint64_t pd_theap_next(const pd_theap *th);
static inline uint32_t pd_theap_count(const pd_theap *th) { return th->n; }

#endif
