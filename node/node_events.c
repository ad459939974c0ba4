/* node_events.c - connection events (docs/protocol.md section 1), alone or in
 * a batch, and change notifications (section 3): decode, apply through the
 * replica, reply (ok, an error, or partial with the refused items); and
 * publish the notifications the replica's notifier hands out (which node
 * announces, re-announcing and coalescing live in common/notify/). */
#include "node.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/clock.h"

/* Decodes and applies one event (alone or one of a batch). On error, err
 * says why and nothing changed. */
static pd_status apply_one(pd_node *n, const void *data, size_t len, pd_event *ev,
                           pd_apply_result *res, pd_err *err) {
    pd_status s = pd_event_decode(data, len, ev, err);
    if (s == PD_OK) s = pd_repl_local(n->repl, ev, n->now, res, err);
    if (s != PD_OK) {
        if (err->code != s) pd_err_set(err, s, "%s", pd_status_str(s));
        return s;
    }
    if (*res == PD_DUPLICATE) n->stats.duplicates++;
    else n->stats.events[ev->type]++;
    if (ev->has_trace) {
        pd_repl_trace(n->repl, ev->trace);
        node__trace_report(n, &ev->trace, 1);
    }
    return PD_OK;
}

/* The refused entries of a partial sync, as a reply (after the delta). */
static void reply_partial_sync(pd_node *n, natsMsg *msg, const char *reply) {
    const pd_refusal *r;
    uint32_t nr = pd_model_refusals(n->model, &r);
    pd_failure *f = calloc(nr ? nr : 1, sizeof *f);
    char text[96];
    snprintf(text, sizeof text, "%u connection(s) of the sync refused; the rest applied", nr);
    pd_err e;
    pd_err_set(&e, PD_EPARTIAL, "%s: %s", text, nr ? r[0].message : "");
    node__bad_input(n, msg, &e);
    if (f == NULL || reply == NULL || reply[0] == '\0') {
        free(f);
        return;
    }
    for (uint32_t i = 0; i < nr; i++)
        f[i] = (pd_failure){.i = -1, .conn = r[i].conn, .code = r[i].code,
                            .message = pd_str_c(r[i].message)};
    msgpack_sbuffer_clear(&n->out);
    pd_reply_partial_encode(&n->out, text, f, nr);
    free(f);
    node__reply_after_flush(n, reply);
}

typedef struct {
    int64_t i;
    pd_status code;
    char msg[128];
} batch_failure;

/* A batch: each event applied in order as if it came alone; the reply
 * lists those refused (schemas/events.md#batch). */
static void handle_batch(pd_node *n, natsMsg *msg, const void *data, size_t len,
                         const char *reply) {
    pd_batch b;
    pd_err err = {PD_OK, ""};
    pd_status s = pd_batch_decode(data, len, (uint32_t)n->cfg.max_batch, &b, &err);
    if (s != PD_OK) {
        node__bad_input(n, msg, &err);
        node__reply_error(n, msg, s, err.msg);
        return;
    }
    batch_failure *fails = NULL;
    uint32_t nfail = 0, i = 0;
    mp_reader it;
    pd_str raw;
    pd_batch_iter_init(&it, &b);
    for (; pd_batch_next(&it, &raw); i++) {
        pd_event ev;
        pd_apply_result res = PD_APPLIED;
        err = (pd_err){PD_OK, ""};
        s = apply_one(n, raw.p, raw.n, &ev, &res, &err);
        if (s == PD_OK && res == PD_PARTIAL) {
            s = PD_EPARTIAL;
            pd_err_set(&err, PD_EPARTIAL, "connections of this sync were refused (send a sync "
                       "alone for the list); the rest applied");
        }
        if (s == PD_OK) continue;
        node__bad_input(n, msg, &err);
        if (fails == NULL && (fails = calloc(b.n, sizeof *fails)) == NULL) continue;
        fails[nfail].i = i;
        fails[nfail].code = s;
        memcpy(fails[nfail].msg, err.msg, sizeof fails[nfail].msg);
        nfail++;
    }
    n->stats.batches++;
    if (reply && reply[0]) {
        msgpack_sbuffer_clear(&n->out);
        if (nfail == 0) {
            pd_reply_ok_encode(&n->out);
        } else {
            pd_failure *f = calloc(nfail, sizeof *f);
            char text[96];
            snprintf(text, sizeof text, "%u of %u events refused; the rest applied", nfail, b.n);
            for (uint32_t k = 0; f && k < nfail; k++)
                f[k] = (pd_failure){.i = fails[k].i, .code = fails[k].code,
                                    .message = pd_str_c(fails[k].msg)};
            pd_reply_partial_encode(&n->out, text, f, f ? nfail : 0);
            free(f);
        }
        node__reply_after_flush(n, reply); /* once the delta is out */
    }
    free(fails);
}

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
    } else if (pd_batch_is(data, (size_t)len)) {
        handle_batch(n, msg, data, (size_t)len, reply);
        return;
    } else {
        s = apply_one(n, data, (size_t)len, &ev, &res, &err);
    }
    if (s != PD_OK) {
        node__bad_input(n, msg, &err);
        node__reply_error(n, msg, s, err.msg);
        return;
    }
    if (res == PD_PARTIAL) {
        reply_partial_sync(n, msg, reply);
        return;
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
    /* From the change (its ts, this node's or the origin's wall clock) to
     * now: the coalescing interval and the way from another node included. */
    uint64_t now = pd_now_ms();
    if (v->ts > 0 && now >= (uint64_t)v->ts)
        pd_hist_observe_us(&n->stats.notify_latency, (now - (uint64_t)v->ts) * 1000u);
}
