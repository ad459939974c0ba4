/* persist_replay.c - a restart: this node's snapshot restored, the stream
 * PRESENCE_DELTAS made sure of and replayed after the sequence the snapshot
 * includes, live deltas held until the replay reaches the end the stream
 * had at start, then the resync asked of the socket servers (persist.h). */
#include <hiredis/adapters/libuv.h>
#include "persist_int.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/clock.h"
#include "node.h"

bool persist__restore(pd_node *n, uint8_t *buf, size_t len, bool peeked) {
    pd_persist *ps = n->persist;
    if (buf == NULL) return false; /* said by node__persist_start */
    pd_snap_info *info = malloc(sizeof *info);
    pd_err err = {PD_OK, ""};
    uint64_t t0 = pd_mono_ms();
    pd_status s = !info ? PD_ENOMEM
                : peeked ? pd_repl_restore_peeked(n->repl, buf, len, pd_now_ms(), info, &err)
                         : pd_repl_restore(n->repl, buf, len, pd_now_ms(), info, &err);
    if (s == PD_OK) {
        pd_model_stats ms;
        pd_model_stats_get(n->model, &ms);
        ps->st.restored_devices = ms.devices;
        /* Peeked: set already, and the replay began after it (or from the
         * start, if the stream no longer holds it: persist__start_replay). */
        if (!peeked) ps->restored_stream_seq = info->stream_seq;
        pd_log(PD_LOG_INFO,
               "restored snapshot: %zu bytes, %llu devices, %llu users, stream sequence %llu, "
               "in %llu ms", len, (unsigned long long)ms.devices, (unsigned long long)ms.users,
               (unsigned long long)info->stream_seq, (unsigned long long)(pd_mono_ms() - t0));
    } else if (peeked && ps->restored_stream_seq > 0) {
        pd_log(PD_LOG_WARN, "snapshot refused (%s) after the replay of the stream after it "
               "began: replaying all of it", err.msg);
    } else {
        pd_log(PD_LOG_WARN, "snapshot refused (%s): starting from the stream and the peers",
               err.msg);
    }
    free(info);
    free(buf);
    return s == PD_OK;
}

/* The snapshot was refused after the replay began after its stream
 * sequence: that replay is drained (nats.c calls the handler until then:
 * #637), what it queued is dropped (the loop has not run: the inbox holds
 * nothing else of it), and the stream is replayed from its start. */
bool persist__replay_again(pd_node *n) {
    pd_persist *ps = n->persist;
    if (ps->replay) {
        if (natsSubscription_Drain(ps->replay) == NATS_OK)
            natsSubscription_WaitForDrainCompletion(ps->replay, 10000);
        natsSubscription_Destroy(ps->replay);
        ps->replay = NULL;
    }
    ps->st.replaying = false;
    pd_inbox_item *items;
    uint32_t k = 0;
    pd_inbox_take(&n->inbox, &items, &k);
    for (uint32_t i = 0; i < k; i++) {
        if (items[i].kind == SUB_REPLAY) natsMsg_Destroy(items[i].msg);
        else pd_inbox_push(&n->inbox, items[i].msg, items[i].kind);
    }
    pd_inbox_release(items);
    ps->restored_stream_seq = 0;
    return persist__start_replay(n);
}

static void on_replay(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    pd_node *n = closure;
    (void)nc;
    (void)sub;
    if (pd_inbox_push(&n->inbox, msg, SUB_REPLAY)) uv_async_send(&n->wake);
}

bool persist__ensure_stream(pd_node *n) {
    pd_persist *ps = n->persist;
    jsStreamConfig cfg;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    char subj[PD_ID_MAX + 16];
    const char *subjects[1] = {subj};
    snprintf(subj, sizeof subj, "%s.delta.>", n->cfg.subject_prefix);
    jsStreamConfig_Init(&cfg);
    cfg.Name = STREAM_NAME;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Retention = js_LimitsPolicy;
    cfg.MaxAge = (int64_t)n->cfg.stream_max_age_ms * 1000000;
    cfg.MaxBytes = (int64_t)n->cfg.stream_max_bytes;
    cfg.Replicas = (int64_t)n->cfg.stream_replicas;
    natsStatus s = NATS_ERR;
    /* A JetStream cluster that has just started elects its leader for a
     * few seconds: retry a little before doing without replay. */
    for (int attempt = 0; attempt < 4 && s != NATS_OK; attempt++) {
        if (attempt) nats_Sleep(1000);
        s = js_AddStream(&si, ps->js, &cfg, NULL, &jerr);
        if (s != NATS_OK && jerr == JSStreamNameExistErr)
            s = js_UpdateStream(&si, ps->js, &cfg, NULL, &jerr);
    }
    if (s != NATS_OK) {
        pd_log(PD_LOG_WARN, "JetStream: cannot create stream %s: %s (%d); no replay",
               STREAM_NAME, natsStatus_GetText(s), (int)jerr);
        return false;
    }
    ps->replay_end = si->State.LastSeq;
    ps->first_seq = si->State.FirstSeq;
    ps->msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return true;
}

/* Replays the stream after the sequence the snapshot includes, up to the
 * end it has now. A snapshot that claims more than the stream holds is of
 * an older stream (deleted and made again): everything is replayed.
 * False if the replay could not start. */
