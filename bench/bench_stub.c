/* bench_stub.c - pd-bench stub-node: the same-pattern baseline of issue 15.
 *
 * A stub node does per event exactly the NATS work a presenced node does,
 * with no presence model behind it, so that presenced's throughput and
 * latency can be judged against what this machine allows for the same
 * message pattern (rather than against one bare message):
 *
 *   - the connections the node has (node_nats.c): one receives, read by
 *     the libuv loop (node/natsout.c, linked as is, in nats.c's event-loop
 *     mode); everything the loop publishes goes on another, written by the
 *     loop once per burst (natsout.c too); JetStream's stream is made on a
 *     third, on nats.c's threads;
 *   - P.events.<id> and P.delta.* subscribed like the node (synchronous
 *     subscriptions, the node's pending limits): after each read of the
 *     socket, the loop moves what it queued into node/inbox.c's inbox,
 *     deltas first, and handles the burst; the loop thread owns everything;
 *     handled messages are destroyed together, in the node's pd_msgbin;
 *   - per burst taken from the inbox, as node.c's take_batch: the peers'
 *     deltas first (decoded; their traced ids reported on P.trace.<id>),
 *     then the events: each one (alone or in a `batch`) decoded, turned
 *     into one op (what the model would emit for it), one notification
 *     published on P.user.<user> (the connection's id when the event names
 *     no user), a trace report for a traced event; then ONE delta on
 *     P.delta.<id> carrying the burst's ops and trace ids (captured by the
 *     stream PRESENCE_DELTAS, which bench.sh creates with the node's
 *     settings), then the replies (ok), after the delta as the node sends
 *     them (node__reply_after_flush); then the burst's one write.
 *
 * It keeps no state between bursts but a delta sequence number: every
 * event is accepted. Notifications carry the status the event asks for
 * (connect: online, status: the chosen one, disconnect: offline), which is
 * what pd-lat expects of presenced.
 *
 *   pd-bench stub-node --nodes <id> --url <nats> [--prefix presence]
 *
 * runs until SIGTERM or SIGINT and prints one JSON line of counters; it
 * answers a request on P.stub.<id> with the same line, on its loop.
 *
 *   pd-bench stub-converge --nodes s1,s2,s3 [--timeout 5]
 *
 * is the stubs' `converge`: it waits until every stub has received every
 * delta the others sent (the stand-in for "every node converged") and
 * prints {"kind":"converge","ok","ms",...} like converge does. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include "bench.h"
#include "base/clock.h"
#include "inbox.h"
#include "natsout.h"
#include "wire/codec.h"
#include "wire/codec_repl.h"

#define STUB_PENDING_MSGS 65536       /* node.h: NODE_PENDING_MSGS */
#define STUB_PENDING_BYTES (64 << 20) /* node.h: NODE_PENDING_BYTES */
#define STUB_TRACE_MAX 64
#define STUB_MAX_BATCH 1000
#define STUB_FLUSH_BYTES (512 << 10)  /* half the default max message: as pd_repl */

enum { KIND_EVENT, KIND_DELTA, KIND_COUNTERS };

typedef struct {
    const bench_opts *o;
    const char *self;
    natsConnection *nc, *pub;        /* both the loop's: receives; publishes (natsout.c) */
    pd_natsout in_io, out_io;
    pd_msgbin bin;
    natsSubscription *sub_ev, *sub_delta, *sub_cnt;
    pd_inbox inbox;
    uv_loop_t loop;
    uv_async_t wake;
    uv_signal_t sigterm, sigint;
    msgpack_sbuffer out, ops, later;  /* scratch, the burst's ops, its replies */
    uint32_t nops, ntrace;
    uint64_t trace[STUB_TRACE_MAX];
    uint64_t seq, events, deltas_in, deltas_out, notes, bad;
    bool ready;
    char subj[512];
} stub;

static void publish(stub *s, const char *subj, const void *buf, size_t len) {
    natsConnection_Publish(s->pub, subj, buf, (int)len);
}

