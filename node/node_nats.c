/* node_nats.c - the node's NATS connections (receiving and publishing,
 * both on the loop; JetStream on nats.c's threads): options (reconnect
 * forever), the subscriptions the loop takes messages from after each read,
 * and the small publish/reply helpers used by the handlers. */
#include "natsauth.h"
#include "node.h"
#include <stdio.h>
#include <string.h>

/* Reconnect: forever, 250 ms apart, with nats.c's jitter. */
#define NODE_RECONNECT_WAIT_MS 250
#define NODE_QUEUE_GROUP "presenced"
/* The loop reads up to this many 32 kB buffers a turn (1 MiB) while the
 * socket holds more: events queued behind a flood of queries are read, and
 * handled, before the queries are answered (node.c answers queries in
 * slices, and sheds them beyond PRESENCE_INBOX_MAX_MSGS). */
#define NODE_READS_A_TURN 32

/* True for a delta on our own subject, P.delta.<us>: NATS hands our own
 * deltas back (the publishing connection is another one), and the replica
 * never applies them. Dropped as they are read, they are never decoded: a
 * restart's republish is 70 MB of them at 1M devices, and every batch of
 * events makes one. */
static bool own_delta(const pd_node *n, node_sub_kind kind, natsMsg *msg) {
    if (kind != SUB_DELTA) return false;
    const char *subj = natsMsg_GetSubject(msg);
    const char *dot = subj ? strrchr(subj, '.') : NULL;
    return dot && strcmp(dot + 1, n->cfg.node_id) == 0;
}

static void on_disconnected(natsConnection *nc, void *closure) {
    pd_node *n = closure;
    (void)nc;
    if (__atomic_load_n(&n->nats_closing, __ATOMIC_ACQUIRE)) return; /* our own close */
    pd_log(PD_LOG_WARN, "disconnected from NATS; reconnecting");
}

static void on_reconnected(natsConnection *nc, void *closure) {
    char url[256] = "";
    pd_node *n = closure;
    __atomic_add_fetch(&n->nats_reconnects, 1, __ATOMIC_RELAXED);
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    pd_log(PD_LOG_INFO, "reconnected to NATS at %s", url);
}

static void on_connected(natsConnection *nc, void *closure) {
    char url[256] = "";
    (void)closure;
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    pd_log(PD_LOG_INFO, "connected to NATS at %s", url);
}

static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus s, void *closure) {
    (void)nc;
    (void)sub;
    (void)closure;
    pd_log(PD_LOG_ERROR, "NATS error: %s", natsStatus_GetText(s));
}

/* The node reconnects forever, so nats.c closes the connection only when
 * every server refused it for good: credentials (a wrong password twice
 * in a row), TLS. The caller then sees only "Connection Closed" or "No
 * server available": say where to look. */
static void on_closed(natsConnection *nc, void *closure) {
    const char *text = NULL;
    natsStatus s = natsConnection_GetLastError(nc, &text);
    pd_node *n = closure;
    if (__atomic_load_n(&n->nats_closing, __ATOMIC_ACQUIRE)) return; /* our own close */
    if (s != NATS_OK)
        pd_log(PD_LOG_ERROR, "NATS connection closed: %s%s%s; the servers refused this node "
               "(check the PRESENCE_NATS_* credentials and TLS settings; the NATS server's "
               "log says why)", natsStatus_GetText(s), text && *text ? ": " : "",
               text ? text : "");
}

/* The node's three connections. NATS_IN receives everything but JetStream
 * and is read by the loop: a message reaches its handler without a hand-off
 * between threads (nats.c's reading thread, its delivery thread, the
 * inbox's wake-up of the loop: three thread switches a message, where a
 * relay pays one). NATS_PUB is everything the loop publishes, written
 * once per batch. Both are in nats.c's event-loop mode (natsout.c), where
 * a request that waits for its reply (JetStream's API, a flush) would
 * wait for the loop that makes it: NATS_JS keeps nats.c's threads for
 * JetStream (the stream, the replay, the stream's end at a stop). */
typedef enum { NATS_IN, NATS_PUB, NATS_JS } conn_role;

