/* fuzz_delta.c - libFuzzer target: the messages between nodes (docs/protocol.md
 * section 5, common/wire/codec_repl.c) and the replica that applies them
 * (common/sync/repl.c): deltas, heartbeats, sync requests and sync parts.
 *
 * Input: one message; it goes through all four decoders, then through the
 * four handlers of a populated replica primed by fz_prime() (a peer whose
 * next delta applies, a state transfer in progress), then is replayed as
 * a JetStream delta into a starting replica.
 * Invariants checked:
 * - refusals carry a valid status and message; a refused message changes
 *   nothing in the model (digest);
 * - accepted messages round-trip: decode -> encode -> decode -> encode gives
 *   the same bytes twice (ops re-encoded one by one), ids and slices valid,
 *   the ops as many as declared and hlc_max their largest hlc (which
 *   repl__ops_ahead trusts);
 * - everything the replica sends in answer (deltas, heartbeats, sync
 *   requests and parts, notifications) decodes;
 * - after each message and as timers fire, the model agrees with itself;
 * - replaying the same delta twice changes nothing the second time;
 * - no input moves the local HLC beyond the wall clock + the skew bound
 *   (PRESENCE_MAX_CLOCK_SKEW_MS), however far ahead its clocks are. */
#include <string.h>
#include "fuzz_common.h"
#include "sync/repl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_ops(const pd_ops *ops, const uint8_t *data, size_t size) {
    pd_ops_iter it;
    pd_op op;
    uint64_t hlc_max = 0;
    uint32_t n = 0;
    FZ_CHECK(fz_within(ops->raw, data, size), "ops outside the input");
    pd_ops_iter_init(&it, ops);
    while (pd_ops_next(&it, &op)) {
        n++;
        if (op.hlc > hlc_max) hlc_max = op.hlc;
        FZ_CHECK(op.kind <= PD_OP_VER, "op kind %d", (int)op.kind);
        if (op.kind == PD_OP_SYNCED)
            FZ_CHECK(pd_id_valid(op.server.p, op.server.n) && pd_id_valid(op.writer.p, op.writer.n),
                     "synced op with a bad id");
        else if (op.kind <= PD_OP_STATE)
            FZ_CHECK(pd_id_valid(op.server.p, op.server.n) && pd_id_valid(op.conn.p, op.conn.n),
                     "device op with a bad id");
        else
            FZ_CHECK(pd_id_valid(op.user.p, op.user.n) && pd_id_valid(op.writer.p, op.writer.n),
                     "register op with a bad id");
        if (op.kind == PD_OP_CUSTOM)
            FZ_CHECK(op.text.n <= PD_TEXT_MAX && op.emoji.n <= PD_EMOJI_MAX, "custom op sizes");
        if (op.kind == PD_OP_ADD)
            FZ_CHECK(op.meta.n <= PD_META_MAX && (op.meta.n == 0 || fz_within(op.meta, data, size)),
                     "add op meta");
        if (op.kind == PD_OP_SEEN) FZ_CHECK(op.at > 0, "seen op time %lld", (long long)op.at);
    }
    FZ_CHECK(n == ops->n, "%u ops read of %u", n, ops->n);
    FZ_CHECK(hlc_max == ops->hlc_max, "hlc_max %llu, the ops' largest %llu",
             (unsigned long long)ops->hlc_max, (unsigned long long)hlc_max);
}

typedef void (*encode_fn)(msgpack_sbuffer *sb, const void *msg);
typedef pd_status (*decode_fn)(const void *buf, size_t len, void *msg, pd_err *err);

/* decode(data) was OK into msg: encode, decode into back, encode again. */
static void round_trip(const char *what, const void *msg, void *back, encode_fn enc,
                       decode_fn dec) {
    msgpack_sbuffer a, b;
    pd_err err = {0};
    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    enc(&a, msg);
    pd_status s = dec(a.data, a.size, back, &err);
    FZ_CHECK(s == PD_OK, "re-encoded %s refused: %s", what, err.msg);
    enc(&b, back);
    fz_check_same(what, &a, &b);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
}

static void enc_delta(msgpack_sbuffer *sb, const void *m) { fz_encode_delta(sb, m); }
static void enc_hb(msgpack_sbuffer *sb, const void *m) { fz_encode_heartbeat(sb, m); }
static void enc_req(msgpack_sbuffer *sb, const void *m) { fz_encode_sync_req(sb, m); }
static void enc_part(msgpack_sbuffer *sb, const void *m) { fz_encode_sync_part(sb, m); }
static pd_status dec_delta(const void *b, size_t n, void *m, pd_err *e) {
    return pd_delta_decode(b, n, m, e);
}
static pd_status dec_hb(const void *b, size_t n, void *m, pd_err *e) {
    return pd_heartbeat_decode(b, n, m, e);
}
static pd_status dec_req(const void *b, size_t n, void *m, pd_err *e) {
    return pd_sync_req_decode(b, n, m, e);
}
static pd_status dec_part(const void *b, size_t n, void *m, pd_err *e) {
    return pd_sync_part_decode(b, n, m, e);
}

