/* codec_repl.c - deltas, heartbeats and state transfer between nodes (see
 * codec_repl.h and schemas/cluster.md). Ops are compact arrays:
 *   ADD    [0, server, conn, user, label, state, connected_at, last_active, claim(, meta)]
 *   REMOVE [1, server, conn, claim(, at)]
 *   STATE  [2, server, conn, claim, state, last_active]
 *   CHOSEN [3, user, chosen, hlc, writer(, frozen last_seen)]
 *   CUSTOM [4, user, text, emoji, expires_at, hlc, writer]
 *   SEEN   [5, user, at, hlc, writer]
 * The elements in parentheses are optional: an op without them is the one
 * of earlier nodes. */
#include "wire/codec_repl.h"
#include <string.h>

static const uint8_t op_arity[] = {9, 4, 6, 5, 7, 5};
/* Arity with the optional last element, if the kind has one. */
static const uint8_t op_arity_opt[] = {10, 5, 6, 6, 7, 5};

static uint32_t arity_of(const pd_op *op) {
    bool opt = (op->kind == PD_OP_ADD && op->meta.n > 0) ||
               (op->kind == PD_OP_REMOVE && op->at > 0) ||
               (op->kind == PD_OP_CHOSEN && op->at > 0);
    return opt ? op_arity_opt[op->kind] : op_arity[op->kind];
}

/* ---- ops ---------------------------------------------------------------------- */

void pd_op_encode(msgpack_packer *pk, const pd_op *op) {
    uint32_t arity = arity_of(op);
    msgpack_pack_array(pk, arity);
    msgpack_pack_uint8(pk, (uint8_t)op->kind);
    switch (op->kind) {
    case PD_OP_ADD:
        pd_pack_str(pk, op->server);
        pd_pack_str(pk, op->conn);
        pd_pack_str(pk, op->user);
        pd_pack_str(pk, op->label);
        msgpack_pack_uint8(pk, (uint8_t)op->state);
        msgpack_pack_int64(pk, op->connected_at);
        msgpack_pack_int64(pk, op->last_active);
        msgpack_pack_uint64(pk, op->hlc);
        if (arity > op_arity[op->kind]) msgpack_sbuffer_write(pk->data, op->meta.p, op->meta.n);
        break;
    case PD_OP_REMOVE:
        pd_pack_str(pk, op->server);
        pd_pack_str(pk, op->conn);
        msgpack_pack_uint64(pk, op->hlc);
        if (arity > op_arity[op->kind]) msgpack_pack_int64(pk, op->at);
        break;
    case PD_OP_STATE:
        pd_pack_str(pk, op->server);
        pd_pack_str(pk, op->conn);
        msgpack_pack_uint64(pk, op->hlc);
        msgpack_pack_uint8(pk, (uint8_t)op->state);
        msgpack_pack_int64(pk, op->last_active);
        break;
    case PD_OP_CHOSEN:
        pd_pack_str(pk, op->user);
        msgpack_pack_uint8(pk, (uint8_t)op->chosen);
        msgpack_pack_uint64(pk, op->hlc);
        pd_pack_str(pk, op->writer);
        if (arity > op_arity[op->kind]) msgpack_pack_int64(pk, op->at);
        break;
    case PD_OP_CUSTOM:
        pd_pack_str(pk, op->user);
        pd_pack_str(pk, op->text);
        pd_pack_str(pk, op->emoji);
        msgpack_pack_int64(pk, op->expires_at);
        msgpack_pack_uint64(pk, op->hlc);
        pd_pack_str(pk, op->writer);
        break;
    case PD_OP_SEEN:
        pd_pack_str(pk, op->user);
        msgpack_pack_int64(pk, op->at);
        msgpack_pack_uint64(pk, op->hlc);
        pd_pack_str(pk, op->writer);
        break;
    }
}

static bool rd_id(mp_reader *r, pd_str *s) {
    if (!mpr_str(r, s)) return false;
    return pd_id_valid(s->p, s->n) || mpr_fail(r, PD_EBADID, "bad id in op");
}

