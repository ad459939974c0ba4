/* node.h - the presenced daemon: one presence node on NATS.
 *
 * A node owns a presence model and drives it from one libuv loop thread:
 * nats.c hands every received message to the inbox, the loop drains it,
 * decodes, applies, replies and publishes notifications, and runs the
 * model's timers from one uv timer armed for the next due time. */
#ifndef PD_NODE_H
#define PD_NODE_H
#include <nats/nats.h>
#include <stdint.h>
#include <uv.h>
#include "wire/codec.h"
#include "base/config.h"
#include "base/hist.h"
#include "inbox.h"
#include "natsout.h"
#include "base/log.h"
#include "metrics.h"
#include "persist.h"
#include "model/presence.h"
#include "sync/repl.h"

/* Subscriptions; the kind travels with each message through the inbox. */
typedef enum {
    SUB_EVENTS, SUB_Q_GET, SUB_Q_DEVICES, SUB_Q_ONLINE, SUB_Q_CLUSTER,
    SUB_Q_NODE,                     /* P.query.<kind>.<this node>: no queue group */
    SUB_DELTA, SUB_HB, SUB_SYNC_REQ, SUB_SYNC_REPLY,
    SUB_REPLAY,                     /* JetStream replay (persist.c owns it) */
    SUB_STREAM_INFO,                /* replies to persist.c's stream info requests */
    SUB_COUNT
} node_sub_kind;

typedef struct {
    uint64_t events[PD_EV_COUNT];   /* applied, by type */
    uint64_t batches;               /* batch messages handled */
    uint64_t duplicates;            /* ignored by seq */
    uint64_t errors[PD_STATUS_COUNT];
    uint64_t queries[PD_Q_COUNT];
    uint64_t notifications;
    uint64_t publish_errors;
    uint64_t refused_msg_bytes;     /* PRESENCE_MAX_MSG_BYTES breaches */
    uint64_t refused_query_users;   /* get users / online limit above the limits */
    /* Latencies (node_metrics.c): handling an event, answering a query, a
     * change until its notification leaves, a peer's delta until applied. */
    pd_hist event_latency, query_latency, notify_latency, apply_latency;
} node_stats;

typedef struct pd_node pd_node;


typedef struct {
    pd_node *node;
    node_sub_kind kind;
} node_sub_ctx;

struct pd_node {
    pd_config cfg;
    pd_repl *repl;
    pd_model *model;                /* the replica's model */
    char sync_inbox[64];            /* reply subject of our state transfers */
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t timer;
    uv_signal_t sigterm, sigint;
    pd_inbox inbox;
    natsConnection *nc;             /* receives, read by the loop (natsout.c) */
    natsConnection *pub;            /* everything the loop publishes (natsout.c) */
    natsConnection *jsnc;           /* JetStream, on nats.c's threads (it blocks) */
    pd_natsout in_io, out_io;
    natsSubscription *subs[SUB_COUNT];
    node_sub_ctx sub_ctx[SUB_COUNT];
    msgpack_sbuffer out;            /* scratch for encoding, reused */
    char subj[PD_ID_MAX * 2 + 32];  /* scratch for subjects */
    uint64_t now;                   /* cached wall clock of this batch, ms */
    uint64_t started_at;
    node_stats stats;
    pd_ratelimit bad_input_log;
    int exit_code;
    bool loop_ready;
    pd_persist *persist;
    uv_idle_t snap_idle;            /* builds a snapshot a slice per loop turn */
    pd_metrics metrics;             /* idle unless PRESENCE_METRICS_ADDR is set */
    uint64_t metrics_at;
    uint64_t nats_reconnects;       /* written by nats.c's thread: atomics */
    bool nats_closing;              /* atomics: we close NATS; its callbacks stay quiet */
    struct {                        /* node_slow.c */
        uint64_t dropped[SUB_COUNT];  /* by subscription: inbox + nats.c */
        uint64_t next_check, first_drop, last_drop, resyncs;
        bool resync_pending;
        pd_ratelimit log;
    } slow;
    struct {                        /* queries waiting their turn (node.c) */
        pd_inbox_item *v;
        uint32_t head, n, cap;
        uint64_t shed[SUB_COUNT];   /* dropped: PRESENCE_INBOX_MAX_MSGS were waiting */
    } queries;
    pd_msgbin trash;                /* handled messages, destroyed together */
    /* ok-replies of this batch, sent after its delta: [u16 subject length,
     * subject, u32 payload length, payload]... */
    uint8_t *later;
    size_t later_len, later_cap;
};

/* Creates a node from a validated configuration; connects to NATS (retrying
 * in the background if it is not reachable yet) and subscribes. */
pd_status pd_node_init(pd_node *n, const pd_config *cfg, char *err, size_t errlen);
/* Runs the loop until SIGTERM/SIGINT; returns the process exit code. */
int pd_node_run(pd_node *n);
void pd_node_close(pd_node *n);

/* node.c: drops the queries still waiting (before closing NATS). */
void node__queries_free(pd_node *n);
/* node.c: handles what the inbox holds, then runs the timers (after the
 * loop read the receiving connection, or was woken). */
void node__drain(pd_node *n);


/* node_nats.c */
pd_status node__nats_connect(pd_node *n, char *err, size_t errlen);
void node__nats_close(pd_node *n);
/* Reads what the receiving connection holds now into the inbox (the loop
 * reads it by itself at each turn; this is for a long drain). */
void node__nats_read(pd_node *n);
/* True while nc (one of the node's connections, or NULL) is up (not
 * connecting, reconnecting or closed): requests on it would only wait for
 * a timeout. */
bool node__conn_up(natsConnection *nc);
/* Publishes the scratch buffer n->out to subject (a reply or a notification). */
void node__publish(pd_node *n, const char *subject);
void node__publish_bytes(pd_node *n, const char *subject, const void *buf, size_t len);
/* Queues the scratch buffer n->out as a reply to send once the batch's
 * delta is published: an ok means the change has left the node. */
void node__reply_after_flush(pd_node *n, const char *reply);
/* Replies {"ok": false, ...} to msg if it is a request. */
void node__reply_error(pd_node *n, natsMsg *msg, pd_status code, const char *text);
/* Counts and logs (rate-limited) a bad message. */
void node__bad_input(pd_node *n, natsMsg *msg, const pd_err *err);

/* node_events.c */
void node__handle_event(pd_node *n, natsMsg *msg);
/* Publishes one notification on P.user.<id>: the replica's io.publish
 * (the notifier in common/notify/ chose, re-announced and coalesced it). */
void node__publish_notification(void *ud, const pd_view *v);

/* node_cluster.c: messages between nodes, and the replica's I/O */
void node__handle_cluster(pd_node *n, node_sub_kind kind, natsMsg *msg);
/* Publishes P.trace.<node>: these traced events are applied here, now. */
void node__trace_report(pd_node *n, const uint64_t *ids, uint32_t count);
extern const pd_repl_io node__repl_io;

/* Monotonic microseconds, for the latency histograms. */
uint64_t node__mono_us(void);

/* node_metrics.c: refreshes the metrics text (at most every 250 ms). */
void node__update_metrics(pd_node *n, bool force);

/* node_slow.c: bounds, drop counting and repair (see there). NATS pending
 * limits per subscription: */
#define NODE_PENDING_MSGS 65536
#define NODE_PENDING_BYTES (64 << 20)
void node__slow_init(pd_node *n);
void node__slow_tick(pd_node *n);

/* node_query.c */
void node__handle_query(pd_node *n, node_sub_kind kind, natsMsg *msg);

#endif