static void trace_report(stub *s, const uint64_t *ids, uint32_t n) {
    char subj[256];
    snprintf(subj, sizeof subj, "%s.trace.%s", s->o->prefix, s->self);
    msgpack_sbuffer_clear(&s->out);
    pd_trace_report_encode(&s->out, pd_str_c(s->self), pd_now_ns(), ids, n);
    publish(s, subj, s->out.data, s->out.size);
}

/* One delta for the burst's ops (none when it had neither ops nor traces). */
static void flush_delta(stub *s) {
    char subj[256];
    if (s->nops == 0 && s->ntrace == 0) return;
    snprintf(subj, sizeof subj, "%s.delta.%s", s->o->prefix, s->self);
    msgpack_sbuffer_clear(&s->out);
    pd_delta_encode_at(&s->out, pd_str_c(s->self), 1, ++s->seq, s->ops.data, s->ops.size,
                       s->nops, s->trace, s->ntrace, pd_now_ms());
    publish(s, subj, s->out.data, s->out.size);
    msgpack_sbuffer_clear(&s->ops);
    s->nops = s->ntrace = 0;
    s->deltas_out++;
}

/* The op the model would emit for ev, encoded into the burst's ops. */
static void add_op(stub *s, const pd_event *ev, uint64_t now) {
    msgpack_packer pk;
    pd_op op = {.server = ev->server, .conn = ev->conn, .user = ev->user, .label = ev->device,
                .hlc = now << 16, .ver = now << 16, .writer = pd_str_c(s->self),
                .connected_at = (int64_t)now, .last_active = (int64_t)now, .at = (int64_t)now};
    switch (ev->type) {
    case PD_EV_CONNECT: op.kind = PD_OP_ADD; break;
    case PD_EV_DISCONNECT: op.kind = PD_OP_REMOVE; break;
    case PD_EV_STATUS: op.kind = PD_OP_CHOSEN; op.chosen = ev->status; break;
    case PD_EV_CUSTOM: op.kind = PD_OP_CUSTOM; op.text = ev->text; op.emoji = ev->emoji; break;
    case PD_EV_SYNC: op.kind = PD_OP_SYNCED; break;
    default: op.kind = PD_OP_STATE; break;
    }
    msgpack_packer_init(&pk, &s->ops, msgpack_sbuffer_write);
    pd_op_encode(&pk, &op);
    s->nops++;
    if (s->ops.size >= STUB_FLUSH_BYTES) flush_delta(s);
}

static pd_public public_of(const pd_event *ev) {
    switch (ev->type) {
    case PD_EV_DISCONNECT: case PD_EV_SHUTDOWN: return PD_PUB_OFFLINE;
    case PD_EV_STATUS:
        switch (ev->status) {
        case PD_CHOSEN_AWAY: return PD_PUB_AWAY;
        case PD_CHOSEN_BUSY: return PD_PUB_BUSY;
        case PD_CHOSEN_INVISIBLE: return PD_PUB_INVISIBLE;
        default: return PD_PUB_ONLINE;
        }
    default: return PD_PUB_ONLINE;
    }
}

/* One event: its op, its notification, its trace report. False (err set)
 * if it does not decode. */
static bool apply_one(stub *s, const void *data, size_t len, uint64_t now, pd_err *err) {
    pd_event ev;
    if (pd_event_decode(data, len, &ev, err) != PD_OK) {
        s->bad++;
        return false;
    }
    s->events++;
    add_op(s, &ev, now);
    pd_view v = {.user = ev.user.n ? ev.user : ev.conn, .status = public_of(&ev),
                 .last_seen = (int64_t)now, .ts = (int64_t)now, .ver = now << 16};
    snprintf(s->subj, sizeof s->subj, "%s.user.%.*s", s->o->prefix, (int)v.user.n, v.user.p);
    msgpack_sbuffer_clear(&s->out);
    pd_notification_encode(&s->out, &v);
    publish(s, s->subj, s->out.data, s->out.size);
    s->notes++;
    if (ev.has_trace) {
        if (s->ntrace == STUB_TRACE_MAX) flush_delta(s);
        s->trace[s->ntrace++] = ev.trace;
        trace_report(s, &ev.trace, 1);
    }
    return true;
}