static bool rd_text(mp_reader *r, pd_str *s, uint32_t max, bool nonempty) {
    if (!mpr_str(r, s)) return false;
    if (s->n > max || (nonempty && s->n == 0) || !pd_text_valid(s->p, s->n))
        return mpr_fail(r, PD_EBADVALUE, "bad text in op");
    return true;
}

static bool rd_u64(mp_reader *r, uint64_t *v) {
    int64_t x = 0;
    if (!mpr_int(r, &x)) return false;
    if (x < 0) return mpr_fail(r, PD_EBADVALUE, "negative number in op");
    *v = (uint64_t)x;
    return true;
}

static bool rd_small(mp_reader *r, unsigned max, unsigned *v) {
    uint64_t x = 0;
    if (!rd_u64(r, &x)) return false;
    if (x > max) return mpr_fail(r, PD_EBADVALUE, "value out of range in op");
    *v = (unsigned)x;
    return true;
}

static bool rd_i64(mp_reader *r, int64_t *v) { return mpr_int(r, v); }

/* A time (ms since the epoch): positive. */
static bool rd_time(mp_reader *r, int64_t *v) {
    if (!mpr_int(r, v)) return false;
    return *v > 0 || mpr_fail(r, PD_EBADVALUE, "bad time in op");
}

/* A connect's meta: a map of at most PD_META_MAX encoded bytes, kept raw. */
static bool rd_meta(mp_reader *r, pd_str *meta) {
    if (mpr_peek(r) != MPR_MAP) return r->err ? false : mpr_fail(r, PD_EBADVALUE, "bad meta in op");
    if (!mpr_raw(r, meta)) return false;
    if (meta->n == 0 || meta->n > PD_META_MAX) return mpr_fail(r, PD_EBADVALUE, "bad meta in op");
    return true;
}

/* Reads and validates one op. */
static bool read_op(mp_reader *r, pd_op *op) {
    uint32_t n;
    unsigned kind = 0, small = 0;
    memset(op, 0, sizeof *op);
    if (!mpr_array(r, &n) || n < 1 || !rd_small(r, PD_OP_SEEN, &kind))
        return r->err ? false : mpr_fail(r, PD_EBADVALUE, "bad op");
    if (n != op_arity[kind] && n != op_arity_opt[kind])
        return mpr_fail(r, PD_EBADVALUE, "bad op arity");
    bool opt = n > op_arity[kind];
    op->kind = (pd_op_kind)kind;
    switch (op->kind) {
    case PD_OP_ADD:
        if (!rd_id(r, &op->server) || !rd_id(r, &op->conn) || !rd_id(r, &op->user) ||
            !rd_text(r, &op->label, PD_DEVICE_MAX, true) || !rd_small(r, PD_DEV_IDLE, &small) ||
            !rd_i64(r, &op->connected_at) || !rd_i64(r, &op->last_active) || !rd_u64(r, &op->hlc))
            return false;
        op->state = (pd_devstate)small;
        return !opt || rd_meta(r, &op->meta);
    case PD_OP_REMOVE:
        return rd_id(r, &op->server) && rd_id(r, &op->conn) && rd_u64(r, &op->hlc) &&
               (!opt || rd_time(r, &op->at));
    case PD_OP_STATE:
        if (!rd_id(r, &op->server) || !rd_id(r, &op->conn) || !rd_u64(r, &op->hlc) ||
            !rd_small(r, PD_DEV_IDLE, &small) || !rd_i64(r, &op->last_active))
            return false;
        op->state = (pd_devstate)small;
        return true;
    case PD_OP_CHOSEN:
        if (!rd_id(r, &op->user) || !rd_small(r, PD_CHOSEN_INVISIBLE, &small) ||
            !rd_u64(r, &op->hlc) || !rd_id(r, &op->writer) || (opt && !rd_time(r, &op->at)))
            return false;
        op->chosen = (pd_chosen)small;
        return true;
    case PD_OP_CUSTOM:
        return rd_id(r, &op->user) && rd_text(r, &op->text, PD_TEXT_MAX, false) &&
               rd_text(r, &op->emoji, PD_EMOJI_MAX, false) && rd_i64(r, &op->expires_at) &&
               rd_u64(r, &op->hlc) && rd_id(r, &op->writer);
    case PD_OP_SEEN:
        return rd_id(r, &op->user) && rd_time(r, &op->at) && rd_u64(r, &op->hlc) &&
               rd_id(r, &op->writer);
    }
    return false;
}

