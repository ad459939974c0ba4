/* presence.h - libpresence, the C client of presenced for socket servers.
 *
 * A socket server creates one presence_client, reports its connections'
 * events through it, and the library does the protocol work: MessagePack
 * encoding, the per-server `seq`, heartbeats, automatic batching (events are
 * buffered up to `batch_max` events or `batch_delay_ms` and sent as one
 * `batch` request), the full `sync` at start and on every `<prefix>.resync.<node>`
 * (sent in parts when large), and failover to the next node of `nodes` when
 * the current node does not answer (the full sync sent there moves the
 * server). See docs/client-c.md.
 *
 * Threading: every function may be called from any thread. The library runs
 * one worker thread of its own plus nats.c's threads; completion callbacks
 * (presence_done_fn) and the listing callback (presence_list_fn) run on those
 * threads, never inside the caller's call, and must not block for long nor
 * call presence_client_free. They may call the event functions.
 *
 * Ownership: every string argument is copied before the call returns; the
 * caller keeps ownership of what it passes. A presence_result and the
 * strings in it live only during the callback. */
#ifndef PRESENCE_PRESENCE_H
#define PRESENCE_PRESENCE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PRESENCE_VERSION "1.0.0"

typedef struct presence_client presence_client;

/* Return codes of the calls (not of the events: those come through the
 * completion callback). */
typedef enum {
    PRESENCE_OK = 0,
    PRESENCE_EARG,    /* a NULL or empty required argument */
    PRESENCE_ENOMEM,  /* out of memory */
    PRESENCE_ENATS,   /* NATS refused (connection, subscription) */
    PRESENCE_ECLOSED, /* the client is being freed */
    PRESENCE_ETIMEOUT /* presence_flush: events still unanswered */
} presence_rc;

/* The outcome of one event. error == NULL: applied (duplicate = true when
 * the node recognised it as already applied). Otherwise error is the code
 * of schemas/README.md ("unknown_conn", "bad_id", ...) or "timeout" when no
 * node answered within the retry budget, and message says why. */
typedef struct {
    const char *error;
    const char *message;
    bool duplicate;
} presence_result;

/* Called once per event with its result; ud is what the call was given. */
typedef void (*presence_done_fn)(void *ud, const presence_result *res);

/* The sync writer: presence_list_fn calls presence_sync_add once per live
 * connection of the server. Valid only during that callback. */
typedef struct presence_sync_writer presence_sync_writer;
typedef void (*presence_list_fn)(void *ud, presence_sync_writer *w);

/* Adds one live connection to the sync being built. Returns PRESENCE_EARG
 * for a NULL/empty argument (that connection is left out). */
presence_rc presence_sync_add(presence_sync_writer *w, const char *conn, const char *user,
                              const char *device);

typedef struct {
    const char *nats_url;       /* "nats://h:4222", comma-separated list allowed; required */
    const char *const *nodes;   /* node ids, in failover order; at least one */
    size_t n_nodes;
    const char *server_id;      /* this socket server's id; required */
    const char *subject_prefix; /* PRESENCE_SUBJECT_PREFIX of the nodes; NULL = "presence" */
    presence_list_fn list_conns;/* lists the live connections for a sync; NULL = none */
    void *list_ud;
    unsigned batch_max;         /* events per batch; 0 = 1000 (PRESENCE_MAX_BATCH) */
    unsigned batch_delay_ms;    /* longest an event waits to be batched; 0 = 2 */
    unsigned heartbeat_ms;      /* 0 = 1000; keep it below PRESENCE_SERVER_TIMEOUT_MS */
    unsigned request_timeout_ms;/* a node that does not answer in this time is failed over; 0 = 2000 */
    size_t sync_part_bytes;     /* encoded size of one sync part; 0 = 512 KiB */
} presence_opts;

/* Connects to NATS, starts the worker and sends the initial full sync.
 * Returns NULL on failure with the reason in err (errlen bytes, may be 0).
 * The caller owns the client and frees it with presence_client_free. */
presence_client *presence_client_new(const presence_opts *opts, char *err, size_t errlen);

