/* repl.h - replication between presence nodes (docs/protocol.md sections 2-5):
 * deltas, per-origin ordering and gap repair, heartbeats with the vector
 * clock (anti-entropy), state transfer, failure detection, and the choice
 * of the one node that announces each user's changes.
 *
 * A pd_repl owns this node's model. It does no I/O: it hands encoded
 * messages to the callbacks of pd_repl_io and takes received ones through
 * pd_repl_on_*(), so the same code runs in the daemon (over NATS) and in
 * the property tests (over a simulated, lossy, reordering network).
 *
 * Design, in short:
 * - Every change of this node's partition (its devices) and every register
 *   write made here is an op; ops are batched into deltas numbered 1, 2, ...
 *   per incarnation. The vector clock maps each origin to (incarnation,
 *   last delta applied).
 * - A peer applies an origin's deltas in order; a gap, a late start or a
 *   heartbeat showing more than we have starts a state transfer of that
 *   origin's partition (from any node that has more), during which the
 *   origin's deltas are held back and replayed after it.
 * - A node silent for node_timeout is suspected; still silent after
 *   suspicion_ms more, or saying it is leaving, it is down: its devices
 *   leave (the offline delay applies). A heartbeat clears a suspicion
 *   silently, so a flapping link makes no notification. A new incarnation
 *   replaces the old one's devices at once.
 * - Each user's notifications come from one node: the highest rendezvous
 *   hash of (node, user) among live nodes. A starting node listens for one
 *   sync interval and catches up before it heartbeats or announces. The
 *   replica tells its notifier (notify/notify.h) who is alive and ready
 *   and what changed; the notifier chooses, re-announces, coalesces and
 *   hands the views to io.publish. */
#ifndef PD_REPL_H
#define PD_REPL_H
#include <stdbool.h>
#include <stdint.h>
#include "wire/codec_repl.h"
#include "model/presence.h"
#include "sync/snapshot.h"
#include "notify/notify.h"

typedef struct {
    void (*send_delta)(void *ud, const void *buf, size_t len);
    void (*send_heartbeat)(void *ud, const void *buf, size_t len);
    /* Request to P.sync.<target>; its reply parts come back through
     * pd_repl_on_sync_part(). */
    void (*send_sync_request)(void *ud, pd_str target, const void *buf, size_t len);
    /* One part of a reply to the request identified by reply_ctx. */
    void (*send_sync_part)(void *ud, void *reply_ctx, const void *buf, size_t len);
    /* A notification to publish now: a change this node announces, past
     * the coalescing gate (notify/notify.h). v is borrowed. */
    void (*publish)(void *ud, const pd_view *v);
    void *ud;
    /* Optional (benchmarks): the ops of a delta that carries trace ids
     * were just applied here (d is borrowed). Never called when nobody
     * traces. Last, so positional initializers stay valid. */
    void (*traced)(void *ud, const pd_delta *d);
    /* Optional (metrics): a peer's delta sent at its wall-clock time `at`
     * (ms, 0 if it did not say) was just applied here at `now`. */
    void (*applied)(void *ud, uint64_t at, uint64_t now);
    /* Optional: keeps a reply_ctx beyond the pd_repl_on_sync_request call
     * (returns a handle send_sync_part accepts, NULL if it cannot) and
     * frees a kept one. With them, a state transfer is served in slices
     * from pd_repl_tick, so that a large partition never stalls the loop;
     * without them, at once. */
    void *(*reply_keep)(void *ud, void *reply_ctx);
    void (*reply_free)(void *ud, void *kept);
    /* Optional: fills the heartbeat's dashboard counters (events,
     * notifications, snapshot_at) just before it is sent. */
    void (*heartbeat_extra)(void *ud, pd_heartbeat *hb);
} pd_repl_io;

typedef struct {
    uint64_t sync_interval_ms;
    uint64_t node_timeout_ms;
    uint64_t inc;              /* this incarnation: unique and growing */
    size_t max_msg_bytes;      /* deltas and sync parts stay below this */
    uint64_t notify_min_interval_ms; /* coalescing of notifications; 0: off */
    uint32_t notify_max_users; /* users coalesced at once (0: the default) */
    /* A peer's clock (HLC, incarnation, wall clock) more than this ahead of
     * ours is refused (0 = PD_MAX_CLOCK_SKEW_DEFAULT_MS). */
    uint64_t max_clock_skew_ms;
    /* A peer silent for node_timeout_ms is suspected, and declared down
     * only after this much more silence; a heartbeat meanwhile clears the
     * suspicion with no other effect (0: down at the node timeout). */
    uint64_t suspicion_ms;
} pd_repl_cfg;

/* Why a message from another node was dropped (presenced_refused_total).
 * CHECKLIST: new reason? Add its name to pd_refuse_name (repl.c) and a
 * line to docs/failure-modes.md. */