bool pd_op_read(mp_reader *r, pd_op *op) { return read_op(r, op); }

/* Validates every op of an encoded array. */
static bool read_ops(mp_reader *r, pd_ops *ops) {
    pd_str raw;
    mp_reader sub;
    uint32_t n;
    pd_op op;
    if (!mpr_raw(r, &raw)) return false;
    mpr_init(&sub, raw.p, raw.n);
    if (!mpr_array(&sub, &n)) return mpr_fail(r, sub.err, sub.why);
    for (uint32_t i = 0; i < n; i++) {
        if (!read_op(&sub, &op)) return mpr_fail(r, sub.err, sub.why);
    }
    ops->raw = raw;
    ops->n = n;
    return true;
}

void pd_ops_iter_init(pd_ops_iter *it, const pd_ops *ops) {
    mpr_init(&it->r, ops->raw.p, ops->raw.n);
    it->left = 0;
    if (ops->raw.n) mpr_array(&it->r, &it->left);
}

bool pd_ops_next(pd_ops_iter *it, pd_op *op) {
    if (it->left == 0) return false;
    it->left--;
    return read_op(&it->r, op);
}

/* ---- message maps ------------------------------------------------------------------ */

/* Walks a top-level map, handing each key to fn; checks `v` and trailing
 * bytes. fn returns false on a bad value (the reader holds why). */
typedef bool (*field_fn)(mp_reader *r, pd_str key, void *out);

static pd_status read_map(const void *buf, size_t len, field_fn fn, void *out, pd_err *err) {
    mp_reader r;
    uint32_t n;
    bool has_v = false;
    mpr_init(&r, buf, len);
    if (mpr_peek(&r) != MPR_MAP) {
        pd_err_set(err, PD_EBADMSGPACK, "message must be a MessagePack map");
        return PD_EBADMSGPACK;
    }
    if (!mpr_map(&r, &n)) goto fail;
    for (uint32_t i = 0; i < n; i++) {
        pd_str k;
        if (!pd_read_key(&r, &k)) goto fail;
        if (pd_str_eqc(k, "v")) {
            int64_t v;
            if (!mpr_int(&r, &v)) goto fail;
            if (v != PD_REPL_VERSION) {
                pd_err_set(err, PD_EBADVALUE, "unsupported version %lld", (long long)v);
                return PD_EBADVALUE;
            }
            has_v = true;
        } else if (!fn(&r, k, out)) {
            goto fail;
        }
    }
    if (mpr_remaining(&r) != 0) {
        pd_err_set(err, PD_EBADMSGPACK, "trailing bytes after the message");
        return PD_EBADMSGPACK;
    }
    if (!has_v) {
        pd_err_set(err, PD_EMISSING, "missing field 'v'");
        return PD_EMISSING;
    }
    return PD_OK;
fail:
    pd_err_set(err, r.err ? r.err : PD_EBADVALUE, "%s", r.why[0] ? r.why : "bad field");
    return err->code;
}

static pd_status need(bool have, const char *field, pd_err *err) {
    if (have) return PD_OK;
    pd_err_set(err, PD_EMISSING, "missing field '%s'", field);
    return PD_EMISSING;
}

static void pack_bool(msgpack_packer *pk, const char *k, bool v) {
    pd_pack_cstr(pk, k);
    if (v) msgpack_pack_true(pk);
    else msgpack_pack_false(pk);
}

