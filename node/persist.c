/* persist.c - the node's persistence in order: start (restore, stream,
 * replay), the timers of a running node (replay deadline, resync after a
 * NATS outage, Redis reconnects, the snapshot schedule), stop and the
 * statistics. See persist.h for the design and persist_int.h for the
 * parts. */
#include "persist_int.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/clock.h"
#include "node.h"

void node__persist_start(pd_node *n) {
    pd_persist *ps = calloc(1, sizeof *ps);
    n->persist = ps;
    if (ps == NULL) return;
    snprintf(ps->key, sizeof ps->key, "%s:snapshot:%s", n->cfg.redis_prefix, n->cfg.node_id);
    snprintf(ps->tmp, sizeof ps->tmp, "%s:tmp", ps->key);
    snprintf(ps->old, sizeof ps->old, "%s:old", ps->key);
    if (persist__parse_redis_url(&n->cfg, ps) != 0)
        snprintf(ps->host, sizeof ps->host, "127.0.0.1"), ps->port = 6379;
    ps->backoff = 500;
    ps->next_snapshot = pd_mono_ms() + n->cfg.snapshot_interval_ms;
    uv_idle_init(&n->loop, &n->snap_idle);
    n->snap_idle.data = n;
    pd_repl_restore_begin(n->repl);
    size_t len = 0;
    uint8_t *buf = persist__load_snapshot(ps, &len);
    if (buf == NULL)
        pd_log(PD_LOG_INFO, "no snapshot of %s: starting from the stream and the peers",
               n->cfg.node_id);
    /* The replay of the stream runs while the snapshot is applied: its
     * start, the header's stream sequence, is known from a peek at the
     * snapshot (header, checksum, the fields before the entries), and
     * JetStream delivers into the inbox, which the loop empties once the
     * snapshot is in (issue 15). A snapshot the peek cannot vouch for is
     * applied first, as before. */
    pd_snap_info *peek = buf ? malloc(sizeof *peek) : NULL;
    pd_err perr = {PD_OK, ""};
    bool peeked = peek && pd_snap_peek(buf, len, peek, &perr) == PD_OK &&
                  pd_repl_snapshot_acceptable(n->repl, peek, pd_now_ms(), &perr) == PD_OK;
    if (peeked) ps->restored_stream_seq = peek->stream_seq;
    free(peek);
    bool replay_ok = false, js = false, early = peeked || buf == NULL;
    /* Without NATS, the stream requests would each wait for their timeout
     * (seconds, retried) before the loop runs, and SIGTERM with them: do
     * without the replay at once; the peers and the socket servers' resync
     * fill in, as when the stream cannot be reached. */
    if (!node__conn_up(n->jsnc))
        pd_log(PD_LOG_WARN, "NATS not connected at start: no replay of %s; the peers fill in",
               STREAM_NAME);
    else if (natsConnection_JetStream(&ps->js, n->jsnc, NULL) == NATS_OK &&
             persist__ensure_stream(n)) {
        js = true;
        if (early) replay_ok = persist__start_replay(n);
    }
    bool restored = persist__restore(n, buf, len, peeked);
    if (js) {
        if (!early) replay_ok = persist__start_replay(n);
        else if (peeked && !restored && ps->restored_stream_seq > 0)
            replay_ok = persist__replay_again(n); /* it began after a snapshot now refused */
        persist__subscribe_info(n);
    }
    /* Nothing to replay after the snapshot is a complete replay; a stream
     * that could not be reached or read is not. */
    if (!ps->st.replaying) persist__finish_replay(n, replay_ok);
}

void node__persist_tick(pd_node *n) {
    pd_persist *ps = n->persist;
    if (ps == NULL) return;
    uint64_t now = pd_mono_ms();
    if (ps->st.replaying && now >= ps->replay_deadline) {
        pd_log(PD_LOG_WARN, "replay did not reach the end in time; going on");
        persist__finish_replay(n, false);
    }
    /* Back on NATS after an outage: what the socket servers sent to us
     * meanwhile went nowhere (no subscriber), and requests in flight when
     * the connection broke are lost. Their syncs repair both. During the
     * replay, the resync that ends it does. */
    uint64_t reconnects = __atomic_load_n(&n->nats_reconnects, __ATOMIC_RELAXED);
    if (reconnects != ps->reconnects_seen) {
        ps->reconnects_seen = reconnects;
        if (!ps->st.replaying) {
            persist__publish_resync(n);
            pd_log(PD_LOG_INFO, "back on NATS: asked socket servers to resync");
        }
    }
    if (ps->connecting && now >= ps->connect_deadline) persist__connect_expired(n);
    if (ps->ac && ps->auth_deadline && now >= ps->auth_deadline)
        persist__redis_expired(n, "AUTH unanswered");
    else if (ps->ac && ps->state == SNAP_WRITING && ps->write_deadline && now >= ps->write_deadline)
        persist__redis_expired(n, "snapshot write unanswered");
    if (ps->ac == NULL && !ps->connecting && now >= ps->next_connect) persist__redis_connect(n);
    if (ps->state == SNAP_IDLE && ps->st.redis_up && !ps->st.replaying && now >= ps->next_snapshot)
        persist__start_snapshot(n);
}

void node__persist_stop(pd_node *n, bool final) {
    pd_persist *ps = n->persist;
    if (ps == NULL) return;
    /* Not while replaying: the model is half restored, and the snapshot
     * would be this life's, so the next start would skip the rest of the
     * earlier lives' deltas. The previous snapshot stays valid. */
    if (final && !ps->st.replaying) persist__final_snapshot(n);
    if (ps->replay) {
        natsSubscription_Unsubscribe(ps->replay);
        natsSubscription_Destroy(ps->replay);
    }
    if (ps->info_sub) {
        natsSubscription_Unsubscribe(ps->info_sub);
        natsSubscription_Destroy(ps->info_sub);
    }
    for (uint32_t i = 0; i < ps->nheld; i++) natsMsg_Destroy(ps->held[i]);
    free(ps->held);
    pd_snap_abort(ps->snap);
    /* First: hiredis answers the writes still pending with NULL replies,
     * and the last one ends the write (write_done frees ps->buf). */
    if (ps->ac) redisAsyncFree(ps->ac);
    free(ps->buf);
    jsCtx_Destroy(ps->js);
    uv_idle_stop(&n->snap_idle); /* closed with the loop's other handles */
    n->persist = NULL;
    free(ps);
}

void node__persist_stats(const pd_node *n, pd_persist_stats *st) {
    if (n->persist) *st = n->persist->st;
    else memset(st, 0, sizeof *st);
}
