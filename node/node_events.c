/* node_events.c - connection events (PROTOCOL.md section 1) and change
 * notifications (section 3): decode, apply through the replica, reply; and
 * publish the notifications the replica's notifier hands out (which node
 * announces, re-announcing and coalescing live in common/notify/). */
#include "node.h"
#include <stdio.h>

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
        if (res == PD_DUPLICATE) pd_reply_duplicate_encode(&n->out);
        else pd_reply_ok_encode(&n->out);
        node__reply_after_flush(n, reply); /* once the delta is out */
    }
}

/* The replica's io.publish: the notifier (common/notify/) chose this
 * node as the user's announcer and let the view through its gate. */
void node__publish_notification(void *ud, const pd_view *v) {
    pd_node *n = ud;
    /* The view is borrowed and n->out may be holding a reply being built
     * elsewhere only between calls, never across one: safe to reuse. */
    msgpack_sbuffer_clear(&n->out);
    pd_notification_encode(&n->out, v);
    snprintf(n->subj, sizeof n->subj, "%s.user.%.*s", n->cfg.subject_prefix, (int)v->user.n,
             v->user.p);
    node__publish(n, n->subj);
    n->stats.notifications++;
}