/* Sends what is queued (waiting up to timeout_ms), sends `shutdown` when
 * send_shutdown (the node then disconnects all of this server's connections),
 * stops the worker, closes NATS, and frees c. Callbacks of events still
 * unanswered get error "closed". NULL is a no-op. */
void presence_client_free(presence_client *c, bool send_shutdown, unsigned timeout_ms);

/* The events. Each is queued and sent in the next batch; done (may be NULL)
 * is called once with its result. meta (connect) is a MessagePack map of at
 * most 1024 bytes, or NULL. */
presence_rc presence_connect(presence_client *c, const char *conn, const char *user,
                             const char *device, const void *meta, size_t meta_len,
                             presence_done_fn done, void *ud);
presence_rc presence_disconnect(presence_client *c, const char *conn, presence_done_fn done,
                                void *ud);
presence_rc presence_activity(presence_client *c, const char *conn, presence_done_fn done,
                              void *ud);
presence_rc presence_idle(presence_client *c, const char *conn, presence_done_fn done, void *ud);
/* status: "auto", "away", "busy" or "invisible". */
presence_rc presence_status(presence_client *c, const char *user, const char *status,
                            presence_done_fn done, void *ud);
/* text "" clears; emoji may be NULL; expires_at 0 = never. */
presence_rc presence_custom(presence_client *c, const char *user, const char *text,
                            const char *emoji, uint64_t expires_at, presence_done_fn done,
                            void *ud);

/* Sends the queued events now and waits until every event sent so far is
 * answered (PRESENCE_OK) or timeout_ms passes (PRESENCE_ETIMEOUT). */
presence_rc presence_flush(presence_client *c, unsigned timeout_ms);

/* Asks for a full sync now (as on P.resync). Returns at once. */
presence_rc presence_resync(presence_client *c);

/* Index in opts.nodes of the node events go to now. */
size_t presence_current_node(presence_client *c);

/* Counters, for tests and metrics. */
typedef struct {
    uint64_t batches_sent;  /* batch requests published */
    uint64_t events_sent;   /* events inside them (resends included) */
    uint64_t syncs_done;    /* complete syncs answered */
    uint64_t sync_parts;    /* sync parts answered */
    uint64_t failovers;     /* moves to another node */
} presence_stats;
void presence_get_stats(presence_client *c, presence_stats *out);

/* ---- watching users (apps that show presence) ----
 * presence_watch_new subscribes to the users' notifications, then asks
 * `get` for them (again, within the request timeout, until the answer's
 * `as_of` is at least the time the subscriptions were in place: a lagging
 * node's older answer would leave a gap), reports each user's state with
 * initial = true, and then
 * reports every later change, dropping each notification whose `ver` is
 * not newer than the state already reported: no gap, no duplicate. fn runs
 * on a nats.c thread, one call at a time per watch; it must not call
 * presence_watch_free. The presence_state and its strings live only during
 * the call. */
typedef struct {
    const char *user;
    const char *status;    /* "offline", "online", "away" or "busy" (public view) */
    const char *text;      /* custom status, "" when none */
    const char *emoji;
    uint64_t expires_at;
    uint64_t last_seen;
    uint64_t ver;
    bool initial;          /* true: from the get, false: a change */
    /* Freshness of an initial state (docs/protocol.md section 4): the time
     * (ms since the epoch) up to which the answering node was caught up
     * with its peers (0 in a change, or from a node that does not say),
     * and whether part of this state came from a node it had not heard
     * from lately: show "last known" rather than a sure status (added
     * with issue 14, at the end, so older callers are unaffected). */
    uint64_t as_of;
    bool stale;
} presence_state;
typedef void (*presence_watch_fn)(void *ud, const presence_state *st);
typedef struct presence_watch presence_watch;

/* Watches users[0..n) (1..1000 valid ids). Returns NULL with err set on
 * failure (no subscription, or the get unanswered within the request
 * timeout). The caller frees the watch (before the client). */
presence_watch *presence_watch_new(presence_client *c, const char *const *users, size_t n,
                                   presence_watch_fn fn, void *ud, char *err, size_t errlen);
/* Unsubscribes and frees; no fn call is running or starts after it. */
void presence_watch_free(presence_watch *w);

#ifdef __cplusplus
}
#endif
#endif
