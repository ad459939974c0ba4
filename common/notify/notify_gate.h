/* notify_gate.h - per-user coalescing of change notifications
 * (PRESENCE_NOTIFY_MIN_INTERVAL_MS).
 *
 * A user's first change after a quiet interval goes out at once (leading
 * edge: no added latency for a user who changes now and then). Changes
 * offered within `interval` of the user's last notification are held, each
 * replacing the one held before, and the latest goes out when the interval
 * ends (trailing edge). So a user changing 100 times a second is announced
 * at most about 1000 / interval + 1 times a second, and the last
 * notification always carries the final state. A held view that a watcher
 * could not tell from the one sent last (status, custom status, last_seen:
 * all but ts) is not sent: a user that flips and flips back within the
 * interval is announced once, as the protocol's "exactly once" asks. Views
 * keep the ts the model gave them, so ts still grows per user.
 *
 * Memory: one small entry per user notified within the last interval, plus
 * a copy of the held view for those with a change waiting. At most
 * max_users entries: when full, a user without an entry is sent at once,
 * uncoalesced (counted as overflow). Deadlines are the last send + the
 * interval, a constant, so they come due in the order of the sends: the
 * entries form one FIFO (O(1) per operation, no heap), and notifications of
 * different users leave in the order they were sent or held.
 *
 * Not thread-safe; the owner drives it with its clock (ms). */
#ifndef PD_NOTIFY_GATE_H
#define PD_NOTIFY_GATE_H
#include <stdint.h>
#include "wire/codec.h"

typedef struct pd_gate pd_gate;

/* Called for each notification to publish; v is borrowed. */
typedef void (*pd_gate_send_fn)(void *ud, const pd_view *v);

typedef struct {
    uint64_t offered;      /* views offered */
    uint64_t sent;         /* views sent (leading, trailing, overflow, flush) */
    uint64_t coalesced;    /* held views replaced by a later one: never sent */
    uint64_t overflow;     /* sent at once because the gate was full */
    uint64_t entries;      /* users in an interval now */
    uint64_t pending;      /* users with a view held now */
} pd_gate_stats;

/* interval_ms 0: every view is sent at once. NULL if out of memory. */
pd_gate *pd_gate_new(uint64_t interval_ms, uint32_t max_users, pd_gate_send_fn fn, void *ud);
/* Frees the gate; held views are dropped (pd_gate_flush first to send). */
void pd_gate_free(pd_gate *g);

/* A change of v->user at time now: sent at once or held (v is copied). */
void pd_gate_offer(pd_gate *g, const pd_view *v, uint64_t now);
/* Sends the held views whose interval ended at or before now; forgets
 * users whose interval ended with nothing held. */
void pd_gate_tick(pd_gate *g, uint64_t now);
/* When pd_gate_tick has something to do (UINT64_MAX: nothing). */
uint64_t pd_gate_next_due(const pd_gate *g);
/* Sends every held view now, in order (before stopping). */
void pd_gate_flush(pd_gate *g);

void pd_gate_stats_get(const pd_gate *g, pd_gate_stats *st);

#endif