/* Queues the ok reply for after the burst's delta: [u16 len][subject]. */
static void reply_later(stub *s, const char *reply) {
    size_t n = strlen(reply);
    if (n == 0 || n > UINT16_MAX) return;
    uint16_t l = (uint16_t)n;
    msgpack_sbuffer_write(&s->later, (const char *)&l, 2);
    msgpack_sbuffer_write(&s->later, reply, n);
}

static void send_later(stub *s) {
    char subj[UINT16_MAX + 1];
    msgpack_sbuffer_clear(&s->out);
    pd_reply_ok_encode(&s->out);
    for (size_t off = 0; off < s->later.size;) {
        uint16_t l;
        memcpy(&l, s->later.data + off, 2);
        memcpy(subj, s->later.data + off + 2, l);
        subj[l] = '\0';
        publish(s, subj, s->out.data, s->out.size);
        off += 2 + (size_t)l;
    }
    msgpack_sbuffer_clear(&s->later);
}

/* Bad input gets the node's error reply at once (node__reply_error). */
static void reply_error(stub *s, const char *reply, const pd_err *err) {
    if (reply == NULL || reply[0] == '\0') return;
    msgpack_sbuffer_clear(&s->out);
    pd_reply_error_encode(&s->out, err->code, err->msg);
    publish(s, reply, s->out.data, s->out.size);
}

static void handle_event(stub *s, natsMsg *m, uint64_t now) {
    const char *data = natsMsg_GetData(m), *reply = natsMsg_GetReply(m);
    size_t len = (size_t)natsMsg_GetDataLength(m);
    pd_err err = {PD_OK, ""};
    if (pd_batch_is(data, len)) {
        pd_batch b;
        mp_reader it;
        pd_str raw;
        if (pd_batch_decode(data, len, STUB_MAX_BATCH, &b, &err) != PD_OK) {
            s->bad++;
            reply_error(s, reply, &err);
            return;
        }
        pd_batch_iter_init(&it, &b);
        while (pd_batch_next(&it, &raw)) apply_one(s, raw.p, raw.n, now, &err);
    } else if (!apply_one(s, data, len, now, &err)) {
        reply_error(s, reply, &err);
        return;
    }
    if (reply) reply_later(s, reply);
}

/* A peer's delta: decoded, its traced ids reported (the node's `traced`). */
static void handle_delta(stub *s, natsMsg *m) {
    pd_delta d;
    pd_err err = {PD_OK, ""};
    uint64_t ids[STUB_TRACE_MAX];
    if (pd_delta_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &d, &err) != PD_OK) {
        s->bad++;
        return;
    }
    if (pd_str_eqc(d.node, s->self)) return; /* our own, back from delta.* */
    s->deltas_in++;
    uint32_t k = pd_delta_trace_ids(&d, ids, STUB_TRACE_MAX);
    if (k) trace_report(s, ids, k);
}

/* The counters as one JSON line: the reply to P.stub.<id> (stub-converge)
 * and the last line of stub-node's output. */
static int counters_json(const stub *s, char *buf, size_t cap) {
    return snprintf(buf, cap,
                    "{\"kind\":\"stub_node\",\"node\":\"%s\",\"events\":%llu,"
                    "\"notifications\":%llu,\"deltas_out\":%llu,\"deltas_in\":%llu,"
                    "\"bad\":%llu}",
                    s->self, (unsigned long long)s->events, (unsigned long long)s->notes,
                    (unsigned long long)s->deltas_out, (unsigned long long)s->deltas_in,
                    (unsigned long long)s->bad);
}

static void handle_counters(stub *s, natsMsg *m) {
    char buf[512];
    const char *reply = natsMsg_GetReply(m);
    /* Our own, sent after the subscriptions (stub_connect): the server has
     * them all. */
    if ((reply == NULL || reply[0] == '\0') && !s->ready) {
        s->ready = true;
        bench_progress("stub-node %s: ready", s->self);
        return;
    }
    int n = counters_json(s, buf, sizeof buf);
    if (reply && reply[0] && n > 0) publish(s, reply, buf, (size_t)n);
}

