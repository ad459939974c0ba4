/* codec.h - MessagePack encoding and decoding of every message of the
 * contract (docs/protocol.md sections 1, 3, 4 and 7).
 *
 * Decoding reads with the bounds-checked mp_reader: nothing is allocated,
 * strings come back as slices of the input (valid while the input is), and
 * every field is validated (ids, sizes, enums), so a decoded message is one
 * the model can apply without further checks. Arrays (sync conns, get users)
 * are validated whole at decode time and then walked with an iterator.
 * Encoding writes with msgpack-c's packer into a msgpack_sbuffer owned by
 * the caller. The style and the shared readers and packers: codec_util.h.
 *
 * CHECKLIST: new message or field? Update the decoder and the encoder here,
 * the schemas/ pages, and the round-trip cases in tests/test_codec.c. */
#ifndef PD_CODEC_H
#define PD_CODEC_H
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include "base/ids.h"
#include "wire/codec_util.h"
#include "wire/mpread.h"
#include "wire/ptypes.h"
#include "base/status.h"

#define PD_DEVICE_MAX 32        /* bytes of a device label */
#define PD_META_MAX 1024        /* encoded bytes of connect `meta` */
#define PD_TEXT_MAX 256         /* bytes of a custom status text */
#define PD_EMOJI_MAX 64         /* bytes of a custom status emoji */
#define PD_QUERY_USERS_MAX 1000 /* users of one `get` */
#define PD_QUERY_LIMIT_MAX 1000 /* page size of `online` */
#define PD_CURSOR_MAX 64        /* bytes of an `online` cursor */
#define PD_SEQ_MAX ((int64_t)1 << 53)   /* largest event `seq` */
#define PD_SEQ_JUMP_MAX ((int64_t)1 << 32) /* largest step of a server's `seq` */
#define PD_SYNC_PARTS_MAX 100000 /* parts of one chunked sync */

/* ---- Section 1: connection events -------------------------------------- */

typedef enum {
    PD_EV_CONNECT, PD_EV_DISCONNECT, PD_EV_ACTIVITY, PD_EV_IDLE, PD_EV_STATUS,
    PD_EV_CUSTOM, PD_EV_SYNC, PD_EV_HEARTBEAT, PD_EV_SHUTDOWN, PD_EV_COUNT
} pd_event_type;

const char *pd_event_type_name(pd_event_type t);

typedef struct {
    pd_str conn, user, device;
} pd_sync_conn;

typedef struct {
    pd_event_type type;
    pd_str server, conn, user, device;
    pd_str meta;            /* raw encoded map; n == 0 when absent */
    pd_chosen status;
    pd_str text, emoji;
    int64_t expires_at;     /* 0 = never */
    pd_str conns;           /* raw encoded array of sync entries */
    uint32_t nconns;
    pd_str sync_id;         /* chunked sync: n == 0 for a sync in one message */
    uint32_t part, parts;   /* chunked sync: 1 <= part <= parts (both 1 when whole) */
    bool has_ts, has_seq, has_trace;
    int64_t ts;
    int64_t seq;
    uint64_t trace;         /* benchmark tracing id (has_trace): see schemas/cluster.md */
} pd_event;

/* Decodes and validates one event. On error, fills err and returns its code;
 * *ev is then unspecified. Slices point into buf. */
pd_status pd_event_decode(const void *buf, size_t len, pd_event *ev, pd_err *err);

typedef struct {
    mp_reader r;
    uint32_t left;
} pd_sync_iter;

/* Walks the conns of a decoded sync event (already validated). */
void pd_sync_iter_init(pd_sync_iter *it, const pd_event *ev);
bool pd_sync_iter_next(pd_sync_iter *it, pd_sync_conn *out);

/* Encodes an event; fields not used by its type are left out. `conns` of a
 * sync event is written from the `sync` array (n entries) if given, else
 * copied raw from ev->conns. */
void pd_event_encode(msgpack_sbuffer *sb, const pd_event *ev,
                     const pd_sync_conn *sync, uint32_t n);

/* ---- batches of events (schemas/events.md#batch) ------------------------ */

