/* inbox.h - the hand-off from nats.c's threads to the node's loop thread.
 *
 * nats.c calls message handlers on its own threads; they only push the
 * message here and wake the loop, which drains the inbox and owns all state.
 * The queue is a growable array swapped out whole by the consumer, so the
 * lock is held for a push or a pointer swap, never for message handling. */
#ifndef PD_INBOX_H
#define PD_INBOX_H
#include <nats/nats.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include "status.h"

typedef struct {
    natsMsg *msg;
    int kind;      /* which subscription it came from (node_sub_kind) */
} pd_inbox_item;

typedef struct {
    pthread_mutex_t mu;
    pd_inbox_item *items;
    uint32_t n, cap;
    uint64_t pushed, dropped;  /* dropped: could not allocate */
    bool closed;               /* after pd_inbox_close: pushes are dropped */
} pd_inbox;

pd_status pd_inbox_init(pd_inbox *ib);
/* Destroys the queued messages and drops every later push (a handler of
 * nats.c may still be running): call while nats.c is still alive. */
void pd_inbox_close(pd_inbox *ib);
/* Frees the queue (messages too, if pd_inbox_close was not called). */
void pd_inbox_free(pd_inbox *ib);
/* Takes ownership of msg (destroyed if it cannot be queued). Returns true
 * if the queue was empty before, i.e. the consumer needs a wake-up. */
bool pd_inbox_push(pd_inbox *ib, natsMsg *msg, int kind);
/* Moves the queued items into *out (count *n); the caller owns the array
 * and the messages, and hands the array back to pd_inbox_release() when done. */
void pd_inbox_take(pd_inbox *ib, pd_inbox_item **out, uint32_t *n);
void pd_inbox_release(pd_inbox_item *items);

#endif