typedef enum {
    PD_REFUSE_CLOCK_AHEAD,    /* HLC or wall clock beyond now + the skew bound */
    PD_REFUSE_INC_AHEAD,      /* incarnation (a start time) beyond that bound */
    PD_REFUSE_WRONG_SUBJECT,  /* "node" is not the node of the subject */
    PD_REFUSE_NOT_A_PEER,     /* delta or sync request from a node not live here */
    PD_REFUSE_PEER_TABLE_FULL,
    PD_REFUSE_SYNC_RATE,      /* state transfer asked again too soon */
    PD_REFUSE_COUNT
} pd_refuse;
const char *pd_refuse_name(pd_refuse why);

typedef struct pd_repl pd_repl;

/* Creates the replica and its model (node = this node's id). */
pd_repl *pd_repl_new(const pd_repl_cfg *cfg, const pd_model_cfg *mcfg, pd_str node,
                     const pd_repl_io *io, uint64_t now);
void pd_repl_free(pd_repl *r);
pd_model *pd_repl_model(pd_repl *r);

/* A connection event for this node (see pd_model_apply); the changes it
 * makes are announced (and coalesced) as of now. */
pd_status pd_repl_local(pd_repl *r, const pd_event *ev, uint64_t now, pd_apply_result *res,
                        pd_err *err);
/* Sends the ops batched so far as one delta (call after each burst). */
void pd_repl_flush(pd_repl *r);
/* The ops of the event just applied leave with trace id `id` in their
 * delta (benchmarks: schemas/cluster.md, "Tracing"). */
void pd_repl_trace(pd_repl *r, uint64_t id);

/* Received messages; a bad one is refused with err and changes nothing.
 * One that decodes but cannot be believed (a clock too far ahead, an
 * origin that is not a live peer) is dropped and counted in
 * stats.refused, and PD_OK is returned. */
pd_status pd_repl_on_delta(pd_repl *r, const void *buf, size_t len, uint64_t now, pd_err *err);
pd_status pd_repl_on_heartbeat(pd_repl *r, const void *buf, size_t len, uint64_t now,
                               pd_err *err);
/* The same for a message that came on the subject of node `from` (the
 * last token of P.delta.<node> / P.hb.<node>): a message whose "node" is
 * another is refused (PD_REFUSE_WRONG_SUBJECT). */
pd_status pd_repl_on_delta_from(pd_repl *r, pd_str from, const void *buf, size_t len,
                                uint64_t now, pd_err *err);
pd_status pd_repl_on_heartbeat_from(pd_repl *r, pd_str from, const void *buf, size_t len,
                                    uint64_t now, pd_err *err);
pd_status pd_repl_on_sync_request(pd_repl *r, const void *buf, size_t len, void *reply_ctx,
                                  pd_err *err);
pd_status pd_repl_on_sync_part(pd_repl *r, const void *buf, size_t len, uint64_t now,
                               pd_err *err);

/* Call with the time before handling a burst of received messages: a
 * long gap since the last call (the process was stopped) makes the node
 * warm up again instead of announcing from a stale view. */
void pd_repl_begin(pd_repl *r, uint64_t now);
/* Timers: model timers, heartbeats, failure detection, warm-up. Call
 * after the received messages of the moment are handled, so that a timer
 * never fires for what the queue already disproves (a server heartbeat). */
void pd_repl_tick(pd_repl *r, uint64_t now);
uint64_t pd_repl_next_due(const pd_repl *r);
/* State transfers being served in slices (io.reply_keep) right now. */
uint32_t pd_repl_serving(const pd_repl *r);
/* Abandons them, freeing their kept replies (before the I/O goes away). */
void pd_repl_serving_drop(pd_repl *r);
/* Says goodbye: a heartbeat with leaving set, so peers need not wait for
 * the timeout. */
void pd_repl_leave(pd_repl *r, uint64_t now);

bool pd_repl_ready(const pd_repl *r);
/* The replica's notifier (notify/notify.h): stats, and flushing the held
 * notifications when stopping. */
pd_notifier *pd_repl_notifier(pd_repl *r);

/* ---- persistence (see snapshot.h) ---- */
/* Describes the snapshot about to be taken (flushes pending ops first). */
void pd_repl_snapshot_info(pd_repl *r, pd_snap_info *info, uint64_t now);
/* At start, before the restore: from now until pd_repl_restore_done the
 * node announces nothing and keeps its own partition from peers' state
 * transfers (answered "unknown"), snapshot or not. */
