/* node_slow.c - falling behind: what a node does when messages arrive
 * faster than its loop handles them.
 *
 * Two places can drop a message: nats.c's pending queue of a subscription
 * (its limits, set here on purpose, are hit only if nats.c's own thread is
 * starved, since the handler merely queues) and the node's inbox, bounded
 * by PRESENCE_INBOX_MAX_MSGS / _BYTES so that a loop that falls behind does
 * not grow it without end. Either way the drop is counted by subscription,
 * reported (log, rate-limited, and presenced_dropped_messages_total) and
 * repaired, never silently absorbed:
 *  - events: the socket servers are asked to resync (P.resync.<node>), once
 *    the drops pause (or at the latest after RESYNC_MAX_WAIT_MS while they
 *    go on); their sync restores exactly their live connections;
 *  - deltas, heartbeats, state transfer parts: the replica repairs itself:
 *    a gap in an origin's deltas, or a heartbeat showing it is behind,
 *    makes it ask that peer for a state transfer, and a lost part times out
 *    and is asked again (repl.c);
 *  - queries: the requester times out and asks again; nothing to repair.
 * The JetStream replay and stream info replies are never dropped and do not
 * count against the bounds (a restart's replay is bounded by the stream's
 * own limits, PRESENCE_STREAM_MAX_BYTES, not by the inbox's). */
#include "node.h"

#define SLOW_CHECK_MS 100
#define RESYNC_QUIET_MS 250
#define RESYNC_MAX_WAIT_MS 2000

void node__slow_init(pd_node *n) {
    pd_inbox_limit(&n->inbox, n->cfg.inbox_max_msgs, n->cfg.inbox_max_bytes,
                   (1u << SUB_REPLAY) | (1u << SUB_STREAM_INFO));
    n->slow.log = (pd_ratelimit){.per_window = 1, .window_ms = 1000};
}

static const char *kind_name(int kind) {
    switch (kind) {
    case SUB_EVENTS: return "events";
    case SUB_DELTA: return "deltas";
    case SUB_HB: return "heartbeats";
    case SUB_SYNC_REQ: case SUB_SYNC_REPLY: return "state_transfer";
    case SUB_REPLAY: case SUB_STREAM_INFO: return "stream";
    default: return "queries";
    }
}

/* Everything dropped so far for subscription kind: by the inbox and by
 * nats.c's pending limits. */
static uint64_t dropped_total(pd_node *n, const uint64_t *inbox, int kind) {
    int64_t nats = 0;
    if (n->subs[kind] && natsSubscription_GetDropped(n->subs[kind], &nats) != NATS_OK) nats = 0;
    return inbox[kind] + n->queries.shed[kind] + (nats > 0 ? (uint64_t)nats : 0);
}

static void report(pd_node *n, const uint64_t *fresh) {
    uint32_t suppressed = 0;
    char what[256] = "";
    size_t k = 0;
    if (!pd_ratelimit_allow(&n->slow.log, n->now, &suppressed)) return;
    for (int i = 0; i < SUB_COUNT; i++) {
        if (fresh[i] == 0 || k >= sizeof what) continue;
        k += (size_t)snprintf(what + k, sizeof what - k, "%s%s=%llu", k ? " " : "",
                              kind_name(i), (unsigned long long)fresh[i]);
    }
    pd_log(PD_LOG_WARN,
           "falling behind: dropped %s (inbox bounds PRESENCE_INBOX_MAX_MSGS/_BYTES or NATS "
           "pending limits); repairing: socket servers resync lost events, peers' state "
           "transfers fill in lost deltas%s",
           what, suppressed ? " (earlier reports suppressed)" : "");
}

void node__slow_tick(pd_node *n) {
    uint64_t inbox[PD_INBOX_KINDS], fresh[SUB_COUNT] = {0};
    bool any = false;
    if (n->now < n->slow.next_check) return;
    n->slow.next_check = n->now + SLOW_CHECK_MS;
    pd_inbox_dropped(&n->inbox, inbox);
    for (int i = 0; i < SUB_COUNT; i++) {
        uint64_t total = dropped_total(n, inbox, i);
        /* nats.c's count is unreadable once the connection is closed:
         * counters never go back. */
        if (total < n->slow.dropped[i]) continue;
        fresh[i] = total - n->slow.dropped[i];
        n->slow.dropped[i] = total;
        any |= fresh[i] > 0;
    }
    if (any) report(n, fresh);
    if (fresh[SUB_EVENTS]) {
        if (!n->slow.resync_pending) n->slow.first_drop = n->now;
        n->slow.resync_pending = true;
        n->slow.last_drop = n->now;
    }
    if (n->slow.resync_pending && (n->now - n->slow.last_drop >= RESYNC_QUIET_MS ||
                                   n->now - n->slow.first_drop >= RESYNC_MAX_WAIT_MS)) {
        n->slow.resync_pending = false;
        n->slow.resyncs++;
        node__persist_resync(n, "events were dropped");
    }
}
