/* persist_int.h - what the parts of the node's persistence share: the
 * state of pd_persist and the calls between its files. Not for the rest of
 * node/ (persist.h is the interface).
 *
 *   persist.c         start, timers, stop, statistics: the order of things
 *   persist_replay.c  at start: the snapshot restored, the stream replayed,
 *                     live deltas held meanwhile, the resync asked
 *   persist_stream.c  the stream's last sequence, sampled for each snapshot
 *   persist_redis.c   the Redis connection and the snapshot writer */
#ifndef PD_PERSIST_INT_H
#define PD_PERSIST_INT_H
#include "persist.h"
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <nats/nats.h>
#include "base/config.h"
#include "sync/snapshot.h"

#define STREAM_NAME "PRESENCE_DELTAS"
#define CHUNK (1u << 20)             /* bytes per Redis command */
#define SNAP_BUCKETS 512             /* hash buckets per loop turn */
#define REPLAY_DEADLINE_MS 60000
#define HELD_MAX 100000
#define CONNECT_TIMEOUT_MS 1000      /* a Redis connect taking longer is given up */
#define AUTH_TIMEOUT_MS 2000         /* so is an AUTH unanswered this long */
/* and a snapshot write: 2 s, and 125 ms more per MiB (8 MiB/s is far below
 * what a Redis on a private network takes) */
#define WRITE_TIMEOUT_MS(len) (2000 + (uint64_t)(len) / 8389)
#define INFO_SUBJECT "$JS.API.STREAM.INFO." STREAM_NAME
#define INFO_TIMEOUT_MS 5000         /* a stream info request unanswered this long is retried */
#define INFO_MAX_BYTES 65536         /* a longer stream info reply is not ours */
/* A stream sequence read at least this long before a snapshot starts is
 * the one it claims to include: deltas in flight at the reading (published,
 * stored, not yet applied here) have arrived by then. */
#define SAMPLE_MARGIN_MS 1000

typedef enum { SNAP_IDLE, SNAP_BUILDING, SNAP_WRITING } snap_state;

struct pd_persist {
    char key[PD_ID_MAX * 2 + 16], tmp[PD_ID_MAX * 2 + 24], old[PD_ID_MAX * 2 + 24];
    char host[256];
    int port;
    pd_redis_target redis;          /* host, port and AUTH credentials */
    bool auth_logged;               /* a refused AUTH was logged (once until it works) */
    /* replay */
    jsCtx *js;
    natsSubscription *replay;
    uint64_t replay_end, replay_deadline;
    uint64_t replay_apply_us;   /* the replay's deltas applied (node__persist_replay_msg) */
    natsMsg **held;
    uint32_t nheld;
    uint64_t reconnects_seen;       /* n->nats_reconnects last looked at */
    uint64_t restored_stream_seq;   /* from the snapshot restored at start */
    /* stream sequences: what the next snapshot claims to include, and the
     * last reading of the stream's end with the time it was asked for */
    natsSubscription *info_sub;
    char info_inbox[64];
    uint64_t stream_seq_next, sample, sample_at, info_asked_at;
    uint64_t first_seq, msgs;       /* the stream's state at start */
    /* snapshots */
    redisAsyncContext *ac;
    bool connecting, redis_logged_down;
    uint64_t next_connect, connect_deadline, backoff, next_snapshot;
    uint64_t auth_deadline, write_deadline; /* 0: not waiting */
    snap_state state;
    pd_snap *snap;
    uint8_t *buf;
    size_t len;
    uint32_t pending;               /* replies still to come */
    bool failed;
    uint64_t started_at;
    pd_persist_stats st;
};

/* persist_redis.c */
int persist__parse_redis_url(const pd_config *cfg, pd_persist *ps);
/* The snapshot of this node, read at start (blocking); NULL if none. */
uint8_t *persist__load_snapshot(pd_persist *ps, size_t *len);
void persist__redis_connect(pd_node *n);
void persist__connect_expired(pd_node *n);
void persist__redis_expired(pd_node *n, const char *why);
void persist__start_snapshot(pd_node *n);
/* The last snapshot at a clean stop, written synchronously. */
void persist__final_snapshot(pd_node *n);

/* persist_replay.c */
/* Applies the snapshot read from Redis (buf, freed here; NULL: none);
 * peeked: it passed pd_snap_peek, and the replay may already run after
 * the stream sequence it gave. False if there was none or it was refused. */
bool persist__restore(pd_node *n, uint8_t *buf, size_t len, bool peeked);
/* Before the loop runs: the replay started after a snapshot that was then
 * refused is dropped, and the whole stream replayed (persist__start_replay). */
bool persist__replay_again(pd_node *n);
bool persist__ensure_stream(pd_node *n);
bool persist__start_replay(pd_node *n);
void persist__finish_replay(pd_node *n, bool complete);
void persist__publish_resync(pd_node *n);

/* persist_stream.c */
void persist__subscribe_info(pd_node *n);
void persist__request_info(pd_node *n, uint64_t now);
uint64_t persist__final_stream_seq(pd_node *n);

#endif