void pd_repl_restore_begin(pd_repl *r);
/* At start, before any message: loads this node's snapshot into the model
 * (own devices as this node's, others' as theirs) and the vector clock.
 * A bad snapshot is refused whole (checksum, version, node) and changes
 * nothing: into an empty model (pd_model_pristine) it is read once, each
 * entry applied as it is validated, and a refusal empties the model again
 * and drops the ops made meanwhile; into one that holds something, it is
 * validated whole before anything applies. */
pd_status pd_repl_restore(pd_repl *r, const void *buf, size_t len, uint64_t now,
                          pd_snap_info *info, pd_err *err);
/* Whether a snapshot with this info (pd_snap_peek) is one restore would
 * take at now: of this node, its clocks not ahead of ours. Counts nothing. */
pd_status pd_repl_snapshot_acceptable(const pd_repl *r, const pd_snap_info *info, uint64_t now,
                                      pd_err *err);
/* pd_repl_restore for bytes that passed pd_snap_peek (sync/snapshot.h):
 * their checksum is not computed again (30 ms at 1M devices). */
pd_status pd_repl_restore_peeked(pd_repl *r, const void *buf, size_t len, uint64_t now,
                                 pd_snap_info *info, pd_err *err);
/* Replays one delta kept by JetStream, in stream order: ours from our
 * previous incarnation onto our own partition, others' as usual;
 * idempotent, so replaying from too early changes nothing. */
pd_status pd_repl_replay_delta(pd_repl *r, const void *buf, size_t len, uint64_t now,
                               pd_err *err);
/* After the replay, at now: our restored devices go to the peers as this
 * incarnation's. When a snapshot of the life before was restored and
 * every live peer says it kept that life's devices as far as we restored
 * them (its heartbeat's "kept"), nothing is sent but a "restored" delta
 * (their count and digest: a peer whose copy differs fetches our
 * partition); else they are sent as ops, in slices of pd_repl_tick
 * (pd_repl_next_due is 0 until the last, pd_repl_republishing true), so
 * that the node serves meanwhile, then the "restored" delta if the peers
 * had been told we carry one. The peers' word is awaited at most three
 * sync intervals (schemas/cluster.md "Incarnations"). The
 * warm-up (two sync intervals, then the transfers under
 * way) counts from now, not from the start: a restore that took long
 * (JetStream or Redis slow) must not leave the node announcing at once,
 * before the peers' transfers and the socket servers' resync it asks for
 * have come in. */
void pd_repl_restore_done(pd_repl *r, uint64_t now);
bool pd_repl_republishing(const pd_repl *r);

/* For P.query.cluster: calls fn for this node and each known peer. */
typedef void (*pd_node_fn)(void *ud, const pd_node_view *nv);
uint32_t pd_repl_nodes(const pd_repl *r, uint64_t now, pd_node_fn fn, void *ud);

/* How fresh this node's view is at now (docs/protocol.md section 4,
 * "Freshness"): sets *as_of, the time up to which it holds everything its
 * live peers had sent (now when it has none), fills stale[0..cap) with the
 * live peers it has heard nothing from for more than two sync intervals
 * (their ids are borrowed: valid until the next call into r), and returns
 * how many. */
uint32_t pd_repl_freshness(const pd_repl *r, uint64_t now, pd_str *stale, uint32_t cap,
                           uint64_t *as_of);

/* Packs the reply to a cluster query: this node (self) and its peers as
 * the replica sees them at now. */
void pd_repl_answer_cluster(const pd_repl *r, pd_str self, uint64_t now, msgpack_packer *pk);

typedef struct {
    uint64_t deltas_sent, deltas_applied, deltas_dup, gaps, syncs_requested, syncs_done,
        syncs_served, nodes_down, notifications, bad_messages;
    uint64_t refused[PD_REFUSE_COUNT];
    uint64_t contradictions;    /* a claim below what we applied: re-fetched */
    uint64_t suspicions;        /* peers suspected (silent past the node timeout) */
    uint64_t suspicions_cleared; /* ... and heard again before being declared down */
    uint64_t silences;          /* live peers heard again after > 2 heartbeats: repeats */
    uint64_t peers_forgotten;   /* down for the node timeout: left the table */
    uint64_t announcers_muted;  /* peers left out of the announcers: not heard announcing */
    /* Restarts (schemas/cluster.md "Incarnations"): a restarted peer's
     * devices kept for its new life, and found equal to what it restored
     * (restart_kept) or not, then fetched again (restart_refetched); ours,
     * sent again as the new life's (restart_republished) or not. */
    uint64_t restart_kept, restart_refetched, restart_republished, restart_unrepublished;
    uint64_t restart_ops;       /* ops our restarts' dumps sent (devices and registers) */
    bool clock_ahead;           /* our wall clock is ahead of every live peer's */
} pd_repl_stats;
void pd_repl_stats_get(const pd_repl *r, pd_repl_stats *st);

#endif