static void pack_u64(msgpack_packer *pk, const char *k, uint64_t v) {
    pd_pack_cstr(pk, k);
    msgpack_pack_uint64(pk, v);
}

/* ---- delta ------------------------------------------------------------------------------ */

static void pack_ids(msgpack_packer *pk, const char *k, const uint64_t *ids, uint32_t n) {
    pd_pack_cstr(pk, k);
    msgpack_pack_array(pk, n);
    for (uint32_t i = 0; i < n; i++) msgpack_pack_uint64(pk, ids[i]);
}

void pd_delta_encode_traced(msgpack_sbuffer *sb, pd_str node, uint64_t inc, uint64_t seq,
                            const void *ops_buf, size_t ops_len, uint32_t nops,
                            const uint64_t *trace, uint32_t ntrace) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, ntrace ? 6 : 5);
    pack_u64(&pk, "v", PD_REPL_VERSION);
    pd_pack_kv_str(&pk, "node", node);
    pack_u64(&pk, "inc", inc);
    pack_u64(&pk, "seq", seq);
    pd_pack_cstr(&pk, "ops");
    msgpack_pack_array(&pk, nops);
    if (ops_len) msgpack_sbuffer_write(sb, ops_buf, ops_len);
    if (ntrace) pack_ids(&pk, "trace", trace, ntrace);
}

void pd_delta_encode(msgpack_sbuffer *sb, pd_str node, uint64_t inc, uint64_t seq,
                     const void *ops_buf, size_t ops_len, uint32_t nops) {
    pd_delta_encode_traced(sb, node, inc, seq, ops_buf, ops_len, nops, NULL, 0);
}

/* An array of at most PD_TRACE_MAX u64 ids, kept raw. */
static bool read_trace(mp_reader *r, pd_str *raw, uint32_t *n) {
    mp_reader sub;
    uint64_t id;
    if (!mpr_raw(r, raw)) return false;
    mpr_init(&sub, raw->p, raw->n);
    if (!mpr_array(&sub, n)) return mpr_fail(r, PD_EBADVALUE, "trace must be an array");
    if (*n > PD_TRACE_MAX) return mpr_fail(r, PD_ETOOLARGE, "too many trace ids");
    for (uint32_t i = 0; i < *n; i++) {
        if (!rd_u64(&sub, &id)) return mpr_fail(r, PD_EBADVALUE, "bad trace id");
    }
    return true;
}

uint32_t pd_delta_trace_ids(const pd_delta *d, uint64_t *out, uint32_t cap) {
    mp_reader r;
    uint32_t n = 0, k = 0;
    if (d->ntrace == 0) return 0;
    mpr_init(&r, d->trace.p, d->trace.n);
    if (!mpr_array(&r, &n)) return 0;
    while (k < n && k < cap && rd_u64(&r, &out[k])) k++;
    return k;
}

void pd_trace_report_encode(msgpack_sbuffer *sb, pd_str node, uint64_t at_ns,
                            const uint64_t *trace, uint32_t ntrace) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    pack_u64(&pk, "v", PD_REPL_VERSION);
    pd_pack_kv_str(&pk, "node", node);
    pack_u64(&pk, "at", at_ns);
    pack_ids(&pk, "trace", trace, ntrace);
}

typedef struct {
    pd_delta *d;
    unsigned seen;
} delta_ctx;

static bool delta_field(mp_reader *r, pd_str k, void *out) {
    delta_ctx *c = out;
    if (pd_str_eqc(k, "node")) { c->seen |= 1; return rd_id(r, &c->d->node); }
    if (pd_str_eqc(k, "inc")) { c->seen |= 2; return rd_u64(r, &c->d->inc); }
    if (pd_str_eqc(k, "seq")) { c->seen |= 4; return rd_u64(r, &c->d->seq); }
    if (pd_str_eqc(k, "ops")) { c->seen |= 8; return read_ops(r, &c->d->ops); }
    if (pd_str_eqc(k, "trace")) return read_trace(r, &c->d->trace, &c->d->ntrace);
    return mpr_skip(r);
}

