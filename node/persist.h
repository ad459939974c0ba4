/* persist.h - the node's persistence: its snapshot in Redis and the delta
 * stream in JetStream (docs/protocol.md sections 5 and 6).
 *
 * At start (before the loop runs; blocking is fine then): load and verify
 * the snapshot, make sure the stream PRESENCE_DELTAS exists, and start an
 * ordered consumer that replays the stream, after the sequence the
 * snapshot includes, into the replica; live deltas
 * are held until the replay reaches the end the stream had at start. Then
 * the node sends its restored devices as its new incarnation and asks its
 * socket servers to resync. It asks again after every reconnection to NATS:
 * events sent to it while it was away are lost.
 *
 * While running: every PRESENCE_SNAPSHOT_INTERVAL_MS a snapshot is built a
 * slice per loop turn (see snapshot.h) and written to Redis in 1 MiB
 * APPENDs to a temporary key, then swapped in with two RENAMEs in one
 * MULTI, and the old value freed with UNLINK: Redis never holds up for a
 * big command, and a reader sees the old snapshot or the new one. Each
 * snapshot claims the stream sequence read (STREAM.INFO, through the
 * inbox) at least SAMPLE_MARGIN_MS before it started. Redis down,
 * loading, refusing AUTH or not answering in time: the node keeps serving,
 * logs once, retries with backoff. On SIGTERM a last snapshot is written
 * synchronously (not while still replaying), claiming the stream's end. */
#ifndef PD_PERSIST_H
#define PD_PERSIST_H
#include <stdbool.h>
#include <stdint.h>

typedef struct pd_node pd_node;
typedef struct pd_persist pd_persist;

/* Restores, sets up the stream and starts the replay. Never fails the
 * node: what cannot be done is logged and left to peers and resync. */
void node__persist_start(pd_node *n);
/* A replayed delta (SUB_REPLAY). */
void node__persist_replay_msg(pd_node *n, void *msg);
/* A reply to the stream info request made at each snapshot (SUB_STREAM_INFO). */
void node__persist_stream_info(pd_node *n, void *msg);
/* Asks this node's socket servers to sync (P.resync.<node>), saying why in
 * the log; not while replaying (the end of the replay asks anyway). */
void node__persist_resync(pd_node *n, const char *why);
/* True while live deltas must wait for the replay; takes ownership of
 * msg when it returns true. */
bool node__persist_hold(pd_node *n, void *msg);
/* Timers: snapshot schedule, replay deadline, Redis reconnects, and the
 * resync after a reconnection to NATS. */
void node__persist_tick(pd_node *n);
/* Final snapshot (blocking) and cleanup. */
void node__persist_stop(pd_node *n, bool final_snapshot);

typedef struct {
    uint64_t snapshots, snapshot_failures, last_snapshot_at, last_snapshot_ms, last_snapshot_bytes;
    uint64_t restored_devices, replayed_deltas;
    uint64_t replay_from;           /* first stream sequence replayed at start */
    uint64_t snapshot_stream_seq;   /* what the last snapshot started claims */
    bool redis_up, replaying;
} pd_persist_stats;
void node__persist_stats(const pd_node *n, pd_persist_stats *st);

#endif