/* On a credentials or TLS problem, err names the setting. */
static natsStatus make_options(pd_node *n, conn_role role, natsOptions **out, char *err,
                               size_t errlen) {
    static const char *const suffix[] = {"", ":pub", ":js"};
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    char name[PD_ID_MAX + 16], urlbuf[PD_CONFIG_URL_MAX], first[256] = "";
    const char *urls[33];
    size_t nurls = pd_url_split(n->cfg.nats_url, urlbuf, sizeof urlbuf, urls + 1, 32);
    const char **list = urls + 1;
    if (errlen > 0) err[0] = '\0';
    snprintf(name, sizeof name, "presenced:%s%s", n->cfg.node_id, suffix[role]);
    /* The other connections try the receiving one's server first: a
     * publish and its echo take one server, not two and a route. */
    if (role != NATS_IN && n->nc &&
        natsConnection_GetConnectedUrl(n->nc, first, sizeof first) == NATS_OK && first[0]) {
        urls[0] = first;
        list = urls;
        nurls++;
        if (s == NATS_OK) s = natsOptions_SetNoRandomize(o, true);
    }
    if (s == NATS_OK) s = natsOptions_SetServers(o, list, (int)nurls);
    if (s == NATS_OK) s = natsOptions_SetName(o, name);
    /* nats.c gives up after 60 tries by default: a node never should. */
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, NODE_RECONNECT_WAIT_MS);
    if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(o, true, on_connected, n);
    /* Replies and notifications leave at once instead of waiting up to 1 ms
     * for the flusher thread. */
    if (s == NATS_OK) s = natsOptions_SetSendAsap(o, true);
    if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(o, on_disconnected, n);
    /* A reconnect of the connections the loop uses makes the node resync
     * (persist.c); JetStream's own does not need one. */
    if (s == NATS_OK && role != NATS_JS) s = natsOptions_SetReconnectedCB(o, on_reconnected, n);
    if (s == NATS_OK) s = natsOptions_SetErrorHandler(o, on_async_error, n);
    if (s == NATS_OK) s = natsOptions_SetClosedCB(o, on_closed, n);
    if (s == NATS_OK && pd_natsauth_apply(o, &n->cfg, err, errlen) != PD_OK) s = NATS_INVALID_ARG;
    if (s == NATS_OK && role == NATS_IN) s = pd_natsout_options(&n->in_io, o);
    if (s == NATS_OK && role == NATS_PUB) s = pd_natsout_options(&n->out_io, o);
    /* The replay and the stream's end: one delivery thread (nats.c's pool). */
    if (s == NATS_OK && role == NATS_JS) s = natsOptions_UseGlobalMessageDelivery(o, true);
    if (s != NATS_OK) {
        natsOptions_Destroy(o);
        return s;
    }
    *out = o;
    return NATS_OK;
}

static natsStatus subscribe(pd_node *n, node_sub_kind kind, const char *suffix, bool queue) {
    char subj[sizeof n->subj];
    if (kind == SUB_SYNC_REPLY) snprintf(subj, sizeof subj, "%s", suffix);
    else snprintf(subj, sizeof subj, "%s.%s", n->cfg.subject_prefix, suffix);
    n->sub_ctx[kind] = (node_sub_ctx){n, kind}; /* take_one's */
    /* Synchronous: the loop takes the messages after each read (take_read). */
    natsStatus s = queue
        ? natsConnection_QueueSubscribeSync(&n->subs[kind], n->nc, subj, NODE_QUEUE_GROUP)
        : natsConnection_SubscribeSync(&n->subs[kind], n->nc, subj);
    /* Taken after every read, nats.c's pending queue holds at most one
     * read's messages; past these limits it drops, and node_slow.c counts
     * and repairs that like the inbox's own drops. */
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(n->subs[kind], NODE_PENDING_MSGS, NODE_PENDING_BYTES);
    return s;
}

/* The order in which one read's messages reach the inbox (nats.c keeps
 * the server's order within a subscription, not across them). A
 * transfer's part before the deltas read with it: a delta the server sent
 * before it is already in it (the peer serves from its model, after
 * publishing the delta on the same connection), one sent after comes
 * after it. A heartbeat before the deltas: it counts the deltas sent
 * before it, and one handled after later deltas looks like a peer that
 * went back (twice in a row, repl.c fetches its partition again:
 * contradicts()), while one handled early only claims deltas that the
 * same batch then applies. Events before queries: a client's get after
 * its event sees the event. take_batch() keeps this order within each
 * class. */