/* A decoded batch: the raw encoded events, each still to be decoded (and
 * refused on its own) by pd_event_decode. Slices point into the input. */
typedef struct {
    pd_str events;          /* raw encoded array */
    uint32_t n;
} pd_batch;

/* True if buf is a map whose `type` is "batch" (nothing else validated). */
bool pd_batch_is(const void *buf, size_t len);
/* Decodes {"type": "batch", "events": [map, ...]} with at most max events.
 * Each element must be a map; its content is checked when it is applied. */
pd_status pd_batch_decode(const void *buf, size_t len, uint32_t max, pd_batch *b, pd_err *err);
void pd_batch_iter_init(mp_reader *it, const pd_batch *b);
/* The next raw event of a decoded batch (false at the end). */
bool pd_batch_next(mp_reader *it, pd_str *raw);
/* Encodes a batch of n already encoded events. */
void pd_batch_encode(msgpack_sbuffer *sb, const pd_str *events, uint32_t n);

/* ---- Section 7: request replies ----------------------------------------- */

void pd_reply_ok_encode(msgpack_sbuffer *sb);
/* {"ok": true, "duplicate": true}: accepted, but ignored as a duplicate. */
void pd_reply_duplicate_encode(msgpack_sbuffer *sb);
void pd_reply_error_encode(msgpack_sbuffer *sb, pd_status code, const char *msg);

/* One refused item of a partial reply: a batch's event (i >= 0, conn.n ==
 * 0) or a sync's connection (conn.n > 0, i < 0). */
typedef struct {
    int64_t i;
    pd_str conn;
    pd_status code;
    pd_str message;
} pd_failure;

/* {"ok": false, "error": "partial", "message": msg, "failed": [...]}. */
void pd_reply_partial_encode(msgpack_sbuffer *sb, const char *msg, const pd_failure *f,
                             uint32_t n);

/* Decodes {"ok": ...}; on a well-formed error reply, *ok is false and err
 * holds the code and message; a partial reply's `failed` array is kept
 * raw in `failed` (a slice of buf) for pd_reply_next_failed. Returns non-OK
 * only if the reply is malformed. */
typedef struct {
    bool ok;
    bool duplicate;             /* "duplicate": true (an ignored event) */
    char code[32];
    char message[160];
    pd_str failed;          /* raw encoded array, n == 0 when absent */
    uint32_t nfailed;
} pd_reply;
pd_status pd_reply_decode(const void *buf, size_t len, pd_reply *out);
/* Walks a decoded reply's failures: init it on rep->failed, then next.
 * f->code is the status named by the entry's `error` (PD_EINTERNAL when
 * unknown); slices point into the reply's buffer. */
void pd_reply_failed_iter(mp_reader *it, const pd_reply *rep);
bool pd_reply_next_failed(mp_reader *it, pd_failure *f);
/* The status of a wire error code ("too_large"); PD_EINTERNAL if unknown. */
pd_status pd_status_from_code(pd_str code);

/* ---- Section 3 and 4: public views --------------------------------------- */

/* A user's presence as one viewer sees it: a notification, or one entry of
 * a `get` reply (which adds `devices`). */
typedef struct {
    pd_str user;
    pd_public status;
    pd_str text, emoji;     /* n == 0 when no custom status */
    int64_t expires_at;
    int64_t last_seen;
    int64_t ts;             /* notifications only */
    uint32_t devices;       /* get replies only */
    uint64_t ver;           /* orders the user's public states (notifications.md) */
    bool stale;             /* get replies only: some device's owner is not heard lately */
} pd_view;

void pd_notification_encode(msgpack_sbuffer *sb, const pd_view *v);
pd_status pd_view_decode(mp_reader *r, pd_view *v, pd_err *err);
pd_status pd_notification_decode(const void *buf, size_t len, pd_view *v, pd_err *err);

/* ---- Section 4: queries --------------------------------------------------- */

typedef enum { PD_Q_GET, PD_Q_DEVICES, PD_Q_ONLINE, PD_Q_CLUSTER, PD_Q_COUNT } pd_query_type;

