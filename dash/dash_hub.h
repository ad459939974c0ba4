/* dash_hub.h - presence-dash's fan-out of Server-Sent Events frames from
 * the threads that make them (the loop, the cluster poller) to the HTTP
 * threads that stream them, one per open page.
 *
 * A ring of the last DASH_HUB_RING frames, numbered; each reader keeps its
 * own position, so a slow page never holds up the others: one that falls a
 * whole ring behind skips to the oldest frame still held. Besides the
 * ring, the hub keeps what a page that opens now must see first: the latest
 * `nodes` and `cluster` frames and the last DASH_HUB_HISTORY notification
 * frames. Thread-safe: one mutex, held only to copy pointers and bytes. */
#ifndef PD_DASH_HUB_H
#define PD_DASH_HUB_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DASH_HUB_RING 1024
#define DASH_HUB_HISTORY 100

typedef enum {
    DASH_FRAME_NODES,     /* replaces the latest nodes frame */
    DASH_FRAME_CLUSTER,   /* replaces the latest cluster frame */
    DASH_FRAME_NOTE,      /* joins the notification history */
} dash_frame_kind;

typedef struct dash_hub dash_hub;

dash_hub *dash_hub_new(void);
/* Frees the hub; no reader may still use it. */
void dash_hub_free(dash_hub *h);

/* Takes ownership of frame (len bytes, NUL-terminated), even on failure. */
void dash_hub_publish(dash_hub *h, dash_frame_kind kind, char *frame, size_t len);

/* What a new page gets first: the latest nodes and cluster frames and the
 * notification history, concatenated (malloc'd, caller frees; NULL out of
 * memory), and in *pos the position of the next frame to stream. */
char *dash_hub_join(dash_hub *h, uint64_t *pos, size_t *len);

/* The frame at *pos (a malloc'd copy; *pos advances), waiting up to
 * wait_ms for one. NULL on timeout, out of memory, or once the hub is
 * stopped (*stopped is then true). */
char *dash_hub_next(dash_hub *h, uint64_t *pos, size_t *len, uint64_t wait_ms, bool *stopped);

/* The latest nodes frame's JSON document (its data line), malloc'd; "{}"
 * before the first. For GET /api/state. */
char *dash_hub_state(dash_hub *h);

/* Wakes every waiting reader for good: dash_hub_next returns NULL. */
void dash_hub_stop(dash_hub *h);

#endif