/* node.c's take_batch: deltas, then events, then one delta, then replies. */
static void take(stub *s) {
    for (;;) {
        pd_inbox_item *items;
        uint32_t count;
        pd_inbox_take(&s->inbox, &items, &count);
        if (count == 0) return;
        uint64_t now = pd_now_ms();
        for (uint32_t i = 0; i < count; i++)
            if (items[i].kind == KIND_DELTA) handle_delta(s, items[i].msg);
        for (uint32_t i = 0; i < count; i++)
            if (items[i].kind == KIND_EVENT) handle_event(s, items[i].msg, now);
        flush_delta(s);
        send_later(s);
        for (uint32_t i = 0; i < count; i++)
            if (items[i].kind == KIND_COUNTERS) handle_counters(s, items[i].msg);
        pd_natsout_flush(&s->out_io, s->pub);
        for (uint32_t i = 0; i < count; i++)
            pd_msgbin_put(&s->bin, items[i].msg, uv_now(&s->loop));
        pd_inbox_release(items);
        pd_msgbin_empty(&s->bin, uv_now(&s->loop), false);
    }
}

/* node_nats.c's take_read: after each read, what it queued, deltas first. */
typedef struct {
    stub *s;
    int kind;
} take_ctx;

static void take_one(void *arg, natsMsg *m) {
    const take_ctx *c = arg;
    pd_inbox_push(&c->s->inbox, m, c->kind);
}

static void on_read(void *ud) {
    stub *s = ud;
    take_ctx ctx[] = {{s, KIND_DELTA}, {s, KIND_EVENT}, {s, KIND_COUNTERS}};
    natsSubscription *subs[] = {s->sub_delta, s->sub_ev, s->sub_cnt};
    uint64_t taken = 0;
    for (int i = 0; i < 3; i++) taken += pd_natsout_take(subs[i], take_one, &ctx[i]);
    if (taken) take(s);
}

static void on_wake(uv_async_t *h) { take(h->data); }

static void on_signal(uv_signal_t *h, int signum) {
    (void)signum;
    uv_stop(h->loop);
}

/* PRESENCE_DELTAS as persist_replay.c makes it, with the default settings
 * (600 s, 1 GiB, one replica), so that each delta costs what the node's does. */
static natsStatus ensure_stream(stub *s) {
    jsCtx *js = NULL;
    jsStreamConfig cfg;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    char subj[256];
    const char *subjects[1] = {subj};
    natsConnection *nc = NULL; /* blocking requests: not on a loop's connection */
    natsStatus st = natsConnection_ConnectTo(&nc, s->o->url);
    if (st == NATS_OK) st = natsConnection_JetStream(&js, nc, NULL);
    snprintf(subj, sizeof subj, "%s.delta.>", s->o->prefix);
    jsStreamConfig_Init(&cfg);
    cfg.Name = "PRESENCE_DELTAS";
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Retention = js_LimitsPolicy;
    cfg.MaxAge = (int64_t)600000 * 1000000;
    cfg.MaxBytes = (int64_t)1 << 30;
    cfg.Replicas = 1;
    if (st == NATS_OK) {
        st = js_AddStream(&si, js, &cfg, NULL, &jerr);
        if (st != NATS_OK && jerr == JSStreamNameExistErr)
            st = js_UpdateStream(&si, js, &cfg, NULL, &jerr);
    }
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return st;
}

