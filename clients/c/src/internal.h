/* internal.h - shared between the files of libpresence (never installed). */
#ifndef PRESENCE_INTERNAL_H
#define PRESENCE_INTERNAL_H
#include <msgpack.h>
#include "presence/presence.h"

#define PL_API __attribute__((visibility("default")))

/* One queued event: its map entries without `seq` (body, nkeys pairs). */
typedef struct {
    char *body;
    size_t len;
    uint32_t nkeys;
    presence_done_fn done;
    void *ud;
} pl_event;

struct presence_sync_writer {
    msgpack_sbuffer entries; /* encoded entry maps, back to back */
    size_t *ends;            /* end offset of each entry */
    size_t n, cap;
    bool oom;
};

/* Encodes `map{type:"batch", events:[ev + seq...]}` into sb, seqs from *seq. */
void pl_encode_batch(msgpack_sbuffer *sb, pl_event *evs, size_t n, uint64_t *seq);
/* Encodes sync part `part` of `parts` with entries [from, to) of w. */
void pl_encode_sync(msgpack_sbuffer *sb, const char *server, const char *sync_id, unsigned part,
                    unsigned parts, const presence_sync_writer *w, size_t from, size_t to);

/* Parsed reply of a batch: ok, or a whole error, or per-index failures. */
typedef struct {
    bool ok, duplicate, partial;
    char error[48];
    char message[256];
    /* partial: index -> failure, filled by pl_reply_failure */
} pl_reply;
/* Reads a reply; returns false if it is not a valid reply map. For each
 * failure of a partial reply calls fn(ctx, i, error, message). */
bool pl_parse_reply(const void *data, size_t len, pl_reply *r,
                    void (*fn)(void *ctx, int64_t i, const char *err, const char *msg), void *ctx);
/* The client's NATS connection (natsConnection *), subject prefix and
 * request timeout, for watch.c. */
void *pl_conn(presence_client *c);
const char *pl_prefix(presence_client *c);
unsigned pl_timeout_ms(presence_client *c);
#endif