pd_status pd_delta_decode(const void *buf, size_t len, pd_delta *d, pd_err *err) {
    delta_ctx c = {d, 0};
    memset(d, 0, sizeof *d);
    pd_status s = read_map(buf, len, delta_field, &c, err);
    if (s == PD_OK) s = need(c.seen == 15, "node/inc/seq/ops", err);
    return s;
}

/* ---- heartbeat ------------------------------------------------------------------------------ */

void pd_heartbeat_encode(msgpack_sbuffer *sb, const pd_heartbeat *hb) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 11);
    pack_u64(&pk, "v", PD_REPL_VERSION);
    pd_pack_kv_str(&pk, "node", hb->node);
    pack_u64(&pk, "inc", hb->inc);
    pack_u64(&pk, "seq", hb->seq);
    pack_u64(&pk, "hlc", hb->hlc);
    pack_u64(&pk, "wall", hb->wall);
    pack_bool(&pk, "leaving", hb->leaving);
    pack_bool(&pk, "ready", hb->ready);
    pack_u64(&pk, "devices", hb->devices);
    pack_u64(&pk, "users", hb->users);
    pd_pack_cstr(&pk, "vc");
    msgpack_pack_array(&pk, hb->nvc);
    for (uint32_t i = 0; i < hb->nvc; i++) {
        msgpack_pack_array(&pk, 3);
        pd_pack_str(&pk, hb->vc[i].node);
        msgpack_pack_uint64(&pk, hb->vc[i].inc);
        msgpack_pack_uint64(&pk, hb->vc[i].seq);
    }
}

typedef struct {
    pd_heartbeat *hb;
    unsigned seen;
} hb_ctx;

static bool read_vc(mp_reader *r, pd_heartbeat *hb) {
    uint32_t n, k;
    if (!mpr_array(r, &n)) return false;
    if (n > PD_VC_MAX) return mpr_fail(r, PD_ETOOLARGE, "vector clock too long");
    for (uint32_t i = 0; i < n; i++) {
        pd_vc_entry *e = &hb->vc[i];
        if (!mpr_array(r, &k)) return false;
        if (k != 3) return mpr_fail(r, PD_EBADVALUE, "bad vector clock entry");
        if (!rd_id(r, &e->node) || !rd_u64(r, &e->inc) || !rd_u64(r, &e->seq)) return false;
    }
    hb->nvc = n;
    return true;
}

static bool hb_field(mp_reader *r, pd_str k, void *out) {
    hb_ctx *c = out;
    pd_heartbeat *hb = c->hb;
    if (pd_str_eqc(k, "node")) { c->seen |= 1; return rd_id(r, &hb->node); }
    if (pd_str_eqc(k, "inc")) { c->seen |= 2; return rd_u64(r, &hb->inc); }
    if (pd_str_eqc(k, "seq")) { c->seen |= 4; return rd_u64(r, &hb->seq); }
    if (pd_str_eqc(k, "vc")) { c->seen |= 8; return read_vc(r, hb); }
    if (pd_str_eqc(k, "hlc")) return rd_u64(r, &hb->hlc);
    if (pd_str_eqc(k, "wall")) return rd_u64(r, &hb->wall);
    if (pd_str_eqc(k, "leaving")) return mpr_bool(r, &hb->leaving);
    if (pd_str_eqc(k, "ready")) return mpr_bool(r, &hb->ready);
    if (pd_str_eqc(k, "devices")) return rd_u64(r, &hb->devices);
    if (pd_str_eqc(k, "users")) return rd_u64(r, &hb->users);
    return mpr_skip(r);
}

pd_status pd_heartbeat_decode(const void *buf, size_t len, pd_heartbeat *hb, pd_err *err) {
    hb_ctx c = {hb, 0};
    memset(hb, 0, offsetof(pd_heartbeat, vc));
    hb->ready = true; /* a sender that does not say is announcing */
    pd_status s = read_map(buf, len, hb_field, &c, err);
    if (s == PD_OK) s = need(c.seen == 15, "node/inc/seq/vc", err);
    return s;
}