static natsStatus stub_connect(stub *s) {
    natsOptions *no = NULL;
    char name[PD_ID_MAX + 16], subj[256];
    natsStatus st = natsOptions_Create(&no);
    snprintf(name, sizeof name, "stub:%s", s->self);
    if (st == NATS_OK) st = natsOptions_SetURL(no, s->o->url);
    if (st == NATS_OK) st = natsOptions_SetName(no, name);
    if (st == NATS_OK) st = natsOptions_SetMaxReconnect(no, -1);
    if (st == NATS_OK) st = natsOptions_SetReconnectWait(no, 250);
    if (st == NATS_OK) st = natsOptions_SetSendAsap(no, true); /* as node_nats.c */
    if (st == NATS_OK) st = pd_natsout_options(&s->in_io, no);
    if (st == NATS_OK) st = natsConnection_Connect(&s->nc, no);
    natsOptions_Destroy(no);
    no = NULL;
    snprintf(name, sizeof name, "stub:%s:pub", s->self);
    if (st == NATS_OK) st = natsOptions_Create(&no);
    if (st == NATS_OK) st = natsOptions_SetURL(no, s->o->url);
    if (st == NATS_OK) st = natsOptions_SetName(no, name);
    if (st == NATS_OK) st = natsOptions_SetMaxReconnect(no, -1);
    if (st == NATS_OK) st = natsOptions_SetReconnectWait(no, 250);
    if (st == NATS_OK) st = natsOptions_SetSendAsap(no, true);
    if (st == NATS_OK) st = pd_natsout_options(&s->out_io, no);
    if (st == NATS_OK) st = natsConnection_Connect(&s->pub, no);
    natsOptions_Destroy(no);
    snprintf(subj, sizeof subj, "%s.events.%s", s->o->prefix, s->self);
    if (st == NATS_OK) st = natsConnection_SubscribeSync(&s->sub_ev, s->nc, subj);
    if (st == NATS_OK)
        st = natsSubscription_SetPendingLimits(s->sub_ev, STUB_PENDING_MSGS, STUB_PENDING_BYTES);
    snprintf(subj, sizeof subj, "%s.delta.*", s->o->prefix);
    if (st == NATS_OK) st = natsConnection_SubscribeSync(&s->sub_delta, s->nc, subj);
    if (st == NATS_OK)
        st = natsSubscription_SetPendingLimits(s->sub_delta, STUB_PENDING_MSGS,
                                               STUB_PENDING_BYTES);
    snprintf(subj, sizeof subj, "%s.stub.%s", s->o->prefix, s->self);
    if (st == NATS_OK) st = natsConnection_SubscribeSync(&s->sub_cnt, s->nc, subj);
    if (st == NATS_OK) st = ensure_stream(s);
    /* Back to us once the server has our subscriptions: then "ready". */
    if (st == NATS_OK) st = natsConnection_PublishString(s->nc, subj, "ready");
    pd_natsout_flush(&s->in_io, s->nc);
    return st;
}