static void decoders(const uint8_t *data, size_t size) {
    static pd_heartbeat hb, hb2;
    pd_delta d, d2;
    pd_sync_req q, q2;
    pd_sync_part p, p2;
    pd_err err = {0};
    pd_status s;

    if ((s = pd_delta_decode(data, size, &d, &err)) != PD_OK) {
        fz_check_refusal(s, &err);
    } else {
        FZ_CHECK(pd_id_valid(d.node.p, d.node.n), "delta node id");
        FZ_CHECK(d.ntrace <= PD_TRACE_MAX, "delta trace ids %u", d.ntrace);
        check_ops(&d.ops, data, size);
        round_trip("delta", &d, &d2, enc_delta, dec_delta);
    }
    if ((s = pd_heartbeat_decode(data, size, &hb, &err)) != PD_OK) {
        fz_check_refusal(s, &err);
    } else {
        FZ_CHECK(pd_id_valid(hb.node.p, hb.node.n), "heartbeat node id");
        FZ_CHECK(hb.nvc <= PD_VC_MAX, "heartbeat vc %u", hb.nvc);
        for (uint32_t i = 0; i < hb.nvc; i++)
            FZ_CHECK(pd_id_valid(hb.vc[i].node.p, hb.vc[i].node.n) &&
                         fz_within(hb.vc[i].node, data, size), "heartbeat vc id");
        round_trip("heartbeat", &hb, &hb2, enc_hb, dec_hb);
    }
    if ((s = pd_sync_req_decode(data, size, &q, &err)) != PD_OK) {
        fz_check_refusal(s, &err);
    } else {
        FZ_CHECK(pd_id_valid(q.node.p, q.node.n) && pd_id_valid(q.origin.p, q.origin.n),
                 "sync request ids");
        round_trip("sync request", &q, &q2, enc_req, dec_req);
    }
    if ((s = pd_sync_part_decode(data, size, &p, &err)) != PD_OK) {
        fz_check_refusal(s, &err);
    } else {
        FZ_CHECK(pd_id_valid(p.origin.p, p.origin.n), "sync part origin id");
        check_ops(&p.ops, data, size);
        round_trip("sync part", &p, &p2, enc_part, dec_part);
    }
}

typedef pd_status (*handler_fn)(pd_repl *r, const uint8_t *data, size_t size, uint64_t now,
                                pd_err *err);

static pd_status h_delta(pd_repl *r, const uint8_t *b, size_t n, uint64_t now, pd_err *e) {
    return pd_repl_on_delta(r, b, n, now, e);
}
static pd_status h_hb(pd_repl *r, const uint8_t *b, size_t n, uint64_t now, pd_err *e) {
    return pd_repl_on_heartbeat(r, b, n, now, e);
}
static pd_status h_req(pd_repl *r, const uint8_t *b, size_t n, uint64_t now, pd_err *e) {
    static int reply_ctx;
    return pd_repl_on_sync_request(r, b, n, &reply_ctx, e);
}
static pd_status h_part(pd_repl *r, const uint8_t *b, size_t n, uint64_t now, pd_err *e) {
    return pd_repl_on_sync_part(r, b, n, now, e);
}

/* The clock rule: whatever came in, our HLC reads at most the bound
 * ahead of now. */
static void check_clock(const pd_model *m, uint64_t now, const char *what) {
    FZ_CHECK(!pd_hlc_ahead(pd_model_hlc(m), now, PD_MAX_CLOCK_SKEW_DEFAULT_MS),
             "a %s moved the HLC beyond the wall clock + bound", what);
}

static void handlers(const uint8_t *data, size_t size) {
    static const handler_fn fns[] = {h_delta, h_hb, h_req, h_part};
    static const char *const names[] = {"delta", "heartbeat", "sync request", "sync part"};
    fz_sent sent;
    pd_repl *r = fz_repl_new(FZ_SELF, &sent, FZ_NOW);
    pd_model *m = pd_repl_model(r);
    uint64_t now = FZ_NOW + 50;
    fz_populate(r, FZ_NOW);
    fz_prime(r, FZ_NOW + 20);
    fz_check_model(m);
    for (int i = 0; i < 4; i++) {
        pd_err err = {0};
        uint64_t before = fz_model_digest(m);
        pd_repl_begin(r, now);
        pd_status s = fns[i](r, data, size, now, &err);
        if (s != PD_OK) {
            fz_check_refusal(s, &err);
            FZ_CHECK(fz_model_digest(m) == before, "a refused %s (%s) changed the model",
                     names[i], err.msg);
        }
        fz_check_model(m);
        check_clock(m, now, names[i]);
        pd_repl_tick(r, now);
        pd_repl_flush(r);
        fz_check_model(m);
        now += 10;
    }
    /* Heartbeats, failure detection, transfer timeouts, model timers. */
    for (size_t i = 0; i < sizeof FZ_TICKS / sizeof FZ_TICKS[0]; i++) {
        pd_repl_tick(r, now + FZ_TICKS[i]);
        fz_check_model(m);
    }
    pd_repl_free(r);
}

/* A starting replica (no snapshot) replays the stream: twice is once. */
static void replay(const uint8_t *data, size_t size) {
    pd_repl *r = fz_repl_new(FZ_SELF, NULL, FZ_NOW);
    pd_model *m = pd_repl_model(r);
    pd_err err = {0};
    pd_status s = pd_repl_replay_delta(r, data, size, FZ_NOW, &err);
    if (s != PD_OK) {
        fz_check_refusal(s, &err);
    } else {
        uint64_t once = fz_model_digest(m);
        s = pd_repl_replay_delta(r, data, size, FZ_NOW, &err);
        FZ_CHECK(s == PD_OK, "a replayed delta refused the second time: %s", err.msg);
        FZ_CHECK(fz_model_digest(m) == once, "replaying a delta twice changed the model");
    }
    fz_check_model(m);
    check_clock(m, FZ_NOW, "replayed delta");
    pd_repl_restore_done(r, FZ_NOW);
    fz_check_model(m);
    pd_repl_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_quiet();
    decoders(data, size);
    handlers(data, size);
    replay(data, size);
    return 0;
}
