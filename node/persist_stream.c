/* persist_stream.c - the stream's last sequence, which each snapshot
 * claims to include: asked without blocking at each snapshot
 * ($JS.API.STREAM.INFO, the reply through the inbox), and blocking at a
 * clean stop. */
#include <jansson.h>
#include "persist_int.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/clock.h"
#include "node.h"

/* ---- the stream's end, read at each snapshot ------------------------------------------ */

static void on_info(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    pd_node *n = closure;
    (void)nc;
    (void)sub;
    if (pd_inbox_push(&n->inbox, msg, SUB_STREAM_INFO)) uv_async_send(&n->wake);
}

void persist__subscribe_info(pd_node *n) {
    pd_persist *ps = n->persist;
    natsInbox *inbox = NULL;
    if (natsInbox_Create(&inbox) != NATS_OK) return;
    snprintf(ps->info_inbox, sizeof ps->info_inbox, "%s", (const char *)inbox);
    natsInbox_Destroy(inbox);
    if (natsConnection_Subscribe(&ps->info_sub, n->jsnc, ps->info_inbox, on_info, n) != NATS_OK) {
        pd_log(PD_LOG_WARN, "JetStream: cannot subscribe for stream info: snapshots will claim "
               "the stream sequence of the restore");
        ps->info_sub = NULL;
    }
}

/* Asks for the stream's last sequence without waiting: the reply comes
 * through the inbox like any message (node__persist_stream_info). */
void persist__request_info(pd_node *n, uint64_t now) {
    pd_persist *ps = n->persist;
    if (ps->info_sub == NULL || (ps->info_asked_at && now - ps->info_asked_at < INFO_TIMEOUT_MS))
        return;
    if (natsConnection_PublishRequest(n->pub, INFO_SUBJECT, ps->info_inbox, NULL, 0) == NATS_OK)
        ps->info_asked_at = now;
}

/* Reads state.last_seq from a STREAM.INFO reply (JSON; an error reply has
 * no "state"). */
static bool parse_last_seq(const char *data, int len, uint64_t *out) {
    if (data == NULL || len <= 0 || len > INFO_MAX_BYTES) return false;
    json_t *root = json_loadb(data, (size_t)len, 0, NULL);
    json_t *seq = json_object_get(json_object_get(root, "state"), "last_seq");
    bool ok = json_is_integer(seq) && json_integer_value(seq) >= 0;
    if (ok) *out = (uint64_t)json_integer_value(seq);
    json_decref(root);
    return ok;
}

void node__persist_stream_info(pd_node *n, void *msg) {
    pd_persist *ps = n->persist;
    uint64_t seq;
    if (ps == NULL || ps->info_asked_at == 0) return; /* late or unasked */
    if (!parse_last_seq(natsMsg_GetData(msg), natsMsg_GetDataLength(msg), &seq)) {
        pd_log(PD_LOG_DEBUG, "JetStream: unexpected stream info reply");
        return;
    }
    ps->sample = seq;
    ps->sample_at = pd_mono_ms(); /* read by the server at the latest now */
    ps->info_asked_at = 0;
}

/* The sequence a last snapshot may claim: the stream's end now (stopping,
 * blocking is fine). A delta of a peer stored but not applied here yet is
 * skipped by the next replay and comes back from that peer's state
 * transfer, or its new incarnation, or goes with it when it is down for
 * good; our own are all in the snapshot. (Never called while replaying.) */
uint64_t persist__final_stream_seq(pd_node *n) {
    pd_persist *ps = n->persist;
    jsStreamInfo *si = NULL;
    jsOptions o;
    jsErrCode jerr = 0;
    uint64_t seq = ps->stream_seq_next;
    if (ps->js == NULL || ps->st.replaying || jsOptions_Init(&o) != NATS_OK) return seq;
    o.Wait = 1000;
    if (js_GetStreamInfo(&si, ps->js, STREAM_NAME, &o, &jerr) == NATS_OK) {
        seq = si->State.LastSeq;
        jsStreamInfo_Destroy(si);
    }
    return seq;
}