static const node_sub_kind read_order[] = {
    SUB_SYNC_REPLY, SUB_HB, SUB_DELTA, SUB_SYNC_REQ, SUB_EVENTS,
    SUB_Q_GET, SUB_Q_DEVICES, SUB_Q_ONLINE, SUB_Q_CLUSTER, SUB_Q_NODE,
};

/* One message taken from subscription ctx->kind: into the inbox, or, our
 * own delta, with the handled messages (a destroy wakes nats.c's
 * collector; the bin destroys them together). */
static void take_one(void *arg, natsMsg *msg) {
    node_sub_ctx *ctx = arg;
    pd_node *n = ctx->node;
    if (own_delta(n, ctx->kind, msg)) pd_msgbin_put(&n->trash, msg, uv_now(&n->loop));
    else pd_inbox_push(&n->inbox, msg, (int)ctx->kind);
}

/* On the loop: what nats.c parsed from the reads so far into the inbox.
 * False if nothing was there. */
static bool take_parsed(pd_node *n) {
    uint64_t taken = 0;
    for (size_t i = 0; i < sizeof read_order / sizeof read_order[0]; i++) {
        node_sub_kind kind = read_order[i];
        taken += pd_natsout_take(n->subs[kind], take_one, &n->sub_ctx[kind]);
    }
    return taken > 0;
}

/* After each read of the receiving connection (natsout.c): its messages
 * into the inbox, then handled at once. */
static void take_read(void *arg) {
    pd_node *n = arg;
    if (take_parsed(n)) node__drain(n);
}

void node__nats_read(pd_node *n) {
    pd_natsout_read(&n->in_io);
    take_parsed(n);
}

pd_status node__nats_connect(pd_node *n, char *err, size_t errlen) {
    natsOptions *o = NULL;
    char events[PD_ID_MAX + 16], sync[PD_ID_MAX + 16], query[PD_ID_MAX + 16];
    natsInbox *inbox = NULL;
    snprintf(events, sizeof events, "events.%s", n->cfg.node_id);
    snprintf(sync, sizeof sync, "sync.%s", n->cfg.node_id);
    snprintf(query, sizeof query, "query.*.%s", n->cfg.node_id);
    if (natsInbox_Create(&inbox) != NATS_OK) {
        snprintf(err, errlen, "cannot create a NATS inbox");
        return PD_EIO;
    }
    snprintf(n->sync_inbox, sizeof n->sync_inbox, "%s", (const char *)inbox);
    natsInbox_Destroy(inbox);
    if (pd_natsout_init(&n->in_io, &n->loop) != PD_OK ||
        pd_natsout_init(&n->out_io, &n->loop) != PD_OK) {
        snprintf(err, errlen, "cannot initialise the event loop");
        return PD_EINTERNAL;
    }
    pd_natsout_on_read(&n->in_io, take_read, n, NODE_READS_A_TURN);
    natsStatus s = make_options(n, NATS_IN, &o, err, errlen);
    if (s == NATS_INVALID_ARG && err[0] != '\0') return PD_ECONFIG;
    if (s == NATS_OK) {
        s = natsConnection_Connect(&n->nc, o);
        if (s == NATS_OK) on_connected(n->nc, n);
        if (s == NATS_NOT_YET_CONNECTED) {
            pd_log(PD_LOG_WARN, "NATS at %s not reachable yet; retrying in the background",
                   n->cfg.nats_url);
            s = NATS_OK;
        }
    }
    for (conn_role role = NATS_PUB; role <= NATS_JS && s == NATS_OK; role++) {
        natsOptions_Destroy(o);
        o = NULL;
        s = make_options(n, role, &o, err, errlen);
        if (s == NATS_OK) {
            s = natsConnection_Connect(role == NATS_PUB ? &n->pub : &n->jsnc, o);
            if (s == NATS_NOT_YET_CONNECTED) s = NATS_OK; /* retried in the background */
        }
    }
    natsOptions_Destroy(o);
    if (s == NATS_OK) s = subscribe(n, SUB_EVENTS, events, false);
    if (s == NATS_OK) s = subscribe(n, SUB_Q_GET, "query.get", true);
    if (s == NATS_OK) s = subscribe(n, SUB_Q_DEVICES, "query.devices", true);
    if (s == NATS_OK) s = subscribe(n, SUB_Q_ONLINE, "query.online", true);
    if (s == NATS_OK) s = subscribe(n, SUB_Q_CLUSTER, "query.cluster", true);
    if (s == NATS_OK) s = subscribe(n, SUB_Q_NODE, query, false);
    if (s == NATS_OK) s = subscribe(n, SUB_DELTA, "delta.*", false);
    if (s == NATS_OK) s = subscribe(n, SUB_HB, "hb.*", false);
    if (s == NATS_OK) s = subscribe(n, SUB_SYNC_REQ, sync, false);
    if (s == NATS_OK) s = subscribe(n, SUB_SYNC_REPLY, n->sync_inbox, false);
    if (s != NATS_OK) {
        snprintf(err, errlen, "NATS (%s): %s", n->cfg.nats_url, natsStatus_GetText(s));
        return PD_EIO;
    }
    /* The subscriptions reach the server now, not when the loop first
     * runs (after the restore): what is sent to the node meanwhile waits
     * in the socket. */
    pd_natsout_flush(&n->in_io, n->nc);
    return PD_OK;
}

