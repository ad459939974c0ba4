/* node_events.c - connection events (PROTOCOL.md section 1) and change
 * notifications (section 3): decode, apply to the model, reply, announce
 * (through the coalescing gate of PRESENCE_NOTIFY_MIN_INTERVAL_MS). */
#include "node.h"
#include <stdio.h>
#include "base/clock.h"

void node__handle_event(pd_node *n, natsMsg *msg) {
    const char *data = natsMsg_GetData(msg);
    int len = natsMsg_GetDataLength(msg);
    const char *reply = natsMsg_GetReply(msg);
    pd_event ev;
    pd_err err = {PD_OK, ""};
    pd_apply_result res = PD_APPLIED;
    pd_status s;

    if ((uint64_t)len > n->cfg.max_msg_bytes) {
        pd_err_set(&err, PD_ETOOLARGE, "message is %d bytes; PRESENCE_MAX_MSG_BYTES is %llu",
                   len, (unsigned long long)n->cfg.max_msg_bytes);
        s = PD_ETOOLARGE;
        n->stats.refused_msg_bytes++;
    } else {
        s = pd_event_decode(data, (size_t)len, &ev, &err);
    }
    if (s == PD_OK) s = pd_repl_local(n->repl, &ev, n->now, &res, &err);
    if (s != PD_OK) {
        if (err.code != s) pd_err_set(&err, s, "%s", pd_status_str(s));
        node__bad_input(n, msg, &err);
        node__reply_error(n, msg, s, err.msg);
        return;
    }
    if (res == PD_DUPLICATE) n->stats.duplicates++;
    else n->stats.events[ev.type]++;
    if (ev.has_trace) {
        pd_repl_trace(n->repl, ev.trace);
        node__trace_report(n, &ev.trace, 1);
    }
    if (reply && reply[0]) {
        msgpack_sbuffer_clear(&n->out);
        pd_reply_ok_encode(&n->out);
        node__reply_after_flush(n, reply); /* once the delta is out */
    }
}

/* Publishes one notification (the gate's send function). */
static void publish_notification(void *ud, const pd_view *v) {
    pd_node *n = ud;
    /* The view is borrowed and n->out may be holding a reply being built
     * elsewhere only between calls, never across one: safe to reuse. */
    msgpack_sbuffer_clear(&n->out);
    pd_notification_encode(&n->out, v);
    snprintf(n->subj, sizeof n->subj, "%s.user.%.*s", n->cfg.subject_prefix, (int)v->user.n,
             v->user.p);
    node__publish(n, n->subj);
    n->stats.notifications++;
    /* From the change (its ts, this node's or the origin's wall clock) to
     * now: the coalescing interval and the way from another node included. */
    uint64_t now = pd_now_ms();
    if (v->ts > 0 && now >= (uint64_t)v->ts)
        pd_hist_observe_us(&n->stats.notify_latency, (now - (uint64_t)v->ts) * 1000u);
}

/* The announcer's changes go through the gate: at once, or held for the
 * end of the user's interval (common/notify_gate.h). */
void node__notify(void *ud, const pd_view *v) {
    pd_node *n = ud;
    if (n->gate == NULL) publish_notification(n, v); /* stopping */
    else pd_gate_offer(n->gate, v, n->now);
}

/* Users in an interval at once, at most: beyond, notifications go out
 * uncoalesced. ~60 bytes each, plus a held view for those waiting. */
#define NODE_GATE_MAX_USERS (1u << 18)

const char *node__gate_init(pd_node *n) {
    n->gate = pd_gate_new(n->cfg.notify_min_interval_ms, NODE_GATE_MAX_USERS,
                          publish_notification, n);
    return n->gate ? NULL : "out of memory creating the notification gate";
}

void node__gate_tick(pd_node *n) {
    if (n->gate) pd_gate_tick(n->gate, n->now);
}

uint64_t node__gate_next_due(const pd_node *n) {
    return n->gate ? pd_gate_next_due(n->gate) : UINT64_MAX;
}

void node__gate_close(pd_node *n, bool flush) {
    if (n->gate == NULL) return;
    if (flush) pd_gate_flush(n->gate);
    pd_gate_free(n->gate);
    n->gate = NULL;
}