typedef struct {
    pd_query_type type;
    pd_str users;           /* get: raw encoded array of ids */
    uint32_t nusers;
    pd_str viewer;          /* get: n == 0 when absent */
    pd_str user;            /* devices */
    pd_str cursor;          /* online: n == 0 when absent */
    uint32_t limit;         /* online: default PD_QUERY_LIMIT_MAX */
} pd_query;

/* Decodes the request of query `type` (known from the subject). An empty
 * payload is accepted as an empty map. */
pd_status pd_query_decode(pd_query_type type, const void *buf, size_t len,
                          pd_query *q, pd_err *err);
/* Walks the users of a decoded get query. */
bool pd_query_next_user(mp_reader *it, pd_str *user);
void pd_query_users_iter(const pd_query *q, mp_reader *it);

/* Encodes a query (get: users[0..n)); an online query with limit 0 leaves
 * `limit` out, asking for the node's largest page. */
void pd_query_encode(msgpack_sbuffer *sb, const pd_query *q, const pd_str *users, uint32_t n);

/* The freshness of a get or devices reply (docs/protocol.md section 4,
 * "Freshness"): `as_of`, and for devices the user's `stale` (a get reply
 * carries `stale` per entry, in pd_view). */
typedef struct {
    uint64_t as_of;
    bool stale;             /* devices replies; packed only when true */
} pd_reply_fresh;

/* Reply writers, used in sequence: begin, one call per item, end. With f
 * NULL the reply has no `as_of` (nor `stale`): the shape before issue 14,
 * kept for tools that re-encode entries to compare them. begin and end
 * must get the same f. */
void pd_get_reply_begin(msgpack_packer *pk, uint32_t n, const pd_reply_fresh *f);
void pd_get_reply_user(msgpack_packer *pk, const pd_view *v);
void pd_get_reply_end(msgpack_packer *pk, const pd_reply_fresh *f);

typedef struct {
    pd_str conn, server, node, device;
    pd_devstate state;
    int64_t connected_at, last_active;
    pd_str meta;            /* raw encoded map, n == 0 when none */
} pd_device_view;

void pd_devices_reply_begin(msgpack_packer *pk, pd_str user, uint32_t n,
                            const pd_reply_fresh *f);
void pd_devices_reply_device(msgpack_packer *pk, const pd_device_view *d);
void pd_devices_reply_end(msgpack_packer *pk, const pd_reply_fresh *f);
/* Reads the top-level keys of a get or devices reply other than the list
 * (`as_of`, `stale`, `user`) into f and *user (either may be NULL), and
 * leaves *list positioned on the list's array (`users` or `devices`),
 * whose length goes to *n. Unknown keys are skipped. */
/* Writes to out a copy of a get or devices reply without its freshness
 * (`as_of` and `stale`, at the top and in get entries): what the nodes
 * must agree on (docs/protocol.md section 4). Anything not of that shape is
 * copied as it is. */
void pd_reply_strip_fresh(const void *buf, size_t len, msgpack_sbuffer *out);
pd_status pd_reply_top_decode(const void *buf, size_t len, const char *list, mp_reader *items,
                              uint32_t *n, pd_str *user, pd_reply_fresh *f, pd_err *err);
pd_status pd_device_view_decode(mp_reader *r, pd_device_view *d, pd_err *err);

/* online: {"users": [...], "cursor"?}; pass cursor.n == 0 on the last page. */
void pd_online_reply_begin(msgpack_packer *pk, uint32_t n, bool has_cursor);
void pd_online_reply_user(msgpack_packer *pk, pd_str user);
void pd_online_reply_end(msgpack_packer *pk, pd_str cursor);

typedef struct {
    pd_str node;
    bool alive;
    const pd_str *vc_nodes; /* encoding: parallel arrays of the vector clock */
    const uint64_t *vc_counts;
    uint32_t vc_n;
    uint64_t devices, users;
    int64_t last_heartbeat;
} pd_node_view;

void pd_cluster_reply_begin(msgpack_packer *pk, pd_str self, uint32_t n);
void pd_cluster_reply_node(msgpack_packer *pk, const pd_node_view *nv);

#endif