/* ---- state transfer ------------------------------------------------------------------------ */

void pd_sync_req_encode(msgpack_sbuffer *sb, const pd_sync_req *q) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    pack_u64(&pk, "v", PD_REPL_VERSION);
    pd_pack_kv_str(&pk, "node", q->node);
    pd_pack_kv_str(&pk, "origin", q->origin);
    pack_u64(&pk, "req", q->req);
}

typedef struct {
    pd_sync_req *q;
    unsigned seen;
} req_ctx;

static bool req_field(mp_reader *r, pd_str k, void *out) {
    req_ctx *c = out;
    if (pd_str_eqc(k, "node")) { c->seen |= 1; return rd_id(r, &c->q->node); }
    if (pd_str_eqc(k, "origin")) { c->seen |= 2; return rd_id(r, &c->q->origin); }
    if (pd_str_eqc(k, "req")) return rd_u64(r, &c->q->req);
    return mpr_skip(r);
}

pd_status pd_sync_req_decode(const void *buf, size_t len, pd_sync_req *q, pd_err *err) {
    req_ctx c = {q, 0};
    memset(q, 0, sizeof *q);
    pd_status s = read_map(buf, len, req_field, &c, err);
    if (s == PD_OK) s = need(c.seen == 3, "node/origin", err);
    return s;
}

void pd_sync_part_encode(msgpack_sbuffer *sb, const pd_sync_part *p, const void *ops_buf,
                         size_t ops_len, uint32_t nops) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 9);
    pack_u64(&pk, "v", PD_REPL_VERSION);
    pd_pack_kv_str(&pk, "origin", p->origin);
    pack_bool(&pk, "known", p->known);
    pack_u64(&pk, "inc", p->inc);
    pack_u64(&pk, "seq", p->seq);
    pack_u64(&pk, "part", p->part);
    pack_bool(&pk, "last", p->last);
    pack_u64(&pk, "req", p->req);
    pd_pack_cstr(&pk, "ops");
    msgpack_pack_array(&pk, nops);
    if (ops_len) msgpack_sbuffer_write(sb, ops_buf, ops_len);
}

typedef struct {
    pd_sync_part *p;
    unsigned seen;
} part_ctx;

static bool part_field(mp_reader *r, pd_str k, void *out) {
    part_ctx *c = out;
    pd_sync_part *p = c->p;
    uint64_t v = 0;
    if (pd_str_eqc(k, "origin")) { c->seen |= 1; return rd_id(r, &p->origin); }
    if (pd_str_eqc(k, "inc")) { c->seen |= 2; return rd_u64(r, &p->inc); }
    if (pd_str_eqc(k, "seq")) { c->seen |= 4; return rd_u64(r, &p->seq); }
    if (pd_str_eqc(k, "ops")) { c->seen |= 8; return read_ops(r, &p->ops); }
    if (pd_str_eqc(k, "known")) return mpr_bool(r, &p->known);
    if (pd_str_eqc(k, "last")) return mpr_bool(r, &p->last);
    if (pd_str_eqc(k, "req")) return rd_u64(r, &p->req);
    if (pd_str_eqc(k, "part")) {
        if (!rd_u64(r, &v)) return false;
        if (v > UINT32_MAX) return mpr_fail(r, PD_EBADVALUE, "part out of range");
        p->part = (uint32_t)v;
        return true;
    }
    return mpr_skip(r);
}

pd_status pd_sync_part_decode(const void *buf, size_t len, pd_sync_part *p, pd_err *err) {
    part_ctx c = {p, 0};
    memset(p, 0, sizeof *p);
    pd_status s = read_map(buf, len, part_field, &c, err);
    if (s == PD_OK) s = need(c.seen == 15, "origin/inc/seq/ops", err);
    return s;
}
