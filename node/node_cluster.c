/* node_cluster.c - the node's side of replication: messages from peers
 * (deltas, heartbeats, state-transfer requests and replies) handed to the
 * replica, and the replica's output published on NATS. */
#include "node.h"
#include <stdio.h>
#include <string.h>
#include "base/clock.h"

/* The node a P.delta.<node> / P.hb.<node> subject names: its last token. */
static pd_str subject_node(natsMsg *msg) {
    const char *subj = natsMsg_GetSubject(msg);
    const char *dot = subj ? strrchr(subj, '.') : NULL;
    const char *id = dot ? dot + 1 : "";
    return (pd_str){id, (uint32_t)strlen(id)};
}

void node__handle_cluster(pd_node *n, node_sub_kind kind, natsMsg *msg) {
    const void *data = natsMsg_GetData(msg);
    size_t len = (size_t)natsMsg_GetDataLength(msg);
    pd_err err = {PD_OK, ""};
    pd_status s;
    switch (kind) {
    case SUB_DELTA:
        s = pd_repl_on_delta_from(n->repl, subject_node(msg), data, len, n->now, &err);
        break;
    case SUB_HB:
        s = pd_repl_on_heartbeat_from(n->repl, subject_node(msg), data, len, n->now, &err);
        break;
    case SUB_SYNC_REQ: s = pd_repl_on_sync_request(n->repl, data, len, msg, &err); break;
    default: s = pd_repl_on_sync_part(n->repl, data, len, n->now, &err); break;
    }
    if (s != PD_OK) node__bad_input(n, msg, &err);
}

static void send_delta(void *ud, const void *buf, size_t len) {
    pd_node *n = ud;
    char subj[PD_ID_MAX * 2 + 16];
    snprintf(subj, sizeof subj, "%s.delta.%s", n->cfg.subject_prefix, n->cfg.node_id);
    node__publish_bytes(n, subj, buf, len);
}

static void send_heartbeat(void *ud, const void *buf, size_t len) {
    pd_node *n = ud;
    char subj[PD_ID_MAX * 2 + 16];
    snprintf(subj, sizeof subj, "%s.hb.%s", n->cfg.subject_prefix, n->cfg.node_id);
    node__publish_bytes(n, subj, buf, len);
}

static void send_sync_request(void *ud, pd_str target, const void *buf, size_t len) {
    pd_node *n = ud;
    char subj[PD_ID_MAX * 2 + 16];
    snprintf(subj, sizeof subj, "%s.sync.%.*s", n->cfg.subject_prefix, (int)target.n, target.p);
    natsStatus s = natsConnection_PublishRequest(n->pub, subj, n->sync_inbox, buf, (int)len);
    if (s != NATS_OK) n->stats.publish_errors++;
}

static void send_sync_part(void *ud, void *reply_ctx, const void *buf, size_t len) {
    pd_node *n = ud;
    const char *reply = natsMsg_GetReply(reply_ctx);
    if (reply && reply[0]) node__publish_bytes(n, reply, buf, len);
}

/* A transfer served in slices outlives its request message: what it
 * keeps is a message of ours carrying the same reply subject. */
static void *reply_keep(void *ud, void *reply_ctx) {
    natsMsg *kept = NULL;
    const char *reply = natsMsg_GetReply(reply_ctx);
    (void)ud;
    if (reply == NULL || reply[0] == '\0') return NULL;
    if (natsMsg_Create(&kept, reply, reply, NULL, 0) != NATS_OK) return NULL;
    return kept;
}

static void reply_free(void *ud, void *kept) {
    (void)ud;
    natsMsg_Destroy(kept);
}

void node__trace_report(pd_node *n, const uint64_t *ids, uint32_t count) {
    char subj[PD_ID_MAX * 2 + 16];
    uint64_t at = pd_now_ns();
    snprintf(subj, sizeof subj, "%s.trace.%s", n->cfg.subject_prefix, n->cfg.node_id);
    msgpack_sbuffer_clear(&n->out);
    pd_trace_report_encode(&n->out, pd_str_c(n->cfg.node_id), at, ids, count);
    node__publish(n, subj);
}

static void traced(void *ud, const pd_delta *d) {
    uint64_t ids[PD_TRACE_MAX];
    uint32_t k = pd_delta_trace_ids(d, ids, PD_TRACE_MAX);
    if (k) node__trace_report(ud, ids, k);
}

/* A peer's delta applied: from its sending (the peer's clock) to now. */
static void applied(void *ud, uint64_t at, uint64_t now) {
    pd_node *n = ud;
    (void)now; /* the batch's time; the apply itself has taken a while since */
    uint64_t t = pd_now_ms();
    if (at != 0) pd_hist_observe_us(&n->stats.apply_latency, t > at ? (t - at) * 1000u : 0);
}

/* The heartbeat's counters for presence-dash (schemas/cluster.md). */
static void heartbeat_extra(void *ud, pd_heartbeat *hb) {
    pd_node *n = ud;
    pd_persist_stats ps;
    hb->events = 0;
    for (int i = 0; i < PD_EV_COUNT; i++) hb->events += n->stats.events[i];
    hb->notifications = n->stats.notifications;
    node__persist_stats(n, &ps);
    hb->snapshot_at = ps.last_snapshot_at;
    hb->nservers = pd_model_servers(n->model, hb->servers, PD_HB_SERVERS_MAX);
}

const pd_repl_io node__repl_io = {
    .send_delta = send_delta,
    .send_heartbeat = send_heartbeat,
    .send_sync_request = send_sync_request,
    .send_sync_part = send_sync_part,
    .publish = node__publish_notification,
    .traced = traced,
    .applied = applied,
    .reply_keep = reply_keep,
    .reply_free = reply_free,
    .heartbeat_extra = heartbeat_extra,
};
