/* inbox.h - the queue of messages the node's loop thread handles.
 *
 * The loop pushes what it read from the receiving connection
 * (node_nats.c); nats.c's threads push what JetStream delivers (the
 * replay, the stream's end) and wake the loop. The loop drains the inbox
 * and owns all state.
 * The queue is a growable array swapped out whole by the consumer, so the
 * lock is held for a push or a pointer swap, never for message handling.
 *
 * It is bounded (pd_inbox_limit): a loop that falls behind would otherwise
 * grow it without end. A push beyond the bounds is dropped and counted by
 * kind, and the node repairs what was lost (node_slow.c); kinds that must
 * never be dropped (the flow-controlled replay) are exempt. */
#ifndef PD_INBOX_H
#define PD_INBOX_H
#include <nats/nats.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include "base/status.h"

typedef struct {
    natsMsg *msg;
    int kind;      /* which subscription it came from (node_sub_kind) */
} pd_inbox_item;

#define PD_INBOX_KINDS 16

typedef struct {
    pthread_mutex_t mu;
    pd_inbox_item *items;
    uint32_t n, cap;
    uint64_t bytes;            /* payload bytes queued */
    uint32_t bounded_n;        /* messages queued of kinds not exempt... */
    uint64_t bounded_bytes;    /* ...and their bytes: what the bounds apply to */
    uint64_t max_msgs, max_bytes;
    uint32_t exempt;           /* bit k: kind k is never dropped for the bounds */
    uint64_t pushed;
    uint64_t dropped[PD_INBOX_KINDS]; /* by kind: bounds reached or out of memory */
    bool closed;               /* after pd_inbox_close: pushes are dropped */
} pd_inbox;

/* An unbounded inbox. */
pd_status pd_inbox_init(pd_inbox *ib);
/* Bounds the queue: messages and payload bytes (0 = no bound); kinds in
 * the `exempt` bit mask are always queued. */
void pd_inbox_limit(pd_inbox *ib, uint64_t max_msgs, uint64_t max_bytes, uint32_t exempt);
/* The queue's depth now: messages and payload bytes waiting for the loop
 * (the consumer may have taken a batch it is still handling). */
void pd_inbox_depth(pd_inbox *ib, uint64_t *msgs, uint64_t *bytes);
/* Copies the drop counters (PD_INBOX_KINDS of them) into out. */
void pd_inbox_dropped(pd_inbox *ib, uint64_t *out);
/* Destroys the queued messages and drops every later push (a handler of
 * nats.c may still be running): call while nats.c is still alive. */
void pd_inbox_close(pd_inbox *ib);
/* Frees the queue (messages too, if pd_inbox_close was not called). */
void pd_inbox_free(pd_inbox *ib);
/* Takes ownership of msg (destroyed and counted if it cannot be queued:
 * closed, bounds reached, out of memory). Returns true if the queue was
 * empty before, i.e. the consumer needs a wake-up. kind < PD_INBOX_KINDS. */
bool pd_inbox_push(pd_inbox *ib, natsMsg *msg, int kind);
/* Moves the queued items into *out (count *n); the caller owns the array
 * and the messages, and hands the array back to pd_inbox_release() when done. */
void pd_inbox_take(pd_inbox *ib, pd_inbox_item **out, uint32_t *n);
void pd_inbox_release(pd_inbox_item *items);

/* Handled messages, destroyed together. nats.c frees a received message on
 * its garbage-collector thread, which the first natsMsg_Destroy after it
 * went to sleep wakes: at a few thousand messages/s, a futex wake and two
 * thread switches per message. The consumer puts what it handled here and
 * empties the bin now and then: one wake-up for all of them. */
#define PD_MSGBIN_MAX 4096 /* beyond: destroyed at once */
#define PD_MSGBIN_MS 20    /* the oldest waits at most this long... */
typedef struct {
    natsMsg **v;
    uint32_t n, cap;
    uint64_t since;        /* the oldest's time, ms */
} pd_msgbin;

void pd_msgbin_put(pd_msgbin *b, natsMsg *msg, uint64_t now_ms);
/* Destroys the messages kept: all of them if `all`, else only once half of
 * PD_MSGBIN_MAX are kept or the oldest is PD_MSGBIN_MS old. */
void pd_msgbin_empty(pd_msgbin *b, uint64_t now_ms, bool all);
/* Destroys what is kept and frees the bin (while nats.c is alive). */
void pd_msgbin_free(pd_msgbin *b);

#endif