int bench_stub_node(const bench_opts *o) {
    stub s = {.o = o, .self = o->nodes[0]};
    int rc = 1;
    msgpack_sbuffer_init(&s.out);
    msgpack_sbuffer_init(&s.ops);
    msgpack_sbuffer_init(&s.later);
    if (pd_inbox_init(&s.inbox) != PD_OK || uv_loop_init(&s.loop) != 0 ||
        pd_natsout_init(&s.in_io, &s.loop) != PD_OK || pd_natsout_init(&s.out_io, &s.loop) != PD_OK)
        return 1;
    pd_natsout_on_read(&s.in_io, on_read, &s, 32); /* node_nats.c: NODE_READS_A_TURN */
    uv_async_init(&s.loop, &s.wake, on_wake);
    s.wake.data = &s;
    uv_signal_init(&s.loop, &s.sigterm);
    uv_signal_init(&s.loop, &s.sigint);
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    natsStatus st = stub_connect(&s);
    if (st != NATS_OK) {
        fprintf(stderr, "pd-bench: stub %s: NATS %s: %s\n", s.self, o->url,
                natsStatus_GetText(st));
    } else {
        uv_run(&s.loop, UV_RUN_DEFAULT);
        rc = 0;
    }
    if (s.sub_ev) natsSubscription_Unsubscribe(s.sub_ev);
    if (s.sub_delta) natsSubscription_Unsubscribe(s.sub_delta);
    if (s.sub_cnt) natsSubscription_Unsubscribe(s.sub_cnt);
    pd_msgbin_free(&s.bin);
    if (s.pub) {
        pd_natsout_drain(&s.out_io, s.pub, 1000);
        natsConnection_Close(s.pub);
        natsConnection_Destroy(s.pub);
    }
    if (s.nc) pd_natsout_drain(&s.in_io, s.nc, 1000);
    bench_close(s.nc);
    natsSubscription_Destroy(s.sub_ev);
    natsSubscription_Destroy(s.sub_delta);
    natsSubscription_Destroy(s.sub_cnt);
    pd_inbox_close(&s.inbox);
    nats_CloseAndWait(2000);
    pd_inbox_free(&s.inbox);
    uv_close((uv_handle_t *)&s.wake, NULL);
    uv_close((uv_handle_t *)&s.sigterm, NULL);
    uv_close((uv_handle_t *)&s.sigint, NULL);
    pd_natsout_close(&s.in_io);
    pd_natsout_close(&s.out_io);
    uv_run(&s.loop, UV_RUN_DEFAULT);
    uv_loop_close(&s.loop);
    pd_natsout_free(&s.in_io);
    pd_natsout_free(&s.out_io);
    char line[512];
    counters_json(&s, line, sizeof line);
    puts(line);
    msgpack_sbuffer_destroy(&s.out);
    msgpack_sbuffer_destroy(&s.ops);
    msgpack_sbuffer_destroy(&s.later);
    return rc;
}

/* ---- stub-converge ------------------------------------------------------------------ */

static bool stub_counters(natsConnection *nc, const bench_opts *o, uint32_t j, uint64_t *out,
                          uint64_t *in) {
    char subj[256];
    natsMsg *m = NULL;
    snprintf(subj, sizeof subj, "%s.stub.%s", o->prefix, o->nodes[j]);
    if (natsConnection_Request(&m, nc, subj, "", 0, 2000) != NATS_OK) return false;
    const char *d = natsMsg_GetData(m), *po = strstr(d, "\"deltas_out\":"),
               *pi = strstr(d, "\"deltas_in\":");
    bool ok = po && pi;
    if (ok) {
        *out = strtoull(po + 13, NULL, 10);
        *in = strtoull(pi + 12, NULL, 10);
    }
    natsMsg_Destroy(m);
    return ok;
}

int bench_stub_converge(const bench_opts *o) {
    uint64_t out[BENCH_NODES_MAX] = {0}, in[BENCH_NODES_MAX] = {0}, total = 0;
    bool ok = false;
    natsConnection *nc = bench_connect(o->url, true, "pd-bench-stub-converge");
    if (nc == NULL) return 1;
    uint64_t t0 = bench_mono_ns(), deadline = t0 + (uint64_t)(o->timeout * 1e9);
    while (!ok && bench_mono_ns() < deadline) {
        bool all = true;
        total = 0;
        for (uint32_t j = 0; j < o->nnodes && all; j++) all = stub_counters(nc, o, j, &out[j], &in[j]);
        for (uint32_t j = 0; j < o->nnodes && all; j++) total += out[j];
        for (uint32_t j = 0; j < o->nnodes && all; j++) all = in[j] == total - out[j];
        ok = all;
        if (!ok) bench_sleep_ms(20);
    }
    double ms = (double)(bench_mono_ns() - t0) / 1e6;
    printf("{\"kind\":\"converge\",\"ok\":%s,\"ms\":%.0f,\"deltas\":%llu,\"nodes\":[",
           ok ? "true" : "false", ms, (unsigned long long)total);
    for (uint32_t j = 0; j < o->nnodes; j++)
        printf("%s{\"node\":\"%s\",\"deltas_out\":%llu,\"deltas_in\":%llu}", j ? "," : "",
               o->nodes[j], (unsigned long long)out[j], (unsigned long long)in[j]);
    puts("]}");
    bench_close(nc);
    nats_CloseAndWait(2000);
    return ok ? 0 : 1;
}