bool node__conn_up(natsConnection *nc) {
    return nc != NULL && natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED;
}

void node__nats_close(pd_node *n) {
    for (int i = 0; i < SUB_COUNT; i++) {
        if (n->subs[i]) natsSubscription_Unsubscribe(n->subs[i]);
    }
    __atomic_store_n(&n->nats_closing, true, __ATOMIC_RELEASE);
    if (n->pub) {
        /* Written now: closing with bytes buffered would wait for a PONG
         * that only this (the loop's) thread could read. */
        pd_natsout_drain(&n->out_io, n->pub, 1000);
        natsConnection_Close(n->pub);
        natsConnection_Destroy(n->pub);
        n->pub = NULL;
    }
    if (n->jsnc) {
        natsConnection_Close(n->jsnc);
        natsConnection_Destroy(n->jsnc);
        n->jsnc = NULL;
    }
    if (n->nc) {
        /* Written now (unsubscribes): as for n->pub. */
        pd_natsout_drain(&n->in_io, n->nc, 1000);
        natsConnection_Close(n->nc);
    }
    for (int i = 0; i < SUB_COUNT; i++) {
        natsSubscription_Destroy(n->subs[i]);
        n->subs[i] = NULL;
    }
    natsConnection_Destroy(n->nc);
    n->nc = NULL;
    /* Messages still queued go now, while nats.c can still free them; a
     * handler still running drops its message itself. */
    pd_inbox_close(&n->inbox);
    /* Wait for nats.c's threads: a handler still running could otherwise
     * queue a message after the inbox is freed. */
    nats_CloseAndWait(2000);
}

void node__publish(pd_node *n, const char *subject) {
    node__publish_bytes(n, subject, n->out.data, n->out.size);
}

void node__publish_bytes(pd_node *n, const char *subject, const void *buf, size_t len) {
    natsStatus s = natsConnection_Publish(n->pub, subject, buf, (int)len);
    if (s != NATS_OK) {
        n->stats.publish_errors++;
        pd_log(PD_LOG_DEBUG, "publish to %s failed: %s", subject, natsStatus_GetText(s));
    }
}

void node__reply_error(pd_node *n, natsMsg *msg, pd_status code, const char *text) {
    const char *reply = natsMsg_GetReply(msg);
    if (reply == NULL || reply[0] == '\0') return;
    msgpack_sbuffer_clear(&n->out);
    pd_reply_error_encode(&n->out, code, text);
    node__publish(n, reply);
}

void node__bad_input(pd_node *n, natsMsg *msg, const pd_err *err) {
    uint32_t suppressed = 0;
    n->stats.errors[err->code < PD_STATUS_COUNT ? err->code : PD_EINTERNAL]++;
    if (!pd_ratelimit_allow(&n->bad_input_log, n->now, &suppressed)) return;
    if (suppressed)
        pd_log(PD_LOG_WARN, "%u similar bad-input messages suppressed", suppressed);
    pd_log(PD_LOG_WARN, "bad message on %s: %s: %s", natsMsg_GetSubject(msg),
           pd_status_code(err->code), err->msg);
}