bool persist__start_replay(pd_node *n) {
    pd_persist *ps = n->persist;
    jsSubOptions so;
    jsErrCode jerr = 0;
    char subj[PD_ID_MAX + 16];
    uint64_t after = ps->restored_stream_seq;
    if (after > ps->replay_end) {
        pd_log(PD_LOG_WARN, "snapshot includes stream sequence %llu but %s ends at %llu: "
               "replaying all of it", (unsigned long long)after, STREAM_NAME,
               (unsigned long long)ps->replay_end);
        after = 0;
        ps->restored_stream_seq = 0; /* a claim on the old stream says nothing */
    }
    ps->st.replay_from = after + 1;
    /* Nothing after the snapshot, or nothing kept at all (every message aged
     * out: the stream keeps its last sequence with no message, and an
     * ordered consumer would wait for one until the deadline). */
    if (after >= ps->replay_end || ps->msgs == 0 || ps->first_seq > ps->replay_end) return true;
    snprintf(subj, sizeof subj, "%s.delta.>", n->cfg.subject_prefix);
    jsSubOptions_Init(&so);
    so.Stream = STREAM_NAME;
    so.Ordered = true; /* push, flow-controlled, no acks: not nats.c 3.4's Fetch */
    if (after == 0) {
        so.Config.DeliverPolicy = js_DeliverAll;
    } else {
        /* Below the stream's first sequence (aged out), the server starts
         * at the first one it has. */
        so.Config.DeliverPolicy = js_DeliverByStartSequence;
        so.Config.OptStartSeq = after + 1;
    }
    natsStatus s = js_Subscribe(&ps->replay, ps->js, subj, on_replay, n, NULL, &so, &jerr);
    if (s != NATS_OK) {
        pd_log(PD_LOG_WARN, "JetStream: cannot replay %s: %s; peers will fill in", STREAM_NAME,
               natsStatus_GetText(s));
        ps->replay = NULL;
        return false;
    }
    ps->st.replaying = true;
    ps->replay_deadline = pd_mono_ms() + REPLAY_DEADLINE_MS;
    pd_log(PD_LOG_INFO, "replaying %s from sequence %llu up to %llu", STREAM_NAME,
           (unsigned long long)after + 1, (unsigned long long)ps->replay_end);
    return true;
}

void persist__publish_resync(pd_node *n) {
    char subj[PD_ID_MAX * 2 + 16];
    snprintf(subj, sizeof subj, "%s.resync.%s", n->cfg.subject_prefix, n->cfg.node_id);
    msgpack_sbuffer_clear(&n->out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &n->out, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    pd_pack_kv_str(&pk, "node", pd_str_c(n->cfg.node_id));
    node__publish(n, subj);
}

void node__persist_resync(pd_node *n, const char *why) {
    if (n->persist && n->persist->st.replaying) return;
    persist__publish_resync(n);
    pd_log(PD_LOG_INFO, "%s: asked socket servers to resync", why);
}

/* The replay reached the end the stream had at start (complete), or there
 * was none to do, or it gave up. A complete one makes the model include the
 * stream up to that end: the first snapshot of this life says so. */
void persist__finish_replay(pd_node *n, bool complete) {
    pd_persist *ps = n->persist;
    ps->stream_seq_next = complete ? ps->replay_end : ps->restored_stream_seq;
    if (ps->replay) {
        natsSubscription_Unsubscribe(ps->replay);
        natsSubscription_Destroy(ps->replay);
        ps->replay = NULL;
    }
    ps->st.replaying = false;
    n->now = pd_now_ms();
    pd_repl_restore_done(n->repl, n->now);
    for (uint32_t i = 0; i < ps->nheld; i++) {
        natsMsg *m = ps->held[i];
        pd_err err;
        pd_repl_on_delta(n->repl, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), n->now,
                         &err);
        natsMsg_Destroy(m);
    }
    free(ps->held);
    ps->held = NULL;
    ps->nheld = 0;
    persist__publish_resync(n);
    /* Applying them, against the wall time of the replay ("replaying ..."
     * to here): the rest is JetStream's delivery (bench/README). */
    pd_log(PD_LOG_INFO, "restore done (%llu deltas replayed, applied in %llu ms); asked socket "
           "servers to resync", (unsigned long long)ps->st.replayed_deltas,
           (unsigned long long)(ps->replay_apply_us / 1000));
}

void node__persist_replay_msg(pd_node *n, void *msg) {
    pd_persist *ps = n->persist;
    jsMsgMetaData *meta = NULL;
    pd_err err;
    if (ps == NULL || !ps->st.replaying) return;
    uint64_t t0 = node__mono_us();
    pd_repl_replay_delta(n->repl, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
                         n->now, &err);
    ps->replay_apply_us += node__mono_us() - t0;
    ps->st.replayed_deltas++;
    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
        bool done = meta->Sequence.Stream >= ps->replay_end;
        jsMsgMetaData_Destroy(meta);
        if (done) persist__finish_replay(n, true);
    }
}

bool node__persist_hold(pd_node *n, void *msg) {
    pd_persist *ps = n->persist;
    if (ps == NULL || !ps->st.replaying || ps->nheld >= HELD_MAX) return false;
    natsMsg **v = realloc(ps->held, sizeof *v * (ps->nheld + 1));
    if (v == NULL) return false;
    ps->held = v;
    ps->held[ps->nheld++] = msg;
    return true;
}

