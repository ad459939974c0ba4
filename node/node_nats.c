/* node_nats.c - the node's NATS connection: options (reconnect forever,
 * publish at once), subscriptions handing messages to the inbox, and the
 * small publish/reply helpers used by the handlers. */
#include "natsauth.h"
#include "node.h"
#include <stdio.h>
#include <string.h>

/* Reconnect: forever, 250 ms apart, with nats.c's jitter. */
#define NODE_RECONNECT_WAIT_MS 250
#define NODE_QUEUE_GROUP "presenced"

/* True for a delta on our own subject, P.delta.<us>: NATS hands our own
 * deltas back (the publishing connection is another one), and the replica
 * never applies them. Dropped here, on nats.c's thread, they cost no
 * wake-up of the loop and no decoding: a restart's republish is 70 MB of
 * them at 1M devices, and every batch of events makes one. */
static bool own_delta(const pd_node *n, node_sub_kind kind, natsMsg *msg) {
    if (kind != SUB_DELTA) return false;
    const char *subj = natsMsg_GetSubject(msg);
    const char *dot = subj ? strrchr(subj, '.') : NULL;
    return dot && strcmp(dot + 1, n->cfg.node_id) == 0;
}

static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    node_sub_ctx *ctx = closure;
    (void)nc;
    (void)sub;
    if (own_delta(ctx->node, ctx->kind, msg)) {
        natsMsg_Destroy(msg);
        return;
    }
    if (pd_inbox_push(&ctx->node->inbox, msg, (int)ctx->kind))
        uv_async_send(&ctx->node->wake);
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

/* On a credentials or TLS problem, err names the setting. */
static natsStatus make_options(pd_node *n, bool pub, natsOptions **out, char *err,
                               size_t errlen) {
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    char name[PD_ID_MAX + 16], urlbuf[PD_CONFIG_URL_MAX], first[256] = "";
    const char *urls[33];
    size_t nurls = pd_url_split(n->cfg.nats_url, urlbuf, sizeof urlbuf, urls + 1, 32);
    const char **list = urls + 1;
    if (errlen > 0) err[0] = '\0';
    snprintf(name, sizeof name, pub ? "presenced:%s:pub" : "presenced:%s", n->cfg.node_id);
    /* The publishing connection tries the receiving one's server first:
     * a publish and its echo take one server, not two and a route. */
    if (pub && n->nc && natsConnection_GetConnectedUrl(n->nc, first, sizeof first) == NATS_OK &&
        first[0]) {
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
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(o, on_reconnected, n);
    if (s == NATS_OK) s = natsOptions_SetErrorHandler(o, on_async_error, n);
    if (s == NATS_OK) s = natsOptions_SetClosedCB(o, on_closed, n);
    if (s == NATS_OK && pd_natsauth_apply(o, &n->cfg, err, errlen) != PD_OK) s = NATS_INVALID_ARG;
    if (s == NATS_OK && pub) s = pd_natsout_options(&n->out_io, o);
    /* One delivery thread (nats.c's pool) for every subscription rather
     * than one each: messages reach the inbox in the order the server sent
     * them. A peer writes a batch's delta and its next heartbeat in one
     * write; handed over by two threads, the heartbeat often overtook the
     * delta, and two such heartbeats in a row make repl.c fetch the
     * peer's whole partition again (common/sync/repl.c, contradicts()). */
    if (s == NATS_OK && !pub) s = natsOptions_UseGlobalMessageDelivery(o, true);
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
    n->sub_ctx[kind] = (node_sub_ctx){n, kind};
    natsStatus s = queue
        ? natsConnection_QueueSubscribe(&n->subs[kind], n->nc, subj, NODE_QUEUE_GROUP, on_msg,
                                        &n->sub_ctx[kind])
        : natsConnection_Subscribe(&n->subs[kind], n->nc, subj, on_msg, &n->sub_ctx[kind]);
    /* The handler only queues, so nats.c's pending queue stays short unless
     * its thread is starved; past these limits it drops, and node_slow.c
     * counts and repairs that like the inbox's own drops. */
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(n->subs[kind], NODE_PENDING_MSGS, NODE_PENDING_BYTES);
    return s;
}

pd_status node__nats_connect(pd_node *n, char *err, size_t errlen) {
    natsOptions *o = NULL;
    char events[PD_ID_MAX + 16], sync[PD_ID_MAX + 16], query[PD_ID_MAX + 16];
    natsStatus s = make_options(n, false, &o, err, errlen);
    if (s == NATS_INVALID_ARG && err[0] != '\0') return PD_ECONFIG;
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
    if (s == NATS_OK) {
        s = natsConnection_Connect(&n->nc, o);
        if (s == NATS_OK) on_connected(n->nc, n);
        if (s == NATS_NOT_YET_CONNECTED) {
            pd_log(PD_LOG_WARN, "NATS at %s not reachable yet; retrying in the background",
                   n->cfg.nats_url);
            s = NATS_OK;
        }
    }
    natsOptions_Destroy(o);
    o = NULL;
    if (s == NATS_OK && pd_natsout_init(&n->out_io, &n->loop) != PD_OK) s = NATS_ERR;
    if (s == NATS_OK) s = make_options(n, true, &o, err, errlen);
    if (s == NATS_OK) {
        s = natsConnection_Connect(&n->pub, o);
        if (s == NATS_NOT_YET_CONNECTED) s = NATS_OK; /* retried in the background */
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
    return PD_OK;
}

bool node__nats_up(const pd_node *n) {
    return n->nc != NULL && natsConnection_Status(n->nc) == NATS_CONN_STATUS_CONNECTED;
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
    if (n->nc) {
        /* Disconnected: nothing can leave, and a flush would only wait. */
        if (node__nats_up(n)) natsConnection_FlushTimeout(n->nc, 1000);
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
